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
 * Model calls run in chunks of opts.batch samples, through the backbone interface
 * (backbone.h), never the network directly. The rival methods plug into the same loop:
 * mgd3 as an eps adjustment (mgd3.c), d4m as vanilla from k-means prototypes, igd one
 * sample at a time with its guidance (igd.c); dm optimises pixels without the prior (dm.c).
 */
#include "distill/distill.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "diffusion/ddim.h"
#include "diffusion/dit_eps.h"
#include "diffusion/schedule.h"
#include "distill/backbone.h"
#include "distill/guidance.h"
#include "distill/kmeans.h"
#include "distill/methods.h"
#include "eval/classifier.h"
#include "models/vae.h"

#define STREAM_RANDOM_PICK DAP_STREAM_RANDOM_PICK
#define STREAM_REAL_PICK DAP_STREAM_REAL_PICK
#define STREAM_REAL_NOISE DAP_STREAM_REAL_NOISE
#define STREAM_KMEANS DAP_STREAM_KMEANS
#define KMEANS_ITERS DAP_KMEANS_ITERS

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
    o->mode_lambda = 0.1;   /* MGD3's lambda */
    o->iterations = 200;    /* DM's code runs 20000 (models/dm.flags): ~19 CPU hours per class here */
    o->lr_img = 1.0;
    o->batch_real = 256;
    o->dm_width = 128;
    o->igd_scale = 5;       /* IGD's sample_mp.sh: gm-scale 5, dev-scale 120, low 30 high 45 of 50 */
    o->igd_dev = 120;
    o->igd_low = 0.6;
    o->igd_high = 0.9;
    o->igd_n_real = 200;    /* grad-ipc */
    o->igd_memory = 64;     /* memory-size */
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

static const char *const method_names[DAP_METHOD_COUNT] = {"random", "vanilla", "dap", "mgd3", "d4m", "dm", "igd",
                                                                   "minimax"};

int dap_method_parse(const char *s) {
    for (int m = 0; m < DAP_METHOD_COUNT; m++)
        if (!strcmp(s, method_names[m])) return m;
    return -1;
}

const char *dap_method_name(int m) { return m >= 0 && m < DAP_METHOD_COUNT ? method_names[m] : "?"; }

int dap_method_uses_model(int m) { return m != DAP_METHOD_RANDOM && m != DAP_METHOD_DM; }

/* n distinct indices of class k, in a seeded random order. */
int dap_distill_pick_class(const dap_dataset *ds, int k, int n, uint64_t seed, uint64_t stream, int *out) {
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
    dap_backbone *bb;  /* eps in chunks; features of block l (cached for the synthetic
                          samples' partial backward, inference-only for the real ones) */
    const dap_distill_opts *o;
    int k, n;          /* data class, synthetic samples */
    int label;         /* the model's label of class k */
    int layer, T, D, F;
    size_t per;
    float *real0;      /* (N, per) clean real samples */
    float *realt;      /* (chunk, per) noised */
    float *rfeat;      /* (N, F) pooled real features */
    float *sfeat;      /* (chunk, F) */
    float *allfeat;    /* (n, F) all synthetic features, for --repel when n > chunk */
    int guides;        /* 1: the backbone's bank_rows / guide compute the energy (rfeat, sfeat, ds unused) */
    float *ds;         /* (chunk, F) dE/dfeatures */
    float *grad;       /* (n, per) dE/dx_t */
    int *y;            /* (chunk) */
    dap_rng noise;     /* real-sample noise */
    float *fixed_xi;   /* (N, per) with fixed_noise */
    int *lab;          /* (n) the class label, for eps */
    float *modes;      /* mgd3: (n, per) the mode of each sample */
    dap_igd *igd;      /* igd: the surrogate's guidance */
    const float *mem;  /* igd: (nmem, per) the class's earlier samples */
    int nmem;
    float *x0, *gtmp;  /* igd: (per) scratch */
    float *px, *gpx;   /* igd on a latent prior: x0_hat decoded, and the guidance on it */
    dap_distill_stats *st;
} class_run;

static int run_eps(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    class_run *r = ctx;
    return dap_backbone_eps(r->bb, eps, x_t, r->n, c->t, r->lab);
}

