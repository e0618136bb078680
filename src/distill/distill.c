/*
 * distill.c: random, vanilla and dap distillation of one class.
 *
 * dap (SPEC 3): a class's IPC samples share one DDIM trajectory loop. At every guided
 * step the N real samples of the class (drawn once per class) are noised to the current
 * t with fresh noise and run through the backbone to block l, once for all synthetic
 * samples; each synthetic sample's energy E = mean_j d_k(phi(x_t), phi(r_t^j)) is
 * differentiated through the partial backward to x_t, and the step is moved by
 * -gamma grad E (x form, Algorithm 1) or eps += gamma sqrt(1 - a_t) grad E (eps form).
 * With --repel lambda (an extension, default off) E also gets -lambda times the mean
 * distance to the class's other synthetic samples (guidance.h: the energy distance).
 * Model calls run in chunks of opts.batch samples.
 */
#include "distill/distill.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "diffusion/ddim.h"
#include "diffusion/dit_eps.h"
#include "diffusion/schedule.h"
#include "distill/guidance.h"
#include "distill/kmeans.h"

/* Random streams of a class (all keyed by the run's seed). */
#define STREAM_RANDOM_PICK (1ULL << 60)
#define STREAM_REAL_PICK (2ULL << 60)
#define STREAM_REAL_NOISE (3ULL << 60)
#define STREAM_KMEANS (4ULL << 60)
#define KMEANS_ITERS 50

void dap_distill_opts_default(dap_distill_opts *o) {
    memset(o, 0, sizeof *o);
    o->method = DAP_METHOD_DAP;
    o->ipc = 10;
    o->steps = 50;
    o->eta = 0.0;
    o->clip_x0 = 0.0; /* SPEC 2: the official sampler does not clip */
    o->cfg = 4.0;
    o->batch = 100;
    o->gamma = 1.0;
    o->kernel = DAP_KERNEL_LINEAR;
    o->sigma = 1.0;
    o->layer = 0; /* 0: about a quarter of the depth (the paper's blocks 4-12 of 28) */
    o->pool = DAP_POOL_FLATTEN;
    o->n_real = 100;
    o->stop = 0.5;
    o->form = DAP_FORM_X;
    o->init = DAP_INIT_NOISE;
    o->strength = 1.0;
}

int dap_init_parse(const char *s) {
    if (!strcmp(s, "noise")) return DAP_INIT_NOISE;
    if (!strcmp(s, "real")) return DAP_INIT_REAL;
    if (!strcmp(s, "kmeans")) return DAP_INIT_KMEANS;
    if (!strcmp(s, "medoid")) return DAP_INIT_MEDOID;
    return -1;
}

const char *dap_init_name(int i) {
    return i == DAP_INIT_REAL     ? "real"
           : i == DAP_INIT_KMEANS ? "kmeans"
           : i == DAP_INIT_MEDOID ? "medoid"
                                  : "noise";
}

int dap_init_skip(int S, double strength) {
    const int run = (int)nearbyint(strength * (double)S);
    return run < 1 ? S - 1 : run > S ? 0 : S - run;
}

int dap_method_parse(const char *s) {
    if (!strcmp(s, "random")) return DAP_METHOD_RANDOM;
    if (!strcmp(s, "vanilla")) return DAP_METHOD_VANILLA;
    if (!strcmp(s, "dap")) return DAP_METHOD_DAP;
    return -1;
}

const char *dap_method_name(int m) {
    return m == DAP_METHOD_RANDOM ? "random" : m == DAP_METHOD_VANILLA ? "vanilla" : "dap";
}

/* n distinct indices of class k, in a seeded random order. */
static int pick_class(const dap_dataset *ds, int k, int n, uint64_t seed, uint64_t stream, int *out) {
    const int count = ds->class_count[k];
    if (n > count)
        return dap_error(DAP_ERR_ARG, "class %d (%s) has %d images, %d requested", k,
                         ds->class_names ? ds->class_names[k] : "?", count, n);
    int *perm = dap_malloc(sizeof(int) * (size_t)count);
    memcpy(perm, ds->class_idx[k], sizeof(int) * (size_t)count);
    dap_rng r;
    dap_rng_init(&r, seed, stream | (uint64_t)k);
    dap_rng_shuffle(&r, perm, (size_t)count);
    memcpy(out, perm, sizeof(int) * (size_t)n);
    free(perm);
    return DAP_OK;
}

