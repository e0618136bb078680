/*
 * cuda.h: the CUDA backend's C interface (built only with `make CUDA=1`; callers test
 * DAP_CUDA). Today it runs the classifier layer sequence of models/cnn.h on the GPU:
 * the same layers, the same gradient rules (parameter gradients accumulate into
 * params.grad, the input gradient is overwritten), kernels written for this layout plus
 * cuBLAS for the matrix products (convolutions as im2col + one SGEMM over the batch,
 * full FP32: no TF32). The DiT and its guidance stay on the CPU for now.
 */
#ifndef DAP_CUDA_H
#define DAP_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct dap_cnn;
struct dap_cnn_state;

/* Checks that a device is there and usable (an allocation and a cuBLAS handle);
 * writes a line naming it into `desc`. DAP_ERR_MISSING with the reason otherwise. */
int dap_cuda_init(char *desc, size_t n);

/* The device half of a classifier state (dap_cnn_state.dev), sized for `batch`.
 * A CUDA failure after dap_cuda_init succeeded is reported on stderr and exits. */
void *dap_cnn_cuda_create(const struct dap_cnn *m, int batch, int with_grad);
void dap_cnn_cuda_free(void *dev);
/* As dap_cnn_forward / dap_cnn_backward: inputs and outputs are host arrays. The
 * forward leaves the logits and the penultimate features in s->out (host); a training
 * forward also brings back the BatchNorm running statistics. */
void dap_cnn_cuda_forward(struct dap_cnn *m, struct dap_cnn_state *s, const float *x, int n,
                          int train);
void dap_cnn_cuda_backward(struct dap_cnn *m, struct dap_cnn_state *s, const float *x,
                           const float *dlogits, float *dx, int train);

/* Copies layer `layer`'s output (which 0) or its gradient (which 1) of the last pass,
 * `n` floats, to the host (for tests that compare layer by layer). */
void dap_cnn_cuda_fetch(const void *dev, int layer, int which, float *host, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* DAP_CUDA_H */
