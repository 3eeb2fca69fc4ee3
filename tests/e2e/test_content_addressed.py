"""Content-addressed keys (KAFSCALE_LFS_PROXY_CONTENT_ADDRESSED_KEYS)
against tansu and SeaweedFS: the same payload produced through Kafka, the
HTTP API and an upload session is stored once, at
`{namespace}/{topic}/lfs/sha256/obj-{sha256}`, and every envelope points
there; `gc` keeps a shared object while any record references it and
deletes content-keyed objects no record references, leaving no marker."""

import hashlib
import os
import uuid

import pytest
import requests

from conftest import Proxy
from test_gc import gc, listed
from test_lfs import consume, create_topic
from test_lfs_s3 import envelopes


@pytest.fixture(scope="module")
def ca_proxy(tansu, workdir, s3):
    p = Proxy(tansu.address, workdir, capture=False,
              env={**s3.proxy_env(), "KAFSCALE_LFS_PROXY_CONTENT_ADDRESSED_KEYS": "true"})
    p.wait_ready()
    yield p
    assert "panicked" not in p.read_log()
    p.stop()


def content_key(topic, payload):
    return f"default/{topic}/lfs/sha256/obj-{hashlib.sha256(payload).hexdigest()}"


def produce_kafka(bootstrap, topic, values):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 16 * 1024 * 1024})
    for v in values:
        p.produce(topic, value=v, headers=[("LFS_BLOB", b"")])
    assert p.flush(60) == 0


def test_one_payload_is_stored_once_whatever_path_it_comes_by(ca_proxy, s3):
    topic = create_topic(ca_proxy.bootstrap)
    payload, other = os.urandom(3 * 1024 * 1024), os.urandom(100_000)
    produce_kafka(ca_proxy.bootstrap, topic, [payload, other, payload])
    api = f"http://127.0.0.1:{ca_proxy.http_port}"
    r = requests.post(f"{api}/lfs/produce", data=payload, headers={"X-Kafka-Topic": topic}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["key"] == content_key(topic, payload)
    s = requests.post(f"{api}/lfs/uploads", timeout=30, json={
        "topic": topic, "content_type": "application/octet-stream", "size_bytes": len(payload)}).json()
    etag = requests.put(f"{api}/lfs/uploads/{s['upload_id']}/parts/1", data=payload, timeout=60).json()["etag"]
    done = requests.post(f"{api}/lfs/uploads/{s['upload_id']}/complete", timeout=60,
                         json={"parts": [{"part_number": 1, "etag": etag}]})
    assert done.status_code == 200, done.text
    assert done.json()["key"] == content_key(topic, payload)

    got = envelopes(consume(ca_proxy.bootstrap, topic, 5))
    assert len(got) == 5
    assert sorted(e["key"] for e in got) == sorted([content_key(topic, payload)] * 4 + [content_key(topic, other)])
    for e in got:
        assert e["key"].endswith(e["sha256"])
    assert s3.keys(f"default/{topic}/") == sorted([content_key(topic, payload), content_key(topic, other)]), \
        "stored once each; no fresh key left behind"
    assert hashlib.sha256(s3.get(content_key(topic, payload))).hexdigest() == hashlib.sha256(payload).hexdigest()
    env = got[0]
    down = requests.post(f"{api}/lfs/download", timeout=60,
                         json={"key": env["key"], "integrity": {"sha256": env["sha256"], "size": env["size"]}})
    assert down.status_code == 200, down.text
    assert hashlib.sha256(down.content).digest() == hashlib.sha256(
        payload if env["size"] == len(payload) else other).digest()


def test_gc_deletes_only_content_keys_no_record_references(ca_proxy, s3, tansu):
    from confluent_kafka.admin import AdminClient

    topic = create_topic(ca_proxy.bootstrap)
    shared = os.urandom(50_000)
    produce_kafka(ca_proxy.bootstrap, topic, [shared, shared])
    # What a produce that failed after its upload leaves: a content-keyed
    # object no record references (the request path never deletes one).
    stray_payload = uuid.uuid4().bytes * 100
    stray = content_key(topic, stray_payload)
    s3.client().put_object(Bucket=s3.BUCKET, Key=stray, Body=stray_payload)
    assert s3.keys(f"default/{topic}/") == sorted([content_key(topic, shared), stray])

    r = gc(tansu, s3, "--topic", topic, "--grace-sec", "0")
    assert r.returncode == 0, r.stderr
    assert listed(r.stdout) == [stray], r.stdout
    assert "1 referenced" in r.stderr, r.stderr
    r = gc(tansu, s3, "--topic", topic, "--grace-sec", "0", "--delete")
    assert r.returncode == 0, r.stderr
    assert s3.keys(f"default/{topic}/") == [content_key(topic, shared)], "the shared object stays"
    assert s3.get(content_key(topic, shared)) == shared
    assert s3.keys("_lfs_gc/") == [], "no deletion marker left"

    admin = AdminClient({"bootstrap.servers": tansu.address})
    admin.delete_topics([topic])[topic].result(15)
    r = gc(tansu, s3, "--topic", topic, "--grace-sec", "0", "--delete")
    assert r.returncode == 0, r.stderr
    assert s3.keys(f"default/{topic}/") == [], "no record left: the shared object goes too"
