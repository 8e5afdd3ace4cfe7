//! `rmq-bench profile <shape>`: one workload shape with the server processes under valgrind's
//! callgrind, which counts instructions (stable on a noisy 2-core machine, unlike wall time).
//! Counters are zeroed after a warm-up, so the profile covers only the measured messages; the
//! output names the files for `callgrind_annotate` and the message count to divide by.

use crate::systems::{self, Flush};
use crate::workloads::{self, Target};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Shape {
    /// W1: 64 senders, one 1 KiB message per RPC, ASYNC_FLUSH.
    Send64,
    /// The gRPC echo ceiling under the same load.
    Echo64,
    /// W1: 8 senders, batches of 16.
    Batch16,
    /// W2: 64 senders under SYNC_FLUSH.
    Sync64,
    /// W6: a 1 KiB backlog drained by 4 consumers (receive 32 + ack), after a restart.
    Drain,
    /// W8: namesrv + store + proxy as separate processes, 64 senders.
    Split64,
    /// W1 through the official Rust client: 64 senders, standalone, ASYNC_FLUSH.
    Official64,
    /// The gRPC echo under the official Rust client's load.
    OfficialEcho64,
}

pub async fn run(shape: Shape, scratch: &Path, base: u16, secs: f64) -> Result<(), String> {
    let out = scratch.join("callgrind");
    let _ = std::fs::create_dir_all(&out);
    let file = out.join(format!("{shape:?}.%p.out").to_lowercase());
    let wrap = vec![
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", file.display()),
    ];
    let dur = Duration::from_secs_f64(secs);
    let warm = Duration::from_secs(2);
    let (sys, msgs) = match shape {
        Shape::Drain => {
            let count = 60_000;
            let sys = systems::ours_standalone(scratch, base, Flush::Async, None)?;
            workloads::preload(sys.port, count, 1024).await?;
            let data = sys.dir.clone();
            drop(sys);
            let _ = systems::WRAP.set(wrap);
            let sys = systems::ours_standalone(scratch, base, Flush::Async, Some(&data))?;
            zero(&sys);
            let run = workloads::drain(sys.port, "ProfileGroup", count, 4, dur * 20).await;
            (sys, run.msgs)
        }
        _ => {
            let _ = systems::WRAP.set(wrap);
            let (sys, senders, batch) = match shape {
                Shape::Send64 => (
                    systems::ours_standalone(scratch, base, Flush::Async, None)?,
                    64,
                    1,
                ),
                Shape::Echo64 => (systems::grpc_echo(scratch, base)?, 64, 1),
                Shape::Batch16 => (
                    systems::ours_standalone(scratch, base, Flush::Async, None)?,
                    8,
                    16,
                ),
                Shape::Sync64 => (
                    systems::ours_standalone(scratch, base, Flush::Sync, None)?,
                    64,
                    1,
                ),
                Shape::Official64 => (
                    systems::ours_standalone(scratch, base, Flush::Async, None)?,
                    64,
                    0,
                ),
                Shape::OfficialEcho64 => (systems::grpc_echo(scratch, base)?, 64, 0),
                _ => (systems::ours_split(scratch, base, Flush::Async)?, 64, 1),
            };
            // Batch 0 marks the official client's shapes, which send one message per RPC.
            let target = if batch == 0 {
                Target::Official { port: sys.port }
            } else {
                Target::V2 {
                    port: sys.port,
                    batch,
                }
            };
            workloads::closed_loop(target, senders, 1024, warm).await;
            zero(&sys);
            let run = workloads::closed_loop(target, senders, 1024, dur).await;
            (sys, run.msgs)
        }
    };
    let pids = sys.pids();
    drop(sys);
    println!("profile {shape:?}: {msgs} messages measured");
    for pid in pids {
        let f = out.join(format!("{shape:?}.{pid}.out").to_lowercase());
        let total = total_ir(&f);
        println!(
            "  {} : {} Ir, {} Ir per message",
            f.display(),
            total,
            total / msgs.max(1)
        );
    }
    Ok(())
}

/// Zeroes every server process's counters, so start-up and warm-up are not in the profile.
fn zero(sys: &systems::System) {
    for pid in sys.pids() {
        let _ = Command::new("callgrind_control")
            .args(["-z", &pid.to_string()])
            .output();
    }
}

fn total_ir(f: &Path) -> u64 {
    std::fs::read_to_string(f)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| {
                    l.strip_prefix("totals:")
                        .or_else(|| l.strip_prefix("summary:"))
                })
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
