/*
 * vae.c: the Stable Diffusion VAE (diffusers' AutoencoderKL), forward only.
 *
 *   encoder: conv_in -> levels x [blocks x ResNet, stride-2 conv (not after the last)]
 *            -> mid (ResNet, attention, ResNet) -> GroupNorm, SiLU, conv_out (2 latent)
 *            -> quant_conv 1x1 -> (mean, logvar)
 *   decoder: post_quant_conv 1x1 -> conv_in -> mid -> levels x [blocks x ResNet,
 *            nearest x2 + conv (not after the last)], channels reversed
 *            -> GroupNorm, SiLU, conv_out
 *   ResNet:  h = conv2(SiLU(GN2(conv1(SiLU(GN1(x)))))); out = shortcut(x) + h, with a
 *            1x1 conv_shortcut when the width changes
 *   attention: one head over the H*W tokens: x + to_out(softmax(q^T k / sqrt(C)) v),
 *            q, k, v linear maps of GN(x)
 *
 * The weights live in one dap_params table in diffusers' current key order and naming
 * (dap_vae_params_table); everything else (pointers, shapes checked at load, the memory plan) comes
 * from that table and the config. Files in the older namings are read through a key map
 * (file_key), so the table is the only list of tensors.
 *
 * Memory: a call runs the network twice over the same code, first in plan mode (every op
 * records the activation, scratch and conv-work floats it would need) and then for real
 * on buffers of exactly those sizes, released on return. A conv call's input and output
 * together hold at most BAND_FLOATS floats: images go through in chunks small enough for
 * that, and where one image is larger its convs run in bands of rows (each band with its
 * halo rows), so conv scratch stays bounded whatever the image size. The activations at
 * the widest level are three buffers of (C, H, W) per image.
 */
#include "models/vae.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "io/io.h"
#include "ops/ops.h"
#ifdef DAP_CUDA
#include "cuda/cuda.h"
#endif

#define GN_EPS 1e-6f
#define BAND_FLOATS 16777216    /* default input + output floats of one conv call */
#define ATT_BLOCK_FLOATS 4194304 /* scores per block of query rows */
#define DEV_BAND_FLOATS 67108864 /* on a GPU: the input + output floats of a chunk's widest conv */
#define MAX_REPORTED 5          /* tensor names listed in a missing / unknown error */

struct dap_vae {
    dap_vae_config cfg;
    dap_params params;
    int naming; /* the key naming of the file it was loaded from */
    void *dev;  /* the weights on the GPU (dap_vae_to_device), else NULL */
};

enum { NAMING_DIFFUSERS = 0, NAMING_OLD_ATTENTION = 1, NAMING_LDM = 2 };
static const char *const k_naming_names[] = {"diffusers", "diffusers before 0.14 (query/key/value/proj_attn)",
                                             "LDM (CompVis)"};

/* ---- config ------------------------------------------------------------------------- */

void dap_vae_config_sd(dap_vae_config *c) {
    memset(c, 0, sizeof *c);
    c->in_channels = 3;
    c->latent_channels = 4;
    c->levels = 4;
    c->ch[0] = 128, c->ch[1] = 256, c->ch[2] = 512, c->ch[3] = 512;
    c->enc_blocks = 2;
    c->dec_blocks = 3;
    c->groups = 32;
    c->scale = DAP_VAE_SCALE;
}

int dap_vae_factor(const dap_vae_config *c) { return 1 << (c->levels - 1); }

int dap_vae_config_check(const dap_vae_config *c) {
    if (c->levels < 1 || c->levels > DAP_VAE_MAX_LEVELS)
        return dap_error(DAP_ERR_ARG, "VAE config: %d levels, expected 1 to %d", c->levels, DAP_VAE_MAX_LEVELS);
    if (c->in_channels <= 0 || c->latent_channels <= 0 || c->enc_blocks <= 0 || c->dec_blocks <= 0 ||
        c->groups <= 0 || !(c->scale > 0) || !isfinite(c->scale))
        return dap_error(DAP_ERR_ARG,
                         "VAE config: sizes must be positive (in_channels %d, latent_channels %d, "
                         "enc_blocks %d, dec_blocks %d, groups %d, scale %g)",
                         c->in_channels, c->latent_channels, c->enc_blocks, c->dec_blocks, c->groups,
                         (double)c->scale);
    for (int i = 0; i < c->levels; i++) {
        if (c->ch[i] <= 0 || c->ch[i] > 65536)
            return dap_error(DAP_ERR_ARG, "VAE config: level %d has %d channels", i, c->ch[i]);
        if (c->ch[i] % c->groups)
            return dap_error(DAP_ERR_ARG, "VAE config: %d GroupNorm groups do not divide level %d's %d channels",
                             c->groups, i, c->ch[i]);
    }
    return DAP_OK;
}

/* ---- the weights table -------------------------------------------------------------- */

static void add(dap_params *ps, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void add(dap_params *ps, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...) {
    char key[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    dap_params_add4(ps, key, d0, d1, d2, d3);
}

/* pre "" for the top-level quant_conv / post_quant_conv */
static void add_conv(dap_params *ps, const char *pre, const char *name, int oc, int c, int k) {
    const char *dot = *pre ? "." : "";
    add(ps, oc, c, k, k, "%s%s%s.weight", pre, dot, name);
    add(ps, oc, 0, 0, 0, "%s%s%s.bias", pre, dot, name);
}

static void add_norm(dap_params *ps, const char *pre, const char *name, int c) {
    add(ps, c, 0, 0, 0, "%s.%s.weight", pre, name);
    add(ps, c, 0, 0, 0, "%s.%s.bias", pre, name);
}

static void add_resnet(dap_params *ps, const char *pre, int cin, int cout) {
    add_norm(ps, pre, "norm1", cin);
    add_conv(ps, pre, "conv1", cout, cin, 3);
    add_norm(ps, pre, "norm2", cout);
    add_conv(ps, pre, "conv2", cout, cout, 3);
    if (cin != cout) add_conv(ps, pre, "conv_shortcut", cout, cin, 1);
}

static void add_mid(dap_params *ps, const char *part, int c) {
    char pre[96];
    snprintf(pre, sizeof pre, "%s.mid_block.attentions.0", part);
    add_norm(ps, pre, "group_norm", c);
    static const char *const lin[] = {"to_q", "to_k", "to_v", "to_out.0"};
    for (int k = 0; k < 4; k++) {
        add(ps, c, c, 0, 0, "%s.%s.weight", pre, lin[k]);
        add(ps, c, 0, 0, 0, "%s.%s.bias", pre, lin[k]);
    }
    for (int r = 0; r < 2; r++) {
        snprintf(pre, sizeof pre, "%s.mid_block.resnets.%d", part, r);
        add_resnet(ps, pre, c, c);
    }
}

/* diffusers' AutoencoderKL.state_dict(), in its order. */
void dap_vae_params_table(dap_params *ps, const dap_vae_config *c) {
    DAP_ASSERT(ps->n == 0 && dap_vae_config_check(c) == DAP_OK);
    const int L = c->levels, top = c->ch[L - 1];
    char pre[96];
    add_conv(ps, "encoder", "conv_in", c->ch[0], c->in_channels, 3);
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < c->enc_blocks; j++) {
            snprintf(pre, sizeof pre, "encoder.down_blocks.%d.resnets.%d", i, j);
            add_resnet(ps, pre, j ? c->ch[i] : i ? c->ch[i - 1] : c->ch[0], c->ch[i]);
        }
        if (i < L - 1) {
            snprintf(pre, sizeof pre, "encoder.down_blocks.%d.downsamplers.0", i);
            add_conv(ps, pre, "conv", c->ch[i], c->ch[i], 3);
        }
    }
    add_mid(ps, "encoder", top);
    add_norm(ps, "encoder", "conv_norm_out", top);
    add_conv(ps, "encoder", "conv_out", 2 * c->latent_channels, top, 3);
    add_conv(ps, "decoder", "conv_in", top, c->latent_channels, 3);
    for (int i = 0; i < L; i++) { /* up_blocks.i works at the channels of level L-1-i */
        int cout = c->ch[L - 1 - i], prev = i ? c->ch[L - i] : top;
        for (int j = 0; j < c->dec_blocks; j++) {
            snprintf(pre, sizeof pre, "decoder.up_blocks.%d.resnets.%d", i, j);
            add_resnet(ps, pre, j ? cout : prev, cout);
        }
        if (i < L - 1) {
            snprintf(pre, sizeof pre, "decoder.up_blocks.%d.upsamplers.0", i);
            add_conv(ps, pre, "conv", cout, cout, 3);
        }
    }
    add_mid(ps, "decoder", top);
    add_norm(ps, "decoder", "conv_norm_out", c->ch[0]);
    add_conv(ps, "decoder", "conv_out", c->in_channels, c->ch[0], 3);
    add_conv(ps, "", "quant_conv", 2 * c->latent_channels, 2 * c->latent_channels, 1);
    add_conv(ps, "", "post_quant_conv", c->latent_channels, c->latent_channels, 1);
}

/* ---- model -------------------------------------------------------------------------- */

int dap_vae_create(dap_vae **out, const dap_vae_config *c) {
    *out = NULL;
    DAP_TRY(dap_vae_config_check(c));
    dap_vae *v = dap_calloc(1, sizeof *v);
    v->cfg = *c;
    dap_params_init(&v->params);
    dap_vae_params_table(&v->params, c);
    dap_params_alloc(&v->params, 0);
    *out = v;
    return DAP_OK;
}

void dap_vae_destroy(dap_vae *v) {
    if (!v) return;
#ifdef DAP_CUDA
    dap_vae_cuda_destroy(v->dev);
#endif
    dap_params_free(&v->params);
    free(v);
}

int dap_vae_to_device(dap_vae *v) {
    if (dap_device() == DAP_DEVICE_CPU || v->dev) return DAP_OK;
#ifdef DAP_CUDA
    dap_vae_cuda *d = NULL;
    DAP_TRY(dap_vae_cuda_create(&d, v->params.data, v->params.total));
    v->dev = d;
    return DAP_OK;
#else
    return dap_error(DAP_ERR_MISSING, "the VAE on device %s: a build without CUDA (make CUDA=1)", dap_device_name());
#endif
}

int dap_vae_on_device(const dap_vae *v) { return v->dev != NULL; }

