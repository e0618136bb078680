/*
 * igd.c: influence-guided diffusion (IGD), Chen, Du, Huang, Wang, Zhang and Wang,
 * "Influence-Guided Diffusion for Dataset Distillation" (ICLR 2025); public code:
 * github.com/mchen725/DD_IGD.
 *
 * A surrogate classifier trained on the real data (a `dap teacher` checkpoint) scores
 * how much a synthetic sample would move training like the real class does (TracIn):
 *     s_inf(x) = cos(grad_theta L(x, theta), G),  G = mean over real x_j of class k of grad_theta L(x_j,
 * theta), with L the cross-entropy of class k, evaluated at the predicted clean sample x0_hat. Its input
 * gradient needs a mixed second derivative; with v = (G - (<g, G>/|g|^2) g) / (|g||G|) (g = grad_theta L(x)),
 * grad_x s_inf = grad_x <grad_theta L(x, theta), v> (v held fixed), and this file uses the exact identity
 *     grad_x <grad_theta L(x, theta), v> = d/de grad_x L(x, theta + e v) at e = 0,
 * evaluated by a central difference in e (two input-gradient backward passes at theta +- h v,
 * h = 1e-3 |theta| / |v|); tests/test_methods.c checks it against finite differences in x.
 * The deviation guidance keeps the class's samples apart: s_dev(x) = max_j cos(x, m_j)
 * over the class's earlier samples m_j (their memory of generated samples, 64 deep).
 * The step (distill.c) is classifier guidance on eps with dx0_hat/dx_t taken as
 * 1/sqrt(a_t): eps -= sqrt(1 - a_t)/sqrt(a_t) (k grad s_inf - gamma grad s_dev).
 *
 * Scales and schedule from their sample_mp.sh / sample.py: k (gm-scale) 5, gamma
 * (dev-scale) 120, guidance on the 50-step indices 30..45 (the noisier part of the
 * trajectory; --igd-low 0.6 --igd-high 0.9 of the steps), 200 real images behind G
 * (grad-ipc), memory 64, CFG 4, 50 steps. Their code averages G over several checkpoints
 * of the surrogate's training; this one uses the one checkpoint it is given. The file
 * holding their guidance step itself could not be read here, so the form above follows
 * the paper. models/igd.flags holds these defaults.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "distill/methods.h"
#include "eval/classifier.h"
#include "ops/ops.h"

#define IGD_BATCH 50 /* real images per pass (their gap) */

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t q = 0; q < n; q++) s += (double)a[q] * b[q];
    return s;
}

/* Cross-entropy of class k on n normalised images xn, backward: param gradients
 * accumulate scaled by dloss, dxn (when not NULL) receives the input gradient. */
static double xent_pass(dap_igd *g, dap_cnn_state *st, const float *xn, int n, float dloss, float *dxn) {
    dap_cnn *net = &g->sur->net;
    const int K = net->num_classes;
    int *y = dap_malloc(sizeof(int) * (size_t)n);
    float *probs = dap_alloc_f32((size_t)n * K), *dl = dap_alloc_f32((size_t)n * K);
    for (int i = 0; i < n; i++) y[i] = g->k;
    const float *logits = dap_cnn_forward(net, st, xn, n, 0);
    const double loss = dap_xent_forward(probs, logits, y, n, K);
    dap_xent_backward(dl, probs, y, n, K, dloss);
    dap_cnn_backward(net, st, xn, dl, dxn, 0);
    free(y);
    dap_free_aligned(probs), dap_free_aligned(dl);
    return loss;
}

int dap_igd_init(dap_igd *g, dap_classifier *sur, const dap_dataset *real, int k, const int *idx, int n) {
    memset(g, 0, sizeof *g);
    g->sur = sur, g->k = k;
    dap_cnn *net = &sur->net;
    if (!net->params.grad) return dap_error(DAP_ERR_ARG, "igd: the surrogate has no gradient buffers");
    g->P = net->params.total;
    const int in = dap_cnn_in_size(net);
    g->G = dap_alloc_f32(g->P), g->g = dap_alloc_f32(g->P), g->v = dap_alloc_f32(g->P),
    g->theta = dap_alloc_f32(g->P);
    g->xn = dap_alloc_f32((size_t)in), g->dxn = dap_alloc_f32((size_t)in);
    g->st1 = dap_calloc(1, sizeof *g->st1); /* kept for the whole class */
    dap_cnn_state_init(g->st1, net, 1, 1);
    /* G: the mean gradient over the n real images, in batches */
    const int bs = n < IGD_BATCH ? n : IGD_BATCH;
    dap_cnn_state st;
    dap_cnn_state_init(&st, net, bs, 1);
    float *xb = dap_alloc_f32((size_t)bs * in), *raw = dap_alloc_f32((size_t)bs * in);
    dap_params_zero_grad(&net->params);
    for (int i0 = 0; i0 < n; i0 += bs) {
        const int b = n - i0 < bs ? n - i0 : bs;
        for (int i = 0; i < b; i++)
            memcpy(raw + (size_t)i * in, real->x + (size_t)idx[i0 + i] * in, sizeof(float) * in);
        dap_classifier_normalize(sur, xb, raw, b);
        xent_pass(g, &st, xb, b, (float)b / (float)n, NULL); /* mean over all n */
    }
    memcpy(g->G, net->params.grad, sizeof(float) * g->P);
    dap_params_zero_grad(&net->params);
    dap_free_aligned(xb), dap_free_aligned(raw);
    dap_cnn_state_free(&st);
    if (!(dot(g->G, g->G, g->P) > 0))
        return dap_error(DAP_ERR_VALUE, "igd: class %d's mean real gradient is zero", k);
    return DAP_OK;
}

