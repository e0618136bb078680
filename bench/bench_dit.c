/*
 * bench_dit.c: timing of the DiT workloads of dap, one measurement per process so that
 * its peak memory (ru_maxrss) belongs to that measurement alone. bench/dit_torch.py is
 * the PyTorch peer with the same shapes; bench/run.sh runs both and prints the ratios.
 *
 *   build/bench_dit --config fm-p4-h256-d8 --measure train|ddim|guide|cfg10
 *                   [--warmup 2] [--iters 5] [--threads 2] [--layer l]
 *   build/bench_dit --config NAME --print-config      (the shapes, as JSON, for the peer)
 *   build-cuda/bench_dit --device cuda [--precision fp32|tf32|bf16] --config DiT-XL/2 --measure fwd32
 *                   (the DiT on the GPU; adds the device memory the run took beyond the
 *                    CUDA context, peak_device_mb)
 *
 * Measurements (weights: official init, then every trainable tensor perturbed, so the
 * adaLN gates and the final layer are non-zero like a trained model's):
 *   train  forward + eps-MSE + backward + grad clip + AdamW at batch 64      (images/s)
 *          (on cuda also the EMA, as dap train: its update is part of the device step)
 *   ddim   one DDIM step with CFG at batch 100: one inference forward over 200 samples
 *   guide  one dap guidance evaluation as dap distill runs it (the backbone's bank_rows and
 *          guide): 100 real samples and 10 synthetic to block l, flattened features,
 *          linear-kernel energy, partial backward to the 10 inputs
 *   guidemean  the same with the tokens' mean as the features (--pool mean)
 *   cfg10  an unguided DDIM + CFG step at batch 10 (the guide's reference cost)
 *   fwd32  one inference forward at batch 32, t = 500, no CFG                 (images/s)
 * Prints one JSON line: per-iteration seconds, median, throughput, peak RSS, and
 * foreign_cpu: the share of the machine's cores that other processes used during the
 * timed loop (> ~0.05: the numbers were taken under contention).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/blas.h"
#include "core/core.h"
#include "core/device.h"
#include "core/optim.h"
#include "diffusion/ddim.h"
#include "diffusion/dit_eps.h"
#include "diffusion/schedule.h"
#include "distill/backbone.h"
#include "distill/guidance.h"
#include "models/dit.h"
#ifdef DAP_CUDA
#include "cuda/cuda.h"
#endif

#define TRAIN_BATCH 64
#define DDIM_BATCH 100
#define GUIDE_REAL 100
#define GUIDE_SYN 10
#define CFG_SCALE 4.0
#define DDIM_STEPS 50

typedef struct bench {
    const dap_dit *m;
    dap_schedule sched;
    int layer;
    size_t per, per_out;
    /* one workload's buffers, set up by its setup function */
    dap_dit_state *st;
    dap_dit_eps eps;
    dap_adamw opt;
    dap_ddim_coef coef;
    dap_rng rng;
    float *x, *x2, *noise, *out, *dout, *tf, *grad;
    int *y;
    dap_backbone bb; /* guide: the DiT as dap distill's backbone */
    int pool;
    int n; /* samples of the workload */
} bench;

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double peak_rss_mb(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_maxrss / 1024.0; /* KiB on Linux */
}

/* CPU seconds used by the whole machine (all cores, from /proc/stat) and by this process:
 * over the timed loop, their difference is what other processes took (contention). */
static double machine_busy_s(void) {
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (!f) return 0.0;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
               &v[6], &v[7]) != 8)
        v[0] = v[1] = v[2] = v[5] = v[6] = v[7] = 0;
    fclose(f);
    /* user nice system (idle iowait) irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + 1e-6 * u.ru_utime.tv_usec + (double)u.ru_stime.tv_sec +
           1e-6 * u.ru_stime.tv_usec;
}

/* Official init, then N(0, (0.5 / sqrt(fan_in))^2) added to every matrix and N(0, 0.02^2)
 * to every vector, so no gate or output weight stays zero. */
static void perturb(dap_dit *m, uint64_t seed) {
    dap_rng r;
    dap_rng_init(&r, seed, 11);
    for (int i = 0; i < m->params.n; i++) {
        dap_param *p = &m->params.p[i];
        if (p->frozen) continue;
        const float sd = p->ndim >= 2 ? 0.5f / sqrtf((float)(p->numel / (size_t)p->shape[0])) : 0.02f;
        float *noise = dap_alloc_f32(p->numel);
        dap_rng_normal(&r, noise, p->numel, 0.0f, sd);
        for (size_t k = 0; k < p->numel; k++) m->params.data[p->offset + k] += noise[k];
        dap_free_aligned(noise);
    }
}

/* ---- train --------------------------------------------------------------------------- */

