/*
 * test_owndata.c: a user's own data: the pixel DiT families sized from the data, the
 * capped per-class validation share, the train/test folder layouts and the refusal to
 * test a set on its own training images, the preprocessing note, and the checkpoint's
 * record of its training data.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/core.h"
#include "data/dataset.h"
#include "io/io.h"
#include "models/dit.h"
#include "test.h"

DAP_TEST(owndata_px_configs) {
    /* the patch from the size: the divisor whose grid is nearest 8x8 */
    const int sizes[] = {8, 12, 16, 28, 32, 64, 11}, patch[] = {1, 2, 2, 4, 4, 8, 1};
    for (int i = 0; i < 7; i++)
        CHECK_MSG(dap_dit_auto_patch(sizes[i]) == patch[i], "size %d: patch %d, expected %d", sizes[i],
                  dap_dit_auto_patch(sizes[i]), patch[i]);
    dap_dit_config c, fm;
    CHECK(dap_dit_config_by_name("px-S", &c) == DAP_OK);
    CHECK(c.input_size == 0 && c.in_channels == 0 && c.num_classes == 0 && c.patch == 0 && c.hidden == 192);
    CHECK(dap_dit_config_fit(&c, 16, 3, 12) == DAP_OK);
    CHECK(c.input_size == 16 && c.in_channels == 3 && c.num_classes == 12 && c.patch == 2);
    CHECK(dap_dit_config_by_name("px-S/2", &c) == DAP_OK && c.patch == 2);
    CHECK(dap_dit_config_fit(&c, 8, 1, 10) == DAP_OK && c.patch == 2);
    /* px-B on Fashion-MNIST's geometry is the shipped prior's config */
    CHECK(dap_dit_config_by_name("px-B", &c) == DAP_OK && dap_dit_config_fit(&c, 28, 1, 10) == DAP_OK);
    CHECK(dap_dit_config_by_name("fm-p4-h256-d8", &fm) == DAP_OK);
    CHECK(!memcmp(&c, &fm, sizeof c));
    /* a fixed geometry stays fixed; a patch must divide the size */
    CHECK(dap_dit_config_by_name("fm-tiny", &c) == DAP_OK);
    CHECK(dap_dit_config_fit(&c, 28, 1, 12) == DAP_ERR_ARG);
    CHECK_MSG(strstr(dap_last_error(), "10 classes, the data has 12"), "%s", dap_last_error());
    CHECK(dap_dit_config_by_name("fm-tiny", &c) == DAP_OK && dap_dit_config_fit(&c, 16, 1, 10) == DAP_ERR_ARG);
    CHECK(dap_dit_config_by_name("px-T/3", &c) == DAP_OK && dap_dit_config_fit(&c, 16, 3, 4) == DAP_ERR_ARG);
    CHECK_MSG(strstr(dap_last_error(), "patch 3 does not divide the image size 16"), "%s", dap_last_error());
    CHECK(dap_dit_config_by_name("px-T/0", &c) == DAP_ERR_ARG);
    CHECK(dap_dit_config_by_name("px-Q", &c) == DAP_ERR_ARG);
    CHECK_MSG(strstr(dap_last_error(), "px-S[/P]"), "%s", dap_last_error());
    char help[2048];
    dap_dit_configs_help(help, sizeof help);
    CHECK_MSG(strstr(help, "16 px p2 (64)") && strstr(help, "px-L"), "%s", help);
}

/* a hand-made set: class k has counts[k] images whose single pixel is their index */
static void make_set(dap_dataset *ds, const int *counts, int K) {
    memset(ds, 0, sizeof *ds);
    for (int k = 0; k < K; k++) ds->n += counts[k];
    ds->c = ds->h = ds->w = 1;
    ds->num_classes = K;
    ds->class_names = dap_malloc(sizeof(char *) * (size_t)K);
    for (int k = 0; k < K; k++) {
        char b[16];
        snprintf(b, sizeof b, "c%d", k);
        ds->class_names[k] = dap_strdup(b);
    }
    ds->x = dap_alloc_f32((size_t)ds->n);
    ds->y = dap_malloc(sizeof(int) * (size_t)ds->n);
    for (int k = 0, i = 0; k < K; k++)
        for (int j = 0; j < counts[k]; j++, i++) ds->x[i] = (float)i, ds->y[i] = k;
    dap_dataset_index(ds);
}

