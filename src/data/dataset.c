/*
 * dataset.c: labelled image sets in memory (float CHW in [-1, 1]). Sources:
 * Fashion-MNIST from the Debian package, an IDX image file with its labels file
 * beside it, or an image folder laid out as torchvision's ImageFolder (one subfolder
 * per class, class names = sorted subfolder names, files sorted; PNG or JPEG).
 * Also subsets, a seeded per-class split, and writing a set back out as a folder.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "data/dataset.h"
#include "data/imagenet.h"
#include "io/io.h"

const char *const dap_fmnist_classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                            "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = dap_malloc(n);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

const char *dap_fmnist_dir(void) {
    static const char *const dirs[] = {"/usr/share/datasets/fashion-mnist",
                                       "/usr/local/share/datasets/fashion-mnist"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char *f = join(dirs[i], "train-images-idx3-ubyte.gz");
        int ok = is_file(f);
        free(f);
        if (ok) return dirs[i];
    }
    dap_error(DAP_ERR_MISSING, "Fashion-MNIST not found in /usr/share/datasets/fashion-mnist "
                               "(install it: sudo apt-get install dataset-fashion-mnist, or `make deps`)");
    return NULL;
}

/* ---- bookkeeping ---------------------------------------------------------------- */
void dap_dataset_free(dap_dataset *ds) {
    for (int k = 0; k < ds->num_classes; k++) {
        if (ds->class_names) free(ds->class_names[k]);
        if (ds->class_idx) free(ds->class_idx[k]);
    }
    free(ds->class_names);
    free(ds->class_idx);
    free(ds->class_count);
    dap_free_aligned(ds->x);
    free(ds->y);
    memset(ds, 0, sizeof *ds);
}

void dap_dataset_index(dap_dataset *ds) {
    if (ds->class_idx)
        for (int k = 0; k < ds->num_classes; k++) free(ds->class_idx[k]);
    free(ds->class_idx);
    free(ds->class_count);
    ds->class_count = dap_calloc((size_t)ds->num_classes, sizeof(int));
    ds->class_idx = dap_calloc((size_t)ds->num_classes, sizeof(int *));
    for (int i = 0; i < ds->n; i++) {
        DAP_ASSERT(ds->y[i] >= 0 && ds->y[i] < ds->num_classes);
        ds->class_count[ds->y[i]]++;
    }
    for (int k = 0; k < ds->num_classes; k++)
        ds->class_idx[k] = dap_malloc(sizeof(int) * (size_t)(ds->class_count[k] + 1));
    int *fill = dap_calloc((size_t)ds->num_classes, sizeof(int));
    for (int i = 0; i < ds->n; i++) ds->class_idx[ds->y[i]][fill[ds->y[i]]++] = i;
    free(fill);
}

static size_t image_floats(const dap_dataset *ds) { return (size_t)ds->c * ds->h * ds->w; }

void dap_dataset_subset(dap_dataset *out, const dap_dataset *ds, const int *idx, int n) {
    DAP_ASSERT(n >= 0);
    memset(out, 0, sizeof *out);
    out->n = n;
    out->c = ds->c;
    out->h = ds->h;
    out->w = ds->w;
    out->num_classes = ds->num_classes;
    out->class_names = dap_malloc(sizeof(char *) * (size_t)(ds->num_classes + 1));
    for (int k = 0; k < ds->num_classes; k++) out->class_names[k] = dap_strdup(ds->class_names[k]);
    size_t per = image_floats(ds);
    out->x = dap_alloc_f32(per * (size_t)n);
    out->y = dap_malloc(sizeof(int) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) {
        DAP_ASSERT(idx[i] >= 0 && idx[i] < ds->n);
        memcpy(out->x + per * i, ds->x + per * idx[i], per * sizeof(float));
        out->y[i] = ds->y[idx[i]];
    }
    dap_dataset_index(out);
}

