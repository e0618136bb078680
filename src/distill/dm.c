/*
 * dm.c: distribution matching (DM), Zhao and Bilen, "Dataset Condensation with
 * Distribution Matching" (WACV 2023); public code: github.com/VICO-UoE/DatasetCondensation
 * (main_DM.py). No diffusion prior: the baseline of the optimisation family.
 *
 * The class's IPC images start as random real images of the class (the random baseline's
 * draw) and are optimised in the normalised pixel space ((x + 1)/2 - mean) / std (the
 * dataset's per-channel statistics) so that, at every iteration, a freshly initialised
 * ConvNet-3 (width 128, instance norm, average pooling; one network per iteration, shared
 * by all classes as in their loop) embeds them with the same mean as a batch of real
 * images of the class:
 *     loss = | mean_j phi(A(r_j)) - mean_i phi(A(s_i)) |^2,
 * phi the flattened features before the linear head, A the differentiable siamese
 * augmentation (one of colour, crop, cutout, flip, scale, rotate per iteration, each
 * image's parameters shared between the two batches), SGD with momentum 0.5 on the
 * pixels. Their defaults: 20000 iterations, image learning rate 1.0, 256 real images per
 * class and iteration (models/dm.flags). One iteration costs about 3.4 CPU seconds per
 * class here, so the command line defaults to 200 iterations (flagged in docs/methods.md).
 * The augmentation here has its own backward (the pixels' gradient); its forward follows
 * src/eval/augment.c's transforms and constants.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "distill/methods.h"
#include "eval/augment.h"
#include "models/convnet.h"

#define PI_F 3.14159265358979f

/* ---- the differentiable siamese augmentation ---- */

void dap_dsa_draw_make(dap_dsa_draw *d, int n, dap_rng *r) {
    d->op = (int)dap_rng_below(r, DAP_DSA_NOPS);
    d->n = n;
    d->p = dap_alloc_f32((size_t)3 * n);
    for (int i = 0; i < n; i++) {
        float *p = d->p + 3 * i;
        p[0] = p[1] = p[2] = 0;
        switch (d->op) {
        case DAP_DSA_COLOR: /* brightness +-0.5, saturation x0..2, contrast x0.5..1.5 */
            p[0] = (float)dap_rng_next_double(r) - 0.5f;
            p[1] = (float)dap_rng_next_double(r) * 2.0f;
            p[2] = (float)dap_rng_next_double(r) + 0.5f;
            break;
        case DAP_DSA_CROP: /* shifts in -s..s, s = 1/8 of the size: drawn at apply time as fractions */
        case DAP_DSA_CUTOUT:
        case DAP_DSA_SCALE:
            p[0] = (float)dap_rng_next_double(r);
            p[1] = (float)dap_rng_next_double(r);
            break;
        case DAP_DSA_FLIP:
        case DAP_DSA_ROTATE:
            p[0] = (float)dap_rng_next_double(r);
            break;
        default:
            break;
        }
    }
}

void dap_dsa_draw_free(dap_dsa_draw *d) {
    dap_free_aligned(d->p);
    d->p = NULL;
}

/* Integer in [lo, hi] from u in [0, 1). */
static int pick(float u, int lo, int hi) {
    int v = lo + (int)(u * (float)(hi - lo + 1));
    return v > hi ? hi : v;
}

/* out = shift of in by (ty, tx): out[y][x] = in[y + ty][x + tx], zero outside. */
static void shift_plane(float *out, const float *in, int h, int w, int ty, int tx) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const int sy = y + ty, sx = x + tx;
            out[(size_t)y * w + x] = sy >= 0 && sy < h && sx >= 0 && sx < w ? in[(size_t)sy * w + sx] : 0.0f;
        }
}

/* The affine bilinear resampling (align_corners, zero padding) of one plane, or its
 * transpose (scatter) when back. */
