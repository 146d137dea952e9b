#!/usr/bin/env bash
# `cairn backup domain` (libvirt pull-mode backup read with libnbd) next to
# `cairn backup vm` (QMP drive-backup into NbdSink) on the same 2 GiB mixed
# qcow2 image: full, then an incremental after 2% of the disk was rewritten
# in clustered 1 MiB runs (random data). One real cairn-server on loopback
# with a fresh data directory per tool; a private libvirtd (as in
# tests/integration/libvirt_domain_test.sh; no other libvirtd may run); a
# plain QEMU (-machine none) for `backup vm`. Prints wall seconds and MB/s of
# the disk size per phase, plus read/dirty/uploaded from the summaries.
#
#   bench/run_domain.sh [SIZE_GIB]      # default 2; run as root
#
# ROUNDS=N (default 1): N rounds of rewrite + incremental per tool, each
# printed, then the median of the incrementals' wall seconds per tool (on a
# shared, busy machine one round says little).
# Environment: BUILD_DIR (default <repo>/build; cairn and cairn-server must
# be built there, or CAIRN_SERVER=path), CAIRN_BENCH_DIR (default /var/tmp).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
CAIRN=$build/client/cairn
SERVER=${CAIRN_SERVER:-$build/server/cairn-server}
size_gib=${1:-2}
rounds=${ROUNDS:-1}
W=$(mktemp -d "${CAIRN_BENCH_DIR:-/var/tmp}/cairn-domain-bench-XXXXXX")
chmod 755 "$W"
PIDS=()
cleanup() {
  virsh destroy cairn-bench >/dev/null 2>&1 || true
  for c in $(virsh checkpoint-list cairn-bench --name 2>/dev/null); do
    virsh checkpoint-delete cairn-bench "$c" --metadata >/dev/null 2>&1 || true
  done
  virsh undefine cairn-bench >/dev/null 2>&1 || true
  [ -f "$W/libvirtd.pid" ] && kill "$(cat "$W/libvirtd.pid")" 2>/dev/null
  [ -f "$W/virtlogd.pid" ] && kill "$(cat "$W/virtlogd.pid")" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5; rm -rf "$W"
}
trap cleanup EXIT

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
echo "== $(libvirtd --version), $(qemu-system-x86_64 --version | head -1), commit $(git -C "$repo" rev-parse --short HEAD)"

# The mixed image: 4 MiB regions, 40% zero, 30% random, 30% text-like.
python3 - "$W/src.raw" "$size_gib" <<'PY'
import os, random, sys
path, gib = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
text = (b"cairn backup chunk qemu bitmap snapshot\n" * 120000)[: 4 << 20]
with open(path, "wb") as f:
    for i in range(gib * 256):
        k = i % 10
        if k < 4:
            f.seek(4 << 20, 1)
        elif k < 7:
            f.write(rng.randbytes(4 << 20))
        else:
            f.write(text[i % 1000:] + text[: i % 1000])
    f.truncate(gib << 30)
PY
qemu-img convert -f raw -O qcow2 "$W/src.raw" "$W/vm.qcow2"
cp "$W/vm.qcow2" "$W/dom.qcow2"
rm "$W/src.raw"

start_server() {  # DIR → exports CAIRN_REPO/TOKEN/FINGERPRINT
  mkdir -p "$1"
  "$SERVER" --data "$1" run --listen 127.0.0.1:0 > "$1.log" 2>&1 &
  PIDS+=($!)
  for i in $(seq 300); do grep -q fingerprint "$1.log" && grep -q "listening on" "$1.log" && break; sleep 0.1; done
  export CAIRN_REPO=https://127.0.0.1:$(grep -o 'listening on https://127.0.0.1:[0-9]*' "$1.log" | grep -o '[0-9]*$')/default
  export CAIRN_TOKEN=$(cat "$1/admin.token")
  export CAIRN_FINGERPRINT=$(grep -o 'fingerprint (SHA-256): [0-9A-F:]*' "$1.log" | head -1 | cut -d' ' -f3)
}
report() {  # LABEL START_NS
  local secs; secs=$(python3 -c "import time; print(f'{(time.time_ns()-$2)/1e9:.2f}')")
  case $1 in *incremental*) echo "$secs" >> "$W/secs-backup-$(echo "$1" | cut -d" " -f2)";; esac
  python3 - "$1" "$secs" "$W/out.json" "$size_gib" <<'PY'
