/*
 * embed.c: PCA of feature rows (LAPACK's dsyev on the smaller of the covariance and the Gram
 * matrix), coverage and spread of a set, and the scatter-grid PNG of dap embed.
 */
#include "eval/embed.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "eval/scores.h"
#include "io/io.h"

extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                   double *w, double *work, const int *lwork, int *info);

/* Gram-Schmidt of v (d) against the first j rows of axes, twice; returns the norm left. */
static double orthogonalise(double *v, const double *axes, int j, int d) {
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < j; i++) {
            double dot = 0;
            for (int t = 0; t < d; t++) dot += v[t] * axes[(size_t)i * d + t];
            for (int t = 0; t < d; t++) v[t] -= dot * axes[(size_t)i * d + t];
        }
    double s = 0;
    for (int t = 0; t < d; t++) s += v[t] * v[t];
    return sqrt(s);
}

int dap_pca_fit(dap_pca *p, const float *x, int n, int d, int k) {
    memset(p, 0, sizeof *p);
    if (n < 2 || d < 1 || k < 1 || k > d)
        return dap_error(DAP_ERR_VALUE,
                         "PCA of %d rows of %d features into %d components: expected at least 2 rows and "
                         "1..%d components",
                         n, d, k, d);
    double *mean = dap_calloc((size_t)d, sizeof(double)), *xc = dap_malloc(sizeof(double) * (size_t)n * d);
    for (int i = 0; i < n; i++)
        for (int t = 0; t < d; t++) mean[t] += x[(size_t)i * d + t];
    for (int t = 0; t < d; t++) mean[t] /= n;
    double total = 0;
    for (int i = 0; i < n; i++)
        for (int t = 0; t < d; t++) {
            double v = x[(size_t)i * d + t] - mean[t];
            xc[(size_t)i * d + t] = v;
            total += v * v;
        }
    total /= n - 1;
    if (!(total > 0) || !isfinite(total)) {
        free(mean), free(xc);
        return dap_error(DAP_ERR_VALUE, "PCA of %d rows of %d features: %s", n, d,
                         isfinite(total) ? "the rows are all equal (no variance)" : "a feature is not finite");
    }
    /* eigenpairs of the smaller matrix: covariance Xc^T Xc / (n-1) (d, d), or the Gram matrix
     * Xc Xc^T / (n-1) (n, n), whose eigenvector u gives the axis Xc^T u / |Xc^T u| */
    const int gram = n < d, m = gram ? n : d;
    double *a = dap_malloc(sizeof(double) * (size_t)m * m), *w = dap_malloc(sizeof(double) * (size_t)m);
    if (gram)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, 1.0 / (n - 1), xc, d, xc, d, 0.0, a, n);
    else
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, n, 1.0 / (n - 1), xc, d, xc, d, 0.0, a, d);
    int lwork = -1, info = 0;
    double wq;
    dsyev_("V", "U", &m, a, &m, w, &wq, &lwork, &info);
    lwork = info == 0 ? (int)wq : 3 * m;
    double *work = dap_malloc(sizeof(double) * (size_t)(lwork > 1 ? lwork : 1));
    dsyev_("V", "U", &m, a, &m, w, work, &lwork, &info);
    free(work);
    if (info != 0) {
        free(mean), free(xc), free(a), free(w);
        return dap_error(DAP_ERR_VALUE, "PCA of %d rows of %d features: the eigensolver failed (dsyev info %d)", n, d,
                         info);
    }
    p->d = d, p->k = k, p->mean = mean, p->total = total;
    p->axes = dap_calloc((size_t)k * d, sizeof(double));
    p->var = dap_calloc((size_t)k, sizeof(double));
    const double tiny = 1e-12 * w[m - 1]; /* eigenvalues ascending: w[m-1] is the largest */
    int next_e = 0; /* the next unit vector e_t tried by the orthonormal completion */
    for (int j = 0; j < k; j++) {
        double *ax = p->axes + (size_t)j * d;
        const int col = m - 1 - j;
        const double lam = col >= 0 ? w[col] : 0;
        double nrm = 0;
        if (col >= 0 && lam > tiny) {
            const double *u = a + (size_t)col * m; /* column-major: column col is contiguous */
            if (gram) {
                for (int i = 0; i < n; i++)
                    for (int t = 0; t < d; t++) ax[t] += xc[(size_t)i * d + t] * u[i];
            } else {
                memcpy(ax, u, sizeof(double) * (size_t)d);
            }
            nrm = orthogonalise(ax, p->axes, j, d);
        }
        if (nrm > 0) {
            for (int t = 0; t < d; t++) ax[t] /= nrm;
            p->var[j] = lam;
        } else { /* beyond the rank: the first unit vector not in the span of the axes so far */
            for (; next_e < d; next_e++) {
                memset(ax, 0, sizeof(double) * (size_t)d);
                ax[next_e] = 1;
                nrm = orthogonalise(ax, p->axes, j, d);
                if (nrm > 0.5) break;
            }
            DAP_ASSERT(next_e < d); /* k <= d: a completion always exists */
            next_e++;
            for (int t = 0; t < d; t++) ax[t] /= nrm;
            p->var[j] = 0;
        }
        int big = 0; /* sign: the largest-magnitude component positive */
        for (int t = 1; t < d; t++)
            if (fabs(ax[t]) > fabs(ax[big])) big = t;
        if (ax[big] < 0)
            for (int t = 0; t < d; t++) ax[t] = -ax[t];
    }
    free(xc), free(a), free(w);
    return DAP_OK;
}

