# dap eval on ImageNet-style data (sourced by tests/cli.sh): a generated ImageNette folder
# (three wnids, 44x40 JPEGs among them ImageNet's odd files; train/ 5 a class, val/ 1 a
# class) and a 48 px "distilled" set, both brought to --image-size 32.
es="$tmp/es"; mkdir -p "$es"
if DAP_LATENT_FIXTURE_DIR="$es" ./build/dap_tests latent_fixture >"$tmp/out" 2>&1 && grep -q "1 passed, 0 failed" "$tmp/out"; then
  ok "evalscale: wnid folder written"; else bad "evalscale: wnid folder ($(tail -3 "$tmp/out"))"; fi
N="imagenette:$es/nette"
expect_ok "evalscale: a 48 px set of the three wnids" $DAP distill --data "$N" --method random --ipc 2 --image-size 48 --out "$es/set48" --threads 1
E=(--protocol imagenet --arch convnet --epochs 2 --runs 1 --threads 1)
expect_ok "eval imagenette at --image-size 32 with a 48 px set" $DAP eval --data "$N" --train "$es/set48" "${E[@]}" --image-size 32 --json "$es/r.json"
grep -q "eval: --train $es/set48: resized 48x48 -> 32x32 (6 images), as asked by --image-size 32" "$tmp/err" \
  && ok "eval says it converted the set" || bad "set conversion log ($(grep -i resized "$tmp/err" | head -2))"
grep -q "at 32 px .*15 training images in .*/es/nette/train, test set .*/es/nette/val (3 images)" "$tmp/err" \
  && ok "eval names the splits it read" || bad "splits log ($(head -c 300 "$tmp/err"))"
j=$(tr -d ' \n' < "$es/r.json")
echo "$j" | has '"test_set":{"path":"[^"]*/es/nette/val","images":3,' && ok "JSON: test set DIR/val, 3 images" \
  || bad "JSON test set ($(echo "$j" | grep -o '"test_set":{[^}]*}'))"
echo "$j" | has '"image_size":32,"image_width":32,"channels":3,"train_set":{"images":6,"source_height":48,"source_width":48,"resized":6}' \
  && ok "JSON: image size 32, the set's own 48 px and its conversion" || bad "JSON size ($(echo "$j" | grep -o '"image_size.*"test_set"'))"
echo "$j" | has '"epochs":2,"batch":64,"lr":0.01,"aug":"imagenet","cutmix":0.5' && ok "JSON: the ImageNet-subset recipe" \
  || bad "JSON recipe ($(echo "$j" | grep -o '"epochs".*'))"
# refusals
expect_fail "eval imagenette without --image-size" "ImageNet images differ in size: give --image-size 224" \
  $DAP eval --data "$N" --train "$es/set48" "${E[@]}"
cp -r "$es/set48" "$es/woofset" && mv "$es/woofset/n03888257" "$es/woofset/n02085620"
expect_fail "eval: a set with a wnid outside the subset" "class folder 'n02085620' is not a class of imagenette" \
  $DAP eval --data "$N" --train "$es/woofset" "${E[@]}" --image-size 32
expect_fail "eval: the set is the subset's val/" "tested on its own training images" \
  $DAP eval --data "$N" --train "$es/nette/val" "${E[@]}" --image-size 32
expect_fail "eval: a set of another size without --image-size is refused" "has 3x48x48 images.*3x44x40.*give --image-size" \
  $DAP eval --data "$es/nette" --train "$es/set48" --epochs 1 --runs 1 --threads 1
# random real subsets and the full split at that size
expect_ok "eval imagenette random:2 at --image-size 32" $DAP eval --data "$N" --train random:2 "${E[@]}" --image-size 32 --json "$es/rr.json"
tr -d ' \n' < "$es/rr.json" | has '"image_size":32,.*"train_images":6' && ok "random:2 trains on 6 real images at 32 px" \
  || bad "random:2 JSON ($(tr -d ' \n' < "$es/rr.json" | head -c 400))"
expect_fail "a resumed journal at another --image-size is refused" "other parameters" \
  $DAP eval --data "$N" --train random:2 "${E[@]}" --image-size 28 --json "$es/rr.json" --resume
expect_ok "eval imagenette full at --image-size 32" $DAP eval --data "$N" --train full "${E[@]}" --epochs 1 --image-size 32 --json "$es/rf.json"
tr -d ' \n' < "$es/rf.json" | has '"train_images":15' && ok "full trains on the 15 training images" || bad "full JSON"
# the soft-label protocol: a teacher of the evaluation's size
expect_ok "teacher on imagenette at --image-size 32" $DAP teacher --data "$N" --image-size 32 --arch convnet3 --epochs 1 --batch 8 --out "$es/t32.safetensors" --quiet --threads 1
expect_ok "eval --protocol soft on imagenette" $DAP eval --data "$N" --train "$es/set48" --protocol soft --teacher "$es/t32.safetensors" --arch convnet --epochs 1 --runs 1 --threads 1 --image-size 32
expect_fail "eval --protocol soft with a teacher of another size" "takes 3x32x32 images.*give --image-size 32" \
  $DAP eval --data "$N" --train "$es/set48" --protocol soft --teacher "$es/t32.safetensors" --arch convnet --epochs 1 --runs 1 --threads 1 --image-size 40
