/*
 * test_methods.c: the rival methods of dap distill (mgd3, d4m, dm, igd, minimax; docs/methods.md).
 * The guidance gradients are checked against finite differences: mgd3's mode energy and
 * its eps update, igd's mixed second derivative (the central difference in theta + e v)
 * against differences in x of <grad_theta L(x), v>, its influence (a cosine) and its
 * deviation. DM's augmentation backward is checked as the adjoint of its forward, and
 * the methods against the sampler: mgd3 with lambda 0 and igd with both scales 0 are
 * vanilla, d4m is vanilla from k-means prototypes, dm with no iteration is its real start,
 * minimax is vanilla on a Minimax fine-tune and refused on any other model.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "diffusion/schedule.h"
#include "distill/backbone.h"
#include "distill/distill.h"
#include "distill/methods.h"
#include "eval/augment.h"
#include "eval/classifier.h"
#include "models/convnet.h"
#include "models/dit.h"
#include "test.h"

static double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t q = 0; q < n; q++) s += (double)a[q] * b[q];
    return s;
}

/* ---- mgd3 ---- */

typedef struct {
    float *x0;
    const float *mode;
    size_t per;
    double lambda;
} mctx;

static double mode_energy(void *p) {
    mctx *c = p;
    return dap_mgd3_energy(NULL, c->x0, c->mode, c->per, c->lambda);
}

DAP_TEST(mgd3_mode_guidance_gradient) {
    const size_t per = 64;
    const int n = 3;
    const double lambda = 0.7, a_t = 0.36;
    float *x0 = dap_alloc_f32(per), *mode = dap_alloc_f32(n * per), *grad = dap_alloc_f32(per);
    float *xt = dap_alloc_f32(n * per), *eps = dap_alloc_f32(n * per), *eps0 = dap_alloc_f32(n * per);
    dap_rng r;
    dap_rng_init(&r, 3, 0);
    dap_rng_normal(&r, x0, per, 0, 1);
    dap_rng_normal(&r, mode, n * per, 0, 1);
    dap_rng_normal(&r, xt, n * per, 0, 1);
    dap_rng_normal(&r, eps, n * per, 0, 1);
    /* the energy's gradient by finite differences */
    mctx c = {x0, mode, per, lambda};
    dap_mgd3_energy(grad, x0, mode, per, lambda);
    double err = dap_test_gradcheck("mgd3 mode energy", mode_energy, &c, x0, grad, per, 64, 1e-2f);
    CHECK_MSG(err < 1e-3, "mode energy gradient rel err %g", err);
    /* the eps update: eps - sqrt(1 - a) lambda (m - x0_hat) moves x0_hat towards the mode by
     * (1 - a)/sqrt(a) lambda (m - x0_hat), i.e. eps += sqrt(1 - a) dE/dx0 */
    memcpy(eps0, eps, sizeof(float) * n * per);
    dap_mgd3_adjust_eps(eps, xt, mode, n, per, a_t, lambda);
    const double sa = sqrt(a_t), sb = sqrt(1 - a_t);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        float *x0h = dap_alloc_f32(per), *g = dap_alloc_f32(per);
        for (size_t q = 0; q < per; q++) x0h[q] = (float)((xt[i * per + q] - sb * eps0[i * per + q]) / sa);
        dap_mgd3_energy(g, x0h, mode + i * per, per, lambda);
        for (size_t q = 0; q < per; q++) {
            const double want = eps0[i * per + q] + sb * g[q];
            worst = fmax(worst, fabs(eps[i * per + q] - want));
            const double x0new = (xt[i * per + q] - sb * eps[i * per + q]) / sa;
            const double moved = x0new - x0h[q],
                         expect = (1 - a_t) / sa * lambda * (mode[i * per + q] - x0h[q]);
            worst = fmax(worst, fabs(moved - expect));
        }
        dap_free_aligned(x0h), dap_free_aligned(g);
    }
    printf("    mgd3 eps update vs eps + sqrt(1-a) dE/dx0: max abs %.3g\n", worst);
    CHECK(worst < 1e-4);
    dap_free_aligned(x0), dap_free_aligned(mode), dap_free_aligned(grad);
    dap_free_aligned(xt), dap_free_aligned(eps), dap_free_aligned(eps0);
}

/* ---- igd ---- */