typedef struct class_run {
    const dap_dit *m;
    const dap_distill_opts *o;
    int k, n;          /* data class, synthetic samples */
    int label;         /* the model's label of class k */
    int layer, T, D, F;
    size_t per;
    dap_dit_eps eps;   /* CFG eps model, chunked */
    dap_dit_state *gst;/* synthetic samples: caches blocks 1..l for the partial backward */
    dap_dit_state *rst;/* real samples: forward only (no cache, much less memory) */
    float *real0;      /* (N, per) clean real samples */
    float *realt;      /* (chunk, per) noised */
    float *rfeat;      /* (N, F) pooled real features */
    float *sfeat;      /* (chunk, F) */
    float *allfeat;    /* (n, F) all synthetic features, for --repel when n > chunk */
    float *ds;         /* (chunk, F) dE/dfeatures */
    float *dtok;       /* (chunk, T, D) */
    float *grad;       /* (n, per) dE/dx_t */
    float *tf;         /* (chunk) */
    int *y;            /* (chunk) */
    dap_rng noise;     /* real-sample noise */
    float *fixed_xi;   /* (N, per) with fixed_noise */
    dap_distill_stats *st;
} class_run;

static int run_eps(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    class_run *r = ctx;
    const int chunk = r->o->batch;
    for (int i0 = 0; i0 < r->n; i0 += chunk) {
        const int b = r->n - i0 < chunk ? r->n - i0 : chunk;
        int *lab = r->y;
        for (int i = 0; i < b; i++) lab[i] = r->label;
        dap_dit_eps_set_labels(&r->eps, lab, b);
        DAP_TRY(dap_dit_eps_hook(&r->eps, eps + (size_t)i0 * r->per, x_t + (size_t)i0 * r->per, c));
    }
    return DAP_OK;
}

/* Synthetic samples i0..i0+b-1 through blocks 1..l of gst (cached for the partial
 * backward), pooled into feat (b, F). */
static void synth_features(class_run *r, const float *x_t, const dap_ddim_coef *c, int i0, int b, float *feat) {
    for (int i = 0; i < b; i++) r->tf[i] = (float)c->t, r->y[i] = r->label;
    dap_dit_state_set_batch(r->gst, b);
    dap_dit_forward(r->m, r->gst, NULL, x_t + (size_t)i0 * r->per, r->tf, r->y, r->layer);
    dap_pool_forward(feat, dap_dit_features(r->gst), b, r->T, r->D, r->o->pool);
}

/* grad (n, per) = dE/dx_t at this step; returns the mean energy. */
static double guidance_grad(class_run *r, const float *x_t, const dap_ddim_coef *c) {
    const dap_distill_opts *o = r->o;
    const int chunk = o->batch, N = o->n_real;
    const float sa = (float)sqrt(c->a_t), sb = (float)sqrt(1.0 - c->a_t);
    /* real features, once per step for the whole class */
    for (int j0 = 0; j0 < N; j0 += chunk) {
        const int b = N - j0 < chunk ? N - j0 : chunk;
        float *xi = r->realt;
        if (r->fixed_xi) memcpy(xi, r->fixed_xi + (size_t)j0 * r->per, sizeof(float) * (size_t)b * r->per);
        else dap_rng_normal(&r->noise, xi, (size_t)b * r->per, 0.0f, 1.0f);
        const float *x0 = r->real0 + (size_t)j0 * r->per;
        for (size_t q = 0; q < (size_t)b * r->per; q++) xi[q] = sa * x0[q] + sb * xi[q];
        for (int i = 0; i < b; i++) r->tf[i] = (float)c->t, r->y[i] = r->label;
        dap_dit_state_set_batch(r->rst, b);
        dap_dit_forward(r->m, r->rst, NULL, xi, r->tf, r->y, r->layer);
        dap_pool_forward(r->rfeat + (size_t)j0 * r->F, dap_dit_features(r->rst), b, r->T, r->D, o->pool);
    }
    /* --repel needs every synthetic feature of the class before any gradient; with one
     * chunk the loop below has them, else a forward pre-pass collects them */
    const int repel = o->repel != 0 && r->n > 1;
    if (repel && r->n > chunk)
        for (int i0 = 0; i0 < r->n; i0 += chunk)
            synth_features(r, x_t, c, i0, r->n - i0 < chunk ? r->n - i0 : chunk, r->allfeat + (size_t)i0 * r->F);
    /* synthetic: forward to block l, energy gradient, partial backward */
    double energy = 0;
    for (int i0 = 0; i0 < r->n; i0 += chunk) {
        const int b = r->n - i0 < chunk ? r->n - i0 : chunk;
        synth_features(r, x_t, c, i0, b, r->sfeat); /* again when pre-passed: gst caches one chunk */
        energy += b * dap_kernel_energy(r->ds, NULL, r->sfeat, b, r->rfeat, N, r->F, o->kernel, o->sigma);
        if (repel)
            energy += b * dap_kernel_repel(r->ds, NULL, r->sfeat, b, r->n > chunk ? r->allfeat : r->sfeat, r->n,
                                           r->n > chunk ? i0 : 0, o->repel, r->F, o->kernel, o->sigma);
        dap_pool_backward(r->dtok, r->ds, b, r->T, r->D, o->pool);
        dap_dit_backward_from_block(r->m, r->gst, r->layer, r->dtok, r->grad + (size_t)i0 * r->per);
    }
    energy /= r->n;
    if (r->st->guided_steps == 0) r->st->energy_first = energy;
    r->st->energy_last = energy;
    r->st->guided_steps++;
    return energy;
}

