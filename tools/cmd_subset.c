/*
 * cmd_subset.c: `dap subset`: a random real subset with IPC images per class, written
 * as an image folder (DIR/<class>/<n>.png): the baseline every distilled set is
 * compared with, and the input of the PyTorch reference evaluation.
 */
#include <stdio.h>

#include "cli.h"
#include "core/core.h"
#include "data/dataset.h"
#include "eval/subset.h"

int cmd_subset(int argc, char **argv) {
    const char *from = "fmnist", *out = NULL;
    int ipc = 10, seed = 0, val = 0, threads = 0;
    flag flags[] = {
        {"from", FLAG_STR, &from, "the real data: fmnist, fmnist:DIR, an IDX file or an image folder"},
        {"ipc", FLAG_INT, &ipc, "images per class", 1, 1000000},
        {"seed", FLAG_INT, &seed, "seed of the draw", 0, FLAG_INT_MAX},
        {"val", FLAG_INT, &val, "draw from what is left after holding out N per class (as dap eval --val N --seed S)", 0, 1000000},
        {"out", FLAG_STR, &out, "output folder"},
        CLI_THREADS_FLAG(&threads),
    };
    const char *pos[1];
    int npos;
    int r = flags_parse("subset", "--out DIR [--from fmnist] [--ipc N] [--seed S]",
                        "Writes a random per-class subset of the training split as an image folder.", flags,
                        (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (r) return r == 1 ? 0 : 2;
    if (!out) return cli_failf("subset", "--out DIR is required");
    if (ipc < 1) return cli_failf("subset", "--ipc must be at least 1, got %d", ipc);
    if (val < 0) return cli_failf("subset", "--val must be >= 0, got %d", val);
    cli_apply_threads(threads);
    dap_dataset real, pool, held, sub;
    int rc = dap_dataset_load(&real, from, "train", 0, 0);
    if (rc) return cli_fail("subset", rc);
    const dap_dataset *src = &real;
    if (val > 0) {
        dap_dataset_split(&real, val, (unsigned long long)seed, &pool, &held);
        src = &pool;
    }
    rc = dap_random_subset(&sub, src, ipc, (uint64_t)seed);
    if (rc == DAP_OK) {
        rc = dap_dataset_save_folder(&sub, out);
        if (rc == DAP_OK)
            printf("%s: %d images (%d classes x %d), %dx%dx%d, seed %d\n", out, sub.n, sub.num_classes, ipc,
                   sub.c, sub.h, sub.w, seed);
        dap_dataset_free(&sub);
    }
    if (val > 0) dap_dataset_free(&pool), dap_dataset_free(&held);
    dap_dataset_free(&real);
    return rc ? cli_fail("subset", rc) : 0;
}
