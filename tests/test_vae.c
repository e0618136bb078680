/*
 * test_vae.c: the Stable Diffusion VAE against diffusers 0.27.2's AutoencoderKL
 * (tests/gen/vae_ref.py): posterior mean and logvar, latent and decoded image of a tiny
 * model with every block type, also with the convs forced into bands of rows; the three
 * key namings and the SD-checkpoint prefix load the same weights; the refusals (missing,
 * unknown, misshapen tensors, a DiT file, bad groups, bad sizes); the posterior sample;
 * the full-size table against sd-vae-ft-mse's key list.
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/device.h"
#include "io/io.h"
#include "models/vae.h"
#include "test.h"

/* float32 against float32: the encoder's outputs agree to ~6e-5 of their largest value
 * (relative, floored at 1% of it), the decoder's to ~2.5e-4 (a deeper path) */
#define ENC_TOL 2e-4
#define DEC_TOL 1e-3

static float *read_ref(const dap_st *st, const char *name, size_t *numel) {
    const dap_st_tensor *t = dap_st_find(st, name);
    if (!t) {
        dap_test_fail(__FILE__, __LINE__, "fixture lacks %s", name);
        return dap_alloc_f32(1);
    }
    float *v = dap_alloc_f32(t->numel);
    if (dap_st_read_f32(st, name, v, NULL, 0) != DAP_OK) dap_test_fail(__FILE__, __LINE__, "%s", dap_last_error());
    if (numel) *numel = t->numel;
    return v;
}

/* Relative error with a floor of 1% of the reference's largest magnitude. */
static double compare_ref(const char *label, const float *got, const float *want, size_t n) {
    double big = 0;
    for (size_t i = 0; i < n; i++) big = fmax(big, fabs(want[i]));
    return dap_test_compare(label, got, want, n, fmax(1e-2 * big, 1e-6));
}

static dap_vae *load_ok(const char *name) {
    dap_vae *v = NULL;
    int rc = dap_vae_load(&v, dap_test_ref(name));
    CHECK_MSG(rc == DAP_OK, "%s: %s", name, dap_last_error());
    return v;
}

/* encode / decode of the fixture input against diffusers, at the current band size */
static void parity(dap_vae *v, const char *tag) {
    dap_st *st;
    if (dap_st_open(&st, dap_test_ref("vae_tiny_ref.safetensors")) != DAP_OK) {
        CHECK_MSG(0, "%s", dap_last_error());
        return;
    }
    size_t nx, nl, nd;
    float *x = read_ref(st, "ref.x", &nx), *mean = read_ref(st, "ref.mean", &nl);
    float *logvar = read_ref(st, "ref.logvar", NULL), *latent = read_ref(st, "ref.latent", NULL);
    float *decoded = read_ref(st, "ref.decoded", &nd);
    float *m = dap_alloc_f32(nl), *lv = dap_alloc_f32(nl), *z = dap_alloc_f32(nl), *y = dap_alloc_f32(nd);
    char label[96];
    CHECK(nx == 2 * 3 * 32 * 32 && nl == 2 * 4 * 4 * 4 && nd == nx);
    CHECK(dap_vae_encode_moments(v, x, 2, 32, 32, m, lv) == DAP_OK);
    snprintf(label, sizeof label, "posterior mean (%s)", tag);
    CHECK(compare_ref(label, m, mean, nl) < ENC_TOL);
    snprintf(label, sizeof label, "posterior logvar (%s)", tag);
    CHECK(compare_ref(label, lv, logvar, nl) < ENC_TOL);
    CHECK(dap_vae_encode(v, x, 2, 32, 32, z, NULL) == DAP_OK);
    snprintf(label, sizeof label, "latent = 0.18215 mean (%s)", tag);
    CHECK(compare_ref(label, z, latent, nl) < ENC_TOL);
    CHECK(dap_vae_decode(v, latent, 2, 4, 4, y) == DAP_OK);
    snprintf(label, sizeof label, "decode(latent / 0.18215) (%s)", tag);
    CHECK(compare_ref(label, y, decoded, nd) < DEC_TOL);
    /* one image alone gives the first image's result */
    CHECK(dap_vae_decode(v, latent + nl / 2, 1, 4, 4, y) == DAP_OK);
    snprintf(label, sizeof label, "decode of image 2 alone (%s)", tag);
    CHECK(compare_ref(label, y, decoded + nd / 2, nd / 2) < DEC_TOL);
    /* the same bits on one thread as on two */
    int saved = dap_get_threads();
    float *y1 = dap_alloc_f32(nd), *y2 = dap_alloc_f32(nd);
    dap_set_threads(1);
    CHECK(dap_vae_decode(v, latent, 2, 4, 4, y1) == DAP_OK);
    dap_set_threads(2);
    CHECK(dap_vae_decode(v, latent, 2, 4, 4, y2) == DAP_OK);
    dap_set_threads(saved);
    CHECK_MSG(memcmp(y1, y2, nd * sizeof(float)) == 0, "decode (%s) differs between 1 and 2 threads", tag);
    dap_free_aligned(y1);
    dap_free_aligned(y2);
    float *bufs[] = {x, mean, logvar, latent, decoded, m, lv, z, y};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dap_free_aligned(bufs[i]);
    dap_st_close(st);
}

