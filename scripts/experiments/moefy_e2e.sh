#!/bin/bash
# MoEfication of SmolLM2 followed by end-to-end distillation from the dense model, within
# LaDiMo's budget of 100K calibration tokens (issue 18): does retraining every expert of every
# layer together, against the dense model's next-token distributions, recover what the split
# costs, where the layer-wise fits did not?
#   1. calibration text: the first 88 KB of each Debian domain (98,853 SmolLM2 tokens);
#      validation: 16 pieces of 1,200 bytes spread over the last 125 KB of each domain;
#   2. smelt moefy: 8 experts from co-activation groups, top-K, unit weights, no layer-wise fit;
#   3. smelt distill: only the experts train (embeddings, attention, norms and routers frozen),
#      forward KL to the dense model (alpha 1), STEPS steps of 8 x 256 tokens at peak LR;
#   4. smelt eval of the dense model, the split and the distilled split on the validation text.
# Usage: bash scripts/experiments/moefy_e2e.sh [top_k=6] [steps=100] [lr=1e-4]
# (from the repository root, after scripts/build.sh; about 12 min for the split and 10 min per
# 100 steps on 2 cores. Output: JSON lines, and the models under runs/moefy_e2e/.)
set -euo pipefail
top_k=${1:-6}
steps=${2:-100}
lr=${3:-1e-4}
SMELT=${SMELT:-./build/smelt}
work=runs/moefy_e2e
dense=.cache/bench_decode/smollm2
mkdir -p "$work"
[ -d "$dense" ] || "$SMELT" import --model "$(bash scripts/fetch_smollm2.sh)" --out "$dense" >/dev/null
[ -s data/domains/c.txt ] || bash scripts/fetch_data.sh >/dev/null

python3 - "$work" <<'EOF'
import sys
work = sys.argv[1]
calib, val = [], []
for d in ["c", "glosses", "prose", "python"]:
    raw = open(f"data/domains/{d}.txt", "rb").read()
    calib.append(raw[:88_000].decode("utf-8", "ignore"))
    tail = raw[-125_000:]
    for i in range(16):
        s = i * (len(tail) - 1200) // 15
        val.append(tail[s : s + 1200].decode("utf-8", "ignore"))
open(f"{work}/calib.txt", "w").write("\n".join(calib))
open(f"{work}/val.txt", "w").write("\n".join(val))
EOF

split="$work/moe_top$top_k"
[ -s "$split/model.safetensors" ] ||
  "$SMELT" moefy --model "$dense" --out "$split" --experts 8 --top-k "$top_k" --split coact --unit-weights --fit-steps 0 \
    --data "$work/calib.txt" --seq-len 256 --json >"$split.json"

cat >"$work/recipe.json" <<EOF
{"train": {"steps": $steps, "batch_size": 8, "seq_len": 256, "lr": $lr, "min_lr": $(python3 -c "print($lr / 10)"),
           "warmup_steps": 5, "weight_decay": 0.0, "eval_every": 1000, "eval_batches": 2, "seed": 1,
           "freeze": ["model.embed_tokens.*", "*.self_attn.*", "*layernorm*", "model.norm.*", "*.block_sparse_moe.gate.*"]}}
EOF
distilled="$work/moe_top${top_k}_kd${steps}_lr$lr"
rm -rf "$distilled"
"$SMELT" distill --teacher "$dense" --student "$split" --config "$work/recipe.json" --alpha 1 \
  --data "$work/calib.txt" --val "$work/val.txt" --out "$distilled" --json >"$distilled.log"

for model in "$dense" "$split" "$distilled"; do
  "$SMELT" eval --model "$model" --data "$work/val.txt" --seq-len 256 --json 2>/dev/null | python3 -c '
import json, math, sys
j = json.load(sys.stdin)
print(json.dumps({"experiment": "moefy_e2e", "model": j["model"], "active_parameters": j["active_parameters"],
                  "val_loss": round(j["loss"], 4), "perplexity": round(math.exp(j["loss"]), 2)}))'
done
