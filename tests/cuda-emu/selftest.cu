/*
 * selftest.cu (cuda-emu): the emulator's own test, CUDA compiled the way the backend is
 * (translate.sh, then g++). Each case runs in a child process: a correct program must
 * finish with the right result, a broken one (an overrun, a divergent barrier, a missing
 * stream wait, ...) must be stopped by the report that names its error, or give the wrong
 * result in the mode meant to expose it. A checker that stops catching what it claims to
 * catch fails here. Run by `make test-emu` (build-emu/emu_selftest [part of a case name ...];
 * EMU_SELFTEST_SHOW=1 prints the reports of the cases that pass too).
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define N 1000

/* ---- kernels -------------------------------------------------------------------------------- */

__global__ static void fill_k(float *p, float v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = v;
}

__global__ static void fill_past_k(float *p, int n) { /* one element too many */
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) p[i] += 1.0f;
}

__global__ static void copy_k(float *dst, const float *src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = src[i];
}

/* out[block] = the sum of its 256 inputs, a shared-memory tree (right as written) */
__global__ static void block_sum_k(float *out, const float *x) {
    __shared__ float sh[256];
    int t = threadIdx.x;
    sh[t] = x[blockIdx.x * 256 + t];
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = sh[0];
}

__global__ static void barrier_in_branch_k(float *out) {
    if (threadIdx.x < 16) {
        __syncthreads();
        out[threadIdx.x] = 1.0f;
    } else {
        out[threadIdx.x] = 2.0f;
        __syncthreads();
    }
}

__global__ static void exit_before_barrier_k(float *out) {
    if (threadIdx.x == 3) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

/* every lane gets the sum of the warp's lane numbers (496) */
__global__ static void warp_sum_k(float *out) {
    float v = (float)(threadIdx.x % 32);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    out[threadIdx.x] = v;
}

__global__ static void lane_exits_k(float *out) {
    if (threadIdx.x == 5) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

/* out[t] = thread 0's value, read without the __syncthreads it needs: right when thread 0
 * runs first */
__global__ static void no_barrier_k(float *out) {
    __shared__ float sh[64];
    sh[threadIdx.x] = (float)threadIdx.x + 1.0f;
    out[threadIdx.x] = sh[0];
}

/* reads through a pointer it was not given (a static, here) */
static float *g_hidden;
__global__ static void hidden_read_k(float *out) { out[threadIdx.x] = g_hidden[threadIdx.x]; }

/* ---- cases ---------------------------------------------------------------------------------- */

static float *dev(size_t n) {
    float *p = NULL;
    if (cudaMalloc(&p, n * sizeof(float)) != cudaSuccess) exit(3);
    return p;
}

/* each returns 0 when the result is right */
static int good_fill(void) {
    float *d = dev(N), h[N];
    fill_k<<<(N + 255) / 256, 256>>>(d, 2.5f, N);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    for (int i = 0; i < N; i++)
        if (h[i] != 2.5f) return 1;
    return cudaGetLastError() != cudaSuccess;
}

static int good_block_sum(void) {
    float h[512], s[2], *x = dev(512), *o = dev(2);
    for (int i = 0; i < 512; i++) h[i] = (float)i;
    cudaMemcpy(x, h, sizeof h, cudaMemcpyHostToDevice);
    block_sum_k<<<2, 256>>>(o, x);
    cudaMemcpy(s, o, sizeof s, cudaMemcpyDeviceToHost);
    return s[0] != 255.0f * 256 / 2 || s[1] != (256.0f + 511.0f) * 256 / 2;
}

static int good_warp_sum(void) {
    float h[64], *o = dev(64);
    warp_sum_k<<<1, 64>>>(o);
    cudaMemcpy(h, o, sizeof h, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 64; i++)
        if (h[i] != 496.0f) return 1;
    return 0;
}

static int unwritten_is_nan(void) {
    float h[4], *d = dev(4);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    return !isnan(h[0]) || !isnan(h[3]);
}

static int bad_config_is_an_error(void) {
    float *d = dev(4);
    fill_k<<<0, 256>>>(d, 1.0f, 4);
    return cudaGetLastError() != cudaErrorInvalidConfiguration || cudaGetLastError() != cudaSuccess;
}

static int memory_limit(void) { /* run with DAP_EMU_MEM_MB=1 */
    size_t fr = 0, tot = 0;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, 600 << 10) != cudaSuccess) return 1;
    cudaMemGetInfo(&fr, &tot);
    if (tot != (1 << 20) || fr > (424 << 10)) return 1;
    return cudaMalloc(&b, 600 << 10) != cudaErrorMemoryAllocation || b != NULL;
}