DAP_TEST(vae_tiny_parity) {
    dap_vae *v = load_ok("vae_tiny.safetensors");
    if (!v) return;
    const dap_vae_config *c = dap_vae_get_config(v);
    CHECK(c->levels == 4 && c->ch[0] == 8 && c->ch[1] == 16 && c->ch[2] == 24 && c->ch[3] == 24);
    CHECK(c->enc_blocks == 2 && c->dec_blocks == 3 && c->groups == 4);
    CHECK(c->in_channels == 3 && c->latent_channels == 4 && dap_vae_factor(c) == 8);
    CHECK(fabsf(c->scale - 0.18215f) < 1e-7f);
    parity(v, "whole planes");
    /* the large-image path: one image per chunk, the level-0 convs in bands of 3 rows
     * (1536 / (16 channels x 32)), the downsamples in bands of a few output rows, the
     * deepest levels whole */
    size_t old = dap_vae_set_band_floats(1536);
    parity(v, "bands of rows");
    dap_vae_set_band_floats(old);
    dap_vae_destroy(v);
}

/* The same on the GPU (dap_vae_to_device: every op of src/cuda/vae_cuda.cu) against
 * diffusers; where there is none, moving the VAE to the cpu device leaves it on the host. */
DAP_TEST(cuda_vae_matches_diffusers) {
    dap_vae *v = load_ok("vae_tiny.safetensors");
    if (!v) return;
    if (!dap_device_cuda_built() || dap_device_select("cuda") != DAP_OK) {
        CHECK(dap_device() == DAP_DEVICE_CPU);
        CHECK(dap_vae_to_device(v) == DAP_OK && !dap_vae_on_device(v));
        dap_vae_destroy(v);
        DAP_SKIP("%s", dap_device_cuda_built() ? dap_last_error() : "a build without CUDA (make CUDA=1)");
    }
    int rc = dap_vae_to_device(v);
    CHECK_MSG(rc == DAP_OK && dap_vae_on_device(v), "%s", dap_last_error());
    if (rc == DAP_OK) parity(v, "on the GPU");
    dap_vae_destroy(v);
    dap_device_select("cpu");
}

/* The decoder's vector-Jacobian product on the GPU (the taped walk on device buffers:
 * vae_cuda.cu's convolution input gradient, GroupNorm and softmax backwards, upsampling's
 * sums) against the host's, on the tiny model at a square and a non-square latent, with
 * sharpened attention: the taped image and the latent's gradient. */
