#!/bin/bash
# `cairn map` end to end (ctest label `map`): a real cairn-server on
# loopback, a mixed image backed up with `cairn backup image`, then the
# export read by qemu-img, nbdinfo, nbdcopy, qemu-io and a QEMU VM on a qcow2
# overlay. Usage: map_test.sh BUILD_DIR [CASE...]  (cases: compare map
# parallel readonly vm corrupt latest; default all).
set -euo pipefail

BUILD=${1:?usage: map_test.sh BUILD_DIR [CASE...]}
shift
CASES=${*:-"compare map parallel readonly vm live files corrupt"}
CAIRN=$BUILD/client/cairn
SERVER=${CAIRN_SERVER:-$BUILD/server/cairn-server}
MiB=$((1024 * 1024))

W=$(mktemp -d /tmp/cairn-map-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$W"/*.log; do echo "--- $f"; tail -20 "$f"; done >&2
  exit 1
}
pass() { echo "ok: $*"; }

# A QMP helper: qmp.py SOCKET STEP... (hmp:LINE, sleep:S, quit, nbdnodes).
cat >"$W/qmp.py" <<'PYEOF'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
for _ in range(300):
    try: s.connect(sys.argv[1]); break
    except OSError: time.sleep(0.1)
f = s.makefile("rw")
def cmd(name, **args):
    f.write(json.dumps({"execute": name, "arguments": args}) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r: return r
json.loads(f.readline()); cmd("qmp_capabilities")
for step in sys.argv[2:]:
    if step.startswith("hmp:"):
        r = cmd("human-monitor-command", **{"command-line": step[4:]})
        if r.get("return") or "error" in r: print("HMP:", r); sys.exit(1)
    elif step.startswith("sleep:"): time.sleep(float(step[6:]))
    elif step == "nbdnodes":
        for n in cmd("query-named-block-nodes", flat=True)["return"]:
            if n["drv"] == "nbd" or n.get("backing_file", "").startswith("nbd"): print(n["node-name"])
    elif step == "quit": cmd("quit")
PYEOF

# --- server and image ------------------------------------------------------
"$SERVER" --data "$W/data" run --listen 127.0.0.1:0 >"$W/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do
  grep -q 'fingerprint (SHA-256)' "$W/server.log" 2>/dev/null && break
  sleep 0.1
done
PORT=$(sed -n 's|.*listening on https://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$W/server.log" | head -1)
FP=$(sed -n 's|.*fingerprint (SHA-256): \([0-9A-F:]\{95\}\).*|\1|p' "$W/server.log" | head -1)
[ -n "$PORT" ] && [ -n "$FP" ] || fail "cairn-server did not start"
export CAIRN_REPO=https://127.0.0.1:$PORT/default
export CAIRN_TOKEN
CAIRN_TOKEN=$(tr -d '\n' <"$W/data/admin.token")
export CAIRN_FINGERPRINT=$FP

# 6 full chunks + a 1 MiB tail: random, text, zero, random, 0x5a, zero, random.
python3 - "$W/disk.raw" <<'EOF'
import os, sys
C = 4 << 20
parts = [os.urandom(C), (b"cairn backup\n" * (C // 13 + 1))[:C], bytes(C),
         os.urandom(C), b"\x5a" * C, bytes(C), os.urandom(1 << 20)]
open(sys.argv[1], "wb").write(b"".join(parts))
EOF
"$CAIRN" backup image --id 100 --backup-time 2026-01-01T00:00:00Z "$W/disk.raw" \
  >"$W/backup.log" 2>&1 || fail "backup"
SNAP=vm/100/2026-01-01T00:00:00Z
ARCHIVE=$("$CAIRN" --output json snapshots --id 100 |
  python3 -c 'import json,sys; s=json.load(sys.stdin); print([a["name"] for a in s[0]["archives"] if a["name"].endswith(".fidx")][0])')
[ -n "$ARCHIVE" ] || fail "no archive"

MAP_PID=
start_map() {  # start_map SNAPSHOT
  rm -f "$W/map.sock"
  # Emptied here, not only by the redirection below: that one happens in the
  # child, and a grep before it would find the last run's "serving" line.
  : >"$W/map.log"
  "$CAIRN" map "$1" "$ARCHIVE" --socket "$W/map.sock" --cache-size 16 >"$W/map.log" 2>&1 &
  MAP_PID=$!
  PIDS+=("$MAP_PID")
  for _ in $(seq 300); do
    grep -q '^serving ' "$W/map.log" && return 0
    kill -0 "$MAP_PID" 2>/dev/null || fail "cairn map exited: $(cat "$W/map.log")"
    sleep 0.1
  done
  fail "cairn map did not start"
}
stop_map() {  # SIGINT: a clean end, socket removed, reader session closed
  kill -INT "$MAP_PID"
  local rc=0
  wait "$MAP_PID" || rc=$?
  [ "$rc" = 0 ] || fail "cairn map exited $rc on SIGINT"
  [ ! -e "$W/map.sock" ] || fail "socket left behind"
  local readers
  readers=$(curl -sk -H "Authorization: CairnToken $CAIRN_TOKEN" \
    "https://127.0.0.1:$PORT/api/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reader-sessions"])')
  [ "$readers" = 0 ] || fail "$readers reader sessions left open"
}
URI="nbd+unix:///?socket=$W/map.sock"

start_map vm/100/latest
grep -q "serving $SNAP " "$W/map.log" || fail "latest did not resolve to $SNAP: $(cat "$W/map.log")"

for c in $CASES; do
  case $c in
  compare)
    qemu-img compare -f raw -F raw "$W/disk.raw" "$URI" >"$W/compare.log" 2>&1 ||
      fail "qemu-img compare: $(cat "$W/compare.log")"
    pass "qemu-img compare: export identical to the disk at backup time"
    ;;
  map)
    nbdinfo --map "$URI" >"$W/nbdinfo.log" 2>&1 || fail "nbdinfo --map"
    # offset length type description: zero chunks 2 and 5 are holes, the rest data.
    want=$(printf '%s\n' "0 $((8 * MiB)) 0 data" "$((8 * MiB)) $((4 * MiB)) 3 hole,zero" \
      "$((12 * MiB)) $((8 * MiB)) 0 data" "$((20 * MiB)) $((4 * MiB)) 3 hole,zero" \
      "$((24 * MiB)) $((1 * MiB)) 0 data")
    got=$(awk '{print $1, $2, $3, $4}' "$W/nbdinfo.log")
    [ "$got" = "$want" ] || fail "nbdinfo --map: got
$got
want
$want"
    pass "nbdinfo --map shows the zero chunks as holes"
    ;;
  parallel)
    # One nbdcopy on 8 connections, and 8 nbdcopy processes at once.
    nbdcopy -C 8 --requests 8 "$URI" "$W/copy.raw" >"$W/nbdcopy.log" 2>&1 || fail "nbdcopy -C 8"
    cmp "$W/disk.raw" "$W/copy.raw" || fail "nbdcopy -C 8 copy differs"
    pids=()
    for i in 1 2 3 4 5 6 7 8; do
      nbdcopy -C 1 "$URI" "$W/copy$i.raw" >"$W/nbdcopy$i.log" 2>&1 &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || fail "a parallel nbdcopy failed"; done
    for i in 1 2 3 4 5 6 7 8; do cmp "$W/disk.raw" "$W/copy$i.raw" || fail "reader $i differs"; done
    rm -f "$W"/copy*.raw
    pass "8 parallel readers get the same bytes"
    ;;
  readonly)
    out=$(qemu-io -f raw -c 'write -P 0x11 0 4k' "$URI" 2>&1 || true)
    echo "$out" | grep -Eqi 'read-only|not permitted|permission' || fail "write was not refused: $out"
    qemu-img compare -f raw -F raw "$W/disk.raw" "$URI" >/dev/null || fail "export changed"
    pass "writes refused: $(echo "$out" | head -1)"
    ;;
  vm)
    qemu-img create -q -f qcow2 -b "$URI" -F raw "$W/overlay.qcow2" || fail "overlay"
    stdbuf -oL -eL qemu-system-x86_64 -machine none -nodefaults -display none \
      -qmp "unix:$W/qmp.sock,server=on,wait=off" \
      -blockdev "driver=qcow2,node-name=d0,file.driver=file,file.filename=$W/overlay.qcow2" \
      >"$W/qemu.log" 2>&1 &
    QEMU=$!
    PIDS+=("$QEMU")
    for _ in $(seq 300); do [ -S "$W/qmp.sock" ] && break; sleep 0.1; done
    python3 - "$W/qmp.sock" >"$W/hmp.log" 2>&1 <<'EOF' || fail "qmp: $(cat "$W/hmp.log")"
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
def cmd(name, **args):
    f.write(json.dumps({"execute": name, "arguments": args}) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r: return r
json.loads(f.readline()); cmd("qmp_capabilities")
for c in ["read -P 0x5a 16M 4M", "read -P 0 8M 4M", "read -P 0 20M 4M",
          "write -P 0xcc 1M 64k", "read -P 0xcc 1M 64k", "flush"]:
    r = cmd("human-monitor-command", **{"command-line": 'qemu-io d0 "%s"' % c})
    if r.get("return"): print("HMP:", r); sys.exit(1)
cmd("quit")
EOF
    wait "$QEMU" || true
    if grep -Eq 'failed|rror' "$W/qemu.log"; then fail "qemu-io in the VM: $(cat "$W/qemu.log")"; fi
    [ "$(grep -c 'bytes at offset' "$W/qemu.log")" = 5 ] || fail "qemu-io output: $(cat "$W/qemu.log")"
    # Everything the VM sees: the snapshot plus its one write, which went to the overlay.
    qemu-img convert -f qcow2 -O raw "$W/overlay.qcow2" "$W/vm.raw" || fail "convert overlay"
    cp "$W/disk.raw" "$W/expect.raw"
    python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(1<<20); f.write(b"\xcc"*65536)' "$W/expect.raw"
    cmp "$W/expect.raw" "$W/vm.raw" || fail "the VM's view differs from snapshot + its write"
    qemu-img compare -f raw -F raw "$W/disk.raw" "$URI" >/dev/null || fail "export changed by the VM"
    rm -f "$W/vm.raw" "$W/expect.raw"
    pass "a VM on a qcow2 overlay over the export reads the snapshot; its writes stay in the overlay"
    ;;
  live)
    # The VM runs on an overlay over the export; cairn mirrors it to live.raw
    # (1 MB/s, so the writes below land while the job runs) and switches.
    qemu-img create -q -f qcow2 -b "$URI" -F raw "$W/overlay2.qcow2" || fail "overlay"
    stdbuf -oL -eL qemu-system-x86_64 -machine none -nodefaults -display none \
      -qmp "unix:$W/qmpt.sock,server=on,wait=off" -qmp "unix:$W/qmpc.sock,server=on,wait=off" \
      -blockdev "driver=qcow2,node-name=d1,file.driver=file,file.filename=$W/overlay2.qcow2" \
      >"$W/qemu2.log" 2>&1 &
    QEMU=$!
    PIDS+=("$QEMU")
    for _ in $(seq 300); do [ -S "$W/qmpc.sock" ] && break; sleep 0.1; done
    # A failure before the switch: nothing at the target, the VM untouched.
    if "$CAIRN" restore vm/100/latest "$ARCHIVE" "$W/never.raw" --live --qmp "$W/qmpc.sock" \
      --node nosuchnode >"$W/live-fail.log" 2>&1; then fail "live restore to a missing node worked"; fi
    if ls "$W"/never.raw* >/dev/null 2>&1; then fail "failed live restore left files"; fi
    start=$(date +%s.%N)
    "$CAIRN" restore vm/100/latest "$ARCHIVE" "$W/live.raw" --live --qmp "$W/qmpc.sock" --speed 1 \
      >"$W/live.log" 2>&1 &
    LIVE=$!
    W1='write -P 0x11 0 64k' W2='write -P 0x22 9M 128k' W3='write -P 0x33 24M 4k' W4='write -P 0x44 17M 8k'
    python3 "$W/qmp.py" "$W/qmpt.sock" sleep:0.5 "hmp:qemu-io d1 \"$W1\"" sleep:0.5 \
      "hmp:qemu-io d1 \"$W2\"" sleep:0.5 "hmp:qemu-io d1 \"$W3\"" >"$W/hmp2.log" 2>&1 ||
      fail "writes during the mirror: $(cat "$W/hmp2.log")"
    kill -0 "$LIVE" 2>/dev/null || echo "note: the mirror ended before the last write" >&2
    wait "$LIVE" || fail "live restore: $(cat "$W/live.log")"
    end=$(date +%s.%N)
    grep -q 'live-restored' "$W/live.log" || fail "live restore output: $(cat "$W/live.log")"
    # After the switch the VM writes to the new file; no node reads the export any more.
    nodes=$(python3 "$W/qmp.py" "$W/qmpt.sock" "hmp:qemu-io cairn-live-target \"$W4\"" nbdnodes)
    [ -z "$nodes" ] || fail "nodes still on the export: $nodes"
    python3 "$W/qmp.py" "$W/qmpt.sock" quit >/dev/null
    wait "$QEMU" || true
    if grep -Eq 'failed|rror' "$W/qemu2.log"; then fail "qemu-io: $(cat "$W/qemu2.log")"; fi
    # The reference: the same writes applied to a plain copy, without Cairn.
    cp "$W/disk.raw" "$W/ref.raw"
    qemu-io -f raw -c "$W1" -c "$W2" -c "$W3" -c "$W4" "$W/ref.raw" >/dev/null || fail "reference"
    cmp "$W/ref.raw" "$W/live.raw" || fail "live-restored file differs from snapshot + writes"
    rm -f "$W/ref.raw" "$W/live.raw"
    pass "live restore: target = snapshot + the VM's writes ($(python3 -c "print(round($end - $start, 2))") s at 1 MB/s)"
    ;;
  files)
    mkdir -p "$W/fsrc/sub/deeper"
    echo "hello from cairn" >"$W/fsrc/hello.txt"
    head -c 3000000 /dev/urandom >"$W/fsrc/sub/big.bin"
    head -c 1000 /dev/zero | tr '\0' x >"$W/fsrc/sub/deeper/x.txt"
    mkfs.ext4 -q -F -d "$W/fsrc" "$W/fs.raw" 32M || fail "mkfs.ext4 -d"
    "$CAIRN" backup image --id 200 "$W/fs.raw" >"$W/backup2.log" 2>&1 || fail "backup of fs.raw"
    FARCH=$("$CAIRN" --output json snapshots --id 200 |
      python3 -c 'import json,sys; s=json.load(sys.stdin); print([a["name"] for a in s[0]["archives"] if a["name"].endswith(".fidx")][0])')
    out=$("$CAIRN" files vm/200/latest "$FARCH" ls /sub 2>&1) || fail "files ls: $out"
    [ "$(echo "$out" | awk '{print $3}' | tr '\n' ' ')" = "big.bin deeper/ " ] || fail "files ls /sub: $out"
    echo "$out" | grep -q "^100644 3000000	big.bin" || fail "files ls size/mode: $out"
    "$CAIRN" files vm/200/latest "$FARCH" get /sub/big.bin "$W/got.bin" >"$W/get.log" 2>&1 ||
      fail "files get: $(cat "$W/get.log")"
    cmp "$W/fsrc/sub/big.bin" "$W/got.bin" || fail "files get: bytes differ"
    "$CAIRN" files vm/200/latest "$FARCH" get /sub "$W/gotdir" >"$W/get2.log" 2>&1 ||
      fail "files get dir: $(cat "$W/get2.log")"
    diff -r "$W/fsrc/sub" "$W/gotdir" || fail "files get dir: trees differ"
    if "$CAIRN" files vm/200/latest "$FARCH" ls /nope >"$W/nope.log" 2>&1; then fail "ls of a missing dir worked"; fi
    grep -q "not found" "$W/nope.log" || fail "ls /nope: $(cat "$W/nope.log")"
    pass "files ls/get of an ext4 image: byte-identical"
    ;;
  corrupt)
    stop_map
    pass "SIGINT ends cairn map cleanly (socket removed, reader session closed)"
    # Damage the stored chunk 0 (its digest: SHA-256 of the plain chunk).
    hex=$(head -c $((4 * MiB)) "$W/disk.raw" | sha256sum | cut -c1-64)
    chunk="$W/data/stores/default/.chunks/${hex:0:4}/$hex"
    [ -f "$chunk" ] || fail "no chunk file $chunk"
    python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(200); b=f.read(64); f.seek(200); f.write(bytes(x ^ 0xff for x in b))' "$chunk"
    start_map "$SNAP"
    out=$(qemu-io -r -f raw -c 'read 0 4k' "$URI" 2>&1 || true)
    echo "$out" | grep -q 'Input/output error' || fail "damaged chunk read: $out"
    out=$(qemu-io -r -f raw -c 'read -P 0x5a 16M 4k' "$URI" 2>&1) || fail "intact chunk: $out"
    echo "$out" | grep -q 'bytes at offset' || fail "intact chunk: $out"
    if nbdcopy "$URI" "$W/bad.raw" >"$W/badcopy.log" 2>&1; then fail "nbdcopy of a damaged export succeeded"; fi
    grep -qi 'input/output error' "$W/badcopy.log" || fail "nbdcopy: $(cat "$W/badcopy.log")"
    pass "a damaged chunk reads as an I/O error; the other chunks still read"
    ;;
  *) fail "unknown case $c" ;;
  esac
done
[ -z "$MAP_PID" ] || ! kill -0 "$MAP_PID" 2>/dev/null || stop_map
echo "all map cases passed"
