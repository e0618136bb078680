# sourced by tests/cli.sh: --device / --precision on the DiT commands (sample, distill):
# refused before any work, with no output folder left behind.
M=tests/ref/dit_small.safetensors
expect_fail "sample --device cuda on a CPU build" "built without the CUDA backend|device cuda" $DAP sample --model $M --out "$tmp/dev-s" --device cuda
expect_fail "distill --device cuda on a CPU build" "built without the CUDA backend|device cuda" $DAP distill --model $M --out "$tmp/dev-d" --method dap --ipc 1 --device cuda
expect_fail "distill DAP_DEVICE=cuda on a CPU build" "built without the CUDA backend|device cuda" env DAP_DEVICE=cuda $DAP distill --model $M --out "$tmp/dev-d" --method vanilla --ipc 1
expect_fail "sample --precision tf32 on the cpu" "precision tf32: the cpu device computes in fp32 only" $DAP sample --model $M --out "$tmp/dev-s" --precision tf32
expect_fail "distill --precision bf16 on the cpu" "precision bf16: the cpu device" $DAP distill --model $M --out "$tmp/dev-d" --method dap --ipc 1 --precision bf16
expect_fail "sample bad --precision" "precision 'fp16': expected fp32, tf32 or bf16" $DAP sample --model $M --out "$tmp/dev-s" --device cpu --precision fp16
[ ! -e "$tmp/dev-s" ] && [ ! -e "$tmp/dev-d" ] && ok "no output from a refused device" || bad "no output from a refused device"
