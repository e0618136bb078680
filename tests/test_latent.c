/*
 * test_latent.c: ImageNet-style data and the latent pipeline's library side: the class
 * table and subsets, SUBSET:DIR folders (foreign wnids refused), ImageNet's odd files
 * (CMYK / YCCK / gray JPEGs, a PNG named .JPEG), the DiT code's centre crop against PIL,
 * and the latent cache (reuse, invalidation, a damaged file rebuilt). `latent_fixture`
 * also writes the tiny latent DiT, VAE and wnid folder that tests/cli/latent.sh runs on
 * (into $DAP_LATENT_FIXTURE_DIR when set).
 */
#include <stdio.h>
#include <jpeglib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "data/dataset.h"
#include "data/imagenet.h"
#include "data/latent_cache.h"
#include "distill/distill.h"
#include "io/io.h"
#include "models/dit.h"
#include "models/vae.h"
#include "test.h"

DAP_TEST(imagenet_table) {
    const char *const *w = dap_imagenet_wnids();
    int sorted = 1;
    for (int i = 1; i < DAP_IMAGENET_CLASSES; i++) sorted &= strcmp(w[i - 1], w[i]) < 0;
    CHECK(sorted); /* dap_imagenet_index's binary search needs it */
    for (int i = 0; i < DAP_IMAGENET_CLASSES; i++) CHECK(dap_imagenet_index(w[i]) == i);
    CHECK(!strcmp(dap_imagenet_wnid(0), "n01440764") && strstr(dap_imagenet_name(0), "tench"));
    CHECK(!strcmp(dap_imagenet_wnid(207), "n02099601") && strstr(dap_imagenet_name(207), "golden retriever"));
    CHECK(!strcmp(dap_imagenet_wnid(999), "n15075141"));
    CHECK(dap_imagenet_wnid(1000) == NULL && dap_imagenet_wnid(-1) == NULL);
    CHECK(dap_imagenet_index("n99999999") == -1 && dap_imagenet_index("") == -1);
    /* the subsets' labels (ImageNette's as DiT papers condition on them) */
    static const int nette[10] = {0, 217, 482, 491, 497, 566, 569, 571, 574, 701};
    static const int woof[10] = {155, 159, 162, 167, 182, 193, 207, 229, 258, 273};
    static const int idc[10] = {64, 74, 176, 236, 374, 452, 503, 882, 904, 993};
    const int *want[3] = {nette, woof, idc};
    const char *names[3] = {"imagenette", "imagewoof", "imageidc"};
    for (int s = 0; s < 3; s++) {
        const dap_imagenet_subset *sub = dap_imagenet_subset_find(names[s]);
        CHECK(sub && sub->n == 10);
        for (int i = 0; sub && i < 10; i++)
            CHECK_MSG(dap_imagenet_index(sub->wnids[i]) == want[s][i], "%s[%d] = %s", names[s], i, sub->wnids[i]);
    }
    CHECK(dap_imagenet_subset_find("imagenet")->n == 1000 && !dap_imagenet_subset_find("imagecat"));
    const dap_imagenet_subset *sub;
    const char *dir;
    CHECK(dap_imagenet_spec("imagewoof:/data/woof", &sub, &dir) && !strcmp(sub->name, "imagewoof") &&
          !strcmp(dir, "/data/woof"));
    CHECK(!dap_imagenet_spec("fmnist:/x", &sub, &dir) && !dap_imagenet_spec("/data/x", &sub, &dir));
}

/* ---- files ------------------------------------------------------------------- */
static void mkdirs(const char *p) { CHECK(dap_mkdir_p(p) == DAP_OK); }

/* A smooth RGB test picture with a colour per seed. */
static void picture(uint8_t *px, int h, int w, int seed) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                px[((size_t)y * w + x) * 3 + c] = (uint8_t)(40 + (seed * 53 + c * 70 + x * 3 + y * 2 * (c + 1)) % 180);
}

