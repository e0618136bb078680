/*
 * dit_cuda.cu: the DiT of models/dit.h on the GPU, for sampling (DDIM + CFG) and the
 * DAP guidance: forward (full, or stopped after block l with its tokens exposed) and
 * the backward from block l to the input without parameter gradients; and for training,
 * the full backward with them (one block_backward serves both), AdamW, clipping and the
 * EMA (the sections "backward" and "training").
 *
 * Weights: one upload of the parameter table (the host layout, one allocation) when
 * the model is created; read-only afterwards. Activations: one allocation per state,
 * carved like dit.c's (a cached set per block up to cache_blocks, one scratch set for
 * the rest). Each block keeps what the input-gradient path needs and no more (no LN
 * outputs, no modulated inputs, no branch outputs: those serve parameter gradients
 * only, and a training state keeps them too):
 *
 *   mods (n, 6D); mean/rstd of both LayerNorms (N); q, k, v head-major (n, NH, T, HS);
 *   attention probabilities (n, NH, T, T); mid (N, D); fc1 pre-activation (N, H4); out
 *
 * Kernels: LayerNorm fused with the adaLN modulation (and its backward fused with the
 * residual add), the gated residual fused with the branch's bias, bias + GELU-tanh,
 * SiLU, the timestep frequencies, (un)patchify, head split / merge, row softmax and its
 * backward. Matrix products: cuBLAS (row-major through the transposition identity
 * C^T = B^T A^T), attention as two strided-batched products per direction around the
 * softmax kernel. Precision: cuBLAS compute type FP32 (reference), TF32 or BF16 tensor
 * cores with FP32 accumulation. Storage is FP32, except under bf16: there the weight
 * matrices and every activation a product reads are BF16 (st_act / ld_act below), the
 * rest FP32; a training model keeps FP32 master weights (AdamW's) and refreshes their BF16
 * copy after each update and each EMA swap.
 */
extern "C" {
#include "core/core.h"
#include "core/device.h"
#include "core/optim.h"
#include "cuda/cuda.h"
#include "models/dit.h"
}

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FREQ_DIM 256 /* dit.c */
#define LN_EPS 1e-6f
#define GELU_XMAX 20.0f /* ops/act.c */
#define SILU_XMAX 88.0f

#include "cuda/check.cuh"  /* CK, CB, LAUNCHED */
#include "cuda/launch.cuh" /* THREADS, blocks_for */

/* ---- kernels --------------------------------------------------------------------------
 * 32-bit indices: every buffer is checked below 2^31 elements when a state is planned. */
typedef unsigned int idx_t;
#define IDX_LIMIT ((size_t)1 << 31)

/* one warp a row */
static unsigned warp_blocks(size_t rows) { return (unsigned)((rows * 32 + THREADS - 1) / THREADS); }

#define GRID_LOOP(i, total)                                                                    \
    for (idx_t i = blockIdx.x * blockDim.x + threadIdx.x; i < (idx_t)(total); i += gridDim.x * blockDim.x)

__device__ static inline float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ static inline float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The tensors a matrix product reads (the weights, and the activations on their way into a
 * product: LayerNorm + adaLN outputs, q / k / v, attention probabilities, GELU and SiLU
 * outputs, and their gradient twins on the way back) are stored in FP32, or in BF16 under
 * bf16 storage (`bf` below); everything else (the residual stream, the products' outputs,
 * statistics, modulations) stays FP32. A kernel that writes such a tensor takes its
 * storage as `bf` and writes through st_act; one that reads it, through ld_act. */
typedef __nv_bfloat16 bf16;

__device__ static inline void st_act(void *p, idx_t i, float v, int bf) {
    if (bf) ((bf16 *)p)[i] = __float2bfloat16(v);
    else ((float *)p)[i] = v;
}
__device__ static inline float ld_act(const void *p, idx_t i, int bf) {
    return bf ? __bfloat162float(((const bf16 *)p)[i]) : ((const float *)p)[i];
}

/* gelu(x) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), clamped as ops/act.c */
__device__ static inline float gelu_f(float x) {
    float xc = fminf(fmaxf(x, -GELU_XMAX), GELU_XMAX);
    float u = 0.7978845608028654f * (xc + 0.044715f * xc * xc * xc);
    float s = 1.0f / (1.0f + expf(fminf(-2.0f * u, 88.0f))); /* finite e, as ops/act.c */
    return x > GELU_XMAX ? x : xc * s;
}
__device__ static inline float gelu_grad_f(float x) {
    x = fminf(fmaxf(x, -GELU_XMAX), GELU_XMAX);
    float x2 = x * x, u = 0.7978845608028654f * x * (1.0f + 0.044715f * x2);
    float du2 = 2.0f * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x2);
    /* e kept finite (x below about -10 would give inf * 0 = NaN in e s) */
    float e = expf(fminf(-2.0f * u, 88.0f)), s = 1.0f / (1.0f + e);
    return s * (1.0f + x * (e * s) * du2);
}
__device__ static inline float silu_f(float x) {
    float xc = fminf(fmaxf(x, -SILU_XMAX), SILU_XMAX);
    return x > SILU_XMAX ? x : xc / (1.0f + expf(-xc));
}

/* out[b, i] = cos(t_b f_i), out[b, 128 + i] = sin(t_b f_i), f_i = exp(-ln(10^4) i / 128) */
__global__ static void tfreq_k(void *out, const float *t, int n, int bf) {
    const int half = FREQ_DIM / 2;
    GRID_LOOP(i, (idx_t)n * half) {
        int b = i / half, j = i % half;
        float f = expf(-9.21034037197618f * (float)j / (float)half), arg = t[b] * f;
        st_act(out, (idx_t)b * FREQ_DIM + j, cosf(arg), bf);
        st_act(out, (idx_t)b * FREQ_DIM + half + j, sinf(arg), bf);
    }
}

/* pre += bias; act = silu(pre) */
__global__ static void bias_silu_k(void *act, float *pre, const float *bias, int rows, int cols, int bf) {
    GRID_LOOP(i, (idx_t)rows * cols) {
        float v = pre[i] + bias[i % cols];
        pre[i] = v;
        st_act(act, i, silu_f(v), bf);
    }
}

/* c = c + b2 + ytab[y]; c_act = silu(c) */
__global__ static void cond_k(float *c, void *c_act, const float *b2, const float *ytab, const int *y,
                              int n, int d, int bf) {
    GRID_LOOP(i, (idx_t)n * d) {
        idx_t b = i / d, j = i % d;
        float v = c[i] + b2[j] + ytab[(idx_t)y[b] * d + j];
        c[i] = v;
        st_act(c_act, i, silu_f(v), bf);
    }
}

__global__ static void bias_k(float *out, const float *bias, int rows, int cols) {
    GRID_LOOP(i, (idx_t)rows * cols) out[i] += bias[i % cols];
}

/* x (n, C, H, W) <-> patches (n, T, C p p), token i g + j, a patch laid out (c, ki, kj).
 * dir 0: patches (storage bf) from x; dir 1: x from patches (FP32; the adjoint: a
 * permutation). */
__global__ static void patchify_k(void *patches, float *x, int n, int C, int p, int g, int dir, int bf) {
    int P = C * p * p, T = g * g, W = g * p;
    GRID_LOOP(i, (idx_t)n * T * P) {
        idx_t bt = i / P;
        int r = i % P, c = r / (p * p), ki = (r / p) % p, kj = r % p;
        int b = bt / T, ti = (bt % T) / g, tj = bt % g;
        idx_t xi = (((idx_t)b * C + c) * W + ti * p + ki) * W + tj * p + kj;
        if (dir == 0) st_act(patches, i, x[xi], bf);
        else x[xi] = ((const float *)patches)[i];
    }
}

/* embed (N, D) += bias + pos[token] */
__global__ static void embed_k(float *e, const float *bias, const float *pos, int rows, int T, int d) {
    GRID_LOOP(i, (idx_t)rows * d) {
        idx_t r = i / d, j = i % d;
        e[i] += bias[j] + pos[(r % T) * d + j];
    }
}

/* The official unpatchify with the final bias: tok (n, T, p p Co) read as (h, w, p, q, c)
 * -> img[n, c, h p + pi, w p + q] */
__global__ static void unpatchify_out_k(float *img, const float *tok, const float *bias, int n, int Co, int p,
                                        int g) {
    int P = p * p * Co, T = g * g, W = g * p;
    GRID_LOOP(i, (idx_t)n * T * P) {
        idx_t bt = i / P;
        int r = i % P, pi = r / (p * Co), q = (r / Co) % p, c = r % Co;
        int b = bt / T, ti = (bt % T) / g, tj = bt % g;
        img[(((idx_t)b * Co + c) * W + ti * p + pi) * W + tj * p + q] = tok[i] + bias[r];
    }
}

/* LayerNorm (no affine) of each row of x (rows, D), then the adaLN modulation:
 * out = xhat (1 + scale[b]) + shift[b], b = row / T, shift/scale rows of stride ld.
 * mean, rstd (rows) written when not NULL. One warp a row. */
__global__ static void ln_mod_k(void *out, float *mean, float *rstd, const float *x, const float *shift,
                                const float *scale, int rows, int T, int d, int ld, float eps, int bf) {
    idx_t row = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= (idx_t)rows) return;
    const float *xr = x + row * d, *sh = shift + (row / T) * ld, *sc = scale + (row / T) * ld;
    float s = 0.0f;
    for (int j = lane; j < d; j += 32) s += xr[j];
    float m = warp_sum(s) / (float)d, v = 0.0f;
    for (int j = lane; j < d; j += 32) {
        float e = xr[j] - m;
        v += e * e;
    }
    float rs = 1.0f / sqrtf(warp_sum(v) / (float)d + eps);
    for (int j = lane; j < d; j += 32) st_act(out, row * d + j, (xr[j] - m) * rs * (1.0f + sc[j]) + sh[j], bf);
    if (lane == 0 && mean) mean[row] = m, rstd[row] = rs;
}

/* The input-gradient path of ln_mod_k, added into dres: g = dout (1 + scale[b]),
 * dres += rstd (g - mean(g) - xhat mean(g xhat)). One warp a row. */
__global__ static void ln_mod_bwd_k(float *dres, const float *dout, const float *x, const float *scale,
                                    const float *mean, const float *rstd, int rows, int T, int d, int ld) {
    idx_t row = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= (idx_t)rows) return;
    const float *xr = x + row * d, *dy = dout + row * d, *sc = scale + (row / T) * ld;
    float m = mean[row], rs = rstd[row], sg = 0.0f, sgx = 0.0f;
    for (int j = lane; j < d; j += 32) {
        float g = dy[j] * (1.0f + sc[j]);
        sg += g;
        sgx += g * (xr[j] - m) * rs;
    }
    float mg = warp_sum(sg) / (float)d, mgx = warp_sum(sgx) / (float)d;
    float *dr = dres + row * d;
    for (int j = lane; j < d; j += 32) {
        float g = dy[j] * (1.0f + sc[j]);
        dr[j] += rs * (g - mg - (xr[j] - m) * rs * mgx);
    }
}

/* out = in + gate[b] (y + bias): the gated residual with the branch's last bias (out may
 * alias in) */
__global__ static void gate_res_k(float *out, const float *in, const float *y, const float *bias,
                                  const float *gate, int rows, int T, int d, int ld) {
    GRID_LOOP(i, (idx_t)rows * d) {
        idx_t r = i / d, j = i % d;
        out[i] = in[i] + gate[(r / T) * ld + j] * (y[i] + bias[j]);
    }
}

/* dst = gate[b] src */
__global__ static void gate_mul_k(void *dst, const float *src, const float *gate, int rows, int T, int d, int ld,
                                  int bf) {
    GRID_LOOP(i, (idx_t)rows * d) {
        idx_t r = i / d, j = i % d;
        st_act(dst, i, gate[(r / T) * ld + j] * src[i], bf);
    }
}

