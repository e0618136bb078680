/*
 * test_dit_train.c: 30 AdamW steps (lr 1e-3, betas 0.9/0.999, eps 1e-8, no weight decay)
 * of the DiT eps-MSE loss mean((eps_theta(x_t, t, y)[:, :C] - noise)^2) on the fixture's
 * fixed x_t / noise / t / y per step, from the fixture's weights; the 30 losses must match
 * the PyTorch curve (tests/gen/dit_ref.py) to 1e-3 relative per step.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/optim.h"
#include "io/io.h"
#include "models/dit.h"
#include "test.h"

static float *read_all(const dap_st *st, const char *name, size_t *numel) {
    const dap_st_tensor *t = dap_st_find(st, name);
    if (!t) return NULL;
    float *v = dap_alloc_f32(t->numel);
    if (dap_st_read_f32(st, name, v, NULL, 0) != DAP_OK) {
        dap_free_aligned(v);
        return NULL;
    }
    if (numel) *numel = t->numel;
    return v;
}

DAP_TEST(dit_train_curve) {
    const char *path = dap_test_ref("dit_small.safetensors");
    dap_dit *m;
    if (dap_dit_load(&m, path, 1, 1) != DAP_OK) {
        CHECK_MSG(0, "%s", dap_last_error());
        return;
    }
    dap_st *st;
    CHECK(dap_st_open(&st, path) == DAP_OK);
    size_t nsteps = 0, nxt = 0;
    float *xt = read_all(st, "train.xt", &nxt), *noise = read_all(st, "train.noise", NULL);
    float *tt = read_all(st, "train.t", NULL), *yy = read_all(st, "train.y", NULL);
    float *want = read_all(st, "train.losses", &nsteps);
    CHECK(xt && noise && tt && yy && want);
    if (!(xt && noise && tt && yy && want)) return;
    const int B = 3, C = m->cfg.in_channels, Co = m->out_channels, HW = m->cfg.input_size * m->cfg.input_size;
    size_t per_step = (size_t)B * C * HW;
    CHECK(nxt == nsteps * per_step);
    dap_dit_state *s = dap_dit_state_create(m, B);
    float *out = dap_alloc_f32((size_t)B * Co * HW), *dout = dap_alloc_f32((size_t)B * Co * HW);
    dap_adamw opt;
    dap_adamw_init(&opt, &m->params, 0.9, 0.999, 1e-8, 0.0);
    double worst = 0;
    for (size_t k = 0; k < nsteps; k++) {
        int y[3];
        for (int b = 0; b < B; b++) y[b] = (int)lrintf(yy[k * B + b]);
        dap_params_zero_grad(&m->params);
        dap_dit_forward(m, s, out, xt + k * per_step, tt + k * B, y, 0);
        /* loss over the first C channels; the learned-sigma half gets no gradient */
        double loss = 0;
        float scale = 2.0f / (float)per_step;
        memset(dout, 0, (size_t)B * Co * HW * sizeof(float));
        for (int b = 0; b < B; b++)
            for (int i = 0; i < C * HW; i++) {
                size_t o = (size_t)b * Co * HW + i;
                float d = out[o] - noise[k * per_step + (size_t)b * C * HW + i];
                loss += (double)d * d;
                dout[o] = scale * d;
            }
        loss /= (double)per_step;
        dap_dit_backward(m, s, dout, NULL);
        dap_adamw_step(&opt, &m->params, 1e-3);
        double rel = fabs(loss - want[k]) / fabs(want[k]);
        if (rel > worst) worst = rel;
        CHECK_MSG(rel < 1e-3, "step %zu: loss %.6f vs reference %.6f", k, loss, want[k]);
        if (k == 0 || k + 1 == nsteps) printf("    step %2zu loss %.6f (reference %.6f)\n", k, loss, want[k]);
    }
    printf("    %-40s max rel %.3g over %zu steps\n", "loss curve", worst, nsteps);
    dap_adamw_free(&opt);
    dap_free_aligned(out);
    dap_free_aligned(dout);
    float *bufs[] = {xt, noise, tt, yy, want};
    for (int i = 0; i < 5; i++) dap_free_aligned(bufs[i]);
    dap_dit_state_destroy(s);
    dap_st_close(st);
    dap_dit_destroy(m);
}
