/*
 * backbone_dit.c: the DiT (pixel or latent) as a distillation backbone: eps through
 * dap_dit_eps (classifier-free guidance in one forward of 2B samples), features by a
 * forward stopped after block l, and dap_dit_backward_from_block for the gradient. It
 * offers the guidance's energy itself (bank_rows / guide): on the CPU exactly the host
 * path (features, dap_kernel_energy, backward); with the model on a GPU the real bank,
 * the synthetic rows and the energy's gradient stay on the device (cuda.h's
 * dap_cuda_pair_sq and dap_cuda_energy_grad around guidance.h's dap_kernel_weights).
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "diffusion/dit_eps.h"
#include "distill/backbone.h"
#include "distill/guidance.h"
#ifdef DAP_CUDA
#include "cuda/cuda.h"
#endif

typedef struct dit_impl {
    dap_dit_eps eps;
    int cap;            /* eps chunk */
    int layer;          /* feature block, 0: none */
    dap_dit_state *gst; /* cached blocks 1..layer, for backward */
    dap_dit_state *rst; /* inference only */
    int cap_grad, cap_real;
    float *tf; /* (max cap) timesteps */
    /* the guidance's energy (open's bank > 0): real rows (bank, F) and dE/ds (cap_grad, F),
     * on the model's device; sfeat (cap_grad, F) host rows (cpu); q, w (cap_grad bank) */
    int bank_n, pool, F, dev;
    float *bank, *ds, *sfeat;
    double *q, *w;
    double *dqw; /* device: (cap_grad bank) scratch of the pairs' reductions */
} dit_impl;

static int dit_eps(dap_backbone *b, float *eps, const float *x, int n, int t, const int *y) {
    dit_impl *d = b->impl;
    const size_t per = dap_backbone_per(b);
    dap_ddim_coef c = {0};
    c.t = t;
    for (int i0 = 0; i0 < n; i0 += d->cap) {
        const int nb = n - i0 < d->cap ? n - i0 : d->cap;
        dap_dit_eps_set_labels(&d->eps, y + i0, nb);
        DAP_TRY(dap_dit_eps_hook(&d->eps, eps + (size_t)i0 * per, x + (size_t)i0 * per, &c));
    }
    return DAP_OK;
}

/* Flatten pooling is the tokens' own layout; mean pooling is the DiT's (on its device). */
/* Forward of n samples to block l in the cached (grad) or inference state. */
static dap_dit_state *forward_to_layer(dap_backbone *b, int grad, const float *x, int n, int t, const int *y) {
    dit_impl *d = b->impl;
    DAP_ASSERT(d->layer >= 1 && n >= 1 && n <= (grad ? d->cap_grad : d->cap_real));
    dap_dit_state *s = grad ? d->gst : d->rst;
    for (int i = 0; i < n; i++) d->tf[i] = (float)t;
    dap_dit_state_set_batch(s, n);
    dap_dit_forward(b->model, s, NULL, x, d->tf, y, d->layer);
    return s;
}

static void dit_features(dap_backbone *b, int grad, const float *x, int n, int t, const int *y, int pool,
                         float *out) {
    dap_dit_state *s = forward_to_layer(b, grad, x, n, t, y);
    if (pool == DAP_POOL_MEAN) dap_dit_features_mean(b->model, s, out);
    else memcpy(out, dap_dit_features(s), sizeof(float) * (size_t)n * b->tokens * b->hidden);
}

static void dit_backward(dap_backbone *b, const float *dout, int pool, float *dx) {
    dit_impl *d = b->impl;
    if (pool == DAP_POOL_MEAN) dap_dit_backward_from_block_mean(b->model, d->gst, d->layer, dout, dx);
    else dap_dit_backward_from_block(b->model, d->gst, d->layer, dout, dx);
}

static void dit_bank_rows(dap_backbone *b, const float *x, int n, int t, const int *y, int row0) {
    dit_impl *d = b->impl;
    DAP_ASSERT(d->bank && row0 >= 0 && row0 + n <= d->bank_n);
    float *dst = d->bank + (size_t)row0 * d->F;
#ifdef DAP_CUDA
    if (d->dev) {
        dap_dit_state *s = forward_to_layer(b, 0, x, n, t, y);
        dap_cuda_copy(dst, dap_dit_features_device(b->model, s, d->pool == DAP_POOL_MEAN), (size_t)n * d->F);
        return;
    }
#endif
    dit_features(b, 0, x, n, t, y, d->pool, dst);
}

