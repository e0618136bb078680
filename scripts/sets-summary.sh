#!/usr/bin/env bash
# Mean +- std over distilled sets: the `dap eval --json` files of one method, one set per
# file (e.g. the distillation seeds of scripts/experiment.sh with SEEDS="0 1 2").
# Prints each set's mean (over its runs), then the mean +- std of the set means (the
# spread of the set's draw) and of all runs pooled. Population std, as dap eval prints.
#   scripts/sets-summary.sh out/experiment/dap-ipc10-convnet3.json out/experiment/dap-ipc10-s1-convnet3.json ...
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 EVAL.json..." >&2; exit 2; }
runs() { sed -n '/"runs"/,/\]/p' "$1"; } # the "runs" array: one "accuracy" per run
for f in "$@"; do # checked before anything is printed
  [ -r "$f" ] || { echo "sets-summary: cannot read $f" >&2; exit 1; }
  runs "$f" | grep '"accuracy":' >/dev/null || { echo "sets-summary: $f has no runs (not a dap eval --json file?)" >&2; exit 1; }
done
for f in "$@"; do
  runs "$f" | sed -n 's/^ *"accuracy": *\([-0-9.eE+]*\),*$/\1/p' | sed "s|^|$f |"
done | awk '
  { acc[$1] = acc[$1] " " $2; sum[$1] += $2; cnt[$1]++; all += $2; all2 += $2 * $2; n++
    if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
  END {
    for (i = 1; i <= k; i++) {
      f = order[i]; m = sum[f] / cnt[f]; ms += m; ms2 += m * m
      printf "%-60s %d runs: %6.2f  (%s )\n", f, cnt[f], m, acc[f]
    }
    mm = ms / k; sd = ms2 / k - mm * mm; sd = sd > 0 ? sqrt(sd) : 0
    am = all / n; asd = all2 / n - am * am; asd = asd > 0 ? sqrt(asd) : 0
    printf "over %d sets: %.2f +- %.2f (std of the set means); all %d runs: %.2f +- %.2f\n", k, mm, sd, n, am, asd
  }'
