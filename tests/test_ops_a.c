/*
 * test_ops_a.c: linear, conv2d, pooling/upsampling and activations.
 * For each op: the forward against a naive double-precision loop, a finite-difference
 * check of every gradient through the loss L = sum(out * R) with a fixed random R, the
 * gradient rule of ops.h (parameter gradients accumulate, input gradients overwrite,
 * NULL skips) and the same results with 1 and 2 threads.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "ops/ops.h"
#include "test.h"

#define GRAD_TOL 1e-2    /* finite differences in float */
#define FWD_TOL 1e-5     /* float op vs double loop, relative (floor 1) */
#define THREAD_TOL 1e-6  /* 1 thread vs 2 threads */
#define GRAD_SAMPLES 48  /* gradcheck positions per array */

/* ---- helpers ----------------------------------------------------------------------- */

static float *randn(size_t n, uint64_t stream) {
    float *x = dap_alloc_f32(n ? n : 1);
    dap_rng r;
    dap_rng_init(&r, 1234, stream);
    dap_rng_normal(&r, x, n, 0.0f, 1.0f);
    return x;
}

static float *copy_f32(const float *x, size_t n) {
    float *y = dap_alloc_f32(n ? n : 1);
    memcpy(y, x, n * sizeof(float));
    return y;
}

