#!/usr/bin/env python3
"""Peak RSS of the proxy while the HTTP sidecar uploads and downloads one
large object (default 1 GiB), with the local-directory store or S3
(SeaweedFS, with `--s3`).

Starts tansu and the release proxy, streams a file of SIZE_MIB random bytes
to POST /lfs/produce, then POST /lfs/download streams it back (verified by
the proxy before the first byte) into another file; both SHA-256s are
checked. Prints the proxy's peak RSS (VmHWM) after each step, the
throughputs, and the direct path in the same run: a plain file copy of the
same bytes (local store), or a plain S3 GET of the same object by boto3,
read and hashed by the same client code as the download (`--s3`).
Usage:
  cargo build --release && .venv/bin/python benches/http_rss.py [SIZE_MIB] [--s3]
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


def fetch(chunks, into):
    """Writes what arrives: the client side, the same for the download and
    the direct path (and, like the file copy, no hashing while timed)."""
    with open(into, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def sha256_of(path):
    check = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * 1024 * 1024):
            check.update(block)
    return check.hexdigest()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    use_s3 = "--s3" in sys.argv
    size_mib = int(args[0]) if args else 1024
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
    s3 = conftest.SeaweedFS(work) if use_s3 else None
    proxy = conftest.Proxy(tansu.address, work, capture=False, env={
        "KAFSCALE_LFS_PROXY_DOWNLOAD_TEMP_DIR": str(work), **(s3.proxy_env() if s3 else {}),
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

        direct_seconds = copy_seconds
        if s3:
            started = time.time()
            got = s3.client().get_object(Bucket=s3.BUCKET, Key=env["key"])["Body"]
            fetch(got.iter_chunks(1024 * 1024), fetched)
            direct_seconds = time.time() - started
            assert sha256_of(fetched) == sha256
            fetched.unlink()

        time.sleep(1.5)  # the file settles (verified files are remembered only then)
        started = time.time()
        body = {"key": env["key"], "integrity": {"sha256": env["sha256"], "size": env["size"]}}
        with requests.post(f"{url}/lfs/download", json=body, stream=True, timeout=3600) as d:
            # The headers come once the proxy has verified every byte.
            verify_seconds = time.time() - started
            assert d.status_code == 200, d.text
            fetch(d.iter_content(1024 * 1024), fetched)
        download_seconds = time.time() - started
        assert sha256_of(fetched) == sha256
        fetched.unlink()
        # Again: a local store remembers the file it verified.
        started = time.time()
        with requests.post(f"{url}/lfs/download", json=body, stream=True, timeout=3600) as d:
            assert d.status_code == 200, d.text
            fetch(d.iter_content(1024 * 1024), fetched)
        again_seconds = time.time() - started
        assert sha256_of(fetched) == sha256
        after_download = vm_hwm_mib(proxy.proc.pid)
        mib = size_mib
        print(json.dumps({
            "store": "s3 (SeaweedFS)" if s3 else "local",
            "object_mib": mib,
            "proxy_idle_rss_mib": idle,
            "proxy_peak_rss_after_upload_mib": after_upload,
            "proxy_peak_rss_after_download_mib": after_download,
            "upload_mib_per_s": round(mib / upload_seconds, 1),
            "download_mib_per_s": round(mib / download_seconds, 1),
            "download_verify_seconds": round(verify_seconds, 2),
            "download_send_seconds": round(download_seconds - verify_seconds, 2),
            "download_again_mib_per_s": round(mib / again_seconds, 1),
            "file_copy_seconds": round(copy_seconds, 2),
            "file_copy_mib_per_s": round(mib / copy_seconds, 1),
            "upload_vs_copy": round(copy_seconds / upload_seconds, 2),
            "download_vs_copy": round(copy_seconds / download_seconds, 2),
            **({"plain_s3_get_mib_per_s": round(mib / direct_seconds, 1),
                "download_vs_plain_s3_get": round(direct_seconds / download_seconds, 2)} if s3 else {}),
        }))
    finally:
        proxy.stop()
        if s3:
            s3.kill()
        tansu.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
