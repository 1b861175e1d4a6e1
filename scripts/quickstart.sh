#!/usr/bin/env bash
# The main job: installs, builds, fetches the Debian corpora, then runs the whole MoE pipeline of
# configs/pipeline.json (tokenizer → base model → instruct model → one expert per domain →
# composed MoE + MiX fine-tune → distilled student; about 20 minutes on 2 cores) into
# runs/pipeline/, and prints its report (validation perplexity of every model on every domain).
# Rerunning skips the finished stages and resumes an interrupted one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
bash scripts/fetch_data.sh
./build/smelt pipeline configs/pipeline.json --out runs/pipeline
cat runs/pipeline/report.md
