/*
 * latent.c: a latent prior on the command line (see latent.h).
 */
#include "latent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/core.h"
#include "data/classmap.h"
#include "distill/methods.h"
#include "io/io.h"

int latent_check_files(const char *model_path, const char *vae_path) {
    if (model_path) {
        int r = dap_vae_file_is_vae(model_path);
        if (r < 0) return r;
        if (r == 1)
            return dap_error(DAP_ERR_ARG, "--model %s is a VAE (it holds encoder / decoder tensors), not a DiT: "
                                          "give it as --vae, and the DiT as --model", model_path);
    }
    dap_dit_config mc;
    if (model_path && dap_dit_config_from_file(model_path, &mc) == DAP_OK) { /* else the model's loader reports it */
        const int C = mc.in_channels, S = mc.input_size;
        if (!vae_path && C != 1 && C != 3)
            return dap_error(DAP_ERR_ARG, "model %s takes %d-channel %dx%d latents, not images: give the VAE that "
                                          "encodes its data with --vae F (sd-vae-ft-mse for the official DiTs)",
                             model_path, C, S, S);
        if (vae_path && (C == 1 || C == 3))
            return dap_error(DAP_ERR_ARG, "model %s works on %d-channel %dx%d pixels, not on latents: drop --vae %s "
                                          "(it is for latent models such as DiT-XL/2)",
                             model_path, C, S, S, vae_path);
    }
    dap_clear_error();
    if (vae_path) {
        int r = dap_vae_file_is_vae(vae_path);
        if (r < 0) return r;
        if (r == 0) {
            dap_st *st;
            int dit = 0;
            if (dap_st_open(&st, vae_path) == DAP_OK) {
                dit = dap_st_find(st, "x_embedder.proj.weight") != NULL;
                dap_st_close(st);
            }
            return dap_error(DAP_ERR_ARG, "--vae %s is not a VAE (no encoder / decoder tensors)%s: give the Stable "
                                          "Diffusion VAE (sd-vae-ft-mse or sd-vae-ft-ema safetensors) as --vae",
                             vae_path, dit ? "; it is a DiT, which goes to --model" : "");
        }
    }
    return DAP_OK;
}

int latent_check_model(const dap_dit *m, const char *model_path, const dap_vae *vae, const char *vae_path,
                       int *image_size) {
    const dap_dit_config *mc = &m->cfg;
    const int C = mc->in_channels, S = mc->input_size;
    DAP_TRY(latent_check_files(model_path, vae_path)); /* pixels vs latents */
    if (!vae_path) return DAP_OK;
    const dap_vae_config *vc = dap_vae_get_config(vae);
    if (vc->latent_channels != C)
        return dap_error(DAP_ERR_SHAPE, "model %s takes %d-channel latents, VAE %s makes %d-channel ones", model_path,
                         C, vae_path, vc->latent_channels);
    const int f = dap_vae_factor(vc), want = S * f;
    if (*image_size && *image_size != want)
        return dap_error(DAP_ERR_ARG, "--image-size %d does not fit model %s: it takes %dx%d latents, which VAE %s "
                                      "(factor %d) decodes to %d px; use --image-size %d, or a model made for %d px "
                                      "(the official DiT-XL/2 comes for 256 and 512)",
                         *image_size, model_path, S, S, vae_path, f, want, want, *image_size);
    *image_size = want;
    return DAP_OK;
}

int latent_open(latent_run *lr, const char *data, const char *vae_path, const char *cache_dir, int image_size,
                int holdout, int split_seed, dap_dataset *names) {
    memset(lr, 0, sizeof *lr);
    memset(names, 0, sizeof *names);
    lr->holdout = holdout, lr->split_seed = split_seed;
    strcpy(lr->vae_hash, "none");
    DAP_TRY(dap_image_files_list(&lr->files, data, "train"));
    int rc = DAP_OK;
    if (vae_path && ((rc = dap_vae_load(&lr->vae, vae_path)) || (rc = dap_file_hash(vae_path, lr->vae_hash)) ||
                     (rc = dap_vae_to_device(lr->vae)))) { /* with --device cuda the VAE runs there too */
        latent_close(lr);
        return rc;
    }
    const int K = lr->files.num_classes;
    lr->cache = (dap_latent_cache){.dir = cache_dir, .vae_hash = lr->vae_hash, .crop = DAP_CROP_ADM, .batch = 8};
    names->num_classes = K, names->c = 3;
    names->class_names = dap_malloc(sizeof(char *) * (size_t)K);
    for (int k = 0; k < K; k++) names->class_names[k] = dap_strdup(lr->files.class_names[k]);
    dap_dataset_index(names);
    latent_set_size(lr, image_size, names);
    return DAP_OK;
}

