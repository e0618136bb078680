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
#include <cuda_bf16.h>
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

/* BF16 storage: written from float with __float2bfloat16, read back with __bfloat162float */
__global__ static void to_bf16_k(__nv_bfloat16 *dst, const float *src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __float2bfloat16(src[i]);
}

__global__ static void from_bf16_k(float *dst, const __nv_bfloat16 *src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __bfloat162float(src[i]);
}

__global__ static void bf16_add_past_k(__nv_bfloat16 *p, float v, int n) { /* one element too many */
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) p[i] = __float2bfloat16_rn(__bfloat162float(p[i]) + v);
}

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

/* ---- BF16 storage ---- */

static unsigned short bf16_of(float x) { /* __float2bfloat16's bits */
    __nv_bfloat16 b = __float2bfloat16(x);
    unsigned short u;
    memcpy(&u, &b, 2);
    return u;
}

static float float_of_bits(unsigned int u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* the reference rounding of a finite float to BF16, written apart from the emulator's: the
 * nearer of the two BF16 values around x, the even one on a tie */
static float bf16_ref(float x) {
    unsigned int u;
    memcpy(&u, &x, 4);
    const unsigned int lo = u & 0xffff0000u, hi = lo + 0x10000u; /* toward zero, away from it */
    const double dlo = fabs((double)x - float_of_bits(lo)), dhi = fabs((double)float_of_bits(hi) - x);
    return float_of_bits(dlo < dhi || (dlo == dhi && !(lo & 0x10000u)) ? lo : hi);
}

static __nv_bfloat16 *dev_bf16(size_t n) { /* exactly n BF16 elements */
    __nv_bfloat16 *p = NULL;
    if (cudaMalloc(&p, n * sizeof(__nv_bfloat16)) != cudaSuccess) exit(3);
    return p;
}

/* x (n floats on the host) into BF16 on the device, through the FP32 upload and to_bf16_k */
static void upload_bf16(__nv_bfloat16 *d, const float *x, int n) {
    float *t = dev(n);
    cudaMemcpy(t, x, n * sizeof(float), cudaMemcpyHostToDevice);
    to_bf16_k<<<(n + 255) / 256, 256>>>(d, t, n);
    cudaFree(t);
}

/* the BF16 elements d[0 .. n) back as floats, through from_bf16_k */
static void download_bf16(float *x, const __nv_bfloat16 *d, int n) {
    float *t = dev(n);
    from_bf16_k<<<(n + 255) / 256, 256>>>(t, d, n);
    cudaMemcpy(x, t, n * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(t);
}

/* inputs in +-[1, 4) that BF16 does not hold: every product and sum below stays exact in
 * float, so the products must match the double reference exactly */
static float input(int i) {
    return (i % 3 == 1 ? -1.0f : 1.0f) * (1.0f + (float)((i * 37) % 61) / 21.0f);
}

static int bf16_rounding(void) {
    static const unsigned int cases[][2] = {
        {0x3f800000u, 0x3f80u}, {0x3f807fffu, 0x3f80u}, {0x3f808000u, 0x3f80u}, /* a tie: to even */
        {0x3f808001u, 0x3f81u}, {0x3f818000u, 0x3f82u}, {0xbf818000u, 0xbf82u}, /* a tie: to even (up) */
        {0x80000000u, 0x8000u}, {0x00008000u, 0x0000u}, {0x00018000u, 0x0002u}, /* subnormals */
        {0x00008001u, 0x0001u}, {0x7f7f7fffu, 0x7f7fu}, {0x7f7f8000u, 0x7f80u}, /* a tie up to inf */
        {0x7f7fffffu, 0x7f80u}, {0xff7fffffu, 0xff80u}, {0x7f800000u, 0x7f80u}, {0xff800000u, 0xff80u},
    };
    const int nc = (int)(sizeof cases / sizeof cases[0]);
    static const unsigned int nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fff0000u};
    const int nn = (int)(sizeof nans / sizeof nans[0]);
    float x[32], y[32];
    for (int i = 0; i < nc; i++) {
        x[i] = float_of_bits(cases[i][0]);
        if (bf16_of(x[i]) != cases[i][1]) return 1;
        __nv_bfloat16 r = __float2bfloat16_rn(x[i]);
        unsigned short rb;
        memcpy(&rb, &r, 2);
        if (rb != cases[i][1]) return 1;
    }
    for (int i = 0; i < nn; i++) {
        x[nc + i] = float_of_bits(nans[i]);
        if (!isnan(__bfloat162float(__float2bfloat16(x[nc + i])))) return 1; /* NaN stays NaN */
    }
    /* every BF16 value back to float and to BF16 again unchanged; NaN stays NaN */
    for (unsigned int b = 0; b < 0x10000u; b++) {
        __nv_bfloat16 h;
        const unsigned short bits = (unsigned short)b;
        memcpy((void *)&h, &bits, 2);
        const float f = __bfloat162float(h);
        if (isnan(f) ? !isnan(__bfloat162float(__float2bfloat16(f)))
                     : bf16_of(f) != b || float_of_bits(b << 16) != f)
            return 1;
    }
    /* floats of every exponent against the reference rounding */
    unsigned int r = 12345u;
    for (int i = 0; i < 1000000; i++) {
        r = r * 1664525u + 1013904223u;
        const float f = float_of_bits(r);
        if (isfinite(f) && fabsf(f) < 3.38e38f && bf16_of(f) != bf16_of(bf16_ref(f))) return 1;
        if (isfinite(f) && fabsf(f) < 3.38e38f && __bfloat162float(__float2bfloat16(f)) != bf16_ref(f))
            return 1;
    }
    /* the same conversions in a kernel */
    const int n = nc + nn;
    __nv_bfloat16 *d = dev_bf16(n);
    upload_bf16(d, x, n);
    download_bf16(y, d, n);
    for (int i = 0; i < nc; i++)
        if (bf16_of(y[i]) != cases[i][1] || float_of_bits(cases[i][1] << 16) != y[i]) return 1;
    for (int i = nc; i < n; i++)
        if (!isnan(y[i])) return 1;
    return cudaGetLastError() != cudaSuccess;
}

/* C (m x n) = op(A) op(B) in double from the BF16 values of the FP32 inputs a, b (column-major,
 * ta / tb: stored transposed) */
static void ref_product(double *c, const float *a, int lda, int ta, const float *b, int ldb, int tb, int m,
                        int n, int k) {
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int l = 0; l < k; l++)
                s += (double)bf16_ref(ta ? a[i * lda + l] : a[l * lda + i]) *
                     (double)bf16_ref(tb ? b[l * ldb + j] : b[j * ldb + l]);
            c[j * m + i] = s;
        }
}

