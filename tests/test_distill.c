/*
 * test_distill.c: the dap guidance pipeline. The gradient of the representativeness
 * energy through the backbone (forward to block l, kernel energy, partial backward) is
 * checked against finite differences of the whole composition; dap with gamma = 0 must
 * equal vanilla bit for bit; chunked model calls must not change the images; the random
 * baseline must draw distinct images of the right class. Uses the small random-weight
 * DiT of tests/ref/dit_small.safetensors (made by tests/gen/dit_ref.py).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "distill/backbone.h"
#include "distill/distill.h"
#include "distill/guidance.h"
#include "distill/kmeans.h"
#include "models/dit.h"
#include "test.h"

typedef struct {
    const dap_dit *m;
    dap_dit_state *st;
    float *x, *rfeat, *feat;
    float *tf;
    int *y;
    int n, N, layer, pool, kernel, F;
    double sigma;
} gctx;

static double guided_energy(void *p) {
    gctx *c = p;
    dap_dit_forward(c->m, c->st, NULL, c->x, c->tf, c->y, c->layer);
    dap_pool_forward(c->feat, dap_dit_features(c->st), c->n, c->m->tokens, c->m->cfg.hidden, c->pool);
    return c->n * dap_kernel_energy(NULL, NULL, c->feat, c->n, c->rfeat, c->N, c->F, c->kernel, c->sigma);
}

DAP_TEST(dap_guidance_gradient_through_dit) {
    dap_dit *m = dap_test_small_dit(0);
    if (!m) return;
    const int n = 2, N = 5, T = m->tokens, D = m->cfg.hidden, layer = 2;
    const size_t per = (size_t)m->cfg.in_channels * m->cfg.input_size * m->cfg.input_size;
    for (int variant = 0; variant < 2; variant++) {
        gctx c = {.m = m, .n = n, .N = N, .layer = layer, .pool = variant ? DAP_POOL_MEAN : DAP_POOL_FLATTEN,
                  .kernel = variant ? DAP_KERNEL_RBF : DAP_KERNEL_LINEAR, .sigma = 4.0};
        c.F = dap_pool_dim(T, D, c.pool);
        c.st = dap_dit_state_create_ex(m, N, layer);
        c.x = dap_alloc_f32(n * per);
        c.rfeat = dap_alloc_f32((size_t)N * c.F);
        c.feat = dap_alloc_f32((size_t)n * c.F);
        c.tf = dap_alloc_f32(N);
        c.y = dap_malloc(sizeof(int) * N);
        float *xr = dap_alloc_f32(N * per), *ds = dap_alloc_f32((size_t)n * c.F);
        float *grad = dap_alloc_f32(n * per);
        dap_rng r;
        dap_rng_init(&r, 21 + variant, 0);
        dap_rng_normal(&r, c.x, n * per, 0, 1);
        dap_rng_normal(&r, xr, N * per, 0, 1);
        for (int i = 0; i < N; i++) c.tf[i] = 400, c.y[i] = 3;
        /* real features */
        dap_dit_state_set_batch(c.st, N);
        dap_dit_forward(m, c.st, NULL, xr, c.tf, c.y, layer);
        dap_pool_forward(c.rfeat, dap_dit_features(c.st), N, T, D, c.pool);
        /* analytic: the pipeline distill.c runs, through the backbone (which pools where
         * the model runs: dap_dit_features_mean and its backward for the mean) */
        dap_backbone bb;
        dap_backbone_dit(&bb, m);
        CHECK(dap_backbone_open(&bb, n, 1.0, layer, n, N, 0, c.pool) == DAP_OK);
        float *rfeat_bb = dap_alloc_f32((size_t)N * c.F);
        dap_backbone_features(&bb, 0, xr, N, 400, c.y, c.pool, rfeat_bb);
        CHECK_MSG(!memcmp(rfeat_bb, c.rfeat, sizeof(float) * (size_t)N * c.F), "the backbone's pooled rows differ");
        dap_backbone_features(&bb, 1, c.x, n, 400, c.y, c.pool, c.feat);
        const double e_host = n * dap_kernel_energy(ds, NULL, c.feat, n, c.rfeat, N, c.F, c.kernel, c.sigma);
        dap_backbone_backward(&bb, ds, c.pool, grad);
        dap_backbone_close(&bb);
        /* the backbone's own energy (bank_rows + guide, what distill.c runs): the same bytes */
        CHECK(dap_backbone_guides(&bb));
        CHECK(dap_backbone_open(&bb, n, 1.0, layer, n, N, N, c.pool) == DAP_OK);
        float *grad_bb = dap_alloc_f32(n * per);
        dap_backbone_bank_rows(&bb, xr, N, 400, c.y, 0);
        const double e_bb = dap_backbone_guide(&bb, c.x, n, 400, c.y, N, c.kernel, c.sigma, grad_bb);
        CHECK_MSG(e_bb == e_host, "guide's energy %.17g, the host path's %.17g", e_bb, e_host);
        CHECK_MSG(!memcmp(grad_bb, grad, sizeof(float) * n * per), "guide's gradient differs from the host path's");
        /* the bank overwritten with other rows, then filled in two chunks, the later rows
         * first (row0), and the energy over its first rows only */
        dap_backbone_bank_rows(&bb, xr + per, N - 1, 400, c.y, 0);
        dap_backbone_bank_rows(&bb, xr + 2 * per, N - 2, 400, c.y, 2);
        dap_backbone_bank_rows(&bb, xr, 2, 400, c.y, 0);
        CHECK_NEAR(dap_backbone_guide(&bb, c.x, n, 400, c.y, N, c.kernel, c.sigma, grad_bb), e_host, 1e-6 * e_host);
        const double e3 = n * dap_kernel_energy(NULL, NULL, c.feat, n, c.rfeat, 3, c.F, c.kernel, c.sigma);
        CHECK_NEAR(dap_backbone_guide(&bb, c.x, n, 400, c.y, 3, c.kernel, c.sigma, grad_bb), e3, 1e-6 * e3);
        dap_backbone_close(&bb);
        dap_free_aligned(grad_bb);
        dap_free_aligned(rfeat_bb);
        dap_dit_state_set_batch(c.st, n); /* the finite differences' own state */
        double err = dap_test_gradcheck(variant ? "rbf/mean through DiT" : "linear/flatten through DiT",
                                        guided_energy, &c, c.x, grad, n * per, 48, 1e-2f);
        CHECK_MSG(err < 3e-2, "guidance gradient rel err %g", err);
        dap_dit_state_destroy(c.st);
        dap_free_aligned(c.x), dap_free_aligned(c.rfeat), dap_free_aligned(c.feat), dap_free_aligned(c.tf);
        free(c.y);
        dap_free_aligned(xr), dap_free_aligned(ds), dap_free_aligned(grad);
    }
    dap_dit_destroy(m);
}

