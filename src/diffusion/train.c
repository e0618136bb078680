/*
 * train.c: the DiT eps-prediction training step, validation loss, and checkpoints that
 * resume bit-exactly. Randomness of step s comes from stream (TRAIN_STREAM + s) of the
 * run's seed; the data order of epoch e from (PERM_STREAM + e); validation noise of
 * image j from (VAL_STREAM + j).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "diffusion/train.h"
#include "io/io.h"

#define TRAIN_STREAM (1ULL << 40)
#define PERM_STREAM (2ULL << 40)
#define VAL_STREAM (3ULL << 40)

void dap_train_config_default(dap_train_config *c) {
    c->batch = 32;
    c->lr = 1e-4;
    c->weight_decay = 0.0;
    c->ema_decay = 0.9999;
    c->ema_warmup = 1;
    c->grad_clip = 1.0f;
    c->class_dropout = 0.1f;
    c->seed = 0;
    c->lr_schedule = DAP_DIT_LR_CONSTANT;
    c->decay_start = c->decay_end = 0;
    c->trainable = DAP_TRAIN_ALL;
    c->minimax = 0;
    c->lambda_pos = 0.002;
    c->lambda_neg = 0.008;
    c->memory_size = 64;
}

int dap_train_difffit_key(const char *key) {
    return strstr(key, "bias") || strstr(key, "norm") || strstr(key, "gamma") || strstr(key, "y_embed");
}

const char *dap_train_trainable_name(int trainable) { return trainable == DAP_TRAIN_DIFFFIT ? "difffit" : "all"; }

/* What the checkpoint's "finetune" and the state's "minimax" record: the settings a resume
 * must match. */
static void minimax_record(const dap_train_config *c, char *buf, size_t n) {
    if (!c->minimax) snprintf(buf, n, "off");
    else
        snprintf(buf, n, "minimax lambda_pos=%.9g lambda_neg=%.9g memory_size=%d trainable=%s", c->lambda_pos,
                 c->lambda_neg, c->memory_size, dap_train_trainable_name(c->trainable));
}

double dap_train_lr(const dap_train_config *c, int64_t s) {
    if (c->lr_schedule == DAP_DIT_LR_CONSTANT || s < c->decay_start) return c->lr;
    if (s >= c->decay_end) return 0.0;
    const double u = (double)(s - c->decay_start) / (double)(c->decay_end - c->decay_start);
    const double f = c->lr_schedule == DAP_DIT_LR_LINEAR ? 1.0 - u : 0.5 * (1.0 + cos(3.14159265358979323846 * u));
    return c->lr * f;
}

static size_t image_floats(const dap_dit *m) {
    return (size_t)m->cfg.in_channels * m->cfg.input_size * m->cfg.input_size;
}

static size_t out_floats(const dap_dit *m) {
    return (size_t)m->out_channels * m->cfg.input_size * m->cfg.input_size;
}

