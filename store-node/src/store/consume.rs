//! POP consumption. A pop, ack or invisibility change locks only its (group, topic) part, so
//! consumers of different topics or groups never wait for each other; records are read from the
//! log without any state lock and verified (CRC, position, topic and queue) before delivery.

use super::dead_letter::{DeadLetter, MOVE_HOLD_MS};
use super::{Delivery, NewVisibility, PopRequest, Store};
use crate::consumequeue::CqEntry;
use crate::error::{Result, StoreError};
use crate::state::pop::PopPart;
use crate::state::{GroupCfg, Kind, record};
use rmq_common::java::string_hash_code;
use rmq_common::keys;
use rmq_common::record::{RecordView, Scan, check};
use rmq_proto::state::{AckItem, AckRecord, Inflight as InflightPb, InvisibleRecord, PopRecord};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What one non-blocking pop attempt found.
struct Attempt {
    found: Vec<Delivery>,
    /// When none was found: the earliest time an in-flight message becomes visible again.
    next_visible: Option<i64>,
    /// Deliveries that used up their attempts, held invisible for the caller to move to the DLQ.
    dead: Vec<DeadLetter>,
    /// Messages were passed over (filtered out): more may match right after them.
    skipped: bool,
}

/// Why a consume-queue entry's record cannot be delivered.
pub(super) enum Unreadable {
    /// Not (or no longer) in the log, or a stale entry: nothing to deliver, nothing to count.
    Gone,
    /// The bytes fail verification.
    Damaged,
}

impl Store {
    /// Pops up to `batch` messages, long-polling until one arrives or `poll_ms` passes.
    pub async fn pop(&self, req: PopRequest) -> Result<Vec<Delivery>> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(req.poll_ms.max(0) as u64);
        let notify = self.notifier(&req.topic);
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Attempt {
                found,
                next_visible,
                dead,
                skipped,
            } = self.try_pop(&req)?;
            for d in &dead {
                if let Err(e) = self.move_to_dlq(&req.group, &req.topic, d).await {
                    tracing::warn!(group = %req.group, topic = %req.topic, queue = d.queue_id, offset = d.offset, error = %e, "cannot move a message to the dead-letter topic yet; retried after the hold");
                }
            }
            if !found.is_empty() {
                self.stats
                    .get_total
                    .fetch_add(found.len() as u64, Ordering::Relaxed);
                let bytes: u64 = found.iter().map(|d| d.size as u64).sum();
                self.metrics
                    .messages_out(&req.topic, &req.group, found.len() as u64, bytes);
                return Ok(found);
            }
            let now = tokio::time::Instant::now();
            if (!dead.is_empty() || skipped) && now < deadline {
                continue; // what was moved or passed over may have uncovered deliverable ones
            }
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut wake = deadline;
            if let Some(at) = next_visible {
                let wait = Duration::from_millis((at - rmq_common::time::now_ms()).max(1) as u64);
                wake = wake.min(now + wait);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn ensure_group(&self, group: &str) -> Result<()> {
        if self.state.catalog.read().groups.contains_key(group) {
            return Ok(());
        }
        if !self.cfg.auto_create_subscription_group {
            return Err(StoreError::GroupNotFound(group.to_string()));
        }
        let mut cat = self.state.catalog.write();
        if cat.groups.contains_key(group) {
            return Ok(());
        }
        let kind = Kind::Group(record::group_to_proto(&GroupCfg::with_defaults(group)));
        // Not awaited: a group lost with its node is created again on the next receive.
        let _ = self.change_catalog(&mut cat, kind)?;
        Ok(())
    }

    /// Reads and verifies the record a queue entry points at.
    pub(super) fn read_entry(
        &self,
        topic: &str,
        queue: i32,
        offset: i64,
        e: &CqEntry,
    ) -> std::result::Result<Vec<u8>, Unreadable> {
        if self.log.damaged_at(e.phys).is_some() {
            return Err(Unreadable::Damaged);
        }
        let Some(bytes) = self.log.read(e.phys, e.size as usize) else {
            return Err(Unreadable::Gone);
        };
        match check(&bytes, e.phys) {
            Ok(Scan::Record(n)) if n == bytes.len() => {}
            other => {
                let cause = match other {
                    Err(err) => err.to_string(),
                    Ok(s) => format!("{s:?} where a record of {} bytes should be", e.size),
                };
                if self.log.mark_damaged(e.phys, e.phys + e.size as i64) {
                    self.stats.damaged_records.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        topic,
                        queue,
                        offset,
                        phys = e.phys,
                        "damaged record skipped, never delivered: {cause}"
                    );
                }
                return Err(Unreadable::Damaged);
            }
        }
        let view = RecordView::parse(&bytes).map_err(|_| Unreadable::Damaged)?;
        if view.topic() != topic || view.queue_id != queue || view.queue_offset != offset {
            tracing::warn!(
                topic,
                queue,
                offset,
                phys = e.phys,
                "consume-queue entry points at another record; skipped"
            );
            return Err(Unreadable::Gone);
        }
        Ok(bytes)
    }

