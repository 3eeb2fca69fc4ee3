"""Fetch rehydration against reading the same values straight from the
broker (README "Fetch rehydration").

Starts tansu and the release proxy (local store, or SeaweedFS with --s3).
Produces COUNT values of SIZE KiB twice: through the proxy tagged LFS_BLOB
(stored as objects, envelopes in Kafka) and straight to tansu as ordinary
records. Then one confluent-kafka consumer reads, in one run, side by side:

  direct      the ordinary records, from tansu, no proxy;
  cold        the LFS topic through the proxy, opted in: every object read
              from storage, verified and put back into its batch;
  warm        the same again: objects from the proxy's cache;
  envelopes   the LFS topic through the proxy, not opted in.

Reports MB/s of values delivered, each as a ratio to direct, and the
proxy's peak RSS.

    cargo build --release && .venv/bin/python benches/rehydration.py [COUNT] [SIZE_KIB] [--s3]
"""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from bench_support import REPO, conftest, vm_hwm_mib

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

MiB = 1024 * 1024


def produce(bootstrap, topic, values, lfs):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 64 * MiB,
                  "batch.size": 16 * MiB})
    headers = [("LFS_BLOB", b"")] if lfs else []
    for v in values:
        while True:
            try:
                p.produce(topic, v, headers=headers)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(300) == 0


def consume(bootstrap, topic, count, client_id, digests=None):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"rh-bench-{os.getpid()}", "client.id": client_id,
                  "enable.auto.commit": False, "fetch.max.bytes": 50 * MiB,
                  "max.partition.fetch.bytes": 50 * MiB, "receive.message.max.bytes": 120 * MiB})
    c.assign([TopicPartition(topic, 0, 0)])
    got, nbytes, seen = 0, 0, []
    started = time.monotonic()
    deadline = started + 600
    while got < count and time.monotonic() < deadline:
        for m in c.consume(100, 1.0):
            if m.error():
                raise RuntimeError(m.error())
            got += 1
            nbytes += len(m.value())
            if digests is not None:
                seen.append(hashlib.sha256(m.value()).hexdigest())
    elapsed = time.monotonic() - started
    c.close()
    assert got == count, f"{topic}: consumed {got} of {count}"
    if digests is not None:
        assert seen == digests, "rehydrated values differ from what was produced"
    return nbytes / 1e6 / elapsed, elapsed


def main(count: int, size_kib: int, use_s3: bool) -> None:
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"rehydration-{os.getpid()}"
    work.mkdir()
    tansu = conftest.Tansu(work)
    s3 = conftest.SeaweedFS(work) if use_s3 else None
    env = {"KAFSCALE_LFS_PROXY_REHYDRATE_CLIENT_IDS": "bench-rh", "KAFSCALE_LFS_PROXY_LOG_LEVEL": "warn",
           "KAFSCALE_LFS_PROXY_REHYDRATE_CACHE_BYTES": str(2 * count * size_kib * 1024)}
    if s3:
        env.update(s3.proxy_env())
    proxy = conftest.Proxy(tansu.address, work, capture=False, env=env)
    try:
        proxy.wait_ready()
        admin = AdminClient({"bootstrap.servers": proxy.bootstrap})
        for f in admin.create_topics([NewTopic("plain", 1, 1), NewTopic("lfs", 1, 1)]).values():
            f.result(15)
        values = [os.urandom(size_kib * 1024) for _ in range(count)]
        digests = [hashlib.sha256(v).hexdigest() for v in values]
        produce(tansu.address, "plain", values, lfs=False)
        produce(proxy.bootstrap, "lfs", values, lfs=True)
        del values
        rss_before = vm_hwm_mib(proxy.proc.pid)

        direct, _ = consume(tansu.address, "plain", count, "direct")
        cold, _ = consume(proxy.bootstrap, "lfs", count, "bench-rh-cold", digests)
        warm, _ = consume(proxy.bootstrap, "lfs", count, "bench-rh-warm", digests)
        warm2, _ = consume(proxy.bootstrap, "lfs", count, "bench-rh-warm", digests)
        direct2, _ = consume(tansu.address, "plain", count, "direct")
        print(f"second passes: warm {warm2:.1f} MB/s, direct {direct2:.1f} MB/s", file=sys.stderr)
        envelopes, t_env = consume(proxy.bootstrap, "lfs", count, "not-opted-in")
        result = {
            "store": "s3 (SeaweedFS)" if s3 else "local",
            "values": count,
            "value_kib": size_kib,
            "direct_mb_per_s": round(direct, 1),
            "rehydrated_cold_mb_per_s": round(cold, 1),
            "rehydrated_warm_mb_per_s": round(warm, 1),
            "cold_ratio": round(cold / direct, 2),
            "warm_ratio": round(warm / direct, 2),
            "envelopes_per_s": round(count / t_env),
            "rss_peak_mib_after_produce": rss_before,
            "rss_peak_mib": vm_hwm_mib(proxy.proc.pid),
        }
        print(json.dumps(result, indent=2))
        out = REPO / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        name = "rehydration-s3.json" if s3 else "rehydration.json"
        (out / name).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        proxy.stop()
        if s3:
            s3.kill()
        tansu.stop()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(int(args[0]) if args else 200, int(args[1]) if len(args) > 1 else 1024, "--s3" in sys.argv)
