/*
 * test_cuda_dit.c: the DiT on the GPU (src/cuda/dit_cuda.cu) against the CPU reference:
 * every kernel against its ops.h op (per precision where cuBLAS is involved), the model's
 * forward / features at block l / backward from block l on a small random config and on
 * DiT-XL/2's shape at batch 1, a CFG DDIM run and a DAP guided distillation end to end
 * through the dap_dit_to_device dispatch. Each prints the largest error. Without a CUDA
 * build or a GPU they are counted as skipped, with the reason (DAP_SKIP); the argument checks of
 * --precision and the device's memory run everywhere they can.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/device.h"
#include "data/dataset.h"
#include "diffusion/ddim.h"
#include "diffusion/dit_eps.h"
#include "diffusion/train.h"
#include "distill/distill.h"
#include "distill/guidance.h"
#include "models/dit.h"
#include "ops/ops.h"
#include "test.h"
#ifdef DAP_CUDA
#include "cuda/cuda.h"
#endif

/* --precision and dap_dit_to_device on the cpu device: the errors a user meets first. */
DAP_TEST(cuda_dit_precision_args) {
    dap_device_select("cpu");
    CHECK(dap_device_set_precision("fp16") == DAP_ERR_ARG);
    CHECK(strstr(dap_last_error(), "fp16") && strstr(dap_last_error(), "fp32, tf32 or bf16"));
    CHECK(dap_device_set_precision("tf32") == DAP_ERR_ARG);
    CHECK(strstr(dap_last_error(), "--device cuda") != NULL);
    CHECK(dap_device_set_precision("bf16") == DAP_ERR_ARG);
    CHECK(dap_device_precision() == DAP_PRECISION_FP32);
    CHECK(dap_device_set_precision("fp32") == DAP_OK && dap_device_set_precision(NULL) == DAP_OK);
    dap_dit_config c;
    CHECK(dap_dit_config_by_name("fm-tiny", &c) == DAP_OK);
    dap_dit *m = NULL;
    CHECK(dap_dit_create(&m, &c, 0) == DAP_OK);
    CHECK(dap_dit_to_device(m) == DAP_OK && m->dev == NULL); /* cpu: nothing moves */
    int b = 1 << 20, cb = 0;
    CHECK(dap_dit_states_fit(m, 1, &b, &cb, "--batch") == DAP_OK);
    dap_dit_destroy(m);
}

#ifdef DAP_CUDA
/* 1 when a GPU is there; 0 when not (dap_last_error says why). */
static int gpu_ready(void) {
    char desc[256];
    if (dap_cuda_init(desc, sizeof desc) != DAP_OK) {
        return 0;
    }
    printf("    %s\n", desc);
    return 1;
}
#define NEED_GPU()                                                                                 \
    do {                                                                                           \
        if (!gpu_ready()) DAP_SKIP("no usable GPU: %s", dap_last_error());                         \
    } while (0)
#else
#define NEED_GPU()                                                                                 \
    do {                                                                                           \
        DAP_SKIP("a build without CUDA (make CUDA=1)");                                            \
    } while (0)
#endif

#ifdef DAP_CUDA
/* ||got - want|| / ||want|| */
static double l2_rel(const float *got, const float *want, size_t n) {
    double d = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)got[i] - (double)want[i];
        d += e * e, w += (double)want[i] * want[i];
    }
    return w > 0 ? sqrt(d / w) : sqrt(d);
}

/* Prints the largest relative error (floor: 1% of the largest |want|) and the relative L2
 * error; returns the larger of max-rel / rel_tol and l2 / l2_tol (pass: <= 1). */
static double cmp(const char *label, const float *got, const float *want, size_t n, double rel_tol,
                  double l2_tol) {
    double big = 0;
    for (size_t i = 0; i < n; i++) big = fmax(big, fabs(want[i]));
    double mabs = 0, mrel = 0, floor_ = fmax(1e-2 * big, 1e-30);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= mabs)) mabs = d;
        if (!(d / fmax(fabs((double)want[i]), floor_) <= mrel)) mrel = d / fmax(fabs((double)want[i]), floor_);
    }
    double l2 = l2_rel(got, want, n);
    printf("    %-44s max abs %.3g, max rel %.3g, L2 rel %.3g\n", label, mabs, mrel, l2);
    double r = fmax(mrel / rel_tol, l2 / l2_tol);
    return r == r ? r : INFINITY;
}

/* Tolerances by precision: (max rel, L2 rel). FP32 differs from the CPU by summation order
 * and the GPU's expf / cosf (2 ulp: at t = 999 a timestep frequency moves by ~2e-4); TF32
 * rounds matrix inputs to 10 mantissa bits, BF16 to 7 (an inference model also stores the
 * weights and the products' inputs in BF16), so there the L2 bound decides (an indexing or
 * storage error shows at O(0.1) or more). */
static const char *k_prec_name[3] = {"fp32", "tf32", "bf16"};
static const double k_rel_tol[3] = {3e-3, 0.25, 1.0};
static const double k_l2_tol[3] = {3e-4, 1e-2, 5e-2};

static float *randn(dap_rng *r, size_t n, float sd) {
    float *v = dap_alloc_f32(n);
    dap_rng_normal(r, v, n, 0.0f, sd);
    return v;
}

#endif

