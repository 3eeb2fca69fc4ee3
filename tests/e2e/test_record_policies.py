"""Record policies against tansu, with the Smart Cache documents example
policy (examples/policies/smart-cache-documents.yaml): confluent-kafka,
kafka-python and kafkajs producers send valid events, events without
Security-Label, with a non-UUID key, with a value missing `uri`, and a
5 MiB document tagged LFS_BLOB. Valid and offloaded ones arrive; invalid
ones are refused with INVALID_RECORD and the rule in each client's delivery
report, or, under the dead-letter variant, arrive on the dead-letter topic
with the dlq.* headers while the valid ones of the same batch arrive on
their topic. The same cases through /lfs/produce, upload sessions and
request-reply get 400 with policy_<rule> codes. Reloads by SIGHUP and by
file change keep connections; a bad file keeps the old policy; a bad file
at start-up stops the proxy naming the line."""

import base64
import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from conftest import PROXY_BIN, Proxy, metric, serve
from test_lfs import check_envelope

EXAMPLE = Path(__file__).parents[2] / "examples" / "policies" / "smart-cache-documents.yaml"
MiB = 1024 * 1024
INVALID_RECORD = 87
LABEL = "(classification=O&(permitted_organisations=Telicent)&(permitted_nationalities=GBR))"
DEAD_LETTERS = "dead-letters.documents"

# What the producer is told, per broken rule.
SAYS = {
    "no_label": "policy smart-cache-documents rule header_required: header Security-Label is required",
    "bad_key": "policy smart-cache-documents rule key_uuid: the key must be a UUID in the 36-character text form",
    "no_uri": "policy smart-cache-documents rule value_json: the value has no field uri",
}
RULES = {"no_label": "header_required", "bad_key": "key_uuid", "no_uri": "value_json"}


def document(content: bytes, uri=True) -> bytes:
    doc = {"filename": "example.pdf", "content": base64.b64encode(content).decode()}
    if uri:
        doc["uri"] = "https://example.org/ns#" + hashlib.sha256(content).hexdigest()
    return json.dumps(doc).encode()


def events():
    """name -> (key, value, headers): the issue's five cases."""
    good = [("Security-Label", LABEL.encode()), ("Content-Type", b"application/pdf"),
            ("Exec-Path", b"e2e")]
    key = lambda: str(uuid.uuid4()).encode()  # noqa: E731
    return {
        "valid": (key(), document(b"The quick brown fox"), good),
        "no_label": (key(), document(b"no label"), good[1:]),
        "bad_key": (b"order-17", document(b"bad key"), good),
        "no_uri": (key(), document(b"no uri", uri=False), good),
        "large": (key(), document(os.urandom(int(3.75 * MiB))), good + [("LFS_BLOB", b"")]),
    }


def dead_letter_variant() -> str:
    """The example policy, plus the same contract dead-lettering on dl-documents.*."""
    text = EXAMPLE.read_text()
    entry = text[text.index("  - name: smart-cache-documents"):]
    entry = (entry.replace("name: smart-cache-documents", "name: smart-cache-documents-dl")
             .replace('topics: ["documents", "documents.*"]', 'topics: ["dl-documents.*"]')
             .replace("action: reject", f"action: dead_letter\n    dead_letter_topic: {DEAD_LETTERS}"))
    return text + entry


@pytest.fixture(scope="module")
def policy_file(workdir):
    path = workdir / "policies.yaml"
    path.write_text(dead_letter_variant())
    return path


@pytest.fixture(scope="module")
def pproxy(tansu, workdir, policy_file):
    env = {"KAFSCALE_LFS_PROXY_POLICY_FILE": str(policy_file),
           "KAFSCALE_LFS_PROXY_RR_HEADER_ROUTE": "true"}
    yield from serve(Proxy(tansu.address, workdir, capture=False, env=env))


def create_topic(bootstrap, prefix="documents.", partitions=1):
    from confluent_kafka.admin import AdminClient, NewTopic

    name = prefix + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(15)
    return name


