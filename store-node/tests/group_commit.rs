//! SYNC_FLUSH group commit: concurrent sends share fsyncs (a counter, not a timer), and every
//! acknowledged send is durable when acknowledged.

use rmq_common::record::encode_properties;
use rmq_store_node::config::{FlushDiskType, StoreConfig};
use rmq_store_node::state::TopicCfg;
use rmq_store_node::store::{NewMessage, Store};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sync_sends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        store_path_root_dir: dir.path().to_path_buf(),
        mapped_file_size_commit_log: 8 * 1024 * 1024,
        flush_disk_type: FlushDiskType::SyncFlush,
        ..StoreConfig::default()
    };
    let store = Store::open(cfg).unwrap();
    store
        .upsert_topic(TopicCfg {
            name: "T".into(),
            read_queue_nums: 4,
            write_queue_nums: 4,
            perm: 6,
            attributes: Default::default(),
            order: false,
        })
        .await
        .unwrap();
    let before = store.commit_log().fsync_count();
    const SENDERS: usize = 64;
    const EACH: usize = 20;
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let store: Arc<Store> = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let r = store
                    .append(vec![NewMessage {
                        topic: "T".into(),
                        queue_id: -1,
                        body: vec![s as u8; 1024].into(),
                        properties: encode_properties([("UNIQ_KEY", format!("{s}-{i}").as_str())]),
                        born_timestamp_ms: 1,
                        born_host: "127.0.0.1:1".into(),
                        flag: 0,
                        sys_flag: 0,
                        reconsume_times: 0,
                    }])
                    .await
                    .expect("sync send");
                let end = r[0].phys;
                assert!(
                    store.commit_log().flushed() > end,
                    "acknowledged before durable"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let messages = (SENDERS * EACH) as u64;
    let fsyncs = store.commit_log().fsync_count() - before;
    eprintln!("{messages} sync sends took {fsyncs} fsyncs");
    assert!(
        fsyncs * 4 <= messages,
        "{fsyncs} fsyncs for {messages} messages: no group commit"
    );
    store.shutdown();
}
