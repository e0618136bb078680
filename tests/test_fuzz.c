/*
 * test_fuzz.c: deterministic mutation tests of every loader that reads untrusted files:
 * safetensors (the reader, crafted header lies, the strict params load, optimizer state,
 * DiT and classifier checkpoints), IDX (raw and gzipped, and as a dataset), PNG, JPEG and
 * image folders. Each test builds a small valid file, checks that it loads, then loads its
 * truncations and a few hundred seeded byte edits: each must load or be refused with a
 * status and a message, never crash, hang or leak, and never hand back a buffer smaller
 * than it claims (the ASan build, `make SAN=1`, watches the buffers; dap_read_file
 * returns exactly the file's bytes, so a read past the end is caught). Mutants invalid by
 * construction (cut data, a lying header, a size claim the tensors contradict) must be
 * refused; each test counts its accepted and refused mutants and checks those counts.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <zlib.h>

#include "core/core.h"
#include "core/optim.h"
#include "core/params.h"
#include "data/dataset.h"
#include "eval/classifier.h"
#include "io/io.h"
#include "models/dit.h"
#include "test.h"

/* ---- the harness ----------------------------------------------------------------- */
/* splitmix64: a fixed seed gives the same mutants on every run and machine. */
typedef struct {
    uint64_t s;
} fz_rng;
static uint64_t fz_next(fz_rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static size_t fz_below(fz_rng *r, size_t n) {
    return n ? (size_t)(fz_next(r) % n) : 0;
}

/* Removed first: ext4 flushes a file truncated and rewritten in place on close (its
 * auto_da_alloc), which made each mutant cost milliseconds. */
static void fz_write(const char *path, const void *b, size_t n) {
    remove(path);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    if (n) CHECK(fwrite(b, 1, n, f) == n);
    fclose(f);
}

static uint8_t *fz_read(const char *path, size_t *n) {
    uint8_t *b = NULL;
    int rc = dap_read_file(path, &b, n);
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    return b;
}

/* A loader under test: loads `path`, inspects and frees what it got, returns the status. */
typedef int (*fz_load_fn)(const char *path, void *ctx);
typedef struct {
    const char *label;
    const char *path; /* where mutants are written */
    fz_load_fn load;
    void *ctx;
    int accepted, refused, wrongly_accepted;
} fz_target;

/* Bytes [lo, hi) of a file. */
typedef struct {
    size_t lo, hi;
} fz_span;

/* Loads one mutant: OK, or a non-OK status with a message (cleared first, so a stale
 * one does not count). */
static int fz_try(fz_target *t, const uint8_t *b, size_t n, const char *what, size_t arg) {
    fz_write(t->path, b, n);
    dap_clear_error();
    int rc = t->load(t->path, t->ctx);
    if (rc == DAP_OK)
        t->accepted++;
    else
        t->refused++;
    CHECK_MSG(rc == DAP_OK || dap_last_error()[0], "%s: %s %zu: status %d without a message", t->label, what,
              arg, rc);
    return rc;
}

/* A mutant that had to be refused was accepted: the first few are reported. */
static void fz_wrongly_accepted(fz_target *t, const char *what, size_t arg) {
    if (t->wrongly_accepted++ < 4)
        dap_test_fail(__FILE__, __LINE__, "%s: %s %zu accepted (must be refused)", t->label, what, arg);
}

/* Up to 2 KB every length; longer files every stride-th length plus lengths near 0, the
 * end and the format's boundaries `marks`. */
static int fz_length_wanted(size_t len, size_t n, const size_t *marks, int nmarks) {
    if (n <= 2048 || len < 16 || len + 16 >= n || len % (n / 384 + 1) == 0) return 1;
    for (int i = 0; i < nmarks; i++)
        if (len + 2 >= marks[i] && len <= marks[i] + 2) return 1;
    return 0;
}

/* Loads prefixes of the file; those shorter than `keep` lack required bytes and must be
 * refused. Returns how many were tried. */
static int fz_truncations(fz_target *t, const uint8_t *orig, size_t n, const size_t *marks, int nmarks,
                          size_t keep) {
    int tried = 0;
    for (size_t len = 0; len < n; len++) {
        if (!fz_length_wanted(len, n, marks, nmarks)) continue;
        tried++;
        if (fz_try(t, orig, len, "truncated to", len) == DAP_OK && len < keep)
            fz_wrongly_accepted(t, "truncated to", len);
    }
    return tried;
}

/* `count` seeded mutants, each with 1 to 4 edits inside `where` (a random byte, one flipped
 * bit, 0x00 or 0xff). A mutant that changed a byte in `strict` must be refused (an empty
 * span: no such rule). */
static void fz_edits(fz_target *t, const uint8_t *orig, size_t n, fz_span where, fz_span strict, int count,
                     uint64_t seed) {
    fz_rng r = {seed};
    uint8_t *b = dap_malloc(n);
    for (int i = 0; i < count; i++) {
        memcpy(b, orig, n);
        int edits = 1 + (int)fz_below(&r, 4);
        for (int e = 0; e < edits; e++) {
            size_t at = where.lo + fz_below(&r, where.hi - where.lo);
            switch (fz_below(&r, 4)) {
            case 0:
                b[at] = (uint8_t)fz_next(&r);
                break;
            case 1:
                b[at] ^= (uint8_t)(1u << fz_below(&r, 8));
                break;
            case 2:
                b[at] = 0;
                break;
            default:
                b[at] = 0xff;
                break;
            }
        }
        int changed = strict.hi > strict.lo && memcmp(b + strict.lo, orig + strict.lo, strict.hi - strict.lo);
        if (fz_try(t, b, n, "edit", (size_t)i) == DAP_OK && changed)
            fz_wrongly_accepted(t, "edit", (size_t)i);
    }
    free(b);
}

static void fz_report(const fz_target *t) {
    printf("    %-18s %5d mutants: %5d accepted, %5d refused\n", t->label, t->accepted + t->refused,
           t->accepted, t->refused);
    CHECK_MSG(t->wrongly_accepted == 0, "%s: %d mutants that must be refused were accepted", t->label,
              t->wrongly_accepted);
}

/* The 8-byte little-endian header length of a safetensors file. */
static uint64_t st_hlen(const uint8_t *b) {
    uint64_t h = 0;
    for (int k = 7; k >= 0; k--) h = h << 8 | b[k];
    return h;
}
static void st_put_hlen(uint8_t *b, uint64_t h) {
    for (int k = 0; k < 8; k++) b[k] = (uint8_t)(h >> (8 * k));
}

/* ---- safetensors: the reader ------------------------------------------------------- */
/* The reader as production code uses it: open, convert every float tensor into a buffer
 * of exactly numel floats (so ASan sees any overrun), look up metadata. */
static int load_st(const char *path, void *ctx) {
    (void)ctx;
    dap_st *st = NULL;
    int rc = dap_st_open(&st, path);
    if (rc != DAP_OK) {
        CHECK(st == NULL);
        return rc;
    }
    for (int i = 0; i < st->n; i++) {
        const dap_st_tensor *t = &st->t[i];
        CHECK(t->begin <= t->end && t->end <= st->data_size);
        float *dst = malloc(sizeof(float) * (t->numel ? t->numel : 1));
        int r = dap_st_read_f32(st, t->name, dst, t->shape, t->ndim);
        int is_float = t->dtype == DAP_DT_F32 || t->dtype == DAP_DT_F16 || t->dtype == DAP_DT_BF16;
        CHECK(is_float ? r == DAP_OK : r == DAP_ERR_SHAPE);
        free(dst);
    }
    free(dap_st_meta_get(st, "format"));
    dap_st_close(st);
    return DAP_OK;
}

/* A valid file with every dtype kind the reader converts, an I64, an empty tensor and
 * metadata; returns its bytes. */
static uint8_t *st_valid_file(const char *path, size_t *n) {
    float v[6] = {1.5f, -2.25f, 3e-3f, 0, 65504.0f, -1e-6f};
    uint16_t bf[3] = {0x3f80, 0xc020, 0x4049};
    int64_t step = 77, s23[2] = {2, 3}, s4[1] = {4}, s3[1] = {3}, s1[1] = {1}, s0[2] = {0, 5};
    dap_st_writer *w = dap_st_writer_create();
    dap_st_writer_meta(w, "format", "pt");
    dap_st_writer_meta(w, "note", "a \"quoted\" \\ value\n.."); /* this length: 6 bytes of padding */
    dap_st_writer_add(w, "layer.weight", DAP_DT_F32, v, 2, s23);
    dap_st_writer_add(w, "layer.bias", DAP_DT_F16, v, 1, s4);
    dap_st_writer_add_raw(w, "bf", DAP_DT_BF16, bf, 1, s3);
    dap_st_writer_add(w, "empty", DAP_DT_F32, NULL, 2, s0);
    dap_st_writer_add_raw(w, "step", DAP_DT_I64, &step, 1, s1);
    CHECK(dap_st_writer_save(w, path) == DAP_OK);
    dap_st_writer_destroy(w);
    return fz_read(path, n);
}

DAP_TEST(fuzz_safetensors) {
    size_t n;
    uint8_t *orig = st_valid_file(dap_test_path("fz.safetensors"), &n);
    if (!orig) return;
    fz_target t = {.label = "safetensors", .path = dap_test_path("fz-mut.safetensors"), .load = load_st};
    CHECK_MSG(load_st(dap_test_path("fz.safetensors"), NULL) == DAP_OK, "valid file: %s", dap_last_error());
    size_t hend = 8 + (size_t)st_hlen(orig);
    size_t marks[] = {8, hend};
    /* the data section ends with the I64 step: any cut loses bytes a tensor needs */
    int cuts = fz_truncations(&t, orig, n, marks, 2, n);
    CHECK(t.refused == cuts);
    /* edits anywhere, then edits of the header alone, where the structure is; a changed
     * high byte of the length field makes the header larger than the file */
    fz_edits(&t, orig, n, (fz_span){0, n}, (fz_span){1, 8}, 150, 1);
    fz_edits(&t, orig, n, (fz_span){0, hend}, (fz_span){1, 8}, 250, 2);
    fz_report(&t);
    CHECK(t.accepted > 0 && t.refused > cuts); /* both outcomes happen: the edits reach both */
    free(orig);
}

/* ---- safetensors: crafted header lies ------------------------------------------------ */
/* Writes a file: the given header-length field, header text, then 16 data bytes (four
 * F32 ones). */
static void st_write_crafted(const char *path, uint64_t hlen, const char *header) {
    size_t h = strlen(header);
    uint8_t *b = dap_malloc(8 + h + 16);
    st_put_hlen(b, hlen);
    memcpy(b + 8, header, h);
    const float one[4] = {1, 1, 1, 1};
    memcpy(b + 8 + h, one, 16);
    fz_write(path, b, 8 + h + 16);
    free(b);
}

#define T_(dt, shape, offs)   "{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" offs "}"
#define ONE_(dt, shape, offs) "{\"a\":" T_(dt, shape, offs) "}"
static const struct {
    const char *label, *header;
    int ok;
} k_st_cases[] = {
    /* controls: the same template, valid */
    {"F32 [4]", ONE_("F32", "[4]", "[0,16]"), 1},
    {"F16 [2,4]", ONE_("F16", "[2,4]", "[0,16]"), 1},
    {"U8 [16]", ONE_("U8", "[16]", "[0,16]"), 1},
    {"two halves", "{\"a\":" T_("F32", "[2]", "[0,8]") ",\"b\":" T_("F32", "[2]", "[8,16]") "}", 1},
    /* offsets past the end, reversed, negative, beyond int64 */
    {"end past data", ONE_("F32", "[4]", "[1,17]"), 0},
    {"both past data", ONE_("F32", "[1]", "[16,20]"), 0},
    {"end 2^63-1", ONE_("F32", "[1]", "[9223372036854775803,9223372036854775807]"), 0},
    {"end 2^64", ONE_("U8", "[16]", "[0,18446744073709551616]"), 0},
    {"begin > end", ONE_("F32", "[1]", "[8,4]"), 0},
    {"begin > end, empty", ONE_("F32", "[0]", "[16,0]"), 0},
    {"negative begin", ONE_("F32", "[4]", "[-4,12]"), 0},
    {"negative end", ONE_("F32", "[0]", "[0,-16]"), 0},
    {"one offset", ONE_("F32", "[4]", "[16]"), 0},
    {"three offsets", ONE_("F32", "[4]", "[0,16,16]"), 0},
    {"offsets as strings", ONE_("F32", "[4]", "[\"0\",\"16\"]"), 0},
    /* shapes: negative, product overflowing, too large, not integers */
    {"negative dim", ONE_("F32", "[-4]", "[0,16]"), 0},
    {"two negative dims", ONE_("F32", "[-1,-4]", "[0,16]"), 0},
    {"product 2^64+4", ONE_("F32", "[4294967296,4294967296,4]", "[0,16]"), 0},
    {"product wraps to 4", ONE_("U8", "[4611686018427387905,4]", "[0,16]"), 0},
    {"3037000500^2", ONE_("U8", "[3037000500,3037000500]", "[0,16]"), 0},
    {"dims wrap past 0", ONE_("F32", "[4611686018427387904,4611686018427387904,0]", "[0,0]"), 0},
    {"2^40 elements", ONE_("U8", "[1099511627776]", "[0,16]"), 0},
    {"dim beyond int64", ONE_("F32", "[9223372036854775808]", "[0,16]"), 0},
    {"9 dims", ONE_("F32", "[1,1,1,1,1,1,1,2,2]", "[0,16]"), 0},
    {"float dim", ONE_("F32", "[4.0]", "[0,16]"), 0},
    {"string dim", ONE_("F32", "[\"4\"]", "[0,16]"), 0},
    {"shape not array", ONE_("F32", "4", "[0,16]"), 0},
    {"byte count short", ONE_("F32", "[3]", "[0,16]"), 0},
    {"byte count long", ONE_("F16", "[16]", "[0,16]"), 0},
    /* dtypes */
    {"dtype F64", ONE_("F64", "[2]", "[0,16]"), 0},
    {"dtype f32", ONE_("f32", "[4]", "[0,16]"), 0},
    {"dtype empty", ONE_("", "[4]", "[0,16]"), 0},
    {"dtype 'F32 '", ONE_("F32 ", "[4]", "[0,16]"), 0},
    {"dtype BOOL", ONE_("BOOL", "[16]", "[0,16]"), 0},
    {"dtype F8_E4M3", ONE_("F8_E4M3", "[16]", "[0,16]"), 0},
    {"dtype number", "{\"a\":{\"dtype\":32,\"shape\":[4],\"data_offsets\":[0,16]}}", 0},
    /* duplicates: names (also spelled with an escape), fields, metadata */
    {"duplicate name", "{\"a\":" T_("F32", "[2]", "[0,8]") ",\"a\":" T_("F32", "[2]", "[8,16]") "}", 0},
    {"duplicate, escaped", "{\"a\":" T_("F32", "[2]", "[0,8]") ",\"\\u0061\":" T_("F32", "[2]", "[8,16]") "}",
     0},
    {"duplicate field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"shape\":[4],\"data_offsets\":[0,16]}}", 0},
    {"duplicate metadata", "{\"__metadata__\":{},\"__metadata__\":{},\"a\":" T_("F32", "[4]", "[0,16]") "}",
     0},
    /* overlapping tensors */
    {"overlap", "{\"a\":" T_("F32", "[3]", "[0,12]") ",\"b\":" T_("F32", "[2]", "[8,16]") "}", 0},
    {"same bytes", "{\"a\":" T_("F32", "[4]", "[0,16]") ",\"b\":" T_("F32", "[4]", "[0,16]") "}", 0},
};

DAP_TEST(fuzz_safetensors_crafted) {
    fz_target t = {.label = "crafted header", .path = dap_test_path("fz-crafted.safetensors"), .load = load_st};
    int ncase = (int)(sizeof k_st_cases / sizeof k_st_cases[0]), nok = 0;
    for (int i = 0; i < ncase; i++) {
        st_write_crafted(t.path, strlen(k_st_cases[i].header), k_st_cases[i].header);
        dap_clear_error();
        int rc = load_st(t.path, NULL);
        nok += rc == DAP_OK;
        CHECK_MSG((rc == DAP_OK) == k_st_cases[i].ok, "%s: status %d (%s), expected %s", k_st_cases[i].label,
                  rc, dap_last_error(), k_st_cases[i].ok ? "accepted" : "refused");
        CHECK_MSG(rc == DAP_OK || dap_last_error()[0], "%s: refused without a message", k_st_cases[i].label);
    }
    printf("    %d crafted headers: %d accepted (the controls), %d refused\n", ncase, nok, ncase - nok);
    /* the header-length field of a real file: zero, tiny, off by one either way (also into
     * the header's space padding, which would shift every tensor's bytes), past the file,
     * 2^32 more (a 32-bit wrap), 2^63 and all ones */
    size_t n;
    uint8_t *orig = st_valid_file(dap_test_path("fz.safetensors"), &n);
    if (!orig) return;
    uint64_t h = st_hlen(orig), pad = 0;
    while (pad < h && orig[8 + h - 1 - pad] == ' ') pad++;
    CHECK_MSG(pad >= 2, "the valid file's header has %llu bytes of padding", (unsigned long long)pad);
    const uint64_t wrap = h + ((uint64_t)1 << 32), top = (uint64_t)1 << 63;
    const uint64_t lens[] = {0,     1,     2,     h - 1, h - pad, h - pad - 1, h + 1,
                             h + 8, n - 8, n - 7, n,     wrap,    top,         UINT64_MAX};
    uint8_t *b = dap_malloc(n);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        memcpy(b, orig, n);
        st_put_hlen(b, lens[i]);
        if (fz_try(&t, b, n, "header length", (size_t)lens[i]) == DAP_OK)
            fz_wrongly_accepted(&t, "header length", (size_t)lens[i]);
    }
    fz_report(&t);
    free(b);
    free(orig);
}

