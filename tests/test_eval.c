/*
 * test_eval.c: the evaluation protocols: the DSA resampler against PyTorch, properties
 * of each DSA transform and of CutMix, random subsets, class matching, schedules, and
 * short training runs (hard, DSA, soft) that must learn a separable toy set and be
 * reproducible per seed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "eval/augment.h"
#include "eval/classifier.h"
#include "eval/subset.h"
#include "eval/fit.h"
#include "io/io.h"
#include "models/convnet.h"
#include "test.h"

DAP_TEST(eval_dsa_affine_parity) {
    dap_st *st = NULL;
    int rc = dap_st_open(&st, dap_test_ref("augment_affine.safetensors"));
    CHECK_MSG(rc == DAP_OK, "%s", dap_last_error());
    if (rc) return;
    size_t n = 3 * 2 * 28 * 28;
    float *x = dap_alloc_f32(n), *want = dap_alloc_f32(n), theta[18];
    CHECK(dap_st_read_f32(st, "ref.x", x, NULL, 0) == DAP_OK);
    CHECK(dap_st_read_f32(st, "ref.out", want, NULL, 0) == DAP_OK);
    CHECK(dap_st_read_f32(st, "ref.theta", theta, NULL, 0) == DAP_OK);
    dap_aug_affine(x, theta, 3, 2, 28, 28);
    double err = dap_test_compare("grid_sample (scale, rotate, general)", x, want, n, 1.0);
    CHECK(err < 1e-5);
    dap_free_aligned(x), dap_free_aligned(want);
    dap_st_close(st);
}

static void fill_random(float *x, size_t n, uint64_t seed) {
    dap_rng r;
    dap_rng_init(&r, seed, 0);
    dap_rng_uniform(&r, x, n, 0.1f, 1.0f); /* strictly positive: zeros mark fill */
}