static void train_setup(bench *b) {
    const int B = TRAIN_BATCH;
    b->n = B;
    b->st = dap_dit_state_create_train(b->m, B);
    if (!b->st) {
        fprintf(stderr, "bench_dit: %s\n", dap_last_error());
        exit(1);
    }
    dap_adamw_init(&b->opt, &((dap_dit *)b->m)->params, 0.9, 0.999, 1e-8, 0.0);
    /* a device model: gradients, AdamW moments and the EMA (from the weights) go up */
    if (dap_dit_train_begin((dap_dit *)b->m, b->m->params.data, &b->opt) != DAP_OK) {
        fprintf(stderr, "bench_dit: %s\n", dap_last_error());
        exit(2);
    }
    b->x = dap_alloc_f32((size_t)B * b->per);
    b->noise = dap_alloc_f32((size_t)B * b->per);
    b->out = dap_alloc_f32((size_t)B * b->per_out);
    b->dout = dap_alloc_f32((size_t)B * b->per_out);
    b->tf = dap_alloc_f32(B);
    b->y = dap_calloc(B, sizeof(int));
    dap_rng_normal(&b->rng, b->x, (size_t)B * b->per, 0.0f, 1.0f);
    dap_rng_normal(&b->rng, b->noise, (size_t)B * b->per, 0.0f, 1.0f);
    for (int i = 0; i < B; i++) {
        b->tf[i] = (float)dap_rng_below(&b->rng, (uint64_t)b->sched.T);
        b->y[i] = (int)dap_rng_below(&b->rng, (uint64_t)b->m->cfg.num_classes + 1);
    }
}

static void train_iter(bench *b) {
    dap_dit *m = (dap_dit *)b->m;
    const int B = b->n, C = m->cfg.in_channels, Co = m->out_channels;
    const size_t hw = (size_t)m->cfg.input_size * m->cfg.input_size;
    dap_dit_forward(m, b->st, b->out, b->x, b->tf, b->y, 0);
    const float scale = (float)(2.0 / ((double)B * b->per));
    for (int i = 0; i < B; i++)
        for (int ch = 0; ch < Co; ch++)
            for (size_t q = 0; q < hw; q++) {
                const size_t o = ((size_t)i * Co + ch) * hw + q;
                b->dout[o] = ch < C ? scale * (b->out[o] - b->noise[((size_t)i * C + ch) * hw + q]) : 0.0f;
            }
    if (m->dev) { /* as dap train: clipping, AdamW and the EMA on the device */
        dap_dit_backward(m, b->st, b->dout, NULL);
        dap_dit_train_update(m, &b->opt, 1e-4, 1.0f, 0.9999);
        return;
    }
    dap_params_zero_grad(&m->params);
    dap_dit_backward(m, b->st, b->dout, NULL);
    dap_clip_grad_norm(&m->params, 1.0f);
    dap_adamw_step(&b->opt, &m->params, 1e-4);
}

/* ---- ddim / cfg10: one DDIM step with classifier-free guidance ----------------------- */

static void ddim_setup_n(bench *b, int B) {
    b->n = B;
    dap_dit_eps_init(&b->eps, b->m, B, CFG_SCALE);
    b->x = dap_alloc_f32((size_t)B * b->per);
    b->x2 = dap_alloc_f32((size_t)B * b->per);
    b->noise = dap_alloc_f32((size_t)B * b->per); /* eps */
    b->y = dap_calloc(B, sizeof(int));
    dap_rng_normal(&b->rng, b->x, (size_t)B * b->per, 0.0f, 1.0f);
    for (int i = 0; i < B; i++) b->y[i] = i % b->m->cfg.num_classes;
    dap_dit_eps_set_labels(&b->eps, b->y, B);
    int taus[DDIM_STEPS];
    dap_timestep_spacing(b->sched.T, DDIM_STEPS, taus);
    dap_ddim_coef_at(&b->sched, taus, DDIM_STEPS, DDIM_STEPS / 2, 0.0, &b->coef);
}

static void ddim_setup(bench *b) { ddim_setup_n(b, DDIM_BATCH); }
static void cfg10_setup(bench *b) { ddim_setup_n(b, GUIDE_SYN); }

static void ddim_iter(bench *b) {
    dap_dit_eps_hook(&b->eps, b->noise, b->x, &b->coef);
    dap_ddim_step(&b->coef, b->x2, NULL, b->x, b->noise, NULL, (size_t)b->n * b->per);
}

/* ---- guide: the dap guidance gradient of one step ------------------------------------- */

/* Through the backbone, as dap distill runs a guided step: the real samples' pooled rows
 * into its bank, then the synthetic samples' energy and its backward (on a device model
 * the rows, the energy's reductions and the pooling stay there). */