/* op(A) = A^T (A stored k x m at lda 5), B (k x n): BF16 in, FP32 out, then BF16 out with beta;
 * every matrix exactly as large as BF16 needs (a count in floats would find them too small),
 * A and the FP32 C in one allocation */
static int gemm_bf16(void) {
    enum { GM = 3, GN = 2, GK = 4, GLDA = 5, GSPAN_A = GLDA * (GM - 1) + GK /* 14 */ };
    float ha[GSPAN_A], hb[GK * GN], hc[GM * GN], hc0[GM * GN], one = 1, half = 0.5f, zero = 0;
    double ref[GM * GN];
    for (int i = 0; i < GSPAN_A; i++) ha[i] = input(i);
    for (int i = 0; i < GK * GN; i++) hb[i] = input(100 + i);
    for (int i = 0; i < GM * GN; i++) hc0[i] = input(200 + i);
    char *buf = NULL; /* A (14 BF16, 28 bytes), then C (6 floats) */
    if (cudaMalloc(&buf, GSPAN_A * 2 + GM * GN * 4) != cudaSuccess) return 1;
    __nv_bfloat16 *a = (__nv_bfloat16 *)buf, *b = dev_bf16(GK * GN), *cb = dev_bf16(GM * GN);
    float *c = (float *)(buf + GSPAN_A * 2);
    upload_bf16(a, ha, GSPAN_A);
    upload_bf16(b, hb, GK * GN);
    upload_bf16(cb, hc0, GM * GN);
    ref_product(ref, ha, GLDA, 1, hb, GK, 0, GM, GN, GK);
    cublasHandle_t h;
    cublasCreate(&h);
    if (cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, GM, GN, GK, &one, a, CUDA_R_16BF, GLDA, b, CUDA_R_16BF, GK,
                     &zero, c, CUDA_R_32F, GM, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT))
        return 1;
    cudaMemcpy(hc, c, sizeof hc, cudaMemcpyDeviceToHost);
    for (int i = 0; i < GM * GN; i++)
        if (hc[i] != (float)ref[i]) return 1;
    /* C in BF16: C = A^T B + C / 2, rounded once */
    if (cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, GM, GN, GK, &one, a, CUDA_R_16BF, GLDA, b, CUDA_R_16BF, GK,
                     &half, cb, CUDA_R_16BF, GM, CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT))
        return 1;
    download_bf16(hc, cb, GM * GN);
    for (int i = 0; i < GM * GN; i++)
        if (hc[i] != bf16_ref((float)(ref[i] + 0.5 * bf16_ref(hc0[i])))) return 1;
    /* one rounding to BF16: 1 + 2^-8 + 2^-30 is above the tie 1 + 2^-8 (to 1 + 2^-7), which
     * a rounding to float first would make (to 1) */
    const float hx[3] = {1.0f, 1.0f / 256, 1.0f / 1073741824}, hy[3] = {1, 1, 1};
    __nv_bfloat16 *x = dev_bf16(3), *y = dev_bf16(3), *z = dev_bf16(1);
    upload_bf16(x, hx, 3);
    upload_bf16(y, hy, 3);
    if (cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, 1, 1, 3, &one, x, CUDA_R_16BF, 3, y, CUDA_R_16BF, 3, &zero,
                     z, CUDA_R_16BF, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT))
        return 1;
    download_bf16(hc, z, 1);
    if (hc[0] != 1.0f + 1.0f / 128) return 1;
    cublasDestroy(h);
    return cudaGetLastError() != cudaSuccess;
}

