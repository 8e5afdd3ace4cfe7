//! Damage in a store directory is refused untouched, never "recovered" by deleting data; the
//! documented setting starts anyway and serves every acknowledged message but the damaged one.

use rmq_e2e::Standalone;
use rmq_e2e::clients;
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOPIC: &str = "Integrity";
const MESSAGES: u32 = 1000;

fn body(i: u32) -> Vec<u8> {
    format!("MARK{i:05}-").repeat(100).into_bytes()
}

/// Every file under `root` with its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("dir entry");
            let p = e.path();
            if e.file_type().expect("file type").is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(rel, std::fs::read(&p).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn assert_same_tree(before: &BTreeMap<PathBuf, Vec<u8>>, root: &Path) {
    let after = tree(root);
    let names = |t: &BTreeMap<PathBuf, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(before), names(&after), "no file added or removed");
    for (p, bytes) in before {
        assert!(after[p] == *bytes, "{} changed", p.display());
    }
}

fn segments(store: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(store.join("commitlog"))
        .expect("commitlog dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    v.sort();
    v
}

/// A standalone node with `MESSAGES` acknowledged messages in a log of several small segments,
/// stopped cleanly.
async fn filled_store() -> Standalone {
    let mut s = Standalone::start(&["--set", "mappedFileSizeCommitLog=262144"]);
    s.create_topic(TOPIC, &[]);
    let p = clients::producer(&s.access_url(), TOPIC).await;
    for i in 0..MESSAGES {
        let msg = MessageBuilder::builder()
            .set_topic(TOPIC)
            .set_body(body(i))
            .build()
            .expect("message");
        p.send(msg).await.expect("send acknowledged");
    }
    drop(p);
    s.stop();
    let segs = segments(&s.store_dir());
    assert!(segs.len() >= 4, "a multi-segment log: {segs:?}");
    s
}

/// Receives and acks until two empty long polls; returns the marker numbers seen.
async fn drain(s: &Standalone, group: &str) -> HashMap<u32, usize> {
    let c = clients::simple_consumer(&s.access_url(), group, TOPIC, Duration::from_secs(8)).await;
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut empty_rounds = 0;
    while Instant::now() < deadline && empty_rounds < 2 {
        let got = match c
            .receive_with(
                TOPIC,
                &FilterExpression::new(FilterType::Tag, "*"),
                32,
                Duration::from_secs(30),
            )
            .await
        {
            Ok(got) => got,
            Err(e) => panic!("receive: {e:?}\nserver log:\n{}", s.proc.log_text()),
        };
        if got.is_empty() {
            empty_rounds += 1;
        }
        for m in got {
            let text = String::from_utf8_lossy(m.body()).to_string();
            let i: u32 = text[4..9].parse().expect("marker");
            assert_eq!(m.body(), &body(i)[..], "message {i} delivered intact");
            *seen.entry(i).or_default() += 1;
            c.ack(&m).await.expect("ack");
        }
    }
    seen
}

async fn metric(port: u16, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("response");
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_an_old_segment_is_refused_untouched_and_skipped_when_accepted() {
    let mut s = filled_store().await;
    let store = s.store_dir();
    let old = segments(&store)[0].clone();
    let mut bytes = std::fs::read(&old).expect("segment");
    // The marker nearest the middle of the first (sealed) segment.
    let mid = bytes.len() / 2;
    let at = (0..mid)
        .rev()
        .find(|&p| bytes[p..].starts_with(b"MARK"))
        .expect("a message body in the middle of the segment");
    let victim: u32 = std::str::from_utf8(&bytes[at + 4..at + 9])
        .expect("marker")
        .parse()
        .expect("marker number");
    bytes[at + 2] ^= 0x20;
    std::fs::write(&old, &bytes).expect("flip one byte");
    let before = tree(&store);
    let segs_before = segments(&store);

    let (status, log) = s.start_refused(&[]);
    assert!(
        status.is_some_and(|st| !st.success()),
        "refused to start: {status:?}\n{log}"
    );
    let seg_name = old.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(log.contains(seg_name), "the log names the file:\n{log}");
    assert!(
        log.contains("startWithDamagedCommitLog"),
        "the log names the setting:\n{log}"
    );
    assert!(log.contains("offset"), "the log names the offset:\n{log}");
    assert_same_tree(&before, &store);
    eprintln!("refusal:\n{log}");

    s.restart_with(&["--set", "startWithDamagedCommitLog=true"]);
    let seen = drain(&s, "IntegrityReader").await;
    let expected: Vec<u32> = (0..MESSAGES).filter(|&i| i != victim).collect();
    let missing: Vec<u32> = expected
        .iter()
        .copied()
        .filter(|i| !seen.contains_key(i))
        .collect();
    assert!(
        missing.is_empty(),
        "every other acked message served: missing {missing:?}"
    );
    assert!(
        !seen.contains_key(&victim),
        "the damaged message {victim} is not served"
    );
    let damaged = metric(
        s.slot.port(Standalone::METRICS),
        "rocketmq_storage_damaged_records_total",
    )
    .await;
    assert_eq!(damaged, 1.0, "one damaged record counted");
    let now = segments(&store);
    for seg in &segs_before {
        assert!(
            now.contains(seg),
            "segment {} kept; now {now:?}",
            seg.display()
        );
    }
    assert!(
        std::fs::read(&old).expect("segment") == bytes,
        "the damaged segment is left as it was"
    );
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_of_garbage_is_refused_untouched() {
    let mut s = filled_store().await;
    let store = s.store_dir();
    let segs = segments(&store);
    let victim = segs[1].clone();
    let len = std::fs::metadata(&victim).expect("segment").len() as usize;
    let garbage: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&victim, &garbage).expect("garbage");
    let before = tree(&store);
    let (status, log) = s.start_refused(&[]);
    assert!(
        status.is_some_and(|st| !st.success()),
        "refused to start: {status:?}\n{log}"
    );
    let name = victim.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(log.contains(name), "the log names the file:\n{log}");
    assert_same_tree(&before, &store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apache_store_directory_is_refused_untouched() {
    let mut s = Standalone::start(&[]);
    s.stop();
    let store = s.store_dir();
    std::fs::remove_dir_all(&store).expect("remove fresh store");
    rmq_store_node::layout::testing::write_apache_store(&store);
    let before = tree(&store);
    let (status, log) = s.start_refused(&[]);
    assert!(
        status.is_some_and(|st| !st.success()),
        "refused to start: {status:?}\n{log}"
    );
    assert!(
        log.contains("Apache RocketMQ"),
        "says what it found:\n{log}"
    );
    assert_same_tree(&before, &store);
}
