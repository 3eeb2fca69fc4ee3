"""Fetch rehydration against tansu, with the local store and with SeaweedFS:
opted-in consumers read the original values (SHA-256 equal), the same
offsets and headers; other consumers of the same topic read envelopes; a
tampered object, or storage down, gives the documented per-partition error
and no unverified byte; three consumers of one 50 MiB value cause one store
read; `kafka-lfs-proxy resolve` turns envelopes back into files."""

import asyncio
import hashlib
import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import PROXY_BIN, Proxy, metric, serve

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
OPTED_IN = "legacy-"
MiB = 1024 * 1024
CORRUPT_MESSAGE = 2


@pytest.fixture(scope="module")
def rproxy(tansu, workdir):
    """A proxy that rehydrates consumers whose client.id starts with
    `legacy-`, and every consumer of its second listener."""
    yield from serve(Proxy(tansu.address, workdir, capture=False, rehydrating_listener=True,
                           env={"KAFSCALE_LFS_PROXY_REHYDRATE_CLIENT_IDS": OPTED_IN}))


@pytest.fixture(scope="module")
def s3_rproxy(tansu, workdir, s3):
    env = dict(s3.proxy_env(), KAFSCALE_LFS_PROXY_REHYDRATE_CLIENT_IDS=OPTED_IN,
               KAFSCALE_LFS_PROXY_S3_TIMEOUT_MS="5000")
    yield from serve(Proxy(tansu.address, workdir, capture=False, env=env))


def create_topic(bootstrap, partitions=1):
    from confluent_kafka.admin import AdminClient, NewTopic

    name = "rh-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(15)
    return name


def produce(bootstrap, topic, records, codec="none", separate_batches=False):
    """records: (partition, key, value, headers, lfs). Returns the envelope-free
    picture a consumer should see: {(partition, key): (sha256, headers)}."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 20,
                  "message.max.bytes": 60 * MiB, "batch.size": 60 * MiB})
    errors = []
    for partition, key, value, headers, lfs in records:
        h = list(headers) + ([("LFS_BLOB", b"")] if lfs else [])
        p.produce(topic, key=key, value=value, headers=h, partition=partition,
                  on_delivery=lambda err, msg: err and errors.append(err))
        if separate_batches:
            p.flush(30)
    assert p.flush(60) == 0 and not errors, errors


def consume(bootstrap, topic, n, client_id, partitions=1, timeout=60, extra=None, errors=None):
    """The first n records, as (partition, offset, key, value, headers)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    conf = {"bootstrap.servers": bootstrap, "group.id": "rh-" + uuid.uuid4().hex[:6], "client.id": client_id,
            "enable.auto.commit": False}
    conf.update(extra or {})
    c = Consumer(conf)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got, deadline = [], time.time() + timeout
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if errors is not None:
                errors.append(m.error())
            continue
        got.append((m.partition(), m.offset(), m.key(), m.value(), m.headers() or []))
    c.close()
    return got


def sha(b):
    return hashlib.sha256(b or b"").hexdigest()


def is_envelope(value):
    try:
        return json.loads(value)["kfs_lfs"] == 1
    except Exception:
        return False


@pytest.mark.parametrize("codec", CODECS)
def test_opted_in_consumers_read_originals_every_codec(rproxy, codec):
    topic = create_topic(rproxy.bootstrap)
    values = [os.urandom(1024), b'{"kfs_lfs": 1, "looks": "like an envelope"}', os.urandom(200 * 1024),
              b"ordinary", os.urandom(3 * MiB)]
    records = [
        (0, b"lfs-1k", values[0], [("content-type", b"image/png"), ("trace", b"t0")], True),
        (0, b"json", values[1], [("trace", b"t1")], False),
        (0, b"lfs-200k", values[2], [("trace", b"t2")], True),
        (0, b"plain", values[3], [], False),
        (0, b"lfs-3m", values[4], [("trace", b"t4")], True),
    ]
    produce(rproxy.bootstrap, topic, records, codec)

    plain = consume(rproxy.bootstrap, topic, 5, "modern-app")
    rehydrated = consume(rproxy.bootstrap, topic, 5, OPTED_IN + "confluent")
    listener = consume(rproxy.rehydrating_bootstrap, topic, 5, "any-client")
    assert len(plain) == len(rehydrated) == len(listener) == 5

    # Not opted in: envelopes for LFS records, the rest untouched.
    for (_, _, key, value, _), (_, _, _, original, _, lfs) in zip(plain, [(0, 0, *r[1:]) for r in records]):
        assert is_envelope(value) == lfs or key == b"json", key
        if not lfs:
            assert value == original
    # Opted in, by client id or by listener: the original bytes, the same
    # offsets, keys and headers (LFS_BLOB was the producer's instruction to
    # the proxy and is not on the record).
    for got in (rehydrated, listener):
        assert [(p, o, k) for p, o, k, _, _ in got] == [(p, o, k) for p, o, k, _, _ in plain]
        assert [sha(v) for *_, v, _ in got] == [sha(v) for v in values]
        assert [h for *_, h in got] == [h for *_, h in plain]
        assert [dict(h).get("trace") for *_, h in got] == [b"t0", b"t1", b"t2", None, b"t4"]
        assert all("LFS_BLOB" not in dict(h) for *_, h in got)

    text = rproxy.http("/metrics")[1]
    assert metric(text, "kafka_lfs_proxy_rehydrated_records_total") >= 6