/* ---- safetensors: strict params load (NaN/Inf refused) -------------------------------- */
typedef struct {
    dap_params ps;
} params_ctx;

/* dap_params_load into a table filled with 42s: a refused file must leave them all, an
 * accepted one must give finite values only. */
static int load_params(const char *path, void *ctx) {
    dap_params *ps = &((params_ctx *)ctx)->ps;
    for (size_t i = 0; i < ps->total; i++) ps->data[i] = 42.0f;
    int rc = dap_params_load(ps, path, NULL, 0);
    size_t bad = 0;
    for (size_t i = 0; i < ps->total; i++)
        bad += rc == DAP_OK ? !isfinite(ps->data[i]) : ps->data[i] != 42.0f;
    CHECK_MSG(bad == 0, "%s: status %d and %zu %s values", path, rc, bad,
              rc == DAP_OK ? "non-finite" : "overwritten");
    return rc;
}

static void toy_table(dap_params *ps) {
    dap_params_init(ps);
    dap_params_add4(ps, "blocks.0.attn.qkv.weight", 6, 2, 0, 0);
    dap_params_add4(ps, "blocks.0.attn.qkv.bias", 6, 0, 0, 0);
    dap_params_add4(ps, "pos_embed", 1, 4, 2, 0);
    dap_params_alloc(ps, 0);
}

