#!/usr/bin/env bash
# rivals-report.sh EXP_OUT (also: scripts/report.sh --table EXP_OUT): the comparison page of
# the methods in a folder that scripts/experiment.sh or scripts/rivals.sh (out/rivals) wrote.
# Reads EXP_OUT/table.tsv (set, arch, mean, std, command) and the set folders
# EXP_OUT/<method>-ipc<N>/ (grid.png, manifest.json); writes EXP_OUT/report.html: the accuracy
# table (methods as rows, IPC as columns, mean ± std) per architecture (convnet3-soft: the
# soft-label cells), every method's grid side by side per IPC, the 2-D embedding of
# `dap embed` over the IPC-$EMBED_IPC sets (PCA of ConvNet-3 features, fitted on real), and
# each method's distillation time from its manifest. Rows it does not know (full, other
# names) are listed apart.
# Check it in a browser with scripts/check-report.sh EXP_OUT/report.html.
#   EMBED=0            skip dap embed (the page then says so)
#   EMBED_IPC=10       the IPC of the sets embedded
#   EMBED_CLASSES=all  the classes embedded (rows of the figure), e.g. 0,1,2
#   EMBED_REAL=200     real training images per class (dap embed --real-per-class)
#   DATA=fmnist CLASSIFIER=models/fmnist-convnet3.safetensors   what dap embed compares against
set -euo pipefail
cd "$(dirname "$0")/.."
EXP=${1:?usage: scripts/rivals-report.sh EXP_OUT}
DAP=${DAP:-./build/dap}
EMBED=${EMBED:-1}; EMBED_IPC=${EMBED_IPC:-10}; EMBED_CLASSES=${EMBED_CLASSES:-all}; EMBED_REAL=${EMBED_REAL:-200}
DATA=${DATA:-fmnist}; CLASSIFIER=${CLASSIFIER:-models/fmnist-convnet3.safetensors}
TSV=$EXP/table.tsv
die() { echo "rivals-report: $*" >&2; exit 1; }
[ -f "$TSV" ] || die "$TSV not found (scripts/experiment.sh and scripts/rivals.sh write it)"
[ "$(head -1 "$TSV" | cut -f1-4)" = "$(printf 'set\tarch\tmean\tstd')" ] ||
  die "$TSV: expected the header 'set arch mean std command' (tab-separated), found '$(head -1 "$TSV")'"
esc() { sed 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g'; }

# The rows, classified: plain <m>-ipc<N>, a seed <m>-ipc<N>-s<S>, a subsample <m>-ipc<A>to<B>;
# anything else (full, other names, a mean that is no number) goes to "other".
# Out: kind, method label, ipc, arch, mean, std, set, runs (from the command's --runs; empty
# when it has none) (tab-separated), in the table's order.
rows() {
  awk -F'\t' 'NR > 1 && NF >= 4 {
    kind = "other"; m = $1; ipc = ""
    num = ($3 ~ /^[0-9]+(\.[0-9]+)?$/ && $4 ~ /^[0-9]+(\.[0-9]+)?$/)
    if (match($1, /-ipc[0-9]+to[0-9]+$/)) {
      m = substr($1, 1, RSTART - 1); s = substr($1, RSTART + 4); split(s, p, "to")
      kind = "sub"; m = m " (from IPC " p[1] ")"; ipc = p[2]
    } else if (match($1, /-ipc[0-9]+-s[0-9]+$/)) {
      m = substr($1, 1, RSTART - 1); s = substr($1, RSTART + 4); split(s, p, "-s")
      kind = "seed"; m = m " (seed " p[2] ")"; ipc = p[1]
    } else if (match($1, /-ipc[0-9]+$/)) {
      kind = "plain"; ipc = substr($1, RSTART + 4); m = substr($1, 1, RSTART - 1)
    }
    if (!num || m == "") kind = "other"
    runs = ""; if (match($5, /--runs [0-9]+/)) runs = substr($5, RSTART + 7, RLENGTH - 7) + 0
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", kind, m, ipc, $2, $3, $4, $1, runs
  }' "$TSV"
}
ROWS=$(rows)
[ -n "$ROWS" ] || die "$TSV has no rows yet"
# plain methods in the table's order, and the IPCs of their sets
METHODS=$(echo "$ROWS" | awk -F'\t' '$1 == "plain" && !seen[$2]++ {print $2}')
IPCS=$(echo "$ROWS" | awk -F'\t' '$1 == "plain" {print $3}' | sort -n -u)

