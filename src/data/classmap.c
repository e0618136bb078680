/*
 * classmap.c: dataset classes to model labels by name (see classmap.h).
 */
#include "data/classmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "data/imagenet.h"

/* The label whose name is `name` (exact, then folder-safe), -1 if none. */
static int find_name(const char *const *names, int n, const char *name) {
    for (int j = 0; j < n; j++)
        if (!strcmp(names[j], name)) return j;
    int found = -1;
    for (int j = 0; j < n && found < 0; j++) {
        char *safe = dap_class_folder_name(names[j], j);
        if (!strcmp(safe, name)) found = j;
        free(safe);
    }
    return found;
}

static int label_number(const char *name, int n) {
    if (!*name || strspn(name, "0123456789") != strlen(name) || strlen(name) > 9) return -1;
    int v = atoi(name);
    return v < n ? v : -1;
}

int dap_class_map(const char *const *model_names, int n_model, const dap_dataset *ds, int *label_of_class,
                  const char *model_path) {
    const int K = ds->num_classes;
    for (int k = 0; k < K; k++) {
        const char *name = ds->class_names[k];
        int j = model_names ? find_name(model_names, n_model, name) : -1;
        if (j < 0) j = label_number(name, n_model);
        if (j < 0) {
            if (!model_names)
                return dap_error(DAP_ERR_MISSING,
                                 "data class '%s' cannot be matched to a label of %s: the model has no class names "
                                 "(only classes named 0..%d match); give it the names it was trained with, one per "
                                 "line in label order: dap export --model %s --class-names FILE --out NEW.safetensors",
                                 name, model_path, n_model - 1, model_path);
            char some[512] = "";
            size_t len = 0;
            for (int q = 0; q < n_model && q < 5 && len < sizeof some; q++)
                len += (size_t)snprintf(some + len, sizeof some - len, "%s'%s'", q ? ", " : "", model_names[q]);
            return dap_error(DAP_ERR_MISSING, "data class '%s' is not a class of the model %s (its %d classes: %s%s)",
                             name, model_path, n_model, some, n_model > 5 ? ", ..." : "");
        }
        for (int q = 0; q < k; q++)
            if (label_of_class[q] == j)
                return dap_error(DAP_ERR_VALUE, "data classes '%s' and '%s' both match label %d of %s",
                                 ds->class_names[q], name, j, model_path);
        label_of_class[k] = j;
    }
    return DAP_OK;
}

const char *const *dap_class_names_guess(int num_classes, int channels, int size) {
    if (num_classes == 10 && channels == 1 && size == 28) return dap_fmnist_classes;
    if (num_classes == DAP_IMAGENET_CLASSES) return dap_imagenet_wnids(); /* the official DiTs' labels */
    return NULL;
}