DAP_TEST(cuda_dit_kernels) {
    NEED_GPU();
#ifdef DAP_CUDA
    dap_rng r;
    dap_rng_init(&r, 21, 0);
    const int B = 3, T = 20, C = 48, NH = 4, IC = 40, OC = 56, LD = 6 * C;
    const size_t N = (size_t)B * T;
    char label[96];
    /* linear: out = x w^T + b, dinp = dout w, per precision */
    float *x = randn(&r, N * IC, 1), *w = randn(&r, (size_t)OC * IC, 0.2f), *bias = randn(&r, OC, 0.5f);
    float *want = dap_alloc_f32(N * OC), *got = dap_alloc_f32(N * OC), *dout = randn(&r, N * OC, 1);
    float *dwant = dap_alloc_f32(N * IC), *dgot = dap_alloc_f32(N * IC);
    dap_linear_forward(want, x, w, bias, (int)N, IC, OC);
    dap_linear_backward(dwant, NULL, NULL, dout, x, w, (int)N, IC, OC);
    const int nprec = dap_cuda_bf16_supported() ? 3 : 2; /* bf16: compute 8.0+ */
    for (int p = 0; p < nprec; p++) {
        dap_cuda_linear(got, x, w, bias, (int)N, IC, OC, p);
        snprintf(label, sizeof label, "linear forward (%s)", k_prec_name[p]);
        CHECK_MSG(cmp(label, got, want, N * OC, k_rel_tol[p], k_l2_tol[p]) <= 1, "%s", label);
        dap_cuda_linear_dinp(dgot, dout, w, (int)N, IC, OC, p);
        snprintf(label, sizeof label, "linear input gradient (%s)", k_prec_name[p]);
        CHECK_MSG(cmp(label, dgot, dwant, N * IC, k_rel_tol[p], k_l2_tol[p]) <= 1, "%s", label);
    }
    dap_free_aligned(x), dap_free_aligned(w), dap_free_aligned(bias), dap_free_aligned(want);
    dap_free_aligned(got), dap_free_aligned(dout), dap_free_aligned(dwant), dap_free_aligned(dgot);

    /* LayerNorm + modulate (shift, scale are chunks 1, 2 of a (B, 6C) row), and its input
     * gradient added into a residual gradient */
    float *h = randn(&r, N * C, 2), *mods = randn(&r, (size_t)B * LD, 0.5f);
    for (size_t i = 0; i < N * C; i++) h[i] += 0.3f; /* a non-zero mean */
    float *ln = dap_alloc_f32(N * C), *mw = dap_alloc_f32(N * C), *mg = dap_alloc_f32(N * C);
    float *mean = dap_alloc_f32(N), *rstd = dap_alloc_f32(N), *gmean = dap_alloc_f32(N), *grstd = dap_alloc_f32(N);
    dap_layernorm_forward(ln, mean, rstd, h, NULL, NULL, (int)N, C, 1e-6f);
    dap_modulate_forward(mw, ln, mods + C, mods + 2 * C, B, T, C, LD);
    dap_cuda_ln_modulate(mg, gmean, grstd, h, mods + C, mods + 2 * C, B, T, C, LD);
    CHECK(cmp("layernorm + modulate", mg, mw, N * C, 1e-4, 1e-5) <= 1);
    CHECK(cmp("layernorm mean", gmean, mean, N, 1e-4, 1e-5) <= 1);
    CHECK(cmp("layernorm rstd", grstd, rstd, N, 1e-4, 1e-5) <= 1);
    float *dy = randn(&r, N * C, 1), *dres0 = randn(&r, N * C, 1), *t1 = dap_alloc_f32(N * C);
    float *t2 = dap_alloc_f32(N * C), *dres_w = dap_alloc_f32(N * C), *dres_g = dap_alloc_f32(N * C);
    dap_modulate_backward(t1, NULL, NULL, dy, ln, mods + 2 * C, B, T, C, LD);
    dap_layernorm_backward(t2, NULL, NULL, t1, h, NULL, mean, rstd, (int)N, C);
    for (size_t i = 0; i < N * C; i++) dres_w[i] = dres0[i] + t2[i];
    memcpy(dres_g, dres0, N * C * sizeof(float));
    dap_cuda_ln_modulate_backward(dres_g, dy, h, mods + 2 * C, mean, rstd, B, T, C, LD);
    CHECK(cmp("layernorm + modulate backward (+= dres)", dres_g, dres_w, N * C, 1e-4, 1e-5) <= 1);

    /* gated residual with the branch bias; the backward's gate product */
    float *y = randn(&r, N * C, 1), *yb = dap_alloc_f32(N * C), *cb = randn(&r, C, 0.5f);
    for (size_t i = 0; i < N * C; i++) yb[i] = y[i] + cb[i % C];
    memcpy(t1, h, N * C * sizeof(float));
    dap_gate_residual_forward(t1, yb, mods + 2 * C, B, T, C, LD);
    dap_cuda_gate_residual(t2, h, y, cb, mods + 2 * C, B, T, C, LD);
    CHECK(cmp("gated residual (+ bias)", t2, t1, N * C, 1e-5, 1e-6) <= 1);
    dap_gate_residual_backward(t1, NULL, dy, y, mods + 5 * C, B, T, C, LD);
    dap_cuda_gate_mul(t2, dy, mods + 5 * C, B, T, C, LD);
    CHECK(cmp("gated residual backward (gate dout)", t2, t1, N * C, 1e-5, 1e-6) <= 1);

    /* activations over a wide range (saturation included) */
    size_t na = 4096;
    float *a = randn(&r, na, 4), *da = randn(&r, na, 1), *aw = dap_alloc_f32(na), *ag = dap_alloc_f32(na);
    a[0] = 30.0f, a[1] = -30.0f, a[2] = 100.0f, a[3] = -100.0f, a[4] = 0.0f;
    dap_gelu_forward(aw, a, na);
    dap_cuda_act(DAP_CUDA_ACT_GELU, ag, a, NULL, na);
    CHECK(cmp("gelu (tanh)", ag, aw, na, 1e-5, 1e-5) <= 1);
    dap_gelu_backward(aw, da, a, na);
    dap_cuda_act(DAP_CUDA_ACT_GELU_BWD, ag, a, da, na);
    CHECK(cmp("gelu backward", ag, aw, na, 1e-4, 1e-5) <= 1);
    dap_silu_forward(aw, a, na);
    dap_cuda_act(DAP_CUDA_ACT_SILU, ag, a, NULL, na);
    CHECK(cmp("silu", ag, aw, na, 1e-5, 1e-5) <= 1);

    /* attention core, forward and backward, per precision */
    float *qkv = randn(&r, N * 3 * C, 1), *ow = dap_alloc_f32(N * C), *og = dap_alloc_f32(N * C);
    size_t natt = (size_t)B * NH * T * T;
    float *att = dap_alloc_f32(natt), *attg = dap_alloc_f32(natt);
    float *work = dap_alloc_f32(dap_attention_work_floats(B, T, C, NH));
    float *dq_w = dap_alloc_f32(N * 3 * C), *dq_g = dap_alloc_f32(N * 3 * C);
    dap_attention_forward(ow, att, qkv, B, T, C, NH, work);
    dap_attention_backward(dq_w, dy, qkv, att, B, T, C, NH, work);
    for (int p = 0; p < nprec; p++) {
        dap_cuda_attention(og, attg, qkv, B, T, C, NH, p);
        snprintf(label, sizeof label, "attention output (%s)", k_prec_name[p]);
        CHECK_MSG(cmp(label, og, ow, N * C, k_rel_tol[p], k_l2_tol[p]) <= 1, "%s", label);
        snprintf(label, sizeof label, "attention probabilities (%s)", k_prec_name[p]);
        CHECK_MSG(cmp(label, attg, att, natt, k_rel_tol[p], k_l2_tol[p]) <= 1, "%s", label);
        dap_cuda_attention_backward(dq_g, dy, qkv, B, T, C, NH, p);
        snprintf(label, sizeof label, "attention backward dqkv (%s)", k_prec_name[p]);
        CHECK_MSG(cmp(label, dq_g, dq_w, N * 3 * C, k_rel_tol[p], k_l2_tol[p]) <= 1, "%s", label);
    }

    /* timestep frequencies (dit.c's formula, in float) */
    float ts[4] = {0, 1, 500, 999}, fw[4 * 256], fg[4 * 256];
    for (int b = 0; b < 4; b++)
        for (int i = 0; i < 128; i++) {
            float f = expf(-9.21034037197618f * (float)i / 128.0f), arg = ts[b] * f;
            fw[b * 256 + i] = cosf(arg), fw[b * 256 + 128 + i] = sinf(arg);
        }
    dap_cuda_timestep_freq(fg, ts, 4);
    double fmaxd = 0;
    for (int i = 0; i < 4 * 256; i++) fmaxd = fmax(fmaxd, fabs(fg[i] - fw[i]));
    printf("    %-44s max abs %.3g\n", "timestep frequencies", fmaxd);
    CHECK(fmaxd < 5e-4); /* expf's 2 ulp on the GPU, times t = 999 */

    /* patchify (conv-weight layout (c, ki, kj), token i g + j) and its adjoint; the
     * official unpatchify of the output tokens, with the final bias */
    const int pc = 3, pp = 2, pg = 3, PW = pg * pp, P = pc * pp * pp;
    size_t nx = (size_t)B * pc * PW * PW;
    float *img = randn(&r, nx, 1), *pat = dap_alloc_f32(nx), *back = dap_alloc_f32(nx), *pw_ = dap_alloc_f32(nx);
    for (int b = 0; b < B; b++)
        for (int ti = 0; ti < pg; ti++)
            for (int tj = 0; tj < pg; tj++)
                for (int c = 0; c < pc; c++)
                    for (int ki = 0; ki < pp; ki++)
                        for (int kj = 0; kj < pp; kj++)
                            pw_[((size_t)b * pg * pg + ti * pg + tj) * P + (c * pp + ki) * pp + kj] =
                                img[(((size_t)b * pc + c) * PW + ti * pp + ki) * PW + tj * pp + kj];
    dap_cuda_patchify(pat, img, B, pc, pp, pg, 0);
    CHECK(memcmp(pat, pw_, nx * sizeof(float)) == 0);
    dap_cuda_patchify(pat, back, B, pc, pp, pg, 1);
    CHECK(memcmp(back, img, nx * sizeof(float)) == 0);
    float *fb = randn(&r, P, 1), *uw = dap_alloc_f32(nx), *ug = dap_alloc_f32(nx);
    for (int b = 0; b < B; b++) /* tokens read as (h, w, p, q, c) */
        for (int ti = 0; ti < pg; ti++)
            for (int tj = 0; tj < pg; tj++)
                for (int pi = 0; pi < pp; pi++)
                    for (int q = 0; q < pp; q++)
                        for (int c = 0; c < pc; c++) {
                            int rr = (pi * pp + q) * pc + c;
                            uw[(((size_t)b * pc + c) * PW + ti * pp + pi) * PW + tj * pp + q] =
                                img[((size_t)b * pg * pg + ti * pg + tj) * P + rr] + fb[rr];
                        }
    dap_cuda_unpatchify_out(ug, img, fb, B, pc, pp, pg);
    CHECK(cmp("unpatchify (output tokens + bias)", ug, uw, nx, 1e-6, 1e-7) <= 1);
    printf("    patchify and its adjoint: %s\n", memcmp(pat, pw_, nx * sizeof(float)) ? "DIFFER" : "exact");

    dap_free_aligned(h), dap_free_aligned(mods), dap_free_aligned(ln), dap_free_aligned(mw), dap_free_aligned(mg);
    dap_free_aligned(mean), dap_free_aligned(rstd), dap_free_aligned(gmean), dap_free_aligned(grstd);
    dap_free_aligned(dy), dap_free_aligned(dres0), dap_free_aligned(t1), dap_free_aligned(t2);
    dap_free_aligned(dres_w), dap_free_aligned(dres_g), dap_free_aligned(y), dap_free_aligned(yb);
    dap_free_aligned(cb), dap_free_aligned(a), dap_free_aligned(da), dap_free_aligned(aw), dap_free_aligned(ag);
    dap_free_aligned(qkv), dap_free_aligned(ow), dap_free_aligned(og), dap_free_aligned(att);
    dap_free_aligned(attg), dap_free_aligned(work), dap_free_aligned(dq_w), dap_free_aligned(dq_g);
    dap_free_aligned(img), dap_free_aligned(pat), dap_free_aligned(back), dap_free_aligned(pw_);
    dap_free_aligned(fb), dap_free_aligned(uw), dap_free_aligned(ug);
#endif
}

