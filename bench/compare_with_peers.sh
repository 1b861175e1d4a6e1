#!/bin/bash
# Side-by-side figures for the README's performance section: smelt against OpenBLAS (GEMM) and
# PyTorch (training step), alternating runs so that drifts of a shared machine hit both alike.
# Usage: bash bench/compare_with_peers.sh [gemm|train|all] [rounds]   (from the repository root,
# after scripts/build.sh; needs libopenblas-dev and a CPU PyTorch for the peers)
set -euo pipefail
what=${1:-all}
rounds=${2:-5}
SMELT=./build/smelt
PEERS=../shared/bench

if [[ $what == gemm || $what == all ]]; then
  cc -O2 "$PEERS/openblas_gemm.c" -o build/openblas_gemm -lopenblas
  for _ in $(seq 1 "$rounds"); do
    OPENBLAS_NUM_THREADS=2 ./build/openblas_gemm | sed 's/^/openblas /'
    $SMELT bench gemm --threads 2 | sed 's/^/smelt /'
  done | python3 -c '
import collections, json, sys
best = collections.defaultdict(float)
for line in sys.stdin:
    who, js = line.split(" ", 1)
    j = json.loads(js)
    key = (j["M"], j["N"], j["K"], j["transB"])
    best[(who, key)] = max(best[(who, key)], j["gflops"])
for key in sorted({k for (_, k) in best}):
    s, o = best[("smelt", key)], best[("openblas", key)]
    print("M N K transB %s: smelt %.0f openblas %.0f GFLOP/s, ratio %.2f" % (key, s, o, s / o))
'
fi

if [[ $what == train || $what == all ]]; then
  for _ in $(seq 1 "$rounds"); do
    for mode in "" "--dense"; do
      $SMELT bench train --threads 2 $mode | python3 -c 'import json, sys; j = json.loads(sys.stdin.read()); print("smelt", "moe" if j["moe"] else "dense", "tokens/s %.0f" % j["tokens_per_s"], "peak RSS %.0f MiB, expected %.0f MiB (%.2fx)" % (j["peak_rss_mib"], j["expected_mib"], j["rss_over_expected"]), "loss at step 0 %.4f" % j["loss_step0"])'
      python3 "$PEERS/torch_moe_ref.py" --threads 2 $mode 2>/dev/null | tail -1 | python3 -c 'import json, sys; j = json.loads(sys.stdin.read()); print("torch", "moe" if j["moe"] else "dense", "tokens/s %.0f" % j["tokens_per_s"], "peak RSS %.0f MiB" % j["peak_rss_mb"])'
    done
  done
fi
