/*
 * test_diffusion.c: the schedule and timestep spacing against DiT's Python
 * (numbers from tests/gen/gen_diffusion.py), forward noising, classifier-free
 * guidance, DDIM with an oracle eps (recovers x0 exactly), DDIM statistics on a
 * Gaussian toy (eta 0 and 1), and the sampler's hooks.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "diffusion/ddim.h"
#include "diffusion/schedule.h"
#include "test.h"

static int check_spacing(int S, const int *want) {
    int got[1000];
    if (dap_timestep_spacing(1000, S, got) != DAP_OK) return 0;
    int bad = 0;
    for (int i = 0; i < S; i++)
        if (got[i] != want[i]) {
            if (!bad) printf("  S=%d: taus[%d] = %d, DiT %d\n", S, i, got[i], want[i]);
            bad++;
        }
    return bad == 0;
}

DAP_TEST(diffusion_spacing_matches_dit) {
    static const int s50[50] = {0,   20,  41,  61,  82,  102, 122, 143, 163, 183, 204, 224, 245,
                                265, 285, 306, 326, 347, 367, 387, 408, 428, 449, 469, 489, 510,
                                530, 550, 571, 591, 612, 632, 652, 673, 693, 714, 734, 754, 775,
                                795, 816, 836, 856, 877, 897, 917, 938, 958, 979, 999};
    static const int s10[10] = {0, 111, 222, 333, 444, 555, 666, 777, 888, 999};
    static const int s7[7] = {0, 166, 333, 500, 666, 832, 999}; /* round half to even */
    static const int s1[1] = {0};
    CHECK(check_spacing(50, s50));
    CHECK(check_spacing(10, s10));
    CHECK(check_spacing(7, s7));
    CHECK(check_spacing(1, s1));
    int all[1000];
    CHECK(dap_timestep_spacing(1000, 1000, all) == DAP_OK);
    int ident = 1;
    for (int i = 0; i < 1000; i++) ident &= all[i] == i;
    CHECK(ident);
    CHECK(dap_timestep_spacing(1000, 0, all) == DAP_ERR_ARG);
    CHECK(dap_timestep_spacing(1000, 1001, all) == DAP_ERR_ARG);
    CHECK_MSG(strstr(dap_last_error(), "1001") != NULL, "message: %s", dap_last_error());
}

DAP_TEST(diffusion_schedule_values) {
    dap_schedule s;
    dap_schedule_init_default(&s);
    CHECK(s.T == 1000);
    CHECK(s.beta[0] == 1e-4 && s.beta[999] == 0.02);
    /* numpy: cumprod(1 - linspace(1e-4, 0.02, 1000)) in float64. */
    static const struct { int t; double ab; } want[] = {{0, 0.99990000000000001},
                                                       {1, 0.99978009207207208},
                                                       {499, 0.078587242881778235},
                                                       {998, 4.118193638138445e-05},
                                                       {999, 4.0358297653756761e-05}};
    double worst = 0.0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        double rel = fabs(s.alpha_bar[want[i].t] - want[i].ab) / want[i].ab;
        if (rel > worst) worst = rel;
    }
    printf("  alpha_bar vs numpy: max rel %.3g\n", worst);
    CHECK_MSG(worst < 1e-13, "max rel %g", worst);
    dap_schedule_free(&s);
}

DAP_TEST(diffusion_q_sample) {
    dap_schedule s;
    dap_schedule_init_default(&s);
    const float x0[6] = {1, -2, 0.5f, 3, 0, -1}, noise[6] = {0.1f, 0.2f, -0.3f, 1, -1, 2};
    const int t[2] = {0, 999};
    float xt[6];
    dap_q_sample(&s, xt, x0, noise, t, 2, 3);
    double worst = 0.0;
    for (int i = 0; i < 6; i++) {
        double ab = s.alpha_bar[t[i / 3]];
        double want = sqrt(ab) * x0[i] + sqrt(1 - ab) * noise[i];
        worst = fmax(worst, fabs(xt[i] - want));
    }
    printf("  q_sample: max abs %.3g\n", worst);
    CHECK(worst < 1e-6);
    dap_schedule_free(&s);
}