DAP_TEST(dap_methods_consistency) {
    dap_dit *m = dap_test_small_dit(1);
    if (!m) return;
    dap_dataset ds;
    dap_test_model_set(&ds, m, 30, 9, -1.0f, 1.0f, 0.0f, 0.0f);
    const size_t per = (size_t)ds.c * ds.h * ds.w;
    const int ipc = 3;
    float *a = dap_alloc_f32(ipc * per), *b = dap_alloc_f32(ipc * per), *c = dap_alloc_f32(ipc * per);
    dap_distill_opts o;
    dap_distill_opts_default(&o);
    o.ipc = ipc, o.steps = 6, o.n_real = 7, o.layer = 2, o.cfg = 2.0, o.seed = 5;
    dap_distill_stats st;
    /* vanilla == dap with gamma 0 */
    o.method = DAP_METHOD_VANILLA;
    CHECK(dap_distill_class(m, &ds, 1, &o, a, &st) == DAP_OK);
    o.method = DAP_METHOD_DAP, o.gamma = 0;
    CHECK(dap_distill_class(m, &ds, 1, &o, b, &st) == DAP_OK);
    CHECK(memcmp(a, b, ipc * per * sizeof(float)) == 0);
    /* guidance changes the images, deterministically; the energy is reported */
    o.gamma = 0.1;
    CHECK(dap_distill_class(m, &ds, 1, &o, b, &st) == DAP_OK);
    CHECK(st.guided_steps == 3); /* stop 0.5 of 6 steps */
    CHECK(st.energy_first > 0 && isfinite(st.energy_last));
    double diff = 0;
    for (size_t q = 0; q < ipc * per; q++) diff = fmax(diff, fabs(a[q] - b[q]));
    printf("    max |dap - vanilla| = %.4g, energy %.4g -> %.4g\n", diff, st.energy_first, st.energy_last);
    CHECK(diff > 1e-3);
    CHECK(dap_distill_class(m, &ds, 1, &o, c, &st) == DAP_OK);
    CHECK(memcmp(b, c, ipc * per * sizeof(float)) == 0);
    /* chunked model calls give the same images */
    o.batch = 2;
    CHECK(dap_distill_class(m, &ds, 1, &o, c, &st) == DAP_OK);
    double chunk = 0;
    for (size_t q = 0; q < ipc * per; q++) chunk = fmax(chunk, fabs(c[q] - b[q]));
    printf("    chunked vs whole: max abs %.3g\n", chunk);
    CHECK(chunk < 1e-4);
    /* --repel changes the images, and its chunked path (a feature pre-pass over the
     * whole class) gives the images of the one-chunk path */
    o.batch = 100, o.repel = 1.0;
    CHECK(dap_distill_class(m, &ds, 1, &o, a, &st) == DAP_OK);
    double rdiff = 0;
    for (size_t q = 0; q < ipc * per; q++) rdiff = fmax(rdiff, fabs(a[q] - b[q]));
    CHECK(rdiff > 1e-4);
    o.batch = 2;
    CHECK(dap_distill_class(m, &ds, 1, &o, c, &st) == DAP_OK);
    double rchunk = 0;
    for (size_t q = 0; q < ipc * per; q++) rchunk = fmax(rchunk, fabs(c[q] - a[q]));
    printf("    repel 1: max |repel - dap| = %.4g, chunked vs whole %.3g\n", rdiff, rchunk);
    CHECK(rchunk < 1e-4);
    o.repel = -1;
    CHECK(dap_distill_class(m, &ds, 1, &o, c, &st) == DAP_ERR_ARG);
    CHECK(strstr(dap_last_error(), "--repel") != NULL);
    o.repel = 0;
    /* eps form runs and differs from x form */
    o.batch = 100, o.form = DAP_FORM_EPS;
    CHECK(dap_distill_class(m, &ds, 1, &o, c, &st) == DAP_OK);
    CHECK(memcmp(b, c, ipc * per * sizeof(float)) != 0);
    /* bad options are errors that name the flag */
    o.layer = 9;
    CHECK(dap_distill_class(m, &ds, 1, &o, c, &st) == DAP_ERR_ARG);
    CHECK(strstr(dap_last_error(), "--layer") != NULL);
    o.layer = 2, o.n_real = 31; /* more than the class holds */
    CHECK(dap_distill_class(m, &ds, 1, &o, c, &st) == DAP_ERR_ARG);
    dap_free_aligned(a), dap_free_aligned(b), dap_free_aligned(c);
    dap_dataset_free(&ds);
    dap_dit_destroy(m);
}