void dap_pca_project(const dap_pca *p, const float *x, int n, float *out) {
    const int d = p->d;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < p->k; j++) {
            double s = 0;
            for (int t = 0; t < d; t++) s += (x[(size_t)i * d + t] - p->mean[t]) * p->axes[(size_t)j * d + t];
            out[(size_t)i * p->k + j] = (float)s;
        }
}

void dap_pca_free(dap_pca *p) {
    free(p->mean), free(p->axes), free(p->var);
    memset(p, 0, sizeof *p);
}

double dap_embed_coverage(const float *real, int nr, const float *syn, int ns, int d) {
    /* dap_score_knn averages over its first rows the distance to the nearest of its second */
    return dap_score_knn(real, nr, syn, ns, d, 1, NULL);
}

double dap_embed_spread(const float *x, int n, int d) {
    double mean, min;
    dap_score_diversity(x, n, d, &mean, &min);
    return mean;
}

/* ---- the scatter grid ------------------------------------------------------------------ */

static const unsigned char palette[10][3] = {
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
    {140, 86, 75},  {227, 119, 194}, {40, 40, 40},  {188, 189, 34}, {23, 190, 207},
};

void dap_embed_colour(int c, unsigned char rgb[3]) { memcpy(rgb, palette[((c % 10) + 10) % 10], 3); }

/* 5x7 glyphs, one byte per row, bit 4 the leftmost pixel */
static const struct { char ch; unsigned char rows[7]; } font[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11}}, {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}}, {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}}, {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}}, {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}}, {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}}, {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}}, {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}}, {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'/', {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10}}, {' ', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}},
};
static const unsigned char glyph_unknown[7] = {0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F};
#define LABEL_MAX 16 /* characters of a row label counted for the left margin */

static const unsigned char *glyph(char c) {
    if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
    for (size_t i = 0; i < sizeof font / sizeof font[0]; i++)
        if (font[i].ch == c) return font[i].rows;
    return glyph_unknown;
}

static int font_scale(int panel) { return panel >= 240 ? 2 : 1; }

void dap_embed_plot_size(int rows, int cols, int panel, const char *const *row_labels,
                         const char *const *col_labels, int *width, int *height) {
    const int s = font_scale(panel), gap = DAP_EMBED_GAP;
    int n = 0;
    for (int r = 0; row_labels && r < rows; r++) {
        int len = (int)strlen(row_labels[r]);
        n = len > n ? len : n;
    }
    n = n > LABEL_MAX ? LABEL_MAX : n;
    const int left = row_labels && n > 0 ? (6 * n - 1) * s + gap : 0, top = col_labels ? 7 * s + gap : 0;
    *width = left + cols * panel + (cols + 1) * gap;
    *height = top + rows * panel + (rows + 1) * gap;
}

typedef struct canvas {
    unsigned char *px;
    int h, w;
    int x0, y0, size; /* the current panel: drawing is clipped to it */
} canvas;

static void put(canvas *cv, int x, int y, const unsigned char rgb[3]) {
    if (x < cv->x0 || y < cv->y0 || x >= cv->x0 + cv->size || y >= cv->y0 + cv->size || x >= cv->w || y >= cv->h)
        return;
    memcpy(cv->px + ((size_t)y * cv->w + x) * 3, rgb, 3);
}

static void disc(canvas *cv, int cx, int cy, int r, const unsigned char rgb[3]) {
    for (int dy = -r; dy <= r; dy++)
        for (int dx = -r; dx <= r; dx++)
            if (dx * dx + dy * dy <= r * r + r) put(cv, cx + dx, cy + dy, rgb);
}

/* text at (x, y) (its top left), at most max_w pixels wide, clipped to the canvas */
static void text(canvas *cv, int x, int y, int max_w, int s, const char *str, const unsigned char rgb[3]) {
    cv->x0 = 0, cv->y0 = 0, cv->size = cv->w > cv->h ? cv->w : cv->h;
    for (int i = 0; str[i] && (i + 1) * 6 * s - s <= max_w; i++) {
        const unsigned char *g = glyph(str[i]);
        for (int gy = 0; gy < 7 * s; gy++)
            for (int gx = 0; gx < 5 * s; gx++)
                if (g[gy / s] & (0x10 >> (gx / s))) put(cv, x + i * 6 * s + gx, y + gy, rgb);
    }
}

