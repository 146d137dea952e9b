#!/bin/bash
# `cairn backup domain` end to end (issue 10 scenarios 1-6 and 8) with Debian's
# real libvirtd 9.0 and virtlogd (started here as root, with a private
# libvirtd.conf: its own unix_sock_dir, so the URI is
# qemu:///system?socket=DIR/libvirt-sock), TCG domains (<domain type='qemu'>,
# no OS) with qcow2 disks on virtio, the real cairn-server on loopback and the
# real `cairn`. Guest writes go through the device with HMP qemu-io. Every
# restore is compared byte for byte (cmp) with a raw copy of the disk taken
# right after its backup (device flushed, `qemu-img convert -U`).
#
# Usage: libvirt_domain_test.sh BUILD_DIR. Exit 77 (skipped) only when not
# root; any other missing piece fails loudly.
#
# What a private daemon cannot change (libvirt 9.0, privileged mode): the
# QEMU driver still uses /etc/libvirt/qemu.conf, /run/libvirt/qemu and
# /var/lib/libvirt/qemu, and virtlogd's socket /run/libvirt/virtlogd-sock —
# so domains are named cairn-test-<pid>-* to keep out of other runs' way.
set -u
BUILD=${1:?usage: $0 BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
CAIRN=$BUILD/client/cairn
SERVER=${CAIRN_SERVER:-$BUILD/server/cairn-server}
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (libvirtd runs QEMU as libvirt-qemu)"; exit 77; }
for p in libvirtd virtlogd virsh qemu-img qemu-io curl; do
  command -v $p >/dev/null || { echo "FAIL: $p not installed (packaging/install-deps.sh)"; exit 1; }
done

W=$(mktemp -d /tmp/cairn-lvtest-XXXXXX)
chmod 755 "$W"
FAILS=0
PIDS=()
N=cairn-test-$$
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }

cleanup() {
  for d in $(virsh list --all --name 2>/dev/null | grep "^$N"); do
    virsh destroy "$d" >/dev/null 2>&1
    for c in $(virsh checkpoint-list "$d" --name 2>/dev/null); do
      virsh checkpoint-delete "$d" "$c" --metadata >/dev/null 2>&1
    done
    virsh undefine "$d" --checkpoints-metadata >/dev/null 2>&1
  done
  [ -f "$W/libvirtd.pid" ] && kill "$(cat "$W/libvirtd.pid")" 2>/dev/null
  [ -f "$W/virtlogd.pid" ] && kill "$(cat "$W/virtlogd.pid")" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  if [ $FAILS -eq 0 ]; then rm -rf "$W"; else echo "kept $W"; fi
}
trap cleanup EXIT

# --- libvirtd and virtlogd, private sockets ---
mkdir -p "$W/sock"
cat > "$W/libvirtd.conf" <<CONF
unix_sock_dir = "$W/sock"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:$W/libvirtd.log"
CONF
if [ ! -S /run/libvirt/virtlogd-sock ]; then
  virtlogd -d -p "$W/virtlogd.pid" || { echo "FAIL: virtlogd did not start"; exit 1; }
fi
libvirtd -d -f "$W/libvirtd.conf" -p "$W/libvirtd.pid" || { echo "FAIL: libvirtd did not start"; exit 1; }
URI="qemu:///system?socket=$W/sock/libvirt-sock"
export LIBVIRT_DEFAULT_URI=$URI
for i in $(seq 100); do virsh version >/dev/null 2>&1 && break; sleep 0.1; done
virsh version >/dev/null || { echo "FAIL: libvirtd does not answer"; cat "$W/libvirtd.log"; exit 1; }

