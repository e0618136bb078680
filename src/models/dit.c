/*
 * dit.c: the class-conditional DiT backbone (official facebookresearch/DiT layout).
 *
 *   x (n, C, H, W) -> patches (n, T, C p p) -> x_embedder + pos_embed -> h (n, T, D)
 *   c = t_embedder(freq(t)) + y_embedder(y)                            (n, D)
 *   each block: h += g1 * attn(mod(LN(h), sh1, sc1)); h += g2 * mlp(mod(LN(h), sh2, sc2))
 *               with [sh1 sc1 g1 sh2 sc2 g2] = Linear(SiLU(c))          (n, 6D)
 *   final: Linear(mod(LN(h), sh, sc)) -> (n, T, p p Co) -> unpatchify (n, Co, H, W)
 *
 * Weights live in one dap_params table (official keys); block_ptrs()/top_ptrs() give the
 * tensors of a block / of the embedders and final layer, from either the data or the
 * grad buffer, so forward and backward read the same way. All activation memory is
 * carved from one allocation in dap_dit_state_create_ex.
 */
#include "models/dit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/device.h"
#include "core/optim.h"
#include "io/io.h"
#include "ops/ops.h"
#ifdef DAP_CUDA
#include "cuda/cuda.h"
#endif

#define FREQ_DIM 256 /* timestep frequency embedding size */
#define LN_EPS 1e-6f

/* ---- configs ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    int input, cin, patch, hidden, depth, heads, classes, sigma;
} k_named[] = {
    {"DiT-XL/2", 32, 4, 2, 1152, 28, 16, 1000, 1}, {"DiT-XL/4", 32, 4, 4, 1152, 28, 16, 1000, 1},
    {"DiT-XL/8", 32, 4, 8, 1152, 28, 16, 1000, 1}, {"DiT-L/2", 32, 4, 2, 1024, 24, 16, 1000, 1},
    {"DiT-L/4", 32, 4, 4, 1024, 24, 16, 1000, 1},  {"DiT-L/8", 32, 4, 8, 1024, 24, 16, 1000, 1},
    {"DiT-B/2", 32, 4, 2, 768, 12, 12, 1000, 1},   {"DiT-B/4", 32, 4, 4, 768, 12, 12, 1000, 1},
    {"DiT-B/8", 32, 4, 8, 768, 12, 12, 1000, 1},   {"DiT-S/2", 32, 4, 2, 384, 12, 6, 1000, 1},
    {"DiT-S/4", 32, 4, 4, 384, 12, 6, 1000, 1},    {"DiT-S/8", 32, 4, 8, 384, 12, 6, 1000, 1},
    {"fm-p4-h256-d8", 28, 1, 4, 256, 8, 4, 10, 0}, {"fm-p2-h256-d8", 28, 1, 2, 256, 8, 4, 10, 0},
    {"fm-p4-h384-d12", 28, 1, 4, 384, 12, 6, 10, 0}, {"fm-tiny", 28, 1, 4, 64, 2, 2, 10, 0},
};
#define N_NAMED ((int)(sizeof k_named / sizeof k_named[0]))

/* Pixel-space families for any data: the geometry (size, channels, classes) comes from
 * the data, the patch from the size unless the name gives it ("px-S/2"). px-B at 28x28x1
 * with 10 classes is fm-p4-h256-d8. */
static const struct {
    const char *name, *about;
    int hidden, depth, heads;
} k_pixel[] = {
    {"px-T", "tests and smoke runs", 64, 2, 2},
    {"px-S", "small sets, up to about 16x16 (the own-data recipe)", 192, 6, 3},
    {"px-B", "28-32 px (the shipped Fashion-MNIST prior's size)", 256, 8, 4},
    {"px-L", "32-64 px, more data and time", 384, 12, 6},
};
#define N_PIXEL ((int)(sizeof k_pixel / sizeof k_pixel[0]))

int dap_dit_auto_patch(int size) {
    /* the divisor p of size whose grid size/p is nearest 8 (64 tokens); ties: fewer tokens */
    int best = size > 0 ? size : 1;
    for (int p = 1; p <= size; p++) {
        if (size % p) continue;
        const int g = size / p, gb = size / best;
        const int d = g > 8 ? g - 8 : 8 - g, db = gb > 8 ? gb - 8 : 8 - gb;
        if (d < db || (d == db && g < gb)) best = p;
    }
    return best;
}

/* "px-S" or "px-S/<p>": fills the family's widths, patch p (0: from the size later).
 * DAP_OK, a status for a bad patch, or -1 when the name is no pixel family's. */
static int pixel_by_name(const char *name, dap_dit_config *out) {
    for (int i = 0; i < N_PIXEL; i++) {
        const size_t n = strlen(k_pixel[i].name);
        if (strncmp(name, k_pixel[i].name, n) != 0 || (name[n] && name[n] != '/')) continue;
        int patch = 0;
        if (name[n] == '/') {
            char *end;
            long p = strtol(name + n + 1, &end, 10);
            if (end == name + n + 1 || *end || p < 1 || p > 64)
                return dap_error(DAP_ERR_ARG, "DiT config '%s': expected %s or %s/P with a patch P in 1..64", name,
                                 k_pixel[i].name, k_pixel[i].name);
            patch = (int)p;
        }
        *out = (dap_dit_config){.patch = patch,
                                .hidden = k_pixel[i].hidden,
                                .depth = k_pixel[i].depth,
                                .heads = k_pixel[i].heads,
                                .mlp_ratio = 4.0f,
                                .class_dropout = 0.1f};
        return DAP_OK;
    }
    return -1;
}

int dap_dit_config_fit(dap_dit_config *c, int size, int channels, int classes) {
    if (size < 1 || channels < 1 || classes < 1)
        return dap_error(DAP_ERR_ARG, "DiT config: the data gives size %d, channels %d, classes %d (all must be >= 1)",
                         size, channels, classes);
    if (c->input_size && c->input_size != size)
        return dap_error(DAP_ERR_ARG, "DiT config: it takes %dx%d images, the data has %dx%d", c->input_size,
                         c->input_size, size, size);
    if (c->in_channels && c->in_channels != channels)
        return dap_error(DAP_ERR_ARG, "DiT config: it takes %d-channel images, the data has %d channels",
                         c->in_channels, channels);
    if (c->num_classes && c->num_classes != classes)
        return dap_error(DAP_ERR_ARG, "DiT config: it has %d classes, the data has %d", c->num_classes, classes);
    c->input_size = size, c->in_channels = channels, c->num_classes = classes;
    if (!c->patch) c->patch = dap_dit_auto_patch(size);
    if (size % c->patch)
        return dap_error(DAP_ERR_ARG, "DiT config: patch %d does not divide the image size %d (try /%d)", c->patch,
                         size, dap_dit_auto_patch(size));
    return dap_dit_config_check(c);
}

void dap_dit_configs_help(char *buf, size_t n) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < N_PIXEL && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "  %-6s hidden %d, depth %d, %d heads: %s\n", k_pixel[i].name,
                                k_pixel[i].hidden, k_pixel[i].depth, k_pixel[i].heads, k_pixel[i].about);
    if (len < n)
        len += (size_t)snprintf(buf + len, n - len,
                                "  These take the image size, channels and classes from the data; the patch p\n"
                                "  (tokens = (size/p)^2) comes from the size:\n ");
    static const int sizes[] = {8, 16, 28, 32, 64};
    for (int i = 0; i < 5 && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s %d px p%d (%d)", i ? "," : "", sizes[i],
                                dap_dit_auto_patch(sizes[i]),
                                (sizes[i] / dap_dit_auto_patch(sizes[i])) * (sizes[i] / dap_dit_auto_patch(sizes[i])));
    if (len < n)
        len += (size_t)snprintf(buf + len, n - len,
                                ";\n  px-S/2 takes patch 2 at any size. Fixed geometry (the data is converted to it):\n"
                                "  fm-p4-h256-d8, fm-p2-h256-d8, fm-p4-h384-d12, fm-tiny (28x28x1, 10 classes, as\n"
                                "  Fashion-MNIST); DiT-S|B|L|XL/2|4|8 (32x32x4 latents, 1000 classes).\n");
}

int dap_dit_config_by_name(const char *name, dap_dit_config *out) {
    const int px = pixel_by_name(name, out);
    if (px >= 0) return px;
    for (int i = 0; i < N_NAMED; i++) {
        if (strcmp(name, k_named[i].name) != 0) continue;
        *out = (dap_dit_config){.input_size = k_named[i].input,
                                .in_channels = k_named[i].cin,
                                .patch = k_named[i].patch,
                                .hidden = k_named[i].hidden,
                                .depth = k_named[i].depth,
                                .heads = k_named[i].heads,
                                .num_classes = k_named[i].classes,
                                .learn_sigma = k_named[i].sigma,
                                .mlp_ratio = 4.0f,
                                .class_dropout = 0.1f};
        return DAP_OK;
    }
    char names[768] = "";
    for (int i = 0; i < N_PIXEL; i++) {
        strncat(names, k_pixel[i].name, sizeof names - strlen(names) - 3);
        strncat(names, "[/P], ", sizeof names - strlen(names) - 1);
    }
    for (int i = 0; i < N_NAMED; i++) {
        strncat(names, k_named[i].name, sizeof names - strlen(names) - 3);
        if (i + 1 < N_NAMED) strncat(names, ", ", sizeof names - strlen(names) - 1);
    }
    return dap_error(DAP_ERR_ARG, "unknown DiT config '%s' (known: %s)", name, names);
}