#ifdef DAP_CUDA
/* Every weight random (the official init zeroes adaLN and the final layer, which would
 * hide most of the model from a comparison). */
static void randomise(dap_dit *m, uint64_t seed) {
    dap_dit_init(m, seed);
    dap_rng r;
    dap_rng_init(&r, seed, 1);
    for (int i = 0; i < m->params.n; i++) {
        const dap_param *p = &m->params.p[i];
        if (!strcmp(p->key, "pos_embed")) continue;
        float sd = p->ndim >= 2 ? 0.5f / sqrtf((float)(p->numel / p->shape[0])) : 0.1f;
        float *v = m->params.data + p->offset, *z = dap_alloc_f32(p->numel);
        dap_rng_normal(&r, z, p->numel, 0.0f, sd);
        for (size_t q = 0; q < p->numel; q++) v[q] += z[q];
        dap_free_aligned(z);
    }
}

/* The device model's output for x, t, y (an inference state of batch n) */
static void device_out(dap_dit_cuda *d, int n, float *out, const float *x, const float *t, const int *y) {
    dap_dit_cuda_state *s = NULL;
    CHECK(dap_dit_cuda_state_create(&s, d, n, 0) == DAP_OK);
    if (s) dap_dit_cuda_forward(d, s, out, x, t, y, 0);
    dap_dit_cuda_state_destroy(s);
}

/* Forward (full), features at block l and the backward from l, batch n of a state
 * planned for `cap`, on the CPU and on the device in precision p; returns pass (1). */
static int model_parity(const char *name, dap_dit *m, int n, int cap, int l, int cache, int p) {
    const dap_dit_config *c = &m->cfg;
    size_t in = (size_t)c->in_channels * c->input_size * c->input_size;
    size_t on = (size_t)m->out_channels * c->input_size * c->input_size, fn = (size_t)n * m->tokens * c->hidden;
    dap_rng r;
    dap_rng_init(&r, 77, 0);
    float *x = randn(&r, n * in, 1), *dfeat = randn(&r, fn, 1), *t = dap_alloc_f32(n);
    int *y = dap_malloc(sizeof(int) * (size_t)n);
    for (int b = 0; b < n; b++) t[b] = (float)(b * 997 % 1000), y[b] = b % (c->num_classes + 1);
    float *ow = dap_alloc_f32(n * on), *og = dap_alloc_f32(n * on), *fw = dap_alloc_f32(fn), *fg = dap_alloc_f32(fn);
    float *dxw = dap_alloc_f32(n * in), *dxg = dap_alloc_f32(n * in);
    size_t mn = (size_t)n * c->hidden; /* the tokens' mean (the guidance's --pool mean) */
    float *dmean = randn(&r, mn, 1), *mw = dap_alloc_f32(mn), *mg = dap_alloc_f32(mn);
    float *dxmw = dap_alloc_f32(n * in), *dxmg = dap_alloc_f32(n * in);
    /* CPU */
    dap_dit_state *s = dap_dit_state_create_ex(m, cap, cache);
    dap_dit_state_set_batch(s, n);
    dap_dit_forward(m, s, ow, x, t, y, 0);
    dap_dit_forward(m, s, NULL, x, t, y, l);
    memcpy(fw, dap_dit_features(s), fn * sizeof(float));
    dap_dit_backward_from_block(m, s, l, dfeat, dxw);
    dap_dit_features_mean(m, s, mw);
    dap_dit_backward_from_block_mean(m, s, l, dmean, dxmw);
    dap_dit_state_destroy(s);
    /* device */
    dap_dit_cuda *d = NULL;
    dap_dit_cuda_state *ds = NULL;
    int ok = dap_dit_cuda_create(&d, m, p) == DAP_OK && dap_dit_cuda_state_create(&ds, d, cap, cache) == DAP_OK;
    CHECK_MSG(ok, "%s: %s", name, dap_last_error());
    if (ok) {
        dap_dit_cuda_state_set_batch(ds, n);
        dap_dit_cuda_forward(d, ds, og, x, t, y, 0);
        dap_dit_cuda_forward(d, ds, NULL, x, t, y, l);
        dap_dit_cuda_features_copy(d, ds, fg);
        dap_dit_cuda_backward_from_block(d, ds, l, dfeat, dxg);
        dap_dit_cuda_forward(d, ds, NULL, x, t, y, l); /* a backward needs its own forward */
        dap_dit_cuda_features_mean(d, ds, mg);
        dap_dit_cuda_backward_from_block_mean(d, ds, l, dmean, dxmg);
        char label[128];
        double worst = 0;
        snprintf(label, sizeof label, "%s %s: output", name, k_prec_name[p]);
        worst = fmax(worst, cmp(label, og, ow, n * on, k_rel_tol[p], k_l2_tol[p]));
        snprintf(label, sizeof label, "%s %s: block %d tokens", name, k_prec_name[p], l);
        worst = fmax(worst, cmp(label, fg, fw, fn, k_rel_tol[p], k_l2_tol[p]));
        /* the backward through l blocks of attention compounds rounding: twice the bound */
        snprintf(label, sizeof label, "%s %s: dx from block %d", name, k_prec_name[p], l);
        worst = fmax(worst, 0.5 * cmp(label, dxg, dxw, n * in, k_rel_tol[p], k_l2_tol[p]));
        snprintf(label, sizeof label, "%s %s: block %d tokens' mean", name, k_prec_name[p], l);
        worst = fmax(worst, cmp(label, mg, mw, mn, k_rel_tol[p], k_l2_tol[p]));
        snprintf(label, sizeof label, "%s %s: dx from the mean", name, k_prec_name[p]);
        worst = fmax(worst, 0.5 * cmp(label, dxmg, dxmw, n * in, k_rel_tol[p], k_l2_tol[p]));
        printf("    %s %s: state %.1f MiB on the device\n", name, k_prec_name[p],
               dap_dit_cuda_state_bytes(ds) / 1048576.0);
        ok = worst <= 1;
    }
    dap_dit_cuda_state_destroy(ds);
    dap_dit_cuda_destroy(d);
    dap_free_aligned(x), dap_free_aligned(dfeat), dap_free_aligned(t), free(y);
    dap_free_aligned(ow), dap_free_aligned(og), dap_free_aligned(fw), dap_free_aligned(fg);
    dap_free_aligned(dxw), dap_free_aligned(dxg);
    dap_free_aligned(dmean), dap_free_aligned(mw), dap_free_aligned(mg), dap_free_aligned(dxmw), dap_free_aligned(dxmg);
    return ok;
}
#endif

