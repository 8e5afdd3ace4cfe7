//! SendMessage: validation, the pick of a replica group and queue, the store append.

use super::*;

impl Messaging {
    pub(super) async fn send_inner(
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

    pub(super) async fn send_message_rpc(
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
}
