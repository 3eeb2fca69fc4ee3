"""The deploy/ folder as the tests see it: overlays rendered with `kubectl
kustomize`, the proxy container found in them, the environment the kubelet
would give it, and what the binary itself says about its settings."""

import re
import subprocess
from functools import cache
from pathlib import Path

import yaml

from conftest import PROXY_BIN, REPO

DEPLOY = REPO / "deploy"
OVERLAYS = ["sidecar", "sidecar-s3", "gateway", "gateway-monitored"]
# Kubernetes version the manifests are validated against (native sidecars
# need 1.29, the preStop sleep action 1.30).
KUBERNETES_VERSION = "1.30.0"


@cache
def rendered(overlay: str) -> str:
    return subprocess.run(["kubectl", "kustomize", str(DEPLOY / "kubernetes" / "overlays" / overlay)],
                          check=True, capture_output=True, text=True, timeout=60).stdout


def documents(overlay: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered(overlay)) if d]


def of_kind(overlay: str, kind: str) -> list[dict]:
    return [d for d in documents(overlay) if d["kind"] == kind]


def workload(overlay: str) -> dict:
    [deployment] = of_kind(overlay, "Deployment")
    return deployment


def proxy_container(overlay: str) -> dict:
    spec = workload(overlay)["spec"]["template"]["spec"]
    [c] = [c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == "proxy"]
    return c


def config_map(overlay: str, name: str) -> dict:
    [cm] = [cm for cm in of_kind(overlay, "ConfigMap") if cm["metadata"]["name"] == name]
    return cm.get("data", {})


def container_env(overlay: str, container: dict, secrets: dict, pod_name: str = "pod-0") -> dict:
    """The environment the kubelet gives `container`: envFrom ConfigMaps,
    then env entries (values, Secret keys from `secrets`, the pod's name)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_map(overlay, source["configMapRef"]["name"]))
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        ref = e["valueFrom"]
        if "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            if (key["name"], key["key"]) in secrets:
                env[e["name"]] = secrets[(key["name"], key["key"])]
            elif not key.get("optional"):
                raise KeyError(f"{e['name']}: Secret {key['name']} has no {key['key']}")
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod_name
        else:
            raise ValueError(f"unexpected valueFrom for {e['name']}: {ref}")
    return env


@cache
def binary_help() -> str:
    return subprocess.run([str(PROXY_BIN), "--help"], check=True, capture_output=True, text=True).stdout


def known_settings() -> set[str]:
    """Every environment variable the binary reads (clap's `[env: NAME]`)."""
    return set(re.findall(r"\[env: ([A-Z0-9_]+)", binary_help()))


def secret_settings() -> set[str]:
    """Settings whose values the binary hides in --help (`[env: NAME]`
    without `=`): passwords, keys, tokens."""
    return set(re.findall(r"\[env: ([A-Z0-9_]+)\]", binary_help()))


def binary_default(variable: str) -> str:
    """The default --help states for the setting read from `variable`."""
    for line in binary_help().splitlines():
        if f"[env: {variable}" in line:
            m = re.search(r"\[default: ([^\]]+)\]", line)
            if m:
                return m.group(1)
    raise KeyError(variable)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])
