"""LFS against real S3 (SeaweedFS): objects land in the bucket, byte-identical;
S3 going away gives a retriable error and, once it is back, the producer's
own retry delivers every record once with one object per envelope."""

import hashlib
import json
import os
import time

import pytest

from conftest import Proxy, metric
from test_lfs import consume, create_topic


@pytest.fixture(scope="module")
def s3_proxy(tansu, workdir, s3):
    p = Proxy(tansu.address, workdir, capture=False, env=s3.proxy_env())
    p.wait_ready()
    yield p
    p.stop()


def envelopes(messages):
    return [json.loads(m.value()) for m in messages if m.value().startswith(b'{"kfs_lfs"')]


def test_mixed_records_and_16_mib_multipart_value_into_s3(s3_proxy, s3):
    from confluent_kafka import Producer

    topic = create_topic(s3_proxy.bootstrap)
    big = os.urandom(16 * 1024 * 1024)  # above the 5 MiB chunk size: multipart
    small = os.urandom(1024)
    p = Producer({"bootstrap.servers": s3_proxy.bootstrap, "message.max.bytes": 30 * 1024 * 1024,
                  "compression.type": "zstd", "linger.ms": 50, "enable.idempotence": True})
    errors = []
    for k, v, h in [(b"plain", b"ordinary", []), (b"small", small, [("LFS_BLOB", b"")]),
                    (b"big", big, [("LFS_BLOB", hashlib.sha256(big).hexdigest().encode())])]:
        p.produce(topic, key=k, value=v, headers=h, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(120) == 0 and errors == []

    got = {m.key(): m for m in consume(s3_proxy.bootstrap, topic, 3)}
    assert got[b"plain"].value() == b"ordinary"
    for key, original in [(b"small", small), (b"big", big)]:
        env = json.loads(got[key].value())
        assert env["bucket"] == s3.BUCKET
        stored = s3.get(env["key"])
        assert len(stored) == env["size"] == len(original)
        assert hashlib.sha256(stored).hexdigest() == env["sha256"] == hashlib.sha256(original).hexdigest()
    assert s3.keys(f"default/{topic}/") == sorted(json.loads(got[k].value())["key"] for k in (b"small", b"big"))
    assert not [k for k in s3.keys() if "/.uploads/" in k], "no multipart parts left behind"


def test_s3_down_is_retriable_and_the_retry_lands_once(s3_proxy, s3):
    from confluent_kafka import Producer

    topic = create_topic(s3_proxy.bootstrap)
    s3.kill()
    results = []
    p = Producer({"bootstrap.servers": s3_proxy.bootstrap, "enable.idempotence": True,
                  "message.timeout.ms": 120000, "retry.backoff.ms": 500, "retry.backoff.max.ms": 2000})
    for i in range(3):
        p.produce(topic, key=b"k%d" % i, value=os.urandom(4096), headers=[("LFS_BLOB", b"")],
                  on_delivery=lambda e, m: results.append(e))
    # While S3 is down the proxy answers KAFKA_STORAGE_ERROR and the producer retries.
    deadline = time.time() + 20
    while time.time() < deadline and "LFS partition refused" not in s3_proxy.read_log():
        p.poll(0.2)
    assert "error_code=56" in s3_proxy.read_log(), s3_proxy.read_log()[-3000:]
    assert results == [], "nothing delivered or failed yet: the producer keeps retrying"
    s3.start()
    assert p.flush(120) == 0
    assert results == [None, None, None]

    got = consume(s3_proxy.bootstrap, topic, 3)
    assert sorted(m.key() for m in got) == [b"k0", b"k1", b"k2"], "every record once"
    keys = sorted(e["key"] for e in envelopes(got))
    assert s3.keys(f"default/{topic}/") == keys, "exactly one object per envelope"
    metrics = s3_proxy.http("/metrics")[1]
    assert metric(metrics, "kafka_lfs_proxy_lfs_storage_errors_total") >= 1, metrics
    assert metric(metrics, 'kafka_lfs_proxy_lfs_uploads_total{outcome="storage_error"}') >= 1
    assert metric(metrics, 'kafka_lfs_proxy_lfs_uploads_total{outcome="ok"}') >= 3


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_ensure_bucket_creates_a_missing_bucket(tansu, workdir, s3, region):
    """Outside us-east-1 the CreateBucket names the region (AWS refuses it
    otherwise; the body itself is unit-tested in src/lfs/bucket.rs)."""
    from confluent_kafka import Producer

    fresh = "lfs-ensured-" + os.urandom(3).hex()
    env = dict(s3.proxy_env(), KAFSCALE_LFS_PROXY_S3_BUCKET=fresh, KAFSCALE_LFS_PROXY_S3_ENSURE_BUCKET="true",
               KAFSCALE_LFS_PROXY_S3_REGION=region)
    p = Proxy(tansu.address, workdir, capture=False, env=env)
    try:
        p.wait_ready()
        assert "created S3 bucket" in p.read_log()
        s3.client().head_bucket(Bucket=fresh)
        topic = create_topic(p.bootstrap)
        producer = Producer({"bootstrap.servers": p.bootstrap})
        producer.produce(topic, value=b"into the new bucket", headers=[("LFS_BLOB", b"")])
        assert producer.flush(30) == 0
        env_record = json.loads(consume(p.bootstrap, topic, 1)[0].value())
        assert env_record["bucket"] == fresh
        assert s3.client().get_object(Bucket=fresh, Key=env_record["key"])["Body"].read() == b"into the new bucket"
    finally:
        p.stop()
