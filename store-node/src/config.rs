//! Store-node configuration under RocketMQ's broker property names. Every key and default is
//! listed in `KNOWN_KEYS` / [`StoreConfig::default`]; `docs/configuration.md` is the user view.

use rmq_common::properties_file::{PropertiesFile, parse_bool};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushDiskType {
    AsyncFlush,
    SyncFlush,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerRole {
    AsyncMaster,
    SyncMaster,
    Slave,
}

impl BrokerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AsyncMaster => "ASYNC_MASTER",
            Self::SyncMaster => "SYNC_MASTER",
            Self::Slave => "SLAVE",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub broker_cluster_name: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub broker_role: BrokerRole,
    pub flush_disk_type: FlushDiskType,
    pub namesrv_addr: Vec<String>,
    pub listen_port: u16,
    pub ha_listen_port: u16,
    pub broker_ip1: String,
    pub broker_ip2: String,
    pub store_path_root_dir: PathBuf,
    pub store_path_commit_log: Option<PathBuf>,
    pub mapped_file_size_commit_log: u64,
    pub max_message_size: usize,
    pub default_topic_queue_nums: i32,
    pub auto_create_topic_enable: bool,
    pub auto_create_subscription_group: bool,
    pub sync_flush_timeout_ms: u64,
    pub flush_interval_commit_log_ms: u64,
    pub register_name_server_period_ms: u64,
    pub broker_permission: i32,
    pub metrics_prom_exporter_port: u16,
    /// A slave's master HA address (`host:port`); empty: learned from the name servers.
    pub ha_master_address: String,
    /// How long a SYNC_MASTER send waits for its slave (Apache's `slaveTimeout`).
    pub slave_timeout_ms: u64,
    /// Serve a consumer that is far behind from a slave's copy while the master is up
    /// (Apache's `slaveReadEnable`): the master still owns the POP state, the slave reads the bytes.
    pub slave_read_enable: bool,
    /// "Far behind": more than this percentage of physical memory between the message and the
    /// log's end, i.e. likely no longer in the page cache (Apache's `accessMessageInMemoryMaxRatio`).
    pub access_message_in_memory_max_ratio: u64,
    /// Start even when the commit log holds damage before its durable checkpoint, skipping the
    /// damaged records (ours; the default refuses and names the damage).
    pub start_with_damaged_commit_log: bool,
    /// Hours a segment is kept after its last write (Apache's `fileReservedTime`; we also accept
    /// fractions of an hour).
    pub file_reserved_time_hours: f64,
    /// Local hours at which expired segments are deleted (`deleteWhen`, `;`-separated).
    pub delete_when: Vec<u32>,
    /// Above this disk usage (%), expired segments are deleted at any hour.
    pub disk_max_used_space_ratio: f64,
    /// Above this (%), the oldest segments are deleted whatever their age, when
    /// `cleanFileForciblyEnable`.
    pub disk_space_clean_forcibly_ratio: f64,
    /// Above this (%), messages are refused (the disk-full state).
    pub disk_space_warning_level_ratio: f64,
    pub clean_file_forcibly_enable: bool,
    /// Retention runs every this many ms (`cleanResourceInterval`).
    pub clean_resource_interval_ms: u64,
    /// Segments deleted per run at most (`deleteFileBatchMax`).
    pub delete_file_batch_max: usize,
    /// Bytes per consume-queue file (`mappedFileSizeConsumeQueue`, a multiple of 20).
    pub mapped_file_size_consume_queue: u64,
    /// The housekeeper's period: consume queues made durable, segments sealed
    /// (`flushIntervalConsumeQueue`).
    pub flush_interval_consume_queue_ms: u64,
    /// A state snapshot is taken at least this often when anything changed (ours).
    pub state_snapshot_interval_ms: u64,
    /// ... and whenever this many log bytes were written since the last one (ours).
    pub state_snapshot_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            broker_cluster_name: "DefaultCluster".into(),
            broker_name: hostname_or("broker-a"),
            broker_id: 0,
            broker_role: BrokerRole::AsyncMaster,
            flush_disk_type: FlushDiskType::AsyncFlush,
            namesrv_addr: Vec::new(),
            listen_port: 10911,
            ha_listen_port: 0,
            broker_ip1: "127.0.0.1".into(),
            broker_ip2: String::new(),
            store_path_root_dir: default_store_root(),
            store_path_commit_log: None,
            mapped_file_size_commit_log: 1024 * 1024 * 1024,
            max_message_size: 4 * 1024 * 1024,
            default_topic_queue_nums: 8,
            auto_create_topic_enable: false,
            auto_create_subscription_group: true,
            sync_flush_timeout_ms: 5000,
            flush_interval_commit_log_ms: 500,
            register_name_server_period_ms: 30_000,
            broker_permission: 6,
            metrics_prom_exporter_port: 5557,
            ha_master_address: String::new(),
            slave_timeout_ms: 3000,
            slave_read_enable: false,
            access_message_in_memory_max_ratio: 40,
            start_with_damaged_commit_log: false,
            file_reserved_time_hours: 72.0,
            delete_when: vec![4],
            disk_max_used_space_ratio: 75.0,
            disk_space_clean_forcibly_ratio: 85.0,
            disk_space_warning_level_ratio: 90.0,
            clean_file_forcibly_enable: true,
            clean_resource_interval_ms: 10_000,
            delete_file_batch_max: 10,
            mapped_file_size_consume_queue: 6_000_000,
            flush_interval_consume_queue_ms: 1000,
            state_snapshot_interval_ms: 10_000,
            state_snapshot_bytes: 64 * 1024 * 1024,
        }
    }
}

