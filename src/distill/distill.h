/*
 * distill.h: the distillation methods, one class at a time:
 *   random   IPC real images of the class (seeded): the baseline every method must beat;
 *   vanilla  DDIM + classifier-free guidance from the diffusion prior (gamma = 0);
 *   dap      vanilla plus the representativeness guidance of SPEC 3 (Algorithms 1-2);
 * and the paper's rivals on the same prior and sampler (docs/methods.md):
 *   mgd3     mode guidance towards the class's k-means modes (mgd3.c);
 *   d4m      img2img from the class's k-means prototypes (vanilla with --init kmeans);
 *   dm       distribution matching: pixels optimised against random ConvNets (dm.c; no prior);
 *   igd      influence and deviation guidance from a surrogate classifier (igd.c);
 *   minimax  vanilla sampling from a Minimax-diffusion fine-tune of the prior (`dap train
 *            --minimax`; the model's metadata must say so).
 * A class's result depends only on (seed, class, options), never on which other classes
 * run or in what order, so an interrupted run resumes class by class with the same images.
 */
#ifndef DAP_DISTILL_H
#define DAP_DISTILL_H

#include <stdint.h>

#include "data/dataset.h"
#include "models/dit.h"

typedef enum {
    DAP_METHOD_RANDOM = 0,
    DAP_METHOD_VANILLA = 1,
    DAP_METHOD_DAP = 2,
    DAP_METHOD_MGD3 = 3,
    DAP_METHOD_D4M = 4,
    DAP_METHOD_DM = 5,
    DAP_METHOD_IGD = 6,
    DAP_METHOD_MINIMAX = 7
} dap_method;
#define DAP_METHOD_COUNT 8

struct dap_classifier;
struct dap_backbone;
typedef enum { DAP_FORM_X = 0, DAP_FORM_EPS = 1 } dap_guidance_form;
/* Where a trajectory starts (vanilla and dap): pure noise (the paper), or a real image of
 * the class noised to the start of a partial trajectory (--strength): one of IPC random
 * real images (the random baseline's draw), one of IPC k-means centres of the class's
 * real images (prototype initialisation, as D4M-style generative distillation does), or
 * the real image nearest each centre (medoid: a sharp real image where a centre is an
 * average; centres take their nearest image in turn, each image once). */
typedef enum { DAP_INIT_NOISE = 0, DAP_INIT_REAL = 1, DAP_INIT_KMEANS = 2, DAP_INIT_MEDOID = 3 } dap_init;

typedef struct dap_distill_opts {
    int method;      /* dap_method */
    int ipc;         /* images per class */
    uint64_t seed;
    /* sampling */
    int steps;       /* DDIM steps S */
    double eta;
    double cfg;      /* classifier-free guidance scale w (1: none) */
    double clip_x0;  /* clamp the predicted x0 to [-clip_x0, clip_x0] every step (0: off) */
    int batch;       /* most synthetic samples per forward (a class runs in chunks) */
    int init;        /* dap_init */
    double strength; /* with init real|kmeans|medoid: the fraction of the S steps run, from the start
                        image noised to the first of them (1: all; must be 1 with noise) */
    /* representativeness guidance (dap) */
    double gamma;    /* guidance scale (x form) or lambda (eps form) */
    int kernel;      /* dap_kernel */
    double sigma;    /* RBF bandwidth */
    int layer;       /* feature block l, 1-based */
    int pool;        /* dap_pool */
    int n_real;      /* real samples per class N */
    double stop;     /* fraction of the last steps without guidance */
    int form;        /* dap_guidance_form */
    double repel;    /* weight of the repulsion among the class's synthetic samples (0: off,
                        the paper's method; 1: about the energy distance, guidance.h) */
    int fixed_noise; /* 1: real samples keep one noise draw for the whole trajectory
                        (the default 0 redraws it at every guided step) */
    const int *labels; /* (data classes) the model's label of each data class (dap_class_map);
                          NULL: the data's class index is the label */
    int latent;      /* 1: the model works in a VAE's latent space: samples are not clamped
                        to [-1, 1] (the decoder takes them as they are) */
    /* mgd3 (mgd3.c): eps -= sqrt(1 - a_t) lambda (m_i - x0_hat) while guided (--stop as dap) */
    double mode_lambda;
    /* dm (dm.c) */
    int iterations;  /* optimisation steps of the set */
    double lr_img;   /* SGD (momentum 0.5) learning rate of the images */
    int batch_real;  /* real images per class and iteration */
    int dm_width;    /* the random ConvNet-3's width */
    /* igd (igd.c) */
    struct dap_classifier *surrogate; /* not owned; its weights are perturbed and restored */
    double igd_scale;  /* influence guidance scale k */
    double igd_dev;    /* deviation guidance scale gamma */
    double igd_low, igd_high; /* guided while the remaining-steps index S-1-step is in
                                 [round(low S), round(high S)] */
    int igd_n_real;    /* real images of the class behind the mean gradient */
    int igd_memory;    /* earlier samples of the class the deviation guidance sees */
    /* igd on a latent prior: the surrogate sees images, so x0_hat goes through the VAE's
     * decoder and the guidance comes back through its vector-Jacobian product; the class's
     * real images (igd_real_n of (3, f h, f w), [-1, 1]) make the mean gradient. Set per
     * class by the latent runner (tools/latent.c); NULL for a pixel prior. */
    struct dap_vae *igd_vae;
    const float *igd_real_px;
    int igd_real_n;
} dap_distill_opts;

