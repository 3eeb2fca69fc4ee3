"""Client-facing security: TLS on the Kafka listeners and SASL, terminated
by the proxy against a credentials file made with `kafka-lfs-proxy
credentials`, or passed through to a SASL-verifying gate. confluent-kafka
and kafka-python log in with SASL_SSL (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN),
produce and consume; a wrong password and an untrusted certificate fail
with the clients' own errors; nothing but the login is served before it
succeeds."""

import socket
import ssl
import struct
import subprocess
import uuid

import pytest
import trustme

from conftest import PROXY_BIN, LogLines, Proxy
from test_upstream_security import GatedBroker

USER, PASSWORD = "alice", "alice-secret-pw"
MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]


@pytest.fixture(scope="module")
def pki(workdir):
    ca = trustme.CA()
    d = workdir / "client-tls"
    d.mkdir(exist_ok=True)
    files = {k: d / f"{k}.pem" for k in ("ca", "cert", "key", "client")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    ca.issue_cert("client@example").private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    creds = d / "users.json"
    for user, password in ((USER, PASSWORD), ("bob", "bob-pw")):
        done = subprocess.run([str(PROXY_BIN), "credentials", "--file", str(creds), "--user", user,
                               "--iterations", "4096"], input=password + "\n", capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert PASSWORD not in creds.read_text()
    files["credentials"] = creds
    return files


@pytest.fixture(scope="module")
def secure_proxy(tansu, workdir, pki):
    p = Proxy(tansu.address, workdir, capture=False, env={
        "KAFSCALE_LFS_PROXY_TLS_ENABLED": "true",
        "KAFSCALE_LFS_PROXY_TLS_CERT_FILE": str(pki["cert"]),
        "KAFSCALE_LFS_PROXY_TLS_KEY_FILE": str(pki["key"]),
        "KAFSCALE_LFS_PROXY_CLIENT_SASL_MODE": "terminate",
        "KAFSCALE_LFS_PROXY_CLIENT_SASL_CREDENTIALS_FILE": str(pki["credentials"]),
        "KAFSCALE_LFS_PROXY_REHYDRATE_PRINCIPALS": "bob",
    })
    p.wait_ready()
    yield p
    log = p.read_log()
    p.stop()
    assert "panicked" not in log and PASSWORD not in log


def poll_until(client, errors, wanted, timeout=10.0):
    """Polls until an error callback satisfies `wanted` (poll returns at the
    first callback, which may be another error)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and not any(wanted(e) for e in errors):
        client.poll(0.5)
    return any(wanted(e) for e in errors)


def confluent_config(proxy, pki, mechanism, password=PASSWORD, **extra):
    return {"bootstrap.servers": proxy.bootstrap, "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(pki["ca"]), "sasl.mechanism": mechanism,
            "sasl.username": USER, "sasl.password": password, **extra}


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_confluent_kafka_sasl_ssl(secure_proxy, pki, mechanism):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "sasl-" + uuid.uuid4().hex[:8]
    conf = confluent_config(secure_proxy, pki, mechanism)
    admin = AdminClient(conf)
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(15)
    p = Producer(conf)
    for i in range(5):
        p.produce(topic, key=b"k", value=b"secure-%d" % i)
    assert p.flush(30) == 0
    c = Consumer({**conf, "group.id": "sasl", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []
    for _ in range(60):
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
        if len(got) == 5:
            break
    c.close()
    assert got == [b"secure-%d" % i for i in range(5)]
    assert f"client authenticated user=\"{USER}\"" in secure_proxy.read_log() or \
        f"user={USER}" in secure_proxy.read_log()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kafka_python_sasl_ssl(secure_proxy, pki, mechanism):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = "sasl-kp-" + uuid.uuid4().hex[:8]
    common = dict(bootstrap_servers=secure_proxy.bootstrap, security_protocol="SASL_SSL",
                  ssl_cafile=str(pki["ca"]), sasl_mechanism=mechanism,
                  sasl_plain_username=USER, sasl_plain_password=PASSWORD)
    producer = KafkaProducer(**common)
    for i in range(3):
        producer.send(topic, value=b"kp-%d" % i, partition=0).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(**common, consumer_timeout_ms=3000, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    got = [m.value for m in consumer][:3]
    consumer.close()
    assert got == [b"kp-0", b"kp-1", b"kp-2"]


def test_wrong_password_is_an_authentication_error(secure_proxy, pki):
    from confluent_kafka import KafkaError, Producer

    errors = []
    p = Producer(confluent_config(secure_proxy, pki, "SCRAM-SHA-256", password="not-it",
                                  error_cb=errors.append))
    assert poll_until(p, errors, lambda e: e.code() == KafkaError._AUTHENTICATION), errors
    assert any("Authentication failed" in str(e) for e in errors), errors
    assert "client SASL login refused" in secure_proxy.read_log()

    from kafka import KafkaProducer
    from kafka.errors import KafkaError as KPError
    logs = LogLines("kafka")
    with pytest.raises(KPError):
        KafkaProducer(bootstrap_servers=secure_proxy.bootstrap, security_protocol="SASL_SSL",
                      ssl_cafile=str(pki["ca"]), sasl_mechanism="PLAIN", sasl_plain_username=USER,
                      sasl_plain_password="not-it", max_block_ms=4000)
    assert logs.any("Authentication failed"), logs.lines[-5:]


def test_untrusted_certificate_fails_in_the_client(secure_proxy, pki, workdir):
    from confluent_kafka import KafkaError, Producer

    other = trustme.CA()
    other_ca = workdir / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_ca))
    errors = []
    p = Producer(confluent_config(secure_proxy, pki, "PLAIN", error_cb=errors.append,
                                  **{"ssl.ca.location": str(other_ca)}))
    # librdkafka reports it as _SSL or, depending on timing, _TRANSPORT;
    # the reason is the same.
    assert poll_until(p, errors, lambda e: e.code() in (KafkaError._SSL, KafkaError._TRANSPORT)
                      and "certificate verify failed" in str(e)), errors


def tls_socket(proxy, pki):
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    raw = socket.create_connection(("127.0.0.1", int(proxy.bootstrap.rsplit(":", 1)[1])), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def request(api_key, version, correlation_id, body=b""):
    header = struct.pack(">hhih", api_key, version, correlation_id, 4) + b"test"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def wait_for_log(proxy, text, timeout=5.0):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in proxy.read_log():
            return True
        time.sleep(0.05)
    return False


def test_nothing_is_served_before_login(secure_proxy, pki):
    with tls_socket(secure_proxy, pki) as s:
        s.sendall(request(3, 1, 7, struct.pack(">i", 0)))  # Metadata v1, no topics
        assert s.recv(100) == b"", "closed without an answer"
    assert wait_for_log(secure_proxy, "Metadata request before SASL authentication")
    with tls_socket(secure_proxy, pki) as s:
        mech = b"PLAIN"
        s.sendall(request(17, 0, 8, struct.pack(">h", len(mech)) + mech))  # SaslHandshake v0
        assert s.recv(100) == b""
    assert wait_for_log(secure_proxy, "unframed SASL (SaslHandshake v0) is not supported")


def test_client_certificates_required(tansu, workdir, pki):
    from confluent_kafka import KafkaError, Producer

    p = Proxy(tansu.address, workdir, capture=False, env={
        "KAFSCALE_LFS_PROXY_TLS_ENABLED": "true",
        "KAFSCALE_LFS_PROXY_TLS_CERT_FILE": str(pki["cert"]),
        "KAFSCALE_LFS_PROXY_TLS_KEY_FILE": str(pki["key"]),
        "KAFSCALE_LFS_PROXY_TLS_CLIENT_CA_FILE": str(pki["ca"]),
    })
    try:
        p.wait_ready()
        base = {"bootstrap.servers": p.bootstrap, "security.protocol": "SSL", "ssl.ca.location": str(pki["ca"])}
        ok = Producer({**base, "ssl.certificate.location": str(pki["client"]), "ssl.key.location": str(pki["client"])})
        ok.produce("mtls-" + uuid.uuid4().hex[:6], value=b"with a certificate")
        assert ok.flush(30) == 0
        errors = []
        refused = Producer({**base, "error_cb": errors.append})
        assert poll_until(refused, errors, lambda e: e.code() in (
            KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)), errors
        # poll() returns at the first error callback, maybe before the
        # proxy has written its log line.
        assert wait_for_log(p, "client TLS handshake failed")
    finally:
        p.stop()


def test_sasl_passthrough_to_a_verifying_broker(workdir):
    from confluent_kafka import Producer

    gate = GatedBroker(workdir, "--mechanism", "SCRAM-SHA-512", "--user", "app", "--password", "app-pw")
    p = Proxy(gate.address, workdir, capture=False)
    own = Proxy(gate.address, workdir, capture=False, env={
        "KAFSCALE_LFS_PROXY_BACKEND_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFSCALE_LFS_PROXY_BACKEND_SASL_USERNAME": "app",
        "KAFSCALE_LFS_PROXY_BACKEND_SASL_PASSWORD": "app-pw"})
    try:
        conf = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "app", "sasl.password": "app-pw"}
        prod = Producer({"bootstrap.servers": p.bootstrap, **conf})
        prod.produce("passthrough-" + uuid.uuid4().hex[:6], value=b"the client's own login")
        assert prod.flush(30) == 0
        assert any(e == "AUTH_OK SCRAM-SHA-512 app" for e in gate.events())
        # With its own upstream login, the proxy refuses to relay a client's.
        own.wait_ready()
        refused = Producer({"bootstrap.servers": own.bootstrap, **conf})
        text = "client SASL is not relayed while the proxy logs in"
        for _ in range(40):
            refused.poll(0.5)
            if text in own.read_log():
                break
        assert text in own.read_log(), own.read_log()[-3000:]
    finally:
        p.stop()
        own.stop()
        gate.stop()


def test_credentials_file_problems_stop_start_up(workdir, tansu):
    import os

    from conftest import free_port

    bad = workdir / "bad-users.json"
    bad.write_text('{"users": {"x": {"SCRAM-SHA-1": {"salt": "", "iterations": 4096, '
                   '"stored_key": "", "server_key": ""}}}}')
    for path, expect in ((workdir / "missing.json", "KAFSCALE_LFS_PROXY_CLIENT_SASL_CREDENTIALS_FILE"),
                         (bad, "SCRAM-SHA-1")):
        env = dict(os.environ, KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS=tansu.address,
                   KAFSCALE_LFS_PROXY_ADDR=f"127.0.0.1:{free_port()}",
                   KAFSCALE_LFS_PROXY_HTTP_ADDR=f"127.0.0.1:{free_port()}",
                   KAFSCALE_LFS_PROXY_STORAGE_DIR=str(workdir / "creds-missing"),
                   KAFSCALE_LFS_PROXY_CLIENT_SASL_MODE="terminate",
                   KAFSCALE_LFS_PROXY_CLIENT_SASL_CREDENTIALS_FILE=str(path))
        done = subprocess.run([str(PROXY_BIN)], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and expect in done.stderr, done.stderr


def test_rehydration_by_sasl_user(secure_proxy, pki):
    """REHYDRATE_PRINCIPALS=bob: bob reads the original LFS value, alice the
    envelope, on the same topic and listener."""
    import hashlib
    import json
    import os

    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "sasl-rh-" + uuid.uuid4().hex[:8]
    conf = confluent_config(secure_proxy, pki, "SCRAM-SHA-256")
    admin = AdminClient(conf)
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(15)
    value = os.urandom(300 * 1024)
    p = Producer({**conf, "message.max.bytes": 2 * 1024 * 1024})
    p.produce(topic, key=b"k", value=value, headers=[("LFS_BLOB", b"")])
    assert p.flush(30) == 0

    def read(user, password):
        c = Consumer({**conf, "sasl.username": user, "sasl.password": password, "group.id": "rh-" + user,
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        try:
            for _ in range(60):
                m = c.poll(0.5)
                if m is not None and m.error() is None:
                    return m.value()
        finally:
            c.close()

    assert hashlib.sha256(read("bob", "bob-pw")).digest() == hashlib.sha256(value).digest()
    assert json.loads(read(USER, PASSWORD))["kfs_lfs"] == 1
