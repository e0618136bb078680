/*
 * cmd_distill.c: `dap distill`: a distilled image folder (one subfolder per class,
 * PNG) by the random, vanilla or dap method or one of the rivals (mgd3, d4m, dm, igd, minimax;
 * docs/methods.md), plus manifest.json (every parameter, the
 * seed, the model's hash, per-class timings and guidance energies) and grid.png.
 * Classes are written atomically one by one; a rerun with the same flags skips the
 * classes already done, and gives the same images as an uninterrupted run. A class's
 * images depend only on the flags and the class, so processes that split the classes
 * (--shard I/N, or --classes) can share one folder: each writes its own classes, and
 * the manifest and grid, rewritten under a lock by each, end up listing them all.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "core/blas.h"
#include "core/core.h"
#include "data/classmap.h"
#include "data/dataset.h"
#include "distill/distill.h"
#include "core/device.h"
#include "distill/guidance.h"
#include "eval/classifier.h"
#include "io/io.h"
#include "latent.h"
#include "models/dit.h"

/* The parameters that define the images, as one canonical line (checked on resume). */
static void params_line(char *buf, size_t n, const char *data, const char *hash, int holdout,
                        int split_seed, const dap_distill_opts *o, int num_classes, unsigned long long data_hash,
                        const char *sur_hash) {
    snprintf(buf, n,
             "data=%s model=%s holdout=%d split_seed=%d method=%s ipc=%d seed=%llu steps=%d eta=%g "
             "cfg=%g clip_x0=%g gamma=%g kernel=%d sigma=%g layer=%d pool=%d n_real=%d stop=%g form=%d fixed_noise=%d",
             data, hash, holdout, split_seed, dap_method_name(o->method), o->ipc, (unsigned long long)o->seed,
             o->steps, o->eta, o->cfg, o->clip_x0, o->gamma, o->kernel, o->sigma, o->layer, o->pool, o->n_real, o->stop,
             o->form, o->fixed_noise);
    if (o->repel != 0) { /* appended only when set, so runs made before --repel still resume */
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, " repel=%g", o->repel);
    }
    if (o->init != DAP_INIT_NOISE) { /* likewise for --init */
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, " init=%s strength=%g", dap_init_name(o->init), o->strength);
    }
    int mapped = 0; /* the model's labels, when they are not the data's class indices */
    for (int k = 0; o->labels && k < num_classes; k++) mapped |= o->labels[k] != k;
    for (int k = 0; mapped && k < num_classes; k++) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%d", k ? "," : " labels=", o->labels[k]);
    }
    if (o->batch != 100) { /* batching changes the kernels' summation order, hence the pixels */
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, " batch=%d", o->batch);
    }
    size_t len = strlen(buf);
    if (o->method == DAP_METHOD_MGD3) snprintf(buf + len, n - len, " mode_lambda=%g", o->mode_lambda);
    if (o->method == DAP_METHOD_IGD)
        snprintf(buf + len, n - len, " surrogate=%s igd_scale=%g igd_dev=%g igd_low=%g igd_high=%g igd_n_real=%d igd_memory=%d",
                 sur_hash, o->igd_scale, o->igd_dev, o->igd_low, o->igd_high, o->igd_n_real, o->igd_memory);
    if (o->method == DAP_METHOD_RANDOM) /* the sampler's flags do not matter for random */
        snprintf(buf, n, "data=%s holdout=%d split_seed=%d method=random ipc=%d seed=%llu", data, holdout,
                 split_seed, o->ipc, (unsigned long long)o->seed);
    if (o->method == DAP_METHOD_DM) /* no prior: the optimisation's flags */
        snprintf(buf, n, "data=%s holdout=%d split_seed=%d method=dm ipc=%d seed=%llu iterations=%d lr_img=%g batch_real=%d dm_width=%d",
                 data, holdout, split_seed, o->ipc, (unsigned long long)o->seed, o->iterations, o->lr_img, o->batch_real,
                 o->dm_width);
    /* the real images themselves (a folder's contents may change under its name) */
    len = strlen(buf);
    snprintf(buf + len, n - len, " data_fnv1a64=%016llx", data_hash);
}

/* Whether two parameter lines define the same images: equal, or, for the methods other
 * than dap, equal but for dap's guidance keys, which they ignore (a vanilla set made with
 * another --stop or --gamma, e.g. from another flags file, resumes); mgd3 keeps --stop. */
static int params_match(const char *a, const char *b, int method) {
    if (!strcmp(a, b)) return 1;
    /* a folder's line from before the data's content hash (" data_fnv1a64=...", last) */
    const char *h = strstr(b, " data_fnv1a64=");
    if (h && !strstr(a, " data_fnv1a64=") && strlen(a) == (size_t)(h - b) && !strncmp(a, b, (size_t)(h - b))) return 1;
    if (method == DAP_METHOD_DAP || method == DAP_METHOD_RANDOM || method == DAP_METHOD_DM) return 0;
    static const char *const guidance[] = {"gamma=", "kernel=", "sigma=", "layer=", "pool=", "n_real=",
                                           "form=", "fixed_noise=", "repel=", "stop="};
    const size_t nskip = sizeof guidance / sizeof guidance[0] - (method == DAP_METHOD_MGD3); /* mgd3 keeps stop= */
    char ka[2048], kb[2048];
    const char *src[2] = {a, b};
    char *dst[2] = {ka, kb};
    for (int side = 0; side < 2; side++) { /* the line without the guidance's tokens */
        const char *p = src[side];
        size_t len = 0;
        while (*p) {
            size_t t = strcspn(p, " ");
            int skip = 0;
            for (size_t g = 0; g < nskip; g++)
                if (!strncmp(p, guidance[g], strlen(guidance[g]))) skip = 1;
            if (!skip && len + t + 2 < sizeof ka) {
                memcpy(dst[side] + len, p, t);
                len += t;
                dst[side][len++] = ' ';
            }
            p += t;
            while (*p == ' ') p++;
        }
        dst[side][len] = 0;
    }
    return !strcmp(ka, kb);
}

