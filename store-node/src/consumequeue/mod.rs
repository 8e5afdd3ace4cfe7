//! Consume queues: per (topic, queue id), the commitlog position, size and tags code of every
//! message, in files under `<root>/consumequeue/<topic>/<queueId>/` laid out as Apache lays them
//! out. They are derived from the log (dispatched at append, or after the flush under
//! SYNC_FLUSH), made durable by the housekeeper before each snapshot, and their bounds travel in
//! the snapshot, so a restart re-dispatches only what the log holds after it.

pub mod file;
pub mod queue;

pub use file::CqEntry;
use parking_lot::RwLock;
pub use queue::ConsumeQueue;
use rmq_common::FastMap;
use rmq_proto::state::QueueBounds;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A message appended but not yet visible to consumers (waiting for its flush under SYNC_FLUSH).
#[derive(Debug, Clone)]
pub struct PendingDispatch {
    pub topic: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub entry: CqEntry,
}

type Topics = FastMap<String, FastMap<i32, Arc<ConsumeQueue>>>;

pub struct QueueTable {
    root: PathBuf,
    units_per_file: i64,
    topics: RwLock<Topics>,
}

impl QueueTable {
    /// Opens every queue found under `root`.
    pub fn open(root: &Path, units_per_file: i64) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let mut topics: Topics = FastMap::default();
        for t in std::fs::read_dir(root)? {
            let t = t?;
            if !t.file_type()?.is_dir() {
                continue;
            }
            let topic = t.file_name().to_string_lossy().to_string();
            for q in std::fs::read_dir(t.path())? {
                let q = q?;
                let Ok(id) = q.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cq = ConsumeQueue::open(&q.path(), units_per_file)?;
                topics
                    .entry(topic.clone())
                    .or_default()
                    .insert(id, Arc::new(cq));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            units_per_file,
            topics: RwLock::new(topics),
        })
    }

    pub fn queue(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.topics.read().get(topic)?.get(&queue_id).cloned()
    }

    pub fn queue_or_create(&self, topic: &str, queue_id: i32) -> Arc<ConsumeQueue> {
        if let Some(q) = self.queue(topic, queue_id) {
            return q;
        }
        let mut t = self.topics.write();
        let dir = self.root.join(topic).join(queue_id.to_string());
        let units = self.units_per_file;
        t.entry(topic.to_string())
            .or_default()
            .entry(queue_id)
            .or_insert_with(|| Arc::new(ConsumeQueue::new(dir, units)))
            .clone()
    }

    /// Makes a message visible to consumers.
    pub fn dispatch(&self, p: &PendingDispatch) -> io::Result<()> {
        self.queue_or_create(&p.topic, p.queue_id)
            .put(p.queue_offset, &p.entry)
    }

    /// (min, max) logical offsets of a queue; (0, 0) when it holds nothing yet.
    pub fn bounds(&self, topic: &str, queue_id: i32) -> (i64, i64) {
        self.queue(topic, queue_id)
            .map(|q| (q.min(), q.max()))
            .unwrap_or((0, 0))
    }

    pub fn all(&self) -> Vec<(String, i32, Arc<ConsumeQueue>)> {
        self.topics
            .read()
            .iter()
            .flat_map(|(t, qs)| qs.iter().map(move |(q, cq)| (t.clone(), *q, cq.clone())))
            .collect()
    }

    pub fn bounds_all(&self) -> Vec<QueueBounds> {
        let mut v: Vec<QueueBounds> = self
            .all()
            .into_iter()
            .map(|(topic, queue_id, q)| QueueBounds {
                topic,
                queue_id,
                min: q.min(),
                max: q.max(),
            })
            .collect();
        v.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
        v
    }

    /// Restores bounds from a snapshot. Returns false when some queue's files no longer cover
    /// its bounds (the caller then rebuilds every queue from the log).
    pub fn restore_bounds(&self, bounds: &[QueueBounds]) -> bool {
        let mut whole = true;
        for b in bounds {
            let q = self.queue_or_create(&b.topic, b.queue_id);
            q.set_bounds(b.min, b.max);
            whole &= q.covers_bounds();
        }
        whole
    }

    /// Forgets every queue's bounds (before a rebuild from the log).
    pub fn reset_bounds(&self) {
        for (_, _, q) in self.all() {
            q.set_bounds(0, 0);
        }
    }

    /// Removes a topic's queues and their files. Blocking.
    pub fn remove_topic(&self, topic: &str) -> io::Result<()> {
        let gone = self.topics.write().remove(topic);
        drop(gone);
        let dir = self.root.join(topic);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes every queue and file (a slave starting over from its master's snapshot).
    pub fn clear(&self) -> io::Result<()> {
        let topics: Vec<String> = self.topics.read().keys().cloned().collect();
        for t in topics {
            self.remove_topic(&t)?;
        }
        Ok(())
    }

    pub fn sync_all(&self) -> io::Result<()> {
        for (_, _, q) in self.all() {
            q.sync()?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}
