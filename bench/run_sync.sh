#!/usr/bin/env bash
# Sync benchmark (issue 18): two real cairn-servers on this machine, A and B.
# A gets a backup of a mixed raw image (`cairn backup image`: 40% zero, 30%
# random, 30% text-like 4 MiB regions, fixed seed), B pulls it with a sync
# job (`cairn-server sync-job run`, through B's running server); then 2% of
# the image is rewritten (4 extents of random bytes), A gets the incremental
# backup and B pulls again. Prints, per step, wall time and MB/s of new
# chunk data (the plaintext bytes of the chunks that travelled: what the
# sync task's result calls data-bytes), the backup's own rate over the same
# chunk data and over the image, the ratio sync/backup, and the peak RSS of
# both servers. Everything is removed at the end.
#
#   bench/run_sync.sh                # 2048 MiB
#   MIB=512 bench/run_sync.sh
#
# Environment: BUILD_DIR (default <repo>/build-bench; Release, built here
# unless CAIRN_BENCH_NO_BUILD=1, then the binaries in BUILD_DIR are used as
# they are), CAIRN_BENCH_DIR (where the image and both data directories go;
# default BUILD_DIR — a disk, not tmpfs: the servers fsync), MIB (image size).
# Needs qemu-storage-daemon (for `cairn backup image`) and python3.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-bench}
mib=${MIB:-2048}

if [ "${CAIRN_BENCH_NO_BUILD:-0}" != 1 ]; then
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCAIRN_WERROR=OFF >/dev/null
  ninja -C "$build" -j2 server/cairn-server client/cairn
fi
server_bin=$build/server/cairn-server
client_bin=$build/client/cairn

base=${CAIRN_BENCH_DIR:-$build}
mkdir -p "$base"
work=$(mktemp -d "$base/cairn-sync-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

fstype=$(df --output=fstype "$work" | tail -1 | tr -d ' ')
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "== work dir: $work ($fstype); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'); build $build"

# The image: 4 MiB regions, 40% zero, 30% random, 30% text-like, shuffled.
python3 - "$work/disk.raw" "$mib" <<'PY'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(18)
regions = mib // 4
kinds = ['zero'] * (regions * 4 // 10) + ['random'] * (regions * 3 // 10)
kinds += ['text'] * (regions - len(kinds))
rng.shuffle(kinds)
words = [b'cairn', b'backup', b'INFO', b'WARN', b'chunk', b'sync', b'vm/100', b'2026-03-01',
         b'ok', b'digest', b'server', b'offsite', b'task', b'GET', b'POST', b'200']
pool = b''.join(b' '.join(rng.choice(words) for _ in range(12)) + b'\n' for _ in range(200000))
with open(path, 'wb') as f:
    for i, k in enumerate(kinds):
        if k == 'zero':
            f.seek(4 << 20, 1)
        elif k == 'random':
            f.write(os.urandom(4 << 20))
        else:
            start = rng.randrange(len(pool) - (4 << 20))
            f.write(pool[start:start + (4 << 20)])
    f.truncate(mib << 20)
PY

# Starts a server on data dir $1; sets port_$2 and fp_$2.
start_server() {
  local dir=$1 name=$2
  mkdir -p "$dir"
  "$server_bin" --data "$dir" run --listen 127.0.0.1:0 >"$dir.log" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
  for _ in $(seq 1 300); do
    grep -q 'certificate fingerprint' "$dir.log" 2>/dev/null && break
    sleep 0.1
  done
  eval "port_$name=$(sed -n 's|.*listening on https://127.0.0.1:\([0-9]*\)/.*|\1|p' "$dir.log")"
  eval "fp_$name=$(sed -n 's|^certificate fingerprint (SHA-256): ||p' "$dir.log")"
}
start_server "$work/a" a
start_server "$work/b" b
head -1 "$work/a/admin.token" >"$work/a.token"

# B pulls from A with a Reader token of A.
"$server_bin" --data "$work/a" user add offsite >/dev/null
"$server_bin" --data "$work/a" token create offsite!pull | head -1 >"$work/pull.token"
"$server_bin" --data "$work/a" acl set --store default --role Reader --auth offsite!pull >/dev/null
"$server_bin" --data "$work/b" remote add a --url "https://127.0.0.1:$port_a" \
  --fingerprint "$fp_a" --token-file "$work/pull.token" >/dev/null
"$server_bin" --data "$work/b" sync-job add pull --remote a --remote-store default \
  --store default --schedule daily --disabled >/dev/null

now_ms() { date +%s%3N; }
backup() {  # $1: backup time; prints the client's JSON summary
  "$client_bin" --output json --repo "https://127.0.0.1:$port_a/default" \
    --token-file "$work/a.token" --fingerprint "$fp_a" \
    backup image --id 1 --backup-time "$1" "$work/disk.raw" 2>>"$work/client.log"
}
sync_run() {  # prints the task JSON of one pull
  "$server_bin" --data "$work/b" sync-job run pull --output json 2>>"$work/sync.log"
}

report() {  # $1 label, $2 backup JSON, $3 backup ms, $4 sync JSON, $5 sync ms
  python3 - "$@" <<'PY'
import json, sys
label, bj, bms, sj, sms = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
r = sj['result']
data = r['data-bytes']
mb = lambda b, ms: b / 1e6 / (ms / 1000) if ms else 0
read = bj.get('bytes-read', 0)
print(f"{label}:")
print(f"  backup A  {bms:6d} ms  {bj.get('chunks-uploaded')} chunks uploaded, "
      f"{mb(data, bms):7.1f} MB/s of new chunk data, {mb(read, bms):7.1f} MB/s of image read")
print(f"  sync A->B {sms:6d} ms  {r['snapshots-copied']} snapshot(s), {r['chunks-fetched']} chunks fetched, "
      f"{data / 1e6:.1f} MB new chunk data, {r['bytes-fetched'] / 1e6:.1f} MB on the wire: "
      f"{mb(data, sms):7.1f} MB/s (task {r['duration-ms']} ms, transfer {r['mb-per-s']:.1f} MB/s)")
if bms and sms:
    print(f"  sync / backup (MB/s of new chunk data): {mb(data, sms) / mb(data, bms):.2f}")
PY
}

t0=$(now_ms); b1=$(backup 2026-03-01T00:00:00Z); t1=$(now_ms)
s0=$(now_ms); r1=$(sync_run); s1=$(now_ms)
report "full ($mib MiB image)" "$b1" $((t1 - t0)) "$r1" $((s1 - s0))

# 2% rewritten in 4 extents of random bytes.
python3 - "$work/disk.raw" "$mib" <<'PY'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(1802)
extent = (mib << 20) * 2 // 100 // 4
with open(path, 'r+b') as f:
    for _ in range(4):
        f.seek(rng.randrange((mib << 20) - extent) & ~4095)
        f.write(os.urandom(extent))
PY
t0=$(now_ms); b2=$(backup 2026-03-02T00:00:00Z); t1=$(now_ms)
s0=$(now_ms); r2=$(sync_run); s1=$(now_ms)
report "incremental (2% rewritten)" "$b2" $((t1 - t0)) "$r2" $((s1 - s0))

peak() { sed -n 's/^VmHWM:\s*//p' "/proc/$1/status"; }
echo "peak RSS: server A $(peak "$pid_a"), server B (runs the sync) $(peak "$pid_b")"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
