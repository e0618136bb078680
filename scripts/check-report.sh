#!/usr/bin/env bash
# Opens a report in a real browser (Debian's chromium, headless) and checks what a reader
# would see: the page parses, the accuracy table has a row per method with a number, and
# every image (sample grids, the embedding) actually decoded (naturalWidth > 0). Writes a
# screenshot next to the report. Not part of `make test` (it needs chromium).
# Two kinds of report: the demo's (scripts/report.sh; methods random, vanilla, dap) and the
# comparison page (scripts/rivals-report.sh; its methods are the plain <method>-ipc<N>
# ConvNet-3 rows of the table.tsv beside it, each needing a number in the first table).
#   scripts/check-report.sh [REPORT]   (default out/demo/report.html)
set -euo pipefail
cd "$(dirname "$0")/.."
REPORT=${1:-out/demo/report.html}
[ -f "$REPORT" ] || { echo "check-report: $REPORT not found (run make demo first)" >&2; exit 1; }
BROWSER=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$BROWSER" ]; then
  echo "check-report: chromium not installed; installing it (Debian package chromium)" >&2
  [ "$(id -u)" = 0 ] || { echo "check-report: run as root or install chromium" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  BROWSER=$(command -v chromium)
fi
DIR=$(cd "$(dirname "$REPORT")" && pwd)
URL="file://$DIR/$(basename "$REPORT")"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP" "$DIR/.check-report-probe.html"' EXIT
FLAGS=(--headless --no-sandbox --disable-gpu --allow-file-access-from-files
       --user-data-dir="$TMP/profile" --virtual-time-budget=5000)

# A probe page loads the report in an iframe (same file:// origin) and writes what the
# browser rendered into its own DOM, which --dump-dom prints after the load.
cat > "$DIR/.check-report-probe.html" <<EOF
<!doctype html><html><body><pre id=out>pending</pre>
<iframe id=f src="$(basename "$REPORT")" width=1200 height=900></iframe>
<script>
document.getElementById('f').onload = function () {
  var d = this.contentDocument, out = [];
  if (!d) { document.getElementById('out').textContent = 'ERROR no document'; return; }
  var imgs = d.querySelectorAll('img');
  out.push('images ' + imgs.length);
  imgs.forEach(function (im) { out.push('img ' + im.getAttribute('src') + ' ' + im.naturalWidth + 'x' + im.naturalHeight); });
  var rows = d.querySelectorAll('table')[0] ? d.querySelectorAll('table')[0].querySelectorAll('tr') : [];
  rows.forEach(function (r, i) {
    if (!i) return;
    var c = [];
    for (var k = 0; k < r.cells.length; k++) c.push(r.cells[k].textContent);
    out.push('row ' + c.join(' | '));
  });
  var kind = d.querySelector('meta[name=dap-report]');
  out.push('kind ' + (kind ? kind.getAttribute('content') : 'demo'));
  out.push('title ' + d.title);
  document.getElementById('out').textContent = out.join('\n');
};
</script></body></html>
EOF
"$BROWSER" "${FLAGS[@]}" --dump-dom "file://$DIR/.check-report-probe.html" 2>"$TMP/err" > "$TMP/dom" || {
  echo "check-report: chromium failed:" >&2; tail -5 "$TMP/err" >&2; exit 1; }
sed -n '/<pre id="out">/,/<\/pre>/p' "$TMP/dom" | sed 's/<[^>]*>//g' > "$TMP/probe"
cat "$TMP/probe"
fail=0
grep -q '^images [1-9]' "$TMP/probe" || { echo "check-report: FAIL no images rendered" >&2; fail=1; }
if grep -E '^img ' "$TMP/probe" | grep ' 0x0$' >/dev/null; then
  echo "check-report: FAIL an image did not decode:" >&2; grep ' 0x0$' "$TMP/probe" >&2; fail=1
fi
NUM='[0-9]+\.[0-9]+( ± [0-9]+\.[0-9]+| \(1 run\))'   # mean ± std, or a single run's accuracy
if grep -q '^kind rivals$' "$TMP/probe"; then
  # every plain ConvNet-3 method of the table.tsv beside the report: a row with a number in
  # some IPC column; every row of the table: at least one number
  TSV="$(dirname "$REPORT")/table.tsv"
  [ -f "$TSV" ] || { echo "check-report: FAIL $TSV (the comparison's data) not found" >&2; fail=1; }
  methods=$(awk -F'\t' 'NR > 1 && $2 == "convnet3" && $1 ~ /-ipc[0-9]+$/ {sub(/-ipc[0-9]+$/, "", $1); if (!seen[$1]++) print $1}' "$TSV" 2>/dev/null)
  [ -n "$methods" ] || { echo "check-report: FAIL no <method>-ipc<N> convnet3 row in $TSV" >&2; fail=1; }
  has="\|.* $NUM( \||$)"     # a number in some column
  grep -Eq '^img [^ ]*embed-ipc[0-9]+\.png [1-9][0-9]*x[1-9]' "$TMP/probe" ||
    { echo "check-report: FAIL the embedding image is missing or did not decode" >&2; fail=1; }
else
  methods="random vanilla dap" has="\| $NUM"   # the demo's table: the number in the first column
fi
# each method a row with an accuracy, and no row without one
for m in $methods; do
  grep -Eq "^row $m $has" "$TMP/probe" || { echo "check-report: FAIL no accuracy for $m in the table" >&2; fail=1; }
done
if grep -E '^row ' "$TMP/probe" | grep -Ev "^row [^|]+ $has" >/dev/null; then
  echo "check-report: FAIL a table row without an accuracy:" >&2
  grep -E '^row ' "$TMP/probe" | grep -Ev "^row [^|]+ $has" >&2; fail=1
fi
"$BROWSER" "${FLAGS[@]}" --window-size=1200,1600 --screenshot="$DIR/report.png" "$URL" 2>>"$TMP/err" >/dev/null ||
  { echo "check-report: screenshot failed" >&2; fail=1; }
[ "$fail" = 0 ] && echo "check-report: OK ($URL rendered in $($BROWSER --version 2>/dev/null | head -1); screenshot $DIR/report.png)"
exit "$fail"