/* Each element of each tensor set to NaN, +Inf and -Inf in turn (F32 or F16 bit
 * patterns): every one must be refused with DAP_ERR_VALUE naming the tensor. */
static void nonfinite_mutants(fz_target *t, const dap_params *ps, const uint8_t *orig, size_t n, int f16) {
    static const uint32_t f32_bits[3] = {0x7fc00000u, 0x7f800000u, 0xff800000u};
    static const uint16_t f16_bits[3] = {0x7e00u, 0x7c00u, 0xfc00u};
    size_t data = 8 + (size_t)st_hlen(orig), es = f16 ? 2 : 4;
    uint8_t *b = dap_malloc(n);
    for (int k = 0; k < ps->n; k++)
        for (size_t j = 0; j < ps->p[k].numel; j++)
            for (int s = 0; s < 3; s++) {
                memcpy(b, orig, n);
                size_t at = data + (ps->p[k].offset + j) * es; /* tensors are stored in table order */
                if (f16)
                    memcpy(b + at, &f16_bits[s], 2);
                else
                    memcpy(b + at, &f32_bits[s], 4);
                int rc = fz_try(t, b, n, "non-finite at", at);
                CHECK_MSG(rc == DAP_ERR_VALUE && strstr(dap_last_error(), ps->p[k].key),
                          "%s[%zu] = special %d: status %d, %s", ps->p[k].key, j, s, rc, dap_last_error());
            }
    free(b);
}

