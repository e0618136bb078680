/*
 * test_embed.c: dap embed's pieces: PCA against a known covariance (axes, variances, sign
 * convention, projection), the Gram-matrix path against power iteration on the covariance,
 * rank deficiency and refusals; coverage and spread on hand-made points; the scatter grid's
 * size, colours and shared axes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "eval/embed.h"
#include "io/io.h"
#include "test.h"

static double dot(const double *a, const double *b, int d) {
    double s = 0;
    for (int t = 0; t < d; t++) s += a[t] * b[t];
    return s;
}

DAP_TEST(embed_pca_known_covariance) {
    /* x = m + 3 z1 u1 + 2 z2 u2 + 0.5 z3 u3, z ~ N(0, I): axes u1, u2 with variances 9, 4. By
     * the sign convention (largest-magnitude component positive) the first axis is -u1 (u1's
     * largest is -0.8) and the second u2 (its largest is +0.8). */
    const int n = 20000, d = 3;
    const double u1[3] = {0.36, 0.48, -0.8}, u2[3] = {0.8, -0.6, 0}, u3[3] = {-0.48, -0.64, -0.6};
    const double m[3] = {5, -3, 1}, want0[3] = {-0.36, -0.48, 0.8};
    float *x = dap_alloc_f32((size_t)n * d), z[3];
    dap_rng g;
    dap_rng_init(&g, 7, 0);
    for (int i = 0; i < n; i++) {
        dap_rng_normal(&g, z, 3, 0, 1);
        for (int t = 0; t < d; t++) x[i * d + t] = (float)(m[t] + 3 * z[0] * u1[t] + 2 * z[1] * u2[t] + 0.5 * z[2] * u3[t]);
    }
    dap_pca p;
    CHECK(dap_pca_fit(&p, x, n, d, 2) == DAP_OK);
    printf("    axis 0 . (-u1) %.6f, axis 1 . u2 %.6f, var %.3f %.3f (want 9, 4), total %.3f (want 13.25)\n",
           dot(p.axes, want0, 3), dot(p.axes + 3, u2, 3), p.var[0], p.var[1], p.total);
    CHECK(dot(p.axes, want0, 3) > 0.999);  /* recovered, with the fixed sign */
    CHECK(dot(p.axes + 3, u2, 3) > 0.999);
    CHECK_NEAR(dot(p.axes, p.axes + 3, 3), 0, 1e-12);
    CHECK_NEAR(dot(p.axes, p.axes, 3), 1, 1e-12);
    CHECK_NEAR(p.var[0], 9, 0.3);
    CHECK_NEAR(p.var[1], 4, 0.15);
    CHECK_NEAR(p.total, 13.25, 0.4);
    for (int t = 0; t < d; t++) CHECK_NEAR(p.mean[t], m[t], 0.05);
    /* projection: the point mean + 3 a0 - 2 a1 lands on (3, -2); the projected data have
     * mean 0 and variance var[j] along axis j */
    float q[3], out[2];
    for (int t = 0; t < d; t++) q[t] = (float)(p.mean[t] + 3 * p.axes[t] - 2 * p.axes[3 + t]);
    dap_pca_project(&p, q, 1, out);
    printf("    projection of mean + 3 a0 - 2 a1: (%.5f, %.5f)\n", out[0], out[1]);
    CHECK_NEAR(out[0], 3, 1e-4);
    CHECK_NEAR(out[1], -2, 1e-4);
    float *pr = dap_alloc_f32((size_t)n * 2);
    dap_pca_project(&p, x, n, pr);
    double s0 = 0, s1 = 0, v0 = 0;
    for (int i = 0; i < n; i++) s0 += pr[2 * i], s1 += pr[2 * i + 1], v0 += (double)pr[2 * i] * pr[2 * i];
    CHECK_NEAR(s0 / n, 0, 1e-4);
    CHECK_NEAR(s1 / n, 0, 1e-4);
    CHECK_NEAR(v0 / (n - 1), p.var[0], 1e-3 * p.var[0]);
    /* deterministic: the same rows give the same axes, to the bit */
    dap_pca p2;
    CHECK(dap_pca_fit(&p2, x, n, d, 2) == DAP_OK);
    CHECK(!memcmp(p.axes, p2.axes, sizeof(double) * 6));
    dap_pca_free(&p2);
    /* the coordinates reversed: the solver sees another matrix, the convention still gives
     * the reversed axes with the same signs (largest-magnitude component positive) */
    float *xr = dap_alloc_f32((size_t)n * d);
    for (int i = 0; i < n; i++)
        for (int t = 0; t < d; t++) xr[i * d + t] = x[i * d + (d - 1 - t)];
    CHECK(dap_pca_fit(&p2, xr, n, d, 2) == DAP_OK);
    for (int j = 0; j < 2; j++)
        for (int t = 0; t < d; t++) CHECK_NEAR(p2.axes[j * d + t], p.axes[j * d + (d - 1 - t)], 1e-9);
    dap_pca_free(&p2);
    dap_free_aligned(xr);
    dap_pca_free(&p);
    dap_free_aligned(x), dap_free_aligned(pr);
}

