/*
 * cmd_vae.c: `dap vae encode` and `dap vae decode`: images to Stable Diffusion VAE
 * latents and back.
 *
 *   encode: an image, or a folder of images (PNG / JPEG, directly in it or one folder
 *           level down, as an image folder by class has them; sorted by path), resized
 *           (shorter side) and centre-cropped to --size, scaled to [-1, 1], encoded:
 *           tensor `latent` (B, 4, size/8, size/8) = 0.18215 * posterior mean (--sample:
 *           a posterior sample from --seed). __metadata__ names the sources in order.
 *   decode: tensor `latent` of a safetensors file -> OUT.safetensors (tensor `image`
 *           (B, 3, H, W), unclipped floats about [-1, 1]), OUT.png (the image, or a grid of
 *           all when B > 1), or a folder (an existing one, or a path ending in '/'):
 *           DIR/000000.png, DIR/000001.png, ...
 * Every input is checked before the network runs; outputs are written atomically.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/core.h"
#include "core/device.h"
#include "io/io.h"
#include "models/vae.h"

typedef struct { char **s; int n, cap; } strlist;

static void strlist_add(strlist *l, const char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->s = dap_realloc(l->s, (size_t)l->cap * sizeof *l->s);
    }
    l->s[l->n++] = dap_strdup(s);
}

static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int is_dir(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

static int image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

/* Image files of DIR and of its subfolders (one level), sorted by path. */
static int list_images(const char *dir, strlist *out, int depth) {
    DIR *d = opendir(dir);
    if (!d) return dap_error(DAP_ERR_IO, "%s: cannot open the folder", dir);
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (depth == 0 && is_dir(path)) list_images(path, out, 1);
        else if (image_ext(e->d_name) && !is_dir(path)) strlist_add(out, path);
    }
    closedir(d);
    if (depth == 0 && out->n > 1) qsort(out->s, (size_t)out->n, sizeof *out->s, by_name);
    return DAP_OK;
}

/* The folder an output file goes into must exist (checked before any work). */
static int parent_exists(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return 1;
    if (slash == dir) return 1;
    *slash = '\0';
    return is_dir(dir);
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcasecmp(s + n - m, tail);
}

static int load_vae(const char *cmd, const char *path, dap_vae **v) {
    if (!path) return cli_failf(cmd, "--vae FILE is required (an AutoencoderKL safetensors file)");
    double t0 = dap_time_now();
    int rc = dap_vae_load(v, path);
    if (rc) return cli_fail(cmd, rc);
    const dap_vae_config *c = dap_vae_get_config(*v);
    char chs[96] = "";
    for (int i = 0; i < c->levels; i++)
        snprintf(chs + strlen(chs), sizeof chs - strlen(chs), "%s%d", i ? "/" : "", c->ch[i]);
    fprintf(stderr, "dap %s: %s: %s names, channels %s, %d groups, factor %d (%.1f s)\n", cmd, path,
            dap_vae_naming(*v), chs, c->groups, dap_vae_factor(c), dap_time_now() - t0);
    if (c->in_channels != 3 && c->in_channels != 1) {
        dap_vae_destroy(*v);
        return cli_failf(cmd, "%s: a VAE of %d image channels (expected 1 or 3)", path, c->in_channels);
    }
    if ((rc = dap_vae_to_device(*v))) {
        dap_vae_destroy(*v);
        return cli_fail(cmd, rc);
    }
    if (dap_vae_on_device(*v)) fprintf(stderr, "dap %s: on %s\n", cmd, dap_device_describe());
    return 0;
}

