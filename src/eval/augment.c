/*
 * augment.c: DSA transforms, random-resized crop, colour jitter and CutMix (see
 * augment.h). Random parameters are drawn serially (one stream, fixed order), the
 * per-pixel work is parallel, so results do not depend on the thread count.
 */
#include "eval/augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval/augment_px.h"

#define PI_F 3.14159265358979f

static float unif(dap_rng *r) { return (float)dap_rng_next_double(r); }
/* Integer in [lo, hi). */
static int randint(dap_rng *r, int lo, int hi) { return lo + (int)dap_rng_below(r, (uint64_t)(hi - lo)); }

/* ---- the plan ---------------------------------------------------------------------- */

void dap_aug_plan_init(dap_aug_plan *p, int nmax, int c, int h, int w) {
    DAP_ASSERT(nmax > 0 && c > 0 && 2 * c <= nmax * DAP_AUG_PARAMS);
    memset(p, 0, sizeof *p);
    p->nmax = nmax, p->c = c, p->h = h, p->w = w;
    p->store = dap_alloc_f32((size_t)DAP_AUG_STAGES * nmax * DAP_AUG_PARAMS);
    p->perm = dap_malloc((size_t)nmax * sizeof(int));
}

void dap_aug_plan_free(dap_aug_plan *p) {
    dap_free_aligned(p->store);
    free(p->perm);
    memset(p, 0, sizeof *p);
}

void dap_aug_plan_reset(dap_aug_plan *p, int n) {
    DAP_ASSERT(n > 0 && n <= p->nmax);
    p->n = n, p->nstages = 0;
}

static dap_aug_stage *add_stage(dap_aug_plan *p, int op, int flag) {
    DAP_ASSERT(p->nstages < DAP_AUG_STAGES);
    dap_aug_stage *s = &p->st[p->nstages];
    s->op = op, s->flag = flag;
    s->p = p->store + (size_t)p->nstages * p->nmax * DAP_AUG_PARAMS;
    p->nstages++;
    return s;
}

static float *img_params(const dap_aug_stage *s, int i) { return s->p + (size_t)i * DAP_AUG_PARAMS; }

void dap_aug_plan_scale_shift(dap_aug_plan *p, const float *a, const float *b) {
    dap_aug_stage *s = add_stage(p, DAP_AUGX_SCALE_SHIFT, 0);
    memcpy(s->p, a, (size_t)p->c * sizeof(float));
    memcpy(s->p + p->c, b, (size_t)p->c * sizeof(float));
}

void dap_aug_plan_jitter(dap_aug_plan *p, float str, int from11, dap_rng *r) {
    dap_aug_stage *s = add_stage(p, DAP_AUGX_JITTER, from11);
    for (int i = 0; i < p->n; i++) {
        float *q = img_params(s, i);
        q[0] = 1 + str * (2 * unif(r) - 1), q[1] = 1 + str * (2 * unif(r) - 1), q[2] = 1 + str * (2 * unif(r) - 1);
    }
}

void dap_aug_plan_resized_crop_flip(dap_aug_plan *p, float smin, float smax, dap_rng *r) {
    dap_aug_stage *s = add_stage(p, DAP_AUGX_WINDOW, 0);
    int h = p->h, w = p->w;
    for (int i = 0; i < p->n; i++) {
        int ch = h, cw = w, y0 = 0, x0 = 0, found = 0;
        for (int t = 0; t < 10 && !found; t++) {
            float area = (float)((size_t)h * w) * (smin + unif(r) * (smax - smin));
            float logr = logf(3.0f / 4.0f) + unif(r) * (logf(4.0f / 3.0f) - logf(3.0f / 4.0f));
            float ar = expf(logr);
            int tw = (int)lroundf(sqrtf(area * ar)), th = (int)lroundf(sqrtf(area / ar));
            if (tw > 0 && tw <= w && th > 0 && th <= h) {
                ch = th, cw = tw, found = 1;
                y0 = randint(r, 0, h - th + 1), x0 = randint(r, 0, w - tw + 1);
            }
        }
        float *q = img_params(s, i);
        q[0] = (float)y0, q[1] = (float)x0, q[2] = (float)ch, q[3] = (float)cw;
        q[4] = unif(r) < 0.5f;
    }
}

