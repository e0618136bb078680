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
    int (*open)(dap_backbone *b, int cap, double cfg, int layer, int cap_grad, int cap_real, int bank, int pool);
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
    /* The guidance's energy where the backbone runs (NULL: not offered; then the caller
     * pools on the host with features() and computes it with guidance.h). bank_rows:
     * forwards n real samples (inference) and keeps their pooled rows as rows row0.. of
     * the bank (open's `bank` rows, pooled by open's `pool`). guide: forwards n synthetic
     * samples (cached, at most cap_grad), E_i = (1/nr) sum_j d_k(s_i, bank_j) over the
     * bank's first nr rows (guidance.h), backpropagates dE/ds to dx (n, C, H, W) and
     * returns sum_i E_i. On a GPU the rows and the energy stay there: x goes up, dx comes
     * down. */
    void (*bank_rows)(dap_backbone *b, const float *x, int n, int t, const int *y, int row0);
    double (*guide)(dap_backbone *b, const float *x, int n, int t, const int *y, int nr, int kernel, double sigma,
                    float *dx);
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
 * and cap_real (inference) samples, and when bank >= 1 (and the backbone offers
 * bank_rows / guide) a bank of that many real rows pooled by `pool`. DAP_ERR_ARG for a
 * bad capacity or layer. */
static inline int dap_backbone_open(dap_backbone *b, int cap, double cfg, int layer, int cap_grad,
                                    int cap_real, int bank, int pool) {
    if (cap < 1 || layer < 0 || layer > b->depth || (layer && (cap_grad < 1 || cap_real < 1)) || bank < 0 ||
        (bank && !layer))
        return dap_error(DAP_ERR_ARG, "backbone %s: bad capacity %d / layer %d (depth %d) / bank %d", b->kind, cap,
                         layer, b->depth, bank);
    return b->ops->open(b, cap, cfg, layer, cap_grad, cap_real, bank, pool);
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
/* Whether the backbone computes the guidance's energy itself (bank_rows / guide). */
static inline int dap_backbone_guides(const dap_backbone *b) {
    return b->ops->bank_rows != NULL && b->ops->guide != NULL;
}
static inline void dap_backbone_bank_rows(dap_backbone *b, const float *x, int n, int t, const int *y, int row0) {
    b->ops->bank_rows(b, x, n, t, y, row0);
}
static inline double dap_backbone_guide(dap_backbone *b, const float *x, int n, int t, const int *y, int nr,
                                        int kernel, double sigma, float *dx) {
    return b->ops->guide(b, x, n, t, y, nr, kernel, sigma, dx);
}
static inline size_t dap_backbone_per(const dap_backbone *b) {
    return (size_t)b->C * b->H * b->W;
}

#endif /* DAP_BACKBONE_H */
