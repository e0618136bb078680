/*
 * embed.h: a 2-D view of how a synthetic set sits among the real images of a class, in a
 * classifier's feature space (the paper's figure of representativeness and diversity):
 * PCA fitted on the real features alone, every set projected on the same two axes; two
 * plain numbers per set (coverage of the real points, spread of the set's own points);
 * and a scatter-plot grid written as a PNG (rows: classes, columns: sets).
 * Features and points are rows of floats: (n, d) and (n, 2).
 */
#ifndef DAP_EMBED_H
#define DAP_EMBED_H

typedef struct dap_pca {
    int d, k;
    double *mean; /* (d) */
    double *axes; /* (k, d): unit rows, orthogonal, by decreasing variance */
    double *var;  /* (k) the variance along each axis (unbiased, / (n - 1)) */
    double total; /* the total variance: trace of the covariance */
} dap_pca;

/* The top k principal axes of x (n, d) about its mean, from LAPACK's symmetric eigensolver on
 * the smaller of the covariance (d, d) and the Gram matrix (n, n) of the centred rows; exact
 * and deterministic. Sign convention: each axis has its largest-magnitude component positive
 * (the first such component on a tie). An axis beyond the rank of x (zero variance) is an
 * orthonormal completion, also deterministic. DAP_ERR_VALUE when n < 2, k > d, or the rows
 * have no variance at all. */
int dap_pca_fit(dap_pca *p, const float *x, int n, int d, int k);
/* out (n, k) = (x - mean) . axes^T */
void dap_pca_project(const dap_pca *p, const float *x, int n, float *out);
void dap_pca_free(dap_pca *p);

/* Coverage: the mean over real rows of the Euclidean distance to the nearest syn row (how
 * far a real image is from the set; small when the set covers the class). */
double dap_embed_coverage(const float *real, int nr, const float *syn, int ns, int d);
/* Spread: the mean pairwise Euclidean distance among the n rows (0 when n < 2). */
double dap_embed_spread(const float *x, int n, int d);

/* Writes the scatter grid as an RGB PNG: rows x cols square panels of `panel` pixels with a
 * gap of DAP_EMBED_GAP pixels around each (dap_embed_plot_size gives the image's size). Panel
 * (r, c) draws real[r] (nreal[r] points (x, y)) in light grey and then pts[r * cols + c]
 * (npts[...] points) in column c's colour (dap_embed_colour); every panel of a row has the
 * same axes (the range of all the row's points, with a margin), y up; thin lines mark x = 0
 * and y = 0 (the real mean). col_labels (cols strings, or NULL: none) are written above the
 * columns in their colours, row_labels (rows strings, or NULL) left of the rows, in a 5x7
 * pixel font (letters as capitals, digits, . _ + - / and space; twice the size for panels of
 * 240 px and more), cut to the width they have. */
#define DAP_EMBED_GAP 4
int dap_embed_plot(const char *path, int rows, int cols, int panel, const char *const *row_labels,
                   const char *const *col_labels, const float *const *real, const int *nreal,
                   const float *const *pts, const int *npts);
/* The size of that image: width = L + cols * panel + (cols + 1) * DAP_EMBED_GAP, height = T +
 * rows * panel + (rows + 1) * DAP_EMBED_GAP, where T = 7 s + DAP_EMBED_GAP with column labels
 * (else 0) and L = (6 n - 1) s + DAP_EMBED_GAP with row labels of at most n characters
 * (at most 16 counted; else 0); s the font's scale (1, or 2 for panels of 240 px and more). */
void dap_embed_plot_size(int rows, int cols, int panel, const char *const *row_labels,
                         const char *const *col_labels, int *width, int *height);
/* Column c's colour (RGB), from a fixed palette of 10 (repeating). */
void dap_embed_colour(int c, unsigned char rgb[3]);

#endif /* DAP_EMBED_H */