int dap_vae_check_memory(const dap_vae *v, int decode, int n, int h, int w) {
#ifdef DAP_CUDA
    if (!v->dev) return DAP_OK;
    const size_t need = dap_vae_plan_bytes(v, decode, n, h, w);
    size_t fr = 0, tot = 0;
    DAP_TRY(dap_cuda_memory(&fr, &tot));
    char b[3][32];
    if (need > fr)
        return dap_error(DAP_ERR_NOMEM, "the VAE's %s of %d %s of %dx%d needs %s on the GPU, %s of %s are "
                         "free: lower --batch", decode ? "decode" : "encode", n, decode ? "latents" : "images", h, w,
                         dap_fmt_bytes(b[0], 32, (double)need), dap_fmt_bytes(b[1], 32, (double)fr),
                         dap_fmt_bytes(b[2], 32, (double)tot));
#else
    (void)v, (void)decode, (void)n, (void)h, (void)w;
#endif
    return DAP_OK;
}

const dap_vae_config *dap_vae_get_config(const dap_vae *v) { return &v->cfg; }
dap_params *dap_vae_params(dap_vae *v) { return &v->params; }
const char *dap_vae_naming(const dap_vae *v) { return k_naming_names[v->naming]; }

/* A weight by its diffusers key, built from a format. */
static const float *wp(const dap_vae *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const float *wp(const dap_vae *v, const char *fmt, ...) {
    char key[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    return dap_params_ptr(&v->params, key);
}

/* ---- forward: a plan-then-run walk over the network ---------------------------------- */

static size_t g_band = BAND_FLOATS;

size_t dap_vae_set_band_floats(size_t floats) {
    size_t old = g_band;
    g_band = floats > 0 ? floats : BAND_FLOATS;
    return old;
}

typedef struct vctx {
    const dap_vae *v;
    void *dev; /* the model's GPU half: every op runs there, on device buffers */
    size_t col_need; /* GPU: the largest im2col of one image */
    float *col;
    int plan; /* 1: only record what each op needs */
    int n;    /* images in the current chunk */
    size_t act_need, aux_need, work_need, stat_need; /* floats, recorded in plan mode */
    size_t conv_need; /* the largest conv's input + output floats per image */
    float *buf[3]; /* activations: buf[0] the running tensor x, buf[1] and buf[2] scratch */
    float *aux;    /* conv bands (input rows, output rows), attention q, k, v and scores */
    float *work;   /* conv work (dap_conv2d_work_floats) */
    float *stats;  /* GroupNorm mean, rstd (n, groups) each */
} vctx;

static void need(size_t *slot, size_t floats) {
    if (floats > *slot) *slot = floats;
}

static void swap01(vctx *x) {
    float *t = x->buf[0];
    x->buf[0] = x->buf[1];
    x->buf[1] = t;
}

static void add_into(vctx *x, float *y, const float *a, size_t n) {
    if (x->plan) return;
#ifdef DAP_CUDA
    if (x->dev) {
        dap_vae_cuda_add(x->dev, y, a, n);
        return;
    }
#endif
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] += a[i];
}

#ifdef DAP_CUDA
/* A weight's copy on the GPU, from its host pointer. */
static const float *dw(const vctx *x, const float *host) {
    return dap_vae_cuda_weight(x->dev, (size_t)(host - x->v->params.data));
}
#endif

/* out (n, oc, h, w) = conv3x3(in (n, c, h, w)), stride 1, padding 1. A call of more than
 * g_band input + output floats (one large image) runs in bands of rows: each band's input
 * takes one halo row above and below where the image has them, and the padding of the
 * band's own edges is used only where it is the image's edge. */
static void conv3(vctx *x, float *out, const float *in, int c, int h, int w, int oc, const char *pre) {
    const float *wt = wp(x->v, "%s.weight", pre), *bs = wp(x->v, "%s.bias", pre);
    const size_t plane = (size_t)h * w;
    need(&x->act_need, (size_t)x->n * oc * plane);
    need(&x->conv_need, (size_t)(c + oc) * plane);
#ifdef DAP_CUDA
    if (x->dev) {
        need(&x->col_need, (size_t)c * 9 * plane);
        if (!x->plan) dap_vae_cuda_conv(x->dev, out, in, dw(x, wt), dw(x, bs), x->n, c, h, w, oc, 3, 1, 1, h, w, x->col);
        return;
    }
#endif
    dap_conv2d_dims d;
    if ((size_t)x->n * (c + oc) * plane <= g_band) {
        dap_conv2d_dims_init(&d, x->n, c, h, w, oc, 3, 3, 1, 1);
        need(&x->work_need, dap_conv2d_work_floats(&d));
        if (!x->plan) dap_conv2d_forward(out, in, wt, bs, &d, x->work);
        return;
    }
    DAP_ASSERT(x->n == 1); /* plan_chunk sends a large image alone */
    const size_t row = (size_t)(c + oc) * w;
    int rows = g_band / row > 0 ? (int)(g_band / row) : 1;
    for (int r0 = 0; r0 < h; r0 += rows) {
        int r1 = r0 + rows < h ? r0 + rows : h;
        int a = r0 > 0 ? r0 - 1 : 0, b = r1 < h ? r1 + 1 : h, bh = b - a;
        float *bin = x->aux, *bout = x->aux + (size_t)c * bh * w;
        dap_conv2d_dims_init(&d, 1, c, bh, w, oc, 3, 3, 1, 1);
        need(&x->aux_need, (size_t)(c + oc) * bh * w);
        need(&x->work_need, dap_conv2d_work_floats(&d));
        if (x->plan) continue;
#pragma omp parallel for schedule(static)
        for (int ch = 0; ch < c; ch++)
            memcpy(bin + (size_t)ch * bh * w, in + ch * plane + (size_t)a * w, (size_t)bh * w * sizeof(float));
        dap_conv2d_forward(bout, bin, wt, bs, &d, x->work);
#pragma omp parallel for schedule(static)
        for (int o = 0; o < oc; o++)
            memcpy(out + o * plane + (size_t)r0 * w, bout + (size_t)o * bh * w + (size_t)(r0 - a) * w,
                   (size_t)(r1 - r0) * w * sizeof(float));
    }
}

/* out (n, c, h/2, w/2) = conv3x3 stride 2 over in (n, c, h, w) padded by one zero row
 * below and one zero column on the right (diffusers' Downsample2D, padding 0). The padded
 * rows are gathered (in bands of output rows when the image is large). */
static void downsample(vctx *x, float *out, const float *in, int c, int h, int w, const char *pre) {
    const float *wt = wp(x->v, "%s.weight", pre), *bs = wp(x->v, "%s.bias", pre);
    const int oh = h / 2, ow = w / 2, w1 = w + 1;
    const size_t plane = (size_t)h * w, oplane = (size_t)oh * ow;
    need(&x->act_need, (size_t)x->n * c * oplane);
    const size_t per = (size_t)c * ((size_t)(h + 1) * w1 + oplane), row = (size_t)c * (2 * w1 + ow);
    need(&x->conv_need, per);
#ifdef DAP_CUDA
    if (x->dev) { /* the zero row and column are reads past the edge */
        need(&x->col_need, (size_t)c * 9 * oplane);
        if (!x->plan) dap_vae_cuda_conv(x->dev, out, in, dw(x, wt), dw(x, bs), x->n, c, h, w, c, 3, 2, 0, oh, ow, x->col);
        return;
    }
#endif
    int whole = (size_t)x->n * per <= g_band;
    int rows = whole ? oh : g_band / row > 0 ? (int)(g_band / row) : 1;
    int imgs = whole ? x->n : 1;
    for (int i0 = 0; i0 < x->n; i0 += imgs) {
        for (int o0 = 0; o0 < oh; o0 += rows) {
            int o1 = o0 + rows < oh ? o0 + rows : oh, ih = 2 * (o1 - o0) + 1;
            float *bin = x->aux, *bout = whole ? out : x->aux + (size_t)c * ih * w1;
            dap_conv2d_dims d;
            dap_conv2d_dims_init(&d, imgs, c, ih, w1, c, 3, 3, 2, 0);
            need(&x->aux_need, (size_t)imgs * c * ih * w1 + (whole ? 0 : (size_t)c * (o1 - o0) * ow));
            need(&x->work_need, dap_conv2d_work_floats(&d));
            if (x->plan) continue;
#pragma omp parallel for collapse(2) schedule(static)
            for (int i = 0; i < imgs; i++)
                for (int ch = 0; ch < c; ch++) {
                    const float *src = in + ((size_t)(i0 + i) * c + ch) * plane;
                    float *dst = bin + ((size_t)i * c + ch) * ih * w1;
                    for (int r = 0; r < ih; r++) {
                        int gr = 2 * o0 + r;
                        if (gr < h) memcpy(dst + (size_t)r * w1, src + (size_t)gr * w, (size_t)w * sizeof(float));
                        else memset(dst + (size_t)r * w1, 0, (size_t)w * sizeof(float));
                        dst[(size_t)r * w1 + w] = 0.0f;
                    }
                }
            dap_conv2d_forward(bout, bin, wt, bs, &d, x->work);
            if (whole) continue;
#pragma omp parallel for schedule(static)
            for (int ch = 0; ch < c; ch++)
                memcpy(out + ((size_t)i0 * c + ch) * oplane + (size_t)o0 * ow, bout + (size_t)ch * (o1 - o0) * ow,
                       (size_t)(o1 - o0) * ow * sizeof(float));
        }
    }
}

/* out (n, oc, h, w) = conv1x1(in (n, c, h, w)) */
static void conv1(vctx *x, float *out, const float *in, int c, int h, int w, int oc, const char *pre) {
    const float *wt = wp(x->v, "%s.weight", pre), *bs = wp(x->v, "%s.bias", pre);
    dap_conv2d_dims d;
    dap_conv2d_dims_init(&d, x->n, c, h, w, oc, 1, 1, 1, 0);
    need(&x->act_need, (size_t)x->n * oc * h * w);
#ifdef DAP_CUDA
    if (x->dev) {
        if (!x->plan) dap_vae_cuda_conv(x->dev, out, in, dw(x, wt), dw(x, bs), x->n, c, h, w, oc, 1, 1, 0, h, w, NULL);
        return;
    }
#endif
    need(&x->work_need, dap_conv2d_work_floats(&d));
    if (!x->plan) dap_conv2d_forward(out, in, wt, bs, &d, x->work);
}

/* out (n, c, hw) = GroupNorm(in), then SiLU when `silu` */
static void norm(vctx *x, float *out, const float *in, int c, size_t hw, const char *pre, int silu) {
    const float *g = wp(x->v, "%s.weight", pre), *b = wp(x->v, "%s.bias", pre);
    const int groups = x->v->cfg.groups;
    need(&x->act_need, (size_t)x->n * c * hw);
    need(&x->stat_need, 2 * (size_t)x->n * groups);
    if (x->plan) return;
#ifdef DAP_CUDA
    if (x->dev) {
        dap_vae_cuda_groupnorm(x->dev, out, in, dw(x, g), dw(x, b), x->n, c, (int)hw, groups, GN_EPS, silu);
        return;
    }
#endif
    dap_groupnorm_forward(out, x->stats, x->stats + (size_t)x->n * groups, in, g, b, x->n, c, (int)hw, groups,
                          GN_EPS);
    if (silu) dap_silu_forward(out, out, (size_t)x->n * c * hw);
}

/* buf[0] (n, cin, h, w) -> buf[0] (n, cout, h, w) through one ResNet block at `pre`. */
static void resnet(vctx *x, int cin, int cout, int h, int w, const char *pre) {
    char k[160];
    const size_t hw = (size_t)h * w;
    float *X = x->buf[0], *T = x->buf[1], *H = x->buf[2];
    snprintf(k, sizeof k, "%s.norm1", pre);
    norm(x, T, X, cin, hw, k, 1);
    snprintf(k, sizeof k, "%s.conv1", pre);
    conv3(x, H, T, cin, h, w, cout, k);
    snprintf(k, sizeof k, "%s.norm2", pre);
    norm(x, T, H, cout, hw, k, 1);
    snprintf(k, sizeof k, "%s.conv2", pre);
    conv3(x, H, T, cout, h, w, cout, k);
    if (cin != cout) {
        snprintf(k, sizeof k, "%s.conv_shortcut", pre);
        conv1(x, T, X, cin, h, w, cout, k);
        add_into(x, T, H, (size_t)x->n * cout * hw);
        swap01(x);
    } else {
        add_into(x, X, H, (size_t)x->n * cout * hw);
    }
}

/* y (c, t) = W (c, c) a (c, t) + b: a linear map of every token, channel-major */
static void token_linear(float *y, const float *wt, const float *b, const float *a, int c, int t) {
    dap_gemm(0, 0, c, t, c, 1.0f, wt, c, a, t, 0.0f, y, t);
#pragma omp parallel for schedule(static)
    for (int o = 0; o < c; o++)
        for (int j = 0; j < t; j++) y[(size_t)o * t + j] += b[o];
}

static void softmax_rows(float *s, int rows, int t) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *row = s + (size_t)r * t, mx = row[0];
        for (int j = 1; j < t; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < t; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < t; j++) row[j] *= inv;
    }
}

