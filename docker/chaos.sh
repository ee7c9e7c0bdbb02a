#!/usr/bin/env bash
# The Docker fault test: build the images, start the cluster, run synod-chaos, tear it down.
#
#   docker/chaos.sh [--duration SECS] [--seed N] [--replicas N] [--clients N]
#                   [--skip-build] [--keep] [-- more synod-chaos run flags]
#
# Exit status: 0 PASS; non-zero on any violation, a planned fault that could not be injected,
# an invalid run (too few operations), or a broken setup. When `docker info` fails it prints a
# SKIPPED line and exits 0, unless CI is set (then it fails: CI must run it).
# Reproduce a run: pass the seed it printed (`--seed N`); the fault plan and the clients'
# choices replay (timings and the cluster's own nondeterminism do not).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=60 seed="" replicas=5 clients=8 build=1 keep=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --skip-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "chaos.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if ! docker info >/dev/null 2>&1; then
  if [ -n "${CI:-}" ] && [ "${CI}" != "false" ]; then
    echo "chaos.sh: FAILED: docker is unavailable (docker info failed) and CI=$CI requires this test to run" >&2
    exit 1
  fi
  echo "################################################################################" >&2
  echo "## SKIPPED: docker is unavailable (docker info failed): the Docker fault test ##" >&2
  echo "## did NOT run. Under CI=true this is a failure.                              ##" >&2
  echo "################################################################################" >&2
  exit 0
fi
command -v docker-compose >/dev/null || { echo "chaos.sh: docker-compose is not installed" >&2; exit 1; }
seed=${seed:-$(( $(date +%s) % 1000000 ))}
echo "== chaos.sh: seed $seed, $duration s, $replicas replicas, $clients clients (reproduce: docker/chaos.sh --seed $seed --duration $duration --replicas $replicas)"

if [ "$build" = 1 ]; then
  docker/build.sh
fi
cargo build -q -p chaos --bin synod-chaos
chaos_bin="${CARGO_TARGET_DIR:-target}/debug/synod-chaos"

mkdir -p target/chaos
file=docker-compose.yaml
if [ "$replicas" != 5 ]; then
  file=target/chaos/compose-$replicas.yaml
  "$chaos_bin" compose --replicas "$replicas" > "$file"
fi
project=synodchaos
dc() { docker-compose -p "$project" --project-directory . -f "$file" "$@"; }
cleanup() {
  if [ "$keep" = 1 ]; then
    echo "chaos.sh: --keep: the cluster stays up (docker-compose -p $project --project-directory . -f $file down -v)"
    return
  fi
  dc down -v --remove-orphans -t 2 >/dev/null 2>&1 || true
  docker network rm "${project}_side" >/dev/null 2>&1 || true
}
trap cleanup EXIT
dc down -v --remove-orphans -t 2 >/dev/null 2>&1 || true
docker network rm "${project}_side" >/dev/null 2>&1 || true
dc up -d --no-build

set +e
timeout $((duration * 3 + 900)) "$chaos_bin" run --project "$project" --replicas "$replicas" --duration "$duration" \
  --seed "$seed" --clients "$clients" --out target/chaos "${extra[@]}"
rc=$?
set -e
if [ "$rc" != 0 ]; then
  logs=target/chaos/logs-$seed
  mkdir -p "$logs"
  for c in $(dc ps -q); do
    name=$(docker inspect -f '{{.Name}}' "$c" | tr -d /)
    docker logs "$c" > "$logs/$name.log" 2>&1 || true
  done
  echo "chaos.sh: FAILED (exit $rc); container logs in $logs, history in target/chaos/history-$seed.jsonl" >&2
fi
exit "$rc"
