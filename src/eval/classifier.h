/*
 * classifier.h: an evaluation classifier: one of the protocol architectures plus the
 * input normalisation it was trained with. It takes images as the datasets hold them
 * (float CHW in [-1, 1]) and normalises them itself ((x + 1) / 2 - mean) / std, per
 * channel, as the PyTorch protocols normalise their tensors), so a checkpoint carries
 * everything needed to reuse it (a teacher, or the feature extractor of the metrics).
 *
 * Architecture names: "convnet3" (any "convnetD"; "convnet" picks D from the size:
 * 3 for 28-32 px, 4 for 64, 5 for 128, 6 for 224-256), "resnetap10", "resnet18"; a
 * suffix "-bn" / "-in" / "-nn" picks batch norm / instance norm / no norm instead of the
 * architecture's default (instance norm for ConvNet and ResNetAP, batch norm for
 * ResNet-18).
 */
#ifndef DAP_CLASSIFIER_H
#define DAP_CLASSIFIER_H

#include "data/dataset.h"
#include "models/cnn.h"

typedef struct dap_classifier {
    dap_cnn net;
    float mean[3], std[3]; /* per channel, on [0, 1] pixels */
} dap_classifier;

/* Builds the architecture for (c, h, w) inputs (weights zeroed; normalisation 0.5/0.5,
 * i.e. the identity on [-1, 1]). Errors name the architecture. */
int dap_classifier_create(dap_classifier *m, const char *arch, int c, int h, int w,
                          int num_classes);
void dap_classifier_free(dap_classifier *m);
void dap_classifier_init_weights(dap_classifier *m, uint64_t seed);

/* The normalisation of a training set: Fashion-MNIST's published constants
 * (0.2861 / 0.3530) when `fmnist`, otherwise the per-channel statistics of `real`. */
void dap_classifier_set_normalization(dap_classifier *m, const dap_dataset *real, int fmnist);
/* The normalisation as x -> a_k x + b_k on channel k of [-1, 1] pixels (in_c each). */
void dap_classifier_norm_coeffs(const dap_classifier *m, float *a, float *b);
/* x (n, c, h, w) in [-1, 1] -> dst (same shape), normalised. */
void dap_classifier_normalize(const dap_classifier *m, float *dst, const float *x, int n);

/* Eval-mode passes over any number of images (in batches of up to 256).
 * logits (n, num_classes); feat (n, dap_classifier_feature_dim) is the penultimate
 * layer (the input of the linear head). */
void dap_classifier_logits(dap_classifier *m, const float *x, int n, float *logits);
void dap_classifier_features(dap_classifier *m, const float *x, int n, float *feat);
int dap_classifier_feature_dim(const dap_classifier *m);
/* Whether `m` takes the images of `data` (C x H x W) into as many classes as it has:
 * DAP_OK, or DAP_ERR_SHAPE naming `path` (the classifier's file), `spec` (the data) and
 * both shapes. Check before any pass: the passes assume it. */
int dap_classifier_check_data(const dap_classifier *m, const dap_dataset *data, const char *path, const char *spec);
/* Top-1 accuracy in percent on a labelled set. */
double dap_classifier_accuracy(dap_classifier *m, const dap_dataset *ds);

/* Safetensors checkpoint: the weights under their PyTorch keys, plus metadata (arch,
 * input shape, classes, normalisation) and optional extra pairs (NULL-terminated
 * key, value, ...). Load rebuilds the architecture from the metadata. */
int dap_classifier_save(const dap_classifier *m, const char *path, const char *const *meta);
int dap_classifier_load(dap_classifier *m, const char *path);

#endif /* DAP_CLASSIFIER_H */
