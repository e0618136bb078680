/*
 * vae_cuda.cu: the operations of the SD VAE's forward (models/vae.c) on the GPU, on
 * device buffers: convolutions as im2col of one image + one SGEMM, GroupNorm (+ SiLU),
 * the residual add, nearest x2 upsampling and the mid block's one-head attention (three
 * SGEMMs and a row softmax per image). vae.c keeps its walk over the network and its
 * memory plan; with a device model each op calls the one here instead of ops.h.
 *
 * The weights go up once (dap_vae_cuda_create) and are addressed by their offset in the
 * host table. Statistics and softmax sums accumulate in double, as the CPU ops do; results
 * match the CPU to float rounding (summation order), not bit for bit.
 */
extern "C" {
#include "cuda/cuda.h"
#include "core/core.h"
}

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cuda/check.cuh"  /* CK, CB, LAUNCHED */
#include "cuda/launch.cuh" /* THREADS, blocks_for, block_sum */

#define GRID_LOOP(i, total)                                                                    \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(total);        \
         i += (size_t)gridDim.x * blockDim.x)

struct dap_vae_cuda {
    cudaStream_t st;
    cublasHandle_t h;
    float *w; /* the weights table */
    size_t nw;
};

int dap_vae_cuda_create(dap_vae_cuda **out, const float *weights, size_t n) {
    *out = NULL;
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess)
        return dap_error(DAP_ERR_MISSING, "device cuda: no usable GPU for the VAE");
    if (n * sizeof(float) > free_b)
        return dap_error(DAP_ERR_NOMEM, "the VAE's weights (%.2f GiB) do not fit in the GPU's free memory (%.2f GiB)",
                         n * sizeof(float) / 1073741824.0, free_b / 1073741824.0);
    dap_vae_cuda *d = (dap_vae_cuda *)dap_calloc(1, sizeof *d);
    CK(cudaStreamCreateWithFlags(&d->st, cudaStreamNonBlocking));
    CB(cublasCreate(&d->h));
    CB(cublasSetStream(d->h, d->st));
    CB(cublasSetMathMode(d->h, CUBLAS_DEFAULT_MATH)); /* FP32, no TF32 */
    d->nw = n;
    d->w = (float *)dap_vae_cuda_alloc(d, n);
    CK(cudaMemcpyAsync(d->w, weights, n * sizeof(float), cudaMemcpyHostToDevice, d->st));
    CK(cudaStreamSynchronize(d->st));
    *out = d;
    return DAP_OK;
}

void dap_vae_cuda_destroy(dap_vae_cuda *d) {
    if (!d) return;
    cudaStreamSynchronize(d->st);
    cudaFree(d->w);
    cublasDestroy(d->h);
    cudaStreamDestroy(d->st);
    free(d);
}

const float *dap_vae_cuda_weight(const dap_vae_cuda *d, size_t offset) {
    DAP_ASSERT(offset < d->nw);
    return d->w + offset;
}

float *dap_vae_cuda_alloc(dap_vae_cuda *d, size_t floats) {
    (void)d;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, (floats ? floats : 1) * sizeof(float));
    if (e != cudaSuccess) {
        fprintf(stderr, "dap: CUDA: could not allocate %.1f MiB on the GPU for the VAE: %s\n",
                (double)floats * sizeof(float) / 1048576.0, cudaGetErrorString(e));
        exit(1);
    }
    return (float *)p;
}

void dap_vae_cuda_free(dap_vae_cuda *d, float *p) {
    if (!p) return;
    CK(cudaStreamSynchronize(d->st));
    cudaFree(p);
}

void dap_vae_cuda_copy(dap_vae_cuda *d, float *dst, const float *src, size_t floats) {
    CK(cudaMemcpyAsync(dst, src, floats * sizeof(float), cudaMemcpyDefault, d->st));
    CK(cudaStreamSynchronize(d->st));
}

/* ---- convolution ------------------------------------------------------------------------- */

/* col (c k k, oh ow) of one image (c, h, w); reads outside the image are zero, so a
 * padding of `pad` on the top-left and whatever oh, ow imply on the bottom-right. */
