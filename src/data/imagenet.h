/*
 * imagenet.h: ImageNet-1K's classes and ImageNet-style image folders.
 *
 * The 1000 classes in label order (wnid and name): the labels the official DiT
 * checkpoints are conditioned on, so a wnid folder maps to its label, and a 1000-class
 * model without class names in its checkpoint has these wnids as its names. Built-in
 * subsets: ImageNette and ImageWoof (fast.ai's imagenette2 / imagewoof2) and ImageIDC
 * (the 10 classes of IDC's ImageNet-10, as DAP and its rivals use it).
 *
 * Data specs "imagenette:DIR", "imagewoof:DIR", "imageidc:DIR" and "imagenet:DIR": wnid
 * folders under DIR/train (split train) and DIR/val (split test), the fast.ai layout and
 * the ILSVRC one (val/ sorted into wnid folders); a wnid outside the subset is refused.
 */
#ifndef DAP_IMAGENET_H
#define DAP_IMAGENET_H

#include "data/dataset.h"

#define DAP_IMAGENET_CLASSES 1000

/* Label index -> wnid / name (NULL outside 0..999); wnid -> index (-1 if not one of the 1000). */
const char *dap_imagenet_wnid(int index);
const char *dap_imagenet_name(int index);
int dap_imagenet_index(const char *wnid);
/* The 1000 wnids in label order (the class names of a 1000-class model that has none). */
const char *const *dap_imagenet_wnids(void);

/* A built-in subset: "imagenette", "imagewoof", "imageidc", or "imagenet" (all 1000, n = 1000
 * and wnids NULL). NULL when unknown. */
typedef struct dap_imagenet_subset {
    const char *name;
    int n;
    const char *const *wnids; /* n wnids (sorted) or NULL for all of ImageNet-1K */
} dap_imagenet_subset;
const dap_imagenet_subset *dap_imagenet_subset_find(const char *name);
/* Whether spec is "SUBSET:DIR" with a built-in subset: 1 (sub, dir set; dir points into
 * spec) or 0. */
int dap_imagenet_spec(const char *spec, const dap_imagenet_subset **sub, const char **dir);

/* The image files of a folder dataset, listed but not decoded: an ImageNet-style spec
 * ("SUBSET:DIR", split train -> DIR/train, test -> DIR/val), or an image folder as
 * dap_dataset_load reads it (ROOT/<class>/<image>, ROOT/{train,test}/ when both exist). */
typedef struct dap_image_files {
    char *root;         /* the split's folder */
    int num_classes;
    char **class_names; /* folder names, sorted */
    int *count;         /* images per class */
    char ***files;      /* files[k][i]: paths, sorted */
} dap_image_files;
int dap_image_files_list(dap_image_files *f, const char *spec, const char *split);
void dap_image_files_free(dap_image_files *f);

/* How images become size x size squares: dap_image_resize_crop (the evaluation's) or
 * dap_image_center_crop_adm (the DiT code's, for a latent prior's data). */
enum { DAP_CROP_RESIZE = 0, DAP_CROP_ADM = 1 };
/* Decodes class k's images into x (count[k], channels, size, size) in [-1, 1]. */
int dap_image_files_load_class(const dap_image_files *f, int k, int size, int channels, int crop, float *x);

/* dap_dataset_load for "SUBSET:DIR" specs (size > 0: ImageNet images differ in size). */
int dap_imagenet_load(dap_dataset *ds, const char *spec, const char *split, int size, int channels);

#endif /* DAP_IMAGENET_H */
