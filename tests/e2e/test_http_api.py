"""The HTTP sidecar against tansu and the local-directory store, with a real
HTTP client (requests): produce with the broker's answer checked, upload
sessions, verified downloads and every error code of the download table,
API keys, CORS, idle timeouts, metrics and the served OpenAPI document."""

import base64
import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO, Proxy, metric
from test_lfs import consume, create_topic, stored_files

KEYS = ("key-one", "key-two")
ORIGIN = "https://app.example"
MAX_BLOB = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def api(tansu, workdir):
    p = Proxy(tansu.address, workdir, capture=False, env={
        "KAFSCALE_LFS_PROXY_HTTP_API_KEY": ",".join(KEYS),
        "KAFSCALE_LFS_PROXY_HTTP_CORS_ALLOWED_ORIGINS": ORIGIN,
        "KAFSCALE_LFS_PROXY_MAX_BLOB_SIZE": str(MAX_BLOB),
        "KAFSCALE_LFS_PROXY_HTTP_READ_TIMEOUT_SEC": "1",
        "KAFSCALE_LFS_PROXY_DOWNLOAD_TEMP_DIR": str(workdir / "download-temp"),
    })
    (workdir / "download-temp").mkdir(exist_ok=True)
    p.wait_ready()
    p.url = f"http://127.0.0.1:{p.http_port}"
    yield p
    log = p.read_log()
    p.stop()
    assert "panicked" not in log


def auth(key=KEYS[0]):
    return {"X-API-Key": key}


def produce(api, topic, body, key=None, headers=None, api_key=KEYS[0]):
    h = {"X-Kafka-Topic": topic, **auth(api_key), **(headers or {})}
    if key is not None:
        h["X-Kafka-Key"] = base64.b64encode(key).decode()
    return requests.post(f"{api.url}/lfs/produce", data=body, headers=h, timeout=60)


def download(api, key, sha256, size, **extra):
    body = {"key": key, "integrity": {"sha256": sha256, "size": size}, **extra}
    return requests.post(f"{api.url}/lfs/download", json=body, headers=auth(), timeout=60)


def assert_error(r, status, code):
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert body["code"] == code, body
    assert body["request_id"] == r.headers["X-Request-ID"] and body["message"]
    return body


def test_produce_consume_download_identical(api):
    topic = create_topic(api.bootstrap, partitions=3)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    before = time.time()
    r = produce(api, topic, payload, key=b"order-42",
                headers={"Content-Type": "image/png", "X-Kafka-Header-trace-id": "t-1"})
    assert r.status_code == 200, r.text
    env = r.json()
    assert env["size"] == len(payload) and env["sha256"] == hashlib.sha256(payload).hexdigest()
    assert env["content_type"] == "image/png" and env["key"].startswith(f"default/{topic}/lfs/")
    partition, offset = int(r.headers["X-Kafka-Partition"]), int(r.headers["X-Kafka-Offset"])

    [m] = consume(api.bootstrap, topic, 1, partitions=3)
    assert json.loads(m.value()) == env
    assert (m.partition(), m.offset()) == (partition, offset)
    assert m.key() == b"order-42"
    assert dict(m.headers()) == {"trace-id": b"t-1"}
    ts_type, ts = m.timestamp()
    assert ts_type == 1 and before - 5 <= ts / 1000 <= time.time() + 5, "a real CreateTime timestamp"

    d = download(api, env["key"], env["sha256"], env["size"])
    assert d.status_code == 200 and d.content == payload
    assert int(d.headers["Content-Length"]) == len(payload)
    assert d.headers["X-Kafscale-LFS-Checksum"] == "sha256=" + env["sha256"]


