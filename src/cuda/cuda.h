/*
 * cuda.h: the CUDA backend's C interface (built only with `make CUDA=1`; callers test
 * DAP_CUDA). Today it runs the classifier layer sequence of models/cnn.h on the GPU:
 * the same layers, the same gradient rules (parameter gradients accumulate into
 * params.grad, the input gradient is overwritten), kernels written for this layout plus
 * cuBLAS for the matrix products (convolutions as im2col + one SGEMM over the batch,
 * full FP32: no TF32). dit_cuda.cu runs the DiT of models/dit.h for sampling, the
 * DAP guidance and training (below); energy_cuda.cu the guidance's energy on device rows;
 * vae_cuda.cu the SD VAE's operations.
 */
#ifndef DAP_CUDA_H
#define DAP_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct dap_cnn;
struct dap_cnn_state;
struct dap_params;
struct dap_sgd;
struct dap_adamw;

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

/* Resident training (models/cnn.h, dap_cnn_state_keep_weights): _resident uploads the
 * weights (and the optimiser's state when it has taken steps: a resumed run) once, after
 * which forwards no longer upload them, training forwards no longer bring the BatchNorm
 * statistics back, and backwards leave the gradient on the device (overwritten, not
 * accumulated) for _opt_step, which is core/optim.c's step there (it advances the host
 * optimiser's step count; a count of 0 starts fresh moments). _sync copies the weights,
 * buffers and optimiser state back to the host. sgd / adamw: one of them, or neither for
 * a state that only runs forwards. */
void dap_cnn_cuda_resident(void *dev, const struct dap_params *ps, const struct dap_sgd *sgd,
                           const struct dap_adamw *adamw);
void dap_cnn_cuda_opt_step(void *dev, const struct dap_params *ps, struct dap_sgd *sgd,
                           struct dap_adamw *adamw, double lr);
void dap_cnn_cuda_sync(void *dev, struct dap_params *ps, struct dap_sgd *sgd, struct dap_adamw *adamw);

/* Copies layer `layer`'s output (which 0) or its gradient (which 1) of the last pass,
 * `n` floats, to the host (for tests that compare layer by layer). */
void dap_cnn_cuda_fetch(const void *dev, int layer, int which, float *host, size_t n);

/* ---- training batches on the device (augment_cuda.cu) ----------------------------------
 * A training set copied up once (_create: DAP_ERR_NOMEM naming the sizes when the device
 * lacks room, checked before anything is allocated), with room for batches of up to nmax.
 * _aug_apply queues on `stream` (a cudaStream_t, NULL: the default one): images idx[0..n)
 * of the set gathered into dst (device, p->n images), then the plan's stages
 * (eval/augment.h, drawn on the host). _scale_shift: dst = a_k src + b_k on channel k
 * (c <= 3) of n device images. */
struct dap_aug_plan;
typedef struct dap_cuda_images dap_cuda_images;
int dap_cuda_images_create(dap_cuda_images **out, const float *x, int n, int c, int h, int w, int nmax);
void dap_cuda_images_destroy(dap_cuda_images *s);
void dap_cuda_aug_apply(dap_cuda_images *s, const int *idx, const struct dap_aug_plan *p, float *dst, void *stream);
void dap_cuda_scale_shift(float *dst, const float *src, int n, int c, size_t hw, const float *a, const float *b,
                          void *stream);
/* Work queued on `waiter` from now on starts after what `on` holds now (streams). */
void dap_cuda_stream_wait(void *waiter, void *on);
/* The classifier state's device input (n <= batch images) and the stream its passes run
 * on: a forward given x = NULL reads the input from there. */
float *dap_cnn_cuda_input(void *dev, void **stream);

/* ---- the DiT (dit_cuda.cu) -------------------------------------------------------------
 * Mirrors models/dit.h: a model (the weights, uploaded once, read-only) apart from the
 * per-batch state (activations planned once: one allocation for `batch` samples, a cached
 * set per block up to cache_blocks as dap_dit_state_create_ex). Only what sampling and the
 * guidance need: the forward (full, or stopped after block l) and the backward from block
 * l to the input; and for `dap train`, a training state (every block's branch inputs
 * kept) whose backward accumulates the parameter gradients, with AdamW, clipping and the
 * EMA on the device (dap_dit_cuda_train_*).
 *
 * Pointers: x, t, y, out, dfeat and dx may be host or device memory (copies use
 * cudaMemcpyDefault, which tells them apart by address: unified virtual addressing).
 * Every call returns with its results in place (the device's stream synchronised).
 * dap_dit_cuda_features gives a DEVICE pointer (n, T, D); _features_copy copies it out.
 * `precision` is a dap_precision (core/device.h): the cuBLAS compute type, and under bf16
 * the storage of an inference model (below).
 *
 * Errors before work (status + message): no device, bf16 on a GPU older than compute
 * 8.0, weights or activations larger than the device's free memory. A CUDA failure
 * after that (a launch error) is reported on stderr and exits, like the classifiers. */