/* val_per_class >= 0: that many of every class; -1: v_of[k] of class k */
static void split_by(const dap_dataset *ds, int val_per_class, const int *v_of, unsigned long long seed,
                     dap_dataset *train, dap_dataset *val) {
    char *in_val = dap_calloc((size_t)ds->n + 1, 1);
    for (int k = 0; k < ds->num_classes; k++) {
        int cnt = ds->class_count[k], want = val_per_class >= 0 ? val_per_class : v_of[k];
        int v = want < cnt ? want : cnt;
        int *order = dap_malloc(sizeof(int) * (size_t)(cnt + 1));
        memcpy(order, ds->class_idx[k], sizeof(int) * (size_t)cnt);
        dap_rng r;
        dap_rng_init(&r, seed, (uint64_t)k);
        dap_rng_shuffle(&r, order, (size_t)cnt);
        for (int i = 0; i < v; i++) in_val[order[i]] = 1;
        free(order);
    }
    int *ti = dap_malloc(sizeof(int) * (size_t)(ds->n + 1)),
        *vi = dap_malloc(sizeof(int) * (size_t)(ds->n + 1));
    int nt = 0, nv = 0;
    for (int i = 0; i < ds->n; i++) {
        if (in_val[i])
            vi[nv++] = i;
        else
            ti[nt++] = i;
    }
    dap_dataset_subset(train, ds, ti, nt);
    dap_dataset_subset(val, ds, vi, nv);
    free(ti);
    free(vi);
    free(in_val);
}

void dap_dataset_split(const dap_dataset *ds, int val_per_class, unsigned long long seed, dap_dataset *train,
                       dap_dataset *val) {
    DAP_ASSERT(val_per_class >= 0 && ds->class_idx);
    split_by(ds, val_per_class, NULL, seed, train, val);
}

int dap_dataset_split_fraction(const dap_dataset *ds, double frac, int cap, unsigned long long seed,
                               dap_dataset *train, dap_dataset *val) {
    DAP_ASSERT(frac >= 0 && frac <= 1 && cap >= 0 && ds->class_idx);
    int *v = dap_calloc((size_t)ds->num_classes + 1, sizeof(int)), most = 0;
    for (int k = 0; k < ds->num_classes; k++) {
        const int cnt = ds->class_count[k];
        int q = (int)(frac * cnt + 1e-9);
        if (q > cap) q = cap;
        if (q > cnt - 1) q = cnt > 0 ? cnt - 1 : 0;
        v[k] = q;
        most = q > most ? q : most;
    }
    split_by(ds, -1, v, seed, train, val);
    free(v);
    return most;
}

unsigned long long dap_dataset_hash(const dap_dataset *ds) {
    uint64_t h = dap_fnv1a64(DAP_FNV1A64_INIT, ds->x, sizeof(float) * (size_t)ds->n * ds->c * ds->h * ds->w);
    return (unsigned long long)dap_fnv1a64(h, ds->y, sizeof(int) * (size_t)ds->n);
}

static const char *channels_name(int c) { return c == 1 ? "gray" : c == 3 ? "RGB" : "?"; }

int dap_dataset_prep_note(const dap_dataset *ds, char *buf, size_t n) {
    buf[0] = 0;
    if (!ds->n_resized && !ds->n_converted) return 0;
    size_t len = 0;
    if (ds->n_resized) {
        if (ds->n_resized == ds->n && (ds->src_h != ds->h || ds->src_w != ds->w))
            len += (size_t)snprintf(buf + len, n - len, "resized %dx%d -> %dx%d", ds->src_h, ds->src_w, ds->h, ds->w);
        else /* sizes differ between images */
            len += (size_t)snprintf(buf + len, n - len, "%d of %d images resized to %dx%d (the first is %dx%d)",
                                    ds->n_resized, ds->n, ds->h, ds->w, ds->src_h, ds->src_w);
        if (len < n && (ds->src_h != ds->src_w || ds->n_resized < ds->n))
            len += (size_t)snprintf(buf + len, n - len, " (shorter side, centre crop)");
    }
    if (ds->n_converted && len < n) {
        if (ds->src_c != ds->c) /* the first image's channels were converted */
            len += (size_t)snprintf(buf + len, n - len, "%s%s -> %s%s", len ? ", " : "", channels_name(ds->src_c),
                                    channels_name(ds->c), ds->c == 1 ? " (luma)" : "");
        else /* some others' (a grayscale JPEG among RGB ones) */
            len += (size_t)snprintf(buf + len, n - len, "%s%d of %d images converted to %s%s", len ? ", " : "",
                                    ds->n_converted, ds->n, channels_name(ds->c), ds->c == 1 ? " (luma)" : "");
    }
    if (len < n) snprintf(buf + len, n - len, " (%d images)", ds->n);
    return 1;
}