static int gemm_fp32_and_tf32(void) {
    /* column-major A (2 x 3), B (3 x 2); A's last entry 1 + 2^-12 survives FP32 only */
    const float ha[6] = {1, 2, 3, 4, 5, 1.0f + 1.0f / 4096}, hb[6] = {1, 0, 0, 0, 0, 1};
    float *a = dev(6), *b = dev(6), *c = dev(4), hc[4], one = 1, zero = 0;
    cudaMemcpy(a, ha, sizeof ha, cudaMemcpyHostToDevice);
    cudaMemcpy(b, hb, sizeof hb, cudaMemcpyHostToDevice);
    cublasHandle_t h;
    cublasCreate(&h);
    if (cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, 2, b, 3, &zero, c, 2)) return 1;
    cudaMemcpy(hc, c, sizeof hc, cudaMemcpyDeviceToHost);
    if (hc[0] != 1 || hc[1] != 2 || hc[2] != 5 || hc[3] != 1.0f + 1.0f / 4096) return 1;
    if (cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, CUDA_R_32F, 2, b, CUDA_R_32F, 3, &zero, c,
                     CUDA_R_32F, 2, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT))
        return 1;
    cudaMemcpy(hc, c, sizeof hc, cudaMemcpyDeviceToHost);
    if (hc[3] != 1.0f) return 1;
    return cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, 1, b, 3, &zero, c, 2) !=
           CUBLAS_STATUS_INVALID_VALUE; /* lda < m */
}

/* the upload on the legacy stream, the kernel on a non-blocking one, no wait in between */
static int missing_stream_wait(void) {
    float h[N], *x = dev(N), *y = dev(N);
    for (int i = 0; i < N; i++) h[i] = (float)i;
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaMemcpy(x, h, sizeof h, cudaMemcpyHostToDevice);
    copy_k<<<(N + 255) / 256, 256, 0, s>>>(y, x, N);
    cudaStreamSynchronize(s);
    cudaMemcpy(h, y, sizeof h, cudaMemcpyDeviceToHost);
    for (int i = 0; i < N; i++)
        if (h[i] != (float)i) return 1;
    return 0;
}

/* the same with the wait: right in every mode */
static int stream_wait_event(void) {
    float h[N], *x = dev(N), *y = dev(N);
    for (int i = 0; i < N; i++) h[i] = (float)i;
    cudaStream_t s;
    cudaEvent_t e;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    cudaMemcpy(x, h, sizeof h, cudaMemcpyHostToDevice);
    cudaEventRecord(e, 0);
    cudaStreamWaitEvent(s, e, 0);
    copy_k<<<(N + 255) / 256, 256, 0, s>>>(y, x, N);
    cudaMemcpyAsync(h, y, sizeof h, cudaMemcpyDeviceToHost, s);
    cudaStreamSynchronize(s);
    for (int i = 0; i < N; i++)
        if (h[i] != (float)i) return 1;
    return 0;
}

static int missing_barrier(void) {
    float h[64], *o = dev(64);
    no_barrier_k<<<1, 64>>>(o);
    cudaMemcpy(h, o, sizeof h, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 64; i++)
        if (h[i] != 1.0f) return 1;
    return 0;
}

/* these must not finish: the emulator stops them */
static int overrun(void) {
    float *d = dev(N);
    fill_past_k<<<(N + 256) / 256, 256>>>(d, N);
    cudaDeviceSynchronize();
    return 0;
}

static int overrun_in_slack(void) { /* 1001 floats: the overrun lands in the rounding to 16 bytes */
    float *d = dev(N + 1);
    fill_past_k<<<(N + 257) / 256, 256>>>(d, N + 1);
    cudaDeviceSynchronize();
    return 0;
}

static int host_reads_device(void) {
    float *d = dev(4);
    fill_k<<<1, 4>>>(d, 1.0f, 4);
    return d[0] != 1.0f;
}

static int host_pointer_to_kernel(void) {
    static float h[4];
    fill_k<<<1, 4>>>(h, 1.0f, 4);
    return 0;
}

static int copy_wrong_direction(void) {
    float h[4] = {0}, *d = dev(4);
    cudaMemcpy(d, h, sizeof h, cudaMemcpyDeviceToHost);
    return 0;
}

static int kernel_reads_hidden(void) {
    float *a = dev(4);
    g_hidden = dev(4);
    hidden_read_k<<<1, 4>>>(a);
    cudaDeviceSynchronize();
    return 0;
}

static int copy_overlapping(void) {
    float *d = dev(8);
    cudaMemcpy(d + 2, d, 4 * sizeof(float), cudaMemcpyDeviceToDevice);
    cudaDeviceSynchronize();
    return 0;
}

static int copy_past_end(void) {
    float h[5] = {0}, *d = dev(4);
    cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice);
    return 0;
}

static int divergent_barrier(void) {
    float *o = dev(32);
    barrier_in_branch_k<<<1, 32>>>(o);
    return 0;
}

static int barrier_after_exit(void) {
    float *o = dev(32);
    exit_before_barrier_k<<<1, 32>>>(o);
    return 0;
}

static int shuffle_after_exit(void) {
    float *o = dev(32);
    lane_exits_k<<<1, 32>>>(o);
    return 0;
}

static int gemm_past_end(void) {
    float *a = dev(6), *b = dev(6), *c = dev(4), one = 1, zero = 0;
    cublasHandle_t h;
    cublasCreate(&h);
    cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, 2, b, 3, &zero, c, 3); /* ldc 3: C needs 5 */
    return 0;
}