DAP_TEST(eval_dsa_transforms) {
    enum { N = 16, C = 1, H = 28, W = 28 };
    size_t img = (size_t)C * H * W, total = N * img;
    float *x0 = dap_alloc_f32(total), *x = dap_alloc_f32(total);
    fill_random(x0, total, 3);
    dap_rng r;
    dap_rng_init(&r, 9, 1);
    /* flip: each image is itself or its mirror */
    memcpy(x, x0, total * sizeof(float));
    dap_aug_dsa_op(x, N, C, H, W, DAP_DSA_FLIP, &r);
    int flipped = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        int same = 1, mirror = 1;
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                float v = x[i * img + y * W + xx];
                same &= v == x0[i * img + y * W + xx];
                mirror &= v == x0[i * img + y * W + (W - 1 - xx)];
            }
        flipped += mirror && !same;
        bad += !same && !mirror;
    }
    printf("    flip: %d of %d images mirrored\n", flipped, N);
    CHECK(bad == 0 && flipped > 0 && flipped < N);
    /* crop: a shift by at most 4 px with zero fill */
    memcpy(x, x0, total * sizeof(float));
    dap_aug_dsa_op(x, N, C, H, W, DAP_DSA_CROP, &r);
    int max_shift = 0;
    for (int i = 0; i < N; i++) {
        int found = 0;
        for (int ty = -4; ty <= 4 && !found; ty++)
            for (int tx = -4; tx <= 4 && !found; tx++) {
                int ok = 1;
                for (int y = 0; y < H && ok; y++)
                    for (int xx = 0; xx < W && ok; xx++) {
                        int sy = y + ty, sx = xx + tx;
                        float want = sy >= 0 && sy < H && sx >= 0 && sx < W ? x0[i * img + sy * W + sx] : 0.0f;
                        ok = x[i * img + y * W + xx] == want;
                    }
                if (ok) found = 1, max_shift = abs(ty) > max_shift ? abs(ty) : max_shift;
            }
        CHECK_MSG(found, "crop: image %d is no shift of at most 4 px", i);
    }
    printf("    crop: every image a shift of <= 4 px (largest seen %d)\n", max_shift);
    /* cutout: zeros inside one square of at most 14 x 14, untouched elsewhere */
    memcpy(x, x0, total * sizeof(float));
    dap_aug_dsa_op(x, N, C, H, W, DAP_DSA_CUTOUT, &r);
    int largest = 0;
    for (int i = 0; i < N; i++) {
        int y0 = H, y1 = -1, x0b = W, x1 = -1, zeros = 0, changed_nonzero = 0;
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                float v = x[i * img + y * W + xx];
                if (v == 0.0f) {
                    zeros++;
                    y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1, x0b = xx < x0b ? xx : x0b, x1 = xx > x1 ? xx : x1;
                } else if (v != x0[i * img + y * W + xx]) {
                    changed_nonzero++;
                }
            }
        CHECK(changed_nonzero == 0);
        if (zeros) {
            CHECK(zeros == (y1 - y0 + 1) * (x1 - x0b + 1) && y1 - y0 < 14 && x1 - x0b < 14);
            largest = zeros > largest ? zeros : largest;
        }
    }
    printf("    cutout: one zeroed box per image, largest %d px (14x14 = 196)\n", largest);
    CHECK(largest == 196);
    /* colour on one channel: v -> (v + b - m) * k + m with k in [0.5, 1.5) */
    memcpy(x, x0, total * sizeof(float));
    dap_aug_dsa_op(x, N, C, H, W, DAP_DSA_COLOR, &r);
    for (int i = 0; i < N; i++) {
        float k = (x[i * img + 1] - x[i * img]) / (x0[i * img + 1] - x0[i * img]);
        CHECK_MSG(k >= 0.499f && k < 1.501f, "colour: contrast factor %g", k);
        float off = x[i * img] - k * x0[i * img];
        for (size_t j = 0; j < img; j += 97) CHECK_NEAR(x[i * img + j], k * x0[i * img + j] + off, 1e-4);
    }
    /* the batch op is drawn uniformly */
    int counts[DAP_DSA_NOPS] = {0};
    for (int t = 0; t < 600; t++) counts[dap_rng_below(&r, DAP_DSA_NOPS)]++;
    for (int k = 0; k < DAP_DSA_NOPS; k++) CHECK(counts[k] > 60 && counts[k] < 140);
    /* same seed, same result (scale and rotate included) */
    float *y = dap_alloc_f32(total);
    for (int op = DAP_DSA_SCALE; op <= DAP_DSA_ROTATE; op++) {
        dap_rng a, b;
        dap_rng_init(&a, 4, 2), dap_rng_init(&b, 4, 2);
        memcpy(x, x0, total * sizeof(float)), memcpy(y, x0, total * sizeof(float));
        dap_aug_dsa_op(x, N, C, H, W, op, &a);
        dap_aug_dsa_op(y, N, C, H, W, op, &b);
        CHECK(memcmp(x, y, total * sizeof(float)) == 0);
        CHECK(memcmp(x, x0, total * sizeof(float)) != 0);
    }
    dap_free_aligned(x0), dap_free_aligned(x), dap_free_aligned(y);
}

DAP_TEST(eval_cutmix_rrc) {
    enum { N = 8, C = 3, H = 16, W = 16 };
    size_t img = (size_t)C * H * W;
    float *x = dap_alloc_f32(N * img);
    for (int i = 0; i < N; i++)
        for (size_t j = 0; j < img; j++) x[i * img + j] = (float)i; /* image i is constant i */
    dap_rng r;
    dap_rng_init(&r, 1, 5);
    int perm[N];
    float lam = 1.0f;
    for (int t = 0; t < 10 && lam == 1.0f; t++) lam = dap_aug_cutmix(x, perm, N, C, H, W, &r);
    CHECK(lam < 1.0f);
    for (int i = 0; i < N; i++) {
        int own = 0, other = 0;
        for (size_t j = 0; j < img; j++) own += x[i * img + j] == (float)i, other += x[i * img + j] == (float)perm[i];
        if (perm[i] != i) CHECK_NEAR((double)own / img, lam, 1e-6);
        CHECK(own + (perm[i] != i ? other : 0) == (int)img);
    }
    printf("    cutmix: lambda %.3f matches every image's own share\n", lam);
    /* resized crop + flip keeps a constant image constant; a ramp stays inside its range */
    for (int i = 0; i < N; i++)
        for (size_t j = 0; j < img; j++) x[i * img + j] = i < N / 2 ? (float)i : (float)(j % W) / (W - 1);
    dap_aug_resized_crop_flip(x, N, C, H, W, 0.08f, 1.0f, &r);
    double worst = 0;
    int changed = 0;
    for (int i = 0; i < N; i++)
        for (size_t j = 0; j < img; j++) {
            if (i < N / 2) worst = fmax(worst, fabs(x[i * img + j] - i));
            else CHECK(x[i * img + j] >= -1e-6f && x[i * img + j] <= 1.0f + 1e-6f);
            if (i >= N / 2) changed += fabsf(x[i * img + j] - (float)(j % W) / (W - 1)) > 1e-4f;
        }
    printf("    resized crop: constant images off by %.2g, %d ramp pixels moved\n", worst, changed);
    CHECK(worst < 1e-5 && changed > 0);
    dap_free_aligned(x);
}

