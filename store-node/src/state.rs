//! Everything a store node knows besides message bytes (topic and group config, POP cursors,
//! in-flight deliveries) is a *state record* in the commit log, under [`STATE_TOPIC`]. The same
//! [`Meta::apply`] runs when a master changes state and when recovery or a replica replays the
//! log, so a slave that copies the log byte for byte ends up knowing exactly what its master knew.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// System topic holding state records; never dispatched to a consume queue.
pub const STATE_TOPIC: &str = "rmq_sys_STATE_LOG";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicCfg {
    pub name: String,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
    pub perm: i32,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub order: bool,
}

impl TopicCfg {
    pub fn readable(&self) -> bool {
        self.perm & 4 != 0
    }
    pub fn writable(&self) -> bool {
        self.perm & 2 != 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCfg {
    pub name: String,
    pub consume_enable: bool,
    pub consume_message_orderly: bool,
    pub retry_max_times: i32,
    pub retry_queue_nums: i32,
    pub consume_broadcast_enable: bool,
    pub consume_from_min_enable: bool,
    pub broker_id: i64,
    pub which_broker_when_consume_slowly: i64,
}

impl GroupCfg {
    /// RocketMQ's `SubscriptionGroupConfig` defaults.
    pub fn with_defaults(name: &str) -> Self {
        Self {
            name: name.into(),
            consume_enable: true,
            consume_message_orderly: false,
            retry_max_times: 16,
            retry_queue_nums: 1,
            consume_broadcast_enable: false,
            consume_from_min_enable: false,
            broker_id: 0,
            which_broker_when_consume_slowly: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopItem {
    pub o: i64,
    pub k: u64,
    pub a: i32,
    pub v: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum StateRecord {
    Topic {
        cfg: TopicCfg,
    },
    TopicDelete {
        name: String,
    },
    Group {
        cfg: GroupCfg,
    },
    GroupDelete {
        name: String,
    },
    /// Deliveries made by one pop from one queue, and the queue's new cursor.
    Pop {
        g: String,
        t: String,
        q: i32,
        cursor: i64,
        items: Vec<PopItem>,
    },
    Ack {
        g: String,
        t: String,
        q: i32,
        o: i64,
        k: u64,
    },
    /// Several deliveries of one group and topic acknowledged at once: (queue, offset, token).
    /// One record per client ack request instead of one per message.
    Acks {
        g: String,
        t: String,
        i: Vec<(i32, i64, u64)>,
    },
    /// A delivery's invisibility changed: token `k` became `n`, visible again at `v`.
    Inv {
        g: String,
        t: String,
        q: i32,
        o: i64,
        k: u64,
        n: u64,
        v: i64,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Inflight {
    pub token: u64,
    pub attempt: i32,
    pub visible_at: i64,
}

/// One consumer group's progress on one queue.
#[derive(Debug, Default)]
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
}

#[derive(Debug, Default)]
pub struct Meta {
    pub topics: BTreeMap<String, TopicCfg>,
    pub groups: BTreeMap<String, GroupCfg>,
    /// (group, topic) → queue id → progress.
    pub pops: HashMap<(String, String), HashMap<i32, PopQueue>>,
    pub max_token: u64,
    pub round_robin: usize,
}

impl Meta {
    pub fn apply(&mut self, rec: &StateRecord, store_ts: i64) {
        match rec {
            StateRecord::Topic { cfg } => {
                self.topics.insert(cfg.name.clone(), cfg.clone());
            }
            StateRecord::TopicDelete { name } => {
                self.topics.remove(name);
                self.pops.retain(|(_, t), _| t != name);
            }
            StateRecord::Group { cfg } => {
                self.groups.insert(cfg.name.clone(), cfg.clone());
            }
            StateRecord::GroupDelete { name } => {
                self.groups.remove(name);
                self.pops.retain(|(g, _), _| g != name);
            }
            StateRecord::Pop {
                g,
                t,
                q,
                cursor,
                items,
            } => {
                let pq = self.pop_queue(g, t, *q);
                pq.cursor = pq.cursor.max(*cursor);
                pq.last_pop_ms = pq.last_pop_ms.max(store_ts);
                for it in items {
                    pq.inflight.insert(
                        it.o,
                        Inflight {
                            token: it.k,
                            attempt: it.a,
                            visible_at: it.v,
                        },
                    );
                }
                if let Some(m) = items.iter().map(|i| i.k).max() {
                    self.max_token = self.max_token.max(m);
                }
            }
            StateRecord::Ack { g, t, q, o, k } => {
                let pq = self.pop_queue(g, t, *q);
                if pq.inflight.get(o).is_some_and(|i| i.token == *k) {
                    pq.inflight.remove(o);
                }
            }
            StateRecord::Acks { g, t, i } => {
                for (q, o, k) in i {
                    let pq = self.pop_queue(g, t, *q);
                    if pq.inflight.get(o).is_some_and(|x| x.token == *k) {
                        pq.inflight.remove(o);
                    }
                }
            }
            StateRecord::Inv {
                g,
                t,
                q,
                o,
                k,
                n,
                v,
            } => {
                let pq = self.pop_queue(g, t, *q);
                if let Some(i) = pq.inflight.get_mut(o).filter(|i| i.token == *k) {
                    i.token = *n;
                    i.visible_at = *v;
                }
                self.max_token = self.max_token.max(*n);
            }
        }
    }

    pub fn pop_queue(&mut self, group: &str, topic: &str, queue: i32) -> &mut PopQueue {
        self.pops
            .entry((group.to_string(), topic.to_string()))
            .or_default()
            .entry(queue)
            .or_default()
    }

    /// A fresh token, unique across restarts (tokens start from the wall clock in µs).
    pub fn next_token(&mut self, now_ms: i64) -> u64 {
        let t = (self.max_token + 1).max((now_ms.max(0) as u64) * 1000);
        self.max_token = t;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_needs_the_current_token() {
        let mut m = Meta::default();
        let pop = StateRecord::Pop {
            g: "g".into(),
            t: "t".into(),
            q: 0,
            cursor: 2,
            items: vec![
                PopItem {
                    o: 0,
                    k: 5,
                    a: 1,
                    v: 100,
                },
                PopItem {
                    o: 1,
                    k: 6,
                    a: 1,
                    v: 100,
                },
            ],
        };
        m.apply(&pop, 0);
        m.apply(
            &StateRecord::Ack {
                g: "g".into(),
                t: "t".into(),
                q: 0,
                o: 0,
                k: 99,
            },
            0,
        );
        assert_eq!(m.pop_queue("g", "t", 0).inflight.len(), 2);
        m.apply(
            &StateRecord::Ack {
                g: "g".into(),
                t: "t".into(),
                q: 0,
                o: 0,
                k: 5,
            },
            0,
        );
        assert_eq!(m.pop_queue("g", "t", 0).commit_offset(), 1);
        m.apply(
            &StateRecord::Inv {
                g: "g".into(),
                t: "t".into(),
                q: 0,
                o: 1,
                k: 6,
                n: 7,
                v: 200,
            },
            0,
        );
        m.apply(
            &StateRecord::Ack {
                g: "g".into(),
                t: "t".into(),
                q: 0,
                o: 1,
                k: 7,
            },
            0,
        );
        assert_eq!(m.pop_queue("g", "t", 0).commit_offset(), 2);
        assert!(m.next_token(0) > 7);
    }

    #[test]
    fn a_batched_ack_applies_each_item_by_its_own_token() {
        let mut m = Meta::default();
        let items = (0..4)
            .map(|o| PopItem {
                o,
                k: 10 + o as u64,
                a: 1,
                v: 100,
            })
            .collect();
        m.apply(
            &StateRecord::Pop {
                g: "g".into(),
                t: "t".into(),
                q: 0,
                cursor: 4,
                items,
            },
            0,
        );
        let rec = StateRecord::Acks {
            g: "g".into(),
            t: "t".into(),
            // offset 2 carries a stale token: it stays in flight.
            i: vec![(0, 0, 10), (0, 1, 11), (0, 2, 99), (0, 3, 13)],
        };
        let json = serde_json::to_vec(&rec).unwrap();
        let back: StateRecord = serde_json::from_slice(&json).unwrap();
        m.apply(&back, 0);
        let pq = m.pop_queue("g", "t", 0);
        assert_eq!(pq.inflight.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(pq.commit_offset(), 2);
    }
}
