//! The store node: holds a commitlog replica and everything derived from it, and serves the
//! internal store API that proxies and `mqadmin` use.

pub mod checkpoint;
pub mod commitlog;
pub mod config;
pub mod consumequeue;
pub mod durable;
pub mod error;
pub mod flush;
pub mod layout;
pub mod metrics;
pub mod registration;
pub mod replication;
pub mod service;
pub mod state;
pub mod store;

pub use config::StoreConfig;
pub use service::StoreGrpc;
pub use store::Store;

use rmq_proto::store::store_service_server::StoreServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Inbound message limit: a 4 MiB body plus properties, with generous room for batches.
pub const MAX_GRPC_MESSAGE: usize = 256 * 1024 * 1024;

pub fn grpc_service(store: Arc<Store>) -> StoreServiceServer<StoreGrpc> {
    StoreServiceServer::new(StoreGrpc::new(store))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE)
}

/// Opens the store, binds `listenPort`, registers with the name servers and serves until
/// `shutdown` flips to true. Returns the opened store through `ready` once listening.
pub async fn run(
    cfg: StoreConfig,
    bind_host: &str,
    shutdown: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<Arc<Store>>>,
) -> std::io::Result<()> {
    let open_cfg = cfg.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(open_cfg))
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    let addr: SocketAddr = format!("{bind_host}:{}", cfg.listen_port)
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let sampler = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                store.stats.sample();
            }
        })
    };
    let _lag_gauge = ha_lag_gauge(&store);
    let ha = start_replication(&store, bind_host, shutdown.clone()).await?;
    if !store.is_slave() && store.had_slaves() {
        // Give returning slaves a moment to hand over what they did while we were away, before
        // consumers are routed back here.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while store.replicas.snapshot().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let regs = registration::spawn(store.clone(), shutdown.clone());
    println!(
        "The broker[{}, {}] boot success. serializeType=JSON{}",
        cfg.broker_name,
        cfg.advertised_addr(),
        if cfg.namesrv_addr.is_empty() {
            String::new()
        } else {
            format!(" and name server is {}", cfg.namesrv_addr.join(";"))
        }
    );
    if let Some(tx) = ready {
        let _ = tx.send(store.clone());
    }
    let mut sd = shutdown.clone();
    let result = tonic::transport::Server::builder()
        .add_service(grpc_service(store.clone()))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = sd.wait_for(|v| *v).await;
            },
        )
        .await;
    for r in regs {
        let _ = tokio::time::timeout(Duration::from_secs(3), r).await;
    }
    ha.abort();
    sampler.abort();
    let closing = store.clone();
    let _ = tokio::task::spawn_blocking(move || closing.shutdown()).await;
    result.map_err(std::io::Error::other)
}

/// Masters serve the replication stream on `haListenPort`; slaves run the replication client.
async fn start_replication(
    store: &Arc<Store>,
    bind_host: &str,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if store.is_slave() {
        return Ok(replication::slave::spawn(store.clone(), shutdown));
    }
    let addr: SocketAddr = format!("{bind_host}:{}", store.config().ha_port())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let svc = rmq_proto::replication::replication_service_server::ReplicationServiceServer::new(
        replication::master::ReplicationGrpc::new(store.clone()),
    )
    .max_decoding_message_size(MAX_GRPC_MESSAGE)
    .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let mut sd = shutdown;
    Ok(tokio::spawn(async move {
        let r = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = sd.wait_for(|v| *v).await;
                },
            )
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "replication server failed");
        }
    }))
}

/// `rocketmq_ha_slave_behind_bytes{slave_broker_id}`: how far each connected slave is behind the
/// master's log, sampled at scrape time (our name; Apache exports no replication lag).
fn ha_lag_gauge(store: &Arc<Store>) -> opentelemetry::metrics::ObservableGauge<i64> {
    let weak = Arc::downgrade(store);
    let cfg = store.config();
    let labels =
        rmq_observability::node_labels(&cfg.broker_cluster_name, "broker", &cfg.broker_name);
    rmq_observability::meter()
        .i64_observable_gauge("rocketmq_ha_slave_behind_bytes")
        .with_description("Bytes of the commit log a connected slave has not acknowledged yet")
        .with_callback(move |o| {
            if let Some(s) = weak.upgrade() {
                for (id, lag) in s.slave_lag() {
                    let mut attrs = labels.clone();
                    attrs.push(opentelemetry::KeyValue::new("slave_broker_id", id));
                    o.observe(lag, &attrs);
                }
            }
        })
        .build()
}
