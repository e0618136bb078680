/*
 * test_ops_b.c: norm, attention, modulate and loss ops. For each op: the forward against
 * a plain double-precision loop, finite-difference gradients of every input and
 * parameter (loss L = sum(out * R) with a fixed random R, or the loss itself), the
 * gradient rule (parameter grads accumulate, input grads overwrite, NULL skips), and
 * bit-identical results with 1 and 2 threads.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "ops/ops.h"
#include "test.h"

#define GRAD_TOL 1e-2
#define FWD_TOL 1e-4

/* ---- helpers ------------------------------------------------------------------------ */

static float *randn(size_t n, uint64_t stream, float std) {
    float *x = dap_alloc_f32(n);
    dap_rng r;
    dap_rng_init(&r, 1234, stream);
    dap_rng_normal(&r, x, n, 0.0f, std);
    return x;
}

static float *filled(size_t n, float v) {
    float *x = dap_alloc_f32(n);
    for (size_t i = 0; i < n; i++) x[i] = v;
    return x;
}

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Analytic gradient of a parameter that was pre-filled with `base` (the accumulate
 * rule): returns a fresh array g - base. */
static float *minus(const float *g, size_t n, float base) {
    float *o = dap_alloc_f32(n);
    for (size_t i = 0; i < n; i++) o[i] = g[i] - base;
    return o;
}

static void check_grad(const char *label, dap_test_loss_fn f, void *ctx, float *x,
                       const float *analytic, size_t n, float h) {
    double e = dap_test_gradcheck(label, f, ctx, x, analytic, n, 64, h);
    CHECK_MSG(e <= GRAD_TOL, "%s: gradcheck rel err %g > %g", label, e, GRAD_TOL);
}

static void check_fwd(const char *label, const float *got, const float *want, size_t n) {
    double e = dap_test_compare(label, got, want, n, 1e-2);
    CHECK_MSG(e <= FWD_TOL, "%s: rel err %g > %g", label, e, FWD_TOL);
}

static void check_same(const char *label, const float *a, const float *b, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    printf("    %-40s %zu of %zu values differ bitwise\n", label, bad, n);
    CHECK_MSG(bad == 0, "%s: %zu values differ", label, bad);
}

/* An input gradient must overwrite: run backward into a buffer of garbage and compare
 * with a run into zeros. */
static void poison(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 1e30f;
}

/* ---- LayerNorm -------------------------------------------------------------------------- */

typedef struct {
    int n, c;
    float *x, *w, *b, *out, *mean, *rstd, *r;
    int affine;
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *k = p;
    dap_layernorm_forward(k->out, k->mean, k->rstd, k->x, k->affine ? k->w : NULL,
                          k->affine ? k->b : NULL, k->n, k->c, 1e-5f);
    return dot_d(k->out, k->r, (size_t)k->n * k->c);
}

DAP_TEST(ops_b_layernorm) {
    for (int affine = 0; affine <= 1; affine++) {
        ln_ctx k = {.n = 37, .c = 70, .affine = affine};
        size_t nc = (size_t)k.n * k.c;
        k.x = randn(nc, 1, 2.0f);
        for (size_t i = 0; i < nc; i++) k.x[i] += 3.0f; /* an offset the stats must remove */
        k.w = randn(k.c, 2, 1.0f);
        k.b = randn(k.c, 3, 1.0f);
        k.r = randn(nc, 4, 1.0f);
        k.out = dap_alloc_f32(nc);
        k.mean = dap_alloc_f32(k.n);
        k.rstd = dap_alloc_f32(k.n);
        ln_loss(&k);
        /* forward against a double loop; mean 0 / var 1 without affine */
        float *want = dap_alloc_f32(nc);
        double worst_m = 0, worst_v = 0;
        for (int i = 0; i < k.n; i++) {
            double m = 0, v = 0;
            for (int j = 0; j < k.c; j++) m += k.x[i * k.c + j];
            m /= k.c;
            for (int j = 0; j < k.c; j++) v += pow(k.x[i * k.c + j] - m, 2);
            v /= k.c;
            double om = 0, ov = 0;
            for (int j = 0; j < k.c; j++) {
                double y = (k.x[i * k.c + j] - m) / sqrt(v + 1e-5);
                if (affine) y = y * k.w[j] + k.b[j];
                want[i * k.c + j] = (float)y;
                om += k.out[i * k.c + j];
            }
            om /= k.c;
            for (int j = 0; j < k.c; j++) ov += pow(k.out[i * k.c + j] - om, 2);
            ov /= k.c;
            worst_m = fmax(worst_m, fabs(om));
            worst_v = fmax(worst_v, fabs(ov - 1.0));
        }
        check_fwd(affine ? "layernorm affine fwd" : "layernorm fwd", k.out, want, nc);
        if (!affine) {
            printf("    layernorm rows: max |mean| %.3g, max |var - 1| %.3g\n", worst_m, worst_v);
            CHECK(worst_m < 1e-5 && worst_v < 1e-3);
        }
        /* backward: param grads accumulate onto 0.5, dinp overwrites garbage */
        float *dx = dap_alloc_f32(nc), *dw = filled(k.c, 0.5f), *db = filled(k.c, 0.5f);
        poison(dx, nc);
        dap_layernorm_backward(dx, affine ? dw : NULL, affine ? db : NULL, k.r, k.x,
                               affine ? k.w : NULL, k.mean, k.rstd, k.n, k.c);
        check_grad(affine ? "layernorm affine dinp" : "layernorm dinp", ln_loss, &k, k.x, dx, nc,
                   1e-2f);
        if (affine) {
            float *gw = minus(dw, k.c, 0.5f), *gb = minus(db, k.c, 0.5f);
            check_grad("layernorm dw", ln_loss, &k, k.w, gw, k.c, 1e-2f);
            check_grad("layernorm db", ln_loss, &k, k.b, gb, k.c, 1e-2f);
            /* NULL dinp still gives the same parameter grads */
            float *dw2 = filled(k.c, 0.5f), *db2 = filled(k.c, 0.5f);
            dap_layernorm_backward(NULL, dw2, db2, k.r, k.x, k.w, k.mean, k.rstd, k.n, k.c);
            check_same("layernorm dw with NULL dinp", dw2, dw, k.c);
            dap_free_aligned(gw), dap_free_aligned(gb), dap_free_aligned(dw2);
            dap_free_aligned(db2);
        } else {
            CHECK(dw[0] == 0.5f && db[0] == 0.5f); /* NULL skipped, untouched */
        }
        dap_free_aligned(want), dap_free_aligned(dx), dap_free_aligned(dw);
        dap_free_aligned(db), dap_free_aligned(k.x), dap_free_aligned(k.w);
        dap_free_aligned(k.b), dap_free_aligned(k.r), dap_free_aligned(k.out);
        dap_free_aligned(k.mean), dap_free_aligned(k.rstd);
    }
}