/* pre += bias (kept: the backward's GELU input); act = gelu(pre) */
__global__ static void bias_gelu_k(void *act, float *pre, const float *bias, int rows, int cols, int bf) {
    GRID_LOOP(i, (idx_t)rows * cols) {
        float v = pre[i] + bias[i % cols];
        pre[i] = v;
        st_act(act, i, gelu_f(v), bf);
    }
}

__global__ static void gelu_k(float *out, const float *in, idx_t n) { GRID_LOOP(i, n) out[i] = gelu_f(in[i]); }
__global__ static void silu_k(float *out, const float *in, idx_t n) { GRID_LOOP(i, n) out[i] = silu_f(in[i]); }

/* dinp = dout gelu'(pre); dinp may alias dout in FP32 only */
__global__ static void gelu_bwd_k(void *dinp, const float *dout, const float *pre, idx_t n, int bf) {
    GRID_LOOP(i, n) st_act(dinp, i, dout[i] * gelu_grad_f(pre[i]), bf);
}

/* dst = src, in the storage bf */
__global__ static void to_act_k(void *dst, const float *src, idx_t n, int bf) { GRID_LOOP(i, n) st_act(dst, i, src[i], bf); }

/* qkv (N, 3D) + bias -> q, k, v each (n, NH, T, HS) (timm's reshape(B, T, 3, NH, HS));
 * bias NULL: none. dir 1: the reverse, qkv from q, k, v (no bias). The source is FP32,
 * the destination in the storage bf. */
__global__ static void qkv_heads_k(void *q, void *k, void *v, void *qkv, const float *bias, int n, int T, int d,
                                   int nh, int dir, int bf) {
    int hs = d / nh;
    idx_t d3 = 3 * (idx_t)d;
    GRID_LOOP(i, (idx_t)n * T * d3) {
        idx_t row = i / d3;
        int col = i % d3, which = col / d, h = (col % d) / hs, e = col % hs;
        int b = row / T, t = row % T;
        void *hp = which == 0 ? q : which == 1 ? k : v;
        idx_t hi = (((idx_t)b * nh + h) * T + t) * hs + e;
        if (dir == 0) st_act(hp, hi, ((const float *)qkv)[i] + (bias ? bias[col] : 0.0f), bf);
        else st_act(qkv, i, ((const float *)hp)[hi], bf);
    }
}

/* y (N, D) <-> yh (n, NH, T, HS). dir 0: y from yh; dir 1: yh from y. The source is FP32,
 * the destination in the storage bf. */
__global__ static void heads_k(void *y, void *yh, int n, int T, int d, int nh, int dir, int bf) {
    int hs = d / nh;
    GRID_LOOP(i, (idx_t)n * T * d) {
        idx_t row = i / d;
        int col = i % d, h = col / hs, e = col % hs, b = row / T, t = row % T;
        idx_t hi = (((idx_t)b * nh + h) * T + t) * hs + e;
        if (dir == 0) st_act(y, i, ((const float *)yh)[hi], bf);
        else st_act(yh, hi, ((const float *)y)[i], bf);
    }
}

/* Softmax of each row of the scores sc (rows, t) into p (storage bf); p may be sc in FP32.
 * One warp a row. */
__global__ static void softmax_k(void *p, const float *sc, int rows, int t, int bf) {
    idx_t row = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= (idx_t)rows) return;
    const float *r = sc + row * t;
    float mx = -INFINITY, s = 0.0f;
    for (int j = lane; j < t; j += 32) mx = fmaxf(mx, r[j]);
    mx = warp_max(mx);
    for (int j = lane; j < t; j += 32) s += expf(r[j] - mx);
    float inv = 1.0f / warp_sum(s);
    for (int j = lane; j < t; j += 32) st_act(p, row * t + j, expf(r[j] - mx) * inv, bf);
}

/* ds = scale p (dp - rowsum(p dp)): the probabilities' gradient dp (FP32) to the scores'
 * ds; p and ds in the storage bf, ds may be dp in FP32 */
__global__ static void softmax_bwd_k(void *ds, const float *dp, const void *p, int rows, int t, float scale,
                                     int bf) {
    idx_t row = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= (idx_t)rows) return;
    const float *dr = dp + row * t;
    float dot = 0.0f;
    for (int j = lane; j < t; j += 32) dot += ld_act(p, row * t + j, bf) * dr[j];
    dot = warp_sum(dot);
    for (int j = lane; j < t; j += 32)
        st_act(ds, row * t + j, scale * ld_act(p, row * t + j, bf) * (dr[j] - dot), bf);
}

/* ---- cuBLAS ------------------------------------------------------------------------ */

typedef struct gpu {
    cudaStream_t st;
    cublasHandle_t h;
    cublasComputeType_t compute;
    cudaDataType ab; /* the products' A and B: FP32, or BF16 under bf16 storage (C is FP32) */
    int bf;          /* bf16 storage (the kernels' `bf`) */
} gpu;

static cublasComputeType_t compute_type(int precision) {
    switch (precision) {
    case DAP_PRECISION_TF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case DAP_PRECISION_BF16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    default: return CUBLAS_COMPUTE_32F;
    }
}

/* bf16: BF16 storage of the products' operands (precision bf16 only) */
static void gpu_init(gpu *g, int precision, int bf16) {
    CK(cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking));
    CB(cublasCreate(&g->h));
    CB(cublasSetStream(g->h, g->st));
    /* the compute type of each product (compute_type) decides TF32 / BF16; CUBLAS_COMPUTE_32F
     * keeps FP32 whatever the math mode */
    CB(cublasSetMathMode(g->h, CUBLAS_DEFAULT_MATH));
    g->compute = compute_type(precision);
    g->bf = bf16;
    g->ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    /* BF16 operands take FP32 accumulation under CUBLAS_COMPUTE_32F (the FAST_16BF compute
     * type is for FP32 operands) */
    if (bf16) g->compute = CUBLAS_COMPUTE_32F;
}

static void gpu_free(gpu *g) {
    if (g->h) cublasDestroy(g->h);
    if (g->st) cudaStreamDestroy(g->st);
    memset(g, 0, sizeof *g);
}

/* Row-major C (m, n) = alpha op(A) op(B) + beta C (ta/tb 1: transposed), as dap_gemm:
 * column-major cuBLAS computes C^T = op(B)^T op(A)^T. */
static void gemm(const gpu *g, int ta, int tb, int m, int n, int k, float alpha, const void *a, int lda,
                 const void *b, int ldb, float beta, float *c, int ldc) {
    CB(cublasGemmEx(g->h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, g->ab,
                    ldb, a, g->ab, lda, &beta, c, CUDA_R_32F, ldc, g->compute, CUBLAS_GEMM_DEFAULT));
}

/* The same over `count` matrices at fixed strides. */
static void gemm_sb(const gpu *g, int ta, int tb, int m, int n, int k, float alpha, const void *a, int lda,
                    long long sa, const void *b, int ldb, long long sb, float beta, float *c, int ldc,
                    long long sc, int count) {
    CB(cublasGemmStridedBatchedEx(g->h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                                  &alpha, b, g->ab, ldb, sb, a, g->ab, lda, sa, &beta, c, CUDA_R_32F, ldc, sc,
                                  count, g->compute, CUBLAS_GEMM_DEFAULT));
}

/* out (N, OC) = inp (N, IC) w^T (w (OC, IC)); bias left to the caller's fused kernel */
static void linear(const gpu *g, float *out, const void *inp, const void *w, int n, int ic, int oc) {
    gemm(g, 0, 1, n, oc, ic, 1.0f, inp, ic, w, ic, 0.0f, out, oc);
}
/* dinp (N, IC) = dout (N, OC) w */
static void linear_dinp(const gpu *g, float *dinp, const void *dout, const void *w, int n, int ic, int oc) {
    gemm(g, 0, 0, n, ic, oc, 1.0f, dout, oc, w, ic, 0.0f, dinp, ic);
}

/* ---- op launchers (device pointers) -------------------------------------------------- */

/* Attention core: q, k, v (n NH, T, HS) -> P (n NH, T, T) probabilities, yh (n NH, T, HS)
 * (FP32). q, k, v, P in the storage g->bf; the scores go through sc (FP32, P's shape),
 * which may be P in FP32. */
static void attention_fwd(const gpu *g, float *yh, void *P, float *sc, const void *q, const void *k,
                          const void *v, int n, int T, int d, int nh) {
    int hs = d / nh, items = n * nh;
    long long tt = (long long)T * T, ths = (long long)T * hs;
    gemm_sb(g, 0, 1, T, T, hs, 1.0f / sqrtf((float)hs), q, hs, ths, k, hs, ths, 0.0f, sc, T, tt, items);
    softmax_k<<<warp_blocks((size_t)items * T), THREADS, 0, g->st>>>(P, sc, items * T, T, g->bf);
    LAUNCHED();
    gemm_sb(g, 0, 0, T, hs, T, 1.0f, P, T, tt, v, hs, ths, 0.0f, yh, hs, ths, items);
}

/* Its backward: dyh (storage g->bf) -> dq, dk, dv (FP32, all (n NH, T, HS), overwritten);
 * dP (FP32) and dS (storage g->bf, may be dP in FP32) scratch of P's shape */
static void attention_bwd(const gpu *g, float *dq, float *dk, float *dv, float *dP, void *dS, const void *dyh,
                          const void *P, const void *q, const void *k, const void *v, int n, int T, int d,
                          int nh) {
    int hs = d / nh, items = n * nh;
    long long tt = (long long)T * T, ths = (long long)T * hs;
    gemm_sb(g, 0, 1, T, T, hs, 1.0f, dyh, hs, ths, v, hs, ths, 0.0f, dP, T, tt, items);
    gemm_sb(g, 1, 0, T, hs, T, 1.0f, P, T, tt, dyh, hs, ths, 0.0f, dv, hs, ths, items);
    softmax_bwd_k<<<warp_blocks((size_t)items * T), THREADS, 0, g->st>>>(dS, dP, P, items * T, T,
                                                                         1.0f / sqrtf((float)hs), g->bf);
    LAUNCHED();
    gemm_sb(g, 0, 0, T, hs, T, 1.0f, dS, T, tt, k, hs, ths, 0.0f, dq, hs, ths, items);
    gemm_sb(g, 1, 0, T, hs, T, 1.0f, dS, T, tt, q, hs, ths, 0.0f, dk, hs, ths, items);
}

/* ---- the model ------------------------------------------------------------------------ */

typedef struct dblock { /* matrices in the storage, vectors FP32 */
    const void *qkv_w, *proj_w, *fc1_w, *fc2_w, *ada_w;
    const float *qkv_b, *proj_b, *fc1_b, *fc2_b, *ada_b;
} dblock;

struct dap_dit_cuda {
    dap_dit_config cfg;
    int T, D, H4, NH, g, Co, Pin, Pout, precision;
    int bf;       /* bf16 storage: the matrices read from wh; FP32: everything in w */
    float *w;     /* the parameter table in FP32, host layout (bf16: a training model's master copy) */
    bf16 *wh;     /* bf16 storage: the table in BF16, host layout (the matrices are read) */
    float *wv;    /* bf16 inference model (no w): the vectors (biases, pos_embed, the label table)
                   * in FP32, packed */
    size_t *voff; /* (params) each vector's offset in wv */
    size_t w_floats, wv_floats;
    const void *xe_w, *t0_w, *t2_w, *fin_w, *fin_ada_w;
    const float *pos, *xe_b, *t0_b, *t2_b, *ytab, *fin_b, *fin_ada_b;
    dblock *blk;  /* (depth), host array of device pointers */
    struct gpu gpu;
    char name[256];
    const dap_dit *host; /* the host model (its table gives the tensors' offsets) */
    /* training (dap_dit_cuda_train_begin): gradients, EMA weights, AdamW moments, all in
     * the table's layout; the grad-norm's partial sums */
    float *gw, *ema, *om, *ov;
    double *parts;
};

