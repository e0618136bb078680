/*
 * norm.c: LayerNorm, GroupNorm (instance norm is G = C) and BatchNorm2d, forward and
 * backward. Statistics are two-pass (mean, then the centred sum of squares) so large
 * offsets do not cancel; contiguous runs are summed in float with `omp simd`, runs are
 * combined in double. Every loop is parallel over an index whose work is independent
 * of the thread count, and parameter gradients are reduced in a fixed order, so the
 * results are bit-identical for any number of threads.
 */
#include <math.h>
#include <stddef.h>

#include "core/core.h"
#include "ops/ops.h"

/* ---- small kernels over one contiguous run ------------------------------------ */

static inline float run_sum(const float *x, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += x[i];
    return s;
}

/* sum (x - m)^2 */
static inline float run_sqdev(const float *x, int n, float m) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) {
        float d = x[i] - m;
        s += d * d;
    }
    return s;
}

/* sum dy and sum dy * (x - m) */
static inline void run_dsums(const float *dy, const float *x, int n, float m, float *sdy,
                             float *sdyx) {
    float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
    for (int i = 0; i < n; i++) {
        a += dy[i];
        b += dy[i] * (x[i] - m);
    }
    *sdy = a;
    *sdyx = b;
}

/* out = (x - m) * scale + shift; centring first keeps precision when |mean| >> std */
static inline void run_affine(float *out, const float *x, int n, float m, float scale,
                              float shift) {
#pragma omp simd
    for (int i = 0; i < n; i++) out[i] = (x[i] - m) * scale + shift;
}

/* Column blocks for the parameter-gradient passes: wide enough for whole cache lines. */
#define NORM_COL_BLOCK 64

/* Below this many elements the loops run on the calling thread (a parallel region
 * costs more than the work). */
#define PAR_MIN ((size_t)1 << 14)

/* ---- LayerNorm ------------------------------------------------------------------ */

void dap_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int n, int c, float eps) {
    DAP_ASSERT(n >= 0 && c > 0);
    const int par = (size_t)n * c >= PAR_MIN;
#pragma omp parallel for schedule(static) if (par)
    for (int i = 0; i < n; i++) {
        const float *x = inp + (size_t)i * c; /* (C) */
        float *o = out + (size_t)i * c;
        float m = run_sum(x, c) / (float)c;
        float v = run_sqdev(x, c, m) / (float)c;
        float rs = 1.0f / sqrtf(v + eps);
        if (w || b) {
#pragma omp simd
            for (int j = 0; j < c; j++) {
                float y = (x[j] - m) * rs;
                if (w) y *= w[j];
                if (b) y += b[j];
                o[j] = y;
            }
        } else {
            run_affine(o, x, c, m, rs, 0.0f);
        }
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = rs;
    }
}

void dap_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int n, int c) {
    DAP_ASSERT(n >= 0 && c > 0);
    const int par = (size_t)n * c >= PAR_MIN;
    if (dinp) {
#pragma omp parallel for schedule(static) if (par)
        for (int i = 0; i < n; i++) {
            const float *x = inp + (size_t)i * c, *dy = dout + (size_t)i * c;
            float *dx = dinp + (size_t)i * c;
            float m = mean[i], rs = rstd[i];
            /* g = dy * w; dx = rs * (g - mean(g) - xhat * mean(g * xhat)) */
            float sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
            for (int j = 0; j < c; j++) {
                float g = w ? dy[j] * w[j] : dy[j];
                sg += g;
                sgx += g * (x[j] - m) * rs;
            }
            float mg = sg / (float)c, mgx = sgx / (float)c;
#pragma omp simd
            for (int j = 0; j < c; j++) {
                float g = w ? dy[j] * w[j] : dy[j];
                dx[j] = rs * (g - mg - (x[j] - m) * rs * mgx);
            }
        }
    }
    if (!dw && !db) return;
    /* Parameter gradients: parallel over column blocks, rows in order (deterministic). */
    int nblk = (c + NORM_COL_BLOCK - 1) / NORM_COL_BLOCK;
#pragma omp parallel for schedule(static) if (par)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * NORM_COL_BLOCK;
        int nj = c - j0 < NORM_COL_BLOCK ? c - j0 : NORM_COL_BLOCK;
        float aw[NORM_COL_BLOCK] = {0}, ab[NORM_COL_BLOCK] = {0};
        for (int i = 0; i < n; i++) {
            const float *x = inp + (size_t)i * c + j0, *dy = dout + (size_t)i * c + j0;
            float m = mean[i], rs = rstd[i];
#pragma omp simd
            for (int j = 0; j < nj; j++) {
                aw[j] += dy[j] * (x[j] - m) * rs;
                ab[j] += dy[j];
            }
        }
        for (int j = 0; j < nj; j++) {
            if (dw) dw[j0 + j] += aw[j];
            if (db) db[j0 + j] += ab[j];
        }
    }
}

