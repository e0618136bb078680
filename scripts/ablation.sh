#!/usr/bin/env bash
# The dap hyperparameter ablation on a VALIDATION split of the Fashion-MNIST training set
# (never the test set): every distillation holds out HOLDOUT images per class
# (--holdout/--split-seed) and every evaluation scores on exactly those (--val), so the
# guidance never sees them. Vanilla and dap share models/fmnist-sampler.flags.
#
# Coordinate search from SPEC 3's defaults: stage 1 sweeps the guidance scale gamma;
# stage 2 varies one factor at a time (layer, pooling, kernel, early stop, number of real
# samples, update form, noise) at the best gamma of stage 1; stage 3 tries the
# --repel extension; stage 4 varies one factor at a time around stage 3's winner; stage 5
# starts the trajectories from noised real images (--init real|kmeans, --strength) (below).
# Results: out/ablation/results.tsv (name, flags, mean, std); resumable (finished cells
# are skipped).
#   scripts/ablation.sh [IPC] [RUNS] [EPOCHS]          (default 10 2 300)
#   ABL_SET=quick scripts/ablation.sh 10 2 100         (fewer cells: gamma, layer, pool,
#                                                       kernel, stop, n-real)
#   ABL_SET=form ABL_OUT=out/ablation-form scripts/ablation.sh 10 2 100   (the update form)
#   ABL_SET=stage2x ABL_OUT=out/ablation-form scripts/ablation.sh 10 2 100 (stage 2's other factors)
#   ABL_SET=joint ABL_OUT=out/ablation-joint scripts/ablation.sh 10 3 100   (gamma x pooling x clamp x layer)
#   ABL_SET=rivals ABL_OUT=out/ablation-joint scripts/ablation.sh 10 3 100  (mgd3, d4m, dm, igd, minimax;
#   ABL_RIVALS_MORE=1: two more cells each)
#   ABL_SET=init ABL_OUT=out/ablation-ipc50 scripts/ablation.sh 50 2 100
#     (ABL_INITS="kmeans medoid real" picks the start images, ABL_STRENGTHS the strengths,
#      ABL_METHODS="vanilla dap" the methods)
#                                                      (only random and stage 5's k-means
#                                                       start at strengths ABL_STRENGTHS)
# ABL_JOBS=J trains a cell's runs J at a time, one thread each (dap eval --jobs).
# ABL_CELLS="NAME ..." runs only the cells so named (e.g. the joint search's
# "vanilla-clip1 mean-g3-clip0 mean-g0.3-clip0" at IPC 50).
set -euo pipefail
cd "$(dirname "$0")/.."
DAP=${DAP:-./build/dap}
MODEL=${DAP_MODEL:-models/fmnist-dit.safetensors}
IPC=${1:-10}; RUNS=${2:-2}; EPOCHS=${3:-300}; HOLDOUT=${HOLDOUT:-100}; SPLIT=${SPLIT_SEED:-0}
OUT=${ABL_OUT:-out/ablation}
SET=${ABL_SET:-full}
SAMPLERFLAGS=$(grep -v '^#' models/fmnist-sampler.flags 2>/dev/null | tr '\n' ' ' || true)
mkdir -p "$OUT"
TSV="$OUT/results.tsv"
[ -f "$TSV" ] || printf 'name\tflags\tval_acc_mean\tval_acc_std\n' > "$TSV"
echo "ablation: IPC $IPC, $RUNS runs x $EPOCHS epochs, validation $HOLDOUT/class (split seed $SPLIT), sampler: $SAMPLERFLAGS" >&2
cell() { # cell NAME FLAGS...
  local name=$1; shift
  grep -q "^$name	" "$TSV" && { echo "ablation: $name done, skipped" >&2; return; }
  [ -n "${ABL_CELLS:-}" ] && case " $ABL_CELLS " in *" $name "*) ;; *) return ;; esac
  local dir="$OUT/$name" extra=""
  case " $* " in *" --method random "*) ;; *) extra="$SAMPLERFLAGS" ;; esac
  local t0; t0=$(date +%s)
  # shellcheck disable=SC2086
  $DAP distill --data fmnist --model "$MODEL" --defaults none --ipc "$IPC" --seed 0 --holdout "$HOLDOUT" --split-seed "$SPLIT" \
    --out "$dir" --quiet $extra "$@"
  $DAP eval --data fmnist --train "$dir" --val "$HOLDOUT" --split-seed "$SPLIT" --arch convnet3 --runs "$RUNS" \
    --epochs "$EPOCHS" --jobs "${ABL_JOBS:-1}" --json "$OUT/$name.json" --quiet > "$OUT/$name.txt"
  local ms; ms=$(sed -n 's/.*accuracy \([0-9.]*\) +- \([0-9.]*\).*/\1\t\2/p' "$OUT/$name.txt" | tail -1)
  printf '%s\t%s\t%s\n' "$name" "$*" "$ms" >> "$TSV"
  echo "ablation: $name ($*): $ms  ($(( $(date +%s) - t0 )) s)" >&2
}
best_gamma() { # the gamma of the best gamma-* row (ties: the first)
  awk -F'\t' '$1 ~ /^gamma-/ && ($3 + 0) > best { best = $3 + 0; g = substr($1, 7) } END { print g }' "$TSV"
}
cell random --method random
# the paper's guidance alone, searched jointly (ABL_SET=joint): gamma with the pooling (its
# scale depends on it), the x0 clamp on and off (vanilla both ways too), most telling cells
# first; ABL_JOINT_MORE=1 adds the rest of the 2 x 3 x 2 grid and the feature block.
# No --repel: this is the dap row of the rivals' table (docs/methods.md).
if [ "$SET" = joint ]; then
  cell vanilla-clip1 --method vanilla --clip-x0 1
  cell vanilla-clip0 --method vanilla --clip-x0 0
  cell mean-g1-clip0 --method dap --pool mean --gamma 1 --clip-x0 0
  cell mean-g1-clip1 --method dap --pool mean --gamma 1 --clip-x0 1
  cell mean-g0.3-clip0 --method dap --pool mean --gamma 0.3 --clip-x0 0
  cell mean-g3-clip0 --method dap --pool mean --gamma 3 --clip-x0 0
  if [ "${ABL_JOINT_MORE:-0}" = 1 ]; then
    cell flat-g0.03-clip0 --method dap --pool flatten --gamma 0.03 --clip-x0 0
    for g in 0.3 3; do cell mean-g$g-clip1 --method dap --pool mean --gamma "$g" --clip-x0 1; done
    cell flat-g0.03-clip1 --method dap --pool flatten --gamma 0.03 --clip-x0 1
    for l in 1 4; do cell mean-g1-clip0-layer$l --method dap --pool mean --gamma 1 --clip-x0 0 --layer "$l"; done
  fi
  column -t -s $'\t' "$TSV"
  exit 0
