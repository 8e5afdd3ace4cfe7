//! Every validation of grpc-protocol §7.4/§7.5 answers its code; the server stays up and stores
//! nothing from a refused request.

use rmq_e2e::Standalone;
use rmq_e2e::raw::{self, duration_ms, message, req, resource};
use rmq_proto::v2::*;
use std::collections::HashMap;

async fn send_code(
    c: &mut messaging_service_client::MessagingServiceClient<tonic::transport::Channel>,
    msgs: Vec<Message>,
    lang: &str,
) -> i32 {
    let r = c
        .send_message(req(SendMessageRequest { messages: msgs }, lang))
        .await
        .expect("rpc")
        .into_inner();
    let top = r.status.expect("status").code;
    assert!(
        !r.entries.is_empty(),
        "never an empty entry list (Rust indexes [0])"
    );
    top
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_validation_table() {
    let s = Standalone::start(&[]);
    s.create_topic("Bad", &[]);
    s.create_topic("FifoOnly", &["-a", "+message.type=FIFO"]);
    s.create_topic("ReadOnly", &["-p", "4"]);
    let mut c = raw::connect(&s.access_url()).await;
    let py = "PYTHON";
    let base = || message("Bad", b"payload");

    let mut no_id = tonic::Request::new(SendMessageRequest {
        messages: vec![base()],
    });
    no_id
        .metadata_mut()
        .insert("x-mq-language", "PYTHON".parse().unwrap());
    let r = c.send_message(no_id).await.unwrap().into_inner();
    assert_eq!(
        r.status.unwrap().code,
        Code::ClientIdRequired as i32,
        "missing x-mq-client-id"
    );

    let mut cases: Vec<(&str, Vec<Message>, Code)> =
        vec![("no messages", vec![], Code::MessageCorrupted)];
    cases.push((
        "mixed topics",
        vec![base(), message("Other", b"x")],
        Code::MessageCorrupted,
    ));
    cases.push((
        "illegal topic",
        vec![message("bad topic", b"x")],
        Code::IllegalTopic,
    ));
    cases.push((
        "system topic",
        vec![message("rmq_sys_X", b"x")],
        Code::IllegalTopic,
    ));
    cases.push((
        "unknown topic",
        vec![message("NoSuchTopic", b"x")],
        Code::TopicNotFound,
    ));
    cases.push((
        "empty body",
        vec![message("Bad", b"")],
        Code::MessageBodyEmpty,
    ));
    cases.push((
        "body > 4 MiB",
        vec![message("Bad", &vec![7u8; 4 * 1024 * 1024 + 1])],
        Code::MessageBodyTooLarge,
    ));
    let mut m = base();
    m.user_properties = (0..129)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect::<HashMap<_, _>>();
    cases.push(("129 properties", vec![m], Code::MessagePropertiesTooLarge));
    let mut m = base();
    m.user_properties
        .insert("big".into(), "x".repeat(17 * 1024));
    cases.push((
        "properties > 16 KiB",
        vec![m],
        Code::MessagePropertiesTooLarge,
    ));
    let mut m = base();
    m.user_properties.insert("UNIQ_KEY".into(), "x".into());
    cases.push((
        "reserved property key",
        vec![m],
        Code::IllegalMessagePropertyKey,
    ));
    let mut m = base();
    m.user_properties.insert("k".into(), "a\u{1}b".into());
    cases.push((
        "control character in property",
        vec![m],
        Code::IllegalMessagePropertyKey,
    ));
    let mut m = base();
    m.system_properties.as_mut().unwrap().tag = Some("A|B".into());
    cases.push(("tag with |", vec![m], Code::IllegalMessageTag));
    let mut m = base();
    m.system_properties.as_mut().unwrap().tag = Some("  ".into());
    cases.push(("blank tag", vec![m], Code::IllegalMessageTag));
    let mut m = base();
    m.system_properties.as_mut().unwrap().keys = vec![" ".into()];
    cases.push(("blank key", vec![m], Code::IllegalMessageKey));
    let mut m = base();
    m.system_properties.as_mut().unwrap().message_id = " ".into();
    cases.push(("blank message id", vec![m], Code::IllegalMessageId));
    let mut m = base();
    m.system_properties
        .as_mut()
        .unwrap()
        .orphaned_transaction_recovery_duration = duration_ms(3_600_001);
    cases.push(("orphan recovery > 1 h", vec![m], Code::BadRequest));
    let mut m = base();
    let sp = m.system_properties.as_mut().unwrap();
    sp.message_type = MessageType::Delay as i32;
    sp.delivery_timestamp = Some(prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    });
    cases.push(("delivery time > 1 day", vec![m], Code::IllegalDeliveryTime));
    let mut m = message("FifoOnly", b"x");
    let sp = m.system_properties.as_mut().unwrap();
    sp.message_type = MessageType::Fifo as i32;
    sp.message_group = Some("g".repeat(64));
    cases.push((
        "message group of 64 bytes",
        vec![m],
        Code::IllegalMessageGroup,
    ));
    cases.push((
        "NORMAL message to a FIFO topic",
        vec![message("FifoOnly", b"x")],
        Code::MessagePropertyConflictWithType,
    ));
    cases.push((
        "no writable queue",
        vec![message("ReadOnly", b"x")],
        Code::Forbidden,
    ));

    for (name, msgs, want) in cases {
        assert_eq!(send_code(&mut c, msgs, py).await, want as i32, "{name}");
    }
    // Codes the Rust 5.0.0 client does not know are mapped to ones it does.
    let rust = req(
        SendMessageRequest {
            messages: vec![message("Bad", b"")],
        },
        "RUST",
    );
    let mut rust = rust;
    rust.metadata_mut()
        .insert("x-mq-client-version", "5.0.0".parse().unwrap());
    let r = c.send_message(rust).await.unwrap().into_inner();
    assert_eq!(
        r.status.unwrap().code,
        Code::BadRequest as i32,
        "MESSAGE_BODY_EMPTY becomes BAD_REQUEST for Rust 5.0.0"
    );

    let out = s.mqadmin(&["topicStatus", "-t", "Bad"]);
    assert!(
        out.lines()
            .skip(1)
            .filter(|l| l.starts_with("broker-a"))
            .all(|l| l.split_whitespace().nth(3) == Some("0")),
        "nothing stored:\n{out}"
    );
    let ok = send_code(&mut c, vec![base()], py).await;
    assert_eq!(ok, Code::Ok as i32, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_ack_and_invisibility_validation() {
    let s = Standalone::start(&[]);
    s.create_topic("Recv", &[]);
    let mut c = raw::connect(&s.access_url()).await;
    let mq = |topic: &str| {
        Some(MessageQueue {
            topic: resource(topic),
            id: -1,
            broker: Some(Broker {
                name: "broker-a".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let recv = |group: &str, topic: &str, invisible: Option<i64>, filter: FilterExpression| {
        ReceiveMessageRequest {
            group: resource(group),
            message_queue: mq(topic),
            filter_expression: Some(filter),
            batch_size: 16,
            invisible_duration: invisible.and_then(duration_ms),
            auto_renew: false,
            long_polling_timeout: duration_ms(5000),
            attempt_id: None,
        }
    };
    let tag = |e: &str| FilterExpression {
        r#type: FilterType::Tag as i32,
        expression: e.into(),
    };
    let cases = [
        (
            "bad group",
            recv("bad group", "Recv", Some(30_000), tag("*")),
            Code::IllegalConsumerGroup,
        ),
        (
            "bad topic",
            recv("G", "bad topic", Some(30_000), tag("*")),
            Code::IllegalTopic,
        ),
        (
            "unknown topic",
            recv("G", "Nope", Some(30_000), tag("*")),
            Code::TopicNotFound,
        ),
        (
            "invisible 5 s",
            recv("G", "Recv", Some(5_000), tag("*")),
            Code::IllegalInvisibleTime,
        ),
        (
            "invisible 13 h",
            recv("G", "Recv", Some(13 * 3_600_000), tag("*")),
            Code::IllegalInvisibleTime,
        ),
        (
            "no invisible time",
            recv("G", "Recv", None, tag("*")),
            Code::IllegalInvisibleTime,
        ),
        (
            "malformed SQL92 filter",
            recv(
                "G",
                "Recv",
                Some(30_000),
                FilterExpression {
                    r#type: FilterType::Sql as i32,
                    expression: "a > 1 AND".into(),
                },
            ),
            Code::IllegalFilterExpression,
        ),
        (
            "empty tag alternative",
            recv("G", "Recv", Some(30_000), tag("A||")),
            Code::IllegalFilterExpression,
        ),
    ];
    for (name, r, want) in cases {
        let (st, msgs, ts) = raw::receive(&mut c, req(r, "PYTHON")).await;
        assert_eq!(st.code, want as i32, "{name}: {}", st.message);
        assert!(
            msgs.is_empty() && ts,
            "{name}: status then delivery timestamp, no messages"
        );
    }
    let mut short = req(recv("G", "Recv", Some(30_000), tag("*")), "PYTHON");
    short.set_timeout(std::time::Duration::from_millis(3000));
    let mut r = short.into_inner();
    r.long_polling_timeout = None;
    let mut short = req(r, "PYTHON");
    short.set_timeout(std::time::Duration::from_millis(3000));
    let (st, _, _) = raw::receive(&mut c, short).await;
    assert_eq!(
        st.code,
        Code::IllegalPollingTime as i32,
        "a 3 s deadline cannot long-poll"
    );

    let ack = |handle: &str| AckMessageRequest {
        group: resource("G"),
        topic: resource("Recv"),
        entries: vec![AckMessageEntry {
            message_id: "id".into(),
            receipt_handle: handle.into(),
            lite_topic: None,
        }],
    };
    for garbage in [
        "",
        "garbage",
        "1 2 3 4 5 broker-a x y z",
        "1 2 3 0 0 broker-a 0 0 0",
    ] {
        let r = c
            .ack_message(req(ack(garbage), "PYTHON"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status.unwrap().code,
            Code::InvalidReceiptHandle as i32,
            "ack {garbage:?}"
        );
        assert_eq!(r.entries.len(), 1);
    }
    let change = |handle: &str, ms: i64| ChangeInvisibleDurationRequest {
        group: resource("G"),
        topic: resource("Recv"),
        receipt_handle: handle.into(),
        invisible_duration: duration_ms(ms),
        message_id: "id".into(),
        lite_topic: None,
        suspend: None,
    };
    let r = c
        .change_invisible_duration(req(change("garbage", 1000), "PYTHON"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::InvalidReceiptHandle as i32);
    assert_eq!(
        r.receipt_handle, "garbage",
        "the request's handle is echoed on error"
    );
    let r = c
        .change_invisible_duration(req(change("garbage", 13 * 3_600_000), "PYTHON"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::IllegalInvisibleTime as i32);

    // A real delivery: ChangeInvisibleDuration has no 10 s minimum; the old handle dies.
    let sent = c
        .send_message(req(
            SendMessageRequest {
                messages: vec![message("Recv", b"hi")],
            },
            "PYTHON",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.status.unwrap().code, Code::Ok as i32);
    let (st, msgs, _) = raw::receive(
        &mut c,
        req(recv("G", "Recv", Some(30_000), tag("*")), "PYTHON"),
    )
    .await;
    assert_eq!(st.code, Code::Ok as i32);
    let h1 = msgs[0]
        .system_properties
        .as_ref()
        .unwrap()
        .receipt_handle
        .clone()
        .unwrap();
    let r = c
        .change_invisible_duration(req(change(&h1, 1000), "PYTHON"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    assert_ne!(r.receipt_handle, h1, "a new handle");
    let r2 = c
        .ack_message(req(ack(&h1), "PYTHON"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r2.status.unwrap().code,
        Code::InvalidReceiptHandle as i32,
        "the old handle is superseded"
    );
    let r3 = c
        .ack_message(req(ack(&r.receipt_handle), "PYTHON"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r3.status.unwrap().code, Code::Ok as i32);

    // Heartbeat and termination answer OK even for a client the proxy has no settings for.
    let hb = c
        .heartbeat(req(
            HeartbeatRequest {
                group: None,
                client_type: ClientType::Producer as i32,
            },
            "RUST",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.status.unwrap().code, Code::Ok as i32);
    let t = c
        .notify_client_termination(req(NotifyClientTerminationRequest { group: None }, "RUST"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.status.unwrap().code, Code::Ok as i32);
    let unimpl = c
        .pull_message(req(PullMessageRequest::default(), "RUST"))
        .await;
    assert_eq!(
        unimpl.err().map(|e| e.code()),
        Some(tonic::Code::Unimplemented)
    );
}
