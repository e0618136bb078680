/*
 * minimax.c: the representativeness and diversity terms of the Minimax diffusion
 * fine-tune (minimax.h) and their gradient: only the extreme pair of each class carries
 * one, d cos(u, v)/du for the batch sample of that pair, chained to the model output
 * through x0_hat = (x_t - sb eps) / sa. Serial loops in double: the same result on any
 * number of threads.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "diffusion/minimax.h"

void dap_minimax_init(dap_minimax *mm, int num_classes, int memory_size, size_t per, double lambda_pos,
                      double lambda_neg) {
    DAP_ASSERT(num_classes >= 1 && memory_size >= 1 && per >= 1);
    memset(mm, 0, sizeof *mm);
    mm->num_classes = num_classes;
    mm->memory_size = memory_size;
    mm->per = per;
    mm->lambda_pos = lambda_pos;
    mm->lambda_neg = lambda_neg;
    const size_t n = (size_t)num_classes * memory_size * per;
    mm->real = dap_alloc_f32(n);
    mm->gen = dap_alloc_f32(n);
    memset(mm->real, 0, n * sizeof(float));
    memset(mm->gen, 0, n * sizeof(float));
    mm->n_real = dap_calloc((size_t)num_classes, sizeof(int));
    mm->n_gen = dap_calloc((size_t)num_classes, sizeof(int));
}

void dap_minimax_free(dap_minimax *mm) {
    if (!mm) return;
    dap_free_aligned(mm->real);
    dap_free_aligned(mm->gen);
    free(mm->n_real);
    free(mm->n_gen);
    memset(mm, 0, sizeof *mm);
}

static void dot3(const float *u, const float *v, size_t n, double *uv, double *uu, double *vv) {
    double a = 0, b = 0, c = 0;
    for (size_t q = 0; q < n; q++) {
        a += (double)u[q] * v[q];
        b += (double)u[q] * u[q];
        c += (double)v[q] * v[q];
    }
    *uv = a, *uu = b, *vv = c;
}

double dap_cosine(const float *u, const float *v, size_t n) {
    double uv, uu, vv;
    dot3(u, v, n, &uv, &uu, &vv);
    return uu > 0 && vv > 0 ? uv / sqrt(uu * vv) : 0.0;
}

void dap_cosine_grad_add(float *du, const float *u, const float *v, size_t n, double scale) {
    double uv, uu, vv;
    dot3(u, v, n, &uv, &uu, &vv);
    if (!(uu > 0 && vv > 0)) return;
    const double nu = sqrt(uu), nv = sqrt(vv), c = uv / (nu * nv);
    const double kv = scale / (nu * nv), ku = -scale * c / uu;
    for (size_t q = 0; q < n; q++) du[q] += (float)(kv * v[q] + ku * u[q]);
}

double dap_cosine_extreme(const float *a, int na, const float *b, int nb, size_t n, int want_max, int *ia,
                          int *ib) {
    DAP_ASSERT(na >= 1 && nb >= 1);
    double best = 0;
    int bi = -1, bj = -1;
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++) {
            const double c = dap_cosine(a + (size_t)i * n, b + (size_t)j * n, n);
            if (bi < 0 || (want_max ? c > best : c < best)) best = c, bi = i, bj = j;
        }
    *ia = bi, *ib = bj;
    return best;
}

/* The batch rows of class k into rows (at most B), in batch order; returns their count. */
static int class_rows(const int *y, int B, int k, int *rows) {
    int n = 0;
    for (int b = 0; b < B; b++)
        if (y[b] == k) rows[n++] = b;
    return n;
}

