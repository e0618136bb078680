/*
 * conv.c: 2-D convolution as im2col + sgemm, forward and backward.
 *
 * Images are processed in chunks of `nb` images so that every sgemm has at least
 * CONV_COLS_TARGET columns: large images go one at a time (nb = 1, the output plane is
 * written by sgemm directly), small ones (the 4x4 .. 16x16 planes of deep layers and
 * latents) are batched, which keeps OpenBLAS efficient. A batched chunk needs a staging
 * buffer (OC, nb*P) because its sgemm result is not in NCHW order.
 *
 * work layout (caller-owned, dap_conv2d_work_floats floats):
 *   col  (C*KH*KW, nb*P)  im2col of the chunk; in backward reused for dcol
 *   tmp  (OC, nb*P)       only when nb > 1: forward result / gathered dout
 * A 1x1, stride-1, unpadded conv with nb = 1 uses the input planes as the columns and
 * needs no col at all.
 *
 * Determinism: im2col/col2im loops write disjoint outputs per thread; the batch
 * reduction of dw happens inside sgemm's K loop (not split across threads) and the bias
 * gradient is summed per channel in a fixed order, so any thread count gives identical
 * results.
 */
#include <string.h>

#include "core/core.h"
#include "ops/ops.h"

/* Columns per sgemm that a chunk of images aims for. */
#define CONV_COLS_TARGET 1024
/* Below this many floats a copy loop stays on one thread. */
#define CONV_OMP_MIN 65536

void dap_conv2d_dims_init(dap_conv2d_dims *d, int n, int c, int h, int w, int oc, int kh, int kw,
                          int stride, int pad) {
    DAP_ASSERT(n > 0 && c > 0 && h > 0 && w > 0 && oc > 0 && kh > 0 && kw > 0);
    DAP_ASSERT(stride > 0 && pad >= 0);
    DAP_ASSERT(h + 2 * pad >= kh && w + 2 * pad >= kw);
    d->n = n, d->c = c, d->h = h, d->w = w;
    d->oc = oc, d->kh = kh, d->kw = kw;
    d->stride = stride, d->pad = pad;
    d->oh = (h + 2 * pad - kh) / stride + 1;
    d->ow = (w + 2 * pad - kw) / stride + 1;
}

static int conv_pointwise(const dap_conv2d_dims *d) {
    return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}

/* Images per sgemm chunk. */
static int conv_chunk(const dap_conv2d_dims *d) {
    int p = d->oh * d->ow;
    int nb = (CONV_COLS_TARGET + p - 1) / p;
    return nb < 1 ? 1 : nb > d->n ? d->n : nb;
}

size_t dap_conv2d_work_floats(const dap_conv2d_dims *d) {
    size_t nb = (size_t)conv_chunk(d), p = (size_t)d->oh * d->ow;
    size_t ckk = (size_t)d->c * d->kh * d->kw;
    size_t col = (conv_pointwise(d) && nb == 1) ? 0 : ckk * nb * p;
    size_t tmp = nb > 1 ? (size_t)d->oc * nb * p : 0;
    return col + tmp;
}

/* Output columns [ox0, ox1) whose input column ox*s - pad + kj lies inside [0, W). */
static void valid_cols(const dap_conv2d_dims *d, int kj, int *ox0, int *ox1) {
    int s = d->stride, lo = d->pad - kj, hi = d->w - 1 + d->pad - kj;
    int a = lo <= 0 ? 0 : (lo + s - 1) / s;
    int b = hi < 0 ? 0 : hi / s + 1;
    if (b > d->ow) b = d->ow;
    if (b < a) b = a;
    *ox0 = a, *ox1 = b;
}