DAP_TEST(embed_pca_gram_path) {
    /* fewer rows than features (n < d): the Gram-matrix path, checked against power iteration
     * on the covariance built here */
    const int n = 15, d = 40;
    float *x = dap_alloc_f32((size_t)n * d);
    dap_rng g;
    dap_rng_init(&g, 11, 0);
    dap_rng_normal(&g, x, (size_t)n * d, 0, 0.1f);
    for (int i = 0; i < n; i++) { /* two strong directions over the noise */
        float a[2];
        dap_rng_normal(&g, a, 2, 0, 1);
        for (int t = 0; t < d; t++) x[i * d + t] += 3 * a[0] * (float)sin(0.3 * t + 1) + 1.5f * a[1] * (float)cos(0.7 * t);
    }
    double *c = dap_calloc((size_t)d * d, sizeof(double)), mu[40] = {0};
    for (int i = 0; i < n; i++)
        for (int t = 0; t < d; t++) mu[t] += x[i * d + t] / (double)n;
    for (int i = 0; i < n; i++)
        for (int s = 0; s < d; s++)
            for (int t = 0; t < d; t++) c[s * d + t] += (x[i * d + s] - mu[s]) * (x[i * d + t] - mu[t]) / (n - 1);
    dap_pca p;
    CHECK(dap_pca_fit(&p, x, n, d, 2) == DAP_OK);
    double v[2][40];
    for (int j = 0; j < 2; j++) {
        for (int t = 0; t < d; t++) v[j][t] = 1.0 + 0.01 * t;
        double lam = 0;
        for (int it = 0; it < 3000; it++) {
            double w[40] = {0};
            for (int s = 0; s < d; s++)
                for (int t = 0; t < d; t++) w[s] += c[s * d + t] * v[j][t];
            for (int q = 0; q < j; q++) { /* deflate */
                double pr = dot(w, v[q], d);
                for (int t = 0; t < d; t++) w[t] -= pr * v[q][t];
            }
            lam = sqrt(dot(w, w, d));
            for (int t = 0; t < d; t++) v[j][t] = w[t] / lam;
        }
        double al = fabs(dot(v[j], p.axes + (size_t)j * d, d));
        printf("    axis %d: |. power iteration| %.9f, variance %.6f vs %.6f\n", j, al, p.var[j], lam);
        CHECK(al > 1 - 1e-7);
        CHECK_NEAR(p.var[j], lam, 1e-6 * lam);
    }
    for (int j = 0; j < 2; j++) { /* the sign convention holds on this path too */
        int big = 0;
        for (int t = 1; t < d; t++)
            if (fabs(p.axes[j * d + t]) > fabs(p.axes[j * d + big])) big = t;
        CHECK(p.axes[j * d + big] > 0);
    }
    CHECK_NEAR(dot(p.axes, p.axes + d, d), 0, 1e-9);
    dap_pca_free(&p);
    free(c);
    dap_free_aligned(x);
}

