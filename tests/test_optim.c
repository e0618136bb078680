/*
 * test_optim.c: AdamW, SGD, EMA and clipping against PyTorch values
 * (tests/ref/optim_ref.h, from tests/gen/gen_optim.py), frozen params left alone, and
 * an optimizer-state save/load round trip that resumes bit-exactly.
 */
#include <string.h>

#include "core/core.h"
#include "core/optim.h"
#include "io/io.h"
#include "test.h"

#include "ref/optim_ref.h"

/* The fixture's table: "w" (3, 4) decayed, "b" (4) no_decay, "pos" (2, 3) frozen. */
static void make_params(dap_params *ps) {
    dap_params_init(ps);
    dap_params_add4(ps, "w", 3, 4, 0, 0);
    int b = dap_params_add4(ps, "b", 4, 0, 0, 0);
    int pos = dap_params_add4(ps, "pos", 2, 3, 0, 0);
    ps->p[b].no_decay = 1;
    ps->p[pos].frozen = 1;
    dap_params_alloc(ps, 1);
    DAP_ASSERT(ps->total == 22);
    memcpy(ps->data, optim_ref_init, sizeof optim_ref_init);
}

/* The fixture's grads, with garbage in the frozen tensor's grad (must be ignored). */
static void set_grads(dap_params *ps, int step) {
    memcpy(ps->grad, optim_ref_grads[step], 22 * sizeof(float));
    float *gpos = dap_params_grad(ps, "pos");
    for (int i = 0; i < 6; i++) gpos[i] = 100.0f + (float)i;
}

DAP_TEST(optim_adamw_matches_torch) {
    dap_params ps;
    make_params(&ps);
    dap_adamw o;
    dap_adamw_init(&o, &ps, 0.9, 0.999, 1e-8, 0.1);
    double worst = 0.0;
    for (int s = 0; s < OPTIM_REF_STEPS; s++) {
        set_grads(&ps, s);
        dap_adamw_step(&o, &ps, 0.05);
        char label[64];
        snprintf(label, sizeof label, "adamw step %d", s + 1);
        double r = dap_test_compare(label, ps.data, optim_ref_adamw[s], 22, 1e-3);
        if (r > worst) worst = r;
    }
    CHECK_MSG(worst < 1e-5, "adamw vs torch: max rel %g", worst);
    CHECK(o.step == OPTIM_REF_STEPS);
    CHECK(memcmp(dap_params_ptr(&ps, "pos"), optim_ref_init + 16, 6 * sizeof(float)) == 0);
    dap_adamw_free(&o);
    dap_params_free(&ps);
}

DAP_TEST(optim_sgd_matches_torch) {
    dap_params ps;
    make_params(&ps);
    dap_sgd o;
    dap_sgd_init(&o, &ps, 0.9, 0.05);
    double worst = 0.0;
    for (int s = 0; s < OPTIM_REF_STEPS; s++) {
        set_grads(&ps, s);
        dap_sgd_step(&o, &ps, 0.1);
        char label[64];
        snprintf(label, sizeof label, "sgd step %d", s + 1);
        double r = dap_test_compare(label, ps.data, optim_ref_sgd[s], 22, 1e-3);
        if (r > worst) worst = r;
    }
    CHECK_MSG(worst < 1e-5, "sgd vs torch: max rel %g", worst);
    CHECK(memcmp(dap_params_ptr(&ps, "pos"), optim_ref_init + 16, 6 * sizeof(float)) == 0);
    dap_sgd_free(&o);
    dap_params_free(&ps);
}

DAP_TEST(optim_sgd_decay_all_and_no_momentum) {
    /* momentum 0, decay_all: p -= lr (g + wd p) on every non-frozen tensor. */
    dap_params ps;
    make_params(&ps);
    dap_sgd o;
    dap_sgd_init(&o, &ps, 0.0, 0.5);
    o.decay_all = 1;
    CHECK(o.buf == NULL);
    set_grads(&ps, 0);
    dap_sgd_step(&o, &ps, 0.1);
    double worst = 0.0;
    for (int i = 0; i < 16; i++) {
        double want = optim_ref_init[i] - 0.1 * (optim_ref_grad0[i] + 0.5 * optim_ref_init[i]);
        double e = fabs(ps.data[i] - want);
        if (e > worst) worst = e;
    }
    printf("  sgd decay_all: max abs %g\n", worst);
    CHECK_MSG(worst < 1e-6, "max abs %g", worst);
    CHECK(memcmp(dap_params_ptr(&ps, "pos"), optim_ref_init + 16, 6 * sizeof(float)) == 0);
    dap_sgd_free(&o);
    dap_params_free(&ps);
}

DAP_TEST(optim_clip_grad_norm) {
    dap_params ps;
    make_params(&ps);
    set_grads(&ps, 0);
    float norm = dap_clip_grad_norm(&ps, 0.5f);
    printf("  norm %.7g (torch %.7g)\n", norm, optim_ref_clip_norm);
    CHECK_NEAR(norm, optim_ref_clip_norm, 1e-5 * optim_ref_clip_norm);
    CHECK(dap_test_compare("clipped grads", ps.grad, optim_ref_clipped, 16, 1e-3) < 1e-5);
    CHECK(dap_params_grad(&ps, "pos")[0] == 100.0f); /* frozen grad untouched */
    CHECK_NEAR(dap_grad_norm(&ps), 0.5, 1e-5);
    /* Below the threshold (or max_norm <= 0) nothing changes. */
    float before[22];
    memcpy(before, ps.grad, sizeof before);
    dap_clip_grad_norm(&ps, 10.0f);
    dap_clip_grad_norm(&ps, 0.0f);
    CHECK(memcmp(before, ps.grad, sizeof before) == 0);
    dap_params_free(&ps);
}