/* col (C*KH*KW, cnt*P) from x (cnt, C, H, W); padding reads as zero. */
static void im2col(float *col, const float *x, int cnt, const dap_conv2d_dims *d) {
    const int kk = d->kh * d->kw, ckk = d->c * kk, p = d->oh * d->ow, s = d->stride;
    const size_t cols = (size_t)cnt * p, hw = (size_t)d->h * d->w;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)ckk * cols > CONV_OMP_MIN)
    for (int r = 0; r < ckk; r++) {
        for (int i = 0; i < cnt; i++) {
            int c = r / kk, ki = (r / d->kw) % d->kh, kj = r % d->kw, ox0, ox1;
            valid_cols(d, kj, &ox0, &ox1);
            const float *src = x + ((size_t)i * d->c + c) * hw;
            float *dst = col + (size_t)r * cols + (size_t)i * p;
            for (int oy = 0; oy < d->oh; oy++) {
                int iy = oy * s - d->pad + ki;
                float *drow = dst + (size_t)oy * d->ow;
                if (iy < 0 || iy >= d->h) {
                    memset(drow, 0, (size_t)d->ow * sizeof(float));
                    continue;
                }
                const float *srow = src + (size_t)iy * d->w - d->pad + kj;
                for (int ox = 0; ox < ox0; ox++) drow[ox] = 0.0f;
                if (s == 1) memcpy(drow + ox0, srow + ox0, (size_t)(ox1 - ox0) * sizeof(float));
                else
                    for (int ox = ox0; ox < ox1; ox++) drow[ox] = srow[(size_t)ox * s];
                for (int ox = ox1; ox < d->ow; ox++) drow[ox] = 0.0f;
            }
        }
    }
}

/* dx (cnt, C, H, W) = the scatter-add of col (C*KH*KW, cnt*P) back onto the input
 * positions (overwrites dx). Each (image, channel) plane belongs to one thread. */
static void col2im(float *dx, const float *col, int cnt, const dap_conv2d_dims *d) {
    const int kk = d->kh * d->kw, p = d->oh * d->ow, s = d->stride;
    const size_t cols = (size_t)cnt * p, hw = (size_t)d->h * d->w;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)d->c * kk * cols > CONV_OMP_MIN)
    for (int i = 0; i < cnt; i++) {
        for (int c = 0; c < d->c; c++) {
            float *dst = dx + ((size_t)i * d->c + c) * hw;
            memset(dst, 0, hw * sizeof(float));
            for (int ki = 0; ki < d->kh; ki++) {
                for (int kj = 0; kj < d->kw; kj++) {
                    int r = (c * d->kh + ki) * d->kw + kj, ox0, ox1;
                    valid_cols(d, kj, &ox0, &ox1);
                    const float *src = col + (size_t)r * cols + (size_t)i * p;
                    for (int oy = 0; oy < d->oh; oy++) {
                        int iy = oy * s - d->pad + ki;
                        if (iy < 0 || iy >= d->h) continue;
                        float *drow = dst + (size_t)iy * d->w - d->pad + kj;
                        const float *srow = src + (size_t)oy * d->ow;
                        if (s == 1) {
#pragma omp simd
                            for (int ox = ox0; ox < ox1; ox++) drow[ox] += srow[ox];
                        } else {
                            for (int ox = ox0; ox < ox1; ox++) drow[(size_t)ox * s] += srow[ox];
                        }
                    }
                }
            }
        }
    }
}

void dap_conv2d_forward(float *out,       // (N, OC, OH, OW)
                        const float *inp, // (N, C, H, W)
                        const float *w,   // (OC, C, KH, KW)
                        const float *b,   // (OC) or NULL
                        const dap_conv2d_dims *d, float *work) {
    const int nb = conv_chunk(d), p = d->oh * d->ow, oc = d->oc;
    const int ckk = d->c * d->kh * d->kw;
    const size_t in_img = (size_t)d->c * d->h * d->w, out_img = (size_t)oc * p;
    const int direct = conv_pointwise(d) && nb == 1;
    float *col = work;
    float *tmp = direct ? work : work + (size_t)ckk * nb * p; /* used only when nb > 1 */
    for (int n0 = 0; n0 < d->n; n0 += nb) {
        const int cnt = d->n - n0 < nb ? d->n - n0 : nb, cols = cnt * p;
        const float *x = inp + (size_t)n0 * in_img;
        const float *cx = x;
        if (!direct) {
            im2col(col, x, cnt, d);
            cx = col;
        }
        if (nb == 1) {
            float *y = out + (size_t)n0 * out_img;
            float beta = 0.0f;
            if (b) { /* start from the bias and let sgemm accumulate onto it */
#pragma omp parallel for schedule(static) if ((size_t)oc * p > CONV_OMP_MIN)
                for (int o = 0; o < oc; o++)
                    for (int j = 0; j < p; j++) y[(size_t)o * p + j] = b[o];
                beta = 1.0f;
            }
            dap_gemm(0, 0, oc, p, ckk, 1.0f, w, ckk, cx, p, beta, y, p);
            continue;
        }
        /* batched chunk: tmp (OC, cnt*P) -> out (cnt, OC, P), adding the bias */
        dap_gemm(0, 0, oc, cols, ckk, 1.0f, w, ckk, cx, cols, 0.0f, tmp, cols);
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)oc * cols > CONV_OMP_MIN)
        for (int i = 0; i < cnt; i++) {
            for (int o = 0; o < oc; o++) {
                const float *src = tmp + (size_t)o * cols + (size_t)i * p;
                float *dst = out + (size_t)(n0 + i) * out_img + (size_t)o * p;
                float bo = b ? b[o] : 0.0f;
#pragma omp simd
                for (int j = 0; j < p; j++) dst[j] = src[j] + bo;
            }
        }
    }
}

