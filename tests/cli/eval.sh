# dap subset / teacher / eval: tiny end-to-end runs on Fashion-MNIST (sourced by tests/cli.sh)
if ! have_fmnist; then
  skip "eval.sh: subset, eval, teacher, score and gpu-bundle on Fashion-MNIST" "dataset-fashion-mnist is not installed"
else
  expect_ok "subset ipc 2" $DAP subset --from fmnist --ipc 2 --seed 3 --out "$tmp/sub"
  if [ "$(find "$tmp/sub" -name '*.png' | wc -l)" -eq 20 ]; then ok "subset writes 20 pngs"; else bad "subset writes 20 pngs"; fi
  expect_ok "eval folder on val" $DAP eval --train "$tmp/sub" --epochs 2 --runs 2 --val 5 --quiet --threads 2 --json "$tmp/e.json"
  if tr -d ' \n' < "$tmp/e.json" | has '"eval_on":"val".*"runs":\[{"seed":0,"accuracy":.*{"seed":1,.*"mean":.*"std":'; then
    ok "eval json"; else bad "eval json ($(head -c 300 "$tmp/e.json"))"; fi
  # the convolution algorithm is a process-wide switch, recorded in the JSON
  tr -d ' \n' < "$tmp/e.json" | has '"conv_winograd":1' && ok "eval json records Winograd (default)" \
    || bad "eval json conv_winograd ($(head -c 300 "$tmp/e.json"))"
  expect_ok "eval with DAP_WINOGRAD=0" env DAP_WINOGRAD=0 $DAP eval --train "$tmp/sub" --epochs 1 --runs 1 --val 5 --quiet --threads 1 --json "$tmp/e0.json"
  tr -d ' \n' < "$tmp/e0.json" | has '"conv_winograd":0' && ok "DAP_WINOGRAD=0 recorded" || bad "DAP_WINOGRAD=0 recorded"
  # the thread count is recorded: --threads, else $OMP_NUM_THREADS, else all cores
  tr -d ' \n' < "$tmp/e.json" | has '"threads":2,' && ok "eval json records --threads" || bad "eval json records --threads ($(head -c 300 "$tmp/e.json"))"
  expect_ok "eval under OMP_NUM_THREADS=1" env OMP_NUM_THREADS=1 $DAP eval --train "$tmp/sub" --epochs 1 --runs 1 --val 5 --quiet --json "$tmp/eo.json"
  tr -d ' \n' < "$tmp/eo.json" | has '"threads":1,' && ok "OMP_NUM_THREADS is honoured without --threads" \
    || bad "OMP_NUM_THREADS is honoured without --threads ($(head -c 300 "$tmp/eo.json"))"
  expect_fail "bad DAP_WINOGRAD" "DAP_WINOGRAD must be 0, 1 or 2" env DAP_WINOGRAD=yes $DAP info
  # runs trained side by side (--jobs) give what one-thread runs give, in run order
  expect_ok "eval --jobs 2" $DAP eval --train "$tmp/sub" --epochs 2 --runs 3 --val 5 --quiet --jobs 2 --json "$tmp/ej.json"
  expect_ok "eval one thread" $DAP eval --train "$tmp/sub" --epochs 2 --runs 3 --val 5 --quiet --threads 1 --json "$tmp/e1.json"
  accs() { tr -d ' \n' < "$1" | grep -o '"seed":[0-9]*,"accuracy":[0-9.e+-]*,"train_accuracy":[0-9.e+-]*,"final_loss":[0-9.e+-]*'; }
  if [ -n "$(accs "$tmp/e1.json")" ] && [ "$(accs "$tmp/ej.json")" = "$(accs "$tmp/e1.json")" ]; then
    ok "eval --jobs 2 = --threads 1"; else bad "eval --jobs 2 = --threads 1 ($(accs "$tmp/ej.json") vs $(accs "$tmp/e1.json"))"; fi
  expect_fail "eval bad --jobs" "jobs must be in 1\.\.1024, got 0" $DAP eval --train "$tmp/sub" --jobs 0
  expect_fail "eval bad --device" "device 'tpu': expected cpu or cuda" $DAP eval --train "$tmp/sub" --device tpu
  expect_fail "eval bad DAP_DEVICE" "DAP_DEVICE='gpu0': expected cpu or cuda" env DAP_DEVICE=gpu0 $DAP eval --train "$tmp/sub"
  expect_fail "eval --device cuda on a CPU build" "built without the CUDA backend|no CUDA device|device cuda" $DAP eval --train "$tmp/sub" --device cuda
  expect_fail "teacher --device cuda on a CPU build" "built without the CUDA backend|no CUDA device|device cuda" $DAP teacher --out "$tmp/t.safetensors" --device cuda
  expect_fail "eval --device cuda leaves no json" "device cuda" $DAP eval --train "$tmp/sub" --device cuda --json "$tmp/dev.json"
  [ ! -e "$tmp/dev.json" ] && [ ! -e "$tmp/dev.json.runs" ] && ok "no output from a refused device" || bad "no output from a refused device"
  # scripts/sets-summary.sh: mean over sets of eval JSONs; two sets with other means (2 runs of
  # 2 epochs, 3 runs of 2 epochs): the mean of the two means, and half their gap as the spread
  expect_ok "sets-summary" bash scripts/sets-summary.sh "$tmp/e.json" "$tmp/e1.json"
  setmean() { sed -n '/"runs"/,/\]/p' "$1" | sed -n 's/^ *"accuracy": *\([-0-9.eE+]*\),*$/\1/p' | awk '{s+=$1} END {printf "%.10g", s/NR}'; }
  m1=$(setmean "$tmp/e.json"); m2=$(setmean "$tmp/e1.json")
  want=$(awk -v a="$m1" -v b="$m2" 'BEGIN {d = (a - b) / 2; printf "over 2 sets: %.2f +- %.2f", (a + b) / 2, d < 0 ? -d : d}')
  if [ "$m1" = "$m2" ]; then bad "sets-summary inputs differ (both means $m1)"
  elif grep -qF "$want" "$tmp/out"; then ok "sets-summary mean and spread of the set means"
  else bad "sets-summary mean and spread ($(tail -1 "$tmp/out"); want $want)"; fi
  expect_fail "sets-summary on a non-eval file" "no runs" bash scripts/sets-summary.sh README.md
  # --resume: 2 runs, then 3 with the journal: the result of one 3-run command
  expect_ok "eval 2 runs with a journal" $DAP eval --train "$tmp/sub" --epochs 2 --runs 2 --val 5 --quiet --threads 1 --json "$tmp/er.json"
  expect_ok "eval --resume to 3 runs" $DAP eval --train "$tmp/sub" --epochs 2 --runs 3 --val 5 --quiet --threads 1 --json "$tmp/er.json" --resume
  grep -q "resuming: 2 of 3 runs already done" "$tmp/err" && [ "$(accs "$tmp/er.json")" = "$(accs "$tmp/e1.json")" ] \
    && ok "eval --resume keeps finished runs, same result" || bad "eval --resume ($(accs "$tmp/er.json"))"
  expect_fail "eval --resume with other parameters" "other parameters" $DAP eval --train "$tmp/sub" --epochs 3 --runs 3 --val 5 --quiet --json "$tmp/er.json" --resume
  # the journal keys on the set's contents: the same folder name with other images is refused
  cp -r "$tmp/sub" "$tmp/sub2" && cp "$tmp/er.json.runs" "$tmp/ec.json.runs"
  sed -i "s#$tmp/sub #$tmp/sub2 #" "$tmp/ec.json.runs"
  expect_ok "eval --resume, same images in a copied folder" $DAP eval --train "$tmp/sub2" --epochs 2 --runs 3 --val 5 --quiet --threads 1 --json "$tmp/ec.json" --resume
  grep -q "resuming: 3 of 3 runs already done" "$tmp/err" && ok "eval --resume keys on the images" || bad "eval --resume keys on the images"
  cp "$tmp/sub/Bag/00000.png" "$tmp/sub2/Bag/00001.png"
  expect_fail "eval --resume after the folder changed" "other parameters" $DAP eval --train "$tmp/sub2" --epochs 2 --runs 3 --val 5 --quiet --threads 1 --json "$tmp/ec.json" --resume
  # a journal from before the content hash (no " set=" in its params line) still resumes
  sed -i "2s/ set=[0-9a-f]*$//" "$tmp/er.json.runs"
  expect_ok "eval --resume, journal without the content hash" $DAP eval --train "$tmp/sub" --epochs 2 --runs 3 --val 5 --quiet --threads 1 --json "$tmp/er.json" --resume
  grep -q "resuming: 3 of 3 runs already done" "$tmp/err" && ok "eval --resume accepts a pre-hash journal" || bad "eval --resume accepts a pre-hash journal"
  printf 'dap eval runs v1\nparams x\n' > "$tmp/bad.json.runs"
  expect_fail "eval --resume with a foreign journal" "other parameters" $DAP eval --train "$tmp/sub" --epochs 2 --runs 3 --val 5 --quiet --json "$tmp/bad.json" --resume
  expect_fail "eval --resume needs --json" "needs --json" $DAP eval --train "$tmp/sub" --resume
  { head -2 "$tmp/er.json.runs"; echo "run 0 250 65 2.0 0.7 20 2 256 0.01 0"; } > "$tmp/mal.json.runs"
  expect_fail "eval --resume with a malformed run line" "line 3: not a run record" $DAP eval --train "$tmp/sub" --epochs 2 --runs 3 --val 5 --quiet --json "$tmp/mal.json" --resume
  expect_ok "eval random:1 dsa" $DAP eval --train random:1 --aug dsa --epochs 2 --runs 1 --val 3 --quiet --threads 2
  expect_ok "teacher on a folder" $DAP teacher --data "$tmp/sub" --arch convnet3 --epochs 2 --quiet --threads 2 --out "$tmp/t.safetensors"
  expect_ok "eval soft" $DAP eval --train "$tmp/sub" --protocol soft --teacher "$tmp/t.safetensors" --epochs 2 --runs 1 --val 3 --quiet --threads 2
  # a run killed mid-way goes on from its last state (every epoch here) and ends where the
  # uninterrupted run ends; the state is gone once the journal holds the run
  mid="--train random:10 --val 20 --epochs 16 --runs 1 --seed 3 --threads 1 --state-every 0"
  expect_ok "eval, uninterrupted" $DAP eval $mid --json "$tmp/mu.json"
  want=$(tail -1 "$tmp/out")
  $DAP eval $mid --quiet --json "$tmp/mk.json" >/dev/null 2>&1 & pid=$!
  for _ in $(seq 600); do [ -f "$tmp/mk.json.run0.state" ] && break; sleep 0.1; done
  kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
  if [ -f "$tmp/mk.json.run0.state" ] && [ ! -f "$tmp/mk.json" ]; then ok "eval leaves a state when killed"; else bad "eval leaves a state when killed"; fi
  cp "$tmp/mk.json.run0.state" "$tmp/mk-copy.state"
  expect_fail "eval --resume refuses another run's state" "made for another run" $DAP eval ${mid/--epochs 16/--epochs 17} --json "$tmp/mk.json" --resume
  expect_ok "eval --resume from a mid-run state" $DAP eval $mid --json "$tmp/mk.json" --resume
  got=$(tail -1 "$tmp/out")
  if grep -q "resuming after epoch" "$tmp/err" && [ "$got" = "$want" ]; then ok "resumed run = uninterrupted run"
  else bad "resumed run = uninterrupted run ($got vs $want; $(grep -c resuming "$tmp/err") resume lines)"; fi
  [ ! -f "$tmp/mk.json.run0.state" ] && ok "eval drops the state of a finished run" || bad "eval drops the state of a finished run"
  head -c 200 "$tmp/mk-copy.state" > "$tmp/mk2.json.run0.state"
  expect_fail "eval --resume with a truncated state" "mk2.json.run0.state" $DAP eval $mid --json "$tmp/mk2.json" --resume
  expect_fail "eval --state-every NaN" "state-every" $DAP eval $mid --state-every nan
  mkdir -p "$tmp/badset/zebra" && cp "$tmp/sub/Bag/00000.png" "$tmp/badset/zebra/"
  expect_fail "eval unknown class folder" "zebra" $DAP eval --train "$tmp/badset" --epochs 1 --runs 1 --val 3
  # scripts/gpu-bundle.sh: the data part of `pack` (no build, no download): the first TRAIN_N
  # training images in a valid IDX file, and the same test accuracy as with the whole set
  expect_ok "gpu-bundle pack (data only)" env SKIP_BUILD=1 SKIP_DEBS=1 TRAIN_N=50 bash scripts/gpu-bundle.sh pack "$tmp/bundle"
  $DAP info --data "fmnist:$tmp/bundle/fmnist" > "$tmp/binfo" 2>&1
  grep -q "^images *50$" "$tmp/binfo" && ok "gpu-bundle keeps TRAIN_N training images" \
    || bad "gpu-bundle keeps TRAIN_N training images ($(head -c 200 "$tmp/binfo"))"
  for d in fmnist "fmnist:$tmp/bundle/fmnist"; do
    $DAP eval --data "$d" --train "$tmp/sub" --epochs 1 --runs 1 --threads 1 --quiet 2>/dev/null | tail -1
  done > "$tmp/bacc"
  if [ "$(wc -l < "$tmp/bacc")" = 2 ] && [ "$(sed -n 1p "$tmp/bacc")" = "$(sed -n 2p "$tmp/bacc")" ]; then
    ok "gpu-bundle data: eval --train DIR unchanged"; else bad "gpu-bundle data: eval --train DIR unchanged ($(cat "$tmp/bacc"))"; fi
  expect_fail "gpu-bundle bad TRAIN_N" "TRAIN_N must be a count" env SKIP_BUILD=1 SKIP_DEBS=1 TRAIN_N=1e3 bash scripts/gpu-bundle.sh pack "$tmp/bundle2"