DAP_TEST(cuda_vae_vjp_matches_cpu) {
    if (!dap_device_cuda_built() || dap_device_select("cuda") != DAP_OK) {
        CHECK(dap_device() == DAP_DEVICE_CPU);
        DAP_SKIP("%s", dap_device_cuda_built() ? dap_last_error() : "a build without CUDA (make CUDA=1)");
    }
    dap_device_select("cpu");
    dap_vae *host = load_ok("vae_tiny.safetensors"), *dev = load_ok("vae_tiny.safetensors");
    if (!host || !dev) return;
    const char *qk[2] = {"decoder.mid_block.attentions.0.to_q.weight", "decoder.mid_block.attentions.0.to_k.weight"};
    for (int m = 0; m < 2; m++)
        for (int i = 0; i < 2; i++) {
            dap_params *ps = dap_vae_params(m ? dev : host);
            int id = dap_params_find(ps, qk[i]);
            for (size_t q = 0; id >= 0 && q < ps->p[id].numel; q++) ps->data[ps->p[id].offset + q] *= 2.0f;
        }
    CHECK(dap_device_select("cuda") == DAP_OK);
    int rc = dap_vae_to_device(dev);
    CHECK_MSG(rc == DAP_OK && dap_vae_on_device(dev), "%s", dap_last_error());
    const int sides[2][2] = {{4, 4}, {3, 5}};
    for (int s = 0; rc == DAP_OK && s < 2; s++) {
        const int h = sides[s][0], w = sides[s][1];
        const size_t nl = (size_t)4 * h * w, ni = (size_t)3 * h * 8 * w * 8;
        float *z = dap_alloc_f32(nl), *r = dap_alloc_f32(ni), *ih = dap_alloc_f32(ni), *id = dap_alloc_f32(ni);
        float *gh = dap_alloc_f32(nl), *gd = dap_alloc_f32(nl);
        dap_rng rng;
        dap_rng_init(&rng, 5 + s, 0);
        dap_rng_normal(&rng, z, nl, 0.0f, 0.5f);
        dap_rng_normal(&rng, r, ni, 0.0f, 1.0f);
        for (int m = 0; m < 2; m++) {
            dap_vae_tape *tp = NULL;
            CHECK(dap_vae_decode_taped(m ? dev : host, z, h, w, m ? id : ih, &tp) == DAP_OK);
            CHECK(dap_vae_tape_backward(tp, r, m ? gd : gh) == DAP_OK);
            dap_vae_tape_free(tp);
        }
        double di = 0, ni2 = 0, dg = 0, ng = 0;
        for (size_t q = 0; q < ni; q++) di += (double)(id[q] - ih[q]) * (id[q] - ih[q]), ni2 += (double)ih[q] * ih[q];
        for (size_t q = 0; q < nl; q++) dg += (double)(gd[q] - gh[q]) * (gd[q] - gh[q]), ng += (double)gh[q] * gh[q];
        const double ei = sqrt(di / ni2), eg = sqrt(dg / ng);
        printf("    %dx%d latent: L2 rel err of the taped image %.2g, of the latent's gradient %.2g\n", h, w, ei, eg);
        CHECK_MSG(ei < 1e-4 && eg < 1e-3, "%dx%d: the device's VJP differs from the host's", h, w);
        dap_free_aligned(z), dap_free_aligned(r), dap_free_aligned(ih), dap_free_aligned(id);
        dap_free_aligned(gh), dap_free_aligned(gd);
    }
    dap_vae_destroy(host), dap_vae_destroy(dev);
    dap_device_select("cpu");
}

/* The decoder's vector-Jacobian product against finite differences of <r, decode(z)>
 * (a random r), on the tiny model with every decoder block type, at a latent of the
 * fixture's and at a non-square one. */
typedef struct {
    dap_vae *v;
    float *z, *r, *img;
    int h, w;
} vjp_case;

static double vjp_loss(void *p) {
    vjp_case *c = p;
    const int f = dap_vae_factor(dap_vae_get_config(c->v));
    const size_t n = (size_t)3 * c->h * f * c->w * f;
    if (dap_vae_decode(c->v, c->z, 1, c->h, c->w, c->img)) return NAN;
    double s = 0;
    for (size_t q = 0; q < n; q++) s += (double)c->r[q] * c->img[q];
    return s;
}

