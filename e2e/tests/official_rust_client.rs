//! The official Rust client (`rocketmq` 5.0.0) against `rmq standalone`: what a user checks.

use rmq_e2e::Standalone;
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn client_option(url: &str) -> ClientOption {
    let mut c = ClientOption::default();
    c.set_access_url(url);
    c.set_long_polling_timeout(Duration::from_secs(8));
    c
}

async fn producer(url: &str, topic: &str) -> Producer {
    let mut o = ProducerOption::default();
    o.set_topics(vec![topic]);
    let mut p = Producer::new(o, client_option(url)).expect("producer");
    p.start().await.expect("producer start");
    p
}

async fn consumer(url: &str, group: &str, topic: &str) -> SimpleConsumer {
    let mut o = SimpleConsumerOption::default();
    o.set_consumer_group(group);
    o.set_topics(vec![topic]);
    let mut c = SimpleConsumer::new(o, client_option(url)).expect("consumer");
    c.start().await.expect("consumer start");
    c
}

/// Receives until `want` messages arrived or `budget` passed; acks them when `ack`.
async fn receive_n(
    c: &SimpleConsumer,
    topic: &str,
    expr: &str,
    want: usize,
    budget: Duration,
    ack: bool,
) -> Vec<rocketmq::model::message::MessageView> {
    let deadline = Instant::now() + budget;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        let got = c
            .receive_with(
                topic,
                &FilterExpression::new(FilterType::Tag, expr),
                32,
                Duration::from_secs(30),
            )
            .await
            .expect("receive");
        for m in got {
            if ack {
                c.ack(&m).await.expect("ack");
            }
            out.push(m);
        }
    }
    out
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_round_trip_and_ids_match() {
    let s = Standalone::start(&[]);
    s.create_topic("RoundTrip", &[]);
    let url = s.access_url();
    let p = producer(&url, "RoundTrip").await;
    let body: Vec<u8> = (0..64 * 1024).map(|i| (i % 256) as u8).collect();
    let mut props = HashMap::new();
    props.insert("color", "blue");
    props.insert("size", "L");
    let t0 = now_s();
    let msg = MessageBuilder::builder()
        .set_topic("RoundTrip")
        .set_tag("TagA")
        .set_keys(vec!["key-1", "key-2"])
        .set_properties(props)
        .set_body(body.clone())
        .build()
        .unwrap();
    let receipt = p.send(msg).await.expect("send");
    let batch: Vec<_> = (0..3)
        .map(|i| {
            MessageBuilder::builder()
                .set_topic("RoundTrip")
                .set_tag("TagB")
                .set_body(vec![i; 10])
                .build()
                .unwrap()
        })
        .collect();
    let batch_ids: Vec<String> = p
        .batch_send(batch)
        .await
        .expect("batch send")
        .iter()
        .map(|r| r.message_id().to_string())
        .collect();
    assert_eq!(batch_ids.len(), 3);

    let c = consumer(&url, "GroupRoundTrip", "RoundTrip").await;
    let got = receive_n(&c, "RoundTrip", "*", 4, Duration::from_secs(30), true).await;
    assert_eq!(got.len(), 4, "every message delivered once");
    let m = got
        .iter()
        .find(|m| m.message_id() == receipt.message_id())
        .expect("message id equals the send receipt's");
    assert_eq!(m.body(), &body[..]);
    assert_eq!(m.tag(), Some("TagA"));
    let keys: HashSet<&str> = m.keys().iter().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["key-1", "key-2"]));
    assert_eq!(
        m.properties().get("color").map(String::as_str),
        Some("blue")
    );
    assert_eq!(m.properties().get("size").map(String::as_str), Some("L"));
    assert_eq!(
        m.properties().len(),
        2,
        "no system property leaks into user properties"
    );
    assert_eq!(m.delivery_attempt(), 1);
    assert!(
        (t0 - 2..=now_s() + 1).contains(&m.born_timestamp()),
        "born timestamp {} near {t0}",
        m.born_timestamp()
    );
    assert!(!m.born_host().is_empty());
    let got_ids: HashSet<&str> = got.iter().map(|m| m.message_id()).collect();
    for id in &batch_ids {
        assert!(
            got_ids.contains(id.as_str()),
            "batch message {id} delivered"
        );
    }
    assert!(p.shutdown().await.is_ok(), "producer shutdown returns Ok");
    assert!(c.shutdown().await.is_ok(), "consumer shutdown returns Ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_message_returns_with_attempt_two_and_new_handle() {
    let s = Standalone::start(&[]);
    s.create_topic("Redeliver", &[]);
    let url = s.access_url();
    let p = producer(&url, "Redeliver").await;
    let id = p
        .send(
            MessageBuilder::builder()
                .set_topic("Redeliver")
                .set_body(b"again".to_vec())
                .build()
                .unwrap(),
        )
        .await
        .unwrap()
        .message_id()
        .to_string();
    let c = consumer(&url, "GroupRedeliver", "Redeliver").await;
    let expr = FilterExpression::new(FilterType::Tag, "*");
    let first = c
        .receive_with("Redeliver", &expr, 16, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].delivery_attempt(), 1);
    let popped_at = Instant::now();
    let mut second = Vec::new();
    while second.is_empty() && popped_at.elapsed() < Duration::from_secs(40) {
        second = c
            .receive_with("Redeliver", &expr, 16, Duration::from_secs(10))
            .await
            .unwrap();
    }
    assert!(
        popped_at.elapsed() >= Duration::from_secs(9),
        "not redelivered before its invisible time"
    );
    assert_eq!(second.len(), 1, "redelivered after the invisible duration");
    assert_eq!(second[0].message_id(), id);
    assert_eq!(second[0].delivery_attempt(), 2);
    assert!(
        c.ack(&first[0]).await.is_err(),
        "the superseded handle no longer acks"
    );
    c.ack(&second[0]).await.expect("the new handle acks");
    let third = c
        .receive_with("Redeliver", &expr, 16, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(third.is_empty(), "an acked message does not come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_and_two_groups() {
    let s = Standalone::start(&[]);
    s.create_topic("Tags", &[]);
    let url = s.access_url();
    let p = producer(&url, "Tags").await;
    let mut sent = HashMap::new();
    for (i, tag) in ["A", "B", "C", "A", "C"].iter().enumerate() {
        let r = p
            .send(
                MessageBuilder::builder()
                    .set_topic("Tags")
                    .set_tag(*tag)
                    .set_body(vec![i as u8; 4])
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
        sent.insert(r.message_id().to_string(), *tag);
    }
    let all = consumer(&url, "GroupAll", "Tags").await;
    let got_all = receive_n(&all, "Tags", "*", 5, Duration::from_secs(30), true).await;
    let ids: HashSet<String> = got_all.iter().map(|m| m.message_id().to_string()).collect();
    assert_eq!(
        ids,
        sent.keys().cloned().collect::<HashSet<_>>(),
        "'*' gets every message"
    );

    let ab = consumer(&url, "GroupAB", "Tags").await;
    let got_ab = receive_n(&ab, "Tags", "A||B", 3, Duration::from_secs(30), true).await;
    assert_eq!(got_ab.len(), 3, "A||B gets the three A and B messages");
    assert!(
        got_ab
            .iter()
            .all(|m| matches!(m.tag(), Some("A") | Some("B")))
    );
    let extra = ab
        .receive_with(
            "Tags",
            &FilterExpression::new(FilterType::Tag, "A||B"),
            32,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(
        extra.is_empty(),
        "C messages are never delivered to an A||B subscription"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_body_is_refused_without_a_panic() {
    let s = Standalone::start(&[]);
    s.create_topic("Empty", &[]);
    let p = producer(&s.access_url(), "Empty").await;
    let r = p
        .send(
            MessageBuilder::builder()
                .set_topic("Empty")
                .set_body(vec![])
                .build()
                .unwrap(),
        )
        .await;
    assert!(r.is_err(), "an empty body is refused");
    let ok = p
        .send(
            MessageBuilder::builder()
                .set_topic("Empty")
                .set_body(vec![1])
                .build()
                .unwrap(),
        )
        .await;
    assert!(ok.is_ok(), "the server keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_fails_producer_start() {
    let s = Standalone::start(&[]);
    let mut o = ProducerOption::default();
    o.set_topics(vec!["NoSuchTopic"]);
    let mut p = Producer::new(o, client_option(&s.access_url())).unwrap();
    assert!(
        p.start().await.is_err(),
        "TOPIC_NOT_FOUND surfaces at start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_topic_enable_behaves_as_configured() {
    let s = Standalone::start(&[
        "--set",
        "autoCreateTopicEnable=true",
        "--set",
        "defaultTopicQueueNums=4",
    ]);
    let p = producer(&s.access_url(), "AutoCreated").await;
    p.send(
        MessageBuilder::builder()
            .set_topic("AutoCreated")
            .set_body(b"x".to_vec())
            .build()
            .unwrap(),
    )
    .await
    .expect("send to an auto-created topic");
    let route = s.mqadmin(&["topicRoute", "-t", "AutoCreated"]);
    assert!(
        route.contains("\"readQueueNums\":4"),
        "created with defaultTopicQueueNums: {route}"
    );
}
