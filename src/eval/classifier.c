/*
 * classifier.c: architecture names, input normalisation, batched eval-mode passes,
 * accuracy and checkpoints of the evaluation classifiers.
 */
#include "eval/classifier.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"
#include "models/convnet.h"
#include "models/resnet.h"

#define EVAL_BATCH 256

static int convnet_auto_depth(int h, int w) {
    int s = h < w ? h : w;
    if (s == 28) s = 32;
    int d = (int)lround(log2((double)s / 4.0));
    return d < 1 ? 1 : d;
}

int dap_classifier_create(dap_classifier *m, const char *arch, int c, int h, int w,
                          int num_classes) {
    memset(m, 0, sizeof *m);
    for (int k = 0; k < 3; k++) m->mean[k] = 0.5f, m->std[k] = 0.5f;
    char base[32];
    snprintf(base, sizeof base, "%s", arch);
    int norm = -1;
    char *dash = strrchr(base, '-');
    if (dash) {
        if (!strcmp(dash, "-bn")) norm = DAP_NORM_BATCH;
        else if (!strcmp(dash, "-in")) norm = DAP_NORM_INSTANCE;
        else if (!strcmp(dash, "-nn")) norm = DAP_NORM_NONE;
        else
            return dap_error(DAP_ERR_ARG, "architecture '%s': unknown suffix '%s' (expected -bn, -in or -nn)",
                             arch, dash);
        *dash = 0;
    }
    if (!strncmp(base, "convnet", 7)) {
        const char *d = base + 7;
        int depth = *d ? atoi(d) : convnet_auto_depth(h, w);
        if (*d && (depth < 1 || depth > 8 || strspn(d, "0123456789") != strlen(d)))
            return dap_error(DAP_ERR_ARG, "architecture '%s': expected convnetD with D in 1..8", arch);
        return dap_convnet_create(&m->net, depth, 128, norm < 0 ? DAP_NORM_INSTANCE : norm, c, h, w,
                                  num_classes);
    }
    if (!strcmp(base, "resnetap10"))
        return dap_resnetap10_create(&m->net, 64, norm < 0 ? DAP_NORM_INSTANCE : norm, c, h, w,
                                     num_classes);
    if (!strcmp(base, "resnet18"))
        return dap_resnet18_create(&m->net, 64, norm < 0 ? DAP_NORM_BATCH : norm, -1, c, h, w,
                                   num_classes);
    return dap_error(DAP_ERR_ARG,
                     "unknown architecture '%s' (expected convnet3, convnetD, resnetap10, resnet18, "
                     "optionally with -bn/-in/-nn)",
                     arch);
}

void dap_classifier_free(dap_classifier *m) {
    dap_cnn_free(&m->net);
    memset(m, 0, sizeof *m);
}

void dap_classifier_init_weights(dap_classifier *m, uint64_t seed) {
    dap_cnn_init_weights(&m->net, seed);
}

void dap_classifier_set_normalization(dap_classifier *m, const dap_dataset *real, int fmnist) {
    if (fmnist) {
        for (int k = 0; k < 3; k++) m->mean[k] = 0.2861f, m->std[k] = 0.3530f;
        return;
    }
    DAP_ASSERT(real && real->c == m->net.in_c && real->c <= 3);
    size_t hw = (size_t)real->h * real->w;
    for (int k = 0; k < real->c; k++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < real->n; i++) {
            const float *p = real->x + ((size_t)i * real->c + k) * hw;
            for (size_t j = 0; j < hw; j++) {
                double v = 0.5 * (p[j] + 1.0);
                s += v, s2 += v * v;
            }
        }
        double cnt = (double)real->n * (double)hw, mu = s / cnt;
        double var = s2 / cnt - mu * mu;
        m->mean[k] = (float)mu;
        m->std[k] = (float)sqrt(var > 1e-12 ? var : 1e-12);
    }
}

void dap_classifier_norm_coeffs(const dap_classifier *m, float *a, float *b) {
    for (int k = 0; k < m->net.in_c; k++) a[k] = 0.5f / m->std[k], b[k] = (0.5f - m->mean[k]) / m->std[k];
}

