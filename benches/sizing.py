"""The figures behind the Kubernetes resource requests (README "Deploy"):
the proxy's CPU per MB/s relayed, and its memory idle and under load.

Starts tansu and the release proxy in front of it, produces MB megabytes of
100 KiB records through the proxy with confluent-kafka, consumes them back
through it, and reads the proxy's CPU time (utime + stime from
/proc/PID/stat) and peak RSS. CPU seconds per MB relayed, times 1000, is
millicores per MB/s sustained. Both directions count: bytes produced plus
bytes consumed.

    cargo build --release && .venv/bin/python benches/sizing.py [MB]
"""

import json
from pathlib import Path
import os
import sys
import time

from bench_support import REPO, conftest, vm_hwm_mib

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(mb: int) -> None:
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"sizing-{os.getpid()}"
    work.mkdir()
    tansu = conftest.Tansu(work)
    proxy = conftest.Proxy(tansu.address, work, capture=False)
    try:
        proxy.wait_ready()
        time.sleep(1)
        idle_mib = vm_hwm_mib(proxy.proc.pid)
        topic = "sizing"
        admin = AdminClient({"bootstrap.servers": proxy.bootstrap})
        for f in admin.create_topics([NewTopic(topic, 3, 1)]).values():
            f.result(15)
        value = os.urandom(100 * 1024)
        count = mb * 1024 * 1024 // len(value)
        cpu0 = cpu_seconds(proxy.proc.pid)
        started = time.monotonic()
        p = Producer({"bootstrap.servers": proxy.bootstrap, "linger.ms": 5, "batch.size": 1048576,
                      "message.max.bytes": 2097152})
        for _ in range(count):
            while True:
                try:
                    p.produce(topic, value)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        assert p.flush(120) == 0
        produced_s = time.monotonic() - started
        cpu_produce = cpu_seconds(proxy.proc.pid) - cpu0

        cpu1 = cpu_seconds(proxy.proc.pid)
        started = time.monotonic()
        c = Consumer({"bootstrap.servers": proxy.bootstrap, "group.id": f"sizing-{os.getpid()}",
                      "enable.auto.commit": False, "fetch.max.bytes": 52428800})
        c.assign([TopicPartition(topic, part, 0) for part in range(3)])
        got = 0
        deadline = time.monotonic() + 300
        while got < count and time.monotonic() < deadline:
            for m in c.consume(1000, 1.0):
                if not m.error():
                    got += 1
        c.close()
        consumed_s = time.monotonic() - started
        cpu_consume = cpu_seconds(proxy.proc.pid) - cpu1
        assert got == count, f"consumed {got} of {count}"

        relayed_mb = 2 * count * len(value) / 1e6
        result = {
            "relayed_mb": round(relayed_mb),
            "produce_mb_per_s": round(count * len(value) / 1e6 / produced_s, 1),
            "consume_mb_per_s": round(count * len(value) / 1e6 / consumed_s, 1),
            "cpu_seconds_produce": round(cpu_produce, 2),
            "cpu_seconds_consume": round(cpu_consume, 2),
            "millicores_per_mb_per_s": round(1000 * (cpu_produce + cpu_consume) / relayed_mb, 2),
            "millicores_per_mb_per_s_produce": round(1000 * cpu_produce / (relayed_mb / 2), 2),
            "millicores_per_mb_per_s_consume": round(1000 * cpu_consume / (relayed_mb / 2), 2),
            "rss_idle_mib": idle_mib,
            "rss_peak_mib": vm_hwm_mib(proxy.proc.pid),
        }
        print(json.dumps(result, indent=2))
        out = REPO / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "sizing.json").write_text(json.dumps(result, indent=2) + "\n")
    finally:
        proxy.stop()
        tansu.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
