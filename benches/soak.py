#!/usr/bin/env python3
"""Soak: a mixed load through one proxy for a fixed time, with the proxy's
RSS, open file descriptors and tokio tasks sampled every minute. Flat lines
mean nothing grows with time: no leak of memory, sockets or tasks.

The load, all at once, against tansu and SeaweedFS on loopback:
  - a confluent-kafka producer sending 1 KiB records (acks=all, idempotent),
  - a consumer reading them back through the proxy,
  - an LFS producer sending a 2 MiB LFS_BLOB value every second (multipart),
  - an HTTP client uploading 6 MiB with /lfs/produce and downloading it
    verified with /lfs/download every 2 s,
  - request-reply calls (HTTP -> Kafka -> processor -> backend -> Kafka -> HTTP)
    from 4 callers.
Checks at the end: nothing failed, no multipart upload left open, and no
cleanup pending. Usage:
  cargo build --release && .venv/bin/python benches/soak.py [MINUTES]   (default 30)
Writes target/bench/soak.json and prints a Markdown table.
"""

import hashlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

from bench_support import REPO, conftest
from test_request_reply import Backend, ProcessorProc  # noqa: E402

MIB = 1024 * 1024


def status(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def sample(proxy, started):
    text = proxy.http("/metrics")[1]
    return {
        "minute": round((time.time() - started) / 60, 1),
        "rss_mib": round(status(proxy.proc.pid, "VmRSS") / 1024, 1),
        "fds": len(os.listdir(f"/proc/{proxy.proc.pid}/fd")),
        "tasks": int(conftest.metric(text, "kafka_lfs_proxy_tasks_alive")),
        "connections": int(conftest.metric(text, "kafka_lfs_proxy_connections_open")),
        "orphans_pending": int(conftest.metric(text, "kafka_lfs_proxy_lfs_orphans_pending")),
    }


class Load:
    def __init__(self):
        self.stop = threading.Event()
        self.counts = {}
        self.errors = []
        self.lock = threading.Lock()

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def fail(self, what, detail):
        with self.lock:
            self.errors.append(f"{what}: {detail}"[:300])

    def loop(self, what, fn, pause):
        def run():
            while not self.stop.is_set():
                try:
                    fn()
                except Exception as e:  # counted and reported, never silent
                    self.fail(what, repr(e))
                self.stop.wait(pause)
        t = threading.Thread(target=run, name=what, daemon=True)
        t.start()
        return t


def main():
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 30
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    tansu = conftest.Tansu(work)
    s3 = conftest.SeaweedFS(work)
    backend = Backend()
    admin = AdminClient({"bootstrap.servers": tansu.address})
    for f in admin.create_topics([NewTopic(t, 3, 1) for t in ("soak-plain", "soak-lfs", "soak-http")]
                                 + [NewTopic("soak-req", 2, 1), NewTopic("soak-rep", 2, 1)]).values():
        f.result(15)
    routes = work / "routes.yaml"
    routes.write_text("routes:\n  - path: /echo\n    request_topic: soak-req\n    reply_topic: soak-rep\n    timeout: 30\n")
    config = work / "processor.yaml"
    config.write_text(f"topics:\n  - request_topic: soak-req\n    response_topic: soak-rep\n"
                      f"    backend_url: http://127.0.0.1:{backend.port}\n    consumer_group: soak\n")
    env = dict(s3.proxy_env(), KAFSCALE_LFS_PROXY_RR_ROUTES_FILE=str(routes), KAFSCALE_LFS_PROXY_LOG_LEVEL="warn")
    proxy = conftest.Proxy(tansu.address, work, capture=False, env=env)
    processor = ProcessorProc(work, tansu.address, config, env={"KAFSCALE_LFS_PROXY_LOG_LEVEL": "warn"})
    load = Load()
    samples = []
    try:
        proxy.wait_ready(30)
        processor.wait_ready()
        http = f"http://127.0.0.1:{proxy.http_port}"

        plain = Producer({"bootstrap.servers": proxy.bootstrap, "enable.idempotence": True, "linger.ms": 20})
        lfs = Producer({"bootstrap.servers": proxy.bootstrap, "enable.idempotence": True,
                        "message.max.bytes": 8 * MIB})

        def delivered(what):
            return lambda e, m: load.fail(what, e) if e else load.count(what)

        def produce_plain():
            for i in range(200):
                plain.produce("soak-plain", key=b"%d" % i, value=os.urandom(1024), on_delivery=delivered("produced"))
            plain.poll(0)

        def produce_lfs():
            value = os.urandom(2 * MIB)
            lfs.produce("soak-lfs", value=value, headers=[("LFS_BLOB", hashlib.sha256(value).hexdigest().encode())],
                        on_delivery=delivered("lfs_produced"))
            lfs.poll(0)

        consumer = Consumer({"bootstrap.servers": proxy.bootstrap, "group.id": "soak-" + uuid.uuid4().hex[:6],
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition("soak-plain", p, 0) for p in range(3)])

        def consume():
            for m in consumer.consume(500, 0.2):
                if m.error():
                    load.fail("consume", m.error())
                else:
                    load.count("consumed")

        session = requests.Session()

        def http_round_trip():
            body = os.urandom(6 * MIB)
            r = session.post(f"{http}/lfs/produce", data=body, headers={"X-Kafka-Topic": "soak-http"}, timeout=60)
            if r.status_code != 200:
                return load.fail("http_produce", f"{r.status_code} {r.text[:200]}")
            env = r.json()
            d = session.post(f"{http}/lfs/download", timeout=60, json={
                "key": env["key"], "integrity": {"sha256": env["sha256"], "size": env["size"]}})
            if d.status_code != 200 or hashlib.sha256(d.content).digest() != hashlib.sha256(body).digest():
                return load.fail("http_download", f"{d.status_code}")
            load.count("http_round_trips")

        def request_reply():
            r = session_rr.post(f"{http}/echo", data=b"ping", timeout=60)
            if r.status_code == 201 and r.content == b"ping":
                load.count("rr_calls")
            else:
                load.fail("rr", f"{r.status_code} {r.text[:200]}")

        session_rr = requests.Session()
        threads = [
            load.loop("produce", produce_plain, 0.1),
            load.loop("lfs", produce_lfs, 1.0),
            load.loop("consume", consume, 0.0),
            load.loop("http", http_round_trip, 2.0),
        ] + [load.loop(f"rr-{i}", request_reply, 0.05) for i in range(4)]
        del threads
        started = time.time()
        samples.append(sample(proxy, started))
        print(json.dumps(samples[-1]), flush=True)
        deadline = started + minutes * 60
        while time.time() < deadline:
            time.sleep(max(0, min(60, deadline - time.time())))
            samples.append(sample(proxy, started))
            print(json.dumps(samples[-1]), json.dumps(load.counts), flush=True)
        load.stop.set()
        time.sleep(3)
        plain.flush(60)
        lfs.flush(120)
        consumer.close()
        time.sleep(5)
        final = sample(proxy, started)
        open_uploads = s3.client().list_multipart_uploads(Bucket=s3.BUCKET).get("Uploads", [])
        result = {
            "minutes": minutes,
            "samples": samples,
            "after_load": final,
            "counts": load.counts,
            "errors": load.errors[:50],
            "error_count": len(load.errors),
            "open_multipart_uploads": len(open_uploads),
            "proxy_peak_rss_mib": round(status(proxy.proc.pid, "VmHWM") / 1024, 1),
        }
        out = REPO / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "soak.json").write_text(json.dumps(result, indent=2))
        print("| minute | RSS MiB | open fds | tasks | connections | cleanup pending |")
        print("|---|---|---|---|---|---|")
        for s in samples + [final]:
            print(f"| {s['minute']} | {s['rss_mib']} | {s['fds']} | {s['tasks']} | {s['connections']} | {s['orphans_pending']} |")
        print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
        if load.errors or open_uploads or final["orphans_pending"]:
            sys.exit(1)
    finally:
        load.stop.set()
        proxy.stop()
        processor.stop()
        backend.stop()
        s3.kill()
        tansu.stop()


if __name__ == "__main__":
    main()
