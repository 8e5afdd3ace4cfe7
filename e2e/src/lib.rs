//! Test harness: starts real `rmq` processes on loopback ports, stops them on drop.
//!
//! Ports come in slots of ten reserved with `flock` on a slot file (iggy's approach): nothing is
//! bound in advance, so there is no window between choosing a port and the server binding it, and
//! concurrent test binaries never collide.

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod clients;
pub mod cluster;
pub mod raw;

/// Directory of the built `rmq` and `mqadmin` binaries.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("RMQ_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("debug")
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --bins` first",
        p.display()
    );
    p
}

/// Ten consecutive ports held for the life of this value.
pub struct PortSlot {
    pub base: u16,
    _lock: File,
}

impl PortSlot {
    pub fn acquire() -> Self {
        let dir = std::env::temp_dir().join("rmq-port-slots");
        std::fs::create_dir_all(&dir).expect("slot dir");
        for i in 0..400u16 {
            let path = dir.join(format!("slot-{i}.lock"));
            let f = File::create(&path).expect("slot file");
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    libc::LOCK_EX | libc::LOCK_NB,
                )
            };
            if rc == 0 {
                return Self {
                    base: 21000 + i * 10,
                    _lock: f,
                };
            }
        }
        panic!("no free port slot");
    }

    pub fn port(&self, i: u16) -> u16 {
        assert!(i < 10);
        self.base + i
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, args: &[String], cwd: &Path, log_dir: &Path) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let child = spawn_rmq(args, cwd, &log);
        Self {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until something accepts connections on `port` (bounded).
pub fn wait_port(port: u16, proc: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} did not open port {port}; log:\n{}",
        proc.name,
        proc.log_text()
    );
}

/// `rmq standalone` with its own data folder and ports.
pub struct Standalone {
    pub slot: PortSlot,
    pub dir: tempfile::TempDir,
    pub proc: Proc,
    extra: Vec<String>,
}

impl Standalone {
    pub const NAMESRV: u16 = 0;
    pub const STORE: u16 = 1;
    pub const PROXY: u16 = 3;
    pub const METRICS: u16 = 4;

    pub fn start(extra: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), extra)
    }

    /// Starts on a directory prepared by the caller (the store lives in `dir/data/store`).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let slot = PortSlot::acquire();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let proc = Self::spawn(&slot, dir.path(), &extra);
        Self {
            slot,
            dir,
            proc,
            extra,
        }
    }

    fn args(slot: &PortSlot, dir: &Path, extra: &[String]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "standalone".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--namesrv-port".into(),
            slot.port(Self::NAMESRV).to_string(),
            "--proxy-port".into(),
            slot.port(Self::PROXY).to_string(),
            "--metrics-port".into(),
            slot.port(Self::METRICS).to_string(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--set".into(),
            format!("listenPort={}", slot.port(Self::STORE)),
            "--set".into(),
            "brokerIP1=127.0.0.1".into(),
            "--set".into(),
            "brokerName=broker-a".into(),
        ];
        args.extend(extra.iter().cloned());
        args
    }

    fn spawn(slot: &PortSlot, dir: &Path, extra: &[String]) -> Proc {
        let p = Proc::spawn("standalone", &Self::args(slot, dir, extra), dir, dir);
        wait_port(slot.port(Self::PROXY), &p);
        wait_port(slot.port(Self::NAMESRV), &p);
        p
    }

    /// The store root inside the data folder.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("data").join("store")
    }

    /// Starts the same node again on the same data (after a kill).
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.proc = Self::spawn(&self.slot, self.dir.path(), &self.extra);
    }

    /// Starts it again with more settings (kept for later restarts).
    pub fn restart_with(&mut self, more: &[&str]) {
        self.extra.extend(more.iter().map(|s| s.to_string()));
        self.restart();
    }

    /// Stops it (SIGTERM: a clean shutdown).
    pub fn stop(&mut self) {
        self.proc.terminate();
    }

    /// Runs `rmq standalone` on this data expecting it to refuse to start: returns its exit
    /// status and output (bounded wait).
    pub fn start_refused(&mut self, more: &[&str]) -> (Option<std::process::ExitStatus>, String) {
        self.proc.kill9();
        let mut extra = self.extra.clone();
        extra.extend(more.iter().map(|s| s.to_string()));
        run_to_exit(
            &Self::args(&self.slot, self.dir.path(), &extra),
            self.dir.path(),
        )
    }

    pub fn access_url(&self) -> String {
        format!("127.0.0.1:{}", self.slot.port(Self::PROXY))
    }

    pub fn namesrv(&self) -> String {
        format!("127.0.0.1:{}", self.slot.port(Self::NAMESRV))
    }

    pub fn mqadmin(&self, args: &[&str]) -> String {
        mqadmin(&self.namesrv(), args)
    }

    pub fn create_topic(&self, topic: &str, extra: &[&str]) {
        let mut a = vec!["updateTopic", "-c", "DefaultCluster", "-t", topic];
        a.extend_from_slice(extra);
        let out = self.mqadmin(&a);
        assert!(out.contains("success"), "updateTopic failed: {out}");
        wait_route(&self.namesrv(), topic);
    }
}

/// `rmq <args>` in `cwd`, stdout and stderr into `log`, with no inherited name-server address.
fn spawn_rmq(args: &[String], cwd: &Path, log: &Path) -> Child {
    let out = File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    Command::new(bin("rmq"))
        .args(args)
        .current_dir(cwd)
        .env_remove("NAMESRV_ADDR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn rmq")
}

/// Runs `rmq <args>` to its exit (at most 60 s; killed after that): status and output.
pub fn run_to_exit(args: &[String], cwd: &Path) -> (Option<std::process::ExitStatus>, String) {
    let log = cwd.join(format!("run-{}.log", std::process::id()));
    let mut child = spawn_rmq(args, cwd, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (status, text)
}

/// Runs `mqadmin <args> -n <namesrv>`; returns stdout+stderr, asserting exit 0.
pub fn mqadmin(namesrv: &str, args: &[&str]) -> String {
    let (code, out) = mqadmin_status(namesrv, args);
    assert_eq!(code, 0, "mqadmin {args:?} failed:\n{out}");
    out
}

pub fn mqadmin_status(namesrv: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin("mqadmin"))
        .args(args)
        .arg("-n")
        .arg(namesrv)
        .env_remove("NAMESRV_ADDR")
        .output()
        .expect("run mqadmin");
    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

/// Waits until the name server has a route for `topic` (registration is asynchronous).
pub fn wait_route(namesrv: &str, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (code, out) = mqadmin_status(namesrv, &["topicRoute", "-t", topic]);
        if code == 0 && out.contains("queueDatas") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("route of {topic} never appeared");
}
