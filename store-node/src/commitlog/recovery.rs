//! Recovery, in two steps: [`plan`] reads the commit log and decides everything without writing
//! a byte; [`Plan::execute`] then makes the changes. A refusal therefore leaves every file as it
//! was.
//!
//! The rule: only bytes after the checkpoint's durable `flushed` offset can be a torn write, and
//! only a torn write is cut (zeroed, its bytes first copied to `quarantine/`). Anything else —
//! a flipped byte in an old segment, a garbage or foreign file, a missing or truncated segment,
//! zeroed durable data — is damage: the node refuses to start and names file, offset and cause.
//! `startWithDamagedCommitLog=true` starts it anyway, skipping exactly the damaged records (the
//! scan resynchronises on the next valid record); the accepted damage is remembered in the seal
//! manifest, so later starts do not refuse again for it.
//!
//! Start-up reads only what may have changed: sealed segments whose length and modification
//! time match the manifest are trusted unread; segments that changed, or were never sealed, are
//! verified record by record; the active segment is verified from the replay start (the newest
//! snapshot) on.

use super::seals::Seals;
use super::segment::file_name;
use crate::checkpoint::{CheckpointValues, Loaded};
use crate::durable;
use rmq_common::record::{self, BLANK_MAGIC, MAGIC_V1, MAGIC_V2, Scan};
use rmq_proto::state::DamagedRange;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A commit-log file found on disk.
#[derive(Debug, Clone)]
pub struct SegFile {
    pub base: i64,
    pub path: PathBuf,
    pub len: i64,
}

impl SegFile {
    pub fn end(&self) -> i64 {
        self.base + self.len
    }
}

/// One damaged range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub file: PathBuf,
    /// Global log offset where the damage starts, and its length (0: unknown).
    pub offset: i64,
    pub length: i64,
    pub cause: String,
    /// Accepted by an operator before (seal manifest): not a reason to refuse.
    pub known: bool,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let base: i64 = self
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        write!(
            f,
            "{}: offset {} (byte {} of the file){}: {}",
            self.file.display(),
            self.offset,
            self.offset - base,
            if self.length > 0 {
                format!(", {} bytes", self.length)
            } else {
                String::new()
            },
            self.cause
        )
    }
}

/// Why the node does not start.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub damage: Vec<Damage>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "the commit log holds damage before its last durable checkpoint; refusing to start \
             (no file was changed):"
        )?;
        for d in &self.damage {
            writeln!(f, "  {d}")?;
        }
        write!(
            f,
            "Set startWithDamagedCommitLog=true to start anyway: every record but the damaged ones \
             is served, the damaged ones are skipped, counted (rocketmq_storage_damaged_records_total) \
             and logged. Restoring the named files from a replica or backup is the better fix."
        )
    }
}

/// A torn tail to cut.
#[derive(Debug, Clone)]
pub struct Cut {
    pub segment: SegFile,
    /// Position in the segment where the torn write starts.
    pub pos: usize,
    /// End of non-zero bytes after `pos` (what the quarantine copy holds).
    pub nonzero_end: usize,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Segments kept, in order.
    pub segments: Vec<SegFile>,
    /// Empty segments prepared after the end, to hand to the allocator.
    pub prepared: Vec<SegFile>,
    pub valid_end: i64,
    pub log_min: i64,
    pub replay_from: i64,
    pub flushed: i64,
    pub cut: Option<Cut>,
    /// Later segments moved aside after a cut.
    pub quarantine: Vec<SegFile>,
    /// Segments retention had retired (below the checkpoint's log start), and our temporary
    /// files: deleted.
    pub remove: Vec<PathBuf>,
    /// Damage found (all accepted when the plan exists).
    pub damage: Vec<Damage>,
    /// Segments verified during planning, by base: (complete, accepted damage).
    pub verified: Vec<(i64, bool, Vec<DamagedRange>)>,
    pub notes: Vec<String>,
}

pub struct Inputs<'a> {
    pub dir: &'a Path,
    pub checkpoint: &'a Loaded,
    pub seals: &'a Result<Seals, String>,
    /// Where replay starts (the newest snapshot's base; 0 without one).
    pub replay_from: i64,
    pub skip_damaged: bool,
}

