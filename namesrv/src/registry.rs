//! The broker table: who is alive, what they serve.

use parking_lot::Mutex;
use rmq_proto::namesrv::{BrokerData, BrokerLive, QueueData, RegisterBrokerRequest};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

struct Entry {
    req: RegisterBrokerRequest,
    last: Instant,
    last_wall_ms: i64,
}

pub struct Registry {
    expiry: Duration,
    /// (cluster, broker name, broker id) → registration.
    brokers: Mutex<BTreeMap<(String, String, i64), Entry>>,
}

fn now_ms() -> i64 {
    rmq_common::time::now_ms()
}

impl Registry {
    pub fn new(expiry: Duration) -> Self {
        Self {
            expiry,
            brokers: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records a registration; returns the master's store and HA addresses of that group.
    pub fn register(&self, req: RegisterBrokerRequest) -> (String, String) {
        let mut b = self.brokers.lock();
        // The same address under another id means a role change: drop the stale entry.
        b.retain(|(c, n, id), e| {
            !(c == &req.cluster_name
                && n == &req.broker_name
                && *id != req.broker_id
                && e.req.broker_addr == req.broker_addr)
        });
        let key = (
            req.cluster_name.clone(),
            req.broker_name.clone(),
            req.broker_id,
        );
        b.insert(
            key,
            Entry {
                req: req.clone(),
                last: Instant::now(),
                last_wall_ms: now_ms(),
            },
        );
        b.iter()
            .find(|((c, n, id), _)| c == &req.cluster_name && n == &req.broker_name && *id == 0)
            .map(|(_, e)| (e.req.broker_addr.clone(), e.req.ha_addr.clone()))
            .unwrap_or_default()
    }

    pub fn unregister(&self, cluster: &str, name: &str, id: i64, addr: &str) {
        self.brokers.lock().retain(|(c, n, i), e| {
            !(c == cluster && n == name && *i == id && e.req.broker_addr == addr)
        });
    }

    /// Drops registrations older than the expiry; returns their descriptions.
    pub fn expire(&self) -> Vec<String> {
        let mut gone = Vec::new();
        self.brokers.lock().retain(|(c, n, id), e| {
            let keep = e.last.elapsed() < self.expiry;
            if !keep {
                gone.push(format!("{c}/{n}/{id} {}", e.req.broker_addr));
            }
            keep
        });
        gone
    }

    /// Queue data per broker name (from the master when alive, else from any replica) and the
    /// addresses of every replica of those groups.
    pub fn route(&self, topic: &str) -> (Vec<QueueData>, Vec<BrokerData>) {
        let b = self.brokers.lock();
        let mut queues: BTreeMap<String, (i64, QueueData)> = BTreeMap::new();
        for ((_, name, id), e) in b.iter() {
            if let Some(t) = e.req.topics.iter().find(|t| t.name == topic) {
                let better = queues.get(name).is_none_or(|(prev, _)| *id < *prev);
                if better {
                    let perm = t.perm
                        & if e.req.broker_permission == 0 {
                            6
                        } else {
                            e.req.broker_permission
                        };
                    queues.insert(
                        name.clone(),
                        (
                            *id,
                            QueueData {
                                broker_name: name.clone(),
                                read_queue_nums: t.read_queue_nums,
                                write_queue_nums: t.write_queue_nums,
                                perm,
                                attributes: t.attributes.clone(),
                            },
                        ),
                    );
                }
            }
        }
        let mut brokers: BTreeMap<String, BrokerData> = BTreeMap::new();
        for ((cluster, name, id), e) in b.iter() {
            if queues.contains_key(name) {
                brokers
                    .entry(name.clone())
                    .or_insert_with(|| BrokerData {
                        cluster: cluster.clone(),
                        broker_name: name.clone(),
                        broker_addrs: HashMap::new(),
                    })
                    .broker_addrs
                    .insert(*id, e.req.broker_addr.clone());
            }
        }
        (
            queues.into_values().map(|(_, q)| q).collect(),
            brokers.into_values().collect(),
        )
    }

    pub fn cluster_info(&self) -> Vec<BrokerLive> {
        self.brokers
            .lock()
            .iter()
            .map(|((cluster, name, id), e)| BrokerLive {
                cluster: cluster.clone(),
                broker_name: name.clone(),
                broker_id: *id,
                addr: e.req.broker_addr.clone(),
                role: e.req.role.clone(),
                version: e.req.version.clone(),
                last_update_ms: e.last_wall_ms,
                ha_addr: e.req.ha_addr.clone(),
            })
            .collect()
    }

    pub fn topics(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .brokers
            .lock()
            .values()
            .flat_map(|e| e.req.topics.iter().map(|t| t.name.clone()))
            .collect();
        set.into_iter().collect()
    }
}
