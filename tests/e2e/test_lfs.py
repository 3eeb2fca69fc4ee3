"""LFS claim-check through the Kafka path, against tansu and the proxy's
default local-directory store: values tagged LFS_BLOB become envelopes, the
stored objects are byte-identical, ordinary records pass unchanged."""

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from conftest import Proxy

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def create_topic(bootstrap, partitions=1):
    from confluent_kafka.admin import AdminClient, NewTopic

    name = "lfs-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(15)
    return name


def consume(bootstrap, topic, n, partitions=1, timeout=60):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lfs-check", "enable.auto.commit": False,
                  "fetch.max.bytes": 100 * 1024 * 1024})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got, deadline = [], time.time() + timeout
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    # Anything beyond n would be a duplicate.
    end = time.time() + 1
    while time.time() < end:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)
    c.close()
    return got


def stored_files(storage_dir: Path):
    """Every file in a local store but the tombstones of ended upload
    sessions (`_lfs_uploads/{ns}/{id}/end.json`, kept an hour so late
    requests get 410/404); any other session record counts."""
    def tombstone(p: Path) -> bool:
        rel = p.relative_to(storage_dir).parts
        return len(rel) == 4 and rel[0] == "_lfs_uploads" and rel[3] == "end.json"
    return sorted(p for p in storage_dir.rglob("*") if p.is_file() and not tombstone(p))


