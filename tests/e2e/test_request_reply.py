"""Request-reply over Kafka, end to end: two proxy replicas (the gateway),
`kafka-lfs-proxy processor` in a consumer group, a real HTTP backend and
tansu in between.

What a user checks: the backend gets the method, path, headers and bytes
the caller sent; the caller gets the backend's status, headers and bytes;
async Locations work on the other replica; idempotent retries produce no
second request; a dead backend gives an error reply and a dead letter
quickly; an expired request never reaches the backend; a restarted replica
loses no reply that arrives once it is ready.
"""

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import PROXY_BIN, Proxy, free_port, wait_port


class Backend:
    """An HTTP backend that records every request it gets.

    - `/api/echo/...`: 201, the request body back, `X-Backend: yes` and the
      body's SHA-256 in `X-Body-SHA256`; a GET answers `METHOD PATH`.
    - `/api/flaky/...`: 503 twice per path, then 200 (retries).
    """

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()
        self.flaky = {}
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes

            def log_message(self, *args):
                pass

            def handle_any(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with backend.lock:
                    backend.seen.append((self.command, self.path, dict(self.headers.items()), body))
                if self.path.startswith("/api/flaky/"):
                    with backend.lock:
                        n = backend.flaky.get(self.path, 0)
                        backend.flaky[self.path] = n + 1
                    status, out = (503, b"busy") if n < 2 else (200, b"ok after retries")
                elif self.command in ("GET", "HEAD"):
                    status, out = 200, f"{self.command} {self.path}".encode()
                else:
                    status, out = 201, body
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("X-Backend", "yes")
                self.send_header("X-Body-SHA256", hashlib.sha256(body).hexdigest())
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests_to(self, fragment: str):
        with self.lock:
            return [s for s in self.seen if fragment in s[1]]

    def stop(self):
        self.server.shutdown()


class ProcessorProc:
    def __init__(self, workdir, upstream: str, config_path, env: dict | None = None):
        self.port = free_port()
        self.log_path = workdir / f"processor-{self.port}.log"
        self.log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update({
            "KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS": upstream,
            "KAFSCALE_LFS_PROXY_PROCESSOR_ADDR": f"127.0.0.1:{self.port}",
            "KAFSCALE_LFS_PROXY_LOG_LEVEL": "info",
        })
        full_env.update(env or {})
        self.proc = subprocess.Popen([str(PROXY_BIN), "processor", "--config", str(config_path)],
                                     env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.port)

    def http(self, path):
        return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def wait_ready(self, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, self.read_log()
            if self.http("/readyz").status_code == 200:
                return
            time.sleep(0.2)
        raise RuntimeError("processor never joined its group:\n" + self.read_log())

    def metric(self, name: str, **labels) -> float:
        total = 0.0
        for line in self.http("/metrics").text.splitlines():
            if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_metric(self, expected: float, name: str, **labels) -> float:
        """The metric once it reaches `expected` (counters are bumped just
        after the reply is produced, so a caller can see the reply first);
        its last value after 5 s otherwise."""
        deadline = time.time() + 5
        value = self.metric(name, **labels)
        while value < expected and time.time() < deadline:
            time.sleep(0.05)
            value = self.metric(name, **labels)
        return value

    def read_log(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def rr(tansu, workdir):
    tag = uuid.uuid4().hex[:6]
    t = {
        "req": f"rr-req-{tag}",
        "fail": f"rr-fail-{tag}",
        "idle": f"rr-idle-{tag}",
        "rep": f"rr-rep-{tag}",
        "dlq": f"rr-dlq-{tag}",
    }
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": tansu.address})
    for f in admin.create_topics([NewTopic(t["req"], 3, 1), NewTopic(t["fail"], 1, 1),
                                  NewTopic(t["idle"], 1, 1), NewTopic(t["rep"], 2, 1),
                                  NewTopic(t["dlq"], 1, 1)]).values():
        f.result(15)
    backend = Backend()
    closed_port = free_port()  # nothing listens here: a backend that is down
    routes = workdir / f"routes-{tag}.yaml"
    routes.write_text(f"""
routes:
  - path: /api/echo/{{id}}
    request_topic: {t['req']}
    reply_topic: {t['rep']}
    timeout: 10
    key: "item-{{id}}"
  - path: /api/flaky/{{*rest}}
    request_topic: {t['req']}
    reply_topic: {t['rep']}
    timeout: 10
  - path: /api/down/{{*rest}}
    request_topic: {t['fail']}
    reply_topic: {t['rep']}
    timeout: 20
  - path: /api/idle
    methods: [GET]
    request_topic: {t['idle']}
    reply_topic: {t['rep']}
    timeout: 1
""")
    processor_config = workdir / f"processor-{tag}.yaml"
    processor_config.write_text(f"""
topics:
  - request_topic: {t['req']}
    response_topic: {t['rep']}
    backend_url: http://127.0.0.1:{backend.port}
    consumer_group: rr-group-{tag}
    timeout: 5
    max_retries: 3
  - request_topic: {t['fail']}
    backend_url: http://127.0.0.1:{closed_port}
    consumer_group: rr-group-{tag}
    timeout: 5
    max_retries: 3
max_concurrent_requests: 16
dead_letter_topic: {t['dlq']}
""")
    env = {"KAFSCALE_LFS_PROXY_RR_ROUTES_FILE": str(routes)}
    a = Proxy(tansu.address, workdir, capture=False, env=env)
    b = Proxy(tansu.address, workdir, capture=False, env=env)
    processor = ProcessorProc(workdir, tansu.address, processor_config)
    a.wait_ready()
    b.wait_ready()
    processor.wait_ready()
    state = {"a": a, "b": b, "processor": processor, "backend": backend, "topics": t,
             "env": env, "tansu": tansu, "workdir": workdir, "processor_config": processor_config}
    yield state
    for p in (state["a"], b):
        log = p.read_log()
        p.stop()
        assert "panicked" not in log, log
    log = processor.read_log()
    processor.stop()
    assert "panicked" not in log, log
    backend.stop()


def url(proxy, path):
    return f"http://127.0.0.1:{proxy.http_port}{path}"


def test_sync_get_reaches_the_backend_and_returns_its_answer(rr):
    r = requests.get(url(rr["a"], "/api/echo/7?q=1&x=%20y"), headers={"X-Test": "abc"}, timeout=15)
    assert r.status_code == 200, r.text
    assert r.content == b"GET /api/echo/7?q=1&x=%20y"
    assert r.headers["x-backend"] == "yes"
    assert r.headers.get("x-correlation-id")
    seen = rr["backend"].requests_to("/api/echo/7?")
    assert len(seen) == 1
    method, path, headers, body = seen[0]
    lower = {k.lower(): v for k, v in headers.items()}
    assert (method, path, body) == ("GET", "/api/echo/7?q=1&x=%20y", b"")
    assert lower["x-test"] == "abc"
    assert lower["x-correlation-id"] == r.headers["x-correlation-id"]


def test_sync_post_carries_binary_bytes_both_ways(rr):
    payload = bytes(range(256)) * 1200 + b"\x00end"
    r = requests.post(url(rr["b"], "/api/echo/bin"), data=payload,
                      headers={"Content-Type": "application/octet-stream"}, timeout=15)
    assert r.status_code == 201, r.text
    assert r.content == payload
    assert r.headers["x-body-sha256"] == hashlib.sha256(payload).hexdigest()
    (method, path, headers, body), = rr["backend"].requests_to("/api/echo/bin")
    assert (method, path) == ("POST", "/api/echo/bin")
    assert body == payload


def test_trace_context_spans_the_kafka_hop(rr):
    """W3C traceparent: the caller's trace id reaches the request record,
    the backend and the response; each hop is its own span (a new parent
    id); tracestate is carried unchanged. Without one, a trace is started."""
    trace_id = uuid.uuid4().hex
    caller_span = uuid.uuid4().hex[:16]
    sent = f"00-{trace_id}-{caller_span}-01"
    r = requests.post(url(rr["a"], "/api/echo/traced"), data=b"t",
                      headers={"traceparent": sent, "tracestate": "vendor=abc,other=1"}, timeout=15)
    assert r.status_code == 201, r.text
    (_, _, headers, _), = rr["backend"].requests_to("/api/echo/traced")
    lower = {k.lower(): v for k, v in headers.items()}
    version, backend_trace, processor_span, flags = lower["traceparent"].split("-")
    assert (version, backend_trace, flags) == ("00", trace_id, "01")
    assert processor_span != caller_span and len(processor_span) == 16
    assert lower["tracestate"] == "vendor=abc,other=1"
    # The response carries the processor's span of the same trace.
    assert r.headers["traceparent"] == lower["traceparent"]

    # The request record carries the gateway's span, between the two.
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": rr["tansu"].address, "group.id": f"tc-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(rr["topics"]["req"], p, 0) for p in range(3)])
        deadline = time.time() + 20
        record_headers = None
        while time.time() < deadline and record_headers is None:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            h = {k: v.decode() for k, v in (m.headers() or [])}
            if h.get(":path") == "/api/echo/traced":
                record_headers = h
        assert record_headers, "request record not found"
    finally:
        c.close()
    _, record_trace, gateway_span, record_flags = record_headers["traceparent"].split("-")
    assert (record_trace, record_flags) == (trace_id, "01")
    assert gateway_span not in (caller_span, processor_span)
    assert record_headers["tracestate"] == "vendor=abc,other=1"

    # No traceparent (or an invalid one): the gateway starts a trace, not sampled.
    r = requests.get(url(rr["b"], "/api/echo/untraced"), headers={"traceparent": "junk", "tracestate": "x=1"},
                     timeout=15)
    assert r.status_code == 200, r.text
    (_, _, headers, _), = rr["backend"].requests_to("/api/echo/untraced")
    lower = {k.lower(): v for k, v in headers.items()}
    version, new_trace, _, flags = lower["traceparent"].split("-")
    assert version == "00" and len(new_trace) == 32 and flags == "00"
    assert "tracestate" not in lower
    assert r.headers["traceparent"].split("-")[1] == new_trace


def test_request_record_format_is_as_documented(rr):
    """A worker in another language reads the request record: check it."""
    from confluent_kafka import Consumer, TopicPartition

    marker = uuid.uuid4().hex[:8]
    r = requests.put(url(rr["a"], f"/api/echo/{marker}?v=1"), data=b"\x01\x02",
                     headers={"X-Trace": "t1", "Connection": "keep-alive"}, timeout=15)
    assert r.status_code == 201, r.text
    c = Consumer({"bootstrap.servers": rr["tansu"].address, "group.id": "unused-" + marker,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(rr["topics"]["req"], p, 0) for p in range(3)])
    found = None
    deadline = time.time() + 20
    while time.time() < deadline and not found:
        m = c.poll(0.5)
        if m is not None and not m.error():
            h = {k: v for k, v in (m.headers() or [])}
            if h.get(":path") == f"/api/echo/{marker}?v=1".encode():
                found = m
    c.close()
    assert found is not None
    h = {k: v for k, v in found.headers()}
    assert found.value() == b"\x01\x02"
    assert found.key() == f"item-{marker}".encode()
    assert h[":method"] == b"PUT"
    assert h["zilla:correlation-id"].decode() == r.headers["x-correlation-id"]
    assert h["zilla:reply-to"] == rr["topics"]["rep"].encode()
    deadline_ms = int(h["rr:deadline"])
    assert abs(deadline_ms - (time.time() + 10) * 1000) < 15_000
    assert h["x-trace"] == b"t1"
    assert "connection" not in h and "host" not in h and "content-length" not in h


def test_async_location_is_served_by_the_other_replica(rr):
    r = requests.post(url(rr["a"], "/api/echo/async1"), data=b"async body",
                      headers={"Prefer": "respond-async"}, timeout=15)
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    assert location.startswith(f"/rr/replies/{rr['topics']['rep']}/")
    assert r.headers["preference-applied"] == "respond-async"
    assert r.json()["location"] == location
    got = requests.get(url(rr["b"], location), headers={"Prefer": "wait=10"}, timeout=15)
    assert got.status_code == 201, got.text
    assert got.content == b"async body"
    # Kept for later polls, on either replica (A may read it a moment after B).
    again = requests.get(url(rr["a"], location), headers={"Prefer": "wait=5"}, timeout=10)
    assert (again.status_code, again.content) == (201, b"async body")


def test_async_poll_before_the_reply_answers_202(rr):
    r = requests.get(url(rr["a"], "/api/idle"), headers={"Prefer": "respond-async"}, timeout=5)
    assert r.status_code == 202
    t0 = time.time()
    poll = requests.get(url(rr["b"], r.headers["location"]), headers={"Prefer": "wait=1"}, timeout=5)
    assert poll.status_code == 202
    assert time.time() - t0 >= 0.9
    assert poll.headers["location"] == r.headers["location"]
    bogus = requests.get(url(rr["b"], f"/rr/replies/{rr['topics']['rep']}/not-a-uuid"), timeout=5)
    assert bogus.status_code == 404 and bogus.json()["code"] == "not_found"


def test_sync_without_reply_is_504_json(rr):
    t0 = time.time()
    r = requests.get(url(rr["a"], "/api/idle"), timeout=10)
    assert r.status_code == 504
    body = r.json()
    assert body["code"] == "gateway_timeout" and body["request_id"]
    assert 0.9 <= time.time() - t0 < 5


def test_idempotent_retry_replays_without_a_second_request(rr):
    key = "idem-" + uuid.uuid4().hex[:8]
    path = f"/api/echo/{key}"
    first = requests.post(url(rr["a"], path), data=b"pay once", headers={"Idempotency-Key": key}, timeout=15)
    assert first.status_code == 201, first.text
    again = requests.post(url(rr["a"], path), data=b"pay once", headers={"Idempotency-Key": key}, timeout=15)
    assert (again.status_code, again.content) == (201, b"pay once")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["x-correlation-id"] == first.headers["x-correlation-id"]
    # The other replica knows it too once it has read the same reply (like
    # Zilla, a retry in the moment before that produces a second request).
    seen_by_b = requests.get(url(rr["b"], f"/rr/replies/{rr['topics']['rep']}/{first.headers['x-correlation-id']}"),
                             headers={"Prefer": "wait=5"}, timeout=10)
    assert seen_by_b.status_code == 201
    other = requests.post(url(rr["b"], path), data=b"pay once", headers={"Idempotency-Key": key}, timeout=15)
    assert (other.status_code, other.content) == (201, b"pay once")
    assert other.headers["idempotent-replayed"] == "true"
    conflict = requests.post(url(rr["a"], path), data=b"pay twice", headers={"Idempotency-Key": key},
                             timeout=15)
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"
    conflict_b = requests.post(url(rr["b"], path), data=b"pay twice", headers={"Idempotency-Key": key},
                               timeout=15)
    assert conflict_b.status_code == 409
    assert len(rr["backend"].requests_to(path)) == 1


def test_backend_5xx_is_retried(rr):
    retries = ("kafka_lfs_proxy_processor_retries_total", {"topic": rr["topics"]["req"]})
    before = rr["processor"].metric(retries[0], **retries[1])
    path = f"/api/flaky/{uuid.uuid4().hex[:8]}"
    r = requests.post(url(rr["a"], path), data=b"x", timeout=15)
    assert (r.status_code, r.content) == (200, b"ok after retries")
    assert len(rr["backend"].requests_to(path)) == 3
    assert rr["processor"].wait_metric(before + 2, retries[0], **retries[1]) == before + 2


def test_backend_down_gives_an_error_reply_and_a_dead_letter(rr):
    from confluent_kafka import Consumer, TopicPartition

    dead = ("kafka_lfs_proxy_processor_dead_letters_total", {"reason": "backend_unavailable"})
    dead_before = rr["processor"].metric(dead[0], **dead[1])
    marker = uuid.uuid4().hex[:8]
    t0 = time.time()
    r = requests.post(url(rr["a"], f"/api/down/{marker}"), data=b"lost?", timeout=25)
    elapsed = time.time() - t0
    assert r.status_code == 502, r.text
    assert r.json()["code"] == "backend_unavailable"
    assert elapsed < 10, f"the error reply took {elapsed:.1f}s; the route timeout is 20s"
    c = Consumer({"bootstrap.servers": rr["tansu"].address, "group.id": "dlq-" + marker,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(rr["topics"]["dlq"], 0, 0)])
    letter = None
    deadline = time.time() + 20
    while time.time() < deadline and letter is None:
        m = c.poll(0.5)
        if m is not None and not m.error():
            h = dict(m.headers() or [])
            if h.get(":path") == f"/api/down/{marker}".encode():
                letter = m
    c.close()
    assert letter is not None, "no dead letter"
    assert rr["processor"].wait_metric(dead_before + 1, dead[0], **dead[1]) == dead_before + 1
    h = dict(letter.headers())
    assert letter.value() == b"lost?"
    assert h["rr:error"] == b"backend_unavailable"
    assert h["rr:source-topic"] == rr["topics"]["fail"].encode()
    assert h["zilla:correlation-id"].decode() == r.json()["request_id"]


def test_expired_request_is_never_sent_to_the_backend(rr):
    processor = rr["processor"]
    marker = uuid.uuid4().hex[:8]
    expired_before = processor.metric("kafka_lfs_proxy_processor_expired_total")
    os.kill(processor.proc.pid, signal.SIGSTOP)
    try:
        r = requests.post(url(rr["a"], f"/api/echo/late-{marker}"), data=b"late",
                          headers={"Prefer": "respond-async"}, timeout=5)
        assert r.status_code == 202
        # The route's timeout is 10 s: the request's deadline passes while
        # the processor is stopped.
        time.sleep(10.5)
    finally:
        os.kill(processor.proc.pid, signal.SIGCONT)
    deadline = time.time() + 20
    while time.time() < deadline:
        if processor.metric("kafka_lfs_proxy_processor_expired_total") > expired_before:
            break
        time.sleep(0.2)
    assert processor.metric("kafka_lfs_proxy_processor_expired_total") > expired_before
    assert rr["backend"].requests_to(f"late-{marker}") == []
    poll = requests.get(url(rr["b"], r.headers["location"]), headers={"Prefer": "wait=1"}, timeout=5)
    assert poll.status_code == 202


def test_restarted_replica_loses_no_reply_arriving_after_it_is_ready(rr):
    processor = rr["processor"]
    os.kill(processor.proc.pid, signal.SIGSTOP)
    try:
        r = requests.post(url(rr["a"], "/api/echo/restart"), data=b"survives a restart",
                          headers={"Prefer": "respond-async"}, timeout=5)
        assert r.status_code == 202
        old = rr["a"]
        old.stop()
        fresh = Proxy(rr["tansu"].address, rr["workdir"], capture=False, env=rr["env"])
        rr["a"] = fresh
        fresh.wait_ready()
    finally:
        os.kill(processor.proc.pid, signal.SIGCONT)
    got = requests.get(url(rr["a"], r.headers["location"]), headers={"Prefer": "wait=15"}, timeout=20)
    assert (got.status_code, got.content) == (201, b"survives a restart")


def test_metrics_count_calls_by_route_and_outcome(rr):
    r = requests.get(url(rr["b"], "/api/echo/metrics"), timeout=15)
    assert r.status_code == 200
    text = requests.get(url(rr["b"], "/metrics"), timeout=5).text
    lines = [l for l in text.splitlines() if l.startswith("kafka_lfs_proxy_rr_requests_total")]
    assert any('route="/api/echo/{id}"' in l and 'outcome="reply"' in l for l in lines), lines
    assert "kafka_lfs_proxy_rr_kafka_round_trip_seconds" in text
    assert "kafka_lfs_proxy_rr_in_flight" in text
    # Retries and dead letters are counted where they happen (the 5xx and
    # backend-down tests); here the processor's count of what it answered.
    handled = ("kafka_lfs_proxy_processor_requests_total", {"topic": rr["topics"]["req"], "outcome": "ok"})
    before = rr["processor"].metric(handled[0], **handled[1])
    r = requests.get(url(rr["a"], "/api/echo/metrics-2"), timeout=15)
    assert r.status_code == 200
    assert rr["processor"].wait_metric(before + 1, handled[0], **handled[1]) == before + 1


def test_processors_share_the_group_and_take_over_on_leave(rr):
    """A second processor in the same group gets a share of the request
    partitions; when it leaves (SIGTERM), the first takes them back and no
    request is lost."""
    first = rr["processor"]
    second = ProcessorProc(rr["workdir"], rr["tansu"].address, rr["processor_config"])
    try:
        second.wait_ready()
        # Both members answer to a rebalance; wait until the first has
        # joined the new generation too.
        deadline = time.time() + 60
        while time.time() < deadline:
            if first.metric("kafka_lfs_proxy_processor_rebalances_total") >= 2 and \
                    first.http("/readyz").status_code == 200:
                break
            time.sleep(0.2)
        before = [p.metric("kafka_lfs_proxy_processor_requests_total", outcome="ok") for p in (first, second)]
        for i in range(24):
            r = requests.post(url(rr["a"], f"/api/echo/share-{i}"), data=b"%d" % i, timeout=15)
            assert (r.status_code, r.content) == (201, b"%d" % i)
        after = [p.metric("kafka_lfs_proxy_processor_requests_total", outcome="ok") for p in (first, second)]
        handled = [a - b for a, b in zip(after, before)]
        assert sum(handled) == 24 and all(h > 0 for h in handled), handled
    finally:
        second.stop()
    log = second.read_log()
    assert "left consumer group" in log and "panicked" not in log, log
    for i in range(6):
        r = requests.post(url(rr["a"], f"/api/echo/after-leave-{i}"), data=b"x", timeout=15)
        assert r.status_code == 201, r.text


def hs256(secret: bytes, claims: dict) -> str:
    import base64
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_jwt_guards_request_reply_and_names_the_caller_to_the_backend(rr):
    env = dict(rr["env"])
    env.update({
        "KAFSCALE_LFS_PROXY_HTTP_JWT_SECRET": "jwt-test-secret",
        "KAFSCALE_LFS_PROXY_HTTP_JWT_ISSUER": "test-idp",
        "KAFSCALE_LFS_PROXY_HTTP_CORS_ALLOWED_ORIGINS": "https://app.example",
    })
    guarded = Proxy(rr["tansu"].address, rr["workdir"], capture=False, env=env)
    try:
        guarded.wait_ready()
        path = f"/api/echo/jwt-{uuid.uuid4().hex[:8]}"
        now = int(time.time())
        good = hs256(b"jwt-test-secret", {"sub": "alice", "iss": "test-idp", "exp": now + 60})
        forged = hs256(b"wrong-secret", {"sub": "alice", "iss": "test-idp", "exp": now + 60})
        expired = hs256(b"jwt-test-secret", {"sub": "alice", "iss": "test-idp", "exp": now - 600})
        other_iss = hs256(b"jwt-test-secret", {"sub": "alice", "iss": "evil", "exp": now + 60})
        for token in (None, forged, expired, other_iss):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            r = requests.post(url(guarded, path), data=b"x", headers=headers, timeout=15)
            assert r.status_code == 401 and r.json()["code"] == "unauthorized", (token, r.text)
        assert rr["backend"].requests_to(path) == []
        r = requests.post(url(guarded, path), data=b"signed",
                          headers={"Authorization": f"Bearer {good}",
                                   "X-Authenticated-Subject": "mallory",
                                   "Origin": "https://app.example"}, timeout=15)
        assert (r.status_code, r.content) == (201, b"signed")
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        (_, _, headers, _), = rr["backend"].requests_to(path)
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower["x-authenticated-subject"] == "alice"
        assert "authorization" not in lower, "the caller's token must not reach the backend"
        # A browser's preflight for a request-reply route is answered before auth.
        pre = requests.options(url(guarded, path), headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, idempotency-key"}, timeout=5)
        assert pre.status_code == 200
        assert "PATCH" in pre.headers["access-control-allow-methods"]
        # The LFS API takes the same tokens.
        lfs = requests.post(url(guarded, "/lfs/produce"), data=b"blob",
                            headers={"X-Kafka-Topic": rr["topics"]["dlq"]}, timeout=15)
        assert lfs.status_code == 401
    finally:
        log = guarded.read_log()
        guarded.stop()
    assert "jwt-test-secret" not in log


def test_processor_shares_a_group_with_a_kafka_python_consumer(rr):
    """The group protocol is Kafka's: a kafka-python consumer in the same
    group gets the other partition, and the processor answers only the
    requests on its own."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from kafka import KafkaConsumer

    tag = uuid.uuid4().hex[:6]
    topic, group = f"rr-interop-{tag}", f"rr-interop-group-{tag}"
    admin = AdminClient({"bootstrap.servers": rr["tansu"].address})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(15)
    config = rr["workdir"] / f"interop-{tag}.yaml"
    config.write_text(f"topics:\n  - request_topic: {topic}\n    response_topic: {rr['topics']['rep']}\n"
                      f"    backend_url: http://127.0.0.1:{rr['backend'].port}\n    consumer_group: {group}\n")
    processor = ProcessorProc(rr["workdir"], rr["tansu"].address, config)
    other = None
    try:
        processor.wait_ready()
        other = KafkaConsumer(topic, bootstrap_servers=rr["tansu"].address, group_id=group,
                              auto_offset_reset="earliest", enable_auto_commit=False,
                              consumer_timeout_ms=500)
        deadline = time.time() + 60
        while time.time() < deadline and not other.assignment():
            other.poll(timeout_ms=200)
        theirs = {tp.partition for tp in other.assignment()}
        assert len(theirs) == 1, theirs
        # Let the processor finish its rejoin before producing.
        deadline = time.time() + 30
        while time.time() < deadline and (
                processor.metric("kafka_lfs_proxy_processor_rebalances_total") < 2
                or processor.http("/readyz").status_code != 200):
            other.poll(timeout_ms=200)
        producer = Producer({"bootstrap.servers": rr["tansu"].address})
        ids = {}
        for p in (0, 1):
            cid = str(uuid.uuid4())
            ids[p] = cid
            producer.produce(topic, b"to partition %d" % p, partition=p, headers=[
                (":method", b"POST"), (":path", f"/api/echo/interop-{tag}-{p}".encode()),
                ("zilla:correlation-id", cid.encode()),
                ("zilla:reply-to", rr["topics"]["rep"].encode())])
        producer.flush(10)
        got = []
        deadline = time.time() + 20
        while time.time() < deadline and not got:
            for records in other.poll(timeout_ms=500).values():
                got.extend(records)
        assert [r.partition for r in got] == list(theirs)
        mine = ({0, 1} - theirs).pop()
        reply = requests.get(url(rr["b"], f"/rr/replies/{rr['topics']['rep']}/{ids[mine]}"),
                             headers={"Prefer": "wait=10"}, timeout=15)
        assert (reply.status_code, reply.content) == (201, b"to partition %d" % mine)
        assert rr["backend"].requests_to(f"interop-{tag}-{theirs.pop()}") == []
    finally:
        if other is not None:
            other.close()
        processor.stop()


def test_header_route_as_kafka_http_proxy_behind_nginx(rr):
    """`X-Kafka-Topic` / `X-Kafka-Reply-Topic` pick the topics for any path no
    route takes; a reply topic first named by a request is read before the
    request is produced (here one that does not exist yet)."""
    env = dict(rr["env"])
    env["KAFSCALE_LFS_PROXY_RR_HEADER_ROUTE"] = "true"
    gateway = Proxy(rr["tansu"].address, rr["workdir"], capture=False, env=env)
    try:
        gateway.wait_ready()
        fresh_reply_topic = f"rr-fresh-replies-{uuid.uuid4().hex[:6]}"
        marker = uuid.uuid4().hex[:8]
        r = requests.post(url(gateway, f"/orders/{marker}?page=2"), data=b"via headers",
                          headers={"X-Kafka-Topic": rr["topics"]["req"],
                                   "X-Kafka-Reply-Topic": fresh_reply_topic}, timeout=20)
        assert (r.status_code, r.content) == (201, b"via headers")
        (method, path, headers, body), = rr["backend"].requests_to(marker)
        assert (method, path, body) == ("POST", f"/orders/{marker}?page=2", b"via headers")
        lower = {k.lower() for k in headers}
        assert "x-kafka-topic" not in lower and "x-kafka-reply-topic" not in lower
        bad = requests.post(url(gateway, "/x"), data=b"", headers={"X-Kafka-Topic": "no spaces allowed"},
                            timeout=5)
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_topic"
        # Configured routes still win over the header route.
        routed = requests.get(url(gateway, "/api/echo/still-routed"), timeout=15)
        assert routed.status_code == 200
        # And the LFS API is not swallowed by it.
        lfs = requests.get(url(gateway, "/lfs/produce"), timeout=5)
        assert lfs.status_code == 405
    finally:
        log = gateway.read_log()
        gateway.stop()
    assert "panicked" not in log


def test_reply_listener_backs_off_while_kafka_is_down(workdir):
    """While no broker answers, the reply listener retries its positioning
    with a growing delay, not once per fetch wait (25 ms)."""
    import socket

    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(1024)
    dead.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def accept():  # a "broker" that hangs up at once
        while not stop.is_set():
            try:
                conn, _ = dead.accept()
            except socket.timeout:
                continue
            accepted.append(time.monotonic())
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    routes = workdir / "routes-down.yaml"
    routes.write_text("routes:\n  - path: /down\n    request_topic: down-req\n    reply_topic: down-rep\n")
    p = Proxy(f"127.0.0.1:{dead.getsockname()[1]}", workdir, capture=False,
              env={"KAFSCALE_LFS_PROXY_RR_ROUTES_FILE": str(routes)})
    try:
        wait_port("127.0.0.1", p.http_port)
        time.sleep(2)
        window_start = time.monotonic()
        time.sleep(4)
        dials = len([t for t in accepted if t >= window_start])
        status, _ = p.http("/readyz")
        assert status == 503
    finally:
        stop.set()
        log = p.read_log()
        p.stop()
        dead.close()
    # Without back-off: about 40 dials a second (160 in the window).
    assert dials <= 20, f"{dials} connections in 4 s while Kafka was down"
    assert "panicked" not in log, log
