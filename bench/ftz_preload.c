/*
 * ftz_preload.c: a preloadable constructor that sets flush-to-zero and denormals-are-zero
 * (MXCSR) before main; threads created later inherit it. To see what denormal assists cost
 * a whole workload (docs/benchmarks.md, "The GELU backward"):
 *   cc -shared -fPIC -O2 bench/ftz_preload.c -o build/ftz_preload.so
 *   LD_PRELOAD=build/ftz_preload.so build/bench_dit --config fm-p4-h256-d8 --measure train
 */
#include <xmmintrin.h>

__attribute__((constructor)) static void ftz_on(void) { _mm_setcsr(_mm_getcsr() | 0x8040); }