void latent_check_view(const latent_run *lr, dap_dataset *v) {
    memset(v, 0, sizeof *v);
    v->num_classes = lr->files.num_classes;
    v->class_names = lr->files.class_names;
    v->c = lr->vae ? dap_vae_get_config(lr->vae)->latent_channels : 3;
    v->h = v->w = lr->vae ? lr->latent_size : lr->image_size;
    v->class_count = dap_calloc((size_t)v->num_classes + 1, sizeof(int));
    for (int k = 0; k < v->num_classes; k++) {
        const int cnt = lr->files.count[k];
        v->class_count[k] = cnt - (lr->holdout < cnt ? lr->holdout : cnt); /* as dap_dataset_split */
    }
}

unsigned long long latent_data_hash(const latent_run *lr) {
    uint64_t h = DAP_FNV1A64_INIT;
    for (int k = 0; k < lr->files.num_classes; k++) {
        h = dap_fnv1a64(h, lr->files.class_names[k], strlen(lr->files.class_names[k]) + 1);
        for (int i = 0; i < lr->files.count[k]; i++) {
            const char *p = lr->files.files[k][i], *base = strrchr(p, '/');
            base = base ? base + 1 : p;
            struct stat sb;
            long long size = stat(p, &sb) == 0 ? (long long)sb.st_size : -1;
            h = dap_fnv1a64(h, base, strlen(base) + 1);
            h = dap_fnv1a64(h, &size, sizeof size);
        }
    }
    return (unsigned long long)h;
}

void latent_set_size(latent_run *lr, int image_size, dap_dataset *names) {
    lr->image_size = lr->cache.image_size = image_size;
    lr->latent_size = lr->vae && image_size ? image_size / dap_vae_factor(dap_vae_get_config(lr->vae)) : 0;
    names->h = names->w = image_size;
}

void latent_close(latent_run *lr) {
    if (lr->vae) dap_vae_destroy(lr->vae);
    dap_image_files_free(&lr->files);
    dap_free_aligned(lr->syn_lat);
    memset(lr, 0, sizeof *lr);
}

/* out: the images x (n rows of c h h floats) of class k as a dataset of K classes (the
 * others empty), less the holdout the pixel path would take from class k (the split's
 * streams are per class); out owns copies. */
static void class_set(const latent_run *lr, int k, float *x, int n, int c, int h, dap_dataset *out) {
    dap_dataset one = {0};
    one.n = n, one.c = c, one.h = h, one.w = h, one.num_classes = lr->files.num_classes;
    one.class_names = lr->files.class_names; /* borrowed */
    one.x = x;
    one.y = dap_malloc(sizeof(int) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) one.y[i] = k;
    dap_dataset_index(&one);
    dap_dataset val;
    if (lr->holdout > 0) {
        dap_dataset_split(&one, lr->holdout, (unsigned long long)lr->split_seed, out, &val);
        dap_dataset_free(&val);
    } else {
        dap_dataset_subset(out, &one, one.class_idx[k], n);
    }
    for (int q = 0; q < one.num_classes; q++) free(one.class_idx[q]);
    free(one.class_idx), free(one.class_count), free(one.y);
}

/* Class k's file numbers as a one-value-per-image dataset, less the held-out ones, as the
 * latents' set is split: a pick on it picks files. Returns the numbers (set->x; free both). */
static float *file_numbers(const latent_run *lr, int k, dap_dataset *set) {
    const int n = lr->files.count[k];
    float *num = dap_alloc_f32((size_t)n + 1);
    for (int i = 0; i < n; i++) num[i] = (float)i;
    class_set(lr, k, num, n, 1, 1, set);
    return num;
}

/* The m files of class k numbered num[i], loaded at the image size, cropped as the prior's
 * data: px (m, 3, S, S). */
static int load_files(const latent_run *lr, int k, const float *num, int m, float *px) {
    char **files = dap_malloc(sizeof(char *) * (size_t)(m > 0 ? m : 1));
    for (int i = 0; i < m; i++) files[i] = lr->files.files[k][(int)num[i]];
    int cnt[1] = {m};
    char **fl[1] = {files};
    dap_image_files view = lr->files;
    view.num_classes = 1, view.count = cnt, view.files = fl, view.class_names = lr->files.class_names + k;
    const int rc = dap_image_files_load_class(&view, 0, lr->image_size, 3, DAP_CROP_ADM, px);
    free(files);
    return rc;
}

/* igd on a latent prior: the real images behind the surrogate's mean gradient, picked as a
 * pixel run picks them (igd's stream), loaded: *px (count, 3, S, S). */
