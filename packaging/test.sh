#!/usr/bin/env bash
# Sets everything up on Debian 12 and runs every test, in four trees:
#   build       gcc, optimized: the programs, the Debian packages and the
#               suites that drive them as scripts (libvirt, map, browser,
#               package, lint)
#   build-asan  clang, AddressSanitizer + UndefinedBehaviorSanitizer and
#               -Wthread-safety: every GoogleTest binary
#   build-tsan  clang, ThreadSanitizer: the server and client GoogleTest
#               binaries; it builds beside the ASan tests (which leave part of
#               the two cores idle while they wait on servers and QEMU).
#               CAIRN_TEST_TSAN=1 adds the integration tests (about 25 minutes
#               more: past CI's 45-minute budget, so by hand)
#   build-fuzz  clang, libFuzzer: each fuzzer a short run over its corpus
# The clang trees link with lld: ld.bfd took 4.5 s of CPU for one sanitized
# cairn-server, lld 1.0 s, and these trees link about 80 binaries each. The
# ASan and TSan trees precompile the common system headers (CAIRN_PCH in
# CMakeLists.txt); the gcc tree does not, and so checks every file's includes.
# Two cores: while script suites run (they mostly wait on QEMU, libvirtd and
# Chromium), the next tree builds beside them at a lower priority.
# Usage: bash packaging/test.sh   (CAIRN_TEST_TSAN=1: integration tests under TSan too)
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage's start says how long the run has taken so far (CI's budget).
stage() { echo "== [$(date -u +%H:%M:%S), ${SECONDS}s] $*"; }

bash packaging/install-deps.sh

JOBS="${CAIRN_JOBS:-2}"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# Sanitizer reports fail the test (and a server under test dies at once).
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS="halt_on_error=1:abort_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"

# Runs `ctest ARGS…` in the background, output to LOG; `finish PID LOG`
# waits for it and prints the log.
background_ctest() {
  local log=$1
  shift
  ctest "$@" >"$log" 2>&1 &
  BG_PID=$!
}
finish() {
  local pid=$1 log=$2 rc=0
  wait "$pid" || rc=$?
  cat "$log"
  return "$rc"
}

stage "build (gcc, optimized, -Werror): programs and packages"
# The benchmarks are built by their own scripts (bench/run_*.sh) in Release
# trees; CAIRN_TEST_BENCH=1 builds them here too. Line tables only: the
# packages do not ship debug info, and full -g costs a third of the build.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAIRN_WERROR=ON \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  -DCAIRN_GTEST_DIRS="" \
  -DCAIRN_BUILD_BENCH="$([ "${CAIRN_TEST_BENCH:-0}" = 1 ] && echo ON || echo OFF)" >/dev/null
ninja -C build -j"$JOBS"

stage "script suites (libvirt, map, browser, lint) beside the ASan + UBSan build"
# `package` installs system packages: once, below, alone.
background_ctest /tmp/cairn-script-suites.log --test-dir build -j"$JOBS" --output-on-failure \
  -LE package
SUITES_PID=$BG_PID
# Clang also checks the CAIRN_GUARDED_BY / CAIRN_REQUIRES annotations
# (storage/thread_annotations.h, -Wthread-safety); GCC ignores them.
CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-O0 -gline-tables-only" -DCMAKE_C_FLAGS_DEBUG="-O0 -gline-tables-only" \
  -DCAIRN_SANITIZE=ON -DCAIRN_BUILD_BENCH=OFF -DCAIRN_WERROR=ON -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld \
  -DCAIRN_PCH=ON >/dev/null
nice -n 10 ninja -C build-asan -j"$JOBS"
stage "build (ASan + UBSan) done; waiting for the script suites"
finish "$SUITES_PID" /tmp/cairn-script-suites.log

stage "Debian packages: build, install, back up, restore, upgrade, purge"
cmake --build build --target package
for deb in build/packages/*.deb; do
  echo "lintian $(basename "$deb"):"
  lintian --fail-on error "$deb"
done
ctest --test-dir build --output-on-failure -L package

stage "fuzz smoke (clang, libFuzzer + ASan + UBSan)"
# Each fuzzer a fixed number of runs over its checked-in corpus
# (tests/fuzz/README.md). Only the fuzzers and the parser sources they need
# are built; the unit tests replay the same corpora under ASan below.
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DCAIRN_FUZZ=ON -DCAIRN_WERROR=ON -DCAIRN_BUILD_TESTS=OFF -DCAIRN_BUILD_BENCH=OFF \
  -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld >/dev/null
ninja -C build-fuzz -j"$JOBS" cairn_fuzzers
ctest --test-dir build-fuzz -j"$JOBS" --output-on-failure -L fuzz

stage "tests under ASan + UBSan, beside the ThreadSanitizer build"
tsan_dirs="server;client"
if [ "${CAIRN_TEST_TSAN:-0}" = "1" ]; then tsan_dirs="server;client;integration"; fi
tsan_labels=${tsan_dirs//;/|}  # the folders are the CTest labels
# -O0: a file compiles in 28% less time than at -O1 (server/api_backup.cc
# 8.1 s against 11.2 s of CPU) and the unit tests still take under a minute.
CC=clang CXX=clang++ cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-O0 -gline-tables-only" -DCMAKE_C_FLAGS_DEBUG="-O0 -gline-tables-only" \
  -DCAIRN_TSAN=ON -DCAIRN_GTEST_DIRS="$tsan_dirs" -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld \
  -DCAIRN_BUILD_BENCH=OFF -DCAIRN_WERROR=ON -DCAIRN_PCH=ON >/dev/null
nice -n 10 ninja -C build-tsan -j"$JOBS" cairn_gtests >/tmp/cairn-tsan-build.log 2>&1 &
TSAN_BUILD_PID=$!
asan_rc=0
# The connection-flood test backs up and restores its image twice; 256 MiB
# is its size for the benchmark (bench/run_gate_load.sh), and at -O0 under
# ASan it made that one test 309 of the stage's 1345 test-seconds.
CAIRN_REACH_MIB=64 ctest --test-dir build-asan -j"$JOBS" --output-on-failure -L 'unit|integration' || asan_rc=$?
tsan_build_rc=0
wait "$TSAN_BUILD_PID" || tsan_build_rc=$?
[ "$asan_rc" = 0 ] || exit "$asan_rc"
if [ "$tsan_build_rc" != 0 ]; then
  cat /tmp/cairn-tsan-build.log
  exit "$tsan_build_rc"
fi

stage "tests under ThreadSanitizer ($tsan_labels)"
ctest --test-dir build-tsan -j"$JOBS" --output-on-failure -L "$tsan_labels"
stage "done"