static int run_adjust_eps(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    class_run *r = ctx;
    if (!dap_ddim_step_guided(c->step, r->o->steps, r->o->stop)) return DAP_OK;
    guidance_grad(r, x_t, c);
    const float s = (float)(r->o->gamma * sqrt(1.0 - c->a_t));
    for (size_t q = 0; q < (size_t)r->n * r->per; q++) eps[q] += s * r->grad[q];
    return DAP_OK;
}

static int run_adjust_x(void *ctx, float *x_prev, const float *x_t, const float *eps,
                        const dap_ddim_coef *c) {
    (void)eps;
    class_run *r = ctx;
    if (!dap_ddim_step_guided(c->step, r->o->steps, r->o->stop)) return DAP_OK;
    guidance_grad(r, x_t, c);
    const float g = (float)r->o->gamma;
    for (size_t q = 0; q < (size_t)r->n * r->per; q++) x_prev[q] -= g * r->grad[q];
    return DAP_OK;
}

/* Replaces each of the n centres (in order) by the nearest row not taken by an earlier
 * centre (squared L2; ties: the lower row). */
static void nearest_rows(float *cen, int n, const float *rows, int count, size_t per) {
    char *taken = dap_calloc((size_t)count, 1);
    double *d = dap_malloc(sizeof(double) * (size_t)count);
    for (int i = 0; i < n; i++) {
        const float *c = cen + (size_t)i * per;
#pragma omp parallel for schedule(static)
        for (int j = 0; j < count; j++) {
            const float *r = rows + (size_t)j * per;
            double s = 0;
            for (size_t q = 0; q < per; q++) {
                double e = (double)r[q] - c[q];
                s += e * e;
            }
            d[j] = s;
        }
        int best = -1;
        for (int j = 0; j < count; j++)
            if (!taken[j] && (best < 0 || d[j] < d[best])) best = j;
        taken[best] = 1;
        memcpy(cen + (size_t)i * per, rows + (size_t)best * per, sizeof(float) * per);
    }
    free(d);
    free(taken);
}

/* --init real|kmeans|medoid: x (n, per) holds each sample's standard-normal draw xi on entry and
 * sqrt(a) x0 + sqrt(1 - a) xi on return, with x0 the sample's start image and a = alpha_bar
 * at the first step run. */
