//! Opening a store: what the directory is, whether it may be served, and the state rebuilt from
//! the newest snapshot plus the log after it.

use super::{Disk, QueueOffsets, Stats, Store, Writer, housekeeping, remember};
use crate::checkpoint::{self, Checkpoint, CheckpointValues, Loaded};
use crate::commitlog::recovery::{self, Inputs};
use crate::commitlog::seals::Seals;
use crate::commitlog::{CommitLog, Tail};
use crate::config::{FlushDiskType, StoreConfig};
use crate::consumequeue::{CqEntry, PendingDispatch, QueueTable};
use crate::error::{Result, StoreError};
use crate::flush::FlushService;
use crate::layout::{self, Layout, StoreLock};
use crate::metrics::StoreMetrics;
use crate::state::catalog::Catalog;
use crate::state::pop::PopPart;
use crate::state::{Kind, STATE_TOPIC, State, record, snapshot};
use parking_lot::Mutex;
use rmq_common::FastMap;
use rmq_common::java::string_hash_code;
use rmq_common::keys;
use rmq_common::record::RecordView;
use rmq_common::time::{MonotonicMs, now_ms};
use rmq_proto::state::Snapshot;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What opening the store found and did.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Records read after the snapshot.
    pub records: u64,
    pub replay_from: i64,
    pub valid_end: i64,
    /// Set when a torn tail after the durable checkpoint was cut.
    pub truncated: Option<String>,
    /// Damage accepted with startWithDamagedCommitLog (or earlier).
    pub damaged: Vec<String>,
    pub notes: Vec<String>,
    pub clean_shutdown: bool,
    pub snapshot_base: Option<i64>,
    pub elapsed_ms: u64,
}

/// What one record means for the derived state.
pub(super) enum Interpreted {
    Message(PendingDispatch),
    State(Kind),
    Skip,
}

pub(super) fn tags_code(view: &RecordView<'_>) -> i64 {
    i64::from(view.property(keys::TAGS).map(string_hash_code).unwrap_or(0))
}

pub(super) fn interpret(view: &RecordView<'_>) -> Interpreted {
    let topic = view.topic();
    if topic == STATE_TOPIC {
        return match record::decode(view.body) {
            Ok(kind) => Interpreted::State(kind),
            Err(e) => {
                tracing::warn!(offset = view.physical_offset, error = %e, "unreadable state record skipped");
                Interpreted::Skip
            }
        };
    }
    Interpreted::Message(PendingDispatch {
        topic: topic.to_string(),
        queue_id: view.queue_id,
        queue_offset: view.queue_offset,
        entry: CqEntry {
            phys: view.physical_offset,
            size: view.total_size as u32,
            tags_code: tags_code(view),
        },
    })
}

fn refused(what: String) -> StoreError {
    StoreError::Refused(what)
}

/// Checks the directory is ours (or empty) without writing to it.
fn check_layout(cfg: &StoreConfig) -> Result<()> {
    let dirs = cfg.dirs();
    let where_ = format!(
        "storePathRootDir={} storePathCommitLog={}",
        dirs.root.display(),
        dirs.commitlog.display()
    );
    match layout::inspect(&dirs)? {
        Layout::Fresh => {
            layout::initialise(&dirs)?;
            Ok(())
        }
        Layout::Ours => Ok(()),
        Layout::Apache(evidence) => Err(refused(format!(
            "{where_} holds a store written by Apache RocketMQ ({}). This node does not read an \
             Apache store in place yet; it refuses to touch it (nothing was changed). Point \
             storePathRootDir at an empty directory to start a new store.",
            evidence.join("; ")
        ))),
        Layout::OtherFormat(why) => Err(refused(format!(
            "{where_}: {why}. Nothing was changed; point storePathRootDir at an empty directory."
        ))),
        Layout::Foreign(evidence) => Err(refused(format!(
            "{where_} holds files this node did not write ({}). Nothing was changed.",
            evidence.join("; ")
        ))),
    }
}

