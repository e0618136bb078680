/*
 * safetensors.c: the safetensors format (8-byte little-endian header length, a JSON
 * header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the
 * data). The reader is strict: its own small JSON parser rejects anything malformed
 * (and duplicate keys), and every size, shape and offset is checked against the bytes
 * present before any tensor is touched. The writer pads the header to 8 bytes, keeps
 * tensors in insertion order and saves atomically.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"

#define ST_MAX_NUMEL ((int64_t)1 << 40)
#define JSON_MAX_DEPTH 16

/* ---- dtypes and half floats ------------------------------------------------ */
static const char *const dtype_names[] = {"F32", "F16", "BF16", "I64", "I32", "U8"};
static const size_t dtype_sizes[] = {4, 2, 2, 8, 4, 1};
#define NDTYPES ((int)(sizeof dtype_names / sizeof dtype_names[0]))

const char *dap_dtype_name(int dt) { return dt >= 0 && dt < NDTYPES ? dtype_names[dt] : "?"; }
size_t dap_dtype_size(int dt) { return dt >= 0 && dt < NDTYPES ? dtype_sizes[dt] : 0; }

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float dap_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        float v = (float)man * (1.0f / 16777216.0f); /* subnormal: man * 2^-24 */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t dap_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t exp = (u >> 23) & 0xff, man = u & 0x7fffff;
    if (exp == 0xff) return sign | 0x7c00 | (man ? 0x200 | (man >> 13) : 0);
    int e = (int)exp - 127 + 15;
    if (e >= 0x1f) return sign | 0x7c00; /* overflow -> inf */
    if (e <= 0) {                        /* subnormal or zero, round to nearest even */
        if (e < -10) return sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into inf: correct */
    return sign | (uint16_t)half;
}

float dap_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* ---- a small strict JSON parser --------------------------------------------- */
typedef enum { J_OBJ, J_ARR, J_STR, J_INT } jtype;
typedef struct jval {
    jtype type;
    char *str;         /* J_STR */
    int64_t num;       /* J_INT */
    int n;             /* J_OBJ / J_ARR children */
    char **keys;       /* J_OBJ */
    struct jval *kid;  /* n children */
    size_t start, end; /* byte span in the source text */
} jval;

typedef struct {
    const char *s;
    size_t n, i;
    char err[160];
} jparser;

static void jval_free(jval *v) {
    free(v->str);
    for (int i = 0; i < v->n; i++) {
        if (v->keys) free(v->keys[i]);
        jval_free(&v->kid[i]);
    }
    free(v->keys);
    free(v->kid);
    memset(v, 0, sizeof *v);
}

static int jfail(jparser *p, const char *what) {
    if (!p->err[0]) snprintf(p->err, sizeof p->err, "%s at byte %zu", what, p->i);
    return 0;
}

static void jskip(jparser *p) {
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int hex4(jparser *p, unsigned *out) {
    if (p->n - p->i < 4) return jfail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return jfail(p, "bad \\u escape");
    }
    *out = v;
    return 1;
}