DAP_TEST(fuzz_params) {
    params_ctx c;
    toy_table(&c.ps);
    dap_params src;
    toy_table(&src);
    for (size_t i = 0; i < src.total; i++) src.data[i] = (float)i * 0.25f - 3.0f;
    const char *meta[] = {"model", "toy", NULL};
    for (int f16 = 0; f16 < 2; f16++) {
        const char *p = dap_test_path(f16 ? "fz-params16.safetensors" : "fz-params.safetensors");
        CHECK(dap_params_save(&src, p, f16, meta) == DAP_OK);
        size_t n;
        uint8_t *orig = fz_read(p, &n);
        if (!orig) continue;
        fz_target t = {.label = f16 ? "params (F16)" : "params (F32)",
                       .path = dap_test_path("fz-params-mut"),
                       .load = load_params,
                       .ctx = &c};
        CHECK_MSG(load_params(p, &c) == DAP_OK, "valid file: %s", dap_last_error());
        CHECK(memcmp(c.ps.data, src.data, src.total * sizeof(float)) == 0); /* values exact in half too */
        size_t marks[] = {8, 8 + (size_t)st_hlen(orig)};
        int cuts = fz_truncations(&t, orig, n, marks, 2, n);
        fz_edits(&t, orig, n, (fz_span){0, n}, (fz_span){1, 8}, 150, 10 + (uint64_t)f16);
        int before = t.refused;
        nonfinite_mutants(&t, &c.ps, orig, n, f16);
        fz_report(&t);
        CHECK(t.refused - before == 3 * (int)src.total && t.accepted > 0 && t.refused > cuts);
        free(orig);
    }
    dap_params_free(&src);
    dap_params_free(&c.ps);
}

/* ---- safetensors: optimizer state ----------------------------------------------------- */
typedef struct {
    dap_params ps;
    dap_adamw o;
} adamw_ctx;

/* dap_adamw_load: an accepted state has a non-negative step, finite moments and a
 * non-negative second moment. */
static int load_adamw(const char *path, void *ctx) {
    adamw_ctx *c = ctx;
    int rc = dap_adamw_load(&c->o, &c->ps, path);
    if (rc == DAP_OK) {
        size_t bad = 0;
        for (size_t i = 0; i < c->o.n; i++)
            bad += !isfinite(c->o.m[i]) || !(c->o.v[i] >= 0) || isinf(c->o.v[i]);
        CHECK_MSG(c->o.step >= 0 && bad == 0, "%s: step %lld, %zu bad moments", path, (long long)c->o.step,
                  bad);
    }
    return rc;
}

/* The byte offset of a tensor's data in a safetensors file (the file must open). */
static size_t st_tensor_at(const char *path, const char *name) {
    dap_st *st;
    if (dap_st_open(&st, path) != DAP_OK) return 0;
    const dap_st_tensor *t = dap_st_find(st, name);
    size_t at = t ? (size_t)(st->data - st->file) + t->begin : 0;
    dap_st_close(st);
    return at;
}

DAP_TEST(fuzz_adamw_state) {
    adamw_ctx c;
    toy_table(&c.ps);
    dap_adamw_init(&c.o, &c.ps, 0.9, 0.999, 1e-8, 0.01);
    c.o.step = 5;
    for (size_t i = 0; i < c.o.n; i++) {
        c.o.m[i] = (float)i * 0.01f - 0.1f;
        c.o.v[i] = (float)i * 1e-4f;
    }
    const char *p = dap_test_path("fz-adamw.safetensors");
    CHECK(dap_adamw_save(&c.o, &c.ps, p) == DAP_OK);
    size_t n;
    uint8_t *orig = fz_read(p, &n);
    if (!orig) return;
    fz_target t = {.label = "adamw state", .path = dap_test_path("fz-adamw-mut"), .load = load_adamw, .ctx = &c};
    CHECK_MSG(load_adamw(p, &c) == DAP_OK && c.o.step == 5, "valid file: %s", dap_last_error());
    size_t marks[] = {8, 8 + (size_t)st_hlen(orig)};
    int cuts = fz_truncations(&t, orig, n, marks, 2, n);
    fz_edits(&t, orig, n, (fz_span){0, n}, (fz_span){1, 8}, 150, 20);
    /* crafted values: a negative step, NaN / Inf in exp_avg, a negative or NaN exp_avg_sq */
    struct {
        const char *tensor;
        size_t index;
        int64_t bits;
        int width;
    } lies[] = {{"step", 0, -1, 8},
                {"step", 0, INT64_MIN, 8},
                {"exp_avg.pos_embed", 3, 0x7fc00000, 4},
                {"exp_avg.blocks.0.attn.qkv.bias", 0, 0xff800000, 4},
                {"exp_avg_sq.pos_embed", 7, 0xbf800000, 4},
                {"exp_avg_sq.blocks.0.attn.qkv.weight", 11, 0x7fc00000, 4}};
    uint8_t *b = dap_malloc(n);
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        size_t at = st_tensor_at(p, lies[i].tensor);
        CHECK_MSG(at > 0, "no tensor %s", lies[i].tensor);
        if (!at) continue;
        memcpy(b, orig, n);
        memcpy(b + at + lies[i].index * (size_t)lies[i].width, &lies[i].bits, (size_t)lies[i].width);
        int rc = fz_try(&t, b, n, "crafted value", i);
        CHECK_MSG(rc == DAP_ERR_VALUE, "%s[%zu]: status %d, %s", lies[i].tensor, lies[i].index, rc,
                  dap_last_error());
    }
    fz_report(&t);
    CHECK(t.accepted > 0 && t.refused > cuts);
    free(b);
    free(orig);
    dap_adamw_free(&c.o);
    dap_params_free(&c.ps);
}

