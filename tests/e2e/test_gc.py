"""`kafka-lfs-proxy gc` against tansu and SeaweedFS: a dry run lists exactly
the objects no record references and deletes nothing; --delete removes
exactly those and keeps every referenced object byte for byte; an
unreferenced object within the grace period (the upload of a record still
in flight) is kept; a deleted topic's objects all go; a topic the broker
cannot answer for is never taken for a deleted one."""

import hashlib
import json
import os
import subprocess
import uuid

from conftest import PROXY_BIN, Proxy
from test_lfs import consume, create_topic
from test_lfs_s3 import envelopes, s3_proxy  # noqa: F401  (the module fixture)


def gc(tansu, s3, *args, bootstrap=None):
    env = dict(os.environ, KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS=bootstrap or tansu.address,
               KAFSCALE_LFS_PROXY_LOG_LEVEL="warn", **s3.proxy_env())
    return subprocess.run([str(PROXY_BIN), "gc", *args], env=env, capture_output=True, text=True, timeout=120)


def produce_lfs(bootstrap, topic, n):
    """n LFS records; returns {object key: original bytes}."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap})
    originals = [os.urandom(2048 + i) for i in range(n)]
    for i, v in enumerate(originals):
        p.produce(topic, key=b"k%d" % i, value=v, headers=[("LFS_BLOB", b"")])
    assert p.flush(60) == 0
    got = consume(bootstrap, topic, n)
    by_sha = {hashlib.sha256(v).hexdigest(): v for v in originals}
    out = {e["key"]: by_sha[e["sha256"]] for e in envelopes(got)}
    assert len(out) == n
    return out


def stray(s3, topic, tag):
    """An object under the topic's prefix that no record references (an
    upload whose record was never produced)."""
    key = f"default/{topic}/lfs/2026/01/01/obj-{tag}-{uuid.uuid4()}"
    s3.client().put_object(Bucket=s3.BUCKET, Key=key, Body=b"x" * 1000)
    return key


def listed(out):
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def test_dry_run_then_delete_removes_exactly_the_unreferenced(s3_proxy, s3, tansu):
    topic = create_topic(s3_proxy.bootstrap)
    kept = produce_lfs(s3_proxy.bootstrap, topic, 4)
    strays = sorted(stray(s3, topic, f"s{i}") for i in range(3))
    before = s3.keys(f"default/{topic}/")
    assert before == sorted(list(kept) + strays)

    # Within the default grace period (a day) nothing is a candidate.
    r = gc(tansu, s3, "--topic", topic)
    assert r.returncode == 0, r.stderr
    assert listed(r.stdout) == []
    assert "3 within the grace period" in r.stderr and "4 referenced" in r.stderr, r.stderr

    r = gc(tansu, s3, "--topic", topic, "--grace-sec", "0")
    assert r.returncode == 0, r.stderr
    assert listed(r.stdout) == strays
    assert "would delete 3000 bytes" in r.stderr and "--delete" in r.stderr, r.stderr
    assert s3.keys(f"default/{topic}/") == before, "a dry run deletes nothing"

    r = gc(tansu, s3, "--topic", topic, "--grace-sec", "0", "--delete")
    assert r.returncode == 0, r.stderr
    assert listed(r.stdout) == strays
    assert "deleted 3000 bytes" in r.stderr, r.stderr
    assert s3.keys(f"default/{topic}/") == sorted(kept)
    for key, original in kept.items():
        assert hashlib.sha256(s3.get(key)).hexdigest() == hashlib.sha256(original).hexdigest()

    # Nothing left to do: a second run (or a concurrent one) is a no-op.
    r = gc(tansu, s3, "--topic", topic, "--grace-sec", "0", "--delete")
    assert r.returncode == 0 and listed(r.stdout) == [], r.stderr


def test_a_deleted_topics_objects_all_go_and_other_topics_keep_theirs(s3_proxy, s3, tansu):
    from confluent_kafka.admin import AdminClient

    gone = create_topic(s3_proxy.bootstrap)
    alive = create_topic(s3_proxy.bootstrap)
    gone_objects = produce_lfs(s3_proxy.bootstrap, gone, 3)
    alive_objects = produce_lfs(s3_proxy.bootstrap, alive, 2)
    admin = AdminClient({"bootstrap.servers": tansu.address})
    admin.delete_topics([gone])[gone].result(15)

    # No --topic: every topic with objects in the store.
    r = gc(tansu, s3, "--grace-sec", "0", "--delete")
    assert r.returncode == 0, r.stderr
    assert f"topic {gone}: 0 records read (topic no longer exists)" in r.stderr, r.stderr
    assert sorted(gone_objects) == [k for k in listed(r.stdout) if f"/{gone}/" in k]
    assert s3.keys(f"default/{gone}/") == []
    assert s3.keys(f"default/{alive}/") == sorted(alive_objects)


def test_an_unreachable_broker_is_an_error_never_a_deleted_topic(s3_proxy, s3, tansu):
    topic = create_topic(s3_proxy.bootstrap)
    objects = produce_lfs(s3_proxy.bootstrap, topic, 1)
    from conftest import free_port

    r = gc(tansu, s3, "--topic", topic, "--grace-sec", "0", "--delete",
           bootstrap=f"127.0.0.2:{free_port('127.0.0.2')}")
    assert r.returncode != 0
    assert f"topic {topic}: not collected" in r.stderr, r.stderr
    assert s3.keys(f"default/{topic}/") == sorted(objects)


def test_background_gc_in_the_proxy_deletes_only_the_unreferenced(tansu, workdir, s3):
    import time

    from conftest import metric

    env = dict(s3.proxy_env(), KAFSCALE_LFS_PROXY_GC_INTERVAL_SEC="1", KAFSCALE_LFS_PROXY_GC_GRACE_SEC="2")
    p = Proxy(tansu.address, workdir, capture=False, env=env)
    p.wait_ready()
    try:
        topic = create_topic(p.bootstrap)
        kept = produce_lfs(p.bootstrap, topic, 3)
        strays = [stray(s3, topic, f"bg{i}") for i in range(2)]
        deadline = time.time() + 30
        while time.time() < deadline and set(strays) & set(s3.keys(f"default/{topic}/")):
            time.sleep(0.5)
        assert s3.keys(f"default/{topic}/") == sorted(kept), p.read_log()[-3000:]
        for key, original in kept.items():
            assert s3.get(key) == original
        metrics = p.http("/metrics")[1]
        assert metric(metrics, "kafka_lfs_proxy_gc_objects_deleted_total") >= 2, metrics
        assert metric(metrics, "kafka_lfs_proxy_gc_objects_referenced_total") >= 3, metrics
        assert "panicked" not in p.read_log()
    finally:
        p.stop()


def test_records_deleted_by_retention_free_exactly_their_objects(workdir, s3):
    """DeleteRecords (what retention does to a log's start) on noida-db, the
    broker here that implements it: the objects of the deleted records go,
    the others stay byte for byte."""
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from conftest import Noida

    broker = Noida(workdir)
    p = Proxy(broker.address, workdir, capture=False, env=s3.proxy_env())
    try:
        p.wait_ready()
        topic = create_topic(p.bootstrap)
        producer = Producer({"bootstrap.servers": p.bootstrap})
        originals = [os.urandom(3000 + i) for i in range(5)]
        for v in originals:
            producer.produce(topic, value=v, headers=[("LFS_BLOB", b"")])
        assert producer.flush(60) == 0
        by_offset = {m.offset(): json.loads(m.value())["key"] for m in consume(p.bootstrap, topic, 5)}
        assert sorted(by_offset) == [0, 1, 2, 3, 4]
        admin = AdminClient({"bootstrap.servers": broker.address})
        for f in admin.delete_records([TopicPartition(topic, 0, 3)]).values():
            f.result(15)

        r = gc(broker, s3, "--topic", topic, "--grace-sec", "0")
        assert r.returncode == 0, r.stderr
        assert listed(r.stdout) == sorted(by_offset[o] for o in (0, 1, 2)), r.stdout
        assert "2 records read" in r.stderr and "2 referenced" in r.stderr, r.stderr
        r = gc(broker, s3, "--topic", topic, "--grace-sec", "0", "--delete")
        assert r.returncode == 0, r.stderr
        assert s3.keys(f"default/{topic}/") == sorted(by_offset[o] for o in (3, 4))
        for o in (3, 4):
            assert s3.get(by_offset[o]) == originals[o]
    finally:
        p.stop()
        broker.stop()


def test_a_compacted_overwrite_frees_the_old_object(workdir, s3):
    """A compacted topic on noida-db (which compacts; tansu does not): once
    the broker's cleaner has removed the overwritten record, its object is
    unreferenced and goes; the latest value's object stays."""
    import time

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from conftest import Noida

    broker = Noida(workdir)
    p = Proxy(broker.address, workdir, capture=False, env=s3.proxy_env())
    try:
        p.wait_ready()
        topic = "compacted-" + uuid.uuid4().hex[:8]
        admin = AdminClient({"bootstrap.servers": broker.address})
        config = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
                  "delete.retention.ms": "100"}
        admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(15)
        producer = Producer({"bootstrap.servers": p.bootstrap})
        old, new = os.urandom(4000), os.urandom(5000)
        for v in (old, new):
            producer.produce(topic, key=b"doc-1", value=v, headers=[("LFS_BLOB", b"")])
            assert producer.flush(60) == 0
        keys = {hashlib.sha256(v).hexdigest(): v for v in (old, new)}
        stored = {hashlib.sha256(s3.get(k)).hexdigest(): k for k in s3.keys(f"default/{topic}/")}
        assert set(stored) == set(keys), "both values offloaded"
        old_key, new_key = stored[hashlib.sha256(old).hexdigest()], stored[hashlib.sha256(new).hexdigest()]

        # Until the cleaner has run, both records are in the log: both kept.
        # noida-db compacts a segment once it rolls, on a later append: an
        # ordinary record (no object) now and then rolls it.
        deadline = time.time() + 30
        while True:
            time.sleep(0.3)
            producer.produce(topic, key=b"tick", value=b"t")
            assert producer.flush(30) == 0
            r = gc(broker, s3, "--topic", topic, "--grace-sec", "0")
            assert r.returncode == 0, r.stderr
            if listed(r.stdout) == [old_key] or time.time() > deadline:
                break
            assert listed(r.stdout) == [], r.stdout
        assert listed(r.stdout) == [old_key], r.stderr
        r = gc(broker, s3, "--topic", topic, "--grace-sec", "0", "--delete")
        assert r.returncode == 0, r.stderr
        assert s3.keys(f"default/{topic}/") == [new_key]
        assert s3.get(new_key) == new
    finally:
        p.stop()
        broker.stop()
