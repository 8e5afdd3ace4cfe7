//! The store node's gRPC edge: the one place a [`StoreError`] becomes a v2 code.

use crate::error::StoreError;
use crate::state::GroupCfg;
use crate::store::{PopRequest, Store};
use rmq_proto::store::store_service_server::StoreService;
use rmq_proto::store::*;
use rmq_proto::v2::Code;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct StoreGrpc {
    store: Arc<Store>,
}

impl StoreGrpc {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

/// Success carries no text: the code says it, and the send path builds one per message.
fn ok() -> Option<Result> {
    Some(Result {
        code: Code::Ok as i32,
        message: String::new(),
    })
}

fn fail(e: &StoreError) -> Option<Result> {
    Some(Result {
        code: e.code() as i32,
        message: e.to_string(),
    })
}

fn reply<T>(t: T) -> std::result::Result<Response<T>, Status> {
    Ok(Response::new(t))
}

pub use crate::state::record::{
    group_from_proto, group_to_proto, topic_from_proto, topic_to_proto,
};

#[tonic::async_trait]
impl StoreService for StoreGrpc {
    async fn append(
        &self,
        req: Request<AppendRequest>,
    ) -> std::result::Result<Response<AppendResponse>, Status> {
        match self.store.append(req.into_inner().messages).await {
            Ok(rs) => reply(AppendResponse {
                result: ok(),
                refused_before_write: false,
                entries: rs
                    .into_iter()
                    .map(|r| AppendEntry {
                        result: ok(),
                        queue_id: r.queue_id,
                        queue_offset: r.queue_offset,
                        commit_log_offset: r.phys,
                    })
                    .collect(),
            }),
            Err(e) => reply(AppendResponse {
                result: fail(&e),
                entries: vec![],
                refused_before_write: e.nothing_written(),
            }),
        }
    }

    async fn pop(
        &self,
        req: Request<PopRequest_>,
    ) -> std::result::Result<Response<PopResponse>, Status> {
        let r = req.into_inner();
        let sql = if r.sql.trim().is_empty() {
            None
        } else {
            match rmq_common::sql92::parse(&r.sql) {
                Ok(e) => Some(std::sync::Arc::new(e)),
                Err(why) => {
                    return reply(PopResponse {
                        result: Some(Result {
                            code: Code::IllegalFilterExpression as i32,
                            message: format!("bad SQL92 expression: {why}"),
                        }),
                        ..Default::default()
                    });
                }
            }
        };
        let pr = PopRequest {
            group: r.group,
            topic: r.topic,
            queue_id: r.queue_id,
            tags: r.tags,
            batch: r.batch_size.clamp(1, 32) as usize,
            invisible_ms: r.invisible_ms.max(0),
            poll_ms: r.poll_ms.clamp(0, 60_000),
            sql,
        };
        match self.store.pop(pr).await {
            Ok(ds) => reply(PopResponse {
                result: ok(),
                replica_broker_id: ds.iter().find_map(|d| d.on_replica).unwrap_or(0),
                messages: ds
                    .into_iter()
                    .map(|d| PoppedMessage {
                        record: d.record.into(),
                        queue_id: d.queue_id,
                        queue_offset: d.queue_offset,
                        commit_log_offset: d.phys,
                        attempt: d.attempt,
                        token: d.token,
                        pop_time_ms: d.pop_time_ms,
                        invisible_ms: d.invisible_ms,
                        record_on_replica: d.on_replica.is_some(),
                        record_size: d.size,
                    })
                    .collect(),
            }),
            Err(e) => reply(PopResponse {
                result: fail(&e),
                messages: vec![],
                replica_broker_id: 0,
            }),
        }
    }

    async fn ack_batch(
        &self,
        req: Request<AckBatchRequest>,
    ) -> std::result::Result<Response<AckBatchResponse>, Status> {
        let r = req.into_inner();
        let items: Vec<(i32, i64, u64)> = r
            .items
            .iter()
            .map(|i| (i.queue_id, i.queue_offset, i.token))
            .collect();
        match self.store.ack_batch(&r.group, &r.topic, &items).await {
            Ok(vs) => reply(AckBatchResponse {
                result: ok(),
                results: vs
                    .iter()
                    .map(|v| match v {
                        Ok(()) => ok(),
                        Err(e) => fail(e),
                    })
                    .map(Option::unwrap_or_default)
                    .collect(),
            }),
            Err(e) => reply(AckBatchResponse {
                result: fail(&e),
                results: vec![],
            }),
        }
    }