DAP_TEST(cuda_dit_matches_cpu) {
    NEED_GPU();
#ifdef DAP_CUDA
    dap_dit_config c = {.input_size = 8, .in_channels = 4, .patch = 2, .hidden = 64, .depth = 4, .heads = 4,
                        .num_classes = 10, .learn_sigma = 1, .mlp_ratio = 4.0f, .class_dropout = 0.1f};
    dap_dit *m = NULL;
    CHECK(dap_dit_create(&m, &c, 0) == DAP_OK);
    randomise(m, 5);
    for (int p = 0; p < 3; p++) {
        if (p == DAP_PRECISION_BF16 && !dap_cuda_bf16_supported()) {
            printf("    bf16: skipped (this GPU has none)\n");
            continue;
        }
        /* n < cap (set_batch); l = cache (the guidance's state); l < depth = cache (training's) */
        CHECK_MSG(model_parity("small, l 2 cache 2", m, 5, 6, 2, 2, p), "small model, %s", k_prec_name[p]);
        CHECK_MSG(model_parity("small, l 3 cache 4", m, 3, 3, 3, 4, p), "small model, %s", k_prec_name[p]);
    }
    if (dap_cuda_bf16_supported()) {
        /* bf16 storage: an inference model's weight matrices and product inputs in BF16 */
        CHECK(dap_dit_cuda_storage_bf16(m, DAP_PRECISION_BF16) && !dap_dit_cuda_storage_bf16(m, DAP_PRECISION_TF32));
        size_t w32 = dap_dit_cuda_weight_bytes(m, DAP_PRECISION_FP32), w16 = dap_dit_cuda_weight_bytes(m, DAP_PRECISION_BF16);
        dap_dit_cuda *d[2] = {NULL, NULL};
        size_t st[2];
        for (int k = 0; k < 2; k++) {
            CHECK(dap_dit_cuda_create(&d[k], m, k ? DAP_PRECISION_BF16 : DAP_PRECISION_FP32) == DAP_OK);
            st[k] = d[k] ? dap_dit_cuda_state_bytes_for(d[k], 6, 4) : 0;
        }
        printf("    bf16 storage: weights %zu -> %zu bytes, a guidance state (batch 6, 4 blocks) %zu -> %zu\n", w32,
               w16, st[0], st[1]);
        CHECK(w16 < 0.6 * w32 && w16 > 0.5 * w32);
        CHECK(st[1] < 0.9 * st[0]);
        if (d[0] && d[1]) { /* a sampling state (no cached block) shrinks too */
            size_t s0 = dap_dit_cuda_state_bytes_for(d[0], 6, 0), s1 = dap_dit_cuda_state_bytes_for(d[1], 6, 0);
            printf("    bf16 storage: a sampling state (batch 6) %zu -> %zu bytes\n", s0, s1);
            CHECK(s1 < s0);
            /* its forward (the uncached path: the scratch set, the stream) against the CPU */
            const int n = 5;
            size_t in = (size_t)c.in_channels * c.input_size * c.input_size, on = (size_t)m->out_channels * c.input_size * c.input_size;
            dap_rng r;
            dap_rng_init(&r, 78, 0);
            float *x = randn(&r, n * in, 1), *t = dap_alloc_f32(n), *ow = dap_alloc_f32(n * on), *og = dap_alloc_f32(n * on);
            int y[5] = {0, 10, 4, 4, 9};
            for (int b = 0; b < n; b++) t[b] = (float)(b * 313 % 1000);
            dap_dit_state *cs = dap_dit_state_create(m, n);
            dap_dit_forward(m, cs, ow, x, t, y, 0);
            dap_dit_state_destroy(cs);
            device_out(d[1], n, og, x, t, y);
            CHECK(cmp("bf16, no cached block: output", og, ow, n * on, k_rel_tol[2], k_l2_tol[2]) <= 1);
            dap_free_aligned(x), dap_free_aligned(t), dap_free_aligned(ow), dap_free_aligned(og);
        }
        /* training updates FP32 weights: refused on a BF16 model before any work */
        dap_dit_cuda_state *ts = NULL;
        CHECK(d[1] && dap_dit_cuda_state_create_train(&ts, d[1], 2) == DAP_ERR_ARG && ts == NULL);
        CHECK(strstr(dap_last_error(), "BF16 weights") != NULL);
        printf("    %s\n", dap_last_error());
        CHECK(d[1] && dap_dit_cuda_train_begin(d[1], m->params.data, NULL, NULL) == DAP_ERR_ARG);
        dap_dit_cuda_destroy(d[0]), dap_dit_cuda_destroy(d[1]);
        /* a model with gradients keeps its FP32 master weights beside the BF16 copy */
        dap_dit *mt = NULL;
        CHECK(dap_dit_create(&mt, &c, 1) == DAP_OK);
        CHECK(dap_dit_cuda_storage_bf16(mt, DAP_PRECISION_BF16));
        CHECK(dap_dit_cuda_weight_bytes(mt, DAP_PRECISION_BF16) == w32 + w32 / 2);
        dap_dit_destroy(mt);
    }
    dap_dit_destroy(m);
    /* a pixel model: 1 channel, no learn_sigma, 49 tokens (rows not a multiple of a warp) */
    CHECK(dap_dit_config_by_name("fm-tiny", &c) == DAP_OK);
    CHECK(dap_dit_create(&m, &c, 0) == DAP_OK);
    randomise(m, 7);
    CHECK(model_parity("fm-tiny, l 1 cache 2", m, 4, 4, 1, 2, DAP_PRECISION_FP32));
    CHECK(model_parity("fm-tiny, l 2 cache 2", m, 2, 4, 2, 2, DAP_PRECISION_TF32));
    if (dap_cuda_bf16_supported()) CHECK(model_parity("fm-tiny, l 1 cache 2", m, 3, 4, 1, 2, DAP_PRECISION_BF16));
    dap_dit_destroy(m);
    /* DiT-XL/2's shape (675 M weights, 256 tokens, 16 heads) at batch 1, block 8 */
    size_t fr = 0, tot = 0;
    dap_cuda_memory(&fr, &tot);
    if (fr < ((size_t)12 << 30)) {
        printf("    DiT-XL/2: skipped (%.1f GiB free on the device, 12 needed)\n", fr / 1073741824.0);
        return;
    }
    CHECK(dap_dit_config_by_name("DiT-XL/2", &c) == DAP_OK);
    CHECK(dap_dit_create(&m, &c, 0) == DAP_OK);
    randomise(m, 6);
    CHECK(model_parity("DiT-XL/2, l 8 cache 8", m, 1, 1, 8, 8, DAP_PRECISION_FP32));
    CHECK(model_parity("DiT-XL/2, l 8 cache 8", m, 1, 1, 8, 8, DAP_PRECISION_TF32));
    if (dap_cuda_bf16_supported()) CHECK(model_parity("DiT-XL/2, l 8 cache 8", m, 1, 1, 8, 8, DAP_PRECISION_BF16));
    dap_dit_destroy(m);
#endif
}

