#!/usr/bin/env bash
# The pipeline's robustness harness (issue 20): the default recipe, unchanged but for its
# domains, on the four default corpora and on two other four-domain sets built from Debian
# packages (scripts/experiments/domain_sets.py), then one table per run. About 15 minutes of
# pipeline per set on 2 cores; a finished run's stages are skipped on rerun.
#   scripts/experiments/domain_sets.sh [RECIPE [RUN_PREFIX]]
set -euo pipefail
cd "$(dirname "$0")/../.."
recipe=${1:-configs/pipeline.json}
prefix=${2:-runs/domains}
smelt=./build/smelt
[ -x "$smelt" ] || bash scripts/build.sh
[ -f data/domains/prose.txt ] || bash scripts/fetch_data.sh
[ -f data/domain_sets/langs/cmake.txt ] || python3 scripts/experiments/domain_sets.py build
sets=(default sysdocs langs)
for set in "${sets[@]}"; do
  domains=()
  if [ "$set" != default ]; then
    for f in data/domain_sets/"$set"/*.txt; do domains+=("$(basename "$f" .txt)=$f"); done
  fi
  $smelt pipeline "$recipe" --out "${prefix}_$set" ${domains:+--domains "$(IFS=,; echo "${domains[*]}")"}
done
python3 scripts/experiments/domain_sets.py table "${sets[@]/#/${prefix}_}"
