//! ForwardMessageToDeadLetterQueue: a FIFO client giving up on a message.

use super::*;

impl Messaging {
    pub(super) async fn dead_letter_inner(
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

    pub(super) async fn forward_message_to_dead_letter_queue_rpc(
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
}
