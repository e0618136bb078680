/*
 * optim.h: optimizers over a dap_params (AdamW, SGD with momentum), an exponential
 * moving average of weights, global gradient-norm clipping, and saving/loading the
 * optimizer state so a killed run resumes exactly.
 *
 * Semantics follow PyTorch (torch.optim.AdamW / SGD, torch.nn.utils.clip_grad_norm_)
 * for one parameter group whose weight decay is zero for params marked no_decay.
 * Params marked frozen are never touched (no state update, no decay, no clipping
 * contribution), like PyTorch tensors with requires_grad=False.
 * State arrays are laid out like ps->data (ps->total floats, same offsets).
 */
#ifndef DAP_OPTIM_H
#define DAP_OPTIM_H

#include <stdint.h>

#include "core/params.h"
#include "io/io.h"

/* ---- AdamW ----------------------------------------------------------------- */
typedef struct dap_adamw {
    double beta1, beta2, eps, weight_decay; /* double, like PyTorch's Python floats */
    int decay_all; /* 1: decay no_decay params too (one plain PyTorch param group) */
    int64_t step;  /* number of steps taken */
    size_t n;      /* = ps->total at init */
    float *m, *v;  /* (n) first / second moments ("exp_avg", "exp_avg_sq") */
} dap_adamw;

/* PyTorch defaults: beta1 0.9, beta2 0.999, eps 1e-8, weight_decay 0.01. */
void dap_adamw_init(dap_adamw *o, const dap_params *ps, double beta1, double beta2, double eps,
                    double weight_decay);
void dap_adamw_free(dap_adamw *o);
/* One update with learning rate lr from ps->grad (which it does not clear):
 *   p -= lr*wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). */
void dap_adamw_step(dap_adamw *o, dap_params *ps, double lr);

/* ---- SGD with momentum --------------------------------------------------------- */
typedef struct dap_sgd {
    double momentum, weight_decay;
    int decay_all; /* 1: decay no_decay params too (torch.optim.SGD(model.parameters())) */
    int64_t step;
    size_t n;
    float *buf; /* (n) momentum buffer, NULL when momentum == 0 */
} dap_sgd;

void dap_sgd_init(dap_sgd *o, const dap_params *ps, double momentum, double weight_decay);
void dap_sgd_free(dap_sgd *o);
/* g += wd*p;  buf = mu*buf + g (buf = g on the first step);  p -= lr*buf. */
void dap_sgd_step(dap_sgd *o, dap_params *ps, double lr);

/* ---- EMA of weights ------------------------------------------------------------ */
/* ema = decay*ema + (1-decay)*p for every non-frozen param; frozen params are copied.
 * `ema` must have the same table as ps (same total and offsets). */
void dap_ema_update(dap_params *ema, const dap_params *ps, double decay);
/* The same into a plain array of ps->total floats. */
void dap_ema_update_f32(float *ema, const dap_params *ps, double decay);

/* ---- gradient clipping ----------------------------------------------------------- */
/* Global L2 norm over the grads of all non-frozen params (accumulated in double);
 * if max_norm > 0 and norm > max_norm, scales them by max_norm / (norm + 1e-6) as
 * PyTorch's clip_grad_norm_ does. Returns the norm before clipping. */
float dap_clip_grad_norm(dap_params *ps, float max_norm);
/* The norm alone. */
float dap_grad_norm(const dap_params *ps);

/* ---- state save / load ------------------------------------------------------------ */
/* Adds the state to a safetensors writer under `prefix` (may be ""):
 *   <prefix>step (I64, shape [1]), <prefix>exp_avg.<key>, <prefix>exp_avg_sq.<key>
 * (SGD: <prefix>momentum_buffer.<key>) for every non-frozen param, F32. */
void dap_adamw_write(const dap_adamw *o, const dap_params *ps, dap_st_writer *w,
                     const char *prefix);
void dap_sgd_write(const dap_sgd *o, const dap_params *ps, dap_st_writer *w, const char *prefix);
/* Reads the state written above from an opened file; every key must be present with
 * its param's shape (errors name the file and key). Other keys in the file are ignored. */
int dap_adamw_read(dap_adamw *o, const dap_params *ps, const dap_st *st, const char *prefix);
int dap_sgd_read(dap_sgd *o, const dap_params *ps, const dap_st *st, const char *prefix);
/* Convenience: a file holding only the state (written atomically). */
int dap_adamw_save(const dap_adamw *o, const dap_params *ps, const char *path);
int dap_adamw_load(dap_adamw *o, const dap_params *ps, const char *path);

#endif /* DAP_OPTIM_H */
