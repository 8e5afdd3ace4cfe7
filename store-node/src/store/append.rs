//! Appends: messages (all or nothing per request, acknowledged per the flush and replication
//! mode) and state records (under the lock of the part they change).

use super::{AppendResult, Durability, NewMessage, Store, remember};
use crate::config::BrokerRole;
use crate::consumequeue::{CqEntry, PendingDispatch};
use crate::error::{Result, StoreError};
use crate::metrics::SentType;
use crate::state::catalog::Catalog;
use crate::state::pop::PopPart;
use crate::state::{Kind, STATE_TOPIC, record};
use rmq_common::java::string_hash_code;
use rmq_common::keys;
use rmq_common::record::{
    CRC_PROP_LEN, MAX_PROPERTIES_LEN, RecordInput, key_at, pair_starts, record_len,
};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a send waits for the allocator to prepare a segment before giving up.
const SEGMENT_WAIT: Duration = Duration::from_secs(3);

impl Store {
    /// Appends a batch of messages (all or nothing), acknowledging per the flush mode.
    pub async fn append(&self, msgs: Vec<NewMessage>) -> Result<Vec<AppendResult>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_slave() {
            return Err(StoreError::NotMaster);
        }
        if let Some(why) = self.disk_full() {
            return Err(StoreError::DiskFull(why));
        }
        if self.cfg.broker_role == BrokerRole::SyncMaster
            && !self.replicas.available(self.log.published())
        {
            // Refused before anything is written, so the proxy may safely try another group.
            return Err(StoreError::HaNotAvailable);
        }
        // Few topics per batch: a vector beats a hash map here.
        let mut write_queues: Vec<(&str, i32)> = Vec::with_capacity(1);
        {
            let cat = self.state.catalog.read();
            for m in &msgs {
                let t = cat
                    .topics
                    .get(&m.topic)
                    .ok_or_else(|| StoreError::TopicNotFound(m.topic.clone()))?;
                if !t.writable() || self.cfg.broker_permission & 2 == 0 {
                    return Err(StoreError::NotWritable(m.topic.clone()));
                }
                if m.body.len() > self.cfg.max_message_size {
                    return Err(StoreError::BodyTooLarge {
                        size: m.body.len(),
                        limit: self.cfg.max_message_size,
                    });
                }
                // Checked here so that a batch never fails half-way through the writer lock.
                if m.properties.len() + CRC_PROP_LEN > MAX_PROPERTIES_LEN {
                    return Err(StoreError::BadRequest(format!(
                        "properties of {} bytes exceed the record limit of {} bytes",
                        m.properties.len(),
                        MAX_PROPERTIES_LEN - CRC_PROP_LEN
                    )));
                }
                if m.queue_id >= t.write_queue_nums {
                    return Err(StoreError::NoSuchQueue {
                        topic: m.topic.clone(),
                        queue: m.queue_id,
                    });
                }
                if !write_queues.iter().any(|(w, _)| *w == m.topic) {
                    write_queues.push((&m.topic, t.write_queue_nums.max(1)));
                }
            }
        }
        let mut attempts = 0;
        let (results, end) = loop {
            attempts += 1;
            match self.try_append(&msgs, &write_queues) {
                Err(StoreError::SegmentNotReady) if attempts < 3 => {
                    let base = self.segment_boundary();
                    if !self.log.alloc.wait_ready(base, SEGMENT_WAIT).await
                        && let Some(why) = self.disk_full()
                    {
                        return Err(StoreError::DiskFull(why));
                    }
                }
                other => break other?,
            }
        };
        self.appended.notify_waiters();
        self.snapshot_if_written_enough();
        self.await_durable(end).await?;
        self.stats
            .put_total
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        for (m, r) in msgs.iter().zip(&results) {
            self.metrics.message_in(m, r.sent_type);
        }
        Ok(results)
    }

    /// Where the next segment starts if the tail needs one.
    fn segment_boundary(&self) -> i64 {
        let w = self.writer.lock();
        self.log.segment_end(w.tail.pos).unwrap_or(w.tail.pos)
    }

    fn try_append(
        &self,
        msgs: &[NewMessage],
        write_queues: &[(&str, i32)],
    ) -> Result<(Vec<AppendResult>, i64)> {
        let mut results = Vec::with_capacity(msgs.len());
        let mut w = self.writer.lock();
        let sizes = msgs.iter().map(|m| {
            record_len(
                m.topic.len(),
                m.body.len(),
                m.properties.len() + CRC_PROP_LEN,
            )
        });
        if self.log.needs_segments(&w.tail, sizes) {
            return Err(StoreError::SegmentNotReady);
        }
        let store_ts = self.clock.now();
        for m in msgs {
            let queue_id = if m.queue_id >= 0 {
                m.queue_id
            } else {
                let n = write_queues
                    .iter()
                    .find(|(t, _)| *t == m.topic)
                    .map(|(_, n)| *n)
                    .unwrap_or(1);
                let rr = match w.round_robin.get_mut(&m.topic) {
                    Some(rr) => rr,
                    None => w.round_robin.entry(m.topic.clone()).or_default(),
                };
                *rr = rr.wrapping_add(1);
                (*rr % n as usize) as i32
            };
            let input = RecordInput {
                topic: &m.topic,
                queue_id,
                flag: m.flag,
                sys_flag: m.sys_flag,
                born_timestamp: m.born_timestamp_ms,
                born_host: m
                    .born_host
                    .parse()
                    .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
                store_host: self.store_host,
                reconsume_times: m.reconsume_times,
                prepared_tx_offset: 0,
                body: &m.body,
                properties: &m.properties,
            };
            let qoff = w.queue_next.take(&m.topic, queue_id);
            let a = match self.log.append(&mut w.tail, &input, qoff, store_ts, false) {
                Ok(a) => a,
                Err(e) => {
                    // Sizes and properties were checked before the lock, so this is not
                    // expected; the offset is handed back so the queue keeps no hole.
                    w.queue_next.set(&m.topic, queue_id, qoff);
                    return Err(e);
                }
            };
            remember(&mut w.recent, a.phys, a.size);
            let (tags, sent_type) = scan_incoming(&m.properties);
            let tags = tags.map(|v| i64::from(string_hash_code(v))).unwrap_or(0);
            w.pending.push_back(PendingDispatch {
                topic: m.topic.clone(),
                queue_id,
                queue_offset: qoff,
                entry: CqEntry {
                    phys: a.phys,
                    size: a.size as u32,
                    tags_code: tags,
                },
            });
            results.push(AppendResult {
                queue_id,
                queue_offset: qoff,
                phys: a.phys,
                sent_type,
            });
        }
        self.log.publish(&w.tail);
        let end = w.tail.pos;
        if !self.sync_flush() {
            self.dispatch_pending(&mut w, end);
        }
        Ok((results, end))
    }

    /// Appends a state record to the log; the caller holds the lock of the part it changes.
    /// Returns where the record starts and ends.
    fn append_state_record(&self, kind: &Kind) -> Result<(i64, i64)> {
        let body = record::encode(kind);
        let mut w = self.writer.lock();
        let store_ts = self.clock.now();
        let input = RecordInput {
            topic: STATE_TOPIC,
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: store_ts,
            born_host: self.store_host,
            store_host: self.store_host,
            reconsume_times: 0,
            prepared_tx_offset: 0,
            body: &body,
            properties: &[],
        };
        let a = self.log.append(&mut w.tail, &input, 0, store_ts, true)?;
        remember(&mut w.recent, a.phys, a.size);
        self.log.publish(&w.tail);
        drop(w);
        self.state_dirty.store(true, Ordering::Release);
        self.appended.notify_waiters();
        Ok((a.phys, a.phys + a.size as i64))
    }

    /// Makes a change to a POP part (whose lock the caller holds): into the log on a master,
    /// into the handover log on a slave.
    pub(super) fn change_part(&self, part: &mut PopPart, kind: Kind) -> Result<Durability> {
        let now = self.clock.now();
        if self.is_slave() {
            let rx = self.handover.push(record::encode(&kind));
            let tok = part.apply(&kind, now);
            self.state.tokens.observe(tok);
            return Ok(Durability::Handover(rx));
        }
        let (_, end) = self.append_state_record(&kind)?;
        let tok = part.apply(&kind, now);
        part.applied_to = end;
        self.state.tokens.observe(tok);
        Ok(Durability::Log(end))
    }

    /// Makes a catalog change (the caller holds the catalog's write lock). A slave may only
    /// create consumer groups on its own.
    pub(super) fn change_catalog(&self, cat: &mut Catalog, kind: Kind) -> Result<Durability> {
        if self.is_slave() {
            if !record::is_consumption(&kind) {
                return Err(StoreError::NotMaster);
            }
            let rx = self.handover.push(record::encode(&kind));
            cat.apply(&kind);
            return Ok(Durability::Handover(rx));
        }
        let (start, end) = self.append_state_record(&kind)?;
        cat.apply(&kind);
        cat.applied_to = end;
        match &kind {
            Kind::TopicDelete(t) => self.state.pops.remove_where(start, |(_, pt)| pt == t),
            Kind::GroupDelete(g) => self.state.pops.remove_where(start, |(pg, _)| pg == g),
            _ => {}
        }
        Ok(Durability::Log(end))
    }
}