int dap_dit_config_check(const dap_dit_config *c) {
    if (c->input_size <= 0 || c->in_channels <= 0 || c->patch <= 0 || c->hidden <= 0 ||
        c->depth <= 0 || c->heads <= 0 || c->num_classes <= 0 || !(c->mlp_ratio > 0))
        return dap_error(DAP_ERR_ARG,
                         "DiT config: sizes must be positive (input %d, channels %d, patch %d, "
                         "hidden %d, depth %d, heads %d, classes %d, mlp_ratio %g)",
                         c->input_size, c->in_channels, c->patch, c->hidden, c->depth, c->heads,
                         c->num_classes, c->mlp_ratio);
    if (c->input_size % c->patch)
        return dap_error(DAP_ERR_ARG, "DiT config: patch %d does not divide input size %d",
                         c->patch, c->input_size);
    if (c->hidden % 4)
        return dap_error(DAP_ERR_ARG, "DiT config: hidden %d must be a multiple of 4", c->hidden);
    if (c->hidden % c->heads)
        return dap_error(DAP_ERR_ARG, "DiT config: heads %d do not divide hidden %d", c->heads,
                         c->hidden);
    if ((int)(c->hidden * c->mlp_ratio) <= 0)
        return dap_error(DAP_ERR_ARG, "DiT config: mlp_ratio %g gives no MLP units", c->mlp_ratio);
    return DAP_OK;
}

int dap_dit_out_channels(const dap_dit_config *c) {
    return c->learn_sigma ? 2 * c->in_channels : c->in_channels;
}

/* ---- the weights table -------------------------------------------------------------
 * Order: the official state_dict order. The top-level tensors come first (TOP_*), then
 * BLK_COUNT tensors per block, then the final layer (FIN_*). */

enum { TOP_POS, TOP_XE_W, TOP_XE_B, TOP_T0_W, TOP_T0_B, TOP_T2_W, TOP_T2_B, TOP_YTAB, TOP_COUNT };
enum { BLK_QKV_W, BLK_QKV_B, BLK_PROJ_W, BLK_PROJ_B, BLK_FC1_W, BLK_FC1_B, BLK_FC2_W, BLK_FC2_B,
       BLK_ADA_W, BLK_ADA_B, BLK_COUNT };
enum { FIN_W, FIN_B, FIN_ADA_W, FIN_ADA_B, FIN_COUNT };

static void add_tensor(dap_params *ps, const char *key, int64_t d0, int64_t d1, int64_t d2,
                       int64_t d3, int no_decay, int frozen) {
    int i = dap_params_add4(ps, key, d0, d1, d2, d3);
    ps->p[i].no_decay = no_decay;
    ps->p[i].frozen = frozen;
}

void dap_dit_params_table(dap_params *ps, const dap_dit_config *c) {
    DAP_ASSERT(ps->n == 0);
    int64_t D = c->hidden, p = c->patch, g = c->input_size / c->patch;
    int64_t H4 = (int64_t)(c->hidden * c->mlp_ratio);
    int64_t co = dap_dit_out_channels(c);
    int64_t rows = c->num_classes + (c->class_dropout > 0);
    add_tensor(ps, "pos_embed", 1, g * g, D, 0, 1, 1);
    add_tensor(ps, "x_embedder.proj.weight", D, c->in_channels, p, p, 0, 0);
    add_tensor(ps, "x_embedder.proj.bias", D, 0, 0, 0, 1, 0);
    add_tensor(ps, "t_embedder.mlp.0.weight", D, FREQ_DIM, 0, 0, 0, 0);
    add_tensor(ps, "t_embedder.mlp.0.bias", D, 0, 0, 0, 1, 0);
    add_tensor(ps, "t_embedder.mlp.2.weight", D, D, 0, 0, 0, 0);
    add_tensor(ps, "t_embedder.mlp.2.bias", D, 0, 0, 0, 1, 0);
    add_tensor(ps, "y_embedder.embedding_table.weight", rows, D, 0, 0, 1, 0);
    static const struct { const char *name; int rows_mult; int cols; int bias; } blk[BLK_COUNT] = {
        {"attn.qkv.weight", 3, 1, 0}, {"attn.qkv.bias", 3, 0, 1},
        {"attn.proj.weight", 1, 1, 0}, {"attn.proj.bias", 1, 0, 1},
        {"mlp.fc1.weight", -1, 1, 0},  {"mlp.fc1.bias", -1, 0, 1},
        {"mlp.fc2.weight", 1, -1, 0},  {"mlp.fc2.bias", 1, 0, 1},
        {"adaLN_modulation.1.weight", 6, 1, 0}, {"adaLN_modulation.1.bias", 6, 0, 1},
    };
    for (int l = 0; l < c->depth; l++) {
        for (int k = 0; k < BLK_COUNT; k++) {
            char key[96];
            snprintf(key, sizeof key, "blocks.%d.%s", l, blk[k].name);
            int64_t r = blk[k].rows_mult < 0 ? H4 : blk[k].rows_mult * D;
            int64_t cols = blk[k].cols < 0 ? H4 : blk[k].cols * D;
            add_tensor(ps, key, r, cols, 0, 0, blk[k].bias, 0);
        }
    }
    add_tensor(ps, "final_layer.linear.weight", p * p * co, D, 0, 0, 0, 0);
    add_tensor(ps, "final_layer.linear.bias", p * p * co, 0, 0, 0, 1, 0);
    add_tensor(ps, "final_layer.adaLN_modulation.1.weight", 2 * D, D, 0, 0, 0, 0);
    add_tensor(ps, "final_layer.adaLN_modulation.1.bias", 2 * D, 0, 0, 0, 1, 0);
}

typedef struct top_w {
    float *pos, *xe_w, *xe_b, *t0_w, *t0_b, *t2_w, *t2_b, *ytab; /* embedders */
    float *fin_w, *fin_b, *fin_ada_w, *fin_ada_b;                 /* final layer */
} top_w;

typedef struct block_w {
    float *qkv_w, *qkv_b, *proj_w, *proj_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b, *ada_w, *ada_b;
} block_w;

/* A tensor inside `base`; NULL for a frozen tensor's gradient (base = params.grad), so
 * that the backward skips the work for it. */
static float *tensor_at(const dap_dit *m, const dap_param *p, float *base) {
    return base == m->params.grad && p->frozen ? NULL : base + p->offset;
}

/* Tensors of the embedders and final layer inside `base` (params.data or params.grad);
 * all NULL when base is NULL. */
static top_w top_ptrs(const dap_dit *m, float *base) {
    top_w w = {0};
    if (!base) return w;
    const dap_param *p = m->params.p;
    const dap_param *f = p + m->block0 + m->cfg.depth * BLK_COUNT;
    w.pos = tensor_at(m, &p[TOP_POS], base);
    w.xe_w = tensor_at(m, &p[TOP_XE_W], base);
    w.xe_b = tensor_at(m, &p[TOP_XE_B], base);
    w.t0_w = tensor_at(m, &p[TOP_T0_W], base);
    w.t0_b = tensor_at(m, &p[TOP_T0_B], base);
    w.t2_w = tensor_at(m, &p[TOP_T2_W], base);
    w.t2_b = tensor_at(m, &p[TOP_T2_B], base);
    w.ytab = tensor_at(m, &p[TOP_YTAB], base);
    w.fin_w = tensor_at(m, &f[FIN_W], base);
    w.fin_b = tensor_at(m, &f[FIN_B], base);
    w.fin_ada_w = tensor_at(m, &f[FIN_ADA_W], base);
    w.fin_ada_b = tensor_at(m, &f[FIN_ADA_B], base);
    return w;
}

/* Tensors of block l (0-based) inside `base`; all NULL when base is NULL. */
static block_w block_ptrs(const dap_dit *m, float *base, int l) {
    block_w w = {0};
    if (!base) return w;
    const dap_param *p = m->params.p + m->block0 + l * BLK_COUNT;
    w.qkv_w = tensor_at(m, &p[BLK_QKV_W], base);
    w.qkv_b = tensor_at(m, &p[BLK_QKV_B], base);
    w.proj_w = tensor_at(m, &p[BLK_PROJ_W], base);
    w.proj_b = tensor_at(m, &p[BLK_PROJ_B], base);
    w.fc1_w = tensor_at(m, &p[BLK_FC1_W], base);
    w.fc1_b = tensor_at(m, &p[BLK_FC1_B], base);
    w.fc2_w = tensor_at(m, &p[BLK_FC2_W], base);
    w.fc2_b = tensor_at(m, &p[BLK_FC2_B], base);
    w.ada_w = tensor_at(m, &p[BLK_ADA_W], base);
    w.ada_b = tensor_at(m, &p[BLK_ADA_B], base);
    return w;
}

