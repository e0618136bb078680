/*
 * convnet.c: ConvNet-D on the shared layer sequence (see convnet.h).
 */
#include "models/convnet.h"

#include <stdio.h>

#include "core/core.h"

int dap_convnet_create(dap_cnn *m, int depth, int width, int norm, int c, int h, int w,
                       int num_classes) {
    DAP_ASSERT(norm >= DAP_NORM_INSTANCE && norm <= DAP_NORM_NONE);
    if (depth < 1 || width < 1 || num_classes < 2 || c < 1)
        return dap_error(DAP_ERR_ARG, "convnet: bad depth %d / width %d / classes %d / channels %d",
                         depth, width, num_classes, c);
    int first_pad = (c == 1 && h == 28 && w == 28) ? 3 : 1;
    int sh = h + 2 * first_pad - 2, sw = w + 2 * first_pad - 2;
    for (int d = 0; d < depth; d++) sh /= 2, sw /= 2;
    if (sh < 1 || sw < 1)
        return dap_error(DAP_ERR_SHAPE, "convnet%d: a %dx%d input is too small for %d poolings",
                         depth, h, w, depth);
    char name[32], key[48];
    snprintf(name, sizeof name, "convnet%d%s", depth,
             norm == DAP_NORM_BATCH ? "-bn" : norm == DAP_NORM_NONE ? "-nn" : "");
    dap_cnn_init(m, name, c, h, w);
    int per_block = norm == DAP_NORM_NONE ? 3 : 4, x = -1;
    for (int d = 0; d < depth; d++) {
        snprintf(key, sizeof key, "features.%d", per_block * d);
        x = dap_cnn_conv(m, x, key, width, 3, 1, d == 0 ? first_pad : 1, 1);
        snprintf(key, sizeof key, "features.%d", per_block * d + 1);
        x = dap_cnn_norm(m, x, key, norm, 1);
        x = dap_cnn_pool(m, x, DAP_CNN_AVGPOOL, 2, 2, 0);
    }
    dap_cnn_linear(m, x, "classifier", num_classes);
    dap_cnn_finish(m, num_classes);
    return DAP_OK;
}
