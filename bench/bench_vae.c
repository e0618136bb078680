/*
 * bench_vae.c: timing of dap's VAE encode and decode, one measurement per process so that
 * its peak memory (ru_maxrss) belongs to that measurement alone. bench/vae_torch.py is
 * the PyTorch peer (diffusers' AutoencoderKL on the same weights file); bench/vae.sh
 * runs both and prints the ratios.
 *
 *   build/bench_vae --weights FILE --measure encode|decode|vjp [--size 256] [--batch 1]
 *                         [--warmup 1] [--iters 3] [--threads 2]
 *                         [--device cpu|cuda]
 *   build/bench_vae --weights FILE --check OUT.safetensors [--size 256]
 *       writes a seeded image x, dap's latent of it and dap's decode of that latent, for
 *       vae_torch.py --check to hold against diffusers at full size
 *   build/bench_vae --save FILE
 *       writes seeded random weights at sd-vae-ft-mse's size (diffusers names, F32) without
 *       Python, for a machine that has only the build (scripts/gpu-diffusion-check.sh)
 *
 * encode: 0.18215 * posterior mean of a (batch, 3, size, size) image in [-1, 1];
 * decode: the image of a (batch, 4, size/8, size/8) latent; vjp: the decoder's vector-Jacobian
 * product at one latent (dap_vae_decode_vjp, igd's guidance on a latent prior). Prints one JSON line: seconds
 * per iteration and their median, images/s, cpu_s (CPU seconds per timed iteration, all
 * threads: steadier than wall time on a shared machine), peak RSS, and for the GPU check's
 * summary the device, throughput and planned device memory (dap_vae_plan_bytes + weights).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/core.h"
#include "core/device.h"
#include "io/io.h"
#include "models/vae.h"

/* user + system CPU seconds of the process so far */
static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Seeded random weights at sd-vae-ft-mse's size: conv and linear weights normal with
 * standard deviation 1/sqrt(fan in), biases small, GroupNorm scales 1 and shifts 0. */
