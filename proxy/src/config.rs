//! Proxy settings under the keys of Apache's `rmq-proxy.json`.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    /// The store cluster this proxy serves (`rocketMQClusterName`).
    #[serde(rename = "rocketMQClusterName")]
    pub rocketmq_cluster_name: String,
    /// Cluster label on the proxy's own metrics.
    pub proxy_cluster_name: String,
    pub proxy_name: String,
    /// `host:port;host:port`; env `NAMESRV_ADDR` or `-n` override it.
    pub namesrv_addr: String,
    pub grpc_server_port: u16,
    pub metrics_prom_exporter_port: u16,
    /// Body limit announced to clients and enforced on send (4 MiB).
    pub max_message_size: usize,
    pub enable_topic_message_type_check: bool,
    /// Polls shorter than this are refused (ms); Apache's 5 s.
    pub min_long_polling_ms: i64,
    /// Polls are clamped to at most this (ms); Apache's 20 s.
    pub max_long_polling_ms: i64,
    /// Invisible time for auto-renewing (push) receives (ms); Apache's `defaultInvisibleTimeMills`.
    pub default_invisible_time_ms: i64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            rocketmq_cluster_name: "DefaultCluster".into(),
            proxy_cluster_name: "DefaultCluster".into(),
            proxy_name: std::fs::read_to_string("/etc/hostname")
                .map(|s| s.trim().to_string())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "DEFAULT_PROXY".into()),
            namesrv_addr: "127.0.0.1:9876".into(),
            grpc_server_port: 8081,
            metrics_prom_exporter_port: 5557,
            max_message_size: 4 * 1024 * 1024,
            enable_topic_message_type_check: true,
            min_long_polling_ms: 5_000,
            max_long_polling_ms: 20_000,
            default_invisible_time_ms: 60_000,
        }
    }
}

/// Keys Apache's proxy knows that we accept without acting on them.
const ACCEPTED: &[&str] = &[
    "proxyMode",
    "remotingListenPort",
    "tlsTestModeEnable",
    "tlsKeyPath",
    "tlsCertPath",
    "metricsExporterType",
    "metricCollectorMode",
    "metricCollectorAddress",
    "grpcMaxInboundMessageSize",
];

const KNOWN: &[&str] = &[
    "rocketMQClusterName",
    "proxyClusterName",
    "proxyName",
    "namesrvAddr",
    "grpcServerPort",
    "metricsPromExporterPort",
    "maxMessageSize",
    "enableTopicMessageTypeCheck",
    "minLongPollingMs",
    "maxLongPollingMs",
    "defaultInvisibleTimeMs",
];

impl ProxyConfig {
    /// Parses `rmq-proxy.json`; returns the config and the keys it did not recognise.
    pub fn from_json(text: &str) -> Result<(Self, Vec<String>), String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let obj = value
            .as_object()
            .ok_or("the proxy config must be a JSON object")?;
        let unknown = obj
            .keys()
            .filter(|k| !KNOWN.contains(&k.as_str()) && !ACCEPTED.contains(&k.as_str()))
            .cloned()
            .collect();
        let cfg: Self =
            serde_json::from_value(value.clone()).map_err(|e| format!("invalid value: {e}"))?;
        Ok((cfg, unknown))
    }

    /// Applies one `key=value` override (CLI `--set`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let mut obj = serde_json::to_value(SerializableView(self)).map_err(|e| e.to_string())?;
        let parsed = serde_json::from_str::<serde_json::Value>(value)
            .unwrap_or(serde_json::Value::String(value.into()));
        let map = obj.as_object_mut().ok_or("config is not an object")?;
        if !KNOWN.contains(&key) {
            return Err(format!("unknown proxy key {key}"));
        }
        let v = match map.get(key) {
            Some(serde_json::Value::String(_)) => serde_json::Value::String(value.into()),
            _ => parsed,
        };
        map.insert(key.into(), v);
        *self = serde_json::from_value(obj).map_err(|e| format!("invalid value for {key}: {e}"))?;
        Ok(())
    }

    pub fn namesrv_list(&self) -> Vec<String> {
        self.namesrv_addr
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}

struct SerializableView<'a>(&'a ProxyConfig);

impl serde::Serialize for SerializableView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let c = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("rocketMQClusterName", &c.rocketmq_cluster_name)?;
        m.serialize_entry("proxyClusterName", &c.proxy_cluster_name)?;
        m.serialize_entry("proxyName", &c.proxy_name)?;
        m.serialize_entry("namesrvAddr", &c.namesrv_addr)?;
        m.serialize_entry("grpcServerPort", &c.grpc_server_port)?;
        m.serialize_entry("metricsPromExporterPort", &c.metrics_prom_exporter_port)?;
        m.serialize_entry("maxMessageSize", &c.max_message_size)?;
        m.serialize_entry(
            "enableTopicMessageTypeCheck",
            &c.enable_topic_message_type_check,
        )?;
        m.serialize_entry("minLongPollingMs", &c.min_long_polling_ms)?;
        m.serialize_entry("maxLongPollingMs", &c.max_long_polling_ms)?;
        m.serialize_entry("defaultInvisibleTimeMs", &c.default_invisible_time_ms)?;
        m.end()
    }
}