DAP_TEST(embed_pca_rank_and_refusals) {
    /* two points in 3-D: one axis along their difference (1, 2, 0) / sqrt 5, the second a unit
     * completion with zero variance: e_0 made orthogonal to it, (2, -1, 0) / sqrt 5 */
    const float two[6] = {1, 1, 1, 2, 3, 1};
    dap_pca p;
    CHECK(dap_pca_fit(&p, two, 2, 3, 2) == DAP_OK);
    printf("    axis 0 (%.3f %.3f %.3f) var %.3f, axis 1 (%.3f %.3f %.3f) var %.3f\n", p.axes[0], p.axes[1], p.axes[2],
           p.var[0], p.axes[3], p.axes[4], p.axes[5], p.var[1]);
    const double a0[3] = {1 / sqrt(5), 2 / sqrt(5), 0}, a1[3] = {2 / sqrt(5), -1 / sqrt(5), 0};
    for (int t = 0; t < 3; t++) {
        CHECK_NEAR(p.axes[t], a0[t], 1e-12);
        CHECK_NEAR(p.axes[3 + t], a1[t], 1e-12);
    }
    CHECK_NEAR(p.var[0], 2.5, 1e-9); /* 2 (sqrt(5) / 2)^2 / (2 - 1) */
    CHECK_NEAR(p.var[1], 0, 0);
    CHECK_NEAR(dot(p.axes, p.axes + 3, 3), 0, 1e-12);
    CHECK_NEAR(dot(p.axes + 3, p.axes + 3, 3), 1, 1e-12);
    dap_pca_free(&p);
    const float same[6] = {2, 2, 2, 2, 2, 2};
    CHECK(dap_pca_fit(&p, same, 2, 3, 2) == DAP_ERR_VALUE);
    CHECK(strstr(dap_last_error(), "no variance") != NULL);
    CHECK(dap_pca_fit(&p, two, 1, 3, 2) == DAP_ERR_VALUE);
    CHECK(dap_pca_fit(&p, two, 2, 3, 4) == DAP_ERR_VALUE);
    CHECK(p.axes == NULL);
}

DAP_TEST(embed_coverage_and_spread) {
    /* real points at 0 and 10 on a line, one synthetic at 1: each real point's nearest
     * synthetic is 1 and 9 away, coverage 5 (the reverse direction would give 1) */
    const float real[4] = {0, 0, 10, 0}, syn[2] = {1, 0};
    double cov = dap_embed_coverage(real, 2, syn, 1, 2);
    printf("    coverage %.6f (want 5), spread of a 3-4-5 triangle %.6f (want 4)\n", cov,
           dap_embed_spread((const float[]){0, 0, 3, 0, 0, 4}, 3, 2));
    CHECK_NEAR(cov, 5, 1e-5);
    /* a second synthetic point next to the far real one: coverage (1 + 0.5) / 2 */
    const float syn2[4] = {1, 0, 10.5f, 0};
    CHECK_NEAR(dap_embed_coverage(real, 2, syn2, 2, 2), 0.75, 1e-5);
    CHECK_NEAR(dap_embed_spread((const float[]){0, 0, 3, 0, 0, 4}, 3, 2), 4, 1e-5);
    CHECK_NEAR(dap_embed_spread(syn, 1, 2), 0, 0);
}

static int has_colour(const dap_image8 *im, int x0, int y0, int size, const unsigned char rgb[3], int *fx, int *fy) {
    for (int y = y0; y < y0 + size; y++)
        for (int x = x0; x < x0 + size; x++)
            if (!memcmp(im->px + ((size_t)y * im->w + x) * 3, rgb, 3)) {
                if (fx) *fx = x - x0, *fy = y - y0;
                return 1;
            }
    return 0;
}

