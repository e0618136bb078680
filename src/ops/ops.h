/*
 * ops.h: the CPU op interface. Every op is a pair of plain functions over float
 * pointers and sizes, forward and backward side by side (llm.c argument order:
 * outputs, saved caches, inputs, weights, sizes). A CUDA backend implements the
 * same signatures (src/cuda/, later).
 *
 * Gradient rule:
 *   - parameter gradients (dw, db, dgamma, ...) ACCUMULATE (+=);
 *   - input/activation gradients (dinp, dx, ...) OVERWRITE; a model adds where paths
 *     join (residuals, the adaLN conditioning) itself;
 *   - a NULL gradient pointer skips that work (guidance asks for the input gradient only).
 * Layouts are row-major; images are NCHW; token tensors are (B, T, C).
 * All ops are OpenMP-parallel and give identical results for any thread count unless
 * noted (reductions over the batch in parameter gradients may differ in the last bits).
 */
#ifndef DAP_OPS_H
#define DAP_OPS_H

#include <stddef.h>

/* ---- linear (ops/linear.c) -------------------------------------------------
 * out = inp @ w^T + b.   inp (N, IC), w (OC, IC) (PyTorch layout), b (OC) or NULL,
 * out (N, OC). Uses OpenBLAS sgemm. */
void dap_linear_forward(float *out, const float *inp, const float *w, const float *b, int n, int ic,
                        int oc);
void dap_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, int n, int ic, int oc);

/* Plain sgemm helper: C (M, N) = alpha * op(A) op(B) + beta * C, row-major,
 * ta/tb: 0 = as stored, 1 = transposed. */
void dap_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);

/* ---- conv2d (ops/conv.c) -----------------------------------------------------
 * out (N, OC, OH, OW) = conv(inp (N, C, H, W), w (OC, C, KH, KW)) + b (OC, or NULL),
 * OH = (H + 2 pad - KH) / stride + 1. `work` is caller-owned scratch of at least
 * dap_conv2d_work_floats(&d) floats (no hidden allocation). */
typedef enum {
    DAP_CONV_IM2COL = 0,   /* im2col + sgemm: every shape */
    DAP_CONV_WINOGRAD = 1, /* Winograd F(2x2, 3x3): 3x3 kernels, stride 1, padding 1 */
} dap_conv_algo;
typedef struct dap_conv2d_dims {
    int n, c, h, w;    /* input */
    int oc, kh, kw;    /* weight */
    int stride, pad;   /* same in both directions */
    int oh, ow;        /* derived by dap_conv2d_dims_init */
    int algo;          /* dap_conv_algo, chosen by dap_conv2d_dims_init; a caller may set
                        * DAP_CONV_WINOGRAD on any shape dap_conv2d_winograd_fits before
                        * sizing the work buffer, or DAP_CONV_IM2COL on any shape */
} dap_conv2d_dims;
void dap_conv2d_dims_init(dap_conv2d_dims *d, int n, int c, int h, int w, int oc, int kh, int kw,
                          int stride, int pad);
int dap_conv2d_winograd_fits(const dap_conv2d_dims *d);
/* Process-wide, for A/B benchmarks and tests: where dap_conv2d_dims_init picks Winograd.
 * 0: never; 1 (default): where it fits and pays (both channel counts >= 16); 2: wherever
 * it fits. Returns the old value. Set it before sizing work buffers (model states are
 * sized for the algorithm chosen when they were created). */
int dap_conv2d_set_winograd(int mode);
int dap_conv2d_winograd_mode(void);
/* Applies $DAP_WINOGRAD (0, 1 or 2) when it is set and not empty; DAP_ERR_ARG naming the
 * variable for any other value (the mode is then left as it was). */
int dap_conv2d_winograd_from_env(void);
size_t dap_conv2d_work_floats(const dap_conv2d_dims *d);
void dap_conv2d_forward(float *out, const float *inp, const float *w, const float *b,
                        const dap_conv2d_dims *d, float *work);
void dap_conv2d_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, const dap_conv2d_dims *d, float *work);

/* ---- normalisation (ops/norm.c) ----------------------------------------------
 * LayerNorm over the last dim C of (N, C). w, b (C) or NULL (no affine).
 * Caches mean (N), rstd (N) are written by forward and read by backward. */
void dap_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int n, int c, float eps);
void dap_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int n, int c);

/* GroupNorm over (N, C, HW) with G groups (instance norm: G = C). w, b (C) or NULL.
 * Caches mean, rstd (N, G). */
void dap_groupnorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int n, int c, int hw, int g, float eps);
void dap_groupnorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int n, int c,
                            int hw, int g);

/* BatchNorm2d over (N, C, HW). Training: batch statistics, caches mean, rstd (C), and
 * running_mean/var (C) updated with `momentum` (PyTorch convention, unbiased var) when
 * not NULL. Eval: uses running stats; backward then is the affine-only gradient. */
void dap_batchnorm_forward_train(float *out, float *mean, float *rstd, float *running_mean,
                                 float *running_var, const float *inp, const float *w,
                                 const float *b, int n, int c, int hw, float eps, float momentum);
void dap_batchnorm_backward_train(float *dinp, float *dw, float *db, const float *dout,
                                  const float *inp, const float *w, const float *mean,
                                  const float *rstd, int n, int c, int hw);
void dap_batchnorm_forward_eval(float *out, const float *inp, const float *w, const float *b,
                                const float *running_mean, const float *running_var, int n, int c,
                                int hw, float eps);
void dap_batchnorm_backward_eval(float *dinp, float *dw, float *db, const float *dout,
                                 const float *inp, const float *w, const float *running_mean,
                                 const float *running_var, int n, int c, int hw, float eps);

