//! The commitlog record, in RocketMQ's byte layout (big-endian, IPv4 hosts):
//!
//! ```text
//! 0 TOTALSIZE i32 | 4 MAGIC i32 | 8 BODYCRC i32 | 12 QUEUEID i32 | 16 FLAG i32 | 20 QUEUEOFFSET i64
//! 28 PHYSICALOFFSET i64 | 36 SYSFLAG i32 | 40 BORNTIMESTAMP i64 | 48 BORNHOST 8 | 56 STORETIMESTAMP i64
//! 64 STOREHOST 8 | 72 RECONSUMETIMES i32 | 76 PREPARED_TX_OFFSET i64 | 84 BODYLEN i32 | 88 BODY
//! TOPICLEN i8 (V1) or i16 (V2) | TOPIC | PROPSLEN i16 | PROPS (k \x01 v \x02 ...)
//! ```
//!
//! Every record we write ends its properties with RocketMQ's `__CRC32#` property, a masked CRC32
//! over all bytes before it (header included). Recovery therefore detects garbage anywhere in a
//! record, not only in the body: the body CRC alone leaves the header unprotected.

use crate::java::masked_crc32;
use std::net::{Ipv4Addr, SocketAddrV4};

pub const MAGIC_V1: u32 = 0xDAA3_20A7;
pub const MAGIC_V2: u32 = 0xDAA3_20AB;
pub const BLANK_MAGIC: u32 = 0xCBD4_3194;
/// Bytes an end-of-file blank marker takes; a record must leave at least this much room.
pub const END_FILE_MIN_BLANK: usize = 8;

const CRC_PROP_KEY: &[u8] = b"__CRC32#";
/// `__CRC32#` + \x01 + 10 digits + \x02.
pub const CRC_PROP_LEN: usize = 20;
const FIXED_BEFORE_BODY: usize = 84;
pub const MAX_PROPERTIES_LEN: usize = 32767;

pub const POS_QUEUE_ID: usize = 12;
pub const POS_QUEUE_OFFSET: usize = 20;
pub const POS_PHYSICAL_OFFSET: usize = 28;
pub const POS_SYSFLAG: usize = 36;
pub const POS_STORE_TIMESTAMP: usize = 56;

/// Everything a record needs except what the store assigns at append time.
#[derive(Debug, Clone)]
pub struct RecordInput<'a> {
    pub topic: &'a str,
    pub queue_id: i32,
    pub flag: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddrV4,
    pub store_host: SocketAddrV4,
    pub reconsume_times: i32,
    pub prepared_tx_offset: i64,
    pub body: &'a [u8],
    /// Encoded properties (see [`encode_properties`]) without the CRC property.
    pub properties: &'a [u8],
}

/// Why bytes are not a valid record. Recovery stops at the first one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated: need {need} bytes, {have} available")]
    Truncated { need: usize, have: usize },
    #[error("unknown magic code {0:#010x}")]
    BadMagic(u32),
    #[error("record length {total} does not match its fields ({computed})")]
    LengthMismatch { total: usize, computed: usize },
    #[error("body CRC mismatch")]
    BodyCrc,
    #[error("record CRC missing or mismatched")]
    RecordCrc,
    #[error("physical offset field {field} differs from position {position}")]
    WrongOffset { field: i64, position: i64 },
    #[error("topic too long ({0} bytes)")]
    TopicTooLong(usize),
    #[error("properties too long ({0} bytes)")]
    PropertiesTooLong(usize),
}

fn topic_len_bytes(topic_len: usize) -> usize {
    if topic_len > 127 { 2 } else { 1 }
}

/// Total record length for the given parts; `props_len` includes the CRC property.
pub fn record_len(topic_len: usize, body_len: usize, props_len: usize) -> usize {
    FIXED_BEFORE_BODY + 4 + body_len + topic_len_bytes(topic_len) + topic_len + 2 + props_len
}

/// Length [`encode`] will produce for `input`.
pub fn encoded_len(input: &RecordInput<'_>) -> usize {
    record_len(
        input.topic.len(),
        input.body.len(),
        input.properties.len() + CRC_PROP_LEN,
    )
}