static int start_images(const dap_dataset *real, int k, const dap_distill_opts *o, const dap_schedule *sched,
                        int skip, float *x) {
    const int n = o->ipc;
    const size_t per = (size_t)real->c * real->h * real->w;
    float *x0 = dap_alloc_f32((size_t)n * per);
    int rc, t;
    if (o->init == DAP_INIT_REAL) {
        int *idx = dap_malloc(sizeof(int) * (size_t)n);
        rc = pick_class(real, k, n, o->seed, STREAM_RANDOM_PICK, idx); /* the random baseline's images */
        for (int i = 0; rc == DAP_OK && i < n; i++)
            memcpy(x0 + (size_t)i * per, real->x + (size_t)idx[i] * per, sizeof(float) * per);
        free(idx);
    } else {
        const int count = real->class_count[k];
        float *rows = dap_alloc_f32((size_t)count * per);
        for (int j = 0; j < count; j++)
            memcpy(rows + (size_t)j * per, real->x + (size_t)real->class_idx[k][j] * per, sizeof(float) * per);
        rc = count < n ? dap_error(DAP_ERR_ARG, "class %d (%s) has %d images, fewer than the %d k-means centres asked for", k,
                                   real->class_names ? real->class_names[k] : "?", count, n)
                       : dap_kmeans(rows, count, (int)per, n, KMEANS_ITERS, o->seed, STREAM_KMEANS | (uint64_t)k, x0,
                                    NULL, NULL);
        if (rc == DAP_OK && o->init == DAP_INIT_MEDOID) nearest_rows(x0, n, rows, count, per);
        dap_free_aligned(rows);
    }
    if (rc == DAP_OK && (rc = dap_ddim_start_t(sched->T, o->steps, skip, &t)) == DAP_OK) {
        const float sa = (float)sqrt(sched->alpha_bar[t]), sb = (float)sqrt(1.0 - sched->alpha_bar[t]);
        for (size_t q = 0; q < (size_t)n * per; q++) x[q] = sa * x0[q] + sb * x[q];
    }
    dap_free_aligned(x0);
    return rc;
}

int dap_distill_check(const dap_dit *m, const dap_distill_opts *o) {
    if (o->ipc < 1) return dap_error(DAP_ERR_ARG, "--ipc must be >= 1 (got %d)", o->ipc);
    if (o->init < DAP_INIT_NOISE || o->init > DAP_INIT_MEDOID) return dap_error(DAP_ERR_ARG, "--init: unknown start %d", o->init);
    if (!(o->strength > 0 && o->strength <= 1))
        return dap_error(DAP_ERR_ARG, "--strength must be in (0, 1] (got %g)", o->strength);
    if (o->init == DAP_INIT_NOISE && o->strength != 1)
        return dap_error(DAP_ERR_ARG, "--strength %g needs a start image (--init real, kmeans or medoid); from noise the whole trajectory runs",
                         o->strength);
    if (o->method == DAP_METHOD_RANDOM)
        return o->init == DAP_INIT_NOISE ? DAP_OK
                                         : dap_error(DAP_ERR_ARG, "--init %s applies to vanilla and dap, not random", dap_init_name(o->init));
    if (!m) return dap_error(DAP_ERR_ARG, "method %s needs a diffusion model (--model)", dap_method_name(o->method));
    if (o->steps < 1 || o->steps > 1000) return dap_error(DAP_ERR_ARG, "--steps must be in 1..1000 (got %d)", o->steps);
    if (o->batch < 1) return dap_error(DAP_ERR_ARG, "--batch must be >= 1 (got %d)", o->batch);
    if (!(o->eta >= 0)) return dap_error(DAP_ERR_ARG, "--eta must be >= 0 (got %g)", o->eta);
    if (!(o->clip_x0 >= 0)) return dap_error(DAP_ERR_ARG, "--clip-x0 must be >= 0 (got %g)", o->clip_x0);
    if (!(fabs(o->cfg) <= DAP_CFG_MAX))
        return dap_error(DAP_ERR_ARG, "--cfg must be in [-%g, %g] (larger scales saturate every pixel), got %g", DAP_CFG_MAX,
                         DAP_CFG_MAX, o->cfg);
    if (o->cfg != 1.0 && !(m->cfg.class_dropout > 0))
        return dap_error(DAP_ERR_ARG, "--cfg %g needs a model with a null class; this one has none (use --cfg 1)", o->cfg);
    if (o->method != DAP_METHOD_DAP) return DAP_OK;
    if (o->layer < 1 || o->layer > m->cfg.depth)
        return dap_error(DAP_ERR_ARG, "--layer must be in 1..%d (the model's depth), got %d", m->cfg.depth, o->layer);
    if (o->n_real < 1) return dap_error(DAP_ERR_ARG, "--n-real must be >= 1 (got %d)", o->n_real);
    if (!(o->stop >= 0 && o->stop <= 1)) return dap_error(DAP_ERR_ARG, "--stop must be in [0, 1] (got %g)", o->stop);
    if (o->kernel == DAP_KERNEL_RBF && !(o->sigma > 0))
        return dap_error(DAP_ERR_ARG, "--sigma (RBF bandwidth) must be > 0 (got %g)", o->sigma);
    if (!(fabs(o->gamma) <= DAP_GAMMA_MAX))
        return dap_error(DAP_ERR_ARG, "--gamma must be in [-%g, %g] (larger scales saturate every pixel), got %g",
                         DAP_GAMMA_MAX, DAP_GAMMA_MAX, o->gamma);
    if (!(o->repel >= 0 && isfinite(o->repel))) return dap_error(DAP_ERR_ARG, "--repel must be finite and >= 0 (got %g)", o->repel);
    return DAP_OK;
}

