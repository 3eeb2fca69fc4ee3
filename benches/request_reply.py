#!/usr/bin/env python3
"""Request-reply throughput and latency: HTTP → proxy → tansu → processor →
HTTP backend → tansu → proxy → HTTP, at several concurrencies, next to the
broker's own produce→consume time measured in the same run.

Starts tansu, a trivial backend (Python http.server, TCP_NODELAY), the
release proxy with one route and `kafka-lfs-proxy processor`. Each
concurrency runs for a fixed time with keep-alive clients (threads), then
prints requests/s, p50 and p99, and the peak RSS of the proxy and the
processor. To locate a ceiling, each step also reports where the time and
the CPU went: the CPU share of tansu, the proxy, the processor and this
backend and the clients (wrk or threads), the proxy's mean Kafka round trip (request
produced → reply read), the processor's mean backend call, and how many
records each Produce of the proxy and of the processor carried. The baseline is a librdkafka producer and a consumer assigned to
the partition, with the same fetch wait the proxy uses (25 ms).
The load comes from `wrk` (GET, keep-alive, as the issue's side-by-side
with kafka-http-proxy was measured) when it is installed (`apt-get install
wrk`), else from Python threads (POST, reply checked); `--python` forces the
threads. The backend runs in its own process so it never shares the
clients' interpreter.
Usage:
  cargo build --release && .venv/bin/python benches/request_reply.py [SECONDS_PER_STEP] [--python]
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench_support import conftest, cpu_seconds, histogram_totals, percentile, vm_hwm_mib
from test_request_reply import ProcessorProc  # noqa: E402

FETCH_WAIT_MS = 25
# Callers per step, in order (BENCH_CONCURRENCIES="256,64" to reorder).
CONCURRENCIES = [int(c) for c in os.environ.get("BENCH_CONCURRENCIES", "1,16,64,256").split(",")]


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


HISTOGRAMS = {
    "proxy": ["kafka_lfs_proxy_rr_request_duration_seconds",
              "kafka_lfs_proxy_rr_kafka_round_trip_seconds"],
    "processor": ["kafka_lfs_proxy_processor_duration_seconds",
                  "kafka_lfs_proxy_processor_backend_duration_seconds"],
}
COUNTERS = ["kafka_lfs_proxy_own_produce_requests_total",
            "kafka_lfs_proxy_own_produce_records_total"]


class Probe:
    """CPU seconds of each process and the metrics of the proxy and the
    processor, read before and after a step."""

    def __init__(self, pids, metrics_urls):
        self.pids = pids
        self.urls = metrics_urls

    def read(self):
        snap = {"t": time.time()}
        for name, pid in self.pids.items():
            snap["cpu_" + name] = cpu_seconds(pid)
        for who, url in self.urls.items():
            text = requests.get(url, timeout=5).text
            for h in HISTOGRAMS[who]:
                snap[h] = histogram_totals(text, h)
            for c in COUNTERS:
                snap[f"{who}:{c}"] = conftest.metric(text, c)
        return snap

    @staticmethod
    def report(before, after):
        elapsed = after["t"] - before["t"]
        out = {}
        for key in before:
            if key.startswith("cpu_"):
                out[key + "_pct"] = round((after[key] - before[key]) / elapsed * 100)
        for hs in HISTOGRAMS.values():
            for h in hs:
                total = after[h][0] - before[h][0]
                count = after[h][1] - before[h][1]
                short = h.removeprefix("kafka_lfs_proxy_").removesuffix("_seconds")
                out[short + "_mean_ms"] = round(total / count * 1000, 2) if count else None
        for who in HISTOGRAMS:
            reqs = after[f"{who}:{COUNTERS[0]}"] - before[f"{who}:{COUNTERS[0]}"]
            recs = after[f"{who}:{COUNTERS[1]}"] - before[f"{who}:{COUNTERS[1]}"]
            out[who + "_records_per_produce"] = round(recs / reqs, 1) if reqs else None
        return out


# socketserver's listen backlog is 5: a burst of new connections from the
# processor would overflow it and wait out SYN retransmits (1 s, 3 s, 7 s),
# which shows up as multi-second p99s that are not the proxy's.
BACKEND_SCRIPT = """
import http.server, sys, time
http.server.ThreadingHTTPServer.request_queue_size = 1024
sys.path.insert(0, sys.argv[1])
from test_request_reply import Backend
b = Backend()
print(b.port, flush=True)
while True:
    time.sleep(3600)
