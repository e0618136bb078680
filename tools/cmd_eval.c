/*
 * cmd_eval.c: `dap eval`: scores a training set (a distilled image folder, the full
 * training split or a random real subset) under an evaluation protocol: trains
 * --runs fresh networks and reports the mean +- std of their top-1 accuracy on the
 * real test set (or, with --val N, on N images per class held out of the training
 * split, which is what ablations must use). Every run goes to the --json file.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/blas.h"
#include "core/core.h"
#include "core/device.h"
#include "data/dataset.h"
#include "data/imagenet.h"
#include "eval/classifier.h"
#include "eval/subset.h"
#include "eval/fit.h"
#include "ops/ops.h"
#include "io/io.h"

#define MAX_RUNS 100

static int parse_aug(const char *s, int *aug) {
    if (!strcmp(s, "none")) *aug = DAP_AUG_NONE;
    else if (!strcmp(s, "dsa")) *aug = DAP_AUG_DSA;
    else if (!strcmp(s, "imagenet")) *aug = DAP_AUG_IMAGENET;
    else if (!strcmp(s, "rrc")) *aug = DAP_AUG_RRC;
    else return 0;
    return 1;
}

static int is_fmnist(const char *data) { return !strncmp(data, "fmnist", 6); }

/* Whether a class folder name is a wnid of the built-in subset (any ImageNet-1K wnid for
 * "imagenet"). */
static int subset_has(const dap_imagenet_subset *sub, const char *name) {
    if (!sub->wnids) return dap_imagenet_index(name) >= 0;
    for (int k = 0; k < sub->n; k++)
        if (!strcmp(sub->wnids[k], name)) return 1;
    return 0;
}

/* The --data a dap distill folder was made from (its .dap-distill-params line, "data=SPEC
 * [model=...] holdout=..."), into `out`; "" when `dir` has none. */
static void set_data_of(const char *dir, char *out, size_t n) {
    char path[4096], line[4096];
    *out = 0;
    snprintf(path, sizeof path, "%s/.dap-distill-params", dir);
    if (!cli_read_text(path, line, sizeof line) || strncmp(line, "data=", 5)) return;
    const char *v = line + 5, *end = strstr(v, " model=");
    const char *h = strstr(v, " holdout=");
    if (!end || (h && h < end)) end = h;
    if (!end || end == v || (size_t)(end - v) >= n) return;
    snprintf(out, n, "%.*s", (int)(end - v), v);
}

/* For ImageNet-style data, before anything is decoded: every class folder of the --train
 * set must be a wnid of the subset (a set distilled from another subset is refused). */
static int check_set_wnids(const char *train_spec, const char *data, const dap_imagenet_subset *sub) {
    dap_image_files f;
    DAP_TRY(dap_image_files_list(&f, train_spec, "train"));
    int rc = DAP_OK;
    for (int k = 0; k < f.num_classes && rc == DAP_OK; k++)
        if (!subset_has(sub, f.class_names[k]))
            rc = dap_error(DAP_ERR_VALUE,
                           "--train %s: class folder '%s' is not %s of %s (--data %s): was the set made from other "
                           "data? Evaluate it with the --data it was distilled from",
                           train_spec, f.class_names[k], sub->wnids ? "a class" : "an ImageNet-1K wnid", sub->name,
                           data);
    dap_image_files_free(&f);
    return rc;
}

/* What every run shares (read-only while runs train). */
typedef struct eval_ctx {
    const char *arch, *data;
    const dap_dataset *real, *base, *folder, *eval_set;
    dap_classifier *teacher; /* soft protocol, else NULL (holds buffers: one run at a time) */
    int random_ipc, ipc_hint, soft, inet, aug, epochs, batch, quiet, runs, seed, val;
    double lr, cutmix;
    const char *json, *params; /* mid-run states: JSON.runR.state, keyed by params + run */
    int resume;
    double state_every;        /* < 0: no mid-run states */
} eval_ctx;

/* The mid-run state file of run `run` (NULL when the runs keep none). */
static char *state_file(const eval_ctx *c, int run) {
    if (!c->json || c->state_every < 0) return NULL;
    size_t n = strlen(c->json) + 32;
    char *p = dap_malloc(n);
    snprintf(p, n, "%s.run%d.state", c->json, run);
    return p;
}

typedef struct run_result {
    int done; /* trained here or taken from the journal */
    int rc;
    char err[512];
    double acc;
    dap_fit_result fit;
    int n_train;
    dap_fit_config cfg;
} run_result;

/* The run journal (JSON path + ".runs"): every finished run, rewritten atomically after
 * each, so that --resume skips them. Line 1 names the format, line 2 the parameters
 * that define a run's result (a journal made with others is refused), then one line a
 * run: index, accuracy, train accuracy, loss, seconds, images, epochs, batch, lr, cutmix. */
