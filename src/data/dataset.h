/*
 * dataset.h: a labelled image set in memory, float CHW in [-1, 1], with class names,
 * per-class index lists and a seeded train/validation split. Sources: Fashion-MNIST
 * (the Debian package `dataset-fashion-mnist`, found by default), any IDX image file
 * with its label file beside it, or an image folder (one subfolder per class).
 */
#ifndef DAP_DATASET_H
#define DAP_DATASET_H

#include <stddef.h>

typedef struct dap_dataset {
    int n;          /* images */
    int c, h, w;    /* channels and size */
    int num_classes;
    char **class_names; /* num_classes strings */
    float *x;       /* (n, c, h, w) in [-1, 1] */
    int *y;         /* (n) labels in [0, num_classes) */
    int *class_count; /* (num_classes) */
    int **class_idx;  /* class_idx[k]: class_count[k] indices into x, ascending */
    /* what loading did to the images (dap_dataset_prep_note); 0 for sets built otherwise */
    int src_h, src_w, src_c;    /* the first image's own size and channels */
    int n_resized, n_converted; /* images resized (and cropped) / converted to c channels */
} dap_dataset;

/* `spec`: "fmnist" (Fashion-MNIST from the Debian package), "fmnist:DIR" (the same
 * four files in DIR), an IDX image file (the labels file is found beside it:
 * "*-images-idx3-ubyte[.gz]" -> "*-labels-idx1-ubyte[.gz]"), an image folder, or an
 * ImageNet-style folder "imagenette:DIR", "imagewoof:DIR", "imageidc:DIR", "imagenet:DIR"
 * (data/imagenet.h: wnid folders, test split = DIR/val, size required).
 * `split`: "train" or "test". A folder ROOT that holds ROOT/train/ is a split layout:
 * train reads ROOT/train, test reads ROOT/test (or else ROOT/val). A folder without
 * train/ and a single IDX file are one set: its train split is the set itself, and
 * asking for its test split is refused (DAP_ERR_ARG telling how to give a test set), so
 * that nothing is ever tested on its own training images. `size`, `channels`: the
 * resolution (shorter side resized, centre crop) and channel count to convert to (0: the
 * first image's); dap_dataset_prep_note says what that changed. */
int dap_dataset_load(dap_dataset *ds, const char *spec, const char *split, int size, int channels);
/* Whether `spec` is a folder with the ROOT/train split layout. */
int dap_dataset_has_splits(const char *spec);
/* The test set: `test_spec` when given (its test split if it is a split layout, else all
 * of it), else the test split of `data`. */
int dap_dataset_load_test(dap_dataset *ds, const char *data, const char *test_spec, int size, int channels);
/* The file or folder a split of `spec` reads (malloc'd, resolved with realpath when it
 * exists; "imagenette:DIR" and the like: DIR/train or DIR/val), or NULL for specs that
 * are no existing file or folder ("fmnist"). */
char *dap_dataset_split_path(const char *spec, const char *split);
/* One line saying how loading changed the images ("resized 8x8 -> 16x16, RGB -> gray
 * (1797 images)"); returns 0 and writes "" when nothing changed. */
int dap_dataset_prep_note(const dap_dataset *ds, char *buf, size_t n);
/* FNV-1a 64 of the pixels (as loaded) and labels: which images a set holds. */
unsigned long long dap_dataset_hash(const dap_dataset *ds);
void dap_dataset_free(dap_dataset *ds);
/* Rebuilds class_count/class_idx from y (after building a dataset by hand). */
void dap_dataset_index(dap_dataset *ds);
/* A new dataset made of the listed images (copied). */
void dap_dataset_subset(dap_dataset *out, const dap_dataset *ds, const int *idx, int n);
/* Seeded split: `val_per_class` images of each class go to val, the rest to train.
 * Same seed -> same split. */
void dap_dataset_split(const dap_dataset *ds, int val_per_class, unsigned long long seed,
                       dap_dataset *train, dap_dataset *val);
/* The same with a share of each class: floor(frac x count) images, at most `cap`, and
 * always leaving at least one training image (the val images of a class are the first
 * of dap_dataset_split's shuffle: with the same seed, a class that gets v images gets the
 * images dap_dataset_split(v) would hold out). Returns the most any class held out. */
int dap_dataset_split_fraction(const dap_dataset *ds, double frac, int cap, unsigned long long seed,
                               dap_dataset *train, dap_dataset *val);
/* Writes an image folder: DIR/<class_name>/<index>.png, each class folder written to a
 * temporary folder and renamed into place. */
int dap_dataset_save_folder(const dap_dataset *ds, const char *dir);
/* Writes class k alone (DIR must exist), atomically in the same way. */
int dap_dataset_save_class(const dap_dataset *ds, const char *dir, int k);
/* A class name as a folder name: '/' -> '_', no leading '.', "class<k>" when empty
 * (malloc'd). */
char *dap_class_folder_name(const char *name, int k);

/* Fashion-MNIST class names (10). */
extern const char *const dap_fmnist_classes[10];
/* Where the Debian package puts the files (the first existing of known locations),
 * or NULL with an error telling how to install it. */
const char *dap_fmnist_dir(void);

#endif /* DAP_DATASET_H */