DAP_TEST(random_baseline_draws_class_images) {
    dap_dit *m = dap_test_small_dit(0);
    if (!m) return;
    dap_dataset ds;
    dap_test_model_set(&ds, m, 30, 9, -1.0f, 1.0f, 0.0f, 0.0f);
    const size_t per = (size_t)ds.c * ds.h * ds.w;
    const int ipc = 10;
    float *a = dap_alloc_f32(ipc * per);
    dap_distill_opts o;
    dap_distill_opts_default(&o);
    o.method = DAP_METHOD_RANDOM, o.ipc = ipc, o.seed = 3;
    dap_distill_stats st;
    CHECK(dap_distill_class(NULL, &ds, 4, &o, a, &st) == DAP_OK);
    int found = 0;
    for (int i = 0; i < ipc; i++) {
        int match = -1;
        for (int j = 0; j < ds.n; j++)
            if (!memcmp(a + i * per, ds.x + (size_t)j * per, per * sizeof(float))) match = j;
        CHECK(match >= 0 && ds.y[match] == 4);
        for (int i2 = 0; i2 < i; i2++) CHECK(memcmp(a + i * per, a + i2 * per, per * sizeof(float)) != 0);
        found += match >= 0;
    }
    CHECK(found == ipc);
    o.ipc = 31;
    CHECK(dap_distill_class(NULL, &ds, 4, &o, a, &st) == DAP_ERR_ARG);
    dap_free_aligned(a);
    dap_dataset_free(&ds);
    dap_dit_destroy(m);
}

