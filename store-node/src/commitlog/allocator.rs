//! Creates the next segments ahead of the writer on its own thread (Apache's
//! AllocateMappedFileService), so that a roll never creates, reserves or syncs a file on the
//! append path. A failed reservation (a full disk) is remembered and retried every second; the
//! writer then refuses messages with a disk-full error instead of crashing.

use super::segment::Segment;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct St {
    /// Base of the first segment the writer will need (the active segment's end).
    next_base: Option<i64>,
    ready: VecDeque<Arc<Segment>>,
    failure: Option<String>,
    retry_at: Instant,
    shutdown: bool,
    created: u64,
    /// The base being created right now (by the thread or an inline roll), so that no two
    /// creators race for one file name.
    creating: Option<i64>,
}

struct Inner {
    dir: PathBuf,
    segment_size: usize,
    ahead: usize,
    st: Mutex<St>,
    cv: Condvar,
    ready: tokio::sync::Notify,
}

pub struct Allocator {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

const RETRY: Duration = Duration::from_secs(1);

impl Allocator {
    /// Keeps `ahead` segments prepared (more for tiny test segments that fill in microseconds).
    pub fn start(dir: PathBuf, segment_size: usize) -> Self {
        let ahead = ((4 << 20) / segment_size.max(1)).clamp(1, 8);
        let inner = Arc::new(Inner {
            dir,
            segment_size,
            ahead,
            st: Mutex::new(St {
                next_base: None,
                ready: VecDeque::new(),
                failure: None,
                retry_at: Instant::now(),
                shutdown: false,
                created: 0,
                creating: None,
            }),
            cv: Condvar::new(),
            ready: tokio::sync::Notify::new(),
        });
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name("commitlog-alloc".into())
            .spawn(move || worker.run())
            .ok();
        Self {
            inner,
            thread: Mutex::new(thread),
        }
    }

    /// Hands over segments found prepared (empty, following the log's end) at recovery.
    pub fn adopt(&self, segs: Vec<Arc<Segment>>) {
        let mut st = self.inner.st.lock();
        st.ready.extend(segs);
    }

    /// Tells the allocator where the log's next segment starts. Prepared segments that do not
    /// continue from there (after a truncation or reset) are discarded.
    pub fn want_from(&self, base: i64) {
        let mut st = self.inner.st.lock();
        if st.next_base != Some(base) {
            let mut expect = base;
            let chained = st.ready.iter().all(|s| {
                let ok = s.base == expect;
                expect = s.end();
                ok
            });
            if !chained {
                for s in st.ready.drain(..) {
                    let _ = std::fs::remove_file(&s.path);
                }
            }
            st.next_base = Some(base);
        }
        drop(st);
        self.inner.cv.notify_all();
    }

    /// The prepared segment starting at `base`, if ready.
    pub fn take(&self, base: i64) -> Option<Arc<Segment>> {
        let mut st = self.inner.st.lock();
        let seg = match st.ready.front() {
            Some(s) if s.base == base => st.ready.pop_front(),
            _ => None,
        };
        if let Some(s) = &seg {
            st.next_base = Some(s.end());
        } else {
            st.next_base = Some(base);
        }
        drop(st);
        self.inner.cv.notify_all();
        seg
    }

    /// Segments prepared in a chain from `base`.
    pub fn ready_from(&self, base: i64) -> usize {
        let st = self.inner.st.lock();
        let mut expect = base;
        st.ready
            .iter()
            .take_while(|s| {
                let ok = s.base == expect;
                expect = s.end();
                ok
            })
            .count()
    }

    /// Why the last reservation failed, while it keeps failing.
    pub fn failure(&self) -> Option<String> {
        self.inner.st.lock().failure.clone()
    }

    pub fn created(&self) -> u64 {
        self.inner.st.lock().created
    }

