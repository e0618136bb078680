#!/usr/bin/env bash
# Runs the whole suite: the unit tests (optimised build), the same tests under
# AddressSanitizer + UBSan (slow model tests skipped there), the CUDA backend's tests on the
# CPU emulator (tests/cuda-emu), and the command-line smoke tests. Ends with one line "N passed, N failed, N skipped" (a skipped test printed
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
echo "== the CUDA backend's tests on the CPU (build-emu/, tests/cuda-emu)"
./build-emu/emu_selftest 2>&1 | tee "$log/emu-self.txt"; count "$log/emu-self.txt"
# 8 GiB of emulated device memory: DiT-XL/2 (a minute here) is left to make test-emu
DAP_EMU_MEM_MB=8192 ./build-emu/dap_tests device_select cuda 2>&1 | tee "$log/emu.txt"; count "$log/emu.txt"
# again with each stream's work as late as CUDA allows, blocks and threads last first, and each
# DiT state buffer an allocation of its own (an overrun meets guard bytes, not the next buffer)
DAP_EMU_ASYNC=1 DAP_EMU_REVERSE=1 DAP_CUDA_SPLIT_STATE=1 DAP_EMU_MEM_MB=8192 ./build-emu/dap_tests device_select cuda 2>&1 |
  tee "$log/emu-async.txt"; count "$log/emu-async.txt"
echo "== command-line tests"
bash tests/cli.sh 2>&1 | tee "$log/cli.txt"; count "$log/cli.txt"
grep -h '^SKIP ' "$log"/*.txt || true
echo "$pass passed, $fail failed, $skip skipped"
rm -rf "$log"
[ "$fail" -eq 0 ]