int dap_distill_check_class(const dap_dit *m, const dap_dataset *real, int k, const dap_distill_opts *o) {
    DAP_ASSERT(k >= 0 && k < real->num_classes);
    const char *name = real->class_names ? real->class_names[k] : "?";
    const int count = real->class_count[k];
    if ((o->method == DAP_METHOD_RANDOM || o->init != DAP_INIT_NOISE) && count < o->ipc)
        return o->method != DAP_METHOD_RANDOM && (o->init == DAP_INIT_KMEANS || o->init == DAP_INIT_MEDOID)
                   ? dap_error(DAP_ERR_ARG, "class %d (%s) has %d images, fewer than the %d k-means centres asked for", k,
                               name, count, o->ipc)
                   : dap_error(DAP_ERR_ARG, "class %d (%s) has %d images, %d requested (--ipc)", k, name, count, o->ipc);
    if (o->method == DAP_METHOD_RANDOM) return DAP_OK;
    if (!m) return dap_error(DAP_ERR_ARG, "method %s needs a diffusion model (--model)", dap_method_name(o->method));
    const dap_dit_config *mc = &m->cfg;
    if (mc->in_channels != real->c || mc->input_size != real->h || real->h != real->w)
        return dap_error(DAP_ERR_SHAPE, "model takes %dx%dx%d images, the data has %dx%dx%d", mc->in_channels,
                         mc->input_size, mc->input_size, real->c, real->h, real->w);
    const int label = o->labels ? o->labels[k] : k;
    if (label < 0 || label >= mc->num_classes)
        return dap_error(DAP_ERR_SHAPE, "class %d (%s): label %d is outside the model's %d classes", k, name, label,
                         mc->num_classes);
    if (o->method == DAP_METHOD_DAP && count < o->n_real)
        return dap_error(DAP_ERR_ARG, "class %d (%s) has %d images, fewer than --n-real %d", k, name, count, o->n_real);
    return DAP_OK;
}

