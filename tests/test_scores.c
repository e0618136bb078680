/*
 * test_scores.c: Frechet distance against closed forms, kNN representativeness and
 * diversity against direct loops.
 */
#include <math.h>
#include <stdlib.h>

#include "core/core.h"
#include "eval/scores.h"
#include "test.h"

DAP_TEST(frechet_closed_forms) {
    int n = 4000, d = 3;
    float *a = dap_alloc_f32((size_t)n * d), *b = dap_alloc_f32((size_t)n * d);
    dap_rng r;
    dap_rng_init(&r, 1, 0);
    dap_rng_normal(&r, a, (size_t)n * d, 0, 1);
    dap_rng_normal(&r, b, (size_t)n * d, 0, 1);
    /* b ~ N(mu, diag(s^2)): FD to N(0, I) = |mu|^2 + sum (s - 1)^2 */
    const float mu[3] = {1, -2, 0.5f}, s[3] = {2, 1, 0.5f};
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d; k++) b[i * d + k] = mu[k] + s[k] * b[i * d + k];
    double fd, fd0;
    CHECK(dap_frechet_distance(a, n, b, n, d, &fd) == DAP_OK);
    double want = 1 + 4 + 0.25 + 1 + 0 + 0.25;
    printf("    FD %.4f, closed form %.4f\n", fd, want);
    CHECK_NEAR(fd, want, 0.25);
    CHECK(dap_frechet_distance(a, n, a, n, d, &fd0) == DAP_OK);
    printf("    FD(a, a) %.3g\n", fd0);
    CHECK(fabs(fd0) < 1e-6);
    CHECK(dap_frechet_distance(a, 1, b, n, d, &fd) == DAP_ERR_ARG);
    dap_free_aligned(a);
    dap_free_aligned(b);
}

DAP_TEST(knn_and_diversity) {
    int ns = 7, nr = 23, d = 5, k = 4;
    float *s = dap_alloc_f32((size_t)ns * d), *r = dap_alloc_f32((size_t)nr * d);
    dap_rng g;
    dap_rng_init(&g, 3, 0);
    dap_rng_normal(&g, s, (size_t)ns * d, 0, 1);
    dap_rng_normal(&g, r, (size_t)nr * d, 0, 1);
    double energy, knn = dap_score_knn(s, ns, r, nr, d, k, &energy);
    /* direct */
    double want = 0, want_e = 0;
    for (int i = 0; i < ns; i++) {
        double dist[23];
        for (int j = 0; j < nr; j++) {
            double q = 0;
            for (int c = 0; c < d; c++) q += (s[i * d + c] - r[j * d + c]) * (s[i * d + c] - r[j * d + c]);
            dist[j] = sqrt(q);
            want_e += dist[j] / nr / ns;
        }
        for (int a = 0; a < k; a++) /* selection of the k smallest */
            for (int b2 = a + 1; b2 < nr; b2++)
                if (dist[b2] < dist[a]) { double t = dist[a]; dist[a] = dist[b2]; dist[b2] = t; }
        for (int a = 0; a < k; a++) want += dist[a] / k / ns;
    }
    printf("    knn %.6f vs %.6f, energy %.6f vs %.6f\n", knn, want, energy, want_e);
    CHECK_NEAR(knn, want, 1e-4);
    CHECK_NEAR(energy, want_e, 1e-4);
    double mean, mn;
    dap_score_diversity(s, ns, d, &mean, &mn);
    double wm = 0, wmin = 1e9;
    for (int i = 0; i < ns; i++)
        for (int j = i + 1; j < ns; j++) {
            double q = 0;
            for (int c = 0; c < d; c++) q += (s[i * d + c] - s[j * d + c]) * (s[i * d + c] - s[j * d + c]);
            wm += sqrt(q) / (ns * (ns - 1) / 2);
            if (sqrt(q) < wmin) wmin = sqrt(q);
        }
    CHECK_NEAR(mean, wm, 1e-4);
    CHECK_NEAR(mn, wmin, 1e-4);
    dap_free_aligned(s);
    dap_free_aligned(r);
}
