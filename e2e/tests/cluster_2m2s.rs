//! The seed 2m-2s SYNC_MASTER topology as processes: byte-identical replication, a master
//! killed under load (sends continue through broker-b, broker-a's backlog drains through
//! broker-a-s, nothing acknowledged is lost, nothing acked during the outage comes back), a
//! SYNC_MASTER whose slave is down, slave restart and wipe, and a name server lost.

use rmq_e2e::cluster::{CLUSTER, Cluster2m2s};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "HaTopic";

async fn producer(url: &str) -> Producer {
    let mut copt = ClientOption::default();
    copt.set_access_url(url);
    copt.set_timeout(Duration::from_secs(5));
    let mut o = ProducerOption::default();
    o.set_topics(vec![TOPIC]);
    let mut p = Producer::new(o, copt).unwrap();
    p.start().await.unwrap();
    p
}

async fn consumer(url: &str, group: &str) -> SimpleConsumer {
    let mut copt = ClientOption::default();
    copt.set_access_url(url);
    copt.set_long_polling_timeout(Duration::from_secs(6));
    let mut o = SimpleConsumerOption::default();
    o.set_consumer_group(group);
    o.set_topics(vec![TOPIC]);
    let mut c = SimpleConsumer::new(o, copt).unwrap();
    c.start().await.unwrap();
    c
}

fn setup(c: &Cluster2m2s) {
    let out = c.mqadmin(&[
        "updateTopic",
        "-c",
        CLUSTER,
        "-t",
        TOPIC,
        "-r",
        "4",
        "-w",
        "4",
    ]);
    assert_eq!(
        out.matches("success").count(),
        2,
        "created on both masters: {out}"
    );
    rmq_e2e::wait_route(&c.namesrv(), TOPIC);
}

