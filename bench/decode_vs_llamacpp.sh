#!/bin/bash
# Decoding speed, batch 1, 2 threads, the same model in one run: smelt (`smelt bench decode
# --model`, weights f32, bf16, q8_0, q4_0 and q4_k) against llama.cpp (`llama-bench`, GGUF
# exports of the same weights as F32, BF16, Q8_0, Q4_0 and Q4_K: smelt's quantiser writes the
# blocks llama.cpp's would, so both decode the same quantised weights). Each type's two runs
# follow each other, so that a shared machine's drifts hit both alike; the best of the rounds is
# reported, with the rounds' median and the median of each round's smelt / llama.cpp ratio:
# prompt tokens/s (prefill of --prompt tokens) and generated tokens/s (--gen tokens after it).
# Usage: [TYPES="q4_0 q4_k"] bash bench/decode_vs_llamacpp.sh [rounds] [prompt] [gen]
# (from the repository root, after scripts/build.sh; fetches SmolLM2 and builds llama.cpp into
# .cache/ when missing; TYPES picks some of the weight types)
set -euo pipefail
rounds=${1:-3}
prompt=${2:-64}
gen=${3:-64}
types=${TYPES:-f32 bf16 q8_0 q4_0 q4_k}
SMELT=./build/smelt
gguf=$(bash scripts/fetch_smollm2.sh)
llama=$(bash scripts/build_llamacpp.sh)
work=.cache/bench_decode
mkdir -p "$work"
[ -d "$work/smollm2" ] || $SMELT import --model "$gguf" --out "$work/smollm2" >/dev/null
for type in $types; do
  [ -s "$work/smollm2_$type.gguf" ] || $SMELT export --model "$work/smollm2" --format gguf --type "$type" --out "$work/smollm2_$type.gguf" >/dev/null
done
grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /cpu: /'
for round in $(seq 1 "$rounds"); do
  for type in $types; do
    echo "smelt $type $round $($SMELT bench decode --model "$work/smollm2" --weights "$type" --seq "$prompt" --new-tokens "$gen" --repeats 1 --threads 2)"
    "$llama/build/bin/llama-bench" -m "$work/smollm2_$type.gguf" -p "$prompt" -n "$gen" -t 2 -r 1 -o jsonl 2>/dev/null |
      sed "s/^/llama.cpp $type $round /"
  done
done | python3 -c '
import collections, json, statistics, sys
runs = collections.defaultdict(dict)  # (impl, weights, phase) -> {round: tokens/s}
for line in sys.stdin:
    if not line.startswith(("smelt", "llama.cpp")):
        print(line.strip()); continue
    who, kind, rnd, js = line.split(" ", 3)
    j = json.loads(js)
    if who == "smelt":
        runs[(who, kind, "prefill")][rnd] = j["prefill_tokens_per_s"]
        runs[(who, kind, "decode")][rnd] = j["decode_tokens_per_s"]
    else:
        runs[(who, kind, "prefill" if j["n_prompt"] > 0 else "decode")][rnd] = j["avg_ts"]
for (who, kind, phase), v in sorted(runs.items()):
    row = {"bench": "decode_vs_llamacpp", "impl": who, "weights": kind, "phase": phase,
           "tokens_per_s": round(max(v.values()), 1), "median": round(statistics.median(v.values()), 1), "rounds": len(v)}
    peer = runs.get(("llama.cpp", kind, phase), {})
    if who == "smelt" and peer:  # per round: smelt over the llama.cpp run right after it
        row["median_ratio_to_llamacpp"] = round(statistics.median(v[r] / peer[r] for r in v if r in peer), 3)
    print(json.dumps(row))
'
