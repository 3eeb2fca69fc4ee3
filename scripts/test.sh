#!/usr/bin/env bash
# The whole test suite: format and lint, unit and Rust end-to-end tests
# (librdkafka mock cluster), then the client e2e suite against tansu.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-test-env.sh

echo "--- cargo fmt / clippy"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

echo "--- cargo build"
cargo build --all-targets --locked

echo "--- cargo test"
cargo test --locked

echo "--- e2e (tansu + real clients)"
.venv/bin/python -m pytest tests/e2e -p no:warnings -p no:cacheprovider -q
