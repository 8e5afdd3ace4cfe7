//! The flush service: one OS thread that msyncs the commit log.
//!
//! SYNC_FLUSH is group commit: every append waiting for durability registers its end offset and
//! wakes the thread; one msync covers everything published by then, and completes every waiter
//! it covers. Sends that arrive during an msync ride the next one. ASYNC_FLUSH flushes every
//! `flushIntervalCommitLog` ms up to the last whole page (stricter than Java, which skips rounds
//! with < 4 dirty pages), so appends never wait on the write-back of the page they fill.
//!
//! After every round the durable offset goes into the checkpoint (page cache; on disk at least
//! once a second), which is what recovery trusts to tell a torn tail from damage.

use crate::checkpoint::Checkpoint;
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
    /// Stop without a last flush (a simulated crash).
    abandon: bool,
}

struct Inner {
    log: Arc<CommitLog>,
    checkpoint: Arc<Checkpoint>,
    state: Mutex<State>,
    cv: Condvar,
    interval: Duration,
    on_flushed: OnFlushed,
    /// Held for each round (flush, then checkpoint); a truncation holds it to move both back.
    round: Mutex<()>,
}

pub struct FlushService {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl FlushService {
    /// `on_flushed` runs on the flush thread after every sync with the new durable offset.
    pub fn start(
        log: Arc<CommitLog>,
        checkpoint: Arc<Checkpoint>,
        interval: Duration,
        on_flushed: OnFlushed,
    ) -> Self {
        let inner = Arc::new(Inner {
            log,
            checkpoint,
            state: Mutex::new(State {
                waiters: Vec::new(),
                wake: false,
                shutdown: false,
                abandon: false,
            }),
            cv: Condvar::new(),
            interval,
            on_flushed,
            round: Mutex::new(()),
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

    /// Keeps flush rounds out while the log is cut back (blocking).
    pub fn hold(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.inner.round.lock()
    }

    /// Stops the thread at once, without flushing what is pending.
    pub fn abandon(&self) {
        self.inner.state.lock().abandon = true;
        self.shutdown();
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
                if st.abandon {
                    return;
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
            let round = self.round.lock();
            let synced = match self.log.flush_to(target) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "commitlog flush failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let durable = self.log.flushed();
            let cp = if synced {
                self.checkpoint.update(shutdown, |v| v.flushed = durable)
            } else {
                self.checkpoint.sync_if_due()
            };
            drop(round);
            if let Err(e) = cp {
                tracing::error!(error = %e, "checkpoint write failed");
            }
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