DAP_TEST(vae_decode_vjp_gradcheck) {
    dap_vae *v = load_ok("vae_tiny.safetensors");
    if (!v) return;
    /* sharper attention than the fixture's near-uniform one, so that its softmax's gradient
     * carries weight in the sum */
    const char *qk[2] = {"decoder.mid_block.attentions.0.to_q.weight", "decoder.mid_block.attentions.0.to_k.weight"};
    for (int i = 0; i < 2; i++) {
        dap_params *ps = dap_vae_params(v);
        int id = dap_params_find(ps, qk[i]);
        CHECK(id >= 0);
        if (id >= 0)
            for (size_t q = 0; q < ps->p[id].numel; q++) ps->data[ps->p[id].offset + q] *= 2.0f;
    }
    const int sides[2][2] = {{4, 4}, {3, 5}};
    for (int s = 0; s < 2; s++) {
        vjp_case c = {.v = v, .h = sides[s][0], .w = sides[s][1]};
        const size_t nl = (size_t)4 * c.h * c.w, ni = (size_t)3 * c.h * 8 * c.w * 8;
        c.z = dap_alloc_f32(nl), c.r = dap_alloc_f32(ni), c.img = dap_alloc_f32(ni);
        float *g = dap_alloc_f32(nl);
        dap_rng rng;
        dap_rng_init(&rng, 5 + s, 0);
        dap_rng_normal(&rng, c.z, nl, 0.0f, 0.5f);
        dap_rng_normal(&rng, c.r, ni, 0.0f, 1.0f);
        CHECK(dap_vae_decode_vjp(v, c.z, c.h, c.w, c.r, g) == DAP_OK);
        /* the taped decode's image is dap_vae_decode's (the same ops, one image, no bands) */
        float *timg = dap_alloc_f32(ni);
        dap_vae_tape *tp = NULL;
        CHECK(dap_vae_decode_taped(v, c.z, c.h, c.w, timg, &tp) == DAP_OK);
        dap_vae_tape_free(tp);
        CHECK(dap_vae_decode(v, c.z, 1, c.h, c.w, c.img) == DAP_OK);
        CHECK_MSG(!memcmp(timg, c.img, ni * sizeof(float)), "the taped decode's image differs from dap_vae_decode's");
        dap_free_aligned(timg);
        /* element by element (a few positions sit near the kinks of the SiLU's exp polynomial,
         * where central differences wander by a few percent), then along three random
         * directions, where they agree to float rounding */
        double err = dap_test_gradcheck(s ? "VAE decode VJP, 3x5 latent" : "VAE decode VJP, 4x4 latent", vjp_loss, &c,
                                        c.z, g, nl, 40, 1e-2f);
        CHECK_MSG(err < 1e-1, "decoder VJP rel err %g", err);
        float *z0 = dap_alloc_f32(nl), *dir = dap_alloc_f32(nl);
        memcpy(z0, c.z, nl * sizeof(float));
        for (int k = 0; k < 3; k++) {
            dap_rng_normal(&rng, dir, nl, 0.0f, 1.0f);
            double norm = 0;
            for (size_t q = 0; q < nl; q++) norm += (double)dir[q] * dir[q];
            for (size_t q = 0; q < nl; q++) dir[q] /= (float)sqrt(norm); /* a unit direction */
            const float step = 1e-2f;
            double want = 0;
            for (size_t q = 0; q < nl; q++) want += (double)g[q] * dir[q], c.z[q] = z0[q] + step * dir[q];
            const double lp = vjp_loss(&c);
            for (size_t q = 0; q < nl; q++) c.z[q] = z0[q] - step * dir[q];
            const double got = (lp - vjp_loss(&c)) / (2.0 * step), rel = fabs(got - want) / fmax(fabs(want), 1e-2);
            printf("    direction %d: <grad, d> %.6f, central difference %.6f (rel %.2g)\n", k, want, got, rel);
            CHECK_MSG(rel < 5e-3, "decoder VJP along a direction: rel err %g", rel);
        }
        dap_free_aligned(z0), dap_free_aligned(dir);
        dap_free_aligned(c.z), dap_free_aligned(c.r), dap_free_aligned(c.img), dap_free_aligned(g);
    }
    dap_vae_destroy(v);
}

