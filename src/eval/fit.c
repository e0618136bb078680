/*
 * fit.c: the hard- and soft-label training loops of the evaluation protocols
 * (see fit.h): batch assembly, augmentation, loss, optimizer, schedule, progress.
 */
#include "eval/fit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/optim.h"
#include "eval/augment.h"
#include "ops/ops.h"
#ifdef DAP_CUDA
#include "cuda/cuda.h"
#endif

enum { STREAM_SHUFFLE = 1, STREAM_AUG = 2 };

void dap_fit_config_hard(dap_fit_config *c, int epochs, int aug) {
    memset(c, 0, sizeof *c);
    c->epochs = epochs, c->batch = 256;
    c->optimizer = DAP_OPT_SGD, c->lr = 0.01, c->momentum = 0.9, c->wd = 5e-4;
    c->schedule = DAP_LR_HALF, c->aug = aug, c->temperature = 1.0;
    c->label = "train";
}

void dap_fit_config_imagenet(dap_fit_config *c, int ipc) {
    dap_fit_config_hard(c, ipc <= 10 ? 2000 : ipc <= 50 ? 1500 : 1000, DAP_AUG_IMAGENET);
    c->batch = 64, c->schedule = DAP_LR_IMAGENET, c->cutmix = 0.5;
}

void dap_fit_config_soft(dap_fit_config *c, dap_classifier *teacher, int epochs) {
    dap_fit_config_hard(c, epochs, DAP_AUG_RRC);
    c->optimizer = DAP_OPT_ADAMW, c->lr = 1e-3, c->wd = 0.01, c->momentum = 0;
    c->schedule = DAP_LR_COSINE, c->cutmix = 1.0, c->teacher = teacher, c->temperature = 20.0;
    c->batch = 100;
}

double dap_fit_lr(const dap_fit_config *c, int ep) {
    switch (c->schedule) {
    case DAP_LR_HALF: return ep >= c->epochs / 2 ? 0.1 * c->lr : c->lr;
    case DAP_LR_IMAGENET: {
        double lr = c->lr;
        if (ep >= 2 * c->epochs / 3) lr *= 0.2;
        if (ep >= 5 * c->epochs / 6) lr *= 0.2;
        return lr;
    }
    case DAP_LR_COSINE: return 0.5 * c->lr * (1.0 + cos(3.14159265358979 * ep / c->epochs));
    default: return c->lr;
    }
}

/* ---- optimizer: one PyTorch parameter group (weight decay on every tensor) ------ */

typedef struct optimizer {
    int kind;
    dap_sgd sgd;
    dap_adamw adamw;
} optimizer;

static void opt_init(optimizer *o, const dap_fit_config *c, const dap_params *ps) {
    o->kind = c->optimizer;
    if (o->kind == DAP_OPT_SGD) {
        dap_sgd_init(&o->sgd, ps, c->momentum, c->wd);
        o->sgd.decay_all = 1;
    } else {
        dap_adamw_init(&o->adamw, ps, 0.9, 0.999, 1e-8, c->wd);
        o->adamw.decay_all = 1;
    }
}

static void opt_free(optimizer *o) {
    if (o->kind == DAP_OPT_SGD) dap_sgd_free(&o->sgd);
    else dap_adamw_free(&o->adamw);
}

static void opt_step(optimizer *o, dap_params *ps, double lr) {
    if (o->kind == DAP_OPT_SGD) dap_sgd_step(&o->sgd, ps, lr);
    else dap_adamw_step(&o->adamw, ps, lr);
}

static dap_sgd *opt_sgd(optimizer *o) { return o->kind == DAP_OPT_SGD ? &o->sgd : NULL; }
static dap_adamw *opt_adamw(optimizer *o) { return o->kind == DAP_OPT_SGD ? NULL : &o->adamw; }

/* ---- mid-run state ------------------------------------------------------------------ */

#define STATE_FORMAT "dap-fit-state"

typedef struct fit_progress {
    int epoch; /* epochs done */
    double seconds;
    const dap_rng *shuffle, *aug;
    const int *order;
    int n;
} fit_progress;

static void meta_u64_set(dap_st_writer *w, const char *key, unsigned long long v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", v);
    dap_st_writer_meta(w, key, buf);
}

