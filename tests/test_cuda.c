/*
 * test_cuda.c: the device choice, and the CUDA classifier backend against the CPU ops.
 * The parity test needs a build made with `make CUDA=1` and a GPU; elsewhere it is
 * counted as skipped (SKIP with the reason) and checks only that asking for the device
 * fails with a reason.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/device.h"
#include "data/dataset.h"
#include "eval/augment.h"
#include "eval/classifier.h"
#include "eval/fit.h"
#include "models/convnet.h"
#include "models/resnet.h"
#include "test.h"
#ifdef DAP_CUDA
#include "cuda/cuda.h"
#endif

DAP_TEST(device_select_errors) {
    CHECK(dap_device() == DAP_DEVICE_CPU);
    CHECK(dap_device_select("tpu") == DAP_ERR_ARG);
    CHECK(strstr(dap_last_error(), "tpu") != NULL);
    CHECK(dap_device() == DAP_DEVICE_CPU);
    CHECK(dap_device_select("cpu") == DAP_OK && !strcmp(dap_device_name(), "cpu"));
    int rc = dap_device_select("cuda");
    if (!dap_device_cuda_built()) {
        CHECK(rc == DAP_ERR_MISSING);
        CHECK(strstr(dap_last_error(), "make CUDA=1") != NULL);
        CHECK(dap_device() == DAP_DEVICE_CPU);
    } else if (rc) {
        CHECK(rc == DAP_ERR_MISSING && strstr(dap_last_error(), "device cuda") != NULL);
        CHECK(dap_device() == DAP_DEVICE_CPU);
    } else {
        CHECK(dap_device() == DAP_DEVICE_CUDA && !strcmp(dap_device_name(), "cuda"));
    }
    dap_device_select("cpu");
}

/* |got - want| / max(|want|, 1e-2 max|want|): relative to the tensor's own scale. */
static double rel_err(const float *got, const float *want, size_t n) {
    double top = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)want[i]) > top) top = fabs((double)want[i]);
    double floor_ = top > 0 ? 1e-2 * top : 1e-12;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)got[i] - (double)want[i]) / fmax(fabs((double)want[i]), floor_);
        if (!(r <= worst)) worst = r; /* NaN propagates */
    }
    return worst;
}

/* ||got - want|| / ||want|| */
static double l2_err(const float *got, const float *want, size_t n) {
    double d = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)got[i] - (double)want[i];
        d += e * e, w += (double)want[i] * want[i];
    }
    return w > 0 ? sqrt(d / w) : sqrt(d);
}

typedef struct pass_out {
    float *logits, *feat, *grad, *dx, *params; /* params: after the pass (running stats) */
} pass_out;

/* One training forward + backward (train = 1), then an eval-mode forward + backward,
 * on the device chosen now; the model's weights are restored from `w0` first. */
static void run_pass(dap_cnn *m, const float *w0, const float *x, const float *dl, int n, int cap,
                     pass_out *o) {
    size_t np = m->params.total, in = (size_t)dap_cnn_in_size(m), k = (size_t)m->num_classes;
    size_t fd = (size_t)dap_cnn_feat_dim(m);
    memcpy(m->params.data, w0, np * sizeof(float));
    o->logits = dap_alloc_f32(2 * n * k), o->feat = dap_alloc_f32(n * fd);
    o->grad = dap_alloc_f32(2 * np), o->dx = dap_alloc_f32(2 * n * in), o->params = dap_alloc_f32(np);
    for (int train = 1; train >= 0; train--) {
        dap_cnn_state s;
        if (!train) /* the eval pass from the original running statistics too */
            memcpy(m->params.data, w0, np * sizeof(float));
        dap_cnn_state_init(&s, m, cap, 1);
        const float *lg = dap_cnn_forward(m, &s, x, n, train);
        memcpy(o->logits + (1 - train) * n * k, lg, n * k * sizeof(float));
        if (train) {
            memcpy(o->feat, dap_cnn_features(m, &s), n * fd * sizeof(float));
            memcpy(o->params, m->params.data, np * sizeof(float));
        }
        dap_params_zero_grad(&m->params);
        for (size_t i = 0; i < np; i++) m->params.grad[i] = 0.25f; /* gradients accumulate */
        dap_cnn_backward(m, &s, x, dl, o->dx + (1 - train) * n * in, train);
        memcpy(o->grad + (1 - train) * np, m->params.grad, np * sizeof(float));
        dap_cnn_state_free(&s);
    }
}

