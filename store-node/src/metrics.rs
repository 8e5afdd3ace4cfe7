//! Store-node instruments under Apache RocketMQ's names and labels (ecosystem.md §1.1.1).
//!
//! Counting happens in plain atomics per (topic, type) and (topic, group), read by observable
//! counters at scrape time: an OpenTelemetry `Counter::add` hashes its whole label set on every
//! call, which callgrind showed costing ~7k instructions per sent message (7% of the send path).

use crate::config::StoreConfig;
use crate::store::NewMessage;
use opentelemetry::KeyValue;
use opentelemetry::metrics::ObservableCounter;
use parking_lot::RwLock;
use rmq_common::FastMap;
use rmq_common::validate::is_system_topic;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

const TYPES: [&str; 4] = ["normal", "fifo", "delay", "transaction"];

/// A sent message's `message_type` label, as an index into [`TYPES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SentType {
    #[default]
    Normal = 0,
    Fifo = 1,
    Delay = 2,
    Transaction = 3,
}

/// Messages and bytes.
#[derive(Default)]
struct Pair {
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl Pair {
    fn add(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Tables {
    /// topic → per message type.
    incoming: RwLock<FastMap<String, Arc<[Pair; 4]>>>,
    /// topic → group → outgoing.
    outgoing: RwLock<HashMap<String, HashMap<String, Arc<Pair>>>>,
}

pub struct StoreMetrics {
    tables: Arc<Tables>,
    _instruments: [ObservableCounter<u64>; 4],
    /// Storage gauges and counters, registered once the store exists.
    storage: parking_lot::Mutex<Vec<Box<dyn std::any::Any + Send + Sync>>>,
    labels: Vec<KeyValue>,
}

/// Which counter of a table an instrument reports.
#[derive(Clone, Copy)]
enum Series {
    InMessages,
    InBytes,
    OutMessages,
    OutBytes,
}

fn instrument(
    name: &'static str,
    description: &'static str,
    series: Series,
    tables: Weak<Tables>,
    labels: Vec<KeyValue>,
) -> ObservableCounter<u64> {
    rmq_observability::meter()
        .u64_observable_counter(name)
        .with_description(description)
        .with_callback(move |o| {
            let Some(t) = tables.upgrade() else { return };
            let pick = |p: &Pair, messages: bool| {
                if messages {
                    p.messages.load(Ordering::Relaxed)
                } else {
                    p.bytes.load(Ordering::Relaxed)
                }
            };
            match series {
                Series::InMessages | Series::InBytes => {
                    let messages = matches!(series, Series::InMessages);
                    for (topic, per_type) in t.incoming.read().iter() {
                        for (i, p) in per_type.iter().enumerate() {
                            let v = pick(p, messages);
                            if v == 0 {
                                continue;
                            }
                            let mut attrs = labels.clone();
                            attrs.push(KeyValue::new("topic", topic.clone()));
                            attrs.push(KeyValue::new("message_type", TYPES[i]));
                            attrs.push(KeyValue::new("is_system", is_system_topic(topic)));
                            o.observe(v, &attrs);
                        }
                    }
                }
                Series::OutMessages | Series::OutBytes => {
                    let messages = matches!(series, Series::OutMessages);
                    for (topic, groups) in t.outgoing.read().iter() {
                        for (group, p) in groups {
                            let mut attrs = labels.clone();
                            attrs.push(KeyValue::new("topic", topic.clone()));
                            attrs.push(KeyValue::new("consumer_group", group.clone()));
                            attrs.push(KeyValue::new("is_retry", false));
                            attrs.push(KeyValue::new("is_system", is_system_topic(topic)));
                            o.observe(pick(p, messages), &attrs);
                        }
                    }
                }
            }
        })
        .build()
}

impl StoreMetrics {
    pub fn new(cfg: &StoreConfig) -> Self {
        let labels =
            rmq_observability::node_labels(&cfg.broker_cluster_name, "broker", &cfg.broker_name);
        let tables = Arc::new(Tables::default());
        let w = || Arc::downgrade(&tables);
        let _instruments = [
            instrument(
                "rocketmq_messages_in_total",
                "Total number of incoming messages",
                Series::InMessages,
                w(),
                labels.clone(),
            ),
            instrument(
                "rocketmq_throughput_in_total",
                "Total traffic of incoming messages",
                Series::InBytes,
                w(),
                labels.clone(),
            ),
            instrument(
                "rocketmq_messages_out_total",
                "Total number of outgoing messages",
                Series::OutMessages,
                w(),
                labels.clone(),
            ),
            instrument(
                "rocketmq_throughput_out_total",
                "Total traffic of outgoing messages",
                Series::OutBytes,
                w(),
                labels.clone(),
            ),
        ];
        Self {
            tables,
            _instruments,
            storage: parking_lot::Mutex::new(Vec::new()),
            labels,
        }
    }

    /// Apache's storage gauges (`rocketmq_storage_*`, labels storage_type=local,
    /// storage_medium=disk), plus ours for disk usage, damaged records and deleted segments.
    pub fn watch_storage(&self, store: &Arc<crate::store::Store>) {
        let meter = rmq_observability::meter();
        let mut labels = self.labels.clone();
        labels.push(KeyValue::new("storage_type", "local"));
        labels.push(KeyValue::new("storage_medium", "disk"));
        let gauge = |name: &'static str,
                     desc: &'static str,
                     unit: Option<&'static str>,
                     f: fn(&crate::store::Store) -> i64| {
            let weak = Arc::downgrade(store);
            let labels = labels.clone();
            let b = meter.i64_observable_gauge(name).with_description(desc);
            let b = match unit {
                Some(u) => b.with_unit(u),
                None => b,
            };
            Box::new(
                b.with_callback(move |o| {
                    if let Some(s) = weak.upgrade() {
                        o.observe(f(&s), &labels);
                    }
                })
                .build(),
            ) as Box<dyn std::any::Any + Send + Sync>
        };
        let counter =
            |name: &'static str, desc: &'static str, f: fn(&crate::store::Store) -> u64| {
                let weak = Arc::downgrade(store);
                let labels = labels.clone();
                Box::new(
                    meter
                        .u64_observable_counter(name)
                        .with_description(desc)
                        .with_callback(move |o| {
                            if let Some(s) = weak.upgrade() {
                                o.observe(f(&s), &labels);
                            }
                        })
                        .build(),
                ) as Box<dyn std::any::Any + Send + Sync>
            };
        let mut v = self.storage.lock();
        v.push(gauge(
            "rocketmq_storage_size",
            "Broker storage size",
            Some("By"),
            |s| s.storage_bytes(),
        ));
        v.push(gauge(
            "rocketmq_storage_flush_behind_bytes",
            "Broker flush behind bytes",
            None,
            |s| s.commit_log().published() - s.commit_log().flushed(),
        ));
        v.push(gauge(
            "rocketmq_storage_dispatch_behind_bytes",
            "Broker dispatch behind bytes",
            None,
            |s| s.dispatch_behind(),
        ));
        v.push(gauge(
            "rocketmq_storage_message_reserve_time",
            "Broker message reserve time",
            Some("ms"),
            |s| s.oldest_message_age_ms(),
        ));
        v.push(gauge(
            "rocketmq_storage_disk_usage_permille",
            "Used share of the commit log's file system, in per mille (messages are refused above diskSpaceWarningLevelRatio)",
            None,
            |s| (s.disk_usage() * 1000.0) as i64,
        ));
        v.push(counter(
            "rocketmq_storage_damaged_records_total",
            "Damaged commit-log records found and skipped (at start with startWithDamagedCommitLog, or by a read)",
            |s| s.stats.damaged_records.load(Ordering::Relaxed),
        ));
        v.push(counter(
            "rocketmq_storage_deleted_segments_total",
            "Commit-log segments deleted by retention",
            |s| s.stats.deleted_segments.load(Ordering::Relaxed),
        ));
    }

    pub fn message_in(&self, m: &NewMessage, t: SentType) {
        let t = t as usize;
        let bytes = m.body.len() as u64;
        if let Some(per_type) = self.tables.incoming.read().get(&m.topic) {
            per_type[t].add(1, bytes);
            return;
        }
        let per_type = self
            .tables
            .incoming
            .write()
            .entry(m.topic.clone())
            .or_default()
            .clone();
        per_type[t].add(1, bytes);
    }

    pub fn messages_out(&self, topic: &str, group: &str, messages: u64, bytes: u64) {
        if let Some(p) = self
            .tables
            .outgoing
            .read()
            .get(topic)
            .and_then(|g| g.get(group))
        {
            p.add(messages, bytes);
            return;
        }
        let p = self
            .tables
            .outgoing
            .write()
            .entry(topic.to_string())
            .or_default()
            .entry(group.to_string())
            .or_default()
            .clone();
        p.add(messages, bytes);
    }
}