static int gemm_in_place(void) {
    float *a = dev(4), one = 1, zero = 0;
    cublasHandle_t h;
    cublasCreate(&h);
    cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, a, 2, &zero, a, 2);
    return 0;
}

static int gemm_batch_overlap(void) {
    float *a = dev(8), *c = dev(6), one = 1, zero = 0;
    cublasHandle_t h;
    cublasCreate(&h);
    /* C entries 2 floats apart, each 4 long */
    cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, 4, a, 2, 4, &zero, c, 2, 2,
                              2);
    return 0;
}

/* ---- the runner --------------------------------------------------------------------------- */

typedef struct {
    const char *name, *env; /* env: "VAR=VALUE" set in the child, or NULL */
    int (*fn)(void);
    const char *expect; /* NULL: finishes with the right result; "wrong": finishes with a wrong
                           one; else a report containing this */
} test_case;

static const test_case k_cases[] = {
    {"fill", NULL, good_fill, NULL},
    {"block reduction", NULL, good_block_sum, NULL},
    {"block reduction, reversed", "DAP_EMU_REVERSE=1", good_block_sum, NULL},
    {"warp shuffles", NULL, good_warp_sum, NULL},
    {"new memory holds NaN", NULL, unwritten_is_nan, NULL},
    {"a launch of 0 blocks is an error", NULL, bad_config_is_an_error, NULL},
    {"DAP_EMU_MEM_MB", "DAP_EMU_MEM_MB=1", memory_limit, NULL},
    {"products: fp32, tf32, checks", NULL, gemm_fp32_and_tf32, NULL},
    {"stream wait through an event", "DAP_EMU_ASYNC=1", stream_wait_event, NULL},
    {"missing stream wait, synchronous", NULL, missing_stream_wait, NULL},
    {"missing stream wait, async", "DAP_EMU_ASYNC=1", missing_stream_wait, "wrong"},
    {"missing __syncthreads, hidden in this order", NULL, missing_barrier, NULL},
    {"missing __syncthreads, reversed", "DAP_EMU_REVERSE=1", missing_barrier, "wrong"},
    {"overrun into the guard page", NULL, overrun, "past its end"},
    {"overrun into the rounding bytes", NULL, overrun_in_slack, "past the end of allocation"},
    {"host reads device memory", NULL, host_reads_device, "host code cannot read or write device memory"},
    {"host pointer to a kernel", NULL, host_pointer_to_kernel, "not device memory"},
    {"copy in the wrong direction", NULL, copy_wrong_direction, "the pointers make it HostToDevice"},
    {"copy past the end", NULL, copy_past_end, "past the end of allocation"},
    {"copy between overlapping ranges", NULL, copy_overlapping, "overlapping ranges"},
    {"kernel reads memory it was not given", NULL, kernel_reads_hidden, "the kernel was given no pointer"},
    {"__syncthreads in a branch", NULL, divergent_barrier, "reached from two places"},
    {"__syncthreads after an exit", NULL, barrier_after_exit, "which has exited"},
    {"shuffle with an exited lane", NULL, shuffle_after_exit, "which has exited"},
    {"product past the end", NULL, gemm_past_end, "past the end of allocation"},
    {"product in place", NULL, gemm_in_place, "C shares elements"},
    {"batch entries overlapping", NULL, gemm_batch_overlap, "write overlapping parts of C"},
};

/* Runs a case in a child; returns 1 when it behaved as expected (its stderr in err). */
static int run_case(const test_case *c, char *err, size_t cap) {
    int fd[2];
    if (pipe(fd)) return 0;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        /* the defaults, then the case's setting */
        const char *vars[] = {"DAP_EMU_ASYNC", "DAP_EMU_REVERSE", "DAP_EMU_PROTECT", "DAP_EMU_MEM_MB"};
        for (size_t v = 0; v < sizeof vars / sizeof vars[0]; v++) unsetenv(vars[v]);
        if (c->env) putenv((char *)c->env);
        _exit(c->fn() ? 10 : 0);
    }
    close(fd[1]);
    size_t len = 0;
    ssize_t r;
    while ((r = read(fd[0], err + len, cap - 1 - len)) > 0) len += (size_t)r;
    err[len] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    const int finished = WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 10);
    if (!c->expect) return WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!strcmp(c->expect, "wrong")) return finished && WEXITSTATUS(st) == 10;
    return !finished && strstr(err, c->expect) != NULL;
}

int main(int argc, char **argv) {
    static char err[1 << 16];
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
        const test_case *c = &k_cases[i];
        int selected = argc < 2;
        for (int a = 1; a < argc; a++) selected |= strstr(c->name, argv[a]) != NULL;
        if (!selected) continue;
        if (run_case(c, err, sizeof err)) {
            if (getenv("EMU_SELFTEST_SHOW")) fputs(err, stdout);
            printf("ok   %s\n", c->name);
            passed++;
        } else {
            printf("FAIL %s (expected %s)\n%s\n", c->name, c->expect ? c->expect : "the right result", err);
            failed++;
        }
    }
    printf("%d passed, %d failed, 0 skipped\n", passed, failed);
    return failed ? 1 : 0;
}
