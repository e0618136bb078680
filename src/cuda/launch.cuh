/*
 * launch.cuh: the launch shape the backend's .cu files share: THREADS threads a block,
 * blocks_for(total) blocks for a grid-stride loop over `total` items (capped: the loops
 * stride over the rest), and block_sum, a block-wide sum in double (blockDim.x ==
 * THREADS) returned to every thread.
 */
#ifndef DAP_CUDA_LAUNCH_CUH
#define DAP_CUDA_LAUNCH_CUH

#include <stddef.h>

#define THREADS 256

static unsigned blocks_for(size_t total) {
    size_t b = (total + THREADS - 1) / THREADS;
    if (b > (1u << 20)) b = 1u << 20;
    return (unsigned)(b > 0 ? b : 1);
}

__device__ static inline double block_sum(double v, double *sh) {
    int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

#endif
