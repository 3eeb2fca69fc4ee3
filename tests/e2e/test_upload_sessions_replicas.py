"""Upload sessions that survive replicas and restarts, against tansu and
SeaweedFS (and the local store for the restart): parts of one upload go
alternately to two replicas sharing the bucket, complete on the second;
the same part sent to both at once; abort and expiry found by either
replica (counted once); a proxy restarted mid-upload goes on; the
`Idempotency-Key` of `complete` replays the first answer on the other
replica; ownership holds across replicas."""

import concurrent.futures
import hashlib
import os
import time

import pytest
import requests

from conftest import Proxy, metric, start_replicas, stop_replicas
from test_lfs import consume, create_topic, stored_files

MIB = 1024 * 1024
PART = 5 * MIB
KEYS = ("owner-key", "other-key")


@pytest.fixture(scope="module")
def replicas(tansu, workdir, s3):
    env = {**s3.proxy_env(), "KAFSCALE_LFS_PROXY_HTTP_API_KEY": ",".join(KEYS),
           "KAFSCALE_LFS_PROXY_UPLOAD_SESSION_TTL_SEC": "3"}
    replicas = start_replicas(tansu, workdir, env)
    yield replicas
    stop_replicas(replicas)


def url(p, path):
    return f"http://127.0.0.1:{p.http_port}{path}"


def h(key=KEYS[0], **extra):
    return {"X-API-Key": key, **extra}