/* Writes a 4-channel JPEG (CMYK given, stored as CMYK or YCCK; libjpeg writes the Adobe
 * marker, so readers take the values as inverted inks). */
static void write_cmyk_jpeg(const char *path, const uint8_t *cmyk, int h, int w, int ycck) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr err;
    ci.err = jpeg_std_error(&err);
    jpeg_create_compress(&ci);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    jpeg_stdio_dest(&ci, f);
    ci.image_width = (JDIMENSION)w, ci.image_height = (JDIMENSION)h;
    ci.input_components = 4, ci.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&ci);
    jpeg_set_colorspace(&ci, ycck ? JCS_YCCK : JCS_CMYK);
    jpeg_set_quality(&ci, 100, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(cmyk + (size_t)ci.next_scanline * w * 4);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    fclose(f);
}

DAP_TEST(jpeg_cmyk_ycck) {
    /* left half stored (255, 128, 0, 255), right half (255, 255, 255, 128): inverted inks,
     * so RGB = stored * K' / 255: (255, 128, 0) and (128, 128, 128) */
    const int h = 16, w = 32;
    uint8_t *cmyk = dap_malloc((size_t)h * w * 4);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = cmyk + ((size_t)y * w + x) * 4;
            const uint8_t l[4] = {255, 128, 0, 255}, r[4] = {255, 255, 255, 128};
            memcpy(p, x < w / 2 ? l : r, 4);
        }
    for (int ycck = 0; ycck < 2; ycck++) {
        const char *path = dap_test_path(ycck ? "ycck.jpg" : "cmyk.jpg");
        write_cmyk_jpeg(path, cmyk, h, w, ycck);
        dap_image8 im;
        CHECK(dap_image_read(path, &im) == DAP_OK);
        if (!im.px) continue;
        CHECK(im.c == 3 && im.h == h && im.w == w);
        const uint8_t *a = im.px + ((size_t)8 * w + 4) * 3, *b = im.px + ((size_t)8 * w + 28) * 3;
        CHECK_MSG(abs(a[0] - 255) <= 3 && abs(a[1] - 128) <= 3 && abs(a[2] - 0) <= 3, "%s left (%d, %d, %d)",
                  ycck ? "YCCK" : "CMYK", a[0], a[1], a[2]);
        CHECK_MSG(abs(b[0] - 128) <= 3 && abs(b[1] - 128) <= 3 && abs(b[2] - 128) <= 3, "%s right (%d, %d, %d)",
                  ycck ? "YCCK" : "CMYK", b[0], b[1], b[2]);
        dap_image8_free(&im);
    }
    free(cmyk);
}

DAP_TEST(adm_crop_matches_pil) {
    dap_st *st;
    CHECK(dap_st_open(&st, dap_test_ref("adm_crop.safetensors")) == DAP_OK);
    if (!st) return;
    for (int i = 0;; i++) {
        char in_k[16], out_k[16], size_k[16];
        snprintf(in_k, sizeof in_k, "in%d", i), snprintf(out_k, sizeof out_k, "out%d", i);
        snprintf(size_k, sizeof size_k, "size%d", i);
        const dap_st_tensor *ti = dap_st_find(st, in_k);
        if (!ti) {
            CHECK(i == 4);
            break;
        }
        float sz;
        CHECK(dap_st_read_f32(st, size_k, &sz, NULL, 0) == DAP_OK);
        const int h = (int)ti->shape[0], w = (int)ti->shape[1], S = (int)sz;
        float *fin = dap_alloc_f32(ti->numel), *fout = dap_alloc_f32((size_t)S * S * 3);
        CHECK(dap_st_read_f32(st, in_k, fin, NULL, 0) == DAP_OK);
        CHECK(dap_st_read_f32(st, out_k, fout, NULL, 0) == DAP_OK);
        dap_image8 im = {.h = h, .w = w, .c = 3, .px = dap_malloc(ti->numel)};
        for (size_t q = 0; q < ti->numel; q++) im.px[q] = (uint8_t)fin[q];
        uint8_t *got = dap_malloc((size_t)S * S * 3);
        dap_image_center_crop_adm(&im, S, got);
        int maxd = 0;
        for (size_t q = 0; q < (size_t)S * S * 3; q++) {
            int d = abs(got[q] - (int)fout[q]);
            maxd = d > maxd ? d : maxd;
        }
        printf("  centre crop %dx%d -> %d: max |dap - PIL| = %d\n", h, w, S, maxd);
        CHECK_MSG(maxd == 0, "case %d: PIL's pixels differ by up to %d", i, maxd);
        free(got), dap_image8_free(&im), dap_free_aligned(fin), dap_free_aligned(fout);
    }
    dap_st_close(st);
}