DAP_TEST(diffusion_ddim_sigma_and_coefs) {
    dap_schedule s;
    dap_schedule_init_default(&s);
    int taus[50];
    dap_timestep_spacing(1000, 50, taus);
    static const struct { int step, t, t_prev; double sigma; } want[] = {
        {0, 999, 979, 0.28714217539236825},
        {24, 510, 489, 0.216727315442689},
        {48, 20, 0, 0.0049601805149898127},
        {49, 0, -1, 0.0}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        dap_ddim_coef c;
        dap_ddim_coef_at(&s, taus, 50, want[i].step, 0.5, &c);
        CHECK(c.t == want[i].t && c.t_prev == want[i].t_prev);
        CHECK_NEAR(c.sigma, want[i].sigma, 1e-12);
        if (want[i].t_prev < 0) CHECK(c.a_prev == 1.0);
    }
    dap_ddim_coef c;
    dap_ddim_coef_at(&s, taus, 50, 10, 0.0, &c);
    CHECK(c.sigma == 0.0);
    dap_schedule_free(&s);
}

DAP_TEST(diffusion_cfg_combine) {
    /* B 2, C 2, learn_sigma C_out 4, HW 3: guided eps on the first 2 channels only. */
    float cond[2 * 4 * 3], null[2 * 4 * 3], eps[2 * 2 * 3], eps1[2 * 2 * 3];
    for (int i = 0; i < 24; i++) {
        cond[i] = (float)i;
        null[i] = (float)(i % 5) - 2.0f;
    }
    dap_cfg_combine(eps, cond, null, 2, 4, 2, 3, 4.0);
    int bad = 0;
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 6; k++) {
            int src = b * 12 + k;
            bad += eps[b * 6 + k] != null[src] + 4.0f * (cond[src] - null[src]);
        }
    CHECK(bad == 0);
    dap_cfg_combine(eps, cond, null, 2, 4, 2, 3, 1.0);
    dap_eps_from_output(eps1, cond, 2, 4, 2, 3);
    CHECK(memcmp(eps, eps1, sizeof eps) == 0);
    CHECK(eps1[6] == 12.0f); /* batch 1 starts at channel 0 of sample 1's output */
}

/* ---- DDIM with an oracle ------------------------------------------------------------- */

typedef struct oracle {
    const dap_schedule *s;
    const float *x0; /* exact target: eps = (x_t - sqrt(a) x0) / sqrt(1 - a) */
    double mu, var;  /* Gaussian toy: x0 ~ N(mu, var) per value, eps = E[xi | x_t] */
    int gaussian;
    size_t n;
    int calls, eps_calls, x_calls, order_ok;
} oracle;

static int oracle_eps(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    oracle *o = ctx;
    const double a = o->s->alpha_bar[c->t];
    o->order_ok &= c->step == o->calls;
    o->calls++;
    for (size_t i = 0; i < o->n; i++) {
        if (o->gaussian)
            eps[i] = (float)(sqrt(1 - a) * (x_t[i] - sqrt(a) * o->mu) / (a * o->var + 1 - a));
        else
            eps[i] = (float)((x_t[i] - sqrt(a) * o->x0[i]) / sqrt(1 - a));
    }
    return DAP_OK;
}

static void fill_noise(float *x, size_t n, uint64_t seed) {
    dap_rng r;
    dap_rng_init(&r, seed, 0);
    dap_rng_normal(&r, x, n, 0.0f, 1.0f);
}

DAP_TEST(diffusion_ddim_oracle_recovers_x0) {
    dap_schedule s;
    dap_schedule_init_default(&s);
    enum { N = 4096 };
    float *x0 = malloc(N * sizeof(float)), *x = malloc(N * sizeof(float));
    fill_noise(x0, N, 1);
    for (int i = 0; i < N; i++) x0[i] = 0.5f * x0[i] + 0.2f;
    const double etas[2] = {0.0, 1.0};
    for (int k = 0; k < 2; k++) {
        fill_noise(x, N, 2);
        oracle o = {.s = &s, .x0 = x0, .n = N, .order_ok = 1};
        dap_ddim_hooks h = {.eps = oracle_eps, .ctx = &o};
        dap_rng rng;
        dap_rng_init(&rng, 3, 0);
        CHECK(dap_ddim_sample(&s, 50, etas[k], x, 1, N, &rng, &h) == DAP_OK);
        double worst = 0.0;
        for (int i = 0; i < N; i++) worst = fmax(worst, fabs(x[i] - x0[i]));
        printf("  eta %g: |x - x0| max %.3g\n", etas[k], worst);
        CHECK_MSG(worst < 2e-5, "eta %g: max abs %g", etas[k], worst);
        CHECK(o.calls == 50 && o.order_ok);
    }
    free(x0);
    free(x);
    dap_schedule_free(&s);
}

