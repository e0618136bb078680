/*
 * cnn.c: the classifier layer sequence: building, initialisation, forward and
 * backward. Each layer is one op of ops.h (+ an optional ReLU on its output); the
 * backward walks the layers in reverse and routes each input gradient either straight
 * into its source's gradient buffer (first writer) or through `tmp` and an add (a
 * later writer, where paths join).
 */
#include "models/cnn.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/device.h"
#include "ops/ops.h"
#ifdef DAP_CUDA
#include "cuda/cuda.h"
#endif

#define NORM_EPS 1e-5f
#define BN_MOMENTUM 0.1f

/* ---- building ----------------------------------------------------------------- */

void dap_cnn_init(dap_cnn *m, const char *arch, int c, int h, int w) {
    memset(m, 0, sizeof *m);
    snprintf(m->arch, sizeof m->arch, "%s", arch);
    m->in_c = c, m->in_h = h, m->in_w = w;
    m->feat = -1;
    dap_params_init(&m->params);
}

static void src_shape(const dap_cnn *m, int src, int *c, int *h, int *w) {
    DAP_ASSERT(src >= -1 && src < m->nlayers);
    if (src < 0) {
        *c = m->in_c, *h = m->in_h, *w = m->in_w;
    } else {
        *c = m->layers[src].c, *h = m->layers[src].h, *w = m->layers[src].w;
    }
}

static int push(dap_cnn *m, dap_cnn_layer l) {
    DAP_ASSERT(m->params.data == NULL); /* builder calls precede dap_cnn_finish */
    DAP_ASSERT(l.c > 0 && l.h > 0 && l.w > 0);
    if (m->nlayers == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 16;
        m->layers = dap_realloc(m->layers, (size_t)m->cap * sizeof *m->layers);
    }
    m->layers[m->nlayers] = l;
    return m->nlayers++;
}

static dap_cnn_layer blank(dap_cnn_op op, int src) {
    dap_cnn_layer l;
    memset(&l, 0, sizeof l);
    l.op = op, l.src = src, l.src2 = -1;
    l.w_id = l.b_id = l.rm_id = l.rv_id = -1;
    return l;
}

static int add_param(dap_cnn *m, const char *key, const char *suffix, int64_t d0, int64_t d1,
                     int64_t d2, int64_t d3) {
    char name[160];
    snprintf(name, sizeof name, "%s.%s", key, suffix);
    return dap_params_add4(&m->params, name, d0, d1, d2, d3);
}

int dap_cnn_conv(dap_cnn *m, int src, const char *key, int oc, int k, int stride, int pad,
                 int bias) {
    dap_cnn_layer l = blank(DAP_CNN_CONV, src);
    int c, h, w;
    src_shape(m, src, &c, &h, &w);
    l.c = oc, l.k = k, l.stride = stride, l.pad = pad;
    l.h = (h + 2 * pad - k) / stride + 1;
    l.w = (w + 2 * pad - k) / stride + 1;
    l.w_id = add_param(m, key, "weight", oc, c, k, k);
    if (bias) l.b_id = add_param(m, key, "bias", oc, 0, 0, 0);
    return push(m, l);
}

int dap_cnn_norm(dap_cnn *m, int src, const char *key, int kind, int relu) {
    if (kind == DAP_NORM_NONE) {
        DAP_ASSERT(src >= 0);
        m->layers[src].relu |= relu;
        return src;
    }
    dap_cnn_layer l = blank(DAP_CNN_NORM, src);
    src_shape(m, src, &l.c, &l.h, &l.w);
    l.norm = kind, l.relu = relu;
    l.w_id = add_param(m, key, "weight", l.c, 0, 0, 0);
    l.b_id = add_param(m, key, "bias", l.c, 0, 0, 0);
    if (kind == DAP_NORM_BATCH) {
        l.rm_id = add_param(m, key, "running_mean", l.c, 0, 0, 0);
        l.rv_id = add_param(m, key, "running_var", l.c, 0, 0, 0);
        m->params.p[l.rm_id].frozen = 1;
        m->params.p[l.rv_id].frozen = 1;
    }
    return push(m, l);
}

