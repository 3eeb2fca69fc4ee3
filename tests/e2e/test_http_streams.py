"""HTTP beyond request-reply, end to end against tansu: SSE streams of a
topic (`streams:` routes), one-way produce (`produce:` routes), JWT
continuous authorization of streams, and HTTP/2 (h2c and ALPN h2).

What a user checks: a stream cut off and resumed with Last-Event-ID on
another replica delivers exactly the records it missed; a key filter from
a path parameter delivers only matching records; a tombstone is a delete
event; a stream whose token is not renewed ends at expiry, a renewed one
goes on; a slow reader is cut off instead of being buffered for; a one-way
produce lands with its key and headers at the partition and offset it
answered; curl speaks HTTP/2 to the same port.
"""

import base64
import hashlib
import hmac
import json
import queue
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import trustme

from conftest import Proxy, serve

ROUTES = """
streams:
  - path: /topics/{{name}}/events
    topic: {topic}
    start: earliest
  - path: /devices/{{device}}/events
    topic: {topic}
    key: "{{device}}"
    event: reading
    start: earliest
  - path: /live/events
    topic: {topic}
  - path: /docs/inline
    topic: {docs}
    lfs: inline
    inline_max_bytes: 300000
    start: earliest
  - path: /docs/link
    topic: {docs}
    lfs: link
    start: earliest
cached:
  - path: /config/{{device}}
    topic: {config}
    key: "{{device}}"
  - path: /config
    topic: {config}
produce:
  - path: /config/{{device}}
    methods: [PUT, DELETE]
    topic: {config}
    key: "{{device}}"
  - path: /devices/{{device}}/commands
    topic: {commands}
    key: "{{device}}"
    headers:
      source: http
      device: "{{device}}"
  - path: /accepted/{{device}}
    methods: [POST]
    topic: {commands}
    status: 202
"""

SECRET = b"stream-secret"


def hs256(claims: dict) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


class SseReader:
    """A browser-like EventSource reader (WHATWG parsing rules): `id:` sets
    the last event id even without data; events with data are queued as
    (id, type, data)."""

    def __init__(self, url: str, headers: dict | None = None):
        self.response = requests.get(url, headers={"Accept": "text/event-stream", **(headers or {})},
                                     stream=True, timeout=(5, 60))
        self.status = self.response.status_code
        self.events: queue.Queue = queue.Queue()
        self.last_id = None
        self.ended = threading.Event()
        self.frames = 0
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buffer = b""
        fields: dict = {"data": []}
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    line = line.decode()
                    if line == "":
                        self.frames += 1
                        if "id" in fields:
                            self.last_id = fields["id"]
                        if fields["data"]:
                            self.events.put((self.last_id, fields.get("event", "message"),
                                             "\n".join(fields["data"])))
                        fields = {"data": []}
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "data":
                            fields["data"].append(value)
                        else:
                            fields[name] = value
        except Exception:
            pass
        finally:
            self.ended.set()

    def take(self, n: int, timeout: float = 30.0, event_type: str | None = None):
        out, deadline = [], time.time() + timeout
        while len(out) < n and time.time() < deadline:
            try:
                e = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if event_type is None or e[1] == event_type:
                out.append(e)
        return out

    def close(self):
        self.response.close()