/// Encodes `key \x01 value \x02` pairs.
pub fn encode_properties<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        push_property(&mut out, k, v);
    }
    out
}

/// Appends one `key \x01 value \x02` pair.
pub fn push_property(out: &mut Vec<u8>, key: &str, value: &str) {
    out.reserve(key.len() + value.len() + 2);
    out.extend_from_slice(key.as_bytes());
    out.push(1);
    out.extend_from_slice(value.as_bytes());
    out.push(2);
}

/// Iterates over `key \x01 value \x02` pairs; malformed pairs are skipped.
pub fn decode_properties(raw: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    raw.split(|b| *b == 2).filter_map(|pair| {
        let sep = pair.iter().position(|b| *b == 1)?;
        let k = std::str::from_utf8(&pair[..sep]).ok()?;
        let v = std::str::from_utf8(&pair[sep + 1..]).ok()?;
        Some((k, v))
    })
}

/// Start offsets of the pairs in encoded properties; the separators are found with memchr.
pub fn pair_starts(raw: &[u8]) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(0)
        .chain(memchr::memchr_iter(2, raw).map(|i| i + 1))
        .filter(move |&i| i < raw.len())
}

/// Whether `rest` (a pair's start onwards) has the key `key`.
pub fn key_at(rest: &[u8], key: &[u8]) -> bool {
    rest.len() > key.len() && rest[key.len()] == 1 && rest.starts_with(key)
}

/// Writes the record into `out` (exactly [`encoded_len`] bytes), stamping the offsets and store
/// time the store assigned, then seals it with the record CRC.
pub fn encode(
    input: &RecordInput<'_>,
    queue_offset: i64,
    physical_offset: i64,
    store_timestamp: i64,
    out: &mut [u8],
) -> Result<usize, RecordError> {
    let topic = input.topic.as_bytes();
    if topic.len() > i16::MAX as usize {
        return Err(RecordError::TopicTooLong(topic.len()));
    }
    let props_len = input.properties.len() + CRC_PROP_LEN;
    if props_len > MAX_PROPERTIES_LEN {
        return Err(RecordError::PropertiesTooLong(props_len));
    }
    let total = encoded_len(input);
    if out.len() < total {
        return Err(RecordError::Truncated {
            need: total,
            have: out.len(),
        });
    }
    let v2 = topic.len() > 127;
    let mut w = Writer { buf: out, pos: 0 };
    w.i32(total as i32);
    w.u32(if v2 { MAGIC_V2 } else { MAGIC_V1 });
    w.u32(masked_crc32(input.body));
    w.i32(input.queue_id);
    w.i32(input.flag);
    w.i64(queue_offset);
    w.i64(physical_offset);
    w.i32(input.sys_flag);
    w.i64(input.born_timestamp);
    w.host(input.born_host);
    w.i64(store_timestamp);
    w.host(input.store_host);
    w.i32(input.reconsume_times);
    w.i64(input.prepared_tx_offset);
    w.i32(input.body.len() as i32);
    w.bytes(input.body);
    if v2 {
        w.bytes(&(topic.len() as i16).to_be_bytes());
    } else {
        w.bytes(&[topic.len() as u8]);
    }
    w.bytes(topic);
    w.bytes(&(props_len as i16).to_be_bytes());
    w.bytes(input.properties);
    let crc_start = w.pos;
    let crc = masked_crc32(&w.buf[..crc_start]);
    w.bytes(CRC_PROP_KEY);
    w.bytes(&[1]);
    let mut digits = [b'0'; 10];
    let mut v = crc;
    for d in digits.iter_mut() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    w.bytes(&digits);
    w.bytes(&[2]);
    debug_assert_eq!(w.pos, total);
    Ok(total)
}