/* 3 entries: A (2 x 5 at lda 3, stride 16: odd gaps), op(B) = B^T (B stored 3 x 5), C in FP32
 * then in BF16 */
static int gemm_bf16_batched(void) {
    enum { GM = 2, GN = 3, GK = 5, GLDA = 3, GSA = GLDA * GK + 1, GSB = GN * GK, GSC = GM * GN, GBATCH = 3 };
    enum { GNA = GSA * (GBATCH - 1) + GLDA * (GK - 1) + GM, GNB = GSB * GBATCH, GNC = GSC * GBATCH };
    float ha[GNA], hb[GNB], hc[GNC], one = 1, zero = 0;
    double ref[GNC];
    for (int i = 0; i < GNA; i++) ha[i] = input(300 + i);
    for (int i = 0; i < GNB; i++) hb[i] = input(400 + i);
    __nv_bfloat16 *a = dev_bf16(GNA), *b = dev_bf16(GNB), *cb = dev_bf16(GNC);
    float *c = dev(GNC);
    upload_bf16(a, ha, GNA);
    upload_bf16(b, hb, GNB);
    for (int e = 0; e < GBATCH; e++)
        ref_product(ref + GSC * e, ha + GSA * e, GLDA, 0, hb + GSB * e, GN, 1, GM, GN, GK);
    cublasHandle_t h;
    cublasCreate(&h);
    if (cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_T, GM, GN, GK, &one, a, CUDA_R_16BF, GLDA, GSA,
                                   b, CUDA_R_16BF, GN, GSB, &zero, c, CUDA_R_32F, GM, GSC, GBATCH,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT))
        return 1;
    cudaMemcpy(hc, c, sizeof hc, cudaMemcpyDeviceToHost);
    for (int i = 0; i < GNC; i++)
        if (hc[i] != (float)ref[i]) return 1;
    if (cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_T, GM, GN, GK, &one, a, CUDA_R_16BF, GLDA, GSA,
                                   b, CUDA_R_16BF, GN, GSB, &zero, cb, CUDA_R_16BF, GM, GSC, GBATCH,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT))
        return 1;
    download_bf16(hc, cb, GNC);
    for (int i = 0; i < GNC; i++)
        if (hc[i] != bf16_ref((float)ref[i])) return 1;
    cublasDestroy(h);
    return cudaGetLastError() != cudaSuccess;
}