# acc_table ARCH: methods (plain, then seeds and subsamples) as rows, IPC as columns
acc_table() {
  echo "$ROWS" | awk -F'\t' -v arch="$1" '
    $4 == arch && $1 != "other" {
      if (!($2 in seen)) { seen[$2] = 1; order[++nm] = $2 }
      if (!($3 in hasipc)) { hasipc[$3] = 1; ipcs[++ni] = $3 + 0 }
      cell[$2 SUBSEP $3] = $8 == "1" ? sprintf("%.2f (1 run)", $5) : sprintf("%.2f ± %.2f", $5, $6)
    }
    END {
      for (i = 1; i <= ni; i++) for (j = i + 1; j <= ni; j++) if (ipcs[j] < ipcs[i]) { t = ipcs[i]; ipcs[i] = ipcs[j]; ipcs[j] = t }
      printf "<table class=acc><tr><th>method</th>"
      for (i = 1; i <= ni; i++) printf "<th>IPC %d</th>", ipcs[i]
      print "</tr>"
      for (r = 1; r <= nm; r++) {
        printf "<tr><td>%s</td>", order[r]
        for (i = 1; i <= ni; i++) { k = order[r] SUBSEP ipcs[i]; printf "<td>%s</td>", (k in cell) ? cell[k] : "–" }
        print "</tr>"
      }
      print "</table>"
    }'
}

# the embedding: dap embed over the IPC-$EMBED_IPC sets of every plain method present
EMB_SETS=(); EMB_NAMES=()
for m in $METHODS; do
  [ -d "$EXP/$m-ipc$EMBED_IPC" ] && EMB_SETS+=(--set "$m=$EXP/$m-ipc$EMBED_IPC") && EMB_NAMES+=("$m")
done
EMB_PNG=embed-ipc$EMBED_IPC.png; EMB_NOTE=""
if [ "$EMBED" != 1 ]; then
  EMB_NOTE="not made (EMBED=$EMBED)"
