#!/usr/bin/env python3
"""The whole-system benchmark: one command, loopback only, bounded in time.

Starts tansu, SeaweedFS and the release proxy (and `tansu proxy` as a peer)
and measures, side by side in the same run:

- ordinary produce of 1 KiB records, acks=1 and acks=all: records/s
  (confluent-kafka, linger 5 ms) and the latency of one record at a time
  (produce + flush, p50/p99), direct to tansu, through this proxy and
  through `tansu proxy` (confluent-kafka);
- consume throughput of the same records, direct and through both proxies;
- LFS produce of 1, 16 and 256 MiB values through the Kafka path into S3,
  against a plain object_store PUT of the same bytes to the same bucket
  (examples/lfs_put.rs drives both), with the proxy's peak RSS;
- `/lfs/produce` + `/lfs/download` of 1 GiB (benches/http_rss.py) and
  request-reply at concurrency 1-256 (benches/request_reply.py).

Writes target/bench/system.json and target/bench/system.md and prints the
markdown. Usage:
  cargo build --release --bins --examples && .venv/bin/python benches/system.py [--quick]
(--quick: fewer records, smaller values, no 1 GiB and shorter steps;
--only kafka,lfs,http,rr: some sections, written to system-<sections>.json/md.)
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_support import REPO, conftest, percentile, vm_hwm_mib

QUICK = "--quick" in sys.argv
RECORDS = 20_000 if QUICK else 300_000
LATENCY_SAMPLES = 200 if QUICK else 1000
ROUNDS = 1 if QUICK else 5
LFS_SIZES_MIB = [1, 16] if QUICK else [1, 16, 256]
VALUE = bytes((i * 31) % 251 for i in range(1024))


class TansuProxy:
    """`tansu proxy` in front of the broker: the peer to compare with."""

    def __init__(self, work, origin):
        self.port = conftest.free_port()
        self.log = open(work / f"tansu-proxy-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [conftest.tansu_bin(), "proxy", "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
             "--origin-url", f"tcp://{origin}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        conftest.wait_port("127.0.0.1", self.port)
        self.bootstrap = f"127.0.0.1:{self.port}"

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def create_topic(bootstrap, name, partitions=1):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(15)


def produce_throughput(bootstrap, topic, acks):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5,
                  "queue.buffering.max.messages": 1_000_000, "enable.idempotence": False})
    p.produce(topic, VALUE)
    p.flush(30)
    failed = [0]

    def report(err, _msg):
        if err is not None:
            failed[0] += 1

    t0 = time.perf_counter()
    for _ in range(RECORDS):
        while True:
            try:
                p.produce(topic, VALUE, on_delivery=report)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(120)
    elapsed = time.perf_counter() - t0
    assert failed[0] == 0, f"{failed[0]} records failed"
    return round(RECORDS / elapsed)


def produce_latency(bootstrap, topic, acks):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 0,
                  "enable.idempotence": False})
    p.produce(topic, VALUE)
    p.flush(30)
    out = []
    for _ in range(LATENCY_SAMPLES):
        t0 = time.perf_counter()
        p.produce(topic, VALUE)
        p.flush(30)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def consume_throughput(bootstrap, topic, expected):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-" + uuid.uuid4().hex[:6],
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    t0 = time.perf_counter()
    deadline = time.time() + 120
    while got < expected and time.time() < deadline:
        for m in c.consume(10_000, 1.0):
            if not m.error():
                got += 1
    elapsed = time.perf_counter() - t0
    c.close()
    assert got >= expected, f"consumed {got} of {expected}"
    return round(got / elapsed)


def kafka_section(paths, tansu_address):
    """Each measurement runs ROUNDS times, the paths interleaved within a
    round, so a slow spell on this shared machine hits every path alike;
    a row reports the median rate and the pooled latency samples."""
    rates, samples = {}, {}
    for _ in range(ROUNDS):
        for acks in ("1", "all"):
            for name, bootstrap in paths.items():
                topic = f"bench-{acks}-{name}-{uuid.uuid4().hex[:6]}"
                create_topic(tansu_address, topic)
                key = ("produce 1 KiB", acks, name)
                try:
                    rates.setdefault(key, []).append(produce_throughput(bootstrap, topic, acks))
                    samples.setdefault(key, []).extend(produce_latency(bootstrap, topic, acks))
                except Exception as e:  # a peer that fails is reported, not fatal
                    rates[key] = str(e)[:200]
        # Records are written direct once per round and read back on every
        # path, so each path consumes the same log.
        topic = f"bench-consume-{uuid.uuid4().hex[:6]}"
        create_topic(tansu_address, topic)
        produce_throughput(tansu_address, topic, "1")
        for name, bootstrap in paths.items():
            key = ("consume 1 KiB", None, name)
            try:
                rates.setdefault(key, []).append(consume_throughput(bootstrap, topic, RECORDS))
            except Exception as e:
                rates[key] = str(e)[:200]
    rows = []
    for (what, acks, name), got in rates.items():
        row = {"what": what, "path": name}
        if acks is not None:
            row["acks"] = acks
        if isinstance(got, str):
            row["error"] = got
        else:
            row["records_per_s"] = sorted(got)[len(got) // 2]
            row["records_per_s_runs"] = got
            lat = sorted(samples.get((what, acks, name), []))
            if lat:
                row.update({"p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99)})
        rows.append(row)
    return rows


def lfs_section(work, tansu_address, s3):
    env = s3.proxy_env()
    env.update({"KAFSCALE_LFS_PROXY_MAX_FRAME_SIZE": str(400 * 1024 * 1024),
                "KAFSCALE_LFS_PROXY_LOG_LEVEL": "warn"})
    proxy = conftest.Proxy(tansu_address, work, capture=False, env=env)
    try:
        proxy.wait_ready(30)
        topic = f"bench-lfs-{uuid.uuid4().hex[:6]}"
        create_topic(tansu_address, topic)
        # examples/lfs_put.rs: a plain object_store PUT, then the same value
        # with LFS_BLOB through the proxy, best of 5 (3 for 256 MiB) each. Sizes ascend, so
        # the peak RSS read after each is the peak of that size.
        rows = []
        uploads = upload_stage(proxy)
        for size in LFS_SIZES_MIB:
            out = subprocess.run(
                [str(REPO / "target" / "release" / "examples" / "lfs_put"), s3.endpoint, s3.BUCKET,
                 s3.ACCESS_KEY, s3.SECRET_KEY, proxy.bootstrap, topic, str(size), "5" if size <= 16 else "3"],
                capture_output=True, text=True, timeout=900, check=True).stdout
            r = json.loads(out)["rows"][0]
            # The proxy's own upload stage (hash + S3 upload, no Kafka):
            # the mean of this size's runs, from its duration summary.
            before, uploads = uploads, upload_stage(proxy)
            stage_s = (uploads[0] - before[0]) / max(1, uploads[1] - before[1])
            rows.append({"what": "LFS produce", "value_mib": size,
                         "plain_put_mib_per_s": round(size / r["plain_put_s"], 1),
                         "proxy_mib_per_s": round(size / r["proxy_s"], 1),
                         "ratio": round(r["plain_put_s"] / r["proxy_s"], 2),
                         "upload_stage_mib_per_s": round(size / stage_s, 1),
                         "proxy_peak_rss_mib": vm_hwm_mib(proxy.proc.pid)})
    finally:
        proxy.stop()
    return rows


def upload_stage(proxy):
    """(sum of seconds, count) of the proxy's LFS upload duration summary."""
    text = proxy.http("/metrics")[1]
    return (conftest.metric(text, "kafka_lfs_proxy_lfs_upload_duration_seconds_sum"),
            conftest.metric(text, "kafka_lfs_proxy_lfs_upload_duration_seconds_count"))


