#!/usr/bin/env bash
# bench/distill.sh: the speed of `dap distill` itself (the distillation issue's benchmark).
#   1. dap distill at IPC 10 with vanilla and with dap (the flags of models/dap-fmnist.flags)
#      on CLASSES: seconds per image, the guidance overhead (dap / vanilla), peak RSS.
#   2. the same guided step in dap and in PyTorch on the same model size (bench_dit and
#      dit_torch.py --measure guide, and the unguided cfg10 step), as a ratio.
#
#   bash bench/distill.sh [--model FILE] [--config fm-p4-h256-d8] [--classes 0,1] [--ipc 10] [--steps 50] [--threads 2]
# Writes bench/results/distill.json. Run it on a quiet machine (timings under contention
# mean little; the foreign CPU share is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/blas-env.sh
MODEL=models/fmnist-dit.safetensors CONFIG=fm-p4-h256-d8 CLASSES=0,1 IPC=10 STEPS=50 THREADS=2 OUT=bench/results/distill.json
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL=$2 ;;
        --config) CONFIG=$2 ;;   # the model's config, for the guided-step comparison
        --classes) CLASSES=$2 ;;
        --ipc) IPC=$2 ;;
        --steps) STEPS=$2 ;;
        --threads) THREADS=$2 ;;
        --out) OUT=$2 ;;
        *) echo "bench/distill.sh: unknown flag $1" >&2; exit 2 ;;
    esac
    shift 2
done
DAP=${BUILD:-build}/dap
BIN=${BUILD:-build}/bench_dit
PY=/usr/bin/python3
[ -x "$DAP" ] && [ -x "$BIN" ] || make --no-print-directory -j2 "$DAP" "$BIN" >/dev/null
DAPFLAGS=$(grep -v '^#' models/dap-fmnist.flags | tr '\n' ' ')
SAMPLERFLAGS=$(grep -v '^#' models/fmnist-sampler.flags | grep -v -- '--steps' | tr '\n' ' ')
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$(dirname "$OUT")"
NCLS=$(echo "$CLASSES" | tr ',' '\n' | grep -c .)
NIMG=$((NCLS * IPC))
echo "bench/distill: $MODEL ($CONFIG), classes $CLASSES, IPC $IPC ($NIMG images), $STEPS DDIM steps, $THREADS threads" >&2

busy_before() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
declare -A SEC RSS FOREIGN
for m in vanilla dap; do
    extra="$SAMPLERFLAGS"; [ "$m" = dap ] && extra="$SAMPLERFLAGS $DAPFLAGS"
    read -r b0 t0 < <(busy_before)
    # shellcheck disable=SC2086
    env OMP_WAIT_POLICY=passive /usr/bin/time -f '%e %M %U %S' -o "$TMP/time-$m" \
        "$DAP" distill --data fmnist --model "$MODEL" --method $m --ipc "$IPC" --classes "$CLASSES" \
        --steps "$STEPS" --seed 0 --threads "$THREADS" --out "$TMP/$m" --quiet $extra
    read -r b1 t1 < <(busy_before)
    read -r e rss u s < "$TMP/time-$m"
    SEC[$m]=$e RSS[$m]=$rss
    # other processes' share of all cores during the run (jiffies are 1/100 s)
    FOREIGN[$m]=$(awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" -v own="$(echo "$u + $s" | bc)" \
        'BEGIN { f = (b / 100 - own) / (t / 100); if (f < 0) f = 0; printf "%.3f", f }')
    echo "  $m: ${e} s for $NIMG images, peak RSS $((rss / 1024)) MB, foreign CPU ${FOREIGN[$m]}" >&2
done

MODELJSON=$("$BIN" --config "$CONFIG" --print-config)
for m in guide cfg10; do
    env OMP_WAIT_POLICY=passive OMP_NUM_THREADS="$THREADS" "$BIN" --config "$CONFIG" --measure $m \
        --warmup 1 --iters 7 --threads "$THREADS" >> "$TMP/lines"
    env OMP_WAIT_POLICY=passive OMP_NUM_THREADS="$THREADS" "$PY" bench/dit_torch.py --model "$MODELJSON" \
        --config "$CONFIG" --measure $m --warmup 1 --iters 7 --threads "$THREADS" >> "$TMP/lines"
done

"$PY" - "$TMP/lines" "$OUT" "$NIMG" "${SEC[vanilla]}" "${SEC[dap]}" "${RSS[vanilla]}" "${RSS[dap]}" \
    "${FOREIGN[vanilla]}" "${FOREIGN[dap]}" "$CONFIG" "$STEPS" "$DAPFLAGS" <<'EOF'
import json, sys, time
lines, out, n, sv, sd, rv, rd, fv, fd, config, steps, flags = sys.argv[1:]
n, sv, sd, rv, rd = int(n), float(sv), float(sd), int(rv), int(rd)
runs = [json.loads(l) for l in open(lines) if l.strip()]
get = lambda i, m: next(r for r in runs if r["impl"] == i and r["measure"] == m)
print("dap distill, %s, %s DDIM steps, %d images (IPC x classes), passive wait" % (config, steps, n))
print("  %-8s %10s %12s %10s" % ("method", "s/image", "peak RSS MB", "foreign"))
print("  %-8s %10.3f %12.0f %10s" % ("vanilla", sv / n, rv / 1024, fv))
print("  %-8s %10.3f %12.0f %10s" % ("dap", sd / n, rd / 1024, fd))
print("  guidance overhead (dap / vanilla, seconds per image): %.2fx" % (sd / sv))
g, gt = get("dap", "guide"), get("torch", "guide")
c, ct = get("dap", "cfg10"), get("torch", "cfg10")
print("guided step (100 real + 10 synthetic to block l, partial backward), same model size:")
print("  dap %.2f steps/s, PyTorch %.2f steps/s: ratio %.2fx; peak RSS %.0f vs %.0f MB"
      % (g["throughput"], gt["throughput"], g["throughput"] / gt["throughput"], g["peak_rss_mb"], gt["peak_rss_mb"]))
print("  guide / unguided CFG step at batch 10: dap %.2fx, PyTorch %.2fx"
      % (g["median_s"] / c["median_s"], gt["median_s"] / ct["median_s"]))
res = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "config": config, "steps": int(steps), "images": n,
       "dap_flags": flags.strip(), "vanilla_s_per_image": sv / n, "dap_s_per_image": sd / n,
       "guidance_overhead": sd / sv, "vanilla_peak_rss_mb": rv / 1024, "dap_peak_rss_mb": rd / 1024,
       "foreign_cpu": {"vanilla": float(fv), "dap": float(fd)},
       "guided_step_ratio": g["throughput"] / gt["throughput"], "runs": runs}
with open(out + ".tmp", "w") as f:
    json.dump(res, f, indent=1)
import os; os.replace(out + ".tmp", out)
print("wrote", out)
EOF
