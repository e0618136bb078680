/*
 * guidance.c: pooling and the kernel energy of the representativeness prior.
 * The energy is an average of distances to individual real rows (not the distance to
 * the class mean, which with a squared distance would be another method).
 */
#include "distill/guidance.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "ops/ops.h"

int dap_kernel_parse(const char *s) {
    if (!strcmp(s, "linear")) return DAP_KERNEL_LINEAR;
    if (!strcmp(s, "rbf")) return DAP_KERNEL_RBF;
    return -1;
}

int dap_pool_parse(const char *s) {
    if (!strcmp(s, "flatten")) return DAP_POOL_FLATTEN;
    if (!strcmp(s, "mean")) return DAP_POOL_MEAN;
    return -1;
}

int dap_pool_dim(int t, int d, int pool) { return pool == DAP_POOL_MEAN ? d : t * d; }

void dap_pool_forward(float *out, const float *feat, int b, int t, int d, int pool) {
    if (pool == DAP_POOL_FLATTEN) {
        memcpy(out, feat, sizeof(float) * (size_t)b * t * d);
        return;
    }
    dap_token_mean_forward(out, feat, b, t, d);
}

void dap_pool_backward(float *dfeat, const float *dout, int b, int t, int d, int pool) {
    if (pool == DAP_POOL_FLATTEN) {
        memcpy(dfeat, dout, sizeof(float) * (size_t)b * t * d);
        return;
    }
    dap_token_mean_backward(dfeat, dout, b, t, d);
}

/* d_k(s, r) from q = |s - r|^2, and w with d(d_k)/ds = w (s - r). */
static double kernel_dist(double q, int kernel, double inv2s2, double *w) {
    if (kernel == DAP_KERNEL_LINEAR) {
        double dist = sqrt(q);
        *w = dist > 1e-12 ? 1.0 / dist : 0.0;
        return dist;
    }
    double k = exp(-q * inv2s2);
    double dist = sqrt(fmax(2.0 - 2.0 * k, 0.0));
    *w = dist > 1e-12 ? k * 2.0 * inv2s2 / dist : 0.0;
    return dist;
}

/* sum over rows o_k (k != skip) of scale * d_k(s, o_k), and into g its gradient. The
 * distances are exact (no |a|^2+|b|^2-2ab expansion), so nearly equal features keep
 * their precision. */
static double dist_sum(double *g, const float *s, const float *o, int no, int skip, double scale, int f,
                       int kernel, double inv2s2) {
    double e = 0;
    for (int j = 0; j < no; j++) {
        if (j == skip) continue;
        const float *oj = o + (size_t)j * f;
        double q = 0, w;
        for (int c = 0; c < f; c++) {
            double diff = (double)s[c] - oj[c];
            q += diff * diff;
        }
        e += scale * kernel_dist(q, kernel, inv2s2, &w);
        if (g) {
            w *= scale;
            for (int c = 0; c < f; c++) g[c] += w * ((double)s[c] - oj[c]);
        }
    }
    return e;
}

/* energy[i] (+)= sum_k scale * d(s_i, o_k) over k != skip0 + i, ds likewise; mean over i. */
static double energy_rows(float *ds, float *energy, int accumulate, const float *s, int ns, const float *o,
                          int no, int skip0, double scale, int f, int kernel, double sigma) {
    DAP_ASSERT(ns > 0 && no > 0 && f > 0);
    DAP_ASSERT(kernel == DAP_KERNEL_LINEAR || (kernel == DAP_KERNEL_RBF && sigma > 0));
    double total = 0;
    const double inv2s2 = kernel == DAP_KERNEL_RBF ? 1.0 / (2 * sigma * sigma) : 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total)
    for (int i = 0; i < ns; i++) {
        double *g = ds ? dap_calloc((size_t)f, sizeof(double)) : NULL;
        const int skip = skip0 < 0 ? -1 : skip0 + i;
        double e = dist_sum(g, s + (size_t)i * f, o, no, skip, scale, f, kernel, inv2s2);
        if (energy) energy[i] = (float)(accumulate ? energy[i] + e : e);
        if (g) {
            float *dsi = ds + (size_t)i * f;
            for (int c = 0; c < f; c++) dsi[c] = (float)(accumulate ? dsi[c] + g[c] : g[c]);
            free(g);
        }
        total += e;
    }
    return total / ns;
}

double dap_kernel_energy(float *ds, float *energy, const float *s, int ns, const float *r, int nr,
                         int f, int kernel, double sigma) {
    return energy_rows(ds, energy, 0, s, ns, r, nr, -1, 1.0 / nr, f, kernel, sigma);
}

double dap_kernel_weights(double *w, const double *q, size_t n, int kernel, double sigma, double scale) {
    DAP_ASSERT(kernel == DAP_KERNEL_LINEAR || (kernel == DAP_KERNEL_RBF && sigma > 0));
    const double inv2s2 = kernel == DAP_KERNEL_RBF ? 1.0 / (2 * sigma * sigma) : 0;
    double e = 0;
    for (size_t k = 0; k < n; k++) {
        e += scale * kernel_dist(q[k], kernel, inv2s2, &w[k]);
        w[k] *= scale;
    }
    return e;
}

double dap_kernel_repel(float *ds, float *energy, const float *s, int ns, const float *o, int no, int self0,
                        double lambda, int f, int kernel, double sigma) {
    DAP_ASSERT(self0 >= 0 && self0 + ns <= no);
    if (no < 2 || lambda == 0) return 0.0;
    return energy_rows(ds, energy, 1, s, ns, o, no, self0, -lambda / (no - 1), f, kernel, sigma);
}
