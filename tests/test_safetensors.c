/*
 * test_safetensors.c: safetensors round trips (F32, F16, raw I64, metadata; BF16 and
 * F16 files built by hand), half-float conversions, every kind of malformed file the
 * reader must refuse, and the strict params load (missing / unknown / wrong-shape /
 * NaN tensors, each named in the message).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/params.h"
#include "io/io.h"
#include "test.h"

/* A file made of a given header length field, header text and data bytes. */
static void write_st(const char *path, uint64_t hlen_field, const char *header, const void *data,
                     size_t ndata) {
    size_t h = strlen(header);
    uint8_t *b = malloc(8 + h + ndata + 1);
    for (int k = 0; k < 8; k++) b[k] = (uint8_t)(hlen_field >> (8 * k));
    memcpy(b + 8, header, h);
    if (ndata) memcpy(b + 8 + h, data, ndata);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(b, 1, 8 + h + ndata, f) == 8 + h + ndata);
    fclose(f);
    free(b);
}
static void write_st_ok(const char *path, const char *header, const void *data, size_t ndata) {
    write_st(path, strlen(header), header, data, ndata);
}

DAP_TEST(st_roundtrip) {
    float a[6] = {1.5f, -2.25f, 3e-3f, 0, 65504.0f, -1e-6f};
    float b[4] = {0.1f, -0.2f, 1000.5f, 7};
    int64_t step[1] = {123456789012345LL};
    int64_t sa[2] = {2, 3}, sb[1] = {4}, ss[1] = {1}, sz[2] = {0, 5};
    dap_st_writer *w = dap_st_writer_create();
    dap_st_writer_meta(w, "format", "pt");
    dap_st_writer_meta(w, "note", "quote \" backslash \\ newline \n end");
    dap_st_writer_add(w, "layer.weight", DAP_DT_F32, a, 2, sa);
    dap_st_writer_add(w, "layer.bias", DAP_DT_F16, b, 1, sb);
    dap_st_writer_add_raw(w, "step", DAP_DT_I64, step, 1, ss);
    dap_st_writer_add(w, "empty", DAP_DT_F32, NULL, 2, sz);
    const char *p = dap_test_path("rt.safetensors");
    CHECK(dap_st_writer_save(w, p) == DAP_OK);
    dap_st_writer_destroy(w);

    dap_st *st;
    int rc = dap_st_open(&st, p);
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    if (rc) return;
    CHECK(st->n == 4);
    CHECK((st->data - st->file) % 8 == 0); /* header padded to 8 bytes */
    CHECK(!strcmp(st->t[0].name, "layer.weight") && !strcmp(st->t[3].name, "empty")); /* insertion order */
    float ga[6], gb[4];
    CHECK(dap_st_read_f32(st, "layer.weight", ga, sa, 2) == DAP_OK);
    CHECK(memcmp(ga, a, sizeof a) == 0);
    CHECK(dap_st_read_f32(st, "layer.bias", gb, sb, 1) == DAP_OK);
    double rel = dap_test_compare("F16 round trip", gb, b, 4, 1e-3);
    CHECK(rel < 1e-3);
    const dap_st_tensor *t = dap_st_find(st, "step");
    CHECK(t && t->dtype == DAP_DT_I64 && t->numel == 1);
    int64_t got_step;
    memcpy(&got_step, st->data + t->begin, 8);
    CHECK(got_step == step[0]);
    CHECK(dap_st_read_f32(st, "step", ga, NULL, 0) == DAP_ERR_SHAPE);
    CHECK(dap_st_find(st, "empty") && dap_st_find(st, "empty")->numel == 0);
    /* wrong expected shape names both */
    int64_t wrong[2] = {3, 2};
    CHECK(dap_st_read_f32(st, "layer.weight", ga, wrong, 2) == DAP_ERR_SHAPE);
    CHECK_MSG(strstr(dap_last_error(), "[3, 2]") && strstr(dap_last_error(), "[2, 3]"), "%s",
              dap_last_error());
    CHECK(dap_st_read_f32(st, "nope", ga, NULL, 0) == DAP_ERR_MISSING);
    char *m = dap_st_meta_get(st, "note");
    CHECK(m && !strcmp(m, "quote \" backslash \\ newline \n end"));
    free(m);
    m = dap_st_meta_get(st, "format");
    CHECK(m && !strcmp(m, "pt"));
    free(m);
    CHECK(dap_st_meta_get(st, "absent") == NULL);
    dap_st_close(st);
}

