"""Runs last: every response any client received in this session through the
shared proxy is decoded, and none may name the upstream broker."""

import subprocess

from conftest import PROXY_BIN, UPSTREAM_HOST


def test_no_upstream_address_reached_any_client(proxy, tansu):
    out = subprocess.run(
        [str(PROXY_BIN), "inspect-capture", str(proxy.capture_dir),
         "--forbid", f"{UPSTREAM_HOST}:*", "--forbid", f"*:{tansu.port}"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # The clients were shown the proxy's broker listener for tansu's node 111.
    assert f"127.0.0.1:{proxy.port + 1 + 111}" in out.stdout, out.stdout