fn segment_files(dir: &Path, remove: &mut Vec<PathBuf>) -> io::Result<Vec<SegFile>> {
    let mut v = Vec::new();
    if !dir.exists() {
        return Ok(v);
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if crate::durable::is_temporary(&name) {
            remove.push(e.path());
            continue;
        }
        if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(base) = name.parse::<i64>() else {
            continue;
        };
        v.push(SegFile {
            base,
            path: e.path(),
            len: e.metadata()?.len() as i64,
        });
    }
    v.sort_by_key(|s| s.base);
    Ok(v)
}

/// Reads `[pos, pos+len)` of a file (short at its end).
fn read_at(f: &File, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = f.read_at(&mut buf[got..], pos + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}

/// What a bounded reader of one segment file gives the walker.
struct SegReader {
    file: File,
    len: usize,
}

impl SegReader {
    fn open(s: &SegFile) -> io::Result<Self> {
        Ok(Self {
            file: File::open(&s.path)?,
            len: s.len.max(0) as usize,
        })
    }

    /// The record-sized window at `pos` (a header first, then the whole announced record).
    fn window(&self, pos: usize) -> io::Result<Vec<u8>> {
        let head = read_at(&self.file, pos as u64, 8.min(self.len - pos))?;
        if head.len() < 8 {
            return Ok(head);
        }
        let total = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let magic = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if magic == BLANK_MAGIC || total <= 8 {
            return Ok(head);
        }
        let want = (total as usize).min(self.len - pos);
        read_at(&self.file, pos as u64, want)
    }

    /// Whether `[pos, len)` holds only zeros (only the file's data extents are read).
    fn is_zero_from(&self, pos: usize) -> io::Result<bool> {
        const CHUNK: usize = 1 << 20;
        for (start, end) in durable::data_ranges(&self.file, pos as u64, self.len as u64)? {
            let mut at = start;
            while at < end {
                let b = read_at(&self.file, at, CHUNK.min((end - at) as usize))?;
                if !durable::all_zero(&b) {
                    return Ok(false);
                }
                at += b.len().max(1) as u64;
            }
        }
        Ok(true)
    }

    /// Just past the last non-zero byte at or after `pos` (`pos` when all zero), read from the
    /// end of the file's data extents backwards.
    fn nonzero_end(&self, pos: usize) -> io::Result<usize> {
        const CHUNK: u64 = 1 << 20;
        let ranges = durable::data_ranges(&self.file, pos as u64, self.len as u64)?;
        for (start, end) in ranges.into_iter().rev() {
            let mut hi = end;
            while hi > start {
                let lo = hi.saturating_sub(CHUNK).max(start);
                let b = read_at(&self.file, lo, (hi - lo) as usize)?;
                if let Some(i) = b.iter().rposition(|x| *x != 0) {
                    return Ok(lo as usize + i + 1);
                }
                hi = lo;
            }
        }
        Ok(pos)
    }

    /// The next position after `pos` where a valid record starts (resynchronisation after
    /// damage): its magic, its physical-offset field equal to its position, and its CRCs.
    fn resync(&self, base: i64, pos: usize) -> io::Result<Option<usize>> {
        const CHUNK: usize = 4 << 20;
        let mut at = pos + 1;
        while at + 8 <= self.len {
            let n = CHUNK.min(self.len - at);
            let b = read_at(&self.file, at as u64, n + 32)?;
            for i in 0..n {
                if i + 36 > b.len() {
                    break;
                }
                let magic = u32::from_be_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]);
                if magic != MAGIC_V1 && magic != MAGIC_V2 && magic != BLANK_MAGIC {
                    continue;
                }
                let q = at + i;
                if magic == BLANK_MAGIC {
                    let total = i32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                    if total > 0 && q + total as usize == self.len {
                        return Ok(Some(q));
                    }
                    continue;
                }
                let phys = i64::from_be_bytes(b[i + 28..i + 36].try_into().unwrap_or([0; 8]));
                if phys != base + q as i64 {
                    continue;
                }
                let w = self.window(q)?;
                if matches!(record::check(&w, base + q as i64), Ok(Scan::Record(_))) {
                    return Ok(Some(q));
                }
            }
            at += n;
        }
        Ok(None)
    }
}

