/*
 * test_wiring.c: behavioural tests of how the sampler's pieces are wired together, each
 * aimed at a mistake that leaves the numerics tests green and silently ruins a distilled
 * set: the guidance update's sign (x and eps forms), the real samples' noise level, the
 * classifier-free guidance halves and labels, the label of a data class reaching the
 * model, and the trainer's null-class dropout.
 *
 * The guidance tests use the small random-weight DiT of tests/ref/dit_small.safetensors;
 * the CFG and label tests the shipped Fashion-MNIST prior and classifier (models/), whose
 * samples must look like their class to the classifier.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "data/classmap.h"
#include "diffusion/ddim.h"
#include "diffusion/dit_eps.h"
#include "diffusion/schedule.h"
#include "diffusion/train.h"
#include "distill/distill.h"
#include "distill/guidance.h"
#include "eval/classifier.h"
#include "models/dit.h"
#include "test.h"

/* ---- guidance: sign and the reals' noise level ------------------------------------ */

static void dap_opts(dap_distill_opts *o, int form, double gamma) {
    dap_distill_opts_default(o);
    o->method = DAP_METHOD_DAP;
    o->ipc = 4, o->steps = 8, o->cfg = 1.0, o->seed = 3;
    o->n_real = 6, o->layer = 2, o->stop = 0, o->form = form, o->gamma = gamma;
}

/* The guided run's energy at its last guided step must be below the unguided run's from
 * the same start (a gamma of 1e-9 runs the same steps and draws the same real noise, so
 * its recorded energies are vanilla's). A flipped update sign raises it instead. */
DAP_TEST(wiring_guidance_lowers_energy) {
    dap_dit *m = dap_test_small_dit(1);
    if (!m) return;
    dap_dataset ds;
    dap_test_model_set(&ds, m, 8, 5, -0.05f, 0.05f, 0.9f, 0.4f);
    const size_t per = (size_t)ds.c * ds.h * ds.w;
    float *out = dap_alloc_f32(4 * per);
    const char *form_name[2] = {"x", "eps"};
    const double gammas[2][2] = {{1e-9, 2.0}, {1e-9, 2.0}};
    for (int form = 0; form < 2; form++) {
        double e[2];
        for (int g = 0; g < 2; g++) {
            dap_distill_opts o;
            dap_opts(&o, form, gammas[form][g]);
            dap_distill_stats st;
            CHECK_MSG(dap_distill_class(m, &ds, 1, &o, out, &st) == DAP_OK, "%s", dap_last_error());
            e[g] = st.energy_last;
            if (g == 0) CHECK(st.guided_steps == o.steps);
        }
        printf("    form %-3s: energy at the last guided step: vanilla %.6g, guided %.6g (ratio %.3f)\n",
               form_name[form], e[0], e[1], e[1] / e[0]);
        CHECK_MSG(e[1] < 0.97 * e[0], "form %s: guidance did not lower the energy (%g vs vanilla %g)", form_name[form],
                  e[1], e[0]);
    }
    dap_free_aligned(out);
    dap_dataset_free(&ds);
    dap_dit_destroy(m);
}

/* Pooled block-l features (n, F) of x (n, per) at timestep t with label y. */
static float *features(const dap_dit *m, const float *x, int n, int t, int y, int layer, int pool, int *F) {
    dap_dit_state *st = dap_dit_state_create_ex(m, n, 0);
    float *tf = dap_alloc_f32((size_t)n);
    int *yy = dap_malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) tf[i] = (float)t, yy[i] = y;
    dap_dit_forward(m, st, NULL, x, tf, yy, layer);
    *F = dap_pool_dim(m->tokens, m->cfg.hidden, pool);
    float *f = dap_alloc_f32((size_t)n * *F);
    dap_pool_forward(f, dap_dit_features(st), n, m->tokens, m->cfg.hidden, pool);
    dap_dit_state_destroy(st);
    dap_free_aligned(tf);
    free(yy);
    return f;
}

