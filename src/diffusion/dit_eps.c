/*
 * dit_eps.c: DiT + classifier-free guidance as a DDIM eps callback.
 */
#include "diffusion/dit_eps.h"

#include <stdlib.h>
#include <string.h>

int dap_dit_eps_init(dap_dit_eps *e, const dap_dit *m, int cap, double w) {
    memset(e, 0, sizeof *e);
    e->m = m;
    e->cap = cap;
    e->w = w;
    e->C = m->cfg.in_channels;
    e->Co = m->out_channels;
    e->HW = m->cfg.input_size * m->cfg.input_size;
    e->per = (size_t)e->C * e->HW;
    const int n = w != 1.0 ? 2 * cap : cap;
    e->st = dap_dit_state_create_ex(m, n, 0);
    if (!e->st) return DAP_ERR_NOMEM; /* the device said why */
    e->y = dap_malloc((size_t)n * sizeof(int));
    e->tf = dap_alloc_f32((size_t)n);
    e->in = dap_alloc_f32((size_t)n * e->per);
    e->out = dap_alloc_f32((size_t)n * e->Co * e->HW);
    return DAP_OK;
}

void dap_dit_eps_free(dap_dit_eps *e) {
    if (e->st) dap_dit_state_destroy(e->st);
    free(e->y);
    dap_free_aligned(e->tf);
    dap_free_aligned(e->in);
    dap_free_aligned(e->out);
    memset(e, 0, sizeof *e);
}

void dap_dit_eps_set_labels(dap_dit_eps *e, const int *labels, int B) {
    DAP_ASSERT(B >= 1 && B <= e->cap);
    e->B = B;
    for (int i = 0; i < B; i++) e->y[i] = labels[i];
    if (e->w != 1.0)
        for (int i = 0; i < B; i++) e->y[B + i] = e->m->cfg.num_classes; /* the null class */
}

int dap_dit_eps_hook(void *ctx, float *eps, const float *x_t, const dap_ddim_coef *c) {
    dap_dit_eps *e = ctx;
    const int guided = e->w != 1.0, B = e->B;
    const int n = guided ? 2 * B : B;
    memcpy(e->in, x_t, (size_t)B * e->per * sizeof(float));
    if (guided) memcpy(e->in + (size_t)B * e->per, x_t, (size_t)B * e->per * sizeof(float));
    for (int i = 0; i < n; i++) e->tf[i] = (float)c->t;
    dap_dit_state_set_batch(e->st, n);
    dap_dit_forward(e->m, e->st, e->out, e->in, e->tf, e->y, 0);
    if (guided)
        dap_cfg_combine(eps, e->out, e->out + (size_t)B * e->Co * e->HW, B, e->Co, e->C, e->HW, e->w);
    else
        dap_eps_from_output(eps, e->out, B, e->Co, e->C, e->HW);
    return DAP_OK;
}

void dap_sample_rng(dap_rng *r, uint64_t seed, int k, int i) {
    dap_rng_init(r, seed, ((uint64_t)k << 32) | (uint64_t)(uint32_t)i);
}
