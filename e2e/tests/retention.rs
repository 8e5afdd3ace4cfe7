//! Retention in a 2m-2s cluster with small segments: `mqadmin deleteExpiredCommitLog` deletes
//! only expired segments; topics, groups and consumer progress survive a restart after the
//! segments holding their records are gone; a consumer below the new minimum continues from it;
//! a slave that joins afterwards starts from the master's snapshot and serves correctly.

use rmq_e2e::clients;
use rmq_e2e::cluster::Cluster2m2s;
use rocketmq::SimpleConsumer;
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

const TOPIC: &str = "Retained";
/// fileReservedTime in hours: 18 s.
const RESERVED_H: &str = "0.005";
const RESERVED: Duration = Duration::from_secs(18);
/// Batch A: its first `A_HEAD` go before the consumers' state records, the rest after, so that
/// A's tail shares a segment with B and outlives its head.
const A: u32 = 320;
const A_HEAD: u32 = 300;
const B: u32 = 100;

fn local_hour() -> u32 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as libc::time_t;
    // SAFETY: localtime_r fills the struct we pass; both pointers are valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&now, &mut tm) };
    tm.tm_hour as u32
}

fn body(batch: char, i: u32) -> Vec<u8> {
    let mut b = format!("{batch}{i:05}:").into_bytes();
    b.resize(1024, b'.');
    b
}

fn index(m: &[u8]) -> (char, u32) {
    let text = String::from_utf8_lossy(&m[..7]).to_string();
    (
        text.chars().next().expect("batch"),
        text[1..6].parse().expect("index"),
    )
}

async fn consumer(url: &str, group: &str) -> SimpleConsumer {
    clients::simple_consumer(url, group, TOPIC, Duration::from_secs(6)).await
}