#define JOURNAL_MAGIC "dap eval runs v1"

static void journal_path(char *buf, size_t n, const char *json) { snprintf(buf, n, "%s.runs", json); }

static int journal_save(const char *json, const char *params, const run_result *res, int runs) {
    size_t cap = 4096 + (size_t)runs * 256, len = 0;
    char *buf = dap_malloc(cap), path[4096];
    len += (size_t)snprintf(buf + len, cap - len, "%s\nparams %s\n", JOURNAL_MAGIC, params);
    for (int r = 0; r < runs; r++) {
        const run_result *q = &res[r];
        if (!q->done || q->rc) continue;
        len += (size_t)snprintf(buf + len, cap - len, "run %d %.17g %.17g %.17g %.17g %d %d %d %.17g %.17g\n", r, q->acc,
                                q->fit.train_acc, q->fit.loss, q->fit.seconds, q->n_train, q->cfg.epochs,
                                q->cfg.batch, q->cfg.lr, q->cfg.cutmix);
    }
    journal_path(path, sizeof path, json);
    int rc = dap_write_file_atomic(path, buf, len);
    free(buf);
    return rc;
}

/* The journal's parameters are this run's; a journal written before the training set's
 * content hash (" set=...", at the end) existed matches without it. */
static int same_params(const char *journal, const char *params) {
    size_t n = strlen(journal);
    return !strcmp(journal, params) || (!strncmp(journal, params, n) && !strncmp(params + n, " set=", 5));
}

/* Marks the runs the journal holds as done; 0 runs when there is no journal. */
static int journal_load(const char *json, const char *params, run_result *res, int runs, int *loaded) {
    char path[4096];
    journal_path(path, sizeof path, json);
    *loaded = 0;
    uint8_t *d;
    size_t n;
    if (dap_read_file(path, &d, &n) != DAP_OK) return DAP_OK; /* nothing to resume */
    char *text = dap_malloc(n + 1);
    memcpy(text, d, n), text[n] = 0;
    free(d);
    int rc = DAP_OK, line_no = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && rc == DAP_OK; line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        if (line_no == 1) {
            if (strcmp(line, JOURNAL_MAGIC)) rc = dap_error(DAP_ERR_FORMAT, "%s is not a dap eval run journal", path);
        } else if (line_no == 2) {
            if (strncmp(line, "params ", 7) || !same_params(line + 7, params))
                rc = dap_error(DAP_ERR_ARG, "%s was made with other parameters (%s); use another --json or drop --resume",
                               path, strncmp(line, "params ", 7) ? "?" : line + 7);
        } else {
            run_result q;
            memset(&q, 0, sizeof q);
            int r, used = 0;
            if (sscanf(line, "run %d %lf %lf %lf %lf %d %d %d %lf %lf%n", &r, &q.acc, &q.fit.train_acc, &q.fit.loss,
                       &q.fit.seconds, &q.n_train, &q.cfg.epochs, &q.cfg.batch, &q.cfg.lr, &q.cfg.cutmix, &used) != 10 ||
                line[used] != 0 || r < 0 || !isfinite(q.acc) || q.acc < 0 || q.acc > 100 || q.n_train < 1)
                rc = dap_error(DAP_ERR_FORMAT, "%s line %d: not a run record", path, line_no);
            else if (r < runs && !res[r].done) {
                q.done = 1;
                res[r] = q;
                (*loaded)++;
            }
        }
    }
    if (rc == DAP_OK && line_no < 2) rc = dap_error(DAP_ERR_FORMAT, "%s is truncated", path);
    free(text);
    return rc;
}

/* Trains run `run` (seed + run) from scratch and scores it; everything it touches besides
 * the shared read-only inputs is its own, so runs may train concurrently. */
