/*
 * test_classmap.c: a DiT checkpoint's class names (metadata "class_names") and the
 * mapping of a dataset's classes onto the model's labels by name. The case that matters:
 * an image folder of Fashion-MNIST lists its classes alphabetically ("Ankle boot" first),
 * while the model's label of "Ankle boot" is 9.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/params.h"
#include "data/classmap.h"
#include "data/dataset.h"
#include "models/dit.h"
#include "test.h"

static dap_dit *tiny(void) {
    dap_dit_config c;
    dap_dit_config_by_name("fm-tiny", &c);
    dap_dit *m = NULL;
    if (dap_dit_create(&m, &c, 0) != DAP_OK) return NULL;
    dap_dit_init(m, 1);
    return m;
}

DAP_TEST(dit_class_names_roundtrip) {
    dap_dit *m = tiny();
    CHECK(m && m->class_names == NULL);
    if (!m) return;
    dap_dit_set_class_names(m, (char *const *)dap_fmnist_classes, 10);
    const char *path = dap_test_path("named.safetensors"), *half = dap_test_path("named16.safetensors");
    CHECK(dap_dit_save(m, path) == DAP_OK);
    CHECK(dap_dit_save_ex(m, half, 1) == DAP_OK);
    const char *files[] = {path, half};
    for (int f = 0; f < 2; f++) {
        dap_dit *m2 = NULL;
        int rc = dap_dit_load(&m2, files[f], 0, 0);
        CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
        if (rc) continue;
        CHECK(m2->class_names != NULL);
        for (int k = 0; m2->class_names && k < 10; k++)
            CHECK_MSG(!strcmp(m2->class_names[k], dap_fmnist_classes[k]), "label %d: '%s'", k, m2->class_names[k]);
        dap_dit_destroy(m2);
    }
    /* no names written: none read */
    dap_dit_set_class_names(m, NULL, 0);
    CHECK(m->class_names == NULL);
    const char *bare = dap_test_path("unnamed.safetensors");
    CHECK(dap_dit_save(m, bare) == DAP_OK);
    dap_dit *m3 = NULL;
    CHECK(dap_dit_load(&m3, bare, 0, 0) == DAP_OK);
    CHECK(m3 && m3->class_names == NULL);
    dap_dit_destroy(m3);
    dap_dit_destroy(m);
}

/* A file whose "class_names" disagrees with num_classes is refused, naming both counts. */
DAP_TEST(dit_class_names_count_refused) {
    dap_dit *m = tiny();
    if (!m) return;
    const char *bad[] = {"a\nb\nc", "a\n\nb\nc\nd\ne\nf\ng\nh\ni"};
    const char *want[] = {"3 names, expected 10", "empty name"};
    for (int i = 0; i < 2; i++) {
        char v[10][32];
        const dap_dit_config *c = &m->cfg;
        snprintf(v[0], 32, "%d", c->input_size), snprintf(v[1], 32, "%d", c->in_channels);
        snprintf(v[2], 32, "%d", c->patch), snprintf(v[3], 32, "%d", c->hidden);
        snprintf(v[4], 32, "%d", c->depth), snprintf(v[5], 32, "%d", c->heads);
        snprintf(v[6], 32, "%d", c->num_classes), snprintf(v[7], 32, "%d", c->learn_sigma);
        snprintf(v[8], 32, "%.9g", c->mlp_ratio), snprintf(v[9], 32, "%.9g", c->class_dropout);
        const char *meta[] = {"model", "dit", "input_size", v[0], "in_channels", v[1], "patch", v[2], "hidden", v[3],
                              "depth", v[4], "heads", v[5], "num_classes", v[6], "learn_sigma", v[7], "mlp_ratio",
                              v[8], "class_dropout", v[9], "class_names", bad[i], NULL};
        const char *path = dap_test_path("badnames.safetensors");
        CHECK(dap_params_save(&m->params, path, 0, meta) == DAP_OK);
        dap_dit *m2 = NULL;
        int rc = dap_dit_load(&m2, path, 0, 0);
        CHECK(rc == DAP_ERR_FORMAT && m2 == NULL);
        CHECK_MSG(strstr(dap_last_error(), want[i]) && strstr(dap_last_error(), "class_names"), "message: %s",
                  dap_last_error());
        dap_dit_destroy(m2);
    }
    dap_dit_destroy(m);
}

