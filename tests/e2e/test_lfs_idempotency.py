"""`Idempotency-Key` on /lfs/produce against tansu and SeaweedFS, with two
proxy replicas sharing the bucket: a retry on the other replica gets the
first answer (same envelope, partition and offset) and leaves one object
and one record; the same key with another body is 409; a key whose
request failed can be used again; bad keys are 400."""

import hashlib
import os

import pytest
import requests

from conftest import start_replicas, stop_replicas
from test_lfs import consume, create_topic


@pytest.fixture(scope="module")
def replicas(tansu, workdir, s3):
    replicas = start_replicas(tansu, workdir, s3.proxy_env())
    yield replicas
    stop_replicas(replicas)


def post(proxy, topic, body, key=None, **headers):
    h = {"X-Kafka-Topic": topic, **headers}
    if key is not None:
        h["Idempotency-Key"] = key
    return requests.post(f"http://127.0.0.1:{proxy.http_port}/lfs/produce", data=body, headers=h, timeout=60)


def test_a_retry_on_another_replica_gets_the_first_answer_and_nothing_twice(replicas, s3):
    a, b = replicas
    topic = create_topic(a.bootstrap)
    body = os.urandom(64 * 1024)
    first = post(a, topic, body, key="order-1", **{"X-Kafka-Key": "azE="})
    assert first.status_code == 200, first.text
    again = post(b, topic, body, key="order-1", **{"X-Kafka-Key": "azE="})
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    for h in ("x-kafka-partition", "x-kafka-offset"):
        assert again.headers[h] == first.headers[h]
    assert "idempotent-replayed" not in first.headers
    assert s3.keys(f"default/{topic}/") == [first.json()["key"]], "one object"
    assert hashlib.sha256(s3.get(first.json()["key"])).hexdigest() == hashlib.sha256(body).hexdigest()
    assert len(consume(a.bootstrap, topic, 2, timeout=5)) == 1, "one record"

    # The same key with another body, or another record key, is a conflict.
    other = post(a, topic, body + b"!", key="order-1", **{"X-Kafka-Key": "azE="})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict", other.text
    other_key = post(b, topic, body, key="order-1", **{"X-Kafka-Key": "azI="})
    assert other_key.status_code == 409, other_key.text
    assert s3.keys(f"default/{topic}/") == [first.json()["key"]]

    # Without a key, the same body is a new record, as before.
    plain = post(a, topic, body, **{"X-Kafka-Key": "azE="})
    assert plain.status_code == 200 and plain.json()["key"] != first.json()["key"]


def test_a_failed_request_releases_its_key_and_bad_keys_are_refused(replicas, s3):
    a, b = replicas
    topic = create_topic(a.bootstrap)
    # An empty body fails (400 empty_upload) after the key was claimed.
    failed = post(a, topic, b"", key="retry-me")
    assert failed.status_code == 400, failed.text
    ok = post(b, topic, b"now with a body", key="retry-me")
    assert ok.status_code == 200, ok.text
    assert "idempotent-replayed" not in ok.headers
    for bad in ["x" * 256, "with space", ""]:
        r = post(a, topic, b"body", key=bad)
        assert r.status_code == 400 and r.json()["code"] == "invalid_header", (bad, r.text)
    assert not [k for k in s3.keys("_lfs_idempotency/") if not k.endswith(".json")]
