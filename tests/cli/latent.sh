# A latent prior end to end on tiny random models (sourced by tests/cli.sh): a 1000-class
# latent DiT on 4x4x4 latents and a factor-8 VAE, written by the unit test runner, on an
# ImageNette-style folder of three wnids (labels 0, 217, 701) with ImageNet's odd files.
lat="$tmp/lat"; mkdir -p "$lat"
if DAP_LATENT_FIXTURE_DIR="$lat" ./build/dap_tests latent_fixture >"$tmp/out" 2>&1 && grep -q "1 passed, 0 failed" "$tmp/out"; then
  ok "latent fixtures written"; else bad "latent fixtures ($(tail -3 "$tmp/out"))"; fi
# png_info FILE: "WIDTH HEIGHT COLOUR_TYPE" from the IHDR chunk (2: RGB)
png_info() { od -An -tu1 -j16 -N10 "$1" | awk '{print $3*256+$4, $7*256+$8, $10}'; }
L=(--data "imagenette:$lat/nette" --model "$lat/dit.safetensors" --vae "$lat/vae.safetensors" --ipc 2 --steps 4 --n-real 3 --threads 1)
expect_ok "distill dap --vae" $DAP distill "${L[@]}" --method dap --out "$tmp/ld" --latent-cache "$tmp/lc"
n=$(find "$tmp/ld" -name '0000*.png' | wc -l)
[ "$n" = 6 ] && [ "$(png_info "$tmp/ld/n02102040/00001.png")" = "32 32 2" ] \
  && ok "latent distill writes 3 x 2 RGB PNGs of 32 px (latent 4 x 8)" || bad "latent distill PNGs ($n, $(png_info "$tmp/ld/n02102040/00001.png"))"
[ "$(grep -c 'encoded 5 images' "$tmp/err")" = 3 ] && ok "each class encoded once" || bad "encoding log ($(grep -c encoded "$tmp/err"))"
tr -d ' \n' < "$tmp/ld/manifest.json" | has '"name":"n01440764","model_label":0,.*"name":"n02102040","model_label":217,.*"name":"n03888257","model_label":701,' \
  && ok "manifest labels are the wnids' ImageNet indices" || bad "manifest labels ($(grep -A2 '"name"' "$tmp/ld/manifest.json" | head -9))"
grep -q '"latent_size": *4' "$tmp/ld/manifest.json" && grep -q '"vae_fnv1a64"' "$tmp/ld/manifest.json" \
  && ok "manifest records the VAE and the latent size" || bad "manifest VAE fields"
[ -f "$tmp/ld/n03888257/latents.safetensors" ] && $DAP inspect "$tmp/ld/n03888257/latents.safetensors" 2>&1 | has "2, 4, 4, 4" \
  && ok "latents (2, 4, 4, 4) kept beside the class's images" || bad "latents file ($($DAP inspect "$tmp/ld/n03888257/latents.safetensors" 2>&1 | head -5))"
expect_ok "the latent set loads as an image folder" $DAP info --data "$tmp/ld"
expect_ok "latent distill resumes" $DAP distill "${L[@]}" --method dap --out "$tmp/ld" --latent-cache "$tmp/lc"
grep -q "already done" "$tmp/err" && ok "latent distill resume skips finished classes" || bad "latent resume"
# the cache: reused by another run, a changed image re-encodes its class, a truncated file is rebuilt
expect_ok "distill vanilla --vae on the same cache" $DAP distill "${L[@]}" --method vanilla --out "$tmp/ld2" --latent-cache "$tmp/lc"
grep -q "encoded" "$tmp/err" && bad "cache reused (it encoded again)" || ok "cache reused: nothing encoded again"
# a class starts from the same noise whatever subset it comes in: the sampling noise is keyed
# by the model's label (217), not by the class's place in the folder (1 here, 0 below)
mkdir -p "$lat/nette2"
for part in train val; do
  [ -d "$lat/nette/$part" ] || continue
  mkdir -p "$lat/nette2/$part"; cp -r "$lat/nette/$part/n02102040" "$lat/nette2/$part/"
