//! Heartbeat, Telemetry and NotifyClientTermination: the client's session.

use super::*;

impl Messaging {
    pub(super) async fn heartbeat_rpc(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> GrpcResult<HeartbeatResponse> {
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

    pub(super) async fn telemetry_rpc(
        &self,
        request: Request<Streaming<TelemetryCommand>>,
    ) -> GrpcResult<TelemetryOut> {
        crate::telemetry::open(self, request).await
    }

    pub(super) async fn notify_client_termination_rpc(
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
}