/* ---- GroupNorm ------------------------------------------------------------------ */

void dap_groupnorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int n, int c, int hw, int g, float eps) {
    DAP_ASSERT(n >= 0 && c > 0 && hw > 0 && g > 0 && c % g == 0);
    const int par = (size_t)n * c * hw >= PAR_MIN;
    int cg = c / g;
    double cnt = (double)cg * hw;
#pragma omp parallel for schedule(static) if (par)
    for (int ng = 0; ng < n * g; ng++) {
        int gi = ng % g;
        const float *x = inp + (size_t)ng * cg * hw; /* (CG, HW) */
        float *o = out + (size_t)ng * cg * hw;
        double s = 0.0;
        for (int k = 0; k < cg; k++) s += run_sum(x + (size_t)k * hw, hw);
        float m = (float)(s / cnt);
        double v = 0.0;
        for (int k = 0; k < cg; k++) v += run_sqdev(x + (size_t)k * hw, hw, m);
        float rs = (float)(1.0 / sqrt(v / cnt + eps));
        for (int k = 0; k < cg; k++) {
            int ch = gi * cg + k;
            float sc = w ? w[ch] * rs : rs;
            run_affine(o + (size_t)k * hw, x + (size_t)k * hw, hw, m, sc, b ? b[ch] : 0.0f);
        }
        if (mean) mean[ng] = m;
        if (rstd) rstd[ng] = rs;
    }
}

/* One (sample, group): per-channel sums feed dw/db (when given) and the group sums for
 * dinp (when given). */
static void groupnorm_backward_one(float *dinp, float *dw, float *db, const float *dout,
                                   const float *inp, const float *w, float m, float rs, int ch0,
                                   int cg, int hw) {
    double sg = 0.0, sgx = 0.0; /* sum w*dy, sum w*dy*(x - m) over the group */
    for (int k = 0; k < cg; k++) {
        float sdy, sdyx;
        run_dsums(dout + (size_t)k * hw, inp + (size_t)k * hw, hw, m, &sdy, &sdyx);
        float wk = w ? w[ch0 + k] : 1.0f;
        sg += (double)wk * sdy;
        sgx += (double)wk * sdyx;
        if (dw) dw[ch0 + k] += sdyx * rs;
        if (db) db[ch0 + k] += sdy;
    }
    if (!dinp) return;
    double cnt = (double)cg * hw;
    float mg = (float)(sg / cnt);             /* mean(g) */
    float mgx = (float)(sgx * rs / cnt) * rs; /* mean(g * xhat) * rstd */
    for (int k = 0; k < cg; k++) {
        const float *x = inp + (size_t)k * hw, *dy = dout + (size_t)k * hw;
        float *dx = dinp + (size_t)k * hw;
        float wk = w ? w[ch0 + k] : 1.0f;
#pragma omp simd
        for (int j = 0; j < hw; j++) dx[j] = rs * (wk * dy[j] - mg - (x[j] - m) * mgx);
    }
}

