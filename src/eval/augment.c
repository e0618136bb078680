/*
 * augment.c: DSA transforms, random-resized crop, colour jitter and CutMix (see
 * augment.h). Random parameters are drawn serially (one stream, fixed order), the
 * per-pixel work is parallel, so results do not depend on the thread count.
 */
#include "eval/augment.h"

#include <math.h>
#include <string.h>

#define PI_F 3.14159265358979f

static float unif(dap_rng *r) { return (float)dap_rng_next_double(r); }
/* Integer in [lo, hi). */
static int randint(dap_rng *r, int lo, int hi) { return lo + (int)dap_rng_below(r, (uint64_t)(hi - lo)); }

/* ---- DSA ------------------------------------------------------------------------------ */

static void dsa_color(float *x, int n, int c, int h, int w, dap_rng *r) {
    size_t hw = (size_t)h * w, img = (size_t)c * hw;
    for (int i = 0; i < n; i++) {
        float bright = unif(r) - 0.5f, sat = unif(r) * 2.0f, con = unif(r) + 0.5f;
        float *p = x + (size_t)i * img;
        for (size_t j = 0; j < img; j++) p[j] += bright;
        for (size_t j = 0; j < hw; j++) { /* saturation: around the channel mean */
            float mu = 0;
            for (int k = 0; k < c; k++) mu += p[k * hw + j];
            mu /= (float)c;
            for (int k = 0; k < c; k++) p[k * hw + j] = (p[k * hw + j] - mu) * sat + mu;
        }
        double mu = 0; /* contrast: around the image mean */
        for (size_t j = 0; j < img; j++) mu += p[j];
        float m = (float)(mu / (double)img);
        for (size_t j = 0; j < img; j++) p[j] = (p[j] - m) * con + m;
    }
}

static void dsa_crop(float *x, int n, int c, int h, int w, dap_rng *r) {
    int sh = (int)(h * 0.125f + 0.5f), sw = (int)(w * 0.125f + 0.5f);
    size_t hw = (size_t)h * w;
    float *tmp = dap_alloc_f32(hw);
    for (int i = 0; i < n; i++) {
        int ty = randint(r, -sh, sh + 1), tx = randint(r, -sw, sw + 1);
        for (int k = 0; k < c; k++) {
            float *p = x + ((size_t)i * c + k) * hw;
            for (int yy = 0; yy < h; yy++)
                for (int xx = 0; xx < w; xx++) {
                    int sy = yy + ty, sx = xx + tx;
                    tmp[(size_t)yy * w + xx] = sy >= 0 && sy < h && sx >= 0 && sx < w ? p[(size_t)sy * w + sx] : 0.0f;
                }
            memcpy(p, tmp, hw * sizeof(float));
        }
    }
    dap_free_aligned(tmp);
}

static void dsa_cutout(float *x, int n, int c, int h, int w, dap_rng *r) {
    int ch = (int)(h * 0.5f + 0.5f), cw = (int)(w * 0.5f + 0.5f);
    size_t hw = (size_t)h * w;
    for (int i = 0; i < n; i++) {
        int oy = randint(r, 0, h + (1 - ch % 2)), ox = randint(r, 0, w + (1 - cw % 2));
        int y0 = oy - ch / 2, x0 = ox - cw / 2;
        for (int k = 0; k < c; k++) {
            float *p = x + ((size_t)i * c + k) * hw;
            for (int yy = y0 < 0 ? 0 : y0; yy < y0 + ch && yy < h; yy++)
                for (int xx = x0 < 0 ? 0 : x0; xx < x0 + cw && xx < w; xx++) p[(size_t)yy * w + xx] = 0.0f;
        }
    }
}

static void flip_image(float *p, int c, int h, int w) {
    for (int k = 0; k < c * h; k++) {
        float *row = p + (size_t)k * w;
        for (int a = 0, b = w - 1; a < b; a++, b--) {
            float t = row[a];
            row[a] = row[b], row[b] = t;
        }
    }
}

static void dsa_flip(float *x, int n, int c, int h, int w, dap_rng *r) {
    for (int i = 0; i < n; i++)
        if (unif(r) < 0.5f) flip_image(x + (size_t)i * c * h * w, c, h, w);
}