int dap_embed_plot(const char *path, int rows, int cols, int panel, const char *const *row_labels,
                   const char *const *col_labels, const float *const *real, const int *nreal,
                   const float *const *pts, const int *npts) {
    DAP_ASSERT(rows > 0 && cols > 0 && panel >= 16 && panel <= 4096 && rows <= 4096 && cols <= 4096);
    const int gap = DAP_EMBED_GAP, s = font_scale(panel);
    canvas cv = {NULL, 0, 0, 0, 0, panel};
    dap_embed_plot_size(rows, cols, panel, row_labels, col_labels, &cv.w, &cv.h);
    const int left = cv.w - (cols * panel + (cols + 1) * gap), top = cv.h - (rows * panel + (rows + 1) * gap);
    cv.px = dap_malloc((size_t)cv.h * cv.w * 3);
    memset(cv.px, 255, (size_t)cv.h * cv.w * 3);
    const unsigned char ink[3] = {60, 60, 60};
    for (int c = 0; col_labels && c < cols; c++) {
        unsigned char col[3];
        dap_embed_colour(c, col);
        text(&cv, left + gap + c * (panel + gap), gap, panel, s, col_labels[c], col);
    }
    for (int r = 0; row_labels && left > 0 && r < rows; r++)
        text(&cv, gap, top + gap + r * (panel + gap) + (panel - 7 * s) / 2, left - gap, s, row_labels[r], ink);
    const int R = panel >= 120 ? panel / 60 : 2, Rr = R > 1 ? R - 1 : 1, inset = R + 3;
    const unsigned char grey[3] = {185, 185, 185}, frame[3] = {140, 140, 140}, zero[3] = {228, 228, 228};
    for (int r = 0; r < rows; r++) {
        /* the row's axes: the range of the real points and of every set's points */
        double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
        for (int c = -1; c < cols; c++) {
            const float *q = c < 0 ? real[r] : pts[r * cols + c];
            const int nq = c < 0 ? nreal[r] : npts[r * cols + c];
            for (int i = 0; i < nq; i++)
                for (int a = 0; a < 2; a++) {
                    double v = q[2 * i + a];
                    if (!isfinite(v)) continue;
                    lo[a] = v < lo[a] ? v : lo[a];
                    hi[a] = v > hi[a] ? v : hi[a];
                }
        }
        for (int a = 0; a < 2; a++) {
            if (!(lo[a] <= hi[a])) lo[a] = -1, hi[a] = 1; /* no points */
            if (hi[a] - lo[a] < 1e-12 * (fabs(lo[a]) + 1)) lo[a] -= 1, hi[a] += 1;
            double mg = 0.04 * (hi[a] - lo[a]);
            lo[a] -= mg, hi[a] += mg;
        }
        const int span = panel - 1 - 2 * inset;
        for (int c = 0; c < cols; c++) {
            cv.x0 = left + gap + c * (panel + gap), cv.y0 = top + gap + r * (panel + gap);
            cv.size = panel;
#define PX(v) (cv.x0 + inset + (int)lround(((v) - lo[0]) / (hi[0] - lo[0]) * span))
#define PY(v) (cv.y0 + inset + (int)lround((hi[1] - (v)) / (hi[1] - lo[1]) * span))
            if (lo[0] < 0 && hi[0] > 0)
                for (int y = cv.y0; y < cv.y0 + panel; y++) put(&cv, PX(0.0), y, zero);
            if (lo[1] < 0 && hi[1] > 0)
                for (int x = cv.x0; x < cv.x0 + panel; x++) put(&cv, x, PY(0.0), zero);
            for (int i = 0; i < nreal[r]; i++) {
                const float *q = real[r] + 2 * i;
                if (isfinite(q[0]) && isfinite(q[1])) disc(&cv, PX(q[0]), PY(q[1]), Rr, grey);
            }
            unsigned char col[3];
            dap_embed_colour(c, col);
            const float *s = pts[r * cols + c];
            for (int i = 0; i < npts[r * cols + c]; i++)
                if (isfinite(s[2 * i]) && isfinite(s[2 * i + 1])) disc(&cv, PX(s[2 * i]), PY(s[2 * i + 1]), R, col);
#undef PX
#undef PY
            for (int t = 0; t < panel; t++) {
                put(&cv, cv.x0 + t, cv.y0, frame), put(&cv, cv.x0 + t, cv.y0 + panel - 1, frame);
                put(&cv, cv.x0, cv.y0 + t, frame), put(&cv, cv.x0 + panel - 1, cv.y0 + t, frame);
            }
        }
    }
    int rc = dap_png_write(path, cv.px, cv.h, cv.w, 3);
    free(cv.px);
    return rc;
}
