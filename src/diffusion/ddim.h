/*
 * ddim.h: DDIM sampling (SPEC section 2) and classifier-free guidance.
 *
 * One step from x_t at tau_i to tau_{i-1} (a_prev = 1 after t = 0):
 *   x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)          (never clipped)
 *   sigma  = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)
 *   x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z
 *
 * dap_ddim_sample runs the loop over any eps model given as a callback. The two forms
 * of representativeness guidance (SPEC section 3) plug in as optional hooks: one may
 * change eps before the update (eps <- eps + lambda sqrt(1 - a_t) grad E), the other
 * x_prev after it (x_prev <- x~_prev - gamma grad E); both see x_t.
 */
#ifndef DAP_DDIM_H
#define DAP_DDIM_H

#include <stddef.h>

#include "core/core.h"
#include "diffusion/schedule.h"

/* The scalars of one DDIM step. */
typedef struct dap_ddim_coef {
    int step;        /* 0 .. S-1 in sampling order (step 0 is the noisiest) */
    int t, t_prev;   /* model timestep tau_i and tau_{i-1} (-1 after t = 0) */
    double a_t;      /* alpha_bar[t] */
    double a_prev;   /* alpha_bar[t_prev], 1 after t = 0 */
    double sigma;    /* eta-scaled noise std of the step */
} dap_ddim_coef;

/* Coefficients of sampling step `step` (0..S-1) over ascending taus[0..S-1]. */
void dap_ddim_coef_at(const dap_schedule *s, const int *taus, int S, int step, double eta,
                      dap_ddim_coef *c);

/* One update over n floats. x0_hat (may be NULL) receives the predicted x0; z (n
 * standard normals) is read only when c->sigma > 0 and may then not be NULL. x_prev
 * may alias x_t. */
void dap_ddim_step(const dap_ddim_coef *c, float *x_prev, float *x0_hat, const float *x_t,
                   const float *eps, const float *z, size_t n);

/* The same update with the predicted x0 clamped to [-clip, clip] and eps re-derived from the
 * clamped x0 (eps' = (x_t - sqrt(a_t) x0') / sqrt(1 - a_t)), as pixel-space samplers do with
 * data in [-1, 1]; clip <= 0 is dap_ddim_step. */
void dap_ddim_step_clip(const dap_ddim_coef *c, float *x_prev, const float *x_t, const float *eps,
                        const float *z, size_t n, double clip);

/* Classifier-free guidance: eps = null + w (cond - null) over the first C channels of
 * model outputs with C_out channels (C_out = 2C with learn_sigma; the sigma half is
 * ignored). eps: (B, C, HW); out_cond, out_null: (B, C_out, HW). */
void dap_cfg_combine(float *eps, const float *out_cond, const float *out_null, int B, int C_out,
                     int C, int HW, double w);
/* The first C of C_out channels without guidance (w = 1 or no CFG). */
void dap_eps_from_output(float *eps, const float *out, int B, int C_out, int C, int HW);

/* The sampler's callbacks. Each returns DAP_OK or a status that stops the loop. */
typedef struct dap_ddim_hooks {
    /* Required: eps (B, per) at x_t (B, per), model timestep c->t. */
    int (*eps)(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c);
    /* Optional: may change eps before the update (guidance folded into eps). */
    int (*adjust_eps)(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c);
    /* Optional: may change x_prev after the update (guidance added to x_prev). */
    int (*adjust_x)(void *ctx, float *x_prev, const float *x_t, const float *eps,
                    const dap_ddim_coef *c);
    void *ctx;
    /* Sampler option: > 0 clamps the predicted x0 to [-clip_x0, clip_x0] every step
     * (dap_ddim_step_clip); 0 (the zero-initialised default) leaves it unclamped. */
    double clip_x0;
    /* Sampler option: the first `skip` steps (0 <= skip < S) are not run, so x holds x at
     * tau_{S-1-skip} on entry (e.g. a real image noised there: a partial trajectory, as
     * SDEdit and img2img run; dap_ddim_start_t gives that timestep). 0: the full loop. */
    int skip;
} dap_ddim_hooks;

/* Runs S DDIM steps on B samples of `per` floats: x (B, per) holds x_T on entry (e.g.
 * standard normal noise) and x_0 on return. Sample b's step noise z is drawn from
 * rngs[b] (per values each step with sigma > 0, none when eta = 0, when rngs may be
 * NULL), so a sample's result does not depend on how samples are batched. Returns
 * DAP_ERR_ARG for a bad S or eta, or the first hook failure. */
int dap_ddim_sample(const dap_schedule *s, int S, double eta, float *x, int B, size_t per,
                    dap_rng *rngs, const dap_ddim_hooks *h);

/* *t = the timestep tau_{S-1-skip} at which a trajectory with `skip` skipped steps starts;
 * DAP_ERR_ARG for a bad S or skip. */
int dap_ddim_start_t(int T, int S, int skip, int *t);

/* Early stop (SPEC: the last round(stop * S) steps run without guidance): whether
 * sampling step `step` (0..S-1) is guided. */
int dap_ddim_step_guided(int step, int S, double stop);

#endif /* DAP_DDIM_H */
