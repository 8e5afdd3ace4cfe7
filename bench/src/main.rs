//! `rmq-bench`: runs the workloads of performance.md §4.2 against our system and its peers,
//! interleaved (peer, ours, peer, ours, ...), and prints one JSON line per run plus a markdown
//! table of medians and ratios. `smoke` is the few-second CI profile: it asserts zero errors and
//! zero lost messages, never a speed.

mod drivers;
mod measure;
mod profile;
mod restart;
mod systems;
mod workloads;

use clap::{Parser, Subcommand};
use measure::{Row, Run};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use systems::{Flush, System};
use workloads::Target;

#[derive(Parser)]
#[command(name = "rmq-bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 5.0, global = true)]
    secs: f64,
    /// Interleaved repetitions per (workload, system).
    #[arg(long, default_value_t = 3, global = true)]
    reps: usize,
    /// Scratch folder for data, logs and installed peers.
    #[arg(long, default_value = "bench/scratch", global = true)]
    scratch: PathBuf,
    /// Where JSON lines are appended.
    #[arg(long, default_value = "bench/scratch/results.jsonl", global = true)]
    out: PathBuf,
    /// Skip the NATS peer.
    #[arg(long, global = true)]
    no_nats: bool,
    /// W1 maximum (msg/s, 64 senders) that W3 and W5 derive their rates from when this run
    /// did not measure W1 itself (e.g. `w5` alone after an `all` run).
    #[arg(long, global = true)]
    w1_max: Option<f64>,
}

#[derive(Subcommand, Clone)]
enum Cmd {
    W1,
    /// Only W1's official-client rows.
    W1Official,
    W2,
    W3,
    W4,
    W5,
    W6,
    /// Sync vs async replication (a master plus a slave process).
    W7,
    W8,
    W9,
    W10,
    /// Restart time and anonymous RSS with a 4 GB log vs an empty one.
    W11,
    /// Every workload, then the summary table.
    All,
    /// A few seconds per path; fails on any error or lost message.
    Smoke,
    /// One workload shape with the servers under callgrind (instruction counts per message).
    Profile {
        #[arg(value_enum)]
        shape: profile::Shape,
    },
    /// Internal: the no-op gRPC server used as the protocol ceiling.
    EchoServer {
        port: u16,
    },
}

const BASE: u16 = 31000;

struct Bench {
    cli: Cli,
    rows: Vec<Row>,
    probe_before: u64,
}

#[derive(Clone, Copy)]
enum Sys {
    Repl(systems::Replication),
    Ours(Flush),
    Split(Flush),
    Echo,
    Nats(Flush),
}

impl Bench {
    fn start(&self, s: Sys) -> Result<System, String> {
        match s {
            Sys::Ours(f) => systems::ours_standalone(&self.cli.scratch, BASE, f, None),
            Sys::Repl(r) => systems::ours_replicated(&self.cli.scratch, BASE, r, true),
            Sys::Split(f) => systems::ours_split(&self.cli.scratch, BASE, f),
            Sys::Echo => systems::grpc_echo(&self.cli.scratch, BASE),
            Sys::Nats(f) => systems::nats(&self.cli.scratch, BASE, f),
        }
    }

    fn dur(&self) -> Duration {
        Duration::from_secs_f64(self.cli.secs)
    }

