/*
 * test_minimax.c: the Minimax diffusion terms (src/diffusion/minimax.c): their values
 * against a plain re-computation from the paper's formulas (the representativeness term
 * on the real memory, the diversity term on the generated one, each over the number of
 * classes in the batch), their gradient w.r.t. the model output by central differences,
 * the FIFO memories, and the zero terms of a class seen for the first time.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "diffusion/minimax.h"
#include "models/dit.h"
#include "test.h"

enum { K = 3, M = 4, PER = 10, B = 6 };

static void fill(float *x, size_t n, uint64_t seed, uint64_t stream) {
    dap_rng r;
    dap_rng_init(&r, seed, stream);
    dap_rng_normal(&r, x, n, 0.0f, 1.0f);
}

/* Memories: class 0 full after an overflow, class 1 empty, class 2 with 2 rows. */
static void make_memories(dap_minimax *mm) {
    dap_minimax_init(mm, K, M, PER, 0.7, 1.3);
    float x0[PER], xh[PER];
    for (int r = 0; r < M + 2; r++) {
        fill(x0, PER, 1, 100 + r);
        fill(xh, PER, 1, 200 + r);
        const int y = 0;
        dap_minimax_push(mm, x0, xh, &y, 1);
    }
    for (int r = 0; r < 2; r++) {
        fill(x0, PER, 1, 300 + r);
        fill(xh, PER, 1, 400 + r);
        const int y = 2;
        dap_minimax_push(mm, x0, xh, &y, 1);
    }
}

static double ref_cos(const float *u, const float *v) {
    double uv = 0, uu = 0, vv = 0;
    for (int q = 0; q < PER; q++) uv += (double)u[q] * v[q], uu += (double)u[q] * u[q], vv += (double)v[q] * v[q];
    return uv / sqrt(uu * vv);
}

/* The paper's terms, written out: per class c in the batch with a non-empty memory,
 * lp/nc (1 - min cos(x_i, real)) and ln/nc max cos(x_i, gen). */
static void ref_terms(const dap_minimax *mm, const float *x, const int *y, int n, double *pos, double *neg) {
    int seen[K] = {0}, nc = 0;
    for (int b = 0; b < n; b++) nc += !seen[y[b]]++;
    *pos = *neg = 0;
    for (int c = 0; c < K; c++) {
        if (!seen[c] || !mm->n_gen[c]) continue;
        double mn = 2, mx = -2;
        for (int b = 0; b < n; b++) {
            if (y[b] != c) continue;
            for (int j = 0; j < mm->n_real[c]; j++)
                mn = fmin(mn, ref_cos(x + b * PER, mm->real + ((size_t)c * M + j) * PER));
            for (int j = 0; j < mm->n_gen[c]; j++)
                mx = fmax(mx, ref_cos(x + b * PER, mm->gen + ((size_t)c * M + j) * PER));
        }
        *pos += mm->lambda_pos / nc * (1 - mn);
        *neg += mm->lambda_neg / nc * mx;
    }
}

DAP_TEST(minimax_memories_fifo) {
    dap_minimax mm;
    make_memories(&mm);
    CHECK(mm.n_real[0] == M && mm.n_gen[0] == M && mm.n_real[1] == 0 && mm.n_real[2] == 2 && mm.n_gen[2] == 2);
    /* class 0 holds rows 2..5 of its pushes, oldest first */
    float want[PER];
    for (int j = 0; j < M; j++) {
        fill(want, PER, 1, 100 + 2 + j);
        CHECK_MSG(!memcmp(mm.real + (size_t)j * PER, want, sizeof want), "real row %d is not push %d", j, 2 + j);
        fill(want, PER, 1, 200 + 2 + j);
        CHECK_MSG(!memcmp(mm.gen + (size_t)j * PER, want, sizeof want), "gen row %d is not push %d", j, 2 + j);
    }
    /* a class with empty memories gives no term and no gradient */
    float x[2 * PER], d[2 * PER];
    fill(x, 2 * PER, 2, 0);
    const int y[2] = {1, 1};
    double pos, neg;
    dap_minimax_terms(&mm, x, y, 2, d, &pos, &neg);
    CHECK(pos == 0 && neg == 0);
    int zero = 1;
    for (int i = 0; i < 2 * PER; i++) zero &= d[i] == 0;
    CHECK(zero);
    dap_minimax_free(&mm);
}

DAP_TEST(minimax_terms_match_formula) {
    dap_minimax mm;
    make_memories(&mm);
    float x[B * PER];
    fill(x, B * PER, 3, 0);
    const int y[B] = {0, 2, 0, 1, 2, 0}; /* 3 classes present, class 1 without memories */
    double pos, neg, rp, rn;
    dap_minimax_terms(&mm, x, y, B, NULL, &pos, &neg);
    ref_terms(&mm, x, y, B, &rp, &rn);
    printf("  pos %.9f (formula %.9f), neg %.9f (formula %.9f)\n", pos, rp, neg, rn);
    CHECK(rp > 0 && rn != 0);
    CHECK_NEAR(pos, rp, 1e-12);
    CHECK_NEAR(neg, rn, 1e-12);
    /* two classes present: the weights are lambda / 2 */
    const int y2[B] = {0, 2, 0, 2, 2, 0};
    dap_minimax_terms(&mm, x, y2, B, NULL, &pos, &neg);
    ref_terms(&mm, x, y2, B, &rp, &rn);
    CHECK_NEAR(pos, rp, 1e-12);
    CHECK_NEAR(neg, rn, 1e-12);
    dap_minimax_free(&mm);
}

