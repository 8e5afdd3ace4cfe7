//! Name-server settings (`namesrv.properties`).

use rmq_common::properties_file::PropertiesFile;

#[derive(Debug, Clone)]
pub struct NamesrvConfig {
    /// Port of the name-server service (default 9876).
    pub listen_port: u16,
    /// How often expired store nodes are swept (default 5000 ms).
    pub scan_not_active_broker_interval_ms: u64,
    /// A store node silent this long is dropped from routes (default 120000 ms, Apache's constant).
    pub broker_expired_time_ms: u64,
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        Self {
            listen_port: 9876,
            scan_not_active_broker_interval_ms: 5_000,
            broker_expired_time_ms: 120_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for {key}")]
pub struct ConfigError {
    pub key: String,
    pub value: String,
}

const ACCEPTED: &[&str] = &[
    "rocketmqHome",
    "kvConfigPath",
    "configStorePath",
    "orderMessageEnable",
    "clusterTest",
];

impl NamesrvConfig {
    /// Applies the file; returns keys it does not know (to warn about).
    pub fn apply(&mut self, p: &PropertiesFile) -> Result<Vec<String>, ConfigError> {
        let mut unknown = Vec::new();
        for (k, v) in p.iter() {
            let bad = || ConfigError {
                key: k.into(),
                value: v.into(),
            };
            match k {
                "listenPort" => self.listen_port = v.parse().map_err(|_| bad())?,
                "scanNotActiveBrokerInterval" => {
                    self.scan_not_active_broker_interval_ms =
                        v.parse::<u64>().map_err(|_| bad())?.max(100)
                }
                "brokerExpiredTime" => {
                    self.broker_expired_time_ms = v.parse::<u64>().map_err(|_| bad())?.max(100)
                }
                _ if ACCEPTED.contains(&k) => {}
                _ => unknown.push(k.to_string()),
            }
        }
        Ok(unknown)
    }
}
