# dap train --minimax and dap distill --method minimax (sourced by tests/cli.sh; self-contained:
# a tiny prior trained here): the fine-tune logs its two terms, gives the same bytes on 1
# and 2 threads and after a kill and --resume, records itself in the checkpoint; distill
# --method minimax samples it as vanilla does and refuses a plain prior; bad flags are
# refused before any work.
if ! have_fmnist; then
  skip "minimax.sh: the Minimax fine-tune and its distill method" "dataset-fashion-mnist is not installed"
else
mp="$tmp/mm-prior.safetensors"
expect_ok "minimax: a tiny prior to fine-tune" $DAP train --data fmnist --config fm-tiny --out "$mp" --steps 2 --batch 8 \
  --val-per-class 0 --threads 1 --seed 2
mt=(--minimax --init "$mp" --data fmnist --val-per-class 1 --val-every 30 --log-every 10 --seed 5 --memory-size 6)
expect_ok "minimax: fine-tune 30 steps, 1 thread" $DAP train "${mt[@]}" --steps 30 --ckpt-every 10 --threads 1 --out "$tmp/mm1.safetensors"
grep -qE "^step 30/30  loss [0-9.]+  pos 0\.[0-9]*[1-9][0-9]*  neg 0\.[0-9]*[1-9][0-9]*  \|g\|" "$tmp/out" \
  && ok "minimax: the log prints both terms next to the loss" || bad "minimax: log line ($(grep 'step 30/' "$tmp/out"))"
grep -q "minimax fine-tune: lambda-pos 0.002, lambda-neg 0.008, memory 6 a class, difffit: .* lr 0.001, clip 0" "$tmp/err" \
  && grep -q "batch 8," "$tmp/err" && ok "minimax: their defaults (lr 1e-3, batch 8, no clipping, DiffFit)" \
  || bad "minimax: defaults ($(grep -E 'minimax|batch' "$tmp/err"))"
$DAP inspect "$tmp/mm1.safetensors" > "$tmp/mmi" 2>&1
grep -q "minimax lambda_pos=0.002 lambda_neg=0.008 memory_size=6 trainable=difffit" "$tmp/mmi" \
  && ok "minimax: the checkpoint records the fine-tune" || bad "minimax: checkpoint metadata ($(grep -i finetune "$tmp/mmi"))"
expect_ok "minimax: the same run on 2 threads" $DAP train "${mt[@]}" --steps 30 --ckpt-every 10 --threads 2 --out "$tmp/mm2.safetensors"
cmp -s "$tmp/mm1.safetensors" "$tmp/mm2.safetensors" && cmp -s "$tmp/mm1.safetensors.state" "$tmp/mm2.safetensors.state" \
  && ok "minimax: 1 and 2 threads give the same bytes" || bad "minimax: 1 and 2 threads differ"
# killed after its first checkpoint, then resumed: the bytes of the uninterrupted run
$DAP train "${mt[@]}" --steps 30 --ckpt-every 10 --threads 1 --out "$tmp/mmk.safetensors" >/dev/null 2>&1 & pid=$!
for _ in $(seq 1 1500); do [ -e "$tmp/mmk.safetensors" ] && break; sleep 0.01; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
if [ -e "$tmp/mmk.safetensors" ] && ! cmp -s "$tmp/mmk.safetensors.state" "$tmp/mm1.safetensors.state"; then
  ok "minimax: killed mid-run (a checkpoint before the last)"
  expect_ok "minimax: --resume after the kill" $DAP train "${mt[@]}" --steps 30 --ckpt-every 10 --threads 1 --resume --out "$tmp/mmk.safetensors"
  grep -q "resumed" "$tmp/err" && cmp -s "$tmp/mm1.safetensors" "$tmp/mmk.safetensors" \
    && cmp -s "$tmp/mm1.safetensors.state" "$tmp/mmk.safetensors.state" \
    && ok "minimax: killed and resumed equals uninterrupted" || bad "minimax: killed and resumed differs"
else
  bad "minimax: the kill did not land mid-run"