void dap_aug_plan_dsa_op(dap_aug_plan *p, int op, dap_rng *r) {
    int h = p->h, w = p->w;
    switch (op) {
    case DAP_DSA_COLOR: {
        dap_aug_stage *s = add_stage(p, DAP_AUGX_COLOR, 0);
        for (int i = 0; i < p->n; i++) {
            float *q = img_params(s, i);
            q[0] = unif(r) - 0.5f, q[1] = unif(r) * 2.0f, q[2] = unif(r) + 0.5f;
        }
        break;
    }
    case DAP_DSA_CROP: { /* shifts by up to 1/8 of the size */
        dap_aug_stage *s = add_stage(p, DAP_AUGX_SHIFT, 0);
        int sh = (int)(h * 0.125f + 0.5f), sw = (int)(w * 0.125f + 0.5f);
        for (int i = 0; i < p->n; i++) {
            float *q = img_params(s, i);
            int ty = randint(r, -sh, sh + 1), tx = randint(r, -sw, sw + 1);
            q[0] = (float)ty, q[1] = (float)tx;
        }
        break;
    }
    case DAP_DSA_CUTOUT: { /* a square of half the size centred anywhere */
        dap_aug_stage *s = add_stage(p, DAP_AUGX_CUTOUT, 0);
        int ch = (int)(h * 0.5f + 0.5f), cw = (int)(w * 0.5f + 0.5f);
        for (int i = 0; i < p->n; i++) {
            float *q = img_params(s, i);
            int oy = randint(r, 0, h + (1 - ch % 2)), ox = randint(r, 0, w + (1 - cw % 2));
            q[0] = (float)(oy - ch / 2), q[1] = (float)(ox - cw / 2), q[2] = (float)ch, q[3] = (float)cw;
        }
        break;
    }
    case DAP_DSA_FLIP: {
        dap_aug_stage *s = add_stage(p, DAP_AUGX_FLIP, 0);
        for (int i = 0; i < p->n; i++) img_params(s, i)[0] = unif(r) < 0.5f;
        break;
    }
    case DAP_DSA_SCALE: {
        const float ratio = 1.2f;
        dap_aug_stage *s = add_stage(p, DAP_AUGX_AFFINE, 0);
        for (int i = 0; i < p->n; i++) {
            float sx = unif(r) * (ratio - 1.0f / ratio) + 1.0f / ratio;
            float sy = unif(r) * (ratio - 1.0f / ratio) + 1.0f / ratio;
            float *t = img_params(s, i);
            t[0] = sx, t[1] = 0, t[2] = 0, t[3] = 0, t[4] = sy, t[5] = 0;
        }
        break;
    }
    case DAP_DSA_ROTATE: {
        dap_aug_stage *s = add_stage(p, DAP_AUGX_AFFINE, 0);
        for (int i = 0; i < p->n; i++) {
            float a = (unif(r) - 0.5f) * 2.0f * 15.0f / 180.0f * PI_F;
            float *t = img_params(s, i);
            t[0] = cosf(a), t[1] = -sinf(a), t[2] = 0, t[3] = sinf(a), t[4] = cosf(a), t[5] = 0;
        }
        break;
    }
    default: DAP_ASSERT(0 && "unknown DSA op");
    }
}

void dap_aug_plan_dsa(dap_aug_plan *p, dap_rng *r) { dap_aug_plan_dsa_op(p, (int)dap_rng_below(r, DAP_DSA_NOPS), r); }

