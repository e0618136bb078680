/*
 * scores.h: scores of a distilled set in a fixed evaluator's feature space (SPEC 4):
 * representativeness (mean distance to the K nearest real images of the class, and the
 * kernel energy E of SPEC 3 with the linear kernel), diversity (mean and minimum
 * pairwise distance), and the Frechet distance between two feature sets.
 * Features are rows of (n, d) floats.
 */
#ifndef DAP_SCORES_H
#define DAP_SCORES_H

/* For each of the ns synthetic rows, the mean Euclidean distance to its k nearest real
 * rows (k clipped to nr); returns the average over synthetic rows. *energy (if not NULL)
 * receives the mean over synthetic rows of the mean distance to all real rows. */
double dap_score_knn(const float *syn, int ns, const float *real, int nr, int d, int k,
                     double *energy);
/* Mean and minimum pairwise Euclidean distance among n rows (n >= 2, else 0, 0). */
void dap_score_diversity(const float *x, int n, int d, double *mean, double *min);
/* Frechet distance between Gaussians fitted to a (na, d) and b (nb, d):
 * |mu_a - mu_b|^2 + tr(Sa + Sb - 2 (Sa^1/2 Sb Sa^1/2)^1/2). Needs na, nb >= 2.
 * Returns DAP_OK or an error (too few rows, eigen solver failure). */
int dap_frechet_distance(const float *a, int na, const float *b, int nb, int d, double *out);

#endif