def open_session(p, topic, size, **extra):
    body = {"topic": topic, "content_type": "application/octet-stream", "size_bytes": size, **extra}
    r = requests.post(url(p, "/lfs/uploads"), json=body, headers=h(), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["upload_id"]


def put_part(p, uid, n, data, key=KEYS[0]):
    return requests.put(url(p, f"/lfs/uploads/{uid}/parts/{n}"), data=data, headers=h(key), timeout=60)


def complete(p, uid, etags, key=KEYS[0], **headers):
    body = {"parts": [{"part_number": i + 1, "etag": e} for i, e in enumerate(etags)]}
    return requests.post(url(p, f"/lfs/uploads/{uid}/complete"), json=body, headers=h(key, **headers), timeout=60)


def open_uploads(s3, topic):
    return s3.client().list_multipart_uploads(Bucket=s3.BUCKET, Prefix=f"default/{topic}/").get("Uploads", [])


def session_records(s3, uid):
    return s3.keys(f"_lfs_uploads/default/{uid}/")


def test_parts_alternate_between_replicas_and_complete_on_the_second(replicas, s3):
    a, b = replicas
    topic = create_topic(a.bootstrap)
    payload = os.urandom(3 * PART + 12345)
    uid = open_session(a, topic, len(payload), checksum=hashlib.sha256(payload).hexdigest())
    etags = []
    for n, offset in enumerate(range(0, len(payload), PART), start=1):
        replica = (a, b)[(n - 1) % 2]
        r = put_part(replica, uid, n, payload[offset:offset + PART])
        assert r.status_code == 200, r.text
        etags.append(r.json()["etag"])
    # The part before is on the other replica; order is still enforced.
    r = put_part(b, uid, 6, b"x")
    assert r.status_code == 409 and r.json()["code"] == "out_of_order", r.text
    assert "part 5 is expected next" in r.json()["message"]
    # Another caller sees no such session on either replica.
    for p in (a, b):
        assert put_part(p, uid, 1, payload[:PART], key=KEYS[1]).status_code == 404
        assert complete(p, uid, etags, key=KEYS[1]).status_code == 404

    done = complete(b, uid, etags)
    assert done.status_code == 200, done.text
    env = done.json()
    stored = s3.get(env["key"])
    assert len(stored) == len(payload) == env["size"]
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(payload).hexdigest() == env["sha256"]
    [m] = consume(a.bootstrap, topic, 1)
    assert m.value() == done.content
    assert open_uploads(s3, topic) == [], "the multipart upload is completed"
    assert session_records(s3, uid) == [f"_lfs_uploads/default/{uid}/end.json"], "only the tombstone"
    # The session is over on both replicas.
    for p in (a, b):
        r = complete(p, uid, etags)
        assert r.status_code == 404 and r.json()["code"] == "upload_not_found", r.text


def test_one_part_sent_to_both_replicas_at_once(replicas, s3):
    a, b = replicas
    topic = create_topic(a.bootstrap)
    payload = os.urandom(PART + 1000)
    uid = open_session(a, topic, len(payload))
    first = payload[:PART]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        same = list(pool.map(lambda p: put_part(p, uid, 1, first), (a, b)))
    assert [r.status_code for r in same] == [200, 200], [r.text for r in same]
    assert same[0].json()["etag"] == same[1].json()["etag"]
    # The last part: one replica gets these bytes, the other other bytes.
    last, other = payload[PART:], os.urandom(1000)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        raced = list(pool.map(lambda args: put_part(args[0], uid, 2, args[1]), ((a, last), (b, other))))
    codes = sorted(r.status_code for r in raced)
    assert codes == [200, 409], [r.text for r in raced]
    winner = next(r for r in raced if r.status_code == 200)
    won_bytes = last if raced[0].status_code == 200 else other
    done = complete(b, uid, [same[0].json()["etag"], winner.json()["etag"]])
    assert done.status_code == 200, done.text
    stored = s3.get(done.json()["key"])
    assert stored == payload[:PART] + won_bytes, "the object holds exactly the parts that were answered 200"


def test_abort_and_expiry_on_either_replica_leave_nothing_and_count_once(replicas, s3):
    a, b = replicas
    topic = create_topic(a.bootstrap)
    aborted = open_session(a, topic, 2 * PART)
    assert put_part(a, aborted, 1, os.urandom(PART)).status_code == 200
    assert requests.delete(url(b, f"/lfs/uploads/{aborted}"), headers=h(KEYS[1]), timeout=30).status_code == 404
    r = requests.delete(url(b, f"/lfs/uploads/{aborted}"), headers=h(), timeout=30)
    assert r.status_code == 204, r.text
    assert requests.delete(url(a, f"/lfs/uploads/{aborted}"), headers=h(), timeout=30).status_code == 404
    assert put_part(a, aborted, 2, os.urandom(PART)).status_code == 404

    def expired_total():
        return sum(metric(requests.get(url(p, "/metrics"), timeout=5).text,
                          "kafka_lfs_proxy_http_upload_sessions_expired_total") or 0 for p in (a, b))

    before = expired_total()
    expiring = open_session(b, topic, 2 * PART)
    assert put_part(b, expiring, 1, os.urandom(PART)).status_code == 200
    # Both replicas' reapers find it (TTL 3 s, a pass every 3 s).
    deadline = time.time() + 20
    while time.time() < deadline and (open_uploads(s3, topic) or expired_total() == before):
        time.sleep(0.3)
    assert open_uploads(s3, topic) == [], "both multipart uploads were aborted"
    time.sleep(4)  # another pass on each replica
    assert expired_total() == before + 1, "ended, and counted, once across the replicas"
    r = put_part(a, expiring, 2, b"x")
    assert r.status_code == 410 and r.json()["code"] == "upload_expired", r.text
    for uid in (aborted, expiring):
        assert session_records(s3, uid) == [f"_lfs_uploads/default/{uid}/end.json"]
    assert s3.keys(f"default/{topic}/") == [], "no object"


def test_idempotency_key_on_complete_replays_on_the_other_replica(replicas, s3):
    a, b = replicas
    topic = create_topic(a.bootstrap)
    payload = os.urandom(300_000)
    uid = open_session(a, topic, len(payload))
    etag = put_part(b, uid, 1, payload).json()["etag"]
    first = complete(a, uid, [etag], **{"Idempotency-Key": "complete-1"})
    assert first.status_code == 200, first.text
    again = complete(b, uid, [etag], **{"Idempotency-Key": "complete-1"})
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    for header in ("x-kafka-partition", "x-kafka-offset"):
        assert again.headers[header] == first.headers[header]
    assert len(consume(a.bootstrap, topic, 2, timeout=5)) == 1, "one record"
    assert s3.keys(f"default/{topic}/") == [first.json()["key"]], "one object"
    # The key completing another session, or producing, is a conflict;
    # another caller's identical key is its own.
    other = open_session(a, topic, 10)
    other_etag = put_part(a, other, 1, b"0123456789").json()["etag"]
    r = complete(b, other, [other_etag], **{"Idempotency-Key": "complete-1"})
    assert r.status_code == 409 and r.json()["code"] == "idempotency_conflict", r.text
    r = requests.post(url(a, "/lfs/produce"), data=b"body", timeout=30,
                      headers=h(**{"X-Kafka-Topic": topic, "Idempotency-Key": "complete-1"}))
    assert r.status_code == 409, r.text
    ok = complete(b, other, [other_etag], **{"Idempotency-Key": "complete-2"})
    assert ok.status_code == 200 and "idempotent-replayed" not in ok.headers, ok.text


def test_a_restarted_proxy_goes_on_with_the_session(tansu, workdir):
    """Local store: the staged bytes and the session records are in the
    storage directory; a new process with the same directory continues."""
    storage = workdir / "restart-store"
    env = {"KAFSCALE_LFS_PROXY_STORAGE_DIR": str(storage)}
    first = Proxy(tansu.address, workdir, capture=False, env=env)
    first.wait_ready()
    topic = create_topic(first.bootstrap)
    payload = os.urandom(2 * PART + 777)
    r = requests.post(url(first, "/lfs/uploads"), timeout=30, json={
        "topic": topic, "content_type": "a/b", "size_bytes": len(payload),
        "checksum": hashlib.md5(payload).hexdigest(), "checksum_alg": "md5"})
    uid = r.json()["upload_id"]
    e1 = requests.put(url(first, f"/lfs/uploads/{uid}/parts/1"), data=payload[:PART], timeout=30).json()["etag"]
    first.stop()  # killed: nothing of the session was in the process

    second = Proxy(tansu.address, workdir, capture=False, env=env)
    try:
        second.wait_ready()
        again = requests.put(url(second, f"/lfs/uploads/{uid}/parts/1"), data=payload[:PART], timeout=30)
        assert again.status_code == 200 and again.json()["etag"] == e1, again.text
        etags = [e1]
        for n, offset in ((2, PART), (3, 2 * PART)):
            r = requests.put(url(second, f"/lfs/uploads/{uid}/parts/{n}"), data=payload[offset:offset + PART],
                             timeout=30)
            assert r.status_code == 200, r.text
            etags.append(r.json()["etag"])
        body = {"parts": [{"part_number": i + 1, "etag": e} for i, e in enumerate(etags)]}
        done = requests.post(url(second, f"/lfs/uploads/{uid}/complete"), json=body, timeout=30)
        assert done.status_code == 200, done.text
        env_ = done.json()
        assert env_["checksum_alg"] == "md5" and env_["checksum"] == hashlib.md5(payload).hexdigest()
        assert (storage / env_["key"]).read_bytes() == payload
        assert env_["sha256"] == hashlib.sha256(payload).hexdigest()
        leftovers = [p for p in stored_files(storage) if "_lfs_uploads" in str(p)]
        assert leftovers == [], "only the session's tombstone stays"
        assert "panicked" not in second.read_log()
    finally:
        second.stop()
