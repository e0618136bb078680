/*
 * imagenet.c: ImageNet-1K's class table, the built-in subsets, and ImageNet-style
 * folders listed and decoded class by class (see imagenet.h).
 */
#include "data/imagenet.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/core.h"
#include "io/io.h"

static const struct {
    const char *wnid, *name;
} k_classes[DAP_IMAGENET_CLASSES] = {
#include "data/imagenet_classes.inc"
};

static const char *k_wnids[DAP_IMAGENET_CLASSES];

/* The subsets' wnids, sorted. Sources:
 *  imagenette, imagewoof: fast.ai's imagenette2 / imagewoof2 (github.com/fastai/imagenette),
 *    the same lists as MinimaxDiffusion's misc/class_nette.txt and misc/class_woof.txt;
 *  imageidc: IDC's ImageNet-10 (snu-mllab/Efficient-Dataset-Condensation: the first 10 lines
 *    of its class100.txt, CMC's ImageNet-100 list), as CoDA's misc/class_IDC.txt lists them. */
static const char *const k_nette[10] = {"n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                                        "n03394916", "n03417042", "n03425413", "n03445777", "n03888257"};
static const char *const k_woof[10] = {"n02086240", "n02087394", "n02088364", "n02089973", "n02093754",
                                       "n02096294", "n02099601", "n02105641", "n02111889", "n02115641"};
static const char *const k_idc[10] = {"n01749939", "n01773797", "n02091831", "n02107142", "n02488291",
                                      "n02869837", "n03062245", "n04517823", "n04589890", "n13037406"};
static const dap_imagenet_subset k_subsets[] = {
    {"imagenette", 10, k_nette},
    {"imagewoof", 10, k_woof},
    {"imageidc", 10, k_idc},
    {"imagenet", DAP_IMAGENET_CLASSES, NULL},
};

const char *dap_imagenet_wnid(int index) {
    return index >= 0 && index < DAP_IMAGENET_CLASSES ? k_classes[index].wnid : NULL;
}
const char *dap_imagenet_name(int index) {
    return index >= 0 && index < DAP_IMAGENET_CLASSES ? k_classes[index].name : NULL;
}

int dap_imagenet_index(const char *wnid) {
    int lo = 0, hi = DAP_IMAGENET_CLASSES - 1; /* the table is in wnid order */
    while (lo <= hi) {
        const int mid = (lo + hi) / 2, c = strcmp(wnid, k_classes[mid].wnid);
        if (c == 0) return mid;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

const char *const *dap_imagenet_wnids(void) {
    if (!k_wnids[DAP_IMAGENET_CLASSES - 1]) /* filled once; the same values on every call */
        for (int i = 0; i < DAP_IMAGENET_CLASSES; i++) k_wnids[i] = k_classes[i].wnid;
    return k_wnids;
}

const dap_imagenet_subset *dap_imagenet_subset_find(const char *name) {
    for (size_t i = 0; i < sizeof k_subsets / sizeof k_subsets[0]; i++)
        if (!strcmp(name, k_subsets[i].name)) return &k_subsets[i];
    return NULL;
}

static int subset_has(const dap_imagenet_subset *s, const char *wnid) {
    if (!s->wnids) return dap_imagenet_index(wnid) >= 0;
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->wnids[i], wnid)) return 1;
    return 0;
}

int dap_imagenet_spec(const char *spec, const dap_imagenet_subset **sub, const char **dir) {
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= 32) return 0;
    char name[32];
    memcpy(name, spec, (size_t)(colon - spec));
    name[colon - spec] = 0;
    const dap_imagenet_subset *s = dap_imagenet_subset_find(name);
    if (!s) return 0;
    *sub = s;
    *dir = colon + 1;
    return 1;
}

/* ---- listing ----------------------------------------------------------------- */
static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}
static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}
static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = dap_malloc(n);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

