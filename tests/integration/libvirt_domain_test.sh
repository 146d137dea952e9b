#!/bin/bash
# `cairn backup domain` end to end (issue 10 scenarios 1-6 and 8) and
# `cairn backup all` over libvirt domains and a plain QEMU VM (scenario 7) with Debian's
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

# ===== 7: `backup all` over libvirt domains and a plain QEMU VM =====
# Domains of this scenario: x-run (running, two disks), x-off (shut off),
# x-excl (running, excluded by the config: never touched) and x-fail
# (running, quiesce = "require" in its [[domain]] section: no guest agent,
# so it fails). Plus one plain QEMU VM ([[qemu]], its own QMP socket). A hook
# records its phases; an HTTPS webhook peer (python3) records the report.
X=$N-x
mkimg "$W/xr0.qcow2" 64M; mkimg "$W/xr1.qcow2" 32M
mkimg "$W/xo.qcow2" 32M; mkimg "$W/xe.qcow2" 32M; mkimg "$W/xf.qcow2" 32M
define $X-run "$W/xr0.qcow2" "$W/xr1.qcow2"
define $X-off "$W/xo.qcow2"
define $X-excl "$W/xe.qcow2"
define $X-fail "$W/xf.qcow2"
for d in run excl fail; do virsh start $X-$d >/dev/null || fail "7: virsh start $X-$d"; done
write $X-run virtio-disk0 "write -P 0x81 2M 64k"
write $X-run virtio-disk1 "write -P 0x82 9M 1M"
qemu-io -f qcow2 -c "write -P 0x83 12M 64k" "$W/xo.qcow2" >/dev/null

# The plain QEMU VM: a second QMP socket for the test's guest writes (QMP
# serves one client at a time; cairn takes p.qmp).
mkimg "$W/p.qcow2" 32M
qemu-system-x86_64 -machine none -nodefaults -display none \
  -blockdev "driver=qcow2,node-name=disk0,file.driver=file,file.filename=$W/p.qcow2" \
  -qmp "unix:$W/p.qmp,server=on,wait=off" -qmp "unix:$W/p-io.qmp,server=on,wait=off" \
  -daemonize -pidfile "$W/p.pid" || fail "7: plain QEMU did not start"
PIDS+=($(cat "$W/p.pid"))
pio() {  # qemu-io COMMAND on the plain VM's disk0, through HMP over QMP
  python3 - "$W/p-io.qmp" "$1" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
def cmd(name, **args):
    f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            return r
cmd("qmp_capabilities")
r = cmd("human-monitor-command", **{"command-line": 'qemu-io disk0 "%s"' % sys.argv[2]})
sys.exit(0 if "return" in r else 1)
PY
}
pio "write -P 0x84 5M 64k" && pio flush || fail "7: write to the plain VM"

# The webhook peer: HTTPS on loopback with a self-signed certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$W/hook-key.pem" -out "$W/hook-cert.pem" -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null || fail "7: openssl req"
python3 - "$W" <<'PY' > "$W/webhook.log" 2>&1 &
import http.server, ssl, sys
w = sys.argv[1]
class Peer(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(w + "/webhook.json", "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(204)
        self.end_headers()
srv = http.server.HTTPServer(("127.0.0.1", 0), Peer)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(w + "/hook-cert.pem", w + "/hook-key.pem")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
open(w + "/webhook.port.tmp", "w").write(str(srv.server_address[1]))
__import__("os").rename(w + "/webhook.port.tmp", w + "/webhook.port")
srv.serve_forever()
PY
PIDS+=($!)
for i in $(seq 100); do [ -f "$W/webhook.port" ] && break; sleep 0.1; done
HPORT=$(cat "$W/webhook.port" 2>/dev/null)
[ -n "$HPORT" ] || fail "7: webhook peer did not start: $(cat "$W/webhook.log")"

cat > "$W/hook.sh" <<HOOK
#!/bin/sh
echo "\$1 \$2|\$CAIRN_GROUP|\$CAIRN_SNAPSHOT|\$CAIRN_MODE" >> "$W/phases"
HOOK
chmod 755 "$W/hook.sh"
echo "$CAIRN_TOKEN" > "$W/token"
# Every other domain this libvirtd knows (scenarios 1-6, leftovers of other
# runs) is excluded too, so the run sees exactly this scenario's domains.
excl=""
for d in $(virsh list --all --name); do
  case $d in $X-run|$X-off|$X-fail) ;; *) excl+="\"$d\", " ;; esac
