# dap embed: two tiny random sets on three classes; the PNG's size, the TSV's rows, the printed
# numbers, determinism, and refusals of bad input before any work (sourced by tests/cli.sh)
if ! have_fmnist; then
  skip "embed.sh: dap embed on Fashion-MNIST" "dataset-fashion-mnist is not installed"
else
  expect_ok "embed: set a (random ipc 2)" $DAP distill --data fmnist --method random --ipc 2 --seed 0 --out "$tmp/emb-a" --quiet
  expect_ok "embed: set b (random ipc 3)" $DAP distill --data fmnist --method random --ipc 3 --seed 1 --out "$tmp/emb-b" --quiet
  E=(--real-per-class 20 --panel 48 --threads 2)
  expect_ok "embed two sets, classes 0,3,7" $DAP embed --set a="$tmp/emb-a" --set=b="$tmp/emb-b" --classes 0,3,7 "${E[@]}" \
    --out "$tmp/emb.png" --tsv "$tmp/emb.tsv"
  cp "$tmp/out" "$tmp/emb.out"
  # 3 rows x 2 columns of 48-px panels with 4-px gaps, the class names left (the longest,
  # T-shirt/top, 11 characters of 6 px less one, + 4) and the set names above (7 + 4 px):
  # 69 + 2*48 + 3*4 wide, 11 + 3*48 + 4*4 high
  [ "$(png_size "$tmp/emb.png")" = 177x171 ] && grep -q "wrote $tmp/emb.png (177x171 px" "$tmp/emb.out" &&
    ok "embed png is 177x171 (2 sets x 3 classes, labelled)" || bad "embed png size $(png_size "$tmp/emb.png"), want 177x171"
  # TSV: a header, then per class 20 real points, 2 of a, 3 of b, each with two finite numbers
  counts=$(awk -F'\t' 'NR > 1 && NF == 4 && $3 ~ /^-?[0-9.]+(e[-+][0-9]+)?$/ && $4 ~ /^-?[0-9.]+(e[-+][0-9]+)?$/ {n[$1 " " $2]++}
    END {for (k in n) print k, n[k]}' "$tmp/emb.tsv" | sort | tr '\n' ',')
  [ "$(head -1 "$tmp/emb.tsv")" = "$(printf 'class\tset\tx\ty')" ] && [ "$(wc -l < "$tmp/emb.tsv")" -eq 76 ] &&
    [ "$counts" = "0 a 2,0 b 3,0 real 20,3 a 2,3 b 3,3 real 20,7 a 2,7 b 3,7 real 20," ] \
    && ok "embed tsv: header, 20 real + 2 + 3 points per class" || bad "embed tsv rows: $(wc -l < "$tmp/emb.tsv") lines, $counts"
  # the real points are centred by the PCA: their mean is 0 on both axes, per class
  awk -F'\t' '$2 == "real" {sx[$1] += $3; sy[$1] += $4; n[$1]++; ax[$1] += ($3 < 0 ? -$3 : $3)}
    END {for (k in n) if ((sx[k] < 0 ? -sx[k] : sx[k]) > 1e-3 * ax[k] || (sy[k] < 0 ? -sy[k] : sy[k]) > 1e-3 * ax[k]) bad = 1; exit bad}' \
    "$tmp/emb.tsv" && ok "embed: real points centred (PCA fitted on real)" || bad "embed: real points not centred"
  # the printed numbers: per class and set a coverage and a spread; the means over classes
  grep -Eq '^Dress +a +2 +[0-9.e+]+ +[0-9.e+]+$' "$tmp/emb.out" && grep -Eq '^all +b +[0-9.e+]+ +[0-9.e+]+$' "$tmp/emb.out" &&
    grep -q 'PCA of the 2048-d penultimate features' "$tmp/emb.out" && grep -q 'full 2048-d feature space' "$tmp/emb.out" \
    && ok "embed prints coverage and spread per class and set" || bad "embed output: $(head -c 600 "$tmp/emb.out")"
  grep -q 'columns: a (blue) b (orange)' "$tmp/emb.out" && ok "embed names the columns" || bad "embed names the columns"
  expect_ok "embed again" $DAP embed --set a="$tmp/emb-a" --set b="$tmp/emb-b" --classes 0,3,7 "${E[@]}" --out "$tmp/emb2.png" --tsv "$tmp/emb2.tsv"
  cmp -s "$tmp/emb.tsv" "$tmp/emb2.tsv" && cmp -s "$tmp/emb.png" "$tmp/emb2.png" && ok "embed is deterministic" || bad "embed is deterministic"
  # a set without one class folder: refused when that class is shown, fine when it is not
  cp -r "$tmp/emb-a" "$tmp/emb-c" && rm -rf "$tmp/emb-c/Dress"
  expect_fail "embed: a set without a shown class" "error: --set c=.*emb-c has no images of class 3 \(Dress\).*Dress is missing" \
    $DAP embed --set a="$tmp/emb-a" --set c="$tmp/emb-c" --classes 0,3 "${E[@]}" --out "$tmp/bad.png" --tsv "$tmp/bad.tsv"
  [ ! -e "$tmp/bad.png" ] && [ ! -e "$tmp/bad.tsv" ] && ok "embed: nothing written on a refusal" || bad "embed: nothing written on a refusal"
  expect_ok "embed: the missing class not shown" $DAP embed --set c="$tmp/emb-c" --classes 0,7 "${E[@]}" --out "$tmp/c.png"
  expect_fail "embed: missing set folder" "error: --set x=$tmp/nope: .*is not a folder" $DAP embed --set x="$tmp/nope" --out "$tmp/bad.png"
  expect_fail "embed: set without a name" "expected NAME=DIR" $DAP embed --set "$tmp/emb-a" --out "$tmp/bad.png"
  expect_fail "embed: set named twice" "the name 'a' is given twice" $DAP embed --set a="$tmp/emb-a" --set a="$tmp/emb-b" --out "$tmp/bad.png"
  expect_fail "embed: set named real" "'real' is taken" $DAP embed --set real="$tmp/emb-a" --out "$tmp/bad.png"
  expect_fail "embed: no set" "error: --set NAME=DIR is required" $DAP embed --out "$tmp/bad.png"
  expect_fail "embed: no --out" "error: --out FILE.png is required" $DAP embed --set a="$tmp/emb-a"
  expect_fail "embed: --out in a missing folder" "out.*$tmp/nodir" $DAP embed --set a="$tmp/emb-a" --out "$tmp/nodir/e.png"
  expect_fail "embed: class out of range" "error: --classes: expected 'all' or class indices in 0..9" $DAP embed --set a="$tmp/emb-a" --classes 0,10 --out "$tmp/bad.png"
  expect_fail "embed: --real-per-class 2" "error: --real-per-class must be in 3..100000" $DAP embed --set a="$tmp/emb-a" --real-per-class 2 --out "$tmp/bad.png"
  expect_fail "embed: not a classifier" "fmnist-dit.safetensors: not a dap classifier checkpoint" \
    $DAP embed --set a="$tmp/emb-a" --classifier models/fmnist-dit.safetensors --out "$tmp/bad.png"
  # a classifier of another shape: a 3-class teacher (one epoch on three class folders)
  mkdir -p "$tmp/emb-three" && cp -r "$tmp/emb-b/Trouser" "$tmp/emb-b/Bag" "$tmp/emb-b/Coat" "$tmp/emb-three/"
  expect_ok "embed: a 3-class teacher" $DAP teacher --data "$tmp/emb-three" --arch convnet3 --epochs 1 --quiet --out "$tmp/t3.safetensors"
  expect_fail "embed: a classifier of the wrong shape" "error: --classifier .*t3.safetensors takes 1x28x28 images .* into 3 classes; the data fmnist has 1x28x28 images in 10 classes" \
    $DAP embed --set a="$tmp/emb-a" --classifier "$tmp/t3.safetensors" --out "$tmp/bad.png"
  expect_fail "score: a classifier of the wrong shape" "error: --classifier .*t3.safetensors takes 1x28x28 images .* into 3 classes; the data fmnist has 1x28x28 images in 10 classes" \
    $DAP score --set "$tmp/emb-a" --classifier "$tmp/t3.safetensors" --json "$tmp/bad.json"
  [ ! -e "$tmp/bad.png" ] && [ ! -e "$tmp/bad.json" ] && ok "embed, score: nothing written on a refusal" || bad "embed, score: nothing written on a refusal"
fi
