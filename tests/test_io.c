/*
 * test_io.c: IDX (raw and gzipped, and the ways a file can lie), PNG/JPEG reading,
 * PNG writing bit-exact, resize + crop, grids, Fashion-MNIST, image folders, the
 * dataset split/subset/save_folder helpers and the JSON writer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include "core/core.h"
#include "data/dataset.h"
#include "io/io.h"
#include "test.h"

/* An IDX header for unsigned bytes with the given dims. */
static size_t idx_header(uint8_t *h, int ndim, const uint32_t *dims) {
    h[0] = 0;
    h[1] = 0;
    h[2] = 0x08;
    h[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        h[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        h[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        h[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        h[7 + 4 * i] = (uint8_t)dims[i];
    }
    return 4 + 4 * (size_t)ndim;
}

static void write_bytes(const char *path, const uint8_t *b, size_t n, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        CHECK(f != NULL);
        if (n) CHECK(gzwrite(f, b, (unsigned)n) == (int)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL);
        if (n) CHECK(fwrite(b, 1, n, f) == n);
        fclose(f);
    }
}

/* Writes an IDX file: header for dims, then `ndata` bytes of pattern data. */
static void write_idx(const char *path, int ndim, const uint32_t *dims, size_t ndata, int gz) {
    uint8_t *b = malloc(32 + ndata);
    size_t h = idx_header(b, ndim, dims);
    for (size_t i = 0; i < ndata; i++) b[h + i] = (uint8_t)(i * 7 + 3);
    write_bytes(path, b, h + ndata, gz);
    free(b);
}

DAP_TEST(idx_roundtrip_raw_and_gz) {
    uint32_t dims[3] = {3, 4, 5};
    for (int gz = 0; gz < 2; gz++) {
        const char *p = dap_test_path(gz ? "rt.idx.gz" : "rt.idx");
        write_idx(p, 3, dims, 60, gz);
        dap_idx x;
        int rc = dap_idx_read(p, &x);
        CHECK_MSG(rc == DAP_OK, "%s: %s", p, dap_last_error());
        if (rc) continue;
        CHECK(x.ndim == 3 && x.dims[0] == 3 && x.dims[1] == 4 && x.dims[2] == 5);
        int bad = 0;
        for (int i = 0; i < 60; i++) bad += x.data[i] != (uint8_t)(i * 7 + 3);
        CHECK_MSG(bad == 0, "%d wrong bytes (gz %d)", bad, gz);
        dap_idx_free(&x);
    }
    /* 1-D labels file */
    uint32_t d1[1] = {7};
    write_idx(dap_test_path("lab.idx"), 1, d1, 7, 0);
    dap_idx x;
    CHECK(dap_idx_read(dap_test_path("lab.idx"), &x) == DAP_OK && x.ndim == 1 && x.dims[0] == 7);
    dap_idx_free(&x);
}

DAP_TEST(idx_truncated_and_trailing) {
    uint32_t dims[3] = {10, 28, 28};
    for (int gz = 0; gz < 2; gz++) {
        const char *p = dap_test_path(gz ? "trunc.idx.gz" : "trunc.idx");
        write_idx(p, 3, dims, 10 * 28 * 28 - 1, gz);
        dap_idx x;
        int rc = dap_idx_read(p, &x);
        const char *m = dap_last_error();
        CHECK(rc == DAP_ERR_FORMAT);
        CHECK_MSG(strstr(m, p) && strstr(m, "7840") && strstr(m, "7839"), "message: %s", m);
        printf("    %s\n", m);
        CHECK(x.data == NULL);
        write_idx(p, 3, dims, 10 * 28 * 28 + 5, gz);
        rc = dap_idx_read(p, &x);
        CHECK_MSG(rc == DAP_ERR_FORMAT && strstr(dap_last_error(), "trailing"), "trailing: %s",
                  dap_last_error());
    }
    /* header cut short */
    uint8_t h[16];
    idx_header(h, 3, dims);
    write_bytes(dap_test_path("short.idx"), h, 9, 0);
    dap_idx x;
    CHECK(dap_idx_read(dap_test_path("short.idx"), &x) == DAP_ERR_FORMAT);
    /* a gzip stream cut in the middle */
    write_idx(dap_test_path("cut.idx.gz"), 3, dims, 7840, 1);
    uint8_t *b;
    size_t n;
    CHECK(dap_read_file(dap_test_path("cut.idx.gz"), &b, &n) == DAP_OK);
    write_bytes(dap_test_path("cut.idx.gz"), b, n / 2, 0);
    free(b);
    CHECK(dap_idx_read(dap_test_path("cut.idx.gz"), &x) == DAP_ERR_FORMAT);
    printf("    cut gzip: %s\n", dap_last_error());
}

DAP_TEST(idx_lying_header_and_bad_magic) {
    dap_idx x;
    /* dims claiming 2^31 * 2^31 * ... bytes: rejected from the header alone */
    uint32_t huge[4] = {0x7fffffffu, 0x7fffffffu, 0x7fffffffu, 3};
    write_idx(dap_test_path("huge.idx"), 4, huge, 16, 0);
    CHECK(dap_idx_read(dap_test_path("huge.idx"), &x) == DAP_ERR_FORMAT);
    printf("    %s\n", dap_last_error());
    /* plausible but larger than the data (1e6 images of 28x28, 100 bytes present) */
    uint32_t big[3] = {1000000, 28, 28};
    for (int gz = 0; gz < 2; gz++) {
        write_idx(dap_test_path("big.idx"), 3, big, 100, gz);
        CHECK(dap_idx_read(dap_test_path("big.idx"), &x) == DAP_ERR_FORMAT);
        CHECK_MSG(strstr(dap_last_error(), "784000000"), "%s", dap_last_error());
    }
    /* zero dim, bad magic, wrong dtype, too many dims */
    uint32_t zero[2] = {0, 5};
    write_idx(dap_test_path("zero.idx"), 2, zero, 0, 0);
    CHECK(dap_idx_read(dap_test_path("zero.idx"), &x) == DAP_ERR_FORMAT);
    uint8_t b[32];
    uint32_t d[1] = {4};
    size_t h = idx_header(b, 1, d);
    memset(b + h, 1, 4);
    b[0] = 0x12;
    write_bytes(dap_test_path("magic.idx"), b, h + 4, 0);
    CHECK(dap_idx_read(dap_test_path("magic.idx"), &x) == DAP_ERR_FORMAT && strstr(dap_last_error(), "magic"));
    b[0] = 0;
    b[2] = 0x0d; /* float */
    write_bytes(dap_test_path("dtype.idx"), b, h + 4, 0);
    CHECK(dap_idx_read(dap_test_path("dtype.idx"), &x) == DAP_ERR_FORMAT && strstr(dap_last_error(), "0x0d"));
    b[2] = 0x08;
    b[3] = 5;
    write_bytes(dap_test_path("ndim.idx"), b, h + 4, 0);
    CHECK(dap_idx_read(dap_test_path("ndim.idx"), &x) == DAP_ERR_FORMAT);
    write_bytes(dap_test_path("empty.idx"), b, 0, 0);
    CHECK(dap_idx_read(dap_test_path("empty.idx"), &x) == DAP_ERR_FORMAT);
    CHECK(dap_idx_read(dap_test_path("does-not-exist.idx"), &x) == DAP_ERR_IO);
}

/* ---- images ------------------------------------------------------------------- */
DAP_TEST(png_write_read_bitexact) {
    dap_rng r;
    dap_rng_init(&r, 7, 0);
    for (int c = 1; c <= 3; c += 2) {
        int h = 13, w = 17;
        uint8_t *px = malloc((size_t)h * w * c);
        for (int i = 0; i < h * w * c; i++) px[i] = (uint8_t)dap_rng_below(&r, 256);
        const char *p = dap_test_path(c == 1 ? "g.png" : "rgb.png");
        CHECK(dap_png_write(p, px, h, w, c) == DAP_OK);
        dap_image8 im;
        int rc = dap_image_read(p, &im);
        CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
        if (rc == DAP_OK) {
            CHECK(im.h == h && im.w == w && im.c == c);
            int diff = 0;
            for (int i = 0; i < h * w * c; i++) diff += im.px[i] != px[i];
            CHECK_MSG(diff == 0, "%d bytes differ (c %d)", diff, c);
            printf("    c=%d: %d of %d bytes differ\n", c, diff, h * w * c);
            dap_image8_free(&im);
        }
        free(px);
    }
    uint8_t one = 0;
    CHECK(dap_png_write(dap_test_path("no/such/dir/x.png"), &one, 1, 1, 1) == DAP_ERR_IO);
    /* not an image; a truncated PNG */
    const uint8_t junk[] = "hello, not an image";
    write_bytes(dap_test_path("junk.png"), junk, sizeof junk, 0);
    dap_image8 im;
    CHECK(dap_image_read(dap_test_path("junk.png"), &im) == DAP_ERR_FORMAT);
    uint8_t *b;
    size_t n;
    CHECK(dap_read_file(dap_test_path("rgb.png"), &b, &n) == DAP_OK);
    write_bytes(dap_test_path("cut.png"), b, n - 20, 0);
    free(b);
    CHECK(dap_image_read(dap_test_path("cut.png"), &im) == DAP_ERR_FORMAT);
    printf("    cut png: %s\n", dap_last_error());
}

/* Writes a PNG of any simplified-API format (alpha, 16-bit) with libpng directly. */
static void write_png_format(const char *path, const void *px, int h, int w, png_uint_32 format) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = format;
    CHECK(png_image_write_to_file(&im, path, 0, px, 0, NULL));
}

DAP_TEST(png_alpha_and_16bit) {
    /* RGBA and gray+alpha: alpha dropped, colour kept as stored */
    uint8_t rgba[2 * 4] = {10, 20, 30, 0, 200, 150, 100, 255}, ga[2 * 2] = {77, 128, 250, 0};
    write_png_format(dap_test_path("rgba.png"), rgba, 1, 2, PNG_FORMAT_RGBA);
    write_png_format(dap_test_path("ga.png"), ga, 1, 2, PNG_FORMAT_GA);
    dap_image8 im;
    CHECK(dap_image_read(dap_test_path("rgba.png"), &im) == DAP_OK);
    CHECK_MSG(im.c == 3 && im.px && im.px[0] == 10 && im.px[2] == 30 && im.px[3] == 200 && im.px[5] == 100,
              "rgba -> c %d px %d %d %d %d", im.c, im.px ? im.px[0] : -1, im.px ? im.px[2] : -1,
              im.px ? im.px[3] : -1, im.px ? im.px[5] : -1);
    dap_image8_free(&im);
    CHECK(dap_image_read(dap_test_path("ga.png"), &im) == DAP_OK);
    CHECK(im.c == 1 && im.px && im.px[0] == 77 && im.px[1] == 250);
    dap_image8_free(&im);
    /* 16-bit (linear) gray: the ends map to 0 and 255 */
    uint16_t g16[3] = {0, 65535, 65535};
    write_png_format(dap_test_path("g16.png"), g16, 1, 3, PNG_FORMAT_LINEAR_Y);
    CHECK(dap_image_read(dap_test_path("g16.png"), &im) == DAP_OK);
    CHECK(im.c == 1 && im.w == 3 && im.px && im.px[0] == 0 && im.px[1] == 255);
    dap_image8_free(&im);
}

static uint8_t *solid(int h, int w, int c, const uint8_t *color) {
    uint8_t *px = malloc((size_t)h * w * c);
    for (int i = 0; i < h * w; i++)
        for (int k = 0; k < c; k++) px[i * c + k] = color[k];
    return px;
}

DAP_TEST(jpeg_read) {
    const uint8_t col[3] = {200, 60, 30};
    uint8_t *px = solid(23, 37, 3, col);
    dap_test_write_jpeg(dap_test_path("a.jpg"), px, 23, 37, 3, 95, 0);
    dap_image8 im;
    int rc = dap_image_read(dap_test_path("a.jpg"), &im);
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    if (rc == DAP_OK) {
        CHECK(im.h == 23 && im.w == 37 && im.c == 3);
        int worst = 0;
        for (int i = 0; i < 23 * 37; i++)
            for (int k = 0; k < 3; k++)
                worst = abs(im.px[i * 3 + k] - col[k]) > worst ? abs(im.px[i * 3 + k] - col[k]) : worst;
        printf("    solid JPEG: max abs diff %d\n", worst);
        CHECK(worst <= 4);
        dap_image8_free(&im);
    }
    free(px);
    uint8_t *b;
    size_t n;
    CHECK(dap_read_file(dap_test_path("a.jpg"), &b, &n) == DAP_OK);
    write_bytes(dap_test_path("cut.jpg"), b, 40, 0);
    free(b);
    CHECK(dap_image_read(dap_test_path("cut.jpg"), &im) == DAP_ERR_FORMAT);
    printf("    cut jpeg: %s\n", dap_last_error());
}

DAP_TEST(resize_crop) {
    /* a solid image stays solid at any size; gray -> RGB replicates; RGB -> gray is luma */
    const uint8_t col[3] = {200, 100, 50};
    dap_image8 in = {.h = 23, .w = 37, .c = 3, .px = solid(23, 37, 3, col)};
    uint8_t out[32 * 32 * 3];
    int bad = 0;
    dap_image_resize_crop(&in, 28, 3, out);
    for (int i = 0; i < 28 * 28; i++)
        for (int k = 0; k < 3; k++) bad += out[i * 3 + k] != col[k];
    dap_image_resize_crop(&in, 32, 1, out);
    int luma = (int)(0.299 * 200 + 0.587 * 100 + 0.114 * 50 + 0.5);
    for (int i = 0; i < 32 * 32; i++) bad += abs(out[i] - luma) > 0;
    CHECK_MSG(bad == 0, "%d wrong pixels on solid images", bad);
    free(in.px);

    /* 1-px stripes shrunk 3x must be averaged (point sampling would give 0 / 255) */
    int n = 90;
    dap_image8 st = {.h = n, .w = n, .c = 1, .px = malloc((size_t)n * n)};
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) st.px[y * n + x] = (x & 1) ? 255 : 0;
    dap_image_resize_crop(&st, 30, 1, out);
    int lo = 255, hi = 0;
    for (int i = 0; i < 30 * 30; i++) {
        lo = out[i] < lo ? out[i] : lo;
        hi = out[i] > hi ? out[i] : hi;
    }
    printf("    stripes 90 -> 30: values in [%d, %d]\n", lo, hi);
    CHECK(lo >= 70 && hi <= 185);

    /* centre crop: a wide image whose middle third is white */
    dap_image8 wide = {.h = 10, .w = 30, .c = 1, .px = calloc(300, 1)};
    for (int y = 0; y < 10; y++)
        for (int x = 10; x < 20; x++) wide.px[y * 30 + x] = 255;
    dap_image_resize_crop(&wide, 10, 1, out);
    int diff = 0;
    for (int i = 0; i < 100; i++) diff += out[i] != 255;
    CHECK_MSG(diff == 0, "centre crop: %d non-white pixels", diff);
    /* enlarging (bilinear) a 2-px ramp stays within its range and is monotone */
    dap_image8 ramp = {.h = 1, .w = 2, .c = 1, .px = (uint8_t[]){0, 200}};
    dap_image8 ramp2 = {.h = 2, .w = 2, .c = 1, .px = (uint8_t[]){0, 200, 0, 200}};
    (void)ramp;
    dap_image_resize_crop(&ramp2, 8, 1, out);
    int mono = 1;
    for (int x = 1; x < 8; x++) mono &= out[x] >= out[x - 1];
    CHECK(mono && out[0] < 30 && out[7] > 170);
    free(st.px);
    free(wide.px);
}

