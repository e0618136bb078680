#!/usr/bin/env bash
# The README's picture, made by dap alone: each row one Fashion-MNIST class (rows in the
# folder's alphabetical order), its left ten images the seeded random real subset
# (`dap distill --method random`), its right ten the dap + repel set from k-means start
# images (the demo's dap-init set: the shipped prior and flags files). The two sets are put
# into one image folder (real as aNNNNN.png, distilled as bNNNNN.png, so they sort apart)
# and `dap info --grid` draws it. About a minute on 2 cores.
#   scripts/readme-figure.sh [OUT.png]   (default docs/fmnist-real-vs-distilled.png)
set -euo pipefail
cd "$(dirname "$0")/.."
DAP=${DAP:-./build/dap}
OUT=${1:-docs/fmnist-real-vs-distilled.png}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
flags() { grep -hv '^#' "$@" | tr '\n' ' '; }
$DAP distill --data fmnist --method random --ipc 10 --seed 0 --out "$work/real" --quiet
# shellcheck disable=SC2046
$DAP distill --data fmnist --model models/fmnist-dit.safetensors --method dap --ipc 10 --seed 0 \
  --out "$work/dap" --quiet $(flags models/fmnist-sampler.flags models/dap-fmnist.flags models/fmnist-init.flags)
for dir in "$work/real"/*/; do
  k=$(basename "$dir"); mkdir -p "$work/both/$k"
  for f in "$work/real/$k"/*.png; do cp "$f" "$work/both/$k/a$(basename "$f")"; done
  for f in "$work/dap/$k"/*.png; do cp "$f" "$work/both/$k/b$(basename "$f")"; done
done
$DAP info --data "$work/both" --grid "$OUT" --per-class 20 | tail -1
