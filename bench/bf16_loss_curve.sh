#!/bin/bash
# How closely training with "precision": "bf16" follows f32 (issue 19): the reference MoE
# (configs/tiny_moe.json, byte-level, 8 experts top-2) trains --steps on the fortunes corpus in
# f32 and in bf16 for each seed, and the per-step losses are compared: the mean relative gap,
# the largest gap between 20-step means, and the final validation losses. A last row compares two
# f32 runs with different seeds, the scale of a run's own path-dependence.
# Usage: bash bench/bf16_loss_curve.sh [steps] [seeds...]   (after scripts/build.sh)
set -euo pipefail
steps=${1:-200}
shift || true
seeds=${*:-1 2}
SMELT=${SMELT:-./build/smelt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /cpu: /'
for seed in $seeds; do
  for precision in f32 bf16; do
    $SMELT train --config configs/tiny_moe.json --data data/fortunes/train.txt --val data/fortunes/val.txt \
      --steps "$steps" --seed "$seed" --precision "$precision" --out "$work/$precision-$seed" --json > "$work/$precision-$seed.jsonl"
  done
done
python3 - "$work" $seeds <<'PY'
import json, sys
work, seeds = sys.argv[1], sys.argv[2:]
def run(name):
    steps, final = [], None
    for line in open(f"{work}/{name}.jsonl"):
        j = json.loads(line)
        if "step" in j and "loss" in j: steps.append(j["loss"])
        if "val_loss" in j: final = j["val_loss"]
    return steps, final
def compare(label, a, b):
    (la, va), (lb, vb) = run(a), run(b)
    n = min(len(la), len(lb))
    gap = sum(abs(x - y) / x for x, y in zip(la[:n], lb[:n])) / n
    means = lambda l: [sum(l[i:i + 20]) / 20 for i in range(0, n - 19, 20)]
    largest = max(abs(x - y) / x for x, y in zip(means(la), means(lb)))
    print(json.dumps({"bench": "bf16_loss_curve", "compared": label, "steps": n, "mean_relative_gap": round(gap, 4),
                      "largest_gap_of_20_step_means": round(largest, 4), "final_val_loss": [va, vb]}))
for s in seeds:
    compare(f"seed {s}: f32 vs bf16", f"f32-{s}", f"bf16-{s}")
if len(seeds) > 1:
    compare(f"f32 seed {seeds[0]} vs f32 seed {seeds[1]}", f"f32-{seeds[0]}", f"f32-{seeds[1]}")
PY