void dap_minimax_terms(const dap_minimax *mm, const float *x0_hat, const int *y, int B, float *dx0, double *pos,
                       double *neg) {
    const int K = mm->num_classes, M = mm->memory_size;
    const size_t per = mm->per;
    if (dx0) memset(dx0, 0, (size_t)B * per * sizeof(float));
    *pos = *neg = 0.0;
    int nc = 0; /* distinct classes in the batch */
    for (int k = 0; k < K; k++) {
        int present = 0;
        for (int b = 0; b < B && !present; b++) present = y[b] == k;
        nc += present;
    }
    if (nc == 0) return;
    int *rows = dap_malloc((size_t)B * sizeof(int));
    float *xs = dap_alloc_f32((size_t)B * per); /* the class's samples, contiguous */
    for (int k = 0; k < K; k++) {
        const int n = class_rows(y, B, k, rows);
        if (n == 0 || mm->n_gen[k] == 0 || mm->n_real[k] == 0) continue;
        for (int i = 0; i < n; i++) memcpy(xs + (size_t)i * per, x0_hat + (size_t)rows[i] * per, per * sizeof(float));
        const float *real = mm->real + (size_t)k * M * per, *gen = mm->gen + (size_t)k * M * per;
        int pi, pj, ni, nj;
        const double cmin = dap_cosine_extreme(xs, n, real, mm->n_real[k], per, 0, &pi, &pj);
        const double cmax = dap_cosine_extreme(xs, n, gen, mm->n_gen[k], per, 1, &ni, &nj);
        const double wp = mm->lambda_pos / nc, wn = mm->lambda_neg / nc;
        *pos += wp * (1.0 - cmin);
        *neg += wn * cmax;
        if (dx0) {
            dap_cosine_grad_add(dx0 + (size_t)rows[pi] * per, xs + (size_t)pi * per, real + (size_t)pj * per, per, -wp);
            dap_cosine_grad_add(dx0 + (size_t)rows[ni] * per, xs + (size_t)ni * per, gen + (size_t)nj * per, per, wn);
        }
    }
    dap_free_aligned(xs);
    free(rows);
}

/* Appends row src to a FIFO memory of at most M rows holding *n. */
static void fifo_push(float *mem, int *n, int M, size_t per, const float *src) {
    if (*n == M) {
        memmove(mem, mem + per, (size_t)(M - 1) * per * sizeof(float));
        (*n)--;
    }
    memcpy(mem + (size_t)(*n) * per, src, per * sizeof(float));
    (*n)++;
}

void dap_minimax_push(dap_minimax *mm, const float *x0, const float *x0_hat, const int *y, int B) {
    const int M = mm->memory_size;
    const size_t per = mm->per;
    for (int b = 0; b < B; b++) {
        const int k = y[b];
        DAP_ASSERT(k >= 0 && k < mm->num_classes);
        fifo_push(mm->real + (size_t)k * M * per, &mm->n_real[k], M, per, x0 + (size_t)b * per);
        fifo_push(mm->gen + (size_t)k * M * per, &mm->n_gen[k], M, per, x0_hat + (size_t)b * per);
    }
}

double dap_minimax_eps_terms(const dap_minimax *mm, const float *eps, size_t eps_stride, const float *x_t,
                             const double *sa, const double *sb, const int *y, int B, float *x0_hat, float *dx0,
                             float *deps, double *pos, double *neg) {
    const size_t per = mm->per;
    DAP_ASSERT(eps_stride >= per);
    for (int b = 0; b < B; b++) {
        const float *e = eps + (size_t)b * eps_stride, *xt = x_t + (size_t)b * per;
        float *x0 = x0_hat + (size_t)b * per;
        for (size_t q = 0; q < per; q++) x0[q] = (float)((xt[q] - sb[b] * e[q]) / sa[b]);
    }
    dap_minimax_terms(mm, x0_hat, y, B, deps ? dx0 : NULL, pos, neg);
    if (deps)
        for (int b = 0; b < B; b++) {
            const float *g = dx0 + (size_t)b * per;
            float *d = deps + (size_t)b * eps_stride;
            const double k = -sb[b] / sa[b];
            for (size_t q = 0; q < per; q++) d[q] += (float)(k * g[q]);
        }
    return *pos + *neg;
}
