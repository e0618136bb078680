/*
 * cmd_sample.c: `dap sample`: class-conditional DDIM sampling from a trained DiT with
 * classifier-free guidance. Writes DIR/<class name>/<i>.png (the image-folder layout
 * the data loader reads) and DIR/grid.png, one row per class. Sample i of class k
 * starts from noise stream (seed, k << 32 | i) and draws its step noise from the same
 * stream, so an image does not depend on --batch or on the other classes requested.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "data/dataset.h"
#include "diffusion/ddim.h"
#include "io/io.h"
#include "models/dit.h"

typedef struct sampler_ctx {
    const dap_dit *m;
    dap_dit_state *st;
    int B;          /* samples in this batch */
    int C, Co, HW;
    size_t per;     /* C * HW */
    double w;       /* guidance scale; 1: conditional only */
    int *y;         /* (2 * batch): labels, then null labels */
    float *tf;      /* (2 * batch) */
    float *in;      /* (2 * batch, C, H, W) */
    float *out;     /* (2 * batch, Co, H, W) */
} sampler_ctx;

static int model_eps(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    sampler_ctx *s = ctx;
    const int guided = s->w != 1.0;
    const int n = guided ? 2 * s->B : s->B;
    memcpy(s->in, x_t, (size_t)s->B * s->per * sizeof(float));
    if (guided) memcpy(s->in + (size_t)s->B * s->per, x_t, (size_t)s->B * s->per * sizeof(float));
    for (int i = 0; i < n; i++) s->tf[i] = (float)c->t;
    /* y holds the B labels then B null labels: both contiguous for the first n */
    dap_dit_state_set_batch(s->st, n);
    dap_dit_forward(s->m, s->st, s->out, s->in, s->tf, s->y, 0);
    if (guided)
        dap_cfg_combine(eps, s->out, s->out + (size_t)s->B * s->Co * s->HW, s->B, s->Co, s->C, s->HW, s->w);
    else
        dap_eps_from_output(eps, s->out, s->B, s->Co, s->C, s->HW);
    return DAP_OK;
}

/* A class name as a folder name, as dap_dataset_save_folder writes it. */
static void folder_name(char *out, size_t n, const char *name, int k) {
    if (!name || !*name) {
        snprintf(out, n, "class%d", k);
        return;
    }
    snprintf(out, n, "%s", name);
    for (char *p = out; *p; p++)
        if (*p == '/') *p = '_';
    if (out[0] == '.') out[0] = '_';
}

/* "all" or a comma list of class indices or names. Returns the count or -1. */
static int parse_classes(const char *spec, int K, char **names, int *out) {
    if (!strcmp(spec, "all")) {
        for (int k = 0; k < K; k++) out[k] = k;
        return K;
    }
    int n = 0;
    const char *p = spec;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char tok[256];
        if (len == 0 || len >= sizeof tok) {
            dap_error(DAP_ERR_ARG, "--classes: empty or overlong entry in '%s'", spec);
            return -1;
        }
        memcpy(tok, p, len);
        tok[len] = '\0';
        char *end;
        long v = strtol(tok, &end, 10);
        int k = -1;
        if (*end == '\0' && end != tok) k = (v >= 0 && v < K) ? (int)v : -2;
        for (int j = 0; k == -1 && j < K; j++)
            if (names[j] && !strcmp(names[j], tok)) k = j;
        if (k < 0) {
            dap_error(DAP_ERR_ARG, "--classes: '%s' is not a class (expected 0..%d or a class name)", tok, K - 1);
            return -1;
        }
        if (n >= K) {
            dap_error(DAP_ERR_ARG, "--classes: more than %d entries in '%s'", K, spec);
            return -1;
        }
        out[n++] = k;
        p = e ? e + 1 : p + len;
    }
    if (n == 0) dap_error(DAP_ERR_ARG, "--classes: no class given");
    return n ? n : -1;
}

