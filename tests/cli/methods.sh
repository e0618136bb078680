# dap distill's rival methods (mgd3, d4m, dm, igd; docs/methods.md) on the tiny model trained
# by diffusion.sh (sourced by tests/cli.sh): each runs, is the same with 1 and 2 threads,
# resumes after a kill with the bytes of an uninterrupted run, records its parameters,
# and refuses bad flags before writing anything.
md=(--data fmnist --ipc 2 --seed 4 --quiet --classes 0,1,2)
ms=(--model "$ck" --steps 5)
# igd's surrogate: a small teacher on a random subset
expect_ok "methods: a random subset for the surrogate" $DAP distill --data fmnist --method random --ipc 4 --out "$tmp/msub" --threads 1 --quiet
expect_ok "methods: surrogate teacher" $DAP teacher --data "$tmp/msub" --arch convnet3 --epochs 1 --batch 16 --out "$tmp/msur.safetensors" --threads 1 --quiet
declare -A mflags=(
  [mgd3]="${ms[*]} --mode-lambda 0.1 --stop 0.5"
  [d4m]="${ms[*]}"
  [dm]="--iterations 4 --batch-real 16 --dm-width 16"
  [igd]="${ms[*]} --surrogate $tmp/msur.safetensors --igd-n-real 8 --igd-low 0.2 --igd-high 0.8"
)
# cmp_sets A B: the same images (the manifest and the stats files hold timings)
cmp_sets() { diff -r -q -x manifest.json -x '.class-*' -x '.dap-distill.lock' "$1" "$2" >/dev/null; }
for meth in mgd3 d4m dm igd; do
  read -r -a f <<< "${mflags[$meth]}"
  expect_ok "distill $meth, 1 thread" $DAP distill "${md[@]}" "${f[@]}" --method $meth --threads 1 --out "$tmp/m1-$meth"
  n=$(find "$tmp/m1-$meth" -name '*.png' ! -name grid.png | wc -l)
  [ "$n" = 6 ] && grep -q "\"method\": *\"$meth\"" "$tmp/m1-$meth/manifest.json" \
    && ok "distill $meth writes 3 x 2 images and its manifest" || bad "distill $meth output ($n images)"
  expect_ok "distill $meth, 2 threads" $DAP distill "${md[@]}" "${f[@]}" --method $meth --threads 2 --out "$tmp/m2-$meth"
  cmp_sets "$tmp/m1-$meth" "$tmp/m2-$meth" && ok "distill $meth: 1 and 2 threads give the same bytes" \
    || bad "distill $meth: 1 and 2 threads differ"
  # killed after its first class, then rerun: the images of the uninterrupted run
  $DAP distill "${md[@]}" "${f[@]}" --method $meth --threads 1 --out "$tmp/mk-$meth" 2>/dev/null & pid=$!
  for _ in $(seq 1 600); do
    [ -n "$(find "$tmp/mk-$meth" -maxdepth 1 -name '.class-*.stats' 2>/dev/null | head -1)" ] && break; sleep 0.02
  done
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  k=$(find "$tmp/mk-$meth" -maxdepth 1 -name '.class-*.stats' | wc -l)
  [ "$k" -ge 1 ] && [ "$k" -lt 3 ] && ok "distill $meth killed after $k of 3 classes" || bad "distill $meth kill (classes done: $k)"
  expect_ok "distill $meth resumes after the kill" $DAP distill "${md[@]}" "${f[@]}" --method $meth --threads 1 --out "$tmp/mk-$meth"
  cmp_sets "$tmp/m1-$meth" "$tmp/mk-$meth" && ok "distill $meth: killed and resumed equals uninterrupted" \
    || bad "distill $meth: killed and resumed differs"
done
# the manifest records each method's parameters
grep -q '"mode_lambda": *0.1' "$tmp/m1-mgd3/manifest.json" && ok "manifest records mgd3's lambda" || bad "mgd3 manifest"
grep -q '"init": *"kmeans"' "$tmp/m1-d4m/manifest.json" && grep -q '"strength": *0.7' "$tmp/m1-d4m/manifest.json" \
  && ok "d4m runs from k-means prototypes at strength 0.7 by default" || bad "d4m manifest ($(grep -E 'init|strength' "$tmp/m1-d4m/manifest.json"))"
grep -q '"iterations": *4' "$tmp/m1-dm/manifest.json" && grep -q '"lr_img": *1' "$tmp/m1-dm/manifest.json" \
  && ! grep -q '"model"' "$tmp/m1-dm/manifest.json" && ok "manifest records dm's optimisation, no model" || bad "dm manifest"
grep -q '"surrogate_fnv1a64"' "$tmp/m1-igd/manifest.json" && grep -q '"igd_scale": *5' "$tmp/m1-igd/manifest.json" \
  && grep -q '"energy_first_guided_step"' "$tmp/m1-igd/manifest.json" && ok "manifest records igd's surrogate and scales" || bad "igd manifest"
