/*
 * vae.h: the Stable Diffusion VAE (AutoencoderKL as diffusers builds sd-vae-ft-mse /
 * sd-vae-ft-ema), forward only: the encoder maps images to latents, the decoder maps
 * latents back to images (SPEC 2).
 *
 *   encode: x (n, 3, H, W) in [-1, 1] -> encoder -> quant_conv -> (mean, logvar)
 *           latent = scale * mean            (or scale * (mean + exp(logvar / 2) xi))
 *   decode: latent (n, 4, H/8, W/8) -> latent / scale -> post_quant_conv -> decoder
 *           -> image (n, 3, H, W), unclipped (about [-1, 1])
 *
 * The weights load unchanged from the three key namings in use: diffusers current
 * (`encoder.mid_block.attentions.0.to_q.weight`), diffusers before 0.14
 * (`...attentions.0.query.weight`, `proj_attn`), and the original LDM names
 * (`encoder.down.0.block.0.norm1.weight`, `mid.attn_1.q` as 1x1 convs, `nin_shortcut`,
 * `norm_out`, decoder `up` levels in reverse order), optionally under
 * `first_stage_model.` inside a whole SD checkpoint. The config is inferred from the
 * tensor shapes; missing or unknown tensors are refused, naming them.
 */
#ifndef DAP_VAE_H
#define DAP_VAE_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "core/params.h"

#define DAP_VAE_MAX_LEVELS 8
#define DAP_VAE_SCALE 0.18215f /* the SD v1 latent scale factor */

typedef struct dap_vae_config {
    int in_channels;     /* image channels (3) */
    int latent_channels; /* 4 */
    int levels;          /* resolution levels (4): 2^(levels-1) downsampling */
    int ch[DAP_VAE_MAX_LEVELS]; /* channels per level (128, 256, 512, 512) */
    int enc_blocks;      /* ResNet blocks per encoder level (2) */
    int dec_blocks;      /* per decoder level (3) */
    int groups;          /* GroupNorm groups (32) */
    float scale;         /* latent scale factor (0.18215) */
} dap_vae_config;

typedef struct dap_vae dap_vae;

/* The sd-vae-ft-mse config (the shapes above). */
void dap_vae_config_sd(dap_vae_config *c);
/* Downsampling factor 2^(levels - 1) (8 for SD). */
int dap_vae_factor(const dap_vae_config *c);

/* DAP_OK, or DAP_ERR_ARG naming the bad field (levels, sizes, groups not dividing a
 * level's channels). */
int dap_vae_config_check(const dap_vae_config *c);
/* The weights table (diffusers' current keys and AutoencoderKL.state_dict() order) into
 * an empty dap_params, without allocating the data. */
void dap_vae_params_table(dap_params *ps, const dap_vae_config *c);

/* A model with zeroed weights in the diffusers key naming. */
int dap_vae_create(dap_vae **out, const dap_vae_config *c);
/* Loads any of the namings above (config inferred from the shapes; GroupNorm groups from
 * __metadata__ "norm_num_groups" when present, else 32). Errors name the file and the
 * missing / unknown tensors (the first few and their count), or the tensor with the wrong
 * shape (expected and found); a DiT checkpoint is named as such. */
int dap_vae_load(dap_vae **out, const char *path);
/* The key naming the model was loaded from ("diffusers", "LDM (CompVis)", ...). */
const char *dap_vae_naming(const dap_vae *v);
/* Whether a safetensors file holds a VAE (encoder / decoder tensors under any naming),
 * without loading it: 1 yes, 0 no, or a negative status when the file cannot be read. */
int dap_vae_file_is_vae(const char *path);
void dap_vae_destroy(dap_vae *v);
const dap_vae_config *dap_vae_get_config(const dap_vae *v);
dap_params *dap_vae_params(dap_vae *v); /* the diffusers-named weights table */

/* Moves the weights to the device chosen in core/device.h (`--device`): on cpu nothing
 * happens; on cuda they go up once (DAP_ERR_NOMEM naming the sizes when they do not fit)
 * and every encode / decode afterwards runs there, its inputs and outputs still host
 * arrays. The host weights must not change afterwards. */
int dap_vae_to_device(dap_vae *v);
int dap_vae_on_device(const dap_vae *v);
/* Bytes an encode (decode = 0) of n images of h x w (decode: n latents of h x w) allocates
 * for its activations and scratch, where the model runs (the GPU's for a device model),
 * weights not included. */
size_t dap_vae_plan_bytes(const dap_vae *v, int decode, int n, int h, int w);
/* For a model on the GPU: DAP_ERR_NOMEM with the sizes when such a call's activations do
 * not fit in the device's free memory now (checked before the work); DAP_OK on the CPU. */
int dap_vae_check_memory(const dap_vae *v, int decode, int n, int h, int w);

/* x (n, 3, H, W) in [-1, 1], H and W multiples of the factor -> latent (n, 4, H/f, W/f)
 * = scale * posterior mean; with rng not NULL a posterior sample instead (one normal per
 * latent value from rng). Allocates its activations for the call (released on return). */
int dap_vae_encode(dap_vae *v, const float *x, int n, int h, int w, float *latent, dap_rng *rng);
/* The posterior itself: mean and logvar (n, 4, H/f, W/f) each, logvar clamped to
 * [-30, 20] as diffusers' DiagonalGaussianDistribution does (no scale factor). */
int dap_vae_encode_moments(dap_vae *v, const float *x, int n, int h, int w, float *mean, float *logvar);
/* latent (n, 4, h, w) -> x (n, 3, h f, w f), unclipped. */
int dap_vae_decode(dap_vae *v, const float *latent, int n, int h, int w, float *x);
/* The decoder's vector-Jacobian product at one latent (1, 4, h, w) (scaled, as
 * dap_vae_decode takes it): dlat = (d decode / d latent)^T dimg, dimg (1, 3, h f, w f).
 * Runs on the host (also for a model moved to the GPU), keeping each block's input
 * (about 2 GiB at 256 px): guidance through the VAE (igd on a latent prior). */
int dap_vae_decode_vjp(dap_vae *v, const float *latent, int h, int w, const float *dimg, float *dlat);
/* The same in two halves, for a caller that needs the image to form dimg (igd): the
 * decode of one latent keeping each block's input (img, when not NULL, gets the image),
 * then the backward from dimg; free the tape after. */
typedef struct dap_vae_tape dap_vae_tape;
int dap_vae_decode_taped(dap_vae *v, const float *latent, int h, int w, float *img, dap_vae_tape **out);
int dap_vae_tape_backward(dap_vae_tape *tp, const float *dimg, float *dlat);
void dap_vae_tape_free(dap_vae_tape *tp);

/* Process-wide, for tests: the input + output floats one conv call may hold; images are
 * chunked to fit and a larger image's convs run in bands of rows (default 16M floats,
 * 64 MiB; 0 restores it). Returns the old value. */
size_t dap_vae_set_band_floats(size_t floats);

#endif /* DAP_VAE_H */
