//! ReceiveMessage: long polling, filters, deliveries shaped as the clients expect.

use super::*;

impl Messaging {
    pub(super) fn polling_ms(
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

    pub(super) async fn receive_inner(
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

    pub(super) async fn receive_message_rpc(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> GrpcResult<ResponseStream<ReceiveMessageResponse>> {
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
}