static int state_save(const dap_fit_config *cfg, const dap_cnn *net, const optimizer *o, const fit_progress *p) {
    dap_st_writer *w = dap_st_writer_create();
    char buf[64];
    dap_st_writer_meta(w, "format", STATE_FORMAT);
    dap_st_writer_meta(w, "key", cfg->state_key ? cfg->state_key : "");
    dap_st_writer_meta(w, "optimizer", o->kind == DAP_OPT_SGD ? "sgd" : "adamw");
    meta_u64_set(w, "epoch", (unsigned long long)p->epoch);
    meta_u64_set(w, "shuffle_counter", (unsigned long long)p->shuffle->counter);
    meta_u64_set(w, "aug_counter", (unsigned long long)p->aug->counter);
    snprintf(buf, sizeof buf, "%.17g", p->seconds);
    dap_st_writer_meta(w, "seconds", buf);
    char name[1024];
    for (int k = 0; k < net->params.n; k++) { /* weights and buffers (BatchNorm's running statistics) */
        const dap_param *q = &net->params.p[k];
        snprintf(name, sizeof name, "model.%s", q->key);
        dap_st_writer_add(w, name, DAP_DT_F32, net->params.data + q->offset, q->ndim, q->shape);
    }
    if (o->kind == DAP_OPT_SGD) dap_sgd_write(&o->sgd, &net->params, w, "opt.");
    else dap_adamw_write(&o->adamw, &net->params, w, "opt.");
    int64_t shape[1] = {p->n};
    dap_st_writer_add_raw(w, "order", DAP_DT_I32, p->order, 1, shape);
    int rc = dap_st_writer_save(w, cfg->state_path);
    dap_st_writer_destroy(w);
    return rc;
}

/* Reads a state written by state_save for this run into net, o, the streams and order;
 * *epoch and *seconds get the epochs done and the time they took. */
static int state_load(const dap_fit_config *cfg, dap_cnn *net, optimizer *o, dap_rng *shuffle, dap_rng *aug,
                      int *order, int n, int *epoch, double *seconds) {
    dap_st *st;
    DAP_TRY(dap_st_open(&st, cfg->state_path));
    int rc = DAP_OK;
    char *fmt = dap_st_meta_get(st, "format"), *key = dap_st_meta_get(st, "key"),
         *opt = dap_st_meta_get(st, "optimizer"), *sec = dap_st_meta_get(st, "seconds");
    const char *want_key = cfg->state_key ? cfg->state_key : "";
    if (!fmt || strcmp(fmt, STATE_FORMAT))
        rc = dap_error(DAP_ERR_FORMAT, "%s: not a dap eval training state (format %s)", st->path, fmt ? fmt : "none");
    else if (!key || strcmp(key, want_key))
        rc = dap_error(DAP_ERR_ARG, "%s was made for another run (%s), not this one (%s); remove it or drop --resume",
                       st->path, key ? key : "?", want_key);
    else if (!opt || strcmp(opt, o->kind == DAP_OPT_SGD ? "sgd" : "adamw"))
        rc = dap_error(DAP_ERR_FORMAT, "%s: optimizer %s, this run uses %s", st->path, opt ? opt : "?",
                       o->kind == DAP_OPT_SGD ? "sgd" : "adamw");
    unsigned long long ep = 0, sc = 0, ac = 0;
    if (rc == DAP_OK) rc = dap_st_meta_u64(st, "epoch", &ep);
    if (rc == DAP_OK) rc = dap_st_meta_u64(st, "shuffle_counter", &sc);
    if (rc == DAP_OK) rc = dap_st_meta_u64(st, "aug_counter", &ac);
    if (rc == DAP_OK && (ep < 1 || ep >= (unsigned long long)cfg->epochs))
        rc = dap_error(DAP_ERR_FORMAT, "%s: %llu epochs done, this run has %d", st->path, ep, cfg->epochs);
    char name[1024];
    for (int k = 0; k < net->params.n && rc == DAP_OK; k++) {
        const dap_param *q = &net->params.p[k];
        snprintf(name, sizeof name, "model.%s", q->key);
        if (!dap_st_find(st, name)) rc = dap_error(DAP_ERR_FORMAT, "%s: no tensor '%s'", st->path, name);
        else rc = dap_st_read_f32(st, name, net->params.data + q->offset, q->shape, q->ndim);
    }
    if (rc == DAP_OK)
        rc = o->kind == DAP_OPT_SGD ? dap_sgd_read(&o->sgd, &net->params, st, "opt.")
                                    : dap_adamw_read(&o->adamw, &net->params, st, "opt.");
    if (rc == DAP_OK) {
        const dap_st_tensor *t = dap_st_find(st, "order");
        if (!t || t->dtype != DAP_DT_I32 || t->ndim != 1 || t->shape[0] != n)
            rc = dap_error(DAP_ERR_FORMAT, "%s: no data order of %d int32 entries (one per training image)",
                           st->path, n);
        else {
            memcpy(order, st->data + t->begin, (size_t)n * sizeof(int));
            /* a permutation of 0..n-1, or the file lies */
            unsigned char *seen = dap_calloc((size_t)n, 1);
            for (int i = 0; i < n && rc == DAP_OK; i++) {
                if (order[i] < 0 || order[i] >= n || seen[order[i]])
                    rc = dap_error(DAP_ERR_FORMAT, "%s: the data order is not a permutation of 0..%d", st->path, n - 1);
                else seen[order[i]] = 1;
            }
            free(seen);
        }
    }
    for (int k = 0; k < net->params.n && rc == DAP_OK; k++) {
        const dap_param *q = &net->params.p[k];
        for (size_t i = 0; i < q->numel && rc == DAP_OK; i++)
            if (!isfinite(net->params.data[q->offset + i]))
                rc = dap_error(DAP_ERR_VALUE, "%s: tensor 'model.%s' holds %g", st->path, q->key,
                               net->params.data[q->offset + i]);
    }
    if (rc == DAP_OK) {
        shuffle->counter = sc, aug->counter = ac;
        *epoch = (int)ep;
        *seconds = sec ? strtod(sec, NULL) : 0;
        if (!isfinite(*seconds) || *seconds < 0) *seconds = 0;
    }
    free(fmt), free(key), free(opt), free(sec);
    dap_st_close(st);
    return rc;
}