static void pass_free(pass_out *o) {
    dap_free_aligned(o->logits), dap_free_aligned(o->feat), dap_free_aligned(o->grad);
    dap_free_aligned(o->dx), dap_free_aligned(o->params);
}

#ifdef DAP_CUDA
static const char *layer_name(const dap_cnn *m, int i) {
    static const char *ops[] = {"conv", "norm", "avgpool", "maxpool", "gap", "linear", "add"};
    const dap_cnn_layer *l = &m->layers[i];
    return l->w_id >= 0 ? m->params.p[l->w_id].key : ops[l->op];
}

/* Layer by layer: where the device's outputs and gradients leave the CPU's. */
static void diagnose(dap_cnn *m, const float *w0, const float *x, const float *dl, int n, int cap) {
    size_t np = m->params.total, in = (size_t)dap_cnn_in_size(m);
    float *dx = dap_alloc_f32((size_t)n * in);
    const int share = dap_cnn_set_grad_sharing(0); /* every layer's gradient kept to compare */
    for (int train = 1; train >= 0; train--) {
        dap_cnn_state st[2]; /* cpu, cuda: kept alive to compare every layer */
        for (int dev = 0; dev < 2; dev++) {
            dap_device_select(dev ? "cuda" : "cpu");
            memcpy(m->params.data, w0, np * sizeof(float));
            dap_cnn_state_init(&st[dev], m, cap, 1);
            dap_cnn_forward(m, &st[dev], x, n, train);
            dap_params_zero_grad(&m->params);
            dap_cnn_backward(m, &st[dev], x, dl, dx, train);
        }
        dap_device_select("cpu");
        const dap_cnn_state *sc = &st[0], *sg = &st[1];
        int shown = 0;
        for (int i = m->nlayers - 1; i >= 0; i--) {
            const dap_cnn_layer *l = &m->layers[i];
            size_t sz = (size_t)n * l->c * l->h * l->w;
            float *buf = dap_alloc_f32(sz);
            dap_cnn_cuda_fetch(sg->dev, i, 0, buf, sz);
            double eo = rel_err(buf, sc->out[i], sz);
            dap_cnn_cuda_fetch(sg->dev, i, 1, buf, sz);
            double eg = rel_err(buf, sc->dout[i], sz);
            double top = 0;
            for (size_t j = 0; j < sz; j++) top = fmax(top, fabs((double)sc->dout[i][j]));
            if (shown < 4 || eg > 1e-4 || eo > 1e-4)
                printf("      train=%d layer %2d %-28s src %2d/%2d relu %d  out err %.2g  grad err %.2g (max|grad| %.3g)\n",
                       train, i, layer_name(m, i), l->src, l->src2, l->relu, eo, eg, top), shown++;
            dap_free_aligned(buf);
        }
        dap_cnn_state_free(&st[0]);
        dap_cnn_state_free(&st[1]);
    }
    dap_cnn_set_grad_sharing(share);
    dap_free_aligned(dx);
}
#endif

/* loose = 1: the backward is checked in the L2 norm only (a model where float rounding
 * can flip a ReLU whose input sits at zero, after which one element's gradient differs
 * by its whole size: the ImageNet stem's 1x1 and 2x2 feature maps at batch 5). */