struct dap_dit;
typedef struct dap_dit_cuda dap_dit_cuda;
typedef struct dap_dit_cuda_state dap_dit_cuda_state;

/* Storage: FP32, or under precision bf16 BF16 for what the matrix products read (the
 * weight matrices and the activations on their way into a product, forward and backward),
 * FP32 for the rest (biases, pos_embed, the label table, the residual stream, the products'
 * outputs, statistics); the products accumulate in FP32. A model with gradients (training)
 * keeps FP32 master weights beside the BF16 copy (AdamW updates the master and refreshes
 * the copy); one without keeps the BF16 matrices alone. dap_dit_cuda_storage_bf16 says
 * which storage, _weight_bytes what the weights take. */
int dap_dit_cuda_storage_bf16(const struct dap_dit *m, int precision);
size_t dap_dit_cuda_weight_bytes(const struct dap_dit *m, int precision);
int dap_dit_cuda_create(dap_dit_cuda **out, const struct dap_dit *m, int precision);
void dap_dit_cuda_destroy(dap_dit_cuda *d);
/* Copies m's weights up again (after the host copy changed; same config). */
void dap_dit_cuda_upload(dap_dit_cuda *d, const struct dap_dit *m);
/* "cuda: <GPU name>, <memory>, compute x.y" */
const char *dap_dit_cuda_describe(const dap_dit_cuda *d);
/* Device bytes a state of this size would take (for checks before the work). */
size_t dap_dit_cuda_state_bytes_for(const dap_dit_cuda *d, int batch, int cache_blocks);
int dap_dit_cuda_state_create(dap_dit_cuda_state **out, const dap_dit_cuda *d, int batch, int cache_blocks);
void dap_dit_cuda_state_destroy(dap_dit_cuda_state *s);
void dap_dit_cuda_state_set_batch(dap_dit_cuda_state *s, int n);
size_t dap_dit_cuda_state_bytes(const dap_dit_cuda_state *s);
/* As dap_dit_forward: out (n, Co, H, W) or NULL; x (n, C, H, W); t (n); y (n). */
void dap_dit_cuda_forward(const dap_dit_cuda *d, dap_dit_cuda_state *s, float *out, const float *x,
                          const float *t, const int *y, int stop_block);
const float *dap_dit_cuda_features(const dap_dit_cuda_state *s); /* device pointer */
void dap_dit_cuda_features_copy(const dap_dit_cuda *d, const dap_dit_cuda_state *s, float *dst);
/* As dap_dit_features_mean: out (n, D), the tokens' mean, computed on the device; _dev
 * leaves it there and returns the device rows (the state's scratch: valid until the next
 * call on the state). */
void dap_dit_cuda_features_mean(const dap_dit_cuda *d, dap_dit_cuda_state *s, float *out);
const float *dap_dit_cuda_features_mean_dev(const dap_dit_cuda *d, dap_dit_cuda_state *s);
/* As dap_dit_backward_from_block: dfeat (n, T, D) -> dx (n, C, H, W). Needs a new forward
 * before the next backward (the state's scratch holds the gradients). */
void dap_dit_cuda_backward_from_block(const dap_dit_cuda *d, dap_dit_cuda_state *s, int l,
                                      const float *dfeat, float *dx);
/* As dap_dit_backward_from_block_mean: dmean (n, D), spread over the tokens on the device. */
void dap_dit_cuda_backward_from_block_mean(const dap_dit_cuda *d, dap_dit_cuda_state *s, int l,
                                           const float *dmean, float *dx);
/* Training (diffusion/train.c through models/dit.h): the gradients, EMA weights and AdamW
 * moments live on the device beside the weights. _train_begin allocates them (first call;
 * DAP_ERR_NOMEM naming the sizes when the device lacks room) and uploads the host's
 * weights, `ema` and the moments m, v (NULL: zeros); _train_download copies any of them
 * back (NULL: skipped). A training state keeps what the parameter gradients need
 * (cache_blocks = depth); after its full forward, _backward_params takes dout (n, Co, H, W)
 * (host or device) and overwrites the gradients; _train_update then does dap_clip_grad_norm,
 * dap_adamw_step (opt->step advances on the host) and dap_ema_update over the host table's
 * trainable tensors and returns the norm before clipping. _swap_ema exchanges the weights
 * the forward reads with the EMA (twice: back). */