static void moments(const float *x, size_t n, double *mean, double *std) {
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    *mean = s / (double)n;
    for (size_t i = 0; i < n; i++) s2 += (x[i] - *mean) * (x[i] - *mean);
    *std = sqrt(s2 / (double)(n - 1));
}

/* Exact mean and std of DDIM's output for Gaussian data N(mu, var) with its exact eps
 * and x_T ~ N(0, 1): eps is affine in x_t, so each step maps N(m, v) to
 * N(A m + B, A^2 v + sigma^2). (Few-step DDIM does not reproduce N(mu, var): with
 * 50 steps the std comes out near 0.47 (eta 0) and 0.44 (eta 1) instead of 0.5.) */
static void ddim_gaussian_moments(const dap_schedule *s, int S, double eta, double mu, double var,
                                  double *mean, double *std) {
    int taus[1000];
    dap_timestep_spacing(s->T, S, taus);
    double m = 0.0, v = 1.0;
    for (int step = 0; step < S; step++) {
        dap_ddim_coef c;
        dap_ddim_coef_at(s, taus, S, step, eta, &c);
        const double sa = sqrt(c.a_t), s1 = sqrt(1 - c.a_t), sap = sqrt(c.a_prev);
        const double d = sqrt(fmax(0.0, 1 - c.a_prev - c.sigma * c.sigma));
        const double k = s1 / (c.a_t * var + 1 - c.a_t);
        const double A = sap * (1 - s1 * k) / sa + d * k, B = k * mu * (sap * s1 - d * sa);
        m = A * m + B;
        v = A * A * v + c.sigma * c.sigma;
    }
    *mean = m;
    *std = sqrt(v);
}

DAP_TEST(diffusion_ddim_gaussian_statistics) {
    /* Data N(0.3, 0.5^2) with its exact eps: sample mean and std must match the exact
     * moments of the DDIM map for eta 0 (deterministic) and eta 1 (stochastic); eta 1
     * must differ from eta 0. */
    dap_schedule s;
    dap_schedule_init_default(&s);
    const size_t N = getenv("DAP_TEST_FAST") ? 10000 : 40000;
    float *x = malloc(N * sizeof(float)), *x_det = malloc(N * sizeof(float));
    const double etas[2] = {0.0, 1.0};
    for (int k = 0; k < 2; k++) {
        fill_noise(x, N, 7);
        oracle o = {.s = &s, .mu = 0.3, .var = 0.25, .gaussian = 1, .n = N, .order_ok = 1};
        dap_ddim_hooks h = {.eps = oracle_eps, .ctx = &o};
        dap_rng rng;
        dap_rng_init(&rng, 8, 0);
        CHECK(dap_ddim_sample(&s, 50, etas[k], x, 1, N, &rng, &h) == DAP_OK);
        double mean, std, want_mean, want_std;
        moments(x, N, &mean, &std);
        ddim_gaussian_moments(&s, 50, etas[k], 0.3, 0.25, &want_mean, &want_std);
        printf("  eta %g: mean %.4f (exact %.4f), std %.4f (exact %.4f)\n", etas[k], mean,
               want_mean, std, want_std);
        const double se_mean = want_std / sqrt((double)N), se_std = want_std / sqrt(2.0 * N);
        CHECK_MSG(fabs(mean - want_mean) < 5 * se_mean, "eta %g mean %g", etas[k], mean);
        CHECK_MSG(fabs(std - want_std) < 5 * se_std + 1e-4, "eta %g std %g", etas[k], std);
        if (k == 0) {
            /* eta 0 is an affine map x_T -> want_std x_T + want_mean: check per value. */
            memcpy(x_det, x, N * sizeof(float));
            float *xT = malloc(N * sizeof(float));
            fill_noise(xT, N, 7);
            double worst = 0.0;
            for (size_t i = 0; i < N; i++)
                worst = fmax(worst, fabs(x[i] - (want_std * xT[i] + want_mean)));
            printf("  eta 0 vs exact affine map: max abs %.3g\n", worst);
            CHECK_MSG(worst < 1e-5, "eta 0 affine map: max abs %g", worst);
            free(xT);
        }
    }
    double diff = 0.0;
    for (size_t i = 0; i < N; i++) diff = fmax(diff, fabs(x[i] - x_det[i]));
    CHECK_MSG(diff > 0.1, "eta 1 equals eta 0 (max diff %g)", diff);
    free(x);
    free(x_det);
    dap_schedule_free(&s);
}