/* d(pos + neg)/d eps through x0_hat = (x_t - sb eps) / sa, by central differences. */
typedef struct fd_ctx {
    dap_minimax *mm;
    float *eps, *xt, *x0h, *dx0;
    double sa[B], sb[B];
    const int *y;
} fd_ctx;

enum { STRIDE = PER + 3 }; /* eps rows carry extra (learned-sigma) floats */

static double fd_loss(void *p) {
    fd_ctx *c = p;
    double pos, neg;
    return dap_minimax_eps_terms(c->mm, c->eps, STRIDE, c->xt, c->sa, c->sb, c->y, B, c->x0h, c->dx0, NULL, &pos, &neg);
}

DAP_TEST(minimax_gradient_fd) {
    dap_minimax mm;
    make_memories(&mm);
    fd_ctx c = {.mm = &mm};
    float eps[B * STRIDE], xt[B * PER], x0h[B * PER], dx0[B * PER], deps[B * STRIDE], base[B * STRIDE];
    fill(eps, B * STRIDE, 4, 0);
    fill(xt, B * PER, 5, 0);
    fill(base, B * STRIDE, 6, 0);
    const double ab[B] = {0.9, 0.5, 0.2, 0.7, 0.05, 0.99};
    for (int b = 0; b < B; b++) c.sa[b] = sqrt(ab[b]), c.sb[b] = sqrt(1 - ab[b]);
    const int y[B] = {0, 2, 0, 1, 2, 0};
    c.eps = eps, c.xt = xt, c.x0h = x0h, c.dx0 = dx0, c.y = y;
    /* the gradient is added to what deps holds */
    memcpy(deps, base, sizeof deps);
    double pos, neg;
    const double L = dap_minimax_eps_terms(&mm, eps, STRIDE, xt, c.sa, c.sb, y, B, x0h, dx0, deps, &pos, &neg);
    CHECK(L == pos + neg && L != 0);
    float an[B * STRIDE];
    int extra_untouched = 1;
    for (int i = 0; i < B * STRIDE; i++) {
        an[i] = deps[i] - base[i];
        if (i % STRIDE >= PER) extra_untouched &= deps[i] == base[i];
    }
    CHECK_MSG(extra_untouched, "the floats past the eps channels were changed");
    /* only the extreme pairs carry a gradient: some rows of each class stay zero */
    int nonzero_rows = 0;
    for (int b = 0; b < B; b++) {
        int nz = 0;
        for (int q = 0; q < PER; q++) nz |= an[b * STRIDE + q] != 0;
        nonzero_rows += nz;
    }
    CHECK_MSG(nonzero_rows >= 1 && nonzero_rows <= 4, "%d rows with a gradient (expected 1..4)", nonzero_rows);
    const double err = dap_test_gradcheck("minimax d/d eps", fd_loss, &c, eps, an, B * STRIDE, 0, 1e-3f);
    CHECK_MSG(err < 2e-3, "finite differences disagree: max rel err %g", err);
    dap_minimax_free(&mm);
}

/* DiffFit in the DiT's backward: frozen tensors get no gradient (their products skipped),
 * the trainable ones exactly the gradient they get when nothing is frozen. */
DAP_TEST(minimax_difffit_backward) {
    const dap_dit_config c = {.input_size = 8, .in_channels = 1, .patch = 2, .hidden = 32, .depth = 2, .heads = 2,
                              .num_classes = 3, .learn_sigma = 1, .mlp_ratio = 4.0f, .class_dropout = 0.1f};
    dap_dit *m = NULL;
    CHECK(dap_dit_create(&m, &c, 1) == DAP_OK);
    dap_dit_init(m, 3);
    dap_params *ps = &m->params;
    float *noise = dap_alloc_f32(ps->total), *g_all = dap_alloc_f32(ps->total);
    fill(noise, ps->total, 9, 0);
    for (size_t i = 0; i < ps->total; i++) ps->data[i] += 0.05f * noise[i];
    enum { N = 3 };
    const size_t per = 64, po = 128;
    float x[N * 64], dout[N * 128], t[N] = {5, 400, 900};
    const int y[N] = {0, 2, 3};
    fill(x, N * per, 10, 0);
    fill(dout, N * po, 11, 0);
    dap_dit_state *st = dap_dit_state_create(m, N);
    dap_dit_forward(m, st, NULL, x, t, y, 0);
    dap_params_zero_grad(ps);
    dap_dit_backward(m, st, dout, NULL);
    memcpy(g_all, ps->grad, ps->total * sizeof(float));
    int nfrozen = 0;
    for (int k = 0; k < ps->n; k++)
        if (!strstr(ps->p[k].key, "bias") && !strstr(ps->p[k].key, "y_embed")) ps->p[k].frozen = 1, nfrozen++;
    for (size_t i = 0; i < ps->total; i++) ps->grad[i] = 0.0f;
    dap_dit_backward(m, st, dout, NULL);
    int bad_frozen = 0, bad_train = 0, nonzero = 0;
    for (int k = 0; k < ps->n; k++) {
        const dap_param *p = &ps->p[k];
        for (size_t i = 0; i < p->numel; i++) {
            const float g = ps->grad[p->offset + i], want = g_all[p->offset + i];
            if (p->frozen) bad_frozen += g != 0.0f;
            else bad_train += g != want, nonzero += g != 0.0f;
        }
    }
    CHECK(nfrozen > 10);
    CHECK_MSG(bad_frozen == 0, "%d gradients of frozen tensors are not zero", bad_frozen);
    CHECK_MSG(bad_train == 0, "%d gradients of trainable tensors differ from the unfrozen backward", bad_train);
    CHECK(nonzero > 100);
    dap_dit_state_destroy(st);
    dap_free_aligned(noise);
    dap_free_aligned(g_all);
    dap_dit_destroy(m);
}