DAP_TEST(owndata_split_fraction) {
    const int counts[] = {1, 5, 30, 2000};
    dap_dataset ds, tr, va, tr2, va2;
    make_set(&ds, counts, 4);
    const int most = dap_dataset_split_fraction(&ds, 0.1, 100, 7, &tr, &va);
    /* floor(10%), capped at 100, never the last training image */
    CHECK(most == 100);
    CHECK(va.class_count[0] == 0 && va.class_count[1] == 0 && va.class_count[2] == 3 && va.class_count[3] == 100);
    CHECK(tr.n + va.n == ds.n && tr.class_count[0] == 1);
    /* a class's v held-out images are those the fixed-count split holds out with v */
    dap_dataset_split(&ds, 3, 7, &tr2, &va2);
    for (int j = 0; j < 3; j++)
        CHECK(va.x[va.class_idx[2][j]] == va2.x[va2.class_idx[2][j]]);
    dap_dataset_free(&tr2), dap_dataset_free(&va2);
    dap_dataset_split(&ds, 100, 7, &tr2, &va2); /* Fashion-MNIST's old default: the same split */
    for (int j = 0; j < 100; j++) CHECK(va.x[va.class_idx[3][j]] == va2.x[va2.class_idx[3][j]]);
    dap_dataset_free(&tr2), dap_dataset_free(&va2);
    dap_dataset_free(&tr), dap_dataset_free(&va);
    dap_dataset_split_fraction(&ds, 0.5, 100, 7, &tr, &va);
    CHECK(va.class_count[1] == 2 && va.class_count[2] == 15 && va.class_count[0] == 0);
    dap_dataset_free(&tr), dap_dataset_free(&va);
    dap_dataset_free(&ds);
}

static void png_gray(const char *dir, const char *name, int size, uint8_t v) {
    DAP_ASSERT(strlen(dir) < 4000);
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t *px = malloc((size_t)size * size);
    memset(px, v, (size_t)size * size);
    CHECK(dap_png_write(path, px, size, size, 1) == DAP_OK);
    free(px);
}

static void mkdirs(const char *p) { CHECK_MSG(dap_mkdir_p(p) == DAP_OK, "%s", p); }

