/*
 * optim.c: AdamW, SGD with momentum, weight EMA, gradient clipping and optimizer
 * state I/O over a dap_params. The arithmetic mirrors PyTorch's single-tensor
 * implementations (scalars formed in double, tensor math in float, same order) so a
 * few steps agree with torch to float rounding.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "core/optim.h"

/* Parallelise the element loops only when a tensor is big enough to pay for it. */
#define OPTIM_PAR_MIN 32768

static double decay_for(const dap_param *p, double wd, int decay_all) {
    return (p->no_decay && !decay_all) ? 0.0 : wd;
}

/* ---- AdamW ----------------------------------------------------------------- */

void dap_adamw_init(dap_adamw *o, const dap_params *ps, double beta1, double beta2, double eps,
                    double weight_decay) {
    DAP_ASSERT(ps->data != NULL);
    memset(o, 0, sizeof *o);
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    o->n = ps->total;
    o->m = dap_alloc_f32(ps->total);
    o->v = dap_alloc_f32(ps->total);
}

void dap_adamw_free(dap_adamw *o) {
    dap_free_aligned(o->m);
    dap_free_aligned(o->v);
    memset(o, 0, sizeof *o);
}

void dap_adamw_step(dap_adamw *o, dap_params *ps, double lr) {
    DAP_ASSERT(ps->grad != NULL && ps->total == o->n);
    o->step++;
    const double bc1 = 1.0 - pow(o->beta1, (double)o->step);
    const double bc2 = 1.0 - pow(o->beta2, (double)o->step);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float b1 = (float)o->beta1, c1 = (float)(1.0 - o->beta1);
    const float b2 = (float)o->beta2, c2 = (float)(1.0 - o->beta2);
    const float eps = (float)o->eps;
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        if (p->frozen) continue;
        const float keep = (float)(1.0 - lr * decay_for(p, o->weight_decay, o->decay_all));
        float *w = ps->data + p->offset, *g = ps->grad + p->offset;
        float *m = o->m + p->offset, *v = o->v + p->offset;
        const long n = (long)p->numel;
#pragma omp parallel for schedule(static) if (n > OPTIM_PAR_MIN)
        for (long i = 0; i < n; i++) {
            w[i] *= keep;
            m[i] = m[i] * b1 + g[i] * c1;
            v[i] = v[i] * b2 + g[i] * g[i] * c2;
            const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
            w[i] += -step_size * (m[i] / denom);
        }
    }
}

/* ---- SGD ----------------------------------------------------------------------- */

void dap_sgd_init(dap_sgd *o, const dap_params *ps, double momentum, double weight_decay) {
    DAP_ASSERT(ps->data != NULL);
    memset(o, 0, sizeof *o);
    o->momentum = momentum;
    o->weight_decay = weight_decay;
    o->n = ps->total;
    o->buf = momentum != 0.0 ? dap_alloc_f32(ps->total) : NULL;
}

void dap_sgd_free(dap_sgd *o) {
    dap_free_aligned(o->buf);
    memset(o, 0, sizeof *o);
}

void dap_sgd_step(dap_sgd *o, dap_params *ps, double lr) {
    DAP_ASSERT(ps->grad != NULL && ps->total == o->n);
    const int first = o->step == 0;
    o->step++;
    const float mu = (float)o->momentum, neg_lr = (float)-lr;
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        if (p->frozen) continue;
        const float wd = (float)decay_for(p, o->weight_decay, o->decay_all);
        float *w = ps->data + p->offset, *g = ps->grad + p->offset;
        float *b = o->buf ? o->buf + p->offset : NULL;
        const long n = (long)p->numel;
#pragma omp parallel for schedule(static) if (n > OPTIM_PAR_MIN)
        for (long i = 0; i < n; i++) {
            float d = g[i] + w[i] * wd;
            if (b) {
                b[i] = first ? d : b[i] * mu + d;
                d = b[i];
            }
            w[i] += d * neg_lr;
        }
    }
}

/* ---- EMA ------------------------------------------------------------------------- */

void dap_ema_update_f32(float *ema, const dap_params *ps, double decay) {
    const float d = (float)decay, c = (float)(1.0 - decay);
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        const float *w = ps->data + p->offset;
        float *e = ema + p->offset;
        const long n = (long)p->numel;
        if (p->frozen) {
            memcpy(e, w, (size_t)n * sizeof(float));
            continue;
        }
#pragma omp parallel for schedule(static) if (n > OPTIM_PAR_MIN)
        for (long i = 0; i < n; i++) e[i] = e[i] * d + w[i] * c;
    }
}

void dap_ema_update(dap_params *ema, const dap_params *ps, double decay) {
    DAP_ASSERT(ema->total == ps->total && ema->n == ps->n && ema->data != NULL);
    dap_ema_update_f32(ema->data, ps, decay);
}

/* ---- clipping ---------------------------------------------------------------------- */

float dap_grad_norm(const dap_params *ps) {
    DAP_ASSERT(ps->grad != NULL);
    double sum = 0.0;
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        if (p->frozen) continue;
        const float *g = ps->grad + p->offset;
        const long n = (long)p->numel;
        double s = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : s) if (n > OPTIM_PAR_MIN)
        for (long i = 0; i < n; i++) s += (double)g[i] * g[i];
        sum += s;
    }
    return (float)sqrt(sum);
}