/// The tags (for the consume queue's tag hash) and the metric type of an incoming message,
/// from one pass over its encoded properties.
fn scan_incoming(props: &[u8]) -> (Option<&str>, SentType) {
    let (mut tags, mut t) = (None, SentType::Normal);
    for i in pair_starts(props) {
        let rest = &props[i..];
        if key_at(rest, keys::TAGS.as_bytes()) {
            let v = &rest[keys::TAGS.len() + 1..];
            let end = memchr::memchr(2, v).unwrap_or(v.len());
            tags = std::str::from_utf8(&v[..end]).ok();
        } else if key_at(rest, keys::TRAN_MSG.as_bytes()) {
            t = SentType::Transaction;
        } else if key_at(rest, keys::TIMER_DELIVER_MS.as_bytes()) && t != SentType::Transaction {
            t = SentType::Delay;
        } else if key_at(rest, keys::SHARDING_KEY.as_bytes()) && t == SentType::Normal {
            t = SentType::Fifo;
        }
    }
    (tags, t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmq_common::record::encode_properties;

    #[test]
    fn incoming_scan() {
        let p = encode_properties([("UNIQ_KEY", "X"), ("TAGS", "TagA"), ("__SHARDINGKEY", "g")]);
        assert_eq!(scan_incoming(&p), (Some("TagA"), SentType::Fifo));
        let p = encode_properties([("TRAN_MSG", "true"), ("TIMER_DELIVER_MS", "1")]);
        assert_eq!(scan_incoming(&p), (None, SentType::Transaction));
        let p = encode_properties([("__SHARDINGKEY", "g"), ("TIMER_DELIVER_MS", "1")]);
        assert_eq!(scan_incoming(&p), (None, SentType::Delay));
        assert_eq!(scan_incoming(b""), (None, SentType::Normal));
    }
}
