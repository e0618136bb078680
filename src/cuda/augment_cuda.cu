/*
 * augment_cuda.cu: a classifier's training batches assembled on the GPU. The training set
 * goes up once; each batch is gathered from it by index and augmented there by a plan the
 * host drew (eval/augment.h), with the host's per-pixel arithmetic (eval/augment_px.h).
 * Geometric stages read a copy of the batch (one device-to-device copy a stage); the
 * colour stages run one block an image, their image mean a block sum in double (the host
 * sums in pixel order: the two agree to float rounding). Everything is queued on the
 * caller's stream; nothing here synchronises.
 */
extern "C" {
#include "core/core.h"
#include "cuda/cuda.h"
#include "eval/augment.h"
}

#include <cuda_runtime.h>
#include <stdio.h>

#include "cuda/check.cuh"  /* CK, LAUNCHED */
#include "cuda/launch.cuh" /* THREADS, blocks_for, block_sum */
#include "eval/augment_px.h"

struct dap_cuda_images {
    int n, c, h, w, nmax;
    size_t img;
    float *x;       /* (n, c, h, w) the set */
    float *scratch; /* (nmax, c, h, w) a stage's source copy */
    float *params;  /* the plan's store */
    int *idx;       /* (nmax) the batch's indices */
    int *perm;      /* (nmax) CutMix partners */
};

static cudaStream_t as_stream(void *stream) { return (cudaStream_t)stream; }

int dap_cuda_images_create(dap_cuda_images **out, const float *x, int n, int c, int h, int w, int nmax) {
    *out = NULL;
    size_t img = (size_t)c * h * w;
    size_t need = ((size_t)n + nmax) * img * sizeof(float) + (size_t)DAP_AUG_STAGES * nmax * DAP_AUG_PARAMS * sizeof(float) +
                  2 * (size_t)nmax * sizeof(int);
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess)
        return dap_error(DAP_ERR_MISSING, "CUDA: could not read the device's free memory");
    if (need + (64u << 20) > free_b) /* leave room for the classifier's own buffers */
        return dap_error(DAP_ERR_NOMEM, "the training set (%d images of %dx%dx%d, %.1f MiB) does not fit in the GPU's "
                         "%.1f MiB free", n, c, h, w, (double)need / 1048576.0, (double)free_b / 1048576.0);
    dap_cuda_images *s = (dap_cuda_images *)dap_calloc(1, sizeof *s);
    s->n = n, s->c = c, s->h = h, s->w = w, s->nmax = nmax, s->img = img;
    CK(cudaMalloc((void **)&s->x, (size_t)n * img * sizeof(float)));
    CK(cudaMalloc((void **)&s->scratch, (size_t)nmax * img * sizeof(float)));
    CK(cudaMalloc((void **)&s->params, (size_t)DAP_AUG_STAGES * nmax * DAP_AUG_PARAMS * sizeof(float)));
    CK(cudaMalloc((void **)&s->idx, (size_t)nmax * sizeof(int)));
    CK(cudaMalloc((void **)&s->perm, (size_t)nmax * sizeof(int)));
    CK(cudaMemcpy(s->x, x, (size_t)n * img * sizeof(float), cudaMemcpyHostToDevice));
    /* from pageable memory the copy may return before it lands, and the batches are gathered
     * on other (non-blocking) streams: wait for it here */
    CK(cudaDeviceSynchronize());
    *out = s;
    return DAP_OK;
}

void dap_cuda_images_destroy(dap_cuda_images *s) {
    if (!s) return;
    cudaDeviceSynchronize();
    cudaFree(s->x), cudaFree(s->scratch), cudaFree(s->params), cudaFree(s->idx), cudaFree(s->perm);
    free(s);
}

/* ---- kernels ------------------------------------------------------------------------- */

__global__ static void gather_k(float *dst, const float *set, const int *idx, int n, size_t img) {
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < (size_t)n * img; e += (size_t)gridDim.x * blockDim.x)
        dst[e] = set[(size_t)idx[e / img] * img + e % img];
}