int dap_trainer_create(dap_trainer **out, dap_dit *model, const dap_dataset *data,
                       const dap_train_config *cfg) {
    *out = NULL;
    const dap_dit_config *mc = &model->cfg;
    DAP_ASSERT(model->params.grad != NULL);
    if (data->c != mc->in_channels || data->h != mc->input_size || data->w != mc->input_size)
        return dap_error(DAP_ERR_SHAPE, "training data: images are %dx%dx%d (C x H x W), the model expects %dx%dx%d",
                         data->c, data->h, data->w, mc->in_channels, mc->input_size, mc->input_size);
    if (data->n < 1) return dap_error(DAP_ERR_VALUE, "training data: no images");
    for (int i = 0; i < data->n; i++)
        if (data->y[i] < 0 || data->y[i] >= mc->num_classes)
            return dap_error(DAP_ERR_VALUE, "training data: image %d has label %d, the model has %d classes",
                             i, data->y[i], mc->num_classes);
    if (cfg->batch < 1) return dap_error(DAP_ERR_ARG, "--batch: expected >= 1, found %d", cfg->batch);
    if (!(cfg->lr > 0.0)) return dap_error(DAP_ERR_ARG, "--lr: expected > 0, found %g", cfg->lr);
    if (cfg->lr_schedule < DAP_DIT_LR_CONSTANT || cfg->lr_schedule > DAP_DIT_LR_COSINE)
        return dap_error(DAP_ERR_ARG, "learning-rate schedule %d: unknown", cfg->lr_schedule);
    if (cfg->lr_schedule != DAP_DIT_LR_CONSTANT && !(cfg->decay_start >= 0 && cfg->decay_start < cfg->decay_end))
        return dap_error(DAP_ERR_ARG, "--decay-start: expected 0 <= N < --steps (%lld), found %lld",
                         (long long)cfg->decay_end, (long long)cfg->decay_start);
    if (!(cfg->ema_decay >= 0.0 && cfg->ema_decay < 1.0))
        return dap_error(DAP_ERR_ARG, "--ema: expected a decay in [0, 1), found %g", cfg->ema_decay);
    if (!(cfg->class_dropout >= 0.0f && cfg->class_dropout < 1.0f))
        return dap_error(DAP_ERR_ARG, "class dropout: expected [0, 1), found %g", (double)cfg->class_dropout);
    if (cfg->class_dropout > 0.0f && !(mc->class_dropout > 0.0f))
        return dap_error(DAP_ERR_ARG, "class dropout %g needs a model with a null class (config class_dropout > 0)",
                         (double)cfg->class_dropout);
    if (cfg->trainable != DAP_TRAIN_ALL && cfg->trainable != DAP_TRAIN_DIFFFIT)
        return dap_error(DAP_ERR_ARG, "trainable set %d: unknown", cfg->trainable);
    if (cfg->minimax) {
        if (!(isfinite(cfg->lambda_pos) && cfg->lambda_pos >= 0.0))
            return dap_error(DAP_ERR_ARG, "--lambda-pos: expected a finite number >= 0, found %g", cfg->lambda_pos);
        if (!(isfinite(cfg->lambda_neg) && cfg->lambda_neg >= 0.0))
            return dap_error(DAP_ERR_ARG, "--lambda-neg: expected a finite number >= 0, found %g", cfg->lambda_neg);
        if (cfg->memory_size < 1)
            return dap_error(DAP_ERR_ARG, "--memory-size: expected >= 1, found %d", cfg->memory_size);
    }
    if (cfg->trainable == DAP_TRAIN_DIFFFIT) { /* before the EMA copies the flags */
        size_t n = 0;
        for (int k = 0; k < model->params.n; k++) {
            dap_param *p = &model->params.p[k];
            if (!dap_train_difffit_key(p->key)) p->frozen = 1;
            if (!p->frozen) n += p->numel;
        }
        if (n == 0) return dap_error(DAP_ERR_ARG, "--trainable difffit: the model has no bias, norm or label table");
    }

    dap_trainer *tr = dap_calloc(1, sizeof *tr);
    tr->cfg = *cfg;
    tr->model = model;
    tr->data = data;
    tr->data_hash = dap_dataset_hash(data);
    tr->perm_epoch = -1;
    dap_params_init(&tr->ema);
    for (int k = 0; k < model->params.n; k++) {
        const dap_param *p = &model->params.p[k];
        int idx = dap_params_add(&tr->ema, p->key, p->ndim, p->shape);
        tr->ema.p[idx].no_decay = p->no_decay;
        tr->ema.p[idx].frozen = p->frozen;
    }
    dap_params_alloc(&tr->ema, 0);
    memcpy(tr->ema.data, model->params.data, model->params.total * sizeof(float));
    dap_adamw_init(&tr->opt, &model->params, 0.9, 0.999, 1e-8, cfg->weight_decay);
    dap_schedule_init_default(&tr->sched);
    tr->state = dap_dit_state_create_train(model, cfg->batch);
    const size_t B = (size_t)cfg->batch, per = image_floats(model), po = out_floats(model);
    tr->x0 = dap_alloc_f32(B * per);
    tr->noise = dap_alloc_f32(B * per);
    tr->xt = dap_alloc_f32(B * per);
    tr->tf = dap_alloc_f32(B);
    tr->out = dap_alloc_f32(B * po);
    tr->dout = dap_alloc_f32(B * po);
    tr->t = dap_calloc(B, sizeof(int));
    tr->y = dap_calloc(B, sizeof(int));
    tr->perm = dap_malloc((size_t)data->n * sizeof(int));
    if (cfg->minimax) {
        tr->mm_slot = dap_malloc(sizeof(int) * (size_t)mc->num_classes);
        for (int k = 0; k < mc->num_classes; k++) tr->mm_slot[k] = -1;
        for (int i = 0; i < data->n; i++) tr->mm_slot[data->y[i]] = 0;
        int slots = 0;
        for (int k = 0; k < mc->num_classes; k++)
            if (tr->mm_slot[k] == 0) tr->mm_slot[k] = slots++;
        dap_minimax_init(&tr->mm, slots, cfg->memory_size, per, cfg->lambda_pos, cfg->lambda_neg);
        tr->y_real = dap_calloc(B, sizeof(int));
        tr->x0_hat = dap_alloc_f32(B * per);
        tr->dx0 = dap_alloc_f32(B * per);
        tr->sa = dap_calloc(B, sizeof(double));
        tr->sb = dap_calloc(B, sizeof(double));
        char rec[256];
        minimax_record(cfg, rec, sizeof rec);
        dap_dit_set_finetune(model, rec);
    }
    /* a device model: its optimiser goes up (a state the device had no room for: it said why) */
    int rc = tr->state ? dap_dit_train_begin(model, tr->ema.data, &tr->opt) : DAP_ERR_NOMEM;
    if (rc) {
        tr->model = NULL; /* the caller keeps the model on failure */
        dap_trainer_destroy(tr);
        return rc;
    }
    *out = tr;
    return DAP_OK;
}