/* buf[0] (n, c, h, w) += to_out(attention(GN(buf[0]))), one head over the h*w tokens.
 * Everything stays channel-major: q, k, v (c, T); scores for a block of query rows
 * (rows, T) = q_blk^T k / sqrt(c); o_blk (c, rows) = v p^T, written over q_blk (no longer
 * needed). */
static void attention(vctx *x, int c, int h, int w, const char *part) {
    char pre[96];
    const int t = h * w;
    const int qb = ATT_BLOCK_FLOATS / t < 1 ? 1 : ATT_BLOCK_FLOATS / t > t ? t : ATT_BLOCK_FLOATS / t;
    snprintf(pre, sizeof pre, "%s.mid_block.attentions.0.group_norm", part);
    norm(x, x->buf[1], x->buf[0], c, (size_t)t, pre, 0);
    need(&x->aux_need, 3 * (size_t)c * t + (x->dev ? (size_t)t : (size_t)qb) * t); /* GPU: all query rows */
    if (x->plan) return;
    snprintf(pre, sizeof pre, "%s.mid_block.attentions.0", part);
    const float *wq = wp(x->v, "%s.to_q.weight", pre), *bq = wp(x->v, "%s.to_q.bias", pre);
    const float *wk = wp(x->v, "%s.to_k.weight", pre), *bk = wp(x->v, "%s.to_k.bias", pre);
    const float *wv = wp(x->v, "%s.to_v.weight", pre), *bv = wp(x->v, "%s.to_v.bias", pre);
    const float *wo = wp(x->v, "%s.to_out.0.weight", pre), *bo = wp(x->v, "%s.to_out.0.bias", pre);
#ifdef DAP_CUDA
    if (x->dev) {
        const float *wts[8] = {dw(x, wq), dw(x, bq), dw(x, wk), dw(x, bk), dw(x, wv), dw(x, bv), dw(x, wo), dw(x, bo)};
        dap_vae_cuda_attention(x->dev, x->buf[0], x->buf[1], wts, x->n, c, t, x->aux);
        return;
    }
#endif
    const size_t ct = (size_t)c * t;
    float *q = x->aux, *k = q + ct, *v = k + ct, *s = v + ct;
    const float scale = 1.0f / sqrtf((float)c);
    for (int i = 0; i < x->n; i++) {
        const float *a = x->buf[1] + i * ct;
        float *xi = x->buf[0] + i * ct;
        token_linear(q, wq, bq, a, c, t);
        token_linear(k, wk, bk, a, c, t);
        token_linear(v, wv, bv, a, c, t);
        for (int q0 = 0; q0 < t; q0 += qb) {
            int nq = t - q0 < qb ? t - q0 : qb;
            dap_gemm(1, 0, nq, t, c, scale, q + q0, t, k, t, 0.0f, s, t);
            softmax_rows(s, nq, t);
            dap_gemm(0, 1, c, nq, t, 1.0f, v, t, s, t, 0.0f, q + q0, t);
        }
        dap_gemm(0, 0, c, t, c, 1.0f, wo, c, q, t, 1.0f, xi, t); /* residual: += */
#pragma omp parallel for schedule(static)
        for (int o = 0; o < c; o++)
            for (int j = 0; j < t; j++) xi[(size_t)o * t + j] += bo[o];
    }
}

static void mid_block(vctx *x, int c, int h, int w, const char *part) {
    char pre[96];
    snprintf(pre, sizeof pre, "%s.mid_block.resnets.0", part);
    resnet(x, c, c, h, w, pre);
    attention(x, c, h, w, part);
    snprintf(pre, sizeof pre, "%s.mid_block.resnets.1", part);
    resnet(x, c, c, h, w, pre);
}

/* moments (n, 2 latent, h/f, w/f) = quant_conv(encoder(img (n, in, h, w))) */
static void encoder(vctx *x, float *moments, const float *img, int h, int w) {
    const dap_vae_config *c = &x->v->cfg;
    const int L = c->levels;
    char pre[96];
    conv3(x, x->buf[0], img, c->in_channels, h, w, c->ch[0], "encoder.conv_in");
    int cur = c->ch[0];
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < c->enc_blocks; j++) {
            snprintf(pre, sizeof pre, "encoder.down_blocks.%d.resnets.%d", i, j);
            resnet(x, cur, c->ch[i], h, w, pre);
            cur = c->ch[i];
        }
        if (i == L - 1) break;
        snprintf(pre, sizeof pre, "encoder.down_blocks.%d.downsamplers.0.conv", i);
        downsample(x, x->buf[1], x->buf[0], cur, h, w, pre);
        swap01(x);
        h /= 2, w /= 2;
    }
    mid_block(x, cur, h, w, "encoder");
    norm(x, x->buf[1], x->buf[0], cur, (size_t)h * w, "encoder.conv_norm_out", 1);
    conv3(x, x->buf[2], x->buf[1], cur, h, w, 2 * c->latent_channels, "encoder.conv_out");
    conv1(x, moments, x->buf[2], 2 * c->latent_channels, h, w, 2 * c->latent_channels, "quant_conv");
}

/* img (n, in, h f, w f) = decoder(post_quant_conv(z (n, latent, h, w))) */
static void decoder(vctx *x, float *img, const float *z, int h, int w) {
    const dap_vae_config *c = &x->v->cfg;
    const int L = c->levels;
    char pre[96];
    conv1(x, x->buf[1], z, c->latent_channels, h, w, c->latent_channels, "post_quant_conv");
    int cur = c->ch[L - 1];
    conv3(x, x->buf[0], x->buf[1], c->latent_channels, h, w, cur, "decoder.conv_in");
    mid_block(x, cur, h, w, "decoder");
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < c->dec_blocks; j++) {
            snprintf(pre, sizeof pre, "decoder.up_blocks.%d.resnets.%d", i, j);
            resnet(x, cur, c->ch[L - 1 - i], h, w, pre);
            cur = c->ch[L - 1 - i];
        }
        if (i == L - 1) break;
        need(&x->act_need, (size_t)x->n * cur * h * w * 4);
        if (!x->plan) {
#ifdef DAP_CUDA
            if (x->dev) dap_vae_cuda_upsample2(x->dev, x->buf[1], x->buf[0], x->n, cur, h, w);
            else
#endif
                dap_upsample_nearest_forward(x->buf[1], x->buf[0], x->n, cur, h, w, 2);
        }
        h *= 2, w *= 2;
        snprintf(pre, sizeof pre, "decoder.up_blocks.%d.upsamplers.0.conv", i);
        conv3(x, x->buf[0], x->buf[1], cur, h, w, cur, pre);
    }
    norm(x, x->buf[1], x->buf[0], cur, (size_t)h * w, "decoder.conv_norm_out", 1);
    conv3(x, img, x->buf[1], cur, h, w, c->in_channels, "decoder.conv_out");
}

typedef void (*vae_net)(vctx *x, float *out, const float *in, int h, int w);

/* Plans a call of `net` on n images of h x w: a first pass at one image finds the largest
 * conv, which sets the images per chunk (as many as keep every conv call within g_band
 * floats, at least one); the second pass records the needs of such a chunk. */
static void plan_chunk(vctx *x, const dap_vae *v, vae_net net, int n, int h, int w) {
    const size_t band = v->dev ? DEV_BAND_FLOATS : g_band;
    *x = (vctx){.v = v, .dev = v->dev, .plan = 1, .n = 1};
    net(x, NULL, NULL, h, w);
    size_t per = x->conv_need, k = per >= band ? 1 : band / per;
    *x = (vctx){.v = v, .dev = v->dev, .plan = 1, .n = k < (size_t)n ? (int)k : n};
    net(x, NULL, NULL, h, w);
}

