#!/usr/bin/env bash
# The dap hyperparameter ablation on a VALIDATION split of the Fashion-MNIST training set
# (never the test set): every distillation holds out HOLDOUT images per class
# (--holdout/--split-seed) and every evaluation scores on exactly those (--val), so the
# guidance never sees them. One factor at a time from the defaults (SPEC 3).
# Results: out/ablation/results.tsv (config, mean, std); resumable (finished cells skipped).
#   scripts/ablation.sh [IPC] [RUNS] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
DAP=./build/dap
MODEL=${DAP_MODEL:-models/fmnist-dit.safetensors}
IPC=${1:-10}; RUNS=${2:-2}; EPOCHS=${3:-300}; HOLDOUT=${HOLDOUT:-100}; SPLIT=${SPLIT_SEED:-0}
OUT=${ABL_OUT:-out/ablation}
mkdir -p "$OUT"
TSV="$OUT/results.tsv"
[ -f "$TSV" ] || printf 'name\tflags\tval_acc_mean\tval_acc_std\n' > "$TSV"
cell() { # cell NAME FLAGS...
  local name=$1; shift
  grep -q "^$name	" "$TSV" && { echo "ablation: $name done, skipped"; return; }
  local dir="$OUT/$name"
  $DAP distill --data fmnist --model "$MODEL" --ipc "$IPC" --seed 0 --holdout "$HOLDOUT" --split-seed "$SPLIT" \
    --out "$dir" --quiet "$@"
  $DAP eval --data fmnist --train "$dir" --val "$HOLDOUT" --split-seed "$SPLIT" --arch convnet3 --runs "$RUNS" \
    --epochs "$EPOCHS" --json "$OUT/$name.json" --quiet > "$OUT/$name.txt"
  local ms; ms=$(sed -n 's/.*accuracy \([0-9.]*\) +- \([0-9.]*\).*/\1\t\2/p' "$OUT/$name.txt" | tail -1)
  printf '%s\t%s\t%s\n' "$name" "$*" "$ms" >> "$TSV"
  echo "ablation: $name ($*): $ms"
}
cell random --method random
cell vanilla --method vanilla
for g in 0.1 0.3 1 3 10; do cell gamma-$g --method dap --gamma $g; done
for l in 1 2 4 6 8; do cell layer-$l --method dap --layer $l; done
cell pool-mean --method dap --pool mean
cell kernel-rbf --method dap --kernel rbf --sigma 10
for s in 0 0.25 0.75; do cell stop-$s --method dap --stop $s; done
for n in 10 25 50; do cell nreal-$n --method dap --n-real $n; done
cell form-eps --method dap --form eps
cell fixed-noise --method dap --fixed-noise
for w in 1 2 6; do cell cfg-$w --method vanilla --cfg $w; done
column -t -s $'\t' "$TSV"
