//! The housekeeper: one background thread doing the store's periodic file work, so none of it
//! runs on a tokio worker or under a lock a client waits for.
//!
//! * every `flushIntervalConsumeQueue` (1 s): seals complete, flushed segments in the manifest,
//!   prepares consume-queue files ahead, retries a stalled dispatch;
//! * every second: disk usage; above `diskSpaceWarningLevelRatio` messages are refused;
//! * a state snapshot when `stateSnapshotInterval` passed or `stateSnapshotBytes` were written
//!   (consume queues made durable first);
//! * retention every `cleanResourceInterval`, as Apache decides it: expired segments at the
//!   `deleteWhen` hour, expired ones at any hour above `diskMaxUsedSpaceRatio`, the oldest
//!   whatever their age above `diskSpaceCleanForciblyRatio`.

use super::Store;
use crate::durable;
use crate::error::{Result, StoreError};
use crate::state::snapshot;
use rmq_common::time::now_ms;
use rmq_proto::state::{DamagedRange, Snapshot};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(super) enum Job {
    DeleteExpired(tokio::sync::oneshot::Sender<Result<CleanReport>>),
    /// stateSnapshotBytes were written since the last snapshot: take one now rather than at the
    /// next tick, so a crash under heavy load replays at most about that much at start.
    Snapshot,
    Stop,
}

pub(super) struct Handle {
    tx: mpsc::Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    pub fn stop(mut self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn send(&self, job: Job) -> bool {
        self.tx.send(job).is_ok()
    }
}

/// What a retention run deleted.
#[derive(Debug, Default, Clone)]
pub struct CleanReport {
    pub deleted: Vec<String>,
    pub min_offset: i64,
}

pub(super) fn start(store: &Arc<Store>) -> Handle {
    // Known before the first send: a node restarted on a full disk refuses from its first
    // message, not after the first tick.
    store.check_disk();
    let (tx, rx) = mpsc::channel();
    let weak = Arc::downgrade(store);
    let thread = std::thread::Builder::new()
        .name("store-housekeeper".into())
        .spawn(move || run(weak, rx))
        .ok();
    Handle { tx, thread }
}

struct Timers {
    disk: Instant,
    clean: Instant,
    snapshot: Instant,
}

fn run(weak: Weak<Store>, rx: mpsc::Receiver<Job>) {
    let tick = match weak.upgrade() {
        Some(s) => Duration::from_millis(s.cfg.flush_interval_consume_queue_ms.clamp(10, 1000)),
        None => return,
    };
    let now = Instant::now();
    let mut t = Timers {
        disk: now - Duration::from_secs(10),
        clean: now,
        snapshot: now,
    };
    loop {
        let job = match rx.recv_timeout(tick) {
            Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
        };
        let Some(store) = weak.upgrade() else { return };
        match job {
            Some(Job::DeleteExpired(reply)) => {
                store.check_disk();
                let _ = reply.send(store.clean(true));
                continue;
            }
            Some(Job::Snapshot) => {
                store.snapshot_requested.store(false, Ordering::Release);
                t.snapshot = Instant::now();
                if let Err(e) = store.take_snapshot() {
                    tracing::error!(error = %e, "state snapshot failed");
                }
                continue;
            }
            _ => {}
        }
        store.tick(&mut t);
    }
}

fn local_hour() -> u32 {
    let now: libc::time_t = (now_ms() / 1000) as libc::time_t;
    // SAFETY: localtime_r fills the struct we pass; both pointers are valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if ok { tm.tm_hour as u32 } else { 0 }
}

impl Store {
    fn tick(&self, t: &mut Timers) {
        if t.disk.elapsed() >= Duration::from_secs(1) {
            t.disk = Instant::now();
            self.check_disk();
        }
        if let Err(e) = self.seal_segments() {
            tracing::error!(error = %e, "cannot update the seal manifest");
        }
        for (_, _, q) in self.queues.all() {
            if let Err(e) = q.prepare_next_file() {
                tracing::debug!(dir = %q.dir.display(), error = %e, "cannot prepare a consume-queue file");
            }
        }
        if !self.writer.lock().pending.is_empty() {
            let upto = if self.sync_flush() {
                self.log.flushed()
            } else {
                self.log.published()
            };
            self.dispatch_up_to(upto);
        }
        let at = self.snapshot_at.load(Ordering::Acquire);
        let published = self.log.published();
        let written = published - at.max(0);
        let due = at != published
            && (t.snapshot.elapsed() >= Duration::from_millis(self.cfg.state_snapshot_interval_ms)
                || written >= self.cfg.state_snapshot_bytes as i64
                || at < 0);
        if due {
            t.snapshot = Instant::now();
            if let Err(e) = self.take_snapshot() {
                tracing::error!(error = %e, "state snapshot failed");
            }
        }
        if t.clean.elapsed() >= Duration::from_millis(self.cfg.clean_resource_interval_ms) {
            t.clean = Instant::now();
            if let Err(e) = self.clean(false) {
                tracing::error!(error = %e, "retention run failed");
            }
        }
    }

