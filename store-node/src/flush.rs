//! The flush service: one OS thread that msyncs the commit log.
//!
//! SYNC_FLUSH is group commit: every append waiting for durability registers its end offset and
//! wakes the thread; one msync covers everything published by then, and completes every waiter
//! it covers. Sends that arrive during an msync ride the next one. ASYNC_FLUSH flushes every
//! `flushIntervalCommitLog` ms up to the last whole page (stricter than Java, which skips rounds
//! with < 4 dirty pages), so appends never wait on the write-back of the page they fill.

use crate::commitlog::CommitLog;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

type OnFlushed = Box<dyn Fn(i64) + Send + Sync>;

struct State {
    waiters: Vec<(i64, oneshot::Sender<()>)>,
    wake: bool,
    shutdown: bool,
}

struct Inner {
    log: Arc<CommitLog>,
    state: Mutex<State>,
    cv: Condvar,
    interval: Duration,
    on_flushed: OnFlushed,
}

pub struct FlushService {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl FlushService {
    /// `on_flushed` runs on the flush thread after every sync with the new durable offset.
    pub fn start(log: Arc<CommitLog>, interval: Duration, on_flushed: OnFlushed) -> Self {
        let inner = Arc::new(Inner {
            log,
            state: Mutex::new(State {
                waiters: Vec::new(),
                wake: false,
                shutdown: false,
            }),
            cv: Condvar::new(),
            interval,
            on_flushed,
        });
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name("commitlog-flush".into())
            .spawn(move || worker.run())
            .ok();
        Self {
            inner,
            thread: Mutex::new(thread),
        }
    }

    /// Resolves once the log is durable up to `end` (or immediately if it already is).
    pub fn wait_durable(&self, end: i64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.inner.log.flushed() >= end {
            let _ = tx.send(());
            return rx;
        }
        let mut st = self.inner.state.lock();
        st.waiters.push((end, tx));
        st.wake = true;
        drop(st);
        self.inner.cv.notify_one();
        rx
    }

    /// Asks for a flush round now without waiting for it.
    pub fn wake(&self) {
        self.inner.state.lock().wake = true;
        self.inner.cv.notify_one();
    }

    pub fn shutdown(&self) {
        self.inner.state.lock().shutdown = true;
        self.inner.cv.notify_one();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for FlushService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn run(&self) {
        loop {
            let (shutdown, periodic) = {
                let mut st = self.state.lock();
                if !st.wake && !st.shutdown && st.waiters.is_empty() {
                    self.cv.wait_for(&mut st, self.interval);
                }
                let periodic = !st.wake && !st.shutdown && st.waiters.is_empty();
                st.wake = false;
                (st.shutdown, periodic)
            };
            let published = self.log.published();
            // A timed round leaves the page being filled for the next one; a waiter (group
            // commit) or shutdown needs everything.
            let target = if periodic {
                self.log.settled_end(published)
            } else {
                published
            };
            if let Err(e) = self.log.flush_to(target) {
                tracing::error!(error = %e, "commitlog flush failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let durable = self.log.flushed();
            (self.on_flushed)(durable);
            {
                let mut st = self.state.lock();
                let mut i = 0;
                while i < st.waiters.len() {
                    if st.waiters[i].0 <= durable {
                        let (_, tx) = st.waiters.swap_remove(i);
                        let _ = tx.send(());
                    } else {
                        i += 1;
                    }
                }
                if !st.waiters.is_empty() {
                    st.wake = true;
                }
            }
            if shutdown {
                break;
            }
        }
    }
}
