/*
 * params.h: a model's weights described once. A model registers each tensor (its
 * PyTorch state_dict key, verbatim, and its shape) in one table; sizes, the one
 * contiguous allocation, pointer lookup, strict safetensors load/save, gradients and
 * optimizer state all derive from that table.
 */
#ifndef DAP_PARAMS_H
#define DAP_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#define DAP_PARAM_MAX_DIMS 4

typedef struct dap_param {
    char *key;
    int ndim;
    int64_t shape[DAP_PARAM_MAX_DIMS];
    size_t numel;
    size_t offset; /* in floats, into data / grad */
    int no_decay;  /* 1 for biases, norms and embeddings that weight decay should skip */
    int frozen;    /* 1 for fixed buffers kept in the state_dict (DiT's pos_embed): never updated */
} dap_param;

typedef struct dap_params {
    dap_param *p;
    int n, cap;
    size_t total; /* floats */
    float *data;  /* total floats, after dap_params_alloc */
    float *grad;  /* total floats or NULL */
} dap_params;

void dap_params_init(dap_params *ps);
void dap_params_free(dap_params *ps);
/* Registers a tensor; returns its index. Must precede dap_params_alloc. */
int dap_params_add(dap_params *ps, const char *key, int ndim, const int64_t *shape);
/* Convenience: shape given as up to 4 ints, trailing zeros ignored. Set no_decay/frozen
 * on ps->p[index] after adding. */
int dap_params_add4(dap_params *ps, const char *key, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
/* Allocates data (zeroed) and, if with_grad, grad. */
void dap_params_alloc(dap_params *ps, int with_grad);
int dap_params_find(const dap_params *ps, const char *key); /* index or -1 */
/* Pointer to a tensor's data / grad (asserts the key exists: a contract, not input). */
float *dap_params_ptr(const dap_params *ps, const char *key);
float *dap_params_grad(const dap_params *ps, const char *key);
void dap_params_zero_grad(dap_params *ps);

/* Strict load from safetensors: every registered key must be present with exactly its
 * shape (any float dtype), no unknown key unless it is listed in `ignore` (a
 * NULL-terminated list of prefixes, may be NULL) or `allow_extra`; NaN/Inf rejected.
 * Errors name the file, the key, expected and found shapes. */
int dap_params_load(dap_params *ps, const char *path, const char *const *ignore, int allow_extra);
/* The checks of dap_params_load on names, shapes and dtypes alone, before dap_params_alloc:
 * a file's claims (metadata) can be held against its tensors before any memory is sized
 * by them. */
int dap_params_check_file(const dap_params *ps, const char *path, const char *const *ignore, int allow_extra);
/* Save all tensors as F32 (or F16) with optional metadata pairs (NULL-terminated
 * key, value, key, value, ...), atomically. */
int dap_params_save(const dap_params *ps, const char *path, int f16, const char *const *meta);

#endif /* DAP_PARAMS_H */
