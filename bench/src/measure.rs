//! Latency histograms, server CPU and RSS from /proc, the fsync probe, and result rows.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// CPU time (user + system) of a process and its threads, in µs.
pub fn cpu_us(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000 / hz
}

pub fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS:")
}

/// Resident memory that is not file-backed (heap, stacks): what a store holds per message, if
/// anything, where VmRSS also counts the page cache its mapped log brings in.
pub fn rss_anon_mb(pid: u32) -> f64 {
    status_mb(pid, "RssAnon:")
}

fn status_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).map(str::to_string))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// p99 of 4 KiB write + fdatasync, in µs: how noisy the disk is right now.
pub fn fsync_probe(dir: &Path, rounds: usize) -> u64 {
    let path = dir.join("fsync-probe");
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
    else {
        return 0;
    };
    let block = [0x5Au8; 4096];
    let mut h = histogram();
    for _ in 0..rounds {
        let t = Instant::now();
        if f.write_all(&block).is_err() || f.sync_data().is_err() {
            return 0;
        }
        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
    }
    let _ = std::fs::remove_file(&path);
    h.value_at_quantile(0.99)
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    pub system: String,
    pub params: String,
    /// What an acknowledgement implies (durability contract).
    pub contract: String,
    pub rep: usize,
    pub msgs: u64,
    pub errors: u64,
    pub lost: u64,
    pub secs: f64,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub server_cpu_us_per_msg: f64,
    pub server_rss_mb: f64,
    pub fsync_probe_p99_us: u64,
    pub extra: String,
    pub git_sha: String,
    pub machine: String,
}

impl Row {
    pub fn from_hist(h: &Histogram<u64>) -> (u64, u64, u64, u64, u64) {
        if h.is_empty() {
            return (0, 0, 0, 0, 0);
        }
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        )
    }
}

pub struct Run {
    pub msgs: u64,
    pub bytes: u64,
    pub errors: u64,
    pub lost: u64,
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
    pub extra: String,
}

impl Default for Run {
    fn default() -> Self {
        Self {
            msgs: 0,
            bytes: 0,
            errors: 0,
            lost: 0,
            elapsed: Duration::ZERO,
            hist: histogram(),
            extra: String::new(),
        }
    }
}

pub fn git_sha() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpus} vCPU {model}")
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}
