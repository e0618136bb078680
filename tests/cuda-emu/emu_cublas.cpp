/*
 * emu_cublas.cpp (cuda-emu): cuBLAS's products on the CPU (cublas_v2.h). A product runs
 * as work on the handle's stream: the inputs are read into double (FP32 ones rounded to
 * TF32 / BF16 / FP16 first when the compute type or math mode asks for it, BF16 and FP16 ones
 * exactly), multiplied by OpenBLAS's dgemm (every float product exact in double, the sums in
 * double), and alpha, beta applied in double before the one rounding to C's type (float, or
 * BF16 / FP16 to nearest even). beta = 0 never reads C (cuBLAS's rule: C may hold NaN),
 * alpha = 0 or k = 0 never read A and B. The Ex calls take cublasGemmEx's type table
 * (supported() below).
 *
 * The checks: cuBLAS's own (sizes, leading dimensions, the handle, data and compute types),
 * then what a GPU would not notice: each matrix of each batch entry must lie in one device
 * allocation (its bytes counted in its element size) aligned to its element size, alpha and
 * beta must be host memory (the default pointer mode), C must share no element with A or B,
 * and the entries of a strided batch must not write the same element.
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

/* The element types of the products: their size, name, and exact value. */
size_t type_size(cudaDataType t) {
    return t == CUDA_R_32F ? 4 : 2;
}

const char *type_name(cudaDataType t) {
    return t == CUDA_R_32F ? "fp32" : t == CUDA_R_16BF ? "bf16" : "fp16";
}