fi
# the rivals (ABL_SET=rivals; docs/methods.md), each with the shared sampler flags: their
# code's setting and one or two moves from it, the same kind of budget dap's guidance had.
# ABL_RIVALS picks the methods; igd's surrogate is a ConvNet-3 teacher trained without the
# validation images (made here once); minimax needs its fine-tuned prior (ABL_MINIMAX_MODEL).
if [ "$SET" = rivals ]; then
  SUR=$OUT/surrogate-val$HOLDOUT.safetensors
  for r in ${ABL_RIVALS:-mgd3 d4m dm igd minimax}; do
    case $r in
      mgd3) for l in ${ABL_MGD3_LAMBDAS:-0.1 0.03}; do cell mgd3-l$l --method mgd3 --mode-lambda "$l" --stop 0.5; done ;;
      d4m)  cell d4m-s0.7-cfg8 --method d4m --strength 0.7 --cfg 8   # their code's setting
            for st in ${ABL_D4M_STRENGTHS:-0.5}; do [ "$st" = none ] || cell d4m-s$st --method d4m --strength "$st"; done ;;
      dm)   cell dm-i100-b64 --method dm --iterations 100 --batch-real 64 ;;
      igd)  [ -f "$SUR" ] || $DAP teacher --data fmnist --arch convnet3 --epochs 3 --batch 64 --seed "$SPLIT" \
              --val "$HOLDOUT" --out "$SUR" --quiet
            cell igd-dev12 --method igd --surrogate "$SUR" --igd-dev 12 ;;
      minimax) M2=${ABL_MINIMAX_MODEL:-models/fmnist-dit-minimax.safetensors}
            [ -f "$M2" ] && MODEL=$M2 cell minimax --method minimax ;;
    esac
    # ABL_RIVALS_MORE=1: two moves more per method, so that each rival's search is about the
    # size of the joint dap search (4 guided cells)
    [ "${ABL_RIVALS_MORE:-0}" = 1 ] && case $r in
      mgd3) for l in 0.3 0.03; do cell mgd3-l$l --method mgd3 --mode-lambda "$l" --stop 0.5; done ;;
      d4m)  for st in 0.5 0.9; do cell d4m-s$st-cfg8 --method d4m --strength "$st" --cfg 8; done ;;
      dm)   cell dm-i200-b64 --method dm --iterations 200 --batch-real 64
            cell dm-i100-b256 --method dm --iterations 100 --batch-real 256 ;;
      igd)  for dv in 0 40; do cell igd-dev$dv --method igd --surrogate "$SUR" --igd-dev "$dv"; done ;;
      minimax) M2=${ABL_MINIMAX_MODEL:-models/fmnist-dit-minimax.safetensors} # their sampler; no clamp
            # shellcheck disable=SC2046
            MODEL=$M2 cell minimax-theirs --method minimax $(grep -v '^#' models/minimax.flags | tr '\n' ' ')
            MODEL=$M2 cell minimax-clip0 --method minimax --clip-x0 0 ;;
    esac
  done
  column -t -s $'\t' "$TSV"
  exit 0
