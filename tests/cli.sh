#!/usr/bin/env bash
# Command-line smoke tests of build/dap: help text, errors on bad input, small jobs.
#   bash tests/cli.sh                      every tests/cli/*.sh
#   bash tests/cli.sh tests/cli/trust.sh   one file
# Ends with "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
DAP=./build/dap
pass=0; fail=0; skipped=0
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ok()  { echo "ok   $1"; pass=$((pass+1)); }
bad() { echo "FAIL $1"; fail=$((fail+1)); }
# has [GREP-FLAGS] PATTERN: grep -q that reads all its input (grep -q stops at the first
# match, and under pipefail the writer's SIGPIPE would fail the pipeline)
has() { grep "$@" >/dev/null; }
# skip NAME REASON: a test that cannot run here (printed, counted as skipped, never passed)
skip() { echo "SKIP $1: $2"; skipped=$((skipped+1)); }
# have_fmnist: whether the Fashion-MNIST package is installed (blocks that need it skip
# each of their tests by name otherwise)
have_fmnist() { [ -n "$($DAP info --data fmnist 2>/dev/null | head -1)" ]; }
# differ NAME A B: passes when the two folders differ (diff exit 1), fails when they are
# equal (0) and when diff itself fails (2: a missing folder)
differ() { local n=$1 rc; shift; diff -r -q -x manifest.json -x '.*' "$@" >/dev/null 2>&1; rc=$?
  case $rc in 1) ok "$n" ;; 0) bad "$n (identical)" ;; *) bad "$n (diff failed: exit $rc)" ;; esac; }
# png_size FILE: "WIDTHxHEIGHT" from the PNG's IHDR chunk
png_size() { od -An -tu1 -j16 -N8 "$1" 2>/dev/null | awk '{printf "%dx%d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}'; }
# expect_ok NAME CMD...: exit 0
expect_ok() { local n=$1; shift; if "$@" >"$tmp/out" 2>"$tmp/err"; then ok "$n"; else bad "$n (exit $?)"; cat "$tmp/err"; fi; }
# expect_fail NAME PATTERN CMD...: non-zero exit and stderr matching PATTERN
expect_fail() { local n=$1 pat=$2; shift 2
  if "$@" >"$tmp/out" 2>"$tmp/err"; then bad "$n (exit 0)";
  elif grep -qiE "$pat" "$tmp/err"; then ok "$n"; else bad "$n (stderr: $(head -c 300 "$tmp/err"))"; fi; }

expect_ok "dap --help" $DAP --help
expect_fail "unknown command" "unknown command" $DAP frobnicate
# the BLAS line: the kernel set in use; a user's OPENBLAS_CORETYPE is kept as given (and
# with DAP_BLAS_CORE=keep the library's own choice stays, without a restart)
if $DAP --version | has "^BLAS: OpenBLAS"; then ok "--version names the BLAS"; else bad "--version names the BLAS"; fi
if OPENBLAS_CORETYPE=Haswell $DAP --version | has "Haswell MAX_THREADS.*(OPENBLAS_CORETYPE=Haswell)$"; then
  ok "a user's OPENBLAS_CORETYPE is kept"; else bad "a user's OPENBLAS_CORETYPE is kept: $(OPENBLAS_CORETYPE=Haswell $DAP --version)"; fi
if DAP_BLAS_CORE=keep $DAP --version | has "set by dap"; then bad "DAP_BLAS_CORE=keep restarts"; else ok "DAP_BLAS_CORE=keep does not restart"; fi
# tests/cli.sh [FILE...]: the given tests/cli/ files only (distill.sh needs diffusion.sh's model)
files=("$@"); [ ${#files[@]} -gt 0 ] || files=(tests/cli/*.sh)
for f in "${files[@]}"; do [ -f "$f" ] && source "$f"; done
echo "$pass passed, $fail failed, $skipped skipped"
[ "$fail" -eq 0 ]
