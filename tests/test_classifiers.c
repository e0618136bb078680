/*
 * test_classifiers.c: the evaluation classifiers against PyTorch (fixtures from
 * tests/gen/classifier_ref.py): train-mode logits, every parameter gradient, the input
 * gradient, BatchNorm running statistics after the step and eval-mode logits, for
 * ConvNet-3, ResNetAP-10 and ResNet-18 on 1x28x28 and 3x32x32 inputs (and the 7x7 +
 * max-pool stem at 64 px). Plus checkpoint round trip, features and argument errors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "eval/classifier.h"
#include "io/io.h"
#include "models/convnet.h"
#include "ops/ops.h"
#include "models/resnet.h"
#include "test.h"

#define TOL 2e-4 /* error relative to the largest |value| of each tensor */
#define SCALE_FLOOR 1e-3
/* A conv bias right before a norm has an exactly zero gradient: the reference holds
 * float64 noise, ours float32 noise. Such a bias is judged on the scale of its weight's
 * gradient (the same sums over the same upstream gradient). */

static float *read_ref(const dap_st *st, const char *name, size_t expect) {
    const dap_st_tensor *t = dap_st_find(st, name);
    if (!t) {
        dap_test_fail(__FILE__, __LINE__, "fixture %s: no tensor %s", st->path, name);
        return NULL;
    }
    if (expect && t->numel != expect) {
        dap_test_fail(__FILE__, __LINE__, "fixture %s: %s has %zu values, expected %zu", st->path, name,
                      t->numel, expect);
        return NULL;
    }
    float *x = dap_alloc_f32(t->numel);
    CHECK(dap_st_read_f32(st, name, x, NULL, 0) == DAP_OK);
    return x;
}

/* Max |got - want| over max |want|, printed; fails above TOL. */
static void compare(const char *label, const float *got, const float *want, size_t n) {
    double scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    double rel = dap_test_compare(label, got, want, n, fmax(scale, SCALE_FLOOR));
    CHECK_MSG(rel <= TOL, "%s: error %.3g relative to the largest value (tol %g)", label, rel, TOL);
}

static void run_case(const char *name, dap_cnn *m) {
    char file[96];
    snprintf(file, sizeof file, "classifier_%s.safetensors", name);
    const char *path = dap_test_ref(file);
    printf("  %s (%s, %zu params)\n", name, m->arch, m->params.total);
    static const char *const ignore[] = {"ref.", NULL};
    int rc = dap_params_load(&m->params, path, ignore, 0);
    CHECK_MSG(rc == DAP_OK, "%s: %s", path, dap_last_error());
    dap_st *st = NULL;
    rc = dap_st_open(&st, path);
    CHECK_MSG(rc == DAP_OK, "%s: %s", path, dap_last_error());
    if (rc) return;
    const dap_st_tensor *tx = dap_st_find(st, "ref.x");
    CHECK(tx != NULL);
    int n = (int)tx->shape[0], k = m->num_classes, in = dap_cnn_in_size(m);
    float *x = read_ref(st, "ref.x", (size_t)n * in), *r = read_ref(st, "ref.r", (size_t)n * k);
    float *logits = read_ref(st, "ref.logits", (size_t)n * k), *dx_ref = read_ref(st, "ref.dx", (size_t)n * in);
    float *eval_logits = read_ref(st, "ref.eval_logits", (size_t)n * k);
    if (x && r && logits && dx_ref && eval_logits) {
        dap_cnn_state s;
        dap_cnn_state_init(&s, m, n + 1, 1); /* capacity above n: partial batches work */
        float *dx = dap_alloc_f32((size_t)n * in);
        dap_params_zero_grad(&m->params);
        compare("logits (train mode)", dap_cnn_forward(m, &s, x, n, 1), logits, (size_t)n * k);
        dap_cnn_backward(m, &s, x, r, dx, 1);
        compare("d x", dx, dx_ref, (size_t)n * in);
        double worst = 0;
        const char *worst_key = "";
        for (int i = 0; i < m->params.n; i++) {
            const dap_param *p = &m->params.p[i];
            char key[200];
            snprintf(key, sizeof key, "ref.%s.%s", p->frozen ? "after" : "grad", p->key);
            float *want = read_ref(st, key, p->numel);
            if (!want) continue;
            const float *got = (p->frozen ? m->params.data : m->params.grad) + p->offset;
            double scale = 0, err = 0;
            for (size_t j = 0; j < p->numel; j++) scale = fmax(scale, fabs(want[j]));
            size_t kl = strlen(p->key);
            if (!p->frozen && kl > 5 && !strcmp(p->key + kl - 5, ".bias") && scale < 1e-9) {
                char wkey[200];
                snprintf(wkey, sizeof wkey, "ref.grad.%.*s.weight", (int)(kl - 5), p->key);
                const dap_st_tensor *tw = dap_st_find(st, wkey);
                float *ww = tw ? read_ref(st, wkey, 0) : NULL;
                for (size_t j = 0; ww && j < tw->numel; j++) scale = fmax(scale, fabs(ww[j]));
                dap_free_aligned(ww);
            }
            for (size_t j = 0; j < p->numel; j++) err = fmax(err, fabs(got[j] - want[j]) / fmax(scale, SCALE_FLOOR));
            if (!(err <= worst)) worst = err, worst_key = p->key;
            CHECK_MSG(err <= TOL, "%s: %s error %.3g (tol %g)", name, key, err, TOL);
            dap_free_aligned(want);
        }
        printf("    %-40s max rel %.3g (%s)\n", "param grads / running stats", worst, worst_key);
        compare("logits (eval mode)", dap_cnn_forward(m, &s, x, n, 0), eval_logits, (size_t)n * k);
        dap_free_aligned(dx);
        dap_cnn_state_free(&s);
    }
    dap_free_aligned(x), dap_free_aligned(r), dap_free_aligned(logits), dap_free_aligned(dx_ref);
    dap_free_aligned(eval_logits);
    dap_st_close(st);
    dap_cnn_free(m);
}

