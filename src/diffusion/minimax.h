/*
 * minimax.h: the two extra terms of the Minimax diffusion fine-tune, Gu et al., "Efficient
 * Dataset Distillation via Minimax Diffusion" (CVPR 2024); public code:
 * github.com/vimar-gu/MinimaxDiffusion (train_dit.py).
 *
 * A sample's embedding is the clean image the training forward predicts,
 *     x0_hat = (x_t - sqrt(1 - a_t) eps_theta) / sqrt(a_t),
 * flattened. Each class c keeps two FIFO memories of at most M rows: the real training
 * inputs x0 of c seen so far, and earlier x0_hat of c (both constants, no gradient). For each
 * class c present in a batch (n_c = number of distinct classes in the batch):
 *     representativeness  lambda_pos / n_c * (1 - min_{i in c, m} cos(x0_hat_i, real_m))
 *     diversity           lambda_neg / n_c *      max_{i in c, m} cos(x0_hat_i, gen_m)
 * computed only once the class's memories are non-empty; afterwards the batch's x0 and
 * x0_hat of c are appended (even on the class's first visit). A class is the sample's real
 * label, whatever classifier-free dropout did to the label the model saw.
 */
#ifndef DAP_DIFFUSION_MINIMAX_H
#define DAP_DIFFUSION_MINIMAX_H

#include <stddef.h>

typedef struct dap_minimax {
    int num_classes;   /* K */
    int memory_size;   /* M */
    size_t per;        /* floats of one sample (C H W) */
    double lambda_pos, lambda_neg;
    float *real, *gen; /* (K, M, per): class k's rows 0..n-1, oldest first */
    int *n_real, *n_gen; /* (K) rows held */
} dap_minimax;

void dap_minimax_init(dap_minimax *mm, int num_classes, int memory_size, size_t per, double lambda_pos,
                      double lambda_neg);
void dap_minimax_free(dap_minimax *mm);

/* cos(u, v) over n floats (0 when either is zero). */
double dap_cosine(const float *u, const float *v, size_t n);
/* du += scale * d cos(u, v) / du = scale * (v / (|u||v|) - cos(u, v) u / |u|^2) (no-op when
 * either is zero). */
void dap_cosine_grad_add(float *du, const float *u, const float *v, size_t n, double scale);
/* The smallest (want_max 0) or largest (want_max 1) cos(a_i, b_j) over a (na, n) x b (nb, n),
 * the first such pair in (i, j) order into *ia, *ib. na, nb >= 1. */
double dap_cosine_extreme(const float *a, int na, const float *b, int nb, size_t n, int want_max, int *ia,
                          int *ib);

/* The terms for a batch of B samples of the memories as they are (nothing appended):
 * x0_hat (B, per) the predicted clean samples, y (B) their real classes. *pos, *neg receive
 * the two terms (lambdas and 1/n_c included); dx0 (B, per), when not NULL, is overwritten
 * with d(pos + neg)/d x0_hat. */
void dap_minimax_terms(const dap_minimax *mm, const float *x0_hat, const int *y, int B, float *dx0, double *pos,
                       double *neg);
/* Appends the batch's real x0 (B, per) and x0_hat (B, per) to their classes' memories,
 * dropping the oldest rows beyond M. */
void dap_minimax_push(dap_minimax *mm, const float *x0, const float *x0_hat, const int *y, int B);

/* The training-step form: eps (B samples, the first per floats of each row of eps_stride
 * floats: the model output's eps channels), x_t (B, per), sa[b] = sqrt(a_t), sb[b] =
 * sqrt(1 - a_t). Forms x0_hat (B, per; caller's buffer, kept for dap_minimax_push), computes
 * the terms and adds d(pos + neg)/d eps = -(sb / sa) d(pos + neg)/d x0_hat into deps (same
 * layout as eps; NULL: none; dx0 (B, per) is scratch). Nothing is appended. Returns pos + neg. */
double dap_minimax_eps_terms(const dap_minimax *mm, const float *eps, size_t eps_stride, const float *x_t,
                             const double *sa, const double *sb, const int *y, int B, float *x0_hat, float *dx0,
                             float *deps, double *pos, double *neg);

#endif /* DAP_DIFFUSION_MINIMAX_H */