def script_json(script, *args, timeout=900):
    out = subprocess.run([sys.executable, str(REPO / "benches" / script), *args],
                         capture_output=True, text=True, timeout=timeout, check=True).stdout
    # The script prints its JSON object first; a table may follow it.
    result, _ = json.JSONDecoder().raw_decode(out, out.index("{"))
    return result


def markdown(result):
    lines = [f"Machine: {result['machine']}; {result['date']}; "
             f"`.venv/bin/python benches/system.py{' --quick' if QUICK else ''}`"]
    if "kafka" in result:
        lines += ["", "| What | Path | acks | records/s | vs direct | p50 ms | p99 ms |",
                  "|---|---|---|---|---|---|---|"]
        direct = {(r["what"], r.get("acks")): r for r in result["kafka"] if r["path"] == "direct"}
        for r in result["kafka"]:
            if "error" in r:
                lines.append(f"| {r['what']} | {r['path']} | {r.get('acks', '')} | failed: {r['error']} | | | |")
                continue
            base = direct[(r["what"], r.get("acks"))]
            ratio = round(r["records_per_s"] / base["records_per_s"], 2)
            lines.append(f"| {r['what']} | {r['path']} | {r.get('acks', '')} | {r['records_per_s']} | {ratio}× | "
                         f"{r.get('p50_ms', '')} | {r.get('p99_ms', '')} |")
    if "lfs" in result:
        lines += ["", "| LFS value | plain S3 PUT MiB/s | through the proxy MiB/s | ratio | "
                      "proxy upload stage MiB/s | proxy peak RSS MiB |",
                  "|---|---|---|---|---|---|"]
        for r in result["lfs"]:
            lines.append(f"| {r['value_mib']} MiB | {r['plain_put_mib_per_s']} | {r['proxy_mib_per_s']} | "
                         f"{r['ratio']}× | {r['upload_stage_mib_per_s']} | {r['proxy_peak_rss_mib']} |")
    if "http" in result:
        h = result["http"]
        lines += ["", f"HTTP {h['object_mib']} MiB: upload {h['upload_mib_per_s']} MiB/s "
                      f"({h['upload_vs_copy']}× a file copy), verified download {h['download_mib_per_s']} MiB/s "
                      f"({h['download_vs_copy']}×), peak RSS {h['proxy_peak_rss_after_download_mib']} MiB"]
    if "request_reply" in result:
        rr = result["request_reply"]
        lines += ["", f"Request-reply (broker produce→consume p50 {rr['broker_produce_to_consume']['p50_ms']} ms):",
                  "", "| concurrency | requests/s | p50 ms | p99 ms |", "|---|---|---|---|"]
        for s in rr["steps"]:
            lines.append(f"| {s['concurrency']} | {s['requests_per_s']} | {s['p50_ms']} | {s['p99_ms']} |")
    return "\n".join(lines) + "\n"


