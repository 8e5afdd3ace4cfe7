//! Keeps this node registered with every name server in `namesrvAddr`, independently: a dead
//! name server delays nothing else. Registers at start, every `registerNameServerPeriod`, and
//! at once when topics change.

use crate::service::topic_to_proto;
use crate::store::Store;
use rmq_proto::namesrv::namesrv_service_client::NamesrvServiceClient;
use rmq_proto::namesrv::{KeepAlivePing, RegisterBrokerRequest, UnregisterBrokerRequest};
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
                let mut keepalive: Option<tokio::task::JoinHandle<()>> = None;
                loop {
                    let changed = store.topics_changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    match client.register_broker(register_request(&store)).await {
                        Ok(r) => {
                            store.learn_master_ha_addr(&r.into_inner().master_ha_addr);
                            if !registered {
                                registered = true;
                                tracing::info!(namesrv = %addr, "registered with name server");
                            }
                            if keepalive.as_ref().is_none_or(|k| k.is_finished()) {
                                keepalive = Some(spawn_keepalive(&store, client.clone()));
                            }
                        }
                        Err(e) => {
                            registered = false;
                            tracing::warn!(namesrv = %addr, error = %e.message(), "name server registration failed");
                        }
                    }
                    // A slave that does not know its master yet asks again soon.
                    let waiting_for_master = store.is_slave() && store.master_ha_addr().is_empty();
                    let retry = if registered && !waiting_for_master { period } else { Duration::from_secs(1).min(period) };
                    tokio::select! {
                        _ = &mut changed => {}
                        _ = tokio::time::sleep(retry) => {}
                        _ = shutdown.changed() => break,
                    }
                }
                if let Some(k) = keepalive.take() {
                    k.abort();
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

/// Holds a stream open to the name server so that this node's death is noticed at once.
fn spawn_keepalive(
    store: &Store,
    mut client: NamesrvServiceClient<tonic::transport::Channel>,
) -> tokio::task::JoinHandle<()> {
    let cfg = store.config();
    let ping = KeepAlivePing {
        cluster_name: cfg.broker_cluster_name.clone(),
        broker_name: cfg.broker_name.clone(),
        broker_id: cfg.broker_id,
        broker_addr: cfg.advertised_addr(),
    };
    tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        if tx.send(ping.clone()).await.is_err() {
            return;
        }
        let Ok(resp) = client
            .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        else {
            return;
        };
        let mut inbound = resp.into_inner();
        loop {
            tokio::select! {
                m = inbound.message() => {
                    if !matches!(m, Ok(Some(_))) {
                        break;
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    if tx.send(ping.clone()).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
}
