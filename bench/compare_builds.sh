#!/bin/bash
# Two builds of smelt side by side on this machine: alternating runs of `smelt bench` (MoE and
# dense training step, MoE layer, attention, decoding), best of N per figure, so that a shared
# machine's drifts hit both alike. For checking that a change costs no CPU speed.
# Usage: bash bench/compare_builds.sh BEFORE_SMELT AFTER_SMELT [rounds]   (prints one JSON line per figure)
set -euo pipefail
before=$1
after=$2
rounds=${3:-5}
for _ in $(seq 1 "$rounds"); do
  for who in before after; do
    bin=${!who}
    $bin bench train --threads 2 | sed "s/^/$who train_moe /"
    $bin bench train --threads 2 --dense | sed "s/^/$who train_dense /"
    $bin bench moe --threads 2 --repeats 7 | head -1 | sed "s/^/$who moe /"
    $bin bench attention --threads 2 --repeats 5 | sed "s/^/$who attention /"
    $bin bench decode --threads 2 --repeats 3 | sed "s/^/$who decode_moe /"
    $bin bench decode --threads 2 --repeats 3 --dense | sed "s/^/$who decode_dense /"
  done
done | python3 -c '
import collections, json, sys
# figure → (key in the JSON, higher is better)
keys = {"train_moe": [("tokens_per_s", True)], "train_dense": [("tokens_per_s", True)],
        "moe": [("moe_forward_ms", False), ("moe_forward_backward_ms", False)],
        "attention": [("forward_ms", False), ("forward_backward_ms", False)],
        "decode_moe": [("decode_tokens_per_s", True), ("prefill_ms", False)],
        "decode_dense": [("decode_tokens_per_s", True), ("prefill_ms", False)]}
best = {}
for line in sys.stdin:
    who, fig, js = line.split(" ", 2)
    j = json.loads(js)
    for key, higher in keys[fig]:
        v = j[key]
        k = (who, fig, key)
        best[k] = v if k not in best else (max if higher else min)(best[k], v)
for fig, ks in keys.items():
    for key, higher in ks:
        b, a = best[("before", fig, key)], best[("after", fig, key)]
        ratio = a / b if higher else b / a
        print(json.dumps({"figure": fig, "metric": key, "before": round(b, 2), "after": round(a, 2), "after_speed_vs_before": round(ratio, 3)}))
'