void dap_aug_affine(float *x, const float *theta, int n, int c, int h, int w) {
    size_t hw = (size_t)h * w;
    float *src = dap_alloc_f32((size_t)n * c * hw);
    memcpy(src, x, (size_t)n * c * hw * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *t = theta + 6 * i;
        for (int yy = 0; yy < h; yy++)
            for (int xx = 0; xx < w; xx++) {
                float xn = w > 1 ? -1.0f + 2.0f * xx / (w - 1) : 0.0f;
                float yn = h > 1 ? -1.0f + 2.0f * yy / (h - 1) : 0.0f;
                float xs = t[0] * xn + t[1] * yn + t[2], ys = t[3] * xn + t[4] * yn + t[5];
                float ix = (xs + 1.0f) * 0.5f * (w - 1), iy = (ys + 1.0f) * 0.5f * (h - 1);
                int x0 = (int)floorf(ix), y0 = (int)floorf(iy);
                float fx = ix - x0, fy = iy - y0;
                for (int k = 0; k < c; k++) {
                    const float *s = src + ((size_t)i * c + k) * hw;
                    float v = 0;
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) {
                            int sy = y0 + dy, sx = x0 + dx;
                            if (sy < 0 || sy >= h || sx < 0 || sx >= w) continue;
                            v += (dy ? fy : 1 - fy) * (dx ? fx : 1 - fx) * s[(size_t)sy * w + sx];
                        }
                    x[((size_t)i * c + k) * hw + (size_t)yy * w + xx] = v;
                }
            }
    }
    dap_free_aligned(src);
}

static void dsa_scale(float *x, int n, int c, int h, int w, dap_rng *r) {
    const float ratio = 1.2f;
    float *theta = dap_alloc_f32((size_t)6 * n);
    for (int i = 0; i < n; i++) {
        float sx = unif(r) * (ratio - 1.0f / ratio) + 1.0f / ratio;
        float sy = unif(r) * (ratio - 1.0f / ratio) + 1.0f / ratio;
        float *t = theta + 6 * i;
        t[0] = sx, t[1] = 0, t[2] = 0, t[3] = 0, t[4] = sy, t[5] = 0;
    }
    dap_aug_affine(x, theta, n, c, h, w);
    dap_free_aligned(theta);
}

static void dsa_rotate(float *x, int n, int c, int h, int w, dap_rng *r) {
    float *theta = dap_alloc_f32((size_t)6 * n);
    for (int i = 0; i < n; i++) {
        float a = (unif(r) - 0.5f) * 2.0f * 15.0f / 180.0f * PI_F;
        float *t = theta + 6 * i;
        t[0] = cosf(a), t[1] = -sinf(a), t[2] = 0, t[3] = sinf(a), t[4] = cosf(a), t[5] = 0;
    }
    dap_aug_affine(x, theta, n, c, h, w);
    dap_free_aligned(theta);
}

void dap_aug_dsa_op(float *x, int n, int c, int h, int w, int op, dap_rng *r) {
    switch (op) {
    case DAP_DSA_COLOR: dsa_color(x, n, c, h, w, r); break;
    case DAP_DSA_CROP: dsa_crop(x, n, c, h, w, r); break;
    case DAP_DSA_CUTOUT: dsa_cutout(x, n, c, h, w, r); break;
    case DAP_DSA_FLIP: dsa_flip(x, n, c, h, w, r); break;
    case DAP_DSA_SCALE: dsa_scale(x, n, c, h, w, r); break;
    case DAP_DSA_ROTATE: dsa_rotate(x, n, c, h, w, r); break;
    default: DAP_ASSERT(0 && "unknown DSA op");
    }
}

void dap_aug_dsa(float *x, int n, int c, int h, int w, dap_rng *r) {
    dap_aug_dsa_op(x, n, c, h, w, (int)dap_rng_below(r, DAP_DSA_NOPS), r);
}

/* ---- random-resized crop, jitter ------------------------------------------------------ */

/* Bilinear resize of the (ch, cw) window at (y0, x0) of plane s (h, w) to d (h, w),
 * half-pixel centres (interpolate(align_corners=False)). */
static void resize_window(float *d, const float *s, int h, int w, int y0, int x0, int ch, int cw) {
    float sy = (float)ch / h, sx = (float)cw / w;
    for (int yy = 0; yy < h; yy++) {
        float fy = (yy + 0.5f) * sy - 0.5f;
        if (fy < 0) fy = 0;
        int a = (int)fy, a1 = a + 1 < ch ? a + 1 : ch - 1;
        float ly = fy - a;
        for (int xx = 0; xx < w; xx++) {
            float fx = (xx + 0.5f) * sx - 0.5f;
            if (fx < 0) fx = 0;
            int b = (int)fx, b1 = b + 1 < cw ? b + 1 : cw - 1;
            float lx = fx - b;
            const float *r0 = s + (size_t)(y0 + a) * w + x0, *r1 = s + (size_t)(y0 + a1) * w + x0;
            d[(size_t)yy * w + xx] = (1 - ly) * ((1 - lx) * r0[b] + lx * r0[b1]) + ly * ((1 - lx) * r1[b] + lx * r1[b1]);
        }
    }
}

