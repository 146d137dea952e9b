#!/usr/bin/env bash
# GC benchmark (issue 5): garbage collection of a datastore with 1,000,000
# small chunks of which 10% are garbage. Prints mark, sweep and total time and
# peak RSS; targets ≤ 60 s total and ≤ 128 MiB. Results: bench/GC.md.
#
#   bench/run_gc_bench.sh [--threads T] [--cold]
#
# The dataset takes minutes to make (a million file creates), so it is made
# once in GC_BENCH_DIR and reused: a complete one (marker `.gc-bench`) only
# gets back the garbage chunks an earlier run removed. --cold drops the
# kernel's dentry and inode caches first (needs root; affects the whole
# machine) to measure a GC that reads the folders and inodes from disk.
#
# Environment: BUILD_DIR (default <repo>/build-gc-bench), GC_BENCH_DIR (default
# /work/gc-bench-data; must be on a real disk, not tmpfs: the point is
# filesystem metadata cost). The build is RelWithDebInfo (-O2): the GC waits
# for the filesystem, and -O3 makes no difference to it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-gc-bench}
data=${GC_BENCH_DIR:-/work/gc-bench-data}
run_flags=()
cold=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) run_flags+=(--threads "$2"); shift 2 ;;
    --cold) cold=1; shift ;;
    *) echo "usage: $0 [--threads T] [--cold]" >&2; exit 2 ;;
  esac
done

cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" -j2 gc_bench
bench="$build/bench/gc_bench"

mkdir -p "$(dirname "$data")"
fstype=$(df --output=fstype "$(dirname "$data")" | tail -1 | tr -d ' ')
echo "== machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB RAM; dataset $data ($fstype)"
if [ "$fstype" = tmpfs ]; then
  echo "warning: $data is on tmpfs; the numbers will not mean anything" >&2
fi
grep -q " / .*discard" /proc/mounts && echo "== note: / is mounted with discard (each unlink waits for a discard)"

if [ -f "$data/.gc-bench" ]; then
  echo "== dataset exists; putting back the garbage an earlier run removed"
  "$bench" restore "$data"
else
  echo "== generating the dataset (once; a few minutes)"
  rm -rf "$data"
  "$bench" generate "$data"
fi

if [ "$cold" = 1 ]; then
  sync
  echo 2 > /proc/sys/vm/drop_caches
  echo "== dropped dentry and inode caches"
fi
echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" run "$data" "${run_flags[@]}"
