"""The runtime image built by deploy/build-image.sh (buildah, FROM scratch)
is self-contained, and the sidecar pod of deploy/kubernetes/overlays works
as rendered: rehearsed without a cluster.

`podman run` cannot start containers in this sandbox (it fails on
setrlimit(RLIMIT_NPROC)), so the image is mounted (`buildah mount`) and its
entrypoint run with `chroot` as the image's user. The rehearsal gives that
process the pod's shape: its own network namespace (the pod's localhost),
a read-only root, emptyDirs as tmpfs owned by the fsGroup, exactly the
environment the kubelet would give the container (image env, the rendered
ConfigMap, Secret keys, the pod name), and an application in the same
network namespace that keeps bootstrap.servers=localhost:9092. tansu plays
the cluster's broker and SeaweedFS the S3 store, on the node's side of a
veth pair."""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import PROXY_BIN, REPO, SeaweedFS, Tansu, wait_port
from deploy import DEPLOY, container_env, proxy_container, workload

VERSION = re.search(r'^version = "(.+)"$', (REPO / "Cargo.toml").read_text(), re.M).group(1)
UID = 65532


def buildah(root: Path, *args: str) -> str:
    r = subprocess.run(["buildah", "--root", str(root / "storage"), "--runroot", str(root / "run"),
                        "--storage-driver", "vfs", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture(scope="module")
def image(workdir):
    """The image built from the binary under test, mounted read-write at
    `root` (each test that needs more mounts makes them in its own mount
    namespace)."""
    store = workdir / "containers"
    tag = f"localhost/kafka-lfs-proxy:e2e-{uuid.uuid4().hex[:8]}"
    r = subprocess.run(["bash", str(DEPLOY / "build-image.sh"), str(PROXY_BIN), tag],
                       env=dict(os.environ, BUILDAH_ROOT=str(store)), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    config = json.loads(buildah(store, "inspect", "--type", "image", tag))["OCIv1"]["config"]
    ctr = buildah(store, "from", "--quiet", tag)
    root = Path(buildah(store, "mount", ctr))
    yield {"root": root, "config": config, "tag": tag}
    buildah(store, "umount", ctr)
    buildah(store, "rm", ctr)
    buildah(store, "rmi", tag)


def test_image_is_self_contained(image):
    root, config = image["root"], image["config"]
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert "usr/local/bin/kafka-lfs-proxy" in files and "etc/ssl/certs/ca-certificates.crt" in files
    assert not (root / "bin").exists() and not any(f.endswith("/sh") for f in files), "no shell in the image"
    assert config["Entrypoint"] == ["/usr/local/bin/kafka-lfs-proxy"]
    assert config["User"] == f"{UID}:{UID}" and config["StopSignal"] == "SIGTERM"
    assert {"8080/tcp", "9092/tcp", "9093/tcp"} <= set(config["ExposedPorts"])
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    passwd = (root / "etc/passwd").read_text()
    assert f"nonroot:x:{UID}:{UID}:" in passwd
    # Nothing from the build machine is needed: the entrypoint runs inside
    # the image alone, as its user.
    r = subprocess.run([shutil.which("chroot"), f"--userspec={UID}:{UID}", str(root), *config["Entrypoint"], "--version"],
                       env={}, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"kafka-lfs-proxy {VERSION}"


class PodNetwork:
    """A network namespace for the pod and a veth pair to the node: the pod
    is POD_IP inside, the node NODE_IP outside."""

    def __init__(self):
        n = random.randrange(1, 250)
        self.name = f"klp-pod-{uuid.uuid4().hex[:6]}"
        self.node_ip, self.pod_ip = f"10.231.{n}.1", f"10.231.{n}.2"
        host, peer = f"klh{self.name[-6:]}", f"klp{self.name[-6:]}"
        for cmd in (["ip", "netns", "add", self.name],
                    ["ip", "-n", self.name, "link", "set", "lo", "up"],
                    ["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
                    ["ip", "link", "set", peer, "netns", self.name],
                    ["ip", "addr", "add", f"{self.node_ip}/30", "dev", host],
                    ["ip", "link", "set", host, "up"],
                    ["ip", "-n", self.name, "addr", "add", f"{self.pod_ip}/30", "dev", peer],
                    ["ip", "-n", self.name, "link", "set", peer, "up"]):
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def pod_network():
    net = PodNetwork()
    yield net
    net.delete()


def start_sidecar(image, net: PodNetwork, env: dict, log: Path) -> subprocess.Popen:
    """The proxy container: the image's entrypoint as its user, in the pod's
    network namespace, root read-only, /tmp and the data directory on tmpfs
    owned by the fsGroup (the overlay's emptyDirs), /proc and /dev provided."""
    root = image["root"]
    emptydirs = " && ".join(
        f"mount -t tmpfs -o uid={UID},gid={UID},mode=0770 tmpfs {root}{path}"
        for path in (env["KAFSCALE_LFS_PROXY_STORAGE_DIR"], env["KAFSCALE_LFS_PROXY_DOWNLOAD_TEMP_DIR"]))
    script = (f"mount --bind {root} {root} && mount -o remount,bind,ro {root} && {emptydirs} && "
              f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && "
              f"exec chroot --userspec={UID}:{UID} {root} {' '.join(image['config']['Entrypoint'])}")
    return subprocess.Popen(net.exec("unshare", "--mount", "--", "/bin/sh", "-c", script), env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def kubelet_env(image_config: dict, overlay_env: dict) -> dict:
    env = dict(e.split("=", 1) for e in image_config.get("Env", []))
    env.update(overlay_env)
    return env


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    import urllib.error

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def test_sidecar_pod_rehearsal(image, pod_network, workdir):
    net = pod_network
    tansu = Tansu(workdir, host=net.node_ip)
    s3 = SeaweedFS(workdir, host=net.node_ip)
    proxy = None
    try:
        overlay = "sidecar-s3"
        container = proxy_container(overlay)
        secrets = {("kafka-lfs-proxy-secrets", "s3-access-key"): s3.ACCESS_KEY,
                   ("kafka-lfs-proxy-secrets", "s3-secret-key"): s3.SECRET_KEY}
        env = kubelet_env(image["config"], container_env(overlay, container, secrets, pod_name="example-app-0"))
        # Only what names this cluster changes: the brokers' and the store's
        # addresses (the manifest's are DNS names of a real cluster).
        env.update({"KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS": tansu.address,
                    "KAFSCALE_LFS_PROXY_S3_BUCKET": s3.BUCKET,
                    "KAFSCALE_LFS_PROXY_S3_ENDPOINT": s3.endpoint,
                    "KAFSCALE_LFS_PROXY_S3_REGION": "us-east-1"})
        assert env["KAFSCALE_LFS_PROXY_ADDR"] == "127.0.0.1:9092"
        log = workdir / "sidecar-rehearsal.log"
        started = time.monotonic()
        proxy = start_sidecar(image, net, env, log)

        # The kubelet's probes, from the node to the pod's address.
        http = f"http://{net.pod_ip}:8080"
        startup = container["startupProbe"]
        deadline = started + startup["periodSeconds"] * startup["failureThreshold"]
        while http_get(f"{http}/livez", 1)[0] != 200:
            assert proxy.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        while http_get(f"{http}/readyz", 1)[0] != 200:
            assert proxy.poll() is None and time.monotonic() < deadline + 15, log.read_text()
            time.sleep(0.2)
        ready_in = time.monotonic() - started
        # The Kafka listener is the pod's own: not reachable from the node.
        with pytest.raises(OSError):
            socket.create_connection((net.pod_ip, 9092), timeout=2).close()

        # The application, unchanged: bootstrap.servers from its container's env.
        [app] = workload("sidecar")["spec"]["template"]["spec"]["containers"]
        bootstrap = {e["name"]: e["value"] for e in app["env"]}["KAFKA_BOOTSTRAP_SERVERS"]
        assert bootstrap == "localhost:9092"
        topic = f"rehearsal-{uuid.uuid4().hex[:6]}"
        value = os.urandom(2_000_000)
        (workdir / "value.bin").write_bytes(value)
        # A file argument is one record (stdin would be split at newlines).
        r = subprocess.run(net.exec("kcat", "-P", "-b", bootstrap, "-t", topic, "-H", "LFS_BLOB=",
                                    "-X", "message.max.bytes=4000000", str(workdir / "value.bin")),
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(net.exec("kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-c", "1",
                                    "-f", "%s"), capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        envelope = json.loads(r.stdout)
        digest = hashlib.sha256(value).hexdigest()
        assert envelope["size"] == len(value) and envelope["sha256"] == digest
        assert envelope["bucket"] == s3.BUCKET and envelope["proxy_id"] == "example-app-0"
        assert s3.get(envelope["key"]) == value

        # The example application's own command, as the manifest runs it
        # (host's /bin/sh and kcat standing in for its image): one round of
        # its loop produces a value and prints the envelope it reads back.
        example = subprocess.Popen(net.exec(*app["command"], *app["args"]),
                                   env={"PATH": os.environ["PATH"], **{e["name"]: e["value"] for e in app["env"]}},
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = example.stdout.readline()
        finally:
            example.kill()
            example.wait(10)
        printed = json.loads(line)
        assert printed["kfs_lfs"] == 1 and printed["size"] == 2_000_000, line[:300]
        assert len(s3.get(printed["key"])) == 2_000_000

        # The HTTP API from outside the pod: a verified download.
        req = urllib.request.Request(f"{http}/lfs/download", method="POST",
                                     data=json.dumps({"key": envelope["key"],
                                                      "integrity": {"sha256": digest, "size": len(value)}}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert hashlib.sha256(resp.read()).hexdigest() == digest

        # The kubelet's SIGTERM: drained, exit 0, within the grace period.
        grace = workload(overlay)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        stopping = time.monotonic()
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(grace) == 0, log.read_text()
        print(f"\nsidecar rehearsal: ready in {ready_in:.1f} s, "
              f"stopped in {time.monotonic() - stopping:.2f} s (grace {grace} s)")
        # The overlay asks for JSON logs: one object per line, fields at the top.
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        assert lines and all({"timestamp", "level", "target", "message"} <= set(e) for e in lines), lines[:3]
        assert not [e for e in lines if e["level"] in ("ERROR", "WARN")], lines
        assert any(e["message"] == "kafka-lfs-proxy listening" and e["kafka"] == "127.0.0.1:9092" for e in lines)
    finally:
        if proxy and proxy.poll() is None:
            proxy.kill()
            proxy.wait(10)
        s3.kill()
        tansu.stop()