/* Whether a tensor is a matrix a product reads (stored as the products' operands), not a
 * vector read by the kernels (biases, pos_embed, the label table: FP32 always). */
static int is_matrix(const dap_param *p) {
    return p->ndim >= 2 && strcmp(p->key, "pos_embed") != 0 && strcmp(p->key, "y_embedder.embedding_table.weight") != 0;
}

static const dap_param *wparam(const dap_dit_cuda *d, const char *key, int *index) {
    int i = dap_params_find(&d->host->params, key);
    DAP_ASSERT(i >= 0);
    if (index) *index = i;
    return &d->host->params.p[i];
}
static const void *wmat(const dap_dit_cuda *d, const char *key) {
    const dap_param *p = wparam(d, key, NULL);
    DAP_ASSERT(is_matrix(p));
    return d->bf ? (const void *)(d->wh + p->offset) : (const void *)(d->w + p->offset);
}
static const float *wvec(const dap_dit_cuda *d, const char *key) {
    int i;
    const dap_param *p = wparam(d, key, &i);
    DAP_ASSERT(!is_matrix(p));
    return d->w ? d->w + p->offset : d->wv + d->voff[i];
}

/* A weight pointer's offset in the table (into w or wh) */
static size_t woff(const dap_dit_cuda *d, const void *ptr) {
    const uintptr_t u = (uintptr_t)ptr, h = (uintptr_t)d->wh;
    if (d->wh && u >= h && u < h + d->w_floats * sizeof(bf16)) return (u - h) / sizeof(bf16);
    return (size_t)((const float *)ptr - d->w);
}

/* The device bytes of the weights: FP32; under bf16 the BF16 table beside it (a model with
 * gradients: the FP32 master copy AdamW updates) or BF16 matrices and FP32 vectors alone */
static size_t weight_bytes(const dap_dit *m, int bf) {
    if (!bf) return m->params.total * sizeof(float);
    if (m->params.grad) return m->params.total * (sizeof(float) + sizeof(bf16));
    size_t vec = 0;
    for (int i = 0; i < m->params.n; i++)
        if (!is_matrix(&m->params.p[i])) vec += m->params.p[i].numel;
    return m->params.total * sizeof(bf16) + vec * sizeof(float);
}

static int free_memory(size_t *free_b, size_t *total_b) {
    cudaError_t e = cudaMemGetInfo(free_b, total_b);
    if (e != cudaSuccess) return dap_error(DAP_ERR_MISSING, "device cuda: %s", cudaGetErrorString(e));
    return DAP_OK;
}


extern "C" int dap_cuda_bf16_supported(void) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return 0;
    return p.major >= 8;
}

static void bind(dap_dit_cuda *d);

extern "C" int dap_dit_cuda_storage_bf16(const dap_dit *m, int precision) {
    (void)m;
    return precision == DAP_PRECISION_BF16;
}

extern "C" size_t dap_dit_cuda_weight_bytes(const dap_dit *m, int precision) {
    return weight_bytes(m, dap_dit_cuda_storage_bf16(m, precision));
}

extern "C" int dap_dit_cuda_create(dap_dit_cuda **out, const dap_dit *m, int precision) {
    *out = NULL;
    char desc[256];
    DAP_TRY(dap_cuda_init(desc, sizeof desc));
    if (precision == DAP_PRECISION_BF16 && !dap_cuda_bf16_supported())
        return dap_error(DAP_ERR_ARG, "--precision bf16: %s has no bf16 arithmetic (compute capability 8.0 or "
                                      "newer); use fp32 or tf32", desc);
    const int bf = dap_dit_cuda_storage_bf16(m, precision);
    size_t bytes = weight_bytes(m, bf), fr = 0, tot = 0;
    DAP_TRY(free_memory(&fr, &tot));
    if (bytes + ((size_t)64 << 20) > fr) { /* the weights and cuBLAS's workspace */
        char b[3][32];
        return dap_error(DAP_ERR_NOMEM, "device cuda (%s): the DiT's weights need %s (and 64 MiB of workspace), %s of "
                                        "the device's %s are free", desc, dap_fmt_bytes(b[0], 32, (double)bytes),
                         dap_fmt_bytes(b[1], 32, (double)fr), dap_fmt_bytes(b[2], 32, (double)tot));
    }
    dap_dit_cuda *d = (dap_dit_cuda *)dap_calloc(1, sizeof *d);
    d->cfg = m->cfg;
    d->T = m->tokens, d->D = m->cfg.hidden, d->H4 = m->mlp_hidden, d->NH = m->cfg.heads, d->g = m->grid;
    d->Co = m->out_channels, d->Pin = m->patch_in, d->Pout = m->patch_out, d->precision = precision;
    d->bf = bf;
    snprintf(d->name, sizeof d->name, "%s", desc);
    gpu_init(&d->gpu, precision, bf);
    d->w_floats = m->params.total;
    d->host = m;
    if (bf) CK(cudaMalloc(&d->wh, d->w_floats * sizeof(bf16)));
    if (!bf || m->params.grad) {
        CK(cudaMalloc(&d->w, d->w_floats * sizeof(float)));
    } else {
        d->voff = (size_t *)dap_calloc((size_t)m->params.n, sizeof *d->voff);
        for (int i = 0; i < m->params.n; i++)
            if (!is_matrix(&m->params.p[i])) d->voff[i] = d->wv_floats, d->wv_floats += m->params.p[i].numel;
        CK(cudaMalloc(&d->wv, (d->wv_floats ? d->wv_floats : 1) * sizeof(float)));
    }
    dap_dit_cuda_upload(d, m);
    d->blk = (dblock *)dap_calloc((size_t)m->cfg.depth, sizeof *d->blk);
    bind(d);
    *out = d;
    return DAP_OK;
}

/* Points the tensor fields into d->w (again after dap_dit_cuda_swap_ema). */
static void bind(dap_dit_cuda *d) {
    const dap_dit *m = d->host;
    d->pos = wvec(d, "pos_embed");
    d->xe_w = wmat(d, "x_embedder.proj.weight"), d->xe_b = wvec(d, "x_embedder.proj.bias");
    d->t0_w = wmat(d, "t_embedder.mlp.0.weight"), d->t0_b = wvec(d, "t_embedder.mlp.0.bias");
    d->t2_w = wmat(d, "t_embedder.mlp.2.weight"), d->t2_b = wvec(d, "t_embedder.mlp.2.bias");
    d->ytab = wvec(d, "y_embedder.embedding_table.weight");
    d->fin_w = wmat(d, "final_layer.linear.weight"), d->fin_b = wvec(d, "final_layer.linear.bias");
    d->fin_ada_w = wmat(d, "final_layer.adaLN_modulation.1.weight");
    d->fin_ada_b = wvec(d, "final_layer.adaLN_modulation.1.bias");
    for (int l = 0; l < m->cfg.depth; l++) {
        char k[96];
        dblock *x = &d->blk[l];
#define W(field, kind, name) (snprintf(k, sizeof k, "blocks.%d.%s", l, name), x->field = kind(d, k))
        W(qkv_w, wmat, "attn.qkv.weight"), W(qkv_b, wvec, "attn.qkv.bias"), W(proj_w, wmat, "attn.proj.weight");
        W(proj_b, wvec, "attn.proj.bias"), W(fc1_w, wmat, "mlp.fc1.weight"), W(fc1_b, wvec, "mlp.fc1.bias");
        W(fc2_w, wmat, "mlp.fc2.weight"), W(fc2_b, wvec, "mlp.fc2.bias");
        W(ada_w, wmat, "adaLN_modulation.1.weight"), W(ada_b, wvec, "adaLN_modulation.1.bias");
#undef W
    }
}

/* dst = BF16(src), n values of device memory, on the model's stream and waited for: the
 * one rounding of weights to BF16 (the kernels' __float2bfloat16) */
static void to_bf16(const gpu *g, bf16 *dst, const float *src, size_t n) {
    DAP_ASSERT(n < IDX_LIMIT);
    to_act_k<<<blocks_for(n), THREADS, 0, g->st>>>(dst, src, (idx_t)n, 1);
    LAUNCHED();
    CK(cudaStreamSynchronize(g->st));
}

/* wh = BF16(w), after w changed (an upload, the EMA swap; AdamW writes both itself) */
static void refresh_bf16(dap_dit_cuda *d) { to_bf16(&d->gpu, d->wh, d->w, d->w_floats); }

extern "C" void dap_dit_cuda_upload(dap_dit_cuda *d, const dap_dit *m) {
    DAP_ASSERT(m->params.total == d->w_floats);
    /* the copies below run on the legacy stream: work queued on the model's must land first */
    if (d->gpu.st) CK(cudaStreamSynchronize(d->gpu.st));
    if (d->w) {
        CK(cudaMemcpy(d->w, m->params.data, d->w_floats * sizeof(float), cudaMemcpyHostToDevice));
        CK(cudaDeviceSynchronize());
        if (d->bf) refresh_bf16(d);
    } else {
        /* the table through a 16 MiB FP32 staging buffer, rounded there a chunk at a time;
         * the vectors as they are */
        const size_t chunk = (size_t)1 << 22, len0 = d->w_floats < chunk ? d->w_floats : chunk;
        float *stage = NULL;
        CK(cudaMalloc(&stage, (len0 ? len0 : 1) * sizeof(float)));
        for (size_t at = 0; at < d->w_floats; at += chunk) {
            size_t len = d->w_floats - at < chunk ? d->w_floats - at : chunk;
            CK(cudaMemcpy(stage, m->params.data + at, len * sizeof(float), cudaMemcpyHostToDevice));
            CK(cudaDeviceSynchronize()); /* a pageable copy may still be in flight */
            to_bf16(&d->gpu, d->wh + at, stage, len);
        }
        CK(cudaFree(stage));
        for (int i = 0; i < m->params.n; i++) {
            const dap_param *p = &m->params.p[i];
            if (!is_matrix(p) && p->numel)
                CK(cudaMemcpy(d->wv + d->voff[i], m->params.data + p->offset, p->numel * sizeof(float),
                              cudaMemcpyHostToDevice));
        }
    }
    /* a pageable copy may still be in flight when cudaMemcpy returns, and the model's stream
     * does not wait for the legacy stream */
    CK(cudaDeviceSynchronize());
}

extern "C" void dap_dit_cuda_destroy(dap_dit_cuda *d) {
    if (!d) return;
    cudaFree(d->w), cudaFree(d->wh), cudaFree(d->wv);
    free(d->voff);
    cudaFree(d->gw), cudaFree(d->ema), cudaFree(d->om), cudaFree(d->ov), cudaFree(d->parts);
    free(d->blk);
    gpu_free(&d->gpu);
    free(d);
}

extern "C" const char *dap_dit_cuda_describe(const dap_dit_cuda *d) { return d->name; }

/* ---- the state ------------------------------------------------------------------------ */

typedef struct dacts { /* what block l keeps (the scratch set: mid, out alias the stream) */
    float *mods;                     /* (n, 6D) shift1 scale1 gate1 shift2 scale2 gate2 */
    float *mean1, *rstd1, *mean2, *rstd2; /* (N) */
    float *q, *k, *v;                /* (n, NH, T, HS) storage (the scratch set's: FP32-sized, dq dk dv) */
    float *P;                        /* (n, NH, T, T) storage (the scratch set's: dS, storage) */
    float *mid;                      /* (N, D) */
    float *fc1;                      /* (N, H4) pre-GELU */
    float *out;                      /* (N, D) */
    /* training states only (NULL otherwise): what the parameter gradients read */
    float *mod1, *atty, *atto;       /* (N, D): LN1 modulated, attention heads merged, proj(atty) */
    float *mod2, *mlpo;              /* (N, D): LN2 modulated, fc2(gelu) */
    float *gel;                      /* (N, H4): gelu(fc1) */
} dacts;