def consume(bootstrap, topic, n, timeout=60):
    """(offset, key, value, headers) of the first n records of partition 0."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "pol-" + uuid.uuid4().hex[:6],
                  "enable.auto.commit": False, "fetch.max.bytes": 64 * MiB,
                  "receive.message.max.bytes": 80 * MiB})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got, deadline = [], time.time() + timeout
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.append((m.offset(), m.key(), m.value(), dict(m.headers() or [])))
    # Nothing more arrives.
    extra = c.poll(1.0)
    assert extra is None or extra.error() is not None, (extra.key(), extra.value()[:200])
    c.close()
    return got


def confluent_produce(bootstrap, topic, batch, one_batch=False, extra=None):
    """Produces (name, key, value, headers); returns {name: error string or None}."""
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap, "message.max.bytes": 60 * MiB, "batch.size": 60 * MiB,
            "linger.ms": 50 if one_batch else 0, "retries": 0}
    conf.update(extra or {})
    p = Producer(conf)
    outcome = {}
    for name, key, value, headers in batch:
        p.produce(topic, key=key, value=value, headers=headers, partition=0,
                  on_delivery=lambda err, msg, name=name: outcome.__setitem__(name, msg.error()))
        if not one_batch:
            p.flush(30)
    assert p.flush(60) == 0
    return outcome


def check_arrived(proxy, topic, ev, names):
    """The records `names` of `ev` arrived, in order, as produced (the large
    one as an envelope whose object is the document)."""
    got = consume(proxy.bootstrap, topic, len(names))
    assert [g[1] for g in got] == [ev[n][0] for n in names]
    for (_, key, value, headers), name in zip(got, names):
        _, original, sent_headers = ev[name]
        sent = {k: v for k, v in sent_headers if k != "LFS_BLOB"}
        assert headers == sent
        if name == "large":
            # The envelope's content_type comes from the `content-type`
            # header (exact name), which these records do not carry.
            check_envelope(proxy.storage_dir, value, original, topic, "application/octet-stream")
        else:
            assert value == original


def test_confluent_kafka_reject_names_each_bad_record(pproxy):
    topic = create_topic(pproxy.bootstrap)
    ev = events()
    before = pproxy.http("/metrics")[1]
    outcome = confluent_produce(pproxy.bootstrap, topic, [(n, *ev[n]) for n in ev])
    assert outcome["valid"] is None and outcome["large"] is None, outcome
    for name in SAYS:
        # librdkafka reads record_errors (rd_kafka_message_errstr() gives
        # each message its text); confluent-kafka's KafkaError carries the
        # code's description only, so the text is checked in the log here
        # and in kafka-python's exception below.
        err = outcome[name]
        assert err is not None and err.code() == INVALID_RECORD, (name, err)
    log = pproxy.read_log()
    for says in SAYS.values():
        assert says in log, says
    check_arrived(pproxy, topic, ev, ["valid", "large"])
    after = pproxy.http("/metrics")[1]
    for rule in RULES.values():
        name = ('kafka_lfs_proxy_policy_records_rejected_total{policy="smart-cache-documents",'
                f'rule="{rule}",path="kafka"}}')
        assert metric(after, name) - metric(before, name) == 1, rule
    checked = 'kafka_lfs_proxy_policy_records_checked_total{policy="smart-cache-documents",path="kafka"}'
    assert metric(after, checked) - metric(before, checked) == 5


def test_confluent_kafka_mixed_batch_reports_per_record(pproxy):
    """One batch, bad records among good ones: the partition fails (a batch
    is atomic); librdkafka matches record_errors to its messages (KIP-467):
    each bad record fails with INVALID_RECORD, the good ones with
    _INVALID_DIFFERENT_RECORD ("part of a batch which had invalid
    records"), so the application knows which ones to fix and resend."""
    from confluent_kafka import KafkaError

    topic = create_topic(pproxy.bootstrap)
    ev = events()
    names = ["valid", "no_label", "bad_key", "no_uri"]
    outcome = confluent_produce(pproxy.bootstrap, topic, [(n, *ev[n]) for n in names], one_batch=True)
    assert outcome["valid"] is not None and outcome["valid"].code() == KafkaError._INVALID_DIFFERENT_RECORD, outcome
    for name in SAYS:
        assert outcome[name] is not None and outcome[name].code() == INVALID_RECORD, outcome
    assert consume(pproxy.bootstrap, topic, 0) == []
    # The good record, sent again alone, goes through.
    again = confluent_produce(pproxy.bootstrap, topic, [("valid", *ev["valid"])])
    assert again["valid"] is None, again
    assert [g[1] for g in consume(pproxy.bootstrap, topic, 1)] == [ev["valid"][0]]


def test_kafka_python_reject(pproxy):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    topic = create_topic(pproxy.bootstrap)
    ev = events()
    p = KafkaProducer(bootstrap_servers=pproxy.bootstrap, max_request_size=60 * MiB, retries=0)
    outcome = {}
    for name, (key, value, headers) in ev.items():
        try:
            p.send(topic, key=key, value=value, headers=headers, partition=0).get(timeout=60)
            outcome[name] = None
        except KafkaError as e:
            outcome[name] = e
    p.close()
    assert outcome["valid"] is None and outcome["large"] is None, outcome
    for name, says in SAYS.items():
        e = outcome[name]
        assert e is not None and type(e).__name__ == "InvalidRecordError", (name, e)
        assert says in str(e), (name, str(e))
    check_arrived(pproxy, topic, ev, ["valid", "large"])


def test_kafkajs_reject(pproxy, workdir):
    topic = create_topic(pproxy.bootstrap)
    ev = events()
    spec = [{"key": key.decode(), "value": base64.b64encode(value).decode(),
             "headers": {k: v.decode() for k, v in headers}} for key, value, headers in ev.values()]
    path = workdir / f"events-{topic}.json"
    path.write_text(json.dumps(spec))
    script = Path(__file__).parent / "node" / "policy_produce.js"
    out = subprocess.run(["node", str(script), pproxy.bootstrap, topic, str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    results = dict(zip(ev, (json.loads(line) for line in out.stdout.splitlines())))
    assert results["valid"]["ok"] and results["large"]["ok"], results
    for name in SAYS:
        r = results[name]
        # kafkajs speaks Produce v7: no per-record messages before v8, so it
        # reports the code only.
        assert not r["ok"] and r["type"] == "INVALID_RECORD", (name, r)
    check_arrived(pproxy, topic, ev, ["valid", "large"])
    log = pproxy.read_log()
    assert "partition refused by its topic policy" in log and topic in log


def test_dead_letter_keeps_the_rest_of_the_batch(pproxy):
    """Under the dead-letter policy the producer sees success; the valid
    records of the batch arrive on their topic in order, the invalid ones
    on the dead-letter topic with dlq.* headers."""
    topic = create_topic(pproxy.bootstrap, prefix="dl-documents.")
    ev = events()
    names = ["valid", "no_label", "bad_key", "no_uri", "large"]
    batch = [(n, *ev[n]) for n in names]
    batch.append(("valid2", *events()["valid"]))
    ev["valid2"] = batch[-1][1:]
    before = pproxy.http("/metrics")[1]
    outcome = confluent_produce(pproxy.bootstrap, topic, batch, one_batch=True,
                                extra={"enable.idempotence": False})
    assert all(err is None for err in outcome.values()), outcome
    check_arrived(pproxy, topic, ev, ["valid", "large", "valid2"])
    dead = [d for d in consume_dead_letters(pproxy, topic) if d[3]["dlq.source.topic"] == topic.encode()]
    # Partitioned by key in the dead-letter topic: matched by key.
    assert sorted(d[1] for d in dead) == sorted(ev[n][0] for n in SAYS)
    by_key = {d[1]: d for d in dead}
    for name in SAYS:
        _, key, value, headers = by_key[ev[name][0]]
        _, original, sent = ev[name]
        assert value == original
        for k, v in sent:
            assert headers[k] == v
        assert headers["dlq.source.partition"] == b"0"
        assert headers["dlq.policy"] == b"smart-cache-documents-dl"
        assert headers["dlq.rule"] == RULES[name].encode()
        assert SAYS[name].split(": ", 1)[1] in headers["dlq.reason"].decode()
        assert headers["dlq.source.client.id"] == b"rdkafka"
    after = pproxy.http("/metrics")[1]
    for rule in RULES.values():
        name = ('kafka_lfs_proxy_policy_records_dead_lettered_total{policy="smart-cache-documents-dl",'
                f'rule="{rule}"}}')
        assert metric(after, name) - metric(before, name) == 1, rule


def consume_dead_letters(proxy, topic):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": proxy.bootstrap, "group.id": "dlq-" + uuid.uuid4().hex[:6],
                  "enable.auto.commit": False})
    meta = c.list_topics(DEAD_LETTERS, timeout=10).topics[DEAD_LETTERS]
    c.assign([TopicPartition(DEAD_LETTERS, p, OFFSET_BEGINNING) for p in meta.partitions])
    got, idle = [], 0
    while idle < 4:
        m = c.poll(0.5)
        if m is None:
            idle += 1
            continue
        assert m.error() is None, m.error()
        got.append((m.offset(), m.key(), m.value(), dict(m.headers() or [])))
    c.close()
    return got


def test_idempotent_batches_are_refused_not_dead_lettered(pproxy):
    topic = create_topic(pproxy.bootstrap, prefix="dl-documents.")
    ev = events()
    outcome = confluent_produce(pproxy.bootstrap, topic, [("no_label", *ev["no_label"])],
                                extra={"enable.idempotence": True, "retries": 3})
    err = outcome["no_label"]
    assert err is not None and err.code() == INVALID_RECORD, err
    log = pproxy.read_log()
    says = SAYS["no_label"].replace("smart-cache-documents", "smart-cache-documents-dl")
    assert f"{says}; dead-lettering is not possible for idempotent or transactional producers" in log
    assert consume(pproxy.bootstrap, topic, 0) == []


def http_produce(proxy, topic, body, headers=None, key=None):
    h = {"X-Kafka-Topic": topic, "Content-Type": "application/pdf"}
    if key is not None:
        h["X-Kafka-Key"] = base64.b64encode(key).decode()
    h.update(headers or {})
    return requests.post(f"http://127.0.0.1:{proxy.http_port}/lfs/produce", data=body, headers=h, timeout=60)


def objects_of(proxy, topic):
    return sorted(p for p in proxy.storage_dir.rglob("obj-*") if f"/{topic}/" in str(p))


def test_http_produce_answers_400_with_the_rule(pproxy):
    topic = create_topic(pproxy.bootstrap)
    label = {"X-Kafka-Header-Security-Label": LABEL}
    key = str(uuid.uuid4()).encode()
    cases = [
        ({}, key, document(b"a"), "policy_header_required", SAYS["no_label"]),
        (label, b"order-17", document(b"b"), "policy_key_uuid", SAYS["bad_key"]),
        (label, key, document(b"c", uri=False), "policy_value_json", SAYS["no_uri"]),
    ]
    for headers, k, body, code, says in cases:
        r = http_produce(pproxy, topic, body, headers, k)
        assert r.status_code == 400 and r.json()["code"] == code, (code, r.text)
        assert says in r.json()["message"], r.text
    assert objects_of(pproxy, topic) == [], "a refused body leaves no object"
    big = document(os.urandom(int(3.75 * MiB)))
    r = http_produce(pproxy, topic, big, label, key)
    assert r.status_code == 200, r.text
    got = consume(pproxy.bootstrap, topic, 1)
    check_envelope(pproxy.storage_dir, got[0][2], big, topic, "application/pdf")
    assert got[0][3]["security-label"] == LABEL.encode()


def test_upload_sessions_are_judged(pproxy):
    topic = create_topic(pproxy.bootstrap)
    url = f"http://127.0.0.1:{pproxy.http_port}/lfs/uploads"
    init = {"topic": topic, "content_type": "application/pdf", "key": base64.b64encode(b"order-17").decode()}
    body = document(b"session", uri=False)
    r = requests.post(url, json={**init, "size_bytes": len(body), "headers": {"Security-Label": LABEL}}, timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "policy_key_uuid", r.text
    init["key"] = base64.b64encode(str(uuid.uuid4()).encode()).decode()
    r = requests.post(url, json={**init, "size_bytes": len(body)}, timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "policy_header_required", r.text
    r = requests.post(url, json={**init, "size_bytes": len(body), "headers": {"Security-Label": LABEL}}, timeout=10)
    assert r.status_code == 200, r.text
    upload = r.json()["upload_id"]
    part = requests.put(f"{url}/{upload}/parts/1", data=body, timeout=10)
    assert part.status_code == 200, part.text
    done = requests.post(f"{url}/{upload}/complete",
                         json={"parts": [{"part_number": 1, "etag": part.json()["etag"]}]}, timeout=10)
    assert done.status_code == 400 and done.json()["code"] == "policy_value_json", done.text
    assert SAYS["no_uri"] in done.json()["message"]
    assert objects_of(pproxy, topic) == [], "the refused upload was aborted"


def test_request_reply_calls_are_judged(pproxy):
    topic = create_topic(pproxy.bootstrap)
    url = f"http://127.0.0.1:{pproxy.http_port}/orders"
    h = {"X-Kafka-Topic": topic, "X-Kafka-Reply-Topic": topic + ".replies", "Prefer": "respond-async"}
    r = requests.post(url, data=document(b"rr"), headers=h, timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "policy_header_required", r.text
    r = requests.post(url, data=document(b"rr", uri=False), headers={**h, "Security-Label": LABEL}, timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "policy_value_json", r.text
    r = requests.post(url, data=document(b"rr"), headers={**h, "Security-Label": LABEL}, timeout=10)
    assert r.status_code == 202, r.text


RELOAD_BASE = """policies:
  - name: reload
    topics: ["reload.*"]
"""


def produce_one(p, topic, headers):
    outcome = []
    p.produce(topic, value=b"v", headers=headers, partition=0,
              on_delivery=lambda err, msg: outcome.append(err))
    p.flush(30)
    return outcome[0]


def test_reload_on_sighup_and_on_change_keeps_connections(tansu, workdir):
    from confluent_kafka import Producer

    path = workdir / "reload.yaml"
    path.write_text(RELOAD_BASE + "    headers: { required: [A] }\n")
    env = {"KAFSCALE_LFS_PROXY_POLICY_FILE": str(path), "KAFSCALE_LFS_PROXY_POLICY_RELOAD_INTERVAL_MS": "0"}
    for proxy in serve(Proxy(tansu.address, workdir, capture=False, env=env)):
        topic = create_topic(proxy.bootstrap, prefix="reload.")
        p = Producer({"bootstrap.servers": proxy.bootstrap, "retries": 0})
        assert produce_one(p, topic, [("A", b"1")]) is None
        assert produce_one(p, topic, [("B", b"1")]).code() == INVALID_RECORD
        connections = metric(proxy.http("/metrics")[1], "kafka_lfs_proxy_connections_total")
        # Polling is off: a change waits for SIGHUP.
        path.write_text(RELOAD_BASE + "    headers: { required: [B] }\n")
        time.sleep(1)
        assert produce_one(p, topic, [("B", b"1")]).code() == INVALID_RECORD
        proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "policy file reloaded" not in proxy.read_log() and time.time() < deadline:
            time.sleep(0.1)
        assert produce_one(p, topic, [("B", b"1")]) is None
        assert produce_one(p, topic, [("A", b"1")]).code() == INVALID_RECORD
        # A bad file: the old policy stays, and the log says why.
        path.write_text(RELOAD_BASE + "    headers: { requird: [C] }\n")
        proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "policy file not reloaded" not in proxy.read_log() and time.time() < deadline:
            time.sleep(0.1)
        assert "unknown field `requird`" in proxy.read_log()
        assert produce_one(p, topic, [("B", b"1")]) is None
        assert metric(proxy.http("/metrics")[1], "kafka_lfs_proxy_connections_total") == connections
        assert proxy.proc.poll() is None
    path.write_text(RELOAD_BASE + "    headers: { required: [A] }\n")
    env["KAFSCALE_LFS_PROXY_POLICY_RELOAD_INTERVAL_MS"] = "200"
    for proxy in serve(Proxy(tansu.address, workdir, capture=False, env=env)):
        topic = create_topic(proxy.bootstrap, prefix="reload.")
        p = Producer({"bootstrap.servers": proxy.bootstrap, "retries": 0})
        assert produce_one(p, topic, [("B", b"1")]).code() == INVALID_RECORD
        # Written to a new file and renamed over the old, as editors and
        # Kubernetes ConfigMaps do.
        tmp = workdir / "reload.yaml.tmp"
        tmp.write_text(RELOAD_BASE + "    headers: { required: [B] }\n")
        tmp.rename(path)
        deadline = time.time() + 10
        while "policy file reloaded" not in proxy.read_log() and time.time() < deadline:
            time.sleep(0.1)
        assert produce_one(p, topic, [("B", b"1")]) is None


def test_a_bad_policy_file_stops_start_up_naming_the_line(workdir):
    from conftest import free_port

    path = workdir / "bad-policy.yaml"
    path.write_text("policies:\n  - name: a\n    topics: [t]\n    key: { presence: sometimes }\n")
    out = subprocess.run([str(PROXY_BIN)], env={**os.environ, "KAFSCALE_LFS_PROXY_POLICY_FILE": str(path),
                                                "KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS": "127.0.0.1:1",
                                                "KAFSCALE_LFS_PROXY_ADDR": f"127.0.0.1:{free_port('127.0.0.1', 130)}",
                                                "KAFSCALE_LFS_PROXY_HTTP_ADDR": f"127.0.0.1:{free_port()}"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert str(path) in out.stderr and "line 4" in out.stderr and "sometimes" in out.stderr, out.stderr
