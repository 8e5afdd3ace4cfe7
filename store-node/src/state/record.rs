//! State records as they travel: prost messages (`rmq.state.v1`) in the body of a commit-log
//! record under [`super::STATE_TOPIC`], and on the replication stream's handover.

use super::{GroupCfg, TopicCfg};
use prost::Message;
use rmq_proto::state::StateRecord;
pub use rmq_proto::state::state_record::Kind;
use rmq_proto::store::{GroupConfig, TopicConfig};

pub fn encode(kind: &Kind) -> Vec<u8> {
    StateRecord {
        kind: Some(kind.clone()),
    }
    .encode_to_vec()
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("state record does not decode: {0}")]
    Prost(#[from] prost::DecodeError),
    #[error("state record of an unknown kind (written by a newer build?)")]
    UnknownKind,
}

pub fn decode(bytes: &[u8]) -> Result<Kind, DecodeError> {
    StateRecord::decode(bytes)?
        .kind
        .ok_or(DecodeError::UnknownKind)
}

/// Whether a slave may make this change while its master is away (and hand it over later).
pub fn is_consumption(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Pop(_) | Kind::Acks(_) | Kind::Invisible(_) | Kind::Group(_)
    )
}

pub fn topic_to_proto(c: &TopicCfg) -> TopicConfig {
    TopicConfig {
        name: c.name.clone(),
        read_queue_nums: c.read_queue_nums,
        write_queue_nums: c.write_queue_nums,
        perm: c.perm,
        attributes: c
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        order: c.order,
    }
}

pub fn topic_from_proto(c: TopicConfig) -> TopicCfg {
    TopicCfg {
        name: c.name,
        read_queue_nums: c.read_queue_nums,
        write_queue_nums: c.write_queue_nums,
        perm: c.perm,
        attributes: c.attributes.into_iter().collect(),
        order: c.order,
    }
}

pub fn group_to_proto(g: &GroupCfg) -> GroupConfig {
    GroupConfig {
        name: g.name.clone(),
        consume_enable: g.consume_enable,
        consume_message_orderly: g.consume_message_orderly,
        retry_max_times: g.retry_max_times,
        retry_queue_nums: g.retry_queue_nums,
        consume_broadcast_enable: g.consume_broadcast_enable,
        consume_from_min_enable: g.consume_from_min_enable,
        broker_id: g.broker_id,
        which_broker_when_consume_slowly: g.which_broker_when_consume_slowly,
        group_retry_policy: g.group_retry_policy.clone(),
    }
}

pub fn group_from_proto(g: GroupConfig) -> GroupCfg {
    GroupCfg {
        name: g.name,
        consume_enable: g.consume_enable,
        consume_message_orderly: g.consume_message_orderly,
        retry_max_times: g.retry_max_times,
        retry_queue_nums: g.retry_queue_nums,
        consume_broadcast_enable: g.consume_broadcast_enable,
        consume_from_min_enable: g.consume_from_min_enable,
        broker_id: g.broker_id,
        which_broker_when_consume_slowly: g.which_broker_when_consume_slowly,
        group_retry_policy: g.group_retry_policy,
    }
}