DAP_TEST(owndata_folder_layouts) {
    /* ROOT/train/{a,b} (value 10 + class), ROOT/test/{a,b} (value 200 + class), 8x8 gray */
    const char *cls[2] = {"a", "b"};
    char d[4096];
    for (int k = 0; k < 2; k++) {
        snprintf(d, sizeof d, "%s/own/train/%s", dap_test_tmpdir(), cls[k]);
        mkdirs(d);
        png_gray(d, "0.png", 8, (uint8_t)(10 + k));
        png_gray(d, "1.png", 8, (uint8_t)(10 + k));
        snprintf(d, sizeof d, "%s/own/test/%s", dap_test_tmpdir(), cls[k]);
        mkdirs(d);
        png_gray(d, "0.png", 8, (uint8_t)(200 + k));
    }
    char root[4096], train_dir[4096], test_dir[4096];
    snprintf(root, sizeof root, "%s", dap_test_path("own"));
    snprintf(train_dir, sizeof train_dir, "%s", dap_test_path("own/train"));
    snprintf(test_dir, sizeof test_dir, "%s", dap_test_path("own/test"));
    dap_dataset tr, te;
    CHECK(dap_dataset_has_splits(root) && !dap_dataset_has_splits(train_dir));
    CHECK(dap_dataset_load(&tr, root, "train", 0, 0) == DAP_OK);
    CHECK(tr.n == 4 && tr.h == 8 && tr.c == 1 && tr.num_classes == 2);
    CHECK_NEAR(tr.x[0], 10 / 127.5 - 1, 1e-6);
    CHECK(dap_dataset_load(&te, root, "test", 0, 0) == DAP_OK);
    CHECK(te.n == 2);
    CHECK_NEAR(te.x[0], 200 / 127.5 - 1, 1e-6);
    CHECK(dap_dataset_hash(&tr) != dap_dataset_hash(&te));
    char note[256];
    CHECK(dap_dataset_prep_note(&te, note, sizeof note) == 0 && note[0] == 0);
    dap_dataset_free(&te);
    /* one set (no train/): its test split is refused, pointing at --test and the layout */
    CHECK(dap_dataset_load(&te, train_dir, "test", 0, 0) == DAP_ERR_ARG);
    CHECK_MSG(strstr(dap_last_error(), "--test DIR") && strstr(dap_last_error(), "ROOT/test/<class>/"), "%s",
              dap_last_error());
    /* --test DIR: a plain folder is all test images; a split layout gives its test split */
    CHECK(dap_dataset_load_test(&te, train_dir, test_dir, 8, 1) == DAP_OK && te.n == 2);
    dap_dataset_free(&te);
    CHECK(dap_dataset_load_test(&te, "unused", root, 8, 1) == DAP_OK && te.n == 2);
    CHECK_NEAR(te.x[0], 200 / 127.5 - 1, 1e-6);
    dap_dataset_free(&te);
    /* the paths the splits read */
    char *p_tr = dap_dataset_split_path(root, "train"), *p_te = dap_dataset_split_path(root, "test"),
         *p_one = dap_dataset_split_path(train_dir, "train");
    CHECK(p_tr && p_te && p_one && !strcmp(p_tr, p_one) && strcmp(p_tr, p_te) && strstr(p_te, "own/test"));
    free(p_tr), free(p_te), free(p_one);
    CHECK(dap_dataset_split_path("fmnist", "test") == NULL);
    /* converted on load, and said so */
    dap_dataset big;
    CHECK(dap_dataset_load(&big, root, "train", 16, 3) == DAP_OK);
    CHECK(dap_dataset_prep_note(&big, note, sizeof note) == 1);
    CHECK_MSG(!strcmp(note, "resized 8x8 -> 16x16, gray -> RGB (4 images)"), "%s", note);
    dap_dataset_free(&big);
    /* test/ missing: val/ serves; neither: refused */
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s", test_dir);
    snprintf(b, sizeof b, "%s", dap_test_path("own/val"));
    CHECK(rename(a, b) == 0);
    CHECK(dap_dataset_load(&te, root, "test", 0, 0) == DAP_OK && te.n == 2);
    dap_dataset_free(&te);
    snprintf(a, sizeof a, "%s", dap_test_path("own/val-away"));
    CHECK(rename(b, a) == 0);
    CHECK(dap_dataset_load(&te, root, "test", 0, 0) == DAP_ERR_ARG);
    CHECK_MSG(strstr(dap_last_error(), "neither test/ nor val/"), "%s", dap_last_error());
    dap_dataset_free(&tr);
}

DAP_TEST(owndata_checkpoint_records_data) {
    dap_dit_config c;
    CHECK(dap_dit_config_by_name("px-T", &c) == DAP_OK && dap_dit_config_fit(&c, 8, 3, 3) == DAP_OK);
    dap_dit *m;
    CHECK(dap_dit_create(&m, &c, 0) == DAP_OK);
    dap_dit_init(m, 1);
    char *names[3] = {"Ice plant", "b", "c/d"};
    dap_dit_set_class_names(m, names, 3);
    dap_dit_set_train_data(m, "/data/own");
    const char *path = dap_test_path("own-model.safetensors");
    CHECK(dap_dit_save(m, path) == DAP_OK);
    dap_dit *back;
    CHECK(dap_dit_load(&back, path, 0, 0) == DAP_OK);
    CHECK(back->train_data && !strcmp(back->train_data, "/data/own"));
    CHECK(back->class_names && !strcmp(back->class_names[0], "Ice plant") && !strcmp(back->class_names[2], "c/d"));
    CHECK(back->cfg.input_size == 8 && back->cfg.in_channels == 3 && back->cfg.num_classes == 3);
    char *rec;
    CHECK(dap_dit_train_data_from_file(path, &rec) == DAP_OK && rec && !strcmp(rec, "/data/own"));
    free(rec);
    dap_dit_destroy(back);
    /* without names the record still round-trips, and a model without either has neither */
    dap_dit_set_class_names(m, NULL, 0);
    CHECK(dap_dit_save(m, path) == DAP_OK && dap_dit_load(&back, path, 0, 0) == DAP_OK);
    CHECK(back->train_data && !strcmp(back->train_data, "/data/own") && !back->class_names);
    dap_dit_destroy(back);
    dap_dit_set_train_data(m, NULL);
    CHECK(dap_dit_save(m, path) == DAP_OK && dap_dit_train_data_from_file(path, &rec) == DAP_OK && rec == NULL);
    dap_dit_destroy(m);
}
