#!/usr/bin/env bash
# MiX (the composed MoE's training on the mixture) again from a finished pipeline run's composed
# MoE, once per variant, each scored on every domain beside the run's experts (issue 20's
# question: why is the MoE worse than one expert on its own domain on some sets?).
#   scripts/experiments/mix_variants.sh RUN_DIR VARIANT...
# A variant is a comma list of changes to the run's MiX recipe ("default" for none):
#   steps=N        MiX steps                lr=X        peak learning rate (min_lr = X/10)
#   aux=C          router_aux_loss_coef     router_first=N   N router-only steps before MiX
# One JSON line per expert and per variant; outputs go to RUN_DIR.mix_<variant>.
set -euo pipefail
cd "$(dirname "$0")/../.."
run=$1
shift
smelt=./build/smelt
source scripts/experiments/score.sh
for e in "$run"/expert_*; do
  echo "{\"run\": \"$run\", \"model\": \"$(basename "$e")\", \"perplexity\": $(score "$e")}"
done
echo "{\"run\": \"$run\", \"model\": \"MoE after MiX (the run)\", \"perplexity\": $(score "$run/moe_mix")}"
for variant in "$@"; do
  out=$run.mix_${variant//[=,]/_}
  if [ ! -d "$out" ]; then
    tmp=$out.tmp
    rm -rf "$tmp" && mkdir -p "$tmp" && cp -r "$run/moe" "$tmp/moe"
    # The variant's recipe and model config, written by one small Python step.
    python3 - "$run/work/moe_mix.recipe.json" "$tmp" "$variant" <<'PY'
import json, sys
recipe_path, tmp, variant = sys.argv[1:]
recipe = json.load(open(recipe_path))
config = json.load(open(f"{tmp}/moe/config.json"))
router_first = 0
for change in ([] if variant == "default" else variant.split(",")):
    key, value = change.split("=")
    if key == "steps": recipe["train"]["steps"] = recipe["train"]["eval_every"] = int(value)
    elif key == "lr": recipe["train"]["lr"], recipe["train"]["min_lr"] = float(value), float(value) / 10
    elif key == "aux": config["router_aux_loss_coef"] = float(value)
    elif key == "router_first": router_first = int(value)
    else: sys.exit(f"mix_variants.sh: unknown change '{key}' in variant '{variant}'")
json.dump(recipe, open(f"{tmp}/mix.recipe.json", "w"), indent=2)
json.dump(config, open(f"{tmp}/moe/config.json", "w"), indent=2)
# Router-only phase: everything but the routers frozen, the recipe's schedule over N steps.
router = json.loads(json.dumps(recipe))
router["train"].update(steps=max(router_first, 1), eval_every=max(router_first, 1), warmup_steps=min(10, max(router_first, 1)),
                       freeze=["model.embed_tokens.*", "lm_head.*", "*.self_attn.*", "*norm.*", "*.experts.*"])
json.dump(router, open(f"{tmp}/router.recipe.json", "w"), indent=2)
open(f"{tmp}/router_first", "w").write(str(router_first))
PY
    init=$tmp/moe
    if [ "$(cat "$tmp/router_first")" != 0 ]; then
      $smelt train --init "$init" --config "$tmp/router.recipe.json" --data "$run/data/mixed" --out "$tmp/routed" >/dev/null 2>&1
      init=$tmp/routed
    fi
    $smelt train --init "$init" --config "$tmp/mix.recipe.json" --data "$run/data/mixed" --out "$tmp/mix" >/dev/null 2>&1
    mv "$tmp/mix" "$out" && rm -rf "$tmp"
  fi
  echo "{\"run\": \"$run\", \"model\": \"MoE after MiX, $variant\", \"perplexity\": $(score "$out")}"
done
