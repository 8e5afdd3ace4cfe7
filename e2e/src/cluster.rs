//! The seed 2m-2s topology as processes on 127.0.0.1: two name servers, broker-a, broker-a-s,
//! broker-b, broker-b-s from copies of the seed property files (only ports, paths, addresses and
//! the name-server list rewritten), and two proxies.

use crate::{PortSlot, Proc, wait_port};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CLUSTER: &str = "rocketmq-cluster";
pub const NODES: [&str; 4] = ["broker-a", "broker-a-s", "broker-b", "broker-b-s"];

pub fn seed_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The shared fixtures beside the checkout, else the repository's own byte-identical copies
    // (docker/conf), so a checkout anywhere runs the cluster tests.
    for c in [
        here.join("../../shared/fixtures/seed-2m-2s-sync"),
        here.join("../shared/fixtures/seed-2m-2s-sync"),
        here.join("../docker/conf"),
    ] {
        if c.exists() {
            return c;
        }
    }
    panic!("seed-2m-2s-sync fixtures not found");
}

pub struct Cluster2m2s {
    pub a: PortSlot,
    pub b: PortSlot,
    pub dir: tempfile::TempDir,
    pub procs: HashMap<String, Proc>,
    overrides: Vec<(String, String)>,
    /// Keys set on every node, slaves included.
    every_node: Vec<(String, String)>,
}

impl Cluster2m2s {
    pub fn namesrv_port(&self, i: u16) -> u16 {
        self.a.port(i)
    }

    pub fn namesrv_list(&self) -> String {
        format!(
            "127.0.0.1:{};127.0.0.1:{}",
            self.namesrv_port(0),
            self.namesrv_port(1)
        )
    }

    pub fn namesrv(&self) -> String {
        format!("127.0.0.1:{}", self.namesrv_port(0))
    }

    /// Store-node port of one of the four nodes (its HA port is the next one).
    pub fn store_port(&self, node: &str) -> u16 {
        let i = NODES.iter().position(|n| *n == node).expect("node") as u16;
        self.a.port(2 + 2 * i)
    }

    pub fn store_addr(&self, node: &str) -> String {
        format!("127.0.0.1:{}", self.store_port(node))
    }

    pub fn proxy(&self, i: u16) -> String {
        format!("127.0.0.1:{}", self.b.port(i))
    }

