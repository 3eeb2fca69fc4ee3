#!/usr/bin/env python3
"""`kafka-lfs-proxy gc` over many objects: wall time and peak RSS of a dry
run and of a deleting run, on the local store (a directory) with tansu.

Produces REFERENCED LFS records through the release proxy (so their
objects and envelopes are real), then adds STRAY objects no record
references, dated a day back, for a total of OBJECTS under the topic's
prefix. The dry run must list exactly the strays; the deleting run must
leave exactly the referenced objects.
Usage:
  cargo build --release && .venv/bin/python benches/gc.py [OBJECTS] [REFERENCED]
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_support import conftest


def produce_lfs(bootstrap, topic, n):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 1000})
    for i in range(n):
        p.produce(topic, key=b"k%d" % i, value=os.urandom(256), headers=[("LFS_BLOB", b"")])
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(300) == 0


def timed_gc(env, *args):
    """Wall seconds, peak RSS (MiB), stdout lines and stderr of one gc run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([os.environ["KAFKA_LFS_PROXY_BIN"], "gc", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=1800)
    elapsed = time.perf_counter() - t0
    # The child is reaped by communicate(); its peak RSS is in the
    # children's rusage (the largest child so far: gc is the only one).
    import resource

    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert proc.returncode == 0, err
    return elapsed, round(rss, 1), [line for line in out.splitlines() if line.strip()], err


def main():
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    referenced = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    work = Path(tempfile.mkdtemp(prefix="gc-bench-"))
    tansu = conftest.Tansu(work)
    proxy = conftest.Proxy(tansu.address, work, capture=False,
                           env={"KAFSCALE_LFS_PROXY_LOG_LEVEL": "warn"})
    from confluent_kafka.admin import AdminClient, NewTopic

    try:
        proxy.wait_ready()
        topic = "gc-bench"
        admin = AdminClient({"bootstrap.servers": tansu.address})
        for f in admin.create_topics([NewTopic(topic, 3, 1)]).values():
            f.result(15)
        t0 = time.time()
        produce_lfs(proxy.bootstrap, topic, referenced)
        produce_s = time.time() - t0
        store = proxy.storage_dir
        day = store / "default" / topic / "lfs" / "2026" / "01" / "01"
        day.mkdir(parents=True, exist_ok=True)
        old = time.time() - 86400 * 2
        strays = total - referenced
        for _ in range(strays):
            path = day / f"obj-{uuid.uuid4()}"
            path.write_bytes(b"x" * 100)
            os.utime(path, (old, old))
        env = dict(os.environ, KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS=tansu.address,
                   KAFSCALE_LFS_PROXY_STORAGE_DIR=str(store), KAFSCALE_LFS_PROXY_LOG_LEVEL="warn")
        dry_s, dry_rss, listed, _ = timed_gc(env, "--topic", topic, "--grace-sec", "3600")
        assert len(listed) == strays, (len(listed), strays)
        del_s, del_rss, deleted, _ = timed_gc(env, "--topic", topic, "--grace-sec", "3600", "--delete")
        assert len(deleted) == strays
        left = sum(1 for p in (store / "default" / topic).rglob("obj-*"))
        assert left == referenced, (left, referenced)
        result = {
            "objects": total, "referenced": referenced, "unreferenced": strays,
            "records_in_log": referenced, "produce_seconds": round(produce_s, 1),
            "dry_run_seconds": round(dry_s, 2), "dry_run_peak_rss_mib": dry_rss,
            "delete_seconds": round(del_s, 2), "delete_peak_rss_mib": del_rss,
            "store": "local directory",
        }
        print(json.dumps(result, indent=2))
        print(f"\n| run | objects | records read | time | peak RSS |\n|---|---|---|---|---|\n"
              f"| dry run | {total:,} | {referenced:,} | {dry_s:.2f} s | {dry_rss} MiB |\n"
              f"| --delete ({strays:,} deleted) | {total:,} | {referenced:,} | {del_s:.2f} s | {del_rss} MiB |")
    finally:
        proxy.stop()
        tansu.stop()


if __name__ == "__main__":
    main()
