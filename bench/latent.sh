#!/usr/bin/env bash
# bench/latent.sh: the latent prior's DiT workloads at full size (DiT-XL/2, 256 px = 32x32x4
# latents, random weights) in dap against PyTorch on this machine, as ratios with peak
# memory, and from them the estimated time of ImageNette IPC 10 and 50 (dap distill --vae
# with the paper's settings) on this CPU.
#
#   bash bench/latent.sh            (make all and make build/bench_dit first; ~15 min on 2 cores)
#   ITERS=1 WARMUP=0 THREADS=2 PY=/usr/bin/python3 bash bench/latent.sh
#
# Measurements (build/bench_dit and bench/dit_torch.py, one process each):
#   cfg10  one DDIM + CFG step at batch 10: a forward over 20 latents   (the unguided step)
#   guide  one DAP guidance evaluation: N = 100 real latents to block 8 (no grad), 10
#          synthetic to block 8, flattened features, linear kernel, backward to the inputs
# Not measured here: the VAE (encode of every training image once, decode of each result).
set -uo pipefail
cd "$(dirname "$0")/.."
ITERS=${ITERS:-1}; WARMUP=${WARMUP:-1}; THREADS=${THREADS:-2}; LAYER=${LAYER:-8}; PY=${PY:-}
BIN=${BUILD:-build}/bench_dit
[ -x "$BIN" ] || { echo "bench/latent.sh: $BIN missing: run make build/bench_dit" >&2; exit 2; }
if [ -z "$PY" ]; then
  for c in /opt/dapvenv/bin/python /usr/bin/python3 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import torch" >/dev/null 2>&1; then PY=$c; break; fi
  done
fi
MODEL=$("$BIN" --config DiT-XL/2 --layer "$LAYER" --print-config)
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
field() { sed -n "s/.*\"$2\": \([0-9.e+-]*\).*/\1/p" "$1"; }
echo "dap $(build/dap --version | head -1 | cut -d' ' -f2), $(nproc) cores, $THREADS threads, DiT-XL/2 256 px, layer $LAYER, $ITERS iteration(s) after $WARMUP warm-up"
printf "%-8s %12s %12s %8s %14s %14s\n" measure "dap s" "torch s" ratio "dap peak MB" "torch peak MB"
for m in cfg10 guide; do
  "$BIN" --config DiT-XL/2 --measure $m --layer "$LAYER" --iters "$ITERS" --warmup "$WARMUP" --threads "$THREADS" > "$out/dap_$m.json"
  if [ -n "$PY" ]; then
    "$PY" bench/dit_torch.py --model "$MODEL" --config DiT-XL/2 --measure $m --iters "$ITERS" --warmup "$WARMUP" \
      --threads "$THREADS" > "$out/torch_$m.json"
  else echo '{"median_s": 0, "peak_rss_mb": 0}' > "$out/torch_$m.json"; fi
  d=$(field "$out/dap_$m.json" median_s); t=$(field "$out/torch_$m.json" median_s)
  printf "%-8s %12.2f %12.2f %8s %14s %14s\n" $m "$d" "$t" "$(awk -v d="$d" -v t="$t" 'BEGIN{if(t>0) printf "%.2f", t/d; else print "-"}')" \
    "$(field "$out/dap_$m.json" peak_rss_mb)" "$(field "$out/torch_$m.json" peak_rss_mb)"
  eval "dap_$m=$d"
done
[ -z "$PY" ] && echo "(no Python with torch: the PyTorch column is empty)"
echo "ratio = torch time / dap time (above 1: dap is faster)"
# ImageNette: 10 classes, 50 DDIM steps, the first 25 guided (stop 0.5). A step of n samples
# costs about n/10 cfg10; a guided step adds a guidance evaluation whose real part (100
# forwards to block 8) is fixed and whose synthetic part (forward + backward to block 8,
# about 3 forwards each) grows with n: guide(n) ~ guide10 (100 + 3 n) / 130.
for ipc in 10 50; do
  awk -v c="$dap_cfg10" -v g="$dap_guide" -v n=$ipc 'BEGIN{
    s = 10 * (50 * c * n / 10 + 25 * g * (100 + 3 * n) / 130);
    printf "ImageNette IPC %d, dap method, this CPU: about %.1f h of DiT work (+ the VAE: encoding every training image once, decoding %d images)\n", n, s / 3600, 10 * n }'
done
