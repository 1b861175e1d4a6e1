#!/usr/bin/env bash
# The test command: installs dependencies, builds, fetches the default data, fuzzes every parser
# briefly (libFuzzer + ASan/UBSan; longer with SMELT_FUZZ_SECONDS=600), then runs every suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
bash scripts/fetch_data.sh
SMELT_FUZZ_SECONDS=${SMELT_FUZZ_SECONDS:-15} bash scripts/fuzz.sh
ctest --test-dir build --output-on-failure -j 2