/* Buffers in the storage (bf16 storage: half the floats) hold what a product reads: the
 * sampling state's tfreq, tact, cact, patches and the cached sets' q, k, v, P. */
struct dap_dit_cuda_state {
    int batch, n, cache_blocks, blocks_done;
    float *mem;
    float **slots;                   /* DAP_CUDA_SPLIT_STATE: a buffer an allocation (mem NULL) */
    size_t nslots;
    size_t floats;
    float *x, *t, *fout_img;         /* (n, C, H, W), (n), (n, Co, H, W) */
    int *y;                          /* (n) */
    float *tfreq, *th, *tact, *c, *cact; /* (n, 256), (n, D) x4 */
    float *patches, *embed, *stream; /* (N, C p p), (N, D), (N, D) */
    float *scores;                   /* bf16 storage: (n, NH, T, T) FP32 attention scores, and dP (in hbuf) */
    dacts *blk;                      /* cache_blocks + 1 */
    float *mod, *qkv, *yh, *ybuf, *tmp, *hbuf; /* scratch: (N, D), (N, 3D), (N, D) x3, (N, H4) */
    float *fmods, *fout;             /* (n, 2D), (N, p p Co) */
    const float *feat;               /* output of the last block run */
    float *dres, *dpatches, *dx;     /* backward: (N, D), (N, C p p), (n, C, H, W) */
    /* training states (dap_dit_cuda_state_create_train): the final layer's LayerNorm and
     * input, and the parameter backward's buffers */
    int train;
    float *meanf, *rstdf, *modf;     /* (N), (N), (N, D) */
    float *gmods, *gfmods;           /* (n, 6D), (n, 2D) */
    float *gcact, *gc, *gtact, *gth; /* (n, D) */
    float *gfout, *gimg;             /* (N, p p Co), (n, Co, H, W) */
    float *ones;                     /* (max(N, n)) of 1: bias gradients as products */
};

/* Carves a state's buffers from one allocation (base), or plans them (base NULL). split
 * (DAP_CUDA_SPLIT_STATE=1, a check): each buffer is an allocation of its exact size instead,
 * so that a kernel writing past a buffer's end meets the CUDA emulator's guard bytes rather
 * than the next buffer. */
typedef struct arena {
    float *base;
    size_t used, largest;
    int split;
    float **owned; /* split: the allocations */
    size_t nowned;
} arena;

static float *take(arena *a, size_t n) {
    float *p = a->base ? a->base + a->used : NULL;
    if (n > a->largest) a->largest = n;
    a->used += (n + 63) & ~(size_t)63; /* 256-byte alignment */
    if (a->split) {
        CK(cudaMalloc(&p, (n ? n : 1) * sizeof(float)));
        a->owned = (float **)dap_realloc(a->owned, (a->nowned + 1) * sizeof *a->owned);
        a->owned[a->nowned++] = p;
    }
    return p;
}

typedef struct dims {
    size_t B, N, D, H4, NH, T, Cin, Pin, Pout, Co;
    int bf; /* bf16 storage */
} dims;

/* n values in the storage */
static float *take_act(arena *a, size_t n, int bf) {
    float *p = take(a, bf ? (n + 1) / 2 : n);
    if (n > a->largest) a->largest = n; /* the kernels index values */
    return p;
}

static dims dims_of(const dap_dit_cuda *d, int batch) {
    dims z;
    z.B = batch, z.T = d->T, z.N = z.B * d->T, z.D = d->D, z.H4 = d->H4, z.NH = d->NH;
    z.Cin = (size_t)d->cfg.in_channels * d->cfg.input_size * d->cfg.input_size;
    z.Pin = d->Pin, z.Pout = d->Pout, z.Co = (size_t)d->Co * d->cfg.input_size * d->cfg.input_size;
    z.bf = d->bf;
    return z;
}

static void carve(arena *a, dap_dit_cuda_state *s, const dims &z) {
    s->x = take(a, z.B * z.Cin);
    s->t = take(a, z.B);
    s->y = (int *)take(a, z.B);
    s->fout_img = take(a, z.B * z.Co);
    s->tfreq = take_act(a, z.B * FREQ_DIM, z.bf);
    s->th = take(a, z.B * z.D), s->tact = take_act(a, z.B * z.D, z.bf);
    s->c = take(a, z.B * z.D), s->cact = take_act(a, z.B * z.D, z.bf);
    s->patches = take_act(a, z.N * z.Pin, z.bf);
    s->embed = take(a, z.N * z.D);
    s->stream = take(a, z.N * z.D);
    for (int l = 0; l <= s->cache_blocks; l++) {
        dacts *b = &s->blk[l];
        int scratch = l == s->cache_blocks;
        b->mods = take(a, z.B * 6 * z.D);
        b->mean1 = take(a, z.N), b->rstd1 = take(a, z.N), b->mean2 = take(a, z.N), b->rstd2 = take(a, z.N);
        /* the scratch set's hold dq, dk, dv (FP32) on the way back, when there is one */
        int qbf = z.bf && (!scratch || s->cache_blocks == 0);
        b->q = take_act(a, z.N * z.D, qbf), b->k = take_act(a, z.N * z.D, qbf), b->v = take_act(a, z.N * z.D, qbf);
        b->P = take_act(a, z.B * z.NH * z.T * z.T, z.bf);
        b->mid = scratch ? s->stream : take(a, z.N * z.D);
        b->fc1 = take(a, z.N * z.H4);
        b->out = scratch ? s->stream : take(a, z.N * z.D);
        if (s->train && !scratch) {
            b->mod1 = take_act(a, z.N * z.D, z.bf), b->atty = take_act(a, z.N * z.D, z.bf);
            b->atto = take(a, z.N * z.D);
            b->mod2 = take_act(a, z.N * z.D, z.bf), b->mlpo = take(a, z.N * z.D);
            b->gel = take_act(a, z.N * z.H4, z.bf);
        }
    }
    s->mod = take(a, z.N * z.D);
    s->qkv = take(a, z.N * 3 * z.D);
    s->yh = take(a, z.N * z.D), s->ybuf = take(a, z.N * z.D), s->tmp = take(a, z.N * z.D);
    /* bf16: the attention scores (FP32) share hbuf: a block's forward writes its GELU output
     * there after the softmax read them, its backward writes dP after gelu_bwd read hbuf */
    const size_t tt = z.B * z.NH * z.T * z.T;
    s->hbuf = take(a, z.bf && tt > z.N * z.H4 ? tt : z.N * z.H4);
    if (z.bf) s->scores = s->hbuf;
    s->fmods = take(a, z.B * 2 * z.D);
    s->fout = take(a, z.N * z.Pout);
    if (s->cache_blocks == 0) return;
    s->dres = take(a, z.N * z.D);
    s->dpatches = take(a, z.N * z.Pin);
    s->dx = take(a, z.B * z.Cin);
    if (!s->train) return;
    s->meanf = take(a, z.N), s->rstdf = take(a, z.N), s->modf = take_act(a, z.N * z.D, z.bf);
    s->gmods = take_act(a, z.B * 6 * z.D, z.bf), s->gfmods = take_act(a, z.B * 2 * z.D, z.bf);
    s->gcact = take(a, z.B * z.D), s->gc = take_act(a, z.B * z.D, z.bf), s->gtact = take(a, z.B * z.D);
    s->gth = take_act(a, z.B * z.D, z.bf);
    s->gfout = take_act(a, z.N * z.Pout, z.bf), s->gimg = take(a, z.B * z.Co);
    s->ones = take_act(a, z.N > z.B ? z.N : z.B, z.bf);
}

static size_t plan(const dap_dit_cuda *d, int batch, int cache_blocks, int train, size_t *largest) {
    dap_dit_cuda_state s;
    memset(&s, 0, sizeof s);
    s.cache_blocks = cache_blocks;
    s.train = train;
    dacts *blk = (dacts *)dap_calloc((size_t)cache_blocks + 1, sizeof *blk);
    s.blk = blk;
    arena a = {NULL, 0, 0, 0, NULL, 0};
    carve(&a, &s, dims_of(d, batch));
    free(blk);
    if (largest) *largest = a.largest;
    return a.used * sizeof(float);
}

extern "C" size_t dap_dit_cuda_state_bytes_for(const dap_dit_cuda *d, int batch, int cache_blocks) {
    return plan(d, batch, cache_blocks, 0, NULL);
}

__global__ static void fill_k(void *p, float v, idx_t n, int bf) { GRID_LOOP(i, n) st_act(p, i, v, bf); }

/* Training updates the FP32 master weights: an inference model under bf16 has none. */
static int train_bf16_error(const dap_dit_cuda *d) {
    return dap_error(DAP_ERR_ARG, "device cuda (%s): this DiT keeps BF16 weights alone (an inference model under "
                                  "--precision bf16); training needs a model created with gradients, which keeps "
                                  "FP32 master weights", d->name);
}

static int state_create(dap_dit_cuda_state **out, const dap_dit_cuda *d, int batch, int cache_blocks, int train) {
    DAP_ASSERT(batch > 0 && cache_blocks >= 0 && cache_blocks <= d->cfg.depth);
    DAP_ASSERT(!train || cache_blocks == d->cfg.depth);
    *out = NULL;
    if (train && !d->w) return train_bf16_error(d);
    size_t largest = 0, bytes = plan(d, batch, cache_blocks, train, &largest), fr = 0, tot = 0;
    if (largest >= IDX_LIMIT)
        return dap_error(DAP_ERR_ARG, "device cuda: batch %d makes a DiT activation of %zu values, over the "
                                      "kernels' 2^31 limit: lower --batch", batch, largest);
    DAP_TRY(free_memory(&fr, &tot));
    char b[2][32];
    if (bytes > fr)
        return dap_error(DAP_ERR_NOMEM, "device cuda (%s): the DiT's activations for batch %d (%d cached blocks) "
                                        "need %s, %s are free: lower --batch", d->name, batch, cache_blocks,
                         dap_fmt_bytes(b[0], 32, (double)bytes), dap_fmt_bytes(b[1], 32, (double)fr));
    dap_dit_cuda_state *s = (dap_dit_cuda_state *)dap_calloc(1, sizeof *s);
    s->batch = s->n = batch;
    s->cache_blocks = cache_blocks;
    s->train = train;
    s->blk = (dacts *)dap_calloc((size_t)cache_blocks + 1, sizeof *s->blk);
    const char *split = getenv("DAP_CUDA_SPLIT_STATE");
    if (split && atoi(split) > 0) {
        arena a = {NULL, 0, 0, 1, NULL, 0};
        carve(&a, s, dims_of(d, batch));
        s->slots = a.owned, s->nslots = a.nowned;
    }
    cudaError_t e = s->slots ? cudaSuccess : cudaMalloc(&s->mem, bytes);
    if (e != cudaSuccess) {
        free(s->blk), free(s);
        cudaGetLastError();
        return dap_error(DAP_ERR_NOMEM, "device cuda (%s): allocating %s of DiT activations for batch %d: "
                                        "%s: lower --batch", d->name, dap_fmt_bytes(b[0], 32, (double)bytes), batch,
                         cudaGetErrorString(e));
    }
    s->floats = bytes / sizeof(float);
    if (!s->slots) {
        arena a = {s->mem, 0, 0, 0, NULL, 0};
        carve(&a, s, dims_of(d, batch));
    }
    if (train) {
        size_t n1 = (size_t)batch * d->T > (size_t)batch ? (size_t)batch * d->T : (size_t)batch;
        fill_k<<<blocks_for(n1), THREADS>>>(s->ones, 1.0f, (idx_t)n1, d->bf);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
    }
    *out = s;
    return DAP_OK;
}

