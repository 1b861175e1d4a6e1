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

# The four domains of the MoE pipeline (DESIGN.md, "Data"), from installed Debian packages, in
# data/domains/: prose (fortunes), glosses (wordnet-base: "word (noun): gloss" lines), C
# (/usr/include/*.h) and Python (the standard library's top-level modules); and
# data/domains/instruct.jsonl, WordNet's glosses as instruct pairs ("What does WORD mean?").
# Files are taken in sorted order, so a machine with the same packages gets the same bytes.
dom=data/domains
mkdir -p "$dom"
wn=/usr/share/wordnet
pystd=$(ls -d /usr/lib/python3.[0-9]* 2>/dev/null | sort -V | tail -1)
for need in "$wn/data.noun" /usr/include/stdio.h "$pystd/os.py"; do
  [ -f "$need" ] || { echo "error: $need not found: run scripts/install_deps.sh (wordnet-base, libc6-dev, python3-minimal)" >&2; exit 1; }
done
cat "$out/train.txt" "$out/val.txt" >"$dom/prose.txt.tmp" && mv "$dom/prose.txt.tmp" "$dom/prose.txt"
# WordNet data lines: offset lex_filenum ss_type w_cnt word lex_id ... | gloss (license header lines start with two spaces).
for pos in noun verb adj adv; do
  awk -v pos="$pos" '!/^  / {
      split($0, halves, " \\| "); gloss = halves[2]; sub(/[ \t]+$/, "", gloss)
      word = $5; gsub(/_/, " ", word); sub(/\([a-z]+\)$/, "", word)
      definition = gloss; sub(/;.*/, "", definition)
      if (word == "" || definition == "") next
      printf "%s (%s): %s\n", word, pos, gloss > "/dev/stdout"
      gsub(/\\/, "\\\\", word); gsub(/"/, "\\\"", word); gsub(/\\/, "\\\\", definition); gsub(/"/, "\\\"", definition)
      printf "{\"prompt\": \"What does \\\"%s\\\" mean?\", \"response\": \"%s.\"}\n", word, definition > "/dev/stderr"
    }' "$wn/data.$pos"
done >"$dom/glosses.txt.tmp" 2>"$dom/instruct.jsonl.tmp"
mv "$dom/glosses.txt.tmp" "$dom/glosses.txt"
mv "$dom/instruct.jsonl.tmp" "$dom/instruct.jsonl"
find /usr/include -maxdepth 1 -name '*.h' -type f | LC_ALL=C sort | while read -r f; do printf '/* %s */\n' "${f#/usr/include/}"; cat "$f"; done >"$dom/c.txt.tmp"
mv "$dom/c.txt.tmp" "$dom/c.txt"
find "$pystd" -maxdepth 1 -name '*.py' -type f | LC_ALL=C sort | while read -r f; do printf '# %s\n' "${f#"$pystd"/}"; cat "$f"; done >"$dom/python.txt.tmp"
mv "$dom/python.txt.tmp" "$dom/python.txt"
for f in prose glosses c python; do echo "data/domains/$f.txt: $(wc -c <"$dom/$f.txt") bytes"; done
echo "data/domains/instruct.jsonl: $(wc -l <"$dom/instruct.jsonl") pairs"