/* ---- IDX ------------------------------------------------------------------------ */
/* Converts one 8-bit HWC image to the dataset's (c, size, size) floats. Returns what
 * that changed: 1 resized, 2 converted channels (or both). */
static int put_image(dap_dataset *ds, int i, const dap_image8 *im) {
    float *dst = ds->x + image_floats(ds) * (size_t)i;
    if (im->h == ds->h && im->w == ds->w && im->c == ds->c) {
        dap_image_from_u8(im->px, ds->c, ds->h, ds->w, dst);
        return 0;
    }
    uint8_t *tmp = dap_malloc((size_t)ds->h * ds->w * ds->c);
    if (im->h == ds->h && im->w == ds->w && ds->h != ds->w) { /* channels only of a kept non-square size */
        for (size_t q = 0; q < (size_t)ds->h * ds->w; q++) {
            const uint8_t *p = im->px + q * (size_t)im->c;
            if (ds->c == 1) {
                const float v = 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2] + 0.5f;
                tmp[q] = (uint8_t)(v > 255.f ? 255.f : v);
            } else {
                for (int k = 0; k < 3; k++) tmp[q * 3 + k] = p[0];
            }
        }
    } else {
        dap_image_resize_crop(im, ds->h, ds->c, tmp);
    }
    dap_image_from_u8(tmp, ds->c, ds->h, ds->w, dst);
    free(tmp);
    return (im->h != ds->h || im->w != ds->w ? 1 : 0) | (im->c != ds->c ? 2 : 0);
}