/* --init real|kmeans: a partial trajectory from noised start images. With one step left
 * (strength 1/S, the step at t = 0) the result is the start image up to that step's tiny
 * noise, so init real returns the random baseline's images and init kmeans k-means centres
 * of the class; the full strength differs from noise only through the faint start image;
 * bad combinations are refused, naming the flag. */
DAP_TEST(dap_init_partial_trajectory) {
    dap_dit *m = dap_test_small_dit(1);
    if (!m) return;
    dap_dataset ds;
    dap_test_model_set(&ds, m, 30, 9, -1.0f, 1.0f, 0.0f, 0.0f);
    for (size_t q = 0; q < (size_t)ds.n * ds.c * ds.h * ds.w; q++) ds.x[q] *= 0.5f; /* no clamping at the end */
    const size_t per = (size_t)ds.c * ds.h * ds.w;
    const int ipc = 3, S = 8;
    float *a = dap_alloc_f32(ipc * per), *b = dap_alloc_f32(ipc * per), *c = dap_alloc_f32(ipc * per);
    dap_distill_opts o;
    dap_distill_opts_default(&o);
    o.ipc = ipc, o.steps = S, o.cfg = 2.0, o.seed = 4, o.layer = 2, o.n_real = 7;
    dap_distill_stats st;
    CHECK(dap_init_skip(S, 1.0) == 0 && dap_init_skip(S, 0.5) == 4 && dap_init_skip(S, 1e-9) == S - 1);
    o.method = DAP_METHOD_RANDOM;
    CHECK(dap_distill_class(NULL, &ds, 2, &o, a, &st) == DAP_OK);
    o.method = DAP_METHOD_VANILLA, o.init = DAP_INIT_REAL, o.strength = 1.0 / S;
    CHECK(dap_distill_class(m, &ds, 2, &o, b, &st) == DAP_OK);
    double d_real = 0;
    for (size_t q = 0; q < ipc * per; q++) d_real = fmax(d_real, fabs(a[q] - b[q]));
    /* dap with the guidance on its only step: still the start image, moved by the guidance */
    o.method = DAP_METHOD_DAP, o.gamma = 0.1, o.stop = 0;
    CHECK(dap_distill_class(m, &ds, 2, &o, c, &st) == DAP_OK);
    CHECK(st.guided_steps == 1);
    double d_dap = 0;
    for (size_t q = 0; q < ipc * per; q++) d_dap = fmax(d_dap, fabs(a[q] - c[q]));
    printf("    init real, one step: max |out - random| %.3g (dap: %.3g)\n", d_real, d_dap);
    CHECK(d_real < 0.05 && d_real > 0);
    CHECK(d_dap < 0.5);
    /* init kmeans, one step: each image is near a k-means centre of class 2 */
    o.method = DAP_METHOD_VANILLA, o.init = DAP_INIT_KMEANS;
    CHECK(dap_distill_class(m, &ds, 2, &o, b, &st) == DAP_OK);
    const int cnt = ds.class_count[2];
    float *rows = dap_alloc_f32((size_t)cnt * per), *cen = dap_alloc_f32(ipc * per);
    for (int j = 0; j < cnt; j++) memcpy(rows + j * per, ds.x + (size_t)ds.class_idx[2][j] * per, sizeof(float) * per);
    /* the stream and iteration count of distill.c (STREAM_KMEANS | class, KMEANS_ITERS) */
    CHECK(dap_kmeans(rows, cnt, (int)per, ipc, 50, o.seed, 4ULL << 60 | 2, cen, NULL, NULL) == DAP_OK);
    double d_km = 0;
    for (size_t q = 0; q < ipc * per; q++) d_km = fmax(d_km, fabs(cen[q] - b[q]));
    printf("    init kmeans, one step: max |out - centre| %.3g\n", d_km);
    CHECK(d_km < 0.05);
    /* init medoid, one step: each image is near a distinct real image of class 2, the one
     * nearest its centre when no earlier centre took it */
    o.init = DAP_INIT_MEDOID;
    CHECK(dap_distill_class(m, &ds, 2, &o, c, &st) == DAP_OK);
    int hit[3] = {-1, -1, -1};
    double d_med = 0;
    for (int i = 0; i < ipc; i++) {
        double bestd = 1e30;
        for (int j = 0; j < cnt; j++) {
            double dd = 0;
            for (size_t q = 0; q < per; q++) dd = fmax(dd, fabs(rows[j * per + q] - c[i * per + q]));
            if (dd < bestd) bestd = dd, hit[i] = j;
        }
        d_med = fmax(d_med, bestd);
    }
    printf("    init medoid, one step: max |out - nearest real| %.3g (rows %d %d %d)\n", d_med, hit[0], hit[1], hit[2]);
    CHECK(d_med < 0.05 && hit[0] != hit[1] && hit[0] != hit[2] && hit[1] != hit[2]);
    /* and the first centre's image is the real image nearest that centre */
    int near0 = -1;
    double nd = 1e30;
    for (int j = 0; j < cnt; j++) {
        double dd = 0;
        for (size_t q = 0; q < per; q++) dd += (double)(rows[j * per + q] - cen[q]) * (rows[j * per + q] - cen[q]);
        if (dd < nd) nd = dd, near0 = j;
    }
    CHECK(hit[0] == near0);
    o.init = DAP_INIT_KMEANS;
    /* deterministic; full strength from a start image is a (slightly) different start than noise */
    CHECK(dap_distill_class(m, &ds, 2, &o, c, &st) == DAP_OK);
    CHECK(memcmp(b, c, ipc * per * sizeof(float)) == 0);
    o.strength = 1;
    CHECK(dap_distill_class(m, &ds, 2, &o, b, &st) == DAP_OK);
    o.init = DAP_INIT_NOISE;
    CHECK(dap_distill_class(m, &ds, 2, &o, c, &st) == DAP_OK);
    CHECK(memcmp(b, c, ipc * per * sizeof(float)) != 0);
    /* refused */
    o.strength = 0.5; /* with noise */
    CHECK(dap_distill_class(m, &ds, 2, &o, c, &st) == DAP_ERR_ARG && strstr(dap_last_error(), "--strength"));
    o.init = DAP_INIT_KMEANS, o.strength = 0;
    CHECK(dap_distill_class(m, &ds, 2, &o, c, &st) == DAP_ERR_ARG && strstr(dap_last_error(), "--strength"));
    o.strength = 1.5;
    CHECK(dap_distill_class(m, &ds, 2, &o, c, &st) == DAP_ERR_ARG);
    o.strength = 0.5, o.method = DAP_METHOD_RANDOM;
    CHECK(dap_distill_class(NULL, &ds, 2, &o, c, &st) == DAP_ERR_ARG && strstr(dap_last_error(), "--init"));
    o.method = DAP_METHOD_VANILLA, o.ipc = 31; /* more centres than the class has images */
    float *big = dap_alloc_f32(31 * per);
    CHECK(dap_distill_class(m, &ds, 2, &o, big, &st) == DAP_ERR_ARG && strstr(dap_last_error(), "k-means"));
    CHECK(dap_init_parse("kmeans") == DAP_INIT_KMEANS && dap_init_parse("real") == DAP_INIT_REAL &&
          dap_init_parse("noise") == DAP_INIT_NOISE && dap_init_parse("medoid") == DAP_INIT_MEDOID &&
          dap_init_parse("Kmeans") == -1 && !strcmp(dap_init_name(DAP_INIT_MEDOID), "medoid"));
    dap_free_aligned(big), dap_free_aligned(rows), dap_free_aligned(cen);
    dap_free_aligned(a), dap_free_aligned(b), dap_free_aligned(c);
    dap_dataset_free(&ds);
    dap_dit_destroy(m);
}
