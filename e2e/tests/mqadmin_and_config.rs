//! `mqadmin` commands with Apache's names and headers, operators' config files accepted
//! unchanged, and the Prometheus endpoint under Apache's metric names.

use rmq_e2e::raw::{self, req, resource};
use rmq_e2e::{Proc, Standalone, mqadmin_status, wait_port};
use rmq_proto::v2::*;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for candidate in [
        here.join("../../shared/fixtures"),
        here.join("../shared/fixtures"),
    ] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("shared/fixtures not found beside the repository");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqadmin_commands() {
    let s = Standalone::start(&[]);
    let out = s.mqadmin(&[
        "updatetopic",
        "-c",
        "DefaultCluster",
        "-t",
        "Admin",
        "-r",
        "4",
        "-w",
        "4",
        "-a",
        "+message.type=NORMAL",
    ]);
    assert!(
        out.contains("create topic to 127.0.0.1:"),
        "case-insensitive command name: {out}"
    );
    assert!(
        out.contains("TopicConfig [topicName=Admin, readQueueNums=4, writeQueueNums=4, perm=RW-"),
        "{out}"
    );
    rmq_e2e::wait_route(&s.namesrv(), "Admin");
    assert!(s.mqadmin(&["topicList"]).lines().any(|l| l == "Admin"));
    let route = s.mqadmin(&["topicRoute", "-t", "Admin"]);
    assert!(
        route.contains("\"readQueueNums\":4") && route.contains("0:\"127.0.0.1:"),
        "{route}"
    );
    let listed = s.mqadmin(&["topicRoute", "-t", "Admin", "-l"]);
    assert!(
        listed.contains("#ClusterName") && listed.contains("broker-a") && listed.contains("Total:"),
        "{listed}"
    );
    let cl = s.mqadmin(&["clusterList"]);
    assert!(
        cl.starts_with("#Cluster Name           #Broker Name            #BID  #Addr"),
        "{cl}"
    );
    assert!(
        cl.contains("DefaultCluster") && cl.contains("broker-a"),
        "{cl}"
    );

    let mut c = raw::connect(&s.access_url()).await;
    for i in 0..6u8 {
        let r = c
            .send_message(req(
                SendMessageRequest {
                    messages: vec![raw::message("Admin", &[i; 5])],
                },
                "PYTHON",
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    }
    let status = s.mqadmin(&["topicStatus", "-t", "Admin"]);
    assert!(
        status.starts_with(
            "#Broker Name                      #QID  #Min Offset           #Max Offset"
        ),
        "{status}"
    );
    let total: i64 = status
        .lines()
        .filter(|l| l.starts_with("broker-a"))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<i64>().ok())
        .sum();
    assert_eq!(total, 6, "{status}");

    let g = s.mqadmin(&[
        "updateSubGroup",
        "-c",
        "DefaultCluster",
        "-g",
        "OrderedGroup",
        "-o",
        "true",
        "-r",
        "3",
    ]);
    assert!(
        g.contains("create subscription group to")
            && g.contains("consumeMessageOrderly=true")
            && g.contains("retryMaxTimes=3"),
        "{g}"
    );
    let a = c
        .query_assignment(req(
            QueryAssignmentRequest {
                topic: resource("Admin"),
                group: resource("OrderedGroup"),
                endpoints: None,
            },
            "PYTHON",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status.unwrap().code, Code::Ok as i32);
    assert_eq!(
        a.assignments.len(),
        4,
        "an orderly group gets one assignment per queue"
    );
    let a = c
        .query_assignment(req(
            QueryAssignmentRequest {
                topic: resource("Admin"),
                group: resource("PlainGroup"),
                endpoints: None,
            },
            "PYTHON",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        a.assignments.len(),
        1,
        "a plain group gets one assignment per broker"
    );
    assert_eq!(a.assignments[0].message_queue.as_ref().unwrap().id, -1);

    let progress = s.mqadmin(&["consumerProgress"]);
    assert!(
        progress.contains("#Group") && progress.contains("OrderedGroup"),
        "{progress}"
    );
    let d = s.mqadmin(&[
        "deleteSubGroup",
        "-c",
        "DefaultCluster",
        "-g",
        "OrderedGroup",
    ]);
    assert!(
        d.contains("delete subscription group [OrderedGroup]"),
        "{d}"
    );
    let d = s.mqadmin(&["deleteTopic", "-c", "DefaultCluster", "-t", "Admin"]);
    assert!(
        d.contains("delete topic [Admin] from cluster [DefaultCluster] success."),
        "{d}"
    );
    let mut gone = false;
    for _ in 0..100 {
        let r = c
            .query_route(req(
                QueryRouteRequest {
                    topic: resource("Admin"),
                    endpoints: None,
                },
                "PYTHON",
            ))
            .await
            .unwrap()
            .into_inner();
        if r.status.unwrap().code == Code::TopicNotFound as i32 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "a deleted topic is gone from routes");

    let (code, out) = mqadmin_status(&s.namesrv(), &["noSuchCommand"]);
    assert_ne!(code, 0);
    assert!(
        out.contains("The sub command noSuchCommand not exist."),
        "{out}"
    );
    let (code, out) = mqadmin_status(&s.namesrv(), &["updateTopic", "-t", "X"]);
    assert_ne!(code, 0, "updateTopic needs -b or -c: {out}");

    let metrics = reqwest_get(s.slot.port(Standalone::METRICS), "/metrics").await;
    assert!(metrics.contains("rocketmq_messages_in_total{"), "{metrics}");
    assert!(
        metrics.contains("topic=\"Admin\"") && metrics.contains("node_type=\"broker\""),
        "{metrics}"
    );
    assert!(metrics.contains("rocketmq_throughput_in_total{"));
    assert!(metrics.contains("rocketmq_proxy_up{"));
    assert!(!metrics.contains("_total_total"), "no doubled suffix");
}

/// Minimal HTTP GET over a TcpStream (no HTTP client dependency).
async fn reqwest_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    buf
}

#[test]
fn every_fixture_is_accepted_unchanged() {
    let dir = fixtures();
    let mut files: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p
            .extension()
            .is_some_and(|x| x == "conf" || x == "properties")
        {
            files.push(p);
        }
    }
    assert!(files.len() >= 5, "fixtures found: {files:?}");
    for f in files {
        let slot = rmq_e2e::PortSlot::acquire();
        let tmp = tempfile::tempdir().unwrap();
        let args: Vec<String> = [
            "standalone",
            "-c",
            &f.display().to_string(),
            "--bind",
            "127.0.0.1",
            "--data-dir",
            &tmp.path().join("data").display().to_string(),
            "--namesrv-port",
            &slot.port(0).to_string(),
            "--proxy-port",
            &slot.port(3).to_string(),
            "--metrics-port",
            &slot.port(4).to_string(),
            "--set",
            &format!("listenPort={}", slot.port(1)),
            "--set",
            "brokerIP1=127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = Proc::spawn("fixture", &args, tmp.path(), tmp.path());
        wait_port(slot.port(3), &p);
        let ns = format!("127.0.0.1:{}", slot.port(0));
        let mut status = String::new();
        for _ in 0..100 {
            let (code, out) = mqadmin_status(
                &ns,
                &["brokerStatus", "-b", &format!("127.0.0.1:{}", slot.port(1))],
            );
            if code == 0 && out.contains("flushDiskType") {
                status = out;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let want_sync = text
            .lines()
            .any(|l| l.replace(' ', "") == "flushDiskType=SYNC_FLUSH");
        let want = if want_sync { "SyncFlush" } else { "AsyncFlush" };
        assert!(
            status.contains(want),
            "{}: flushDiskType honoured ({want}):\n{status}",
            f.display()
        );
        let log = p.log_text();
        assert!(
            !log.contains("unknown configuration key"),
            "{}: every key of the fixture is known:\n{log}",
            f.display()
        );
        drop(p);
    }
}

#[test]
fn unknown_keys_warn_and_bad_values_fail() {
    let slot = rmq_e2e::PortSlot::acquire();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("b.properties"),
        "fooBarKey = 1\nbrokerName=broker-x\n",
    )
    .unwrap();
    let args: Vec<String> = [
        "standalone",
        "-c",
        "b.properties",
        "--bind",
        "127.0.0.1",
        "--data-dir",
        "data",
        "--namesrv-port",
        &slot.port(0).to_string(),
        "--proxy-port",
        &slot.port(3).to_string(),
        "--metrics-port",
        &slot.port(4).to_string(),
        "--set",
        &format!("listenPort={}", slot.port(1)),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = Proc::spawn("unknown", &args, tmp.path(), tmp.path());
    wait_port(slot.port(3), &p);
    assert!(
        p.log_text()
            .contains("unknown configuration key \"fooBarKey\""),
        "{}",
        p.log_text()
    );
    drop(p);
    std::fs::write(
        tmp.path().join("bad.properties"),
        "flushDiskType=SOMETIMES\n",
    )
    .unwrap();
    let out = std::process::Command::new(rmq_e2e::bin("rmq"))
        .args(["store", "-c", "bad.properties"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("flushDiskType"),
        "a clear error names the key"
    );
}
