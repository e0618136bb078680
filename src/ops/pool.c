/*
 * pool.c: average / max pooling, global average pooling and nearest upsampling, NCHW.
 * Every loop is parallel over (image, channel) planes, and each plane of the result is
 * written by one thread, so results do not depend on the thread count. Backward passes
 * overwrite dinp (a plane is cleared, then scattered into, where windows can overlap).
 */
#include <math.h>
#include <string.h>

#include "core/core.h"
#include "ops/ops.h"

/* Below this many floats a loop stays on one thread. */
#define POOL_OMP_MIN 65536

void dap_avgpool2d_forward(float *out,       // (N, C, OH, OW)
                           const float *inp, // (N, C, H, W)
                           int n, int c, int h, int w, int k, int s) {
    DAP_ASSERT(k > 0 && s > 0 && h >= k && w >= k);
    const int oh = (h - k) / s + 1, ow = (w - k) / s + 1;
    const size_t planes = (size_t)n * c, hw = (size_t)h * w, ohw = (size_t)oh * ow;
    const float scale = 1.0f / (float)(k * k);
    if (k == 2 && s == 2) { /* the ConvNet case, same sums in the same order, unrolled */
#pragma omp parallel for schedule(static) if (planes * hw > POOL_OMP_MIN)
        for (size_t pl = 0; pl < planes; pl++) {
            const float *x = inp + pl * hw;
            float *y = out + pl * ohw;
            for (int oy = 0; oy < oh; oy++) {
                const float *r0 = x + (size_t)2 * oy * w, *r1 = r0 + w;
                float *yr = y + (size_t)oy * ow;
                for (int ox = 0; ox < ow; ox++)
                    yr[ox] = (((0.0f + r0[2 * ox]) + r0[2 * ox + 1]) + r1[2 * ox] + r1[2 * ox + 1]) * scale;
            }
        }
        return;
    }
#pragma omp parallel for schedule(static) if (planes * hw > POOL_OMP_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = inp + pl * hw;
        float *y = out + pl * ohw;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                const float *win = x + (size_t)oy * s * w + (size_t)ox * s;
                float acc = 0.0f;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) acc += win[(size_t)ky * w + kx];
                y[(size_t)oy * ow + ox] = acc * scale;
            }
        }
    }
}

void dap_avgpool2d_backward(float *dinp,       // (N, C, H, W) overwritten
                            const float *dout, // (N, C, OH, OW)
                            int n, int c, int h, int w, int k, int s) {
    if (!dinp) return;
    DAP_ASSERT(k > 0 && s > 0 && h >= k && w >= k);
    const int oh = (h - k) / s + 1, ow = (w - k) / s + 1;
    const size_t planes = (size_t)n * c, hw = (size_t)h * w, ohw = (size_t)oh * ow;
    const float scale = 1.0f / (float)(k * k);
    if (k == 2 && s == 2) { /* disjoint windows: every covered input gets its g once */
#pragma omp parallel for schedule(static) if (planes * hw > POOL_OMP_MIN)
        for (size_t pl = 0; pl < planes; pl++) {
            float *dx = dinp + pl * hw;
            const float *dy = dout + pl * ohw;
            if ((h | w) & 1) memset(dx, 0, hw * sizeof(float)); /* odd sizes leave a border */
            for (int oy = 0; oy < oh; oy++) {
                float *r0 = dx + (size_t)2 * oy * w, *r1 = r0 + w;
                const float *gr = dy + (size_t)oy * ow;
                for (int ox = 0; ox < ow; ox++) {
                    float g = gr[ox] * scale;
                    r0[2 * ox] = g, r0[2 * ox + 1] = g, r1[2 * ox] = g, r1[2 * ox + 1] = g;
                }
            }
        }
        return;
    }
#pragma omp parallel for schedule(static) if (planes * hw > POOL_OMP_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        float *dx = dinp + pl * hw;
        const float *dy = dout + pl * ohw;
        memset(dx, 0, hw * sizeof(float));
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                float g = dy[(size_t)oy * ow + ox] * scale;
                float *win = dx + (size_t)oy * s * w + (size_t)ox * s;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) win[(size_t)ky * w + kx] += g;
            }
        }
    }
}

void dap_maxpool2d_forward(float *out,       // (N, C, OH, OW)
                           int *argmax,      // (N, C, OH, OW) flat index in the (H, W) plane
                           const float *inp, // (N, C, H, W)
                           int n, int c, int h, int w, int k, int s) {
    DAP_ASSERT(k > 0 && s > 0 && h >= k && w >= k);
    const int oh = (h - k) / s + 1, ow = (w - k) / s + 1;
    const size_t planes = (size_t)n * c, hw = (size_t)h * w, ohw = (size_t)oh * ow;
#pragma omp parallel for schedule(static) if (planes * hw > POOL_OMP_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = inp + pl * hw;
        float *y = out + pl * ohw;
        int *am = argmax + pl * ohw;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                int best = oy * s * w + ox * s; /* ties: the first; NaN wins (as PyTorch) */
                for (int ky = 0; ky < k; ky++) {
                    for (int kx = 0; kx < k; kx++) {
                        int idx = (oy * s + ky) * w + ox * s + kx;
                        if (x[idx] > x[best] || isnan(x[idx])) best = idx;
                    }
                }
                y[(size_t)oy * ow + ox] = x[best];
                am[(size_t)oy * ow + ox] = best;
            }
        }
    }
}

