//! A slave's handover log: the consumption changes (pops, acks, invisibility changes, new
//! groups) it made while its master was away. They cannot go into its own commit log, which
//! must stay a copy of the master's, so they are kept here, durably, and handed to the master
//! when it returns.
//!
//! File: frames `[len u32][crc32 u32][encoded StateRecord]`, appended by a writer thread that
//! syncs once for every batch of waiting changes (no file I/O on tokio workers).

use parking_lot::{Condvar, Mutex};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

type Done = oneshot::Sender<io::Result<()>>;

#[derive(Default)]
struct Shared {
    records: Vec<Vec<u8>>,
    /// How many of `records` went out on the live stream already.
    streamed: usize,
    appends: Vec<(Vec<u8>, Done)>,
    rewrite: bool,
    shutdown: bool,
}

struct Inner {
    path: PathBuf,
    shared: Mutex<Shared>,
    cv: Condvar,
}

pub struct HandoverLog {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn frame(rec: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + rec.len());
    out.extend_from_slice(&(rec.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(rec).to_be_bytes());
    out.extend_from_slice(rec);
    out
}

fn parse(buf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= buf.len() {
        let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let crc = u32::from_be_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
        let Some(rec) = buf.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(rec) != crc {
            break;
        }
        out.push(rec.to_vec());
        at += 8 + len;
    }
    if at < buf.len() {
        tracing::warn!(
            kept = out.len(),
            "handover log ends in a torn record; the torn change is dropped (a redelivery at worst)"
        );
    }
    out
}

impl HandoverLog {
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let records = match std::fs::read(&path) {
            Ok(b) => parse(&b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let inner = Arc::new(Inner {
            path,
            shared: Mutex::new(Shared {
                records,
                ..Shared::default()
            }),
            cv: Condvar::new(),
        });
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name("handover-log".into())
            .spawn(move || worker.run())
            .ok();
        Ok(Self {
            inner,
            thread: Mutex::new(thread),
        })
    }

    pub fn records(&self) -> Vec<Vec<u8>> {
        self.inner.shared.lock().records.clone()
    }

    /// Adds a change; the receiver completes once it is durable.
    pub fn push(&self, rec: Vec<u8>) -> oneshot::Receiver<io::Result<()>> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.inner.shared.lock();
        s.records.push(rec.clone());
        s.appends.push((rec, tx));
        drop(s);
        self.inner.cv.notify_one();
        rx
    }

    /// Every change, for a hello; they count as streamed.
    pub fn for_hello(&self) -> Vec<Vec<u8>> {
        let mut s = self.inner.shared.lock();
        s.streamed = s.records.len();
        s.records.clone()
    }

    /// Changes made since the last hello or take, to stream now.
    pub fn take_new(&self) -> Vec<Vec<u8>> {
        let mut s = self.inner.shared.lock();
        let new = s.records[s.streamed.min(s.records.len())..].to_vec();
        s.streamed = s.records.len();
        new
    }

    /// The master accepted the first `n` changes: forget them (the file is rewritten).
    pub fn confirm(&self, n: usize) {
        let mut s = self.inner.shared.lock();
        let n = n.min(s.records.len());
        s.records.drain(..n);
        s.streamed = s.streamed.saturating_sub(n);
        s.rewrite = true;
        drop(s);
        self.inner.cv.notify_one();
    }

    pub fn shutdown(&self) {
        self.inner.shared.lock().shutdown = true;
        self.inner.cv.notify_one();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for HandoverLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn run(&self) {
        loop {
            let (appends, rewrite, shutdown) = {
                let mut s = self.shared.lock();
                while s.appends.is_empty() && !s.rewrite && !s.shutdown {
                    self.cv.wait(&mut s);
                }
                let rewrite = std::mem::take(&mut s.rewrite).then(|| s.records.clone());
                (std::mem::take(&mut s.appends), rewrite, s.shutdown)
            };
            let result = match rewrite {
                // A rewrite holds every current record, the new ones included.
                Some(all) => self.write_all(&all),
                None => self.append(&appends),
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, path = %self.path.display(), "handover log write failed");
            }
            for (_, tx) in appends {
                let _ = tx.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                });
            }
            if shutdown {
                let s = self.shared.lock();
                if s.appends.is_empty() && !s.rewrite {
                    return;
                }
            }
        }
    }

    fn append(&self, recs: &[(Vec<u8>, Done)]) -> io::Result<()> {
        if recs.is_empty() {
            return Ok(());
        }
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut buf = Vec::new();
        for (r, _) in recs {
            buf.extend_from_slice(&frame(r));
        }
        f.write_all(&buf)?;
        f.sync_data()
    }

    fn write_all(&self, recs: &[Vec<u8>]) -> io::Result<()> {
        let mut buf = Vec::new();
        for r in recs {
            buf.extend_from_slice(&frame(r));
        }
        crate::durable::write_atomic(&self.path, &buf)
    }
}
