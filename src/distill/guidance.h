/*
 * guidance.h: the representativeness prior of SPEC 3 on feature rows: token pooling
 * and the Mercer-kernel energy E(s_i) = (1/N) sum_j d_k(s_i, r_j) with its gradient.
 * Independent of the backbone: the sampler hands in features from block l and takes
 * back dE/dfeatures for the partial backward.
 */
#ifndef DAP_GUIDANCE_H
#define DAP_GUIDANCE_H

#include <stddef.h>

typedef enum { DAP_KERNEL_LINEAR = 0, DAP_KERNEL_RBF = 1 } dap_kernel;
typedef enum { DAP_POOL_FLATTEN = 0, DAP_POOL_MEAN = 1 } dap_pool;

/* Parse "linear"/"rbf" and "flatten"/"mean" (-1 when unknown). */
int dap_kernel_parse(const char *s);
int dap_pool_parse(const char *s);

/* Feature rows from block tokens feat (B, T, D): flatten -> (B, T*D), mean -> (B, D). */
int dap_pool_dim(int t, int d, int pool);
void dap_pool_forward(float *out, const float *feat, int b, int t, int d, int pool);
/* dfeat (B, T, D) overwritten from dout (B, F). */
void dap_pool_backward(float *dfeat, const float *dout, int b, int t, int d, int pool);

/* Kernel-induced distance energies of ns synthetic rows s (ns, F) against nr real rows
 * r (nr, F): energy[i] = (1/nr) sum_j d_k(s_i, r_j). ds (ns, F), when not NULL, is
 * overwritten with dE_i/ds_i. linear: d = |s - r|; rbf: d = sqrt(2 - 2 exp(-|s-r|^2 /
 * (2 sigma^2))). Returns the mean energy over i. */
double dap_kernel_energy(float *ds, float *energy, const float *s, int ns, const float *r, int nr,
                         int f, int kernel, double sigma);

/* The kernel part of the two above on precomputed squared distances q[k] = |s_i - r_j|^2
 * (a GPU computes them, cuda.h's dap_cuda_pair_sq): w[k] = scale dd_k/ds / (s - r), so
 * that dE/ds_i = sum_j w_ij (s_i - r_j), and the return value sum_k scale d_k. The same
 * formula as dap_kernel_energy's (scale 1/nr there). */
double dap_kernel_weights(double *w, const double *q, size_t n, int kernel, double sigma, double scale);

/* The repulsion among a class's synthetic rows (dap --repel, not in the paper): adds
 * -lambda/(no-1) sum_{k != self0+i} d_k(s_i, o_k) to energy[i] (when not NULL) and its
 * gradient to ds[i], with s = rows self0..self0+ns-1 of o (no, F) and the other rows held
 * fixed. With the attraction above, lambda = (no-1)/no gives each sample its share of
 * the gradient of the energy distance 2 E d(S, R) - E d(S, S') - E d(R, R') between the
 * synthetic and the real features, which is zero only when the two distributions match:
 * the attraction alone pulls every sample towards the same center and costs diversity.
 * Returns the mean added term (<= 0). */
double dap_kernel_repel(float *ds, float *energy, const float *s, int ns, const float *o, int no, int self0,
                        double lambda, int f, int kernel, double sigma);

#endif