void dap_groupnorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int n, int c,
                            int hw, int g) {
    DAP_ASSERT(n >= 0 && c > 0 && hw > 0 && g > 0 && c % g == 0);
    const int par = (size_t)n * c * hw >= PAR_MIN;
    int cg = c / g;
    size_t gsz = (size_t)cg * hw;
    if (g >= 8 || (!dw && !db)) {
        /* Many groups (instance norm): each thread owns whole groups over all samples,
         * so dw/db accumulate race-free in sample order, in one sweep. When only dinp is
         * asked, the same loop is parallel over (sample, group). */
        if (dw || db) {
#pragma omp parallel for schedule(static) if (par)
            for (int gi = 0; gi < g; gi++)
                for (int ni = 0; ni < n; ni++) {
                    size_t off = ((size_t)ni * g + gi) * gsz;
                    groupnorm_backward_one(dinp ? dinp + off : NULL, dw, db, dout + off, inp + off,
                                           w, mean[ni * g + gi], rstd[ni * g + gi], gi * cg, cg,
                                           hw);
                }
        } else {
#pragma omp parallel for schedule(static) if (par)
            for (int ng = 0; ng < n * g; ng++) {
                size_t off = (size_t)ng * gsz;
                groupnorm_backward_one(dinp + off, NULL, NULL, dout + off, inp + off, w, mean[ng],
                                       rstd[ng], (ng % g) * cg, cg, hw);
            }
        }
        return;
    }
    /* Few groups: dinp parallel over (sample, group), then dw/db parallel over channels. */
    if (dinp) {
#pragma omp parallel for schedule(static) if (par)
        for (int ng = 0; ng < n * g; ng++) {
            size_t off = (size_t)ng * gsz;
            groupnorm_backward_one(dinp + off, NULL, NULL, dout + off, inp + off, w, mean[ng],
                                   rstd[ng], (ng % g) * cg, cg, hw);
        }
    }
#pragma omp parallel for schedule(static) if (par)
    for (int ch = 0; ch < c; ch++) {
        int gi = ch / cg;
        for (int ni = 0; ni < n; ni++) {
            size_t off = ((size_t)ni * c + ch) * hw;
            float sdy, sdyx;
            run_dsums(dout + off, inp + off, hw, mean[ni * g + gi], &sdy, &sdyx);
            if (dw) dw[ch] += sdyx * rstd[ni * g + gi];
            if (db) db[ch] += sdy;
        }
    }
}

/* ---- BatchNorm2d ---------------------------------------------------------------- */

void dap_batchnorm_forward_train(float *out, float *mean, float *rstd, float *running_mean,
                                 float *running_var, const float *inp, const float *w,
                                 const float *b, int n, int c, int hw, float eps, float momentum) {
    DAP_ASSERT(n > 0 && c > 0 && hw > 0);
    const int par = (size_t)n * c * hw >= PAR_MIN;
    double cnt = (double)n * hw;
#pragma omp parallel for schedule(static) if (par)
    for (int ch = 0; ch < c; ch++) {
        double s = 0.0;
        for (int ni = 0; ni < n; ni++) s += run_sum(inp + ((size_t)ni * c + ch) * hw, hw);
        float m = (float)(s / cnt);
        double v = 0.0;
        for (int ni = 0; ni < n; ni++) v += run_sqdev(inp + ((size_t)ni * c + ch) * hw, hw, m);
        double var = v / cnt; /* biased: normalises this batch */
        float rs = (float)(1.0 / sqrt(var + eps));
        float sc = w ? w[ch] * rs : rs;
        float sh = b ? b[ch] : 0.0f;
        for (int ni = 0; ni < n; ni++) {
            size_t off = ((size_t)ni * c + ch) * hw;
            run_affine(out + off, inp + off, hw, m, sc, sh);
        }
        if (mean) mean[ch] = m;
        if (rstd) rstd[ch] = rs;
        /* PyTorch: running = (1 - momentum) * running + momentum * batch, unbiased var. */
        if (running_mean)
            running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * m;
        if (running_var) {
            double uvar = cnt > 1.0 ? v / (cnt - 1.0) : var;
            running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * uvar);
        }
    }
}

