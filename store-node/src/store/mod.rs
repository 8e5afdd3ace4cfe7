//! The store: commit log + consume queues + state, behind one API used by the gRPC service and,
//! in standalone mode, directly by the proxy. Each concern has its own file:
//!
//! | file | what |
//! |---|---|
//! | `open.rs` | opening: layout check, recovery plan, replay from the newest snapshot |
//! | `append.rs` | message appends, state-record appends, dispatch to consume queues |
//! | `consume.rs` | pop, ack, change invisibility, raw reads for replicas |
//! | `admin.rs` | topics and groups |
//! | `views.rs` | read-only views for mqadmin (status, progress, runtime info) |
//! | `housekeeping.rs` | the background thread: seals, snapshots, disk watch, retention |
//! | `replica.rs` | the slave side of replication, and what the master answers a slave |
//! | `handover.rs` | a slave's durable log of the consumption changes it made alone |
//!
//! Lock order (never take an earlier one while holding a later one): `replica_apply` →
//! `state.catalog` → a POP part → `writer` → anything inside the log, queues or checkpoint.
//! No lock is held across an `.await`, and no file is written or synced on a tokio worker
//! except where noted (the rare inline segment roll of a state record).

mod admin;
mod append;
mod consume;
mod dead_letter;
mod handover;
mod housekeeping;
mod open;
mod queue_offsets;
mod replica;
mod views;

pub use housekeeping::CleanReport;
pub use open::RecoveryReport;
pub use replica::Start;

use crate::checkpoint::Checkpoint;
use crate::commitlog::seals::Seals;
use crate::commitlog::{CommitLog, Tail};
use crate::config::{BrokerRole, FlushDiskType, StoreConfig};
use crate::consumequeue::{PendingDispatch, QueueTable};
use crate::error::{Result, StoreError};
use crate::flush::FlushService;
use crate::layout::{Dirs, StoreLock};
use crate::metrics::StoreMetrics;
use crate::state::State;
use handover::HandoverLog;
use parking_lot::{Mutex, RwLock};
use queue_offsets::QueueOffsets;
use rmq_common::FastMap;
use rmq_common::time::{MonotonicMs, now_ms};
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

/// A message to append, exactly as the proxy hands it over (no conversion on the send path);
/// its properties are already in the record's encoding.
pub use rmq_proto::store::StoreMessage as NewMessage;

#[derive(Debug, Clone, Copy)]
pub struct AppendResult {
    pub queue_id: i32,
    pub queue_offset: i64,
    pub phys: i64,
    pub sent_type: crate::metrics::SentType,
}

#[derive(Debug, Clone)]
pub struct PopRequest {
    pub group: String,
    pub topic: String,
    pub queue_id: i32,
    pub tags: Vec<String>,
    pub batch: usize,
    pub invisible_ms: i64,
    pub poll_ms: i64,
    /// SQL92 filter: messages it does not match are skipped for the group, never delivered.
    pub sql: Option<std::sync::Arc<rmq_common::sql92::Expr>>,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub record: Vec<u8>,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub phys: i64,
    pub attempt: i32,
    pub token: u64,
    pub pop_time_ms: i64,
    pub invisible_ms: i64,
    pub size: i32,
    /// slaveReadEnable: `record` is empty and this slave (brokerId) holds the bytes.
    pub on_replica: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct NewVisibility {
    pub token: u64,
    pub pop_time_ms: i64,
    pub invisible_ms: i64,
}

/// The append side, under the writer lock.
struct Writer {
    tail: Tail,
    queue_next: QueueOffsets,
    /// Messages appended but not yet in their consume queue (under SYNC_FLUSH until flushed;
    /// otherwise only when a queue file could not be created).
    pending: VecDeque<PendingDispatch>,
    round_robin: FastMap<String, usize>,
    /// The newest records (offset, size), offered to a master to find the common prefix.
    recent: VecDeque<(i64, u32)>,
}

fn remember(recent: &mut VecDeque<(i64, u32)>, phys: i64, size: usize) {
    if recent.len() == crate::checkpoint::RECENT {
        recent.pop_front();
    }
    recent.push_back((phys, size as u32));
}

#[derive(Debug, Default, Clone)]
pub struct HaView {
    pub master_ha_addr: String,
    pub connected: bool,
    pub master_end: i64,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub put_total: AtomicU64,
    pub get_total: AtomicU64,
    /// Records this slave served for its master's deliveries (slaveReadEnable).
    pub slave_read_total: AtomicU64,
    /// Damaged records found (at start or by a read), each counted once.
    pub damaged_records: AtomicU64,
    /// Segments deleted by retention.
    pub deleted_segments: AtomicU64,
    /// Deliveries moved to a dead-letter topic.
    pub dead_letters: AtomicU64,
    pub boot_ms: AtomicU64,
    samples: Mutex<VecDeque<(i64, u64, u64)>>,
}

impl Stats {
    /// Records a (time, puts, gets) sample; called once a second.
    pub fn sample(&self) {
        let mut s = self.samples.lock();
        s.push_back((
            now_ms(),
            self.put_total.load(Ordering::Relaxed),
            self.get_total.load(Ordering::Relaxed),
        ));
        while s.len() > 11 {
            s.pop_front();
        }
    }