float dap_clip_grad_norm(dap_params *ps, float max_norm) {
    const float norm = dap_grad_norm(ps);
    if (max_norm > 0.0f && norm > max_norm) {
        const float coef = (float)((double)max_norm / ((double)norm + 1e-6));
        for (int k = 0; k < ps->n; k++) {
            const dap_param *p = &ps->p[k];
            if (p->frozen) continue;
            float *g = ps->grad + p->offset;
            for (size_t i = 0; i < p->numel; i++) g[i] *= coef;
        }
    }
    return norm;
}

/* ---- state I/O ------------------------------------------------------------------------ */

static void write_state_array(dap_st_writer *w, const dap_params *ps, const float *state,
                              const char *prefix, const char *what) {
    char name[1024];
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        if (p->frozen) continue;
        snprintf(name, sizeof name, "%s%s.%s", prefix, what, p->key);
        dap_st_writer_add(w, name, DAP_DT_F32, state + p->offset, p->ndim, p->shape);
    }
}

static int read_state_array(const dap_st *st, const dap_params *ps, float *state,
                            const char *prefix, const char *what) {
    char name[1024];
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        if (p->frozen) continue;
        snprintf(name, sizeof name, "%s%s.%s", prefix, what, p->key);
        if (!dap_st_find(st, name))
            return dap_error(DAP_ERR_MISSING, "%s: optimizer state tensor '%s' is missing",
                             st->path, name);
        DAP_TRY(dap_st_read_f32(st, name, state + p->offset, p->shape, p->ndim));
        for (size_t i = 0; i < p->numel; i++)
            if (!isfinite(state[p->offset + i]))
                return dap_error(DAP_ERR_VALUE, "%s: optimizer state '%s' holds NaN/Inf",
                                 st->path, name);
    }
    return DAP_OK;
}

static void write_step(dap_st_writer *w, const char *prefix, int64_t step) {
    char name[1024];
    snprintf(name, sizeof name, "%sstep", prefix);
    const int64_t shape[1] = {1};
    dap_st_writer_add_raw(w, name, DAP_DT_I64, &step, 1, shape);
}

static int read_step(const dap_st *st, const char *prefix, int64_t *step) {
    char name[1024];
    snprintf(name, sizeof name, "%sstep", prefix);
    const dap_st_tensor *t = dap_st_find(st, name);
    if (!t) return dap_error(DAP_ERR_MISSING, "%s: optimizer step counter '%s' is missing", st->path, name);
    if (t->dtype != DAP_DT_I64 || t->numel != 1)
        return dap_error(DAP_ERR_SHAPE, "%s: '%s': expected one I64 value, found %zu x %s",
                         st->path, name, t->numel, dap_dtype_name(t->dtype));
    int64_t s;
    memcpy(&s, st->data + t->begin, sizeof s); /* little-endian file, little-endian host */
    if (s < 0) return dap_error(DAP_ERR_VALUE, "%s: '%s' = %lld is negative", st->path, name, (long long)s);
    *step = s;
    return DAP_OK;
}

static void check_table(size_t n, const dap_params *ps) { DAP_ASSERT(n == ps->total); }

void dap_adamw_write(const dap_adamw *o, const dap_params *ps, dap_st_writer *w,
                     const char *prefix) {
    check_table(o->n, ps);
    write_step(w, prefix, o->step);
    write_state_array(w, ps, o->m, prefix, "exp_avg");
    write_state_array(w, ps, o->v, prefix, "exp_avg_sq");
}

int dap_adamw_read(dap_adamw *o, const dap_params *ps, const dap_st *st, const char *prefix) {
    check_table(o->n, ps);
    int64_t step;
    DAP_TRY(read_step(st, prefix, &step));
    DAP_TRY(read_state_array(st, ps, o->m, prefix, "exp_avg"));
    DAP_TRY(read_state_array(st, ps, o->v, prefix, "exp_avg_sq"));
    for (size_t i = 0; i < o->n; i++)
        if (o->v[i] < 0.0f)
            return dap_error(DAP_ERR_VALUE, "%s: %sexp_avg_sq holds a negative value", st->path, prefix);
    o->step = step;
    return DAP_OK;
}

void dap_sgd_write(const dap_sgd *o, const dap_params *ps, dap_st_writer *w, const char *prefix) {
    check_table(o->n, ps);
    write_step(w, prefix, o->step);
    if (o->buf) write_state_array(w, ps, o->buf, prefix, "momentum_buffer");
}

int dap_sgd_read(dap_sgd *o, const dap_params *ps, const dap_st *st, const char *prefix) {
    check_table(o->n, ps);
    int64_t step;
    DAP_TRY(read_step(st, prefix, &step));
    if (o->buf) DAP_TRY(read_state_array(st, ps, o->buf, prefix, "momentum_buffer"));
    o->step = step;
    return DAP_OK;
}

int dap_adamw_save(const dap_adamw *o, const dap_params *ps, const char *path) {
    dap_st_writer *w = dap_st_writer_create();
    dap_adamw_write(o, ps, w, "");
    int rc = dap_st_writer_save(w, path);
    dap_st_writer_destroy(w);
    return rc;
}

int dap_adamw_load(dap_adamw *o, const dap_params *ps, const char *path) {
    dap_st *st;
    DAP_TRY(dap_st_open(&st, path));
    int rc = dap_adamw_read(o, ps, st, "");
    dap_st_close(st);
    return rc;
}