/* ---- GroupNorm --------------------------------------------------------------------------- */

typedef struct {
    int n, c, hw, g;
    float *x, *w, *b, *out, *mean, *rstd, *r;
} gn_ctx;

static double gn_loss(void *p) {
    gn_ctx *k = p;
    dap_groupnorm_forward(k->out, k->mean, k->rstd, k->x, k->w, k->b, k->n, k->c, k->hw, k->g,
                          1e-5f);
    return dot_d(k->out, k->r, (size_t)k->n * k->c * k->hw);
}

static void groupnorm_case(int n, int c, int hw, int g, int affine) {
    printf("    -- groupnorm N=%d C=%d HW=%d G=%d%s\n", n, c, hw, g, affine ? " affine" : "");
    gn_ctx k = {.n = n, .c = c, .hw = hw, .g = g};
    size_t sz = (size_t)n * c * hw;
    int cg = c / g;
    k.x = randn(sz, 10, 1.5f);
    for (size_t i = 0; i < sz; i++) k.x[i] -= 2.0f;
    float *w = randn(c, 11, 1.0f), *b = randn(c, 12, 1.0f);
    k.w = affine ? w : NULL;
    k.b = affine ? b : NULL;
    k.r = randn(sz, 13, 1.0f);
    k.out = dap_alloc_f32(sz);
    k.mean = dap_alloc_f32((size_t)n * g);
    k.rstd = dap_alloc_f32((size_t)n * g);
    gn_loss(&k);
    float *want = dap_alloc_f32(sz);
    double worst_m = 0, worst_v = 0;
    for (int ng = 0; ng < n * g; ng++) {
        const float *x = k.x + (size_t)ng * cg * hw;
        const float *o = k.out + (size_t)ng * cg * hw;
        double m = 0, v = 0, om = 0, ov = 0;
        int cnt = cg * hw;
        for (int i = 0; i < cnt; i++) m += x[i], om += o[i];
        m /= cnt, om /= cnt;
        for (int i = 0; i < cnt; i++) v += pow(x[i] - m, 2), ov += pow(o[i] - om, 2);
        v /= cnt, ov /= cnt;
        for (int i = 0; i < cnt; i++) {
            int ch = (ng % g) * cg + i / hw;
            double y = (x[i] - m) / sqrt(v + 1e-5);
            if (affine) y = y * w[ch] + b[ch];
            want[(size_t)ng * cnt + i] = (float)y;
        }
        worst_m = fmax(worst_m, fabs(om));
        worst_v = fmax(worst_v, fabs(ov - 1.0));
    }
    check_fwd("groupnorm fwd", k.out, want, sz);
    if (!affine) {
        printf("    groups: max |mean| %.3g, max |var - 1| %.3g\n", worst_m, worst_v);
        CHECK(worst_m < 1e-5 && worst_v < 1e-3);
    }
    float *dx = dap_alloc_f32(sz), *dw = filled(c, 0.5f), *db = filled(c, 0.5f);
    poison(dx, sz);
    dap_groupnorm_backward(dx, affine ? dw : NULL, affine ? db : NULL, k.r, k.x, k.w, k.mean,
                           k.rstd, n, c, hw, g);
    check_grad("groupnorm dinp", gn_loss, &k, k.x, dx, sz, 1e-2f);
    if (affine) {
        float *gw = minus(dw, c, 0.5f), *gb = minus(db, c, 0.5f);
        check_grad("groupnorm dw", gn_loss, &k, k.w, gw, c, 1e-2f);
        check_grad("groupnorm db", gn_loss, &k, k.b, gb, c, 1e-2f);
        float *dw2 = filled(c, 0.5f), *db2 = filled(c, 0.5f);
        dap_groupnorm_backward(NULL, dw2, db2, k.r, k.x, k.w, k.mean, k.rstd, n, c, hw, g);
        double e = dap_test_compare("groupnorm dw, NULL dinp", dw2, dw, c, 1e-3);
        CHECK(e < 1e-6);
        /* dinp alone (the other loop order) */
        float *dx2 = dap_alloc_f32(sz);
        dap_groupnorm_backward(dx2, NULL, NULL, k.r, k.x, k.w, k.mean, k.rstd, n, c, hw, g);
        e = dap_test_compare("groupnorm dinp, NULL dw", dx2, dx, sz, 1e-3);
        CHECK(e < 1e-6);
        dap_free_aligned(gw), dap_free_aligned(gb), dap_free_aligned(dw2), dap_free_aligned(db2);
        dap_free_aligned(dx2);
    } else {
        CHECK(dw[0] == 0.5f && db[0] == 0.5f);
    }
    dap_free_aligned(want), dap_free_aligned(dx), dap_free_aligned(dw), dap_free_aligned(db);
    dap_free_aligned(k.x), dap_free_aligned(w), dap_free_aligned(b), dap_free_aligned(k.r);
    dap_free_aligned(k.out), dap_free_aligned(k.mean), dap_free_aligned(k.rstd);
}