/* A plan drawn for a whole batch (the fit loop's pipeline: jitter on [-1, 1], resized crop,
 * the normalisation, one DSA op, CutMix) gives the very bytes of the per-op functions run in
 * the same order from the same stream, whatever the batch size below the plan's room, and
 * leaves the stream where they leave it. */
DAP_TEST(eval_aug_plan_composes_ops) {
    enum { N = 7, C = 3, H = 10, W = 9 };
    size_t img = (size_t)C * H * W;
    float *x0 = dap_alloc_f32(N * img), *a = dap_alloc_f32(N * img), *b = dap_alloc_f32(N * img);
    dap_rng r;
    dap_rng_init(&r, 4, 0);
    dap_rng_uniform(&r, x0, N * img, -1.0f, 1.0f);
    const float na[3] = {1.5f, 0.8f, 2.0f}, nb[3] = {0.1f, -0.2f, 0.3f};
    dap_aug_plan plan;
    dap_aug_plan_init(&plan, N + 3, C, H, W);
    int cases = 0, moved = 0;
    for (int op = 0; op < DAP_DSA_NOPS; op++)
        for (int seed = 0; seed < 4; seed++) {
            int n = N - seed % 2;
            dap_rng ra, rb;
            dap_rng_init(&ra, 10 + seed, 2), dap_rng_init(&rb, 10 + seed, 2);
            /* the per-op path, as the loop ran it before plans */
            memcpy(a, x0, n * img * sizeof(float));
            for (size_t j = 0; j < n * img; j++) a[j] = 0.5f * (a[j] + 1.0f);
            dap_aug_color_jitter(a, n, C, H, W, 0.4f, &ra);
            for (size_t j = 0; j < n * img; j++) a[j] = 2.0f * a[j] - 1.0f;
            dap_aug_resized_crop_flip(a, n, C, H, W, 0.5f, 1.0f, &ra);
            for (int i = 0; i < n; i++)
                for (int k = 0; k < C; k++)
                    for (int j = 0; j < H * W; j++) a[i * img + k * H * W + j] = na[k] * a[i * img + k * H * W + j] + nb[k];
            dap_aug_dsa_op(a, n, C, H, W, op, &ra);
            int perm[N];
            float lam_a = 1.0f;
            for (int t = 0; t < 10 && lam_a == 1.0f; t++) lam_a = dap_aug_cutmix(a, perm, n, C, H, W, &ra);
            /* the plan */
            memcpy(b, x0, n * img * sizeof(float));
            dap_aug_plan_reset(&plan, n);
            dap_aug_plan_jitter(&plan, 0.4f, 1, &rb);
            dap_aug_plan_resized_crop_flip(&plan, 0.5f, 1.0f, &rb);
            dap_aug_plan_scale_shift(&plan, na, nb);
            dap_aug_plan_dsa_op(&plan, op, &rb);
            float lam_b = 1.0f;
            for (int t = 0; t < 10 && lam_b == 1.0f; t++) lam_b = dap_aug_plan_cutmix(&plan, &rb);
            dap_aug_apply(&plan, b);
            CHECK_MSG(!memcmp(a, b, n * img * sizeof(float)), "dsa op %d seed %d: the plan's pixels differ", op, seed);
            CHECK(lam_a == lam_b && lam_a < 1.0f && !memcmp(perm, plan.perm, n * sizeof(int)));
            CHECK(dap_rng_next_u64(&ra) == dap_rng_next_u64(&rb));
            moved += memcmp(a, x0, n * img * sizeof(float)) != 0;
            cases++;
        }
    printf("    %d pipelines: plan == per-op functions byte for byte (%d changed their images)\n", cases, moved);
    CHECK(moved == cases);
    dap_aug_plan_free(&plan);
    dap_free_aligned(x0), dap_free_aligned(a), dap_free_aligned(b);
}