    async fn read_records(
        &self,
        req: Request<ReadRecordsRequest>,
    ) -> std::result::Result<Response<ReadRecordsResponse>, Status> {
        let r = req.into_inner();
        let refs: Vec<(i64, i32)> = r
            .refs
            .iter()
            .map(|x| (x.commit_log_offset, x.size))
            .collect();
        let records = self.store.read_records(&refs);
        reply(ReadRecordsResponse {
            result: ok(),
            records,
        })
    }

    async fn ack(
        &self,
        req: Request<AckRequest>,
    ) -> std::result::Result<Response<AckResponse>, Status> {
        let r = req.into_inner();
        let res = self
            .store
            .ack(&r.group, &r.topic, r.queue_id, r.queue_offset, r.token)
            .await;
        reply(AckResponse {
            result: res.map_or_else(|e| fail(&e), |_| ok()),
        })
    }

    async fn change_invisible(
        &self,
        req: Request<ChangeInvisibleRequest>,
    ) -> std::result::Result<Response<ChangeInvisibleResponse>, Status> {
        let r = req.into_inner();
        match self
            .store
            .change_invisible(
                &r.group,
                &r.topic,
                r.queue_id,
                r.queue_offset,
                r.token,
                r.invisible_ms.max(0),
            )
            .await
        {
            Ok(v) => reply(ChangeInvisibleResponse {
                result: ok(),
                token: v.token,
                pop_time_ms: v.pop_time_ms,
                invisible_ms: v.invisible_ms,
            }),
            Err(e) => reply(ChangeInvisibleResponse {
                result: fail(&e),
                ..Default::default()
            }),
        }
    }

    async fn dead_letter(
        &self,
        req: Request<DeadLetterRequest>,
    ) -> std::result::Result<Response<DeadLetterResponse>, Status> {
        let r = req.into_inner();
        match self
            .store
            .dead_letter(&r.group, &r.topic, r.queue_id, r.queue_offset, r.token)
            .await
        {
            Ok(dlq) => reply(DeadLetterResponse {
                result: ok(),
                dlq_topic: dlq,
            }),
            Err(e) => reply(DeadLetterResponse {
                result: fail(&e),
                ..Default::default()
            }),
        }
    }

    async fn upsert_topic(
        &self,
        req: Request<UpsertTopicRequest>,
    ) -> std::result::Result<Response<AdminResponse>, Status> {
        let Some(t) = req.into_inner().topic else {
            return reply(AdminResponse {
                result: fail(&StoreError::BadRequest("topic missing".into())),
            });
        };
        let res = self.store.upsert_topic(topic_from_proto(t)).await;
        reply(AdminResponse {
            result: res.map_or_else(|e| fail(&e), |_| ok()),
        })
    }

    async fn delete_topic(
        &self,
        req: Request<DeleteTopicRequest>,
    ) -> std::result::Result<Response<AdminResponse>, Status> {
        let res = self.store.delete_topic(&req.into_inner().topic).await;
        reply(AdminResponse {
            result: res.map_or_else(|e| fail(&e), |_| ok()),
        })
    }

    async fn get_topic(
        &self,
        req: Request<GetTopicRequest>,
    ) -> std::result::Result<Response<GetTopicResponse>, Status> {
        let r = req.into_inner();
        let name = r.topic;
        if r.auto_create
            && self.store.topic(&name).is_none()
            && let Err(e) = self.store.auto_create_topic(&name).await
        {
            return reply(GetTopicResponse {
                result: fail(&e),
                topic: None,
            });
        }
        match self.store.topic(&name) {
            Some(t) => reply(GetTopicResponse {
                result: ok(),
                topic: Some(topic_to_proto(&t)),
            }),
            None => reply(GetTopicResponse {
                result: fail(&StoreError::TopicNotFound(name)),
                topic: None,
            }),
        }
    }