double bf16_value(unsigned short b) {
    const unsigned int u = (unsigned int)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* v to BF16, rounded once (to nearest, ties to even): to float rounding to odd (exact or odd
 * last bit: the 16 bits below BF16's last then decide as v's would), then to nearest */
unsigned short bf16_bits(double v) {
    if (isnan(v)) return 0x7fffu; /* the canonical NaN */
    float f = (float)v;
    unsigned int u;
    memcpy(&u, &f, 4);
    if ((double)f != v) {
        if (fabs((double)f) > fabs(v)) u--; /* toward zero (an overflow to inf comes back to FLT_MAX) */
        u |= 1;
    }
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* One matrix operand: `rows` x `cols` elements of `type` stored column-major at leading
 * dimension ld (in elements, as the stride). */
struct operand {
    const char *p;
    cudaDataType type;
    int rows, cols, ld;
    long long stride;
    size_t size() const { return type_size(type); }
    /* the address of the element at offset e (elements) */
    const char *at(long long e) const { return p + e * (long long)size(); }
    /* the elements one entry spans, and the lowest and one-past-highest offsets over `batch` entries */
    long long span() const { return rows && cols ? (long long)ld * (cols - 1) + rows : 0; }
    long long hi(int batch) const { return span() + std::max(0LL, stride) * (batch - 1); }
    long long lo_all(int batch) const { return std::min(0LL, stride * (batch - 1)); }
};

/* Fails unless every element the operand names over the batch is inside one allocation (its
 * bytes counted in the operand's element size) and aligned to that size. */
emu::alloc *check_operand(const operand &o, int batch, const char *name) {
    if (o.span() == 0) return nullptr;
    char what[112];
    snprintf(what, sizeof what, "matrix %s (%s%s%d x %d, ld %d, %d entr%s at stride %lld)", name,
             o.type == CUDA_R_32F ? "" : type_name(o.type), o.type == CUDA_R_32F ? "" : ", ", o.rows, o.cols,
             o.ld, batch, batch == 1 ? "y" : "ies", o.stride);
    const long long lo = o.lo_all(batch), hi = o.hi(batch);
    emu::alloc *a = emu::find(o.p);
    if (!a) emu::fail("%s: %s is not device memory", what, emu::describe(o.p).c_str());
    if ((uintptr_t)o.p % o.size())
        emu::fail("%s: %s is not aligned to its %zu-byte elements", what, emu::describe(o.p).c_str(),
                  o.size());
    if (lo < 0)
        emu::device_range(o.at(lo), (size_t)(hi - lo) * o.size(), what);
    else
        emu::device_range(o.p, (size_t)hi * o.size(), what);
    return a;
}

/* Marks (set) or looks up (!set) the elements of entry b in a bitmap of `unit`-byte cells
 * whose cell 0 is at byte offset `origin` from o.p; *hit when one was marked already. */
void mark_elements(const operand &o, int b, std::vector<char> &bitmap, long long origin, size_t unit,
                   bool *hit, bool set) {
    const long long cells = (long long)(o.size() / unit);
    for (int j = 0; j < o.cols; j++) {
        long long start =
            ((o.stride * b + (long long)o.ld * j) * (long long)o.size() - origin) / (long long)unit;
        for (long long i = 0; i < (long long)o.rows * cells; i++) {
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

size_t gcd(size_t a, size_t b) {
    while (b) {
        size_t t = a % b;
        a = b, b = t;
    }
    return a;
}

/* Whether C's elements (over the batch) meet another operand's, or each other (same_c).
 * Address ranges are compared first; elements only when the ranges meet. */
bool overlaps(const operand &c, const operand &x, int batch, bool same_c) {
    const char *c_lo = c.at(c.lo_all(batch)), *c_hi = c.at(c.hi(batch)), *x_lo = c_lo, *x_hi = c_hi;
    size_t unit = c.size();
    if (same_c) {
        if (batch < 2 || c.span() == 0) return false;
        long long step = c.stride < 0 ? -c.stride : c.stride;
        if (step >= c.span()) return false;
    } else {
        if (c.span() == 0 || x.span() == 0) return false;
        x_lo = x.at(x.lo_all(batch)), x_hi = x.at(x.hi(batch));
        if (c_hi <= x_lo || x_hi <= c_lo) return false;
        /* cells that split no element of either (4 bytes for two FP32 operands) */
        unit = gcd(gcd(unit, x.size()), (size_t)(c.p > x.p ? c.p - x.p : x.p - c.p));
    }
    /* element by element over the union of the ranges (both in one allocation) */
    const char *base = std::min(c_lo, x_lo), *top = std::max(c_hi, x_hi);
    std::vector<char> bitmap((size_t)(top - base) / unit, 0);
    bool hit = false;
    for (int b = 0; b < batch; b++) mark_elements(c, b, bitmap, base - c.p, unit, &hit, true);
    if (same_c) return hit;
    hit = false;
    for (int b = 0; b < batch; b++) mark_elements(x, b, bitmap, base - x.p, unit, &hit, false);
    return hit;
}

/* Reads entry e of o into dst (o.rows x o.cols, packed) as doubles: FP32 rounded to `rnd`
 * first, BF16 and FP16 exactly. */
void load(double *dst, const operand &o, int e, rounding rnd) {
    const char *p = o.at(o.stride * e);
    for (int j = 0; j < o.cols; j++) {
        const char *col = p + (size_t)j * o.ld * o.size();
        double *d = dst + (size_t)j * o.rows;
        switch (o.type) {
        case CUDA_R_32F:
            for (int i = 0; i < o.rows; i++) d[i] = round_to(((const float *)col)[i], rnd);
            break;
        case CUDA_R_16BF:
            for (int i = 0; i < o.rows; i++) d[i] = bf16_value(((const unsigned short *)col)[i]);
            break;
        case CUDA_R_16F:
            for (int i = 0; i < o.rows; i++) d[i] = (double)((const _Float16 *)col)[i];
            break;
        }
    }
}

/* op(A) (m x k) op(B) (k x n) -> C (m x n), column-major, `batch` entries. Types are checked
 * by the caller (supported(): A and B alike; alpha, beta float). */
cublasStatus_t gemm(const char *api, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                    int n, int k, const float *alpha, const void *A, int lda, long long sa, const void *B,
                    int ldb, long long sb, cudaDataType ab, const float *beta, void *C, int ldc, long long sc,
                    cudaDataType ct, int batch, rounding rnd) {
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
    if (ab != CUDA_R_32F) rnd = R_NONE; /* BF16 / FP16 values are TF32 / BF16 values already */
    operand oa{(const char *)A, ab, na ? m : k, na ? k : m, lda, sa},
        ob{(const char *)B, ab, nb ? k : n, nb ? n : k, ldb, sb}, oc{(const char *)C, ct, m, n, ldc, sc};
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
    char what[160], types[32] = "";
    if (ab != CUDA_R_32F || ct != CUDA_R_32F)
        snprintf(types, sizeof types, " %s -> %s", type_name(ab), type_name(ct));
    snprintf(what, sizeof what, "%s (%s%s, %c%c, m %d n %d k %d, batch %d)", api, round_name(rnd), types,
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
            char *pc = (char *)oc.at(sc * e);
            if (reads_ab) {
                load(a.data(), oa, e, rnd);
                load(b.data(), ob, e, rnd);
                cblas_dgemm(CblasColMajor, na ? CblasNoTrans : CblasTrans, nb ? CblasNoTrans : CblasTrans, m,
                            n, k, 1.0, a.data(), oa.rows, b.data(), ob.rows, 0.0, acc.data(), m);
            }
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) {
                    const size_t at = (size_t)j * ldc + i;
                    double v = reads_ab ? (double)al * acc[(size_t)j * m + i] : 0.0;
                    switch (ct) {
                    case CUDA_R_32F: {
                        float *c = (float *)pc + at;
                        if (be != 0.0f) v += (double)be * (double)*c;
                        *c = (float)v;
                        break;
                    }
                    case CUDA_R_16BF: {
                        unsigned short *c = (unsigned short *)pc + at;
                        if (be != 0.0f) v += (double)be * bf16_value(*c);
                        *c = bf16_bits(v);
                        break;
                    }
                    case CUDA_R_16F: {
                        _Float16 *c = (_Float16 *)pc + at;
                        if (be != 0.0f) v += (double)be * (double)*c;
                        *c = (_Float16)v;
                        break;
                    }
                    }
                }
        }
    };
    emu::submit(st, std::move(w));
    return CUBLAS_STATUS_SUCCESS;
}

/* cublasGemmEx's table (cuBLAS documentation), for the types cublas_v2.h names: under
 * CUBLAS_COMPUTE_32F and CUBLAS_COMPUTE_32F_PEDANTIC, A and B of one type, FP32 with C FP32,
 * BF16 with C BF16 or FP32, FP16 with C FP16 or FP32; under the FAST_16F / FAST_16BF /
 * FAST_TF32 compute types, FP32 A, B and C only. Anything else: CUBLAS_STATUS_NOT_SUPPORTED. */
cublasStatus_t supported(cudaDataType at, cudaDataType bt, cudaDataType ct, cublasComputeType_t compute) {
    switch (compute) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
        if (at != bt) return CUBLAS_STATUS_NOT_SUPPORTED;
        if (at == CUDA_R_32F) return ct == CUDA_R_32F ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
        if (at == CUDA_R_16BF || at == CUDA_R_16F)
            return ct == at || ct == CUDA_R_32F ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
        return CUBLAS_STATUS_NOT_SUPPORTED;
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
        return at == CUDA_R_32F && bt == CUDA_R_32F && ct == CUDA_R_32F ? CUBLAS_STATUS_SUCCESS
                                                                        : CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

rounding rounding_for(cublasHandle_t h, cublasComputeType_t compute) {
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
    return gemm("cublasSgemm", handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, CUDA_R_32F, beta,
                C, ldc, 0, CUDA_R_32F, 1, rounding_for(handle, CUBLAS_COMPUTE_32F));
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k, const float *alpha,
                                         const float *A, int lda, long long strideA, const float *B, int ldb,
                                         long long strideB, const float *beta, float *C, int ldc,
                                         long long strideC, int batch) {
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    return gemm("cublasSgemmStridedBatched", handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb,
                strideB, CUDA_R_32F, beta, C, ldc, strideC, CUDA_R_32F, batch,
                rounding_for(handle, CUBLAS_COMPUTE_32F));
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType Atype, int lda,
                            const void *B, cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t) {
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (cublasStatus_t s = supported(Atype, Btype, Ctype, compute)) return s;
    return gemm("cublasGemmEx", handle, transa, transb, m, n, k, (const float *)alpha, A, lda, 0, B, ldb, 0,
                Atype, (const float *)beta, C, ldc, 0, Ctype, 1, rounding_for(handle, compute));
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k, const void *alpha,
                                          const void *A, cudaDataType Atype, int lda, long long strideA,
                                          const void *B, cudaDataType Btype, int ldb, long long strideB,
                                          const void *beta, void *C, cudaDataType Ctype, int ldc,
                                          long long strideC, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t) {
    if (!g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (cublasStatus_t s = supported(Atype, Btype, Ctype, compute)) return s;
    return gemm("cublasGemmStridedBatchedEx", handle, transa, transb, m, n, k, (const float *)alpha, A, lda,
                strideA, B, ldb, strideB, Atype, (const float *)beta, C, ldc, strideC, Ctype, batch,
                rounding_for(handle, compute));
}