/* db (OC) += sum over images and positions of dout (N, OC, P): planes summed in float
 * (fixed vector order), planes added in double. */
static void conv_bias_grad(float *db, const float *dout, const dap_conv2d_dims *d) {
    const int p = d->oh * d->ow;
#pragma omp parallel for schedule(static) if ((size_t)d->n * d->oc * p > CONV_OMP_MIN)
    for (int o = 0; o < d->oc; o++) {
        double acc = 0.0;
        for (int i = 0; i < d->n; i++) {
            const float *src = dout + ((size_t)i * d->oc + o) * p;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int j = 0; j < p; j++) s += src[j];
            acc += s;
        }
        db[o] += (float)acc;
    }
}

void dap_conv2d_backward(float *dinp,       // (N, C, H, W) overwritten, or NULL
                         float *dw,         // (OC, C, KH, KW) accumulated, or NULL
                         float *db,         // (OC) accumulated, or NULL
                         const float *dout, // (N, OC, OH, OW)
                         const float *inp,  // (N, C, H, W)
                         const float *w,    // (OC, C, KH, KW)
                         const dap_conv2d_dims *d, float *work) {
    const int nb = conv_chunk(d), p = d->oh * d->ow, oc = d->oc;
    const int ckk = d->c * d->kh * d->kw;
    const size_t in_img = (size_t)d->c * d->h * d->w, out_img = (size_t)oc * p;
    const int direct = conv_pointwise(d) && nb == 1;
    float *col = work;
    float *tmp = direct ? work : work + (size_t)ckk * nb * p;
    if (db) conv_bias_grad(db, dout, d);
    if (!dw && !dinp) return;
    for (int n0 = 0; n0 < d->n; n0 += nb) {
        const int cnt = d->n - n0 < nb ? d->n - n0 : nb, cols = cnt * p;
        const float *x = inp + (size_t)n0 * in_img;
        const float *dy = dout + (size_t)n0 * out_img; /* (OC, cols) when nb == 1 */
        if (nb > 1) { /* gather the chunk's dout into (OC, cnt*P) */
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)oc * cols > CONV_OMP_MIN)
            for (int i = 0; i < cnt; i++)
                for (int o = 0; o < oc; o++)
                    memcpy(tmp + (size_t)o * cols + (size_t)i * p,
                           dy + (size_t)i * out_img + (size_t)o * p, (size_t)p * sizeof(float));
            dy = tmp;
        }
        if (dw) {
            const float *cx = x;
            if (!direct) {
                im2col(col, x, cnt, d);
                cx = col;
            }
            dap_gemm(0, 1, oc, ckk, cols, 1.0f, dy, cols, cx, cols, 1.0f, dw, ckk);
        }
        if (dinp) {
            float *dx = dinp + (size_t)n0 * in_img;
            if (direct) {
                dap_gemm(1, 0, ckk, p, oc, 1.0f, w, ckk, dy, p, 0.0f, dx, p);
            } else {
                dap_gemm(1, 0, ckk, cols, oc, 1.0f, w, ckk, dy, cols, 0.0f, col, cols);
                col2im(dx, col, cnt, d);
            }
        }
    }
}
