//! What a store directory holds, decided before anything in it is touched.
//!
//! Our default root is Apache RocketMQ's (`~/store`), and both lay the commit log out the same
//! way, so a directory is ours only when it carries our marker file. Anything else with data in
//! it is recognised and refused untouched: an Apache store (whose records lack our whole-record
//! CRC, so our recovery would call every record damage), or a store written by an earlier rmq
//! build. The evidence is kept, so that a later reader of Apache stores can open exactly what is
//! recognised here.

use rmq_common::record::{self, Scan};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Marker file at the store root: `rmq-store format=<n>`.
pub const MARKER: &str = "rmq-store";
pub const FORMAT: u32 = 1;

/// Everything a store keeps, relative to `storePathRootDir` (the commit log may live elsewhere).
#[derive(Debug, Clone)]
pub struct Dirs {
    pub root: PathBuf,
    pub commitlog: PathBuf,
}

impl Dirs {
    pub fn marker(&self) -> PathBuf {
        self.root.join(MARKER)
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("rmq-checkpoint")
    }
    pub fn seals(&self) -> PathBuf {
        self.root.join("rmq-seals")
    }
    pub fn consumequeue(&self) -> PathBuf {
        self.root.join("consumequeue")
    }
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }
    pub fn handover(&self) -> PathBuf {
        self.root.join("handover.log")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Nothing of a store yet: we may initialise it.
    Fresh,
    /// Ours, in this format.
    Ours,
    /// Written by Apache RocketMQ (the evidence names what was found).
    Apache(Vec<String>),
    /// Ours, from a build before the current format, or a newer one.
    OtherFormat(String),
    /// Commit-log files nobody we know wrote.
    Foreign(Vec<String>),
}

/// Apache's files beside the commit log (`StorePathConfigHelper`).
const APACHE_ARTEFACTS: &[&str] = &[
    "config/topics.json",
    "config/consumerOffset.json",
    "config/subscriptionGroup.json",
    "checkpoint",
    "abort",
    "index",
    "timerwheel",
    "timerlog",
];

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| is_segment_name(p))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn is_segment_name(p: &Path) -> bool {
    p.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads the first bytes of a segment without writing anything.
fn head(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let r = f.read(&mut buf[got..])?;
        if r == 0 {
            break;
        }
        got += r;
    }
    buf.truncate(got);
    Ok(buf)
}

/// Decides what `dirs` holds. Reads only.
pub fn inspect(dirs: &Dirs) -> io::Result<Layout> {
    match std::fs::read_to_string(dirs.marker()) {
        Ok(text) => {
            let format = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("format="))
                .and_then(|v| v.parse::<u32>().ok());
            return Ok(match format {
                Some(FORMAT) => Layout::Ours,
                Some(n) => Layout::OtherFormat(format!(
                    "{} says format {n}; this build reads format {FORMAT}",
                    dirs.marker().display()
                )),
                None => Layout::Foreign(vec![format!(
                    "{} is not an rmq store marker",
                    dirs.marker().display()
                )]),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut apache: Vec<String> = APACHE_ARTEFACTS
        .iter()
        .map(|a| dirs.root.join(a))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    let cq = dirs.consumequeue();
    if cq.is_dir() && std::fs::read_dir(&cq)?.next().is_some() {
        apache.push(cq.display().to_string());
    }
    let segments = segment_files(&dirs.commitlog);
    let Some(first) = segments.first() else {
        return Ok(if apache.is_empty() {
            Layout::Fresh
        } else {
            Layout::Apache(apache)
        });
    };
    // The first record of the oldest segment says who wrote the log.
    let bytes = head(first, 1 << 20)?;
    let base: i64 = first
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let verdict = match record::check(&bytes, base) {
        Ok(Scan::Record(_)) => {
            let topic = record::RecordView::parse(&bytes)
                .map(|v| v.topic().to_string())
                .unwrap_or_default();
            if topic == crate::state::STATE_TOPIC {
                Some(format!(
                    "{} was written by an earlier rmq build (before store format {FORMAT}, state \
                     records in JSON); this build cannot read it",
                    first.display()
                ))
            } else {
                apache.push(format!(
                    "{} holds records with RocketMQ's optional CRC property but no rmq marker",
                    first.display()
                ));
                None
            }
        }
        Ok(_) if bytes.iter().all(|b| *b == 0) => None,
        _ if record::check_apache(&bytes, base).is_ok() => {
            apache.push(format!(
                "{} holds records in Apache RocketMQ's layout without rmq's record CRC",
                first.display()
            ));
            None
        }
        _ => {
            return Ok(Layout::Foreign(vec![format!(
                "{} does not start with a commit-log record",
                first.display()
            )]));
        }
    };
    if let Some(v) = verdict {
        return Ok(Layout::OtherFormat(v));
    }
    if apache.is_empty() {
        // Only zero-filled segments and no marker: a store that crashed while being created.
        Ok(Layout::Fresh)
    } else {
        Ok(Layout::Apache(apache))
    }
}

/// Writes the marker of a new store.
pub fn initialise(dirs: &Dirs) -> io::Result<()> {
    std::fs::create_dir_all(&dirs.root)?;
    std::fs::create_dir_all(&dirs.commitlog)?;
    crate::durable::write_atomic(
        &dirs.marker(),
        format!(
            "rmq-store format={FORMAT}\ncreated_ms={}\n",
            rmq_common::time::now_ms()
        )
        .as_bytes(),
    )
}

/// An exclusive `flock` on `<root>/lock`, held while the store is open: a second node on the same
/// directory is refused instead of corrupting it.
pub struct StoreLock {
    file: parking_lot::Mutex<Option<File>>,
}

impl StoreLock {
    pub fn acquire(dirs: &Dirs) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dirs.lock())?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is locked by another process: one store directory serves one node",
                    dirs.lock().display()
                ),
            ));
        }
        Ok(Self {
            file: parking_lot::Mutex::new(Some(file)),
        })
    }

    /// Releases the lock (closing the descriptor drops the flock).
    pub fn release(&self) {
        self.file.lock().take();
    }
}

