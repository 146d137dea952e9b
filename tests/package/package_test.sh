#!/usr/bin/env bash
# The Debian packages, installed for real (CTest label `package`; root; it
# installs and purges system packages, so packaging/test.sh runs it once,
# outside the ASan pass):
#   1. apt-get install ./cairn-server_N.deb ./cairn-client_N.deb
#   2. the installed server started as user cairn with the installed settings,
#      the way cairn-server.service does (ExecStart of the installed unit; CI
#      has no systemd), on a free loopback port (a flag, which overrides the file)
#   3. a qcow2 backed up with the installed client and restored byte for byte
#   4. GET /metrics checked with promtool
#   5. N+1 (the same tree, Debian revision + 1) installed over it; the
#      snapshot restored again, identical
#   6. both purged: nothing of them left but the data directory /var/lib/cairn
#
#   tests/package/package_test.sh BUILD_DIR
# BUILD_DIR/packages must hold the .debs (cmake --build BUILD_DIR --target package).
set -euo pipefail

build=$(cd "${1:?usage: package_test.sh BUILD_DIR}" && pwd)
fail() { echo "package_test: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

[ "$(id -u)" = 0 ] || fail "needs root (it installs packages)"
for tool in apt-get dpkg-query cpack qemu-img qemu-io promtool curl setpriv python3; do
  command -v "$tool" >/dev/null || fail "$tool not found"
done
shopt -s nullglob
server_debs=("$build"/packages/cairn-server_*.deb)
client_debs=("$build"/packages/cairn-client_*.deb)
[ ${#server_debs[@]} = 1 ] && [ ${#client_debs[@]} = 1 ] ||
  fail "want exactly one cairn-server and one cairn-client .deb in $build/packages (cmake --build $build --target package)"
server_deb=${server_debs[0]}
client_deb=${client_debs[0]}

marker=/var/lib/cairn/.cairn-package-test
if dpkg-query -W -f='${Status}' cairn-server 2>/dev/null | grep -q installed ||
   dpkg-query -W -f='${Status}' cairn-client 2>/dev/null | grep -q installed; then
  fail "cairn-server or cairn-client is installed already; this test would remove it"
fi
if [ -e /var/lib/cairn ] && [ ! -e "$marker" ]; then
  fail "/var/lib/cairn exists and is not this test's: it never removes someone's data"
fi
rm -rf /var/lib/cairn

work=$(mktemp -d /tmp/cairn-package-test.XXXXXX)
chmod 0755 "$work"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" != 1 ]; then
    apt-get purge -y -q cairn-server cairn-client >/dev/null 2>&1 || true
    rm -rf "$work"
    [ -e "$marker" ] && rm -rf /var/lib/cairn
  fi
  return 0
}
trap cleanup EXIT

# N+1: the same files, the next Debian revision.
step "build N+1 with cpack"
release=$(dpkg-deb -f "$server_deb" Version | sed 's/.*-//')
next=$((release + 1))
(cd "$build" && cpack -G DEB -D CPACK_DEBIAN_PACKAGE_RELEASE=$next -B "$work/next" >/dev/null) ||
  fail "cpack of revision $next"
next_debs=("$work"/next/cairn-server_*-"$next"_*.deb "$work"/next/cairn-client_*-"$next"_*.deb)
[ ${#next_debs[@]} = 2 ] || fail "cpack made no revision-$next packages"

step "install $(basename "$server_deb") $(basename "$client_deb")"
apt-get install -y -q --no-install-recommends "$server_deb" "$client_deb" ||
  fail "apt-get install of the packages"
touch "$marker"
getent passwd cairn >/dev/null || fail "postinst made no user cairn"
[ "$(stat -c '%U %a' /var/lib/cairn)" = "cairn 750" ] ||
  fail "/var/lib/cairn is $(stat -c '%U %a' /var/lib/cairn), want cairn 750"
for f in /usr/bin/cairn-server /usr/bin/cairn /etc/cairn/server.conf \
         /usr/share/cairn/web/index.html /usr/share/man/man8/cairn-server.8.gz \
         /usr/share/man/man1/cairn.1.gz /usr/share/bash-completion/completions/cairn \
         /lib/systemd/system/cairn-server.service; do
  [ -e "$f" ] || [ -e "/usr$f" ] || fail "$f not installed"
done

unit=$(ls /lib/systemd/system/cairn-server.service /usr/lib/systemd/system/cairn-server.service 2>/dev/null | head -1)
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
unit_user=$(sed -n 's/^User=//p' "$unit")
[ -n "$exec_start" ] && [ "$unit_user" = cairn ] || fail "unit has no ExecStart or runs as '$unit_user'"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
fi

# The installed server, as the unit starts it: its user, its command line
# (with the installed settings file), a clean environment, cwd /.
start_server() {
  local log=$work/server-$1.log
  # shellcheck disable=SC2086
  (cd / && exec setpriv --reuid=cairn --regid=cairn --init-groups --no-new-privs -- \
    env -i PATH=/usr/bin:/bin $exec_start --listen 127.0.0.1:0) \
    >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    port=$(sed -n 's|^cairn-server listening on https://127.0.0.1:\([0-9]*\)/$|\1|p' "$log")
    fp=$(sed -n 's/^certificate fingerprint (SHA-256): //p' "$log")
    [ -n "$port" ] && [ -n "$fp" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$log"; fail "the server exited"; }
    sleep 0.2
  done
  [ -n "$port" ] || { cat "$log"; fail "the server did not start"; }
  # The settings file was read: its data directory is the one in use.
  grep -q "^data directory: /var/lib/cairn$" "$log" || { cat "$log"; fail "not serving /var/lib/cairn"; }
}
stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || fail "the server did not stop cleanly on SIGTERM"
  server_pid=""
}

step "start the installed server as cairn"
start_server 1
[ "$(stat -c %U /var/lib/cairn/admin.token)" = cairn ] || fail "admin.token is not the user cairn's"
install -m 0600 /var/lib/cairn/admin.token "$work/token"
export CAIRN_REPO=https://127.0.0.1:$port/default CAIRN_FINGERPRINT=$fp
unset CAIRN_DATA

step "back up a qcow2 with the installed client"
qemu-img create -q -f qcow2 "$work/disk.qcow2" 64M
qemu-io -f qcow2 -c "write -P 0x5a 0 6M" -c "write -P 0xc3 20M 5M" -c "write -P 0x01 63M 512k" \
  "$work/disk.qcow2" >/dev/null
qemu-img convert -O raw "$work/disk.qcow2" "$work/expected.raw"
/usr/bin/cairn --token-file "$work/token" backup image --id 100 "$work/disk.qcow2" --output json \
  >"$work/backup.json" || fail "backup image"
snapshot=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot"])' "$work/backup.json")
archive=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["disks"][0]["archive"])' "$work/backup.json")
[ -n "$snapshot" ] && [ -n "$archive" ] || fail "no snapshot in the backup's summary"

step "restore $snapshot $archive"
/usr/bin/cairn --token-file "$work/token" restore "$snapshot" "$archive" "$work/restored-1.raw" ||
  fail "restore"
cmp "$work/expected.raw" "$work/restored-1.raw" || fail "restored image differs"

step "GC, then GET /metrics | promtool check metrics"
/usr/bin/cairn --token-file "$work/token" gc >/dev/null || fail "cairn gc"
curl -sS --fail -k -H "Authorization: CairnToken $(cat "$work/token")" \
  "https://127.0.0.1:$port/metrics" >"$work/metrics.txt" || fail "GET /metrics"
promtool check metrics <"$work/metrics.txt" || fail "promtool check metrics"
grep -q '^cairn_datastore_chunks{store="default"} [1-9]' "$work/metrics.txt" ||
  fail "no chunk count of datastore default in /metrics"
grep -q '^cairn_group_last_backup_timestamp_seconds{store="default",group="vm/100"} ' \
  "$work/metrics.txt" || fail "no last backup of vm/100 in /metrics"
stop_server

step "upgrade to revision $next"
apt-get install -y -q --no-install-recommends "${next_debs[@]}" || fail "apt-get install of N+1"
for p in cairn-server cairn-client; do
  v=$(dpkg-query -W -f='${Version}' "$p")
  [ "${v##*-}" = "$next" ] || fail "$p is at $v after the upgrade"
done
start_server 2
export CAIRN_REPO=https://127.0.0.1:$port/default
[ "$fp" = "$CAIRN_FINGERPRINT" ] || fail "the certificate changed in the upgrade"
/usr/bin/cairn --token-file "$work/token" restore "$snapshot" "$archive" "$work/restored-2.raw" ||
  fail "restore after the upgrade"
cmp "$work/expected.raw" "$work/restored-2.raw" || fail "restored image differs after the upgrade"
stop_server

step "purge both"
apt-get purge -y -q cairn-server cairn-client || fail "apt-get purge"
left=""
for p in cairn-server cairn-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'not-installed\|^$' ||
    [ -z "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" ] || left+=" package:$p"
done
for f in /usr/bin/cairn-server /usr/bin/cairn /etc/cairn /usr/share/cairn \
         /lib/systemd/system/cairn-server.service /usr/lib/systemd/system/cairn-server.service \
         /usr/share/man/man8/cairn-server.8.gz /usr/share/man/man1/cairn.1.gz \
         /usr/share/bash-completion/completions/cairn \
         /usr/share/bash-completion/completions/cairn-server \
         /etc/systemd/system/multi-user.target.wants/cairn-server.service \
         /var/lib/systemd/deb-systemd-helper-enabled/cairn-server.service.dsh-also; do
  [ -e "$f" ] && left+=" $f"
done
getent passwd cairn >/dev/null && left+=" user:cairn"
getent group cairn >/dev/null && left+=" group:cairn"
[ -z "$left" ] || fail "left after purge:$left"
[ -d /var/lib/cairn/stores/default ] && [ -f /var/lib/cairn/cairn.db ] || fail "purge removed the data directory"
echo "package_test: OK (installed, backed up, restored, metrics, upgraded to -$next, restored, purged)"