static void ctx_alloc(vctx *x) {
    x->plan = 0;
#ifdef DAP_CUDA
    if (x->dev) {
        for (int i = 0; i < 3; i++) x->buf[i] = dap_vae_cuda_alloc(x->dev, x->act_need);
        x->aux = dap_vae_cuda_alloc(x->dev, x->aux_need);
        x->col = dap_vae_cuda_alloc(x->dev, x->col_need);
        dap_log(DAP_LOG_DEBUG, "vae: %d images per chunk, %.1f MiB on the GPU\n", x->n,
                (3.0 * x->act_need + x->aux_need + x->col_need) * sizeof(float) / 1048576.0);
        return;
    }
#endif
    for (int i = 0; i < 3; i++) x->buf[i] = dap_alloc_f32(x->act_need);
    x->aux = dap_alloc_f32(x->aux_need);
    x->work = dap_alloc_f32(x->work_need);
    x->stats = dap_alloc_f32(x->stat_need);
    double mb = (3.0 * x->act_need + x->aux_need + x->work_need) * sizeof(float) / 1048576.0;
    dap_log(DAP_LOG_DEBUG, "vae: %d images per chunk, %.1f MiB of activations and scratch\n", x->n, mb);
}

static void ctx_free(vctx *x) {
#ifdef DAP_CUDA
    if (x->dev) {
        for (int i = 0; i < 3; i++) dap_vae_cuda_free(x->dev, x->buf[i]);
        dap_vae_cuda_free(x->dev, x->aux);
        dap_vae_cuda_free(x->dev, x->col);
        return;
    }
#endif
    for (int i = 0; i < 3; i++) dap_free_aligned(x->buf[i]);
    dap_free_aligned(x->aux);
    dap_free_aligned(x->work);
    dap_free_aligned(x->stats);
}

/* A call's input and output buffers: on the GPU for a device model, else on the host. */
static float *io_alloc(const dap_vae *v, size_t floats) {
#ifdef DAP_CUDA
    if (v->dev) return dap_vae_cuda_alloc(v->dev, floats);
#else
    (void)v;
#endif
    return dap_alloc_f32(floats);
}

static void io_free(const dap_vae *v, float *p) {
#ifdef DAP_CUDA
    if (v->dev) {
        dap_vae_cuda_free(v->dev, p);
        return;
    }
#else
    (void)v;
#endif
    dap_free_aligned(p);
}

/* dst = src across the host and the device (a device model only) */
static void io_copy(const dap_vae *v, float *dst, const float *src, size_t floats) {
#ifdef DAP_CUDA
    dap_vae_cuda_copy(v->dev, dst, src, floats);
#else
    (void)v, (void)dst, (void)src, (void)floats;
    DAP_ASSERT(!"io_copy without a device");
#endif
}

static int check_size(const dap_vae *v, const char *what, int n, int h, int w, int mult) {
    if (n <= 0 || h <= 0 || w <= 0 || h > 16384 || w > 16384)
        return dap_error(DAP_ERR_ARG, "VAE %s: %d images of %d x %d (expected positive sizes up to 16384)", what,
                         n, h, w);
    if (h % mult || w % mult)
        return dap_error(DAP_ERR_SHAPE, "VAE %s: image size %d x %d is not a multiple of %d (the VAE's factor)",
                         what, h, w, mult);
    (void)v;
    return DAP_OK;
}

size_t dap_vae_plan_bytes(const dap_vae *v, int decode, int n, int h, int w) {
    vctx cx;
    plan_chunk(&cx, v, decode ? decoder : encoder, n, h, w);
    const dap_vae_config *c = &v->cfg;
    const int f = dap_vae_factor(c);
    const size_t lat = (size_t)c->latent_channels * (decode ? (size_t)h * w : (size_t)(h / f) * (w / f));
    const size_t img = (size_t)c->in_channels * (decode ? (size_t)h * f * w * f : (size_t)h * w);
    size_t floats = 3 * cx.act_need + cx.aux_need + cx.col_need + (size_t)cx.n * (img + 2 * lat);
    if (!v->dev) floats += cx.work_need + cx.stat_need;
    return floats * sizeof(float);
}

int dap_vae_encode_moments(dap_vae *v, const float *x, int n, int h, int w, float *mean, float *logvar) {
    const dap_vae_config *c = &v->cfg;
    const int f = dap_vae_factor(c);
    DAP_TRY(check_size(v, "encode", n, h, w, f));
    const int lat = c->latent_channels;
    const size_t lplane = (size_t)(h / f) * (w / f), img = (size_t)c->in_channels * h * w;
    vctx cx;
    plan_chunk(&cx, v, encoder, n, h, w);
    ctx_alloc(&cx);
    const int nb = cx.n;
    const size_t mper = 2 * (size_t)lat * lplane;
    float *moments = io_alloc(v, (size_t)nb * mper), *hm = v->dev ? dap_alloc_f32((size_t)nb * mper) : moments;
    float *xin = v->dev ? io_alloc(v, (size_t)nb * img) : NULL;
    for (int n0 = 0; n0 < n; n0 += nb) {
        cx.n = n - n0 < nb ? n - n0 : nb;
        const float *in = x + (size_t)n0 * img;
        if (xin) io_copy(v, xin, in, (size_t)cx.n * img), in = xin;
        encoder(&cx, moments, in, h, w);
        if (hm != moments) io_copy(v, hm, moments, (size_t)cx.n * mper);
        for (int i = 0; i < cx.n; i++) {
            const float *m = hm + (size_t)i * mper, *lv = m + lat * lplane;
            memcpy(mean + (size_t)(n0 + i) * lat * lplane, m, lat * lplane * sizeof(float));
            float *o = logvar + (size_t)(n0 + i) * lat * lplane;
            for (size_t k = 0; k < lat * lplane; k++) o[k] = fminf(fmaxf(lv[k], -30.0f), 20.0f);
        }
    }
    if (hm != moments) dap_free_aligned(hm);
    io_free(v, moments);
    if (xin) io_free(v, xin);
    ctx_free(&cx);
    return DAP_OK;
}

int dap_vae_encode(dap_vae *v, const float *x, int n, int h, int w, float *latent, dap_rng *rng) {
    const dap_vae_config *c = &v->cfg;
    const int f = dap_vae_factor(c);
    DAP_TRY(check_size(v, "encode", n, h, w, f));
    const size_t count = (size_t)n * c->latent_channels * (h / f) * (w / f);
    float *logvar = dap_alloc_f32(count);
    int rc = dap_vae_encode_moments(v, x, n, h, w, latent, logvar);
    if (rc == DAP_OK && rng) { /* a posterior sample: mean + exp(logvar / 2) xi */
        float *xi = dap_alloc_f32(count);
        dap_rng_normal(rng, xi, count, 0.0f, 1.0f);
        for (size_t k = 0; k < count; k++) latent[k] += expf(0.5f * logvar[k]) * xi[k];
        dap_free_aligned(xi);
    }
    if (rc == DAP_OK)
        for (size_t k = 0; k < count; k++) latent[k] *= c->scale;
    dap_free_aligned(logvar);
    return rc;
}

int dap_vae_decode(dap_vae *v, const float *latent, int n, int h, int w, float *x) {
    const dap_vae_config *c = &v->cfg;
    const int f = dap_vae_factor(c);
    if (h <= 0 || w <= 0 || h > 16384 / f || w > 16384 / f)
        return dap_error(DAP_ERR_ARG, "VAE decode: a %d x %d latent (expected 1 to %d per side)", h, w, 16384 / f);
    DAP_TRY(check_size(v, "decode", n, h * f, w * f, f));
    const int lat = c->latent_channels;
    const size_t lsize = (size_t)lat * h * w, img = (size_t)c->in_channels * h * f * w * f;
    vctx cx;
    plan_chunk(&cx, v, decoder, n, h, w);
    ctx_alloc(&cx);
    const int nb = cx.n;
    float *z = dap_alloc_f32((size_t)nb * lsize);
    float *dz = v->dev ? io_alloc(v, (size_t)nb * lsize) : z, *dimg = v->dev ? io_alloc(v, (size_t)nb * img) : NULL;
    for (int n0 = 0; n0 < n; n0 += nb) {
        cx.n = n - n0 < nb ? n - n0 : nb;
        for (size_t k = 0; k < (size_t)cx.n * lsize; k++) z[k] = latent[(size_t)n0 * lsize + k] / c->scale;
        if (dz != z) io_copy(v, dz, z, (size_t)cx.n * lsize);
        decoder(&cx, dimg ? dimg : x + (size_t)n0 * img, dz, h, w);
        if (dimg) io_copy(v, x + (size_t)n0 * img, dimg, (size_t)cx.n * img);
    }
    if (dz != z) io_free(v, dz);
    if (dimg) io_free(v, dimg);
    dap_free_aligned(z);
    ctx_free(&cx);
    return DAP_OK;
}

/* ---- the decoder's vector-Jacobian product ------------------------------------------------
 * dap_vae_decode_vjp: one latent through a second, plain walk of the decoder (one image,
 * no bands) that keeps each block's input; the backward then runs block by block from the
 * image down, recomputing a block's inside from its input (ResNet: GN, SiLU, conv, GN,
 * SiLU, conv and the shortcut; attention: GN, q k v, softmax, to_out; upsampling and its
 * conv; the output GN, SiLU and conv) and taking the input gradients. Only the input
 * gradient: no weight gradients. The walk is written once over the primitives below, which
 * run ops.h on the host or, with a device model, src/cuda/vae_cuda.cu on device buffers
 * (the tape then lives on the GPU; the latent goes up, the image and the gradient come
 * down). */

typedef struct vjp {
    const dap_vae *v;
    void *dev;          /* the model's GPU half, or NULL */
    float *work;        /* conv work (host) or im2col columns (device) */
    size_t work_n;
    float *mean, *rstd; /* host GroupNorm statistics of one call (groups each); the device's
                         * backward recomputes its own */
} vjp;

static float *vj_alloc(vjp *c, size_t n) {
#ifdef DAP_CUDA
    if (c->dev) return dap_vae_cuda_alloc(c->dev, n);
#endif
    (void)c;
    return dap_alloc_f32(n);
}

static void vj_free(vjp *c, float *p) {
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_free(c->dev, p);
        return;
    }
#endif
    (void)c;
    dap_free_aligned(p);
}

/* A weight where the ops run, from its host pointer. */
static const float *vw(const vjp *c, const float *host) {
#ifdef DAP_CUDA
    if (c->dev) return dap_vae_cuda_weight(c->dev, (size_t)(host - c->v->params.data));
#endif
    (void)c;
    return host;
}

