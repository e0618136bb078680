/*
 * latent_cache.h: the VAE latents of a class's real images, encoded once and kept on disk.
 *
 * A latent prior's guidance, k-means start and real-sample draws work on the latents of
 * a class's real images (latent = scale x the VAE posterior mean). Encoding costs far
 * more than sampling a class's few images, so each class's latents are written to
 * DIR/<class>.<size>px.safetensors (tensor "latent" (n, C, s, s), atomically) with a key in
 * its metadata: an FNV-1a hash of the VAE file's hash, the image size, the crop, the
 * latent scale, and every image's file name and content hash. A cache file whose key
 * differs (an image changed, added or removed; another crop, size or VAE) is re-encoded;
 * one that does not open as a whole valid file (truncated, damaged) is rebuilt with a log
 * line naming it, never trusted.
 */
#ifndef DAP_LATENT_CACHE_H
#define DAP_LATENT_CACHE_H

#include "data/imagenet.h"
#include "models/vae.h"

typedef struct dap_latent_cache {
    const char *dir;      /* cache folder (created when missing) */
    const char *vae_hash; /* dap_file_hash of the VAE file */
    int image_size;       /* pixels (a multiple of the VAE's factor) */
    int crop;             /* DAP_CROP_ADM (the DiT code's) or DAP_CROP_RESIZE */
    int batch;            /* images per encoder call */
} dap_latent_cache;

/* What happened to the class's cache file. */
enum { DAP_LATENT_CACHE_HIT = 0, DAP_LATENT_CACHE_NEW = 1, DAP_LATENT_CACHE_STALE = 2, DAP_LATENT_CACHE_DAMAGED = 3 };

/* Latents of class k of f into *lat (count[k], latent channels, s, s; dap_alloc_f32'd, s =
 * image_size / factor), from the cache or encoded (and then cached). *status: one of the
 * above. */
int dap_latent_cache_class(dap_vae *v, const dap_latent_cache *c, const dap_image_files *f, int k, float **lat,
                           int *status);

/* The cache file of class k (malloc'd). */
char *dap_latent_cache_path(const dap_latent_cache *c, const dap_image_files *f, int k);

#endif /* DAP_LATENT_CACHE_H */
