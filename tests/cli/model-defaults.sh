# A model's validated flags (MODEL.defaults beside MODEL.safetensors, tools/flags.c): dap
# distill and dap sample load its [sampler] and [METHOD] sections by default, the command
# line wins, --defaults none turns them off, and a broken file is refused before any work.
# Uses the tiny model of diffusion.sh ($ck).
same_set() { diff -r -q -x manifest.json -x '.class-*' -x '.dap-distill.lock' "$1" "$2" >/dev/null; }
cp "$ck" "$tmp/dm.safetensors"
printf '# a test file\n[sampler]\n--steps 3\n--cfg 2\n[dap]\n--gamma 0.5 --pool mean\n[mgd3]\n--mode-lambda 0.2\n' > "$tmp/dm.defaults"
dd=(--data fmnist --model "$tmp/dm.safetensors" --ipc 2 --classes 0,1 --seed 3 --threads 1)
expect_ok "defaults: distill dap with the model's defaults" $DAP distill "${dd[@]}" --method dap --out "$tmp/df1"
grep -q '"steps": 3,' "$tmp/df1/manifest.json" && grep -q '"gamma": 0.5,' "$tmp/df1/manifest.json" \
  && grep -q '"pool": "mean"' "$tmp/df1/manifest.json" && grep -q '"cfg": 2,' "$tmp/df1/manifest.json" \
  && ok "defaults: [sampler] and [dap] applied" || bad "defaults: not applied ($(grep -E 'steps|gamma|pool' "$tmp/df1/manifest.json" | tr -d '\n'))"
grep -q "\"defaults\": \"$tmp/dm.defaults \[sampler\] \[dap\]: --steps 3 --cfg 2 --gamma 0.5 --pool mean\"" "$tmp/df1/manifest.json" \
  && ok "defaults: the manifest names the file and its flags" || bad "defaults: manifest line: $(grep '"defaults"' "$tmp/df1/manifest.json")"
grep -q "defaults from $tmp/dm.defaults" "$tmp/err" && ok "defaults: announced on stderr" || bad "defaults: not announced"
# the same images as the flags given by hand without the file
expect_ok "defaults: the same flags by hand" $DAP distill "${dd[@]}" --method dap --defaults none --steps 3 --cfg 2 \
  --gamma 0.5 --pool mean --out "$tmp/df2"
same_set "$tmp/df1" "$tmp/df2" && ok "defaults: the file's flags give the hand-given flags' images" || bad "defaults: images differ from the flags by hand"
# the command line wins over the file
expect_ok "defaults: command line overrides" $DAP distill "${dd[@]}" --method dap --gamma 0.7 --out "$tmp/df3"
grep -q '"gamma": 0.7,' "$tmp/df3/manifest.json" && grep -q '"steps": 3,' "$tmp/df3/manifest.json" \
  && ok "defaults: --gamma on the command line wins, the rest from the file" || bad "defaults: override"
# --defaults none: the built-in defaults
expect_ok "defaults: --defaults none" $DAP distill "${dd[@]}" --method dap --defaults none --steps 4 --out "$tmp/df4"
grep -q '"gamma": 1,' "$tmp/df4/manifest.json" && grep -q '"defaults": ""' "$tmp/df4/manifest.json" \
  && ok "defaults: none leaves the built-in gamma" || bad "defaults: none"
# another method reads its own section, not dap's
expect_ok "defaults: mgd3 reads [mgd3]" $DAP distill "${dd[@]}" --method mgd3 --out "$tmp/df5"
grep -q '"mode_lambda": 0.2,' "$tmp/df5/manifest.json" && grep -q '"defaults": "[^"]*\[sampler\] \[mgd3\]: --steps 3 --cfg 2 --mode-lambda 0.2"' "$tmp/df5/manifest.json" \
  && ok "defaults: mgd3 gets [sampler] and [mgd3] only" || bad "defaults: mgd3 sections: $(grep '"defaults"' "$tmp/df5/manifest.json")"
