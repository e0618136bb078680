/*
 * backbone_dit.c: the DiT (pixel or latent) as a distillation backbone: eps through
 * dap_dit_eps (classifier-free guidance in one forward of 2B samples), features by a
 * forward stopped after block l, and dap_dit_backward_from_block for the gradient.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "diffusion/dit_eps.h"
#include "distill/backbone.h"

typedef struct dit_impl {
    dap_dit_eps eps;
    int cap;            /* eps chunk */
    int layer;          /* feature block, 0: none */
    dap_dit_state *gst; /* cached blocks 1..layer, for backward */
    dap_dit_state *rst; /* inference only */
    int cap_grad, cap_real;
    float *tf; /* (max cap) timesteps */
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
static void dit_features(dap_backbone *b, int grad, const float *x, int n, int t, const int *y, int pool,
                         float *out) {
    dit_impl *d = b->impl;
    DAP_ASSERT(d->layer >= 1 && n >= 1 && n <= (grad ? d->cap_grad : d->cap_real));
    dap_dit_state *s = grad ? d->gst : d->rst;
    for (int i = 0; i < n; i++) d->tf[i] = (float)t;
    dap_dit_state_set_batch(s, n);
    dap_dit_forward(b->model, s, NULL, x, d->tf, y, d->layer);
    if (pool == DAP_POOL_MEAN) dap_dit_features_mean(b->model, s, out);
    else memcpy(out, dap_dit_features(s), sizeof(float) * (size_t)n * b->tokens * b->hidden);
}

static void dit_backward(dap_backbone *b, const float *dout, int pool, float *dx) {
    dit_impl *d = b->impl;
    if (pool == DAP_POOL_MEAN) dap_dit_backward_from_block_mean(b->model, d->gst, d->layer, dout, dx);
    else dap_dit_backward_from_block(b->model, d->gst, d->layer, dout, dx);
}

static void dit_close(dap_backbone *b) {
    dit_impl *d = b->impl;
    if (!d) return;
    dap_dit_eps_free(&d->eps);
    if (d->gst) dap_dit_state_destroy(d->gst);
    if (d->rst) dap_dit_state_destroy(d->rst);
    dap_free_aligned(d->tf);
    free(d);
    b->impl = NULL;
}

static int dit_open(dap_backbone *b, int cap, double cfg, int layer, int cap_grad, int cap_real) {
    const dap_dit *m = b->model;
    dit_impl *d = dap_calloc(1, sizeof *d);
    d->cap = cap, d->layer = layer, d->cap_grad = cap_grad, d->cap_real = cap_real;
    dap_dit_eps_init(&d->eps, m, cap, cfg);
    if (layer) {
        d->gst = dap_dit_state_create_ex(m, cap_grad, layer);
        d->rst = dap_dit_state_create_ex(m, cap_real, 0);
    }
    d->tf = dap_alloc_f32((size_t)(cap_grad > cap_real ? cap_grad : cap_real) + 1);
    b->impl = d;
    return DAP_OK;
}

static const dap_backbone_ops dit_ops = {dit_open, dit_eps, dit_features, dit_backward, dit_close};

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