static void affine_plane(float *out, const float *in, int h, int w, const float *t, int back) {
    memset(out, 0, sizeof(float) * (size_t)h * w);
    for (int yy = 0; yy < h; yy++)
        for (int xx = 0; xx < w; xx++) {
            const float xn = w > 1 ? -1.0f + 2.0f * xx / (w - 1) : 0.0f,
                        yn = h > 1 ? -1.0f + 2.0f * yy / (h - 1) : 0.0f;
            const float xs = t[0] * xn + t[1] * yn + t[2], ys = t[3] * xn + t[4] * yn + t[5];
            const float ix = (xs + 1.0f) * 0.5f * (w - 1), iy = (ys + 1.0f) * 0.5f * (h - 1);
            const int x0 = (int)floorf(ix), y0 = (int)floorf(iy);
            const float fx = ix - x0, fy = iy - y0;
            for (int dy = 0; dy < 2; dy++)
                for (int dx = 0; dx < 2; dx++) {
                    const int sy = y0 + dy, sx = x0 + dx;
                    if (sy < 0 || sy >= h || sx < 0 || sx >= w) continue;
                    const float wt = (dy ? fy : 1 - fy) * (dx ? fx : 1 - fx);
                    if (back)
                        out[(size_t)sy * w + sx] += wt * in[(size_t)yy * w + xx];
                    else
                        out[(size_t)yy * w + xx] += wt * in[(size_t)sy * w + sx];
                }
        }
}

static void affine_theta(const dap_dsa_draw *d, int i, float *t) {
    const float *p = d->p + 3 * i;
    if (d->op == DAP_DSA_SCALE) {
        const float ratio = 1.2f, sx = p[0] * (ratio - 1.0f / ratio) + 1.0f / ratio,
                    sy = p[1] * (ratio - 1.0f / ratio) + 1.0f / ratio;
        t[0] = sx, t[1] = 0, t[2] = 0, t[3] = 0, t[4] = sy, t[5] = 0;
    } else {
        const float a = (p[0] - 0.5f) * 2.0f * 15.0f / 180.0f * PI_F;
        t[0] = cosf(a), t[1] = -sinf(a), t[2] = 0, t[3] = sinf(a), t[4] = cosf(a), t[5] = 0;
    }
}

/* Saturation around the channel mean, then (or before, on the way back: both are
 * symmetric) contrast around the image mean. */
static void saturation(float *p, int c, size_t hw, float s) {
    for (size_t j = 0; j < hw; j++) {
        float mu = 0;
        for (int k = 0; k < c; k++) mu += p[k * hw + j];
        mu /= (float)c;
        for (int k = 0; k < c; k++) p[k * hw + j] = (p[k * hw + j] - mu) * s + mu;
    }
}
static void contrast(float *p, size_t img, float con) {
    double mu = 0;
    for (size_t j = 0; j < img; j++) mu += p[j];
    const float m = (float)(mu / (double)img);
    for (size_t j = 0; j < img; j++) p[j] = (p[j] - m) * con + m;
}

static void dsa_apply(const dap_dsa_draw *d, float *x, int n, int c, int h, int w, int back) {
    DAP_ASSERT(n <= d->n);
    const size_t hw = (size_t)h * w, img = (size_t)c * hw;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        float *px = x + (size_t)i * img, *tmp = dap_alloc_f32(hw);
        const float *p = d->p + 3 * i;
        switch (d->op) {
        case DAP_DSA_COLOR:
            if (!back) {
                for (size_t j = 0; j < img; j++) px[j] += p[0];
                saturation(px, c, hw, p[1]);
                contrast(px, img, p[2]);
            } else { /* the transposes of contrast then saturation; brightness has none */
                contrast(px, img, p[2]);
                saturation(px, c, hw, p[1]);
            }
            break;
        case DAP_DSA_CROP: {
            const int sh = (int)(h * 0.125f + 0.5f), sw = (int)(w * 0.125f + 0.5f);
            int ty = pick(p[0], -sh, sh), tx = pick(p[1], -sw, sw);
            if (back) ty = -ty, tx = -tx;
            for (int k = 0; k < c; k++) {
                shift_plane(tmp, px + k * hw, h, w, ty, tx);
                memcpy(px + k * hw, tmp, sizeof(float) * hw);
            }
            break;
        }
        case DAP_DSA_CUTOUT: { /* a mask: its own transpose */
            const int ch = (int)(h * 0.5f + 0.5f), cw = (int)(w * 0.5f + 0.5f);
            const int oy = pick(p[0], 0, h - 1 + (1 - ch % 2)), ox = pick(p[1], 0, w - 1 + (1 - cw % 2));
            const int y0 = oy - ch / 2, x0 = ox - cw / 2;
            for (int k = 0; k < c; k++)
                for (int yy = y0 < 0 ? 0 : y0; yy < y0 + ch && yy < h; yy++)
                    for (int xx = x0 < 0 ? 0 : x0; xx < x0 + cw && xx < w; xx++)
                        px[k * hw + (size_t)yy * w + xx] = 0.0f;
            break;
        }
        case DAP_DSA_FLIP: /* a permutation that is its own inverse */
            if (p[0] < 0.5f)
                for (int k = 0; k < c * h; k++) {
                    float *row = px + (size_t)k * w;
                    for (int a = 0, b = w - 1; a < b; a++, b--) {
                        const float t = row[a];
                        row[a] = row[b], row[b] = t;
                    }
                }
            break;
        case DAP_DSA_SCALE:
        case DAP_DSA_ROTATE: {
            float t[6];
            affine_theta(d, i, t);
            for (int k = 0; k < c; k++) {
                affine_plane(tmp, px + k * hw, h, w, t, back);
                memcpy(px + k * hw, tmp, sizeof(float) * hw);
            }
            break;
        }
        default:
            break;
        }
        dap_free_aligned(tmp);
    }
}

