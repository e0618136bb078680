#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA backend's checks, its speed against the PyTorch
# peer on the same GPU, and evaluation cells on the GPU. Build first with `make CUDA=1`
# (build-cuda/); Fashion-MNIST must be installed (make deps).
#
#   SETS="out/experiment/random-ipc10 out/experiment/dap-ipc10" ARCHS="resnet18 resnetap10" scripts/gpu-check.sh
#
# The DiT (sampling and the DAP guidance on the GPU) has its own script: scripts/gpu-diffusion-check.sh.
# 1. parity: build-cuda/dap_tests device_select cuda_cnn cuda_fit cuda_augment (ConvNet-3 +bn/nn,
#    ResNetAP-10, ResNet-18 and its ImageNet stem: forward and backward on the GPU against
#    the CPU ops; whole training runs with the weights and optimiser resident on the GPU
#    against the CPU's, SGD and AdamW, and resumed); stops here when it fails.
# 2. peer (PEER_SET, default the first of SETS; PEER_ARCH, default convnet3, or resnetap10 /
#    resnet18): one run, 300 epochs, with
#    `dap eval --device cuda` (weights resident on the GPU), the same with
#    DAP_CUDA_RESIDENT=0 (weights up and gradients down every step, the optimiser on the
#    host) and `bench/eval_ref.py --device cuda` (PyTorch, FP32: TF32 off), one after the
#    other on the same GPU; prints the times and the ratios.
# 3. cells: every ARCH x SET as `dap eval --runs 3 --epochs 300 --device cuda --jobs 3`, PAR
#    cells at a time, each with its run journal (--resume); OUT/table.tsv gets one line a cell
#    with the command. DEADLINE (seconds, 0: none) skips cells that would start too late and
#    stops the running ones then (their finished runs stay in the journals).
# PACK=FILE: OUT is also packed into FILE (tar.gz) every 15 s and at the end, for a lent
#    machine that returns only a few files of its output folder (or is cut off mid-run):
#    whatever finished comes back in one file.
set -uo pipefail
cd "$(dirname "$0")/.."
DAP=${DAP:-build-cuda/dap}; TESTS=${TESTS:-build-cuda/dap_tests}
SETS=${SETS:?SETS: the image folders to evaluate}; ARCHS=${ARCHS:-resnet18 resnetap10}
OUT=${OUT:-out/gpu}; PAR=${PAR:-6}; DEADLINE=${DEADLINE:-0}; RUNS=${RUNS:-3}; EPOCHS=${EPOCHS:-300}
PEER_SET=${PEER_SET:-${SETS%% *}}; PEER_ARCH=${PEER_ARCH:-convnet3}
mkdir -p "$OUT"
T0=$(date +%s)
if [ -n "${PACK:-}" ]; then
  pack() { tar czf "$PACK.part" -C "$(dirname "$OUT")" "$(basename "$OUT")" 2>/dev/null && mv -f "$PACK.part" "$PACK"; }
  ( while sleep 15; do pack; done ) &
  packer=$!
  trap 'kill $packer 2>/dev/null; pack' EXIT
fi
echo "== parity"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} "$TESTS" device_select cuda_cnn cuda_fit cuda_augment 2>&1 | tee "$OUT/parity.txt"
grep -q "^4 passed, 0 failed, 0 skipped" "$OUT/parity.txt" || { echo "gpu-check: the parity test failed (see $OUT/parity.txt)"; exit 1; }
if [ "${SKIP_PEER:-0}" != 1 ]; then
  echo "== peer: one $PEER_ARCH run on $PEER_SET"
  OMP_NUM_THREADS=4 "$DAP" eval --data fmnist --train "$PEER_SET" --arch "$PEER_ARCH" --runs 1 --epochs "$EPOCHS" --device cuda --json "$OUT/peer-dap.json" --quiet
  DAP_CUDA_RESIDENT=0 OMP_NUM_THREADS=4 "$DAP" eval --data fmnist --train "$PEER_SET" --arch "$PEER_ARCH" --runs 1 --epochs "$EPOCHS" --device cuda --json "$OUT/peer-dap-copies.json" --quiet
  python3 bench/eval_ref.py --train "$PEER_SET" --arch "$PEER_ARCH" --runs 1 --epochs "$EPOCHS" --device cuda --threads 4 --quiet --json "$OUT/peer-torch.json"
  python3 - "$OUT" <<'PY'
import json, sys
d = json.load(open(sys.argv[1] + "/peer-dap.json"))["runs"][0]
c = json.load(open(sys.argv[1] + "/peer-dap-copies.json"))["runs"][0]
t = json.load(open(sys.argv[1] + "/peer-torch.json"))["runs"][0]
print("peer: dap %.2f s (%.2f%%), dap with per-step copies %.2f s (%.2f%%), PyTorch %.2f s (%.2f%%): "
      "dap / PyTorch speed %.2fx (with copies %.2fx), resident / copies %.2fx"
      % (d["seconds"], d["accuracy"], c["seconds"], c["accuracy"], t["seconds"], t["accuracy"],
         t["seconds"] / d["seconds"], t["seconds"] / c["seconds"], c["seconds"] / d["seconds"]))
PY
fi
echo "== cells"
[ -f "$OUT/table.tsv" ] || printf 'set\tarch\tmean\tstd\tcommand\n' > "$OUT/table.tsv"
export DAP OUT T0 DEADLINE RUNS EPOCHS
cell() {
  local arch=$1 set=$2 name; name=$(basename "$set")
  grep -q "^$name	$arch	" "$OUT/table.tsv" && return
  local limit=0
  if [ "$DEADLINE" -gt 0 ]; then
    limit=$(( DEADLINE - ($(date +%s) - T0) ))
    [ "$limit" -gt 45 ] || { echo "gpu-check: $arch $name skipped (deadline)"; return; }
  fi
  local cmd="$DAP eval --data fmnist --train $set --arch $arch --runs $RUNS --epochs $EPOCHS --aug none --jobs 3 --device cuda --json $OUT/$name-$arch.json --resume --quiet"
  OMP_NUM_THREADS=1 timeout -s INT "$limit" $cmd > "$OUT/$name-$arch.txt" 2> "$OUT/$name-$arch.err"
  local ms; ms=$(sed -n 's/.*accuracy \([0-9.]*\) +- \([0-9.]*\).*/\1\t\2/p' "$OUT/$name-$arch.txt" | tail -1)
  [ -n "$ms" ] || { echo "gpu-check: $arch $name unfinished: $(tail -1 "$OUT/$name-$arch.err")"; return; }
  printf '%s\t%s\t%s\t%s\n' "$name" "$arch" "$ms" "$cmd" >> "$OUT/table.tsv"
  echo "gpu-check: t=$(( $(date +%s) - T0 )) s  $arch $name: $ms"
}
export -f cell
for a in $ARCHS; do for s in $SETS; do echo "$a $s"; done; done | xargs -P "$PAR" -L 1 bash -c 'cell "$0" "$1"'
echo "gpu-check: done in $(( $(date +%s) - T0 )) s; cells in $OUT/table.tsv"