DAP_TEST(eval_subset_and_classes) {
    dap_dataset ds, a, b, c;
    dap_test_toy_set(&ds, 10, 1);
    CHECK(dap_random_subset(&a, &ds, 3, 7) == DAP_OK);
    CHECK(dap_random_subset(&b, &ds, 3, 7) == DAP_OK);
    CHECK(dap_random_subset(&c, &ds, 3, 8) == DAP_OK);
    CHECK(a.n == 12);
    for (int k = 0; k < 4; k++) CHECK(a.class_count[k] == 3);
    CHECK(memcmp(a.x, b.x, (size_t)a.n * 64 * sizeof(float)) == 0);
    CHECK(memcmp(a.x, c.x, (size_t)a.n * 64 * sizeof(float)) != 0);
    CHECK(dap_random_subset(&c, &ds, 11, 7) == DAP_ERR_VALUE); /* c is left untouched */
    CHECK(strstr(dap_last_error(), "T-shirt/top") != NULL);
    /* a folder's classes, alphabetical and sanitised, mapped back */
    dap_dataset f;
    dap_test_toy_set(&f, 2, 3);
    const char *folder_names[4] = {"d", "T-shirt_top", "c", "1"}; /* "1": a class number */
    for (int k = 0; k < 4; k++) free(f.class_names[k]), f.class_names[k] = dap_strdup(folder_names[k]);
    CHECK_MSG(dap_dataset_match_classes(&f, &ds) == DAP_OK, "%s", dap_last_error());
    int want[4] = {3, 0, 2, 1};
    for (int i = 0; i < f.n; i++) CHECK(f.y[i] == want[i % 4]);
    CHECK(!strcmp(f.class_names[0], "T-shirt/top") && f.class_count[0] == 2);
    free(f.class_names[2]), f.class_names[2] = dap_strdup("zebra");
    CHECK(dap_dataset_match_classes(&f, &ds) == DAP_ERR_MISSING);
    CHECK(strstr(dap_last_error(), "zebra") != NULL);
    dap_dataset_free(&f), dap_dataset_free(&a), dap_dataset_free(&b), dap_dataset_free(&c);
    dap_dataset_free(&ds);
}

DAP_TEST(eval_lr_schedules) {
    dap_fit_config c;
    dap_fit_config_hard(&c, 300, DAP_AUG_NONE);
    CHECK(c.batch == 256 && c.lr == 0.01 && c.momentum == 0.9 && c.wd == 5e-4);
    CHECK_NEAR(dap_fit_lr(&c, 149), 0.01, 1e-12);
    CHECK_NEAR(dap_fit_lr(&c, 150), 0.001, 1e-12);
    dap_fit_config_imagenet(&c, 10);
    CHECK(c.epochs == 2000 && c.batch == 64);
    CHECK_NEAR(dap_fit_lr(&c, 1332), 0.01, 1e-12);
    CHECK_NEAR(dap_fit_lr(&c, 1333), 0.002, 1e-12);
    
    CHECK_NEAR(dap_fit_lr(&c, 1665), 0.002, 1e-12);
    CHECK_NEAR(dap_fit_lr(&c, 1666), 0.0004, 1e-12);
    dap_fit_config_soft(&c, NULL, 300);
    CHECK(c.optimizer == DAP_OPT_ADAMW && c.temperature == 20.0);
    CHECK_NEAR(dap_fit_lr(&c, 0), 1e-3, 1e-12);
    CHECK_NEAR(dap_fit_lr(&c, 150), 5e-4, 1e-12);
}