/* Sorted subfolders (dirs) or image files of dir, hidden names skipped; *n entries. */
static int list_dir(const char *dir, int dirs, char ***out, int *n) {
    *out = NULL, *n = 0;
    DIR *d = opendir(dir);
    if (!d) return dap_error(DAP_ERR_IO, "%s: cannot open folder (%s)", dir, strerror(errno));
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char *p = join(dir, e->d_name);
        int ok = dirs ? is_dir(p) : is_file(p) && has_image_ext(e->d_name);
        if (ok) {
            if (*n == cap) cap = cap ? 2 * cap : 64, *out = dap_realloc(*out, sizeof(char *) * (size_t)cap);
            (*out)[(*n)++] = dirs ? dap_strdup(e->d_name) : p;
        }
        if (!ok || dirs) free(p);
    }
    closedir(d);
    if (*n) qsort(*out, (size_t)*n, sizeof(char *), cmp_str);
    return DAP_OK;
}

void dap_image_files_free(dap_image_files *f) {
    for (int k = 0; k < f->num_classes; k++) {
        if (f->class_names) free(f->class_names[k]);
        for (int i = 0; f->files && f->files[k] && i < f->count[k]; i++) free(f->files[k][i]);
        if (f->files) free(f->files[k]);
    }
    free(f->class_names), free(f->files), free(f->count), free(f->root);
    memset(f, 0, sizeof *f);
}

int dap_image_files_list(dap_image_files *f, const char *spec, const char *split) {
    memset(f, 0, sizeof *f);
    if (!split) split = "train";
    const dap_imagenet_subset *sub = NULL;
    const char *dir = NULL;
    if (dap_imagenet_spec(spec, &sub, &dir)) {
        f->root = join(dir, strcmp(split, "test") == 0 ? "val" : "train");
        if (!is_dir(f->root)) {
            int rc = dap_error(DAP_ERR_MISSING, "%s: no folder %s (%s data: wnid folders under %s/train and %s/val)", spec,
                               f->root, sub->name, dir, dir);
            dap_image_files_free(f);
            return rc;
        }
    } else {
        if (!is_dir(spec)) return dap_error(DAP_ERR_MISSING, "%s: not an image folder nor SUBSET:DIR "
                                                             "(imagenette, imagewoof, imageidc, imagenet)", spec);
        char *tr = join(spec, "train"), *te = join(spec, "test");
        f->root = is_dir(tr) && is_dir(te) ? join(spec, split) : dap_strdup(spec);
        free(tr), free(te);
    }
    int rc = list_dir(f->root, 1, &f->class_names, &f->num_classes);
    if (rc == DAP_OK && f->num_classes == 0)
        rc = dap_error(DAP_ERR_FORMAT, "%s: no class subfolders (expected %s/<class>/<image>)", f->root, f->root);
    if (rc == DAP_OK && sub) { /* every folder must be a class of the subset */
        char bad[512] = "";
        size_t len = 0;
        int nbad = 0;
        for (int k = 0; k < f->num_classes; k++)
            if (!subset_has(sub, f->class_names[k])) {
                if (nbad++ < 5 && len < sizeof bad)
                    len += (size_t)snprintf(bad + len, sizeof bad - len, "%s'%s'", nbad > 1 ? ", " : "", f->class_names[k]);
            }
        if (nbad)
            rc = dap_error(DAP_ERR_FORMAT, "%s: %d folder%s not %s of %s: %s%s (expected the subset's wnid folders; "
                                           "give another subset, or imagenet:DIR for any ImageNet-1K wnid)",
                           f->root, nbad, nbad > 1 ? "s are" : " is", sub->wnids ? "a class" : "an ImageNet-1K wnid",
                           sub->name, bad, nbad > 5 ? ", ..." : "");
    }
    if (rc == DAP_OK) {
        f->count = dap_calloc((size_t)f->num_classes, sizeof(int));
        f->files = dap_calloc((size_t)f->num_classes, sizeof(char **));
    }
    for (int k = 0; rc == DAP_OK && k < f->num_classes; k++) {
        char *cdir = join(f->root, f->class_names[k]);
        rc = list_dir(cdir, 0, &f->files[k], &f->count[k]);
        if (rc == DAP_OK && f->count[k] == 0)
            rc = dap_error(DAP_ERR_FORMAT, "%s: class folder holds no .png/.jpg/.jpeg images", cdir);
        free(cdir);
    }
    if (rc != DAP_OK) dap_image_files_free(f);
    return rc;
}