static void check_model(const char *label, dap_cnn *m, int loose) {
    int n = 5, cap = 8;
    size_t np = m->params.total, in = (size_t)dap_cnn_in_size(m), k = (size_t)m->num_classes;
    dap_cnn_init_weights(m, 7);
    dap_rng r;
    dap_rng_init(&r, 11, 0);
    /* non-trivial norm affine and running statistics */
    for (int i = 0; i < m->params.n; i++) {
        const dap_param *p = &m->params.p[i];
        const char *key = p->key;
        float *v = m->params.data + p->offset;
        if (strstr(key, "running_var")) dap_rng_uniform(&r, v, p->numel, 0.5f, 1.5f);
        else if (strstr(key, "running_mean")) dap_rng_uniform(&r, v, p->numel, -0.2f, 0.2f);
        else if (p->ndim == 1) dap_rng_uniform(&r, v, p->numel, 0.5f, 1.5f);
    }
    float *w0 = dap_alloc_f32(np), *x = dap_alloc_f32(n * in), *dl = dap_alloc_f32(n * k);
    memcpy(w0, m->params.data, np * sizeof(float));
    dap_rng_normal(&r, x, n * in, 0.0f, 1.0f);
    dap_rng_normal(&r, dl, n * k, 0.0f, 0.1f);
    pass_out cpu, gpu;
    dap_device_select("cpu");
    run_pass(m, w0, x, dl, n, cap, &cpu);
    CHECK(dap_device_select("cuda") == DAP_OK);
    run_pass(m, w0, x, dl, n, cap, &gpu);
    dap_device_select("cpu");
    size_t fd = (size_t)dap_cnn_feat_dim(m);
    double e_logit = rel_err(gpu.logits, cpu.logits, 2 * n * k);
    double e_feat = rel_err(gpu.feat, cpu.feat, n * fd);
    double e_dx = fmax(rel_err(gpu.dx, cpu.dx, n * in), rel_err(gpu.dx + n * in, cpu.dx + n * in, n * in));
    double e_run = rel_err(gpu.params, cpu.params, np);
    double e_grad = 0, l_grad = 0;
    double l_dx = fmax(l2_err(gpu.dx, cpu.dx, n * in), l2_err(gpu.dx + n * in, cpu.dx + n * in, n * in));
    const char *worst = "-";
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < m->params.n; i++) {
            const dap_param *p = &m->params.p[i];
            const float *g = gpu.grad + t * np + p->offset, *c = cpu.grad + t * np + p->offset;
            double e = rel_err(g, c, p->numel), l = l2_err(g, c, p->numel);
            if (!(e <= e_grad)) e_grad = e, worst = p->key;
            if (!(l <= l_grad)) l_grad = l;
        }
    printf("    %-22s rel err: logits %.2g, features %.2g, dx %.2g, params after %.2g, grads %.2g (%s); "
           "L2: dx %.2g, grads %.2g\n", label, e_logit, e_feat, e_dx, e_run, e_grad, worst, l_dx, l_grad);
    CHECK_MSG(e_logit < 1e-3 && e_feat < 1e-3 && e_run < 1e-4, "%s: forward differs", label);
    int ok = loose ? l_dx < 5e-2 && l_grad < 5e-2 : e_dx < 2e-3 && e_grad < 2e-3;
    CHECK_MSG(ok, "%s: backward differs (worst %s)", label, worst);
#ifdef DAP_CUDA
    if (!ok) diagnose(m, w0, x, dl, n, cap);
#endif
    pass_free(&cpu), pass_free(&gpu);
    dap_free_aligned(w0), dap_free_aligned(x), dap_free_aligned(dl);
}

DAP_TEST(cuda_cnn_matches_cpu) {
    if (!dap_device_cuda_built() || dap_device_select("cuda") != DAP_OK) {
        CHECK(dap_device() == DAP_DEVICE_CPU);
        DAP_SKIP("%s", dap_device_cuda_built() ? dap_last_error() : "a build without CUDA (make CUDA=1)");
    }
    printf("    %s\n", dap_device_describe());
    dap_device_select("cpu");
    const char *archs[] = {"convnet3", "convnet3-bn", "convnet3-nn", "resnetap10", "resnet18"};
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
        dap_classifier c;
        CHECK(dap_classifier_create(&c, archs[a], 1, 28, 28, 10) == DAP_OK);
        check_model(archs[a], &c.net, 0);
        dap_classifier_free(&c);
    }
    dap_cnn big; /* the ImageNet stem: 7x7 stride-2 conv and a padded 3x3 max pool */
    CHECK(dap_resnet18_create(&big, 16, DAP_NORM_BATCH, 1, 3, 32, 32, 10) == DAP_OK);
    check_model("resnet18 large stem", &big, 1);
    dap_cnn_free(&big);
}