void dap_maxpool2d_backward(float *dinp,       // (N, C, H, W) overwritten
                            const float *dout, // (N, C, OH, OW)
                            const int *argmax, // (N, C, OH, OW)
                            int n, int c, int h, int w, int k, int s) {
    if (!dinp) return;
    DAP_ASSERT(k > 0 && s > 0 && h >= k && w >= k);
    const int oh = (h - k) / s + 1, ow = (w - k) / s + 1;
    const size_t planes = (size_t)n * c, hw = (size_t)h * w, ohw = (size_t)oh * ow;
#pragma omp parallel for schedule(static) if (planes * hw > POOL_OMP_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        float *dx = dinp + pl * hw;
        const float *dy = dout + pl * ohw;
        const int *am = argmax + pl * ohw;
        memset(dx, 0, hw * sizeof(float));
        for (size_t j = 0; j < ohw; j++) dx[am[j]] += dy[j];
    }
}

void dap_global_avgpool_forward(float *out,       // (N, C)
                                const float *inp, // (N, C, HW)
                                int n, int c, int hw) {
    const size_t planes = (size_t)n * c;
    const float scale = 1.0f / (float)hw;
#pragma omp parallel for schedule(static) if (planes * hw > POOL_OMP_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = inp + pl * hw;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int j = 0; j < hw; j++) acc += x[j];
        out[pl] = acc * scale;
    }
}

void dap_global_avgpool_backward(float *dinp,       // (N, C, HW) overwritten
                                 const float *dout, // (N, C)
                                 int n, int c, int hw) {
    if (!dinp) return;
    const size_t planes = (size_t)n * c;
    const float scale = 1.0f / (float)hw;
#pragma omp parallel for schedule(static) if (planes * hw > POOL_OMP_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        float g = dout[pl] * scale;
        float *dx = dinp + pl * hw;
        for (int j = 0; j < hw; j++) dx[j] = g;
    }
}

void dap_upsample_nearest_forward(float *out,       // (N, C, H*F, W*F)
                                  const float *inp, // (N, C, H, W)
                                  int n, int c, int h, int w, int f) {
    DAP_ASSERT(f > 0);
    const int ow = w * f;
    const size_t planes = (size_t)n * c, hw = (size_t)h * w, ohw = hw * f * f;
#pragma omp parallel for schedule(static) if (planes * ohw > POOL_OMP_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = inp + pl * hw;
        float *y = out + pl * ohw;
        for (int iy = 0; iy < h; iy++) {
            float *row = y + (size_t)iy * f * ow;
            for (int ix = 0; ix < w; ix++) {
                float v = x[(size_t)iy * w + ix];
                for (int fx = 0; fx < f; fx++) row[(size_t)ix * f + fx] = v;
            }
            for (int fy = 1; fy < f; fy++)
                memcpy(row + (size_t)fy * ow, row, (size_t)ow * sizeof(float));
        }
    }
}

void dap_upsample_nearest_backward(float *dinp,       // (N, C, H, W) overwritten
                                   const float *dout, // (N, C, H*F, W*F)
                                   int n, int c, int h, int w, int f) {
    if (!dinp) return;
    DAP_ASSERT(f > 0);
    const int ow = w * f;
    const size_t planes = (size_t)n * c, hw = (size_t)h * w, ohw = hw * f * f;
#pragma omp parallel for schedule(static) if (planes * ohw > POOL_OMP_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        const float *dy = dout + pl * ohw;
        float *dx = dinp + pl * hw;
        for (int iy = 0; iy < h; iy++) {
            for (int ix = 0; ix < w; ix++) {
                float acc = 0.0f;
                for (int fy = 0; fy < f; fy++) {
                    const float *row = dy + (size_t)(iy * f + fy) * ow + (size_t)ix * f;
                    for (int fx = 0; fx < f; fx++) acc += row[fx];
                }
                dx[(size_t)iy * w + ix] = acc;
            }
        }
    }
}

void dap_token_mean_forward(float *out, const float *inp, int n, int t, int d) {
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * d;
        memset(o, 0, sizeof(float) * d);
        for (int k = 0; k < t; k++) {
            const float *row = inp + ((size_t)i * t + k) * d;
            for (int c = 0; c < d; c++) o[c] += row[c];
        }
        for (int c = 0; c < d; c++) o[c] /= t;
    }
}

void dap_token_mean_backward(float *dinp, const float *dout, int n, int t, int d) {
    for (int i = 0; i < n; i++)
        for (int k = 0; k < t; k++)
            for (int c = 0; c < d; c++) dinp[((size_t)i * t + k) * d + c] = dout[(size_t)i * d + c] / t;
}
