//! Wall-clock helpers. Store timestamps come from here so they can be clamped to never go
//! backwards along the log (a backwards clock step must not reorder recovery decisions).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A wall clock that never returns a value smaller than one it returned before.
#[derive(Debug, Default)]
pub struct MonotonicMs(AtomicI64);

impl MonotonicMs {
    pub fn now(&self) -> i64 {
        let t = now_ms();
        let prev = self.0.fetch_max(t, Ordering::AcqRel);
        prev.max(t)
    }
}
