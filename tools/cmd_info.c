/*
 * cmd_info.c: `dap info --data fmnist|PATH`: what a dataset holds (classes and their
 * counts, image size, channels, pixel mean/std) and optionally a grid of examples,
 * one row per class.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "data/dataset.h"
#include "io/io.h"

int cmd_info(int argc, char **argv) {
    const char *data = "fmnist", *split = "train", *grid = NULL;
    int per_class = 10, size = 0, channels = 0, threads = 0;
    flag flags[] = {
        {"data", FLAG_STR, &data, "fmnist, fmnist:DIR, an IDX image file or an image folder"},
        {"split", FLAG_STR, &split, "train or test"},
        {"size", FLAG_INT, &size, "image folders: resize + centre-crop to this size (0: first image's)", 0, 4096},
        {"channels", FLAG_INT, &channels, "convert to 1 or 3 channels (0: first image's)", 0, 3},
        {"grid", FLAG_STR, &grid, "write a PNG grid of examples (one row per class) to this file"},
        {"per-class", FLAG_INT, &per_class, "images per class in the grid", 1, 1000},
        CLI_THREADS_FLAG(&threads),
    };
    const char *pos[1];
    int npos;
    int r = flags_parse("info", "[--data SPEC] [--split train|test] [--grid FILE.png]",
                        "Prints a dataset's classes, counts, image size and pixel statistics.", flags,
                        (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (r) return r == 1 ? 0 : 2;
    if (per_class < 1 || per_class > 1000)
        return cli_failf("info", "--per-class must be 1..1000, got %d", per_class);
    if (grid && cli_check_writable("grid", grid)) return cli_fail("info", DAP_ERR_IO);
    cli_apply_threads(threads);

    dap_dataset ds;
    int rc = dap_dataset_load(&ds, data, split, size, channels);
    if (rc) return cli_fail("info", rc);

    size_t per = (size_t)ds.c * ds.h * ds.w;
    printf("dataset   %s (%s)\n", data, split);
    printf("images    %d\n", ds.n);
    printf("size      %d x %d, %d channel%s\n", ds.h, ds.w, ds.c, ds.c == 1 ? "" : "s");
    printf("classes   %d\n", ds.num_classes);
    for (int k = 0; k < ds.num_classes; k++)
        printf("  %3d  %-24s %d\n", k, ds.class_names[k], ds.class_count[k]);
    size_t hw = (size_t)ds.h * ds.w;
    for (int ch = 0; ch < ds.c; ch++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < ds.n; i++) {
            const float *p = ds.x + per * (size_t)i + hw * (size_t)ch;
            double a = 0, a2 = 0;
            for (size_t j = 0; j < hw; j++) {
                a += p[j];
                a2 += (double)p[j] * p[j];
            }
            s += a;
            s2 += a2;
        }
        double n = (double)ds.n * (double)hw, mean = n > 0 ? s / n : 0,
               var = n > 0 ? s2 / n - mean * mean : 0;
        double std = sqrt(var > 0 ? var : 0);
        /* pixels are stored in [-1, 1]; also shown on the usual [0, 1] scale */
        printf("pixels    channel %d: mean %.4f std %.4f in [-1, 1]  (mean %.4f std %.4f in [0, 1])\n", ch,
               mean, std, (mean + 1) / 2, std / 2);
    }
    if (grid) {
        /* zeroed: a class with fewer images leaves mid-gray cells */
        float *img = dap_alloc_f32(per * (size_t)per_class * (size_t)ds.num_classes);
        for (int k = 0; k < ds.num_classes; k++)
            for (int j = 0; j < per_class && j < ds.class_count[k]; j++)
                memcpy(img + per * ((size_t)k * per_class + j), ds.x + per * (size_t)ds.class_idx[k][j],
                       per * sizeof(float));
        rc = dap_grid_write(grid, img, ds.num_classes * per_class, ds.num_classes, per_class, ds.c, ds.h,
                            ds.w);
        dap_free_aligned(img);
        if (rc) {
            dap_dataset_free(&ds);
            return cli_fail("info", rc);
        }
        printf("grid      %s (%d rows x %d)\n", grid, ds.num_classes, per_class);
    }
    dap_dataset_free(&ds);
    return 0;
}