DAP_TEST(vae_namings) {
    dap_vae *ref = load_ok("vae_tiny.safetensors");
    if (!ref) return;
    const char *files[] = {"vae_tiny_old.safetensors", "vae_tiny_ldm.safetensors", "vae_tiny_sd.safetensors"};
    const char *naming[] = {"before 0.14", "LDM", "LDM"};
    const dap_params *pr = dap_vae_params(ref);
    CHECK(strcmp(dap_vae_naming(ref), "diffusers") == 0);
    for (int f = 0; f < 3; f++) {
        dap_vae *v = load_ok(files[f]);
        if (!v) continue;
        const dap_params *p = dap_vae_params(v);
        CHECK_MSG(strstr(dap_vae_naming(v), naming[f]), "%s: naming %s", files[f], dap_vae_naming(v));
        CHECK(memcmp(dap_vae_get_config(v), dap_vae_get_config(ref), sizeof(dap_vae_config)) == 0);
        CHECK(p->n == pr->n && p->total == pr->total);
        int same = p->total == pr->total && memcmp(p->data, pr->data, p->total * sizeof(float)) == 0;
        CHECK_MSG(same, "%s loads other weights than vae_tiny.safetensors", files[f]);
        /* each tensor where the table puts it (not merely the same bytes overall) */
        const float *a = dap_params_ptr(p, "decoder.up_blocks.0.resnets.0.conv1.weight");
        const float *b = dap_params_ptr(pr, "decoder.up_blocks.0.resnets.0.conv1.weight");
        CHECK(a[0] == b[0] && a[1] == b[1]);
        printf("    %-34s %s: %d tensors, same weights: %s\n", files[f], dap_vae_naming(v), p->n,
               same ? "yes" : "NO");
        dap_vae_destroy(v);
    }
    dap_vae_destroy(ref);
}

/* vae_tiny.safetensors rewritten with `drop` left out, `extra` added, `reshape`'s shape
 * changed to (`dim0`) and the groups metadata `groups` (NULL: none). */
static const char *variant(const char *name, const char *drop, const char *extra, const char *reshape, int64_t dim0,
                           const char *groups) {
    dap_st *st;
    const char *path = dap_test_path(name);
    if (dap_st_open(&st, dap_test_ref("vae_tiny.safetensors")) != DAP_OK) {
        CHECK_MSG(0, "%s", dap_last_error());
        return path;
    }
    dap_st_writer *w = dap_st_writer_create();
    if (groups) dap_st_writer_meta(w, "norm_num_groups", groups);
    for (int i = 0; i < st->n; i++) {
        const dap_st_tensor *t = &st->t[i];
        if (drop && strcmp(t->name, drop) == 0) continue;
        float *v = dap_alloc_f32(t->numel + 8);
        dap_st_read_f32(st, t->name, v, NULL, 0);
        int64_t shape[8];
        memcpy(shape, t->shape, sizeof shape);
        int nd = t->ndim;
        if (reshape && strcmp(t->name, reshape) == 0) nd = 1, shape[0] = dim0;
        dap_st_writer_add(w, t->name, DAP_DT_F32, v, nd, shape);
        dap_free_aligned(v);
    }
    if (extra) {
        float z[4] = {0};
        int64_t s4[1] = {4};
        dap_st_writer_add(w, extra, DAP_DT_F32, z, 1, s4);
    }
    CHECK(dap_st_writer_save(w, path) == DAP_OK);
    dap_st_writer_destroy(w);
    dap_st_close(st);
    return path;
}

/* dap_vae_load fails with a message holding every one of the NULL-terminated words */
static void refused(const char *what, const char *path, ...) {
    dap_vae *v = NULL;
    int rc = dap_vae_load(&v, path);
    CHECK_MSG(rc != DAP_OK && v == NULL, "%s: loaded", what);
    const char *msg = dap_last_error();
    printf("    %-22s %s\n", what, msg);
    va_list ap;
    va_start(ap, path);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *))
        CHECK_MSG(strstr(msg, s), "%s: message lacks \"%s\": %s", what, s, msg);
    va_end(ap);
    dap_vae_destroy(v);
}

