"""deploy/: every overlay renders and validates against the Kubernetes
schemas of a pinned version, and agrees with the binary it deploys: only
settings the binary knows, secrets only from Secret refs, probes and ports
where the binary serves them, a grace period longer than the drain. A
manifest that drifts from the binary fails here."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import (DEPLOY, KUBERNETES_VERSION, OVERLAYS, binary_default, config_map, container_env,
                    documents, known_settings, of_kind, port_of, proxy_container, rendered, secret_settings,
                    workload)

VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
# Custom resources kubernetes-validate has no schema for, checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_pinned_kubernetes_schemas(overlay, tmp_path):
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered(overlay))
    r = subprocess.run([str(VALIDATE), "-k", KUBERNETES_VERSION, "--strict", "--quiet", str(manifest)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    unchecked = {m for m in re.findall(r"Couldn't find schema for kind (\w+)", r.stdout + r.stderr)}
    assert unchecked <= CUSTOM_KINDS, r.stdout + r.stderr
    for monitor in of_kind(overlay, "ServiceMonitor"):
        [service] = [s for s in of_kind(overlay, "Service")
                     if s["metadata"].get("labels", {}).items() >= monitor["spec"]["selector"]["matchLabels"].items()]
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
        assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])


def test_validation_rejects_a_broken_manifest(tmp_path):
    """The check above can fail: a misspelt probe field is refused."""
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(rendered("gateway").replace("readinessProbe:", "readinessProb:"))
    r = subprocess.run([str(VALIDATE), "-k", KUBERNETES_VERSION, "--strict", "--quiet", str(manifest)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "readinessProb" in r.stdout + r.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_is_one_the_binary_reads(overlay):
    known = known_settings()
    assert "KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS" in known and len(known) > 50
    proxy = proxy_container(overlay)
    names = {e["name"] for e in proxy.get("env", [])}
    for source in proxy["envFrom"]:
        names |= set(config_map(overlay, source["configMapRef"]["name"]))
    assert names - known == set(), "settings the binary does not know"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_only_from_secret_refs(overlay):
    secrets = secret_settings()
    assert {"KAFSCALE_LFS_PROXY_S3_SECRET_KEY", "KAFSCALE_LFS_PROXY_BACKEND_SASL_PASSWORD"} <= secrets
    assert of_kind(overlay, "Secret") == [], "no Secret (and no secret value) is shipped"
    for cm in of_kind(overlay, "ConfigMap"):
        assert secrets.isdisjoint(cm.get("data", {})), f"secret setting in ConfigMap {cm['metadata']['name']}"
    spec = workload(overlay)["spec"]["template"]["spec"]
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        for e in c.get("env", []):
            if e["name"] in secrets or re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", e["name"]):
                assert "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), e
    # Every secret setting the binary has is wired, so none needs a plain value.
    wired = {e["name"] for e in proxy_container(overlay)["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets <= wired


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_ports_are_where_the_binary_serves_them(overlay):
    proxy = proxy_container(overlay)
    env = container_env(overlay, proxy, secrets={})
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    http_addr = env.get("KAFSCALE_LFS_PROXY_HTTP_ADDR", binary_default("KAFSCALE_LFS_PROXY_HTTP_ADDR"))
    assert ports["http"] == port_of(http_addr) == port_of(binary_default("KAFSCALE_LFS_PROXY_HTTP_ADDR"))
    # Probes come from the kubelet, at the pod's address: HTTP must not be loopback-only.
    assert http_addr.startswith("0.0.0.0:")
    kafka = port_of(env.get("KAFSCALE_LFS_PROXY_ADDR", binary_default("KAFSCALE_LFS_PROXY_ADDR")))
    assert ports["kafka"] == kafka
    base = int(env.get("KAFSCALE_LFS_PROXY_BROKER_PORT_BASE", kafka + 1))
    brokers = sorted((int(n.split("-")[1]), p) for n, p in ports.items() if n.startswith("broker-"))
    assert brokers and all(port == base + node for node, port in brokers)
    assert proxy["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    annotations = workload(overlay)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["http"]) and annotations["prometheus.io/path"] == "/metrics"
    for service in of_kind(overlay, "Service"):
        for p in service["spec"]["ports"]:
            assert p["targetPort"] in ports, f"{service['metadata']['name']} targets a port the pod lacks"
            assert p["port"] == ports[p["targetPort"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_the_drain_and_cleanup(overlay):
    proxy = proxy_container(overlay)
    env = container_env(overlay, proxy, secrets={})
    drain = int(env.get("KAFSCALE_LFS_PROXY_SHUTDOWN_TIMEOUT_MS",
                        binary_default("KAFSCALE_LFS_PROXY_SHUTDOWN_TIMEOUT_MS")))
    cleanup = int(env.get("KAFSCALE_LFS_PROXY_SHUTDOWN_CLEANUP_MS",
                          binary_default("KAFSCALE_LFS_PROXY_SHUTDOWN_CLEANUP_MS")))
    pre_stop = proxy.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0) * 1000
    grace = workload(overlay)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] * 1000
    assert pre_stop + drain + cleanup < grace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_locked_down(overlay):
    spec = workload(overlay)["spec"]["template"]["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] and pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["runAsUser"] == image_user()
    assert spec["automountServiceAccountToken"] is False
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert "memory" in c["resources"]["limits"] and "cpu" in c["resources"]["requests"], c["name"]
    # What the proxy writes is on emptyDirs: the store/ledger directory and temp.
    proxy = proxy_container(overlay)
    env = container_env(overlay, proxy, secrets={})
    mounts = {m["mountPath"] for m in proxy["volumeMounts"]}
    assert {env["KAFSCALE_LFS_PROXY_STORAGE_DIR"], env["KAFSCALE_LFS_PROXY_DOWNLOAD_TEMP_DIR"]} <= mounts
    assert of_kind(overlay, "NetworkPolicy"), "a NetworkPolicy comes with every overlay"


def test_sidecar_is_native_and_the_application_uses_localhost():
    spec = workload("sidecar")["spec"]["template"]["spec"]
    [proxy] = spec["initContainers"]
    assert proxy["name"] == "proxy" and proxy["restartPolicy"] == "Always"
    env = container_env("sidecar", proxy, secrets={})
    assert env["KAFSCALE_LFS_PROXY_ADDR"] == "127.0.0.1:9092"
    assert env["KAFSCALE_LFS_PROXY_ADVERTISED_HOST"] == "localhost"
    [app] = spec["containers"]
    assert {"name": "KAFKA_BOOTSTRAP_SERVERS", "value": "localhost:9092"} in app["env"]


def test_gateway_spreads_replicas_and_limits_disruption():
    deployment = workload("gateway")
    assert deployment["spec"]["replicas"] >= 2
    keys = {c["topologyKey"] for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    [pdb] = of_kind("gateway", "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    env = container_env("gateway", proxy_container("gateway"), secrets={})
    # Replicas share no disk: the gateway stores objects in S3.
    assert env.get("KAFSCALE_LFS_PROXY_S3_BUCKET")
    [kafka] = [s for s in of_kind("gateway", "Service") if s["metadata"]["name"] == "kafka-lfs-proxy"]
    namespace = kafka["metadata"]["namespace"]
    assert env["KAFSCALE_LFS_PROXY_ADVERTISED_HOST"] == f"kafka-lfs-proxy.{namespace}.svc"


def image_user() -> int:
    m = re.search(r"^UID_NONROOT=(\d+)$", (DEPLOY / "build-image.sh").read_text(), re.M)
    return int(m.group(1))


def test_containerfile_and_build_script_describe_the_same_image():
    containerfile = (DEPLOY / "Containerfile").read_text()
    script = (DEPLOY / "build-image.sh").read_text()
    runtime = containerfile.split("FROM gcr.io/distroless", 1)[1]
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", runtime, re.M) for p in line.split()}
    assert exposed == {int(p) for p in re.findall(r"--port (\d+)/tcp", script)}
    env_block = re.search(r"^ENV (.+?)(?:\n(?!\s))", runtime, re.M | re.S).group(1)
    assert dict(re.findall(r"(\w+)=(\S+)", env_block)) == dict(re.findall(r"--env (\w+)=(\S+)", script))
    assert re.search(r"^USER (\d+):(\d+)$", runtime, re.M).groups() == (str(image_user()),) * 2
    assert "STOPSIGNAL SIGTERM" in runtime and "--stop-signal SIGTERM" in script
    entrypoint = re.search(r'^ENTRYPOINT \["([^"]+)"\]$', runtime, re.M).group(1)
    assert f"--entrypoint '[\"{entrypoint}\"]'" in script
    # The image's environment is the one the manifests rely on.
    env = container_env("sidecar", proxy_container("sidecar"), secrets={})
    for name, value in re.findall(r"--env (KAFSCALE_\w+)=(\S+)", script):
        assert env.get(name, value) == value
