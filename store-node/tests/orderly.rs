//! Orderly (FIFO) groups read each queue in order: nothing new from a queue while an earlier
//! delivery is unresolved, and an unacked delivery comes back before anything after it, also
//! after a restart.

use rmq_common::record::{RecordView, encode_properties};
use rmq_store_node::config::StoreConfig;
use rmq_store_node::state::{GroupCfg, TopicCfg};
use rmq_store_node::store::{Delivery, NewMessage, PopRequest, Store};
use std::sync::Arc;
use std::time::Duration;

const HOLD_MS: i64 = 3_000;

fn pop(group: &str, invisible_ms: i64) -> PopRequest {
    PopRequest {
        group: group.into(),
        topic: "F".into(),
        queue_id: -1,
        tags: vec![],
        batch: 32,
        invisible_ms,
        poll_ms: 0,
        sql: None,
    }
}

async fn send(store: &Store, from: usize, n: usize) {
    for i in from..from + n {
        store
            .append(vec![NewMessage {
                topic: "F".into(),
                queue_id: 0,
                body: format!("m{i}").into_bytes().into(),
                properties: encode_properties([("UNIQ_KEY", format!("ID{i}").as_str())]),
                born_host: "127.0.0.1:1".into(),
                ..Default::default()
            }])
            .await
            .unwrap();
    }
}

fn config(dir: &tempfile::TempDir) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.path().to_path_buf(),
        mapped_file_size_commit_log: 8 * 1024 * 1024,
        ..StoreConfig::default()
    }
}

fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| String::from_utf8_lossy(RecordView::parse(&d.record).unwrap().body).into_owned())
        .collect()
}

fn names(r: std::ops::Range<usize>) -> Vec<String> {
    r.map(|i| format!("m{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_group_waits_for_each_queue_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(config(&dir)).unwrap();
    store
        .upsert_topic(TopicCfg {
            name: "F".into(),
            read_queue_nums: 1,
            write_queue_nums: 1,
            perm: 6,
            attributes: [("message.type".to_string(), "FIFO".to_string())].into(),
            order: false,
        })
        .await
        .unwrap();
    let mut g = GroupCfg::with_defaults("Ordered");
    g.consume_message_orderly = true;
    store.upsert_group(g).await.unwrap();
    store
        .upsert_group(GroupCfg::with_defaults("Concurrent"))
        .await
        .unwrap();
    send(&store, 0, 10).await;

    // Long enough that the checks below run well within it on a loaded machine.
    let first_at = std::time::Instant::now();
    let first = store.pop(pop("Ordered", HOLD_MS)).await.unwrap();
    assert_eq!(bodies(&first), names(0..10));
    let concurrent = store.pop(pop("Concurrent", 60_000)).await.unwrap();
    assert_eq!(bodies(&concurrent), names(0..10));
    for d in &first[..5] {
        store
            .ack("Ordered", "F", d.queue_id, d.queue_offset, d.token)
            .await
            .unwrap();
    }
    send(&store, 10, 3).await;
    // m5..m9 are unresolved: the orderly group gets nothing, the concurrent one the new ones.
    assert!(store.pop(pop("Ordered", HOLD_MS)).await.unwrap().is_empty());
    assert_eq!(
        bodies(&store.pop(pop("Concurrent", 60_000)).await.unwrap()),
        names(10..13)
    );
    // The in-flight deliveries live in the log: a restart keeps the queue blocked.
    store.shutdown();
    drop(store);
    let store: Arc<Store> = Store::open(config(&dir)).unwrap();
    assert!(store.pop(pop("Ordered", HOLD_MS)).await.unwrap().is_empty());
    let since = first_at.elapsed();
    assert!(
        since < Duration::from_millis(HOLD_MS as u64),
        "checks ran within the hold"
    );
    tokio::time::sleep(Duration::from_millis(HOLD_MS as u64 + 200) - since).await;
    // Visible again: they come back first, in order, and alone.
    let again = store.pop(pop("Ordered", 60_000)).await.unwrap();
    assert_eq!(bodies(&again), names(5..10));
    assert!(again.iter().all(|d| d.attempt == 2));
    for d in &again {
        store
            .ack("Ordered", "F", d.queue_id, d.queue_offset, d.token)
            .await
            .unwrap();
    }
    let rest = store.pop(pop("Ordered", 60_000)).await.unwrap();
    assert_eq!(bodies(&rest), names(10..13));
    assert!(rest.iter().all(|d| d.attempt == 1));
}
