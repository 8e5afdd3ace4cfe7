//! Load drivers: a raw v2 gRPC client (batching and concurrency beyond what the official client
//! offers), a minimal NATS client (publish with JetStream ack, one connection per publisher), and
//! the no-op gRPC echo server used as the protocol ceiling.

use rmq_proto::v2::messaging_service_client::MessagingServiceClient;
use rmq_proto::v2::messaging_service_server::{MessagingService, MessagingServiceServer};
use rmq_proto::v2::*;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status as GStatus};

static SEQ: AtomicU64 = AtomicU64::new(1);

pub async fn channel(port: u16) -> Result<MessagingServiceClient<Channel>, String> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(MessagingServiceClient::new(ch)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

pub fn req<T>(t: T) -> Request<T> {
    let mut r = Request::new(t);
    r.metadata_mut()
        .insert("x-mq-client-id", "rmq-bench".parse().expect("ascii"));
    r.metadata_mut()
        .insert("x-mq-language", "PYTHON".parse().expect("ascii"));
    r.metadata_mut()
        .insert("x-mq-client-version", "5.1.2".parse().expect("ascii"));
    r
}

pub fn resource(name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn message(topic: &str, body: bytes::Bytes) -> Message {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    Message {
        topic: resource(topic),
        user_properties: Default::default(),
        system_properties: Some(SystemProperties {
            message_id: format!("01BENCH{seq:024X}"),
            message_type: MessageType::Normal as i32,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: now_ms() / 1000,
                nanos: 0,
            }),
            born_host: "127.0.0.1".into(),
            body_encoding: Encoding::Identity as i32,
            ..Default::default()
        }),
        body,
    }
}

/// Sends `n` messages in one SendMessage; Ok when every entry is OK.
pub async fn send(
    c: &mut MessagingServiceClient<Channel>,
    topic: &str,
    body: &bytes::Bytes,
    n: usize,
) -> Result<(), String> {
    let msgs = (0..n).map(|_| message(topic, body.clone())).collect();
    let r = c
        .send_message(req(SendMessageRequest { messages: msgs }))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let (code, message) = r.status.map(|s| (s.code, s.message)).unwrap_or_default();
    if code != Code::Ok as i32 || r.entries.len() != n {
        return Err(format!("send status {code}: {message}"));
    }
    Ok(())
}

