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
 *
 * 3x3 convolutions with stride 1 and padding 1 between wide layers (the ConvNet and
 * ResNet bodies) go through Winograd F(2x2, 3x3) instead (Lavin & Gray 2016): each 4x4
 * input tile (stride 2) becomes V = B^T d B, each kernel U = G g G^T, and the 16
 * elementwise products summed over channels are 16 sgemms, M[xi] (OC, T) = U[xi] (OC, C)
 * V[xi] (C, T) over T tiles; a 2x2 output tile is A^T M A. That is 16 multiplies per 4
 * outputs instead of 36 (2.25x fewer). The backward passes use the adjoints of the same
 * transforms: dM = A dY A^T, then dU[xi] += dM[xi] V[xi]^T (dw = G^T dU G) and
 * dV[xi] = U[xi]^T dM[xi] (dx = the overlapping tiles B dV B^T added up). The transforms'
 * entries are 0, +-1 and +-1/2, so the result differs from im2col's by float rounding
 * only. The 16 sgemms of a chunk run one per thread (each on one thread), so the bits do
 * not depend on the thread count either.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "ops/ops.h"

/* Columns per sgemm that a chunk of images aims for. */
#define CONV_COLS_TARGET 1024
/* Below this many floats a copy loop stays on one thread. */
#define CONV_OMP_MIN 65536
/* Winograd: tiles per chunk (the columns of its 16 sgemms), and the channel counts from
 * which it pays (below them the 16 skinny sgemms lose to one im2col sgemm). */
#define WINO_TILES_TARGET 128
#define WINO_MIN_CHANNELS 16
/* Floats between the 16 matrices of U, V and M beyond their size: without it they sit a
 * power of two apart and the 16 streams of a tile's transform fight over one L1 set. */
#define WINO_SKEW 16

static int g_winograd = 1;

int dap_conv2d_set_winograd(int mode) {
    DAP_ASSERT(mode >= 0 && mode <= 2);
    int old = g_winograd;
    g_winograd = mode;
    return old;
}

int dap_conv2d_winograd_mode(void) { return g_winograd; }

int dap_conv2d_winograd_from_env(void) {
    const char *v = getenv("DAP_WINOGRAD");
    if (!v || !*v) return DAP_OK;
    if ((v[0] != '0' && v[0] != '1' && v[0] != '2') || v[1])
        return dap_error(DAP_ERR_ARG, "DAP_WINOGRAD must be 0, 1 or 2, not '%s'", v);
    dap_conv2d_set_winograd(v[0] - '0');
    return DAP_OK;
}

int dap_conv2d_winograd_fits(const dap_conv2d_dims *d) {
    return d->kh == 3 && d->kw == 3 && d->stride == 1 && d->pad == 1;
}

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
    int pays = g_winograd == 2 || (c >= WINO_MIN_CHANNELS && oc >= WINO_MIN_CHANNELS);
    d->algo = g_winograd && pays && dap_conv2d_winograd_fits(d) ? DAP_CONV_WINOGRAD
                                                                  : DAP_CONV_IM2COL;
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

static size_t wino_work_floats(const dap_conv2d_dims *d);

