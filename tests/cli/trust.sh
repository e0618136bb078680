# Bad input refused before any work, and the class mapping of dap distill (sourced by
# tests/cli.sh). Each check names the mistake it guards against.
M=models/fmnist-dit.safetensors
# every command: --help works (every numeric flag has a range, asserted by the parser) and
# --threads exists with its range
for c in distill eval export info inspect sample score subset teacher train; do
  expect_ok "$c --help" $DAP $c --help
  expect_fail "$c --threads out of range" "threads must be in 0..1024, got 100000" $DAP $c --threads 100000
done
grep -q -- "--ipc N .*(default: 10; 1..100000)" <($DAP distill --help) && ok "--help prints each flag's range" \
  || bad "--help prints each flag's range ($($DAP distill --help | grep -- --ipc))"
# values accepted but meaningless
expect_fail "distill --cfg beyond 50" "cfg must be in \[-50, 50\]" $DAP distill --cfg 51 --out "$tmp/r1"
expect_fail "distill --gamma beyond 1e4" "gamma must be in \[-10000, 10000\]" $DAP distill --gamma 2e4 --out "$tmp/r1"
expect_fail "distill --stop above 1" "stop must be in \[0, 1\]" $DAP distill --stop 1.5 --out "$tmp/r1"
expect_fail "sample --cfg beyond 50" "cfg must be in" $DAP sample --model $M --cfg -60 --out "$tmp/r1"
expect_fail "train zero steps" "steps must be in 1\.\." $DAP train --steps 0 --out "$tmp/r1.st"
expect_fail "train negative --lr" "lr must be in" $DAP train --lr -1e-4 --out "$tmp/r1.st"
expect_fail "train --class-dropout above 1" "class-dropout must be in \[0, 1\]" $DAP train --class-dropout 1.5 --out "$tmp/r1.st"
expect_fail "eval negative --lr" "lr must be in \[0, 100\]" $DAP eval --train full --lr -0.1
expect_fail "eval --cutmix above 1" "cutmix must be in" $DAP eval --train full --cutmix 2
expect_fail "eval --cutmix between -1 and 0" "cutmix must be a probability" $DAP eval --train full --cutmix -0.5
expect_fail "teacher --lr 0" "lr must be in" $DAP teacher --lr 0 --out "$tmp/r1.st"
expect_fail "score --k 0" "k must be in 1\.\." $DAP score --set "$tmp" --k 0
[ ! -e "$tmp/r1" ] && [ ! -e "$tmp/r1.st" ] && ok "refused flags leave nothing behind" || bad "refused flags left output"
# output paths found unwritable before the work, not after it
nd="$tmp/no-such-dir"
expect_fail "train --out in a missing folder" "out $nd/m.st: cannot write in $nd" $DAP train --out "$nd/m.st" --steps 1
expect_fail "teacher --out in a missing folder" "out $nd/t.st: cannot write" $DAP teacher --out "$nd/t.st"
expect_fail "eval --json in a missing folder" "json $nd/e.json: cannot write" $DAP eval --train full --json "$nd/e.json"
expect_fail "score --json in a missing folder" "json $nd/s.json: cannot write" $DAP score --set "$tmp" --json "$nd/s.json"
expect_fail "info --grid in a missing folder" "grid $nd/g.png: cannot write" $DAP info --grid "$nd/g.png"
expect_fail "info --grid on a folder" "is a folder" $DAP info --grid "$tmp"
# dap export --class-names: names in label order, the count checked
printf 'a\nb\n' > "$tmp/two.txt"
expect_fail "export --class-names with the wrong count" "2 names, the model has 10 classes" $DAP export --model $M --class-names "$tmp/two.txt" --out "$tmp/x.st"
[ ! -e "$tmp/x.st" ] && ok "a refused export writes nothing" || bad "a refused export wrote $tmp/x.st"
$DAP inspect $M | has '"class_names":"T-shirt/top\\u000aTrouser' && ok "the shipped prior names its classes" \
  || bad "the shipped prior names its classes ($($DAP inspect $M | tail -1 | head -c 300))"
if ! have_fmnist; then
  skip "trust.sh: distill class mapping, resume keys and eval --val on Fashion-MNIST folders" "dataset-fashion-mnist is not installed"
