/*
 * cnn_cuda.cu: the classifier layer sequence (models/cnn.h) on the GPU.
 *
 * The walk over the layers is the CPU one (cnn.c) with device buffers: the same
 * gradient routing (a source's gradient buffer is written by its first consumer and
 * added to by later ones, through `tmp`), the same per-op formulas. Layouts are the CPU
 * ones (NCHW activations, the parameter table's one contiguous block), so weights go up
 * and gradients come down in one copy each.
 *
 * Convolution: im2col of the whole batch into col (C*K*K, N*P), one SGEMM
 * T (OC, N*P) = W col, then a transposing copy into (N, OC, P) with the bias. Backward
 * transposes dY the same way, dW += dT col^T and dcol = W^T dT are one SGEMM each, and
 * col2im gathers (each input pixel sums the columns that read it: no atomics, so the
 * result does not depend on scheduling). Reductions (norm statistics, bias gradients)
 * run one block per channel in double, as the CPU ops accumulate in double.
 */
extern "C" {
#include "cuda/cuda.h"
#include "core/core.h"
#include "core/device.h"
#include "core/optim.h"
#include "models/cnn.h"
}

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NORM_EPS 1e-5f /* cnn.c */
#define BN_MOMENTUM 0.1f

#include "cuda/check.cuh"  /* CK, CB, LAUNCHED */
#include "cuda/launch.cuh" /* THREADS, blocks_for, block_sum */

extern "C" int dap_cuda_init(char *desc, size_t n) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
        return dap_error(DAP_ERR_MISSING, "device cuda: %s", cudaGetErrorString(e));
    if (count < 1) return dap_error(DAP_ERR_MISSING, "device cuda: no CUDA device found");
    int k = dap_device_gpu();
    if (k == DAP_GPU_AUTO) { /* one GPU per process on the machine: the launcher's local rank */
        int local = dap_launcher_local_rank();
        k = local < 0 ? 0 : local % count;
    }
    if (k >= count)
        return dap_error(DAP_ERR_ARG, "--gpu %d: this process sees %d CUDA device%s (0..%d; CUDA_VISIBLE_DEVICES "
                                      "narrows them)", k, count, count == 1 ? "" : "s", count - 1);
    if ((e = cudaSetDevice(k)) != cudaSuccess)
        return dap_error(DAP_ERR_MISSING, "device cuda: GPU %d: %s", k, cudaGetErrorString(e));
    cudaDeviceProp p;
    if ((e = cudaGetDeviceProperties(&p, k)) != cudaSuccess)
        return dap_error(DAP_ERR_MISSING, "device cuda: %s", cudaGetErrorString(e));
    void *probe = NULL;
    if ((e = cudaMalloc(&probe, 1 << 20)) != cudaSuccess)
        return dap_error(DAP_ERR_MISSING, "device cuda (%s): a test allocation failed: %s", p.name,
                         cudaGetErrorString(e));
    cudaFree(probe);
    cublasHandle_t h;
    cublasStatus_t s = cublasCreate(&h);
    if (s != CUBLAS_STATUS_SUCCESS)
        return dap_error(DAP_ERR_MISSING, "device cuda (%s): %s", p.name, dap_cublas_msg(s));
    cublasDestroy(h);
    char mem[32];
    snprintf(desc, n, "cuda: GPU %d of %d, %s, %s, compute %d.%d", k, count, p.name,
             dap_fmt_bytes(mem, sizeof mem, (double)p.totalGlobalMem), p.major, p.minor);
    return DAP_OK;
}

/* ---- kernels ---------------------------------------------------------------------- */

/* Kernels index with 32 bits (64-bit division costs the GPU several times more, and the
 * index arithmetic is most of im2col's work); dap_cnn_cuda_create refuses a state whose
 * buffers reach 2^31 elements. */
typedef unsigned int idx_t;
#define IDX_LIMIT (1u << 31)

#define GRID_LOOP(i, total)                                                                    \
    for (idx_t i = blockIdx.x * blockDim.x + threadIdx.x; i < (idx_t)(total);                \
         i += gridDim.x * blockDim.x)

/* col[(c*K + ky)*K + kx][n*P + oy*OW + ox] = x[n, c, oy*s - pad + ky, ox*s - pad + kx] */
__global__ static void im2col_k(float *col, const float *x, int n, int c, int h, int w, int k,
                                int stride, int pad, int oh, int ow) {
    idx_t p = (idx_t)oh * ow, np = (idx_t)n * p, total = (idx_t)c * k * k * np;
    GRID_LOOP(i, total) {
        idx_t r = i / np, q = i % np;
        int ci = (int)(r / (k * k)), ky = (int)(r / k % k), kx = (int)(r % k);
        int ni = (int)(q / p), pp = (int)(q % p), oy = pp / ow, ox = pp % ow;
        int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
        col[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w)
                     ? x[(((idx_t)ni * c + ci) * h + iy) * w + ix]
                     : 0.0f;
    }
}

/* The adjoint of im2col, gathered: dx[n, c, y, x] = sum of the columns that read it. */
__global__ static void col2im_k(float *dx, const float *dcol, int n, int c, int h, int w, int k,
                                int stride, int pad, int oh, int ow) {
    idx_t p = (idx_t)oh * ow, np = (idx_t)n * p, total = (idx_t)n * c * h * w;
    GRID_LOOP(i, total) {
        int xx = (int)(i % w), yy = (int)(i / w % h), ci = (int)(i / ((idx_t)w * h) % c);
        int ni = (int)(i / ((idx_t)w * h * c));
        float s = 0.0f;
        for (int ky = 0; ky < k; ky++) {
            int ty = yy + pad - ky;
            if (ty < 0 || ty % stride) continue;
            int oy = ty / stride;
            if (oy >= oh) continue;
            for (int kx = 0; kx < k; kx++) {
                int tx = xx + pad - kx;
                if (tx < 0 || tx % stride) continue;
                int ox = tx / stride;
                if (ox >= ow) continue;
                s += dcol[((idx_t)(ci * k + ky) * k + kx) * np + (idx_t)ni * p + (idx_t)oy * ow + ox];
            }
        }
        dx[i] = s;
    }
}