def check_envelope(storage_dir: Path, value: bytes, original: bytes, topic: str, content_type: str):
    env = json.loads(value)
    assert set(env) >= {"kfs_lfs", "bucket", "key", "size", "sha256", "content_type", "created_at", "proxy_id"}
    assert env["kfs_lfs"] == 1
    assert env["bucket"] == str(storage_dir.resolve())
    assert env["key"].startswith(f"default/{topic}/lfs/"), env["key"]
    assert env["size"] == len(original)
    assert env["sha256"] == hashlib.sha256(original).hexdigest()
    assert env["content_type"] == content_type
    stored = (Path(env["bucket"]) / env["key"]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == env["sha256"] and len(stored) == env["size"]
    return env


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_kafka_lfs_mixed_batch_every_codec(proxy, codec):
    from confluent_kafka import Producer

    topic = create_topic(proxy.bootstrap)
    small = os.urandom(1024)
    big = os.urandom(50 * 1024 * 1024)
    records = [
        (b"plain-0", b"ordinary value 0", [("h", b"1")]),
        (b"lfs-small", small, [("LFS_BLOB", b""), ("content-type", b"image/png"), ("trace", b"t1")]),
        (b"plain-1", b"ordinary value 1", []),
        (b"lfs-big", big, [("LFS_BLOB", hashlib.sha256(big).hexdigest().encode())]),
    ]
    errors = []
    p = Producer({"bootstrap.servers": proxy.bootstrap, "compression.type": codec, "linger.ms": 50,
                  "enable.idempotence": True, "message.max.bytes": 60 * 1024 * 1024})
    for k, v, h in records:
        p.produce(topic, key=k, value=v, headers=h, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(30) == 0 and errors == []

    got = {m.key(): m for m in consume(proxy.bootstrap, topic, 4)}
    assert len(got) == 4
    check_envelope(proxy.storage_dir, got[b"lfs-big"].value(), big, topic, "application/octet-stream")
    assert got[b"plain-0"].value() == b"ordinary value 0"
    assert got[b"plain-0"].headers() == [("h", b"1")]
    assert got[b"plain-1"].value() == b"ordinary value 1"
    lfs = got[b"lfs-small"]
    check_envelope(proxy.storage_dir, lfs.value(), small, topic, "image/png")
    headers = dict(lfs.headers())
    assert "LFS_BLOB" not in headers and headers["trace"] == b"t1" and headers["content-type"] == b"image/png"


def test_50_mib_value_with_kafka_python(proxy):
    from kafka import KafkaProducer

    topic = create_topic(proxy.bootstrap)
    big = os.urandom(50 * 1024 * 1024)
    p = KafkaProducer(bootstrap_servers=proxy.bootstrap, max_request_size=60 * 1024 * 1024, acks="all")
    p.send(topic, key=b"plain", value=b"small ordinary").get(30)
    p.send(topic, key=b"big", value=big, headers=[("LFS_BLOB", hashlib.sha256(big).hexdigest().encode())]).get(120)
    p.close()
    got = {m.key(): m for m in consume(proxy.bootstrap, topic, 2)}
    assert got[b"plain"].value() == b"small ordinary"
    env = check_envelope(proxy.storage_dir, got[b"big"].value(), big, topic, "application/octet-stream")
    assert len(got[b"big"].value()) < 600, "the record in Kafka is the small envelope"
    assert env["checksum_alg"] == "sha256"


@pytest.mark.parametrize("alg,digest", [
    ("sha256", lambda b: hashlib.sha256(b).hexdigest()),
    ("md5", lambda b: hashlib.md5(b).hexdigest()),
    ("crc32", lambda b: "%08x" % __import__("zlib").crc32(b)),
])
def test_checksums_verified_and_mismatch_is_a_record_error_leaving_nothing(proxy, alg, digest):
    from confluent_kafka import KafkaError, Producer

    topic = create_topic(proxy.bootstrap, partitions=2)
    payload = os.urandom(4096)
    results = {}
    p = Producer({"bootstrap.servers": proxy.bootstrap, "retries": 0})
    p.produce(topic, key=b"good", value=payload, partition=0,
              headers=[("LFS_BLOB", digest(payload).upper().encode()), ("LFS_BLOB_ALG", alg.encode())],
              on_delivery=lambda e, m: results.__setitem__("good", e))
    p.flush(30)
    before = stored_files(proxy.storage_dir)
    p.produce(topic, key=b"bad", value=payload, partition=1,
              headers=[("LFS_BLOB", digest(b"something else").encode()), ("LFS_BLOB_ALG", alg.encode())],
              on_delivery=lambda e, m: results.__setitem__("bad", e))
    p.flush(30)
    assert results["good"] is None
    assert results["bad"] is not None and results["bad"].code() == KafkaError.INVALID_RECORD, results["bad"]
    assert not results["bad"].retriable()
    assert stored_files(proxy.storage_dir) == before, "the mismatched value left no object"
    got = consume(proxy.bootstrap, topic, 1, partitions=2)
    assert [m.key() for m in got] == [b"good"]
    env = json.loads(got[0].value())
    assert env["checksum_alg"] == alg and env["checksum"] == digest(payload)


def test_oversized_value_is_message_too_large_and_other_partitions_go_through(tansu, workdir):
    from confluent_kafka import KafkaError, Producer

    small_limit = Proxy(tansu.address, workdir, capture=False, env={"KAFSCALE_LFS_PROXY_MAX_BLOB_SIZE": "10000"})
    try:
        small_limit.wait_ready()
        topic = create_topic(small_limit.bootstrap, partitions=2)
        results = {}
        p = Producer({"bootstrap.servers": small_limit.bootstrap, "retries": 0, "linger.ms": 100})
        p.produce(topic, key=b"too-big", value=b"x" * 20000, partition=0, headers=[("LFS_BLOB", b"")],
                  on_delivery=lambda e, m: results.__setitem__("big", e))
        p.produce(topic, key=b"fits", value=b"y" * 5000, partition=1, headers=[("LFS_BLOB", b"")],
                  on_delivery=lambda e, m: results.__setitem__("fits", e))
        p.flush(30)
        assert results["big"] is not None and results["big"].code() == KafkaError.MSG_SIZE_TOO_LARGE, results["big"]
        assert results["fits"] is None
        assert len(stored_files(small_limit.storage_dir)) == 1
    finally:
        small_limit.stop()


def test_acks_zero_lfs_record_is_delivered(proxy):
    from confluent_kafka import Producer

    topic = create_topic(proxy.bootstrap)
    payload = os.urandom(2048)
    p = Producer({"bootstrap.servers": proxy.bootstrap, "acks": 0})
    p.produce(topic, key=b"fire", value=payload, headers=[("LFS_BLOB", b"")])
    assert p.flush(30) == 0
    got = consume(proxy.bootstrap, topic, 1)
    assert len(got) == 1
    check_envelope(proxy.storage_dir, got[0].value(), payload, topic, "application/octet-stream")