    /// One non-blocking pop attempt.
    fn try_pop(&self, req: &PopRequest) -> Result<Attempt> {
        self.ensure_group(&req.group)?;
        let cat = self.state.catalog.read();
        let topic = cat
            .topics
            .get(&req.topic)
            .ok_or_else(|| StoreError::TopicNotFound(req.topic.clone()))?;
        if !topic.readable() || self.cfg.broker_permission & 4 == 0 {
            return Err(StoreError::NotReadable(req.topic.clone()));
        }
        let nq = topic.read_queue_nums.max(0);
        if nq == 0 {
            return Ok(Attempt {
                found: Vec::new(),
                next_visible: None,
                dead: Vec::new(),
                skipped: false,
            });
        }
        let mut skipped = false;
        // Deliveries 1..=retryMaxTimes+1 are made; the next one goes to the DLQ instead.
        let max_attempts = cat
            .groups
            .get(&req.group)
            .map(|g| g.retry_max_times.max(0) + 1)
            .unwrap_or(17);
        // An orderly group reads each queue in order (Apache's POP orderly): nothing new from a
        // queue while an earlier delivery is unresolved, and what comes back comes back first.
        let orderly = cat
            .groups
            .get(&req.group)
            .is_some_and(|g| g.consume_message_orderly);
        let mut dead = Vec::new();
        let order: Vec<i32> = if req.queue_id >= 0 {
            if req.queue_id >= nq {
                return Err(StoreError::NoSuchQueue {
                    topic: req.topic.clone(),
                    queue: req.queue_id,
                });
            }
            vec![req.queue_id]
        } else {
            let start = self.pop_round_robin.fetch_add(1, Ordering::Relaxed) % nq as usize;
            (0..nq)
                .map(|i| ((start + i as usize) % nq as usize) as i32)
                .collect()
        };
        let filter: Option<HashSet<i64>> = (!req.tags.is_empty()).then(|| {
            req.tags
                .iter()
                .map(|t| i64::from(string_hash_code(t)))
                .collect()
        });
        let part = self.state.pops.get_or_create(&req.group, &req.topic);
        let mut p = part.lock();
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut next_visible: Option<i64> = None;
        // slaveReadEnable: the slave that has received the most, and the log's end.
        // A SQL92 filter reads each record's properties here, so it is never served remotely.
        let replica = (self.cfg.slave_read_enable && !self.is_slave() && req.sql.is_none())
            .then(|| self.replicas.furthest())
            .flatten();
        let log_end = self.log.published();
        for q in order {
            if out.len() >= req.batch {
                break;
            }
            let cq = self.queues.queue(&req.topic, q);
            let (min, max) = cq.as_ref().map(|c| (c.min(), c.max())).unwrap_or((0, 0));
            let (cursor_before, expired, had_inflight) = {
                let pq = p.queue(q);
                pq.clamp_to_min(min);
                for i in pq.inflight.values().filter(|i| i.visible_at > now) {
                    next_visible =
                        Some(next_visible.map_or(i.visible_at, |v: i64| v.min(i.visible_at)));
                }
                if orderly && pq.inflight.values().any(|i| i.visible_at > now) {
                    continue; // blocked until that delivery is acked or visible again
                }
                let expired: Vec<(i64, i32, u64)> = pq
                    .inflight
                    .iter()
                    .filter(|(_, i)| i.visible_at <= now)
                    .map(|(o, i)| (*o, i.attempt + 1, i.token))
                    .collect();
                (pq.cursor, expired, !pq.inflight.is_empty())
            };
            let mut picks: Vec<(i64, i32, CqEntry)> = Vec::new();
            // Deliveries that can never be made (their record is damaged or gone): dropped.
            let mut dropped: Vec<(i64, u64)> = Vec::new();
            for (o, attempt, token) in expired {
                if attempt > max_attempts {
                    // A slave cannot write the DLQ copy: the message waits for its master.
                    if self.is_slave() {
                        continue;
                    }
                    match cq.as_ref().and_then(|c| c.get(o)) {
                        Some(e) => {
                            let hold = self.state.tokens.next(now);
                            let kind = Kind::Invisible(InvisibleRecord {
                                group: req.group.clone(),
                                topic: req.topic.clone(),
                                queue_id: q,
                                offset: o,
                                token,
                                new_token: hold,
                                visible_at_ms: now + MOVE_HOLD_MS,
                            });
                            let _ = self.change_part(&mut p, kind)?;
                            dead.push(DeadLetter {
                                queue_id: q,
                                offset: o,
                                token: hold,
                                attempts: attempt - 1,
                                phys: e.phys,
                                size: e.size,
                            });
                        }
                        None => dropped.push((o, token)),
                    }
                    continue;
                }
                if picks.len() + out.len() >= req.batch {
                    break;
                }
                match cq.as_ref().and_then(|c| c.get(o)) {
                    Some(e) => picks.push((o, attempt, e)),
                    None => dropped.push((o, token)),
                }
            }
            let mut cursor = cursor_before;
            // Orderly: new messages only once every earlier delivery of the queue is resolved.
            let fresh = !(orderly && had_inflight);
            if let Some(c) = cq.as_ref().filter(|_| fresh) {
                while picks.len() + out.len() < req.batch && cursor < max {
                    let o = cursor;
                    cursor += 1;
                    let Some(e) = c.get(o) else {
                        continue; // a hole (a damaged record never dispatched)
                    };
                    if let Some(f) = &filter
                        && !f.contains(&e.tags_code)
                    {
                        continue;
                    }
                    picks.push((o, 1, e));
                }
            }
            let mut items = Vec::new();
            for (o, attempt, e) in picks {
                let on_replica = replica
                    .filter(|(_, received)| {
                        log_end - e.phys > self.far_behind_bytes
                            && e.phys + e.size as i64 <= *received
                    })
                    .map(|(id, _)| id);
                let record = if on_replica.is_some() {
                    // The proxy reads it from the slave and re-checks the tag string there.
                    Vec::new()
                } else {
                    match self.read_entry(&req.topic, q, o, &e) {
                        Ok(r) => r,
                        Err(Unreadable::Gone | Unreadable::Damaged) => {
                            if attempt > 1
                                && let Some(i) = p.queue(q).inflight.get(&o)
                            {
                                dropped.push((o, i.token));
                            }
                            continue;
                        }
                    }
                };
                if let Some(sql) = &req.sql
                    && attempt == 1
                {
                    // Skipped for the group like a tag mismatch: the cursor has moved past it.
                    let hit = RecordView::parse(&record)
                        .is_ok_and(|v| sql.matches(&|k: &str| v.property(k)));
                    if !hit {
                        skipped = true;
                        continue;
                    }
                }
                if !req.tags.is_empty() && attempt == 1 && on_replica.is_none() {
                    // The tags code matched; compare the strings to rule out a hash collision.
                    let tag = RecordView::parse(&record)
                        .ok()
                        .and_then(|v| v.property(keys::TAGS).map(str::to_string));
                    if !tag.is_some_and(|t| req.tags.contains(&t)) {
                        continue;
                    }
                }
                let token = self.state.tokens.next(now);
                items.push(InflightPb {
                    offset: o,
                    token,
                    attempt,
                    visible_at_ms: now + req.invisible_ms,
                });
                out.push(Delivery {
                    record,
                    queue_id: q,
                    queue_offset: o,
                    phys: e.phys,
                    attempt,
                    token,
                    pop_time_ms: now,
                    invisible_ms: req.invisible_ms,
                    size: e.size as i32,
                    on_replica,
                });
            }
            if !items.is_empty() || cursor != cursor_before {
                let kind = Kind::Pop(PopRecord {
                    group: req.group.clone(),
                    topic: req.topic.clone(),
                    queue_id: q,
                    cursor,
                    items,
                });
                // Not awaited: a pop lost with its node is a redelivery, never a lost message.
                let _ = self.change_part(&mut p, kind)?;
            }
            if !dropped.is_empty() {
                let kind = Kind::Acks(AckRecord {
                    group: req.group.clone(),
                    topic: req.topic.clone(),
                    items: dropped
                        .into_iter()
                        .map(|(offset, token)| AckItem {
                            queue_id: q,
                            offset,
                            token,
                        })
                        .collect(),
                });
                let _ = self.change_part(&mut p, kind)?;
            }
        }
        drop(p);
        drop(cat);
        Ok(Attempt {
            found: out,
            next_visible,
            dead,
            skipped,
        })
    }