static double dit_guide(dap_backbone *b, const float *x, int n, int t, const int *y, int nr, int kernel,
                        double sigma, float *dx) {
    dit_impl *d = b->impl;
    DAP_ASSERT(d->bank && nr >= 1 && nr <= d->bank_n);
#ifdef DAP_CUDA
    if (d->dev) {
        dap_dit_state *s = forward_to_layer(b, 1, x, n, t, y);
        const float *rows = dap_dit_features_device(b->model, s, d->pool == DAP_POOL_MEAN);
        dap_cuda_pair_sq(d->q, d->dqw, rows, n, d->bank, nr, d->F);
        /* the per-sample means, in the host path's order: sum_i (sum_j scale d_ij) */
        double e = 0;
        for (int i = 0; i < n; i++)
            e += dap_kernel_weights(d->w + (size_t)i * nr, d->q + (size_t)i * nr, (size_t)nr, kernel, sigma, 1.0 / nr);
        dap_cuda_energy_grad(d->ds, d->w, d->dqw, rows, n, d->bank, nr, d->F);
        dit_backward(b, d->ds, d->pool, dx);
        return e;
    }
#endif
    dit_features(b, 1, x, n, t, y, d->pool, d->sfeat);
    const double e = n * dap_kernel_energy(d->ds, NULL, d->sfeat, n, d->bank, nr, d->F, kernel, sigma);
    dit_backward(b, d->ds, d->pool, dx);
    return e;
}

static void dit_close(dap_backbone *b) {
    dit_impl *d = b->impl;
    if (!d) return;
#ifdef DAP_CUDA
    if (d->dev)
        dap_cuda_buffer_free(d->bank), dap_cuda_buffer_free(d->ds), dap_cuda_buffer_free((float *)d->dqw),
            d->bank = d->ds = NULL;
#endif
    dap_free_aligned(d->bank), dap_free_aligned(d->ds), dap_free_aligned(d->sfeat);
    free(d->q), free(d->w);
    dap_dit_eps_free(&d->eps);
    if (d->gst) dap_dit_state_destroy(d->gst);
    if (d->rst) dap_dit_state_destroy(d->rst);
    dap_free_aligned(d->tf);
    free(d);
    b->impl = NULL;
}

static int dit_open(dap_backbone *b, int cap, double cfg, int layer, int cap_grad, int cap_real, int bank,
                    int pool) {
    const dap_dit *m = b->model;
    dit_impl *d = dap_calloc(1, sizeof *d);
    d->cap = cap, d->layer = layer, d->cap_grad = cap_grad, d->cap_real = cap_real;
    b->impl = d;
    int rc = dap_dit_eps_init(&d->eps, m, cap, cfg);
    if (rc == DAP_OK && layer) {
        d->gst = dap_dit_state_create_ex(m, cap_grad, layer);
        d->rst = d->gst ? dap_dit_state_create_ex(m, cap_real, 0) : NULL;
        if (!d->rst) rc = DAP_ERR_NOMEM; /* a device without room: it said why */
    }
    if (rc != DAP_OK) {
        dit_close(b);
        return rc;
    }
    if (bank) {
        d->bank_n = bank, d->pool = pool, d->F = dap_pool_dim(b->tokens, b->hidden, pool);
        d->dev = m->dev != NULL;
        const size_t rows = (size_t)bank * d->F, grads = (size_t)cap_grad * d->F;
#ifdef DAP_CUDA
        if (d->dev) {
            d->bank = dap_cuda_buffer(rows), d->ds = dap_cuda_buffer(grads);
            d->q = dap_malloc(sizeof(double) * (size_t)cap_grad * bank);
            d->w = dap_malloc(sizeof(double) * (size_t)cap_grad * bank);
            d->dqw = dap_cuda_buffer_f64((size_t)cap_grad * bank);
        }
#endif
        if (!d->dev) d->bank = dap_alloc_f32(rows), d->ds = dap_alloc_f32(grads), d->sfeat = dap_alloc_f32(grads);
    }
    d->tf = dap_alloc_f32((size_t)(cap_grad > cap_real ? cap_grad : cap_real) + 1);
    return DAP_OK;
}

static const dap_backbone_ops dit_ops = {dit_open,  dit_eps,       dit_features, dit_backward,
                                         dit_close, dit_bank_rows, dit_guide};

void dap_backbone_dit(dap_backbone *b, const dap_dit *m) {
    memset(b, 0, sizeof *b);
    b->kind = "dit";
    b->C = m->cfg.in_channels, b->H = b->W = m->cfg.input_size;
    b->tokens = m->tokens, b->hidden = m->cfg.hidden, b->depth = m->cfg.depth;
    b->classes = m->cfg.num_classes;
    b->has_null = m->cfg.class_dropout > 0;
    b->ops = &dit_ops;
    b->model = m;
}
