//! Consume queues: per (topic, queue id), the commitlog position, size and tags code of every
//! message, dispatched from the log and rebuilt from it on restart (kept in memory).

use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
pub struct CqEntry {
    pub phys: i64,
    pub size: u32,
    pub tags_code: i32,
    pub store_ts: i64,
}

#[derive(Debug, Default)]
pub struct ConsumeQueue {
    /// Logical offset of `entries[0]`.
    pub min: i64,
    entries: Vec<CqEntry>,
}

impl ConsumeQueue {
    pub fn max(&self) -> i64 {
        self.min + self.entries.len() as i64
    }

    pub fn get(&self, offset: i64) -> Option<&CqEntry> {
        if offset < self.min {
            return None;
        }
        self.entries.get((offset - self.min) as usize)
    }

    pub fn last_store_ts(&self) -> i64 {
        self.entries.last().map(|e| e.store_ts).unwrap_or(0)
    }

    fn push(&mut self, offset: i64, e: CqEntry) {
        if self.entries.is_empty() && offset != self.min {
            self.min = offset;
        }
        if offset != self.max() {
            tracing::warn!(
                offset,
                expected = self.max(),
                "consume queue offset out of sequence"
            );
            if offset < self.max() {
                return;
            }
        }
        self.entries.push(e);
    }
}

/// A message appended but not yet visible to consumers (waiting for its flush under SYNC_FLUSH).
#[derive(Debug, Clone)]
pub struct PendingDispatch {
    pub topic: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub entry: CqEntry,
}

#[derive(Debug, Default)]
pub struct QueueTable {
    topics: HashMap<String, HashMap<i32, ConsumeQueue>>,
}

impl QueueTable {
    pub fn dispatch(&mut self, p: &PendingDispatch) {
        // Look up before inserting: `entry` would clone the topic name for every message.
        let queues = match self.topics.get_mut(&p.topic) {
            Some(q) => q,
            None => self.topics.entry(p.topic.clone()).or_default(),
        };
        queues
            .entry(p.queue_id)
            .or_default()
            .push(p.queue_offset, p.entry);
    }

    pub fn queue(&self, topic: &str, queue_id: i32) -> Option<&ConsumeQueue> {
        self.topics.get(topic)?.get(&queue_id)
    }

    /// (min, max) logical offsets of a queue; (0, 0) when it holds nothing yet.
    pub fn bounds(&self, topic: &str, queue_id: i32) -> (i64, i64) {
        self.queue(topic, queue_id)
            .map(|q| (q.min, q.max()))
            .unwrap_or((0, 0))
    }

    pub fn remove_topic(&mut self, topic: &str) {
        self.topics.remove(topic);
    }
}
