//! Name and field checks of the RocketMQ 5 proxy (grpc-protocol §7.4, §7.5). Each returns a
//! reason; callers attach the status code that belongs to the field.

pub const TOPIC_MAX_LEN: usize = 127;
pub const GROUP_MAX_LEN: usize = 120;
pub const MESSAGE_GROUP_MAX_BYTES: usize = 63;
pub const MAX_USER_PROPERTIES: usize = 128;
pub const MAX_PROPERTIES_BYTES: usize = 16 * 1024;

const SYSTEM_TOPICS: &[&str] = &[
    "TBW102",
    "SCHEDULE_TOPIC_XXXX",
    "BenchmarkTest",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRACE_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
    "CHECKPOINT_TOPIC",
];

/// Reserved user-property keys (`MessageConst.STRING_HASH_SET`).
pub const RESERVED_PROPERTY_KEYS: &[&str] = &[
    "TRACE_ON",
    "MSG_REGION",
    "KEYS",
    "TAGS",
    "WAIT",
    "DELAY",
    "RETRY_TOPIC",
    "REAL_TOPIC",
    "REAL_QID",
    "TRAN_MSG",
    "PGROUP",
    "MIN_OFFSET",
    "MAX_OFFSET",
    "BUYER_ID",
    "ORIGIN_MESSAGE_ID",
    "TRANSFER_FLAG",
    "CORRECTION_FLAG",
    "MQ2_FLAG",
    "RECONSUME_TIME",
    "UNIQ_KEY",
    "MAX_RECONSUME_TIMES",
    "CONSUME_START_TIME",
    "POP_CK",
    "POP_CK_OFFSET",
    "1ST_POP_TIME",
    "TRAN_PREPARED_QUEUE_OFFSET",
    "DUP_INFO",
    "EXTEND_UNIQ_INFO",
    "INSTANCE_ID",
    "CORRELATION_ID",
    "REPLY_TO_CLIENT",
    "TTL",
    "ARRIVE_TIME",
    "PUSH_REPLY_TIME",
    "CLUSTER",
    "MSG_TYPE",
    "INNER_MULTI_QUEUE_OFFSET",
    "TIMER_DELAY_MS",
    "TIMER_DELAY_SEC",
    "TIMER_DELIVER_MS",
    "TIMER_ENQUEUE_MS",
    "TIMER_DEQUEUE_MS",
    "TIMER_ROLL_TIMES",
    "TIMER_OUT_MS",
    "TIMER_DEL_UNIQKEY",
    "TIMER_DELAY_LEVEL",
    "__BORNHOST",
    "BORN_TIMESTAMP",
    "DLQ_ORIGIN_TOPIC",
    "DLQ_ORIGIN_MESSAGE_ID",
    "__CRC32#",
];

fn name_chars_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'%' || b == b'|' || b == b'_' || b == b'-')
}

pub fn is_system_topic(topic: &str) -> bool {
    topic.starts_with("rmq_sys_") || SYSTEM_TOPICS.contains(&topic)
}

/// A topic a client may name: `^[%|a-zA-Z0-9_-]+$`, at most 127 characters, not a system topic.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.trim().is_empty() {
        return Err("topic name cannot be blank".into());
    }
    if topic.len() > TOPIC_MAX_LEN {
        return Err(format!(
            "topic name {topic} is longer than {TOPIC_MAX_LEN} characters"
        ));
    }
    if !name_chars_ok(topic) {
        return Err(format!(
            "topic name {topic} contains illegal characters; allowed: [%|a-zA-Z0-9_-]"
        ));
    }
    if is_system_topic(topic) {
        return Err(format!("topic {topic} is a system topic"));
    }
    Ok(())
}

pub fn is_system_group(group: &str) -> bool {
    group.starts_with("CID_RMQ_SYS_") || group.starts_with("CID_SYS_RMQ_")
}

/// A consumer group: same characters as topics, at most 120 characters, not a system group.
pub fn check_group(group: &str) -> Result<(), String> {
    if group.trim().is_empty() {
        return Err("consumer group cannot be blank".into());
    }
    if group.len() > GROUP_MAX_LEN {
        return Err(format!(
            "consumer group {group} is longer than {GROUP_MAX_LEN} characters"
        ));
    }
    if !name_chars_ok(group) {
        return Err(format!(
            "consumer group {group} contains illegal characters"
        ));
    }
    if is_system_group(group) {
        return Err(format!("consumer group {group} is a system group"));
    }
    Ok(())
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.trim().is_empty() {
        return Err("tag cannot be blank".into());
    }
    if tag.contains('|') {
        return Err(format!("tag {tag} contains '|'"));
    }
    if has_control(tag) {
        return Err("tag contains a control character".into());
    }
    Ok(())
}

pub fn check_key(key: &str) -> Result<(), String> {
    if key.trim().is_empty() {
        return Err("message key cannot be blank".into());
    }
    if has_control(key) {
        return Err("message key contains a control character".into());
    }
    Ok(())
}

pub fn check_message_group(group: &str) -> Result<(), String> {
    if group.trim().is_empty() {
        return Err("message group cannot be blank".into());
    }
    if group.len() > MESSAGE_GROUP_MAX_BYTES {
        return Err(format!(
            "message group is longer than {MESSAGE_GROUP_MAX_BYTES} bytes"
        ));
    }
    if has_control(group) {
        return Err("message group contains a control character".into());
    }
    Ok(())
}

pub fn check_property(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("property key cannot be empty".into());
    }
    if RESERVED_PROPERTY_KEYS.contains(&key) {
        return Err(format!("property key {key} is reserved"));
    }
    if has_control(key) || has_control(value) {
        return Err(format!("property {key} contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_topic("TopicTest").is_ok());
        assert!(check_topic("a%b|c_d-e").is_ok());
        assert!(check_topic("bad topic").is_err());
        assert!(check_topic(&"t".repeat(128)).is_err());
        assert!(check_topic("rmq_sys_x").is_err());
        assert!(check_topic("TBW102").is_err());
        assert!(check_group("G1").is_ok());
        assert!(check_group("CID_RMQ_SYS_X").is_err());
        assert!(check_tag("A|B").is_err());
        assert!(check_tag("  ").is_err());
        assert!(check_message_group(&"g".repeat(64)).is_err());
        assert!(check_message_group(&"g".repeat(63)).is_ok());
        assert!(check_property("UNIQ_KEY", "x").is_err());
        assert!(check_property("k", "v\u{1}").is_err());
    }
}
