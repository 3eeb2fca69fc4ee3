"""Nothing dangles, under faults: every multipart upload the proxy starts
ends completed or aborted, also when S3 dies mid-upload (the abort is
retried until S3 answers) and when the shutdown deadline cuts an upload
(aborted within the cleanup budget, or recorded and finished by the next
start). Real SeaweedFS behind a throttling relay, real tansu, confluent-kafka."""

import hashlib
import json
import os
import signal
import time

import pytest

from conftest import Proxy, metric
from faults import Relay
from test_lfs import consume, create_topic

MIB = 1024 * 1024


def uploads(s3):
    """Multipart uploads open in the bucket, asked of SeaweedFS directly."""
    return s3.client().list_multipart_uploads(Bucket=s3.BUCKET).get("Uploads", [])


def parts(s3, upload):
    return s3.client().list_parts(Bucket=s3.BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", [])


def wait_for(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def relayed_proxy(tansu, workdir, s3, relay, **env):
    full = dict(s3.proxy_env(), KAFSCALE_LFS_PROXY_S3_ENDPOINT=relay.endpoint,
                KAFSCALE_LFS_PROXY_MAX_FRAME_SIZE=str(64 * MIB))
    full.update(env)
    p = Proxy(tansu.address, workdir, capture=False, env=full)
    p.wait_ready()
    return p


def lfs_producer(bootstrap):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                     "message.max.bytes": 60 * MIB, "message.timeout.ms": 180000,
                     "retry.backoff.ms": 500, "retry.backoff.max.ms": 2000, "linger.ms": 0})


@pytest.fixture
def empty_bucket(s3):
    if s3.proc.poll() is not None:
        s3.start()
    for u in uploads(s3):
        s3.client().abort_multipart_upload(Bucket=s3.BUCKET, Key=u["Key"], UploadId=u["UploadId"])
    yield s3


def test_s3_dying_mid_upload_leaves_no_multipart_upload(tansu, workdir, empty_bucket):
    s3 = empty_bucket
    relay = Relay("127.0.0.1", s3.ports["s3.port"], upload_rate=8 * MIB)
    p = relayed_proxy(tansu, workdir, s3, relay)
    try:
        topic = create_topic(p.bootstrap)
        value = os.urandom(40 * MIB)
        results = []
        producer = lfs_producer(p.bootstrap)
        producer.produce(topic, key=b"big", value=value,
                         headers=[("LFS_BLOB", hashlib.sha256(value).hexdigest().encode())],
                         on_delivery=lambda e, m: results.append(e))
        # Kill S3 once the first part of the upload is stored.
        deadline = time.time() + 60
        while time.time() < deadline:
            producer.poll(0.05)
            open_uploads = uploads(s3)
            if open_uploads and parts(s3, open_uploads[0]):
                break
        else:
            raise AssertionError("no part was ever stored:\n" + p.read_log()[-3000:])
        s3.kill()
        try:
            def refused():
                producer.poll(0.1)
                return "LFS partition refused" in p.read_log()

            wait_for("the proxy to answer KAFKA_STORAGE_ERROR", refused, 60)
            time.sleep(2)
        finally:
            s3.start()
        assert producer.flush(180) == 0
        assert results == [None], results

        # The killed attempt's upload is aborted once S3 answers again.
        wait_for("no multipart upload left", lambda: uploads(s3) == [], 30)
        got = consume(p.bootstrap, topic, 1)
        assert len(got) == 1, "the record once"
        envelope = json.loads(got[0].value())
        stored = s3.get(envelope["key"])
        assert hashlib.sha256(stored).hexdigest() == envelope["sha256"] == hashlib.sha256(value).hexdigest()
        assert s3.keys(f"default/{topic}/") == [envelope["key"]], "one object, the envelope's"
        metrics = p.http("/metrics")[1]
        assert metric(metrics, "kafka_lfs_proxy_lfs_orphans_left_total") >= 1, metrics
        assert metric(metrics, 'kafka_lfs_proxy_lfs_cleanups_total{outcome="aborted"}') >= 1, metrics
        assert metric(metrics, "kafka_lfs_proxy_lfs_orphans_pending") == 0, metrics
        log = p.read_log()
        assert "left-over multipart upload removed on retry" in log, log[-3000:]
    finally:
        p.stop()
        relay.stop()


