/*
 * subset.h: the training sets the protocols score besides a distilled folder: a random
 * real subset with IPC images per class (the baseline every distilled set is compared
 * with), and the mapping of an image folder's classes onto the real dataset's.
 */
#ifndef DAP_SUBSET_H
#define DAP_SUBSET_H

#include <stdint.h>

#include "data/dataset.h"

/* ipc images of every class of ds, drawn uniformly without replacement (seeded),
 * grouped by class. DAP_ERR_VALUE naming the class when it has fewer than ipc. */
int dap_random_subset(dap_dataset *out, const dap_dataset *ds, int ipc, uint64_t seed);

/* Relabels a folder-loaded set so that its labels index `real`'s classes: folder class
 * names are matched to real class names ignoring case and non-alphanumeric characters
 * ("T-shirt/top" ~ "t_shirt_top"), or taken as class numbers ("3"). The class names of
 * `set` become the real ones. DAP_ERR_MISSING names a folder class with no match. */
int dap_dataset_match_classes(dap_dataset *set, const dap_dataset *real);

#endif /* DAP_SUBSET_H */