    pub fn store_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }

    /// Starts everything. `overrides` set keys in the masters' files (e.g. brokerRole=ASYNC_MASTER).
    pub fn start(overrides: &[(&str, &str)]) -> Self {
        Self::start_with(overrides, &[], &[])
    }

    /// As [`Self::start`], plus keys set on every node, and nodes left stopped (start them with
    /// [`Self::start_node`]; their configuration is written).
    pub fn start_with(
        overrides: &[(&str, &str)],
        every_node: &[(&str, &str)],
        stopped: &[&str],
    ) -> Self {
        let a = PortSlot::acquire();
        let b = PortSlot::acquire();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Self {
            a,
            b,
            dir,
            procs: HashMap::new(),
            every_node: Vec::new(),
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for i in 0..2u16 {
            let name = format!("namesrv{}", i + 1);
            let f = c.dir.path().join(format!("{name}.properties"));
            std::fs::write(&f, format!("listenPort={}\n", c.namesrv_port(i))).unwrap();
            let p = Proc::spawn(
                &name,
                &[
                    "namesrv".into(),
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "-c".into(),
                    f.display().to_string(),
                ],
                c.dir.path(),
                c.dir.path(),
            );
            wait_port(c.namesrv_port(i), &p);
            c.procs.insert(name, p);
        }
        c.every_node = every_node
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for node in NODES {
            c.write_config(node);
            if !stopped.contains(&node) {
                c.start_node(node);
            }
        }
        if stopped.is_empty() {
            c.wait_slaves_connected();
        }
        for i in 0..2u16 {
            let name = format!("proxy{}", i + 1);
            let f = c.dir.path().join(format!("{name}.json"));
            std::fs::write(
                &f,
                format!(
                    "{{\"rocketMQClusterName\": \"{CLUSTER}\", \"namesrvAddr\": \"{}\", \"grpcServerPort\": {}, \"metricsPromExporterPort\": {}}}",
                    c.namesrv_list(),
                    c.b.port(i),
                    c.b.port(2 + i)
                ),
            )
            .unwrap();
            let p = Proc::spawn(
                &name,
                &[
                    "proxy".into(),
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "-pc".into(),
                    f.display().to_string(),
                ],
                c.dir.path(),
                c.dir.path(),
            );
            wait_port(c.b.port(i), &p);
            c.procs.insert(name, p);
        }
        c
    }

    /// Copies the seed file, rewriting only ports, paths, addresses and the name-server list.
    fn write_config(&self, node: &str) {
        let seed = std::fs::read_to_string(seed_dir().join(format!("{node}.properties")))
            .expect("seed file");
        let root = self.store_dir(node);
        let i = NODES.iter().position(|n| *n == node).expect("node") as u16;
        let mut out = String::new();
        let mut seen: Vec<&str> = Vec::new();
        for line in seed.lines() {
            let key = line.split('=').next().unwrap_or("").trim();
            if !line.trim_start().starts_with('#') {
                seen.push(key);
            }
            let replaced = match key {
                "brokerIP1" | "brokerIP2" => Some("127.0.0.1".to_string()),
                "namesrvAddr" => Some(self.namesrv_list()),
                "listenPort" => Some(self.store_port(node).to_string()),
                "storePathRootDir" => Some(root.display().to_string()),
                "storePathCommitLog" => Some(root.join("commitlog").display().to_string()),
                "storePathConsumeQueue" => Some(root.join("consumequeue").display().to_string()),
                "storePathIndex" => Some(root.join("index").display().to_string()),
                "storeCheckpoint" => Some(root.join("checkpoint").display().to_string()),
                "abortFile" => Some(root.join("abort").display().to_string()),
                _ => self
                    .overrides
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
                    .filter(|_| !node.ends_with("-s")),
            };
            match replaced {
                Some(v) if !line.trim_start().starts_with('#') => {
                    out.push_str(&format!("{key}={v}\n"))
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        if !node.ends_with("-s") {
            // Keys the seed lacks are added, as an operator would append a line.
            for (k, v) in &self.overrides {
                if !seen.contains(&k.as_str()) {
                    out.push_str(&format!("{k}={v}\n"));
                }
            }
        }
        for (k, v) in &self.every_node {
            out.push_str(&format!("{k}={v}\n"));
        }
        out.push_str(&format!("metricsPromExporterPort={}\n", self.b.port(4 + i)));
        std::fs::write(self.dir.path().join(format!("{node}.properties")), out).unwrap();
    }

    /// Waits (bounded) until both masters report their slave connected.
    pub fn wait_slaves_connected(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for m in ["broker-a", "broker-b"] {
            while self.status(m).get("haSlaves").is_none_or(|s| s.is_empty()) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{m}'s slave never connected"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }

    pub fn start_node(&mut self, node: &str) {
        let f = self.dir.path().join(format!("{node}.properties"));
        let p = Proc::spawn(
            node,
            &[
                "store".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "-c".into(),
                f.display().to_string(),
            ],
            self.dir.path(),
            self.dir.path(),
        );
        wait_port(self.store_port(node), &p);
        self.procs.insert(node.to_string(), p);
    }

    pub fn kill9(&mut self, name: &str) {
        if let Some(mut p) = self.procs.remove(name) {
            p.kill9();
        }
    }

    pub fn mqadmin(&self, args: &[&str]) -> String {
        crate::mqadmin(&self.namesrv(), args)
    }

    /// Runtime key/values of a node (`mqadmin brokerStatus -b`).
    pub fn status(&self, node: &str) -> HashMap<String, String> {
        let (code, out) = crate::mqadmin_status(
            &self.namesrv(),
            &["brokerStatus", "-b", &self.store_addr(node)],
        );
        if code != 0 {
            return HashMap::new();
        }
        out.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    pub fn max_offset(&self, node: &str) -> i64 {
        self.status(node)
            .get("commitLogMaxOffset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    }

    /// Waits (bounded) until `slave` holds everything `master` has.
    pub fn wait_caught_up(&self, master: &str, slave: &str) -> i64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let m = self.max_offset(master);
            let s = self.max_offset(slave);
            if m >= 0 && m == s {
                return m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{slave} did not catch up with {master}: {s} vs {m}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Concatenated commit-log bytes of a node, up to `end`.
    pub fn log_bytes(&self, node: &str, end: i64) -> Vec<u8> {
        let dir = self.store_dir(node).join("commitlog");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    n.len() == 20 && n.to_string_lossy().bytes().all(|b| b.is_ascii_digit())
                })
            })
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let base: i64 = f.file_name().unwrap().to_string_lossy().parse().unwrap();
            let len = std::fs::metadata(&f).unwrap().len() as usize;
            let take = ((end - base).max(0) as usize).min(len);
            let mut buf = vec![0u8; take];
            use std::io::Read;
            std::fs::File::open(&f)
                .unwrap()
                .read_exact(&mut buf)
                .unwrap();
            out.extend_from_slice(&buf);
        }
        out
    }
}
