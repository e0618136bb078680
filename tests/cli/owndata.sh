# Sourced by tests/cli.sh: a user's own data end to end. A 12-class 16x16 RGB folder made
# here (ROOT/train/<class>/ and ROOT/test/<class>/, class names with a capital and a
# space) goes through train (a few steps), sample, distill and eval; the class names stay
# the folder names all the way; the refusals of issue 20 are checked on it.

# png_rgb FILE W H R0 G0 B0: a W x H RGB PNG (stored deflate blocks, no compression) whose
# pixel (x, y) is (R0 + 8x, G0 + 8y, B0 + 4(x + y)) mod 256; bash, printf, gzip and od
# only (the CRC-32 of a chunk is the one gzip writes in its trailer)
_od_crc_be() { local c; c=$(gzip -c | tail -c 8 | head -c 4 | od -An -tx1 | tr -d ' \n')
  printf '\\x%s\\x%s\\x%s\\x%s' "${c:6:2}" "${c:4:2}" "${c:2:2}" "${c:0:2}"; }
_od_be32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((($1 >> 24) & 255)) $((($1 >> 16) & 255)) $((($1 >> 8) & 255)) $(($1 & 255)); }
png_rgb() {
  local f=$1 w=$2 h=$3 r0=$4 g0=$5 b0=$6 x y v px raw="" a=1 b=0 n ihdr idat
  for ((y = 0; y < h; y++)); do
    raw+='\x00'; b=$(((b + a) % 65521))
    for ((x = 0; x < w; x++)); do
      for v in $(((r0 + 8 * x) % 256)) $(((g0 + 8 * y) % 256)) $(((b0 + 4 * (x + y)) % 256)); do
        printf -v px '\\x%02x' "$v"; raw+=$px; a=$(((a + v) % 65521)); b=$(((b + a) % 65521))
      done
    done
  done
  n=$((h * (1 + 3 * w)))
  ihdr="IHDR$(_od_be32 "$w")$(_od_be32 "$h")\\x08\\x02\\x00\\x00\\x00"
  idat="IDAT\\x78\\x01\\x01$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((n & 255)) $((n >> 8)) $((~n & 255)) $(((~n >> 8) & 255)))${raw}$(_od_be32 $(((b << 16) | a)))"
  { printf '\x89PNG\r\n\x1a\n'
    printf "$(_od_be32 13)"; printf "$ihdr"; printf "$ihdr" | _od_crc_be | xargs -0 printf
    printf "$(_od_be32 $((n + 11)))"; printf "$idat"; printf "$idat" | _od_crc_be | xargs -0 printf
    printf '\x00\x00\x00\x00IEND\xae\x42\x60\x82'; } > "$f"
}

od_names=(apple banana cherry date elder fig grape hazel "Ice plant" juniper Kiwi lemon)
od=$tmp/own
for k in "${!od_names[@]}"; do
  for split in train test; do
    mkdir -p "$od/$split/${od_names[$k]}"
    for i in 0 1 2 3; do
      [ "$split" = test ] && [ "$i" -ge 2 ] && continue
      png_rgb "$od/$split/${od_names[$k]}/$i.png" 16 16 $((k * 21)) $((255 - k * 19 + i * 3)) $(((k * 97 + i * 11) % 256))
    done
  done
done
od_sorted() { ls "$1" | grep -v -e '\.json$' -e '\.png$' | sort; }
want=$(printf '%s\n' "${od_names[@]}" | sort)
[ "$(od_sorted "$od/train")" = "$want" ] && [ "$($DAP info --data "$od" | sed -n 's/^size *//p')" = "16 x 16, 3 channels" ] \
  && ok "own data: a 12-class 16x16 RGB folder" || bad "own data: the generated folder ($($DAP info --data "$od" 2>&1 | head -3))"

# train: size, channels and classes from the data; names and data in the checkpoint
odm=$tmp/own-model.safetensors
expect_ok "own data: train px-T on it" $DAP train --data "$od" --config px-T --out "$odm" --steps 4 --batch 8 --log-every 2 --threads 1
grep -q "model 3x16x16, 12 classes, patch 2 (64 tokens)" "$tmp/err" && ok "own data: the model takes the data's geometry" \
  || bad "own data: model geometry ($(grep model "$tmp/err"))"