/* The energy recorded at the first guided step compares the synthetic x_t with the real
 * samples noised to the same t, both with the model label of the class: it must be the energy against reals at t's noise level
 * (drawn here with other noise: equal up to sampling noise), far from the energy against
 * the clean reals (what un-noised reals give). The trajectory starts half-way (--init real,
 * --strength 0.5), where the two differ most, from a real image of the class: all of them
 * are the class's constant image up to +-0.05, so the test rebuilds x_t from that. The
 * data's class 1 is the model's label 3 (o.labels): the features carry that label. */
DAP_TEST(wiring_reals_noised_to_t) {
    dap_dit *m = dap_test_small_dit(1);
    if (!m) return;
    const int k = 1, per_class = 32;
    dap_dataset ds;
    dap_test_model_set(&ds, m, per_class, 5, -0.05f, 0.05f, 0.9f, 0.4f);
    const size_t per = (size_t)ds.c * ds.h * ds.w;
    dap_distill_opts o;
    dap_opts(&o, DAP_FORM_X, 1.0);
    o.init = DAP_INIT_REAL, o.strength = 0.5;
    const int labels[5] = {0, 3, 2, 1, 4}, y = labels[k];
    o.labels = labels;
    o.n_real = per_class; /* every real image of the class: the draw's order does not matter */
    float *out = dap_alloc_f32((size_t)o.ipc * per);
    dap_distill_stats st;
    CHECK_MSG(dap_distill_class(m, &ds, k, &o, out, &st) == DAP_OK, "%s", dap_last_error());
    /* the first guided step: the first step run, from each sample's noise */
    dap_schedule sched;
    dap_schedule_init_default(&sched);
    int *taus = dap_malloc(sizeof(int) * (size_t)o.steps), t;
    CHECK(dap_timestep_spacing(sched.T, o.steps, taus) == DAP_OK);
    CHECK(dap_ddim_start_t(sched.T, o.steps, dap_init_skip(o.steps, o.strength), &t) == DAP_OK);
    const double a = sched.alpha_bar[t];
    float *xs = dap_alloc_f32((size_t)o.ipc * per), *clean = dap_alloc_f32((size_t)per_class * per),
          *noised = dap_alloc_f32((size_t)per_class * per);
    for (int i = 0; i < o.ipc; i++) {
        dap_rng r;
        dap_sample_rng(&r, o.seed, k, i);
        dap_rng_normal(&r, xs + (size_t)i * per, per, 0.0f, 1.0f);
        for (size_t q = 0; q < per; q++) /* the class's constant image, noised to t */
            xs[(size_t)i * per + q] = (float)(sqrt(a) * (0.9 - 0.4 * k) + sqrt(1 - a) * xs[(size_t)i * per + q]);
    }
    dap_rng nr;
    dap_rng_init(&nr, 77, 0);
    for (int j = 0; j < per_class; j++) {
        memcpy(clean + (size_t)j * per, ds.x + (size_t)ds.class_idx[k][j] * per, sizeof(float) * per);
        dap_rng_normal(&nr, noised + (size_t)j * per, per, 0.0f, 1.0f);
        for (size_t q = 0; q < per; q++)
            noised[(size_t)j * per + q] = (float)(sqrt(a) * clean[(size_t)j * per + q] + sqrt(1 - a) * noised[(size_t)j * per + q]);
    }
    int F;
    float *fs = features(m, xs, o.ipc, t, y, o.layer, o.pool, &F);
    float *fc = features(m, clean, per_class, t, y, o.layer, o.pool, &F);
    float *fn = features(m, noised, per_class, t, y, o.layer, o.pool, &F);
    const double e_noised = dap_kernel_energy(NULL, NULL, fs, o.ipc, fn, per_class, F, o.kernel, o.sigma);
    const double e_clean = dap_kernel_energy(NULL, NULL, fs, o.ipc, fc, per_class, F, o.kernel, o.sigma);
    printf("    t %d (alpha_bar %.3g): recorded %.6g; against reals noised to t %.6g, against clean reals %.6g\n", t, a,
           st.energy_first, e_noised, e_clean);
    CHECK_MSG(fabs(st.energy_first - e_noised) < 0.25 * fabs(e_clean - e_noised),
              "the guidance compares other features than those of the model label's reals at t's noise level (recorded %g, noised %g, clean %g)", st.energy_first,
              e_noised, e_clean);
    dap_free_aligned(fs), dap_free_aligned(fc), dap_free_aligned(fn);
    dap_free_aligned(xs), dap_free_aligned(clean), dap_free_aligned(noised), dap_free_aligned(out);
    free(taus);
    dap_schedule_free(&sched);
    dap_dataset_free(&ds);
    dap_dit_destroy(m);
}