static int load_idx_pair(dap_dataset *ds, const char *img_path, const char *lab_path,
                         const char *const *names, int nnames, int size, int channels) {
    dap_idx im, lb;
    DAP_TRY(dap_idx_read(img_path, &im));
    int rc = dap_idx_read(lab_path, &lb);
    if (rc != DAP_OK) {
        dap_idx_free(&im);
        return rc;
    }
    int c_in = im.ndim == 4 ? im.dims[3] : 1;
    if (im.ndim < 3 || im.ndim > 4 || (c_in != 1 && c_in != 3)) {
        rc = dap_error(DAP_ERR_FORMAT, "%s: expected IDX images (N, H, W) or (N, H, W, 1|3), found %d dims",
                       img_path, im.ndim);
    } else if (lb.ndim != 1 || lb.dims[0] != im.dims[0]) {
        rc = dap_error(DAP_ERR_FORMAT, "%s: expected %d labels (one per image of %s), found %d dims of %d",
                       lab_path, im.dims[0], img_path, lb.ndim, lb.dims[0]);
    }
    int num_classes = nnames;
    for (int i = 0; i < lb.dims[0] && rc == DAP_OK; i++) {
        if (names && lb.data[i] >= nnames)
            rc = dap_error(DAP_ERR_FORMAT, "%s: label %d at %d out of range (expected < %d)", lab_path,
                           lb.data[i], i, nnames);
        if (!names && lb.data[i] + 1 > num_classes) num_classes = lb.data[i] + 1;
    }
    if (rc == DAP_OK) {
        memset(ds, 0, sizeof *ds);
        ds->n = im.dims[0];
        ds->c = channels > 0 ? channels : c_in;
        ds->h = size > 0 ? size : im.dims[1];
        ds->w = size > 0 ? size : im.dims[2];
        if (size <= 0 && ds->c != c_in) { /* channel change only: keep the native size */
            ds->h = ds->w = im.dims[1] < im.dims[2] ? im.dims[1] : im.dims[2];
        }
        ds->num_classes = num_classes;
        ds->class_names = dap_malloc(sizeof(char *) * (size_t)num_classes);
        for (int k = 0; k < num_classes; k++) {
            char buf[16];
            snprintf(buf, sizeof buf, "%d", k);
            ds->class_names[k] = dap_strdup(names ? names[k] : buf);
        }
        ds->x = dap_alloc_f32(image_floats(ds) * (size_t)ds->n);
        ds->y = dap_malloc(sizeof(int) * (size_t)ds->n);
        size_t per_in = (size_t)im.dims[1] * im.dims[2] * c_in;
        int n_resized = 0, n_converted = 0;
#pragma omp parallel for schedule(static) reduction(+ : n_resized, n_converted)
        for (int i = 0; i < ds->n; i++) {
            dap_image8 one = {.h = im.dims[1], .w = im.dims[2], .c = c_in, .px = im.data + per_in * i};
            const int ch = put_image(ds, i, &one);
            n_resized += ch & 1, n_converted += ch >> 1;
            ds->y[i] = lb.data[i];
        }
        ds->src_h = im.dims[1], ds->src_w = im.dims[2], ds->src_c = c_in;
        ds->n_resized = n_resized, ds->n_converted = n_converted;
        dap_dataset_index(ds);
    }
    dap_idx_free(&im);
    dap_idx_free(&lb);
    return rc;
}

/* "X-images-idx3-ubyte[.gz]" -> "X-labels-idx1-ubyte[.gz]" (malloc'd) or NULL. */
static char *labels_path_for(const char *img) {
    const char *pat = "-images-idx3-ubyte";
    const char *at = strstr(img, pat);
    if (!at) return NULL;
    size_t n = strlen(img) + 1;
    char *s = dap_malloc(n);
    memcpy(s, img, (size_t)(at - img));
    memcpy(s + (at - img), "-labels-idx1-ubyte", strlen(pat));
    strcpy(s + (at - img) + strlen(pat), at + strlen(pat));
    return s;
}

static int load_fmnist(dap_dataset *ds, const char *dir, const char *split, int size, int channels) {
    const char *prefix = strcmp(split, "test") == 0 ? "t10k" : "train";
    char name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", prefix);
    char *img = join(dir, name);
    if (!is_file(img)) img[strlen(img) - 3] = 0; /* the unzipped file */
    if (!is_file(img)) {
        int rc = dap_error(DAP_ERR_MISSING, "%s: no %s (Fashion-MNIST %s images)", dir, name, split);
        free(img);
        return rc;
    }
    char *lab = labels_path_for(img);
    int rc = load_idx_pair(ds, img, lab, dap_fmnist_classes, 10, size, channels);
    free(img);
    free(lab);
    return rc;
}

/* ---- image folders -------------------------------------------------------------- */
typedef struct {
    char **s;
    int n, cap;
} strlist;

static void sl_push(strlist *l, const char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->s = dap_realloc(l->s, sizeof(char *) * (size_t)l->cap);
    }
    l->s[l->n++] = dap_strdup(s);
}
static void sl_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

/* Sorted entries of dir: subfolders (want_dirs) or image files; hidden names skipped. */
static int list_dir(const char *dir, int want_dirs, strlist *out) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) return dap_error(DAP_ERR_IO, "%s: cannot open folder (%s)", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char *p = join(dir, e->d_name);
        int ok = want_dirs ? is_dir(p) : (is_file(p) && has_image_ext(e->d_name));
        free(p);
        if (ok) sl_push(out, e->d_name);
    }
    closedir(d);
    if (out->n) qsort(out->s, (size_t)out->n, sizeof(char *), cmp_str);
    return DAP_OK;
}

