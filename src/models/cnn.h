/*
 * cnn.h: the layer sequence shared by the image classifiers of the evaluation
 * protocols (ConvNet-D, ResNetAP-10, ResNet-18). A model is a list of layers, each
 * reading the output of one (ADD: two) earlier layers; a model builder (convnet.c,
 * resnet.c) appends layers in the order PyTorch runs them. The weights live in one
 * dap_params table under their PyTorch state_dict keys, so a checkpoint of the
 * reference module loads unchanged.
 *
 * Model (architecture + weights, dap_cnn) and per-batch buffers (dap_cnn_state) are
 * separate: a state is created for a batch capacity and can be reused for any n <= it.
 * Gradients follow ops.h: parameter gradients accumulate into params.grad, activation
 * gradients overwrite, and add where two paths join (a block input feeding the main
 * path and the shortcut).
 */
#ifndef DAP_CNN_H
#define DAP_CNN_H

#include <stdint.h>

#include "core/params.h"

typedef enum { DAP_NORM_INSTANCE = 0, DAP_NORM_BATCH = 1, DAP_NORM_NONE = 2 } dap_norm_kind;

typedef enum {
    DAP_CNN_CONV,    /* conv2d, optional bias */
    DAP_CNN_NORM,    /* GroupNorm(C, C) affine (instance norm) or BatchNorm2d */
    DAP_CNN_AVGPOOL, /* k x k, stride s */
    DAP_CNN_MAXPOOL, /* k x k, stride s, padding pad (padded with -inf) */
    DAP_CNN_GAP,     /* global average pool -> (C, 1, 1) */
    DAP_CNN_LINEAR,  /* flatten, then linear */
    DAP_CNN_ADD      /* src + src2 (residual join) */
} dap_cnn_op;

typedef struct dap_cnn_layer {
    dap_cnn_op op;
    int src, src2;       /* input layers; -1 is the network input */
    int c, h, w;         /* output shape of one image */
    int k, stride, pad;  /* CONV, pools */
    int norm;            /* NORM: dap_norm_kind */
    int relu;            /* ReLU applied to this layer's output */
    int init;            /* CONV: 0 PyTorch default, 1 kaiming normal fan_out (torchvision ResNet) */
    int w_id, b_id;      /* parameter indices, -1 when absent */
    int rm_id, rv_id;    /* BatchNorm running mean / var (frozen buffers) */
} dap_cnn_layer;

typedef struct dap_cnn {
    char arch[32];
    int in_c, in_h, in_w, num_classes;
    dap_cnn_layer *layers;
    int nlayers, cap;
    int feat; /* the layer whose output is the penultimate feature vector */
    dap_params params;
} dap_cnn;

/* Builder. All builder calls precede dap_cnn_finish, which allocates the weights (and
 * their gradients). Each append returns the new layer's index. */
void dap_cnn_init(dap_cnn *m, const char *arch, int c, int h, int w);
int dap_cnn_conv(dap_cnn *m, int src, const char *key, int oc, int k, int stride, int pad,
                 int bias);
/* Appends a norm layer named `key` (or nothing for DAP_NORM_NONE: returns src, and the
 * relu flag then goes onto src). */
int dap_cnn_norm(dap_cnn *m, int src, const char *key, int kind, int relu);
int dap_cnn_pool(dap_cnn *m, int src, dap_cnn_op op, int k, int stride, int pad);
int dap_cnn_gap(dap_cnn *m, int src);
int dap_cnn_linear(dap_cnn *m, int src, const char *key, int out);
int dap_cnn_add(dap_cnn *m, int a, int b, int relu);
void dap_cnn_finish(dap_cnn *m, int num_classes);
/* While on (for the calling thread), dap_cnn_finish leaves the weights unallocated: the
 * caller checks the parameter table (e.g. against a checkpoint whose metadata sized it)
 * and then calls dap_params_alloc(&m->params, 1) itself. */
void dap_cnn_defer_alloc(int on);
void dap_cnn_free(dap_cnn *m);

/* PyTorch's default initialisation (kaiming-uniform(a = sqrt 5) weights, uniform
 * 1/sqrt(fan_in) biases; norms 1 / 0; running var 1), or kaiming normal fan_out for
 * layers built with init = 1. Deterministic in seed. */
void dap_cnn_init_weights(dap_cnn *m, uint64_t seed);

/* Floats in one image's input / in the penultimate feature vector. */
int dap_cnn_in_size(const dap_cnn *m);
int dap_cnn_feat_dim(const dap_cnn *m);

