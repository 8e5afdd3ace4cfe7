//! The store: commit log + consume queues + state, behind one API used by the gRPC service and,
//! in standalone mode, directly by the proxy.
//!
//! Lock order (never take an earlier one while holding a later one): `meta` → `writer` →
//! `queues`. No lock is held across an `.await`.

use crate::commitlog::{CommitLog, RecoveryReport, Tail};
use crate::config::{FlushDiskType, StoreConfig};
use crate::error::{Result, StoreError};
use crate::flush::FlushService;
use crate::metrics::StoreMetrics;
use crate::queues::{CqEntry, PendingDispatch, QueueTable};
use crate::state::{GroupCfg, Meta, PopItem, STATE_TOPIC, StateRecord, TopicCfg};
use parking_lot::{Mutex, RwLock};
use rmq_common::java::string_hash_code;
use rmq_common::keys;
use rmq_common::record::{RecordInput, RecordView, encode_properties};
use rmq_common::time::{MonotonicMs, now_ms};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// A message to append, as the proxy hands it over.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub topic: String,
    pub queue_id: i32,
    pub body: bytes::Bytes,
    pub properties: Vec<(String, String)>,
    pub born_timestamp: i64,
    pub born_host: String,
    pub flag: i32,
    pub sys_flag: i32,
}

