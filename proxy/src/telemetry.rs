//! The Telemetry stream: every Settings a client sends is stored and answered with
//! `{status: OK, settings: <merged>}` (grpc-protocol §5). Response headers go out at once (Rust
//! 5.0.0 blocks on them); writes never block (Python's push consumer stops reading).

use crate::cluster::Cluster;
use crate::config::ProxyConfig;
use crate::context::ClientContext;
use crate::convert::ms_dur;
use crate::error::{ProxyError, ok_status, to_status};
use crate::rpc::Messaging;
use rmq_common::retry_policy::RetryPolicy as RetryPolicyCfg;
use rmq_proto::store::GetGroupRequest;
use rmq_proto::v2::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Streaming};

type Out = Result<TelemetryCommand, tonic::Status>;

/// What consumers are told about their group: orderly or not, and how failures are retried.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub fifo: bool,
    pub retry_max_times: i32,
    pub retry_policy: RetryPolicyCfg,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            fifo: false,
            retry_max_times: 16,
            retry_policy: RetryPolicyCfg::default(),
        }
    }
}

pub async fn group_settings(cluster: &Cluster, cfg: &ProxyConfig, group: &str) -> GroupSettings {
    let Ok(store) = cluster.any_master(&cfg.rocketmq_cluster_name).await else {
        return GroupSettings::default();
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
            .map(|g| GroupSettings {
                fifo: g.consume_message_orderly,
                retry_max_times: g.retry_max_times,
                // Validated when it was set; a policy that no longer parses falls back.
                retry_policy: RetryPolicyCfg::parse(&g.group_retry_policy).unwrap_or_default(),
            })
            .unwrap_or_default(),
        Err(_) => GroupSettings::default(),
    }
}

/// The group's policy as the client's backoff policy (`max_attempts` = retryMaxTimes + 1).
fn backoff(g: &GroupSettings) -> RetryPolicy {
    let strategy = match &g.retry_policy {
        RetryPolicyCfg::Customized { next_ms } => {
            retry_policy::Strategy::CustomizedBackoff(CustomizedBackoff {
                next: next_ms.iter().map(|ms| ms_dur(*ms)).collect(),
            })
        }
        RetryPolicyCfg::Exponential {
            initial_ms,
            max_ms,
            multiplier,
        } => retry_policy::Strategy::ExponentialBackoff(ExponentialBackoff {
            initial: Some(ms_dur(*initial_ms)),
            max: Some(ms_dur(*max_ms)),
            multiplier: *multiplier as f32,
        }),
    };
    RetryPolicy {
        max_attempts: g.retry_max_times.max(0) + 1,
        strategy: Some(strategy),
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
            let g = group_settings(cluster, cfg, &group).await;
            sub.fifo = Some(g.fifo);
            sub.receive_batch_size = Some(32);
            sub.long_polling_timeout = Some(ms_dur(cfg.max_long_polling_ms));
            s.backoff_policy = Some(backoff(&g));
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
) -> Result<Response<crate::rpc::TelemetryOut>, tonic::Status> {
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
