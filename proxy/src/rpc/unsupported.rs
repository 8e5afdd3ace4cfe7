//! RPCs answered with a clear refusal until their issue lands (offsets, transactions,
//! recall, Lite topics).

use super::*;

impl Messaging {
    pub(super) async fn pull_message_rpc(
        &self,
        _: Request<PullMessageRequest>,
    ) -> GrpcResult<ResponseStream<PullMessageResponse>> {
        Err(tonic::Status::unimplemented(
            "PullMessage is not implemented; use ReceiveMessage",
        ))
    }

    pub(super) async fn update_offset_rpc(
        &self,
        _: Request<UpdateOffsetRequest>,
    ) -> GrpcResult<UpdateOffsetResponse> {
        Err(tonic::Status::unimplemented(
            "UpdateOffset is not implemented",
        ))
    }

    pub(super) async fn get_offset_rpc(
        &self,
        _: Request<GetOffsetRequest>,
    ) -> GrpcResult<GetOffsetResponse> {
        Err(tonic::Status::unimplemented("GetOffset is not implemented"))
    }

    pub(super) async fn query_offset_rpc(
        &self,
        _: Request<QueryOffsetRequest>,
    ) -> GrpcResult<QueryOffsetResponse> {
        Err(tonic::Status::unimplemented(
            "QueryOffset is not implemented",
        ))
    }

    pub(super) async fn end_transaction_rpc(
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

    pub(super) async fn recall_message_rpc(
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

    pub(super) async fn sync_lite_subscription_rpc(
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
