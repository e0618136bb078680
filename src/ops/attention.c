/*
 * attention.c: the multi-head self-attention core on packed qkv (B, T, 3C), timm layout
 * qkv.reshape(B, T, 3, NH, HS): head h of q, k, v starts at column h*HS, C + h*HS and
 * 2C + h*HS of each token row. Per (batch, head) the matrices are read in place with
 * leading dimension 3C (no transposes, no copies):
 *     att = softmax(q k^T / sqrt(HS))            (T, T), saved for backward
 *     out[:, h*HS : (h+1)*HS] = att v            (T, HS), leading dimension C
 * The (batch, head) items run in an OpenMP loop around cblas_sgemm; OpenBLAS's OpenMP
 * build runs single-threaded inside a parallel region, so the items are the unit of
 * parallel work. Each item's arithmetic is independent of the thread count, so results
 * are identical for any number of threads.
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/core.h"
#include "ops/ops.h"

/* Scratch slots: at most this many (batch, head) items are in flight, each with its
 * own (T, T) scratch. A fixed number (not the thread count) so that the size asked by
 * dap_attention_work_floats cannot go stale when the thread count changes. */
#define ATT_SLOTS 32
/* Below this many multiply-adds (B NH T T HS) the items run on the calling thread. */
#define PAR_MIN ((size_t)1 << 15)

static int att_slots(int b, int nh) {
    int items = b * nh;
    return items < ATT_SLOTS ? items : ATT_SLOTS;
}

size_t dap_attention_work_floats(int b, int t, int c, int nh) {
    (void)c;
    return (size_t)att_slots(b, nh) * (size_t)t * (size_t)t;
}

/* exp(x) for x <= 0 (softmax after max subtraction), written so that gcc vectorises it
 * under `omp simd`: 2^n exp(r) with |r| <= ln2/2 and a degree-7 polynomial (Cephes
 * expf coefficients), about 1 ulp. Inputs below -87 flush to ~1e-38. */
static inline float exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    float fn = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - fn * 0.693359375f;
    r = r + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)fn + 127) << 23; /* 2^n, n in [-126, 0] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* In-place softmax of each of the t rows of a (T, T) block. */
static void softmax_rows(float *a, int t) {
    for (int i = 0; i < t; i++) {
        float *row = a + (size_t)i * t;
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < t; j++) mx = row[j] > mx ? row[j] : mx;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < t; j++) {
            float e = exp_neg(row[j] - mx);
            row[j] = e;
            s += e;
        }
        float inv = 1.0f / s;
#pragma omp simd
        for (int j = 0; j < t; j++) row[j] *= inv;
    }
}

void dap_attention_forward(float *out, float *att, const float *qkv, int b, int t, int c, int nh,
                           float *work) {
    DAP_ASSERT(b > 0 && t > 0 && nh > 0 && c % nh == 0);
    DAP_ASSERT(att || work); /* without att the probabilities live in work */
    int hs = c / nh, ld = 3 * c, items = b * nh, slots = att_slots(b, nh);
    const int par = (size_t)items * t * t * hs >= PAR_MIN;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for schedule(static, 1) if (par)
    for (int s = 0; s < slots; s++) {
        for (int it = s; it < items; it += slots) {
            int bi = it / nh, h = it % nh;
            const float *q = qkv + (size_t)bi * t * ld + (size_t)h * hs; /* (T, HS), ld 3C */
            const float *k = q + c, *v = q + 2 * c;
            float *a = att ? att + (size_t)it * t * t : work + (size_t)s * t * t; /* (T, T) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, t, hs, scale, q, ld, k, ld,
                        0.0f, a, t);
            softmax_rows(a, t);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, hs, t, 1.0f, a, t, v, ld,
                        0.0f, out + (size_t)bi * t * c + (size_t)h * hs, c);
        }
    }
}

void dap_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                            int b, int t, int c, int nh, float *work) {
    DAP_ASSERT(b > 0 && t > 0 && nh > 0 && c % nh == 0 && work);
    int hs = c / nh, ld = 3 * c, items = b * nh, slots = att_slots(b, nh);
    const int par = (size_t)items * t * t * hs >= PAR_MIN;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for schedule(static, 1) if (par)
    for (int s = 0; s < slots; s++) {
        float *ds = work + (size_t)s * t * t; /* (T, T): d att, then d scores */
        for (int it = s; it < items; it += slots) {
            int bi = it / nh, h = it % nh;
            size_t qoff = (size_t)bi * t * ld + (size_t)h * hs;
            const float *q = qkv + qoff, *k = q + c, *v = q + 2 * c; /* (T, HS), ld 3C */
            float *dq = dqkv + qoff, *dk = dq + c, *dv = dq + 2 * c;
            const float *a = att + (size_t)it * t * t;                   /* (T, T) */
            const float *dy = dout + (size_t)bi * t * c + (size_t)h * hs; /* (T, HS), ld C */
            /* d att = dout v^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, t, hs, 1.0f, dy, c, v, ld,
                        0.0f, ds, t);
            /* softmax backward, with the score scale folded in:
             * d scores = scale * att * (d att - rowsum(att * d att)) */
            for (int i = 0; i < t; i++) {
                const float *ar = a + (size_t)i * t;
                float *dr = ds + (size_t)i * t;
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int j = 0; j < t; j++) dot += ar[j] * dr[j];
#pragma omp simd
                for (int j = 0; j < t; j++) dr[j] = scale * ar[j] * (dr[j] - dot);
            }
            /* dq = dS k, dk = dS^T q, dv = att^T dout (all overwrite) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, hs, t, 1.0f, ds, t, k, ld,
                        0.0f, dq, ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t, hs, t, 1.0f, ds, t, q, ld,
                        0.0f, dk, ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t, hs, t, 1.0f, a, t, dy, c,
                        0.0f, dv, ld);
        }
    }
}
