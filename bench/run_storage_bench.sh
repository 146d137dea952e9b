#!/usr/bin/env bash
# Builds bench/storage_bench (Release, its own build dir), measures the
# reference SHA-256 speed with `openssl speed`, runs the storage benchmarks and
# prints how they compare with the targets in bench/README.md.
#
#   bench/run_storage_bench.sh [storage_bench flags...]
#
# Environment: BUILD_DIR (default <repo>/build-bench), REPS (repetitions per
# benchmark, median reported; default 3), CAIRN_BENCH_DIR (where the temporary
# datastore goes; default BUILD_DIR — it must be on a disk, not tmpfs).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-bench}
reps=${REPS:-3}
export CAIRN_BENCH_DIR=${CAIRN_BENCH_DIR:-$build}

cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$build" -j2 storage_bench

fstype=$(df --output=fstype "$CAIRN_BENCH_DIR" | tail -1 | tr -d ' ')
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "== datastore dir: $CAIRN_BENCH_DIR ($fstype)"
if [ "$fstype" = tmpfs ]; then
  echo "warning: $CAIRN_BENCH_DIR is tmpfs; fsync_on numbers will not mean anything" >&2
fi
cpu_pressure() { if [ -r /proc/pressure/cpu ]; then head -1 /proc/pressure/cpu; else uptime; fi; }
echo "== CPU pressure before: $(cpu_pressure)"

# OpenSSL 3.0 prints "sha256  <n>k" in 1000s of bytes per second; -bytes
# makes it hash 4 MiB buffers like Cairn's chunks.
openssl_out=$(openssl speed -evp sha256 -bytes 4194304 -seconds 3 2>/dev/null)
openssl_kbps=$(awk '$1 == "sha256" { v = $NF; sub(/k$/, "", v); print v }' <<<"$openssl_out")
if [ -z "$openssl_kbps" ]; then
  echo "could not parse openssl speed output:" >&2
  echo "$openssl_out" >&2
  exit 1
fi
echo "== openssl speed -evp sha256 (4 MiB): $(awk -v k="$openssl_kbps" 'BEGIN { printf "%.0f MB/s", k / 1000 }')"

json="$build/storage_bench.json"
"$build/bench/storage_bench" --benchmark_repetitions="$reps" \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="$json" --benchmark_out_format=json "$@"

echo "== CPU pressure after: $(cpu_pressure)"
python3 - "$json" "$openssl_kbps" <<'PY'
import json, sys

data = json.load(open(sys.argv[1]))
openssl = float(sys.argv[2]) * 1000  # bytes per second
runs = {}
for b in data["benchmarks"]:
    if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
        continue
    if b.get("error_occurred"):
        print(f"ERROR in {b['name']}: {b.get('error_message')}")
        continue
    # "Sha256/random/min_time:1.000/real_time" -> "Sha256/random"
    name = "/".join(p for p in b["run_name"].split("/") if not p.startswith(("min_time", "real_time")))
    wall = b["bytes_per_second"]
    cpu = wall * b["real_time"] / b["cpu_time"] if b["cpu_time"] > 0 else float("nan")
    runs[name] = (wall, cpu)

def mb(v):
    return f"{v / 1e6:8.0f} MB/s"

def get(name):
    if name not in runs:
        print(f"  {name}: not run (filtered out or failed)")
        return None
    return runs[name]

print()
print("== Comparison (MB = 10^6 bytes; wall time; cpu-time figure in brackets)")
sha = get("Sha256/random")
if sha:
    pct = 100 * sha[0] / openssl
    verdict = "met" if pct >= 90 else "MISSED"
    print(f"SHA-256: ours {mb(sha[0])} vs openssl {mb(openssl)} -> {pct:.0f}%"
          f"  (target: within 10%: {verdict})")
for kind in ("random", "text"):
    ref = get(f"HashCompress/{kind}")
    ins = get(f"InsertDataNew/{kind}/fsync_off")
    if ref and ins:
        pct = 100 * ins[0] / ref[0]
        pct_cpu = 100 * ins[1] / ref[1]
        verdict = "met" if pct >= 70 else "MISSED"
        print(f"insert new {kind:6} fsync off {mb(ins[0])} vs hash+compress {mb(ref[0])}"
              f" -> {pct:.0f}% [{pct_cpu:.0f}%]  (target >= 70%: {verdict})")
    ins_sync = runs.get(f"InsertDataNew/{kind}/fsync_on")
    if ins_sync:
        print(f"insert new {kind:6} fsync on  {mb(ins_sync[0])}")
zero_sha = get("Sha256/zero")
zero_detect = get("IsAllZero/zero")
zero_insert = get("InsertDataZero/zero")
if zero_sha and zero_detect and zero_insert:
    verdict = "yes" if zero_insert[0] > 2 * zero_sha[0] else "NO (not faster than hashing)"
    print(f"zero chunk: IsAllZero {mb(zero_detect[0])}, InsertData(zeros) {mb(zero_insert[0])},"
          f" SHA-256 of zeros {mb(zero_sha[0])} -> recognised without hashing: {verdict}")
PY
