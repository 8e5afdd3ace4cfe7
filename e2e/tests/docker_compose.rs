//! `docker compose up -d` at the repository root, then produce and consume through both published
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

/// `docker compose` (v2) when present, else Debian's `docker-compose` (1.29).
fn compose(args: &[&str]) -> std::process::Output {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    };
    cmd.current_dir(root())
        .args(["-p", PROJECT])
        .args(args)
        .output()
        .expect("run compose")
}

fn compose_ok(args: &[&str]) -> String {
    let o = compose(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "compose {args:?} failed:\n{text}");
    text
}

struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = compose(&["down", "-v", "--remove-orphans"]);
    }
}

fn mqadmin(args: &[&str]) -> String {
    let mut a = vec!["exec", "-T", "namesrv1", "/usr/local/bin/mqadmin"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-n", "127.0.0.1:9876"]);
    let o = compose(&a);
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
    // Both Compose generations accept the file (the scenario below runs on one of them).
    for tool in [&["docker", "compose"][..], &["docker-compose"][..]] {
        let Ok(o) = Command::new(tool[0])
            .args(&tool[1..])
            .args(["config", "-q"])
            .current_dir(root())
            .output()
        else {
            eprintln!(
                "{} is not installed; its config check is skipped",
                tool.join(" ")
            );
            continue;
        };
        let err = String::from_utf8_lossy(&o.stderr);
        if err.contains("unknown command") || err.contains("is not a docker command") {
            eprintln!(
                "{} is not installed; its config check is skipped",
                tool.join(" ")
            );
            continue;
        }
        assert!(
            o.status.success(),
            "{} config rejects compose.yaml:\n{err}",
            tool.join(" ")
        );
    }
    let _ = compose(&["down", "-v", "--remove-orphans"]);
    let _down = Down;
    compose_ok(&["up", "-d"]);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cl = mqadmin(&["clusterList"]);
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
        let ha = mqadmin(&["haStatus", "-c", "rocketmq-cluster"]);
        if ha.matches("#InSyncSlaveNum\t1").count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "slaves never connected:\n{ha}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = mqadmin(&[
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

    compose_ok(&["kill", "broker-a"]);
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

    compose_ok(&["start", "broker-a"]);
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
