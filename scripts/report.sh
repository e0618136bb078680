#!/usr/bin/env bash
# report.sh OUT IPC MODEL RUNS EPOCHS: prints the demo's table and writes OUT/report.html
# (sample grid per method, the accuracy table, per-class timings/energies and scores).
# report.sh --table EXP_OUT: the comparison page of an experiment folder instead (rivals-report.sh).
set -euo pipefail
[ "${1:-}" = --table ] && exec "$(dirname "$0")/rivals-report.sh" "${@:2}"
OUT=$1; IPC=$2; MODEL=$3; RUNS=$4; EPOCHS=$5
METHODS=${METHODS:-random vanilla dap}
acc() { sed -n 's/.*accuracy \([0-9.]*\) +- \([0-9.]*\).*/\1 ± \2/p' "$OUT/eval-$1.txt" | tail -1; }
score() { [ -f "$OUT/score-$1.txt" ] && sed -n "s/^overall *//p" "$OUT/score-$1.txt" | head -1 || true; }
printf '\n%-10s %-22s %s\n' method "ConvNet-3 test acc (%)" "scores (overall)"
for m in $METHODS; do printf '%-10s %-22s %s\n' "$m" "$(acc $m)" "$(score $m)"; done
{
  echo "<!doctype html><html><head><meta charset=utf-8><title>dap demo: Fashion-MNIST IPC $IPC</title>"
  echo "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
  echo "td,th{border:1px solid #999;padding:4px 8px;text-align:right}img{image-rendering:pixelated;width:320px}"
  echo ".grids{display:flex;flex-wrap:wrap;gap:16px}</style></head><body>"
  echo "<h1>dap demo: Fashion-MNIST, IPC $IPC</h1>"
  echo "<p>Model <code>$MODEL</code>. Each set trains ConvNet-3 from scratch (hard labels, $EPOCHS epochs,"
  echo "SGD) $RUNS times; accuracy on the real test set, mean ± std.</p>"
  echo "<h2>Accuracy</h2><table><tr><th>method</th><th>ConvNet-3 test accuracy (%)</th><th>scores</th></tr>"
  for m in $METHODS; do echo "<tr><td>$m</td><td>$(acc $m)</td><td>$(score $m)</td></tr>"; done
  echo "</table><h2>Samples (one row per class)</h2><div class=grids>"
  for m in $METHODS; do echo "<figure><img src=\"$m-ipc$IPC/grid.png\" alt=\"$m samples\"><figcaption>$m</figcaption></figure>"; done
  echo "</div><h2>Per class</h2>"
  for m in $METHODS; do
    [ "$m" = random ] && continue
    echo "<h3>$m</h3><table><tr><th>class</th><th>seconds</th><th>energy (first guided step)</th><th>energy (last)</th></tr>"
    tr -d '\n' < "$OUT/$m-ipc$IPC/manifest.json" | grep -o '{[^{}]*"class"[^{}]*}' | while read -r obj; do
      name=$(echo "$obj" | sed -n 's/.*"name": *"\([^"]*\)".*/\1/p')
      sec=$(echo "$obj" | sed -n 's/.*"seconds": *\([0-9.e+-]*\).*/\1/p')
      e1=$(echo "$obj" | sed -n 's/.*"energy_first_guided_step": *\([0-9.e+-]*\).*/\1/p')
      e2=$(echo "$obj" | sed -n 's/.*"energy_last_guided_step": *\([0-9.e+-]*\).*/\1/p')
      printf '<tr><td>%s</td><td>%.1f</td><td>%s</td><td>%s</td></tr>\n' "$name" "$sec" "${e1:--}" "${e2:--}"
    done
    echo "</table>"
  done
  for m in $METHODS; do
    [ -f "$OUT/score-$m.txt" ] && { echo "<h3>scores: $m</h3><pre>"; cat "$OUT/score-$m.txt"; echo "</pre>"; }
  done
  echo "</body></html>"
} > "$OUT/report.html.tmp"
mv "$OUT/report.html.tmp" "$OUT/report.html"
