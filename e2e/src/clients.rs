//! The official Rust client (`rocketmq` 5.x) set up as a user would, for the end-to-end tests.

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::{Producer, SimpleConsumer};
use std::time::Duration;

/// A started producer for `topic` through the proxy at `url` (5 s request timeout).
pub async fn producer(url: &str, topic: &str) -> Producer {
    let mut copt = ClientOption::default();
    copt.set_access_url(url);
    copt.set_timeout(Duration::from_secs(5));
    let mut o = ProducerOption::default();
    o.set_topics(vec![topic]);
    let mut p = Producer::new(o, copt).expect("producer");
    p.start().await.expect("producer start");
    p
}

/// A started simple consumer of `group` on `topic`; `long_poll` must leave the client's request
/// timeout room (the proxy refuses a long poll its deadline cannot hold).
pub async fn simple_consumer(
    url: &str,
    group: &str,
    topic: &str,
    long_poll: Duration,
) -> SimpleConsumer {
    let mut copt = ClientOption::default();
    copt.set_access_url(url);
    copt.set_long_polling_timeout(long_poll);
    let mut o = SimpleConsumerOption::default();
    o.set_consumer_group(group);
    o.set_topics(vec![topic]);
    let mut c = SimpleConsumer::new(o, copt).expect("consumer");
    c.start().await.expect("consumer start");
    c
}
