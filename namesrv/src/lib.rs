//! The name server. Like Apache's, every instance is independent and keeps only memory: store
//! nodes register with each one, and a node silent for longer than the expiry disappears from
//! routes. Routes list every replica of a group (brokerId 0 = master).

pub mod config;
pub mod registry;
pub mod service;

pub use config::NamesrvConfig;

use rmq_proto::namesrv::namesrv_service_server::NamesrvServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Serves until `shutdown` flips to true.
pub async fn run(
    cfg: NamesrvConfig,
    bind_host: &str,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let addr: SocketAddr = format!("{bind_host}:{}", cfg.listen_port)
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let registry = Arc::new(registry::Registry::new(Duration::from_millis(
        cfg.broker_expired_time_ms,
    )));
    let scanner = {
        let registry = registry.clone();
        let every = Duration::from_millis(cfg.scan_not_active_broker_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                for gone in registry.expire() {
                    tracing::warn!(broker = %gone, "store node expired: no heartbeat");
                }
            }
        })
    };
    println!("The Name Server boot success. serializeType=JSON, address {addr}");
    let mut sd = shutdown.clone();
    let svc = NamesrvServiceServer::new(service::NamesrvGrpc::new(registry))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let r = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = sd.wait_for(|v| *v).await;
            },
        )
        .await;
    scanner.abort();
    r.map_err(std::io::Error::other)
}
