//! The commit log: fixed-size memory-mapped segments holding RocketMQ-layout records back to back.
//!
//! Appends happen under the store's writer lock through a [`Tail`]; readers see only bytes below
//! the published position. Recovery walks every segment, keeps the longest prefix of valid
//! records and durably zeroes whatever follows, so a crash right after recovery cannot resurrect
//! a torn tail (the weakness of Java's in-memory truncation, apache/rocketmq#10666).

pub mod segment;

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
    fsyncs: AtomicU64,
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

/// What recovery found.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub records: u64,
    pub valid_end: i64,
    /// Set when bytes after the last valid record were discarded.
    pub truncated: Option<String>,
}

impl CommitLog {
    /// Opens (or creates) the log in `dir`, calling `visit` for every valid record in order.
    pub fn open(
        dir: &Path,
        segment_size: usize,
        mut visit: impl FnMut(&RecordView<'_>, &[u8]),
    ) -> io::Result<(Self, Tail, RecoveryReport)> {
        std::fs::create_dir_all(dir)?;
        let mut files: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| name.parse::<i64>().ok().map(|b| (b, e.path())))
                    .flatten()
            })
            .collect();
        files.sort();
        let mut segments: Vec<Arc<Segment>> = Vec::new();
        let mut report = RecoveryReport::default();
        let mut end: i64 = files.first().map(|f| f.0).unwrap_or(0);
        let mut stop = false;
        for (base, path) in files {
            if stop || base != end {
                if !stop {
                    report.truncated = Some(format!(
                        "segment {} does not follow offset {end}",
                        path.display()
                    ));
                }
                std::fs::remove_file(&path)?;
                stop = true;
                continue;
            }
            let seg = Arc::new(Segment::open(&path, base)?);
            let mut pos = 0usize;
            loop {
                let rest = seg.slice(pos, seg.size - pos);
                match record::check(rest, seg.base + pos as i64) {
                    Ok(Scan::Record(n)) => {
                        let bytes = &rest[..n];
                        if let Ok(view) = RecordView::parse(bytes) {
                            visit(&view, bytes);
                        }
                        report.records += 1;
                        pos += n;
                        if pos == seg.size {
                            end = seg.end();
                            break;
                        }
                    }
                    Ok(Scan::EndOfFile) => {
                        end = seg.end();
                        break;
                    }
                    Ok(Scan::End) => {
                        end = seg.base + pos as i64;
                        zero_tail(&seg, pos)?;
                        stop = true;
                        break;
                    }
                    Err(e) => {
                        report.truncated =
                            Some(format!("at offset {}: {e}", seg.base + pos as i64));
                        zero_tail(&seg, pos)?;
                        end = seg.base + pos as i64;
                        stop = true;
                        break;
                    }
                }
            }
            segments.push(seg);
        }
        sync_dir(dir)?;
        report.valid_end = end;
        let log = Self {
            dir: dir.to_path_buf(),
            segment_size,
            segments: RwLock::new(segments),
            published: AtomicI64::new(end),
            flushed: AtomicI64::new(end),
            fsyncs: AtomicU64::new(0),
        };
        Ok((log, Tail { pos: end }, report))
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
        self.segments.read().first().map(|s| s.base).unwrap_or(0)
    }

    /// Appends one record at the tail, rolling to a new segment when it does not fit.
    /// Must be called with the store's writer lock held (the `&mut Tail` proves it).
    pub fn append(
        &self,
        tail: &mut Tail,
        input: &RecordInput<'_>,
        queue_offset: i64,
        store_timestamp: i64,
    ) -> Result<Appended, crate::error::StoreError> {
        let size = record::encoded_len(input);
        if size + record::END_FILE_MIN_BLANK > self.segment_size {
            return Err(crate::error::StoreError::BadRequest(format!(
                "record of {size} bytes does not fit a commitlog segment of {} bytes",
                self.segment_size
            )));
        }
        let seg = self.segment_for_append(tail, size)?;
        let pos = (tail.pos - seg.base) as usize;
        // SAFETY: writer lock held (we own `tail`), region is beyond the published position.
        let out = unsafe { seg.slice_mut(pos, size) };
        record::encode(input, queue_offset, tail.pos, store_timestamp, out)?;
        let phys = tail.pos;
        tail.pos += size as i64;
        Ok(Appended { phys, size })
    }

    /// Appends bytes that already form whole records at `tail.pos` (a replica copying its
    /// master). The bytes must start at a record boundary.
    pub fn append_raw(&self, tail: &mut Tail, bytes: &[u8]) -> io::Result<()> {
        let seg = self.segment_for_append(tail, bytes.len())?;
        let pos = (tail.pos - seg.base) as usize;
        // SAFETY: as in `append`.
        let out = unsafe { seg.slice_mut(pos, bytes.len()) };
        out.copy_from_slice(bytes);
        tail.pos += bytes.len() as i64;
        Ok(())
    }

    fn segment_for_append(&self, tail: &mut Tail, size: usize) -> io::Result<Arc<Segment>> {
        let last = self.segments.read().last().cloned();
        if let Some(seg) = last
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
        let seg = Arc::new(Segment::create(&self.dir, tail.pos, self.segment_size)?);
        self.segments.write().push(seg.clone());
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

    /// Whole records (and an end-of-segment marker) from `from`, at most about `max` bytes,
    /// never across a segment end. Returns the bytes and the offset after them.
    pub fn records_from(&self, from: i64, max: usize) -> Option<(Vec<u8>, i64)> {
        let end = self.published();
        if from >= end {
            return Some((Vec::new(), from));
        }
        let mut at = from;
        let mut len = 0usize;
        while at < end {
            let head = self.read_raw(at, 8)?;
            if head.len() < 8 {
                break;
            }
            let size = i32::from_be_bytes([head[0], head[1], head[2], head[3]]).max(0) as usize;
            let magic = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            if magic == record::BLANK_MAGIC {
                len += 8;
                let bytes = self.read_raw(from, len)?;
                return Some((bytes, self.segment_end(at)?));
            }
            if size == 0 || (len > 0 && len + size > max) {
                break;
            }
            len += size;
            at += size as i64;
        }
        let bytes = self.read_raw(from, len)?;
        (bytes.len() == len).then_some((bytes, from + len as i64))
    }

    /// Walks every published record in order.
    pub fn scan(&self, mut visit: impl FnMut(&RecordView<'_>, &[u8])) {
        let segs: Vec<Arc<Segment>> = self.segments.read().clone();
        let end = self.published();
        for seg in segs {
            let mut pos = 0usize;
            while seg.base + (pos as i64) < end && pos < seg.size {
                let rest = seg.slice(pos, seg.size - pos);
                match record::check(rest, seg.base + pos as i64) {
                    Ok(Scan::Record(n)) => {
                        if let Ok(v) = RecordView::parse(&rest[..n]) {
                            visit(&v, &rest[..n]);
                        }
                        pos += n;
                    }
                    _ => break,
                }
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
        drop(segs);
        sync_dir(&self.dir)?;
        tail.pos = to;
        self.published.store(to, Ordering::Release);
        self.flushed.fetch_min(to, Ordering::AcqRel);
        Ok(())
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
}

/// Durably zeroes everything after `pos` in a segment, so a stale tail can never be read as
/// records after the next crash.
fn zero_tail(seg: &Segment, pos: usize) -> io::Result<()> {
    seg.zero_from(pos)
}