    /// Raw records by position, for a proxy serving a master's deliveries from this copy. A
    /// position that does not hold a whole record here answers empty (the proxy then asks the
    /// master).
    pub fn read_records(&self, refs: &[(i64, i32)]) -> Vec<Vec<u8>> {
        let out: Vec<Vec<u8>> = refs
            .iter()
            .map(|&(phys, size)| {
                let Ok(size) = usize::try_from(size) else {
                    return Vec::new();
                };
                self.log
                    .read(phys, size)
                    .filter(|r| matches!(check(r, phys), Ok(Scan::Record(n)) if n == size))
                    .unwrap_or_default()
            })
            .collect();
        if self.is_slave() {
            let served = out.iter().filter(|r| !r.is_empty()).count() as u64;
            self.stats
                .slave_read_total
                .fetch_add(served, Ordering::Relaxed);
        }
        out
    }

    pub(super) fn check_delivery(
        p: &mut PopPart,
        queue: i32,
        offset: i64,
        token: u64,
        now: i64,
    ) -> Result<()> {
        match p.queue(queue).inflight.get(&offset) {
            Some(i) if i.token == token && i.visible_at > now => Ok(()),
            Some(i) if i.token == token => {
                Err(StoreError::InvalidHandle("receipt handle is expired"))
            }
            _ => Err(StoreError::InvalidHandle(
                "receipt handle is unknown or superseded",
            )),
        }
    }