/* ---- safetensors: DiT checkpoints ----------------------------------------------------- */
static int load_dit(const char *path, void *ctx) {
    (void)ctx;
    dap_dit *m = NULL;
    int rc = dap_dit_load(&m, path, 0, 0);
    CHECK((rc == DAP_OK) == (m != NULL));
    dap_dit_destroy(m);
    return rc;
}

/* A copy of checkpoint `src` at `dst` whose metadata keeps `keys` (those present) with
 * `key` set to `value`; key NULL: no metadata at all. F16 tensors stay F16, others F32. */
static void copy_with_meta(const char *src, const char *dst, const char *const *keys, size_t nkeys, const char *key,
                           const char *value) {
    dap_st *st;
    if (dap_st_open(&st, src) != DAP_OK) {
        CHECK_MSG(0, "%s", dap_last_error());
        return;
    }
    dap_st_writer *w = dap_st_writer_create();
    for (size_t k = 0; key && k < nkeys; k++) {
        char *v = dap_st_meta_get(st, keys[k]);
        if (v) dap_st_writer_meta(w, keys[k], strcmp(keys[k], key) ? v : value);
        free(v);
    }
    for (int i = 0; i < st->n; i++) {
        const dap_st_tensor *t = &st->t[i];
        float *v = malloc(sizeof(float) * (t->numel + 1));
        CHECK(dap_st_read_f32(st, t->name, v, NULL, 0) == DAP_OK);
        dap_st_writer_add(w, t->name, t->dtype == DAP_DT_F16 ? DAP_DT_F16 : DAP_DT_F32, v, t->ndim, t->shape);
        free(v);
    }
    CHECK(dap_st_writer_save(w, dst) == DAP_OK);
    dap_st_writer_destroy(w);
    dap_st_close(st);
}

/* The DiT config keys (key NULL: no metadata, so the config is read off the shapes). */
static void dit_copy_meta(const char *src, const char *dst, const char *key, const char *value) {
    static const char *const keys[] = {"model",       "input_size", "in_channels",  "patch",
                                       "hidden",      "depth",      "heads",        "num_classes",
                                       "learn_sigma", "mlp_ratio",  "class_dropout"};
    copy_with_meta(src, dst, keys, sizeof keys / sizeof keys[0], key, value);
}

/* A tiny DiT (input 4, patch 2, depth 1) saved with its config as metadata. */
static void dit_valid_file(const char *path, int hidden, int f16) {
    dap_dit_config cfg = {.input_size = 4,
                          .in_channels = 1,
                          .patch = 2,
                          .hidden = hidden,
                          .depth = 1,
                          .heads = 2,
                          .num_classes = 2,
                          .learn_sigma = 0,
                          .mlp_ratio = 1.0f,
                          .class_dropout = 0.1f};
    dap_dit *m;
    CHECK(dap_dit_create(&m, &cfg, 0) == DAP_OK);
    dap_dit_init(m, 1);
    CHECK(dap_dit_save_ex(m, path, f16) == DAP_OK);
    dap_dit_destroy(m);
}

/* Loads checkpoint `p` with metadata `key` set to `value` (copied through `q`). */
static int dit_try_meta(fz_target *t, const char *p, const char *q, const char *key, const char *value,
                        size_t arg) {
    dit_copy_meta(p, q, key, value);
    uint8_t *b;
    size_t n;
    if (dap_read_file(q, &b, &n) != DAP_OK) return -1;
    int rc = fz_try(t, b, n, key, arg);
    free(b);
    return rc;
}

DAP_TEST(fuzz_dit_checkpoint) {
    const char *p = dap_test_path("fz-dit.safetensors");
    dit_valid_file(p, 8, 0);
    size_t n;
    uint8_t *orig = fz_read(p, &n);
    if (!orig) return;
    fz_target t = {.label = "dit checkpoint", .path = dap_test_path("fz-dit-mut.safetensors"), .load = load_dit};
    CHECK_MSG(load_dit(p, NULL) == DAP_OK, "valid file: %s", dap_last_error());
    size_t hend = 8 + (size_t)st_hlen(orig), marks[] = {8, hend};
    int cuts = fz_truncations(&t, orig, n, marks, 2, n);
    fz_edits(&t, orig, n, (fz_span){0, hend}, (fz_span){1, 8}, 150, 30); /* the header holds the config */
    /* each size field set to a value the tensors contradict, or absurd: refused, never a
     * huge allocation, an overflow or an assertion */
    static const char *const ints[] = {"input_size", "in_channels", "patch",       "hidden",
                                       "depth",      "heads",       "num_classes", "learn_sigma"};
    static const char *const values[] = {
        "0",   "-1",  "3",   "9999998", "9999999", "10000001", "1e300", "4294967297",
        "nan", "inf", "4.5", "",        "0x10",    " 5",       "5 ",    "99999999999999999999"};
    const int nval = (int)(sizeof values / sizeof values[0]);
    const char *q = dap_test_path("fz-dit-meta.safetensors");
    int crafted = 0;
    dap_st *st;
    CHECK(dap_st_open(&st, p) == DAP_OK);
    for (int k = 0; st && k < 8; k++) {
        char *was = dap_st_meta_get(st, ints[k]);
        for (int v = 0; v < nval; v++) {
            if (was && !strcmp(was, values[v])) continue; /* not an edit */
            crafted++;
            if (dit_try_meta(&t, p, q, ints[k], values[v], (size_t)v) == DAP_OK)
                fz_wrongly_accepted(&t, ints[k], (size_t)v);
        }
        free(was);
    }
    dap_st_close(st);
    /* the float fields: some values leave the shapes as they are, so only a clean outcome */
    for (int v = 0; v < nval; v++) {
        dit_try_meta(&t, p, q, "mlp_ratio", values[v], (size_t)v);
        dit_try_meta(&t, p, q, "class_dropout", values[v], (size_t)v);
    }
    /* no metadata: the config is read off the shapes (heads only for a known hidden size,
     * hence 64 here; F16 keeps the file small); edits of those shapes */
    const char *bp = dap_test_path("fz-dit64.safetensors");
    dit_valid_file(bp, 64, 1);
    dit_copy_meta(bp, q, NULL, NULL);
    uint8_t *bare = fz_read(q, &n);
    if (bare) {
        CHECK_MSG(load_dit(q, NULL) == DAP_OK, "no metadata: %s", dap_last_error());
        fz_edits(&t, bare, n, (fz_span){0, 8 + (size_t)st_hlen(bare)}, (fz_span){1, 8}, 40, 31);
        free(bare);
    }
    fz_report(&t);
    CHECK(crafted >= 8 * nval - 8 && t.accepted > 0 && t.refused > cuts + crafted);
    free(orig);
}