/// Fixtures for tests of directory recognition (here so that store and end-to-end tests build
/// the same Apache directory).
#[doc(hidden)]
pub mod testing {
    use std::path::Path;

    /// An Apache RocketMQ store as its broker leaves it: commit-log records without rmq's CRC
    /// property, consume queues, config JSON, checkpoint, abort and lock files.
    pub fn write_apache_store(root: &Path) {
        use rmq_common::record::{RecordInput, encode, encode_properties, encoded_len};
        std::fs::create_dir_all(root.join("commitlog")).expect("fixture");
        std::fs::create_dir_all(root.join("config")).expect("fixture");
        std::fs::create_dir_all(root.join("consumequeue/TopicTest/0")).expect("fixture");
        let mut log = vec![0u8; 1 << 20];
        let mut at = 0usize;
        let mut cq = Vec::new();
        for i in 0..5 {
            let props = encode_properties([("UNIQ_KEY", "7F0000017A2B"), ("TAGS", "TagA")]);
            let body = format!("Hello RocketMQ {i}");
            let input = RecordInput {
                topic: "TopicTest",
                queue_id: 0,
                flag: 0,
                sys_flag: 0,
                born_timestamp: 1_700_000_000_000,
                born_host: "10.0.0.1:51000".parse().expect("fixture"),
                store_host: "10.0.0.2:10911".parse().expect("fixture"),
                reconsume_times: 0,
                prepared_tx_offset: 0,
                body: body.as_bytes(),
                properties: &props,
            };
            // Apache's encoder writes no __CRC32# property: drop ours and fix the lengths.
            let mut rec = vec![0u8; encoded_len(&input)];
            encode(&input, i, at as i64, 1_700_000_000_100, &mut rec).expect("encode");
            let crc_prop = rmq_common::record::CRC_PROP_LEN;
            rec.truncate(rec.len() - crc_prop);
            let total = rec.len() as i32;
            rec[0..4].copy_from_slice(&total.to_be_bytes());
            let plen_at = rec.len() - props.len() - 2;
            rec[plen_at..plen_at + 2].copy_from_slice(&(props.len() as i16).to_be_bytes());
            assert!(rmq_common::record::check_apache(&rec, at as i64).is_ok());
            log[at..at + rec.len()].copy_from_slice(&rec);
            cq.extend_from_slice(&(at as i64).to_be_bytes());
            cq.extend_from_slice(&total.to_be_bytes());
            cq.extend_from_slice(
                &(i64::from(rmq_common::java::string_hash_code("TagA"))).to_be_bytes(),
            );
            at += rec.len();
        }
        std::fs::write(root.join("commitlog/00000000000000000000"), &log).expect("fixture");
        let mut cq_file = vec![0u8; 6000];
        cq_file[..cq.len()].copy_from_slice(&cq);
        std::fs::write(
            root.join("consumequeue/TopicTest/0/00000000000000000000"),
            &cq_file,
        )
        .expect("fixture");
        std::fs::write(
            root.join("config/topics.json"),
            br#"{"topicConfigTable":{"TopicTest":{"topicName":"TopicTest","readQueueNums":4,"writeQueueNums":4,"perm":6}}}"#,
        )
        .expect("fixture");
        let mut cp = vec![0u8; 4096];
        cp[..8].copy_from_slice(&1_700_000_000_100i64.to_be_bytes());
        std::fs::write(root.join("checkpoint"), &cp).expect("fixture");
        std::fs::write(root.join("abort"), b"").expect("fixture");
        std::fs::write(root.join("lock"), b"").expect("fixture");
    }
}
