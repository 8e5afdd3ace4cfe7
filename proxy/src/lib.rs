//! The proxy: stateless front door speaking `apache.rocketmq.v2.MessagingService`. It finds
//! store nodes through the name servers; receipt handles carry everything needed to route an
//! ack, so any proxy can finish what another one started.

pub mod cluster;
pub mod coalesce;
pub mod config;
pub mod context;
pub mod convert;
pub mod error;
pub mod replica_read;
pub mod rpc;
pub mod sessions;
pub mod telemetry;

pub use config::ProxyConfig;

use rmq_proto::store::store_service_server::StoreService;
use rmq_proto::v2::messaging_service_server::MessagingServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Apache's proxy accepts inbound messages up to 130 MiB.
pub const MAX_INBOUND: usize = 130 * 1024 * 1024;

/// Serves the v2 protocol until `shutdown` flips to true. `local` is the in-process store of
/// standalone mode (its advertised address and service).
pub async fn run(
    cfg: ProxyConfig,
    bind_host: &str,
    local: Option<(String, Arc<dyn StoreService>)>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let addr: SocketAddr = format!("{bind_host}:{}", cfg.grpc_server_port)
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let cluster = cluster::Cluster::new(&cfg.namesrv_list(), local)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let labels = {
        let mut l =
            rmq_observability::node_labels(&cfg.proxy_cluster_name, "proxy", &cfg.proxy_name);
        l.push(opentelemetry::KeyValue::new("proxy_mode", "cluster"));
        l
    };
    let _up = rmq_observability::meter()
        .u64_observable_gauge("rocketmq_proxy_up")
        .with_description("Whether the proxy is up")
        .with_callback(move |o| o.observe(1, &labels))
        .build();
    let svc = rpc::Messaging {
        cfg: cfg.clone(),
        cluster: Arc::new(cluster),
        sessions: Arc::default(),
    };
    let server = MessagingServiceServer::new(svc)
        .max_decoding_message_size(MAX_INBOUND)
        .max_encoding_message_size(MAX_INBOUND);
    println!("rocketmq-proxy startup successfully, gRPC on {addr}");
    let mut sd = shutdown.clone();
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(server)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = sd.wait_for(|v| *v).await;
            },
        )
        .await
        .map_err(std::io::Error::other)
}