fi
if [ "$SET" = init ]; then # the start-image strength at another IPC (stage 5's cells)
  DAPF=$(grep -v '^#' models/dap-fmnist.flags | tr '\n' ' ')
  for init in ${ABL_INITS:-kmeans}; do # kmeans, medoid, real
    for st in ${ABL_STRENGTHS:-0.3 0.2 0.1}; do
      for me in ${ABL_METHODS:-vanilla}; do # vanilla, dap (the frozen dap flags, guiding every step: --stop 0)
        if [ "$me" = dap ]; then
          cell dap-init-$init-$st --method dap $DAPF --stop 0 --init "$init" --strength "$st"
        else
          cell init-$init-$st --method vanilla --init "$init" --strength "$st"
        fi
      done
    done
  done
  column -t -s $'\t' "$TSV"
  exit 0
fi
# the update form (SPEC 3, open; ABL_SET=form): Algorithm 1's x_prev -= gamma
# grad E (--form x) against eps += gamma sqrt(1 - a_t) grad E (--form eps), each with its own
# gamma sweep (the eps form moves x_prev by about a tenth as much per unit gamma), at stage
# 2's flags (the paper's guidance) and at the frozen flags (+ --repel). The x cells are run
# again in the same ABL_OUT so that both forms come from one build and machine.
if [ "$SET" = form ]; then
  S2="--kernel linear --pool mean --n-real 100 --stop 0.5"
  BASE=$(grep -v '^#' models/dap-fmnist.flags | grep -v -e '--gamma' | tr '\n' ' ')
  cell vanilla --method vanilla
  # shellcheck disable=SC2086
  { cell x-g0.03 --method dap --gamma 0.03 $S2
    for g in ${ABL_EPS_GAMMAS:-0.3 1 3 10}; do cell eps-g$g --method dap --gamma "$g" $S2 --form eps; done
    cell x-repel-g1 --method dap $BASE --gamma 1
    for g in ${ABL_EPS_REPEL_GAMMAS:-0.3 1 3 10 30}; do cell eps-repel-g$g --method dap $BASE --gamma "$g" --form eps; done; }
  column -t -s $'\t' "$TSV"
  exit 0
fi
# stage 2's remaining factors (ABL_SET=stage2x): the cells of the full set that
# the quick set left out, one factor at a time at stage 1's gamma (ABL_GAMMA, 0.03), with the
# gamma cell itself again for the same build and machine
if [ "$SET" = stage2x ]; then
  G=${ABL_GAMMA:-0.03}
  cell gamma-$G --method dap --gamma "$G"
  for l in 6 8; do cell "g$G-layer-$l" --method dap --gamma "$G" --layer $l; done
  for st in 0.25 0.75; do cell "g$G-stop-$st" --method dap --gamma "$G" --stop $st; done
  cell "g$G-nreal-50" --method dap --gamma "$G" --n-real 50
  cell "g$G-fixed-noise" --method dap --gamma "$G" --fixed-noise
  column -t -s $'\t' "$TSV"
  exit 0