# --- the server ---
mkdir -p "$W/srv"
"$SERVER" --data "$W/srv" run --listen 127.0.0.1:0 --session-timeout 2 > "$W/srv.log" 2>&1 &
PIDS+=($!)
for i in $(seq 300); do grep -q "listening on" "$W/srv.log" && grep -q fingerprint "$W/srv.log" && break; sleep 0.1; done
PORT=$(grep -o 'listening on https://127.0.0.1:[0-9]*' "$W/srv.log" | grep -o '[0-9]*$')
export CAIRN_REPO=https://127.0.0.1:$PORT/default
export CAIRN_TOKEN=$(cat "$W/srv/admin.token")
export CAIRN_FINGERPRINT=$(grep -o 'fingerprint (SHA-256): [0-9A-F:]*' "$W/srv.log" | head -1 | cut -d' ' -f3)
[ -n "$PORT" ] || { echo "FAIL: server did not start"; cat "$W/srv.log"; exit 1; }

T=1790000000
backup() {  # backup DOMAIN [ARGS...] → summary JSON in $W/last.json, rc in $RC
  T=$((T + 3600))
  "$CAIRN" --output json backup domain "$@" --connect "$URI" --backup-time "$T" > "$W/last.out" 2> "$W/last.err"
  RC=$?
  tail -1 "$W/last.out" > "$W/last.json"
}
j() { python3 -c "import json,sys; d=json.load(open('$W/last.json')); print(eval(sys.argv[1]))" "$1"; }
snapshots() { "$CAIRN" --output json snapshots 2>/dev/null | python3 -c "import json,sys; print(len(json.load(sys.stdin)))"; }
hmp() { virsh qemu-monitor-command --hmp "$1" "qemu-io -d /machine/peripheral/$2/virtio-backend \"$3\"" >/dev/null; }
write() { hmp "$1" "$2" "$3" && hmp "$1" "$2" flush; }
copy() { qemu-img convert -U -O raw "$1" "$2"; }
restores_to() {  # SNAPSHOT ARCHIVE EXPECTED
  rm -f "$W/restored.raw"
  "$CAIRN" restore "$1" "$2" "$W/restored.raw" >/dev/null 2>&1 || { echo "restore $1 $2 failed"; return 1; }
  cmp "$W/restored.raw" "$3"
}
define() {  # NAME DISK... (qcow2 files; vda, vdb, ...) + a CD-ROM to skip
  local name=$1; shift
  local disks="" letters=(a b c d) i=0
  for f in "$@"; do
    disks+="<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$f'/><target dev='vd${letters[$i]}' bus='virtio'/></disk>"
    i=$((i + 1))
  done
  cat > "$W/$name.xml" <<XML
<domain type='qemu'><name>$name</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>$disks
<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk></devices></domain>
XML
  virsh define "$W/$name.xml" >/dev/null
}
mkimg() { qemu-img create -q -f qcow2 "$1" "$2"; qemu-io -f qcow2 -c "write -P 0x11 0 3M" -c "write -P 0x12 40M 5M" "$1" >/dev/null; }

# ===== 1, 2, 4, 5: a running domain with two disks =====
D=$N-run
mkimg "$W/a.qcow2" 128M
mkimg "$W/b.qcow2" 64M
define $D "$W/a.qcow2" "$W/b.qcow2"
virsh start $D >/dev/null || { fail "virsh start"; exit 1; }

backup $D
[ $RC = 0 ] || fail "first backup: $(cat "$W/last.err")"
[ "$(j 'd["mode"]')" = full ] && ok "1: first backup is full" || fail "1: mode $(j 'd["mode"]')"
[ "$(j 'd["skipped"][0]["target"]+":"+d["skipped"][0]["reason"]')" = "hdc:a CD-ROM" ] && ok "CD-ROM skipped with reason" || fail "skipped: $(j 'd["skipped"]')"
[ "$(j 'd["disks"][0]["nbd-bytes-read"]')" = $((8 * 1048576)) ] && ok "1: full read only the allocated 8 MiB of vda (holes not read)" || fail "1: nbd-bytes-read $(j 'd["disks"][0]["nbd-bytes-read"]')"
S1=$(j 'd["snapshot"]')
hmp $D virtio-disk0 flush; copy "$W/a.qcow2" "$W/a1.raw"; copy "$W/b.qcow2" "$W/b1.raw"
restores_to "$S1" vda "$W/a1.raw" && restores_to "$S1" vdb "$W/b1.raw" && ok "1: full restores byte for byte" || fail "1: full restore differs"

