#!/usr/bin/env bash
# The test command: installs dependencies, builds, fetches the default data, runs every suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
bash scripts/fetch_data.sh
ctest --test-dir build --output-on-failure -j 2
