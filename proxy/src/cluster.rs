//! How the proxy finds store nodes: routes from any name server (cached briefly), and one
//! connection per store node. In standalone mode the local store is called in-process.

use crate::error::ProxyError;
use parking_lot::Mutex;
use rmq_common::FastMap;
use rmq_proto::namesrv::namesrv_service_client::NamesrvServiceClient;
use rmq_proto::namesrv::{BrokerData, ClusterInfoRequest, GetRouteRequest, QueueData};
use rmq_proto::store::store_service_client::StoreServiceClient;
use rmq_proto::store::store_service_server::StoreService;
use rmq_proto::store::{
    AckBatchRequest, AckBatchResponse, AckRequest, AckResponse, AppendRequest, AppendResponse,
    ChangeInvisibleRequest, ChangeInvisibleResponse, DeadLetterRequest, DeadLetterResponse,
    GetGroupRequest, GetGroupResponse, GetTopicRequest, GetTopicResponse, PopRequest, PopResponse,
    ReadRecordsRequest, ReadRecordsResponse,
};
use rmq_proto::v2::Code;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

const ROUTE_TTL: Duration = Duration::from_secs(3);
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// A store node, remote or in this process.
#[derive(Clone)]
pub enum StoreClient {
    Remote(StoreServiceClient<Channel>, crate::coalesce::Coalescer),
    Local(Arc<dyn StoreService>),
}

macro_rules! store_call {
    ($name:ident, $req:ty, $resp:ty) => {
        pub async fn $name(&self, req: $req, timeout: Duration) -> Result<$resp, ProxyError> {
            let mut r = tonic::Request::new(req);
            let res = match self {
                StoreClient::Remote(c, _) => {
                    r.set_timeout(timeout);
                    tokio::time::timeout(timeout + Duration::from_secs(1), c.clone().$name(r))
                        .await
                        .map_err(|_| ProxyError::StoreTimeout)?
                }
                // In-process: no deadline header to encode (callgrind: ~2k instructions a call).
                StoreClient::Local(s) => s.$name(r).await,
            };
            Ok(res?.into_inner())
        }
    };
}

impl StoreClient {
    /// Sends to a remote node ride shared RPCs (see `coalesce`).
    pub async fn append(
        &self,
        req: AppendRequest,
        timeout: Duration,
    ) -> Result<AppendResponse, ProxyError> {
        match self {
            StoreClient::Remote(_, co) => co.append(req, timeout).await,
            StoreClient::Local(s) => Ok(s.append(tonic::Request::new(req)).await?.into_inner()),
        }
    }

    store_call!(pop, PopRequest, PopResponse);
    store_call!(read_records, ReadRecordsRequest, ReadRecordsResponse);
    store_call!(ack, AckRequest, AckResponse);
    store_call!(ack_batch, AckBatchRequest, AckBatchResponse);
    store_call!(dead_letter, DeadLetterRequest, DeadLetterResponse);
    store_call!(
        change_invisible,
        ChangeInvisibleRequest,
        ChangeInvisibleResponse
    );
    store_call!(get_group, GetGroupRequest, GetGroupResponse);
    store_call!(get_topic, GetTopicRequest, GetTopicResponse);
}