static float *vjp_work(vjp *c, size_t n) {
    if (n > c->work_n) {
        vj_free(c, c->work);
        c->work = vj_alloc(c, n);
        c->work_n = n;
    }
    return c->work;
}

static void vadd(vjp *c, float *y, const float *a, size_t n) {
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_add(c->dev, y, a, n);
        return;
    }
#endif
    (void)c;
    for (size_t q = 0; q < n; q++) y[q] += a[q];
}

static void vcopy(vjp *c, float *dst, const float *src, size_t n) {
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_copy(c->dev, dst, src, n);
        return;
    }
#endif
    (void)c;
    memcpy(dst, src, n * sizeof(float));
}

static void vgemm(vjp *c, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                  int ldb, float beta, float *y, int ldy) {
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_gemm(c->dev, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, y, ldy);
        return;
    }
#endif
    (void)c;
    dap_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, y, ldy);
}

/* g = g * silu'(t) */
static void vsilu_back(vjp *c, float *g, const float *t, size_t n) {
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_silu_back(c->dev, g, t, n);
        return;
    }
#endif
    (void)c;
    dap_silu_backward(g, g, t, n);
}

/* u (c, 2h, 2w) = nearest x2 of x (c, h, w); back: gx from gu */
static void vupsample(vjp *c, float *u, const float *x, int ch, int h, int w) {
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_upsample2(c->dev, u, x, 1, ch, h, w);
        return;
    }
#endif
    (void)c;
    dap_upsample_nearest_forward(u, x, 1, ch, h, w, 2);
}

static void vupsample_back(vjp *c, float *gx, const float *gu, int ch, int h, int w) {
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_upsample2_back(c->dev, gx, gu, 1, ch, h, w);
        return;
    }
#endif
    (void)c;
    dap_upsample_nearest_backward(gx, gu, 1, ch, h, w, 2);
}

/* out (oc, h, w) = conv k x k, stride 1, padding k / 2, of in (ch, h, w); back: the input gradient */
static void vconv(vjp *c, float *out, const float *in, int ch, int h, int w, int oc, int k, const char *pre) {
    const float *wt = wp(c->v, "%s.weight", pre), *bs = wp(c->v, "%s.bias", pre);
#ifdef DAP_CUDA
    if (c->dev) {
        float *col = k > 1 ? vjp_work(c, (size_t)ch * k * k * h * w) : NULL;
        dap_vae_cuda_conv(c->dev, out, in, vw(c, wt), vw(c, bs), 1, ch, h, w, oc, k, 1, k / 2, h, w, col);
        return;
    }
#endif
    dap_conv2d_dims d;
    dap_conv2d_dims_init(&d, 1, ch, h, w, oc, k, k, 1, k / 2);
    dap_conv2d_forward(out, in, wt, bs, &d, vjp_work(c, dap_conv2d_work_floats(&d)));
}

static void vconv_back(vjp *c, float *din, const float *dout, const float *in, int ch, int h, int w, int oc, int k,
                       const char *pre) {
    const float *wt = wp(c->v, "%s.weight", pre);
#ifdef DAP_CUDA
    if (c->dev) {
        float *col = k > 1 ? vjp_work(c, (size_t)ch * k * k * h * w) : NULL;
        dap_vae_cuda_conv_dgrad(c->dev, din, dout, vw(c, wt), ch, h, w, oc, k, col);
        return;
    }
#endif
    dap_conv2d_dims d;
    dap_conv2d_dims_init(&d, 1, ch, h, w, oc, k, k, 1, k / 2);
    dap_conv2d_backward(din, NULL, NULL, dout, in, wt, &d, vjp_work(c, dap_conv2d_work_floats(&d)));
}

/* out = GroupNorm(in) (statistics into c->mean, c->rstd on the host), then SiLU into act
 * when not NULL */
static void vnorm(vjp *c, float *out, float *act, const float *in, int ch, size_t hw, const char *pre) {
    const float *g = wp(c->v, "%s.weight", pre), *b = wp(c->v, "%s.bias", pre);
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_groupnorm(c->dev, out, in, vw(c, g), vw(c, b), 1, ch, (int)hw, c->v->cfg.groups, GN_EPS, 0);
        if (act) dap_vae_cuda_silu(c->dev, act, out, (size_t)ch * hw);
        return;
    }
#endif
    dap_groupnorm_forward(out, c->mean, c->rstd, in, g, b, 1, ch, (int)hw, c->v->cfg.groups, GN_EPS);
    if (act) dap_silu_forward(act, out, (size_t)ch * hw);
}

/* din from dout through GroupNorm at pre, after a vnorm of the same input (its statistics) */
static void vnorm_back(vjp *c, float *din, const float *dout, const float *in, int ch, size_t hw, const char *pre) {
    const float *g = wp(c->v, "%s.weight", pre);
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_groupnorm_back(c->dev, din, dout, in, vw(c, g), 1, ch, (int)hw, c->v->cfg.groups, GN_EPS);
        return;
    }
#endif
    dap_groupnorm_backward(din, NULL, NULL, dout, in, g, c->mean, c->rstd, 1, ch, (int)hw, c->v->cfg.groups);
}

/* y (ch, t) = W a + b over the tokens */
static void vlinear(vjp *c, float *y, const float *wt, const float *b, const float *a, int ch, int t) {
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_gemm(c->dev, 0, 0, ch, t, ch, 1.0f, vw(c, wt), ch, a, t, 0.0f, y, t);
        dap_vae_cuda_bias_rows(c->dev, y, vw(c, b), ch, (size_t)t);
        return;
    }
#endif
    (void)c;
    token_linear(y, wt, b, a, ch, t);
}

static void vsoftmax(vjp *c, float *p, int rows, int t) {
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_softmax_rows(c->dev, p, rows, t);
        return;
    }
#endif
    (void)c;
    softmax_rows(p, rows, t);
}

/* dp = p (dp - sum_j p dp), row by row */
static void vsoftmax_back(vjp *c, const float *p, float *dp, int rows, int t) {
#ifdef DAP_CUDA
    if (c->dev) {
        dap_vae_cuda_softmax_back_rows(c->dev, p, dp, rows, t);
        return;
    }
#endif
    (void)c;
    for (int i = 0; i < rows; i++) {
        const float *pr = p + (size_t)i * t;
        float *dr = dp + (size_t)i * t;
        double sdot = 0;
        for (int j = 0; j < t; j++) sdot += (double)pr[j] * dr[j];
        for (int j = 0; j < t; j++) dr[j] = pr[j] * (dr[j] - (float)sdot);
    }
}

/* Y (cout, h, w) = the ResNet block at pre of X (cin, h, w); with Y NULL, dX from dY instead. */
static void vresnet(vjp *c, float *Y, float *dX, const float *dY, const float *X, int cin, int cout, int h, int w,
                    const char *pre) {
    char k[160];
    const size_t hw = (size_t)h * w, G = (size_t)c->v->cfg.groups;
    float *t1 = vj_alloc(c, cin * hw), *u1 = vj_alloc(c, cin * hw), *H1 = vj_alloc(c, cout * hw);
    float *t2 = vj_alloc(c, cout * hw), *u2 = vj_alloc(c, cout * hw);
    float *m1 = dap_alloc_f32(2 * G), *r1 = m1 + G; /* norm1's host statistics, for its backward */
    snprintf(k, sizeof k, "%s.norm1", pre);
    vnorm(c, t1, u1, X, cin, hw, k);
    if (!c->dev) memcpy(m1, c->mean, sizeof(float) * G), memcpy(r1, c->rstd, sizeof(float) * G);
    snprintf(k, sizeof k, "%s.conv1", pre);
    vconv(c, H1, u1, cin, h, w, cout, 3, k);
    snprintf(k, sizeof k, "%s.norm2", pre);
    vnorm(c, t2, u2, H1, cout, hw, k);
    if (Y) {
        snprintf(k, sizeof k, "%s.conv2", pre);
        vconv(c, Y, u2, cout, h, w, cout, 3, k);
        if (cin != cout) {
            float *S = vj_alloc(c, cout * hw);
            snprintf(k, sizeof k, "%s.conv_shortcut", pre);
            vconv(c, S, X, cin, h, w, cout, 1, k);
            vadd(c, Y, S, cout * hw);
            vj_free(c, S);
        } else {
            vadd(c, Y, X, cout * hw);
        }
    } else {
        float *g2 = vj_alloc(c, cout * hw), *g1 = vj_alloc(c, cout * hw), *g0 = vj_alloc(c, cin * hw);
        snprintf(k, sizeof k, "%s.conv2", pre);
        vconv_back(c, g2, dY, u2, cout, h, w, cout, 3, k);
        vsilu_back(c, g2, t2, cout * hw);
        snprintf(k, sizeof k, "%s.norm2", pre);
        vnorm_back(c, g1, g2, H1, cout, hw, k);
        snprintf(k, sizeof k, "%s.conv1", pre);
        vconv_back(c, g0, g1, u1, cin, h, w, cout, 3, k);
        vsilu_back(c, g0, t1, cin * hw);
        if (!c->dev) memcpy(c->mean, m1, sizeof(float) * G), memcpy(c->rstd, r1, sizeof(float) * G);
        snprintf(k, sizeof k, "%s.norm1", pre);
        vnorm_back(c, dX, g0, X, cin, hw, k);
        if (cin != cout) {
            snprintf(k, sizeof k, "%s.conv_shortcut", pre);
            vconv_back(c, g0, dY, X, cin, h, w, cout, 1, k);
            vadd(c, dX, g0, cin * hw);
        } else {
            vadd(c, dX, dY, cin * hw);
        }
        vj_free(c, g2), vj_free(c, g1), vj_free(c, g0);
    }
    vj_free(c, t1), vj_free(c, u1), vj_free(c, H1), vj_free(c, t2), vj_free(c, u2);
    dap_free_aligned(m1);
}