DAP_TEST(st_bf16_f16_read_by_hand) {
    /* bf16: 1.0 = 0x3f80, -2.5 = 0xc020, 3.140625 = 0x4049; f16: 1.0 = 0x3c00, -0.5 = 0xb800,
     * 65504 = 0x7bff, smallest subnormal 2^-24 = 0x0001 */
    uint8_t data[14] = {0x80, 0x3f, 0x20, 0xc0, 0x49, 0x40, 0x00, 0x3c, 0x00, 0xb8, 0xff, 0x7b, 0x01, 0x00};
    const char *hdr = "{\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                      " \"h\" : {\"shape\":[2,2],\"dtype\":\"F16\",\"data_offsets\":[6,14]}}";
    write_st_ok(dap_test_path("bf.safetensors"), hdr, data, sizeof data);
    dap_st *st;
    int rc = dap_st_open(&st, dap_test_path("bf.safetensors"));
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    if (rc) return;
    float b[3], h[4];
    CHECK(dap_st_read_f32(st, "b", b, NULL, 0) == DAP_OK);
    CHECK(b[0] == 1.0f && b[1] == -2.5f && b[2] == 3.140625f);
    CHECK(dap_st_read_f32(st, "h", h, NULL, 0) == DAP_OK);
    CHECK(h[0] == 1.0f && h[1] == -0.5f && h[2] == 65504.0f && h[3] == ldexpf(1, -24));
    dap_st_close(st);
}

DAP_TEST(st_python_fixture) {
    /* tests/ref/io_tiny.safetensors, written by tests/gen/io_tiny.py (not by dap) */
    dap_st *st;
    int rc = dap_st_open(&st, dap_test_ref("io_tiny.safetensors"));
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    if (rc) return;
    CHECK(st->n == 4);
    float w[6], h[4], b[4];
    int64_t sw[2] = {2, 3}, sb[2] = {2, 2};
    CHECK(dap_st_read_f32(st, "w", w, sw, 2) == DAP_OK);
    CHECK(dap_st_read_f32(st, "h", h, NULL, 0) == DAP_OK);
    CHECK(dap_st_read_f32(st, "b", b, sb, 2) == DAP_OK);
    const float ww[6] = {-1, -0.5f, 0, 0.5f, 1, 1.5f}, wh[4] = {1, -0.5f, 65504, 0x1p-24f},
                wb[4] = {1, -2.5f, 3.140625f, 0.5f};
    CHECK(memcmp(w, ww, sizeof w) == 0 && memcmp(h, wh, sizeof h) == 0 && memcmp(b, wb, sizeof b) == 0);
    const dap_st_tensor *n = dap_st_find(st, "n");
    int64_t nv = 0;
    if (n) memcpy(&nv, st->data + n->begin, 8);
    CHECK(n && n->dtype == DAP_DT_I64 && nv == 7);
    char *m = dap_st_meta_get(st, "format");
    CHECK(m && !strcmp(m, "pt"));
    free(m);
    dap_st_close(st);
}

DAP_TEST(st_half_conversions) {
    /* every finite half survives f16 -> f32 -> f16 */
    int bad = 0;
    for (uint32_t hh = 0; hh < 65536; hh++) {
        uint16_t h = (uint16_t)hh;
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN */
        if (dap_f32_to_f16(dap_f16_to_f32(h)) != h) bad++;
    }
    CHECK_MSG(bad == 0, "%d halves do not round-trip", bad);
    CHECK(dap_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00);                       /* tie to even */
    CHECK(dap_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02);                   /* tie to even, up */
    CHECK(dap_f32_to_f16(65520.0f) == 0x7c00 && dap_f32_to_f16(1e10f) == 0x7c00); /* overflow */
    CHECK(dap_f32_to_f16(ldexpf(1, -25)) == 0 && dap_f32_to_f16(ldexpf(1.5f, -25)) == 1);
    CHECK(dap_f32_to_f16(-0.0f) == 0x8000);
    uint16_t n = dap_f32_to_f16(NAN);
    CHECK((n & 0x7c00) == 0x7c00 && (n & 0x3ff));
    CHECK(isinf(dap_f16_to_f32(0xfc00)) && dap_f16_to_f32(0xfc00) < 0);
    CHECK(dap_bf16_to_f32(0xff80) == -INFINITY);
    printf("    all 63488 finite/inf halves round-trip; rounding, overflow, subnormals ok\n");
}

