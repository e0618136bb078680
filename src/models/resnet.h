/*
 * resnet.h: the two residual classifiers of the evaluation protocols (SPEC 5).
 *
 * ResNetAP-10 (the dataset-distillation variant): stem conv3x3 + norm + ReLU; one
 * BasicBlock per stage with widths w, 2w, 4w, 8w (w = 64); a stride-2 stage downsamples
 * by AvgPool 2x2 after the block's first conv, and its shortcut is conv1x1 + AvgPool 2x2
 * + norm; global average pool; linear. Instance norm (GroupNorm(C, C) affine) by
 * default. Keys: conv1, bn1, layerS.0.{conv1,bn1,conv2,bn2}, layerS.0.shortcut.{0,2},
 * classifier.
 *
 * ResNet-18 (torchvision layout and keys: conv1, bn1, layerS.B.{conv1,bn1,conv2,bn2},
 * layerS.0.downsample.{0,1}, fc), two BasicBlocks per stage with strided 3x3 convs and
 * conv1x1-stride-2 + norm shortcuts. Small images (< 224 px) use the 3x3 stride-1 stem
 * without max-pool; >= 224 px (or large_stem = 1) the 7x7/2 stem + max-pool 3/2.
 * Batch norm by default; convs get torchvision's kaiming-normal (fan_out) init.
 */
#ifndef DAP_RESNET_H
#define DAP_RESNET_H

#include "models/cnn.h"

int dap_resnetap10_create(dap_cnn *m, int width, int norm, int c, int h, int w, int num_classes);
/* large_stem: -1 automatic (>= 224 px), 0 small-image stem, 1 ImageNet stem. */
int dap_resnet18_create(dap_cnn *m, int width, int norm, int large_stem, int c, int h, int w,
                        int num_classes);

#endif /* DAP_RESNET_H */