static void guide_setup_pool(bench *b, int pool) {
    b->n = GUIDE_SYN;
    b->pool = pool;
    dap_backbone_dit(&b->bb, b->m);
    /* eps is not timed: its chunk of 1 keeps its state out of the peak memory */
    if (dap_backbone_open(&b->bb, 1, 1.0, b->layer, GUIDE_SYN, GUIDE_REAL, GUIDE_REAL, pool) != DAP_OK) {
        fprintf(stderr, "bench_dit: %s\n", dap_last_error());
        exit(2);
    }
    b->x = dap_alloc_f32((size_t)GUIDE_REAL * b->per);  /* real x_t */
    b->x2 = dap_alloc_f32((size_t)GUIDE_SYN * b->per);  /* synthetic x_t */
    b->grad = dap_alloc_f32((size_t)GUIDE_SYN * b->per);
    b->y = dap_calloc(GUIDE_REAL, sizeof(int));
    dap_rng_normal(&b->rng, b->x, (size_t)GUIDE_REAL * b->per, 0.0f, 1.0f);
    dap_rng_normal(&b->rng, b->x2, (size_t)GUIDE_SYN * b->per, 0.0f, 1.0f);
    for (int i = 0; i < GUIDE_REAL; i++) b->y[i] = 3;
}
static void guide_setup(bench *b) { guide_setup_pool(b, DAP_POOL_FLATTEN); }
/* guidemean: the tokens' mean as features (--pool mean, the shipped flags) */
static void guide_mean_setup(bench *b) { guide_setup_pool(b, DAP_POOL_MEAN); }

static void guide_iter(bench *b) {
    dap_backbone_bank_rows(&b->bb, b->x, GUIDE_REAL, 500, b->y, 0);
    dap_backbone_guide(&b->bb, b->x2, GUIDE_SYN, 500, b->y, GUIDE_REAL, DAP_KERNEL_LINEAR, 1.0, b->grad);
}

/* ---- fwd32: one inference forward ------------------------------------------------------ */

static void fwd32_setup(bench *b) {
    const int B = 32;
    b->n = B;
    b->st = dap_dit_state_create_ex(b->m, B, 0);
    if (!b->st) {
        fprintf(stderr, "bench_dit: %s\n", dap_last_error());
        exit(1);
    }
    b->x = dap_alloc_f32((size_t)B * b->per);
    b->out = dap_alloc_f32((size_t)B * b->per_out);
    b->tf = dap_alloc_f32(B);
    b->y = dap_calloc(B, sizeof(int));
    dap_rng_normal(&b->rng, b->x, (size_t)B * b->per, 0.0f, 1.0f);
    for (int i = 0; i < B; i++) b->tf[i] = 500.0f, b->y[i] = i % b->m->cfg.num_classes;
}

static void fwd32_iter(bench *b) { dap_dit_forward(b->m, b->st, b->out, b->x, b->tf, b->y, 0); }

/* Device bytes in use now (0 on the cpu). */
static double device_used_mb(void) {
#ifdef DAP_CUDA
    size_t fr = 0, tot = 0;
    if (dap_device() == DAP_DEVICE_CUDA && dap_cuda_memory(&fr, &tot) == DAP_OK) return (double)(tot - fr) / 1048576.0;
#endif
    return 0.0;
}