int dap_dataset_has_splits(const char *spec) {
    if (!is_dir(spec)) return 0;
    char *tr = join(spec, "train");
    const int yes = is_dir(tr);
    free(tr);
    return yes;
}

#define TEST_SET_HOWTO                                                                                        \
    "give the test images with --test DIR, or lay the data out as ROOT/train/<class>/ and ROOT/test/<class>/ " \
    "(or ROOT/val/<class>/) and pass --data ROOT"

/* The folder a split of an image folder reads (malloc'd), or NULL with the error set. */
static char *folder_split_root(const char *spec, const char *split) {
    if (!dap_dataset_has_splits(spec)) {
        if (!strcmp(split, "train")) return dap_strdup(spec);
        dap_error(DAP_ERR_ARG, "%s is one image folder (no train/ and test/ subfolders), which cannot be its own "
                               "test set: %s", spec, TEST_SET_HOWTO);
        return NULL;
    }
    if (!strcmp(split, "train")) return join(spec, "train");
    char *te = join(spec, "test");
    if (is_dir(te)) return te;
    free(te);
    te = join(spec, "val");
    if (is_dir(te)) return te;
    free(te);
    dap_error(DAP_ERR_ARG, "%s has train/ but neither test/ nor val/: %s", spec, TEST_SET_HOWTO);
    return NULL;
}

static int load_folder(dap_dataset *ds, const char *spec, const char *split, int size, int channels) {
    char *root = folder_split_root(spec, split);
    if (!root) return DAP_ERR_ARG;
    strlist classes, files = {0};
    int rc = list_dir(root, 1, &classes);
    if (rc != DAP_OK) {
        free(root);
        return rc;
    }
    if (classes.n == 0)
        rc = dap_error(DAP_ERR_FORMAT, "%s: no class subfolders (expected ROOT/<class>/<image>)", root);
    int *counts = dap_calloc((size_t)classes.n + 1, sizeof(int));
    for (int k = 0; k < classes.n && rc == DAP_OK; k++) {
        char *cdir = join(root, classes.s[k]);
        strlist one;
        rc = list_dir(cdir, 0, &one);
        if (rc == DAP_OK && one.n == 0)
            rc = dap_error(DAP_ERR_FORMAT, "%s: class folder holds no .png/.jpg/.jpeg images", cdir);
        for (int i = 0; i < one.n && rc == DAP_OK; i++) {
            char *p = join(cdir, one.s[i]);
            sl_push(&files, p);
            free(p);
        }
        counts[k] = one.n;
        sl_free(&one);
        free(cdir);
    }
    dap_image8 first = {0};
    if (rc == DAP_OK && (size <= 0 || channels <= 0)) rc = dap_image_read(files.s[0], &first);
    if (rc == DAP_OK) {
        memset(ds, 0, sizeof *ds);
        ds->n = files.n;
        ds->c = channels > 0 ? channels : first.c;
        /* size 0: the first image's own size (a non-square one is kept, and then every
         * image must have it, since resizing gives squares) */
        ds->h = size > 0 ? size : first.h;
        ds->w = size > 0 ? size : first.w;
        ds->num_classes = classes.n;
        ds->class_names = dap_malloc(sizeof(char *) * (size_t)classes.n);
        for (int k = 0; k < classes.n; k++) ds->class_names[k] = dap_strdup(classes.s[k]);
        ds->x = dap_alloc_f32(image_floats(ds) * (size_t)ds->n);
        ds->y = dap_malloc(sizeof(int) * (size_t)(ds->n + 1));
        for (int k = 0, i = 0; k < classes.n; k++)
            for (int j = 0; j < counts[k]; j++) ds->y[i++] = k;
        /* decode in parallel; a failure is re-read serially for its message */
        int *bad = dap_calloc((size_t)ds->n + 1, sizeof(int));
        int n_resized = 0, n_converted = 0;
#pragma omp parallel for schedule(dynamic, 16) reduction(+ : n_resized, n_converted)
        for (int i = 0; i < ds->n; i++) {
            dap_image8 im;
            if (dap_image_read(files.s[i], &im) != DAP_OK) {
                bad[i] = 1;
                continue;
            }
            if (i == 0) ds->src_h = im.h, ds->src_w = im.w, ds->src_c = im.c;
            if (ds->h != ds->w && (im.h != ds->h || im.w != ds->w)) {
                bad[i] = 2;
            } else {
                const int ch = put_image(ds, i, &im);
                n_resized += ch & 1, n_converted += ch >> 1;
            }
            dap_image8_free(&im);
        }
        ds->n_resized = n_resized, ds->n_converted = n_converted;
        for (int i = 0; i < ds->n; i++)
            if (bad[i] == 2) {
                rc = dap_error(DAP_ERR_SHAPE,
                               "%s: image size differs from the first image's %dx%d (non-square); "
                               "give a size to resize and crop all images",
                               files.s[i], ds->h, ds->w);
                break;
            } else if (bad[i]) {
                dap_image8 im;
                rc = dap_image_read(files.s[i], &im);
                if (rc == DAP_OK) { /* vanished between reads: report it anyway */
                    dap_image8_free(&im);
                    rc = dap_error(DAP_ERR_IO, "%s: could not be read", files.s[i]);
                }
                break;
            }
        free(bad);
        if (rc == DAP_OK)
            dap_dataset_index(ds);
        else
            dap_dataset_free(ds);
    }
    dap_image8_free(&first);
    free(counts);
    sl_free(&files);
    sl_free(&classes);
    free(root);
    return rc;
}

