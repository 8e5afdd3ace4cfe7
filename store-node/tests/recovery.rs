//! Recovery: a torn tail after the durable checkpoint is cut back to the last valid record;
//! damage before it is refused with every file left as it was; `startWithDamagedCommitLog`
//! serves everything but the damaged records; foreign directories are refused untouched.

use rand::{Rng, SeedableRng};
use rmq_common::record::encode_properties;
use rmq_store_node::config::{FlushDiskType, StoreConfig};
use rmq_store_node::error::StoreError;
use rmq_store_node::state::TopicCfg;
use rmq_store_node::store::{NewMessage, PopRequest, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SEGMENT: u64 = 64 * 1024;

/// No periodic flush or snapshot during a test: the checkpoint moves only at clean shutdown.
fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: SEGMENT,
        flush_disk_type: FlushDiskType::AsyncFlush,
        flush_interval_commit_log_ms: 3_600_000,
        state_snapshot_interval_ms: 3_600_000,
        state_snapshot_bytes: 1 << 40,
        ..StoreConfig::default()
    }
}

fn topic() -> TopicCfg {
    TopicCfg {
        name: "T".into(),
        read_queue_nums: 4,
        write_queue_nums: 4,
        perm: 6,
        attributes: Default::default(),
        order: false,
    }
}

fn message(i: usize, rng: &mut impl Rng) -> NewMessage {
    let len = rng.random_range(1..3000);
    let mut body = format!("msg-{i:06}-").into_bytes();
    body.extend((0..len).map(|j| (i + j) as u8));
    NewMessage {
        topic: "T".into(),
        queue_id: -1,
        body: body.into(),
        properties: encode_properties([("UNIQ_KEY", format!("ID{i}").as_str()), ("TAGS", "A")]),
        born_timestamp_ms: 1,
        born_host: "127.0.0.1:1".into(),
        flag: 0,
        sys_flag: 0,
        reconsume_times: 0,
    }
}

