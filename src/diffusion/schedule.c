/*
 * schedule.c: the VP linear beta schedule in double, DiT's timestep spacing and
 * forward noising.
 */
#include <math.h>
#include <stdlib.h>

#include "core/core.h"
#include "diffusion/schedule.h"

void dap_schedule_init_linear(dap_schedule *s, int T, double beta_start, double beta_end) {
    DAP_ASSERT(T >= 2 && beta_start > 0.0 && beta_end < 1.0 && beta_start <= beta_end);
    s->T = T;
    s->beta = dap_malloc((size_t)T * sizeof(double));
    s->alpha_bar = dap_malloc((size_t)T * sizeof(double));
    const double step = (beta_end - beta_start) / (double)(T - 1);
    for (int i = 0; i < T; i++) s->beta[i] = beta_start + (double)i * step;
    s->beta[T - 1] = beta_end;
    double ab = 1.0;
    for (int i = 0; i < T; i++) {
        ab *= 1.0 - s->beta[i];
        s->alpha_bar[i] = ab;
    }
}

void dap_schedule_init_default(dap_schedule *s) {
    dap_schedule_init_linear(s, DAP_DIFFUSION_T, 1e-4, 0.02);
}

void dap_schedule_free(dap_schedule *s) {
    free(s->beta);
    free(s->alpha_bar);
    s->beta = s->alpha_bar = NULL;
    s->T = 0;
}

int dap_timestep_spacing(int T, int S, int *taus) {
    if (S < 1 || S > T)
        return dap_error(DAP_ERR_ARG, "sampling steps: expected 1..%d, found %d", T, S);
    const double stride = S > 1 ? (double)(T - 1) / (double)(S - 1) : 1.0;
    double cur = 0.0;
    for (int i = 0; i < S; i++) {
        taus[i] = (int)nearbyint(cur); /* default rounding mode: half to even, as Python's round */
        cur += stride;
    }
    return DAP_OK;
}

void dap_q_sample(const dap_schedule *s, float *x_t, const float *x0, const float *noise,
                  const int *t, int B, size_t per) {
    for (int b = 0; b < B; b++) {
        DAP_ASSERT(t[b] >= 0 && t[b] < s->T);
        const float ca = (float)sqrt(s->alpha_bar[t[b]]);
        const float cn = (float)sqrt(1.0 - s->alpha_bar[t[b]]);
        const size_t o = (size_t)b * per;
        for (size_t i = 0; i < per; i++) x_t[o + i] = ca * x0[o + i] + cn * noise[o + i];
    }
}