/* A ConvNet-3 (width 16) surrogate for 1 x 28 x 28 inputs, 3 classes, random weights, no ReLU. */
static int make_surrogate(dap_classifier *sur, const dap_dataset *ds) {
    memset(sur, 0, sizeof *sur); /* a narrow ConvNet-3 (width 16) keeps the test fast */
    if (dap_convnet_create(&sur->net, 3, 16, DAP_NORM_INSTANCE, 1, 28, 28, 3) != DAP_OK) {
        dap_test_fail(__FILE__, __LINE__, "surrogate: %s", dap_last_error());
        return 0;
    }
    dap_classifier_init_weights(sur, 11);
    dap_classifier_set_normalization(sur, ds, 0);
    /* without its ReLUs the network is smooth (conv, instance norm, average pooling,
     * linear), so finite differences of its gradients converge: with them, a step of
     * either difference crosses ReLU kinks, whose jumps do not vanish with the step */
    for (int l = 0; l < sur->net.nlayers; l++) sur->net.layers[l].relu = 0;
    return 1;
}

DAP_TEST(igd_influence_gradient) {
    dap_dataset ds;
    dap_test_labelled_set(&ds, 3, 6, 1, 28, 4, -0.5f, 0.5f, -0.1f, -0.1f);
    dap_classifier sur;
    if (!make_surrogate(&sur, &ds)) return;
    const size_t per = 28 * 28;
    dap_igd g;
    int idx[6];
    for (int j = 0; j < 6; j++) idx[j] = ds.class_idx[1][j];
    CHECK(dap_igd_init(&g, &sur, &ds, 1, idx, 6) == DAP_OK);
    float *w0 = dap_alloc_f32(g.P);
    memcpy(w0, sur.net.params.data, sizeof(float) * g.P);
    float *x = dap_alloc_f32(per), *xp = dap_alloc_f32(per), *u = dap_alloc_f32(per),
          *out = dap_alloc_f32(per);
    float *v = dap_alloc_f32(g.P), *pg = dap_alloc_f32(g.P);
    dap_rng r;
    dap_rng_init(&r, 8, 0);
    dap_rng_uniform(&r, x, per, -0.8f, 0.8f);
    dap_rng_normal(&r, v, g.P, 0, 1);
    /* the mixed derivative: grad_x <grad_theta L(x), v> by the central difference in
     * theta, against central differences in x of <grad_theta L(x), v> along directions u */
    dap_igd_mixed(&g, x, v, out);
    CHECK_MSG(memcmp(w0, sur.net.params.data, sizeof(float) * g.P) == 0,
              "the surrogate's weights are restored");
    const float d = 1e-2f;
    double worst = 0;
    for (int trial = 0; trial < 4; trial++) {
        dap_rng_normal(&r, u, per, 0, 1);
        const double nu = sqrt(dotd(u, u, per));
        for (size_t q = 0; q < per; q++) u[q] = (float)(u[q] / nu);
        for (size_t q = 0; q < per; q++) xp[q] = x[q] + d * u[q];
        dap_igd_param_grad(&g, xp, pg);
        const double fp = dotd(pg, v, g.P);
        for (size_t q = 0; q < per; q++) xp[q] = x[q] - d * u[q];
        dap_igd_param_grad(&g, xp, pg);
        const double fm = dotd(pg, v, g.P);
        const double num = (fp - fm) / (2 * d), ana = dotd(out, u, per);
        /* relative to the gradient's norm too: a direction nearly orthogonal to it has a
         * small derivative that float differences in x resolve only to ~1e-3 */
        const double e = fabs(num - ana) / fmax(fabs(num), 0.1 * sqrt(dotd(out, out, per)));
        printf("    mixed derivative along u%d: finite differences %.6g, central difference in theta %.6g\n",
               trial, num, ana);
        worst = fmax(worst, e);
    }
    CHECK_MSG(worst < 2e-2, "mixed derivative rel err %g", worst);
    /* the influence s = cos(g(x), G) and its gradient */
    const double s0 = dap_igd_influence(&g, x, out);
    CHECK(s0 > -1 && s0 < 1);
    worst = 0;
    for (int trial = 0; trial < 3; trial++) {
        dap_rng_normal(&r, u, per, 0, 1);
        const double nu = sqrt(dotd(u, u, per));
        for (size_t q = 0; q < per; q++) u[q] = (float)(u[q] / nu);
        for (size_t q = 0; q < per; q++) xp[q] = x[q] + d * u[q];
        const double sp = dap_igd_influence(&g, xp, NULL);
        for (size_t q = 0; q < per; q++) xp[q] = x[q] - d * u[q];
        const double sm = dap_igd_influence(&g, xp, NULL);
        const double num = (sp - sm) / (2 * d), ana = dotd(out, u, per);
        printf("    influence along u%d: finite differences %.6g, analytic %.6g\n", trial, num, ana);
        worst = fmax(worst, fabs(num - ana) / fmax(fabs(num), 0.1 * sqrt(dotd(out, out, per))));
    }
    CHECK_MSG(worst < 3e-2, "influence gradient rel err %g", worst);
    dap_igd_free(&g);
    dap_free_aligned(w0), dap_free_aligned(x), dap_free_aligned(xp), dap_free_aligned(u),
        dap_free_aligned(out);
    dap_free_aligned(v), dap_free_aligned(pg);
    dap_classifier_free(&sur);
    dap_dataset_free(&ds);
}