def produce(bootstrap, topic, items):
    """items: (partition, key, value, headers); waits for every ack."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    errors = []
    for partition, key, value, headers in items:
        p.produce(topic, value=value, key=key, partition=partition, headers=headers or [],
                  on_delivery=lambda err, _m: err and errors.append(err))
    p.flush(30)
    assert not errors, errors


def metric(proxy, name, **labels) -> float:
    total = 0.0
    for line in proxy.http("/metrics")[1].splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def topics(tansu):
    from confluent_kafka.admin import AdminClient, NewTopic

    names = {"topic": "sse-" + uuid.uuid4().hex[:8], "commands": "cmd-" + uuid.uuid4().hex[:8],
             "docs": "docs-" + uuid.uuid4().hex[:8], "config": "config-" + uuid.uuid4().hex[:8]}
    admin = AdminClient({"bootstrap.servers": tansu.address})
    new = [NewTopic(names["topic"], 3, 1), NewTopic(names["commands"], 1, 1), NewTopic(names["docs"], 1, 1),
           NewTopic(names["config"], 2, 1, config={"cleanup.policy": "compact"})]
    for f in admin.create_topics(new).values():
        f.result(15)
    return names


@pytest.fixture(scope="module")
def routes_file(workdir, topics):
    path = workdir / f"stream-routes-{topics['topic']}.yaml"
    path.write_text(ROUTES.format(**topics))
    return path


def stream_env(routes_file, **extra):
    env = {
        "KAFSCALE_LFS_PROXY_RR_ROUTES_FILE": str(routes_file),
        "KAFSCALE_LFS_PROXY_SSE_KEEPALIVE_SEC": "1",
        "KAFSCALE_LFS_PROXY_SSE_FETCH_WAIT_MS": "200",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def replicas(tansu, workdir, routes_file):
    """Two replicas with the same routes: nothing shared but Kafka."""
    a = Proxy(tansu.address, workdir, capture=False, env=stream_env(routes_file))
    b = Proxy(tansu.address, workdir, capture=False, env=stream_env(routes_file))
    ga, gb = serve(a), serve(b)
    yield next(ga), next(gb)
    for g in (ga, gb):
        with pytest.raises(StopIteration):
            next(g)


def url(proxy, path):
    return f"http://127.0.0.1:{proxy.http_port}{path}"


def test_stream_resumes_on_another_replica_with_exactly_the_missed_records(replicas, topics):
    a, b = replicas
    topic = topics["topic"]
    first = [(i % 3, f"k{i}".encode(), f"resume-{i}".encode(), None) for i in range(30)]
    produce(a.bootstrap, topic, first)
    s = SseReader(url(a, "/topics/x/events"))
    assert s.status == 200
    assert s.response.headers["content-type"] == "text/event-stream"
    got = s.take(12)
    assert len(got) == 12, got
    resume_from = got[-1][0]
    s.close()
    # What the first stream has not delivered, plus what is produced while
    # no stream is open.
    produce(a.bootstrap, topic, [(i % 3, f"k{i}".encode(), f"resume-{i}".encode(), None) for i in range(30, 50)])
    r = SseReader(url(b, "/topics/x/events"), {"Last-Event-ID": resume_from})
    assert r.status == 200
    rest = r.take(38, timeout=30)
    extra = r.take(1, timeout=2)
    r.close()
    seen = [e[2] for e in got] + [e[2] for e in rest]
    assert extra == [], f"more than was produced: {extra}"
    assert len(seen) == 50 and sorted(seen) == sorted(f"resume-{i}" for i in range(50)), seen
    # Per partition, in offset order: partition p holds i % 3 == p.
    for p in range(3):
        mine = [int(v.split("-")[1]) for v in seen if int(v.split("-")[1]) % 3 == p]
        assert mine == sorted(mine), (p, mine)
    # Every event id is a position on every partition.
    assert all(len(e[0].split(",")) == 3 for e in rest)


def test_key_filter_from_a_path_parameter_and_tombstones(replicas, topics):
    a, _ = replicas
    topic = topics["topic"]
    s = SseReader(url(a, "/devices/dev-7/events"), {"Last-Event-ID": live_position(a)})
    items = []
    for i in range(12):
        key = b"dev-7" if i % 3 == 0 else b"dev-8"
        items.append((i % 3, key, f'{{"n":{i}}}'.encode(), [("tenant", b"acme")]))
    items.append((0, b"dev-7", b"\xff\x00binary", None))
    items.append((1, b"dev-7", None, None))
    produce(a.bootstrap, topic, items)
    got = s.take(6, timeout=30)
    s.close()
    readings = [e for e in got if e[1] == "reading"]
    assert [json.loads(e[2])["n"] for e in readings] == [0, 3, 6, 9], got
    binary = [e for e in got if e[1] == "reading.base64"]
    assert [base64.b64decode(e[2]) for e in binary] == [b"\xff\x00binary"]
    assert [(e[1], e[2]) for e in got if e[1] == "delete"] == [("delete", "dev-7")]


def live_position(proxy) -> str:
    """The log end of every partition, as a stream id: opening a stream
    there and reading its first `id:` line. (tansu reports the log end short
    after multi-record batches, so this may be a little before the end;
    tests that use it filter what they count.)"""
    s = SseReader(url(proxy, "/live/events"))
    deadline = time.time() + 10
    while s.last_id is None and time.time() < deadline:
        time.sleep(0.05)
    s.close()
    assert s.last_id, "the stream sent no position"
    return s.last_id


def test_lfs_records_are_sent_verified_inline_or_as_a_download_link(replicas, topics):
    a, _ = replicas
    small = ("small document " * 10_000).encode()[:200_000]
    large = bytes(range(256)) * 2_000
    inline = SseReader(url(a, "/docs/inline"))
    link = SseReader(url(a, "/docs/link"))
    produce(a.bootstrap, topics["docs"], [(0, b"doc-s", small, [("LFS_BLOB", b"")]),
                                           (0, b"doc-l", large, [("LFS_BLOB", b"")])])
    got_inline, got_link = inline.take(2), link.take(2)
    inline.close()
    link.close()
    assert got_inline[0][1] == "message" and got_inline[0][2].encode() == small
    big = json.loads(got_inline[1][2])
    assert big["sha256"] == hashlib.sha256(large).hexdigest() and big["size"] == len(large)
    assert big["download"]["path"] == "/lfs/download", "over inline_max_bytes: a link"
    for _, _, data in got_link:
        envelope = json.loads(data)
        body = envelope["download"]["body"]
        r = requests.post(url(a, envelope["download"]["path"]), json=body, timeout=30)
        assert r.status_code == 200, (r.text, body)
        assert hashlib.sha256(r.content).hexdigest() == envelope["sha256"]
    assert [json.loads(d)["size"] for _, _, d in got_link] == [len(small), len(large)]


def put_config(proxy, device, body):
    r = requests.put(url(proxy, f"/config/{device}"), data=body,
                     headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 204, r.text
    return f'"{r.headers["x-kafka-partition"]}-{r.headers["x-kafka-offset"]}"'


def get_when(proxy, path, ok, headers=None, timeout=15):
    deadline = time.time() + timeout
    while True:
        r = requests.get(url(proxy, path), headers=headers or {}, timeout=30)
        if ok(r) or time.time() > deadline:
            return r
        time.sleep(0.05)


def test_cached_reads_latest_value_etag_304_and_waiting_get(replicas):
    a, b = replicas
    assert requests.get(url(a, "/config/nobody"), timeout=10).status_code == 404
    tag = put_config(a, "d1", b'{"v":1}')
    r = get_when(a, "/config/d1", lambda r: r.headers.get("etag") == tag)
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b'{"v":1}', "application/json")
    assert r.headers["etag"] == tag, "the ETag names the record's partition and offset"
    r2 = get_when(b, "/config/d1", lambda r: r.status_code == 200)
    assert r2.headers["etag"] == tag, "every replica gives the same ETag"
    r = requests.get(url(a, "/config/d1"), headers={"If-None-Match": tag}, timeout=10)
    assert r.status_code == 304 and r.headers["etag"] == tag and r.content == b""
    # Nothing changes: a waiting GET answers 304 after its wait.
    started = time.time()
    r = requests.get(url(a, "/config/d1"), headers={"If-None-Match": tag, "Prefer": "wait=1"}, timeout=10)
    assert r.status_code == 304 and 0.9 <= time.time() - started < 5
    assert r.headers["preference-applied"] == "wait=1"
    # A change arrives while a GET waits: answered as soon as it is read.
    answered = {}

    def waiting():
        w = requests.get(url(a, "/config/d1"), headers={"If-None-Match": tag, "Prefer": "wait=20"}, timeout=30)
        answered["at"], answered["r"] = time.time(), w

    t = threading.Thread(target=waiting)
    t.start()
    time.sleep(1)
    new_tag = put_config(b, "d1", b'{"v":2}')
    acked = time.time()
    t.join(30)
    w = answered["r"]
    assert (w.status_code, w.content, w.headers["etag"]) == (200, b'{"v":2}', new_tag)
    delay = answered["at"] - acked
    print(f"waiting GET answered {delay * 1000:.0f} ms after the new record was acknowledged")
    assert delay < 1.0, delay
    # All keys merged; a tombstone removes a key.
    put_config(a, "d2", b'"two"')
    merged = get_when(a, "/config", lambda r: r.status_code == 200 and len(r.json()) == 2)
    assert merged.json() == [{"v": 2}, "two"]
    assert requests.delete(url(a, "/config/d2"), timeout=10).status_code == 204
    gone = get_when(a, "/config/d2", lambda r: r.status_code == 404)
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    assert get_when(a, "/config", lambda r: r.json() == [{"v": 2}]).json() == [{"v": 2}]
    # A key that does not exist yet: a waiting GET gets it when it arrives.
    threading.Timer(1.0, lambda: put_config(a, "d3", b"3")).start()
    r = requests.get(url(a, "/config/d3"), headers={"Prefer": "wait=15"}, timeout=30)
    assert (r.status_code, r.content) == (200, b"3")


def test_bad_last_event_id_and_unknown_methods_are_refused(replicas):
    a, _ = replicas
    r = requests.get(url(a, "/topics/x/events"), headers={"Last-Event-ID": "1,x"}, timeout=5)
    assert r.status_code == 400 and r.json()["code"] == "invalid_last_event_id"
    r = requests.get(url(a, "/topics/x/events"), headers={"Last-Event-ID": "1,2,3,4"}, timeout=5)
    assert r.status_code == 400 and "3" in r.json()["message"]
    r = requests.put(url(a, "/topics/x/events"), data=b"x", timeout=5)
    assert r.status_code == 405


def test_one_way_produce_lands_with_key_headers_partition_and_offset(replicas, topics):
    from confluent_kafka import Consumer, TopicPartition

    a, _ = replicas
    r = requests.post(url(a, "/devices/dev-3/commands"), data=b'{"cmd":"reboot"}',
                      headers={"Content-Type": "application/json", "X-Kafka-Header-Trace": "t-1"}, timeout=10)
    assert r.status_code == 204, r.text
    partition, offset = int(r.headers["x-kafka-partition"]), int(r.headers["x-kafka-offset"])
    d = requests.delete(url(a, "/devices/dev-3/commands"), timeout=10)
    assert d.status_code == 204
    acc = requests.post(url(a, "/accepted/dev-4"), data=b"later", timeout=10)
    assert acc.status_code == 202 and "x-kafka-offset" in acc.headers
    assert requests.get(url(a, "/accepted/dev-4"), timeout=10).status_code == 404
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "one-way", "enable.auto.commit": False})
    c.assign([TopicPartition(topics["commands"], partition, offset)])
    got, deadline = [], time.time() + 30
    while len(got) < 3 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None:
            assert m.error() is None, m.error()
            got.append(m)
    c.close()
    assert len(got) == 3
    first, tomb, accepted = got
    assert (first.offset(), first.key(), first.value()) == (offset, b"dev-3", b'{"cmd":"reboot"}')
    assert dict(first.headers()) == {"source": b"http", "device": b"dev-3", "trace": b"t-1",
                                     "content-type": b"application/json"}
    assert (tomb.key(), tomb.value()) == (b"dev-3", None), "a DELETE without a body is a tombstone"
    assert (accepted.offset(), accepted.value()) == (int(acc.headers["x-kafka-offset"]), b"later")
    assert metric(a, "kafka_lfs_proxy_http_one_way_records_total") >= 3


def test_concurrent_produces_share_requests_and_each_gets_its_own_offset(replicas, topics):
    """64 callers at once: records share Produce requests (one batch per
    partition), and each answer names the offset its own body is at."""
    from concurrent.futures import ThreadPoolExecutor

    from confluent_kafka import Consumer, TopicPartition

    a, _ = replicas

    def post(i):
        with requests.Session() as session:
            r = session.post(url(a, f"/accepted/c{i}"), data=f"body-{i}".encode(), timeout=30)
            assert r.status_code == 202, r.text
            return int(r.headers["x-kafka-offset"]), f"body-{i}".encode()

    def produce_counts():
        return (metric(a, "kafka_lfs_proxy_own_produce_requests_total"),
                metric(a, "kafka_lfs_proxy_own_produce_records_total"))

    requests_before, records_before = produce_counts()
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(post, range(256)))
    requests_after, records_after = produce_counts()
    offsets = sorted(o for o, _ in answers)
    assert len(set(offsets)) == 256, "two answers named the same offset"
    assert records_after - records_before == 256
    assert requests_after - requests_before < 256, "no Produce request carried two records"
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "batched", "enable.auto.commit": False})
    c.assign([TopicPartition(topics["commands"], 0, offsets[0])])
    at, deadline = {}, time.time() + 30
    while len(at) < offsets[-1] - offsets[0] + 1 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            at[m.offset()] = m.value()
    c.close()
    for offset, body in answers:
        assert at.get(offset) == body, (offset, at.get(offset), body)


def test_a_client_that_stops_reading_is_cut_off_not_buffered_for(tansu, workdir, routes_file, topics):
    p = Proxy(tansu.address, workdir, capture=False,
              env=stream_env(routes_file, KAFSCALE_LFS_PROXY_SSE_STALL_TIMEOUT_SEC="2"))
    g = serve(p)
    next(g)
    try:
        before = live_position(p)
        sock = socket.create_connection(("127.0.0.1", p.http_port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /topics/x/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {before}\r\n\r\n".encode())
        big = b"x" * 200_000
        produce(p.bootstrap, topics["topic"], [(i % 3, b"bulk", big, None) for i in range(60)])
        deadline = time.time() + 30
        while time.time() < deadline and metric(p, "kafka_lfs_proxy_sse_streams_ended_total", reason="stalled") < 1:
            time.sleep(0.3)
        assert metric(p, "kafka_lfs_proxy_sse_streams_ended_total", reason="stalled") == 1
        assert metric(p, "kafka_lfs_proxy_sse_streams_open") == 0
        sock.close()
    finally:
        with pytest.raises(StopIteration):
            next(g)


@pytest.fixture(scope="module")
def jwt_proxy(tansu, workdir, routes_file):
    p = Proxy(tansu.address, workdir, capture=False, env=stream_env(
        routes_file,
        KAFSCALE_LFS_PROXY_HTTP_JWT_SECRET=SECRET.decode(),
        KAFSCALE_LFS_PROXY_SSE_CHALLENGE_SEC="3",
        KAFSCALE_LFS_PROXY_SSE_MAX_STREAMS_PER_CALLER="2",
    ))
    g = serve(p)
    yield next(g)
    with pytest.raises(StopIteration):
        next(g)


def bearer(sub: str, lifetime: float) -> dict:
    return {"Authorization": "Bearer " + hs256({"sub": sub, "exp": int(time.time() + lifetime)})}


def test_jwt_stream_gets_a_challenge_and_ends_at_expiry_without_renewal(jwt_proxy):
    assert requests.get(url(jwt_proxy, "/live/events"), timeout=5).status_code == 401
    opened = time.time()
    s = SseReader(url(jwt_proxy, "/live/events"), bearer("alice", 6))
    assert s.status == 200
    challenge = s.take(1, timeout=10, event_type="challenge")
    assert challenge, "no challenge before expiry"
    asked = json.loads(challenge[0][2])
    assert asked["method"] == "POST" and asked["headers"]["content-type"] == "application/x-challenge-response"
    assert s.ended.wait(15), "the stream outlived its token"
    assert time.time() - opened >= 4.5, "ended before the token expired"
    assert metric(jwt_proxy, "kafka_lfs_proxy_sse_streams_ended_total", reason="token_expired") >= 1


def test_jwt_stream_renewed_by_a_challenge_response_goes_on(jwt_proxy):
    s = SseReader(url(jwt_proxy, "/live/events"), bearer("bob", 6))
    assert s.status == 200
    assert s.take(1, timeout=10, event_type="challenge")
    other = requests.post(url(jwt_proxy, "/live/events"), headers={
        "Content-Type": "application/x-challenge-response", **bearer("carol", 60)}, timeout=5)
    assert other.status_code == 404 and other.json()["code"] == "no_open_stream"
    r = requests.post(url(jwt_proxy, "/live/events"), headers={
        "Content-Type": "application/x-challenge-response", **bearer("bob", 60)}, timeout=5)
    assert r.status_code == 204 and r.headers["x-streams-renewed"] == "1"
    time.sleep(9)
    assert not s.ended.is_set(), "a renewed stream was ended"
    frames = s.frames
    time.sleep(2)
    assert s.frames > frames, "keep-alives stopped"
    s.close()


def test_streams_per_caller_are_capped(jwt_proxy):
    token = bearer("dave", 120)
    held = [SseReader(url(jwt_proxy, "/live/events"), token) for _ in range(2)]
    assert [h.status for h in held] == [200, 200]
    third = requests.get(url(jwt_proxy, "/live/events"), headers=token, timeout=5)
    assert third.status_code == 429 and third.json()["code"] == "too_many_streams"
    assert SseReader(url(jwt_proxy, "/live/events"), bearer("erin", 120)).status == 200
    for h in held:
        h.close()


NODE_DIR = Path(__file__).parent / "node"


def h2_requests(base: str, paths: list, ca: str = "-", wait_ms: int = 2500) -> dict:
    r = subprocess.run(["node", str(NODE_DIR / "h2_streams.js"), base, str(wait_ms), ca, *paths],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def curl(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=30)


def test_http2_prior_knowledge_serves_the_api_and_streams(replicas):
    a, _ = replicas
    r = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", url(a, "/livez"))
    assert r.stdout.decode().split("\n")[-1] == "2", r
    r = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "-X", "POST",
             "--data-binary", "h2-body", url(a, "/accepted/h2"))
    assert r.stdout.decode() == "2 202", r
    # Two streams and a plain request multiplexed on one HTTP/2 connection
    # (Node's http2 client: curl 7.88's -Z fails its own multiplexing).
    got = h2_requests(url(a, ""), ["/devices/dev-7/events", "/devices/dev-8/events", "/livez"])
    assert got["alpn"] == "h2c"
    streams = got["results"]
    assert {p: r["status"] for p, r in streams.items()} == {
        "/devices/dev-7/events": 200, "/devices/dev-8/events": 200, "/livez": 200}
    assert streams["/devices/dev-7/events"]["data"].count("event: reading") >= 4
    assert streams["/devices/dev-8/events"]["data"].count("event: reading") >= 8
    # HTTP/1.1 still works on the same port.
    assert requests.get(url(a, "/livez"), timeout=5).status_code == 200


def test_http2_over_tls_with_alpn(tansu, workdir, routes_file):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    d = workdir / "h2-tls"
    d.mkdir(exist_ok=True)
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    p = Proxy(tansu.address, workdir, capture=False, env=stream_env(
        routes_file,
        KAFSCALE_LFS_PROXY_HTTP_TLS_ENABLED="true",
        KAFSCALE_LFS_PROXY_HTTP_TLS_CERT_FILE=str(d / "cert.pem"),
        KAFSCALE_LFS_PROXY_HTTP_TLS_KEY_FILE=str(d / "key.pem"),
    ))
    try:
        base = f"https://127.0.0.1:{p.http_port}"
        deadline = time.time() + 15
        while time.time() < deadline:
            r = curl("--http2", "--cacert", str(d / "ca.pem"), "-w", "\n%{http_version}", base + "/livez")
            if r.returncode == 0:
                break
            time.sleep(0.2)
        assert r.stdout.decode().split("\n")[-1] == "2", r
        r = curl("--http1.1", "--cacert", str(d / "ca.pem"), "-w", "\n%{http_version}", base + "/livez")
        assert r.stdout.decode().split("\n")[-1] == "1.1", r
        got = h2_requests(base, ["/live/events", "/livez"], ca=str(d / "ca.pem"), wait_ms=1500)
        assert got["alpn"] == "h2"
        assert got["results"]["/live/events"]["status"] == 200
        assert got["results"]["/live/events"]["data"].startswith("id: ")
    finally:
        log = p.read_log()
        p.stop()
        assert "panicked" not in log, log
