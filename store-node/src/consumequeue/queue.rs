//! One consume queue (topic, queue id): the files of its units and its readable bounds.
//!
//! One writer (the store's dispatcher, under the writer lock) appends units and then publishes
//! the new maximum; readers look up units below it without a lock on the writer.

use super::file::{CqEntry, CqFile};
use parking_lot::RwLock;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub struct ConsumeQueue {
    pub dir: PathBuf,
    units_per_file: i64,
    files: RwLock<Vec<Arc<CqFile>>>,
    min: AtomicI64,
    max: AtomicI64,
    /// Lowest offset written since the last sync (i64::MAX: nothing).
    dirty_from: AtomicI64,
}

impl ConsumeQueue {
    pub fn new(dir: PathBuf, units_per_file: i64) -> Self {
        Self {
            dir,
            units_per_file,
            files: RwLock::new(Vec::new()),
            min: AtomicI64::new(0),
            max: AtomicI64::new(0),
            dirty_from: AtomicI64::new(i64::MAX),
        }
    }

    /// Opens the files found in `dir` (bounds come from the snapshot, then replay).
    pub fn open(dir: &Path, units_per_file: i64) -> io::Result<Self> {
        let q = Self::new(dir.to_path_buf(), units_per_file);
        let mut files: Vec<Arc<CqFile>> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if crate::durable::is_temporary(&name) {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let Some(byte_offset) = (name.len() == 20)
                .then(|| name.parse::<i64>().ok())
                .flatten()
            else {
                continue;
            };
            let start = byte_offset / super::file::UNIT as i64;
            files.push(Arc::new(CqFile::open(&e.path(), start)?));
        }
        files.sort_by_key(|f| f.start);
        *q.files.write() = files;
        Ok(q)
    }

    pub fn min(&self) -> i64 {
        self.min.load(Ordering::Acquire)
    }

    pub fn max(&self) -> i64 {
        self.max.load(Ordering::Acquire)
    }

    pub fn set_bounds(&self, min: i64, max: i64) {
        self.min.store(min, Ordering::Release);
        self.max.store(max, Ordering::Release);
    }

    /// Whether files cover every unit of `[min, max)` (false: files were lost).
    pub fn covers_bounds(&self) -> bool {
        let (min, max) = (self.min(), self.max());
        if max <= min {
            return true;
        }
        let files = self.files.read();
        let mut at = min;
        for f in files.iter() {
            if f.start <= at && f.end() > at {
                at = f.end();
            }
        }
        at >= max
    }

    fn file_for(&self, o: i64) -> Option<Arc<CqFile>> {
        let files = self.files.read();
        let i = files.partition_point(|f| f.end() <= o);
        files.get(i).filter(|f| f.start <= o).cloned()
    }

    /// The unit at `o`, when readable (`None` outside the bounds or for a hole).
    pub fn get(&self, o: i64) -> Option<CqEntry> {
        if o < self.min() || o >= self.max() {
            return None;
        }
        self.file_for(o)?.get(o)
    }

    /// Appends (or, in replay, rewrites) the unit at `o` and publishes it. Single writer.
    pub fn put(&self, o: i64, e: &CqEntry) -> io::Result<()> {
        if o < 0 {
            return Ok(());
        }
        let file = match self.file_for(o) {
            Some(f) => f,
            None => self.create_file_for(o)?,
        };
        file.reserve_through(o)?;
        let max = self.max();
        if o > max && max > self.min() {
            // A gap (a damaged record never dispatched): holes, not whatever a previous run
            // left in those units.
            for g in max.max(file.start)..o {
                // SAFETY: as below; the gap is beyond what readers may read.
                unsafe {
                    file.put(
                        g,
                        &CqEntry {
                            phys: 0,
                            size: 0,
                            tags_code: 0,
                        },
                    )
                };
            }
        }
        // SAFETY: the store's writer lock makes us the only writer; `o` is beyond what readers
        // may read, or replay rewrites identical bytes.
        unsafe { file.put(o, e) };
        self.dirty_from.fetch_min(o, Ordering::AcqRel);
        let (min, max) = (self.min(), self.max());
        if max <= min && o != max {
            // An empty queue starts where its first message is (a slave joining late, a queue
            // whose every message was deleted).
            self.min.store(o, Ordering::Release);
        }
        if o >= max {
            self.max.store(o + 1, Ordering::Release);
        }
        Ok(())
    }

