/*
 * test_guidance.c: the kernel energy's value against a direct formula and its gradient
 * against finite differences (linear and RBF kernels, flatten and mean pooling).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "distill/guidance.h"
#include "test.h"

typedef struct { float *feat, *r; int b, t, d, nr, kernel, pool; double sigma; } ectx;

static double energy_of(void *p) {
    ectx *c = p;
    int f = dap_pool_dim(c->t, c->d, c->pool);
    float *s = dap_alloc_f32((size_t)c->b * f);
    dap_pool_forward(s, c->feat, c->b, c->t, c->d, c->pool);
    double e = dap_kernel_energy(NULL, NULL, s, c->b, c->r, c->nr, f, c->kernel, c->sigma);
    dap_free_aligned(s);
    return e * c->b; /* sum of per-sample energies: each sample's gradient is its own */
}

DAP_TEST(kernel_energy_gradients) {
    for (int kernel = 0; kernel < 2; kernel++)
        for (int pool = 0; pool < 2; pool++) {
            ectx c = {0};
            c.b = 3, c.t = 5, c.d = 4, c.nr = 6, c.kernel = kernel, c.pool = pool, c.sigma = 2.5;
            int f = dap_pool_dim(c.t, c.d, pool);
            c.feat = dap_alloc_f32((size_t)c.b * c.t * c.d);
            c.r = dap_alloc_f32((size_t)c.nr * f);
            dap_rng g;
            dap_rng_init(&g, 11 + kernel * 2 + pool, 0);
            dap_rng_normal(&g, c.feat, (size_t)c.b * c.t * c.d, 0, 1);
            dap_rng_normal(&g, c.r, (size_t)c.nr * f, 0.3f, 1);
            float *s = dap_alloc_f32((size_t)c.b * f), *ds = dap_alloc_f32((size_t)c.b * f);
            float *dfeat = dap_alloc_f32((size_t)c.b * c.t * c.d), en[3];
            dap_pool_forward(s, c.feat, c.b, c.t, c.d, pool);
            double mean = dap_kernel_energy(ds, en, s, c.b, c.r, c.nr, f, kernel, c.sigma);
            dap_pool_backward(dfeat, ds, c.b, c.t, c.d, pool);
            /* value against the direct formula */
            double want = 0;
            for (int i = 0; i < c.b; i++) {
                double ei = 0;
                for (int j = 0; j < c.nr; j++) {
                    double q = 0;
                    for (int k = 0; k < f; k++) q += pow(s[i * f + k] - c.r[j * f + k], 2);
                    ei += kernel == DAP_KERNEL_LINEAR ? sqrt(q)
                                                     : sqrt(2 - 2 * exp(-q / (2 * c.sigma * c.sigma)));
                }
                CHECK_NEAR(en[i], ei / c.nr, 1e-5);
                want += ei / c.nr / c.b;
            }
            CHECK_NEAR(mean, want, 1e-5);
            char label[64];
            snprintf(label, sizeof label, "%s/%s", kernel ? "rbf" : "linear", pool ? "mean" : "flatten");
            double err = dap_test_gradcheck(label, energy_of, &c, c.feat, dfeat,
                                            (size_t)c.b * c.t * c.d, 0, 1e-3f);
            CHECK_MSG(err < 2e-3, "%s gradient rel err %g", label, err);
            dap_free_aligned(c.feat), dap_free_aligned(c.r), dap_free_aligned(s);
            dap_free_aligned(ds), dap_free_aligned(dfeat);
        }
}

/* attraction to the real rows plus repulsion from fixed copies of the synthetic rows */
typedef struct { ectx e; const float *others; double lambda; } rctx;

static double repel_energy_of(void *p) {
    rctx *c = p;
    int f = dap_pool_dim(c->e.t, c->e.d, c->e.pool);
    float *s = dap_alloc_f32((size_t)c->e.b * f);
    dap_pool_forward(s, c->e.feat, c->e.b, c->e.t, c->e.d, c->e.pool);
    double e = dap_kernel_energy(NULL, NULL, s, c->e.b, c->e.r, c->e.nr, f, c->e.kernel, c->e.sigma);
    e += dap_kernel_repel(NULL, NULL, s, c->e.b, c->others, c->e.b, 0, c->lambda, f, c->e.kernel, c->e.sigma);
    dap_free_aligned(s);
    return e * c->e.b;
}

