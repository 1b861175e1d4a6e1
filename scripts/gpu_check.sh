#!/usr/bin/env bash
# The one-shot check on a machine with an NVIDIA GPU (the `device` tool's machine), in two halves:
#
#   bash scripts/gpu_check.sh --prepare   # here, on the build machine: a CUDA build for sm_90 in
#                                         # build-gpu/ with the shared libraries it needs beside it
#   bash scripts/gpu_check.sh             # there (carry build-gpu): one JSON line per result
#
# There it prints: the GPU's name; each CUDA test (the backend-ops comparison of every op with
# the CPU, training parity in f32 and bf16, memory, NCCL); a CUDA training run killed after a
# checkpoint and resumed against an uninterrupted one (bit-identical or not); the one-line error
# of running out of device memory; then `smelt bench train` on the reference model and a larger
# MoE (12 layers, hidden 1024, 8 experts of FFN 2816, top-2, seq 1024) in f32 and bf16, with
# MFU against a dense bf16 peak of ${SMELT_PEAK_TFLOPS:-989} TFLOP/s (H100 SXM / H200), beside
# ../shared/bench/torch_moe_ref.py --device cuda on the same shapes when torch is installed, and
# f32 once more with the experts' GEMMs grouped (SMELT_CUDA_GROUPED_GEMM=1) to choose the default.
# The GPU machine has nvcc but not this project's Debian libraries (Highway, GoogleTest…), so
# the binaries are built here and travel with libhwy. Budget: under 8 minutes.
# A dry run of the script's own steps without a GPU: SMELT_GPU_CHECK_DEVICE=sim
# SMELT_GPU_CHECK_BUILD=build bash scripts/gpu_check.sh (sim: the CPU's kernels behind copies).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --prepare ]]; then
  # Without MPI: the GPU machine has no OpenMPI libraries (one rank is what runs there).
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSMELT_CUDA=ON -DSMELT_MPI=OFF -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
  cmake --build build-gpu -j "${SMELT_BUILD_JOBS:-2}" --target smelt smelt_tests
  mkdir -p build-gpu/lib
  for lib in libhwy libnccl; do cp -L "$(ldd build-gpu/tests/smelt_tests | awk -v l="$lib" '$0 ~ l {print $3}')" build-gpu/lib/; done
  echo "prepared build-gpu/: carry it to the GPU machine and run scripts/gpu_check.sh there"
  exit 0