def test_key_picks_the_partition_kafkas_default_partitioner_picks(api):
    from confluent_kafka import Producer

    topic = create_topic(api.bootstrap, partitions=3)
    keys = [f"customer-{i}".encode() for i in range(12)]
    p = Producer({"bootstrap.servers": api.bootstrap, "partitioner": "murmur2_random"})
    for k in keys:
        p.produce(topic, key=k, value=b"direct")
    assert p.flush(30) == 0
    for k in keys:
        assert produce(api, topic, b"x" * 10, key=k).status_code == 200
    got = consume(api.bootstrap, topic, 2 * len(keys), partitions=3)
    by_kind = {}
    for m in got:
        kind = "direct" if m.value() == b"direct" else "http"
        by_kind.setdefault(kind, {})[m.key()] = m.partition()
    assert by_kind["http"] == by_kind["direct"], "same key, same partition as librdkafka's murmur2"
    assert len(set(by_kind["http"].values())) > 1


def test_explicit_partition_and_unkeyed_spread(api):
    topic = create_topic(api.bootstrap, partitions=3)
    r = produce(api, topic, b"p2", headers={"X-Kafka-Partition": "2"})
    assert r.status_code == 200 and r.headers["X-Kafka-Partition"] == "2"
    spread = {produce(api, topic, b"v").headers["X-Kafka-Partition"] for _ in range(6)}
    assert spread == {"0", "1", "2"}


def test_partition_error_is_an_http_error_and_the_object_is_deleted(api):
    topic = create_topic(api.bootstrap, partitions=3)
    r = produce(api, topic, b"never lands", headers={"X-Kafka-Partition": "7"})
    assert_error(r, 400, "invalid_partition")
    assert "7" in r.json()["message"]
    assert not list(api.storage_dir.rglob(f"*{topic}*/**/obj-*")), "no object without an envelope"
    assert consume(api.bootstrap, topic, 1, partitions=3, timeout=2) == []


def test_kafka_down_is_503_and_nothing_is_left(workdir):
    dead = socket.socket()
    dead.bind(("127.0.0.2", 0))
    port = dead.getsockname()[1]
    dead.close()
    p = Proxy(f"127.0.0.2:{port}", workdir, capture=False,
              env={"KAFSCALE_LFS_PROXY_PRODUCE_TIMEOUT_MS": "1500",
                   "KAFSCALE_LFS_PROXY_UPSTREAM_CONNECT_TIMEOUT_MS": "300"})
    try:
        url = f"http://127.0.0.1:{p.http_port}"
        ready = requests.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 503 and "upstream" in ready.text
        r = requests.post(f"{url}/lfs/produce", data=os.urandom(1000), headers={"X-Kafka-Topic": "t"}, timeout=30)
        assert_error(r, 503, "backend_unavailable")
        assert "127.0.0.2" not in r.text, "broker error text is logged, not returned"
        assert stored_files(p.storage_dir) == []
        assert "127.0.0.2" in p.read_log()
    finally:
        p.stop()


@pytest.mark.parametrize("alg,digest", [
    ("sha256", lambda b: hashlib.sha256(b).hexdigest()),
    ("md5", lambda b: hashlib.md5(b).hexdigest()),
])
def test_upload_checksum_verified(api, alg, digest):
    topic = create_topic(api.bootstrap)
    body = os.urandom(100_000)
    ok = produce(api, topic, body, headers={"X-LFS-Checksum": digest(body).upper(), "X-LFS-Checksum-Alg": alg})
    assert ok.status_code == 200, ok.text
    assert ok.json()["checksum"] == digest(body) and ok.json()["checksum_alg"] == alg
    before = stored_files(api.storage_dir)
    bad = produce(api, topic, body, headers={"X-LFS-Checksum": digest(b"other"), "X-LFS-Checksum-Alg": alg})
    assert_error(bad, 400, "checksum_mismatch")
    assert stored_files(api.storage_dir) == before, "a mismatching upload leaves nothing"