/* ---- the loop --------------------------------------------------------------------------- */

static void fmt_time(char *buf, size_t n, double s) {
    if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else if (s >= 60) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, n, "%.0fs", s);
}

/* The teacher's input from the student's (normalised) batch: undo the student's
 * normalisation, apply the teacher's. */
static void renormalize(float *dst, const float *xs, const float *a, const float *b, int c, size_t hw, int n) {
    for (long plane = 0; plane < (long)n * c; plane++) {
        int k = (int)(plane % c);
        for (size_t j = 0; j < hw; j++) dst[plane * hw + j] = a[k] * xs[plane * hw + j] + b[k];
    }
}

#ifdef DAP_CUDA
/* The training set on the GPU for a resident run, or NULL (the host assembles the batches):
 * DAP_CUDA_AUG=0 in the environment, or no room for it (said once). */
static dap_cuda_images *device_set(const dap_dataset *train, int bs, const dap_fit_config *cfg) {
    const char *env = getenv("DAP_CUDA_AUG");
    if (env && !strcmp(env, "0")) return NULL;
    dap_cuda_images *s = NULL;
    if (dap_cuda_images_create(&s, train->x, train->n, train->c, train->h, train->w, bs) != DAP_OK) {
        if (cfg->progress)
            fprintf(stderr, "%s: the batches are assembled on the host: %s\n", cfg->label ? cfg->label : "train",
                    dap_last_error());
        return NULL;
    }
    return s;
}

/* Gathers and augments the batch into the student's device input, and the teacher's
 * renormalised copy into the teacher's (on the teacher's stream, after the student's). */
