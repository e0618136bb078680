# dap train / dap sample on the tiny config (sourced by tests/cli.sh; a few seconds).
# Needs Fashion-MNIST, as distill.sh (which uses the model trained here) does.
if ! have_fmnist; then
  skip "diffusion.sh and distill.sh: train, sample, distill, score on Fashion-MNIST" "dataset-fashion-mnist is not installed"
else
ck="$tmp/tiny.safetensors"
tr=(--data fmnist --config fm-tiny --out "$ck" --batch 8 --val-per-class 2 --val-every 3 --log-every 2 --threads 1 --seed 3)
# a straight run of 6 steps, and a run stopped at 3 then resumed to 6: same bytes
expect_ok "train fm-tiny 6 steps" $DAP train "${tr[@]}" --steps 6 --ckpt-every 3
grep -q "val loss" "$tmp/out" && ok "train prints a validation loss" || bad "train prints a validation loss"
grep -qE "step 6/6 .*img/s.*ETA" "$tmp/out" && ok "train progress line" || bad "train progress line ($(tail -c 300 "$tmp/out"))"
cp "$ck" "$tmp/straight.safetensors"; cp "$ck.state" "$tmp/straight.state"
rm -f "$ck" "$ck.state"
expect_ok "train fm-tiny 3 steps" $DAP train "${tr[@]}" --steps 3 --ckpt-every 3
expect_ok "train --resume to 6" $DAP train "${tr[@]}" --steps 6 --ckpt-every 3 --resume
grep -q "resumed" "$tmp/err" && ok "train --resume continues" || bad "train --resume continues"
cmp -s "$ck" "$tmp/straight.safetensors" && cmp -s "$ck.state" "$tmp/straight.state" \
  && ok "resumed run is bit-exact" || bad "resumed run is bit-exact"
expect_fail "resume with another seed" "seed" $DAP train "${tr[@]}" --steps 7 --resume --seed 4
# annealing a run: resume it into a linear learning-rate decay (lr of step 7 of 6 -> 8: 1e-4 / 2)
cp "$ck" "$tmp/anneal.st"; cp "$ck.state" "$tmp/anneal.st.state"
an=(--data fmnist --config fm-tiny --out "$tmp/anneal.st" --batch 8 --val-per-class 2 --log-every 2 --threads 1 --seed 3)
expect_ok "train --resume into --lr-decay linear" $DAP train "${an[@]}" --steps 8 --resume --lr-decay linear --decay-start 6
grep -q "linear decay to 0 at step 8" "$tmp/err" && grep -qE "step 8/8 .* lr 5e-05 " "$tmp/out" \
  && ok "train reports the decayed lr" || bad "train reports the decayed lr ($(tail -c 300 "$tmp/out"))"
expect_fail "train bad --lr-decay" "expected none, linear or cosine" $DAP train "${an[@]}" --steps 9 --lr-decay step
expect_fail "train --decay-start past --steps" "decay-start" $DAP train "${an[@]}" --steps 9 --lr-decay cosine --decay-start 9
expect_fail "train unknown config" "unknown DiT config" $DAP train --config nope --out "$tmp/x.st"
expect_fail "train without --out" "out FILE" $DAP train --config fm-tiny
# sampling: class folders, grid, guidance, batch independence
expect_ok "sample 2 classes" $DAP sample --model "$ck" --classes 0,7 --n 3 --steps 4 --cfg 2 --eta 0.5 --seed 1 --out "$tmp/s1" --batch 4 --threads 1
[ -f "$tmp/s1/T-shirt_top/2.png" ] && [ -f "$tmp/s1/Sneaker/0.png" ] && [ -f "$tmp/s1/grid.png" ] \
  && ok "sample writes class folders and grid" || bad "sample writes class folders and grid ($(ls -R "$tmp/s1" | head -c 300))"
expect_ok "sample batch 1" $DAP sample --model "$ck" --classes Sneaker --n 3 --steps 4 --cfg 2 --eta 0.5 --seed 1 --out "$tmp/s2" --batch 1 --threads 1
cmp -s "$tmp/s1/Sneaker/2.png" "$tmp/s2/Sneaker/2.png" && ok "sample is batch-independent" || bad "sample is batch-independent"
expect_fail "sample bad class" "not a class" $DAP sample --model "$ck" --classes 12 --out "$tmp/s3"
expect_fail "sample missing model" "missing.safetensors" $DAP sample --model "$tmp/missing.safetensors" --out "$tmp/s3"
# warm start from a checkpoint's weights
expect_ok "train --init from a checkpoint" $DAP train --data fmnist --config fm-tiny --init "$ck" --out "$tmp/warm.st" --steps 2 --batch 4 --val-per-class 0 --threads 1
grep -q "initialised from" "$tmp/err" && ok "train --init loads the weights" || bad "train --init loads the weights"
expect_fail "train --init with another config" "another model config" $DAP train --data fmnist --config fm-p4-h256-d8 --init "$ck" --out "$tmp/warm2.st" --steps 1
fi