/// Writes an end-of-file marker covering `remaining` bytes.
pub fn encode_blank(remaining: usize, out: &mut [u8]) {
    out[0..4].copy_from_slice(&(remaining as i32).to_be_bytes());
    out[4..8].copy_from_slice(&BLANK_MAGIC.to_be_bytes());
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn i32(&mut self, v: i32) {
        self.bytes(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_be_bytes());
    }
    fn host(&mut self, h: SocketAddrV4) {
        self.bytes(&h.ip().octets());
        self.i32(h.port() as i32);
    }
}

/// What the next bytes of a segment hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A valid record of this many bytes.
    Record(usize),
    /// An end-of-file marker: the rest of the segment is unused.
    EndOfFile,
    /// Zero bytes where a record would start: the end of written data.
    End,
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Validates what starts at `buf[0]`, which sits at commitlog offset `position`.
/// Checks magic, length consistency, physical offset, body CRC and the record CRC.
pub fn check(buf: &[u8], position: i64) -> Result<Scan, RecordError> {
    check_with(buf, position, Crcs::Both)
}

/// As [`check`] but without either CRC: the layout alone (magic, lengths, the position field).
/// For replaying records already known durable whose bodies the replay does not interpret;
/// their bodies are still verified when read.
pub fn check_layout(buf: &[u8], position: i64) -> Result<Scan, RecordError> {
    check_with(buf, position, Crcs::None)
}

#[derive(PartialEq)]
enum Crcs {
    None,
    Body,
    Both,
}

/// As [`check`], but without requiring our whole-record CRC property: what Apache RocketMQ
/// itself verifies (`checkCRCOnRecover`). Used to recognise records Apache wrote.
pub fn check_apache(buf: &[u8], position: i64) -> Result<Scan, RecordError> {
    check_with(buf, position, Crcs::Body)
}

fn check_with(buf: &[u8], position: i64, crcs: Crcs) -> Result<Scan, RecordError> {
    if buf.len() < 8 {
        return if buf.iter().all(|b| *b == 0) {
            Ok(Scan::End)
        } else {
            Err(RecordError::Truncated {
                need: 8,
                have: buf.len(),
            })
        };
    }
    let total = be_i32(buf, 0);
    let magic = be_u32(buf, 4);
    if total == 0 && magic == 0 {
        return Ok(Scan::End);
    }
    if magic == BLANK_MAGIC {
        return Ok(Scan::EndOfFile);
    }
    if magic != MAGIC_V1 && magic != MAGIC_V2 {
        return Err(RecordError::BadMagic(magic));
    }
    let min = record_len(0, 0, 0);
    if total < min as i32 {
        return Err(RecordError::LengthMismatch {
            total: total.max(0) as usize,
            computed: min,
        });
    }
    let total = total as usize;
    if total > buf.len() {
        return Err(RecordError::Truncated {
            need: total,
            have: buf.len(),
        });
    }
    let rec = &buf[..total];
    let view = RecordView::parse(rec)?;
    let computed = record_len(
        view.topic_raw.len(),
        view.body.len(),
        view.properties_raw.len(),
    );
    if computed != total || (magic == MAGIC_V2) != (view.topic_raw.len() > 127) {
        return Err(RecordError::LengthMismatch { total, computed });
    }
    if view.physical_offset != position {
        return Err(RecordError::WrongOffset {
            field: view.physical_offset,
            position,
        });
    }
    if crcs != Crcs::None && be_u32(rec, 8) != masked_crc32(view.body) {
        return Err(RecordError::BodyCrc);
    }
    if crcs == Crcs::Both && !crc_property_matches(rec) {
        return Err(RecordError::RecordCrc);
    }
    Ok(Scan::Record(total))
}

fn crc_property_matches(rec: &[u8]) -> bool {
    if rec.len() < CRC_PROP_LEN + 1 {
        return false;
    }
    let tail = &rec[rec.len() - CRC_PROP_LEN..];
    if &tail[..8] != CRC_PROP_KEY || tail[8] != 1 || tail[19] != 2 {
        return false;
    }
    let mut value: u64 = 0;
    for d in tail[9..19].iter().rev() {
        if !d.is_ascii_digit() {
            return false;
        }
        value = value * 10 + u64::from(d - b'0');
    }
    value == u64::from(masked_crc32(&rec[..rec.len() - CRC_PROP_LEN]))
}