DAP_TEST(float_u8_and_grid) {
    uint8_t u[256], back[256];
    float f[256];
    for (int i = 0; i < 256; i++) u[i] = (uint8_t)i;
    dap_image_from_u8(u, 1, 16, 16, f);
    dap_image_to_u8(f, 1, 16, 16, back);
    int bad = 0;
    for (int i = 0; i < 256; i++) bad += back[i] != i;
    CHECK_MSG(bad == 0, "u8 -> float -> u8: %d of 256 differ", bad);
    CHECK_NEAR(f[0], -1.0, 1e-7);
    CHECK_NEAR(f[255], 1.0, 1e-7);
    float ext[4] = {-3.0f, 3.0f, 0.0f, -0.0039f};
    uint8_t e[4];
    dap_image_to_u8(ext, 1, 2, 2, e);
    CHECK(e[0] == 0 && e[1] == 255 && e[2] == 128 && e[3] == 127);
    /* CHW -> HWC order */
    float chw[6] = {-1, -1, 1, 1, 0, 0}; /* c=3, 1x2 */
    uint8_t hwc[6];
    dap_image_to_u8(chw, 3, 1, 2, hwc);
    CHECK(hwc[0] == 0 && hwc[1] == 255 && hwc[2] == 128 && hwc[3] == 0);

    /* 2 x 3 grid with 5 images of 4x4: image i filled with value (i - 2) / 2 */
    float img[5 * 16];
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 16; j++) img[i * 16 + j] = (i - 2) / 2.0f;
    CHECK(dap_grid_write(dap_test_path("grid.png"), img, 5, 2, 3, 1, 4, 4) == DAP_OK);
    dap_image8 g;
    CHECK(dap_image_read(dap_test_path("grid.png"), &g) == DAP_OK);
    CHECK_MSG(g.h == 2 * 4 + 3 * 2 && g.w == 3 * 4 + 4 * 2 && g.c == 1, "grid %dx%dx%d", g.h, g.w, g.c);
    if (g.px && g.h == 14 && g.w == 20) {
        CHECK(g.px[0] == 255);                    /* border */
        CHECK(g.px[2 * 20 + 2] == 0);             /* image 0: -1 */
        CHECK(g.px[2 * 20 + 2 + 6 * 2] == 128);   /* image 2: 0 */
        CHECK(g.px[(2 + 6) * 20 + 2 + 6] == 255); /* image 4: +1 */
        CHECK(g.px[(2 + 6) * 20 + 2 + 12] == 0);  /* missing: black */
    }
    dap_image8_free(&g);
}

