/*
 * cmd_teacher.c: `dap teacher`: trains a classifier on the full training split (the
 * hard-label recipe) and saves it as a safetensors checkpoint: the teacher of the
 * soft-label protocol and the fixed feature extractor of the set scores.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/device.h"
#include "core/core.h"
#include "data/dataset.h"
#include "eval/classifier.h"
#include "eval/fit.h"
#include "eval/subset.h"

int cmd_teacher(int argc, char **argv) {
    const char *data = "fmnist", *arch = "resnet18", *out = NULL, *aug_s = "none", *device = NULL, *gpu_s = NULL, *test_spec = NULL;
    int epochs = 30, seed = 0, batch = 256, threads = 0, quiet = 0, val = 0, image_size = 0;
    double lr = 0.01;
    flag flags[] = {
        {"data", FLAG_STR, &data, "fmnist, fmnist:DIR, an IDX file, an image folder (ROOT/train/ + ROOT/test/, or one set), or imagenette:DIR (and imagewoof, imageidc, imagenet) with --image-size"},
        {"test", FLAG_STR, &test_spec, "the test set, when --data has none (without one, no test accuracy is reported)"},
        {"image-size", FLAG_INT, &image_size, "train at this size: images resized and centre-cropped as dap eval does (0: the data's; imagenette:DIR and the like need it)", 0, 4096},
        {"arch", FLAG_STR, &arch, "resnet18, convnet3, resnetap10 [+ -bn/-in/-nn]"},
        {"epochs", FLAG_INT, &epochs, "epochs (lr x0.1 at half)", 1, 1000000},
        {"aug", FLAG_STR, &aug_s, "none or dsa"},
        {"batch", FLAG_INT, &batch, "batch size", 1, 100000},
        {"lr", FLAG_FLOAT, &lr, "SGD learning rate (momentum 0.9, wd 5e-4)", 1e-09, 100},
        {"seed", FLAG_INT, &seed, "seed", 0, FLAG_INT_MAX},
        {"val", FLAG_INT, &val, "hold out N per class of the training split (seeded) and report accuracy on them", 0, 1000000},
        {"out", FLAG_STR, &out, "checkpoint to write (.safetensors)"},
        CLI_THREADS_FLAG(&threads),
        {"device", FLAG_STR, &device, "cpu or cuda (a build made with make CUDA=1; default $DAP_DEVICE, else cpu)"},
        {"gpu", FLAG_STR, &gpu_s, CLI_GPU_HELP},
        {"quiet", FLAG_BOOL, &quiet, "no per-epoch progress"},
    };
    const char *pos[1];
    int npos;
    int r = flags_parse("teacher", "--out FILE [--data fmnist] [--arch resnet18] [--epochs E]",
                        "Trains a classifier on the whole training split and saves it (teacher / feature extractor).",
                        flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (r) return r == 1 ? 0 : 2;
    if (!out) return cli_failf("teacher", "--out FILE is required");
    if (cli_check_writable("out", out)) return cli_fail("teacher", DAP_ERR_IO);
    if (epochs < 1) return cli_failf("teacher", "--epochs must be at least 1, got %d", epochs);
    if (batch < 1) return cli_failf("teacher", "--batch must be at least 1, got %d", batch);
    if (!(lr > 0)) return cli_failf("teacher", "--lr must be positive");
    int aug;
    if (!strcmp(aug_s, "none")) aug = DAP_AUG_NONE;
    else if (!strcmp(aug_s, "dsa")) aug = DAP_AUG_DSA;
    else return cli_failf("teacher", "--aug must be none or dsa, got '%s'", aug_s);
    cli_apply_threads(threads);
    if (cli_select_device("teacher", device, NULL, gpu_s)) return 1;
    int rc = 0;

    dap_dataset real, test, tr, held;
    rc = dap_dataset_load(&real, data, "train", image_size, 0);
    if (rc) return cli_fail("teacher", rc);
    char note[256];
    if (dap_dataset_prep_note(&real, note, sizeof note)) fprintf(stderr, "teacher: data %s: %s\n", data, note);
    rc = dap_dataset_load_test(&test, data, test_spec, real.h, real.c);
    const int have_test = rc == DAP_OK;
    if (rc == DAP_ERR_ARG && !test_spec) { /* one set and no --test: nothing to test on */
        fprintf(stderr, "teacher: %s has no test split and no --test was given: no test accuracy\n", data);
        memset(&test, 0, sizeof test);
        rc = DAP_OK;
    }
    if (rc == DAP_OK && have_test && test_spec) rc = dap_dataset_match_classes(&test, &real);
    if (rc) return cli_fail("teacher", rc);
    const dap_dataset *train = &real;
    if (val > 0) {
        dap_dataset_split(&real, val, (unsigned long long)seed, &tr, &held);
        train = &tr;
    }
    dap_classifier m;
    rc = dap_classifier_create(&m, arch, real.c, real.h, real.w, real.num_classes);
    if (rc) return cli_fail("teacher", rc);
    dap_classifier_set_normalization(&m, &real, !strncmp(data, "fmnist", 6));
    dap_classifier_init_weights(&m, (uint64_t)seed);
    dap_fit_config cfg;
    dap_fit_config_hard(&cfg, epochs, aug);
    cfg.batch = batch, cfg.lr = lr, cfg.seed = (uint64_t)seed, cfg.progress = !quiet;
    cfg.label = "teacher";
    dap_fit_result res;
    rc = dap_classifier_train(&m, train, &cfg, &res);
    if (rc == DAP_OK) {
        double acc = have_test ? dap_classifier_accuracy(&m, &test) : NAN;
        char acc_s[32], ep_s[16], val_s[32] = "";
        snprintf(acc_s, sizeof acc_s, "%.2f", acc);
        snprintf(ep_s, sizeof ep_s, "%d", epochs);
        if (val > 0) snprintf(val_s, sizeof val_s, "%.2f", dap_classifier_accuracy(&m, &held));
        const char *meta[] = {"dap.data", data, "dap.epochs", ep_s, have_test ? "dap.test_accuracy" : "dap.test",
                              have_test ? acc_s : "none", val > 0 ? "dap.val_accuracy" : NULL, val_s, NULL};
        rc = dap_classifier_save(&m, out, meta);
        if (rc == DAP_OK)
            printf("%s: %s trained %d epochs on %d images: test accuracy %s%s%s%s, %.0f s\n", out, m.net.arch,
                   epochs, train->n, have_test ? acc_s : "none (no test set)", have_test ? "%" : "",
                   val > 0 ? ", val " : "", val_s, res.seconds);
    }
    dap_classifier_free(&m);
    if (val > 0) dap_dataset_free(&tr), dap_dataset_free(&held);
    dap_dataset_free(&test);
    dap_dataset_free(&real);
    return rc ? cli_fail("teacher", rc) : 0;
}