void dap_trainer_destroy(dap_trainer *tr) {
    if (!tr) return;
    dap_dit_state_destroy(tr->state);
    dap_dit_destroy(tr->model);
    dap_params_free(&tr->ema);
    dap_adamw_free(&tr->opt);
    dap_schedule_free(&tr->sched);
    dap_free_aligned(tr->x0);
    dap_free_aligned(tr->noise);
    dap_free_aligned(tr->xt);
    dap_free_aligned(tr->tf);
    dap_free_aligned(tr->out);
    dap_free_aligned(tr->dout);
    free(tr->t);
    free(tr->y);
    free(tr->perm);
    if (tr->cfg.minimax) dap_minimax_free(&tr->mm), free(tr->mm_slot);
    free(tr->y_real);
    dap_free_aligned(tr->x0_hat);
    dap_free_aligned(tr->dx0);
    free(tr->sa);
    free(tr->sb);
    free(tr);
}

/* Index of the image at global position pos (epoch pos / n, shuffled per epoch). */
static int data_index(dap_trainer *tr, int64_t pos) {
    const int n = tr->data->n;
    const int64_t epoch = pos / n;
    if (epoch != tr->perm_epoch) {
        for (int i = 0; i < n; i++) tr->perm[i] = i;
        dap_rng r;
        dap_rng_init(&r, tr->cfg.seed, PERM_STREAM + (uint64_t)epoch);
        dap_rng_shuffle(&r, tr->perm, (size_t)n);
        tr->perm_epoch = epoch;
    }
    return tr->perm[pos % n];
}

/* Sum of squared errors over the first C output channels, and (if dout) the MSE
 * gradient 2 (out - noise) / count there, 0 on the learned-sigma channels. */