def test_kafka_python_aiokafka_kafkajs_kcat_read_originals(rproxy):
    topic = create_topic(rproxy.bootstrap, partitions=2)
    values = {b"a": os.urandom(5 * 1024), b"b": os.urandom(1 * MiB + 7), b"c": b"plain-c", b"d": os.urandom(3 * MiB)}
    records = [(0, b"a", values[b"a"], [("x", b"1")], True), (0, b"c", values[b"c"], [], False),
               (1, b"b", values[b"b"], [("x", b"2")], True), (1, b"d", values[b"d"], [], True)]
    produce(rproxy.bootstrap, topic, records, "lz4")
    want = {k: sha(v) for k, v in values.items()}

    # kafka-python through the rehydrating listener.
    from kafka import KafkaConsumer, TopicPartition as KTP

    kc = KafkaConsumer(bootstrap_servers=rproxy.rehydrating_bootstrap, enable_auto_commit=False,
                       max_partition_fetch_bytes=8 * MiB, fetch_max_bytes=64 * MiB)
    tps = [KTP(topic, 0), KTP(topic, 1)]
    kc.assign(tps)
    kc.seek_to_beginning(*tps)
    got, deadline = {}, time.time() + 60
    while len(got) < 4 and time.time() < deadline:
        for msgs in kc.poll(timeout_ms=500).values():
            for m in msgs:
                got[m.key] = sha(m.value)
    kc.close()
    assert got == want, "kafka-python"

    # aiokafka, opted in by client id.
    async def aio():
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        c = AIOKafkaConsumer(bootstrap_servers=rproxy.bootstrap, client_id=OPTED_IN + "aiokafka",
                             enable_auto_commit=False, max_partition_fetch_bytes=8 * MiB)
        await c.start()
        out = {}
        try:
            parts = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
            c.assign(parts)
            await c.seek_to_beginning(*parts)
            deadline = time.time() + 60
            while len(out) < 4 and time.time() < deadline:
                for msgs in (await c.getmany(timeout_ms=500)).values():
                    for m in msgs:
                        out[m.key] = sha(m.value)
        finally:
            await c.stop()
        return out

    assert asyncio.run(aio()) == want, "aiokafka"

    # kafkajs in a consumer group, committing: opted in by client id.
    group = "kjs-" + uuid.uuid4().hex[:6]
    script = Path(__file__).parent / "node" / "rehydrated.js"
    out = subprocess.run(["node", str(script), rproxy.bootstrap, topic, "4", group, OPTED_IN + "kafkajs"],
                         capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert {r["key"].encode(): r["sha256"] for r in rows} == want, "kafkajs"
    assert {r["key"]: r["headers"] for r in rows}["a"] == {"x": "1"}
    # The group's commits went to the broker: the next offset of each partition.
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": rproxy.bootstrap, "group.id": group})
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=20)
    c.close()
    assert [tp.offset for tp in committed] == [2, 2]

    # Debian's kcat (librdkafka 2.0.2) through the rehydrating listener.
    kcat = subprocess.run(["kcat", "-C", "-b", rproxy.rehydrating_bootstrap, "-t", topic, "-p", "1", "-o", "beginning",
                           "-c", "2", "-e", "-X", "receive.message.max.bytes=100000000",
                           "-f", "%k %S\\n"], capture_output=True, text=True, timeout=60)
    assert kcat.returncode == 0, kcat.stderr
    assert kcat.stdout.split() == ["b", str(len(values[b"b"])), "d", str(len(values[b"d"]))]
    raw = subprocess.run(["kcat", "-C", "-b", rproxy.rehydrating_bootstrap, "-t", topic, "-p", "1", "-o", "1",
                          "-c", "1", "-e", "-X", "receive.message.max.bytes=100000000", "-f", "%s"],
                         capture_output=True, timeout=60)
    assert raw.returncode == 0 and sha(raw.stdout) == want[b"d"]