extern "C" int dap_dit_cuda_state_create(dap_dit_cuda_state **out, const dap_dit_cuda *d, int batch,
                                         int cache_blocks) {
    return state_create(out, d, batch, cache_blocks, 0);
}

extern "C" void dap_dit_cuda_state_destroy(dap_dit_cuda_state *s) {
    if (!s) return;
    cudaFree(s->mem);
    for (size_t i = 0; i < s->nslots; i++) cudaFree(s->slots[i]);
    free(s->slots);
    free(s->blk);
    free(s);
}

extern "C" void dap_dit_cuda_state_set_batch(dap_dit_cuda_state *s, int n) {
    DAP_ASSERT(n > 0 && n <= s->batch);
    s->n = n;
    s->blocks_done = 0;
    s->feat = NULL;
}

extern "C" size_t dap_dit_cuda_state_bytes(const dap_dit_cuda_state *s) { return s->floats * sizeof(float); }

/* ---- forward --------------------------------------------------------------------------- */

#define L1(kernel, total) kernel<<<blocks_for(total), THREADS, 0, g->st>>>
#define LW(kernel, rows) kernel<<<warp_blocks(rows), THREADS, 0, g->st>>>

static void block_forward(const dap_dit_cuda *d, dap_dit_cuda_state *s, int l, const float *in, dacts *a) {
    const gpu *g = &d->gpu;
    const dblock *w = &d->blk[l];
    int n = s->n, T = d->T, D = d->D, H4 = d->H4, N = n * T, ld = 6 * D;
    float *md = a->mods;
    /* a training state keeps the branch inputs and outputs; otherwise they pass through scratch */
    float *mod1 = a->mod1 ? a->mod1 : s->mod, *atty = a->atty ? a->atty : s->ybuf;
    float *atto = a->atto ? a->atto : s->tmp, *mod2 = a->mod2 ? a->mod2 : s->mod;
    float *gel = a->gel ? a->gel : s->hbuf, *mlpo = a->mlpo ? a->mlpo : s->tmp;
    linear(g, md, s->cact, w->ada_w, n, D, 6 * D);
    L1(bias_k, (size_t)n * 6 * D)(md, w->ada_b, n, 6 * D);
    LAUNCHED();
    /* attention branch: mid = in + g1 proj(attn(qkv(mod(LN(in), sh1, sc1)))) */
    LW(ln_mod_k, N)(mod1, a->mean1, a->rstd1, in, md, md + D, N, T, D, ld, LN_EPS, g->bf);
    LAUNCHED();
    linear(g, s->qkv, mod1, w->qkv_w, N, D, 3 * D);
    L1(qkv_heads_k, (size_t)N * 3 * D)(a->q, a->k, a->v, s->qkv, w->qkv_b, n, T, D, d->NH, 0, g->bf);
    LAUNCHED();
    attention_fwd(g, s->yh, a->P, g->bf ? s->scores : a->P, a->q, a->k, a->v, n, T, D, d->NH);
    L1(heads_k, (size_t)N * D)(atty, s->yh, n, T, D, d->NH, 0, g->bf);
    LAUNCHED();
    linear(g, atto, atty, w->proj_w, N, D, D);
    L1(gate_res_k, (size_t)N * D)(a->mid, in, atto, w->proj_b, md + 2 * D, N, T, D, ld);
    LAUNCHED();
    /* MLP branch: out = mid + g2 fc2(gelu(fc1(mod(LN(mid), sh2, sc2)))) */
    LW(ln_mod_k, N)(mod2, a->mean2, a->rstd2, a->mid, md + 3 * D, md + 4 * D, N, T, D, ld, LN_EPS, g->bf);
    LAUNCHED();
    linear(g, a->fc1, mod2, w->fc1_w, N, D, H4);
    L1(bias_gelu_k, (size_t)N * H4)(gel, a->fc1, w->fc1_b, N, H4, g->bf);
    LAUNCHED();
    linear(g, mlpo, gel, w->fc2_w, N, H4, D);
    L1(gate_res_k, (size_t)N * D)(a->out, a->mid, mlpo, w->fc2_b, md + 5 * D, N, T, D, ld);
    LAUNCHED();
}

static void copy_in(void *dst, const void *src, size_t bytes, cudaStream_t st) {
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, st)); /* host or device source (UVA) */
}

extern "C" void dap_dit_cuda_forward(const dap_dit_cuda *d, dap_dit_cuda_state *s, float *out, const float *x,
                                     const float *t, const int *y, int stop_block) {
    const gpu *g = &d->gpu;
    const dap_dit_config *cf = &d->cfg;
    int n = s->n, T = d->T, D = d->D, N = n * T, depth = cf->depth;
    DAP_ASSERT(stop_block >= 0 && stop_block <= depth);
    DAP_ASSERT(stop_block == 0 || out == NULL);
    int rows = cf->num_classes + (cf->class_dropout > 0);
    int *yh = (int *)dap_malloc(sizeof(int) * (size_t)n);
    CK(cudaMemcpy(yh, y, sizeof(int) * (size_t)n, cudaMemcpyDefault));
    for (int b = 0; b < n; b++) DAP_ASSERT(yh[b] >= 0 && yh[b] < rows);
    copy_in(s->y, yh, sizeof(int) * (size_t)n, g->st);
    copy_in(s->t, t, sizeof(float) * (size_t)n, g->st);
    size_t cin = (size_t)cf->in_channels * cf->input_size * cf->input_size;
    copy_in(s->x, x, sizeof(float) * (size_t)n * cin, g->st);

    /* conditioning c = t_embedder(t) + y_embedder(y), c_act = silu(c) */
    L1(tfreq_k, (size_t)n * FREQ_DIM / 2)(s->tfreq, s->t, n, g->bf);
    LAUNCHED();
    linear(g, s->th, s->tfreq, d->t0_w, n, FREQ_DIM, D);
    L1(bias_silu_k, (size_t)n * D)(s->tact, s->th, d->t0_b, n, D, g->bf);
    LAUNCHED();
    linear(g, s->c, s->tact, d->t2_w, n, D, D);
    L1(cond_k, (size_t)n * D)(s->c, s->cact, d->t2_b, d->ytab, s->y, n, D, g->bf);
    LAUNCHED();

    /* patch embedding + fixed position embedding */
    L1(patchify_k, (size_t)N * d->Pin)(s->patches, s->x, n, cf->in_channels, cf->patch, d->g, 0, g->bf);
    LAUNCHED();
    linear(g, s->embed, s->patches, d->xe_w, N, d->Pin, D);
    L1(embed_k, (size_t)N * D)(s->embed, d->xe_b, d->pos, N, T, D);
    LAUNCHED();

    int last = stop_block ? stop_block : depth;
    const float *h = s->embed;
    for (int l = 0; l < last; l++) {
        int cached = l < s->cache_blocks;
        dacts *a = &s->blk[cached ? l : s->cache_blocks];
        if (!cached && h != s->stream)
            CK(cudaMemcpyAsync(s->stream, h, sizeof(float) * (size_t)N * D, cudaMemcpyDeviceToDevice, g->st));
        block_forward(d, s, l, cached ? h : s->stream, a);
        h = a->out;
    }
    s->blocks_done = last;
    s->feat = h;
    if (!stop_block) {
        /* final adaLN layer + unpatchify */
        linear(g, s->fmods, s->cact, d->fin_ada_w, n, D, 2 * D);
        L1(bias_k, (size_t)n * 2 * D)(s->fmods, d->fin_ada_b, n, 2 * D);
        LAUNCHED();
        float *modf = s->train ? s->modf : s->mod;
        LW(ln_mod_k, N)(modf, s->meanf, s->rstdf, h, s->fmods, s->fmods + D, N, T, D, 2 * D, LN_EPS, g->bf);
        LAUNCHED();
        linear(g, s->fout, modf, d->fin_w, N, D, d->Pout);
        L1(unpatchify_out_k, (size_t)N * d->Pout)(s->fout_img, s->fout, d->fin_b, n, d->Co, cf->patch, d->g);
        LAUNCHED();
        if (out) {
            size_t co = (size_t)d->Co * cf->input_size * cf->input_size;
            CK(cudaMemcpyAsync(out, s->fout_img, sizeof(float) * (size_t)n * co, cudaMemcpyDefault, g->st));
        }
    }
    CK(cudaStreamSynchronize(g->st));
    free(yh);
}

extern "C" const float *dap_dit_cuda_features(const dap_dit_cuda_state *s) {
    DAP_ASSERT(s->feat != NULL);
    return s->feat;
}

extern "C" void dap_dit_cuda_features_copy(const dap_dit_cuda *d, const dap_dit_cuda_state *s, float *dst) {
    DAP_ASSERT(s->feat != NULL);
    CK(cudaMemcpyAsync(dst, s->feat, sizeof(float) * (size_t)s->n * d->T * d->D, cudaMemcpyDefault, d->gpu.st));
    CK(cudaStreamSynchronize(d->gpu.st));
}

/* out (n, D) = the mean over T tokens of feat (n, T, D), token by token as the CPU's. */
__global__ static void mean_tokens_k(float *out, const float *feat, int n, int T, int D) {
    GRID_LOOP(i, (size_t)n * D) {
        idx_t b = i / D, c = i % D;
        const float *f = feat + (size_t)b * T * D + c;
        float acc = 0.0f;
        for (int k = 0; k < T; k++) acc += f[(size_t)k * D];
        out[i] = acc / T;
    }
}

/* dfeat (n, T, D) = dmean (n, D) / T for every token */
__global__ static void spread_tokens_k(float *dfeat, const float *dmean, int n, int T, int D) {
    GRID_LOOP(i, (size_t)n * T * D) {
        idx_t c = i % D, b = i / ((idx_t)T * D);
        dfeat[i] = dmean[(size_t)b * D + c] / T;
    }
}

extern "C" const float *dap_dit_cuda_features_mean_dev(const dap_dit_cuda *d, dap_dit_cuda_state *s) {
    DAP_ASSERT(s->feat != NULL);
    const gpu *g = &d->gpu;
    L1(mean_tokens_k, (size_t)s->n * d->D)(s->tmp, s->feat, s->n, d->T, d->D); /* tmp: (N, D) scratch */
    LAUNCHED();
    CK(cudaStreamSynchronize(g->st));
    return s->tmp;
}

extern "C" void dap_dit_cuda_features_mean(const dap_dit_cuda *d, dap_dit_cuda_state *s, float *out) {
    const float *rows = dap_dit_cuda_features_mean_dev(d, s);
    CK(cudaMemcpy(out, rows, sizeof(float) * (size_t)s->n * d->D, cudaMemcpyDefault));
}

/* ---- backward: from block l to the input, and with the parameter gradients (training) --------
 * dit.c's dap_dit_backward step by step (the same joins and order), with the parameter
 * gradients accumulated into d->gw (the table's layout) by cuBLAS products (weights:
 * dout^T inp; biases: ones^T dout), the adaLN shift / scale / gate gradients summed over a
 * sample's tokens by one thread a (sample, channel), in token order. No atomics anywhere:
 * a step is deterministic on a given GPU. */

/* dshift[b, j] = sum_t dy[b, t, j]; dscale[b, j] = sum_t dy[b, t, j] xhat[b, t, j] with
 * xhat = (x - mean) rstd (the LayerNorm's output): columns osh and osc of the rows (stride
 * ld) of dm, in the storage bf */
__global__ static void mod_grad_k(void *dm, int osh, int osc, const float *dy, const float *x, const float *mean,
                                  const float *rstd, int n, int T, int d, int ld, int bf) {
    GRID_LOOP(i, (idx_t)n * d) {
        idx_t b = i / d, j = i % d;
        float ss = 0.0f, sc = 0.0f;
        for (int t = 0; t < T; t++) {
            idx_t r = b * T + t, e = r * d + j;
            ss += dy[e];
            sc += dy[e] * ((x[e] - mean[r]) * rstd[r]);
        }
        st_act(dm, b * ld + osh + j, ss, bf);
        st_act(dm, b * ld + osc + j, sc, bf);
    }
}