DAP_TEST(vae_refusals) {
    refused("missing tensor",
            variant("v_missing.safetensors", "decoder.up_blocks.1.resnets.2.norm2.bias", NULL, NULL, 0, "4"),
            "v_missing.safetensors", "lacks 1 tensor", "decoder.up_blocks.1.resnets.2.norm2.bias", NULL);
    refused("unknown tensor", variant("v_unknown.safetensors", NULL, "encoder.extra.bias", NULL, 0, "4"),
            "encoder.extra.bias", "1 tensor", NULL);
    refused("wrong shape", variant("v_shape.safetensors", NULL, NULL, "decoder.conv_out.bias", 4, "4"),
            "decoder.conv_out.bias", "expected shape [3], found [4]", NULL);
    refused("groups from metadata", variant("v_groups.safetensors", NULL, NULL, NULL, 0, "5"), "5 GroupNorm groups",
            "norm_num_groups", NULL);
    refused("default 32 groups", variant("v_nogroups.safetensors", NULL, NULL, NULL, 0, NULL),
            "32 GroupNorm groups do not divide", NULL);
    refused("DiT checkpoint", dap_test_ref("dit_small.safetensors"), "dit_small.safetensors",
            "is a DiT checkpoint, not a VAE", NULL);
    refused("other file", dap_test_ref("io_tiny.safetensors"), "is not a VAE", "encoder.conv_in.weight", NULL);
    refused("missing file", dap_test_path("none.safetensors"), "none.safetensors", NULL);
    /* the old names but one attention tensor in the new naming: unknown and missing */
    refused("mixed namings", variant("v_mixed.safetensors", "encoder.mid_block.attentions.0.to_q.bias",
                                     "encoder.mid_block.attentions.0.query.bias", NULL, 0, "4"),
            "encoder.mid_block.attentions.0.to_q.bias", NULL);

    /* cheap detection by the header alone */
    const char *vaes[] = {"vae_tiny.safetensors", "vae_tiny_old.safetensors", "vae_tiny_ldm.safetensors",
                          "vae_tiny_sd.safetensors"};
    for (int i = 0; i < 4; i++) CHECK_MSG(dap_vae_file_is_vae(dap_test_ref(vaes[i])) == 1, "%s", vaes[i]);
    CHECK(dap_vae_file_is_vae(dap_test_ref("dit_small.safetensors")) == 0);
    CHECK(dap_vae_file_is_vae(dap_test_ref("io_tiny.safetensors")) == 0);
    CHECK(dap_vae_file_is_vae(dap_test_path("none.safetensors")) < 0);

    /* sizes that are not multiples of the factor, before any work */
    dap_vae *v = load_ok("vae_tiny.safetensors");
    if (!v) return;
    float x[3 * 12 * 16] = {0}, z[4 * 4] = {0};
    CHECK(dap_vae_encode(v, x, 1, 12, 16, z, NULL) == DAP_ERR_SHAPE);
    CHECK_MSG(strstr(dap_last_error(), "12 x 16 is not a multiple of 8"), "%s", dap_last_error());
    CHECK(dap_vae_encode(v, x, 0, 8, 8, z, NULL) == DAP_ERR_ARG);
    dap_vae_destroy(v);
}