/* Synthetic samples i0..i0+b-1 through blocks 1..l of gst (cached for the partial
 * backward), pooled into feat (b, F). */
static void synth_features(class_run *r, const float *x_t, const dap_ddim_coef *c, int i0, int b, float *feat) {
    for (int i = 0; i < b; i++) r->y[i] = r->label;
    dap_backbone_features(r->bb, 1, x_t + (size_t)i0 * r->per, b, c->t, r->y, r->o->pool, feat);
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
        for (int i = 0; i < b; i++) r->y[i] = r->label;
        if (r->guides) dap_backbone_bank_rows(r->bb, xi, b, c->t, r->y, j0);
        else dap_backbone_features(r->bb, 0, xi, b, c->t, r->y, o->pool, r->rfeat + (size_t)j0 * r->F);
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
        if (r->guides) {
            for (int i = 0; i < b; i++) r->y[i] = r->label;
            energy += dap_backbone_guide(r->bb, x_t + (size_t)i0 * r->per, b, c->t, r->y, N, o->kernel, o->sigma,
                                         r->grad + (size_t)i0 * r->per);
            continue;
        }
        synth_features(r, x_t, c, i0, b, r->sfeat); /* again when pre-passed: gst caches one chunk */
        energy += b * dap_kernel_energy(r->ds, NULL, r->sfeat, b, r->rfeat, N, r->F, o->kernel, o->sigma);
        if (repel)
            energy += b * dap_kernel_repel(r->ds, NULL, r->sfeat, b, r->n > chunk ? r->allfeat : r->sfeat, r->n,
                                           r->n > chunk ? i0 : 0, o->repel, r->F, o->kernel, o->sigma);
        dap_backbone_backward(r->bb, r->ds, o->pool, r->grad + (size_t)i0 * r->per);
    }
    energy /= r->n;
    if (r->st->guided_steps == 0) r->st->energy_first = energy;
    r->st->energy_last = energy;
    r->st->guided_steps++;
    return energy;
}

/* igd guides while the remaining-steps index S-1-step is in [round(low S), round(high S)]
 * (their 50-step code: low 30, high 45). */
static int igd_guided(int step, int S, double low, double high) {
    const int rem = S - 1 - step;
    return rem >= (int)nearbyint(low * S) && rem <= (int)nearbyint(high * S);
}

/* igd (one sample, r->n = 1): eps -= sqrt(1 - a_t) / sqrt(a_t) (k ds_inf/dx0 - gamma ds_dev/dx0),
 * classifier guidance on x0_hat with dx0_hat/dx_t taken as 1/sqrt(a_t) (igd.c). */
static int igd_adjust_eps(class_run *r, float *eps, const float *x_t, const dap_ddim_coef *c) {
    const dap_distill_opts *o = r->o;
    if (!igd_guided(c->step, o->steps, o->igd_low, o->igd_high)) return DAP_OK;
    const float sa = (float)sqrt(c->a_t), sb = (float)sqrt(1.0 - c->a_t);
    for (size_t q = 0; q < r->per; q++) r->x0[q] = (x_t[q] - sb * eps[q]) / sa;
    double e = 0;
    if (o->igd_scale != 0 && o->igd_vae) { /* through the decoder: the surrogate sees images */
        const dap_vae_config *vc = dap_vae_get_config(o->igd_vae);
        const int s = (int)sqrt((double)(r->per / (size_t)vc->latent_channels));
        dap_vae_tape *tape; /* one decode serves the surrogate and the backward through it */
        DAP_TRY(dap_vae_decode_taped(o->igd_vae, r->x0, s, s, r->px, &tape));
        e = dap_igd_influence(r->igd, r->px, r->gpx);
        const int rc = dap_vae_tape_backward(tape, r->gpx, r->grad);
        dap_vae_tape_free(tape);
        DAP_TRY(rc);
        const float sc = (float)(o->igd_scale * sb / sa);
        for (size_t q = 0; q < r->per; q++) eps[q] -= sc * r->grad[q];
    } else if (o->igd_scale != 0) {
        e = dap_igd_influence(r->igd, r->x0, r->grad);
        const float s = (float)(o->igd_scale * sb / sa);
        for (size_t q = 0; q < r->per; q++) eps[q] -= s * r->grad[q];
    }
    if (o->igd_dev != 0 && r->nmem > 0) {
        dap_igd_deviation(r->x0, r->mem, r->nmem, r->per, r->gtmp);
        const float s = (float)(o->igd_dev * sb / sa);
        for (size_t q = 0; q < r->per; q++) eps[q] += s * r->gtmp[q];
    }
    if (r->st->guided_steps == 0) r->st->energy_first = e;
    r->st->energy_last = e;
    r->st->guided_steps++;
    return DAP_OK;
}