    /// Disk usage of the commit log's and the store root's file systems; sets or clears the
    /// disk-full state.
    pub(super) fn check_disk(&self) {
        let cl = durable::disk_usage(&self.dirs.commitlog).unwrap_or(0.0);
        let cq = durable::disk_usage(&self.dirs.root).unwrap_or(cl);
        let usage = cl.max(cq);
        self.disk
            .usage_permille
            .store((usage * 1000.0).round() as u64, Ordering::Relaxed);
        let limit = self.cfg.disk_space_warning_level_ratio;
        let mut full = self.disk.full.write();
        if usage * 100.0 > limit {
            if full.is_none() {
                tracing::error!(
                    commitlog = cl,
                    store = cq,
                    "disk usage above diskSpaceWarningLevelRatio={limit}%: messages are refused"
                );
            }
            *full = Some(format!(
                "CL: {cl:.2} CQ: {cq:.2}, above diskSpaceWarningLevelRatio={limit}%"
            ));
        } else {
            if full.take().is_some() {
                tracing::info!(
                    usage,
                    "disk usage back below diskSpaceWarningLevelRatio: messages accepted again"
                );
            }
            if self.log.alloc.failure().is_some() {
                self.log.alloc.retry_now();
            }
        }
    }

    /// Seals segments that are complete and flushed; records damage ranges so later starts
    /// know them.
    pub(super) fn seal_segments(&self) -> std::io::Result<()> {
        let segs = self.log.segment_list();
        let flushed = self.log.flushed();
        let damaged = self.log.damaged_ranges();
        let mut seals = self.seals.lock();
        let mut changed = false;
        for (i, (base, end, path)) in segs.iter().enumerate() {
            let in_seg: Vec<DamagedRange> = damaged
                .iter()
                .filter(|(a, _)| a >= base && a < end)
                .map(|&(a, b)| DamagedRange {
                    offset: a,
                    length: b.min(*end) - a,
                    cause: "damaged (found by a read or accepted at start)".into(),
                })
                .collect();
            let last = i + 1 == segs.len();
            let sealed = seals.is_sealed_complete(*base);
            if !last && !sealed && flushed >= *end {
                let meta = std::fs::metadata(path)?;
                let mut known = seals.accepted_damage(*base).to_vec();
                for d in in_seg {
                    if !known.iter().any(|k| k.offset == d.offset) {
                        known.push(d);
                    }
                }
                seals.seal(*base, &meta, known);
                changed = true;
            } else if !in_seg.is_empty() {
                let entry = seals
                    .by_base
                    .entry(*base)
                    .or_insert(rmq_proto::state::Seal {
                        base: *base,
                        length: 0,
                        mtime_ns: 0,
                        damaged: Vec::new(),
                    });
                for d in in_seg {
                    if !entry.damaged.iter().any(|k| k.offset == d.offset) {
                        entry.damaged.push(d);
                        changed = true;
                    }
                }
            }
        }
        if changed {
            seals.save(&self.dirs.seals())?;
        }
        Ok(())
    }