fi
# a state without its checkpoint (a kill while the first one was written): a new run, same bytes
cp "$tmp/mm1.safetensors.state" "$tmp/mmo.safetensors.state"
expect_ok "minimax: --resume of a state without its checkpoint" $DAP train "${mt[@]}" --steps 30 --ckpt-every 10 --threads 1 --resume --out "$tmp/mmo.safetensors"
grep -q "starting a new run" "$tmp/err" && cmp -s "$tmp/mm1.safetensors" "$tmp/mmo.safetensors" \
  && ok "minimax: ... starts anew and makes the same bytes" || bad "minimax: state without checkpoint ($(grep -i run "$tmp/err"))"
expect_fail "minimax: resume with another --lambda-pos" "Minimax settings" \
  $DAP train "${mt[@]}" --steps 31 --threads 1 --resume --lambda-pos 0.01 --out "$tmp/mm1.safetensors"
expect_fail "minimax: resume with --trainable all" "trainable difffit, this one all" \
  $DAP train "${mt[@]}" --steps 31 --threads 1 --resume --trainable all --out "$tmp/mm1.safetensors"
# distill --method minimax: vanilla sampling of the fine-tune; a plain prior is refused
dm=(--data fmnist --ipc 2 --classes 0,1 --steps 4 --seed 1 --threads 1 --quiet)
expect_ok "minimax: distill --method minimax" $DAP distill "${dm[@]}" --method minimax --model "$tmp/mm1.safetensors" --out "$tmp/mmd"
grep -q '"method": *"minimax"' "$tmp/mmd/manifest.json" && grep -q '"finetune": *"minimax lambda_pos=0.002' "$tmp/mmd/manifest.json" \
  && ok "minimax: the manifest records the method and the fine-tune" || bad "minimax: manifest ($(grep -E 'method|finetune' "$tmp/mmd/manifest.json"))"
expect_ok "minimax: distill --method vanilla of the same model" $DAP distill "${dm[@]}" --method vanilla --model "$tmp/mm1.safetensors" --out "$tmp/mmv"
diff -r -q -x manifest.json -x '.*' "$tmp/mmd" "$tmp/mmv" >/dev/null && ok "minimax: its images are vanilla's on the fine-tune" \
  || bad "minimax: the images differ from vanilla's"
expect_fail "minimax: distill refuses a plain prior" "not one.*no \"finetune\" record.*dap train --minimax" \
  $DAP distill "${dm[@]}" --method minimax --model "$mp" --out "$tmp/mmx1"
# bad flags: an error naming the flag, nothing written
expect_fail "minimax: --minimax without --init" "init FILE is required" $DAP train --minimax --data fmnist --steps 1 --out "$tmp/mmx2.safetensors"
expect_fail "minimax: --init that does not exist" "missing-prior" $DAP train --minimax --init "$tmp/missing-prior.safetensors" --steps 1 --out "$tmp/mmx3.safetensors"
expect_fail "minimax: --lambda-pos out of range" "lambda-pos.*0.*1000" $DAP train "${mt[@]}" --lambda-pos -1 --steps 1 --out "$tmp/mmx4.safetensors"
expect_fail "minimax: --lambda-neg not a number" "lambda-neg" $DAP train "${mt[@]}" --lambda-neg nan --steps 1 --out "$tmp/mmx5.safetensors"
expect_fail "minimax: --memory-size 0" "memory-size.*1" $DAP train "${mt[@]}" --memory-size 0 --steps 1 --out "$tmp/mmx6.safetensors"
expect_fail "minimax: --trainable junk" "expected all or difffit" $DAP train "${mt[@]}" --trainable some --steps 1 --out "$tmp/mmx7.safetensors"
expect_fail "minimax: --lambda-pos without --minimax" "with --minimax only" $DAP train --data fmnist --config fm-tiny --lambda-pos 0.1 --steps 1 --out "$tmp/mmx8.safetensors"
left=0; for i in $(seq 1 8); do ls "$tmp"/mmx$i* >/dev/null 2>&1 && left=$((left+1)); done
[ "$left" = 0 ] && ok "minimax: bad flags leave nothing behind" || bad "minimax: bad flags left $left outputs"
fi
