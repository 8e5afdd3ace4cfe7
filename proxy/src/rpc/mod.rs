//! The v2 `MessagingService`: one file per RPC (or family), routing in `route`. The trait impl
//! here only delegates, so each RPC's validation, store calls and response shaping sit together.

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

mod ack;
mod assignment;
mod dead_letter;
mod receive;
mod route;
mod send;
mod session;
mod unsupported;

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
        self.query_route_rpc(request).await
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> GrpcResult<HeartbeatResponse> {
        self.heartbeat_rpc(request).await
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> GrpcResult<SendMessageResponse> {
        self.send_message_rpc(request).await
    }

    async fn query_assignment(
        &self,
        request: Request<QueryAssignmentRequest>,
    ) -> GrpcResult<QueryAssignmentResponse> {
        self.query_assignment_rpc(request).await
    }

    type ReceiveMessageStream = ResponseStream<ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> GrpcResult<ResponseStream<ReceiveMessageResponse>> {
        self.receive_message_rpc(request).await
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> GrpcResult<AckMessageResponse> {
        self.ack_message_rpc(request).await
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> GrpcResult<ForwardMessageToDeadLetterQueueResponse> {
        self.forward_message_to_dead_letter_queue_rpc(request).await
    }

    type PullMessageStream = ResponseStream<PullMessageResponse>;

    async fn pull_message(
        &self,
        request: Request<PullMessageRequest>,
    ) -> GrpcResult<ResponseStream<PullMessageResponse>> {
        self.pull_message_rpc(request).await
    }

    async fn update_offset(
        &self,
        request: Request<UpdateOffsetRequest>,
    ) -> GrpcResult<UpdateOffsetResponse> {
        self.update_offset_rpc(request).await
    }

    async fn get_offset(
        &self,
        request: Request<GetOffsetRequest>,
    ) -> GrpcResult<GetOffsetResponse> {
        self.get_offset_rpc(request).await
    }

    async fn query_offset(
        &self,
        request: Request<QueryOffsetRequest>,
    ) -> GrpcResult<QueryOffsetResponse> {
        self.query_offset_rpc(request).await
    }

    async fn end_transaction(
        &self,
        request: Request<EndTransactionRequest>,
    ) -> GrpcResult<EndTransactionResponse> {
        self.end_transaction_rpc(request).await
    }

    type TelemetryStream = ResponseStream<TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<Streaming<TelemetryCommand>>,
    ) -> GrpcResult<TelemetryOut> {
        self.telemetry_rpc(request).await
    }

    async fn notify_client_termination(
        &self,
        request: Request<NotifyClientTerminationRequest>,
    ) -> GrpcResult<NotifyClientTerminationResponse> {
        self.notify_client_termination_rpc(request).await
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> GrpcResult<ChangeInvisibleDurationResponse> {
        self.change_invisible_duration_rpc(request).await
    }

    async fn recall_message(
        &self,
        request: Request<RecallMessageRequest>,
    ) -> GrpcResult<RecallMessageResponse> {
        self.recall_message_rpc(request).await
    }

    async fn sync_lite_subscription(
        &self,
        request: Request<SyncLiteSubscriptionRequest>,
    ) -> GrpcResult<SyncLiteSubscriptionResponse> {
        self.sync_lite_subscription_rpc(request).await
    }
}