/* Parses a string at p->i (which is at '"'); returns a malloc'd UTF-8 string. */
static int jstring(jparser *p, char **out) {
    p->i++; /* opening quote */
    size_t cap = 16, len = 0;
    char *b = dap_malloc(cap);
    for (;;) {
        if (p->i >= p->n) {
            free(b);
            return jfail(p, "unterminated string");
        }
        unsigned char c = (unsigned char)p->s[p->i++];
        if (c == '"') break;
        if (c < 0x20) {
            free(b);
            return jfail(p, "control character in string");
        }
        char enc[4];
        int ne = 1;
        enc[0] = (char)c;
        if (c == '\\') {
            if (p->i >= p->n) {
                free(b);
                return jfail(p, "unterminated string");
            }
            char e = p->s[p->i++];
            unsigned cp;
            switch (e) {
            case '"': enc[0] = '"'; break;
            case '\\': enc[0] = '\\'; break;
            case '/': enc[0] = '/'; break;
            case 'b': enc[0] = '\b'; break;
            case 'f': enc[0] = '\f'; break;
            case 'n': enc[0] = '\n'; break;
            case 'r': enc[0] = '\r'; break;
            case 't': enc[0] = '\t'; break;
            case 'u':
                if (!hex4(p, &cp)) {
                    free(b);
                    return 0;
                }
                if (cp >= 0xd800 && cp < 0xdc00) { /* surrogate pair */
                    unsigned lo;
                    if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                        free(b);
                        return jfail(p, "unpaired surrogate");
                    }
                    p->i += 2;
                    if (!hex4(p, &lo) || lo < 0xdc00 || lo >= 0xe000) {
                        free(b);
                        return jfail(p, "unpaired surrogate");
                    }
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else if (cp >= 0xdc00 && cp < 0xe000) {
                    free(b);
                    return jfail(p, "unpaired surrogate");
                }
                if (cp == 0) {
                    free(b);
                    return jfail(p, "\\u0000 in string");
                }
                if (cp < 0x80) {
                    enc[0] = (char)cp;
                } else if (cp < 0x800) {
                    enc[0] = (char)(0xc0 | (cp >> 6));
                    enc[1] = (char)(0x80 | (cp & 0x3f));
                    ne = 2;
                } else if (cp < 0x10000) {
                    enc[0] = (char)(0xe0 | (cp >> 12));
                    enc[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    enc[2] = (char)(0x80 | (cp & 0x3f));
                    ne = 3;
                } else {
                    enc[0] = (char)(0xf0 | (cp >> 18));
                    enc[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
                    enc[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    enc[3] = (char)(0x80 | (cp & 0x3f));
                    ne = 4;
                }
                break;
            default: free(b); return jfail(p, "bad escape in string");
            }
        }
        if (len + (size_t)ne + 1 > cap) {
            cap *= 2;
            b = dap_realloc(b, cap);
        }
        memcpy(b + len, enc, (size_t)ne);
        len += (size_t)ne;
    }
    b[len] = 0;
    *out = b;
    return 1;
}

static int jint(jparser *p, int64_t *out) {
    int neg = 0;
    if (p->s[p->i] == '-') {
        neg = 1;
        p->i++;
    }
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return jfail(p, "bad number");
    if (p->s[p->i] == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
        return jfail(p, "leading zero in number");
    uint64_t v = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned d = (unsigned)(p->s[p->i++] - '0');
        if (v > (UINT64_MAX - d) / 10 || v * 10 + d > (uint64_t)INT64_MAX + (uint64_t)neg)
            return jfail(p, "integer out of range");
        v = v * 10 + d;
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return jfail(p, "non-integer number");
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

static int jvalue(jparser *p, jval *v, int depth) {
    memset(v, 0, sizeof *v);
    if (depth > JSON_MAX_DEPTH) return jfail(p, "nesting too deep");
    jskip(p);
    if (p->i >= p->n) return jfail(p, "unexpected end of JSON");
    v->start = p->i;
    char c = p->s[p->i];
    if (c == '"') {
        v->type = J_STR;
        if (!jstring(p, &v->str)) return 0;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = J_INT;
        if (!jint(p, &v->num)) return 0;
    } else if (c == '{' || c == '[') {
        int obj = c == '{';
        char close = obj ? '}' : ']';
        v->type = obj ? J_OBJ : J_ARR;
        p->i++;
        jskip(p);
        if (p->i < p->n && p->s[p->i] == close) {
            p->i++;
        } else {
            int cap = 0;
            for (;;) {
                if (v->n == cap) {
                    cap = cap ? cap * 2 : 4;
                    v->kid = dap_realloc(v->kid, sizeof(jval) * (size_t)cap);
                    if (obj) v->keys = dap_realloc(v->keys, sizeof(char *) * (size_t)cap);
                }
                if (obj) {
                    jskip(p);
                    if (p->i >= p->n || p->s[p->i] != '"') return jfail(p, "expected a string key");
                    char *key;
                    if (!jstring(p, &key)) return 0;
                    for (int k = 0; k < v->n; k++)
                        if (strcmp(v->keys[k], key) == 0) {
                            snprintf(p->err, sizeof p->err, "duplicate key \"%.80s\"", key);
                            free(key);
                            return 0;
                        }
                    jskip(p);
                    if (p->i >= p->n || p->s[p->i] != ':') {
                        free(key);
                        return jfail(p, "expected ':'");
                    }
                    p->i++;
                    v->keys[v->n] = key;
                }
                /* count the child before parsing so jval_free releases it on failure */
                int ok = jvalue(p, &v->kid[v->n], depth + 1);
                v->n++;
                if (!ok) return 0;
                jskip(p);
                if (p->i >= p->n) return jfail(p, "unexpected end of JSON");
                if (p->s[p->i] == ',') {
                    p->i++;
                    continue;
                }
                if (p->s[p->i] == close) {
                    p->i++;
                    break;
                }
                return jfail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            }
        }
    } else {
        return jfail(p, "unexpected character (only objects, arrays, strings and integers allowed)");
    }
    v->end = p->i;
    return 1;
}

/* Parses a whole document; trailing whitespace only. */
static int jparse(const char *s, size_t n, jval *root, char *err, size_t errn) {
    jparser p = {.s = s, .n = n, .i = 0, .err = ""};
    int ok = jvalue(&p, root, 0);
    if (ok) {
        jskip(&p);
        if (p.i != n) ok = jfail(&p, "trailing characters after JSON");
    }
    if (!ok) {
        jval_free(root);
        snprintf(err, errn, "%s", p.err);
    }
    return ok;
}

static const jval *jget(const jval *obj, const char *key) {
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->kid[i];
    return NULL;
}

/* ---- reader ----------------------------------------------------------------- */
void dap_st_close(dap_st *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) free(st->t[i].name);
    free(st->t);
    free(st->metadata_json);
    free(st->file);
    free(st->path);
    free(st);
}

static int cmp_begin(const void *a, const void *b) {
    const dap_st_tensor *x = *(const dap_st_tensor *const *)a, *y = *(const dap_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* Validates one tensor entry of the header into t. */
static int parse_tensor(const char *path, const char *name, const jval *v, size_t data_size,
                        dap_st_tensor *t) {
    if (v->type != J_OBJ)
        return dap_error(DAP_ERR_FORMAT, "%s: tensor '%s': header entry is not an object", path, name);
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], "dtype") && strcmp(v->keys[i], "shape") && strcmp(v->keys[i], "data_offsets"))
            return dap_error(DAP_ERR_FORMAT, "%s: tensor '%s': unknown field \"%s\"", path, name, v->keys[i]);
    const jval *dt = jget(v, "dtype"), *sh = jget(v, "shape"), *off = jget(v, "data_offsets");
    if (!dt || !sh || !off)
        return dap_error(DAP_ERR_FORMAT, "%s: tensor '%s': missing %s", path, name,
                         !dt   ? "dtype"
                         : !sh ? "shape"
                               : "data_offsets");
    if (dt->type != J_STR)
        return dap_error(DAP_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", path, name);
    t->dtype = -1;
    for (int k = 0; k < NDTYPES; k++)
        if (strcmp(dt->str, dtype_names[k]) == 0) t->dtype = k;
    if (t->dtype < 0)
        return dap_error(DAP_ERR_FORMAT, "%s: tensor '%s': dtype %s not supported (F32 F16 BF16 I64 I32 U8)",
                         path, name, dt->str);
    if (sh->type != J_ARR || sh->n > DAP_ST_MAX_DIMS)
        return dap_error(DAP_ERR_FORMAT, "%s: tensor '%s': shape must be an array of at most %d integers",
                         path, name, DAP_ST_MAX_DIMS);
    t->ndim = sh->n;
    int64_t numel = 1;
    for (int k = 0; k < sh->n; k++) {
        const jval *d = &sh->kid[k];
        if (d->type != J_INT || d->num < 0)
            return dap_error(DAP_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer", path,
                             name, k);
        t->shape[k] = d->num;
        if (d->num != 0 && numel > ST_MAX_NUMEL / d->num)
            return dap_error(DAP_ERR_FORMAT, "%s: tensor '%s': shape has more than 2^40 elements", path,
                             name);
        numel *= d->num;
    }
    t->numel = (size_t)numel;
    if (off->type != J_ARR || off->n != 2 || off->kid[0].type != J_INT || off->kid[1].type != J_INT)
        return dap_error(DAP_ERR_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end]", path, name);
    int64_t b = off->kid[0].num, e = off->kid[1].num;
    if (b < 0 || e < b)
        return dap_error(DAP_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%lld, %lld] are not 0 <= begin <= end", path, name,
                         (long long)b, (long long)e);
    if ((uint64_t)e > data_size)
        return dap_error(DAP_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%lld, %lld] outside the data section (%zu bytes)",
                         path, name, (long long)b, (long long)e, data_size);
    t->begin = (size_t)b;
    t->end = (size_t)e;
    size_t want = t->numel * dtype_sizes[t->dtype]; /* <= 2^43: no overflow */
    if (t->end - t->begin != want)
        return dap_error(DAP_ERR_FORMAT, "%s: tensor '%s': %s shape needs %zu bytes, data_offsets give %zu",
                         path, name, dtype_names[t->dtype], want, t->end - t->begin);
    return DAP_OK;
}

int dap_st_open(dap_st **out, const char *path) {
    *out = NULL;
    dap_st *st = dap_calloc(1, sizeof *st);
    st->path = dap_strdup(path);
    int rc = dap_read_file(path, &st->file, &st->file_size);
    if (rc != DAP_OK) {
        dap_st_close(st);
        return rc;
    }
    jval root = {0};
    if (st->file_size < 8) {
        rc = dap_error(DAP_ERR_FORMAT, "%s: truncated safetensors file (%zu bytes, need at least 8)", path,
                       st->file_size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | st->file[k];
    if (hlen > st->file_size - 8 || hlen < 2) {
        rc = dap_error(DAP_ERR_FORMAT,
                       "%s: header length %llu does not fit the file (%zu bytes after the length)", path,
                       (unsigned long long)hlen, st->file_size - 8);
        goto fail;
    }
    const char *text = (const char *)st->file + 8;
    st->data = st->file + 8 + hlen;
    st->data_size = st->file_size - 8 - (size_t)hlen;
    char err[200];
    if (!jparse(text, (size_t)hlen, &root, err, sizeof err)) {
        rc = dap_error(DAP_ERR_FORMAT, "%s: bad JSON header: %s", path, err);
        goto fail;
    }
    if (root.type != J_OBJ) {
        rc = dap_error(DAP_ERR_FORMAT, "%s: JSON header is not an object", path);
        goto fail;
    }
    st->t = dap_calloc((size_t)root.n + 1, sizeof(dap_st_tensor));
    for (int i = 0; i < root.n; i++) {
        const jval *v = &root.kid[i];
        if (strcmp(root.keys[i], "__metadata__") == 0) {
            if (v->type != J_OBJ) {
                rc = dap_error(DAP_ERR_FORMAT, "%s: __metadata__ is not an object", path);
                goto fail;
            }
            for (int k = 0; k < v->n; k++)
                if (v->kid[k].type != J_STR) {
                    rc = dap_error(DAP_ERR_FORMAT, "%s: __metadata__ value of \"%s\" is not a string", path,
                                   v->keys[k]);
                    goto fail;
                }
            size_t len = v->end - v->start;
            st->metadata_json = dap_malloc(len + 1);
            memcpy(st->metadata_json, text + v->start, len);
            st->metadata_json[len] = 0;
            continue;
        }
        dap_st_tensor *t = &st->t[st->n];
        rc = parse_tensor(path, root.keys[i], v, st->data_size, t);
        if (rc != DAP_OK) goto fail;
        t->name = dap_strdup(root.keys[i]);
        st->n++;
    }
    /* no two tensors may share bytes, and together they fill the data section (as the
     * reference implementation requires): a gap or trailing bytes mean wrong offsets or a
     * wrong header length, e.g. one cut into the header's space padding, which would
     * shift every tensor's bytes */
    {
        dap_st_tensor **by = dap_malloc(sizeof(*by) * ((size_t)st->n + 1));
        for (int i = 0; i < st->n; i++) by[i] = &st->t[i];
        qsort(by, (size_t)st->n, sizeof *by, cmp_begin);
        const dap_st_tensor *last = NULL; /* the non-empty tensor reaching furthest */
        for (int i = 0; i < st->n && rc == DAP_OK; i++) {
            const dap_st_tensor *t = by[i];
            size_t reach = last ? last->end : 0;
            if (t->begin == t->end) continue;
            if (t->begin < reach)
                rc = dap_error(DAP_ERR_FORMAT, "%s: tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap",
                               path, last->name, last->begin, last->end, t->name, t->begin, t->end);
            else if (t->begin > reach)
                rc = dap_error(DAP_ERR_FORMAT,
                               "%s: data bytes [%zu, %zu) before tensor '%s' belong to no tensor", path,
                               reach, t->begin, t->name);
            if (!last || t->end > last->end) last = t;
        }
        size_t reach = last ? last->end : 0;
        if (rc == DAP_OK && reach != st->data_size)
            rc = dap_error(DAP_ERR_FORMAT,
                           "%s: the tensors end at data byte %zu but the data section has %zu bytes", path,
                           reach, st->data_size);
        free(by);
        if (rc != DAP_OK) goto fail;
    }
    jval_free(&root);
    *out = st;
    return DAP_OK;
fail:
    jval_free(&root);
    dap_st_close(st);
    return rc;
}

const dap_st_tensor *dap_st_find(const dap_st *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->t[i].name, name) == 0) return &st->t[i];
    return NULL;
}

void dap_shape_str(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t len = (size_t)snprintf(buf, n, "[");
    for (int k = 0; k < ndim && len < n; k++)
        len += (size_t)snprintf(buf + len, n - len, "%s%lld", k ? ", " : "", (long long)shape[k]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

int dap_st_read_f32(const dap_st *st, const char *name, float *dst, const int64_t *shape, int ndim) {
    const dap_st_tensor *t = dap_st_find(st, name);
    if (!t) return dap_error(DAP_ERR_MISSING, "%s: no tensor '%s'", st->path, name);
    if (shape) {
        int same = t->ndim == ndim;
        for (int k = 0; same && k < ndim; k++) same = t->shape[k] == shape[k];
        if (!same) {
            char want[160], got[160];
            dap_shape_str(want, sizeof want, shape, ndim);
            dap_shape_str(got, sizeof got, t->shape, t->ndim);
            return dap_error(DAP_ERR_SHAPE, "%s: tensor '%s': expected shape %s, found %s", st->path, name,
                             want, got);
        }
    }
    const uint8_t *src = st->data + t->begin;
    switch (t->dtype) {
    case DAP_DT_F32: memcpy(dst, src, t->numel * 4); break;
    case DAP_DT_F16:
    case DAP_DT_BF16:
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            dst[i] = t->dtype == DAP_DT_F16 ? dap_f16_to_f32(h) : dap_bf16_to_f32(h);
        }
        break;
    default:
        return dap_error(DAP_ERR_SHAPE, "%s: tensor '%s' has dtype %s (expected F32, F16 or BF16)", st->path,
                         name, dtype_names[t->dtype]);
    }
    return DAP_OK;
}

char *dap_st_meta_get(const dap_st *st, const char *key) {
    if (!st->metadata_json) return NULL;
    jval root;
    char err[200];
    if (!jparse(st->metadata_json, strlen(st->metadata_json), &root, err, sizeof err)) return NULL;
    const jval *v = jget(&root, key);
    char *s = v && v->type == J_STR ? dap_strdup(v->str) : NULL;
    jval_free(&root);
    return s;
}

int dap_st_meta_u64(const dap_st *st, const char *key, unsigned long long *out) {
    char *s = dap_st_meta_get(st, key);
    if (!s) return dap_error(DAP_ERR_MISSING, "%s: __metadata__ lacks \"%s\"", st->path, key);
    char *end;
    *out = strtoull(s, &end, 10);
    const int bad = end == s || *end != '\0';
    int rc = bad ? dap_error(DAP_ERR_FORMAT, "%s: __metadata__ \"%s\" = \"%s\" is not a number",
                             st->path, key, s)
                 : DAP_OK;
    free(s);
    return rc;
}

/* ---- writer ------------------------------------------------------------------ */
typedef struct {
    char *name;
    int dtype, ndim;
    int64_t shape[DAP_ST_MAX_DIMS];
    uint8_t *bytes;
    size_t nbytes;
} st_entry;

struct dap_st_writer {
    st_entry *e;
    int n, cap;
    char **meta; /* key, value pairs */
    int nmeta, capmeta;
};

dap_st_writer *dap_st_writer_create(void) { return dap_calloc(1, sizeof(dap_st_writer)); }

void dap_st_writer_destroy(dap_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->e[i].name);
        free(w->e[i].bytes);
    }
    for (int i = 0; i < 2 * w->nmeta; i++) free(w->meta[i]);
    free(w->e);
    free(w->meta);
    free(w);
}

static st_entry *writer_entry(dap_st_writer *w, const char *name, int dtype, int ndim, const int64_t *shape,
                              size_t *numel) {
    DAP_ASSERT(name && *name && strcmp(name, "__metadata__") != 0);
    DAP_ASSERT(dtype >= 0 && dtype < NDTYPES && ndim >= 0 && ndim <= DAP_ST_MAX_DIMS);
    for (int i = 0; i < w->n; i++) DAP_ASSERT(strcmp(w->e[i].name, name) != 0); /* duplicate name */
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->e = dap_realloc(w->e, sizeof(st_entry) * (size_t)w->cap);
    }
    st_entry *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    e->name = dap_strdup(name);
    e->dtype = dtype;
    e->ndim = ndim;
    size_t n = 1;
    for (int k = 0; k < ndim; k++) {
        DAP_ASSERT(shape[k] >= 0);
        e->shape[k] = shape[k];
        DAP_ASSERT(dap_mul_size(n, (size_t)shape[k], &n) == DAP_OK);
    }
    *numel = n;
    DAP_ASSERT(dap_mul_size(n, dtype_sizes[dtype], &e->nbytes) == DAP_OK);
    e->bytes = dap_malloc(e->nbytes);
    return e;
}