size_t dap_conv2d_work_floats(const dap_conv2d_dims *d) {
    if (d->algo == DAP_CONV_WINOGRAD) return wino_work_floats(d);
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

/* ---- Winograd F(2x2, 3x3) ------------------------------------------------------------- */

/* Tiles per image (th x tw: 2x2 output tiles) and images per chunk. */
static void wino_tiles(const dap_conv2d_dims *d, int *th, int *tw, int *nb) {
    *th = (d->oh + 1) / 2, *tw = (d->ow + 1) / 2;
    int per = *th * *tw, b = (WINO_TILES_TARGET + per - 1) / per;
    *nb = b < 1 ? 1 : b > d->n ? d->n : b;
}

/* work layout: U (16, OC, C), dU (16, OC, C), V (16, C, T), M (16, OC, T), with T the
 * chunk's tiles; the forward pass leaves dU unused, the backward pass reuses V for dV and
 * M holds dM. */
static size_t wino_work_floats(const dap_conv2d_dims *d) {
    int th, tw, nb;
    wino_tiles(d, &th, &tw, &nb);
    size_t t = (size_t)nb * th * tw, us = (size_t)d->oc * d->c + WINO_SKEW;
    return 32 * us + (size_t)16 * (t * (d->c + d->oc) + 2 * WINO_SKEW);
}

/* The kernel's 1-D transforms, on values at stride xs into values at stride os:
 * g: G x (3 -> 4);  gt: G^T x (4 -> 3), its adjoint. */
static inline void wino_g(float *o, int os, const float *x, int xs) {
    float x0 = x[0], x1 = x[xs], x2 = x[2 * xs];
    o[0] = x0, o[os] = 0.5f * (x0 + x1 + x2), o[2 * os] = 0.5f * (x0 - x1 + x2), o[3 * os] = x2;
}
static inline void wino_gt(float *o, int os, const float *x, int xs) {
    float x0 = x[0], x1 = x[xs], x2 = x[2 * xs], x3 = x[3 * xs];
    float s = 0.5f * (x1 + x2);
    o[0] = x0 + s, o[os] = 0.5f * (x1 - x2), o[2 * os] = s + x3;
}

/* U[xi][o][c] = (G g G^T)[xi] for every kernel g = w[o][c] (3x3). */
static void wino_weights(float *u, const float *w, int oc, int c) {
    const size_t stride = (size_t)oc * c + WINO_SKEW;
#pragma omp parallel for schedule(static) if (stride * 16 > CONV_OMP_MIN)
    for (int o = 0; o < oc; o++) {
        for (int ch = 0; ch < c; ch++) {
            const float *g = w + ((size_t)o * c + ch) * 9;
            float t[12], uu[16];
            for (int j = 0; j < 3; j++) wino_g(t + j, 3, g + j, 3);          /* (4, 3) */
            for (int i = 0; i < 4; i++) wino_g(uu + 4 * i, 1, t + 3 * i, 1); /* (4, 4) */
            float *dst = u + (size_t)o * c + ch;
            for (int k = 0; k < 16; k++) dst[k * stride] = uu[k];
        }
    }
}

/* dw[o][c] += G^T dU[.][o][c] G. */
static void wino_weight_grad(float *dw, const float *du, int oc, int c) {
    const size_t stride = (size_t)oc * c + WINO_SKEW;
#pragma omp parallel for schedule(static) if (stride * 16 > CONV_OMP_MIN)
    for (int o = 0; o < oc; o++) {
        for (int ch = 0; ch < c; ch++) {
            const float *src = du + (size_t)o * c + ch;
            float uu[16], t[12], g[9];
            for (int k = 0; k < 16; k++) uu[k] = src[k * stride];
            for (int j = 0; j < 4; j++) wino_gt(t + j, 4, uu + j, 4);       /* (3, 4) */
            for (int i = 0; i < 3; i++) wino_gt(g + 3 * i, 1, t + 4 * i, 1); /* (3, 3) */
            float *dst = dw + ((size_t)o * c + ch) * 9;
            for (int k = 0; k < 9; k++) dst[k] += g[k];
        }
    }
}

/* The plane transforms below work on a row of tiles at a time, in segments of WINO_SEG
 * tiles: the 1-D transform down the tile rows runs over whole image rows, the one across
 * the tile columns over the segment's tiles, so both are loops over contiguous memory
 * that the compiler vectorises, and each of the 16 matrices gets a contiguous run. */
#define WINO_SEG 64

/* dst[0, n) = the image row `row` (NULL: outside the plane) from column x0 on, zero
 * outside [0, w). */
static void wino_row(float *dst, const float *row, int x0, int n, int w) {
    memset(dst, 0, (size_t)n * sizeof(float));
    if (!row) return;
    int lo = x0 < 0 ? -x0 : 0, hi = w - x0 < n ? w - x0 : n;
    if (hi > lo) memcpy(dst + lo, row + x0 + lo, (size_t)(hi - lo) * sizeof(float));
}

/* v[xi * xs + tile] = (B^T d B)[xi] for the tiles of one input plane x (H, W); outside
 * the plane reads as zero. */
static void wino_input_plane(float *v, size_t xs, const float *x, const dap_conv2d_dims *d,
                             int th, int tw) {
    float r[4][2 * WINO_SEG + 2], cb[4][2 * WINO_SEG + 2];
    for (int ty = 0; ty < th; ty++) {
        for (int s0 = 0; s0 < tw; s0 += WINO_SEG) {
            const int ns = tw - s0 < WINO_SEG ? tw - s0 : WINO_SEG, np = 2 * ns + 2;
            for (int a = 0; a < 4; a++) {
                int iy = 2 * ty - d->pad + a;
                wino_row(r[a], iy >= 0 && iy < d->h ? x + (size_t)iy * d->w : NULL,
                         2 * s0 - d->pad, np, d->w);
            }
            for (int p = 0; p < np; p++) { /* B^T down the rows */
                cb[0][p] = r[0][p] - r[2][p], cb[1][p] = r[1][p] + r[2][p];
                cb[2][p] = r[2][p] - r[1][p], cb[3][p] = r[1][p] - r[3][p];
            }
            float *dst = v + (size_t)ty * tw + s0;
            for (int a = 0; a < 4; a++) { /* B across the columns: 4 matrices per row */
                const float *c = cb[a];
                float *d0 = dst + (4 * a) * xs, *d1 = d0 + xs, *d2 = d1 + xs, *d3 = d2 + xs;
                for (int j = 0; j < ns; j++) {
                    float c0 = c[2 * j], c1 = c[2 * j + 1], c2 = c[2 * j + 2], c3 = c[2 * j + 3];
                    d0[j] = c0 - c2, d1[j] = c1 + c2, d2[j] = c2 - c1, d3[j] = c1 - c3;
                }
            }
        }
    }
}

/* One output plane y (OH, OW) = A^T M A + bias from m[xi * xs + tile]. */
static void wino_output_plane(float *y, const float *m, size_t xs, float bias,
                              const dap_conv2d_dims *d, int th, int tw) {
    float s[2][4][WINO_SEG], out[2 * WINO_SEG];
    for (int ty = 0; ty < th; ty++) {
        for (int s0 = 0; s0 < tw; s0 += WINO_SEG) {
            const int ns = tw - s0 < WINO_SEG ? tw - s0 : WINO_SEG;
            const float *src = m + (size_t)ty * tw + s0;
            for (int b = 0; b < 4; b++) { /* A^T down the rows */
                const float *m0 = src + b * xs, *m1 = m0 + 4 * xs, *m2 = m1 + 4 * xs,
                            *m3 = m2 + 4 * xs;
                for (int j = 0; j < ns; j++)
                    s[0][b][j] = m0[j] + m1[j] + m2[j], s[1][b][j] = m1[j] - m2[j] - m3[j];
            }
            const int ox = 2 * s0, nw = d->ow - ox < 2 * ns ? d->ow - ox : 2 * ns;
            for (int i = 0; i < 2 && 2 * ty + i < d->oh; i++) { /* A across the columns */
                for (int j = 0; j < ns; j++) {
                    out[2 * j] = s[i][0][j] + s[i][1][j] + s[i][2][j] + bias;
                    out[2 * j + 1] = s[i][1][j] - s[i][2][j] - s[i][3][j] + bias;
                }
                memcpy(y + (size_t)(2 * ty + i) * d->ow + ox, out, (size_t)nw * sizeof(float));
            }
        }
    }
}

/* m[xi * xs + tile] = (A dY A^T)[xi] for the 2x2 tiles of one output-gradient plane
 * (OH, OW); positions past the plane's edge count as zero. */
static void wino_grad_plane(float *m, size_t xs, const float *dy, const dap_conv2d_dims *d,
                            int th, int tw) {
    float g[2][2 * WINO_SEG], s[4][2][WINO_SEG];
    for (int ty = 0; ty < th; ty++) {
        for (int s0 = 0; s0 < tw; s0 += WINO_SEG) {
            const int ns = tw - s0 < WINO_SEG ? tw - s0 : WINO_SEG;
            for (int a = 0; a < 2; a++) {
                int oy = 2 * ty + a;
                wino_row(g[a], oy < d->oh ? dy + (size_t)oy * d->ow : NULL, 2 * s0, 2 * ns,
                         d->ow);
            }
            for (int b = 0; b < 2; b++) /* A down the rows */
                for (int j = 0; j < ns; j++) {
                    float g0 = g[0][2 * j + b], g1 = g[1][2 * j + b];
                    s[0][b][j] = g0, s[1][b][j] = g0 + g1, s[2][b][j] = g0 - g1, s[3][b][j] = -g1;
                }
            float *dst = m + (size_t)ty * tw + s0;
            for (int a = 0; a < 4; a++) { /* A^T across the columns */
                float *d0 = dst + (4 * a) * xs, *d1 = d0 + xs, *d2 = d1 + xs, *d3 = d2 + xs;
                for (int j = 0; j < ns; j++) {
                    float e = s[a][0][j], o = s[a][1][j];
                    d0[j] = e, d1[j] = e + o, d2[j] = e - o, d3[j] = -o;
                }
            }
        }
    }
}

/* dx (H, W) = the sum over tiles of B dV B^T placed at each tile's input window
 * (overwrites dx; neighbouring tiles overlap by two rows and columns). */
static void wino_scatter_plane(float *dx, const float *v, size_t xs, const dap_conv2d_dims *d,
                               int th, int tw) {
    float t[4][4][WINO_SEG], acc[2 * WINO_SEG + 2];
    memset(dx, 0, (size_t)d->h * d->w * sizeof(float));
    for (int ty = 0; ty < th; ty++) {
        for (int s0 = 0; s0 < tw; s0 += WINO_SEG) {
            const int ns = tw - s0 < WINO_SEG ? tw - s0 : WINO_SEG, np = 2 * ns + 2;
            const float *src = v + (size_t)ty * tw + s0;
            for (int b = 0; b < 4; b++) { /* B down the rows */
                const float *v0 = src + b * xs, *v1 = v0 + 4 * xs, *v2 = v1 + 4 * xs,
                            *v3 = v2 + 4 * xs;
                for (int j = 0; j < ns; j++) {
                    t[0][b][j] = v0[j], t[1][b][j] = v1[j] - v2[j] + v3[j];
                    t[2][b][j] = v1[j] + v2[j] - v0[j], t[3][b][j] = -v3[j];
                }
            }
            const int x0 = 2 * s0 - d->pad;
            for (int a = 0; a < 4; a++) { /* B^T across the columns, overlaps added */
                int iy = 2 * ty - d->pad + a;
                if (iy < 0 || iy >= d->h) continue;
                const float *t0 = t[a][0], *t1 = t[a][1], *t2 = t[a][2], *t3 = t[a][3];
                acc[0] = t0[0], acc[1] = t1[0] - t2[0] + t3[0];
                for (int j = 1; j < ns; j++) {
                    acc[2 * j] = t0[j] + t1[j - 1] + t2[j - 1] - t0[j - 1];
                    acc[2 * j + 1] = t1[j] - t2[j] + t3[j] - t3[j - 1];
                }
                acc[2 * ns] = t1[ns - 1] + t2[ns - 1] - t0[ns - 1], acc[2 * ns + 1] = -t3[ns - 1];
                float *row = dx + (size_t)iy * d->w;
                int lo = x0 < 0 ? -x0 : 0, hi = d->w - x0 < np ? d->w - x0 : np;
                for (int p = lo; p < hi; p++) row[x0 + p] += acc[p];
            }
        }
    }
}

/* Where a call's tiles and matrices are (see wino_work_floats for the layout). */
typedef struct {
    int th, tw, nb, per; /* tiles per column and row of an image, images per chunk, tiles per image */
    size_t us;           /* floats from one U (or dU) matrix to the next */
    float *u, *du, *v, *m;
} wino_plan;

static void wino_plan_init(wino_plan *p, const dap_conv2d_dims *d, float *work) {
    wino_tiles(d, &p->th, &p->tw, &p->nb);
    p->per = p->th * p->tw;
    p->us = (size_t)d->oc * d->c + WINO_SKEW;
    p->u = work, p->du = work + 16 * p->us, p->v = work + 32 * p->us;
    p->m = p->v + 16 * ((size_t)d->c * p->nb * p->per + WINO_SKEW);
}

/* V (16, C, t) of the chunk's cnt images from n0 on, the matrices vs floats apart. */
static void wino_input_chunk(const wino_plan *p, size_t vs, int t, const float *inp, int n0,
                             int cnt, const dap_conv2d_dims *d) {
    const size_t hw = (size_t)d->h * d->w;
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < cnt; i++)
        for (int ch = 0; ch < d->c; ch++)
            wino_input_plane(p->v + (size_t)ch * t + (size_t)i * p->per, vs,
                             inp + ((size_t)(n0 + i) * d->c + ch) * hw, d, p->th, p->tw);
}

