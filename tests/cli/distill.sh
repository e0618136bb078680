# dap distill on the tiny model trained by diffusion.sh (sourced by tests/cli.sh).
if have_fmnist; then # else diffusion.sh counted the skip
d=(--data fmnist --model "$ck" --ipc 2 --steps 4 --n-real 5 --threads 1 --seed 2)
expect_ok "distill random" $DAP distill --data fmnist --method random --ipc 3 --out "$tmp/dr" --threads 1
n=$(find "$tmp/dr" -name '*.png' ! -name grid.png | wc -l)
[ "$n" = 30 ] && [ -f "$tmp/dr/manifest.json" ] && [ -f "$tmp/dr/grid.png" ] \
  && ok "distill random writes 10 x 3 images, manifest, grid" || bad "distill random output ($n images)"
# the folder loads back as a dataset
expect_ok "distilled folder loads (dap info)" $DAP info --data "$tmp/dr"
grep -q "Trouser *3" "$tmp/out" && ok "distilled folder has 3 Trousers" || bad "distilled folder counts ($(head -c 300 "$tmp/out"))"
# resume: two classes, then all; same images as one uninterrupted run
expect_ok "distill dap classes 0,1" $DAP distill "${d[@]}" --method dap --classes 0,1 --out "$tmp/dd"
expect_ok "distill dap resume all" $DAP distill "${d[@]}" --method dap --out "$tmp/dd"
grep -q "already done" "$tmp/err" && ok "distill resume skips finished classes" || bad "distill resume skips finished classes"
expect_ok "distill dap uninterrupted" $DAP distill "${d[@]}" --method dap --out "$tmp/dd2"
diff -r -q -x manifest.json -x '.class-*' "$tmp/dd" "$tmp/dd2" >/dev/null \
  && ok "resumed distillation equals an uninterrupted one" || bad "resumed distillation differs"
grep -q '"energy_first_guided_step"' "$tmp/dd/manifest.json" && grep -q '"model_fnv1a64"' "$tmp/dd/manifest.json" \
  && ok "manifest records energies and the model hash" || bad "manifest content"
# --shard: two processes side by side on one folder make the uninterrupted run's images,
# and the manifest (rewritten under a lock by each) lists every class
$DAP distill "${d[@]}" --method dap --shard 0/2 --out "$tmp/dsh" --quiet 2> "$tmp/sh0" & sh0=$!
$DAP distill "${d[@]}" --method dap --shard 1/2 --out "$tmp/dsh" --quiet 2> "$tmp/sh1" & sh1=$!
wait $sh0 && wait $sh1 && ok "distill --shard 0/2 and 1/2 side by side" || { bad "distill --shard side by side"; cat "$tmp/sh0" "$tmp/sh1"; }
diff -r -q -x manifest.json -x '.class-*' -x '.dap-distill.lock' "$tmp/dsh" "$tmp/dd2" >/dev/null \
  && ok "two shards equal an uninterrupted run" || bad "two shards differ from an uninterrupted run"
tr -d ' \n' < "$tmp/dsh/manifest.json" | has '"classes_done":10,"complete":true' \
  && [ "$(grep -c '"class":' "$tmp/dsh/manifest.json")" = 10 ] \
  && ok "the shared folder's manifest lists all 10 classes" || bad "shared manifest ($(head -c 400 "$tmp/dsh/manifest.json"))"
expect_ok "distill one shard of three" $DAP distill "${d[@]}" --method vanilla --shard 2/3 --out "$tmp/dsh3"
tr -d ' \n' < "$tmp/dsh3/manifest.json" | has '"classes_done":3,"complete":false' \
  && grep -q "not done yet" "$tmp/err" && ok "a partial folder says it is incomplete" || bad "partial shard manifest"
[ -d "$tmp/dsh3/Pullover" ] && [ ! -d "$tmp/dsh3/Trouser" ] && ok "shard 2/3 ran classes 2, 5, 8" || bad "shard 2/3 classes"
# --shard auto: the share from the launcher's environment (mpirun, a Slurm array with a
# step), the same images as one process
(unset SLURM_ARRAY_TASK_ID SLURM_PROCID PMI_RANK
 OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=2 $DAP distill "${d[@]}" --method dap --shard auto --out "$tmp/dmpi" --quiet 2> "$tmp/mp0" &
 OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 $DAP distill "${d[@]}" --method dap --shard auto --out "$tmp/dmpi" 2> "$tmp/mp1"; wait) \
  && grep -q "shard 1/2 (from OMPI_COMM_WORLD_RANK" "$tmp/mp1" \
  && diff -r -q -x manifest.json -x '.class-*' -x '.dap-distill.lock' "$tmp/dmpi" "$tmp/dd2" >/dev/null \
  && ok "--shard auto under mpirun's variables equals one process" || { bad "--shard auto (mpirun)"; cat "$tmp/mp0" "$tmp/mp1"; }
