//! One consume-queue file: fixed 20-byte units `[commitlog offset i64][size i32][tags code i64]`
//! (Apache's layout), memory-mapped, its space reserved when it is created.

use crate::durable;
use memmap2::MmapRaw;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

pub const UNIT: usize = 20;

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
    _file: File,
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
        let file = durable::create_reserved(&path, (units as u64) * UNIT as u64)?;
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
            _file: file,
        })
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

    /// Zeroes units `[from, end)` (a cut tail's entries, so they can never be read again).
    pub fn zero_from(&self, from: i64) {
        let i = (from - self.start).clamp(0, self.units) as usize;
        let len = (self.units as usize - i) * UNIT;
        // SAFETY: in bounds; called by the single writer on units beyond the readable maximum.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(i * UNIT), 0, len) };
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
