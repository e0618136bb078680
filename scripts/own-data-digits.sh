#!/usr/bin/env bash
# The own-data recipe of docs/own-data.md on a second public dataset: the 8x8 digits that
# Debian's python3-sklearn ships. Every step resumes (rerun the script after a stop).
#   scripts/own-data-digits.sh [ROOT] [OUT]      (defaults: data/digits, out/digits)
# Steps: export the digits as ROOT/train + ROOT/test; train the prior (px-S/2, 2000 steps,
# batch 64, lr 5e-4, cosine decay from step 1500); its quality (scripts/prior-quality.sh);
# random, vanilla and dap at IPC 10; ConvNet-3 on each (3 runs, 300 epochs).
# THREADS (default 1) is each command's thread count.
set -euo pipefail
cd "$(dirname "$0")/.."
DAP=${DAP:-./build/dap}
ROOT=${1:-data/digits}; OUT=${2:-out/digits}; T=${THREADS:-1}
MODEL=$OUT/digits-pxS2.safetensors
SAMPLER=(--steps 25 --cfg 4 --clip-x0 1)
mkdir -p "$OUT"
[ -d "$ROOT/train" ] || python3 scripts/export-digits.py --out "$ROOT"
OMP_WAIT_POLICY=passive $DAP train --data "$ROOT" --config px-S/2 --out "$MODEL" --steps 2000 --batch 64 --lr 5e-4 \
  --lr-decay cosine --decay-start 1500 --ckpt-every 250 --val-every 500 --log-every 100 --seed 0 --threads "$T" --resume
PQ_DATA=$ROOT PQ_OUT=$OUT/prior-quality scripts/prior-quality.sh "$MODEL" 50 4 25 1
for m in random vanilla dap; do
  extra=("${SAMPLER[@]}")
  [ "$m" = random ] && extra=()   # real images: no sampler
  [ "$m" = dap ] && extra+=(--gamma 1 --kernel linear --pool mean --n-real 100 --stop 0.5 --repel 2)
  $DAP distill --model "$MODEL" --method "$m" --ipc 10 --seed 0 "${extra[@]}" --out "$OUT/$m-ipc10" --threads "$T"
  OMP_WAIT_POLICY=passive $DAP eval --data "$ROOT" --train "$OUT/$m-ipc10" --arch convnet3 --runs 3 --seed 0 --jobs 3 \
    --threads "$T" --quiet --json "$OUT/$m-ipc10.json" --resume
done