DAP_TEST(classifier_convnet_parity) {
    dap_cnn m;
    CHECK(dap_convnet_create(&m, 3, 8, DAP_NORM_INSTANCE, 1, 28, 28, 10) == DAP_OK);
    CHECK(m.layers[m.feat].c * m.layers[m.feat].h * m.layers[m.feat].w == 8 * 4 * 4);
    run_case("convnet3_in_28", &m);
    CHECK(dap_convnet_create(&m, 3, 8, DAP_NORM_INSTANCE, 3, 32, 32, 10) == DAP_OK);
    run_case("convnet3_in_32", &m);
    CHECK(dap_convnet_create(&m, 3, 8, DAP_NORM_BATCH, 1, 28, 28, 10) == DAP_OK);
    run_case("convnet3_bn_28", &m);
    CHECK(dap_convnet_create(&m, 3, 8, DAP_NORM_NONE, 3, 32, 32, 10) == DAP_OK);
    run_case("convnet3_nn_32", &m);
}

DAP_TEST(classifier_resnetap10_parity) {
    dap_cnn m;
    CHECK(dap_resnetap10_create(&m, 4, DAP_NORM_INSTANCE, 1, 28, 28, 10) == DAP_OK);
    run_case("resnetap10_in_28", &m);
    CHECK(dap_resnetap10_create(&m, 4, DAP_NORM_INSTANCE, 3, 32, 32, 10) == DAP_OK);
    run_case("resnetap10_in_32", &m);
    CHECK(dap_resnetap10_create(&m, 4, DAP_NORM_BATCH, 3, 32, 32, 10) == DAP_OK);
    run_case("resnetap10_bn_32", &m);
}

DAP_TEST(classifier_resnet18_parity) {
    dap_cnn m;
    CHECK(dap_resnet18_create(&m, 4, DAP_NORM_BATCH, -1, 1, 28, 28, 10) == DAP_OK);
    run_case("resnet18_bn_28", &m);
    CHECK(dap_resnet18_create(&m, 4, DAP_NORM_BATCH, -1, 3, 32, 32, 10) == DAP_OK);
    run_case("resnet18_bn_32", &m);
    CHECK(dap_resnet18_create(&m, 4, DAP_NORM_INSTANCE, -1, 3, 32, 32, 10) == DAP_OK);
    run_case("resnet18_in_32", &m);
    CHECK(dap_resnet18_create(&m, 4, DAP_NORM_BATCH, 1, 3, 64, 64, 10) == DAP_OK);
    run_case("resnet18_bn_large_64", &m);
}

/* The same fixtures with every 3x3 stride-1 convolution through Winograd F(2x2, 3x3)
 * (by default only those between layers of 16+ channels take it, which the fixtures'
 * narrow models have none of). */