/* y (N, OC, P) = t (OC, N*P) transposed per image, + bias */
__global__ static void from_cnp_k(float *y, const float *t, const float *bias, int n, int oc,
                                  idx_t p) {
    idx_t total = (idx_t)n * oc * p;
    GRID_LOOP(i, total) {
        idx_t pp = i % p, o = i / p % oc, ni = i / (p * oc);
        y[i] = t[o * n * p + ni * p + pp] + (bias ? bias[o] : 0.0f);
    }
}

/* t (OC, N*P) = dy (N, OC, P) */
__global__ static void to_cnp_k(float *t, const float *dy, int n, int oc, idx_t p) {
    idx_t np = (idx_t)n * p, total = (idx_t)oc * np;
    GRID_LOOP(i, total) {
        idx_t o = i / np, q = i % np, ni = q / p, pp = q % p;
        t[i] = dy[(ni * oc + o) * p + pp];
    }
}

/* d[r] += sum of row r of a (rows, cols): one block a row */
__global__ static void row_sum_add_k(float *d, const float *a, idx_t cols) {
    __shared__ double sh[THREADS];
    const float *row = a + (idx_t)blockIdx.x * cols;
    double s = 0.0;
    for (idx_t j = threadIdx.x; j < cols; j += THREADS) s += row[j];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) d[blockIdx.x] += (float)s;
}

/* d[j] += sum over rows of a (rows, cols)[., j]: one thread a column */
__global__ static void col_sum_add_k(float *d, const float *a, int rows, int cols) {
    GRID_LOOP(j, (idx_t)cols) {
        double s = 0.0;
        for (int r = 0; r < rows; r++) s += a[(idx_t)r * cols + j];
        d[j] += (float)s;
    }
}

__global__ static void add_rows_k(float *out, const float *b, int rows, int cols) {
    GRID_LOOP(i, (idx_t)rows * cols) out[i] += b[i % cols];
}

__global__ static void add_k(float *out, const float *a, const float *b, idx_t n) {
    GRID_LOOP(i, n) out[i] = a[i] + b[i];
}

__global__ static void acc_k(float *d, const float *t, idx_t n) {
    GRID_LOOP(i, n) d[i] += t[i];
}