/* The device's errors before any work: activations over the free memory, the kernels'
 * index limit, and (on a GPU without it) bf16. */
DAP_TEST(cuda_dit_memory_errors) {
    NEED_GPU();
#ifdef DAP_CUDA
    dap_dit_config c;
    CHECK(dap_dit_config_by_name("DiT-S/2", &c) == DAP_OK);
    dap_dit *m = NULL;
    CHECK(dap_dit_create(&m, &c, 0) == DAP_OK);
    CHECK(dap_device_select("cuda") == DAP_OK);
    int bf = dap_device_set_precision("bf16");
    if (dap_cuda_bf16_supported()) CHECK(bf == DAP_OK);
    else CHECK(bf == DAP_ERR_ARG && strstr(dap_last_error(), "bf16") != NULL);
    CHECK(dap_device_set_precision("fp32") == DAP_OK);
    CHECK(dap_dit_to_device(m) == DAP_OK && m->dev != NULL);
    int batch[2] = {4, 100000}, cache[2] = {0, 12};
    CHECK(dap_dit_states_fit(m, 1, batch, cache, "--batch") == DAP_OK);
    CHECK(dap_dit_states_fit(m, 2, batch, cache, "--batch") == DAP_ERR_NOMEM);
    printf("    %s\n", dap_last_error());
    CHECK(strstr(dap_last_error(), "GiB") && strstr(dap_last_error(), "lower --batch"));
    dap_dit_cuda_state *s = NULL;
    CHECK(dap_dit_cuda_state_create(&s, m->dev, 1 << 16, 0) != DAP_OK && s == NULL);
    printf("    %s\n", dap_last_error());
    dap_dit_destroy(m);
    dap_device_select("cpu");
#endif
}

/* A CFG DDIM run (w = 4, 3 steps, eta 1) and a DAP guided distillation (eps from CFG,
 * features at block 2, the energy's gradient through the partial backward) on the
 * dit_small fixture: on the cpu and through dap_dit_to_device on the GPU. */
DAP_TEST(cuda_dit_sampling_end_to_end) {
    NEED_GPU();
#ifdef DAP_CUDA
    dap_dit *mc = NULL, *mg = NULL;
    const char *ref = dap_test_ref("dit_small.safetensors");
    CHECK(dap_dit_load(&mc, ref, 0, 1) == DAP_OK && dap_dit_load(&mg, ref, 0, 1) == DAP_OK);
    if (!mc || !mg) return;
    for (int f = 0; f < 2; f++) { /* tame eps so that samples stay inside [-1, 1] (test_distill.c) */
        const char *key = f ? "final_layer.linear.bias" : "final_layer.linear.weight";
        int i = dap_params_find(&mc->params, key);
        for (size_t q = 0; q < mc->params.p[i].numel; q++)
            dap_params_ptr(&mc->params, key)[q] *= 0.05f, dap_params_ptr(&mg->params, key)[q] *= 0.05f;
    }
    CHECK(dap_device_select("cuda") == DAP_OK);
    CHECK(dap_dit_to_device(mg) == DAP_OK && mg->dev != NULL);
    dap_device_select("cpu");
    const dap_dit_config *c = &mc->cfg;
    const int B = 3, S = 3;
    const size_t per = (size_t)c->in_channels * c->input_size * c->input_size;
    dap_schedule sched;
    dap_schedule_init_default(&sched);
    float *x[2];
    for (int dev = 0; dev < 2; dev++) {
        dap_dit *m = dev ? mg : mc;
        dap_dit_eps e;
        CHECK(dap_dit_eps_init(&e, m, B, 4.0) == DAP_OK);
        int labels[3] = {1, 2, 1};
        dap_dit_eps_set_labels(&e, labels, B);
        dap_rng rngs[3];
        x[dev] = dap_alloc_f32(B * per);
        for (int b = 0; b < B; b++) {
            dap_sample_rng(&rngs[b], 3, labels[b], b);
            dap_rng_normal(&rngs[b], x[dev] + b * per, per, 0.0f, 1.0f);
        }
        dap_ddim_hooks h = {.eps = dap_dit_eps_hook, .ctx = &e};
        CHECK(dap_ddim_sample(&sched, S, 1.0, x[dev], B, per, rngs, &h) == DAP_OK);
        dap_dit_eps_free(&e);
    }
    CHECK(cmp("CFG DDIM, 3 steps (fp32)", x[1], x[0], B * per, 3e-3, 3e-4) <= 1);
    dap_free_aligned(x[0]), dap_free_aligned(x[1]);
    dap_schedule_free(&sched);

    /* DAP: a guided trajectory, then the same with gamma 0 to show the guidance acted */
    dap_dataset ds;
    memset(&ds, 0, sizeof ds);
    const int K = c->num_classes, per_class = 12;
    ds.n = K * per_class, ds.c = c->in_channels, ds.h = ds.w = c->input_size, ds.num_classes = K;
    ds.class_names = dap_malloc(sizeof(char *) * (size_t)K);
    for (int k = 0; k < K; k++) ds.class_names[k] = dap_strdup("c");
    ds.x = dap_alloc_f32((size_t)ds.n * per);
    ds.y = dap_malloc(sizeof(int) * (size_t)ds.n);
    dap_rng r;
    dap_rng_init(&r, 9, 0);
    dap_rng_uniform(&r, ds.x, (size_t)ds.n * per, -1, 1);
    for (int i = 0; i < ds.n; i++) ds.y[i] = i % K;
    dap_dataset_index(&ds);
    dap_distill_opts o;
    dap_distill_opts_default(&o);
    o.method = DAP_METHOD_DAP, o.ipc = 4, o.steps = 4, o.n_real = 7, o.layer = 2, o.cfg = 2.0, o.gamma = 0.1;
    o.stop = 0, o.batch = 3; /* chunks of 3 and 1: set_batch on both devices */
    float *out[2], *plain = dap_alloc_f32(o.ipc * per);
    dap_distill_stats st[2];
    for (int dev = 0; dev < 2; dev++) {
        out[dev] = dap_alloc_f32(o.ipc * per);
        CHECK(dap_distill_class(dev ? mg : mc, &ds, 1, &o, out[dev], &st[dev]) == DAP_OK);
    }
    printf("    energy cpu %.6g -> %.6g, cuda %.6g -> %.6g\n", st[0].energy_first, st[0].energy_last,
           st[1].energy_first, st[1].energy_last);
    CHECK(fabs(st[1].energy_first - st[0].energy_first) <= 1e-3 * fabs(st[0].energy_first));
    CHECK(fabs(st[1].energy_last - st[0].energy_last) <= 1e-3 * fabs(st[0].energy_last));
    CHECK(cmp("DAP guided distillation, 4 steps (fp32)", out[1], out[0], o.ipc * per, 3e-3, 3e-4) <= 1);
    /* the tokens' mean as the features, with the RBF kernel (the energy's other device path) */
    o.pool = DAP_POOL_MEAN, o.kernel = DAP_KERNEL_RBF, o.sigma = 2.0;
    for (int dev = 0; dev < 2; dev++) CHECK(dap_distill_class(dev ? mg : mc, &ds, 1, &o, out[dev], &st[dev]) == DAP_OK);
    printf("    mean pooling, rbf: energy cpu %.6g -> %.6g, cuda %.6g -> %.6g\n", st[0].energy_first, st[0].energy_last,
           st[1].energy_first, st[1].energy_last);
    CHECK(fabs(st[1].energy_last - st[0].energy_last) <= 1e-3 * fabs(st[0].energy_last));
    CHECK(cmp("DAP, mean pooling, rbf (fp32)", out[1], out[0], o.ipc * per, 3e-3, 3e-4) <= 1);
    o.pool = DAP_POOL_FLATTEN, o.kernel = DAP_KERNEL_LINEAR;
    CHECK(dap_distill_class(mc, &ds, 1, &o, out[0], &st[0]) == DAP_OK); /* the flattened run again, for below */
    o.gamma = 0;
    CHECK(dap_distill_class(mg, &ds, 1, &o, plain, &st[1]) == DAP_OK);
    double moved = l2_rel(plain, out[0], o.ipc * per);
    printf("    guidance moved the images by %.3g (L2 rel), against the device's error above\n", moved);
    CHECK(moved > 1e-3);
    dap_free_aligned(out[0]), dap_free_aligned(out[1]), dap_free_aligned(plain);
    dap_dataset_free(&ds);
    dap_dit_destroy(mc);
    dap_dit_destroy(mg);
#endif
}