    pub(super) fn require_topic(&self, topic: &str) -> Result<()> {
        if self.state.catalog.read().topics.contains_key(topic) {
            Ok(())
        } else {
            Err(StoreError::TopicNotFound(topic.to_string()))
        }
    }

    /// Acknowledges one delivery; durable under SYNC_FLUSH when this returns.
    pub async fn ack(
        &self,
        group: &str,
        topic: &str,
        queue: i32,
        offset: i64,
        token: u64,
    ) -> Result<()> {
        let v = self
            .ack_batch(group, topic, &[(queue, offset, token)])
            .await?;
        v.into_iter().next().unwrap_or(Ok(()))
    }

    /// Acknowledges several deliveries of one group and topic with one state record (and one
    /// durability wait); each gets its own verdict, as if acked alone.
    pub async fn ack_batch(
        &self,
        group: &str,
        topic: &str,
        items: &[(i32, i64, u64)],
    ) -> Result<Vec<Result<()>>> {
        self.require_topic(topic)?;
        let (durability, verdicts) = {
            let part = self.state.pops.get_or_create(group, topic);
            let mut p = part.lock();
            let now = self.clock.now();
            let mut accepted = Vec::with_capacity(items.len());
            let mut verdicts = Vec::with_capacity(items.len());
            for &(q, o, k) in items {
                let v = Self::check_delivery(&mut p, q, o, k, now);
                if v.is_ok() {
                    accepted.push(AckItem {
                        queue_id: q,
                        offset: o,
                        token: k,
                    });
                }
                verdicts.push(v);
            }
            let d = if accepted.is_empty() {
                None
            } else {
                let kind = Kind::Acks(AckRecord {
                    group: group.into(),
                    topic: topic.into(),
                    items: accepted,
                });
                Some(self.change_part(&mut p, kind)?)
            };
            (d, verdicts)
        };
        if let Some(d) = durability {
            self.await_change(d).await?;
            // An ack may unblock an orderly group's queue: wake its long polls.
            let orderly = self
                .state
                .catalog
                .read()
                .groups
                .get(group)
                .is_some_and(|g| g.consume_message_orderly);
            if orderly {
                self.notifier(topic).notify_waiters();
            }
        }
        Ok(verdicts)
    }

    /// Moves a delivery's next visibility to now + `invisible_ms`, issuing a new token.
    pub async fn change_invisible(
        &self,
        group: &str,
        topic: &str,
        queue: i32,
        offset: i64,
        token: u64,
        invisible_ms: i64,
    ) -> Result<NewVisibility> {
        self.require_topic(topic)?;
        let (d, nv) = {
            let part = self.state.pops.get_or_create(group, topic);
            let mut p = part.lock();
            let now = self.clock.now();
            Self::check_delivery(&mut p, queue, offset, token, now)?;
            let n = self.state.tokens.next(now);
            let kind = Kind::Invisible(InvisibleRecord {
                group: group.into(),
                topic: topic.into(),
                queue_id: queue,
                offset,
                token,
                new_token: n,
                visible_at_ms: now + invisible_ms,
            });
            let d = self.change_part(&mut p, kind)?;
            (
                d,
                NewVisibility {
                    token: n,
                    pop_time_ms: now,
                    invisible_ms,
                },
            )
        };
        self.await_change(d).await?;
        self.notifier(topic).notify_waiters();
        Ok(nv)
    }
}