__global__ static void relu_k(float *x, idx_t n) {
    GRID_LOOP(i, n) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

__global__ static void relu_mask_k(float *g, const float *out, idx_t n) {
    GRID_LOOP(i, n) if (!(out[i] > 0.0f)) g[i] = 0.0f;
}

/* Instance norm (GroupNorm with G = C): one block a (n, c) plane. */
__global__ static void inorm_fwd_k(float *out, float *mean, float *rstd, const float *inp,
                                   const float *w, const float *b, int c, int hw, float eps) {
    __shared__ double sh[THREADS];
    idx_t plane = blockIdx.x;
    int ch = (int)(plane % c);
    const float *x = inp + plane * hw;
    double s = 0.0;
    for (int i = threadIdx.x; i < hw; i += THREADS) s += x[i];
    float m = (float)(block_sum(s, sh) / hw);
    double v = 0.0;
    for (int i = threadIdx.x; i < hw; i += THREADS) {
        float d = x[i] - m;
        v += (double)d * d;
    }
    v = block_sum(v, sh);
    float rs = (float)(1.0 / sqrt(v / hw + eps));
    float sc = w ? w[ch] * rs : rs, sf = b ? b[ch] : 0.0f;
    float *y = out + plane * hw;
    for (int i = threadIdx.x; i < hw; i += THREADS) y[i] = (x[i] - m) * sc + sf;
    if (threadIdx.x == 0) mean[plane] = m, rstd[plane] = rs;
}

/* dx (may be NULL) overwritten; the plane's dw / db contributions go to pw / pb (N, C). */
__global__ static void inorm_bwd_k(float *dx, float *pw, float *pb, const float *dout,
                                   const float *inp, const float *w, const float *mean,
                                   const float *rstd, int c, int hw) {
    __shared__ double sh[THREADS];
    idx_t plane = blockIdx.x;
    int ch = (int)(plane % c);
    const float *x = inp + plane * hw, *g = dout + plane * hw;
    float m = mean[plane], rs = rstd[plane], wc = w ? w[ch] : 1.0f;
    double sg = 0.0, sgx = 0.0;
    for (int i = threadIdx.x; i < hw; i += THREADS) {
        float xh = (x[i] - m) * rs;
        sg += g[i];
        sgx += (double)g[i] * xh;
    }
    sg = block_sum(sg, sh);
    sgx = block_sum(sgx, sh);
    if (threadIdx.x == 0) pw[plane] = (float)sgx, pb[plane] = (float)sg;
    if (!dx) return;
    /* dxhat = g w: mean(dxhat) = w sg / hw, mean(dxhat xhat) = w sgx / hw */
    float a = (float)(wc * sg / hw), bq = (float)(wc * sgx / hw);
    float *d = dx + plane * hw;
    for (int i = threadIdx.x; i < hw; i += THREADS) {
        float xh = (x[i] - m) * rs;
        d[i] = rs * (g[i] * wc - a - xh * bq);
    }
}

/* BatchNorm, batch statistics: one block a channel over (N, HW). */
__global__ static void bn_fwd_train_k(float *out, float *mean, float *rstd, float *rmean,
                                      float *rvar, const float *inp, const float *w,
                                      const float *b, int n, int c, int hw, float eps,
                                      float momentum) {
    __shared__ double sh[THREADS];
    int ch = blockIdx.x;
    idx_t cnt = (idx_t)n * hw;
    double s = 0.0;
    for (idx_t i = threadIdx.x; i < cnt; i += THREADS)
        s += inp[((i / hw) * c + ch) * hw + i % hw];
    float m = (float)(block_sum(s, sh) / (double)cnt);
    double v = 0.0;
    for (idx_t i = threadIdx.x; i < cnt; i += THREADS) {
        float d = inp[((i / hw) * c + ch) * hw + i % hw] - m;
        v += (double)d * d;
    }
    v = block_sum(v, sh);
    double var = v / (double)cnt;
    float rs = (float)(1.0 / sqrt(var + eps));
    float sc = w ? w[ch] * rs : rs, sf = b ? b[ch] : 0.0f;
    for (idx_t i = threadIdx.x; i < cnt; i += THREADS) {
        idx_t off = ((i / hw) * c + ch) * hw + i % hw;
        out[off] = (inp[off] - m) * sc + sf;
    }
    if (threadIdx.x == 0) {
        mean[ch] = m, rstd[ch] = rs;
        if (rmean) rmean[ch] = (1.0f - momentum) * rmean[ch] + momentum * m;
        if (rvar) {
            double uvar = cnt > 1 ? v / (double)(cnt - 1) : var;
            rvar[ch] = (float)((1.0 - momentum) * rvar[ch] + momentum * uvar);
        }
    }
}

__global__ static void bn_bwd_train_k(float *dx, float *dw, float *db, const float *dout,
                                      const float *inp, const float *w, const float *mean,
                                      const float *rstd, int n, int c, int hw) {
    __shared__ double sh[THREADS];
    int ch = blockIdx.x;
    idx_t cnt = (idx_t)n * hw;
    float m = mean[ch], rs = rstd[ch], wc = w ? w[ch] : 1.0f;
    double sg = 0.0, sgx = 0.0;
    for (idx_t i = threadIdx.x; i < cnt; i += THREADS) {
        idx_t off = ((i / hw) * c + ch) * hw + i % hw;
        float xh = (inp[off] - m) * rs;
        sg += dout[off];
        sgx += (double)dout[off] * xh;
    }
    sg = block_sum(sg, sh);
    sgx = block_sum(sgx, sh);
    if (threadIdx.x == 0) {
        if (dw) dw[ch] += (float)sgx;
        if (db) db[ch] += (float)sg;
    }
    if (!dx) return;
    float a = (float)(sg / (double)cnt), bq = (float)(sgx / (double)cnt), sc = wc * rs;
    for (idx_t i = threadIdx.x; i < cnt; i += THREADS) {
        idx_t off = ((i / hw) * c + ch) * hw + i % hw;
        float xh = (inp[off] - m) * rs;
        dx[off] = sc * (dout[off] - a - xh * bq);
    }
}

__global__ static void bn_fwd_eval_k(float *out, const float *inp, const float *w, const float *b,
                                     const float *rmean, const float *rvar, int n, int c, int hw,
                                     float eps) {
    idx_t total = (idx_t)n * c * hw;
    GRID_LOOP(i, total) {
        int ch = (int)(i / hw % c);
        float rs = 1.0f / sqrtf(rvar[ch] + eps);
        out[i] = (inp[i] - rmean[ch]) * (w ? w[ch] * rs : rs) + (b ? b[ch] : 0.0f);
    }
}

__global__ static void bn_bwd_eval_k(float *dx, float *dw, float *db, const float *dout,
                                     const float *inp, const float *w, const float *rmean,
                                     const float *rvar, int n, int c, int hw, float eps) {
    __shared__ double sh[THREADS];
    int ch = blockIdx.x;
    idx_t cnt = (idx_t)n * hw;
    float rs = 1.0f / sqrtf(rvar[ch] + eps), sc = (w ? w[ch] : 1.0f) * rs, m = rmean[ch];
    double sg = 0.0, sgx = 0.0;
    for (idx_t i = threadIdx.x; i < cnt; i += THREADS) {
        idx_t off = ((i / hw) * c + ch) * hw + i % hw;
        sg += dout[off];
        sgx += (double)dout[off] * ((inp[off] - m) * rs);
        if (dx) dx[off] = dout[off] * sc;
    }
    sg = block_sum(sg, sh);
    sgx = block_sum(sgx, sh);
    if (threadIdx.x == 0) {
        if (dw) dw[ch] += (float)sgx;
        if (db) db[ch] += (float)sg;
    }
}

__global__ static void avgpool_fwd_k(float *out, const float *inp, int n, int c, int h, int w,
                                     int k, int s, int oh, int ow) {
    idx_t total = (idx_t)n * c * oh * ow;
    float scale = 1.0f / (float)(k * k);
    GRID_LOOP(i, total) {
        int ox = (int)(i % ow), oy = (int)(i / ow % oh);
        const float *x = inp + (i / ((idx_t)oh * ow)) * h * w;
        float acc = 0.0f;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) acc += x[(oy * s + ky) * w + ox * s + kx];
        out[i] = acc * scale;
    }
}

/* first and last output index whose window (size k, stride s) covers position q */
__device__ static void covering(int q, int k, int s, int on, int *lo, int *hi) {
    int a = q - k + 1;
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    *hi = q / s;
    if (*hi > on - 1) *hi = on - 1;
}

__global__ static void avgpool_bwd_k(float *dx, const float *dout, int n, int c, int h, int w,
                                     int k, int s, int oh, int ow) {
    idx_t total = (idx_t)n * c * h * w;
    float scale = 1.0f / (float)(k * k);
    GRID_LOOP(i, total) {
        int xx = (int)(i % w), yy = (int)(i / w % h);
        const float *g = dout + (i / ((idx_t)h * w)) * oh * ow;
        int y0, y1, x0, x1;
        covering(yy, k, s, oh, &y0, &y1);
        covering(xx, k, s, ow, &x0, &x1);
        float acc = 0.0f;
        for (int oy = y0; oy <= y1; oy++)
            for (int ox = x0; ox <= x1; ox++) acc += g[oy * ow + ox];
        dx[i] = acc * scale;
    }
}

/* Max pooling with padding (padded cells count as -FLT_MAX, as cnn.c pads); argmax is
 * the flat index in the unpadded plane, -1 when a padded cell won. */