def test_responses_stay_near_what_the_consumer_asked_for(rproxy):
    """Ten 3 MiB values in their own batches: a consumer asking for 1 MiB per
    fetch still reads them all, one batch per response (KIP-74's rule),
    never one response holding all ten."""
    topic = create_topic(rproxy.bootstrap)
    values = [os.urandom(3 * MiB) for _ in range(10)]
    produce(rproxy.bootstrap, topic, [(0, b"%d" % i, v, [], True) for i, v in enumerate(values)],
            separate_batches=True)
    got = consume(rproxy.bootstrap, topic, 10, OPTED_IN + "small-fetch",
                  extra={"fetch.max.bytes": MiB, "max.partition.fetch.bytes": MiB,
                         "receive.message.max.bytes": 8 * MiB})
    assert [sha(v) for *_, v, _ in got] == [sha(v) for v in values]
    assert [o for _, o, *_ in got] == list(range(10))


def test_tampered_object_fails_its_partition_and_delivers_no_payload(rproxy):
    topic = create_topic(rproxy.bootstrap, partitions=2)
    tampered, intact = os.urandom(64 * 1024), os.urandom(64 * 1024)
    produce(rproxy.bootstrap, topic, [(0, b"before", b"ordinary-before", [], False),
                                      (0, b"bad", tampered, [], True),
                                      (1, b"good", intact, [], True)], separate_batches=True)
    envelopes = consume(rproxy.bootstrap, topic, 3, "modern", partitions=2)
    bad = json.loads(next(v for _, _, k, v, _ in envelopes if k == b"bad"))
    path = Path(bad["bucket"]) / bad["key"]
    path.write_bytes(os.urandom(len(tampered)))  # same size, other bytes
    before = metric(rproxy.http("/metrics")[1], 'kafka_lfs_proxy_rehydrate_integrity_failures_total{reason="sha256_mismatch"}')

    errors = []
    got = consume(rproxy.bootstrap, topic, 3, OPTED_IN + "tamper", partitions=2, timeout=10, errors=errors)
    delivered = {k: v for _, _, k, v, _ in got}
    assert delivered.get(b"before") == b"ordinary-before", "the records before the bad batch are delivered"
    assert sha(delivered.get(b"good")) == sha(intact), "the other partition is delivered"
    assert b"bad" not in delivered, "no unverified byte"
    assert all(tampered[:64] not in (v or b"") and path.read_bytes()[:64] not in (v or b"") for v in delivered.values())
    assert any(e.code() == CORRUPT_MESSAGE for e in errors), errors
    text = rproxy.http("/metrics")[1]
    assert metric(text, 'kafka_lfs_proxy_rehydrate_integrity_failures_total{reason="sha256_mismatch"}') > before
    log = rproxy.read_log()
    assert bad["key"] in log and "CORRUPT_MESSAGE" in log

    # A missing object is the same error.
    path.unlink()
    errors = []
    got = consume(rproxy.bootstrap, topic, 3, OPTED_IN + "missing", partitions=2, timeout=6, errors=errors)
    assert sorted(k for _, _, k, _, _ in got) == [b"before", b"good"]
    assert any(e.code() == CORRUPT_MESSAGE for e in errors), errors
    assert metric(rproxy.http("/metrics")[1], 'kafka_lfs_proxy_rehydrate_integrity_failures_total{reason="missing"}') >= 1