typedef struct dap_cnn_state {
    int batch;      /* capacity */
    int nlayers;
    int n;          /* images in the last forward */
    int with_grad;
    float **out;    /* (nlayers) outputs, (batch, c, h, w) each */
    float **dout;   /* (nlayers) their gradients, when with_grad: layers whose gradients are never
                     * alive together share a buffer (of dpool) */
    float **dpool;  /* the gradient buffers themselves (ndpool) */
    int ndpool;
    float **mean, **rstd; /* norm caches: (batch, C) instance, (C) batch */
    int **argmax;   /* max-pool caches */
    float **padded; /* max-pool padded inputs (only when pad > 0) */
    float *work;    /* conv scratch */
    float *tmp;     /* a gradient that must be added into an already written one */
    void *dev;      /* the device half (src/cuda/) when the state was created on the cuda
                     * device (core/device.h); then only the logits and features live
                     * in out[] on the host */
} dap_cnn_state;

/* The gradient buffers a backward of `batch` images needs: slot[i] (nlayers) the buffer of
 * layer i's gradient, cap[b] (room for nlayers) each buffer's floats; returns their count.
 * Layers whose gradients are never alive together share one (cnn.c). */
int dap_cnn_grad_slots(const dap_cnn *m, int batch, int *slot, size_t *cap);
/* Process-wide, for tests that read every layer's gradient after a backward (states made
 * while it is off keep one buffer a layer); returns the old setting (default 1). */
int dap_cnn_set_grad_sharing(int on);

/* On the device chosen when it is created (core/device.h). */
void dap_cnn_state_init(dap_cnn_state *s, const dap_cnn *m, int batch, int with_grad);
void dap_cnn_state_free(dap_cnn_state *s);

/* A GPU state's device input buffer (batch images) and its stream (a cudaStream_t), for
 * callers that assemble the batch there; NULL on a CPU state. */
float *dap_cnn_state_input(dap_cnn_state *s, void **stream);
/* x (n, in_c, in_h, in_w) -> logits (n, num_classes), returned from the state; on a GPU
 * state x may be NULL: the input is the one left in dap_cnn_state_input.
 * train = 1: BatchNorm uses batch statistics and updates its running buffers (which is
 * why the model is not const); train = 0: running statistics. */
const float *dap_cnn_forward(dap_cnn *m, dap_cnn_state *s, const float *x, int n, int train);
/* The penultimate features (n, feat_dim) of the last forward. */
const float *dap_cnn_features(const dap_cnn *m, const dap_cnn_state *s);
/* Backward of the last forward (which must have had train = 1 for BatchNorm to get
 * batch-statistics gradients; train = 0 gives the eval-mode gradient). dlogits
 * (n, num_classes). Parameter gradients accumulate into m->params.grad; dx (n, in) is
 * overwritten when not NULL. */
void dap_cnn_backward(dap_cnn *m, dap_cnn_state *s, const float *x, const float *dlogits,
                      float *dx, int train);

/* ---- the weights where the state runs (a GPU state: resident training) ----------------
 * dap_cnn_state_keep_weights: on a GPU state, uploads m's weights (and the optimiser's
 * state of a resumed run) once; from then on the device copy is the one that counts:
 * forwards stop uploading, backwards leave the gradient on the device (overwritten, and
 * m->params.grad untouched), dap_cnn_state_opt_step takes the optimiser's step there, and
 * dap_cnn_state_sync brings weights, buffers and the optimiser's state back (for a mid-run
 * state file, and at the end). Returns 1 then; 0 on a CPU state, or with
 * DAP_CUDA_RESIDENT=0 in the environment (the per-step copies, for comparison), where the
 * caller zeroes the gradient and steps its optimiser on the host as before.
 * sgd / adamw: the optimiser (one of them), or neither for a state that only runs
 * forwards (a teacher, a test pass) while m's weights stay as they are. */
struct dap_sgd;
struct dap_adamw;
int dap_cnn_state_keep_weights(dap_cnn_state *s, const dap_cnn *m, const struct dap_sgd *sgd,
                               const struct dap_adamw *adamw);
void dap_cnn_state_opt_step(dap_cnn_state *s, const dap_cnn *m, struct dap_sgd *sgd,
                            struct dap_adamw *adamw, double lr);
void dap_cnn_state_sync(dap_cnn_state *s, dap_cnn *m, struct dap_sgd *sgd, struct dap_adamw *adamw);

#endif /* DAP_CNN_H */