/* A class finished by some run into `out` (this one earlier, another --shard): its folder
 * and its stats file are there. */
static void stats_path(char *buf, size_t n, const char *out, int k) {
    snprintf(buf, n, "%s/.class-%d.stats", out, k);
}

static int class_done(const char *out, const dap_dataset *real, int k, dap_distill_stats *st) {
    char *folder = dap_class_folder_name(real->class_names[k], k);
    char statp[4096], cls[4096], txt[512];
    snprintf(cls, sizeof cls, "%s/%s", out, folder);
    stats_path(statp, sizeof statp, out, k);
    free(folder);
    return dap_file_exists(cls) && cli_read_text(statp, txt, sizeof txt) &&
           sscanf(txt, "%lf %d %lf %lf", &st->seconds, &st->guided_steps, &st->energy_first, &st->energy_last) == 4;
}

/* The folder's parameter line, under its lock: a line there must match `line` (else
 * DAP_ERR_ARG). With `syn`, class k of syn is then saved into the folder, and a folder
 * without a line gets it once the class is there: nothing marks a folder before its
 * first class is made, and no class lands in a folder of other parameters. */
static int mark_params(const char *out, const char *line, int method, const dap_dataset *syn, int k) {
    char path[4096], prev[2048];
    snprintf(path, sizeof path, "%s/.dap-distill.lock", out);
    int lock = dap_lock_file(path);
    if (lock < 0) return DAP_ERR_IO;
    int rc = DAP_OK;
    snprintf(path, sizeof path, "%s/.dap-distill-params", out);
    if (cli_read_text(path, prev, sizeof prev)) {
        if (!params_match(prev, line, method))
            rc = dap_error(DAP_ERR_ARG,
                           "%s holds a distillation run with other parameters:\n  %s\nthis run:\n  %s\n"
                           "use another --out (or delete the folder)",
                           out, prev, line);
    }
    if (rc == DAP_OK && syn) {
        const int marked = dap_file_exists(path);
        rc = dap_dataset_save_class(syn, out, k);
        if (rc == DAP_OK && !marked) rc = dap_write_file_atomic(path, line, strlen(line));
    }
    dap_unlock_file(lock);
    return rc;
}

/* Methods whose classes report a guidance energy (dm: its matching loss; igd: the
 * influence, a cosine; mgd3: the mode energy). */
static int has_energy(int m) {
    return m == DAP_METHOD_DAP || m == DAP_METHOD_MGD3 || m == DAP_METHOD_IGD || m == DAP_METHOD_DM;
}

/* What manifest.json records of a run besides its classes. */
typedef struct distill_run {
    const char *data, *model_path, *hash, *sur_path, *sur_hash;
    const char *finetune; /* the model's fine-tune record (minimax), or NULL */
    int holdout, split_seed, has_model;
    const dap_distill_opts *o;
    const dap_dataset *real;
    const int *order;          /* the data classes in the model's label order */
    const char *names_source;  /* where the model's class names came from */
    const latent_run *lat; /* a latent prior's run (--vae), else NULL */
    const char *vae_path;
    const char *defaults;  /* the model's defaults file and the flags it gave ("" none) */
} distill_run;

/* manifest.json: every parameter, and every class present in the folder (present[k]),
 * made by this run (made[k]) or found done (an earlier run, another shard). */