__global__ static void im2col_k(float *col, const float *x, int c, int h, int w, int k, int stride, int pad,
                                int oh, int ow) {
    const size_t P = (size_t)oh * ow;
    GRID_LOOP(i, (size_t)c * k * k * P) {
        size_t p = i % P, r = i / P;
        int kx = (int)(r % k), ky = (int)(r / k % k), ch = (int)(r / ((size_t)k * k));
        int oy = (int)(p / ow), ox = (int)(p % ow);
        int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
        col[i] = iy >= 0 && iy < h && ix >= 0 && ix < w ? x[((size_t)ch * h + iy) * w + ix] : 0.0f;
    }
}

/* y (rows, cols) += b[row] */
__global__ static void bias_rows_k(float *y, const float *b, int rows, size_t cols) {
    GRID_LOOP(i, (size_t)rows * cols) y[i] += b[i / cols];
}

/* Row-major C (m, n) = alpha A (m, k) B (k, n) + beta C, A and B transposed when ta / tb,
 * as dap_gemm: column-major cuBLAS computes C^T = op(B)^T op(A)^T. */
static void gemm(dap_vae_cuda *d, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    CB(cublasSgemm(d->h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb,
                   a, lda, &beta, c, ldc));
}

void dap_vae_cuda_conv(dap_vae_cuda *d, float *out, const float *in, const float *wt, const float *bias, int n,
                       int c, int h, int w, int oc, int k, int stride, int pad, int oh, int ow, float *col) {
    const size_t P = (size_t)oh * ow, K = (size_t)c * k * k;
    for (int i = 0; i < n; i++) {
        const float *x = in + (size_t)i * c * h * w;
        float *y = out + (size_t)i * oc * P;
        const float *b = x;
        if (!(k == 1 && stride == 1 && pad == 0 && oh == h && ow == w)) {
            im2col_k<<<blocks_for(K * P), THREADS, 0, d->st>>>(col, x, c, h, w, k, stride, pad, oh, ow);
            LAUNCHED();
            b = col;
        }
        gemm(d, 0, 0, oc, (int)P, (int)K, 1.0f, wt, (int)K, b, (int)P, 0.0f, y, (int)P);
        if (bias) {
            bias_rows_k<<<blocks_for((size_t)oc * P), THREADS, 0, d->st>>>(y, bias, oc, P);
            LAUNCHED();
        }
    }
}

/* ---- GroupNorm, add, upsampling ---------------------------------------------------------- */

/* One block per (image, group): the group's (cg, hw) values are contiguous. */
__global__ static void groupnorm_k(float *out, const float *in, const float *g, const float *b, int c, int hw,
                                   int groups, float eps, int silu) {
    __shared__ double sh[THREADS];
    const int ng = blockIdx.x, gi = ng % groups, cg = c / groups;
    const size_t cnt = (size_t)cg * hw;
    const float *x = in + (size_t)ng * cnt;
    float *o = out + (size_t)ng * cnt;
    double s = 0.0;
    for (size_t i = threadIdx.x; i < cnt; i += THREADS) s += x[i];
    const float m = (float)(block_sum(s, sh) / (double)cnt);
    double v = 0.0;
    for (size_t i = threadIdx.x; i < cnt; i += THREADS) {
        float dv = x[i] - m;
        v += (double)dv * dv;
    }
    const float rs = (float)(1.0 / sqrt(block_sum(v, sh) / (double)cnt + eps));
    for (size_t i = threadIdx.x; i < cnt; i += THREADS) {
        int ch = gi * cg + (int)(i / hw);
        float y = (x[i] - m) * (g ? g[ch] * rs : rs) + (b ? b[ch] : 0.0f);
        o[i] = silu ? y / (1.0f + expf(-y)) : y;
    }
}

void dap_vae_cuda_groupnorm(dap_vae_cuda *d, float *out, const float *in, const float *g, const float *b, int n,
                            int c, int hw, int groups, float eps, int silu) {
    groupnorm_k<<<n * groups, THREADS, 0, d->st>>>(out, in, g, b, c, hw, groups, eps, silu);
    LAUNCHED();
}