else
  # a Fashion-MNIST folder lists its classes alphabetically: "Ankle boot" is class 0 of the
  # folder and label 9 of the model; the label the model gets is the model's
  expect_ok "subset: a Fashion-MNIST folder" $DAP subset --ipc 3 --out "$tmp/fm" --threads 1
  v=(--data "$tmp/fm" --model $M --method vanilla --ipc 1 --steps 2 --threads 1)
  expect_ok "distill a folder: Ankle boot (folder class 0)" $DAP distill "${v[@]}" --classes 0 --out "$tmp/ab"
  mf=$(tr -d ' \n' < "$tmp/ab/manifest.json")
  echo "$mf" | has '"class_map":{"T-shirt_top":0,"Trouser":1,.*"Bag":8,"Ankleboot":9}' \
    && echo "$mf" | has '"class":0,"name":"Ankleboot","model_label":9' \
    && ok "manifest: Ankle boot sampled with the model's label 9" || bad "manifest class map ($(echo "$mf" | head -c 600))"
  # a folder distilled before the mapping (its parameter line: no labels, no data hash) held
  # images of the folder's index, not the class: not resumed
  mkdir -p "$tmp/old" && sed 's/ labels=[0-9,]*//; s/ data_fnv1a64=[0-9a-f]*//' "$tmp/ab/.dap-distill-params" > "$tmp/old/.dap-distill-params"
  grep -q "labels=9,8,4,3,2,5,6,7,0,1 " "$tmp/ab/.dap-distill-params" && ok "the parameter line holds the label mapping" \
    || bad "the parameter line holds the label mapping ($(cat "$tmp/ab/.dap-distill-params"))"
  expect_fail "a folder distilled before the mapping is not resumed" "other parameters" $DAP distill "${v[@]}" --classes 0 --out "$tmp/old"
  expect_ok "distill a folder: all classes" $DAP distill "${v[@]}" --steps 1 --out "$tmp/all"
  [ "$(grep -o '"name": *"[^"]*"' "$tmp/all/manifest.json" | head -3 | tr -d '\n ')" = '"name":"T-shirt_top""name":"Trouser""name":"Pullover"' ] \
    && ok "manifest lists classes in label order" || bad "manifest class order ($(grep -o '"name": *"[^"]*"' "$tmp/all/manifest.json" | head -3))"
  mkdir -p "$tmp/zoo/zebra" "$tmp/zoo/Trouser"; cp "$tmp/fm/Bag/"*.png "$tmp/zoo/zebra/"; cp "$tmp/fm/Trouser/"*.png "$tmp/zoo/Trouser/"
  expect_fail "distill a folder with a class the model does not know" "data class 'zebra' is not a class of the model" \
    $DAP distill --data "$tmp/zoo" --model $M --method vanilla --ipc 1 --steps 1 --out "$tmp/z"
  [ ! -e "$tmp/z" ] && ok "an unknown class leaves no folder" || bad "an unknown class left $tmp/z"
  expect_fail "distill duplicate --classes" "class 1 is listed twice" $DAP distill "${v[@]}" --classes 1,1 --out "$tmp/dup"
  expect_fail "sample duplicate --classes" "listed twice" $DAP sample --model $M --classes Bag,8 --out "$tmp/dup"
  # every flag that changes the images is in the resume key: --batch, and the data's contents
  expect_fail "distill resume with another --batch" "other parameters" $DAP distill "${v[@]}" --classes 0 --batch 1 --out "$tmp/ab"
  cp -r "$tmp/fm" "$tmp/fm2"
  expect_ok "distill from a copy" $DAP distill "${v[@]}" --data "$tmp/fm2" --classes 1 --out "$tmp/ab2"
  cp "$tmp/fm2/Bag/00000.png" "$tmp/fm2/Trouser/00000.png"
  expect_fail "distill resume after the data changed" "other parameters" $DAP distill "${v[@]}" --data "$tmp/fm2" --classes 2 --out "$tmp/ab2"
  # nothing marks a folder before its first class: a refused class leaves no folder; a first
  # class that fails (its folder name is too long to write) leaves no parameter file, and the
  # corrected command (other flags) then runs there
  expect_fail "distill dap --n-real above the class size" "fewer than --n-real 50" $DAP distill "${v[@]}" --method dap --n-real 50 --out "$tmp/nr"
  [ ! -e "$tmp/nr" ] && ok "a too-large --n-real leaves no folder" || bad "a too-large --n-real left $tmp/nr"
  long="A$(printf 'x%.0s' $(seq 249))"
  mkdir -p "$tmp/lf/$long" "$tmp/lf/Bag" && cp "$tmp/fm/Bag/"*.png "$tmp/lf/$long/" && cp "$tmp/fm/Bag/"*.png "$tmp/lf/Bag/"
  expect_fail "distill: a first class that cannot be written" "name too long" $DAP distill --data "$tmp/lf" --method random --ipc 1 --out "$tmp/failed"
  [ -d "$tmp/failed" ] && [ ! -e "$tmp/failed/.dap-distill-params" ] && ok "a failed first class leaves no parameter file" \
    || bad "a failed first class ($(ls -a "$tmp/failed" 2>&1 | tr '\n' ' '))"
  expect_ok "the corrected command runs in that folder" $DAP distill --data "$tmp/lf" --method random --ipc 2 --classes 1 --out "$tmp/failed"
  # train --resume keys on the training images too (fm2 now differs from fm)
  tt=(--config fm-tiny --batch 4 --val-per-class 0 --threads 1 --out "$tmp/tt.st")
  expect_ok "train 1 step on a folder" $DAP train --data "$tmp/fm" "${tt[@]}" --steps 1
  expect_fail "train --resume on other images" "trained on other images" $DAP train --data "$tmp/fm2" "${tt[@]}" --steps 2 --resume
  expect_ok "train --resume on the same images" $DAP train --data "$tmp/fm" "${tt[@]}" --steps 2 --resume
  # eval --val larger than a class: the intended message, also under AddressSanitizer
  expect_fail "eval --val N above a class's size" "val 5: class 0 has only 3 training images" $DAP eval --data "$tmp/fm" --train "$tmp/fm" --val 5
  if [ -x ./build-san/dap ]; then
    expect_fail "eval --val N above a class's size (ASan)" "val 5: class 0 has only 3 training images" ./build-san/dap eval --data "$tmp/fm" --train "$tmp/fm" --val 5
    grep -q "AddressSanitizer" "$tmp/err" && bad "ASan report from eval --val" || ok "no ASan report from eval --val"
  else
    skip "eval --val under AddressSanitizer" "no build-san/dap (make SAN=1 all)"
  fi
fi
# scripts/demo.sh reports a failed scoring step (a stand-in dap: distill and eval succeed,
# score fails when FAKE_SCORE_FAILS is set): a non-zero exit naming the set, after the report
cat > "$tmp/fakedap" <<'FAKE'
#!/usr/bin/env bash
cmd=$1; shift; out=""
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
case $cmd in
  distill) mkdir -p "$out" && echo '{"classes": [{"class": 0, "name": "a", "seconds": 1}]}' > "$out/manifest.json" ;;
  eval) echo "accuracy 50.00 +- 0.00" ;;
  score) if [ -n "${FAKE_SCORE_FAILS:-}" ]; then echo "dap score: error: a stand-in failure" >&2; exit 1; fi; echo "overall 1 2 3" ;;