void dap_classifier_normalize(const dap_classifier *m, float *dst, const float *x, int n) {
    int c = m->net.in_c;
    size_t hw = (size_t)m->net.in_h * m->net.in_w;
    float ca[3], cb[3];
    dap_classifier_norm_coeffs(m, ca, cb);
#pragma omp parallel for schedule(static)
    for (long plane = 0; plane < (long)n * c; plane++) {
        int k = (int)(plane % c);
        float a = ca[k], b = cb[k];
        const float *s = x + (size_t)plane * hw;
        float *d = dst + (size_t)plane * hw;
        for (size_t j = 0; j < hw; j++) d[j] = a * s[j] + b;
    }
}

/* Runs the eval-mode network over n images in batches; copies out the logits or, when
 * `features`, the penultimate activations. */
static void eval_pass(dap_classifier *m, const float *x, int n, float *dst, int features) {
    int in = dap_cnn_in_size(&m->net), bs = n < EVAL_BATCH ? n : EVAL_BATCH;
    int width = features ? dap_cnn_feat_dim(&m->net) : m->net.num_classes;
    dap_cnn_state st;
    dap_cnn_state_init(&st, &m->net, bs, 0);
    dap_cnn_state_keep_weights(&st, &m->net, NULL, NULL); /* a GPU: the weights go up once */
    float *xb = dap_alloc_f32((size_t)bs * in);
    for (int i = 0; i < n; i += bs) {
        int b = n - i < bs ? n - i : bs;
        dap_classifier_normalize(m, xb, x + (size_t)i * in, b);
        const float *out = dap_cnn_forward(&m->net, &st, xb, b, 0);
        if (features) out = dap_cnn_features(&m->net, &st);
        memcpy(dst + (size_t)i * width, out, (size_t)b * width * sizeof(float));
    }
    dap_free_aligned(xb);
    dap_cnn_state_free(&st);
}

void dap_classifier_logits(dap_classifier *m, const float *x, int n, float *logits) {
    if (n > 0) eval_pass(m, x, n, logits, 0);
}

void dap_classifier_features(dap_classifier *m, const float *x, int n, float *feat) {
    if (n > 0) eval_pass(m, x, n, feat, 1);
}

int dap_classifier_check_data(const dap_classifier *m, const dap_dataset *data, const char *path, const char *spec) {
    const dap_cnn *n = &m->net;
    if (n->in_c == data->c && n->in_h == data->h && n->in_w == data->w && n->num_classes == data->num_classes)
        return DAP_OK;
    return dap_error(DAP_ERR_SHAPE,
                     "--classifier %s takes %dx%dx%d images (C x H x W) into %d classes; the data %s has %dx%dx%d "
                     "images in %d classes",
                     path, n->in_c, n->in_h, n->in_w, n->num_classes, spec, data->c, data->h, data->w, data->num_classes);
}

int dap_classifier_feature_dim(const dap_classifier *m) { return dap_cnn_feat_dim(&m->net); }