/// A torn write leaves a partial record (right magic, wrong CRC or cut short) or zeros where
/// the next record would start: the page holding the header went to disk with the previous
/// record's end. Non-zero bytes without a record magic are not a torn write.
///
/// The header itself can be torn too (it may straddle a page or sector boundary): then what is
/// there is a prefix of a header — the start of a record magic at most — followed by zeros.
fn looks_torn(window: &[u8]) -> bool {
    if window.len() >= 8 {
        let magic = u32::from_be_bytes([window[4], window[5], window[6], window[7]]);
        if magic == MAGIC_V1 || magic == MAGIC_V2 {
            return true;
        }
    }
    let m: Vec<u8> = window.iter().skip(4).take(4).copied().collect();
    let prefix_of = |magic: u32| {
        let want = magic.to_be_bytes();
        let k = m
            .iter()
            .zip(want.iter())
            .take_while(|(a, b)| a == b)
            .count();
        m[k..].iter().all(|b| *b == 0)
    };
    let after_header_zero = window.iter().skip(8).take(4096).all(|b| *b == 0);
    (prefix_of(MAGIC_V1) || prefix_of(MAGIC_V2)) && after_header_zero
}

fn cause_of(e: &record::RecordError) -> String {
    match e {
        record::RecordError::BodyCrc | record::RecordError::RecordCrc => {
            format!("{e}: the record's bytes changed after it was written")
        }
        other => other.to_string(),
    }
}

enum Walk {
    /// The segment's records end at this position (a blank marker, its end, or zeros).
    End(usize),
    /// A torn write starts here (tail region, may be cut).
    Torn(usize),
}