fn hostname_or(default: &str) -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn default_store_root() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join("store"))
        .unwrap_or_else(|| PathBuf::from("store"))
}

/// Keys this implementation honours.
pub const HONOURED_KEYS: &[&str] = &[
    "brokerClusterName",
    "brokerName",
    "brokerId",
    "brokerRole",
    "flushDiskType",
    "namesrvAddr",
    "listenPort",
    "haListenPort",
    "brokerIP1",
    "brokerIP2",
    "storePathRootDir",
    "storePathCommitLog",
    "mappedFileSizeCommitLog",
    "mapedFileSizeCommitLog",
    "maxMessageSize",
    "defaultTopicQueueNums",
    "autoCreateTopicEnable",
    "autoCreateSubscriptionGroup",
    "syncFlushTimeout",
    "flushIntervalCommitLog",
    "registerNameServerPeriod",
    "brokerPermission",
    "metricsPromExporterPort",
    "haMasterAddress",
    "slaveTimeout",
    "slaveReadEnable",
    "accessMessageInMemoryMaxRatio",
    "startWithDamagedCommitLog",
    "fileReservedTime",
    "deleteWhen",
    "diskMaxUsedSpaceRatio",
    "diskSpaceCleanForciblyRatio",
    "diskSpaceWarningLevelRatio",
    "cleanFileForciblyEnable",
    "cleanResourceInterval",
    "deleteFileBatchMax",
    "mappedFileSizeConsumeQueue",
    "flushIntervalConsumeQueue",
    "stateSnapshotInterval",
    "stateSnapshotBytes",
];

/// RocketMQ keys we accept without acting on them yet (no warning: they are legitimate).
pub const ACCEPTED_KEYS: &[&str] = &[
    "storePathConsumeQueue",
    "storePathIndex",
    "storeCheckpoint",
    "abortFile",
    "mapedFileSizeConsumeQueue",
    "destroyMapedFileIntervalForcibly",
    "deleteCommitLogFilesInterval",
    "deleteConsumeQueueFilesInterval",
    "redeleteHangedFileInterval",
    "flushCommitLogLeastPages",
    "flushConsumeQueueLeastPages",
    "flushCommitLogThoroughInterval",
    "flushConsumeQueueThoroughInterval",
    "checkTransactionMessageEnable",
    "sendMessageThreadPoolNums",
    "pullMessageThreadPoolNums",
    "transientStorePoolEnable",
    "messageIndexEnable",
    "enablePropertyFilter",
    "timerWheelEnable",
    "traceTopicEnable",
    "totalReplicas",
    "inSyncReplicas",
    "minInSyncReplicas",
    "metricsExporterType",
    "metricsLabel",
    "aclEnable",
    "useReentrantLockWhenPutMessage",
    "waitTimeMillsInSendQueue",
    "osPageCacheBusyTimeOutMills",
];

