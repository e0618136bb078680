/*
 * cuda_runtime.h (cuda-emu): the subset of the CUDA runtime and of the CUDA C++ device
 * language that the .cu files of src/cuda use, for running them on the CPU (`make emu`,
 * tests/cuda-emu/README.md). It stands in for the toolkit's header: the build puts this
 * folder first on the include path and force-includes this file (as nvcc does), and
 * translate.sh has rewritten each launch `k<<<grid, block, shmem, stream>>>(args)` into
 * `EMU_LAUNCH(k, grid, block, shmem, stream)(args)`.
 *
 * Device code compiles as plain C++: __global__ / __device__ vanish, __shared__ becomes
 * `static` (blocks run one after another), and every GPU thread of a block runs on its
 * own fiber (emu_threads.cpp), so __syncthreads and the warp shuffles are real rendezvous
 * points, checked for divergence. The host API (emu_runtime.cpp) keeps device memory in
 * guarded, NaN-filled mappings and checks every pointer, size and copy direction it is
 * given; work goes on per-stream queues (run at once, or as late as CUDA allows with
 * DAP_EMU_ASYNC=1). What is not here was not needed: add it when a .cu file needs it.
 */
#ifndef DAP_CUDA_EMU_RUNTIME_H
#define DAP_CUDA_EMU_RUNTIME_H

#ifndef __cplusplus
#error "cuda-emu: device code compiles as C++ (g++ -std=c++17)"
#endif

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

/* ---- types and constants -------------------------------------------------------------- */

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoDevice = 100,
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
#define cudaStreamLegacy       ((cudaStream_t)0x1)
#define cudaStreamPerThread    ((cudaStream_t)0x2)
#define cudaStreamDefault      0x0
#define cudaStreamNonBlocking  0x1
#define cudaEventDefault       0x0
#define cudaEventBlockingSync  0x1
#define cudaEventDisableTiming 0x2

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

/* the fields the backend reads, and a few more */
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock;
    int regsPerBlock, warpSize, maxThreadsPerBlock, maxThreadsDim[3], maxGridSize[3];
    int major, minor, multiProcessorCount, clockRate;
};

/* ---- host API (emu_runtime.cpp) --------------------------------------------------------- */

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaDeviceReset(void);

cudaError_t cudaMalloc(void **ptr, size_t bytes);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMallocAsync(void **ptr, size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void *ptr, cudaStream_t stream);
template <class T> static inline cudaError_t cudaMalloc(T **ptr, size_t bytes) {
    return cudaMalloc((void **)ptr, bytes);
}
template <class T> static inline cudaError_t cudaMallocAsync(T **ptr, size_t bytes, cudaStream_t stream) {
    return cudaMallocAsync((void **)ptr, bytes, stream);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = 0);
cudaError_t cudaMemset(void *dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream = 0);

cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags = 0);

cudaError_t cudaEventCreate(cudaEvent_t *event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventDestroy(cudaEvent_t event);

cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t error);
const char *cudaGetErrorName(cudaError_t error);

/* ---- device language -------------------------------------------------------------------- */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__    __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static /* one block at a time: a block's shared memory is a static */
#define __constant__

/* the running thread's coordinates (set by the scheduler before each thread runs) */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

void __syncthreads(void);
void __syncwarp(unsigned int mask = 0xffffffffu);
void __threadfence(void);
unsigned int __activemask(void);

namespace emu {
enum warp_kind {
    WARP_SHFL_IDX,
    WARP_SHFL_UP,
    WARP_SHFL_DOWN,
    WARP_SHFL_XOR,
    WARP_BALLOT,
    WARP_ANY,
    WARP_ALL,
    WARP_SYNC
};
/* One lane's part in a warp collective: waits for the lanes of `mask`, returns its result
 * (the value's bits in the low `bytes`). */
uint64_t warp_op(warp_kind kind, unsigned int mask, uint64_t bits, int bytes, int arg, int width);
template <class T> static inline T shfl(warp_kind kind, unsigned int mask, T v, int arg, int width) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "cuda-emu: shuffles move 4- or 8-byte values");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    b = warp_op(kind, mask, b, (int)sizeof v, arg, width);
    T r;
    memcpy(&r, &b, sizeof r);
    return r;
}
} // namespace emu

