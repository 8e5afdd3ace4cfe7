//! kill -9 of a SYNC_FLUSH store in the middle of a send stream loses no acknowledged message.

use rmq_e2e::Standalone;
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_flush_kill9_mid_stream_loses_no_acked_message() {
    let mut s = Standalone::start(&[
        "--set",
        "flushDiskType=SYNC_FLUSH",
        "--set",
        "mappedFileSizeCommitLog=262144",
    ]);
    s.create_topic("Durable", &[]);
    let url = s.access_url();
    let acked: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let mut senders = Vec::new();
    for w in 0..4u8 {
        let acked = acked.clone();
        let url = url.clone();
        senders.push(tokio::spawn(async move {
            let mut copt = ClientOption::default();
            copt.set_access_url(url);
            copt.set_timeout(Duration::from_secs(2));
            let mut o = ProducerOption::default();
            o.set_topics(vec!["Durable"]);
            let mut p = Producer::new(o, copt).unwrap();
            p.start().await.unwrap();
            for i in 0..100_000u32 {
                let body = format!("w{w}-{i}-")
                    .repeat(1 + (i % 40) as usize)
                    .into_bytes();
                let msg = MessageBuilder::builder()
                    .set_topic("Durable")
                    .set_body(body.clone())
                    .build()
                    .unwrap();
                match tokio::time::timeout(Duration::from_secs(3), p.send(msg)).await {
                    Ok(Ok(r)) => {
                        acked
                            .lock()
                            .unwrap()
                            .insert(r.message_id().to_string(), body);
                    }
                    _ => break,
                }
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < 400 && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.proc.kill9();
    for t in senders {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 400,
        "the stream was running when killed ({} acked)",
        acked.len()
    );

    s.restart();
    let mut copt = ClientOption::default();
    copt.set_access_url(s.access_url());
    copt.set_long_polling_timeout(Duration::from_secs(8));
    let mut o = SimpleConsumerOption::default();
    o.set_consumer_group("DurableReader");
    o.set_topics(vec!["Durable"]);
    let mut c = SimpleConsumer::new(o, copt).unwrap();
    c.start().await.unwrap();
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut empty_rounds = 0;
    while Instant::now() < deadline && empty_rounds < 2 {
        let got = c
            .receive_with(
                "Durable",
                &FilterExpression::new(FilterType::Tag, "*"),
                32,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        if got.is_empty() {
            empty_rounds += 1;
        }
        for m in got {
            seen.insert(m.message_id().to_string(), m.body().to_vec());
            c.ack(&m).await.unwrap();
        }
    }
    let missing: Vec<&String> = acked.keys().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost after kill -9, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    for (id, body) in &acked {
        assert_eq!(seen.get(id), Some(body), "message {id} delivered intact");
    }
    eprintln!(
        "acked {} before kill -9, delivered {} after restart",
        acked.len(),
        seen.len()
    );
}