__global__ static void maxpool_fwd_k(float *out, int *argmax, const float *inp, int n, int c,
                                     int h, int w, int k, int s, int pad, int oh, int ow) {
    idx_t total = (idx_t)n * c * oh * ow;
    GRID_LOOP(i, total) {
        int ox = (int)(i % ow), oy = (int)(i / ow % oh);
        const float *x = inp + (i / ((idx_t)oh * ow)) * h * w;
        float best = 0.0f;
        int arg = -1;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                int iy = oy * s - pad + ky, ix = ox * s - pad + kx;
                int inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
                float v = inside ? x[iy * w + ix] : -FLT_MAX;
                if ((ky == 0 && kx == 0) || v > best || isnan(v)) best = v, arg = inside ? iy * w + ix : -1;
            }
        }
        out[i] = best;
        argmax[i] = arg;
    }
}

__global__ static void maxpool_bwd_k(float *dx, const float *dout, const int *argmax, int n, int c,
                                     int h, int w, int k, int s, int pad, int oh, int ow) {
    idx_t total = (idx_t)n * c * h * w;
    GRID_LOOP(i, total) {
        int xx = (int)(i % w), yy = (int)(i / w % h), me = yy * w + xx;
        idx_t base = (i / ((idx_t)h * w)) * oh * ow;
        int y0, y1, x0, x1;
        covering(yy + pad, k, s, oh, &y0, &y1);
        covering(xx + pad, k, s, ow, &x0, &x1);
        float acc = 0.0f;
        for (int oy = y0; oy <= y1; oy++)
            for (int ox = x0; ox <= x1; ox++)
                if (argmax[base + oy * ow + ox] == me) acc += dout[base + oy * ow + ox];
        dx[i] = acc;
    }
}

__global__ static void gap_fwd_k(float *out, const float *inp, idx_t planes, int hw) {
    GRID_LOOP(pl, planes) {
        const float *x = inp + pl * hw;
        double s = 0.0;
        for (int i = 0; i < hw; i++) s += x[i];
        out[pl] = (float)(s / hw);
    }
}

__global__ static void gap_bwd_k(float *dx, const float *dout, idx_t planes, int hw) {
    GRID_LOOP(i, planes * hw) dx[i] = dout[i / hw] / (float)hw;
}

/* ---- the state ------------------------------------------------------------------- */

typedef struct cnn_dev {
    cudaStream_t st;
    cublasHandle_t h;
    int batch, with_grad, nl;
    size_t nparam, in_size;
    float *params, *grads; /* the parameter table's block, and its gradient */
    float *x, *dx;
    float **out, **dout, **mean, **rstd;
    int **argmax;
    float *col, *dcol, *t; /* convolution scratch */
    float *tmp;            /* a gradient added into an already written one */
    float *pw, *pb;        /* instance-norm per-plane parameter gradients */
    float *hgrad;          /* host staging for the gradient */
    float **dpool;         /* the gradient buffers dout[] point into (dap_cnn_grad_slots) */
    int ndpool;
    int resident;          /* the device copy of the weights is the one that counts */
    float *opt_a, *opt_b;  /* the optimiser's state there: SGD momentum / AdamW m and v */
} cnn_dev;

static float *dev_alloc(size_t floats) {
    void *p = NULL;
    if (floats == 0) floats = 1;
    cudaError_t e = cudaMalloc(&p, floats * sizeof(float));
    if (e != cudaSuccess) {
        fprintf(stderr, "dap: CUDA: could not allocate %.1f MiB on the GPU: %s\n",
                (double)floats * sizeof(float) / 1048576.0, cudaGetErrorString(e));
        exit(1);
    }
    return (float *)p;
}

static size_t lsize(const dap_cnn_layer *l) { return (size_t)l->c * l->h * l->w; }

static void src_shape(const dap_cnn *m, int src, int *c, int *h, int *w) {
    if (src < 0) {
        *c = m->in_c, *h = m->in_h, *w = m->in_w;
    } else {
        *c = m->layers[src].c, *h = m->layers[src].h, *w = m->layers[src].w;
    }
}

extern "C" void *dap_cnn_cuda_create(const dap_cnn *m, int batch, int with_grad) {
    cnn_dev *d = (cnn_dev *)dap_calloc(1, sizeof *d);
    CK(cudaStreamCreateWithFlags(&d->st, cudaStreamNonBlocking));
    CB(cublasCreate(&d->h));
    CB(cublasSetStream(d->h, d->st));
    CB(cublasSetMathMode(d->h, CUBLAS_DEFAULT_MATH)); /* FP32, no TF32 */
    int nl = m->nlayers;
    d->batch = batch, d->with_grad = with_grad, d->nl = nl;
    d->nparam = m->params.total;
    d->in_size = (size_t)m->in_c * m->in_h * m->in_w;
    d->params = dev_alloc(d->nparam);
    d->x = dev_alloc((size_t)batch * d->in_size);
    d->out = (float **)dap_calloc((size_t)nl, sizeof(float *));
    d->dout = (float **)dap_calloc((size_t)nl, sizeof(float *));
    d->mean = (float **)dap_calloc((size_t)nl, sizeof(float *));
    d->rstd = (float **)dap_calloc((size_t)nl, sizeof(float *));
    d->argmax = (int **)dap_calloc((size_t)nl, sizeof(int *));
    size_t col = 1, t = 1, largest = d->in_size, planes = 1;
    for (int i = 0; i < nl; i++) {
        const dap_cnn_layer *l = &m->layers[i];
        size_t sz = (size_t)batch * lsize(l);
        if (lsize(l) > largest) largest = lsize(l);
        d->out[i] = dev_alloc(sz);

        int c, h, w;
        src_shape(m, l->src, &c, &h, &w);
        if (l->op == DAP_CNN_NORM) {
            size_t stats = l->norm == DAP_NORM_BATCH ? (size_t)l->c : (size_t)batch * l->c;
            d->mean[i] = dev_alloc(stats);
            d->rstd[i] = dev_alloc(stats);
            if (l->norm == DAP_NORM_INSTANCE && (size_t)batch * l->c > planes) planes = (size_t)batch * l->c;
        } else if (l->op == DAP_CNN_CONV) {
            size_t np = (size_t)batch * l->h * l->w;
            if ((size_t)c * l->k * l->k * np > col) col = (size_t)c * l->k * l->k * np;
            if ((size_t)l->c * np > t) t = (size_t)l->c * np;
        } else if (l->op == DAP_CNN_MAXPOOL) {
            void *p = NULL;
            CK(cudaMalloc(&p, sz * sizeof(int)));
            d->argmax[i] = (int *)p;
        }
    }
    size_t top = col > t ? col : t;
    if ((size_t)batch * largest > top) top = (size_t)batch * largest;
    if (d->nparam > top) top = d->nparam;
    if (top >= IDX_LIMIT) {
        fprintf(stderr, "dap: CUDA backend: %s at batch %d needs a buffer of %zu floats, above the "
                        "2^31 its kernels index; use a smaller batch\n", m->arch, batch, top);
        exit(1);
    }
    d->col = dev_alloc(col);
    d->t = dev_alloc(t);
    if (with_grad) { /* layers whose gradients are never alive together share a buffer */
        int *slot = (int *)dap_malloc(sizeof(int) * (size_t)nl);
        size_t *cap = (size_t *)dap_calloc((size_t)nl, sizeof(size_t));
        d->ndpool = dap_cnn_grad_slots(m, batch, slot, cap);
        d->dpool = (float **)dap_calloc((size_t)d->ndpool, sizeof(float *));
        for (int b = 0; b < d->ndpool; b++) d->dpool[b] = dev_alloc(cap[b]);
        for (int i = 0; i < nl; i++) d->dout[i] = d->dpool[slot[i]];
        free(slot), free(cap);
        d->grads = dev_alloc(d->nparam);
        d->dx = dev_alloc((size_t)batch * d->in_size);
        d->dcol = dev_alloc(col);
        d->tmp = dev_alloc((size_t)batch * largest);
        d->pw = dev_alloc(planes);
        d->pb = dev_alloc(planes);
        d->hgrad = dap_alloc_f32(d->nparam);
    }
    return d;
}

