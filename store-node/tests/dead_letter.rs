//! Dead letters at the store: deliveries 1..=retryMaxTimes+1, then a copy in `%DLQ%<group>` that
//! keeps the message and says where it came from, and no further delivery to the group.

use rmq_common::record::{RecordView, encode_properties};
use rmq_store_node::config::StoreConfig;
use rmq_store_node::state::{GroupCfg, TopicCfg};
use rmq_store_node::store::{Delivery, NewMessage, PopRequest, Store};
use std::sync::Arc;
use std::time::Duration;

fn pop(group: &str, topic: &str, invisible_ms: i64) -> PopRequest {
    PopRequest {
        group: group.into(),
        topic: topic.into(),
        queue_id: -1,
        tags: vec![],
        batch: 32,
        invisible_ms,
        poll_ms: 0,
        sql: None,
    }
}

async fn open() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        store_path_root_dir: dir.path().to_path_buf(),
        mapped_file_size_commit_log: 8 * 1024 * 1024,
        ..StoreConfig::default()
    })
    .unwrap();
    store
        .upsert_topic(TopicCfg {
            name: "T".into(),
            read_queue_nums: 2,
            write_queue_nums: 2,
            perm: 6,
            attributes: Default::default(),
            order: false,
        })
        .await
        .unwrap();
    (dir, store)
}

async fn send(store: &Store, id: &str) {
    store
        .append(vec![NewMessage {
            topic: "T".into(),
            queue_id: -1,
            body: format!("body-{id}").into_bytes().into(),
            properties: encode_properties([("UNIQ_KEY", id), ("TAGS", "A"), ("k", "v")]),
            born_timestamp_ms: 1_700_000_000_000,
            born_host: "127.0.0.1:5000".into(),
            ..Default::default()
        }])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_last_attempt_a_message_moves_to_the_dlq() {
    let (_dir, store) = open().await;
    let mut g = GroupCfg::with_defaults("G");
    g.retry_max_times = 1; // two deliveries
    store.upsert_group(g).await.unwrap();
    send(&store, "M1").await;
    let mut attempts = Vec::new();
    for _ in 0..20 {
        let got: Vec<Delivery> = store.pop(pop("G", "T", 100)).await.unwrap();
        attempts.extend(got.iter().map(|d| d.attempt));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(attempts, vec![1, 2], "delivered twice, never again");

    let dlq = store.pop(pop("Reader", "%DLQ%G", 60_000)).await.unwrap();
    assert_eq!(dlq.len(), 1);
    let v = RecordView::parse(&dlq[0].record).unwrap();
    assert_eq!(v.body, b"body-M1");
    assert_eq!(v.reconsume_times, 2);
    assert_eq!(v.born_timestamp, 1_700_000_000_000);
    assert_eq!(v.born_host.to_string(), "127.0.0.1:5000");
    for (k, want) in [
        ("UNIQ_KEY", "M1"),
        ("TAGS", "A"),
        ("k", "v"),
        ("RETRY_TOPIC", "T"),
        ("ORIGIN_MESSAGE_ID", "M1"),
        ("DLQ_ORIGIN_TOPIC", "T"),
        ("DLQ_ORIGIN_MESSAGE_ID", "M1"),
    ] {
        assert_eq!(v.property(k), Some(want), "{k}");
    }
    let t = store.topic("%DLQ%G").expect("DLQ topic created");
    assert_eq!((t.read_queue_nums, t.write_queue_nums, t.perm), (1, 1, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_needs_a_live_delivery_and_happens_once() {
    let (_dir, store) = open().await;
    send(&store, "M2").await;
    let d = store.pop(pop("G", "T", 60_000)).await.unwrap().remove(0);
    let bad = store
        .dead_letter("G", "T", d.queue_id, d.queue_offset, d.token + 1)
        .await;
    assert!(bad.is_err(), "an unknown token is refused");
    let dlq = store
        .dead_letter("G", "T", d.queue_id, d.queue_offset, d.token)
        .await
        .unwrap();
    assert_eq!(dlq, "%DLQ%G");
    let again = store
        .dead_letter("G", "T", d.queue_id, d.queue_offset, d.token)
        .await;
    assert!(again.is_err(), "the delivery was acked by the move");
    let copies = store.pop(pop("Reader", "%DLQ%G", 60_000)).await.unwrap();
    assert_eq!(copies.len(), 1);
    let v = RecordView::parse(&copies[0].record).unwrap();
    assert_eq!((v.property("UNIQ_KEY"), v.reconsume_times), (Some("M2"), 1));
}