typedef struct {
    float *x;
    const float *mem;
    int nm;
    size_t per;
} dctx;

static double deviation(void *p) {
    dctx *c = p;
    return dap_igd_deviation(c->x, c->mem, c->nm, c->per, NULL);
}

DAP_TEST(igd_deviation_gradient) {
    const size_t per = 50;
    const int nm = 4;
    float *x = dap_alloc_f32(per), *mem = dap_alloc_f32(nm * per), *grad = dap_alloc_f32(per);
    dap_rng r;
    dap_rng_init(&r, 5, 0);
    dap_rng_normal(&r, x, per, 0, 1);
    dap_rng_normal(&r, mem, nm * per, 0, 1);
    for (size_t q = 0; q < per; q++) mem[2 * per + q] = x[q] + 0.5f * mem[2 * per + q]; /* the nearest */
    dctx c = {x, mem, nm, per};
    const double s = dap_igd_deviation(x, mem, nm, per, grad);
    CHECK(s > 0.5 && s < 1);
    double err = dap_test_gradcheck("igd deviation (max cosine)", deviation, &c, x, grad, per, 50, 1e-3f);
    CHECK_MSG(err < 1e-2, "deviation gradient rel err %g", err);
    CHECK(dap_igd_deviation(x, mem, 0, per, grad) == 0 && grad[0] == 0);
    dap_free_aligned(x), dap_free_aligned(mem), dap_free_aligned(grad);
}

/* ---- dm: the augmentation's backward is the adjoint of its forward ---- */

DAP_TEST(dm_augmentation_adjoint) {
    const int n = 3, c = 3, h = 12, w = 10;
    const size_t img = (size_t)c * h * w, all = n * img;
    float *x = dap_alloc_f32(all), *y = dap_alloc_f32(all), *ax = dap_alloc_f32(all),
          *a0 = dap_alloc_f32(all);
    float *aty = dap_alloc_f32(all), *big = dap_alloc_f32(all + img);
    dap_rng r;
    dap_rng_init(&r, 17, 0);
    int seen[DAP_DSA_NOPS] = {0};
    for (int trial = 0; trial < 40; trial++) {
        dap_dsa_draw d;
        dap_dsa_draw_make(&d, n + 1, &r);
        seen[d.op] = 1;
        dap_rng_normal(&r, x, all, 0, 1);
        dap_rng_normal(&r, y, all, 0, 1);
        memcpy(ax, x, sizeof(float) * all);
        dap_dsa_forward(&d, ax, n, c, h, w);
        memset(a0, 0, sizeof(float) * all); /* the affine part (colour's brightness) */
        dap_dsa_forward(&d, a0, n, c, h, w);
        memcpy(aty, y, sizeof(float) * all);
        dap_dsa_backward(&d, aty, n, c, h, w);
        double lhs = 0;
        for (size_t q = 0; q < all; q++) lhs += (double)(ax[q] - a0[q]) * y[q];
        const double rhs = dotd(x, aty, all);
        CHECK_MSG(fabs(lhs - rhs) <= 1e-4 * fmax(1, fabs(lhs)), "op %d: <A x, y> %.8g vs <x, A^T y> %.8g",
                  d.op, lhs, rhs);
        /* siamese: a batch of n + 1 from the same draw gives its first n images alike */
        memcpy(big, x, sizeof(float) * all);
        memcpy(big + all, x, sizeof(float) * img);
        dap_dsa_forward(&d, big, n + 1, c, h, w);
        CHECK(memcmp(big, ax, sizeof(float) * all) == 0);
        dap_dsa_draw_free(&d);
    }
    for (int op = 0; op < DAP_DSA_NOPS; op++) CHECK_MSG(seen[op], "op %d never drawn", op);
    dap_free_aligned(x), dap_free_aligned(y), dap_free_aligned(ax), dap_free_aligned(a0);
    dap_free_aligned(aty), dap_free_aligned(big);
}

