//! The Telemetry stream: every Settings a client sends is stored and answered with
//! `{status: OK, settings: <merged>}` (grpc-protocol §5). Response headers go out at once (Rust
//! 5.0.0 blocks on them); writes never block (Python's push consumer stops reading).

use crate::cluster::Cluster;
use crate::config::ProxyConfig;
use crate::context::ClientContext;
use crate::convert::ms_dur;
use crate::error::{ProxyError, ok_status, to_status};
use crate::service::Messaging;
use rmq_proto::store::GetGroupRequest;
use rmq_proto::v2::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Streaming};

type Out = Result<TelemetryCommand, tonic::Status>;

/// Apache's customized retry schedule for consumers.
const BACKOFF_SECS: [i64; 18] = [
    1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
];

pub async fn group_settings(cluster: &Cluster, cfg: &ProxyConfig, group: &str) -> (bool, i32) {
    let Ok(store) = cluster.any_master(&cfg.rocketmq_cluster_name).await else {
        return (false, 16);
    };
    match store
        .get_group(
            GetGroupRequest {
                group: group.into(),
            },
            Duration::from_secs(3),
        )
        .await
    {
        Ok(r) => r
            .group
            .map(|g| (g.consume_message_orderly, g.retry_max_times))
            .unwrap_or((false, 16)),
        Err(_) => (false, 16),
    }
}

async fn merge(cluster: &Cluster, cfg: &ProxyConfig, mut s: Settings) -> Settings {
    match &mut s.pub_sub {
        Some(settings::PubSub::Publishing(p)) => {
            p.max_body_size = cfg.max_message_size as i32;
            p.validate_message_type = cfg.enable_topic_message_type_check;
            s.backoff_policy = Some(RetryPolicy {
                max_attempts: 3,
                strategy: Some(retry_policy::Strategy::ExponentialBackoff(
                    ExponentialBackoff {
                        initial: Some(ms_dur(10)),
                        max: Some(ms_dur(1000)),
                        multiplier: 2.0,
                    },
                )),
            });
        }
        Some(settings::PubSub::Subscription(sub)) => {
            let group = sub
                .group
                .as_ref()
                .map(|g| g.name.clone())
                .unwrap_or_default();
            let (fifo, retry_max) = group_settings(cluster, cfg, &group).await;
            sub.fifo = Some(fifo);
            sub.receive_batch_size = Some(32);
            sub.long_polling_timeout = Some(ms_dur(cfg.max_long_polling_ms));
            s.backoff_policy = Some(RetryPolicy {
                max_attempts: retry_max + 1,
                strategy: Some(retry_policy::Strategy::CustomizedBackoff(
                    CustomizedBackoff {
                        next: BACKOFF_SECS.iter().map(|s| ms_dur(s * 1000)).collect(),
                    },
                )),
            });
        }
        None => {}
    }
    s.metric = Some(Metric {
        on: false,
        endpoints: None,
    });
    s
}

pub async fn open(
    svc: &Messaging,
    request: Request<Streaming<TelemetryCommand>>,
) -> Result<Response<crate::service::TelemetryOut>, tonic::Status> {
    let ctx = ClientContext::from_metadata(request.metadata());
    let (tx, rx) = mpsc::channel::<Out>(64);
    if ctx.client_id.trim().is_empty() {
        let _ = tx.try_send(Ok(TelemetryCommand {
            status: Some(to_status(&ctx, &ProxyError::ClientIdRequired)),
            command: None,
        }));
        drop(tx);
        return Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )));
    }
    let sessions = svc.sessions.clone();
    let cluster: Arc<Cluster> = svc.cluster.clone();
    let cfg = svc.cfg.clone();
    let stream_id = sessions.add_stream(&ctx.client_id, tx.clone());
    let mut inbound = request.into_inner();
    tokio::spawn(async move {
        while let Some(item) = inbound.next().await {
            let Ok(cmd) = item else { break };
            // Other commands are results of server-initiated ones; nothing waits for them yet.
            if let Some(telemetry_command::Command::Settings(s)) = cmd.command {
                if s.pub_sub.is_none() {
                    let _ = tx.try_send(Err(tonic::Status::invalid_argument(
                        "settings carry neither publishing nor subscription",
                    )));
                    break;
                }
                let merged = merge(&cluster, &cfg, s).await;
                sessions.set_settings(&ctx.client_id, merged.clone());
                let reply = TelemetryCommand {
                    status: Some(ok_status()),
                    command: Some(telemetry_command::Command::Settings(merged)),
                };
                if tx.try_send(Ok(reply)).is_err() {
                    tracing::debug!(client = %ctx.client_id, "telemetry reply dropped: client not reading");
                }
            }
        }
        sessions.remove_stream(&ctx.client_id, stream_id);
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}
