#!/usr/bin/env bash
# The README's distillation figures: a BPE tokenizer and token shards for fortunes, the teacher
# (configs/tiny_bpe.json, ~15 min on 2 cores), then the same student three ways on the same
# windows: next-token loss only, distilled from a cached top-32 teacher, distilled online.
set -euo pipefail
cd "$(dirname "$0")/../.."
smelt=./build/smelt
$smelt tokenizer train --data data/fortunes/train.txt --vocab-size 4096 --out runs/fortunes_tokenizer.json
$smelt data prepare --data data/fortunes/train.txt --tokenizer runs/fortunes_tokenizer.json --out runs/fortunes_bpe --val-fraction 0
[ -d runs/tiny_bpe ] || $smelt train --config configs/tiny_bpe.json --data runs/fortunes_bpe --val data/fortunes/val.txt --out runs/tiny_bpe
common=(--teacher runs/tiny_bpe --student-config configs/tiny_student.json --data runs/fortunes_bpe --val data/fortunes/val.txt --json)
$smelt distill "${common[@]}" --alpha 0 --out runs/student_plain | tail -1
$smelt distill "${common[@]}" --teacher-topk 32 --cache runs/teacher_cache --alpha 0.5 --out runs/student_kd_cached | tail -1
$smelt distill "${common[@]}" --alpha 0.5 --out runs/student_kd_online | tail -1