void dap_igd_free(dap_igd *g) {
    if (g->st1) {
        dap_cnn_state_free(g->st1);
        free(g->st1);
    }
    dap_free_aligned(g->G), dap_free_aligned(g->g), dap_free_aligned(g->v), dap_free_aligned(g->theta);
    dap_free_aligned(g->xn), dap_free_aligned(g->dxn);
    memset(g, 0, sizeof *g);
}

double dap_igd_param_grad(dap_igd *g, const float *x0, float *out) {
    dap_cnn *net = &g->sur->net;
    dap_classifier_normalize(g->sur, g->xn, x0, 1);
    dap_params_zero_grad(&net->params);
    const double loss = xent_pass(g, g->st1, g->xn, 1, 1.0f, NULL);
    memcpy(out, net->params.grad, sizeof(float) * g->P);
    return loss;
}

/* grad_x L(x0) (in the [-1, 1] input space) at the surrogate's current weights. */
static void input_grad(dap_igd *g, const float *x0, float *out) {
    dap_cnn *net = &g->sur->net;
    dap_classifier_normalize(g->sur, g->xn, x0, 1);
    xent_pass(g, g->st1, g->xn, 1, 1.0f, g->dxn);
    const int c = net->in_c;
    const size_t hw = (size_t)net->in_h * net->in_w;
    for (int ch = 0; ch < c; ch++) /* x_n = (0.5 x + 0.5 - mean) / std */
        for (size_t q = 0; q < hw; q++) out[ch * hw + q] = g->dxn[ch * hw + q] * (0.5f / g->sur->std[ch]);
}

void dap_igd_mixed(dap_igd *g, const float *x0, const float *v, float *out) {
    dap_cnn *net = &g->sur->net;
    const size_t in = (size_t)dap_cnn_in_size(net);
    const double nv = sqrt(dot(v, v, g->P)), nt = sqrt(dot(net->params.data, net->params.data, g->P));
    if (!(nv > 0)) {
        memset(out, 0, sizeof(float) * in);
        return;
    }
    const double h = 1e-3 * (nt > 0 ? nt : 1.0) / nv;
    float *w = net->params.data, *minus = dap_alloc_f32(in);
    memcpy(g->theta, w, sizeof(float) * g->P);
    for (size_t q = 0; q < g->P; q++) w[q] = (float)(g->theta[q] + h * v[q]);
    input_grad(g, x0, out);
    for (size_t q = 0; q < g->P; q++) w[q] = (float)(g->theta[q] - h * v[q]);
    input_grad(g, x0, minus);
    memcpy(w, g->theta, sizeof(float) * g->P); /* restored exactly */
    dap_params_zero_grad(&net->params);
    for (size_t q = 0; q < in; q++) out[q] = (float)((out[q] - minus[q]) / (2.0 * h));
    dap_free_aligned(minus);
}

double dap_igd_influence(dap_igd *g, const float *x0, float *grad) {
    dap_igd_param_grad(g, x0, g->g);
    const double gG = dot(g->g, g->G, g->P), gg = dot(g->g, g->g, g->P), GG = dot(g->G, g->G, g->P);
    if (!(gg > 0)) { /* a sample the surrogate fits perfectly: no direction */
        if (grad) memset(grad, 0, sizeof(float) * (size_t)dap_cnn_in_size(&g->sur->net));
        return 0;
    }
    const double ng = sqrt(gg), nG = sqrt(GG), s = gG / (ng * nG);
    if (grad) {
        const double a = 1.0 / (ng * nG), b = gG / gg;
        for (size_t q = 0; q < g->P; q++) g->v[q] = (float)(a * (g->G[q] - b * g->g[q]));
        dap_igd_mixed(g, x0, g->v, grad);
    }
    return s;
}

double dap_igd_deviation(const float *x0, const float *mem, int nm, size_t per, float *grad) {
    if (grad) memset(grad, 0, sizeof(float) * per);
    if (nm <= 0) return 0;
    const double nx = sqrt(dot(x0, x0, per));
    if (!(nx > 0)) return 0;
    int best = -1;
    double bs = -2, bn = 0;
    for (int j = 0; j < nm; j++) {
        const float *m = mem + (size_t)j * per;
        const double nm_j = sqrt(dot(m, m, per));
        if (!(nm_j > 0)) continue;
        const double c = dot(x0, m, per) / (nx * nm_j);
        if (c > bs) bs = c, best = j, bn = nm_j;
    }
    if (best < 0) return 0;
    if (grad) {
        const float *m = mem + (size_t)best * per;
        for (size_t q = 0; q < per; q++) grad[q] = (float)(m[q] / (nx * bn) - bs * x0[q] / (nx * nx));
    }
    return bs;
}