/* Y = X + to_out(attention(GN(X))) of the decoder's mid block; with Y NULL, dX from dY instead. */
static void vattention(vjp *c, float *Y, float *dX, const float *dY, const float *X, int ch, int h, int w) {
    const char *pre = "decoder.mid_block.attentions.0";
    char k[160];
    const int t = h * w;
    const size_t ct = (size_t)ch * t, tt = (size_t)t * t;
    const float scale = 1.0f / sqrtf((float)ch);
    const float *wq = wp(c->v, "%s.to_q.weight", pre), *wk = wp(c->v, "%s.to_k.weight", pre);
    const float *wv = wp(c->v, "%s.to_v.weight", pre), *wo = vw(c, wp(c->v, "%s.to_out.0.weight", pre));
    float *a = vj_alloc(c, ct), *q = vj_alloc(c, ct), *kk = vj_alloc(c, ct), *v = vj_alloc(c, ct);
    float *p = vj_alloc(c, tt), *o = vj_alloc(c, ct);
    snprintf(k, sizeof k, "%s.group_norm", pre);
    vnorm(c, a, NULL, X, ch, (size_t)t, k);
    vlinear(c, q, wq, wp(c->v, "%s.to_q.bias", pre), a, ch, t);
    vlinear(c, kk, wk, wp(c->v, "%s.to_k.bias", pre), a, ch, t);
    vlinear(c, v, wv, wp(c->v, "%s.to_v.bias", pre), a, ch, t);
    vgemm(c, 1, 0, t, t, ch, scale, q, t, kk, t, 0.0f, p, t); /* s = q^T k / sqrt(c) */
    vsoftmax(c, p, t, t);
    if (Y) {
        vgemm(c, 0, 1, ch, t, t, 1.0f, v, t, p, t, 0.0f, o, t); /* o = v p^T */
        vcopy(c, Y, X, ct);
        vgemm(c, 0, 0, ch, t, ch, 1.0f, wo, ch, o, t, 1.0f, Y, t);
        const float *bo = wp(c->v, "%s.to_out.0.bias", pre);
#ifdef DAP_CUDA
        if (c->dev) dap_vae_cuda_bias_rows(c->dev, Y, vw(c, bo), ch, (size_t)t);
        else
#endif
            for (int r = 0; r < ch; r++)
                for (int j = 0; j < t; j++) Y[(size_t)r * t + j] += bo[r];
    } else {
        float *dp = vj_alloc(c, tt), *dv = vj_alloc(c, ct), *da = vj_alloc(c, ct);
        vgemm(c, 1, 0, ch, t, ch, 1.0f, wo, ch, dY, t, 0.0f, o, t); /* do = W_o^T dY, over o */
        vgemm(c, 0, 0, ch, t, t, 1.0f, o, t, p, t, 0.0f, dv, t);    /* dv = do p */
        vgemm(c, 1, 0, t, t, ch, 1.0f, o, t, v, t, 0.0f, dp, t);    /* dp = do^T v */
        vsoftmax_back(c, p, dp, t, t);                              /* ds, over dp */
        /* dq = k ds^T / sqrt(c), dk = q ds / sqrt(c): over v and o (free now) */
        float *dq = o, *dk = v;
        vcopy(c, a, kk, ct); /* k, kept while v becomes dk */
        vgemm(c, 0, 1, ch, t, t, scale, a, t, dp, t, 0.0f, dq, t);
        vgemm(c, 0, 0, ch, t, t, scale, q, t, dp, t, 0.0f, dk, t);
        /* da = W_q^T dq + W_k^T dk + W_v^T dv */
        vgemm(c, 1, 0, ch, t, ch, 1.0f, vw(c, wq), ch, dq, t, 0.0f, da, t);
        vgemm(c, 1, 0, ch, t, ch, 1.0f, vw(c, wk), ch, dk, t, 1.0f, da, t);
        vgemm(c, 1, 0, ch, t, ch, 1.0f, vw(c, wv), ch, dv, t, 1.0f, da, t);
        vnorm(c, q, NULL, X, ch, (size_t)t, k); /* the statistics again (q: scratch) */
        vnorm_back(c, dX, da, X, ch, (size_t)t, k);
        vadd(c, dX, dY, ct);
        vj_free(c, dp), vj_free(c, dv), vj_free(c, da);
    }
    vj_free(c, a), vj_free(c, q), vj_free(c, kk), vj_free(c, v);
    vj_free(c, p), vj_free(c, o);
}

enum { TAPE_MAX = 8 + DAP_VAE_MAX_LEVELS * 16 };

struct dap_vae_tape {
    dap_vae *v;
    vjp c;
    float *z, *a0;                 /* the scaled latent, post_quant_conv's output */
    float *in[TAPE_MAX];           /* each block's input, its channels and sides */
    int ic[TAPE_MAX], ih[TAPE_MAX], iw[TAPE_MAX], nb;
    int h, w;
};

#ifdef DAP_CUDA
/* An upper bound of the floats a taped decode and its backward hold at once: the tape
 * (every block's input), a block's working set (a dozen tensors of the largest
 * activation, the attention's scores) and the largest im2col. */
static size_t tape_floats(const dap_vae_config *cf, int h, int w) {
    const int L = cf->levels;
    size_t cur = (size_t)cf->ch[L - 1], H = (size_t)h, W = (size_t)w, tape = 3 * cur * H * W, big = cur * H * W;
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < cf->dec_blocks; j++) {
            tape += cur * H * W;
            cur = (size_t)cf->ch[L - 1 - i];
            if (cur * H * W > big) big = cur * H * W;
        }
        if (i == L - 1) break;
        tape += cur * H * W, H *= 2, W *= 2;
        if (cur * H * W > big) big = cur * H * W;
    }
    tape += cur * H * W;
    const size_t t = (size_t)h * w;
    return tape + 12 * big + 2 * t * t + 9 * big;
}
#endif

int dap_vae_decode_taped(dap_vae *v, const float *latent, int h, int w, float *img, dap_vae_tape **out) {
    *out = NULL;
    const dap_vae_config *cf = &v->cfg;
    const int f = dap_vae_factor(cf), L = cf->levels, lat = cf->latent_channels;
    if (h <= 0 || w <= 0 || h > 16384 / f || w > 16384 / f)
        return dap_error(DAP_ERR_ARG, "VAE decode gradient: a %d x %d latent (expected 1 to %d per side)", h, w, 16384 / f);
#ifdef DAP_CUDA
    if (v->dev) { /* the tape lives on the GPU: room for it, before any of the work */
        const size_t need = tape_floats(cf, h, w) * sizeof(float);
        size_t fr = 0, tot = 0;
        DAP_TRY(dap_cuda_memory(&fr, &tot));
        char b[3][32];
        if (need > fr)
            return dap_error(DAP_ERR_NOMEM, "the VAE decoder's gradient at a %dx%d latent needs up to %s on the GPU, "
                             "%s of %s are free", h, w, dap_fmt_bytes(b[0], 32, (double)need),
                             dap_fmt_bytes(b[1], 32, (double)fr), dap_fmt_bytes(b[2], 32, (double)tot));
    }
#endif
    dap_vae_tape *tp = dap_calloc(1, sizeof *tp);
    tp->v = v, tp->h = h, tp->w = w, tp->c.v = v, tp->c.dev = v->dev;
    vjp *c = &tp->c;
    c->mean = dap_alloc_f32(2 * (size_t)cf->groups), c->rstd = c->mean + cf->groups;
    char pre[96];
    const size_t lsize = (size_t)lat * h * w;
    float *zh = dap_alloc_f32(lsize);
    for (size_t q = 0; q < lsize; q++) zh[q] = latent[q] / cf->scale;
    float *z = tp->z = c->dev ? vj_alloc(c, lsize) : zh, *a0 = tp->a0 = vj_alloc(c, lsize);
    if (z != zh) vcopy(c, z, zh, lsize), dap_free_aligned(zh);
    vconv(c, a0, z, lat, h, w, lat, 1, "post_quant_conv");
    int cur = cf->ch[L - 1], H = h, W = w;
    float *x = vj_alloc(c, (size_t)cur * H * W);
    vconv(c, x, a0, lat, H, W, cur, 3, "decoder.conv_in");
#define PUSH()                                                                                     \
    (tp->in[tp->nb] = x, tp->ic[tp->nb] = cur, tp->ih[tp->nb] = H, tp->iw[tp->nb] = W, tp->nb++)
    for (int part = 0; part < 3; part++) { /* mid: ResNet, attention, ResNet */
        float *y = vj_alloc(c, (size_t)cur * H * W);
        PUSH();
        if (part == 1) vattention(c, y, NULL, NULL, x, cur, H, W);
        else {
            snprintf(pre, sizeof pre, "decoder.mid_block.resnets.%d", part / 2);
            vresnet(c, y, NULL, NULL, x, cur, cur, H, W, pre);
        }
        x = y;
    }
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < cf->dec_blocks; j++) {
            const int out = cf->ch[L - 1 - i];
            float *y = vj_alloc(c, (size_t)out * H * W);
            PUSH();
            snprintf(pre, sizeof pre, "decoder.up_blocks.%d.resnets.%d", i, j);
            vresnet(c, y, NULL, NULL, x, cur, out, H, W, pre);
            x = y, cur = out;
        }
        if (i == L - 1) break;
        PUSH();
        float *u = vj_alloc(c, (size_t)cur * H * W * 4), *y = vj_alloc(c, (size_t)cur * H * W * 4);
        vupsample(c, u, x, cur, H, W);
        snprintf(pre, sizeof pre, "decoder.up_blocks.%d.upsamplers.0.conv", i);
        vconv(c, y, u, cur, 2 * H, 2 * W, cur, 3, pre);
        vj_free(c, u);
        x = y, H *= 2, W *= 2;
    }
    PUSH(); /* the output: GN, SiLU, conv_out */
#undef PUSH
    DAP_ASSERT(tp->nb <= TAPE_MAX);
    if (img) { /* the image itself: GN, SiLU, conv_out of the last block's output */
        const size_t hw = (size_t)H * W, isz = (size_t)cf->in_channels * hw;
        float *t = vj_alloc(c, cur * hw), *u = vj_alloc(c, cur * hw), *im = c->dev ? vj_alloc(c, isz) : img;
        vnorm(c, t, u, x, cur, hw, "decoder.conv_norm_out");
        vconv(c, im, u, cur, H, W, cf->in_channels, 3, "decoder.conv_out");
        if (im != img) vcopy(c, img, im, isz), vj_free(c, im);
        vj_free(c, t), vj_free(c, u);
    }
    *out = tp;
    return DAP_OK;
}