write $D virtio-disk0 "write -P 0x41 1M 64k"      # chunk 0
write $D virtio-disk0 "write -P 0x42 70M 1M"      # chunk 17
write $D virtio-disk1 "write -P 0x43 63M 4k"      # vdb chunk 15
# --dry-run (PlanDomainBackup) says what the run will do, touching nothing.
"$CAIRN" --output json backup domain $D --connect "$URI" --dry-run > "$W/last.json" 2> "$W/last.err"
[ "$(j '[x["mode"] for x in d["disks"]]')" = "['incremental', 'incremental']" ] && ok "dry run: incremental" || fail "dry run: $(cat "$W/last.json") $(cat "$W/last.err")"
backup $D
[ $RC = 0 ] || fail "incremental: $(cat "$W/last.err")"
[ "$(j 'd["mode"]')" = incremental ] && ok "1: second backup incremental" || fail "1: mode $(j 'd["mode"]'): $(j 'd["disks"]')"
[ "$(j 'd["chunks-dirty"]')" = 3 ] && [ "$(j 'd["nbd-bytes-read"]')" = $((3 * 4194304)) ] && ok "1: read only the 3 dirty chunks" || fail "1: chunks-dirty $(j 'd["chunks-dirty"]') read $(j 'd["nbd-bytes-read"]')"
S2=$(j 'd["snapshot"]')
copy "$W/a.qcow2" "$W/a2.raw"; copy "$W/b.qcow2" "$W/b2.raw"
restores_to "$S2" vda "$W/a2.raw" && restores_to "$S2" vdb "$W/b2.raw" && ok "1,5: incremental restores byte for byte, both disks" || fail "1: incremental restore differs"
[ "$(virsh checkpoint-list $D --name | grep -c cairn-cp-)" = 1 ] && ok "older Cairn checkpoint deleted after commit" || fail "checkpoints: $(virsh checkpoint-list $D --name)"

# 5: two disks, one point in time: both archives of one snapshot, one job.
[ "$(j 'len(d["disks"])')" = 2 ] && ok "5: two disks in one snapshot" || fail "5: disks $(j 'd["disks"]')"

# 2: destroyed and started again → still incremental.
virsh destroy $D >/dev/null; virsh start $D >/dev/null
write $D virtio-disk0 "write -P 0x44 100M 64k"
backup $D
[ "$(j 'd["mode"]')" = incremental ] && [ "$(j 'd["chunks-dirty"]')" = 1 ] && ok "2: incremental after destroy + start" || fail "2: $(cat "$W/last.json") $(cat "$W/last.err")"
S3=$(j 'd["snapshot"]')
copy "$W/a.qcow2" "$W/a3.raw"
restores_to "$S3" vda "$W/a3.raw" && ok "2: restore byte for byte" || fail "2: restore differs"

# 3: client killed mid-backup (rate limited, random data) → nothing committed.
# Random data (QEMU reads the files: world-readable in a 755 folder), one
# file per chunk so that nothing deduplicates: at 1 kB/s the upload is slow.
for i in 0 1 2 3 4 5 6 7; do
  head -c 4M /dev/urandom > "$W/rand$i.bin"; chmod 644 "$W/rand$i.bin"
  write $D virtio-disk0 "write -s $W/rand$i.bin $((i * 8 + 4))M 4M"
