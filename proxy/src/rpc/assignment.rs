//! QueryAssignment for push consumers, and what they are told about their group.

use super::route::{accept_types, echo_endpoints};
use super::*;

impl Messaging {
    /// Whether `group` consumes in order, plus its retry budget.
    pub async fn group_settings(&self, group: &str) -> crate::telemetry::GroupSettings {
        crate::telemetry::group_settings(&self.cluster, &self.cfg, group).await
    }

    pub(super) async fn assignment_inner(
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

    pub(super) async fn query_assignment_rpc(
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
}