    async fn list_topics(
        &self,
        _: Request<ListTopicsRequest>,
    ) -> std::result::Result<Response<ListTopicsResponse>, Status> {
        reply(ListTopicsResponse {
            result: ok(),
            topics: self.store.topics().iter().map(topic_to_proto).collect(),
        })
    }

    async fn upsert_group(
        &self,
        req: Request<UpsertGroupRequest>,
    ) -> std::result::Result<Response<AdminResponse>, Status> {
        let Some(g) = req.into_inner().group else {
            return reply(AdminResponse {
                result: fail(&StoreError::BadRequest("group missing".into())),
            });
        };
        let res = self.store.upsert_group(group_from_proto(g)).await;
        reply(AdminResponse {
            result: res.map_or_else(|e| fail(&e), |_| ok()),
        })
    }

    async fn delete_group(
        &self,
        req: Request<DeleteGroupRequest>,
    ) -> std::result::Result<Response<AdminResponse>, Status> {
        let res = self.store.delete_group(&req.into_inner().group).await;
        reply(AdminResponse {
            result: res.map_or_else(|e| fail(&e), |_| ok()),
        })
    }

    async fn get_group(
        &self,
        req: Request<GetGroupRequest>,
    ) -> std::result::Result<Response<GetGroupResponse>, Status> {
        let name = req.into_inner().group;
        match self.store.group(&name) {
            Some(g) => reply(GetGroupResponse {
                result: ok(),
                group: Some(group_to_proto(&g)),
                exists: true,
            }),
            None => reply(GetGroupResponse {
                result: ok(),
                group: Some(group_to_proto(&GroupCfg::with_defaults(&name))),
                exists: false,
            }),
        }
    }

    async fn topic_status(
        &self,
        req: Request<TopicStatusRequest>,
    ) -> std::result::Result<Response<TopicStatusResponse>, Status> {
        match self.store.topic_status(&req.into_inner().topic) {
            Ok(rows) => reply(TopicStatusResponse {
                result: ok(),
                queues: rows
                    .into_iter()
                    .map(
                        |(queue_id, min_offset, max_offset, last_update_ms)| QueueStatus {
                            queue_id,
                            min_offset,
                            max_offset,
                            last_update_ms,
                        },
                    )
                    .collect(),
            }),
            Err(e) => reply(TopicStatusResponse {
                result: fail(&e),
                queues: vec![],
            }),
        }
    }

    async fn consumer_progress(
        &self,
        req: Request<ConsumerProgressRequest>,
    ) -> std::result::Result<Response<ConsumerProgressResponse>, Status> {
        let r = req.into_inner();
        let queues = if r.group.is_empty() {
            vec![]
        } else {
            self.store
                .consumer_progress(&r.group, &r.topic)
                .into_iter()
                .map(
                    |(
                        topic,
                        queue_id,
                        broker_offset,
                        consumer_offset,
                        inflight,
                        last_timestamp_ms,
                    )| {
                        ConsumerQueueProgress {
                            topic,
                            queue_id,
                            broker_offset,
                            consumer_offset,
                            inflight,
                            last_timestamp_ms,
                        }
                    },
                )
                .collect()
        };
        reply(ConsumerProgressResponse {
            result: ok(),
            queues,
            groups: self.store.groups(),
        })
    }

    async fn delete_expired_commit_log(
        &self,
        _: Request<DeleteExpiredRequest>,
    ) -> std::result::Result<Response<DeleteExpiredResponse>, Status> {
        match self.store.delete_expired_commit_log().await {
            Ok(r) => reply(DeleteExpiredResponse {
                result: ok(),
                deleted: r.deleted,
                min_offset: r.min_offset,
            }),
            Err(e) => reply(DeleteExpiredResponse {
                result: fail(&e),
                ..Default::default()
            }),
        }
    }

    async fn runtime_info(
        &self,
        _: Request<RuntimeInfoRequest>,
    ) -> std::result::Result<Response<RuntimeInfoResponse>, Status> {
        reply(RuntimeInfoResponse {
            result: ok(),
            info: self.store.runtime_info().into_iter().collect(),
        })
    }
}

type PopRequest_ = rmq_proto::store::PopRequest;