#[derive(Debug, Clone, Copy)]
pub struct AppendResult {
    pub queue_id: i32,
    pub queue_offset: i64,
    pub phys: i64,
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

struct Writer {
    tail: Tail,
    queue_next: HashMap<(String, i32), i64>,
    pending: VecDeque<PendingDispatch>,
    round_robin: HashMap<String, usize>,
    /// The newest records (offset, size), offered to a master to find the common prefix.
    recent: VecDeque<(i64, usize)>,
}

const RECENT: usize = 64;

fn remember(recent: &mut VecDeque<(i64, usize)>, phys: i64, size: usize) {
    if recent.len() == RECENT {
        recent.pop_front();
    }
    recent.push_back((phys, size));
}

pub struct Store {
    cfg: StoreConfig,
    log: Arc<CommitLog>,
    meta: Mutex<Meta>,
    writer: Mutex<Writer>,
    queues: RwLock<QueueTable>,
    flusher: OnceLock<FlushService>,
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
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
    handover: Mutex<Handover>,
    /// On a slave: the master's HA address and what we know of it.
    ha: Mutex<HaView>,
    /// slaveReadEnable: a message further than this from the log's end is read from a slave.
    far_behind_bytes: i64,
}

#[derive(Default)]
struct Handover {
    path: std::path::PathBuf,
    records: Vec<Vec<u8>>,
    /// How many of `records` were already sent on the live stream.
    streamed: usize,
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

fn tags_code(view: &RecordView<'_>) -> i32 {
    view.property(keys::TAGS).map(string_hash_code).unwrap_or(0)
}

impl Store {
    /// Opens the store under `cfg.store_path_root_dir`, recovering the log and rebuilding every
    /// derived structure from it.
    pub fn open(cfg: StoreConfig) -> Result<Arc<Self>> {
        let mut meta = Meta::default();
        let mut queues = QueueTable::default();
        let mut queue_next: HashMap<(String, i32), i64> = HashMap::new();
        let mut recent = VecDeque::new();
        let dir = cfg.commit_log_dir();
        let (log, tail, recovery) = CommitLog::open(
            &dir,
            cfg.mapped_file_size_commit_log as usize,
            |view, bytes| {
                remember(&mut recent, view.physical_offset, bytes.len());
                replay(view, &mut meta, &mut queues, &mut queue_next)
            },
        )?;
        let handover = Handover::load(cfg.store_path_root_dir.join("handover.jsonl"));
        for raw in &handover.records {
            if let Ok(rec) = serde_json::from_slice::<StateRecord>(raw) {
                meta.apply(&rec, now_ms());
            }
        }
        let ha = HaView {
            master_ha_addr: cfg.ha_master_address.clone(),
            ..HaView::default()
        };
        if let Some(t) = &recovery.truncated {
            tracing::warn!(dir = %dir.display(), "commitlog tail discarded during recovery {t}");
        }
        tracing::info!(
            records = recovery.records,
            end = recovery.valid_end,
            "commitlog recovered"
        );
        let store_host = format!("{}:{}", cfg.broker_ip1, cfg.listen_port)
            .parse()
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::LOCALHOST, cfg.listen_port));
        let sync = cfg.flush_disk_type == FlushDiskType::SyncFlush;
        let interval = Duration::from_millis(cfg.flush_interval_commit_log_ms);
        let metrics = StoreMetrics::new(&cfg);
        let far_behind_bytes = (physical_memory_bytes()
            .saturating_mul(cfg.access_message_in_memory_max_ratio)
            / 100) as i64;
        let log = Arc::new(log);
        let store = Arc::new_cyclic(|weak: &Weak<Store>| {
            let w = weak.clone();
            let flusher = FlushService::start(
                log.clone(),
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
                cfg,
                log,
                meta: Mutex::new(meta),
                writer: Mutex::new(Writer {
                    tail,
                    queue_next,
                    pending: VecDeque::new(),
                    round_robin: HashMap::new(),
                    recent,
                }),
                queues: RwLock::new(queues),
                flusher: cell,
                notifiers: Mutex::new(HashMap::new()),
                store_host,
                clock: MonotonicMs::default(),
                topics_changed: Notify::new(),
                stats: Stats::default(),
                metrics,
                recovery,
                appended: Notify::new(),
                replicas: crate::replication::Tracker::default(),
                handover: Mutex::new(handover),
                ha: Mutex::new(ha),
                far_behind_bytes,
            }
        });
        store
            .stats
            .boot_ms
            .store(now_ms() as u64, Ordering::Relaxed);
        Ok(store)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn commit_log(&self) -> &CommitLog {
        &self.log
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    fn sync_flush(&self) -> bool {
        self.cfg.flush_disk_type == FlushDiskType::SyncFlush
    }

    fn flusher(&self) -> &FlushService {
        self.flusher.get().expect("flusher is set at construction")
    }

    /// Stops the flush thread after a final flush.
    pub fn shutdown(&self) {
        let _ = self.log.flush_to(self.log.published());
        if let Some(f) = self.flusher.get() {
            f.shutdown();
        }
    }

    fn notifier(&self, topic: &str) -> Arc<Notify> {
        self.notifiers
            .lock()
            .entry(topic.to_string())
            .or_default()
            .clone()
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
        // Few topics per batch: a vector beats a hash set here.
        let mut touched: Vec<String> = Vec::new();
        {
            let mut q = self.queues.write();
            while let Some(p) = w.pending.front() {
                if p.entry.phys + p.entry.size as i64 > upto {
                    break;
                }
                let p = w.pending.pop_front().expect("front exists");
                q.dispatch(&p);
                if !touched.contains(&p.topic) {
                    touched.push(p.topic);
                }
            }
        }
        for t in touched {
            self.notifier(&t).notify_waiters();
        }
    }

    /// Durable per this node's contract: flushed under SYNC_FLUSH, and held by every in-sync
    /// slave under SYNC_MASTER.
    async fn await_durable(&self, end: i64) -> Result<()> {
        self.await_local_durable(end).await?;
        if self.cfg.broker_role == crate::config::BrokerRole::SyncMaster {
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

    /// Appends a batch of messages (all or nothing), acknowledging per the flush mode.
    pub async fn append(&self, msgs: Vec<NewMessage>) -> Result<Vec<AppendResult>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_slave() {
            return Err(StoreError::NotMaster);
        }
        if self.cfg.broker_role == crate::config::BrokerRole::SyncMaster
            && !self.replicas.available(self.log.published())
        {
            // Refused before anything is written, so the proxy may safely try another group.
            return Err(StoreError::HaNotAvailable);
        }
        let mut write_queues: HashMap<String, i32> = HashMap::new();
        {
            let meta = self.meta.lock();
            for m in &msgs {
                let t = meta
                    .topics
                    .get(&m.topic)
                    .ok_or_else(|| StoreError::TopicNotFound(m.topic.clone()))?;
                if !t.writable() || self.cfg.broker_permission & 2 == 0 {
                    return Err(StoreError::NotWritable(m.topic.clone()));
                }
                if m.body.len() > self.cfg.max_message_size {
                    return Err(StoreError::BodyTooLarge {
                        size: m.body.len(),
                        limit: self.cfg.max_message_size,
                    });
                }
                if m.queue_id >= t.write_queue_nums {
                    return Err(StoreError::NoSuchQueue {
                        topic: m.topic.clone(),
                        queue: m.queue_id,
                    });
                }
                write_queues.insert(m.topic.clone(), t.write_queue_nums.max(1));
            }
        }
        let mut results = Vec::with_capacity(msgs.len());
        let end;
        {
            let mut w = self.writer.lock();
            let store_ts = self.clock.now();
            for m in &msgs {
                let queue_id = if m.queue_id >= 0 {
                    m.queue_id
                } else {
                    let n = write_queues[&m.topic];
                    let rr = w.round_robin.entry(m.topic.clone()).or_default();
                    *rr = rr.wrapping_add(1);
                    (*rr % n as usize) as i32
                };
                let key = (m.topic.clone(), queue_id);
                let qoff = *w.queue_next.get(&key).unwrap_or(&0);
                let props =
                    encode_properties(m.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let input = RecordInput {
                    topic: &m.topic,
                    queue_id,
                    flag: m.flag,
                    sys_flag: m.sys_flag,
                    born_timestamp: m.born_timestamp,
                    born_host: m
                        .born_host
                        .parse()
                        .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
                    store_host: self.store_host,
                    reconsume_times: 0,
                    prepared_tx_offset: 0,
                    body: &m.body,
                    properties: &props,
                };
                let a = self.log.append(&mut w.tail, &input, qoff, store_ts)?;
                remember(&mut w.recent, a.phys, a.size);
                w.queue_next.insert(key, qoff + 1);
                let tags = m
                    .properties
                    .iter()
                    .find(|(k, _)| k == keys::TAGS)
                    .map(|(_, v)| string_hash_code(v))
                    .unwrap_or(0);
                w.pending.push_back(PendingDispatch {
                    topic: m.topic.clone(),
                    queue_id,
                    queue_offset: qoff,
                    entry: CqEntry {
                        phys: a.phys,
                        size: a.size as u32,
                        tags_code: tags,
                        store_ts,
                    },
                });
                results.push(AppendResult {
                    queue_id,
                    queue_offset: qoff,
                    phys: a.phys,
                });
            }
            self.log.publish(&w.tail);
            end = w.tail.pos;
            if !self.sync_flush() {
                self.dispatch_pending(&mut w, end);
            }
        }
        self.appended.notify_waiters();
        self.await_durable(end).await?;
        self.stats
            .put_total
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        for m in &msgs {
            self.metrics.message_in(m);
        }
        Ok(results)
    }

    /// Applies a state change locally and appends its record; returns the log end after it.
    fn append_state(&self, meta: &mut Meta, rec: StateRecord) -> Result<i64> {
        let body = serde_json::to_vec(&rec).map_err(|e| StoreError::BadRequest(e.to_string()))?;
        if self.is_slave() {
            // A slave's log must stay a copy of its master's: keep the change aside, durably,
            // and hand it to the master when connected.
            let allowed = matches!(
                rec,
                StateRecord::Pop { .. }
                    | StateRecord::Ack { .. }
                    | StateRecord::Acks { .. }
                    | StateRecord::Inv { .. }
                    | StateRecord::Group { .. }
            );
            if !allowed {
                return Err(StoreError::NotMaster);
            }
            self.handover.lock().push(body)?;
            meta.apply(&rec, self.clock.now());
            return Ok(self.log.published());
        }
        let mut w = self.writer.lock();
        let store_ts = self.clock.now();
        let input = RecordInput {
            topic: STATE_TOPIC,
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: store_ts,
            born_host: self.store_host,
            store_host: self.store_host,
            reconsume_times: 0,
            prepared_tx_offset: 0,
            body: &body,
            properties: &[],
        };
        let a = self.log.append(&mut w.tail, &input, 0, store_ts)?;
        remember(&mut w.recent, a.phys, a.size);
        meta.apply(&rec, store_ts);
        if let StateRecord::TopicDelete { name } = &rec {
            w.queue_next.retain(|(t, _), _| t != name);
            w.pending.retain(|p| &p.topic != name);
            self.queues.write().remove_topic(name);
        }
        self.log.publish(&w.tail);
        let end = w.tail.pos;
        drop(w);
        self.appended.notify_waiters();
        Ok(end)
    }

    /// Pops up to `batch` messages, long-polling until one arrives or `poll_ms` passes.
    pub async fn pop(&self, req: PopRequest) -> Result<Vec<Delivery>> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(req.poll_ms.max(0) as u64);
        let notify = self.notifier(&req.topic);
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (found, next_visible) = self.try_pop(&req)?;
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
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut wake = deadline;
            if let Some(at) = next_visible {
                let wait = Duration::from_millis((at - now_ms()).max(1) as u64);
                wake = wake.min(now + wait);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn ensure_group(&self, meta: &mut Meta, group: &str) -> Result<()> {
        if meta.groups.contains_key(group) {
            return Ok(());
        }
        if !self.cfg.auto_create_subscription_group {
            return Err(StoreError::GroupNotFound(group.to_string()));
        }
        self.append_state(
            meta,
            StateRecord::Group {
                cfg: GroupCfg::with_defaults(group),
            },
        )?;
        Ok(())
    }

    /// One non-blocking pop attempt. Returns the deliveries and, when none, the earliest time an
    /// in-flight message of this group becomes visible again.
    fn try_pop(&self, req: &PopRequest) -> Result<(Vec<Delivery>, Option<i64>)> {
        let mut meta = self.meta.lock();
        let topic = meta
            .topics
            .get(&req.topic)
            .cloned()
            .ok_or_else(|| StoreError::TopicNotFound(req.topic.clone()))?;
        if !topic.readable() || self.cfg.broker_permission & 4 == 0 {
            return Err(StoreError::NotReadable(req.topic.clone()));
        }
        self.ensure_group(&mut meta, &req.group)?;
        let nq = topic.read_queue_nums.max(0);
        if nq == 0 {
            return Ok((Vec::new(), None));
        }
        let order: Vec<i32> = if req.queue_id >= 0 {
            if req.queue_id >= nq {
                return Err(StoreError::NoSuchQueue {
                    topic: req.topic.clone(),
                    queue: req.queue_id,
                });
            }
            vec![req.queue_id]
        } else {
            meta.round_robin = meta.round_robin.wrapping_add(1);
            let start = meta.round_robin % nq as usize;
            (0..nq)
                .map(|i| ((start + i as usize) % nq as usize) as i32)
                .collect()
        };
        let filter: Option<HashSet<i32>> =
            (!req.tags.is_empty()).then(|| req.tags.iter().map(|t| string_hash_code(t)).collect());
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut next_visible: Option<i64> = None;
        // slaveReadEnable: the slave that has received the most, and the log's end.
        let replica = (self.cfg.slave_read_enable && !self.is_slave())
            .then(|| self.replicas.furthest())
            .flatten();
        let log_end = self.log.published();
        for q in order {
            if out.len() >= req.batch {
                break;
            }
            let (min, max) = self.queues.read().bounds(&req.topic, q);
            let mut items = Vec::new();
            let mut picks: Vec<(i64, i32)> = Vec::new();
            let (cursor_before, expired): (i64, Vec<(i64, i32)>) = {
                let pq = meta.pop_queue(&req.group, &req.topic, q);
                if pq.cursor < min {
                    pq.cursor = min;
                }
                let expired = pq
                    .inflight
                    .iter()
                    .filter(|(_, i)| i.visible_at <= now)
                    .map(|(o, i)| (*o, i.attempt + 1))
                    .collect();
                for i in pq.inflight.values().filter(|i| i.visible_at > now) {
                    next_visible =
                        Some(next_visible.map_or(i.visible_at, |v: i64| v.min(i.visible_at)));
                }
                (pq.cursor, expired)
            };
            for (o, attempt) in expired {
                if picks.len() + out.len() >= req.batch {
                    break;
                }
                picks.push((o, attempt));
            }
            let mut cursor = cursor_before;
            {
                let queues = self.queues.read();
                while picks.len() + out.len() < req.batch && cursor < max {
                    let Some(e) = queues
                        .queue(&req.topic, q)
                        .and_then(|cq| cq.get(cursor))
                        .copied()
                    else {
                        break;
                    };
                    let o = cursor;
                    cursor += 1;
                    if let Some(f) = &filter
                        && !f.contains(&e.tags_code)
                    {
                        continue;
                    }
                    picks.push((o, 1));
                }
            }
            let queues = self.queues.read();
            for (o, attempt) in picks {
                let Some(e) = queues
                    .queue(&req.topic, q)
                    .and_then(|cq| cq.get(o))
                    .copied()
                else {
                    continue;
                };
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
                    let Some(record) = self.log.read(e.phys, e.size as usize) else {
                        continue;
                    };
                    record
                };
                if !req.tags.is_empty() && attempt == 1 && on_replica.is_none() {
                    // The tags code matched; compare the strings to rule out a hash collision.
                    let tag = RecordView::parse(&record)
                        .ok()
                        .and_then(|v| v.property(keys::TAGS).map(str::to_string));
                    if !tag.is_some_and(|t| req.tags.contains(&t)) {
                        continue;
                    }
                }
                let token = meta.next_token(now);
                items.push(PopItem {
                    o,
                    k: token,
                    a: attempt,
                    v: now + req.invisible_ms,
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
            drop(queues);
            if !items.is_empty() || cursor != cursor_before {
                let rec = StateRecord::Pop {
                    g: req.group.clone(),
                    t: req.topic.clone(),
                    q,
                    cursor,
                    items,
                };
                self.append_state(&mut meta, rec)?;
            }
        }
        Ok((out, next_visible))
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
                    .filter(|r| {
                        RecordView::parse(r)
                            .is_ok_and(|v| v.total_size == size && v.physical_offset == phys)
                    })
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

    fn check_delivery(
        meta: &mut Meta,
        group: &str,
        topic: &str,
        queue: i32,
        offset: i64,
        token: u64,
        now: i64,
    ) -> Result<()> {
        let pq = meta.pop_queue(group, topic, queue);
        match pq.inflight.get(&offset) {
            Some(i) if i.token == token && i.visible_at > now => Ok(()),
            Some(i) if i.token == token => {
                Err(StoreError::InvalidHandle("receipt handle is expired"))
            }
            _ => Err(StoreError::InvalidHandle(
                "receipt handle is unknown or superseded",
            )),
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
        let end = {
            let mut meta = self.meta.lock();
            if !meta.topics.contains_key(topic) {
                return Err(StoreError::TopicNotFound(topic.to_string()));
            }
            let now = self.clock.now();
            Self::check_delivery(&mut meta, group, topic, queue, offset, token, now)?;
            let rec = StateRecord::Ack {
                g: group.into(),
                t: topic.into(),
                q: queue,
                o: offset,
                k: token,
            };
            self.append_state(&mut meta, rec)?
        };
        self.await_state_durable(end).await
    }

    /// Acknowledges several deliveries of one group and topic with one state record (and one
    /// durability wait); each gets its own verdict, as if acked alone.
    pub async fn ack_batch(
        &self,
        group: &str,
        topic: &str,
        items: &[(i32, i64, u64)],
    ) -> Result<Vec<Result<()>>> {
        let (end, verdicts) = {
            let mut meta = self.meta.lock();
            if !meta.topics.contains_key(topic) {
                return Err(StoreError::TopicNotFound(topic.to_string()));
            }
            let now = self.clock.now();
            let mut accepted = Vec::with_capacity(items.len());
            let mut verdicts = Vec::with_capacity(items.len());
            for &(q, o, k) in items {
                let v = Self::check_delivery(&mut meta, group, topic, q, o, k, now);
                if v.is_ok() {
                    accepted.push((q, o, k));
                }
                verdicts.push(v);
            }
            let end = if accepted.is_empty() {
                None
            } else {
                let rec = StateRecord::Acks {
                    g: group.into(),
                    t: topic.into(),
                    i: accepted,
                };
                Some(self.append_state(&mut meta, rec)?)
            };
            (end, verdicts)
        };
        if let Some(end) = end {
            self.await_state_durable(end).await?;
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
        let (end, nv) = {
            let mut meta = self.meta.lock();
            if !meta.topics.contains_key(topic) {
                return Err(StoreError::TopicNotFound(topic.to_string()));
            }
            let now = self.clock.now();
            Self::check_delivery(&mut meta, group, topic, queue, offset, token, now)?;
            let n = meta.next_token(now);
            let rec = StateRecord::Inv {
                g: group.into(),
                t: topic.into(),
                q: queue,
                o: offset,
                k: token,
                n,
                v: now + invisible_ms,
            };
            let end = self.append_state(&mut meta, rec)?;
            (
                end,
                NewVisibility {
                    token: n,
                    pop_time_ms: now,
                    invisible_ms,
                },
            )
        };
        self.await_state_durable(end).await?;
        self.notifier(topic).notify_waiters();
        Ok(nv)
    }

    pub async fn upsert_topic(&self, cfg: TopicCfg) -> Result<()> {
        if cfg.name.is_empty() || cfg.read_queue_nums < 0 || cfg.write_queue_nums < 0 {
            return Err(StoreError::BadRequest(
                "topic needs a name and non-negative queue counts".into(),
            ));
        }
        let end = {
            let mut meta = self.meta.lock();
            self.append_state(&mut meta, StateRecord::Topic { cfg })?
        };
        self.await_state_durable(end).await?;
        self.topics_changed.notify_waiters();
        Ok(())
    }

    /// Creates a missing topic with `defaultTopicQueueNums` queues when `autoCreateTopicEnable`
    /// is set; otherwise reports it missing.
    pub async fn auto_create_topic(&self, name: &str) -> Result<()> {
        if !self.cfg.auto_create_topic_enable {
            return Err(StoreError::TopicNotFound(name.to_string()));
        }
        rmq_common::validate::check_topic(name).map_err(StoreError::BadRequest)?;
        let n = self.cfg.default_topic_queue_nums;
        tracing::info!(topic = name, queues = n, "auto-creating topic");
        self.upsert_topic(TopicCfg {
            name: name.to_string(),
            read_queue_nums: n,
            write_queue_nums: n,
            perm: 6,
            attributes: Default::default(),
            order: false,
        })
        .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let end = {
            let mut meta = self.meta.lock();
            if !meta.topics.contains_key(name) {
                return Err(StoreError::TopicNotFound(name.to_string()));
            }
            self.append_state(&mut meta, StateRecord::TopicDelete { name: name.into() })?
        };
        self.await_state_durable(end).await?;
        self.topics_changed.notify_waiters();
        Ok(())
    }

    pub async fn upsert_group(&self, cfg: GroupCfg) -> Result<()> {
        let end = {
            let mut meta = self.meta.lock();
            self.append_state(&mut meta, StateRecord::Group { cfg })?
        };
        self.await_state_durable(end).await
    }

    pub async fn delete_group(&self, name: &str) -> Result<()> {
        let end = {
            let mut meta = self.meta.lock();
            if !meta.groups.contains_key(name) {
                return Err(StoreError::GroupNotFound(name.to_string()));
            }
            self.append_state(&mut meta, StateRecord::GroupDelete { name: name.into() })?
        };
        self.await_state_durable(end).await
    }

    pub fn topic(&self, name: &str) -> Option<TopicCfg> {
        self.meta.lock().topics.get(name).cloned()
    }

    pub fn topics(&self) -> Vec<TopicCfg> {
        self.meta.lock().topics.values().cloned().collect()
    }

    pub fn group(&self, name: &str) -> Option<GroupCfg> {
        self.meta.lock().groups.get(name).cloned()
    }

    pub fn groups(&self) -> Vec<String> {
        self.meta.lock().groups.keys().cloned().collect()
    }

    /// Per queue: (queue id, min offset, max offset, last store time).
    pub fn topic_status(&self, topic: &str) -> Result<Vec<(i32, i64, i64, i64)>> {
        let n = self
            .topic(topic)
            .ok_or_else(|| StoreError::TopicNotFound(topic.to_string()))?;
        let q = self.queues.read();
        Ok((0..n.read_queue_nums.max(n.write_queue_nums))
            .map(|i| {
                let (min, max) = q.bounds(topic, i);
                let last = q.queue(topic, i).map(|c| c.last_store_ts()).unwrap_or(0);
                (i, min, max, last)
            })
            .collect())
    }

    /// Per (topic, queue) of a group: broker offset, consumer offset, in-flight count, last pop.
    pub fn consumer_progress(
        &self,
        group: &str,
        topic_filter: &str,
    ) -> Vec<(String, i32, i64, i64, i64, i64)> {
        let meta = self.meta.lock();
        let q = self.queues.read();
        let mut rows = Vec::new();
        for ((g, t), queues) in &meta.pops {
            if g != group || (!topic_filter.is_empty() && t != topic_filter) {
                continue;
            }
            let nq = meta.topics.get(t).map(|c| c.read_queue_nums).unwrap_or(0);
            for qid in 0..nq {
                let (_, max) = q.bounds(t, qid);
                let (commit, inflight, last) = queues
                    .get(&qid)
                    .map(|p| (p.commit_offset(), p.inflight.len() as i64, p.last_pop_ms))
                    .unwrap_or((0, 0, 0));
                rows.push((t.clone(), qid, max, commit, inflight, last));
            }
        }
        rows.sort();
        rows
    }

    pub fn runtime_info(&self) -> Vec<(String, String)> {
        let (put_tps, get_tps) = self.stats.tps();
        let boot = self.stats.boot_ms.load(Ordering::Relaxed) as i64;
        vec![
            (
                "brokerVersionDesc".into(),
                format!("V{}", env!("CARGO_PKG_VERSION").replace('.', "_")),
            ),
            ("brokerActive".into(), "true".into()),
            ("bootTimestamp".into(), boot.to_string()),
            ("runtime".into(), format!("{} ms", now_ms() - boot)),
            (
                "commitLogMinOffset".into(),
                self.log.min_offset().to_string(),
            ),
            (
                "commitLogMaxOffset".into(),
                self.log.published().to_string(),
            ),
            (
                "commitLogFlushedOffset".into(),
                self.log.flushed().to_string(),
            ),
            ("fsyncCount".into(), self.log.fsync_count().to_string()),
            (
                "putTps".into(),
                format!("{put_tps:.2} {put_tps:.2} {put_tps:.2}"),
            ),
            (
                "getTransferredTps".into(),
                format!("{get_tps:.2} {get_tps:.2} {get_tps:.2}"),
            ),
            (
                "msgPutTotalTodayNow".into(),
                self.stats.put_total.load(Ordering::Relaxed).to_string(),
            ),
            (
                "msgGetTotalTodayNow".into(),
                self.stats.get_total.load(Ordering::Relaxed).to_string(),
            ),
            (
                "flushDiskType".into(),
                format!("{:?}", self.cfg.flush_disk_type),
            ),
            (
                "slaveReadTotal".into(),
                self.stats
                    .slave_read_total
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            ("brokerRole".into(), self.cfg.broker_role.as_str().into()),
            ("brokerId".into(), self.cfg.broker_id.to_string()),
            ("haMasterAddr".into(), self.ha_view().master_ha_addr),
            ("haConnected".into(), self.ha_view().connected.to_string()),
            ("haMasterEnd".into(), self.ha_view().master_end.to_string()),
            (
                "haRoundTrips".into(),
                self.replicas
                    .round_trips
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "haSlaves".into(),
                self.replicas
                    .snapshot()
                    .iter()
                    .map(|p| {
                        format!(
                            "{},{},{},{}",
                            p.broker_id,
                            p.addr,
                            p.acked,
                            self.log.published() - p.acked
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
        ]
    }
}

/// Recovery's per-record step: rebuild consume queues, queue offsets and state.
fn replay(
    view: &RecordView<'_>,
    meta: &mut Meta,
    queues: &mut QueueTable,
    queue_next: &mut HashMap<(String, i32), i64>,
) {
    match interpret(view) {
        Interpreted::State(rec) => {
            if let StateRecord::TopicDelete { name } = &rec {
                queues.remove_topic(name);
                queue_next.retain(|(t, _), _| t != name);
            }
            meta.apply(&rec, view.store_timestamp);
        }
        Interpreted::Message(p) => {
            queue_next.insert((p.topic.clone(), p.queue_id), p.queue_offset + 1);
            queues.dispatch(&p);
        }
        Interpreted::Skip => {}
    }
}

impl Handover {
    /// Reads handed-over changes a previous run of this slave did not get to deliver.
    fn load(path: std::path::PathBuf) -> Self {
        let records = std::fs::read_to_string(&path)
            .map(|t| {
                t.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.as_bytes().to_vec())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            path,
            records,
            streamed: 0,
        }
    }

    fn persist(&self) -> std::io::Result<()> {
        let mut text = Vec::new();
        for r in &self.records {
            text.extend_from_slice(r);
            text.push(b'\n');
        }
        let tmp = self.path.with_extension("tmp");
        {
            use std::io::Write;
            if let Some(d) = self.path.parent() {
                std::fs::create_dir_all(d)?;
            }
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)
    }

    /// Appends one record durably (one line, one fdatasync).
    fn push(&mut self, rec: Vec<u8>) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut line = rec.clone();
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_data()?;
        self.records.push(rec);
        Ok(())
    }
}

fn crc_of(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// What one replicated record means for the derived state.
enum Interpreted {
    Message(PendingDispatch),
    State(StateRecord),
    Skip,
}

fn interpret(view: &RecordView<'_>) -> Interpreted {
    let topic = view.topic();
    if topic == STATE_TOPIC {
        return match serde_json::from_slice::<StateRecord>(view.body) {
            Ok(rec) => Interpreted::State(rec),
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
            store_ts: view.store_timestamp,
        },
    })
}

impl Store {
    pub fn is_slave(&self) -> bool {
        self.cfg.broker_role == crate::config::BrokerRole::Slave
    }

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
    pub fn remember_slave(&self) {
        let marker = self.cfg.store_path_root_dir.join("ha-slaves");
        if !marker.exists() {
            let _ = std::fs::write(marker, b"1\n");
        }
    }

    pub fn had_slaves(&self) -> bool {
        self.cfg.store_path_root_dir.join("ha-slaves").exists()
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
                let bytes = self.log.read(offset, size)?;
                Some(rmq_proto::replication::RecordMark {
                    offset,
                    size: size as i32,
                    crc: crc_of(&bytes),
                })
            })
            .collect();
        let mut h = self.handover.lock();
        h.streamed = h.records.len();
        let handover = h.records.clone();
        let n = handover.len();
        drop(h);
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
        let mut h = self.handover.lock();
        let n = n.min(h.records.len());
        h.records.drain(..n);
        h.streamed = h.streamed.saturating_sub(n);
        if let Err(e) = h.persist() {
            tracing::error!(error = %e, "cannot persist the handover log");
        }
    }

    /// Handover records made while connected, not yet streamed. They stay in the file until a
    /// later hello is accepted; applying one twice on the master is harmless.
    pub fn take_new_handover(&self) -> Vec<Vec<u8>> {
        let mut h = self.handover.lock();
        let new = h.records[h.streamed..].to_vec();
        h.streamed = h.records.len();
        new
    }

    /// On a master: applies a state change a slave made while serving reads.
    pub async fn apply_handover(&self, raw: &[u8]) -> Result<()> {
        let rec: StateRecord =
            serde_json::from_slice(raw).map_err(|e| StoreError::BadRequest(e.to_string()))?;
        if !matches!(
            rec,
            StateRecord::Pop { .. }
                | StateRecord::Ack { .. }
                | StateRecord::Acks { .. }
                | StateRecord::Inv { .. }
                | StateRecord::Group { .. }
        ) {
            return Err(StoreError::BadRequest(
                "only consumption state can be handed over".into(),
            ));
        }
        let end = {
            let mut meta = self.meta.lock();
            if let StateRecord::Group { cfg } = &rec
                && meta.groups.contains_key(&cfg.name)
            {
                return Ok(());
            }
            if let StateRecord::Pop { items, .. } = &rec {
                let max = items.iter().map(|i| i.k).max().unwrap_or(0);
                meta.max_token = meta.max_token.max(max);
            }
            self.append_state(&mut meta, rec)?
        };
        self.await_local_durable(end).await
    }

    /// On a master: where a slave offering `hello` should continue. The end of the newest record
    /// both logs hold byte for byte; else the oldest offered offset (the slave cuts back to it and
    /// offers older records next time).
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

    /// On a slave: appends records exactly as the master stored them and derives from them.
    pub fn append_replica(&self, offset: i64, bytes: &[u8]) -> Result<i64> {
        use rmq_common::record::{Scan, check};
        let mut meta = self.meta.lock();
        let mut w = self.writer.lock();
        if offset != w.tail.pos {
            return Err(StoreError::BadRequest(format!(
                "replica expected offset {}, master sent {offset}",
                w.tail.pos
            )));
        }
        let mut topics_changed = false;
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
                        Interpreted::Message(p) => {
                            w.queue_next
                                .insert((p.topic.clone(), p.queue_id), p.queue_offset + 1);
                            w.pending.push_back(p);
                        }
                        Interpreted::State(rec) => {
                            if let StateRecord::TopicDelete { name } = &rec {
                                w.queue_next.retain(|(t, _), _| t != name);
                                w.pending.retain(|p| &p.topic != name);
                                self.queues.write().remove_topic(name);
                            }
                            if matches!(
                                rec,
                                StateRecord::Topic { .. } | StateRecord::TopicDelete { .. }
                            ) {
                                topics_changed = true;
                            }
                            meta.apply(&rec, view.store_timestamp);
                        }
                        Interpreted::Skip => {}
                    }
                    i += n;
                }
                Ok(Scan::EndOfFile) => {
                    self.log
                        .append_blank_raw(&mut w.tail, &bytes[i..(i + 8).min(bytes.len())])?;
                    i = bytes.len();
                }
                Ok(Scan::End) | Err(_) => {
                    return Err(StoreError::BadRequest(format!(
                        "corrupt replication data at offset {pos}"
                    )));
                }
            }
        }
        self.log.publish(&w.tail);
        let end = w.tail.pos;
        if !self.sync_flush() {
            self.dispatch_pending(&mut w, end);
        } else {
            self.flusher().wake();
        }
        drop(w);
        drop(meta);
        self.appended.notify_waiters();
        if topics_changed {
            // The name servers must learn the topic from the slave too, or the group vanishes
            // from routes when its master does.
            self.topics_changed.notify_waiters();
        }
        Ok(end)
    }

    /// On a slave whose tail diverged: cuts the log back durably and rebuilds everything derived.
    pub fn truncate_to(&self, to: i64) -> Result<()> {
        let mut meta = self.meta.lock();
        let mut w = self.writer.lock();
        self.log.truncate(&mut w.tail, to)?;
        let mut fresh = Meta::default();
        let mut queues = QueueTable::default();
        let mut queue_next = HashMap::new();
        let mut recent = VecDeque::new();
        self.log.scan(|view, bytes| {
            remember(&mut recent, view.physical_offset, bytes.len());
            replay(view, &mut fresh, &mut queues, &mut queue_next);
        });
        for raw in &self.handover.lock().records {
            if let Ok(rec) = serde_json::from_slice::<StateRecord>(raw) {
                fresh.apply(&rec, now_ms());
            }
        }
        *meta = fresh;
        *self.queues.write() = queues;
        w.queue_next = queue_next;
        w.recent = recent;
        w.pending.clear();
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