/* ---- the methods in the sampler's loop ---- */

static double maxdiff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t q = 0; q < n; q++) d = fmax(d, fabs(a[q] - b[q]));
    return d;
}

DAP_TEST(methods_against_vanilla) {
    dap_dit *m = dap_test_small_dit(1);
    if (!m) return;
    dap_dataset ds;
    dap_test_labelled_set(&ds, m->cfg.num_classes, 12, m->cfg.in_channels, m->cfg.input_size, 9, -0.5f, 0.5f, -0.1f, -0.1f);
    const size_t per = (size_t)ds.c * ds.h * ds.w;
    const int ipc = 3, k = 2;
    float *a = dap_alloc_f32(ipc * per), *b = dap_alloc_f32(ipc * per), *modes = dap_alloc_f32(ipc * per);
    dap_distill_opts o;
    dap_distill_opts_default(&o);
    o.ipc = ipc, o.steps = 8, o.cfg = 2.0, o.seed = 5;
    dap_distill_stats st;
    o.method = DAP_METHOD_VANILLA;
    CHECK(dap_distill_class(m, &ds, k, &o, a, &st) == DAP_OK);
    /* mgd3 with lambda 0 is vanilla */
    o.method = DAP_METHOD_MGD3, o.mode_lambda = 0;
    CHECK(dap_distill_class(m, &ds, k, &o, b, &st) == DAP_OK);
    CHECK(memcmp(a, b, ipc * per * sizeof(float)) == 0);
    /* minimax: refused on a model that is not a Minimax fine-tune; on one, vanilla */
    o.method = DAP_METHOD_MINIMAX;
    memset(b, 0, ipc * per * sizeof(float));
    CHECK(dap_distill_class(m, &ds, k, &o, b, &st) == DAP_ERR_ARG);
    CHECK_MSG(strstr(dap_last_error(), "not one") != NULL, "message: %s", dap_last_error());
    CHECK(dap_distill_check(m, &o) == DAP_ERR_ARG);
    dap_dit_set_finetune(m, "difffit");
    CHECK(dap_distill_check(m, &o) == DAP_ERR_ARG);
    dap_dit_set_finetune(m, "minimax lambda_pos=0.002 lambda_neg=0.008 memory_size=64 trainable=difffit");
    CHECK(dap_distill_class(m, &ds, k, &o, b, &st) == DAP_OK);
    CHECK(memcmp(a, b, ipc * per * sizeof(float)) == 0);
    /* d4m: vanilla from k-means prototypes at its strength */
    o.method = DAP_METHOD_D4M, o.strength = 0.5;
    CHECK(dap_distill_class(m, &ds, k, &o, b, &st) == DAP_OK);
    o.method = DAP_METHOD_VANILLA, o.init = DAP_INIT_KMEANS;
    CHECK(dap_distill_class(m, &ds, k, &o, a, &st) == DAP_OK);
    CHECK(memcmp(a, b, ipc * per * sizeof(float)) == 0);
    o.method = DAP_METHOD_D4M, o.init = DAP_INIT_REAL;
    CHECK(dap_distill_class(m, &ds, k, &o, b, &st) == DAP_ERR_ARG);
    CHECK(strstr(dap_last_error(), "prototypes") != NULL);
    o.init = DAP_INIT_NOISE, o.strength = 1;
    /* dm: no iteration gives its real start (the random baseline's images) */
    o.method = DAP_METHOD_RANDOM;
    CHECK(dap_distill_class(NULL, &ds, k, &o, a, &st) == DAP_OK);
    o.method = DAP_METHOD_DM, o.iterations = 0, o.dm_width = 4;
    CHECK(dap_distill_class(NULL, &ds, k, &o, b, &st) == DAP_OK); /* 2 channels, 8 px */
    CHECK(maxdiff(a, b, ipc * per) < 1e-5);
    dap_free_aligned(a), dap_free_aligned(b), dap_free_aligned(modes);
    dap_dataset_free(&ds);
    dap_dit_destroy(m);
}

/* The mean-embedding distance between a class's real images and a set, averaged over
 * `nets` random ConvNet-3s of width 8 (seeds other than dm's): what DM drives down. */