def test_resolve_command_writes_verified_originals(rproxy, workdir):
    topic = create_topic(rproxy.bootstrap)
    values = [os.urandom(100 * 1024), os.urandom(2 * MiB)]
    produce(rproxy.bootstrap, topic, [(0, b"%d" % i, v, [], True) for i, v in enumerate(values)])
    kcat = subprocess.run(["kcat", "-C", "-b", rproxy.bootstrap, "-t", topic, "-o", "beginning", "-e", "-f", "%s\\n"],
                          capture_output=True, text=True, timeout=60)
    assert kcat.returncode == 0, kcat.stderr
    lines = [line for line in kcat.stdout.splitlines() if line]
    env = dict(os.environ, KAFSCALE_LFS_PROXY_STORAGE_DIR=str(rproxy.storage_dir))
    out_dir = workdir / f"resolved-{topic}"
    run = subprocess.run([str(PROXY_BIN), "resolve", "--out-dir", str(out_dir), "--topic", topic],
                         input="\n".join(lines) + "\n", capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    files = [Path(line.split()[0]) for line in run.stdout.splitlines()]
    assert [sha(f.read_bytes()) for f in files] == [sha(v) for v in values]
    # To standard output, and a line that is not an envelope fails the run.
    one = subprocess.run([str(PROXY_BIN), "resolve"], input=(lines[0] + "\n").encode(), capture_output=True,
                         env=env, timeout=60)
    assert one.returncode == 0 and sha(one.stdout) == sha(values[0])
    bad = lines[1].replace(json.loads(lines[1])["sha256"], "0" * 64)
    fail = subprocess.run([str(PROXY_BIN), "resolve"], input=(bad + "\nnot json\n").encode(), capture_output=True,
                          env=env, timeout=60)
    assert fail.returncode == 1 and fail.stdout == b""
    assert b"line 1: object" in fail.stderr and b"SHA-256" in fail.stderr and b"line 2: not an envelope" in fail.stderr


def test_three_consumers_of_a_50_mib_value_read_storage_once(s3_rproxy, s3):
    topic = create_topic(s3_rproxy.bootstrap)
    big = os.urandom(50 * MiB)
    produce(s3_rproxy.bootstrap, topic, [(0, b"big", big, [], True), (0, b"small", b"after", [], False)], "zstd")
    before = metric(s3_rproxy.http("/metrics")[1], "kafka_lfs_proxy_rehydrate_cache_misses_total")
    results = [None] * 3

    def read(i):
        results[i] = consume(s3_rproxy.bootstrap, topic, 2, f"{OPTED_IN}three-{i}", timeout=90)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for got in results:
        assert [(k, sha(v)) for _, _, k, v, _ in got] == [(b"big", sha(big)), (b"small", sha(b"after"))]
    text = s3_rproxy.http("/metrics")[1]
    assert metric(text, "kafka_lfs_proxy_rehydrate_cache_misses_total") - before == 1
    assert metric(text, "kafka_lfs_proxy_rehydrate_cache_hits_total") >= 2
    assert metric(text, "kafka_lfs_proxy_rehydrate_cache_bytes") >= 50 * MiB


def test_storage_down_is_retriable_and_other_partitions_are_delivered(s3_rproxy, s3):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    topic = create_topic(s3_rproxy.bootstrap, partitions=2)
    value = os.urandom(256 * 1024)
    produce(s3_rproxy.bootstrap, topic, [(0, b"lfs", value, [], True), (1, b"plain", b"ordinary", [], False)])
    c = Consumer({"bootstrap.servers": s3_rproxy.bootstrap, "group.id": "rh-outage", "enable.auto.commit": False,
                  "client.id": OPTED_IN + "outage"})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2)])
    got, errors = {}, []

    def poll_for(seconds):
        deadline = time.time() + seconds
        while time.time() < deadline and len(got) < 2:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                errors.append(m.error())
            else:
                got[m.key()] = m.value()

    s3.kill()
    try:
        poll_for(12)
        assert got == {b"plain": b"ordinary"}, "only the other partition while storage is down"
        assert not any(e.code() == CORRUPT_MESSAGE for e in errors), errors
        assert metric(s3_rproxy.http("/metrics")[1], "kafka_lfs_proxy_rehydrate_storage_errors_total") >= 1
        assert "KAFKA_STORAGE_ERROR" in s3_rproxy.read_log()
    finally:
        s3.start()
    # The same consumer, storage back: the value arrives, verified.
    poll_for(60)
    c.close()
    assert sha(got.get(b"lfs")) == sha(value)
