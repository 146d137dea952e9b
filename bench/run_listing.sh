#!/usr/bin/env bash
# Listing benchmark (issue 16): GET of the groups view and of one group's
# snapshots on a datastore of 600 groups x 1000 snapshots (600,000), served by
# the real cairn-server over loopback HTTPS with the admin token. Prints, per
# request, the first (cold server) time and the median of REPS more, the
# answer's size and entries, and the server's peak RSS (VmHWM, reset before
# each request kind); and how long `cairn-server reindex` takes to fill the
# catalog from the datastore.
#
#   bench/run_listing.sh                      the server of this checkout
#   REV=6833080 bench/run_listing.sh          the server of another commit
#   SERVER_BUILD=dir bench/run_listing.sh     a cairn-server already built in dir
#
# "Before" and "after" are two runs on one machine, e.g. REV=<old> then
# REV=<new> (or the current checkout). The data generator, bench/
# listing_store_gen, is always built from this checkout (older commits do
# not have it); only cairn-server comes from REV.
#
# Environment:
#   BUILD_DIR        Release build of this checkout (default <repo>/build-bench)
#   REV              a commit: `git archive` of it is unpacked and built (Release,
#                    ninja -j2) in CAIRN_BENCH_DIR/listing-rev-<sha12>/, kept
#                    for the next run (remove it by hand; ~20 MiB with its build)
#   SERVER_BUILD     a build dir whose server/cairn-server is used as is
#   CAIRN_BENCH_DIR  where the cached datastore, the REV builds and the
#                    temporary data directory go (default BUILD_DIR; a disk)
#   GROUP_COUNT, SNAPSHOT_COUNT  size of the datastore (default 600 and 1000)
#   GROUP            the group whose snapshots are listed (default vm/400)
#   REPS             timed repetitions after the first request (default 5)
#   BROWSER=1        also time the web UI's groups view in headless Chromium
#                    (bench/webui_render.py; needs chromium, chromium-driver
#                    and python3-selenium)
#   SERVER_ARGS      extra arguments for `cairn-server run`
#
# The datastore is made once by listing_store_gen (through Datastore::Stage/
# Commit with fsync turned off, one syncfs at the end) and cached in
# CAIRN_BENCH_DIR/listing-store-<G>x<S>/store; 600 x 1000 took 6.5 minutes and
# uses 7.0 GiB and 1.8 million inodes (bench/README.md, "Listing"). Each run
# makes a fresh data directory: it starts the server once so that it makes
# its own data directory (catalog, TLS identity, admin token, an empty
# default datastore), replaces stores/default by a symlink to the cached
# store, runs `cairn-server reindex default`, then serves. The temporary data
# directory is removed at the end; the cached store is kept.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-bench}
workdir=${CAIRN_BENCH_DIR:-$build}
groups=${GROUP_COUNT:-600}
snapshots=${SNAPSHOT_COUNT:-1000}
group=${GROUP:-vm/400}
reps=${REPS:-5}
server_args=${SERVER_ARGS:-}

# Warnings are enforced by CI's build; here an -O3-only false positive of the
# compiler must not stop a measurement.
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCAIRN_WERROR=OFF >/dev/null
ninja -C "$build" -j2 bench/listing_store_gen
mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)

if [ -n "${SERVER_BUILD:-}" ]; then
  server_bin=$(cd "$SERVER_BUILD" && pwd)/server/cairn-server
  server_desc="$server_bin (given)"
elif [ -n "${REV:-}" ]; then
  sha=$(git -C "$repo" rev-parse --verify "$REV^{commit}")
  src="$workdir/listing-rev-${sha:0:12}"
  if [ ! -f "$src/CMakeLists.txt" ]; then
    rm -rf "$src"
    mkdir -p "$src"
    git -C "$repo" archive "$sha" | tar -x -C "$src"
  fi
  cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCAIRN_WERROR=OFF \
    -DCAIRN_BUILD_BENCH=OFF >/dev/null
  ninja -C "$src/build" -j2 server/cairn-server
  server_bin="$src/build/server/cairn-server"
  server_desc="commit ${sha:0:12} ($(git -C "$repo" log -1 --format=%s "$sha" | cut -c1-60))"
else
  ninja -C "$build" -j2 server/cairn-server
  server_bin="$build/server/cairn-server"
  server_desc="this checkout, $(git -C "$repo" rev-parse --short HEAD)$(
    git -C "$repo" diff --quiet HEAD -- server storage || echo ' + local changes')"
fi

# --- The cached datastore ---------------------------------------------------
cache="$workdir/listing-store-${groups}x${snapshots}"
if [ ! -f "$cache/done" ]; then
  rm -rf "$cache"
  mkdir -p "$cache"
  echo "== generating $groups x $snapshots snapshots in $cache/store (once; kept for later runs)"
  df -h "$workdir" | tail -1
  gen_start=$(date +%s.%N)
  "$build/bench/listing_store_gen" "$cache/store" --groups "$groups" --snapshots "$snapshots"
  gen_end=$(date +%s.%N)
  awk -v a="$gen_start" -v b="$gen_end" 'BEGIN { printf "generation took %.0f s\n", b - a }'
  echo "disk use: $(du -sh "$cache/store" | cut -f1), $(find "$cache/store" | wc -l) inodes"
  touch "$cache/done"
fi

# --- A fresh data directory around it ---------------------------------------
data=$(mktemp -d "$workdir/listing-data.XXXXXX")
log="$data/server.log"
pid=""
stop_server() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  pid=""
}
cleanup() {
  stop_server
  rm -rf "$data"
}
trap cleanup EXIT