DAP_TEST(optim_ema_matches_torch) {
    dap_params ps, ema;
    make_params(&ps);
    make_params(&ema);
    float flat[22];
    memcpy(flat, optim_ref_init, sizeof flat);
    dap_adamw o;
    dap_adamw_init(&o, &ps, 0.9, 0.999, 1e-8, 0.1);
    for (int s = 0; s < OPTIM_REF_STEPS; s++) {
        set_grads(&ps, s);
        dap_adamw_step(&o, &ps, 0.05);
        dap_ema_update(&ema, &ps, 0.9);
        dap_ema_update_f32(flat, &ps, 0.9);
    }
    CHECK(dap_test_compare("ema", ema.data, optim_ref_ema, 22, 1e-3) < 1e-5);
    CHECK(memcmp(flat, ema.data, sizeof flat) == 0);
    dap_adamw_free(&o);
    dap_params_free(&ema);
    dap_params_free(&ps);
}

DAP_TEST(optim_state_roundtrip_resumes_exactly) {
    /* Run 3 steps straight; and 1 step, save, load into a fresh optimizer, 2 more. */
    dap_params a, b;
    make_params(&a);
    make_params(&b);
    dap_adamw oa, ob;
    dap_adamw_init(&oa, &a, 0.9, 0.999, 1e-8, 0.1);
    dap_adamw_init(&ob, &b, 0.9, 0.999, 1e-8, 0.1);
    for (int s = 0; s < OPTIM_REF_STEPS; s++) {
        set_grads(&a, s);
        dap_adamw_step(&oa, &a, 0.05);
    }
    set_grads(&b, 0);
    dap_adamw_step(&ob, &b, 0.05);
    char path[512];
    snprintf(path, sizeof path, "%s/optim_state.safetensors", dap_test_tmpdir());
    CHECK(dap_adamw_save(&ob, &b, path) == DAP_OK);
    dap_adamw_free(&ob);
    dap_adamw_init(&ob, &b, 0.9, 0.999, 1e-8, 0.1);
    int rc = dap_adamw_load(&ob, &b, path);
    CHECK_MSG(rc == DAP_OK, "load: %s", dap_last_error());
    CHECK(ob.step == 1);
    for (int s = 1; s < OPTIM_REF_STEPS; s++) {
        set_grads(&b, s);
        dap_adamw_step(&ob, &b, 0.05);
    }
    CHECK(memcmp(a.data, b.data, 22 * sizeof(float)) == 0);
    CHECK(memcmp(oa.m, ob.m, 22 * sizeof(float)) == 0 && memcmp(oa.v, ob.v, 22 * sizeof(float)) == 0);

    /* A state file missing a key is rejected with its name; so is a table mismatch. */
    dap_params c;
    dap_params_init(&c);
    dap_params_add4(&c, "w", 3, 4, 0, 0);
    dap_params_add4(&c, "extra", 5, 0, 0, 0);
    dap_params_alloc(&c, 1);
    dap_adamw oc;
    dap_adamw_init(&oc, &c, 0.9, 0.999, 1e-8, 0.1);
    rc = dap_adamw_load(&oc, &c, path);
    CHECK(rc == DAP_ERR_MISSING);
    CHECK_MSG(strstr(dap_last_error(), "exp_avg.extra") != NULL, "message: %s", dap_last_error());
    dap_adamw_free(&oc);
    dap_params_free(&c);

    /* SGD state round trip under a prefix inside a shared file. */
    dap_sgd sa, sb;
    dap_sgd_init(&sa, &a, 0.9, 0.05);
    dap_sgd_init(&sb, &a, 0.9, 0.05);
    set_grads(&a, 0);
    dap_sgd_step(&sa, &a, 0.1);
    dap_st_writer *w = dap_st_writer_create();
    dap_sgd_write(&sa, &a, w, "opt.");
    dap_adamw_write(&oa, &a, w, "adam.");
    snprintf(path, sizeof path, "%s/optim_sgd.safetensors", dap_test_tmpdir());
    CHECK(dap_st_writer_save(w, path) == DAP_OK);
    dap_st_writer_destroy(w);
    dap_st *st = NULL;
    CHECK(dap_st_open(&st, path) == DAP_OK);
    if (st) {
        CHECK(dap_sgd_read(&sb, &a, st, "opt.") == DAP_OK);
        CHECK(sb.step == 1 && memcmp(sa.buf, sb.buf, 22 * sizeof(float)) == 0);
        CHECK(dap_sgd_read(&sb, &a, st, "nope.") == DAP_ERR_MISSING);
        dap_st_close(st);
    }
    dap_sgd_free(&sa);
    dap_sgd_free(&sb);
    dap_adamw_free(&oa);
    dap_adamw_free(&ob);
    dap_params_free(&a);
    dap_params_free(&b);
}