elif [ ${#EMB_SETS[@]} -eq 0 ]; then
  EMB_NOTE="not made: no IPC $EMBED_IPC set folder in $EXP"
else
  echo "rivals-report: dap embed over ${EMB_NAMES[*]} (IPC $EMBED_IPC)" >&2
  "$DAP" embed --data "$DATA" --classifier "$CLASSIFIER" "${EMB_SETS[@]}" --classes "$EMBED_CLASSES" \
    --real-per-class "$EMBED_REAL" --out "$EXP/$EMB_PNG" --tsv "$EXP/embed-ipc$EMBED_IPC.tsv" > "$EXP/embed-ipc$EMBED_IPC.txt" ||
    die "dap embed failed (see above)"
fi

# seconds per class of a set, from its manifest: "total per-class classes" or nothing
cost() {
  [ -f "$1/manifest.json" ] || return 0
  tr -d '\n' < "$1/manifest.json" | grep -o '{[^{}]*"class"[^{}]*}' | sed -n 's/.*"seconds": *\([0-9.eE+-]*\).*/\1/p' |
    awk '{s += $1; n++} END {if (n) printf "%.4g\t%.4g\t%d\n", s, s / n, n}'
}

{
  echo "<!doctype html><html><head><meta charset=utf-8><meta name=dap-report content=rivals>"
  echo "<title>dap: the methods compared ($(basename "$EXP"))</title>"
  echo "<style>body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse;margin-bottom:1em}"
  echo "td,th{border:1px solid #999;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
  echo "img{image-rendering:pixelated}.grids{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}"
  echo ".grids img{height:320px;width:auto}figure{margin:0}</style></head><body>"
  echo "<h1>The methods compared: $(basename "$EXP" | esc)</h1>"
  echo "<p>From <code>$(echo "$TSV" | esc)</code>: each set trains the architecture from scratch several times;"
  echo "test accuracy (%), mean ± std over the runs (the <code>dap eval</code> commands are listed at the end).</p>"
  # ConvNet-3 first (the table check-report reads), then the other architectures
  ARCHS=$(echo "$ROWS" | awk -F'\t' '$1 != "other" && !seen[$4]++ {print ($4 == "convnet3" ? 0 : 1) "\t" NR "\t" $4}' | sort -n -k1,1 -k2,2 | cut -f3)
  for a in $ARCHS; do echo "<h2>$a</h2>"; acc_table "$a"; done
  OTHER=$(echo "$ROWS" | awk -F'\t' '$1 == "other"')
  if [ -n "$OTHER" ]; then
    echo "<h2>Other rows</h2><table><tr><th>set</th><th>arch</th><th>accuracy (%)</th></tr>"
    echo "$OTHER" | awk -F'\t' 'function h(s) { gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); gsub(/>/, "\\&gt;", s); return s }
      {printf "<tr><td>%s</td><td>%s</td><td>%s ± %s</td></tr>\n", h($7), h($4), h($5), h($6)}'
    echo "</table>"
  fi

  echo "<h2>Samples (one row per class)</h2>"
  for ipc in $IPCS; do
    echo "<h3>IPC $ipc</h3><div class=grids>"
    for m in $METHODS; do
      [ -f "$EXP/$m-ipc$ipc/grid.png" ] && echo "<figure><img src=\"$m-ipc$ipc/grid.png\" alt=\"$m IPC $ipc samples\"><figcaption>$m</figcaption></figure>"
    done
    echo "</div>"
  done

  echo "<h2>Representative and diverse? A 2-D embedding (IPC $EMBED_IPC)</h2>"
  if [ -n "$EMB_NOTE" ]; then
    echo "<p>The embedding was $EMB_NOTE.</p>"
  else
    echo "<p>PCA (not t-SNE) of the penultimate features of the ConvNet-3 classifier <code>$(echo "$CLASSIFIER" | esc)</code>,"
    echo "fitted per class on $EMBED_REAL real training images of that class only; every set is projected on the same"
    echo "two axes. Rows: classes ($EMBED_CLASSES); columns: the methods. Real images light grey, the set's images in"
    echo "colour; the same axes along a row; the thin lines cross at the real mean. Made by"
    echo "<code>dap embed ${EMB_SETS[*]//$EXP\//} --classes $EMBED_CLASSES --real-per-class $EMBED_REAL</code>; the coordinates are in"
    echo "<code>embed-ipc$EMBED_IPC.tsv</code>, the per-class numbers in <code>embed-ipc$EMBED_IPC.txt</code>.</p>"
    echo "<p>Columns: $(sed -n 's/.*; columns: \(.*\)) and .*/\1/p' "$EXP/embed-ipc$EMBED_IPC.txt" | esc).</p>"
    echo "<figure><img src=\"$EMB_PNG\" alt=\"PCA embedding of real and synthetic features, IPC $EMBED_IPC\" style=\"max-width:100%\"></figure>"
    echo "<p>Mean over the classes, in the full feature space: <b>coverage</b>, the mean distance from a real image to the"
    echo "nearest image of the set (smaller: the set is closer to every real image, more representative); <b>spread</b>,"
    echo "the mean pairwise distance within the set (larger: more diverse; the real sample's own spread for comparison).</p>"
    echo "<table><tr><th>set</th><th>coverage</th><th>spread</th></tr>"
    awk '/^mean over the/ {on = 1; next} on && $1 == "all" {printf "<tr><td>%s</td><td>%s</td><td>%s</td></tr>\n", $2, $3, $4}' \
      "$EXP/embed-ipc$EMBED_IPC.txt"
    echo "</table>"
  fi

  echo "<h2>Cost: distillation time</h2>"
  echo "<p>Seconds of <code>dap distill</code> as each set's <code>manifest.json</code> records them: the total over"
  echo "the classes, and per class.</p><table><tr><th>method</th>"
  for ipc in $IPCS; do echo "<th>IPC $ipc: total s</th><th>s / class</th>"; done
  echo "</tr>"
  for m in $METHODS; do
    echo "<tr><td>$m</td>"
    for ipc in $IPCS; do
      c=$(cost "$EXP/$m-ipc$ipc")
      if [ -n "$c" ]; then echo "$c" | awk -F'\t' '{printf "<td>%s</td><td>%s</td>", $1, $2}'; else echo "<td>–</td><td>–</td>"; fi
    done
    echo "</tr>"
  done
  echo "</table>"

  if [ -f "$EXP/cost.tsv" ]; then # scripts/rivals.sh's cost step: every method timed alike
    echo "<p>Those times are what each run took under its machine's load at the time. Measured alike (one class at"
    echo "IPC 10, one thread, one method at a time; <code>cost.tsv</code>, commands below):</p>"
    echo "<table><tr><th>method</th><th>seconds per image</th><th>peak memory (MiB)</th></tr>"
    awk -F'\t' 'function h(s) { gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); gsub(/>/, "\\&gt;", s); return s }
      NR > 1 {printf "<tr><td>%s</td><td>%s</td><td>%s</td></tr>\n", h($1), h($2), h($3)}' "$EXP/cost.tsv"
    echo "</table>"
  fi
  echo "<details><summary>Commands (table.tsv)</summary><pre>"
  awk -F'\t' 'NR > 1 {print $1 " " $2 ": " $5}' "$TSV" | esc
  [ -f "$EXP/cost.tsv" ] && awk -F'\t' 'NR > 1 {print $1 " cost: " $4}' "$EXP/cost.tsv" | esc
  echo "</pre></details></body></html>"
} > "$EXP/report.html.tmp"
mv "$EXP/report.html.tmp" "$EXP/report.html"
echo "rivals-report: wrote $EXP/report.html"
