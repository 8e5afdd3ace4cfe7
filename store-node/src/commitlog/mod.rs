//! The commit log: fixed-size memory-mapped segments holding RocketMQ-layout records back to
//! back.
//!
//! Appends happen under the store's writer lock through a [`Tail`]; readers see only bytes below
//! the published position. New segments come ready from the [`allocator`], with their space
//! reserved, so the append path never creates or syncs a file. Recovery ([`recovery`]) decides
//! what a restart keeps; retention retires whole segments from the front.

pub mod allocator;
pub mod recovery;
pub mod seals;
pub mod segment;

use crate::error::StoreError;
use parking_lot::RwLock;
use rmq_common::record::{self, RecordInput, RecordView, Scan};
use segment::{Segment, sync_dir};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub struct CommitLog {
    dir: PathBuf,
    segment_size: usize,
    segments: RwLock<Vec<Arc<Segment>>>,
    published: AtomicI64,
    flushed: AtomicI64,
    /// First retained offset.
    min: AtomicI64,
    fsyncs: AtomicU64,
    pub alloc: allocator::Allocator,
    /// Ranges `[start, end)` known to be damaged (accepted at start, or found by a read).
    damaged: RwLock<Vec<(i64, i64)>>,
}

/// The write cursor; owned by whoever holds the store's writer lock.
#[derive(Debug)]
pub struct Tail {
    pub pos: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub phys: i64,
    pub size: usize,
}

