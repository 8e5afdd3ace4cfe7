//! The slave side: finds its master (namesrv or `haMasterAddress`), offers its log tail, cuts a
//! diverged tail back to the common prefix, then appends what the master streams and acks it.

use crate::store::Store;
use rmq_proto::replication::master_message::Msg as Out;
use rmq_proto::replication::replication_service_client::ReplicationServiceClient;
use rmq_proto::replication::slave_message::Msg as In;
use rmq_proto::replication::{SlaveAck, SlaveMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub fn spawn(
    store: Arc<Store>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let addr = store.master_ha_addr();
            if !addr.is_empty() {
                tokio::select! {
                    r = run_once(&store, &addr) => {
                        if let Err(e) = r {
                            tracing::warn!(master = %addr, "replication: {e}");
                            store.set_master_state(&addr, false);
                        }
                    }
                    _ = shutdown.changed() => break,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => break,
            }
        }
    })
}

async fn run_once(store: &Arc<Store>, addr: &str) -> Result<(), String> {
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    let ch = ep
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = ReplicationServiceClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<SlaveMessage>(16);
    let (hello, handed) = store.slave_hello();
    tx.send(SlaveMessage {
        msg: Some(In::Hello(hello)),
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut inbound = client
        .replicate(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    match inbound
        .message()
        .await
        .map_err(|e| e.message().to_string())?
    {
        Some(m) => match m.msg {
            Some(Out::Accept(a)) => {
                store.confirm_handover(handed);
                let s = store.clone();
                if a.reset {
                    tracing::warn!(
                        base = a.reset_to,
                        "this slave's log cannot continue the master's (the master deleted what \
                         it would need): starting over from the master's snapshot"
                    );
                    tokio::task::spawn_blocking(move || {
                        s.reset_from_master(a.reset_to, &a.snapshot)
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                } else if a.truncate_to != store.commit_log().published() {
                    if a.truncate_to < store.commit_log().published() {
                        tracing::warn!(
                            to = a.truncate_to,
                            "slave log diverged from the master: truncating to the common prefix"
                        );
                    }
                    let to = a.truncate_to;
                    tokio::task::spawn_blocking(move || s.truncate_to(to))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                }
                store.set_master_end(a.master_end);
            }
            Some(Out::Refused(r)) => return Err(format!("refused: {r}")),
            _ => return Err("unexpected first message".into()),
        },
        None => return Err("stream closed".into()),
    }
    store.set_master_state(addr, true);
    tracing::info!(master = %addr, from = store.commit_log().published(), "replicating");
    while let Some(m) = inbound
        .message()
        .await
        .map_err(|e| e.message().to_string())?
    {
        match m.msg {
            Some(Out::Data(d)) => {
                let end = store
                    .append_replica(d.offset, &d.bytes, d.raw)
                    .map_err(|e| e.to_string())?;
                store
                    .await_local_durable(end)
                    .await
                    .map_err(|e| e.to_string())?;
                store.set_master_end(d.master_end);
                tx.send(SlaveMessage {
                    msg: Some(In::Ack(SlaveAck { offset: end })),
                })
                .await
                .map_err(|e| e.to_string())?;
            }
            Some(Out::HeartbeatMasterEnd(end)) => store.set_master_end(end),
            Some(Out::Refused(r)) => return Err(format!("refused: {r}")),
            _ => {}
        }
        for raw in store.take_new_handover() {
            let _ = tx
                .send(SlaveMessage {
                    msg: Some(In::Handover(raw)),
                })
                .await;
        }
    }
    Err("master closed the stream".into())
}