void dap_batchnorm_backward_train(float *dinp, float *dw, float *db, const float *dout,
                                  const float *inp, const float *w, const float *mean,
                                  const float *rstd, int n, int c, int hw) {
    DAP_ASSERT(n > 0 && c > 0 && hw > 0);
    const int par = (size_t)n * c * hw >= PAR_MIN;
    double cnt = (double)n * hw;
#pragma omp parallel for schedule(static) if (par)
    for (int ch = 0; ch < c; ch++) {
        float m = mean[ch], rs = rstd[ch];
        double sdy = 0.0, sdyx = 0.0;
        for (int ni = 0; ni < n; ni++) {
            size_t off = ((size_t)ni * c + ch) * hw;
            float a, bb;
            run_dsums(dout + off, inp + off, hw, m, &a, &bb);
            sdy += a;
            sdyx += bb;
        }
        if (dw) dw[ch] += (float)(sdyx * rs);
        if (db) db[ch] += (float)sdy;
        if (!dinp) continue;
        /* dx = w rs (dy - mean(dy) - xhat mean(dy xhat)) */
        float wk = w ? w[ch] : 1.0f;
        float k = wk * rs;
        float mdy = (float)(sdy / cnt);
        float c2 = (float)(sdyx * rs / cnt) * rs; /* mean(dy xhat) * rs */
        for (int ni = 0; ni < n; ni++) {
            size_t off = ((size_t)ni * c + ch) * hw;
            const float *x = inp + off, *dy = dout + off;
            float *dx = dinp + off;
#pragma omp simd
            for (int j = 0; j < hw; j++) dx[j] = k * (dy[j] - mdy - (x[j] - m) * c2);
        }
    }
}

void dap_batchnorm_forward_eval(float *out, const float *inp, const float *w, const float *b,
                                const float *running_mean, const float *running_var, int n, int c,
                                int hw, float eps) {
    DAP_ASSERT(n >= 0 && c > 0 && hw > 0);
    const int par = (size_t)n * c * hw >= PAR_MIN;
#pragma omp parallel for schedule(static) if (par)
    for (int nc = 0; nc < n * c; nc++) {
        int ch = nc % c;
        float rs = 1.0f / sqrtf(running_var[ch] + eps);
        float sc = w ? w[ch] * rs : rs;
        run_affine(out + (size_t)nc * hw, inp + (size_t)nc * hw, hw, running_mean[ch], sc,
                   b ? b[ch] : 0.0f);
    }
}

void dap_batchnorm_backward_eval(float *dinp, float *dw, float *db, const float *dout,
                                 const float *inp, const float *w, const float *running_mean,
                                 const float *running_var, int n, int c, int hw, float eps) {
    DAP_ASSERT(n >= 0 && c > 0 && hw > 0);
    const int par = (size_t)n * c * hw >= PAR_MIN;
    if (dinp) {
#pragma omp parallel for schedule(static) if (par)
        for (int nc = 0; nc < n * c; nc++) {
            int ch = nc % c;
            float sc = (w ? w[ch] : 1.0f) / sqrtf(running_var[ch] + eps);
            const float *dy = dout + (size_t)nc * hw;
            float *dx = dinp + (size_t)nc * hw;
#pragma omp simd
            for (int j = 0; j < hw; j++) dx[j] = dy[j] * sc;
        }
    }
    if (!dw && !db) return;
#pragma omp parallel for schedule(static) if (par)
    for (int ch = 0; ch < c; ch++) {
        float m = running_mean[ch], rs = 1.0f / sqrtf(running_var[ch] + eps);
        double sdy = 0.0, sdyx = 0.0;
        for (int ni = 0; ni < n; ni++) {
            size_t off = ((size_t)ni * c + ch) * hw;
            float a, bb;
            run_dsums(dout + off, inp + off, hw, m, &a, &bb);
            sdy += a;
            sdyx += bb;
        }
        if (dw) dw[ch] += (float)(sdyx * rs);
        if (db) db[ch] += (float)sdy;
    }
}
