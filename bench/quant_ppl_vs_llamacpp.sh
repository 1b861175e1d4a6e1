#!/bin/bash
# What quantised weights cost in perplexity, smelt against llama.cpp on the same weights and text:
# smelt eval --weights f32|q8_0|q4_0|q4_k on SmolLM2 (imported), and llama-perplexity on smelt's
# GGUF exports of the same weights (F32, Q8_0, Q4_0, Q4_K; TYPES="..." picks some, f32 first). The two tools window the text differently
# (smelt scores every token of disjoint windows, llama-perplexity the second half of each), so
# each type is compared by its perplexity relative to the same tool's f32.
# Usage: [TYPES="f32 q4_k"] bash bench/quant_ppl_vs_llamacpp.sh [TEXT] [CTX]   (default: 60 kB of the held-out fortunes)
set -euo pipefail
text=${1:-}
ctx=${2:-256}
SMELT=./build/smelt
gguf=$(bash scripts/fetch_smollm2.sh)
llama=$(bash scripts/build_llamacpp.sh)
work=.cache/bench_decode
mkdir -p "$work"
if [ -z "$text" ]; then
  [ -f data/fortunes/val.txt ] || bash scripts/fetch_data.sh >/dev/null
  text=$work/heldout.txt
  head -c 60000 data/fortunes/val.txt >"$text"
fi
[ -d "$work/smollm2" ] || $SMELT import --model "$gguf" --out "$work/smollm2" >/dev/null
grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /cpu: /'
for type in ${TYPES:-f32 q8_0 q4_0 q4_k}; do
  [ -s "$work/smollm2_$type.gguf" ] || $SMELT export --model "$work/smollm2" --format gguf --type "$type" --out "$work/smollm2_$type.gguf" >/dev/null
  smelt_ppl=$($SMELT eval --model "$work/smollm2" --data "$text" --seq-len "$ctx" --weights "$type" --threads 2 --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])')
  llama_ppl=$("$llama/build/bin/llama-perplexity" -m "$work/smollm2_$type.gguf" -f "$text" -c "$ctx" -b "$ctx" -t 2 2>&1 |
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
  echo "{\"bench\": \"quant_ppl\", \"weights\": \"$type\", \"smelt_ppl\": $smelt_ppl, \"llama_cpp_ppl\": $llama_ppl}"
done | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
base = rows[0]
for r in rows:
    r["smelt_vs_f32"] = round(r["smelt_ppl"] / base["smelt_ppl"], 4)
    r["llama_cpp_vs_f32"] = round(r["llama_cpp_ppl"] / base["llama_cpp_ppl"], 4)
    print(json.dumps(r))
'
