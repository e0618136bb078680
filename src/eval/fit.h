/*
 * fit.h: the training protocols that score a (distilled) training set (SPEC 5).
 *
 * Hard label (the distillation benchmarks' evaluate_synset): SGD lr 0.01, momentum 0.9,
 * weight decay 5e-4 on every parameter, batch 256 reshuffled each epoch, cross-entropy,
 * train-mode batch norm; at half of the epochs the rate drops x0.1 and the optimizer
 * is re-created (momentum restarts, as the reference re-creates it). Augmentation:
 * none or DSA (augment.h). ImageNet-subset recipe: batch 64, x0.2 at 2/3 and 5/6,
 * random-resized crop (0.5-1) + flip + colour jitter, CutMix.
 * Soft label: a teacher labels every augmented batch; the student minimises
 * KL(softmax(t/T) || softmax(s/T)) (T = 20, no T^2 factor); AdamW lr 1e-3, wd 0.01,
 * cosine per epoch, random-resized crop (0.08-1) + flip, CutMix.
 *
 * A run is a function of (data, config, seed): weight init, shuffling and augmentation
 * draw from separate streams of the seed.
 */
#ifndef DAP_EVAL_FIT_H
#define DAP_EVAL_FIT_H

#include <stdint.h>

#include "data/dataset.h"
#include "eval/classifier.h"

typedef enum { DAP_OPT_SGD = 0, DAP_OPT_ADAMW = 1 } dap_opt_kind;
typedef enum { DAP_LR_HALF = 0, DAP_LR_IMAGENET = 1, DAP_LR_COSINE = 2, DAP_LR_CONST = 3 } dap_lr_kind;
typedef enum {
    DAP_AUG_NONE = 0,
    DAP_AUG_DSA = 1,      /* one DSA transform per batch */
    DAP_AUG_IMAGENET = 2, /* random-resized crop 0.5-1, flip, colour jitter 0.4 */
    DAP_AUG_RRC = 3       /* random-resized crop 0.08-1, flip (soft-label protocol) */
} dap_aug_kind;

typedef struct dap_fit_config {
    int epochs, batch;
    int optimizer;          /* dap_opt_kind */
    double lr, momentum, wd;
    int schedule;           /* dap_lr_kind */
    int aug;                /* dap_aug_kind */
    double cutmix;          /* probability per batch; 0: off */
    dap_classifier *teacher; /* soft-label protocol when not NULL */
    double temperature;
    uint64_t seed;
    int progress;           /* per-epoch lines on stderr (at most one a second) */
    const char *label;      /* prefix of those lines */
    /* Mid-run state (NULL: none). At the end of an epoch, at most every state_every
     * seconds (0: every epoch), the run's whole state (weights and buffers, optimizer,
     * data order, random streams, epoch) is written atomically to state_path; with
     * state_resume and the file present, training continues from it and ends exactly as
     * the uninterrupted run would. The file records state_key (the caller's description of
     * the run: data, recipe, seed); a file made for another key is refused. The caller
     * removes the file once the run's result is safe. */
    const char *state_path, *state_key;
    double state_every;
    int state_resume;
    int stop_after;         /* return DAP_FIT_STOPPED after this many epochs of this call, its
                             * state written (0: train to the end); for tests and time slices */
} dap_fit_config;

/* Presets (every field set; adjust afterwards). */
void dap_fit_config_hard(dap_fit_config *c, int epochs, int aug);
void dap_fit_config_imagenet(dap_fit_config *c, int ipc);
void dap_fit_config_soft(dap_fit_config *c, dap_classifier *teacher, int epochs);

typedef struct dap_fit_result {
    double loss;        /* mean loss of the last epoch */
    double train_acc;   /* top-1 (percent) on the augmented batches of the last epoch */
    double seconds, images_per_s; /* over the whole run, earlier calls included */
    int resumed_epochs;           /* epochs taken from a state file (0: trained from scratch) */
} dap_fit_result;

/* Trains m (already initialised) on `train`, whose labels must lie in
 * [0, m->net.num_classes) and images match the model's input. Returns DAP_ERR_SHAPE
 * naming the mismatch; DAP_ERR_VALUE when the loss turns non-finite. */
int dap_classifier_train(dap_classifier *m, const dap_dataset *train, const dap_fit_config *cfg,
                         dap_fit_result *res);

/* dap_classifier_train's status when cfg->stop_after ended the call early. */
#define DAP_FIT_STOPPED 100

/* The rate of epoch `ep` under the config's schedule. */
double dap_fit_lr(const dap_fit_config *c, int ep);

#endif /* DAP_EVAL_FIT_H */