static int igd_reals(const latent_run *lr, int k, const dap_distill_opts *o, float **px, int *count) {
    const int S = lr->image_size;
    dap_dataset set;
    float *num = file_numbers(lr, k, &set);
    const int m = o->igd_n_real < set.class_count[k] ? o->igd_n_real : set.class_count[k];
    int *idx = dap_malloc(sizeof(int) * (size_t)(m > 0 ? m : 1));
    float *pick = dap_alloc_f32((size_t)(m > 0 ? m : 1));
    int rc = m > 0 ? dap_distill_pick_class(&set, k, m, o->seed, DAP_STREAM_IGD_PICK, idx)
                   : dap_error(DAP_ERR_VALUE, "igd: class %s has no real images", lr->files.class_names[k]);
    *px = NULL, *count = 0;
    if (rc == DAP_OK) {
        for (int i = 0; i < m; i++) pick[i] = set.x[idx[i]];
        *px = dap_alloc_f32((size_t)m * 3 * S * S);
        rc = load_files(lr, k, pick, m, *px);
        *count = m;
    }
    free(idx), dap_free_aligned(pick), dap_free_aligned(num);
    dap_dataset_free(&set);
    return rc;
}

int latent_distill_class(latent_run *lr, const dap_dit *m, int k, const dap_distill_opts *o, float *out,
                         dap_distill_stats *st) {
    const int n = lr->files.count[k], S = lr->image_size;
    const size_t per_px = (size_t)3 * S * S;
    int rc;
    dap_free_aligned(lr->syn_lat);
    lr->syn_lat = NULL, lr->syn_n = 0;
    if (o->method == DAP_METHOD_RANDOM) {
        /* the random pick on a dataset of file numbers, then only those files decoded */
        dap_dataset set;
        float *num = file_numbers(lr, k, &set);
        float *pick = dap_alloc_f32((size_t)o->ipc);
        dap_distill_opts ro = *o;
        ro.labels = NULL; /* the pick needs no model label */
        rc = dap_distill_class(NULL, &set, k, &ro, pick, st);
        if (rc == DAP_OK) {
            const double t0 = dap_time_now();
            rc = load_files(lr, k, pick, o->ipc, out);
            st->seconds += dap_time_now() - t0;
        }
        dap_free_aligned(pick), dap_free_aligned(num);
        dap_dataset_free(&set);
        return rc;
    }
    const dap_vae_config *vc = dap_vae_get_config(lr->vae);
    const int C = vc->latent_channels, s = lr->latent_size;
    const size_t per = (size_t)C * s * s;
    float *lat;
    int status;
    const double t0 = dap_time_now();
    DAP_TRY(dap_latent_cache_class(lr->vae, &lr->cache, &lr->files, k, &lat, &status));
    const double t_enc = dap_time_now() - t0;
    dap_dataset set;
    class_set(lr, k, lat, n, C, s, &set);
    dap_free_aligned(lat);
    dap_distill_opts oo = *o;
    oo.latent = 1;
    float *real_px = NULL;
    rc = DAP_OK;
    if (o->method == DAP_METHOD_IGD) { /* the surrogate sees images: through the VAE */
        rc = igd_reals(lr, k, o, &real_px, &oo.igd_real_n);
        oo.igd_vae = lr->vae, oo.igd_real_px = real_px;
    }
    lr->syn_lat = dap_alloc_f32(per * (size_t)o->ipc);
    if (rc == DAP_OK) rc = dap_distill_class(m, &set, k, &oo, lr->syn_lat, st);
    dap_free_aligned(real_px);
    dap_dataset_free(&set);
    const double t1 = dap_time_now();
    for (int i = 0; rc == DAP_OK && i < o->ipc; i++) /* one at a time: the decoder's activations are large */
        rc = dap_vae_decode(lr->vae, lr->syn_lat + per * (size_t)i, 1, s, s, out + per_px * (size_t)i);
    for (size_t q = 0; rc == DAP_OK && q < per_px * (size_t)o->ipc; q++)
        out[q] = out[q] < -1.f ? -1.f : out[q] > 1.f ? 1.f : out[q];
    st->seconds += t_enc + (dap_time_now() - t1);
    if (rc == DAP_OK) lr->syn_n = o->ipc;
    return rc;
}

int latent_write(const char *path, const float *lat, int n, int C, int s, const char *class_name, int label,
                 const char *vae_hash) {
    dap_st_writer *w = dap_st_writer_create();
    const int64_t shape[4] = {n, C, s, s};
    dap_st_writer_add(w, "latent", DAP_DT_F32, lat, 4, shape);
    char num[32];
    dap_st_writer_meta(w, "class", class_name);
    snprintf(num, sizeof num, "%d", label);
    dap_st_writer_meta(w, "label", num);
    dap_st_writer_meta(w, "vae_fnv1a64", vae_hash);
    dap_st_writer_meta(w, "note", "scaled latents (the DiT's input space); decode with dap vae decode");
    int rc = dap_st_writer_save(w, path);
    dap_st_writer_destroy(w);
    return rc;
}

