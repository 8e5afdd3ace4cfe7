//! `apache.rocketmq.v2.MessagingService`. Every implemented RPC answers gRPC OK with the result
//! in its `status` (as Apache's proxy does); errors become codes here and nowhere else.

use crate::cluster::{Cluster, Route, Writable, check};
use crate::config::ProxyConfig;
use crate::context::ClientContext;
use crate::convert::{self, dur_ms, ms_ts};
use crate::error::{ProxyError, ok_status, status, to_status};
use crate::sessions::Sessions;
use rmq_common::handle::ReceiptHandle;
use rmq_common::java::string_hash_code;
use rmq_common::message_type::{MESSAGE_TYPE_ATTRIBUTE, TopicMessageType};
use rmq_common::time::now_ms;
use rmq_common::validate;
use rmq_proto::store::{
    AckBatchRequest, AckItem, AppendRequest, ChangeInvisibleRequest, DeadLetterRequest,
    GetTopicRequest, PopRequest,
};
use rmq_proto::v2::messaging_service_server::MessagingService;
use rmq_proto::v2::*;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Streaming};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;
pub type TelemetryOut = ResponseStream<TelemetryCommand>;
type GrpcResult<T> = Result<Response<T>, tonic::Status>;

const STORE_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_INVISIBLE_MS: i64 = 10_000;
const MAX_INVISIBLE_MS: i64 = 12 * 3600 * 1000;
/// Receives finish this long before the client's deadline.
const DEADLINE_MARGIN_MS: i64 = 300;

pub struct Messaging {
    pub cfg: ProxyConfig,
    pub cluster: Arc<Cluster>,
    pub sessions: Arc<Sessions>,
}

fn topic_name(r: &Option<Resource>) -> &str {
    r.as_ref().map(|r| r.name.as_str()).unwrap_or("")
}

fn check_topic(t: &str) -> Result<(), ProxyError> {
    validate::check_topic(t).map_err(|e| ProxyError::invalid(Code::IllegalTopic, e))
}

fn check_group(g: &str) -> Result<(), ProxyError> {
    validate::check_group(g).map_err(|e| ProxyError::invalid(Code::IllegalConsumerGroup, e))
}

fn accept_types(route: &Route) -> Vec<i32> {
    let t = TopicMessageType::from_attribute(route.attribute(MESSAGE_TYPE_ATTRIBUTE));
    match t {
        TopicMessageType::Normal => vec![MessageType::Normal as i32],
        TopicMessageType::Fifo => vec![MessageType::Fifo as i32],
        TopicMessageType::Delay => vec![MessageType::Delay as i32],
        TopicMessageType::Transaction => vec![MessageType::Transaction as i32],
        TopicMessageType::Mixed => vec![
            MessageType::Normal as i32,
            MessageType::Fifo as i32,
            MessageType::Delay as i32,
            MessageType::Transaction as i32,
        ],
        TopicMessageType::Unspecified => vec![MessageType::Unspecified as i32],
    }
}

/// The endpoints clients should come back to: exactly what they dialled.
fn echo_endpoints(req: Option<&Endpoints>, own_port: u16) -> Endpoints {
    match req {
        Some(e) if !e.addresses.is_empty() => {
            let mut e = e.clone();
            if e.scheme == AddressScheme::Unspecified as i32 {
                let host = &e.addresses[0].host;
                e.scheme = if host.parse::<std::net::Ipv4Addr>().is_ok() {
                    AddressScheme::IPv4 as i32
                } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
                    AddressScheme::IPv6 as i32
                } else {
                    AddressScheme::DomainName as i32
                };
            }
            e
        }
        _ => Endpoints {
            scheme: AddressScheme::IPv4 as i32,
            addresses: vec![Address {
                host: "127.0.0.1".into(),
                port: i32::from(own_port),
            }],
        },
    }
}

impl Messaging {
    fn broker(&self, name: &str, endpoints: &Endpoints) -> Broker {
        Broker {
            name: name.to_string(),
            id: 0,
            endpoints: Some(endpoints.clone()),
        }
    }