/* An imagenette-style folder: DIR/{train,val}/<wnid>/ with n images of h x w each,
 * the odd files of ImageNet among them (a gray JPEG, a CMYK JPEG, a PNG named .JPEG). */
static void write_wnid_folder(const char *dir, const char *const *wnids, int nclass, int n, int h, int w) {
    uint8_t *px = dap_malloc((size_t)h * w * 4), *gray = dap_malloc((size_t)h * w);
    const char *split[2] = {"train", "val"};
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < nclass; k++) {
            char d[1400], p[1500];
            snprintf(d, sizeof d, "%s/%s/%s", dir, split[s], wnids[k]);
            mkdirs(d);
            for (int i = 0; i < (s ? 1 : n); i++) {
                picture(px, h, w, k * 7 + i);
                snprintf(p, sizeof p, "%s/%s_%d.JPEG", d, wnids[k], i);
                if (i == 1) { /* grayscale JPEG */
                    for (size_t q = 0; q < (size_t)h * w; q++) gray[q] = px[3 * q];
                    dap_test_write_jpeg(p, gray, h, w, 1, 95, 0);
                } else if (i == 2) { /* a PNG behind a .JPEG name */
                    CHECK(dap_png_write(p, px, h, w, 3) == DAP_OK);
                } else if (i == 3) { /* CMYK */
                    uint8_t *c4 = dap_malloc((size_t)h * w * 4);
                    for (size_t q = 0; q < (size_t)h * w; q++)
                        c4[4 * q] = px[3 * q], c4[4 * q + 1] = px[3 * q + 1], c4[4 * q + 2] = px[3 * q + 2], c4[4 * q + 3] = 255;
                    write_cmyk_jpeg(p, c4, h, w, 0);
                    free(c4);
                } else {
                    dap_test_write_jpeg(p, px, h, w, 3, 95, 0);
                }
            }
        }
    free(px), free(gray);
}

static const char *const k_three[3] = {"n01440764", "n02102040", "n03888257"}; /* ImageNette labels 0, 217, 701 */

DAP_TEST(imagenet_folder_specs) {
    const char *root = dap_test_path("nette");
    write_wnid_folder(root, k_three, 3, 4, 20, 26);
    char spec[1100];
    snprintf(spec, sizeof spec, "imagenette:%s", root);
    dap_dataset ds;
    CHECK(dap_dataset_load(&ds, spec, "train", 16, 3) == DAP_OK);
    CHECK(ds.n == 12 && ds.num_classes == 3 && ds.c == 3 && ds.h == 16);
    for (int k = 0; k < 3 && ds.class_names; k++) CHECK(!strcmp(ds.class_names[k], k_three[k]));
    dap_dataset_free(&ds);
    CHECK(dap_dataset_load(&ds, spec, "test", 16, 3) == DAP_OK); /* val/ */
    CHECK(ds.n == 3);
    dap_dataset_free(&ds);
    int rc = dap_dataset_load(&ds, spec, "train", 0, 3);
    CHECK(rc != DAP_OK && strstr(dap_last_error(), "image-size"));
    /* the same folder is not ImageWoof: its wnids are named */
    snprintf(spec, sizeof spec, "imagewoof:%s", root);
    rc = dap_dataset_load(&ds, spec, "train", 16, 3);
    CHECK_MSG(rc != DAP_OK && strstr(dap_last_error(), "n01440764") && strstr(dap_last_error(), "imagewoof"), "%s",
              dap_last_error());
    snprintf(spec, sizeof spec, "imagenet:%s", root); /* any ImageNet-1K wnid */
    CHECK(dap_dataset_load(&ds, spec, "train", 16, 3) == DAP_OK);
    dap_dataset_free(&ds);
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/train/dogs", root);
    mkdirs(bad);
    rc = dap_dataset_load(&ds, spec, "train", 16, 3);
    CHECK_MSG(rc != DAP_OK && strstr(dap_last_error(), "'dogs'"), "%s", dap_last_error());
    rmdir(bad);
    snprintf(spec, sizeof spec, "imagenette:%s/nowhere", root);
    CHECK(dap_dataset_load(&ds, spec, "train", 16, 3) != DAP_OK && strstr(dap_last_error(), "nowhere"));
}

