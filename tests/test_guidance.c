/*
 * test_guidance.c: the kernel energy's value against a direct formula and its gradient
 * against finite differences (linear and RBF kernels, flatten and mean pooling).
 */
#include <math.h>
#include <stdlib.h>

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

DAP_TEST(kernel_parse) {
    CHECK(dap_kernel_parse("linear") == DAP_KERNEL_LINEAR);
    CHECK(dap_kernel_parse("rbf") == DAP_KERNEL_RBF);
    CHECK(dap_kernel_parse("poly") == -1);
    CHECK(dap_pool_parse("mean") == DAP_POOL_MEAN);
    CHECK(dap_pool_parse("max") == -1);
}
