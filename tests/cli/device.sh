# sourced by tests/cli.sh: --device / --precision on the DiT commands (sample, distill):
# refused before any work, with no output folder left behind.
M=tests/ref/dit_small.safetensors
expect_fail "sample --device cuda on a CPU build" "built without the CUDA backend|device cuda" $DAP sample --model $M --out "$tmp/dev-s" --device cuda
expect_fail "distill --device cuda on a CPU build" "built without the CUDA backend|device cuda" $DAP distill --model $M --out "$tmp/dev-d" --method dap --ipc 1 --device cuda
expect_fail "distill DAP_DEVICE=cuda on a CPU build" "built without the CUDA backend|device cuda" env DAP_DEVICE=cuda $DAP distill --model $M --out "$tmp/dev-d" --method vanilla --ipc 1
expect_fail "sample --precision tf32 on the cpu" "precision tf32: the cpu device computes in fp32 only" $DAP sample --model $M --out "$tmp/dev-s" --precision tf32
expect_fail "distill --precision bf16 on the cpu" "precision bf16: the cpu device" $DAP distill --model $M --out "$tmp/dev-d" --method dap --ipc 1 --precision bf16
expect_fail "sample bad --precision" "precision 'fp16': expected fp32, tf32 or bf16" $DAP sample --model $M --out "$tmp/dev-s" --device cpu --precision fp16
expect_fail "train --device cuda on a CPU build" "built without the CUDA backend|device cuda" $DAP train --config fm-p4-h256-d8 --steps 1 --out "$tmp/dev-t.safetensors" --device cuda
expect_fail "train --precision tf32 on the cpu" "precision tf32: the cpu device" $DAP train --config fm-p4-h256-d8 --steps 1 --out "$tmp/dev-t.safetensors" --precision tf32
expect_fail "vae encode --device cuda on a CPU build" "built without the CUDA backend|device cuda" $DAP vae encode --vae tests/ref/vae_tiny.safetensors --in tests/ref --out "$tmp/dev-l.safetensors" --device cuda
expect_fail "score --device cuda on a CPU build" "built without the CUDA backend|device cuda" $DAP score --set "$tmp/no-such-set" --device cuda --json "$tmp/dev-score.json"
[ ! -e "$tmp/dev-score.json" ] && ok "a refused score writes no JSON" || bad "a refused score wrote its JSON"
expect_fail "vae decode --device gpu" "device 'gpu'" $DAP vae decode --vae x --in x --out "$tmp/dev-v.png" --device gpu
expect_fail "train DAP_DEVICE=cuda on a CPU build" "built without the CUDA backend|device cuda" env DAP_DEVICE=cuda $DAP train --config fm-p4-h256-d8 --steps 1 --out "$tmp/dev-t.safetensors"
[ ! -e "$tmp/dev-s" ] && [ ! -e "$tmp/dev-d" ] && [ ! -e "$tmp/dev-t.safetensors" ] && ok "no output from a refused device" || bad "no output from a refused device"
# the device path of the commands on the CUDA emulator (make emu: build-emu/dap, the backend
# run on the CPU, DAP_EMU_MEM_MB of device memory): the CPU's images, and the refusals of a
# device too small for the weights or for the batch, before any work and with the sizes
EMU=./build-emu/dap
if [ -x "$EMU" ] && have_fmnist; then
  $DAP train --data fmnist --config fm-tiny --steps 1 --batch 4 --val-per-class 0 --out "$tmp/emu-m.safetensors" \
    >/dev/null 2>&1
  samp() { local dir=$1 cmd=$2; shift 2
    DAP_EMU_MEM_MB=256 $cmd sample --model "$tmp/emu-m.safetensors" --classes 0,3 --n 2 --steps 3 --out "$dir" "$@"; }
  expect_ok "emulated GPU: sample --device cuda" samp "$tmp/emu-g" $EMU --device cuda
  samp "$tmp/emu-c" $DAP >/dev/null 2>&1
  if [ -f "$tmp/emu-g/Dress/1.png" ] && diff -r -q -x manifest.json "$tmp/emu-g" "$tmp/emu-c" >/dev/null; then
    ok "emulated GPU: sample gives the CPU's images"
  else bad "emulated GPU: sample gives the CPU's images"; fi
  expect_fail "emulated GPU: weights larger than the device" "weights need 720 KiB.*1.0 MiB are free" \
    env DAP_EMU_MEM_MB=1 $EMU sample --model "$tmp/emu-m.safetensors" --classes 0 --n 2 --steps 2 --device cuda --out "$tmp/emu-w"
  expect_fail "emulated GPU: activations larger than the device" "activations need .* MiB.*lower --batch" \
    env DAP_EMU_MEM_MB=66 $EMU sample --model "$tmp/emu-m.safetensors" --classes 0,1,2,3 --n 256 --batch 256 --steps 2 \
    --device cuda --out "$tmp/emu-a"
  # an inference model under bf16 keeps BF16 weights and product inputs (the unit tests compare it with the CPU)
  expect_ok "emulated GPU: sample --precision bf16" samp "$tmp/emu-b" $EMU --device cuda --precision bf16
  [ -f "$tmp/emu-b/Dress/1.png" ] && ok "emulated GPU: bf16 images written" || bad "emulated GPU: bf16 images written"
  # training under bf16: FP32 master weights saved, BF16 copy and activations on the device
  expect_ok "emulated GPU: train --precision bf16" env DAP_EMU_MEM_MB=256 $EMU train --data fmnist --config fm-tiny \
    --steps 2 --batch 4 --val-per-class 0 --device cuda --precision bf16 --out "$tmp/emu-tb.safetensors"
  [ ! -e "$tmp/emu-w" ] && [ ! -e "$tmp/emu-a" ] && ok "emulated GPU: no output from a refused device" ||
    bad "emulated GPU: no output from a refused device"