done
expect_ok "distill vanilla --vae on a one-class subset" $DAP distill --data "imagenette:$lat/nette2" --model "$lat/dit.safetensors" \
  --vae "$lat/vae.safetensors" --ipc 2 --steps 4 --n-real 3 --threads 1 --method vanilla --out "$tmp/ld1c"
cmp -s "$tmp/ld2/n02102040/latents.safetensors" "$tmp/ld1c/n02102040/latents.safetensors" \
  && ok "a class's vanilla latents do not depend on the subset" || bad "the subset changed class n02102040's vanilla latents"
cp "$lat/nette/train/n01440764/n01440764_0.JPEG" "$lat/nette/train/n02102040/n02102040_4.JPEG"
truncate -s -64 "$tmp/lc/n03888257.32px.safetensors"
expect_ok "distill vanilla --vae after the changes" $DAP distill "${L[@]}" --method vanilla --out "$tmp/ld3" --latent-cache "$tmp/lc"
grep -q "n02102040.32px.safetensors is stale" "$tmp/err" && grep -q "encoded 5 images of class n02102040" "$tmp/err" \
  && [ "$(grep -c 'encoded' "$tmp/err")" = 2 ] \
  && ok "a changed image re-encodes its class alone" || bad "changed image ($(grep latent "$tmp/err" | head -3))"
grep -q "n03888257.32px.safetensors is damaged" "$tmp/err" && grep -q "encoded 5 images of class n03888257" "$tmp/err" \
  && ok "a truncated cache file is rebuilt" || bad "truncated cache ($(grep -i "n03888257" "$tmp/err" | head -3))"
expect_fail "a latent set does not resume on changed data" "other parameters" $DAP distill "${L[@]}" --method dap --out "$tmp/ld" --latent-cache "$tmp/lc"
# the rivals on a latent prior: mgd3 and d4m in latents; igd's surrogate sees the decoded
# images and its guidance comes back through the decoder (dap_vae_decode_vjp)
expect_ok "distill mgd3 --vae" $DAP distill "${L[@]}" --method mgd3 --out "$tmp/lmg"
expect_ok "distill d4m --vae" $DAP distill "${L[@]}" --method d4m --out "$tmp/ld4"
expect_ok "a surrogate for igd on the data at 32 px" $DAP teacher --data "imagenette:$lat/nette" --arch convnet3 --epochs 1 \
  --image-size 32 --out "$tmp/lsur.safetensors" --threads 1
IG=(--method igd --surrogate "$tmp/lsur.safetensors" --igd-low 0 --igd-high 1 --igd-dev 0)
expect_ok "distill igd --vae" $DAP distill "${L[@]}" "${IG[@]}" --out "$tmp/lig"
grep -q "influence" "$tmp/err" && ok "igd --vae reports the influence" || bad "igd --vae influence ($(tail -2 "$tmp/err"))"
expect_ok "distill igd --vae, influence scale 0" $DAP distill "${L[@]}" "${IG[@]}" --igd-scale 0 --out "$tmp/lig0"
cmp -s "$tmp/lig/n02102040/latents.safetensors" "$tmp/lig0/n02102040/latents.safetensors" \
  && bad "igd --vae: the influence guidance changed nothing" || ok "igd --vae: the influence guidance moves the latents"
expect_ok "a surrogate at 16 px" $DAP teacher --data "imagenette:$lat/nette" --arch convnet3 --epochs 1 \
  --image-size 16 --out "$tmp/lsur16.safetensors" --threads 1
expect_fail "igd --vae refuses a surrogate of another size" "decodes the model's latents to 3x32x32: train it at --image-size 32" \
  $DAP distill "${L[@]}" --method igd --surrogate "$tmp/lsur16.safetensors" --out "$tmp/lig16"
[ ! -e "$tmp/lig16" ] && ok "a refused igd --vae writes nothing" || bad "a refused igd --vae left $tmp/lig16"
expect_fail "dm refuses --vae" "uses no prior: run it without --vae" $DAP distill "${L[@]}" --method dm --out "$tmp/ldm"
# a Minimax fine-tune of the latent prior on the data's latents (its 1000 labels kept; memories
# for the data's 3), then sampled through the VAE
MM=(--data "imagenette:$lat/nette" --vae "$lat/vae.safetensors" --init "$lat/dit.safetensors" --minimax --trainable difffit
    --batch 2 --out "$tmp/lmm.safetensors" --latent-cache "$tmp/lc" --threads 1)