/* Two identical toy ConvNets (depth, width, norm) on 8x8x1 inputs and 4 classes: the
 * normalisation of `train` and the weights of `seed`, so two trainings can be compared. */
static void twin_convnets(dap_classifier *a, dap_classifier *b, int depth, int width, int norm,
                          const dap_dataset *train, uint64_t seed) {
    memset(a, 0, sizeof *a), memset(b, 0, sizeof *b);
    CHECK(dap_convnet_create(&a->net, depth, width, norm, 1, 8, 8, 4) == DAP_OK);
    CHECK(dap_convnet_create(&b->net, depth, width, norm, 1, 8, 8, 4) == DAP_OK);
    dap_classifier_set_normalization(a, train, 0);
    b->mean[0] = a->mean[0], b->std[0] = a->std[0];
    dap_classifier_init_weights(a, seed);
    dap_classifier_init_weights(b, seed);
}

/* Train ConvNet-3 on the toy set: it must fit it, reproduce itself per seed, and the
 * DSA and soft-label paths must run and learn. */
DAP_TEST(eval_train_toy) {
    int fast = getenv("DAP_TEST_FAST") != NULL;
    dap_dataset train, test;
    dap_test_toy_set(&train, 8, 1);
    dap_test_toy_set(&test, 25, 2);
    dap_classifier m, m2; /* ConvNet-3 of width 32: quick under the sanitizers */
    twin_convnets(&m, &m2, 3, 32, DAP_NORM_INSTANCE, &train, 3);
    double before = dap_classifier_accuracy(&m, &test);
    dap_fit_config cfg;
    dap_fit_config_hard(&cfg, 40, DAP_AUG_NONE); /* the teacher below needs it */
    cfg.batch = 8, cfg.seed = 11;
    dap_fit_result r1, r2;
    CHECK(dap_classifier_train(&m, &train, &cfg, &r1) == DAP_OK);
    CHECK(dap_classifier_train(&m2, &train, &cfg, &r2) == DAP_OK);
    double after = dap_classifier_accuracy(&m, &test);
    printf("    hard: test acc %.1f%% -> %.1f%%, last loss %.4f, %.0f img/s\n", before, after, r1.loss, r1.images_per_s);
    CHECK(after >= 95.0);
    CHECK(memcmp(m.net.params.data, m2.net.params.data, m.net.params.total * sizeof(float)) == 0);
    /* DSA */
    dap_classifier_init_weights(&m2, 4);
    cfg.aug = DAP_AUG_DSA, cfg.epochs = fast ? 15 : 40;
    CHECK(dap_classifier_train(&m2, &train, &cfg, &r2) == DAP_OK);
    double dsa = dap_classifier_accuracy(&m2, &test);
    printf("    dsa:  test acc %.1f%%, last loss %.4f\n", dsa, r2.loss);
    CHECK(dsa >= (fast ? 50.0 : 90.0));
    /* soft labels from the hard-trained model */
    dap_classifier s;
    memset(&s, 0, sizeof s);
    CHECK(dap_convnet_create(&s.net, 3, 32, DAP_NORM_BATCH, 1, 8, 8, 4) == DAP_OK);
    dap_classifier_set_normalization(&s, &train, 0);
    dap_classifier_init_weights(&s, 5);
    dap_fit_config_soft(&cfg, &m, 40);
    cfg.aug = DAP_AUG_NONE, cfg.cutmix = 0.5, cfg.batch = 16, cfg.seed = 2;
    CHECK(dap_classifier_train(&s, &train, &cfg, &r2) == DAP_OK);
    double soft = dap_classifier_accuracy(&s, &test);
    printf("    soft: test acc %.1f%%, last KL %.5f\n", soft, r2.loss);
    CHECK(soft >= 90.0);
    /* a set that does not fit the model */
    dap_dataset bad;
    dap_test_toy_set(&bad, 1, 1);
    bad.y[0] = 7;
    CHECK(dap_classifier_train(&s, &bad, &cfg, NULL) == DAP_ERR_VALUE);
    CHECK(strstr(dap_last_error(), "label 7") != NULL);
    dap_dataset_free(&bad);
    dap_classifier_free(&s), dap_classifier_free(&m), dap_classifier_free(&m2);
    dap_dataset_free(&train), dap_dataset_free(&test);
}