int dap_dataset_load(dap_dataset *ds, const char *spec, const char *split, int size, int channels) {
    memset(ds, 0, sizeof *ds);
    if (!split) split = "train";
    if (strcmp(split, "train") != 0 && strcmp(split, "test") != 0)
        return dap_error(DAP_ERR_ARG, "split '%s': expected train or test", split);
    if (size < 0 || size > 4096 || channels < 0 || channels == 2 || channels > 3)
        return dap_error(DAP_ERR_ARG,
                         "dataset %s: size %d / channels %d out of range (size 0..4096, channels 0, 1 or 3)",
                         spec, size, channels);
    if (strcmp(spec, "fmnist") == 0) {
        const char *dir = dap_fmnist_dir();
        if (!dir) return DAP_ERR_MISSING;
        return load_fmnist(ds, dir, split, size, channels);
    }
    if (strncmp(spec, "fmnist:", 7) == 0) return load_fmnist(ds, spec + 7, split, size, channels);
    const dap_imagenet_subset *sub;
    const char *dir;
    if (dap_imagenet_spec(spec, &sub, &dir)) return dap_imagenet_load(ds, spec, split, size, channels);
    if (is_dir(spec)) return load_folder(ds, spec, split, size, channels);
    if (is_file(spec)) {
        char *lab = labels_path_for(spec);
        if (!lab)
            return dap_error(DAP_ERR_ARG,
                             "%s: an IDX image file must be named *-images-idx3-ubyte[.gz] "
                             "(its labels are read from *-labels-idx1-ubyte[.gz])",
                             spec);
        if (strcmp(split, "test") == 0) {
            free(lab);
            return dap_error(DAP_ERR_ARG, "%s is one IDX image file, which cannot be its own test set: give the test "
                                          "images with --test FILE|DIR", spec);
        }
        int rc = load_idx_pair(ds, spec, lab, NULL, 0, size, channels);
        free(lab);
        return rc;
    }
    return dap_error(DAP_ERR_MISSING, "dataset '%s': not fmnist, fmnist:DIR, an IDX file or an image folder",
                     spec);
}

