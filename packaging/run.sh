#!/usr/bin/env bash
# Sets everything up on Debian 12, builds Cairn and starts cairn-server on its
# embedded default: data in $CAIRN_DATA or ./cairn-data, datastore "default",
# SQLite catalog, HTTPS on 127.0.0.1:8107. It prints the URL, the certificate
# fingerprint and (on first start) the admin token. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j"${CAIRN_JOBS:-2}" cairn-server
exec ./build/server/cairn-server run "$@"
