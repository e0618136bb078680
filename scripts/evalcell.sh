# scripts/evalcell.sh: one cell of a results table, shared by experiment.sh and rivals.sh
# (sourced; they set DAP, OUT and TSV). A cell already in the TSV is skipped, and dap eval
# --resume keeps a cell's finished runs, so a killed table resumes where it stopped.
#   evalcell_run TAG NAME COLUMN DAP-EVAL-FLAGS...
# runs `$DAP eval --data fmnist FLAGS --json $OUT/NAME-COLUMN.json --resume --quiet`, keeps
# its output in $OUT/NAME-COLUMN.txt and appends "NAME COLUMN mean std command" to $TSV.
evalcell_run() {
  local tag=$1 name=$2 col=$3; shift 3
  grep -q "^$name	$col	" "$TSV" && return
  local cmd="$DAP eval --data fmnist $* --json $OUT/$name-$col.json --resume --quiet"
  $cmd > "$OUT/$name-$col.txt"
  local ms; ms=$(sed -n 's/.*accuracy \([0-9.]*\) +- \([0-9.]*\).*/\1\t\2/p' "$OUT/$name-$col.txt" | tail -1)
  printf '%s\t%s\t%s\t%s\n' "$name" "$col" "$ms" "$cmd" >> "$TSV"
  echo "$tag: $name $col: $ms"
}
