//! I/O-free building blocks shared by every role: nothing here opens a file or a socket.

pub mod handle;
pub mod java;
pub mod message_type;
pub mod properties_file;
pub mod record;
pub mod retry_policy;
pub mod sql92;
pub mod time;
pub mod validate;

/// Hash map for the per-message paths (topics, queues, brokers): foldhash, seeded per process,
/// hashes a topic name in a fraction of SipHash's instructions (callgrind: ~10 lookups a send).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Property keys RocketMQ gives meaning to (`MessageConst`); names are the wire contract.
pub mod keys {
    pub const TAGS: &str = "TAGS";
    pub const KEYS: &str = "KEYS";
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
    pub const SHARDING_KEY: &str = "__SHARDINGKEY";
    pub const BORN_HOST: &str = "__BORNHOST";
    pub const MSG_TYPE: &str = "MSG_TYPE";
    pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
    pub const TRAN_MSG: &str = "TRAN_MSG";
    pub const TRACE_CONTEXT: &str = "TRACE_CONTEXT";
    pub const WAIT: &str = "WAIT";
    pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
    pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
    pub const DLQ_ORIGIN_TOPIC: &str = "DLQ_ORIGIN_TOPIC";
    pub const DLQ_ORIGIN_MESSAGE_ID: &str = "DLQ_ORIGIN_MESSAGE_ID";
    /// Prefix of a consumer group's dead-letter topic, `%DLQ%<group>`.
    pub const DLQ_TOPIC_PREFIX: &str = "%DLQ%";
}