@pytest.mark.parametrize("headers,body,status,code", [
    ({"X-Kafka-Topic": ""}, b"x", 400, "missing_topic"),
    ({"X-Kafka-Topic": "a/b"}, b"x", 400, "invalid_topic"),
    ({"X-Kafka-Topic": "t" * 250}, b"x", 400, "invalid_topic"),
    ({"X-Kafka-Topic": "t", "X-Kafka-Key": "%%%"}, b"x", 400, "invalid_key"),
    ({"X-Kafka-Topic": "t", "X-Kafka-Partition": "-1"}, b"x", 400, "invalid_partition"),
    ({"X-Kafka-Topic": "t", "X-LFS-Checksum-Alg": "sha1"}, b"x", 400, "invalid_checksum"),
    ({"X-Kafka-Topic": "t", "X-LFS-Checksum": "abc"}, b"x", 400, "invalid_checksum"),
    ({"X-Kafka-Topic": "t"}, b"", 400, "empty_upload"),
    ({"X-Kafka-Topic": "t"}, b"x" * (MAX_BLOB + 1), 413, "payload_too_large"),
])
def test_produce_error_codes(api, headers, body, status, code):
    before = stored_files(api.storage_dir)
    r = requests.post(f"{api.url}/lfs/produce", data=body, headers={**auth(), **headers}, timeout=30)
    assert_error(r, status, code)
    assert stored_files(api.storage_dir) == before