void dap_st_writer_add(dap_st_writer *w, const char *name, int dtype, const float *data, int ndim,
                       const int64_t *shape) {
    DAP_ASSERT(dtype == DAP_DT_F32 || dtype == DAP_DT_F16);
    size_t n;
    st_entry *e = writer_entry(w, name, dtype, ndim, shape, &n);
    if (dtype == DAP_DT_F32) {
        if (n) memcpy(e->bytes, data, n * 4);
    } else {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = dap_f32_to_f16(data[i]);
            e->bytes[2 * i] = (uint8_t)(h & 0xff);
            e->bytes[2 * i + 1] = (uint8_t)(h >> 8);
        }
    }
}

void dap_st_writer_add_raw(dap_st_writer *w, const char *name, int dtype, const void *data, int ndim,
                           const int64_t *shape) {
    size_t n;
    st_entry *e = writer_entry(w, name, dtype, ndim, shape, &n);
    if (e->nbytes) memcpy(e->bytes, data, e->nbytes);
}

void dap_st_writer_meta(dap_st_writer *w, const char *key, const char *value) {
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta[2 * i], key) == 0) { /* last value wins */
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = dap_strdup(value);
            return;
        }
    if (w->nmeta == w->capmeta) {
        w->capmeta = w->capmeta ? 2 * w->capmeta : 8;
        w->meta = dap_realloc(w->meta, sizeof(char *) * 2 * (size_t)w->capmeta);
    }
    w->meta[2 * w->nmeta] = dap_strdup(key);
    w->meta[2 * w->nmeta + 1] = dap_strdup(value);
    w->nmeta++;
}