static void fill_nan(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void to_float(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

/* A scalar loss for dap_test_gradcheck: run() writes the op's output into out. */
typedef struct gc_ctx {
    void (*run)(struct gc_ctx *g);
    float *out;
    const float *r;
    size_t nout;
} gc_ctx;

static double gc_loss(void *p) {
    gc_ctx *g = p;
    g->run(g);
    return dot_d(g->out, g->r, g->nout);
}

static void gradcheck(const char *label, gc_ctx *g, float *x, const float *analytic, size_t n,
                      float h) {
    double err = dap_test_gradcheck(label, gc_loss, g, x, analytic, n, GRAD_SAMPLES, h);
    CHECK_MSG(err <= GRAD_TOL, "%s: gradcheck rel err %g > %g", label, err, GRAD_TOL);
}

static void expect_close(const char *label, const float *got, const float *want, size_t n,
                         double tol) {
    double err = dap_test_compare(label, got, want, n, 1.0);
    CHECK_MSG(err <= tol, "%s: max rel err %g > %g", label, err, tol);
}

/* got == 2 * once, for the accumulation rule */
static void expect_doubled(const char *label, const float *got, const float *once, size_t n) {
    float *want = dap_alloc_f32(n);
    for (size_t i = 0; i < n; i++) want[i] = 2.0f * once[i];
    expect_close(label, got, want, n, 1e-5); /* sgemm's beta = 1 rounds differently */
    dap_free_aligned(want);
}

/* ---- linear ------------------------------------------------------------------------- */

typedef struct {
    gc_ctx g;
    float *inp, *w, *b;
    int n, ic, oc;
} linear_case;

static void linear_run(gc_ctx *g) {
    linear_case *t = (linear_case *)g;
    dap_linear_forward(g->out, t->inp, t->w, t->b, t->n, t->ic, t->oc);
}

static void linear_check(int n, int ic, int oc, int bias) {
    size_t nin = (size_t)n * ic, nw = (size_t)oc * ic, nout = (size_t)n * oc;
    printf("    linear n=%d ic=%d oc=%d bias=%d\n", n, ic, oc, bias);
    linear_case t = {{linear_run, dap_alloc_f32(nout), randn(nout, 4), nout},
                     randn(nin, 1), randn(nw, 2), bias ? randn(oc, 3) : NULL, n, ic, oc};
    /* forward vs naive */
    double *ref = calloc(nout, sizeof(double));
    for (int i = 0; i < n; i++)
        for (int o = 0; o < oc; o++) {
            double s = bias ? t.b[o] : 0.0;
            for (int k = 0; k < ic; k++)
                s += (double)t.inp[(size_t)i * ic + k] * t.w[(size_t)o * ic + k];
            ref[(size_t)i * oc + o] = s;
        }
    float *want = dap_alloc_f32(nout);
    to_float(want, ref, nout);
    linear_run(&t.g);
    expect_close("linear forward", t.g.out, want, nout, FWD_TOL);

    /* backward: dout = R; dinp starts as NaN (must be overwritten) */
    float *dinp = dap_alloc_f32(nin), *dw = dap_alloc_f32(nw), *db = dap_alloc_f32(oc);
    fill_nan(dinp, nin);
    dap_linear_backward(dinp, dw, bias ? db : NULL, t.g.r, t.inp, t.w, n, ic, oc);
    gradcheck("linear dinp", &t.g, t.inp, dinp, nin, 1e-2f);
    gradcheck("linear dw", &t.g, t.w, dw, nw, 1e-2f);
    if (bias) gradcheck("linear db", &t.g, t.b, db, oc, 1e-2f);

    /* second call: dw, db doubled; dinp the same (overwritten, not added) */
    float *dinp1 = copy_f32(dinp, nin), *dw1 = copy_f32(dw, nw), *db1 = copy_f32(db, oc);
    dap_linear_backward(dinp, dw, bias ? db : NULL, t.g.r, t.inp, t.w, n, ic, oc);
    expect_close("linear dinp overwrites", dinp, dinp1, nin, 0.0);
    expect_doubled("linear dw accumulates", dw, dw1, nw);
    if (bias) expect_doubled("linear db accumulates", db, db1, oc);
    /* NULL skips: dinp alone, then dw alone */
    fill_nan(dinp, nin);
    dap_linear_backward(dinp, NULL, NULL, t.g.r, t.inp, t.w, n, ic, oc);
    expect_close("linear dinp alone", dinp, dinp1, nin, 0.0);
    memset(dw, 0, nw * sizeof(float));
    dap_linear_backward(NULL, dw, NULL, t.g.r, t.inp, t.w, n, ic, oc);
    expect_close("linear dw alone", dw, dw1, nw, 0.0);
    if (bias) {
        memset(db, 0, (size_t)oc * sizeof(float));
        dap_linear_backward(NULL, NULL, db, t.g.r, t.inp, t.w, n, ic, oc);
        expect_close("linear db alone", db, db1, oc, 0.0);
    }

    free(ref);
    float *bufs[] = {t.g.out, (float *)t.g.r, t.inp, t.w, t.b, want, dinp, dw, db, dinp1, dw1, db1};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) dap_free_aligned(bufs[i]);
}

DAP_TEST(ops_linear) {
    linear_check(5, 7, 6, 1);
    linear_check(3, 1, 9, 0);
    linear_check(1, 13, 2, 1);
    linear_check(17, 33, 19, 1);
}

DAP_TEST(ops_threads_linear) {
    const int n = 256, ic = 130, oc = 300; /* n * oc above the parallel threshold */
    size_t nin = (size_t)n * ic, nw = (size_t)oc * ic, nout = (size_t)n * oc;
    float *inp = randn(nin, 11), *w = randn(nw, 12), *b = randn(oc, 13), *dout = randn(nout, 14);
    float *out[2], *dinp[2], *dw[2], *db[2];
    int saved = dap_get_threads();
    for (int k = 0; k < 2; k++) {
        dap_set_threads(k + 1);
        out[k] = dap_alloc_f32(nout), dinp[k] = dap_alloc_f32(nin);
        dw[k] = dap_alloc_f32(nw), db[k] = dap_alloc_f32(oc);
        dap_linear_forward(out[k], inp, w, b, n, ic, oc);
        dap_linear_backward(dinp[k], dw[k], db[k], dout, inp, w, n, ic, oc);
    }
    dap_set_threads(saved);
    expect_close("linear out 1 vs 2 threads", out[1], out[0], nout, THREAD_TOL);
    expect_close("linear dinp 1 vs 2 threads", dinp[1], dinp[0], nin, THREAD_TOL);
    expect_close("linear dw 1 vs 2 threads", dw[1], dw[0], nw, THREAD_TOL);
    expect_close("linear db 1 vs 2 threads", db[1], db[0], oc, THREAD_TOL);
    for (int k = 0; k < 2; k++) {
        dap_free_aligned(out[k]), dap_free_aligned(dinp[k]);
        dap_free_aligned(dw[k]), dap_free_aligned(db[k]);
    }
    dap_free_aligned(inp), dap_free_aligned(w), dap_free_aligned(b), dap_free_aligned(dout);
}

/* dap_gemm against a double loop for all four transpose combinations, with padded
 * leading dimensions, alpha and beta; the padding must stay untouched. */
static void gemm_check(int m, int n, int k) {
    const int pad = 3;
    size_t na0 = (size_t)m * (k + pad), na1 = (size_t)k * (m + pad); /* A as stored / transposed */
    size_t nb0 = (size_t)k * (n + pad), nb1 = (size_t)n * (k + pad);
    size_t na = na0 > na1 ? na0 : na1, nb = nb0 > nb1 ? nb0 : nb1;
    float *a = randn(na, 21), *b = randn(nb, 22);
    float *c0 = randn((size_t)m * (n + pad), 23);
    double worst = 0.0;
    int untouched = 1;
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
            float *c = copy_f32(c0, (size_t)m * ldc);
            dap_gemm(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 2.0f, c, ldc);
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) {
                    double s = 0.0, scale = 0.0; /* scale: the sum of |terms| */
                    for (int l = 0; l < k; l++) {
                        double av = ta ? a[(size_t)l * lda + i] : a[(size_t)i * lda + l];
                        double bv = tb ? b[(size_t)j * ldb + l] : b[(size_t)l * ldb + j];
                        s += av * bv;
                        scale += fabs(av * bv);
                    }
                    double c0v = c0[(size_t)i * ldc + j], want = 0.5 * s + 2.0 * c0v;
                    scale = 0.5 * scale + 2.0 * fabs(c0v);
                    worst = fmax(worst, fabs(c[(size_t)i * ldc + j] - want) / fmax(scale, 1e-30));
                }
                for (int j = n; j < ldc; j++)
                    untouched &= c[(size_t)i * ldc + j] == c0[(size_t)i * ldc + j];
            }
            dap_free_aligned(c);
        }
    }
    printf("    gemm %dx%dx%d (4 transposes): max err / sum|terms| %.3g\n", m, n, k, worst);
    CHECK_MSG(worst <= 1e-6, "gemm %dx%dx%d: max err / sum|terms| %g", m, n, k, worst);
    CHECK_MSG(untouched, "gemm %dx%dx%d wrote into the padding of C", m, n, k);
    dap_free_aligned(a), dap_free_aligned(b), dap_free_aligned(c0);
}