static int vae_encode(int argc, char **argv) {
    const char *cmd = "vae encode";
    const char *vae_path = NULL, *in = NULL, *out = NULL, *device = NULL, *gpu_s = NULL;
    int size = 256, sample = 0, seed = 0, batch = 4, threads = 0;
    flag flags[] = {
        {"vae", FLAG_STR, &vae_path, "VAE weights (diffusers, pre-0.14 diffusers or LDM names; a whole SD checkpoint)"},
        {"in", FLAG_STR, &in, "an image, or a folder of images (and of class folders)"},
        {"out", FLAG_STR, &out, "latents file (safetensors, tensor `latent`)"},
        {"size", FLAG_INT, &size, "resize the shorter side to this and centre-crop (a multiple of 8)", 1, 8192},
        {"sample", FLAG_BOOL, &sample, "a posterior sample instead of the mean"},
        {"seed", FLAG_INT, &seed, "noise seed for --sample", 0, FLAG_INT_MAX},
        {"batch", FLAG_INT, &batch, "images per encoder call", 1, 1000000},
        {"device", FLAG_STR, &device, CLI_VAE_DEVICE_HELP},
        {"gpu", FLAG_STR, &gpu_s, CLI_GPU_HELP},
        CLI_THREADS_FLAG(&threads),
    };
    const char *pos[1];
    int npos;
    int rc = flags_parse(cmd, "--vae FILE --in IMG|DIR --out LAT.safetensors [flags]",
                         "Encodes images to Stable Diffusion VAE latents (0.18215 x the posterior mean).", flags,
                         (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (!in) return cli_failf(cmd, "--in IMG|DIR is required");
    if (!out) return cli_failf(cmd, "--out LAT.safetensors is required");
    if (size <= 0 || size > 8192) return cli_failf(cmd, "--size: expected 1..8192, found %d", size);
    if (batch < 1 || seed < 0) return cli_failf(cmd, "--batch must be >= 1 and --seed >= 0");
    if (!parent_exists(out)) return cli_failf(cmd, "--out %s: its folder does not exist", out);
    if (cli_select_device(cmd, device, NULL, gpu_s)) return 1;
    cli_apply_threads(threads);

    strlist files = {0};
    if (is_dir(in)) {
        if ((rc = list_images(in, &files, 0))) return cli_fail(cmd, rc);
        if (files.n == 0) {
            strlist_free(&files);
            return cli_failf(cmd, "%s: no PNG or JPEG images in the folder or its subfolders", in);
        }
    } else if (dap_file_exists(in)) {
        strlist_add(&files, in);
    } else {
        return cli_failf(cmd, "--in %s: no such file or folder", in);
    }
    dap_vae *v = NULL;
    if ((rc = load_vae(cmd, vae_path, &v))) {
        strlist_free(&files);
        return rc;
    }
    const dap_vae_config *c = dap_vae_get_config(v);
    const int f = dap_vae_factor(c), C = c->in_channels, L = c->latent_channels, ls = size / f;
    float *x = NULL, *lat = NULL;
    uint8_t *px = NULL;
    dap_st_writer *w = NULL;
    dap_json j;
    dap_json_init(&j);
    if (size % f) {
        rc = dap_error(DAP_ERR_ARG, "--size %d is not a multiple of %d (the VAE's downsampling factor)", size, f);
        goto done;
    }
    /* every image readable before the network runs */
    for (int i = 0; i < files.n; i++) {
        dap_image8 im;
        if ((rc = dap_image_read(files.s[i], &im))) goto done;
        dap_image8_free(&im);
    }
    const size_t per = (size_t)C * size * size, lper = (size_t)L * ls * ls;
    x = dap_alloc_f32((size_t)batch * per);
    lat = dap_alloc_f32((size_t)files.n * lper);
    px = dap_malloc((size_t)size * size * C);
    dap_rng rng;
    dap_rng_init(&rng, (uint64_t)seed, 0);
    fprintf(stderr, "dap %s: %d image%s at %dx%d -> latents (%d, %d, %d, %d)%s\n", cmd, files.n,
            files.n > 1 ? "s" : "", size, size, files.n, L, ls, ls, sample ? ", posterior samples" : "");
    if ((rc = dap_vae_check_memory(v, 0, files.n < batch ? files.n : batch, size, size))) goto done;
    const double t0 = dap_time_now();
    for (int i0 = 0; i0 < files.n; i0 += batch) {
        const int B = files.n - i0 < batch ? files.n - i0 : batch;
        for (int b = 0; b < B; b++) {
            dap_image8 im;
            if ((rc = dap_image_read(files.s[i0 + b], &im))) goto done;
            dap_image_resize_crop(&im, size, C, px);
            dap_image8_free(&im);
            dap_image_from_u8(px, C, size, size, x + (size_t)b * per);
        }
        if ((rc = dap_vae_encode(v, x, B, size, size, lat + (size_t)i0 * lper, sample ? &rng : NULL))) goto done;
        double dt = dap_time_now() - t0;
        fprintf(stderr, "\rdap %s: %d/%d images (%.2f s/image)", cmd, i0 + B, files.n, dt / (i0 + B));
    }
    fprintf(stderr, "\n");
    dap_json_begin_array(&j, NULL);
    for (int i = 0; i < files.n; i++) dap_json_str(&j, NULL, files.s[i]);
    dap_json_end_array(&j);
    char num[64];
    w = dap_st_writer_create();
    dap_st_writer_meta(w, "format", "dap-vae-latents");
    dap_st_writer_meta(w, "sources", j.buf);
    snprintf(num, sizeof num, "%d", size);
    dap_st_writer_meta(w, "size", num);
    dap_st_writer_meta(w, "vae", vae_path);
    dap_st_writer_meta(w, "posterior", sample ? "sample" : "mean");
    snprintf(num, sizeof num, "%d", seed);
    if (sample) dap_st_writer_meta(w, "seed", num);
    snprintf(num, sizeof num, "%.9g", (double)c->scale);
    dap_st_writer_meta(w, "scaling_factor", num);
    int64_t shape[4] = {files.n, L, ls, ls};
    dap_st_writer_add(w, "latent", DAP_DT_F32, lat, 4, shape);
    if ((rc = dap_st_writer_save(w, out))) goto done;
    fprintf(stderr, "dap %s: wrote %s\n", cmd, out);
done:
    if (w) dap_st_writer_destroy(w);
    dap_json_free(&j);
    free(px);
    dap_free_aligned(lat);
    dap_free_aligned(x);
    dap_vae_destroy(v);
    strlist_free(&files);
    return rc ? cli_fail(cmd, rc) : 0;
}

static int vae_decode(int argc, char **argv) {
    const char *cmd = "vae decode";
    const char *vae_path = NULL, *in = NULL, *out = NULL, *device = NULL, *gpu_s = NULL;
    int batch = 4, threads = 0, grid_cols = 8;
    flag flags[] = {
        {"vae", FLAG_STR, &vae_path, "VAE weights (diffusers, pre-0.14 diffusers or LDM names; a whole SD checkpoint)"},
        {"in", FLAG_STR, &in, "latents file (safetensors with tensor `latent` (B, 4, h, w))"},
        {"out", FLAG_STR, &out, "OUT.png (a grid when B > 1), OUT.safetensors (tensor `image`, unclipped), or a folder (DIR/000000.png, ...)"},
        {"batch", FLAG_INT, &batch, "latents per decoder call", 1, 1000000},
        {"grid-cols", FLAG_INT, &grid_cols, "images per row of the grid PNG", 1, 1000000},
        {"device", FLAG_STR, &device, CLI_VAE_DEVICE_HELP},
        {"gpu", FLAG_STR, &gpu_s, CLI_GPU_HELP},
        CLI_THREADS_FLAG(&threads),
    };
    const char *pos[1];
    int npos;
    int rc = flags_parse(cmd, "--vae FILE --in LAT.safetensors --out OUT.png|OUT.safetensors|DIR/ [flags]",
                         "Decodes Stable Diffusion VAE latents (divided by 0.18215 first) to images.", flags,
                         (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (!in) return cli_failf(cmd, "--in LAT.safetensors is required");
    if (!out) return cli_failf(cmd, "--out OUT.png|OUT.safetensors|DIR/ is required");
    if (batch < 1 || grid_cols < 1) return cli_failf(cmd, "--batch and --grid-cols must be >= 1");
    const int to_dir = is_dir(out) || ends_with(out, "/");
    const int to_st = !to_dir && ends_with(out, ".safetensors");
    if (!to_dir && !to_st && !ends_with(out, ".png"))
        return cli_failf(cmd, "--out %s: expected a .png or .safetensors file, or a folder (ending in '/')", out);
    if (!to_dir && !parent_exists(out)) return cli_failf(cmd, "--out %s: its folder does not exist", out);
    if (cli_select_device(cmd, device, NULL, gpu_s)) return 1;
    cli_apply_threads(threads);

    dap_st *st = NULL;
    if ((rc = dap_st_open(&st, in))) return cli_fail(cmd, rc);
    const dap_st_tensor *t = dap_st_find(st, "latent");
    if (!t) {
        int vae = dap_vae_file_is_vae(in) == 1;
        rc = dap_error(DAP_ERR_MISSING, "%s: no tensor 'latent'%s", in,
                       vae ? " (this is a VAE checkpoint: pass it as --vae)" : " (expected the output of dap vae encode)");
        dap_st_close(st);
        return cli_fail(cmd, rc);
    }
    dap_vae *v = NULL;
    float *lat = NULL, *img = NULL;
    dap_st_writer *w = NULL;
    if ((rc = load_vae(cmd, vae_path, &v))) {
        dap_st_close(st);
        return rc;
    }
    const dap_vae_config *c = dap_vae_get_config(v);
    const int f = dap_vae_factor(c), C = c->in_channels;
    if (t->ndim != 4 || t->shape[1] != c->latent_channels || t->shape[0] < 1 || t->shape[2] < 1 || t->shape[3] < 1 ||
        t->shape[0] > 1000000 || t->shape[2] * f > 16384 || t->shape[3] * f > 16384) {
        char got[128];
        dap_shape_str(got, sizeof got, t->shape, t->ndim);
        rc = dap_error(DAP_ERR_SHAPE, "%s: tensor 'latent' has shape %s, expected (B, %d, h, w) with h, w <= %d", in,
                       got, c->latent_channels, 16384 / f);
        goto done;
    }
    const int B = (int)t->shape[0], h = (int)t->shape[2], wd = (int)t->shape[3], H = h * f, W = wd * f;
    const size_t lper = (size_t)c->latent_channels * h * wd, per = (size_t)C * H * W;
    lat = dap_alloc_f32((size_t)B * lper);
    if ((rc = dap_st_read_f32(st, "latent", lat, NULL, 0))) goto done;
    for (size_t k = 0; k < (size_t)B * lper; k++)
        if (!isfinite(lat[k])) {
            rc = dap_error(DAP_ERR_VALUE, "%s: tensor 'latent' holds a non-finite value at element %zu", in, k);
            goto done;
        }
    if (to_dir && (rc = dap_mkdir_p(out))) goto done;
    img = dap_alloc_f32((size_t)B * per);
    fprintf(stderr, "dap %s: %d latent%s (%d, %d, %d) -> images %dx%d\n", cmd, B, B > 1 ? "s" : "",
            c->latent_channels, h, wd, H, W);
    if ((rc = dap_vae_check_memory(v, 1, B < batch ? B : batch, h, wd))) goto done;
    const double t0 = dap_time_now();
    for (int i0 = 0; i0 < B; i0 += batch) {
        const int nb = B - i0 < batch ? B - i0 : batch;
        if ((rc = dap_vae_decode(v, lat + (size_t)i0 * lper, nb, h, wd, img + (size_t)i0 * per))) goto done;
        fprintf(stderr, "\rdap %s: %d/%d images (%.2f s/image)", cmd, i0 + nb, B, (dap_time_now() - t0) / (i0 + nb));
    }
    fprintf(stderr, "\n");
    if (to_st) {
        w = dap_st_writer_create();
        dap_st_writer_meta(w, "format", "dap-vae-images");
        dap_st_writer_meta(w, "latents", in);
        dap_st_writer_meta(w, "vae", vae_path);
        dap_st_writer_meta(w, "range", "unclipped, about [-1, 1]");
        int64_t shape[4] = {B, C, H, W};
        dap_st_writer_add(w, "image", DAP_DT_F32, img, 4, shape);
        rc = dap_st_writer_save(w, out);
    } else if (to_dir) {
        uint8_t *px = dap_malloc(per);
        char path[4096];
        for (int i = 0; i < B && rc == DAP_OK; i++) {
            snprintf(path, sizeof path, "%s%s%06d.png", out, ends_with(out, "/") ? "" : "/", i);
            dap_image_to_u8(img + (size_t)i * per, C, H, W, px);
            rc = dap_png_write(path, px, H, W, C);
        }
        free(px);
    } else if (B == 1) {
        uint8_t *px = dap_malloc(per);
        dap_image_to_u8(img, C, H, W, px);
        rc = dap_png_write(out, px, H, W, C);
        free(px);
    } else {
        int cols = B < grid_cols ? B : grid_cols, rows = (B + cols - 1) / cols;
        rc = dap_grid_write(out, img, B, rows, cols, C, H, W);
    }
    if (rc == DAP_OK) fprintf(stderr, "dap %s: wrote %s\n", cmd, out);
done:
    if (w) dap_st_writer_destroy(w);
    dap_free_aligned(img);
    dap_free_aligned(lat);
    dap_vae_destroy(v);
    dap_st_close(st);
    return rc ? cli_fail(cmd, rc) : 0;
}

int cmd_vae(int argc, char **argv) {
    const char *usage = "usage: dap vae encode --vae FILE --in IMG|DIR --out LAT.safetensors [flags]\n"
                        "       dap vae decode --vae FILE --in LAT.safetensors --out OUT.png|OUT.safetensors|DIR/ [flags]\n"
                        "\nStable Diffusion VAE (AutoencoderKL): images to latents and back "
                        "(dap vae encode --help, dap vae decode --help).\n";
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        if (argc >= 2) printf("\nExample:\n  %s\n", cli_example("vae"));
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "encode")) return vae_encode(argc - 1, argv + 1);
    if (!strcmp(argv[1], "decode")) return vae_decode(argc - 1, argv + 1);
    fprintf(stderr, "dap vae: error: unknown subcommand '%s' (expected encode or decode)\n", argv[1]);
    return 2;
}