done
cat > "$W/backup.conf" <<CONF
repository = "$CAIRN_REPO"
token-file = "$W/token"
fingerprint = "$CAIRN_FINGERPRINT"
log-dir = "$W/logs"
hook = "$W/hook.sh"

[libvirt]
uri = "$URI"
exclude = [${excl%, }]

[[domain]]
name = "$X-fail"
quiesce = "require"

[[qemu]]
id = "plain"
qmp = "$W/p.qmp"

[notify]
webhook = "https://127.0.0.1:$HPORT/hook"
webhook-ca = "$W/hook-cert.pem"
CONF
grep -q "\"$X-excl\"" "$W/backup.conf" || fail "7: $X-excl not in the exclude list"

"$CAIRN" --output json backup all --config "$W/backup.conf" > "$W/all.out" 2> "$W/all.err"
RC=$?
tail -1 "$W/all.out" > "$W/last.json"
[ $RC = 3 ] && ok "7: exit status 3 (some VM failed)" || fail "7: exit status $RC: $(cat "$W/all.err")"
row() { j "[v for v in d['vms'] if v['vm'] == '$1'][0]$2"; }
[ "$(j '[v["vm"] for v in d["vms"]]')" = "['plain', '$X-fail', '$X-off', '$X-run']" ] \
  && ok "7: the plain VM, then every domain but the excluded" || fail "7: vms $(j '[v["vm"] for v in d["vms"]]')"
[ "$(j 'd["committed"]'):$(j 'd["failed"]'):$(j 'd["ok"]')" = "3:1:False" ] \
  && ok "7: 3 committed, 1 failed" || fail "7: $(cat "$W/last.json")"
[ "$(row $X-fail '["result"]')" = failed ] && row $X-fail '["error"]' | grep -q "freeze" \
  && ok "7: the JSON says $X-fail failed: $(row $X-fail '["error"]')" || fail "7: $X-fail row: $(row $X-fail '')"
for v in plain $X-off $X-run; do
  [ "$(row $v '["result"]'):$(row $v '["mode"]')" = ok:full ] && ok "7: $v committed (full)" || fail "7: $v row: $(row $v '')"
done
[ "$(row $X-run '["summary"]["state"]')" = running ] && [ "$(row $X-run '["kind"]')" = domain ] \
  && [ "$(row $X-off '["summary"]["state"]')" = "shut off" ] && ok "7: a running and a shut-off domain" \
  || fail "7: states $(row $X-run '["summary"].get("state")') $(row $X-off '["summary"].get("state")')"
[ "$(row $X-run '["group"]')" = "vm/$X-run" ] || fail "7: group $(row $X-run '["group"]')"
[ "$(row $X-run '["summary"]["disks"].__len__()')" = 2 ] && ok "7: $X-run: two disks" || fail "7: $X-run disks"
# The table (backup-all.log, the webhook's text) names the failed VM.
grep -E "^$X-fail +domain +failed " "$W/logs/backup-all.log" >/dev/null \
  && grep -q "3 of 4 VMs backed up, 1 failed" "$W/logs/backup-all.log" \
  && ok "7: the table says which failed" || fail "7: table: $(cat "$W/logs/backup-all.log")"
# The hook's phases, in the run's order.
got=$(cut -d'|' -f1 "$W/phases" | tr '\n' ',')
want="job-start ,backup-start plain,backup-end plain,backup-start $X-fail,backup-abort $X-fail,backup-start $X-off,backup-end $X-off,backup-start $X-run,backup-end $X-run,job-end ,"
[ "$got" = "$want" ] && ok "7: hook phases" || fail "7: hook phases: $got"
grep -q "^backup-end $X-run|vm/$X-run|$(row $X-run '["snapshot"]')|full$" "$W/phases" \
  && ok "7: the hook was told group, snapshot and mode" || fail "7: hook env: $(cat "$W/phases")"
# Nothing touched the excluded domain; the failed one kept no job, no checkpoint.
[ -z "$(virsh checkpoint-list $X-excl --name)" ] && ok "7: $X-excl untouched (no checkpoint)" || fail "7: $X-excl has checkpoints"
virsh domjobinfo $X-fail | grep -q Backup && fail "7: $X-fail job left" || ok "7: $X-fail: no job left"
[ -z "$(virsh checkpoint-list $X-fail --name | grep cairn-cp-)" ] && ok "7: $X-fail: its checkpoint deleted" \
  || fail "7: $X-fail checkpoints: $(virsh checkpoint-list $X-fail --name)"
