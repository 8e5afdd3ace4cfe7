"""The official Python client (rocketmq-python-client 5.x) against `rmq standalone`."""
import time
import uuid

import pytest
from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression, Message,
                      MessageListener, Producer, PushConsumer, SimpleConsumer)

FOUR_MIB = 4 * 1024 * 1024


def config(server):
    return ClientConfiguration(server.endpoint, Credentials(), request_timeout=10)


def message(topic, body, tag=None, keys=None, props=None):
    m = Message()
    m.topic = topic
    m.body = body
    if tag:
        m.tag = tag
    if keys:
        m.keys = keys
    for k, v in (props or {}).items():
        m.add_property(k, v)
    return m


def receive_all(consumer, want, budget=30, invisible=15, ack=True):
    got = []
    deadline = time.time() + budget
    while len(got) < want and time.time() < deadline:
        for m in consumer.receive(32, invisible):
            got.append(m)
            if ack:
                consumer.ack(m)
    return got


def test_four_mib_body_and_fields_round_trip(server, topic):
    producer = Producer(config(server), (topic,))
    producer.startup()
    try:
        body = bytes(range(256)) * (FOUR_MIB // 256)
        assert len(body) == FOUR_MIB
        before = int(time.time() * 1000)
        receipt = producer.send(message(topic, body, tag="Big", keys="k-1", props={"origin": "py"}))
        with pytest.raises(Exception):
            producer.send(message(topic, body + b"x"))
    finally:
        producer.shutdown()
    consumer = SimpleConsumer(config(server), "PyGroupBig", {topic: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    try:
        got = receive_all(consumer, 1)
        assert len(got) == 1
        m = got[0]
        assert m.message_id == receipt.message_id
        assert m.body == body
        assert m.tag == "Big"
        assert m.keys == {"k-1"}
        assert m.properties == {"origin": "py"}
        assert m.delivery_attempt == 1
        assert not m.corrupted, "MD5 digest matches the body"
        assert before - 2000 <= m.born_timestamp <= int(time.time() * 1000) + 1000
        store_ts = m._Message__store_timestamp
        assert store_ts is not None and m.born_timestamp - 1000 <= store_ts <= int(time.time() * 1000) + 1000
    finally:
        consumer.shutdown()


def test_change_invisible_duration_and_redelivery(server, topic):
    producer = Producer(config(server), (topic,))
    producer.startup()
    receipt = producer.send(message(topic, b"later"))
    producer.shutdown()
    consumer = SimpleConsumer(config(server), "PyGroupInvisible", {topic: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    try:
        first = receive_all(consumer, 1, ack=False, invisible=10)
        assert len(first) == 1 and first[0].delivery_attempt == 1
        old_handle = first[0].receipt_handle
        consumer.change_invisible_duration(first[0], 30)
        assert first[0].receipt_handle != old_handle, "a new handle"
        # Extended to 30 s: not visible again 12 s after the pop (it would be at 10 s otherwise).
        time.sleep(12)
        assert receive_all(consumer, 1, budget=1, ack=False) == []
        consumer.change_invisible_duration(first[0], 1)
        again = receive_all(consumer, 1, ack=False)
        assert len(again) == 1
        assert again[0].message_id == receipt.message_id
        assert again[0].delivery_attempt == 2
        consumer.ack(again[0])
    finally:
        consumer.shutdown()


def test_two_groups_and_tag_filters(server, topic):
    producer = Producer(config(server), (topic,))
    producer.startup()
    ids = {}
    for tag in ["A", "B", "C"]:
        ids[producer.send(message(topic, tag.encode(), tag=tag)).message_id] = tag
    producer.shutdown()
    for group, expr, want in [("PyAll", "*", {"A", "B", "C"}), ("PyAB", "A||B", {"A", "B"})]:
        c = SimpleConsumer(config(server), group, {topic: FilterExpression(expr)}, await_duration=5)
        c.startup()
        try:
            got = receive_all(c, len(want))
            assert {m.tag for m in got} == want
            assert all(ids[m.message_id] == m.tag for m in got)
        finally:
            c.shutdown()


def test_push_consumer_gets_every_message(server, topic):
    received = {}

    class Listener(MessageListener):
        def consume(self, msg):
            received[msg.message_id] = msg.body
            return ConsumeResult.SUCCESS

    push = PushConsumer(config(server), "PyPush", Listener(), {topic: FilterExpression("*")})
    push.startup()
    producer = Producer(config(server), (topic,))
    producer.startup()
    try:
        sent = {producer.send(message(topic, f"push-{i}".encode())).message_id: f"push-{i}".encode() for i in range(20)}
        deadline = time.time() + 30
        while len(received) < len(sent) and time.time() < deadline:
            time.sleep(0.1)
        assert received == sent
    finally:
        producer.shutdown()
        push.shutdown()