/* ---- safetensors: classifier checkpoints ----------------------------------------------- */
static int load_classifier(const char *path, void *ctx) {
    (void)ctx;
    dap_classifier m;
    int rc = dap_classifier_load(&m, path);
    if (rc != DAP_OK) return rc;
    int bad = 0;
    for (int k = 0; k < 3; k++) bad += !isfinite(m.mean[k]) || !(m.std[k] > 0) || isinf(m.std[k]);
    CHECK_MSG(bad == 0, "%s: accepted with %d unusable normalisation constants", path, bad);
    dap_classifier_free(&m);
    return rc;
}

/* The classifier checkpoint's metadata keys. */
static void classifier_copy_meta(const char *src, const char *dst, const char *key, const char *value) {
    static const char *const keys[] = {"dap.arch", "dap.input", "dap.classes", "dap.norm_mean",
                                       "dap.norm_std"};
    copy_with_meta(src, dst, keys, sizeof keys / sizeof keys[0], key, value);
}

DAP_TEST(fuzz_classifier_checkpoint) {
    /* ConvNet-1 on 1x8x8 inputs, 2 classes: about 5 K weights */
    dap_classifier m;
    CHECK(dap_classifier_create(&m, "convnet1", 1, 8, 8, 2) == DAP_OK);
    dap_classifier_init_weights(&m, 3);
    const char *p = dap_test_path("fz-cls.safetensors");
    CHECK(dap_classifier_save(&m, p, NULL) == DAP_OK);
    dap_classifier_free(&m);
    size_t n;
    uint8_t *orig = fz_read(p, &n);
    if (!orig) return;
    fz_target t = {.label = "classifier", .path = dap_test_path("fz-cls-mut.safetensors"), .load = load_classifier};
    CHECK_MSG(load_classifier(p, NULL) == DAP_OK, "valid file: %s", dap_last_error());
    size_t hend = 8 + (size_t)st_hlen(orig), marks[] = {8, hend};
    int cuts = fz_truncations(&t, orig, n, marks, 2, n);
    fz_edits(&t, orig, n, (fz_span){0, hend}, (fz_span){1, 8}, 150, 90);
    /* metadata the weights contradict, or that does not parse, or unusable normalisation,
     * sizes that would make the model huge (its table is held against the file before any
     * weight is allocated), and three valid edits as controls */
    static const struct {
        const char *key, *value;
        int ok;
    } cases[] = {{"dap.arch", "resnet18", 0},       {"dap.arch", "convnet2", 0},
                 {"dap.arch", "convnet1-xx", 0},    {"dap.arch", "", 0},
                 {"dap.input", "3,8,8", 0},         {"dap.input", "1,16,16", 0},
                 {"dap.input", "1,8", 0},           {"dap.input", "1,-8,8", 0},
                 {"dap.input", "a,b,c", 0},         {"dap.classes", "3", 0},
                 {"dap.classes", "1", 0},           {"dap.classes", "x", 0},
                 {"dap.norm_mean", "0.5,0.5", 0},   {"dap.norm_mean", "nan,0.5,0.5", 0},
                 {"dap.norm_std", "0,0,0", 0},      {"dap.norm_std", "-0.5,1,1", 0},
                 {"dap.norm_std", "inf,1,1", 0},    {"dap.norm_std", "nan,1,1", 0},
                 {"dap.input", "1,100000,100000", 0}, {"dap.input", "1,2048,2048", 0},
                 {"dap.input", "1,2147483647,2147483647", 0}, {"dap.classes", "2000000000", 0},
                 {"dap.classes", "1000000", 0},
                 {"dap.arch", "convnet1-in", 1},    {"dap.norm_mean", "0.1,0.2,0.3", 1},
                 {"dap.norm_std", "2,0.25,1e-3", 1}};
    const char *q = dap_test_path("fz-cls-meta.safetensors");
    int controls = 0, accepted_before = t.accepted;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        classifier_copy_meta(p, q, cases[i].key, cases[i].value);
        uint8_t *b;
        size_t nb;
        if (dap_read_file(q, &b, &nb) != DAP_OK) continue;
        int rc = fz_try(&t, b, nb, cases[i].key, i);
        controls += cases[i].ok;
        if (rc == DAP_OK && !cases[i].ok) fz_wrongly_accepted(&t, cases[i].key, i);
        CHECK_MSG(rc == DAP_OK || !cases[i].ok, "%s = %s: %s", cases[i].key, cases[i].value,
                  dap_last_error());
        free(b);
    }
    fz_report(&t);
    CHECK(t.accepted - accepted_before == controls && t.refused > cuts);
    free(orig);
}

/* ---- IDX ------------------------------------------------------------------------------ */
static int load_idx(const char *path, void *ctx) {
    (void)ctx;
    dap_idx x;
    int rc = dap_idx_read(path, &x);
    if (rc != DAP_OK) {
        CHECK(x.data == NULL && x.ndim == 0);
        return rc;
    }
    size_t n = 1;
    for (int i = 0; i < x.ndim; i++) n *= (size_t)x.dims[i];
    volatile uint8_t sum = 0; /* touch every byte the dims promise: ASan checks the size */
    for (size_t i = 0; i < n; i++) sum += x.data[i];
    (void)sum;
    dap_idx_free(&x);
    return rc;
}

