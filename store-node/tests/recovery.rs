//! Recovery after torn tails and garbage: the store must come back with exactly the messages
//! whose records lie entirely before the damage, none corrupt, and recovery must be idempotent.

use rand::{Rng, SeedableRng};
use rmq_store_node::config::{FlushDiskType, StoreConfig};
use rmq_store_node::state::TopicCfg;
use rmq_store_node::store::{NewMessage, PopRequest, Store};
use std::collections::BTreeMap;
use std::path::Path;

const SEGMENT: u64 = 64 * 1024;

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: SEGMENT,
        flush_disk_type: FlushDiskType::AsyncFlush,
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
        properties: vec![
            ("UNIQ_KEY".into(), format!("ID{i}")),
            ("TAGS".into(), "A".into()),
        ],
        born_timestamp: 1,
        born_host: "127.0.0.1:1".into(),
        flag: 0,
        sys_flag: 0,
    }
}

/// Pops everything and returns body by commitlog offset, with record lengths.
async fn drain(store: &Store) -> BTreeMap<i64, (usize, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for _ in 0..10_000 {
        let got = store
            .pop(PopRequest {
                group: "G".into(),
                topic: "T".into(),
                queue_id: -1,
                tags: vec![],
                batch: 32,
                invisible_ms: 600_000,
                poll_ms: 0,
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

fn segments(root: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tails_and_garbage_recover_to_last_valid_record() {
    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("original");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    {
        let store = Store::open(config(&original)).unwrap();
        store.upsert_topic(topic()).await.unwrap();
        for i in 0..120 {
            store.append(vec![message(i, &mut rng)]).await.unwrap();
        }
        store.shutdown();
    }
    assert!(
        segments(&original).len() >= 3,
        "test must span several segments"
    );

    let reference = base.path().join("reference");
    copy_dir(&original, &reference);
    let all = {
        let s = Store::open(config(&reference)).unwrap();
        let m = drain(&s).await;
        s.shutdown();
        m
    };
    assert_eq!(all.len(), 120);

    for round in 0..40 {
        let dir = base.path().join(format!("cut{round}"));
        copy_dir(&original, &dir);
        let segs = segments(&dir);
        let seg_idx = rng.random_range(0..segs.len());
        let seg = &segs[seg_idx];
        let seg_base: i64 = seg.file_name().unwrap().to_string_lossy().parse().unwrap();
        let mut bytes = std::fs::read(seg).unwrap();
        let used = bytes
            .iter()
            .rposition(|b| *b != 0)
            .map(|p| p + 1)
            .unwrap_or(0);
        let at = rng.random_range(0..used.max(1));
        let garbage = round % 2 == 1;
        if garbage {
            let len = rng.random_range(1..200).min(bytes.len() - at);
            for b in &mut bytes[at..at + len] {
                *b = rng.random();
            }
        } else {
            for b in &mut bytes[at..] {
                *b = 0;
            }
        }
        std::fs::write(seg, &bytes).unwrap();
        let cut = seg_base + at as i64;

        let store = Store::open(config(&dir)).unwrap();
        let got = drain(&store).await;
        store.shutdown();
        let expected: BTreeMap<i64, (usize, Vec<u8>)> = all
            .iter()
            .filter(|(p, (l, _))| **p + *l as i64 <= cut)
            .map(|(p, v)| (*p, v.clone()))
            .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "round {round}: damage at {cut} (garbage={garbage})"
        );
        assert_eq!(got, expected, "round {round}: bodies differ");

        let again = Store::open(config(&dir)).unwrap();
        assert!(
            again.recovery_report().truncated.is_none(),
            "round {round}: second recovery truncated again"
        );
        again.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.upsert_topic(topic()).await.unwrap();
        for i in 0..10 {
            store.append(vec![message(i, &mut rng)]).await.unwrap();
        }
        let first = drain(&store).await;
        assert_eq!(first.len(), 10);
        store.shutdown();
    }
    let store = Store::open(config(dir.path())).unwrap();
    assert!(
        store.topic("T").is_some(),
        "topic config is rebuilt from the log"
    );
    assert!(
        drain(&store).await.is_empty(),
        "in-flight deliveries are remembered across restart"
    );
    let progress = store.consumer_progress("G", "T");
    assert_eq!(
        progress.iter().map(|r| r.4).sum::<i64>(),
        10,
        "ten in flight"
    );
    store.shutdown();
}