/* dgate[b, j] = sum_t dres[b, t, j] (y[b, t, j] + bias[j]): out = in + gate (y + bias);
 * column og of the rows (stride ld) of dm, in the storage bf */
__global__ static void gate_grad_k(void *dm, int og, const float *dres, const float *y, const float *bias, int n,
                                   int T, int d, int ld, int bf) {
    GRID_LOOP(i, (idx_t)n * d) {
        idx_t b = i / d, j = i % d;
        float s = 0.0f;
        for (int t = 0; t < T; t++) {
            idx_t e = (b * T + t) * d + j;
            s += dres[e] * (y[e] + bias[j]);
        }
        st_act(dm, b * ld + og + j, s, bf);
    }
}

/* dinp = dout silu'(inp), clamped as ops/act.c; dinp in the storage bf */
__global__ static void silu_bwd_k(void *dinp, const float *dout, const float *inp, idx_t n, int bf) {
    GRID_LOOP(i, n) {
        float x = fminf(fmaxf(inp[i], -SILU_XMAX), SILU_XMAX);
        float e = expf(-x), s = 1.0f / (1.0f + e);
        st_act(dinp, i, dout[i] * s * (1.0f + x * (e * s)), bf);
    }
}

/* gtab[y[b], j] += dc[b, j] (dc in the storage bf), the samples in order (a label may
 * repeat: no atomics) */
__global__ static void ytab_grad_k(float *gtab, const void *dc, const int *y, int n, int d, int bf) {
    GRID_LOOP(j, (idx_t)d) {
        for (int b = 0; b < n; b++) gtab[(idx_t)y[b] * d + j] += ld_act(dc, (idx_t)b * d + j, bf);
    }
}

/* tok (n, T, p p Co) (storage bf) from img (n, Co, g p, g p): the adjoint of unpatchify_out_k */
__global__ static void patchify_out_k(void *tok, const float *img, int n, int Co, int p, int g, int bf) {
    int P = p * p * Co, T = g * g, W = g * p;
    GRID_LOOP(i, (idx_t)n * T * P) {
        idx_t bt = i / P;
        int r = i % P, pi = r / (p * Co), q = (r / Co) % p, c = r % Co;
        int b = bt / T, ti = (bt % T) / g, tj = bt % g;
        st_act(tok, i, img[(((idx_t)b * Co + c) * W + ti * p + pi) * W + tj * p + q], bf);
    }
}

/* The gradient twin of a weight pointer. */
#define GRAD(d, ptr) ((d)->gw + woff(d, ptr))

/* Whether the tensor holding this weight is frozen (a DiffFit fine-tune): its gradient
 * products are skipped, and it keeps the zeros each backward starts from, as on the CPU. */
static int frozen_at(const dap_dit_cuda *d, const void *ptr) {
    const dap_params *ps = &d->host->params;
    const size_t off = woff(d, ptr);
    for (int k = 0; k < ps->n; k++)
        if (off >= ps->p[k].offset && off < ps->p[k].offset + ps->p[k].numel) return ps->p[k].frozen;
    return 0;
}

/* grad(w) (OC, IC) += dout (N, OC)^T inp (N, IC) */
static void wgrad(const gpu *g, const dap_dit_cuda *d, const void *w, const void *dout, const void *inp, int n,
                  int ic, int oc) {
    if (frozen_at(d, w)) return;
    gemm(g, 1, 0, oc, ic, n, 1.0f, dout, oc, inp, ic, 1.0f, GRAD(d, w), ic);
}
/* grad(b) (OC) += ones (N)^T dout (N, OC) */
static void bgrad(const gpu *g, const dap_dit_cuda *d, const float *b, const void *dout, const void *ones, int n,
                  int oc) {
    if (frozen_at(d, b)) return;
    gemm(g, 0, 0, 1, oc, n, 1.0f, ones, n, dout, oc, 1.0f, GRAD(d, b), oc);
}

/* s->dres holds d(block l output) on entry and d(block l input) on exit. With grads (a
 * training state), the block's parameter gradients accumulate into d->gw and d(c_act) is
 * added into s->gcact; without, only the input path runs. The scratch buffers (tmp, hbuf,
 * mod, ybuf, yh, qkv and the scratch set's q, k, v, P) hold the gradients: a training
 * state keeps its forward's branch tensors per block, so the scratch is free here. */
static void block_backward(const dap_dit_cuda *d, dap_dit_cuda_state *s, int l, int grads) {
    const gpu *g = &d->gpu;
    const dblock *w = &d->blk[l];
    const dacts *a = &s->blk[l];
    dacts *sc = &s->blk[s->cache_blocks]; /* scratch set: its q, k, v, P serve as dq, dk, dv, dP */
    int n = s->n, T = d->T, D = d->D, H4 = d->H4, N = n * T, ld = 6 * D;
    const float *in = l == 0 ? s->embed : s->blk[l - 1].out, *md = a->mods, *ones = s->ones;
    float *dm = s->gmods;
    DAP_ASSERT(!grads || (s->train && d->gw));
    /* MLP branch: out = mid + g2 (fc2(gelu(fc1(mod(LN(mid), sh2, sc2)))) + fc2_b) */
    if (grads) L1(gate_grad_k, (size_t)n * D)(dm, 5 * D, s->dres, a->mlpo, w->fc2_b, n, T, D, ld, g->bf);
    L1(gate_mul_k, (size_t)N * D)(s->tmp, s->dres, md + 5 * D, N, T, D, ld, g->bf);
    LAUNCHED();
    if (grads) {
        wgrad(g, d, w->fc2_w, s->tmp, a->gel, N, H4, D);
        bgrad(g, d, w->fc2_b, s->tmp, ones, N, D);
    }
    linear_dinp(g, s->hbuf, s->tmp, w->fc2_w, N, H4, D);
    float *dh = g->bf ? sc->fc1 : s->hbuf; /* d fc1: in place in FP32; the scratch set's fc1 is free */
    L1(gelu_bwd_k, (size_t)N * H4)(dh, s->hbuf, a->fc1, (idx_t)((size_t)N * H4), g->bf);
    LAUNCHED();
    if (grads) {
        wgrad(g, d, w->fc1_w, dh, a->mod2, N, D, H4);
        bgrad(g, d, w->fc1_b, dh, ones, N, H4);
    }
    linear_dinp(g, s->mod, dh, w->fc1_w, N, D, H4);
    if (grads) L1(mod_grad_k, (size_t)n * D)(dm, 3 * D, 4 * D, s->mod, a->mid, a->mean2, a->rstd2, n, T, D, ld, g->bf);
    LW(ln_mod_bwd_k, N)(s->dres, s->mod, a->mid, md + 4 * D, a->mean2, a->rstd2, N, T, D, ld);
    LAUNCHED();
    /* attention branch: mid = in + g1 (proj(attn(qkv(mod(LN(in), sh1, sc1)))) + proj_b) */
    if (grads) L1(gate_grad_k, (size_t)n * D)(dm, 2 * D, s->dres, a->atto, w->proj_b, n, T, D, ld, g->bf);
    L1(gate_mul_k, (size_t)N * D)(s->tmp, s->dres, md + 2 * D, N, T, D, ld, g->bf);
    LAUNCHED();
    if (grads) {
        wgrad(g, d, w->proj_w, s->tmp, a->atty, N, D, D);
        bgrad(g, d, w->proj_b, s->tmp, ones, N, D);
    }
    linear_dinp(g, s->ybuf, s->tmp, w->proj_w, N, D, D);
    L1(heads_k, (size_t)N * D)(s->ybuf, s->yh, n, T, D, d->NH, 1, g->bf);
    LAUNCHED();
    attention_bwd(g, sc->q, sc->k, sc->v, g->bf ? s->scores : sc->P, sc->P, s->yh, a->P, a->q, a->k, a->v, n, T, D,
                  d->NH);
    L1(qkv_heads_k, (size_t)N * 3 * D)(sc->q, sc->k, sc->v, s->qkv, NULL, n, T, D, d->NH, 1, g->bf);
    LAUNCHED();
    if (grads) {
        wgrad(g, d, w->qkv_w, s->qkv, a->mod1, N, D, 3 * D);
        bgrad(g, d, w->qkv_b, s->qkv, ones, N, 3 * D);
    }
    linear_dinp(g, s->mod, s->qkv, w->qkv_w, N, D, 3 * D);
    if (grads) L1(mod_grad_k, (size_t)n * D)(dm, 0, D, s->mod, in, a->mean1, a->rstd1, n, T, D, ld, g->bf);
    LW(ln_mod_bwd_k, N)(s->dres, s->mod, in, md + D, a->mean1, a->rstd1, N, T, D, ld);
    LAUNCHED();
    if (grads) { /* adaLN: mods = Linear(c_act) */
        wgrad(g, d, w->ada_w, dm, s->cact, n, D, 6 * D);
        bgrad(g, d, w->ada_b, dm, ones, n, 6 * D);
        gemm(g, 0, 0, n, D, 6 * D, 1.0f, dm, 6 * D, w->ada_w, D, 1.0f, s->gcact, D);
    }
}

/* d(embed) = s->dres (N, D) as the patch embedding's products read it: itself in FP32, a
 * BF16 copy in s->tmp (free after the blocks' backward) under bf16 */
static const void *dres_operand(const gpu *g, dap_dit_cuda_state *s, int N, int D) {
    if (!g->bf) return s->dres;
    L1(to_act_k, (size_t)N * D)(s->tmp, s->dres, (idx_t)((size_t)N * D), 1);
    LAUNCHED();
    return s->tmp;
}

/* From s->dres = d(block l's output) down to dx. Uses only the cached sets 0..l-1 (left as
 * they are: a second backward from the same forward is allowed, as on the CPU); the
 * scratch set's buffers hold the gradients. */
static void backward_below(const dap_dit_cuda *d, dap_dit_cuda_state *s, int l, float *dx) {
    const gpu *g = &d->gpu;
    const dap_dit_config *cf = &d->cfg;
    int n = s->n, N = n * d->T, D = d->D;
    for (int k = l - 1; k >= 0; k--) block_backward(d, s, k, 0);
    linear_dinp(g, s->dpatches, dres_operand(g, s, N, D), d->xe_w, N, d->Pin, D);
    L1(patchify_k, (size_t)N * d->Pin)(s->dpatches, s->dx, n, cf->in_channels, cf->patch, d->g, 1, 0);
    LAUNCHED();
    size_t cin = (size_t)cf->in_channels * cf->input_size * cf->input_size;
    CK(cudaMemcpyAsync(dx, s->dx, sizeof(float) * (size_t)n * cin, cudaMemcpyDefault, g->st));
    CK(cudaStreamSynchronize(g->st));
}

extern "C" void dap_dit_cuda_backward_from_block(const dap_dit_cuda *d, dap_dit_cuda_state *s, int l,
                                                 const float *dfeat, float *dx) {
    DAP_ASSERT(l >= 1 && l <= s->cache_blocks && s->blocks_done >= l);
    CK(cudaMemcpyAsync(s->dres, dfeat, sizeof(float) * (size_t)s->n * d->T * d->D, cudaMemcpyDefault, d->gpu.st));
    backward_below(d, s, l, dx);
}

extern "C" void dap_dit_cuda_backward_from_block_mean(const dap_dit_cuda *d, dap_dit_cuda_state *s, int l,
                                                      const float *dmean, float *dx) {
    DAP_ASSERT(l >= 1 && l <= s->cache_blocks && s->blocks_done >= l);
    const gpu *g = &d->gpu;
    CK(cudaMemcpyAsync(s->tmp, dmean, sizeof(float) * (size_t)s->n * d->D, cudaMemcpyDefault, g->st));
    L1(spread_tokens_k, (size_t)s->n * d->T * d->D)(s->dres, s->tmp, s->n, d->T, d->D);
    LAUNCHED();
    backward_below(d, s, l, dx);
}