static double eps_sse(const dap_dit *m, int B, const float *out, const float *noise, float *dout,
                      double count) {
    const int C = m->cfg.in_channels, Co = m->out_channels;
    const size_t hw = (size_t)m->cfg.input_size * m->cfg.input_size;
    const float scale = (float)(2.0 / count);
    double sse = 0.0;
    for (int b = 0; b < B; b++) {
        for (int ch = 0; ch < Co; ch++) {
            const float *o = out + ((size_t)b * Co + ch) * hw;
            const float *e = noise + ((size_t)b * C + ch) * hw;
            float *d = dout ? dout + ((size_t)b * Co + ch) * hw : NULL;
            if (ch >= C) {
                if (d) memset(d, 0, hw * sizeof(float));
                continue;
            }
            for (size_t i = 0; i < hw; i++) {
                const float diff = o[i] - e[i];
                sse += (double)diff * diff;
                if (d) d[i] = scale * diff;
            }
        }
    }
    return sse;
}

double dap_trainer_step(dap_trainer *tr, float *grad_norm) {
    dap_dit *m = tr->model;
    const dap_dataset *ds = tr->data;
    const int B = tr->cfg.batch, T = tr->sched.T;
    const size_t per = image_floats(m);
    const int64_t s = tr->step;

    for (int i = 0; i < B; i++) {
        const int idx = data_index(tr, s * B + i);
        memcpy(tr->x0 + (size_t)i * per, ds->x + (size_t)idx * per, per * sizeof(float));
        tr->y[i] = ds->y[idx];
    }
    if (tr->cfg.minimax) /* each sample's memory slot (its label's) */
        for (int i = 0; i < B; i++) tr->y_real[i] = tr->mm_slot[tr->y[i]];
    dap_rng r;
    dap_rng_init(&r, tr->cfg.seed, TRAIN_STREAM + (uint64_t)s);
    for (int i = 0; i < B; i++) {
        tr->t[i] = (int)dap_rng_below(&r, (uint64_t)T);
        tr->tf[i] = (float)tr->t[i];
    }
    for (int i = 0; i < B; i++)
        if (dap_rng_next_double(&r) < tr->cfg.class_dropout) tr->y[i] = m->cfg.num_classes;
    dap_rng_normal(&r, tr->noise, (size_t)B * per, 0.0f, 1.0f);
    dap_q_sample(&tr->sched, tr->xt, tr->x0, tr->noise, tr->t, B, per);

    dap_dit_state_set_batch(tr->state, B);
    dap_dit_forward(m, tr->state, tr->out, tr->xt, tr->tf, tr->y, 0);
    const double count = (double)B * per;
    const double loss = eps_sse(m, B, tr->out, tr->noise, tr->dout, count) / count;
    if (tr->cfg.minimax) { /* the two terms on x0_hat, then the batch joins the memories */
        for (int i = 0; i < B; i++) {
            const double ab = tr->sched.alpha_bar[tr->t[i]];
            tr->sa[i] = sqrt(ab);
            tr->sb[i] = sqrt(1.0 - ab);
        }
        const size_t stride = (size_t)m->out_channels * m->cfg.input_size * m->cfg.input_size;
        dap_minimax_eps_terms(&tr->mm, tr->out, stride, tr->xt, tr->sa, tr->sb, tr->y_real, B, tr->x0_hat, tr->dx0,
                              tr->dout, &tr->last_pos, &tr->last_neg);
        dap_minimax_push(&tr->mm, tr->x0, tr->x0_hat, tr->y_real, B);
    }

    double decay = tr->cfg.ema_decay;
    if (tr->cfg.ema_warmup) decay = fmin(decay, (1.0 + (double)s) / (10.0 + (double)s));
    float norm;
    if (m->dev) { /* gradients, clipping, AdamW and the EMA on the device */
        dap_dit_backward(m, tr->state, tr->dout, NULL);
        norm = dap_dit_train_update(m, &tr->opt, dap_train_lr(&tr->cfg, s), tr->cfg.grad_clip, decay);
    } else {
        dap_params_zero_grad(&m->params);
        dap_dit_backward(m, tr->state, tr->dout, NULL);
        norm = dap_clip_grad_norm(&m->params, tr->cfg.grad_clip);
        dap_adamw_step(&tr->opt, &m->params, dap_train_lr(&tr->cfg, s));
        dap_ema_update(&tr->ema, &m->params, decay);
    }
    if (grad_norm) *grad_norm = norm;
    tr->step++;
    return loss;
}