DAP_TEST(classifier_parity_winograd) {
    int old = dap_conv2d_set_winograd(2);
    dap_cnn m;
    CHECK(dap_convnet_create(&m, 3, 8, DAP_NORM_INSTANCE, 1, 28, 28, 10) == DAP_OK);
    run_case("convnet3_in_28", &m);
    CHECK(dap_convnet_create(&m, 3, 8, DAP_NORM_BATCH, 1, 28, 28, 10) == DAP_OK);
    run_case("convnet3_bn_28", &m);
    CHECK(dap_resnetap10_create(&m, 4, DAP_NORM_INSTANCE, 3, 32, 32, 10) == DAP_OK);
    run_case("resnetap10_in_32", &m);
    CHECK(dap_resnet18_create(&m, 4, DAP_NORM_BATCH, -1, 1, 28, 28, 10) == DAP_OK);
    run_case("resnet18_bn_28", &m);
    CHECK(dap_resnet18_create(&m, 4, DAP_NORM_BATCH, 1, 3, 64, 64, 10) == DAP_OK);
    run_case("resnet18_bn_large_64", &m);
    dap_conv2d_set_winograd(old);
}

/* Full-size architectures: parameter counts of the PyTorch modules. */
DAP_TEST(classifier_full_size_shapes) {
    dap_classifier c;
    struct { const char *arch; int ch, size; size_t params; int feat; } cases[] = {
        /* ConvNet-3 on 1x28: 1152+128 + 2*(147456+128) + 3*256 norms + 2048*10+10 */
        {"convnet3", 1, 28, 1280 + 2 * 147584 + 3 * 256 + 20490, 2048},
        {"convnet3", 3, 32, 3584 + 2 * 147584 + 3 * 256 + 20490, 2048},
        {"resnet18", 3, 32, 11173962 + 9600, 512}, /* torchvision count (small stem) + BN running stats */
        {"resnetap10", 1, 28, 0, 512},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(dap_classifier_create(&c, cases[i].arch, cases[i].ch, cases[i].size, cases[i].size, 10) == DAP_OK);
        printf("    %-12s %dx%d: %zu floats, feature dim %d\n", cases[i].arch, cases[i].size, cases[i].size,
               c.net.params.total, dap_classifier_feature_dim(&c));
        if (cases[i].params) CHECK_NEAR((double)c.net.params.total, (double)cases[i].params, 0);
        CHECK(dap_classifier_feature_dim(&c) == cases[i].feat);
        dap_classifier_free(&c);
    }
    CHECK(dap_classifier_create(&c, "convnet", 3, 224, 224, 10) == DAP_OK);
    CHECK(!strcmp(c.net.arch, "convnet6"));
    dap_classifier_free(&c);
    CHECK(dap_classifier_create(&c, "resnet7", 1, 28, 28, 10) == DAP_ERR_ARG);
    CHECK(strstr(dap_last_error(), "resnet7") != NULL);
    CHECK(dap_classifier_create(&c, "convnet3-xx", 1, 28, 28, 10) == DAP_ERR_ARG);
    CHECK(dap_classifier_create(&c, "convnet6", 1, 28, 28, 10) == DAP_ERR_SHAPE);
}

