//! Dead letters. A delivery that has used up its group's attempts (`retryMaxTimes` + 1), or that
//! a FIFO client gives up on (ForwardMessageToDeadLetterQueue), is copied to `%DLQ%<group>` and
//! then acknowledged, so the group never receives it again. The copy keeps the message id, body,
//! properties, born time and host, carries its delivery count as `reconsumeTimes`, and is written
//! with the same flush and replication waits as a send.

use super::consume::Unreadable;
use super::{NewMessage, Store};
use crate::consumequeue::CqEntry;
use crate::error::{Result, StoreError};
use crate::state::TopicCfg;
use rmq_common::keys;
use rmq_common::record::{CRC_PROP_LEN, MAX_PROPERTIES_LEN, RecordView, push_property};
use std::sync::atomic::Ordering;

/// How long a delivery picked for the dead-letter topic stays invisible while it is moved. A
/// node that dies in between moves it again after this: a duplicate in the DLQ, never a loss.
pub(super) const MOVE_HOLD_MS: i64 = 30_000;

/// A delivery on its way to the dead-letter topic (its token is the hold's).
#[derive(Debug, Clone)]
pub(super) struct DeadLetter {
    pub queue_id: i32,
    pub offset: i64,
    pub token: u64,
    pub attempts: i32,
    pub phys: i64,
    pub size: u32,
}

pub fn dlq_topic(group: &str) -> String {
    format!("{}{group}", keys::DLQ_TOPIC_PREFIX)
}

impl Store {
    /// ForwardMessageToDeadLetterQueue: moves a live delivery (its token current) to the DLQ.
    pub async fn dead_letter(
        &self,
        group: &str,
        topic: &str,
        queue: i32,
        offset: i64,
        token: u64,
    ) -> Result<String> {
        if self.is_slave() {
            return Err(StoreError::NotMaster);
        }
        self.require_topic(topic)?;
        let d = {
            let part = self.state.pops.get_or_create(group, topic);
            let mut p = part.lock();
            let now = self.clock.now();
            Self::check_delivery(&mut p, queue, offset, token, now)?;
            let attempts = p
                .queue(queue)
                .inflight
                .get(&offset)
                .map(|i| i.attempt)
                .unwrap_or(1);
            let e = self
                .queues
                .queue(topic, queue)
                .and_then(|c| c.get(offset))
                .ok_or(StoreError::InvalidHandle("the message is no longer stored"))?;
            DeadLetter {
                queue_id: queue,
                offset,
                token,
                attempts,
                phys: e.phys,
                size: e.size,
            }
        };
        self.move_to_dlq(group, topic, &d).await
    }

    /// Copies the delivery's record to the group's DLQ, then acks the delivery.
    pub(super) async fn move_to_dlq(
        &self,
        group: &str,
        topic: &str,
        d: &DeadLetter,
    ) -> Result<String> {
        let entry = CqEntry {
            phys: d.phys,
            size: d.size,
            tags_code: 0,
        };
        // Verified as a delivery is: a damaged record is never copied. It cannot be delivered
        // either, so it leaves the group (counted and logged by the read) instead of coming back
        // every hold period.
        let record = match self.read_entry(topic, d.queue_id, d.offset, &entry) {
            Ok(r) => r,
            Err(Unreadable::Damaged | Unreadable::Gone) => {
                self.ack(group, topic, d.queue_id, d.offset, d.token)
                    .await?;
                tracing::error!(
                    group,
                    topic,
                    queue = d.queue_id,
                    offset = d.offset,
                    "message unreadable, dropped instead of dead-lettered"
                );
                return Ok(dlq_topic(group));
            }
        };
        let view = RecordView::parse(&record)?;
        let dlq = dlq_topic(group);
        self.ensure_dlq_topic(&dlq).await?;
        let msg_id = view.property(keys::UNIQ_KEY).unwrap_or("").to_string();
        let mut props = Vec::with_capacity(view.properties_raw.len() + 96);
        let mut has_retry_topic = false;
        for (k, v) in view.properties() {
            has_retry_topic |= k == keys::RETRY_TOPIC;
            if k != keys::DLQ_ORIGIN_TOPIC && k != keys::DLQ_ORIGIN_MESSAGE_ID {
                push_property(&mut props, k, v);
            }
        }
        if !has_retry_topic {
            push_property(&mut props, keys::RETRY_TOPIC, topic);
        }
        if view.property(keys::ORIGIN_MESSAGE_ID).is_none() && !msg_id.is_empty() {
            push_property(&mut props, keys::ORIGIN_MESSAGE_ID, &msg_id);
        }
        push_property(&mut props, keys::DLQ_ORIGIN_TOPIC, topic);
        push_property(&mut props, keys::DLQ_ORIGIN_MESSAGE_ID, &msg_id);
        if props.len() + CRC_PROP_LEN > MAX_PROPERTIES_LEN {
            // The origin markers would not fit: the copy keeps the message's own properties
            // rather than never being written.
            props.clear();
            for (k, v) in view.properties() {
                push_property(&mut props, k, v);
            }
        }
        let copy = NewMessage {
            topic: dlq.clone(),
            queue_id: 0,
            body: bytes::Bytes::copy_from_slice(view.body),
            properties: props,
            born_timestamp_ms: view.born_timestamp,
            born_host: view.born_host.to_string(),
            flag: view.flag,
            sys_flag: view.sys_flag,
            reconsume_times: d.attempts,
        };
        self.append(vec![copy]).await?;
        self.ack(group, topic, d.queue_id, d.offset, d.token)
            .await?;
        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            group,
            topic,
            queue = d.queue_id,
            offset = d.offset,
            message_id = %msg_id,
            attempts = d.attempts,
            dlq = %dlq,
            "message moved to the dead-letter topic"
        );
        Ok(dlq)
    }

    /// The DLQ topic as Apache creates it: one queue, read and write.
    async fn ensure_dlq_topic(&self, dlq: &str) -> Result<()> {
        if self.state.catalog.read().topics.contains_key(dlq) {
            return Ok(());
        }
        self.upsert_topic(TopicCfg {
            name: dlq.to_string(),
            read_queue_nums: 1,
            write_queue_nums: 1,
            perm: 6,
            attributes: Default::default(),
            order: false,
        })
        .await
    }
}