static int run_adjust_eps(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    class_run *r = ctx;
    if (r->o->method == DAP_METHOD_IGD) return igd_adjust_eps(r, eps, x_t, c);
    if (!dap_ddim_step_guided(c->step, r->o->steps, r->o->stop)) return DAP_OK;
    if (r->o->method == DAP_METHOD_MGD3) {
        const double e = dap_mgd3_adjust_eps(eps, x_t, r->modes, r->n, r->per, c->a_t, r->o->mode_lambda);
        if (r->st->guided_steps == 0) r->st->energy_first = e;
        r->st->energy_last = e;
        r->st->guided_steps++;
        return DAP_OK;
    }
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

/* The class's real images as rows (count, per); the caller frees. */
static float *class_rows(const dap_dataset *real, int k, size_t per) {
    const int count = real->class_count[k];
    float *rows = dap_alloc_f32((size_t)count * per);
    for (int j = 0; j < count; j++)
        memcpy(rows + (size_t)j * per, real->x + (size_t)real->class_idx[k][j] * per, sizeof(float) * per);
    return rows;
}

int dap_distill_kmeans_centres(const dap_dataset *real, int k, int n, uint64_t seed, float *centres) {
    const size_t per = (size_t)real->c * real->h * real->w;
    const int count = real->class_count[k];
    if (count < n)
        return dap_error(DAP_ERR_ARG, "class %d (%s) has %d images, fewer than the %d k-means centres asked for", k,
                         real->class_names ? real->class_names[k] : "?", count, n);
    float *rows = class_rows(real, k, per);
    int rc = dap_kmeans(rows, count, (int)per, n, KMEANS_ITERS, seed, STREAM_KMEANS | (uint64_t)k, centres, NULL, NULL);
    dap_free_aligned(rows);
    return rc;
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
        rc = dap_distill_pick_class(real, k, n, o->seed, STREAM_RANDOM_PICK, idx); /* the random baseline's images */
        for (int i = 0; rc == DAP_OK && i < n; i++)
            memcpy(x0 + (size_t)i * per, real->x + (size_t)idx[i] * per, sizeof(float) * per);
        free(idx);
    } else {
        rc = dap_distill_kmeans_centres(real, k, n, o->seed, x0);
        if (rc == DAP_OK && o->init == DAP_INIT_MEDOID) {
            float *rows = class_rows(real, k, per);
            nearest_rows(x0, n, rows, real->class_count[k], per);
            dap_free_aligned(rows);
        }
    }
    if (rc == DAP_OK && (rc = dap_ddim_start_t(sched->T, o->steps, skip, &t)) == DAP_OK) {
        const float sa = (float)sqrt(sched->alpha_bar[t]), sb = (float)sqrt(1.0 - sched->alpha_bar[t]);
        for (size_t q = 0; q < (size_t)n * per; q++) x[q] = sa * x0[q] + sb * x[q];
    }
    dap_free_aligned(x0);
    return rc;
}

int dap_distill_check_minimax(const char *finetune, const char *model) {
    if (finetune && !strncmp(finetune, "minimax ", 8)) return DAP_OK;
    return dap_error(DAP_ERR_ARG,
                     "--method minimax samples a Minimax-diffusion fine-tune, and %s is not one (its metadata has %s%s%s): "
                     "make one with dap train --minimax --init PRIOR (docs/methods.md)",
                     model, finetune ? "finetune = \"" : "no \"finetune\" record", finetune ? finetune : "",
                     finetune ? "\"" : "");
}