/* ---- batches assembled on the device ---------------------------------------------------- */

#ifdef DAP_CUDA
/* One plan's batch on both sides: the host gathers and applies, the device gathers from its
 * copy of the set and applies; returns the largest absolute difference. */
static double aug_both(dap_cuda_images *set, const float *x, const int *idx, const dap_aug_plan *p, float *host,
                       float *dev, float *back) {
    size_t img = (size_t)p->c * p->h * p->w;
    for (int i = 0; i < p->n; i++) memcpy(host + i * img, x + (size_t)idx[i] * img, img * sizeof(float));
    dap_aug_apply(p, host);
    dap_cuda_aug_apply(set, idx, p, dev, NULL);
    dap_cuda_copy(back, dev, (size_t)p->n * img);
    double worst = 0;
    for (size_t j = 0; j < (size_t)p->n * img; j++) {
        double e = fabs((double)back[j] - host[j]);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}
#endif

/* Every augmentation stage and the fit loop's pipelines on a GPU against the host (the same
 * plan, so the same random draws): 1 and 3 channels, odd non-square sizes, repeated
 * indices, a batch below the plan's room; and the teacher's renormalisation copy. */
DAP_TEST(cuda_augment_matches_cpu) {
    if (!dap_device_cuda_built() || dap_device_select("cuda") != DAP_OK) {
        CHECK(dap_device() == DAP_DEVICE_CPU);
        DAP_SKIP("%s", dap_device_cuda_built() ? dap_last_error() : "a build without CUDA (make CUDA=1)");
    }
#ifdef DAP_CUDA
    enum { NSET = 10, H = 13, W = 11, NMAX = 8 };
    const int idx[7] = {3, 0, 9, 3, 7, 1, 5};
    const float na[3] = {1.5f, 0.8f, 2.0f}, nb[3] = {0.1f, -0.2f, 0.3f};
    const char *names[] = {"dsa colour", "dsa crop", "dsa cutout", "dsa flip", "dsa scale", "dsa rotate",
                           "imagenet (jitter, crop 0.5-1, cutmix)", "rrc 0.08-1", "jitter on [0, 1]"};
    double worst_all = 0;
    for (int c = 1; c <= 3; c += 2) {
        size_t img = (size_t)c * H * W;
        float *x = dap_alloc_f32(NSET * img), *host = dap_alloc_f32(NMAX * img), *back = dap_alloc_f32(NMAX * img);
        dap_rng r;
        dap_rng_init(&r, 8, 1);
        dap_rng_uniform(&r, x, NSET * img, -1.0f, 1.0f);
        dap_cuda_images *set = NULL;
        CHECK_MSG(dap_cuda_images_create(&set, x, NSET, c, H, W, NMAX) == DAP_OK, "%s", dap_last_error());
        float *dev = dap_cuda_buffer(NMAX * img);
        dap_aug_plan plan;
        dap_aug_plan_init(&plan, NMAX, c, H, W);
        for (int k = 0; k < 9; k++) {
            double worst = 0;
            for (int seed = 0; seed < 3; seed++) {
                dap_rng ra;
                dap_rng_init(&ra, 100 * k + seed, 2);
                dap_aug_plan_reset(&plan, 7 - seed % 2);
                if (k < DAP_DSA_NOPS) {
                    dap_aug_plan_scale_shift(&plan, na, nb);
                    dap_aug_plan_dsa_op(&plan, k, &ra);
                } else if (k == 6) {
                    dap_aug_plan_jitter(&plan, 0.4f, 1, &ra);
                    dap_aug_plan_resized_crop_flip(&plan, 0.5f, 1.0f, &ra);
                    dap_aug_plan_scale_shift(&plan, na, nb);
                    float lam = 1.0f;
                    for (int t = 0; t < 10 && lam == 1.0f; t++) lam = dap_aug_plan_cutmix(&plan, &ra);
                    CHECK(lam < 1.0f);
                } else if (k == 7) {
                    dap_aug_plan_resized_crop_flip(&plan, 0.08f, 1.0f, &ra);
                } else {
                    dap_aug_plan_scale_shift(&plan, (const float[3]){0.5f, 0.5f, 0.5f}, (const float[3]){0.5f, 0.5f, 0.5f});
                    dap_aug_plan_jitter(&plan, 0.4f, 0, &ra);
                }
                double e = aug_both(set, x, idx, &plan, host, dev, back);
                if (!(e <= worst)) worst = e;
            }
            printf("    %d channel%s  %-40s max abs err %.2g\n", c, c > 1 ? "s" : " ", names[k], worst);
            CHECK_MSG(worst < 1e-4, "%d channels, %s: the device's batch differs", c, names[k]);
            if (!(worst <= worst_all)) worst_all = worst;
        }
        /* the teacher's copy: dst = a src + b per channel */
        dap_cuda_copy(dev, x, NMAX * img);
        dap_cuda_scale_shift(dev, dev, NMAX, c, (size_t)H * W, na, nb, NULL);
        dap_cuda_copy(back, dev, NMAX * img);
        double e = 0;
        for (size_t j = 0; j < NMAX * img; j++) {
            size_t k = (j / (H * W)) % c;
            e = fmax(e, fabs((double)back[j] - (na[k] * x[j] + nb[k])));
        }
        CHECK_MSG(e < 1e-5, "%d channels: the renormalisation differs by %.2g", c, e);
        dap_aug_plan_free(&plan);
        dap_cuda_buffer_free(dev);
        dap_cuda_images_destroy(set);
        dap_free_aligned(x), dap_free_aligned(host), dap_free_aligned(back);
    }
    printf("    largest difference over every stage: %.2g\n", worst_all);
    dap_device_select("cpu");
#endif
}

/* ---- resident training ----------------------------------------------------------------- */

/* One training run of m from the weights of `seed` on `device`; its final weights and
 * buffers into w (m->params.total floats). resident "0": the per-step copies; "1": the
 * weights and the batches on the device; "1h": the weights there, the batches from the host. */
static int fit_on(const char *device, const char *resident, dap_classifier *m, const dap_dataset *train,
                  const dap_fit_config *cfg, uint64_t seed, float *w) {
    CHECK(dap_device_select(device) == DAP_OK);
    /* resident "1h": resident, the batches assembled on the host */
    setenv("DAP_CUDA_RESIDENT", resident[0] == '1' ? "1" : "0", 1);
    setenv("DAP_CUDA_AUG", resident[1] == 'h' ? "0" : "1", 1);
    dap_classifier_init_weights(m, seed);
    dap_params_zero_grad(&m->net.params);
    int rc = dap_classifier_train(m, train, cfg, NULL);
    memcpy(w, m->net.params.data, m->net.params.total * sizeof(float));
    unsetenv("DAP_CUDA_RESIDENT"), unsetenv("DAP_CUDA_AUG");
    dap_device_select("cpu");
    return rc;
}

static int grad_untouched(const dap_params *ps) {
    for (size_t i = 0; i < ps->total; i++)
        if (ps->grad[i] != 0.0f) return 0;
    return 1;
}

/* The weights, gradient and optimiser on the GPU for the whole run end where the CPU's
 * run and the GPU's per-step-copy run end (ConvNet-3 with BatchNorm, its running
 * statistics included): SGD with DSA across the rate decay and the optimiser's restart at
 * the half, and AdamW on soft labels from a teacher with random-resized crops and cutmix.
 * Batches assembled on the device (the set uploaded once, augmented there) end where the
 * host's batches do. A resident run leaves the host's gradient untouched (the copy path fills it), and a run
 * stopped and resumed on the GPU (its state file made from the synced weights and
 * momentum) ends where the uninterrupted one does. */
DAP_TEST(cuda_fit_resident_matches_cpu) {
    if (!dap_device_cuda_built() || dap_device_select("cuda") != DAP_OK) {
        CHECK(dap_device() == DAP_DEVICE_CPU);
        DAP_SKIP("%s", dap_device_cuda_built() ? dap_last_error() : "a build without CUDA (make CUDA=1)");
    }
    dap_device_select("cpu");
    dap_dataset train;
    dap_test_toy_set(&train, 12, 1); /* 48 images */
    dap_classifier m, teacher;
    memset(&m, 0, sizeof m), memset(&teacher, 0, sizeof teacher);
    CHECK(dap_convnet_create(&m.net, 3, 16, DAP_NORM_BATCH, 1, 8, 8, 4) == DAP_OK);
    CHECK(dap_convnet_create(&teacher.net, 2, 8, DAP_NORM_INSTANCE, 1, 8, 8, 4) == DAP_OK);
    dap_classifier_set_normalization(&m, &train, 0);
    teacher.mean[0] = 0.1f, teacher.std[0] = 0.7f;
    dap_classifier_init_weights(&teacher, 3);
    size_t np = m.net.params.total;
    float *cpu = dap_alloc_f32(np), *res = dap_alloc_f32(np), *copy = dap_alloc_f32(np), *again = dap_alloc_f32(np);
    float *hres = dap_alloc_f32(np);
    for (int soft = 0; soft < 2; soft++) {
        const char *label = soft ? "adamw, soft labels" : "sgd, dsa";
        dap_fit_config cfg;
        if (soft) {
            dap_fit_config_soft(&cfg, &teacher, 4);
            cfg.batch = 16;
        } else {
            dap_fit_config_hard(&cfg, 6, DAP_AUG_DSA);
            cfg.batch = 20;
        }
        cfg.seed = 5;
        CHECK(fit_on("cpu", "1", &m, &train, &cfg, 7, cpu) == DAP_OK);
        CHECK(fit_on("cuda", "0", &m, &train, &cfg, 7, copy) == DAP_OK);
        CHECK_MSG(!grad_untouched(&m.net.params), "%s: the per-step-copy run left no gradient on the host", label);
        CHECK(fit_on("cuda", "1h", &m, &train, &cfg, 7, hres) == DAP_OK);
        CHECK(fit_on("cuda", "1", &m, &train, &cfg, 7, res) == DAP_OK);
        CHECK_MSG(grad_untouched(&m.net.params), "%s: the resident run wrote the host's gradient", label);
        double e_cpu = l2_err(res, cpu, np), e_copy = l2_err(hres, copy, np), e_aug = l2_err(res, hres, np);
        double e_start = 0;
        float *w0 = dap_alloc_f32(np);
        dap_classifier_init_weights(&m, 7);
        memcpy(w0, m.net.params.data, np * sizeof(float));
        e_start = l2_err(w0, cpu, np);
        dap_free_aligned(w0);
        /* stopped after 2 epochs, resumed from a state file into other weights */
        char path[600];
        snprintf(path, sizeof path, "%s", dap_test_path(soft ? "resident-soft.state" : "resident-hard.state"));
        cfg.state_path = path, cfg.state_key = "resident", cfg.state_resume = 1, cfg.state_every = 1e9;
        cfg.stop_after = 2;
        CHECK(fit_on("cuda", "1", &m, &train, &cfg, 7, again) == DAP_FIT_STOPPED);
        cfg.stop_after = 0;
        CHECK(fit_on("cuda", "1", &m, &train, &cfg, 99, again) == DAP_OK);
        double e_resume = l2_err(again, res, np);
        remove(path);
        printf("    %-20s L2 rel err of the final weights: resident vs cpu %.2g, resident (host batches) vs "
               "per-step copies %.2g, device vs host batches %.2g, resumed vs whole %.2g (training moved them %.2g)\n",
               label, e_cpu, e_copy, e_aug, e_resume, e_start);
        CHECK_MSG(e_start > 1e-2, "%s: training hardly moved the weights", label);
        CHECK_MSG(e_cpu < 1e-3 && e_copy < 1e-4 && e_aug < 1e-3, "%s: resident training differs", label);
        CHECK_MSG(e_resume < 1e-5, "%s: the resumed resident run differs", label);
    }
    dap_free_aligned(cpu), dap_free_aligned(res), dap_free_aligned(copy), dap_free_aligned(again);
    dap_free_aligned(hres);
    dap_classifier_free(&m), dap_classifier_free(&teacher);
    dap_dataset_free(&train);
}
