/*
 * params.c: a model's weight table (see params.h). Tensors are registered once with
 * their PyTorch key and shape; one contiguous allocation holds them all, and the
 * strict safetensors load / save work from the same table.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/params.h"
#include "io/io.h"

void dap_params_init(dap_params *ps) { memset(ps, 0, sizeof *ps); }

void dap_params_free(dap_params *ps) {
    for (int i = 0; i < ps->n; i++) free(ps->p[i].key);
    free(ps->p);
    dap_free_aligned(ps->data);
    dap_free_aligned(ps->grad);
    memset(ps, 0, sizeof *ps);
}

/* Biases and norm weights (1-D) and position / class embeddings skip weight decay. */
static int default_no_decay(const char *key, int ndim) {
    if (ndim <= 1) return 1;
    size_t n = strlen(key);
    return (n >= 9 && strcmp(key + n - 9, "pos_embed") == 0) || strstr(key, "embedding") != NULL;
}

int dap_params_add(dap_params *ps, const char *key, int ndim, const int64_t *shape) {
    DAP_ASSERT(!ps->data); /* registration precedes allocation */
    DAP_ASSERT(key && *key && ndim >= 0 && ndim <= DAP_PARAM_MAX_DIMS);
    DAP_ASSERT(dap_params_find(ps, key) < 0); /* each key once */
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 32;
        ps->p = dap_realloc(ps->p, sizeof(dap_param) * (size_t)ps->cap);
    }
    dap_param *p = &ps->p[ps->n];
    memset(p, 0, sizeof *p);
    p->key = dap_strdup(key);
    p->ndim = ndim;
    size_t numel = 1;
    for (int k = 0; k < ndim; k++) {
        DAP_ASSERT(shape[k] > 0);
        p->shape[k] = shape[k];
        DAP_ASSERT(dap_mul_size(numel, (size_t)shape[k], &numel) == DAP_OK);
    }
    p->numel = numel;
    p->offset = ps->total;
    p->no_decay = default_no_decay(key, ndim);
    ps->total += numel;
    return ps->n++;
}

int dap_params_add4(dap_params *ps, const char *key, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t s[4] = {d0, d1, d2, d3};
    int ndim = 4;
    while (ndim > 0 && s[ndim - 1] == 0) ndim--;
    return dap_params_add(ps, key, ndim, s);
}

void dap_params_alloc(dap_params *ps, int with_grad) {
    DAP_ASSERT(!ps->data);
    ps->data = dap_alloc_f32(ps->total);
    if (with_grad) ps->grad = dap_alloc_f32(ps->total);
}

int dap_params_find(const dap_params *ps, const char *key) {
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].key, key) == 0) return i;
    return -1;
}

float *dap_params_ptr(const dap_params *ps, const char *key) {
    int i = dap_params_find(ps, key);
    if (i < 0) fprintf(stderr, "dap: no parameter '%s'\n", key);
    DAP_ASSERT(i >= 0 && ps->data);
    return ps->data + ps->p[i].offset;
}

float *dap_params_grad(const dap_params *ps, const char *key) {
    int i = dap_params_find(ps, key);
    if (i < 0) fprintf(stderr, "dap: no parameter '%s'\n", key);
    DAP_ASSERT(i >= 0 && ps->grad);
    return ps->grad + ps->p[i].offset;
}

void dap_params_zero_grad(dap_params *ps) {
    if (ps->grad) memset(ps->grad, 0, ps->total * sizeof(float));
}

static int ignored(const char *key, const char *const *ignore) {
    for (int i = 0; ignore && ignore[i]; i++)
        if (strncmp(key, ignore[i], strlen(ignore[i])) == 0) return 1;
    return 0;
}

/* Every tensor of the table is in the file with its shape and a float dtype and, unless
 * allow_extra, the file has no other tensor (but the ignored prefixes). Needs no data. */