float dap_aug_plan_cutmix(dap_aug_plan *p, dap_rng *r) {
    int n = p->n, h = p->h, w = p->w;
    for (int i = 0; i < n; i++) p->perm[i] = i;
    dap_rng_shuffle(r, p->perm, (size_t)n);
    float lam = unif(r), cut = sqrtf(1.0f - lam);
    int cw = (int)(w * cut), chh = (int)(h * cut);
    int cx = randint(r, 0, w), cy = randint(r, 0, h);
    int xa = cx - cw / 2 < 0 ? 0 : cx - cw / 2, xb = cx + cw / 2 > w ? w : cx + cw / 2;
    int ya = cy - chh / 2 < 0 ? 0 : cy - chh / 2, yb = cy + chh / 2 > h ? h : cy + chh / 2;
    if (xb <= xa || yb <= ya) return 1.0f;
    dap_aug_stage *s = add_stage(p, DAP_AUGX_CUTMIX, 0);
    s->p[0] = (float)ya, s->p[1] = (float)xa, s->p[2] = (float)(yb - ya), s->p[3] = (float)(xb - xa);
    return 1.0f - (float)((xb - xa) * (yb - ya)) / (float)((size_t)h * w);
}

/* ---- applying a plan on the host ------------------------------------------------------- */

/* Image means accumulate in double, in pixel order (the device reduces in a fixed tree). */
static float image_mean(const float *p, size_t img) {
    double mu = 0;
    for (size_t j = 0; j < img; j++) mu += p[j];
    return (float)(mu / (double)img);
}

static void apply_color(float *p, int c, size_t hw, const float *q) {
    size_t img = (size_t)c * hw;
    for (size_t j = 0; j < hw; j++) dap_px_bright_sat(p, hw, c, j, q[0], q[1]);
    float m = image_mean(p, img);
    for (size_t j = 0; j < img; j++) p[j] = (p[j] - m) * q[2] + m;
}

static void apply_jitter(float *p, int c, size_t hw, const float *q, int from11) {
    size_t img = (size_t)c * hw;
    if (from11)
        for (size_t j = 0; j < img; j++) p[j] = 0.5f * (p[j] + 1.0f);
    for (size_t j = 0; j < img; j++) p[j] = dap_px_clamp01(p[j] * q[0]);
    float m = image_mean(p, img);
    for (size_t j = 0; j < img; j++) p[j] = dap_px_clamp01((p[j] - m) * q[1] + m);
    if (c == 3)
        for (size_t j = 0; j < hw; j++) dap_px_jitter_sat(p, hw, j, q[2]);
    if (from11)
        for (size_t j = 0; j < img; j++) p[j] = 2.0f * p[j] - 1.0f;
}

/* The geometric stages: every plane from a copy of itself. */
static void apply_geometric(const dap_aug_stage *s, float *x, int n, int c, int h, int w) {
    size_t hw = (size_t)h * w;
#pragma omp parallel
    {
        float *src = dap_alloc_f32(hw);
#pragma omp for schedule(static)
        for (long plane = 0; plane < (long)n * c; plane++) {
            const float *q = img_params(s, (int)(plane / c));
            float *d = x + (size_t)plane * hw;
            memcpy(src, d, hw * sizeof(float));
            for (int yy = 0; yy < h; yy++)
                for (int xx = 0; xx < w; xx++) d[(size_t)yy * w + xx] = dap_px_geometric(s->op, src, h, w, q, yy, xx);
        }
        dap_free_aligned(src);
    }
}