int dap_vae_tape_backward(dap_vae_tape *tp, const float *dimg, float *dlat) {
    const dap_vae_config *cf = &tp->v->cfg;
    const int L = cf->levels, lat = cf->latent_channels, h = tp->h, w = tp->w, nb = tp->nb;
    vjp *c = &tp->c;
    float **tape = tp->in, *z = tp->z, *a0 = tp->a0, *x = tape[nb - 1];
    const int *tc = tp->ic, *th = tp->ih, *tw = tp->iw, cur = tc[nb - 1], H = th[nb - 1], W = tw[nb - 1];
    const size_t lsize = (size_t)lat * h * w;
    char pre[96];
    /* backward, block by block */
    const size_t hw = (size_t)H * W, isz = (size_t)cf->in_channels * hw;
    const float *gimg = dimg;
    if (c->dev) { /* the image's gradient goes up */
        float *up = vj_alloc(c, isz);
        vcopy(c, up, dimg, isz);
        gimg = up;
    }
    float *t = vj_alloc(c, cur * hw), *u = vj_alloc(c, cur * hw), *g = vj_alloc(c, cur * hw);
    vnorm(c, t, u, x, cur, hw, "decoder.conv_norm_out");
    vconv_back(c, g, gimg, u, cur, H, W, cf->in_channels, 3, "decoder.conv_out");
    if (gimg != dimg) vj_free(c, (float *)gimg);
    vsilu_back(c, g, t, cur * hw);
    float *gx = vj_alloc(c, cur * hw);
    vnorm_back(c, gx, g, x, cur, hw, "decoder.conv_norm_out");
    vj_free(c, t), vj_free(c, u), vj_free(c, g);
    int b = nb - 2;
    for (int i = L - 1; i >= 0; i--) {
        if (i < L - 1) { /* the upsampler after level i: tape[b] is its input */
            const int c0 = tc[b], h0 = th[b], w0 = tw[b];
            float *uu = vj_alloc(c, (size_t)c0 * h0 * w0 * 4), *gu = vj_alloc(c, (size_t)c0 * h0 * w0 * 4);
            vupsample(c, uu, tape[b], c0, h0, w0);
            snprintf(pre, sizeof pre, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            vconv_back(c, gu, gx, uu, c0, 2 * h0, 2 * w0, c0, 3, pre);
            vj_free(c, gx);
            gx = vj_alloc(c, (size_t)c0 * h0 * w0);
            vupsample_back(c, gx, gu, c0, h0, w0);
            vj_free(c, uu), vj_free(c, gu);
            b--;
        }
        for (int j = cf->dec_blocks - 1; j >= 0; j--, b--) {
            const int out = cf->ch[L - 1 - i];
            float *gi = vj_alloc(c, (size_t)tc[b] * th[b] * tw[b]);
            snprintf(pre, sizeof pre, "decoder.up_blocks.%d.resnets.%d", i, j);
            vresnet(c, NULL, gi, gx, tape[b], tc[b], out, th[b], tw[b], pre);
            vj_free(c, gx);
            gx = gi;
        }
    }
    for (int part = 2; part >= 0; part--, b--) {
        float *gi = vj_alloc(c, (size_t)tc[b] * th[b] * tw[b]);
        if (part == 1) vattention(c, NULL, gi, gx, tape[b], tc[b], th[b], tw[b]);
        else {
            snprintf(pre, sizeof pre, "decoder.mid_block.resnets.%d", part / 2);
            vresnet(c, NULL, gi, gx, tape[b], tc[b], tc[b], th[b], tw[b], pre);
        }
        vj_free(c, gx);
        gx = gi;
    }
    DAP_ASSERT(b == -1);
    float *ga = vj_alloc(c, lsize), *gl = c->dev ? vj_alloc(c, lsize) : dlat;
    vconv_back(c, ga, gx, a0, lat, h, w, cf->ch[L - 1], 3, "decoder.conv_in");
    vconv_back(c, gl, ga, z, lat, h, w, lat, 1, "post_quant_conv");
    if (gl != dlat) vcopy(c, dlat, gl, lsize), vj_free(c, gl); /* the latent's gradient comes down */
    for (size_t q = 0; q < lsize; q++) dlat[q] /= cf->scale;
    vj_free(c, ga), vj_free(c, gx);
    return DAP_OK;
}

void dap_vae_tape_free(dap_vae_tape *tp) {
    if (!tp) return;
    vjp *c = &tp->c;
    for (int i = 0; i < tp->nb; i++) vj_free(c, tp->in[i]);
    vj_free(c, tp->z), vj_free(c, tp->a0), vj_free(c, c->work);
    dap_free_aligned(c->mean);
    free(tp);
}

int dap_vae_decode_vjp(dap_vae *v, const float *latent, int h, int w, const float *dimg, float *dlat) {
    dap_vae_tape *tp;
    DAP_TRY(dap_vae_decode_taped(v, latent, h, w, NULL, &tp));
    int rc = dap_vae_tape_backward(tp, dimg, dlat);
    dap_vae_tape_free(tp);
    return rc;
}



/* ---- loading: three key namings onto the one table ------------------------------------ */

/* The file's name for table key `key`: diffusers' current names as they are; before
 * 0.14 the attention's query/key/value/proj_attn; the LDM names with down.i.block.j,
 * mid.block_1/2, mid.attn_1.{norm,q,k,v,proj_out}, nin_shortcut, norm_out and the
 * decoder's levels counted from the top resolution (up.{L-1-i} is up_blocks.i). */
/* Replaces the first `from` in s (of capacity cap) by `to`; 0 when absent or too long. */
static int replace_once(char *s, size_t cap, const char *from, const char *to) {
    char *f = strstr(s, from);
    size_t lf = strlen(from), lt = strlen(to), ls = strlen(s);
    if (!f || ls - lf + lt + 1 > cap) return 0;
    memmove(f + lt, f + lf, ls - (size_t)(f - s) - lf + 1);
    memcpy(f, to, lt);
    return 1;
}

static void file_key(char *out, size_t n, const char *key, int naming, int levels, const char *prefix) {
    char k[192];
    int i, j, pos = 0;
    snprintf(k, sizeof k, "%s", key);
    if (naming == NAMING_OLD_ATTENTION) {
        static const char *const from[] = {"attentions.0.to_q.", "attentions.0.to_k.", "attentions.0.to_v.",
                                           "attentions.0.to_out.0."};
        static const char *const to[] = {"attentions.0.query.", "attentions.0.key.", "attentions.0.value.",
                                         "attentions.0.proj_attn."};
        for (int m = 0; m < 4 && !replace_once(k, sizeof k, from[m], to[m]); m++) {}
    } else if (naming == NAMING_LDM) {
        char part[16];
        if (sscanf(key, "%15[^.].down_blocks.%d.resnets.%d.%n", part, &i, &j, &pos) == 3 && pos)
            snprintf(k, sizeof k, "%s.down.%d.block.%d.%s", part, i, j, key + pos);
        else if ((pos = 0, sscanf(key, "%15[^.].down_blocks.%d.downsamplers.0.%n", part, &i, &pos)) == 2 && pos)
            snprintf(k, sizeof k, "%s.down.%d.downsample.%s", part, i, key + pos);
        else if ((pos = 0, sscanf(key, "%15[^.].up_blocks.%d.resnets.%d.%n", part, &i, &j, &pos)) == 3 && pos)
            snprintf(k, sizeof k, "%s.up.%d.block.%d.%s", part, levels - 1 - i, j, key + pos);
        else if ((pos = 0, sscanf(key, "%15[^.].up_blocks.%d.upsamplers.0.%n", part, &i, &pos)) == 2 && pos)
            snprintf(k, sizeof k, "%s.up.%d.upsample.%s", part, levels - 1 - i, key + pos);
        else if ((pos = 0, sscanf(key, "%15[^.].mid_block.resnets.%d.%n", part, &i, &pos)) == 2 && pos)
            snprintf(k, sizeof k, "%s.mid.block_%d.%s", part, i + 1, key + pos);
        else if ((pos = 0, sscanf(key, "%15[^.].mid_block.attentions.0.%n", part, &pos)) == 1 && pos) {
            static const char *const from[] = {"attn_1.group_norm.", "attn_1.to_q.", "attn_1.to_k.", "attn_1.to_v.",
                                               "attn_1.to_out.0."};
            static const char *const to[] = {"attn_1.norm.", "attn_1.q.", "attn_1.k.", "attn_1.v.",
                                             "attn_1.proj_out."};
            snprintf(k, sizeof k, "%s.mid.attn_1.%s", part, key + pos);
            for (int m = 0; m < 5 && !replace_once(k, sizeof k, from[m], to[m]); m++) {}
        } else if ((pos = 0, sscanf(key, "%15[^.].conv_norm_out.%n", part, &pos)) == 1 && pos)
            snprintf(k, sizeof k, "%s.norm_out.%s", part, key + pos);
        replace_once(k, sizeof k, ".conv_shortcut.", ".nin_shortcut.");
    }
    snprintf(out, n, "%s%s", prefix, k);
}

/* LDM stores the attention's q, k, v and proj_out as 1x1 convs (C, C, 1, 1). */
static int ldm_conv_linear(const char *key, int naming) {
    if (naming != NAMING_LDM || !strstr(key, "mid_block.attentions.0.to_")) return 0;
    size_t len = strlen(key);
    return len > 7 && strcmp(key + len - 7, ".weight") == 0;
}

typedef struct loadctx {
    const dap_st *st;
    const char *prefix;
    int naming, levels;
} loadctx;

static const dap_st_tensor *find_key(const loadctx *lc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const dap_st_tensor *find_key(const loadctx *lc, const char *fmt, ...) {
    char key[160], fk[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    file_key(fk, sizeof fk, key, lc->naming, lc->levels, lc->prefix);
    return dap_st_find(lc->st, fk);
}

static int shape_dim(const dap_st_tensor *t, int k) { return t && t->ndim > k ? (int)t->shape[k] : 0; }

/* The config off the shapes: levels and channels from the encoder's blocks, block counts
 * from level 0 / up_blocks.0, latent channels from the decoder's conv_in. GroupNorm
 * groups are in no shape: __metadata__ "norm_num_groups" when present, else 32. */
static int infer_config(loadctx *lc, const char *path, dap_vae_config *c) {
    memset(c, 0, sizeof *c);
    c->scale = DAP_VAE_SCALE;
    lc->levels = 0;
    while (lc->levels < DAP_VAE_MAX_LEVELS &&
           find_key(lc, "encoder.down_blocks.%d.resnets.0.conv1.weight", lc->levels))
        lc->levels++;
    c->levels = lc->levels;
    for (int i = 0; i < c->levels; i++)
        c->ch[i] = shape_dim(find_key(lc, "encoder.down_blocks.%d.resnets.0.conv1.weight", i), 0);
    while (c->enc_blocks < 64 && find_key(lc, "encoder.down_blocks.0.resnets.%d.conv1.weight", c->enc_blocks))
        c->enc_blocks++;
    while (c->dec_blocks < 64 && find_key(lc, "decoder.up_blocks.0.resnets.%d.conv1.weight", c->dec_blocks))
        c->dec_blocks++;
    c->in_channels = shape_dim(find_key(lc, "encoder.conv_in.weight"), 1);
    c->latent_channels = shape_dim(find_key(lc, "decoder.conv_in.weight"), 1);
    c->groups = 32;
    char *g = dap_st_meta_get(lc->st, "norm_num_groups");
    if (g) {
        char *end;
        long v = strtol(g, &end, 10);
        int bad = end == g || *end || v <= 0 || v > 65536;
        if (bad) dap_error(DAP_ERR_FORMAT, "%s: __metadata__ norm_num_groups = \"%s\" is not a group count", path, g);
        free(g);
        if (bad) return DAP_ERR_FORMAT;
        c->groups = (int)v;
    }
    if (c->levels == 0 || c->enc_blocks == 0 || c->dec_blocks == 0 || c->in_channels <= 0 ||
        c->latent_channels <= 0) {
        char k0[256], k1[256];
        file_key(k0, sizeof k0, "encoder.down_blocks.0.resnets.0.conv1.weight", lc->naming, 1, lc->prefix);
        file_key(k1, sizeof k1, "decoder.up_blocks.0.resnets.0.conv1.weight", lc->naming, 1, lc->prefix);
        return dap_error(DAP_ERR_MISSING,
                         "%s: cannot read the VAE's shape (%s naming): found %d encoder levels (%s), %d decoder "
                         "blocks (%s), conv_in / decoder.conv_in %s",
                         path, k_naming_names[lc->naming], c->levels, k0, c->dec_blocks, k1,
                         c->in_channels > 0 && c->latent_channels > 0 ? "present" : "missing");
    }
    int rc = dap_vae_config_check(c);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", dap_last_error());
        return dap_error(rc, "%s: %s (GroupNorm groups: __metadata__ norm_num_groups, default 32)", path, why);
    }
    return DAP_OK;
}

/* "a, b, c, ... (N in all)" of up to MAX_REPORTED names into buf */
static void list_names(char *buf, size_t n, const char *const *names, int count) {
    buf[0] = '\0';
    for (int i = 0; i < count && i < MAX_REPORTED; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s", i ? ", " : "", names[i]);
    }
    if (count > MAX_REPORTED) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, ", ... (%d in all)", count);
    }
}