/* a product cuBLAS refuses (CUBLAS_STATUS_NOT_SUPPORTED) and must leave C as it was: here
 * unwritten, so NaN */
static int refused(cublasStatus_t st, const float *c) {
    float hc[4];
    cudaMemcpy(hc, c, sizeof hc, cudaMemcpyDeviceToHost);
    return st != CUBLAS_STATUS_NOT_SUPPORTED || !isnan(hc[0]) || !isnan(hc[3]);
}

static const float k_four[4] = {1, 2, 3, 4};

static int gemm_bf16_mixed_types(void) {
    __nv_bfloat16 *a = dev_bf16(4);
    float *b = dev(4), *c = dev(4), one = 1, zero = 0;
    cublasHandle_t h;
    cublasCreate(&h);
    upload_bf16(a, k_four, 4);
    cudaMemset(b, 0, 4 * sizeof(float));
    return refused(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, CUDA_R_16BF, 2, b, CUDA_R_32F,
                                2, &zero, c, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   c) ||
           refused(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, b, CUDA_R_32F, 2, 4,
                                              a, CUDA_R_16BF, 2, 4, &zero, c, CUDA_R_32F, 2, 4, 1,
                                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   c) ||
           refused(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, b, CUDA_R_32F, 2, b, CUDA_R_32F,
                                2, &zero, c, CUDA_R_16BF, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   c) || /* FP32 in, BF16 out */
           refused(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, CUDA_R_16BF, 2, a, CUDA_R_16BF,
                                2, &zero, c, CUDA_R_16F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   c); /* BF16 in, FP16 out */
}

static int gemm_bf16_fast_compute(void) {
    __nv_bfloat16 *a = dev_bf16(4), *cb = dev_bf16(4);
    float *c = dev(4), one = 1, zero = 0;
    cublasHandle_t h;
    cublasCreate(&h);
    upload_bf16(a, k_four, 4);
    const cublasComputeType_t fast[] = {CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_COMPUTE_32F_FAST_TF32,
                                        CUBLAS_COMPUTE_32F_FAST_16F};
    for (int f = 0; f < 3; f++) {
        if (refused(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, CUDA_R_16BF, 2, a,
                                 CUDA_R_16BF, 2, &zero, c, CUDA_R_32F, 2, fast[f], CUBLAS_GEMM_DEFAULT),
                    c))
            return 1;
        if (cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, CUDA_R_16BF, 2, 4, a,
                                       CUDA_R_16BF, 2, 4, &zero, cb, CUDA_R_16BF, 2, 4, 1, fast[f],
                                       CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_NOT_SUPPORTED)
            return 1;
    }
    return 0;
}

/* both BF16 halves of every word of new memory read NaN */
static int unwritten_bf16_is_nan(void) {
    float h[5];
    __nv_bfloat16 *d = dev_bf16(5);
    download_bf16(h, d, 5);
    for (int i = 0; i < 5; i++)
        if (!isnan(h[i])) return 1;
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

/* A (2 x 3 BF16, 12 bytes) in 10 bytes: 2 bytes short counted in BF16 (in floats it would
 * be 14, in bytes not short at all) */
static int gemm_bf16_past_end(void) {
    __nv_bfloat16 *a = NULL, *b = dev_bf16(6);
    float *c = dev(4), one = 1, zero = 0;
    if (cudaMalloc(&a, 10) != cudaSuccess) return 1;
    cublasHandle_t h;
    cublasCreate(&h);
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, CUDA_R_16BF, 2, b, CUDA_R_16BF, 3, &zero, c,
                 CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return 0;
}

/* the FP32 C starts at A's fifth BF16 element (byte 8 of 12) */
static int gemm_bf16_c_on_a(void) {
    char *buf = NULL;
    __nv_bfloat16 *b = dev_bf16(6);
    float one = 1, zero = 0;
    if (cudaMalloc(&buf, 32) != cudaSuccess) return 1;
    cublasHandle_t h;
    cublasCreate(&h);
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, (__nv_bfloat16 *)buf, CUDA_R_16BF, 2, b,
                 CUDA_R_16BF, 3, &zero, (float *)(buf + 8), CUDA_R_32F, 2, CUBLAS_COMPUTE_32F,
                 CUBLAS_GEMM_DEFAULT);
    return 0;
}

