#!/usr/bin/env bash
# Runs the whole suite: the unit tests (optimised build), the same tests under
# AddressSanitizer + UBSan (slow model tests skipped there), and the command-line smoke
# tests. Ends with one line "N passed, N failed, N skipped" (a skipped test printed
# "SKIP name: reason"); exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
pass=0; fail=0; skip=0
count() { # parse the runner's closing line; a part that never printed it counts as a failure
  local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$1" | tail -1)
  if [ -z "$line" ]; then echo "FAIL $1: no closing 'N passed, N failed, N skipped' line"; fail=$((fail+1)); return; fi
  pass=$((pass + $(echo "$line" | awk '{print $1}')))
  fail=$((fail + $(echo "$line" | awk '{print $3}')))
  skip=$((skip + $(echo "$line" | awk '{print $5}')))
}
log=$(mktemp -d)
echo "== unit tests (build/)"
OMP_NUM_THREADS=2 ./build/dap_tests 2>&1 | tee "$log/unit.txt"; count "$log/unit.txt"
echo "== unit tests under ASan/UBSan (build-san/)"
OMP_NUM_THREADS=2 DAP_TEST_FAST=1 ASAN_OPTIONS=detect_leaks=1 ./build-san/dap_tests 2>&1 | tee "$log/san.txt"; count "$log/san.txt"
echo "== command-line tests"
bash tests/cli.sh 2>&1 | tee "$log/cli.txt"; count "$log/cli.txt"
grep -h '^SKIP ' "$log"/*.txt || true
echo "$pass passed, $fail failed, $skip skipped"
rm -rf "$log"
[ "$fail" -eq 0 ]
