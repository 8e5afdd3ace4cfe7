//! The master side: checks a slave's identity, finds the common prefix of the two logs, applies
//! the slave's handed-over state changes, then streams log bytes within a bounded window.

use super::{CHUNK, WINDOW};
use crate::store::Store;
use rmq_proto::replication::master_message::Msg as Out;
use rmq_proto::replication::replication_service_server::ReplicationService;
use rmq_proto::replication::slave_message::Msg as In;
use rmq_proto::replication::{Accept, Data, MasterMessage, SlaveHello, SlaveMessage};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub struct ReplicationGrpc {
    store: Arc<Store>,
}

impl ReplicationGrpc {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<MasterMessage, Status>> + Send>>;

fn refuse(reason: String) -> Result<Response<Outbound>, Status> {
    tracing::warn!("replication refused: {reason}");
    let msg = MasterMessage {
        msg: Some(Out::Refused(reason)),
    };
    Ok(Response::new(Box::pin(tokio_stream::iter(vec![Ok(msg)]))))
}

impl ReplicationGrpc {
    fn check_identity(&self, h: &SlaveHello) -> Result<(), String> {
        let cfg = self.store.config();
        if self.store.is_slave() {
            return Err(format!(
                "{} (brokerId {}) is a slave and serves no replication",
                cfg.broker_name, cfg.broker_id
            ));
        }
        if h.cluster_name != cfg.broker_cluster_name || h.broker_name != cfg.broker_name {
            return Err(format!(
                "node {}/{} (brokerId {}) is not in replica group {}/{}",
                h.cluster_name,
                h.broker_name,
                h.broker_id,
                cfg.broker_cluster_name,
                cfg.broker_name
            ));
        }
        if h.broker_id <= 0 {
            return Err(format!("a slave needs brokerId > 0, got {}", h.broker_id));
        }
        if h.segment_size != cfg.mapped_file_size_commit_log as i64 {
            return Err(format!(
                "mappedFileSizeCommitLog differs: slave {} vs master {}",
                h.segment_size, cfg.mapped_file_size_commit_log
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ReplicationService for ReplicationGrpc {
    type ReplicateStream = Outbound;

    async fn replicate(
        &self,
        request: Request<Streaming<SlaveMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(SlaveMessage {
                msg: Some(In::Hello(h)),
            }) => h,
            _ => return refuse("the first message must be a hello".into()),
        };
        if let Err(reason) = self.check_identity(&hello) {
            return refuse(reason);
        }
        for raw in &hello.handover {
            if let Err(e) = self.store.apply_handover(raw).await {
                tracing::warn!(error = %e, "handed-over state change not applied");
            }
        }
        let begin = match self.store.replication_start(&hello) {
            Ok(b) => b,
            Err(e) => return refuse(e.to_string()),
        };
        let master_end = self.store.commit_log().published();
        let (accept, start) = match begin {
            crate::store::Start::From(start) => (
                Accept {
                    truncate_to: start,
                    master_end,
                    ..Accept::default()
                },
                start,
            ),
            crate::store::Start::Reset { base, snapshot } => (
                Accept {
                    truncate_to: base,
                    master_end,
                    reset: true,
                    reset_to: base,
                    snapshot,
                },
                base,
            ),
        };
        tracing::info!(slave = %peer, broker_id = hello.broker_id, slave_end = hello.log_end, start, reset = accept.reset, "slave connected");
        let (tx, rx) = mpsc::channel::<Result<MasterMessage, Status>>(4);
        let accept = MasterMessage {
            msg: Some(Out::Accept(accept)),
        };
        if tx.send(Ok(accept)).await.is_err() {
            return Err(Status::cancelled("slave went away"));
        }
        let store = self.store.clone();
        let conn = store.replicas.connect(hello.broker_id, peer.clone(), start);
        store.remember_slave().await;
        let sender = {
            let (store, tx) = (store.clone(), tx.clone());
            tokio::spawn(async move {
                let mut cursor = start;
                loop {
                    let appended = store.appended.notified();
                    tokio::pin!(appended);
                    appended.as_mut().enable();
                    let acked = store.replicas.acked.notified();
                    tokio::pin!(acked);
                    acked.as_mut().enable();
                    if cursor - store.replicas.acked_by(conn) > WINDOW {
                        tokio::select! {
                            _ = &mut acked => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        continue;
                    }
                    let Some((bytes, next, raw)) = store.commit_log().records_from(cursor, CHUNK)
                    else {
                        tracing::warn!(cursor, "replication source range is gone");
                        break;
                    };
                    let master_end = store.commit_log().published();
                    if bytes.is_empty() && next == cursor {
                        let beat = MasterMessage {
                            msg: Some(Out::HeartbeatMasterEnd(master_end)),
                        };
                        if tx.send(Ok(beat)).await.is_err() {
                            break;
                        }
                        tokio::select! {
                            _ = &mut appended => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        continue;
                    }
                    let data = MasterMessage {
                        msg: Some(Out::Data(Data {
                            offset: cursor,
                            bytes: bytes.into(),
                            master_end,
                            raw,
                        })),
                    };
                    // Counted as sent before it is handed to the stream: once queued, the
                    // slave's ack can come back (on another thread) before this task runs
                    // again, and an ack beyond `sent` is treated as a protocol violation.
                    store.replicas.sent(conn, next);
                    if tx.send(Ok(data)).await.is_err() {
                        break;
                    }
                    cursor = next;
                }
            })
        };
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(SlaveMessage {
                        msg: Some(In::Ack(a)),
                    })) => {
                        if let Err(e) =
                            store
                                .replicas
                                .ack(conn, a.offset, store.commit_log().published())
                        {
                            tracing::error!(slave = %peer, "{e}; closing the stream");
                            break;
                        }
                    }
                    Ok(Some(SlaveMessage {
                        msg: Some(In::Handover(raw)),
                    })) => {
                        if let Err(e) = store.apply_handover(&raw).await {
                            tracing::warn!(error = %e, "handed-over state change not applied");
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            sender.abort();
            store.replicas.disconnect(conn);
            tracing::info!(slave = %peer, "slave disconnected");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
