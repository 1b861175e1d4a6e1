#!/usr/bin/env bash
# The main job: installs, builds, fetches the fortunes corpus, trains the tiny dense Llama-style
# model (configs/tiny.json, about 10 minutes on 2 cores), prints its validation loss in bits per
# byte, and samples some text from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
bash scripts/fetch_data.sh
./build/smelt train --config configs/tiny.json --data data/fortunes/train.txt --val data/fortunes/val.txt --out runs/tiny
./build/smelt eval --model runs/tiny --data data/fortunes/val.txt
./build/smelt generate --model runs/tiny --prompt "The meaning of life is" --max-new-tokens 300 --temperature 0.7 --seed 1
