#!/usr/bin/env python3
"""Request-reply throughput and latency: HTTP → proxy → tansu → processor →
HTTP backend → tansu → proxy → HTTP, at several concurrencies, next to the
broker's own produce→consume time measured in the same run.

Starts tansu, a trivial backend (Python http.server, TCP_NODELAY), the
release proxy with one route and `kafka-lfs-proxy processor`. Each
concurrency runs for a fixed time with keep-alive clients (threads), then
prints requests/s, p50 and p99, and the peak RSS of the proxy and the
processor. The baseline is a librdkafka producer and a consumer assigned to
the partition, with the same fetch wait the proxy uses (25 ms).
Usage:
  cargo build --release && .venv/bin/python benches/request_reply.py [SECONDS_PER_STEP]
"""

import json
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench_support import conftest, percentile, vm_hwm_mib
from test_request_reply import Backend, ProcessorProc  # noqa: E402

FETCH_WAIT_MS = 25


def broker_round_trip(address, topic, n=200):
    from confluent_kafka import Consumer, Producer, TopicPartition

    p = Producer({"bootstrap.servers": address, "linger.ms": 0, "acks": "all"})
    c = Consumer({"bootstrap.servers": address, "group.id": "bench-" + uuid.uuid4().hex[:6],
                  "fetch.wait.max.ms": FETCH_WAIT_MS, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, -1)])
    c.poll(1)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        p.produce(topic, b"ping", partition=0)
        p.flush()
        while True:
            m = c.poll(2)
            if m is not None and not m.error():
                break
        out.append((time.perf_counter() - t0) * 1000)
    c.close()
    out.sort()
    return {"p50_ms": percentile(out, 0.5), "p99_ms": percentile(out, 0.99)}


def run_step(endpoint, concurrency, seconds):
    stop = time.time() + seconds
    lat = []
    errors = [0]
    lock = threading.Lock()

    def client():
        s = requests.Session()
        mine = []
        while time.time() < stop:
            t0 = time.perf_counter()
            r = s.post(endpoint, data=b"hello")
            if r.status_code == 201 and r.content == b"hello":
                mine.append((time.perf_counter() - t0) * 1000)
            else:
                with lock:
                    errors[0] += 1
        with lock:
            lat.extend(mine)

    t0 = time.time()
    with ThreadPoolExecutor(concurrency) as ex:
        for _ in range(concurrency):
            ex.submit(client)
    elapsed = time.time() - t0
    lat.sort()
    return {
        "concurrency": concurrency,
        "requests_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": percentile(lat, 0.5) if lat else None,
        "p99_ms": percentile(lat, 0.99) if lat else None,
        "errors": errors[0],
    }


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10
    work = Path(tempfile.mkdtemp(prefix="rr-bench-"))
    tansu = conftest.Tansu(work)
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": tansu.address})
    for f in admin.create_topics([NewTopic("bench-req", 4, 1), NewTopic("bench-rep", 4, 1),
                                  NewTopic("bench-ping", 1, 1)]).values():
        f.result(15)
    backend = Backend()
    routes = work / "routes.yaml"
    routes.write_text("routes:\n  - path: /echo\n    request_topic: bench-req\n"
                      "    reply_topic: bench-rep\n    timeout: 30\n")
    config = work / "processor.yaml"
    config.write_text(f"topics:\n  - request_topic: bench-req\n    response_topic: bench-rep\n"
                      f"    backend_url: http://127.0.0.1:{backend.port}\n    consumer_group: bench\n"
                      f"max_concurrent_requests: 256\n")
    env = {"KAFSCALE_LFS_PROXY_RR_ROUTES_FILE": str(routes), "KAFSCALE_LFS_PROXY_LOG_LEVEL": "warn",
           "KAFSCALE_LFS_PROXY_RR_FETCH_WAIT_MS": str(FETCH_WAIT_MS)}
    proxy = conftest.Proxy(tansu.address, work, capture=False, env=env)
    processor = ProcessorProc(work, tansu.address, config,
                              env={"KAFSCALE_LFS_PROXY_LOG_LEVEL": "warn",
                                   "KAFSCALE_LFS_PROXY_PROCESSOR_FETCH_WAIT_MS": str(FETCH_WAIT_MS)})
    try:
        proxy.wait_ready()
        processor.wait_ready()
        endpoint = f"http://127.0.0.1:{proxy.http_port}/echo"
        run_step(endpoint, 4, 2)  # warm-up: connections, metadata
        baseline = broker_round_trip(tansu.address, "bench-ping")
        steps = [run_step(endpoint, c, seconds) for c in (1, 16, 64, 256)]
        result = {
            "broker_produce_to_consume": baseline,
            "steps": steps,
            "proxy_peak_rss_mib": vm_hwm_mib(proxy.proc.pid),
            "processor_peak_rss_mib": vm_hwm_mib(processor.proc.pid),
            "seconds_per_step": seconds,
        }
        print(json.dumps(result, indent=2))
        print(f"\nbroker produce→consume (librdkafka, fetch wait {FETCH_WAIT_MS} ms): "
              f"p50 {baseline['p50_ms']} ms, p99 {baseline['p99_ms']} ms")
        print("| concurrency | requests/s | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|")
        for s in steps:
            print(f"| {s['concurrency']} | {s['requests_per_s']} | {s['p50_ms']} | {s['p99_ms']} | {s['errors']} |")
        print(f"peak RSS: proxy {result['proxy_peak_rss_mib']} MiB, "
              f"processor {result['processor_peak_rss_mib']} MiB")
    finally:
        proxy.stop()
        processor.stop()
        backend.stop()
        tansu.stop()


if __name__ == "__main__":
    main()
