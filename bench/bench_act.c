/*
 * bench_act.c: the GELU forward and backward, nanoseconds per value, on 1M equal inputs
 * per value of x and on normal inputs of growing spread. DAP_BENCH_FTZ=1 sets
 * flush-to-zero and denormals-are-zero first, which shows where denormal assists cost.
 *   cc ... bench/bench_act.c build/libdap.a ... (docs/benchmarks.md, "The GELU backward")
 */
#include <stdio.h>
#include <stdlib.h>
#include <xmmintrin.h>

#include "core/blas.h"
#include "core/core.h"
#include "ops/ops.h"

static double ns_per_value(void (*fwd)(float *, const float *, size_t), float *g, const float *d,
                           const float *x, float *o, size_t n, int backward) {
    const int reps = 10;
    if (backward) dap_gelu_backward(g, d, x, n);
    else fwd(o, x, n);
    double t0 = dap_time_now();
    for (int k = 0; k < reps; k++) {
        if (backward) dap_gelu_backward(g, d, x, n);
        else fwd(o, x, n);
    }
    return (dap_time_now() - t0) / reps / (double)n * 1e9;
}

int main(int argc, char **argv) {
    dap_blas_fix_core(argv);
    (void)argc;
    if (getenv("DAP_BENCH_FTZ")) _mm_setcsr(_mm_getcsr() | 0x8040);
    const size_t n = (size_t)1 << 20;
    float *x = dap_alloc_f32(n), *d = dap_alloc_f32(n), *g = dap_alloc_f32(n), *o = dap_alloc_f32(n);
    for (size_t i = 0; i < n; i++) d[i] = 1.0f;
    printf("GELU, 1 thread, ns per value (flush-to-zero %s)\n", getenv("DAP_BENCH_FTZ") ? "on" : "off");
    const float vals[] = {-5, -1, -0.1f, 0, 0.1f, 1, 5};
    for (int v = 0; v < 7; v++) {
        for (size_t i = 0; i < n; i++) x[i] = vals[v];
        printf("  x = %5.1f            forward %6.2f  backward %6.2f\n", vals[v],
               ns_per_value(dap_gelu_forward, g, d, x, o, n, 0), ns_per_value(dap_gelu_forward, g, d, x, o, n, 1));
    }
    dap_rng r;
    dap_rng_init(&r, 1, 1);
    for (int sd = 1; sd <= 27; sd *= 3) {
        dap_rng_normal(&r, x, n, 0, (float)sd);
        printf("  x ~ N(0, %2d^2)      forward %6.2f  backward %6.2f\n", sd,
               ns_per_value(dap_gelu_forward, g, d, x, o, n, 0), ns_per_value(dap_gelu_forward, g, d, x, o, n, 1));
    }
    dap_free_aligned(x), dap_free_aligned(d), dap_free_aligned(g), dap_free_aligned(o);
    return 0;
}
