/*
 * guidance.h: the representativeness prior of SPEC 3 on feature rows: token pooling
 * and the Mercer-kernel energy E(s_i) = (1/N) sum_j d_k(s_i, r_j) with its gradient.
 * Independent of the backbone: the sampler hands in features from block l and takes
 * back dE/dfeatures for the partial backward.
 */
#ifndef DAP_GUIDANCE_H
#define DAP_GUIDANCE_H

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

#endif
