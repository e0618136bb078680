/*
 * dit.h: the class-conditional DiT backbone (Peebles & Xie), forward and backward.
 *
 * The weights are one dap_params table with the official facebookresearch/DiT
 * state_dict keys and shapes, so a converted DiT-XL/2-256 checkpoint loads unchanged.
 * The model (read-only weights) is kept apart from the per-batch state (activations
 * for up to B samples); forward and backward allocate nothing.
 *
 * Feature access for the representativeness guidance: forward with stop_block = l
 * (1-based) stops after block l and exposes its (B, T, hidden) output tokens via
 * dap_dit_features(); dap_dit_backward_from_block() then takes a gradient w.r.t. those
 * tokens down to the input image only (no parameter gradients).
 */
#ifndef DAP_DIT_H
#define DAP_DIT_H

#include <stddef.h>
#include <stdint.h>

#include "core/params.h"

typedef struct dap_dit_config {
    int input_size;    /* H = W of the model input (latent or pixels) */
    int in_channels;   /* C */
    int patch;         /* p: T = (input_size / p)^2 tokens */
    int hidden;        /* D, a multiple of 4 (2-D sin-cos position embedding) */
    int depth;         /* number of blocks */
    int heads;         /* divides hidden */
    int num_classes;   /* real classes; label num_classes is the null class */
    int learn_sigma;   /* 1: 2C output channels (the first C are eps) */
    float mlp_ratio;   /* MLP hidden = (int)(hidden * mlp_ratio); official 4 */
    float class_dropout; /* > 0: the label table has a null-class row (official: 0.1) */
} dap_dit_config;

/* Named configs: "DiT-S/2", "DiT-B/2", "DiT-L/2", "DiT-XL/2" (also /4, /8; 32x32x4 latents,
 * 1000 classes, learn_sigma) and pixel-space Fashion-MNIST configs (28 px, 1 channel, 10
 * classes, no learn_sigma): "fm-p4-h256-d8", "fm-p2-h256-d8", "fm-p4-h384-d12",
 * "fm-tiny" (p 4, hidden 64, depth 2, 2 heads). Pixel-space families for any data,
 * "px-T", "px-S", "px-B", "px-L" (optionally "/P" for patch P), leave input_size,
 * in_channels and num_classes 0 (and patch 0 without "/P"): dap_dit_config_fit fills
 * them from the data. DAP_ERR_ARG listing the names if unknown. */
int dap_dit_config_by_name(const char *name, dap_dit_config *out);
/* Fills a config's geometry from the data (size x size images, channels, classes): fields
 * the config leaves 0 take the data's, a patch of 0 becomes dap_dit_auto_patch(size); a
 * field the config fixes must equal the data's. DAP_ERR_ARG naming both otherwise. */
int dap_dit_config_fit(dap_dit_config *c, int size, int channels, int classes);
/* The patch of a pixel family at this image size: the divisor whose grid is nearest 8x8. */
int dap_dit_auto_patch(int size);
/* The pixel families and the patch each size gets, for --help (lines ending in '\n'). */
void dap_dit_configs_help(char *buf, size_t n);
/* Checks the divisibility rules; DAP_ERR_ARG naming the field otherwise. */
int dap_dit_config_check(const dap_dit_config *c);
/* Output channels: 2C with learn_sigma, else C. */
int dap_dit_out_channels(const dap_dit_config *c);
/* Registers the official tensors of `c` in an empty table (no data allocated). */
void dap_dit_params_table(dap_params *ps, const dap_dit_config *c);

typedef struct dap_dit {
    dap_dit_config cfg;
    int out_channels; /* Co */
    int grid;         /* input_size / patch */
    int tokens;       /* T = grid^2 */
    int patch_in;     /* C p p: one input patch */
    int patch_out;    /* p p Co: one output patch */
    int mlp_hidden;   /* (int)(hidden * mlp_ratio) */
    dap_params params;
    int block0;        /* index in params.p of blocks.0's first tensor */
    int block_nparams; /* tensors per block */
    /* (num_classes) the class name of each label, or NULL when the checkpoint has none.
     * Stored in __metadata__ "class_names", newline-joined; label k is class_names[k]. */
    char **class_names;
    /* The data it was trained on, as `dap train --data` took it ("fmnist", a folder's
     * absolute path), or NULL: __metadata__ "train_data". */
    char *train_data;
    /* What fine-tuned it, or NULL: __metadata__ "finetune", e.g. "minimax lambda_pos=0.002
     * lambda_neg=0.008 memory_size=64 trainable=difffit ..." (`dap train --minimax`). */
    char *finetune;
    void *dev;         /* the weights on the device (dap_dit_to_device), else NULL */
} dap_dit;