/* ---- hooks ------------------------------------------------------------------------------ */

typedef struct hook_log {
    oracle o;
    int eps_steps[64], x_steps[64], n_eps, n_x;
    float shift; /* added to x_prev by adjust_x on guided steps */
    double stop;
} hook_log;

static int log_eps(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    hook_log *l = ctx;
    (void)eps;
    (void)x_t;
    l->eps_steps[l->n_eps++] = c->t;
    return DAP_OK;
}

static int shift_x(void *ctx, float *x_prev, const float *x_t, const float *eps,
                   const dap_ddim_coef *c) {
    hook_log *l = ctx;
    (void)x_t;
    (void)eps;
    l->x_steps[l->n_x++] = c->t;
    if (dap_ddim_step_guided(c->step, 10, l->stop))
        for (size_t i = 0; i < l->o.n; i++) x_prev[i] += l->shift;
    return DAP_OK;
}

static int log_model(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    return oracle_eps(&((hook_log *)ctx)->o, eps, x_t, c);
}

static int fail_at_3(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    (void)ctx;
    (void)eps;
    (void)x_t;
    return c->step == 3 ? dap_error(DAP_ERR_VALUE, "hook failed") : DAP_OK;
}

DAP_TEST(diffusion_ddim_hooks) {
    dap_schedule s;
    dap_schedule_init_default(&s);
    float x0[8] = {0}, x[8];
    hook_log l = {.o = {.s = &s, .x0 = x0, .n = 8, .order_ok = 1}, .shift = 0.0f, .stop = 0.5};
    dap_ddim_hooks h = {.eps = log_model, .adjust_eps = log_eps, .adjust_x = shift_x, .ctx = &l};
    fill_noise(x, 8, 4);
    CHECK(dap_ddim_sample(&s, 10, 0.0, x, 2, 4, NULL, &h) == DAP_OK);
    static const int want_t[10] = {999, 888, 777, 666, 555, 444, 333, 222, 111, 0};
    CHECK(l.n_eps == 10 && l.n_x == 10);
    CHECK(memcmp(l.eps_steps, want_t, sizeof want_t) == 0 && memcmp(l.x_steps, want_t, sizeof want_t) == 0);

    /* Early stop: 5 of 10 steps guided with stop 0.5; all with 0; none with 1. */
    int g = 0, g0 = 0, g1 = 0;
    for (int i = 0; i < 10; i++) {
        g += dap_ddim_step_guided(i, 10, 0.5);
        g0 += dap_ddim_step_guided(i, 10, 0.0);
        g1 += dap_ddim_step_guided(i, 10, 1.0);
    }
    CHECK(g == 5 && g0 == 10 && g1 == 0);
    CHECK(dap_ddim_step_guided(24, 50, 0.5) && !dap_ddim_step_guided(25, 50, 0.5));

    /* With the Gaussian-toy model, a shift of x_prev on guided steps changes the
     * result; with no guided step (stop 1) the result is the unguided one exactly. */
    float base[8];
    const oracle gauss = {.s = &s, .mu = 0.3, .var = 0.25, .gaussian = 1, .n = 8, .order_ok = 1};
    fill_noise(base, 8, 4);
    l = (hook_log){.o = gauss, .shift = 0.0f, .stop = 0.5};
    CHECK(dap_ddim_sample(&s, 10, 0.0, base, 2, 4, NULL, &h) == DAP_OK);
    fill_noise(x, 8, 4);
    l = (hook_log){.o = gauss, .shift = 1.0f, .stop = 1.0};
    CHECK(dap_ddim_sample(&s, 10, 0.0, x, 2, 4, NULL, &h) == DAP_OK);
    CHECK(memcmp(x, base, sizeof x) == 0);
    fill_noise(x, 8, 4);
    l = (hook_log){.o = gauss, .shift = 1.0f, .stop = 0.5};
    CHECK(dap_ddim_sample(&s, 10, 0.0, x, 2, 4, NULL, &h) == DAP_OK);
    CHECK_MSG(fabsf(x[0] - base[0]) > 0.01f, "guided shift had no effect: %g vs %g", x[0], base[0]);

    /* A failing hook stops the loop with its status. */
    dap_ddim_hooks hf = {.eps = log_model, .adjust_eps = fail_at_3, .ctx = &l};
    l.n_eps = l.n_x = 0;
    l.o.calls = 0;
    CHECK(dap_ddim_sample(&s, 10, 0.0, x, 2, 4, NULL, &hf) == DAP_ERR_VALUE);
    CHECK(l.o.calls == 4);
    CHECK(dap_ddim_sample(&s, 0, 0.0, x, 2, 4, NULL, &hf) == DAP_ERR_ARG);
    dap_schedule_free(&s);
}

