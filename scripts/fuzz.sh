#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/ and runs each for
# ${SMELT_FUZZ_SECONDS:-20} seconds from the seed corpus in tests/fuzz/corpus/ (copied, so the
# repository's corpus is not modified). Any crash or sanitizer report fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SMELT_FUZZ_SECONDS:-20}
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DSMELT_FUZZ=ON -DSMELT_BUILD_TESTS=OFF >/dev/null
targets="safetensors recipe tokenizer_json encode token_shard jsonl gguf"
cmake --build build-fuzz -j "${SMELT_BUILD_JOBS:-2}" --target $(for t in $targets; do printf 'fuzz_%s ' "$t"; done)
for target in $targets; do
  corpus=$(mktemp -d)
  cp tests/fuzz/corpus/$target/* "$corpus/"
  echo "fuzzing $target for ${seconds}s"
  # A failing input is written to build-fuzz/ (crash-*) for reproduction.
  status=0
  ./build-fuzz/fuzz_$target "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -artifact_prefix=build-fuzz/ \
    -print_final_stats=1 >build-fuzz/fuzz_$target.log 2>&1 || status=$?
  grep -E "^Done|ERROR|SUMMARY|Test unit written" build-fuzz/fuzz_$target.log || true
  rm -rf "$corpus"
  if [ $status -ne 0 ]; then
    echo "fuzz_$target failed (exit $status); see build-fuzz/fuzz_$target.log"
    tail -40 build-fuzz/fuzz_$target.log
    exit 1
  fi
done
echo "fuzz: no crash, no sanitizer report"