/* A dataset shell with the given class names (only names matter to the mapping). */
static void names_only(dap_dataset *ds, const char *const *names, int K) {
    memset(ds, 0, sizeof *ds);
    ds->num_classes = K;
    ds->class_names = (char **)names;
}

DAP_TEST(class_map_by_name) {
    /* a Fashion-MNIST image folder: its classes in alphabetical folder order */
    const char *folder[10] = {"Ankle boot", "Bag", "Coat", "Dress", "Pullover",
                              "Sandal", "Shirt", "Sneaker", "T-shirt_top", "Trouser"};
    const int want[10] = {9, 8, 4, 3, 2, 5, 6, 7, 0, 1};
    dap_dataset ds;
    names_only(&ds, folder, 10);
    int lab[10];
    int rc = dap_class_map(dap_fmnist_classes, 10, &ds, lab, "m.safetensors");
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    for (int k = 0; rc == DAP_OK && k < 10; k++)
        CHECK_MSG(lab[k] == want[k], "data class %d '%s': label %d, expected %d", k, folder[k], lab[k], want[k]);
    /* the IDX order is the label order: identity */
    names_only(&ds, dap_fmnist_classes, 10);
    CHECK(dap_class_map(dap_fmnist_classes, 10, &ds, lab, "m.safetensors") == DAP_OK);
    for (int k = 0; k < 10; k++) CHECK(lab[k] == k);
    /* a class the model does not know: refused, naming it and some model names */
    const char *odd[2] = {"Trouser", "Hat"};
    names_only(&ds, odd, 2);
    CHECK(dap_class_map(dap_fmnist_classes, 10, &ds, lab, "m.safetensors") == DAP_ERR_MISSING);
    CHECK_MSG(strstr(dap_last_error(), "'Hat'") && strstr(dap_last_error(), "'T-shirt/top'") &&
                  strstr(dap_last_error(), "m.safetensors"),
              "message: %s", dap_last_error());
    /* two data classes for one label */
    const char *twice[2] = {"T-shirt/top", "T-shirt_top"};
    names_only(&ds, twice, 2);
    CHECK(dap_class_map(dap_fmnist_classes, 10, &ds, lab, "m.safetensors") == DAP_ERR_VALUE);
    /* a model without names: classes named by number match, others are refused with the fix */
    const char *nums[3] = {"2", "0", "1"};
    names_only(&ds, nums, 3);
    CHECK(dap_class_map(NULL, 3, &ds, lab, "m.safetensors") == DAP_OK && lab[0] == 2 && lab[1] == 0 && lab[2] == 1);
    const char *big[1] = {"3"};
    names_only(&ds, big, 1);
    CHECK(dap_class_map(NULL, 3, &ds, lab, "m.safetensors") == DAP_ERR_MISSING);
    names_only(&ds, folder, 10);
    CHECK(dap_class_map(NULL, 10, &ds, lab, "m.safetensors") == DAP_ERR_MISSING);
    CHECK_MSG(strstr(dap_last_error(), "--class-names"), "message: %s", dap_last_error());
    /* the guess for dap's own unnamed 10-class 28x28x1 models */
    CHECK(dap_class_names_guess(10, 1, 28) == dap_fmnist_classes);
    CHECK(dap_class_names_guess(10, 3, 32) == NULL);
}

/* The shipped prior carries the Fashion-MNIST names in label order. */
DAP_TEST(shipped_model_class_names) {
    const char *roots[] = {"models/fmnist-dit.safetensors", "../models/fmnist-dit.safetensors"};
    const char *path = NULL;
    for (int i = 0; i < 2 && !path; i++)
        if (dap_file_exists(roots[i])) path = roots[i];
    CHECK_MSG(path, "models/fmnist-dit.safetensors not found");
    if (!path) return;
    dap_dit *m = NULL;
    CHECK(dap_dit_load(&m, path, 0, 0) == DAP_OK);
    CHECK(m && m->class_names);
    for (int k = 0; m && m->class_names && k < 10; k++) CHECK(!strcmp(m->class_names[k], dap_fmnist_classes[k]));
    dap_dit_destroy(m);
}