fi
cell vanilla --method vanilla
# the sampler itself (models/fmnist-sampler.flags; later flags override it)
cell vanilla-clip0 --method vanilla --clip-x0 0
cell vanilla-cfg2 --method vanilla --cfg 2
[ "$SET" != full ] || cell vanilla-cfg6 --method vanilla --cfg 6
for g in 0.03 0.1 0.3 1; do cell gamma-$g --method dap --gamma $g; done
[ "$SET" = full ] && for g in 3 10; do cell gamma-$g --method dap --gamma $g; done
G=$(best_gamma)
echo "ablation: best gamma on the validation split: $G" >&2
for l in 1 4; do cell "g$G-layer-$l" --method dap --gamma "$G" --layer $l; done
cell "g$G-pool-mean" --method dap --gamma "$G" --pool mean
cell "g$G-kernel-rbf" --method dap --gamma "$G" --kernel rbf --sigma 64
cell "g$G-stop-0" --method dap --gamma "$G" --stop 0
cell "g$G-nreal-25" --method dap --gamma "$G" --n-real 25
if [ "$SET" = full ]; then
  for l in 6 8; do cell "g$G-layer-$l" --method dap --gamma "$G" --layer $l; done
  for s in 0.25 0.75; do cell "g$G-stop-$s" --method dap --gamma "$G" --stop $s; done
  cell "g$G-nreal-50" --method dap --gamma "$G" --n-real 50
  cell "g$G-form-eps" --method dap --gamma "$G" --form eps
  cell "g$G-fixed-noise" --method dap --gamma "$G" --fixed-noise
fi
# stage 3, an extension beyond the paper (ABL_SET=quick|full|repel): --repel lambda adds
# a repulsion among a class's synthetic samples, so the guidance matches the real feature
# distribution (energy distance) instead of pulling every sample towards its center. The
# other flags are stage 2's winner (models/dap-fmnist.flags); gamma is swept again
# because the repulsion changes the balance.
BASE=$(grep -v '^#' models/dap-fmnist.flags | grep -v -e '--gamma' -e '--repel' | tr '\n' ' ')
for gr in 0.1:1 0.3:1 1:1 0.3:2 1:2 3:1 0.3:4 1:4; do
  g=${gr%:*}; l=${gr#*:}
  # shellcheck disable=SC2086
  cell "repel-$l-g$g" --method dap $BASE --gamma "$g" --repel "$l"
done
# stage 4: one factor at a time around stage 3's winner (the flags now in
# models/dap-fmnist.flags): where the guidance acts (early stop, layer) and the sampler
# settings that shape diversity (CFG scale, DDIM steps, eta), which stage 1 fixed before
# the repulsion existed. A sampler change is paired with the same vanilla cell.
if [ "$SET" != repel ]; then
  DAPF=$(grep -v '^#' models/dap-fmnist.flags | tr '\n' ' ')
  W=$(grep -v '^#' models/dap-fmnist.flags | sed -n 's/^--gamma //p; s/^--repel //p' | tr '\n' ' ' | awk '{ print "r" $2 "g" $1 }')
  # shellcheck disable=SC2086
  { for s in 0 0.75; do cell "$W-stop-$s" --method dap $DAPF --stop $s; done
    cell "$W-layer-4" --method dap $DAPF --layer 4
    for c in 2 6; do cell "$W-cfg-$c" --method dap $DAPF --cfg $c; done
    cell vanilla-cfg6 --method vanilla --cfg 6
    cell "$W-steps-50" --method dap $DAPF --steps 50; cell vanilla-steps-50 --method vanilla --steps 50
    cell "$W-eta-1" --method dap $DAPF --eta 1; cell vanilla-eta-1 --method vanilla --eta 1; }
fi
# stage 5: where trajectories start. From pure noise the prior's samples are
# less varied than real images; --init kmeans starts each of a class's IPC samples from a
# k-means centre of its real images (D4M-style prototypes), --init real from one random real
# image (the random cell's draw), noised to the first of the last round(strength S) steps.
# The strength trades the start image's layout against the prior's regeneration. dap cells
# guide every step run (--stop 0: with --stop 0.5, strength <= 0.5 would leave at most one
# guided step).
if [ "$SET" != repel ]; then
  DAPF=$(grep -v '^#' models/dap-fmnist.flags | tr '\n' ' ')
  # shellcheck disable=SC2086
  { cell init-kmeans-0.5 --method vanilla --init kmeans --strength 0.5
    cell init-real-0.5 --method vanilla --init real --strength 0.5
    for st in 0.7 0.3; do cell init-kmeans-$st --method vanilla --init kmeans --strength $st; done
    cell dap-init-kmeans-0.5 --method dap $DAPF --stop 0 --init kmeans --strength 0.5
    for st in 0.3 0.7; do cell init-real-$st --method vanilla --init real --strength $st; done
    cell init-kmeans-0.9 --method vanilla --init kmeans --strength 0.9
    # the lower strengths won: how low (0.04 = one step of 25, about the centres themselves)
    for st in 0.2 0.1 0.04; do cell init-kmeans-$st --method vanilla --init kmeans --strength $st; done
    cell dap-init-kmeans-0.3 --method dap $DAPF --stop 0 --init kmeans --strength 0.3; }
fi
column -t -s $'\t' "$TSV"