/// A parsed, borrowed view of one record. Parsing checks bounds only; use [`check`] to verify.
#[derive(Debug, Clone)]
pub struct RecordView<'a> {
    pub total_size: usize,
    pub queue_id: i32,
    pub flag: i32,
    pub queue_offset: i64,
    pub physical_offset: i64,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddrV4,
    pub store_timestamp: i64,
    pub store_host: SocketAddrV4,
    pub reconsume_times: i32,
    pub prepared_tx_offset: i64,
    pub body: &'a [u8],
    pub topic_raw: &'a [u8],
    /// Properties including the trailing CRC property.
    pub properties_raw: &'a [u8],
}

impl<'a> RecordView<'a> {
    pub fn parse(rec: &'a [u8]) -> Result<Self, RecordError> {
        let need = |n: usize| {
            if rec.len() < n {
                Err(RecordError::Truncated {
                    need: n,
                    have: rec.len(),
                })
            } else {
                Ok(())
            }
        };
        need(FIXED_BEFORE_BODY + 4)?;
        let magic = be_u32(rec, 4);
        let host = |at: usize| {
            SocketAddrV4::new(
                Ipv4Addr::new(rec[at], rec[at + 1], rec[at + 2], rec[at + 3]),
                be_i32(rec, at + 4) as u16,
            )
        };
        let body_len = be_i32(rec, 84).max(0) as usize;
        let mut pos = 88;
        need(pos + body_len)?;
        let body = &rec[pos..pos + body_len];
        pos += body_len;
        let topic_len = if magic == MAGIC_V2 {
            need(pos + 2)?;
            let l = i16::from_be_bytes([rec[pos], rec[pos + 1]]).max(0) as usize;
            pos += 2;
            l
        } else {
            need(pos + 1)?;
            let l = rec[pos] as usize;
            pos += 1;
            l
        };
        need(pos + topic_len)?;
        let topic_raw = &rec[pos..pos + topic_len];
        pos += topic_len;
        need(pos + 2)?;
        let props_len = i16::from_be_bytes([rec[pos], rec[pos + 1]]).max(0) as usize;
        pos += 2;
        need(pos + props_len)?;
        let properties_raw = &rec[pos..pos + props_len];
        Ok(Self {
            total_size: be_i32(rec, 0).max(0) as usize,
            queue_id: be_i32(rec, POS_QUEUE_ID),
            flag: be_i32(rec, 16),
            queue_offset: be_i64(rec, POS_QUEUE_OFFSET),
            physical_offset: be_i64(rec, POS_PHYSICAL_OFFSET),
            sys_flag: be_i32(rec, POS_SYSFLAG),
            born_timestamp: be_i64(rec, 40),
            born_host: host(48),
            store_timestamp: be_i64(rec, POS_STORE_TIMESTAMP),
            store_host: host(64),
            reconsume_times: be_i32(rec, 72),
            prepared_tx_offset: be_i64(rec, 76),
            body,
            topic_raw,
            properties_raw,
        })
    }