/* ---- model ------------------------------------------------------------------------ */

int dap_dit_create(dap_dit **out, const dap_dit_config *cfg, int with_grad) {
    *out = NULL;
    DAP_TRY(dap_dit_config_check(cfg));
    dap_dit *m = dap_calloc(1, sizeof *m);
    m->cfg = *cfg;
    m->out_channels = dap_dit_out_channels(cfg);
    m->grid = cfg->input_size / cfg->patch;
    m->tokens = m->grid * m->grid;
    m->patch_in = cfg->in_channels * cfg->patch * cfg->patch;
    m->patch_out = cfg->patch * cfg->patch * m->out_channels;
    m->mlp_hidden = (int)(cfg->hidden * cfg->mlp_ratio);
    dap_params_init(&m->params);
    dap_dit_params_table(&m->params, cfg);
    m->block0 = TOP_COUNT;
    m->block_nparams = BLK_COUNT;
    DAP_ASSERT(m->params.n == TOP_COUNT + cfg->depth * BLK_COUNT + FIN_COUNT);
    dap_params_alloc(&m->params, with_grad);
    *out = m;
    return DAP_OK;
}

void dap_dit_destroy(dap_dit *m) {
    if (!m) return;
    dap_dit_set_class_names(m, NULL, 0);
    dap_dit_set_train_data(m, NULL);
    dap_dit_set_finetune(m, NULL);
#ifdef DAP_CUDA
    dap_dit_cuda_destroy(m->dev);
#endif
    dap_params_free(&m->params);
    free(m);
}

void dap_dit_set_class_names(dap_dit *m, char *const *names, int n) {
    DAP_ASSERT(names ? n == m->cfg.num_classes : n == 0);
    char **copy = NULL;
    if (names) { /* copied first: names may be m->class_names itself */
        copy = dap_malloc(sizeof(char *) * (size_t)n);
        for (int k = 0; k < n; k++) {
            DAP_ASSERT(names[k] && names[k][0] && !strchr(names[k], '\n'));
            copy[k] = dap_strdup(names[k]);
        }
    }
    if (m->class_names)
        for (int k = 0; k < m->cfg.num_classes; k++) free(m->class_names[k]);
    free(m->class_names);
    m->class_names = copy;
}

void dap_dit_set_train_data(dap_dit *m, const char *spec) {
    free(m->train_data);
    m->train_data = spec ? dap_strdup(spec) : NULL;
}

/* One __metadata__ string of a checkpoint without loading its weights (NULL: absent). */
static int meta_from_file(const char *path, const char *key, char **out) {
    *out = NULL;
    dap_st *st;
    DAP_TRY(dap_st_open(&st, path));
    *out = dap_st_meta_get(st, key);
    dap_st_close(st);
    return DAP_OK;
}

int dap_dit_train_data_from_file(const char *path, char **out) { return meta_from_file(path, "train_data", out); }

void dap_dit_set_finetune(dap_dit *m, const char *what) {
    DAP_ASSERT(!what || !strchr(what, '\n'));
    free(m->finetune);
    m->finetune = what ? dap_strdup(what) : NULL;
}

int dap_dit_finetune_from_file(const char *path, char **out) { return meta_from_file(path, "finetune", out); }

int dap_dit_class_names_from_file(const char *path, int num_classes, char ***out) {
    *out = NULL;
    dap_st *st;
    DAP_TRY(dap_st_open(&st, path));
    char *s = dap_st_meta_get(st, "class_names");
    dap_st_close(st);
    if (!s) return DAP_OK;
    int n = 1;
    for (const char *p = s; *p; p++) n += *p == '\n';
    char **names = dap_calloc((size_t)n, sizeof(char *));
    int empty = 0;
    char *p = s;
    for (int k = 0; k < n; k++) {
        char *e = strchr(p, '\n');
        if (e) *e = 0;
        names[k] = dap_strdup(p);
        empty |= !*p;
        p = e ? e + 1 : p + strlen(p);
    }
    free(s);
    int rc = DAP_OK;
    if (n != num_classes)
        rc = dap_error(DAP_ERR_FORMAT, "%s: __metadata__ \"class_names\" holds %d names, expected %d (num_classes)",
                       path, n, num_classes);
    else if (empty)
        rc = dap_error(DAP_ERR_FORMAT, "%s: __metadata__ \"class_names\" holds an empty name", path);
    if (rc == DAP_OK) *out = names;
    else dap_dit_class_names_free(names, n);
    return rc;
}

void dap_dit_class_names_free(char **names, int n) {
    if (!names) return;
    for (int k = 0; k < n; k++) free(names[k]);
    free(names);
}

/* __metadata__ "class_names" into m->class_names; absent: left NULL. */
static int load_class_names(dap_dit *m, const char *path) {
    char **names;
    DAP_TRY(dap_dit_class_names_from_file(path, m->cfg.num_classes, &names));
    if (names) dap_dit_set_class_names(m, names, m->cfg.num_classes);
    dap_dit_class_names_free(names, m->cfg.num_classes);
    return DAP_OK;
}

/* The official get_2d_sincos_pos_embed (double precision, like numpy): token i*g + j
 * (row i, column j) gets [sin(j w), cos(j w), sin(i w), cos(i w)], w_k = 10000^(-k/(D/4)).
 * (The official grid puts the column coordinate first.) */
static void sincos_pos_embed(float *pos, int g, int D) {
    int q = D / 4;
    for (int i = 0; i < g; i++)
        for (int j = 0; j < g; j++) {
            float *row = pos + (size_t)(i * g + j) * D;
            for (int k = 0; k < q; k++) {
                double omega = 1.0 / pow(10000.0, (double)k / (double)q);
                row[k] = (float)sin(j * omega);
                row[q + k] = (float)cos(j * omega);
                row[2 * q + k] = (float)sin(i * omega);
                row[3 * q + k] = (float)cos(i * omega);
            }
        }
}

static void xavier_uniform(const dap_param *p, float *w, uint64_t seed, int index, int fan_in,
                           int fan_out) {
    dap_rng r;
    dap_rng_init(&r, seed, (uint64_t)index);
    float bound = sqrtf(6.0f / (float)(fan_in + fan_out));
    dap_rng_uniform(&r, w, p->numel, -bound, bound);
}

void dap_dit_init(dap_dit *m, uint64_t seed) {
    dap_params *ps = &m->params;
    memset(ps->data, 0, ps->total * sizeof(float));
    for (int i = 0; i < ps->n; i++) {
        const dap_param *p = &ps->p[i];
        float *w = ps->data + p->offset;
        const char *k = p->key;
        size_t len = strlen(k);
        int is_weight = len > 7 && strcmp(k + len - 7, ".weight") == 0;
        if (!is_weight) continue; /* biases zero; pos_embed below */
        int zero = strstr(k, "adaLN_modulation") != NULL || strcmp(k, "final_layer.linear.weight") == 0;
        if (zero) continue;
        if (strcmp(k, "y_embedder.embedding_table.weight") == 0 ||
            strncmp(k, "t_embedder.mlp.", 15) == 0) {
            dap_rng r;
            dap_rng_init(&r, seed, (uint64_t)i);
            dap_rng_normal(&r, w, p->numel, 0.0f, 0.02f);
            continue;
        }
        /* linears (out, in) and x_embedder's conv on its (D, C p p) view */
        int fan_out = (int)p->shape[0];
        int fan_in = (int)(p->numel / (size_t)fan_out);
        xavier_uniform(p, w, seed, i, fan_in, fan_out);
    }
    top_w w = top_ptrs(m, ps->data);
    sincos_pos_embed(w.pos, m->grid, m->cfg.hidden);
}

/* ---- save / load ------------------------------------------------------------------ */

int dap_dit_save(const dap_dit *m, const char *path) { return dap_dit_save_ex(m, path, 0); }

