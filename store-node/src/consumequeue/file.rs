//! One consume-queue file: fixed 20-byte units `[commitlog offset i64][size i32][tags code i64]`
//! (Apache's layout), memory-mapped. The file has its full length from the start but its space
//! is reserved in chunks ahead of the units being written, so a write through the mapping never
//! meets an unallocated page (a SIGBUS on a full disk), while a queue holding a few messages
//! costs 64 KiB of disk, not 6 MB.

use crate::durable;
use memmap2::MmapRaw;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const UNIT: usize = 20;
/// Space reserved at a time.
pub const RESERVE_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    pub phys: i64,
    pub size: u32,
    pub tags_code: i64,
}

pub struct CqFile {
    /// Logical offset of the first unit.
    pub start: i64,
    pub units: i64,
    pub path: PathBuf,
    map: MmapRaw,
    file: File,
    /// Bytes from the start known to have their blocks.
    reserved: AtomicUsize,
}

// SAFETY: shared memory written by the store's single dispatcher (under its writer lock) at
// offsets not yet published to readers; readers only read below the published maximum.
unsafe impl Send for CqFile {}
unsafe impl Sync for CqFile {}

/// A file's name: the byte offset of its first unit, 20 digits (as Apache names them).
pub fn file_name(start: i64) -> String {
    format!("{:020}", start * UNIT as i64)
}

impl CqFile {
    pub fn create(dir: &Path, start: i64, units: i64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(file_name(start));
        let len = (units as u64) * UNIT as u64;
        let file = durable::create_reserved(&path, (RESERVE_CHUNK as u64).min(len))?;
        file.set_len(len)?;
        Self::map(file, path, start)
    }

    pub fn open(path: &Path, start: i64) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::map(file, path.to_path_buf(), start)
    }

    fn map(file: File, path: PathBuf, start: i64) -> io::Result<Self> {
        let len = file.metadata()?.len() as usize;
        if len == 0 || !len.is_multiple_of(UNIT) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {len} bytes is not a whole number of units",
                    path.display()
                ),
            ));
        }
        let map = MmapRaw::map_raw(&file)?;
        Ok(Self {
            start,
            units: (len / UNIT) as i64,
            path,
            map,
            file,
            reserved: AtomicUsize::new(0),
        })
    }

    /// Reserves blocks so that the unit at `o` (and a chunk beyond) can be written.
    pub fn reserve_through(&self, o: i64) -> io::Result<()> {
        let need = ((o - self.start + 1).max(0) as usize * UNIT).min(self.units as usize * UNIT);
        if need <= self.reserved.load(Ordering::Acquire) {
            return Ok(());
        }
        let upto = (need + RESERVE_CHUNK).min(self.units as usize * UNIT);
        durable::reserve(&self.file, upto as u64)?;
        self.reserved.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Whether writing the unit at `o` needs a reservation first (or soon: within half a
    /// chunk, so the housekeeper can do it ahead).
    pub fn needs_reserve(&self, o: i64) -> bool {
        let need = ((o - self.start + 1).max(0) as usize * UNIT + RESERVE_CHUNK / 2)
            .min(self.units as usize * UNIT);
        need > self.reserved.load(Ordering::Acquire)
    }

    pub fn end(&self) -> i64 {
        self.start + self.units
    }

    /// The unit for logical offset `o` (which must lie in this file); `None` for a zero unit.
    pub fn get(&self, o: i64) -> Option<CqEntry> {
        let i = (o - self.start) as usize;
        debug_assert!(i < self.units as usize);
        // SAFETY: in bounds (checked by the caller's file lookup and the assert above).
        let b = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(i * UNIT), UNIT) };
        let phys = i64::from_be_bytes(b[0..8].try_into().unwrap_or([0; 8]));
        let size = i32::from_be_bytes(b[8..12].try_into().unwrap_or([0; 4]));
        let tags = i64::from_be_bytes(b[12..20].try_into().unwrap_or([0; 8]));
        (size > 0).then_some(CqEntry {
            phys,
            size: size as u32,
            tags_code: tags,
        })
    }

    /// Writes the unit for `o`.
    ///
    /// # Safety
    /// Single writer, and `o` is not yet visible to readers (at or beyond the queue's maximum),
    /// or is being rewritten with identical content during replay.
    pub unsafe fn put(&self, o: i64, e: &CqEntry) {
        let i = (o - self.start) as usize;
        debug_assert!((i + 1) * UNIT <= self.reserved.load(Ordering::Acquire));
        assert!(i < self.units as usize);
        let mut b = [0u8; UNIT];
        b[0..8].copy_from_slice(&e.phys.to_be_bytes());
        b[8..12].copy_from_slice(&(e.size as i32).to_be_bytes());
        b[12..20].copy_from_slice(&e.tags_code.to_be_bytes());
        // SAFETY: in bounds; see the function's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), self.map.as_mut_ptr().add(i * UNIT), UNIT)
        };
    }

    /// Makes units `[from, to)` durable.
    pub fn flush(&self, from: i64, to: i64) -> io::Result<()> {
        let a = (from - self.start).clamp(0, self.units) as usize * UNIT;
        let b = (to - self.start).clamp(0, self.units) as usize * UNIT;
        if b <= a {
            return Ok(());
        }
        self.map.flush_range(a, b - a)
    }
}
