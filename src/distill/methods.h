/*
 * methods.h: the pieces of the rival methods (mgd3.c, dm.c, igd.c) that distill.c's
 * per-class loop calls, and the helpers of distill.c they share. Internal to
 * src/distill and its tests; the public entry stays dap_distill_class.
 */
#ifndef DAP_DISTILL_METHODS_H
#define DAP_DISTILL_METHODS_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "data/dataset.h"
#include "distill/distill.h"

/* Random streams of a class (all keyed by the run's seed and the class). */
#define DAP_STREAM_RANDOM_PICK (1ULL << 60)
#define DAP_STREAM_REAL_PICK   (2ULL << 60)
#define DAP_STREAM_REAL_NOISE  (3ULL << 60)
#define DAP_STREAM_KMEANS      (4ULL << 60)
#define DAP_STREAM_DM          (5ULL << 60)
#define DAP_STREAM_IGD_PICK    (6ULL << 60)
#define DAP_KMEANS_ITERS       50

/* n distinct indices of class k in a seeded random order (DAP_ERR_ARG if the class has
 * fewer). */
int dap_distill_pick_class(const dap_dataset *ds, int k, int n, uint64_t seed, uint64_t stream, int *out);
/* centres (n, C H W): the k-means centres of class k's real images (k = n, seeded by the
 * run's seed and the class), as --init kmeans, d4m's prototypes and mgd3's modes use. */
int dap_distill_kmeans_centres(const dap_dataset *real, int k, int n, uint64_t seed, float *centres);

/* ---- mgd3 (mgd3.c) ---- */
/* The mode energy of one sample, E = lambda/2 |m - x0|^2, and grad (per floats) = dE/dx0
 * = -lambda (m - x0) (grad may be NULL). */
double dap_mgd3_energy(float *grad, const float *x0, const float *mode, size_t per, double lambda);
/* Mode guidance on n samples: with x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t),
 * eps_i += sqrt(1 - a_t) dE/dx0 (m_i, x0_hat_i) = eps_i - sqrt(1 - a_t) lambda (m_i - x0_hat_i).
 * Returns the mean energy. */
double dap_mgd3_adjust_eps(float *eps, const float *x_t, const float *modes, int n, size_t per, double a_t,
                           double lambda);

/* ---- dm (dm.c) ---- */
/* Distribution matching of class k into out (ipc, C, H, W) in [-1, 1]. */
int dap_dm_class(const dap_dataset *real, int k, const dap_distill_opts *o, float *out,
                 dap_distill_stats *st);
/* The differentiable siamese augmentation of DM: one op per call, parameters per image
 * (image i of any batch made from the same draw gets the same parameters). */
typedef struct dap_dsa_draw {
    int op;   /* dap_dsa_op */
    int n;    /* images with parameters */
    float *p; /* (n, 3) parameters */
} dap_dsa_draw;
void dap_dsa_draw_make(dap_dsa_draw *d, int n, dap_rng *r);
void dap_dsa_draw_free(dap_dsa_draw *d);
/* x (n, c, h, w) in place, n <= d->n. */
void dap_dsa_forward(const dap_dsa_draw *d, float *x, int n, int c, int h, int w);
/* g (n, c, h, w) in place: the gradient wrt the input from the gradient wrt the output. */
void dap_dsa_backward(const dap_dsa_draw *d, float *g, int n, int c, int h, int w);

/* ---- igd (igd.c) ---- */
typedef struct dap_igd {
    struct dap_classifier *sur; /* surrogate (eval mode); weights perturbed and restored */
    int k;                      /* the class */
    size_t P;                   /* surrogate parameters */
    float *G;                   /* (P) mean real-data gradient of the class */
    float *g, *v, *theta;       /* (P) scratch */
    float *xn, *dxn;            /* (1, in) scratch */
    struct dap_cnn_state *st1;  /* the surrogate's one-sample state (with gradients) */
} dap_igd;

/* Builds the class's mean real gradient G over n real images (idx into real). */
int dap_igd_init(dap_igd *g, struct dap_classifier *sur, const dap_dataset *real, int k, const int *idx,
                 int n);
void dap_igd_free(dap_igd *g);
/* The influence of one sample x0 (in the input space, [-1, 1]): s = cos(grad_theta L(x0),
 * G) with L the cross-entropy of class k; grad (per), when not NULL, receives ds/dx0,
 * through J^T v = d/de grad_x L(x0, theta + e v) at 0 by a central difference. */
double dap_igd_influence(dap_igd *g, const float *x0, float *grad);
/* grad_x <grad_theta L(x, theta), v> by the central difference (exposed for the tests). */
void dap_igd_mixed(dap_igd *g, const float *x0, const float *v, float *out);
/* grad_theta L(x0) (P) into out; returns L. */
double dap_igd_param_grad(dap_igd *g, const float *x0, float *out);
/* The deviation of x0 from a memory mem (nm, per): s = max_j cos(x0, mem_j); grad (per)
 * receives ds/dx0 (zero when nm = 0). */
double dap_igd_deviation(const float *x0, const float *mem, int nm, size_t per, float *grad);

#endif /* DAP_DISTILL_METHODS_H */