static int gemm_bf16_misaligned(void) {
    char *buf = NULL;
    __nv_bfloat16 *b = dev_bf16(6);
    float *c = dev(4), one = 1, zero = 0;
    if (cudaMalloc(&buf, 16) != cudaSuccess) return 1;
    cublasHandle_t h;
    cublasCreate(&h);
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, (__nv_bfloat16 *)(buf + 1), CUDA_R_16BF, 2, b,
                 CUDA_R_16BF, 3, &zero, c, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return 0;
}

static int gemm_bf16_batch_overlap(void) {
    __nv_bfloat16 *a = dev_bf16(8), *c = dev_bf16(6);
    float one = 1, zero = 0;
    cublasHandle_t h;
    cublasCreate(&h);
    /* BF16 C entries 2 elements apart, each 4 long */
    cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, CUDA_R_16BF, 2, 4, a,
                               CUDA_R_16BF, 2, 4, &zero, c, CUDA_R_16BF, 2, 2, 2, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT);
    return 0;
}

/* 1002 BF16 (2004 bytes): the overrun lands in the low half of a rounding word, and adds 0,
 * which only a NaN there turns into a change */
static int bf16_overrun_in_slack(void) {
    __nv_bfloat16 *d = dev_bf16(N + 2);
    bf16_add_past_k<<<(N + 258) / 256, 256>>>(d, 0.0f, N + 2);
    cudaDeviceSynchronize();
    return 0;
}

/* ---- the runner --------------------------------------------------------------------------- */

typedef struct {
    const char *name, *env; /* env: "VAR=VALUE[ VAR=VALUE ...]" set in the child, or NULL */
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
    {"bf16: __float2bfloat16 to nearest even, NaN, inf", NULL, bf16_rounding, NULL},
    {"bf16: new memory holds NaN in both halves", NULL, unwritten_bf16_is_nan, NULL},
    {"bf16: GemmEx, C fp32 and bf16", NULL, gemm_bf16, NULL},
    {"bf16: strided batched GemmEx", NULL, gemm_bf16_batched, NULL},
    {"bf16: strided batched GemmEx, reversed, async", "DAP_EMU_REVERSE=1 DAP_EMU_ASYNC=1", gemm_bf16_batched,
     NULL},
    {"bf16: A and B of two types are not supported", NULL, gemm_bf16_mixed_types, NULL},
    {"bf16: FAST compute types are not supported", NULL, gemm_bf16_fast_compute, NULL},
    {"bf16: product past the end, in 2-byte elements", NULL, gemm_bf16_past_end, "runs 2 bytes past the end"},
    {"bf16: product with C on A", NULL, gemm_bf16_c_on_a, "C shares elements with A"},
    {"bf16: product of a misaligned matrix", NULL, gemm_bf16_misaligned,
     "not aligned to its 2-byte elements"},
    {"bf16: batch entries overlapping", NULL, gemm_bf16_batch_overlap, "write overlapping parts of C"},
    {"bf16: overrun into the rounding bytes", NULL, bf16_overrun_in_slack, "past the end of allocation"},
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
        if (c->env) { /* one or more VAR=VALUE, space-separated */
            char *e = strdup(c->env);
            for (char *v = strtok(e, " "); v; v = strtok(NULL, " ")) putenv(v);
        }
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