/* ---- training: AdamW, EMA, the state's traffic --------------------------------------------- */

extern "C" size_t dap_dit_cuda_train_bytes_for(const dap_dit_cuda *d, int batch) {
    /* the state, and gradients, EMA and two moments beside the weights */
    return plan(d, batch, d->cfg.depth, 1, NULL) + 4 * d->w_floats * sizeof(float);
}

extern "C" int dap_dit_cuda_state_create_train(dap_dit_cuda_state **out, const dap_dit_cuda *d, int batch) {
    return state_create(out, d, batch, d->cfg.depth, 1);
}

#define PARTS 256 /* the grad norm's partial sums per tensor (one per block) */

extern "C" int dap_dit_cuda_train_begin(dap_dit_cuda *d, const float *ema, const float *m, const float *v) {
    if (!d->w) return train_bf16_error(d);
    const dap_params *ps = &d->host->params;
    size_t bytes = d->w_floats * sizeof(float), fr = 0, tot = 0;
    /* a step's AdamW and EMA may still be queued on the (non-blocking) stream: the uploads
     * below, on the legacy stream, must not overtake them */
    CK(cudaStreamSynchronize(d->gpu.st));
    if (!d->gw) {
        DAP_TRY(free_memory(&fr, &tot));
        size_t need = 4 * bytes + sizeof(double) * PARTS * ((size_t)ps->n + 1);
        char b[2][32];
        if (need > fr)
            return dap_error(DAP_ERR_NOMEM, "device cuda (%s): training needs %s for the gradients, EMA and AdamW "
                                            "moments, %s are free", d->name, dap_fmt_bytes(b[0], 32, (double)need),
                             dap_fmt_bytes(b[1], 32, (double)fr));
        CK(cudaMalloc(&d->gw, bytes));
        CK(cudaMalloc(&d->ema, bytes));
        CK(cudaMalloc(&d->om, bytes));
        CK(cudaMalloc(&d->ov, bytes));
        CK(cudaMalloc(&d->parts, sizeof(double) * PARTS * ((size_t)ps->n + 1)));
    }
    CK(cudaMemcpy(d->w, ps->data, bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d->ema, ema, bytes, cudaMemcpyHostToDevice));
    if (m) CK(cudaMemcpy(d->om, m, bytes, cudaMemcpyHostToDevice));
    else CK(cudaMemset(d->om, 0, bytes));
    if (v) CK(cudaMemcpy(d->ov, v, bytes, cudaMemcpyHostToDevice));
    else CK(cudaMemset(d->ov, 0, bytes));
    CK(cudaMemset(d->gw, 0, bytes));
    CK(cudaDeviceSynchronize());
    if (d->bf) refresh_bf16(d);
    return DAP_OK;
}

extern "C" void dap_dit_cuda_train_download(const dap_dit_cuda *d, float *w, float *ema, float *m, float *v) {
    size_t bytes = d->w_floats * sizeof(float);
    DAP_ASSERT(d->gw != NULL);
    CK(cudaStreamSynchronize(d->gpu.st));
    if (w) CK(cudaMemcpy(w, d->w, bytes, cudaMemcpyDeviceToHost));
    if (ema) CK(cudaMemcpy(ema, d->ema, bytes, cudaMemcpyDeviceToHost));
    if (m) CK(cudaMemcpy(m, d->om, bytes, cudaMemcpyDeviceToHost));
    if (v) CK(cudaMemcpy(v, d->ov, bytes, cudaMemcpyDeviceToHost));
}

extern "C" void dap_dit_cuda_grad_download(const dap_dit_cuda *d, float *grad) {
    DAP_ASSERT(d->gw != NULL);
    CK(cudaStreamSynchronize(d->gpu.st));
    CK(cudaMemcpy(grad, d->gw, d->w_floats * sizeof(float), cudaMemcpyDeviceToHost));
}

extern "C" void dap_dit_cuda_swap_ema(dap_dit_cuda *d) {
    DAP_ASSERT(d->ema != NULL);
    CK(cudaStreamSynchronize(d->gpu.st));
    float *t = d->w;
    d->w = d->ema, d->ema = t;
    if (d->bf) refresh_bf16(d);
    bind(d);
}

extern "C" void dap_dit_cuda_backward_params(const dap_dit_cuda *d, dap_dit_cuda_state *s, const float *dout) {
    DAP_ASSERT(s->train && d->gw != NULL && s->blocks_done == d->cfg.depth);
    const gpu *g = &d->gpu;
    const dap_dit_config *cf = &d->cfg;
    int n = s->n, T = d->T, D = d->D, N = n * T, depth = cf->depth;
    size_t co = (size_t)d->Co * cf->input_size * cf->input_size;
    CK(cudaMemsetAsync(d->gw, 0, d->w_floats * sizeof(float), g->st));
    copy_in(s->gimg, dout, sizeof(float) * (size_t)n * co, g->st);

    /* final layer: fout = Linear(mod(LN(h), sh, sc)), [sh sc] = Linear(c_act) */
    L1(patchify_out_k, (size_t)N * d->Pout)(s->gfout, s->gimg, n, d->Co, cf->patch, d->g, g->bf);
    LAUNCHED();
    wgrad(g, d, d->fin_w, s->gfout, s->modf, N, D, d->Pout);
    bgrad(g, d, d->fin_b, s->gfout, s->ones, N, d->Pout);
    linear_dinp(g, s->mod, s->gfout, d->fin_w, N, D, d->Pout); /* d modf (s->mod is free: modf has its own) */
    L1(mod_grad_k, (size_t)n * D)(s->gfmods, 0, D, s->mod, s->feat, s->meanf, s->rstdf, n, T, D, 2 * D, g->bf);
    LAUNCHED();
    CK(cudaMemsetAsync(s->dres, 0, sizeof(float) * (size_t)N * D, g->st));
    LW(ln_mod_bwd_k, N)(s->dres, s->mod, s->feat, s->fmods + D, s->meanf, s->rstdf, N, T, D, 2 * D);
    LAUNCHED();
    wgrad(g, d, d->fin_ada_w, s->gfmods, s->cact, n, D, 2 * D);
    bgrad(g, d, d->fin_ada_b, s->gfmods, s->ones, n, 2 * D);
    gemm(g, 0, 0, n, D, 2 * D, 1.0f, s->gfmods, 2 * D, d->fin_ada_w, D, 0.0f, s->gcact, D);

    for (int l = depth - 1; l >= 0; l--) block_backward(d, s, l, 1);

    /* patch embedding (pos_embed is frozen) */
    const void *dembed = dres_operand(g, s, N, D);
    wgrad(g, d, d->xe_w, dembed, s->patches, N, d->Pin, D);
    bgrad(g, d, d->xe_b, dembed, s->ones, N, D);

    /* conditioning: c_act = SiLU(c), c = mlp.2(SiLU(mlp.0(freq))) + table[y] */
    L1(silu_bwd_k, (size_t)n * D)(s->gc, s->gcact, s->c, (idx_t)((size_t)n * D), g->bf);
    if (!frozen_at(d, d->ytab)) L1(ytab_grad_k, (size_t)D)(GRAD(d, d->ytab), s->gc, s->y, n, D, g->bf);
    LAUNCHED();
    wgrad(g, d, d->t2_w, s->gc, s->tact, n, D, D);
    bgrad(g, d, d->t2_b, s->gc, s->ones, n, D);
    linear_dinp(g, s->gtact, s->gc, d->t2_w, n, D, D);
    L1(silu_bwd_k, (size_t)n * D)(s->gth, s->gtact, s->th, (idx_t)((size_t)n * D), g->bf);
    LAUNCHED();
    wgrad(g, d, d->t0_w, s->gth, s->tfreq, n, FREQ_DIM, D);
    bgrad(g, d, d->t0_b, s->gth, s->ones, n, D);
    CK(cudaStreamSynchronize(g->st));
}

/* parts[blockIdx] = sum of g^2 over the block's grid-stride share (double) */
__global__ static void sumsq_k(double *parts, const float *g, idx_t n) {
    __shared__ double sh[THREADS];
    double acc = 0.0;
    GRID_LOOP(i, n) acc += (double)g[i] * g[i];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) parts[blockIdx.x] = acc;
}

/* parts[total] = sum of parts[0 .. total), one block, a fixed order */
__global__ static void sum_parts_k(double *parts, int total) {
    __shared__ double sh[THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < total; i += THREADS) acc += parts[i];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) parts[total] = acc;
}

/* core/optim.c's dap_adamw_step element by element, the gradient scaled by coef first
 * (dap_clip_grad_norm's g *= coef; coef 1 when not clipping); wh (bf16 storage, else NULL)
 * gets the new weight's BF16 */
__global__ static void dit_adamw_k(float *w, bf16 *wh, const float *g, float *m, float *v, idx_t n, float coef,
                                   float keep, float b1, float c1, float b2, float c2, float bc2_sqrt, float eps,
                                   float step_size) {
    GRID_LOOP(i, n) {
        float gi = g[i] * coef;
        w[i] *= keep;
        m[i] = m[i] * b1 + gi * c1;
        v[i] = v[i] * b2 + gi * gi * c2;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        w[i] += -step_size * (m[i] / denom);
        if (wh) wh[i] = __float2bfloat16(w[i]);
    }
}

__global__ static void ema_k(float *e, const float *w, idx_t n, float dk, float c) {
    GRID_LOOP(i, n) e[i] = e[i] * dk + w[i] * c;
}

extern "C" float dap_dit_cuda_train_update(dap_dit_cuda *d, dap_adamw *opt, double lr, float max_norm,
                                           double ema_decay) {
    const dap_params *ps = &d->host->params;
    DAP_ASSERT(d->gw != NULL && ps->total == d->w_floats && opt->n == ps->total);
    const gpu *g = &d->gpu;
    /* the global norm of the trainable tensors' gradients, as dap_grad_norm */
    int parts = 0;
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        if (p->frozen || p->numel == 0) continue;
        unsigned nb = blocks_for(p->numel);
        if (nb > PARTS) nb = PARTS;
        sumsq_k<<<nb, THREADS, 0, g->st>>>(d->parts + parts, d->gw + p->offset, (idx_t)p->numel);
        parts += (int)nb;
    }
    LAUNCHED();
    double sum = 0.0;
    if (parts > 0) {
        sum_parts_k<<<1, THREADS, 0, g->st>>>(d->parts, parts);
        LAUNCHED();
        CK(cudaMemcpyAsync(&sum, d->parts + parts, sizeof sum, cudaMemcpyDeviceToHost, g->st));
        CK(cudaStreamSynchronize(g->st));
    }
    const float norm = (float)sqrt(sum);
    const float coef = max_norm > 0.0f && norm > max_norm ? (float)((double)max_norm / ((double)norm + 1e-6)) : 1.0f;
    /* AdamW over the trainable tensors, as dap_adamw_step */
    opt->step++;
    const double bc1 = 1.0 - pow(opt->beta1, (double)opt->step), bc2 = 1.0 - pow(opt->beta2, (double)opt->step);
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        if (p->frozen || p->numel == 0) continue;
        const double wd = (p->no_decay && !opt->decay_all) ? 0.0 : opt->weight_decay;
        dit_adamw_k<<<blocks_for(p->numel), THREADS, 0, g->st>>>(
            d->w + p->offset, d->wh ? d->wh + p->offset : NULL, d->gw + p->offset, d->om + p->offset,
            d->ov + p->offset, (idx_t)p->numel, coef,
            (float)(1.0 - lr * wd), (float)opt->beta1, (float)(1.0 - opt->beta1), (float)opt->beta2,
            (float)(1.0 - opt->beta2), (float)sqrt(bc2), (float)opt->eps, (float)(lr / bc1));
    }
    LAUNCHED();
    /* the EMA, as dap_ema_update (a frozen tensor is copied) */
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        if (p->numel == 0) continue;
        if (p->frozen)
            CK(cudaMemcpyAsync(d->ema + p->offset, d->w + p->offset, p->numel * sizeof(float), cudaMemcpyDeviceToDevice,
                               g->st));
        else
            ema_k<<<blocks_for(p->numel), THREADS, 0, g->st>>>(d->ema + p->offset, d->w + p->offset, (idx_t)p->numel,
                                                              (float)ema_decay, (float)(1.0 - ema_decay));
    }
    LAUNCHED();
    return norm;
}