/* A partial trajectory (hooks.skip): running the first `skip` steps by hand and then the
 * sampler with skip gives the full run bit for bit; dap_ddim_start_t names the first
 * timestep run; a bad skip is refused. */
static int count_eps(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    hook_log *l = ctx;
    l->eps_steps[l->n_eps++] = c->t;
    return oracle_eps(&l->o, eps, x_t, c);
}

DAP_TEST(diffusion_ddim_skip) {
    dap_schedule s;
    dap_schedule_init_default(&s);
    const oracle gauss = {.s = &s, .mu = 0.3, .var = 0.25, .gaussian = 1, .n = 8, .order_ok = 1};
    float full[8], x[8], eps[8];
    fill_noise(full, 8, 6);
    memcpy(x, full, sizeof x);
    hook_log l = {.o = gauss};
    dap_ddim_hooks h = {.eps = count_eps, .ctx = &l};
    CHECK(dap_ddim_sample(&s, 10, 0.0, full, 2, 4, NULL, &h) == DAP_OK);
    int taus[10];
    CHECK(dap_timestep_spacing(s.T, 10, taus) == DAP_OK);
    oracle hand = gauss;
    for (int step = 0; step < 3; step++) { /* the first three steps by hand */
        dap_ddim_coef c;
        dap_ddim_coef_at(&s, taus, 10, step, 0.0, &c);
        CHECK(oracle_eps(&hand, eps, x, &c) == DAP_OK);
        dap_ddim_step(&c, x, NULL, x, eps, NULL, 8);
    }
    l = (hook_log){.o = gauss};
    h.skip = 3;
    CHECK(dap_ddim_sample(&s, 10, 0.0, x, 2, 4, NULL, &h) == DAP_OK);
    CHECK(l.n_eps == 7 && l.eps_steps[0] == 666);
    CHECK(memcmp(x, full, sizeof x) == 0);
    int t = -1;
    CHECK(dap_ddim_start_t(s.T, 10, 3, &t) == DAP_OK && t == 666);
    CHECK(dap_ddim_start_t(s.T, 10, 0, &t) == DAP_OK && t == 999);
    CHECK(dap_ddim_start_t(s.T, 10, 9, &t) == DAP_OK && t == 0);
    CHECK(dap_ddim_start_t(s.T, 10, 10, &t) == DAP_ERR_ARG);
    h.skip = 10;
    CHECK(dap_ddim_sample(&s, 10, 0.0, x, 2, 4, NULL, &h) == DAP_ERR_ARG);
    h.skip = -1;
    CHECK(dap_ddim_sample(&s, 10, 0.0, x, 2, 4, NULL, &h) == DAP_ERR_ARG);
    dap_schedule_free(&s);
}

