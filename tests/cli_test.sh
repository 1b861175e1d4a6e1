#!/usr/bin/env bash
# End-to-end checks of the smelt binary: bad input gives exactly one line on stderr that names
# the file and field, with a non-zero exit; a tiny train → eval → generate round trip works; a
# killed training run never leaves a half-written or damaged model directory.
set -u
SMELT=${1:?usage: cli_test.sh path/to/smelt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0

fail() { echo "FAIL: $1"; failed=$((failed + 1)); }
ok() { passed=$((passed + 1)); }

# expect_error NAME "needle1|needle2" -- command...
expect_error() {
  local name=$1 needles=$2
  shift 3
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  local lines
  lines=$(wc -l <"$work/err")
  if [ $rc -eq 0 ]; then fail "$name: exit code 0"; return; fi
  if [ "$lines" -ne 1 ]; then fail "$name: $lines lines on stderr: $(cat "$work/err")"; return; fi
  IFS='|' read -ra parts <<<"$needles"
  for n in "${parts[@]}"; do
    grep -qF -- "$n" "$work/err" || { fail "$name: '$n' not in: $(cat "$work/err")"; return; }
  done
  ok
}

model='"vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64'
echo "{\"model\": {$model}, \"train\": {\"steps\": 3, \"batch_size\": 2, \"seq_len\": 16, \"eval_batches\": 1, \"warmup_steps\": 1}}" >"$work/good.json"
echo "{\"model\": {\"vocab_size\": 256}}" >"$work/missing.json"
echo "{\"model\": {$model, \"hidden_sise\": 3}}" >"$work/unknown.json"
echo "{\"model\": {$model}, \"train\": {\"steps\": \"many\"}}" >"$work/type.json"
printf '\377\n{' >"$work/binary.json"  # a binary file: its bytes are quoted escaped, on one line
head -c 20000 /dev/urandom | base64 >"$work/text.txt"
: >"$work/empty.txt"

expect_error missing-key "missing.json|model.hidden_size" -- "$SMELT" train --config "$work/missing.json" --data "$work/text.txt" --out "$work/m"
expect_error unknown-key "unknown.json|model.hidden_sise|unknown field" -- "$SMELT" train --config "$work/unknown.json" --data "$work/text.txt" --out "$work/m"
expect_error binary-config 'binary.json|malformed JSON|\xff' -- "$SMELT" train --config "$work/binary.json" --data "$work/text.txt" --out "$work/m"
expect_error wrong-type "type.json|train.steps|integer" -- "$SMELT" train --config "$work/type.json" --data "$work/text.txt" --out "$work/m"
expect_error no-data "$work/nope.txt|does not exist" -- "$SMELT" train --config "$work/good.json" --data "$work/nope.txt" --out "$work/m"
expect_error empty-data "empty.txt|empty" -- "$SMELT" train --config "$work/good.json" --data "$work/empty.txt" --out "$work/m"
expect_error bad-precision "train.precision|\"f32\" or \"bf16\"|fp8" -- "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --out "$work/m" --precision fp8
expect_error bad-simd "--simd|NEON|known:" -- "$SMELT" bench gemm --shape 8x8x8 --simd NEON
expect_error bench-precision "--precision|f32 or bf16" -- "$SMELT" bench gemm --shape 8x8x8 --precision f16
expect_error no-model "$work/none|not a model directory" -- "$SMELT" eval --model "$work/none" --data "$work/text.txt"

# A round trip on tiny settings.
if "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --out "$work/m" --json >"$work/train.jsonl" 2>"$work/train.err"; then
  ok
  for f in config.json model.safetensors metrics.jsonl summary.json; do
    [ -f "$work/m/$f" ] && ok || fail "train did not write $f"
  done
  [ "$(grep -c '"step"' "$work/train.jsonl")" -ge 3 ] && ok || fail "train --json printed no per-step metrics"
  grep -q "active per token" "$work/m/README.md" && ok || fail "the model card (README.md) is missing or incomplete"
  # A new run into the same --out keeps its own checkpoints: the earlier run's later steps go
  # first (pruned by step number alone they outranked, and deleted, the new run's).
  if "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --out "$work/ck" --save-every 1 --keep-checkpoints 5 >/dev/null 2>&1 &&
    "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --out "$work/ck" --stop-after 1 --keep-checkpoints 1 >/dev/null 2>&1; then
    [ -d "$work/ck.checkpoints/step-00000001" ] && [ "$(ls "$work/ck.checkpoints" | wc -l)" -eq 1 ] && ok ||
      fail "a new run's checkpoint was pruned: $(ls "$work/ck.checkpoints")"
    expect_error save-every-beyond-steps "--save-every 5|3 steps" -- "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --save-every 5 --out "$work/x"
    expect_error seed-on-resume "--seed|--resume" -- "$SMELT" train --resume "$work/ck.checkpoints/step-00000001" --data "$work/text.txt" --seed 9 --out "$work/x"
    expect_error sft-resume-of-train "not an instruct-tuning checkpoint|smelt train" -- "$SMELT" sft --resume "$work/ck.checkpoints/step-00000001" \
      --data "$work/text.txt" --out "$work/x"
    expect_error val-fraction-on-resume "--val-fraction|--resume" -- "$SMELT" train --resume "$work/ck.checkpoints/step-00000001" --data "$work/text.txt" \
      --val-fraction 0.2 --out "$work/x"
    expect_error distill-resume-of-train "not a distillation checkpoint|smelt train" -- "$SMELT" distill --resume "$work/ck.checkpoints/step-00000001" \
      --data "$work/text.txt" --out "$work/x"
  else
    fail "train with checkpoints, then again into the same --out"
  fi
  "$SMELT" report "$work/m" >/dev/null 2>&1 && grep -q "report/loss.svg" "$work/m/report.md" && [ -s "$work/m/report/loss.svg" ] && ok ||
    fail "smelt report"
  "$SMELT" eval --model "$work/m" --data "$work/text.txt" --json --max-batches 2 >"$work/eval.json" 2>/dev/null &&
    grep -q '"bits_per_byte"' "$work/eval.json" && ok || fail "eval --json"
  "$SMELT" generate --model "$work/m" --prompt "Hello" --max-new-tokens 5 --seed 1 >"$work/gen.txt" 2>/dev/null &&
    grep -q '^Hello' "$work/gen.txt" && ok || fail "generate"
  # --device: sim computes with the CPU's kernels behind device copies, so train (checkpoint and
  # resume included), eval and generate give the CPU's bytes; a missing GPU is one clear line.
  "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --out "$work/m_sim" --device sim --save-every 2 >/dev/null 2>&1 &&
    cmp -s "$work/m/model.safetensors" "$work/m_sim/model.safetensors" && ok || fail "train --device sim differs from the CPU"
  "$SMELT" train --resume "$work/m_sim.checkpoints/step-00000002" --data "$work/text.txt" --out "$work/m_sim2" --device sim >/dev/null 2>&1 &&
    cmp -s "$work/m/model.safetensors" "$work/m_sim2/model.safetensors" && ok || fail "train --resume --device sim differs from the CPU"
  "$SMELT" eval --model "$work/m" --data "$work/text.txt" --json --max-batches 2 --device sim 2>/dev/null | grep -o '"loss":[0-9.e-]*' >"$work/eval_sim.txt" &&
    grep -o '"loss":[0-9.e-]*' "$work/eval.json" | cmp -s - "$work/eval_sim.txt" && ok || fail "eval --device sim differs from the CPU"
  "$SMELT" generate --model "$work/m" --prompt "Hello" --max-new-tokens 5 --seed 1 --device sim 2>/dev/null | cmp -s - "$work/gen.txt" && ok ||
    fail "generate --device sim differs from the CPU"
  if ! nvidia-smi >/dev/null 2>&1; then  # no GPU here: --device cuda is refused before any work
    expect_error no-gpu "cuda:0" -- "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --out "$work/x" --device cuda
  fi
  expect_error bad-device "unknown device 'gpu'" -- "$SMELT" eval --model "$work/m" --data "$work/text.txt" --device gpu
  expect_error quantised-on-device "--weights q8_0|CPU's kernels|sim:0" -- "$SMELT" eval --model "$work/m" --data "$work/text.txt" --weights q8_0 --device sim
  # Resume: 20 steps straight vs. a run killed (SIGKILL) after its step-10 checkpoint and resumed:
  # bit-identical weights and losses.
  "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --out "$work/straight" --steps 20 >/dev/null 2>&1
  "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --out "$work/killed" --steps 20 --save-every 10 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do [ -d "$work/killed.checkpoints/step-00000010" ] && break; sleep 0.05; done
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  rm -rf "$work/killed"
  if "$SMELT" train --resume "$work/killed.checkpoints/step-00000010" --data "$work/text.txt" --out "$work/killed" >/dev/null 2>&1; then
    cmp -s "$work/straight/model.safetensors" "$work/killed/model.safetensors" && ok || fail "resumed weights differ from the straight run"
    losses() { sed 's/.*"loss":\([0-9.e-]*\).*/\1/' "$1"; }
    [ "$(losses "$work/straight/metrics.jsonl")" = "$(losses "$work/killed/metrics.jsonl")" ] && ok || fail "resumed losses differ"
  else
    fail "resume from the step-10 checkpoint"
  fi
  expect_error resume-and-config "--config|--resume" -- "$SMELT" train --config "$work/good.json" --resume "$work/killed.checkpoints/step-00000010" --data "$work/text.txt" --out "$work/x"
  # Upcycling: bad options refused before any work; noise 0 gives the dense model's loss exactly.
  expect_error upcycle-topk "--top-k|--experts" -- "$SMELT" upcycle --model "$work/m" --out "$work/u" --experts 2 --top-k 3
  # An --out that smelt did not write is refused, not replaced: the user's files stay.
  mkdir -p "$work/foreign" && echo precious >"$work/foreign/notes.txt"
  expect_error foreign-out "foreign|refusing to replace" -- "$SMELT" upcycle --model "$work/m" --out "$work/foreign" --experts 2 --top-k 1
  expect_error foreign-train-out "foreign|refusing to replace" -- "$SMELT" train --config "$(dirname "$0")/../configs/tiny_moe.json" \
    --data "$work/text.txt" --out "$work/foreign" --steps 1
  [ "$(cat "$work/foreign/notes.txt")" = precious ] && ok || fail "upcycle replaced a directory it did not write"
  # Nor over its own inputs, or over smelt's output of another kind.
  expect_error out-is-input "--out|is the input" -- "$SMELT" upcycle --model "$work/m" --out "$work/m" --experts 2 --top-k 1
  expect_error save-logits-into-model "--save-logits|lies inside the input" -- "$SMELT" eval --model "$work/m" --data "$work/text.txt" \
    --save-logits "$work/m/model.safetensors"
  expect_error tokenizer-over-corpus "--out|is the input" -- "$SMELT" tokenizer train --data "$work/text.txt" --vocab-size 300 --out "$work/text.txt"
  expect_error shards-over-model "holds no manifest.json" -- "$SMELT" data prepare --data "$work/text.txt" --tokenizer "$work/m/tokenizer.json" --out "$work/m"
  if "$SMELT" upcycle --model "$work/m" --out "$work/u" --experts 4 --top-k 2 >/dev/null 2>&1; then
    dense_loss=$("$SMELT" eval --model "$work/m" --data "$work/text.txt" --max-batches 2 --json 2>/dev/null | sed 's/.*"loss":\([0-9.e-]*\).*/\1/')
    moe_loss=$("$SMELT" eval --model "$work/u" --data "$work/text.txt" --max-batches 2 --json 2>/dev/null | sed 's/.*"loss":\([0-9.e-]*\).*/\1/')
    awk -v a="$dense_loss" -v b="$moe_loss" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-5) }' && ok ||
      fail "upcycled loss $moe_loss differs from dense $dense_loss"
    "$SMELT" eval --model "$work/u" --data "$work/text.txt" --max-batches 1 --routing top-p:0.5:3 --json 2>/dev/null |
      grep -q '"active_experts"' && ok || fail "eval --routing top-p"
    expect_error bad-routing "--routing|top-q:1" -- "$SMELT" eval --model "$work/u" --data "$work/text.txt" --routing top-q:1
    expect_error eval-negative-seq-len "--seq-len|-5" -- "$SMELT" eval --model "$work/u" --data "$work/text.txt" --seq-len -5
    expect_error generate-negative-tokens "--max-new-tokens|-3" -- "$SMELT" generate --model "$work/u" --prompt "The " --max-new-tokens -3
    expect_error bench-zero-heads "--heads|0" -- "$SMELT" bench attention --heads 0
    expect_error system-without-chat "--system|--chat" -- "$SMELT" generate --model "$work/u" --prompt "The " --system "Be brief."
    expect_error generate-negative-top-k "--top-k|-2" -- "$SMELT" generate --model "$work/u" --prompt "The " --top-k -2
    # An option this run would ignore is refused, naming it, before any work.
    expect_error glob-without-folder "--glob|folder" -- "$SMELT" tokenizer train --data "$work/text.txt" --glob '*.c' --vocab-size 300 --out "$work/x.json"
    expect_error bytes-need-256-ids "no tokenizer|61|256" -- "$SMELT" generate --model "$(dirname "$0")/fixtures/gguf_mixtral.gguf" --prompt ab
    expect_error bench-option-elsewhere "--tokens|bench gemm|moe" -- "$SMELT" bench gemm --tokens 8
    expect_error bench-shape-with-model "--layers|--model" -- "$SMELT" bench decode --model "$work/u" --layers 2
    expect_error eval-split-of-text "--split|text" -- "$SMELT" eval --model "$work/u" --data "$work/text.txt" --split train
    expect_error sft-replay-fraction-alone "--replay-fraction|--replay" -- "$SMELT" sft --model "$work/u" --data "$work/text.txt" --replay-fraction 0.3 --out "$work/x"
    expect_error moefy-sweep-windows-alone "--sweep-windows|--sweep" -- "$SMELT" moefy --model "$work/m" --out "$work/x" --experts 2 --top-k 1 --sweep-windows 4
    expect_error moefy-fit-lr-without-fit "--fit-lr|--fit-steps 0" -- "$SMELT" moefy --model "$work/m" --out "$work/x" --experts 2 --top-k 1 --fit-steps 0 --fit-lr 0.1
    expect_error greedy-top-k "--top-k|--temperature 0" -- "$SMELT" generate --model "$work/u" --prompt "The " --temperature 0 --top-k 5
    expect_error upcycle-seed-without-noise "--seed|--noise 0" -- "$SMELT" upcycle --model "$work/m" --out "$work/x" --experts 2 --top-k 1 --seed 4
    expect_error val-fraction-with-val "--val-fraction|--val" -- "$SMELT" train --init "$work/m" --data "$work/text.txt" --val "$work/text.txt" --val-fraction 0.2 --out "$work/x"
    expect_error keep-without-checkpoints "--keep-checkpoints|--save-every" -- "$SMELT" train --init "$work/m" --data "$work/text.txt" --keep-checkpoints 3 --out "$work/x"
    expect_error compose-seed-not-random "--seed|random" -- "$SMELT" compose --base "$work/m" --experts "$work/m" "$work/m" --out "$work/x" --seed 3
    # Weights kept in bf16 for inference: the loss moves by rounding only; generation runs.
    bf16_loss=$("$SMELT" eval --model "$work/u" --data "$work/text.txt" --max-batches 2 --weights bf16 --json 2>/dev/null | sed 's/.*"loss":\([0-9.e-]*\).*/\1/')
    awk -v a="$moe_loss" -v b="$bf16_loss" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(b > 0 && d < 0.02) }' && ok ||
      fail "eval --weights bf16 loss $bf16_loss far from f32 $moe_loss"
    gen=$("$SMELT" generate --model "$work/u" --prompt "The " --max-new-tokens 8 --weights bf16 --temperature 0 2>/dev/null | tr -d '\000')
    [ "${gen:0:4}" = "The " ] && [ ${#gen} -gt 4 ] && ok || fail "generate --weights bf16 printed '$gen'"
    # Quantised weights: the loss moves by rounding only. Mapped experts: the same loss exactly.
    q8_loss=$("$SMELT" eval --model "$work/u" --data "$work/text.txt" --max-batches 2 --weights q8_0 --json 2>/dev/null | sed 's/.*"loss":\([0-9.e-]*\).*/\1/')
    awk -v a="$moe_loss" -v b="$q8_loss" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(b > 0 && d < 0.05) }' && ok ||
      fail "eval --weights q8_0 loss $q8_loss far from f32 $moe_loss"
    mapped_loss=$("$SMELT" eval --model "$work/u" --data "$work/text.txt" --max-batches 2 --map-experts --json 2>/dev/null | sed 's/.*"loss":\([0-9.e-]*\).*/\1/')
    [ "$mapped_loss" = "$moe_loss" ] && ok || fail "eval --map-experts loss $mapped_loss differs from $moe_loss"
    expect_error map-experts-converted "--map-experts|--weights q8_0" -- "$SMELT" eval --model "$work/u" --data "$work/text.txt" --weights q8_0 --map-experts
    expect_error map-experts-dense "--map-experts|dense" -- "$SMELT" eval --model "$work/m" --data "$work/text.txt" --map-experts
    expect_error bad-weights "--weights|f16" -- "$SMELT" eval --model "$work/u" --data "$work/text.txt" --weights f16
    "$SMELT" inspect --model "$work/u" --json --tensors 2>/dev/null | grep -q '"block_sparse_moe.experts.3.w2.weight\|model.layers.0.block_sparse_moe.experts.3.w2.weight' &&
      ok || fail "inspect lists the experts' tensors"
  else
    fail "upcycle"
  fi
  # A checkpoint whose shapes disagree with its config.
  cp -r "$work/m" "$work/bad"
  sed -i 's/"intermediate_size": 64/"intermediate_size": 72/' "$work/bad/config.json"
  expect_error shape-mismatch "model.safetensors|mlp.gate_proj.weight|[64, 32]" -- "$SMELT" eval --model "$work/bad" --data "$work/text.txt"
  # Killed mid-run: the previous model directory stays whole and loadable, nothing half-written appears.
  before=$(sha256sum "$work/m/model.safetensors")
  "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --out "$work/m" --steps 100000 >/dev/null 2>&1 &
  pid=$!
  sleep 1
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  [ "$(sha256sum "$work/m/model.safetensors")" = "$before" ] && ok || fail "killed run changed the previous model"
  "$SMELT" eval --model "$work/m" --data "$work/text.txt" --max-batches 1 >/dev/null 2>&1 && ok || fail "previous model no longer loads"
  # Disk full while writing (simulated with a file-size limit; SIGXFSZ ignored so write() fails
  # with EFBIG as on a full disk): one-line error, previous model and checkpoint untouched, no
  # temporary directory left behind.
  ckpt_before=$(sha256sum "$work/killed.checkpoints/step-00000010/model.safetensors")
  (trap '' XFSZ; ulimit -f 16; exec "$SMELT" train --config "$work/good.json" --data "$work/text.txt" --out "$work/m") >/dev/null 2>"$work/full.err"
  rc=$?
  [ $rc -ne 0 ] && [ "$(grep -c 'smelt: error' "$work/full.err")" -eq 1 ] && tail -1 "$work/full.err" | grep -q "write failed.*previous version is untouched" && ok ||
    fail "disk full: rc $rc, stderr: $(cat "$work/full.err")"
  [ "$(sha256sum "$work/m/model.safetensors")" = "$before" ] && ok || fail "a failed write changed the previous model"
  (trap '' XFSZ; ulimit -f 16; exec "$SMELT" train --resume "$work/killed.checkpoints/step-00000010" --data "$work/text.txt" --out "$work/killed" --save-every 5) >/dev/null 2>&1
  [ "$(sha256sum "$work/killed.checkpoints/step-00000010/model.safetensors")" = "$ckpt_before" ] && ok || fail "a failed checkpoint write changed the previous checkpoint"
  leftovers=$(ls "$work" | grep '\.tmp\.' | tr '\n' ' ')
  [ -z "$leftovers" ] && ok || fail "temporary files left behind: $leftovers"
else
  fail "train round trip: $(cat "$work/train.err")"
fi

# Tokenizer → token shards → train → eval → generate, and the errors on the way.
fixtures="$(cd "$(dirname "$0")" && pwd)/fixtures"
if "$SMELT" tokenizer train --data "$fixtures/tokenizer_corpus.txt" --vocab-size 400 --out "$work/tok.json" --json >/dev/null 2>&1 &&
  "$SMELT" data prepare --data "$fixtures/tokenizer_corpus.txt" --tokenizer "$work/tok.json" --out "$work/tokdata" --val-fraction 0.3 --json >/dev/null 2>&1; then
  ok
  # encode and decode read standard input with --file -, and decode takes encode's output as is.
  "$SMELT" tokenizer encode --tokenizer "$work/tok.json" --text '' >/dev/null 2>&1 && ok || fail "tokenizer encode of an empty --text"
  round=$(printf 'Grüße 123 ok' | "$SMELT" tokenizer encode --tokenizer "$work/tok.json" --file - 2>/dev/null |
    "$SMELT" tokenizer decode --tokenizer "$work/tok.json" --file - 2>/dev/null)
  [[ $round == 'Grüße 123 ok' ]] && ok || fail "tokenizer encode | decode through standard input gave '$round'"
  expect_error decode-not-an-id "not an integer" -- "$SMELT" tokenizer decode --tokenizer "$work/tok.json" --ids 72,x
  expect_error decode-two-inputs "exactly one of --ids and --file" -- "$SMELT" tokenizer decode --tokenizer "$work/tok.json" --ids 72 --file -
  tokmodel='"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64'
  echo "{\"model\": {$tokmodel}, \"train\": {\"steps\": 3, \"batch_size\": 2, \"seq_len\": 16, \"eval_batches\": 1, \"warmup_steps\": 1}}" >"$work/tok_recipe.json"
  if "$SMELT" train --config "$work/tok_recipe.json" --data "$work/tokdata" --out "$work/tm" >/dev/null 2>&1; then
    cmp -s "$work/tokdata/tokenizer.json" "$work/tm/tokenizer.json" && ok || fail "the trained model does not carry the data's tokenizer"
    "$SMELT" eval --model "$work/tm" --data "$work/tokdata" --json 2>/dev/null | grep -q '"bits_per_byte"' && ok || fail "eval on token shards"
    "$SMELT" eval --model "$work/tm" --data "$fixtures/tokenizer_corpus.txt" --max-batches 1 --json 2>/dev/null | grep -q '"tokens"' && ok ||
      fail "eval of a text file through the model's tokenizer"
    "$SMELT" generate --model "$work/tm" --prompt "The" --max-new-tokens 5 --seed 1 2>/dev/null | grep -q '^The' && ok || fail "generate with a tokenizer"
    expect_error byte-model-on-tokens "vocab_size|400" -- "$SMELT" train --config "$work/good.json" --data "$work/tokdata" --out "$work/x"
    # Distillation into a smaller student: online, and from a top-K cache (made once, then reused).
    small='"vocab_size": 400, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64'
    echo "{\"model\": {$small}, \"train\": {\"steps\": 3, \"batch_size\": 2, \"seq_len\": 16, \"eval_batches\": 1, \"warmup_steps\": 1}}" >"$work/student.json"
    "$SMELT" distill --teacher "$work/tm" --student-config "$work/student.json" --data "$work/tokdata" --loss jsd --out "$work/st_online" >/dev/null 2>&1 &&
      grep -q "distilled from" "$work/st_online/README.md" && ok || fail "distill online"
    "$SMELT" distill --teacher "$work/tm" --student-config "$work/student.json" --data "$work/tokdata" --teacher-topk 8 --cache "$work/tcache" --out "$work/st_cached" >/dev/null 2>&1 &&
      [ -f "$work/tcache/teacher_cache.json" ] && ok || fail "distill with a top-K cache"
    "$SMELT" distill --teacher "$work/nonexistent" --student-config "$work/student.json" --data "$work/tokdata" --teacher-topk 8 --cache "$work/tcache" --out "$work/st_cached2" >/dev/null 2>&1 &&
      ok || fail "a matching cache must be used without loading the teacher"
    # A student from the teacher's layers with a hidden-state loss; a narrower student with a
    # learned projection, killed after step 2 and resumed with no distillation options repeated,
    # ends bit-identical to the uninterrupted run.
    echo "{\"model\": {$tokmodel}, \"train\": {\"steps\": 3, \"batch_size\": 2, \"seq_len\": 16, \"eval_batches\": 1, \"warmup_steps\": 1}}" >"$work/same_width.json"
    "$SMELT" distill --teacher "$work/tm" --student-config "$work/same_width.json" --student-init teacher --hidden-loss mse --data "$work/tokdata" --out "$work/st_layers" >"$work/st_layers.log" 2>&1 &&
      grep -q "initialised from $work/tm layers 0" "$work/st_layers.log" && ok || fail "distill into a student made from the teacher's layers"
    if "$SMELT" distill --teacher "$work/tm" --student-config "$work/student.json" --hidden-loss cosine --data "$work/tokdata" --out "$work/st_hid" >/dev/null 2>&1 &&
      "$SMELT" distill --teacher "$work/tm" --student-config "$work/student.json" --hidden-loss cosine --data "$work/tokdata" --stop-after 2 --out "$work/st_hid2" >/dev/null 2>&1 &&
      "$SMELT" distill --resume "$work/st_hid2.checkpoints/step-00000002" --data "$work/tokdata" --out "$work/st_hid2" >/dev/null 2>&1; then
      [ -f "$work/st_hid2.checkpoints/step-00000002/extra_parameters.safetensors" ] && cmp -s "$work/st_hid/model.safetensors" "$work/st_hid2/model.safetensors" &&
        ok || fail "a resumed hidden-state distillation differs from the uninterrupted one"
    else
      fail "hidden-state distillation with a projection, stopped and resumed"
    fi
    # With --teacher (spelled another way) and only some settings given, the rest come from the
    # checkpoint: the same bytes again.
    "$SMELT" distill --resume "$work/st_hid2.checkpoints/step-00000002" --teacher "$work/./tm" --hidden-loss cosine --data "$work/tokdata" \
      --out "$work/st_hid3" >/dev/null 2>&1 && cmp -s "$work/st_hid/model.safetensors" "$work/st_hid3/model.safetensors" && ok ||
      fail "a distillation resumed with --teacher and one setting given differs from the uninterrupted one"
    expect_error resume-setting-without-teacher "--loss|--teacher" -- "$SMELT" distill --resume "$work/st_hid2.checkpoints/step-00000002" --loss rkl --data "$work/tokdata" --out "$work/x"
    expect_error resume-other-loss "\"distill\".loss|rkl" -- "$SMELT" distill --resume "$work/st_hid2.checkpoints/step-00000002" --teacher "$work/tm" --loss rkl --hidden-loss cosine --data "$work/tokdata" --out "$work/x"
    expect_error beta-of-fkl "--beta|fkl" -- "$SMELT" distill --teacher "$work/tm" --student-config "$work/student.json" --loss fkl --beta 0.3 --data "$work/tokdata" --out "$work/x"
    expect_error hidden-weight-alone "--hidden-weight|--hidden-loss" -- "$SMELT" distill --teacher "$work/tm" --student-config "$work/student.json" --hidden-weight 2 --data "$work/tokdata" --out "$work/x"
    expect_error cache-online "--cache|--teacher-topk" -- "$SMELT" distill --teacher "$work/tm" --student-config "$work/student.json" --cache "$work/tcache2" --data "$work/tokdata" --out "$work/x"
    expect_error hidden-loss-with-cache "hidden-loss|online" -- "$SMELT" distill --teacher "$work/tm" --student-config "$work/student.json" --hidden-loss mse --teacher-topk 8 --cache "$work/tcache" --data "$work/tokdata" --out "$work/x"
    expect_error student-init-width "hidden_size 16|32" -- "$SMELT" distill --teacher "$work/tm" --student-config "$work/student.json" --student-init teacher --data "$work/tokdata" --out "$work/x"
    # MoEfication: split the FFN into experts on calibration data; exact with every expert active.
    if "$SMELT" moefy --model "$work/tm" --out "$work/mf" --experts 4 --top-k 2 --split coact --shared-neurons 8 --data "$work/tokdata" --tokens 64 --seq-len 16 \
      --fit-steps 20 --budget 10 --sweep --sweep-windows 2 --json >"$work/mf.json" 2>/dev/null; then
      diff=$(grep -o '"max_logit_diff_all_experts":[0-9.e+-]*' "$work/mf.json" | cut -d: -f2)
      [ -n "$diff" ] && awk "BEGIN { exit !($diff < 1e-4) }" && grep -q '"experts":4' "$work/mf.json" &&
        [ -f "$work/mf/moefy.json" ] && [ -s "$work/mf/sweep.svg" ] && grep -q '"routing_policies"' "$work/mf/config.json" && "$SMELT" eval --model "$work/mf" --data "$work/tokdata" --json 2>/dev/null | grep -q '"policy":"top-1"' && ok ||
        fail "moefy result: $(cat "$work/mf.json")"
    else
      fail "moefy"
    fi
    expect_error moefy-uneven "$work/tm|7 equal experts" -- "$SMELT" moefy --model "$work/tm" --out "$work/x" --experts 7
    expect_error moefy-coact-no-data "--split coact|--data" -- "$SMELT" moefy --model "$work/tm" --out "$work/x" --experts 4 --split coact
    # Compose two fine-tuned copies into an MoE (router from each expert's prompts), then MiX-tune it.
    echo '{"train": {"steps": 2, "batch_size": 2, "seq_len": 16, "eval_batches": 1, "warmup_steps": 1}}' >"$work/ft.json"
    head -c 8000 "$fixtures/tokenizer_corpus.txt" >"$work/dom_a.txt"
    tail -c 8000 "$fixtures/tokenizer_corpus.txt" >"$work/dom_b.txt"
    if "$SMELT" train --init "$work/tm" --config "$work/ft.json" --data "$work/dom_a.txt" --val-fraction 0 --out "$work/ea" >/dev/null 2>&1 &&
      "$SMELT" train --init "$work/tm" --config "$work/ft.json" --data "$work/dom_b.txt" --val-fraction 0 --out "$work/eb" >/dev/null 2>&1 &&
      "$SMELT" compose --base "$work/tm" --experts "$work/ea" "$work/eb" --prompts "$work/dom_a.txt" "$work/dom_b.txt" --top-k 1 --seq-len 16 --out "$work/btx" --json 2>/dev/null | grep -q '"experts":2'; then
      ok
      "$SMELT" train --init "$work/btx" --config "$work/ft.json" --data "$work/tokdata" --out "$work/btx_mix" >/dev/null 2>&1 && ok || fail "MiX fine-tune of the composed model"
      # Per-expert routing shares from eval; auto's per-layer choice of router init in compose's JSON.
      "$SMELT" eval --model "$work/btx" --data "$work/dom_a.txt" --json 2>/dev/null | grep -q '"expert_load":\[' && ok || fail "eval reports expert_load"
      "$SMELT" compose --base "$work/tm" --experts "$work/ea" "$work/eb" --prompts "$work/dom_a.txt" "$work/dom_b.txt" --gate-init auto --seq-len 16 \
        --out "$work/btx_auto" --json 2>/dev/null | grep -q '"layer_gate_init":\["' && ok || fail "compose --gate-init auto reports its choice"
    else
      fail "compose"
    fi
    expect_error compose-mismatch "$work/m|vocab_size" -- "$SMELT" compose --base "$work/tm" --experts "$work/ea" "$work/m" --gate-init random --out "$work/x"
    expect_error compose-prompts "--prompts|2" -- "$SMELT" compose --base "$work/tm" --experts "$work/ea" "$work/eb" --out "$work/x"
    sed 's/"vocab_size": 400/"vocab_size": 500/' "$work/student.json" >"$work/student500.json"
    expect_error teacher-student-vocab "vocab_size 400|500" -- "$SMELT" distill --teacher "$work/tm" --student-config "$work/student500.json" --data "$work/tokdata" --out "$work/x"
    expect_error bad-distill-loss "unknown distillation loss|kl2" -- "$SMELT" distill --teacher "$work/tm" --student-config "$work/student.json" --data "$work/tokdata" --loss kl2 --out "$work/x"
    expect_error bytes-teacher-on-tokens "$work/m|tokenizer" -- "$SMELT" distill --teacher "$work/m" --student-config "$work/student.json" --data "$work/tokdata" --out "$work/x"
    printf '{"prompt": "What does cat mean?", "response": "A small feline."}\n{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}\n' >"$work/chat.jsonl"
    for _ in 1 2 3 4 5 6; do cat "$work/chat.jsonl"; done >"$work/chat6.jsonl"
    if "$SMELT" data prepare --data "$work/chat6.jsonl" --tokenizer "$work/tm/tokenizer.json" --out "$work/chatdata" --val-fraction 0 --json 2>/dev/null | grep -q '"masked":true'; then
      ok
      echo '{"train": {"steps": 2, "batch_size": 2, "seq_len": 16, "eval_batches": 1, "warmup_steps": 1}}' >"$work/sft.json"
      "$SMELT" train --config "$work/sft.json" --init "$work/tm" --data "$work/chatdata" --out "$work/sft" >/dev/null 2>&1 && ok || fail "train on conversations"
      "$SMELT" generate --model "$work/sft" --chat --prompt "Hi" --max-new-tokens 4 --seed 1 >/dev/null 2>&1 && ok || fail "generate --chat"
      "$SMELT" sft --model "$work/tm" --data "$work/chat6.jsonl" --val-fraction 0 --steps 2 --out "$work/sft2" >/dev/null 2>&1 && ok || fail "smelt sft on JSONL"
      # The same instruct-tuning on the simulated device (device-style copies only): the same bytes.
      "$SMELT" sft --model "$work/tm" --data "$work/chat6.jsonl" --val-fraction 0 --steps 2 --out "$work/sft2_sim" --device sim >/dev/null 2>&1 &&
        cmp -s "$work/sft2/model.safetensors" "$work/sft2_sim/model.safetensors" && ok || fail "smelt sft --device sim differs from the CPU"
      # Instruct tuning with replay, stopped and resumed (by smelt sft, and by smelt train): the
      # same bytes as the uninterrupted run (the checkpoint records the replay and the packing).
      sft_replay() { "$SMELT" sft --model "$work/tm" --data "$work/chat6.jsonl" --replay "$fixtures/tokenizer_corpus.txt" --val-fraction 0 --steps 3 "$@"; }
      if sft_replay --out "$work/sr" >/dev/null 2>&1 && sft_replay --stop-after 2 --out "$work/sr2" >/dev/null 2>&1 &&
        "$SMELT" sft --resume "$work/sr2.checkpoints/step-00000002" --data "$work/chat6.jsonl" --out "$work/sr2" >/dev/null 2>&1 &&
        "$SMELT" train --resume "$work/sr2.checkpoints/step-00000002" --data "$work/chat6.jsonl" --out "$work/sr3" >/dev/null 2>&1; then
        cmp -s "$work/sr/model.safetensors" "$work/sr2/model.safetensors" && cmp -s "$work/sr/model.safetensors" "$work/sr3/model.safetensors" &&
          ok || fail "a resumed sft with replay differs from the uninterrupted one"
      else
        fail "sft with replay, stopped and resumed"
      fi
      expect_error sft-resume-replay "--replay|--resume" -- "$SMELT" sft --resume "$work/sr2.checkpoints/step-00000002" --data "$work/chat6.jsonl" \
        --replay "$work/chat6.jsonl" --out "$work/x"
      expect_error sft-model-and-resume "--model|--resume" -- "$SMELT" sft --model "$work/tm" --resume "$work/sr2.checkpoints/step-00000002" --data "$work/chat6.jsonl" --out "$work/x"
      expect_error sft-plain-text "no conversations" -- "$SMELT" sft --model "$work/tm" --data "$fixtures/tokenizer_corpus.txt" --steps 2 --out "$work/x"
    else
      fail "data prepare of conversations"
    fi
  else
    fail "train on token shards"
  fi
  printf '{"text": "fine"}\n{"text": oops}\n' >"$work/bad.jsonl"
  expect_error bad-jsonl "bad.jsonl:2|malformed JSON" -- "$SMELT" data prepare --data "$work/bad.jsonl" --tokenizer "$work/tok.json" --out "$work/bd"
  printf '{"messages": [{"role": "robot", "content": "x"}]}\n' >"$work/role.jsonl"
  expect_error bad-role "role.jsonl:1|messages[0].role|robot" -- "$SMELT" data prepare --data "$work/role.jsonl" --tokenizer "$work/tok.json" --out "$work/bd"
  [ ! -e "$work/bd" ] && ok || fail "a refused data prepare left $work/bd behind"
  cp -r "$work/tokdata" "$work/corrupt"
  printf 'X' | dd of="$work/corrupt/train-00000.tok" bs=1 seek=100 conv=notrunc 2>/dev/null
  expect_error corrupt-shard "train-00000.tok|checksum" -- "$SMELT" train --config "$work/tok_recipe.json" --data "$work/corrupt" --out "$work/x"
  expect_error bad-tokenizer "nope.json|does not exist" -- "$SMELT" data prepare --data "$work/text.txt" --tokenizer "$work/nope.json" --out "$work/x"
else
  fail "tokenizer train / data prepare"
fi

fixtures="$(cd "$(dirname "$0")" && pwd)/fixtures"
# The pipeline on toy settings: every stage, a stage killed and resumed, a rerun that skips them all.
# The base stage is long enough (1000 steps, checkpoints every 50) that it cannot finish between
# its first checkpoint and the kill.
mkdir -p "$work/pipe"
head -c 12000 "$fixtures/tokenizer_corpus.txt" >"$work/pipe/prose.txt"
tail -c 12000 "$fixtures/tokenizer_corpus.txt" >"$work/pipe/other.txt"
for i in $(seq 1 30); do echo "{\"prompt\": \"What does word$i mean?\", \"response\": \"A thing numbered $i.\"}"; done >"$work/pipe/instruct.jsonl"
stage_train='"train": {"steps": 2, "batch_size": 2, "seq_len": 16, "eval_batches": 1, "warmup_steps": 1}'
cat >"$work/pipe/recipe.json" <<RECIPE
{"tokenizer": {"vocab_size": 400}, "domains": {"prose": "$work/pipe/prose.txt", "other": "$work/pipe/other.txt"},
 "instruct_data": "$work/pipe/instruct.jsonl", "val_fraction": 0.2, "save_every": 50,
 "base": {"model": {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 64},
          "train": {"steps": 1000, "batch_size": 2, "seq_len": 16, "eval_batches": 1, "warmup_steps": 1}},
 "instruct": {$stage_train}, "experts": {$stage_train}, "compose": {"top_k": 1, "gate_init": "hidden"}, "mix": {$stage_train},
 "distill": {"model": {"vocab_size": 400, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64},
             $stage_train, "loss": "jsd", "hidden_loss": "mse"}}
RECIPE
expect_error bad-domains "--domains|NAME=FILE|prose.txt" -- "$SMELT" pipeline "$work/pipe/recipe.json" --out "$work/pipe/x" --domains "$work/pipe/prose.txt"
expect_error missing-domain "domains.b|nope.txt|does not exist" -- "$SMELT" pipeline "$work/pipe/recipe.json" --out "$work/pipe/x" --domains "a=$work/pipe/prose.txt,b=$work/pipe/nope.txt"
"$SMELT" pipeline "$work/pipe/recipe.json" --out "$work/pipe/run" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do ls -d "$work/pipe/run/base.checkpoints/step-"[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9] >/dev/null 2>&1 && break; sleep 0.05; done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
if "$SMELT" pipeline "$work/pipe/recipe.json" --out "$work/pipe/run" >/dev/null 2>"$work/pipe/resume.err"; then
  grep -q "resuming .*base" "$work/pipe/resume.err" && ok || fail "the killed base stage did not resume from its checkpoint"
  grep -q "MoE after MiX" "$work/pipe/run/report.md" && grep -q '"student (distilled)"' "$work/pipe/run/results.json" && grep -q '"student (no distillation)"' "$work/pipe/run/results.json" &&
    [ -s "$work/pipe/run/report/routing_layer0.svg" ] && [ -s "$work/pipe/run/report/loss_students.svg" ] && grep -q "^## Training" "$work/pipe/run/report.md" &&
    ok || fail "pipeline report"
  "$SMELT" pipeline "$work/pipe/recipe.json" --out "$work/pipe/run" >/dev/null 2>"$work/pipe/rerun.err" &&
    [ "$(grep -c ': done' "$work/pipe/rerun.err")" -ge 9 ] && ! grep -q "resuming" "$work/pipe/rerun.err" && ok ||
    fail "a rerun must skip every finished stage"
else
  fail "pipeline: $(tail -3 "$work/pipe/resume.err")"
fi
# A pipeline that starts from a pretrained model (here the toy base, exported to GGUF with its
# tokenizer) and skips instruct tuning: experts, compose, MiX and distil from it.
if "$SMELT" export --model "$work/pipe/run/base" --format gguf --out "$work/pipe/base.gguf" >/dev/null 2>&1; then
  python3 - "$work/pipe/recipe.json" "$work/pipe/base.gguf" >"$work/pipe/from.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
del r["tokenizer"], r["instruct"], r["instruct_data"]
r["base"] = {"from": sys.argv[2]}
print(json.dumps(r))
PY
  if "$SMELT" pipeline "$work/pipe/from.json" --out "$work/pipe/from" >/dev/null 2>"$work/pipe/from.err" &&
    grep -q "base (.*base.gguf)" "$work/pipe/from/report.md" && ! grep -q "| instruct |" "$work/pipe/from/report.md" &&
    cmp -s <(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["model"]["vocab"] == json.load(open(sys.argv[2]))["model"]["vocab"])' \
      "$work/pipe/from/tokenizer.json" "$work/pipe/run/tokenizer.json") <(echo True); then ok
  else fail "pipeline from a pretrained GGUF: $(tail -3 "$work/pipe/from.err")"; fi
  # The same pipeline with the recipe's "device": "sim": every stage's model comes out byte for byte.
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["device"]="sim"; print(json.dumps(r))' "$work/pipe/from.json" >"$work/pipe/from_sim.json"
  "$SMELT" pipeline "$work/pipe/from_sim.json" --out "$work/pipe/from_sim" >/dev/null 2>"$work/pipe/from_sim.err" &&
    (for stage in moe moe_mix student student_plain; do cmp -s "$work/pipe/from/$stage/model.safetensors" "$work/pipe/from_sim/$stage/model.safetensors" || exit 1; done) &&
    ok || fail "pipeline with \"device\": \"sim\" differs from the CPU run: $(tail -2 "$work/pipe/from_sim.err")"
else
  fail "export of the pipeline's base to GGUF"
fi
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["tokenizer"]={"vocab_size": 400}; print(json.dumps(r))' "$work/pipe/from.json" >"$work/pipe/from_bad.json"
expect_error pipeline-from-with-tokenizer "from_bad.json: tokenizer|comes from base.from" -- "$SMELT" pipeline "$work/pipe/from_bad.json" --out "$work/pipe/x"
sed 's/"gate_init": "hidden"/"gate_init": "lad"/' "$work/pipe/recipe.json" >"$work/pipe/bad_init.json"
sed 's/"save_every": 50/"save_every": 50, "device": "gpu"/' "$work/pipe/recipe.json" >"$work/pipe/bad_device.json"
expect_error pipeline-bad-device "bad_device.json: device|unknown device 'gpu'" -- "$SMELT" pipeline "$work/pipe/bad_device.json" --out "$work/pipe/x_dev"
expect_error pipeline-bad-gate-init "bad_init.json: compose.gate_init|lad" -- "$SMELT" pipeline "$work/pipe/bad_init.json" --out "$work/pipe/x_init"
[ ! -e "$work/pipe/x_init/base" ] && ok || fail "a bad gate_init is refused before any stage runs"
sed 's/"compose"/"composee"/' "$work/pipe/recipe.json" >"$work/pipe/bad.json"
expect_error pipeline-unknown-stage "bad.json|compose|missing" -- "$SMELT" pipeline "$work/pipe/bad.json" --out "$work/pipe/x"
sed 's/"hidden_size": 16/"hidden_sise": 16/' "$work/pipe/recipe.json" >"$work/pipe/bad2.json"
expect_error pipeline-bad-stage-key "bad2.json: distill|model.hidden_size" -- "$SMELT" pipeline "$work/pipe/bad2.json" --out "$work/pipe/x"
sed 's/"hidden_loss": "mse"/"student_init": "teachr"/' "$work/pipe/recipe.json" >"$work/pipe/bad3.json"
expect_error pipeline-bad-student-init "bad3.json|distill.student_init|teachr" -- "$SMELT" pipeline "$work/pipe/bad3.json" --out "$work/pipe/x"
[ ! -e "$work/pipe/x" ] && ok || fail "a refused pipeline recipe created its output directory"

# GGUF import: a llama.cpp-layout file becomes a model directory every command reads, and a
# GGUF is taken wherever --model is; a truncated or lying file is refused naming the tensor.
fixtures=$(cd "$(dirname "$0")/fixtures" && pwd)
if "$SMELT" import --model "$fixtures/gguf_mixtral.gguf" --out "$work/imported" --json >"$work/import.json" 2>/dev/null &&
  grep -q '"experts":4' "$work/import.json" && [ -f "$work/imported/model.safetensors" ]; then ok; else fail "import of a GGUF: $(cat "$work/import.json")"; fi
head -c 20000 "$fixtures/gguf_llama.gguf" >"$work/truncated.gguf"
expect_error import-truncated "truncated.gguf|tensor '|truncated?" -- "$SMELT" import --model "$work/truncated.gguf" --out "$work/t"
[ ! -e "$work/t" ] && ok || fail "a refused import created its output directory"
expect_error import-same-dir "--out must differ" -- "$SMELT" import --model "$work/imported" --out "$work/imported"
"$SMELT" upcycle --model "$fixtures/gguf_llama.gguf" --out "$work/upcycled" --experts 2 --top-k 1 >/dev/null 2>&1 && ok ||
  fail "upcycle --model FILE.gguf"
"$SMELT" moefy --model "$fixtures/gguf_llama.gguf" --out "$work/moefied" --experts 4 --top-k 2 --fit-steps 0 >/dev/null 2>&1 && ok ||
  fail "moefy --model FILE.gguf"
"$SMELT" inspect --model "$fixtures/gguf_llama.gguf" --tensors --json 2>/dev/null | grep -q '"dtype":"F32"' && ok ||
  fail "inspect --model FILE.gguf lists its tensors"

"$SMELT" train --help >/dev/null && ok || fail "train --help"

# smelt plan: on paper, three layouts; a wrong count is refused on one line.
"$SMELT" plan --config "$(dirname "$0")/../configs/tiny_moe.json" --ranks 2 --json | grep -q '"layout":"expert parallel (2)"' && ok ||
  fail "plan --json lists expert parallel"
expect_error plan-ranks "--ranks" -- "$SMELT" plan --config "$(dirname "$0")/../configs/tiny_moe.json" --ranks 0

echo "cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
