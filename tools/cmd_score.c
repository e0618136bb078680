/*
 * cmd_score.c: `dap score`: how a (distilled) image set relates to the real data, in the
 * feature space of a fixed classifier trained on the real training set (SPEC 4):
 *   class consistency  the classifier's accuracy on the set's own labels;
 *   representativeness the mean distance of each image to its K nearest real images of
 *                      its class, and the kernel energy (mean distance to them all);
 *   diversity          the mean and minimum pairwise distance within a class;
 *   Frechet distance   between the set's features and the real test set's.
 * Per class and overall; --json writes everything.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "core/device.h"
#include "data/dataset.h"
#include "eval/classifier.h"
#include "eval/scores.h"
#include "eval/subset.h"
#include "io/io.h"

int cmd_score(int argc, char **argv) {
    const char *data = "fmnist", *set_dir = NULL, *clf_path = "models/fmnist-convnet3.safetensors", *json = NULL;
    const char *test_spec = NULL, *device = NULL, *gpu_s = NULL;
    int k_nn = 50, real_per_class = 1000, seed = 0, threads = 0;
    flag flags[] = {
        {"data", FLAG_STR, &data, "the real data: fmnist, fmnist:DIR, an IDX image file or an image folder (ROOT/train/ + ROOT/test/, or one set)"},
        {"test", FLAG_STR, &test_spec, "the test set of the Frechet distance, when --data has none (without one it is not computed)"},
        {"set", FLAG_STR, &set_dir, "the image folder to score (one subfolder per class)"},
        {"classifier", FLAG_STR, &clf_path, "feature extractor: a classifier trained on the real data (dap teacher)"},
        {"k", FLAG_INT, &k_nn, "nearest real neighbours for representativeness", 1, 10000},
        {"real-per-class", FLAG_INT, &real_per_class, "real training images per class compared against (seeded)", 1, 1000000},
        {"seed", FLAG_INT, &seed, "seed of the real subsample", 0, FLAG_INT_MAX},
        {"json", FLAG_STR, &json, "write the scores to this JSON file"},
        {"device", FLAG_STR, &device, "cpu or cuda: where the classifier's features are computed (cuda: a build made with make CUDA=1; default $DAP_DEVICE, else cpu)"},
        {"gpu", FLAG_STR, &gpu_s, CLI_GPU_HELP},
        CLI_THREADS_FLAG(&threads),
    };
    const char *pos[1];
    int npos;
    int r = flags_parse("score", "--set DIR [--classifier FILE] [--data fmnist]",
                        "Scores an image set against the real data: class consistency, representativeness\n"
                        "(K-nearest real neighbours, kernel energy), diversity and Frechet distance, in the\n"
                        "feature space of a classifier trained on the real training set.",
                        flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (r) return r == 1 ? 0 : 2;
    if (!set_dir) return cli_failf("score", "--set DIR is required");
    if (json && cli_check_writable("json", json)) return cli_fail("score", DAP_ERR_IO);
    if (k_nn < 1 || real_per_class < 2 || seed < 0)
        return cli_failf("score", "--k must be >= 1, --real-per-class >= 2, --seed >= 0");
    if (cli_select_device("score", device, NULL, gpu_s)) return 1;
    cli_apply_threads(threads);

    dap_classifier clf;
    int rc = dap_classifier_load(&clf, clf_path);
    if (rc) return cli_fail("score", rc);
    dap_dataset real, test, set;
    memset(&test, 0, sizeof test), memset(&set, 0, sizeof set);
    if ((rc = dap_dataset_load(&real, data, "train", 0, 0))) {
        dap_classifier_free(&clf);
        return cli_fail("score", rc);
    }
    if ((rc = dap_classifier_check_data(&clf, &real, clf_path, data))) goto done;
    char note[256];
    if (dap_dataset_prep_note(&real, note, sizeof note)) dap_log(DAP_LOG_INFO, "dap score: data %s: %s\n", data, note);
    rc = dap_dataset_load_test(&test, data, test_spec, real.h, real.c);
    if (rc == DAP_ERR_ARG && !test_spec) { /* one set and no --test: no Frechet distance to a test set */
        dap_log(DAP_LOG_INFO, "dap score: %s has no test split and no --test was given: no Frechet distance\n", data);
        memset(&test, 0, sizeof test);
        rc = DAP_OK;
    }
    if (rc) goto done;
    /* the set as it is: one of another size or channel count than the data is refused */
    if ((rc = dap_dataset_load(&set, set_dir, "train", 0, 0))) goto done;
    if (set.c != real.c || set.h != real.h || set.w != real.w) {
        rc = dap_error(DAP_ERR_SHAPE, "--set %s has %dx%dx%d images (C x H x W), the data %s has %dx%dx%d", set_dir,
                       set.c, set.h, set.w, data, real.c, real.h, real.w);
        goto done;
    }
    if ((rc = dap_dataset_match_classes(&set, &real))) goto done;
    {
        const int K = real.num_classes, D = dap_classifier_feature_dim(&clf);
        const size_t per = (size_t)real.c * real.h * real.w;
        float *fs = dap_alloc_f32((size_t)set.n * D), *ft = dap_alloc_f32((size_t)(test.n ? test.n : 1) * D);
        float *logits = dap_alloc_f32((size_t)set.n * K);
        dap_log(DAP_LOG_INFO, "dap score: features of %d set, %d test images\n", set.n, test.n);
        dap_classifier_features(&clf, set.x, set.n, fs);
        dap_classifier_logits(&clf, set.x, set.n, logits);
        if (test.n) dap_classifier_features(&clf, test.x, test.n, ft);
        double fd = NAN;
        if (set.n >= 2 && test.n >= 2) rc = dap_frechet_distance(fs, set.n, ft, test.n, D, &fd);
        dap_json j;
        dap_json_init(&j);
        dap_json_begin_object(&j, NULL);
        dap_json_str(&j, "set", set_dir);
        dap_json_str(&j, "device", dap_device_describe());
        char hex[32], fh[32];
        snprintf(hex, sizeof hex, "%016llx", dap_dataset_hash(&set));
        dap_json_str(&j, "set_hash", hex); /* what was scored, not only the folder's name */
        dap_json_str(&j, "data", data);
        snprintf(hex, sizeof hex, "%016llx", dap_dataset_hash(&real));
        dap_json_str(&j, "data_hash", hex);
        if (test.n) { /* the Frechet distance's reference */
            snprintf(hex, sizeof hex, "%016llx", dap_dataset_hash(&test));
            dap_json_str(&j, "test_hash", hex);
        }
        dap_json_str(&j, "classifier", clf_path);
        if (dap_file_hash(clf_path, fh) == DAP_OK) dap_json_str(&j, "classifier_fnv1a64", fh);
        dap_json_int(&j, "k", k_nn);
        dap_json_int(&j, "real_per_class", real_per_class);
        dap_json_begin_array(&j, "classes");
        printf("%-14s %6s %9s %10s %10s %9s %9s\n", "class", "images", "consist%", "knn-dist", "energy", "div-mean",
               "div-min");
        int correct_all = 0, scored = 0;
        double knn_sum = 0, en_sum = 0, dm_sum = 0, dmin = INFINITY;
        int *ridx = dap_malloc(sizeof(int) * (size_t)real_per_class);
        for (int k = 0; k < K && rc == DAP_OK; k++) {
            const int ns = set.class_count[k];
            if (ns == 0) continue;
            /* the class's features (rows of fs), its real subsample's features */
            float *sk = dap_alloc_f32((size_t)ns * D);
            int correct = 0;
            for (int i = 0; i < ns; i++) {
                int idx = set.class_idx[k][i];
                memcpy(sk + (size_t)i * D, fs + (size_t)idx * D, sizeof(float) * D);
                const float *lg = logits + (size_t)idx * K;
                int best = 0;
                for (int q = 1; q < K; q++) best = lg[q] > lg[best] ? q : best;
                correct += best == k;
            }
            int nr = real.class_count[k] < real_per_class ? real.class_count[k] : real_per_class;
            memcpy(ridx, real.class_idx[k], sizeof(int) * (size_t)nr);
            if (nr < real.class_count[k]) { /* seeded subsample */
                int *all = dap_malloc(sizeof(int) * (size_t)real.class_count[k]);
                memcpy(all, real.class_idx[k], sizeof(int) * (size_t)real.class_count[k]);
                dap_rng g;
                dap_rng_init(&g, (uint64_t)seed, 0x53434f5245ULL + (uint64_t)k);
                dap_rng_shuffle(&g, all, (size_t)real.class_count[k]);
                memcpy(ridx, all, sizeof(int) * (size_t)nr);
                free(all);
            }
            float *xr = dap_alloc_f32((size_t)nr * per), *fr = dap_alloc_f32((size_t)nr * D);
            for (int i = 0; i < nr; i++) memcpy(xr + (size_t)i * per, real.x + (size_t)ridx[i] * per, sizeof(float) * per);
            dap_classifier_features(&clf, xr, nr, fr);
            double energy, knn = dap_score_knn(sk, ns, fr, nr, D, k_nn, &energy), dmean, dmn;
            dap_score_diversity(sk, ns, D, &dmean, &dmn);
            printf("%-14.14s %6d %9.2f %10.4g %10.4g %9.4g %9.4g\n", real.class_names[k], ns, 100.0 * correct / ns, knn,
                   energy, dmean, dmn);
            dap_json_begin_object(&j, NULL);
            dap_json_str(&j, "name", real.class_names[k]);
            dap_json_int(&j, "images", ns);
            dap_json_num(&j, "class_consistency", 100.0 * correct / ns);
            dap_json_num(&j, "knn_distance", knn);
            dap_json_num(&j, "energy", energy);
            dap_json_num(&j, "diversity_mean", dmean);
            if (ns >= 2) dap_json_num(&j, "diversity_min", dmn);
            dap_json_end_object(&j);
            correct_all += correct, scored += ns;
            knn_sum += knn * ns, en_sum += energy * ns;
            if (ns >= 2) dm_sum += dmean * ns, dmin = dmn < dmin ? dmn : dmin;
            dap_free_aligned(sk), dap_free_aligned(xr), dap_free_aligned(fr);
        }
        dap_json_end_array(&j);
        free(ridx);
        if (rc == DAP_OK) {
            printf("overall  images %d  consistency %.2f%%  knn-dist %.4g  energy %.4g  div-mean %.4g  div-min %.4g  "
                   "FD(test) %.4g\n",
                   scored, 100.0 * correct_all / scored, knn_sum / scored, en_sum / scored, dm_sum / scored, dmin, fd);
            dap_json_begin_object(&j, "overall");
            dap_json_int(&j, "images", scored);
            dap_json_num(&j, "class_consistency", 100.0 * correct_all / scored);
            dap_json_num(&j, "knn_distance", knn_sum / scored);
            dap_json_num(&j, "energy", en_sum / scored);
            dap_json_num(&j, "diversity_mean", dm_sum / scored);
            if (isfinite(dmin)) dap_json_num(&j, "diversity_min", dmin);
            if (isfinite(fd)) dap_json_num(&j, "frechet_distance_test", fd);
            dap_json_end_object(&j);
        }
        dap_json_end_object(&j);
        if (rc == DAP_OK && json) rc = dap_json_save(&j, json);
        dap_json_free(&j);
        dap_free_aligned(fs), dap_free_aligned(ft), dap_free_aligned(logits);
    }
done:
    dap_dataset_free(&set);
    dap_dataset_free(&test);
    dap_dataset_free(&real);
    dap_classifier_free(&clf);
    return rc ? cli_fail("score", rc) : 0;
}
