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
#include "core/device.h"
#include "data/dataset.h"
#include "diffusion/ddim.h"
#include "diffusion/dit_eps.h"
#include "io/io.h"
#include "latent.h"
#include "models/dit.h"

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
        for (int q = 0; q < n; q++)
            if (out[q] == k) {
                dap_error(DAP_ERR_ARG, "--classes: class %d ('%s') is listed twice in '%s'", k, tok, spec);
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
    const char *model_path = NULL, *classes = "all", *out = NULL, *names_arg = NULL, *device = NULL, *precision = NULL, *gpu_s = NULL,
               *vae_path = NULL, *defaults_s = NULL, *defaults_used = "";
    int n = 10, steps = 50, seed = 0, batch = 50, threads = 0, grid_cols = 16, image_size = 0;
    double cfg_w = 1.0, eta = 0.0, clip_x0 = 0.0;
    flag flags[] = {
        {"model", FLAG_STR, &model_path, "DiT checkpoint (safetensors)"},
        {"vae", FLAG_STR, &vae_path, "the VAE of a latent model (SD's sd-vae-ft-mse / -ema): images are decoded from the sampled latents, which are kept as DIR/<class>/latents.safetensors"},
        {"image-size", FLAG_INT, &image_size, "with --vae: the expected image size (0: the model's latent size x 8); a mismatch is refused", 0, 8192},
        {"classes", FLAG_STR, &classes, "all, or a comma list of class indices / names"},
        {"n", FLAG_INT, &n, "images per class", 1, 100000},
        {"steps", FLAG_INT, &steps, "DDIM steps", 1, 1000},
        {"cfg", FLAG_FLOAT, &cfg_w, "classifier-free guidance scale (1: none; beyond +-50 every pixel saturates)", -50, 50},
        {"eta", FLAG_FLOAT, &eta, "DDIM eta (0: deterministic)", 0, 1},
        {"clip-x0", FLAG_FLOAT, &clip_x0, "clamp the predicted x0 to [-X, X] every step (0: off, as the official DiT; 1 suits pixel data in [-1, 1])", 0, 100},
        {"seed", FLAG_INT, &seed, "noise seed", 0, FLAG_INT_MAX},
        {"out", FLAG_STR, &out, "output folder"},
        {"batch", FLAG_INT, &batch, "images per forward pass", 1, 100000},
        {"names", FLAG_STR, &names_arg, "comma list of class names (default: the checkpoint's; without them Fashion-MNIST's for 10-class 28x28x1 models, the ImageNet wnids for 1000-class ones, else class<k>)"},
        {"grid-cols", FLAG_INT, &grid_cols, "at most this many images per class in grid.png", 1, 1000},
        CLI_THREADS_FLAG(&threads),
        {"device", FLAG_STR, &device, "cpu or cuda: where the DiT runs (cuda: a build made with make CUDA=1; default $DAP_DEVICE, else cpu)"},
        {"precision", FLAG_STR, &precision, "fp32 | tf32 | bf16: the GPU's matrix products (cuda only; default fp32)"},
        {"gpu", FLAG_STR, &gpu_s, CLI_GPU_HELP},
        {"defaults", FLAG_STR, &defaults_s, "the model's validated sampler flags: FILE (its [sampler] section), or none (default: MODEL.defaults beside MODEL.safetensors when it exists); the command line wins"},
    };
    const char *pos[1];
    int npos;
    int rc = cli_model_defaults("sample", argc, argv, &argc, &argv, &defaults_used);
    if (rc) return rc;
    rc = flags_parse("sample", "--model FILE --out DIR [flags]",
                         "Samples class-conditional images with DDIM and classifier-free guidance.", flags,
                         (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (rc == 2 && *defaults_used) fprintf(stderr, "dap sample: (the flags before the command line's came from %s)\n", defaults_used);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model_path) return cli_failf("sample", "--model FILE is required");
    if (!out) return cli_failf("sample", "--out DIR is required");
    if (n < 1 || batch < 1 || steps < 1 || seed < 0 || grid_cols < 1)
        return cli_failf("sample", "--n, --batch, --steps, --grid-cols must be >= 1 and --seed >= 0");
    if (eta < 0) return cli_failf("sample", "--eta: expected >= 0, found %g", eta);
    if (!(clip_x0 >= 0)) return cli_failf("sample", "--clip-x0: expected >= 0 (0: off), found %g", clip_x0);
    cli_apply_threads(threads);
    if (*defaults_used) fprintf(stderr, "dap sample: defaults from %s\n", defaults_used);
    if (cli_select_device("sample", device, precision, gpu_s)) return 1;

    if (image_size < 0) return cli_failf("sample", "--image-size must be >= 0 (got %d)", image_size);
    dap_dit *m = NULL;
    dap_vae *vae = NULL;
    char vae_hash[17] = "none";
    if ((rc = latent_check_files(model_path, vae_path))) return cli_fail("sample", rc);
    if ((rc = dap_dit_load(&m, model_path, 0, 0))) return cli_fail("sample", rc);
    if (vae_path && ((rc = dap_vae_load(&vae, vae_path)) || (rc = dap_file_hash(vae_path, vae_hash)) ||
                     (rc = dap_vae_to_device(vae)))) {
        dap_dit_destroy(m);
        if (vae) dap_vae_destroy(vae);
        return cli_fail("sample", rc);
    }
    if ((rc = latent_check_model(m, model_path, vae, vae_path, &image_size)) ||
        (vae && (rc = dap_vae_check_memory(vae, 1, 1, m->cfg.input_size, m->cfg.input_size)))) {
        dap_dit_destroy(m);
        if (vae) dap_vae_destroy(vae);
        return cli_fail("sample", rc);
    }
    const int eps_batch = cfg_w != 1.0 ? 2 * batch : batch, no_cache = 0;
    if ((rc = dap_dit_to_device(m)) || (rc = dap_dit_states_fit(m, 1, &eps_batch, &no_cache, "--batch"))) {
        dap_dit_destroy(m);
        if (vae) dap_vae_destroy(vae);
        return cli_fail("sample", rc);
    }
    if (m->dev) fprintf(stderr, "dap sample: %s, precision %s\n", dap_device_describe(), dap_precision_name(dap_device_precision()));
    const dap_dit_config *mc = &m->cfg;
    const int K = mc->num_classes, C = mc->in_channels, H = mc->input_size;
    /* what is written: the model's images, or a latent model's decoded ones */
    const int OC = vae ? 3 : C, OH = vae ? image_size : H;
    const size_t oper = (size_t)OC * OH * OH;
    if (cfg_w != 1.0 && !(mc->class_dropout > 0)) {
        dap_dit_destroy(m);
        if (vae) dap_vae_destroy(vae);
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
    } else if (m->class_names) { /* the checkpoint's */
        for (int k = 0; k < K; k++) names[k] = m->class_names[k];
    } else if (K == 10 && C == 1 && H == 28) {
        for (int k = 0; k < K; k++) names[k] = (char *)dap_fmnist_classes[k];
    } else if (K == DAP_IMAGENET_CLASSES) { /* an ImageNet-1K model: its labels are the wnids */
        for (int k = 0; k < K; k++) names[k] = (char *)dap_imagenet_wnid(k);
    }
    const int ncls = parse_classes(classes, K, names, list);
    if (ncls < 0) {
        rc = DAP_ERR_ARG;
        goto done;
    }

    dap_schedule sched;
    dap_schedule_init_default(&sched);
    const int HW = H * H;
    const size_t per = (size_t)C * HW;
    const int cols = n < grid_cols ? n : grid_cols;
    dap_dit_eps ctx;
    if ((rc = dap_dit_eps_init(&ctx, m, batch, cfg_w)) != DAP_OK) {
        dap_schedule_free(&sched);
        goto done;
    }
    int *labels = dap_malloc((size_t)batch * sizeof(int));
    float *x = dap_alloc_f32((size_t)batch * per);
    float *grid = dap_alloc_f32((size_t)ncls * cols * oper);
    dap_rng *rngs = dap_malloc((size_t)batch * sizeof(dap_rng));
    uint8_t *px = dap_malloc(oper);
    /* a latent model: every sample's latents (kept per class), one decoded image */
    float *lat_all = vae ? dap_alloc_f32((size_t)ncls * n * per) : NULL, *dec = vae ? dap_alloc_f32(oper) : NULL;
    int *cls = dap_malloc((size_t)batch * sizeof(int)), *idx = dap_malloc((size_t)batch * sizeof(int));
    char path[4096], folder[512];
    dap_ddim_hooks hooks = {.eps = dap_dit_eps_hook, .ctx = &ctx, .clip_x0 = clip_x0};
    const long total = (long)ncls * n;
    const double t0 = dap_time_now();

    if ((rc = dap_mkdir_p(out))) goto cleanup;
    for (int c = 0; c < ncls; c++) {
        char *fn = dap_class_folder_name(names[list[c]] ? names[list[c]] : "", list[c]);
        snprintf(folder, sizeof folder, "%s", fn);
        free(fn);
        snprintf(path, sizeof path, "%s/%s", out, folder);
        if ((rc = dap_mkdir_p(path))) goto cleanup;
    }
    for (long j0 = 0; j0 < total; j0 += batch) {
        const int B = (int)(total - j0 < batch ? total - j0 : batch);
        for (int b = 0; b < B; b++) {
            const long j = j0 + b;
            cls[b] = (int)(j / n);
            idx[b] = (int)(j % n);
            labels[b] = list[cls[b]];
            dap_sample_rng(&rngs[b], (uint64_t)seed, list[cls[b]], idx[b]);
            dap_rng_normal(&rngs[b], x + (size_t)b * per, per, 0.0f, 1.0f);
        }
        dap_dit_eps_set_labels(&ctx, labels, B);
        if ((rc = dap_ddim_sample(&sched, steps, eta, x, B, per, rngs, &hooks))) goto cleanup;
        for (int b = 0; b < B; b++) {
            const float *im = x + (size_t)b * per;
            if (vae) { /* keep the latents, decode the image */
                memcpy(lat_all + (size_t)(j0 + b) * per, im, sizeof(float) * per);
                if ((rc = dap_vae_decode(vae, im, 1, H, H, dec))) goto cleanup;
                for (size_t q = 0; q < oper; q++) dec[q] = dec[q] < -1.f ? -1.f : dec[q] > 1.f ? 1.f : dec[q];
                im = dec;
            }
            char *fn = dap_class_folder_name(names[list[cls[b]]] ? names[list[cls[b]]] : "", list[cls[b]]);
            snprintf(folder, sizeof folder, "%s", fn);
            free(fn);
            snprintf(path, sizeof path, "%s/%s/%d.png", out, folder, idx[b]);
            uint8_t *hwc = px;
            dap_image_to_u8(im, OC, OH, OH, hwc);
            if ((rc = dap_png_write(path, hwc, OH, OH, OC))) goto cleanup;
            if (idx[b] < cols) memcpy(grid + ((size_t)cls[b] * cols + idx[b]) * oper, im, oper * sizeof(float));
        }
        fprintf(stderr, "\rdap sample: %ld/%ld images (%.1f img/s)", j0 + B, total,
                (double)(j0 + B) / (dap_time_now() - t0 + 1e-9));
    }
    fprintf(stderr, "\n");
    for (int c = 0; vae && c < ncls; c++) { /* the latents beside each class's images */
        const char *name = names[list[c]] ? names[list[c]] : "";
        char *fn = dap_class_folder_name(name, list[c]);
        snprintf(path, sizeof path, "%s/%s/latents.safetensors", out, fn);
        free(fn);
        if ((rc = latent_write(path, lat_all + (size_t)c * n * per, n, C, H, name, list[c], vae_hash))) goto cleanup;
    }
    snprintf(path, sizeof path, "%s/grid.png", out);
    if ((rc = dap_grid_write(path, grid, ncls * cols, ncls, cols, OC, OH, OH))) goto cleanup;
    fprintf(stderr, "dap sample: wrote %ld images and %s\n", total, path);

cleanup:
    dap_free_aligned(lat_all), dap_free_aligned(dec);
    free(cls);
    free(idx);
    free(px);
    free(rngs);
    dap_free_aligned(grid);
    dap_free_aligned(x);
    free(labels);
    dap_dit_eps_free(&ctx);
    dap_schedule_free(&sched);
done:
    free(list);
    free(names_buf);
    free(names);
    dap_dit_destroy(m);
    if (vae) dap_vae_destroy(vae);
    return rc ? cli_fail("sample", rc) : 0;
}
