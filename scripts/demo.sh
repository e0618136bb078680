#!/usr/bin/env bash
# The README's main command (`make demo`): with the shipped Fashion-MNIST DiT, distills
# Fashion-MNIST at IPC 10 with random, vanilla, dap and dap from k-means start images
# (dap-init), trains ConvNet-3 on each set (hard labels) and scores it on the real test
# set, prints the table and writes an HTML report (out/demo/report.html). Meant to take at
# most 15 minutes on 2 cores: one training run of 300 epochs per set (about 2-4 min each;
# with one run per set, the sets train side by side, one per core); DEMO_RUNS=3 gives the
# table's mean +- std of 3 runs (about twice as long).
#   scripts/demo.sh            the demo (IPC 10; DEMO_RUNS runs per set, default 1)
#   scripts/demo.sh --full     the full experiment of the result table (docs/results.md) instead
set -euo pipefail
cd "$(dirname "$0")/.."
DAP=${DAP:-./build/dap}
OUT=${DAP_DEMO_OUT:-out/demo}
MODEL=${DAP_MODEL:-models/fmnist-dit.safetensors}
FLAGS_FILE=models/dap-fmnist.flags   # the dap flags chosen by the validation ablation
METHODS="random vanilla dap dap-init"  # dap-init: dap + models/fmnist-init.flags (ablation stage 5)
if [ "${1:-}" = "--full" ]; then exec bash scripts/experiment.sh; fi
if [ ! -f "$MODEL" ]; then
  echo "demo: the shipped model $MODEL is missing (train one with: $DAP train --config fm-p4-h256-d8 --out $MODEL)" >&2
  exit 1
fi
RUNS=${DEMO_RUNS:-1}; EPOCHS=${DEMO_EPOCHS:-300}; IPC=${DEMO_IPC:-10}
JOBS=${DEMO_JOBS:-$(nproc)}   # runs trained at once, one thread each (small sets train faster so)
DAPFLAGS=$(grep -v '^#' "$FLAGS_FILE" 2>/dev/null | tr '\n' ' ' || true)
SAMPLERFLAGS=$(grep -v '^#' models/fmnist-sampler.flags 2>/dev/null | tr '\n' ' ' || true)
INITFLAGS=$(grep -v '^#' models/fmnist-init.flags 2>/dev/null | tr '\n' ' ' || true)
mkdir -p "$OUT"
t0=$(date +%s)
echo "== dap demo: Fashion-MNIST, IPC $IPC, model $MODEL"
for m in $METHODS; do
  case $m in
    random) method=random; extra="" ;;
    vanilla) method=vanilla; extra="$SAMPLERFLAGS" ;;
    dap) method=dap; extra="$SAMPLERFLAGS $DAPFLAGS" ;;
    dap-init) method=dap; extra="$SAMPLERFLAGS $DAPFLAGS $INITFLAGS" ;;
  esac
  echo "== distill: $m: --method $method $extra"
  # shellcheck disable=SC2086
  $DAP distill --data fmnist --model "$MODEL" --method $method --ipc "$IPC" --seed 0 --out "$OUT/$m-ipc$IPC" $extra
done
# one run per set: JOBS sets train at once, one thread each; more runs: one set at a time,
# its runs side by side (dap eval --jobs)
if [ "$RUNS" = 1 ]; then par=$JOBS; ej=1; else par=1; ej=$JOBS; fi
echo "== eval: ConvNet-3, hard label, $RUNS run(s) x $EPOCHS epochs per set, $par set(s) at a time"
pids=()
for m in $METHODS; do
  $DAP eval --data fmnist --train "$OUT/$m-ipc$IPC" --arch convnet3 --runs "$RUNS" --epochs "$EPOCHS" \
    --jobs "$ej" $([ "$par" -gt 1 ] && echo --threads 1) --json "$OUT/eval-$m.json" --quiet > "$OUT/eval-$m.txt" &
  pids+=($!)
  while [ "$(jobs -rp | wc -l)" -ge "$par" ]; do sleep 1; done
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
for m in $METHODS; do echo "$m: $(tail -1 "$OUT/eval-$m.txt")"; done
[ "$fail" = 0 ] || { echo "demo: an evaluation failed (see $OUT/eval-*.txt)" >&2; exit 1; }
# scoring: a failed set is reported (its message, and a non-zero exit after the report),
# never hidden; the report shows the scores that were made
score_failed=""
for m in $METHODS; do
  if ! $DAP score --data fmnist --set "$OUT/$m-ipc$IPC" --real-per-class 200 --json "$OUT/score-$m.json" \
      > "$OUT/score-$m.txt" 2> "$OUT/score-$m.err"; then
    echo "demo: scoring $m failed: $(tail -1 "$OUT/score-$m.err")" >&2
    rm -f "$OUT/score-$m.txt"
    score_failed="$score_failed $m"
  fi
done
METHODS="$METHODS" bash scripts/report.sh "$OUT" "$IPC" "$MODEL" "$RUNS" "$EPOCHS"
if [ -n "$score_failed" ]; then
  echo "demo: scoring failed for:$score_failed (see $OUT/score-*.err); the report lacks their scores" >&2
  exit 1
fi
echo "demo: done in $(( $(date +%s) - t0 )) s; report: $OUT/report.html"
