/*
 * backbone.h: what the distillation methods ask of a diffusion prior, and nothing more:
 * eps for a batch (with classifier-free guidance), the tokens of block l pooled into
 * feature rows, the backward from those rows to the input, and the geometry. The pooling
 * happens where the backbone runs (on a GPU only the rows come down). The methods (distill.c, mgd3.c,
 * igd.c, ...) call this interface, never a network directly, so a second prior (the SD
 * U-Net) is one more implementation of this file's function table.
 *
 * The input space is whatever the prior denoises: pixels for a pixel DiT, VAE latents
 * for a latent one (encoding and decoding happen outside distill).
 */
#ifndef DAP_BACKBONE_H
#define DAP_BACKBONE_H

#include <stddef.h>

#include "core/core.h"
#include "distill/guidance.h"
#include "models/dit.h"

typedef struct dap_backbone dap_backbone;

typedef struct dap_backbone_ops {
    /* Allocates the working state into b->impl (see dap_backbone_open). */
    int (*open)(dap_backbone *b, int cap, double cfg, int layer, int cap_grad, int cap_real);
    /* eps (n, C, H, W) at x (n, C, H, W), model timestep t, labels y (n), with the
     * guidance scale given to dap_backbone_open; runs in chunks of the open capacity. */
    int (*eps)(dap_backbone *b, float *eps, const float *x, int n, int t, const int *y);
    /* Forward to block `layer` (the layer given to dap_backbone_open) of n samples: with
     * grad = 1 into the cached state (at most cap_grad samples) for a following backward,
     * else into the inference state (at most cap_real samples). out (n, F): the (tokens,
     * hidden) tokens pooled by `pool` (guidance.h; F = dap_pool_dim). */
    void (*features)(dap_backbone *b, int grad, const float *x, int n, int t, const int *y, int pool,
                     float *out);
    /* After features(grad = 1, pool): dx (n, C, H, W) from dout (n, F), the gradient of
     * the pooled rows. */
    void (*backward)(dap_backbone *b, const float *dout, int pool, float *dx);
    void (*close)(dap_backbone *b);
} dap_backbone_ops;

struct dap_backbone {
    const char *kind; /* "dit" */
    int C, H, W;      /* input geometry */
    int tokens, hidden, depth;
    int classes;  /* real classes */
    int has_null; /* a null class: guidance scales other than 1 are possible */
    const dap_backbone_ops *ops;
    const void *model; /* the network (read-only) */
    void *impl;        /* the working state of dap_backbone_open */
};

/* Describes a DiT as a backbone (geometry only; nothing allocated). */
void dap_backbone_dit(dap_backbone *b, const dap_dit *m);

/* Allocates the working state: eps in chunks of cap samples with guidance scale cfg;
 * when layer >= 1, features of block layer for up to cap_grad (cached for backward)
 * and cap_real (inference) samples. DAP_ERR_ARG for a bad capacity or layer. */
static inline int dap_backbone_open(dap_backbone *b, int cap, double cfg, int layer, int cap_grad,
                                    int cap_real) {
    if (cap < 1 || layer < 0 || layer > b->depth || (layer && (cap_grad < 1 || cap_real < 1)))
        return dap_error(DAP_ERR_ARG, "backbone %s: bad capacity %d / layer %d (depth %d)", b->kind, cap,
                         layer, b->depth);
    return b->ops->open(b, cap, cfg, layer, cap_grad, cap_real);
}
/* Frees what dap_backbone_open allocated (the geometry stays). */
static inline void dap_backbone_close(dap_backbone *b) {
    if (b->impl) b->ops->close(b);
}

static inline int dap_backbone_eps(dap_backbone *b, float *eps, const float *x, int n, int t, const int *y) {
    return b->ops->eps(b, eps, x, n, t, y);
}
static inline void dap_backbone_features(dap_backbone *b, int grad, const float *x, int n, int t, const int *y,
                                         int pool, float *out) {
    b->ops->features(b, grad, x, n, t, y, pool, out);
}
static inline void dap_backbone_backward(dap_backbone *b, const float *dout, int pool, float *dx) {
    b->ops->backward(b, dout, pool, dx);
}
static inline size_t dap_backbone_per(const dap_backbone *b) {
    return (size_t)b->C * b->H * b->W;
}

#endif /* DAP_BACKBONE_H */
