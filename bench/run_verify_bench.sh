#!/usr/bin/env bash
# Verify benchmark (issue 6): verification of a datastore holding a 2 GiB
# mixed image (40% zero, 30% random, 30% text-like, 4 MiB regions) in 3
# snapshots, with all cores. Prints MB/s of logical data (sum of the
# snapshots' image sizes / time) and peak RSS (VmHWM); targets >= 400 MB/s
# and <= 256 MiB. Results: bench/VERIFY.md.
#
#   bench/run_verify_bench.sh [--threads T] [--buffer-mib M] [--cold]
#
# The dataset is made once in VERIFY_BENCH_DIR (marker `.verify-bench`) and
# reused. --cold drops the page cache first (`echo 3 > drop_caches`: needs
# root and affects the whole machine) so every chunk is read from the disk;
# without it the chunks are (mostly) in the page cache after the first run.
#
# Environment: BUILD_DIR (default <repo>/build-verify-bench), VERIFY_BENCH_DIR
# (default /work/verify-bench-data; a real disk, not tmpfs, for --cold to mean
# anything).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-verify-bench}
data=${VERIFY_BENCH_DIR:-/work/verify-bench-data}
run_flags=()
cold=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) run_flags+=(--threads "$2"); shift 2 ;;
    --buffer-mib) run_flags+=(--buffer-mib "$2"); shift 2 ;;
    --cold) cold=1; shift ;;
    *) echo "usage: $0 [--threads T] [--buffer-mib M] [--cold]" >&2; exit 2 ;;
  esac
done

cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" -j2 verify_bench
bench="$build/bench/verify_bench"

mkdir -p "$(dirname "$data")"
fstype=$(df --output=fstype "$(dirname "$data")" | tail -1 | tr -d ' ')
echo "== machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB RAM; dataset $data ($fstype)"
if [ "$fstype" = tmpfs ]; then
  echo "warning: $data is on tmpfs; --cold will not mean anything" >&2
fi

if [ ! -f "$data/.verify-bench" ]; then
  echo "== generating the dataset (once)"
  rm -rf "$data"
  "$bench" generate "$data"
  sync
  touch "$data/.verify-bench"
fi
echo "== dataset: $(du -sh "$data/.chunks" | cut -f1) of chunks"

if [ "$cold" = 1 ]; then
  sync
  if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
    echo "== dropped the page cache (cold run)"
  else
    echo "error: could not drop the page cache (not root?)" >&2
    exit 1
  fi
fi
echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" run "$data" "${run_flags[@]}"
