/*
 * augment.h: training-time augmentations of the evaluation protocols, on a batch
 * x (n, c, h, w) in place, every random draw from a dap_rng (so a run is a function of
 * its seed).
 *
 * Differentiable-siamese augmentation (DSA, Zhao & Bilen 2021) as the distillation
 * benchmarks run it at evaluation time: per batch ONE of six transforms is drawn, and
 * each image gets its own parameters: colour (brightness +-0.5, then saturation x0..2,
 * then contrast x0.5..1.5), crop (shift by up to 1/8 of the size, +-4 px at 28-32 px,
 * zero fill), cutout (a zeroed square of half the size, 14 px at 28), flip (p = 0.5),
 * scale (x and y independently in 1/1.2..1.2) or rotate (+-15 deg); scale and rotate
 * resample bilinearly with zero padding on the align-corners grid. It is applied to
 * normalised tensors, as in the reference code.
 */
#ifndef DAP_AUGMENT_H
#define DAP_AUGMENT_H

#include "core/core.h"

typedef enum {
    DAP_DSA_COLOR = 0,
    DAP_DSA_CROP,
    DAP_DSA_CUTOUT,
    DAP_DSA_FLIP,
    DAP_DSA_SCALE,
    DAP_DSA_ROTATE,
    DAP_DSA_NOPS
} dap_dsa_op;

/* Draws one op for the batch, then applies it. */
void dap_aug_dsa(float *x, int n, int c, int h, int w, dap_rng *r);
void dap_aug_dsa_op(float *x, int n, int c, int h, int w, int op, dap_rng *r);

/* The resampler of scale and rotate: image i through its 2x3 affine map theta (n, 6),
 * F.affine_grid + F.grid_sample(bilinear, zeros, align_corners=True). */
void dap_aug_affine(float *x, const float *theta, int n, int c, int h, int w);

/* Random-resized crop (torchvision's parameters: area scale smin..smax, aspect 3/4..4/3,
 * ten tries then the centre crop), resized back to h x w bilinearly, then a horizontal
 * flip with p = 0.5. */
void dap_aug_resized_crop_flip(float *x, int n, int c, int h, int w, float smin, float smax,
                               dap_rng *r);
/* Colour jitter on [0, 1] pixels: brightness, contrast, saturation factors each in
 * 1 +- s, clamped to [0, 1]. */
void dap_aug_color_jitter(float *x01, int n, int c, int h, int w, float s, dap_rng *r);

/* CutMix (beta(1, 1)): one box per batch pasted from a shuffled partner; writes the
 * partner of each image into perm (n) and returns lambda, the share of each image's
 * own pixels. */
float dap_aug_cutmix(float *x, int *perm, int n, int c, int h, int w, dap_rng *r);

#endif /* DAP_AUGMENT_H */