DAP_TEST(ops_b_groupnorm) {
    groupnorm_case(3, 6, 10, 2, 1);   /* few groups: two-pass backward */
    groupnorm_case(2, 8, 12, 8, 1);   /* instance norm (G = C): fused backward */
    groupnorm_case(2, 16, 5, 8, 1);   /* fused with 2 channels per group */
    groupnorm_case(2, 4, 9, 4, 0);    /* no affine */
    groupnorm_case(2, 10, 6, 10, 0);  /* instance norm, no affine */
}

/* ---- BatchNorm ----------------------------------------------------------------------------- */

typedef struct {
    int n, c, hw, eval;
    float *x, *w, *b, *out, *mean, *rstd, *rm, *rv, *r;
} bn_ctx;

static double bn_loss(void *p) {
    bn_ctx *k = p;
    if (k->eval)
        dap_batchnorm_forward_eval(k->out, k->x, k->w, k->b, k->rm, k->rv, k->n, k->c, k->hw,
                                   1e-5f);
    else
        dap_batchnorm_forward_train(k->out, k->mean, k->rstd, NULL, NULL, k->x, k->w, k->b, k->n,
                                    k->c, k->hw, 1e-5f, 0.1f);
    return dot_d(k->out, k->r, (size_t)k->n * k->c * k->hw);
}

DAP_TEST(ops_b_batchnorm_running_stats) {
    /* hand-computed: one channel, x = {1, 2, 3, 4}: mean 2.5, biased var 1.25,
     * unbiased var 5/3. running 0 / 1, momentum 0.1 -> 0.25 and 0.9 + 0.5/3. */
    float x[4] = {1, 2, 3, 4}, out[4], mean, rstd, rm = 0.0f, rv = 1.0f;
    dap_batchnorm_forward_train(out, &mean, &rstd, &rm, &rv, x, NULL, NULL, 2, 1, 2, 0.0f, 0.1f);
    printf("    mean %.7g rstd %.7g running %.7g %.7g\n", mean, rstd, rm, rv);
    CHECK_NEAR(mean, 2.5, 1e-6);
    CHECK_NEAR(rstd, 1.0 / sqrt(1.25), 1e-6);
    CHECK_NEAR(rm, 0.25, 1e-7);
    CHECK_NEAR(rv, 0.9 + 0.1 * 5.0 / 3.0, 1e-6);
    CHECK_NEAR(out[0], -1.5 / sqrt(1.25), 1e-6);
    /* a second step from those values */
    float x2[4] = {0, 0, 2, 2};
    dap_batchnorm_forward_train(out, &mean, &rstd, &rm, &rv, x2, NULL, NULL, 2, 1, 2, 0.0f, 0.1f);
    printf("    step 2 running %.7g %.7g\n", rm, rv);
    CHECK_NEAR(rm, 0.9 * 0.25 + 0.1 * 1.0, 1e-6);
    CHECK_NEAR(rv, 0.9 * (0.9 + 0.5 / 3.0) + 0.1 * (4.0 / 3.0), 1e-6);

    /* random multi-channel case against double sums */
    int n = 5, c = 3, hw = 7;
    size_t sz = (size_t)n * c * hw;
    float *xr = randn(sz, 20, 2.0f), *o = dap_alloc_f32(sz);
    float m3[3], r3[3], rm3[3] = {0.1f, -0.2f, 0.3f}, rv3[3] = {1.0f, 2.0f, 0.5f};
    float rm0[3], rv0[3];
    memcpy(rm0, rm3, sizeof rm0), memcpy(rv0, rv3, sizeof rv0);
    dap_batchnorm_forward_train(o, m3, r3, rm3, rv3, xr, NULL, NULL, n, c, hw, 1e-5f, 0.3f);
    double worst = 0;
    for (int ch = 0; ch < c; ch++) {
        double s = 0, v = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) s += xr[(i * c + ch) * hw + j];
        s /= n * hw;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) v += pow(xr[(i * c + ch) * hw + j] - s, 2);
        double want_rm = 0.7 * rm0[ch] + 0.3 * s;
        double want_rv = 0.7 * rv0[ch] + 0.3 * v / (n * hw - 1);
        worst = fmax(worst, fabs(rm3[ch] - want_rm));
        worst = fmax(worst, fabs(rv3[ch] - want_rv));
        worst = fmax(worst, fabs(r3[ch] - 1.0 / sqrt(v / (n * hw) + 1e-5)));
    }
    printf("    running stats (3 channels) max abs err %.3g\n", worst);
    CHECK(worst < 1e-5);
    dap_free_aligned(xr), dap_free_aligned(o);
}

