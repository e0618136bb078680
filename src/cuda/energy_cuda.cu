/*
 * energy_cuda.cu: the two reductions of the representativeness energy (distill/guidance.h)
 * on device rows, so that a guided step on the GPU keeps the real and synthetic features
 * there: the squared distances of every (synthetic, real) pair, and the gradient rows
 * ds_i = sum_j w_ij (s_i - r_j) from weights the host derives from those distances with
 * guidance.c's own kernel formula (dap_kernel_weights). Both accumulate in double over
 * exact differences (no |a|^2 + |b|^2 - 2ab expansion), in the CPU's order over j, as
 * guidance.c does; one block a pair, one thread a gradient element. Device buffers come
 * from dap_cuda_buffer / _f64 (plain cudaMalloc, once per run: the pair scratch too); the work runs on the default stream and each
 * call returns with its results in place.
 */
extern "C" {
#include "core/core.h"
#include "cuda/cuda.h"
}

#include <cuda_runtime.h>
#include <stdio.h>

#include "cuda/check.cuh"  /* CK, LAUNCHED */
#include "cuda/launch.cuh" /* THREADS, blocks_for, block_sum */

/* q[i nr + j] = sum_c (s[i, c] - r[j, c])^2, one block a pair */
__global__ static void pair_sq_k(double *q, const float *s, const float *r, int nr, int f) {
    __shared__ double sh[THREADS];
    const int i = blockIdx.x / nr, j = blockIdx.x % nr;
    const float *si = s + (size_t)i * f, *rj = r + (size_t)j * f;
    double acc = 0.0;
    for (int c = threadIdx.x; c < f; c += THREADS) {
        const double d = (double)si[c] - rj[c];
        acc += d * d;
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) q[blockIdx.x] = acc;
}

/* ds[i, c] = sum_j w[i nr + j] (s[i, c] - r[j, c]), j in order */
__global__ static void energy_grad_k(float *ds, const double *w, const float *s, const float *r, int ns, int nr,
                                     int f) {
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < (size_t)ns * f;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t i = e / f, c = e % f;
        const double sv = s[e];
        double acc = 0.0;
        for (int j = 0; j < nr; j++) acc += w[i * nr + j] * (sv - r[(size_t)j * f + c]);
        ds[e] = (float)acc;
    }
}

extern "C" float *dap_cuda_buffer(size_t floats) {
    void *p = NULL;
    CK(cudaMalloc(&p, floats ? floats * sizeof(float) : 4));
    return (float *)p;
}

extern "C" void dap_cuda_buffer_free(float *p) {
    if (p) cudaFree(p);
}

extern "C" void dap_cuda_copy(float *dst, const float *src, size_t floats) {
    CK(cudaMemcpy(dst, src, floats * sizeof(float), cudaMemcpyDefault));
    /* a device-to-device copy may return before it is done, and the source may be a model
     * state's scratch that its next forward (on a non-blocking stream) overwrites */
    CK(cudaDeviceSynchronize());
}

extern "C" double *dap_cuda_buffer_f64(size_t n) {
    void *p = NULL;
    CK(cudaMalloc(&p, n ? n * sizeof(double) : 8));
    return (double *)p;
}

extern "C" void dap_cuda_pair_sq(double *q, double *dq, const float *s, int ns, const float *r, int nr, int f) {
    DAP_ASSERT(ns > 0 && nr > 0 && f > 0);
    CK(cudaDeviceSynchronize()); /* the rows may come from another stream (the DiT's) */
    pair_sq_k<<<(unsigned)(ns * nr), THREADS>>>(dq, s, r, nr, f);
    LAUNCHED();
    CK(cudaMemcpy(q, dq, sizeof(double) * (size_t)ns * nr, cudaMemcpyDeviceToHost));
}

extern "C" void dap_cuda_energy_grad(float *ds, const double *w, double *dw, const float *s, int ns, const float *r,
                                     int nr, int f) {
    DAP_ASSERT(ns > 0 && nr > 0 && f > 0);
    CK(cudaMemcpy(dw, w, sizeof(double) * (size_t)ns * nr, cudaMemcpyHostToDevice));
    energy_grad_k<<<blocks_for((size_t)ns * f), THREADS>>>(ds, dw, s, r, ns, nr, f);
    LAUNCHED();
    CK(cudaDeviceSynchronize());
}