    /// Puts and gets per second over the last ~10 s.
    pub fn tps(&self) -> (f64, f64) {
        let s = self.samples.lock();
        match (s.front(), s.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let secs = (b.0 - a.0) as f64 / 1000.0;
                ((b.1 - a.1) as f64 / secs, (b.2 - a.2) as f64 / secs)
            }
            _ => (0.0, 0.0),
        }
    }
}

/// Disk usage and the disk-full state.
#[derive(Default)]
struct Disk {
    /// Why messages are refused (usage above diskSpaceWarningLevelRatio), if they are.
    full: RwLock<Option<String>>,
    /// Usage of the commit log's file system, in per mille (for metrics and status).
    usage_permille: AtomicU64,
}

pub struct Store {
    cfg: StoreConfig,
    dirs: Dirs,
    lock: StoreLock,
    log: Arc<CommitLog>,
    state: State,
    writer: Mutex<Writer>,
    queues: Arc<QueueTable>,
    checkpoint: Arc<Checkpoint>,
    seals: Mutex<Seals>,
    flusher: OnceLock<FlushService>,
    housekeeper: Mutex<Option<housekeeping::Handle>>,
    /// Held by a slave while it appends and applies a replicated chunk, and by a snapshot while
    /// it fixes its base, so a snapshot never sees a record appended but not yet applied.
    replica_apply: Mutex<()>,
    /// Serialises topic and group administration (file removal happens outside other locks).
    admin: tokio::sync::Mutex<()>,
    notifiers: Mutex<FastMap<String, Arc<Notify>>>,
    store_host: SocketAddrV4,
    clock: MonotonicMs,
    /// Woken when topics change, so namesrv registration happens at once.
    pub topics_changed: Notify,
    pub stats: Stats,
    metrics: StoreMetrics,
    recovery: RecoveryReport,
    /// Woken whenever the log grows (replication senders wait on it).
    pub appended: Notify,
    /// Slaves' progress, on a master.
    pub replicas: crate::replication::Tracker,
    /// On a slave: state changes made while serving reads, waiting to be handed to the master.
    handover: HandoverLog,
    /// On a slave: the master's HA address and what we know of it.
    ha: Mutex<HaView>,
    /// slaveReadEnable: a message further than this from the log's end is read from a slave.
    far_behind_bytes: i64,
    disk: Disk,
    pop_round_robin: AtomicUsize,
    /// Base of the newest durable snapshot (retention never deletes beyond it).
    snapshot_base: AtomicI64,
    /// Log position when the last snapshot was taken, and whether state changed since.
    snapshot_at: AtomicI64,
    /// A snapshot was asked of the housekeeper and not taken yet.
    snapshot_requested: std::sync::atomic::AtomicBool,
    state_dirty: AtomicBool,
    stopped: AtomicBool,
}

