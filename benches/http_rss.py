#!/usr/bin/env python3
"""Peak RSS of the proxy while the HTTP sidecar uploads and downloads one
large object (default 1 GiB), with the local-directory store.

Starts tansu and the release proxy, streams a file of SIZE_MIB random bytes
to POST /lfs/produce, then POST /lfs/download streams it back (verified by
the proxy before the first byte) into another file; both SHA-256s are
checked. Prints the proxy's peak RSS (VmHWM) after each step, the
throughputs, and a plain file copy of the same bytes as the direct path.
Usage:
  cargo build --release && .venv/bin/python benches/http_rss.py [SIZE_MIB]
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench_support import conftest, vm_hwm_mib


def main():
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    work = Path(tempfile.mkdtemp(prefix="http-rss-"))
    source, copy, fetched = work / "source.bin", work / "copy.bin", work / "fetched.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as f:
        for _ in range(size_mib):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            f.write(block)
    sha256 = digest.hexdigest()
    started = time.time()
    shutil.copyfile(source, copy)
    copy_seconds = time.time() - started
    copy.unlink()

    tansu = conftest.Tansu(work)
    proxy = conftest.Proxy(tansu.address, work, capture=False, env={
        "KAFSCALE_LFS_PROXY_DOWNLOAD_TEMP_DIR": str(work),
    })
    try:
        proxy.wait_ready()
        url = f"http://127.0.0.1:{proxy.http_port}"
        idle = vm_hwm_mib(proxy.proc.pid)
        started = time.time()
        with open(source, "rb") as f:
            r = requests.post(f"{url}/lfs/produce", data=f, headers={"X-Kafka-Topic": "rss"}, timeout=3600)
        upload_seconds = time.time() - started
        assert r.status_code == 200, r.text
        env = r.json()
        assert env["sha256"] == sha256 and env["size"] == size_mib * 1024 * 1024
        after_upload = vm_hwm_mib(proxy.proc.pid)

        started = time.time()
        check = hashlib.sha256()
        body = {"key": env["key"], "integrity": {"sha256": env["sha256"], "size": env["size"]}}
        with requests.post(f"{url}/lfs/download", json=body, stream=True, timeout=3600) as d, open(fetched, "wb") as f:
            assert d.status_code == 200, d.text
            for chunk in d.iter_content(1024 * 1024):
                check.update(chunk)
                f.write(chunk)
        download_seconds = time.time() - started
        assert check.hexdigest() == sha256
        after_download = vm_hwm_mib(proxy.proc.pid)
        mib = size_mib
        print(json.dumps({
            "object_mib": mib,
            "proxy_idle_rss_mib": idle,
            "proxy_peak_rss_after_upload_mib": after_upload,
            "proxy_peak_rss_after_download_mib": after_download,
            "upload_mib_per_s": round(mib / upload_seconds, 1),
            "download_mib_per_s": round(mib / download_seconds, 1),
            "file_copy_mib_per_s": round(mib / copy_seconds, 1),
            "upload_vs_copy": round(copy_seconds / upload_seconds, 2),
            "download_vs_copy": round(copy_seconds / download_seconds, 2),
        }))
    finally:
        proxy.stop()
        tansu.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