    /// Queues per broker in Apache's order (read-only, write-only, read-write), ids from 0.
    fn queues_for(
        &self,
        topic: &Resource,
        route: &Route,
        endpoints: &Endpoints,
    ) -> Vec<MessageQueue> {
        let types = accept_types(route);
        let mut out = Vec::new();
        for q in &route.queues {
            let master_alive = route.master_addr(&q.broker_name).is_some();
            if route.read_addr(&q.broker_name).is_none() {
                continue;
            }
            let perm = if master_alive { q.perm } else { q.perm & 4 };
            let (r, w) = (
                if perm & 4 != 0 {
                    q.read_queue_nums.max(0)
                } else {
                    0
                },
                if perm & 2 != 0 {
                    q.write_queue_nums.max(0)
                } else {
                    0
                },
            );
            let rw = r.min(w);
            let mut id = 0;
            let mut push = |n: i32, p: Permission, out: &mut Vec<MessageQueue>| {
                for _ in 0..n {
                    out.push(MessageQueue {
                        topic: Some(topic.clone()),
                        id,
                        permission: p as i32,
                        broker: Some(self.broker(&q.broker_name, endpoints)),
                        accept_message_types: types.clone(),
                    });
                    id += 1;
                }
            };
            if r == 0 && w == 0 {
                push(1, Permission::None, &mut out);
                continue;
            }
            push(r - rw, Permission::Read, &mut out);
            push(w - rw, Permission::Write, &mut out);
            push(rw, Permission::ReadWrite, &mut out);
        }
        out
    }

    /// The route, creating the topic first where the store nodes' `autoCreateTopicEnable` allows.
    async fn route_or_create(&self, topic: &str) -> Result<Arc<Route>, ProxyError> {
        if let Some(r) = self.cluster.cached_route(topic) {
            return Ok(r);
        }
        match self.cluster.route(topic).await {
            Err(ProxyError::TopicNotFound(_)) => {}
            other => return other,
        }
        let mut created = false;
        // A store node that has just started may not have registered yet: wait (bounded).
        let mut masters = Vec::new();
        for _ in 0..30 {
            masters = self.cluster.masters(&self.cfg.rocketmq_cluster_name).await;
            if !masters.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for store in masters {
            let req = GetTopicRequest {
                topic: topic.to_string(),
                auto_create: true,
            };
            if let Ok(r) = store.get_topic(req, STORE_TIMEOUT).await {
                created |= r.topic.is_some();
            }
        }
        if !created {
            return Err(ProxyError::TopicNotFound(topic.to_string()));
        }
        // Store nodes re-register at once when topics change; wait (bounded) for the route.
        for _ in 0..30 {
            self.cluster.invalidate(topic);
            match self.cluster.route(topic).await {
                Err(ProxyError::TopicNotFound(_)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => return other,
            }
        }
        Err(ProxyError::TopicNotFound(topic.to_string()))
    }

    async fn query_route_inner(
        &self,
        req: QueryRouteRequest,
    ) -> Result<Vec<MessageQueue>, ProxyError> {
        let topic = req.topic.clone().unwrap_or_default();
        check_topic(&topic.name)?;
        let route = self.route_or_create(&topic.name).await?;
        let endpoints = echo_endpoints(req.endpoints.as_ref(), self.cfg.grpc_server_port);
        let queues = self.queues_for(&topic, &route, &endpoints);
        if queues.is_empty() {
            return Err(ProxyError::TopicNotFound(topic.name));
        }
        Ok(queues)
    }

    async fn send_inner(
        &self,
        req: &SendMessageRequest,
    ) -> Result<Vec<SendResultEntry>, ProxyError> {
        let first = req.messages.first().ok_or_else(|| {
            ProxyError::invalid(Code::MessageCorrupted, "no message in the request")
        })?;
        let topic = topic_name(&first.topic);
        if req.messages.iter().any(|m| topic_name(&m.topic) != topic) {
            return Err(ProxyError::invalid(
                Code::MessageCorrupted,
                "messages of one request must share a topic",
            ));
        }
        // A cached route means the name was valid when it was looked up.
        let cached = self.cluster.cached_route(topic);
        if cached.is_none() {
            check_topic(topic)?;
        }
        let now = now_ms();
        let mut store_msgs = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            store_msgs.push(convert::to_store(m, topic, self.cfg.max_message_size, now)?);
        }
        let route = match cached {
            Some(r) => r,
            None => self.route_or_create(topic).await?,
        };
        let topic_type = TopicMessageType::from_attribute(route.attribute(MESSAGE_TYPE_ATTRIBUTE));
        for m in &req.messages {
            let t = convert::declared_type(m);
            if self.cfg.enable_topic_message_type_check && !convert::type_allowed(topic_type, t) {
                return Err(ProxyError::invalid(
                    Code::MessagePropertyConflictWithType,
                    format!(
                        "topic {topic} accepts {} messages, not {}",
                        topic_type.as_str(),
                        t.as_str_name()
                    ),
                ));
            }
            match t {
                MessageType::Delay => {
                    return Err(ProxyError::NotImplemented(
                        "delay messages are not supported yet".into(),
                    ));
                }
                MessageType::Transaction => {
                    return Err(ProxyError::NotImplemented(
                        "transactional messages are not supported yet".into(),
                    ));
                }
                _ => {}
            }
        }
        let group = req.messages[0]
            .system_properties
            .as_ref()
            .and_then(|s| s.message_group.as_deref());
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let writable = &route.writable;
            let down = self.cluster.down_now();
            let up: Vec<Writable>;
            let brokers: &[Writable] = if down.is_empty() {
                writable
            } else {
                up = writable
                    .iter()
                    .filter(|w| !down.contains(&w.broker))
                    .cloned()
                    .collect();
                // Every group is being skipped: ask them anyway, so the client gets the store's
                // own answer (e.g. HA_NOT_AVAILABLE) rather than a blanket refusal, and a group
                // that recovered within the skip window takes the send.
                if up.is_empty() { writable } else { &up }
            };
            if brokers.is_empty() {
                return Err(ProxyError::Forbidden(format!(
                    "topic {topic} has no writable queue"
                )));
            }
            let (target, queue_id): (&Writable, i32) = match group {
                Some(g) if req.messages.len() == 1 => {
                    let total: i32 = brokers.iter().map(|w| w.write_queues).sum();
                    let mut slot = string_hash_code(g).rem_euclid(total.max(1));
                    let mut pick = (&brokers[0], 0);
                    for w in brokers {
                        if slot < w.write_queues {
                            pick = (w, slot);
                            break;
                        }
                        slot -= w.write_queues;
                    }
                    pick
                }
                _ => {
                    let i = self.cluster.round_robin.fetch_add(1, Ordering::Relaxed);
                    (&brokers[i % brokers.len()], -1)
                }
            };
            let broker = target.broker.as_str();
            // Keep a copy only when a retry on another group is possible (the copy of the
            // properties maps cost ~2k instructions a message in callgrind).
            let may_retry = attempt < 2 && group.is_none() && brokers.len() > 1;
            let mut msgs = if may_retry {
                store_msgs.clone()
            } else {
                std::mem::take(&mut store_msgs)
            };
            for m in &mut msgs {
                m.queue_id = queue_id;
            }
            let store = self.cluster.store(&target.master)?;
            let result = store
                .append(AppendRequest { messages: msgs }, STORE_TIMEOUT)
                .await;
            // Retry elsewhere only when nothing can have been stored: the node refused the
            // connection, or refused the write before appending (SYNC_MASTER without a slave,
            // a full disk). Ordered (FIFO) sends stay on their queue.
            let down_for = match &result {
                Err(ProxyError::StoreUnreachable(_)) => Some(crate::cluster::UNREACHABLE_FOR),
                Ok(r)
                    if r.result
                        .as_ref()
                        .is_some_and(|x| x.code == Code::HaNotAvailable as i32) =>
                {
                    Some(crate::cluster::NO_SLAVE_FOR)
                }
                Ok(r) if r.refused_before_write => Some(crate::cluster::REFUSED_FOR),
                _ => None,
            };
            if let Some(d) = down_for {
                self.cluster.mark_down(broker, d);
                self.cluster.invalidate(topic);
                if may_retry {
                    continue;
                }
            }
            break result?;
        };
        check(&resp.result)?;
        Ok(req
            .messages
            .iter()
            .zip(resp.entries)
            .map(|(m, e)| {
                let id = m
                    .system_properties
                    .as_ref()
                    .map(|s| s.message_id.clone())
                    .unwrap_or_default();
                SendResultEntry {
                    status: Some(ok_status()),
                    message_id: id,
                    transaction_id: String::new(),
                    offset: e.queue_offset,
                    recall_handle: String::new(),
                }
            })
            .collect())
    }

