"""The README's first command, as a new user runs it: scripts/run-local.sh
shows the product's main job (LFS_BLOB produced with kcat, the envelope a
plain consumer reads, the object in the local store, the verified HTTP
download with the same SHA-256) in under a minute after the build."""

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

from conftest import PROXY_BIN, REPO, free_port


def test_run_local_shows_a_value_offloaded_and_downloaded(workdir):
    store = workdir / "quickstart-store"
    env = dict(os.environ, KAFKA_LFS_PROXY_BIN=str(PROXY_BIN), STORAGE_DIR=str(store),
               BROKER_PORT=str(free_port("127.0.0.1")), PROXY_PORT=str(free_port("127.0.0.1", 130)),
               HTTP_PORT=str(free_port()))
    started = time.monotonic()
    r = subprocess.run(["bash", str(REPO / "scripts" / "run-local.sh"), "--once"], env=env,
                       capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for step in ("1. produce a 3 MiB value", "2. a plain consumer reads the envelope",
                 "3. the object in the local store", "4. download over HTTP", "same bytes as produced"):
        assert step in out, out
    sent = re.search(r"sha256 ([0-9a-f]{64})", out).group(1)
    envelope = re.search(r'^\{"kfs_lfs":1.*\}$', out, re.M).group(0)
    assert f'"sha256":"{sent}"' in envelope and '"size":3145728' in envelope
    [obj] = [p for p in Path(store).rglob("obj-*")]
    assert hashlib.sha256(obj.read_bytes()).hexdigest() == sent
    assert took < 60, f"quick start took {took:.0f} s"
