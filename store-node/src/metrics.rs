//! Store-node instruments under Apache RocketMQ's names and labels (ecosystem.md §1.1.1).

use crate::config::StoreConfig;
use crate::store::NewMessage;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use rmq_common::keys;
use rmq_common::validate::is_system_topic;

pub struct StoreMetrics {
    labels: Vec<KeyValue>,
    messages_in: Counter<u64>,
    throughput_in: Counter<u64>,
    messages_out: Counter<u64>,
    throughput_out: Counter<u64>,
}

fn message_type(m: &NewMessage) -> &'static str {
    let has = |k: &str| m.properties.iter().any(|(p, _)| p == k);
    if has(keys::TRAN_MSG) {
        "transaction"
    } else if has(keys::TIMER_DELIVER_MS) {
        "delay"
    } else if has(keys::SHARDING_KEY) {
        "fifo"
    } else {
        "normal"
    }
}

impl StoreMetrics {
    pub fn new(cfg: &StoreConfig) -> Self {
        let meter = rmq_observability::meter();
        Self {
            labels: rmq_observability::node_labels(
                &cfg.broker_cluster_name,
                "broker",
                &cfg.broker_name,
            ),
            messages_in: meter
                .u64_counter("rocketmq_messages_in_total")
                .with_description("Total number of incoming messages")
                .build(),
            throughput_in: meter
                .u64_counter("rocketmq_throughput_in_total")
                .with_description("Total traffic of incoming messages")
                .build(),
            messages_out: meter
                .u64_counter("rocketmq_messages_out_total")
                .with_description("Total number of outgoing messages")
                .build(),
            throughput_out: meter
                .u64_counter("rocketmq_throughput_out_total")
                .with_description("Total traffic of outgoing messages")
                .build(),
        }
    }

    pub fn message_in(&self, m: &NewMessage) {
        let mut attrs = self.labels.clone();
        attrs.push(KeyValue::new("topic", m.topic.clone()));
        attrs.push(KeyValue::new("message_type", message_type(m)));
        attrs.push(KeyValue::new("is_system", is_system_topic(&m.topic)));
        self.messages_in.add(1, &attrs);
        self.throughput_in.add(m.body.len() as u64, &attrs);
    }

    pub fn message_out(&self, topic: &str, group: &str, bytes: usize) {
        let mut attrs = self.labels.clone();
        attrs.push(KeyValue::new("topic", topic.to_string()));
        attrs.push(KeyValue::new("consumer_group", group.to_string()));
        attrs.push(KeyValue::new("is_retry", false));
        attrs.push(KeyValue::new("is_system", is_system_topic(topic)));
        self.messages_out.add(1, &attrs);
        self.throughput_out.add(bytes as u64, &attrs);
    }
}