port=""
start_server() {
  # shellcheck disable=SC2086  # SERVER_ARGS is a list of words
  "$server_bin" --data "$data/srv" run --listen 127.0.0.1:0 $server_args >"$log" 2>&1 &
  pid=$!
  port=""
  for _ in $(seq 600); do
    port=$(sed -n 's|.*listening on https://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$log" | head -1)
    [ -n "$port" ] && [ -s "$data/srv/admin.token" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "cairn-server exited at start:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "cairn-server did not start in 60 s:" >&2
  cat "$log" >&2
  exit 1
}

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "== server: $server_desc"
echo "== datastore: $cache/store ($groups groups x $snapshots snapshots)"
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg), CPU pressure $(awk '/^some/ { print $2 }' /proc/pressure/cpu 2>/dev/null)"

start_server  # first start: catalog, TLS identity, admin token, empty default store
stop_server
if [ ! -d "$data/srv/stores/default/.chunks" ]; then
  echo "the server made no $data/srv/stores/default; has the data directory layout changed?" >&2
  exit 1
fi
rm -rf "$data/srv/stores/default"
ln -s "$cache/store" "$data/srv/stores/default"

# Reindex: fills the catalog (cairn.db) from the datastore folder.
ri_start=$(date +%s.%N)
if [ -x /usr/bin/time ]; then
  /usr/bin/time -f '%M' -o "$data/reindex.rss" "$server_bin" --data "$data/srv" reindex default \
    >"$data/reindex.out" 2>&1 || { cat "$data/reindex.out" >&2; exit 1; }
else
  "$server_bin" --data "$data/srv" reindex default >"$data/reindex.out" 2>&1 ||
    { cat "$data/reindex.out" >&2; exit 1; }
fi
ri_end=$(date +%s.%N)
awk -v a="$ri_start" -v b="$ri_end" -v out="$(head -1 "$data/reindex.out")" \
  -v rss="$(cat "$data/reindex.rss" 2>/dev/null || echo)" 'BEGIN {
  printf "reindex: %.2f s, peak RSS %s (%s)\n", b - a,
    (rss == "" ? "?" : sprintf("%.0f MiB", rss / 1024)), out
}'
echo "catalog: $(du -h "$data/srv/cairn.db" | cut -f1)"

start_server
token=$(head -1 "$data/srv/admin.token")
echo "== cairn-server pid $pid on port $port"

# One request: prints "seconds server-seconds bytes" (time_total of curl,
# TLS handshake included; then the server's part: from the request sent to
# the answer's first byte, time_starttransfer - time_pretransfer) and keeps
# the body in $data/body.
request() {
  local code
  code=$(curl -sk -o "$data/body" \
    -w '%{http_code} %{time_total} %{time_pretransfer} %{time_starttransfer} %{size_download}' \
    -H "Authorization: CairnToken $token" "https://127.0.0.1:$port$1")
  if [ "${code%% *}" != 200 ]; then
    echo "GET $1 answered ${code%% *}:" >&2
    head -c 500 "$data/body" >&2
    echo >&2
    exit 1
  fi
  echo "${code#* }" | awk '{ printf "%s %.6f %s\n", $1, $3 - $2, $4 }'
}

entries() {
  if command -v jq >/dev/null; then jq length "$data/body"; else echo "?"; fi
}

rows=()
measure() {
  local path=$1 first times=() stimes=() hwm median smedian bytes n one
  echo 5 >"/proc/$pid/clear_refs"  # VmHWM starts again from the current RSS
  first=$(request "$path")
  n=$(entries)
  for _ in $(seq "$reps"); do
    one=$(request "$path")
    times+=("$(echo "$one" | cut -d' ' -f1)")
    stimes+=("$(echo "$one" | cut -d' ' -f2)")
  done
  hwm=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")
  median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ a[NR] = $1 } END {
    print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }')
  smedian=$(printf '%s\n' "${stimes[@]}" | sort -g | awk '{ a[NR] = $1 } END {
    print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }')
  bytes=${first##* }
  printf 'GET %s\n  first %.3f s, median of %d %.3f s (all: %s), server part %.3f s, %s bytes, %s entries, server VmHWM %s MiB\n' \
    "$path" "${first%% *}" "$reps" "$median" "${times[*]}" "$smedian" "$bytes" "$n" "$hwm"
  # shellcheck disable=SC2016  # the backquotes are Markdown
  rows+=("$(printf '| `%s` | %.3f | %.3f | %.3f | %s | %s | %s |' "$path" "${first%% *}" "$median" "$smedian" \
    "$(awk -v b="$bytes" 'BEGIN { if (b < 1e6) printf "%.1f kB", b / 1e3; else printf "%.2f MB", b / 1e6 }')" "$n" "$hwm")")
}

base=/api/v1/datastores/default
measure "$base/groups"
measure "$base/snapshots?group=$group"
measure "$base/snapshots?group=$group&limit=50"

echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg), CPU pressure $(awk '/^some/ { print $2 }' /proc/pressure/cpu 2>/dev/null)"
echo
echo "| request | first s | median s | server s (median) | answer | entries | server VmHWM MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"

# The web UI's groups view in headless Chromium (issue 15): time from the
# navigation's start to a rendered, filterable table of every group.
if [ "${BROWSER:-0}" = 1 ]; then
  echo
  echo "== web UI in headless Chromium: #/content?store=default"
  /usr/bin/python3 "$repo/bench/webui_render.py" "https://127.0.0.1:$port" "$token" "$reps" "$groups"
fi