/* Save, load, same logits and features; features are the head's input. */
DAP_TEST(classifier_checkpoint_features) {
    dap_classifier a, b;
    CHECK(dap_classifier_create(&a, "convnet3-bn", 1, 28, 28, 10) == DAP_OK);
    dap_classifier_init_weights(&a, 7);
    for (int k = 0; k < 3; k++) a.mean[k] = 0.2861f, a.std[k] = 0.353f;
    int n = 5, in = 28 * 28;
    float *x = dap_alloc_f32((size_t)n * in);
    dap_rng r;
    dap_rng_init(&r, 1, 0);
    dap_rng_uniform(&r, x, (size_t)n * in, -1, 1);
    char path[512];
    snprintf(path, sizeof path, "%s/cls.safetensors", dap_test_tmpdir());
    const char *meta[] = {"dap.test_accuracy", "12.5", NULL};
    CHECK(dap_classifier_save(&a, path, meta) == DAP_OK);
    CHECK_MSG(dap_classifier_load(&b, path) == DAP_OK, "%s", dap_last_error());
    CHECK(!strcmp(b.net.arch, "convnet3-bn") && b.net.params.total == a.net.params.total);
    CHECK_NEAR(b.mean[0], 0.2861, 1e-7);
    float la[50], lb[50];
    dap_classifier_logits(&a, x, n, la);
    dap_classifier_logits(&b, x, n, lb);
    compare("logits after reload", lb, la, 50);
    int d = dap_classifier_feature_dim(&b);
    float *f = dap_alloc_f32((size_t)n * d), lf[50];
    dap_classifier_features(&b, x, n, f);
    const float *w = dap_params_ptr(&b.net.params, "classifier.weight");
    const float *bias = dap_params_ptr(&b.net.params, "classifier.bias");
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 10; j++) {
            double s = bias[j];
            for (int t = 0; t < d; t++) s += (double)f[(size_t)i * d + t] * w[(size_t)j * d + t];
            lf[i * 10 + j] = (float)s;
        }
    compare("head(features) vs logits", lf, la, 50);
    dap_free_aligned(f);
    dap_classifier_free(&b);
    /* not a classifier checkpoint */
    snprintf(path, sizeof path, "%s/plain.safetensors", dap_test_tmpdir());
    CHECK(dap_params_save(&a.net.params, path, 0, NULL) == DAP_OK);
    CHECK(dap_classifier_load(&b, path) == DAP_ERR_FORMAT);
    CHECK(strstr(dap_last_error(), "plain.safetensors") != NULL);
    dap_classifier_free(&a);
    dap_free_aligned(x);
}

/* Shared gradient buffers: a backward with them gives the parameter and input gradients
 * of one buffer a layer bit for bit, in a few buffers (ResNetAP-10 and ResNet-18, train
 * and eval mode). */
static void grads_of(dap_cnn *m, const float *w0, const float *x, const float *dl, int n, int train, float *grad,
                     float *dx, int *buffers) {
    memcpy(m->params.data, w0, m->params.total * sizeof(float));
    dap_cnn_state st;
    dap_cnn_state_init(&st, m, n, 1);
    dap_cnn_forward(m, &st, x, n, train);
    dap_params_zero_grad(&m->params);
    dap_cnn_backward(m, &st, x, dl, dx, train);
    memcpy(grad, m->params.grad, m->params.total * sizeof(float));
    *buffers = st.ndpool;
    dap_cnn_state_free(&st);
}

DAP_TEST(classifier_shared_grad_buffers) {
    const char *archs[] = {"resnetap10", "resnet18"};
    for (int a = 0; a < 2; a++) {
        dap_classifier c;
        CHECK(dap_classifier_create(&c, archs[a], 3, 16, 16, 5) == DAP_OK);
        dap_cnn *m = &c.net;
        dap_cnn_init_weights(m, 3);
        const int n = 4, in = dap_cnn_in_size(m);
        const size_t np = m->params.total;
        float *w0 = dap_alloc_f32(np), *x = dap_alloc_f32((size_t)n * in), *dl = dap_alloc_f32((size_t)n * 5);
        float *g1 = dap_alloc_f32(np), *g0 = dap_alloc_f32(np);
        float *dx1 = dap_alloc_f32((size_t)n * in), *dx0 = dap_alloc_f32((size_t)n * in);
        memcpy(w0, m->params.data, np * sizeof(float));
        dap_rng r;
        dap_rng_init(&r, 8, 0);
        dap_rng_normal(&r, x, (size_t)n * in, 0.0f, 1.0f);
        dap_rng_normal(&r, dl, (size_t)n * 5, 0.0f, 0.1f);
        for (int train = 0; train < 2; train++) {
            int shared, own;
            grads_of(m, w0, x, dl, n, train, g1, dx1, &shared);
            const int old = dap_cnn_set_grad_sharing(0);
            grads_of(m, w0, x, dl, n, train, g0, dx0, &own);
            dap_cnn_set_grad_sharing(old);
            printf("    %s train=%d: %d gradient buffers shared, %d one a layer\n", archs[a], train, shared, own);
            CHECK(own == m->nlayers && shared <= 4);
            CHECK_MSG(!memcmp(g1, g0, np * sizeof(float)) && !memcmp(dx1, dx0, (size_t)n * in * sizeof(float)),
                      "%s: shared gradient buffers change the gradients", archs[a]);
        }
        dap_free_aligned(w0), dap_free_aligned(x), dap_free_aligned(dl), dap_free_aligned(g1), dap_free_aligned(g0);
        dap_free_aligned(dx1), dap_free_aligned(dx0);
        dap_classifier_free(&c);
    }
}
