/*
 * linear.c: the fully connected layer and the row-major sgemm wrapper every other
 * op uses. GEMMs go to OpenBLAS; the bias add and the bias gradient are our own
 * OpenMP loops.
 *
 * Determinism: OpenBLAS's own threading changes the rounding of C with the thread count
 * (tile edges move with the partition; about 1e-6 relative). dap_gemm therefore splits C
 * itself into column or row blocks whose boundaries depend only on the shape and runs one
 * single-threaded sgemm per block inside an OpenMP loop (the OpenMP build of OpenBLAS
 * stays on one thread inside a parallel region). Any thread count gives the same bits,
 * and on 2 cores this is as fast as OpenBLAS's threading (faster for skinny shapes).
 */
#include <cblas.h>
#include <string.h>

#include "core/core.h"
#include "ops/ops.h"

/* Below this many floats an elementwise loop stays on one thread. */
#define LINEAR_OMP_MIN 65536
/* Products m*n*k up to this size OpenBLAS runs on one thread by itself
 * (SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD of its default build). */
#define GEMM_SERIAL_MNK 262144.0
/* Blocks of C: at least GEMM_MIN_BLOCKS of them, each at most GEMM_MAX_WIDTH wide and a
 * multiple of GEMM_ALIGN (the sgemm kernel's tile), along the longer side of C. */
#define GEMM_MIN_BLOCKS 4
#define GEMM_MAX_WIDTH 256
#define GEMM_ALIGN 16

static void sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
                n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void dap_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc) {
    DAP_ASSERT(m >= 0 && n >= 0 && k >= 0);
    if (m == 0 || n == 0) return;
    if (k == 0) { /* C = beta * C; BLAS implementations disagree on this corner */
        for (int i = 0; i < m; i++) {
            float *row = c + (size_t)i * ldc;
            if (beta == 0.0f) memset(row, 0, (size_t)n * sizeof(float));
            else
                for (int j = 0; j < n; j++) row[j] *= beta;
        }
        return;
    }
    if ((double)m * n * k <= GEMM_SERIAL_MNK) {
        sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    const int split_cols = n >= m, len = split_cols ? n : m;
    int nblocks = (len + GEMM_MAX_WIDTH - 1) / GEMM_MAX_WIDTH;
    if (nblocks < GEMM_MIN_BLOCKS) nblocks = GEMM_MIN_BLOCKS;
    int width = (len + nblocks - 1) / nblocks;
    width = (width + GEMM_ALIGN - 1) / GEMM_ALIGN * GEMM_ALIGN;
    nblocks = (len + width - 1) / width;
    /* even a single block goes through the parallel loop: inside it OpenBLAS stays on
     * one thread, which is what makes the result independent of the thread count */
#pragma omp parallel for schedule(dynamic, 1)
    for (int blk = 0; blk < nblocks; blk++) {
        const int lo = blk * width, cnt = len - lo < width ? len - lo : width;
        if (split_cols) { /* C[:, lo:lo+cnt] = op(A) op(B)[:, lo:lo+cnt] */
            const float *bb = tb ? b + (size_t)lo * ldb : b + lo;
            sgemm(ta, tb, m, cnt, k, alpha, a, lda, bb, ldb, beta, c + lo, ldc);
        } else { /* C[lo:lo+cnt, :] = op(A)[lo:lo+cnt, :] op(B) */
            const float *aa = ta ? a + lo : a + (size_t)lo * lda;
            sgemm(ta, tb, cnt, n, k, alpha, aa, lda, b, ldb, beta, c + (size_t)lo * ldc, ldc);
        }
    }
}

void dap_linear_forward(float *out,       // (N, OC)
                        const float *inp, // (N, IC)
                        const float *w,   // (OC, IC)
                        const float *b,   // (OC) or NULL
                        int n, int ic, int oc) {
    float beta = 0.0f;
    if (b) { /* start from the bias and let sgemm accumulate onto it */
#pragma omp parallel for schedule(static) if ((size_t)n * oc > LINEAR_OMP_MIN)
        for (int i = 0; i < n; i++) memcpy(out + (size_t)i * oc, b, (size_t)oc * sizeof(float));
        beta = 1.0f;
    }
    dap_gemm(0, 1, n, oc, ic, 1.0f, inp, ic, w, ic, beta, out, oc);
}

/* db (OC) += column sums of dout (N, OC). Blocks of 64 columns keep the partial sums
 * in registers while the rows stream past; each column is summed in row order. */
static void bias_grad(float *db, const float *dout, int n, int oc) {
    enum { BLOCK = 64 };
    int nblocks = (oc + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)n * oc > LINEAR_OMP_MIN)
    for (int blk = 0; blk < nblocks; blk++) {
        int o0 = blk * BLOCK, len = oc - o0 < BLOCK ? oc - o0 : BLOCK;
        float acc[BLOCK] = {0};
        for (int i = 0; i < n; i++) {
            const float *row = dout + (size_t)i * oc + o0;
#pragma omp simd
            for (int j = 0; j < len; j++) acc[j] += row[j];
        }
        for (int j = 0; j < len; j++) db[o0 + j] += acc[j];
    }
}

void dap_linear_backward(float *dinp,       // (N, IC) overwritten, or NULL
                         float *dw,         // (OC, IC) accumulated, or NULL
                         float *db,         // (OC) accumulated, or NULL
                         const float *dout, // (N, OC)
                         const float *inp,  // (N, IC)
                         const float *w,    // (OC, IC)
                         int n, int ic, int oc) {
    if (dinp) dap_gemm(0, 0, n, ic, oc, 1.0f, dout, oc, w, ic, 0.0f, dinp, ic);
    if (dw) dap_gemm(1, 0, oc, ic, n, 1.0f, dout, oc, inp, ic, 1.0f, dw, ic);
    if (db) bias_grad(db, dout, n, oc);
}
