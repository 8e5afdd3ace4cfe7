//! W11: restart time and memory against log size. A store with a 4 GB log and one with an empty
//! log are each killed (-9) and restarted, interleaved; the row is exec → first acknowledged
//! send, and the anonymous RSS (heap, not the page cache the mapped log brings) right after it.
//! The store must start in time independent of its log and hold no per-message memory. The
//! logs are grown first and left to settle (snapshot taken) before the first kill.

use crate::measure::{Run, rss_anon_mb};
use crate::systems::{self, Flush, System};
use crate::{BASE, Bench, workloads};
use std::path::Path;
use std::time::{Duration, Instant};

const BIG_LOG: u64 = 4_000_000_000;
const BODY: usize = 32 * 1024;

/// Starts a store on `dir` (created if empty); with `fill`, writes that many log bytes first.
async fn prepare(dir: &Path, fill: u64) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let sys = systems::ours_standalone(dir, BASE, Flush::Async, Some(dir))?;
    systems::create_topic(BASE, 8)?;
    if fill > 0 {
        workloads::preload(sys.port, fill / BODY as u64, BODY).await?;
        // A log grown over time, not one killed mid-burst: what a restart after a burst costs
        // (the unflushed second after the last checkpoint is verified) is bounded by the write
        // rate, not the log size, and reported by the first restart.
        let deadline = Instant::now() + Duration::from_secs(30);
        let n = |k: &str| systems::runtime_value(BASE + 1, k).and_then(|v| v.parse::<i64>().ok());
        while Instant::now() < deadline && n("snapshotBase") < n("commitLogMaxOffset") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // And its full segments sealed (the housekeeper's next ticks): a segment killed before
        // its seal is verified whole at the next start (bounded by one segment, not the log).
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    drop(sys); // kill -9
    Ok(())
}

/// Exec → first acknowledged send on an existing store; the system stays up for measuring.
async fn restart(dir: &Path) -> (Option<System>, Run) {
    let mut run = Run::default();
    let t0 = Instant::now();
    let sys = match systems::ours_standalone(dir, BASE, Flush::Async, Some(dir)) {
        Ok(s) => s,
        Err(e) => {
            run.errors = 1;
            run.extra = e;
            return (None, run);
        }
    };
    let payload = bytes::Bytes::from_static(b"first after restart");
    if workloads::until_first_ack(sys.port, &payload, Duration::from_secs(30)).await {
        run.msgs = 1;
    }
    let e = t0.elapsed();
    let _ = run.hist.record(e.as_micros().max(1) as u64);
    run.errors = u64::from(run.msgs == 0);
    run.elapsed = e;
    let anon: f64 = sys.pids().into_iter().map(rss_anon_mb).sum();
    let info = |k: &str| systems::runtime_value(BASE + 1, k).unwrap_or_else(|| "?".into());
    run.extra = format!(
        "exec to first acknowledged send: {} ms; anonymous RSS {anon:.1} MiB; store open {} ms, \
         {} records replayed",
        e.as_millis(),
        info("recoveryMs"),
        info("recoveryReplayedRecords"),
    );
    (Some(sys), run)
}

impl Bench {
    pub(crate) async fn w11(&mut self) {
        let empty = self.cli.scratch.join("w11-empty");
        let big = self.cli.scratch.join("w11-4g");
        for (dir, fill) in [(&empty, 0), (&big, BIG_LOG)] {
            let t = Instant::now();
            if let Err(e) = prepare(dir, fill).await {
                eprintln!("W11: cannot prepare {}: {e}", dir.display());
                return;
            }
            eprintln!("W11: prepared {} in {:?}", dir.display(), t.elapsed());
        }
        for rep in 1..=self.cli.reps {
            for (dir, label) in [
                (&empty, "restart after kill -9, log=empty"),
                (&big, "restart after kill -9, log=4GB"),
            ] {
                let (sys, run) = restart(dir).await;
                eprintln!("W11 {label}: {}", run.extra);
                if let Some(sys) = sys {
                    self.record("W11", label, &sys, rep, &run, 0);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&big);
        let _ = std::fs::remove_dir_all(&empty);
    }
}