/* Creates a model with zeroed weights (grad buffers too if with_grad). DAP_ERR_ARG on a
 * bad config. */
int dap_dit_create(dap_dit **out, const dap_dit_config *cfg, int with_grad);
void dap_dit_destroy(dap_dit *m);
/* The official initialisation: xavier-uniform linears (x_embedder on its flattened
 * (D, C p p) view), zero biases, label table and timestep MLP N(0, 0.02), adaLN
 * modulations and the final linear zero, pos_embed the fixed 2-D sin-cos table. */
void dap_dit_init(dap_dit *m, uint64_t seed);
/* Sets (copies) the names of the model's n = num_classes labels, or clears them (names
 * NULL, n 0). Names must be non-empty and free of newlines (asserted). */
void dap_dit_set_class_names(dap_dit *m, char *const *names, int n);
/* A checkpoint's class names (__metadata__ "class_names", newline-joined) without its
 * weights: *out num_classes strings (dap_dit_class_names_free), or NULL when it has none;
 * DAP_ERR_FORMAT naming the file when their count or an empty name is wrong. */
int dap_dit_class_names_from_file(const char *path, int num_classes, char ***out);
void dap_dit_class_names_free(char **names, int n);
/* Sets (copies) or clears (NULL) the record of the training data. */
void dap_dit_set_train_data(dap_dit *m, const char *spec);
/* The training data a checkpoint records (*out malloc'd), or *out NULL when it has none. */
int dap_dit_train_data_from_file(const char *path, char **out);
/* Sets (copies) or clears (NULL) the fine-tune record (one line). */
void dap_dit_set_finetune(dap_dit *m, const char *what);
/* The fine-tune record of a checkpoint (*out malloc'd), or *out NULL when it has none. */
int dap_dit_finetune_from_file(const char *path, char **out);
/* Writes the weights as safetensors with the config as __metadata__ (self-describing),
 * and the class names when set. */
int dap_dit_save(const dap_dit *m, const char *path);
/* The same with the weights stored as F16 (f16 = 1): half the size, read back into F32. */
int dap_dit_save_ex(const dap_dit *m, const char *path, int f16);
/* Reads the config from __metadata__ (or, if absent, infers it from the tensor shapes,
 * e.g. an official DiT-XL-2-256 converted file), then loads the weights strictly, and the
 * class names when __metadata__ has them (DAP_ERR_FORMAT when their count is not
 * num_classes).
 * Unknown tensors are an error unless allow_extra. */
int dap_dit_load(dap_dit **out, const char *path, int with_grad, int allow_extra);
/* Config of a checkpoint without loading the weights. */
int dap_dit_config_from_file(const char *path, dap_dit_config *out);

/* Moves the model to the device chosen in core/device.h (dap_device_select and
 * dap_device_set_precision, i.e. `--device`, `--precision`, $DAP_DEVICE): on cpu nothing
 * happens; on cuda the weights go up once (DAP_ERR_NOMEM naming the sizes when they do not
 * fit in the device's free memory) and every state created afterwards keeps its
 * activations there: dap_dit_forward, dap_dit_features (a copy of the tokens) and
 * dap_dit_backward_from_block run on the GPU behind the same calls, with host arrays in
 * and out. The host weights must not change afterwards (the device keeps its copy),
 * except through the training calls below. */
int dap_dit_to_device(dap_dit *m);
/* Before the work: DAP_ERR_NOMEM naming the sizes unless `count` states of the given
 * batch sizes and cached blocks fit together in the device's free memory now (always
 * DAP_OK for a model on the cpu). `what` names the flag to lower in the message. */
int dap_dit_states_fit(const dap_dit *m, int count, const int *batch, const int *cache_blocks,
                       const char *what);

/* Training on the model's device (diffusion/train.c). On the cpu: dap_dit_state_create_train
 * is dap_dit_state_create and the others do nothing (the trainer runs the host's optimiser).
 * On cuda the weights, gradients, EMA and AdamW moments stay on the device for the run:
 * _train_begin uploads the host's weights, `ema` and opt's moments (zeros before its
 * first step; DAP_ERR_NOMEM naming the sizes when they do not fit), dap_dit_backward of a
 * training state leaves its gradients there, _train_update clips them to max_norm (0: no
 * clipping), steps AdamW (opt->step advances) and the EMA (decay), and returns the norm
 * before clipping, as the host's dap_clip_grad_norm + dap_adamw_step + dap_ema_update;
 * _train_sync copies the weights, `ema` and the moments back (a checkpoint), and
 * dap_dit_swap_ema exchanges the weights the forward reads with the EMA (call it twice).
 * dap_dit_train_fits: DAP_ERR_NOMEM naming the sizes unless a training state of `batch`
 * and the optimiser's buffers fit in the device's free memory now. */
