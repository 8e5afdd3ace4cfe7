//! QueryRoute: the topic's queues as clients see them, created first where allowed.

use super::*;

pub(super) fn accept_types(route: &Route) -> Vec<i32> {
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
pub(super) fn echo_endpoints(req: Option<&Endpoints>, own_port: u16) -> Endpoints {
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
    pub(super) fn broker(&self, name: &str, endpoints: &Endpoints) -> Broker {
        Broker {
            name: name.to_string(),
            id: 0,
            endpoints: Some(endpoints.clone()),
        }
    }

    /// Queues per broker in Apache's order (read-only, write-only, read-write), ids from 0.
    pub(super) fn queues_for(
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
    pub(super) async fn route_or_create(&self, topic: &str) -> Result<Arc<Route>, ProxyError> {
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

    pub(super) async fn query_route_inner(
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

    pub(super) async fn query_route_rpc(
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
}