/* ---- driver -------------------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*setup)(bench *);
    void (*iter)(bench *);
    const char *unit;
} k_measures[] = {
    {"train", train_setup, train_iter, "images/s"},
    {"ddim", ddim_setup, ddim_iter, "images/s"},
    {"guide", guide_setup, guide_iter, "steps/s"},
    {"guidemean", guide_mean_setup, guide_iter, "steps/s"},
    {"cfg10", cfg10_setup, ddim_iter, "images/s"},
    {"fwd32", fwd32_setup, fwd32_iter, "images/s"},
};

static void usage(void) {
    fprintf(stderr, "usage: bench_dit [--config NAME] [--measure train|ddim|guide|guidemean|cfg10|fwd32] [--warmup N] "
                    "[--iters N] [--threads N] [--layer L] [--device cpu|cuda] [--precision fp32|tf32|bf16] "
                    "[--print-config]\n");
}

int main(int argc, char **argv) {
    dap_blas_fix_core(argv);
    const char *config = "fm-p4-h256-d8", *measure = "train", *device = "cpu", *precision = "fp32";
    int warmup = 2, iters = 5, threads = 2, layer = 0, print_config = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--print-config")) { print_config = 1; continue; }
        if (!v) { usage(); return 2; }
        if (!strcmp(a, "--config")) config = v;
        else if (!strcmp(a, "--measure")) measure = v;
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--iters")) iters = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--layer")) layer = atoi(v);
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--precision")) precision = v;
        else { usage(); return 2; }
        i++;
    }
    dap_dit_config cfg;
    if (dap_dit_config_by_name(config, &cfg) != DAP_OK) {
        fprintf(stderr, "bench_dit: %s\n", dap_last_error());
        return 2;
    }
    if (layer <= 0) layer = (cfg.depth + 2) / 4; /* dap distill's default */
    if (layer > cfg.depth) layer = cfg.depth;
    if (print_config) {
        printf("{\"input_size\": %d, \"patch\": %d, \"in_channels\": %d, \"hidden\": %d, \"depth\": %d, "
               "\"heads\": %d, \"num_classes\": %d, \"learn_sigma\": %s, \"mlp_ratio\": %g, "
               "\"class_dropout\": %g, \"layer\": %d}\n",
               cfg.input_size, cfg.patch, cfg.in_channels, cfg.hidden, cfg.depth, cfg.heads, cfg.num_classes,
               cfg.learn_sigma ? "true" : "false", (double)cfg.mlp_ratio, (double)cfg.class_dropout, layer);
        return 0;
    }
    int mi = -1;
    for (int k = 0; k < (int)(sizeof k_measures / sizeof k_measures[0]); k++)
        if (!strcmp(measure, k_measures[k].name)) mi = k;
    if (mi < 0 || iters < 1 || warmup < 0) { usage(); return 2; }
    dap_set_threads(threads);
    if (dap_device_select(device) != DAP_OK || dap_device_set_precision(precision) != DAP_OK) {
        fprintf(stderr, "bench_dit: %s\n", dap_last_error());
        return 2;
    }
    const int train = !strcmp(measure, "train");
    const double dev0 = device_used_mb(); /* the CUDA context and cuBLAS: not the run's */
    dap_dit *m;
    if (dap_dit_create(&m, &cfg, train) != DAP_OK) {
        fprintf(stderr, "bench_dit: %s\n", dap_last_error());
        return 2;
    }
    dap_dit_init(m, 0);
    perturb(m, 1);
    if (dap_dit_to_device(m) != DAP_OK) {
        fprintf(stderr, "bench_dit: %s\n", dap_last_error());
        return 2;
    }

    bench b = {0};
    b.m = m;
    b.layer = layer;
    b.per = (size_t)cfg.in_channels * cfg.input_size * cfg.input_size;
    b.per_out = (size_t)m->out_channels * cfg.input_size * cfg.input_size;
    dap_schedule_init_default(&b.sched);
    dap_rng_init(&b.rng, 42, 0);
    k_measures[mi].setup(&b);

    for (int i = 0; i < warmup; i++) k_measures[mi].iter(&b);
    double *t = dap_malloc(sizeof(double) * (size_t)iters), *sorted = dap_malloc(sizeof(double) * (size_t)iters);
    const double busy0 = machine_busy_s(), self0 = self_cpu_s(), wall0 = dap_time_now();
    for (int i = 0; i < iters; i++) {
        const double t0 = dap_time_now();
        k_measures[mi].iter(&b);
        t[i] = dap_time_now() - t0;
    }
    const double wall = dap_time_now() - wall0, self = self_cpu_s() - self0;
    double foreign = (machine_busy_s() - busy0 - self) / (wall * (double)sysconf(_SC_NPROCESSORS_ONLN));
    if (foreign < 0) foreign = 0;
    memcpy(sorted, t, sizeof(double) * (size_t)iters);
    qsort(sorted, (size_t)iters, sizeof(double), cmp_double);
    const double med = iters % 2 ? sorted[iters / 2] : 0.5 * (sorted[iters / 2 - 1] + sorted[iters / 2]);
    const double per_iter = !strcmp(k_measures[mi].unit, "steps/s") ? 1.0 : (double)b.n;
    const double dev_mb = device_used_mb() - dev0; /* every buffer is planned before the loop: the peak */
    const char *wp = getenv("OMP_WAIT_POLICY");

    printf("{\"impl\": \"dap\", \"device\": \"%s\", \"precision\": \"%s\", \"peak_device_mb\": %.1f, ",
           dap_device_describe(), dap_precision_name(dap_device_precision()), dev_mb);
    printf("\"config\": \"%s\", \"measure\": \"%s\", \"batch\": %d, \"layer\": %d, "
           "\"threads\": %d, \"omp_wait_policy\": \"%s\", \"warmup\": %d, \"iters\": %d, \"times_s\": [",
           config, measure, b.n, layer, threads, wp ? wp : "default", warmup, iters);
    for (int i = 0; i < iters; i++) printf("%s%.6f", i ? ", " : "", t[i]);
    printf("], \"median_s\": %.6f, \"min_s\": %.6f, \"throughput\": %.4f, \"unit\": \"%s\", "
           "\"cpu_s\": %.3f, \"foreign_cpu\": %.3f, \"peak_rss_mb\": %.1f}\n",
           med, sorted[0], per_iter / med, k_measures[mi].unit, self, foreign, peak_rss_mb());
    free(t);
    free(sorted);
    return 0;
}