double dap_classifier_accuracy(dap_classifier *m, const dap_dataset *ds) {
    DAP_ASSERT(ds->c == m->net.in_c && ds->h == m->net.in_h && ds->w == m->net.in_w);
    if (ds->n == 0) return 0.0;
    int k = m->net.num_classes;
    float *logits = dap_alloc_f32((size_t)ds->n * k);
    dap_classifier_logits(m, ds->x, ds->n, logits);
    long correct = 0;
    for (int i = 0; i < ds->n; i++) {
        const float *l = logits + (size_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (l[j] > l[best]) best = j;
        correct += best == ds->y[i];
    }
    dap_free_aligned(logits);
    return 100.0 * (double)correct / ds->n;
}

/* ---- checkpoints ----------------------------------------------------------------- */

int dap_classifier_save(const dap_classifier *m, const char *path, const char *const *meta) {
    char shape[64], classes[16], mean[96], std[96];
    snprintf(shape, sizeof shape, "%d,%d,%d", m->net.in_c, m->net.in_h, m->net.in_w);
    snprintf(classes, sizeof classes, "%d", m->net.num_classes);
    snprintf(mean, sizeof mean, "%.9g,%.9g,%.9g", m->mean[0], m->mean[1], m->mean[2]);
    snprintf(std, sizeof std, "%.9g,%.9g,%.9g", m->std[0], m->std[1], m->std[2]);
    const char *pairs[64] = {"dap.arch", m->net.arch, "dap.input", shape, "dap.classes", classes,
                             "dap.norm_mean", mean, "dap.norm_std", std};
    int np = 10;
    for (int i = 0; meta && meta[i] && meta[i + 1] && np < 62; i += 2) {
        pairs[np++] = meta[i];
        pairs[np++] = meta[i + 1];
    }
    pairs[np] = NULL;
    return dap_params_save(&m->net.params, path, 0, pairs);
}

static int parse3f(const char *s, float out[3]) {
    return s && sscanf(s, "%f,%f,%f", &out[0], &out[1], &out[2]) == 3;
}

/* Inputs are divided by std: zero, negative or non-finite constants give inf/NaN. */
static int norm_usable(const float mu[3], const float sd[3]) {
    for (int k = 0; k < 3; k++)
        if (!isfinite(mu[k]) || !isfinite(sd[k]) || !(sd[k] > 0)) return 0;
    return 1;
}

int dap_classifier_load(dap_classifier *m, const char *path) {
    memset(m, 0, sizeof *m);
    dap_st *st = NULL;
    DAP_TRY(dap_st_open(&st, path));
    char *arch = dap_st_meta_get(st, "dap.arch"), *shape = dap_st_meta_get(st, "dap.input");
    char *classes = dap_st_meta_get(st, "dap.classes"), *mean = dap_st_meta_get(st, "dap.norm_mean");
    char *std = dap_st_meta_get(st, "dap.norm_std");
    dap_st_close(st);
    int c = 0, h = 0, w = 0, k = 0, rc = DAP_OK;
    float mu[3], sd[3];
    if (!arch || !shape || !classes || sscanf(shape, "%d,%d,%d", &c, &h, &w) != 3 ||
        sscanf(classes, "%d", &k) != 1 || !parse3f(mean, mu) || !parse3f(std, sd)) {
        rc = dap_error(DAP_ERR_FORMAT,
                       "%s: not a dap classifier checkpoint (metadata dap.arch, dap.input, "
                       "dap.classes, dap.norm_mean, dap.norm_std expected)",
                       path);
    } else if (!norm_usable(mu, sd)) {
        rc = dap_error(DAP_ERR_VALUE,
                       "%s: dap.norm_mean \"%s\" / dap.norm_std \"%s\": expected finite means and "
                       "positive finite stds",
                       path, mean, std);
    } else if (c < 1 || c > 4 || h < 1 || h > 2048 || w < 1 || w > 2048 || k < 1 || k > 1000000) {
        /* bounds keep the builders' size arithmetic in range; real sizes are checked next */
        rc = dap_error(DAP_ERR_FORMAT, "%s: dap.input \"%s\" / dap.classes \"%s\" out of range (channels 1-4, "
                       "sides 1-2048, classes 1-1000000)", path, shape, classes);
    } else {
        /* the metadata sizes the model: its table is held against the file's tensors before
         * any weight is allocated, so a lying header cannot ask for terabytes */
        dap_cnn_defer_alloc(1);
        rc = dap_classifier_create(m, arch, c, h, w, k);
        dap_cnn_defer_alloc(0);
        if (rc == DAP_OK) rc = dap_params_check_file(&m->net.params, path, NULL, 0);
        if (rc == DAP_OK) {
            dap_params_alloc(&m->net.params, 1);
            memcpy(m->mean, mu, sizeof mu);
            memcpy(m->std, sd, sizeof sd);
            rc = dap_params_load(&m->net.params, path, NULL, 0);
        }
        if (rc != DAP_OK) dap_classifier_free(m);
    }
    free(arch), free(shape), free(classes), free(mean), free(std);
    return rc;
}
