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
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif
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

/* exp(x) for x <= 0 (softmax after max subtraction): 2^n exp(r) with n = round(x / ln2),
 * |r| <= ln2/2 and a degree-7 polynomial (Cephes expf coefficients), about 1 ulp.
 * Inputs below -87 give ~1e-38 instead of 0; NaN stays NaN. */
#define EXP_LO -87.0f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f    /* ln2 = C1 - C2, C1 exact in a few bits */
#define EXP_C2 -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

static inline float exp_neg(float x) {
    if (x != x) return x; /* NaN: no float-to-int conversion of it below */
    x = x < EXP_LO ? EXP_LO : x;
    float fn = rintf(x * EXP_LOG2E);
    float r = x - fn * EXP_C1 - fn * EXP_C2;
    float p = EXP_P0;
    p = p * r + EXP_P1;
    p = p * r + EXP_P2;
    p = p * r + EXP_P3;
    p = p * r + EXP_P4;
    p = p * r + EXP_P5;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)fn + 127) << 23; /* 2^n, n in [-126, 0] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#if defined(__AVX2__) && defined(__FMA__)
/* The same function on 8 lanes (gcc does not vectorise the scalar one under the
 * default -ftrapping-math). */
static inline __m256 exp_neg8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(EXP_LO), x); /* NaN in x is kept */
    __m256 fn = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(EXP_C1), x);
    r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(EXP_C2), r);
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(fn), _mm256_set1_epi32(127));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}
#endif

/* row[j] = exp(row[j] - mx) for j < t */
static inline void exp_shifted(float *row, int t, float mx) {
    int j = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 vm = _mm256_set1_ps(mx);
    for (; j + 8 <= t; j += 8)
        _mm256_storeu_ps(row + j, exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vm)));
#endif
    for (; j < t; j++) row[j] = exp_neg(row[j] - mx);
}

/* In-place softmax of each of the t rows of a (T, T) block. */
static void softmax_rows(float *a, int t) {
    for (int i = 0; i < t; i++) {
        float *row = a + (size_t)i * t;
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < t; j++) mx = row[j] > mx ? row[j] : mx;
        exp_shifted(row, t, mx);
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < t; j++) s += row[j];
        float inv = 1.0f / s;
#pragma omp simd
        for (int j = 0; j < t; j++) row[j] *= inv;
    }
}

/* att may be NULL (inference): the probabilities then live in the work slots. */
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
