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
    char b[2][32];
    if (n * sizeof(float) > free_b)
        return dap_error(DAP_ERR_NOMEM, "the VAE's weights (%s) do not fit in the GPU's free memory (%s)",
                         dap_fmt_bytes(b[0], 32, (double)(n * sizeof(float))), dap_fmt_bytes(b[1], 32, (double)free_b));
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

/* The mean and 1 / sqrt(var + eps) of a block's cnt values, sums in double. */
__device__ static void group_stats(const float *x, size_t cnt, float eps, double *sh, float *mean, float *rstd) {
    double s = 0.0;
    for (size_t i = threadIdx.x; i < cnt; i += THREADS) s += x[i];
    const float m = (float)(block_sum(s, sh) / (double)cnt);
    double v = 0.0;
    for (size_t i = threadIdx.x; i < cnt; i += THREADS) {
        float dv = x[i] - m;
        v += (double)dv * dv;
    }
    *mean = m;
    *rstd = (float)(1.0 / sqrt(block_sum(v, sh) / (double)cnt + eps));
}

/* One block per (image, group): the group's (cg, hw) values are contiguous. */
__global__ static void groupnorm_k(float *out, const float *in, const float *g, const float *b, int c, int hw,
                                   int groups, float eps, int silu) {
    __shared__ double sh[THREADS];
    const int ng = blockIdx.x, gi = ng % groups, cg = c / groups;
    const size_t cnt = (size_t)cg * hw;
    const float *x = in + (size_t)ng * cnt;
    float *o = out + (size_t)ng * cnt;
    float m, rs;
    group_stats(x, cnt, eps, sh, &m, &rs);
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

/* ---- the decoder's vector-Jacobian product (vae.c's vjp walk on the device) -------------- */

void dap_vae_cuda_gemm(dap_vae_cuda *d, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float beta, float *c, int ldc) {
    gemm(d, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void dap_vae_cuda_bias_rows(dap_vae_cuda *d, float *y, const float *b, int rows, size_t cols) {
    bias_rows_k<<<blocks_for((size_t)rows * cols), THREADS, 0, d->st>>>(y, b, rows, cols);
    LAUNCHED();
}

void dap_vae_cuda_softmax_rows(dap_vae_cuda *d, float *s, int rows, int t) {
    softmax_rows_k<<<rows, THREADS, 0, d->st>>>(s, t);
    LAUNCHED();
}

/* One block per row: dp = p (dp - sum_j p dp), the sum in double. */
__global__ static void softmax_back_rows_k(const float *p, float *dp, int t) {
    __shared__ double sh[THREADS];
    const float *pr = p + (size_t)blockIdx.x * t;
    float *dr = dp + (size_t)blockIdx.x * t;
    double s = 0.0;
    for (int j = threadIdx.x; j < t; j += THREADS) s += (double)pr[j] * dr[j];
    const float sd = (float)block_sum(s, sh);
    for (int j = threadIdx.x; j < t; j += THREADS) dr[j] = pr[j] * (dr[j] - sd);
}

void dap_vae_cuda_softmax_back_rows(dap_vae_cuda *d, const float *p, float *dp, int rows, int t) {
    softmax_back_rows_k<<<rows, THREADS, 0, d->st>>>(p, dp, t);
    LAUNCHED();
}

/* The SiLU and its backward (g *= silu'(t)), the CPU's clamp at +-88 */
__global__ static void silu_k(float *out, const float *in, size_t n) {
    GRID_LOOP(i, n) {
        const float x = in[i], xc = fminf(fmaxf(x, -88.0f), 88.0f);
        out[i] = x > 88.0f ? x : xc / (1.0f + expf(-xc));
    }
}

__global__ static void silu_back_k(float *g, const float *t, size_t n) {
    GRID_LOOP(i, n) {
        const float x = fminf(fmaxf(t[i], -88.0f), 88.0f), e = expf(-x), s = 1.0f / (1.0f + e);
        g[i] = g[i] * s * (1.0f + x * (e * s));
    }
}

void dap_vae_cuda_silu(dap_vae_cuda *d, float *out, const float *in, size_t n) {
    silu_k<<<blocks_for(n), THREADS, 0, d->st>>>(out, in, n);
    LAUNCHED();
}

void dap_vae_cuda_silu_back(dap_vae_cuda *d, float *g, const float *t, size_t n) {
    silu_back_k<<<blocks_for(n), THREADS, 0, d->st>>>(g, t, n);
    LAUNCHED();
}

/* One block per group of one image: the statistics again (as groupnorm_k), then
 * dx = rstd (w dy - mean(w dy) - (x - m) rstd^2 mean(w dy (x - m))), as ops/norm.c. */
__global__ static void groupnorm_back_k(float *dx, const float *dy, const float *in, const float *g, int c, int hw,
                                        int groups, float eps) {
    __shared__ double sh[THREADS];
    const int gi = blockIdx.x % groups, cg = c / groups;
    const size_t cnt = (size_t)cg * hw, off = (size_t)blockIdx.x * cnt;
    const float *x = in + off, *gy = dy + off;
    float *o = dx + off;
    float m, rs;
    group_stats(x, cnt, eps, sh, &m, &rs);
    double sg = 0.0, sgx = 0.0;
    for (size_t i = threadIdx.x; i < cnt; i += THREADS) {
        const float wk = g ? g[gi * cg + (int)(i / hw)] : 1.0f;
        sg += (double)wk * gy[i];
        sgx += (double)wk * gy[i] * (x[i] - m);
    }
    sg = block_sum(sg, sh), sgx = block_sum(sgx, sh);
    const float mg = (float)(sg / (double)cnt), mgx = (float)(sgx * rs / (double)cnt) * rs;
    for (size_t i = threadIdx.x; i < cnt; i += THREADS) {
        const float wk = g ? g[gi * cg + (int)(i / hw)] : 1.0f;
        o[i] = rs * (wk * gy[i] - mg - (x[i] - m) * mgx);
    }
}

void dap_vae_cuda_groupnorm_back(dap_vae_cuda *d, float *dx, const float *dy, const float *in, const float *g, int n,
                                 int c, int hw, int groups, float eps) {
    groupnorm_back_k<<<n * groups, THREADS, 0, d->st>>>(dx, dy, in, g, c, hw, groups, eps);
    LAUNCHED();
}

/* gx (planes, h, w) = the sum of each 2 x 2 block of gu (planes, 2h, 2w) */
__global__ static void upsample2_back_k(float *gx, const float *gu, size_t planes, int h, int w) {
    const size_t hw = (size_t)h * w;
    GRID_LOOP(i, planes * hw) {
        const size_t pl = i / hw;
        const int y = (int)(i % hw / w), x = (int)(i % w);
        const float *u = gu + pl * 4 * hw + (size_t)(2 * y) * (2 * w) + 2 * x;
        gx[i] = (u[0] + u[1]) + (u[2 * w] + u[2 * w + 1]);
    }
}

void dap_vae_cuda_upsample2_back(dap_vae_cuda *d, float *gx, const float *gu, int n, int c, int h, int w) {
    upsample2_back_k<<<blocks_for((size_t)n * c * h * w), THREADS, 0, d->st>>>(gx, gu, (size_t)n * c, h, w);
    LAUNCHED();
}

/* din (c, h, w) of one image from col (c k k, h w): each input pixel gathers the columns
 * that read it (stride 1, padding k / 2: output and input the same size); no atomics */
__global__ static void col2im_same_k(float *din, const float *col, int c, int h, int w, int k) {
    const int pad = k / 2;
    const size_t P = (size_t)h * w;
    GRID_LOOP(i, (size_t)c * P) {
        const int ch = (int)(i / P), iy = (int)(i % P / w), ix = (int)(i % w);
        float acc = 0.0f;
        for (int ky = 0; ky < k; ky++) {
            const int oy = iy + pad - ky;
            if (oy < 0 || oy >= h) continue;
            for (int kx = 0; kx < k; kx++) {
                const int ox = ix + pad - kx;
                if (ox < 0 || ox >= w) continue;
                acc += col[((size_t)(ch * k + ky) * k + kx) * P + (size_t)oy * w + ox];
            }
        }
        din[i] = acc;
    }
}

void dap_vae_cuda_conv_dgrad(dap_vae_cuda *d, float *din, const float *dout, const float *wt, int c, int h, int w,
                             int oc, int k, float *col) {
    const int P = h * w, K = c * k * k;
    if (k == 1) { /* din (c, P) = W^T dout */
        gemm(d, 1, 0, c, P, oc, 1.0f, wt, c, dout, P, 0.0f, din, P);
        return;
    }
    gemm(d, 1, 0, K, P, oc, 1.0f, wt, K, dout, P, 0.0f, col, P); /* col (K, P) = W^T dout */
    col2im_same_k<<<blocks_for((size_t)c * P), THREADS, 0, d->st>>>(din, col, c, h, w, k);
    LAUNCHED();
}