/* A growing text buffer for the header. */
typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 256;
        b->s = dap_realloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_fmt(sbuf *b, const char *fmt, long long v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, fmt, v);
    sb_put(b, tmp, (size_t)n);
}
static void sb_quoted(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            sb_put(b, e, 2);
        } else if (*p < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", *p);
            sb_put(b, e, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

int dap_st_writer_save(dap_st_writer *w, const char *path) {
    sbuf h = {0};
    sb_str(&h, "{");
    int first = 1;
    if (w->nmeta) {
        sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) sb_str(&h, ",");
            sb_quoted(&h, w->meta[2 * i]);
            sb_str(&h, ":");
            sb_quoted(&h, w->meta[2 * i + 1]);
        }
        sb_str(&h, "}");
        first = 0;
    }
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const st_entry *e = &w->e[i];
        if (!first) sb_str(&h, ",");
        first = 0;
        sb_quoted(&h, e->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, dtype_names[e->dtype]);
        sb_str(&h, "\",\"shape\":[");
        for (int k = 0; k < e->ndim; k++) sb_fmt(&h, k ? ",%lld" : "%lld", (long long)e->shape[k]);
        sb_fmt(&h, "],\"data_offsets\":[%lld", (long long)off);
        off += e->nbytes;
        sb_fmt(&h, ",%lld]}", (long long)off);
    }
    sb_str(&h, "}");
    while (h.len % 8) sb_str(&h, " ");

    size_t total = 8 + h.len + off;
    uint8_t *buf = dap_malloc(total);
    for (int k = 0; k < 8; k++) buf[k] = (uint8_t)((uint64_t)h.len >> (8 * k));
    memcpy(buf + 8, h.s, h.len);
    size_t pos = 8 + h.len;
    for (int i = 0; i < w->n; i++) {
        if (w->e[i].nbytes) memcpy(buf + pos, w->e[i].bytes, w->e[i].nbytes);
        pos += w->e[i].nbytes;
    }
    int rc = dap_write_file_atomic(path, buf, total);
    free(buf);
    free(h.s);
    return rc;
}