/* ---- datasets ------------------------------------------------------------------ */
DAP_TEST(fmnist_load_train) {
    if (!dap_fmnist_dir()) DAP_SKIP("no Fashion-MNIST: %s", dap_last_error());
    if (dap_test_fast()) DAP_SKIP("DAP_TEST_FAST (the sanitizer pass): the 60000-image train split is slow there");
    dap_dataset tr, te;
    int rc = dap_dataset_load(&tr, "fmnist", "train", 0, 0);
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    if (rc) return;
    CHECK(tr.n == 60000 && tr.c == 1 && tr.h == 28 && tr.w == 28 && tr.num_classes == 10);
    int bad = 0;
    for (int k = 0; k < 10; k++) bad += tr.class_count[k] != 6000;
    CHECK_MSG(bad == 0, "%d classes without 6000 images", bad);
    CHECK(strcmp(tr.class_names[0], "T-shirt/top") == 0 && strcmp(tr.class_names[9], "Ankle boot") == 0);
    double s = 0;
    float lo = 1, hi = -1;
    size_t n = (size_t)tr.n * 784;
    for (size_t i = 0; i < n; i++) {
        s += tr.x[i];
        lo = tr.x[i] < lo ? tr.x[i] : lo;
        hi = tr.x[i] > hi ? tr.x[i] : hi;
    }
    double mean01 = (s / n + 1) / 2;
    printf("    train: %d images, pixel range [%g, %g], mean %.4f on [0, 1]\n", tr.n, lo, hi, mean01);
    CHECK(lo == -1.0f && hi == 1.0f);
    CHECK_NEAR(mean01, 0.2860, 2e-3);
    CHECK(tr.class_idx[3][0] < tr.class_idx[3][1] && tr.y[tr.class_idx[3][5]] == 3);
    dap_dataset_free(&tr);
    /* the IDX path form, resized to 32 and 3 channels */
    char img[512];
    snprintf(img, sizeof img, "%s/t10k-images-idx3-ubyte.gz", dap_fmnist_dir());
    rc = dap_dataset_load(&te, img, NULL, 32, 3);
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    if (rc == DAP_OK) CHECK(te.n == 10000 && te.c == 3 && te.h == 32 && te.num_classes == 10);
    dap_dataset_free(&te);
    CHECK(dap_dataset_load(&te, "fmnist", "validation", 0, 0) == DAP_ERR_ARG);
    CHECK(dap_dataset_load(&te, "fmnist:/nonexistent", "train", 0, 0) == DAP_ERR_MISSING);
}

