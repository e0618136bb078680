/*
 * bench_conv.c: one 3x3 convolution layer (stride 1, padding 1, no bias) of dap, through
 * im2col + sgemm and through Winograd F(2x2, 3x3): milliseconds for the forward pass,
 * the input gradient and the weight gradient (best of `iters` after one warm-up).
 * bench/bench_conv.sh runs it beside the PyTorch peer (bench/bench_conv.py).
 *   bench_conv N C H OC [iters=4]
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/blas.h"
#include "core/core.h"
#include "ops/ops.h"

static double best(double a, double b) { return a < b ? a : b; }

int main(int argc, char **argv) {
    dap_blas_fix_core(argv);
    if (argc < 5) {
        fprintf(stderr, "usage: bench_conv N C H OC [iters=4]\n");
        return 2;
    }
    int n = atoi(argv[1]), c = atoi(argv[2]), h = atoi(argv[3]), oc = atoi(argv[4]);
    int iters = argc > 5 ? atoi(argv[5]) : 4;
    if (n < 1 || c < 1 || h < 1 || oc < 1 || iters < 1) {
        fprintf(stderr, "bench_conv: sizes and iters must be >= 1\n");
        return 2;
    }
    size_t nin = (size_t)n * c * h * h, nout = (size_t)n * oc * h * h, nw = (size_t)oc * c * 9;
    float *x = dap_alloc_f32(nin), *y = dap_alloc_f32(nout), *w = dap_alloc_f32(nw);
    float *dw = dap_alloc_f32(nw), *dx = dap_alloc_f32(nin);
    dap_rng r;
    dap_rng_init(&r, 1, 1);
    dap_rng_normal(&r, x, nin, 0, 1);
    dap_rng_normal(&r, w, nw, 0, 0.05f);
    for (int algo = DAP_CONV_IM2COL; algo <= DAP_CONV_WINOGRAD; algo++) {
        dap_conv2d_dims d;
        dap_conv2d_dims_init(&d, n, c, h, h, oc, 3, 3, 1, 1);
        d.algo = algo;
        float *work = dap_alloc_f32(dap_conv2d_work_floats(&d));
        double tf = 1e30, tx = 1e30, tw = 1e30;
        for (int it = 0; it <= iters; it++) { /* iteration 0 warms up */
            double t0 = dap_time_now();
            dap_conv2d_forward(y, x, w, NULL, &d, work);
            double t1 = dap_time_now();
            dap_conv2d_backward(dx, NULL, NULL, y, x, w, &d, work);
            double t2 = dap_time_now();
            dap_conv2d_backward(NULL, dw, NULL, y, x, w, &d, work);
            double t3 = dap_time_now();
            if (it > 0) tf = best(tf, t1 - t0), tx = best(tx, t2 - t1), tw = best(tw, t3 - t2);
        }
        printf("dap %-8s n %d c %d %dx%d oc %d threads %d: forward %.1f ms, dx %.1f ms, dw %.1f ms\n",
               algo == DAP_CONV_WINOGRAD ? "winograd" : "im2col", n, c, h, h, oc, dap_get_threads(),
               tf * 1e3, tx * 1e3, tw * 1e3);
        dap_free_aligned(work);
    }
    dap_free_aligned(x), dap_free_aligned(y), dap_free_aligned(w);
    dap_free_aligned(dw), dap_free_aligned(dx);
    return 0;
}
