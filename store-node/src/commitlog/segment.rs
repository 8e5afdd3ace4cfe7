//! One memory-mapped commitlog file, named by the 20-digit global offset of its first byte.
//! Its space is reserved when it is created ([`crate::durable::reserve`]): writes through the
//! mapping can then never fault on an unallocated page, which on a full disk kills the process.

use crate::durable;
use memmap2::MmapRaw;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

pub struct Segment {
    pub base: i64,
    pub size: usize,
    pub path: PathBuf,
    map: MmapRaw,
    file: File,
    /// When this process last wrote into it (ms; 0 if never). Retention ages a segment by the
    /// later of this and the file's mtime: writes through a mapping into pages that are already
    /// dirty do not move the mtime, which can lag the last write by the writeback interval.
    last_write_ms: AtomicI64,
}

// SAFETY: the mapping is shared memory; the commit log only writes bytes beyond the published
// write position (under its writer lock) and only reads bytes below it.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

pub fn file_name(base: i64) -> String {
    format!("{base:020}")
}

impl Segment {
    /// Creates the segment file with its whole size reserved (blocking: allocator thread).
    pub fn create(dir: &Path, base: i64, size: usize) -> io::Result<Self> {
        let path = dir.join(file_name(base));
        let file = durable::create_reserved(&path, size as u64)?;
        Self::map(file, path, base)
    }

    pub fn open(path: &Path, base: i64) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::map(file, path.to_path_buf(), base)
    }

    fn map(file: File, path: PathBuf, base: i64) -> io::Result<Self> {
        let size = file.metadata()?.len() as usize;
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "empty segment file",
            ));
        }
        let map = MmapRaw::map_raw(&file)?;
        Ok(Self {
            base,
            size,
            path,
            map,
            file,
            last_write_ms: AtomicI64::new(0),
        })
    }

    /// Notes a write into this segment now.
    pub fn touch(&self, now_ms: i64) {
        self.last_write_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// When this process last wrote into it, if it did.
    pub fn last_write_ms(&self) -> Option<i64> {
        Some(self.last_write_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Makes sure every block of the file is allocated (a segment written before space
    /// reservation, or one whose reservation was lost, e.g. copied sparsely).
    pub fn ensure_reserved(&self) -> io::Result<()> {
        durable::reserve(&self.file, self.size as u64)
    }

    /// Zeroes every non-zero byte in `[pos, size)` through the file (not the mapping, so
    /// untouched holes are never faulted into memory), visiting only data extents, then syncs.
    pub fn zero_from(&self, pos: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        const CHUNK: usize = 256 * 1024;
        let mut buf = vec![0u8; CHUNK];
        let zeros = vec![0u8; CHUNK];
        let mut dirty = false;
        for (start, end) in durable::data_ranges(&self.file, pos as u64, self.size as u64)? {
            let mut off = start;
            while off < end {
                let len = CHUNK.min((end - off) as usize);
                let n = self.file.read_at(&mut buf[..len], off)?;
                if n == 0 {
                    break;
                }
                if !durable::all_zero(&buf[..n]) {
                    self.file.write_at(&zeros[..n], off)?;
                    dirty = true;
                }
                off += n as u64;
            }
        }
        if dirty {
            self.file.sync_data()?;
        }
        Ok(())
    }

    pub fn end(&self) -> i64 {
        self.base + self.size as i64
    }

    /// Bytes `[pos, pos+len)` of this segment for reading.
    ///
    /// Callers read only below the commit log's published write position.
    pub fn slice(&self, pos: usize, len: usize) -> &[u8] {
        assert!(pos + len <= self.size);
        // SAFETY: in bounds; see the type-level note on concurrent access.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(pos), len) }
    }

    /// Writable bytes `[pos, pos+len)`.
    ///
    /// # Safety
    /// The caller holds the commit log's writer lock and writes only at or beyond the published
    /// write position, so no reader observes the bytes while they change.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, pos: usize, len: usize) -> &mut [u8] {
        assert!(pos + len <= self.size);
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(pos), len) }
    }

    /// Makes `[pos, pos+len)` durable (msync).
    pub fn flush_range(&self, pos: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(pos, len)
    }

    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.file.metadata()
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    durable::sync_dir(dir)
}