/// Pops everything and returns body by commitlog offset, with record lengths.
async fn drain(store: &Store, group: &str) -> BTreeMap<i64, (usize, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for _ in 0..10_000 {
        let got = store
            .pop(PopRequest {
                group: group.into(),
                topic: "T".into(),
                queue_id: -1,
                tags: vec![],
                batch: 32,
                invisible_ms: 600_000,
                poll_ms: 0,
                sql: None,
            })
            .await
            .expect("pop");
        if got.is_empty() {
            break;
        }
        for d in got {
            let view = rmq_common::record::RecordView::parse(&d.record).expect("record parses");
            assert!(
                matches!(
                    rmq_common::record::check(&d.record, d.phys),
                    Ok(rmq_common::record::Scan::Record(_))
                ),
                "served a corrupt record at {}",
                d.phys
            );
            out.insert(d.phys, (d.record.len(), view.body.to_vec()));
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn segments(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Every file under `root` with a digest of its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, (usize, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let b = std::fs::read(&p).unwrap();
                out.insert(p.clone(), (b.len(), crc32fast::hash(&b)));
            }
        }
    }
    out
}

fn base_of(p: &Path) -> i64 {
    p.file_name().unwrap().to_string_lossy().parse().unwrap()
}

/// Writes `n` messages (plus the topic) and shuts down cleanly; returns the log's end.
async fn write_clean(dir: &Path, from: usize, n: usize, rng: &mut impl Rng) -> i64 {
    let store = Store::open(config(dir)).unwrap();
    store.upsert_topic(topic()).await.unwrap();
    for i in from..from + n {
        store.append(vec![message(i, rng)]).await.unwrap();
    }
    let end = store.commit_log().published();
    store.shutdown();
    end
}

/// Segments wholly before the one holding `end` (complete, sealed at shutdown).
fn sealed(root: &Path, end: i64) -> Vec<PathBuf> {
    segments(root)
        .into_iter()
        .filter(|p| base_of(p) + std::fs::metadata(p).unwrap().len() as i64 <= end)
        .collect()
}

fn refusal(r: Result<std::sync::Arc<Store>, StoreError>) -> String {
    match r {
        Err(StoreError::Refused(m)) => m,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the store opened"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tails_after_the_checkpoint_recover_to_the_last_valid_record() {
    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("original");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    write_clean(&original, 0, 30, &mut rng).await;
    let durable_end = {
        // The second batch never reaches a checkpoint: the store is abandoned as a crash
        // would leave it.
        let store = Store::open(config(&original)).unwrap();
        let end = store.commit_log().published();
        for i in 30..150 {
            store.append(vec![message(i, &mut rng)]).await.unwrap();
        }
        store.abandon();
        end
    };
    assert!(
        segments(&original).len() >= 3,
        "test must span several segments"
    );

    let reference = base.path().join("reference");
    copy_dir(&original, &reference);
    let all = {
        let s = Store::open(config(&reference)).unwrap();
        let m = drain(&s, "G").await;
        s.shutdown();
        m
    };
    assert_eq!(all.len(), 150, "an intact crash image keeps every message");
    // Records wholly after the checkpoint, where a torn write may be cut.
    let tail: Vec<(i64, usize)> = all
        .iter()
        .filter(|(p, _)| **p >= durable_end)
        .map(|(p, (l, _))| (*p, *l))
        .collect();

    for round in 0..30 {
        let dir = base.path().join(format!("cut{round}"));
        copy_dir(&original, &dir);
        // A torn write: the disk kept a prefix of the tail, then zeros (or a half record).
        let (rec, len) = tail[rng.random_range(0..tail.len())];
        let cut = rec + rng.random_range(0..len) as i64;
        let segs = segments(&dir);
        let seg = segs
            .iter()
            .rev()
            .find(|p| base_of(p) <= cut)
            .unwrap()
            .clone();
        let mut bytes = std::fs::read(&seg).unwrap();
        for b in &mut bytes[(cut - base_of(&seg)) as usize..] {
            *b = 0;
        }
        std::fs::write(&seg, &bytes).unwrap();
        // Later segments' writes never reached the disk either.
        for later in segs.iter().filter(|p| base_of(p) > base_of(&seg)) {
            let len = std::fs::metadata(later).unwrap().len() as usize;
            std::fs::write(later, vec![0u8; len]).unwrap();
        }

        let store = Store::open(config(&dir)).unwrap();
        let got = drain(&store, "G").await;
        store.shutdown();
        let expected: BTreeMap<i64, (usize, Vec<u8>)> = all
            .iter()
            .filter(|(p, (l, _))| **p + *l as i64 <= cut)
            .map(|(p, v)| (*p, v.clone()))
            .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "round {round}: torn at {cut}"
        );
        assert_eq!(got, expected, "round {round}: bodies differ");

        let again = Store::open(config(&dir)).unwrap();
        assert!(
            again.recovery_report().truncated.is_none(),
            "round {round}: second recovery cut again"
        );
        assert_eq!(drain(&again, "G2").await.len(), expected.len());
        again.shutdown();
    }

    // A half-written record after the checkpoint (its header made it, its body did not):
    // cut too, and its bytes kept in quarantine.
    let dir = base.path().join("half");
    copy_dir(&original, &dir);
    let (rec, len) = tail[tail.len() / 2];
    let seg = segments(&dir)
        .into_iter()
        .rev()
        .find(|p| base_of(p) <= rec)
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = (rec - base_of(&seg)) as usize + 100;
    for b in &mut bytes[at..at + (len - 100).min(50)] {
        *b ^= 0xA5;
    }
    std::fs::write(&seg, &bytes).unwrap();
    let store = Store::open(config(&dir)).unwrap();
    assert!(store.recovery_report().truncated.is_some());
    assert_eq!(store.commit_log().published(), rec);
    store.shutdown();
    let quarantined: Vec<_> = std::fs::read_dir(dir.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        quarantined.iter().any(|n| n.starts_with("torn-tail-")),
        "cut bytes moved aside: {quarantined:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_the_checkpoint_is_refused_until_accepted() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("store");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let end = write_clean(&dir, 0, 120, &mut rng).await;
    let segs = sealed(&dir, end);
    assert!(segs.len() >= 3, "a multi-segment log");
    let all = {
        let copy = base.path().join("reference");
        copy_dir(&dir, &copy);
        let s = Store::open(config(&copy)).unwrap();
        let m = drain(&s, "G").await;
        s.shutdown();
        m
    };
    assert_eq!(all.len(), 120);

    // One byte flipped in the middle of an old, sealed segment.
    let old = &segs[1];
    let mut bytes = std::fs::read(old).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(old, &bytes).unwrap();
    let damaged_phys = *all
        .iter()
        .find(|(p, (l, _))| {
            **p <= base_of(old) + mid as i64 && base_of(old) + mid as i64 <= **p + *l as i64
        })
        .map(|(p, _)| p)
        .expect("the flipped byte lies in a record");

    let before = tree(&dir);
    let msg = refusal(Store::open(config(&dir)));
    assert!(
        msg.contains(&old.display().to_string()) && msg.contains("startWithDamagedCommitLog"),
        "the refusal names the file and the way out: {msg}"
    );
    assert!(
        msg.contains(&format!("offset {damaged_phys}")),
        "names the offset: {msg}"
    );
    assert_eq!(tree(&dir), before, "a refusal changes no file");

    // The operator accepts the damage: everything but the damaged record is served.
    let mut cfg = config(&dir);
    cfg.start_with_damaged_commit_log = true;
    let store = Store::open(cfg).unwrap();
    assert_eq!(
        store
            .stats
            .damaged_records
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let got = drain(&store, "G").await;
    let mut expected = all.clone();
    expected.remove(&damaged_phys);
    assert_eq!(got, expected, "every acked message but the damaged one");
    store.shutdown();

    // Accepted once, known from then on: a plain restart starts and skips it again.
    let store = Store::open(config(&dir)).unwrap();
    assert_eq!(drain(&store, "G3").await, expected);
    store.shutdown();
    let now = tree(&dir);
    for s in &segs {
        assert_eq!(before.get(s), now.get(s), "{} unchanged", s.display());
    }
    assert!(
        std::fs::read(old).unwrap() == bytes,
        "the damaged file itself is kept as found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_found_by_a_read_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    write_clean(dir.path(), 0, 10, &mut rng).await;
    // Damage in the active segment, before the checkpoint: start-up does not read it (constant
    // time), the read that reaches it does.
    let first = segments(dir.path()).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[200] ^= 0xFF;
    std::fs::write(&first, &bytes).unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let got = drain(&store, "G").await;
    assert_eq!(got.len(), 9, "the damaged record is never delivered");
    assert_eq!(
        store
            .stats
            .damaged_records
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        drain(&store, "G2").await.len(),
        9,
        "counted once, skipped for every group"
    );
    assert_eq!(
        store
            .stats
            .damaged_records
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_segments_and_missing_segments_are_refused_untouched() {
    let base = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let original = base.path().join("original");
    let end = write_clean(&original, 0, 200, &mut rng).await;
    let n = sealed(&original, end).len();
    assert!(n >= 3);

    // An old segment replaced by garbage from its first byte.
    let dir = base.path().join("garbage");
    copy_dir(&original, &dir);
    let victim = sealed(&dir, end)[2].clone();
    let len = std::fs::metadata(&victim).unwrap().len() as usize;
    std::fs::write(
        &victim,
        (0..len).map(|_| rng.random::<u8>()).collect::<Vec<_>>(),
    )
    .unwrap();
    let before = tree(&dir);
    let msg = refusal(Store::open(config(&dir)));
    assert!(msg.contains(&victim.display().to_string()), "{msg}");
    assert_eq!(tree(&dir), before);

    // A garbage file after the last segment (not a torn write: no record starts there).
    let dir = base.path().join("appended");
    copy_dir(&original, &dir);
    // Past every prepared segment, so the garbage file follows the last one.
    let last = segments(&dir).last().unwrap().clone();
    let next = base_of(&last) + std::fs::metadata(&last).unwrap().len() as i64;
    std::fs::write(
        dir.join("commitlog").join(format!("{next:020}")),
        (0..SEGMENT)
            .map(|_| rng.random::<u8>().max(1))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let before = tree(&dir);
    refusal(Store::open(config(&dir)));
    assert_eq!(tree(&dir), before);

    // A segment deleted from the middle: the next one does not follow.
    let dir = base.path().join("missing");
    copy_dir(&original, &dir);
    std::fs::remove_file(&sealed(&dir, end)[1]).unwrap();
    let before = tree(&dir);
    let msg = refusal(Store::open(config(&dir)));
    assert!(msg.contains("does not follow"), "{msg}");
    assert_eq!(tree(&dir), before);

    // A truncated old segment.
    let dir = base.path().join("truncated");
    copy_dir(&original, &dir);
    let victim = sealed(&dir, end)[1].clone();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap();
    f.set_len(SEGMENT / 3).unwrap();
    drop(f);
    let before = tree(&dir);
    refusal(Store::open(config(&dir)));
    assert_eq!(tree(&dir), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apache_store_directory_is_recognised_and_left_untouched() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("store");
    rmq_store_node::layout::testing::write_apache_store(&root);
    let before = tree(&root);
    let msg = refusal(Store::open(config(&root)));
    assert!(msg.contains("Apache RocketMQ"), "{msg}");
    assert!(
        msg.contains("config/topics.json"),
        "names the evidence: {msg}"
    );
    assert_eq!(tree(&root), before, "every file byte-identical, none added");

    // Only the commit log (no config, no queues): still recognised by its records.
    let bare = base.path().join("bare");
    std::fs::create_dir_all(bare.join("commitlog")).unwrap();
    std::fs::copy(
        root.join("commitlog/00000000000000000000"),
        bare.join("commitlog/00000000000000000000"),
    )
    .unwrap();
    let before = tree(&bare);
    let msg = refusal(Store::open(config(&bare)));
    assert!(msg.contains("Apache RocketMQ"), "{msg}");
    assert_eq!(tree(&bare), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restart_and_restart_reads_only_the_log_after_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.upsert_topic(topic()).await.unwrap();
        for i in 0..10 {
            store.append(vec![message(i, &mut rng)]).await.unwrap();
        }
        let first = drain(&store, "G").await;
        assert_eq!(first.len(), 10);
        store.shutdown();
    }
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(
        store.recovery_report().records,
        0,
        "after a clean shutdown nothing is replayed"
    );
    assert!(store.topic("T").is_some(), "topic config comes back");
    assert!(
        drain(&store, "G").await.is_empty(),
        "in-flight deliveries are remembered across restart"
    );
    let progress = store.consumer_progress("G", "T");
    assert_eq!(
        progress.iter().map(|r| r.4).sum::<i64>(),
        10,
        "ten in flight"
    );
    for i in 10..15 {
        store.append(vec![message(i, &mut rng)]).await.unwrap();
    }
    store.abandon();
    // A crash: only what came after the last snapshot is read again.
    let store = Store::open(config(dir.path())).unwrap();
    let r = store.recovery_report().clone();
    assert!(
        (5..=8).contains(&r.records),
        "replayed the records after the snapshot only: {r:?}"
    );
    assert_eq!(drain(&store, "G").await.len(), 5, "the five new messages");
    assert_eq!(
        drain(&store, "G4").await.len(),
        15,
        "a new group sees all fifteen"
    );
    store.shutdown();
}