import json, sys
label, secs, path, gib = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
d = json.loads(open(path).read().strip().splitlines()[-1])
print(f"{label:<28} {d['mode']:<12} {secs:7.2f} s {gib*1073.741824/secs:8.1f} MB/s  "
      f"read {d['bytes-read']/1e6:8.1f} MB  dirty {d['chunks-dirty']:4d}  uploaded {d['chunks-uploaded']:4d}")
if "phases" in d:  # backup domain: where the time went, step by step
    print("    phases: " + "  ".join(f"{k} {v:.3f}" for k, v in d["phases"].items()))
PY
}
now() { date +%s%N; }
rewrite_2pct() {  # WRITER: clustered 1 MiB runs of random data, 2% of the disk
  local n=$((size_gib * 1024 * 2 / 100)) i
  head -c 1M /dev/urandom > "$W/r.bin"; chmod 644 "$W/r.bin"
  for i in $(seq 0 $((n - 1))); do
    # clusters of 8 consecutive MiB, spread over the disk
    "$1" "write -s $W/r.bin $(( (i / 8) * 97 % (size_gib * 1000) + i % 8 ))M 1M"
  done
}

# --- backup vm: plain QEMU, QMP ---
start_server "$W/srv-vm"
qemu-system-x86_64 -machine none -nodefaults -display none -daemonize -pidfile "$W/qemu.pid" \
  -blockdev driver=file,filename="$W/vm.qcow2",node-name=f0 -blockdev driver=qcow2,file=f0,node-name=disk0 \
  -qmp unix:"$W/qmp.sock",server=on,wait=off -qmp unix:"$W/hmp.sock",server=on,wait=off
PIDS+=("$(cat "$W/qemu.pid")")
qmp_io() {
  python3 - "$W/hmp.sock" "$1" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline(); f.write(json.dumps({"execute": "qmp_capabilities"}) + "\n"); f.flush(); f.readline()
f.write(json.dumps({"execute": "human-monitor-command",
                    "arguments": {"command-line": 'qemu-io disk0 "%s"' % sys.argv[2]}}) + "\n"); f.flush()
while "return" not in json.loads(f.readline()): pass
PY
}
t=$(now); "$CAIRN" --output json backup vm --qmp "$W/qmp.sock" --id vm > "$W/out.json"; report "backup vm full" "$t"
for round in $(seq "$rounds"); do
  rewrite_2pct qmp_io
  t=$(now); "$CAIRN" --output json backup vm --qmp "$W/qmp.sock" --id vm > "$W/out.json"; report "backup vm 2% incremental" "$t"
done

# --- backup domain: private libvirtd ---
start_server "$W/srv-dom"
mkdir -p "$W/sock"
printf 'unix_sock_dir = "%s"\nauth_unix_rw = "none"\nlog_outputs = "3:file:%s"\n' "$W/sock" "$W/libvirtd.log" > "$W/libvirtd.conf"
[ -S /run/libvirt/virtlogd-sock ] || virtlogd -d -p "$W/virtlogd.pid"
libvirtd -d -f "$W/libvirtd.conf" -p "$W/libvirtd.pid"
export LIBVIRT_DEFAULT_URI="qemu:///system?socket=$W/sock/libvirt-sock"
for i in $(seq 100); do virsh version >/dev/null 2>&1 && break; sleep 0.1; done
cat > "$W/dom.xml" <<XML
<domain type='qemu'><name>cairn-bench</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$W/dom.qcow2'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>
XML
virsh define "$W/dom.xml" >/dev/null && virsh start cairn-bench >/dev/null
dom_io() { virsh qemu-monitor-command --hmp cairn-bench "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"$1\"" >/dev/null; }
t=$(now); "$CAIRN" --output json backup domain cairn-bench --connect "$LIBVIRT_DEFAULT_URI" > "$W/out.json"; report "backup domain full" "$t"
for round in $(seq "$rounds"); do
  rewrite_2pct dom_io
  dom_io flush
  t=$(now); "$CAIRN" --output json backup domain cairn-bench --connect "$LIBVIRT_DEFAULT_URI" > "$W/out.json"; report "backup domain 2% incremental" "$t"
done
for f in "$W"/secs-*; do
  echo "median of $(wc -l < "$f") incrementals, ${f##*/secs-}: $(sort -n "$f" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}') s"
done
