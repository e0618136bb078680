/*
 * scores.c: representativeness, diversity and Frechet distance over feature rows.
 * Pairwise distances go through one GEMM (|a|^2 + |b|^2 - 2 a.b); the Frechet distance
 * uses LAPACK's symmetric eigensolver (OpenBLAS ships LAPACK) in double precision.
 */
#include "eval/scores.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

/* LAPACK symmetric eigen-decomposition (column-major; symmetric, so layout is moot). */
extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                   double *w, double *work, const int *lwork, int *info);

/* d2 (na, nb) = squared distances between rows of a and b. */
static void sq_dists(float *d2, const float *a, int na, const float *b, int nb, int d) {
    float *na2 = dap_malloc(sizeof(float) * (size_t)na), *nb2 = dap_malloc(sizeof(float) * (size_t)nb);
    for (int i = 0; i < na; i++) {
        double s = 0;
        for (int k = 0; k < d; k++) s += (double)a[(size_t)i * d + k] * a[(size_t)i * d + k];
        na2[i] = (float)s;
    }
    for (int j = 0; j < nb; j++) {
        double s = 0;
        for (int k = 0; k < d; k++) s += (double)b[(size_t)j * d + k] * b[(size_t)j * d + k];
        nb2[j] = (float)s;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, na, nb, d, -2.0f, a, d, b, d, 0.0f, d2, nb);
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++) {
            float v = d2[(size_t)i * nb + j] + na2[i] + nb2[j];
            d2[(size_t)i * nb + j] = v > 0 ? v : 0;
        }
    free(na2);
    free(nb2);
}

static int cmp_float(const void *x, const void *y) {
    float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

double dap_score_knn(const float *syn, int ns, const float *real, int nr, int d, int k,
                     double *energy) {
    DAP_ASSERT(ns > 0 && nr > 0 && d > 0);
    if (k > nr) k = nr;
    if (k < 1) k = 1;
    float *d2 = dap_malloc(sizeof(float) * (size_t)ns * nr);
    sq_dists(d2, syn, ns, real, nr, d);
    double knn = 0, en = 0;
    for (int i = 0; i < ns; i++) {
        float *row = d2 + (size_t)i * nr;
        for (int j = 0; j < nr; j++) {
            row[j] = sqrtf(row[j]);
            en += row[j] / nr;
        }
        qsort(row, (size_t)nr, sizeof(float), cmp_float);
        double s = 0;
        for (int j = 0; j < k; j++) s += row[j];
        knn += s / k;
    }
    free(d2);
    if (energy) *energy = en / ns;
    return knn / ns;
}

void dap_score_diversity(const float *x, int n, int d, double *mean, double *min) {
    *mean = 0;
    *min = 0;
    if (n < 2) return;
    float *d2 = dap_malloc(sizeof(float) * (size_t)n * n);
    sq_dists(d2, x, n, x, n, d);
    double s = 0, mn = INFINITY;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double v = sqrt(d2[(size_t)i * n + j]);
            s += v;
            if (v < mn) mn = v;
        }
    free(d2);
    *mean = s / ((double)n * (n - 1) / 2);
    *min = mn;
}

/* mean (d) and unbiased covariance (d, d) of rows, in double */
static void moments(const float *x, int n, int d, double *mu, double *cov) {
    memset(mu, 0, sizeof(double) * d);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d; k++) mu[k] += x[(size_t)i * d + k];
    for (int k = 0; k < d; k++) mu[k] /= n;
    double *c = dap_malloc(sizeof(double) * (size_t)n * d);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d; k++) c[(size_t)i * d + k] = x[(size_t)i * d + k] - mu[k];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, n, 1.0 / (n - 1), c, d, c, d, 0.0, cov, d);
    free(c);
}

/* In place: a (d, d) symmetric -> eigenvectors (rows of the column-major result), w eigenvalues. */
static int sym_eig(double *a, double *w, int d) {
    int lwork = -1, info = 0;
    double q;
    dsyev_("V", "U", &d, a, &d, w, &q, &lwork, &info);
    if (info != 0) return dap_error(DAP_ERR_VALUE, "frechet: eigen workspace query failed (info %d)", info);
    lwork = (int)q;
    double *work = dap_malloc(sizeof(double) * (size_t)lwork);
    dsyev_("V", "U", &d, a, &d, w, work, &lwork, &info);
    free(work);
    if (info != 0) return dap_error(DAP_ERR_VALUE, "frechet: eigen solver did not converge (info %d)", info);
    return DAP_OK;
}

int dap_frechet_distance(const float *a, int na, const float *b, int nb, int d, double *out) {
    *out = NAN;
    if (na < 2 || nb < 2)
        return dap_error(DAP_ERR_ARG, "frechet distance needs at least 2 rows per set (got %d and %d)", na, nb);
    size_t dd = (size_t)d * d;
    double *mua = dap_malloc(sizeof(double) * d), *mub = dap_malloc(sizeof(double) * d);
    double *sa = dap_malloc(sizeof(double) * dd), *sb = dap_malloc(sizeof(double) * dd);
    double *t = dap_malloc(sizeof(double) * dd), *m = dap_malloc(sizeof(double) * dd);
    double *w = dap_malloc(sizeof(double) * d);
    moments(a, na, d, mua, sa);
    moments(b, nb, d, mub, sb);
    double tr = 0, mean2 = 0;
    for (int k = 0; k < d; k++) {
        tr += sa[(size_t)k * d + k] + sb[(size_t)k * d + k];
        mean2 += (mua[k] - mub[k]) * (mua[k] - mub[k]);
    }
    /* sqrt(Sa) = V diag(sqrt(max(w,0))) V^T; the eigenvectors come back as rows of `sa`
     * read row-major (column-major columns). */
    int rc = sym_eig(sa, w, d);
    if (rc == DAP_OK) {
        for (int i = 0; i < d; i++) {
            double s = sqrt(w[i] > 0 ? w[i] : 0);
            for (int k = 0; k < d; k++) t[(size_t)i * d + k] = sa[(size_t)i * d + k] * s; /* row i: s_i v_i */
        }
        /* root = V^T-rows form: root = sum_i s_i v_i v_i^T = sa^T * t */
        double *root = dap_malloc(sizeof(double) * dd);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, d, 1.0, sa, d, t, d, 0.0, root, d);
        /* m = root Sb root */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, root, d, sb, d, 0.0, t, d);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, t, d, root, d, 0.0, m, d);
        free(root);
        for (int i = 0; i < d; i++) /* symmetrise against round-off */
            for (int k = i + 1; k < d; k++) {
                double v = 0.5 * (m[(size_t)i * d + k] + m[(size_t)k * d + i]);
                m[(size_t)i * d + k] = m[(size_t)k * d + i] = v;
            }
        rc = sym_eig(m, w, d);
        if (rc == DAP_OK) {
            double trs = 0;
            for (int i = 0; i < d; i++) trs += sqrt(w[i] > 0 ? w[i] : 0);
            *out = mean2 + tr - 2 * trs;
            if (*out < 0 && *out > -1e-6 * (tr + 1)) *out = 0;
        }
    }
    free(mua), free(mub), free(sa), free(sb), free(t), free(m), free(w);
    return rc;
}