grep -q "validation: 10% of each class, at most 100, held out: 0 images" "$tmp/err" \
  && ok "own data: the validation hold-out is a capped share, stated" || bad "own data: validation line ($(grep valid "$tmp/err"))"
$DAP inspect "$odm" > "$tmp/odi" 2>&1
grep -q "Ice plant" "$tmp/odi" && grep -q "train_data.*$(basename "$od")" "$tmp/odi" && grep -q "input_size.*16" "$tmp/odi" \
  && ok "own data: the checkpoint records class names, data and geometry" || bad "own data: checkpoint metadata ($(grep -E 'class_names|train_data' "$tmp/odi"))"
expect_ok "own data: train at --image-size 8 --channels 1" $DAP train --data "$od" --config px-T --image-size 8 --channels 1 \
  --out "$tmp/own8.safetensors" --steps 1 --batch 4 --val-per-class 1 --threads 1
grep -q "resized 16x16 -> 8x8, RGB -> gray (luma) (48 images)" "$tmp/err" && grep -q "model 1x8x8" "$tmp/err" \
  && ok "own data: train states the preprocessing" || bad "own data: preprocessing line ($(grep -E 'resized|model' "$tmp/err"))"
expect_fail "own data: a Fashion-MNIST config refuses 12 classes" "has 10 classes, the data has 12.*px-" \
  $DAP train --data "$od" --config fm-tiny --out "$tmp/x.safetensors" --steps 1 --threads 1
expect_fail "own data: a bad patch is refused" "patch 3 does not divide the image size 16" \
  $DAP train --data "$od" --config px-T/3 --out "$tmp/x.safetensors" --steps 1 --threads 1
[ ! -e "$tmp/x.safetensors" ] && ok "own data: a refused train writes nothing" || bad "own data: a refused train wrote a checkpoint"
if $DAP train --help | has "16 px p2 (64)" && $DAP train --help | has "px-S.*hidden 192"; then
  ok "own data: train --help lists the configs with their sizes"; else bad "own data: train --help lists the configs"; fi

# sample and distill: folders named from the checkpoint's classes
expect_ok "own data: sample" $DAP sample --model "$odm" --n 2 --steps 2 --out "$tmp/own-s" --threads 1
[ "$(od_sorted "$tmp/own-s")" = "$want" ] && ok "own data: sample names its folders from the checkpoint" \
  || bad "own data: sample folders ($(od_sorted "$tmp/own-s" | tr '\n' ,))"
expect_ok "own data: distill vanilla (data from the checkpoint)" $DAP distill --model "$odm" --method vanilla --ipc 2 \
  --steps 2 --out "$tmp/own-v" --threads 1
grep -q -- "--data .*own (the data .* was trained on)" "$tmp/err" && [ "$(od_sorted "$tmp/own-v")" = "$want" ] \
  && ok "own data: distill takes the recorded data, keeps the names" || bad "own data: distill ($(head -3 "$tmp/err"); $(od_sorted "$tmp/own-v" | tr '\n' ,))"
expect_ok "own data: distill random from the model's data" $DAP distill --model "$odm" --method random --ipc 2 --out "$tmp/own-r" --threads 1
[ "$(od_sorted "$tmp/own-r")" = "$want" ] && ok "own data: random draws the model's data, not Fashion-MNIST" \
  || bad "own data: random distill folders ($(od_sorted "$tmp/own-r" | tr '\n' ,))"
expect_ok "own data: distill a pixel model on its data at another size (converted)" $DAP distill --model "$tmp/own8.safetensors" \
  --data "$od" --method vanilla --ipc 1 --steps 2 --out "$tmp/own-v8" --threads 1
grep -q "resized 16x16 -> 8x8, RGB -> gray" "$tmp/err" && ok "own data: distill states the conversion" || bad "own data: distill conversion ($(head -3 "$tmp/err"))"

# eval: the test split of ROOT, the JSON names it; the refusals
expect_ok "own data: eval the distilled set" $DAP eval --data "$od" --train "$tmp/own-v" --epochs 1 --runs 1 --threads 1 --quiet \
  --json "$tmp/own-e.json"
