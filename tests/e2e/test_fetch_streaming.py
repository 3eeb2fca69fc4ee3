"""Large Fetch responses are streamed through the proxy as they arrive
(src/kafka/fetch_relay.rs). Every client must read back exactly the bytes
that were written, and the proxy must have taken the streaming path."""

import asyncio
import hashlib
import os

import pytest

from conftest import Proxy, aiokafka_consume_assigned, confluent_consume_assigned, metric, serve

N = 240  # 3 partitions x 80 records of 10-30 KiB: fetches well over 64 KiB


@pytest.fixture
def streaming_proxy(tansu, workdir):
    # Without capture: a captured response is decoded whole, not streamed.
    yield from serve(Proxy(tansu.address, workdir, capture=False))


@pytest.fixture
def written(tansu):
    """A topic filled directly on the broker; returns (topic, digest of every record)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "stream-" + os.urandom(4).hex()
    admin = AdminClient({"bootstrap.servers": tansu.address})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(15)
    p = Producer({"bootstrap.servers": tansu.address, "linger.ms": 20})
    sent = []
    for i in range(N):
        value = os.urandom(10 * 1024 + (i * 797) % (20 * 1024))
        key = f"k{i}".encode()
        p.produce(topic, key=key, value=value, partition=i % 3, headers=[("i", str(i).encode())])
        sent.append((key, value))
    assert p.flush(30) == 0
    return topic, digest(sent)


def digest(rows):
    return hashlib.sha256(b"".join(hashlib.sha256(k + b"\0" + v).digest() for k, v in sorted(rows))).hexdigest()


def streamed(proxy):
    return metric(proxy.http("/metrics")[1], "kafka_lfs_proxy_fetch_responses_streamed_total")


def test_confluent_kafka_reads_streamed_fetches(streaming_proxy, written):
    topic, want = written
    got = confluent_consume_assigned(streaming_proxy.bootstrap, topic, N)
    assert len(got) == N
    assert digest((k, v) for k, v, _ in got) == want
    assert streamed(streaming_proxy) > 0


def test_kafka_python_reads_streamed_fetches(streaming_proxy, written):
    from kafka import KafkaConsumer, TopicPartition

    topic, want = written
    c = KafkaConsumer(bootstrap_servers=streaming_proxy.bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=20000)
    c.assign([TopicPartition(topic, p) for p in range(3)])
    c.seek_to_beginning()
    got = []
    for m in c:
        got.append((m.key, m.value))
        if len(got) == N:
            break
    c.close()
    assert digest(got) == want
    assert streamed(streaming_proxy) > 0


def test_aiokafka_reads_streamed_fetches(streaming_proxy, written):
    topic, want = written
    got = asyncio.run(aiokafka_consume_assigned(streaming_proxy.bootstrap, topic, N))
    assert digest((k, v) for k, v, _ in got) == want
    assert streamed(streaming_proxy) > 0
