#!/usr/bin/env bash
# Installs what smelt needs on a fresh Debian/Ubuntu machine (build tools, libraries, default data).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
packages=(cmake ninja-build g++ ccache pkg-config libhwy-dev libgtest-dev nlohmann-json3-dev libcli11-dev libutf8proc-dev fortunes fortunes-min wordnet-base python3-minimal libc6-dev
          clang libclang-rt-14-dev openmpi-bin libopenmpi-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