static void assemble_on_device(dap_cuda_images *set, const int *idx, const dap_aug_plan *plan, dap_cnn_state *st,
                               dap_cnn_state *tst, const float *ta, const float *tb) {
    void *stream, *tstream = NULL;
    float *x = dap_cnn_state_input(st, &stream);
    float *xt = tst ? dap_cnn_state_input(tst, &tstream) : NULL;
    if (tst) dap_cuda_stream_wait(stream, tstream); /* the teacher's last read of x is done */
    dap_cuda_aug_apply(set, idx, plan, x, stream);
    if (tst) {
        dap_cuda_stream_wait(tstream, stream);
        dap_cuda_scale_shift(xt, x, plan->n, plan->c, (size_t)plan->h * plan->w, ta, tb, tstream);
    }
}
#else
typedef struct dap_cuda_images dap_cuda_images;
static dap_cuda_images *device_set(const dap_dataset *train, int bs, const dap_fit_config *cfg) {
    (void)train, (void)bs, (void)cfg;
    return NULL;
}
static void assemble_on_device(dap_cuda_images *set, const int *idx, const dap_aug_plan *plan, dap_cnn_state *st,
                               dap_cnn_state *tst, const float *ta, const float *tb) {
    (void)set, (void)idx, (void)plan, (void)st, (void)tst, (void)ta, (void)tb;
}
#endif