/* An IDX file of dims (3, 4, 5) with patterned data, raw or gzipped; returns its bytes. */
static uint8_t *idx_valid_file(const char *path, int gz, size_t *n) {
    uint8_t b[16 + 60] = {0, 0, 0x08, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
    for (int i = 0; i < 60; i++) b[16 + i] = (uint8_t)(i * 7 + 3);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        CHECK(f != NULL && gzwrite(f, b, sizeof b) == (int)sizeof b);
        gzclose(f);
    } else {
        fz_write(path, b, sizeof b);
    }
    return fz_read(path, n);
}

DAP_TEST(fuzz_idx) {
    for (int gz = 0; gz < 2; gz++) {
        size_t n;
        const char *p = dap_test_path(gz ? "fz.idx.gz" : "fz.idx");
        uint8_t *orig = idx_valid_file(p, gz, &n);
        if (!orig) continue;
        fz_target t = {.label = gz ? "idx (gzip)" : "idx (raw)",
                       .path = dap_test_path(gz ? "fz-mut.idx.gz" : "fz-mut.idx"),
                       .load = load_idx};
        CHECK_MSG(load_idx(p, NULL) == DAP_OK, "valid file: %s", dap_last_error());
        size_t marks[] = {4, 16, 10, n - 8}; /* raw: magic, dims; gzip: its header and trailer */
        int cuts = fz_truncations(&t, orig, n, marks, 4, n);
        CHECK(t.refused == cuts);
        /* raw: a changed header byte breaks magic, dtype, ndim or the size; gzip: a
         * changed CRC-32 or length in the trailer no longer matches the data */
        fz_span strict = gz ? (fz_span){n - 8, n} : (fz_span){0, 16};
        fz_edits(&t, orig, n, (fz_span){0, n}, strict, 150, 40 + (uint64_t)gz);
        fz_edits(&t, orig, n, strict, strict, 50, 42 + (uint64_t)gz);
        fz_report(&t);
        CHECK(t.accepted > 0 && t.refused > cuts + 50);
        free(orig);
    }
}

/* The IDX dataset path: an images file beside a labels file, either one mutated. */
typedef struct {
    const char *images;
} idx_pair_ctx;

static int load_idx_dataset(const char *path, void *ctx) {
    (void)path;
    dap_dataset ds;
    int rc = dap_dataset_load(&ds, ((idx_pair_ctx *)ctx)->images, NULL, 0, 0);
    if (rc != DAP_OK) return rc;
    int bad = 0;
    for (int i = 0; i < ds.n; i++) bad += ds.y[i] < 0 || ds.y[i] >= ds.num_classes;
    CHECK_MSG(bad == 0 && ds.n > 0, "%d labels out of range", bad);
    dap_dataset_free(&ds);
    return rc;
}