impl CommitLog {
    /// Opens the log as a recovery plan left it.
    pub fn open(
        dir: &Path,
        segment_size: usize,
        plan: &recovery::Plan,
    ) -> io::Result<(Self, Tail)> {
        std::fs::create_dir_all(dir)?;
        let mut segments = Vec::with_capacity(plan.segments.len());
        for s in &plan.segments {
            segments.push(Arc::new(Segment::open(&s.path, s.base)?));
        }
        let alloc = allocator::Allocator::start(dir.to_path_buf(), segment_size);
        let mut prepared = Vec::new();
        for s in &plan.prepared {
            let seg = Arc::new(Segment::open(&s.path, s.base)?);
            // A prepared segment from before space reservation (or copied sparsely) gets its
            // blocks now; if that fails it is not used.
            match seg.ensure_reserved() {
                Ok(()) => prepared.push(seg),
                Err(e) => {
                    tracing::warn!(file = %s.path.display(), error = %e, "prepared segment dropped");
                    drop(seg);
                    let _ = std::fs::remove_file(&s.path);
                }
            }
        }
        alloc.adopt(prepared);
        let end = plan.valid_end;
        let min = segments.first().map(|s| s.base).unwrap_or(end);
        let next = match segments.last() {
            Some(s) if end < s.end() => s.end(),
            _ => end,
        };
        alloc.want_from(next);
        let damaged = plan
            .damage
            .iter()
            .map(|d| (d.offset, d.offset + d.length.max(1)))
            .collect();
        let log = Self {
            dir: dir.to_path_buf(),
            segment_size,
            segments: RwLock::new(segments),
            published: AtomicI64::new(end),
            // What the checkpoint vouches for; recovery flushes the rest before serving.
            flushed: AtomicI64::new(if plan.flushed == i64::MAX {
                min
            } else {
                plan.flushed.clamp(min, end)
            }),
            min: AtomicI64::new(min),
            fsyncs: AtomicU64::new(0),
            alloc,
            damaged: RwLock::new(damaged),
        };
        Ok((log, Tail { pos: end }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn segment_size(&self) -> usize {
        self.segment_size
    }

    pub fn published(&self) -> i64 {
        self.published.load(Ordering::Acquire)
    }

    pub fn flushed(&self) -> i64 {
        self.flushed.load(Ordering::Acquire)
    }

    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    pub fn min_offset(&self) -> i64 {
        self.min.load(Ordering::Acquire)
    }

    /// (base, end, path) of every segment, oldest first.
    pub fn segment_list(&self) -> Vec<(i64, i64, PathBuf)> {
        self.segments
            .read()
            .iter()
            .map(|s| (s.base, s.end(), s.path.clone()))
            .collect()
    }

    pub fn segment_at(&self, base: i64) -> Option<Arc<Segment>> {
        self.segments
            .read()
            .iter()
            .find(|s| s.base == base)
            .cloned()
    }

    /// Whether appending records of these sizes at the tail needs segments that are not ready
    /// (the caller then waits for the allocator instead of writing part of a batch).
    pub fn needs_segments(&self, tail: &Tail, sizes: impl IntoIterator<Item = usize>) -> bool {
        let last = self.segments.read().last().map(|s| (s.base, s.end()));
        let mut pos = tail.pos;
        let mut seg_end = match last {
            Some((b, e)) if pos >= b && pos < e => e,
            _ => pos, // at a boundary: the first record needs a new segment
        };
        let mut rolls = 0usize;
        for n in sizes {
            if pos + (n + record::END_FILE_MIN_BLANK) as i64 > seg_end {
                rolls += 1;
                pos = seg_end.max(pos);
                seg_end = pos + self.segment_size as i64;
            }
            pos += n as i64;
        }
        let boundary = match last {
            Some((b, e)) if tail.pos >= b && tail.pos < e => e,
            _ => tail.pos,
        };
        rolls > 0 && self.alloc.ready_from(boundary) < rolls
    }

    /// Appends one record at the tail, rolling to a prepared segment when it does not fit.
    /// Must be called with the store's writer lock held (the `&mut Tail` proves it). With
    /// `inline_roll`, a segment the allocator has not prepared yet is created right here
    /// (state records, which must not fail for want of one); otherwise that is
    /// [`StoreError::SegmentNotReady`].
    pub fn append(
        &self,
        tail: &mut Tail,
        input: &RecordInput<'_>,
        queue_offset: i64,
        store_timestamp: i64,
        inline_roll: bool,
    ) -> Result<Appended, StoreError> {
        let size = record::encoded_len(input);
        if size + record::END_FILE_MIN_BLANK > self.segment_size {
            return Err(StoreError::BadRequest(format!(
                "record of {size} bytes does not fit a commitlog segment of {} bytes",
                self.segment_size
            )));
        }
        let seg = self.segment_for_append(tail, size, inline_roll)?;
        let pos = (tail.pos - seg.base) as usize;
        // SAFETY: writer lock held (we own `tail`), region is beyond the published position.
        let out = unsafe { seg.slice_mut(pos, size) };
        record::encode(input, queue_offset, tail.pos, store_timestamp, out)?;
        seg.touch(store_timestamp);
        let phys = tail.pos;
        tail.pos += size as i64;
        Ok(Appended { phys, size })
    }

    /// Appends bytes that already form whole records at `tail.pos` (a replica copying its
    /// master). The bytes must start at a record boundary.
    pub fn append_raw(&self, tail: &mut Tail, bytes: &[u8]) -> Result<(), StoreError> {
        let seg = self.segment_for_append(tail, bytes.len(), true)?;
        let pos = (tail.pos - seg.base) as usize;
        // SAFETY: as in `append`.
        let out = unsafe { seg.slice_mut(pos, bytes.len()) };
        out.copy_from_slice(bytes);
        seg.touch(rmq_common::time::now_ms());
        tail.pos += bytes.len() as i64;
        Ok(())
    }

    fn segment_for_append(
        &self,
        tail: &mut Tail,
        size: usize,
        inline_roll: bool,
    ) -> Result<Arc<Segment>, StoreError> {
        let last = self.segments.read().last().cloned();
        if let Some(seg) = last
            && tail.pos >= seg.base
            && tail.pos < seg.end()
        {
            let left = (seg.end() - tail.pos) as usize;
            if size + record::END_FILE_MIN_BLANK <= left {
                return Ok(seg);
            }
            let pos = (tail.pos - seg.base) as usize;
            // SAFETY: writer lock held; region beyond the published position.
            let out = unsafe { seg.slice_mut(pos, record::END_FILE_MIN_BLANK) };
            record::encode_blank(left, out);
            tail.pos = seg.end();
        }
        let seg = match self.alloc.take(tail.pos) {
            Some(s) => s,
            None if inline_roll => self.alloc.create_now(tail.pos).map_err(|e| {
                StoreError::DiskFull(format!("cannot create a commitlog segment: {e}"))
            })?,
            None => {
                return Err(match self.alloc.failure() {
                    Some(f) => StoreError::DiskFull(format!(
                        "cannot reserve the next commitlog segment: {f}"
                    )),
                    None => StoreError::SegmentNotReady,
                });
            }
        };
        let mut segs = self.segments.write();
        if segs.is_empty() {
            self.min.store(seg.base, Ordering::Release);
        }
        segs.push(seg.clone());
        Ok(seg)
    }

    /// Appends an end-of-segment marker copied from a master and moves the tail to the next
    /// segment, exactly where the master's next record starts.
    pub fn append_blank_raw(&self, tail: &mut Tail, marker: &[u8]) -> io::Result<()> {
        let seg = self
            .segments
            .read()
            .last()
            .cloned()
            .filter(|s| tail.pos >= s.base && tail.pos < s.end())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "end-of-segment marker outside a segment",
                )
            })?;
        let pos = (tail.pos - seg.base) as usize;
        let n = marker.len().min(seg.size - pos);
        // SAFETY: writer lock held (we own `tail`); beyond the published position.
        unsafe { seg.slice_mut(pos, n) }.copy_from_slice(&marker[..n]);
        tail.pos = seg.end();
        Ok(())
    }

