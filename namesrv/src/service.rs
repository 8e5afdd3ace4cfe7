//! The name server's gRPC edge.

use crate::registry::Registry;
use rmq_proto::namesrv::namesrv_service_server::NamesrvService;
use rmq_proto::namesrv::*;
use rmq_proto::store::{AdminResponse, Result as StoreResult};
use rmq_proto::v2::Code;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct NamesrvGrpc {
    registry: Arc<Registry>,
}

impl NamesrvGrpc {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

fn ok() -> Option<StoreResult> {
    Some(StoreResult {
        code: Code::Ok as i32,
        message: "OK".into(),
    })
}

type PongStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<KeepAlivePong, Status>> + Send>>;

#[tonic::async_trait]
impl NamesrvService for NamesrvGrpc {
    type KeepAliveStream = PongStream;

    /// While this stream is open the node is alive; when it breaks the node leaves the routes.
    async fn keep_alive(
        &self,
        req: Request<tonic::Streaming<KeepAlivePing>>,
    ) -> Result<Response<PongStream>, Status> {
        let mut inbound = req.into_inner();
        let Some(first) = inbound.message().await? else {
            return Err(Status::invalid_argument("empty keep-alive stream"));
        };
        let registry = self.registry.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<KeepAlivePong, Status>>(2);
        tokio::spawn(async move {
            while let Ok(Some(_)) = inbound.message().await {
                if tx.try_send(Ok(KeepAlivePong {})).is_err() {
                    continue;
                }
            }
            tracing::warn!(broker = %first.broker_name, id = first.broker_id, addr = %first.broker_addr, "store node connection lost: removed from routes");
            registry.unregister(
                &first.cluster_name,
                &first.broker_name,
                first.broker_id,
                &first.broker_addr,
            );
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn register_broker(
        &self,
        req: Request<RegisterBrokerRequest>,
    ) -> Result<Response<RegisterBrokerResponse>, Status> {
        let req = req.into_inner();
        if req.cluster_name.is_empty() || req.broker_name.is_empty() || req.broker_addr.is_empty() {
            return Ok(Response::new(RegisterBrokerResponse {
                result: Some(StoreResult {
                    code: Code::BadRequest as i32,
                    message: "cluster, name and address are required".into(),
                }),
                ..Default::default()
            }));
        }
        let (master_addr, master_ha_addr) = self.registry.register(req);
        Ok(Response::new(RegisterBrokerResponse {
            result: ok(),
            master_addr,
            master_ha_addr,
        }))
    }

    async fn unregister_broker(
        &self,
        req: Request<UnregisterBrokerRequest>,
    ) -> Result<Response<AdminResponse>, Status> {
        let r = req.into_inner();
        self.registry
            .unregister(&r.cluster_name, &r.broker_name, r.broker_id, &r.broker_addr);
        Ok(Response::new(AdminResponse { result: ok() }))
    }

    async fn get_route(
        &self,
        req: Request<GetRouteRequest>,
    ) -> Result<Response<GetRouteResponse>, Status> {
        let topic = req.into_inner().topic;
        let (queue_datas, broker_datas) = self.registry.route(&topic);
        let result = if queue_datas.is_empty() {
            Some(StoreResult {
                code: Code::TopicNotFound as i32,
                message: format!("No topic route info in name server for the topic: {topic}"),
            })
        } else {
            ok()
        };
        Ok(Response::new(GetRouteResponse {
            result,
            queue_datas,
            broker_datas,
        }))
    }

    async fn get_cluster_info(
        &self,
        _: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        Ok(Response::new(ClusterInfoResponse {
            result: ok(),
            brokers: self.registry.cluster_info(),
        }))
    }

    async fn get_topic_list(
        &self,
        _: Request<TopicListRequest>,
    ) -> Result<Response<TopicListResponse>, Status> {
        Ok(Response::new(TopicListResponse {
            result: ok(),
            topics: self.registry.topics(),
        }))
    }
}