/// One long-polling receive of up to 32 messages, then one batched ack. Returns the bodies.
pub async fn receive_and_ack(
    c: &mut MessagingServiceClient<Channel>,
    topic: &str,
    group: &str,
    poll_ms: i64,
) -> Result<Vec<bytes::Bytes>, String> {
    let rq = ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(MessageQueue {
            topic: resource(topic),
            id: -1,
            broker: Some(Broker {
                name: String::new(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        filter_expression: Some(FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 32,
        invisible_duration: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: poll_ms / 1000,
            nanos: ((poll_ms % 1000) * 1_000_000) as i32,
        }),
        attempt_id: None,
    };
    let mut r = req(rq);
    r.set_timeout(std::time::Duration::from_millis(poll_ms as u64 + 3000));
    let mut stream = c
        .receive_message(r)
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut msgs = Vec::new();
    let mut status = 0;
    while let Some(item) = stream.message().await.map_err(|e| e.to_string())? {
        match item.content {
            Some(receive_message_response::Content::Status(s)) => status = s.code,
            Some(receive_message_response::Content::Message(m)) => msgs.push(m),
            _ => {}
        }
    }
    if status != Code::Ok as i32 && status != Code::MessageNotFound as i32 {
        return Err(format!("receive status {status}"));
    }
    if msgs.is_empty() {
        return Ok(Vec::new());
    }
    let entries = msgs
        .iter()
        .map(|m| {
            let sp = m.system_properties.as_ref();
            AckMessageEntry {
                message_id: sp.map(|s| s.message_id.clone()).unwrap_or_default(),
                receipt_handle: sp
                    .and_then(|s| s.receipt_handle.clone())
                    .unwrap_or_default(),
                lite_topic: None,
            }
        })
        .collect();
    let a = c
        .ack_message(req(AckMessageRequest {
            group: resource(group),
            topic: resource(topic),
            entries,
        }))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let code = a.status.map(|s| s.code).unwrap_or(0);
    if code != Code::Ok as i32 {
        return Err(format!("ack status {code}"));
    }
    Ok(msgs.into_iter().map(|m| m.body).collect())
}

/// Minimal NATS client: one connection, one outstanding JetStream publish at a time.
pub struct Nats {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
    inbox: String,
    n: u64,
}

impl Nats {
    pub async fn connect(port: u16) -> Result<Self, String> {
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let (r, w) = s.into_split();
        let mut rd = BufReader::new(r);
        let mut line = String::new();
        rd.read_line(&mut line).await.map_err(|e| e.to_string())?;
        if !line.starts_with("INFO") {
            return Err(format!("unexpected NATS greeting {line:?}"));
        }
        let inbox = format!("_INBOX.b{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let mut me = Self {
            rd,
            wr: w,
            inbox,
            n: 0,
        };
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":false}}\r\nSUB {}.* 1\r\n",
            me.inbox
        );
        me.wr
            .write_all(hello.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        Ok(me)
    }

    /// Publishes and waits for the JetStream acknowledgement.
    pub async fn request(&mut self, subject: &str, payload: &[u8]) -> Result<String, String> {
        self.n += 1;
        let reply = format!("{}.{}", self.inbox, self.n);
        let mut buf = Vec::with_capacity(payload.len() + 64);
        buf.extend_from_slice(format!("PUB {subject} {reply} {}\r\n", payload.len()).as_bytes());
        buf.extend_from_slice(payload);
        buf.extend_from_slice(b"\r\n");
        self.wr.write_all(&buf).await.map_err(|e| e.to_string())?;
        loop {
            let mut line = String::new();
            if self
                .rd
                .read_line(&mut line)
                .await
                .map_err(|e| e.to_string())?
                == 0
            {
                return Err("NATS connection closed".into());
            }
            if line.starts_with("PING") {
                self.wr
                    .write_all(b"PONG\r\n")
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
            if line.starts_with("-ERR") {
                return Err(line);
            }
            if let Some(rest) = line.strip_prefix("MSG ") {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                let len: usize = parts
                    .last()
                    .and_then(|l| l.parse().ok())
                    .ok_or("bad MSG line")?;
                let mut body = vec![0u8; len + 2];
                self.rd
                    .read_exact(&mut body)
                    .await
                    .map_err(|e| e.to_string())?;
                if parts.first() == Some(&reply.as_str()) {
                    let text = String::from_utf8_lossy(&body[..len]).to_string();
                    if text.contains("\"error\"") {
                        return Err(text);
                    }
                    return Ok(text);
                }
            }
        }
    }

    pub async fn create_stream(&mut self) -> Result<(), String> {
        let cfg = br#"{"name":"BENCH","subjects":["bench.>"],"storage":"file","num_replicas":1,"retention":"limits","discard":"old"}"#;
        self.request("$JS.API.STREAM.CREATE.BENCH", cfg)
            .await
            .map(|_| ())
    }
}

/// A started official-client producer for `TOPIC` on the proxy at `port`.
pub async fn official_producer(port: u16) -> Result<rocketmq::Producer, String> {
    use rocketmq::conf::{ClientOption, ProducerOption};
    let mut copt = ClientOption::default();
    copt.set_access_url(format!("127.0.0.1:{port}"));
    copt.set_timeout(std::time::Duration::from_secs(5));
    let mut o = ProducerOption::default();
    o.set_topics(vec![crate::systems::TOPIC]);
    let mut p = rocketmq::Producer::new(o, copt).map_err(|e| e.to_string())?;
    p.start().await.map_err(|e| e.to_string())?;
    Ok(p)
}

pub async fn official_send(
    p: &rocketmq::Producer,
    topic: &str,
    body: &bytes::Bytes,
) -> Result<(), String> {
    use rocketmq::model::message::MessageBuilder;
    let m = MessageBuilder::builder()
        .set_topic(topic)
        .set_body(body.to_vec())
        .build()
        .map_err(|e| e.to_string())?;
    p.send(m).await.map(|_| ()).map_err(|e| e.to_string())
}

/// Answers SendMessage with OK and nothing else: the cost of gRPC + protobuf alone. It also
/// answers what the official clients need before they send (a route to itself, heartbeats and
/// the Telemetry settings exchange), so they can be measured against it too.
pub struct Echo {
    port: u16,
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, GStatus>> + Send>>;

fn ok() -> Option<Status> {
    Some(Status {
        code: Code::Ok as i32,
        message: "OK".into(),
    })
}

#[tonic::async_trait]
impl MessagingService for Echo {
    async fn send_message(
        &self,
        r: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, GStatus> {
        let r = r.into_inner();
        let entries = r
            .messages
            .iter()
            .map(|m| SendResultEntry {
                status: ok(),
                message_id: m
                    .system_properties
                    .as_ref()
                    .map(|s| s.message_id.clone())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(SendMessageResponse {
            status: ok(),
            entries,
        }))
    }
    async fn query_route(
        &self,
        r: Request<QueryRouteRequest>,
    ) -> Result<Response<QueryRouteResponse>, GStatus> {
        let topic = r.into_inner().topic;
        let broker = Broker {
            name: "echo".into(),
            id: 0,
            endpoints: Some(Endpoints {
                scheme: AddressScheme::IPv4 as i32,
                addresses: vec![Address {
                    host: "127.0.0.1".into(),
                    port: i32::from(self.port),
                }],
            }),
        };
        let message_queues = (0..8)
            .map(|id| MessageQueue {
                topic: topic.clone(),
                id,
                permission: Permission::ReadWrite as i32,
                broker: Some(broker.clone()),
                accept_message_types: vec![MessageType::Normal as i32],
            })
            .collect();
        Ok(Response::new(QueryRouteResponse {
            status: ok(),
            message_queues,
        }))
    }
    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, GStatus> {
        Ok(Response::new(HeartbeatResponse { status: ok() }))
    }
    async fn query_assignment(
        &self,
        _: Request<QueryAssignmentRequest>,
    ) -> Result<Response<QueryAssignmentResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    type ReceiveMessageStream = Stream<ReceiveMessageResponse>;
    async fn receive_message(
        &self,
        _: Request<ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    async fn ack_message(
        &self,
        _: Request<AckMessageRequest>,
    ) -> Result<Response<AckMessageResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    async fn forward_message_to_dead_letter_queue(
        &self,
        _: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    type PullMessageStream = Stream<PullMessageResponse>;
    async fn pull_message(
        &self,
        _: Request<PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    async fn update_offset(
        &self,
        _: Request<UpdateOffsetRequest>,
    ) -> Result<Response<UpdateOffsetResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    async fn get_offset(
        &self,
        _: Request<GetOffsetRequest>,
    ) -> Result<Response<GetOffsetResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    async fn query_offset(
        &self,
        _: Request<QueryOffsetRequest>,
    ) -> Result<Response<QueryOffsetResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    async fn end_transaction(
        &self,
        _: Request<EndTransactionRequest>,
    ) -> Result<Response<EndTransactionResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    type TelemetryStream = Stream<TelemetryCommand>;
    async fn telemetry(
        &self,
        r: Request<tonic::Streaming<TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, GStatus> {
        use tokio_stream::StreamExt;
        // Settings in, the same settings back with OK: what a client waits for.
        let out = r.into_inner().filter_map(|c| match c {
            Ok(TelemetryCommand {
                command: Some(telemetry_command::Command::Settings(s)),
                ..
            }) => Some(Ok(TelemetryCommand {
                status: ok(),
                command: Some(telemetry_command::Command::Settings(s)),
            })),
            _ => None,
        });
        Ok(Response::new(Box::pin(out)))
    }
    async fn notify_client_termination(
        &self,
        _: Request<NotifyClientTerminationRequest>,
    ) -> Result<Response<NotifyClientTerminationResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    async fn change_invisible_duration(
        &self,
        _: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    async fn recall_message(
        &self,
        _: Request<RecallMessageRequest>,
    ) -> Result<Response<RecallMessageResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
    async fn sync_lite_subscription(
        &self,
        _: Request<SyncLiteSubscriptionRequest>,
    ) -> Result<Response<SyncLiteSubscriptionResponse>, GStatus> {
        Err(GStatus::unimplemented("echo"))
    }
}

pub async fn serve_echo(port: u16) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            MessagingServiceServer::new(Echo { port }).max_decoding_message_size(256 << 20),
        )
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .map_err(|e| e.to_string())
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