for id in 4 6; do
  env -u OMPI_COMM_WORLD_RANK -u PMI_RANK SLURM_ARRAY_TASK_ID=$id SLURM_ARRAY_TASK_MIN=4 SLURM_ARRAY_TASK_STEP=2 SLURM_ARRAY_TASK_COUNT=2 \
    $DAP distill "${d[@]}" --method vanilla --shard auto --out "$tmp/dslurm" 2> "$tmp/sl$id" || bad "--shard auto (Slurm array task $id)"
done
expect_ok "distill vanilla, one process" $DAP distill "${d[@]}" --method vanilla --out "$tmp/dvan"
grep -q "shard 1/2 (from SLURM_ARRAY" "$tmp/sl6" \
  && diff -r -q -x manifest.json -x '.class-*' -x '.dap-distill.lock' "$tmp/dslurm" "$tmp/dvan" >/dev/null \
  && ok "--shard auto in a Slurm array (ids 4, 6) equals one process" || { bad "--shard auto (Slurm array)"; cat "$tmp/sl4" "$tmp/sl6"; }
noenv=(env -u OMPI_COMM_WORLD_RANK -u PMI_RANK -u SLURM_ARRAY_TASK_ID -u SLURM_PROCID)
expect_fail "distill --shard auto without a launcher" "no launcher found" "${noenv[@]}" $DAP distill "${d[@]}" --method vanilla --shard auto --out "$tmp/x"
expect_fail "distill --shard auto, malformed rank" "PMI_RANK='x'" "${noenv[@]}" PMI_RANK=x PMI_SIZE=2 $DAP distill "${d[@]}" --method vanilla --shard auto --out "$tmp/x"
expect_fail "distill --shard auto, rank past size" "outside 0..size-1" "${noenv[@]}" OMPI_COMM_WORLD_RANK=2 OMPI_COMM_WORLD_SIZE=2 $DAP distill "${d[@]}" --method vanilla --shard auto --out "$tmp/x"
expect_fail "distill --shard auto, a task id off the array's step" "not one of the array's ids" "${noenv[@]}" SLURM_ARRAY_TASK_ID=5 SLURM_ARRAY_TASK_MIN=4 SLURM_ARRAY_TASK_STEP=2 SLURM_ARRAY_TASK_COUNT=2 $DAP distill "${d[@]}" --method vanilla --shard auto --out "$tmp/x"
expect_fail "distill --gpu on the cpu device" "picks a GPU for --device cuda" $DAP distill "${d[@]}" --method vanilla --gpu 1 --out "$tmp/x"
expect_fail "eval --gpu junk" "expected a device index" $DAP eval --train random:1 --gpu one
[ ! -e "$tmp/x" ] && ok "refused shard/gpu runs wrote nothing" || bad "a refused run wrote $tmp/x"
expect_fail "distill bad --shard" "expected I/N with 0 <= I < N" $DAP distill "${d[@]}" --method vanilla --shard 2/2 --out "$tmp/x"
expect_fail "distill --shard junk" "expected I/N" $DAP distill "${d[@]}" --method vanilla --shard 1/2x --out "$tmp/x"
expect_fail "distill --shard overflow" "expected I/N" $DAP distill "${d[@]}" --method vanilla --shard 0/99999999999 --out "$tmp/x"
expect_fail "distill --shard with --classes" "give one of them" $DAP distill "${d[@]}" --method vanilla --shard 0/2 --classes 1 --out "$tmp/x"
expect_fail "distill into a folder of another run" "other parameters" $DAP distill "${d[@]}" --method dap --gamma 2 --out "$tmp/dd"
expect_fail "distill --repel on a folder made without it" "other parameters" $DAP distill "${d[@]}" --method dap --repel 1 --out "$tmp/dd"
expect_ok "distill dap --repel" $DAP distill "${d[@]}" --method dap --repel 1 --classes 0 --out "$tmp/dr1"
grep -q '"repel": *1' "$tmp/dr1/manifest.json" && ok "manifest records --repel" || bad "manifest records --repel ($(grep repel "$tmp/dr1/manifest.json"))"
expect_fail "distill bad repel" "repel must be" $DAP distill "${d[@]}" --method dap --repel -1 --out "$tmp/x5"
expect_ok "distill vanilla" $DAP distill "${d[@]}" --method vanilla --out "$tmp/dv"
# vanilla ignores the guidance's flags, so a vanilla folder resumes under other ones, not under another sampler
expect_ok "distill vanilla resumes with another --stop and --gamma" $DAP distill "${d[@]}" --method vanilla --stop 0 --gamma 3 --out "$tmp/dv"
grep -q "already done" "$tmp/err" && ok "vanilla resume under other guidance flags reuses the classes" || bad "vanilla resume under other guidance flags"
expect_fail "distill vanilla with another --cfg refused" "other parameters" $DAP distill "${d[@]}" --method vanilla --cfg 2 --out "$tmp/dv"
# --init kmeans|real: partial trajectories from noised real start images
expect_ok "distill vanilla --init kmeans" $DAP distill "${d[@]}" --method vanilla --init kmeans --strength 0.5 --classes 0 --out "$tmp/dk"
grep -q '"init": *"kmeans"' "$tmp/dk/manifest.json" && grep -q '"strength": *0.5' "$tmp/dk/manifest.json" \
  && ok "manifest records --init and --strength" || bad "manifest records --init ($(grep -E 'init|strength' "$tmp/dk/manifest.json"))"