typedef struct {
    float a[3], b[3];
} affine3;

/* dst = a_k src + b_k on channel k; plane order (n, c) */
__global__ static void scale_shift_k(float *dst, const float *src, affine3 ab, int c, size_t total, size_t hw) {
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        int k = (int)((e / hw) % c);
        dst[e] = ab.a[k] * src[e] + ab.b[k];
    }
}

static affine3 make_affine3(const float *a, const float *b, int c) {
    affine3 ab = {{0, 0, 0}, {0, 0, 0}};
    DAP_ASSERT(c > 0 && c <= 3);
    for (int k = 0; k < c; k++) ab.a[k] = a[k], ab.b[k] = b[k];
    return ab;
}

/* one block an image */
__global__ static void color_k(float *x, const float *params, int c, size_t hw) {
    __shared__ double sh[THREADS];
    const float *q = params + (size_t)blockIdx.x * DAP_AUG_PARAMS;
    size_t img = (size_t)c * hw;
    float *p = x + (size_t)blockIdx.x * img;
    for (size_t j = threadIdx.x; j < hw; j += THREADS) dap_px_bright_sat(p, hw, c, j, q[0], q[1]);
    __syncthreads();
    double acc = 0;
    for (size_t j = threadIdx.x; j < img; j += THREADS) acc += p[j];
    float m = (float)(block_sum(acc, sh) / (double)img);
    for (size_t j = threadIdx.x; j < img; j += THREADS) p[j] = (p[j] - m) * q[2] + m;
}

__global__ static void jitter_k(float *x, const float *params, int c, size_t hw, int from11) {
    __shared__ double sh[THREADS];
    const float *q = params + (size_t)blockIdx.x * DAP_AUG_PARAMS;
    size_t img = (size_t)c * hw;
    float *p = x + (size_t)blockIdx.x * img;
    double acc = 0;
    for (size_t j = threadIdx.x; j < img; j += THREADS) {
        float v = from11 ? 0.5f * (p[j] + 1.0f) : p[j];
        p[j] = dap_px_clamp01(v * q[0]);
        acc += p[j];
    }
    float m = (float)(block_sum(acc, sh) / (double)img);
    for (size_t j = threadIdx.x; j < img; j += THREADS) p[j] = dap_px_clamp01((p[j] - m) * q[1] + m);
    __syncthreads();
    if (c == 3)
        for (size_t j = threadIdx.x; j < hw; j += THREADS) dap_px_jitter_sat(p, hw, j, q[2]);
    __syncthreads();
    if (from11)
        for (size_t j = threadIdx.x; j < img; j += THREADS) p[j] = 2.0f * p[j] - 1.0f;
}

/* dst from src (a copy of the batch), one thread an output pixel */
__global__ static void geometric_k(float *dst, const float *src, const float *params, int op, int n, int c, int h,
                                   int w) {
    size_t hw = (size_t)h * w, total = (size_t)n * c * hw;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        size_t plane = e / hw;
        int yy = (int)((e % hw) / w), xx = (int)(e % w);
        dst[e] = dap_px_geometric(op, src + plane * hw, h, w, params + (plane / c) * DAP_AUG_PARAMS, yy, xx);
    }
}

__global__ static void cutout_k(float *x, const float *params, int n, int c, int h, int w) {
    size_t hw = (size_t)h * w, total = (size_t)n * c * hw;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        const float *q = params + (e / hw / c) * DAP_AUG_PARAMS;
        int yy = (int)((e % hw) / w), xx = (int)(e % w);
        if (dap_px_in_box((int)q[0], (int)q[1], (int)q[2], (int)q[3], yy, xx)) x[e] = 0.0f;
    }
}