    fn polling_ms(
        &self,
        ctx: &ClientContext,
        req: &ReceiveMessageRequest,
    ) -> Result<i64, ProxyError> {
        let requested = match &req.long_polling_timeout {
            Some(d) => dur_ms(d),
            None => match ctx.deadline_ms {
                Some(rem) => rem - self.sessions.request_timeout_ms(&ctx.client_id) / 2,
                None => self.cfg.max_long_polling_ms,
            },
        };
        let mut poll = requested.clamp(self.cfg.min_long_polling_ms, self.cfg.max_long_polling_ms);
        if let Some(rem) = ctx.deadline_ms {
            let usable = rem - DEADLINE_MARGIN_MS;
            if poll > usable {
                if rem < self.cfg.min_long_polling_ms {
                    let code = if ctx.before_5_0_3() {
                        Code::BadRequest
                    } else {
                        Code::IllegalPollingTime
                    };
                    return Err(ProxyError::invalid(
                        code,
                        format!("the remaining deadline of {rem} ms is too short to long-poll"),
                    ));
                }
                poll = usable.max(0);
            }
        }
        Ok(poll)
    }

    async fn receive_inner(
        &self,
        ctx: &ClientContext,
        req: ReceiveMessageRequest,
    ) -> Result<Vec<Message>, ProxyError> {
        let group = topic_name(&req.group).to_string();
        check_group(&group)?;
        let mq = req.message_queue.clone().unwrap_or_default();
        let topic = topic_name(&mq.topic).to_string();
        check_topic(&topic)?;
        let mut sql = String::new();
        let tags = match &req.filter_expression {
            None => vec![],
            Some(f) if f.r#type == FilterType::Sql as i32 => {
                // Checked here for the client's error; evaluated in the store, so messages
                // that do not match never leave it.
                rmq_common::sql92::parse(&f.expression).map_err(|why| {
                    ProxyError::invalid(
                        Code::IllegalFilterExpression,
                        format!("bad SQL92 expression {:?}: {why}", f.expression),
                    )
                })?;
                sql = f.expression.clone();
                vec![]
            }
            Some(f) => {
                let e = f.expression.trim();
                if e.is_empty() || e == "*" {
                    vec![]
                } else {
                    let tags: Vec<String> = e.split("||").map(|t| t.trim().to_string()).collect();
                    if tags.iter().any(|t| t.is_empty()) {
                        return Err(ProxyError::invalid(
                            Code::IllegalFilterExpression,
                            format!("bad tag expression {e:?}"),
                        ));
                    }
                    tags
                }
            }
        };
        let invisible_ms = if req.auto_renew {
            self.cfg.default_invisible_time_ms
        } else {
            let d = req.invisible_duration.as_ref().map(dur_ms).unwrap_or(0);
            if !(MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&d) {
                return Err(ProxyError::invalid(
                    Code::IllegalInvisibleTime,
                    format!(
                        "invisible duration {d} ms is outside [{MIN_INVISIBLE_MS}, {MAX_INVISIBLE_MS}] ms"
                    ),
                ));
            }
            d
        };
        let poll_ms = self.polling_ms(ctx, &req)?;
        let route = self.cluster.route(&topic).await?;
        let broker = mq
            .broker
            .as_ref()
            .map(|b| b.name.clone())
            .filter(|n| !n.is_empty());
        let broker = match broker {
            Some(b) => b,
            None => route
                .queues
                .first()
                .map(|q| q.broker_name.clone())
                .unwrap_or_default(),
        };
        let addr = if self.cluster.is_down(&broker) {
            route
                .replica_addr(&broker)
                .or_else(|| route.read_addr(&broker))
        } else {
            route.read_addr(&broker)
        }
        .ok_or_else(|| {
            ProxyError::StoreUnavailable(format!("no replica of {broker} is available"))
        })?;
        let store = self.cluster.store(addr)?;
        let tags_requested = tags.clone();
        let pop = PopRequest {
            group: group.clone(),
            topic: topic.clone(),
            queue_id: -1,
            tags,
            batch_size: req.batch_size.clamp(1, 32),
            invisible_ms,
            poll_ms,
            sql,
        };
        let resp = match store
            .pop(pop, Duration::from_millis(poll_ms as u64) + STORE_TIMEOUT)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, ProxyError::StoreUnreachable(_)) {
                    self.cluster
                        .mark_down(&broker, crate::cluster::UNREACHABLE_FOR);
                    self.cluster.invalidate(&topic);
                }
                return Err(e);
            }
        };
        check(&resp.result)?;
        let mut messages = resp.messages;
        if messages.iter().any(|m| m.record_on_replica) {
            crate::replica_read::fill_records(
                &self.cluster,
                &route,
                &broker,
                &store,
                resp.replica_broker_id,
                &mut messages,
                STORE_TIMEOUT,
            )
            .await;
            crate::replica_read::drop_tag_collisions(
                &store,
                &group,
                &topic,
                &tags_requested,
                &mut messages,
                STORE_TIMEOUT,
            )
            .await;
        }
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            if m.record_on_replica {
                tracing::warn!(
                    offset = m.commit_log_offset,
                    "record unreadable on every replica; it becomes visible again later"
                );
                continue;
            }
            let handle = ReceiptHandle {
                token: m.token,
                pop_time_ms: m.pop_time_ms,
                invisible_ms: m.invisible_ms,
                broker_name: broker.clone(),
                queue_id: m.queue_id,
                queue_offset: m.queue_offset,
                commit_log_offset: m.commit_log_offset,
            };
            match convert::from_record(&m.record, &handle, m.attempt) {
                Ok(msg) => out.push(msg),
                Err(e) => tracing::error!(error = %e, "undeliverable record skipped"),
            }
        }
        Ok(out)
    }

    async fn store_for_handle(
        &self,
        topic: &str,
        h: &ReceiptHandle,
    ) -> Result<crate::cluster::StoreClient, ProxyError> {
        let route = self.cluster.route(topic).await?;
        let addr = route.read_addr(&h.broker_name).ok_or_else(|| {
            ProxyError::StoreUnavailable(format!("no replica of {} is available", h.broker_name))
        })?;
        self.cluster.store(addr)
    }

    /// Acknowledges a client's entries with one store call per store group (one state record
    /// each, instead of one per message); every entry keeps its own verdict.
    async fn ack_many(
        &self,
        group: &str,
        topic: &str,
        handles: &[&str],
    ) -> Vec<Result<(), ProxyError>> {
        let mut out: Vec<Option<Result<(), ProxyError>>> = vec![None; handles.len()];
        let mut by_broker: std::collections::HashMap<String, Vec<(usize, ReceiptHandle)>> =
            std::collections::HashMap::new();
        for (i, raw) in handles.iter().enumerate() {
            match ReceiptHandle::decode(raw) {
                Ok(h) => by_broker
                    .entry(h.broker_name.clone())
                    .or_default()
                    .push((i, h)),
                Err(e) => {
                    out[i] = Some(Err(ProxyError::invalid(
                        Code::InvalidReceiptHandle,
                        e.to_string(),
                    )))
                }
            }
        }
        let calls = by_broker.into_values().map(|entries| async move {
            let outcome = async {
                let store = self.store_for_handle(topic, &entries[0].1).await?;
                let items = entries
                    .iter()
                    .map(|(_, h)| AckItem {
                        queue_id: h.queue_id,
                        queue_offset: h.queue_offset,
                        token: h.token,
                    })
                    .collect();
                let req = AckBatchRequest {
                    group: group.into(),
                    topic: topic.into(),
                    items,
                };
                let r = store.ack_batch(req, STORE_TIMEOUT).await?;
                check(&r.result)?;
                Ok::<_, ProxyError>(r.results)
            }
            .await;
            (
                entries.into_iter().map(|(i, _)| i).collect::<Vec<_>>(),
                outcome,
            )
        });
        for (indices, outcome) in futures::future::join_all(calls).await {
            match outcome {
                Ok(results) => {
                    for (k, i) in indices.into_iter().enumerate() {
                        out[i] = Some(match results.get(k) {
                            Some(r) => check(&Some(r.clone())),
                            None => Err(ProxyError::Internal(
                                "the store answered fewer ack results than asked".into(),
                            )),
                        });
                    }
                }
                Err(e) => {
                    for i in indices {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(ProxyError::Internal("ack without a verdict".into()))))
            .collect()
    }

    async fn change_invisible_inner(
        &self,
        req: &ChangeInvisibleDurationRequest,
    ) -> Result<String, ProxyError> {
        let group = topic_name(&req.group);
        check_group(group)?;
        let topic = topic_name(&req.topic);
        check_topic(topic)?;
        let d = req.invisible_duration.as_ref().map(dur_ms).unwrap_or(-1);
        if !(0..=MAX_INVISIBLE_MS).contains(&d) {
            return Err(ProxyError::invalid(
                Code::IllegalInvisibleTime,
                format!("invisible duration {d} ms is outside [0, {MAX_INVISIBLE_MS}] ms"),
            ));
        }
        let h = ReceiptHandle::decode(&req.receipt_handle)
            .map_err(|e| ProxyError::invalid(Code::InvalidReceiptHandle, e.to_string()))?;
        let store = self.store_for_handle(topic, &h).await?;
        let r = store
            .change_invisible(
                ChangeInvisibleRequest {
                    group: group.into(),
                    topic: topic.into(),
                    queue_id: h.queue_id,
                    queue_offset: h.queue_offset,
                    token: h.token,
                    invisible_ms: d,
                },
                STORE_TIMEOUT,
            )
            .await?;
        check(&r.result)?;
        Ok(ReceiptHandle {
            token: r.token,
            pop_time_ms: r.pop_time_ms,
            invisible_ms: r.invisible_ms,
            ..h
        }
        .encode())
    }

    async fn dead_letter_inner(
        &self,
        req: &ForwardMessageToDeadLetterQueueRequest,
    ) -> Result<(), ProxyError> {
        let group = topic_name(&req.group);
        check_group(group)?;
        let topic = topic_name(&req.topic);
        check_topic(topic)?;
        let h = ReceiptHandle::decode(&req.receipt_handle)
            .map_err(|e| ProxyError::invalid(Code::InvalidReceiptHandle, e.to_string()))?;
        let store = self.store_for_handle(topic, &h).await?;
        let r = store
            .dead_letter(
                DeadLetterRequest {
                    group: group.into(),
                    topic: topic.into(),
                    queue_id: h.queue_id,
                    queue_offset: h.queue_offset,
                    token: h.token,
                },
                STORE_TIMEOUT,
            )
            .await?;
        check(&r.result)
    }

    /// Whether `group` consumes in order, plus its retry budget.
    pub async fn group_settings(&self, group: &str) -> crate::telemetry::GroupSettings {
        crate::telemetry::group_settings(&self.cluster, &self.cfg, group).await
    }

    async fn assignment_inner(
        &self,
        req: QueryAssignmentRequest,
    ) -> Result<Vec<Assignment>, ProxyError> {
        let topic = req.topic.clone().unwrap_or_default();
        check_topic(&topic.name)?;
        check_group(topic_name(&req.group))?;
        let route = self.cluster.route(&topic.name).await?;
        let endpoints = echo_endpoints(req.endpoints.as_ref(), self.cfg.grpc_server_port);
        let fifo = self.group_settings(topic_name(&req.group)).await.fifo;
        let types = accept_types(&route);
        let mut out = Vec::new();
        for q in &route.queues {
            if q.perm & 4 == 0
                || q.read_queue_nums <= 0
                || route.read_addr(&q.broker_name).is_none()
            {
                continue;
            }
            let ids: Vec<i32> = if fifo {
                (0..q.read_queue_nums).collect()
            } else {
                vec![-1]
            };
            for id in ids {
                out.push(Assignment {
                    message_queue: Some(MessageQueue {
                        topic: Some(topic.clone()),
                        id,
                        permission: Permission::Read as i32,
                        broker: Some(self.broker(&q.broker_name, &endpoints)),
                        accept_message_types: types.clone(),
                    }),
                });
            }
        }
        if out.is_empty() {
            return Err(ProxyError::Forbidden("no readable queue".into()));
        }
        Ok(out)
    }
}

fn overall(ctx: &ClientContext, statuses: &[&Status]) -> Status {
    match statuses.first() {
        None => status(ctx, Code::InternalServerError as i32, "no result"),
        Some(first) if statuses.iter().all(|s| s.code == first.code) => (*first).clone(),
        Some(_) => status(ctx, Code::MultipleResults as i32, "MULTIPLE_RESULTS"),
    }
}

#[tonic::async_trait]
impl MessagingService for Messaging {
    async fn query_route(
        &self,
        request: Request<QueryRouteRequest>,
    ) -> GrpcResult<QueryRouteResponse> {
        let ctx = match ClientContext::require(request.metadata()) {
            Ok(c) => c,
            Err((c, e)) => {
                return Ok(Response::new(QueryRouteResponse {
                    status: Some(to_status(&c, &e)),
                    message_queues: vec![],
                }));
            }
        };
        Ok(Response::new(
            match self.query_route_inner(request.into_inner()).await {
                Ok(q) => QueryRouteResponse {
                    status: Some(ok_status()),
                    message_queues: q,
                },
                Err(e) => QueryRouteResponse {
                    status: Some(to_status(&ctx, &e)),
                    message_queues: vec![],
                },
            },
        ))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> GrpcResult<HeartbeatResponse> {
        let ctx = match ClientContext::require(request.metadata()) {
            Ok(c) => c,
            Err((c, e)) => {
                return Ok(Response::new(HeartbeatResponse {
                    status: Some(to_status(&c, &e)),
                }));
            }
        };
        let req = request.into_inner();
        if let Some(g) = req.group.as_ref().filter(|g| !g.name.is_empty())
            && let Err(e) = check_group(&g.name)
        {
            return Ok(Response::new(HeartbeatResponse {
                status: Some(to_status(&ctx, &e)),
            }));
        }
        Ok(Response::new(HeartbeatResponse {
            status: Some(ok_status()),
        }))
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> GrpcResult<SendMessageResponse> {
        // The full client context (three strings) is only needed to shape an error.
        let (md, _, req) = request.into_parts();
        let n = req.messages.len().max(1);
        let result = if ClientContext::has_client_id(&md) {
            self.send_inner(&req).await
        } else {
            Err(ProxyError::ClientIdRequired)
        };
        Ok(Response::new(match result {
            Ok(entries) => {
                let first = entries.first().and_then(|e| e.status.as_ref());
                let status = match first {
                    Some(f) if entries.iter().all(|e| e.status.as_ref() == Some(f)) => f.clone(),
                    _ => {
                        let st: Vec<&Status> =
                            entries.iter().filter_map(|e| e.status.as_ref()).collect();
                        overall(&ClientContext::from_metadata(&md), &st)
                    }
                };
                SendMessageResponse {
                    status: Some(status),
                    entries,
                }
            }
            Err(e) => {
                let s = to_status(&ClientContext::from_metadata(&md), &e);
                let id = |i: usize| {
                    req.messages
                        .get(i)
                        .and_then(|m| m.system_properties.as_ref())
                        .map(|s| s.message_id.clone())
                        .unwrap_or_default()
                };
                let entries = (0..n)
                    .map(|i| SendResultEntry {
                        status: Some(s.clone()),
                        message_id: id(i),
                        ..Default::default()
                    })
                    .collect();
                SendMessageResponse {
                    status: Some(s),
                    entries,
                }
            }
        }))
    }

    async fn query_assignment(
        &self,
        request: Request<QueryAssignmentRequest>,
    ) -> GrpcResult<QueryAssignmentResponse> {
        let ctx = match ClientContext::require(request.metadata()) {
            Ok(c) => c,
            Err((c, e)) => {
                return Ok(Response::new(QueryAssignmentResponse {
                    status: Some(to_status(&c, &e)),
                    assignments: vec![],
                }));
            }
        };
        Ok(Response::new(
            match self.assignment_inner(request.into_inner()).await {
                Ok(a) => QueryAssignmentResponse {
                    status: Some(ok_status()),
                    assignments: a,
                },
                Err(e) => QueryAssignmentResponse {
                    status: Some(to_status(&ctx, &e)),
                    assignments: vec![],
                },
            },
        ))
    }

    type ReceiveMessageStream = ResponseStream<ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> GrpcResult<Self::ReceiveMessageStream> {
        let res = match ClientContext::require(request.metadata()) {
            Ok(ctx) => {
                let r = self.receive_inner(&ctx, request.into_inner()).await;
                (ctx, r)
            }
            Err((c, e)) => (c, Err(e)),
        };
        let (ctx, result) = res;
        let mut items: Vec<Result<ReceiveMessageResponse, tonic::Status>> = Vec::new();
        let push_status = |items: &mut Vec<_>, s: Status| {
            items.push(Ok(ReceiveMessageResponse {
                content: Some(receive_message_response::Content::Status(s)),
            }))
        };
        match result {
            Ok(msgs) if msgs.is_empty() => {
                push_status(
                    &mut items,
                    status(&ctx, Code::MessageNotFound as i32, "no new message"),
                );
            }
            Ok(msgs) => {
                push_status(&mut items, ok_status());
                for m in msgs {
                    items.push(Ok(ReceiveMessageResponse {
                        content: Some(receive_message_response::Content::Message(m)),
                    }));
                }
            }
            Err(e) => push_status(&mut items, to_status(&ctx, &e)),
        }
        items.push(Ok(ReceiveMessageResponse {
            content: Some(receive_message_response::Content::DeliveryTimestamp(ms_ts(
                now_ms(),
            ))),
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> GrpcResult<AckMessageResponse> {
        let ctx = match ClientContext::require(request.metadata()) {
            Ok(c) => c,
            Err((c, e)) => {
                return Ok(Response::new(AckMessageResponse {
                    status: Some(to_status(&c, &e)),
                    entries: vec![],
                }));
            }
        };
        let req = request.into_inner();
        let group = topic_name(&req.group).to_string();
        let topic = topic_name(&req.topic).to_string();
        let pre = check_group(&group).and_then(|_| check_topic(&topic));
        if let Err(e) = pre {
            return Ok(Response::new(AckMessageResponse {
                status: Some(to_status(&ctx, &e)),
                entries: vec![],
            }));
        }
        if req.entries.is_empty() {
            let e = ProxyError::invalid(Code::BadRequest, "no entry to acknowledge");
            return Ok(Response::new(AckMessageResponse {
                status: Some(to_status(&ctx, &e)),
                entries: vec![],
            }));
        }
        let handles: Vec<&str> = req
            .entries
            .iter()
            .map(|en| en.receipt_handle.as_str())
            .collect();
        let results = self.ack_many(&group, &topic, &handles).await;
        let entries: Vec<AckMessageResultEntry> = req
            .entries
            .iter()
            .zip(results)
            .map(|(en, r)| AckMessageResultEntry {
                message_id: en.message_id.clone(),
                receipt_handle: en.receipt_handle.clone(),
                status: Some(match r {
                    Ok(()) => ok_status(),
                    Err(e) => to_status(&ctx, &e),
                }),
            })
            .collect();
        let st: Vec<&Status> = entries.iter().filter_map(|e| e.status.as_ref()).collect();
        Ok(Response::new(AckMessageResponse {
            status: Some(overall(&ctx, &st)),
            entries,
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> GrpcResult<ForwardMessageToDeadLetterQueueResponse> {
        let ctx = ClientContext::from_metadata(request.metadata());
        let req = request.into_inner();
        let result = if ctx.client_id.trim().is_empty() {
            Err(ProxyError::ClientIdRequired)
        } else {
            self.dead_letter_inner(&req).await
        };
        Ok(Response::new(ForwardMessageToDeadLetterQueueResponse {
            status: Some(match result {
                Ok(()) => ok_status(),
                Err(e) => to_status(&ctx, &e),
            }),
        }))
    }

    type PullMessageStream = ResponseStream<PullMessageResponse>;

    async fn pull_message(
        &self,
        _: Request<PullMessageRequest>,
    ) -> GrpcResult<Self::PullMessageStream> {
        Err(tonic::Status::unimplemented(
            "PullMessage is not implemented; use ReceiveMessage",
        ))
    }

    async fn update_offset(
        &self,
        _: Request<UpdateOffsetRequest>,
    ) -> GrpcResult<UpdateOffsetResponse> {
        Err(tonic::Status::unimplemented(
            "UpdateOffset is not implemented",
        ))
    }

    async fn get_offset(&self, _: Request<GetOffsetRequest>) -> GrpcResult<GetOffsetResponse> {
        Err(tonic::Status::unimplemented("GetOffset is not implemented"))
    }

    async fn query_offset(
        &self,
        _: Request<QueryOffsetRequest>,
    ) -> GrpcResult<QueryOffsetResponse> {
        Err(tonic::Status::unimplemented(
            "QueryOffset is not implemented",
        ))
    }

    async fn end_transaction(
        &self,
        request: Request<EndTransactionRequest>,
    ) -> GrpcResult<EndTransactionResponse> {
        let ctx = ClientContext::from_metadata(request.metadata());
        let req = request.into_inner();
        let e = if req.transaction_id.trim().is_empty() {
            ProxyError::invalid(Code::InvalidTransactionId, "transaction id cannot be blank")
        } else {
            ProxyError::NotImplemented("transactional messages are not supported yet".into())
        };
        Ok(Response::new(EndTransactionResponse {
            status: Some(to_status(&ctx, &e)),
        }))
    }

    type TelemetryStream = ResponseStream<TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<Streaming<TelemetryCommand>>,
    ) -> GrpcResult<Self::TelemetryStream> {
        crate::telemetry::open(self, request).await
    }

    async fn notify_client_termination(
        &self,
        request: Request<NotifyClientTerminationRequest>,
    ) -> GrpcResult<NotifyClientTerminationResponse> {
        let ctx = match ClientContext::require(request.metadata()) {
            Ok(c) => c,
            Err((c, e)) => {
                return Ok(Response::new(NotifyClientTerminationResponse {
                    status: Some(to_status(&c, &e)),
                }));
            }
        };
        self.sessions.remove(&ctx.client_id);
        Ok(Response::new(NotifyClientTerminationResponse {
            status: Some(ok_status()),
        }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> GrpcResult<ChangeInvisibleDurationResponse> {
        let (ctx, err) = match ClientContext::require(request.metadata()) {
            Ok(c) => (c, None),
            Err((c, e)) => (c, Some(e)),
        };
        let req = request.into_inner();
        let result = match err {
            Some(e) => Err(e),
            None => self.change_invisible_inner(&req).await,
        };
        Ok(Response::new(match result {
            Ok(h) => ChangeInvisibleDurationResponse {
                status: Some(ok_status()),
                receipt_handle: h,
            },
            // Python overwrites its handle with ours before checking the status: echo theirs.
            Err(e) => ChangeInvisibleDurationResponse {
                status: Some(to_status(&ctx, &e)),
                receipt_handle: req.receipt_handle,
            },
        }))
    }

    async fn recall_message(
        &self,
        request: Request<RecallMessageRequest>,
    ) -> GrpcResult<RecallMessageResponse> {
        let ctx = ClientContext::from_metadata(request.metadata());
        let e = ProxyError::NotImplemented("recalling delay messages is not supported yet".into());
        Ok(Response::new(RecallMessageResponse {
            status: Some(to_status(&ctx, &e)),
            message_id: String::new(),
        }))
    }

    async fn sync_lite_subscription(
        &self,
        request: Request<SyncLiteSubscriptionRequest>,
    ) -> GrpcResult<SyncLiteSubscriptionResponse> {
        let ctx = ClientContext::from_metadata(request.metadata());
        let e = ProxyError::NotImplemented("lite topics are not supported".into());
        Ok(Response::new(SyncLiteSubscriptionResponse {
            status: Some(to_status(&ctx, &e)),
        }))
    }
}
