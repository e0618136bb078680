#!/usr/bin/env bash
# The rivals' table (docs/methods.md, "The table"): every method of dap distill on the
# shipped Fashion-MNIST prior, each with its flags validated on the validation split
# (scripts/ablation.sh, ABL_SET=joint and ABL_SET=rivals; frozen in models/fmnist-dit.defaults,
# which dap distill loads by default), evaluated on the test set: ConvNet-3, RUNS runs x
# EPOCHS epochs, hard labels and the soft-label protocol (a teacher trained on the real
# training split, models/fmnist-convnet3.safetensors).
#
# The sets are made with the validation images held out (--holdout 100 --split-seed 0), as in
# the tuning, so a method's IPC 10 set is the very set its validation cell scored: with
# REUSE=DIR (default out/ablation-joint) and CELL_<method>=<cell name> set, that folder is
# copied in and dap distill finds it done. Resumable (finished cells are kept in the TSV;
# a cell's finished runs are kept by dap eval --resume).
#   scripts/rivals.sh                      (IPCS="1 10", METHODS below, PROTOCOLS="hard soft")
#   METHODS="mgd3" IPCS=10 PROTOCOLS=hard scripts/rivals.sh
# SOFT_RUNS (default RUNS): the soft-label cells' runs (a soft run costs about 3 hard ones here).
# Then each method's cost (COST=1, the default): $OUT/cost.tsv.
# Rows: random, vanilla, dap (the paper's guidance alone), dap+repel (models/dap-fmnist.flags),
# mgd3, d4m, igd (surrogate SUR: a ConvNet-3 teacher trained without the validation images),
# dm, minimax (the fine-tuned prior MINIMAX_MODEL, sampled with the shipped prior's defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
DAP=${DAP:-./build/dap}
MODEL=${DAP_MODEL:-models/fmnist-dit.safetensors}
MINIMAX_MODEL=${MINIMAX_MODEL:-models/fmnist-dit-minimax.safetensors}
TEACHER=${TEACHER:-models/fmnist-convnet3.safetensors}
SUR=${SUR:-out/ablation-joint/surrogate-val100.safetensors}
METHODS=${METHODS:-random vanilla dap dap+repel mgd3 d4m igd dm minimax}
IPCS=${IPCS:-1 10}
PROTOCOLS=${PROTOCOLS:-hard soft}
RUNS=${RUNS:-3}; SOFT_RUNS=${SOFT_RUNS:-$RUNS}; EPOCHS=${EPOCHS:-300}; HOLDOUT=${HOLDOUT:-100}; SPLIT=${SPLIT_SEED:-0}
JOBS=${JOBS:-$(nproc)}
OUT=${EXP_OUT:-out/rivals}
REUSE=${REUSE:-out/ablation-joint}
mkdir -p "$OUT"
TSV="$OUT/table.tsv"
[ -f "$TSV" ] || { printf 'set\tarch\tmean\tstd\tcommand\n' > "$TSV.$$"; mv -n "$TSV.$$" "$TSV"; rm -f "$TSV.$$"; }
for f in "$MODEL" "$TEACHER"; do [ -f "$f" ] || { echo "rivals: $f not found" >&2; exit 2; }; done

flags_of() { # flags_of METHOD: what dap distill gets besides the model's defaults file
  case $1 in
    dap+repel) grep -hv '^#' models/dap-fmnist.flags | tr '\n' ' '; echo "--defaults none $(grep -hv '^#' models/fmnist-sampler.flags | tr '\n' ' ')" ;;
    igd) echo "--surrogate $SUR" ;;
    minimax) echo "--defaults ${MODEL%.safetensors}.defaults" ;;
  esac
}
distill() { # distill METHOD IPC DIR
  local m=${1%%+*} model=$MODEL cell
  [ "$1" = minimax ] && model=$MINIMAX_MODEL
  if [ "$m" = igd ] && [ ! -f "$SUR" ]; then
    $DAP teacher --data fmnist --arch convnet3 --epochs 3 --batch 64 --seed "$SPLIT" --val "$HOLDOUT" --out "$SUR" --quiet
  fi
  cell=$(eval "echo \${CELL_${m}:-}")
  if [ "$2" = 10 ] && [ "$m" = "$1" ] && [ -n "$cell" ] && [ -d "$REUSE/$cell" ] && [ ! -d "$3" ]; then
    cp -r "$REUSE/$cell" "$3"   # the validated cell's own set (same flags, seed, holdout)
  fi
  # shellcheck disable=SC2046
  $DAP distill --data fmnist --model "$model" --method "$m" --ipc "$2" --seed 0 --holdout "$HOLDOUT" \
    --split-seed "$SPLIT" --out "$3" --quiet $(flags_of "$1")
}
. scripts/evalcell.sh
evalcell() { # evalcell NAME DIR PROTOCOL
  if [ "$3" = soft ]; then
    evalcell_run rivals "$1" convnet3-soft --train "$2" --arch convnet3 --runs "$SOFT_RUNS" --epochs "$EPOCHS" --jobs "$JOBS" --protocol soft --teacher "$TEACHER"
  else
    evalcell_run rivals "$1" convnet3 --train "$2" --arch convnet3 --runs "$RUNS" --epochs "$EPOCHS" --jobs "$JOBS"
  fi
}
for ipc in $IPCS; do
  for m in $METHODS; do
    name="${m/+/-}-ipc$ipc"
    t0=$(date +%s)
    distill "$m" "$ipc" "$OUT/$name"
    echo "rivals: $name distilled ($(( $(date +%s) - t0 )) s)"
    for p in $PROTOCOLS; do evalcell "$name" "$OUT/$name" "$p"; done
  done
done
# Each method's cost, measured alike: one class (0) at IPC 10 with its table flags, one
# thread, one method at a time; seconds per image and the process's peak memory from the
# manifest (COST=0 skips it).
if [ "${COST:-1}" = 1 ]; then
  CT="$OUT/cost.tsv"
  [ -f "$CT" ] || printf 'method\tseconds_per_image\tpeak_rss_mib\tcommand\n' > "$CT"
  for m in $METHODS; do
    grep -q "^$m	" "$CT" && continue
    d="$OUT/cost-${m/+/-}"; rm -rf "$d"
    mm=${m%%+*} model=$MODEL; [ "$m" = minimax ] && model=$MINIMAX_MODEL
    # shellcheck disable=SC2046
    cmd="$DAP distill --data fmnist --model $model --method $mm --ipc 10 --classes 0 --seed 0 --holdout $HOLDOUT --split-seed $SPLIT --threads 1 --out $d --quiet $(flags_of "$m")"
    $cmd
    num() { grep -o "\"$1\": *[0-9.e+-]*" "$d/manifest.json" | sed 's/.*: *//'; }
    printf '%s\t%.3g\t%.0f\t%s\n' "$m" "$(num seconds_per_image)" "$(num peak_rss_mib)" "$cmd" >> "$CT"
    echo "rivals: $m costs $(num seconds_per_image) s per image, $(num peak_rss_mib) MiB"
  done
fi
column -t -s $'\t' "$TSV" | cut -c1-60
