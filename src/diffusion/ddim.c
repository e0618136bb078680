/*
 * ddim.c: the DDIM update, classifier-free guidance and a sampler loop over an eps
 * callback with guidance hooks. Step scalars are formed in double, the elementwise
 * update in float.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/ddim.h"

void dap_ddim_coef_at(const dap_schedule *s, const int *taus, int S, int step, double eta,
                      dap_ddim_coef *c) {
    DAP_ASSERT(step >= 0 && step < S && eta >= 0.0);
    const int i = S - 1 - step;
    c->step = step;
    c->t = taus[i];
    c->t_prev = i > 0 ? taus[i - 1] : -1;
    DAP_ASSERT(c->t >= 0 && c->t < s->T && c->t_prev < c->t);
    c->a_t = s->alpha_bar[c->t];
    c->a_prev = c->t_prev >= 0 ? s->alpha_bar[c->t_prev] : 1.0;
    c->sigma = eta * sqrt((1.0 - c->a_prev) / (1.0 - c->a_t)) * sqrt(1.0 - c->a_t / c->a_prev);
}

/* The DDIM update; clip > 0 clamps x0 to [-clip, clip] and re-derives eps from it. */
static void ddim_update(const dap_ddim_coef *c, float *x_prev, float *x0_hat, const float *x_t,
                        const float *eps, const float *z, size_t n, double clip) {
    const float sqrt_a = (float)sqrt(c->a_t), sqrt_1ma = (float)sqrt(1.0 - c->a_t);
    const float inv_sqrt_a = (float)(1.0 / sqrt(c->a_t)), inv_sqrt_1ma = (float)(1.0 / sqrt(1.0 - c->a_t));
    const float sqrt_ap = (float)sqrt(c->a_prev);
    const float dir = (float)sqrt(fmax(0.0, 1.0 - c->a_prev - c->sigma * c->sigma));
    const float sigma = (float)c->sigma, lim = clip > 0.0 ? (float)clip : 0.0f;
    DAP_ASSERT(sigma == 0.0f || z != NULL);
    const long nn = (long)n;
#pragma omp parallel for schedule(static) if (nn > 65536)
    for (long i = 0; i < nn; i++) {
        float e = eps[i];
        float x0 = (x_t[i] - sqrt_1ma * e) * inv_sqrt_a;
        if (lim > 0.0f) {
            x0 = x0 < -lim ? -lim : (x0 > lim ? lim : x0);
            e = (x_t[i] - sqrt_a * x0) * inv_sqrt_1ma;
        }
        if (x0_hat) x0_hat[i] = x0;
        float xp = sqrt_ap * x0 + dir * e;
        if (sigma > 0.0f) xp += sigma * z[i];
        x_prev[i] = xp;
    }
}

void dap_ddim_step(const dap_ddim_coef *c, float *x_prev, float *x0_hat, const float *x_t,
                   const float *eps, const float *z, size_t n) {
    ddim_update(c, x_prev, x0_hat, x_t, eps, z, n, 0.0);
}

void dap_ddim_step_clip(const dap_ddim_coef *c, float *x_prev, const float *x_t, const float *eps,
                        const float *z, size_t n, double clip) {
    ddim_update(c, x_prev, NULL, x_t, eps, z, n, clip);
}

void dap_cfg_combine(float *eps, const float *out_cond, const float *out_null, int B, int C_out,
                     int C, int HW, double w) {
    DAP_ASSERT(C >= 1 && C <= C_out);
    const float wf = (float)w;
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < C; ch++) {
            const size_t src = ((size_t)b * C_out + ch) * HW, dst = ((size_t)b * C + ch) * HW;
            for (int i = 0; i < HW; i++) {
                const float un = out_null[src + i];
                eps[dst + i] = un + wf * (out_cond[src + i] - un);
            }
        }
}

void dap_eps_from_output(float *eps, const float *out, int B, int C_out, int C, int HW) {
    DAP_ASSERT(C >= 1 && C <= C_out);
    for (int b = 0; b < B; b++)
        memcpy(eps + (size_t)b * C * HW, out + (size_t)b * C_out * HW, (size_t)C * HW * sizeof(float));
}

int dap_ddim_sample(const dap_schedule *s, int S, double eta, float *x, int B, size_t per,
                    dap_rng *rngs, const dap_ddim_hooks *h) {
    DAP_ASSERT(h && h->eps && B >= 1);
    const size_t n = (size_t)B * per;
    if (eta < 0.0 || !isfinite(eta))
        return dap_error(DAP_ERR_ARG, "eta: expected a value >= 0, found %g", eta);
    if (h->skip < 0 || h->skip >= (S > 0 ? S : 1))
        return dap_error(DAP_ERR_ARG, "skipped steps: expected 0 <= skip < %d steps, found %d", S, h->skip);
    int *taus = dap_malloc((size_t)(S > 0 ? S : 1) * sizeof(int));
    int rc = dap_timestep_spacing(s->T, S, taus);
    if (rc != DAP_OK) {
        free(taus);
        return rc;
    }
    float *eps = dap_alloc_f32(n), *x_t = dap_alloc_f32(n);
    float *z = eta > 0.0 ? dap_alloc_f32(n) : NULL;
    for (int step = h->skip; step < S && rc == DAP_OK; step++) {
        dap_ddim_coef c;
        dap_ddim_coef_at(s, taus, S, step, eta, &c);
        memcpy(x_t, x, n * sizeof(float));
        rc = h->eps(h->ctx, eps, x_t, &c);
        if (rc == DAP_OK && h->adjust_eps) rc = h->adjust_eps(h->ctx, eps, x_t, &c);
        if (rc != DAP_OK) break;
        if (c.sigma > 0.0) {
            DAP_ASSERT(rngs != NULL);
            for (int b = 0; b < B; b++) dap_rng_normal(&rngs[b], z + (size_t)b * per, per, 0.0f, 1.0f);
        }
        dap_ddim_step_clip(&c, x, x_t, eps, z, n, h->clip_x0);
        if (h->adjust_x) rc = h->adjust_x(h->ctx, x, x_t, eps, &c);
    }
    dap_free_aligned(z);
    dap_free_aligned(x_t);
    dap_free_aligned(eps);
    free(taus);
    return rc;
}

int dap_ddim_start_t(int T, int S, int skip, int *t) {
    if (S < 1 || skip < 0 || skip >= S)
        return dap_error(DAP_ERR_ARG, "skipped steps: expected 0 <= skip < %d steps, found %d", S, skip);
    int *taus = dap_malloc(sizeof(int) * (size_t)S);
    int rc = dap_timestep_spacing(T, S, taus);
    if (rc == DAP_OK) *t = taus[S - 1 - skip];
    free(taus);
    return rc;
}

int dap_ddim_step_guided(int step, int S, double stop) {
    const int unguided = (int)nearbyint(stop * (double)S);
    return step < S - unguided;
}
