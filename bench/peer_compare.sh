#!/usr/bin/env bash
# Cairn next to borg and restic (issue 11): the same image, the same changes,
# interleaved rounds, medians.
#
# The image: MIB MiB (default 2048), 40% zero, 30% random, 30% log-like text
# in 4 MiB regions (the generator of bench/run_sync.sh). Phases, each timed
# for every tool:
#   full       first backup into a fresh repository
#   unchanged  second backup, nothing changed
#   extents    backup after 2% of the image was rewritten in 4 extents
#   scattered  backup after a further 2% rewritten as scattered 64 KiB blocks
#   restore    restore of the last backup to a file, then `sync`: until the
#              image is on disk (Cairn's restore fsyncs it itself; borg 1.2
#              and restic 0.14 leave it in the page cache — strace shows no
#              fsync of the file). sha256 checked against the image; a
#              mismatch stops the script
#   check      read back and check all data (cairn verify SNAPSHOT, borg
#              check --verify-data, restic check --read-data)
# Tools:
#   cairn   `cairn backup image` of a qcow2 copy (its persistent bitmap makes
#           the later backups incremental; the changes are written into the
#           qcow2 with qemu-io, byte for byte the same as into the raw file
#           the peers read), a real cairn-server on loopback TLS
#   borg    1.2, `--chunker-params fixed,4194304`, default lz4, local repo
#   restic  0.14, local repo (repository version 2, default compression)
# borg and restic are installed from Debian with apt-get when missing.
#
# Every command runs under /usr/bin/time: wall, user and system CPU, minor
# page faults and peak RSS of the client process (cairn: with its
# qemu-storage-daemon child, which it waits for); for Cairn also the
# server's CPU seconds during the command (from /proc/PID/stat).
#
#   bench/peer_compare.sh                  # 2 GiB, 3 rounds
#   ROUNDS=1 MIB=256 bench/peer_compare.sh # quick
#
# Environment: BUILD_DIR (default <repo>/build-bench; CAIRN_BENCH_NO_BUILD=1
# uses the binaries there as they are), CAIRN_BIN_DIR (take cairn and
# cairn-server from <dir>/client and <dir>/server instead, no build),
# CAIRN_BENCH_DIR (work dir, a disk not tmpfs; default BUILD_DIR), ROUNDS (3),
# MIB (2048), TOOLS ("cairn borg restic"), CAIRN_SERVER_ARGS (extra
# arguments for `cairn-server datastore create default`, e.g. "--sync-level
# filesystem"; empty = the default), PERF_DIR (after the rounds, one more
# Cairn full backup into a fresh store, untimed, under `perf record -g` for
# the client with its qemu-storage-daemon and for the server; the profiles
# and their summaries go to PERF_DIR).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-bench}
mib=${MIB:-2048}
rounds=${ROUNDS:-3}
tools=${TOOLS:-cairn borg restic}

if [ -n "${CAIRN_BIN_DIR:-}" ]; then
  bindir=$CAIRN_BIN_DIR
elif [ "${CAIRN_BENCH_NO_BUILD:-0}" != 1 ]; then
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCAIRN_WERROR=OFF \
    -DCAIRN_BUILD_BENCH=OFF >/dev/null
  nice ninja -C "$build" -j2 server/cairn-server client/cairn
  bindir=$build
else
  bindir=$build
fi
server_bin=$bindir/server/cairn-server
client_bin=$bindir/client/cairn

for t in $tools; do
  case $t in
    borg) command -v borg >/dev/null || apt-get install -y borgbackup >/dev/null ;;
    restic) command -v restic >/dev/null || apt-get install -y restic >/dev/null ;;
    cairn) ;;
    *) echo "unknown tool $t" >&2; exit 2 ;;
  esac
done
for t in qemu-img qemu-io /usr/bin/time python3 sha256sum; do
  command -v "$t" >/dev/null || { echo "error: $t not found" >&2; exit 1; }
done

base=${CAIRN_BENCH_DIR:-$build}
mkdir -p "$base"
work=$(mktemp -d "$base/cairn-peer-bench.XXXXXX")
server_pid=
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT

