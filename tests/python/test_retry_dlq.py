"""Retries and dead letters with the official Python push consumer against `rmq standalone`."""
import json
import threading
import time
import uuid
from collections import defaultdict

import pytest

from rocketmq import (ConsumeResult, FilterExpression, MessageListener, Producer, PushConsumer,
                      SimpleConsumer)

from test_python_client import config, message, receive_all

FAST_RETRIES = json.dumps({"type": "CUSTOMIZED", "customizedRetryPolicy": {"next": [1000, 1000, 1000]}})


class Recorder(MessageListener):
    """Fails `poison` bodies always and `flaky` ones on their first attempt."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attempts = defaultdict(list)

    def consume(self, msg):
        with self.lock:
            self.attempts[msg.message_id].append(msg.delivery_attempt)
        if msg.body.startswith(b"poison"):
            return ConsumeResult.FAILURE
        if msg.body.startswith(b"flaky") and msg.delivery_attempt == 1:
            return ConsumeResult.FAILURE
        return ConsumeResult.SUCCESS

    def seen(self):
        with self.lock:
            return {k: list(v) for k, v in self.attempts.items()}


def wait_for(cond, budget):
    deadline = time.time() + budget
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def read_dlq(server, group, want, budget=30):
    server.wait_route(f"%DLQ%{group}", budget)  # created with the first dead letter
    reader = SimpleConsumer(config(server), "PyDlqReader" + uuid.uuid4().hex[:6],
                            {f"%DLQ%{group}": FilterExpression("*")}, await_duration=5)
    reader.startup()
    try:
        return receive_all(reader, want, budget=budget)
    finally:
        reader.shutdown()


def send(server, topic, bodies):
    producer = Producer(config(server), (topic,))
    producer.startup()
    try:
        return {producer.send(message(topic, b, tag="T", props={"k": "v"})).message_id: b for b in bodies}
    finally:
        producer.shutdown()


def test_failed_messages_come_back_then_go_to_the_dlq(server, topic):
    group = "PyRetry" + uuid.uuid4().hex[:8]
    server.mqadmin("updateSubGroup", "-c", "DefaultCluster", "-g", group, "-r", "2", "-p", FAST_RETRIES)
    listener = Recorder()
    push = PushConsumer(config(server), group, listener, {topic: FilterExpression("*")})
    push.startup()
    try:
        sent = send(server, topic, [b"flaky-1", b"flaky-2", b"flaky-3", b"ok-1", b"ok-2", b"poison"])
        poison = next(i for i, b in sent.items() if b == b"poison")
        want = {i: ([1, 2] if b.startswith(b"flaky") else [1, 2, 3] if b == b"poison" else [1])
                for i, b in sent.items()}
        assert wait_for(lambda: listener.seen() == want, 60), listener.seen()
        # retryMaxTimes=2: three deliveries, then the DLQ; read there with id, body and properties.
        dlq = read_dlq(server, group, 1)
        assert len(dlq) == 1, dlq
        m = dlq[0]
        assert (m.message_id, m.body, m.tag, m.properties) == (poison, b"poison", "T", {"k": "v"})
        assert m.topic == f"%DLQ%{group}"
        # Never delivered to the group again.
        time.sleep(4)
        assert listener.seen() == want
    finally:
        push.shutdown()


def test_fifo_consumer_forwards_to_the_dlq(server, topic):
    # An orderly group: the client retries locally, then calls ForwardMessageToDeadLetterQueue.
    group = "PyFifoDlq" + uuid.uuid4().hex[:8]
    server.mqadmin("updateSubGroup", "-c", "DefaultCluster", "-g", group, "-o", "true", "-r", "1",
                   "-p", FAST_RETRIES)
    listener = Recorder()
    push = PushConsumer(config(server), group, listener, {topic: FilterExpression("*")})
    push.startup()
    try:
        sent = send(server, topic, [b"poison", b"ok-1"])
        poison = next(i for i, b in sent.items() if b == b"poison")
        dlq = read_dlq(server, group, 1, budget=40)
        assert [(m.message_id, m.body) for m in dlq] == [(poison, b"poison")]
        # Two local attempts (max attempts = retryMaxTimes + 1); the delivery itself was the first.
        assert wait_for(lambda: len(listener.seen().get(poison, [])) == 2, 10), listener.seen()
    finally:
        push.shutdown()


def test_sql92_filters_in_the_store(server, topic):
    from rocketmq.grpc_protocol import FilterType

    producer = Producer(config(server), (topic,))
    producer.startup()
    try:
        for i in range(10):
            props = {"a": str(i)}
            if i % 2 == 0:
                props["b"] = "set"
            producer.send(message(topic, f"m{i}".encode(), tag="T", props=props))
    finally:
        producer.shutdown()

    def bodies(expr, group, want):
        c = SimpleConsumer(config(server), group + uuid.uuid4().hex[:6],
                           {topic: FilterExpression(expr, FilterType.SQL)}, await_duration=5)
        c.startup()
        try:
            got = receive_all(c, want, budget=20)
            # Nothing else arrives: the rest were filtered out in the store.
            got += receive_all(c, 1, budget=2)
            return sorted(m.body.decode() for m in got)
        finally:
            c.shutdown()

    assert bodies("a > 5", "PySqlGt", 4) == ["m6", "m7", "m8", "m9"]
    # Apache: BETWEEN is inclusive; b is missing on the odd ones.
    assert bodies("a BETWEEN 2 AND 3 OR b IS NULL", "PySqlOr", 6) == ["m1", "m2", "m3", "m5", "m7", "m9"]
    assert bodies("TAGS = 'T' AND a IN ('0', '9')", "PySqlIn", 2) == ["m0", "m9"]

    bad = SimpleConsumer(config(server), "PySqlBad", {topic: FilterExpression("a >", FilterType.SQL)},
                         await_duration=5)
    bad.startup()
    try:
        with pytest.raises(Exception) as e:
            bad.receive(8, 15)
        assert "40010" in str(e.value), e.value  # ILLEGAL_FILTER_EXPRESSION
    finally:
        bad.shutdown()


def test_fifo_order_per_message_group_with_failures(server):
    topic = "PyFifo" + uuid.uuid4().hex[:8]
    server.create_topic(topic, "-a", "+message.type=FIFO")
    group = "PyFifoOrder" + uuid.uuid4().hex[:6]
    server.mqadmin("updateSubGroup", "-c", "DefaultCluster", "-g", group, "-o", "true", "-r", "3",
                   "-p", FAST_RETRIES)
    lock = threading.Lock()
    calls = defaultdict(int)
    done = defaultdict(list)   # message group -> indexes consumed successfully, in order

    class Listener(MessageListener):
        def consume(self, msg):
            g, i = msg.body.decode().split(":")
            with lock:
                calls[msg.message_id] += 1
                if int(i) % 10 == 3 and calls[msg.message_id] == 1:
                    return ConsumeResult.FAILURE   # retried by the client before anything after it
                done[g].append(int(i))
            return ConsumeResult.SUCCESS

    push = PushConsumer(config(server), group, Listener(), {topic: FilterExpression("*")})
    push.startup()
    producer = Producer(config(server), (topic,))
    producer.startup()
    try:
        for i in range(50):
            for g in ("gA", "gB"):
                m = message(topic, f"{g}:{i}".encode())
                m.message_group = g
                producer.send(m)
        assert wait_for(lambda: sum(len(v) for v in done.values()) >= 100, 60), dict(done)
        time.sleep(1)
        assert done["gA"] == list(range(50)), done["gA"]
        assert done["gB"] == list(range(50)), done["gB"]
    finally:
        producer.shutdown()
        push.shutdown()