static void wino_forward(float *out, const float *inp, const float *w, const float *b,
                         const dap_conv2d_dims *d, float *work) {
    wino_plan p;
    wino_plan_init(&p, d, work);
    const int c = d->c, oc = d->oc;
    const size_t plane = (size_t)d->oh * d->ow;
    wino_weights(p.u, w, oc, c);
    for (int n0 = 0; n0 < d->n; n0 += p.nb) {
        const int cnt = d->n - n0 < p.nb ? d->n - n0 : p.nb, t = cnt * p.per;
        const size_t vs = (size_t)c * t + WINO_SKEW, ms = (size_t)oc * t + WINO_SKEW;
        wino_input_chunk(&p, vs, t, inp, n0, cnt, d);
#pragma omp parallel for schedule(static)
        for (int xi = 0; xi < 16; xi++)
            dap_gemm(0, 0, oc, t, c, 1.0f, p.u + xi * p.us, c, p.v + xi * vs, t, 0.0f,
                     p.m + xi * ms, t);
#pragma omp parallel for collapse(2) schedule(static)
        for (int i = 0; i < cnt; i++)
            for (int o = 0; o < oc; o++)
                wino_output_plane(out + ((size_t)(n0 + i) * oc + o) * plane,
                                  p.m + (size_t)o * t + (size_t)i * p.per, ms, b ? b[o] : 0.0f,
                                  d, p.th, p.tw);
    }
}