static void train_one(const eval_ctx *c, int run, run_result *out) {
    uint64_t s = (uint64_t)c->seed + (uint64_t)run;
    dap_dataset sub;
    const dap_dataset *tr = c->base;
    int rc = DAP_OK;
    memset(out, 0, sizeof *out);
    if (c->random_ipc) {
        rc = dap_random_subset(&sub, c->base, c->random_ipc, s);
        tr = &sub;
    } else if (c->folder) {
        tr = c->folder;
    }
    if (rc == DAP_OK) {
        int ipc = c->ipc_hint > 0 ? c->ipc_hint : (tr->n + tr->num_classes - 1) / tr->num_classes;
        dap_fit_config *cfg = &out->cfg;
        if (c->soft) dap_fit_config_soft(cfg, c->teacher, c->epochs > 0 ? c->epochs : 300);
        else if (c->inet) dap_fit_config_imagenet(cfg, ipc);
        else dap_fit_config_hard(cfg, c->epochs > 0 ? c->epochs : c->aug == DAP_AUG_DSA ? 1000 : 300, c->aug);
        cfg->aug = c->aug;
        if (c->epochs > 0) cfg->epochs = c->epochs;
        if (c->batch > 0) cfg->batch = c->batch;
        if (c->lr > 0) cfg->lr = c->lr;
        if (c->cutmix >= 0) cfg->cutmix = c->cutmix;
        cfg->seed = s, cfg->progress = !c->quiet;
        char label[64];
        snprintf(label, sizeof label, "eval %s run %d/%d", c->arch, run + 1, c->runs);
        cfg->label = label;
        char *state = state_file(c, run), *key = NULL;
        if (state) {
            size_t n = strlen(c->params) + 32;
            key = dap_malloc(n);
            snprintf(key, n, "%s run=%d", c->params, run);
            cfg->state_path = state, cfg->state_key = key, cfg->state_every = c->state_every;
            cfg->state_resume = c->resume;
        }
        dap_classifier m;
        rc = dap_classifier_create(&m, c->arch, c->real->c, c->real->h, c->real->w, c->real->num_classes);
        if (rc == DAP_OK) {
            dap_classifier_set_normalization(&m, c->real, is_fmnist(c->data));
            dap_classifier_init_weights(&m, s);
            rc = dap_classifier_train(&m, tr, cfg, &out->fit);
            if (rc == DAP_OK) {
                out->acc = dap_classifier_accuracy(&m, c->eval_set);
                fprintf(stderr, "eval: run %d/%d  %s  %d images  %s accuracy %.2f%%  (%.1f s)\n", run + 1, c->runs,
                        c->arch, tr->n, c->val > 0 ? "val" : "test", out->acc,
                        out->fit.seconds);
            }
            dap_classifier_free(&m);
        }
        cfg->label = NULL, cfg->state_path = NULL, cfg->state_key = NULL;
        free(state), free(key);
        out->n_train = tr->n;
        if (c->random_ipc) dap_dataset_free(&sub);
    }
    out->rc = rc, out->done = 1;
    if (rc) snprintf(out->err, sizeof out->err, "%s", dap_last_error());
}

/* Once the journal holds run `run`, its mid-run state has served. */
static void drop_state(const eval_ctx *c, int run) {
    char *p = state_file(c, run);
    if (p) remove(p);
    free(p);
}