int dap_dit_save_ex(const dap_dit *m, const char *path, int f16) {
    const dap_dit_config *c = &m->cfg;
    char v[10][32];
    snprintf(v[0], 32, "%d", c->input_size);
    snprintf(v[1], 32, "%d", c->in_channels);
    snprintf(v[2], 32, "%d", c->patch);
    snprintf(v[3], 32, "%d", c->hidden);
    snprintf(v[4], 32, "%d", c->depth);
    snprintf(v[5], 32, "%d", c->heads);
    snprintf(v[6], 32, "%d", c->num_classes);
    snprintf(v[7], 32, "%d", c->learn_sigma);
    snprintf(v[8], 32, "%.9g", c->mlp_ratio);
    snprintf(v[9], 32, "%.9g", c->class_dropout);
    char *names = NULL;
    if (m->class_names) {
        size_t len = 1;
        for (int k = 0; k < c->num_classes; k++) len += strlen(m->class_names[k]) + 1;
        names = dap_malloc(len);
        names[0] = 0;
        for (int k = 0; k < c->num_classes; k++) {
            if (k) strcat(names, "\n");
            strcat(names, m->class_names[k]);
        }
    }
    const char *meta[32] = {"model", "dit", "input_size", v[0], "in_channels", v[1], "patch", v[2],
                            "hidden", v[3], "depth", v[4], "heads", v[5], "num_classes", v[6],
                            "learn_sigma", v[7], "mlp_ratio", v[8], "class_dropout", v[9]};
    int at = 22; /* then the optional records, NULL-terminated */
    if (names) meta[at++] = "class_names", meta[at++] = names;
    if (m->train_data) meta[at++] = "train_data", meta[at++] = m->train_data;
    if (m->finetune) meta[at++] = "finetune", meta[at++] = m->finetune;
    meta[at] = NULL;
    int rc = dap_params_save(&m->params, path, f16, meta);
    free(names);
    return rc;
}

static int meta_number(const dap_st *st, const char *key, double *out) {
    char *s = dap_st_meta_get(st, key);
    if (!s) return dap_error(DAP_ERR_MISSING, "%s: __metadata__ lacks \"%s\"", st->path, key);
    char *end;
    *out = strtod(s, &end);
    int bad = end == s || *end != '\0';
    int rc = bad ? dap_error(DAP_ERR_FORMAT, "%s: __metadata__ \"%s\" = \"%s\" is not a number",
                             st->path, key, s)
                 : DAP_OK;
    free(s);
    return rc;
}

static int config_from_meta(const dap_st *st, dap_dit_config *c) {
    static const char *keys[] = {"input_size", "in_channels", "patch", "hidden", "depth",
                                 "heads", "num_classes", "learn_sigma"};
    int *fields[] = {&c->input_size, &c->in_channels, &c->patch, &c->hidden, &c->depth,
                     &c->heads, &c->num_classes, &c->learn_sigma};
    for (int i = 0; i < 8; i++) {
        double v = 0;
        DAP_TRY(meta_number(st, keys[i], &v));
        if (!(v >= 0 && v <= 1e7) || v != (int)v) /* range first: (int) of 1e300 or NaN is undefined */
            return dap_error(DAP_ERR_FORMAT, "%s: __metadata__ \"%s\" = %g is not a size",
                             st->path, keys[i], v);
        *fields[i] = (int)v;
    }
    double r = 4.0, d = 0.1;
    char *s = dap_st_meta_get(st, "mlp_ratio");
    if (s) { free(s); DAP_TRY(meta_number(st, "mlp_ratio", &r)); }
    s = dap_st_meta_get(st, "class_dropout");
    if (s) { free(s); DAP_TRY(meta_number(st, "class_dropout", &d)); }
    if (!(r > 0 && c->hidden * r < 2147483647.0)) /* (int)(hidden * mlp_ratio) must be defined */
        return dap_error(DAP_ERR_FORMAT, "%s: __metadata__ \"mlp_ratio\" = %g is out of range", st->path, r);
    c->mlp_ratio = (float)r;
    c->class_dropout = (float)d;
    return DAP_OK;
}

static int meta_shape_is(const dap_st *st, const char *name, int ndim, const int64_t *want) {
    const dap_st_tensor *t = dap_st_find(st, name);
    int same = t && t->ndim == ndim;
    for (int k = 0; same && k < ndim; k++) same = t->shape[k] == want[k];
    if (same) return DAP_OK;
    char w[160], g[160] = "no such tensor";
    dap_shape_str(w, sizeof w, want, ndim);
    if (t) dap_shape_str(g, sizeof g, t->shape, t->ndim);
    return dap_error(DAP_ERR_SHAPE, "%s: the __metadata__ config needs '%s' of shape %s, found %s", st->path,
                     name, w, g);
}

/* Metadata is a claim: a model of its size is allocated before any weight is read, so
 * the tensors that fix every size must match it first (x_embedder first, which bounds
 * the patch and channels used in the others). A lying config (depth 10^7, a huge input)
 * would otherwise ask for terabytes or overflow the table's size arithmetic. */
static int meta_matches_tensors(const dap_st *st, const dap_dit_config *c) {
    int64_t D = c->hidden, p = c->patch, g = c->input_size / c->patch;
    int64_t H4 = (int64_t)(c->hidden * c->mlp_ratio), rows = c->num_classes + (c->class_dropout > 0);
    DAP_TRY(meta_shape_is(st, "x_embedder.proj.weight", 4, (const int64_t[]){D, c->in_channels, p, p}));
    DAP_TRY(meta_shape_is(st, "pos_embed", 3, (const int64_t[]){1, g * g, D}));
    DAP_TRY(meta_shape_is(st, "y_embedder.embedding_table.weight", 2, (const int64_t[]){rows, D}));
    DAP_TRY(meta_shape_is(st, "blocks.0.mlp.fc1.weight", 2, (const int64_t[]){H4, D}));
    int64_t fin = p * p * dap_dit_out_channels(c);
    DAP_TRY(meta_shape_is(st, "final_layer.linear.weight", 2, (const int64_t[]){fin, D}));
    char key[64];
    snprintf(key, sizeof key, "blocks.%d.attn.qkv.weight", c->depth - 1);
    if (c->depth > st->n || !dap_st_find(st, key))
        return dap_error(DAP_ERR_SHAPE, "%s: __metadata__ depth %d, but there is no tensor '%s'", st->path,
                         c->depth, key);
    return DAP_OK;
}

static int need_tensor(const dap_st *st, const char *name, int ndim, const dap_st_tensor **out) {
    const dap_st_tensor *t = dap_st_find(st, name);
    if (!t)
        return dap_error(DAP_ERR_MISSING,
                         "%s: no DiT config in __metadata__ and no tensor \"%s\" to infer it from",
                         st->path, name);
    if (t->ndim != ndim)
        return dap_error(DAP_ERR_SHAPE, "%s: tensor \"%s\" has %d dims, expected %d", st->path,
                         name, t->ndim, ndim);
    *out = t;
    return DAP_OK;
}

/* No metadata (e.g. an official checkpoint converted to safetensors): read the config off
 * the shapes. Heads are not visible in any shape: taken from the official config with the
 * same hidden size, else a head size of 64. */
static int config_from_shapes(const dap_st *st, dap_dit_config *c) {
    const dap_st_tensor *pos = NULL, *xe = NULL, *ytab = NULL, *fc1 = NULL, *fin = NULL;
    DAP_TRY(need_tensor(st, "pos_embed", 3, &pos));
    DAP_TRY(need_tensor(st, "x_embedder.proj.weight", 4, &xe));
    DAP_TRY(need_tensor(st, "y_embedder.embedding_table.weight", 2, &ytab));
    DAP_TRY(need_tensor(st, "blocks.0.mlp.fc1.weight", 2, &fc1));
    DAP_TRY(need_tensor(st, "final_layer.linear.weight", 2, &fin));
    int64_t T = pos->shape[1], D = pos->shape[2];
    int64_t g = (int64_t)llround(sqrt((double)T));
    if (g * g != T || xe->shape[0] != D || xe->shape[2] != xe->shape[3] || D <= 0 || D > 100000)
        return dap_error(DAP_ERR_SHAPE,
                         "%s: pos_embed (1, %lld, %lld) and x_embedder.proj.weight (%lld, %lld, "
                         "%lld, %lld) do not describe a square DiT",
                         st->path, (long long)T, (long long)D, (long long)xe->shape[0],
                         (long long)xe->shape[1], (long long)xe->shape[2], (long long)xe->shape[3]);
    int depth = 0;
    for (;; depth++) {
        char key[64];
        snprintf(key, sizeof key, "blocks.%d.attn.qkv.weight", depth);
        if (!dap_st_find(st, key)) break;
    }
    c->hidden = (int)D;
    c->in_channels = (int)xe->shape[1];
    c->patch = (int)xe->shape[2];
    c->input_size = (int)(g * c->patch);
    c->depth = depth;
    c->num_classes = (int)ytab->shape[0] - 1; /* the official null-class row */
    c->class_dropout = 0.1f;
    c->mlp_ratio = (float)fc1->shape[0] / (float)D;
    int64_t co = fin->shape[0] / ((int64_t)c->patch * c->patch);
    if (co * c->patch * c->patch != fin->shape[0] || (co != c->in_channels && co != 2 * c->in_channels))
        return dap_error(DAP_ERR_SHAPE,
                         "%s: final_layer.linear.weight has %lld rows, expected p^2 C or 2 p^2 C "
                         "(p %d, C %d)",
                         st->path, (long long)fin->shape[0], c->patch, c->in_channels);
    c->learn_sigma = co == 2 * c->in_channels;
    c->heads = 0;
    for (int i = 0; i < N_NAMED; i++)
        if (k_named[i].hidden == c->hidden) c->heads = k_named[i].heads;
    if (!c->heads) {
        if (c->hidden % 64)
            return dap_error(DAP_ERR_MISSING,
                             "%s: no __metadata__ \"heads\" and hidden %d is not a multiple of 64",
                             st->path, c->hidden);
        c->heads = c->hidden / 64;
    }
    return DAP_OK;
}