DAP_TEST(kernel_repel_value_and_gradient) {
    for (int kernel = 0; kernel < 2; kernel++) {
        rctx c = {0};
        c.e.b = 4, c.e.t = 3, c.e.d = 5, c.e.nr = 6, c.e.kernel = kernel, c.e.pool = DAP_POOL_MEAN;
        c.e.sigma = 1.5, c.lambda = 0.7;
        const int b = c.e.b, f = dap_pool_dim(c.e.t, c.e.d, c.e.pool);
        c.e.feat = dap_alloc_f32((size_t)b * c.e.t * c.e.d);
        c.e.r = dap_alloc_f32((size_t)c.e.nr * f);
        dap_rng g;
        dap_rng_init(&g, 31 + kernel, 0);
        dap_rng_normal(&g, c.e.feat, (size_t)b * c.e.t * c.e.d, 0, 1);
        dap_rng_normal(&g, c.e.r, (size_t)c.e.nr * f, 0.2f, 1);
        float *s = dap_alloc_f32((size_t)b * f), *ds = dap_alloc_f32((size_t)b * f);
        float *dfeat = dap_alloc_f32((size_t)b * c.e.t * c.e.d), en[4], att[4];
        dap_pool_forward(s, c.e.feat, b, c.e.t, c.e.d, c.e.pool);
        c.others = s;
        dap_kernel_energy(ds, att, s, b, c.e.r, c.e.nr, f, kernel, c.e.sigma);
        memcpy(en, att, sizeof en);
        double mean = dap_kernel_repel(ds, en, s, b, s, b, 0, c.lambda, f, kernel, c.e.sigma);
        /* value: en[i] = attraction - lambda/(b-1) sum_{k != i} d(s_i, s_k) */
        double want_mean = 0;
        for (int i = 0; i < b; i++) {
            double rep = 0;
            for (int k = 0; k < b; k++) {
                if (k == i) continue;
                double q = 0;
                for (int j = 0; j < f; j++) q += pow(s[i * f + j] - s[k * f + j], 2);
                rep += kernel == DAP_KERNEL_LINEAR ? sqrt(q) : sqrt(2 - 2 * exp(-q / (2 * c.e.sigma * c.e.sigma)));
            }
            rep *= -c.lambda / (b - 1);
            CHECK_NEAR(en[i], att[i] + rep, 1e-5);
            want_mean += rep / b;
        }
        CHECK_NEAR(mean, want_mean, 1e-5);
        CHECK(mean < 0);
        /* the gradient, other rows held fixed (a copy: the check perturbs feat) */
        float *fixed = dap_alloc_f32((size_t)b * f);
        memcpy(fixed, s, sizeof(float) * (size_t)b * f);
        c.others = fixed;
        dap_pool_backward(dfeat, ds, b, c.e.t, c.e.d, c.e.pool);
        double err = dap_test_gradcheck(kernel ? "repel rbf" : "repel linear", repel_energy_of, &c, c.e.feat,
                                        dfeat, (size_t)b * c.e.t * c.e.d, 0, 1e-3f);
        CHECK_MSG(err < 2e-3, "repel gradient rel err %g", err);
        /* one row alone has nothing to repel from */
        CHECK(dap_kernel_repel(ds, NULL, s, 1, s, 1, 0, c.lambda, f, kernel, c.e.sigma) == 0.0);
        dap_free_aligned(c.e.feat), dap_free_aligned(c.e.r), dap_free_aligned(s), dap_free_aligned(ds);
        dap_free_aligned(dfeat), dap_free_aligned(fixed);
    }
}

DAP_TEST(kernel_parse) {
    CHECK(dap_kernel_parse("linear") == DAP_KERNEL_LINEAR);
    CHECK(dap_kernel_parse("rbf") == DAP_KERNEL_RBF);
    CHECK(dap_kernel_parse("poly") == -1);
    CHECK(dap_pool_parse("mean") == DAP_POOL_MEAN);
    CHECK(dap_pool_parse("max") == -1);
}
