//! With each installed Compose generation (v2 `docker compose`, Debian's 1.29 `docker-compose`):
//! `up -d` at the repository root, then produce and consume through both published
//! proxies, `docker kill` broker-a, check that sends and consumption continue, restart it, check
//! that nothing acknowledged was lost, and bring everything down with its volumes. Skipped (with a
//! message) where no Docker engine answers.

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const PROJECT: &str = "rmqe2e";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One Compose generation: `docker compose` (v2) or Debian's `docker-compose` (1.29).
#[derive(Clone, Copy)]
struct Compose(&'static [&'static str]);

const GENERATIONS: [Compose; 2] = [
    Compose(&["docker", "compose"]),
    Compose(&["docker-compose"]),
];

impl Compose {
    fn name(self) -> String {
        self.0.join(" ")
    }

    fn installed(self) -> bool {
        Command::new(self.0[0])
            .args(&self.0[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn run(self, args: &[&str]) -> std::process::Output {
        Command::new(self.0[0])
            .args(&self.0[1..])
            .current_dir(root())
            .args(["-p", PROJECT])
            .args(args)
            .output()
            .expect("run compose")
    }

    fn ok(self, args: &[&str]) -> String {
        let o = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success(),
            "{} {args:?} failed:\n{text}",
            self.name()
        );
        text
    }

    fn mqadmin(self, args: &[&str]) -> String {
        let mut a = vec!["exec", "-T", "namesrv1", "/usr/local/bin/mqadmin"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-n", "127.0.0.1:9876"]);
        let o = self.run(&a);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }
}

struct Down(Compose);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = self.0.run(&["down", "-v", "--remove-orphans"]);
    }
}

fn client(url: &str) -> ClientOption {
    let mut c = ClientOption::default();
    c.set_access_url(url);
    c.set_timeout(Duration::from_secs(5));
    c.set_long_polling_timeout(Duration::from_secs(6));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_2m2s_survives_docker_kill_of_a_master() {
    if !docker_available() {
        eprintln!("SKIPPED: no Docker engine answers `docker info`; the compose test needs one");
        return;
    }
    let build = Command::new("bash")
        .arg(root().join("scripts/docker-image"))
        .current_dir(root())
        .output()
        .expect("docker-image");
    assert!(
        build.status.success(),
        "image build failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let installed: Vec<Compose> = GENERATIONS.into_iter().filter(|c| c.installed()).collect();
    assert!(
        !installed.is_empty(),
        "a Docker engine but neither docker compose nor docker-compose"
    );
    for dc in GENERATIONS {
        if !dc.installed() {
            eprintln!("SKIPPED for {}: not installed", dc.name());
        }
    }
    for dc in installed {
        eprintln!("compose scenario with {}", dc.name());
        scenario(dc).await;
    }
}

/// Up, produce and consume through both proxies, kill broker-a, keep going, restart it, check
/// nothing acknowledged was lost, and bring everything down with its volumes.
async fn scenario(dc: Compose) {
    let o = dc.run(&["config", "-q"]);
    assert!(
        o.status.success(),
        "{} config rejects compose.yaml:\n{}",
        dc.name(),
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = dc.run(&["down", "-v", "--remove-orphans"]);
    let _down = Down(dc);
    dc.ok(&["up", "-d"]);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cl = dc.mqadmin(&["clusterList"]);
        if ["broker-a", "broker-b"]
            .iter()
            .all(|b| cl.lines().filter(|l| l.contains(b)).count() == 2)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the four store nodes never registered:\n{cl}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    loop {
        let ha = dc.mqadmin(&["haStatus", "-c", "rocketmq-cluster"]);
        if ha.matches("#InSyncSlaveNum\t1").count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "slaves never connected:\n{ha}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = dc.mqadmin(&[
        "updateTopic",
        "-c",
        "rocketmq-cluster",
        "-t",
        "ComposeTopic",
        "-r",
        "2",
        "-w",
        "2",
    ]);
    assert_eq!(out.matches("success").count(), 2, "{out}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut acked: HashSet<String> = HashSet::new();
    let mut producers = Vec::new();
    for url in ["127.0.0.1:8081", "127.0.0.1:8082"] {
        let mut o = ProducerOption::default();
        o.set_topics(vec!["ComposeTopic"]);
        let mut p = Producer::new(o, client(url)).unwrap();
        p.start()
            .await
            .expect("producer start against a published proxy");
        producers.push(p);
    }
    for i in 0..40 {
        let p = &producers[i % 2];
        let m = MessageBuilder::builder()
            .set_topic("ComposeTopic")
            .set_body(format!("before-{i}").into_bytes())
            .build()
            .unwrap();
        acked.insert(
            p.send(m)
                .await
                .expect("send before the kill")
                .message_id()
                .to_string(),
        );
    }
    let mut so = SimpleConsumerOption::default();
    so.set_consumer_group("ComposeGroup");
    so.set_topics(vec!["ComposeTopic"]);
    let mut consumer = SimpleConsumer::new(so, client("127.0.0.1:8082")).unwrap();
    consumer.start().await.unwrap();
    let mut delivered: HashSet<String> = HashSet::new();
    let expr = FilterExpression::new(FilterType::Tag, "*");
    for _ in 0..4 {
        for m in consumer
            .receive_with("ComposeTopic", &expr, 32, Duration::from_secs(10))
            .await
            .unwrap_or_default()
        {
            let _ = consumer.ack(&m).await;
            delivered.insert(m.message_id().to_string());
        }
    }
    assert!(!delivered.is_empty(), "consumption through proxy2 works");

    dc.ok(&["kill", "broker-a"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut after_kill = 0;
    for i in 0..40 {
        let p = &producers[i % 2];
        let m = MessageBuilder::builder()
            .set_topic("ComposeTopic")
            .set_body(format!("after-{i}").into_bytes())
            .build()
            .unwrap();
        if let Ok(r) = p.send(m).await {
            acked.insert(r.message_id().to_string());
            after_kill += 1;
        }
    }
    assert!(
        after_kill >= 35,
        "sends continue through broker-b ({after_kill}/40)"
    );
    for _ in 0..8 {
        for m in consumer
            .receive_with("ComposeTopic", &expr, 32, Duration::from_secs(10))
            .await
            .unwrap_or_default()
        {
            let _ = consumer.ack(&m).await;
            delivered.insert(m.message_id().to_string());
        }
    }

    dc.ok(&["start", "broker-a"]);
    let end = Instant::now() + Duration::from_secs(60);
    let mut idle = 0;
    while Instant::now() < end && (idle < 6 || !acked.iter().all(|id| delivered.contains(id))) {
        let got = consumer
            .receive_with("ComposeTopic", &expr, 32, Duration::from_secs(10))
            .await
            .unwrap_or_default();
        if got.is_empty() {
            idle += 1;
        } else {
            idle = 0;
        }
        for m in got {
            let _ = consumer.ack(&m).await;
            delivered.insert(m.message_id().to_string());
        }
        if acked.iter().all(|id| delivered.contains(id)) {
            break;
        }
    }
    let lost: Vec<&String> = acked.iter().filter(|id| !delivered.contains(*id)).collect();
    assert!(lost.is_empty(), "{} acknowledged messages lost", lost.len());
    for p in producers {
        let _ = p.shutdown().await;
    }
    let _ = consumer.shutdown().await;
}