done
before=$(snapshots)
T=$((T + 3600))
"$CAIRN" --output json backup domain $D --connect "$URI" --backup-time "$T" --rate-limit 0.001 > "$W/killed.out" 2>&1 &
KPID=$!
for i in $(seq 100); do virsh domjobinfo $D 2>/dev/null | grep -q Backup && break; sleep 0.1; done
sleep 1
kill -9 $KPID; wait $KPID 2>/dev/null
virsh domjobinfo $D | grep -q Backup && ok "3: the killed client's job is still in libvirt" || fail "3: no job left to clean up"
[ "$(snapshots)" = "$before" ] && ok "3: nothing committed" || fail "3: a snapshot was committed"
write $D virtio-disk1 "write -P 0x61 10M 4k"
sleep 3  # the server drops the dead session
backup $D
[ $RC = 0 ] || fail "3: next run: $(cat "$W/last.err")"
grep -q "aborted the backup job a killed cairn left" "$W/last.err" && ok "3: stale job aborted" || fail "3: $(cat "$W/last.err")"
virsh domjobinfo $D | grep -q Backup && fail "3: job still there" || ok "3: backup job gone from libvirt"
[ "$(j 'd["mode"]')" = incremental ] && [ "$(j 'd["chunks-dirty"]')" = 9 ] && ok "3: next run incremental with every write (9 chunks)" || fail "3: $(j 'd["mode"]') $(j 'd["chunks-dirty"]')"
S4=$(j 'd["snapshot"]')
copy "$W/a.qcow2" "$W/a4.raw"; copy "$W/b.qcow2" "$W/b4.raw"
restores_to "$S4" vda "$W/a4.raw" && restores_to "$S4" vdb "$W/b4.raw" && ok "3: restore byte for byte" || fail "3: restore differs"

# 4: the server's last snapshot deleted → full read.
curl -sk -X DELETE -H "Authorization: CairnToken $CAIRN_TOKEN" \
  "https://127.0.0.1:$PORT/api/v1/datastores/default/snapshots?snapshot=$(python3 -c "import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=''))" "$S4")" > "$W/del.out"
backup $D
[ "$(j 'd["mode"]')" = full ] && ok "4: full after the last snapshot was deleted ($(j 'd["disks"][0]["reason"]'))" || fail "4: $(cat "$W/last.json") $(cat "$W/del.out")"
S5=$(j 'd["snapshot"]')
restores_to "$S5" vda "$W/a4.raw" && ok "4: restore byte for byte" || fail "4: restore differs"

# 8: quiesce. A TCG domain with no OS has no guest agent, and libvirt only
# talks to the agent through the guest's virtio-serial port, so a fake
# agent peer cannot be attached: only the policies are checked.
before=$(snapshots)
backup $D --require-quiesce
[ $RC != 0 ] && [ "$(snapshots)" = "$before" ] && ok "8: --require-quiesce without an agent fails, nothing committed" || fail "8: rc $RC"
virsh domjobinfo $D | grep -q Backup && fail "8: job left behind" || ok "8: no job left"
backup $D --quiesce
[ $RC = 0 ] && [ "$(j 'd["consistency"]')" = crash ] && grep -q "freeze failed" "$W/last.err" && ok "8: --quiesce without an agent: crash-consistent, said so" || fail "8: $(cat "$W/last.err")"
echo "SKIP-PART 8: application-consistent freeze needs a guest agent inside a real guest"

# ===== 6: a shut-off domain, twice, with an offline write between =====
D6=$N-off
mkimg "$W/c.qcow2" 64M
define $D6 "$W/c.qcow2"
backup $D6 --id off1
[ $RC = 0 ] && [ "$(j 'd["mode"]')" = full ] && [ "$(j 'd["state"]')" = "shut off" ] && ok "6: shut-off full" || fail "6: $(cat "$W/last.err") $(cat "$W/last.json")"
qemu-io -f qcow2 -c "write -P 0x71 20M 64k" "$W/c.qcow2" >/dev/null
backup $D6 --id off1
[ $RC = 0 ] && [ "$(j 'd["mode"]')" = incremental ] && [ "$(j 'd["chunks-dirty"]')" = 1 ] && ok "6: second offline backup incremental" || fail "6: $(cat "$W/last.err") $(cat "$W/last.json")"
[ "$(j 'd["disks"][0]["archive"]')" = vda.fidx ] && ok "6: archive named after the target" || fail "6: archive $(j 'd["disks"][0]["archive"]')"
qemu-img convert -O raw "$W/c.qcow2" "$W/c.raw"
restores_to "$(j 'd["snapshot"]')" vda "$W/c.raw" && ok "6: restore byte for byte" || fail "6: restore differs"

echo "failures: $FAILS"
[ $FAILS -eq 0 ]
