/*
 * schedule.h: the VP noise schedule (SPEC section 2), DiT's timestep spacing for
 * DDIM (SPEC "Details that must match"), and forward noising q(x_t | x_0).
 * Timesteps are 0-based (t = 0..T-1); alpha_bar[t] = prod_{s<=t} (1 - beta[s]).
 */
#ifndef DAP_SCHEDULE_H
#define DAP_SCHEDULE_H

#include <stddef.h>

#define DAP_DIFFUSION_T 1000

typedef struct dap_schedule {
    int T;
    double *beta;      /* (T) */
    double *alpha_bar; /* (T) cumulative product of (1 - beta), in double */
} dap_schedule;

/* beta linear from beta_start to beta_end inclusive, in double (as numpy's linspace:
 * start + i * step, the last value set to beta_end exactly). */
void dap_schedule_init_linear(dap_schedule *s, int T, double beta_start, double beta_end);
/* The paper's schedule: T = 1000, beta 1e-4 .. 0.02. */
void dap_schedule_init_default(dap_schedule *s);
void dap_schedule_free(dap_schedule *s);

/* DiT's space_timesteps(T, "S"): taus[0..S-1] ascending. cur = 0, stride =
 * (T - 1) / (S - 1) in double (1 when S == 1); S times take round-half-even(cur) and
 * add stride. T = 1000, S = 50 gives 0, 20, 41, ..., 979, 999. Returns DAP_ERR_ARG
 * (naming S) unless 1 <= S <= T. */
int dap_timestep_spacing(int T, int S, int *taus);

/* x_t = sqrt(ab[t_b]) x0 + sqrt(1 - ab[t_b]) noise, per sample b with its own t_b.
 * x_t, x0, noise: (B, per) floats; t: (B). x_t may alias x0 or noise. */
void dap_q_sample(const dap_schedule *s, float *x_t, const float *x0, const float *noise,
                  const int *t, int B, size_t per);

#endif /* DAP_SCHEDULE_H */