    /// End of the segment holding `offset`, if any.
    pub fn segment_end(&self, offset: i64) -> Option<i64> {
        let segs = self.segments.read();
        segs.iter()
            .find(|s| offset >= s.base && offset < s.end())
            .map(|s| s.end())
    }

    /// The damaged range holding `offset`, if any.
    pub fn damaged_at(&self, offset: i64) -> Option<(i64, i64)> {
        self.damaged
            .read()
            .iter()
            .copied()
            .find(|&(a, b)| offset >= a && offset < b)
    }

    /// Remembers a damaged range a read found; returns whether it was new.
    pub fn mark_damaged(&self, start: i64, end: i64) -> bool {
        let mut d = self.damaged.write();
        if d.iter().any(|&(a, b)| start >= a && start < b) {
            return false;
        }
        d.push((start, end.max(start + 1)));
        d.sort();
        true
    }

    pub fn damaged_ranges(&self) -> Vec<(i64, i64)> {
        self.damaged.read().clone()
    }

    /// Whole records (and an end-of-segment marker) from `from`, at most about `max` bytes,
    /// never across a segment end. A damaged range comes alone, raw (the third value says so):
    /// a replica copies it as it is, so both logs stay byte-identical.
    pub fn records_from(&self, from: i64, max: usize) -> Option<(Vec<u8>, i64, bool)> {
        let end = self.published();
        if from >= end {
            return Some((Vec::new(), from, false));
        }
        if let Some((_, b)) = self.damaged_at(from) {
            let stop = b.min(end).min(self.segment_end(from)?);
            let bytes = self.read_raw(from, (stop - from) as usize)?;
            let next = from + bytes.len() as i64;
            return Some((bytes, next, true));
        }
        let mut at = from;
        let mut len = 0usize;
        while at < end {
            if self.damaged_at(at).is_some() {
                break;
            }
            let head = self.read_raw(at, 8)?;
            if head.len() < 8 {
                break;
            }
            let size = i32::from_be_bytes([head[0], head[1], head[2], head[3]]).max(0) as usize;
            let magic = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            if magic == record::BLANK_MAGIC {
                len += 8;
                let bytes = self.read_raw(from, len)?;
                return Some((bytes, self.segment_end(at)?, false));
            }
            if size == 0 || (len > 0 && len + size > max) {
                break;
            }
            len += size;
            at += size as i64;
        }
        let bytes = self.read_raw(from, len)?;
        (bytes.len() == len).then_some((bytes, from + len as i64, false))
    }

