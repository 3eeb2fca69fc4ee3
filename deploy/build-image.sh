#!/usr/bin/env bash
# Builds the kafka-lfs-proxy runtime image from the release binary with
# buildah, FROM scratch: no base image is pulled, so it works offline. The
# image is the one deploy/Containerfile describes: the binary, the shared
# libraries `ldd` lists for it, CA certificates, /etc/passwd and /etc/group
# with the non-root user 65532 ("nonroot"), writable /tmp and
# /var/lib/kafka-lfs-proxy, entrypoint the binary, STOPSIGNAL SIGTERM, OCI labels.
#
#   bash deploy/build-image.sh [BINARY] [IMAGE]
#
# BINARY defaults to target/release/kafka-lfs-proxy (built when missing),
# IMAGE to localhost/kafka-lfs-proxy:VERSION. buildah's storage is kept
# inside the clone (target/containers, vfs driver) unless BUILDAH_ROOT is
# set; `buildah --root ... push` sends the image to a registry, or
# `buildah --root ... push IMAGE oci-archive:kafka-lfs-proxy.tar` writes an
# archive `docker load`/`ctr import`/`kind load image-archive` can take.
# Prints the image id on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
BINARY=${1:-target/release/kafka-lfs-proxy}
IMAGE=${2:-localhost/kafka-lfs-proxy:$VERSION}
SOURCE_URL=${SOURCE_URL:-$(git remote get-url origin 2>/dev/null || echo unknown)}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
ROOT=${BUILDAH_ROOT:-$PWD/target/containers}
UID_NONROOT=65532

command -v buildah >/dev/null || { echo "buildah is not installed (Debian: apt-get install buildah)" >&2; exit 1; }
if [ ! -x "$BINARY" ]; then
  cargo build --release --locked --bin kafka-lfs-proxy >&2
fi

bah() { buildah --root "$ROOT/storage" --runroot "$ROOT/run" --storage-driver vfs "$@"; }

ctr=$(bah from --quiet scratch)
trap 'bah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(bah mount "$ctr")

install -D -m 0755 "$BINARY" "$mnt/usr/local/bin/kafka-lfs-proxy"
# The release profile keeps line tables for profiling; the image needs only
# the symbols (function names in backtraces): 140 MB → 25 MB.
if command -v strip >/dev/null; then strip --strip-debug "$mnt/usr/local/bin/kafka-lfs-proxy"; fi
# Every shared library the binary loads, at the path the loader looks for it.
for lib in $(ldd "$BINARY" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  install -D -m 0755 "$(readlink -f "$lib")" "$mnt$lib"
done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/ca-certificates.crt"
install -D -m 0644 LICENSE "$mnt/usr/share/doc/kafka-lfs-proxy/LICENSE"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
  "$UID_NONROOT" "$UID_NONROOT" > "$mnt/etc/passwd"
printf 'root:x:0:\nnonroot:x:%s:\n' "$UID_NONROOT" > "$mnt/etc/group"
printf 'hosts: files dns\n' > "$mnt/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$mnt/etc/hosts"
install -d -m 1777 "$mnt/tmp"
# Mount points the runtime fills in.
install -d -m 0755 "$mnt/proc" "$mnt/sys" "$mnt/dev"
install -d -m 0750 -o "$UID_NONROOT" -g "$UID_NONROOT" "$mnt/var/lib/kafka-lfs-proxy" "$mnt/home/nonroot"
bah unmount "$ctr" >/dev/null

bah config \
  --entrypoint '["/usr/local/bin/kafka-lfs-proxy"]' \
  --user "$UID_NONROOT:$UID_NONROOT" --workingdir /home/nonroot \
  --env KAFSCALE_LFS_PROXY_STORAGE_DIR=/var/lib/kafka-lfs-proxy \
  --env KAFSCALE_LFS_PROXY_DOWNLOAD_TEMP_DIR=/tmp \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --port 9092/tcp --port 9093/tcp --port 9094/tcp --port 9095/tcp --port 9096/tcp --port 9097/tcp --port 9098/tcp --port 8080/tcp \
  --stop-signal SIGTERM \
  --label org.opencontainers.image.title=kafka-lfs-proxy \
  --label "org.opencontainers.image.description=Kafka wire-protocol proxy with large-file (claim-check) offload to object storage" \
  --label "org.opencontainers.image.source=$SOURCE_URL" \
  --label "org.opencontainers.image.revision=$REVISION" \
  --label "org.opencontainers.image.version=$VERSION" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$ctr"
bah commit --quiet --rm "$ctr" "$IMAGE"
trap - EXIT