int cmd_eval(int argc, char **argv) {
    const char *data = NULL, *train_spec = NULL, *arch = "convnet3", *aug_s = NULL;
    const char *protocol = "hard", *teacher_path = NULL, *json = NULL, *device = NULL, *gpu_s = NULL, *test_spec = NULL;
    int image_size = 0, channels = 0;
    int runs = 3, epochs = 0, seed = 0, val = 0, split_seed = 0, batch = 0, threads = 0, quiet = 0, ipc_hint = 0;
    int jobs = 1, resume = 0, rc_early = 0;
    double lr = 0, cutmix = -1, state_every = 60;
    flag flags[] = {
        {"data", FLAG_STR, &data, "the real data: fmnist, fmnist:DIR, an IDX file, an image folder ROOT with ROOT/train/<class>/ and ROOT/test/<class>/ (or val/), or imagenette:DIR, imagewoof:DIR, imageidc:DIR, imagenet:DIR (wnid folders, test split DIR/val; needs --image-size, 224 for the paper's recipe). Default: the data a dap distill folder was made from, else fmnist"},
        {"test", FLAG_STR, &test_spec, "the test set, when --data has none (an image folder or IDX file; never the training images)"},
        {"image-size", FLAG_INT, &image_size, "evaluate at this size: the real images and a --train folder are resized and centre-cropped to it (0: the data's)", 0, 4096},
        {"channels", FLAG_INT, &channels, "evaluate with 1 or 3 channels (0: the data's)", 0, 3},
        {"train", FLAG_STR, &train_spec, "what to train on: DIR (an image folder), full, or random:IPC"},
        {"arch", FLAG_STR, &arch, "convnet3 (convnetD), resnetap10, resnet18 [+ -bn/-in/-nn]"},
        {"runs", FLAG_INT, &runs, "training runs (fresh weights each)", 1, MAX_RUNS},
        {"epochs", FLAG_INT, &epochs, "epochs (0: the protocol's: 300, 1000 with dsa, ImageNet by IPC)", 0, 1000000},
        {"aug", FLAG_STR, &aug_s, "none, dsa, imagenet (crop+flip+jitter) or rrc (default: the protocol's)"},
        {"protocol", FLAG_STR, &protocol, "hard (one-hot labels), soft (teacher KL) or imagenet (subset recipe)"},
        {"teacher", FLAG_STR, &teacher_path, "teacher checkpoint for --protocol soft (dap teacher)"},
        {"seed", FLAG_INT, &seed, "seed of run 0 (run r uses seed + r)", 0, FLAG_INT_MAX},
        {"json", FLAG_STR, &json, "write every run and the summary to this JSON file"},
        {"val", FLAG_INT, &val, "score on N images per class held out of the training split instead of the test set", 0, 1000000},
        {"split-seed", FLAG_INT, &split_seed, "seed of the --val split (as dap distill --split-seed)", 0, FLAG_INT_MAX},
        {"batch", FLAG_INT, &batch, "batch size (0: the protocol's)", 0, 100000},
        {"lr", FLAG_FLOAT, &lr, "learning rate (0: the protocol's)", 0, 100},
        {"cutmix", FLAG_FLOAT, &cutmix, "CutMix probability per batch (-1: the protocol's)", -1, 1},
        {"ipc", FLAG_INT, &ipc_hint, "images per class of the set, for the ImageNet epoch rule (0: counted)", 0, 1000000},
        CLI_THREADS_FLAG(&threads),
        {"jobs", FLAG_INT, &jobs, "runs trained at once, one thread each (faster for small sets; 1: one run at a time on all threads)", 1, CLI_THREADS_MAX},
        {"device", FLAG_STR, &device, "cpu or cuda: where the networks train (cuda: a build made with make CUDA=1; default $DAP_DEVICE, else cpu)"},
        {"gpu", FLAG_STR, &gpu_s, CLI_GPU_HELP},
        {"resume", FLAG_BOOL, &resume, "keep the runs already finished in the --json file's journal (FILE.runs) and go on from the state of unfinished ones (FILE.runR.state)"},
        {"state-every", FLAG_FLOAT, &state_every, "with --json, on the CPU: write each unfinished run's state at most every this many seconds, at an epoch's end (-1: never)", -1, 1000000000},
        {"quiet", FLAG_BOOL, &quiet, "no per-epoch progress"},
    };
    const char *pos[1];
    int npos;
    int r = flags_parse("eval", "--train DIR|full|random:IPC [--data fmnist|ROOT] [--test DIR] [--arch A] [--runs N] ...",
                        "Trains fresh networks on a training set and reports the real test (or --val) accuracy, mean +- std over the runs.",
                        flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (r) return r == 1 ? 0 : 2;
    if (!train_spec) return cli_failf("eval", "--train is required (an image folder, full, or random:IPC)");
    if (cutmix != -1 && !(cutmix >= 0))
        return cli_failf("eval", "--cutmix must be a probability in [0, 1], or -1 for the protocol's, got %g", cutmix);
    if (!(state_every >= 0) && state_every != -1)
        return cli_failf("eval", "--state-every must be seconds >= 0, or -1 for never, got %g", state_every);
    if (runs < 1 || runs > MAX_RUNS) return cli_failf("eval", "--runs must be 1..%d, got %d", MAX_RUNS, runs);
    if (epochs < 0) return cli_failf("eval", "--epochs must be >= 0, got %d", epochs);
    if (val < 0) return cli_failf("eval", "--val must be >= 0, got %d", val);
    if (batch < 0) return cli_failf("eval", "--batch must be >= 0, got %d", batch);
    if (jobs < 1) return cli_failf("eval", "--jobs must be >= 1, got %d", jobs);
    if (image_size < 0 || image_size > 4096)
        return cli_failf("eval", "--image-size must be 1..4096 (0: the data's), got %d", image_size);
    if (channels != 0 && channels != 1 && channels != 3)
        return cli_failf("eval", "--channels must be 1 or 3 (0: the data's), got %d", channels);
    if (test_spec && val > 0) return cli_failf("eval", "--test and --val both pick what is scored: give one of them");
    if (resume && !json) return cli_failf("eval", "--resume needs --json FILE (the run journal is FILE.runs)");
    if (json && cli_check_writable("json", json)) return cli_fail("eval", DAP_ERR_IO); /* and its journal, beside it */
    int soft = !strcmp(protocol, "soft"), inet = !strcmp(protocol, "imagenet");
    if (!soft && !inet && strcmp(protocol, "hard"))
        return cli_failf("eval", "--protocol must be hard, soft or imagenet, got '%s'", protocol);
    if (soft && !teacher_path) return cli_failf("eval", "--protocol soft needs --teacher FILE (see dap teacher)");
    if (!soft && teacher_path) return cli_failf("eval", "--teacher is only used with --protocol soft");
    int aug = soft ? DAP_AUG_RRC : inet ? DAP_AUG_IMAGENET : DAP_AUG_NONE;
    if (aug_s && !parse_aug(aug_s, &aug))
        return cli_failf("eval", "--aug must be none, dsa, imagenet or rrc, got '%s'", aug_s);
    int random_ipc = 0;
    if (!strncmp(train_spec, "random:", 7)) {
        char *end;
        long v = strtol(train_spec + 7, &end, 10);
        if (*end || v < 1 || v > 100000)
            return cli_failf("eval", "--train random:IPC needs a positive IPC, got '%s'", train_spec);
        random_ipc = (int)v;
    }
    int from_folder = strcmp(train_spec, "full") != 0 && !random_ipc;
    /* A folder made by dap distill names its data: the default --data, so that a set of
     * other data is not tested on Fashion-MNIST by mistake. */
    char made_from[1024] = "";
    if (from_folder) set_data_of(train_spec, made_from, sizeof made_from);
    if (!data && *made_from) {
        data = made_from;
        if (!quiet) fprintf(stderr, "dap eval: data %s (from %s/.dap-distill-params)\n", data, train_spec);
    } else if (data && *made_from && strcmp(data, made_from))
        fprintf(stderr, "dap eval: note: %s was distilled from --data %s; testing with --data %s\n", train_spec,
                made_from, data);
    if (!data) data = "fmnist";
    const dap_imagenet_subset *inet_sub = NULL;
    const char *inet_dir = NULL;
    if (dap_imagenet_spec(data, &inet_sub, &inet_dir)) {
        /* ImageNet images differ in size: the evaluation's resolution is the user's to say */
        if (image_size == 0)
            return cli_failf("eval", "--data %s: ImageNet images differ in size: give --image-size 224 (the "
                                     "ImageNet-subset evaluation's resolution; the real images and the --train set "
                                     "are both resized and centre-cropped to it)", data);
        if (from_folder && (rc_early = check_set_wnids(train_spec, data, inet_sub)))
            return cli_fail("eval", rc_early);
    }
    cli_apply_threads(threads);
    if (cli_select_device("eval", device, NULL, gpu_s)) return 1;
    int rc = 0;
    if (dap_device() != DAP_DEVICE_CPU && !quiet) fprintf(stderr, "eval: device %s\n", dap_device_describe());

    dap_classifier teacher;
    if (soft) { /* first: a teacher of another size is refused before the data is read */
        rc = dap_classifier_load(&teacher, teacher_path);
        if (!rc && ((image_size && (teacher.net.in_h != image_size || teacher.net.in_w != image_size)) ||
                    (channels && teacher.net.in_c != channels)))
            rc = dap_error(DAP_ERR_SHAPE, "--teacher %s takes %dx%dx%d images (C x H x W), not the --image-size %d "
                                          "--channels %d asked for: give --image-size %d (the teacher's), or a teacher "
                                          "trained at this size (dap teacher --image-size %d)",
                           teacher_path, teacher.net.in_c, teacher.net.in_h, teacher.net.in_w, image_size, channels,
                           teacher.net.in_h, image_size);
        if (rc) return cli_fail("eval", rc);
    }
    dap_dataset real, test, real_train, val_set, folder;
    memset(&folder, 0, sizeof folder);
    rc = dap_dataset_load(&real, data, "train", image_size, channels);
    if (rc) return cli_fail("eval", rc);
    char note[256];
    if (dap_dataset_prep_note(&real, note, sizeof note)) fprintf(stderr, "eval: data %s: %s\n", data, note);
    /* which files are the test set, and a refusal when they are the training images */
    char *train_path = NULL, *test_path = NULL;
    if (val == 0) {
        train_path = dap_dataset_split_path(data, "train");
        test_path = test_spec ? dap_dataset_split_path(test_spec, dap_dataset_has_splits(test_spec) ? "test" : "train")
                              : dap_dataset_split_path(data, "test");
        const char *same = NULL;
        if (train_path && test_path && !strcmp(train_path, test_path)) same = "--data's training split";
        else if (test_path && strcmp(train_spec, "full") && !random_ipc) {
            char *set_path = dap_dataset_split_path(train_spec, "train");
            if (set_path && !strcmp(set_path, test_path)) same = "--train";
            free(set_path);
        }
        if (same) {
            rc = cli_failf("eval", "the test set %s is %s: a network would be tested on its own training images; give "
                                   "a held-out test set (--test DIR, or --data ROOT with ROOT/train/ and ROOT/test/) or "
                                   "score on a validation split (--val N)", test_path, same);
            free(train_path), free(test_path);
            dap_dataset_free(&real);
            return rc;
        }
    }
    const dap_dataset *eval_set, *base = &real;
    if (val > 0) {
        for (int k = 0; k < real.num_classes; k++)
            if (real.class_count[k] <= val) {
                const int have = real.class_count[k]; /* read before the set is freed */
                dap_dataset_free(&real);
                free(train_path), free(test_path);
                return cli_failf("eval", "--val %d: class %d has only %d training images", val, k, have);
            }
        dap_dataset_split(&real, val, (unsigned long long)split_seed, &real_train, &val_set);
        base = &real_train, eval_set = &val_set;
    } else {
        /* at the data's size; a kept non-square size is not resized into a square */
        rc = dap_dataset_load_test(&test, data, test_spec, real.h == real.w ? real.h : 0, real.c);
        if (!rc && (test.c != real.c || test.h != real.h || test.w != real.w)) {
            rc = dap_error(DAP_ERR_SHAPE, "the test set %s has %dx%dx%d images (C x H x W), the training split of %s "
                                          "%dx%dx%d: give --image-size to bring both to one square size",
                           test_spec ? test_spec : data, test.c, test.h, test.w, data, real.c, real.h, real.w);
            dap_dataset_free(&test);
        }
        if (!rc && dap_dataset_hash(&test) == dap_dataset_hash(&real))
            rc = dap_error(DAP_ERR_ARG, "the test set %s holds the same images as the training split of %s: give a "
                                        "held-out test set (--test DIR) or use --val N", test_spec ? test_spec : data, data);
        if (!rc && test_spec) rc = dap_dataset_match_classes(&test, &real); /* by name, onto the data's labels */
        if (!rc && dap_dataset_prep_note(&test, note, sizeof note))
            fprintf(stderr, "eval: test set %s: %s\n", test_spec ? test_spec : data, note);
        if (rc) {
            free(train_path), free(test_path);
            dap_dataset_free(&real);
            return cli_fail("eval", rc);
        }
        eval_set = &test;
        if (inet_sub) /* which images, at which size */
            fprintf(stderr, "eval: %s at %d px (shorter side resized, centre crop): %d training images in %s, test set "
                            "%s (%d images)\n",
                    data, real.h, real.n, train_path ? train_path : data, test_path ? test_path : "?", test.n);
    }
    free(train_path);
    if (from_folder) {
        /* the set as it is, unless --image-size / --channels were given: then it is brought
         * to them as the real images are (same resize + centre crop), and the log says so;
         * without them a set whose size or channels differ from the data's is refused */
        rc = dap_dataset_load(&folder, train_spec, "train", image_size, channels);
        if (!rc && dap_dataset_prep_note(&folder, note, sizeof note))
            fprintf(stderr, "eval: --train %s: %s, as asked by --image-size %d --channels %d (0: the data's)\n",
                    train_spec, note, image_size, channels);
        if (!rc && (folder.c != real.c || folder.h != real.h || folder.w != real.w))
            rc = dap_error(DAP_ERR_SHAPE,
                           "--train %s has %dx%dx%d images (C x H x W), the evaluation data %s has %dx%dx%d: evaluate "
                           "it on data of its own size (--data, --test), or give --image-size / --channels to bring "
                           "the real images and the set to one size",
                           train_spec, folder.c, folder.h, folder.w, data, real.c, real.h, real.w);
        if (!rc) rc = dap_dataset_match_classes(&folder, &real);
        for (int k = 0; !rc && k < real.num_classes; k++)
            if (folder.class_count[k] == 0)
                rc = dap_error(DAP_ERR_VALUE, "--train %s has no images of class '%s' of %s (%d classes): a network "
                                              "trained on it could not learn that class",
                               train_spec, real.class_names[k], data, real.num_classes);
        if (rc) {
            free(test_path);
            dap_dataset_free(&folder);
            if (val > 0) dap_dataset_free(&real_train), dap_dataset_free(&val_set);
            else dap_dataset_free(&test);
            dap_dataset_free(&real);
            return cli_fail("eval", rc);
        }
    }
    if (soft) {
        if (teacher.net.in_c != real.c || teacher.net.in_h != real.h || teacher.net.in_w != real.w) {
            rc = dap_error(DAP_ERR_SHAPE,
                           "--teacher %s takes %dx%dx%d images (C x H x W), the evaluation data %s is %dx%dx%d: give "
                           "--image-size %d%s (the teacher's), or a teacher trained at this size (dap teacher "
                           "--image-size %d)",
                           teacher_path, teacher.net.in_c, teacher.net.in_h, teacher.net.in_w, data, real.c, real.h,
                           real.w, teacher.net.in_h, teacher.net.in_c != real.c ? " and --channels" : "", real.h);
            dap_classifier_free(&teacher);
            return cli_fail("eval", rc);
        }
    }

    eval_ctx c = {.arch = arch, .data = data, .real = &real, .base = base, .folder = from_folder ? &folder : NULL,
                  .eval_set = eval_set, .teacher = soft ? &teacher : NULL, .random_ipc = random_ipc,
                  .ipc_hint = ipc_hint, .soft = soft, .inet = inet, .aug = aug, .epochs = epochs, .batch = batch,
                  .quiet = quiet, .runs = runs, .seed = seed, .val = val, .lr = lr, .cutmix = cutmix};
    run_result *res = dap_calloc((size_t)runs, sizeof *res);
    char params[2048];
    snprintf(params, sizeof params,
             "data=%s train=%s arch=%s protocol=%s teacher=%s aug=%d epochs=%d batch=%d lr=%.17g cutmix=%.17g val=%d "
             "split_seed=%d seed=%d ipc=%d",
             data, train_spec, arch, protocol, teacher_path ? teacher_path : "-", aug, epochs, batch, lr, cutmix, val,
             split_seed, seed, ipc_hint);
    if (image_size || channels) { /* the runs trained at this size (absent: the data's own) */
        size_t len = strlen(params);
        snprintf(params + len, sizeof params - len, " image_size=%d channels=%d", image_size, channels);
    }
    if (dap_device() != DAP_DEVICE_CPU) { /* another device rounds differently: its own journal */
        size_t len = strlen(params);
        snprintf(params + len, sizeof params - len, " device=%s", dap_device_name());
    }
    if (test_spec) { /* before set=, which an older journal may lack */
        size_t len = strlen(params);
        snprintf(params + len, sizeof params - len, " test=%016llx", dap_dataset_hash(&test));
    }
    if (from_folder) {
        size_t len = strlen(params);
        snprintf(params + len, sizeof params - len, " set=%016llx", dap_dataset_hash(&folder) /* what the runs trained on, not only the folder's name */);
    }
    if (soft) { /* the teacher's contents, not only its path, define the runs */
        char th[17];
        if ((rc = dap_file_hash(teacher_path, th))) {
            free(res);
            return cli_fail("eval", rc);
        }
        size_t len = strlen(params);
        snprintf(params + len, sizeof params - len, " teacher_fnv1a64=%s", th);
    }
    c.json = json, c.params = params, c.resume = resume;
    /* the CUDA backend keeps part of a run's state on the device: no mid-run states there */
    c.state_every = dap_device() == DAP_DEVICE_CPU ? state_every : -1;
    int todo = runs;
    if (resume) {
        int loaded = 0;
        rc = journal_load(json, params, res, runs, &loaded);
        if (rc) {
            free(res);
            return cli_fail("eval", rc);
        }
        if (loaded) fprintf(stderr, "eval: resuming: %d of %d runs already done (%s.runs)\n", loaded, runs, json);
        todo -= loaded;
    }
    if (jobs > todo) jobs = todo > 0 ? todo : 1;
    if (jobs > 1 && soft) {
        fprintf(stderr, "eval: --protocol soft trains one run at a time (the runs share the teacher), ignoring --jobs %d\n", jobs);
        jobs = 1;
    }
    if (jobs > 1) {
        /* runs train side by side, one thread each (nested regions and OpenBLAS inside a
         * parallel region run single-threaded): better for small sets than splitting one
         * small batch over threads; each run gives what it gives with --threads 1 */
        fprintf(stderr, "eval: %d runs, %d at a time, one thread each\n", runs, jobs);
        dap_set_max_active_levels(1);
#pragma omp parallel for num_threads(jobs) schedule(dynamic, 1)
        for (int run = 0; run < runs; run++) {
            if (res[run].done) continue;
            train_one(&c, run, &res[run]);
            if (json && !res[run].rc) {
                int saved;
#pragma omp critical(eval_journal)
                {
                    saved = journal_save(json, params, res, runs) == DAP_OK;
                    if (!saved) fprintf(stderr, "eval: warning: %s\n", dap_last_error());
                }
                if (saved) drop_state(&c, run);
            }
        }
    } else {
        for (int run = 0; run < runs; run++) {
            if (res[run].done) continue;
            train_one(&c, run, &res[run]);
            if (res[run].rc) break;
            if (json && journal_save(json, params, res, runs)) fprintf(stderr, "eval: warning: %s\n", dap_last_error());
            else drop_state(&c, run);
        }
    }
    double acc[MAX_RUNS];
    dap_json j;
    dap_json_init(&j);
    dap_json_begin_object(&j, NULL);
    dap_json_str(&j, "dap_version", DAP_VERSION); /* of this process, as blas */
    dap_json_str(&j, "blas", dap_blas_describe()); /* of this process; journal runs may be older */
    dap_json_str(&j, "data", data);
    dap_json_str(&j, "train", train_spec);
    dap_json_str(&j, "arch", arch);
    dap_json_str(&j, "protocol", protocol);
    dap_json_str(&j, "eval_on", val > 0 ? "val" : "test");
    dap_json_int(&j, "val_per_class", val);
    dap_json_int(&j, "eval_images", eval_set->n);
    dap_json_int(&j, "image_size", real.h); /* the evaluation's resolution (train set and test set) */
    dap_json_int(&j, "image_width", real.w);
    dap_json_int(&j, "channels", real.c);
    if (from_folder) { /* the set as trained on: its own size, and whether it was converted */
        dap_json_begin_object(&j, "train_set");
        dap_json_int(&j, "images", folder.n);
        dap_json_int(&j, "source_height", folder.src_h);
        dap_json_int(&j, "source_width", folder.src_w);
        dap_json_int(&j, "resized", folder.n_resized);
        dap_json_end_object(&j);
    }
    { /* which images were scored */
        char hex[17];
        dap_json_begin_object(&j, val > 0 ? "val_set" : "test_set");
        char where[4200];
        snprintf(where, sizeof where, "%s%s", val > 0 || test_path ? "" : data,
                 val > 0 ? data : test_path ? test_path : " (test split)");
        dap_json_str(&j, "path", where);
        if (val > 0) dap_json_int(&j, "split_seed", split_seed);
        dap_json_int(&j, "images", eval_set->n);
        snprintf(hex, sizeof hex, "%016llx", dap_dataset_hash(eval_set));
        dap_json_str(&j, "hash", hex);
        dap_json_end_object(&j);
    }
    dap_json_int(&j, "jobs", jobs);
    dap_json_int(&j, "threads", jobs > 1 ? 1 : dap_get_threads());
    dap_json_int(&j, "conv_winograd", dap_conv2d_winograd_mode());
    dap_json_str(&j, "device", dap_device_describe());
    dap_json_begin_array(&j, "runs");
    int n_train = 0, used_epochs = 0;
    for (int run = 0; run < runs && rc == DAP_OK; run++) {
        const run_result *q = &res[run];
        if (q->rc) {
            rc = dap_error(q->rc, "run %d: %s", run + 1, q->err);
            break;
        }
        acc[run] = q->acc;
        dap_json_begin_object(&j, NULL);
        dap_json_int(&j, "seed", (long long)seed + run);
        dap_json_num(&j, "accuracy", q->acc);
        dap_json_num(&j, "train_accuracy", q->fit.train_acc);
        dap_json_num(&j, "final_loss", q->fit.loss);
        dap_json_num(&j, "seconds", q->fit.seconds);
        dap_json_int(&j, "train_images", q->n_train);
        dap_json_end_object(&j);
        n_train = q->n_train, used_epochs = q->cfg.epochs;
        if (run == runs - 1) {
            const dap_fit_config *cfg = &q->cfg;
            dap_json_end_array(&j);
            dap_json_int(&j, "epochs", cfg->epochs);
            dap_json_int(&j, "batch", cfg->batch);
            dap_json_num(&j, "lr", cfg->lr);
            dap_json_str(&j, "aug", aug == DAP_AUG_DSA ? "dsa" : aug == DAP_AUG_IMAGENET ? "imagenet" : aug == DAP_AUG_RRC ? "rrc" : "none");
            dap_json_num(&j, "cutmix", cfg->cutmix);
        }
    }
    free(res);
    free(test_path);
    if (rc == DAP_OK) {
        double mean = 0, var = 0;
        for (int i = 0; i < runs; i++) mean += acc[i] / runs;
        for (int i = 0; i < runs; i++) var += (acc[i] - mean) * (acc[i] - mean) / runs;
        double sd = sqrt(var);
        printf("%s on %s (%d images, %d epochs): %s accuracy %.2f +- %.2f over %d run%s\n", arch,
               train_spec, n_train, used_epochs, val > 0 ? "val" : "test", mean, sd, runs, runs == 1 ? "" : "s");
        dap_json_num(&j, "mean", mean);
        dap_json_num(&j, "std", sd);
        dap_json_end_object(&j);
        if (json) rc = dap_json_save(&j, json);
    }
    dap_json_free(&j);
    if (soft) dap_classifier_free(&teacher);
    if (from_folder) dap_dataset_free(&folder);
    if (val > 0) {
        dap_dataset_free(&real_train);
        dap_dataset_free(&val_set);
    } else {
        dap_dataset_free(&test);
    }
    dap_dataset_free(&real);
    return rc ? cli_fail("eval", rc) : 0;
}