extern "C" float *dap_cnn_cuda_input(void *dev, void **stream) {
    cnn_dev *d = (cnn_dev *)dev;
    if (stream) *stream = (void *)d->st;
    return d->x;
}

extern "C" void dap_cnn_cuda_free(void *dev) {
    cnn_dev *d = (cnn_dev *)dev;
    if (!d) return;
    cudaStreamSynchronize(d->st);
    for (int i = 0; i < d->nl; i++) {
        cudaFree(d->out[i]), cudaFree(d->mean[i]), cudaFree(d->rstd[i]);
        cudaFree(d->argmax[i]);
    }
    for (int b = 0; b < d->ndpool; b++) cudaFree(d->dpool[b]);
    free(d->dpool);
    free(d->out), free(d->dout), free(d->mean), free(d->rstd), free(d->argmax);
    cudaFree(d->params), cudaFree(d->grads), cudaFree(d->x), cudaFree(d->dx);
    cudaFree(d->col), cudaFree(d->dcol), cudaFree(d->t), cudaFree(d->tmp);
    cudaFree(d->pw), cudaFree(d->pb);
    cudaFree(d->opt_a), cudaFree(d->opt_b);
    dap_free_aligned(d->hgrad);
    cublasDestroy(d->h);
    cudaStreamDestroy(d->st);
    free(d);
}

/* Row-major C (m, n) = alpha op(A) op(B) + beta C, as dap_gemm (ops.h): column-major
 * cuBLAS computes C^T = op(B)^T op(A)^T. */
static void gemm(cnn_dev *d, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    CB(cublasSgemm(d->h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                   &alpha, b, ldb, a, lda, &beta, c, ldc));
}

static float *P(const dap_cnn *m, cnn_dev *d, int id) {
    return id < 0 ? NULL : d->params + m->params.p[id].offset;
}
static float *G(const dap_cnn *m, cnn_dev *d, int id) {
    return id < 0 ? NULL : d->grads + m->params.p[id].offset;
}

static void im2col(cnn_dev *d, const float *x, int n, int c, int h, int w, const dap_cnn_layer *l) {
    size_t total = (size_t)c * l->k * l->k * n * l->h * l->w;
    im2col_k<<<blocks_for(total), THREADS, 0, d->st>>>(d->col, x, n, c, h, w, l->k, l->stride,
                                                       l->pad, l->h, l->w);
    LAUNCHED();
}

