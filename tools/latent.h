/*
 * latent.h: the command-line side of a latent prior (DiT on the VAE's latents): the
 * checks that refuse a wrong pairing before any work, the label of each data class, and
 * distillation of one class in latent space (real images encoded once through the latent
 * cache, sampling and guidance on latents, then decoded to RGB).
 */
#ifndef DAP_TOOLS_LATENT_H
#define DAP_TOOLS_LATENT_H

#include "data/dataset.h"
#include "data/imagenet.h"
#include "data/latent_cache.h"
#include "distill/distill.h"
#include "models/dit.h"
#include "models/vae.h"

/* Refusals of `--model M --vae V` (either may be NULL) before anything is loaded: a VAE
 * given as the model, a non-VAE given as --vae, a latent model (neither 1 nor 3 input
 * channels) without --vae, a pixel model with one. */
int latent_check_files(const char *model_path, const char *vae_path);
/* The loaded model against the VAE and the image size: the rules of latent_check_files,
 * channels must agree, image_size (0: the model's) = input_size x factor. *image_size is
 * set. vae and vae_path are NULL for a pixel model. */
int latent_check_model(const dap_dit *m, const char *model_path, const dap_vae *vae, const char *vae_path,
                       int *image_size);
typedef struct latent_run {
    dap_vae *vae;          /* NULL for random */
    char vae_hash[17];
    dap_image_files files; /* the real images, by class */
    dap_latent_cache cache;
    int image_size, latent_size;
    int holdout, split_seed;
    float *syn_lat;        /* (ipc, C, s, s) the last class's latents, for latent_save_class */
    int syn_n;
} latent_run;

/* Lists the data (split train), loads the VAE (unless random: vae_path NULL) and fills
 * `names` with a dataset of the classes (names, no images; c = 3, h = w = image_size). */
int latent_open(latent_run *lr, const char *data, const char *vae_path, const char *cache_dir, int image_size,
                int holdout, int split_seed, dap_dataset *names);
/* The class counts a run will see (after --holdout) in a dataset of no images with the
 * latents' shape, for dap_distill_check_class (free v->class_count after). */
void latent_check_view(const latent_run *lr, dap_dataset *v);
/* FNV-1a over the data's file names and sizes (the resume key; the cache hashes contents). */
unsigned long long latent_data_hash(const latent_run *lr);
/* Sets the image size (after latent_check_model) in lr and names. */
void latent_set_size(latent_run *lr, int image_size, dap_dataset *names);
void latent_close(latent_run *lr);
/* dap train --vae: every training image of data encoded by the VAE (through the cache at
 * cache_dir), labelled with the model's label of its class (its class names from the
 * checkpoint names_from, else guessed from the config): out (n, C, s, s) with the model's
 * num_classes and names. */
int latent_train_set(const char *data, const char *vae_path, const char *cache_dir, const char *names_from,
                     const dap_dit_config *mc, dap_dataset *out);
/* Distills data class k (conditioned on o->labels[k], or k): out (ipc, 3, S, S) RGB in
 * [-1, 1]; keeps the latents for latent_save_class. random: real images of the class,
 * cropped as the prior's data. */
int latent_distill_class(latent_run *lr, const dap_dit *m, int k, const dap_distill_opts *o, float *out,
                         dap_distill_stats *st);
/* Writes the last class's latents as DIR/<class>/latents.safetensors (tensor "latent"). */
int latent_save_class(latent_run *lr, const char *dir, const char *class_name, int k, int label);
/* Writes latents (n, C, s, s) to path with the class and label in the metadata. */
int latent_write(const char *path, const float *lat, int n, int C, int s, const char *class_name, int label,
                 const char *vae_hash);

#endif
