"""The HTTP sidecar over TLS, with certificates made for the test (trustme):
server authentication, client certificates required or optional, and
start-up refused with the setting named when a file is missing."""

import ssl
import subprocess

import pytest
import requests
import trustme

from conftest import PROXY_BIN, Proxy, free_port


@pytest.fixture(scope="module")
def pki(workdir):
    ca = trustme.CA()
    other_ca = trustme.CA()
    d = workdir / "http-tls"
    d.mkdir(exist_ok=True)
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example")
    stranger = other_ca.issue_cert("stranger@example")
    files = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key",
             "client": d / "client.pem", "stranger": d / "stranger.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    stranger.private_key_and_cert_chain_pem.write_to_path(str(files["stranger"]))
    return files


def tls_env(pki, **extra):
    return {"KAFSCALE_LFS_PROXY_HTTP_TLS_ENABLED": "true",
            "KAFSCALE_LFS_PROXY_HTTP_TLS_CERT_FILE": str(pki["cert"]),
            "KAFSCALE_LFS_PROXY_HTTP_TLS_KEY_FILE": str(pki["key"]), **extra}


def test_https_with_server_certificate(tansu, workdir, pki):
    p = Proxy(tansu.address, workdir, capture=False, env=tls_env(pki))
    try:
        url = f"https://127.0.0.1:{p.http_port}"
        r = requests.get(f"{url}/livez", verify=str(pki["ca"]), timeout=5)
        assert r.status_code == 200 and r.text == "ok\n"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/livez", timeout=5)  # system roots do not know the test CA
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{p.http_port}/livez", timeout=5)
        produced = requests.post(f"{url}/lfs/produce", data=b"over tls", headers={"X-Kafka-Topic": "tls-t"},
                                 verify=str(pki["ca"]), timeout=30)
        assert produced.status_code == 200, produced.text
    finally:
        p.stop()


def test_client_certificate_required(tansu, workdir, pki):
    p = Proxy(tansu.address, workdir, capture=False,
              env=tls_env(pki, KAFSCALE_LFS_PROXY_HTTP_TLS_CLIENT_CA_FILE=str(pki["ca"])))
    try:
        url = f"https://127.0.0.1:{p.http_port}/livez"
        ok = requests.get(url, verify=str(pki["ca"]), cert=str(pki["client"]), timeout=5)
        assert ok.status_code == 200
        for cert in (None, str(pki["stranger"])):
            with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
                requests.get(url, verify=str(pki["ca"]), cert=cert, timeout=5)
        assert "HTTP TLS handshake failed" in p.read_log()
    finally:
        p.stop()


def test_client_certificate_optional(tansu, workdir, pki):
    p = Proxy(tansu.address, workdir, capture=False,
              env=tls_env(pki, KAFSCALE_LFS_PROXY_HTTP_TLS_CLIENT_CA_FILE=str(pki["ca"]),
                          KAFSCALE_LFS_PROXY_HTTP_TLS_REQUIRE_CLIENT_CERT="false"))
    try:
        url = f"https://127.0.0.1:{p.http_port}/livez"
        assert requests.get(url, verify=str(pki["ca"]), timeout=5).status_code == 200
        assert requests.get(url, verify=str(pki["ca"]), cert=str(pki["client"]), timeout=5).status_code == 200
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(url, verify=str(pki["ca"]), cert=str(pki["stranger"]), timeout=5)
    finally:
        p.stop()


@pytest.mark.parametrize("setting", ["KAFSCALE_LFS_PROXY_HTTP_TLS_CERT_FILE", "KAFSCALE_LFS_PROXY_HTTP_TLS_KEY_FILE",
                                     "KAFSCALE_LFS_PROXY_HTTP_TLS_CLIENT_CA_FILE"])
def test_missing_file_stops_start_up_naming_the_setting(tansu, workdir, pki, setting):
    env = dict(tls_env(pki, KAFSCALE_LFS_PROXY_HTTP_TLS_CLIENT_CA_FILE=str(pki["ca"])),
               KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS=tansu.address,
               KAFSCALE_LFS_PROXY_ADDR=f"127.0.0.1:{free_port()}",
               KAFSCALE_LFS_PROXY_HTTP_ADDR=f"127.0.0.1:{free_port()}",
               KAFSCALE_LFS_PROXY_STORAGE_DIR=str(workdir / "tls-missing"))
    env[setting] = str(workdir / "does-not-exist.pem")
    done = subprocess.run([str(PROXY_BIN)], env=env, capture_output=True, timeout=30)
    assert done.returncode != 0
    assert setting in done.stderr.decode(), done.stderr.decode()