void dap_aug_resized_crop_flip(float *x, int n, int c, int h, int w, float smin, float smax,
                               dap_rng *r) {
    size_t hw = (size_t)h * w;
    float *tmp = dap_alloc_f32(hw);
    for (int i = 0; i < n; i++) {
        int ch = h, cw = w, y0 = 0, x0 = 0, found = 0;
        for (int t = 0; t < 10 && !found; t++) {
            float area = (float)hw * (smin + unif(r) * (smax - smin));
            float logr = logf(3.0f / 4.0f) + unif(r) * (logf(4.0f / 3.0f) - logf(3.0f / 4.0f));
            float ar = expf(logr);
            int tw = (int)lroundf(sqrtf(area * ar)), th = (int)lroundf(sqrtf(area / ar));
            if (tw > 0 && tw <= w && th > 0 && th <= h) {
                ch = th, cw = tw, found = 1;
                y0 = randint(r, 0, h - th + 1), x0 = randint(r, 0, w - tw + 1);
            }
        }
        int flip = unif(r) < 0.5f;
        for (int k = 0; k < c; k++) {
            float *p = x + ((size_t)i * c + k) * hw;
            resize_window(tmp, p, h, w, y0, x0, ch, cw);
            memcpy(p, tmp, hw * sizeof(float));
        }
        if (flip) flip_image(x + (size_t)i * c * hw, c, h, w);
    }
    dap_free_aligned(tmp);
}

static float clamp01(float v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

void dap_aug_color_jitter(float *x01, int n, int c, int h, int w, float s, dap_rng *r) {
    size_t hw = (size_t)h * w, img = (size_t)c * hw;
    for (int i = 0; i < n; i++) {
        float fb = 1 + s * (2 * unif(r) - 1), fc = 1 + s * (2 * unif(r) - 1), fs = 1 + s * (2 * unif(r) - 1);
        float *p = x01 + (size_t)i * img;
        for (size_t j = 0; j < img; j++) p[j] = clamp01(p[j] * fb);
        double mu = 0;
        for (size_t j = 0; j < img; j++) mu += p[j];
        float m = (float)(mu / (double)img);
        for (size_t j = 0; j < img; j++) p[j] = clamp01((p[j] - m) * fc + m);
        if (c == 3)
            for (size_t j = 0; j < hw; j++) {
                float g = 0.299f * p[j] + 0.587f * p[hw + j] + 0.114f * p[2 * hw + j];
                for (int k = 0; k < 3; k++) p[k * hw + j] = clamp01((p[k * hw + j] - g) * fs + g);
            }
    }
}

/* ---- CutMix --------------------------------------------------------------------------- */

float dap_aug_cutmix(float *x, int *perm, int n, int c, int h, int w, dap_rng *r) {
    for (int i = 0; i < n; i++) perm[i] = i;
    dap_rng_shuffle(r, perm, (size_t)n);
    float lam = unif(r), cut = sqrtf(1.0f - lam);
    int cw = (int)(w * cut), chh = (int)(h * cut);
    int cx = randint(r, 0, w), cy = randint(r, 0, h);
    int xa = cx - cw / 2 < 0 ? 0 : cx - cw / 2, xb = cx + cw / 2 > w ? w : cx + cw / 2;
    int ya = cy - chh / 2 < 0 ? 0 : cy - chh / 2, yb = cy + chh / 2 > h ? h : cy + chh / 2;
    if (xb <= xa || yb <= ya) return 1.0f;
    size_t hw = (size_t)h * w, img = (size_t)c * hw;
    float *src = dap_alloc_f32((size_t)n * img);
    memcpy(src, x, (size_t)n * img * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < c; k++)
            for (int yy = ya; yy < yb; yy++)
                memcpy(x + (size_t)i * img + k * hw + (size_t)yy * w + xa,
                       src + (size_t)perm[i] * img + k * hw + (size_t)yy * w + xa, (size_t)(xb - xa) * sizeof(float));
    dap_free_aligned(src);
    return 1.0f - (float)((xb - xa) * (yb - ya)) / (float)hw;
}