#ifdef DAP_CUDA
/* Two identical models with gradients (the small random config of cuda_dit_matches_cpu). */
static void train_pair(dap_dit **cpu, dap_dit **gpu) {
    dap_dit_config c = {.input_size = 8, .in_channels = 4, .patch = 2, .hidden = 64, .depth = 3, .heads = 4,
                        .num_classes = 10, .learn_sigma = 1, .mlp_ratio = 4.0f, .class_dropout = 0.1f};
    CHECK(dap_dit_create(cpu, &c, 1) == DAP_OK && dap_dit_create(gpu, &c, 1) == DAP_OK);
    randomise(*cpu, 11);
    randomise(*gpu, 11);
}

static dap_train_config train_cfg(void) {
    dap_train_config tc;
    dap_train_config_default(&tc);
    tc.batch = 6, tc.lr = 1e-3, tc.weight_decay = 0.01, tc.ema_decay = 0.9, tc.grad_clip = 1.1f, tc.seed = 3; /* the first steps clip, the later not */
    return tc;
}

/* A batch of 5 for the trainers' backward: 10 is the null class, 3 twice (the label
 * table's rows add) */
typedef struct tbatch {
    int n, y[5];
    float *x, *dout, *t, *out, *grad; /* grad: the device's gradients (the table's layout) */
} tbatch;

static tbatch tbatch_make(const dap_dit *m) {
    const dap_dit_config *c = &m->cfg;
    const size_t in = (size_t)c->in_channels * c->input_size * c->input_size;
    const size_t on = (size_t)m->out_channels * c->input_size * c->input_size;
    tbatch b = {.n = 5, .y = {0, 3, 10, 3, 9}};
    dap_rng r;
    dap_rng_init(&r, 21, 0);
    b.x = randn(&r, b.n * in, 1), b.dout = randn(&r, b.n * on, 0.1f);
    b.t = dap_alloc_f32(b.n), b.out = dap_alloc_f32(b.n * on), b.grad = dap_alloc_f32(m->params.total);
    for (int i = 0; i < b.n; i++) b.t[i] = (float)(i * 211 % 1000);
    return b;
}

static void tbatch_free(tbatch *b) {
    dap_free_aligned(b->x), dap_free_aligned(b->dout), dap_free_aligned(b->t), dap_free_aligned(b->out);
    dap_free_aligned(b->grad);
}

/* One backward of the batch: on the CPU (mc's grad) and in a device training state (its
 * gradients into b->grad) */
static void backward_pair(dap_dit *mc, dap_dit *mg, tbatch *b) {
    dap_dit_state *s = dap_dit_state_create(mc, b->n);
    dap_params_zero_grad(&mc->params);
    dap_dit_forward(mc, s, b->out, b->x, b->t, b->y, 0);
    dap_dit_backward(mc, s, b->dout, NULL);
    dap_dit_state_destroy(s);
    CHECK(dap_dit_train_begin(mg, mg->params.data, &(dap_adamw){0}) == DAP_OK);
    s = dap_dit_state_create_train(mg, b->n);
    CHECK(s != NULL);
    if (!s) return;
    printf("    device training state: %.2f MiB\n", (double)dap_dit_state_bytes(s) / 1048576.0);
    dap_dit_forward(mg, s, b->out, b->x, b->t, b->y, 0);
    dap_dit_backward(mg, s, b->dout, NULL);
    dap_dit_state_destroy(s);
    dap_dit_cuda_grad_download(mg->dev, b->grad);
}
#endif

/* The DiT trainer on the GPU (dap train --device cuda) against the CPU's: every tensor's
 * gradient of one backward (the training state's parameter path, each tensor by name),
 * then five trainer steps (losses, grad norms with clipping, weights, EMA, AdamW moments),
 * the EMA's validation loss (weights swapped on the device), and a save / resume on the
 * device continuing to the same bytes as an unbroken run. */
