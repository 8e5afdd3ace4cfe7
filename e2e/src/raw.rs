//! A raw v2 client (our generated stubs) for what the official clients cannot express:
//! missing headers, malformed requests, acks through another proxy.

use rmq_proto::v2::messaging_service_client::MessagingServiceClient;
use rmq_proto::v2::*;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

pub async fn connect(access_url: &str) -> MessagingServiceClient<Channel> {
    MessagingServiceClient::connect(format!("http://{access_url}"))
        .await
        .expect("connect")
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024)
}

/// A request carrying the headers an SDK of `language` would send.
pub fn req<T>(body: T, language: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut()
        .insert("x-mq-client-id", "raw-test-client".parse().expect("ascii"));
    r.metadata_mut()
        .insert("x-mq-language", language.parse().expect("ascii"));
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

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub fn message(topic: &str, body: &[u8]) -> Message {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Message {
        topic: resource(topic),
        user_properties: Default::default(),
        system_properties: Some(SystemProperties {
            message_id: format!("01RAW{:016X}{seq:08X}", now.as_nanos() as u64),
            message_type: MessageType::Normal as i32,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: 0,
            }),
            born_host: "127.0.0.1".into(),
            body_encoding: Encoding::Identity as i32,
            ..Default::default()
        }),
        body: body.to_vec().into(),
    }
}

pub fn duration_ms(ms: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// Collects a ReceiveMessage stream into (status, messages, saw delivery timestamp).
pub async fn receive(
    client: &mut MessagingServiceClient<Channel>,
    r: tonic::Request<ReceiveMessageRequest>,
) -> (Status, Vec<Message>, bool) {
    let mut stream = client
        .receive_message(r)
        .await
        .expect("receive rpc")
        .into_inner();
    let mut status = None;
    let mut msgs = Vec::new();
    let mut ts = false;
    while let Some(item) = stream.message().await.expect("stream item") {
        match item.content.expect("every response has content") {
            receive_message_response::Content::Status(s) => status = Some(s),
            receive_message_response::Content::Message(m) => msgs.push(m),
            receive_message_response::Content::DeliveryTimestamp(_) => ts = true,
        }
    }
    (status.expect("a status"), msgs, ts)
}
