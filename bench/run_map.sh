#!/bin/bash
# `cairn map` benchmark (issue 13): a mixed raw image (4 MiB regions, 40%
# zero, 30% random, 30% text-like, as bench/run_sync.sh) backed up to a real
# cairn-server on loopback, then
#   - time from starting `cairn map` to the first 4 KiB read (qemu-io),
#   - random 4 KiB read latency, cold (50 distinct chunks) and cached (again),
#     as qemu-io reports per request,
#   - sequential read through the export (`nbdcopy URI null:`) vs
#     `cairn restore` of the same archive to a file,
#   - live restore (VM on a qcow2 overlay over the export, `cairn restore
#     --live`) vs the plain restore.
# Usage: bench/run_map.sh [MiB (2048)] [BUILD_DIR (build)]; CAIRN_SERVER
# overrides the server binary. Needs qemu-storage-daemon, qemu-img, qemu-io,
# qemu-system-x86_64, nbdcopy, python3.
set -euo pipefail
mib=${1:-2048}
build=${2:-build}
CAIRN=$build/client/cairn
SERVER=${CAIRN_SERVER:-$build/server/cairn-server}
work=$(mktemp -d "${CAIRN_BENCH_DIR:-/tmp}/cairn-map-bench-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { python3 -c "print('%.3f' % ($2 - $1))"; }

echo "== machine: $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg); image $mib MiB"
python3 - "$work/disk.raw" "$mib" <<'PY'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(18)
regions = mib // 4
kinds = ['zero'] * (regions * 4 // 10) + ['random'] * (regions * 3 // 10)
kinds += ['text'] * (regions - len(kinds))
rng.shuffle(kinds)
words = [b'cairn', b'backup', b'INFO', b'WARN', b'chunk', b'sync', b'vm/100', b'2026-03-01']
pool = b''.join(b' '.join(rng.choice(words) for _ in range(12)) + b'\n' for _ in range(200000))
with open(path, 'wb') as f:
    for k in kinds:
        if k == 'zero':
            f.seek(4 << 20, 1)
        elif k == 'random':
            f.write(os.urandom(4 << 20))
        else:
            start = rng.randrange(len(pool) - (4 << 20))
            f.write(pool[start:start + (4 << 20)])
    f.truncate(mib << 20)
with open(path + '.kinds', 'w') as f:
    f.write(' '.join(kinds))
PY

"$SERVER" --data "$work/data" run --listen 127.0.0.1:0 >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do grep -q 'fingerprint (SHA-256)' "$work/server.log" 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's|.*listening on https://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$work/server.log" | head -1)
export CAIRN_REPO=https://127.0.0.1:$port/default
export CAIRN_FINGERPRINT
CAIRN_FINGERPRINT=$(sed -n 's|.*fingerprint (SHA-256): \([0-9A-F:]\{95\}\).*|\1|p' "$work/server.log" | head -1)
export CAIRN_TOKEN
CAIRN_TOKEN=$(tr -d '\n' <"$work/data/admin.token")
"$CAIRN" backup image --id 300 --backup-time 2026-01-01T00:00:00Z "$work/disk.raw" >/dev/null
snap=vm/300/2026-01-01T00:00:00Z
archive=disk.raw.fidx
sock=$work/map.sock
uri="nbd+unix:///?socket=$sock"

start_map() {
  rm -f "$sock"
  "$CAIRN" map "$snap" "$archive" --socket "$sock" >"$work/map.log" 2>&1 &
  map_pid=$!
  pids+=("$map_pid")
}
stop_map() { kill -INT "$map_pid"; wait "$map_pid" || true; }

# Plain restore.
sync
t0=$(now)
"$CAIRN" restore "$snap" "$archive" "$work/restored.raw" >/dev/null
t1=$(now)
restore_s=$(secs "$t0" "$t1")
cmp "$work/disk.raw" "$work/restored.raw"
rm -f "$work/restored.raw"
echo "plain restore: $restore_s s ($(python3 -c "print('%.0f' % ($mib * 1.048576 / $restore_s))") MB/s)"

# First read.
t0=$(now)
start_map
until [ -S "$sock" ]; do sleep 0.005; done
qemu-io -r -f raw -c 'read 0 4k' "$uri" >/dev/null
t1=$(now)
echo "cairn map start to first 4 KiB read: $(secs "$t0" "$t1") s (qemu-io start included)"

# Random 4 KiB reads in 50 distinct non-zero regions, cold then cached.
offsets=$(python3 - "$work/disk.raw.kinds" <<'PY'
import random, sys
kinds = open(sys.argv[1]).read().split()
idx = [i for i, k in enumerate(kinds) if k != 'zero' and i > 0]
random.Random(7).shuffle(idx)
print(' '.join(str(i * (4 << 20) + random.Random(i).randrange(1024) * 4096) for i in idx[:50]))
PY
)
args=()
for o in $offsets; do args+=(-c "read $o 4k"); done
lat() {  # median and mean of qemu-io's per-request times (1 / its ops/sec), in ms
  qemu-io -r -f raw "${args[@]}" "$uri" | python3 -c '
import re, statistics, sys
t = [1000 / float(m) for m in re.findall(r"and ([0-9.]+) ops/sec", sys.stdin.read())]
print("median %.2f ms, mean %.2f ms over %d reads" % (statistics.median(t), statistics.mean(t), len(t)))'
}
echo "random 4 KiB, cold:   $(lat)"
echo "random 4 KiB, cached: $(lat)"
stop_map

# Sequential read through a fresh export.
start_map
until [ -S "$sock" ]; do sleep 0.005; done
t0=$(now)
nbdcopy "$uri" null:
t1=$(now)
seq_s=$(secs "$t0" "$t1")
echo "sequential nbdcopy to null: $seq_s s ($(python3 -c "print('%.0f' % ($mib * 1.048576 / $seq_s))") MB/s; $(python3 -c "print('%.0f' % (100 * $restore_s / $seq_s))")% of restore)"

# Live restore: a VM on an overlay over the export, mirrored to live.raw.
qemu-img create -q -f qcow2 -b "$uri" -F raw "$work/overlay.qcow2"
qemu-system-x86_64 -machine none -nodefaults -display none \
  -qmp "unix:$work/qmp.sock,server=on,wait=off" \
  -blockdev "driver=qcow2,node-name=d0,file.driver=file,file.filename=$work/overlay.qcow2" \
  >"$work/qemu.log" 2>&1 &
pids+=($!)
until [ -S "$work/qmp.sock" ]; do sleep 0.05; done
sync
t0=$(now)
"$CAIRN" restore "$snap" "$archive" "$work/live.raw" --live --qmp "$work/qmp.sock" >/dev/null
t1=$(now)
live_s=$(secs "$t0" "$t1")
cmp "$work/disk.raw" "$work/live.raw"
echo "live restore: $live_s s ($(python3 -c "print('%.2f' % ($live_s / $restore_s))")x plain restore)"
stop_map
