"""The proxy's upstream login: TLS (with a CA, mTLS, a server-name
override) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) on every upstream
connection, verified by a gate built on independent implementations
(Python's ssl, scramp) in front of a real tansu that advertises the gate.
A wrong password gives the client an authentication error, not a hang."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import trustme

from conftest import UPSTREAM_HOST, LogLines, Proxy, Tansu, free_port, wait_port
from test_lfs import consume

GATE = Path(__file__).parent / "broker_gate.py"


class GatedBroker:
    """tansu behind broker_gate.py; tansu advertises the gate's address."""

    def __init__(self, workdir, *gate_args):
        self.gate_port = free_port(UPSTREAM_HOST)
        self.address = f"{UPSTREAM_HOST}:{self.gate_port}"
        self.tansu = Tansu(workdir, advertised_port=self.gate_port)
        self.log_path = workdir / f"gate-{self.gate_port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(GATE), "--listen", self.address, "--upstream", self.tansu.address, *gate_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(UPSTREAM_HOST, self.gate_port)

    def events(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace").splitlines()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        self.tansu.stop()


@pytest.fixture(scope="module")
def pki(workdir):
    ca = trustme.CA()
    d = workdir / "upstream-tls"
    d.mkdir(exist_ok=True)
    files = {k: d / f"{k}.pem" for k in ("ca", "cert", "key", "named_cert", "named_key", "client")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server = ca.issue_cert(UPSTREAM_HOST)
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    named = ca.issue_cert("kafka.internal")
    named.cert_chain_pems[0].write_to_path(str(files["named_cert"]))
    named.private_key_pem.write_to_path(str(files["named_key"]))
    ca.issue_cert("kafka-lfs-proxy@example").private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return files


def produce_and_consume(proxy):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "sec-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": proxy.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(15)
    p = Producer({"bootstrap.servers": proxy.bootstrap})
    for i in range(3):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i)
    assert p.flush(30) == 0
    got = consume(proxy.bootstrap, topic, 3)
    assert sorted(m.value() for m in got) == [b"v0", b"v1", b"v2"]
    return topic


def sasl_env(mechanism, user="lfs-proxy", password="s3cret-pw"):
    return {"KAFSCALE_LFS_PROXY_BACKEND_SASL_MECHANISM": mechanism,
            "KAFSCALE_LFS_PROXY_BACKEND_SASL_USERNAME": user,
            "KAFSCALE_LFS_PROXY_BACKEND_SASL_PASSWORD": password}


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_login_on_every_upstream_connection(workdir, mechanism):
    gate = GatedBroker(workdir, "--mechanism", mechanism, "--user", "lfs-proxy", "--password", "s3cret-pw")
    proxy = Proxy(gate.address, workdir, capture=False, env=sasl_env(mechanism))
    try:
        proxy.wait_ready()
        topic = produce_and_consume(proxy)
        r = requests.post(f"http://127.0.0.1:{proxy.http_port}/lfs/produce", data=b"via http",
                          headers={"X-Kafka-Topic": topic}, timeout=30)
        assert r.status_code == 200, r.text
        events = gate.events()
        assert not [e for e in events if e.startswith(("UNAUTHENTICATED", "AUTH_FAIL"))], events
        # A connection that skipped the login would show UNAUTHENTICATED above;
        # one may be mid-login while the events are read.
        connections = sum(e == "CONNECTED" for e in events)
        logins = sum(e == f"AUTH_OK {mechanism} lfs-proxy" for e in events)
        assert logins >= 4 and connections - logins <= 1, (connections, logins)
        assert "s3cret-pw" not in proxy.read_log()
    finally:
        proxy.stop()
        gate.stop()


def test_wrong_password_is_an_authentication_error_for_the_client(workdir):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    gate = GatedBroker(workdir, "--mechanism", "SCRAM-SHA-256", "--user", "lfs-proxy", "--password", "right")
    proxy = Proxy(gate.address, workdir, capture=False, env=sasl_env("SCRAM-SHA-256", password="wrong-pw"))
    try:
        logs = LogLines("librdkafka-wrong-password")
        admin = AdminClient({"bootstrap.servers": proxy.bootstrap, "logger": logs.logger})
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=3)
        admin.poll(0.5)
        assert logs.any("SASL Authentication failed"), logs.lines[-5:]
        log = proxy.read_log()
        assert "cannot log in to the broker" in log and "authentication failed" in log.lower()
        assert "wrong-pw" not in log
        assert requests.get(f"http://127.0.0.1:{proxy.http_port}/readyz", timeout=5).status_code == 503
        r = requests.post(f"http://127.0.0.1:{proxy.http_port}/lfs/produce", data=b"x",
                          headers={"X-Kafka-Topic": "t"}, timeout=30)
        assert r.status_code == 502 and r.json()["code"] == "backend_error", r.text
        assert "login" in r.json()["message"]
        assert [f for f in proxy.storage_dir.rglob("*") if f.is_file()] == []
    finally:
        proxy.stop()
        gate.stop()