DAP_TEST(ops_gemm) {
    gemm_check(5, 7, 4);     /* one sgemm call */
    gemm_check(70, 300, 40); /* split into column blocks */
    gemm_check(300, 70, 40); /* split into row blocks */
    gemm_check(9, 11, 3000); /* one block, long k */
    /* k = 0: C = beta * C, and beta = 0 clears NaN */
    float a[1] = {0}, b[2] = {0}, cz[4] = {1, 2, NAN, 4};
    dap_gemm(0, 0, 2, 2, 0, 1.0f, a, 1, b, 2, 0.0f, cz, 2);
    CHECK(cz[0] == 0 && cz[1] == 0 && cz[2] == 0 && cz[3] == 0);
}

DAP_TEST(ops_threads_gemm) {
    /* shapes around the size where dap_gemm starts splitting C itself */
    static const int shapes[][3] = {
        {64, 64, 64}, {40, 100, 60}, {64, 64, 65}, {300, 70, 40}, {8, 8, 9000},
    };
    int saved = dap_get_threads();
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
        float *a = randn((size_t)m * k, 24), *b = randn((size_t)k * n, 25), *c[2];
        for (int th = 0; th < 2; th++) {
            dap_set_threads(th + 1);
            c[th] = dap_alloc_f32((size_t)m * n);
            dap_gemm(0, 1, m, n, k, 1.0f, a, k, b, k, 0.0f, c[th], n);
        }
        dap_set_threads(saved);
        char label[64];
        snprintf(label, sizeof label, "gemm %dx%dx%d 1 vs 2 threads", m, n, k);
        expect_close(label, c[1], c[0], (size_t)m * n, THREAD_TOL);
        dap_free_aligned(a), dap_free_aligned(b), dap_free_aligned(c[0]), dap_free_aligned(c[1]);
    }
}

/* ---- conv2d ------------------------------------------------------------------------- */

typedef struct {
    int n, c, h, w, oc, kh, kw, stride, pad, bias;
} conv_shape;

typedef struct {
    gc_ctx g;
    dap_conv2d_dims d;
    float *inp, *w, *b, *work;
} conv_case;

static void conv_run(gc_ctx *g) {
    conv_case *t = (conv_case *)g;
    dap_conv2d_forward(g->out, t->inp, t->w, t->b, &t->d, t->work);
}

/* The seven loops, in double; also the three gradients of L = sum(out * dout). */
static void conv_naive(double *out, double *dinp, double *dw, double *db, const float *inp,
                       const float *w, const float *b, const float *dout,
                       const dap_conv2d_dims *d) {
    size_t nin = (size_t)d->n * d->c * d->h * d->w, nw = (size_t)d->oc * d->c * d->kh * d->kw;
    memset(dinp, 0, nin * sizeof(double));
    memset(dw, 0, nw * sizeof(double));
    memset(db, 0, (size_t)d->oc * sizeof(double));
    for (int i = 0; i < d->n; i++)
        for (int o = 0; o < d->oc; o++)
            for (int oy = 0; oy < d->oh; oy++)
                for (int ox = 0; ox < d->ow; ox++) {
                    size_t oi = (((size_t)i * d->oc + o) * d->oh + oy) * d->ow + ox;
                    double s = b ? b[o] : 0.0, g = dout[oi];
                    db[o] += g;
                    for (int c = 0; c < d->c; c++)
                        for (int ky = 0; ky < d->kh; ky++)
                            for (int kx = 0; kx < d->kw; kx++) {
                                int iy = oy * d->stride - d->pad + ky;
                                int ix = ox * d->stride - d->pad + kx;
                                if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                                size_t ii = (((size_t)i * d->c + c) * d->h + iy) * d->w + ix;
                                size_t wi = (((size_t)o * d->c + c) * d->kh + ky) * d->kw + kx;
                                s += (double)inp[ii] * w[wi];
                                dinp[ii] += g * w[wi];
                                dw[wi] += g * inp[ii];
                            }
                    out[oi] = s;
                }
}

