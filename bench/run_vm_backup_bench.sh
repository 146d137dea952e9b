#!/usr/bin/env bash
# End-to-end VM backup benchmark (issue 4): builds Release, then runs
# bench/vm_backup_bench, which makes a qcow2 disk (40% zero, 30% random, 30%
# text-like, 4 MiB regions, fixed seed), starts QEMU and a real cairn-server
# on loopback with a fresh data directory, and times the real `cairn` client:
# full backup, incremental after 2% rewritten in 4 extents, incremental after
# 2% rewritten as scattered 64 KiB blocks, restore to a raw file (checked
# byte for byte against `qemu-img convert` of the disk). Prints wall time,
# MB/s of the disk size, client and server peak RSS, CPU seconds of client,
# server and QEMU per phase, and the targets. Removes everything it made.
#
#   bench/run_vm_backup_bench.sh                   # 2 GiB, all phases
#   bench/run_vm_backup_bench.sh --size-gib 8      # 8 GiB, full backup only
#   bench/run_vm_backup_bench.sh --size-gib 8 --phases all
#
# Environment: BUILD_DIR (default <repo>/build-bench), CAIRN_BENCH_DIR (where
# the image and the server's data directory go; default BUILD_DIR — a disk,
# not tmpfs: the server fsyncs). Needs qemu-system-x86_64 and qemu-img in
# PATH. A 2 GiB run needs ~5 GiB free there, an 8 GiB run ~18 GiB.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-bench}

# Warnings are enforced by CI's build; here an -O3-only false positive of the
# compiler must not stop a measurement.
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCAIRN_WERROR=OFF >/dev/null
ninja -C "$build" -j2 server/cairn-server client/cairn bench/vm_backup_bench

workdir=${CAIRN_BENCH_DIR:-$build}
mkdir -p "$workdir"
fstype=$(df --output=fstype "$workdir" | tail -1 | tr -d ' ')
if [ "$fstype" = tmpfs ]; then
  echo "warning: $workdir is tmpfs; set CAIRN_BENCH_DIR to a disk for meaningful fsync" >&2
fi
for tool in qemu-system-x86_64 qemu-img stdbuf; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found in PATH" >&2; exit 1; }
done

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
echo "== work dir: $workdir ($fstype, $(df -h --output=avail "$workdir" | tail -1 | tr -d ' ') free)"
echo "== $(qemu-system-x86_64 --version | head -1); commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"

"$build/bench/vm_backup_bench" --cairn="$build/client/cairn" \
  --server="$build/server/cairn-server" --work-dir="$workdir" "$@"