int dap_classifier_train(dap_classifier *m, const dap_dataset *train, const dap_fit_config *cfg,
                         dap_fit_result *res) {
    dap_cnn *net = &m->net;
    int k = net->num_classes, in = dap_cnn_in_size(net), n = train->n;
    if (train->c != net->in_c || train->h != net->in_h || train->w != net->in_w)
        return dap_error(DAP_ERR_SHAPE, "training set: images are %dx%dx%d, the %s expects %dx%dx%d",
                         train->c, train->h, train->w, net->arch, net->in_c, net->in_h, net->in_w);
    if (n < 1) return dap_error(DAP_ERR_VALUE, "training set is empty");
    for (int i = 0; i < n; i++)
        if (train->y[i] < 0 || train->y[i] >= k)
            return dap_error(DAP_ERR_VALUE, "training set: label %d of image %d outside 0..%d", train->y[i], i, k - 1);
    dap_classifier *teacher = cfg->teacher;
    if (teacher && (teacher->net.in_c != net->in_c || teacher->net.in_h != net->in_h ||
                    teacher->net.in_w != net->in_w || teacher->net.num_classes != k))
        return dap_error(DAP_ERR_SHAPE, "teacher %s (%dx%dx%d, %d classes) does not match the student (%dx%dx%d, %d classes)",
                         teacher->net.arch, teacher->net.in_c, teacher->net.in_h, teacher->net.in_w,
                         teacher->net.num_classes, net->in_c, net->in_h, net->in_w, k);
    int bs = cfg->batch < n ? cfg->batch : n, c = net->in_c, h = net->in_h, w = net->in_w;
    dap_cnn_state st, tst;
    dap_cnn_state_init(&st, net, bs, 1);
    if (teacher) dap_cnn_state_init(&tst, &teacher->net, bs, 0);
    float *xb = dap_alloc_f32((size_t)bs * in), *xt = teacher ? dap_alloc_f32((size_t)bs * in) : NULL;
    float *probs = dap_alloc_f32((size_t)bs * k), *pt = dap_alloc_f32((size_t)bs * k);
    float *dlogits = dap_alloc_f32((size_t)bs * k), *soft = dap_alloc_f32((size_t)bs * k);
    int *idx = dap_malloc((size_t)n * sizeof(int)), *yb = dap_malloc((size_t)bs * sizeof(int));
    for (int i = 0; i < n; i++) idx[i] = i;
    dap_aug_plan plan;
    dap_aug_plan_init(&plan, bs, c, h, w);
    float norm_a[3], norm_b[3], ta[3], tb[3]; /* the student's normalisation; student -> teacher */
    dap_classifier_norm_coeffs(m, norm_a, norm_b);
    if (teacher)
        for (int k = 0; k < c; k++)
            ta[k] = m->std[k] / teacher->std[k], tb[k] = (m->mean[k] - teacher->mean[k]) / teacher->std[k];
    optimizer opt;
    opt_init(&opt, cfg, &net->params);
    dap_rng shuffle, aug;
    dap_rng_init(&shuffle, cfg->seed, STREAM_SHUFFLE);
    dap_rng_init(&aug, cfg->seed, STREAM_AUG);

    int rc = DAP_OK, ep0 = 0;
    double before = 0; /* seconds of the epochs a state file brought */
    if (cfg->state_path && cfg->state_resume && dap_file_exists(cfg->state_path)) {
        rc = state_load(cfg, net, &opt, &shuffle, &aug, idx, n, &ep0, &before);
        if (rc == DAP_OK && cfg->progress)
            fprintf(stderr, "%s: resuming after epoch %d/%d (%s)\n", cfg->label ? cfg->label : "train", ep0,
                    cfg->epochs, cfg->state_path);
    }
    /* on a GPU the weights, the gradient and the optimiser stay there for the whole run;
     * the host gets them back for a mid-run state and at the end */
    int resident = rc == DAP_OK && dap_cnn_state_keep_weights(&st, net, opt_sgd(&opt), opt_adamw(&opt));
    if (teacher) dap_cnn_state_keep_weights(&tst, &teacher->net, NULL, NULL);
    /* a resident run assembles its batches on the GPU too: the set goes up once */
    dap_cuda_images *dev_set = resident ? device_set(train, bs, cfg) : NULL;
    double t0 = dap_time_now(), last_print = 0, last_state = 0, loss_sum = 0;
    long seen = 0, correct = 0;
    int this_call = 0;
    for (int ep = ep0; ep < cfg->epochs && rc == DAP_OK; ep++) {
        float lr = (float)dap_fit_lr(cfg, ep);
        if (cfg->schedule == DAP_LR_HALF && ep == cfg->epochs / 2 && ep > 0) {
            opt_free(&opt); /* the reference re-creates its optimizer at the decay */
            opt_init(&opt, cfg, &net->params);
        }
        dap_rng_shuffle(&shuffle, idx, (size_t)n);
        loss_sum = 0, seen = 0, correct = 0;
        for (int b0 = 0; b0 < n; b0 += bs) {
            int b = n - b0 < bs ? n - b0 : bs;
            for (int i = 0; i < b; i++) yb[i] = train->y[idx[b0 + i]];
            /* the batch's augmentation, drawn on the host: on [-1, 1] pixels colour jitter
             * (on [0, 1]) and crops, then the normalisation, DSA and CutMix */
            dap_aug_plan_reset(&plan, b);
            if (cfg->aug == DAP_AUG_IMAGENET) dap_aug_plan_jitter(&plan, 0.4f, 1, &aug);
            if (cfg->aug == DAP_AUG_IMAGENET || cfg->aug == DAP_AUG_RRC)
                dap_aug_plan_resized_crop_flip(&plan, cfg->aug == DAP_AUG_RRC ? 0.08f : 0.5f, 1.0f, &aug);
            dap_aug_plan_scale_shift(&plan, norm_a, norm_b);
            if (cfg->aug == DAP_AUG_DSA) dap_aug_plan_dsa(&plan, &aug);
            float lam = 1.0f;
            if (cfg->cutmix > 0 && dap_rng_next_double(&aug) < cfg->cutmix) lam = dap_aug_plan_cutmix(&plan, &aug);
            const int *perm = plan.perm;
            const float *logits, *tl = NULL;
            if (dev_set) { /* gathered and augmented where the classifier runs */
                assemble_on_device(dev_set, idx + b0, &plan, &st, teacher ? &tst : NULL, ta, tb);
                logits = dap_cnn_forward(net, &st, NULL, b, 1);
                if (teacher) tl = dap_cnn_forward(&teacher->net, &tst, NULL, b, 0);
            } else {
                for (int i = 0; i < b; i++)
                    memcpy(xb + (size_t)i * in, train->x + (size_t)idx[b0 + i] * in, (size_t)in * sizeof(float));
                dap_aug_apply(&plan, xb);
                logits = dap_cnn_forward(net, &st, xb, b, 1);
                if (teacher) {
                    renormalize(xt, xb, ta, tb, c, (size_t)h * w, b);
                    tl = dap_cnn_forward(&teacher->net, &tst, xt, b, 0);
                }
            }
            float loss;
            if (teacher) {
                loss = dap_kl_forward(probs, pt, logits, tl, b, k, (float)cfg->temperature, 0);
                dap_kl_backward(dlogits, probs, pt, b, k, (float)cfg->temperature, 0, 1.0f);
            } else if (lam < 1.0f) {
                memset(soft, 0, (size_t)b * k * sizeof(float));
                for (int i = 0; i < b; i++) {
                    soft[(size_t)i * k + yb[i]] += lam;
                    soft[(size_t)i * k + yb[perm[i]]] += 1.0f - lam;
                }
                loss = dap_xent_soft_forward(probs, logits, soft, b, k);
                dap_xent_soft_backward(dlogits, probs, soft, b, k, 1.0f);
            } else {
                loss = dap_xent_forward(probs, logits, yb, b, k);
                dap_xent_backward(dlogits, probs, yb, b, k, 1.0f);
            }
            if (!isfinite(loss)) {
                rc = dap_error(DAP_ERR_VALUE, "%s: the loss became %g at epoch %d (learning rate %g)",
                               net->arch, loss, ep + 1, lr);
                break;
            }
            for (int i = 0; i < b; i++) {
                const float *l = logits + (size_t)i * k;
                int best = 0;
                for (int j = 1; j < k; j++)
                    if (l[j] > l[best]) best = j;
                correct += best == yb[i];
            }
            loss_sum += (double)loss * b, seen += b;
            if (resident) {
                dap_cnn_backward(net, &st, xb, dlogits, NULL, 1);
                dap_cnn_state_opt_step(&st, net, opt_sgd(&opt), opt_adamw(&opt), lr);
            } else {
                dap_params_zero_grad(&net->params);
                dap_cnn_backward(net, &st, xb, dlogits, NULL, 1);
                opt_step(&opt, &net->params, lr);
            }
        }
        if (rc != DAP_OK) break;
        double now = dap_time_now() - t0;
        this_call++; /* epochs finished by this call (ep + 1 - ep0) */
        if (cfg->progress && (now - last_print >= 1.0 || ep == cfg->epochs - 1)) {
            char eta[32];
            fmt_time(eta, sizeof eta, now / this_call * (cfg->epochs - ep - 1));
            fprintf(stderr, "%s: epoch %d/%d  loss %.4f  train %.1f%%  lr %.3g  %.0f img/s  ETA %s\n",
                    cfg->label ? cfg->label : "train", ep + 1, cfg->epochs, loss_sum / seen,
                    100.0 * correct / seen, lr, (double)n * this_call / now, eta);
            last_print = now;
        }
        int stop = cfg->stop_after > 0 && this_call >= cfg->stop_after && ep + 1 < cfg->epochs;
        if (cfg->state_path && ep + 1 < cfg->epochs && (stop || now - last_state >= cfg->state_every)) {
            fit_progress p = {ep + 1, before + now, &shuffle, &aug, idx, n};
            if (resident) dap_cnn_state_sync(&st, net, opt_sgd(&opt), opt_adamw(&opt));
            if (state_save(cfg, net, &opt, &p) != DAP_OK) {
                /* a long run goes on without its safety net rather than stopping */
                fprintf(stderr, "%s: warning: could not write the training state: %s\n",
                        cfg->label ? cfg->label : "train", dap_last_error());
                if (stop) rc = DAP_ERR_IO;
            }
            last_state = now;
        }
        if (stop && rc == DAP_OK) rc = DAP_FIT_STOPPED;
    }
    if (resident) dap_cnn_state_sync(&st, net, opt_sgd(&opt), opt_adamw(&opt));
    if (res) {
        double sec = dap_time_now() - t0;
        res->loss = seen ? loss_sum / seen : 0;
        res->train_acc = seen ? 100.0 * correct / seen : 0;
        res->seconds = before + sec;
        res->images_per_s = sec > 0 ? (double)n * this_call / sec : 0;
        res->resumed_epochs = ep0;
    }
    opt_free(&opt);
    free(idx), free(yb);
    dap_aug_plan_free(&plan);
#ifdef DAP_CUDA
    dap_cuda_images_destroy(dev_set);
#endif
    dap_free_aligned(xb), dap_free_aligned(xt), dap_free_aligned(probs), dap_free_aligned(pt);
    dap_free_aligned(dlogits), dap_free_aligned(soft);
    dap_cnn_state_free(&st);
    if (teacher) dap_cnn_state_free(&tst);
    return rc;
}