DAP_TEST(ops_b_batchnorm) {
    for (int eval = 0; eval <= 1; eval++) {
        bn_ctx k = {.n = 4, .c = 5, .hw = 9, .eval = eval};
        size_t sz = (size_t)k.n * k.c * k.hw;
        k.x = randn(sz, 30, 1.5f);
        for (size_t i = 0; i < sz; i++) k.x[i] += 1.0f;
        k.w = randn(k.c, 31, 1.0f);
        k.b = randn(k.c, 32, 1.0f);
        k.r = randn(sz, 33, 1.0f);
        k.out = dap_alloc_f32(sz);
        k.mean = dap_alloc_f32(k.c);
        k.rstd = dap_alloc_f32(k.c);
        k.rm = randn(k.c, 34, 0.5f);
        k.rv = randn(k.c, 35, 0.3f);
        for (int i = 0; i < k.c; i++) k.rv[i] = 0.5f + k.rv[i] * k.rv[i];
        bn_loss(&k);
        /* forward against double loops */
        float *want = dap_alloc_f32(sz);
        double worst_m = 0, worst_v = 0;
        for (int ch = 0; ch < k.c; ch++) {
            double m = 0, v = 0, om = 0, ov = 0;
            int cnt = k.n * k.hw;
            for (int i = 0; i < k.n; i++)
                for (int j = 0; j < k.hw; j++) {
                    m += k.x[(i * k.c + ch) * k.hw + j];
                    om += k.out[(i * k.c + ch) * k.hw + j];
                }
            m /= cnt, om /= cnt;
            for (int i = 0; i < k.n; i++)
                for (int j = 0; j < k.hw; j++) {
                    v += pow(k.x[(i * k.c + ch) * k.hw + j] - m, 2);
                    ov += pow(k.out[(i * k.c + ch) * k.hw + j] - om, 2);
                }
            v /= cnt, ov /= cnt;
            double mu = eval ? k.rm[ch] : m, var = eval ? k.rv[ch] : v;
            for (int i = 0; i < k.n; i++)
                for (int j = 0; j < k.hw; j++) {
                    size_t at = (size_t)(i * k.c + ch) * k.hw + j;
                    want[at] = (float)((k.x[at] - mu) / sqrt(var + 1e-5) * k.w[ch] + k.b[ch]);
                }
            /* train: per channel mean b, var w^2 */
            if (!eval) {
                worst_m = fmax(worst_m, fabs(om - k.b[ch]));
                worst_v = fmax(worst_v, fabs(ov / (k.w[ch] * k.w[ch]) - 1.0));
            }
        }
        check_fwd(eval ? "batchnorm eval fwd" : "batchnorm train fwd", k.out, want, sz);
        if (!eval) {
            printf("    channels: max |mean - b| %.3g, max |var/w^2 - 1| %.3g\n", worst_m, worst_v);
            CHECK(worst_m < 1e-5 && worst_v < 1e-3);
        }
        float *dx = dap_alloc_f32(sz), *dw = filled(k.c, 0.5f), *db = filled(k.c, 0.5f);
        poison(dx, sz);
        if (eval)
            dap_batchnorm_backward_eval(dx, dw, db, k.r, k.x, k.w, k.rm, k.rv, k.n, k.c, k.hw,
                                        1e-5f);
        else
            dap_batchnorm_backward_train(dx, dw, db, k.r, k.x, k.w, k.mean, k.rstd, k.n, k.c,
                                         k.hw);
        float *gw = minus(dw, k.c, 0.5f), *gb = minus(db, k.c, 0.5f);
        check_grad(eval ? "batchnorm eval dinp" : "batchnorm train dinp", bn_loss, &k, k.x, dx,
                   sz, 1e-2f);
        check_grad(eval ? "batchnorm eval dw" : "batchnorm train dw", bn_loss, &k, k.w, gw, k.c,
                   1e-2f);
        check_grad(eval ? "batchnorm eval db" : "batchnorm train db", bn_loss, &k, k.b, gb, k.c,
                   1e-2f);
        dap_free_aligned(gw), dap_free_aligned(gb);
        dap_free_aligned(want), dap_free_aligned(dx), dap_free_aligned(dw), dap_free_aligned(db);
        dap_free_aligned(k.x), dap_free_aligned(k.w), dap_free_aligned(k.b);
        dap_free_aligned(k.r), dap_free_aligned(k.out), dap_free_aligned(k.mean);
        dap_free_aligned(k.rstd), dap_free_aligned(k.rm), dap_free_aligned(k.rv);
    }
}

/* ---- attention ------------------------------------------------------------------------------ */

typedef struct {
    int b, t, c, nh;
    float *qkv, *out, *att, *work, *r;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *k = p;
    dap_attention_forward(k->out, k->att, k->qkv, k->b, k->t, k->c, k->nh, k->work);
    return dot_d(k->out, k->r, (size_t)k->b * k->t * k->c);
}

/* Plain loops in double: out (B, T, C), att (B, NH, T, T). */
static void attention_naive(float *out, float *att, const float *qkv, int b, int t, int c,
                            int nh) {
    int hs = c / nh;
    double *srow = malloc(sizeof(double) * t);
    for (int bi = 0; bi < b; bi++)
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < t; i++) {
                const float *q = qkv + ((size_t)bi * t + i) * 3 * c + h * hs;
                double mx = -INFINITY, s = 0;
                for (int j = 0; j < t; j++) {
                    const float *kk = qkv + ((size_t)bi * t + j) * 3 * c + c + h * hs;
                    double d = 0;
                    for (int e = 0; e < hs; e++) d += (double)q[e] * kk[e];
                    srow[j] = d / sqrt((double)hs);
                    mx = fmax(mx, srow[j]);
                }
                for (int j = 0; j < t; j++) s += (srow[j] = exp(srow[j] - mx));
                for (int j = 0; j < t; j++) {
                    srow[j] /= s;
                    att[(((size_t)bi * nh + h) * t + i) * t + j] = (float)srow[j];
                }
                for (int e = 0; e < hs; e++) {
                    double o = 0;
                    for (int j = 0; j < t; j++)
                        o += srow[j] * qkv[((size_t)bi * t + j) * 3 * c + 2 * c + h * hs + e];
                    out[((size_t)bi * t + i) * c + h * hs + e] = (float)o;
                }
            }
    free(srow);
}