struct dap_adamw;
typedef struct dap_dit_state dap_dit_state;
dap_dit_state *dap_dit_state_create_train(const dap_dit *m, int batch);
int dap_dit_train_fits(const dap_dit *m, int batch, const char *what);
int dap_dit_train_begin(dap_dit *m, const float *ema, const struct dap_adamw *opt);
float dap_dit_train_update(dap_dit *m, struct dap_adamw *opt, double lr, float max_norm, double decay);
void dap_dit_train_sync(dap_dit *m, float *ema, struct dap_adamw *opt);
void dap_dit_swap_ema(dap_dit *m);

/* Per-batch activations. cache_blocks (0..depth) = how many leading blocks keep what their
 * backward needs: depth for training (dap_dit_backward), l for the guidance's
 * backward from block l, 0 for inference only (no gradients: one block's worth of scratch,
 * much less memory). dap_dit_state_create is cache_blocks = depth. On a device model
 * these (and dap_dit_state_create_train) return NULL with the error set when the device
 * has no room (dap_dit_states_fit / dap_dit_train_fits tell before); never on the cpu. */
dap_dit_state *dap_dit_state_create(const dap_dit *m, int batch);
dap_dit_state *dap_dit_state_create_ex(const dap_dit *m, int batch, int cache_blocks);
void dap_dit_state_destroy(dap_dit_state *s);
/* Runs the next calls on the first n <= batch samples (default: batch). */
void dap_dit_state_set_batch(dap_dit_state *s, int n);
int dap_dit_state_batch(const dap_dit_state *s);
size_t dap_dit_state_bytes(const dap_dit_state *s);

/* out (n, Co, H, W) or NULL; x (n, C, H, W); t (n) 0-based timesteps, fed as is;
 * y (n) labels in 0..num_classes (num_classes = null class). stop_block 0: the full
 * forward; l in 1..depth: stop after block l (out must be NULL) and expose its tokens. */
void dap_dit_forward(const dap_dit *m, dap_dit_state *s, float *out, const float *x,
                     const float *t, const int *y, int stop_block);
/* The (n, T, D) output tokens of block stop_block of the last forward (on a device
 * model: after a forward with stop_block > 0 only; copied to the host on the first call). */
const float *dap_dit_features(dap_dit_state *s);
/* Those tokens averaged over the T tokens: out (n, D) (on a device model averaged there:
 * n D floats come down instead of n T D). */
void dap_dit_features_mean(const dap_dit *m, dap_dit_state *s, float *out);

/* A device state's pooled rows of the last forward stopped at block l, left on the device:
 * a DEVICE pointer to (n, T D) tokens (mean 0) or (n, D) means (mean 1; the state's
 * scratch, valid until its next call), for the guidance's energy there (distill/
 * backbone_dit.c); dap_dit_backward_from_block(_mean) take device gradient rows too.
 * A host state: NULL. */
const float *dap_dit_features_device(const dap_dit *m, dap_dit_state *s, int mean);

/* After a full forward (needs cache_blocks = depth): parameter gradients accumulate
 * into m->params.grad; frozen tensors (pos_embed; all but the biases and the label table
 * in a DiffFit fine-tune) get none, and their weight-gradient products are skipped; dx (n, C, H, W) overwritten when not
 * NULL. dout (n, Co, H, W). A device model's training state (dap_dit_state_create_train):
 * the gradients are overwritten on the device (every tensor's; the update skips the frozen
 * ones) and dx must be NULL. */
void dap_dit_backward(dap_dit *m, dap_dit_state *s, const float *dout, float *dx);
/* After a forward with stop_block = l (needs cache_blocks >= l): dx (n, C, H, W) =
 * d(loss)/dx from dfeat (n, T, D) = d(loss)/d(block l's output). No parameter gradients. */
void dap_dit_backward_from_block(const dap_dit *m, dap_dit_state *s, int l, const float *dfeat,
                                 float *dx);
/* The same from dmean (n, D), the gradient of dap_dit_features_mean's rows: every token's
 * gradient is dmean / T (on a device model spread there). */
void dap_dit_backward_from_block_mean(const dap_dit *m, dap_dit_state *s, int l, const float *dmean,
                                      float *dx);

#endif /* DAP_DIT_H */
