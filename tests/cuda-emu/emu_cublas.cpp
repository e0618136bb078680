/*
 * emu_cublas.cpp (cuda-emu): cuBLAS's products on the CPU (cublas_v2.h). A product runs
 * as work on the handle's stream: the inputs are read into double (rounded to TF32 / BF16 /
 * FP16 first when the compute type or math mode asks for it), multiplied by OpenBLAS's
 * dgemm (every float product exact in double, the sums in double), and alpha, beta applied
 * in double before the one rounding to float. beta = 0 never reads C (cuBLAS's rule: C may
 * hold NaN), alpha = 0 or k = 0 never read A and B.
 *
 * The checks: cuBLAS's own (sizes, leading dimensions, the handle, data and compute types),
 * then what a GPU would not notice: each matrix of each batch entry must lie in one device
 * allocation, alpha and beta must be host memory (the default pointer mode), C must share no
 * element with A or B, and the entries of a strided batch must not write the same element.
 */
#include "emu.h"

#include <cblas.h>
#include <cublas_v2.h>

#include <stdio.h>

#include <algorithm>
#include <memory>
#include <set>
#include <vector>

struct cublasContext {
    cudaStream_t stream;
    cublasMath_t math;
};

namespace {

std::set<cublasHandle_t> g_handles;

enum rounding { R_NONE, R_TF32, R_BF16, R_FP16 };

float round_to(float x, rounding r) {
    if (r == R_NONE || !isfinite(x)) return x;
    if (r == R_FP16) return (float)(_Float16)x;
    unsigned int u;
    memcpy(&u, &x, 4);
    const int drop = r == R_TF32 ? 13 : 16; /* 23 - 10 or 23 - 7 mantissa bits */
    const unsigned int half = (1u << (drop - 1)) - 1 + ((u >> drop) & 1); /* to nearest, ties to even */
    u = (u + half) & ~((1u << drop) - 1);
    memcpy(&x, &u, 4);
    return x;
}

const char *round_name(rounding r) {
    static const char *names[] = {"fp32", "tf32", "bf16", "fp16"};
    return names[r];
}

/* One matrix operand: `rows` x `cols` stored column-major at leading dimension ld. */
struct operand {
    const float *p;
    int rows, cols, ld;
    long long stride;
    /* the elements one entry spans, and the lowest and one-past-highest offsets over `batch` entries */
    long long span() const { return rows && cols ? (long long)ld * (cols - 1) + rows : 0; }
    long long hi(int batch) const { return span() + std::max(0LL, stride) * (batch - 1); }
    long long lo_all(int batch) const { return std::min(0LL, stride * (batch - 1)); }
};

/* Fails unless every element the operand names over the batch is inside one allocation. */
emu::alloc *check_operand(const operand &o, int batch, const char *name) {
    if (o.span() == 0) return nullptr;
    char what[96];
    snprintf(what, sizeof what, "matrix %s (%d x %d, ld %d, %d entr%s at stride %lld)", name, o.rows, o.cols,
             o.ld, batch, batch == 1 ? "y" : "ies", o.stride);
    const long long lo = o.lo_all(batch), hi = o.hi(batch);
    emu::alloc *a = emu::find(o.p);
    if (!a) emu::fail("%s: %s is not device memory", what, emu::describe(o.p).c_str());
    if (lo < 0)
        emu::device_range(o.p + lo, (size_t)(hi - lo) * sizeof(float), what);
    else
        emu::device_range(o.p, (size_t)hi * sizeof(float), what);
    return a;
}

/* Marks (set) or looks up (!set) the elements of entry b in a bitmap whose element 0 is
 * at offset `origin` from o.p; *hit when one was marked already. */
void mark_elements(const operand &o, int b, std::vector<char> &bitmap, long long origin, bool *hit,
                   bool set) {
    for (int j = 0; j < o.cols; j++) {
        long long start = o.stride * b + (long long)o.ld * j - origin;
        for (int i = 0; i < o.rows; i++) {
            char &c = bitmap[(size_t)(start + i)];
            if (set) {
                if (c) *hit = true;
                c = 1;
            } else if (c) {
                *hit = true;
            }
        }
    }
}

/* Whether C's elements (over the batch) meet another operand's, or each other (same_c).
 * Address ranges are compared first; elements only when the ranges meet. */
bool overlaps(const operand &c, const operand &x, int batch, bool same_c) {
    const char *c_lo = (const char *)(c.p + c.lo_all(batch)), *c_hi = (const char *)(c.p + c.hi(batch));
    if (same_c) {
        if (batch < 2 || c.span() == 0) return false;
        long long step = c.stride < 0 ? -c.stride : c.stride;
        if (step >= c.span()) return false;
    } else {
        if (c.span() == 0 || x.span() == 0) return false;
        const char *x_lo = (const char *)(x.p + x.lo_all(batch)), *x_hi = (const char *)(x.p + x.hi(batch));
        if (c_hi <= x_lo || x_hi <= c_lo) return false;
    }
    /* element by element over the union of the ranges (both are floats of one allocation) */
    const float *base = std::min(c.p + c.lo_all(batch), same_c ? c.p : x.p + x.lo_all(batch));
    const float *top = std::max(c.p + c.hi(batch), same_c ? c.p : x.p + x.hi(batch));
    std::vector<char> bitmap((size_t)(top - base), 0);
    bool hit = false;
    for (int b = 0; b < batch; b++) mark_elements(c, b, bitmap, base - c.p, &hit, true);
    if (same_c) return hit;
    hit = false;
    for (int b = 0; b < batch; b++) mark_elements(x, b, bitmap, base - x.p, &hit, false);
    return hit;
}

/* op(A) (m x k) op(B) (k x n) -> C (m x n), column-major, `batch` entries. */
cublasStatus_t gemm(const char *api, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                    int n, int k, const float *alpha, const float *A, int lda, long long sa, const float *B,
                    int ldb, long long sb, const float *beta, float *C, int ldc, long long sc, int batch,
                    rounding rnd) {
    emu::api_scope scope(api);
    if (!g_handles.count(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((unsigned)ta > CUBLAS_OP_C || (unsigned)tb > CUBLAS_OP_C || m < 0 || n < 0 || k < 0 || batch < 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    const bool na = ta == CUBLAS_OP_N, nb = tb == CUBLAS_OP_N;
    if (lda < std::max(1, na ? m : k) || ldb < std::max(1, nb ? k : n) || ldc < std::max(1, m))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!alpha || !beta) emu::fail("%s: alpha or beta is NULL", api);
    if (emu::find(alpha) || emu::find(beta))
        emu::fail("%s: alpha / beta point into device memory (the handle's pointer mode is host)", api);
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    const float al = *alpha, be = *beta;
    const bool reads_ab = al != 0.0f && k > 0;
    operand oa{A, na ? m : k, na ? k : m, lda, sa}, ob{B, nb ? k : n, nb ? n : k, ldb, sb},
        oc{C, m, n, ldc, sc};
    if (!reads_ab) oa.rows = ob.rows = 0; /* not read: not checked */
    std::vector<emu::alloc *> touch;
    for (emu::alloc *a :
         {check_operand(oa, batch, "A"), check_operand(ob, batch, "B"), check_operand(oc, batch, "C")})
        if (a && std::find(touch.begin(), touch.end(), a) == touch.end()) touch.push_back(a);
    if (overlaps(oc, oc, batch, true))
        emu::fail(
            "%s: the %d entries of the batch write overlapping parts of C (stride %lld, ldc %d, %d x %d)",
            api, batch, sc, ldc, m, n);
    if (reads_ab && (overlaps(oc, oa, batch, false) || overlaps(oc, ob, batch, false)))
        emu::fail("%s: C shares elements with %s (cuBLAS reads A and B while it writes C)", api,
                  overlaps(oc, oa, batch, false) ? "A" : "B");
    cudaStream_t st = h->stream;
    emu::work w;
    char what[160];
    snprintf(what, sizeof what, "%s (%s, %c%c, m %d n %d k %d, batch %d)", api, round_name(rnd),
             na ? 'N' : 'T', nb ? 'N' : 'T', m, n, k, batch);
    w.what = what;
    w.touches = touch;
    w.run = [=]() {
        /* kept from product to product: large fresh buffers would cost a page fault per page */
        static std::vector<double> a, b, acc;
        if (reads_ab) {
            a.resize(std::max(a.size(), (size_t)oa.rows * oa.cols));
            b.resize(std::max(b.size(), (size_t)ob.rows * ob.cols));
            acc.resize(std::max(acc.size(), (size_t)m * n));
        }
        for (int e = 0; e < batch; e++) {
            const float *pa = A + sa * e, *pb = B + sb * e;
            float *pc = C + sc * e;
            if (reads_ab) {
                for (int j = 0; j < oa.cols; j++)
                    for (int i = 0; i < oa.rows; i++)
                        a[(size_t)j * oa.rows + i] = round_to(pa[(size_t)j * lda + i], rnd);
                for (int j = 0; j < ob.cols; j++)
                    for (int i = 0; i < ob.rows; i++)
                        b[(size_t)j * ob.rows + i] = round_to(pb[(size_t)j * ldb + i], rnd);
                cblas_dgemm(CblasColMajor, na ? CblasNoTrans : CblasTrans, nb ? CblasNoTrans : CblasTrans, m,
                            n, k, 1.0, a.data(), oa.rows, b.data(), ob.rows, 0.0, acc.data(), m);
            }
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) {
                    float *c = pc + (size_t)j * ldc + i;
                    double v = reads_ab ? (double)al * acc[(size_t)j * m + i] : 0.0;
                    if (be != 0.0f) v += (double)be * (double)*c;
                    *c = (float)v;
                }
        }
    };
    emu::submit(st, std::move(w));
    return CUBLAS_STATUS_SUCCESS;
}

rounding rounding_for(cublasHandle_t h, cublasComputeType_t compute, cublasStatus_t *status) {
    *status = CUBLAS_STATUS_SUCCESS;
    switch (compute) {
    case CUBLAS_COMPUTE_32F:
        return h->math == CUBLAS_TF32_TENSOR_OP_MATH ? R_TF32 : R_NONE;
    case CUBLAS_COMPUTE_32F_PEDANTIC:
        return R_NONE;
    case CUBLAS_COMPUTE_32F_FAST_TF32:
        return R_TF32;
    case CUBLAS_COMPUTE_32F_FAST_16BF:
        return R_BF16;
    case CUBLAS_COMPUTE_32F_FAST_16F:
        return R_FP16;
    }
    *status = CUBLAS_STATUS_NOT_SUPPORTED;
    return R_NONE;
}

} // namespace

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    emu::api_scope scope("cublasCreate");
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    cublasHandle_t h = new cublasContext{nullptr, CUBLAS_DEFAULT_MATH};
    g_handles.insert(h);
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    emu::api_scope scope("cublasDestroy");
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    emu::drain_all(); /* cublasDestroy synchronises the device */
    g_handles.erase(handle);
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    emu::api_scope scope("cublasSetStream");
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!emu::valid_stream(stream)) emu::fail("cublasSetStream: %p is not a live stream", (void *)stream);
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t *stream) {
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
    *stream = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((unsigned)mode > CUBLAS_TF32_TENSOR_OP_MATH) return CUBLAS_STATUS_INVALID_VALUE;
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode) {
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->math;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                           int n, int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                           const float *beta, float *C, int ldc) {
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    cublasStatus_t s;
    rounding r = rounding_for(handle, CUBLAS_COMPUTE_32F, &s);
    return gemm("cublasSgemm", handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0,
                1, r);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k, const float *alpha,
                                         const float *A, int lda, long long strideA, const float *B, int ldb,
                                         long long strideB, const float *beta, float *C, int ldc,
                                         long long strideC, int batch) {
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    cublasStatus_t s;
    rounding r = rounding_for(handle, CUBLAS_COMPUTE_32F, &s);
    return gemm("cublasSgemmStridedBatched", handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb,
                strideB, beta, C, ldc, strideC, batch, r);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType Atype, int lda,
                            const void *B, cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t) {
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (Atype != CUDA_R_32F || Btype != CUDA_R_32F || Ctype != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    cublasStatus_t s;
    rounding r = rounding_for(handle, compute, &s);
    if (s) return s;
    return gemm("cublasGemmEx", handle, transa, transb, m, n, k, (const float *)alpha, (const float *)A, lda,
                0, (const float *)B, ldb, 0, (const float *)beta, (float *)C, ldc, 0, 1, r);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k, const void *alpha,
                                          const void *A, cudaDataType Atype, int lda, long long strideA,
                                          const void *B, cudaDataType Btype, int ldb, long long strideB,
                                          const void *beta, void *C, cudaDataType Ctype, int ldc,
                                          long long strideC, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t) {
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (Atype != CUDA_R_32F || Btype != CUDA_R_32F || Ctype != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    cublasStatus_t s;
    rounding r = rounding_for(handle, compute, &s);
    if (s) return s;
    return gemm("cublasGemmStridedBatchedEx", handle, transa, transb, m, n, k, (const float *)alpha,
                (const float *)A, lda, strideA, (const float *)B, ldb, strideB, (const float *)beta,
                (float *)C, ldc, strideC, batch, r);
}
