#!/usr/bin/env bash
# Reachability under a connection flood (issue 17): builds Release and runs
# the integration test ServerReachabilityTest against the real cairn-server
# and the real `cairn` client: a backup (qemu-storage-daemon, `cairn backup
# image`) and a restore of a mixed image, once on an idle server and once
# while 200 TLS connections from the same address hold a partial request head
# and 50 more sit in the TLS handshake. Prints MB/s of both runs, how many
# held connections the server closed on timeout, and the server's peak RSS.
#
#   bench/run_gate_load.sh            # 1024 MiB image
#   MIB=256 bench/run_gate_load.sh
#
# Environment: BUILD_DIR (default <repo>/build-bench), MIB (image size).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-bench}
mib=${MIB:-1024}

cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCAIRN_WERROR=OFF >/dev/null
ninja -C "$build" -j2 server/cairn-server client/cairn tests/integration_server_reachability_test

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== image: $mib MiB (40% zero, 30% random, 30% text in 4 MiB regions)"
CAIRN_BINARY_DIR="$build" CAIRN_REACH_MIB="$mib" \
  "$build/tests/integration_server_reachability_test" 2>&1 |
  grep -E '^(backup|restore|flood|server peak)|FAILED|Failure' || true
