# I/O commands (sourced by tests/cli.sh): dap info, dap inspect.
if have_fmnist; then
  expect_ok "info fmnist" $DAP info --data fmnist
  grep -q "Ankle boot *6000" "$tmp/out" && ok "info fmnist lists 6000 Ankle boot" || bad "info fmnist output: $(head -c 300 "$tmp/out")"
  expect_ok "info fmnist test --grid" $DAP info --data fmnist --split test --grid "$tmp/grid.png" --per-class 4
  head -c 4 "$tmp/grid.png" 2>/dev/null | has "PNG" && ok "info --grid wrote a PNG" || bad "info --grid wrote no PNG"
  expect_fail "info bad split" "split" $DAP info --data fmnist --split validation
else
  skip "io.sh: dap info on Fashion-MNIST" "dataset-fashion-mnist is not installed"
fi
expect_fail "info missing dataset" "not fmnist" $DAP info --data "$tmp/nope"
expect_fail "info bad flag" "unknown flag" $DAP info --frobnicate
expect_ok "inspect fixture" $DAP inspect tests/ref/io_tiny.safetensors
grep -q "BF16" "$tmp/out" && grep -q "14 parameters" "$tmp/out" && ok "inspect lists dtypes and parameters" \
  || bad "inspect output: $(head -c 300 "$tmp/out")"
printf 'not a safetensors file at all' > "$tmp/bad.safetensors"
expect_fail "inspect bad file" "header length" $DAP inspect "$tmp/bad.safetensors"
expect_fail "inspect missing file" "cannot open" $DAP inspect "$tmp/none.safetensors"
expect_fail "inspect no argument" "expected one" $DAP inspect
expect_fail "inspect bad flag" "unknown flag" $DAP inspect --bogus x