size_t dap_dit_cuda_train_bytes_for(const dap_dit_cuda *d, int batch);
int dap_dit_cuda_state_create_train(dap_dit_cuda_state **out, const dap_dit_cuda *d, int batch);
int dap_dit_cuda_train_begin(dap_dit_cuda *d, const float *ema, const float *m, const float *v);
void dap_dit_cuda_train_download(const dap_dit_cuda *d, float *w, float *ema, float *m, float *v);
void dap_dit_cuda_grad_download(const dap_dit_cuda *d, float *grad); /* the last gradients (tests) */
void dap_dit_cuda_backward_params(const dap_dit_cuda *d, dap_dit_cuda_state *s, const float *dout);
float dap_dit_cuda_train_update(dap_dit_cuda *d, struct dap_adamw *opt, double lr, float max_norm,
                                double ema_decay);
void dap_dit_cuda_swap_ema(dap_dit_cuda *d);
/* 1 when device 0 has bf16 arithmetic (compute capability >= 8.0). */
int dap_cuda_bf16_supported(void);
/* cudaMemGetInfo of device 0. */
int dap_cuda_memory(size_t *free_b, size_t *total_b);

/* The DiT's kernels one by one on HOST arrays (uploaded, run, downloaded), for the tests
 * against ops.h. Fused forms: ln_modulate = LayerNorm (no affine) + modulate; its
 * backward ADDS the input gradient into dres (the residual join); gate_residual is
 * out = in + gate (y + bias). */
enum { DAP_CUDA_ACT_GELU = 0, DAP_CUDA_ACT_SILU = 1, DAP_CUDA_ACT_GELU_BWD = 2 };
void dap_cuda_linear(float *out, const float *inp, const float *w, const float *b, int n, int ic, int oc,
                     int precision);
void dap_cuda_linear_dinp(float *dinp, const float *dout, const float *w, int n, int ic, int oc, int precision);
void dap_cuda_ln_modulate(float *out, float *mean, float *rstd, const float *x, const float *shift,
                          const float *scale, int b, int t, int c, int ld);
void dap_cuda_ln_modulate_backward(float *dres, const float *dout, const float *x, const float *scale,
                                   const float *mean, const float *rstd, int b, int t, int c, int ld);
void dap_cuda_gate_residual(float *out, const float *in, const float *y, const float *bias, const float *gate,
                            int b, int t, int c, int ld);
void dap_cuda_gate_mul(float *dst, const float *src, const float *gate, int b, int t, int c, int ld);
/* GELU / SiLU forward (dout unused), or the GELU backward: out = dout gelu'(inp). */
void dap_cuda_act(int which, float *out, const float *inp, const float *dout, size_t n);
/* qkv (b, t, 3c) -> out (b, t, c), att (b, nh, t, t); its backward overwrites dqkv. */
void dap_cuda_attention(float *out, float *att, const float *qkv, int b, int t, int c, int nh, int precision);
void dap_cuda_attention_backward(float *dqkv, const float *dout, const float *qkv, int b, int t, int c, int nh,
                                 int precision);
void dap_cuda_timestep_freq(float *out, const float *t, int n); /* (n, 256) */
/* dir 0: patches (n, T, C p p) from x (n, C, g p, g p); dir 1: x from patches. */
void dap_cuda_patchify(float *patches, float *x, int n, int C, int p, int g, int dir);
/* img (n, Co, g p, g p) from tokens (n, T, p p Co) + bias (p p Co) */
void dap_cuda_unpatchify_out(float *img, const float *tok, const float *bias, int n, int Co, int p, int g);

/* ---- the guidance's energy on device rows (energy_cuda.cu) --------------------------------
 * Device buffers (dap_cuda_buffer: floats, uninitialised; dap_cuda_copy: host or device
 * pointers either side). dap_cuda_pair_sq: q (ns nr, host, double) = |s_i - r_j|^2 of device
 * rows s (ns, f), r (nr, f); dap_cuda_energy_grad: device ds (ns, f) = sum_j w_ij (s_i - r_j)
 * for host weights w (ns nr) (distill/guidance.h's dap_kernel_weights). CUDA failures exit. */
float *dap_cuda_buffer(size_t floats);
double *dap_cuda_buffer_f64(size_t n);
void dap_cuda_buffer_free(float *p); /* either kind (cudaFree) */
void dap_cuda_copy(float *dst, const float *src, size_t floats);
/* dq, dw: device scratch of ns nr doubles (dap_cuda_buffer_f64), reused across calls */
void dap_cuda_pair_sq(double *q, double *dq, const float *s, int ns, const float *r, int nr, int f);
void dap_cuda_energy_grad(float *ds, const double *w, double *dw, const float *s, int ns, const float *r, int nr,
                          int f);

