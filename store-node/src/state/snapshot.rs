//! State snapshots on disk: `state/snapshot-<base>.pb`, a framed `rmq.state.v1.Snapshot`. The
//! two newest are kept, so a damaged newest one falls back to the one before.

use crate::durable;
use prost::Message;
use rmq_proto::state::Snapshot;
use std::io;
use std::path::{Path, PathBuf};

const KEEP: usize = 2;

pub fn file_name(base: i64) -> String {
    format!("snapshot-{base:020}.pb")
}

fn base_of(p: &Path) -> Option<i64> {
    p.file_name()?
        .to_str()?
        .strip_prefix("snapshot-")?
        .strip_suffix(".pb")?
        .parse()
        .ok()
}

/// Snapshot files, newest first.
pub fn list(dir: &Path) -> Vec<(i64, PathBuf)> {
    let mut v: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| base_of(&e.path()).map(|b| (b, e.path())))
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|b| std::cmp::Reverse(b.0));
    v
}

/// Writes a snapshot durably and deletes all but the newest [`KEEP`].
pub fn write(dir: &Path, snap: &Snapshot) -> io::Result<PathBuf> {
    let path = dir.join(file_name(snap.base));
    durable::write_framed(&path, &snap.encode_to_vec())?;
    for (_, old) in list(dir).into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

pub fn read(path: &Path) -> Result<Snapshot, String> {
    let payload = durable::read_framed(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{} is missing", path.display()))?;
    Snapshot::decode(payload.as_slice()).map_err(|e| format!("{}: {e}", path.display()))
}

/// The newest readable snapshot, and what was wrong with any newer ones.
pub fn newest(dir: &Path) -> (Option<(PathBuf, Snapshot)>, Vec<String>) {
    let mut problems = Vec::new();
    for (_, p) in list(dir) {
        match read(&p) {
            Ok(s) => return (Some((p, s)), problems),
            Err(e) => problems.push(e),
        }
    }
    (None, problems)
}

/// The newest readable snapshot that reflects nothing at or beyond `limit` (for a slave cutting
/// its log back).
pub fn newest_within(dir: &Path, limit: i64) -> Option<Snapshot> {
    list(dir)
        .into_iter()
        .filter_map(|(_, p)| read(&p).ok())
        .find(|s| horizon(s) <= limit)
}

/// The furthest log position a snapshot reflects.
pub fn horizon(s: &Snapshot) -> i64 {
    let parts = s.pops.iter().map(|p| p.applied_to);
    let cat = s.catalog.as_ref().map(|c| c.applied_to).unwrap_or(0);
    parts.chain([cat, s.base]).max().unwrap_or(0)
}