    /// Writes a snapshot of everything derived from the log, as of the dispatched position.
    pub(super) fn take_snapshot(&self) -> std::io::Result<i64> {
        self.state_dirty.store(false, Ordering::Release);
        let published_before;
        let (base, queues, recent) = {
            let _apply = self.replica_apply.lock();
            let w = self.writer.lock();
            published_before = w.tail.pos;
            (
                w.pending
                    .front()
                    .map(|p| p.entry.phys)
                    .unwrap_or(w.tail.pos),
                self.queues.bounds_all(),
                w.recent.iter().copied().collect::<Vec<_>>(),
            )
        };
        let catalog = self.state.catalog.read().to_proto();
        let pops: Vec<_> = self
            .state
            .pops
            .all()
            .into_iter()
            .map(|((g, t), p)| p.lock().to_proto(&g, &t))
            .collect();
        let snap = Snapshot {
            base,
            max_token: self.state.tokens.max(),
            catalog: Some(catalog),
            pops,
            queues,
            taken_at_ms: now_ms(),
        };
        // The snapshot may reflect only durable records: a later cut can never go below it.
        let horizon = snapshot::horizon(&snap);
        // Under ASYNC_FLUSH the flusher reaches the horizon within its interval: waiting for it
        // (on this thread, never a writer's) costs nothing, where forcing a flush of a busy log
        // stalls the writers on pages under writeback.
        let wait = Duration::from_millis(self.cfg.flush_interval_commit_log_ms.saturating_mul(4));
        let deadline = Instant::now() + wait.min(Duration::from_secs(5));
        while self.log.flushed() < horizon.min(self.log.published())
            && Instant::now() < deadline
            && !self.stopped.load(Ordering::Acquire)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        {
            let _round = self.flusher().hold();
            self.log.flush_to(horizon.min(self.log.published()))?;
            let flushed = self.log.flushed();
            self.checkpoint.update(true, |v| {
                v.flushed = flushed;
                v.recent = recent;
            })?;
        }
        self.queues.sync_all()?;
        snapshot::write(&self.dirs.snapshots(), &snap)?;
        self.snapshot_base.store(base, Ordering::Release);
        self.snapshot_at.store(published_before, Ordering::Release);
        Ok(base)
    }

    /// One retention run. `manual` (mqadmin deleteExpiredCommitLog) ignores the hour.
    pub(super) fn clean(&self, manual: bool) -> Result<CleanReport> {
        let segs = self.log.segment_list();
        let mut report = CleanReport {
            deleted: Vec::new(),
            min_offset: self.log.min_offset(),
        };
        if segs.len() <= 1 {
            return Ok(report);
        }
        let usage = self.disk_usage() * 100.0;
        let hour_ok = self.cfg.delete_when.contains(&local_hour());
        let spacefull = usage > self.cfg.disk_max_used_space_ratio;
        let forcibly =
            self.cfg.clean_file_forcibly_enable && usage > self.cfg.disk_space_clean_forcibly_ratio;
        let reserved_ms = (self.cfg.file_reserved_time_hours * 3_600_000.0) as i64;
        let now = now_ms();
        let tail_seg = segs.last().map(|s| s.0).unwrap_or(0);
        let mut new_min = None;
        let mut reasons = Vec::new();
        for (base, end, path) in &segs {
            if *base >= tail_seg || reasons.len() >= self.cfg.delete_file_batch_max {
                break;
            }
            let mtime_ms = std::fs::metadata(path)
                .map(|m| durable::mtime_ns(&m) / 1_000_000)
                .unwrap_or(now);
            let written_ms = self
                .log
                .segment_at(*base)
                .and_then(|s| s.last_write_ms())
                .map_or(mtime_ms, |t| t.max(mtime_ms));
            let expired = now - written_ms >= reserved_ms;
            let reason = if expired && manual {
                "expired, deleted on request"
            } else if expired && hour_ok {
                "expired (fileReservedTime), deleteWhen hour"
            } else if expired && spacefull {
                "expired, disk above diskMaxUsedSpaceRatio"
            } else if forcibly {
                "disk above diskSpaceCleanForciblyRatio: oldest deleted whatever its age"
            } else {
                break;
            };
            if *end > self.snapshot_base.load(Ordering::Acquire) {
                // Its state records must live on in a snapshot first.
                self.take_snapshot()?;
                if *end > self.snapshot_base.load(Ordering::Acquire) {
                    break;
                }
            }
            new_min = Some(*end);
            reasons.push((*base, reason));
        }
        let Some(new_min) = new_min else {
            return Ok(report);
        };
        report.deleted = self.retire(new_min, &reasons)?;
        report.min_offset = self.log.min_offset();
        Ok(report)
    }