/* ---- classifier-free guidance and labels, on the shipped prior --------------------- */

static const char *shipped(const char *name) {
    static char buf[4][512];
    static int k;
    char *b = buf[k++ & 3];
    const char *roots[] = {"models/", "../models/"};
    for (int i = 0; i < 2; i++) {
        snprintf(b, 512, "%s%s", roots[i], name);
        if (dap_file_exists(b)) return b;
    }
    return NULL;
}

typedef struct prior {
    dap_dit *m;
    dap_classifier clf;
} prior;

/* The shipped DiT and ConvNet-3; 0 (after DAP_SKIP or a failure) when they cannot be used. */
static int prior_load(prior *p) {
    memset(p, 0, sizeof *p);
    const char *dit = shipped("fmnist-dit.safetensors"), *clf = shipped("fmnist-convnet3.safetensors");
    if (!dit || !clf) {
        dap_test_fail(__FILE__, __LINE__, "the shipped models/fmnist-dit.safetensors or fmnist-convnet3.safetensors is missing");
        return 0;
    }
    if (dap_dit_load(&p->m, dit, 0, 0) != DAP_OK || dap_classifier_load(&p->clf, clf) != DAP_OK) {
        dap_test_fail(__FILE__, __LINE__, "cannot load the shipped models: %s", dap_last_error());
        dap_dit_destroy(p->m);
        return 0;
    }
    return 1;
}

static void prior_free(prior *p) {
    dap_dit_destroy(p->m);
    dap_classifier_free(&p->clf);
}

/* n samples, sample i with label y[i], CFG scale w, from noise stream (seed, y[i], i). */
static void sample_cfg(const dap_dit *m, const int *y, int n, double w, int steps, float *x) {
    const size_t per = (size_t)m->cfg.in_channels * m->cfg.input_size * m->cfg.input_size;
    dap_rng *rngs = dap_malloc(sizeof(dap_rng) * (size_t)n);
    for (int i = 0; i < n; i++) {
        dap_sample_rng(&rngs[i], 11, y[i], i);
        dap_rng_normal(&rngs[i], x + (size_t)i * per, per, 0.0f, 1.0f);
    }
    dap_dit_eps e;
    CHECK(dap_dit_eps_init(&e, m, n, w) == DAP_OK);
    dap_dit_eps_set_labels(&e, y, n);
    dap_ddim_hooks h = {.eps = dap_dit_eps_hook, .ctx = &e, .clip_x0 = 1.0};
    dap_schedule s;
    dap_schedule_init_default(&s);
    CHECK(dap_ddim_sample(&s, steps, 0.0, x, n, per, rngs, &h) == DAP_OK);
    for (size_t q = 0; q < (size_t)n * per; q++) x[q] = x[q] < -1.f ? -1.f : x[q] > 1.f ? 1.f : x[q];
    dap_schedule_free(&s);
    dap_dit_eps_free(&e);
    free(rngs);
}

/* The classifier's mean log-probability of each sample's label, and how many it predicts. */
static double class_logp(dap_classifier *c, const float *x, const int *y, int n, int *correct) {
    const int K = 10;
    float *lg = dap_alloc_f32((size_t)n * K);
    dap_classifier_logits(c, x, n, lg);
    double s = 0;
    *correct = 0;
    for (int i = 0; i < n; i++) {
        const float *l = lg + (size_t)i * K;
        double mx = l[0], z = 0;
        int arg = 0;
        for (int k = 1; k < K; k++)
            if (l[k] > mx) mx = l[k], arg = k;
        for (int k = 0; k < K; k++) z += exp(l[k] - mx);
        s += l[y[i]] - mx - log(z);
        *correct += arg == y[i];
    }
    dap_free_aligned(lg);
    return s / n;
}