/* ---- the SD VAE's operations (vae_cuda.cu) ------------------------------------------------
 * models/vae.c's forward walk with a device model (dap_vae_to_device) calls these on device
 * buffers (dap_vae_cuda_alloc); weights by their offset in the host table. Returns with the
 * work queued on the VAE's stream; dap_vae_cuda_copy (host or device pointers either side)
 * waits for it. Errors: dap_vae_cuda_create refuses weights larger than the free memory;
 * a CUDA failure after that is reported on stderr and exits. */
typedef struct dap_vae_cuda dap_vae_cuda;
int dap_vae_cuda_create(dap_vae_cuda **out, const float *weights, size_t n);
void dap_vae_cuda_destroy(dap_vae_cuda *d);
const float *dap_vae_cuda_weight(const dap_vae_cuda *d, size_t offset);
float *dap_vae_cuda_alloc(dap_vae_cuda *d, size_t floats);
void dap_vae_cuda_free(dap_vae_cuda *d, float *p);
void dap_vae_cuda_copy(dap_vae_cuda *d, float *dst, const float *src, size_t floats);
/* out (n, oc, oh, ow) = conv k x k, stride, zero padding `pad` top-left (reads past the
 * bottom-right edge are zero too) of in (n, c, h, w), + bias; col: c k k oh ow floats. */
void dap_vae_cuda_conv(dap_vae_cuda *d, float *out, const float *in, const float *wt, const float *bias, int n,
                       int c, int h, int w, int oc, int k, int stride, int pad, int oh, int ow, float *col);
/* out (n, c, hw) = GroupNorm(in) with affine g, b (may be NULL), then SiLU when silu. */
void dap_vae_cuda_groupnorm(dap_vae_cuda *d, float *out, const float *in, const float *g, const float *b, int n,
                            int c, int hw, int groups, float eps, int silu);
void dap_vae_cuda_add(dap_vae_cuda *d, float *y, const float *a, size_t n); /* y += a */
/* out (n, c, 2h, 2w) = nearest x2 of in (n, c, h, w) */
void dap_vae_cuda_upsample2(dap_vae_cuda *d, float *out, const float *in, int n, int c, int h, int w);
/* x (n, c, t) += W_o attention(a) + b_o, one head over t tokens, q, k, v = W a + b; wts:
 * wq, bq, wk, bk, wv, bv, wo, bo; scratch: 3 c t + t t floats. */
void dap_vae_cuda_attention(dap_vae_cuda *d, float *x, const float *a, const float *const wts[8], int n, int c,
                            int t, float *scratch);
/* The decoder's vector-Jacobian product (vae.c's taped walk): the row-major product of
 * ops.h's dap_gemm; y (rows, cols) += b[row]; row softmax and its backward
 * (dp = p (dp - sum p dp)); SiLU and g *= silu'(t); GroupNorm's input gradient (the
 * statistics recomputed from `in`); nearest x2 upsampling's backward (2 x 2 sums); a
 * stride-1, same-padding k x k convolution's input gradient of one image (col: c k k h w
 * floats of scratch, unused when k = 1). */
void dap_vae_cuda_gemm(dap_vae_cuda *d, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float beta, float *c, int ldc);
void dap_vae_cuda_bias_rows(dap_vae_cuda *d, float *y, const float *b, int rows, size_t cols);
void dap_vae_cuda_softmax_rows(dap_vae_cuda *d, float *s, int rows, int t);
void dap_vae_cuda_softmax_back_rows(dap_vae_cuda *d, const float *p, float *dp, int rows, int t);
void dap_vae_cuda_silu(dap_vae_cuda *d, float *out, const float *in, size_t n);
void dap_vae_cuda_silu_back(dap_vae_cuda *d, float *g, const float *t, size_t n);
void dap_vae_cuda_groupnorm_back(dap_vae_cuda *d, float *dx, const float *dy, const float *in, const float *g, int n,
                                 int c, int hw, int groups, float eps);
void dap_vae_cuda_upsample2_back(dap_vae_cuda *d, float *gx, const float *gu, int n, int c, int h, int w);
void dap_vae_cuda_conv_dgrad(dap_vae_cuda *d, float *din, const float *dout, const float *wt, int c, int h, int w,
                             int oc, int k, float *col);

#ifdef __cplusplus
}
#endif
#endif /* DAP_CUDA_H */