def test_oversized_chunked_body_is_cut_off_and_aborted(api):
    before = stored_files(api.storage_dir)

    def chunks():
        for _ in range(MAX_BLOB // (1024 * 1024) + 2):
            yield b"z" * (1024 * 1024)

    r = requests.post(f"{api.url}/lfs/produce", data=chunks(), headers={**auth(), "X-Kafka-Topic": "big"}, timeout=60)
    assert_error(r, 413, "payload_too_large")
    assert stored_files(api.storage_dir) == before, "no object and no multipart staging left"


def test_stalled_body_times_out_without_leftovers(api):
    before = stored_files(api.storage_dir)
    with socket.create_connection(("127.0.0.1", api.http_port)) as s:
        s.sendall(b"POST /lfs/produce HTTP/1.1\r\nHost: x\r\nX-API-Key: key-one\r\nX-Kafka-Topic: t\r\n"
                  b"Content-Length: 1000000\r\n\r\n" + b"a" * 1000)
        s.settimeout(10)
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 408"), head
    assert '"code":"request_timeout"' in head
    assert stored_files(api.storage_dir) == before


def test_slow_but_steady_body_is_never_cut_off(api):
    topic = create_topic(api.bootstrap)

    def trickle():
        for i in range(5):  # 2.5 s in all, > the 1 s idle timeout, < 1 s between pieces
            time.sleep(0.5)
            yield bytes([i]) * 1000

    r = requests.post(f"{api.url}/lfs/produce", data=trickle(), headers={**auth(), "X-Kafka-Topic": topic}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["size"] == 5000


def test_api_keys(api):
    url = f"{api.url}/lfs/download"
    assert_error(requests.post(url, json={}, timeout=5), 401, "unauthorized")
    assert_error(requests.post(url, json={}, headers={"X-API-Key": "key-on"}, timeout=5), 401, "unauthorized")
    assert_error(requests.post(url, json={}, headers={"Authorization": "Bearer nope"}, timeout=5), 401, "unauthorized")
    for h in ({"X-API-Key": KEYS[1]}, {"Authorization": f"Bearer {KEYS[0]}"}):
        assert_error(requests.post(url, json={}, headers=h, timeout=5), 400, "invalid_key")
    # Health, metrics and the document need no key.
    for path in ("/livez", "/readyz", "/metrics", "/openapi.yaml"):
        assert requests.get(api.url + path, timeout=5).status_code == 200, path


def test_request_id_is_echoed_or_generated(api):
    r = requests.post(f"{api.url}/lfs/produce", headers={"X-Request-ID": "trace-123"}, timeout=5)
    assert r.headers["X-Request-ID"] == "trace-123" and r.json()["request_id"] == "trace-123"
    r = requests.post(f"{api.url}/lfs/produce", timeout=5)
    assert len(r.headers["X-Request-ID"]) == 36
    ok = requests.get(f"{api.url}/livez", timeout=5)
    assert ok.headers["X-Request-ID"]
    assert_error(requests.get(f"{api.url}/lfs/nothing", headers=auth(), timeout=5), 404, "not_found")
    assert_error(requests.get(f"{api.url}/lfs/produce", headers=auth(), timeout=5), 405, "method_not_allowed")


def test_cors_allows_only_the_configured_origin(api, proxy):
    pre = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "x-api-key,x-kafka-topic,x-kafka-header-trace"}
    ok = requests.options(f"{api.url}/lfs/produce", headers={"Origin": ORIGIN, **pre}, timeout=5)
    assert ok.status_code == 200, "preflight answered before authentication"
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "x-kafka-header-trace" in ok.headers["Access-Control-Allow-Headers"].lower()
    other = requests.options(f"{api.url}/lfs/produce", headers={"Origin": "https://evil.example", **pre}, timeout=5)
    assert "Access-Control-Allow-Origin" not in other.headers
    actual = requests.post(f"{api.url}/lfs/produce", headers={"Origin": ORIGIN}, timeout=5)
    assert actual.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "x-request-id" in actual.headers["Access-Control-Expose-Headers"].lower()
    # The default proxy has no origins configured: no cross-origin access at all.
    default = f"http://127.0.0.1:{proxy.http_port}"
    none = requests.options(f"{default}/lfs/produce", headers={"Origin": ORIGIN, **pre}, timeout=5)
    assert "Access-Control-Allow-Origin" not in none.headers
    assert "Access-Control-Allow-Origin" not in requests.get(f"{default}/livez", headers={"Origin": ORIGIN}).headers


def stored_object(api, size=100_000):
    topic = create_topic(api.bootstrap)
    payload = os.urandom(size)
    r = produce(api, topic, payload)
    assert r.status_code == 200, r.text
    return r.json(), payload


@pytest.mark.parametrize("change,status,code", [
    (lambda b: b.pop("integrity"), 400, "missing_integrity"),
    (lambda b: b["integrity"].pop("sha256"), 400, "missing_integrity"),
    (lambda b: b["integrity"].update(sha256="xyz"), 400, "invalid_integrity"),
    (lambda b: b["integrity"].update(size=-1), 400, "invalid_integrity"),
    (lambda b: b["integrity"].pop("size"), 400, "missing_integrity_size"),
    (lambda b: b["integrity"].update(size=MAX_BLOB + 1), 400, "payload_too_large"),
    (lambda b: b.update(mode="presign"), 400, "presign_disabled"),
    (lambda b: b["integrity"].update(checksum_alg="md5"), 400, "unsupported_checksum_alg"),
    (lambda b: b.update(mode="carrier-pigeon"), 400, "invalid_mode"),
    (lambda b: b.update(bucket="someone-elses"), 400, "invalid_bucket"),
    (lambda b: b.update(key="default/t/lfs/../../../../etc/passwd"), 400, "invalid_key"),
    (lambda b: b.update(key="/etc/passwd"), 400, "invalid_key"),
    (lambda b: b.update(key="other-namespace/t/lfs/2026/01/01/obj-x"), 400, "invalid_key"),
    (lambda b: b.update(key=b["key"] + "-missing"), 404, "not_found"),
    (lambda b: b["integrity"].update(size=b["integrity"]["size"] - 1), 502, "integrity_failure"),
    (lambda b: b["integrity"].update(size=b["integrity"]["size"] + 1), 502, "integrity_failure"),
    (lambda b: b["integrity"].update(sha256="0" * 64), 502, "integrity_failure"),
])
def test_download_error_table(api, change, status, code):
    env, payload = stored_object(api)
    body = {"bucket": env["bucket"], "key": env["key"], "mode": "stream",
            "integrity": {"sha256": env["sha256"], "checksum_alg": "sha256", "size": env["size"]}}
    change(body)
    r = requests.post(f"{api.url}/lfs/download", json=body, headers=auth(), timeout=30)
    assert_error(r, status, code)
    assert payload[:64] not in r.content, "no payload byte in an error"


def test_download_invalid_json_and_temp_storage_failure(api, workdir):
    assert_error(requests.post(f"{api.url}/lfs/download", data=b"{nope", headers=auth(), timeout=5),
                 400, "invalid_request")
    # A local store verifies objects above 4 MiB where they lie: no temp
    # space is needed (S3 downloads spill: test_http_s3.py).
    env, payload = stored_object(api, size=5 * 1024 * 1024)
    temp = workdir / "download-temp"
    temp.rename(workdir / "download-temp-gone")
    try:
        r = download(api, env["key"], env["sha256"], env["size"])
        assert r.status_code == 200 and r.content == payload
    finally:
        (workdir / "download-temp-gone").rename(temp)


def test_tampered_object_gives_integrity_failure_and_no_payload(api):
    env, payload = stored_object(api, size=6 * 1024 * 1024)  # verified on disk
    path = Path(env["bucket"]) / env["key"]
    # A file verified once (and settled) is sent again without hashing...
    time.sleep(1.2)
    reused = "kafka_lfs_proxy_http_download_verified_reused_total"
    before = metric(requests.get(f"{api.url}/metrics", timeout=5).text, reused)
    for _ in range(2):
        assert download(api, env["key"], env["sha256"], env["size"]).content == payload
    after = metric(requests.get(f"{api.url}/metrics", timeout=5).text, reused)
    assert after == before + 1, (before, after)
    # ...until it is written, even in place with the same size.
    tampered = bytearray(payload)
    tampered[4_000_000] ^= 0xFF
    path.write_bytes(bytes(tampered))
    r = download(api, env["key"], env["sha256"], env["size"])
    assert_error(r, 502, "integrity_failure")
    assert len(r.content) < 1000
    path.write_bytes(payload + b"appended")
    assert_error(download(api, env["key"], env["sha256"], env["size"]), 502, "integrity_failure")
    path.write_bytes(payload)
    assert download(api, env["key"], env["sha256"], env["size"]).content == payload
    metrics = requests.get(f"{api.url}/metrics", timeout=5).text
    assert metric(metrics, "kafka_lfs_proxy_http_integrity_failures_total") >= 2


def open_session(api, topic, size, api_key=KEYS[0], **extra):
    body = {"topic": topic, "content_type": "application/pdf", "size_bytes": size, **extra}
    r = requests.post(f"{api.url}/lfs/uploads", json=body, headers=auth(api_key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def put_part(api, upload_id, n, data, api_key=KEYS[0]):
    return requests.put(f"{api.url}/lfs/uploads/{upload_id}/parts/{n}", data=data, headers=auth(api_key), timeout=30)


def complete(api, upload_id, parts, api_key=KEYS[0]):
    body = {"parts": [{"part_number": i + 1, "etag": e} for i, e in enumerate(parts)]}
    return requests.post(f"{api.url}/lfs/uploads/{upload_id}/complete", json=body, headers=auth(api_key), timeout=30)


def test_upload_session_rules_and_error_codes(api):
    topic = create_topic(api.bootstrap)
    part_size = 5 * 1024 * 1024
    data = os.urandom(part_size + 1000)
    s = open_session(api, topic, len(data), key=base64.b64encode(b"k").decode(),
                     checksum=hashlib.sha256(data).hexdigest(), headers={"source": "scanner-7"})
    assert s["part_size"] == part_size and s["s3_key"].startswith(f"default/{topic}/lfs/")
    uid = s["upload_id"]
    assert_error(put_part(api, uid, 2, data[part_size:]), 409, "out_of_order")
    assert_error(put_part(api, uid, 1, data[:1000]), 400, "invalid_part")  # non-final part too small
    assert_error(put_part(api, uid, 1, data[:part_size + 1]), 400, "invalid_part")  # over part_size
    assert_error(put_part(api, uid, 0, b"x"), 400, "invalid_part")
    assert_error(put_part(api, uid, 1, b""), 400, "invalid_part")
    assert_error(put_part(api, uid, 1, data[:part_size], api_key=KEYS[1]), 404, "upload_not_found")
    p1 = put_part(api, uid, 1, data[:part_size])
    assert p1.status_code == 200, p1.text
    e1 = p1.json()["etag"]
    assert put_part(api, uid, 1, data[:part_size]).json()["etag"] == e1, "same part again: same etag"
    assert_error(put_part(api, uid, 1, os.urandom(part_size)), 409, "out_of_order")
    assert_error(complete(api, uid, [e1]), 400, "incomplete_upload")
    assert_error(put_part(api, uid, 2, data[part_size:] + b"extra"), 400, "invalid_part")  # beyond size_bytes
    p2 = put_part(api, uid, 2, data[part_size:])
    assert p2.status_code == 200
    assert_error(complete(api, uid, [e1, "wrong"]), 400, "invalid_part")
    assert_error(complete(api, uid, [e1]), 400, "invalid_part")
    assert_error(complete(api, uid, [e1, p2.json()["etag"]], api_key=KEYS[1]), 404, "upload_not_found")
    done = complete(api, uid, [e1, p2.json()["etag"]])
    assert done.status_code == 200, done.text
    env = done.json()
    assert env["key"] == s["s3_key"] and env["size"] == len(data) and env["content_type"] == "application/pdf"
    [m] = consume(api.bootstrap, topic, 1)
    assert json.loads(m.value()) == env and m.key() == b"k" and dict(m.headers()) == {"source": b"scanner-7"}
    assert download(api, env["key"], env["sha256"], env["size"]).content == data
    assert_error(complete(api, uid, [e1, p2.json()["etag"]]), 404, "upload_not_found")


@pytest.mark.parametrize("body,code", [
    ({"content_type": "a/b", "size_bytes": 1}, "missing_topic"),
    ({"topic": "a b", "content_type": "a/b", "size_bytes": 1}, "invalid_topic"),
    ({"topic": "t", "size_bytes": 1}, "missing_content_type"),
    ({"topic": "t", "content_type": "a/b", "size_bytes": 0}, "invalid_size"),
    ({"topic": "t", "content_type": "a/b"}, "invalid_size"),
    ({"topic": "t", "content_type": "a/b", "size_bytes": MAX_BLOB + 1}, "payload_too_large"),
    ({"topic": "t", "content_type": "a/b", "size_bytes": 1, "key": "%%"}, "invalid_key"),
    ({"topic": "t", "content_type": "a/b", "size_bytes": 1, "partition": -3}, "invalid_partition"),
    ({"topic": "t", "content_type": "a/b", "size_bytes": 1, "checksum": "zz"}, "invalid_checksum"),
    # A malformed field is reported before any limit (schemathesis ST201).
    ({"topic": "t", "content_type": "a/b", "size_bytes": MAX_BLOB + 1, "checksum_alg": "\u0090"},
     "invalid_checksum"),
    ({"topic": "t", "content_type": "a/b", "size_bytes": MAX_BLOB + 1, "partition": -1}, "invalid_partition"),
    ("not json", "invalid_request"),
])
def test_upload_init_error_codes(api, body, code):
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    r = requests.post(f"{api.url}/lfs/uploads", data=data, headers=auth(), timeout=10)
    assert_error(r, 413 if code == "payload_too_large" else 400, code)


def test_upload_checksum_mismatch_never_becomes_an_object(api):
    topic = create_topic(api.bootstrap)
    data = os.urandom(2000)
    before = stored_files(api.storage_dir)
    s = open_session(api, topic, len(data), checksum="0" * 64)
    e = put_part(api, s["upload_id"], 1, data).json()["etag"]
    assert stored_files(api.storage_dir) != before, "the part is staged"
    assert_error(complete(api, s["upload_id"], [e]), 400, "checksum_mismatch")
    assert not (api.storage_dir / s["s3_key"]).exists()
    assert stored_files(api.storage_dir) == before


def test_deleted_session_is_aborted(api):
    topic = create_topic(api.bootstrap)
    s = open_session(api, topic, 6 * 1024 * 1024)
    assert put_part(api, s["upload_id"], 1, os.urandom(5 * 1024 * 1024)).status_code == 200
    assert_error(requests.delete(f"{api.url}/lfs/uploads/{s['upload_id']}", headers=auth(KEYS[1]), timeout=5),
                 404, "upload_not_found")
    r = requests.delete(f"{api.url}/lfs/uploads/{s['upload_id']}", headers=auth(), timeout=5)
    assert r.status_code == 204
    assert_error(requests.delete(f"{api.url}/lfs/uploads/{s['upload_id']}", headers=auth(), timeout=5),
                 404, "upload_not_found")
    assert not [f for f in stored_files(api.storage_dir) if topic in str(f)], "no parts left"


def test_expired_session_is_410_and_aborted(tansu, workdir):
    p = Proxy(tansu.address, workdir, capture=False, env={"KAFSCALE_LFS_PROXY_UPLOAD_SESSION_TTL_SEC": "1"})
    try:
        p.wait_ready()
        p.url = f"http://127.0.0.1:{p.http_port}"
        s = requests.post(f"{p.url}/lfs/uploads", json={"topic": "t", "content_type": "a/b",
                                                        "size_bytes": 6 * 1024 * 1024}, timeout=5).json()
        part = put_part(p, s["upload_id"], 1, os.urandom(5 * 1024 * 1024), api_key=None)
        assert part.status_code == 200, part.text
        time.sleep(2.5)
        assert_error(put_part(p, s["upload_id"], 2, b"x"), 410, "upload_expired")
        assert stored_files(p.storage_dir) == [], "the multipart upload was aborted"
        # An expired session nobody touches is aborted by the reaper.
        s2 = requests.post(f"{p.url}/lfs/uploads", json={"topic": "t", "content_type": "a/b",
                                                         "size_bytes": 6 * 1024 * 1024}, timeout=5).json()
        assert put_part(p, s2["upload_id"], 1, os.urandom(5 * 1024 * 1024)).status_code == 200
        deadline = time.time() + 10
        while time.time() < deadline and stored_files(p.storage_dir):
            time.sleep(0.2)
        assert stored_files(p.storage_dir) == []
        metrics = requests.get(f"{p.url}/metrics", timeout=5).text
        assert metric(metrics, "kafka_lfs_proxy_http_upload_sessions_expired_total") == 2
        assert metric(metrics, "kafka_lfs_proxy_http_upload_sessions_open") == 0
    finally:
        p.stop()


def test_open_upload_sessions_are_bounded(tansu, workdir):
    """UPLOAD_SESSIONS_MAX: one session more is 429 too_many_upload_sessions
    and opens no multipart upload; a place comes back when a session ends
    (aborted here). Unbounded, each session held an open staging file and
    the http_api fuzzer ran the process out of descriptors."""
    p = Proxy(tansu.address, workdir, capture=False, env={"KAFSCALE_LFS_PROXY_UPLOAD_SESSIONS_MAX": "2"})
    try:
        p.wait_ready()
        url = f"http://127.0.0.1:{p.http_port}/lfs/uploads"
        init = {"topic": "t", "content_type": "a/b", "size_bytes": 10}
        first, second = (requests.post(url, json=init, timeout=5) for _ in range(2))
        assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)
        assert_error(requests.post(url, json=init, timeout=5), 429, "too_many_upload_sessions")
        assert requests.delete(f"{url}/{first.json()['upload_id']}", timeout=5).status_code == 204
        again = requests.post(url, json=init, timeout=5)
        assert again.status_code == 200, again.text
        assert_error(requests.post(url, json=init, timeout=5), 429, "too_many_upload_sessions")
        text = requests.get(f"http://127.0.0.1:{p.http_port}/metrics", timeout=5).text
        assert metric(text, "kafka_lfs_proxy_http_upload_sessions_open") == 2
    finally:
        p.stop()


def test_metrics_by_route_and_status(api):
    topic = create_topic(api.bootstrap)
    env = produce(api, topic, b"m" * 1234).json()
    assert download(api, env["key"], env["sha256"], env["size"]).status_code == 200
    assert requests.post(f"{api.url}/lfs/download", json={}, timeout=5).status_code == 401
    session = open_session(api, topic, 10)
    assert put_part(api, session["upload_id"], 1, b"p" * 10).status_code == 200
    text = requests.get(f"{api.url}/metrics", timeout=5).text
    assert metric(text, 'kafka_lfs_proxy_http_requests_total{route="/lfs/produce",method="POST",status="200"}') >= 1
    assert metric(text, 'kafka_lfs_proxy_http_requests_total{route="/lfs/download",method="POST",status="401"}') >= 1
    assert metric(text, 'kafka_lfs_proxy_http_bytes_total{direction="up"}') >= 1234
    assert metric(text, 'kafka_lfs_proxy_http_bytes_total{direction="down"}') >= 1
    assert metric(text, "kafka_lfs_proxy_storage_up") == 1
    assert "/lfs/uploads/{id}/parts/{n}" in text, "route templates, never raw ids"


def test_durations_are_histograms_with_buckets(api):
    """Every _duration_seconds metric is a Prometheus histogram (summable
    across replicas), with the documented buckets."""
    topic = create_topic(api.bootstrap)
    produce(api, topic, b"h" * 100)
    text = requests.get(f"{api.url}/metrics", timeout=5).text
    name = "kafka_lfs_proxy_http_request_duration_seconds"
    assert f"# TYPE {name} histogram" in text
    assert f'{name}_bucket{{route="/lfs/produce",le="0.005"}}' in text
    assert "quantile=" not in text, "no summaries"
    produced = metric(text, 'kafka_lfs_proxy_http_request_duration_seconds_count{route="/lfs/produce"}')
    assert produced >= 1
    assert metric(text, 'kafka_lfs_proxy_http_request_duration_seconds_bucket{route="/lfs/produce",le="+Inf"}') == produced


def test_openapi_document_is_served(api):
    r = requests.get(f"{api.url}/openapi.yaml", timeout=5)
    assert r.status_code == 200 and r.content == (REPO / "api" / "openapi.yaml").read_bytes()


def test_topic_allow_list_applies_to_http_uploads(tansu, workdir):
    p = Proxy(tansu.address, workdir, capture=False, env={"KAFSCALE_LFS_PROXY_TOPICS": "scans,videos"})
    try:
        p.wait_ready()
        url = f"http://127.0.0.1:{p.http_port}"
        refused = requests.post(f"{url}/lfs/produce", data=b"x", headers={"X-Kafka-Topic": "other"}, timeout=10)
        assert_error(refused, 400, "invalid_topic")
        session = requests.post(f"{url}/lfs/uploads", json={"topic": "other", "content_type": "a/b", "size_bytes": 1},
                                timeout=10)
        assert_error(session, 400, "invalid_topic")
        assert stored_files(p.storage_dir) == []
        ok = requests.post(f"{url}/lfs/produce", data=b"x", headers={"X-Kafka-Topic": "scans"}, timeout=30)
        assert ok.status_code == 200, ok.text
    finally:
        p.stop()


def test_sigterm_lets_an_upload_in_progress_finish(tansu, workdir):
    import signal
    import threading

    p = Proxy(tansu.address, workdir, capture=False)
    try:
        p.wait_ready()
        url = f"http://127.0.0.1:{p.http_port}"
        topic = create_topic(p.bootstrap)
        started = threading.Event()
        result = {}

        def trickle():
            started.set()
            for i in range(6):
                time.sleep(0.3)
                yield bytes([i]) * 100_000

        def upload():
            result["r"] = requests.post(f"{url}/lfs/produce", data=trickle(), headers={"X-Kafka-Topic": topic},
                                        timeout=30)

        t = threading.Thread(target=upload)
        t.start()
        started.wait(5)
        time.sleep(0.5)
        p.proc.send_signal(signal.SIGTERM)
        t.join(30)
        r = result["r"]
        assert r.status_code == 200, r.text
        assert r.json()["size"] == 600_000
        assert p.proc.wait(30) == 0
        [m] = consume(tansu.address, topic, 1)
        assert json.loads(m.value()) == r.json()
    finally:
        p.stop()