DAP_TEST(vae_posterior_sample) {
    dap_vae *v = load_ok("vae_tiny.safetensors");
    if (!v) return;
    dap_st *st;
    if (dap_st_open(&st, dap_test_ref("vae_tiny_ref.safetensors")) != DAP_OK) {
        CHECK_MSG(0, "%s", dap_last_error());
        dap_vae_destroy(v);
        return;
    }
    size_t nl;
    float *x = read_ref(st, "ref.x", NULL), *mean = read_ref(st, "ref.mean", &nl);
    float *logvar = read_ref(st, "ref.logvar", NULL);
    float *a = dap_alloc_f32(nl), *b = dap_alloc_f32(nl), *c = dap_alloc_f32(nl);
    dap_rng r1, r2, r3;
    dap_rng_init(&r1, 7, 0);
    dap_rng_init(&r2, 7, 0);
    dap_rng_init(&r3, 8, 0);
    CHECK(dap_vae_encode(v, x, 2, 32, 32, a, &r1) == DAP_OK);
    CHECK(dap_vae_encode(v, x, 2, 32, 32, b, &r2) == DAP_OK);
    CHECK(dap_vae_encode(v, x, 2, 32, 32, c, &r3) == DAP_OK);
    CHECK(memcmp(a, b, nl * sizeof(float)) == 0); /* the seed fixes the sample */
    CHECK(memcmp(a, c, nl * sizeof(float)) != 0);
    CHECK(r1.counter == nl); /* one normal per latent value */
    /* diffusers' DiagonalGaussianDistribution.sample(): mean + exp(logvar / 2) xi, with
     * xi the rng's next normals in latent order */
    float *xi = dap_alloc_f32(nl);
    dap_rng_init(&r1, 7, 0);
    dap_rng_normal(&r1, xi, nl, 0.0f, 1.0f);
    double worst = 0;
    for (size_t k = 0; k < nl; k++) {
        double want = 0.18215 * (mean[k] + exp(0.5 * logvar[k]) * xi[k]);
        worst = fmax(worst, fabs(a[k] - want));
    }
    printf("    posterior sample vs 0.18215 (mean + exp(logvar / 2) xi): max abs %.3g\n", worst);
    CHECK(worst < 1e-5);
    dap_free_aligned(xi);
    /* standardised: (latent / scale - mean) / std over the 128 values looks N(0, 1) */
    double s1 = 0, s2 = 0;
    for (size_t k = 0; k < nl; k++) {
        double e = (a[k] / 0.18215 - mean[k]) / exp(0.5 * logvar[k]);
        s1 += e, s2 += e * e;
    }
    double mu = s1 / nl, var = s2 / nl - mu * mu;
    printf("    posterior sample: standardised mean %.3f, variance %.3f over %zu values\n", mu, var, nl);
    CHECK(fabs(mu) < 0.3 && var > 0.6 && var < 1.5);
    float *bufs[] = {x, mean, logvar, a, b, c};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dap_free_aligned(bufs[i]);
    dap_st_close(st);
    dap_vae_destroy(v);
}

/* sd-vae-ft-mse's attention names (before diffusers 0.14) -> the table's */
static void old_attention_names(char *k, size_t cap) {
    static const char *const from[] = {".query.", ".key.", ".value.", ".proj_attn."};
    static const char *const to[] = {".to_q.", ".to_k.", ".to_v.", ".to_out.0."};
    for (int m = 0; m < 4; m++) {
        char *f = strstr(k, from[m]);
        if (!f) continue;
        char tail[160];
        snprintf(tail, sizeof tail, "%s", f + strlen(from[m]));
        snprintf(f, cap - (size_t)(f - k), "%s%s", to[m], tail);
    }
}

/* The sd-vae-ft-mse config's table, mapped to that file's names (attention before 0.14:
 * query/key/value/proj_attn), equals the file's key list, shapes included. */
DAP_TEST(vae_sd_keys) {
    dap_vae_config c;
    dap_vae_config_sd(&c);
    dap_params ps;
    dap_params_init(&ps);
    dap_vae_params_table(&ps, &c);
    int bad, in_order, lines = dap_test_key_list(&ps, "sd_vae_ft_mse_keys.txt", "sd-vae-ft-mse", old_attention_names,
                                                 &bad, &in_order); /* the file is sorted by name */
    CHECK_MSG(lines == ps.n, "table has %d tensors, sd-vae-ft-mse %d", ps.n, lines);
    printf("    sd-vae-ft-mse: %d keys, %d tensors, %zu params, %d mismatches\n", lines, ps.n, ps.total, bad);
    CHECK(ps.total == 83653863); /* AutoencoderKL's parameter count for this config */
    dap_params_free(&ps);
}