else
  for t in "sample --device cuda" "sample gives the CPU's images" "weights larger than the device" \
           "activations larger than the device" "sample --precision bf16" "bf16 images written" \
           "train --precision bf16" \
           "no output from a refused device"; do
    skip "emulated GPU: $t" "no build-emu/dap (make emu) or no Fashion-MNIST"
  done
fi
# the GPU check script's plumbing, dry-run on the CPU (a broken script would cost a lent GPU's
# few minutes): its tests, the train / sample / distill commands on two devices (here cpu
# twice) and two benchmark jobs, then the summary
if command -v python3 >/dev/null 2>&1; then
  if env DEVICE=cpu CONFIG=fm-tiny TRAIN_CONFIG=fm-tiny BUILD=build JOBS="fwd32:fp32 train:fp32" ITERS=1 PY=python3 \
      OUT="$tmp/gdc" bash scripts/gpu-diffusion-check.sh >"$tmp/gdc.txt" 2>&1 &&
      has -q "commands passed" "$tmp/gdc.txt" && has -q "dap train, 3 steps, cpu vs cpu" "$tmp/gdc.txt" &&
      has -qE "^train +fp32" "$tmp/gdc/summary.txt" && has -qE "^fwd32 +fp32" "$tmp/gdc/summary.txt"; then
    ok "gpu-diffusion-check dry run on the cpu"
  else bad "gpu-diffusion-check dry run on the cpu"; tail -20 "$tmp/gdc.txt"; fi
else
  skip "gpu-diffusion-check dry run" "no python3 (the script's data and summary steps use it)"
fi
# the PyTorch peers' device paths (a tensor left on the CPU would fail only on a lent GPU):
# dit_torch.py on PyTorch's meta device, which refuses such a mix, for every measure in fp32
# and bf16; eval_ref.py's six DSA ops on meta tensors
if [ -x build/bench_dit ] && /usr/bin/python3 -c "import torch, PIL" 2>/dev/null; then
  MJ=$(build/bench_dit --config fm-tiny --layer 1 --print-config)
  peers_ok=1
  for m in fwd32 ddim guide guidemean cfg10 train; do
    for p in fp32 bf16; do
      /usr/bin/python3 bench/dit_torch.py --model "$MJ" --config fm-tiny --measure $m --device meta --precision $p \
        >"$tmp/meta.txt" 2>&1 && has -q '"dry_run": true' "$tmp/meta.txt" ||
        { peers_ok=0; echo "dit_torch.py --device meta --measure $m --precision $p:"; tail -3 "$tmp/meta.txt"; }
    done
  done
  [ $peers_ok = 1 ] && ok "dit_torch.py: every measure on the meta device (fp32, bf16)" ||
    bad "dit_torch.py: every measure on the meta device (fp32, bf16)"
  if (cd bench && /usr/bin/python3 -c "
import torch, eval_ref
for op in range(6):
    y = eval_ref.dsa_op(torch.zeros(4, 1, 28, 28, device='meta'), torch.Generator().manual_seed(op), op)
    assert y.device.type == 'meta' and tuple(y.shape) == (4, 1, 28, 28), op
") >"$tmp/meta.txt" 2>&1; then ok "eval_ref.py: the six DSA ops on the meta device"
  else bad "eval_ref.py: the six DSA ops on the meta device"; tail -3 "$tmp/meta.txt"; fi
else
  skip "the PyTorch peers on the meta device" "no build/bench_dit or no /usr/bin/python3 with torch and PIL"
fi