/* ---- a tiny VAE and latent DiT --------------------------------------------------- */
static void fill_random(dap_params *ps, uint64_t seed, float std) {
    dap_rng r;
    dap_rng_init(&r, seed, 0);
    for (int i = 0; i < ps->n; i++) {
        float *d = ps->data + ps->p[i].offset;
        const char *key = ps->p[i].key;
        const size_t len = strlen(key);
        if (strstr(key, "norm") && len > 7 && !strcmp(key + len - 7, ".weight")) {
            for (size_t q = 0; q < ps->p[i].numel; q++) d[q] = 1.0f;
        } else {
            dap_rng_normal(&r, d, ps->p[i].numel, 0.0f, std);
        }
    }
}

/* 4 levels (factor 8) of 8 channels, one block each: 32 px images <-> 4x4x4 latents. */
static dap_vae *tiny_vae(void) {
    dap_vae_config c;
    dap_vae_config_sd(&c);
    c.levels = 4;
    for (int i = 0; i < 4; i++) c.ch[i] = 8;
    c.enc_blocks = 1, c.dec_blocks = 1, c.groups = 4;
    dap_vae *v = NULL;
    CHECK(dap_vae_create(&v, &c) == DAP_OK);
    if (v) fill_random(dap_vae_params(v), 7, 0.2f);
    return v;
}

static dap_dit *tiny_latent_dit(void) {
    dap_dit_config c = {.input_size = 4, .in_channels = 4, .patch = 2, .hidden = 32, .depth = 2, .heads = 2,
                        .num_classes = 1000, .learn_sigma = 1, .mlp_ratio = 4.0f, .class_dropout = 0.1f};
    dap_dit *m = NULL;
    CHECK(dap_dit_create(&m, &c, 0) == DAP_OK);
    if (!m) return NULL;
    dap_dit_init(m, 3);
    /* the official init zeroes the adaLN and output layers (eps = 0): perturb every weight
     * (pos_embed included, harmlessly) so that sampling and guidance have work to do */
    dap_rng r;
    dap_rng_init(&r, 5, 0);
    for (size_t q = 0; q < m->params.total; q++) {
        float e;
        dap_rng_normal(&r, &e, 1, 0.0f, 0.05f);
        m->params.data[q] += e;
    }
    return m;
}