__global__ static void add_k(float *y, const float *a, size_t n) {
    GRID_LOOP(i, n) y[i] += a[i];
}

void dap_vae_cuda_add(dap_vae_cuda *d, float *y, const float *a, size_t n) {
    add_k<<<blocks_for(n), THREADS, 0, d->st>>>(y, a, n);
    LAUNCHED();
}

__global__ static void upsample2_k(float *out, const float *in, size_t planes, int h, int w) {
    const int ow = 2 * w;
    const size_t ohw = (size_t)4 * h * w;
    GRID_LOOP(i, planes * ohw) {
        size_t pl = i / ohw, r = i % ohw;
        int oy = (int)(r / ow), ox = (int)(r % ow);
        out[i] = in[pl * h * w + (size_t)(oy / 2) * w + ox / 2];
    }
}

void dap_vae_cuda_upsample2(dap_vae_cuda *d, float *out, const float *in, int n, int c, int h, int w) {
    upsample2_k<<<blocks_for((size_t)n * c * 4 * h * w), THREADS, 0, d->st>>>(out, in, (size_t)n * c, h, w);
    LAUNCHED();
}

/* ---- the mid block's attention ----------------------------------------------------------- */

/* One block per row of s (rows, t): s = softmax(s), sums in double. */
__global__ static void softmax_rows_k(float *s, int t) {
    __shared__ double sh[THREADS];
    __shared__ float mx_sh[THREADS];
    float *row = s + (size_t)blockIdx.x * t;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < t; j += THREADS) mx = fmaxf(mx, row[j]);
    mx_sh[threadIdx.x] = mx;
    __syncthreads();
    for (int k = THREADS / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) mx_sh[threadIdx.x] = fmaxf(mx_sh[threadIdx.x], mx_sh[threadIdx.x + k]);
        __syncthreads();
    }
    mx = mx_sh[0];
    double sum = 0.0;
    for (int j = threadIdx.x; j < t; j += THREADS) {
        float e = expf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    const float inv = (float)(1.0 / block_sum(sum, sh));
    for (int j = threadIdx.x; j < t; j += THREADS) row[j] *= inv;
}

void dap_vae_cuda_attention(dap_vae_cuda *d, float *x, const float *a, const float *const wts[8], int n, int c,
                            int t, float *scratch) {
    const float *wq = wts[0], *bq = wts[1], *wk = wts[2], *bk = wts[3], *wv = wts[4], *bv = wts[5];
    const float *wo = wts[6], *bo = wts[7];
    const size_t ct = (size_t)c * t;
    float *q = scratch, *k = q + ct, *v = k + ct, *s = v + ct; /* s: (t, t) */
    const float scale = 1.0f / sqrtf((float)c);
    for (int i = 0; i < n; i++) {
        const float *ai = a + i * ct;
        float *xi = x + i * ct;
        const float *ws[3] = {wq, wk, wv}, *bs[3] = {bq, bk, bv};
        float *dst[3] = {q, k, v};
        for (int j = 0; j < 3; j++) { /* (c, t) = W (c, c) a (c, t) + b */
            gemm(d, 0, 0, c, t, c, 1.0f, ws[j], c, ai, t, 0.0f, dst[j], t);
            bias_rows_k<<<blocks_for(ct), THREADS, 0, d->st>>>(dst[j], bs[j], c, (size_t)t);
            LAUNCHED();
        }
        gemm(d, 1, 0, t, t, c, scale, q, t, k, t, 0.0f, s, t); /* s (t, t) = q^T k / sqrt(c) */
        softmax_rows_k<<<t, THREADS, 0, d->st>>>(s, t);
        LAUNCHED();
        gemm(d, 0, 1, c, t, t, 1.0f, v, t, s, t, 0.0f, q, t);   /* o (c, t) = v s^T, over q */
        gemm(d, 0, 0, c, t, c, 1.0f, wo, c, q, t, 1.0f, xi, t); /* x += W_o o */
        bias_rows_k<<<blocks_for(ct), THREADS, 0, d->st>>>(xi, bo, c, (size_t)t);
        LAUNCHED();
    }
}