def tls_env(pki, **extra):
    return {"KAFSCALE_LFS_PROXY_BACKEND_TLS_ENABLED": "true",
            "KAFSCALE_LFS_PROXY_BACKEND_TLS_CA_FILE": str(pki["ca"]), **extra}


def test_tls_to_the_broker(workdir, pki):
    gate = GatedBroker(workdir, "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]))
    proxy = Proxy(gate.address, workdir, capture=False, env=tls_env(pki))
    untrusting = Proxy(gate.address, workdir, capture=False, env={"KAFSCALE_LFS_PROXY_BACKEND_TLS_ENABLED": "true"})
    try:
        proxy.wait_ready()
        produce_and_consume(proxy)
        time.sleep(1)
        assert requests.get(f"http://127.0.0.1:{untrusting.http_port}/readyz", timeout=5).status_code == 503
        assert "TLS handshake" in untrusting.read_log()
    finally:
        proxy.stop()
        untrusting.stop()
        gate.stop()


def test_mtls_and_server_name_override_with_scram(workdir, pki):
    gate = GatedBroker(workdir, "--tls-cert", str(pki["named_cert"]), "--tls-key", str(pki["named_key"]),
                       "--tls-client-ca", str(pki["ca"]),
                       "--mechanism", "SCRAM-SHA-512", "--user", "lfs-proxy", "--password", "s3cret-pw")
    env = {**tls_env(pki), **sasl_env("SCRAM-SHA-512"),
           "KAFSCALE_LFS_PROXY_BACKEND_TLS_SERVER_NAME": "kafka.internal",
           "KAFSCALE_LFS_PROXY_BACKEND_TLS_CERT_FILE": str(pki["client"]),
           "KAFSCALE_LFS_PROXY_BACKEND_TLS_KEY_FILE": str(pki["client"])}
    proxy = Proxy(gate.address, workdir, capture=False, env=env)
    no_cert = {k: v for k, v in env.items() if "CERT_FILE" not in k and "KEY_FILE" not in k}
    refused = Proxy(gate.address, workdir, capture=False, env=no_cert)
    try:
        proxy.wait_ready()
        produce_and_consume(proxy)
        assert any(e == "AUTH_OK SCRAM-SHA-512 lfs-proxy" for e in gate.events())
        time.sleep(1)
        assert requests.get(f"http://127.0.0.1:{refused.http_port}/readyz", timeout=5).status_code == 503
        assert "upstream health check failed" in refused.read_log(), "refused for want of a client certificate"
    finally:
        proxy.stop()
        refused.stop()
        gate.stop()


@pytest.mark.parametrize("setting", ["KAFSCALE_LFS_PROXY_BACKEND_TLS_CA_FILE",
                                     "KAFSCALE_LFS_PROXY_BACKEND_TLS_CERT_FILE"])
def test_missing_upstream_tls_file_stops_start_up(workdir, pki, setting):
    from conftest import PROXY_BIN

    env = dict(os.environ, **tls_env(pki), KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS="127.0.0.2:1",
               KAFSCALE_LFS_PROXY_ADDR=f"127.0.0.1:{free_port()}",
               KAFSCALE_LFS_PROXY_HTTP_ADDR=f"127.0.0.1:{free_port()}",
               KAFSCALE_LFS_PROXY_STORAGE_DIR=str(workdir / "tls-missing"),
               KAFSCALE_LFS_PROXY_BACKEND_TLS_CERT_FILE=str(pki["client"]),
               KAFSCALE_LFS_PROXY_BACKEND_TLS_KEY_FILE=str(pki["client"]))
    env[setting] = str(workdir / "nope.pem")
    done = subprocess.run([str(PROXY_BIN)], env=env, capture_output=True, timeout=30)
    assert done.returncode != 0 and setting in done.stderr.decode(), done.stderr.decode()


def test_sasl_settings_are_validated_and_the_password_hidden():
    from conftest import PROXY_BIN

    help_text = subprocess.run([str(PROXY_BIN), "--help"], capture_output=True, text=True,
                               env=dict(os.environ, KAFSCALE_LFS_PROXY_BACKEND_SASL_PASSWORD="hunter2-secret")).stdout
    assert "KAFSCALE_LFS_PROXY_BACKEND_SASL_PASSWORD" in help_text and "hunter2-secret" not in help_text
    done = subprocess.run([str(PROXY_BIN)], capture_output=True, text=True, timeout=30, env=dict(
        os.environ, KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS="b:1", KAFSCALE_LFS_PROXY_BACKEND_SASL_MECHANISM="GSSAPI"))
    assert done.returncode == 2 and "KAFSCALE_LFS_PROXY_BACKEND_SASL_MECHANISM" in done.stderr
    done = subprocess.run([str(PROXY_BIN)], capture_output=True, text=True, timeout=30, env=dict(
        os.environ, KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS="b:1", KAFSCALE_LFS_PROXY_BACKEND_SASL_MECHANISM="PLAIN",
        KAFSCALE_LFS_PROXY_BACKEND_SASL_USERNAME="u"))
    assert done.returncode == 2 and "KAFSCALE_LFS_PROXY_BACKEND_SASL_PASSWORD" in done.stderr


def test_reauthentication_before_the_session_ends_keeps_clients_connected(workdir):
    """The gate grants 2 s sessions and closes a connection that sends a
    request after its session ended; clients keep producing through the proxy
    for 8 s (4 lifetimes) on the same connections, without a disconnect."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    gate = GatedBroker(workdir, "--mechanism", "SCRAM-SHA-256", "--user", "lfs-proxy", "--password", "s3cret-pw",
                       "--lifetime-ms", "2000")
    proxy = Proxy(gate.address, workdir, capture=False,
                  env={**sasl_env("SCRAM-SHA-256"), "KAFSCALE_LFS_PROXY_HEALTH_INTERVAL_MS": "60000"})
    try:
        proxy.wait_ready()
        topic = "reauth-" + uuid.uuid4().hex[:8]
        admin = AdminClient({"bootstrap.servers": proxy.bootstrap})
        for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            f.result(15)

        logs = LogLines("librdkafka-reauth")
        p = Producer({"bootstrap.servers": proxy.bootstrap, "logger": logs.logger, "linger.ms": 0})
        delivered = []
        deadline = time.time() + 8
        i = 0
        while time.time() < deadline:
            p.produce(topic, value=b"m%d" % i, on_delivery=lambda e, m: delivered.append(e))
            p.poll(0.25)
            i += 1
        assert p.flush(30) == 0
        assert delivered == [None] * i, "every record delivered"
        events = gate.events()
        assert sum(e.startswith("REAUTH_OK") for e in events) >= 3, events
        assert "EXPIRED_CLOSE" not in events, "no connection outlived its session"
        assert not logs.any("Disconnected") and not logs.any("disconnect"), logs.lines
        assert len(consume(proxy.bootstrap, topic, i)) == i
        metrics = requests.get(f"http://127.0.0.1:{proxy.http_port}/metrics", timeout=5).text
        assert 'kafka_lfs_proxy_upstream_reauthentications_total{outcome="ok"}' in metrics
    finally:
        proxy.stop()
        gate.stop()