static int check_table(const dap_params *ps, const dap_st *st, const char *path, const char *const *ignore,
                       int allow_extra) {
    char want[128], got[128];
    for (int i = 0; i < ps->n; i++) {
        const dap_param *p = &ps->p[i];
        const dap_st_tensor *t = dap_st_find(st, p->key);
        dap_shape_str(want, sizeof want, p->shape, p->ndim);
        if (!t) return dap_error(DAP_ERR_MISSING, "%s: missing tensor '%s' (expected shape %s)", path, p->key, want);
        int same = t->ndim == p->ndim;
        for (int k = 0; same && k < p->ndim; k++) same = t->shape[k] == p->shape[k];
        if (!same) {
            dap_shape_str(got, sizeof got, t->shape, t->ndim);
            return dap_error(DAP_ERR_SHAPE, "%s: tensor '%s': expected shape %s, found %s", path, p->key, want,
                             got);
        }
        if (t->dtype != DAP_DT_F32 && t->dtype != DAP_DT_F16 && t->dtype != DAP_DT_BF16)
            return dap_error(DAP_ERR_SHAPE, "%s: tensor '%s': dtype %s is not a float type", path, p->key,
                             dap_dtype_name(t->dtype));
    }
    for (int i = 0; i < st->n && !allow_extra; i++) {
        const char *name = st->t[i].name;
        if (dap_params_find(ps, name) < 0 && !ignored(name, ignore))
            return dap_error(DAP_ERR_FORMAT, "%s: unexpected tensor '%s' (not a parameter of this model)", path,
                             name);
    }
    return DAP_OK;
}

int dap_params_check_file(const dap_params *ps, const char *path, const char *const *ignore, int allow_extra) {
    dap_st *st;
    DAP_TRY(dap_st_open(&st, path));
    int rc = check_table(ps, st, path, ignore, allow_extra);
    dap_st_close(st);
    return rc;
}

int dap_params_load(dap_params *ps, const char *path, const char *const *ignore, int allow_extra) {
    DAP_ASSERT(ps->data);
    dap_st *st;
    DAP_TRY(dap_st_open(&st, path));
    /* every check before any value is copied */
    int rc = check_table(ps, st, path, ignore, allow_extra);
    /* values are checked in a scratch buffer first, so a failed load leaves data as it was */
    size_t maxn = 0;
    for (int i = 0; i < ps->n; i++) maxn = ps->p[i].numel > maxn ? ps->p[i].numel : maxn;
    float *tmp = rc == DAP_OK ? dap_alloc_f32(maxn) : NULL;
    for (int i = 0; i < ps->n && rc == DAP_OK; i++) {
        const dap_param *p = &ps->p[i];
        rc = dap_st_read_f32(st, p->key, tmp, p->shape, p->ndim);
        for (size_t j = 0; j < p->numel && rc == DAP_OK; j++)
            if (!isfinite(tmp[j]))
                rc = dap_error(DAP_ERR_VALUE, "%s: tensor '%s': non-finite value %g at element %zu", path,
                               p->key, (double)tmp[j], j);
    }
    for (int i = 0; i < ps->n && rc == DAP_OK; i++) {
        const dap_param *p = &ps->p[i];
        rc = dap_st_read_f32(st, p->key, ps->data + p->offset, p->shape, p->ndim);
    }
    dap_free_aligned(tmp);
    dap_st_close(st);
    return rc;
}

int dap_params_save(const dap_params *ps, const char *path, int f16, const char *const *meta) {
    DAP_ASSERT(ps->data);
    dap_st_writer *w = dap_st_writer_create();
    for (int i = 0; meta && meta[i]; i += 2) {
        DAP_ASSERT(meta[i + 1]); /* pairs */
        dap_st_writer_meta(w, meta[i], meta[i + 1]);
    }
    for (int i = 0; i < ps->n; i++) {
        const dap_param *p = &ps->p[i];
        dap_st_writer_add(w, p->key, f16 ? DAP_DT_F16 : DAP_DT_F32, ps->data + p->offset, p->ndim, p->shape);
    }
    int rc = dap_st_writer_save(w, path);
    dap_st_writer_destroy(w);
    return rc;
}