#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

fn bad(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

impl StoreConfig {
    /// Applies a properties file (plus overrides already merged into it). Unknown keys are
    /// returned so the caller can warn about them; invalid values are errors, not silently
    /// ignored as Java does.
    pub fn apply(&mut self, p: &PropertiesFile) -> Result<Vec<String>, ConfigError> {
        let mut unknown = Vec::new();
        for (k, v) in p.iter() {
            let num = |what: &str| v.parse::<i64>().map_err(|_| bad(k, v, what));
            let boolean = || parse_bool(v).ok_or_else(|| bad(k, v, "expected true or false"));
            match k {
                "brokerClusterName" => self.broker_cluster_name = v.into(),
                "brokerName" => self.broker_name = v.into(),
                "brokerId" => self.broker_id = num("expected an integer")?,
                "brokerRole" => {
                    self.broker_role = match v {
                        "ASYNC_MASTER" => BrokerRole::AsyncMaster,
                        "SYNC_MASTER" => BrokerRole::SyncMaster,
                        "SLAVE" => BrokerRole::Slave,
                        _ => return Err(bad(k, v, "expected ASYNC_MASTER, SYNC_MASTER or SLAVE")),
                    }
                }
                "flushDiskType" => {
                    self.flush_disk_type = match v {
                        "ASYNC_FLUSH" => FlushDiskType::AsyncFlush,
                        "SYNC_FLUSH" => FlushDiskType::SyncFlush,
                        _ => return Err(bad(k, v, "expected ASYNC_FLUSH or SYNC_FLUSH")),
                    }
                }
                "namesrvAddr" => self.namesrv_addr = split_namesrv(v),
                "listenPort" => self.listen_port = port(k, v)?,
                "haListenPort" => self.ha_listen_port = port(k, v)?,
                "brokerIP1" => self.broker_ip1 = v.into(),
                "brokerIP2" => self.broker_ip2 = v.into(),
                "storePathRootDir" => self.store_path_root_dir = PathBuf::from(v),
                "storePathCommitLog" => self.store_path_commit_log = Some(PathBuf::from(v)),
                "mappedFileSizeCommitLog" | "mapedFileSizeCommitLog" => {
                    let n = num("expected a size in bytes")?;
                    if n < 4096 {
                        return Err(bad(k, v, "must be at least 4096 bytes"));
                    }
                    self.mapped_file_size_commit_log = n as u64;
                }
                "maxMessageSize" => self.max_message_size = num("expected bytes")?.max(1) as usize,
                "defaultTopicQueueNums" => {
                    self.default_topic_queue_nums =
                        num("expected an integer")?.clamp(1, 1024) as i32
                }
                "autoCreateTopicEnable" => self.auto_create_topic_enable = boolean()?,
                "autoCreateSubscriptionGroup" => self.auto_create_subscription_group = boolean()?,
                "syncFlushTimeout" => {
                    self.sync_flush_timeout_ms = num("expected ms")?.max(1) as u64
                }
                "flushIntervalCommitLog" => {
                    self.flush_interval_commit_log_ms = num("expected ms")?.max(1) as u64
                }
                "registerNameServerPeriod" => {
                    self.register_name_server_period_ms =
                        num("expected ms")?.clamp(1_000, 60_000) as u64
                }
                "brokerPermission" => self.broker_permission = num("expected 2, 4 or 6")? as i32,
                "metricsPromExporterPort" => self.metrics_prom_exporter_port = port(k, v)?,
                "haMasterAddress" => self.ha_master_address = v.into(),
                "slaveTimeout" => self.slave_timeout_ms = num("expected ms")?.max(1) as u64,
                "slaveReadEnable" => self.slave_read_enable = boolean()?,
                "accessMessageInMemoryMaxRatio" => {
                    self.access_message_in_memory_max_ratio =
                        num("expected a percentage")?.clamp(0, 100) as u64
                }
                "startWithDamagedCommitLog" => self.start_with_damaged_commit_log = boolean()?,
                "fileReservedTime" => {
                    let h: f64 = v
                        .parse()
                        .ok()
                        .filter(|h: &f64| h.is_finite() && *h >= 0.0)
                        .ok_or_else(|| bad(k, v, "expected hours (>= 0)"))?;
                    self.file_reserved_time_hours = h;
                }
                "deleteWhen" => self.delete_when = parse_hours(k, v)?,
                "diskMaxUsedSpaceRatio" => {
                    self.disk_max_used_space_ratio = percent(k, v)?.clamp(10.0, 95.0)
                }
                "diskSpaceCleanForciblyRatio" => {
                    self.disk_space_clean_forcibly_ratio = percent(k, v)?.clamp(30.0, 85.0)
                }
                "diskSpaceWarningLevelRatio" => {
                    self.disk_space_warning_level_ratio = percent(k, v)?.clamp(35.0, 90.0)
                }
                "cleanFileForciblyEnable" => self.clean_file_forcibly_enable = boolean()?,
                "cleanResourceInterval" => {
                    self.clean_resource_interval_ms =
                        num("expected ms")?.clamp(100, 3_600_000) as u64
                }
                "deleteFileBatchMax" => {
                    self.delete_file_batch_max = num("expected a count")?.clamp(1, 1000) as usize
                }
                "mappedFileSizeConsumeQueue" => {
                    let n = num("expected a size in bytes")?;
                    if n < 20 {
                        return Err(bad(k, v, "must be at least 20 bytes (one unit)"));
                    }
                    // Apache's getter rounds up to whole 20-byte units.
                    self.mapped_file_size_consume_queue = (n as u64).div_ceil(20) * 20;
                }
                "flushIntervalConsumeQueue" => {
                    self.flush_interval_consume_queue_ms =
                        num("expected ms")?.clamp(10, 60_000) as u64
                }
                "stateSnapshotInterval" => {
                    self.state_snapshot_interval_ms = num("expected ms")?.max(100) as u64
                }
                "stateSnapshotBytes" => {
                    self.state_snapshot_bytes = num("expected bytes")?.max(4096) as u64
                }
                _ if ACCEPTED_KEYS.contains(&k) => {}
                _ => unknown.push(k.to_string()),
            }
        }
        if self.broker_role != BrokerRole::Slave {
            self.broker_id = 0;
        } else if self.broker_id <= 0 {
            return Err(bad(
                "brokerId",
                &self.broker_id.to_string(),
                "a SLAVE's brokerId must be > 0",
            ));
        }
        Ok(unknown)
    }

    pub fn ha_port(&self) -> u16 {
        if self.ha_listen_port == 0 {
            self.listen_port.saturating_add(1)
        } else {
            self.ha_listen_port
        }
    }

    pub fn dirs(&self) -> crate::layout::Dirs {
        crate::layout::Dirs {
            root: self.store_path_root_dir.clone(),
            commitlog: self.commit_log_dir(),
        }
    }

    pub fn commit_log_dir(&self) -> PathBuf {
        self.store_path_commit_log
            .clone()
            .unwrap_or_else(|| self.store_path_root_dir.join("commitlog"))
    }

    /// The address clients and proxies dial for this node's store service.
    pub fn advertised_addr(&self) -> String {
        format!("{}:{}", self.broker_ip1, self.listen_port)
    }
}

/// A percentage: `90`, or Apache's system-property form `0.90`.
fn percent(k: &str, v: &str) -> Result<f64, ConfigError> {
    let x: f64 = v
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| bad(k, v, "expected a percentage"))?;
    Ok(if x <= 1.0 && v.contains('.') {
        x * 100.0
    } else {
        x
    })
}

/// `deleteWhen`: hours of the day, `;`-separated (`04`, `01;13`).
fn parse_hours(k: &str, v: &str) -> Result<Vec<u32>, ConfigError> {
    v.split(';')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            h.parse::<u32>()
                .ok()
                .filter(|h| *h < 24)
                .ok_or_else(|| bad(k, v, "expected hours 00-23 separated by ';'"))
        })
        .collect()
}

fn port(k: &str, v: &str) -> Result<u16, ConfigError> {
    v.parse::<u16>()
        .map_err(|_| bad(k, v, "expected a port number"))
}

/// Splits `host:port;host:port` as RocketMQ writes name-server lists.
pub fn split_namesrv(v: &str) -> Vec<String> {
    v.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}