/// Receives and acks until `want` are seen or `idle` empty polls in a row (bounded); returns
/// every (batch, index) delivered with its count.
async fn drain(c: &SimpleConsumer, want: usize, idle: u32) -> BTreeMap<(char, u32), u32> {
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut empty = 0;
    while Instant::now() < deadline && empty < idle && seen.len() < want {
        let got = c
            .receive_with(
                TOPIC,
                &FilterExpression::new(FilterType::Tag, "*"),
                32,
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_default();
        if got.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in got {
            *seen.entry(index(m.body())).or_default() += 1;
            c.ack(&m).await.expect("ack");
        }
    }
    seen
}

fn base_of(p: &std::path::Path) -> i64 {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("segment name")
}

fn segments(c: &Cluster2m2s, node: &str) -> Vec<(PathBuf, Duration)> {
    let mut v: Vec<(PathBuf, Duration)> = std::fs::read_dir(c.store_dir(node).join("commitlog"))
        .expect("commitlog")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|p| {
            let age = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            (p, age)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_segments_go_state_and_progress_stay_and_a_new_slave_joins() {
    let other_hour = ((local_hour() + 12) % 24).to_string();
    let mut c = Cluster2m2s::start_with(
        &[("brokerRole", "ASYNC_MASTER")],
        &[
            ("mappedFileSizeCommitLog", "65536"),
            ("fileReservedTime", RESERVED_H),
            ("deleteWhen", &other_hour),
            ("stateSnapshotInterval", "500"),
        ],
        &["broker-a-s"],
    );
    let master = c.store_addr("broker-a");
    let out = c.mqadmin(&[
        "updateTopic",
        "-b",
        &master,
        "-t",
        TOPIC,
        "-r",
        "2",
        "-w",
        "2",
    ]);
    assert!(out.contains("success"), "{out}");
    for g in ["KeepUp", "Behind"] {
        let out = c.mqadmin(&["updateSubGroup", "-b", &master, "-g", g]);
        assert!(out.contains("success"), "{out}");
    }
    rmq_e2e::wait_route(&c.namesrv(), TOPIC);

    let p = clients::producer(&c.proxy(0), TOPIC).await;
    let send = |batch: char, i: u32| {
        MessageBuilder::builder()
            .set_topic(TOPIC)
            .set_body(body(batch, i))
            .build()
            .expect("message")
    };
    // Batch A, fully consumed by KeepUp; Behind takes only its first receive.
    for i in 0..A_HEAD {
        p.send(send('A', i)).await.expect("send A");
    }
    let keep_up = consumer(&c.proxy(0), "KeepUp").await;
    let mut got = drain(&keep_up, A_HEAD as usize, 3).await;
    let behind = consumer(&c.proxy(0), "Behind").await;
    let behind_acked: BTreeSet<(char, u32)> = drain(&behind, 1, 3).await.into_keys().collect();
    assert!(!behind_acked.is_empty());
    for i in A_HEAD..A {
        p.send(send('A', i)).await.expect("send A");
    }
    got.extend(drain(&keep_up, (A - A_HEAD) as usize, 3).await);
    assert_eq!(got.len(), A as usize, "KeepUp consumed all of A");
    drop((keep_up, behind));

    // A's segments expire; B lands in fresh ones.
    tokio::time::sleep(RESERVED + Duration::from_secs(1)).await;
    for i in 0..B {
        p.send(send('B', i)).await.expect("send B");
    }
    // Segments the log has filled (those after its end are prepared ahead, unwritten).
    let max_offset = c.max_offset("broker-a");
    let listed: Vec<(PathBuf, Duration)> = segments(&c, "broker-a")
        .into_iter()
        .filter(|(p, _)| base_of(p) + 65536 <= max_offset)
        .collect();
    assert!(
        listed.len() >= 6,
        "a log of many small segments: {listed:?}"
    );
    let expired: Vec<&PathBuf> = listed
        .iter()
        .filter(|(_, age)| *age > RESERVED)
        .map(|(p, _)| p)
        .collect();
    assert!(
        listed
            .iter()
            .all(|(_, age)| *age > RESERVED || *age < Duration::from_secs(10)),
        "A's segments are old, B's fresh: {listed:?}"
    );
    assert!(expired.len() >= 3, "A's segments have expired: {listed:?}");
    assert!(
        expired.len() < listed.len(),
        "B's segments have not: {listed:?}"
    );

    let out = c.mqadmin(&["deleteExpiredCommitLog", "-b", &master]);
    assert!(
        out.contains("success") || out.contains("commitLogMinOffset"),
        "{out}"
    );
    let left: Vec<PathBuf> = segments(&c, "broker-a")
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    for (p, _) in &listed {
        let gone = !left.contains(p);
        assert_eq!(
            gone,
            expired.contains(&p),
            "{} deleted iff expired:\n{out}\nlisted {listed:?}\nnode log:\n{}",
            p.display(),
            c.procs["broker-a"].log_text()
        );
    }
    let min_offset: i64 = c
        .status("broker-a")
        .get("commitLogMinOffset")
        .and_then(|v| v.parse().ok())
        .expect("commitLogMinOffset");
    assert!(min_offset > 0, "the log now starts later");

    // Restart: topic, groups and progress come from the snapshot (their records are deleted).
    c.kill9("broker-a");
    c.start_node("broker-a");
    let route = c.mqadmin(&["topicRoute", "-t", TOPIC]);
    assert!(route.contains("broker-a"), "topic survives: {route}");
    let progress = c.mqadmin(&["consumerProgress", "-g", "KeepUp"]);
    assert!(
        progress.contains(TOPIC),
        "KeepUp's progress survives:\n{progress}"
    );
    let keep_up = consumer(&c.proxy(0), "KeepUp").await;
    let got = drain(&keep_up, B as usize, 3).await;
    let expected: BTreeSet<(char, u32)> = (0..B).map(|i| ('B', i)).collect();
    assert_eq!(
        got.keys().copied().collect::<BTreeSet<_>>(),
        expected,
        "KeepUp gets exactly B after the restart, none of A again"
    );
    drop(keep_up);

    // An empty slave joins after the segments are gone: it starts from the master's snapshot.
    c.start_node("broker-a-s");
    let end = c.wait_caught_up("broker-a", "broker-a-s");
    assert!(end > min_offset);
    let slave = c.status("broker-a-s");
    assert_eq!(
        slave
            .get("commitLogMinOffset")
            .and_then(|v| v.parse::<i64>().ok()),
        Some(min_offset),
        "the slave's log starts where the master's does: {slave:?}"
    );

    // The master dies: Behind continues from the new minimum, read from the slave.
    c.kill9("broker-a");
    let behind = consumer(&c.proxy(1), "Behind").await;
    let got = drain(&behind, usize::MAX, 4).await;
    for k in &behind_acked {
        assert!(
            !got.contains_key(k),
            "{k:?} was acked by Behind and came back"
        );
    }
    for i in 0..B {
        assert!(
            got.contains_key(&('B', i)),
            "B{i} served by the slave; got {} ({:?}..{:?}); slave {:?}\n{}",
            got.len(),
            got.keys().next(),
            got.keys().last(),
            c.status("broker-a-s"),
            c.procs["broker-a-s"].log_text()
        );
    }
    let a_seen: Vec<u32> = got
        .keys()
        .filter(|(b, _)| *b == 'A')
        .map(|(_, i)| *i)
        .collect();
    let first = a_seen.first().copied().unwrap_or(A);
    assert!(first > 0, "A's deleted head is not served");
    assert!(
        first < A,
        "A's tail, in a segment written with B, is retained and served"
    );
    let want: Vec<u32> = (first..A)
        .filter(|i| !behind_acked.contains(&('A', *i)))
        .collect();
    assert_eq!(a_seen, want, "the retained suffix of A is served whole");
    let keep_up = consumer(&c.proxy(1), "KeepUp").await;
    let again = drain(&keep_up, 1, 2).await;
    assert!(
        again.is_empty(),
        "KeepUp sees nothing again from the slave: {again:?}"
    );
    eprintln!(
        "deleted {} of {} segments; min offset {min_offset}; Behind got {} of A's retained suffix",
        expired.len(),
        listed.len(),
        a_seen.len()
    );
}