expect_ok "train --vae --minimax" $DAP train "${MM[@]}" --steps 2
grep -q "15 latents (4x4x4) of 3 classes.*labels of the model's 1000 (0, 217, 701)" "$tmp/err" && grep -q "encoded" "$tmp/err" && bad "train --vae re-encoded the cached latents" \
  || { grep -q "15 latents (4x4x4) of 3 classes.*labels of the model's 1000 (0, 217, 701)" "$tmp/err" && ok "train --vae takes the cached latents under the model's labels" \
       || bad "train --vae data line ($(grep latents "$tmp/err"))"; }
expect_ok "train --vae --minimax --resume" $DAP train "${MM[@]}" --steps 4 --resume
grep -q "steps 2 -> 4" "$tmp/err" && ok "train --vae resumes" || bad "train --vae resume ($(grep steps "$tmp/err" | tail -1))"
expect_ok "distill minimax --vae from the latent fine-tune" $DAP distill --data "imagenette:$lat/nette" --model "$tmp/lmm.safetensors" \
  --vae "$lat/vae.safetensors" --method minimax --ipc 2 --steps 4 --out "$tmp/lmmd" --latent-cache "$tmp/lc" --threads 1
[ "$(find "$tmp/lmmd" -name '0000*.png' | wc -l)" = 6 ] && ok "minimax --vae writes 3 x 2 images" || bad "minimax --vae images"
expect_fail "train --latent-cache without --vae" "latent-cache needs --vae" $DAP train --data "imagenette:$lat/nette" --latent-cache "$tmp/lc" --out "$tmp/lx.safetensors"
expect_fail "train --vae on a pixel config" "give its config" $DAP train --data "imagenette:$lat/nette" --vae "$lat/vae.safetensors" --config px-T --out "$tmp/lx.safetensors"
expect_fail "train --vae refuses --image-size" "takes 4x4 images|drop --image-size" $DAP train --data "imagenette:$lat/nette" \
  --vae "$lat/vae.safetensors" --init "$lat/dit.safetensors" --image-size 32 --out "$tmp/lx.safetensors"
[ ! -e "$tmp/lx.safetensors" ] && ok "a refused train --vae writes nothing" || bad "a refused train --vae wrote a checkpoint"
expect_ok "distill --vae --init kmeans" $DAP distill "${L[@]}" --method vanilla --init kmeans --strength 0.5 --out "$tmp/lk"
[ -d "$tmp/lk/.latent-cache" ] && ok "default cache under the output (hidden)" || bad "default cache folder"
expect_ok "distill random with --vae" $DAP distill --data "imagenette:$lat/nette" --vae "$lat/vae.safetensors" --method random --ipc 2 --image-size 32 --out "$tmp/lr" --threads 1
[ "$(png_info "$tmp/lr/n01440764/00000.png")" = "32 32 2" ] && [ ! -f "$tmp/lr/n01440764/latents.safetensors" ] \
  && ok "random --vae copies real images (no VAE round trip)" || bad "random --vae output"
expect_ok "sample --vae" $DAP sample --model "$lat/dit.safetensors" --vae "$lat/vae.safetensors" --classes n01440764,701 --n 2 --steps 3 --out "$tmp/ls" --threads 1
[ "$(png_info "$tmp/ls/n03888257/1.png")" = "32 32 2" ] && [ -f "$tmp/ls/n01440764/latents.safetensors" ] \
  && ok "sample --vae: decoded 32 px RGB and latents per class" || bad "sample --vae output"