int dap_dit_config_from_file(const char *path, dap_dit_config *out) {
    dap_st *st;
    DAP_TRY(dap_st_open(&st, path));
    char *model = dap_st_meta_get(st, "model");
    int rc;
    if (model && strcmp(model, "dit") != 0)
        rc = dap_error(DAP_ERR_FORMAT, "%s: __metadata__ model is \"%s\", expected \"dit\"", path,
                       model);
    else
        rc = model ? config_from_meta(st, out) : config_from_shapes(st, out);
    if (rc == DAP_OK) rc = dap_dit_config_check(out);
    if (rc == DAP_OK && model) rc = meta_matches_tensors(st, out);
    free(model);
    dap_st_close(st);
    return rc;
}

int dap_dit_load(dap_dit **out, const char *path, int with_grad, int allow_extra) {
    *out = NULL;
    dap_dit_config c;
    DAP_TRY(dap_dit_config_from_file(path, &c));
    /* the whole table against the file before the weights are allocated from the config */
    dap_params table;
    dap_params_init(&table);
    dap_dit_params_table(&table, &c);
    int ok = dap_params_check_file(&table, path, NULL, allow_extra);
    dap_params_free(&table);
    DAP_TRY(ok);
    dap_dit *m;
    DAP_TRY(dap_dit_create(&m, &c, with_grad));
    int rc = dap_params_load(&m->params, path, NULL, allow_extra);
    if (rc == DAP_OK) rc = load_class_names(m, path);
    if (rc == DAP_OK) rc = dap_dit_train_data_from_file(path, &m->train_data);
    if (rc == DAP_OK) rc = dap_dit_finetune_from_file(path, &m->finetune);
    if (rc == DAP_OK && m->finetune && strchr(m->finetune, '\n'))
        rc = dap_error(DAP_ERR_FORMAT, "%s: __metadata__ \"finetune\" holds a line break", path);
    if (rc != DAP_OK) {
        dap_dit_destroy(m);
        return rc;
    }
    *out = m;
    return DAP_OK;
}

/* ---- state ------------------------------------------------------------------------ */

/* What one block keeps for its backward (rows N = n T). In the shared scratch set used by
 * blocks past cache_blocks, mid and out both alias the running stream. */
typedef struct block_acts {
    float *mods;                  /* (n, 6D): shift1 scale1 gate1 shift2 scale2 gate2 */
    float *ln1, *mean1, *rstd1;   /* (N, D), (N), (N) */
    float *mod1;                  /* (N, D) input of qkv */
    float *qkv;                   /* (N, 3D) */
    float *att;                   /* (n, NH, T, T) */
    float *atty;                  /* (N, D) input of proj */
    float *attn_out;              /* (N, D) */
    float *mid;                   /* (N, D) stream after the attention branch */
    float *ln2, *mean2, *rstd2;   /* (N, D), (N), (N) */
    float *mod2;                  /* (N, D) input of fc1 */
    float *fc1;                   /* (N, H4) pre-GELU */
    float *gelu;                  /* (N, H4) input of fc2 */
    float *mlp_out;               /* (N, D) */
    float *out;                   /* (N, D) block output */
} block_acts;

struct dap_dit_state {
    int batch, n, cache_blocks;
    int blocks_done;  /* blocks run by the last forward (0: none yet) */
    int full_forward; /* the last forward ran the final layer */
    float *mem;
    size_t mem_floats;
    int *y;                       /* (n) labels of the last forward */
    /* conditioning */
    float *tfreq;                 /* (n, 256) */
    float *t_h, *t_act;           /* (n, D) mlp.0 output, its SiLU */
    float *c, *c_act;             /* (n, D) t_emb + y_emb, its SiLU (input of every adaLN) */
    /* embedding */
    float *patches;               /* (N, C p p) */
    float *embed;                 /* (N, D) block 0 input */
    float *stream;                /* (N, D) running stream of the uncached blocks */
    block_acts *blk;              /* cache_blocks cached sets + 1 scratch set */
    const float *feat;            /* output of the last block run */
    void *dev;                    /* the device state of a device model (mem: the features' host copy) */
    const void *mdev;             /* that model's device half */
    int feat_pending;             /* device: the features not yet copied into mem */
    /* final layer */
    float *fmods;                 /* (n, 2D) shift, scale */
    float *lnf, *meanf, *rstdf, *modf; /* (N, D), (N), (N), (N, D) */
    float *fout;                  /* (N, p p Co) */
    float *attn_work;
    /* backward scratch (only when cache_blocks > 0) */
    float *dres, *dd1, *dd2;      /* (N, D): residual-stream gradient, two temporaries */
    float *dh1, *dh2;             /* (N, H4) */
    float *dqkv;                  /* (N, 3D) */
    float *dpatches;              /* (N, C p p) */
    float *dfout;                 /* (N, p p Co) */
    float *dmods, *dfmods;        /* (n, 6D), (n, 2D) */
    float *dc_act, *dc, *dctmp, *dt_act, *dt_h; /* (n, D) */
};

/* Carving: pass 1 (base NULL) counts, pass 2 hands out 16-float-aligned slices. */
typedef struct arena {
    float *base;
    size_t used;
} arena;

static float *take(arena *a, size_t n) {
    float *p = a->base ? a->base + a->used : NULL;
    a->used += (n + 15) & ~(size_t)15;
    return p;
}

static void block_acts_carve(arena *a, block_acts *b, const dap_dit *m, int batch, int scratch,
                             float *stream) {
    size_t N = (size_t)batch * m->tokens, D = m->cfg.hidden, H4 = m->mlp_hidden;
    b->mods = take(a, (size_t)batch * 6 * D);
    b->ln1 = take(a, N * D);
    b->mean1 = take(a, N);
    b->rstd1 = take(a, N);
    b->mod1 = take(a, N * D);
    b->qkv = take(a, N * 3 * D);
    b->att = take(a, (size_t)batch * m->cfg.heads * m->tokens * m->tokens);
    b->atty = take(a, N * D);
    b->attn_out = take(a, N * D);
    b->mid = scratch ? stream : take(a, N * D);
    b->ln2 = take(a, N * D);
    b->mean2 = take(a, N);
    b->rstd2 = take(a, N);
    b->mod2 = take(a, N * D);
    b->fc1 = take(a, N * H4);
    b->gelu = take(a, N * H4);
    b->mlp_out = take(a, N * D);
    b->out = scratch ? stream : take(a, N * D);
}

static void state_carve(arena *a, dap_dit_state *s, const dap_dit *m) {
    size_t B = s->batch, N = B * m->tokens, D = m->cfg.hidden, H4 = m->mlp_hidden;
    s->tfreq = take(a, B * FREQ_DIM);
    s->t_h = take(a, B * D);
    s->t_act = take(a, B * D);
    s->c = take(a, B * D);
    s->c_act = take(a, B * D);
    s->patches = take(a, N * m->patch_in);
    s->embed = take(a, N * D);
    s->stream = take(a, N * D);
    for (int l = 0; l <= s->cache_blocks; l++)
        block_acts_carve(a, &s->blk[l], m, s->batch, l == s->cache_blocks, s->stream);
    s->fmods = take(a, B * 2 * D);
    s->lnf = take(a, N * D);
    s->meanf = take(a, N);
    s->rstdf = take(a, N);
    s->modf = take(a, N * D);
    s->fout = take(a, N * m->patch_out);
    s->attn_work = take(a, dap_attention_work_floats(s->batch, m->tokens, (int)D, m->cfg.heads));
    if (s->cache_blocks == 0) return;
    s->dres = take(a, N * D);
    s->dd1 = take(a, N * D);
    s->dd2 = take(a, N * D);
    s->dh1 = take(a, N * H4);
    s->dh2 = take(a, N * H4);
    s->dqkv = take(a, N * 3 * D);
    s->dpatches = take(a, N * m->patch_in);
    s->dfout = take(a, N * m->patch_out);
    s->dmods = take(a, B * 6 * D);
    s->dfmods = take(a, B * 2 * D);
    s->dc_act = take(a, B * D);
    s->dc = take(a, B * D);
    s->dctmp = take(a, B * D);
    s->dt_act = take(a, B * D);
    s->dt_h = take(a, B * D);
}

#ifdef DAP_CUDA
/* The host side of a device state: activations on the device; the host keeps a copy of
 * the features. NULL (the error set) when the device state could not be made:
 * dap_dit_states_fit and dap_dit_train_fits check the plan before the work, so a caller
 * meets this only when something else took the memory in between. */