expect_fail "distill --init on a folder made without it" "other parameters" $DAP distill "${d[@]}" --method vanilla --out "$tmp/dk"
expect_ok "distill dap --init real" $DAP distill "${d[@]}" --method dap --init real --strength 0.75 --classes 0 --out "$tmp/dk2"
expect_fail "distill bad init" "init must be noise, real, kmeans or medoid" $DAP distill "${d[@]}" --method vanilla --init pixels --out "$tmp/x6"
expect_fail "distill --strength without a start image" "needs a start image" $DAP distill "${d[@]}" --method vanilla --strength 0.5 --out "$tmp/x7"
expect_fail "distill bad strength" "strength must be in" $DAP distill "${d[@]}" --method vanilla --init real --strength 2 --out "$tmp/x8"
expect_fail "distill random --init" "applies to vanilla and dap" $DAP distill --data fmnist --method random --init kmeans --strength 0.5 --out "$tmp/x9" --threads 1
differ "dap differs from vanilla" "$tmp/dd" "$tmp/dv"
expect_fail "distill bad method" "method must be" $DAP distill --method magic --out "$tmp/x"
expect_fail "distill without model" "model FILE is required" $DAP distill --method dap --out "$tmp/x"
expect_fail "distill bad layer" "layer must be" $DAP distill "${d[@]}" --method dap --layer 99 --out "$tmp/x2"
expect_fail "distill bad kernel" "kernel must be" $DAP distill "${d[@]}" --kernel poly --out "$tmp/x3"
expect_fail "distill bad number" "expects a finite number" $DAP distill "${d[@]}" --gamma abc --out "$tmp/x4"
[ ! -e "$tmp/x8" ] && [ ! -e "$tmp/x2" ] && ok "a bad distill flag leaves no output folder" || bad "a bad distill flag left a folder behind"
# dap score with a tiny classifier trained on the random subset (fast; real data = that folder)
expect_ok "teacher on a folder" $DAP teacher --data "$tmp/dr" --arch convnet3 --epochs 1 --batch 16 --out "$tmp/clf.safetensors" --threads 1 --quiet
expect_ok "score a distilled set" $DAP score --data "$tmp/dr" --test "$tmp/dv" --set "$tmp/dd" --classifier "$tmp/clf.safetensors" --k 2 --json "$tmp/score.json" --threads 1
grep -qE "^overall .*consistency .*FD\(test\)" "$tmp/out" && grep -q '"frechet_distance_test"' "$tmp/score.json" \
  && ok "score prints and writes overall scores" || bad "score output ($(tail -c 300 "$tmp/out"))"
# the JSON names what was scored by content: the same images in another folder, the same
# hash; another set, another; and the data, test split and classifier it was scored against
hash_of() { tr -d ' \n' < "$1" | grep -o "\"$2\":\"[0-9a-f]*\"" | cut -d'"' -f4; }
$DAP score --data "$tmp/dr" --test "$tmp/dv" --set "$tmp/dd2" --classifier "$tmp/clf.safetensors" --k 2 --json "$tmp/score2.json" --threads 1 >/dev/null 2>&1
$DAP score --data "$tmp/dr" --test "$tmp/dv" --set "$tmp/dsh3" --classifier "$tmp/clf.safetensors" --k 2 --json "$tmp/score3.json" --threads 1 >/dev/null 2>&1
h1=$(hash_of "$tmp/score.json" set_hash); h2=$(hash_of "$tmp/score2.json" set_hash); h3=$(hash_of "$tmp/score3.json" set_hash)
[ -n "$h1" ] && [ "$h1" = "$h2" ] && [ -n "$h3" ] && [ "$h1" != "$h3" ] \
  && [ -n "$(hash_of "$tmp/score.json" test_hash)" ] && [ "$(hash_of "$tmp/score.json" test_hash)" != "$(hash_of "$tmp/score.json" data_hash)" ] \
  && [ -n "$(hash_of "$tmp/score.json" classifier_fnv1a64)" ] \
  && ok "score JSON: the set, data, test split and classifier by content hash" || bad "score JSON hashes ($h1 $h2 $h3)"
expect_fail "score without --set" "set DIR is required" $DAP score --classifier "$tmp/clf.safetensors"
expect_fail "score with a bad classifier" "missing.safetensors" $DAP score --set "$tmp/dd" --classifier "$tmp/missing.safetensors"
# export to F16 and sample from it
expect_ok "export F16" $DAP export --model "$ck" --out "$tmp/tiny16.safetensors" --f16
[ "$(stat -c %s "$tmp/tiny16.safetensors")" -lt "$(stat -c %s "$ck")" ] && ok "F16 export is smaller" || bad "F16 export is smaller"
expect_ok "sample from the F16 model" $DAP sample --model "$tmp/tiny16.safetensors" --classes 1 --n 1 --steps 2 --out "$tmp/s16" --threads 1
expect_fail "export a missing model" "missing" $DAP export --model "$tmp/missing.st" --out "$tmp/x.st"
fi