DAP_TEST(fmnist_load_test) {
    if (!dap_fmnist_dir()) DAP_SKIP("no Fashion-MNIST: %s", dap_last_error());
    dap_dataset te;
    int rc = dap_dataset_load(&te, "fmnist", "test", 0, 0);
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    if (rc) return;
    CHECK(te.n == 10000 && te.num_classes == 10 && te.class_count[0] == 1000 && te.class_count[9] == 1000);
    dap_dataset_free(&te);
}

static void mkdir_or_fail(const char *p) { CHECK(mkdir(p, 0755) == 0); }

DAP_TEST(image_folder_load) {
    /* root/apple: an RGB 37x23 PNG and a gray PNG; root/banana: a JPEG; plus noise */
    mkdir_or_fail(dap_test_path("folder"));
    mkdir_or_fail(dap_test_path("folder/banana"));
    mkdir_or_fail(dap_test_path("folder/apple"));
    mkdir_or_fail(dap_test_path("folder/.hidden"));
    const uint8_t red[3] = {220, 20, 10}, gray[1] = {90}, blue[3] = {20, 40, 230};
    uint8_t *a = solid(23, 37, 3, red), *b = solid(40, 31, 1, gray), *c = solid(30, 50, 3, blue);
    CHECK(dap_png_write(dap_test_path("folder/apple/b.png"), a, 23, 37, 3) == DAP_OK);
    CHECK(dap_png_write(dap_test_path("folder/apple/a.png"), b, 40, 31, 1) == DAP_OK);
    dap_test_write_jpeg(dap_test_path("folder/banana/x.jpeg"), c, 30, 50, 3, 95, 0);
    write_bytes(dap_test_path("folder/banana/notes.txt"), (const uint8_t *)"hi", 2, 0);
    for (int size = 28; size <= 32; size += 4)
        for (int ch = 1; ch <= 3; ch += 2) {
            dap_dataset ds;
            int rc = dap_dataset_load(&ds, dap_test_path("folder"), "train", size, ch);
            CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
            if (rc) continue;
            CHECK(ds.n == 3 && ds.c == ch && ds.h == size && ds.w == size && ds.num_classes == 2);
            CHECK(!strcmp(ds.class_names[0], "apple") && !strcmp(ds.class_names[1], "banana"));
            CHECK(ds.y[0] == 0 && ds.y[1] == 0 && ds.y[2] == 1);
            CHECK(ds.class_count[0] == 2 && ds.class_count[1] == 1);
            /* file order: a.png (gray) then b.png (red); check centre pixels */
            size_t per = (size_t)ch * size * size, mid = (size_t)(size / 2) * size + size / 2;
            float g0 = ds.x[mid], r0 = ds.x[per + mid],
                  b2 = ds.x[2 * per + (ch == 3 ? 2 * (size_t)size * size : 0) + mid];
            CHECK_NEAR(g0, 90 / 127.5 - 1, 1e-6);
            if (ch == 3) {
                CHECK_NEAR(r0, 220 / 127.5 - 1, 1e-6);
                CHECK_NEAR(b2, 230 / 127.5 - 1, 0.05);
            } else {
                CHECK_NEAR(r0, (int)(0.299 * 220 + 0.587 * 20 + 0.114 * 10 + 0.5) / 127.5 - 1, 1e-6);
            }
            dap_dataset_free(&ds);
        }
    /* size 0 takes the first image's (a.png, 40x31, not square): the others differ */
    dap_dataset ds;
    CHECK(dap_dataset_load(&ds, dap_test_path("folder"), "train", 0, 0) == DAP_ERR_SHAPE);
    CHECK_MSG(strstr(dap_last_error(), "b.png"), "%s", dap_last_error());
    /* channels 0 takes the first image's (gray) */
    CHECK(dap_dataset_load(&ds, dap_test_path("folder"), "train", 16, 0) == DAP_OK && ds.c == 1 && ds.h == 16);
    dap_dataset_free(&ds);
    /* a broken image names its file; an empty class folder is an error */
    write_bytes(dap_test_path("folder/banana/y.png"), (const uint8_t *)"\x89PNG\r\n\x1a\nbroken", 14, 0);
    CHECK(dap_dataset_load(&ds, dap_test_path("folder"), "train", 28, 3) == DAP_ERR_FORMAT);
    CHECK_MSG(strstr(dap_last_error(), "y.png"), "%s", dap_last_error());
    remove(dap_test_path("folder/banana/y.png"));
    mkdir_or_fail(dap_test_path("folder/cherry"));
    CHECK(dap_dataset_load(&ds, dap_test_path("folder"), "train", 28, 3) == DAP_ERR_FORMAT);
    CHECK_MSG(strstr(dap_last_error(), "cherry"), "%s", dap_last_error());
    free(a);
    free(b);
    free(c);
}