"""


class BackendProc:
    """The e2e suite's echo backend, in a process of its own."""

    def __init__(self):
        e2e = str(Path(__file__).resolve().parents[1] / "tests" / "e2e")
        self.proc = subprocess.Popen([sys.executable, "-c", BACKEND_SCRIPT, e2e],
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)


def wrk_ms(text):
    """A wrk duration ("812.00us", "14.2ms", "1.02s") in milliseconds."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return round(float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit], 3)


def run_wrk_step(endpoint, concurrency, seconds, probe=None):
    before = probe.read() if probe else None
    out = subprocess.run(["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency),
                          "-d", f"{seconds}s", "--timeout", "30s", "--latency", endpoint],
                         capture_output=True, text=True, check=True).stdout
    where = Probe.report(before, probe.read()) if probe else {}
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return {
        "concurrency": concurrency,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": wrk_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99_ms": wrk_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "errors": errors,
        **where,
    }


def run_step(endpoint, concurrency, seconds, probe=None):
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

    before = probe.read() if probe else None
    t0 = time.time()
    with ThreadPoolExecutor(concurrency) as ex:
        for _ in range(concurrency):
            ex.submit(client)
    elapsed = time.time() - t0
    where = Probe.report(before, probe.read()) if probe else {}
    lat.sort()
    return {
        "concurrency": concurrency,
        "requests_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": percentile(lat, 0.5) if lat else None,
        "p99_ms": percentile(lat, 0.99) if lat else None,
        "errors": errors[0],
        **where,
    }


class Stack:
    """tansu with the bench topics, the proxy with one route and the
    processor, all new."""

    def __init__(self, work, backend):
        from confluent_kafka.admin import AdminClient, NewTopic

        self.work = work
        self.tansu = conftest.Tansu(work)
        admin = AdminClient({"bootstrap.servers": self.tansu.address})
        for f in admin.create_topics([NewTopic("bench-req", 4, 1), NewTopic("bench-rep", 4, 1),
                                      NewTopic("bench-ping", 1, 1)]).values():
            f.result(15)
        routes = work / "routes.yaml"
        routes.write_text("routes:\n  - path: /echo\n    request_topic: bench-req\n"
                          "    reply_topic: bench-rep\n    timeout: 30\n")
        config = work / "processor.yaml"
        config.write_text(f"topics:\n  - request_topic: bench-req\n    response_topic: bench-rep\n"
                          f"    backend_url: http://127.0.0.1:{backend.port}\n    consumer_group: bench\n"
                          f"max_concurrent_requests: 256\n")
        env = {"KAFSCALE_LFS_PROXY_RR_ROUTES_FILE": str(routes), "KAFSCALE_LFS_PROXY_LOG_LEVEL": "warn",
               "KAFSCALE_LFS_PROXY_RR_FETCH_WAIT_MS": str(FETCH_WAIT_MS)}
        self.proxy = conftest.Proxy(self.tansu.address, work, capture=False, env=env)
        self.processor = ProcessorProc(work, self.tansu.address, config,
                                       env={"KAFSCALE_LFS_PROXY_LOG_LEVEL": "warn",
                                            "KAFSCALE_LFS_PROXY_PROCESSOR_FETCH_WAIT_MS": str(FETCH_WAIT_MS)})
        self.proxy.wait_ready()
        self.processor.wait_ready()
        self.endpoint = f"http://127.0.0.1:{self.proxy.http_port}/echo"
        self.probe = Probe({"tansu": self.tansu.proc.pid, "proxy": self.proxy.proc.pid,
                            "processor": self.processor.proc.pid, "backend": backend.proc.pid,
                            "clients": os.getpid()},
                           {"proxy": f"http://127.0.0.1:{self.proxy.http_port}/metrics",
                            "processor": f"http://127.0.0.1:{self.processor.port}/metrics"})
        self.peak_rss = {}

    def stop(self):
        self.peak_rss = {"proxy": vm_hwm_mib(self.proxy.proc.pid),
                         "processor": vm_hwm_mib(self.processor.proc.pid)}
        self.proxy.stop()
        self.processor.stop()
        self.tansu.stop()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    seconds = int(args[0]) if args else 10
    use_wrk = shutil.which("wrk") is not None and "--python" not in sys.argv
    # tansu's memory engine slows down as its log grows (measured: 256
    # callers give 1,490 requests/s on a new broker and 485 after 15,000
    # records), so by default each step gets a new broker, proxy and
    # processor; --one-broker runs all steps on one, in order.
    one_broker = "--one-broker" in sys.argv
    step = run_wrk_step if use_wrk else run_step
    backend = BackendProc()
    stacks = []
    peak = {"proxy": 0.0, "processor": 0.0}
    try:
        steps = []
        baseline = None
        for c in CONCURRENCIES:
            if not stacks or not one_broker:
                if stacks:
                    stacks[-1].stop()
                stacks.append(Stack(Path(tempfile.mkdtemp(prefix="rr-bench-")), backend))
                step(stacks[-1].endpoint, 4, 2)  # warm-up: connections, metadata
            if baseline is None:
                baseline = broker_round_trip(stacks[-1].tansu.address, "bench-ping")
            steps.append(step(stacks[-1].endpoint, c, seconds, stacks[-1].probe))
        stacks[-1].stop()
        for st in stacks:
            for k in peak:
                peak[k] = max(peak[k], st.peak_rss.get(k, 0.0))
        result = {
            "broker_produce_to_consume": baseline,
            "steps": steps,
            "proxy_peak_rss_mib": peak["proxy"],
            "processor_peak_rss_mib": peak["processor"],
            "seconds_per_step": seconds,
            "load": "wrk GET" if use_wrk else "python threads POST",
            "brokers": "one for all steps" if one_broker else "a new one per step",
            "binary": os.environ["KAFKA_LFS_PROXY_BIN"],
        }
        print(json.dumps(result, indent=2))
        print(f"\nbroker produce→consume (librdkafka, fetch wait {FETCH_WAIT_MS} ms): "
              f"p50 {baseline['p50_ms']} ms, p99 {baseline['p99_ms']} ms")
        print(f"load: {result['load']}; brokers: {result['brokers']}")
        print("| concurrency | requests/s | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|")
        for s in steps:
            print(f"| {s['concurrency']} | {s['requests_per_s']} | {s['p50_ms']} | {s['p99_ms']} | {s['errors']} |")
        print("\n| concurrency | CPU % tansu / proxy / processor / backend / clients "
              "| Kafka round trip ms | backend call ms | records per Produce (proxy, processor) |")
        print("|---|---|---|---|---|")
        for s in steps:
            print(f"| {s['concurrency']} | {s['cpu_tansu_pct']} / {s['cpu_proxy_pct']} / "
                  f"{s['cpu_processor_pct']} / {s['cpu_backend_pct']} / {s['cpu_clients_pct']} "
                  f"| {s['rr_kafka_round_trip_mean_ms']} | {s['processor_backend_duration_mean_ms']} "
                  f"| {s['proxy_records_per_produce']}, {s['processor_records_per_produce']} |")
        print(f"peak RSS: proxy {result['proxy_peak_rss_mib']} MiB, "
              f"processor {result['processor_peak_rss_mib']} MiB")
    finally:
        for st in stacks:
            try:
                st.stop()
            except Exception:
                pass
        backend.stop()


if __name__ == "__main__":
    main()