static double mean_embedding_gap(const dap_dataset *ds, int k, const float *syn, int n, int nets) {
    const size_t per = (size_t)ds->c * ds->h * ds->w;
    const int nr = ds->class_count[k];
    float *xr = dap_alloc_f32((size_t)nr * per);
    for (int j = 0; j < nr; j++)
        memcpy(xr + j * per, ds->x + (size_t)ds->class_idx[k][j] * per, sizeof(float) * per);
    double total = 0;
    for (int t = 0; t < nets; t++) {
        dap_cnn net;
        dap_convnet_create(&net, 3, 8, DAP_NORM_INSTANCE, ds->c, ds->h, ds->w, 2);
        dap_cnn_init_weights(&net, 1000 + t);
        dap_cnn_state st;
        dap_cnn_state_init(&st, &net, nr > n ? nr : n, 0);
        const int F = dap_cnn_feat_dim(&net);
        double *mr = calloc((size_t)F, sizeof(double)), *ms = calloc((size_t)F, sizeof(double));
        dap_cnn_forward(&net, &st, xr, nr, 1);
        const float *f = dap_cnn_features(&net, &st);
        for (int j = 0; j < nr; j++)
            for (int q = 0; q < F; q++) mr[q] += f[j * F + q] / nr;
        dap_cnn_forward(&net, &st, syn, n, 1);
        f = dap_cnn_features(&net, &st);
        for (int i = 0; i < n; i++)
            for (int q = 0; q < F; q++) ms[q] += f[i * F + q] / n;
        for (int q = 0; q < F; q++) total += (mr[q] - ms[q]) * (mr[q] - ms[q]);
        free(mr), free(ms);
        dap_cnn_state_free(&st);
        dap_cnn_free(&net);
    }
    dap_free_aligned(xr);
    return total / nets;
}

/* A second backbone (backbone.h): the exact denoiser of Gaussian data N(c, s^2 I):
 * x0_hat = c + sqrt(a) s^2 (x_t - sqrt(a) c) / (a s^2 + 1 - a), eps = (x_t - sqrt(a) x0_hat) / sqrt(1 - a).
 */
typedef struct point_bb {
    dap_schedule sched;
    float c, s2;
} point_bb;

static int point_open(dap_backbone *b, int cap, double cfg, int layer, int cap_grad, int cap_real, int bank,
                      int pool) {
    (void)cap, (void)cfg, (void)layer, (void)cap_grad, (void)cap_real, (void)bank, (void)pool;
    b->impl = b; /* nothing to allocate */
    return DAP_OK;
}
static int point_eps(dap_backbone *b, float *eps, const float *x, int n, int t, const int *y) {
    (void)y;
    const point_bb *p = b->model;
    const double a = p->sched.alpha_bar[t];
    for (size_t q = 0; q < (size_t)n * dap_backbone_per(b); q++) {
        const double x0 = p->c + sqrt(a) * p->s2 * (x[q] - sqrt(a) * p->c) / (a * p->s2 + 1 - a);
        eps[q] = (float)((x[q] - sqrt(a) * x0) / sqrt(1 - a));
    }
    return DAP_OK;
}
static void point_close(dap_backbone *b) {
    b->impl = NULL;
}
static const dap_backbone_ops point_ops = {point_open, point_eps, NULL, NULL, point_close, NULL, NULL};

