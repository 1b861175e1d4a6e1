#!/usr/bin/env bash
# The one-shot check on a machine with an NVIDIA GPU (the `device` tool's machine), in two halves:
#
#   bash scripts/gpu_check.sh --prepare   # here, on the build machine: a CUDA build for sm_90 in
#                                         # build-gpu/, and gpu-dist/ (~20 MB): its two binaries,
#                                         # the shared libraries they need that the GPU machine
#                                         # lacks, and the PyTorch peer script
#   bash scripts/gpu_check.sh             # there (carry gpu-dist): one JSON line per result,
#                                         # also written to $OUT/gpu_check.jsonl
#
# There it prints: the GPU's name; each CUDA test suite's tests (the backend-ops comparison of
# every op with the CPU, training parity in f32 and bf16, memory, NCCL), each suite in its own
# process under a timeout, so a crash or a hang costs one suite; a CUDA training run killed
# after a checkpoint and resumed against an uninterrupted one (bit-identical or not); the
# one-line error of running out of device memory; then `smelt bench train` on the reference model
# and a larger MoE (12 layers, hidden 1024, 8 experts of FFN 2816, top-2, seq 1024) in f32 and
# bf16, with MFU against a dense bf16 peak of ${SMELT_PEAK_TFLOPS:-989} TFLOP/s (H100 SXM / H200),
# beside torch_moe_ref.py --device cuda on the same shapes when torch sees the GPU, and f32 once
# more with the experts' GEMMs grouped (SMELT_CUDA_GROUPED_GEMM=1) to choose the default.
# cuBLAS is opened at run time and NCCL linked by the tests: both are taken from the GPU
# machine (its CUDA toolkit or its Python packages), found below. Budget: under 8 minutes;
# steps past a 7-minute deadline are skipped, saying so.
# A dry run of the script's own steps without a GPU: SMELT_GPU_CHECK_DEVICE=sim
# SMELT_GPU_CHECK_BUILD=build bash scripts/gpu_check.sh (sim: the CPU's kernels behind copies).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --prepare ]]; then
  # Without MPI: the GPU machine has no OpenMPI libraries (one rank is what runs there).
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSMELT_CUDA=ON -DSMELT_MPI=OFF -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
  cmake --build build-gpu -j "${SMELT_BUILD_JOBS:-2}" --target smelt smelt_tests
  rm -rf gpu-dist && mkdir -p gpu-dist/tests gpu-dist/lib
  cp build-gpu/smelt gpu-dist/ && cp build-gpu/tests/smelt_tests gpu-dist/tests/
  # Every library the binaries load except the C/C++ runtime (newer there), the CUDA driver and
  # NCCL (208 MB here; the GPU machine has its own): Highway, utf8proc, …
  ldd gpu-dist/smelt gpu-dist/tests/smelt_tests | awk '$3 ~ /^\// {print $1, $3}' | sort -u |
    grep -Ev '^(libc|libm|libgcc_s|libstdc\+\+|libpthread|librt|libdl|ld-linux|libnccl|libcuda)[.-]' |
    while read -r _ path; do cp -L "$path" gpu-dist/lib/; done
  peer=../shared/bench/torch_moe_ref.py
  [[ -f $peer ]] && cp "$peer" gpu-dist/
  du -sh gpu-dist
  echo "prepared gpu-dist/: carry it to the GPU machine and run scripts/gpu_check.sh there"
  exit 0
fi
build=${SMELT_GPU_CHECK_BUILD:-gpu-dist}
dev=${SMELT_GPU_CHECK_DEVICE:-cuda}
out=${OUT:-/tmp}
exec > >(tee "$out/gpu_check.jsonl")
deadline=${SMELT_GPU_CHECK_SECONDS:-420}
# True while the budget lasts; past it, says which step was skipped.
in_time() {
  ((SECONDS < deadline)) && return 0
  echo "{\"skipped\": \"$1\", \"reason\": \"past the ${deadline} s deadline\"}"
  return 1
}
# cuBLAS (opened at run time) and NCCL (the tests link it) from the GPU machine: its CUDA
# toolkit's folders, else the pip packages beside its Python.
libdirs=$PWD/$build/lib
if [[ $dev == cuda ]]; then
  site=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null || echo /nonexistent)
  for lib in libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
    # -H: /usr/local/cuda and its lib64 are often links.
    found=$(find -H /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets /usr/lib/x86_64-linux-gnu /opt /usr/local/lib "$site" \
      -name "$lib" 2>/dev/null | head -1 || true)
    echo "{\"library\": \"$lib\", \"found\": \"${found:-no}\"}"
    [[ -n $found ]] && libdirs="$libdirs:$(dirname "$found")"
  done
