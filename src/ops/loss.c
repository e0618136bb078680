/*
 * loss.c: softmax cross-entropy (hard and soft targets), distillation KL with a
 * temperature, and MSE. Softmaxes subtract the row maximum; losses are formed from
 * log-sum-exp (never log of a rounded probability), so a confident wrong prediction
 * gives a large finite loss. Scalar losses are reduced in double over a fixed partition
 * into blocks, so the value does not depend on the thread count.
 */
#include <math.h>
#include <stddef.h>

#include "core/core.h"
#include "ops/ops.h"

/* Fixed number of reduction blocks (independent of the thread count). */
#define LOSS_BLOCKS 64
/* Below this many elements the loops run on the calling thread. */
#define PAR_MIN ((size_t)1 << 14)

static size_t block_lo(size_t n, int blk) { return n * (size_t)blk / LOSS_BLOCKS; }

static double sum_blocks(const double *part) {
    double s = 0.0;
    for (int i = 0; i < LOSS_BLOCKS; i++) s += part[i];
    return s;
}

/* Writes p = softmax(x * inv_t) and returns the log-sum-exp of x * inv_t. */
static double softmax_row(float *p, const float *x, int k, float inv_t) {
    float mx = x[0] * inv_t;
    for (int j = 1; j < k; j++) mx = fmaxf(mx, x[j] * inv_t);
    double s = 0.0;
    for (int j = 0; j < k; j++) {
        float e = expf(x[j] * inv_t - mx);
        p[j] = e;
        s += e;
    }
    float inv = (float)(1.0 / s);
    for (int j = 0; j < k; j++) p[j] *= inv;
    return (double)mx + log(s);
}

/* ---- cross-entropy, integer targets ------------------------------------------- */

float dap_xent_forward(float *probs, const float *logits, const int *targets, int n, int k) {
    DAP_ASSERT(n > 0 && k > 0);
    const int par = (size_t)n * k >= PAR_MIN;
    double part[LOSS_BLOCKS];
#pragma omp parallel for schedule(static) if (par)
    for (int blk = 0; blk < LOSS_BLOCKS; blk++) {
        double s = 0.0;
        for (size_t i = block_lo(n, blk); i < block_lo(n, blk + 1); i++) {
            const float *l = logits + i * k;
            int tg = targets[i];
            DAP_ASSERT(tg >= 0 && tg < k);
            double lse = softmax_row(probs + i * k, l, k, 1.0f);
            s += lse - l[tg];
        }
        part[blk] = s;
    }
    return (float)(sum_blocks(part) / n);
}

void dap_xent_backward(float *dlogits, const float *probs, const int *targets, int n, int k,
                       float dloss) {
    DAP_ASSERT(n > 0 && k > 0);
    const int par = (size_t)n * k >= PAR_MIN;
    float f = dloss / (float)n;
#pragma omp parallel for schedule(static) if (par)
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        float *d = dlogits + (size_t)i * k;
        for (int j = 0; j < k; j++) d[j] = f * p[j];
        d[targets[i]] -= f;
    }
}

/* ---- cross-entropy, soft targets -------------------------------------------------- */

float dap_xent_soft_forward(float *probs, const float *logits, const float *targets, int n, int k) {
    DAP_ASSERT(n > 0 && k > 0);
    const int par = (size_t)n * k >= PAR_MIN;
    double part[LOSS_BLOCKS];
#pragma omp parallel for schedule(static) if (par)
    for (int blk = 0; blk < LOSS_BLOCKS; blk++) {
        double s = 0.0;
        for (size_t i = block_lo(n, blk); i < block_lo(n, blk + 1); i++) {
            const float *l = logits + i * k, *tg = targets + i * k;
            double lse = softmax_row(probs + i * k, l, k, 1.0f);
            for (int j = 0; j < k; j++)
                if (tg[j] != 0.0f) s += (double)tg[j] * (lse - l[j]); /* -t log p */
        }
        part[blk] = s;
    }
    return (float)(sum_blocks(part) / n);
}