DAP_TEST(latent_cache) {
    dap_vae *v = tiny_vae();
    if (!v) return;
    const char *root = dap_test_path("cachedata");
    write_wnid_folder(root, k_three, 2, 3, 40, 36);
    dap_image_files f;
    /* as a plain folder, train/ and val/ are taken for classes (a plain folder splits into
     * train/ and test/), and they hold folders, not images */
    CHECK(dap_image_files_list(&f, root, "train") != DAP_OK && strstr(dap_last_error(), "no .png"));
    char spec[1100];
    snprintf(spec, sizeof spec, "imagenette:%s", root);
    CHECK(dap_image_files_list(&f, spec, "train") == DAP_OK);
    if (f.num_classes != 2) return;
    dap_latent_cache c = {.dir = dap_test_path("cache"), .vae_hash = "0123456789abcdef", .image_size = 32,
                          .crop = DAP_CROP_ADM, .batch = 2};
    float *a = NULL, *b = NULL;
    int st = -1;
    CHECK(dap_latent_cache_class(v, &c, &f, 1, &a, &st) == DAP_OK && st == DAP_LATENT_CACHE_NEW);
    /* the latents are the encoder's on the DiT crop of each image */
    float *x = dap_alloc_f32((size_t)3 * 3 * 32 * 32), *want = dap_alloc_f32((size_t)3 * 4 * 4 * 4);
    CHECK(dap_image_files_load_class(&f, 1, 32, 3, DAP_CROP_ADM, x) == DAP_OK);
    CHECK(dap_vae_encode(v, x, 3, 32, 32, want, NULL) == DAP_OK);
    CHECK(dap_test_compare("cached latents vs encode", a, want, 3 * 64, 1e-6) < 1e-5);
    CHECK(dap_latent_cache_class(v, &c, &f, 1, &b, &st) == DAP_OK && st == DAP_LATENT_CACHE_HIT);
    CHECK(a && b && !memcmp(a, b, sizeof(float) * 3 * 64));
    dap_free_aligned(b), b = NULL;
    /* another crop, size or VAE: stale */
    dap_latent_cache c2 = c;
    c2.crop = DAP_CROP_RESIZE;
    CHECK(dap_latent_cache_class(v, &c2, &f, 1, &b, &st) == DAP_OK && st == DAP_LATENT_CACHE_STALE);
    dap_free_aligned(b), b = NULL;
    c2 = c, c2.vae_hash = "fedcba9876543210";
    CHECK(dap_latent_cache_class(v, &c2, &f, 1, &b, &st) == DAP_OK && st == DAP_LATENT_CACHE_STALE);
    dap_free_aligned(b), b = NULL;
    CHECK(dap_latent_cache_class(v, &c, &f, 1, &b, &st) == DAP_OK && st == DAP_LATENT_CACHE_STALE);
    dap_free_aligned(b), b = NULL;
    /* an image's content changes (same name, size and count) */
    uint8_t *px = dap_malloc(40 * 36 * 3);
    picture(px, 40, 36, 99);
    dap_test_write_jpeg(f.files[1][0], px, 40, 36, 3, 95, 0);
    free(px);
    CHECK(dap_latent_cache_class(v, &c, &f, 1, &b, &st) == DAP_OK && st == DAP_LATENT_CACHE_STALE);
    CHECK(b && memcmp(a, b, sizeof(float) * 64) != 0 && !memcmp(a + 64, b + 64, sizeof(float) * 128));
    dap_free_aligned(b), b = NULL;
    /* a truncated file: rebuilt, never read */
    char *path = dap_latent_cache_path(&c, &f, 1);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && truncate(path, sb.st_size - 100) == 0);
    CHECK(dap_latent_cache_class(v, &c, &f, 1, &b, &st) == DAP_OK && st == DAP_LATENT_CACHE_DAMAGED);
    dap_free_aligned(b), b = NULL;
    CHECK(dap_latent_cache_class(v, &c, &f, 1, &b, &st) == DAP_OK && st == DAP_LATENT_CACHE_HIT);
    dap_free_aligned(b), b = NULL;
    /* a file with the right key but a wrong shape (another tensor written over it) */
    dap_st_writer *w = dap_st_writer_create();
    dap_st *old;
    CHECK(dap_st_open(&old, path) == DAP_OK);
    char *key = old ? dap_st_meta_get(old, "dap_latent_cache_key") : NULL;
    if (old) dap_st_close(old);
    dap_st_writer_meta(w, "dap_latent_cache_key", key ? key : "");
    const int64_t shp[4] = {2, 4, 4, 4};
    dap_st_writer_add(w, "latent", DAP_DT_F32, want, 4, shp);
    CHECK(dap_st_writer_save(w, path) == DAP_OK);
    dap_st_writer_destroy(w);
    free(key);
    CHECK(dap_latent_cache_class(v, &c, &f, 1, &b, &st) == DAP_OK && st == DAP_LATENT_CACHE_DAMAGED);
    dap_free_aligned(b), b = NULL;
    /* the right key and shape, but another tensor beside it: not a file dap wrote */
    w = dap_st_writer_create();
    CHECK(dap_st_open(&old, path) == DAP_OK);
    key = old ? dap_st_meta_get(old, "dap_latent_cache_key") : NULL;
    if (old) dap_st_close(old);
    dap_st_writer_meta(w, "dap_latent_cache_key", key ? key : "");
    const int64_t shp3[4] = {3, 4, 4, 4};
    dap_st_writer_add(w, "latent", DAP_DT_F32, want, 4, shp3);
    dap_st_writer_add(w, "extra", DAP_DT_F32, want, 4, shp3);
    CHECK(dap_st_writer_save(w, path) == DAP_OK);
    dap_st_writer_destroy(w);
    free(key);
    CHECK(dap_latent_cache_class(v, &c, &f, 1, &b, &st) == DAP_OK && st == DAP_LATENT_CACHE_DAMAGED);
    dap_free_aligned(b);
    free(path);
    dap_free_aligned(a), dap_free_aligned(x), dap_free_aligned(want);
    dap_image_files_free(&f);
    dap_vae_destroy(v);
}

