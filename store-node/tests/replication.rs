//! Replication between two real store nodes over loopback: a slave copies its master byte for
//! byte, and a slave whose tail diverged is cut back to the common prefix before copying on.

use rmq_common::record::encode_properties;
use rmq_proto::replication::replication_service_server::ReplicationServiceServer;
use rmq_store_node::config::{BrokerRole, StoreConfig};
use rmq_store_node::replication::master::ReplicationGrpc;
use rmq_store_node::state::TopicCfg;
use rmq_store_node::store::{NewMessage, PopRequest, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cfg(dir: &Path, role: BrokerRole, id: i64, master: &str) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: 64 * 1024,
        broker_name: "broker-a".into(),
        broker_role: role,
        broker_id: id,
        ha_master_address: master.into(),
        ..StoreConfig::default()
    }
}

async fn send(store: &Store, tag: &str, n: usize) {
    for i in 0..n {
        store
            .append(vec![NewMessage {
                topic: "T".into(),
                queue_id: -1,
                body: format!("{tag}-{i}").repeat(50).into_bytes().into(),
                properties: encode_properties([("UNIQ_KEY", format!("{tag}{i}").as_str())]),
                born_timestamp_ms: 1,
                born_host: "127.0.0.1:1".into(),
                flag: 0,
                sys_flag: 0,
                reconsume_times: 0,
            }])
            .await
            .unwrap();
    }
}

fn log_bytes(store: &Store) -> Vec<u8> {
    let end = store.commit_log().published();
    let mut out = Vec::new();
    let mut at = 0;
    while at < end {
        let chunk = store.commit_log().read_raw(at, 1 << 20).unwrap();
        if chunk.is_empty() {
            break;
        }
        at += chunk.len() as i64;
        out.extend(chunk);
    }
    out
}

async fn wait_identical(master: &Store, slave: &Store) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while slave.commit_log().published() != master.commit_log().published() {
        assert!(Instant::now() < deadline, "slave did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log_bytes(master) == log_bytes(slave), "logs differ");
}

async fn bodies(store: &Store, group: &str) -> Vec<String> {
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
    let mut v: Vec<String> = got
        .iter()
        .map(|d| {
            let view = rmq_common::record::RecordView::parse(&d.record).unwrap();
            String::from_utf8_lossy(&view.body[..view.body.len().min(8)]).to_string()
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_slave_tail_is_cut_back_to_the_common_prefix() {
    let base = tempfile::tempdir().unwrap();
    let (mdir, sdir) = (base.path().join("m"), base.path().join("s"));
    let master = Store::open(cfg(&mdir, BrokerRole::AsyncMaster, 0, "")).unwrap();
    master
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
    send(&master, "common", 10).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ha_addr = listener.local_addr().unwrap().to_string();
    let svc = ReplicationServiceServer::new(ReplicationGrpc::new(master.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    // A slave copies the master.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let slave = Store::open(cfg(&sdir, BrokerRole::Slave, 1, &ha_addr)).unwrap();
    let task = rmq_store_node::replication::slave::spawn(slave.clone(), stop_rx);
    wait_identical(&master, &slave).await;
    let common_end = slave.commit_log().published();
    let _ = stop_tx.send(true);
    let _ = task.await;
    slave.shutdown();
    drop(slave);

    // Its directory is then written to as if it were a master: a tail the master never had.
    let rogue = Store::open(cfg(&sdir, BrokerRole::AsyncMaster, 0, "")).unwrap();
    send(&rogue, "rogue", 5).await;
    assert!(rogue.commit_log().published() > common_end);
    rogue.shutdown();
    drop(rogue);
    send(&master, "later", 3).await;

    // Back as a slave: cut to the common prefix, then byte-identical to the master again.
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let slave: Arc<Store> = Store::open(cfg(&sdir, BrokerRole::Slave, 1, &ha_addr)).unwrap();
    let _task = rmq_store_node::replication::slave::spawn(slave.clone(), rx);
    wait_identical(&master, &slave).await;
    let got = bodies(&slave, "reader").await;
    assert_eq!(
        got.len(),
        13,
        "the master's 13 messages, none of the diverged tail: {got:?}"
    );
    assert!(got.iter().all(|b| !b.starts_with("rogue")), "{got:?}");
    slave.shutdown();
    master.shutdown();
}