# refusals, before any work
expect_fail "a VAE as the model" "is a VAE.*give it as --vae" $DAP distill "${L[@]}" --model "$lat/vae.safetensors" --out "$tmp/x1"
expect_fail "a DiT as the VAE" "is not a VAE.*it is a DiT" $DAP distill "${L[@]}" --vae "$lat/dit.safetensors" --out "$tmp/x2"
expect_fail "a latent model without --vae" "takes 4-channel 4x4 latents.*--vae" $DAP distill --data "imagenette:$lat/nette" --model "$lat/dit.safetensors" --out "$tmp/x3"
expect_fail "a pixel model with --vae" "works on 1-channel 28x28 pixels.*drop --vae" $DAP distill "${L[@]}" --model models/fmnist-dit.safetensors --out "$tmp/x4"
expect_fail "an image size the model does not take" "image-size 64 does not fit.*use --image-size 32" $DAP distill "${L[@]}" --image-size 64 --out "$tmp/x5"
expect_fail "sample: a latent model without --vae" "latents, not images" $DAP sample --model "$lat/dit.safetensors" --out "$tmp/x6"
expect_fail "sample: wrong --image-size" "does not fit" $DAP sample --model "$lat/dit.safetensors" --vae "$lat/vae.safetensors" --image-size 256 --out "$tmp/x7"
expect_fail "more real latents than a class has, before any encoding" "has 5 images, fewer than --n-real 9" $DAP distill "${L[@]}" --n-real 9 --out "$tmp/x9" --latent-cache "$tmp/x9c"
[ ! -e "$tmp/x9c" ] && ok "nothing encoded for a refused run" || bad "a refused run encoded ($(ls "$tmp/x9c"))"
mkdir -p "$lat/nette/train/n02086240" && cp "$lat/nette/train/n01440764/n01440764_0.JPEG" "$lat/nette/train/n02086240/a.JPEG"
expect_fail "a wnid folder outside the subset" "not a class of imagenette: 'n02086240'" $DAP distill "${L[@]}" --out "$tmp/x8"
rm -rf "$lat/nette/train/n02086240"
left=""; for x in x1 x2 x3 x4 x5 x6 x7 x8 x9; do [ -e "$tmp/$x" ] && left="$left $x"; done
[ -z "$left" ] && ok "refused runs leave no output" || bad "refused runs left output:$left"
# scripts/convert-dit.py on official-architecture checkpoints written by torch.save (a
# plain state_dict as released, and a training checkpoint whose EMA weights it must take);
# the converted file loads by shape inference and matches PyTorch's forward
py=""
for c in /opt/dapvenv/bin/python python3 /usr/bin/python3; do
  if command -v "$c" >/dev/null 2>&1 && "$c" -c "import torch" >/dev/null 2>&1; then py=$c; break; fi
done
if [ -z "$py" ]; then
  skip "convert-dit.py on torch.save checkpoints" "no Python with torch (tried /opt/dapvenv/bin/python, python3, /usr/bin/python3)"
else
  conv="$tmp/conv"
  expect_ok "random official-architecture DiT saved with torch.save" "$py" tests/gen/dit_official_ref.py "$conv"
  cp "$conv/dit_official_io.safetensors" "$conv/dit_official_tiny_io.safetensors"
  for v in dit_official dit_official_train; do
    expect_ok "convert-dit.py $v.pt" "$py" scripts/convert-dit.py "$conv/$v.pt" "$conv/dit_official_tiny.safetensors"
    if DAP_DIT_CONVERTED="$conv" ./build/dap_tests dit_official_converted >"$tmp/out" 2>&1 && grep -q "1 passed, 0 failed" "$tmp/out"; then
      ok "dap loads the converted $v and matches PyTorch"; else bad "converted $v ($(grep -E 'max abs|FAIL' "$tmp/out" | head -3))"; fi
  done
  grep -q "taking its EMA weights" "$tmp/err" && ok "a training checkpoint gives its EMA weights" || bad "convert-dit.py EMA message"
  "$py" -c "import torch; torch.save({'w': torch.zeros(2)}, '$conv/other.pt')"
  expect_fail "convert-dit.py refuses a non-DiT checkpoint" "not a DiT state_dict: no x_embedder.proj.weight" \
    "$py" scripts/convert-dit.py "$conv/other.pt" "$conv/other.safetensors"
  [ ! -e "$conv/other.safetensors" ] && ok "nothing written for a refused checkpoint" || bad "refused conversion wrote a file"
fi
