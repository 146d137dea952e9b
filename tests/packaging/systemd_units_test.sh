#!/bin/sh
# systemd-analyze verify on packaging/systemd/cairn-backup.{service,timer}.
# The service's /usr/bin/cairn is replaced by the built binary (verify checks
# that ExecStart is executable); man pages are not looked up.
# Usage: systemd_units_test.sh SOURCE_DIR CAIRN_BINARY. Exit 77 (skipped)
# without systemd-analyze.
set -eu
src=$1
cairn=$2
command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze not installed"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/bin/cairn|$cairn|" "$src/packaging/systemd/cairn-backup.service" > "$tmp/cairn-backup.service"
cp "$src/packaging/systemd/cairn-backup.timer" "$tmp/"
grep -q '^Type=oneshot$' "$tmp/cairn-backup.service"
grep -q 'backup all' "$tmp/cairn-backup.service"
grep -q '^OnCalendar=daily$' "$tmp/cairn-backup.timer"
grep -q '^Persistent=true$' "$tmp/cairn-backup.timer"
grep -q '^RandomizedDelaySec=' "$tmp/cairn-backup.timer"
out=$(cd "$tmp" && systemd-analyze verify --man=no cairn-backup.service cairn-backup.timer 2>&1) || {
  echo "$out"; exit 1; }
# verify warns without failing for some mistakes: any output is one.
if [ -n "$out" ]; then echo "$out"; exit 1; fi
echo "systemd units verified"
