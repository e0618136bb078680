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

/* ---- a batch's augmentation as a plan ------------------------------------------------
 * Every random number a batch's augmentation needs is drawn on the host into a plan
 * (in the order the functions below are called, each image's draws in image order), and
 * the plan is then applied to the pixels wherever they live: dap_aug_apply on the host,
 * dap_cuda_aug_apply (cuda/cuda.h) on a GPU, the same per-pixel arithmetic
 * (augment_px.h). No draw depends on the pixels, so a plan made before the images are
 * gathered is the one the per-op functions further down would have drawn. */
typedef enum {
    DAP_AUGX_SCALE_SHIFT = 0, /* x = a_k x + b_k per channel k (2c floats) */
    DAP_AUGX_JITTER,          /* per image fb, fc, fs; flag 1: pixels on [-1, 1] (to [0, 1] and back) */
    DAP_AUGX_WINDOW,          /* per image y0, x0, ch, cw, flip: resized crop + horizontal flip */
    DAP_AUGX_COLOR,           /* per image brightness, saturation, contrast (DSA) */
    DAP_AUGX_SHIFT,           /* per image ty, tx (DSA crop, zero fill) */
    DAP_AUGX_CUTOUT,          /* per image y0, x0, ch, cw: a zeroed box */
    DAP_AUGX_FLIP,            /* per image 1: mirrored */
    DAP_AUGX_AFFINE,          /* per image theta (6): DSA scale and rotate */
    DAP_AUGX_CUTMIX           /* the batch: box y0, x0, ch, cw pasted from partner perm[i] */
} dap_augx_op;

#define DAP_AUG_PARAMS 6 /* floats per image a stage holds */
#define DAP_AUG_STAGES 6 /* stages a plan holds */

typedef struct {
    int op;   /* dap_augx_op */
    int flag;
    float *p; /* (n, DAP_AUG_PARAMS) per-image parameters; SCALE_SHIFT: a (c) then b (c);
               * CUTMIX: the box */
} dap_aug_stage;

typedef struct dap_aug_plan {
    int nmax, n, c, h, w;
    int nstages;
    dap_aug_stage st[DAP_AUG_STAGES];
    int *perm;    /* (nmax) CutMix partners */
    float *store; /* DAP_AUG_STAGES x nmax x DAP_AUG_PARAMS: every stage's parameters */
} dap_aug_plan;

/* For batches of up to nmax images of (c, h, w); c <= 3 * nmax. */
void dap_aug_plan_init(dap_aug_plan *p, int nmax, int c, int h, int w);
void dap_aug_plan_free(dap_aug_plan *p);
/* Starts a plan for a batch of n images (no stages). */
void dap_aug_plan_reset(dap_aug_plan *p, int n);
/* x = a_k x + b_k on channel k. */
void dap_aug_plan_scale_shift(dap_aug_plan *p, const float *a, const float *b);
/* Colour jitter of strength s (dap_aug_color_jitter); from11: the pixels are on [-1, 1]
 * and go to [0, 1] for it and back. */
void dap_aug_plan_jitter(dap_aug_plan *p, float s, int from11, dap_rng *r);
void dap_aug_plan_resized_crop_flip(dap_aug_plan *p, float smin, float smax, dap_rng *r);
/* One DSA op drawn for the batch, or the given one. */
void dap_aug_plan_dsa(dap_aug_plan *p, dap_rng *r);
void dap_aug_plan_dsa_op(dap_aug_plan *p, int op, dap_rng *r);
/* CutMix: partners into p->perm; returns lambda (1: the box came out empty, no stage). */
float dap_aug_plan_cutmix(dap_aug_plan *p, dap_rng *r);
/* Applies the plan's stages in order to x (n, c, h, w) on the host. */
void dap_aug_apply(const dap_aug_plan *p, float *x);

/* ---- one op on a host batch (a plan of one stage, drawn and applied) ------------------ */

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