void dap_dsa_forward(const dap_dsa_draw *d, float *x, int n, int c, int h, int w) {
    dsa_apply(d, x, n, c, h, w, 0);
}
void dap_dsa_backward(const dap_dsa_draw *d, float *g, int n, int c, int h, int w) {
    dsa_apply(d, g, n, c, h, w, 1);
}

/* ---- distribution matching ---- */

int dap_dm_class(const dap_dataset *real, int k, const dap_distill_opts *o, float *out,
                 dap_distill_stats *st) {
    const int n = o->ipc, C = real->c, H = real->h, W = real->w;
    const size_t per = (size_t)C * H * W, hw = (size_t)H * W;
    const int count = real->class_count[k], nr = o->batch_real < count ? o->batch_real : count;
    int *idx = dap_malloc(sizeof(int) * (size_t)(n > count ? n : count));
    int rc = dap_distill_pick_class(real, k, n, o->seed, DAP_STREAM_RANDOM_PICK, idx); /* real-image init */
    if (rc) {
        free(idx);
        return rc;
    }
    /* the dataset's per-channel statistics on [0, 1] pixels (their normalisation) */
    float mean[4] = {0}, sd[4] = {1, 1, 1, 1};
    if (C > 4) {
        free(idx);
        return dap_error(DAP_ERR_SHAPE, "dm: at most 4 channels (got %d)", C);
    }
    for (int ch = 0; ch < C; ch++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < real->n; i++) {
            const float *p = real->x + ((size_t)i * C + ch) * hw;
            for (size_t q = 0; q < hw; q++) {
                const double v = 0.5 * (p[q] + 1.0);
                s += v, s2 += v * v;
            }
        }
        const double cnt = (double)real->n * hw, mu = s / cnt, var = s2 / cnt - mu * mu;
        mean[ch] = (float)mu, sd[ch] = (float)sqrt(var > 1e-12 ? var : 1e-12);
    }
    float *syn = dap_alloc_f32((size_t)n * per), *mom = dap_alloc_f32((size_t)n * per);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < C; ch++)
            for (size_t q = 0; q < hw; q++)
                syn[(size_t)i * per + ch * hw + q] =
                    (0.5f * (real->x[(size_t)idx[i] * per + ch * hw + q] + 1.0f) - mean[ch]) / sd[ch];

    dap_cnn net;
    if ((rc = dap_convnet_create(&net, 3, o->dm_width, DAP_NORM_INSTANCE, C, H, W, 2))) {
        dap_free_aligned(syn), dap_free_aligned(mom), free(idx);
        return rc;
    }
    const int F = dap_cnn_feat_dim(&net);
    dap_cnn_free(&net); /* rebuilt with an identity head: its "logits" are the features */
    if ((rc = dap_convnet_create(&net, 3, o->dm_width, DAP_NORM_INSTANCE, C, H, W, F))) {
        dap_free_aligned(syn), dap_free_aligned(mom), free(idx);
        return rc;
    }
    dap_cnn_state sr, ss;
    dap_cnn_state_init(&sr, &net, nr, 0);
    dap_cnn_state_init(&ss, &net, n, 1);
    float *xr = dap_alloc_f32((size_t)nr * per), *xs = dap_alloc_f32((size_t)n * per),
          *gs = dap_alloc_f32((size_t)n * per);
    float *dfeat = dap_alloc_f32((size_t)n * F);
    double *mr = dap_malloc(sizeof(double) * (size_t)F), *ms = dap_malloc(sizeof(double) * (size_t)F);
    float *head = dap_params_ptr(&net.params, "classifier.weight"),
          *hb = dap_params_ptr(&net.params, "classifier.bias");
    int *cls = dap_malloc(sizeof(int) * (size_t)count);
    dap_rng rr;
    dap_rng_init(&rr, o->seed, DAP_STREAM_DM | (uint64_t)k);
    for (int it = 0; it < o->iterations; it++) {
        /* a random network per iteration, the same for every class */
        dap_cnn_init_weights(&net, dap_rng_bits(o->seed, DAP_STREAM_DM, (uint64_t)it));
        memset(head, 0, sizeof(float) * (size_t)F * F);
        for (int f = 0; f < F; f++) head[(size_t)f * F + f] = 1.0f;
        memset(hb, 0, sizeof(float) * (size_t)F);
        /* nr random real images of the class, both batches augmented alike */
        memcpy(cls, real->class_idx[k], sizeof(int) * (size_t)count);
        dap_rng_shuffle(&rr, cls, (size_t)count);
        for (int j = 0; j < nr; j++)
            memcpy(xr + (size_t)j * per, real->x + (size_t)cls[j] * per, sizeof(float) * per);
        for (int j = 0; j < nr; j++)
            for (int ch = 0; ch < C; ch++)
                for (size_t q = 0; q < hw; q++) {
                    float *v = xr + (size_t)j * per + ch * hw + q;
                    *v = (0.5f * (*v + 1.0f) - mean[ch]) / sd[ch];
                }
        memcpy(xs, syn, sizeof(float) * (size_t)n * per);
        dap_dsa_draw dr;
        dap_dsa_draw_make(&dr, nr > n ? nr : n, &rr);
        dap_dsa_forward(&dr, xr, nr, C, H, W);
        dap_dsa_forward(&dr, xs, n, C, H, W);
        const float *fr = dap_cnn_forward(&net, &sr, xr, nr, 1);
        for (int f = 0; f < F; f++) mr[f] = 0;
        for (int j = 0; j < nr; j++)
            for (int f = 0; f < F; f++) mr[f] += fr[(size_t)j * F + f];
        const float *fs = dap_cnn_forward(&net, &ss, xs, n, 1);
        for (int f = 0; f < F; f++) ms[f] = 0;
        for (int i = 0; i < n; i++)
            for (int f = 0; f < F; f++) ms[f] += fs[(size_t)i * F + f];
        double loss = 0;
        for (int f = 0; f < F; f++) {
            const double d = mr[f] / nr - ms[f] / n;
            loss += d * d;
            for (int i = 0; i < n; i++) dfeat[(size_t)i * F + f] = (float)(-2.0 * d / n);
        }
        dap_cnn_backward(&net, &ss, xs, dfeat, gs, 1);
        dap_dsa_backward(&dr, gs, n, C, H, W);
        dap_dsa_draw_free(&dr);
        for (size_t q = 0; q < (size_t)n * per; q++) { /* torch.optim.SGD, momentum 0.5 */
            mom[q] = 0.5f * mom[q] + gs[q];
            syn[q] -= (float)o->lr_img * mom[q];
        }
        if (it == 0) st->energy_first = loss;
        st->energy_last = loss;
        st->guided_steps = it + 1;
        if (!isfinite(loss)) {
            rc = dap_error(DAP_ERR_VALUE,
                           "dm: class %d: the loss is not finite at iteration %d (--lr-img too large?)", k,
                           it);
            break;
        }
    }
    for (int i = 0; i < n; i++) /* back to [-1, 1], clamped as a PNG holds it */
        for (int ch = 0; ch < C; ch++)
            for (size_t q = 0; q < hw; q++) {
                const float v = 2.0f * (syn[(size_t)i * per + ch * hw + q] * sd[ch] + mean[ch]) - 1.0f;
                out[(size_t)i * per + ch * hw + q] = v < -1.f ? -1.f : v > 1.f ? 1.f : v;
            }
    dap_cnn_state_free(&sr), dap_cnn_state_free(&ss);
    dap_cnn_free(&net);
    dap_free_aligned(syn), dap_free_aligned(mom), dap_free_aligned(xr), dap_free_aligned(xs),
        dap_free_aligned(gs);
    dap_free_aligned(dfeat);
    free(mr), free(ms), free(cls), free(idx);
    return rc;
}
