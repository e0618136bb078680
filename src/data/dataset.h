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
} dap_dataset;

/* `spec`: "fmnist" (Fashion-MNIST from the Debian package), "fmnist:DIR" (the same
 * four files in DIR), an IDX image file (the labels file is found beside it:
 * "*-images-idx3-ubyte[.gz]" -> "*-labels-idx1-ubyte[.gz]"), an image folder, or an
 * ImageNet-style folder "imagenette:DIR", "imagewoof:DIR", "imageidc:DIR", "imagenet:DIR"
 * (data/imagenet.h: wnid folders, test split = DIR/val, size required).
 * `split`: "train" or "test" (ignored for a single IDX file or folder unless the folder
 * holds train/ and test/ subfolders). `size`, `channels`: for image folders, the
 * resolution and channel count to convert to (0: take the first image's). */
int dap_dataset_load(dap_dataset *ds, const char *spec, const char *split, int size, int channels);
void dap_dataset_free(dap_dataset *ds);
/* Rebuilds class_count/class_idx from y (after building a dataset by hand). */
void dap_dataset_index(dap_dataset *ds);
/* A new dataset made of the listed images (copied). */
void dap_dataset_subset(dap_dataset *out, const dap_dataset *ds, const int *idx, int n);
/* Seeded split: `val_per_class` images of each class go to val, the rest to train.
 * Same seed -> same split. */
void dap_dataset_split(const dap_dataset *ds, int val_per_class, unsigned long long seed,
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