async fn send_n(p: &Producer, n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let m = MessageBuilder::builder()
            .set_topic(TOPIC)
            .set_tag(tag)
            .set_body(format!("{tag}-{i}").into_bytes())
            .build()
            .unwrap();
        ids.push(p.send(m).await.expect("send").message_id().to_string());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slaves_hold_byte_identical_logs_and_topology_is_visible() {
    let c = Cluster2m2s::start(&[]);
    setup(&c);
    let p = producer(&c.proxy(0)).await;
    send_n(&p, 300, "T").await;
    for (m, s) in [("broker-a", "broker-a-s"), ("broker-b", "broker-b-s")] {
        let end = c.wait_caught_up(m, s);
        assert!(end > 0);
        let (mb, sb) = (c.log_bytes(m, end), c.log_bytes(s, end));
        assert_eq!(mb.len(), sb.len());
        assert!(mb == sb, "{s}'s commit log is byte-identical to {m}'s");
    }
    let cl = c.mqadmin(&["clusterList"]);
    for (name, id) in [
        ("broker-a", "0"),
        ("broker-a", "1"),
        ("broker-b", "0"),
        ("broker-b", "1"),
    ] {
        assert!(
            cl.lines().any(|l| l.contains(CLUSTER)
                && l.contains(name)
                && l.split_whitespace().nth(2) == Some(id)),
            "{name}/{id} listed:\n{cl}"
        );
    }
    let route = c.mqadmin(&["topicRoute", "-t", TOPIC]);
    assert!(
        route.contains("0:\"") && route.contains("1:\""),
        "route lists master and slave: {route}"
    );
    let ha = c.mqadmin(&["haStatus", "-c", CLUSTER]);
    assert!(
        ha.contains("#MasterAddr")
            && ha.contains("#SlaveNum\t1")
            && ha.contains("#InSyncSlaveNum\t1"),
        "{ha}"
    );
    // Topic configuration replicated with the log: the slave knows the topic.
    let metrics = http_get(c.b.port(4), "/metrics").await;
    assert!(
        metrics.contains("rocketmq_ha_slave_behind_bytes{"),
        "replication lag exported:\n{metrics}"
    );
    let st = c.status("broker-a-s");
    assert_eq!(st.get("brokerRole").map(String::as_str), Some("SLAVE"));
    assert!(p.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_master_killed_under_load_loses_nothing() {
    let mut c = Cluster2m2s::start(&[]);
    setup(&c);
    let p = Arc::new(producer(&c.proxy(0)).await);
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (p, acked, failed, stop) = (p.clone(), acked.clone(), failed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = MessageBuilder::builder()
                    .set_topic(TOPIC)
                    .set_body(format!("load-{i}").into_bytes())
                    .build()
                    .unwrap();
                match tokio::time::timeout(Duration::from_secs(6), p.send(m)).await {
                    Ok(Ok(r)) => {
                        acked.lock().unwrap().insert(r.message_id().to_string());
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
                // A bounded load (about 25 msg/s) the official client can also drain in time.
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = acked.lock().unwrap().len();
    assert!(before > 20, "load is flowing ({before})");
    c.kill9("broker-a");
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let failed_after_kill = failed.load(Ordering::Relaxed);
    let mid = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = acked.lock().unwrap().len();
    assert!(
        later > mid + 10,
        "sends keep succeeding through broker-b after the kill ({mid} -> {later})"
    );

    // Drain through proxy 2 while broker-a is down (its backlog comes from broker-a-s), with a
    // group of four consumers.
    let delivered: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let acked_during_outage: Arc<Mutex<HashSet<String>>> = Arc::default();
    let forbidden: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut members = Vec::new();
    for _ in 0..4 {
        members.push(Arc::new(consumer(&c.proxy(1), "HaGroup").await));
    }
    let drain = |until: Duration, idle_rounds: u32, record_acks: bool| {
        let tasks: Vec<_> = members
            .iter()
            .map(|m| {
                let (m, delivered, acked_outage, forbidden) = (
                    m.clone(),
                    delivered.clone(),
                    acked_during_outage.clone(),
                    forbidden.clone(),
                );
                tokio::spawn(async move {
                    let end = Instant::now() + until;
                    let mut idle = 0;
                    while Instant::now() < end && idle < idle_rounds {
                        let got = m
                            .receive_with(
                                TOPIC,
                                &FilterExpression::new(FilterType::Tag, "*"),
                                32,
                                Duration::from_secs(10),
                            )
                            .await
                            .unwrap_or_default();
                        if got.is_empty() {
                            idle += 1;
                            continue;
                        }
                        idle = 0;
                        for msg in got {
                            let id = msg.message_id().to_string();
                            assert!(
                                !forbidden.lock().unwrap().contains(&id),
                                "{id} was acked during the outage and came back"
                            );
                            *delivered.lock().unwrap().entry(id.clone()).or_default() += 1;
                            if m.ack(&msg).await.is_ok() && record_acks {
                                acked_outage.lock().unwrap().insert(id);
                            }
                        }
                    }
                })
            })
            .collect();
        futures_join(tasks)
    };
    drain(Duration::from_secs(20), 8, true).await;
    let before_kill: HashSet<String> = acked.lock().unwrap().clone();
    let from_outage = before_kill
        .iter()
        .filter(|id| delivered.lock().unwrap().contains_key(*id))
        .count();
    assert!(
        from_outage >= before.min(mid),
        "backlog (including broker-a's) delivered during the outage: {from_outage} of {}",
        before_kill.len()
    );

    c.start_node("broker-a");
    eprintln!(
        "broker-a restarted {:?} after the kill; {failed_after_kill} sends failed around the kill",
        killed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let all_acked = acked.lock().unwrap().clone();
    *forbidden.lock().unwrap() = acked_during_outage.lock().unwrap().clone();
    drain(Duration::from_secs(60), 8, false).await;
    let delivered = delivered.lock().unwrap().clone();
    let lost: Vec<&String> = all_acked
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    if !lost.is_empty() {
        eprintln!("{}", c.mqadmin(&["consumerProgress", "-g", "HaGroup"]));
        eprintln!("{}", c.mqadmin(&["topicStatus", "-t", TOPIC]));
        eprintln!("{:?}", c.status("broker-a"));
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_master_without_its_slave_never_acknowledges_alone() {
    let mut c = Cluster2m2s::start(&[]);
    setup(&c);
    let p = producer(&c.proxy(0)).await;
    let early: HashSet<String> = send_n(&p, 40, "Early").await.into_iter().collect();
    c.kill9("broker-b-s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = c.max_offset("broker-b");
    let ids = send_n(&p, 40, "NoSlave").await;
    assert_eq!(
        ids.len(),
        40,
        "sends go to the group that still has its slave"
    );
    assert_eq!(
        c.max_offset("broker-b"),
        before,
        "broker-b stored nothing without its slave"
    );
    // Consumption is not a send: acks on broker-b stand without its slave (as Apache accepts
    // an ack under SLAVE_NOT_AVAILABLE), so its backlog still drains.
    let cons = consumer(&c.proxy(1), "NoSlaveGroup").await;
    let mut drained = HashSet::new();
    for _ in 0..20 {
        if drained.len() >= early.len() {
            break;
        }
        let got = cons
            .receive_with(
                TOPIC,
                &FilterExpression::new(FilterType::Tag, "Early"),
                32,
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_default();
        for m in got {
            cons.ack(&m).await.expect("ack without the slave");
            drained.insert(m.message_id().to_string());
        }
    }
    assert_eq!(drained, early, "both groups' backlog consumed and acked");
    c.start_node("broker-b-s");
    let deadline = Instant::now() + Duration::from_secs(20);
    while c
        .status("broker-b")
        .get("haSlaves")
        .is_none_or(|s| s.is_empty())
    {
        assert!(Instant::now() < deadline, "slave reconnects");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send_n(&p, 40, "Back").await;
    assert!(
        c.max_offset("broker-b") > before,
        "with its slave back, broker-b takes sends again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slaves_catch_up_after_restart_and_wipe_and_a_lost_namesrv_goes_unnoticed() {
    let mut c = Cluster2m2s::start(&[]);
    setup(&c);
    let p = producer(&c.proxy(0)).await;
    send_n(&p, 50, "One").await;
    c.kill9("broker-a-s");
    send_n(&p, 50, "Two").await;
    c.start_node("broker-a-s");
    let end = c.wait_caught_up("broker-a", "broker-a-s");
    assert!(
        c.log_bytes("broker-a", end) == c.log_bytes("broker-a-s", end),
        "restarted slave caught up byte for byte"
    );
    c.kill9("broker-b-s");
    std::fs::remove_dir_all(c.store_dir("broker-b-s")).unwrap();
    c.start_node("broker-b-s");
    let end = c.wait_caught_up("broker-b", "broker-b-s");
    assert!(
        c.log_bytes("broker-b", end) == c.log_bytes("broker-b-s", end),
        "wiped slave copied everything again"
    );
    c.kill9("namesrv1");
    let ids = send_n(&p, 30, "NoNs1").await;
    assert_eq!(ids.len(), 30);
    let cons = consumer(&c.proxy(1), "AfterNs").await;
    let mut n = 0;
    for _ in 0..20 {
        let got = cons
            .receive_with(
                TOPIC,
                &FilterExpression::new(FilterType::Tag, "*"),
                32,
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        for m in &got {
            cons.ack(m).await.unwrap();
        }
        n += got.len();
        if n >= 130 {
            break;
        }
    }
    assert_eq!(n, 130, "everything consumed with one name server gone");
    for slave in ["broker-a-s", "broker-b-s"] {
        assert_eq!(
            slave_reads(&c, slave),
            0,
            "without slaveReadEnable a slave serves no reads while its master is up"
        );
    }
}

fn slave_reads(c: &Cluster2m2s, node: &str) -> u64 {
    c.status(node)
        .get("slaveReadTotal")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `slaveReadEnable=true` with `accessMessageInMemoryMaxRatio=0` on the masters: every message
/// counts as far behind, so while the masters are up their slaves serve the bytes (the masters
/// keep the POP state). A slave lost mid-way is replaced by its master without losing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_read_enable_serves_a_far_behind_consumer_from_the_slaves() {
    let mut c = Cluster2m2s::start(&[
        ("slaveReadEnable", "true"),
        ("accessMessageInMemoryMaxRatio", "0"),
    ]);
    setup(&c);
    let p = producer(&c.proxy(0)).await;
    let far = send_n(&p, 160, "Far").await;
    send_n(&p, 40, "Other").await;
    for (m, s) in [("broker-a", "broker-a-s"), ("broker-b", "broker-b-s")] {
        c.wait_caught_up(m, s);
    }
    let expected: HashMap<String, String> = far
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("Far-{i}")))
        .collect();
    let cons = consumer(&c.proxy(1), "FarBehind").await;
    let mut got: HashMap<String, String> = HashMap::new();
    let receive = async |until: usize, got: &mut HashMap<String, String>| {
        for _ in 0..40 {
            if got.len() >= until {
                break;
            }
            let batch = cons
                .receive_with(
                    TOPIC,
                    &FilterExpression::new(FilterType::Tag, "Far"),
                    16,
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_default();
            for m in batch {
                assert_eq!(m.tag(), Some("Far"), "tag filter holds");
                let body = String::from_utf8(m.body().to_vec()).expect("utf-8 body");
                got.insert(m.message_id().to_string(), body);
                cons.ack(&m).await.expect("ack");
            }
        }
    };
    receive(80, &mut got).await;
    let served = slave_reads(&c, "broker-a-s") + slave_reads(&c, "broker-b-s");
    assert!(
        served as usize >= got.len() && got.len() >= 80,
        "the slaves served the far-behind reads: {served} of {} received",
        got.len()
    );
    c.kill9("broker-a-s");
    receive(expected.len(), &mut got).await;
    assert_eq!(
        got, expected,
        "every Far message delivered, bodies intact, the slave's loss notwithstanding"
    );
    assert!(p.shutdown().await.is_ok());
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        if let Err(e) = t.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

async fn http_get(port: u16, path: &str) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_master_loses_at_most_the_reported_lag() {
    let mut c = Cluster2m2s::start(&[("brokerRole", "ASYNC_MASTER")]);
    setup(&c);
    let p = Arc::new(producer(&c.proxy(0)).await);
    // (id, acked at) for every acknowledged send.
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (p, acked, stop) = (p.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = MessageBuilder::builder()
                    .set_topic(TOPIC)
                    .set_body(format!("async-{i}").into_bytes())
                    .build()
                    .unwrap();
                if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(6), p.send(m)).await {
                    acked
                        .lock()
                        .unwrap()
                        .push((r.message_id().to_string(), Instant::now()));
                }
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lag: i64 = c
        .status("broker-a")
        .get("haSlaves")
        .and_then(|s| s.split(',').nth(3).and_then(|v| v.parse().ok()))
        .expect("broker-a reports its slave's lag");
    let sampled = Instant::now();
    c.kill9("broker-a");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;

    let cons = consumer(&c.proxy(1), "AsyncGroup").await;
    let mut delivered: HashSet<String> = HashSet::new();
    let mut idle = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end && idle < 8 {
        let got = cons
            .receive_with(
                TOPIC,
                &FilterExpression::new(FilterType::Tag, "*"),
                32,
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_default();
        if got.is_empty() {
            idle += 1;
            continue;
        }
        idle = 0;
        for m in got {
            delivered.insert(m.message_id().to_string());
            let _ = cons.ack(&m).await;
        }
    }
    let acked = acked.lock().unwrap().clone();
    let lost_before: Vec<&String> = acked
        .iter()
        .filter(|(id, t)| *t <= sampled && !delivered.contains(id))
        .map(|(id, _)| id)
        .collect();
    let lost_after = acked
        .iter()
        .filter(|(id, t)| *t > sampled && !delivered.contains(id))
        .count();
    // A stored record of these messages is well over 100 bytes.
    eprintln!(
        "ASYNC_MASTER kill -9: lag at the kill {lag} bytes; lost {} messages acked before the sample, {lost_after} acked after it (of {})",
        lost_before.len(),
        acked.len()
    );
    assert!(
        (lost_before.len() as i64) * 100 <= lag,
        "lost more than the reported lag: {} messages vs {lag} bytes",
        lost_before.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sync_master_sends_share_replication_round_trips() {
    let c = Cluster2m2s::start(&[]);
    setup(&c);
    let round_trips = |node: &str| -> u64 {
        c.status(node)
            .get("haRoundTrips")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = round_trips("broker-a") + round_trips("broker-b");
    let p = Arc::new(producer(&c.proxy(0)).await);
    let mut tasks = Vec::new();
    for t in 0..16 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let m = MessageBuilder::builder()
                    .set_topic(TOPIC)
                    .set_body(format!("batch-{t}-{i}").into_bytes())
                    .build()
                    .unwrap();
                p.send(m).await.expect("sync-master send");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let trips = round_trips("broker-a") + round_trips("broker-b") - before;
    eprintln!("320 SYNC_MASTER sends took {trips} replication round trips");
    assert!(
        trips < 320,
        "concurrent sends ride shared replication round trips ({trips} for 320 messages)"
    );
}