int dap_distill_class(const dap_dit *m, const dap_dataset *real, int k, const dap_distill_opts *o,
                      float *out, dap_distill_stats *st) {
    DAP_ASSERT(k >= 0 && k < real->num_classes);
    memset(st, 0, sizeof *st);
    const double t0 = dap_time_now();
    const size_t per = (size_t)real->c * real->h * real->w;
    dap_distill_opts oo = *o;
    if (oo.method == DAP_METHOD_DAP && oo.layer == 0 && m) oo.layer = (m->cfg.depth + 2) / 4;
    DAP_TRY(dap_distill_check(m, &oo));

    if (oo.method == DAP_METHOD_RANDOM) {
        int *idx = dap_malloc(sizeof(int) * (size_t)oo.ipc);
        int rc = pick_class(real, k, oo.ipc, oo.seed, STREAM_RANDOM_PICK, idx);
        for (int i = 0; rc == DAP_OK && i < oo.ipc; i++)
            memcpy(out + (size_t)i * per, real->x + (size_t)idx[i] * per, sizeof(float) * per);
        free(idx);
        st->seconds = dap_time_now() - t0;
        return rc;
    }

    const dap_dit_config *mc = &m->cfg;
    DAP_TRY(dap_distill_check_class(m, real, k, &oo));
    const int label = oo.labels ? oo.labels[k] : k;

    class_run r = {0};
    r.m = m, r.o = &oo, r.k = k, r.label = label, r.n = oo.ipc, r.per = per, r.st = st;
    const int chunk = oo.batch;
    dap_dit_eps_init(&r.eps, m, chunk < r.n ? chunk : r.n, oo.cfg);
    r.y = dap_malloc(sizeof(int) * (size_t)chunk);
    r.tf = dap_alloc_f32((size_t)chunk);
    int rc = DAP_OK;
    if (oo.method == DAP_METHOD_DAP) {
        r.layer = oo.layer, r.T = m->tokens, r.D = mc->hidden;
        r.F = dap_pool_dim(r.T, r.D, oo.pool);
        const int N = oo.n_real;
        int *idx = dap_malloc(sizeof(int) * (size_t)N);
        rc = pick_class(real, k, N, oo.seed, STREAM_REAL_PICK, idx);
        r.real0 = dap_alloc_f32((size_t)N * per);
        for (int j = 0; rc == DAP_OK && j < N; j++)
            memcpy(r.real0 + (size_t)j * per, real->x + (size_t)idx[j] * per, sizeof(float) * per);
        free(idx);
        r.gst = dap_dit_state_create_ex(m, chunk < r.n ? chunk : r.n, r.layer);
        r.rst = dap_dit_state_create_ex(m, chunk < N ? chunk : N, 0);
        r.realt = dap_alloc_f32((size_t)chunk * per);
        r.rfeat = dap_alloc_f32((size_t)N * r.F);
        r.sfeat = dap_alloc_f32((size_t)chunk * r.F);
        if (oo.repel != 0 && r.n > chunk) r.allfeat = dap_alloc_f32((size_t)r.n * r.F);
        r.ds = dap_alloc_f32((size_t)chunk * r.F);
        r.dtok = dap_alloc_f32((size_t)chunk * r.T * r.D);
        r.grad = dap_alloc_f32((size_t)r.n * per);
        dap_rng_init(&r.noise, oo.seed, STREAM_REAL_NOISE | (uint64_t)k);
        if (oo.fixed_noise) {
            r.fixed_xi = dap_alloc_f32((size_t)N * per);
            dap_rng_normal(&r.noise, r.fixed_xi, (size_t)N * per, 0.0f, 1.0f);
        }
    }
    if (rc == DAP_OK) {
        dap_schedule sched;
        dap_schedule_init_default(&sched);
        dap_rng *rngs = dap_malloc(sizeof(dap_rng) * (size_t)r.n);
        for (int i = 0; i < r.n; i++) {
            dap_sample_rng(&rngs[i], oo.seed, k, i);
            dap_rng_normal(&rngs[i], out + (size_t)i * per, per, 0.0f, 1.0f);
        }
        dap_ddim_hooks h = {.eps = run_eps, .ctx = &r, .clip_x0 = oo.clip_x0};
        if (oo.init != DAP_INIT_NOISE) {
            h.skip = dap_init_skip(oo.steps, oo.strength);
            rc = start_images(real, k, &oo, &sched, h.skip, out);
        }
        if (oo.method == DAP_METHOD_DAP && oo.gamma != 0) {
            if (oo.form == DAP_FORM_EPS) h.adjust_eps = run_adjust_eps;
            else h.adjust_x = run_adjust_x;
        }
        if (rc == DAP_OK) rc = dap_ddim_sample(&sched, oo.steps, oo.eta, out, r.n, per, rngs, &h);
        free(rngs);
        dap_schedule_free(&sched);
        for (size_t q = 0; q < (size_t)r.n * per; q++) /* clamp, NaN -> error below */
            out[q] = out[q] < -1.f ? -1.f : out[q] > 1.f ? 1.f : out[q];
        for (size_t q = 0; rc == DAP_OK && q < (size_t)r.n * per; q++)
            if (isnan(out[q])) rc = dap_error(DAP_ERR_VALUE, "class %d: sampling produced NaN (guidance scale too large?)", k);
    }
    dap_dit_eps_free(&r.eps);
    if (r.gst) dap_dit_state_destroy(r.gst);
    if (r.rst) dap_dit_state_destroy(r.rst);
    free(r.y);
    dap_free_aligned(r.tf), dap_free_aligned(r.real0), dap_free_aligned(r.realt);
    dap_free_aligned(r.rfeat), dap_free_aligned(r.sfeat), dap_free_aligned(r.allfeat), dap_free_aligned(r.ds);
    dap_free_aligned(r.dtok), dap_free_aligned(r.grad), dap_free_aligned(r.fixed_xi);
    st->seconds = dap_time_now() - t0;
    return rc;
}
