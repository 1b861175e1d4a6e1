#!/usr/bin/env bash
# The one-shot check on a machine with an NVIDIA GPU (the `device` tool's machine), in two halves:
#
#   bash scripts/gpu_check.sh --prepare   # here, on the build machine: a CUDA build for sm_90 in
#                                         # build-gpu/ with the shared libraries it needs beside it
#   bash scripts/gpu_check.sh             # there (carry build-gpu): the GPU's name, then the CUDA
#                                         # and backend-ops tests, one JSON line per test
#
# The GPU machine has nvcc but not this project's Debian libraries (Highway, GoogleTest…), so
# the binaries are built here and travel with libhwy. Nothing here times anything yet: the GPU
# benchmarks come with the CUDA op table (issue 16).
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
export LD_LIBRARY_PATH="$PWD/build-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader |
  python3 -c 'import json, sys; n, m, d = [f.strip() for f in sys.stdin.readline().split(",")]; print(json.dumps({"gpu": n, "memory": m, "driver": d}))'
status=0
./build-gpu/tests/smelt_tests --gtest_filter='Device.*:BackendOps.*:SimTraining.*:Nccl.*' --gtest_output="json:$out/gpu_tests.json" >"$out/gpu_tests.log" 2>&1 || status=$?
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
exit $status