fi
expect_fail "eval needs --train" "train is required" $DAP eval
expect_fail "eval unknown arch" "vgg" $DAP eval --train full --arch vgg11 --val 3
expect_fail "eval soft needs teacher" "teacher" $DAP eval --train full --protocol soft
expect_fail "eval bad random" "random:IPC" $DAP eval --train random:0
expect_fail "teacher needs --out" "out FILE is required" $DAP teacher
expect_fail "subset needs --out" "out DIR is required" $DAP subset --ipc 3
# scripts/experiment.sh: an empty part list means none of it (not the defaults), so the
# README's piece-by-piece commands run only their piece
EXP_OUT="$tmp/exp" METHODS="" IPCS="" XARCH="" SCALES=0 FULL=0 DAP=/bin/false bash scripts/experiment.sh >"$tmp/out" 2>&1 \
  && [ "$(grep -c . "$tmp/exp/table.tsv")" = 1 ] && ok "experiment.sh with empty parts runs nothing" \
  || bad "experiment.sh with empty parts ($(head -c 300 "$tmp/out"))"
expect_fail "gpu-bundle usage" "usage: scripts/gpu-bundle.sh" bash scripts/gpu-bundle.sh
expect_fail "gpu-bundle unknown verb" "unknown verb" bash scripts/gpu-bundle.sh unpack "$tmp/x"