static void attention_case(int b, int t, int c, int nh, int grads) {
    printf("    -- attention B=%d T=%d C=%d NH=%d\n", b, t, c, nh);
    att_ctx k = {.b = b, .t = t, .c = c, .nh = nh};
    size_t nqkv = (size_t)b * t * 3 * c, nout = (size_t)b * t * c, natt = (size_t)b * nh * t * t;
    size_t nwork = dap_attention_work_floats(b, t, c, nh);
    k.qkv = randn(nqkv, 40, 1.0f);
    k.r = randn(nout, 41, 1.0f);
    k.out = dap_alloc_f32(nout);
    k.att = dap_alloc_f32(natt);
    k.work = dap_alloc_f32(nwork);
    att_loss(&k);
    float *want = dap_alloc_f32(nout), *watt = dap_alloc_f32(natt);
    attention_naive(want, watt, k.qkv, b, t, c, nh);
    check_fwd("attention out", k.out, want, nout);
    check_fwd("attention probabilities", k.att, watt, natt);
    /* without att, probabilities live in work: same output */
    float *o3 = dap_alloc_f32(nout);
    dap_attention_forward(o3, NULL, k.qkv, b, t, c, nh, k.work);
    check_same("attention out without att", o3, k.out, nout);

    float *dq = dap_alloc_f32(nqkv);
    poison(dq, nqkv);
    dap_attention_backward(dq, k.r, k.qkv, k.att, b, t, c, nh, k.work);
    if (grads) check_grad("attention dqkv", att_loss, &k, k.qkv, dq, nqkv, 1e-2f);
    dap_free_aligned(o3), dap_free_aligned(dq), dap_free_aligned(want), dap_free_aligned(watt);
    dap_free_aligned(k.qkv), dap_free_aligned(k.r), dap_free_aligned(k.out);
    dap_free_aligned(k.att), dap_free_aligned(k.work);
}

DAP_TEST(ops_b_attention) {
    attention_case(2, 5, 8, 2, 1);
    attention_case(1, 13, 12, 3, 1); /* 8-wide exp body + tail */
    /* more items than scratch slots (each slot runs several), DiT-like head size */
    attention_case(9, 16, 256, 4, 0); /* (also above the parallel threshold) */
}

/* ---- modulate and gated residual -------------------------------------------------------------- */

typedef struct {
    int b, t, c, ld;
    float *x, *y, *ada, *out, *r; /* ada (B, ld): shift at 0, scale at c, gate at 2c */
} mod_ctx;

static double mod_loss(void *p) {
    mod_ctx *k = p;
    dap_modulate_forward(k->out, k->x, k->ada, k->ada + k->c, k->b, k->t, k->c, k->ld);
    return dot_d(k->out, k->r, (size_t)k->b * k->t * k->c);
}

static double gate_loss(void *p) {
    mod_ctx *k = p;
    size_t n = (size_t)k->b * k->t * k->c;
    memcpy(k->out, k->x, n * sizeof(float));
    dap_gate_residual_forward(k->out, k->y, k->ada + 2 * k->c, k->b, k->t, k->c, k->ld);
    return dot_d(k->out, k->r, n);
}

DAP_TEST(ops_b_modulate) {
    mod_ctx k = {.b = 3, .t = 5, .c = 70, .ld = 6 * 70};
    size_t n = (size_t)k.b * k.t * k.c, na = (size_t)k.b * k.ld;
    k.x = randn(n, 50, 1.0f);
    k.y = randn(n, 51, 1.0f);
    k.ada = randn(na, 52, 0.5f);
    k.r = randn(n, 53, 1.0f);
    k.out = dap_alloc_f32(n);
    float *want = dap_alloc_f32(n);
    mod_loss(&k);
    for (int bi = 0; bi < k.b; bi++)
        for (int ti = 0; ti < k.t; ti++)
            for (int j = 0; j < k.c; j++) {
                size_t at = ((size_t)bi * k.t + ti) * k.c + j;
                want[at] = k.x[at] * (1.0f + k.ada[bi * k.ld + k.c + j]) + k.ada[bi * k.ld + j];
            }
    check_fwd("modulate fwd", k.out, want, n);
    gate_loss(&k);
    for (size_t at = 0; at < n; at++) {
        size_t bi = at / ((size_t)k.t * k.c), j = at % k.c;
        want[at] = k.x[at] + k.ada[bi * k.ld + 2 * k.c + j] * k.y[at];
    }
    check_fwd("gate residual fwd", k.out, want, n);

    /* modulate backward: dada rows overwritten only inside their C-wide chunks */
    float *dx = dap_alloc_f32(n), *dada = filled(na, 7.0f);
    poison(dx, n);
    dap_modulate_backward(dx, dada, dada + k.c, k.r, k.x, k.ada + k.c, k.b, k.t, k.c, k.ld);
    int kept = 1;
    for (int bi = 0; bi < k.b; bi++)
        for (int j = 2 * k.c; j < k.ld; j++) {
            kept &= dada[bi * k.ld + j] == 7.0f;
            dada[bi * k.ld + j] = 0.0f; /* the gate and later chunks do not enter the loss */
        }
    CHECK_MSG(kept, "modulate backward wrote outside its rows");
    check_grad("modulate dx", mod_loss, &k, k.x, dx, n, 1e-2f);
    check_grad("modulate dshift, dscale", mod_loss, &k, k.ada, dada, na, 1e-2f);

    /* gate backward */
    float *dy = dap_alloc_f32(n), *dg = filled(na, 0.0f);
    poison(dy, n);
    dap_gate_residual_backward(dy, dg + 2 * k.c, k.r, k.y, k.ada + 2 * k.c, k.b, k.t, k.c, k.ld);
    check_grad("gate dy", gate_loss, &k, k.y, dy, n, 1e-2f);
    check_grad("gate dgate", gate_loss, &k, k.ada, dg, na, 1e-2f);

    dap_free_aligned(dy), dap_free_aligned(dg), dap_free_aligned(dx), dap_free_aligned(dada);
    dap_free_aligned(want), dap_free_aligned(k.x), dap_free_aligned(k.y);
    dap_free_aligned(k.ada), dap_free_aligned(k.r), dap_free_aligned(k.out);
}