/* Swaps the model's host weight array with the EMA's (what dap_dit_save writes). */
static void swap_host_weights(dap_trainer *tr) {
    float *t = tr->model->params.data;
    tr->model->params.data = tr->ema.data;
    tr->ema.data = t;
}

/* Swaps the weights the forward reads with the EMA: the host arrays, or for a device
 * model its device copies. */
static void swap_weights(dap_trainer *tr) {
    if (tr->model->dev) dap_dit_swap_ema(tr->model);
    else swap_host_weights(tr);
}

double dap_trainer_val_loss(dap_trainer *tr, const dap_dataset *val, uint64_t seed, int use_ema) {
    dap_dit *m = tr->model;
    DAP_ASSERT(val->c == m->cfg.in_channels && val->h == m->cfg.input_size && val->w == m->cfg.input_size);
    const int B = tr->cfg.batch;
    const size_t per = image_floats(m);
    if (use_ema) swap_weights(tr);
    double sse = 0.0;
    for (int j0 = 0; j0 < val->n; j0 += B) {
        const int nb = val->n - j0 < B ? val->n - j0 : B;
        for (int i = 0; i < nb; i++) {
            const int j = j0 + i;
            dap_rng r;
            dap_rng_init(&r, seed, VAL_STREAM + (uint64_t)j);
            tr->t[i] = (int)dap_rng_below(&r, (uint64_t)tr->sched.T);
            tr->tf[i] = (float)tr->t[i];
            dap_rng_normal(&r, tr->noise + (size_t)i * per, per, 0.0f, 1.0f);
            memcpy(tr->x0 + (size_t)i * per, val->x + (size_t)j * per, per * sizeof(float));
            tr->y[i] = val->y[j];
        }
        dap_q_sample(&tr->sched, tr->xt, tr->x0, tr->noise, tr->t, nb, per);
        dap_dit_state_set_batch(tr->state, nb);
        dap_dit_forward(m, tr->state, tr->out, tr->xt, tr->tf, tr->y, 0);
        sse += eps_sse(m, nb, tr->out, tr->noise, NULL, 1.0);
    }
    if (use_ema) swap_weights(tr);
    dap_dit_state_set_batch(tr->state, B);
    return val->n > 0 ? sse / ((double)val->n * per) : 0.0;
}

/* ---- checkpoints ----------------------------------------------------------------- */

static void add_params(dap_st_writer *w, const dap_params *ps, const float *data, const char *prefix) {
    char name[1024];
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        snprintf(name, sizeof name, "%s%s", prefix, p->key);
        dap_st_writer_add(w, name, DAP_DT_F32, data + p->offset, p->ndim, p->shape);
    }
}

static int read_params(const dap_st *st, const dap_params *ps, float *data, const char *prefix) {
    char name[1024];
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        snprintf(name, sizeof name, "%s%s", prefix, p->key);
        if (!dap_st_find(st, name))
            return dap_error(DAP_ERR_MISSING, "%s: training state lacks tensor '%s'", st->path, name);
        DAP_TRY(dap_st_read_f32(st, name, data + p->offset, p->shape, p->ndim));
    }
    return DAP_OK;
}

static char *state_path(const char *path) {
    size_t n = strlen(path) + 7;
    char *s = dap_malloc(n);
    snprintf(s, n, "%s.state", path);
    return s;
}

