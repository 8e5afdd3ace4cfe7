//! Replication, store side: what a slave offers and applies, and what a master answers.
//!
//! A slave appends the master's bytes unchanged and derives everything from them exactly as the
//! master did (same apply functions). When its log cannot continue the master's — empty while
//! the master already deleted old segments, or ending before the master's first retained
//! offset — it starts over from the master's snapshot.

use super::open::{Interpreted, interpret, restore_state};
use super::{Durability, HaView, QueueOffsets, Store, remember};
use crate::consumequeue::PendingDispatch;
use crate::error::{Result, StoreError};
use crate::state::catalog::Catalog;
use crate::state::pop::part_of;
use crate::state::{Kind, record, snapshot};
use prost::Message;
use rmq_common::record::{RecordView, Scan, check};
use rmq_common::time::now_ms;
use rmq_proto::state::Snapshot;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

fn crc_of(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Where a connecting slave continues.
pub enum Start {
    /// Cut back to (or continue at) this offset.
    From(i64),
    /// Start over at `base` with this encoded snapshot.
    Reset { base: i64, snapshot: Vec<u8> },
}

impl Store {
    pub fn ha_view(&self) -> HaView {
        self.ha.lock().clone()
    }

    /// The master's HA address: `haMasterAddress` if configured, else what namesrv told us.
    pub fn master_ha_addr(&self) -> String {
        self.ha.lock().master_ha_addr.clone()
    }

    /// Learns the master's HA address from a name server (unless `haMasterAddress` pins it).
    pub fn learn_master_ha_addr(&self, addr: &str) {
        if self.cfg.ha_master_address.is_empty() && !addr.is_empty() {
            self.ha.lock().master_ha_addr = addr.to_string();
        }
    }

    pub fn set_master_state(&self, addr: &str, connected: bool) {
        let mut h = self.ha.lock();
        if h.master_ha_addr == addr {
            h.connected = connected;
        }
    }

    pub fn set_master_end(&self, end: i64) {
        self.ha.lock().master_end = end;
    }

    /// Remembers that this master has had slaves, so after a restart it gives them a moment to
    /// hand over what they did meanwhile before it serves consumers again.
    pub async fn remember_slave(&self) {
        let marker = self.dirs.root.join("ha-slaves");
        if marker.exists() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || std::fs::write(marker, b"1\n")).await;
    }

    pub fn had_slaves(&self) -> bool {
        self.dirs.root.join("ha-slaves").exists()
    }

    /// The slave's opening message, and how many handover records it carries.
    pub fn slave_hello(&self) -> (rmq_proto::replication::SlaveHello, usize) {
        let (end, recent) = {
            let w = self.writer.lock();
            (
                w.tail.pos,
                w.recent.iter().rev().copied().collect::<Vec<_>>(),
            )
        };
        let tail = recent
            .into_iter()
            .filter_map(|(offset, size)| {
                let bytes = self.log.read(offset, size as usize)?;
                Some(rmq_proto::replication::RecordMark {
                    offset,
                    size: size as i32,
                    crc: crc_of(&bytes),
                })
            })
            .collect();
        let handover = self.handover.for_hello();
        let n = handover.len();
        let hello = rmq_proto::replication::SlaveHello {
            cluster_name: self.cfg.broker_cluster_name.clone(),
            broker_name: self.cfg.broker_name.clone(),
            broker_id: self.cfg.broker_id,
            log_end: end,
            tail,
            handover,
            segment_size: self.cfg.mapped_file_size_commit_log as i64,
        };
        (hello, n)
    }

    /// The master accepted the first `n` handover records: forget them.
    pub fn confirm_handover(&self, n: usize) {
        self.handover.confirm(n);
    }

    /// Handover records made while connected, not yet streamed. They stay in the file until a
    /// later hello is accepted; applying one twice on the master is harmless.
    pub fn take_new_handover(&self) -> Vec<Vec<u8>> {
        self.handover.take_new()
    }

    /// On a master: applies a state change a slave made while serving reads.
    pub async fn apply_handover(&self, raw: &[u8]) -> Result<()> {
        let kind = record::decode(raw).map_err(|e| StoreError::BadRequest(e.to_string()))?;
        if !record::is_consumption(&kind) {
            return Err(StoreError::BadRequest(
                "only consumption state can be handed over".into(),
            ));
        }
        let d = if let Kind::Group(g) = &kind {
            let mut cat = self.state.catalog.write();
            if cat.groups.contains_key(&g.name) {
                return Ok(());
            }
            self.change_catalog(&mut cat, kind.clone())?
        } else {
            let Some((g, t)) = part_of(&kind) else {
                return Ok(());
            };
            if !self.state.catalog.read().topics.contains_key(t) {
                return Ok(());
            }
            let part = self.state.pops.get_or_create(g, t);
            let mut p = part.lock();
            if let Kind::Pop(r) = &kind
                && let Some(max) = r.items.iter().map(|i| i.token).max()
            {
                self.state.tokens.observe(max);
            }
            self.change_part(&mut p, kind.clone())?
        };
        match d {
            Durability::Log(end) => self.await_local_durable(end).await,
            Durability::Handover(_) => Ok(()),
        }
    }

    /// On a master: where a slave offering `hello` continues.
    pub fn replication_start(&self, hello: &rmq_proto::replication::SlaveHello) -> Result<Start> {
        let min = self.log.min_offset();
        let behind = (hello.log_end == 0 && min > 0) || (hello.log_end > 0 && hello.log_end < min);
        if !behind {
            return Ok(Start::From(self.common_prefix(hello)));
        }
        let (newest, problems) = snapshot::newest(&self.dirs.snapshots());
        match newest {
            Some((_, s)) if s.base >= min => Ok(Start::Reset {
                base: min,
                snapshot: s.encode_to_vec(),
            }),
            _ => Err(StoreError::Refused(format!(
                "the slave's log ends at {} but this master's starts at {min}, and no snapshot at or \
                 after it is readable ({})",
                hello.log_end,
                problems.join("; ")
            ))),
        }
    }

    /// On a master: the end of the newest record both logs hold byte for byte; else the oldest
    /// offered offset (the slave cuts back to it and offers older records next time).
    pub fn common_prefix(&self, hello: &rmq_proto::replication::SlaveHello) -> i64 {
        let end = self.log.published();
        if hello.log_end == 0 || hello.tail.is_empty() {
            return self
                .log
                .min_offset()
                .min(end)
                .max(0)
                .min(hello.log_end.max(self.log.min_offset()));
        }
        for m in &hello.tail {
            let stop = m.offset + i64::from(m.size);
            if stop > end || m.size <= 0 {
                continue;
            }
            if let Some(bytes) = self.log.read(m.offset, m.size as usize)
                && crc_of(&bytes) == m.crc
            {
                return stop.min(hello.log_end);
            }
        }
        hello
            .tail
            .iter()
            .map(|m| m.offset)
            .min()
            .unwrap_or(0)
            .min(end)
    }

    /// On a master: the newest snapshot's bytes, for a slave starting over.
    pub fn newest_snapshot(&self) -> Option<Snapshot> {
        snapshot::newest(&self.dirs.snapshots()).0.map(|(_, s)| s)
    }

    /// On a slave: appends records exactly as the master stored them and derives from them.
    /// `raw`: a damaged range, copied as it is.
    pub fn append_replica(&self, offset: i64, bytes: &[u8], raw: bool) -> Result<i64> {
        enum Item {
            Message(PendingDispatch),
            State(i64, i64, i64, Kind),
        }
        let _apply = self.replica_apply.lock();
        let mut items = Vec::new();
        let end = {
            let mut w = self.writer.lock();
            if offset != w.tail.pos {
                return Err(StoreError::BadRequest(format!(
                    "replica expected offset {}, master sent {offset}",
                    w.tail.pos
                )));
            }
            if raw {
                self.log.append_raw(&mut w.tail, bytes)?;
                if self.log.mark_damaged(offset, offset + bytes.len() as i64) {
                    self.stats.damaged_records.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        offset,
                        bytes = bytes.len(),
                        "copied a damaged range from the master as it is"
                    );
                }
            } else {
                let mut i = 0usize;
                while i < bytes.len() {
                    let pos = offset + i as i64;
                    match check(&bytes[i..], pos) {
                        Ok(Scan::Record(n)) => {
                            let rec = &bytes[i..i + n];
                            self.log.append_raw(&mut w.tail, rec)?;
                            remember(&mut w.recent, pos, n);
                            let view = RecordView::parse(rec)?;
                            match interpret(&view) {
                                Interpreted::Message(p) => items.push(Item::Message(p)),
                                Interpreted::State(k) => items.push(Item::State(
                                    pos,
                                    pos + n as i64,
                                    view.store_timestamp,
                                    k,
                                )),
                                Interpreted::Skip => {}
                            }
                            i += n;
                        }
                        Ok(Scan::EndOfFile) => {
                            self.log.append_blank_raw(
                                &mut w.tail,
                                &bytes[i..(i + 8).min(bytes.len())],
                            )?;
                            i = bytes.len();
                        }
                        Ok(Scan::End) | Err(_) => {
                            return Err(StoreError::BadRequest(format!(
                                "corrupt replication data at offset {pos}"
                            )));
                        }
                    }
                }
            }
            self.log.publish(&w.tail);
            w.tail.pos
        };
        // Derive in log order: messages into their queues, state into its parts.
        let mut topics_changed = false;
        let mut batch: Vec<PendingDispatch> = Vec::new();
        let flush_batch = |batch: &mut Vec<PendingDispatch>| {
            if batch.is_empty() {
                return;
            }
            let mut w = self.writer.lock();
            for p in batch.drain(..) {
                w.queue_next.set(&p.topic, p.queue_id, p.queue_offset + 1);
                w.pending.push_back(p);
            }
            if !self.sync_flush() {
                self.dispatch_pending(&mut w, end);
            }
        };
        for item in items {
            match item {
                Item::Message(p) => batch.push(p),
                Item::State(s, e, ts, kind) => {
                    flush_batch(&mut batch);
                    let a = self.state.replay(&kind, s, e, ts);
                    topics_changed |= a.topics_changed;
                    if let Some(t) = a.topic_deleted {
                        {
                            let mut w = self.writer.lock();
                            w.queue_next.remove_topic(&t);
                            w.pending.retain(|p| p.topic != t);
                        }
                        if let Err(e) = self.queues.remove_topic(&t) {
                            tracing::error!(topic = %t, error = %e, "cannot remove a deleted topic's queues");
                        }
                    }
                }
            }
        }
        flush_batch(&mut batch);
        if self.sync_flush() {
            self.flusher().wake();
        }
        self.state_dirty.store(true, Ordering::Release);
        drop(_apply);
        self.appended.notify_waiters();
        self.snapshot_if_written_enough();
        if topics_changed {
            // The name servers must learn the topic from the slave too, or the group vanishes
            // from routes when its master does.
            self.topics_changed.notify_waiters();
        }
        Ok(end)
    }

    /// On a slave whose tail diverged: cuts the log back durably and rebuilds what depends on
    /// the cut records. Blocking.
    pub fn truncate_to(&self, to: i64) -> Result<()> {
        let _apply = self.replica_apply.lock();
        let _round = self.flusher().hold();
        // The checkpoint first: after a crash no zeroed byte may lie before `flushed`.
        self.checkpoint
            .update(true, |v| v.flushed = v.flushed.min(to))?;
        {
            let mut w = self.writer.lock();
            self.log.truncate(&mut w.tail, to)?;
            w.pending
                .retain(|p| p.entry.phys + p.entry.size as i64 <= to);
            w.recent.retain(|(o, s)| o + *s as i64 <= to);
        }
        for (_, _, q) in self.queues.all() {
            let mut max = q.max();
            while max > q.min() {
                match q.get(max - 1) {
                    Some(e) if e.phys + e.size as i64 > to => max -= 1,
                    _ => break,
                }
            }
            q.truncate(max);
        }
        {
            let mut w = self.writer.lock();
            let mut next = QueueOffsets::default();
            for (t, id, q) in self.queues.all() {
                next.set(&t, id, q.max());
            }
            for p in &w.pending {
                next.raise(&p.topic, p.queue_id, p.queue_offset + 1);
            }
            w.queue_next = next;
        }
        {
            let mut seals = self.seals.lock();
            seals
                .by_base
                .retain(|b, s| s.length > 0 && b + s.length <= to);
            seals.save(&self.dirs.seals())?;
        }
        self.rebuild_state_to(to)
    }

    /// State as of `to`: from the newest snapshot not beyond it, plus the log's state records up
    /// to `to`.
    fn rebuild_state_to(&self, to: i64) -> Result<()> {
        let dir = self.dirs.snapshots();
        for (_, p) in snapshot::list(&dir) {
            if snapshot::read(&p).is_ok_and(|s| snapshot::horizon(&s) > to) {
                let _ = std::fs::remove_file(&p);
            }
        }
        let from = match snapshot::newest_within(&dir, to) {
            Some(s) => {
                restore_state(&self.state, &s);
                self.snapshot_base.store(s.base, Ordering::Release);
                s.base
            }
            None if self.log.min_offset() == 0 => {
                *self.state.catalog.write() = Catalog::default();
                self.state.pops.replace_all(HashMap::new());
                self.snapshot_base.store(0, Ordering::Release);
                0
            }
            None => {
                return Err(StoreError::Refused(format!(
                    "cannot rebuild state at {to}: no snapshot at or before it, and the log no \
                     longer starts at 0; restart this slave with an empty store"
                )));
            }
        };
        self.log.scan_range(from, to, |pos, view, bytes| {
            if let Interpreted::State(kind) = interpret(view) {
                self.state
                    .replay(&kind, pos, pos + bytes.len() as i64, view.store_timestamp);
            }
        });
        for raw in self.handover.records() {
            if let Ok(kind) = record::decode(&raw) {
                self.state.apply_local(&kind, now_ms());
            }
        }
        self.snapshot_at.store(-1, Ordering::Release);
        Ok(())
    }

    /// On a slave whose log cannot continue its master's: discards its log and queues and starts
    /// over at `base` from the master's snapshot. Blocking.
    pub fn reset_from_master(&self, base: i64, encoded: &[u8]) -> Result<()> {
        let snap = Snapshot::decode(encoded)
            .map_err(|e| StoreError::BadRequest(format!("master snapshot: {e}")))?;
        let _apply = self.replica_apply.lock();
        let _round = self.flusher().hold();
        // The snapshot first (as this node's own, its queues to be rebuilt from the stream),
        // then the checkpoint, then the files: each crash point restarts consistently.
        let mut local = snap.clone();
        local.base = base;
        local.queues.clear();
        let dir = self.dirs.snapshots();
        for (_, p) in snapshot::list(&dir) {
            let _ = std::fs::remove_file(p);
        }
        snapshot::write(&dir, &local)?;
        self.checkpoint.update(true, |v| {
            v.flushed = base;
            v.log_min = base;
            v.recent.clear();
        })?;
        restore_state(&self.state, &snap);
        {
            let mut w = self.writer.lock();
            for p in self.log.reset_to(&mut w.tail, base)? {
                tracing::warn!(file = %p.display(), "slave log discarded: the master no longer holds it");
            }
            w.queue_next.clear();
            w.pending.clear();
            w.recent.clear();
        }
        self.queues.clear()?;
        {
            let mut seals = self.seals.lock();
            seals.by_base.clear();
            seals.save(&self.dirs.seals())?;
        }
        for raw in self.handover.records() {
            if let Ok(kind) = record::decode(&raw) {
                self.state.apply_local(&kind, now_ms());
            }
        }
        self.snapshot_base.store(base, Ordering::Release);
        self.snapshot_at.store(-1, Ordering::Release);
        // Its topics came with the snapshot: the name server must learn them now, so reads can
        // fall back on this slave while its master is away.
        self.topics_changed.notify_waiters();
        tracing::info!(base, "slave starts over from its master's snapshot");
        Ok(())
    }

    /// Replication lag of each connected slave, in bytes.
    pub fn slave_lag(&self) -> Vec<(i64, i64)> {
        let end = self.log.published();
        self.replicas
            .snapshot()
            .into_iter()
            .map(|p| (p.broker_id, end - p.acked))
            .collect()
    }
}
