#!/usr/bin/env bash
# Installs everything Cairn needs to build, test and benchmark on Debian 12.
# Idempotent: packages already present are skipped, so a second run is quick.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git
  clang lld
  libssl-dev libzstd-dev libsqlite3-dev nlohmann-json3-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev libfmt-dev libspdlog-dev
  qemu-system-x86 qemu-utils openssl sqlite3 zstd tzdata
  universal-ctags
  help2man lintian prometheus curl dpkg-dev adduser
  chromium chromium-driver python3-selenium
  libvirt-daemon-system libvirt-clients libvirt-dev libnbd-dev libnbd-bin libxml2-dev curl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