/* CFG moves a sample toward its class: from the same noise, the classifier gives the
 * label a higher probability at w = 4 than without guidance (w = 1), and recognises most
 * guided samples. Swapped conditional/null halves push away from the class; a null branch
 * given the real label makes w = 4 equal w = 1; a label that does not reach the model (every
 * sample on label 0) gives samples of the wrong class. */
DAP_TEST(wiring_cfg_moves_toward_class) {
    if (dap_test_fast()) DAP_SKIP("DAP_TEST_FAST (the sanitizer pass): samples from the 8-block shipped prior");
    prior p;
    if (!prior_load(&p)) return;
    enum { PER = 2, K = 10, N = PER * K, STEPS = 10 };
    int y[N];
    for (int i = 0; i < N; i++) y[i] = i / PER;
    const size_t per = 28 * 28;
    float *x1 = dap_alloc_f32(N * per), *x4 = dap_alloc_f32(N * per);
    sample_cfg(p.m, y, N, 1.0, STEPS, x1);
    sample_cfg(p.m, y, N, 4.0, STEPS, x4);
    int c1, c4;
    const double l1 = class_logp(&p.clf, x1, y, N, &c1), l4 = class_logp(&p.clf, x4, y, N, &c4);
    printf("    classifier on %d samples: w=1 log p(label) %.3f, %d correct; w=4 %.3f, %d correct\n", N, l1, c1, l4, c4);
    CHECK_MSG(l4 > l1 + 0.1, "CFG w=4 did not move the samples toward their class (log p %.3f vs %.3f at w=1)", l4, l1);
    CHECK_MSG(c4 >= (int)(0.8 * N), "only %d of %d guided samples are of their class", c4, N);
    dap_free_aligned(x1), dap_free_aligned(x4);
    prior_free(&p);
}

/* A Fashion-MNIST folder lists its classes alphabetically: data class 0 is "Ankle boot",
 * the model's label 9. Distilled through the name mapping, its images must be ankle boots
 * to the classifier (and "T-shirt_top", data class 8, T-shirts): the mapped label, not the
 * folder's index, reaches the model. */
DAP_TEST(wiring_distill_label_reaches_model) {
    if (dap_test_fast()) DAP_SKIP("DAP_TEST_FAST (the sanitizer pass): samples from the 8-block shipped prior");
    prior p;
    if (!prior_load(&p)) return;
    static const char *folder[10] = {"Ankle boot", "Bag", "Coat", "Dress", "Pullover",
                                     "Sandal", "Shirt", "Sneaker", "T-shirt_top", "Trouser"};
    dap_dataset ds = {0}; /* vanilla reads no real image: names and shape only */
    ds.num_classes = 10, ds.c = 1, ds.h = ds.w = 28, ds.n = 10;
    ds.class_names = dap_malloc(sizeof(char *) * 10);
    for (int k = 0; k < 10; k++) ds.class_names[k] = dap_strdup(folder[k]);
    ds.x = dap_alloc_f32(10 * 784);
    memset(ds.x, 0, sizeof(float) * 10 * 784);
    ds.y = dap_malloc(sizeof(int) * 10);
    for (int i = 0; i < 10; i++) ds.y[i] = i;
    dap_dataset_index(&ds);
    int labels[10];
    CHECK(p.m->class_names != NULL);
    CHECK_MSG(dap_class_map((const char *const *)p.m->class_names, 10, &ds, labels, "fmnist-dit") == DAP_OK, "%s",
              dap_last_error());
    dap_distill_opts o;
    dap_distill_opts_default(&o);
    o.method = DAP_METHOD_VANILLA, o.ipc = 3, o.steps = 10, o.cfg = 4.0, o.clip_x0 = 1.0, o.labels = labels;
    const int classes[2] = {0, 8}, want[2] = {9, 0};
    float *out = dap_alloc_f32(3 * 784);
    for (int c = 0; c < 2; c++) {
        dap_distill_stats st;
        CHECK_MSG(dap_distill_class(p.m, &ds, classes[c], &o, out, &st) == DAP_OK, "%s", dap_last_error());
        int y[3] = {want[c], want[c], want[c]}, correct;
        const double lp = class_logp(&p.clf, out, y, 3, &correct);
        printf("    data class %d (%s) -> label %d: %d of 3 classified %s (log p %.3f)\n", classes[c], folder[classes[c]],
               labels[classes[c]], correct, dap_fmnist_classes[want[c]], lp);
        CHECK_MSG(correct >= 2, "data class '%s': %d of 3 samples are %s", folder[classes[c]], correct,
                  dap_fmnist_classes[want[c]]);
    }
    dap_free_aligned(out);
    dap_dataset_free(&ds);
    prior_free(&p);
}

