#!/usr/bin/env bash
# bench/vae.sh: dap's VAE against diffusers' AutoencoderKL (PyTorch) at sd-vae-ft-mse's size
# with seeded random weights: encode and decode of one image, seconds per image (wall and
# CPU), the ratios (> 1: dap faster) and the peak RSS of each measuring process; first a
# full-size check that both give the same latent and image.
#   bash bench/vae.sh [--size 256] [--iters 3] [--warmup 1] [--threads 2]   (after make)
# The weights (334 MB) are written once to $VAE_WEIGHTS (default /tmp/dap-bench-vae.safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/blas-env.sh
SIZE=256 ITERS=3 WARMUP=1 THREADS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE=$2 ;;
        --iters) ITERS=$2 ;;
        --warmup) WARMUP=$2 ;;
        --threads) THREADS=$2 ;;
        *) echo "bench/vae.sh: unknown flag $1" >&2; exit 2 ;;
    esac
    shift 2
done
W=${VAE_WEIGHTS:-/tmp/dap-bench-vae.safetensors}
PY=/usr/bin/python3
make --no-print-directory build/bench_vae >/dev/null
[ -f "$W" ] || "$PY" bench/vae_torch.py --save "$W" 2>/dev/null
CHECK=$(mktemp --suffix=.safetensors)
LINES=$(mktemp)
trap 'rm -f "$CHECK" "$LINES"' EXIT
echo "bench: full-size check at ${SIZE}px" >&2
OMP_NUM_THREADS=$THREADS ./build/bench_vae --weights "$W" --check "$CHECK" --size "$SIZE" 2>/dev/null
"$PY" bench/vae_torch.py --weights "$W" --check "$CHECK" --size "$SIZE" --threads "$THREADS" 2>/dev/null
for m in encode decode; do
    echo "  $m: dap" >&2
    OMP_NUM_THREADS=$THREADS ./build/bench_vae --weights "$W" --measure $m --size "$SIZE" --iters "$ITERS" \
        --warmup "$WARMUP" --threads "$THREADS" >>"$LINES"
    echo "  $m: torch" >&2
    OMP_NUM_THREADS=$THREADS "$PY" bench/vae_torch.py --weights "$W" --measure $m --size "$SIZE" --iters "$ITERS" \
        --warmup "$WARMUP" --threads "$THREADS" 2>/dev/null >>"$LINES"
done
"$PY" - "$LINES" <<'PYEOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
get = lambda i, m: next(r for r in runs if r["impl"] == i and r["measure"] == "vae-" + m)
r0 = runs[0]
print("VAE at %dpx, batch %d, %d threads (median of %d)" % (r0["size"], r0["batch"], r0["threads"], len(r0["times_s"])))
print("%-8s %10s %14s %8s %12s %14s %8s %8s %11s" % ("", "dap s/img", "PyTorch s/img", "ratio", "dap CPU s",
      "PyTorch CPU s", "ratio", "MB dap", "MB PyTorch"))
for m in ("encode", "decode"):
    d, t = get("dap", m), get("torch", m)
    print("%-8s %10.3f %14.3f %8.2f %12.3f %14.3f %8.2f %8.0f %11.0f" % (
        m, d["median_s"], t["median_s"], t["median_s"] / d["median_s"], d["cpu_s"], t["cpu_s"],
        t["cpu_s"] / d["cpu_s"], d["peak_rss_mb"], t["peak_rss_mb"]))
print("ratio: PyTorch / dap (> 1: dap faster), wall-clock median and CPU seconds per image")
print("PyTorch %s" % get("torch", "encode")["torch"])
PYEOF
