/*
 * classmap.h: which label of a class-conditional model each class of a dataset is.
 *
 * A dataset's class index is where its loader put the class (an image folder's classes
 * in alphabetical order, an IDX file's labels as stored); a model's label is what it was
 * trained with. The two meet by name: the model's class names (its checkpoint's
 * metadata) against the dataset's. A model without names is taken to have the names of
 * dap_class_names_guess (Fashion-MNIST's for dap's own 10-class 28x28x1 models, the
 * ImageNet wnids for 1000-class ones).
 */
#ifndef DAP_CLASSMAP_H
#define DAP_CLASSMAP_H

#include "data/dataset.h"

/* label_of_class[k] (ds->num_classes entries) = the model label of data class k. A data
 * class matches a model name exactly, else in its folder-safe form (dap_class_folder_name:
 * "T-shirt_top" is "T-shirt/top"), else a class named by a decimal number 0..n_model-1 is
 * that label. model_names may be NULL (a model without names: only numbers match).
 * DAP_ERR_MISSING naming the data class, the model (model_path) and some of its names when a
 * data class matches none; DAP_ERR_VALUE when two data classes match one label. */
int dap_class_map(const char *const *model_names, int n_model, const dap_dataset *ds, int *label_of_class,
                  const char *model_path);

/* The class names of a model whose checkpoint has none, from its shape: Fashion-MNIST's
 * (dap_fmnist_classes) for 10 classes of 28x28x1, the ImageNet-1K wnids in label order
 * (dap_imagenet_wnids) for 1000 classes, else NULL (unknown). */
const char *const *dap_class_names_guess(int num_classes, int channels, int size);

#endif /* DAP_CLASSMAP_H */
