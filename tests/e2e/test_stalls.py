"""Stalls, not just deaths: storage that accepts connections but never
answers (SIGSTOP on SeaweedFS) and a broker that stops answering (SIGSTOP
on tansu). Every wait is bounded by a documented timeout, clients get the
documented retriable errors, the proxy's memory stays bounded, /readyz
flips, and after SIGCONT everything recovers with nothing lost and nothing
left behind. Each test stops only processes it started."""

import hashlib
import json
import os
import signal
import time

import pytest
import requests

from conftest import Proxy, Tansu, metric
from test_lfs import consume, create_topic, stored_files
from test_nothing_dangles import uploads, wait_for

MIB = 1024 * 1024


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def ready(p) -> int:
    return p.http("/readyz")[0]


def test_stalled_storage_is_a_retriable_error_and_recovers(tansu, workdir, s3):
    from confluent_kafka import Producer

    env = dict(s3.proxy_env(), KAFSCALE_LFS_PROXY_S3_TIMEOUT_MS="3000", KAFSCALE_LFS_PROXY_S3_IDLE_TIMEOUT_MS="2000",
               KAFSCALE_LFS_PROXY_MAX_FRAME_SIZE=str(32 * MIB))
    p = Proxy(tansu.address, workdir, capture=False, env=env)
    stopped = False
    try:
        p.wait_ready()
        topic = create_topic(p.bootstrap)
        s3.proc.send_signal(signal.SIGSTOP)
        stopped = True
        wait_for("/readyz to flip", lambda: ready(p) == 503, 10)

        value = os.urandom(12 * MIB)  # three parts
        results = []
        producer = Producer({"bootstrap.servers": p.bootstrap, "enable.idempotence": True,
                             "message.max.bytes": 30 * MIB, "message.timeout.ms": 180000,
                             "retry.backoff.ms": 500, "retry.backoff.max.ms": 2000})
        producer.produce(topic, key=b"doc", value=value, headers=[("LFS_BLOB", b"")],
                         on_delivery=lambda e, m: results.append(e))
        started = time.time()

        def refused():
            producer.poll(0.1)
            return "error_code=56" in p.read_log()

        wait_for("KAFKA_STORAGE_ERROR for the partition", refused, 30)
        assert time.time() - started < 25, "bounded by S3_TIMEOUT_MS and its retries, not minutes"
        assert results == [], "retriable: the producer keeps trying"
        assert rss_mib(p.proc.pid) < 200, "memory bounded while storage stalls"

        s3.proc.send_signal(signal.SIGCONT)
        stopped = False
        assert producer.flush(180) == 0
        assert results == [None]
        wait_for("/readyz back", lambda: ready(p) == 200, 15)
        got = consume(p.bootstrap, topic, 1)
        assert len(got) == 1
        envelope = json.loads(got[0].value())
        assert hashlib.sha256(s3.get(envelope["key"])).hexdigest() == hashlib.sha256(value).hexdigest()
        assert s3.keys(f"default/{topic}/") == [envelope["key"]], "one object, the envelope's"
        wait_for("no multipart upload left", lambda: uploads(s3) == [], 60)
        wait_for("no cleanup pending",
                 lambda: metric(p.http("/metrics")[1], "kafka_lfs_proxy_lfs_orphans_pending") == 0, 60)
    finally:
        if stopped:
            s3.proc.send_signal(signal.SIGCONT)
        p.stop()


@pytest.fixture(scope="module")
def own_tansu(workdir):
    broker = Tansu(workdir)
    yield broker
    broker.stop()


def test_stalled_broker_flips_readiness_bounds_memory_and_loses_nothing(own_tansu, workdir):
    from confluent_kafka import Producer

    env = {"KAFSCALE_LFS_PROXY_UPSTREAM_CONNECT_TIMEOUT_MS": "2000", "KAFSCALE_LFS_PROXY_PRODUCE_TIMEOUT_MS": "3000"}
    p = Proxy(own_tansu.address, workdir, capture=False, env=env)
    stopped = False
    try:
        p.wait_ready()
        topic = create_topic(p.bootstrap, partitions=3)
        errors = []
        producer = Producer({"bootstrap.servers": p.bootstrap, "enable.idempotence": True,
                             "linger.ms": 5, "message.timeout.ms": 180000})
        sent = 0

        def send(n):
            nonlocal sent
            for _ in range(n):
                producer.produce(topic, key=b"%06d" % sent, value=os.urandom(1024),
                                 on_delivery=lambda e, m: e and errors.append(e))
                sent += 1
                producer.poll(0)

        send(200)
        assert producer.flush(30) == 0
        before = rss_mib(p.proc.pid)
        storage_before = stored_files(p.storage_dir)

        own_tansu.proc.send_signal(signal.SIGSTOP)
        stopped = True
        # The producer keeps pushing while the broker is silent.
        deadline = time.time() + 8
        while time.time() < deadline:
            send(200)
            producer.poll(0.05)
        wait_for("/readyz to flip", lambda: ready(p) == 503, 10)
        grown = rss_mib(p.proc.pid) - before
        assert grown < 64, f"proxy memory grew by {grown:.0f} MiB while the broker was silent"
        # The HTTP API's producer gives up within PRODUCE_TIMEOUT_MS: 503, object deleted.
        started = time.time()
        r = requests.post(f"http://127.0.0.1:{p.http_port}/lfs/produce", data=os.urandom(4096),
                          headers={"X-Kafka-Topic": topic}, timeout=30)
        assert r.status_code == 503 and r.json()["code"] == "backend_unavailable", r.text
        assert time.time() - started < 15
        assert stored_files(p.storage_dir) == storage_before, "nothing left behind by the failed HTTP produce"

        own_tansu.proc.send_signal(signal.SIGCONT)
        stopped = False
        assert producer.flush(180) == 0
        assert errors == [], errors
        wait_for("/readyz back", lambda: ready(p) == 200, 15)
        got = consume(p.bootstrap, topic, sent, partitions=3, timeout=90)
        keys = sorted(m.key() for m in got)
        assert keys == [b"%06d" % i for i in range(sent)], f"{len(keys)} of {sent}: every record exactly once"
    finally:
        if stopped:
            own_tansu.proc.send_signal(signal.SIGCONT)
        p.stop()