static void conv_check(const conv_shape *s, int algo) {
    conv_case t;
    dap_conv2d_dims *d = &t.d;
    dap_conv2d_dims_init(d, s->n, s->c, s->h, s->w, s->oc, s->kh, s->kw, s->stride, s->pad);
    d->algo = algo;
    size_t nin = (size_t)d->n * d->c * d->h * d->w, nw = (size_t)d->oc * d->c * d->kh * d->kw;
    size_t nout = (size_t)d->n * d->oc * d->oh * d->ow, nwork = dap_conv2d_work_floats(d);
    printf("    conv %s n=%d c=%d %dx%d oc=%d k=%dx%d s=%d p=%d bias=%d -> %dx%d (work %zu)\n",
           algo == DAP_CONV_WINOGRAD ? "winograd" : "im2col", d->n, d->c, d->h, d->w, d->oc,
           d->kh, d->kw, d->stride, d->pad, s->bias, d->oh, d->ow, nwork);
    t.g = (gc_ctx){conv_run, dap_alloc_f32(nout), randn(nout, 34), nout};
    t.inp = randn(nin, 31), t.w = randn(nw, 32), t.b = s->bias ? randn(d->oc, 33) : NULL;
    /* exact-size scratch with a NaN-filled guard behind it (ASan catches overruns too) */
    t.work = dap_alloc_f32(nwork + 16);
    fill_nan(t.work, nwork + 16);

    double *rout = malloc(nout * sizeof(double)), *rdinp = malloc(nin * sizeof(double));
    double *rdw = malloc(nw * sizeof(double)), *rdb = malloc((size_t)d->oc * sizeof(double));
    conv_naive(rout, rdinp, rdw, rdb, t.inp, t.w, t.b, t.g.r, d);
    float *want = dap_alloc_f32(nout + nin + nw + d->oc);
    float *want_dinp = want + nout, *want_dw = want_dinp + nin, *want_db = want_dw + nw;
    to_float(want, rout, nout), to_float(want_dinp, rdinp, nin);
    to_float(want_dw, rdw, nw), to_float(want_db, rdb, d->oc);

    conv_run(&t.g);
    expect_close("conv forward vs direct", t.g.out, want, nout, FWD_TOL);

    float *dinp = dap_alloc_f32(nin), *dw = dap_alloc_f32(nw), *db = dap_alloc_f32(d->oc);
    fill_nan(dinp, nin);
    dap_conv2d_backward(dinp, dw, s->bias ? db : NULL, t.g.r, t.inp, t.w, d, t.work);
    expect_close("conv dinp vs direct", dinp, want_dinp, nin, FWD_TOL);
    if (algo == DAP_CONV_WINOGRAD) {
        /* Winograd's dw sums transformed tiles (dU) whose entries are larger than dw's and
         * cancel in G^T dU G: its float error is small against the largest entry of dw,
         * not against every entry. The loss is linear in each input, so a longer
         * finite-difference step is exact and keeps the forward's rounding out. */
        float big = 1.0f;
        for (size_t i = 0; i < nw; i++) big = fmaxf(big, fabsf(want_dw[i]));
        double err = dap_test_compare("conv dw vs direct (of the largest)", dw, want_dw, nw, big);
        CHECK_MSG(err <= FWD_TOL, "conv dw: max err %g of the largest entry > %g", err, FWD_TOL);
    } else {
        expect_close("conv dw vs direct", dw, want_dw, nw, FWD_TOL);
    }
    if (s->bias) expect_close("conv db vs direct", db, want_db, d->oc, FWD_TOL);
    float step = algo == DAP_CONV_WINOGRAD ? 1e-1f : 1e-2f;
    gradcheck("conv dinp", &t.g, t.inp, dinp, nin, step);
    gradcheck("conv dw", &t.g, t.w, dw, nw, step);
    if (s->bias) gradcheck("conv db", &t.g, t.b, db, d->oc, step);
    for (size_t i = nwork; i < nwork + 16; i++) CHECK(isnan(t.work[i]));

    /* gradient rule: second call doubles dw/db and leaves dinp as it was */
    float *dinp1 = copy_f32(dinp, nin), *dw1 = copy_f32(dw, nw), *db1 = copy_f32(db, d->oc);
    dap_conv2d_backward(dinp, dw, s->bias ? db : NULL, t.g.r, t.inp, t.w, d, t.work);
    expect_close("conv dinp overwrites", dinp, dinp1, nin, 0.0);
    expect_doubled("conv dw accumulates", dw, dw1, nw);
    if (s->bias) expect_doubled("conv db accumulates", db, db1, d->oc);
    /* NULL skips */
    fill_nan(dinp, nin);
    dap_conv2d_backward(dinp, NULL, NULL, t.g.r, t.inp, t.w, d, t.work);
    expect_close("conv dinp alone", dinp, dinp1, nin, 0.0);
    memset(dw, 0, nw * sizeof(float));
    dap_conv2d_backward(NULL, dw, NULL, t.g.r, t.inp, t.w, d, t.work);
    expect_close("conv dw alone", dw, dw1, nw, 0.0);
    if (s->bias) {
        memset(db, 0, (size_t)d->oc * sizeof(float));
        dap_conv2d_backward(NULL, NULL, db, t.g.r, t.inp, t.w, d, t.work);
        expect_close("conv db alone", db, db1, d->oc, 0.0);
    }

    free(rout), free(rdinp), free(rdw), free(rdb);
    float *bufs[] = {t.g.out, (float *)t.g.r, t.inp, t.w, t.b, t.work, want, dinp, dw, db, dinp1,
                     dw1, db1};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) dap_free_aligned(bufs[i]);
}