DAP_TEST(mgd3_pulls_samples_to_their_modes) {
    dap_dataset ds;
    dap_test_labelled_set(&ds, 3, 12, 1, 6, 2, -0.5f, 0.5f, -0.1f, -0.1f);
    const size_t per = 36;
    const int ipc = 3, k = 1;
    point_bb p = {.c = 0.0f, .s2 = 0.0f};
    dap_schedule_init_default(&p.sched);
    dap_backbone bb = {
        .kind = "point", .C = 1, .H = 6, .W = 6, .classes = 3, .has_null = 1, .ops = &point_ops, .model = &p};
    float *a = dap_alloc_f32(ipc * per), *b = dap_alloc_f32(ipc * per), *modes = dap_alloc_f32(ipc * per);
    dap_distill_opts o;
    dap_distill_opts_default(&o);
    o.ipc = ipc, o.steps = 20, o.seed = 4, o.stop = 0, o.method = DAP_METHOD_VANILLA;
    dap_distill_stats st;
    CHECK(dap_distill_class_backbone(&bb, &ds, k, &o, a, &st) == DAP_OK);
    CHECK(dap_distill_kmeans_centres(&ds, k, ipc, o.seed, modes) == DAP_OK);
    double lands = 0;
    for (size_t q = 0; q < ipc * per; q++) lands = fmax(lands, fabs(a[q] - p.c));
    printf("    vanilla on the point denoiser (s = 0): max |x - c| %.3g\n", lands);
    CHECK(lands < 1e-3);
    p.s2 = 0.25f; /* the guidance's shifts persist only where the data has spread */
    o.method = DAP_METHOD_VANILLA;
    CHECK(dap_distill_class_backbone(&bb, &ds, k, &o, a, &st) == DAP_OK);
    o.method = DAP_METHOD_MGD3;
    double prev[3] = {0};
    for (int pass = 0; pass < 2; pass++) {
        o.mode_lambda = pass ? 0.1 : 0.03;
        CHECK(dap_distill_class_backbone(&bb, &ds, k, &o, b, &st) == DAP_OK);
        CHECK(st.guided_steps == 20);
        for (int i = 0; i < ipc; i++) {
            double dv = 0, dg = 0;
            for (size_t q = 0; q < per; q++) {
                dv += pow(a[i * per + q] - modes[i * per + q], 2);
                dg += pow(b[i * per + q] - modes[i * per + q], 2);
            }
            printf("    lambda %.2f, sample %d: |x - m_i| vanilla %.4f, mgd3 %.4f\n", o.mode_lambda, i,
                   sqrt(dv), sqrt(dg));
            CHECK(sqrt(dg) < 0.99 * sqrt(dv)); /* nearer its mode, the more so with a larger lambda */
            if (pass) CHECK(sqrt(dg) < 0.97 * prev[i]);
            prev[i] = sqrt(dg);
        }
    }
    dap_free_aligned(a), dap_free_aligned(b), dap_free_aligned(modes);
    dap_schedule_free(&p.sched);
    dap_dataset_free(&ds);
}

DAP_TEST(dm_start_and_steps) {
    dap_dataset ds;
    dap_test_labelled_set(&ds, 3, 8, 1, 28, 6, -0.5f, 0.5f, -0.1f, -0.1f);
    const size_t per = 28 * 28;
    const int ipc = 2;
    float *a = dap_alloc_f32(ipc * per), *b = dap_alloc_f32(ipc * per), *c = dap_alloc_f32(ipc * per);
    dap_distill_opts o;
    dap_distill_opts_default(&o);
    o.ipc = ipc, o.seed = 3, o.batch_real = 5, o.dm_width = 8;
    dap_distill_stats st;
    o.method = DAP_METHOD_RANDOM;
    CHECK(dap_distill_class(NULL, &ds, 1, &o, a, &st) == DAP_OK);
    o.method = DAP_METHOD_DM, o.iterations = 0;
    CHECK(dap_distill_class(NULL, &ds, 1, &o, b, &st) == DAP_OK);
    const double d0 = maxdiff(a, b, ipc * per);
    printf("    dm, 0 iterations vs its real start: max abs %.3g\n", d0);
    CHECK(d0 < 1e-5);
    o.iterations = 3;
    CHECK(dap_distill_class(NULL, &ds, 1, &o, b, &st) == DAP_OK);
    CHECK(st.guided_steps == 3 && st.energy_first > 0);
    CHECK(maxdiff(a, b, ipc * per) > 1e-3);
    CHECK(dap_distill_class(NULL, &ds, 1, &o, c, &st) == DAP_OK);
    CHECK(memcmp(b, c, ipc * per * sizeof(float)) == 0);
    /* the matching works: over random networks DM never saw, the set's mean embedding
     * comes nearer the class's */
    o.iterations = 40, o.lr_img = 0.1;
    CHECK(dap_distill_class(NULL, &ds, 1, &o, c, &st) == DAP_OK);
    const double before = mean_embedding_gap(&ds, 1, a, ipc, 6),
                 after = mean_embedding_gap(&ds, 1, c, ipc, 6);
    printf("    dm, 40 iterations: mean-embedding gap %.4g -> %.4g (loss %.4g -> %.4g)\n", before, after,
           st.energy_first, st.energy_last);
    CHECK(after < 0.85 * before); /* the gradient's sign flipped: 2.6 -> 24 */
    o.lr_img = -1;
    CHECK(dap_distill_class(NULL, &ds, 1, &o, c, &st) == DAP_ERR_ARG);
    CHECK(strstr(dap_last_error(), "--lr-img") != NULL);
    dap_free_aligned(a), dap_free_aligned(b), dap_free_aligned(c);
    dap_dataset_free(&ds);
}