    /// Deletes every segment below `new_min` (a segment boundary), with a log line and a metric
    /// for each, then moves consume queues' minimums past what went.
    fn retire(&self, new_min: i64, reasons: &[(i64, &str)]) -> Result<Vec<String>> {
        // Durable first: a crash after this finishes the deletion at start.
        self.checkpoint
            .update(true, |v| v.log_min = v.log_min.max(new_min))?;
        let gone = self.log.retire_below(new_min);
        let mut names = Vec::new();
        for seg in gone {
            let path = seg.path.clone();
            let (base, size) = (seg.base, seg.size);
            drop(seg);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io(e)),
            }
            let why = reasons
                .iter()
                .find(|(b, _)| *b == base)
                .map(|(_, r)| *r)
                .unwrap_or("retention");
            tracing::info!(file = %path.display(), base, bytes = size, reason = why, "commitlog segment deleted");
            self.stats.deleted_segments.fetch_add(1, Ordering::Relaxed);
            names.push(path.display().to_string());
        }
        durable::sync_dir(&self.dirs.commitlog)?;
        {
            let mut seals = self.seals.lock();
            seals.forget_below(new_min);
            seals.save(&self.dirs.seals())?;
        }
        for (topic, id, q) in self.queues.all() {
            for f in q.retire_below(new_min) {
                let p = f.path.clone();
                drop(f);
                if let Err(e) = std::fs::remove_file(&p) {
                    tracing::warn!(topic = %topic, queue = id, error = %e, "cannot delete a retired consume-queue file");
                }
            }
        }
        // Cursors below the new minimum move up (consumers continue from the minimum).
        for ((_, t), part) in self.state.pops.all() {
            let mut p = part.lock();
            for (qid, pq) in p.queues.iter_mut() {
                pq.clamp_to_min(self.queues.bounds(&t, *qid).0);
            }
        }
        Ok(names)
    }

    /// Asks the housekeeper for a snapshot once stateSnapshotBytes were written since the last
    /// one (cheap when not: two atomic loads).
    pub(super) fn snapshot_if_written_enough(&self) {
        let at = self.snapshot_at.load(Ordering::Acquire);
        if at < 0
            || self.log.published() - at < self.cfg.state_snapshot_bytes as i64
            || self.snapshot_requested.swap(true, Ordering::AcqRel)
        {
            return;
        }
        if let Some(h) = self.housekeeper.lock().as_ref() {
            h.send(Job::Snapshot);
        }
    }

    /// mqadmin deleteExpiredCommitLog: a retention run now, ignoring the deleteWhen hour.
    pub async fn delete_expired_commit_log(&self) -> Result<CleanReport> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .housekeeper
            .lock()
            .as_ref()
            .is_some_and(|h| h.send(Job::DeleteExpired(tx)));
        if !sent {
            return Err(StoreError::ShuttingDown);
        }
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }
}
