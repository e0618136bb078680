#!/usr/bin/env bash
# The README's main command (`make demo`): runs dap's main job on the embedded default,
# Fashion-MNIST. Outputs go to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
DAP=./build/dap
OUT=${DAP_DEMO_OUT:-out/demo}
mkdir -p "$OUT"
echo "== dap info: Fashion-MNIST (Debian package dataset-fashion-mnist)"
$DAP info --data fmnist --grid "$OUT/fmnist-grid.png"
echo "demo: wrote $OUT/fmnist-grid.png"