/// Turns a store `Result` into an error unless it is OK.
pub fn check(r: &Option<rmq_proto::store::Result>) -> Result<(), ProxyError> {
    match r {
        Some(r) if r.code == Code::Ok as i32 => Ok(()),
        Some(r) => Err(ProxyError::Store {
            code: r.code,
            message: r.message.clone(),
        }),
        None => Err(ProxyError::Internal(
            "store answered without a result".into(),
        )),
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub queues: Vec<QueueData>,
    pub brokers: HashMap<String, BrokerData>,
    /// Groups that take writes (writable queues and a master), sorted by name: worked out
    /// once per route rather than on every send.
    pub writable: Vec<Writable>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Writable {
    pub broker: String,
    pub write_queues: i32,
    pub master: String,
}

impl Route {
    pub fn new(queues: Vec<QueueData>, brokers: HashMap<String, BrokerData>) -> Self {
        let mut r = Self {
            queues,
            brokers,
            writable: Vec::new(),
        };
        let mut w: Vec<Writable> = r
            .queues
            .iter()
            .filter(|q| q.perm & 2 != 0 && q.write_queue_nums > 0)
            .filter_map(|q| {
                Some(Writable {
                    broker: q.broker_name.clone(),
                    write_queues: q.write_queue_nums,
                    master: r.master_addr(&q.broker_name)?.to_string(),
                })
            })
            .collect();
        w.sort();
        r.writable = w;
        r
    }

    /// Address of the group's master (brokerId 0), if one is registered.
    pub fn master_addr(&self, broker: &str) -> Option<&str> {
        self.brokers
            .get(broker)?
            .broker_addrs
            .get(&0)
            .map(String::as_str)
    }

    /// Where to read from: the master, else the replica with the lowest id.
    pub fn read_addr(&self, broker: &str) -> Option<&str> {
        let b = self.brokers.get(broker)?;
        b.broker_addrs
            .get(&0)
            .or_else(|| {
                b.broker_addrs
                    .iter()
                    .min_by_key(|(id, _)| **id)
                    .map(|(_, a)| a)
            })
            .map(String::as_str)
    }

    /// A slave of the group (lowest brokerId > 0), for reads while its master is unreachable.
    pub fn replica_addr(&self, broker: &str) -> Option<&str> {
        let b = self.brokers.get(broker)?;
        b.broker_addrs
            .iter()
            .filter(|(id, _)| **id > 0)
            .min_by_key(|(id, _)| **id)
            .map(|(_, a)| a.as_str())
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.queues
            .iter()
            .find_map(|q| q.attributes.get(key).map(String::as_str))
    }
}

pub struct Cluster {
    namesrvs: Vec<(String, NamesrvServiceClient<Channel>)>,
    next_namesrv: AtomicUsize,
    routes: Mutex<FastMap<String, (Instant, Arc<Route>)>>,
    stores: Mutex<FastMap<String, StoreClient>>,
    local: Option<(String, StoreClient)>,
    pub round_robin: AtomicUsize,
    /// Groups whose master just failed a connection, skipped for writes for a while.
    down: Mutex<HashMap<String, Instant>>,
}

/// How long a group whose master refused a connection is skipped.
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(5);
/// How long a SYNC_MASTER without an in-sync slave is skipped for writes.
pub const NO_SLAVE_FOR: Duration = Duration::from_millis(500);
/// How long a group that refused a write before storing it (a full disk) is skipped.
pub const REFUSED_FOR: Duration = Duration::from_secs(1);

fn endpoint(addr: &str) -> Result<Endpoint, ProxyError> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| e.connect_timeout(Duration::from_secs(3)).tcp_nodelay(true))
        .map_err(|e| ProxyError::Internal(format!("bad address {addr}: {e}")))
}

impl Cluster {
    pub fn new(
        namesrv_addrs: &[String],
        local: Option<(String, Arc<dyn StoreService>)>,
    ) -> Result<Self, ProxyError> {
        let namesrvs = namesrv_addrs
            .iter()
            .map(|a| {
                Ok((
                    a.clone(),
                    NamesrvServiceClient::new(endpoint(a)?.connect_lazy()),
                ))
            })
            .collect::<Result<Vec<_>, ProxyError>>()?;
        Ok(Self {
            namesrvs,
            next_namesrv: AtomicUsize::new(0),
            routes: Mutex::new(FastMap::default()),
            stores: Mutex::new(FastMap::default()),
            local: local.map(|(a, s)| (a, StoreClient::Local(s))),
            round_robin: AtomicUsize::new(0),
            down: Mutex::new(HashMap::new()),
        })
    }

    /// The topic's route while it is cached: no future to build on the send path.
    pub fn cached_route(&self, topic: &str) -> Option<Arc<Route>> {
        match self.routes.lock().get(topic) {
            Some((at, r)) if at.elapsed() < ROUTE_TTL => Some(r.clone()),
            _ => None,
        }
    }

