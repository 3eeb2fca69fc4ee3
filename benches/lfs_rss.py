#!/usr/bin/env python3
"""Peak RSS of the proxy while it offloads one large LFS value.

Starts tansu and the release proxy (local-directory store), produces one
record of SIZE_MIB with an LFS_BLOB header through the proxy with
confluent-kafka, checks the stored object, and prints the proxy's peak RSS
(VmHWM) next to the value size. Usage:
  cargo build --release && .venv/bin/python benches/lfs_rss.py [SIZE_MIB]
"""

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_support import conftest, vm_hwm_kib


def main():
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    work = Path(tempfile.mkdtemp(prefix="lfs-rss-"))
    tansu = conftest.Tansu(work)
    frame_limit = str((size_mib + 16) * 1024 * 1024)
    proxy = conftest.Proxy(tansu.address, work, capture=bool(os.environ.get("CAPTURE")),
                           env={"KAFSCALE_LFS_PROXY_MAX_FRAME_SIZE": frame_limit})
    try:
        proxy.wait_ready()
        idle_kib = vm_hwm_kib(proxy.proc.pid)
        value = os.urandom(size_mib * 1024 * 1024)
        digest = hashlib.sha256(value).hexdigest()
        # aiokafka sends Produce v7 (int32 lengths). librdkafka 2.16 cannot
        # encode a batch of 2^28 bytes or more at Produce v9+ (it writes a
        # zero records length), so it cannot send a 256 MiB value at all.
        import asyncio
        from aiokafka import AIOKafkaProducer

        async def send():
            producer = AIOKafkaProducer(bootstrap_servers=proxy.bootstrap, max_request_size=int(frame_limit),
                                        request_timeout_ms=300000)
            await producer.start()
            try:
                await producer.send_and_wait("rss", value=value, headers=[("LFS_BLOB", digest.encode())])
            finally:
                await producer.stop()

        started = time.time()
        asyncio.run(send())
        seconds = time.time() - started
        stored = [f for f in proxy.storage_dir.rglob("obj-*")]
        assert len(stored) == 1 and stored[0].stat().st_size == len(value)
        peak_kib = vm_hwm_kib(proxy.proc.pid)
        report = {
            "value_mib": size_mib,
            "proxy_peak_rss_mib": round(peak_kib / 1024, 1),
            "proxy_idle_rss_mib": round(idle_kib / 1024, 1),
            "peak_over_value": round(peak_kib / 1024 / size_mib, 2),
            "produce_seconds": round(seconds, 2),
        }
        print(json.dumps(report))
    finally:
        proxy.stop()
        tansu.stop()


if __name__ == "__main__":
    main()
