//! Between v2 messages and commitlog records: validation on the way in (grpc-protocol §7.4), the
//! delivered shape on the way out (§7.3).

use crate::error::ProxyError;
use md5::{Digest as _, Md5};
use prost_types::{Duration as PbDuration, Timestamp};
use rmq_common::handle::ReceiptHandle;
use rmq_common::keys;
use rmq_common::message_type::TopicMessageType;
use rmq_common::record::{RecordView, push_property};
use rmq_common::validate::{self, RESERVED_PROPERTY_KEYS};
use rmq_proto::store::StoreMessage;
use rmq_proto::v2::{self, Code, DigestType, Encoding, MessageType, Resource, SystemProperties};

const MAX_DELAY_MS: i64 = 24 * 3600 * 1000;
const MAX_ORPHAN_RECOVERY_MS: i64 = 3600 * 1000;

fn ts_ms(t: &Timestamp) -> i64 {
    t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000
}

pub fn ms_ts(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn dur_ms(d: &PbDuration) -> i64 {
    d.seconds.saturating_mul(1000) + i64::from(d.nanos) / 1_000_000
}

pub fn ms_dur(ms: i64) -> PbDuration {
    PbDuration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn invalid(code: Code, msg: String) -> ProxyError {
    ProxyError::invalid(code, msg)
}

/// Whether a message of this type may go to a topic of that type.
pub fn type_allowed(topic: TopicMessageType, msg: MessageType) -> bool {
    match topic {
        TopicMessageType::Mixed => true,
        TopicMessageType::Normal => msg == MessageType::Normal,
        TopicMessageType::Fifo => msg == MessageType::Fifo,
        TopicMessageType::Delay => msg == MessageType::Delay,
        TopicMessageType::Transaction => msg == MessageType::Transaction,
        TopicMessageType::Unspecified => false,
    }
}

/// The message type the client declared, or inferred from its fields when unspecified.
pub fn declared_type(m: &v2::Message) -> MessageType {
    let sp = m.system_properties.as_ref();
    match sp
        .map(|s| s.message_type())
        .unwrap_or(MessageType::Unspecified)
    {
        MessageType::Unspecified => {
            if sp.is_some_and(|s| s.message_group.is_some()) {
                MessageType::Fifo
            } else if sp.is_some_and(|s| s.delivery_timestamp.is_some()) {
                MessageType::Delay
            } else {
                MessageType::Normal
            }
        }
        t => t,
    }
}

/// Validates one message and turns it into what the store appends.
pub fn to_store(
    m: &v2::Message,
    topic: &str,
    max_body: usize,
    now_ms: i64,
) -> Result<StoreMessage, ProxyError> {
    let sp = m.system_properties.as_ref().ok_or_else(|| {
        invalid(
            Code::MessageCorrupted,
            "message without system properties".into(),
        )
    })?;
    if m.body.is_empty() {
        return Err(invalid(
            Code::MessageBodyEmpty,
            "message body is empty".into(),
        ));
    }
    if m.body.len() > max_body {
        return Err(invalid(
            Code::MessageBodyTooLarge,
            format!(
                "message body size {} exceeds the limit of {max_body} bytes",
                m.body.len()
            ),
        ));
    }
    if sp.message_id.trim().is_empty() {
        return Err(invalid(
            Code::IllegalMessageId,
            "message id cannot be blank".into(),
        ));
    }
    if m.user_properties.len() > validate::MAX_USER_PROPERTIES {
        return Err(invalid(
            Code::MessagePropertiesTooLarge,
            format!(
                "{} user properties exceed the limit of {}",
                m.user_properties.len(),
                validate::MAX_USER_PROPERTIES
            ),
        ));
    }
    // Encoded straight into the record's form: one buffer, no string per property.
    let mut props: Vec<u8> = Vec::with_capacity(128 + m.user_properties.len() * 32);
    let mut size = 0usize;
    for (k, v) in &m.user_properties {
        if k == keys::SHARDING_KEY {
            return Err(invalid(
                Code::IllegalMessagePropertyKey,
                format!("property key {k} is reserved"),
            ));
        }
        validate::check_property(k, v).map_err(|e| invalid(Code::IllegalMessagePropertyKey, e))?;
        size += k.len() + v.len();
        push_property(&mut props, k, v);
    }
    if let Some(tag) = &sp.tag {
        validate::check_tag(tag).map_err(|e| invalid(Code::IllegalMessageTag, e))?;
        size += tag.len();
        push_property(&mut props, keys::TAGS, tag);
    }
    if !sp.keys.is_empty() {
        for k in &sp.keys {
            validate::check_key(k).map_err(|e| invalid(Code::IllegalMessageKey, e))?;
            size += k.len();
        }
        push_property(&mut props, keys::KEYS, &sp.keys.join(" "));
    }
    if size > validate::MAX_PROPERTIES_BYTES {
        return Err(invalid(
            Code::MessagePropertiesTooLarge,
            format!(
                "properties of {size} bytes exceed the limit of {} bytes",
                validate::MAX_PROPERTIES_BYTES
            ),
        ));
    }
    if let Some(g) = &sp.message_group {
        validate::check_message_group(g).map_err(|e| invalid(Code::IllegalMessageGroup, e))?;
        push_property(&mut props, keys::SHARDING_KEY, g);
    }
    if let Some(t) = &sp.delivery_timestamp {
        let at = ts_ms(t);
        if at - now_ms > MAX_DELAY_MS {
            return Err(invalid(
                Code::IllegalDeliveryTime,
                "delivery time is more than one day ahead".into(),
            ));
        }
        push_property(&mut props, keys::TIMER_DELIVER_MS, &at.to_string());
    }
    if let Some(d) = &sp.orphaned_transaction_recovery_duration
        && dur_ms(d) > MAX_ORPHAN_RECOVERY_MS
    {
        return Err(invalid(
            Code::BadRequest,
            "orphaned transaction recovery duration exceeds one hour".into(),
        ));
    }
    push_property(&mut props, keys::UNIQ_KEY, &sp.message_id);
    // The record's born-host field holds an IPv4 address; the property keeps what the client
    // sent (any form), as Apache's proxy does.
    let born_host = match sp.born_host.parse::<std::net::SocketAddrV4>() {
        Ok(_) => sp.born_host.clone(),
        Err(_) => String::new(),
    };
    if !sp.born_host.is_empty() {
        push_property(&mut props, keys::BORN_HOST, &sp.born_host);
    }
    let born = sp.born_timestamp.as_ref().map(ts_ms).unwrap_or(now_ms);
    Ok(StoreMessage {
        topic: topic.to_string(),
        queue_id: -1,
        body: m.body.clone(),
        properties: props,
        born_timestamp_ms: born,
        born_host,
        flag: 0,
        sys_flag: 0,
        reconsume_times: 0,
    })
}

fn is_system_key(k: &str) -> bool {
    k == keys::SHARDING_KEY || RESERVED_PROPERTY_KEYS.contains(&k)
}

/// Builds the delivered message from a stored record.
pub fn from_record(
    record: &[u8],
    handle: &ReceiptHandle,
    attempt: i32,
) -> Result<v2::Message, ProxyError> {
    let v = RecordView::parse(record)
        .map_err(|e| ProxyError::Internal(format!("unreadable record: {e}")))?;
    let mut user = std::collections::HashMap::new();
    let mut tag = None;
    let mut keys_v = Vec::new();
    let mut message_id = String::new();
    let mut group = None;
    let mut deliver_at = None;
    let mut born_host = None;
    let mut transactional = false;
    for (k, val) in v.properties() {
        match k {
            keys::TAGS => tag = Some(val.to_string()),
            keys::KEYS => {
                keys_v = val
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            keys::UNIQ_KEY => message_id = val.to_string(),
            keys::SHARDING_KEY => group = Some(val.to_string()),
            keys::TIMER_DELIVER_MS => deliver_at = val.parse::<i64>().ok(),
            keys::BORN_HOST => born_host = Some(val.to_string()),
            keys::TRAN_MSG => transactional = val == "true",
            _ if is_system_key(k) => {}
            _ => {
                user.insert(k.to_string(), val.to_string());
            }
        }
    }
    let message_type = if transactional {
        MessageType::Transaction
    } else if deliver_at.is_some() {
        MessageType::Delay
    } else if group.is_some() {
        MessageType::Fifo
    } else {
        MessageType::Normal
    };
    let digest = hex::encode_upper(Md5::digest(v.body));
    let sp = SystemProperties {
        tag,
        keys: keys_v,
        message_id,
        body_digest: Some(v2::Digest {
            r#type: DigestType::Md5 as i32,
            checksum: digest,
        }),
        body_encoding: Encoding::Identity as i32,
        message_type: message_type as i32,
        born_timestamp: Some(ms_ts(v.born_timestamp)),
        born_host: born_host.unwrap_or_else(|| v.born_host.ip().to_string()),
        store_timestamp: Some(ms_ts(v.store_timestamp)),
        store_host: v.store_host.to_string(),
        delivery_timestamp: deliver_at.map(ms_ts),
        receipt_handle: Some(handle.encode()),
        queue_id: v.queue_id,
        queue_offset: Some(v.queue_offset),
        invisible_duration: Some(ms_dur(handle.invisible_ms)),
        delivery_attempt: Some(attempt.max(1)),
        message_group: group,
        ..Default::default()
    };
    Ok(v2::Message {
        topic: Some(Resource {
            resource_namespace: String::new(),
            name: v.topic().to_string(),
        }),
        user_properties: user,
        system_properties: Some(sp),
        body: bytes::Bytes::copy_from_slice(v.body),
    })
}