extern "C" void dap_cnn_cuda_forward(dap_cnn *m, dap_cnn_state *s, const float *x, int n,
                                     int train) {
    cnn_dev *d = (cnn_dev *)s->dev;
    DAP_ASSERT(d && n > 0 && n <= d->batch);
    if (!d->resident)
        CK(cudaMemcpyAsync(d->params, m->params.data, d->nparam * sizeof(float),
                           cudaMemcpyHostToDevice, d->st));
    if (x) /* NULL: the input is already in d->x (dap_cnn_cuda_input) */
        CK(cudaMemcpyAsync(d->x, x, (size_t)n * d->in_size * sizeof(float), cudaMemcpyHostToDevice,
                           d->st));
    for (int i = 0; i < m->nlayers; i++) {
        const dap_cnn_layer *l = &m->layers[i];
        const float *inp = l->src < 0 ? d->x : d->out[l->src];
        float *out = d->out[i];
        int c, h, w;
        src_shape(m, l->src, &c, &h, &w);
        size_t total = (size_t)n * lsize(l);
        switch (l->op) {
        case DAP_CNN_CONV: {
            int ckk = c * l->k * l->k;
            size_t p = (size_t)l->h * l->w;
            int np = (int)(n * p);
            im2col(d, inp, n, c, h, w, l);
            gemm(d, 0, 0, l->c, np, ckk, 1.0f, P(m, d, l->w_id), ckk, d->col, np, 0.0f, d->t, np);
            from_cnp_k<<<blocks_for(total), THREADS, 0, d->st>>>(out, d->t, P(m, d, l->b_id), n,
                                                                 l->c, p);
            break;
        }
        case DAP_CNN_NORM:
            if (l->norm == DAP_NORM_INSTANCE)
                inorm_fwd_k<<<(unsigned)(n * c), THREADS, 0, d->st>>>(
                    out, d->mean[i], d->rstd[i], inp, P(m, d, l->w_id), P(m, d, l->b_id), c, h * w,
                    NORM_EPS);
            else if (train)
                bn_fwd_train_k<<<(unsigned)c, THREADS, 0, d->st>>>(
                    out, d->mean[i], d->rstd[i], P(m, d, l->rm_id), P(m, d, l->rv_id), inp,
                    P(m, d, l->w_id), P(m, d, l->b_id), n, c, h * w, NORM_EPS, BN_MOMENTUM);
            else
                bn_fwd_eval_k<<<blocks_for(total), THREADS, 0, d->st>>>(
                    out, inp, P(m, d, l->w_id), P(m, d, l->b_id), P(m, d, l->rm_id),
                    P(m, d, l->rv_id), n, c, h * w, NORM_EPS);
            break;
        case DAP_CNN_AVGPOOL:
            avgpool_fwd_k<<<blocks_for(total), THREADS, 0, d->st>>>(out, inp, n, c, h, w, l->k,
                                                                    l->stride, l->h, l->w);
            break;
        case DAP_CNN_MAXPOOL:
            maxpool_fwd_k<<<blocks_for(total), THREADS, 0, d->st>>>(
                out, d->argmax[i], inp, n, c, h, w, l->k, l->stride, l->pad, l->h, l->w);
            break;
        case DAP_CNN_GAP:
            gap_fwd_k<<<blocks_for((size_t)n * c), THREADS, 0, d->st>>>(out, inp, (size_t)n * c, h * w);
            break;
        case DAP_CNN_LINEAR: {
            int ic = c * h * w;
            gemm(d, 0, 1, n, l->c, ic, 1.0f, inp, ic, P(m, d, l->w_id), ic, 0.0f, out, l->c);
            add_rows_k<<<blocks_for(total), THREADS, 0, d->st>>>(out, P(m, d, l->b_id), n, l->c);
            break;
        }
        case DAP_CNN_ADD: {
            const float *b = l->src2 < 0 ? d->x : d->out[l->src2];
            add_k<<<blocks_for(total), THREADS, 0, d->st>>>(out, inp, b, total);
            break;
        }
        }
        LAUNCHED();
        if (l->relu) {
            relu_k<<<blocks_for(total), THREADS, 0, d->st>>>(out, total);
            LAUNCHED();
        }
    }
    int last = m->nlayers - 1;
    CK(cudaMemcpyAsync(s->out[last], d->out[last], (size_t)n * lsize(&m->layers[last]) * sizeof(float),
                       cudaMemcpyDeviceToHost, d->st));
    if (m->feat >= 0 && s->out[m->feat])
        CK(cudaMemcpyAsync(s->out[m->feat], d->out[m->feat],
                           (size_t)n * lsize(&m->layers[m->feat]) * sizeof(float),
                           cudaMemcpyDeviceToHost, d->st));
    if (train && !d->resident) /* the running statistics moved on the device */
        for (int i = 0; i < m->nlayers; i++) {
            const dap_cnn_layer *l = &m->layers[i];
            if (l->op != DAP_CNN_NORM || l->norm != DAP_NORM_BATCH) continue;
            int ids[2] = {l->rm_id, l->rv_id};
            for (int j = 0; j < 2; j++) {
                size_t off = m->params.p[ids[j]].offset;
                CK(cudaMemcpyAsync(m->params.data + off, d->params + off, (size_t)l->c * sizeof(float),
                                   cudaMemcpyDeviceToHost, d->st));
            }
        }
    CK(cudaStreamSynchronize(d->st));
    s->n = n;
}

typedef struct route {
    float *dst, *write;
    size_t size;
} route;

static route route_begin(cnn_dev *d, int src, int want_dx, const char *written, int dx_written,
                         size_t size) {
    route r = {NULL, NULL, size};
    if (src < 0) {
        if (!want_dx) return r;
        r.dst = d->dx;
        r.write = dx_written ? d->tmp : d->dx;
    } else {
        r.dst = d->dout[src];
        r.write = written[src] ? d->tmp : r.dst;
    }
    return r;
}

static void route_done(cnn_dev *d, const route *r, int src, char *written, int *dx_written) {
    if (!r->dst) return;
    if (r->write != r->dst) {
        acc_k<<<blocks_for(r->size), THREADS, 0, d->st>>>(r->dst, r->write, r->size);
        LAUNCHED();
    }
    if (src < 0)
        *dx_written = 1;
    else
        written[src] = 1;
}