/* Writes the command-line tests' inputs: DIR/dit.safetensors (latent DiT, 1000 classes,
 * 4x4x4 latents), DIR/vae.safetensors (factor 8: 32 px), DIR/nette/{train,val}/ with three
 * ImageNette wnids, and checks that the files load back. */
DAP_TEST(latent_fixture) {
    const char *env = getenv("DAP_LATENT_FIXTURE_DIR");
    const char *dir = env && *env ? env : dap_test_path("fixture");
    mkdirs(dir);
    char p[1100];
    dap_dit *m = tiny_latent_dit();
    dap_vae *v = tiny_vae();
    if (!m || !v) return;
    snprintf(p, sizeof p, "%s/dit.safetensors", dir);
    CHECK(dap_dit_save(m, p) == DAP_OK);
    dap_dit *back = NULL;
    CHECK(dap_dit_load(&back, p, 0, 0) == DAP_OK && back && back->cfg.in_channels == 4 && back->cfg.num_classes == 1000);
    if (back) dap_dit_destroy(back);
    CHECK(dap_vae_file_is_vae(p) == 0);
    snprintf(p, sizeof p, "%s/vae.safetensors", dir);
    const char *const meta[] = {"norm_num_groups", "4", NULL}; /* in no shape: the loader reads it here */
    CHECK(dap_params_save(dap_vae_params(v), p, 0, meta) == DAP_OK);
    CHECK(dap_vae_file_is_vae(p) == 1);
    dap_vae *vb = NULL;
    CHECK(dap_vae_load(&vb, p) == DAP_OK && vb && dap_vae_factor(dap_vae_get_config(vb)) == 8);
    if (vb) dap_vae_destroy(vb);
    snprintf(p, sizeof p, "%s/nette", dir);
    write_wnid_folder(p, k_three, 3, 5, 44, 40);
    dap_dit_destroy(m);
    dap_vae_destroy(v);
}

/* An official-architecture DiT saved with torch.save and converted by
 * scripts/convert-dit.py loads by shape inference (no metadata) and gives PyTorch's output.
 * The committed fixture (tests/gen/dit_official_ref.py --ref) tests the loader without
 * Python; tests/cli/latent.sh points DAP_DIT_CONVERTED at a fresh conversion when torch
 * is there. */
