/*
 * json.c: a tiny streaming JSON writer (reports, run summaries). Output is indented
 * two spaces per level; commas and string escaping are handled here; NaN and Inf,
 * which JSON cannot hold, are written as null.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"

#define JSON_DEPTH_MAX ((int)(sizeof(((dap_json *)0)->need_comma) / sizeof(int)))

void dap_json_init(dap_json *j) { memset(j, 0, sizeof *j); }

void dap_json_free(dap_json *j) {
    free(j->buf);
    memset(j, 0, sizeof *j);
}

static void put(dap_json *j, const char *s, size_t n) {
    if (j->len + n + 1 > j->cap) {
        while (j->len + n + 1 > j->cap) j->cap = j->cap ? 2 * j->cap : 256;
        j->buf = dap_realloc(j->buf, j->cap);
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = 0;
}
static void puts_(dap_json *j, const char *s) { put(j, s, strlen(s)); }

static void newline(dap_json *j) {
    put(j, "\n", 1);
    for (int i = 0; i < j->depth; i++) put(j, "  ", 2);
}

static void quoted(dap_json *j, const char *s) {
    put(j, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        switch (*p) {
        case '"': put(j, "\\\"", 2); break;
        case '\\': put(j, "\\\\", 2); break;
        case '\n': put(j, "\\n", 2); break;
        case '\r': put(j, "\\r", 2); break;
        case '\t': put(j, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(e, sizeof e, "\\u%04x", *p);
                put(j, e, 6);
            } else {
                put(j, (const char *)p, 1);
            }
        }
    }
    put(j, "\"", 1);
}

/* Comma, newline, indentation and "key": before a value. */
static void prefix(dap_json *j, const char *key) {
    if (j->depth > 0) {
        if (j->need_comma[j->depth - 1]) put(j, ",", 1);
        j->need_comma[j->depth - 1] = 1;
        newline(j);
    } else {
        DAP_ASSERT(j->len == 0); /* one top-level value */
    }
    if (key) {
        quoted(j, key);
        put(j, ": ", 2);
    }
}

static void open_(dap_json *j, const char *key, const char *br) {
    prefix(j, key);
    puts_(j, br);
    DAP_ASSERT(j->depth < JSON_DEPTH_MAX);
    j->need_comma[j->depth++] = 0;
}

static void close_(dap_json *j, const char *br) {
    DAP_ASSERT(j->depth > 0);
    int had = j->need_comma[--j->depth];
    if (had) newline(j);
    puts_(j, br);
}

void dap_json_begin_object(dap_json *j, const char *key) { open_(j, key, "{"); }
void dap_json_end_object(dap_json *j) { close_(j, "}"); }
void dap_json_begin_array(dap_json *j, const char *key) { open_(j, key, "["); }
void dap_json_end_array(dap_json *j) { close_(j, "]"); }

void dap_json_str(dap_json *j, const char *key, const char *v) {
    prefix(j, key);
    if (v)
        quoted(j, v);
    else
        puts_(j, "null");
}

void dap_json_num(dap_json *j, const char *key, double v) {
    prefix(j, key);
    if (!isfinite(v)) {
        puts_(j, "null");
        return;
    }
    char b[40];
    snprintf(b, sizeof b, "%.10g", v);
    puts_(j, b);
}

void dap_json_int(dap_json *j, const char *key, long long v) {
    prefix(j, key);
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    puts_(j, b);
}

void dap_json_bool(dap_json *j, const char *key, int v) {
    prefix(j, key);
    puts_(j, v ? "true" : "false");
}

int dap_json_save(const dap_json *j, const char *path) {
    DAP_ASSERT(j->depth == 0);
    size_t n = j->len;
    char *b = dap_malloc(n + 1);
    if (n) memcpy(b, j->buf, n);
    b[n] = '\n';
    int rc = dap_write_file_atomic(path, b, n + 1);
    free(b);
    return rc;
}
