//! Sends coalesced into one store RPC: a real store node on a loopback socket, many concurrent
//! sends through one coalescer. Every good send is stored exactly once and gets its own entry;
//! a send to a topic the node lacks fails alone, never taking its batch-mates with it.

use rmq_proto::store::store_service_client::StoreServiceClient;
use rmq_proto::store::{AppendRequest, StoreMessage};
use rmq_proto::v2::Code;
use rmq_proxy::coalesce::Coalescer;
use rmq_store_node::config::StoreConfig;
use rmq_store_node::state::TopicCfg;
use rmq_store_node::store::Store;
use std::collections::HashSet;
use std::time::Duration;

fn msg(topic: &str, i: usize) -> StoreMessage {
    StoreMessage {
        topic: topic.into(),
        queue_id: 0,
        body: format!("m{i}").into_bytes().into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_rpcs_and_a_bad_one_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        store_path_root_dir: dir.path().to_path_buf(),
        mapped_file_size_commit_log: 8 * 1024 * 1024,
        ..StoreConfig::default()
    })
    .unwrap();
    store
        .upsert_topic(TopicCfg {
            name: "Good".into(),
            read_queue_nums: 1,
            write_queue_nums: 1,
            perm: 6,
            attributes: Default::default(),
            order: false,
        })
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rmq_store_node::grpc_service(store.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    let client = StoreServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let co = Coalescer::new(client);

    const SENDS: usize = 400;
    let mut tasks = Vec::new();
    for i in 0..SENDS {
        let co = co.clone();
        tasks.push(tokio::spawn(async move {
            let topic = if i % 50 == 7 { "Missing" } else { "Good" };
            let r = co
                .append(
                    AppendRequest {
                        messages: vec![msg(topic, i)],
                    },
                    Duration::from_secs(10),
                )
                .await;
            (i, topic, r)
        }));
    }
    let mut offsets = HashSet::new();
    let mut good = 0;
    for t in tasks {
        let (i, topic, r) = t.await.unwrap();
        let r = r.unwrap_or_else(|e| panic!("send {i} failed at the transport: {e}"));
        let code = r.result.as_ref().map(|x| x.code).unwrap_or(0);
        if topic == "Missing" {
            assert_eq!(
                code,
                Code::TopicNotFound as i32,
                "send {i} to a missing topic"
            );
            continue;
        }
        assert_eq!(code, Code::Ok as i32, "send {i}: {:?}", r.result);
        assert_eq!(r.entries.len(), 1, "send {i} gets exactly its own entry");
        assert!(
            offsets.insert(r.entries[0].queue_offset),
            "send {i}: queue offset handed out twice"
        );
        good += 1;
    }
    assert_eq!(good, SENDS - SENDS / 50);
    assert!(
        co.rpcs() < SENDS as u64,
        "{SENDS} concurrent sends shared {} append RPCs",
        co.rpcs()
    );
    let status = store.topic_status("Good").unwrap();
    let stored: i64 = status.iter().map(|q| q.2 - q.1).sum();
    assert_eq!(stored as usize, good, "each good send stored exactly once");
    let _ = stop_tx.send(());
    let _ = server.await;
}