static dap_dit_state *device_state(const dap_dit *m, int batch, int cache_blocks, int train) {
    dap_dit_cuda_state *ds = NULL;
    int rc = train ? dap_dit_cuda_state_create_train(&ds, m->dev, batch)
                   : dap_dit_cuda_state_create(&ds, m->dev, batch, cache_blocks);
    if (rc != DAP_OK) return NULL;
    dap_dit_state *s = dap_calloc(1, sizeof *s);
    s->batch = s->n = batch;
    s->cache_blocks = cache_blocks;
    s->dev = ds, s->mdev = m->dev;
    s->y = dap_calloc((size_t)batch, sizeof *s->y);
    s->mem_floats = (size_t)batch * m->tokens * m->cfg.hidden;
    s->mem = dap_alloc_f32(s->mem_floats);
    return s;
}
#endif

dap_dit_state *dap_dit_state_create_ex(const dap_dit *m, int batch, int cache_blocks) {
    DAP_ASSERT(batch > 0 && cache_blocks >= 0 && cache_blocks <= m->cfg.depth);
#ifdef DAP_CUDA
    if (m->dev) return device_state(m, batch, cache_blocks, 0);
#endif
    dap_dit_state *s = dap_calloc(1, sizeof *s);
    s->batch = s->n = batch;
    s->cache_blocks = cache_blocks;
    s->blk = dap_calloc((size_t)cache_blocks + 1, sizeof *s->blk);
    s->y = dap_calloc((size_t)batch, sizeof *s->y);
    arena a = {NULL, 0};
    state_carve(&a, s, m);
    s->mem_floats = a.used;
    s->mem = dap_alloc_f32(a.used);
    a = (arena){s->mem, 0};
    state_carve(&a, s, m);
    return s;
}

dap_dit_state *dap_dit_state_create(const dap_dit *m, int batch) {
    return dap_dit_state_create_ex(m, batch, m->cfg.depth);
}

dap_dit_state *dap_dit_state_create_train(const dap_dit *m, int batch) {
    DAP_ASSERT(batch > 0);
#ifdef DAP_CUDA
    if (m->dev) return device_state(m, batch, m->cfg.depth, 1);
#endif
    return dap_dit_state_create(m, batch);
}

void dap_dit_state_destroy(dap_dit_state *s) {
    if (!s) return;
#ifdef DAP_CUDA
    dap_dit_cuda_state_destroy(s->dev);
#endif
    dap_free_aligned(s->mem);
    free(s->blk);
    free(s->y);
    free(s);
}

void dap_dit_state_set_batch(dap_dit_state *s, int n) {
    DAP_ASSERT(n > 0 && n <= s->batch);
    s->n = n;
    s->blocks_done = 0;
    s->full_forward = 0;
#ifdef DAP_CUDA
    if (s->dev) dap_dit_cuda_state_set_batch(s->dev, n), s->feat = NULL;
#endif
}

int dap_dit_state_batch(const dap_dit_state *s) { return s->n; }

size_t dap_dit_state_bytes(const dap_dit_state *s) {
#ifdef DAP_CUDA
    if (s->dev) return dap_dit_cuda_state_bytes(s->dev) + s->mem_floats * sizeof(float);
#endif
    return s->mem_floats * sizeof(float) + ((size_t)s->cache_blocks + 1) * sizeof(block_acts);
}

const float *dap_dit_features(dap_dit_state *s) {
#ifdef DAP_CUDA
    if (s->dev && s->feat_pending) {
        dap_dit_cuda_features_copy(s->mdev, s->dev, s->mem);
        s->feat = s->mem, s->feat_pending = 0;
    }
#endif
    DAP_ASSERT(s->feat != NULL);
    return s->feat;
}

void dap_dit_features_mean(const dap_dit *m, dap_dit_state *s, float *out) {
    const int n = s->n, T = m->tokens, D = m->cfg.hidden;
#ifdef DAP_CUDA
    if (s->dev && s->feat_pending) {
        dap_dit_cuda_features_mean(m->dev, s->dev, out);
        return;
    }
#endif
    dap_token_mean_forward(out, dap_dit_features(s), n, T, D);
}

/* ---- layout helpers --------------------------------------------------------------- */

/* x (n, C, H, W) -> patches (n, T, C p p), a patch laid out (c, ki, kj) like the conv
 * weight; token i g + j. */
static void patchify(float *patches, const float *x, const dap_dit *m, int n) {
    int C = m->cfg.in_channels, p = m->cfg.patch, g = m->grid, W = m->cfg.input_size;
    int T = m->tokens, P = m->patch_in;
#pragma omp parallel for schedule(static) if ((size_t)n * T * P > 32768)
    for (int bt = 0; bt < n * T; bt++) {
        int b = bt / T, i = (bt % T) / g, j = bt % g;
        float *dst = patches + (size_t)bt * P;
        for (int c = 0; c < C; c++)
            for (int ki = 0; ki < p; ki++) {
                const float *src = x + (((size_t)b * C + c) * W + i * p + ki) * W + j * p;
                memcpy(dst + (c * p + ki) * p, src, (size_t)p * sizeof(float));
            }
    }
}

/* The adjoint of patchify (a permutation, so an exact inverse): dx (n, C, H, W). */
static void unpatchify_in(float *x, const float *patches, const dap_dit *m, int n) {
    int C = m->cfg.in_channels, p = m->cfg.patch, g = m->grid, W = m->cfg.input_size;
    int T = m->tokens, P = m->patch_in;
#pragma omp parallel for schedule(static) if ((size_t)n * T * P > 32768)
    for (int bt = 0; bt < n * T; bt++) {
        int b = bt / T, i = (bt % T) / g, j = bt % g;
        const float *src = patches + (size_t)bt * P;
        for (int c = 0; c < C; c++)
            for (int ki = 0; ki < p; ki++) {
                float *dst = x + (((size_t)b * C + c) * W + i * p + ki) * W + j * p;
                memcpy(dst, src + (c * p + ki) * p, (size_t)p * sizeof(float));
            }
    }
}

/* The official unpatchify: tokens (n, T, p p Co) read as (n, h, w, p, q, c) ->
 * img[n, c, h p + pi, w p + q] (einsum nhwpqc->nchpwq). */
static void unpatchify_out(float *img, const float *tok, const dap_dit *m, int n) {
    int Co = m->out_channels, p = m->cfg.patch, g = m->grid, W = m->cfg.input_size;
    int T = m->tokens, P = m->patch_out;
#pragma omp parallel for schedule(static) if ((size_t)n * T * P > 32768)
    for (int bt = 0; bt < n * T; bt++) {
        int b = bt / T, i = (bt % T) / g, j = bt % g;
        const float *tk = tok + (size_t)bt * P;
        for (int c = 0; c < Co; c++)
            for (int pi = 0; pi < p; pi++) {
                float *px = img + (((size_t)b * Co + c) * W + i * p + pi) * W + j * p;
                for (int q = 0; q < p; q++) px[q] = tk[(pi * p + q) * Co + c];
            }
    }
}

/* Its adjoint (a permutation): img (n, Co, H, W) -> tok (n, T, p p Co). */
static void patchify_out(float *tok, const float *img, const dap_dit *m, int n) {
    int Co = m->out_channels, p = m->cfg.patch, g = m->grid, W = m->cfg.input_size;
    int T = m->tokens, P = m->patch_out;
#pragma omp parallel for schedule(static) if ((size_t)n * T * P > 32768)
    for (int bt = 0; bt < n * T; bt++) {
        int b = bt / T, i = (bt % T) / g, j = bt % g;
        float *tk = tok + (size_t)bt * P;
        for (int c = 0; c < Co; c++)
            for (int pi = 0; pi < p; pi++) {
                const float *px = img + (((size_t)b * Co + c) * W + i * p + pi) * W + j * p;
                for (int q = 0; q < p; q++) tk[(pi * p + q) * Co + c] = px[q];
            }
    }
}