fstype=$(df --output=fstype "$work" | tail -1 | tr -d ' ')
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "== work dir: $work ($fstype); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== cairn $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') from $bindir; $(borg --version 2>/dev/null || true); $(restic version 2>/dev/null | cut -d' ' -f1-2 || true)"
echo "== image: $mib MiB, 40% zero, 30% random, 30% text in 4 MiB regions; $rounds round(s)"

# --- the image, its two changes, and the three states' digests ---
python3 - "$work" "$mib" <<'PY'
import os, random, sys
work, mib = sys.argv[1], int(sys.argv[2])
size = mib << 20
rng = random.Random(18)
regions = mib // 4
kinds = ['zero'] * (regions * 4 // 10) + ['random'] * (regions * 3 // 10)
kinds += ['text'] * (regions - len(kinds))
rng.shuffle(kinds)
words = [b'cairn', b'backup', b'INFO', b'WARN', b'chunk', b'sync', b'vm/100', b'2026-03-01',
         b'ok', b'digest', b'server', b'offsite', b'task', b'GET', b'POST', b'200']
pool = b''.join(b' '.join(rng.choice(words) for _ in range(12)) + b'\n' for _ in range(200000))
with open(f'{work}/state0.raw', 'wb') as f:
    for k in kinds:
        if k == 'zero':
            f.seek(4 << 20, 1)
        elif k == 'random':
            f.write(os.urandom(4 << 20))
        else:
            start = rng.randrange(len(pool) - (4 << 20))
            f.write(pool[start:start + (4 << 20)])
    f.truncate(size)
# Changes: (offset, length) lists; the data goes to pattern files that
# qemu-io reads (write -s FILE) and that are applied to the raw copies.
os.mkdir(f'{work}/pat')
def change(name, writes):
    cmds = []
    for i, (off, n) in enumerate(writes):
        p = f'{work}/pat/{name}-{i}'
        with open(p, 'wb') as f:
            f.write(os.urandom(n))
        cmds.append(f'write -q -s {p} {off} {n}')
    with open(f'{work}/{name}.qemu-io', 'w') as f:
        f.write('\n'.join(cmds) + '\n')
    with open(f'{work}/{name}.list', 'w') as f:
        f.write(''.join(f'{off} {n} {work}/pat/{name}-{i}\n' for i, (off, n) in enumerate(writes)))
extent = (size * 2 // 100 // 4) & ~65535
change('extents', [(rng.randrange(size - extent) & ~65535, extent) for _ in range(4)])
blocks = size * 2 // 100 // 65536
offs = sorted(rng.sample(range(size // 65536), blocks))
change('scattered', [(o * 65536, 65536) for o in offs])
PY
apply_raw() {  # $1 list, $2 raw file
  python3 - "$1" "$2" <<'PY'
import sys
with open(sys.argv[2], 'r+b') as f:
    for line in open(sys.argv[1]):
        off, n, p = line.split()
        f.seek(int(off)); f.write(open(p, 'rb').read(int(n)))
PY
}
cp --sparse=always "$work/state0.raw" "$work/state1.raw"
apply_raw "$work/extents.list" "$work/state1.raw"
cp --sparse=always "$work/state1.raw" "$work/state2.raw"
apply_raw "$work/scattered.list" "$work/state2.raw"
digest2=$(sha256sum "$work/state2.raw" | cut -d' ' -f1)
echo "== final image sha256 $digest2"

# --- the server (cairn) ---
# Each Cairn round gets a fresh server and datastore ($1: its data folder),
# as borg and restic get a fresh repository: a full backup into a store that
# already holds the chunks writes nothing and would flatter Cairn.
start_server() {
  local data=$1
  stop_server
  mkdir -p "$data"
  if [ -n "${CAIRN_SERVER_ARGS:-}" ]; then
    # Otherwise the server creates the store `default` on its first start.
    "$server_bin" --data "$data" datastore create default "$data/store" $CAIRN_SERVER_ARGS >/dev/null
  fi
  "$server_bin" --data "$data" run --listen 127.0.0.1:0 >"$data.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    grep -q 'certificate fingerprint' "$data.log" 2>/dev/null && break
    sleep 0.1
  done
  port=$(sed -n 's|.*listening on https://127.0.0.1:\([0-9]*\)/.*|\1|p' "$data.log")
  fp=$(sed -n 's|^certificate fingerprint (SHA-256): ||p' "$data.log")
  head -1 "$data/admin.token" >"$work/token"
}
stop_server() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  server_pid=
}
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$work/restic-cache BORG_BASE_DIR=$work/borg-base

results=$work/results.tsv
: >"$results"
# timed TOOL PHASE ROUND CMD...: runs CMD under /usr/bin/time, appends a line.
timed() {
  local tool=$1 phase=$2 round=$3
  shift 3
  local load server_before
  load=$(cut -d' ' -f1 /proc/loadavg)
  server_before=$(server_cpu)
  if ! /usr/bin/time -o "$work/time.out" -f '%e %U %S %R %M' "$@" >"$work/cmd.out" 2>&1; then
    echo "FAILED: $tool $phase round $round: $*" >&2
    tail -20 "$work/cmd.out" >&2
    exit 1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$phase" "$round" "$(tail -1 "$work/time.out")" "$load" \
    "$(python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$server_before" "$(server_cpu)")" \
    >>"$results"
}
# server_cpu: the cairn server's user + system CPU seconds so far (0 when
# none runs: borg and restic have no server).
server_cpu() {
  if [ -n "$server_pid" ] && [ -r "/proc/$server_pid/stat" ]; then
    python3 - "$server_pid" <<'PY'
import os, sys
f = open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')', 1)[1].split()
print((int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'))
PY
  else
    echo 0
  fi
}
# A restore is timed until its data is on disk: "CMD && sync" (sh -c).
then_sync='"$@" && sync'
check_digest() {  # $1 tool, $2 restored file
  local d
  d=$(sha256sum "$2" | cut -d' ' -f1)
  if [ "$d" != "$digest2" ]; then
    echo "FAILED: $1 restored an image with sha256 $d, expected $digest2" >&2
    exit 1
  fi
  rm -f "$2"
}

run_cairn() {  # $1 round
  local r=$1 d=$work/cairn-$1 id=$((100 + $1)) snap
  mkdir -p "$d"
  start_server "$work/srv-$r"
  qemu-img convert -f raw -O qcow2 "$work/state0.raw" "$d/disk.qcow2"
  sync
  timed cairn full "$r" "$client_bin" --repo "https://127.0.0.1:$port/default" --token-file "$work/token" \
    --fingerprint "$fp" backup image --id "$id" --backup-time "2026-01-01T00:00:0${r}Z" "$d/disk.qcow2"
  timed cairn unchanged "$r" "$client_bin" --repo "https://127.0.0.1:$port/default" --token-file "$work/token" \
    --fingerprint "$fp" backup image --id "$id" --backup-time "2026-01-01T01:00:0${r}Z" "$d/disk.qcow2"
  qemu-io -f qcow2 "$d/disk.qcow2" <"$work/extents.qemu-io" >/dev/null
  sync
  timed cairn extents "$r" "$client_bin" --repo "https://127.0.0.1:$port/default" --token-file "$work/token" \
    --fingerprint "$fp" backup image --id "$id" --backup-time "2026-01-01T02:00:0${r}Z" "$d/disk.qcow2"
  grep -q 'incremental' "$work/cmd.out" || echo "warning: cairn extents backup was not incremental" >&2
  qemu-io -f qcow2 "$d/disk.qcow2" <"$work/scattered.qemu-io" >/dev/null
  sync
  timed cairn scattered "$r" "$client_bin" --repo "https://127.0.0.1:$port/default" --token-file "$work/token" \
    --fingerprint "$fp" backup image --id "$id" --backup-time "2026-01-01T03:00:0${r}Z" "$d/disk.qcow2"
  snap="vm/$id/2026-01-01T03:00:0${r}Z"
  timed cairn restore "$r" sh -c "$then_sync" sh "$client_bin" --repo "https://127.0.0.1:$port/default" --token-file "$work/token" \
    --fingerprint "$fp" restore "$snap" disk.qcow2 "$d/restored.raw"
  check_digest cairn "$d/restored.raw"
  timed cairn check "$r" "$client_bin" --repo "https://127.0.0.1:$port/default" --token-file "$work/token" \
    --fingerprint "$fp" verify "$snap"
  stop_server
  rm -rf "$d" "$work/srv-$r"
}

# The peers read $d/disk.raw; each state is a hard link to a separate copy,
# so a changed state is a new inode (as a rewritten file is a changed file
# to their files caches) and an unchanged one is the same.
run_borg() {
  local r=$1 d=$work/borg-$1
  mkdir -p "$d/src" "$d/out"
  borg init -e none "$d/repo" >/dev/null 2>&1
  ln "$work/state0.raw" "$d/src/disk.raw"
  (cd "$d/src" && timed borg full "$r" borg create --chunker-params fixed,4194304 "$d/repo::b1" disk.raw)
  (cd "$d/src" && timed borg unchanged "$r" borg create --chunker-params fixed,4194304 "$d/repo::b2" disk.raw)
  ln -f "$work/state1.raw" "$d/src/disk.raw"
  (cd "$d/src" && timed borg extents "$r" borg create --chunker-params fixed,4194304 "$d/repo::b3" disk.raw)
  ln -f "$work/state2.raw" "$d/src/disk.raw"
  (cd "$d/src" && timed borg scattered "$r" borg create --chunker-params fixed,4194304 "$d/repo::b4" disk.raw)
  (cd "$d/out" && timed borg restore "$r" sh -c "$then_sync" sh borg extract --sparse "$d/repo::b4")
  check_digest borg "$d/out/disk.raw"
  timed borg check "$r" borg check --verify-data "$d/repo"
  rm -rf "$d"
}

run_restic() {
  local r=$1 d=$work/restic-$1
  mkdir -p "$d/src" "$d/out"
  restic init -r "$d/repo" >/dev/null 2>&1
  ln "$work/state0.raw" "$d/src/disk.raw"
  (cd "$d/src" && timed restic full "$r" restic -r "$d/repo" backup disk.raw)
  (cd "$d/src" && timed restic unchanged "$r" restic -r "$d/repo" backup disk.raw)
  ln -f "$work/state1.raw" "$d/src/disk.raw"
  (cd "$d/src" && timed restic extents "$r" restic -r "$d/repo" backup disk.raw)
  ln -f "$work/state2.raw" "$d/src/disk.raw"
  (cd "$d/src" && timed restic scattered "$r" restic -r "$d/repo" backup disk.raw)
  timed restic restore "$r" sh -c "$then_sync" sh restic -r "$d/repo" restore latest --target "$d/out"
  check_digest restic "$d/out/disk.raw"
  timed restic check "$r" restic -r "$d/repo" check --read-data
  rm -rf "$d"
}

# Interleaved: each round runs every tool, the order rotating by round.
read -r -a order <<<"$tools"
for ((r = 1; r <= rounds; r++)); do
  n=${#order[@]}
  for ((k = 0; k < n; k++)); do
    t=${order[$(((k + r - 1) % n))]}
    echo "-- round $r: $t (load $(cut -d' ' -f1-3 /proc/loadavg))"
    "run_$t" "$r"
  done
done

echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# Where the CPU goes in a full backup: client (with qemu-storage-daemon) and
# server, sampled with call graphs; not part of the timed rounds.
if [ -n "${PERF_DIR:-}" ] && [[ " $tools " == *" cairn "* ]]; then
  command -v perf >/dev/null || apt-get install -y linux-perf >/dev/null
  mkdir -p "$PERF_DIR"
  d=$work/cairn-perf
  mkdir -p "$d"
  start_server "$work/srv-perf"
  qemu-img convert -f raw -O qcow2 "$work/state0.raw" "$d/disk.qcow2"
  sync
  perf record -F 999 -g -o "$PERF_DIR/server.data" -p "$server_pid" 2>"$PERF_DIR/server.record.log" &
  perf_pid=$!
  sleep 1
  /usr/bin/time -o "$PERF_DIR/client.time" -f '%e s wall, %U s user, %S s sys, %R minor faults, %M KiB peak RSS' \
    perf record -F 999 -g -o "$PERF_DIR/client.data" -- "$client_bin" --repo "https://127.0.0.1:$port/default" \
    --token-file "$work/token" --fingerprint "$fp" backup image --id 999 "$d/disk.qcow2" \
    >"$PERF_DIR/client.out" 2>&1
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
  stop_server
  for w in client server; do
    perf report -i "$PERF_DIR/$w.data" --no-children -g none --sort comm,dso,sym --stdio --percent-limit 0.7 \
      2>/dev/null | grep -E '^ +[0-9]' >"$PERF_DIR/$w.txt" || true
    perf report -i "$PERF_DIR/$w.data" --no-children -g none --sort comm,dso --stdio 2>/dev/null |
      grep -E '^ +[0-9]' >"$PERF_DIR/$w.dso.txt" || true
  done
  echo "== profiled full backup (perf running): $(cat "$PERF_DIR/client.time")"
  for w in client server; do
    echo "-- $w: by program and library"
    head -12 "$PERF_DIR/$w.dso.txt"
    echo "-- $w: hottest functions"
    head -25 "$PERF_DIR/$w.txt"
  done
  rm -rf "$d" "$work/srv-perf"
fi
python3 - "$results" "$tools" <<'PY'
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    tool, phase, rnd, times, load, server = line.rstrip('\n').split('\t')
    wall, user, sys_, minflt, rss = times.split()
    rows[(tool, phase)].append((float(wall), float(user), float(sys_), int(minflt), int(rss), float(load),
                                float(server)))
tools = sys.argv[2].split()
phases = ['full', 'unchanged', 'extents', 'scattered', 'restore', 'check']
med = lambda xs: statistics.median(xs)
print()
print('median wall seconds (load average at the start of each run in brackets)')
head = '| phase | ' + ' | '.join(tools) + (' | cairn vs borg | cairn vs best peer |' if 'cairn' in tools else ' |')
print(head)
print('|' + '---|' * (head.count('|') - 1))
for p in phases:
    cells, walls = [], {}
    for t in tools:
        v = rows.get((t, p))
        if not v:
            cells.append('-'); continue
        walls[t] = med([x[0] for x in v])
        cells.append(f'{walls[t]:.2f} s [{med([x[5] for x in v]):.1f}]')
    line = f'| {p} | ' + ' | '.join(cells)
    if 'cairn' in walls:
        c = walls['cairn']
        b = walls.get('borg')
        peers = [w for t, w in walls.items() if t != 'cairn']
        line += f" | {b / c:.2f}x" if b else ' | -'
        line += f" | {min(peers) / c:.2f}x" if peers else ' | -'
    print(line + ' |')
print()
print('client getrusage, medians: user s / sys s / minor faults / peak RSS MiB')
head = '| phase | ' + ' | '.join(tools) + ' |'
print(head)
print('|' + '---|' * (len(tools) + 1))
for p in phases:
    cells = []
    for t in tools:
        v = rows.get((t, p))
        if not v:
            cells.append('-'); continue
        cells.append(f'{med([x[1] for x in v]):.2f} / {med([x[2] for x in v]):.2f} / '
                     f'{int(med([x[3] for x in v]))} / {med([x[4] for x in v]) / 1024:.0f}')
    print(f'| {p} | ' + ' | '.join(cells) + ' |')
if 'cairn' in tools:
    print()
    print('cairn-server CPU (user + system) during each phase, median s: '
          + ', '.join(f"{p} {med([x[6] for x in rows[('cairn', p)]]):.2f}" for p in phases if rows.get(('cairn', p))))
print()
print('all runs (tool phase round: wall user sys minflt maxrss_kib load server_cpu_s):')
for line in open(sys.argv[1]):
    print('  ' + line.rstrip('\n').replace('\t', ' '))
PY