DAP_TEST(ops_conv2d) {
    static const conv_shape shapes[] = {
        /* n  c   h   w  oc kh kw  s  p  bias */
        {2, 3, 7, 5, 4, 3, 3, 1, 1, 1},     /* 3x3 same padding, non-square image */
        {2, 2, 9, 6, 3, 3, 3, 2, 0, 1},     /* stride 2, no padding */
        {3, 2, 8, 10, 3, 4, 4, 2, 1, 1},    /* 4x4 stride 2 (downsampling) */
        {2, 4, 5, 3, 3, 1, 1, 1, 0, 1},     /* pointwise, batched */
        {1, 3, 32, 33, 2, 1, 1, 1, 0, 1},   /* pointwise, one image per sgemm: no im2col */
        {2, 3, 6, 7, 2, 1, 1, 2, 0, 0},     /* 1x1 stride 2 */
        {2, 2, 5, 4, 3, 2, 3, 1, 3, 1},     /* non-square kernel, padding > kernel */
        {2, 3, 11, 9, 2, 7, 7, 2, 3, 1},    /* 7x7 stride 2 pad 3 */
        {6, 2, 16, 16, 3, 3, 3, 1, 1, 1},   /* chunks of 4 images + a partial chunk of 2 */
        {2, 2, 33, 32, 3, 3, 3, 1, 1, 0},   /* one image per sgemm, im2col */
        {3, 2, 10, 4, 2, 3, 1, 3, 2, 1},    /* 3x1 kernel, stride 3 */
        {1, 2, 3, 3, 2, 5, 5, 1, 1, 1},     /* kernel covers the padded image: 1x1 output */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        conv_check(&shapes[i], DAP_CONV_IM2COL);
}

/* Winograd F(2x2, 3x3) against the same direct loops, gradients by finite differences:
 * odd sizes (partial 2x2 output tiles), planes smaller than a tile, several chunks with a
 * partial last one, channels below and above the automatic threshold. */
DAP_TEST(ops_conv2d_winograd) {
    static const conv_shape shapes[] = {
        /* n  c   h   w  oc kh kw  s  p  bias */
        {2, 3, 7, 5, 4, 3, 3, 1, 1, 1},    /* odd height and width */
        {1, 2, 1, 1, 3, 3, 3, 1, 1, 1},    /* 1x1 plane: one tile, mostly padding */
        {3, 2, 2, 3, 2, 3, 3, 1, 1, 0},    /* planes smaller than a 4x4 tile */
        {11, 2, 16, 16, 3, 3, 3, 1, 1, 1}, /* 64 tiles per image: chunks of 8 + 3 */
        {1, 2, 47, 45, 2, 3, 3, 1, 1, 1},  /* more tiles than a chunk in one image */
        {2, 2, 5, 131, 2, 3, 3, 1, 1, 1},  /* 66 tiles per row: two row segments */
        {3, 17, 6, 5, 18, 3, 3, 1, 1, 1},  /* channels above the automatic threshold */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        dap_conv2d_dims d;
        const conv_shape *s = &shapes[i];
        dap_conv2d_dims_init(&d, s->n, s->c, s->h, s->w, s->oc, s->kh, s->kw, s->stride, s->pad);
        CHECK(dap_conv2d_winograd_fits(&d));
        /* the automatic choice: Winograd only from 16 channels on both sides */
        CHECK(d.algo == (s->c >= 16 && s->oc >= 16 ? DAP_CONV_WINOGRAD : DAP_CONV_IM2COL));
        conv_check(s, DAP_CONV_WINOGRAD);
    }
    dap_conv2d_dims d;
    dap_conv2d_dims_init(&d, 2, 32, 8, 8, 32, 3, 3, 2, 1); /* stride 2: never Winograd */
    CHECK(!dap_conv2d_winograd_fits(&d) && d.algo == DAP_CONV_IM2COL);
    int old = dap_conv2d_set_winograd(0);
    dap_conv2d_dims_init(&d, 2, 32, 8, 8, 32, 3, 3, 1, 1);
    CHECK(d.algo == DAP_CONV_IM2COL);
    dap_conv2d_set_winograd(1);
    dap_conv2d_dims_init(&d, 2, 32, 8, 8, 32, 3, 3, 1, 1);
    CHECK(d.algo == DAP_CONV_WINOGRAD);
    dap_conv2d_set_winograd(old);
}

DAP_TEST(ops_threads_conv2d) {
    static const conv_shape shapes[] = {
        {3, 8, 33, 33, 16, 3, 3, 1, 1, 1},  /* one image per sgemm */
        {8, 16, 8, 8, 32, 3, 3, 2, 1, 1},   /* batched chunk */
        {2, 32, 32, 32, 16, 1, 1, 1, 0, 1}, /* pointwise direct */
        {8, 16, 6, 6, 24, 1, 1, 1, 0, 1},   /* pointwise batched */
        {4, 4, 20, 20, 8, 4, 4, 2, 1, 1},   /* 4x4 stride 2 */
        {64, 8, 8, 8, 96, 3, 3, 1, 1, 1},   /* batched, large enough for parallel copies */
        {24, 32, 9, 7, 24, 3, 3, 1, 1, 1},  /* Winograd (chosen automatically), 2 chunks */
        {2, 16, 40, 40, 16, 3, 3, 1, 1, 0}, /* Winograd, one image per chunk */
    };
    int saved = dap_get_threads();
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const conv_shape *s = &shapes[si];
        dap_conv2d_dims d;
        dap_conv2d_dims_init(&d, s->n, s->c, s->h, s->w, s->oc, s->kh, s->kw, s->stride, s->pad);
        size_t nin = (size_t)d.n * d.c * d.h * d.w, nw = (size_t)d.oc * d.c * d.kh * d.kw;
        size_t nout = (size_t)d.n * d.oc * d.oh * d.ow;
        float *inp = randn(nin, 41), *w = randn(nw, 42), *b = randn(d.oc, 43);
        float *dout = randn(nout, 44), *work = dap_alloc_f32(dap_conv2d_work_floats(&d) + 1);
        float *res[2];
        for (int k = 0; k < 2; k++) {
            dap_set_threads(k + 1);
            res[k] = dap_alloc_f32(nout + nin + nw + d.oc);
            float *out = res[k], *dinp = out + nout, *dw = dinp + nin, *db = dw + nw;
            dap_conv2d_forward(out, inp, w, b, &d, work);
            dap_conv2d_backward(dinp, dw, db, dout, inp, w, &d, work);
        }
        dap_set_threads(saved);
        printf("    conv n=%d c=%d %dx%d oc=%d k=%d s=%d p=%d\n", d.n, d.c, d.h, d.w, d.oc, d.kh,
               d.stride, d.pad);
        expect_close("conv out, dinp, dw, db: 1 vs 2 threads", res[1], res[0],
                     nout + nin + nw + d.oc, THREAD_TOL);
        dap_free_aligned(res[0]), dap_free_aligned(res[1]);
        dap_free_aligned(inp), dap_free_aligned(w), dap_free_aligned(b);
        dap_free_aligned(dout), dap_free_aligned(work);
    }
}

