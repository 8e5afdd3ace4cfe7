//! POP parts: one per (consumer group, topic), each behind its own lock, so pops and acks of
//! different topics or groups never wait for each other.

use super::record::Kind;
use parking_lot::{Mutex, RwLock};
use rmq_proto::state as pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inflight {
    pub token: u64,
    pub attempt: i32,
    pub visible_at: i64,
}

/// One consumer group's progress on one queue.
#[derive(Debug, Default, Clone)]
pub struct PopQueue {
    /// Next offset never delivered.
    pub cursor: i64,
    pub inflight: BTreeMap<i64, Inflight>,
    pub last_pop_ms: i64,
}

impl PopQueue {
    /// The committed consumer offset: everything below it is acked.
    pub fn commit_offset(&self) -> i64 {
        self.inflight
            .keys()
            .next()
            .copied()
            .unwrap_or(self.cursor)
            .min(self.cursor)
    }

    /// Forgets what lies below the queue's first retained offset (deleted by retention): the
    /// cursor continues from there and deliveries of deleted messages are dropped.
    pub fn clamp_to_min(&mut self, min: i64) {
        if self.cursor < min {
            self.cursor = min;
        }
        while let Some((&o, _)) = self.inflight.first_key_value() {
            if o >= min {
                break;
            }
            self.inflight.remove(&o);
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct PopPart {
    pub queues: HashMap<i32, PopQueue>,
    /// End of the last log record applied here.
    pub applied_to: i64,
}

/// The part key of a POP record.
pub fn part_of(kind: &Kind) -> Option<(&str, &str)> {
    match kind {
        Kind::Pop(r) => Some((&r.group, &r.topic)),
        Kind::Acks(r) => Some((&r.group, &r.topic)),
        Kind::Invisible(r) => Some((&r.group, &r.topic)),
        _ => None,
    }
}

impl PopPart {
    pub fn queue(&mut self, q: i32) -> &mut PopQueue {
        self.queues.entry(q).or_default()
    }

    /// Applies a POP, ack or invisibility record; returns the highest token it names.
    pub fn apply(&mut self, kind: &Kind, store_ts: i64) -> u64 {
        match kind {
            Kind::Pop(r) => {
                let pq = self.queue(r.queue_id);
                pq.cursor = pq.cursor.max(r.cursor);
                pq.last_pop_ms = pq.last_pop_ms.max(store_ts);
                for it in &r.items {
                    pq.inflight.insert(
                        it.offset,
                        Inflight {
                            token: it.token,
                            attempt: it.attempt,
                            visible_at: it.visible_at_ms,
                        },
                    );
                }
                r.items.iter().map(|i| i.token).max().unwrap_or(0)
            }
            Kind::Acks(r) => {
                for i in &r.items {
                    let pq = self.queue(i.queue_id);
                    if pq
                        .inflight
                        .get(&i.offset)
                        .is_some_and(|x| x.token == i.token)
                    {
                        pq.inflight.remove(&i.offset);
                    }
                }
                0
            }
            Kind::Invisible(r) => {
                let pq = self.queue(r.queue_id);
                if let Some(i) = pq
                    .inflight
                    .get_mut(&r.offset)
                    .filter(|i| i.token == r.token)
                {
                    i.token = r.new_token;
                    i.visible_at = r.visible_at_ms;
                }
                r.new_token
            }
            _ => 0,
        }
    }

    pub fn to_proto(&self, group: &str, topic: &str) -> pb::PopPart {
        let mut queues: Vec<pb::QueueProgress> = self
            .queues
            .iter()
            .map(|(q, p)| pb::QueueProgress {
                queue_id: *q,
                cursor: p.cursor,
                last_pop_ms: p.last_pop_ms,
                inflight: p
                    .inflight
                    .iter()
                    .map(|(o, i)| pb::Inflight {
                        offset: *o,
                        token: i.token,
                        attempt: i.attempt,
                        visible_at_ms: i.visible_at,
                    })
                    .collect(),
            })
            .collect();
        queues.sort_by_key(|q| q.queue_id);
        pb::PopPart {
            group: group.into(),
            topic: topic.into(),
            applied_to: self.applied_to,
            queues,
        }
    }

    pub fn from_proto(p: &pb::PopPart) -> Self {
        Self {
            applied_to: p.applied_to,
            queues: p
                .queues
                .iter()
                .map(|q| {
                    (
                        q.queue_id,
                        PopQueue {
                            cursor: q.cursor,
                            last_pop_ms: q.last_pop_ms,
                            inflight: q
                                .inflight
                                .iter()
                                .map(|i| {
                                    (
                                        i.offset,
                                        Inflight {
                                            token: i.token,
                                            attempt: i.attempt,
                                            visible_at: i.visible_at_ms,
                                        },
                                    )
                                })
                                .collect(),
                        },
                    )
                })
                .collect(),
        }
    }
}

pub type PartKey = (String, String);
pub type SharedPart = Arc<Mutex<PopPart>>;

/// Every POP part, by (group, topic).
#[derive(Default)]
pub struct PopParts {
    map: RwLock<HashMap<PartKey, SharedPart>>,
}

impl PopParts {
    pub fn get(&self, group: &str, topic: &str) -> Option<SharedPart> {
        self.map
            .read()
            .get(&(group.to_string(), topic.to_string()))
            .cloned()
    }

    pub fn get_or_create(&self, group: &str, topic: &str) -> SharedPart {
        if let Some(p) = self.get(group, topic) {
            return p;
        }
        self.map
            .write()
            .entry((group.to_string(), topic.to_string()))
            .or_default()
            .clone()
    }

    /// Removes the parts a delete record at `start` reaches: those of `topic` (or `group`)
    /// whose last applied record precedes it (a part re-created after the delete stays).
    pub fn remove_where(&self, start: i64, matches: impl Fn(&PartKey) -> bool) {
        self.map
            .write()
            .retain(|k, p| !(matches(k) && p.lock().applied_to <= start));
    }

    pub fn all(&self) -> Vec<(PartKey, SharedPart)> {
        self.map
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn replace_all(&self, parts: HashMap<PartKey, SharedPart>) {
        *self.map.write() = parts;
    }
}