DAP_TEST(cuda_dit_train_matches_cpu) {
    NEED_GPU();
#ifdef DAP_CUDA
    dap_dit *mc = NULL, *mg = NULL;
    train_pair(&mc, &mg);
    if (!mc || !mg) return;
    const dap_dit_config *c = &mc->cfg;
    /* 1. one backward, tensor by tensor */
    CHECK(dap_device_select("cuda") == DAP_OK);
    CHECK(dap_dit_to_device(mg) == DAP_OK && mg->dev != NULL);
    dap_device_select("cpu");
    tbatch tb = tbatch_make(mc);
    float *gg = tb.grad;
    /* every tensor trainable (the frozen pos_embed aside), then DiffFit's set (the weights
     * frozen: their products skipped on the device, their gradients the CPU's zeros) */
    for (int difffit = 0; difffit < 2; difffit++) {
        if (difffit)
            for (int k = 0; k < mc->params.n; k++)
                if (!dap_train_difffit_key(mc->params.p[k].key)) mc->params.p[k].frozen = mg->params.p[k].frozen = 1;
        backward_pair(mc, mg, &tb);
        double worst = 0;
        int frozen = 0;
        for (int k = 0; k < mc->params.n; k++) {
            const dap_param *p = &mc->params.p[k];
            char label[160];
            snprintf(label, sizeof label, "%sgrad %s", difffit ? "difffit: " : "", p->key);
            frozen += p->frozen;
            worst = fmax(worst, 0.5 * cmp(label, gg + p->offset, mc->params.grad + p->offset, p->numel, 3e-3, 3e-4));
        }
        printf("    %s: %d of %d tensors frozen\n", difffit ? "difffit" : "all trainable", frozen, mc->params.n);
        CHECK(difffit ? frozen > 1 : frozen == 1);
        CHECK_MSG(worst <= 1, "a parameter gradient differs from the CPU's (worst %.3g of its tolerance)", worst);
    }
    tbatch_free(&tb);
    dap_dit_destroy(mc);
    dap_dit_destroy(mg);

    /* 2. five trainer steps from the same weights and data */
    train_pair(&mc, &mg);
    if (!mc || !mg) return;
    c = &mc->cfg; /* the first pair's config went with it */
    float *w0 = dap_alloc_f32(mc->params.total);
    memcpy(w0, mc->params.data, mc->params.total * sizeof(float));
    CHECK(dap_device_select("cuda") == DAP_OK);
    CHECK(dap_dit_to_device(mg) == DAP_OK);
    dap_device_select("cpu");
    dap_dataset ds, val;
    dap_test_model_set(&ds, mc, 4, 5, -1, 1, 0.3f, 0.05f);
    dap_test_model_set(&val, mc, 1, 6, -1, 1, 0.3f, 0.05f);
    dap_train_config tc = train_cfg();
    dap_trainer *tr[2] = {NULL, NULL};
    CHECK(dap_trainer_create(&tr[0], mc, &ds, &tc) == DAP_OK && dap_trainer_create(&tr[1], mg, &ds, &tc) == DAP_OK);
    if (!tr[0] || !tr[1]) return;
    const int steps = 5;
    int clipped = 0;
    for (int k = 0; k < steps; k++) {
        float nc = 0, ng = 0;
        double lc = dap_trainer_step(tr[0], &nc), lg = dap_trainer_step(tr[1], &ng);
        printf("    step %d: loss cpu %.7f cuda %.7f, |g| cpu %.6f cuda %.6f\n", k + 1, lc, lg, nc, ng);
        CHECK(fabs(lg - lc) <= 1e-3 * fabs(lc));
        CHECK(fabs(ng - nc) <= 1e-3 * fabs(nc));
        clipped += nc > tc.grad_clip;
    }
    CHECK_MSG(clipped > 0 && clipped < steps, "%d of %d steps clipped: the test should see both", clipped, steps);
    double vc = dap_trainer_val_loss(tr[0], &val, 1, 1), vg = dap_trainer_val_loss(tr[1], &val, 1, 1);
    double rc = dap_trainer_val_loss(tr[0], &val, 1, 0), rg = dap_trainer_val_loss(tr[1], &val, 1, 0);
    printf("    validation loss: EMA cpu %.7f cuda %.7f, raw cpu %.7f cuda %.7f\n", vc, vg, rc, rg);
    CHECK(fabs(vg - vc) <= 1e-3 * vc && fabs(rg - rc) <= 1e-3 * rc);
    CHECK(fabs(vc - rc) > 1e-6 * rc); /* the EMA is another model: the swap took effect */
    dap_params *pc = &mc->params;
    float *ema = dap_alloc_f32(pc->total), *m1 = dap_alloc_f32(pc->total), *v1 = dap_alloc_f32(pc->total);
    dap_adamw og = tr[1]->opt; /* the device trainer's step count and host arrays */
    og.m = m1, og.v = v1;
    dap_dit_train_sync(mg, ema, &og);
    /* the updates (w - w0): an element whose gradient is at rounding level may step either
     * way under AdamW, so the L2 bound decides */
    float *dc = dap_alloc_f32(pc->total), *dg = dap_alloc_f32(pc->total);
    for (size_t i = 0; i < pc->total; i++) dc[i] = pc->data[i] - w0[i], dg[i] = mg->params.data[i] - w0[i];
    CHECK(cmp("weights' change after 5 steps", dg, dc, pc->total, 1e9, 1e-2) <= 1);
    CHECK(cmp("EMA weights", ema, tr[0]->ema.data, pc->total, 1e9, 1e-4) <= 1);
    CHECK(cmp("AdamW first moment", m1, tr[0]->opt.m, pc->total, 1e9, 1e-2) <= 1);
    CHECK(cmp("AdamW second moment", v1, tr[0]->opt.v, pc->total, 1e9, 1e-2) <= 1);
    CHECK(tr[1]->opt.step == steps && tr[0]->opt.step == steps);

    /* 3. save at step 5, resume in a new device trainer, 3 more steps: the unbroken run's bytes */
    const char *ck = dap_test_path("cuda-train.safetensors");
    CHECK(dap_trainer_save(tr[1], ck) == DAP_OK);
    dap_dit *saved = NULL; /* PATH holds the EMA weights, the state the raw ones */
    CHECK(dap_dit_load(&saved, ck, 0, 0) == DAP_OK);
    if (saved) {
        CHECK_MSG(!memcmp(saved->params.data, ema, pc->total * sizeof(float)), "the checkpoint is not the EMA");
        dap_dit_destroy(saved);
    }
    dap_dit *mr = NULL;
    CHECK(dap_dit_create(&mr, c, 1) == DAP_OK);
    if (!mr) return;
    CHECK(dap_device_select("cuda") == DAP_OK);
    CHECK(dap_dit_to_device(mr) == DAP_OK);
    dap_device_select("cpu");
    dap_trainer *tres = NULL;
    CHECK(dap_trainer_create(&tres, mr, &ds, &tc) == DAP_OK && dap_trainer_resume(tres, ck) == DAP_OK);
    if (tres) {
        for (int k = 0; k < 3; k++) {
            double la = dap_trainer_step(tr[1], NULL), lb = dap_trainer_step(tres, NULL);
            CHECK_MSG(la == lb, "resumed step %d: loss %.9g vs %.9g unbroken", k + 1, lb, la);
        }
        dap_dit_train_sync(mg, NULL, &og);
        float *wr = dap_alloc_f32(pc->total);
        dap_adamw orr = tres->opt;
        orr.m = m1, orr.v = v1;
        memcpy(wr, mg->params.data, pc->total * sizeof(float));
        dap_dit_train_sync(mr, NULL, &orr);
        CHECK_MSG(!memcmp(wr, mr->params.data, pc->total * sizeof(float)), "resumed weights differ from the unbroken run's");
        dap_free_aligned(wr);
        dap_trainer_destroy(tres);
    }
    dap_free_aligned(w0), dap_free_aligned(ema), dap_free_aligned(m1), dap_free_aligned(v1);
    dap_free_aligned(dc), dap_free_aligned(dg);
    dap_trainer_destroy(tr[0]);
    dap_trainer_destroy(tr[1]);
    dap_dataset_free(&ds);
    dap_dataset_free(&val);
#endif
}

#ifdef DAP_CUDA
/* The training model's BF16 copy against a fresh BF16 inference model made from weights w:
 * the same outputs (pass: 1) */
static int bf16_copy_follows(const char *what, dap_dit *mg, const float *w, int n, const float *x, const float *t,
                             const int *y) {
    dap_dit *mi = NULL;
    dap_dit_cuda *di = NULL;
    CHECK(dap_dit_create(&mi, &mg->cfg, 0) == DAP_OK);
    if (!mi) return 0;
    memcpy(mi->params.data, w, mi->params.total * sizeof(float));
    CHECK(dap_dit_cuda_create(&di, mi, DAP_PRECISION_BF16) == DAP_OK);
    size_t on = (size_t)n * mg->out_channels * mg->cfg.input_size * mg->cfg.input_size;
    float *a = dap_alloc_f32(on), *b = dap_alloc_f32(on);
    device_out(mg->dev, n, a, x, t, y);
    if (di) device_out(di, n, b, x, t, y);
    double r = cmp(what, a, b, on, 1e-6, 1e-7);
    dap_free_aligned(a), dap_free_aligned(b);
    dap_dit_cuda_destroy(di);
    dap_dit_destroy(mi);
    return r <= 1;
}
#endif