/* ---- pooling and upsampling --------------------------------------------------------- */

enum { POOL_AVG, POOL_MAX, POOL_GLOBAL, POOL_UP };

typedef struct {
    gc_ctx g;
    int kind, n, c, h, w, k, s; /* s: stride, or the factor for POOL_UP */
    float *inp;
    int *argmax;
} pool_case;

static void pool_out_size(int kind, int h, int w, int k, int s, int *oh, int *ow) {
    switch (kind) {
    case POOL_AVG:
    case POOL_MAX: *oh = (h - k) / s + 1, *ow = (w - k) / s + 1; break;
    case POOL_GLOBAL: *oh = 1, *ow = 1; break;
    default: *oh = h * s, *ow = w * s; break;
    }
}

static void pool_forward(const pool_case *t, float *out, int *argmax) {
    switch (t->kind) {
    case POOL_AVG: dap_avgpool2d_forward(out, t->inp, t->n, t->c, t->h, t->w, t->k, t->s); break;
    case POOL_MAX:
        dap_maxpool2d_forward(out, argmax, t->inp, t->n, t->c, t->h, t->w, t->k, t->s);
        break;
    case POOL_GLOBAL: dap_global_avgpool_forward(out, t->inp, t->n, t->c, t->h * t->w); break;
    default: dap_upsample_nearest_forward(out, t->inp, t->n, t->c, t->h, t->w, t->s); break;
    }
}

static void pool_backward(const pool_case *t, float *dinp, const float *dout, const int *argmax) {
    switch (t->kind) {
    case POOL_AVG: dap_avgpool2d_backward(dinp, dout, t->n, t->c, t->h, t->w, t->k, t->s); break;
    case POOL_MAX:
        dap_maxpool2d_backward(dinp, dout, argmax, t->n, t->c, t->h, t->w, t->k, t->s);
        break;
    case POOL_GLOBAL: dap_global_avgpool_backward(dinp, dout, t->n, t->c, t->h * t->w); break;
    default: dap_upsample_nearest_backward(dinp, dout, t->n, t->c, t->h, t->w, t->s); break;
    }
}

static void pool_run(gc_ctx *g) {
    pool_case *t = (pool_case *)g;
    pool_forward(t, g->out, t->argmax);
}

/* Direct double loops for all four ops. */
static void pool_naive(const pool_case *t, double *out, int *argmax) {
    int oh, ow;
    pool_out_size(t->kind, t->h, t->w, t->k, t->s, &oh, &ow);
    for (int pl = 0; pl < t->n * t->c; pl++) {
        const float *x = t->inp + (size_t)pl * t->h * t->w;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                size_t oi = ((size_t)pl * oh + oy) * ow + ox;
                double acc = 0.0, best = -INFINITY;
                int bi = -1;
                if (t->kind == POOL_UP) {
                    out[oi] = x[(oy / t->s) * t->w + ox / t->s];
                    continue;
                }
                int global = t->kind == POOL_GLOBAL;
                int y0 = global ? 0 : oy * t->s, x0 = global ? 0 : ox * t->s;
                int kh = global ? t->h : t->k, kw = global ? t->w : t->k;
                for (int y = y0; y < y0 + kh; y++)
                    for (int xx = x0; xx < x0 + kw; xx++) {
                        double v = x[y * t->w + xx];
                        acc += v;
                        if (v > best) best = v, bi = y * t->w + xx;
                    }
                out[oi] = t->kind == POOL_MAX ? best : acc / (kh * kw);
                if (argmax) argmax[oi] = bi;
            }
    }
}

static void pool_check(int kind, int n, int c, int h, int w, int k, int s) {
    static const char *names[] = {"avgpool", "maxpool", "global avgpool", "upsample"};
    char label[96];
    int oh, ow;
    pool_out_size(kind, h, w, k, s, &oh, &ow);
    size_t nin = (size_t)n * c * h * w, nout = (size_t)n * c * oh * ow;
    printf("    %s n=%d c=%d %dx%d k=%d s=%d -> %dx%d\n", names[kind], n, c, h, w, k, s, oh, ow);
    pool_case t = {{pool_run, dap_alloc_f32(nout), randn(nout, 52), nout}, kind, n, c, h, w, k, s,
                   randn(nin, 51), dap_malloc(nout * sizeof(int))};
    if (kind == POOL_MAX) { /* distinct values 0.05 apart: a 0.01 step never flips a max */
        int *perm = dap_malloc(nin * sizeof(int));
        for (size_t i = 0; i < nin; i++) perm[i] = (int)i;
        dap_rng r;
        dap_rng_init(&r, 7, 53);
        dap_rng_shuffle(&r, perm, nin);
        for (size_t i = 0; i < nin; i++) t.inp[i] = 0.05f * (float)perm[i] - 0.025f * (float)nin;
        free(perm);
    }
    double *ref = malloc(nout * sizeof(double));
    int *ref_am = dap_malloc(nout * sizeof(int));
    pool_naive(&t, ref, ref_am);
    float *want = dap_alloc_f32(nout);
    to_float(want, ref, nout);
    pool_run(&t.g);
    snprintf(label, sizeof label, "%s forward vs direct", names[kind]);
    expect_close(label, t.g.out, want, nout, FWD_TOL);
    if (kind == POOL_MAX) {
        int bad = 0;
        for (size_t i = 0; i < nout; i++) bad += t.argmax[i] != ref_am[i];
        CHECK_MSG(bad == 0, "maxpool: %d argmax entries differ", bad);
    }
    float *dinp = dap_alloc_f32(nin);
    fill_nan(dinp, nin); /* must be overwritten */
    pool_backward(&t, dinp, t.g.r, t.argmax);
    snprintf(label, sizeof label, "%s dinp", names[kind]);
    gradcheck(label, &t.g, t.inp, dinp, nin, 1e-2f);
    pool_backward(&t, NULL, t.g.r, t.argmax); /* NULL skips */

    free(ref), free(ref_am), free(t.argmax);
    dap_free_aligned(t.g.out), dap_free_aligned((float *)t.g.r), dap_free_aligned(t.inp);
    dap_free_aligned(want), dap_free_aligned(dinp);
}