/* ---- losses ------------------------------------------------------------------------------------ */

typedef struct {
    int n, k, scale_t2;
    float temp;
    float *logits, *teacher, *soft, *probs, *pt;
    int *targets;
    int kind; /* 0 hard xent, 1 soft xent, 2 kl */
} loss_ctx;

static double loss_value(void *p) {
    loss_ctx *c = p;
    if (c->kind == 0) return dap_xent_forward(c->probs, c->logits, c->targets, c->n, c->k);
    if (c->kind == 1) return dap_xent_soft_forward(c->probs, c->logits, c->soft, c->n, c->k);
    return dap_kl_forward(c->probs, c->pt, c->logits, c->teacher, c->n, c->k, c->temp,
                          c->scale_t2);
}

/* log softmax of x / temp in double */
static void log_softmax_d(double *o, const float *x, int k, double temp) {
    double mx = -INFINITY, s = 0;
    for (int j = 0; j < k; j++) mx = fmax(mx, x[j] / temp);
    for (int j = 0; j < k; j++) s += exp(x[j] / temp - mx);
    for (int j = 0; j < k; j++) o[j] = x[j] / temp - mx - log(s);
}

DAP_TEST(ops_b_losses) {
    loss_ctx c = {.n = 13, .k = 10, .temp = 4.0f};
    size_t nk = (size_t)c.n * c.k;
    c.logits = randn(nk, 60, 3.0f);
    c.teacher = randn(nk, 61, 3.0f);
    c.soft = dap_alloc_f32(nk);
    c.probs = dap_alloc_f32(nk);
    c.pt = dap_alloc_f32(nk);
    c.targets = malloc(sizeof(int) * c.n);
    dap_rng r;
    dap_rng_init(&r, 7, 62);
    for (int i = 0; i < c.n; i++) {
        c.targets[i] = (int)dap_rng_below(&r, c.k);
        /* a CutMix-like mix of two labels */
        float lam = (float)dap_rng_next_double(&r);
        c.soft[i * c.k + c.targets[i]] += lam;
        c.soft[i * c.k + (c.targets[i] + 3) % c.k] += 1.0f - lam;
    }
    float *d = dap_alloc_f32(nk);
    double ls[10], lt[10];
    const char *names[4] = {"xent", "xent soft", "kl", "kl T^2"};
    for (int kind = 0; kind < 4; kind++) {
        c.kind = kind < 2 ? kind : 2;
        c.scale_t2 = kind == 3;
        double want = 0;
        for (int i = 0; i < c.n; i++) {
            log_softmax_d(ls, c.logits + i * c.k, c.k, kind >= 2 ? c.temp : 1.0);
            if (kind == 0) want -= ls[c.targets[i]];
            else if (kind == 1)
                for (int j = 0; j < c.k; j++) want -= c.soft[i * c.k + j] * ls[j];
            else {
                log_softmax_d(lt, c.teacher + i * c.k, c.k, c.temp);
                for (int j = 0; j < c.k; j++) want += exp(lt[j]) * (lt[j] - ls[j]);
            }
        }
        want /= c.n;
        if (kind == 3) want *= (double)c.temp * c.temp;
        double got = loss_value(&c);
        printf("    %-10s loss %.7g, double %.7g\n", names[kind], got, want);
        CHECK_NEAR(got, want, 1e-5 * fmax(1.0, fabs(want)));
        poison(d, nk);
        float dl = 1.7f; /* a non-unit upstream gradient */
        if (kind == 0) dap_xent_backward(d, c.probs, c.targets, c.n, c.k, dl);
        else if (kind == 1) dap_xent_soft_backward(d, c.probs, c.soft, c.n, c.k, dl);
        else dap_kl_backward(d, c.probs, c.pt, c.n, c.k, c.temp, c.scale_t2, dl);
        for (size_t i = 0; i < nk; i++) d[i] /= dl;
        check_grad(names[kind], loss_value, &c, c.logits, d, nk, 1e-2f);
    }
    /* KL of a distribution with itself is 0 */
    float kl0 = dap_kl_forward(c.probs, c.pt, c.logits, c.logits, c.n, c.k, 2.0f, 1);
    printf("    kl(p || p) = %.3g\n", kl0);
    CHECK(fabsf(kl0) < 1e-6f);
    /* extreme logits: a confidently wrong row gives a large finite loss */
    float big[3] = {1000.0f, 0.0f, -1000.0f}, pb[3];
    int tg = 2;
    float lb = dap_xent_forward(pb, big, &tg, 1, 3);
    printf("    xent of a 2000-gap wrong row = %g\n", lb);
    CHECK_NEAR(lb, 2000.0, 1e-2);
    CHECK(pb[0] == 1.0f && pb[2] == 0.0f);

    /* MSE */
    size_t nm = 1000;
    float *a = randn(nm, 63, 1.0f), *bb = randn(nm, 64, 1.0f);
    float *da = dap_alloc_f32(nm), *db = dap_alloc_f32(nm);
    double want = 0;
    for (size_t i = 0; i < nm; i++) want += pow((double)a[i] - bb[i], 2);
    want /= nm;
    float got = dap_mse_forward(a, bb, nm);
    printf("    mse %.7g, double %.7g\n", got, want);
    CHECK_NEAR(got, want, 1e-6);
    dap_mse_backward(da, db, a, bb, nm, 1.0f);
    int opposite = 1;
    for (size_t i = 0; i < nm; i++) opposite &= db[i] == -da[i];
    CHECK(opposite);
    for (size_t i = 0; i < nm; i++) {
        float old = a[i], h = 0.25f; /* quadratic: central differences are exact */
        a[i] = old + h;
        double lp = dap_mse_forward(a, bb, nm);
        a[i] = old - h;
        double lm = dap_mse_forward(a, bb, nm);
        a[i] = old;
        db[i] = (float)((lp - lm) / (2 * h)); /* numeric, reusing db */
    }
    double e = dap_test_compare("mse da vs central differences", da, db, nm, 1e-3);
    CHECK(e < 1e-2);

    dap_free_aligned(a), dap_free_aligned(bb);
    dap_free_aligned(da), dap_free_aligned(db), dap_free_aligned(d);
    dap_free_aligned(c.logits), dap_free_aligned(c.teacher), dap_free_aligned(c.soft);
    dap_free_aligned(c.probs), dap_free_aligned(c.pt);
    free(c.targets);
}

