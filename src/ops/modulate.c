/*
 * modulate.c: the adaLN-Zero pieces of a DiT block. shift, scale and gate are per-sample
 * rows of length C read with row stride `ld` (chunks of the (B, 6C) adaLN output).
 *     modulate:        out = x * (1 + scale[b]) + shift[b]
 *     gated residual:  x += gate[b] * y
 * Backward passes reduce over tokens into per-sample rows; they run parallel over
 * (sample, column block) with tokens in order, so every thread count gives the same bits.
 */
#include <stddef.h>

#include "core/core.h"
#include "ops/ops.h"

#define MOD_COL_BLOCK 64
/* Below this many elements the loops run on the calling thread. */
#define PAR_MIN ((size_t)1 << 14)

void dap_modulate_forward(float *out, const float *x, const float *shift, const float *scale,
                          int b, int t, int c, int ld) {
    DAP_ASSERT(b >= 0 && t >= 0 && c > 0 && ld >= c);
    const int par = (size_t)b * t * c >= PAR_MIN;
#pragma omp parallel for schedule(static) if (par)
    for (int bt = 0; bt < b * t; bt++) {
        int bi = bt / t;
        const float *sh = shift + (size_t)bi * ld, *sc = scale + (size_t)bi * ld; /* (C) */
        const float *xr = x + (size_t)bt * c;
        float *o = out + (size_t)bt * c;
#pragma omp simd
        for (int j = 0; j < c; j++) o[j] = xr[j] * (1.0f + sc[j]) + sh[j];
    }
}

void dap_modulate_backward(float *dx, float *dshift, float *dscale, const float *dout,
                           const float *x, const float *scale, int b, int t, int c, int ld) {
    DAP_ASSERT(b >= 0 && t >= 0 && c > 0 && ld >= c);
    const int par = (size_t)b * t * c >= PAR_MIN;
    int nblk = (c + MOD_COL_BLOCK - 1) / MOD_COL_BLOCK;
#pragma omp parallel for schedule(static) if (par)
    for (int item = 0; item < b * nblk; item++) {
        int bi = item / nblk, j0 = (item % nblk) * MOD_COL_BLOCK;
        int nj = c - j0 < MOD_COL_BLOCK ? c - j0 : MOD_COL_BLOCK;
        const float *sc = scale + (size_t)bi * ld + j0;
        float ash[MOD_COL_BLOCK] = {0}, asc[MOD_COL_BLOCK] = {0};
        for (int ti = 0; ti < t; ti++) {
            size_t off = ((size_t)bi * t + ti) * c + j0;
            const float *dy = dout + off, *xr = x + off;
#pragma omp simd
            for (int j = 0; j < nj; j++) {
                ash[j] += dy[j];
                asc[j] += dy[j] * xr[j];
            }
            if (dx) { /* after the sums: dx may alias dout */
                float *dxr = dx + off;
#pragma omp simd
                for (int j = 0; j < nj; j++) dxr[j] = dy[j] * (1.0f + sc[j]);
            }
        }
        for (int j = 0; j < nj; j++) {
            if (dshift) dshift[(size_t)bi * ld + j0 + j] = ash[j];
            if (dscale) dscale[(size_t)bi * ld + j0 + j] = asc[j];
        }
    }
}

void dap_gate_residual_forward(float *x, const float *y, const float *gate, int b, int t, int c,
                               int ld) {
    DAP_ASSERT(b >= 0 && t >= 0 && c > 0 && ld >= c);
    const int par = (size_t)b * t * c >= PAR_MIN;
#pragma omp parallel for schedule(static) if (par)
    for (int bt = 0; bt < b * t; bt++) {
        const float *g = gate + (size_t)(bt / t) * ld; /* (C) */
        const float *yr = y + (size_t)bt * c;
        float *xr = x + (size_t)bt * c;
#pragma omp simd
        for (int j = 0; j < c; j++) xr[j] += g[j] * yr[j];
    }
}

void dap_gate_residual_backward(float *dy, float *dgate, const float *dout, const float *y,
                                const float *gate, int b, int t, int c, int ld) {
    DAP_ASSERT(b >= 0 && t >= 0 && c > 0 && ld >= c);
    const int par = (size_t)b * t * c >= PAR_MIN;
    int nblk = (c + MOD_COL_BLOCK - 1) / MOD_COL_BLOCK;
#pragma omp parallel for schedule(static) if (par)
    for (int item = 0; item < b * nblk; item++) {
        int bi = item / nblk, j0 = (item % nblk) * MOD_COL_BLOCK;
        int nj = c - j0 < MOD_COL_BLOCK ? c - j0 : MOD_COL_BLOCK;
        const float *g = gate + (size_t)bi * ld + j0;
        float ag[MOD_COL_BLOCK] = {0};
        for (int ti = 0; ti < t; ti++) {
            size_t off = ((size_t)bi * t + ti) * c + j0;
            const float *dyo = dout + off;
            if (dgate) {
                const float *yr = y + off;
#pragma omp simd
                for (int j = 0; j < nj; j++) ag[j] += dyo[j] * yr[j];
            }
            if (dy) { /* after the sum: dy may alias dout */
                float *dyr = dy + off;
#pragma omp simd
                for (int j = 0; j < nj; j++) dyr[j] = g[j] * dyo[j];
            }
        }
        if (dgate)
            for (int j = 0; j < nj; j++) dgate[(size_t)bi * ld + j0 + j] = ag[j];
    }
}