/* Expects the file to be refused with DAP_ERR_FORMAT (and no leak / over-read under ASan). */
static void expect_bad(const char *label, const char *path) {
    dap_st *st = NULL;
    int rc = dap_st_open(&st, path);
    CHECK_MSG(rc != DAP_OK && st == NULL, "%s: accepted (rc %d)", label, rc);
    printf("    %-22s -> %s\n", label, dap_last_error());
    if (st) dap_st_close(st);
}

DAP_TEST(st_malformed) {
    uint8_t data[64] = {0};
    const char *p = dap_test_path("bad.safetensors");
    const char *good = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    /* header length larger than the file, and a tiny file */
    write_st(p, strlen(good) + 9, good, data, 8);
    expect_bad("header len > file", p);
    write_st(p, (uint64_t)1 << 63, good, data, 8);
    expect_bad("header len 2^63", p);
    write_st(p, 0, "", NULL, 0);
    expect_bad("empty header", p);
    FILE *f = fopen(p, "wb");
    fwrite("\x05\x00\x00", 1, 3, f);
    fclose(f);
    expect_bad("3-byte file", p);
    /* truncated: the data section is shorter than the offsets say */
    write_st_ok(p, good, data, 7);
    expect_bad("truncated data", p);
    /* offsets out of range, reversed, negative */
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[60,68]}}", data, 64);
    expect_bad("offsets past the end", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", data, 64);
    expect_bad("end < begin", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", data, 64);
    expect_bad("negative offset", p);
    /* overlapping tensors, also across an empty tensor between them */
    write_st_ok(p,
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                data, 16);
    expect_bad("overlap", p);
    write_st_ok(p,
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                data, 16);
    expect_bad("overlap (contained)", p);
    /* byte count does not match the shape */
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", data, 16);
    expect_bad("wrong byte count", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", data, 16);
    expect_bad("wrong count for F16", p);
    /* absurd shapes */
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", data, 16);
    expect_bad("negative dim", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"U8\",\"shape\":[2097152,2097152],\"data_offsets\":[0,8]}}", data, 16);
    expect_bad("2^42 elements", p);
    write_st_ok(p,
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904,4],"
                "\"data_offsets\":[0,0]}}",
                data, 16);
    expect_bad("overflowing shape", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}",
                data, 16);
    expect_bad("dim beyond int64", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", data,
                16);
    expect_bad("9 dims", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", data, 16);
    expect_bad("float dim", p);
    /* duplicate names, unknown dtype, missing / unknown fields, non-object entries */
    write_st_ok(p,
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                data, 16);
    expect_bad("duplicate tensor", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data,
                16);
    expect_bad("duplicate field", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", data, 16);
    expect_bad("dtype F64", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", data, 16);
    expect_bad("no data_offsets", p);
    write_st_ok(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", data, 16);
    expect_bad("unknown field", p);
    write_st_ok(p, "{\"a\":[1,2]}", data, 16);
    expect_bad("entry not an object", p);
    write_st_ok(p, "{\"__metadata__\":{\"k\":1}}", data, 0);
    expect_bad("metadata not strings", p);
    write_st_ok(p, "[]", data, 0);
    expect_bad("header is an array", p);
    /* bad JSON */
    static const char *const json[] = {
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}",
        "{a:{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}}",
        "{\"a\":{\"dtype\":\"F32,\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2 3],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":null,\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\\q\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\\ud800\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\\u0000\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\\u12\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\tb\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[-],\"data_offsets\":[0,8]}}",
        "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
        "]]]]]]]]]]]]]]]]]]]]]]]]]]}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x",
        "{\"",
    };
    for (size_t i = 0; i < sizeof json / sizeof json[0]; i++) {
        char label[32];
        snprintf(label, sizeof label, "bad JSON #%zu", i);
        write_st_ok(p, json[i], data, 16);
        expect_bad(label, p);
    }
    uint8_t nul_data[17] = {0}; /* a NUL byte inside the header, then 16 data bytes */
    write_st(p, strlen(good) + 1, good, nul_data, sizeof nul_data);
    expect_bad("NUL in header", p);
    /* and the good one with escapes, spaces and padding is accepted */
    write_st_ok(p,
                " { \"\\u00e9\\n\\\"\\ud83d\\ude00\" : { \"dtype\" : \"F32\", \"shape\" : [ 2 ], "
                "\"data_offsets\" : [ 0 , 8 ] } , \"__metadata__\" : { } }    ",
                data, 8);
    dap_st *st;
    int rc = dap_st_open(&st, p);
    CHECK_MSG(rc == DAP_OK, "escapes: %s", dap_last_error());
    if (rc == DAP_OK) {
        CHECK(st->n == 1 && !strcmp(st->t[0].name, "\xc3\xa9\n\"\xf0\x9f\x98\x80"));
        dap_st_close(st);
    }
    CHECK(dap_st_open(&st, dap_test_path("no-such.safetensors")) == DAP_ERR_IO);
}

/* ---- params ---------------------------------------------------------------------- */
static void toy_params(dap_params *ps, int extra) {
    dap_params_init(ps);
    dap_params_add4(ps, "blocks.0.attn.qkv.weight", 6, 2, 0, 0);
    dap_params_add4(ps, "blocks.0.attn.qkv.bias", 6, 0, 0, 0);
    dap_params_add4(ps, "pos_embed", 1, 4, 2, 0);
    if (extra) dap_params_add4(ps, "final.weight", 3, 0, 0, 0);
    dap_params_alloc(ps, 1);
}

DAP_TEST(params_save_load_strict) {
    dap_params a, b;
    toy_params(&a, 0);
    CHECK(a.total == 12 + 6 + 8 && a.p[2].offset == 18 && a.p[1].no_decay && a.p[2].no_decay &&
          !a.p[0].no_decay);
    for (size_t i = 0; i < a.total; i++) a.data[i] = (float)i * 0.25f - 1.0f;
    const char *meta[] = {"model", "toy", "step", "7", NULL};
    const char *p = dap_test_path("params.safetensors");
    CHECK(dap_params_save(&a, p, 0, meta) == DAP_OK);
    toy_params(&b, 0);
    int rc = dap_params_load(&b, p, NULL, 0);
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    CHECK(memcmp(a.data, b.data, a.total * sizeof(float)) == 0);
    CHECK(dap_params_ptr(&b, "pos_embed") == b.data + 18 && dap_params_grad(&b, "pos_embed") == b.grad + 18);
    dap_params_free(&b);
    /* F16 save: values here are exact in half */
    CHECK(dap_params_save(&a, dap_test_path("params16.safetensors"), 1, NULL) == DAP_OK);
    toy_params(&b, 0);
    CHECK(dap_params_load(&b, dap_test_path("params16.safetensors"), NULL, 0) == DAP_OK);
    CHECK(memcmp(a.data, b.data, a.total * sizeof(float)) == 0);
    dap_params_free(&b);

    /* missing key */
    toy_params(&b, 1);
    CHECK(dap_params_load(&b, p, NULL, 0) == DAP_ERR_MISSING);
    CHECK_MSG(strstr(dap_last_error(), "final.weight"), "%s", dap_last_error());
    printf("    missing: %s\n", dap_last_error());
    dap_params_free(&b);

    /* unknown key: refused unless ignored by prefix or allowed */
    dap_params c;
    dap_params_init(&c);
    dap_params_add4(&c, "blocks.0.attn.qkv.weight", 6, 2, 0, 0);
    dap_params_add4(&c, "pos_embed", 1, 4, 2, 0);
    dap_params_alloc(&c, 0);
    CHECK(dap_params_load(&c, p, NULL, 0) != DAP_OK);
    CHECK_MSG(strstr(dap_last_error(), "blocks.0.attn.qkv.bias"), "%s", dap_last_error());
    printf("    unknown: %s\n", dap_last_error());
    const char *ign[] = {"blocks.0.attn.qkv.b", NULL};
    CHECK(dap_params_load(&c, p, ign, 0) == DAP_OK);
    CHECK(dap_params_load(&c, p, NULL, 1) == DAP_OK);
    CHECK(memcmp(dap_params_ptr(&c, "pos_embed"), a.data + 18, 8 * sizeof(float)) == 0);
    dap_params_free(&c);

    /* wrong shape */
    dap_params_init(&c);
    dap_params_add4(&c, "blocks.0.attn.qkv.weight", 6, 2, 0, 0);
    dap_params_add4(&c, "blocks.0.attn.qkv.bias", 6, 0, 0, 0);
    dap_params_add4(&c, "pos_embed", 1, 2, 4, 0);
    dap_params_alloc(&c, 0);
    CHECK(dap_params_load(&c, p, NULL, 0) == DAP_ERR_SHAPE);
    CHECK_MSG(strstr(dap_last_error(), "pos_embed") && strstr(dap_last_error(), "[1, 2, 4]") &&
                  strstr(dap_last_error(), "[1, 4, 2]"),
              "%s", dap_last_error());
    printf("    shape: %s\n", dap_last_error());
    dap_params_free(&c);

    /* NaN and Inf: refused, naming the tensor, and the target is left untouched */
    for (int k = 0; k < 2; k++) {
        a.data[20] = k ? INFINITY : NAN;
        CHECK(dap_params_save(&a, dap_test_path("nan.safetensors"), 0, NULL) == DAP_OK);
        toy_params(&b, 0);
        b.data[0] = 42;
        CHECK(dap_params_load(&b, dap_test_path("nan.safetensors"), NULL, 0) == DAP_ERR_VALUE);
        CHECK_MSG(strstr(dap_last_error(), "pos_embed"), "%s", dap_last_error());
        CHECK(b.data[0] == 42);
        printf("    %s: %s\n", k ? "inf" : "nan", dap_last_error());
        dap_params_free(&b);
    }
    /* a malformed file gives the reader's error */
    toy_params(&b, 0);
    CHECK(dap_params_load(&b, dap_test_path("bad.safetensors"), NULL, 0) != DAP_OK);
    dap_params_free(&b);
    dap_params_free(&a);
}

DAP_TEST(st_mutations) {
    /* random byte edits of a valid file: each must open cleanly or fail cleanly (ASan
     * watches for over-reads); tensors of files that open are read in full */
    float v[12];
    for (int i = 0; i < 12; i++) v[i] = (float)i;
    int64_t s1[2] = {3, 4}, s2[1] = {5};
    dap_st_writer *w = dap_st_writer_create();
    dap_st_writer_meta(w, "k", "v");
    dap_st_writer_add(w, "a", DAP_DT_F32, v, 2, s1);
    dap_st_writer_add(w, "bb", DAP_DT_F16, v, 1, s2);
    const char *p = dap_test_path("mut.safetensors");
    CHECK(dap_st_writer_save(w, p) == DAP_OK);
    dap_st_writer_destroy(w);
    uint8_t *orig;
    size_t n;
    CHECK(dap_read_file(p, &orig, &n) == DAP_OK);
    uint8_t *buf = malloc(n);
    dap_rng r;
    dap_rng_init(&r, 1234, 0);
    int opened = 0, refused = 0, trials = getenv("DAP_TEST_FAST") ? 200 : 600;
    for (int t = 0; t < trials; t++) {
        memcpy(buf, orig, n);
        size_t len = n;
        int edits = 1 + (int)dap_rng_below(&r, 3);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)dap_rng_below(&r, (uint64_t)len);
            buf[at] = (uint8_t)dap_rng_below(&r, 256);
        }
        if (dap_rng_below(&r, 4) == 0) len = (size_t)dap_rng_below(&r, (uint64_t)n);
        const char *q = dap_test_path("mut2.safetensors");
        FILE *f = fopen(q, "wb");
        fwrite(buf, 1, len, f);
        fclose(f);
        dap_st *st;
        if (dap_st_open(&st, q) == DAP_OK) {
            opened++;
            for (int i = 0; i < st->n; i++) {
                float *dst = malloc(sizeof(float) * (st->t[i].numel + 1));
                dap_st_read_f32(st, st->t[i].name, dst, NULL, 0);
                free(dst);
            }
            free(dap_st_meta_get(st, "k"));
            dap_st_close(st);
        } else {
            refused++;
        }
    }
    printf("    %d mutated files: %d opened, %d refused\n", trials, opened, refused);
    CHECK(opened + refused == trials && refused > 0);
    free(buf);
    free(orig);
}