/// Decides how to recover the commit log in `inp.dir`. Reads only.
pub fn plan(inp: &Inputs<'_>) -> io::Result<Result<Plan, Refusal>> {
    let mut p = Plan::default();
    let mut segs = segment_files(inp.dir, &mut p.remove)?;
    let (flushed, log_min) = match inp.checkpoint {
        Loaded::Valid(CheckpointValues {
            flushed, log_min, ..
        }) => (*flushed, *log_min),
        Loaded::Missing if segs.is_empty() => (0, 0),
        other => {
            p.notes.push(format!(
                "checkpoint {}: every invalid record counts as damage",
                if matches!(other, Loaded::Damaged) {
                    "damaged"
                } else {
                    "missing"
                }
            ));
            (i64::MAX, segs.first().map(|s| s.base).unwrap_or(0))
        }
    };
    p.flushed = flushed;
    let seals = match inp.seals {
        Ok(s) => s.clone(),
        Err(e) => {
            p.notes.push(format!(
                "seal manifest unreadable ({e}): every segment is verified"
            ));
            Seals::default()
        }
    };
    // Segments below the checkpoint's start were retired by retention before a crash.
    let retired: Vec<SegFile> = segs.iter().filter(|s| s.base < log_min).cloned().collect();
    segs.retain(|s| s.base >= log_min);
    p.remove.extend(retired.into_iter().map(|s| s.path));
    p.log_min = log_min;
    let mut damage: Vec<Damage> = Vec::new();

    // Trailing empty segments are prepared ones (the allocator creates them ahead).
    let mut prepared = Vec::new();
    while let Some(last) = segs.last() {
        let empty = last.len == 0 || SegReader::open(last)?.is_zero_from(0)?;
        if !empty {
            break;
        }
        prepared.push(segs.pop().expect("last exists"));
    }
    prepared.reverse();

    let durable_data = flushed > log_min && flushed != i64::MAX;
    match segs.first() {
        None if durable_data => damage.push(Damage {
            file: inp.dir.join(file_name(log_min)),
            offset: log_min,
            length: flushed - log_min,
            cause: format!(
                "no segment holds data, but the checkpoint says [{log_min}, {flushed}) was \
                 written durably: the files are gone"
            ),
            known: false,
        }),
        Some(first) if first.base > log_min && flushed != i64::MAX => damage.push(Damage {
            file: inp.dir.join(file_name(log_min)),
            offset: log_min,
            length: first.base - log_min,
            cause: format!(
                "segment missing: the log starts at {log_min} but the first file starts at {}",
                first.base
            ),
            known: false,
        }),
        _ => {}
    }
    let replay_from = inp
        .replay_from
        .max(segs.first().map(|s| s.base).unwrap_or(log_min));
    let mut end = segs.first().map(|s| s.base).unwrap_or(log_min);
    let mut cut: Option<Cut> = None;
    let mut after_cut: Vec<SegFile> = Vec::new();
    let n = segs.len();
    for (i, seg) in segs.iter().enumerate() {
        if cut.is_some() {
            after_cut.push(seg.clone());
            continue;
        }
        if seg.base != end {
            damage.push(Damage {
                file: seg.path.clone(),
                offset: end,
                length: (seg.base - end).max(0),
                cause: format!(
                    "segment does not follow: the previous data ends at {end}, this file starts \
                     at {} (a file is missing, truncated or does not belong here)",
                    seg.base
                ),
                known: false,
            });
        }
        let last = i + 1 == n;
        let meta = std::fs::metadata(&seg.path)?;
        let trusted = !last && seals.is_sealed(seg.base) && seals.unchanged(seg.base, &meta);
        let known = seals.accepted_damage(seg.base).to_vec();
        if trusted && seg.end() <= replay_from {
            for k in &known {
                damage.push(Damage {
                    file: seg.path.clone(),
                    offset: k.offset,
                    length: k.length,
                    cause: k.cause.clone(),
                    known: true,
                });
            }
            end = seg.end();
            continue;
        }
        let from = if trusted || last {
            (replay_from - seg.base).clamp(0, seg.len) as usize
        } else {
            0
        };
        let reader = SegReader::open(seg)?;
        let mut found: Vec<DamagedRange> = Vec::new();
        let walk = walk_segment(
            seg,
            &reader,
            from,
            flushed,
            inp.skip_damaged,
            &known,
            &mut damage,
            &mut found,
        )?;
        if !trusted {
            p.verified.push((seg.base, !last, found));
        }
        match walk {
            Walk::End(pos) => {
                if !last && pos < seg.len as usize {
                    // Zeros before the segment's end, with more segments after it.
                    let at = seg.base + pos as i64;
                    if at < flushed {
                        damage.push(Damage {
                            file: seg.path.clone(),
                            offset: at,
                            length: seg.len - pos as i64,
                            cause: "zeros where durable records should be (the file was \
                                    truncated or overwritten)"
                                .into(),
                            known: false,
                        });
                        end = seg.end();
                    } else {
                        cut = Some(Cut {
                            segment: seg.clone(),
                            pos,
                            nonzero_end: reader.nonzero_end(pos)?,
                        });
                        end = at;
                    }
                } else {
                    end = if pos >= seg.len as usize {
                        seg.end()
                    } else {
                        seg.base + pos as i64
                    };
                }
            }
            Walk::Torn(pos) => {
                cut = Some(Cut {
                    segment: seg.clone(),
                    pos,
                    nonzero_end: reader.nonzero_end(pos)?,
                });
                end = seg.base + pos as i64;
            }
        }
    }
    // After a cut, later segments hold only undurable data (or are foreign).
    for s in &after_cut {
        let r = SegReader::open(s)?;
        let w = r.window(0)?;
        if !matches!(record::check(&w, s.base), Ok(Scan::Record(_))) && !r.is_zero_from(0)? {
            damage.push(Damage {
                file: s.path.clone(),
                offset: s.base,
                length: s.len,
                cause: "a file that does not start with a commit-log record follows the log's \
                        torn tail: it was not written by this node"
                    .into(),
                known: false,
            });
        }
    }
    let refused: Vec<Damage> = damage.iter().filter(|d| !d.known).cloned().collect();
    if !refused.is_empty() && !inp.skip_damaged {
        return Ok(Err(Refusal { damage: refused }));
    }
    if cut.is_some() {
        p.quarantine = after_cut;
        // Prepared segments no longer follow the cut log: they hold only zeros.
        p.remove.extend(prepared.drain(..).map(|s| s.path));
    } else {
        let mut expect = segs.last().map(|s| s.end()).unwrap_or(end);
        if end != expect && !segs.is_empty() {
            // The log ends inside its last segment: prepared ones follow that segment's end.
            expect = segs.last().map(|s| s.end()).unwrap_or(end);
        }
        for s in prepared {
            if s.base == expect && s.len > 0 {
                expect = s.end();
                p.prepared.push(s);
            } else {
                p.remove.push(s.path);
            }
        }
    }
    p.segments = segs
        .into_iter()
        .filter(|s| !p.quarantine.iter().any(|q| q.base == s.base))
        .collect();
    p.valid_end = end;
    p.replay_from = replay_from.min(end);
    p.cut = cut;
    p.damage = damage;
    Ok(Ok(p))
}