impl Store {
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn commit_log(&self) -> &CommitLog {
        &self.log
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn is_slave(&self) -> bool {
        self.cfg.broker_role == BrokerRole::Slave
    }

    fn sync_flush(&self) -> bool {
        self.cfg.flush_disk_type == FlushDiskType::SyncFlush
    }

    fn flusher(&self) -> &FlushService {
        self.flusher.get().expect("flusher is set at construction")
    }

    fn notifier(&self, topic: &str) -> Arc<Notify> {
        let mut n = self.notifiers.lock();
        match n.get(topic) {
            Some(x) => x.clone(),
            None => n.entry(topic.to_string()).or_default().clone(),
        }
    }

    /// Why messages are refused for want of disk space, if they are.
    pub fn disk_full(&self) -> Option<String> {
        if let Some(f) = self.log.alloc.failure() {
            return Some(f);
        }
        self.disk.full.read().clone()
    }

    /// Disk usage of the commit log's file system, 0.0–1.0.
    pub fn disk_usage(&self) -> f64 {
        self.disk.usage_permille.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Stops background work after a final flush, checkpoint and snapshot, and releases the
    /// store lock.
    pub fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(h) = self.housekeeper.lock().take() {
            h.stop();
        }
        let end = self.log.published();
        let _ = self.log.flush_to(end);
        if let Some(f) = self.flusher.get() {
            f.shutdown();
        }
        if let Err(e) = self.seal_segments() {
            tracing::error!(error = %e, "cannot update the seal manifest");
        }
        if let Err(e) = self.take_snapshot() {
            tracing::error!(error = %e, "final snapshot failed; the next start replays more");
        }
        let recent: Vec<(i64, u32)> = self.writer.lock().recent.iter().copied().collect();
        let flushed = self.log.flushed();
        if let Err(e) = self.checkpoint.update(true, |v| {
            v.flushed = flushed;
            v.recent = recent;
            v.clean = true;
        }) {
            tracing::error!(error = %e, "final checkpoint failed");
        }
        self.handover.shutdown();
        self.log.shutdown();
        self.lock.release();
    }

    /// Stops every background thread and releases the store lock without flushing,
    /// checkpointing or snapshotting: what a kill -9 leaves (minus losing the page cache).
    /// For tests of recovery in one process.
    pub fn abandon(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(h) = self.housekeeper.lock().take() {
            h.stop();
        }
        if let Some(f) = self.flusher.get() {
            f.abandon();
        }
        self.handover.shutdown();
        self.log.shutdown();
        self.lock.release();
    }

    /// Makes pending messages up to `durable` visible to consumers and wakes their long polls.
    fn dispatch_up_to(&self, durable: i64) {
        let mut w = self.writer.lock();
        self.dispatch_pending(&mut w, durable);
    }

    fn dispatch_pending(&self, w: &mut Writer, upto: i64) {
        if w.pending.is_empty() {
            return;
        }
        // Batches are mostly of one topic: waiters are woken when the topic changes, not
        // collected first (a topic woken twice is harmless).
        let mut touched: Option<String> = None;
        while let Some(p) = w.pending.front() {
            if p.entry.phys + p.entry.size as i64 > upto {
                break;
            }
            if let Err(e) = self.queues.dispatch(p) {
                // The message is in the log; it becomes visible once its queue file can be
                // created (the housekeeper retries).
                tracing::error!(topic = %p.topic, queue = p.queue_id, error = %e, "consume queue write failed");
                break;
            }
            let p = w.pending.pop_front().expect("front exists");
            if touched.as_ref() != Some(&p.topic)
                && let Some(t) = touched.replace(p.topic)
            {
                self.notifier(&t).notify_waiters();
            }
        }
        if let Some(t) = touched {
            self.notifier(&t).notify_waiters();
        }
    }

    /// Durable per this node's contract: flushed under SYNC_FLUSH, and held by every in-sync
    /// slave under SYNC_MASTER.
    async fn await_durable(&self, end: i64) -> Result<()> {
        self.await_local_durable(end).await?;
        if self.cfg.broker_role == BrokerRole::SyncMaster {
            let timeout = Duration::from_millis(self.cfg.slave_timeout_ms);
            self.replicas
                .wait(end, self.log.published(), timeout)
                .await?;
        }
        Ok(())
    }

    /// For state changes (acks, invisibility, topics, groups): flushed locally, and replicated
    /// when a slave is in sync; without one the change stands on the master alone, as Apache
    /// accepts an ack under SLAVE_NOT_AVAILABLE. Losing such a change with its master costs a
    /// redelivery, never a message, and refusing it would stall every consumer of the group.
    async fn await_state_durable(&self, end: i64) -> Result<()> {
        match self.await_durable(end).await {
            Err(StoreError::HaNotAvailable | StoreError::SlaveTimeout(_)) => {
                tracing::debug!(
                    end,
                    "state change kept on the master alone: no slave in sync"
                );
                Ok(())
            }
            r => r,
        }
    }

    /// Flushed locally under SYNC_FLUSH (no-op under ASYNC_FLUSH).
    pub async fn await_local_durable(&self, end: i64) -> Result<()> {
        if !self.sync_flush() {
            return Ok(());
        }
        let rx = self.flusher().wait_durable(end);
        match tokio::time::timeout(Duration::from_millis(self.cfg.sync_flush_timeout_ms), rx).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StoreError::ShuttingDown),
            Err(_) => Err(StoreError::FlushTimeout(self.cfg.sync_flush_timeout_ms)),
        }
    }
}

/// How a state change becomes durable.
enum Durability {
    /// In the log, ending here.
    Log(i64),
    /// In a slave's handover log.
    Handover(tokio::sync::oneshot::Receiver<std::io::Result<()>>),
}

impl Store {
    async fn await_change(&self, d: Durability) -> Result<()> {
        match d {
            Durability::Log(end) => self.await_state_durable(end).await,
            Durability::Handover(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StoreError::Io(e)),
                Err(_) => Err(StoreError::ShuttingDown),
            },
        }
    }
}

/// Physical memory, for `accessMessageInMemoryMaxRatio` (8 GiB where /proc cannot tell).
fn physical_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30)
}