esac
FAKE
chmod +x "$tmp/fakedap"
demo=(env DAP="$tmp/fakedap" DAP_DEMO_OUT="$tmp/demo" DEMO_JOBS=1 bash scripts/demo.sh)
expect_ok "demo.sh with every step succeeding" "${demo[@]}"
expect_fail "demo.sh reports a failed scoring step" "scoring random failed: dap score: error: a stand-in failure" env FAKE_SCORE_FAILS=1 "${demo[@]}"
[ -f "$tmp/demo/report.html" ] && grep -q "scoring failed for: random vanilla dap dap-init" "$tmp/err" \
  && ok "demo.sh still writes the report and names every failed set" || bad "demo.sh failed-score report ($(tail -c 300 "$tmp/err"))"
# the unit-test runner counts a skipped test as skipped, with its reason, never as passed
DAP_TEST_FAST=1 ./build/dap_tests fmnist_load_train > "$tmp/skip.txt" 2>&1
grep -q "^SKIP fmnist_load_train: " "$tmp/skip.txt" && tail -1 "$tmp/skip.txt" | has -x "0 passed, 0 failed, 1 skipped" \
  && ok "the unit-test runner counts a skip as skipped" || bad "the unit-test runner's skip ($(tail -2 "$tmp/skip.txt" | tr '\n' ' '))"

# a pipeline into grep -q under pipefail fails at random: grep leaves at its first match and
# the writer dies of SIGPIPE (a CI run lost "train --help lists the configs" that way)
piped=$(grep -lE 'pipefail' tests/cli.sh tests/run.sh scripts/*.sh | xargs grep -nE '\| *grep +-[a-zA-Z]*q' ; \
        grep -nE '\| *grep +-[a-zA-Z]*q' tests/cli/*.sh)
[ -z "$piped" ] && ok "no pipeline into grep -q under pipefail" || bad "pipelines into grep -q under pipefail: $piped"
