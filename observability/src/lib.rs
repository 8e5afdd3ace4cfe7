//! Tracing and metrics for every role. Metrics are OpenTelemetry instruments exported in
//! Prometheus format on `metricsPromExporterPort` (default 5557), under Apache RocketMQ's
//! series names and labels so existing dashboards and alerts keep working.
//!
//! Naming follows the rules of `opentelemetry-prometheus` with counter suffixes disabled:
//! counters are created with Java's full name (`rocketmq_messages_in_total`), so the scraped
//! name equals Java's, with no doubled `_total_total`.

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// The meter name Java's broker and proxy use; it shows up as `otel_scope_name` on every series.
pub const METER_NAME: &str = "broker-meter";

struct Metrics {
    registry: prometheus::Registry,
    _provider: SdkMeterProvider,
}

static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();

/// Installs the global meter provider with a Prometheus reader. Safe to call more than once
/// (standalone mode runs three roles in one process; they share one registry).
pub fn init_metrics() {
    METRICS.get_or_init(|| {
        let registry = prometheus::Registry::new();
        let exporter = match opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_counter_suffixes()
            .without_target_info()
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "metrics exporter unavailable");
                return None;
            }
        };
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Some(Metrics {
            registry,
            _provider: provider,
        })
    });
}

/// The meter every role records through.
pub fn meter() -> Meter {
    init_metrics();
    opentelemetry::global::meter(METER_NAME)
}

/// The current Prometheus text exposition.
pub fn render() -> String {
    let Some(Some(m)) = METRICS.get() else {
        return String::new();
    };
    let families = m.registry.gather();
    let mut buf = Vec::new();
    if let Err(e) =
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut buf)
    {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Labels Java puts on every point of a node: `cluster`, `node_type`, `node_id`.
pub fn node_labels(cluster: &str, node_type: &str, node_id: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("cluster", cluster.to_string()),
        KeyValue::new("node_type", node_type.to_string()),
        KeyValue::new("node_id", node_id.to_string()),
    ]
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    });
}

/// Serves `/metrics` and `/healthz` until `shutdown` resolves.
pub async fn serve_metrics(
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    init_metrics();
    let app = axum::Router::new()
        .route("/metrics", get(|| async { render() }))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
