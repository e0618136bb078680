/*
 * kmeans.h: k-means clustering of feature rows (Lloyd's algorithm from a k-means++ start),
 * seeded and deterministic. dap distill --init kmeans starts each synthetic sample from a
 * noised cluster centre of its class's real images (the prototype initialisation of D4M-style
 * generative distillation); the same routine serves any feature space (pixels, VAE latents).
 */
#ifndef DAP_KMEANS_H
#define DAP_KMEANS_H

#include <stdint.h>

/* Clusters x (n, d) into k centres (k, d); assign (n), when not NULL, receives each row's
 * cluster. Centres start by k-means++ (rows drawn with probability proportional to the
 * squared distance to the nearest chosen centre, from the stream (seed, stream)), then
 * Lloyd's iterations run until no row changes cluster or `iters` have run. A cluster left
 * empty is restarted at the row farthest from its centre. Centres come out in the order
 * k-means++ chose them. *iters_run (when not NULL) receives the iterations run. Returns
 * DAP_OK, or DAP_ERR_ARG unless 1 <= k <= n and d >= 1. */
int dap_kmeans(const float *x, int n, int d, int k, int iters, uint64_t seed, uint64_t stream,
               float *centres, int *assign, int *iters_run);

#endif
