# dap vae encode / decode and dap inspect on VAE files (sourced by tests/cli.sh), on the
# tiny AutoencoderKL fixture (tests/gen/vae_ref.py): images made by decoding its latents.
V=tests/ref/vae_tiny.safetensors
R=tests/ref/vae_tiny_ref.safetensors
expect_ok "vae decode to a folder" $DAP vae decode --vae $V --in $R --out "$tmp/vimg/" --threads 1
[ -f "$tmp/vimg/000000.png" ] && [ -f "$tmp/vimg/000001.png" ] && [ ! -f "$tmp/vimg/000002.png" ] \
  && ok "vae decode wrote one PNG per latent" || bad "vae decode folder: $(ls "$tmp/vimg" 2>&1)"
# a folder with a class subfolder: three images, sorted by path
mkdir -p "$tmp/vin/b_class" && cp "$tmp/vimg/000000.png" "$tmp/vin/a.png" && cp "$tmp/vimg/000001.png" "$tmp/vin/b_class/c.png" \
  && cp "$tmp/vimg/000000.png" "$tmp/vin/b_class/d.png" && echo "not an image" > "$tmp/vin/notes.txt"
expect_ok "vae encode a folder" $DAP vae encode --vae $V --in "$tmp/vin" --out "$tmp/lat.safetensors" --size 32 --batch 2
expect_ok "inspect latents" $DAP inspect "$tmp/lat.safetensors"
grep -q "^latent  *F32  *\[3, 4, 4, 4\]" "$tmp/out" && ok "vae encode: latent (3, 4, 4, 4)" || bad "latent shape: $(head -c 300 "$tmp/out")"
grep -q 'a.png.*b_class/c.png.*b_class/d.png' "$tmp/out" && grep -q '"size":"32"' "$tmp/out" \
  && ok "vae encode: metadata names the sources in order and the size" || bad "latent metadata: $(tail -c 400 "$tmp/out")"
# the same image gives the same latent whichever batch it is in: a.png alone vs in the folder
expect_ok "vae encode one image" $DAP vae encode --vae $V --in "$tmp/vin/a.png" --out "$tmp/lat1.safetensors" --size 32
expect_ok "vae encode --sample" $DAP vae encode --vae $V --in "$tmp/vin/a.png" --out "$tmp/lat2.safetensors" --size 32 --sample --seed 3
expect_ok "vae encode --sample again" $DAP vae encode --vae $V --in "$tmp/vin/a.png" --out "$tmp/lat3.safetensors" --size 32 --sample --seed 3
cmp -s "$tmp/lat2.safetensors" "$tmp/lat3.safetensors" && ok "vae encode --sample is seeded" || bad "vae encode --sample is seeded"
cmp -s "$tmp/lat1.safetensors" "$tmp/lat2.safetensors" && bad "vae encode --sample differs from the mean" || ok "vae encode --sample differs from the mean"
# decode: grid PNG, float tensor, one PNG
expect_ok "vae decode to a grid" $DAP vae decode --vae $V --in "$tmp/lat.safetensors" --out "$tmp/grid.png" --grid-cols 2
head -c 4 "$tmp/grid.png" | has PNG && ok "vae decode wrote a grid PNG" || bad "vae decode wrote no grid PNG"
expect_ok "vae decode to floats" $DAP vae decode --vae tests/ref/vae_tiny_ldm.safetensors --in "$tmp/lat.safetensors" --out "$tmp/img.safetensors"
expect_ok "inspect images" $DAP inspect "$tmp/img.safetensors"
grep -q "^image  *F32  *\[3, 3, 32, 32\]" "$tmp/out" && ok "vae decode: image (3, 3, 32, 32)" || bad "image shape: $(head -c 300 "$tmp/out")"
expect_ok "vae decode one latent" $DAP vae decode --vae $V --in "$tmp/lat1.safetensors" --out "$tmp/one.png"
head -c 4 "$tmp/one.png" | has PNG && ok "vae decode wrote one PNG" || bad "vae decode wrote no PNG"
# inspect names a VAE in every naming
for f in vae_tiny vae_tiny_old vae_tiny_ldm vae_tiny_sd; do
  expect_ok "inspect $f" $DAP inspect tests/ref/$f.safetensors
  grep -q "^VAE (AutoencoderKL, .*channels 8/16/24/24" "$tmp/out" && ok "inspect names $f a VAE" || bad "inspect $f: $(tail -c 300 "$tmp/out")"