int dap_image_files_load_class(const dap_image_files *f, int k, int size, int channels, int crop, float *x) {
    DAP_ASSERT(k >= 0 && k < f->num_classes && size > 0 && (channels == 1 || channels == 3));
    DAP_ASSERT(crop == DAP_CROP_RESIZE || crop == DAP_CROP_ADM);
    DAP_ASSERT(crop == DAP_CROP_RESIZE || channels == 3);
    const size_t per = (size_t)channels * size * size;
    int *bad = dap_calloc((size_t)f->count[k] + 1, sizeof(int));
#pragma omp parallel for schedule(dynamic, 4)
    for (int i = 0; i < f->count[k]; i++) {
        dap_image8 im;
        if (dap_image_read(f->files[k][i], &im) != DAP_OK) {
            bad[i] = 1;
            continue;
        }
        uint8_t *px = dap_malloc(per);
        if (crop == DAP_CROP_ADM) dap_image_center_crop_adm(&im, size, px);
        else dap_image_resize_crop(&im, size, channels, px);
        dap_image_from_u8(px, channels, size, size, x + per * (size_t)i);
        free(px);
        dap_image8_free(&im);
    }
    int rc = DAP_OK;
    for (int i = 0; i < f->count[k] && rc == DAP_OK; i++)
        if (bad[i]) { /* read again serially for the message */
            dap_image8 im;
            rc = dap_image_read(f->files[k][i], &im);
            if (rc == DAP_OK) {
                dap_image8_free(&im);
                rc = dap_error(DAP_ERR_IO, "%s: could not be read", f->files[k][i]);
            }
        }
    free(bad);
    return rc;
}

int dap_imagenet_load(dap_dataset *ds, const char *spec, const char *split, int size, int channels) {
    memset(ds, 0, sizeof *ds);
    if (size <= 0)
        return dap_error(DAP_ERR_ARG, "%s: ImageNet images differ in size; give the resolution to resize and crop "
                                      "them to (e.g. --image-size 256)", spec);
    dap_image_files f;
    DAP_TRY(dap_image_files_list(&f, spec, split));
    ds->c = channels > 0 ? channels : 3, ds->h = ds->w = size, ds->num_classes = f.num_classes;
    for (int k = 0; k < f.num_classes; k++) ds->n += f.count[k];
    const size_t per = (size_t)ds->c * size * size;
    ds->class_names = dap_malloc(sizeof(char *) * (size_t)f.num_classes);
    for (int k = 0; k < f.num_classes; k++) ds->class_names[k] = dap_strdup(f.class_names[k]);
    ds->x = dap_alloc_f32(per * (size_t)ds->n);
    ds->y = dap_malloc(sizeof(int) * (size_t)ds->n);
    int rc = DAP_OK;
    for (int k = 0, i0 = 0; k < f.num_classes && rc == DAP_OK; i0 += f.count[k], k++) {
        rc = dap_image_files_load_class(&f, k, size, ds->c, DAP_CROP_RESIZE, ds->x + per * (size_t)i0);
        for (int i = 0; i < f.count[k]; i++) ds->y[i0 + i] = k;
    }
    dap_image_files_free(&f);
    if (rc == DAP_OK) dap_dataset_index(ds);
    else dap_dataset_free(ds);
    return rc;
}
