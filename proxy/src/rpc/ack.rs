//! AckMessage and ChangeInvisibleDuration: receipt handles back to their store node.

use super::*;

impl Messaging {
    pub(super) async fn store_for_handle(
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
    pub(super) async fn ack_many(
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

    pub(super) async fn change_invisible_inner(
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

    pub(super) async fn ack_message_rpc(
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

    pub(super) async fn change_invisible_duration_rpc(
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
}
