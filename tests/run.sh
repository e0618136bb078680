#!/usr/bin/env bash
# Runs the whole suite: the unit tests (optimised build), the same tests under
# AddressSanitizer + UBSan (slow model tests skipped there), and the command-line smoke
# tests. Ends with one line "N passed, N failed"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
pass=0; fail=0
count() { # parse the runner's closing line
  local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
  if [ -z "$line" ]; then fail=$((fail+1)); return; fi
  pass=$((pass + $(echo "$line" | awk '{print $1}')))
  fail=$((fail + $(echo "$line" | awk '{print $3}')))
}
log=$(mktemp -d)
echo "== unit tests (build/)"
OMP_NUM_THREADS=2 ./build/dap_tests 2>&1 | tee "$log/unit.txt"; count "$log/unit.txt"
echo "== unit tests under ASan/UBSan (build-san/)"
OMP_NUM_THREADS=2 DAP_TEST_FAST=1 ASAN_OPTIONS=detect_leaks=1 ./build-san/dap_tests 2>&1 | tee "$log/san.txt"; count "$log/san.txt"
echo "== command-line tests"
bash tests/cli.sh 2>&1 | tee "$log/cli.txt"; count "$log/cli.txt"
rm -rf "$log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