grep -q "\"path\": \"[^\"]*own/test\"" "$tmp/own-e.json" && grep -q '"images": 24' "$tmp/own-e.json" \
  && grep -qE '"hash": "[0-9a-f]{16}"' "$tmp/own-e.json" && ok "own data: the eval JSON records the test set" \
  || bad "own data: eval JSON test set ($(grep -A4 test_set "$tmp/own-e.json"))"
# without --data: the data the folder was distilled from, not Fashion-MNIST
expect_ok "own data: eval a distilled set without --data" $DAP eval --train "$tmp/own-v" --epochs 1 --runs 1 --threads 1 \
  --json "$tmp/own-e2.json"
grep -q "data .*own (from .*own-v/.dap-distill-params)" "$tmp/err" && grep -q "\"path\": \"[^\"]*own/test\"" "$tmp/own-e2.json" \
  && ok "own data: eval takes the folder's data and tests on its test split" || bad "own data: eval's data from the folder ($(head -2 "$tmp/err"))"
expect_ok "own data: eval --test DIR on a one-set folder" $DAP eval --data "$od/train" --test "$od/test" --train "$tmp/own-r" \
  --epochs 1 --runs 1 --threads 1 --quiet
expect_fail "own data: eval refuses to test on the training folder" "one image folder.*cannot be its own test set.*--test" \
  $DAP eval --data "$od/train" --train "$tmp/own-v" --epochs 1 --runs 1 --threads 1
expect_fail "own data: eval refuses --test = the training images" "tested on its own training images" \
  $DAP eval --data "$od/train" --test "$od/train" --train "$tmp/own-v" --epochs 1 --runs 1 --threads 1
expect_fail "own data: eval refuses --test = the --train set" "tested on its own training images" \
  $DAP eval --data "$od" --test "$tmp/own-v" --train "$tmp/own-v" --epochs 1 --runs 1 --threads 1
expect_fail "own data: eval refuses a set of another size" "has 1x8x8 images .*has 3x16x16" \
  $DAP eval --data "$od" --train "$tmp/own-v8" --epochs 1 --runs 1 --threads 1
if have_fmnist; then
  # a plain folder (not made by dap distill) has no data of its own: Fashion-MNIST
  cp -r "$tmp/own-v" "$tmp/own-plain" && rm -f "$tmp/own-plain/.dap-distill-params" "$tmp/own-plain/manifest.json"
  expect_fail "own data: eval without --data refuses a 16x16 set on Fashion-MNIST" "has 3x16x16 images .*fmnist has 1x28x28" \
    $DAP eval --train "$tmp/own-plain" --epochs 1 --runs 1 --threads 1
else skip "own data: eval without --data refuses a 16x16 set on Fashion-MNIST" "Fashion-MNIST is not installed"; fi
cp -r "$tmp/own-v" "$tmp/own-v11" && rm -rf "$tmp/own-v11/lemon"
expect_fail "own data: eval refuses a set lacking a class" "no images of class 'lemon'" \
  $DAP eval --data "$od" --train "$tmp/own-v11" --epochs 1 --runs 1 --threads 1
mkdir -p "$tmp/own-half/train" && cp -r "$od/train/." "$tmp/own-half/train/"
expect_fail "own data: ROOT/train without test/ or val/ is refused as a test set" "has train/ but neither test/ nor val/" \
  $DAP eval --data "$tmp/own-half" --train random:1 --epochs 1 --runs 1 --threads 1
mv "$tmp/own-half" "$tmp/own-val" && cp -r "$od/test" "$tmp/own-val/val"
expect_ok "own data: ROOT/val serves as the test split" $DAP eval --data "$tmp/own-val" --train random:1 --epochs 1 --runs 1 --threads 1 --quiet
# a model without the record (as from before it existed): its metadata key renamed in place
perl -pe 's/"train_data"/"xrain_data"/' "$odm" > "$tmp/own-anon.safetensors"
expect_fail "own data: distill refuses an unrecorded non-Fashion-MNIST model without --data" "data is required.*does not record" \
  $DAP distill --model "$tmp/own-anon.safetensors" --method random --ipc 1 --out "$tmp/x-anon"
expect_ok "own data: ... and takes it with --data" $DAP distill --model "$tmp/own-anon.safetensors" --data "$od" --method random \
  --ipc 1 --out "$tmp/own-anon-r"