static void wino_backward(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, const dap_conv2d_dims *d, float *work) {
    wino_plan p;
    wino_plan_init(&p, d, work);
    const int c = d->c, oc = d->oc;
    const size_t plane = (size_t)d->oh * d->ow, hw = (size_t)d->h * d->w;
    if (dinp) wino_weights(p.u, w, oc, c);
    for (int n0 = 0; n0 < d->n; n0 += p.nb) {
        const int cnt = d->n - n0 < p.nb ? d->n - n0 : p.nb, t = cnt * p.per;
        const size_t vs = (size_t)c * t + WINO_SKEW, ms = (size_t)oc * t + WINO_SKEW;
#pragma omp parallel for collapse(2) schedule(static)
        for (int i = 0; i < cnt; i++)
            for (int o = 0; o < oc; o++)
                wino_grad_plane(p.m + (size_t)o * t + (size_t)i * p.per, ms,
                                dout + ((size_t)(n0 + i) * oc + o) * plane, d, p.th, p.tw);
        if (dw) {
            wino_input_chunk(&p, vs, t, inp, n0, cnt, d);
            /* dU[xi] (OC, C) (+)= dM[xi] (OC, T) V[xi]^T */
#pragma omp parallel for schedule(static)
            for (int xi = 0; xi < 16; xi++)
                dap_gemm(0, 1, oc, c, t, 1.0f, p.m + xi * ms, t, p.v + xi * vs, t,
                         n0 > 0 ? 1.0f : 0.0f, p.du + xi * p.us, c);
        }
        if (dinp) {
            /* dV[xi] (C, T) = U[xi]^T dM[xi], into V's room */
#pragma omp parallel for schedule(static)
            for (int xi = 0; xi < 16; xi++)
                dap_gemm(1, 0, c, t, oc, 1.0f, p.u + xi * p.us, c, p.m + xi * ms, t, 0.0f,
                         p.v + xi * vs, t);
#pragma omp parallel for collapse(2) schedule(static)
            for (int i = 0; i < cnt; i++)
                for (int ch = 0; ch < c; ch++)
                    wino_scatter_plane(dinp + ((size_t)(n0 + i) * c + ch) * hw,
                                       p.v + (size_t)ch * t + (size_t)i * p.per, vs, d, p.th,
                                       p.tw);
        }
    }
    if (dw) wino_weight_grad(dw, p.du, oc, c);
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
    if (d->algo == DAP_CONV_WINOGRAD) {
        DAP_ASSERT(dap_conv2d_winograd_fits(d));
        wino_forward(out, inp, w, b, d, work);
        return;
    }
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
    if (d->algo == DAP_CONV_WINOGRAD) {
        DAP_ASSERT(dap_conv2d_winograd_fits(d));
        wino_backward(dinp, dw, dout, inp, w, d, work);
        return;
    }
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