int dap_cnn_pool(dap_cnn *m, int src, dap_cnn_op op, int k, int stride, int pad) {
    DAP_ASSERT(op == DAP_CNN_AVGPOOL || op == DAP_CNN_MAXPOOL);
    DAP_ASSERT(op == DAP_CNN_MAXPOOL || pad == 0);
    dap_cnn_layer l = blank(op, src);
    int h, w;
    src_shape(m, src, &l.c, &h, &w);
    l.k = k, l.stride = stride, l.pad = pad;
    l.h = (h + 2 * pad - k) / stride + 1;
    l.w = (w + 2 * pad - k) / stride + 1;
    return push(m, l);
}

int dap_cnn_gap(dap_cnn *m, int src) {
    dap_cnn_layer l = blank(DAP_CNN_GAP, src);
    int h, w;
    src_shape(m, src, &l.c, &h, &w);
    l.h = l.w = 1;
    return push(m, l);
}

int dap_cnn_linear(dap_cnn *m, int src, const char *key, int out) {
    dap_cnn_layer l = blank(DAP_CNN_LINEAR, src);
    int c, h, w;
    src_shape(m, src, &c, &h, &w);
    l.c = out, l.h = l.w = 1;
    l.w_id = add_param(m, key, "weight", out, (int64_t)c * h * w, 0, 0);
    l.b_id = add_param(m, key, "bias", out, 0, 0, 0);
    m->feat = src;
    return push(m, l);
}

int dap_cnn_add(dap_cnn *m, int a, int b, int relu) {
    dap_cnn_layer l = blank(DAP_CNN_ADD, a);
    int c2, h2, w2;
    src_shape(m, a, &l.c, &l.h, &l.w);
    src_shape(m, b, &c2, &h2, &w2);
    DAP_ASSERT(l.c == c2 && l.h == h2 && l.w == w2);
    l.src2 = b, l.relu = relu;
    return push(m, l);
}

static _Thread_local int g_defer_alloc;
void dap_cnn_defer_alloc(int on) { g_defer_alloc = on; }

void dap_cnn_finish(dap_cnn *m, int num_classes) {
    DAP_ASSERT(m->nlayers > 0 && m->layers[m->nlayers - 1].op == DAP_CNN_LINEAR);
    DAP_ASSERT(m->layers[m->nlayers - 1].c == num_classes);
    m->num_classes = num_classes;
    if (!g_defer_alloc) dap_params_alloc(&m->params, 1);
}

void dap_cnn_free(dap_cnn *m) {
    free(m->layers);
    dap_params_free(&m->params);
    memset(m, 0, sizeof *m);
}

static size_t layer_size(const dap_cnn_layer *l) { return (size_t)l->c * l->h * l->w; }

int dap_cnn_in_size(const dap_cnn *m) { return m->in_c * m->in_h * m->in_w; }

int dap_cnn_feat_dim(const dap_cnn *m) {
    DAP_ASSERT(m->feat >= 0);
    return (int)layer_size(&m->layers[m->feat]);
}

/* ---- initialisation ------------------------------------------------------------ */

static float *pdata(const dap_cnn *m, int id) { return m->params.data + m->params.p[id].offset; }
static float *pgrad(const dap_cnn *m, int id) {
    return id < 0 || !m->params.grad ? NULL : m->params.grad + m->params.p[id].offset;
}

