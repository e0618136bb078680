/*
 * latent_cache.c: a class's real-image latents, encoded once and cached (latent_cache.h).
 */
#include "data/latent_cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"

#define CACHE_FORMAT "dap-latent-cache 1"

char *dap_latent_cache_path(const dap_latent_cache *c, const dap_image_files *f, int k) {
    char *folder = dap_class_folder_name(f->class_names[k], k);
    size_t n = strlen(c->dir) + strlen(folder) + 48;
    char *p = dap_malloc(n);
    snprintf(p, n, "%s/%s.%dpx.safetensors", c->dir, folder, c->image_size);
    free(folder);
    return p;
}

/* The class's key: what its latents are a function of. */
static int class_key(const dap_latent_cache *c, const dap_vae_config *vc, const dap_image_files *f, int k,
                     char out[17]) {
    char head[256];
    snprintf(head, sizeof head, "%s vae=%s size=%d crop=%s scale=%.9g latent=mean n=%d", CACHE_FORMAT, c->vae_hash,
             c->image_size, c->crop == DAP_CROP_ADM ? "adm" : "resize", vc->scale, f->count[k]);
    uint64_t h = dap_fnv1a64(DAP_FNV1A64_INIT, head, strlen(head) + 1);
    for (int i = 0; i < f->count[k]; i++) {
        const char *path = f->files[k][i], *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        char fh[17];
        DAP_TRY(dap_file_hash(path, fh));
        h = dap_fnv1a64(h, base, strlen(base) + 1);
        h = dap_fnv1a64(h, fh, 17);
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return DAP_OK;
}

/* Reads a cache file: DAP_OK with the latents, 1 when its key differs, or an error status
 * (with the message set) when it is not a whole valid cache file. */
static int read_cache(const char *path, const char *key, const int64_t *shape, float *lat) {
    dap_st *st;
    DAP_TRY(dap_st_open(&st, path));
    int rc = DAP_OK;
    char *have = dap_st_meta_get(st, "dap_latent_cache_key");
    if (!have) rc = dap_error(DAP_ERR_FORMAT, "%s: no dap_latent_cache_key in its metadata", path);
    else if (strcmp(have, key)) rc = 1;
    else rc = dap_st_read_f32(st, "latent", lat, shape, 4);
    if (rc == DAP_OK && st->n != 1) rc = dap_error(DAP_ERR_FORMAT, "%s: %d tensors, expected \"latent\" alone", path, st->n);
    size_t n = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    for (size_t q = 0; rc == DAP_OK && q < n; q++)
        if (!isfinite(lat[q])) rc = dap_error(DAP_ERR_VALUE, "%s: latent value %zu is not finite", path, q);
    free(have);
    dap_st_close(st);
    return rc;
}

int dap_latent_cache_class(dap_vae *v, const dap_latent_cache *c, const dap_image_files *f, int k, float **lat,
                           int *status) {
    const dap_vae_config *vc = dap_vae_get_config(v);
    const int fac = dap_vae_factor(vc), s = c->image_size / fac, n = f->count[k], C = vc->latent_channels;
    DAP_ASSERT(c->image_size > 0 && c->image_size % fac == 0 && c->batch > 0);
    *lat = NULL;
    char key[17];
    DAP_TRY(class_key(c, vc, f, k, key));
    char *path = dap_latent_cache_path(c, f, k);
    const int64_t shape[4] = {n, C, s, s};
    const size_t per = (size_t)C * s * s;
    float *out = dap_alloc_f32(per * (size_t)n);
    *status = DAP_LATENT_CACHE_NEW;
    if (dap_file_exists(path)) {
        int rc = read_cache(path, key, shape, out);
        if (rc == DAP_OK) {
            *status = DAP_LATENT_CACHE_HIT;
            *lat = out;
            free(path);
            return DAP_OK;
        }
        *status = rc == 1 ? DAP_LATENT_CACHE_STALE : DAP_LATENT_CACHE_DAMAGED;
        if (rc == 1)
            dap_log(DAP_LOG_INFO, "dap: latent cache %s is stale (images, crop, size or VAE changed): re-encoding\n", path);
        else
            dap_log(DAP_LOG_INFO, "dap: latent cache %s is damaged (%s): rebuilding it\n", path, dap_last_error());
        dap_clear_error();
    }
    int rc = dap_mkdir_p(c->dir);
    /* encode in chunks: the decoded images of one chunk at a time */
    const size_t ipx = (size_t)3 * c->image_size * c->image_size;
    float *x = dap_alloc_f32(ipx * (size_t)c->batch);
    dap_image_files one = *f; /* a view of class k's files in chunks */
    const double t0 = dap_time_now();
    for (int i0 = 0; rc == DAP_OK && i0 < n; i0 += c->batch) {
        const int b = n - i0 < c->batch ? n - i0 : c->batch;
        int cnt[1] = {b};
        char **files[1] = {f->files[k] + i0};
        char *names[1] = {f->class_names[k]};
        one.num_classes = 1, one.count = cnt, one.files = files, one.class_names = names;
        rc = dap_image_files_load_class(&one, 0, c->image_size, 3, c->crop, x);
        if (rc == DAP_OK) rc = dap_vae_encode(v, x, b, c->image_size, c->image_size, out + per * (size_t)i0, NULL);
    }
    dap_free_aligned(x);
    if (rc == DAP_OK) {
        dap_st_writer *w = dap_st_writer_create();
        dap_st_writer_add(w, "latent", DAP_DT_F32, out, 4, shape);
        char num[32];
        dap_st_writer_meta(w, "dap_latent_cache_key", key);
        dap_st_writer_meta(w, "format", CACHE_FORMAT);
        dap_st_writer_meta(w, "class", f->class_names[k]);
        dap_st_writer_meta(w, "vae_fnv1a64", c->vae_hash);
        snprintf(num, sizeof num, "%d", c->image_size);
        dap_st_writer_meta(w, "image_size", num);
        dap_st_writer_meta(w, "crop", c->crop == DAP_CROP_ADM ? "adm" : "resize");
        rc = dap_st_writer_save(w, path);
        dap_st_writer_destroy(w);
        if (rc == DAP_OK)
            dap_log(DAP_LOG_INFO, "dap: encoded %d images of class %s in %.1f s into %s\n", n, f->class_names[k],
                    dap_time_now() - t0, path);
    }
    free(path);
    if (rc != DAP_OK) {
        dap_free_aligned(out);
        return rc;
    }
    *lat = out;
    return DAP_OK;
}
