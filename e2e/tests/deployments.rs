//! `rmq namesrv` + `rmq store` + two `rmq proxy` processes: send through one proxy, receive
//! through the other, ack through the first. Receipt handles carry everything a proxy needs.

use rmq_e2e::raw::{self, duration_ms, req, resource};
use rmq_e2e::{PortSlot, Proc, mqadmin, wait_port, wait_route};
use rmq_proto::v2::*;
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use std::time::Duration;

struct ThreeRoles {
    slot: PortSlot,
    _dir: tempfile::TempDir,
    _procs: Vec<Proc>,
}

impl ThreeRoles {
    fn start() -> Self {
        let slot = PortSlot::acquire();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ns = slot.port(0);
        let store_port = slot.port(1);
        std::fs::write(d.join("namesrv.properties"), format!("listenPort={ns}\n")).unwrap();
        std::fs::write(
            d.join("broker.properties"),
            format!(
                "brokerClusterName = DefaultCluster\nbrokerName = broker-a\nbrokerId = 0\nlistenPort = {store_port}\n\
                 brokerIP1 = 127.0.0.1\nstorePathRootDir = {}\nnamesrvAddr = 127.0.0.1:{ns}\nmetricsPromExporterPort = {}\n",
                d.join("store").display(),
                slot.port(5)
            ),
        )
        .unwrap();
        let proxy_json = |grpc: u16, metrics: u16| {
            format!(
                "{{\"rocketMQClusterName\": \"DefaultCluster\", \"namesrvAddr\": \"127.0.0.1:{ns}\", \"grpcServerPort\": {grpc}, \"metricsPromExporterPort\": {metrics}}}"
            )
        };
        std::fs::write(
            d.join("proxy-a.json"),
            proxy_json(slot.port(3), slot.port(6)),
        )
        .unwrap();
        std::fs::write(
            d.join("proxy-b.json"),
            proxy_json(slot.port(4), slot.port(7)),
        )
        .unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let ns_p = Proc::spawn(
            "namesrv",
            &s(&["namesrv", "--bind", "127.0.0.1", "-c", "namesrv.properties"]),
            d,
            d,
        );
        wait_port(ns, &ns_p);
        let store_p = Proc::spawn(
            "store",
            &s(&["store", "--bind", "127.0.0.1", "-c", "broker.properties"]),
            d,
            d,
        );
        wait_port(store_port, &store_p);
        let pa = Proc::spawn(
            "proxy-a",
            &s(&["proxy", "--bind", "127.0.0.1", "-pc", "proxy-a.json"]),
            d,
            d,
        );
        let pb = Proc::spawn(
            "proxy-b",
            &s(&["proxy", "--bind", "127.0.0.1", "-pc", "proxy-b.json"]),
            d,
            d,
        );
        wait_port(slot.port(3), &pa);
        wait_port(slot.port(4), &pb);
        Self {
            slot,
            _dir: dir,
            _procs: vec![ns_p, store_p, pa, pb],
        }
    }

    fn namesrv(&self) -> String {
        format!("127.0.0.1:{}", self.slot.port(0))
    }

    fn proxy(&self, i: u16) -> String {
        format!("127.0.0.1:{}", self.slot.port(3 + i))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_via_one_proxy_receive_via_other_ack_via_first() {
    let c = ThreeRoles::start();
    let out = mqadmin(
        &c.namesrv(),
        &["updateTopic", "-c", "DefaultCluster", "-t", "Split"],
    );
    assert!(out.contains("create topic to 127.0.0.1:"), "{out}");
    wait_route(&c.namesrv(), "Split");

    // Official Rust client: produce through proxy A, consume and ack through proxy B.
    let mut copt = ClientOption::default();
    copt.set_access_url(c.proxy(0));
    let mut po = ProducerOption::default();
    po.set_topics(vec!["Split"]);
    let mut p = Producer::new(po, copt).unwrap();
    p.start().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let r = p
            .send(
                MessageBuilder::builder()
                    .set_topic("Split")
                    .set_body(vec![i; 8])
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
        ids.push(r.message_id().to_string());
    }
    let mut copt_b = ClientOption::default();
    copt_b.set_access_url(c.proxy(1));
    copt_b.set_long_polling_timeout(Duration::from_secs(8));
    let mut so = SimpleConsumerOption::default();
    so.set_consumer_group("SplitGroup");
    so.set_topics(vec!["Split"]);
    let mut sc = SimpleConsumer::new(so, copt_b).unwrap();
    sc.start().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        for m in sc
            .receive_with(
                "Split",
                &FilterExpression::new(FilterType::Tag, "*"),
                32,
                Duration::from_secs(30),
            )
            .await
            .unwrap()
        {
            sc.ack(&m).await.unwrap();
            got.push(m.message_id().to_string());
        }
        if got.len() == ids.len() {
            break;
        }
    }
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every message sent through A arrives through B");

    // Raw client: receive through B, ack through A with B's handle.
    let mut a = raw::connect(&c.proxy(0)).await;
    let mut b = raw::connect(&c.proxy(1)).await;
    let sent = a
        .send_message(req(
            SendMessageRequest {
                messages: vec![raw::message("Split", b"cross")],
            },
            "PYTHON",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.status.unwrap().code, Code::Ok as i32);
    let recv = ReceiveMessageRequest {
        group: resource("CrossGroup"),
        message_queue: Some(MessageQueue {
            topic: resource("Split"),
            id: -1,
            broker: Some(Broker {
                name: "broker-a".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        filter_expression: Some(rmq_proto::v2::FilterExpression {
            r#type: rmq_proto::v2::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 32,
        invisible_duration: duration_ms(60_000),
        auto_renew: false,
        long_polling_timeout: duration_ms(5000),
        attempt_id: None,
    };
    let (st, msgs, _) = raw::receive(&mut b, req(recv.clone(), "PYTHON")).await;
    assert_eq!(st.code, Code::Ok as i32);
    assert_eq!(msgs.len(), 6, "a new group starts from the first message");
    for m in &msgs {
        let sp = m.system_properties.as_ref().unwrap();
        let ack = AckMessageRequest {
            group: resource("CrossGroup"),
            topic: resource("Split"),
            entries: vec![AckMessageEntry {
                message_id: sp.message_id.clone(),
                receipt_handle: sp.receipt_handle.clone().unwrap(),
                lite_topic: None,
            }],
        };
        let r = a
            .ack_message(req(ack, "PYTHON"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status.unwrap().code,
            Code::Ok as i32,
            "proxy A acks what proxy B delivered"
        );
    }
    let progress = mqadmin(&c.namesrv(), &["consumerProgress", "-g", "CrossGroup"]);
    assert!(
        progress.contains("Consume Diff Total: 0")
            && progress.contains("Consume Inflight Total: 0"),
        "{progress}"
    );
    assert!(p.shutdown().await.is_ok());
    assert!(sc.shutdown().await.is_ok());
}