static int write_manifest(const char *out, const distill_run *r, const dap_distill_stats *stats,
                          const int *present, const int *made, int have) {
    const dap_distill_opts *o = r->o;
    const int K = r->real->num_classes;
    dap_json j;
    dap_json_init(&j);
    dap_json_begin_object(&j, NULL);
    dap_json_str(&j, "dap_version", DAP_VERSION);
    /* the kernels' rounding can change the images: part of what reproduces a set */
    dap_json_str(&j, "blas", dap_blas_describe());
    dap_json_str(&j, "method", dap_method_name(o->method));
    dap_json_int(&j, "ipc", o->ipc);
    dap_json_int(&j, "seed", (long long)o->seed);
    dap_json_str(&j, "data", r->data);
    dap_json_int(&j, "holdout_per_class", r->holdout);
    dap_json_int(&j, "split_seed", r->split_seed);
    if (r->has_model) {
        dap_json_str(&j, "model", r->model_path);
        dap_json_str(&j, "model_fnv1a64", r->hash);
        /* the flags the model's defaults file gave (the command line overrode any of them) */
        dap_json_str(&j, "defaults", r->defaults);
        /* which label of the model each data class was sampled with (matched by name) */
        dap_json_str(&j, "class_names_from", r->names_source);
        dap_json_begin_object(&j, "class_map");
        for (int q = 0; q < K; q++) dap_json_int(&j, r->real->class_names[r->order[q]], o->labels[r->order[q]]);
        dap_json_end_object(&j);
        dap_json_int(&j, "steps", o->steps);
        dap_json_num(&j, "eta", o->eta);
        dap_json_num(&j, "clip_x0", o->clip_x0);
        dap_json_num(&j, "cfg", o->cfg);
        dap_json_str(&j, "init", dap_init_name(o->init));
        dap_json_num(&j, "strength", o->strength);
    }
    if (r->lat) { /* a latent prior: the VAE, the sizes, and the latents kept per class */
        if (r->vae_path) dap_json_str(&j, "vae", r->vae_path);
        dap_json_str(&j, "vae_fnv1a64", r->lat->vae_hash);
        dap_json_int(&j, "image_size", r->lat->image_size);
        if (r->lat->latent_size) dap_json_int(&j, "latent_size", r->lat->latent_size);
        dap_json_str(&j, "crop", "adm");
    }
    if (o->method == DAP_METHOD_MGD3) {
        dap_json_num(&j, "mode_lambda", o->mode_lambda);
        dap_json_num(&j, "stop", o->stop);
        dap_json_str(&j, "modes", "k-means of the class's real data in the model's input space, k = ipc");
    }
    if (o->method == DAP_METHOD_D4M) dap_json_str(&j, "prototypes", "k-means of the class's real data, k = ipc");
    if (o->method == DAP_METHOD_MINIMAX) {
        dap_json_str(&j, "finetune", r->finetune ? r->finetune : "");
        dap_json_str(&j, "sampling", "vanilla (DDIM + classifier-free guidance) from the Minimax fine-tune");
    }
    if (o->method == DAP_METHOD_IGD) {
        dap_json_str(&j, "surrogate", r->sur_path);
        dap_json_str(&j, "surrogate_fnv1a64", r->sur_hash);
        dap_json_num(&j, "igd_scale", o->igd_scale);
        dap_json_num(&j, "igd_dev", o->igd_dev);
        dap_json_num(&j, "igd_low", o->igd_low);
        dap_json_num(&j, "igd_high", o->igd_high);
        dap_json_int(&j, "igd_n_real", o->igd_n_real);
        dap_json_int(&j, "igd_memory", o->igd_memory);
        dap_json_str(&j, "influence_mixed_derivative", "central difference in theta + e v (two input-gradient passes)");
    }
    if (o->method == DAP_METHOD_DM) {
        dap_json_int(&j, "iterations", o->iterations);
        dap_json_num(&j, "lr_img", o->lr_img);
        dap_json_int(&j, "batch_real", o->batch_real);
        dap_json_int(&j, "dm_width", o->dm_width);
        dap_json_str(&j, "dm_network", "ConvNet-3, instance norm, average pooling, fresh random weights per iteration");
        dap_json_str(&j, "dm_augmentation", "DSA: color, crop, cutout, flip, scale, rotate (one per iteration, siamese)");
    }
    if (o->method == DAP_METHOD_DAP) {
        dap_json_num(&j, "gamma", o->gamma);
        dap_json_str(&j, "kernel", o->kernel == DAP_KERNEL_RBF ? "rbf" : "linear");
        if (o->kernel == DAP_KERNEL_RBF) dap_json_num(&j, "sigma", o->sigma);
        dap_json_int(&j, "layer", o->layer);
        dap_json_str(&j, "pool", o->pool == DAP_POOL_MEAN ? "mean" : "flatten");
        dap_json_int(&j, "n_real", o->n_real);
        dap_json_num(&j, "stop", o->stop);
        dap_json_str(&j, "form", o->form == DAP_FORM_EPS ? "eps" : "x");
        dap_json_num(&j, "repel", o->repel);
        dap_json_bool(&j, "real_noise_redrawn_each_step", !o->fixed_noise);
    }
    dap_json_int(&j, "classes_done", have);
    dap_json_bool(&j, "complete", have == K);
    dap_json_begin_array(&j, "classes");
    double total = 0;
    for (int q = 0; q < K; q++) { /* in label order */
        const int k = r->order[q];
        if (!present[k]) continue;
        dap_json_begin_object(&j, NULL);
        dap_json_int(&j, "class", k);
        dap_json_str(&j, "name", r->real->class_names[k]);
        if (r->has_model) dap_json_int(&j, "model_label", o->labels[k]); /* the label the model was conditioned on */
        dap_json_num(&j, "seconds", stats[k].seconds);
        if (has_energy(o->method)) { /* dm: iterations and its matching loss */
            dap_json_int(&j, "guided_steps", stats[k].guided_steps);
            dap_json_num(&j, "energy_first_guided_step", stats[k].energy_first);
            dap_json_num(&j, "energy_last_guided_step", stats[k].energy_last);
        }
        dap_json_bool(&j, "resumed", !made[k]); /* made by an earlier run or another shard */
        dap_json_end_object(&j);
        total += stats[k].seconds;
    }
    dap_json_end_array(&j);
    dap_json_num(&j, "seconds_total", total);
    dap_json_num(&j, "seconds_per_image", have ? total / ((double)have * o->ipc) : 0.0);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) /* this process only: a resumed run's peak is its own */
        dap_json_num(&j, "peak_rss_mib", (double)ru.ru_maxrss / 1024.0);
    dap_json_end_object(&j);
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", out);
    int rc = dap_json_save(&j, path);
    dap_json_free(&j);
    return rc;
}

/* grid.png: the first (up to) 10 images of every class the folder holds, one row each, in
 * the model's label order (order: the data classes in that order). */
static int write_grid(const char *out, const dap_dataset *real, int ipc, const int *order) {
    dap_dataset back;
    int rc = dap_dataset_load(&back, out, "train", real->h, real->c);
    if (rc) return rc;
    const size_t per = (size_t)real->c * real->h * real->w;
    int cols = ipc < 10 ? ipc : 10, rows = back.num_classes;
    /* the folder's classes (alphabetical) in the rank of their data class in `order` */
    int *rank = dap_malloc(sizeof(int) * (size_t)(rows ? rows : 1)), *row_of = dap_malloc(sizeof(int) * (size_t)(rows ? rows : 1));
    for (int b = 0; b < rows; b++) {
        rank[b] = real->num_classes + b; /* not a class of the data: last */
        for (int q = 0; q < real->num_classes; q++) {
            char *f = dap_class_folder_name(real->class_names[order[q]], order[q]);
            if (!strcmp(f, back.class_names[b])) rank[b] = q;
            free(f);
        }
    }
    for (int b = 0; b < rows; b++) {
        row_of[b] = 0;
        for (int a = 0; a < rows; a++) row_of[b] += rank[a] < rank[b];
    }
    float *g = dap_alloc_f32(per * (size_t)rows * cols);
    for (int k = 0; k < rows; k++)
        for (int i = 0; i < cols && i < back.class_count[k]; i++)
            memcpy(g + per * ((size_t)row_of[k] * cols + i), back.x + per * (size_t)back.class_idx[k][i],
                   sizeof(float) * per);
    free(rank), free(row_of);
    char path[4096];
    snprintf(path, sizeof path, "%s/grid.png", out);
    rc = dap_grid_write(path, g, rows * cols, rows, cols, real->c, real->h, real->w);
    dap_free_aligned(g);
    dap_dataset_free(&back);
    return rc;
}