int dap_trainer_save(dap_trainer *tr, const char *path) {
    char *spath = state_path(path);
    char seed[32], batch[32], step[32], data[32];
    snprintf(data, sizeof data, "%016llx", (unsigned long long)tr->data_hash);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)tr->cfg.seed);
    snprintf(batch, sizeof batch, "%d", tr->cfg.batch);
    snprintf(step, sizeof step, "%lld", (long long)tr->step);
    dap_st_writer *w = dap_st_writer_create();
    dap_st_writer_meta(w, "format", "dap-train-state");
    dap_st_writer_meta(w, "seed", seed);
    dap_st_writer_meta(w, "batch", batch);
    dap_st_writer_meta(w, "step", step);
    dap_st_writer_meta(w, "data_fnv1a64", data);
    char rec[256];
    minimax_record(&tr->cfg, rec, sizeof rec);
    dap_st_writer_meta(w, "trainable", dap_train_trainable_name(tr->cfg.trainable));
    dap_st_writer_meta(w, "minimax", rec);
    dap_dit_train_sync(tr->model, tr->ema.data, &tr->opt); /* a device model's state comes down */
    add_params(w, &tr->model->params, tr->model->params.data, "model.");
    add_params(w, &tr->ema, tr->ema.data, "ema.");
    dap_adamw_write(&tr->opt, &tr->model->params, w, "opt.");
    if (tr->cfg.minimax) {
        const dap_minimax *mm = &tr->mm;
        const int K = mm->num_classes;
        const int64_t mshape[3] = {K, mm->memory_size, (int64_t)mm->per}, cshape[2] = {K, 2};
        dap_st_writer_add(w, "minimax.real", DAP_DT_F32, mm->real, 3, mshape);
        dap_st_writer_add(w, "minimax.gen", DAP_DT_F32, mm->gen, 3, mshape);
        int64_t *count = dap_malloc((size_t)K * 2 * sizeof(int64_t));
        for (int k = 0; k < K; k++) count[2 * k] = mm->n_real[k], count[2 * k + 1] = mm->n_gen[k];
        dap_st_writer_add_raw(w, "minimax.count", DAP_DT_I64, count, 2, cshape);
        free(count);
    }
    int rc = dap_st_writer_save(w, spath);
    dap_st_writer_destroy(w);
    free(spath);
    if (rc != DAP_OK) return rc;
    swap_host_weights(tr); /* PATH holds the EMA (on a device model just copied down) */
    rc = dap_dit_save(tr->model, path);
    swap_host_weights(tr);
    return rc;
}

/* The Minimax memories of a state: shapes as this trainer's, counts in 0..M, finite rows. */
static int read_minimax(const dap_st *st, dap_minimax *mm) {
    const int K = mm->num_classes, M = mm->memory_size;
    const int64_t mshape[3] = {K, M, (int64_t)mm->per};
    DAP_TRY(dap_st_read_f32(st, "minimax.real", mm->real, mshape, 3));
    DAP_TRY(dap_st_read_f32(st, "minimax.gen", mm->gen, mshape, 3));
    const dap_st_tensor *t = dap_st_find(st, "minimax.count");
    if (!t) return dap_error(DAP_ERR_MISSING, "%s: training state lacks tensor 'minimax.count'", st->path);
    if (t->dtype != DAP_DT_I64 || t->ndim != 2 || t->shape[0] != K || t->shape[1] != 2)
        return dap_error(DAP_ERR_SHAPE, "%s: 'minimax.count': expected I64 (%d, 2), found %s with %zu values", st->path,
                         K, dap_dtype_name(t->dtype), t->numel);
    for (int k = 0; k < K; k++) {
        int64_t c[2];
        memcpy(c, st->data + t->begin + (size_t)k * sizeof c, sizeof c); /* little-endian file and host */
        if (c[0] < 0 || c[0] > M || c[1] < 0 || c[1] > M)
            return dap_error(DAP_ERR_VALUE, "%s: 'minimax.count' of class %d is %lld, %lld (expected 0..%d)", st->path,
                             k, (long long)c[0], (long long)c[1], M);
        mm->n_real[k] = (int)c[0];
        mm->n_gen[k] = (int)c[1];
    }
    const size_t n = (size_t)K * M * mm->per;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(mm->real[i]) || !isfinite(mm->gen[i]))
            return dap_error(DAP_ERR_VALUE, "%s: the Minimax memories hold NaN/Inf", st->path);
    return DAP_OK;
}