/* ---- attention (ops/attention.c) ---------------------------------------------
 * Multi-head self-attention core (no projections): qkv (B, T, 3C) packed as
 * [q | k | v] along the last dim (PyTorch/timm layout: reshape(B,T,3,NH,HS)),
 * out (B, T, C), att (B, NH, T, T) softmax probabilities saved for backward,
 * scale 1/sqrt(HS). Backward overwrites dqkv (B, T, 3C).
 * `work` is scratch of dap_attention_work_floats() floats. */
size_t dap_attention_work_floats(int b, int t, int c, int nh);
void dap_attention_forward(float *out, float *att, const float *qkv, int b, int t, int c, int nh,
                           float *work);
void dap_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                            int b, int t, int c, int nh, float *work);

/* ---- activations (ops/act.c): elementwise over n values ---------------------- */
void dap_gelu_forward(float *out, const float *inp, size_t n); /* tanh approximation */
void dap_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);
void dap_silu_forward(float *out, const float *inp, size_t n);
void dap_silu_backward(float *dinp, const float *dout, const float *inp, size_t n);
void dap_relu_forward(float *out, const float *inp, size_t n);
void dap_relu_backward(float *dinp, const float *dout, const float *inp, size_t n);

/* ---- pooling and resampling (ops/pool.c), NCHW ------------------------------- */
/* k x k window, stride s, no padding; OH = (H - k) / s + 1. */
void dap_avgpool2d_forward(float *out, const float *inp, int n, int c, int h, int w, int k, int s);
void dap_avgpool2d_backward(float *dinp, const float *dout, int n, int c, int h, int w, int k, int s);
/* argmax (N, C, OH, OW) int cache of the flat index inside each (H, W) plane. */
void dap_maxpool2d_forward(float *out, int *argmax, const float *inp, int n, int c, int h, int w,
                           int k, int s);
void dap_maxpool2d_backward(float *dinp, const float *dout, const int *argmax, int n, int c, int h,
                            int w, int k, int s);
/* (N, C, HW) -> (N, C) */
void dap_global_avgpool_forward(float *out, const float *inp, int n, int c, int hw);
void dap_global_avgpool_backward(float *dinp, const float *dout, int n, int c, int hw);
/* Token layout (n, t, d): out (n, d) = the mean over the t tokens, summed token by token;
 * its backward overwrites dinp (n, t, d) with dout / t. */
void dap_token_mean_forward(float *out, const float *inp, int n, int t, int d);
void dap_token_mean_backward(float *dinp, const float *dout, int n, int t, int d);
/* nearest upsampling by an integer factor: (N, C, H, W) -> (N, C, H*f, W*f) */
void dap_upsample_nearest_forward(float *out, const float *inp, int n, int c, int h, int w, int f);
void dap_upsample_nearest_backward(float *dinp, const float *dout, int n, int c, int h, int w, int f);

/* ---- adaLN pieces (ops/modulate.c) -------------------------------------------
 * modulate: out (B, T, C) = x * (1 + scale[b]) + shift[b]; shift and scale are rows of
 * length C taken with row stride `ld` (they are chunks of the (B, 6C) adaLN output).
 * Backward overwrites dx (B, T, C) and the C-wide rows of dshift/dscale (stride ld). */
void dap_modulate_forward(float *out, const float *x, const float *shift, const float *scale,
                          int b, int t, int c, int ld);
void dap_modulate_backward(float *dx, float *dshift, float *dscale, const float *dout,
                           const float *x, const float *scale, int b, int t, int c, int ld);
/* gated residual: x (B, T, C) += gate[b] * y (gate rows of length C, stride ld).
 * Backward: dx is the running residual gradient (left as is: the identity path);
 * dy overwritten = gate * dout; dgate row overwritten = sum_t dout * y. */
void dap_gate_residual_forward(float *x, const float *y, const float *gate, int b, int t, int c,
                               int ld);
void dap_gate_residual_backward(float *dy, float *dgate, const float *dout, const float *y,
                                const float *gate, int b, int t, int c, int ld);

/* ---- losses (ops/loss.c) --------------------------------------------------------
 * Softmax cross-entropy with integer targets, mean over N. logits (N, K),
 * probs (N, K) cache. Returns the mean loss. Backward overwrites dlogits with
 * dloss * (probs - onehot) / N. */
float dap_xent_forward(float *probs, const float *logits, const int *targets, int n, int k);
void dap_xent_backward(float *dlogits, const float *probs, const int *targets, int n, int k,
                       float dloss);
/* Soft-target cross-entropy (for CutMix / label mixing): targets (N, K) rows sum to 1. */
float dap_xent_soft_forward(float *probs, const float *logits, const float *targets, int n, int k);
void dap_xent_soft_backward(float *dlogits, const float *probs, const float *targets, int n, int k,
                            float dloss);
/* KL(softmax(teacher/T) || softmax(student/T)), mean over N, multiplied by T^2 if
 * `scale_t2` (the usual distillation convention). Saves p_s (N, K), p_t (N, K). */
float dap_kl_forward(float *p_s, float *p_t, const float *student, const float *teacher, int n,
                     int k, float temperature, int scale_t2);
void dap_kl_backward(float *dstudent, const float *p_s, const float *p_t, int n, int k,
                     float temperature, int scale_t2, float dloss);
/* Mean squared error over n values: mean((a - b)^2). Backward overwrites da
 * (and db when not NULL, with the opposite sign). */
float dap_mse_forward(const float *a, const float *b, size_t n);
void dap_mse_backward(float *da, float *db, const float *a, const float *b, size_t n, float dloss);

#endif /* DAP_OPS_H */
