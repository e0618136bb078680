/*
 * act.c: elementwise activations GELU (tanh approximation, PyTorch's
 * approximate='tanh'), SiLU and ReLU, forward and backward.
 *
 * GELU and SiLU both reduce to a logistic sigmoid:
 *   gelu(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u),  u = sqrt(2/pi) (x + 0.044715 x^3)
 * which avoids the cancellation of 1 + tanh(u) for negative u. The exponential is a
 * small branch-free polynomial (Cephes-style range reduction, ~2 ulp) so that the loops
 * vectorize to AVX2/FMA; libm's expf/tanhf do not vectorize without -ffast-math.
 *
 * GCC will not if-convert the exponential's range clamp under the default
 * -ftrapping-math (it would speculate float operations), which leaves the loops
 * scalar; this file turns it off. Nothing here reads floating-point exception flags.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <stdint.h>
#include <string.h>

#include "core/core.h"
#include "ops/ops.h"

/* Below this many values a loop stays on one thread. */
#define ACT_OMP_MIN 32768

#define GELU_K0 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K1 0.044715f

/* Beyond these |x| the sigmoids are saturated in float, so x is clamped there: the
 * cubic and the derivative factors stay finite (no inf * 0 = NaN for huge inputs) and
 * the results are exactly x / 1 above and ~0 below. The clamp keeps NaN as NaN. */
#define GELU_XMAX 20.0f /* 2 u(20) = 603 */
#define SILU_XMAX 88.0f

static inline float clampf(float x, float lo, float hi) {
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

/* exp(x): n = round(x / ln2) via the 1.5 * 2^23 trick, r = x - n ln2 in two pieces,
 * a degree-6 polynomial for exp(r) on |r| <= ln2 / 2, and 2^n built in the exponent
 * bits. x is clamped to [-87, 88] (NaN becomes -87; callers carry NaN through x), so
 * the result is always a finite normal float. */
static inline float exp_approx(float x) {
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    float n = (x * 1.44269504088896341f + magic) - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

void dap_gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > ACT_OMP_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], xc = clampf(x, -GELU_XMAX, GELU_XMAX);
        float u = GELU_K0 * (xc + GELU_K1 * xc * xc * xc);
        float s = 1.0f / (1.0f + exp_approx(-2.0f * u));
        out[i] = x > GELU_XMAX ? x : xc * s;
    }
}

/* d/dx [x s(2u)] = s + 2 x s (1 - s) u'(x),  u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2);
 * 1 - s is computed as e s (e = exp(-2u)), which keeps its tiny values for large x.
 * Written as s (1 + x (e s) 2u'): the order s + x s (e s) 2u' made the vectorised loop
 * run into denormal assists for every x but 0 (10-17 ns a value instead of ~1 ns;
 * bench/bench_act.c). Small |x| (~0.1) still meets some in the vector code (~6 ns). */
void dap_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    if (!dinp) return;
#pragma omp parallel for simd schedule(static) if (n > ACT_OMP_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = clampf(inp[i], -GELU_XMAX, GELU_XMAX), x2 = x * x;
        float u = GELU_K0 * x * (1.0f + GELU_K1 * x2);
        float du2 = 2.0f * GELU_K0 * (1.0f + 3.0f * GELU_K1 * x2);
        float e = exp_approx(-2.0f * u), s = 1.0f / (1.0f + e);
        dinp[i] = dout[i] * s * (1.0f + x * (e * s) * du2);
    }
}

void dap_silu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > ACT_OMP_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], xc = clampf(x, -SILU_XMAX, SILU_XMAX);
        float s = 1.0f / (1.0f + exp_approx(-xc));
        out[i] = x > SILU_XMAX ? x : xc * s;
    }
}

/* d/dx [x s(x)] = s (1 + x (1 - s)), with 1 - s = e s as above */
void dap_silu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    if (!dinp) return;
#pragma omp parallel for simd schedule(static) if (n > ACT_OMP_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = clampf(inp[i], -SILU_XMAX, SILU_XMAX);
        float e = exp_approx(-x), s = 1.0f / (1.0f + e);
        dinp[i] = dout[i] * s * (1.0f + x * (e * s));
    }
}

void dap_relu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > ACT_OMP_MIN)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void dap_relu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    if (!dinp) return;
#pragma omp parallel for simd schedule(static) if (n > ACT_OMP_MIN)
    for (size_t i = 0; i < n; i++) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}