/* Every table tensor present with its shape (LDM's 1x1-conv attention weights allowed)
 * and a float dtype; no other tensor under the prefix. */
static int check_tensors(const loadctx *lc, const dap_params *ps, const char *path, char **fkeys) {
    const char **missing = dap_calloc((size_t)ps->n + 1, sizeof *missing);
    int nmissing = 0, rc = DAP_OK;
    char want[128], got[128], names[1024];
    for (int i = 0; i < ps->n && rc == DAP_OK; i++) {
        const dap_param *p = &ps->p[i];
        const dap_st_tensor *t = dap_st_find(lc->st, fkeys[i]);
        if (!t) {
            missing[nmissing++] = fkeys[i];
            continue;
        }
        int same = t->ndim == p->ndim;
        for (int k = 0; same && k < p->ndim; k++) same = t->shape[k] == p->shape[k];
        if (!same && ldm_conv_linear(p->key, lc->naming))
            same = t->ndim == 4 && t->shape[0] == p->shape[0] && t->shape[1] == p->shape[1] && t->shape[2] == 1 &&
                   t->shape[3] == 1;
        if (!same) {
            dap_shape_str(want, sizeof want, p->shape, p->ndim);
            dap_shape_str(got, sizeof got, t->shape, t->ndim);
            rc = dap_error(DAP_ERR_SHAPE, "%s: VAE tensor '%s': expected shape %s, found %s", path, fkeys[i], want,
                           got);
        } else if (t->dtype != DAP_DT_F32 && t->dtype != DAP_DT_F16 && t->dtype != DAP_DT_BF16) {
            rc = dap_error(DAP_ERR_SHAPE, "%s: VAE tensor '%s': dtype %s is not a float type", path, fkeys[i],
                           dap_dtype_name(t->dtype));
        }
    }
    if (rc == DAP_OK && nmissing) {
        list_names(names, sizeof names, missing, nmissing);
        rc = dap_error(DAP_ERR_MISSING, "%s: the VAE (%s naming) lacks %d tensor%s: %s", path,
                       k_naming_names[lc->naming], nmissing, nmissing > 1 ? "s" : "", names);
    }
    free(missing);
    if (rc) return rc;
    const char **unknown = dap_calloc((size_t)lc->st->n + 1, sizeof *unknown);
    int nunknown = 0;
    size_t plen = strlen(lc->prefix);
    for (int i = 0; i < lc->st->n; i++) {
        const char *name = lc->st->t[i].name;
        if (strncmp(name, lc->prefix, plen) != 0) continue; /* the rest of a whole SD checkpoint */
        int known = 0;
        for (int k = 0; k < ps->n && !known; k++) known = strcmp(name, fkeys[k]) == 0;
        if (!known) unknown[nunknown++] = name;
    }
    if (nunknown) {
        list_names(names, sizeof names, unknown, nunknown);
        rc = dap_error(DAP_ERR_FORMAT, "%s: %d tensor%s that a VAE (%s naming) does not have: %s", path, nunknown,
                       nunknown > 1 ? "s" : "", k_naming_names[lc->naming], names);
    }
    free(unknown);
    return rc;
}

static int is_dit(const dap_st *st) {
    return dap_st_find(st, "x_embedder.proj.weight") || dap_st_find(st, "blocks.0.attn.qkv.weight") ||
           dap_st_find(st, "final_layer.linear.weight");
}

int dap_vae_load(dap_vae **out, const char *path) {
    *out = NULL;
    dap_st *st;
    DAP_TRY(dap_st_open(&st, path));
    loadctx lc = {.st = st, .prefix = "", .naming = NAMING_DIFFUSERS};
    if (dap_st_find(st, "first_stage_model.encoder.conv_in.weight")) lc.prefix = "first_stage_model.";
    else if (!dap_st_find(st, "encoder.conv_in.weight")) {
        int dit = is_dit(st);
        dap_st_close(st);
        if (dit) return dap_error(DAP_ERR_FORMAT, "%s is a DiT checkpoint, not a VAE", path);
        return dap_error(DAP_ERR_MISSING,
                         "%s is not a VAE: it has no tensor 'encoder.conv_in.weight' (nor "
                         "'first_stage_model.encoder.conv_in.weight')",
                         path);
    }
    char k[200];
    snprintf(k, sizeof k, "%sencoder.down.0.block.0.norm1.weight", lc.prefix);
    if (dap_st_find(st, k)) lc.naming = NAMING_LDM;
    snprintf(k, sizeof k, "%sencoder.mid_block.attentions.0.query.weight", lc.prefix);
    if (lc.naming != NAMING_LDM && dap_st_find(st, k)) lc.naming = NAMING_OLD_ATTENTION;
    dap_vae_config cfg;
    int rc = infer_config(&lc, path, &cfg);
    dap_params ps;
    dap_params_init(&ps);
    char **fkeys = NULL;
    int nkeys = 0;
    if (rc == DAP_OK) {
        dap_vae_params_table(&ps, &cfg);
        nkeys = ps.n;
        fkeys = dap_calloc((size_t)nkeys, sizeof *fkeys);
        for (int i = 0; i < nkeys; i++) {
            fkeys[i] = dap_malloc(256);
            file_key(fkeys[i], 256, ps.p[i].key, lc.naming, cfg.levels, lc.prefix);
        }
        rc = check_tensors(&lc, &ps, path, fkeys);
    }
    dap_vae *v = NULL;
    if (rc == DAP_OK) {
        v = dap_calloc(1, sizeof *v);
        v->cfg = cfg;
        v->naming = lc.naming;
        v->params = ps;
        dap_params_init(&ps);
        dap_params_alloc(&v->params, 0);
        for (int i = 0; i < v->params.n && rc == DAP_OK; i++) {
            const dap_param *p = &v->params.p[i];
            float *dst = v->params.data + p->offset;
            rc = dap_st_read_f32(st, fkeys[i], dst, NULL, 0);
            for (size_t j = 0; j < p->numel && rc == DAP_OK; j++)
                if (!isfinite(dst[j]))
                    rc = dap_error(DAP_ERR_VALUE, "%s: VAE tensor '%s': non-finite value %g at element %zu", path,
                                   fkeys[i], (double)dst[j], j);
        }
    }
    for (int i = 0; i < nkeys; i++) free(fkeys[i]);
    free(fkeys);
    dap_params_free(&ps);
    dap_st_close(st);
    if (rc) {
        dap_vae_destroy(v);
        return rc;
    }
    *out = v;
    return DAP_OK;
}

/* Reads the header alone: a VAE has encoder.conv_in.weight and decoder.conv_in.weight
 * (bare or under first_stage_model.) among its tensor names. */
int dap_vae_file_is_vae(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -dap_error(DAP_ERR_IO, "%s: cannot open", path);
    uint8_t len8[8];
    uint64_t hlen = 0;
    int ok = fread(len8, 1, 8, f) == 8;
    for (int i = 7; ok && i >= 0; i--) hlen = hlen << 8 | len8[i];
    long size = -1;
    if (ok && fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (!ok || size < 8 || hlen > (uint64_t)size - 8 || hlen > ((uint64_t)1 << 30)) {
        fclose(f);
        return -dap_error(DAP_ERR_FORMAT, "%s: not a safetensors file (bad header length)", path);
    }
    char *h = dap_malloc((size_t)hlen + 1);
    ok = fseek(f, 8, SEEK_SET) == 0 && fread(h, 1, (size_t)hlen, f) == (size_t)hlen;
    fclose(f);
    h[ok ? hlen : 0] = '\0';
    int yes = ok && (strstr(h, "\"encoder.conv_in.weight\"") || strstr(h, "\"first_stage_model.encoder.conv_in.weight\"")) &&
              (strstr(h, "\"decoder.conv_in.weight\"") || strstr(h, "\"first_stage_model.decoder.conv_in.weight\""));
    free(h);
    if (!ok) return -dap_error(DAP_ERR_IO, "%s: cannot read its header", path);
    return yes;
}