static void make_toy(dap_dataset *ds, int n, int ncls) {
    memset(ds, 0, sizeof *ds);
    ds->n = n;
    ds->c = 3;
    ds->h = 5;
    ds->w = 4;
    ds->num_classes = ncls;
    ds->class_names = dap_malloc(sizeof(char *) * (size_t)ncls);
    for (int k = 0; k < ncls; k++) {
        char b[32];
        snprintf(b, sizeof b, k == 1 ? "cls%d/x" : "cls%d", k); /* '/' becomes '_' on disk */
        ds->class_names[k] = dap_strdup(b);
    }
    ds->x = dap_alloc_f32((size_t)n * 60);
    ds->y = dap_malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) {
        ds->y[i] = (i * 7) % ncls;
        for (int j = 0; j < 60; j++) ds->x[i * 60 + j] = (float)((i * 31 + j * 5) % 256) / 127.5f - 1.0f;
    }
    dap_dataset_index(ds);
}

DAP_TEST(dataset_split_subset_save) {
    dap_dataset ds, tr, va, tr2, va2;
    make_toy(&ds, 40, 4);
    dap_dataset_split(&ds, 3, 42, &tr, &va);
    CHECK(va.n == 12 && tr.n == 28);
    for (int k = 0; k < 4; k++) CHECK(va.class_count[k] == 3 && tr.class_count[k] == ds.class_count[k] - 3);
    dap_dataset_split(&ds, 3, 42, &tr2, &va2);
    CHECK(memcmp(va.x, va2.x, sizeof(float) * 12 * 60) == 0);
    dap_dataset_free(&tr2);
    dap_dataset_free(&va2);
    dap_dataset_split(&ds, 3, 43, &tr2, &va2);
    CHECK(memcmp(va.x, va2.x, sizeof(float) * 12 * 60) != 0); /* another seed, another split */
    dap_dataset_free(&tr2);
    dap_dataset_free(&va2);

    int idx[3] = {5, 0, 39};
    dap_dataset sub;
    dap_dataset_subset(&sub, &ds, idx, 3);
    CHECK(sub.n == 3 && sub.y[0] == ds.y[5] && sub.y[2] == ds.y[39]);
    CHECK(memcmp(sub.x + 60, ds.x, sizeof(float) * 60) == 0);
    dap_dataset_free(&sub);

    /* save as a folder (twice: the second replaces the first) and read back exactly */
    CHECK(dap_dataset_save_folder(&ds, dap_test_path("saved")) == DAP_OK);
    CHECK(dap_dataset_save_folder(&ds, dap_test_path("saved")) == DAP_OK);
    dap_dataset back;
    int rc = dap_dataset_load(&back, dap_test_path("saved"), "train", 0, 0);
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    if (rc == DAP_OK) {
        CHECK(back.n == 40 && back.num_classes == 4 && back.c == 3 && back.h == 5 && back.w == 4);
        CHECK(!strcmp(back.class_names[1], "cls1_x"));
        double worst = 0;
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < ds.class_count[k]; j++) {
                const float *a = ds.x + 60 * ds.class_idx[k][j], *b = back.x + 60 * back.class_idx[k][j];
                for (int q = 0; q < 60; q++) worst = fmax(worst, fabs(a[q] - b[q]));
            }
        printf("    save_folder -> load: max abs diff %g\n", worst);
        CHECK(worst < 1e-6);
        dap_dataset_free(&back);
    }
    dap_dataset_free(&tr);
    dap_dataset_free(&va);
    dap_dataset_free(&ds);
}