/* ---- the ops on host arrays, for the tests against ops.h --------------------------------- */

static gpu g_ops;
static int g_ops_prec = -1;

static const gpu *ops_gpu(int precision) {
    if (g_ops_prec != precision) {
        if (g_ops_prec >= 0) gpu_free(&g_ops);
        gpu_init(&g_ops, precision, 0);
        g_ops_prec = precision;
    }
    return &g_ops;
}

/* Device copies of host arrays; NULL stays NULL. */
static float *up(const void *h, size_t bytes) {
    if (!h) return NULL;
    void *p = NULL;
    CK(cudaMalloc(&p, bytes ? bytes : 4));
    if (bytes) CK(cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize()); /* the ops' stream does not wait for the legacy stream */
    return (float *)p;
}
static float *dev0(size_t bytes) {
    void *p = NULL;
    CK(cudaMalloc(&p, bytes ? bytes : 4));
    CK(cudaMemset(p, 0, bytes ? bytes : 4));
    CK(cudaDeviceSynchronize());
    return (float *)p;
}
static void down(void *h, const float *dptr, size_t bytes) {
    CK(cudaDeviceSynchronize());
    if (h) CK(cudaMemcpy(h, dptr, bytes, cudaMemcpyDeviceToHost));
}
#define F(n) ((size_t)(n) * sizeof(float))
/* b rows of c values at stride ld (chunks of a (b, 6c) adaLN output): the floats to copy */
#define ROWS(b, c, ld) ((size_t)((b) - 1) * (ld) + (c))

extern "C" void dap_cuda_linear(float *out, const float *inp, const float *w, const float *b, int n, int ic,
                                int oc, int precision) {
    const gpu *g = ops_gpu(precision);
    float *di = up(inp, F((size_t)n * ic)), *dw = up(w, F((size_t)oc * ic)), *db = up(b, F(oc));
    float *dout = dev0(F((size_t)n * oc));
    linear(g, dout, di, dw, n, ic, oc);
    if (db) L1(bias_k, (size_t)n * oc)(dout, db, n, oc);
    LAUNCHED();
    down(out, dout, F((size_t)n * oc));
    cudaFree(di), cudaFree(dw), cudaFree(db), cudaFree(dout);
}

extern "C" void dap_cuda_linear_dinp(float *dinp, const float *dout, const float *w, int n, int ic, int oc,
                                     int precision) {
    const gpu *g = ops_gpu(precision);
    float *dd = up(dout, F((size_t)n * oc)), *dw = up(w, F((size_t)oc * ic)), *di = dev0(F((size_t)n * ic));
    linear_dinp(g, di, dd, dw, n, ic, oc);
    down(dinp, di, F((size_t)n * ic));
    cudaFree(dd), cudaFree(dw), cudaFree(di);
}

extern "C" void dap_cuda_ln_modulate(float *out, float *mean, float *rstd, const float *x, const float *shift,
                                     const float *scale, int b, int t, int c, int ld) {
    const gpu *g = ops_gpu(DAP_PRECISION_FP32);
    size_t N = (size_t)b * t;
    float *dx = up(x, F(N * c)), *dsh = up(shift, F(ROWS(b, c, ld))), *dsc = up(scale, F(ROWS(b, c, ld)));
    float *dout = dev0(F(N * c)), *dm = dev0(F(N)), *dr = dev0(F(N));
    LW(ln_mod_k, N)(dout, dm, dr, dx, dsh, dsc, (int)N, t, c, ld, LN_EPS, 0);
    LAUNCHED();
    down(out, dout, F(N * c)), down(mean, dm, F(N)), down(rstd, dr, F(N));
    cudaFree(dx), cudaFree(dsh), cudaFree(dsc), cudaFree(dout), cudaFree(dm), cudaFree(dr);
}

extern "C" void dap_cuda_ln_modulate_backward(float *dres, const float *dout, const float *x, const float *scale,
                                              const float *mean, const float *rstd, int b, int t, int c, int ld) {
    const gpu *g = ops_gpu(DAP_PRECISION_FP32);
    size_t N = (size_t)b * t;
    float *dd = up(dres, F(N * c)), *dy = up(dout, F(N * c)), *dx = up(x, F(N * c));
    float *dsc = up(scale, F(ROWS(b, c, ld))), *dm = up(mean, F(N)), *dr = up(rstd, F(N));
    LW(ln_mod_bwd_k, N)(dd, dy, dx, dsc, dm, dr, (int)N, t, c, ld);
    LAUNCHED();
    down(dres, dd, F(N * c));
    cudaFree(dd), cudaFree(dy), cudaFree(dx), cudaFree(dsc), cudaFree(dm), cudaFree(dr);
}

extern "C" void dap_cuda_gate_residual(float *out, const float *in, const float *y, const float *bias,
                                       const float *gate, int b, int t, int c, int ld) {
    const gpu *g = ops_gpu(DAP_PRECISION_FP32);
    size_t N = (size_t)b * t;
    float *di = up(in, F(N * c)), *dy = up(y, F(N * c)), *db = up(bias, F(c)), *dg = up(gate, F(ROWS(b, c, ld)));
    L1(gate_res_k, N * c)(di, di, dy, db, dg, (int)N, t, c, ld); /* in place, as the uncached blocks run */
    LAUNCHED();
    down(out, di, F(N * c));
    cudaFree(di), cudaFree(dy), cudaFree(db), cudaFree(dg);
}

extern "C" void dap_cuda_gate_mul(float *dst, const float *src, const float *gate, int b, int t, int c, int ld) {
    const gpu *g = ops_gpu(DAP_PRECISION_FP32);
    size_t N = (size_t)b * t;
    float *ds = up(src, F(N * c)), *dg = up(gate, F(ROWS(b, c, ld))), *dd = dev0(F(N * c));
    L1(gate_mul_k, N * c)(dd, ds, dg, (int)N, t, c, ld, 0);
    LAUNCHED();
    down(dst, dd, F(N * c));
    cudaFree(ds), cudaFree(dg), cudaFree(dd);
}

extern "C" void dap_cuda_act(int which, float *out, const float *inp, const float *dout, size_t n) {
    const gpu *g = ops_gpu(DAP_PRECISION_FP32);
    float *di = up(inp, F(n)), *dd = up(dout, F(n)), *o = dev0(F(n));
    if (which == DAP_CUDA_ACT_GELU) L1(gelu_k, n)(o, di, (idx_t)n);
    else if (which == DAP_CUDA_ACT_SILU) L1(silu_k, n)(o, di, (idx_t)n);
    else L1(gelu_bwd_k, n)(o, dd, di, (idx_t)n, 0);
    LAUNCHED();
    down(out, o, F(n));
    cudaFree(di), cudaFree(dd), cudaFree(o);
}

extern "C" void dap_cuda_attention(float *out, float *att, const float *qkv, int b, int t, int c, int nh,
                                   int precision) {
    const gpu *g = ops_gpu(precision);
    size_t N = (size_t)b * t;
    float *dqkv = up(qkv, F(N * 3 * c)), *q = dev0(F(N * c)), *k = dev0(F(N * c)), *v = dev0(F(N * c));
    float *P = dev0(F((size_t)b * nh * t * t)), *yh = dev0(F(N * c)), *y = dev0(F(N * c));
    L1(qkv_heads_k, N * 3 * c)(q, k, v, dqkv, NULL, b, t, c, nh, 0, 0);
    LAUNCHED();
    attention_fwd(g, yh, P, P, q, k, v, b, t, c, nh);
    L1(heads_k, N * c)(y, yh, b, t, c, nh, 0, 0);
    LAUNCHED();
    down(out, y, F(N * c)), down(att, P, F((size_t)b * nh * t * t));
    cudaFree(dqkv), cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(P), cudaFree(yh), cudaFree(y);
}

extern "C" void dap_cuda_attention_backward(float *dqkv, const float *dout, const float *qkv, int b, int t, int c,
                                            int nh, int precision) {
    const gpu *g = ops_gpu(precision);
    size_t N = (size_t)b * t, TT = (size_t)b * nh * t * t;
    float *dq3 = up(qkv, F(N * 3 * c)), *q = dev0(F(N * c)), *k = dev0(F(N * c)), *v = dev0(F(N * c));
    float *P = dev0(F(TT)), *yh = dev0(F(N * c)), *dy = up(dout, F(N * c)), *dP = dev0(F(TT));
    float *gq = dev0(F(N * c)), *gk = dev0(F(N * c)), *gv = dev0(F(N * c));
    L1(qkv_heads_k, N * 3 * c)(q, k, v, dq3, NULL, b, t, c, nh, 0, 0);
    attention_fwd(g, yh, P, P, q, k, v, b, t, c, nh);
    L1(heads_k, N * c)(dy, yh, b, t, c, nh, 1, 0); /* yh := dout head-major */
    attention_bwd(g, gq, gk, gv, dP, dP, yh, P, q, k, v, b, t, c, nh);
    L1(qkv_heads_k, N * 3 * c)(gq, gk, gv, dq3, NULL, b, t, c, nh, 1, 0);
    LAUNCHED();
    down(dqkv, dq3, F(N * 3 * c));
    cudaFree(dq3), cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(P), cudaFree(yh), cudaFree(dy);
    cudaFree(dP), cudaFree(gq), cudaFree(gk), cudaFree(gv);
}

extern "C" void dap_cuda_timestep_freq(float *out, const float *t, int n) {
    const gpu *g = ops_gpu(DAP_PRECISION_FP32);
    float *dt = up(t, F(n)), *o = dev0(F((size_t)n * FREQ_DIM));
    L1(tfreq_k, (size_t)n * FREQ_DIM / 2)(o, dt, n, 0);
    LAUNCHED();
    down(out, o, F((size_t)n * FREQ_DIM));
    cudaFree(dt), cudaFree(o);
}

extern "C" void dap_cuda_patchify(float *patches, float *x, int n, int C, int p, int g_, int dir) {
    const gpu *g = ops_gpu(DAP_PRECISION_FP32);
    size_t np = (size_t)n * g_ * g_ * C * p * p;
    float *dp = dir ? up(patches, F(np)) : dev0(F(np)), *dx = dir ? dev0(F(np)) : up(x, F(np));
    L1(patchify_k, np)(dp, dx, n, C, p, g_, dir, 0);
    LAUNCHED();
    if (dir) down(x, dx, F(np));
    else down(patches, dp, F(np));
    cudaFree(dp), cudaFree(dx);
}

extern "C" void dap_cuda_unpatchify_out(float *img, const float *tok, const float *bias, int n, int Co, int p,
                                        int g_) {
    const gpu *g = ops_gpu(DAP_PRECISION_FP32);
    size_t np = (size_t)n * g_ * g_ * Co * p * p;
    float *dt = up(tok, F(np)), *db = up(bias, F((size_t)p * p * Co)), *o = dev0(F(np));
    L1(unpatchify_out_k, np)(o, dt, db, n, Co, p, g_);
    LAUNCHED();
    down(img, o, F(np));
    cudaFree(dt), cudaFree(db), cudaFree(o);
}

extern "C" int dap_cuda_memory(size_t *free_b, size_t *total_b) {
    *free_b = *total_b = 0;
    return free_memory(free_b, total_b);
}
