#!/usr/bin/env bash
# Server load benchmark (issue 3): builds Release, starts a real cairn-server on
# an ephemeral loopback port with a fresh data directory, runs
# bench/server_load_bench against it (default: 4 clients x 1 GiB of random
# 4 MiB chunks, 3 TLS connections per client, one backup session each), then
# prints the server's peak RSS and how the numbers compare with the targets
# (>= 400 MB/s aggregate, server RSS <= 256 MiB). Removes the data directory.
#
#   bench/run_server_load.sh [server_load_bench flags, e.g. --connections=2]
#
# Environment: BUILD_DIR (default <repo>/build-bench), CAIRN_BENCH_DIR (where
# the temporary data directory goes; default BUILD_DIR — it must be on a
# disk, not tmpfs, or fsync means nothing), SERVER_ARGS (extra arguments for
# `cairn-server run`, e.g. "--threads 8").
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-bench}
server_args=${SERVER_ARGS:-}

# Warnings are enforced by CI's build; here an -O3-only false positive of the
# compiler must not stop a measurement.
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCAIRN_WERROR=OFF >/dev/null
ninja -C "$build" -j2 server/cairn-server bench/server_load_bench

workdir=${CAIRN_BENCH_DIR:-$build}
mkdir -p "$workdir"
fstype=$(df --output=fstype "$workdir" | tail -1 | tr -d ' ')
if [ "$fstype" = tmpfs ]; then
  echo "warning: $workdir is tmpfs; set CAIRN_BENCH_DIR to a disk for meaningful fsync" >&2
fi
data=$(mktemp -d "$workdir/server-load.XXXXXX")
log="$data/server.log"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "== data dir: $data ($fstype)"
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# shellcheck disable=SC2086  # SERVER_ARGS is a list of words
"$build/server/cairn-server" --data "$data/srv" run --listen 127.0.0.1:0 $server_args \
  >"$log" 2>&1 &
pid=$!
port=""
for _ in $(seq 300); do
  port=$(sed -n 's|.*listening on https://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$log" | head -1)
  [ -n "$port" ] && [ -s "$data/srv/admin.token" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "cairn-server exited at start:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "cairn-server did not start in 30 s:" >&2
  cat "$log" >&2
  exit 1
fi
token=$(head -1 "$data/srv/admin.token")
echo "== cairn-server pid $pid on port $port"

status=0
timeout 270 "$build/bench/server_load_bench" --port="$port" --token="$token" \
  --server-pid="$pid" "$@" | tee "$data/bench.out" || status=$?

# Peak RSS of the whole run, read before the server is stopped.
hwm_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
awk -v h="$hwm_kib" -v r="$rss_kib" \
  'BEGIN { printf "server peak RSS (VmHWM): %.0f MiB (current VmRSS %.0f MiB)\n", h / 1024, r / 1024 }'
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"

kill -TERM "$pid"
wait "$pid" || true
pid=""
if [ "$status" -ne 0 ]; then
  echo "benchmark FAILED (exit $status); server log tail:" >&2
  tail -20 "$log" >&2
  exit "$status"
fi

mbs=$(sed -n 's/^RESULT aggregate_mb_s=\([0-9.]*\).*/\1/p' "$data/bench.out")
awk -v mbs="$mbs" -v hwm="$hwm_kib" 'BEGIN {
  printf "targets: aggregate %.0f MB/s (>= 400: %s), server peak RSS %.0f MiB (<= 256: %s)\n",
    mbs, (mbs >= 400 ? "met" : "MISSED"), hwm / 1024, (hwm <= 256 * 1024 ? "met" : "MISSED")
}'