/* box pixels of image i from partner perm[i] of src (a copy of the batch) */
__global__ static void cutmix_k(float *x, const float *src, const int *perm, int y0, int x0, int ch, int cw, int n,
                                int c, int h, int w) {
    size_t hw = (size_t)h * w, img = (size_t)c * hw, total = (size_t)n * c * ch * cw;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        size_t plane = e / ((size_t)ch * cw);
        int yy = y0 + (int)((e % ((size_t)ch * cw)) / cw), xx = x0 + (int)(e % cw);
        size_t i = plane / c, k = plane % c, off = k * hw + (size_t)yy * w + xx;
        x[i * img + off] = src[(size_t)perm[i] * img + off];
    }
}

/* ---- the batch ----------------------------------------------------------------------- */

void dap_cuda_aug_apply(dap_cuda_images *s, const int *idx, const dap_aug_plan *p, float *dst, void *stream) {
    cudaStream_t st = as_stream(stream);
    int n = p->n, c = s->c, h = s->h, w = s->w;
    DAP_ASSERT(n > 0 && p->nmax <= s->nmax && p->c == c && p->h == h && p->w == w);
    size_t hw = (size_t)h * w, total = (size_t)n * s->img;
    CK(cudaMemcpyAsync(s->idx, idx, (size_t)n * sizeof(int), cudaMemcpyHostToDevice, st));
    if (p->nstages > 0)
        CK(cudaMemcpyAsync(s->params, p->store, (size_t)p->nstages * p->nmax * DAP_AUG_PARAMS * sizeof(float),
                           cudaMemcpyHostToDevice, st));
    gather_k<<<blocks_for(total), THREADS, 0, st>>>(dst, s->x, s->idx, n, s->img);
    LAUNCHED();
    for (int si = 0; si < p->nstages; si++) {
        const dap_aug_stage *g = &p->st[si];
        const float *q = s->params + (g->p - p->store); /* the stage's parameters on the device */
        switch (g->op) {
        case DAP_AUGX_SCALE_SHIFT:
            scale_shift_k<<<blocks_for(total), THREADS, 0, st>>>(dst, dst, make_affine3(g->p, g->p + c, c), c, total, hw);
            break;
        case DAP_AUGX_JITTER: jitter_k<<<n, THREADS, 0, st>>>(dst, q, c, hw, g->flag); break;
        case DAP_AUGX_COLOR: color_k<<<n, THREADS, 0, st>>>(dst, q, c, hw); break;
        case DAP_AUGX_CUTOUT: cutout_k<<<blocks_for(total), THREADS, 0, st>>>(dst, q, n, c, h, w); break;
        case DAP_AUGX_CUTMIX: {
            int y0 = (int)g->p[0], x0 = (int)g->p[1], ch = (int)g->p[2], cw = (int)g->p[3];
            CK(cudaMemcpyAsync(s->perm, p->perm, (size_t)n * sizeof(int), cudaMemcpyHostToDevice, st));
            CK(cudaMemcpyAsync(s->scratch, dst, total * sizeof(float), cudaMemcpyDeviceToDevice, st));
            cutmix_k<<<blocks_for((size_t)n * c * ch * cw), THREADS, 0, st>>>(dst, s->scratch, s->perm, y0, x0, ch, cw,
                                                                               n, c, h, w);
            break;
        }
        default:
            CK(cudaMemcpyAsync(s->scratch, dst, total * sizeof(float), cudaMemcpyDeviceToDevice, st));
            geometric_k<<<blocks_for(total), THREADS, 0, st>>>(dst, s->scratch, q, g->op, n, c, h, w);
            break;
        }
        LAUNCHED();
    }
}

void dap_cuda_scale_shift(float *dst, const float *src, int n, int c, size_t hw, const float *a, const float *b,
                          void *stream) {
    size_t total = (size_t)n * c * hw;
    scale_shift_k<<<blocks_for(total), THREADS, 0, as_stream(stream)>>>(dst, src, make_affine3(a, b, c), c, total, hw);
    LAUNCHED();
}

void dap_cuda_stream_wait(void *waiter, void *on) {
    cudaEvent_t e;
    CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    CK(cudaEventRecord(e, as_stream(on)));
    CK(cudaStreamWaitEvent(as_stream(waiter), e, 0));
    CK(cudaEventDestroy(e));
}
