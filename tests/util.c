/*
 * util.c: file writers shared by the tests (fixtures made on the fly).
 */
#include <stdio.h>
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
