/*
 * subset.c: random real subsets and class matching (see subset.h).
 */
#include "eval/subset.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

int dap_random_subset(dap_dataset *out, const dap_dataset *ds, int ipc, uint64_t seed) {
    if (ipc < 1) return dap_error(DAP_ERR_ARG, "--ipc must be at least 1 (got %d)", ipc);
    for (int k = 0; k < ds->num_classes; k++)
        if (ds->class_count[k] < ipc)
            return dap_error(DAP_ERR_VALUE, "class %d (%s) has %d images, fewer than ipc %d", k,
                             ds->class_names ? ds->class_names[k] : "?", ds->class_count[k], ipc);
    int *pick = dap_malloc((size_t)ds->num_classes * ipc * sizeof(int));
    int *tmp = dap_malloc((size_t)ds->n * sizeof(int));
    for (int k = 0; k < ds->num_classes; k++) {
        dap_rng r;
        dap_rng_init(&r, seed, 100 + (uint64_t)k); /* one stream per class */
        memcpy(tmp, ds->class_idx[k], (size_t)ds->class_count[k] * sizeof(int));
        dap_rng_shuffle(&r, tmp, (size_t)ds->class_count[k]);
        memcpy(pick + (size_t)k * ipc, tmp, (size_t)ipc * sizeof(int));
    }
    dap_dataset_subset(out, ds, pick, ds->num_classes * ipc);
    free(pick), free(tmp);
    return DAP_OK;
}

static void canon(char *dst, size_t cap, const char *s) {
    size_t j = 0;
    for (; *s && j + 1 < cap; s++)
        if (isalnum((unsigned char)*s)) dst[j++] = (char)tolower((unsigned char)*s);
    dst[j] = 0;
}

int dap_dataset_match_classes(dap_dataset *set, const dap_dataset *real) {
    int *map = dap_malloc((size_t)(set->num_classes > 0 ? set->num_classes : 1) * sizeof(int));
    for (int a = 0; a < set->num_classes; a++) {
        char ca[256], cb[256];
        canon(ca, sizeof ca, set->class_names[a]);
        map[a] = -1;
        for (int b = 0; b < real->num_classes && map[a] < 0; b++) {
            canon(cb, sizeof cb, real->class_names[b]);
            if (!strcmp(ca, cb)) map[a] = b;
        }
        const char *nm = set->class_names[a];
        if (map[a] < 0 && *nm && strspn(nm, "0123456789") == strlen(nm) && atoi(nm) < real->num_classes)
            map[a] = atoi(nm);
        if (map[a] < 0) {
            int rc = dap_error(DAP_ERR_MISSING,
                               "class folder '%s' matches none of the %d classes of the real data "
                               "(first: '%s')",
                               nm, real->num_classes, real->class_names[0]);
            free(map);
            return rc;
        }
    }
    for (int i = 0; i < set->n; i++) set->y[i] = map[set->y[i]];
    for (int a = 0; a < set->num_classes; a++) free(set->class_names[a]);
    free(set->class_names);
    set->class_names = dap_malloc((size_t)real->num_classes * sizeof(char *));
    for (int b = 0; b < real->num_classes; b++) set->class_names[b] = dap_strdup(real->class_names[b]);
    for (int k = 0; k < set->num_classes; k++) free(set->class_idx[k]);
    free(set->class_idx);
    free(set->class_count);
    set->class_idx = NULL, set->class_count = NULL;
    set->num_classes = real->num_classes;
    free(map);
    dap_dataset_index(set);
    return DAP_OK;
}