int latent_save_class(latent_run *lr, const char *dir, const char *class_name, int k, int label) {
    if (!lr->syn_lat || lr->syn_n == 0) return DAP_OK; /* random: real images, no latents made */
    char *folder = dap_class_folder_name(class_name, k);
    size_t len = strlen(dir) + strlen(folder) + 32;
    char *path = dap_malloc(len);
    snprintf(path, len, "%s/%s/latents.safetensors", dir, folder);
    const dap_vae_config *vc = dap_vae_get_config(lr->vae);
    int rc = latent_write(path, lr->syn_lat, lr->syn_n, vc->latent_channels, lr->latent_size, class_name, label,
                          lr->vae_hash);
    free(path), free(folder);
    return rc;
}

int latent_train_set(const char *data, const char *vae_path, const char *cache_dir, const char *names_from,
                     const dap_dit_config *mc, dap_dataset *out) {
    memset(out, 0, sizeof *out);
    if (!mc->input_size || !mc->in_channels || !mc->num_classes)
        return dap_error(DAP_ERR_ARG, "--vae trains a latent prior: give its config (--init CHECKPOINT, or --config DiT-*)");
    latent_run lr;
    dap_dataset names;
    DAP_TRY(latent_open(&lr, data, vae_path, cache_dir, 0, 0, 0, &names));
    const dap_vae_config *vc = dap_vae_get_config(lr.vae);
    const int C = vc->latent_channels, s = mc->input_size, K = lr.files.num_classes;
    int rc = DAP_OK;
    if (C != mc->in_channels)
        rc = dap_error(DAP_ERR_SHAPE, "%s has %d latent channels, the model takes %d", vae_path, C, mc->in_channels);
    /* the model's class names: its checkpoint's, else guessed from its shape */
    char **owned = NULL, **mnames = NULL;
    if (rc == DAP_OK && names_from) rc = dap_dit_class_names_from_file(names_from, mc->num_classes, &owned);
    if (rc == DAP_OK)
        mnames = owned ? owned : (char **)dap_class_names_guess(mc->num_classes, mc->in_channels, mc->input_size);
    int *labels = dap_malloc(sizeof(int) * (size_t)K);
    if (rc == DAP_OK) {
        latent_set_size(&lr, s * dap_vae_factor(vc), &names);
        rc = dap_class_map((const char *const *)mnames, mc->num_classes, &names, labels, names_from ? names_from : "the model");
    }
    float **lat = dap_calloc((size_t)K, sizeof(float *));
    const size_t per = (size_t)C * s * s;
    int total = 0;
    for (int k = 0; k < K && rc == DAP_OK; k++) {
        int status;
        rc = dap_latent_cache_class(lr.vae, &lr.cache, &lr.files, k, &lat[k], &status);
        total += lr.files.count[k];
    }
    if (rc == DAP_OK) { /* the model's classes, the data's latents under their labels */
        out->n = total, out->c = C, out->h = out->w = s, out->num_classes = mc->num_classes;
        out->class_names = dap_malloc(sizeof(char *) * (size_t)mc->num_classes);
        for (int j = 0; j < mc->num_classes; j++) {
            char b[16];
            snprintf(b, sizeof b, "%d", j);
            out->class_names[j] = dap_strdup(mnames && mnames[j] ? mnames[j] : b);
        }
        out->x = dap_alloc_f32((size_t)total * per);
        out->y = dap_malloc(sizeof(int) * (size_t)total);
        int i = 0;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < lr.files.count[k]; j++, i++) {
                memcpy(out->x + (size_t)i * per, lat[k] + (size_t)j * per, per * sizeof(float));
                out->y[i] = labels[k];
            }
        dap_dataset_index(out);
        char ls[96] = ""; /* the labels the data's first classes got, as trained */
        for (int k = 0, first = 0; k < K && k < 5; first += lr.files.count[k], k++)
            if (lr.files.count[k] > 0) snprintf(ls + strlen(ls), sizeof ls - strlen(ls), "%s%d", k ? ", " : "", out->y[first]);
        fprintf(stderr, "dap train: %d latents (%dx%dx%d) of %d classes of %s, labels of the model's %d (%s%s)\n",
                total, C, s, s, K, data, mc->num_classes, ls, K > 5 ? ", ..." : "");
    }
    for (int k = 0; k < K; k++) dap_free_aligned(lat[k]);
    free(lat), free(labels);
    dap_dit_class_names_free(owned, mc->num_classes);
    dap_dataset_free(&names);
    latent_close(&lr);
    return rc;
}