done
expect_ok "inspect a DiT" $DAP inspect tests/ref/dit_small.safetensors
grep -q "^VAE" "$tmp/out" && bad "inspect calls a DiT a VAE" || ok "inspect does not call a DiT a VAE"
# bad input, refused before any work and without output
expect_fail "vae encode: a DiT as --vae" "is a DiT checkpoint, not a VAE" $DAP vae encode --vae tests/ref/dit_small.safetensors --in "$tmp/vin" --out "$tmp/x.safetensors" --size 32
expect_fail "vae encode: size not a multiple of 8" "size 36 is not a multiple of 8" $DAP vae encode --vae $V --in "$tmp/vin" --out "$tmp/x.safetensors" --size 36
expect_fail "vae encode: missing input" "no such file or folder" $DAP vae encode --vae $V --in "$tmp/nope" --out "$tmp/x.safetensors"
expect_fail "vae encode: missing VAE" "cannot open" $DAP vae encode --vae "$tmp/nope.safetensors" --in "$tmp/vin" --out "$tmp/x.safetensors"
expect_fail "vae encode: no --vae" "vae FILE is required" $DAP vae encode --in "$tmp/vin" --out "$tmp/x.safetensors"
mkdir -p "$tmp/empty"
expect_fail "vae encode: folder without images" "no PNG or JPEG" $DAP vae encode --vae $V --in "$tmp/empty" --out "$tmp/x.safetensors"
cp "$tmp/vin/notes.txt" "$tmp/vin/broken.png"
expect_fail "vae encode: an unreadable image" "broken.png" $DAP vae encode --vae $V --in "$tmp/vin" --out "$tmp/x.safetensors" --size 32
rm -f "$tmp/vin/broken.png"
expect_fail "vae encode: out folder missing" "does not exist" $DAP vae encode --vae $V --in "$tmp/vin" --out "$tmp/no/x.safetensors" --size 32
[ ! -e "$tmp/x.safetensors" ] && ok "vae encode: nothing written on refusal" || bad "vae encode wrote on refusal"
expect_fail "vae decode: a VAE as --in" "pass it as --vae" $DAP vae decode --vae $V --in $V --out "$tmp/x.png"
expect_fail "vae decode: a DiT as --vae" "is a DiT checkpoint, not a VAE" $DAP vae decode --vae tests/ref/dit_small.safetensors --in "$tmp/lat.safetensors" --out "$tmp/x.png"
expect_fail "vae decode: bad --out" "expected a .png or .safetensors" $DAP vae decode --vae $V --in "$tmp/lat.safetensors" --out "$tmp/x.jpg"
# a 3-channel `latent` (1, 3, 2, 2), written by hand: header length, JSON header, 48 zero bytes
hdr='{"latent":{"dtype":"F32","shape":[1,3,2,2],"data_offsets":[0,48]}}'
while [ $(( ${#hdr} % 8 )) -ne 0 ]; do hdr="$hdr "; done
{ printf "\\x$(printf %02x ${#hdr})\\x00\\x00\\x00\\x00\\x00\\x00\\x00"; printf '%s' "$hdr"; head -c 48 /dev/zero; } > "$tmp/lat3c.safetensors"
expect_fail "vae decode: wrong latent channels" "expected \(B, 4, h, w\)" $DAP vae decode --vae $V --in "$tmp/lat3c.safetensors" --out "$tmp/x.png"
[ ! -e "$tmp/x.png" ] && ok "vae decode: nothing written on refusal" || bad "vae decode wrote on refusal"
expect_fail "vae: unknown subcommand" "unknown subcommand" $DAP vae frob
expect_fail "vae encode: bad flag" "unknown flag" $DAP vae encode --bogus 1