template <class T> static inline T __shfl_sync(unsigned int mask, T v, int src, int width = 32) {
    return emu::shfl(emu::WARP_SHFL_IDX, mask, v, src, width);
}
template <class T> static inline T __shfl_up_sync(unsigned int mask, T v, unsigned int d, int width = 32) {
    return emu::shfl(emu::WARP_SHFL_UP, mask, v, (int)d, width);
}
template <class T> static inline T __shfl_down_sync(unsigned int mask, T v, unsigned int d, int width = 32) {
    return emu::shfl(emu::WARP_SHFL_DOWN, mask, v, (int)d, width);
}
template <class T> static inline T __shfl_xor_sync(unsigned int mask, T v, int lane_mask, int width = 32) {
    return emu::shfl(emu::WARP_SHFL_XOR, mask, v, lane_mask, width);
}
static inline unsigned int __ballot_sync(unsigned int mask, int pred) {
    return (unsigned int)emu::warp_op(emu::WARP_BALLOT, mask, pred != 0, 4, 0, 32);
}
static inline int __any_sync(unsigned int mask, int pred) {
    return (int)emu::warp_op(emu::WARP_ANY, mask, pred != 0, 4, 0, 32);
}
static inline int __all_sync(unsigned int mask, int pred) {
    return (int)emu::warp_op(emu::WARP_ALL, mask, pred != 0, 4, 0, 32);
}

/* Atomics: the fibers of a block run on one host thread and blocks run one by one, so a
 * read-modify-write cannot be interleaved; these return the old value as CUDA's do. */
template <class T> static inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <class T> static inline T atomicSub(T *p, T v) {
    T old = *p;
    *p = old - v;
    return old;
}
template <class T> static inline T atomicMax(T *p, T v) {
    T old = *p;
    *p = old > v ? old : v;
    return old;
}
template <class T> static inline T atomicMin(T *p, T v) {
    T old = *p;
    *p = old < v ? old : v;
    return old;
}
template <class T> static inline T atomicExch(T *p, T v) {
    T old = *p;
    *p = v;
    return old;
}
template <class T> static inline T atomicCAS(T *p, T cmp, T v) {
    T old = *p;
    if (old == cmp) *p = v;
    return old;
}

/* device math beyond <math.h> (the fast intrinsics as their accurate forms; glibc has
 * __expf and __logf) */
static inline float rsqrtf(float x) {
    return 1.0f / sqrtf(x);
}
static inline double rsqrt(double x) {
    return 1.0 / sqrt(x);
}
static inline float __fdividef(float a, float b) {
    return a / b;
}
static inline float __saturatef(float x) {
    return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x;
}
template <class T> static inline T __ldg(const T *p) {
    return *p;
}

/* ---- launches ------------------------------------------------------------------------------ */

namespace emu {
/* Where a launch was written and what it launches (diagnostics). */
struct launch_site {
    const char *kernel, *file;
    int line;
};
/* A launch's pointer parameters (their values and positions) and its argument block read
 * as words: every allocation a word points into is one the kernel may reach. */
struct launch_args {
    const void *const *ptrs;
    const int *ptr_index;
    int n_ptrs;
    const void *const *words;
    size_t n_words;
};
/* Queues `body` (one call = one GPU thread) on `stream` as a grid; checks the launch
 * configuration (an invalid one sets the error cudaGetLastError returns, as CUDA does) and
 * that each pointer argument is NULL or inside a live device allocation. */
void launch(const launch_site &site, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
            std::function<void()> body, const launch_args &args);

template <class T> static inline void note_ptr(const T &, int, const void **, int *, int &) {}
template <class T> static inline void note_ptr(T *const &p, int i, const void **out, int *index, int &n) {
    out[n] = (const void *)p, index[n++] = i;
}

template <class K> struct launcher;
template <class... P> struct launcher<void (*)(P...)> {
    void (*kernel)(P...);
    launch_site site;
    dim3 grid, block;
    size_t shmem;
    cudaStream_t stream;
    /* the arguments converted to the parameter types at the call, as a launch converts them,
     * and kept with the queued work */
    void operator()(P... args) const {
        typedef std::tuple<typename std::decay<P>::type...> params_t;
        auto params = std::make_shared<params_t>(args...);
        const void *ptrs[sizeof...(P) + 1];
        int index[sizeof...(P) + 1], n = 0, i = 0;
        std::apply([&](const auto &...v) { (note_ptr(v, i++, ptrs, index, n), ...); }, *params);
        auto k = kernel;
        launch(
            site, grid, block, shmem, stream, [k, params]() { std::apply(k, *params); },
            launch_args{ptrs, index, n, reinterpret_cast<const void *const *>(params.get()),
                        sizeof(params_t) / sizeof(void *)});
    }
};
template <class... P>
static inline launcher<void (*)(P...)> make_launcher(void (*k)(P...), launch_site site, dim3 grid, dim3 block,
                                                     size_t shmem = 0, cudaStream_t stream = 0) {
    return launcher<void (*)(P...)>{k, site, grid, block, shmem, stream};
}
} // namespace emu

/* k<<<grid, block[, shmem[, stream]]>>>(args), as translate.sh writes it */
#define EMU_LAUNCH(k, ...) emu::make_launcher(k, emu::launch_site{#k, __FILE__, __LINE__}, __VA_ARGS__)

#endif /* DAP_CUDA_EMU_RUNTIME_H */
