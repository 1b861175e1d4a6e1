# Sourced by the experiment scripts: score MODEL prints {"domain": perplexity, ..., "mixed":
# exp(mean loss)} over each domain of $run/data (its validation split, 32 windows of 128 tokens,
# as the pipeline scores). Needs $run and $smelt.
domains=$(ls "$run/data" | grep -v -e '^mixed$' -e '^instruct$')
score() {
  for d in $domains; do
    echo "$d $($smelt eval --model "$1" --data "$run/data/$d" --seq-len 128 --batch-size 8 --max-batches 4 --json 2>/dev/null)"
  done | python3 -c '
import json, math, sys
out, losses = {}, []
for line in sys.stdin:
    d, js = line.split(" ", 1)
    j = json.loads(js)
    out[d] = round(j["perplexity"], 2)
    losses.append(j["loss"])
out["mixed"] = round(math.exp(sum(losses) / len(losses)), 2)
print(json.dumps(out))'
}
