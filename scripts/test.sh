#!/usr/bin/env bash
# The whole test suite: format and lint, unit and Rust end-to-end tests
# (librdkafka mock cluster), then the client e2e suite against tansu.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-test-env.sh

echo "--- cargo fmt / clippy / layering"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
python3 scripts/module-graph.py --check
# No source file over about 500 lines (tests may live beside, in *_tests.rs).
too_long=$(find src -name '*.rs' ! -name '*_tests.rs' -exec wc -l {} + | awk '$2 != "total" && $1 > 520 {print $2 " (" $1 " lines)"}')
if [ -n "$too_long" ]; then
  echo "files over 520 lines: $too_long"
  exit 1
fi

echo "--- cargo build"
cargo build --all-targets --locked

echo "--- cargo test"
cargo test --locked

echo "--- fuzz smoke (each target briefly; the long runs are in the README)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

echo "--- e2e (tansu + real clients)"
# Each test is bounded (a hang fails that test, not the whole run), and the
# slowest are listed so the suite stays under its time budget.
.venv/bin/python -m pytest tests/e2e -p no:warnings -p no:cacheprovider -v --timeout=600 --durations=25