DAP_TEST(ops_pool) {
    pool_check(POOL_AVG, 2, 3, 7, 5, 2, 2);
    pool_check(POOL_AVG, 2, 3, 8, 6, 2, 2); /* even: no border to clear */
    pool_check(POOL_AVG, 1, 2, 7, 7, 3, 2); /* overlapping windows */
    pool_check(POOL_AVG, 2, 1, 6, 4, 3, 1);
    pool_check(POOL_MAX, 2, 3, 7, 5, 2, 2);
    pool_check(POOL_MAX, 1, 2, 7, 7, 3, 2);
    pool_check(POOL_MAX, 2, 1, 6, 4, 3, 1);
    pool_check(POOL_GLOBAL, 3, 4, 2, 5, 0, 0);
    pool_check(POOL_GLOBAL, 2, 2, 1, 1, 0, 0);
    pool_check(POOL_UP, 2, 3, 3, 5, 0, 2);
    pool_check(POOL_UP, 1, 2, 4, 3, 0, 3);
    pool_check(POOL_UP, 1, 1, 2, 2, 0, 1);
    /* maxpool: NaN wins its window (as in PyTorch), ties go to the first element */
    float x[4] = {1.0f, NAN, 3.0f, 0.5f}, t[4] = {2.0f, 2.0f, 1.0f, 2.0f}, y = 0.0f;
    int am = -1;
    dap_maxpool2d_forward(&y, &am, x, 1, 1, 2, 2, 2, 2);
    CHECK_MSG(isnan(y) && am == 1, "maxpool with NaN: %g at %d", y, am);
    dap_maxpool2d_forward(&y, &am, t, 1, 1, 2, 2, 2, 2);
    CHECK_MSG(y == 2.0f && am == 0, "maxpool tie: %g at %d", y, am);
}

DAP_TEST(ops_threads_pool) {
    const int n = 8, c = 32, h = 22, w = 20; /* above the parallel threshold */
    int saved = dap_get_threads();
    for (int kind = POOL_AVG; kind <= POOL_UP; kind++) {
        int k = kind == POOL_GLOBAL || kind == POOL_UP ? 0 : 3, s = kind == POOL_GLOBAL ? 0 : 2;
        int oh, ow;
        pool_out_size(kind, h, w, k, s, &oh, &ow);
        size_t nin = (size_t)n * c * h * w, nout = (size_t)n * c * oh * ow;
        pool_case t = {{pool_run, NULL, NULL, nout}, kind, n, c, h, w, k, s, randn(nin, 61), NULL};
        float *dout = randn(nout, 62), *res[2];
        int *am = dap_malloc(nout * sizeof(int));
        for (int th = 0; th < 2; th++) {
            dap_set_threads(th + 1);
            res[th] = dap_alloc_f32(nout + nin);
            pool_forward(&t, res[th], am);
            pool_backward(&t, res[th] + nout, dout, am);
        }
        dap_set_threads(saved);
        expect_close(kind == POOL_AVG   ? "avgpool 1 vs 2 threads"
                     : kind == POOL_MAX ? "maxpool 1 vs 2 threads"
                     : kind == POOL_GLOBAL ? "global avgpool 1 vs 2 threads"
                                           : "upsample 1 vs 2 threads",
                     res[1], res[0], nout + nin, THREAD_TOL);
        dap_free_aligned(res[0]), dap_free_aligned(res[1]), dap_free_aligned(dout);
        dap_free_aligned(t.inp), free(am);
    }
}

/* ---- activations -------------------------------------------------------------------- */

enum { ACT_GELU, ACT_SILU, ACT_RELU };
static const char *act_names[] = {"gelu", "silu", "relu"};

static void act_forward(int kind, float *out, const float *inp, size_t n) {
    if (kind == ACT_GELU) dap_gelu_forward(out, inp, n);
    else if (kind == ACT_SILU) dap_silu_forward(out, inp, n);
    else dap_relu_forward(out, inp, n);
}

static void act_backward(int kind, float *dinp, const float *dout, const float *inp, size_t n) {
    if (kind == ACT_GELU) dap_gelu_backward(dinp, dout, inp, n);
    else if (kind == ACT_SILU) dap_silu_backward(dinp, dout, inp, n);
    else dap_relu_backward(dinp, dout, inp, n);
}

