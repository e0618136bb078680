/*
 * resnet.c: ResNetAP-10 and ResNet-18 on the shared layer sequence (see resnet.h).
 */
#include "models/resnet.h"

#include <stdio.h>

#include "core/core.h"

static const char *norm_suffix(int norm, int dflt) {
    if (norm == dflt) return "";
    return norm == DAP_NORM_BATCH ? "-bn" : norm == DAP_NORM_INSTANCE ? "-in" : "-nn";
}

/* One ResNetAP BasicBlock; returns its output layer. */
static int ap_block(dap_cnn *m, int x, const char *key, int planes, int stride, int norm) {
    char k[64];
    int in_c = x < 0 ? m->in_c : m->layers[x].c;
    snprintf(k, sizeof k, "%s.conv1", key);
    int y = dap_cnn_conv(m, x, k, planes, 3, 1, 1, 0);
    snprintf(k, sizeof k, "%s.bn1", key);
    y = dap_cnn_norm(m, y, k, norm, 1);
    if (stride != 1) y = dap_cnn_pool(m, y, DAP_CNN_AVGPOOL, 2, 2, 0);
    snprintf(k, sizeof k, "%s.conv2", key);
    y = dap_cnn_conv(m, y, k, planes, 3, 1, 1, 0);
    snprintf(k, sizeof k, "%s.bn2", key);
    y = dap_cnn_norm(m, y, k, norm, 0);
    int sc = x;
    if (stride != 1 || in_c != planes) {
        snprintf(k, sizeof k, "%s.shortcut.0", key);
        sc = dap_cnn_conv(m, x, k, planes, 1, 1, 0, 0);
        if (stride != 1) sc = dap_cnn_pool(m, sc, DAP_CNN_AVGPOOL, 2, 2, 0);
        snprintf(k, sizeof k, "%s.shortcut.2", key);
        sc = dap_cnn_norm(m, sc, k, norm, 0);
    }
    return dap_cnn_add(m, y, sc, 1);
}

int dap_resnetap10_create(dap_cnn *m, int width, int norm, int c, int h, int w, int num_classes) {
    if (width < 1 || num_classes < 2 || c < 1)
        return dap_error(DAP_ERR_ARG, "resnetap10: bad width %d / classes %d / channels %d", width,
                         num_classes, c);
    if (h < 8 || w < 8)
        return dap_error(DAP_ERR_SHAPE, "resnetap10: a %dx%d input is too small (at least 8x8)", h, w);
    char name[32];
    snprintf(name, sizeof name, "resnetap10%s", norm_suffix(norm, DAP_NORM_INSTANCE));
    dap_cnn_init(m, name, c, h, w);
    int x = dap_cnn_conv(m, -1, "conv1", width, 3, 1, 1, 0);
    x = dap_cnn_norm(m, x, "bn1", norm, 1);
    for (int s = 0; s < 4; s++) {
        char key[32];
        snprintf(key, sizeof key, "layer%d.0", s + 1);
        x = ap_block(m, x, key, width << s, s == 0 ? 1 : 2, norm);
    }
    x = dap_cnn_gap(m, x);
    dap_cnn_linear(m, x, "classifier", num_classes);
    dap_cnn_finish(m, num_classes);
    return DAP_OK;
}

/* One torchvision BasicBlock. */
static int tv_block(dap_cnn *m, int x, const char *key, int planes, int stride, int norm) {
    char k[64];
    int in_c = m->layers[x].c, y;
    snprintf(k, sizeof k, "%s.conv1", key);
    y = dap_cnn_conv(m, x, k, planes, 3, stride, 1, 0);
    m->layers[y].init = 1;
    snprintf(k, sizeof k, "%s.bn1", key);
    y = dap_cnn_norm(m, y, k, norm, 1);
    snprintf(k, sizeof k, "%s.conv2", key);
    y = dap_cnn_conv(m, y, k, planes, 3, 1, 1, 0);
    m->layers[y].init = 1;
    snprintf(k, sizeof k, "%s.bn2", key);
    y = dap_cnn_norm(m, y, k, norm, 0);
    int sc = x;
    if (stride != 1 || in_c != planes) {
        snprintf(k, sizeof k, "%s.downsample.0", key);
        sc = dap_cnn_conv(m, x, k, planes, 1, stride, 0, 0);
        m->layers[sc].init = 1;
        snprintf(k, sizeof k, "%s.downsample.1", key);
        sc = dap_cnn_norm(m, sc, k, norm, 0);
    }
    return dap_cnn_add(m, y, sc, 1);
}

int dap_resnet18_create(dap_cnn *m, int width, int norm, int large_stem, int c, int h, int w,
                        int num_classes) {
    if (width < 1 || num_classes < 2 || c < 1)
        return dap_error(DAP_ERR_ARG, "resnet18: bad width %d / classes %d / channels %d", width,
                         num_classes, c);
    if (large_stem < 0) large_stem = h >= 224 && w >= 224;
    if (h < (large_stem ? 32 : 8) || w < (large_stem ? 32 : 8))
        return dap_error(DAP_ERR_SHAPE, "resnet18: a %dx%d input is too small", h, w);
    char name[32];
    snprintf(name, sizeof name, "resnet18%s", norm_suffix(norm, DAP_NORM_BATCH));
    dap_cnn_init(m, name, c, h, w);
    int x;
    if (large_stem) {
        x = dap_cnn_conv(m, -1, "conv1", width, 7, 2, 3, 0);
        m->layers[x].init = 1;
        x = dap_cnn_norm(m, x, "bn1", norm, 1);
        x = dap_cnn_pool(m, x, DAP_CNN_MAXPOOL, 3, 2, 1);
    } else {
        x = dap_cnn_conv(m, -1, "conv1", width, 3, 1, 1, 0);
        m->layers[x].init = 1;
        x = dap_cnn_norm(m, x, "bn1", norm, 1);
    }
    for (int s = 0; s < 4; s++)
        for (int b = 0; b < 2; b++) {
            char key[32];
            snprintf(key, sizeof key, "layer%d.%d", s + 1, b);
            x = tv_block(m, x, key, width << s, s > 0 && b == 0 ? 2 : 1, norm);
        }
    x = dap_cnn_gap(m, x);
    dap_cnn_linear(m, x, "fc", num_classes);
    dap_cnn_finish(m, num_classes);
    return DAP_OK;
}
