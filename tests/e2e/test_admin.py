"""Admin calls through the proxy: topic creation, cluster description
(DescribeCluster, KIP-700) and consumer groups, all reaching only the proxy."""

import time

from conftest import records
from test_clients import as_set


def test_kafka_python_admin_creates_topics_and_describes_cluster_through_proxy(proxy):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=proxy.bootstrap)
    admin.create_topics([NewTopic("admin-created", num_partitions=2, replication_factor=1)])
    assert "admin-created" in admin.list_topics()
    cluster = admin.describe_cluster()
    brokers = {(b["host"], b["port"]) for b in cluster["brokers"]}
    assert brokers == {("127.0.0.1", proxy.port + 1 + 111)}, cluster
    admin.close()


def test_confluent_admin_sees_only_the_proxy(proxy):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": proxy.bootstrap})
    md = admin.list_topics(timeout=10)
    assert {(b.host, b.port) for b in md.brokers.values()} == {("127.0.0.1", proxy.port + 1 + 111)}
    desc = admin.describe_cluster(request_timeout=10).result(15)
    assert {(n.host, n.port) for n in desc.nodes} == {("127.0.0.1", proxy.port + 1 + 111)}


def test_confluent_consumer_group_subscribe(proxy, topic):
    from confluent_kafka import Consumer, Producer

    sent = records(12, "group")
    p = Producer({"bootstrap.servers": proxy.bootstrap, "enable.idempotence": True})
    for k, v, h in sent:
        p.produce(topic, key=k, value=v, headers=h)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": proxy.bootstrap, "group.id": "grp-" + topic,
                  "auto.offset.reset": "earliest", "enable.auto.commit": True})
    c.subscribe([topic])
    got, deadline = [], time.time() + 90
    while len(got) < len(sent) and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.key(), m.value(), m.headers()))
    committed = c.committed(c.assignment(), timeout=10) if c.assignment() else []
    c.close()
    assert as_set(got) == as_set(sent)
    assert committed, "the group owns partitions and committed offsets through the proxy"


def test_transactional_producer(proxy, topic):
    """A transactional producer commits through the proxy; read_committed
    consumers see the committed records and not the aborted ones."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    p = Producer({"bootstrap.servers": proxy.bootstrap, "transactional.id": "txn-" + topic})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=b"c%d" % i, value=b"committed-%d" % i, partition=0)
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(topic, key=b"a", value=b"aborted", partition=0)
    p.abort_transaction(30)

    c = Consumer({"bootstrap.servers": proxy.bootstrap, "group.id": "txn-check",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got, deadline = [], time.time() + 30
    while time.time() < deadline and len(got) < 5:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    # Give an aborted record a chance to (wrongly) show up.
    end = time.time() + 2
    while time.time() < end:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == [b"committed-%d" % i for i in range(5)]