void dap_aug_apply(const dap_aug_plan *p, float *x) {
    int n = p->n, c = p->c, h = p->h, w = p->w;
    size_t hw = (size_t)h * w, img = (size_t)c * hw;
    for (int si = 0; si < p->nstages; si++) {
        const dap_aug_stage *s = &p->st[si];
        switch (s->op) {
        case DAP_AUGX_SCALE_SHIFT:
#pragma omp parallel for schedule(static)
            for (long plane = 0; plane < (long)n * c; plane++) {
                int k = (int)(plane % c);
                float a = s->p[k], b = s->p[c + k], *d = x + (size_t)plane * hw;
                for (size_t j = 0; j < hw; j++) d[j] = a * d[j] + b;
            }
            break;
        case DAP_AUGX_JITTER:
#pragma omp parallel for schedule(static)
            for (int i = 0; i < n; i++) apply_jitter(x + (size_t)i * img, c, hw, img_params(s, i), s->flag);
            break;
        case DAP_AUGX_COLOR:
#pragma omp parallel for schedule(static)
            for (int i = 0; i < n; i++) apply_color(x + (size_t)i * img, c, hw, img_params(s, i));
            break;
        case DAP_AUGX_CUTOUT:
#pragma omp parallel for schedule(static)
            for (long plane = 0; plane < (long)n * c; plane++) {
                const float *q = img_params(s, (int)(plane / c));
                float *d = x + (size_t)plane * hw;
                for (int yy = 0; yy < h; yy++)
                    for (int xx = 0; xx < w; xx++)
                        if (dap_px_in_box((int)q[0], (int)q[1], (int)q[2], (int)q[3], yy, xx)) d[(size_t)yy * w + xx] = 0.0f;
            }
            break;
        case DAP_AUGX_CUTMIX: {
            int y0 = (int)s->p[0], x0 = (int)s->p[1], ch = (int)s->p[2], cw = (int)s->p[3];
            float *src = dap_alloc_f32((size_t)n * img);
            memcpy(src, x, (size_t)n * img * sizeof(float));
            for (int i = 0; i < n; i++)
                for (int k = 0; k < c; k++)
                    for (int yy = y0; yy < y0 + ch; yy++)
                        memcpy(x + (size_t)i * img + k * hw + (size_t)yy * w + x0,
                               src + (size_t)p->perm[i] * img + k * hw + (size_t)yy * w + x0, (size_t)cw * sizeof(float));
            dap_free_aligned(src);
            break;
        }
        default: apply_geometric(s, x, n, c, h, w); break;
        }
    }
}

/* ---- one op on a host batch ------------------------------------------------------------ */

/* Draws with `draw` into a one-stage plan over x's n images and applies it. */
#define ONE_STAGE(x, n, c, h, w, draw)                                                                 \
    do {                                                                                               \
        dap_aug_plan plan_;                                                                            \
        dap_aug_plan_init(&plan_, (n), (c), (h), (w));                                                 \
        dap_aug_plan_reset(&plan_, (n));                                                               \
        draw;                                                                                          \
        dap_aug_apply(&plan_, (x));                                                                    \
        dap_aug_plan_free(&plan_);                                                                     \
    } while (0)

void dap_aug_dsa_op(float *x, int n, int c, int h, int w, int op, dap_rng *r) {
    ONE_STAGE(x, n, c, h, w, dap_aug_plan_dsa_op(&plan_, op, r));
}

void dap_aug_dsa(float *x, int n, int c, int h, int w, dap_rng *r) {
    dap_aug_dsa_op(x, n, c, h, w, (int)dap_rng_below(r, DAP_DSA_NOPS), r);
}

void dap_aug_affine(float *x, const float *theta, int n, int c, int h, int w) {
    ONE_STAGE(x, n, c, h, w, {
        dap_aug_stage *s = add_stage(&plan_, DAP_AUGX_AFFINE, 0);
        for (int i = 0; i < n; i++) memcpy(img_params(s, i), theta + 6 * i, 6 * sizeof(float));
    });
}

void dap_aug_resized_crop_flip(float *x, int n, int c, int h, int w, float smin, float smax, dap_rng *r) {
    ONE_STAGE(x, n, c, h, w, dap_aug_plan_resized_crop_flip(&plan_, smin, smax, r));
}

void dap_aug_color_jitter(float *x01, int n, int c, int h, int w, float s, dap_rng *r) {
    ONE_STAGE(x01, n, c, h, w, dap_aug_plan_jitter(&plan_, s, 0, r));
}

float dap_aug_cutmix(float *x, int *perm, int n, int c, int h, int w, dap_rng *r) {
    float lam = 1.0f;
    ONE_STAGE(x, n, c, h, w, {
        lam = dap_aug_plan_cutmix(&plan_, r);
        memcpy(perm, plan_.perm, (size_t)n * sizeof(int));
    });
    return lam;
}