void dap_xent_soft_backward(float *dlogits, const float *probs, const float *targets, int n, int k,
                            float dloss) {
    DAP_ASSERT(n > 0 && k > 0);
    const int par = (size_t)n * k >= PAR_MIN;
    float f = dloss / (float)n;
#pragma omp parallel for schedule(static) if (par)
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k, *tg = targets + (size_t)i * k;
        float *d = dlogits + (size_t)i * k;
        /* d/dl_j sum_m t_m (lse - l_m) = (sum_m t_m) p_j - t_j; sum t = 1 by contract,
         * kept exact so slightly unnormalised mixes still get their true gradient. */
        float st = 0.0f;
        for (int j = 0; j < k; j++) st += tg[j];
        for (int j = 0; j < k; j++) d[j] = f * (st * p[j] - tg[j]);
    }
}

/* ---- distillation KL ---------------------------------------------------------------- */

float dap_kl_forward(float *p_s, float *p_t, const float *student, const float *teacher, int n,
                     int k, float temperature, int scale_t2) {
    DAP_ASSERT(n > 0 && k > 0 && temperature > 0.0f);
    const int par = (size_t)n * k >= PAR_MIN;
    float inv_t = 1.0f / temperature;
    double part[LOSS_BLOCKS];
#pragma omp parallel for schedule(static) if (par)
    for (int blk = 0; blk < LOSS_BLOCKS; blk++) {
        double s = 0.0;
        for (size_t i = block_lo(n, blk); i < block_lo(n, blk + 1); i++) {
            const float *sr = student + i * k, *tr = teacher + i * k;
            const float *pt = p_t + i * k;
            double lse_s = softmax_row(p_s + i * k, sr, k, inv_t);
            double lse_t = softmax_row(p_t + i * k, tr, k, inv_t);
            /* sum_j p_t (log p_t - log p_s), logs from log-sum-exp; p_t = 0 adds 0 */
            for (int j = 0; j < k; j++)
                if (pt[j] > 0.0f)
                    s += (double)pt[j] * (((double)tr[j] * inv_t - lse_t) -
                                          ((double)sr[j] * inv_t - lse_s));
        }
        part[blk] = s;
    }
    double kl = sum_blocks(part) / n;
    if (scale_t2) kl *= (double)temperature * temperature;
    return (float)kl;
}

void dap_kl_backward(float *dstudent, const float *p_s, const float *p_t, int n, int k,
                     float temperature, int scale_t2, float dloss) {
    DAP_ASSERT(n > 0 && k > 0 && temperature > 0.0f);
    size_t nk = (size_t)n * k;
    const int par = nk >= PAR_MIN;
    /* d KL / d student = (p_s - p_t) / T per row (mean over N, times T^2 if asked) */
    float f = dloss / ((float)n * temperature);
    if (scale_t2) f *= temperature * temperature;
#pragma omp parallel for simd schedule(static) if (par)
    for (size_t i = 0; i < nk; i++) dstudent[i] = f * (p_s[i] - p_t[i]);
}

/* ---- mean squared error --------------------------------------------------------------- */

float dap_mse_forward(const float *a, const float *b, size_t n) {
    DAP_ASSERT(n > 0);
    const int par = n >= PAR_MIN;
    double part[LOSS_BLOCKS];
#pragma omp parallel for schedule(static) if (par)
    for (int blk = 0; blk < LOSS_BLOCKS; blk++) {
        double s = 0.0;
        size_t lo = block_lo(n, blk), hi = block_lo(n, blk + 1);
#pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++) {
            double d = (double)a[i] - (double)b[i];
            s += d * d;
        }
        part[blk] = s;
    }
    return (float)(sum_blocks(part) / (double)n);
}

void dap_mse_backward(float *da, float *db, const float *a, const float *b, size_t n, float dloss) {
    DAP_ASSERT(n > 0);
    const int par = n >= PAR_MIN;
    float f = 2.0f * dloss / (float)n;
#pragma omp parallel for simd schedule(static) if (par)
    for (size_t i = 0; i < n; i++) {
        float g = f * (a[i] - b[i]);
        if (da) da[i] = g;
        if (db) db[i] = -g;
    }
}
