#!/usr/bin/env bash
# Builds the default corpus, data/fortunes/{train,val}.txt, from Debian's fortunes packages
# (English prose). Fortunes are separated by "%" lines; every 20th one (5%) is held out for
# validation, so the split is deterministic and no fortune is in both files.
set -euo pipefail
cd "$(dirname "$0")/.."
src=/usr/share/games/fortunes
out=data/fortunes
if [ ! -d "$src" ]; then
  echo "error: $src not found: install the fortunes package (scripts/install_deps.sh)" >&2
  exit 1
fi
mkdir -p "$out"
files=$(find -L "$src" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | sort)
tmp_train=$(mktemp "$out/train.XXXX") tmp_val=$(mktemp "$out/val.XXXX")
# shellcheck disable=SC2086
cat $files | awk -v train="$tmp_train" -v val="$tmp_val" '
  /^%$/ { flush(); next }
  { entry = entry $0 "\n" }
  function flush() { if (entry != "") { n++; if (n % 20 == 0) printf "%s", entry > val; else printf "%s", entry > train }; entry = "" }
  END { flush() }'
mv "$tmp_train" "$out/train.txt"
mv "$tmp_val" "$out/val.txt"
echo "data/fortunes: $(wc -c < "$out/train.txt") training bytes, $(wc -c < "$out/val.txt") validation bytes"