static void add_inplace(float *a, const float *b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

/* ---- forward ---------------------------------------------------------------------- */

/* [cos(t f_i), sin(t f_i)], f_i = exp(-ln(10000) i / 128), all in float like the official
 * float32 code. */
static void timestep_freq(float *out, const float *t, int n) {
    int half = FREQ_DIM / 2;
    for (int b = 0; b < n; b++)
        for (int i = 0; i < half; i++) {
            float f = expf(-9.21034037197618f * (float)i / (float)half);
            float arg = t[b] * f;
            out[(size_t)b * FREQ_DIM + i] = cosf(arg);
            out[(size_t)b * FREQ_DIM + half + i] = sinf(arg);
        }
}

static void block_forward(const dap_dit *m, dap_dit_state *s, int l, const float *in,
                          block_acts *a) {
    int n = s->n, T = m->tokens, D = m->cfg.hidden, H4 = m->mlp_hidden, N = n * T;
    block_w w = block_ptrs(m, m->params.data, l);
    float *md = a->mods;
    dap_linear_forward(md, s->c_act, w.ada_w, w.ada_b, n, D, 6 * D);
    /* attention branch */
    dap_layernorm_forward(a->ln1, a->mean1, a->rstd1, in, NULL, NULL, N, D, LN_EPS);
    dap_modulate_forward(a->mod1, a->ln1, md, md + D, n, T, D, 6 * D);
    dap_linear_forward(a->qkv, a->mod1, w.qkv_w, w.qkv_b, N, D, 3 * D);
    dap_attention_forward(a->atty, a->att, a->qkv, n, T, D, m->cfg.heads, s->attn_work);
    dap_linear_forward(a->attn_out, a->atty, w.proj_w, w.proj_b, N, D, D);
    if (a->mid != in) memcpy(a->mid, in, (size_t)N * D * sizeof(float));
    dap_gate_residual_forward(a->mid, a->attn_out, md + 2 * D, n, T, D, 6 * D);
    /* MLP branch */
    dap_layernorm_forward(a->ln2, a->mean2, a->rstd2, a->mid, NULL, NULL, N, D, LN_EPS);
    dap_modulate_forward(a->mod2, a->ln2, md + 3 * D, md + 4 * D, n, T, D, 6 * D);
    dap_linear_forward(a->fc1, a->mod2, w.fc1_w, w.fc1_b, N, D, H4);
    dap_gelu_forward(a->gelu, a->fc1, (size_t)N * H4);
    dap_linear_forward(a->mlp_out, a->gelu, w.fc2_w, w.fc2_b, N, H4, D);
    if (a->out != a->mid) memcpy(a->out, a->mid, (size_t)N * D * sizeof(float));
    dap_gate_residual_forward(a->out, a->mlp_out, md + 5 * D, n, T, D, 6 * D);
}

void dap_dit_forward(const dap_dit *m, dap_dit_state *s, float *out, const float *x,
                     const float *t, const int *y, int stop_block) {
    const dap_dit_config *cf = &m->cfg;
    int n = s->n, T = m->tokens, D = cf->hidden, N = n * T, depth = cf->depth;
    DAP_ASSERT(stop_block >= 0 && stop_block <= depth);
    DAP_ASSERT(stop_block == 0 || out == NULL);
    int rows = cf->num_classes + (cf->class_dropout > 0);
    for (int b = 0; b < n; b++) DAP_ASSERT(y[b] >= 0 && y[b] < rows);
#ifdef DAP_CUDA
    if (s->dev) {
        dap_dit_cuda_forward(m->dev, s->dev, out, x, t, y, stop_block);
        memcpy(s->y, y, (size_t)n * sizeof *y);
        s->blocks_done = stop_block ? stop_block : depth;
        s->full_forward = stop_block == 0;
        s->feat = NULL, s->feat_pending = stop_block > 0; /* copied when asked for */
        return;
    }
#endif
    top_w w = top_ptrs(m, m->params.data);
    memcpy(s->y, y, (size_t)n * sizeof *y);

    /* conditioning c = t_embedder(t) + y_embedder(y) */
    timestep_freq(s->tfreq, t, n);
    dap_linear_forward(s->t_h, s->tfreq, w.t0_w, w.t0_b, n, FREQ_DIM, D);
    dap_silu_forward(s->t_act, s->t_h, (size_t)n * D);
    dap_linear_forward(s->c, s->t_act, w.t2_w, w.t2_b, n, D, D);
    for (int b = 0; b < n; b++)
        add_inplace(s->c + (size_t)b * D, w.ytab + (size_t)y[b] * D, (size_t)D);
    dap_silu_forward(s->c_act, s->c, (size_t)n * D);

    /* patch embedding + fixed position embedding */
    patchify(s->patches, x, m, n);
    dap_linear_forward(s->embed, s->patches, w.xe_w, w.xe_b, N, m->patch_in, D);
#pragma omp parallel for schedule(static) if ((size_t)N * D > 65536)
    for (int r = 0; r < N; r++) add_inplace(s->embed + (size_t)r * D, w.pos + (size_t)(r % T) * D, (size_t)D);

    int last = stop_block ? stop_block : depth;
    const float *h = s->embed;
    for (int l = 0; l < last; l++) {
        block_acts *a = &s->blk[l < s->cache_blocks ? l : s->cache_blocks];
        if (l >= s->cache_blocks && h != s->stream)
            memcpy(s->stream, h, (size_t)N * D * sizeof(float));
        block_forward(m, s, l, l >= s->cache_blocks ? s->stream : h, a);
        h = a->out;
    }
    s->blocks_done = last;
    s->feat = h;
    s->full_forward = stop_block == 0;
    if (stop_block) return;

    /* final adaLN layer + unpatchify */
    dap_linear_forward(s->fmods, s->c_act, w.fin_ada_w, w.fin_ada_b, n, D, 2 * D);
    dap_layernorm_forward(s->lnf, s->meanf, s->rstdf, h, NULL, NULL, N, D, LN_EPS);
    dap_modulate_forward(s->modf, s->lnf, s->fmods, s->fmods + D, n, T, D, 2 * D);
    dap_linear_forward(s->fout, s->modf, w.fin_w, w.fin_b, N, D, m->patch_out);
    if (out) unpatchify_out(out, s->fout, m, n);
}

/* ---- backward --------------------------------------------------------------------- */

/* s->dres holds d(block l output) on entry and d(block l input) on exit. With grads,
 * the gradients of the tensors g points to (NULL: skipped) accumulate and d(c_act) is
 * added into s->dc_act; without, only the input path is computed. */
static void block_backward(const dap_dit *m, dap_dit_state *s, int l, const block_w *g, int grads) {
    DAP_ASSERT(l < s->cache_blocks);
    int n = s->n, T = m->tokens, D = m->cfg.hidden, H4 = m->mlp_hidden, N = n * T;
    int nh = m->cfg.heads;
    block_acts *a = &s->blk[l];
    const float *in = l == 0 ? s->embed : s->blk[l - 1].out;
    block_w w = block_ptrs(m, m->params.data, l);
    float *dm = grads ? s->dmods : NULL; /* (n, 6D), every chunk overwritten below */
    const float *md = a->mods;
    size_t ND = (size_t)N * D;

    /* MLP branch: out = mid + g2 * mlp(mod(LN(mid), sh2, sc2)) */
    dap_gate_residual_backward(s->dd1, dm ? dm + 5 * D : NULL, s->dres, a->mlp_out, md + 5 * D, n,
                               T, D, 6 * D);
    dap_linear_backward(s->dh1, g->fc2_w, g->fc2_b, s->dd1, a->gelu, w.fc2_w, N, H4, D);
    dap_gelu_backward(s->dh2, s->dh1, a->fc1, (size_t)N * H4);
    dap_linear_backward(s->dd1, g->fc1_w, g->fc1_b, s->dh2, a->mod2, w.fc1_w, N, D, H4);
    dap_modulate_backward(s->dd2, dm ? dm + 3 * D : NULL, dm ? dm + 4 * D : NULL, s->dd1, a->ln2,
                          md + 4 * D, n, T, D, 6 * D);
    dap_layernorm_backward(s->dd1, NULL, NULL, s->dd2, a->mid, NULL, a->mean2, a->rstd2, N, D);
    add_inplace(s->dres, s->dd1, ND);

    /* attention branch: mid = in + g1 * proj(attn(qkv(mod(LN(in), sh1, sc1)))) */
    dap_gate_residual_backward(s->dd1, dm ? dm + 2 * D : NULL, s->dres, a->attn_out, md + 2 * D, n,
                               T, D, 6 * D);
    dap_linear_backward(s->dd2, g->proj_w, g->proj_b, s->dd1, a->atty, w.proj_w, N, D, D);
    dap_attention_backward(s->dqkv, s->dd2, a->qkv, a->att, n, T, D, nh, s->attn_work);
    dap_linear_backward(s->dd1, g->qkv_w, g->qkv_b, s->dqkv, a->mod1, w.qkv_w, N, D, 3 * D);
    dap_modulate_backward(s->dd2, dm, dm ? dm + D : NULL, s->dd1, a->ln1, md + D, n, T,
                          D, 6 * D);
    dap_layernorm_backward(s->dd1, NULL, NULL, s->dd2, in, NULL, a->mean1, a->rstd1, N, D);
    add_inplace(s->dres, s->dd1, ND);

    if (grads) { /* adaLN: mods = Linear(c_act) */
        dap_linear_backward(s->dctmp, g->ada_w, g->ada_b, dm, s->c_act, w.ada_w, n, D, 6 * D);
        add_inplace(s->dc_act, s->dctmp, (size_t)n * D);
    }
}

void dap_dit_backward(dap_dit *m, dap_dit_state *s, const float *dout, float *dx) {
    DAP_ASSERT(m->params.grad != NULL);
    DAP_ASSERT(s->full_forward && s->cache_blocks == m->cfg.depth);
#ifdef DAP_CUDA
    if (s->dev) { /* a training state: the gradients stay on the device */
        DAP_ASSERT(dx == NULL);
        dap_dit_cuda_backward_params(m->dev, s->dev, dout);
        return;
    }
#endif
    int n = s->n, T = m->tokens, D = m->cfg.hidden, N = n * T, depth = m->cfg.depth;
    top_w w = top_ptrs(m, m->params.data), g = top_ptrs(m, m->params.grad);

    /* final layer: fout = Linear(mod(LN(h), sh, sc)), [sh sc] = Linear(c_act) */
    patchify_out(s->dfout, dout, m, n);
    dap_linear_backward(s->dd1, g.fin_w, g.fin_b, s->dfout, s->modf, w.fin_w, N, D, m->patch_out);
    dap_modulate_backward(s->dd2, s->dfmods, s->dfmods + D, s->dd1, s->lnf, s->fmods + D, n, T, D,
                          2 * D);
    dap_layernorm_backward(s->dres, NULL, NULL, s->dd2, s->feat, NULL, s->meanf, s->rstdf, N, D);
    dap_linear_backward(s->dc_act, g.fin_ada_w, g.fin_ada_b, s->dfmods, s->c_act, w.fin_ada_w, n,
                        D, 2 * D);

    for (int l = depth - 1; l >= 0; l--) {
        block_w gb = block_ptrs(m, m->params.grad, l);
        block_backward(m, s, l, &gb, 1);
    }

    /* patch embedding (pos_embed is frozen) */
    dap_linear_backward(dx ? s->dpatches : NULL, g.xe_w, g.xe_b, s->dres, s->patches, w.xe_w, N,
                        m->patch_in, D);
    if (dx) unpatchify_in(dx, s->dpatches, m, n);

    /* conditioning: c_act = SiLU(c), c = mlp.2(SiLU(mlp.0(freq))) + table[y] */
    dap_silu_backward(s->dc, s->dc_act, s->c, (size_t)n * D);
    if (g.ytab)
        for (int b = 0; b < n; b++) add_inplace(g.ytab + (size_t)s->y[b] * D, s->dc + (size_t)b * D, (size_t)D);
    dap_linear_backward(s->dt_act, g.t2_w, g.t2_b, s->dc, s->t_act, w.t2_w, n, D, D);
    dap_silu_backward(s->dt_h, s->dt_act, s->t_h, (size_t)n * D);
    dap_linear_backward(NULL, g.t0_w, g.t0_b, s->dt_h, s->tfreq, w.t0_w, n, FREQ_DIM, D);
}

/* From s->dres = d(block l's output) down to dx. */
static void backward_below(const dap_dit *m, dap_dit_state *s, int l, float *dx) {
    int N = s->n * m->tokens, D = m->cfg.hidden;
    block_w none = {0};
    for (int k = l - 1; k >= 0; k--) block_backward(m, s, k, &none, 0);
    top_w w = top_ptrs(m, m->params.data);
    dap_linear_backward(s->dpatches, NULL, NULL, s->dres, s->patches, w.xe_w, N, m->patch_in, D);
    unpatchify_in(dx, s->dpatches, m, s->n);
}

void dap_dit_backward_from_block(const dap_dit *m, dap_dit_state *s, int l, const float *dfeat,
                                 float *dx) {
    DAP_ASSERT(l >= 1 && l <= s->cache_blocks && s->blocks_done >= l);
#ifdef DAP_CUDA
    if (s->dev) {
        dap_dit_cuda_backward_from_block(m->dev, s->dev, l, dfeat, dx);
        return;
    }
#endif
    memcpy(s->dres, dfeat, (size_t)s->n * m->tokens * m->cfg.hidden * sizeof(float));
    backward_below(m, s, l, dx);
}

const float *dap_dit_features_device(const dap_dit *m, dap_dit_state *s, int mean) {
#ifdef DAP_CUDA
    if (s->dev) {
        DAP_ASSERT(s->blocks_done > 0 && !s->full_forward);
        return mean ? dap_dit_cuda_features_mean_dev(m->dev, s->dev) : dap_dit_cuda_features(s->dev);
    }
#endif
    (void)m, (void)s, (void)mean;
    return NULL;
}

void dap_dit_backward_from_block_mean(const dap_dit *m, dap_dit_state *s, int l, const float *dmean,
                                      float *dx) {
    DAP_ASSERT(l >= 1 && l <= s->cache_blocks && s->blocks_done >= l);
#ifdef DAP_CUDA
    if (s->dev) {
        dap_dit_cuda_backward_from_block_mean(m->dev, s->dev, l, dmean, dx);
        return;
    }
#endif
    dap_token_mean_backward(s->dres, dmean, s->n, m->tokens, m->cfg.hidden);
    backward_below(m, s, l, dx);
}

/* ---- the device --------------------------------------------------------------------- */

int dap_dit_to_device(dap_dit *m) {
    if (dap_device() == DAP_DEVICE_CPU || m->dev) return DAP_OK;
#ifdef DAP_CUDA
    dap_dit_cuda *d = NULL;
    DAP_TRY(dap_dit_cuda_create(&d, m, dap_device_precision()));
    m->dev = d;
    return DAP_OK;
#else
    return dap_error(DAP_ERR_MISSING, "device %s: this dap was built without the CUDA backend", dap_device_name());
#endif
}

int dap_dit_train_fits(const dap_dit *m, int batch, const char *what) {
    if (!m->dev) return DAP_OK;
#ifdef DAP_CUDA
    size_t need = dap_dit_cuda_train_bytes_for(m->dev, batch), fr = 0, tot = 0;
    DAP_TRY(dap_cuda_memory(&fr, &tot));
    char b[3][32];
    if (need > fr)
        return dap_error(DAP_ERR_NOMEM, "%s: training needs %s on the device besides the weights (activations "
                                        "for batch %d, gradients, EMA, AdamW moments), %s of its %s are "
                                        "free: lower %s", dap_dit_cuda_describe(m->dev), dap_fmt_bytes(b[0], 32, (double)need),
                         batch, dap_fmt_bytes(b[1], 32, (double)fr), dap_fmt_bytes(b[2], 32, (double)tot), what);
#else
    (void)batch, (void)what;
#endif
    return DAP_OK;
}

int dap_dit_train_begin(dap_dit *m, const float *ema, const struct dap_adamw *opt) {
#ifdef DAP_CUDA
    if (m->dev) {
        const int moments = opt->step > 0; /* a fresh optimiser's are zeros */
        return dap_dit_cuda_train_begin(m->dev, ema, moments ? opt->m : NULL, moments ? opt->v : NULL);
    }
#endif
    (void)m, (void)ema, (void)opt;
    return DAP_OK;
}

float dap_dit_train_update(dap_dit *m, struct dap_adamw *opt, double lr, float max_norm, double decay) {
#ifdef DAP_CUDA
    DAP_ASSERT(m->dev != NULL);
    return dap_dit_cuda_train_update(m->dev, opt, lr, max_norm, decay);
#else
    (void)m, (void)opt, (void)lr, (void)max_norm, (void)decay;
    DAP_ASSERT(!"dap_dit_train_update: a model on the device only");
    return 0.0f;
#endif
}

void dap_dit_train_sync(dap_dit *m, float *ema, struct dap_adamw *opt) {
#ifdef DAP_CUDA
    if (m->dev) dap_dit_cuda_train_download(m->dev, m->params.data, ema, opt->m, opt->v);
#endif
    (void)m, (void)ema, (void)opt;
}

void dap_dit_swap_ema(dap_dit *m) {
#ifdef DAP_CUDA
    if (m->dev) dap_dit_cuda_swap_ema(m->dev);
#endif
    (void)m;
}

int dap_dit_states_fit(const dap_dit *m, int count, const int *batch, const int *cache_blocks, const char *what) {
    if (!m->dev) return DAP_OK;
#ifdef DAP_CUDA
    size_t need = 0, fr = 0, tot = 0;
    for (int i = 0; i < count; i++) need += dap_dit_cuda_state_bytes_for(m->dev, batch[i], cache_blocks[i]);
    DAP_TRY(dap_cuda_memory(&fr, &tot));
    char b[3][32];
    if (need > fr)
        return dap_error(DAP_ERR_NOMEM, "%s: the DiT's activations need %s on the device (batch %d%s), %s "
                                        "of its %s are free besides the weights: lower %s",
                         dap_dit_cuda_describe(m->dev), dap_fmt_bytes(b[0], 32, (double)need), batch[0],
                         count > 1 ? " and more" : "", dap_fmt_bytes(b[1], 32, (double)fr),
                         dap_fmt_bytes(b[2], 32, (double)tot), what);
#else
    (void)count, (void)batch, (void)cache_blocks, (void)what;
#endif
    return DAP_OK;
}