    /// Walks the published records in `[from, to)` in order (from a record boundary), jumping
    /// over damaged ranges; `visit` gets each record with its position.
    pub fn scan_range(&self, from: i64, to: i64, visit: impl FnMut(i64, &RecordView<'_>, &[u8])) {
        self.scan_range_with(from, to, |_, _| true, visit)
    }

    /// As [`Self::scan_range`]; records for which `verify(position, view)` is false are checked
    /// for layout only, not CRC (replaying durable records whose bodies are not interpreted
    /// need not read every body byte twice).
    pub fn scan_range_with(
        &self,
        from: i64,
        to: i64,
        verify: impl Fn(i64, &RecordView<'_>) -> bool,
        mut visit: impl FnMut(i64, &RecordView<'_>, &[u8]),
    ) {
        let segs: Vec<Arc<Segment>> = self.segments.read().clone();
        let to = to.min(self.published());
        let mut at = from;
        for seg in segs.iter().filter(|s| s.end() > from) {
            if at < seg.base {
                at = seg.base;
            }
            while at < to && at < seg.end() {
                if let Some((_, b)) = self.damaged_at(at) {
                    at = b;
                    continue;
                }
                let pos = (at - seg.base) as usize;
                let rest = seg.slice(pos, seg.size - pos);
                match record::check_layout(rest, at) {
                    Ok(Scan::Record(n)) => {
                        let Ok(v) = RecordView::parse(&rest[..n]) else {
                            break;
                        };
                        if verify(at, &v)
                            && !matches!(record::check(rest, at), Ok(Scan::Record(m)) if m == n)
                        {
                            break;
                        }
                        visit(at, &v, &rest[..n]);
                        at += n as i64;
                    }
                    Ok(Scan::EndOfFile) => {
                        at = seg.end();
                    }
                    _ => break,
                }
            }
            if at >= to {
                break;
            }
        }
    }

    /// Cuts the log back to `to` (a record boundary) durably: the rest of that segment is
    /// zeroed and later segments are deleted. Used when a replica's tail diverged.
    pub fn truncate(&self, tail: &mut Tail, to: i64) -> io::Result<()> {
        let mut segs = self.segments.write();
        while let Some(last) = segs.last() {
            if last.base > to || (last.base == to && segs.len() > 1) {
                let s = segs.pop().expect("last exists");
                std::fs::remove_file(&s.path)?;
            } else {
                break;
            }
        }
        if let Some(last) = segs.last()
            && to >= last.base
            && to < last.end()
        {
            last.zero_from((to - last.base) as usize)?;
        }
        let next = match segs.last() {
            Some(s) if to < s.end() && to >= s.base => s.end(),
            _ => to,
        };
        drop(segs);
        sync_dir(&self.dir)?;
        tail.pos = to;
        self.published.store(to, Ordering::Release);
        self.flushed.fetch_min(to, Ordering::AcqRel);
        self.damaged.write().retain(|&(a, _)| a < to);
        self.alloc.want_from(next);
        Ok(())
    }

    /// Discards every segment and restarts the log empty at `base` (a slave whose log cannot
    /// continue its master's). Returns the removed files.
    pub fn reset_to(&self, tail: &mut Tail, base: i64) -> io::Result<Vec<PathBuf>> {
        let gone: Vec<Arc<Segment>> = self.segments.write().drain(..).collect();
        let mut paths = Vec::new();
        for s in gone {
            std::fs::remove_file(&s.path)?;
            paths.push(s.path.clone());
        }
        sync_dir(&self.dir)?;
        tail.pos = base;
        self.published.store(base, Ordering::Release);
        self.flushed.store(base, Ordering::Release);
        self.min.store(base, Ordering::Release);
        self.damaged.write().clear();
        self.alloc.want_from(base);
        Ok(paths)
    }

    /// Takes the segments wholly below `new_min` out of the log (retention); the caller deletes
    /// their files. Never the segment holding the tail.
    pub fn retire_below(&self, new_min: i64) -> Vec<Arc<Segment>> {
        let mut segs = self.segments.write();
        let keep_from = segs
            .iter()
            .position(|s| s.end() > new_min)
            .unwrap_or(segs.len().saturating_sub(1));
        let gone: Vec<Arc<Segment>> = segs.drain(..keep_from).collect();
        if let Some(first) = segs.first() {
            self.min.store(first.base, Ordering::Release);
        }
        self.damaged.write().retain(|&(_, b)| b > new_min);
        gone
    }

    /// Makes everything appended so far visible to readers.
    pub fn publish(&self, tail: &Tail) {
        self.published.store(tail.pos, Ordering::Release);
    }

    /// Copies `size` bytes at `phys`; `None` when that range is not (or no longer) stored.
    pub fn read(&self, phys: i64, size: usize) -> Option<Vec<u8>> {
        if phys < 0 || phys + size as i64 > self.published() {
            return None;
        }
        let segs = self.segments.read();
        let idx = segs.partition_point(|s| s.end() <= phys);
        let seg = segs.get(idx)?;
        let pos = (phys - seg.base) as usize;
        if phys < seg.base || pos + size > seg.size {
            return None;
        }
        Some(seg.slice(pos, size).to_vec())
    }

    /// Copies raw log bytes starting at `from`, at most `max` and never across a segment end.
    pub fn read_raw(&self, from: i64, max: usize) -> Option<Vec<u8>> {
        let end = self.published();
        if from >= end {
            return Some(Vec::new());
        }
        let segs = self.segments.read();
        let idx = segs.partition_point(|s| s.end() <= from);
        let seg = segs.get(idx)?;
        if from < seg.base {
            return None;
        }
        let pos = (from - seg.base) as usize;
        let len = max.min((end.min(seg.end()) - from) as usize);
        Some(seg.slice(pos, len).to_vec())
    }

    /// `target` rounded down to a page boundary of its segment: what a periodic flush covers, so
    /// that it never writes back the page appends are filling (on a disk with stable pages, an
    /// append touching a page under writeback waits for the I/O: the W3 latency tail).
    pub fn settled_end(&self, target: i64) -> i64 {
        let segs = self.segments.read();
        let idx = segs.partition_point(|s| s.end() <= target);
        match segs.get(idx) {
            Some(seg) if target > seg.base => seg.base + ((target - seg.base) & !4095),
            _ => target,
        }
    }

    /// Durably writes everything published, up to `target`. Returns whether a sync happened.
    pub fn flush_to(&self, target: i64) -> io::Result<bool> {
        let from = self.flushed();
        if target <= from {
            return Ok(false);
        }
        let segs: Vec<Arc<Segment>> = self.segments.read().clone();
        for seg in segs.iter().filter(|s| s.end() > from && s.base < target) {
            let start = (from.max(seg.base) - seg.base) as usize;
            let stop = (target.min(seg.end()) - seg.base) as usize;
            seg.flush_range(start, stop - start)?;
        }
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.flushed.fetch_max(target, Ordering::AcqRel);
        Ok(true)
    }

    pub fn shutdown(&self) {
        self.alloc.shutdown();
    }
}