    /// The topic's route from the first name server that knows it.
    pub async fn route(&self, topic: &str) -> Result<Arc<Route>, ProxyError> {
        if let Some(r) = self.cached_route(topic) {
            return Ok(r);
        }
        if self.namesrvs.is_empty() {
            return Err(ProxyError::Internal("no name server configured".into()));
        }
        let start = self.next_namesrv.fetch_add(1, Ordering::Relaxed);
        let mut last_err = None;
        let mut not_found = false;
        for i in 0..self.namesrvs.len() {
            let (addr, client) = &self.namesrvs[(start + i) % self.namesrvs.len()];
            let mut req = tonic::Request::new(GetRouteRequest {
                topic: topic.to_string(),
            });
            req.set_timeout(Duration::from_secs(3));
            match client.clone().get_route(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if resp.queue_datas.is_empty() {
                        not_found = true;
                        continue;
                    }
                    let route = Arc::new(Route::new(
                        resp.queue_datas,
                        resp.broker_datas
                            .into_iter()
                            .map(|b| (b.broker_name.clone(), b))
                            .collect(),
                    ));
                    self.routes
                        .lock()
                        .insert(topic.to_string(), (Instant::now(), route.clone()));
                    return Ok(route);
                }
                Err(e) => {
                    tracing::debug!(namesrv = %addr, error = %e.message(), "name server query failed");
                    last_err = Some(e);
                }
            }
        }
        self.routes.lock().remove(topic);
        if not_found {
            return Err(ProxyError::TopicNotFound(topic.to_string()));
        }
        Err(ProxyError::StoreUnavailable(format!(
            "no name server answered: {}",
            last_err
                .map(|e| e.message().to_string())
                .unwrap_or_default()
        )))
    }

    /// Skips `broker` (its master) for `for_how_long`.
    pub fn mark_down(&self, broker: &str, for_how_long: Duration) {
        self.down
            .lock()
            .insert(broker.to_string(), Instant::now() + for_how_long);
    }

    /// The groups being skipped right now (none, without allocating, in the common case).
    pub fn down_now(&self) -> Vec<String> {
        let down = self.down.lock();
        if down.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        down.iter()
            .filter(|(_, until)| now < **until)
            .map(|(b, _)| b.clone())
            .collect()
    }

    pub fn is_down(&self, broker: &str) -> bool {
        self.down
            .lock()
            .get(broker)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Forgets a cached route (after a store error that suggests it changed).
    pub fn invalidate(&self, topic: &str) {
        self.routes.lock().remove(topic);
    }

    /// A client for the store node at `addr`.
    pub fn store(&self, addr: &str) -> Result<StoreClient, ProxyError> {
        if let Some((a, c)) = &self.local
            && a == addr
        {
            return Ok(c.clone());
        }
        let mut stores = self.stores.lock();
        if let Some(c) = stores.get(addr) {
            return Ok(c.clone());
        }
        let grpc = StoreServiceClient::new(endpoint(addr)?.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let client = StoreClient::Remote(grpc.clone(), crate::coalesce::Coalescer::new(grpc));
        stores.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// Every registered master of `cluster`.
    pub async fn masters(&self, cluster: &str) -> Vec<StoreClient> {
        let start = self.next_namesrv.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.namesrvs.len() {
            let (_, client) = &self.namesrvs[(start + i) % self.namesrvs.len()];
            let mut req = tonic::Request::new(ClusterInfoRequest {});
            req.set_timeout(Duration::from_secs(3));
            if let Ok(info) = client.clone().get_cluster_info(req).await {
                return info
                    .into_inner()
                    .brokers
                    .into_iter()
                    .filter(|b| b.broker_id == 0 && (cluster.is_empty() || b.cluster == cluster))
                    .filter_map(|b| self.store(&b.addr).ok())
                    .collect();
            }
        }
        Vec::new()
    }

    /// Any master of `cluster` (for cluster-wide facts such as group settings).
    pub async fn any_master(&self, cluster: &str) -> Result<StoreClient, ProxyError> {
        let start = self.next_namesrv.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.namesrvs.len() {
            let (_, client) = &self.namesrvs[(start + i) % self.namesrvs.len()];
            let mut req = tonic::Request::new(ClusterInfoRequest {});
            req.set_timeout(Duration::from_secs(3));
            if let Ok(info) = client.clone().get_cluster_info(req).await {
                let mut masters: Vec<_> = info
                    .into_inner()
                    .brokers
                    .into_iter()
                    .filter(|b| b.broker_id == 0 && (cluster.is_empty() || b.cluster == cluster))
                    .collect();
                masters.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
                if let Some(m) = masters.first() {
                    return self.store(&m.addr);
                }
            }
        }
        match &self.local {
            Some((_, c)) => Ok(c.clone()),
            None => Err(ProxyError::StoreUnavailable(format!(
                "no master of cluster {cluster} is registered"
            ))),
        }
    }
}
