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
    for (int i = 0; i < b; i++) {
        float *o = out + (size_t)i * d;
        memset(o, 0, sizeof(float) * d);
        for (int k = 0; k < t; k++) {
            const float *row = feat + ((size_t)i * t + k) * d;
            for (int c = 0; c < d; c++) o[c] += row[c];
        }
        for (int c = 0; c < d; c++) o[c] /= t;
    }
}

void dap_pool_backward(float *dfeat, const float *dout, int b, int t, int d, int pool) {
    if (pool == DAP_POOL_FLATTEN) {
        memcpy(dfeat, dout, sizeof(float) * (size_t)b * t * d);
        return;
    }
    for (int i = 0; i < b; i++)
        for (int k = 0; k < t; k++)
            for (int c = 0; c < d; c++) dfeat[((size_t)i * t + k) * d + c] = dout[(size_t)i * d + c] / t;
}

double dap_kernel_energy(float *ds, float *energy, const float *s, int ns, const float *r, int nr,
                         int f, int kernel, double sigma) {
    DAP_ASSERT(ns > 0 && nr > 0 && f > 0);
    DAP_ASSERT(kernel == DAP_KERNEL_LINEAR || (kernel == DAP_KERNEL_RBF && sigma > 0));
    double total = 0;
    const double inv2s2 = kernel == DAP_KERNEL_RBF ? 1.0 / (2 * sigma * sigma) : 0;
    /* One synthetic row per iteration; the distances are exact (no |a|^2+|b|^2-2ab
     * expansion), so nearly equal features keep their precision. */
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total)
    for (int i = 0; i < ns; i++) {
        const float *si = s + (size_t)i * f;
        double e = 0;
        double *g = NULL;
        if (ds) g = dap_calloc((size_t)f, sizeof(double));
        for (int j = 0; j < nr; j++) {
            const float *rj = r + (size_t)j * f;
            double q = 0;
            for (int c = 0; c < f; c++) {
                double diff = (double)si[c] - rj[c];
                q += diff * diff;
            }
            double dist, w; /* w: d(dist)/d(s) = w * (s - r) */
            if (kernel == DAP_KERNEL_LINEAR) {
                dist = sqrt(q);
                w = dist > 1e-12 ? 1.0 / dist : 0.0;
            } else {
                double k = exp(-q * inv2s2);
                dist = sqrt(fmax(2.0 - 2.0 * k, 0.0));
                w = dist > 1e-12 ? k * 2.0 * inv2s2 / dist : 0.0;
            }
            e += dist;
            if (g) {
                w /= nr;
                for (int c = 0; c < f; c++) g[c] += w * ((double)si[c] - rj[c]);
            }
        }
        e /= nr;
        if (energy) energy[i] = (float)e;
        if (g) {
            for (int c = 0; c < f; c++) ds[(size_t)i * f + c] = (float)g[c];
            free(g);
        }
        total += e;
    }
    return total / ns;
}