/* A run stopped at epoch ends and resumed from its state file (twice, once across the
 * rate decay and optimizer restart at the half) ends bit for bit where the uninterrupted
 * run ends: weights, BatchNorm buffers, optimizer, data order and augmentation stream all
 * come back. A state made for another run, or a damaged one, is refused. */
static void resume_case(int optimizer, int aug, const char *tag) {
    dap_dataset train;
    dap_test_toy_set(&train, 12, 1);
    dap_classifier a, b;
    twin_convnets(&a, &b, 2, 16, DAP_NORM_BATCH, &train, 7);
    dap_fit_config cfg;
    dap_fit_config_hard(&cfg, 10, aug);
    cfg.batch = 20, cfg.seed = 5, cfg.optimizer = optimizer; /* 48 images: 3 batches an epoch */
    if (optimizer == DAP_OPT_ADAMW) cfg.lr = 1e-3, cfg.wd = 0.01;
    dap_fit_result ra, rb;
    CHECK(dap_classifier_train(&a, &train, &cfg, &ra) == DAP_OK);

    char path[600];
    snprintf(path, sizeof path, "%s", dap_test_path(tag));
    cfg.state_path = path, cfg.state_key = "toy run 0", cfg.state_resume = 1, cfg.state_every = 1e9;
    cfg.stop_after = 3; /* epochs 1-3 */
    CHECK(dap_classifier_train(&b, &train, &cfg, &rb) == DAP_FIT_STOPPED);
    CHECK(dap_file_exists(path) && rb.resumed_epochs == 0);
    /* a fresh model: everything must come from the file */
    dap_classifier_init_weights(&b, 99);
    cfg.stop_after = 4; /* epochs 4-7: across the decay at epoch 6 */
    CHECK(dap_classifier_train(&b, &train, &cfg, &rb) == DAP_FIT_STOPPED);
    CHECK(rb.resumed_epochs == 3);
    cfg.stop_after = 0;
    CHECK(dap_classifier_train(&b, &train, &cfg, &rb) == DAP_OK);
    CHECK(rb.resumed_epochs == 7);
    CHECK_MSG(memcmp(a.net.params.data, b.net.params.data, a.net.params.total * sizeof(float)) == 0,
              "%s: resumed weights differ from the uninterrupted run's", tag);
    CHECK(ra.loss == rb.loss && ra.train_acc == rb.train_acc);

    /* the state of epoch 7 is still there (the caller removes it): another run's key is refused */
    cfg.state_key = "toy run 1";
    CHECK(dap_classifier_train(&b, &train, &cfg, NULL) == DAP_ERR_ARG);
    CHECK(strstr(dap_last_error(), "another run") != NULL);
    /* a damaged file is refused with its name */
    cfg.state_key = "toy run 0";
    uint8_t *bytes;
    size_t n;
    CHECK(dap_read_file(path, &bytes, &n) == DAP_OK);
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, n / 2, f);
    fclose(f);
    free(bytes);
    CHECK(dap_classifier_train(&b, &train, &cfg, NULL) != DAP_OK);
    CHECK(strstr(dap_last_error(), tag) != NULL);
    /* without state_resume the file is not read */
    cfg.state_resume = 0, cfg.state_path = NULL;
    CHECK(dap_classifier_train(&b, &train, &cfg, NULL) == DAP_OK);
    remove(path);
    dap_classifier_free(&a), dap_classifier_free(&b);
    dap_dataset_free(&train);
}

DAP_TEST(eval_train_state_resume) {
    resume_case(DAP_OPT_SGD, DAP_AUG_DSA, "sgd-dsa.state");
    resume_case(DAP_OPT_ADAMW, DAP_AUG_NONE, "adamw.state");
}