/* ---- 1 vs 2 threads ------------------------------------------------------------------------- */

/* Every op, forward and backward, at sizes above the parallel thresholds; the outputs
 * are appended to an arena so two runs can be compared bit for bit. */
typedef struct {
    float *arena;
    size_t used;
    const char *label[64];
    size_t end[64];
    int nlab;
} out_log;

static void log_out(out_log *L, const char *label, const float *x, size_t n) {
    if (L->arena) memcpy(L->arena + L->used, x, n * sizeof(float));
    L->used += n;
    L->label[L->nlab] = label;
    L->end[L->nlab++] = L->used;
}

static void run_all_ops(out_log *L) {
    /* the same seeded inputs for every run; one scratch pool sized for the largest op */
    size_t big = 200000;
    float *x = randn(big, 70, 1.0f), *y = randn(big, 71, 1.0f), *p = randn(big, 72, 0.5f);
    float *o = dap_alloc_f32(big), *d = dap_alloc_f32(big), *e = dap_alloc_f32(big);
    float *m = dap_alloc_f32(4096), *r = dap_alloc_f32(4096);
    float *gw = dap_alloc_f32(4096), *gb = dap_alloc_f32(4096);
    float *rv = dap_alloc_f32(4096);
    for (int i = 0; i < 4096; i++) rv[i] = 1.0f + p[i] * p[i];

    /* LayerNorm (300, 70), affine */
    dap_layernorm_forward(o, m, r, x, p, p + 100, 300, 70, 1e-6f);
    dap_layernorm_backward(d, gw, gb, y, x, p, m, r, 300, 70);
    log_out(L, "layernorm out", o, 21000), log_out(L, "layernorm dinp", d, 21000);
    log_out(L, "layernorm dw, db", gw, 70), log_out(L, "layernorm db", gb, 70);
    /* GroupNorm (4, 16, 300): G = 8 (fused backward) and G = 2 (two passes) */
    for (int g = 8; g >= 2; g -= 6) {
        memset(gw, 0, 16 * sizeof(float)), memset(gb, 0, 16 * sizeof(float));
        dap_groupnorm_forward(o, m, r, x, p, p + 100, 4, 16, 300, g, 1e-5f);
        dap_groupnorm_backward(d, gw, gb, y, x, p, m, r, 4, 16, 300, g);
        log_out(L, "groupnorm out", o, 19200), log_out(L, "groupnorm dinp", d, 19200);
        log_out(L, "groupnorm dw", gw, 16), log_out(L, "groupnorm db", gb, 16);
    }
    /* BatchNorm (4, 5, 1000): train (with running stats) and eval */
    float *rm2 = dap_alloc_f32(5), *rv2 = dap_alloc_f32(5);
    for (int i = 0; i < 5; i++) rv2[i] = 1.0f;
    memset(gw, 0, 5 * sizeof(float)), memset(gb, 0, 5 * sizeof(float));
    dap_batchnorm_forward_train(o, m, r, rm2, rv2, x, p, p + 100, 4, 5, 1000, 1e-5f, 0.1f);
    dap_batchnorm_backward_train(d, gw, gb, y, x, p, m, r, 4, 5, 1000);
    log_out(L, "batchnorm train out", o, 20000), log_out(L, "batchnorm train dinp", d, 20000);
    log_out(L, "batchnorm train dw", gw, 5), log_out(L, "batchnorm train db", gb, 5);
    log_out(L, "batchnorm running mean", rm2, 5), log_out(L, "batchnorm running var", rv2, 5);
    dap_batchnorm_forward_eval(o, x, p, p + 100, p + 200, rv, 4, 5, 1000, 1e-5f);
    dap_batchnorm_backward_eval(d, gw, gb, y, x, p, p + 200, rv, 4, 5, 1000, 1e-5f);
    log_out(L, "batchnorm eval out", o, 20000), log_out(L, "batchnorm eval dinp", d, 20000);
    log_out(L, "batchnorm eval dw", gw, 5);
    /* attention B=3 T=20 C=64 NH=4 */
    float *work = dap_alloc_f32(dap_attention_work_floats(3, 20, 64, 4));
    dap_attention_forward(o, e, x, 3, 20, 64, 4, work);
    dap_attention_backward(d, y, x, e, 3, 20, 64, 4, work);
    log_out(L, "attention out", o, 3 * 20 * 64), log_out(L, "attention att", e, 3 * 4 * 400);
    log_out(L, "attention dqkv", d, 3 * 20 * 192);
    /* modulate / gated residual B=3 T=100 C=70 ld=420; dshift NULL must stay untouched */
    memset(e, 0, 3 * 420 * sizeof(float));
    dap_modulate_forward(o, x, p, p + 70, 3, 100, 70, 420);
    dap_modulate_backward(d, NULL, e + 70, y, x, p + 70, 3, 100, 70, 420);
    log_out(L, "modulate out", o, 21000), log_out(L, "modulate dx", d, 21000);
    memcpy(o, x, 21000 * sizeof(float));
    dap_gate_residual_forward(o, y, p + 140, 3, 100, 70, 420);
    dap_gate_residual_backward(d, e + 140, x, y, p + 140, 3, 100, 70, 420);
    log_out(L, "gate residual x", o, 21000), log_out(L, "gate dy", d, 21000);
    log_out(L, "modulate dscale, dgate (dshift 0)", e, 3 * 420);
    int untouched = 1;
    for (int b = 0; b < 3; b++)
        for (int j = 0; j < 70; j++) untouched &= e[b * 420 + j] == 0.0f;
    CHECK_MSG(untouched, "modulate backward wrote a NULL dshift's rows");
    /* losses N=2000 K=10, MSE over 100003 values */
    int *tg = malloc(2000 * sizeof(int));
    for (int i = 0; i < 2000; i++) tg[i] = (i * 7) % 10;
    float *soft = dap_alloc_f32(20000);
    for (int i = 0; i < 2000; i++) soft[i * 10 + tg[i]] = 0.3f, soft[i * 10 + (tg[i] + 1) % 10] = 0.7f;
    float l[5];
    l[0] = dap_xent_forward(o, x, tg, 2000, 10);
    dap_xent_backward(d, o, tg, 2000, 10, 1.0f);
    log_out(L, "xent dlogits", d, 20000);
    l[1] = dap_xent_soft_forward(o, x, soft, 2000, 10);
    dap_xent_soft_backward(d, o, soft, 2000, 10, 1.0f);
    log_out(L, "xent soft dlogits", d, 20000);
    l[2] = dap_kl_forward(o, e, x, y, 2000, 10, 4.0f, 1);
    dap_kl_backward(d, o, e, 2000, 10, 4.0f, 1, 1.0f);
    log_out(L, "kl dstudent", d, 20000);
    l[3] = dap_mse_forward(x, y, 100003);
    dap_mse_backward(d, e, x, y, 100003, 1.0f);
    log_out(L, "mse da", d, 100003), log_out(L, "mse db", e, 100003);
    log_out(L, "loss values", l, 4);
    free(tg);
    dap_free_aligned(soft), dap_free_aligned(work), dap_free_aligned(rm2), dap_free_aligned(rv2);
    dap_free_aligned(x), dap_free_aligned(y), dap_free_aligned(p), dap_free_aligned(o);
    dap_free_aligned(d), dap_free_aligned(e), dap_free_aligned(m), dap_free_aligned(r);
    dap_free_aligned(gw), dap_free_aligned(gb), dap_free_aligned(rv);
}