fi
build=${SMELT_GPU_CHECK_BUILD:-build-gpu}
dev=${SMELT_GPU_CHECK_DEVICE:-cuda}
export LD_LIBRARY_PATH="$PWD/$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=${OUT:-/tmp}
[[ $dev == cuda ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader |
  python3 -c 'import json, sys; n, m, d = [f.strip() for f in sys.stdin.readline().split(",")]; print(json.dumps({"gpu": n, "memory": m, "driver": d}))'
status=0
./$build/tests/smelt_tests --gtest_filter='Device.*:BackendOps.*:SimTraining.*:CudaTraining.*:Nccl.*' --gtest_output="json:$out/gpu_tests.json" \
  >"$out/gpu_tests.log" 2>&1 || status=$?
python3 - "$out/gpu_tests.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for suite in report["testsuites"]:
    for t in suite["testsuite"]:
        result = "failed" if t.get("failures") else ("skipped" if t.get("result") == "SKIPPED" else "passed")
        line = {"test": suite["name"] + "." + t["name"], "result": result}
        if t.get("failures"): line["failure"] = t["failures"][0]["failure"][:300]
        print(json.dumps(line))
PY
smelt=./$build/smelt
work=$(mktemp -d)
# Resumption on the GPU: 20 steps straight against a run killed after its step-10 checkpoint.
head -c 200000 /dev/urandom | base64 >"$work/text.txt"
model='"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64, "num_local_experts": 4, "num_experts_per_tok": 2'
echo "{\"model\": {$model}, \"train\": {\"steps\": 20, \"batch_size\": 4, \"seq_len\": 32, \"eval_batches\": 1, \"warmup_steps\": 2}}" >"$work/r.json"
resume=failed
if $smelt train --config "$work/r.json" --data "$work/text.txt" --out "$work/straight" --device $dev >"$work/r.log" 2>&1 &&
  $smelt train --config "$work/r.json" --data "$work/text.txt" --out "$work/part" --device $dev --save-every 10 --stop-after 10 >>"$work/r.log" 2>&1 &&
  $smelt train --resume "$work/part.checkpoints/step-00000010" --data "$work/text.txt" --out "$work/resumed" --device $dev >>"$work/r.log" 2>&1; then
  cmp -s "$work/straight/model.safetensors" "$work/resumed/model.safetensors" && resume=identical || resume=different
fi
echo "{\"check\": \"cuda resume after a checkpoint\", \"result\": \"$resume\", \"log\": $(tail -c 300 "$work/r.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"
[[ $resume == identical ]] || status=1
# Out of device memory: one line on stderr, naming the device. A small model on 4M tokens: its
# activations (hundreds of GiB) outgrow any GPU while the host holds only the token ids. (Not in
# a sim dry run: there it would be host memory.)
if [[ $dev == cuda ]]; then
  oom_rc=0
  $smelt bench train --device cuda --layers 2 --hidden 1024 --ffn 4096 --batch 4096 --seq 1024 --steps 1 >/dev/null 2>"$work/oom.err" || oom_rc=$?
  echo "{\"check\": \"out of device memory\", \"exit\": $oom_rc, \"stderr_lines\": $(wc -l <"$work/oom.err"), \"stderr\": $(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()[:300]))' "$work/oom.err")}"
fi
# Throughput: the reference model, then the larger MoE, each in f32 and bf16, and the peer.
peak=${SMELT_PEAK_TFLOPS:-989}
peer=${SMELT_TORCH_REF:-../shared/bench/torch_moe_ref.py}
torch_ok=0
[[ -f $peer ]] && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null && torch_ok=1
shapes=("--layers 4 --hidden 256 --ffn 512 --seq 256 --batch 16" "--layers 12 --hidden 1024 --ffn 2816 --seq 1024 --batch 8")
[[ $dev == cuda ]] || shapes=("--layers 1 --hidden 64 --ffn 128 --seq 64 --batch 2")  # a dry run: the steps, not the figures
for shape in "${shapes[@]}"; do
  for precision in f32 bf16; do
    # shellcheck disable=SC2086
    timeout 120 $smelt bench train --device $dev $shape --experts 8 --top-k 2 --heads 8 --steps 6 --precision $precision --peak-tflops "$peak" ||
      echo "{\"bench\": \"train\", \"shape\": \"$shape\", \"precision\": \"$precision\", \"result\": \"failed or over 120 s\"}"
  done
  # The experts' GEMMs as one cublasGemmGroupedBatchedEx per stage instead of one call each.
  # shellcheck disable=SC2086
  SMELT_CUDA_GROUPED_GEMM=1 timeout 120 $smelt bench train --device $dev $shape --experts 8 --top-k 2 --heads 8 --steps 6 --precision f32 \
    --peak-tflops "$peak" | python3 -c 'import json,sys; [print(json.dumps({**json.loads(l), "expert_gemms": "grouped"})) for l in sys.stdin]' ||
    echo "{\"bench\": \"train\", \"shape\": \"$shape\", \"expert_gemms\": \"grouped\", \"result\": \"failed or over 120 s\"}"
  if ((torch_ok)); then
    read -r layers hidden ffn seq batch <<<"$(sed -E 's/--[a-z]+ //g' <<<"$shape")"
    timeout 120 python3 "$peer" --device cuda --layers "$layers" --dim "$hidden" --ffn "$ffn" --seq "$seq" \
      --batch "$batch" --experts 8 --topk 2 --heads 8 --steps 6 || echo '{"impl": "pytorch", "result": "failed"}'
  else
    echo '{"impl": "pytorch", "result": "not run: no torch with CUDA (or no peer script) on this machine"}'
  fi
done
rm -rf "$work"
exit $status
