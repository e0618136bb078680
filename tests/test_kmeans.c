/*
 * test_kmeans.c: k-means (the --init kmeans start images): well-separated blobs are
 * recovered exactly (centres = the blob means, one cluster per blob), the result is
 * deterministic for a seed and independent of the thread count, k = n gives the rows
 * themselves, duplicate rows leave no cluster empty, and bad shapes are refused.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "distill/kmeans.h"
#include "test.h"

DAP_TEST(kmeans_recovers_blobs) {
    enum { K = 4, PER = 50, N = K * PER, D = 8 };
    float *x = dap_alloc_f32((size_t)N * D), c[K * D], c2[K * D];
    double mean[K][D] = {{0}};
    dap_rng r;
    dap_rng_init(&r, 1, 0);
    for (int i = 0; i < N; i++) {
        const int b = i % K;
        dap_rng_normal(&r, x + (size_t)i * D, D, 0.0f, 0.1f);
        for (int j = 0; j < D; j++) {
            x[(size_t)i * D + j] += j == b ? 10.0f * b : 0.0f; /* blob b sits at 10 b e_b */
            mean[b][j] += x[(size_t)i * D + j] / PER;
        }
    }
    int assign[N], it = 0;
    CHECK(dap_kmeans(x, N, D, K, 100, 7, 3, c, assign, &it) == DAP_OK);
    CHECK(it >= 1 && it < 100);
    /* each centre is one blob's mean, each blob one cluster */
    int seen[K] = {0};
    for (int b = 0; b < K; b++) {
        const int cl = assign[b]; /* row b belongs to blob b */
        seen[cl]++;
        double err = 0;
        for (int j = 0; j < D; j++) err = fmax(err, fabs(c[cl * D + j] - mean[b][j]));
        CHECK_MSG(err < 1e-4, "blob %d: centre %d off its mean by %g", b, cl, err);
        for (int i = b; i < N; i += K) CHECK(assign[i] == cl);
    }
    for (int q = 0; q < K; q++) CHECK(seen[q] == 1);
    /* deterministic, and the same with one thread */
    dap_set_threads(1);
    CHECK(dap_kmeans(x, N, D, K, 100, 7, 3, c2, NULL, NULL) == DAP_OK);
    dap_set_threads(0);
    CHECK(memcmp(c, c2, sizeof c) == 0);
    /* k = n: every row is a centre */
    float *cn = dap_alloc_f32((size_t)N * D);
    int *an = dap_malloc(sizeof(int) * N);
    CHECK(dap_kmeans(x, N, D, N, 10, 1, 0, cn, an, NULL) == DAP_OK);
    for (int i = 0; i < N; i++)
        CHECK(memcmp(cn + (size_t)an[i] * D, x + (size_t)i * D, sizeof(float) * D) == 0);
    /* all rows equal: k centres, none left NaN */
    for (int i = 0; i < N * D; i++) x[i] = 1.0f;
    CHECK(dap_kmeans(x, N, D, K, 10, 1, 0, c, NULL, NULL) == DAP_OK);
    for (int i = 0; i < K * D; i++) CHECK(c[i] == 1.0f);
    /* bad shapes */
    CHECK(dap_kmeans(x, N, D, N + 1, 10, 1, 0, cn, NULL, NULL) == DAP_ERR_ARG);
    CHECK(strstr(dap_last_error(), "k-means") != NULL);
    CHECK(dap_kmeans(x, N, D, 0, 10, 1, 0, cn, NULL, NULL) == DAP_ERR_ARG);
    CHECK(dap_kmeans(x, N, 0, K, 10, 1, 0, cn, NULL, NULL) == DAP_ERR_ARG);
    dap_free_aligned(x), dap_free_aligned(cn);
    free(an);
}