int dap_trainer_resume(dap_trainer *tr, const char *path) {
    char *spath = state_path(path);
    dap_st *st;
    int rc = dap_st_open(&st, spath);
    free(spath);
    if (rc != DAP_OK) return rc;
    unsigned long long seed = 0, batch = 0;
    char *fmt = dap_st_meta_get(st, "format");
    if (!fmt || strcmp(fmt, "dap-train-state") != 0)
        rc = dap_error(DAP_ERR_FORMAT, "%s: not a dap training state (metadata format = %s)", st->path,
                       fmt ? fmt : "(none)");
    free(fmt);
    if (rc == DAP_OK) rc = dap_st_meta_u64(st, "seed", &seed);
    if (rc == DAP_OK) rc = dap_st_meta_u64(st, "batch", &batch);
    if (rc == DAP_OK && seed != tr->cfg.seed)
        rc = dap_error(DAP_ERR_ARG, "%s: the run used --seed %llu, this one %llu (resume needs the same)",
                       st->path, seed, (unsigned long long)tr->cfg.seed);
    if (rc == DAP_OK && batch != (unsigned long long)tr->cfg.batch)
        rc = dap_error(DAP_ERR_ARG, "%s: the run used --batch %llu, this one %d (resume needs the same)",
                       st->path, batch, tr->cfg.batch);
    if (rc == DAP_OK) { /* states written before the hash was recorded have none */
        char *dh = dap_st_meta_get(st, "data_fnv1a64"), want[32];
        snprintf(want, sizeof want, "%016llx", (unsigned long long)tr->data_hash);
        if (dh && strcmp(dh, want))
            rc = dap_error(DAP_ERR_ARG,
                           "%s: the run trained on other images (hash %s), this one on %s (resume needs the same "
                           "--data, --val-per-class and --split-seed)",
                           st->path, dh, want);
        free(dh);
    }
    if (rc == DAP_OK) { /* states written before these were recorded: all tensors, no minimax */
        char *tn = dap_st_meta_get(st, "trainable"), *mx = dap_st_meta_get(st, "minimax"), want[256];
        const char *mine = dap_train_trainable_name(tr->cfg.trainable);
        minimax_record(&tr->cfg, want, sizeof want);
        if (strcmp(tn ? tn : "all", mine))
            rc = dap_error(DAP_ERR_ARG, "%s: the run trained --trainable %s, this one %s (resume needs the same)",
                           st->path, tn ? tn : "all", mine);
        else if (strcmp(mx ? mx : "off", want))
            rc = dap_error(DAP_ERR_ARG, "%s: the run's Minimax settings are \"%s\", this one's \"%s\" (resume needs "
                                        "the same --minimax, --lambda-pos, --lambda-neg, --memory-size)",
                           st->path, mx ? mx : "off", want);
        free(tn);
        free(mx);
    }
    if (rc == DAP_OK && tr->cfg.minimax) rc = read_minimax(st, &tr->mm);
    if (rc == DAP_OK) rc = read_params(st, &tr->model->params, tr->model->params.data, "model.");
    if (rc == DAP_OK) rc = read_params(st, &tr->ema, tr->ema.data, "ema.");
    if (rc == DAP_OK) rc = dap_adamw_read(&tr->opt, &tr->model->params, st, "opt.");
    if (rc == DAP_OK) {
        tr->step = tr->opt.step;
        tr->perm_epoch = -1;
        rc = dap_dit_train_begin(tr->model, tr->ema.data, &tr->opt); /* a device model: the state goes up */
    }
    dap_st_close(st);
    return rc;
}
