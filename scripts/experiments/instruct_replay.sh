#!/usr/bin/env bash
# Instruct tuning with replay at several fractions, on a finished pipeline run's base and data
# (issue 20's ablation): for each fraction, the instruct stage of the run's recipe again, then
# the perplexity on each domain's validation split (32 windows of 128 tokens, as the pipeline
# scores) and the held-out instruct loss. One JSON line per fraction (and the base's).
#   scripts/experiments/instruct_replay.sh RUN_DIR [FRACTION...]   (default 0 0.25 0.5)
# STEPS=N overrides the recipe's instruct steps (the variants are then named ..._stepsN).
set -euo pipefail
cd "$(dirname "$0")/../.."
run=$1
shift
fractions=("${@:-0 0.25 0.5}")
[ $# -gt 0 ] || fractions=(0 0.25 0.5)
smelt=./build/smelt
source scripts/experiments/score.sh
echo "{\"run\": \"$run\", \"model\": \"base\", \"perplexity\": $(score "$run/base")}"
for f in "${fractions[@]}"; do
  out=$run.instruct_replay_$f${STEPS:+_steps$STEPS}
  if [ ! -d "$out" ]; then
    if [ "$f" = 0 ]; then replay=(); else replay=(--replay "$run/data/mixed" --replay-fraction "$f"); fi
    $smelt sft --model "$run/base" --data "$run/data/instruct" --config "$run/work/instruct.recipe.json" "${replay[@]}" ${STEPS:+--steps "$STEPS"} --out "$out" >/dev/null 2>&1
  fi
  val=$(python3 -c "import json; print(json.load(open('$out/summary.json'))['val_loss'])")
  echo "{\"run\": \"$run\", \"model\": \"instruct, replay $f${STEPS:+, $STEPS steps}\", \"perplexity\": $(score "$out"), \"instruct_val_loss\": $val}"
done
