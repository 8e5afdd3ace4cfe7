//! Retention: only expired segments go; topics, groups and consumer progress survive the
//! deletion of the segments that held their records, across clean and crash restarts;
//! consumers whose position fell below the new minimum continue from it.

use rmq_common::record::encode_properties;
use rmq_store_node::config::StoreConfig;
use rmq_store_node::state::TopicCfg;
use rmq_store_node::store::{NewMessage, PopRequest, Store};
use std::path::Path;
use std::time::Duration;

const SEGMENT: u64 = 64 * 1024;

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: SEGMENT,
        // One second, in hours; no automatic run (the test asks, as mqadmin does).
        file_reserved_time_hours: 1.0 / 3600.0,
        delete_when: vec![],
        clean_resource_interval_ms: 3_600_000,
        ..StoreConfig::default()
    }
}

fn message(i: usize) -> NewMessage {
    NewMessage {
        topic: "T".into(),
        queue_id: (i % 2) as i32,
        body: format!("{i:06}-").repeat(150).into_bytes().into(),
        properties: encode_properties([("UNIQ_KEY", format!("ID{i}").as_str())]),
        born_timestamp_ms: 1,
        born_host: "127.0.0.1:1".into(),
        ..NewMessage::default()
    }
}

fn id_of(record: &[u8]) -> usize {
    let v = rmq_common::record::RecordView::parse(record).unwrap();
    std::str::from_utf8(&v.body[..6]).unwrap().parse().unwrap()
}

/// Receives (and acks, when asked) everything visible to `group`; returns the message numbers.
async fn drain(store: &Store, group: &str, ack: bool) -> Vec<usize> {
    let mut ids = Vec::new();
    loop {
        let got = store
            .pop(PopRequest {
                group: group.into(),
                topic: "T".into(),
                queue_id: -1,
                tags: vec![],
                batch: 32,
                invisible_ms: 60_000,
                poll_ms: 0,
                sql: None,
            })
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        for d in got {
            ids.push(id_of(&d.record));
            if ack {
                store
                    .ack(group, "T", d.queue_id, d.queue_offset, d.token)
                    .await
                    .unwrap();
            }
        }
    }
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_expired_segments_go_and_state_outlives_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
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
    // Group "Early" consumes the first 20 messages; "Late" never consumes before retention.
    for i in 0..20 {
        store.append(vec![message(i)]).await.unwrap();
    }
    assert_eq!(drain(&store, "Early", true).await.len(), 20);
    for i in 20..120 {
        store.append(vec![message(i)]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let recent_from = store.commit_log().published();
    for i in 120..240 {
        store.append(vec![message(i)]).await.unwrap();
    }
    let segments_before = store.commit_log().segment_list();
    let report = store.delete_expired_commit_log().await.unwrap();
    assert!(!report.deleted.is_empty(), "old segments expired");
    let min = store.commit_log().min_offset();
    assert_eq!(report.min_offset, min);
    for (base, end, path) in &segments_before {
        let gone = !path.exists();
        assert_eq!(
            gone,
            *end <= min,
            "segment {base}..{end}: deleted exactly when wholly below the new minimum"
        );
        if gone {
            assert!(
                *end <= recent_from,
                "a segment written to within fileReservedTime went"
            );
        }
    }
    assert!(
        min <= recent_from,
        "the segment the recent messages started in stays"
    );
    assert_eq!(
        store
            .stats
            .deleted_segments
            .load(std::sync::atomic::Ordering::Relaxed),
        report.deleted.len() as u64
    );
    // Below the new minimum: gone for everyone. "Early" continues from the minimum.
    let early = drain(&store, "Early", true).await;
    let late_before_restart = drain(&store, "Late", false).await;
    assert!(early.contains(&239) && early.len() < 220, "{}", early.len());
    assert_eq!(
        early, late_before_restart,
        "both see the retained messages only"
    );
    store.shutdown();

    // The topic, both groups and their progress were recorded in deleted segments.
    let store = Store::open(config(dir.path())).unwrap();
    assert!(store.topic("T").is_some(), "topic survives its segments");
    assert!(store.group("Early").is_some() && store.group("Late").is_some());
    assert!(
        drain(&store, "Early", true).await.is_empty(),
        "acked stays acked"
    );
    assert!(
        drain(&store, "Late", false).await.is_empty(),
        "in flight stays in flight"
    );
    let progress = store.consumer_progress("Early", "T");
    assert!(
        progress.iter().all(|r| r.3 == r.2),
        "Early is fully caught up: {progress:?}"
    );
    for i in 240..250 {
        store.append(vec![message(i)]).await.unwrap();
    }
    store.abandon();

    // A crash after retention: same again, plus the ten new ones.
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.commit_log().min_offset(), min);
    assert_eq!(
        drain(&store, "Early", true).await,
        (240..250).collect::<Vec<_>>()
    );
    assert_eq!(drain(&store, "New", true).await.len(), early.len() + 10);
    store.shutdown();
}
