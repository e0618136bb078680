/*
 * convnet.h: ConvNet-D, the dataset-distillation benchmark network (SPEC 5): D blocks
 * of conv3x3 (width channels, bias) + norm + ReLU + AvgPool 2x2, then a linear layer on
 * the flattened features. Keys follow the reference nn.Sequential:
 * features.{4d}.weight/bias (conv), features.{4d+1}.* (norm), classifier.weight/bias;
 * without a norm the blocks are conv, ReLU, pool (3 entries each).
 * A 1-channel 28 px input is padded by 3 in the first conv (28 -> 32 -> 16 -> 8 -> 4).
 */
#ifndef DAP_CONVNET_H
#define DAP_CONVNET_H

#include "models/cnn.h"

/* Builds (and allocates, zeroed) a ConvNet-`depth` of `width` channels with `norm`
 * (dap_norm_kind) for (c, h, w) inputs; returns DAP_ERR_ARG when the input is too small
 * for `depth` poolings. Call dap_cnn_init_weights next. */
int dap_convnet_create(dap_cnn *m, int depth, int width, int norm, int c, int h, int w,
                       int num_classes);

#endif /* DAP_CONVNET_H */