extern "C" void dap_cnn_cuda_backward(dap_cnn *m, dap_cnn_state *s, const float *x,
                                      const float *dlogits, float *dx, int train) {
    (void)x; /* the input is still on the device from the forward */
    cnn_dev *d = (cnn_dev *)s->dev;
    DAP_ASSERT(d && d->with_grad && s->n > 0 && m->params.grad != NULL);
    int n = s->n, last = m->nlayers - 1, want_dx = dx != NULL;
    char *written = (char *)dap_calloc((size_t)m->nlayers, 1);
    int dx_written = 0;
    CK(cudaMemsetAsync(d->grads, 0, d->nparam * sizeof(float), d->st));
    CK(cudaMemcpyAsync(d->dout[last], dlogits, (size_t)n * m->num_classes * sizeof(float),
                       cudaMemcpyHostToDevice, d->st));
    written[last] = 1;
    for (int i = last; i >= 0; i--) {
        const dap_cnn_layer *l = &m->layers[i];
        if (!written[i]) continue;
        float *g = d->dout[i];
        size_t total = (size_t)n * lsize(l);
        if (l->relu) {
            relu_mask_k<<<blocks_for(total), THREADS, 0, d->st>>>(g, d->out[i], total);
            LAUNCHED();
        }
        const float *inp = l->src < 0 ? d->x : d->out[l->src];
        int c, h, w;
        src_shape(m, l->src, &c, &h, &w);
        size_t in_total = (size_t)n * c * h * w;
        route r = route_begin(d, l->src, want_dx, written, dx_written, in_total);
        switch (l->op) {
        case DAP_CNN_CONV: {
            int ckk = c * l->k * l->k;
            size_t p = (size_t)l->h * l->w;
            int np = (int)(n * p);
            to_cnp_k<<<blocks_for(total), THREADS, 0, d->st>>>(d->t, g, n, l->c, p);
            LAUNCHED();
            im2col(d, inp, n, c, h, w, l);
            gemm(d, 0, 1, l->c, ckk, np, 1.0f, d->t, np, d->col, np, 1.0f, G(m, d, l->w_id), ckk);
            if (l->b_id >= 0) {
                row_sum_add_k<<<(unsigned)l->c, THREADS, 0, d->st>>>(G(m, d, l->b_id), d->t, (size_t)np);
                LAUNCHED();
            }
            if (r.write) {
                gemm(d, 1, 0, ckk, np, l->c, 1.0f, P(m, d, l->w_id), ckk, d->t, np, 0.0f, d->dcol, np);
                col2im_k<<<blocks_for(in_total), THREADS, 0, d->st>>>(r.write, d->dcol, n, c, h, w, l->k,
                                                                      l->stride, l->pad, l->h, l->w);
            }
            break;
        }
        case DAP_CNN_NORM:
            if (l->norm == DAP_NORM_INSTANCE) {
                inorm_bwd_k<<<(unsigned)(n * c), THREADS, 0, d->st>>>(
                    r.write, d->pw, d->pb, g, inp, P(m, d, l->w_id), d->mean[i], d->rstd[i], c, h * w);
                LAUNCHED();
                col_sum_add_k<<<blocks_for((size_t)c), THREADS, 0, d->st>>>(G(m, d, l->w_id), d->pw, n, c);
                LAUNCHED();
                col_sum_add_k<<<blocks_for((size_t)c), THREADS, 0, d->st>>>(G(m, d, l->b_id), d->pb, n, c);
            } else if (train) {
                bn_bwd_train_k<<<(unsigned)c, THREADS, 0, d->st>>>(
                    r.write, G(m, d, l->w_id), G(m, d, l->b_id), g, inp, P(m, d, l->w_id), d->mean[i],
                    d->rstd[i], n, c, h * w);
            } else {
                bn_bwd_eval_k<<<(unsigned)c, THREADS, 0, d->st>>>(
                    r.write, G(m, d, l->w_id), G(m, d, l->b_id), g, inp, P(m, d, l->w_id),
                    P(m, d, l->rm_id), P(m, d, l->rv_id), n, c, h * w, NORM_EPS);
            }
            break;
        case DAP_CNN_AVGPOOL:
            if (r.write)
                avgpool_bwd_k<<<blocks_for(in_total), THREADS, 0, d->st>>>(r.write, g, n, c, h, w, l->k,
                                                                           l->stride, l->h, l->w);
            break;
        case DAP_CNN_MAXPOOL:
            if (r.write)
                maxpool_bwd_k<<<blocks_for(in_total), THREADS, 0, d->st>>>(
                    r.write, g, d->argmax[i], n, c, h, w, l->k, l->stride, l->pad, l->h, l->w);
            break;
        case DAP_CNN_GAP:
            if (r.write)
                gap_bwd_k<<<blocks_for(in_total), THREADS, 0, d->st>>>(r.write, g, (size_t)n * c, h * w);
            break;
        case DAP_CNN_LINEAR: {
            int ic = c * h * w;
            if (r.write) gemm(d, 0, 0, n, ic, l->c, 1.0f, g, l->c, P(m, d, l->w_id), ic, 0.0f, r.write, ic);
            gemm(d, 1, 0, l->c, ic, n, 1.0f, g, l->c, inp, ic, 1.0f, G(m, d, l->w_id), ic);
            col_sum_add_k<<<blocks_for((size_t)l->c), THREADS, 0, d->st>>>(G(m, d, l->b_id), g, n, l->c);
            break;
        }
        case DAP_CNN_ADD: {
            if (r.write)
                CK(cudaMemcpyAsync(r.write, g, r.size * sizeof(float), cudaMemcpyDeviceToDevice, d->st));
            route_done(d, &r, l->src, written, &dx_written);
            r = route_begin(d, l->src2, want_dx, written, dx_written, r.size);
            if (r.write)
                CK(cudaMemcpyAsync(r.write, g, r.size * sizeof(float), cudaMemcpyDeviceToDevice, d->st));
            route_done(d, &r, l->src2, written, &dx_written);
            continue;
        }
        }
        LAUNCHED();
        route_done(d, &r, l->src, written, &dx_written);
    }
    free(written);
    if (!d->resident)
        CK(cudaMemcpyAsync(d->hgrad, d->grads, d->nparam * sizeof(float), cudaMemcpyDeviceToHost, d->st));
    if (want_dx) {
        if (dx_written)
            CK(cudaMemcpyAsync(dx, d->dx, (size_t)n * d->in_size * sizeof(float),
                               cudaMemcpyDeviceToHost, d->st));
        else
            memset(dx, 0, (size_t)n * d->in_size * sizeof(float));
    }
    /* resident: the gradient stays for dap_cnn_cuda_opt_step, and the host goes on (to the
     * next batch's augmentation) while the device finishes; the next forward's copies are
     * ordered after it on the stream */
    if (d->resident && !want_dx) return;
    CK(cudaStreamSynchronize(d->st));
    if (d->resident) return;
    float *hg = m->params.grad;
    const float *sg = d->hgrad;
    size_t np = d->nparam;
#pragma omp parallel for schedule(static) if (np > 65536)
    for (size_t k = 0; k < np; k++) hg[k] += sg[k];
}

extern "C" void dap_cnn_cuda_fetch(const void *dev, int layer, int which, float *host, size_t n) {
    const cnn_dev *d = (const cnn_dev *)dev;
    DAP_ASSERT(d && layer >= 0 && layer < d->nl && (which == 0 || d->with_grad));
    CK(cudaStreamSynchronize(d->st));
    CK(cudaMemcpy(host, which ? d->dout[layer] : d->out[layer], n * sizeof(float), cudaMemcpyDeviceToHost));
}

/* ---- resident training: the weights, the gradient and the optimiser on the device ------ */

