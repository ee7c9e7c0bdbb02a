#!/usr/bin/env bash
# Build Synod's Docker images from host binaries, with no registry access:
#   synod:latest       FROM scratch + the static `synod` binary
#   synod-etcd:latest  FROM scratch + Debian's /usr/bin/etcd + libc + the loader + synod-probe
#
#   docker/build.sh            (CARGO_TARGET_DIR_STATIC picks the static build's target dir,
#                               default target/static; it differs from the normal one because
#                               RUSTFLAGS differ)
set -euo pipefail
cd "$(dirname "$0")/.."
export DOCKER_BUILDKIT=0
triple=x86_64-unknown-linux-gnu
static_dir=${CARGO_TARGET_DIR_STATIC:-target/static}
etcd_bin=${ETCD_BIN:-/usr/bin/etcd}

command -v docker >/dev/null || { echo "build.sh: docker is not installed" >&2; exit 1; }
[ -x "$etcd_bin" ] || { echo "build.sh: $etcd_bin missing (apt-get install etcd-server)" >&2; exit 1; }

echo "== static binaries ($static_dir) =="
CARGO_TARGET_DIR="$static_dir" RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --target "$triple" -p driver --bin synod -p synod-probe --bin synod-probe
bin="$static_dir/$triple/release"
for b in synod synod-probe; do
  # A static binary has no interpreter; a dynamic one would not start in a scratch image.
  if file -L "$bin/$b" 2>/dev/null | grep -q 'dynamically linked'; then
    echo "build.sh: $bin/$b is dynamically linked" >&2; exit 1
  fi
done

stage=target/docker-stage
rm -rf "$stage" && mkdir -p "$stage/synod" "$stage/etcd"
cp docker/synod.Dockerfile "$stage/synod/Dockerfile"
cp "$bin/synod" "$stage/synod/synod"
# The release profile keeps line tables for profiling; the image does not need them.
if command -v strip >/dev/null; then strip --strip-debug "$stage/synod/synod"; fi
cp docker/etcd.Dockerfile "$stage/etcd/Dockerfile"
cp "$bin/synod-probe" "$stage/etcd/synod-probe"
if command -v strip >/dev/null; then strip --strip-debug "$stage/etcd/synod-probe"; fi
cp "$etcd_bin" "$stage/etcd/etcd"
# etcd links exactly these two (ldd /usr/bin/etcd); copy the files the symlinks point to.
libs=$(ldd "$etcd_bin" | awk '/=>/ {print $3} !/=>/ && /^[ \t]*\// {print $1}')
for want in libc.so.6 ld-linux-x86-64.so.2; do
  path=$(echo "$libs" | grep "/$want\$" | head -1)
  [ -n "$path" ] || { echo "build.sh: $etcd_bin does not link $want as expected" >&2; exit 1; }
  cp -L "$path" "$stage/etcd/$want"
done
extra=$(echo "$libs" | grep -v -e '/libc.so.6$' -e '/ld-linux-x86-64.so.2$' || true)
[ -z "$extra" ] || { echo "build.sh: etcd links more libraries than the image holds: $extra" >&2; exit 1; }

echo "== images =="
# The legacy builder prints a deprecation notice on newer clients; keep the output to the ids.
quiet() { grep -v -e DEPRECATED -e BuildKit -e 'environment-variable' -e '^$' || true; }
docker build -q -t synod:latest "$stage/synod" 2>&1 | quiet
docker build -q -t synod-etcd:latest "$stage/etcd" 2>&1 | quiet
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^synod(-etcd)?:latest'
