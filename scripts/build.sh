#!/usr/bin/env bash
# Configures and builds smelt (Release, Ninja, ccache when present) into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
# Two parallel jobs fit the 2-core, 24 GiB machines this project targets.
cmake --build build -j "${SMELT_BUILD_JOBS:-2}"