static void fill(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

void dap_cnn_init_weights(dap_cnn *m, uint64_t seed) {
    for (int i = 0; i < m->nlayers; i++) {
        const dap_cnn_layer *l = &m->layers[i];
        if (l->op == DAP_CNN_CONV || l->op == DAP_CNN_LINEAR) {
            const dap_param *pw = &m->params.p[l->w_id];
            size_t fan_in = pw->numel / (size_t)pw->shape[0];
            float bound = 1.0f / sqrtf((float)fan_in);
            dap_rng r;
            dap_rng_init(&r, seed, 1000 + (uint64_t)l->w_id);
            if (l->init == 1) {
                size_t fan_out = (size_t)pw->shape[0] * (size_t)(l->k * l->k);
                dap_rng_normal(&r, pdata(m, l->w_id), pw->numel, 0.0f, sqrtf(2.0f / (float)fan_out));
            } else {
                dap_rng_uniform(&r, pdata(m, l->w_id), pw->numel, -bound, bound);
            }
            if (l->b_id >= 0) {
                dap_rng_init(&r, seed, 1000 + (uint64_t)l->b_id);
                dap_rng_uniform(&r, pdata(m, l->b_id), m->params.p[l->b_id].numel, -bound, bound);
            }
        } else if (l->op == DAP_CNN_NORM) {
            fill(pdata(m, l->w_id), (size_t)l->c, 1.0f);
            fill(pdata(m, l->b_id), (size_t)l->c, 0.0f);
            if (l->rm_id >= 0) fill(pdata(m, l->rm_id), (size_t)l->c, 0.0f);
            if (l->rv_id >= 0) fill(pdata(m, l->rv_id), (size_t)l->c, 1.0f);
        }
    }
}

/* ---- per-batch state --------------------------------------------------------------- */

static void conv_dims(const dap_cnn *m, const dap_cnn_layer *l, int n, dap_conv2d_dims *d) {
    int c, h, w;
    src_shape(m, l->src, &c, &h, &w);
    dap_conv2d_dims_init(d, n, c, h, w, l->c, l->k, l->k, l->stride, l->pad);
}

/* The backward walks the layers from the last down: layer i's gradient is first written by
 * its last consumer j (the highest layer reading it; the last layer's by the loss) and last
 * read when layer i itself is done, so it lives over [i, j]. Layers whose spans do not meet
 * share a buffer: each takes the smallest free buffer that holds it, else the largest free
 * one grown to its size, else a new one, and gives it back once layer i is done. A ResNet
 * keeps a handful of gradient buffers instead of one per layer. */
static int g_share_grads = 1;

int dap_cnn_set_grad_sharing(int on) {
    int old = g_share_grads;
    g_share_grads = on;
    return old;
}

int dap_cnn_grad_slots(const dap_cnn *m, int batch, int *slot, size_t *cap) {
    const int nl = m->nlayers;
    if (!g_share_grads) { /* one buffer a layer: every gradient still there after the backward */
        for (int i = 0; i < nl; i++) slot[i] = i, cap[i] = (size_t)batch * layer_size(&m->layers[i]);
        return nl;
    }
    int *first = dap_malloc(sizeof(int) * (size_t)nl); /* its highest consumer */
    for (int i = 0; i < nl; i++) first[i] = i;
    for (int j = 0; j < nl; j++) {
        const dap_cnn_layer *l = &m->layers[j];
        if (l->src >= 0 && j > first[l->src]) first[l->src] = j;
        if (l->op == DAP_CNN_ADD && l->src2 >= 0 && j > first[l->src2]) first[l->src2] = j;
    }
    int *busy = dap_calloc((size_t)nl, sizeof(int)), nb = 0;
    for (int t = nl - 1; t >= 0; t--) { /* processing layer t */
        for (int i = t; i >= 0; i--) { /* gradients first written now: take a buffer */
            if (first[i] != t) continue;
            const size_t need = (size_t)batch * layer_size(&m->layers[i]);
            int best = -1, big = -1;
            for (int b = 0; b < nb; b++) {
                if (busy[b]) continue;
                if (cap[b] >= need && (best < 0 || cap[b] < cap[best])) best = b;
                if (big < 0 || cap[b] > cap[big]) big = b;
            }
            if (best < 0 && big >= 0) best = big, cap[big] = need; /* grown (sizes are only planned here) */
            if (best < 0) best = nb++, cap[best] = need;
            busy[best] = 1, slot[i] = best;
        }
        busy[slot[t]] = 0; /* layer t done: its gradient is dead */
    }
    free(first), free(busy);
    return nb;
}

static void share_grad_buffers(dap_cnn_state *s, const dap_cnn *m, int batch) {
    const int nl = m->nlayers;
    int *slot = dap_malloc(sizeof(int) * (size_t)nl);
    size_t *cap = dap_calloc((size_t)nl, sizeof(size_t));
    s->ndpool = dap_cnn_grad_slots(m, batch, slot, cap);
    s->dpool = dap_calloc((size_t)s->ndpool, sizeof(float *));
    for (int b = 0; b < s->ndpool; b++) s->dpool[b] = dap_alloc_f32(cap[b]);
    for (int i = 0; i < nl; i++) s->dout[i] = s->dpool[slot[i]];
    free(slot), free(cap);
}

void dap_cnn_state_init(dap_cnn_state *s, const dap_cnn *m, int batch, int with_grad) {
    DAP_ASSERT(batch > 0 && m->params.data != NULL);
    memset(s, 0, sizeof *s);
    int nl = m->nlayers;
    s->batch = batch, s->with_grad = with_grad, s->nlayers = nl;
    s->out = dap_calloc((size_t)nl, sizeof *s->out);
    s->dout = dap_calloc((size_t)nl, sizeof *s->dout);
    s->mean = dap_calloc((size_t)nl, sizeof *s->mean);
    s->rstd = dap_calloc((size_t)nl, sizeof *s->rstd);
    s->argmax = dap_calloc((size_t)nl, sizeof *s->argmax);
    s->padded = dap_calloc((size_t)nl, sizeof *s->padded);
#ifdef DAP_CUDA
    if (dap_device() == DAP_DEVICE_CUDA) { /* the host keeps what comes back: logits, features */
        int last = nl - 1;
        s->out[last] = dap_alloc_f32((size_t)batch * layer_size(&m->layers[last]));
        if (m->feat >= 0 && m->feat != last)
            s->out[m->feat] = dap_alloc_f32((size_t)batch * layer_size(&m->layers[m->feat]));
        s->dev = dap_cnn_cuda_create(m, batch, with_grad);
        return;
    }
#endif
    size_t work = 0, largest = (size_t)dap_cnn_in_size(m);
    for (int i = 0; i < nl; i++) {
        const dap_cnn_layer *l = &m->layers[i];
        size_t sz = (size_t)batch * layer_size(l);
        if (layer_size(l) > largest) largest = layer_size(l);
        s->out[i] = dap_alloc_f32(sz);

        if (l->op == DAP_CNN_NORM) {
            size_t stats = l->norm == DAP_NORM_BATCH ? (size_t)l->c : (size_t)batch * l->c;
            s->mean[i] = dap_alloc_f32(stats);
            s->rstd[i] = dap_alloc_f32(stats);
        } else if (l->op == DAP_CNN_CONV) {
            dap_conv2d_dims d;
            conv_dims(m, l, batch, &d);
            size_t wf = dap_conv2d_work_floats(&d);
            if (wf > work) work = wf;
        } else if (l->op == DAP_CNN_MAXPOOL) {
            s->argmax[i] = dap_malloc(sz * sizeof(int));
            if (l->pad > 0) {
                int c, h, w;
                src_shape(m, l->src, &c, &h, &w);
                s->padded[i] = dap_alloc_f32((size_t)batch * c * (h + 2 * l->pad) * (w + 2 * l->pad));
            }
        }
    }
    s->work = dap_alloc_f32(work > 0 ? work : 1);
    if (with_grad) {
        s->tmp = dap_alloc_f32((size_t)batch * largest);
        share_grad_buffers(s, m, batch);
    }
    s->n = 0;
}

void dap_cnn_state_free(dap_cnn_state *s) {
    if (!s->out) return;
#ifdef DAP_CUDA
    dap_cnn_cuda_free(s->dev);
#endif
    for (int i = 0; i < s->nlayers; i++) {
        dap_free_aligned(s->out[i]);
        dap_free_aligned(s->mean[i]);
        dap_free_aligned(s->rstd[i]);
        dap_free_aligned(s->padded[i]);
        free(s->argmax[i]);
    }
    for (int b = 0; b < s->ndpool; b++) dap_free_aligned(s->dpool[b]);
    free(s->dpool);
    free(s->out), free(s->dout), free(s->mean), free(s->rstd), free(s->argmax), free(s->padded);
    dap_free_aligned(s->work);
    dap_free_aligned(s->tmp);
    memset(s, 0, sizeof *s);
}

/* ---- forward ---------------------------------------------------------------------- */

static void relu_inplace(float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* x (n, c, h, w) -> (n, c, h + 2p, w + 2p) with -FLT_MAX borders. */
static void pad_planes(float *dst, const float *x, int n, int c, int h, int w, int p) {
    int hp = h + 2 * p, wp = w + 2 * p;
#pragma omp parallel for schedule(static)
    for (long plane = 0; plane < (long)n * c; plane++) {
        float *d = dst + (size_t)plane * hp * wp;
        const float *s = x + (size_t)plane * h * w;
        for (int i = 0; i < hp * wp; i++) d[i] = -FLT_MAX;
        for (int y = 0; y < h; y++) memcpy(d + (size_t)(y + p) * wp + p, s + (size_t)y * w, (size_t)w * sizeof(float));
    }
}

static void crop_planes(float *dst, const float *x, int n, int c, int h, int w, int p) {
    int hp = h + 2 * p, wp = w + 2 * p;
#pragma omp parallel for schedule(static)
    for (long plane = 0; plane < (long)n * c; plane++) {
        const float *s = x + (size_t)plane * hp * wp;
        float *d = dst + (size_t)plane * h * w;
        for (int y = 0; y < h; y++) memcpy(d + (size_t)y * w, s + (size_t)(y + p) * wp + p, (size_t)w * sizeof(float));
    }
}

float *dap_cnn_state_input(dap_cnn_state *s, void **stream) {
#ifdef DAP_CUDA
    if (s->dev) return dap_cnn_cuda_input(s->dev, stream);
#endif
    (void)s, (void)stream;
    return NULL;
}

const float *dap_cnn_forward(dap_cnn *m, dap_cnn_state *s, const float *x, int n, int train) {
    DAP_ASSERT(n > 0 && n <= s->batch && (x || s->dev));
#ifdef DAP_CUDA
    if (s->dev) {
        dap_cnn_cuda_forward(m, s, x, n, train);
        return s->out[m->nlayers - 1];
    }
#endif
    s->n = n;
    for (int i = 0; i < m->nlayers; i++) {
        const dap_cnn_layer *l = &m->layers[i];
        const float *inp = l->src < 0 ? x : s->out[l->src];
        float *out = s->out[i];
        int c, h, w;
        src_shape(m, l->src, &c, &h, &w);
        switch (l->op) {
        case DAP_CNN_CONV: {
            dap_conv2d_dims d;
            conv_dims(m, l, n, &d);
            dap_conv2d_forward(out, inp, pdata(m, l->w_id), l->b_id >= 0 ? pdata(m, l->b_id) : NULL,
                               &d, s->work);
            break;
        }
        case DAP_CNN_NORM:
            if (l->norm == DAP_NORM_INSTANCE)
                dap_groupnorm_forward(out, s->mean[i], s->rstd[i], inp, pdata(m, l->w_id),
                                      pdata(m, l->b_id), n, c, h * w, c, NORM_EPS);
            else if (train)
                dap_batchnorm_forward_train(out, s->mean[i], s->rstd[i], pdata(m, l->rm_id),
                                            pdata(m, l->rv_id), inp, pdata(m, l->w_id),
                                            pdata(m, l->b_id), n, c, h * w, NORM_EPS, BN_MOMENTUM);
            else
                dap_batchnorm_forward_eval(out, inp, pdata(m, l->w_id), pdata(m, l->b_id),
                                           pdata(m, l->rm_id), pdata(m, l->rv_id), n, c, h * w,
                                           NORM_EPS);
            break;
        case DAP_CNN_AVGPOOL: dap_avgpool2d_forward(out, inp, n, c, h, w, l->k, l->stride); break;
        case DAP_CNN_MAXPOOL:
            if (l->pad > 0) {
                pad_planes(s->padded[i], inp, n, c, h, w, l->pad);
                dap_maxpool2d_forward(out, s->argmax[i], s->padded[i], n, c, h + 2 * l->pad,
                                      w + 2 * l->pad, l->k, l->stride);
            } else {
                dap_maxpool2d_forward(out, s->argmax[i], inp, n, c, h, w, l->k, l->stride);
            }
            break;
        case DAP_CNN_GAP: dap_global_avgpool_forward(out, inp, n, c, h * w); break;
        case DAP_CNN_LINEAR:
            dap_linear_forward(out, inp, pdata(m, l->w_id), pdata(m, l->b_id), n, c * h * w, l->c);
            break;
        case DAP_CNN_ADD: {
            const float *b = l->src2 < 0 ? x : s->out[l->src2];
            size_t total = (size_t)n * layer_size(l);
#pragma omp parallel for schedule(static)
            for (size_t k = 0; k < total; k++) out[k] = inp[k] + b[k];
            break;
        }
        }
        if (l->relu) relu_inplace(out, (size_t)n * layer_size(l));
    }
    return s->out[m->nlayers - 1];
}

const float *dap_cnn_features(const dap_cnn *m, const dap_cnn_state *s) {
    DAP_ASSERT(m->feat >= 0);
    return s->out[m->feat];
}

/* ---- backward ---------------------------------------------------------------------- */

/* Where the gradient for layer `src` (-1: the input) goes: its own buffer when nothing
 * was written there yet, `tmp` otherwise (then added by `route_done`); NULL when the
 * input gradient is not wanted. */
typedef struct route {
    float *dst;     /* the gradient buffer of src */
    float *write;   /* where the op writes */
    size_t size;
} route;

static route route_begin(dap_cnn_state *s, int src, float *dx, const char *written,
                         int dx_written, size_t size) {
    route r = {NULL, NULL, size};
    if (src < 0) {
        if (!dx) return r;
        r.dst = dx;
        r.write = dx_written ? s->tmp : dx;
    } else {
        r.dst = s->dout[src];
        r.write = written[src] ? s->tmp : r.dst;
    }
    return r;
}

static void route_done(const route *r, int src, char *written, int *dx_written) {
    if (!r->dst) return;
    if (r->write != r->dst) {
        float *d = r->dst;
        const float *t = r->write;
#pragma omp parallel for schedule(static)
        for (size_t k = 0; k < r->size; k++) d[k] += t[k];
    }
    if (src < 0)
        *dx_written = 1;
    else
        written[src] = 1;
}

void dap_cnn_backward(dap_cnn *m, dap_cnn_state *s, const float *x, const float *dlogits,
                      float *dx, int train) {
    DAP_ASSERT(s->with_grad && s->n > 0 && m->params.grad != NULL);
#ifdef DAP_CUDA
    if (s->dev) {
        dap_cnn_cuda_backward(m, s, x, dlogits, dx, train);
        return;
    }
#endif
    int n = s->n, last = m->nlayers - 1;
    char *written = dap_calloc((size_t)m->nlayers, 1);
    int dx_written = 0;
    memcpy(s->dout[last], dlogits, (size_t)n * m->num_classes * sizeof(float));
    written[last] = 1;
    for (int i = last; i >= 0; i--) {
        const dap_cnn_layer *l = &m->layers[i];
        if (!written[i]) continue; /* no consumer: nothing flows back */
        float *g = s->dout[i];
        if (l->relu) {
            const float *o = s->out[i];
            size_t total = (size_t)n * layer_size(l);
#pragma omp parallel for schedule(static)
            for (size_t k = 0; k < total; k++)
                if (!(o[k] > 0.0f)) g[k] = 0.0f;
        }
        const float *inp = l->src < 0 ? x : s->out[l->src];
        int c, h, w;
        src_shape(m, l->src, &c, &h, &w);
        route r = route_begin(s, l->src, dx, written, dx_written, (size_t)n * c * h * w);
        switch (l->op) {
        case DAP_CNN_CONV: {
            dap_conv2d_dims d;
            conv_dims(m, l, n, &d);
            dap_conv2d_backward(r.write, pgrad(m, l->w_id), pgrad(m, l->b_id), g, inp,
                                pdata(m, l->w_id), &d, s->work);
            break;
        }
        case DAP_CNN_NORM:
            if (l->norm == DAP_NORM_INSTANCE)
                dap_groupnorm_backward(r.write, pgrad(m, l->w_id), pgrad(m, l->b_id), g, inp,
                                       pdata(m, l->w_id), s->mean[i], s->rstd[i], n, c, h * w, c);
            else if (train)
                dap_batchnorm_backward_train(r.write, pgrad(m, l->w_id), pgrad(m, l->b_id), g, inp,
                                             pdata(m, l->w_id), s->mean[i], s->rstd[i], n, c, h * w);
            else
                dap_batchnorm_backward_eval(r.write, pgrad(m, l->w_id), pgrad(m, l->b_id), g, inp,
                                            pdata(m, l->w_id), pdata(m, l->rm_id),
                                            pdata(m, l->rv_id), n, c, h * w, NORM_EPS);
            break;
        case DAP_CNN_AVGPOOL:
            if (r.write) dap_avgpool2d_backward(r.write, g, n, c, h, w, l->k, l->stride);
            break;
        case DAP_CNN_MAXPOOL:
            if (!r.write) break;
            if (l->pad > 0) {
                int hp = h + 2 * l->pad, wp = w + 2 * l->pad;
                dap_maxpool2d_backward(s->padded[i], g, s->argmax[i], n, c, hp, wp, l->k, l->stride);
                crop_planes(r.write, s->padded[i], n, c, h, w, l->pad);
            } else {
                dap_maxpool2d_backward(r.write, g, s->argmax[i], n, c, h, w, l->k, l->stride);
            }
            break;
        case DAP_CNN_GAP:
            if (r.write) dap_global_avgpool_backward(r.write, g, n, c, h * w);
            break;
        case DAP_CNN_LINEAR:
            dap_linear_backward(r.write, pgrad(m, l->w_id), pgrad(m, l->b_id), g, inp,
                                pdata(m, l->w_id), n, c * h * w, l->c);
            break;
        case DAP_CNN_ADD: {
            if (r.write) memcpy(r.write, g, r.size * sizeof(float));
            route_done(&r, l->src, written, &dx_written);
            r = route_begin(s, l->src2, dx, written, dx_written, r.size);
            if (r.write) memcpy(r.write, g, r.size * sizeof(float));
            route_done(&r, l->src2, written, &dx_written);
            continue;
        }
        }
        route_done(&r, l->src, written, &dx_written);
    }
    free(written);
}

/* ---- the weights where the state runs ---------------------------------------------------- */

int dap_cnn_state_keep_weights(dap_cnn_state *s, const dap_cnn *m, const struct dap_sgd *sgd,
                               const struct dap_adamw *adamw) {
#ifdef DAP_CUDA
    const char *env = getenv("DAP_CUDA_RESIDENT");
    if (s->dev && !(env && !strcmp(env, "0"))) {
        dap_cnn_cuda_resident(s->dev, &m->params, sgd, adamw);
        return 1;
    }
#else
    (void)s, (void)m, (void)sgd, (void)adamw;
#endif
    return 0;
}

void dap_cnn_state_opt_step(dap_cnn_state *s, const dap_cnn *m, struct dap_sgd *sgd, struct dap_adamw *adamw,
                            double lr) {
#ifdef DAP_CUDA
    if (s->dev) {
        dap_cnn_cuda_opt_step(s->dev, &m->params, sgd, adamw, lr);
        return;
    }
#endif
    (void)s, (void)m, (void)sgd, (void)adamw, (void)lr;
    DAP_ASSERT(!"dap_cnn_state_opt_step on a state without dap_cnn_state_keep_weights");
}

void dap_cnn_state_sync(dap_cnn_state *s, dap_cnn *m, struct dap_sgd *sgd, struct dap_adamw *adamw) {
#ifdef DAP_CUDA
    if (s->dev) {
        dap_cnn_cuda_sync(s->dev, &m->params, sgd, adamw);
        return;
    }
#endif
    (void)s, (void)m, (void)sgd, (void)adamw;
}