# The webhook peer received the report.
[ "$(wc -l < "$W/webhook.json" 2>/dev/null)" = 1 ] && python3 - "$W/webhook.json" "$X-fail" <<'PY' \
  && ok "7: the webhook peer received the report" || fail "7: webhook: $(cat "$W/webhook.json" "$W/webhook.log" 2>&1)"
import json, sys
b = json.loads(open(sys.argv[1]).read())
assert b["event"] == "backup-job", b
assert b["data"]["failed"] == 1 and b["data"]["committed"] == 3, b
assert [v["vm"] for v in b["data"]["vms"] if v["result"] == "failed"] == [sys.argv[2]], b
assert "1 of 4 VMs FAILED" in b["subject"], b["subject"]
assert sys.argv[2] in b["text"], b["text"]
PY
# Every committed snapshot restores to the disk as it was backed up.
hmp $X-run virtio-disk0 flush; hmp $X-run virtio-disk1 flush
copy "$W/xr0.qcow2" "$W/xr0.raw"; copy "$W/xr1.qcow2" "$W/xr1.raw"; copy "$W/p.qcow2" "$W/p.raw"
qemu-img convert -O raw "$W/xo.qcow2" "$W/xo.raw"
restores_to "$(row $X-run '["snapshot"]')" vda "$W/xr0.raw" && restores_to "$(row $X-run '["snapshot"]')" vdb "$W/xr1.raw" \
  && restores_to "$(row $X-off '["snapshot"]')" vda "$W/xo.raw" && restores_to "$(row plain '["snapshot"]')" disk0 "$W/p.raw" \
  && ok "7: every committed snapshot restores byte for byte" || fail "7: a restore differs"

# Again, two at a time, in text mode, after writes: incremental; the table
# on stdout names the failure.
write $X-run virtio-disk1 "write -P 0x91 20M 64k"
pio "write -P 0x92 17M 4k" && pio flush || fail "7: write to the plain VM"
qemu-io -f qcow2 -c "write -P 0x93 1M 4k" "$W/xo.qcow2" >/dev/null
sleep 1  # a new snapshot time for each group
rm -f "$W/phases"
"$CAIRN" backup all --config "$W/backup.conf" --jobs 2 > "$W/all2.out" 2> "$W/all2.err"
RC=$?
[ $RC = 3 ] && ok "7: --jobs 2: exit status 3" || fail "7: --jobs 2: exit status $RC: $(cat "$W/all2.err")"
grep -q "3 of 4 VMs backed up, 1 failed" "$W/all2.out" && grep -E "^$X-fail +domain +failed " "$W/all2.out" >/dev/null \
  && ok "7: the table on stdout says which failed" || fail "7: table: $(cat "$W/all2.out")"
for v in plain $X-off $X-run; do
  grep -E "^$v +[a-z]+ +ok +incremental " "$W/all2.out" >/dev/null && ok "7: $v incremental the second time" \
    || fail "7: $v not incremental: $(cat "$W/all2.out")"
done
[ "$(wc -l < "$W/phases")" = 10 ] && [ "$(head -1 "$W/phases" | cut -d'|' -f1)" = "job-start " ] \
  && [ "$(tail -1 "$W/phases" | cut -d'|' -f1)" = "job-end " ] && ok "7: --jobs 2: hook phases" || fail "7: phases $(cat "$W/phases")"
[ "$(wc -l < "$W/webhook.json")" = 2 ] && ok "7: second report sent" || fail "7: webhook got $(wc -l < "$W/webhook.json")"
newest() {  # the newest snapshot of vm/ID (`cairn snapshots` lists newest first)
  "$CAIRN" --output json snapshots --id "$1" 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['snapshot'])"
}
hmp $X-run virtio-disk0 flush; hmp $X-run virtio-disk1 flush
copy "$W/xr0.qcow2" "$W/xr0.raw"; copy "$W/xr1.qcow2" "$W/xr1.raw"; copy "$W/p.qcow2" "$W/p.raw"
qemu-img convert -O raw "$W/xo.qcow2" "$W/xo.raw"
restores_to "$(newest $X-run)" vda "$W/xr0.raw" && restores_to "$(newest $X-run)" vdb "$W/xr1.raw" \
  && restores_to "$(newest $X-off)" vda "$W/xo.raw" && restores_to "$(newest plain)" disk0 "$W/p.raw" \
  && ok "7: second run's snapshots restore byte for byte" || fail "7: a second-run restore differs"

echo "failures: $FAILS"
[ $FAILS -eq 0 ]