# the methods differ from vanilla and from each other
expect_ok "distill vanilla for comparison" $DAP distill "${md[@]}" "${ms[@]}" --method vanilla --threads 1 --out "$tmp/m1-vanilla"
for meth in mgd3 d4m igd; do
  ! cmp_sets "$tmp/m1-$meth" "$tmp/m1-vanilla" && ok "distill $meth differs from vanilla" || bad "distill $meth equals vanilla"
done
# a folder of one method's run refuses another's parameters
expect_fail "mgd3 folder refuses another --mode-lambda" "other parameters" $DAP distill "${md[@]}" "${ms[@]}" --method mgd3 --mode-lambda 0.2 --out "$tmp/m1-mgd3"
expect_fail "dm folder refuses another --iterations" "other parameters" $DAP distill "${md[@]}" --method dm --iterations 5 --batch-real 16 --dm-width 16 --out "$tmp/m1-dm"
expect_ok "d4m folder resumes under dap-only flags" $DAP distill "${md[@]}" "${ms[@]}" --method d4m --gamma 3 --out "$tmp/m1-d4m"
# bad flags: an error naming the flag, nothing written
expect_fail "mgd3 bad --mode-lambda" "finite number" $DAP distill "${md[@]}" "${ms[@]}" --method mgd3 --mode-lambda inf --out "$tmp/mx1"
expect_fail "mgd3 bad --stop" "stop must be in" $DAP distill "${md[@]}" "${ms[@]}" --method mgd3 --stop 2 --out "$tmp/mx2"
expect_fail "d4m with --init" "d4m starts from its k-means prototypes" $DAP distill "${md[@]}" "${ms[@]}" --method d4m --init real --out "$tmp/mx3"
expect_fail "d4m bad --strength" "strength must be in" $DAP distill "${md[@]}" "${ms[@]}" --method d4m --strength 0 --out "$tmp/mx4"
expect_fail "d4m --strength junk" "strength expects a finite number" $DAP distill "${md[@]}" "${ms[@]}" --method d4m --strength 0.5x --out "$tmp/mx17"
expect_fail "dm bad --iterations" "iterations must be in 0\.\." $DAP distill "${md[@]}" --method dm --iterations -1 --out "$tmp/mx5"
expect_fail "dm bad --lr-img" "lr-img must be" $DAP distill "${md[@]}" --method dm --lr-img 0 --out "$tmp/mx6"
expect_fail "dm bad --batch-real" "batch-real must be" $DAP distill "${md[@]}" --method dm --batch-real 0 --out "$tmp/mx7"
expect_fail "dm --init" "applies to vanilla and dap" $DAP distill "${md[@]}" --method dm --init kmeans --strength 0.5 --out "$tmp/mx8"
expect_fail "igd without --surrogate" "surrogate FILE is required" $DAP distill "${md[@]}" "${ms[@]}" --method igd --out "$tmp/mx9"
expect_fail "igd with a missing surrogate" "missing.safetensors" $DAP distill "${md[@]}" "${ms[@]}" --method igd --surrogate "$tmp/missing.safetensors" --out "$tmp/mx10"
expect_fail "igd with a diffusion model as surrogate" "safetensors|arch|metadata" $DAP distill "${md[@]}" "${ms[@]}" --method igd --surrogate "$ck" --out "$tmp/mx11"
expect_fail "igd bad --igd-low/--igd-high" "igd-low and --igd-high" $DAP distill "${md[@]}" "${ms[@]}" --method igd --surrogate "$tmp/msur.safetensors" --igd-low 0.9 --igd-high 0.5 --out "$tmp/mx12"
expect_fail "igd bad --igd-n-real" "igd-n-real must be" $DAP distill "${md[@]}" "${ms[@]}" --method igd --surrogate "$tmp/msur.safetensors" --igd-n-real 0 --out "$tmp/mx13"
expect_fail "igd bad --igd-dev" "igd-dev" $DAP distill "${md[@]}" "${ms[@]}" --method igd --surrogate "$tmp/msur.safetensors" --igd-dev -1 --out "$tmp/mx14"
expect_fail "--surrogate with another method" "applies to method igd only" $DAP distill "${md[@]}" "${ms[@]}" --method mgd3 --surrogate "$tmp/msur.safetensors" --out "$tmp/mx15"
expect_fail "mgd3 without --model" "model FILE is required" $DAP distill "${md[@]}" --method mgd3 --out "$tmp/mx16"
left=0; for i in $(seq 1 17); do [ -e "$tmp/mx$i" ] && left=$((left+1)); done
[ "$left" = 0 ] && ok "bad method flags leave no output folder" || bad "bad method flags left $left folders"
