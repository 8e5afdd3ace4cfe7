//! Keeps this node registered with every name server in `namesrvAddr`, independently: a dead
//! name server delays nothing else. Registers at start, every `registerNameServerPeriod`, and
//! at once when topics change.

use crate::service::topic_to_proto;
use crate::store::Store;
use rmq_proto::namesrv::namesrv_service_client::NamesrvServiceClient;
use rmq_proto::namesrv::{RegisterBrokerRequest, UnregisterBrokerRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub fn register_request(store: &Store) -> RegisterBrokerRequest {
    let cfg = store.config();
    RegisterBrokerRequest {
        cluster_name: cfg.broker_cluster_name.clone(),
        broker_name: cfg.broker_name.clone(),
        broker_id: cfg.broker_id,
        broker_addr: cfg.advertised_addr(),
        ha_addr: format!(
            "{}:{}",
            if cfg.broker_ip2.is_empty() {
                &cfg.broker_ip1
            } else {
                &cfg.broker_ip2
            },
            cfg.ha_port()
        ),
        topics: store.topics().iter().map(topic_to_proto).collect(),
        role: cfg.broker_role.as_str().into(),
        version: env!("CARGO_PKG_VERSION").into(),
        heartbeat_timeout_ms: 120_000,
        broker_permission: cfg.broker_permission,
    }
}

fn endpoint(addr: &str) -> Option<tonic::transport::Endpoint> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()
        .map(|e| {
            e.connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(5))
        })
}

/// Spawns one registration loop per name server.
pub fn spawn(
    store: Arc<Store>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let period = Duration::from_millis(store.config().register_name_server_period_ms);
    let addrs = store.config().namesrv_addr.clone();
    addrs
        .into_iter()
        .map(|addr| {
            let store = store.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let Some(ep) = endpoint(&addr) else {
                    tracing::error!(%addr, "invalid name server address");
                    return;
                };
                let mut client = NamesrvServiceClient::new(ep.connect_lazy());
                let mut registered = false;
                loop {
                    let changed = store.topics_changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    match client.register_broker(register_request(&store)).await {
                        Ok(_) if !registered => {
                            registered = true;
                            tracing::info!(namesrv = %addr, "registered with name server");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            registered = false;
                            tracing::warn!(namesrv = %addr, error = %e.message(), "name server registration failed");
                        }
                    }
                    let retry = if registered { period } else { Duration::from_secs(1).min(period) };
                    tokio::select! {
                        _ = &mut changed => {}
                        _ = tokio::time::sleep(retry) => {}
                        _ = shutdown.changed() => break,
                    }
                }
                let cfg = store.config();
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    client.unregister_broker(UnregisterBrokerRequest {
                        cluster_name: cfg.broker_cluster_name.clone(),
                        broker_name: cfg.broker_name.clone(),
                        broker_id: cfg.broker_id,
                        broker_addr: cfg.advertised_addr(),
                    }),
                )
                .await;
            })
        })
        .collect()
}