static int save_random(const char *path) {
    dap_vae_config c;
    dap_vae_config_sd(&c);
    dap_vae *v;
    if (dap_vae_create(&v, &c)) return 1;
    dap_params *ps = dap_vae_params(v);
    dap_rng r;
    dap_rng_init(&r, 0, 0);
    for (int i = 0; i < ps->n; i++) {
        const dap_param *p = &ps->p[i];
        float *w = ps->data + p->offset;
        int norm = strstr(p->key, "norm") != NULL;
        if (p->ndim == 1) {
            if (norm && strstr(p->key, ".weight")) for (size_t k = 0; k < p->numel; k++) w[k] = 1.0f;
            else dap_rng_normal(&r, w, p->numel, 0.0f, norm ? 0.0f : 0.02f);
        } else {
            dap_rng_normal(&r, w, p->numel, 0.0f, 1.0f / sqrtf((float)(p->numel / p->shape[0])));
        }
    }
    dap_st_writer *wr = dap_st_writer_create();
    for (int i = 0; i < ps->n; i++) {
        const dap_param *p = &ps->p[i];
        dap_st_writer_add(wr, p->key, DAP_DT_F32, ps->data + p->offset, p->ndim, p->shape);
    }
    int rc = dap_st_writer_save(wr, path);
    dap_st_writer_destroy(wr);
    dap_vae_destroy(v);
    if (rc) fprintf(stderr, "bench_vae: %s\n", dap_last_error());
    else fprintf(stderr, "bench_vae: wrote %s\n", path);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *weights = NULL, *measure = NULL, *check = NULL, *device = "cpu", *save = NULL;
    int size = 256, batch = 1, warmup = 1, iters = 3, threads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--weights")) weights = v;
        else if (!strcmp(k, "--measure")) measure = v;
        else if (!strcmp(k, "--check")) check = v;
        else if (!strcmp(k, "--size")) size = atoi(v);
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--warmup")) warmup = atoi(v);
        else if (!strcmp(k, "--iters")) iters = atoi(v);
        else if (!strcmp(k, "--threads")) threads = atoi(v);
        else if (!strcmp(k, "--device")) device = v;
        else if (!strcmp(k, "--save")) save = v;
        else {
            fprintf(stderr, "bench_vae: unknown flag %s\n", k);
            return 2;
        }
    }
    if (save) return save_random(save);
    if (!weights || (!measure && !check) || size % 8 || size <= 0 || batch < 1 || iters < 1) {
        fprintf(stderr, "usage: bench_vae --weights FILE --measure encode|decode|vjp | --check OUT [--size N] "
                        "[--device cpu|cuda] | --save FILE\n");
        return 2;
    }
    dap_set_threads(threads);
    dap_vae *v;
    if (dap_device_select(device) || dap_vae_load(&v, weights) || dap_vae_to_device(v)) {
        fprintf(stderr, "bench_vae: %s\n", dap_last_error());
        return 1;
    }
    const int s = size, ls = size / 8, L = 4;
    const size_t per = (size_t)3 * s * s, lper = (size_t)L * ls * ls;
    float *x = dap_alloc_f32((size_t)batch * per), *z = dap_alloc_f32((size_t)batch * lper);
    dap_rng r;
    dap_rng_init(&r, 1, 0);
    dap_rng_uniform(&r, x, (size_t)batch * per, -1.0f, 1.0f);
    if (check) {
        if (dap_vae_encode(v, x, 1, s, s, z, NULL) || dap_vae_decode(v, z, 1, ls, ls, x + 0 * per)) {
            fprintf(stderr, "bench_vae: %s\n", dap_last_error());
            return 1;
        }
        /* x was overwritten by the decode: draw it again for the file */
        float *y = dap_alloc_f32(per);
        memcpy(y, x, per * sizeof(float));
        dap_rng_init(&r, 1, 0);
        dap_rng_uniform(&r, x, per, -1.0f, 1.0f);
        dap_st_writer *w = dap_st_writer_create();
        int64_t sx[4] = {1, 3, s, s}, sz[4] = {1, L, ls, ls};
        dap_st_writer_add(w, "x", DAP_DT_F32, x, 4, sx);
        dap_st_writer_add(w, "latent", DAP_DT_F32, z, 4, sz);
        dap_st_writer_add(w, "decoded", DAP_DT_F32, y, 4, sx);
        int rc = dap_st_writer_save(w, check);
        dap_st_writer_destroy(w);
        fprintf(stderr, "bench_vae: wrote %s\n", check);
        return rc ? 1 : 0;
    }
    int enc = !strcmp(measure, "encode"), vjp = !strcmp(measure, "vjp");
    float *dlat = vjp ? dap_alloc_f32(lper) : NULL;
    if (vjp) batch = 1; /* one latent: the decoder's vector-Jacobian product (igd --vae) */
    if (!enc) {
        dap_rng_normal(&r, z, (size_t)batch * lper, 0.0f, 0.18215f * 5.0f);
    }
    double *t = dap_malloc((size_t)iters * sizeof(double)), cpu0 = 0;
    for (int i = 0; i < warmup + iters; i++) {
        if (i == warmup) cpu0 = cpu_seconds();
        double t0 = dap_time_now();
        int rc = enc ? dap_vae_encode(v, x, batch, s, s, z, NULL)
                 : vjp ? dap_vae_decode_vjp(v, z, ls, ls, x, dlat)
                       : dap_vae_decode(v, z, batch, ls, ls, x);
        if (rc) {
            fprintf(stderr, "bench_vae: %s\n", dap_last_error());
            return 1;
        }
        if (i >= warmup) t[i - warmup] = dap_time_now() - t0;
    }
    double *sorted = dap_malloc((size_t)iters * sizeof(double));
    memcpy(sorted, t, (size_t)iters * sizeof(double));
    qsort(sorted, (size_t)iters, sizeof(double), cmp_double);
    double med = iters % 2 ? sorted[iters / 2] : 0.5 * (sorted[iters / 2 - 1] + sorted[iters / 2]);
    double cpu = (cpu_seconds() - cpu0) / iters;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double dev_mb = dap_vae_on_device(v) && !vjp ? (dap_vae_plan_bytes(v, !enc, batch, enc ? s : ls, enc ? s : ls) +
                                                   dap_vae_params(v)->total * sizeof(float)) / 1048576.0 : 0.0;
    printf("{\"impl\": \"dap\", \"measure\": \"vae-%s\", \"precision\": \"fp32\", \"device\": \"%s\", "
           "\"size\": %d, \"batch\": %d, \"threads\": %d, \"times_s\": [",
           measure, dap_device_describe(), s, batch, threads);
    for (int i = 0; i < iters; i++) printf("%s%.4f", i ? ", " : "", t[i]);
    printf("], \"median_s\": %.4f, \"images_per_s\": %.4f, \"throughput\": %.4f, \"unit\": \"images/s\", "
           "\"cpu_s\": %.4f, \"peak_rss_mb\": %.1f, \"peak_device_mb\": %.1f, \"peak_device_kind\": \"%s\"}\n",
           med, batch / med, batch / med, cpu, ru.ru_maxrss / 1024.0, dev_mb,
           dev_mb > 0 ? "planned (the plan's buffers + the weights)" : "not measured");
    free(sorted);
    free(t);
    dap_free_aligned(x);
    dap_free_aligned(z);
    dap_vae_destroy(v);
    return 0;
}