    fn record(
        &mut self,
        workload: &str,
        params: &str,
        sys: &System,
        rep: usize,
        run: &Run,
        cpu_before: u64,
    ) {
        let cpu = sys.cpu_us().saturating_sub(cpu_before);
        let secs = run.elapsed.as_secs_f64().max(1e-9);
        let (p50, p90, p99, p999, max) = Row::from_hist(&run.hist);
        let row = Row {
            workload: workload.into(),
            system: sys.name.clone(),
            params: params.into(),
            contract: sys.contract.clone(),
            rep,
            msgs: run.msgs,
            errors: run.errors,
            lost: run.lost,
            secs,
            msg_per_s: run.msgs as f64 / secs,
            mb_per_s: run.bytes as f64 / secs / 1e6,
            p50_us: p50,
            p90_us: p90,
            p99_us: p99,
            p999_us: p999,
            max_us: max,
            server_cpu_us_per_msg: if run.msgs > 0 {
                cpu as f64 / run.msgs as f64
            } else {
                0.0
            },
            server_rss_mb: sys.rss_mb(),
            fsync_probe_p99_us: self.probe_before,
            extra: run.extra.clone(),
            git_sha: measure::git_sha(),
            machine: measure::machine(),
        };
        let line = serde_json::to_string(&row).unwrap_or_default();
        println!("{line}");
        if let Some(dir) = self.cli.out.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cli.out)
        {
            use std::io::Write;
            let _ = writeln!(f, "{line}");
        }
        self.rows.push(row);
    }

    /// Runs a closed-loop send workload on each system, interleaved across repetitions.
    async fn closed(
        &mut self,
        workload: &str,
        systems: &[Sys],
        senders: usize,
        batch: usize,
        size: usize,
    ) {
        self.closed_with(workload, systems, senders, batch, size, false)
            .await
    }

    /// As [`Self::closed`]; `official` drives the official Rust client instead of our raw one.
    async fn closed_with(
        &mut self,
        workload: &str,
        systems: &[Sys],
        senders: usize,
        batch: usize,
        size: usize,
        official: bool,
    ) {
        let params = if official {
            format!("client=official senders={senders} size={size}")
        } else {
            format!("senders={senders} batch={batch} size={size}")
        };
        for rep in 0..=self.cli.reps {
            for &s in systems {
                let sys = match self.start(s) {
                    Ok(sys) => sys,
                    Err(e) => {
                        if rep == 0 {
                            eprintln!("skipping a system for {workload}: {e}");
                        }
                        continue;
                    }
                };
                let target = match s {
                    Sys::Nats(_) => {
                        if let Err(e) = workloads::prepare_nats(sys.port).await {
                            eprintln!("NATS stream creation failed: {e}");
                            continue;
                        }
                        Target::Nats { port: sys.port }
                    }
                    _ if official => Target::Official { port: sys.port },
                    _ => Target::V2 {
                        port: sys.port,
                        batch,
                    },
                };
                let dur = if rep == 0 {
                    self.dur().mul_f64(0.3)
                } else {
                    self.dur()
                };
                let cpu0 = sys.cpu_us();
                let run = workloads::closed_loop(target, senders, size, dur).await;
                if rep > 0 {
                    self.record(workload, &params, &sys, rep, &run, cpu0);
                }
            }
        }
    }

    fn median_of(
        &self,
        workload: &str,
        params: &str,
        system: &str,
        f: impl Fn(&Row) -> f64,
    ) -> Option<f64> {
        let v: Vec<f64> = self
            .rows
            .iter()
            .filter(|r| r.workload == workload && r.params == params && r.system == system)
            .map(f)
            .collect();
        (!v.is_empty()).then(|| measure::median(v))
    }

    async fn w1(&mut self) {
        let nats = if self.cli.no_nats {
            vec![]
        } else {
            vec![Sys::Nats(Flush::Async)]
        };
        for n in [1usize, 8, 64] {
            let mut systems = vec![Sys::Echo, Sys::Ours(Flush::Async)];
            systems.extend(nats.iter().copied());
            self.closed("W1", &systems, n, 1, 1024).await;
        }
        self.closed("W1", &[Sys::Echo, Sys::Ours(Flush::Async)], 8, 16, 1024)
            .await;
        self.w1_official().await;
    }

    /// W1 through the official Rust client, beside the echo driven by the same client: the
    /// server CPU per message our users' client costs.
    async fn w1_official(&mut self) {
        let systems = [Sys::Echo, Sys::Ours(Flush::Async)];
        for n in [1usize, 64] {
            self.closed_with("W1", &systems, n, 1, 1024, true).await;
        }
    }

    async fn w2(&mut self) {
        let mut systems = vec![Sys::Ours(Flush::Sync)];
        if !self.cli.no_nats {
            systems.insert(0, Sys::Nats(Flush::Sync));
        }
        for n in [1usize, 64] {
            self.closed("W2", &systems, n, 1, 1024).await;
        }
    }

    fn max_rate(&self) -> f64 {
        self.median_of("W1", "senders=64 batch=1 size=1024", "ours", |r| {
            r.msg_per_s
        })
        .or(self.cli.w1_max)
        .unwrap_or(10_000.0)
    }

    async fn w3(&mut self) {
        let rate = (self.max_rate() * 0.5).max(100.0);
        // The echo ceiling at the same rate, interleaved: what of the tail is the machine's.
        for rep in 1..=self.cli.reps {
            for s in [Sys::Echo, Sys::Ours(Flush::Async)] {
                let Ok(sys) = self.start(s) else {
                    continue;
                };
                let cpu0 = sys.cpu_us();
                let run = workloads::open_loop(sys.port, rate, 1024, self.dur().mul_f64(2.0)).await;
                self.record(
                    "W3",
                    &format!("open-loop rate={rate:.0}/s (50% of W1 max)"),
                    &sys,
                    rep,
                    &run,
                    cpu0,
                );
            }
        }
    }

    async fn w4(&mut self) {
        for rep in 1..=self.cli.reps {
            let Ok(sys) = self.start(Sys::Ours(Flush::Async)) else {
                return;
            };
            let cpu0 = sys.cpu_us();
            let run = workloads::end_to_end(sys.port, 2000.0, self.dur(), 1, "W4Group").await;
            self.record(
                "W4",
                "rate=2000/s, 1 consumer, long poll, batch 32",
                &sys,
                rep,
                &run,
                cpu0,
            );
        }
    }

    async fn w5(&mut self) {
        let rate = self.max_rate() * 0.8;
        for rep in 1..=self.cli.reps {
            let Ok(sys) = self.start(Sys::Ours(Flush::Async)) else {
                return;
            };
            let cpu0 = sys.cpu_us();
            let mut run = workloads::end_to_end(sys.port, rate, self.dur(), 2, "W5Group").await;
            run.extra = format!("produce rate {rate:.0}/s; lag at end = lost");
            self.record(
                "W5",
                &format!("rate={rate:.0}/s (80% of W1 max), 2 consumers"),
                &sys,
                rep,
                &run,
                cpu0,
            );
        }
    }

    async fn w6(&mut self, count: u64) {
        for rep in 1..=self.cli.reps {
            let dir = self.cli.scratch.join("w6");
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::create_dir_all(&dir);
            let sys = match systems::ours_standalone(&self.cli.scratch, BASE, Flush::Async, None) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("W6: {e}");
                    return;
                }
            };
            if let Err(e) = workloads::preload(sys.port, count, 1024).await {
                eprintln!("W6 preload failed: {e}");
                return;
            }
            let data = sys.dir.clone();
            drop(sys);
            let Ok(sys) =
                systems::ours_standalone(&self.cli.scratch, BASE, Flush::Async, Some(&data))
            else {
                return;
            };
            let cpu0 = sys.cpu_us();
            let run =
                workloads::drain(sys.port, "W6Group", count, 4, Duration::from_secs(300)).await;
            self.record(
                "W6",
                &format!(
                    "backlog={count} x 1KiB after restart, 4 consumers, receive 32 + batched ack"
                ),
                &sys,
                rep,
                &run,
                cpu0,
            );
        }
    }

    async fn w7(&mut self) {
        use systems::Replication::{Async, Sync};
        self.closed("W7", &[Sys::Repl(Async), Sys::Repl(Sync)], 64, 1, 1024)
            .await;
        // Replication lag under W1 load (ASYNC_MASTER), sampled every 50 ms.
        for rep in 1..=self.cli.reps {
            let Ok(sys) = self.start(Sys::Repl(Async)) else {
                return;
            };
            let cpu0 = sys.cpu_us();
            let load = tokio::spawn(workloads::closed_loop(
                Target::V2 {
                    port: sys.port,
                    batch: 1,
                },
                64,
                1024,
                self.dur(),
            ));
            let mut run = Run::default();
            let end = Instant::now() + self.dur();
            while Instant::now() < end {
                let lag =
                    tokio::task::spawn_blocking(|| systems::runtime_value(BASE + 1, "haSlaves"))
                        .await
                        .ok()
                        .flatten();
                if let Some(l) =
                    lag.and_then(|s| s.split(',').nth(3).and_then(|v| v.parse::<u64>().ok()))
                {
                    let _ = run.hist.record(l.max(1));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let sent = load.await.map(|r| r.msgs).unwrap_or(0);
            run.msgs = sent;
            run.elapsed = self.dur();
            run.extra = "latency columns are replication lag in BYTES, sampled every 50 ms".into();
            self.record(
                "W7-lag",
                "ASYNC_MASTER, 64 senders; p50/p99 = slave lag in bytes",
                &sys,
                rep,
                &run,
                cpu0,
            );
        }
        // Catch-up: an empty slave copies a 300 MB log.
        for rep in 1..=self.cli.reps {
            let Ok(mut sys) = systems::ours_replicated(&self.cli.scratch, BASE, Async, false)
            else {
                return;
            };
            if systems::runtime_value(BASE + 1, "commitLogMaxOffset").is_none() {
                return;
            }
            let _ = std::process::Command::new(systems::sibling("mqadmin"))
                .args([
                    "updateTopic",
                    "-n",
                    &format!("127.0.0.1:{BASE}"),
                    "-c",
                    "DefaultCluster",
                    "-t",
                    systems::TOPIC,
                ])
                .output();
            tokio::time::sleep(Duration::from_millis(500)).await;
            if workloads::preload(sys.port, 300_000, 1024).await.is_err() {
                return;
            }
            let end: i64 = systems::runtime_value(BASE + 1, "commitLogMaxOffset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let t0 = Instant::now();
            if systems::start_slave_for(&mut sys, BASE).is_err() {
                return;
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let s: i64 = systems::runtime_value(BASE + 5, "commitLogMaxOffset")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if s >= end {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut run = Run {
                msgs: 300_000,
                bytes: end as u64,
                elapsed: t0.elapsed(),
                ..Run::default()
            };
            run.extra = format!("{end} bytes copied");
            self.record(
                "W7-catchup",
                "empty slave copies a 300k x 1 KiB log",
                &sys,
                rep,
                &run,
                0,
            );
        }
    }

    async fn w8(&mut self) {
        for n in [1usize, 64] {
            self.closed(
                "W8",
                &[Sys::Ours(Flush::Async), Sys::Split(Flush::Async)],
                n,
                1,
                1024,
            )
            .await;
        }
    }

    async fn w9(&mut self) {
        for rep in 1..=self.cli.reps {
            let dir = self.cli.scratch.join("w9");
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::create_dir_all(&dir);
            let t0 = Instant::now();
            let args: Vec<String> =
                systems::standalone_args(&dir, BASE, &["autoCreateTopicEnable=true"]);
            let Ok(child) = std::process::Command::new(systems::sibling("rmq"))
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
            else {
                return;
            };
            let sys = System {
                name: "ours".into(),
                procs: vec![systems::Proc(child)],
                port: BASE + 3,
                namesrv_port: BASE,
                contract: systems::contract(Flush::Async),
                dir,
            };
            let mut run = Run::default();
            let payload = bytes::Bytes::from_static(b"first");
            if workloads::until_first_ack(sys.port, &payload, Duration::from_secs(20)).await {
                run.msgs = 1;
            }
            let e = t0.elapsed();
            let _ = run.hist.record(e.as_micros() as u64);
            run.errors = u64::from(run.msgs == 0);
            run.elapsed = e;
            run.extra = format!("exec to first acknowledged send: {} ms", e.as_millis());
            self.record(
                "W9",
                "exec -> first acked send (auto-created topic)",
                &sys,
                rep,
                &run,
                0,
            );
        }
    }

    async fn w10(&mut self) {
        let nats = !self.cli.no_nats;
        for size in [128usize, 1024, 16 * 1024, 1024 * 1024] {
            let mut systems = vec![Sys::Echo, Sys::Ours(Flush::Async)];
            if nats && size < 1024 * 1024 {
                systems.push(Sys::Nats(Flush::Async));
            }
            self.closed("W10", &systems, 8, 1, size).await;
        }
    }

    fn summary(&self) -> String {
        let mut groups: BTreeMap<(String, String, String), Vec<&Row>> = BTreeMap::new();
        for r in &self.rows {
            groups
                .entry((r.workload.clone(), r.params.clone(), r.system.clone()))
                .or_default()
                .push(r);
        }
        let mut s = String::from(
            "| workload | params | system | msg/s | MB/s | p50 µs | p99 µs | p999 µs | CPU µs/msg | RSS MiB | errors | lost | contract |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for ((w, p, sys), rows) in &groups {
            let m = |f: &dyn Fn(&Row) -> f64| measure::median(rows.iter().map(|r| f(r)).collect());
            s.push_str(&format!(
                "| {w} | {p} | {sys} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {} | {} | {} |\n",
                m(&|r| r.msg_per_s),
                m(&|r| r.mb_per_s),
                m(&|r| r.p50_us as f64),
                m(&|r| r.p99_us as f64),
                m(&|r| r.p999_us as f64),
                m(&|r| r.server_cpu_us_per_msg),
                m(&|r| r.server_rss_mb),
                rows.iter().map(|r| r.errors).sum::<u64>(),
                rows.iter().map(|r| r.lost).sum::<u64>(),
                rows[0].contract
            ));
        }
        s
    }

    fn targets(&self) -> String {
        let g = |w: &str, p: &str, sys: &str, f: fn(&Row) -> f64| self.median_of(w, p, sys, f);
        let rate = |r: &Row| r.msg_per_s;
        let p50 = |r: &Row| r.p50_us as f64;
        let mut out = String::from("| target | measured | met |\n|---|---|---|\n");
        let mut line = |name: &str, measured: Option<(f64, String)>, ok: &dyn Fn(f64) -> bool| {
            match measured {
                Some((v, text)) => out.push_str(&format!(
                    "| {name} | {text} | {} |\n",
                    if ok(v) { "yes" } else { "**no**" }
                )),
                None => out.push_str(&format!("| {name} | not measured | – |\n")),
            }
        };
        let p64 = "senders=64 batch=1 size=1024";
        let p1 = "senders=1 batch=1 size=1024";
        let ours64 = g("W1", p64, "ours", rate);
        let r = ours64
            .zip(g("W1", p64, "grpc-echo", rate))
            .map(|(a, b)| (a / b, format!("{a:.0} / {b:.0} msg/s = {:.2}×", a / b)));
        line("W1 N=64 ≥ 0.6× grpc-echo", r, &|v| v >= 0.6);
        let r = ours64
            .zip(g("W1", p64, "nats-lazy", rate))
            .map(|(a, b)| (a / b, format!("{a:.0} / {b:.0} msg/s = {:.2}×", a / b)));
        line("W1 N=64 ≥ 0.5× NATS lazy", r, &|v| v >= 0.5);
        let r = g("W1", p1, "ours", p50)
            .zip(g("W1", p1, "grpc-echo", p50))
            .map(|(a, b)| (a / b, format!("{a:.0} / {b:.0} µs = {:.2}×", a / b)));
        line("W1 N=1 p50 ≤ 1.5× grpc-echo", r, &|v| v <= 1.5);
        let r = g("W1", "senders=8 batch=16 size=1024", "ours", |r| r.mb_per_s)
            .map(|v| (v, format!("{v:.0} MB/s")));
        line("W1 batch 16, N=8 ≥ 250 MB/s", r, &|v| v >= 250.0);
        let s64 = g("W2", p64, "ours", rate);
        let r = s64
            .zip(g("W2", p64, "nats-always", rate))
            .map(|(a, b)| (a / b, format!("{a:.0} / {b:.0} msg/s = {:.1}×", a / b)));
        line("W2 N=64 ≥ 5× NATS always", r, &|v| v >= 5.0);
        let r = s64
            .zip(ours64)
            .map(|(a, b)| (a / b, format!("{a:.0} / {b:.0} msg/s = {:.2}×", a / b)));
        line("W2 N=64 ≥ 0.8× our W1", r, &|v| v >= 0.8);
        let w3 = self
            .rows
            .iter()
            .find(|r| r.workload == "W3")
            .map(|r| r.params.clone())
            .unwrap_or_default();
        let r = g("W3", &w3, "ours", |r| r.p99_us as f64).map(|v| (v, format!("p99 {v:.0} µs")));
        line("W3 at 50%: p99 ≤ 2 ms", r, &|v| v <= 2000.0);
        let r = g("W3", &w3, "ours", |r| r.p999_us as f64).map(|v| (v, format!("p999 {v:.0} µs")));
        line("W3 at 50%: p999 ≤ 5 ms", r, &|v| v <= 5000.0);
        let w4 = "rate=2000/s, 1 consumer, long poll, batch 32";
        let r = g("W4", w4, "ours", p50).map(|v| (v, format!("p50 {v:.0} µs")));
        line("W4 e2e p50 ≤ 1 ms", r, &|v| v <= 1000.0);
        let r = g("W4", w4, "ours", |r| r.p99_us as f64).map(|v| (v, format!("p99 {v:.0} µs")));
        line("W4 e2e p99 ≤ 5 ms", r, &|v| v <= 5000.0);
        let w6 = self
            .rows
            .iter()
            .find(|r| r.workload == "W6")
            .map(|r| r.params.clone())
            .unwrap_or_default();
        let r = g("W6", &w6, "ours", |r| r.mb_per_s).map(|v| (v, format!("{v:.0} MB/s")));
        line("W6 backlog catch-up ≥ 200 MB/s", r, &|v| v >= 200.0);
        let r = g("W8", p1, "ours-split", p50)
            .zip(g("W8", p1, "ours", p50))
            .map(|(a, b)| (a - b, format!("{a:.0} − {b:.0} = {:.0} µs", a - b)));
        line("W8 proxy hop adds ≤ 100 µs p50", r, &|v| v <= 100.0);
        let r = g("W8", p64, "ours-split", rate)
            .zip(g("W8", p64, "ours", rate))
            .map(|(a, b)| (a / b, format!("{a:.0} / {b:.0} msg/s = {:.2}×", a / b)));
        line("W8 split keeps ≥ 0.7× standalone", r, &|v| v >= 0.7);
        let r = g("W7", p64, "ours-sync-master", rate)
            .zip(g("W7", p64, "ours-async-master", rate))
            .map(|(a, b)| (a / b, format!("{a:.0} / {b:.0} msg/s = {:.2}×", a / b)));
        line("W7 SYNC_MASTER ≥ 0.7× ASYNC_MASTER", r, &|v| v >= 0.7);
        let r = g(
            "W7-catchup",
            "empty slave copies a 300k x 1 KiB log",
            "ours-async-master",
            |r| r.mb_per_s,
        )
        .map(|v| (v, format!("{v:.0} MB/s")));
        line("slave catch-up ≥ 200 MB/s", r, &|v| v >= 200.0);
        let r = g("W1", p64, "ours", |r| r.server_cpu_us_per_msg)
            .map(|v| (v, format!("{v:.1} µs/msg")));
        line("send path ≤ 15 µs server CPU per message", r, &|v| {
            v <= 15.0
        });
        let r = g(
            "W9",
            "exec -> first acked send (auto-created topic)",
            "ours",
            |r| r.server_rss_mb,
        )
        .map(|v| (v, format!("{v:.0} MiB just after start")));
        line("idle RSS ≤ 256 MiB", r, &|v| v <= 256.0);
        let r = g(
            "W9",
            "exec -> first acked send (auto-created topic)",
            "ours",
            |r| r.secs,
        )
        .map(|v| (v, format!("{:.0} ms", v * 1000.0)));
        line("W9 < 1 s exec → first acked send", r, &|v| v < 1.0);
        let (empty, big) = (
            "restart after kill -9, log=empty",
            "restart after kill -9, log=4GB",
        );
        let r = g("W11", big, "ours", |r| r.secs).map(|v| (v, format!("{:.0} ms", v * 1000.0)));
        line("W11 4 GB log: restart → first ack < 1 s", r, &|v| v < 1.0);
        let r = g("W11", big, "ours", |r| r.secs)
            .zip(g("W11", empty, "ours", |r| r.secs))
            .map(|(a, b)| (a / b, format!("{:.2}×", a / b)));
        line("W11 4 GB vs empty log ≤ 1.5×", r, &|v| v <= 1.5);
        let official = "client=official senders=64 size=1024";
        let r = g("W1", official, "ours", |r| r.server_cpu_us_per_msg)
            .zip(g("W1", official, "grpc-echo", |r| r.server_cpu_us_per_msg))
            .map(|(a, b)| (a / b, format!("{:.2}× ({a:.1} vs {b:.1} µs/msg)", a / b)));
        line(
            "W1 official client N=64: server CPU/msg ≤ 1.2× echo",
            r,
            &|v| v <= 1.2,
        );
        out
    }
}

fn main() {
    let cli = Cli::parse_from(std::env::args());
    if let Cmd::EchoServer { port } = cli.cmd {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        if let Err(e) = rt.block_on(drivers::serve_echo(port)) {
            eprintln!("echo server: {e}");
            std::process::exit(1);
        }
        return;
    }
    // The load generator runs on one worker thread, the same for every system.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(async move {
        let _ = std::fs::create_dir_all(&cli.scratch);
        let probe = measure::fsync_probe(&cli.scratch, 200);
        let cmd = cli.cmd.clone();
        let mut b = Bench {
            cli,
            rows: Vec::new(),
            probe_before: probe,
        };
        match cmd {
            Cmd::W1 => b.w1().await,
            Cmd::W1Official => b.w1_official().await,
            Cmd::W2 => b.w2().await,
            Cmd::W3 => b.w3().await,
            Cmd::W4 => b.w4().await,
            Cmd::W5 => b.w5().await,
            Cmd::W6 => b.w6(300_000).await,
            Cmd::W7 => b.w7().await,
            Cmd::W8 => b.w8().await,
            Cmd::W9 => b.w9().await,
            Cmd::W10 => b.w10().await,
            Cmd::W11 => b.w11().await,
            Cmd::All => {
                b.w9().await;
                b.w1().await;
                b.w2().await;
                b.w3().await;
                b.w4().await;
                b.w5().await;
                b.w6(300_000).await;
                b.w7().await;
                b.w8().await;
                b.w10().await;
                b.w11().await;
            }
            Cmd::Smoke => {
                b.cli.reps = 1;
                b.cli.no_nats = true;
                b.closed("W1", &[Sys::Echo, Sys::Ours(Flush::Async)], 8, 1, 1024)
                    .await;
                b.closed("W1", &[Sys::Ours(Flush::Async)], 4, 16, 1024)
                    .await;
                b.closed("W2", &[Sys::Ours(Flush::Sync)], 8, 1, 1024).await;
                b.w4().await;
                b.w6(2_000).await;
                b.w9().await;
            }
            Cmd::EchoServer { .. } => {}
            Cmd::Profile { shape } => {
                let (scratch, secs) = (b.cli.scratch.clone(), b.cli.secs);
                if let Err(e) = profile::run(shape, &scratch, BASE, secs).await {
                    eprintln!("profile failed: {e}");
                    return 1;
                }
                return 0;
            }
        }
        let probe_after = measure::fsync_probe(&b.cli.scratch, 200);
        println!("\n{}", b.summary());
        println!(
            "fsync probe p99: {} µs before, {probe_after} µs after{}",
            b.probe_before,
            if probe_after > 2 * b.probe_before.max(1) || b.probe_before > 2 * probe_after.max(1) {
                " (NOISY RUN)"
            } else {
                ""
            }
        );
        println!("\n{}", b.targets());
        let bad: Vec<&Row> = b
            .rows
            .iter()
            .filter(|r| r.errors > 0 || r.lost > 0)
            .collect();
        for r in &bad {
            eprintln!(
                "FAILED: {} {} {}: {} errors, {} lost",
                r.workload, r.system, r.params, r.errors, r.lost
            );
        }
        if b.rows.is_empty() {
            eprintln!("FAILED: nothing was measured");
            return 1;
        }
        i32::from(!bad.is_empty())
    });
    std::process::exit(code);
}