DAP_TEST(ops_b_threads) {
    out_log size = {0};
    run_all_ops(&size); /* sizing pass (arena NULL) */
    out_log one = {.arena = dap_alloc_f32(size.used)}, two = {.arena = dap_alloc_f32(size.used)};
    int saved = dap_get_threads();
    dap_set_threads(1);
    run_all_ops(&one);
    dap_set_threads(2);
    run_all_ops(&two);
    dap_set_threads(saved);
    CHECK(one.used == two.used && one.nlab == two.nlab);
    size_t start = 0, total_bad = 0;
    for (int i = 0; i < one.nlab; i++) {
        size_t bad = 0;
        for (size_t j = start; j < one.end[i]; j++)
            bad += memcmp(&one.arena[j], &two.arena[j], sizeof(float)) != 0;
        if (bad) printf("    %-36s %zu of %zu values differ\n", one.label[i], bad, one.end[i] - start);
        total_bad += bad;
        start = one.end[i];
    }
    printf("    %d outputs, %zu values: %zu differ bitwise between 1 and 2 threads\n", one.nlab,
           one.used, total_bad);
    CHECK(total_bad == 0);
    dap_free_aligned(one.arena), dap_free_aligned(two.arena);
}

DAP_TEST(ops_conv2d_winograd_from_env) {
    const char *saved_env = getenv("DAP_WINOGRAD");
    char *saved = saved_env ? dap_strdup(saved_env) : NULL;
    const int old = dap_conv2d_set_winograd(1);
    setenv("DAP_WINOGRAD", "2", 1);
    CHECK(dap_conv2d_winograd_from_env() == DAP_OK && dap_conv2d_winograd_mode() == 2);
    setenv("DAP_WINOGRAD", "", 1); /* empty: left as it is */
    CHECK(dap_conv2d_winograd_from_env() == DAP_OK && dap_conv2d_winograd_mode() == 2);
    const char *bad[] = {"3", "-1", "01", "1 ", "yes"};
    for (int i = 0; i < 5; i++) {
        setenv("DAP_WINOGRAD", bad[i], 1);
        CHECK_MSG(dap_conv2d_winograd_from_env() == DAP_ERR_ARG, "'%s' accepted", bad[i]);
        CHECK(strstr(dap_last_error(), "DAP_WINOGRAD must be 0, 1 or 2") != NULL);
        CHECK(dap_conv2d_winograd_mode() == 2);
    }
    unsetenv("DAP_WINOGRAD");
    CHECK(dap_conv2d_winograd_from_env() == DAP_OK && dap_conv2d_winograd_mode() == 2);
    if (saved) setenv("DAP_WINOGRAD", saved, 1);
    free(saved);
    dap_conv2d_set_winograd(old);
}
