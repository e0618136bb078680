/*
 * train.h: training a class-conditional DiT as an eps-predictor (SPEC section 2):
 * t uniform in 0..T-1, x_t = q_sample(x0, xi), loss = mean (eps_theta(x_t, t, y) - xi)^2
 * over the first C output channels, y replaced by the null class with probability
 * class_dropout; AdamW, global gradient clipping, an EMA of the weights.
 *
 * Reproducible and resumable: all randomness of step s is a pure function of
 * (seed, s) through the counter-based generator (the data order of epoch e is a
 * shuffle drawn from (seed, e)), and a checkpoint holds everything that evolves (raw
 * and EMA weights, AdamW moments, step), so a resumed run continues bit-exactly
 * (with the same thread count).
 *
 * Checkpoint = two files: PATH holds the EMA weights under the official keys with the
 * model config (loadable by dap_dit_load, used for sampling); PATH.state holds the
 * training state ("model.<key>" raw weights, "ema.<key>", "opt.exp_avg.<key>",
 * "opt.exp_avg_sq.<key>", "opt.step") with seed and batch in its metadata. Both are
 * written atomically, the state first; resume needs only PATH.state.
 *
 * Minimax fine-tune (cfg.minimax, diffusion/minimax.h): the loss gains the
 * representativeness and diversity terms of Gu et al. (CVPR 2024); their class memories
 * are part of the state ("minimax.real", "minimax.gen" (K, M, C, H, W), "minimax.count"
 * (K, 2) I64), and PATH records "finetune" = "minimax ..." in its metadata.
 * cfg.trainable = DAP_TRAIN_DIFFFIT freezes all but the biases, norms and the label table
 * (DiffFit, as their code trains), marking the model's tensors frozen.
 */
#ifndef DAP_DIFFUSION_TRAIN_H
#define DAP_DIFFUSION_TRAIN_H

#include <stdint.h>

#include "core/optim.h"
#include "data/dataset.h"
#include "diffusion/minimax.h"
#include "diffusion/schedule.h"
#include "models/dit.h"

typedef struct dap_train_config {
    int batch;            /* 32 */
    double lr;            /* 1e-4 (DiT's) */
    double weight_decay;  /* 0 (DiT's) */
    double ema_decay;     /* 0.9999 (DiT's) */
    int ema_warmup;       /* 1: decay min(ema_decay, (1 + s) / (10 + s)) at step s */
    float grad_clip;      /* max global grad norm; 0: off. 1.0 */
    float class_dropout;  /* 0.1 */
    uint64_t seed;        /* 0 */
    /* Learning-rate schedule: lr up to step decay_start, then down to 0 at step decay_end
     * (linearly or on a half cosine). DAP_DIT_LR_CONSTANT (the default) ignores both steps. */
    int lr_schedule;
    int64_t decay_start, decay_end;
    int trainable;        /* DAP_TRAIN_ALL (default) or DAP_TRAIN_DIFFFIT */
    int minimax;          /* 1: add the Minimax terms (diffusion/minimax.h) */
    double lambda_pos;    /* 0.002 (their code's) */
    double lambda_neg;    /* 0.008 */
    int memory_size;      /* 64 */
} dap_train_config;

enum { DAP_DIT_LR_CONSTANT = 0, DAP_DIT_LR_LINEAR = 1, DAP_DIT_LR_COSINE = 2 };
enum { DAP_TRAIN_ALL = 0, DAP_TRAIN_DIFFFIT = 1 };

/* DiffFit (their mark_difffit_trainable): a tensor trains when its key contains "bias",
 * "norm", "gamma" or "y_embed"; in the DiT that is every bias and the label table. */
int dap_train_difffit_key(const char *key);
/* "all" / "difffit" */
const char *dap_train_trainable_name(int trainable);

void dap_train_config_default(dap_train_config *c);

/* The learning rate of the step that runs after `s` steps are done. */
double dap_train_lr(const dap_train_config *c, int64_t s);

typedef struct dap_trainer {
    dap_train_config cfg;
    dap_dit *model;          /* raw weights and grads; owned */
    dap_params ema;          /* the same table, EMA weights (data only) */
    dap_adamw opt;
    dap_schedule sched;
    dap_dit_state *state;    /* for cfg.batch samples */
    const dap_dataset *data; /* training images, not owned */
    uint64_t data_hash;      /* FNV-1a 64 of data's pixels and labels: resume needs the same images */
    int64_t step;            /* steps done */
    /* the data order of the current epoch */
    int *perm;
    int64_t perm_epoch;
    /* per-batch buffers */
    float *x0, *noise, *xt, *tf, *out, *dout; /* (B, C, H, W) x3, (B), (B, Co, H, W) x2 */
    int *t, *y;                               /* (B) */
    /* Minimax (cfg.minimax): the class memories, the batch's real labels (before the
     * class dropout), x0_hat and d/dx0_hat (B, C, H, W), sqrt(a_t), sqrt(1 - a_t) (B), and
     * the last step's two terms */
    dap_minimax mm;
    int *mm_slot; /* (num_classes) a label's memory slot: the labels the data has, in order (-1: none);
                   * a 1000-class prior fine-tuned on a 10-class subset keeps 10 memories */
    int *y_real;
    float *x0_hat, *dx0;
    double *sa, *sb;
    double last_pos, last_neg;
} dap_trainer;

/* Takes ownership of `model` (created with gradients); the EMA starts as a copy of its
 * weights. `data` must outlive the trainer and match the model: DAP_ERR_SHAPE naming
 * both shapes, DAP_ERR_VALUE for labels outside 0..num_classes-1 or bad settings. */
int dap_trainer_create(dap_trainer **out, dap_dit *model, const dap_dataset *data,
                       const dap_train_config *cfg);
void dap_trainer_destroy(dap_trainer *tr);

/* One optimisation step (number tr->step, then tr->step++). Returns the batch's eps-MSE
 * (with cfg.minimax the two terms are in tr->last_pos, tr->last_neg);
 * *grad_norm (may be NULL) receives the global grad norm before clipping. */
double dap_trainer_step(dap_trainer *tr, float *grad_norm);

/* Mean eps-MSE over `val` with a fixed timestep and noise per image (drawn from
 * (seed, image index)), conditional labels, in batches of cfg.batch: comparable across
 * calls, steps and runs. use_ema: evaluate the EMA weights instead of the raw ones. */
double dap_trainer_val_loss(dap_trainer *tr, const dap_dataset *val, uint64_t seed, int use_ema);

/* Writes PATH.state then PATH (see the top of this file). */
int dap_trainer_save(dap_trainer *tr, const char *path);
/* Restores the state from PATH.state: the seed, batch, training images (their hash, when
 * the state records it), trainable set and Minimax settings must match this trainer's
 * (DAP_ERR_ARG naming both), every tensor must be present with its shape. */
int dap_trainer_resume(dap_trainer *tr, const char *path);

#endif /* DAP_DIFFUSION_TRAIN_H */