int cmd_distill(int argc, char **argv) {
    const char *data = NULL, *model_path = NULL, *method_s = "dap", *out = NULL, *kernel_s = "linear", *sur_path = NULL,
               *pool_s = "flatten", *form_s = "x", *classes_s = "all", *init_s = "noise", *shard_s = NULL,
               *strength_s = NULL, *device = NULL, *precision = NULL, *gpu_s = NULL, *vae_path = NULL, *cache_s = NULL,
               *defaults_s = NULL, *defaults_used = "";
    int seed = 0, holdout = 0, split_seed = 0, threads = 0, fixed_noise = 0, quiet = 0, image_size = 0;
    dap_distill_opts o;
    dap_distill_opts_default(&o);
    flag flags[] = {
        {"data", FLAG_STR, &data, "real data: fmnist, fmnist:DIR, an IDX image file, an image folder, or imagenette:DIR, imagewoof:DIR, imageidc:DIR, imagenet:DIR (wnid folders in DIR/train) (default: the data --model records, else fmnist for a Fashion-MNIST-shaped model or without --model)"},
        {"model", FLAG_STR, &model_path, "diffusion model (safetensors from dap train, or a converted DiT)"},
        {"vae", FLAG_STR, &vae_path, "the VAE of a latent model (SD's sd-vae-ft-mse / -ema safetensors): sampling and guidance run on latents, the images are decoded"},
        {"image-size", FLAG_INT, &image_size, "image resolution (0: the model's; with --vae its latent size x 8, e.g. 256 for DiT-XL/2-256)", 0, 8192},
        {"latent-cache", FLAG_STR, &cache_s, "with --vae: folder of the real images' cached latents (default OUT/.latent-cache); share it across runs"},
        {"method", FLAG_STR, &method_s, "random | vanilla | dap | mgd3 | d4m | dm | igd | minimax (the rivals: docs/methods.md)"},
        {"ipc", FLAG_INT, &o.ipc, "images per class", 1, 100000},
        {"seed", FLAG_INT, &seed, "random seed", 0, FLAG_INT_MAX},
        {"out", FLAG_STR, &out, "output image folder (one subfolder per class)"},
        {"classes", FLAG_STR, &classes_s, "all, or a comma-separated list of class indices"},
        {"shard", FLAG_STR, &shard_s, "I/N: only the classes k with k mod N = I; N processes with I = 0..N-1 on one --out fill it together; auto: I and N from mpirun, srun or a Slurm array"},
        {"holdout", FLAG_INT, &holdout,
         "hold out this many training images per class (the validation split of dap eval --val)", 0, 1000000},
        {"split-seed", FLAG_INT, &split_seed, "seed of the holdout split (as dap eval --split-seed)", 0, FLAG_INT_MAX},
        {"steps", FLAG_INT, &o.steps, "DDIM steps", 1, 1000},
        {"eta", FLAG_FLOAT, &o.eta, "DDIM eta (0: deterministic)", 0, 1},
        {"clip-x0", FLAG_FLOAT, &o.clip_x0, "clamp the predicted x0 to [-X, X] every step (0: off, as the official DiT; 1 suits pixel data in [-1, 1])", 0, 100},
        {"cfg", FLAG_FLOAT, &o.cfg, "classifier-free guidance scale (1: none; beyond +-50 every pixel saturates)", -DAP_CFG_MAX, DAP_CFG_MAX},
        {"gamma", FLAG_FLOAT, &o.gamma, "dap: representativeness guidance scale (0: vanilla; beyond +-1e4 every pixel saturates)", -DAP_GAMMA_MAX, DAP_GAMMA_MAX},
        {"kernel", FLAG_STR, &kernel_s, "dap: Mercer kernel, linear | rbf"},
        {"sigma", FLAG_FLOAT, &o.sigma, "dap: RBF bandwidth", 1e-06, 1000000},
        {"layer", FLAG_INT, &o.layer, "dap: feature block l, 1-based (0: about depth/4)", 0, 1000},
        {"pool", FLAG_STR, &pool_s, "dap: token pooling, flatten | mean"},
        {"n-real", FLAG_INT, &o.n_real, "dap: real samples per class N", 1, 1000000},
        {"stop", FLAG_FLOAT, &o.stop, "dap: fraction of the last steps without guidance (0: guide all)", 0, 1},
        {"form", FLAG_STR, &form_s, "dap: update form, x (x_prev -= gamma grad E) | eps (eps += gamma sqrt(1-a) grad E)"},
        {"repel", FLAG_FLOAT, &o.repel, "dap: weight of the repulsion among a class's synthetic samples (0: off, the paper; 1: about the energy distance)", 0, 10000},
        {"fixed-noise", FLAG_BOOL, &fixed_noise, "dap: one noise draw per real sample for the whole trajectory"},
        {"init", FLAG_STR, &init_s, "start of each trajectory: noise (the paper) | real (a random real image of the class) | kmeans (a k-means centre of the class's real images) | medoid (the real image nearest each centre); all but noise are noised to the first step of a partial trajectory"},
        {"strength", FLAG_STR, &strength_s, "with --init real|kmeans|medoid or d4m: fraction of the --steps run, in (0, 1] (default: 1, from almost pure noise; d4m: 0.7)"},
        {"mode-lambda", FLAG_FLOAT, &o.mode_lambda, "mgd3: mode guidance scale lambda (guided for the steps before --stop)", -10000, 10000},
        {"surrogate", FLAG_STR, &sur_path, "igd: surrogate classifier (a dap teacher checkpoint trained on the real data)"},
        {"igd-scale", FLAG_FLOAT, &o.igd_scale, "igd: influence guidance scale k", -10000, 10000},
        {"igd-dev", FLAG_FLOAT, &o.igd_dev, "igd: deviation guidance scale gamma (0: off)", 0, 10000},
        {"igd-low", FLAG_FLOAT, &o.igd_low, "igd: guided while S-1-step is in [low S, high S]: low", 0, 1},
        {"igd-high", FLAG_FLOAT, &o.igd_high, "igd: ... high", 0, 1},
        {"igd-n-real", FLAG_INT, &o.igd_n_real, "igd: real images of the class behind its mean gradient", 1, 1000000},
        {"igd-memory", FLAG_INT, &o.igd_memory, "igd: earlier samples of the class the deviation guidance sees", 0, 1000000},
        {"iterations", FLAG_INT, &o.iterations, "dm: optimisation iterations (their code: 20000, models/dm.flags; about 3.4 CPU s per class each here; 0: the real start)", 0, 10000000},
        {"lr-img", FLAG_FLOAT, &o.lr_img, "dm: image learning rate (SGD, momentum 0.5)", 1e-9, 1e6},
        {"batch-real", FLAG_INT, &o.batch_real, "dm: real images per class and iteration", 1, 1000000},
        {"dm-width", FLAG_INT, &o.dm_width, "dm: width of the random ConvNet-3", 1, 4096},
        {"batch", FLAG_INT, &o.batch, "most samples per model call", 1, 100000},
        CLI_THREADS_FLAG(&threads),
        {"device", FLAG_STR, &device, "cpu or cuda: where the DiT runs, sampling and guidance (cuda: a build made with make CUDA=1; default $DAP_DEVICE, else cpu)"},
        {"precision", FLAG_STR, &precision, "fp32 | tf32 | bf16: the GPU's matrix products (cuda only; default fp32)"},
        {"gpu", FLAG_STR, &gpu_s, CLI_GPU_HELP},
        {"quiet", FLAG_BOOL, &quiet, "no progress lines"},
        {"defaults", FLAG_STR, &defaults_s, "the model's validated flags: FILE ([sampler] and [METHOD] sections), or none (default: MODEL.defaults beside MODEL.safetensors when it exists); the command line wins"},
    };
    const char *pos[1];
    int npos;
    int r = cli_model_defaults("distill", argc, argv, &argc, &argv, &defaults_used);
    if (r) return r;
    r = flags_parse("distill", "--model FILE --method random|vanilla|dap|mgd3|d4m|dm|igd|minimax --ipc N --out DIR [flags]",
                        "Distills a dataset into IPC images per class by sampling a class-conditional diffusion\n"
                        "model, with the representativeness guidance of DAP (method dap), without it (vanilla),\n"
                        "or takes a random real subset (random); mgd3, d4m, dm and igd are the paper's rivals,\n"
                        "minimax samples a Minimax-diffusion fine-tune (dap train --minimax) as vanilla does\n"
                        "(docs/methods.md). Rerun the same command to resume.",
                        flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (r == 2 && *defaults_used) fprintf(stderr, "dap distill: (the flags before the command line's came from %s)\n", defaults_used);
    if (r) return r == 1 ? 0 : 2;
    if (!out) return cli_failf("distill", "--out DIR is required");
    if ((o.method = dap_method_parse(method_s)) < 0)
        return cli_failf("distill", "--method must be random, vanilla, dap, mgd3, d4m, dm, igd or minimax (got '%s')", method_s);
    if ((o.kernel = dap_kernel_parse(kernel_s)) < 0)
        return cli_failf("distill", "--kernel must be linear or rbf (got '%s')", kernel_s);
    if ((o.pool = dap_pool_parse(pool_s)) < 0)
        return cli_failf("distill", "--pool must be flatten or mean (got '%s')", pool_s);
    if ((o.init = dap_init_parse(init_s)) < 0)
        return cli_failf("distill", "--init must be noise, real, kmeans or medoid (got '%s')", init_s);
    if (!strcmp(form_s, "x")) o.form = DAP_FORM_X;
    else if (!strcmp(form_s, "eps")) o.form = DAP_FORM_EPS;
    else return cli_failf("distill", "--form must be x or eps (got '%s')", form_s);
    if (seed < 0 || holdout < 0 || split_seed < 0)
        return cli_failf("distill", "--seed, --holdout and --split-seed must be >= 0");
    if (dap_method_uses_model(o.method) && !model_path)
        return cli_failf("distill", "--model FILE is required for method %s", method_s);
    if (o.method == DAP_METHOD_MINIMAX) { /* a fine-tune made by dap train --minimax, said by its metadata */
        char *ft = NULL;
        int frc = dap_dit_finetune_from_file(model_path, &ft);
        if (frc == DAP_OK) frc = dap_distill_check_minimax(ft, model_path);
        free(ft);
        if (frc) return cli_fail("distill", frc);
    }
    if (o.method == DAP_METHOD_IGD && !sur_path)
        return cli_failf("distill", "--surrogate FILE is required for method igd (a classifier from dap teacher)");
    if (o.method != DAP_METHOD_IGD && sur_path)
        return cli_failf("distill", "--surrogate applies to method igd only (got method %s)", method_s);
    if (o.method == DAP_METHOD_D4M) {
        if (o.init != DAP_INIT_NOISE)
            return cli_failf("distill", "--init %s: d4m starts from its k-means prototypes (leave --init out)", init_s);
        o.init = DAP_INIT_KMEANS;
    }
    o.strength = o.method == DAP_METHOD_D4M ? 0.7 : 1.0; /* D4M's img2img strength */
    if (strength_s) {
        char *end;
        o.strength = strtod(strength_s, &end);
        if (end == strength_s || *end || !isfinite(o.strength))
            return cli_failf("distill", "--strength expects a finite number in (0, 1] (got '%s')", strength_s);
    }
    o.seed = (uint64_t)seed;
    o.fixed_noise = fixed_noise;
    if (o.method == DAP_METHOD_VANILLA || o.method == DAP_METHOD_MINIMAX) o.gamma = 0, o.repel = 0;
    int shard_i = 0, shard_n = 0;
    if (shard_s && !strcmp(shard_s, "auto")) { /* one process of mpirun, srun or a Slurm array */
        const char *which;
        int rc_l = dap_launcher_rank(&shard_i, &shard_n, &which);
        if (rc_l) return cli_failf("distill", "--shard auto: %s (or give --shard I/N)", dap_last_error());
        if (!quiet) fprintf(stderr, "dap distill: shard %d/%d (from %s)\n", shard_i, shard_n, which);
        if (strcmp(classes_s, "all"))
            return cli_failf("distill", "--shard and --classes both pick the classes: give one of them");
    } else if (shard_s) {
        char *slash, *end = NULL;
        long i = strtol(shard_s, &slash, 10), n = *slash == '/' ? strtol(slash + 1, &end, 10) : 0;
        if (slash == shard_s || *slash != '/' || end == slash + 1 || *end || n < 1 || n > 1000000 || i < 0 || i >= n)
            return cli_failf("distill", "--shard: expected I/N with 0 <= I < N (this process's share of the classes), got '%s'",
                             shard_s);
        shard_i = (int)i, shard_n = (int)n;
        if (strcmp(classes_s, "all"))
            return cli_failf("distill", "--shard and --classes both pick the classes: give one of them");
    }
    cli_apply_threads(threads);
    if (quiet) dap_log_set_level(DAP_LOG_QUIET);
    else if (*defaults_used) fprintf(stderr, "dap distill: defaults from %s\n", defaults_used);
    if (cli_select_device("distill", device, precision, gpu_s)) return 1;
    int rc = 0;

    if (cache_s && !vae_path) return cli_failf("distill", "--latent-cache needs --vae (a latent model)");
    if ((rc = latent_check_files(model_path, vae_path))) return cli_fail("distill", rc); /* a VAE as the model or the reverse */
    char cache_dir[4096];
    snprintf(cache_dir, sizeof cache_dir, "%s/.latent-cache", out);
    latent_run lat = {0}, *lr = vae_path ? &lat : NULL;
    dap_dataset full, real, val;
    /* the model's geometry and training data, before the data is read: a pixel model's
     * data is converted to its size and channels (said below when that changes it) */
    dap_dit_config pre = {0};
    char data_buf[4096];
    int pixel_model = 0;
    if (model_path) {
        char *recorded = NULL;
        if ((rc = dap_dit_config_from_file(model_path, &pre)) ||
            (rc = dap_dit_train_data_from_file(model_path, &recorded)))
            return cli_fail("distill", rc);
        pixel_model = pre.in_channels == 1 || pre.in_channels == 3;
        if (!data && recorded) {
            snprintf(data_buf, sizeof data_buf, "%s", recorded);
            data = data_buf;
            dap_log(DAP_LOG_INFO, "dap distill: --data %s (the data %s was trained on)\n", data, model_path);
        }
        free(recorded);
        if (!data && !dap_class_names_guess(pre.num_classes, pre.in_channels, pre.input_size))
            return cli_failf("distill", "--data is required: %s does not record the data it was trained on (models "
                                        "from dap train do) and is not shaped as a Fashion-MNIST model", model_path);
    }
    if (!data && vae_path)
        return cli_failf("distill", "--data is required with --vae (e.g. imagenette:DIR): a latent model's data is not recorded");
    if (!data) {
        data = "fmnist";
        dap_log(DAP_LOG_INFO, "dap distill: --data fmnist (the default%s)\n",
                model_path ? ", for a Fashion-MNIST-shaped model without a record of its data" : "");
    }
    if (vae_path) { /* real images stay files until a class needs them: real holds the names */
        if (o.method == DAP_METHOD_DM)
            return cli_failf("distill", "--method dm optimises pixels against random ConvNets and uses no prior: run it without --vae");
        if (o.method == DAP_METHOD_RANDOM && image_size == 0)
            return cli_failf("distill", "--method random with --vae copies real images: give their --image-size (the prior's, e.g. 256)");
        rc = latent_open(lr, data, o.method == DAP_METHOD_RANDOM ? NULL : vae_path, cache_s ? cache_s : cache_dir,
                         image_size, holdout, split_seed, &real);
        if (rc) return cli_fail("distill", rc);
    } else if ((rc = dap_dataset_load(&full, data, "train", pixel_model ? pre.input_size : image_size,
                                      pixel_model ? pre.in_channels : 0))) {
        return cli_fail("distill", rc);
    } else {
        char note[256];
        if (dap_dataset_prep_note(&full, note, sizeof note))
            dap_log(DAP_LOG_INFO, "dap distill: data %s: %s (the model's input)\n", data, note);
        if (holdout > 0) {
            dap_dataset_split(&full, holdout, (unsigned long long)split_seed, &real, &val);
            dap_dataset_free(&val);
            dap_dataset_free(&full);
        } else {
            real = full;
        }
    }
    const int K = real.num_classes;
    int *todo = dap_calloc((size_t)K, sizeof(int)), ntodo = 0;
    int *labels = dap_malloc(sizeof(int) * (size_t)(K > 0 ? K : 1)), *order = dap_malloc(sizeof(int) * (size_t)(K > 0 ? K : 1));
    if (shard_n > 0) {
        for (int k = 0; k < K; k++) todo[k] = k % shard_n == shard_i;
    } else if (!strcmp(classes_s, "all")) {
        for (int k = 0; k < K; k++) todo[k] = 1;
    } else {
        const char *p = classes_s;
        while (*p) {
            char *end;
            long k = strtol(p, &end, 10);
            if (end == p || k < 0 || k >= K || (*end && *end != ',')) {
                free(todo), free(labels), free(order);
                dap_dataset_free(&real);
                latent_close(&lat);
                return cli_failf("distill", "--classes: expected 'all' or indices in 0..%d separated by commas, got '%s'",
                                 K - 1, classes_s);
            }
            if (todo[k]) {
                free(todo), free(labels), free(order);
                dap_dataset_free(&real);
                latent_close(&lat);
                return cli_failf("distill", "--classes: class %ld is listed twice in '%s'", k, classes_s);
            }
            todo[k] = 1;
            p = *end ? end + 1 : end;
        }
    }
    for (int k = 0; k < K; k++) ntodo += todo[k];

    dap_dit *m = NULL;
    dap_classifier sur;
    int have_sur = 0;
    char hash[17] = "none", sur_hash[17] = "none";
    if (dap_method_uses_model(o.method)) {
        if ((rc = dap_dit_load(&m, model_path, 0, 0)) || (rc = dap_file_hash(model_path, hash))) {
            dap_dataset_free(&real);
            latent_close(&lat);
            free(todo), free(labels), free(order);
            return cli_fail("distill", rc);
        }
        if (o.method == DAP_METHOD_DAP && o.layer == 0) o.layer = (m->cfg.depth + 2) / 4;
        if ((rc = latent_check_model(m, model_path, lat.vae, vae_path, &image_size))) goto fail;
        if (lr) latent_set_size(lr, image_size, &real);
        if (lr && lat.vae) { /* on a GPU: the cache's encoder chunks and one decode must fit */
            const int f = dap_vae_factor(dap_vae_get_config(lat.vae));
            if ((rc = dap_vae_check_memory(lat.vae, 0, lat.cache.batch, image_size, image_size)) ||
                (rc = dap_vae_check_memory(lat.vae, 1, 1, image_size / f, image_size / f)))
                goto fail;
        }
    }
    if (o.method == DAP_METHOD_IGD) {
        if ((rc = dap_classifier_load(&sur, sur_path))) goto fail;
        have_sur = 1;
        if ((rc = dap_file_hash(sur_path, sur_hash))) goto fail;
        o.surrogate = &sur;
        if (lr) o.igd_vae = lr->vae; /* a latent prior: the surrogate sees the decoded images */
    }
    /* the model's label of each data class, by name (a folder lists its classes alphabetically) */
    const char *names_source = "none";
    for (int k = 0; k < K; k++) labels[k] = k;
    if (m) {
        const dap_dit_config *mc = &m->cfg;
        const char *const *names = (const char *const *)m->class_names;
        names_source = "model";
        if (!names && (names = dap_class_names_guess(mc->num_classes, mc->in_channels, mc->input_size)))
            names_source = mc->num_classes == DAP_IMAGENET_CLASSES
                               ? "imagenet (a model without class names: ImageNet-1K wnids)"
                               : "fmnist (a 10-class 28x28x1 model without class names)";
        if ((rc = dap_class_map(names, mc->num_classes, &real, labels, model_path))) goto fail;
        o.labels = labels;
    }
    for (int q = 0, l = 0; q < K; l++) /* data classes by label (labels are distinct) */
        for (int k = 0; k < K; k++)
            if (labels[k] == l) order[q++] = k;
    if ((rc = dap_distill_check(m, &o))) goto fail; /* a bad flag leaves no folder behind */
    { /* likewise for what only a class's data can refuse (a latent run: its counts and latent shape) */
        dap_dataset view;
        if (lr) latent_check_view(lr, &view);
        for (int k = 0; k < K && rc == DAP_OK; k++)
            if (todo[k]) rc = dap_distill_check_class(m, lr ? &view : &real, k, &o);
        if (lr) free(view.class_count);
        if (rc) goto fail;
    }
    if (m) { /* --device cuda: the weights up, and the states dap_distill_class makes must fit: CFG
              * eps, and for dap the synthetic samples' (cached to the layer) and the real ones' */
        const int chunk = o.batch < o.ipc ? o.batch : o.ipc, nr = o.batch < o.n_real ? o.batch : o.n_real;
        const int batches[3] = {o.cfg != 1.0 ? 2 * chunk : chunk, chunk, nr}, caches[3] = {0, o.layer, 0};
        if ((rc = dap_dit_to_device(m)) ||
            (rc = dap_dit_states_fit(m, o.method == DAP_METHOD_DAP ? 3 : 1, batches, caches, "--batch")))
            goto fail;
        if (m->dev && !quiet)
            fprintf(stderr, "dap distill: %s, precision %s\n", dap_device_describe(), dap_precision_name(dap_device_precision()));
    }

    /* resume: the folder must hold a run with the same parameters; a new folder is marked
     * with them only once its first class is made (mark_params), so that a run failing
     * before that leaves nothing a corrected command would be refused for */
    char line[2048], path[4096];
    /* the images themselves: a latent run's stay on disk (their names and sizes) */
    const unsigned long long dh = lr ? latent_data_hash(lr) : dap_dataset_hash(&real);
    params_line(line, sizeof line, data, hash, holdout, split_seed, &o, K, (unsigned long long)dh, sur_hash);
    if (lr) { /* a latent run: its VAE and resolution define the images too */
        size_t len = strlen(line);
        snprintf(line + len, sizeof line - len, " vae=%s image_size=%d crop=adm", lr->vae_hash, image_size);
    }
    if ((rc = dap_mkdir_p(out))) goto fail;
    if ((rc = mark_params(out, line, o.method, NULL, 0))) goto fail;

    {
        const size_t per = (size_t)real.c * real.h * real.w;
        /* a dataset of IPC images per class for writing, filled class by class */
        dap_dataset syn = {0};
        syn.n = o.ipc * K, syn.c = real.c, syn.h = real.h, syn.w = real.w, syn.num_classes = K;
        syn.class_names = real.class_names;
        syn.x = dap_alloc_f32((size_t)syn.n * per);
        syn.y = dap_malloc(sizeof(int) * (size_t)syn.n);
        for (int i = 0; i < syn.n; i++) syn.y[i] = i / o.ipc;
        dap_dataset_index(&syn);
        dap_distill_stats *stats = dap_calloc((size_t)K, sizeof(dap_distill_stats));
        int *resumed = dap_calloc((size_t)K, sizeof(int));
        double t0 = dap_time_now(), done_s = 0;
        int done = 0;
        for (int k = 0; k < K && rc == DAP_OK; k++) {
            if (!todo[k]) continue;
            char statp[4096], txt[512];
            stats_path(statp, sizeof statp, out, k);
            if (class_done(out, &real, k, &stats[k])) {
                resumed[k] = 1;
                done++;
                dap_log(DAP_LOG_INFO, "dap distill: class %d (%s) already done, skipped\n", k, real.class_names[k]);
                continue;
            }
            if (lr) rc = latent_distill_class(lr, m, k, &o, syn.x + (size_t)k * o.ipc * per, &stats[k]);
            else rc = dap_distill_class(m, &real, k, &o, syn.x + (size_t)k * o.ipc * per, &stats[k]);
            if (rc == DAP_OK) rc = mark_params(out, line, o.method, &syn, k); /* saves class k */
            if (rc == DAP_OK && lr) rc = latent_save_class(lr, out, real.class_names[k], k, o.labels ? o.labels[k] : k);
            if (rc == DAP_OK) {
                snprintf(txt, sizeof txt, "%.17g %d %.17g %.17g\n", stats[k].seconds, stats[k].guided_steps,
                         stats[k].energy_first, stats[k].energy_last);
                rc = dap_write_file_atomic(statp, txt, strlen(txt));
            }
            if (rc != DAP_OK) break;
            done++;
            done_s += stats[k].seconds;
            int ran = 0;
            for (int q = 0; q <= k; q++) ran += todo[q] && !resumed[q];
            double eta_s = done_s / ran * (ntodo - done);
            if (has_energy(o.method))
                dap_log(DAP_LOG_INFO, "dap distill: class %d/%d (%s): %d images in %.1f s, %s %.4g -> %.4g, ETA %.0f s\n",
                        done, ntodo, real.class_names[k], o.ipc, stats[k].seconds,
                        o.method == DAP_METHOD_DM ? "loss" : o.method == DAP_METHOD_IGD ? "influence" : "energy",
                        stats[k].energy_first, stats[k].energy_last, eta_s);
            else
                dap_log(DAP_LOG_INFO, "dap distill: class %d/%d (%s): %d images in %.1f s, ETA %.0f s\n", done, ntodo,
                        real.class_names[k], o.ipc, stats[k].seconds, eta_s);
        }
        /* The folder may be shared with other processes (--shard): the manifest and the grid
         * describe every class it holds, and are written under a lock, so whichever process
         * finishes last writes them with every class. */
        int lock = -1, have = 0;
        int *made = dap_calloc((size_t)K, sizeof(int)), *present = dap_calloc((size_t)K, sizeof(int));
        if (rc == DAP_OK) {
            snprintf(path, sizeof path, "%s/.dap-distill.lock", out);
            if ((lock = dap_lock_file(path)) < 0) rc = DAP_ERR_IO;
        }
        if (rc == DAP_OK) {
            for (int k = 0; k < K; k++) {
                made[k] = todo[k] && !resumed[k]; /* by this run */
                /* classes of this run (made or resumed) have their stats; others are looked up */
                present[k] = made[k] || resumed[k] || class_done(out, &real, k, &stats[k]);
                have += present[k];
            }
        }
        distill_run info = {.defaults = defaults_used, .data = data, .model_path = model_path, .hash = hash,
                            .finetune = m ? m->finetune : NULL, .sur_path = sur_path, .sur_hash = sur_hash,
                            .holdout = holdout, .split_seed = split_seed, .has_model = m != NULL, .o = &o, .real = &real,
                            .order = order, .names_source = names_source, .lat = lr, .vae_path = vae_path};
        if (rc == DAP_OK) rc = write_manifest(out, &info, stats, present, made, have);
        if (rc == DAP_OK) rc = write_grid(out, &real, o.ipc, order); /* read back: also proves the folder loads */
        dap_unlock_file(lock);
        if (rc == DAP_OK)
            dap_log(DAP_LOG_INFO, "dap distill: %s, %d classes x %d images in %s (%.1f s this run)%s\n",
                    dap_method_name(o.method), have, o.ipc, out, dap_time_now() - t0,
                    have < K ? "; the other classes are not done yet (other shards, or --classes)" : "");
        free(made), free(present);
        syn.class_names = NULL; /* borrowed */
        dap_dataset_free(&syn);
        free(stats);
        free(resumed);
    }
fail:
    if (m) dap_dit_destroy(m);
    latent_close(&lat);
    if (have_sur) dap_classifier_free(&sur);
    dap_dataset_free(&real);
    free(todo), free(labels), free(order);
    return rc ? cli_fail("distill", rc) : 0;
}