/* ---- the trainer's null-class dropout ------------------------------------------------ */

/* Over 8 steps of 64 samples, the labels fed to the model are the null class at the
 * configured rate (0.3: within 5 standard deviations), and never with rate 0; the others
 * are the data's labels. */
DAP_TEST(wiring_trainer_drops_labels) {
    dap_dit_config c;
    dap_dit_config_by_name("fm-tiny", &c);
    c.input_size = 8, c.depth = 1, c.num_classes = 4, c.class_dropout = 0.1f;
    const double rates[2] = {0.3, 0.0};
    for (int r = 0; r < 2; r++) {
        dap_dit *m = NULL;
        CHECK(dap_dit_create(&m, &c, 1) == DAP_OK);
        if (!m) return;
        dap_dit_init(m, 1);
        dap_dataset ds = {0}; /* every image of class k is the constant k / 4 */
        ds.n = 64, ds.c = 1, ds.h = ds.w = 8, ds.num_classes = 4;
        ds.class_names = dap_malloc(sizeof(char *) * 4);
        for (int k = 0; k < 4; k++) ds.class_names[k] = dap_strdup("c");
        ds.x = dap_alloc_f32(64 * 64);
        ds.y = dap_malloc(sizeof(int) * 64);
        for (int i = 0; i < 64; i++) {
            ds.y[i] = i % 4;
            for (int q = 0; q < 64; q++) ds.x[i * 64 + q] = 0.25f * (float)(i % 4);
        }
        dap_dataset_index(&ds);
        dap_train_config tc;
        dap_train_config_default(&tc);
        tc.batch = 64, tc.class_dropout = (float)rates[r];
        dap_trainer *tr = NULL;
        CHECK_MSG(dap_trainer_create(&tr, m, &ds, &tc) == DAP_OK, "%s", dap_last_error());
        if (!tr) {
            dap_dataset_free(&ds);
            return;
        }
        int dropped = 0, total = 0, wrong = 0;
        for (int s = 0; s < 8; s++) {
            dap_trainer_step(tr, NULL);
            for (int i = 0; i < tc.batch; i++) {
                total++;
                if (tr->y[i] == c.num_classes) dropped++;
                else wrong += tr->y[i] != (int)lrintf(4.0f * tr->x0[(size_t)i * 64]); /* the image's class */
            }
        }
        const double rate = (double)dropped / total, sd = sqrt(rates[r] * (1 - rates[r]) / total);
        printf("    class_dropout %.1f: %d of %d labels dropped (%.3f)\n", rates[r], dropped, total, rate);
        CHECK_MSG(fabs(rate - rates[r]) <= 5 * sd, "dropout %g: dropped a fraction %g", rates[r], rate);
        CHECK_MSG(wrong == 0, "%d kept labels are not their image's class", wrong);
        dap_trainer_destroy(tr);
        dap_dataset_free(&ds);
    }
}