# dap sample reads [sampler]
expect_ok "defaults: sample with the defaults" $DAP sample --model "$tmp/dm.safetensors" --n 1 --classes 0 --threads 1 --out "$tmp/ds1"
expect_ok "defaults: sample by hand" $DAP sample --model "$tmp/dm.safetensors" --n 1 --classes 0 --threads 1 --defaults none --steps 3 --cfg 2 --out "$tmp/ds2"
same_set "$tmp/ds1" "$tmp/ds2" && ok "defaults: sample's [sampler] equals the flags by hand" || bad "defaults: sample differs"
$DAP sample --model "$tmp/dm.safetensors" --n 1 --classes 0 --threads 1 --defaults none --out "$tmp/ds3" 2>/dev/null
differ "defaults: sample with --defaults none is another sample" "$tmp/ds1" "$tmp/ds3"
# refusals, before anything is written
expect_fail "defaults: a missing --defaults file" "nothere.defaults: cannot read" $DAP distill "${dd[@]}" --defaults "$tmp/nothere.defaults" --out "$tmp/dfx1"
printf '[sampler]\n--steps 3\n[dapp]\n--gamma 1\n' > "$tmp/bad1.defaults"
expect_fail "defaults: an unknown section" "bad1.defaults line 3: unknown section '\[dapp\]'" $DAP distill "${dd[@]}" --defaults "$tmp/bad1.defaults" --out "$tmp/dfx2"
printf -- '--steps 3\n[sampler]\n' > "$tmp/bad2.defaults"
expect_fail "defaults: a flag outside a section" "bad2.defaults line 1: '--steps 3' is outside a section" $DAP distill "${dd[@]}" --defaults "$tmp/bad2.defaults" --out "$tmp/dfx3"
printf '[dap]\n--gamma lots\n' > "$tmp/bad3.defaults"
expect_fail "defaults: a bad value in the file is named with the file" "gamma expects a finite number.*|bad3.defaults" $DAP distill "${dd[@]}" --defaults "$tmp/bad3.defaults" --out "$tmp/dfx4"
grep -q "bad3.defaults" "$tmp/err" && ok "defaults: the bad value's message names the file" || bad "defaults: bad value message: $(cat "$tmp/err")"
[ ! -e "$tmp/dfx1" ] && [ ! -e "$tmp/dfx2" ] && [ ! -e "$tmp/dfx3" ] && [ ! -e "$tmp/dfx4" ] \
  && ok "defaults: nothing written on a refused file" || bad "defaults: a refused run wrote its folder"
# a section for a range of IPC ([dap ipc>=N] / [dap ipc<=N]): after the plain one, for the runs it names
printf '[sampler]\n--steps 3\n--cfg 2\n[dap]\n--gamma 0.5 --pool mean\n[dap ipc>=3]\n--gamma 0.9 --clip-x0 1\n[dap ipc<=1]\n--gamma 0.2\n' > "$tmp/ipc.defaults"
dc=(--data fmnist --model "$tmp/dm.safetensors" --classes 0 --seed 3 --threads 1 --defaults "$tmp/ipc.defaults")
expect_ok "defaults: [dap ipc>=3] at IPC 2" $DAP distill "${dc[@]}" --ipc 2 --out "$tmp/dfi2"
grep -q '"gamma": 0.5,' "$tmp/dfi2/manifest.json" && grep -q '"defaults": "[^"]*\[sampler\] \[dap\]: --steps 3 --cfg 2 --gamma 0.5 --pool mean"' "$tmp/dfi2/manifest.json" \
  && ok "defaults: an IPC section outside its range is left out" || bad "defaults: IPC 2: $(grep -E '"gamma"|"defaults"' "$tmp/dfi2/manifest.json" | tr -d '\n')"
expect_ok "defaults: [dap ipc>=3] at IPC 3" $DAP distill "${dc[@]}" --ipc 3 --out "$tmp/dfi3"
grep -q '"gamma": 0.9,' "$tmp/dfi3/manifest.json" && grep -q '"defaults": "[^"]*\[sampler\] \[dap\] \[dap ipc>=3\]: --steps 3 --cfg 2 --gamma 0.5 --pool mean --gamma 0.9 --clip-x0 1"' "$tmp/dfi3/manifest.json" \
  && ok "defaults: an IPC section in its range follows (and overrides) the plain one" || bad "defaults: IPC 3: $(grep -E '"gamma"|"defaults"' "$tmp/dfi3/manifest.json" | tr -d '\n')"
expect_ok "defaults: [dap ipc<=1] at IPC 1" $DAP distill "${dc[@]}" --ipc 1 --gamma 0.3 --out "$tmp/dfi1"
grep -q '"gamma": 0.3,' "$tmp/dfi1/manifest.json" && grep -q '\[dap ipc<=1\]: ' "$tmp/dfi1/manifest.json" \
  && ok "defaults: the command line still wins over an IPC section" || bad "defaults: IPC 1: $(grep -E '"gamma"|"defaults"' "$tmp/dfi1/manifest.json" | tr -d '\n')"
for bad_sec in 'dap ipc>50' 'dap ipc>=x' 'dap ipc>=0' 'dap ipc>=5 x' 'dap steps>=5'; do
  printf '[%s]\n--gamma 1\n' "$bad_sec" > "$tmp/badipc.defaults"
  expect_fail "defaults: section [$bad_sec] refused" "badipc.defaults line 1: unknown section" $DAP distill "${dd[@]}" --defaults "$tmp/badipc.defaults" --out "$tmp/dfx5"
done
[ ! -e "$tmp/dfx5" ] && ok "defaults: nothing written for a bad IPC section" || bad "defaults: a bad IPC section wrote its folder"
