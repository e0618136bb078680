/*
 * util.c: file writers shared by the tests (fixtures made on the fly).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "core/core.h"
#include "data/dataset.h"
#include "models/dit.h"
#include "test.h"

const char *dap_test_path(const char *name) {
    static char buf[8][512]; /* eight live at once: enough for one call's arguments */
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, 512, "%s/%s", dap_test_tmpdir(), name);
    return b;
}

void dap_test_write_jpeg(const char *path, const uint8_t *px, int h, int w, int c, int quality, int progressive) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr err;
    ci.err = jpeg_std_error(&err);
    jpeg_create_compress(&ci);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) {
        jpeg_destroy_compress(&ci);
        return;
    }
    jpeg_stdio_dest(&ci, f);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = c;
    ci.in_color_space = c == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    if (progressive) jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)ci.next_scanline * w * c);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    fclose(f);
}

struct dap_dit *dap_test_small_dit(int tame) {
    dap_dit *m = NULL;
    if (dap_dit_load(&m, dap_test_ref("dit_small.safetensors"), 0, 1) != DAP_OK) {
        dap_test_fail(__FILE__, __LINE__, "cannot load dit_small: %s", dap_last_error());
        return NULL;
    }
    const char *fl[] = {"final_layer.linear.weight", "final_layer.linear.bias"};
    for (int f = 0; tame && f < 2; f++) {
        int i = dap_params_find(&m->params, fl[f]);
        for (size_t q = 0; q < m->params.p[i].numel; q++) dap_params_ptr(&m->params, fl[f])[q] *= 0.05f;
    }
    return m;
}

/* A toy set: class k images are bright in quadrant k (4 classes, 1x8x8, noisy). */
void dap_test_toy_set(dap_dataset *ds, int per_class, uint64_t seed) {
    memset(ds, 0, sizeof *ds);
    ds->n = 4 * per_class, ds->c = 1, ds->h = 8, ds->w = 8, ds->num_classes = 4;
    ds->x = dap_alloc_f32((size_t)ds->n * 64);
    ds->y = dap_malloc((size_t)ds->n * sizeof(int));
    ds->class_names = dap_malloc(4 * sizeof(char *));
    const char *names[4] = {"T-shirt/top", "b", "c", "d"};
    for (int k = 0; k < 4; k++) ds->class_names[k] = dap_strdup(names[k]);
    dap_rng r;
    dap_rng_init(&r, seed, 0);
    dap_rng_uniform(&r, ds->x, (size_t)ds->n * 64, -1.0f, -0.2f);
    for (int i = 0; i < ds->n; i++) {
        int k = i % 4;
        ds->y[i] = k;
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++) ds->x[(size_t)i * 64 + (y + 4 * (k / 2)) * 8 + x + 4 * (k % 2)] += 1.0f;
    }
    dap_dataset_index(ds);
}

int dap_test_key_list(const dap_params *ps, const char *ref, const char *what, void (*rename)(char *key, size_t cap),
                      int *bad, int *in_order) {
    uint8_t *text;
    size_t len;
    *bad = 0, *in_order = 1;
    if (dap_read_file(dap_test_ref(ref), &text, &len) != DAP_OK) {
        CHECK_MSG(0, "%s", dap_last_error());
        return -1;
    }
    char *buf = dap_malloc(len + 1);
    memcpy(buf, text, len);
    buf[len] = '\0';
    free(text);
    int lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *tsave = NULL, *key = strtok_r(line, " ", &tsave), k[256];
        int64_t shape[8];
        int nd = 0;
        for (char *d = strtok_r(NULL, " ", &tsave); d && nd < 8; d = strtok_r(NULL, " ", &tsave))
            shape[nd++] = atoll(d);
        snprintf(k, sizeof k, "%s", key);
        if (rename) rename(k, sizeof k);
        int i = dap_params_find(ps, k);
        if (i < 0) {
            CHECK_MSG(0, "%s key %s (%s) missing from the table", what, key, k);
            ++*bad;
        } else {
            const dap_param *p = &ps->p[i];
            int same = p->ndim == nd;
            for (int d = 0; same && d < nd; d++) same = p->shape[d] == shape[d];
            CHECK_MSG(same, "%s: shape differs from %s's", key, what);
            *bad += !same;
            *in_order &= i == lines;
        }
        lines++;
    }
    free(buf);
    return lines;
}

void dap_test_labelled_set(dap_dataset *ds, int K, int per_class, int c, int s, uint64_t seed, float lo, float hi,
                           float base, float step) {
    memset(ds, 0, sizeof *ds);
    const size_t per = (size_t)c * s * s;
    ds->n = K * per_class, ds->c = c, ds->h = s, ds->w = s, ds->num_classes = K;
    ds->class_names = dap_malloc(sizeof(char *) * (size_t)K);
    for (int k = 0; k < K; k++) {
        char b[16];
        snprintf(b, sizeof b, "c%d", k);
        ds->class_names[k] = dap_strdup(b);
    }
    ds->x = dap_alloc_f32((size_t)ds->n * per);
    ds->y = dap_malloc(sizeof(int) * (size_t)ds->n);
    dap_rng r;
    dap_rng_init(&r, seed, 0);
    dap_rng_uniform(&r, ds->x, (size_t)ds->n * per, lo, hi);
    for (int i = 0; i < ds->n; i++) {
        ds->y[i] = i % K;
        const float off = base - step * (float)(i % K);
        if (off != 0.0f)
            for (size_t q = 0; q < per; q++) ds->x[(size_t)i * per + q] += off;
    }
    dap_dataset_index(ds);
}

void dap_test_model_set(dap_dataset *ds, const dap_dit *m, int per_class, uint64_t seed, float lo, float hi,
                        float base, float step) {
    dap_test_labelled_set(ds, m->cfg.num_classes, per_class, m->cfg.in_channels, m->cfg.input_size, seed, lo, hi, base,
                          step);
}