DAP_TEST(dit_official_converted) {
    const char *dir = getenv("DAP_DIT_CONVERTED");
    char mp[1100], iop[1100];
    if (dir && *dir) {
        snprintf(mp, sizeof mp, "%s/dit_official_tiny.safetensors", dir);
        snprintf(iop, sizeof iop, "%s/dit_official_tiny_io.safetensors", dir);
    } else {
        snprintf(mp, sizeof mp, "%s", dap_test_ref("dit_official_tiny.safetensors"));
        snprintf(iop, sizeof iop, "%s", dap_test_ref("dit_official_tiny_io.safetensors"));
    }
    dap_dit_config c;
    CHECK(dap_dit_config_from_file(mp, &c) == DAP_OK);
    CHECK(c.input_size == 8 && c.in_channels == 4 && c.patch == 2 && c.hidden == 64 && c.depth == 2 && c.heads == 2 &&
          c.num_classes == 10 && c.learn_sigma == 1);
    dap_dit *m = NULL;
    CHECK(dap_dit_load(&m, mp, 0, 0) == DAP_OK);
    dap_st *io = NULL;
    CHECK(dap_st_open(&io, iop) == DAP_OK);
    if (!m || !io) return;
    float x[3 * 4 * 8 * 8], t[3], yf[3], want[3 * 8 * 8 * 8], got[3 * 8 * 8 * 8];
    CHECK(dap_st_read_f32(io, "x", x, NULL, 0) == DAP_OK && dap_st_read_f32(io, "t", t, NULL, 0) == DAP_OK);
    CHECK(dap_st_read_f32(io, "y", yf, NULL, 0) == DAP_OK && dap_st_read_f32(io, "out", want, NULL, 0) == DAP_OK);
    int y[3] = {(int)yf[0], (int)yf[1], (int)yf[2]};
    dap_dit_state *s = dap_dit_state_create(m, 3);
    dap_dit_forward(m, s, got, x, t, y, 0);
    CHECK(dap_test_compare("converted official DiT vs PyTorch", got, want, sizeof got / sizeof got[0], 1e-2) < 1e-3);
    dap_dit_state_destroy(s);
    dap_dit_destroy(m);
    dap_st_close(io);
}

/* A latent model's samples are the DiT's latents as they come (opts.latent): never
 * clamped to [-1, 1] as pixel samples are. */
DAP_TEST(distill_latent_not_clamped) {
    dap_dit *m = tiny_latent_dit();
    if (!m) return;
    const int M = 1000, n = 4, k = 217, per = 4 * 4 * 4;
    dap_dataset ds = {0};
    ds.n = n, ds.c = 4, ds.h = ds.w = 4, ds.num_classes = M;
    ds.class_names = dap_malloc(sizeof(char *) * M);
    for (int q = 0; q < M; q++) ds.class_names[q] = dap_strdup(dap_imagenet_wnid(q));
    ds.x = dap_alloc_f32((size_t)n * per);
    ds.y = dap_malloc(sizeof(int) * n);
    dap_rng r;
    dap_rng_init(&r, 9, 0);
    dap_rng_normal(&r, ds.x, (size_t)n * per, 0.0f, 1.0f);
    for (int i = 0; i < n; i++) ds.y[i] = k;
    dap_dataset_index(&ds);
    dap_distill_opts o;
    dap_distill_opts_default(&o);
    o.method = DAP_METHOD_DAP, o.ipc = 3, o.steps = 4, o.n_real = 3, o.layer = 1;
    float out[3 * 64];
    dap_distill_stats st;
    double maxabs[2] = {0, 0};
    for (int latent = 0; latent < 2; latent++) {
        o.latent = latent;
        CHECK(dap_distill_class(m, &ds, k, &o, out, &st) == DAP_OK);
        for (int q = 0; q < 3 * per; q++) maxabs[latent] = fmax(maxabs[latent], fabs(out[q]));
    }
    printf("  max |sample|: pixel mode %.3f, latent mode %.3f\n", maxabs[0], maxabs[1]);
    CHECK(maxabs[0] <= 1.0 && maxabs[1] > 1.0);
    dap_dataset_free(&ds);
    dap_dit_destroy(m);
}