/* value and derivative in double; GELU exactly as PyTorch's approximate='tanh' */
static void act_ref(int kind, double x, double *f, double *df) {
    if (kind == ACT_GELU) {
        const double k0 = sqrt(2.0 / M_PI), k1 = 0.044715;
        double u = k0 * (x + k1 * x * x * x), t = tanh(u);
        *f = 0.5 * x * (1.0 + t);
        *df = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k0 * (1.0 + 3.0 * k1 * x * x);
    } else if (kind == ACT_SILU) {
        double s = 1.0 / (1.0 + exp(-x));
        *f = x * s;
        *df = s * (1.0 + x * (1.0 - s));
    } else {
        *f = x > 0 ? x : 0.0;
        *df = x > 0 ? 1.0 : 0.0;
    }
}

typedef struct {
    gc_ctx g;
    int kind;
    float *inp;
} act_case;

static void act_run(gc_ctx *g) {
    act_case *t = (act_case *)g;
    act_forward(t->kind, g->out, t->inp, g->nout);
}

DAP_TEST(ops_act) {
    char label[96];
    /* a dense sweep over [-12, 12] plus far tails, against the double formulas */
    const size_t nsweep = 4801;
    const float tails[] = {-100.0f, -60.0f, -30.0f, -15.0f, 0.0f,  -1e-8f,
                           1e-8f,   15.0f,  30.0f,  100.0f, 1e30f, -1e30f};
    const size_t ntail = sizeof tails / sizeof *tails, nx = nsweep + ntail;
    float *x = dap_alloc_f32(nx), *ones = dap_alloc_f32(nx);
    for (size_t i = 0; i < nsweep; i++) x[i] = -12.0f + 24.0f * (float)i / (float)(nsweep - 1);
    memcpy(x + nsweep, tails, sizeof tails);
    for (size_t i = 0; i < nx; i++) ones[i] = 1.0f;
    float *got = dap_alloc_f32(nx), *dgot = dap_alloc_f32(nx);
    float *want = dap_alloc_f32(nx), *dwant = dap_alloc_f32(nx);
    for (int kind = ACT_GELU; kind <= ACT_RELU; kind++) {
        for (size_t i = 0; i < nx; i++) {
            double f, df;
            act_ref(kind, x[i], &f, &df);
            want[i] = (float)f, dwant[i] = (float)df;
        }
        act_forward(kind, got, x, nx);
        fill_nan(dgot, nx);
        act_backward(kind, dgot, ones, x, nx);
        snprintf(label, sizeof label, "%s forward vs double", act_names[kind]);
        expect_close(label, got, want, nx, 1e-6);
        snprintf(label, sizeof label, "%s derivative vs double", act_names[kind]);
        expect_close(label, dgot, dwant, nx, 1e-6);

        /* finite differences through L = sum(act(x) * R) */
        const size_t n = 257;
        act_case t = {{act_run, dap_alloc_f32(n), randn(n, 72), n}, kind, randn(n, 71)};
        for (size_t i = 0; i < n; i++) { /* ReLU: stay clear of the kink */
            float v = 3.0f * t.inp[i];
            t.inp[i] = fabsf(v) < 0.05f ? (v < 0 ? -0.05f : 0.05f) : v;
        }
        float *dinp = dap_alloc_f32(n);
        fill_nan(dinp, n);
        act_backward(kind, dinp, t.g.r, t.inp, n);
        snprintf(label, sizeof label, "%s dinp", act_names[kind]);
        gradcheck(label, &t.g, t.inp, dinp, n, kind == ACT_RELU ? 1e-2f : 1e-3f);
        act_backward(kind, NULL, t.g.r, t.inp, n); /* NULL skips */
        dap_free_aligned(t.g.out), dap_free_aligned((float *)t.g.r), dap_free_aligned(t.inp);
        dap_free_aligned(dinp);
    }
    /* NaN propagates through value and derivative */
    for (int kind = ACT_GELU; kind <= ACT_SILU; kind++) {
        float nan_in = NAN, one = 1.0f, v = 0.0f, dv = 0.0f;
        act_forward(kind, &v, &nan_in, 1);
        act_backward(kind, &dv, &one, &nan_in, 1);
        CHECK_MSG(isnan(v) && isnan(dv), "%s(NaN) = %g, derivative %g", act_names[kind], v, dv);
    }
    dap_free_aligned(x), dap_free_aligned(ones), dap_free_aligned(got), dap_free_aligned(dgot);
    dap_free_aligned(want), dap_free_aligned(dwant);
}

DAP_TEST(ops_threads_act) {
    const size_t n = 200003; /* odd, above the parallel threshold */
    float *x = randn(n, 81), *dout = randn(n, 82);
    for (size_t i = 0; i < n; i++) x[i] *= 4.0f;
    int saved = dap_get_threads();
    for (int kind = ACT_GELU; kind <= ACT_RELU; kind++) {
        float *res[2];
        for (int th = 0; th < 2; th++) {
            dap_set_threads(th + 1);
            res[th] = dap_alloc_f32(2 * n);
            act_forward(kind, res[th], x, n);
            act_backward(kind, res[th] + n, dout, x, n);
        }
        dap_set_threads(saved);
        char label[64];
        snprintf(label, sizeof label, "%s 1 vs 2 threads", act_names[kind]);
        expect_close(label, res[1], res[0], 2 * n, 0.0);
        dap_free_aligned(res[0]), dap_free_aligned(res[1]);
    }
    dap_free_aligned(x), dap_free_aligned(dout);
}