int cmd_sample(int argc, char **argv) {
    const char *model_path = NULL, *classes = "all", *out = NULL, *names_arg = NULL;
    int n = 10, steps = 50, seed = 0, batch = 50, threads = 0, grid_cols = 16;
    double cfg_w = 1.0, eta = 0.0;
    flag flags[] = {
        {"model", FLAG_STR, &model_path, "DiT checkpoint (safetensors)"},
        {"classes", FLAG_STR, &classes, "all, or a comma list of class indices / names"},
        {"n", FLAG_INT, &n, "images per class"},
        {"steps", FLAG_INT, &steps, "DDIM steps"},
        {"cfg", FLAG_FLOAT, &cfg_w, "classifier-free guidance scale (1: none)"},
        {"eta", FLAG_FLOAT, &eta, "DDIM eta (0: deterministic)"},
        {"seed", FLAG_INT, &seed, "noise seed"},
        {"out", FLAG_STR, &out, "output folder"},
        {"batch", FLAG_INT, &batch, "images per forward pass"},
        {"names", FLAG_STR, &names_arg, "comma list of class names (default: Fashion-MNIST's for 10-class 28x28x1 models, else class<k>)"},
        {"grid-cols", FLAG_INT, &grid_cols, "at most this many images per class in grid.png"},
        {"threads", FLAG_INT, &threads, "threads (0: all cores)"},
    };
    const char *pos[1];
    int npos;
    int rc = flags_parse("sample", "--model FILE --out DIR [flags]",
                         "Samples class-conditional images with DDIM and classifier-free guidance.", flags,
                         (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model_path) return cli_failf("sample", "--model FILE is required");
    if (!out) return cli_failf("sample", "--out DIR is required");
    if (n < 1 || batch < 1 || steps < 1 || seed < 0 || grid_cols < 1)
        return cli_failf("sample", "--n, --batch, --steps, --grid-cols must be >= 1 and --seed >= 0");
    if (eta < 0) return cli_failf("sample", "--eta: expected >= 0, found %g", eta);
    cli_apply_threads(threads);

    dap_dit *m = NULL;
    if ((rc = dap_dit_load(&m, model_path, 0, 0))) return cli_fail("sample", rc);
    const dap_dit_config *mc = &m->cfg;
    const int K = mc->num_classes, C = mc->in_channels, H = mc->input_size;
    if (C != 1 && C != 3) {
        dap_dit_destroy(m);
        return cli_failf("sample", "%s: a %d-channel (latent) model needs a VAE decoder, which dap sample "
                                   "does not have yet (pixel models: 1 or 3 channels)", model_path, C);
    }
    if (cfg_w != 1.0 && !(mc->class_dropout > 0)) {
        dap_dit_destroy(m);
        return cli_failf("sample", "--cfg %g needs a model with a null class; %s has none (use --cfg 1)", cfg_w,
                         model_path);
    }

    /* class names */
    char **names = dap_calloc((size_t)K, sizeof(char *));
    char *names_buf = names_arg ? dap_strdup(names_arg) : NULL;
    int *list = dap_malloc((size_t)K * sizeof(int));
    if (names_buf) {
        int k = 0;
        for (char *tok = strtok(names_buf, ","); tok; tok = strtok(NULL, ",")) {
            if (k < K) names[k] = tok;
            k++;
        }
        if (k != K) {
            rc = dap_error(DAP_ERR_ARG, "--names: expected %d names, found %d", K, k);
            goto done;
        }
    } else if (K == 10 && C == 1 && H == 28) {
        for (int k = 0; k < K; k++) names[k] = (char *)dap_fmnist_classes[k];
    }
    const int ncls = parse_classes(classes, K, names, list);
    if (ncls < 0) {
        rc = DAP_ERR_ARG;
        goto done;
    }

    dap_schedule sched;
    dap_schedule_init_default(&sched);
    const int HW = H * H, Co = m->out_channels;
    const size_t per = (size_t)C * HW;
    const int cols = n < grid_cols ? n : grid_cols;
    sampler_ctx ctx = {.m = m, .C = C, .Co = Co, .HW = HW, .per = per, .w = cfg_w};
    ctx.st = dap_dit_state_create_ex(m, 2 * batch, 0);
    ctx.y = dap_malloc((size_t)2 * batch * sizeof(int));
    ctx.tf = dap_alloc_f32((size_t)2 * batch);
    ctx.in = dap_alloc_f32((size_t)2 * batch * per);
    ctx.out = dap_alloc_f32((size_t)2 * batch * Co * HW);
    float *x = dap_alloc_f32((size_t)batch * per);
    float *grid = dap_alloc_f32((size_t)ncls * cols * per);
    dap_rng *rngs = dap_malloc((size_t)batch * sizeof(dap_rng));
    uint8_t *px = dap_malloc(per);
    int *cls = dap_malloc((size_t)batch * sizeof(int)), *idx = dap_malloc((size_t)batch * sizeof(int));
    char path[4096], folder[512];
    dap_ddim_hooks hooks = {.eps = model_eps, .ctx = &ctx};
    const long total = (long)ncls * n;
    const double t0 = dap_time_now();

    if ((rc = dap_mkdir_p(out))) goto cleanup;
    for (int c = 0; c < ncls; c++) {
        folder_name(folder, sizeof folder, names[list[c]], list[c]);
        snprintf(path, sizeof path, "%s/%s", out, folder);
        if ((rc = dap_mkdir_p(path))) goto cleanup;
    }
    for (long j0 = 0; j0 < total; j0 += batch) {
        const int B = (int)(total - j0 < batch ? total - j0 : batch);
        for (int b = 0; b < B; b++) {
            const long j = j0 + b;
            cls[b] = (int)(j / n);
            idx[b] = (int)(j % n);
            ctx.y[b] = list[cls[b]];
            ctx.y[B + b] = K; /* the null class */
            dap_rng_init(&rngs[b], (uint64_t)seed, ((uint64_t)list[cls[b]] << 32) | (uint64_t)idx[b]);
            dap_rng_normal(&rngs[b], x + (size_t)b * per, per, 0.0f, 1.0f);
        }
        ctx.B = B;
        if ((rc = dap_ddim_sample(&sched, steps, eta, x, B, per, rngs, &hooks))) goto cleanup;
        for (int b = 0; b < B; b++) {
            const float *im = x + (size_t)b * per;
            folder_name(folder, sizeof folder, names[list[cls[b]]], list[cls[b]]);
            snprintf(path, sizeof path, "%s/%s/%d.png", out, folder, idx[b]);
            uint8_t *hwc = px;
            dap_image_to_u8(im, C, H, H, hwc);
            if ((rc = dap_png_write(path, hwc, H, H, C))) goto cleanup;
            if (idx[b] < cols) memcpy(grid + ((size_t)cls[b] * cols + idx[b]) * per, im, per * sizeof(float));
        }
        fprintf(stderr, "\rdap sample: %ld/%ld images (%.1f img/s)", j0 + B, total,
                (double)(j0 + B) / (dap_time_now() - t0 + 1e-9));
    }
    fprintf(stderr, "\n");
    snprintf(path, sizeof path, "%s/grid.png", out);
    if ((rc = dap_grid_write(path, grid, ncls * cols, ncls, cols, C, H, H))) goto cleanup;
    fprintf(stderr, "dap sample: wrote %ld images and %s\n", total, path);

cleanup:
    free(cls);
    free(idx);
    free(px);
    free(rngs);
    dap_free_aligned(grid);
    dap_free_aligned(x);
    dap_free_aligned(ctx.out);
    dap_free_aligned(ctx.in);
    dap_free_aligned(ctx.tf);
    free(ctx.y);
    dap_dit_state_destroy(ctx.st);
    dap_schedule_free(&sched);
done:
    free(list);
    free(names_buf);
    free(names);
    dap_dit_destroy(m);
    return rc ? cli_fail("sample", rc) : 0;
}
