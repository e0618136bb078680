#!/usr/bin/env bash
# Quality of a Fashion-MNIST diffusion prior (the DiT issue's acceptance numbers):
# class consistency (the evaluator's accuracy on N generated samples per class, at the
# CFG scale used for distillation) and the Frechet distance between generated and real
# test images in the evaluator's feature space, next to the same distance for a random
# real subset of the same size.
#   scripts/prior-quality.sh [MODEL] [N per class] [CFG] [STEPS] [CLIP_X0]
# CFG, STEPS and CLIP_X0 default to models/fmnist-sampler.flags (what distillation uses).
# Another dataset (docs/own-data.md): PQ_DATA=ROOT (ROOT/train/ and ROOT/test/) and
# PQ_CLF=FILE, the evaluator; without PQ_CLF one is trained on PQ_DATA first (dap teacher,
# ConvNet-3, PQ_CLF_EPOCHS epochs, default 30) and kept as $OUT/classifier.safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
DAP=${DAP:-./build/dap}
flag() { sed -n "s/^--$1 //p" models/fmnist-sampler.flags 2>/dev/null | tail -1; }
MODEL=${1:-models/fmnist-dit.safetensors}; N=${2:-100}
CFG=${3:-$(flag cfg)}; CFG=${CFG:-4}; STEPS=${4:-$(flag steps)}; STEPS=${STEPS:-50}
CLIP=${5:-$(flag clip-x0)}; CLIP=${CLIP:-0}
DATA=${PQ_DATA:-fmnist}
OUT=${PQ_OUT:-out/prior-quality}
mkdir -p "$OUT"
if [ -n "${PQ_CLF:-}" ]; then CLF=$PQ_CLF
elif [ "$DATA" = fmnist ]; then CLF=models/fmnist-convnet3.safetensors
else
  CLF=$OUT/classifier.safetensors
  [ -f "$CLF" ] || $DAP teacher --data "$DATA" --arch convnet3 --epochs "${PQ_CLF_EPOCHS:-30}" --batch 64 --seed 0 \
    --quiet --out "$CLF"
fi
$DAP sample --model "$MODEL" --n "$N" --steps "$STEPS" --cfg "$CFG" --clip-x0 "$CLIP" --seed 0 --out "$OUT/samples"
$DAP subset --from "$DATA" --ipc "$N" --seed 0 --out "$OUT/random"
echo "== generated ($N per class, cfg $CFG, $STEPS DDIM steps, clip-x0 $CLIP)"
$DAP score --data "$DATA" --set "$OUT/samples" --classifier "$CLF" --json "$OUT/samples.json" | tee "$OUT/samples.txt"
echo "== random real subset ($N per class)"
$DAP score --data "$DATA" --set "$OUT/random" --classifier "$CLF" --json "$OUT/random.json" | tee "$OUT/random.txt"