int dap_distill_check_backbone(const dap_backbone *bb, const dap_distill_opts *o) {
    if (o->method < 0 || o->method >= DAP_METHOD_COUNT) return dap_error(DAP_ERR_ARG, "--method: unknown method %d", o->method);
    if (o->ipc < 1) return dap_error(DAP_ERR_ARG, "--ipc must be >= 1 (got %d)", o->ipc);
    if (o->init < DAP_INIT_NOISE || o->init > DAP_INIT_MEDOID) return dap_error(DAP_ERR_ARG, "--init: unknown start %d", o->init);
    if (!(o->strength > 0 && o->strength <= 1))
        return dap_error(DAP_ERR_ARG, "--strength must be in (0, 1] (got %g)", o->strength);
    if (o->init == DAP_INIT_NOISE && o->strength != 1 && o->method != DAP_METHOD_D4M)
        return dap_error(DAP_ERR_ARG, "--strength %g needs a start image (--init real, kmeans or medoid); from noise the whole trajectory runs",
                         o->strength);
    if (o->method == DAP_METHOD_D4M && o->init != DAP_INIT_NOISE && o->init != DAP_INIT_KMEANS)
        return dap_error(DAP_ERR_ARG, "--init %s: d4m starts from its k-means prototypes (leave --init out)", dap_init_name(o->init));
    if (o->method == DAP_METHOD_RANDOM || o->method == DAP_METHOD_DM) {
        if (o->init != DAP_INIT_NOISE)
            return dap_error(DAP_ERR_ARG, "--init %s applies to vanilla and dap (the diffusion methods), not %s", dap_init_name(o->init),
                             dap_method_name(o->method));
        if (o->method == DAP_METHOD_RANDOM) return DAP_OK;
        if (o->iterations < 0) return dap_error(DAP_ERR_ARG, "--iterations must be >= 0 (got %d)", o->iterations);
        if (!(o->lr_img > 0 && isfinite(o->lr_img))) return dap_error(DAP_ERR_ARG, "--lr-img must be finite and > 0 (got %g)", o->lr_img);
        if (o->batch_real < 1) return dap_error(DAP_ERR_ARG, "--batch-real must be >= 1 (got %d)", o->batch_real);
        if (o->dm_width < 1 || o->dm_width > 4096) return dap_error(DAP_ERR_ARG, "--dm-width must be in 1..4096 (got %d)", o->dm_width);
        return DAP_OK;
    }
    if (!bb) return dap_error(DAP_ERR_ARG, "method %s needs a diffusion model (--model)", dap_method_name(o->method));
    if (o->steps < 1 || o->steps > 1000) return dap_error(DAP_ERR_ARG, "--steps must be in 1..1000 (got %d)", o->steps);
    if (o->batch < 1) return dap_error(DAP_ERR_ARG, "--batch must be >= 1 (got %d)", o->batch);
    if (!(o->eta >= 0)) return dap_error(DAP_ERR_ARG, "--eta must be >= 0 (got %g)", o->eta);
    if (!(o->clip_x0 >= 0)) return dap_error(DAP_ERR_ARG, "--clip-x0 must be >= 0 (got %g)", o->clip_x0);
    if (!(fabs(o->cfg) <= DAP_CFG_MAX))
        return dap_error(DAP_ERR_ARG, "--cfg must be in [-%g, %g] (larger scales saturate every pixel), got %g", DAP_CFG_MAX,
                         DAP_CFG_MAX, o->cfg);
    if (o->cfg != 1.0 && !bb->has_null)
        return dap_error(DAP_ERR_ARG, "--cfg %g needs a model with a null class; this one has none (use --cfg 1)", o->cfg);
    if (o->method == DAP_METHOD_MGD3) {
        if (!isfinite(o->mode_lambda)) return dap_error(DAP_ERR_ARG, "--mode-lambda must be finite");
        if (!(o->stop >= 0 && o->stop <= 1)) return dap_error(DAP_ERR_ARG, "--stop must be in [0, 1] (got %g)", o->stop);
        return DAP_OK;
    }
    if (o->method == DAP_METHOD_IGD) {
        if (!o->surrogate) return dap_error(DAP_ERR_ARG, "method igd needs a surrogate classifier (--surrogate FILE, from dap teacher)");
        const dap_cnn *net = &o->surrogate->net;
        if (o->igd_vae) { /* a latent prior: the surrogate takes the decoded images */
            const dap_vae_config *vc = dap_vae_get_config(o->igd_vae);
            const int f = dap_vae_factor(vc);
            if (bb->C != vc->latent_channels || bb->H != bb->W)
                return dap_error(DAP_ERR_SHAPE, "igd: the model's %dx%dx%d samples are not the VAE's square latents",
                                 bb->C, bb->H, bb->W);
            if (net->in_c != vc->in_channels || net->in_h != f * bb->H || net->in_w != f * bb->W)
                return dap_error(DAP_ERR_SHAPE, "--surrogate takes %dx%dx%d images, the VAE decodes the model's latents to "
                                 "%dx%dx%d: train it at --image-size %d", net->in_c, net->in_h, net->in_w, vc->in_channels,
                                 f * bb->H, f * bb->W, f * bb->H);
        } else if (net->in_c != bb->C || net->in_h != bb->H || net->in_w != bb->W)
            return dap_error(DAP_ERR_SHAPE, "--surrogate takes %dx%dx%d inputs, the model's samples are %dx%dx%d", net->in_c,
                             net->in_h, net->in_w, bb->C, bb->H, bb->W);
        if (!isfinite(o->igd_scale) || !isfinite(o->igd_dev) || o->igd_dev < 0)
            return dap_error(DAP_ERR_ARG, "--igd-scale must be finite and --igd-dev finite and >= 0 (got %g, %g)", o->igd_scale, o->igd_dev);
        if (!(o->igd_low >= 0 && o->igd_low <= o->igd_high && o->igd_high <= 1))
            return dap_error(DAP_ERR_ARG, "--igd-low and --igd-high must satisfy 0 <= low <= high <= 1 (got %g, %g)", o->igd_low, o->igd_high);
        if (o->igd_n_real < 1) return dap_error(DAP_ERR_ARG, "--igd-n-real must be >= 1 (got %d)", o->igd_n_real);
        if (o->igd_memory < 0) return dap_error(DAP_ERR_ARG, "--igd-memory must be >= 0 (got %d)", o->igd_memory);
        return DAP_OK;
    }
    if (o->method != DAP_METHOD_DAP) return DAP_OK;
    if (o->layer < 1 || o->layer > bb->depth)
        return dap_error(DAP_ERR_ARG, "--layer must be in 1..%d (the model's depth), got %d", bb->depth, o->layer);
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

int dap_distill_check_class_backbone(const dap_backbone *bb, const dap_dataset *real, int k, const dap_distill_opts *o) {
    DAP_ASSERT(k >= 0 && k < real->num_classes);
    const char *name = real->class_names ? real->class_names[k] : "?";
    const int count = real->class_count[k];
    if ((o->method == DAP_METHOD_RANDOM || o->method == DAP_METHOD_DM || o->init != DAP_INIT_NOISE) && count < o->ipc)
        return o->method != DAP_METHOD_RANDOM && (o->init == DAP_INIT_KMEANS || o->init == DAP_INIT_MEDOID)
                   ? dap_error(DAP_ERR_ARG, "class %d (%s) has %d images, fewer than the %d k-means centres asked for", k,
                               name, count, o->ipc)
                   : dap_error(DAP_ERR_ARG, "class %d (%s) has %d images, %d requested (--ipc)", k, name, count, o->ipc);
    if (!dap_method_uses_model(o->method)) return DAP_OK;
    if (!bb) return dap_error(DAP_ERR_ARG, "method %s needs a diffusion model (--model)", dap_method_name(o->method));
    if (bb->C != real->c || bb->H != real->h || bb->W != real->w)
        return dap_error(DAP_ERR_SHAPE, "model takes %dx%dx%d images, the data has %dx%dx%d", bb->C, bb->H, bb->W,
                         real->c, real->h, real->w);
    const int label = o->labels ? o->labels[k] : k;
    if (label < 0 || label >= bb->classes)
        return dap_error(DAP_ERR_SHAPE, "class %d (%s): label %d is outside the model's %d classes", k, name, label,
                         bb->classes);
    if (o->method == DAP_METHOD_DAP && count < o->n_real)
        return dap_error(DAP_ERR_ARG, "class %d (%s) has %d images, fewer than --n-real %d", k, name, count, o->n_real);
    if (o->method == DAP_METHOD_IGD && o->surrogate) {
        const int sc = o->surrogate->net.num_classes;
        if (sc != real->num_classes && sc != bb->classes)
            return dap_error(DAP_ERR_SHAPE, "--surrogate has %d classes; the data has %d and the model %d (train it with "
                             "dap teacher on the same --data)", sc, real->num_classes, bb->classes);
    }
    return DAP_OK;
}

/* The surrogate's index of data class k: the data's own (a dap teacher of the same --data),
 * else the model's label (a surrogate over the model's classes). */
static int igd_class(const dap_distill_opts *o, const dap_dataset *real, int k, int label) {
    return o->surrogate->net.num_classes == real->num_classes ? k : label;
}

int dap_distill_check_class(const dap_dit *m, const dap_dataset *real, int k, const dap_distill_opts *o) {
    if (!m) return dap_distill_check_class_backbone(NULL, real, k, o);
    dap_backbone bb;
    dap_backbone_dit(&bb, m);
    return dap_distill_check_class_backbone(&bb, real, k, o);
}

int dap_distill_check(const dap_dit *m, const dap_distill_opts *o) {
    if (!m) return dap_distill_check_backbone(NULL, o);
    if (o->method == DAP_METHOD_MINIMAX) DAP_TRY(dap_distill_check_minimax(m->finetune, "the model"));
    dap_backbone bb;
    dap_backbone_dit(&bb, m);
    return dap_distill_check_backbone(&bb, o);
}

int dap_distill_class(const dap_dit *m, const dap_dataset *real, int k, const dap_distill_opts *o,
                      float *out, dap_distill_stats *st) {
    if (!m) return dap_distill_class_backbone(NULL, real, k, o, out, st);
    if (o->method == DAP_METHOD_MINIMAX) DAP_TRY(dap_distill_check_minimax(m->finetune, "the model"));
    dap_backbone bb;
    dap_backbone_dit(&bb, m);
    return dap_distill_class_backbone(&bb, real, k, o, out, st);
}

/* igd: the class's samples one after another, each guided away from the earlier ones
 * (their code keeps a memory of the class's last igd_memory samples). */
static int igd_sample(class_run *r, const dap_schedule *sched, dap_ddim_hooks *h, float *out, dap_rng *rngs) {
    const dap_distill_opts *o = r->o;
    const int n = r->n;
    int rc = DAP_OK;
    r->n = 1;
    for (int i = 0; rc == DAP_OK && i < n; i++) {
        const int m0 = i > o->igd_memory ? i - o->igd_memory : 0;
        r->mem = out + (size_t)m0 * r->per, r->nmem = i - m0;
        rc = dap_ddim_sample(sched, o->steps, o->eta, out + (size_t)i * r->per, 1, r->per, rngs + i, h);
    }
    r->n = n;
    return rc;
}

int dap_distill_class_backbone(dap_backbone *bb, const dap_dataset *real, int k, const dap_distill_opts *o,
                               float *out, dap_distill_stats *st) {
    DAP_ASSERT(k >= 0 && k < real->num_classes);
    memset(st, 0, sizeof *st);
    const double t0 = dap_time_now();
    const size_t per = (size_t)real->c * real->h * real->w;
    dap_distill_opts oo = *o;
    if (oo.method == DAP_METHOD_DAP && oo.layer == 0 && bb) oo.layer = (bb->depth + 2) / 4;
    if (oo.method == DAP_METHOD_D4M && oo.init == DAP_INIT_NOISE) oo.init = DAP_INIT_KMEANS; /* prototypes */
    DAP_TRY(dap_distill_check_backbone(bb, &oo));

    if (oo.method == DAP_METHOD_RANDOM) {
        int *idx = dap_malloc(sizeof(int) * (size_t)oo.ipc);
        int rc = dap_distill_pick_class(real, k, oo.ipc, oo.seed, STREAM_RANDOM_PICK, idx);
        for (int i = 0; rc == DAP_OK && i < oo.ipc; i++)
            memcpy(out + (size_t)i * per, real->x + (size_t)idx[i] * per, sizeof(float) * per);
        free(idx);
        st->seconds = dap_time_now() - t0;
        return rc;
    }
    if (oo.method == DAP_METHOD_DM) {
        int rc = dap_dm_class(real, k, &oo, out, st);
        st->seconds = dap_time_now() - t0;
        return rc;
    }

    DAP_TRY(dap_distill_check_class_backbone(bb, real, k, &oo));
    const int label = oo.labels ? oo.labels[k] : k;

    class_run r = {0};
    r.bb = bb, r.o = &oo, r.k = k, r.label = label, r.n = oo.ipc, r.per = per, r.st = st;
    const int chunk = oo.batch;
    const int dap = oo.method == DAP_METHOD_DAP, N = oo.n_real;
    if (dap) r.layer = oo.layer;
    /* the backbone keeps the real rows and computes the energy where it runs (a GPU), except
     * with --repel, whose pairs among the synthetic rows stay on the host */
    r.guides = dap && dap_backbone_guides(bb) && !(oo.repel != 0 && r.n > 1);
    int rc = dap_backbone_open(bb, chunk < r.n ? chunk : r.n, oo.cfg, r.layer, chunk < r.n ? chunk : r.n,
                               chunk < N ? chunk : N, r.guides ? N : 0, oo.pool);
    if (rc) return rc;
    r.y = dap_malloc(sizeof(int) * (size_t)chunk);
    r.lab = dap_malloc(sizeof(int) * (size_t)r.n);
    for (int i = 0; i < r.n; i++) r.lab[i] = label;
    if (dap) {
        r.T = bb->tokens, r.D = bb->hidden;
        r.F = dap_pool_dim(r.T, r.D, oo.pool);
        int *idx = dap_malloc(sizeof(int) * (size_t)N);
        rc = dap_distill_pick_class(real, k, N, oo.seed, STREAM_REAL_PICK, idx);
        r.real0 = dap_alloc_f32((size_t)N * per);
        for (int j = 0; rc == DAP_OK && j < N; j++)
            memcpy(r.real0 + (size_t)j * per, real->x + (size_t)idx[j] * per, sizeof(float) * per);
        free(idx);
        r.realt = dap_alloc_f32((size_t)chunk * per);
        if (!r.guides) { /* the host computes the energy */
            r.rfeat = dap_alloc_f32((size_t)N * r.F);
            r.sfeat = dap_alloc_f32((size_t)chunk * r.F);
            if (oo.repel != 0 && r.n > chunk) r.allfeat = dap_alloc_f32((size_t)r.n * r.F);
            r.ds = dap_alloc_f32((size_t)chunk * r.F);
        }
        r.grad = dap_alloc_f32((size_t)r.n * per);
        dap_rng_init(&r.noise, oo.seed, STREAM_REAL_NOISE | (uint64_t)k);
        if (oo.fixed_noise) {
            r.fixed_xi = dap_alloc_f32((size_t)N * per);
            dap_rng_normal(&r.noise, r.fixed_xi, (size_t)N * per, 0.0f, 1.0f);
        }
    } else if (oo.method == DAP_METHOD_MGD3) {
        r.modes = dap_alloc_f32((size_t)r.n * per);
        rc = dap_distill_kmeans_centres(real, k, r.n, oo.seed, r.modes); /* mode i guides sample i */
    } else if (oo.method == DAP_METHOD_IGD) {
        r.igd = dap_calloc(1, sizeof *r.igd);
        r.grad = dap_alloc_f32(per), r.gtmp = dap_alloc_f32(per), r.x0 = dap_alloc_f32(per);
        if (oo.igd_vae && (!oo.igd_real_px || oo.igd_real_n < 1)) {
            rc = dap_error(DAP_ERR_ARG, "igd on a latent prior needs the class's real images (tools/latent.c loads them)");
        } else if (oo.igd_vae) { /* the latent runner picked and loaded the class's real images */
            const int in = dap_cnn_in_size(&oo.surrogate->net);
            const dap_dataset px = {.n = oo.igd_real_n, .x = (float *)oo.igd_real_px};
            int *idx = dap_malloc(sizeof(int) * (size_t)oo.igd_real_n);
            for (int i = 0; i < oo.igd_real_n; i++) idx[i] = i;
            rc = dap_igd_init(r.igd, oo.surrogate, &px, igd_class(&oo, real, k, label), idx, oo.igd_real_n);
            free(idx);
            r.px = dap_alloc_f32((size_t)in), r.gpx = dap_alloc_f32((size_t)in);
        } else {
            const int n_real = oo.igd_n_real < real->class_count[k] ? oo.igd_n_real : real->class_count[k];
            int *idx = dap_malloc(sizeof(int) * (size_t)n_real);
            rc = dap_distill_pick_class(real, k, n_real, oo.seed, DAP_STREAM_IGD_PICK, idx);
            if (rc == DAP_OK) rc = dap_igd_init(r.igd, oo.surrogate, real, igd_class(&oo, real, k, label), idx, n_real);
            free(idx);
        }
    }
    if (rc == DAP_OK) {
        dap_schedule sched;
        dap_schedule_init_default(&sched);
        dap_rng *rngs = dap_malloc(sizeof(dap_rng) * (size_t)r.n);
        for (int i = 0; i < r.n; i++) { /* keyed by the model's label, as dap sample: a class starts from
                                           * the same noise whatever subset or order it comes in */
            dap_sample_rng(&rngs[i], oo.seed, label, i);
            dap_rng_normal(&rngs[i], out + (size_t)i * per, per, 0.0f, 1.0f);
        }
        dap_ddim_hooks h = {.eps = run_eps, .ctx = &r, .clip_x0 = oo.clip_x0};
        if (oo.init != DAP_INIT_NOISE) {
            h.skip = dap_init_skip(oo.steps, oo.strength);
            rc = start_images(real, k, &oo, &sched, h.skip, out);
        }
        if (dap && oo.gamma != 0) {
            if (oo.form == DAP_FORM_EPS) h.adjust_eps = run_adjust_eps;
            else h.adjust_x = run_adjust_x;
        }
        if (oo.method == DAP_METHOD_MGD3 && oo.mode_lambda != 0) h.adjust_eps = run_adjust_eps;
        if (oo.method == DAP_METHOD_IGD) h.adjust_eps = run_adjust_eps;
        if (rc == DAP_OK)
            rc = oo.method == DAP_METHOD_IGD ? igd_sample(&r, &sched, &h, out, rngs)
                                             : dap_ddim_sample(&sched, oo.steps, oo.eta, out, r.n, per, rngs, &h);
        free(rngs);
        dap_schedule_free(&sched);
        for (size_t q = 0; !oo.latent && q < (size_t)r.n * per; q++) /* clamp, NaN -> error below */
            out[q] = out[q] < -1.f ? -1.f : out[q] > 1.f ? 1.f : out[q];
        for (size_t q = 0; rc == DAP_OK && q < (size_t)r.n * per; q++)
            if (isnan(out[q])) rc = dap_error(DAP_ERR_VALUE, "class %d: sampling produced NaN (guidance scale too large?)", k);
    }
    dap_backbone_close(bb);
    if (r.igd) dap_igd_free(r.igd), free(r.igd);
    free(r.y), free(r.lab);
    dap_free_aligned(r.real0), dap_free_aligned(r.realt), dap_free_aligned(r.modes);
    dap_free_aligned(r.rfeat), dap_free_aligned(r.sfeat), dap_free_aligned(r.allfeat), dap_free_aligned(r.ds);
    dap_free_aligned(r.grad), dap_free_aligned(r.fixed_xi);
    dap_free_aligned(r.gtmp), dap_free_aligned(r.x0), dap_free_aligned(r.px), dap_free_aligned(r.gpx);
    st->seconds = dap_time_now() - t0;
    return rc;
}
