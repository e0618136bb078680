#!/usr/bin/env bash
# The result table of docs/results.md (SPEC 5, Fashion-MNIST, hard label): IPC 1/10/50 for random,
# vanilla and dap (dap flags from models/dap-fmnist.flags, chosen by scripts/ablation.sh on
# the validation split) and the full training set, ConvNet-3; ResNetAP-10 and ResNet-18 at
# IPC 10 and 50 (cross-architecture); and IPC 100 sets subsampled to 50 and 10 with
# dap subset. Every cell: mean +- std of RUNS runs (training seeds); SEEDS="0 1 2" repeats
# the ConvNet-3 rows over distillation seeds (the set's own draw). Resumable: finished cells are skipped
# and a cell's finished runs are kept (dap eval --resume).
# Hours of CPU on 2 cores; results in out/experiment/table.tsv. AUG=dsa evaluates every
# cell under the DSA-augmented protocol instead (give it its own EXP_OUT). With a GPU:
# `make CUDA=1` and DAP=build-cuda/dap DAP_DEVICE=cuda (the evaluations train there; dap eval
# reads $DAP_DEVICE; distillation stays on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
DAP=${DAP:-./build/dap}
MODEL=${DAP_MODEL:-models/fmnist-dit.safetensors}
AUG=${AUG:-none}                      # none, or dsa (the DSA protocol: 1000 epochs by default)
RUNS=${RUNS:-3}; EPOCHS=${EPOCHS:-$([ "$AUG" = dsa ] && echo 1000 || echo 300)}
FULL_EPOCHS=${FULL_EPOCHS:-12}        # the protocol's 300 are about 10 h a run on this machine
# Parts (to run the table piece by piece; every cell is cached in the TSV):
IPCS=${IPCS-1 10 50}                 # ConvNet-3 rows
METHODS=${METHODS-random vanilla dap}  # also M+X (vanilla+init, dap+medoid, ...): the flags of models/fmnist-X.flags added
SEEDS=${SEEDS:-0}                     # distillation seeds of the ConvNet-3 rows (seed S > 0: sets *-sS)
XARCH=${XARCH-resnetap10 resnet18}   # cross-architecture columns at IPC 10 and 50 ("" skips)
SCALES=${SCALES:-1}                   # 0 skips the IPC 100 -> 50/10 subsampling rows
# (SCALE_METHODS, default "vanilla dap", and SCALE_IPCS, default "10 50", pick its cells)
FULL=${FULL:-1}                       # 0 skips the full-training-set row
OUT=${EXP_OUT:-out/experiment}
JOBS=${JOBS:-$(nproc)}                # runs trained at once on the small sets (dap eval --jobs)
DAPFLAGS=$(grep -v '^#' models/dap-fmnist.flags 2>/dev/null | tr '\n' ' ' || true)
SAMPLERFLAGS=$(grep -v '^#' models/fmnist-sampler.flags 2>/dev/null | tr '\n' ' ' || true)
mkdir -p "$OUT"
TSV="$OUT/table.tsv"
# the header goes in atomically (mv -n never replaces a table that another process began),
# so several experiment.sh processes (e.g. one method each) can share one EXP_OUT
[ -f "$TSV" ] || { printf 'set\tarch\tmean\tstd\tcommand\n' > "$TSV.$$"; mv -n "$TSV.$$" "$TSV"; rm -f "$TSV.$$"; }
. scripts/evalcell.sh
evalcell() { # evalcell SETNAME TRAINSPEC ARCH EPOCHS [JOBS]
  evalcell_run experiment "$1" "$3" --train "$2" --arch "$3" --runs "$RUNS" --epochs "$4" --aug "$AUG" --jobs "${5:-$JOBS}"
}
setname() { # setname METHOD IPC SEED: seed 0 keeps the plain name; M+X -> M-X
  local m=${1/+/-}
  if [ "$3" = 0 ]; then echo "$m-ipc$2"; else echo "$m-ipc$2-s$3"; fi
}
distill() { # distill METHOD IPC [SEED]
  local extra="" seed=${3:-0} m=${1%%+*} x=""
  [ "$m" = dap ] && extra="$SAMPLERFLAGS $DAPFLAGS"; [ "$m" = vanilla ] && extra="$SAMPLERFLAGS"
  if [ "$m" != "$1" ]; then # M+X: the start-image flags of models/fmnist-X.flags
    x=models/fmnist-${1#*+}.flags
    [ -f "$x" ] || { echo "experiment: method $1: no $x" >&2; exit 2; }
    extra="$extra $(grep -v '^#' "$x" | tr '\n' ' ')"
  fi
  # shellcheck disable=SC2086
  $DAP distill --data fmnist --model "$MODEL" --method "$m" --ipc "$2" --seed "$seed" \
    --out "$OUT/$(setname "$1" "$2" "$seed")" --quiet $extra
}
for ipc in $IPCS; do
  for m in $METHODS; do
    for seed in $SEEDS; do
      name=$(setname $m $ipc $seed)
      distill $m $ipc $seed
      evalcell "$name" "$OUT/$name" convnet3 "$EPOCHS"
      if [ "$ipc" != 1 ]; then
        for a in $XARCH; do evalcell "$name" "$OUT/$name" "$a" "$EPOCHS"; done
      fi
    done
  done
done
# generalisation across scales: IPC 100 subsampled to 50 and 10
[ "$SCALES" = 1 ] && for m in ${SCALE_METHODS:-vanilla dap}; do
  distill $m 100
  s100=$(setname $m 100 0)
  for ipc in ${SCALE_IPCS:-10 50}; do
    [ -d "$OUT/${s100}to$ipc" ] || $DAP subset --from "$OUT/$s100" --ipc $ipc --seed 0 --out "$OUT/${s100}to$ipc"
    evalcell "${s100}to$ipc" "$OUT/${s100}to$ipc" convnet3 "$EPOCHS"
  done
done
[ "$FULL" = 1 ] && evalcell full full convnet3 "$FULL_EPOCHS" 1   # big batches: all threads on one run
column -t -s $'\t' "$TSV" | cut -c1-120