int dap_dataset_load_test(dap_dataset *ds, const char *data, const char *test_spec, int size, int channels) {
    if (!test_spec) return dap_dataset_load(ds, data, "test", size, channels);
    const int whole = is_dir(test_spec) ? !dap_dataset_has_splits(test_spec) : is_file(test_spec);
    int rc = dap_dataset_load(ds, test_spec, whole ? "train" : "test", size, channels);
    if (rc != DAP_OK && whole) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dap_last_error());
        rc = dap_error(rc, "--test %s: %s", test_spec, msg);
    }
    return rc;
}

char *dap_dataset_split_path(const char *spec, const char *split) {
    char *p = NULL;
    const dap_imagenet_subset *sub;
    const char *dir;
    if (dap_imagenet_spec(spec, &sub, &dir)) { /* SUBSET:DIR: DIR/train, test split DIR/val */
        p = join(dir, strcmp(split, "test") == 0 ? "val" : "train");
    } else if (!is_dir(spec) && !is_file(spec)) {
        return NULL; /* "fmnist", ...: no one path */
    } else if (is_dir(spec)) {
        p = folder_split_root(spec, split);
        if (!p) return NULL;
    } else {
        p = dap_strdup(spec);
    }
    char *real = realpath(p, NULL);
    if (real) {
        free(p);
        return real;
    }
    return p;
}

/* ---- writing a folder ---------------------------------------------------------- */
static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

char *dap_class_folder_name(const char *name, int k) {
    char *s = dap_malloc(strlen(name) + 16);
    if (!*name) {
        sprintf(s, "class%d", k);
        return s;
    }
    strcpy(s, name);
    for (char *p = s; *p; p++)
        if (*p == '/') *p = '_';
    if (s[0] == '.') s[0] = '_';
    return s;
}

int dap_dataset_save_class(const dap_dataset *ds, const char *dir, int k) {
    DAP_ASSERT(k >= 0 && k < ds->num_classes);
    int rc = DAP_OK;
    uint8_t *px = dap_malloc((size_t)ds->h * ds->w * ds->c);
    char *name = dap_class_folder_name(ds->class_names[k], k);
    size_t n = strlen(dir) + strlen(name) + 48;
    char *tmp = dap_malloc(n), *old = dap_malloc(n), *final = join(dir, name);
    snprintf(tmp, n, "%s/.%s.tmp.%ld", dir, name, (long)getpid());
    snprintf(old, n, "%s/.%s.old.%ld", dir, name, (long)getpid());
    if (is_dir(tmp)) nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (mkdir(tmp, 0755) != 0)
        rc = dap_error(DAP_ERR_IO, "%s: cannot create directory (%s)", tmp, strerror(errno));
    for (int j = 0; ds->class_count && j < ds->class_count[k] && rc == DAP_OK; j++) {
        int i = ds->class_idx[k][j];
        dap_image_to_u8(ds->x + image_floats(ds) * (size_t)i, ds->c, ds->h, ds->w, px);
        char file[32];
        snprintf(file, sizeof file, "%05d.png", j);
        char *p = join(tmp, file);
        rc = dap_png_write(p, px, ds->h, ds->w, ds->c);
        free(p);
    }
    if (rc == DAP_OK) {
        /* swap into place; an older folder of the same name is moved aside, then removed */
        int had_old = is_dir(final) && rename(final, old) == 0;
        if (rename(tmp, final) != 0) {
            rc = dap_error(DAP_ERR_IO, "%s: cannot rename into place (%s)", final, strerror(errno));
            if (had_old) rename(old, final);
        } else if (had_old) {
            nftw(old, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
    }
    if (rc != DAP_OK && is_dir(tmp)) nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(tmp);
    free(old);
    free(final);
    free(name);
    free(px);
    return rc;
}

int dap_dataset_save_folder(const dap_dataset *ds, const char *dir) {
    DAP_TRY(dap_mkdir_p(dir));
    int rc = DAP_OK;
    for (int k = 0; k < ds->num_classes && rc == DAP_OK; k++) rc = dap_dataset_save_class(ds, dir, k);
    return rc;
}
