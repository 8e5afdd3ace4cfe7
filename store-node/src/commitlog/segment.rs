//! One memory-mapped commitlog file, named by the 20-digit global offset of its first byte.

use memmap2::MmapRaw;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

pub struct Segment {
    pub base: i64,
    pub size: usize,
    pub path: PathBuf,
    map: MmapRaw,
    _file: File,
}

// SAFETY: the mapping is shared memory; the commit log only writes bytes beyond the published
// write position (under its writer lock) and only reads bytes below it.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

pub fn file_name(base: i64) -> String {
    format!("{base:020}")
}

impl Segment {
    pub fn create(dir: &Path, base: i64, size: usize) -> io::Result<Self> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.set_len(size as u64)?;
        file.sync_all()?;
        sync_dir(dir)?;
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
            _file: file,
        })
    }

    /// Zeroes every non-zero byte in `[pos, size)` through the file (not the mapping, so
    /// untouched holes are never faulted into memory), visiting only data extents, then syncs.
    pub fn zero_from(&self, pos: usize) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileExt;
        const CHUNK: usize = 256 * 1024;
        let fd = self._file.as_raw_fd();
        let mut buf = vec![0u8; CHUNK];
        let zeros = vec![0u8; CHUNK];
        let mut at = pos as i64;
        let mut dirty = false;
        while (at as usize) < self.size {
            // SAFETY: lseek on a descriptor we own; SEEK_DATA skips holes of a sparse file.
            let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
            if data < 0 {
                break; // ENXIO: only holes remain.
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            let end = if hole < 0 {
                self.size as i64
            } else {
                hole.min(self.size as i64)
            };
            let mut off = data.max(at);
            while off < end {
                let len = CHUNK.min((end - off) as usize);
                let n = self._file.read_at(&mut buf[..len], off as u64)?;
                if n == 0 {
                    break;
                }
                if buf[..n].iter().any(|b| *b != 0) {
                    self._file.write_at(&zeros[..n], off as u64)?;
                    dirty = true;
                }
                off += n as i64;
            }
            at = end;
        }
        if dirty {
            self._file.sync_data()?;
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
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