impl Store {
    /// Opens the store under `cfg.store_path_root_dir`: refuses a directory that is not ours or
    /// whose log is damaged before its durable checkpoint, cuts a torn tail, restores the newest
    /// snapshot and replays the log after it.
    pub fn open(cfg: StoreConfig) -> Result<Arc<Self>> {
        let started = Instant::now();
        check_layout(&cfg)?;
        let dirs = cfg.dirs();
        let lock = StoreLock::acquire(&dirs).map_err(|e| refused(e.to_string()))?;
        let cp_loaded = checkpoint::load(&dirs.checkpoint())?;
        let seals = Seals::load(&dirs.seals());
        let (snap, snap_problems) = snapshot::newest(&dirs.snapshots());
        let snap = snap.map(|(_, s)| s);
        let state_from = snap.as_ref().map(|s| s.base).unwrap_or(0);
        let skip = cfg.start_with_damaged_commit_log;
        let plan = match recovery::plan(&Inputs {
            dir: &dirs.commitlog,
            checkpoint: &cp_loaded,
            seals: &seals,
            replay_from: state_from,
            skip_damaged: skip,
        })? {
            Ok(p) => p,
            Err(refusal) => return Err(refused(refusal.to_string())),
        };
        let log_start = plan
            .segments
            .first()
            .map(|s| s.base)
            .unwrap_or(plan.log_min);
        if snap.is_none() && log_start > 0 {
            let why = format!(
                "no readable state snapshot in {} ({}), and the commit log starts at {log_start}: \
                 the topics, groups and consumer progress recorded in the deleted segments cannot \
                 be rebuilt",
                dirs.snapshots().display(),
                if snap_problems.is_empty() {
                    "none found".to_string()
                } else {
                    snap_problems.join("; ")
                }
            );
            if !skip {
                return Err(refused(format!(
                    "{why}. Refusing to start (nothing was changed); startWithDamagedCommitLog=true \
                     starts with the state the remaining log holds."
                )));
            }
            tracing::error!("{why}; starting anyway (startWithDamagedCommitLog=true)");
        }
        for p in &snap_problems {
            tracing::warn!("state snapshot skipped: {p}");
        }
        // From here on the store may be changed.
        plan.execute(&dirs.quarantine(), &dirs.commitlog)?;
        let seg_size = cfg.mapped_file_size_commit_log as usize;
        let (log, tail) = CommitLog::open(&dirs.commitlog, seg_size, &plan)?;
        let units = (cfg.mapped_file_size_consume_queue / 20).max(1) as i64;
        let queues = QueueTable::open(&dirs.consumequeue(), units)?;
        let state = State::default();
        let valid_end = plan.valid_end;
        let mut cq_from = plan.replay_from;
        match &snap {
            Some(s) => {
                restore_state(&state, s);
                if !queues.restore_bounds(&s.queues) {
                    tracing::warn!(
                        "consume-queue files do not cover the snapshot's bounds: rebuilding every \
                         consume queue from the commit log"
                    );
                    queues.reset_bounds();
                    cq_from = log.min_offset();
                }
            }
            None => {
                queues.reset_bounds();
                cq_from = log.min_offset();
            }
        }
        let state_from = state_from.max(log.min_offset());
        let scan_from = cq_from.min(state_from).max(log.min_offset());
        let mut recent: VecDeque<(i64, u32)> = VecDeque::new();
        if let Loaded::Valid(v) = &cp_loaded {
            for &(off, size) in &v.recent {
                if off + size as i64 <= valid_end
                    && off < scan_from
                    && let Some(b) = log.read(off, size as usize)
                    && matches!(rmq_common::record::check(&b, off), Ok(rmq_common::record::Scan::Record(n)) if n == size as usize)
                {
                    recent.push_back((off, size));
                }
            }
        }
        let mut records = 0u64;
        let mut stalled: Vec<PendingDispatch> = Vec::new();
        // Records below the checkpoint's flushed mark are durable, and replay reads no message
        // body: those are checked for layout only (their bodies are verified when read). State
        // records, which replay interprets, and the tail beyond the mark are verified in full.
        let durable_below = match &cp_loaded {
            Loaded::Valid(v) => v.flushed,
            _ => 0,
        };
        let verify =
            |pos: i64, view: &RecordView<'_>| pos >= durable_below || view.topic() == STATE_TOPIC;
        log.scan_range_with(scan_from, valid_end, verify, |pos, view, bytes| {
            records += 1;
            remember(&mut recent, pos, bytes.len());
            match interpret(view) {
                Interpreted::Message(p) if pos >= cq_from => {
                    if let Err(e) = queues.dispatch(&p) {
                        tracing::error!(error = %e, "consume queue write failed during replay");
                        stalled.push(p);
                    }
                }
                Interpreted::State(kind) if pos >= state_from => {
                    let applied =
                        state.replay(&kind, pos, pos + bytes.len() as i64, view.store_timestamp);
                    if let Some(t) = applied.topic_deleted
                        && let Err(e) = queues.remove_topic(&t)
                    {
                        tracing::error!(topic = %t, error = %e, "cannot remove a deleted topic's queues");
                    }
                }
                _ => {}
            }
        });
        // Queue entries whose records a cut tail took away.
        for (_, _, q) in queues.all() {
            let mut max = q.max();
            while max > q.min() {
                match q.get(max - 1) {
                    Some(e) if e.phys + e.size as i64 > valid_end => max -= 1,
                    _ => break,
                }
            }
            q.truncate(max);
        }
        let mut queue_next = QueueOffsets::default();
        for (t, id, q) in queues.all() {
            queue_next.set(&t, id, q.max());
        }
        for p in &stalled {
            queue_next.raise(&p.topic, p.queue_id, p.queue_offset + 1);
        }
        // A cursor can never be beyond its queue (a cut tail may have shortened it).
        for ((_, t), part) in state.pops.all() {
            let mut p = part.lock();
            for (qid, pq) in p.queues.iter_mut() {
                let (min, max) = queues.bounds(&t, *qid);
                if pq.cursor > max {
                    pq.cursor = max;
                }
                pq.clamp_to_min(min);
            }
        }
        let handover = super::handover::HandoverLog::open(dirs.handover())?;
        for raw in handover.records() {
            if let Ok(kind) = record::decode(&raw) {
                state.apply_local(&kind, now_ms());
            }
        }
        // Make what recovery kept durable before claiming it in the checkpoint.
        log.flush_to(valid_end)?;
        let (mut values, clean) = match &cp_loaded {
            Loaded::Valid(v) => (v.clone(), v.clean),
            _ => (CheckpointValues::default(), false),
        };
        values.flushed = valid_end;
        values.log_min = log.min_offset();
        values.recent = recent.iter().copied().collect();
        let cp = Arc::new(Checkpoint::open(&dirs.checkpoint(), values)?);
        cp.update(true, |_| {})?;
        let mut seals = seals.unwrap_or_default();
        for (base, complete, damaged) in &plan.verified {
            if let Some(seg) = log.segment_at(*base)
                && let Ok(meta) = seg.metadata()
            {
                if *complete {
                    seals.seal(*base, &meta, damaged.clone());
                } else if !damaged.is_empty() {
                    seals.by_base.insert(
                        *base,
                        rmq_proto::state::Seal {
                            base: *base,
                            length: 0,
                            mtime_ns: 0,
                            damaged: damaged.clone(),
                        },
                    );
                }
            }
        }
        seals.forget_below(log.min_offset());
        if let Err(e) = seals.save(&dirs.seals()) {
            // Not fatal (a full disk must not keep the node down): segments not sealed now
            // are verified again at the next start.
            tracing::error!(error = %e, "cannot write the seal manifest");
        }
        let mut report = RecoveryReport {
            records,
            replay_from: scan_from,
            valid_end,
            truncated: plan.cut.as_ref().map(|c| {
                format!(
                    "torn tail cut at offset {} in {}",
                    c.segment.base + c.pos as i64,
                    c.segment.path.display()
                )
            }),
            damaged: plan.damage.iter().map(|d| d.to_string()).collect(),
            notes: plan.notes.clone(),
            clean_shutdown: clean,
            snapshot_base: snap.as_ref().map(|s| s.base),
            elapsed_ms: 0,
        };
        let new_damage = plan.damage.iter().filter(|d| !d.known).count() as u64;
        for d in &plan.damage {
            if d.known {
                tracing::warn!("known damage (accepted earlier), skipped: {d}");
            } else {
                tracing::error!(
                    "damaged commit log records skipped (startWithDamagedCommitLog=true): {d}"
                );
            }
        }
        for n in &plan.notes {
            tracing::warn!("recovery: {n}");
        }
        let store_host = format!("{}:{}", cfg.broker_ip1, cfg.listen_port)
            .parse()
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::LOCALHOST, cfg.listen_port));
        let sync = cfg.flush_disk_type == FlushDiskType::SyncFlush;
        let interval = Duration::from_millis(cfg.flush_interval_commit_log_ms);
        let metrics = StoreMetrics::new(&cfg);
        let far_behind_bytes = (super::physical_memory_bytes()
            .saturating_mul(cfg.access_message_in_memory_max_ratio)
            / 100) as i64;
        let log = Arc::new(log);
        let ha = super::HaView {
            master_ha_addr: cfg.ha_master_address.clone(),
            ..super::HaView::default()
        };
        let snapshot_base = snap.as_ref().map(|s| s.base).unwrap_or(0);
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        let store = Arc::new_cyclic(|weak: &Weak<Store>| {
            let w = weak.clone();
            let flusher = FlushService::start(
                log.clone(),
                cp.clone(),
                interval,
                Box::new(move |durable| {
                    if sync && let Some(s) = w.upgrade() {
                        s.dispatch_up_to(durable);
                    }
                }),
            );
            let cell = OnceLock::new();
            let _ = cell.set(flusher);
            Store {
                dirs: dirs.clone(),
                lock,
                log: log.clone(),
                state,
                writer: Mutex::new(Writer {
                    tail: Tail { pos: tail.pos },
                    queue_next,
                    pending: stalled.into_iter().collect(),
                    round_robin: FastMap::default(),
                    recent,
                }),
                queues: Arc::new(queues),
                checkpoint: cp.clone(),
                seals: Mutex::new(seals),
                flusher: cell,
                housekeeper: Mutex::new(None),
                replica_apply: Mutex::new(()),
                admin: tokio::sync::Mutex::new(()),
                notifiers: Mutex::new(FastMap::default()),
                store_host,
                clock: MonotonicMs::default(),
                topics_changed: Notify::new(),
                stats: Stats::default(),
                metrics,
                recovery: report,
                appended: Notify::new(),
                replicas: crate::replication::Tracker::default(),
                handover,
                ha: Mutex::new(ha),
                far_behind_bytes,
                disk: Disk::default(),
                pop_round_robin: AtomicUsize::new(0),
                snapshot_base: AtomicI64::new(snapshot_base),
                snapshot_at: AtomicI64::new(if records > 0 { -1 } else { valid_end }),
                snapshot_requested: Default::default(),
                state_dirty: AtomicBool::new(records > 0),
                stopped: AtomicBool::new(false),
                cfg,
            }
        });
        store
            .stats
            .boot_ms
            .store(now_ms() as u64, Ordering::Relaxed);
        store
            .stats
            .damaged_records
            .fetch_add(new_damage, Ordering::Relaxed);
        store.metrics.watch_storage(&store);
        *store.housekeeper.lock() = Some(housekeeping::start(&store));
        let r = &store.recovery;
        tracing::info!(
            records = r.records,
            replay_from = r.replay_from,
            end = r.valid_end,
            snapshot = ?r.snapshot_base,
            clean = r.clean_shutdown,
            ms = r.elapsed_ms,
            "store opened"
        );
        if let Some(t) = &r.truncated {
            tracing::warn!("{t}");
        }
        Ok(store)
    }
}

/// Installs a snapshot's state parts.
pub(super) fn restore_state(state: &State, s: &Snapshot) {
    *state.catalog.write() = s
        .catalog
        .clone()
        .map(Catalog::from_proto)
        .unwrap_or_default();
    let parts = s
        .pops
        .iter()
        .map(|p| {
            (
                (p.group.clone(), p.topic.clone()),
                Arc::new(Mutex::new(PopPart::from_proto(p))),
            )
        })
        .collect();
    state.pops.replace_all(parts);
    state.tokens.observe(s.max_token);
}