fi
# For smelt's binaries only: Python (the PyTorch peer) keeps the machine's own libraries.
run_env="env LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
chmod +x "$build/smelt" "$build/tests/smelt_tests" 2>/dev/null || true
if [[ $dev == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader |
    python3 -c 'import json, sys; n, m, d = [f.strip() for f in sys.stdin.readline().split(",")]; print(json.dumps({"gpu": n, "memory": m, "driver": d}))' || true
fi
status=0
logs=$(mktemp -d)
# One process per suite: a crash, a hang or a sticky CUDA error costs that suite only.
for suite in Device BackendOps CudaTraining SimTraining Nccl; do
  in_time "tests $suite" || { status=1; continue; }
  rc=0
  timeout 150 $run_env ./$build/tests/smelt_tests --gtest_filter="$suite.*" --gtest_output="json:$logs/$suite.json" >"$logs/$suite.log" 2>&1 || rc=$?
  cat "$logs/$suite.log" >>"$out/tests.log"  # $OUT brings back few files: one log for all suites
  if [[ -s $logs/$suite.json ]]; then
    python3 - "$logs/$suite.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for suite in report["testsuites"]:
    for t in suite["testsuite"]:
        result = "failed" if t.get("failures") else ("skipped" if t.get("result") == "SKIPPED" else "passed")
        line = {"test": suite["name"] + "." + t["name"], "result": result}
        if t.get("failures"): line["failure"] = t["failures"][0]["failure"][:300]
        print(json.dumps(line))
PY
  else
    echo "{\"suite\": \"$suite\", \"result\": \"no report (exit $rc: crashed or over 150 s)\", \"log\": $(tail -c 600 "$logs/$suite.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"
  fi
  ((rc == 0)) || status=1
done
smelt="$run_env ./$build/smelt"
work=$(mktemp -d)
# Resumption on the GPU: 20 steps straight against a run killed after its step-10 checkpoint.
head -c 200000 /dev/urandom | base64 >"$work/text.txt"
model='"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64, "num_local_experts": 4, "num_experts_per_tok": 2'
echo "{\"model\": {$model}, \"train\": {\"steps\": 20, \"batch_size\": 4, \"seq_len\": 32, \"eval_batches\": 1, \"warmup_steps\": 2}}" >"$work/r.json"
resume=failed
in_time "cuda resume" && if timeout 60 $smelt train --config "$work/r.json" --data "$work/text.txt" --out "$work/straight" --device $dev >"$work/r.log" 2>&1 &&
  timeout 60 $smelt train --config "$work/r.json" --data "$work/text.txt" --out "$work/part" --device $dev --save-every 10 --stop-after 10 >>"$work/r.log" 2>&1 &&
  timeout 60 $smelt train --resume "$work/part.checkpoints/step-00000010" --data "$work/text.txt" --out "$work/resumed" --device $dev >>"$work/r.log" 2>&1; then
  cmp -s "$work/straight/model.safetensors" "$work/resumed/model.safetensors" && resume=identical || resume=different
fi
echo "{\"check\": \"cuda resume after a checkpoint\", \"result\": \"$resume\", \"log\": $(tail -c 300 "$work/r.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"
[[ $resume == identical ]] || status=1
# Out of device memory: one line on stderr, naming the device. A small model on 4M tokens: its
# activations (hundreds of GiB) outgrow any GPU while the host holds only the token ids. (Not in
# a sim dry run: there it would be host memory.)
if [[ $dev == cuda ]] && in_time "out of device memory"; then
  oom_rc=0
  timeout 90 $smelt bench train --device cuda --layers 2 --hidden 1024 --ffn 4096 --batch 4096 --seq 1024 --steps 1 >/dev/null 2>"$work/oom.err" || oom_rc=$?
  echo "{\"check\": \"out of device memory\", \"exit\": $oom_rc, \"stderr_lines\": $(wc -l <"$work/oom.err"), \"stderr\": $(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()[:300]))' "$work/oom.err")}"
fi
# The last 300 bytes of a file as a JSON string.
error_tail() { tail -c 300 "$1" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))'; }
# Throughput: the reference model, then the larger MoE, each in f32 and bf16, and the peer.
peak=${SMELT_PEAK_TFLOPS:-989}
peer=${SMELT_TORCH_REF:-$build/torch_moe_ref.py}
torch_ok=0
[[ -f $peer ]] && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null && torch_ok=1
shapes=("--layers 4 --hidden 256 --ffn 512 --seq 256 --batch 16" "--layers 12 --hidden 1024 --ffn 2816 --seq 1024 --batch 8")
[[ $dev == cuda ]] || shapes=("--layers 1 --hidden 64 --ffn 128 --seq 64 --batch 2")  # a dry run: the steps, not the figures
for shape in "${shapes[@]}"; do
  for precision in f32 bf16; do
    in_time "bench $shape $precision" || continue
    # shellcheck disable=SC2086
    timeout 75 $smelt bench train --device $dev $shape --experts 8 --top-k 2 --heads 8 --steps 6 --precision $precision --peak-tflops "$peak" 2>"$work/bench.err" ||
      echo "{\"bench\": \"train\", \"shape\": \"$shape\", \"precision\": \"$precision\", \"result\": \"failed or over 75 s\", \"stderr\": $(error_tail "$work/bench.err")}"
  done
  # The experts' GEMMs as one cublasGemmGroupedBatchedEx per stage instead of one call each.
  in_time "bench $shape grouped" || continue
  # shellcheck disable=SC2086
  timeout 75 env SMELT_CUDA_GROUPED_GEMM=1 $smelt bench train --device $dev $shape --experts 8 --top-k 2 --heads 8 --steps 6 --precision f32 \
    --peak-tflops "$peak" 2>"$work/bench.err" | python3 -c 'import json,sys; [print(json.dumps({**json.loads(l), "expert_gemms": "grouped"})) for l in sys.stdin]' ||
    echo "{\"bench\": \"train\", \"shape\": \"$shape\", \"expert_gemms\": \"grouped\", \"result\": \"failed or over 75 s\", \"stderr\": $(error_tail "$work/bench.err")}"
  if ((torch_ok)) && in_time "pytorch $shape"; then
    read -r layers hidden ffn seq batch <<<"$(sed -E 's/--[a-z]+ //g' <<<"$shape")"
    timeout 75 python3 "$peer" --device cuda --layers "$layers" --dim "$hidden" --ffn "$ffn" --seq "$seq" \
      --batch "$batch" --experts 8 --topk 2 --heads 8 --steps 6 || echo '{"impl": "pytorch", "result": "failed"}'
  else
    echo '{"impl": "pytorch", "result": "not run: no torch with CUDA (or no peer script) on this machine"}'
  fi
done
rm -rf "$work" "$logs"
exit $status
