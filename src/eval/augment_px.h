/*
 * augment_px.h: the per-pixel arithmetic of the augmentations (augment.h), shared by the
 * host loops (augment.c) and the device kernels (cuda/augment_cuda.cu), so that both run
 * the same expressions and the CPU tests exercise what a GPU computes. Each function
 * gives one output value from its source plane; sources and destinations are distinct.
 */
#ifndef DAP_AUGMENT_PX_H
#define DAP_AUGMENT_PX_H

#include <math.h>
#include <stddef.h>

#include "eval/augment.h"

#ifdef __CUDACC__
#define DAP_PX static inline __host__ __device__
#else
#define DAP_PX static inline
#endif

DAP_PX float dap_px_clamp01(float v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

/* Pixel (yy, xx) of plane s (h, w) resampled through the 2x3 affine map t: the
 * align-corners grid and bilinear weights of F.affine_grid + F.grid_sample (zeros). */
DAP_PX float dap_px_affine(const float *s, int h, int w, const float *t, int yy, int xx) {
    float xn = w > 1 ? -1.0f + 2.0f * xx / (w - 1) : 0.0f;
    float yn = h > 1 ? -1.0f + 2.0f * yy / (h - 1) : 0.0f;
    float xs = t[0] * xn + t[1] * yn + t[2], ys = t[3] * xn + t[4] * yn + t[5];
    float ix = (xs + 1.0f) * 0.5f * (w - 1), iy = (ys + 1.0f) * 0.5f * (h - 1);
    int x0 = (int)floorf(ix), y0 = (int)floorf(iy);
    float fx = ix - x0, fy = iy - y0, v = 0;
    for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++) {
            int sy = y0 + dy, sx = x0 + dx;
            if (sy < 0 || sy >= h || sx < 0 || sx >= w) continue;
            v += (dy ? fy : 1 - fy) * (dx ? fx : 1 - fx) * s[(size_t)sy * w + sx];
        }
    return v;
}

/* Pixel (yy, xx) of the (ch, cw) window at (y0, x0) of plane s (h, w) resized to h x w
 * bilinearly, half-pixel centres (interpolate(align_corners=False)); `flip` mirrors the
 * output horizontally. */
DAP_PX float dap_px_window(const float *s, int h, int w, int y0, int x0, int ch, int cw, int flip,
                           int yy, int xx) {
    if (flip) xx = w - 1 - xx;
    float sy = (float)ch / h, sx = (float)cw / w;
    float fy = (yy + 0.5f) * sy - 0.5f;
    if (fy < 0) fy = 0;
    int a = (int)fy, a1 = a + 1 < ch ? a + 1 : ch - 1;
    float ly = fy - a;
    float fx = (xx + 0.5f) * sx - 0.5f;
    if (fx < 0) fx = 0;
    int b = (int)fx, b1 = b + 1 < cw ? b + 1 : cw - 1;
    float lx = fx - b;
    const float *r0 = s + (size_t)(y0 + a) * w + x0, *r1 = s + (size_t)(y0 + a1) * w + x0;
    return (1 - ly) * ((1 - lx) * r0[b] + lx * r0[b1]) + ly * ((1 - lx) * r1[b] + lx * r1[b1]);
}

/* Pixel (yy, xx) of plane s shifted by (ty, tx), zero outside. */
DAP_PX float dap_px_shift(const float *s, int h, int w, int ty, int tx, int yy, int xx) {
    int sy = yy + ty, sx = xx + tx;
    return sy >= 0 && sy < h && sx >= 0 && sx < w ? s[(size_t)sy * w + sx] : 0.0f;
}

/* Pixel (yy, xx) of a geometric stage (DAP_AUGX_WINDOW, _SHIFT, _FLIP, _AFFINE) of one
 * plane s, from its image's parameters q (DAP_AUG_PARAMS). */
DAP_PX float dap_px_geometric(int op, const float *s, int h, int w, const float *q, int yy, int xx) {
    switch (op) {
    case DAP_AUGX_WINDOW: return dap_px_window(s, h, w, (int)q[0], (int)q[1], (int)q[2], (int)q[3], q[4] != 0, yy, xx);
    case DAP_AUGX_SHIFT: return dap_px_shift(s, h, w, (int)q[0], (int)q[1], yy, xx);
    case DAP_AUGX_FLIP: return s[(size_t)yy * w + (q[0] != 0 ? w - 1 - xx : xx)];
    default: return dap_px_affine(s, h, w, q, yy, xx);
    }
}

/* Inside the box [y0, y0 + ch) x [x0, x0 + cw)? */
DAP_PX int dap_px_in_box(int y0, int x0, int ch, int cw, int yy, int xx) {
    return yy >= y0 && yy < y0 + ch && xx >= x0 && xx < x0 + cw;
}

/* DSA colour, first part at one pixel j of an image p (c planes of hw): brightness, then
 * saturation around the channels' mean. In place over the c values of pixel j. */
DAP_PX void dap_px_bright_sat(float *p, size_t hw, int c, size_t j, float bright, float sat) {
    float mu = 0;
    for (int k = 0; k < c; k++) mu += p[k * hw + j] + bright;
    mu /= (float)c;
    for (int k = 0; k < c; k++) p[k * hw + j] = (p[k * hw + j] + bright - mu) * sat + mu;
}

/* Colour jitter's saturation at pixel j of an RGB image on [0, 1]: around its grey value. */
DAP_PX void dap_px_jitter_sat(float *p, size_t hw, size_t j, float fs) {
    float g = 0.299f * p[j] + 0.587f * p[hw + j] + 0.114f * p[2 * hw + j];
    for (int k = 0; k < 3; k++) p[k * hw + j] = dap_px_clamp01((p[k * hw + j] - g) * fs + g);
}

#endif /* DAP_AUGMENT_PX_H */