DAP_TEST(diffusion_ddim_batch_independent) {
    /* eta 1: a sample's result must not depend on the batch it runs in. */
    dap_schedule s;
    dap_schedule_init_default(&s);
    enum { B = 4, PER = 16 };
    float xb[B * PER], x1[PER];
    fill_noise(xb, B * PER, 11);
    float x_init[B * PER];
    memcpy(x_init, xb, sizeof xb);
    dap_rng rngs[B];
    for (int b = 0; b < B; b++) dap_rng_init(&rngs[b], 5, (uint64_t)b);
    oracle o = {.s = &s, .mu = 0.3, .var = 0.25, .gaussian = 1, .n = B * PER, .order_ok = 1};
    dap_ddim_hooks h = {.eps = oracle_eps, .ctx = &o};
    CHECK(dap_ddim_sample(&s, 20, 1.0, xb, B, PER, rngs, &h) == DAP_OK);
    double worst = 0.0;
    for (int b = 0; b < B; b++) {
        memcpy(x1, x_init + b * PER, sizeof x1);
        dap_rng r;
        dap_rng_init(&r, 5, (uint64_t)b);
        oracle o1 = {.s = &s, .mu = 0.3, .var = 0.25, .gaussian = 1, .n = PER, .order_ok = 1};
        dap_ddim_hooks h1 = {.eps = oracle_eps, .ctx = &o1};
        CHECK(dap_ddim_sample(&s, 20, 1.0, x1, 1, PER, &r, &h1) == DAP_OK);
        for (int i = 0; i < PER; i++) worst = fmax(worst, fabs(x1[i] - xb[b * PER + i]));
    }
    printf("  batched vs one by one: max abs %.3g\n", worst);
    CHECK(worst == 0.0);
    dap_schedule_free(&s);
}

/* x0 clamping: a large limit is the plain step; a limit that binds gives the DDIM update
 * of the clamped x0 with eps re-derived from it (checked in double); an oracle whose x0
 * lies outside [-1, 1] ends, clamped, at clamp(x0). */
DAP_TEST(diffusion_ddim_clip_x0) {
    dap_schedule s;
    dap_schedule_init_default(&s);
    enum { N = 2048, S = 20 };
    int taus[S];
    CHECK(dap_timestep_spacing(s.T, S, taus) == DAP_OK);
    float *xt = malloc(N * sizeof(float)), *eps = malloc(N * sizeof(float)), *z = malloc(N * sizeof(float));
    float *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
    fill_noise(xt, N, 11);
    fill_noise(eps, N, 12);
    fill_noise(z, N, 13);
    for (int i = 0; i < N; i++) xt[i] *= 2.0f;
    double worst = 0.0;
    for (int step = 0; step < S; step += 3) {
        dap_ddim_coef c;
        dap_ddim_coef_at(&s, taus, S, step, 0.5, &c);
        dap_ddim_step(&c, a, NULL, xt, eps, z, N);
        dap_ddim_step_clip(&c, b, xt, eps, z, N, 1e9);
        for (int i = 0; i < N; i++) CHECK_NEAR(a[i], b[i], 1e-5 * (1 + fabs(a[i])));
        dap_ddim_step_clip(&c, b, xt, eps, z, N, 1.0);
        int bound = 0;
        for (int i = 0; i < N; i++) {
            double x0 = (xt[i] - sqrt(1 - c.a_t) * eps[i]) / sqrt(c.a_t);
            bound += fabs(x0) > 1.0;
            x0 = fmin(1.0, fmax(-1.0, x0));
            const double e = (xt[i] - sqrt(c.a_t) * x0) / sqrt(1 - c.a_t);
            const double want = sqrt(c.a_prev) * x0 + sqrt(fmax(0, 1 - c.a_prev - c.sigma * c.sigma)) * e +
                                c.sigma * z[i];
            worst = fmax(worst, fabs(want - b[i]) / (1 + fabs(want)));
        }
        CHECK(bound > 0);
    }
    printf("  clamped step vs double reference: max rel %.3g\n", worst);
    CHECK(worst < 2e-5);
    /* an oracle for x0 in [-3, 3]: the clamped sampler ends at clamp(x0) */
    float *x0 = malloc(N * sizeof(float));
    fill_noise(x0, N, 14);
    for (int i = 0; i < N; i++) x0[i] *= 1.5f;
    fill_noise(a, N, 15);
    oracle o = {.s = &s, .x0 = x0, .n = N, .order_ok = 1};
    dap_ddim_hooks h = {.eps = oracle_eps, .ctx = &o, .clip_x0 = 1.0};
    CHECK(dap_ddim_sample(&s, 50, 0.0, a, 1, N, NULL, &h) == DAP_OK);
    double w2 = 0.0;
    for (int i = 0; i < N; i++) w2 = fmax(w2, fabs(a[i] - fmin(1.0, fmax(-1.0, x0[i]))));
    printf("  clamped oracle sample vs clamp(x0): max abs %.3g\n", w2);
    CHECK(w2 < 1e-4);
    free(x0);
    free(xt);
    free(eps);
    free(z);
    free(a);
    free(b);
    dap_schedule_free(&s);
}
