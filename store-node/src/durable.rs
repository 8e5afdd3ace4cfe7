//! File primitives every piece of store metadata uses: a framed, checksummed payload replaced
//! atomically (temp file, fsync, rename, fsync of the directory), space reservation, and
//! directory syncs. All of it blocks: callers run it on a store thread or at start, never on a
//! tokio worker.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

const FRAME_MAGIC: &[u8; 4] = b"RMQF";

/// Why a framed file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a framed rmq file (bad magic)")]
    BadMagic,
    #[error("truncated: the header announces {announced} payload bytes, {present} are present")]
    Truncated { announced: usize, present: usize },
    #[error("checksum mismatch")]
    Checksum,
}

/// `[magic 4][payload length u32][crc32 of payload u32][payload]`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(FRAME_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a framed buffer.
pub fn unframe(buf: &[u8]) -> Result<&[u8], FrameError> {
    if buf.len() < 12 || &buf[..4] != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    let crc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let payload = buf.get(12..12 + len).ok_or(FrameError::Truncated {
        announced: len,
        present: buf.len() - 12,
    })?;
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::Checksum);
    }
    Ok(payload)
}

/// Replaces `path` with a framed `payload`, durably: after a crash the file holds either the old
/// or the new content, whole.
pub fn write_framed(path: &Path, payload: &[u8]) -> io::Result<()> {
    write_atomic(path, &frame(payload))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Reads a framed file; `Ok(None)` when it does not exist.
pub fn read_framed(path: &Path) -> Result<Option<Vec<u8>>, FrameError> {
    let mut buf = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut buf)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    unframe(&buf).map(|p| Some(p.to_vec()))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reserves `len` bytes of real disk space for `file` (blocks allocated, not a sparse hole), so
/// that writing through a mapping can never hit an unallocated page: on a full disk that is a
/// SIGBUS that kills the process, where this returns `ENOSPC` as an ordinary error.
pub fn reserve(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
    // SAFETY: posix_fallocate on a descriptor we own; it returns an error number, not -1.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Whether every byte is zero, sixteen at a time (recovery checks whole extents with it).
pub fn all_zero(b: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128.
    let (head, mid, tail) = unsafe { b.align_to::<u128>() };
    head.iter().all(|x| *x == 0) && mid.iter().all(|x| *x == 0) && tail.iter().all(|x| *x == 0)
}

/// The ranges of `[from, end)` in `file` that may hold data, as the file system reports them
/// (SEEK_DATA / SEEK_HOLE): reserved but never written blocks of a segment are holes there, so
/// checking the unwritten rest of a 1 GiB segment for stray bytes costs nothing. Where the file
/// system cannot tell, the whole range.
pub fn data_ranges(file: &File, from: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut at = from;
    while at < end {
        let Ok(pos) = libc::off_t::try_from(at) else {
            break;
        };
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only holes remain
            }
            out.push((at, end));
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let start = (data as u64).max(at);
        let stop = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        if start >= end {
            break;
        }
        if stop > start {
            out.push((start, stop));
        }
        at = stop.max(start + 1);
    }
    Ok(out)
}

/// Creates `path` (which must not exist) with `len` bytes reserved, through a temporary name so
/// that a crash never leaves a half-reserved file under the final name.
pub fn create_reserved(path: &Path, len: u64) -> io::Result<File> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".alloc-{name}"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let done = reserve(&file, len).and_then(|()| file.sync_all());
    if let Err(e) = done {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if path.exists() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", path.display()),
        ));
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)?;
    Ok(file)
}

/// Whether a file name is one of our temporary names (left behind by a crash; safe to delete).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with(".alloc-") || (name.starts_with('.') && name.ends_with(".tmp"))
}

/// Modification time in nanoseconds since the epoch.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Used fraction (0.0–1.0) of the file system holding `path`, as `df` computes it (blocks
/// reserved for root count as used).
pub fn disk_usage(path: &Path) -> io::Result<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: statvfs fills a plain C struct; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let total = st.f_blocks as f64;
    if total <= 0.0 {
        return Ok(0.0);
    }
    let avail = st.f_bavail as f64;
    let free = st.f_bfree as f64;
    let used = total - free;
    // df: used / (used + available to unprivileged users).
    Ok((used / (used + avail).max(1.0)).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ranges_cover_every_written_byte_of_a_reserved_file() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seg");
        let f = create_reserved(&p, 8 << 20).unwrap();
        f.write_at(b"tail bytes", (5 << 20) + 123).unwrap();
        let ranges = data_ranges(&f, 0, 8 << 20).unwrap();
        let at = (5 << 20) + 123;
        assert!(
            ranges.iter().any(|&(a, b)| a <= at && at + 10 <= b),
            "{ranges:?}"
        );
        // Whatever the file system reports, bytes outside the ranges read as zeros.
        let mut all = vec![0u8; 8 << 20];
        f.read_exact_at(&mut all, 0).unwrap();
        let mut covered = vec![false; all.len()];
        for (a, b) in ranges {
            covered[a as usize..b as usize].fill(true);
        }
        assert!(all.iter().zip(&covered).all(|(x, c)| *c || *x == 0));
        assert!(all_zero(&all[..at as usize]));
        assert!(!all_zero(&all[..at as usize + 1]));
        assert!(all_zero(&[]));
    }

    #[test]
    fn framed_files_round_trip_and_reject_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        assert!(read_framed(&p).unwrap().is_none());
        write_framed(&p, b"hello").unwrap();
        assert_eq!(read_framed(&p).unwrap().unwrap(), b"hello");
        let mut raw = std::fs::read(&p).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(&p, &raw).unwrap();
        assert!(matches!(read_framed(&p), Err(FrameError::Checksum)));
        std::fs::write(&p, &raw[..10]).unwrap();
        assert!(read_framed(&p).is_err());
    }

    #[test]
    fn reserved_files_have_their_blocks() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seg");
        let f = create_reserved(&p, 1 << 20).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), 1 << 20);
        assert!(
            m.blocks() * 512 >= 1 << 20,
            "space is allocated, not sparse"
        );
        assert!(create_reserved(&p, 4096).is_err(), "never replaces a file");
        assert!(std::fs::read_dir(dir.path()).unwrap().count() == 1);
    }
}