#[allow(clippy::too_many_arguments)]
fn walk_segment(
    seg: &SegFile,
    r: &SegReader,
    from: usize,
    flushed: i64,
    skip: bool,
    known: &[DamagedRange],
    damage: &mut Vec<Damage>,
    found: &mut Vec<DamagedRange>,
) -> io::Result<Walk> {
    let len = seg.len.max(0) as usize;
    let mut pos = from;
    while pos < len {
        let at = seg.base + pos as i64;
        if let Some(k) = known.iter().find(|k| k.offset == at) {
            damage.push(Damage {
                file: seg.path.clone(),
                offset: k.offset,
                length: k.length,
                cause: k.cause.clone(),
                known: true,
            });
            found.push(k.clone());
            pos = ((k.offset + k.length - seg.base).max(pos as i64 + 1) as usize).min(len);
            continue;
        }
        let w = r.window(pos)?;
        let verdict = record::check(&w, at);
        let err = match verdict {
            Ok(Scan::Record(n)) => {
                pos += n;
                continue;
            }
            Ok(Scan::EndOfFile) => return Ok(Walk::End(len)),
            Ok(Scan::End) => {
                if at < flushed {
                    // Durable data cannot be zeros.
                    "zeros where durable records should be (the file was truncated or \
                     overwritten)"
                        .to_string()
                } else {
                    return Ok(Walk::End(pos));
                }
            }
            Err(e) => {
                if at >= flushed && looks_torn(&w) {
                    return Ok(Walk::Torn(pos));
                }
                if at >= flushed {
                    format!("{}; not a torn write (no record starts here)", cause_of(&e))
                } else {
                    cause_of(&e)
                }
            }
        };
        // Damage at `pos`: skip to the next valid record (or the segment's end).
        let next = r.resync(seg.base, pos)?;
        let stop = next.unwrap_or(len);
        let range = DamagedRange {
            offset: at,
            length: (stop - pos) as i64,
            cause: err.clone(),
        };
        damage.push(Damage {
            file: seg.path.clone(),
            offset: at,
            length: range.length,
            cause: err,
            known: false,
        });
        found.push(range);
        if !skip {
            // Keep looking for more damage to report, but without reading a whole huge file
            // twice: the first problem per segment is enough to refuse.
            return Ok(Walk::End(len));
        }
        pos = stop;
    }
    Ok(Walk::End(len))
}

impl Plan {
    /// Carries the plan out: removes retired and temporary files, copies a torn tail's bytes
    /// to quarantine and zeroes them, moves segments after it aside.
    pub fn execute(&self, quarantine_dir: &Path, dir: &Path) -> io::Result<()> {
        for path in &self.remove {
            match std::fs::remove_file(path) {
                Ok(()) => tracing::info!(file = %path.display(), "removed"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(c) = &self.cut {
            let at = c.segment.base + c.pos as i64;
            if c.nonzero_end > c.pos {
                std::fs::create_dir_all(quarantine_dir)?;
                let f = File::open(&c.segment.path)?;
                let bytes = read_at(&f, c.pos as u64, c.nonzero_end - c.pos)?;
                let q = quarantine_dir.join(format!("torn-tail-{at:020}"));
                if let Err(e) = crate::durable::write_atomic(&q, &bytes) {
                    tracing::error!(
                        error = %e,
                        "cannot copy the torn tail to {}; it is cut anyway (it lies after the \
                         last durable checkpoint)",
                        q.display()
                    );
                } else {
                    tracing::warn!(
                        bytes = bytes.len(),
                        copy = %q.display(),
                        "torn tail after the last durable checkpoint: bytes moved aside"
                    );
                }
            }
            let seg = super::segment::Segment::open(&c.segment.path, c.segment.base)?;
            seg.zero_from(c.pos)?;
            tracing::warn!(
                file = %c.segment.path.display(),
                offset = at,
                "commit log cut at a torn write after the last durable checkpoint"
            );
        }
        if !self.quarantine.is_empty() {
            std::fs::create_dir_all(quarantine_dir)?;
            for s in &self.quarantine {
                let to = quarantine_dir.join(format!("segment-{}", file_name(s.base)));
                std::fs::rename(&s.path, &to)?;
                tracing::warn!(from = %s.path.display(), to = %to.display(), "segment after a torn tail moved aside");
            }
        }
        crate::durable::sync_dir(dir)?;
        Ok(())
    }
}