    /// The topic; records we did not write may hold invalid UTF-8, which reads as "".
    pub fn topic(&self) -> &'a str {
        std::str::from_utf8(self.topic_raw).unwrap_or("")
    }

    /// User and system properties, without the record CRC property.
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        decode_properties(self.properties_raw).filter(|(k, _)| k.as_bytes() != CRC_PROP_KEY)
    }

    pub fn property(&self, key: &str) -> Option<&'a str> {
        self.properties().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_scan() {
        let raw = encode_properties([("KEYS", "k1 k2"), ("TAGS", "TagA"), ("TAG", "x")]);
        let keys: Vec<&[u8]> = pair_starts(&raw)
            .filter(|&i| key_at(&raw[i..], b"TAG") || key_at(&raw[i..], b"TAGS"))
            .map(|i| &raw[i..i + 4])
            .collect();
        assert_eq!(keys, vec![&b"TAGS"[..], &b"TAG\x01"[..]]);
        assert_eq!(pair_starts(b"").count(), 0);
    }

    fn input<'a>(topic: &'a str, body: &'a [u8], props: &'a [u8]) -> RecordInput<'a> {
        RecordInput {
            topic,
            queue_id: 3,
            flag: 0,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            born_host: "10.0.0.1:1234".parse().unwrap(),
            store_host: "10.0.0.2:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_tx_offset: 0,
            body,
            properties: props,
        }
    }

    #[test]
    fn round_trip_and_fixed_positions() {
        let props = encode_properties([("TAGS", "TagA"), ("UNIQ_KEY", "ABC")]);
        let inp = input("TopicTest", b"hello", &props);
        let mut buf = vec![0u8; encoded_len(&inp)];
        let n = encode(&inp, 7, 4096, 1_700_000_000_123, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(check(&buf, 4096), Ok(Scan::Record(n)));
        let v = RecordView::parse(&buf).unwrap();
        assert_eq!(v.topic(), "TopicTest");
        assert_eq!(v.body, b"hello");
        assert_eq!(v.queue_offset, 7);
        assert_eq!(v.property("TAGS"), Some("TagA"));
        assert_eq!(v.properties().count(), 2);
        assert_eq!(i64::from_be_bytes(buf[20..28].try_into().unwrap()), 7);
        assert_eq!(i64::from_be_bytes(buf[28..36].try_into().unwrap()), 4096);
        assert_eq!(be_u32(&buf, 8), masked_crc32(b"hello"));
        assert_eq!(n, 91 + 5 + 9 + props.len() + CRC_PROP_LEN);
    }

    #[test]
    fn layout_check_skips_only_the_crcs() {
        let props = encode_properties([("TAGS", "T")]);
        let inp = input("T", b"body-bytes", &props);
        let mut buf = vec![0u8; encoded_len(&inp)];
        let n = encode(&inp, 0, 64, 1, &mut buf).unwrap();
        let body_at = buf.windows(10).position(|w| w == b"body-bytes").unwrap();
        buf[body_at] ^= 1;
        assert_eq!(check(&buf, 64), Err(RecordError::BodyCrc));
        assert_eq!(check_layout(&buf, 64), Ok(Scan::Record(n)));
        assert!(matches!(
            check_layout(&buf, 65),
            Err(RecordError::WrongOffset { .. })
        ));
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let props = encode_properties([("TAGS", "T")]);
        let inp = input("T", b"body-bytes", &props);
        let mut buf = vec![0u8; encoded_len(&inp)];
        encode(&inp, 0, 0, 1, &mut buf).unwrap();
        for i in 0..buf.len() {
            let mut c = buf.clone();
            c[i] ^= 0x5A;
            assert!(
                !matches!(check(&c, 0), Ok(Scan::Record(n)) if n == buf.len()),
                "flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn truncation_is_detected_and_zeroes_read_as_end() {
        let inp = input("T", b"abc", b"");
        let mut buf = vec![0u8; encoded_len(&inp)];
        encode(&inp, 0, 0, 1, &mut buf).unwrap();
        for cut in 8..buf.len() {
            assert!(check(&buf[..cut], 0).is_err());
        }
        assert_eq!(check(&[0u8; 64], 0), Ok(Scan::End));
        let mut blank = [0u8; 16];
        encode_blank(16, &mut blank);
        assert_eq!(check(&blank, 0), Ok(Scan::EndOfFile));
    }

    #[test]
    fn long_topics_use_v2_magic() {
        let topic = "%RETRY%".to_string() + &"g".repeat(140);
        let inp = input(&topic, b"x", b"");
        let mut buf = vec![0u8; encoded_len(&inp)];
        encode(&inp, 0, 0, 1, &mut buf).unwrap();
        assert_eq!(be_u32(&buf, 4), MAGIC_V2);
        assert!(matches!(check(&buf, 0), Ok(Scan::Record(_))));
        assert_eq!(RecordView::parse(&buf).unwrap().topic(), topic);
    }
}
