#!/bin/bash
# Side-by-side figures for the README's performance section: smelt against OpenBLAS (GEMM) and
# PyTorch (training step), alternating runs so that drifts of a shared machine hit both alike.
# Usage: bash bench/compare_with_peers.sh [gemm|train|all] [rounds]   (from the repository root,
# after scripts/build.sh; needs libopenblas-dev and a CPU PyTorch for the peers)
# OpenBLAS is forced to its best kernels for the CPU (OPENBLAS_CORETYPE=SkylakeX with AVX-512,
# Haswell with AVX2; set OPENBLAS_CORETYPE to override): its own detection picks ancient ones on
# some CPUs. Where the CPU has AVX512_BF16, the GEMM rows add smelt's bf16 arithmetic
# (--precision bf16) and the training rows a bf16 step of each program (smelt's "precision":
# "bf16", PyTorch's CPU bf16 autocast).
set -euo pipefail
what=${1:-all}
rounds=${2:-5}
SMELT=./build/smelt
PEERS=../shared/bench
if grep -q avx512f /proc/cpuinfo; then best_core=SkylakeX; else best_core=Haswell; fi
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$best_core}
bf16=no
if grep -q avx512_bf16 /proc/cpuinfo; then bf16=yes; fi
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); OpenBLAS core type $OPENBLAS_CORETYPE; AVX512_BF16 $bf16"

if [[ $what == gemm || $what == all ]]; then
  cc -O2 "$PEERS/openblas_gemm.c" -o build/openblas_gemm -lopenblas
  for _ in $(seq 1 "$rounds"); do
    OPENBLAS_NUM_THREADS=2 ./build/openblas_gemm | sed 's/^/openblas /'
    $SMELT bench gemm --threads 2 | sed 's/^/smelt /'
    if [[ $bf16 == yes ]]; then $SMELT bench gemm --threads 2 --precision bf16 | sed 's/^/smelt-bf16 /'; fi
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
    line = "M N K transB %s: smelt %.0f openblas %.0f GFLOP/s, ratio %.2f" % (key, s, o, s / o)
    if ("smelt-bf16", key) in best:
        b = best[("smelt-bf16", key)]
        line += "; smelt bf16 %.0f GFLOP/s (%.2fx its f32)" % (b, b / s)
    print(line)
'
fi

if [[ $what == train || $what == all ]]; then
  # The peer script's MoE adds bf16 expert outputs into an f32 buffer, which index_add_ refuses
  # under CPU autocast: a copy with the one cast it needs (the arithmetic is unchanged).
  torch_ref=build/torch_moe_ref.py
  sed 's/out.index_add_(0, tok, ex(x\[tok\]) \* w\[tok, slot, None\])/out.index_add_(0, tok, (ex(x[tok]) * w[tok, slot, None]).to(out.dtype))/' \
    "$PEERS/torch_moe_ref.py" > "$torch_ref"
  grep -q 'to(out.dtype)' "$torch_ref" || { echo "compare_with_peers: the peer script changed; patch it by hand" >&2; exit 1; }
  precisions="f32"
  if [[ $bf16 == yes ]]; then precisions="f32 bf16"; fi
  for _ in $(seq 1 "$rounds"); do
    for mode in "" "--dense"; do
      for p in $precisions; do
        $SMELT bench train --threads 2 --precision "$p" $mode | python3 -c 'import json, sys; j = json.loads(sys.stdin.read()); print("smelt", j["precision"], "moe" if j["moe"] else "dense", "tokens/s %.0f" % j["tokens_per_s"], "peak RSS %.0f MiB, expected %.0f MiB (%.2fx)" % (j["peak_rss_mib"], j["expected_mib"], j["rss_over_expected"]), "loss at step 0 %.4f" % j["loss_step0"])'
        python3 "$torch_ref" --threads 2 --dtype "$p" $mode 2>/dev/null | tail -1 | python3 -c 'import json, sys; j = json.loads(sys.stdin.read()); print("torch", "bf16" if j["bf16"] else "f32", "moe" if j["moe"] else "dense", "tokens/s %.0f" % j["tokens_per_s"], "peak RSS %.0f MiB" % j["peak_rss_mb"])'
      done
    done
  done
fi