/* core/optim.c's dap_sgd_step and dap_adamw_step, element by element. */
__global__ static void sgd_k(float *w, const float *g, float *b, idx_t n, float wd, float mu,
                             float neg_lr, int first) {
    GRID_LOOP(i, n) {
        float d = g[i] + w[i] * wd;
        if (b) {
            b[i] = first ? d : b[i] * mu + d;
            d = b[i];
        }
        w[i] += d * neg_lr;
    }
}

__global__ static void adamw_k(float *w, const float *g, float *m, float *v, idx_t n, float keep,
                               float b1, float c1, float b2, float c2, float bc2_sqrt, float eps,
                               float step_size) {
    GRID_LOOP(i, n) {
        w[i] *= keep;
        float mi = m[i] * b1 + g[i] * c1, vi = v[i] * b2 + g[i] * g[i] * c2;
        m[i] = mi, v[i] = vi;
        w[i] += -step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    }
}

static double decay_for(const dap_param *p, double wd, int decay_all) {
    return (p->no_decay && !decay_all) ? 0.0 : wd;
}

extern "C" void dap_cnn_cuda_resident(void *dev, const dap_params *ps, const dap_sgd *sgd,
                                      const dap_adamw *adamw) {
    cnn_dev *d = (cnn_dev *)dev;
    DAP_ASSERT(d && ps->total == d->nparam && !(sgd && adamw));
    DAP_ASSERT(!(sgd || adamw) || d->with_grad);
    size_t bytes = d->nparam * sizeof(float);
    CK(cudaMemcpyAsync(d->params, ps->data, bytes, cudaMemcpyHostToDevice, d->st));
    if (sgd && sgd->buf) {
        if (!d->opt_a) d->opt_a = dev_alloc(d->nparam);
        if (sgd->step > 0) CK(cudaMemcpyAsync(d->opt_a, sgd->buf, bytes, cudaMemcpyHostToDevice, d->st));
    }
    if (adamw) {
        if (!d->opt_a) d->opt_a = dev_alloc(d->nparam);
        if (!d->opt_b) d->opt_b = dev_alloc(d->nparam);
        if (adamw->step > 0) { /* a resumed run; a fresh one zeroes them at its first step */
            CK(cudaMemcpyAsync(d->opt_a, adamw->m, bytes, cudaMemcpyHostToDevice, d->st));
            CK(cudaMemcpyAsync(d->opt_b, adamw->v, bytes, cudaMemcpyHostToDevice, d->st));
        }
    }
    CK(cudaStreamSynchronize(d->st));
    d->resident = 1;
}

extern "C" void dap_cnn_cuda_opt_step(void *dev, const dap_params *ps, dap_sgd *sgd, dap_adamw *adamw,
                                      double lr) {
    cnn_dev *d = (cnn_dev *)dev;
    DAP_ASSERT(d && d->resident && d->with_grad && ps->total == d->nparam && (sgd != NULL) != (adamw != NULL));
    if (sgd) {
        DAP_ASSERT(!sgd->buf || d->opt_a);
        const int first = sgd->step == 0;
        sgd->step++;
        for (int k = 0; k < ps->n; k++) {
            const dap_param *p = &ps->p[k];
            if (p->frozen) continue;
            float *b = sgd->buf ? d->opt_a + p->offset : NULL;
            sgd_k<<<blocks_for(p->numel), THREADS, 0, d->st>>>(
                d->params + p->offset, d->grads + p->offset, b, (idx_t)p->numel,
                (float)decay_for(p, sgd->weight_decay, sgd->decay_all), (float)sgd->momentum, (float)-lr, first);
            LAUNCHED();
        }
    } else {
        DAP_ASSERT(d->opt_a && d->opt_b);
        if (adamw->step == 0) { /* a new optimiser: zero moments, as dap_adamw_init */
            CK(cudaMemsetAsync(d->opt_a, 0, d->nparam * sizeof(float), d->st));
            CK(cudaMemsetAsync(d->opt_b, 0, d->nparam * sizeof(float), d->st));
        }
        adamw->step++;
        const double bc1 = 1.0 - pow(adamw->beta1, (double)adamw->step);
        const double bc2 = 1.0 - pow(adamw->beta2, (double)adamw->step);
        for (int k = 0; k < ps->n; k++) {
            const dap_param *p = &ps->p[k];
            if (p->frozen) continue;
            const float keep = (float)(1.0 - lr * decay_for(p, adamw->weight_decay, adamw->decay_all));
            adamw_k<<<blocks_for(p->numel), THREADS, 0, d->st>>>(
                d->params + p->offset, d->grads + p->offset, d->opt_a + p->offset, d->opt_b + p->offset,
                (idx_t)p->numel, keep, (float)adamw->beta1, (float)(1.0 - adamw->beta1), (float)adamw->beta2,
                (float)(1.0 - adamw->beta2), (float)sqrt(bc2), (float)adamw->eps, (float)(lr / bc1));
            LAUNCHED();
        }
    }
}

extern "C" void dap_cnn_cuda_sync(void *dev, dap_params *ps, dap_sgd *sgd, dap_adamw *adamw) {
    cnn_dev *d = (cnn_dev *)dev;
    DAP_ASSERT(d && d->resident && ps->total == d->nparam);
    size_t bytes = d->nparam * sizeof(float);
    CK(cudaMemcpyAsync(ps->data, d->params, bytes, cudaMemcpyDeviceToHost, d->st));
    if (sgd && sgd->buf && sgd->step > 0 && d->opt_a)
        CK(cudaMemcpyAsync(sgd->buf, d->opt_a, bytes, cudaMemcpyDeviceToHost, d->st));
    if (adamw && adamw->step > 0 && d->opt_a && d->opt_b) {
        CK(cudaMemcpyAsync(adamw->m, d->opt_a, bytes, cudaMemcpyDeviceToHost, d->st));
        CK(cudaMemcpyAsync(adamw->v, d->opt_b, bytes, cudaMemcpyDeviceToHost, d->st));
    }
    CK(cudaStreamSynchronize(d->st));
}
