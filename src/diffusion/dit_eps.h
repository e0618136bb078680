/*
 * dit_eps.h: a DiT as the eps model of the DDIM sampler, with classifier-free guidance
 * (one forward of 2B samples: B conditional, B with the null label; w = 1 runs the
 * conditional half only). Shared by `dap sample` and the distillation methods.
 */
#ifndef DAP_DIT_EPS_H
#define DAP_DIT_EPS_H

#include "diffusion/ddim.h"
#include "models/dit.h"

typedef struct dap_dit_eps {
    const dap_dit *m;
    dap_dit_state *st; /* inference-only state for 2 * cap samples */
    int cap;           /* most samples per call */
    int B;             /* samples in the current call */
    int C, Co, HW;
    size_t per;        /* C * HW */
    double w;          /* guidance scale; 1: conditional only */
    int *y;            /* (2 cap): labels, then null labels */
    float *tf;         /* (2 cap) timesteps */
    float *in;         /* (2 cap, C, H, W) */
    float *out;        /* (2 cap, Co, H, W) */
} dap_dit_eps;

/* DAP_OK, or the device's error when its state could not be made (e is then empty:
 * dap_dit_eps_free is safe). */
int dap_dit_eps_init(dap_dit_eps *e, const dap_dit *m, int cap, double w);
void dap_dit_eps_free(dap_dit_eps *e);
/* The labels of the next calls (B <= cap); the null halves get label num_classes. */
void dap_dit_eps_set_labels(dap_dit_eps *e, const int *labels, int B);
/* The dap_ddim_hooks.eps callback (ctx = dap_dit_eps *). */
int dap_dit_eps_hook(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c);

/* The random stream of sample i of class k: its initial noise and its step noise. */
void dap_sample_rng(dap_rng *r, uint64_t seed, int k, int i);

#endif