DAP_TEST(json_writer) {
    dap_json j;
    dap_json_init(&j);
    dap_json_begin_object(&j, NULL);
    dap_json_str(&j, "name", "a \"q\"\n\\");
    dap_json_int(&j, "n", -3);
    dap_json_num(&j, "x", 0.5);
    dap_json_num(&j, "bad", NAN);
    dap_json_begin_array(&j, "v");
    dap_json_int(&j, NULL, 1);
    dap_json_bool(&j, NULL, 0);
    dap_json_end_array(&j);
    dap_json_begin_array(&j, "empty");
    dap_json_end_array(&j);
    dap_json_end_object(&j);
    const char *want =
        "{\n  \"name\": \"a \\\"q\\\"\\n\\\\\",\n  \"n\": -3,\n  \"x\": 0.5,\n  \"bad\": null,\n"
        "  \"v\": [\n    1,\n    false\n  ],\n  \"empty\": []\n}";
    CHECK_MSG(strcmp(j.buf, want) == 0, "got:\n%s", j.buf);
    CHECK(dap_json_save(&j, dap_test_path("j.json")) == DAP_OK);
    uint8_t *b;
    size_t n;
    CHECK(dap_read_file(dap_test_path("j.json"), &b, &n) == DAP_OK && n == strlen(want) + 1);
    free(b);
    dap_json_free(&j);
}
