# scripts/report.sh --table EXP_OUT (rivals-report.sh) on a small fake experiment folder: random
# sets named like the methods' and a hand-written table.tsv; the page's tables, grids, embedding
# and costs; refusals. With chromium installed, scripts/check-report.sh opens it too (sourced
# by tests/cli.sh).
if ! have_fmnist; then
  skip "report.sh: the comparison report on Fashion-MNIST" "dataset-fashion-mnist is not installed"
else
  X="$tmp/exp"; mkdir -p "$X"; s=0
  for m in random vanilla dap; do for ipc in 1 10; do s=$((s + 1))
    $DAP distill --data fmnist --method random --ipc 2 --seed $s --out "$X/$m-ipc$ipc" --quiet >/dev/null 2>&1 || bad "report: distill $m-ipc$ipc"
  done; done
  { printf 'set\tarch\tmean\tstd\tcommand\n'
    printf 'random-ipc1\tconvnet3\t51.2\t1.1\tdap eval a\n'; printf 'vanilla-ipc1\tconvnet3\t55.00\t0.90\tdap eval b\n'
    printf 'dap-ipc1\tconvnet3\t58.31\t0.42\tdap eval c\n';    printf 'random-ipc10\tconvnet3\t70.73\t0.35\tdap eval d\n'
    printf 'vanilla-ipc10\tconvnet3\t70.26\t0.40\tdap eval e\n'; printf 'dap-ipc10\tconvnet3\t76.78\t0.20\tdap eval f\n'
    printf 'dap-ipc10\tresnet18\t72.00\t1.00\tdap eval g\n';  printf 'dap-ipc10\tconvnet3-soft\t80.10\t0.00\tdap eval --runs 1 h\n'
    printf 'dap-ipc10-s1\tconvnet3\t76.10\t0.25\tdap eval i\n'; printf 'vanilla-ipc100to10\tconvnet3\t71.00\t0.30\tdap eval j\n'
    printf 'full\tconvnet3\t91.50\t0.10\tdap eval k\n';        printf 'odd<name>\tconvnet3\t12.00\t1.00\tdap eval <l>\n'
  } > "$X/table.tsv"
  printf 'method\tseconds_per_image\tpeak_rss_mib\tcommand\nvanilla\t0.45\t377\tdap distill v\ndap\t4.05\t400\tdap distill <d>\n' > "$X/cost.tsv"
  expect_ok "report --table on a fake experiment" env EMBED_CLASSES=0,1 EMBED_REAL=20 bash scripts/report.sh --table "$X"
  H="$X/report.html"
  grep -qF '<tr><td>dap</td><td>4.05</td><td>400</td></tr>' "$H" && grep -qF 'dap cost: dap distill &lt;d&gt;' "$H" \
    && ok "report: the costs measured alike (cost.tsv) and their commands" || bad "report: cost.tsv table"
  # the ConvNet-3 table first: methods as rows, IPC 1 and 10 as columns, mean ± std; seeds and
  # subsamples as rows of their own with a dash where they have no cell
  first=$(sed -n '/<table class=acc>/,/<\/table>/p' "$H" | sed '/<\/table>/q')
  echo "$first" | has -F '<tr><th>method</th><th>IPC 1</th><th>IPC 10</th></tr>' &&
    echo "$first" | has -F '<tr><td>random</td><td>51.20 ± 1.10</td><td>70.73 ± 0.35</td></tr>' &&
    echo "$first" | has -F '<tr><td>dap</td><td>58.31 ± 0.42</td><td>76.78 ± 0.20</td></tr>' &&
    echo "$first" | has -F '<tr><td>dap (seed 1)</td><td>–</td><td>76.10 ± 0.25</td></tr>' &&
    echo "$first" | has -F '<tr><td>vanilla (from IPC 100)</td><td>–</td><td>71.00 ± 0.30</td></tr>' &&
    [ "$(echo "$first" | grep -c '<tr><td>')" = 5 ] && ok "report: the ConvNet-3 table (methods x IPC)" || bad "report: the ConvNet-3 table: $first"
  grep -q '<h2>resnet18</h2>' "$H" && grep -q '<h2>convnet3-soft</h2>' "$H" &&
    sed -n '/<h2>convnet3-soft<\/h2>/,/<\/table>/p' "$H" | has -F '<tr><td>dap</td><td>80.10 (1 run)</td></tr>' &&
    ok "report: other architectures and soft-label cells in tables of their own; a single run says so" || bad "report: other architectures"
  grep -qF '<tr><td>full</td><td>convnet3</td><td>91.50 ± 0.10</td></tr>' "$H" && grep -qF 'odd&lt;name&gt;' "$H" &&
    ! grep -q 'odd<name>' "$H" && ok "report: unknown rows listed, escaped" || bad "report: unknown rows"
  n=0; for m in random vanilla dap; do for ipc in 1 10; do grep -qF "<img src=\"$m-ipc$ipc/grid.png\"" "$H" && n=$((n + 1)); done; done
  [ $n = 6 ] && ok "report: every method's grid per IPC" || bad "report: grids ($n of 6)"
  # the embedding: dap embed over the three IPC-10 sets, classes 0 and 1: 3 x 2 panels of 160 px
  # with labels (T-shirt/top: 69 px left, 11 px above; see tests/cli/embed.sh)
  grep -qF '<img src="embed-ipc10.png"' "$H" && grep -q 'PCA (not t-SNE) of the penultimate features' "$H" &&
    grep -q 'fitted per class on 20 real training images' "$H" &&
    [ "$(png_size "$X/embed-ipc10.png")" = "$((69 + 3 * 160 + 4 * 4))x$((11 + 2 * 160 + 3 * 4))" ] &&
    ok "report: the embedding (PCA of ConvNet-3 features, stated), 3 methods x 2 classes" ||
    bad "report: the embedding ($(png_size "$X/embed-ipc10.png"))"
  grep -q 'Columns: random (blue) vanilla (orange) dap (green)' "$H" &&
    [ "$(sed -n '/<th>coverage<\/th>/,/<\/table>/p' "$H" | grep -cE '<tr><td>(random|vanilla|dap)</td><td>[0-9.]+</td><td>[0-9.]+</td></tr>')" = 3 ] &&
    ok "report: the embedding's legend and coverage / spread per method" || bad "report: embedding legend and numbers"
  grep -A3 '<tr><td>dap</td>$' "$H" | has -E '^<td>[0-9.e-]+</td><td>[0-9.e-]+</td><td>[0-9.e-]+</td><td>[0-9.e-]+</td></tr>' &&
    ok "report: distillation time per method from the manifests" || bad "report: distillation time"
  expect_fail "report: no table.tsv" "table.tsv not found" bash scripts/report.sh --table "$tmp/nothing"
  mkdir -p "$tmp/badexp" && printf 'name\tacc\n' > "$tmp/badexp/table.tsv"
  expect_fail "report: a table.tsv of another shape" "expected the header 'set arch mean std command'" bash scripts/report.sh --table "$tmp/badexp"
  [ ! -e "$tmp/badexp/report.html" ] && ok "report: nothing written on a refusal" || bad "report: nothing written on a refusal"
  if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    expect_ok "check-report.sh accepts the comparison report" bash scripts/check-report.sh "$H"
    sed -i '/<tr><td>vanilla<\/td><td>55.00/d' "$H"
    expect_fail "check-report.sh: a method missing from the table" "no accuracy for vanilla" bash scripts/check-report.sh "$H"
  else
    skip "check-report.sh on the comparison report" "chromium is not installed"
  fi
fi