/* The largest |cfg| and |gamma| accepted: beyond them every pixel saturates. */
#define DAP_CFG_MAX 50.0
#define DAP_GAMMA_MAX 1e4

void dap_distill_opts_default(dap_distill_opts *o);
int dap_method_parse(const char *s); /* -1 when unknown */
const char *dap_method_name(int m);
int dap_init_parse(const char *s); /* -1 when unknown */
const char *dap_init_name(int i);
/* Steps skipped by a partial trajectory: S - round(strength S), at most S - 1. */
int dap_init_skip(int S, double strength);

/* What a class's run measured. */
typedef struct dap_distill_stats {
    double seconds;
    int guided_steps;
    double energy_first, energy_last; /* mean guidance energy at the first and last guided step */
} dap_distill_stats;

/* Checks the options against the model (NULL for random) before any work: DAP_ERR_ARG
 * naming the flag. dap_distill_class runs it too; a command runs it first so that a bad
 * flag leaves no output behind. The layer must be resolved (o->layer 0 means depth/4 only
 * inside dap_distill_class). */
int dap_distill_check(const dap_dit *model, const dap_distill_opts *o);
/* The same against any backbone (NULL for random and dm). */
int dap_distill_check_backbone(const struct dap_backbone *bb, const dap_distill_opts *o);
/* minimax samples only a Minimax-diffusion fine-tune: DAP_OK when the model's "finetune"
 * record (dap_dit.finetune, dap_dit_finetune_from_file; may be NULL) says so, else
 * DAP_ERR_ARG naming `model` and what it records. dap_distill_check and dap_distill_class
 * run it on a dap_dit; a command runs it on the file before any work. */
int dap_distill_check_minimax(const char *finetune, const char *model);
/* Whether a method samples from the diffusion prior (all but random and dm). */
int dap_method_uses_model(int m);

/* What only class k's data can refuse, checked before any work: the model's input shape
 * against the data's, class k's label, and enough real images of class k for --n-real
 * (dap) and for --ipc draws (random, --init real|kmeans|medoid). DAP_ERR_ARG/SHAPE naming it. */
int dap_distill_check_class(const dap_dit *model, const dap_dataset *real, int k, const dap_distill_opts *o);
int dap_distill_check_class_backbone(const struct dap_backbone *bb, const dap_dataset *real, int k,
                                     const dap_distill_opts *o);

/* Distills class k into out (ipc, C, H, W) in [-1, 1] (generated images are clamped unless
 * opts.latent).
 * real: the real training images the guidance and the random baseline draw from.
 * model: unused (may be NULL) for random. */
int dap_distill_class(const dap_dit *model, const dap_dataset *real, int k,
                      const dap_distill_opts *o, float *out, dap_distill_stats *st);
/* The same on any backbone (dap_backbone_dit describes a DiT); bb may be NULL for
 * random and dm. The backbone is opened and closed inside. */
int dap_distill_class_backbone(struct dap_backbone *bb, const dap_dataset *real, int k,
                               const dap_distill_opts *o, float *out, dap_distill_stats *st);

#endif