DAP_TEST(embed_plot_layout) {
    /* 2 rows x 3 columns of 64-px panels; row 0: real points around the origin, the same set
     * point (2, 2) in every column (same axes: same place in every panel); row 1: a point up
     * at (0, 5) and one down at (0, -5). Labels: class names left (the longest, 11 characters,
     * sets the margin: (6 * 11 - 1) + gap), set names above (7 + gap) */
    const int P = 64, G = DAP_EMBED_GAP, L = 6 * 11 - 1 + G, T = 7 + G;
    const float r0[8] = {-1, -1, 1, 1, -1, 1, 1, -1}, r1[4] = {0, -5, 0, 5};
    const float s0[2] = {2, 2}, up[2] = {0, 5}, down[2] = {0, -5};
    const float *real[2] = {r0, r1}, *pts[6] = {s0, s0, s0, up, down, up};
    const int nreal[2] = {4, 2}, npts[6] = {1, 1, 1, 1, 1, 1};
    const char *rows[2] = {"T-shirt/top", "Bag"}, *cols[3] = {"random", "vanilla", "-"};
    int w, h;
    dap_embed_plot_size(2, 3, P, NULL, NULL, &w, &h);
    CHECK(w == 3 * P + 4 * G && h == 2 * P + 3 * G);
    dap_embed_plot_size(2, 3, P, rows, cols, &w, &h);
    CHECK(w == L + 3 * P + 4 * G && h == T + 2 * P + 3 * G);
    const char *path = dap_test_path("embed.png");
    CHECK(dap_embed_plot(path, 2, 3, P, rows, cols, real, nreal, pts, npts) == DAP_OK);
    dap_image8 im;
    CHECK(dap_image_read(path, &im) == DAP_OK);
    printf("    %dx%d x%d (want %dx%d x3)\n", im.w, im.h, im.c, w, h);
    CHECK(im.w == w && im.h == h && im.c == 3);
    if (im.w != w || im.h != h || im.c != 3) {
        dap_image8_free(&im);
        return;
    }
    unsigned char col[3][3], grey[3] = {185, 185, 185}, ink[3] = {60, 60, 60};
    for (int c = 0; c < 3; c++) dap_embed_colour(c, col[c]);
    int fx[3] = {-1, -1, -1}, fy[3] = {-1, -1, -1};
    for (int c = 0; c < 3; c++) { /* each column's points in its own colour only */
        const int x0 = L + G + c * (P + G), y0 = T + G;
        CHECK(has_colour(&im, x0, y0, P, col[c], &fx[c], &fy[c]));
        for (int o = 0; o < 3; o++)
            if (o != c) CHECK(!has_colour(&im, x0, y0, P, col[o], NULL, NULL));
        CHECK(has_colour(&im, x0, y0, P, grey, NULL, NULL));
    }
    printf("    the set point (2, 2) at (%d, %d) (%d, %d) (%d, %d) in its panels\n", fx[0], fy[0], fx[1], fy[1], fx[2],
           fy[2]);
    CHECK(fx[0] == fx[1] && fx[1] == fx[2] && fy[0] == fy[1] && fy[1] == fy[2]);
    CHECK(fx[0] > P / 2 && fy[0] < P / 2); /* right of and above the origin: y up */
    int ux = -1, uy = -1, dx = -1, dy = -1;
    const int y1 = T + G + P + G;
    CHECK(has_colour(&im, L + G, y1, P, col[0], &ux, &uy));         /* (0, 5) in column 0 */
    CHECK(has_colour(&im, L + G + P + G, y1, P, col[1], &dx, &dy)); /* (0, -5) in column 1 */
    printf("    up (0, 5) first drawn row %d, down (0, -5) first drawn row %d\n", uy, dy);
    CHECK(uy < P / 4 && dy > P / 2);
    /* the labels: the set names above their columns in their colours; "-" is the five pixels
     * of the glyph's middle row; the class names in dark grey left of their rows */
    int nlab[3] = {0, 0, 0}, minus_rows_ok = 1;
    for (int y = 0; y < T; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                if (!memcmp(im.px + ((size_t)y * w + x) * 3, col[c], 3)) {
                    nlab[c]++;
                    if (c == 2 && (y != G + 3 || x < L + G + 2 * (P + G) || x >= L + G + 2 * (P + G) + 5)) minus_rows_ok = 0;
                    if (c < 2 && (x < L + G + c * (P + G) || x >= L + G + c * (P + G) + P)) minus_rows_ok = 0;
                }
    printf("    label pixels per column %d %d %d\n", nlab[0], nlab[1], nlab[2]);
    CHECK(nlab[0] > 20 && nlab[1] > 20 && nlab[2] == 5 && minus_rows_ok);
    CHECK(has_colour(&im, G, T + G, L - G, ink, NULL, NULL));         /* row 0's name */
    CHECK(has_colour(&im, G, T + G + P + G, L - G, ink, NULL, NULL)); /* row 1's */
    dap_image8_free(&im);
}
