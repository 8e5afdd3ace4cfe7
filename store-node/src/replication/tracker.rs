//! What each connected slave has acknowledged, and the SYNC_MASTER sends waiting for it.
//! A send under SYNC_MASTER is acknowledged only when every in-sync slave has it; with none in
//! sync it fails at once (never a silent downgrade to asynchronous replication).

use crate::error::StoreError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// A slave further behind than this is not in sync (Apache's `haMaxGapNotInSync`).
pub const MAX_GAP_IN_SYNC: i64 = 256 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct SlaveProgress {
    pub broker_id: i64,
    pub addr: String,
    pub acked: i64,
    pub sent: i64,
    pub connected_ms: i64,
    pub last_ack_ms: i64,
}

#[derive(Default)]
struct State {
    slaves: HashMap<u64, SlaveProgress>,
    waiters: Vec<(i64, oneshot::Sender<()>)>,
    next_conn: u64,
}

#[derive(Default)]
pub struct Tracker {
    state: Mutex<State>,
    /// Wakes senders waiting for window space.
    pub acked: Notify,
    /// Replication round trips (acks received): many sends share one.
    pub round_trips: AtomicU64,
}

impl Tracker {
    pub fn connect(&self, broker_id: i64, addr: String, start: i64) -> u64 {
        let mut s = self.state.lock();
        s.next_conn += 1;
        let id = s.next_conn;
        let now = rmq_common::time::now_ms();
        s.slaves.insert(
            id,
            SlaveProgress {
                broker_id,
                addr,
                acked: start,
                sent: start,
                connected_ms: now,
                last_ack_ms: now,
            },
        );
        id
    }

    pub fn disconnect(&self, conn: u64) {
        self.state.lock().slaves.remove(&conn);
    }

    pub fn sent(&self, conn: u64, upto: i64) {
        if let Some(p) = self.state.lock().slaves.get_mut(&conn) {
            p.sent = p.sent.max(upto);
        }
    }

    /// Records a slave's acknowledgement; one beyond what was sent is a protocol violation.
    pub fn ack(&self, conn: u64, offset: i64, master_end: i64) -> Result<(), String> {
        let mut s = self.state.lock();
        let Some(p) = s.slaves.get_mut(&conn) else {
            return Ok(());
        };
        if offset > p.sent {
            return Err(format!(
                "slave acknowledged {offset} but was sent only up to {}",
                p.sent
            ));
        }
        p.acked = p.acked.max(offset);
        p.last_ack_ms = rmq_common::time::now_ms();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        if let Some(min) = Self::in_sync_min(&s, master_end) {
            let mut i = 0;
            while i < s.waiters.len() {
                if s.waiters[i].0 <= min {
                    let (_, tx) = s.waiters.swap_remove(i);
                    let _ = tx.send(());
                } else {
                    i += 1;
                }
            }
        }
        drop(s);
        self.acked.notify_waiters();
        Ok(())
    }

    fn in_sync_min(s: &State, master_end: i64) -> Option<i64> {
        s.slaves
            .values()
            .filter(|p| master_end - p.acked < MAX_GAP_IN_SYNC)
            .map(|p| p.acked)
            .min()
    }

    pub fn acked_by(&self, conn: u64) -> i64 {
        self.state
            .lock()
            .slaves
            .get(&conn)
            .map(|p| p.acked)
            .unwrap_or(0)
    }

    /// Whether at least one slave is connected and in sync (checked before a SYNC_MASTER write).
    pub fn available(&self, master_end: i64) -> bool {
        Self::in_sync_min(&self.state.lock(), master_end).is_some()
    }

    /// Waits until every in-sync slave has acknowledged `end`.
    pub async fn wait(
        &self,
        end: i64,
        master_end: i64,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let rx = {
            let mut s = self.state.lock();
            match Self::in_sync_min(&s, master_end) {
                None => return Err(StoreError::HaNotAvailable),
                Some(min) if min >= end => return Ok(()),
                Some(_) => {}
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.push((end, tx));
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(StoreError::SlaveTimeout(timeout.as_millis() as u64)),
        }
    }

    /// The connected slave that has received the most: (brokerId, received up to).
    pub fn furthest(&self) -> Option<(i64, i64)> {
        self.state
            .lock()
            .slaves
            .values()
            .max_by_key(|p| p.acked)
            .map(|p| (p.broker_id, p.acked))
    }

    pub fn snapshot(&self) -> Vec<SlaveProgress> {
        let mut v: Vec<SlaveProgress> = self.state.lock().slaves.values().cloned().collect();
        v.sort_by_key(|p| p.broker_id);
        v
    }
}
