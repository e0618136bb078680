/*
 * kmeans.c: k-means++ seeding and Lloyd's iterations (sums in double, so the result does
 * not depend on the thread count: the assignment step is parallel over rows, the update
 * step serial).
 */
#include "distill/kmeans.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

static double sqdist(const float *a, const float *b, int d) {
    float s = 0;
    for (int j = 0; j < d; j++) {
        const float t = a[j] - b[j];
        s += t * t;
    }
    return s;
}

/* assign[i] = the nearest centre of row i (first index on ties), dist[i] its squared
 * distance; returns how many rows changed cluster. */
static long assign_rows(const float *x, int n, int d, const float *c, int k, int *assign, double *dist) {
    long changed = 0;
#pragma omp parallel for schedule(static) reduction(+ : changed) if ((long)n * k * d > 1000000)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        int best = 0;
        double bd = DBL_MAX;
        for (int q = 0; q < k; q++) {
            const double s = sqdist(xi, c + (size_t)q * d, d);
            if (s < bd) bd = s, best = q;
        }
        changed += assign[i] != best;
        assign[i] = best, dist[i] = bd;
    }
    return changed;
}

int dap_kmeans(const float *x, int n, int d, int k, int iters, uint64_t seed, uint64_t stream,
               float *centres, int *assign_out, int *iters_run) {
    if (k < 1 || d < 1 || k > n)
        return dap_error(DAP_ERR_ARG, "k-means: expected 1 <= k <= n rows and d >= 1 (got k %d, n %d, d %d)", k, n, d);
    dap_rng r;
    dap_rng_init(&r, seed, stream);
    double *dist = dap_malloc(sizeof(double) * (size_t)n), *sum = dap_malloc(sizeof(double) * (size_t)d);
    int *assign = dap_malloc(sizeof(int) * (size_t)n), *count = dap_malloc(sizeof(int) * (size_t)k);
    /* k-means++ */
    memcpy(centres, x + (size_t)dap_rng_below(&r, (uint64_t)n) * d, sizeof(float) * (size_t)d);
    for (int i = 0; i < n; i++) dist[i] = sqdist(x + (size_t)i * d, centres, d);
    for (int q = 1; q < k; q++) {
        double total = 0;
        for (int i = 0; i < n; i++) total += dist[i];
        int pick = 0; /* total 0: every row is a centre already; any row will do */
        if (total > 0) {
            double u = dap_rng_next_double(&r) * total;
            pick = -1;
            for (int i = 0; i < n && pick < 0; i++)
                if ((u -= dist[i]) < 0 && dist[i] > 0) pick = i;
            if (pick < 0) /* rounding at the end: the last row not yet chosen */
                for (int i = n - 1; i >= 0 && pick < 0; i--)
                    if (dist[i] > 0) pick = i;
        }
        float *cq = centres + (size_t)q * d;
        memcpy(cq, x + (size_t)pick * d, sizeof(float) * (size_t)d);
        for (int i = 0; i < n; i++) {
            const double s = sqdist(x + (size_t)i * d, cq, d);
            if (s < dist[i]) dist[i] = s;
        }
    }
    /* Lloyd */
    for (int i = 0; i < n; i++) assign[i] = -1;
    int it = 0;
    while (it < iters) {
        it++;
        if (assign_rows(x, n, d, centres, k, assign, dist) == 0 && it > 1) break;
        memset(count, 0, sizeof(int) * (size_t)k);
        for (int i = 0; i < n; i++) count[assign[i]]++;
        for (int q = 0; q < k; q++) {
            float *cq = centres + (size_t)q * d;
            if (count[q] == 0) { /* restart at the row farthest from its centre */
                int far = 0;
                for (int i = 1; i < n; i++)
                    if (dist[i] > dist[far]) far = i;
                memcpy(cq, x + (size_t)far * d, sizeof(float) * (size_t)d);
                dist[far] = 0;
                continue;
            }
            memset(sum, 0, sizeof(double) * (size_t)d);
            for (int i = 0; i < n; i++)
                if (assign[i] == q) {
                    const float *xi = x + (size_t)i * d;
                    for (int j = 0; j < d; j++) sum[j] += xi[j];
                }
            for (int j = 0; j < d; j++) cq[j] = (float)(sum[j] / count[q]);
        }
    }
    if (assign_out) {
        assign_rows(x, n, d, centres, k, assign, dist);
        memcpy(assign_out, assign, sizeof(int) * (size_t)n);
    }
    free(dist), free(sum), free(assign), free(count);
    if (iters_run) *iters_run = it;
    return DAP_OK;
}