    fn create_file_for(&self, o: i64) -> io::Result<Arc<CqFile>> {
        let start = o - o.rem_euclid(self.units_per_file);
        let f = Arc::new(CqFile::create(&self.dir, start, self.units_per_file)?);
        let mut files = self.files.write();
        files.push(f.clone());
        files.sort_by_key(|f| f.start);
        Ok(f)
    }

    /// Prepares the file the next units will need, so appends rarely create one themselves:
    /// the first file of an empty queue, the next one when the last is three quarters full.
    pub fn prepare_next_file(&self) -> io::Result<bool> {
        let max = self.max();
        if let Some(f) = self.file_for(max)
            && f.needs_reserve(max)
        {
            f.reserve_through(max + (super::file::RESERVE_CHUNK / super::file::UNIT) as i64 / 2)?;
        }
        let last_end = self.files.read().last().map(|f| (f.start, f.end()));
        let want = match last_end {
            None => Some(max - max.rem_euclid(self.units_per_file)),
            Some((start, end)) if max >= start + self.units_per_file * 3 / 4 && max < end => {
                Some(end)
            }
            _ => None,
        };
        match want {
            Some(start) if self.file_for(start).is_none() => {
                self.create_file_for(start)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Drops units at and beyond `max` (their records were cut from the log's tail).
    pub fn truncate(&self, max: i64) {
        let max = max.max(self.min());
        if max >= self.max() {
            return;
        }
        // Units beyond the maximum are never read, and are rewritten before they are again.
        self.max.store(max, Ordering::Release);
    }

    /// Makes every unit written since the last sync durable.
    pub fn sync(&self) -> io::Result<()> {
        let from = self.dirty_from.swap(i64::MAX, Ordering::AcqRel);
        if from == i64::MAX {
            return Ok(());
        }
        let max = self.max();
        let files: Vec<Arc<CqFile>> = self.files.read().clone();
        for f in files
            .iter()
            .filter(|f| f.end() > from && f.start < max.max(from + 1))
        {
            if let Err(e) = f.flush(from, max.max(from + 1)) {
                self.dirty_from.fetch_min(from, Ordering::AcqRel);
                return Err(e);
            }
        }
        Ok(())
    }

    /// After retention moved the log's start to `log_min`: the queue's first readable unit
    /// becomes the first one whose record is still in the log. Returns the files no longer
    /// needed (whose every unit lies below the new minimum), already out of the list.
    pub fn retire_below(&self, log_min: i64) -> Vec<Arc<CqFile>> {
        let (mut lo, hi) = (self.min(), self.max());
        if lo >= hi {
            return Vec::new();
        }
        // Binary search for the first unit whose record starts at or after log_min; holes (zero
        // units) count as below.
        let below = |o: i64| self.get(o).is_none_or(|e| e.phys < log_min);
        if below(lo) {
            let (mut a, mut b) = (lo, hi);
            while a < b {
                let mid = a + (b - a) / 2;
                if below(mid) {
                    a = mid + 1;
                } else {
                    b = mid;
                }
            }
            lo = a;
            self.min.store(lo, Ordering::Release);
        }
        let mut files = self.files.write();
        let (gone, keep): (Vec<_>, Vec<_>) = files
            .drain(..)
            .partition(|f| f.end() <= lo && f.end() < hi.max(lo));
        *files = keep;
        gone
    }

    pub fn files(&self) -> Vec<Arc<CqFile>> {
        self.files.read().clone()
    }
}