def sigterm_during_upload(tansu, workdir, s3, relay, size, **env):
    """Starts a proxy, sends one LFS record of `size` bytes through the slow
    relay, and sends SIGTERM once its multipart upload has begun. Returns
    the stopped proxy, its exit code and the seconds it took to exit."""
    p = relayed_proxy(tansu, workdir, s3, relay, KAFSCALE_LFS_PROXY_SHUTDOWN_TIMEOUT_MS="300", **env)
    topic = create_topic(p.bootstrap)
    producer = lfs_producer(p.bootstrap)
    producer.produce(topic, value=os.urandom(size), headers=[("LFS_BLOB", b"")])
    deadline = time.time() + 60
    while time.time() < deadline and not (uploads(s3) and parts(s3, uploads(s3)[0])):
        producer.poll(0.05)
    assert uploads(s3), "the upload began:\n" + p.read_log()[-3000:]
    return p, producer


def test_shutdown_deadline_aborts_the_cut_upload(tansu, workdir, empty_bucket):
    s3 = empty_bucket
    relay = Relay("127.0.0.1", s3.ports["s3.port"], upload_rate=10 * MIB)
    p, producer = sigterm_during_upload(tansu, workdir, s3, relay, 30 * MIB)
    try:
        key = uploads(s3)[0]["Key"]
        started = time.time()
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(15) == 0
        took = time.time() - started
        assert took < 8, f"exit within the deadline plus the cleanup budget, took {took:.1f}s"
        assert uploads(s3) == [], "the cut upload was aborted before exit"
        log = p.read_log()
        assert "shutdown cleanup done" in log and "removed=1" in log, log[-3000:]
        assert s3.keys(key) == [], "no object for the record that was not delivered"
    finally:
        p.stop()
        relay.stop()
        producer.purge()


def test_an_abort_storage_refuses_at_shutdown_is_finished_by_the_next_start(tansu, workdir, empty_bucket):
    s3 = empty_bucket
    relay = Relay("127.0.0.1", s3.ports["s3.port"], upload_rate=10 * MIB)
    storage_dir = workdir / f"fallback-{os.getpid()}-{time.time_ns()}"
    env = {"KAFSCALE_LFS_PROXY_STORAGE_DIR": str(storage_dir), "KAFSCALE_LFS_PROXY_SHUTDOWN_CLEANUP_MS": "1500"}
    p, producer = sigterm_during_upload(tansu, workdir, s3, relay, 30 * MIB, **env)
    second = None
    try:
        open_upload = uploads(s3)[0]
        # S3 stops answering (connections stay open): neither the abort nor
        # the ledger can reach it, so the ledger goes to the storage dir.
        relay.stall()
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(20) == 0
        log = p.read_log()
        assert "recording it for the next start" in log and open_upload["UploadId"] in log, log[-3000:]
        ledger = list((storage_dir / "_lfs_pending").glob("pending-*.json"))
        assert len(ledger) == 1, log[-3000:]
        entries = json.loads(ledger[0].read_text())
        assert entries == [{"kind": "multipart", "key": open_upload["Key"], "upload_id": open_upload["UploadId"]}]
        assert uploads(s3) != [], "still open: nothing could reach S3"
        relay.resume()

        # The next start, with the same storage dir, finishes it.
        second = relayed_proxy(tansu, workdir, s3, relay, **env)
        wait_for("the recorded upload to be aborted", lambda: uploads(s3) == [], 30)
        wait_for("the ledger file to be removed", lambda: not ledger[0].exists(), 10)
        assert "recorded leftover removed" in second.read_log()
    finally:
        p.stop()
        if second:
            second.stop()
        relay.stop()
        producer.purge()