def run_kafka(work):
    tansu = conftest.Tansu(work)
    proxy = conftest.Proxy(tansu.address, work, capture=False,
                           env={"KAFSCALE_LFS_PROXY_LOG_LEVEL": "warn"})
    peer = TansuProxy(work, tansu.address)
    try:
        proxy.wait_ready()
        paths = {"direct": tansu.address, "proxy": proxy.bootstrap, "tansu-proxy": peer.bootstrap}
        rows = kafka_section(paths, tansu.address)
        return rows, vm_hwm_mib(proxy.proc.pid)
    finally:
        proxy.stop()
        peer.stop()
        tansu.stop()


def run_lfs(work):
    # A broker of its own (tansu keeps every record in memory).
    tansu = conftest.Tansu(work)
    s3 = conftest.SeaweedFS(work)
    try:
        return lfs_section(work, tansu.address, s3)
    finally:
        s3.kill()
        tansu.stop()


def main():
    # --only kafka,lfs,http,rr runs some sections (while working on one).
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    wanted = lambda section: only is None or section in only  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="system-bench-"))
    result = {
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().release}",
        "date": time.strftime("%Y-%m-%d"),
        "quick": QUICK,
    }
    if wanted("kafka"):
        result["kafka"], result["proxy_peak_rss_mib_kafka"] = run_kafka(work)
    if wanted("lfs"):
        result["lfs"] = run_lfs(work)
    if wanted("http") and not QUICK:
        result["http"] = script_json("http_rss.py", "1024")
    if wanted("rr"):
        result["request_reply"] = script_json("request_reply.py", "3" if QUICK else "10")
    out_dir = REPO / "target" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "system" if only is None else "system-" + "-".join(only)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (out_dir / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
