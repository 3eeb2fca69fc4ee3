#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer) of everything that parses
# bytes from outside. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# (default 30 s each, every target). Seeds come from protocol-fixtures/
# (fuzz/seed.py); a crash stops the run, leaves its input in
# fuzz/artifacts/<target>/ and fails. Prints executions and coverage per
# target, and writes them to target/fuzz-summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(frame_reader produce_rewrite fetch_relay fetch_rehydrate record_policy broker_responses sasl_server http_api)
fi

# cargo-fuzz lives in the clone (.tools/), like every other test tool.
export PATH="$PWD/.tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "--- installing cargo-fuzz into .tools/"
  cargo install cargo-fuzz --version 0.13.2 --locked --root .tools
fi
# libFuzzer's instrumentation flags are unstable options; the stable
# toolchain accepts them with RUSTC_BOOTSTRAP (no nightly can be fetched here).
export RUSTC_BOOTSTRAP=1
(cd fuzz && cargo fuzz build -O -s none 2>&1 | tail -1)
python3 fuzz/seed.py
mkdir -p target
summary=target/fuzz-summary.txt
: > "$summary"
for t in "${targets[@]}"; do
  log="target/fuzz-$t.log"
  echo "--- fuzz $t for ${seconds}s"
  if ! (cd fuzz && cargo fuzz run -O -s none "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -max_len=262144 -print_final_stats=1) >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t failed: see $log and fuzz/artifacts/$t/"
    exit 1
  fi
  runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
  cov=$(grep -E 'DONE +cov:' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*ft: ([0-9]+).*corp: ([0-9]+).*/cov \1, features \2, corpus \3/' || true)
  echo "$t: ${seconds}s, $runs executions, $cov" | tee -a "$summary"
done