/* Training under bf16: FP32 master weights, the BF16 copy the products read, BF16
 * activations. One backward against the CPU's gradients (BF16's tolerance); three trainer
 * steps against the CPU's losses; then the BF16 copy must follow AdamW and the EMA swap: a
 * fresh BF16 inference model made from the downloaded weights gives the same outputs. */
DAP_TEST(cuda_dit_train_bf16) {
    NEED_GPU();
#ifdef DAP_CUDA
    if (!dap_cuda_bf16_supported()) DAP_SKIP("this GPU has no bf16 arithmetic");
    dap_dit *mc = NULL, *mg = NULL;
    train_pair(&mc, &mg);
    if (!mc || !mg) return;
    CHECK(dap_device_select("cuda") == DAP_OK && dap_device_set_precision("bf16") == DAP_OK);
    CHECK(dap_dit_to_device(mg) == DAP_OK && mg->dev != NULL);
    dap_device_set_precision("fp32");
    dap_device_select("cpu");
    if (!mg->dev) return;
    const dap_params *pc = &mc->params;
    CHECK(dap_dit_cuda_weight_bytes(mg, DAP_PRECISION_BF16) == pc->total * 6);
    /* 1. one backward */
    tbatch tb = tbatch_make(mc);
    float *gg = tb.grad;
    const int n = tb.n;
    const float *x = tb.x, *t = tb.t;
    const int *y = tb.y;
    backward_pair(mc, mg, &tb);
    /* every gradient together, and each tensor's by itself (small tensors: a looser bound) */
    CHECK(cmp("bf16: all gradients", gg, pc->grad, pc->total, 1e9, 2e-2) <= 1);
    double worst = 0;
    for (int k = 0; k < pc->n; k++) {
        const dap_param *p = &pc->p[k];
        if (p->frozen) continue;
        double e = l2_rel(gg + p->offset, pc->grad + p->offset, p->numel);
        if (!(e <= worst)) worst = e; /* a NaN sticks */
    }
    printf("    bf16: the worst tensor's gradient L2 rel %.3g\n", worst);
    CHECK(worst < 0.1);
    /* 2. three trainer steps */
    dap_dataset ds;
    dap_test_model_set(&ds, mc, 4, 5, -1, 1, 0.3f, 0.05f);
    dap_train_config tc = train_cfg();
    dap_trainer *tr[2] = {NULL, NULL};
    CHECK(dap_trainer_create(&tr[0], mc, &ds, &tc) == DAP_OK && dap_trainer_create(&tr[1], mg, &ds, &tc) == DAP_OK);
    if (tr[0] && tr[1]) {
        for (int k = 0; k < 3; k++) {
            double lc = dap_trainer_step(tr[0], NULL), lg = dap_trainer_step(tr[1], NULL);
            printf("    bf16 step %d: loss cpu %.6f cuda %.6f\n", k + 1, lc, lg);
            CHECK(fabs(lg - lc) <= 2e-2 * fabs(lc));
        }
        /* 3. the BF16 copy after AdamW, then after the EMA swap (and back) */
        float *ema = dap_alloc_f32(pc->total), *m1 = dap_alloc_f32(pc->total), *v1 = dap_alloc_f32(pc->total);
        float *w3 = dap_alloc_f32(pc->total);
        dap_adamw og = tr[1]->opt;
        og.m = m1, og.v = v1;
        dap_dit_train_sync(mg, ema, &og);
        memcpy(w3, mg->params.data, pc->total * sizeof(float));
        CHECK(bf16_copy_follows("bf16 copy after 3 AdamW steps", mg, w3, n, x, t, y));
        dap_dit_cuda_swap_ema(mg->dev);
        CHECK(bf16_copy_follows("bf16 copy of the EMA (swapped)", mg, ema, n, x, t, y));
        dap_dit_cuda_swap_ema(mg->dev);
        CHECK(bf16_copy_follows("bf16 copy swapped back", mg, w3, n, x, t, y));
        dap_free_aligned(ema), dap_free_aligned(m1), dap_free_aligned(v1), dap_free_aligned(w3);
    }
    dap_trainer_destroy(tr[0]); /* a trainer owns its model (from dap_trainer_create on, failed or not) */
    dap_trainer_destroy(tr[1]);
    dap_dataset_free(&ds);
    tbatch_free(&tb);
#endif
}

/* The guidance's energy on device rows (energy_cuda.cu + dap_kernel_weights, what a
 * device backbone's guide runs) against dap_kernel_energy: both kernels, rows of a
 * pooled (D) and a flattened (T D) width. */
DAP_TEST(cuda_guidance_energy_matches_cpu) {
    NEED_GPU();
#ifdef DAP_CUDA
    const int ns = 3, nr = 7, widths[2] = {96, 49 * 64 + 5};
    for (int wi = 0; wi < 2; wi++)
        for (int kernel = 0; kernel < 2; kernel++) {
            const int f = widths[wi];
            const double sigma = kernel == DAP_KERNEL_RBF ? 0.5 * sqrt((double)f) : 0;
            dap_rng r;
            dap_rng_init(&r, 31 + wi, (uint64_t)kernel);
            float *s = randn(&r, (size_t)ns * f, 1), *rr = randn(&r, (size_t)nr * f, 1);
            float *ds_cpu = dap_alloc_f32((size_t)ns * f), *ds_gpu = dap_alloc_f32((size_t)ns * f);
            const double e_cpu = ns * dap_kernel_energy(ds_cpu, NULL, s, ns, rr, nr, f, kernel, sigma);
            float *sd = dap_cuda_buffer((size_t)ns * f), *rd = dap_cuda_buffer((size_t)nr * f);
            float *dsd = dap_cuda_buffer((size_t)ns * f);
            dap_cuda_copy(sd, s, (size_t)ns * f), dap_cuda_copy(rd, rr, (size_t)nr * f);
            double q[21], w[21], e_gpu = 0, *dqw = dap_cuda_buffer_f64(21);
            dap_cuda_pair_sq(q, dqw, sd, ns, rd, nr, f);
            for (int i = 0; i < ns; i++) e_gpu += dap_kernel_weights(w + i * nr, q + i * nr, (size_t)nr, kernel, sigma, 1.0 / nr);
            dap_cuda_energy_grad(dsd, w, dqw, sd, ns, rd, nr, f);
            dap_cuda_copy(ds_gpu, dsd, (size_t)ns * f);
            char label[96];
            snprintf(label, sizeof label, "energy gradient, %s kernel, %d wide", kernel ? "rbf" : "linear", f);
            printf("    energy cpu %.15g, cuda %.15g\n", e_cpu, e_gpu);
            CHECK(fabs(e_gpu - e_cpu) <= 1e-9 * fabs(e_cpu));
            CHECK(cmp(label, ds_gpu, ds_cpu, (size_t)ns * f, 1e-5, 1e-6) <= 1);
            dap_cuda_buffer_free(sd), dap_cuda_buffer_free(rd), dap_cuda_buffer_free(dsd), dap_cuda_buffer_free((float *)dqw);
            dap_free_aligned(s), dap_free_aligned(rr), dap_free_aligned(ds_cpu), dap_free_aligned(ds_gpu);
        }
#endif
}
