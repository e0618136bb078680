#!/bin/sh
# translate.sh (cuda-emu): turns a CUDA source into the C++ the emulator compiles:
#
#     tests/cuda-emu/translate.sh src/cuda/dit_cuda.cu > build-emu/emu/src/cuda/dit_cuda.cpp
#
# The one construct g++ cannot take is the launch, `kernel<<<grid, block, shmem, stream>>>(args)`;
# it becomes `EMU_LAUNCH(kernel, grid, block, shmem, stream)(args)` (cuda_runtime.h), wherever
# it is written: a statement, a macro body (`#define L1(k, n) k<<<...>>>`), a configuration
# spread over several lines (joined onto the first, blank lines keep the count). The output
# starts with a #line naming the .cu file, so compiler messages, __FILE__ / __LINE__ (CUDA
# error checks, the emulator's reports) and debuggers point at the original. A launch of
# anything but a plain kernel name (a template `k<T><<<`, an expression) and a `<<<` with no
# `>>>` stop the build with the file and line. POSIX sh and awk only.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 FILE.cu > FILE.cpp" >&2; exit 2; }
src=$1
[ -r "$src" ] || { echo "$0: cannot read $src" >&2; exit 2; }

awk -v src="$src" '
function die(msg) {
    printf "%s:%d: cuda-emu translate: %s\n", src, start, msg > "/dev/stderr"
    failed = 1
    exit 1
}
BEGIN { printf "#line 1 \"%s\"\n", src }
{
    line = $0
    start = NR
    extra = 0
    # a launch configuration that goes on past this line: join the lines up to its ">>>"
    while ((i = index(line, "<<<")) > 0 && index(substr(line, i + 3), ">>>") == 0) {
        if ((getline more) <= 0) die("a launch whose <<< has no >>>")
        line = line " " more
        extra++
    }
    while ((i = index(line, "<<<")) > 0) {
        rest = substr(line, i + 3)
        j = index(rest, ">>>")
        if (j == 0) die("a launch whose <<< has no >>>")
        pre = substr(line, 1, i - 1)
        cfg = substr(rest, 1, j - 1)
        post = substr(rest, j + 3)
        if (!match(pre, /[A-Za-z_][A-Za-z0-9_]*[ \t]*$/))
            die("a launch of something other than a kernel name (a template or an expression): " pre "<<<")
        name = substr(pre, RSTART, RLENGTH)
        sub(/[ \t]+$/, "", name)
        line = substr(pre, 1, RSTART - 1) "EMU_LAUNCH(" name ", " cfg ")" post
    }
    print line
    for (k = 0; k < extra; k++) print ""
}
END { if (failed) exit 1 }
' "$src"
