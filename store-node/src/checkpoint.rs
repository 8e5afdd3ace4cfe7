//! The durable checkpoint: how far the commit log is known to be flushed, where it starts, and
//! the newest records (for a slave's hello). Recovery trusts it to tell a torn tail (after
//! `flushed`, may be cut) from damage (before it, never cut).
//!
//! Two 4 KiB slots written alternately, each with a sequence number and a CRC, so a torn write
//! of one slot leaves the other readable (Apache's 4 KiB checkpoint has no checksum at all).
//! Writes go to the page cache at every flush round and reach the disk at least once a second:
//! after a power loss `flushed` may be up to a second behind the log, which only widens the span
//! treated as tail.

use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const SLOT: usize = 4096;
const MAGIC: &[u8; 8] = b"RMQCKPT1";
/// Most recent records kept for the replication hello.
pub const RECENT: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointValues {
    pub seq: u64,
    /// Every log byte in `[log_min, flushed)` was durable (and valid) when this was written.
    pub flushed: i64,
    /// The first retained offset: segments below it were deleted by retention.
    pub log_min: i64,
    /// Set by a clean shutdown, cleared by the first write after start.
    pub clean: bool,
    /// Newest records as (offset, size), oldest first.
    pub recent: Vec<(i64, u32)>,
}

impl CheckpointValues {
    fn encode(&self) -> [u8; SLOT] {
        let mut b = [0u8; SLOT];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b[16..24].copy_from_slice(&self.flushed.to_be_bytes());
        b[24..32].copy_from_slice(&self.log_min.to_be_bytes());
        b[32] = u8::from(self.clean);
        let n = self.recent.len().min(RECENT);
        b[33..35].copy_from_slice(&(n as u16).to_be_bytes());
        let mut at = 35;
        for (off, size) in self.recent.iter().skip(self.recent.len() - n) {
            b[at..at + 8].copy_from_slice(&off.to_be_bytes());
            b[at + 8..at + 12].copy_from_slice(&size.to_be_bytes());
            at += 12;
        }
        let crc = crc32fast::hash(&b[..SLOT - 4]);
        b[SLOT - 4..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < SLOT || &b[..8] != MAGIC {
            return None;
        }
        let crc = u32::from_be_bytes([b[SLOT - 4], b[SLOT - 3], b[SLOT - 2], b[SLOT - 1]]);
        if crc32fast::hash(&b[..SLOT - 4]) != crc {
            return None;
        }
        let i64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            i64::from_be_bytes(a)
        };
        let n = (u16::from_be_bytes([b[33], b[34]]) as usize).min(RECENT);
        let recent = (0..n)
            .map(|i| {
                let at = 35 + i * 12;
                let size = u32::from_be_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]);
                (i64_at(at), size)
            })
            .collect();
        Some(Self {
            seq: i64_at(8) as u64,
            flushed: i64_at(16),
            log_min: i64_at(24),
            clean: b[32] == 1,
            recent,
        })
    }
}

/// What reading the checkpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    Missing,
    /// Neither slot is readable.
    Damaged,
    Valid(CheckpointValues),
}

/// Reads the checkpoint without writing anything.
pub fn load(path: &Path) -> io::Result<Loaded> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e),
    };
    let a = bytes.get(..SLOT).and_then(CheckpointValues::decode);
    let b = bytes.get(SLOT..2 * SLOT).and_then(CheckpointValues::decode);
    Ok(match (a, b) {
        (Some(a), Some(b)) => Loaded::Valid(if a.seq >= b.seq { a } else { b }),
        (Some(v), None) | (None, Some(v)) => Loaded::Valid(v),
        (None, None) => Loaded::Damaged,
    })
}

struct Inner {
    values: CheckpointValues,
    last_sync: Instant,
    unsynced: bool,
}

/// The open checkpoint, shared by the flush thread and the housekeeper.
pub struct Checkpoint {
    file: File,
    inner: Mutex<Inner>,
}

/// How often the checkpoint reaches the disk at least.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

impl Checkpoint {
    /// Opens (creating) the checkpoint for writing, starting from `values`.
    pub fn open(path: &Path, mut values: CheckpointValues) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        values.clean = false;
        let cp = Self {
            file,
            inner: Mutex::new(Inner {
                values,
                last_sync: Instant::now(),
                unsynced: true,
            }),
        };
        Ok(cp)
    }

    pub fn values(&self) -> CheckpointValues {
        self.inner.lock().values.clone()
    }

    /// Applies `change` and writes the next slot (page cache); syncs when a second has passed
    /// since the last sync or `sync` is asked for.
    pub fn update(&self, sync: bool, change: impl FnOnce(&mut CheckpointValues)) -> io::Result<()> {
        let mut g = self.inner.lock();
        change(&mut g.values);
        g.values.seq += 1;
        let slot = (g.values.seq % 2) * SLOT as u64;
        self.file.write_all_at(&g.values.encode(), slot)?;
        g.unsynced = true;
        if sync || g.last_sync.elapsed() >= SYNC_EVERY {
            self.file.sync_data()?;
            g.last_sync = Instant::now();
            g.unsynced = false;
        }
        Ok(())
    }

    /// Syncs if anything was written since the last sync.
    pub fn sync_if_due(&self) -> io::Result<()> {
        let mut g = self.inner.lock();
        if g.unsynced && g.last_sync.elapsed() >= SYNC_EVERY {
            self.file.sync_data()?;
            g.last_sync = Instant::now();
            g.unsynced = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp");
        assert_eq!(load(&p).unwrap(), Loaded::Missing);
        let cp = Checkpoint::open(&p, CheckpointValues::default()).unwrap();
        cp.update(true, |v| {
            v.flushed = 100;
            v.recent = vec![(0, 50), (50, 50)];
        })
        .unwrap();
        cp.update(true, |v| v.flushed = 200).unwrap();
        let Loaded::Valid(v) = load(&p).unwrap() else {
            panic!("valid")
        };
        assert_eq!((v.flushed, v.recent.len()), (200, 2));
        // Tear the newest slot: the previous one is used.
        let mut raw = std::fs::read(&p).unwrap();
        let newest = (v.seq % 2) as usize * SLOT;
        raw[newest + 20] ^= 0xff;
        std::fs::write(&p, &raw).unwrap();
        let Loaded::Valid(v) = load(&p).unwrap() else {
            panic!("valid")
        };
        assert_eq!(v.flushed, 100);
        let other = SLOT - newest;
        raw[other + 20] ^= 0xff;
        std::fs::write(&p, &raw).unwrap();
        assert_eq!(load(&p).unwrap(), Loaded::Damaged);
    }
}