    /// Retries a failed reservation now (space may be back).
    pub fn retry_now(&self) {
        let mut st = self.inner.st.lock();
        st.retry_at = Instant::now();
        drop(st);
        self.inner.cv.notify_all();
    }

    /// Waits (async, bounded) until the segment at `base` is ready or a reservation fails.
    pub async fn wait_ready(&self, base: i64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.ready_from(base) > 0 {
                return true;
            }
            if self.failure().is_some() {
                return false;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.ready_from(base) > 0,
            }
        }
    }

    /// Creates the segment at `base` on the calling thread (the rare path where a state record
    /// must roll before the allocator caught up).
    pub fn create_now(&self, base: i64) -> std::io::Result<Arc<Segment>> {
        let mut st = self.inner.st.lock();
        loop {
            if let Some(s) = st.ready.front()
                && s.base == base
            {
                let s = st.ready.pop_front().expect("front exists");
                st.next_base = Some(s.end());
                drop(st);
                self.inner.cv.notify_all();
                return Ok(s);
            }
            if st.creating == Some(base) {
                // The thread is creating exactly this one: wait for it (bounded by its I/O).
                self.inner.cv.wait_for(&mut st, Duration::from_millis(50));
                if st.failure.is_some() && st.creating != Some(base) {
                    break;
                }
                continue;
            }
            break;
        }
        st.creating = Some(base);
        drop(st);
        let made = Segment::create(&self.inner.dir, base, self.inner.segment_size);
        let mut st = self.inner.st.lock();
        st.creating = None;
        let seg = Arc::new(made?);
        // Whatever was prepared does not follow the segment we just made: start after it.
        for s in st.ready.drain(..) {
            let _ = std::fs::remove_file(&s.path);
        }
        st.next_base = Some(seg.end());
        st.created += 1;
        drop(st);
        self.inner.cv.notify_all();
        Ok(seg)
    }

    pub fn shutdown(&self) {
        self.inner.st.lock().shutdown = true;
        self.inner.cv.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Allocator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn run(&self) {
        loop {
            let base = {
                let mut st = self.st.lock();
                loop {
                    if st.shutdown {
                        return;
                    }
                    let waiting = st.failure.is_some() && Instant::now() < st.retry_at;
                    if let Some(next) = st.next_base
                        && st.ready.len() < self.ahead
                        && !waiting
                        && st.creating.is_none()
                    {
                        let base = st.ready.back().map(|s| s.end()).unwrap_or(next);
                        st.creating = Some(base);
                        break base;
                    }
                    self.cv.wait_for(&mut st, RETRY);
                }
            };
            let made = Segment::create(&self.dir, base, self.segment_size);
            let mut st = self.st.lock();
            st.creating = None;
            match made {
                Ok(seg) => {
                    let seg = Arc::new(seg);
                    let expect = st
                        .ready
                        .back()
                        .map(|s| s.end())
                        .or(st.next_base)
                        .unwrap_or(-1);
                    if expect == base {
                        st.ready.push_back(seg);
                        st.created += 1;
                        if st.failure.take().is_some() {
                            tracing::info!(base, "commitlog segment reserved again: space is back");
                        }
                    } else {
                        // The log moved on (truncated or reset) while we were creating it.
                        let _ = std::fs::remove_file(&seg.path);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A file of that name exists already (left by a crash before adoption).
                    tracing::warn!(base, error = %e, "cannot prepare commitlog segment");
                    st.failure = Some(e.to_string());
                    st.retry_at = Instant::now() + RETRY;
                }
                Err(e) => {
                    if st.failure.is_none() {
                        tracing::error!(
                            base,
                            size = self.segment_size,
                            error = %e,
                            "cannot reserve space for the next commitlog segment; messages are \
                             refused until it succeeds"
                        );
                    }
                    st.failure = Some(e.to_string());
                    st.retry_at = Instant::now() + RETRY;
                }
            }
            drop(st);
            self.cv.notify_all();
            self.ready.notify_waiters();
        }
    }
}
