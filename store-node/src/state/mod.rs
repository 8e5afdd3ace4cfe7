//! Everything a store node knows besides message bytes — topic and group configuration, POP
//! cursors, in-flight deliveries — is a typed *state record* in the commit log, under
//! [`STATE_TOPIC`]. The same apply functions run when a master changes state and when recovery
//! or a replica replays the log, so a slave copying the log byte for byte knows what its master
//! knew. Periodic snapshots ([`snapshot`]) carry the state past the deletion of the segments that
//! held its records, and bound replay at start.
//!
//! The state is split into parts with their own locks: the [`catalog::Catalog`] and one
//! [`pop::PopPart`] per (group, topic). Each part remembers the end of the last log record
//! applied to it, which is what lets a snapshot copy parts one at a time.

pub mod catalog;
pub mod pop;
pub mod record;
pub mod snapshot;

use parking_lot::RwLock;
pub use record::Kind;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// System topic holding state records; never dispatched to a consume queue.
pub const STATE_TOPIC: &str = "rmq_sys_STATE_LOG";

#[derive(Debug, Clone, PartialEq)]
pub struct TopicCfg {
    pub name: String,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
    pub perm: i32,
    pub attributes: BTreeMap<String, String>,
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

#[derive(Debug, Clone, PartialEq)]
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
    /// Apache's `groupRetryPolicy` JSON as given to `updateSubGroup -p`; empty = the default.
    pub group_retry_policy: String,
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
            group_retry_policy: String::new(),
        }
    }
}

/// Delivery tokens: unique across restarts (they start from the wall clock in µs and never go
/// below the highest one any record names).
#[derive(Debug, Default)]
pub struct Tokens(AtomicU64);

impl Tokens {
    pub fn next(&self, now_ms: i64) -> u64 {
        let floor = (now_ms.max(0) as u64).saturating_mul(1000);
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let t = (cur + 1).max(floor);
            match self
                .0
                .compare_exchange_weak(cur, t, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return t,
                Err(c) => cur = c,
            }
        }
    }

    pub fn observe(&self, t: u64) {
        self.0.fetch_max(t, Ordering::AcqRel);
    }

    pub fn max(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// The whole state of a node.
#[derive(Default)]
pub struct State {
    pub catalog: RwLock<catalog::Catalog>,
    pub pops: pop::PopParts,
    pub tokens: Tokens,
}

/// What applying a record changed, for the caller's side effects.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub topics_changed: bool,
    pub topic_deleted: Option<String>,
}

impl State {
    /// Applies a record read from the log at `[start, end)`, to each part it concerns whose
    /// last applied record precedes it (replay after a snapshot, or a replica's stream).
    pub fn replay(&self, kind: &Kind, start: i64, end: i64, store_ts: i64) -> Applied {
        let mut applied = Applied::default();
        if catalog::Catalog::owns(kind) {
            let mut cat = self.catalog.write();
            if start >= cat.applied_to {
                cat.apply(kind);
                cat.applied_to = end;
                applied.topics_changed = matches!(kind, Kind::Topic(_) | Kind::TopicDelete(_));
            }
            drop(cat);
            match kind {
                Kind::TopicDelete(t) => {
                    self.pops.remove_where(start, |(_, pt)| pt == t);
                    applied.topic_deleted = Some(t.clone());
                }
                Kind::GroupDelete(g) => self.pops.remove_where(start, |(pg, _)| pg == g),
                _ => {}
            }
        } else if let Some((g, t)) = pop::part_of(kind) {
            let part = self.pops.get_or_create(g, t);
            let mut p = part.lock();
            if start >= p.applied_to {
                let tok = p.apply(kind, store_ts);
                p.applied_to = end;
                self.tokens.observe(tok);
            }
        }
        applied
    }

    /// Applies a change a slave made on its own (not in its log): no part's position moves.
    pub fn apply_local(&self, kind: &Kind, store_ts: i64) {
        if catalog::Catalog::owns(kind) {
            self.catalog.write().apply(kind);
        } else if let Some((g, t)) = pop::part_of(kind) {
            let tok = self.pops.get_or_create(g, t).lock().apply(kind, store_ts);
            self.tokens.observe(tok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmq_proto::state::{AckItem, AckRecord, Inflight, InvisibleRecord, PopRecord};

    fn pop(cursor: i64, items: &[(i64, u64)]) -> Kind {
        Kind::Pop(PopRecord {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 0,
            cursor,
            items: items
                .iter()
                .map(|&(offset, token)| Inflight {
                    offset,
                    token,
                    attempt: 1,
                    visible_at_ms: 100,
                })
                .collect(),
        })
    }

    fn acks(items: &[(i64, u64)]) -> Kind {
        Kind::Acks(AckRecord {
            group: "g".into(),
            topic: "t".into(),
            items: items
                .iter()
                .map(|&(offset, token)| AckItem {
                    queue_id: 0,
                    offset,
                    token,
                })
                .collect(),
        })
    }

    fn queue(s: &State) -> pop::PopQueue {
        s.pops.get("g", "t").unwrap().lock().queue(0).clone()
    }

    #[test]
    fn acks_need_the_current_token_and_records_round_trip() {
        let s = State::default();
        let mut at = 0;
        let mut feed = |k: Kind| {
            let bytes = record::encode(&k);
            let back = record::decode(&bytes).unwrap();
            assert_eq!(back, k);
            s.replay(&back, at, at + 10, 0);
            at += 10;
        };
        feed(pop(4, &[(0, 10), (1, 11), (2, 12), (3, 13)]));
        // Offset 2 carries a stale token: it stays in flight.
        feed(acks(&[(0, 10), (1, 11), (2, 99), (3, 13)]));
        assert_eq!(
            queue(&s).inflight.keys().copied().collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(queue(&s).commit_offset(), 2);
        feed(Kind::Invisible(InvisibleRecord {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 0,
            offset: 2,
            token: 12,
            new_token: 20,
            visible_at_ms: 500,
        }));
        feed(acks(&[(2, 20)]));
        assert_eq!(queue(&s).commit_offset(), 4);
        assert!(s.tokens.next(0) > 20);
    }

    #[test]
    fn replay_skips_what_a_part_already_holds() {
        let s = State::default();
        s.replay(&pop(1, &[(0, 5)]), 0, 50, 0);
        // A snapshot taken now says the part is applied up to 50; replaying from an earlier
        // position must not apply the same record twice, nor anything before 50.
        s.replay(&acks(&[(0, 5)]), 10, 20, 0);
        assert_eq!(
            queue(&s).inflight.len(),
            1,
            "record before applied_to ignored"
        );
        s.replay(&acks(&[(0, 5)]), 50, 60, 0);
        assert!(queue(&s).inflight.is_empty());
    }

    #[test]
    fn a_topic_delete_removes_only_parts_it_precedes() {
        let s = State::default();
        s.replay(
            &Kind::Topic(record::topic_to_proto(&TopicCfg {
                name: "t".into(),
                read_queue_nums: 1,
                write_queue_nums: 1,
                perm: 6,
                attributes: Default::default(),
                order: false,
            })),
            0,
            10,
            0,
        );
        s.replay(&pop(1, &[(0, 5)]), 10, 20, 0);
        s.replay(&Kind::TopicDelete("t".into()), 20, 30, 0);
        assert!(s.pops.get("g", "t").is_none());
        assert!(s.catalog.read().topics.is_empty());
    }
}