DAP_TEST(fuzz_idx_dataset) {
    int saved = dap_get_threads(); /* one thread: see fuzz_image_folder */
    dap_set_threads(1);
    /* 3 images of 4x5, labels 0 1 2 */
    uint8_t img[16 + 60] = {0, 0, 0x08, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
    uint8_t lab[8 + 3] = {0, 0, 0x08, 1, 0, 0, 0, 3, 0, 1, 2};
    for (int i = 0; i < 60; i++) img[16 + i] = (uint8_t)(i * 11);
    mkdir(dap_test_path("idxds"), 0755);
    const char *ip = dap_test_path("idxds/fz-images-idx3-ubyte"), *lp = dap_test_path("idxds/fz-labels-idx1-ubyte");
    idx_pair_ctx c = {ip};
    fz_target ti = {.label = "idx images", .path = ip, .load = load_idx_dataset, .ctx = &c};
    fz_target tl = {.label = "idx labels", .path = lp, .load = load_idx_dataset, .ctx = &c};
    fz_write(ip, img, sizeof img);
    fz_write(lp, lab, sizeof lab);
    CHECK_MSG(load_idx_dataset(NULL, &c) == DAP_OK, "valid pair: %s", dap_last_error());
    int cuts = fz_truncations(&tl, lab, sizeof lab, NULL, 0, sizeof lab);
    /* the label header must agree with the images; any label value is a class */
    fz_edits(&tl, lab, sizeof lab, (fz_span){0, sizeof lab}, (fz_span){0, 8}, 80, 50);
    fz_write(lp, lab, sizeof lab);
    cuts += fz_truncations(&ti, img, sizeof img, NULL, 0, sizeof img);
    fz_edits(&ti, img, sizeof img, (fz_span){0, 16}, (fz_span){0, 16}, 80, 51);
    fz_report(&ti);
    fz_report(&tl);
    CHECK(tl.accepted > 0 && ti.refused + tl.refused > cuts);
    dap_set_threads(saved);
}

/* ---- PNG and JPEG ----------------------------------------------------------------------- */
static int load_image(const char *path, void *ctx) {
    (void)ctx;
    dap_image8 im;
    int rc = dap_image_read(path, &im);
    if (rc != DAP_OK) {
        CHECK(im.px == NULL);
        return rc;
    }
    CHECK(im.h > 0 && im.w > 0 && (im.c == 1 || im.c == 3));
    volatile uint8_t sum = 0; /* touch every pixel: ASan checks the buffer's size */
    for (size_t i = 0; i < (size_t)im.h * im.w * im.c; i++) sum += im.px[i];
    (void)sum;
    dap_image8_free(&im);
    return rc;
}

/* Noisy pixels, so the compressed data is not trivially short. */
static uint8_t *noise_pixels(int h, int w, int c, uint64_t seed) {
    fz_rng r = {seed};
    uint8_t *px = dap_malloc((size_t)h * w * c);
    for (int i = 0; i < h * w * c; i++) px[i] = (uint8_t)(fz_next(&r) >> 56);
    return px;
}

/* Where a PNG's chunks start, and the spans of its IHDR and IDAT chunks (CRCs included). */
typedef struct {
    size_t starts[16];
    int n;
    fz_span ihdr, idat;
} png_layout;

static png_layout png_chunks(const uint8_t *b, size_t n) {
    png_layout L = {.n = 0};
    for (size_t at = 8; at + 12 <= n && L.n < 16; L.n++) {
        size_t len = (size_t)b[at] << 24 | (size_t)b[at + 1] << 16 | (size_t)b[at + 2] << 8 | b[at + 3];
        L.starts[L.n] = at;
        if (!memcmp(b + at + 4, "IHDR", 4)) L.ihdr = (fz_span){at, at + 12 + len};
        if (!memcmp(b + at + 4, "IDAT", 4)) L.idat = (fz_span){L.idat.lo ? L.idat.lo : at, at + 12 + len};
        at += 12 + len;
    }
    return L;
}

DAP_TEST(fuzz_png) {
    for (int c = 1; c <= 3; c += 2) {
        uint8_t *px = noise_pixels(9, 7, c, 60 + (uint64_t)c);
        const char *p = dap_test_path(c == 3 ? "fz-rgb.png" : "fz-gray.png");
        CHECK(dap_png_write(p, px, 9, 7, c) == DAP_OK);
        free(px);
        size_t n;
        uint8_t *orig = fz_read(p, &n);
        if (!orig) continue;
        png_layout L = png_chunks(orig, n);
        CHECK(L.ihdr.lo == 8 && L.idat.lo > L.ihdr.hi && L.idat.hi < n);
        fz_target t = {
            .label = c == 3 ? "png (rgb)" : "png (gray)", .path = dap_test_path("fz-mut.png"), .load = load_image};
        CHECK_MSG(load_image(p, NULL) == DAP_OK, "valid file: %s", dap_last_error());
        /* up to the end of the image data every byte is needed; what follows is IEND */
        int cuts = fz_truncations(&t, orig, n, L.starts, L.n, L.idat.hi);
        /* the signature and the critical chunks are covered by checks (signature, chunk
         * CRCs, zlib's Adler-32): a changed byte there must be refused. A broken
         * ancillary chunk (sRGB) is dropped with a warning by libpng, so edits across
         * the whole file need only a clean outcome. */
        fz_edits(&t, orig, n, (fz_span){0, n}, (fz_span){0, 0}, 100, 62 + (uint64_t)c);
        fz_edits(&t, orig, n, (fz_span){0, L.ihdr.hi}, (fz_span){0, L.ihdr.hi}, 50, 64 + (uint64_t)c);
        fz_edits(&t, orig, n, L.idat, L.idat, 50, 66 + (uint64_t)c);
        fz_report(&t);
        CHECK(t.accepted > 0 && t.refused >= cuts + 100);
        free(orig);
    }
}

DAP_TEST(fuzz_jpeg) {
    for (int kind = 0; kind < 3; kind++) { /* baseline RGB, progressive RGB, baseline gray */
        int c = kind == 2 ? 1 : 3;
        uint8_t *px = noise_pixels(8, 9, c, 70 + (uint64_t)kind);
        const char *p = dap_test_path("fz.jpg");
        dap_test_write_jpeg(p, px, 8, 9, c, 90, kind == 1);
        free(px);
        size_t n;
        uint8_t *orig = fz_read(p, &n);
        if (!orig) continue;
        static const char *const labels[3] = {"jpeg (baseline)", "jpeg (progressive)", "jpeg (gray)"};
        fz_target t = {.label = labels[kind], .path = dap_test_path("fz-mut.jpg"), .load = load_image};
        CHECK_MSG(load_image(p, NULL) == DAP_OK, "valid file: %s", dap_last_error());
        /* a cut file lacks scan data (or at least its end marker): refused, not decoded
         * with the missing rows filled in gray */
        int cuts = fz_truncations(&t, orig, n, NULL, 0, n);
        CHECK(t.refused == cuts);
        /* JPEG has no checksum: edited scan data may decode to other pixels, so only a
         * clean outcome is required */
        fz_edits(&t, orig, n, (fz_span){0, n}, (fz_span){0, 3}, 150, 72 + (uint64_t)kind);
        fz_report(&t);
        CHECK(t.accepted > 0 && t.refused > cuts);
        free(orig);
    }
}

/* ---- image folders ------------------------------------------------------------------------ */
/* A folder of two classes; class b's one image is the mutant. The folder must be refused
 * exactly when that image alone is, naming the file. */
typedef struct {
    const char *root;
} folder_ctx;

static int load_folder(const char *path, void *ctx) {
    dap_image8 im;
    int alone = dap_image_read(path, &im);
    dap_image8_free(&im);
    dap_dataset ds;
    dap_clear_error();
    int rc = dap_dataset_load(&ds, ((folder_ctx *)ctx)->root, "train", 8, 3);
    CHECK_MSG((rc == DAP_OK) == (alone == DAP_OK), "folder %d vs image %d: %s", rc, alone, dap_last_error());
    if (rc == DAP_OK) {
        CHECK(ds.n == 2 && ds.num_classes == 2 && ds.y[0] == 0 && ds.y[1] == 1);
        dap_dataset_free(&ds);
    } else {
        CHECK_MSG(strstr(dap_last_error(), "x."), "message does not name the file: %s", dap_last_error());
    }
    return rc;
}

DAP_TEST(fuzz_image_folder) {
    /* the folder decodes in parallel: for two tiny images the threads only wait on each
     * other, slowly on a busy machine */
    int saved = dap_get_threads();
    dap_set_threads(1);
    const char *root = dap_test_path("fzfolder");
    mkdir(root, 0755);
    mkdir(dap_test_path("fzfolder/a"), 0755);
    mkdir(dap_test_path("fzfolder/b"), 0755);
    uint8_t *px = noise_pixels(10, 12, 3, 80);
    CHECK(dap_png_write(dap_test_path("fzfolder/a/a.png"), px, 10, 12, 3) == DAP_OK);
    folder_ctx c = {root};
    for (int jpg = 0; jpg < 2; jpg++) {
        const char *p = dap_test_path(jpg ? "fzfolder/b/x.jpg" : "fzfolder/b/x.png");
        if (jpg)
            dap_test_write_jpeg(p, px, 10, 12, 3, 90, 0);
        else
            CHECK(dap_png_write(p, px, 10, 12, 3) == DAP_OK);
        size_t n;
        uint8_t *orig = fz_read(p, &n);
        if (!orig) continue;
        fz_target t = {
            .label = jpg ? "folder (jpeg)" : "folder (png)", .path = p, .load = load_folder, .ctx = &c};
        CHECK_MSG(load_folder(p, &c) == DAP_OK, "valid folder: %s", dap_last_error());
        /* every 7th cut and 60 edits: each load decodes both images */
        for (size_t len = 0; len < n; len += 7) fz_try(&t, orig, len, "truncated to", len);
        fz_edits(&t, orig, n, (fz_span){0, n}, (fz_span){0, 0}, 60, 82 + (uint64_t)jpg);
        fz_report(&t);
        CHECK(t.accepted > 0 && t.refused > 0);
        remove(p);
        free(orig);
    }
    free(px);
    dap_set_threads(saved);
}
