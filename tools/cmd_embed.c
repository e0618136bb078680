/*
 * cmd_embed.c: `dap embed`: where synthetic sets sit among the real images of a class, in
 * the penultimate-feature space of a classifier trained on the real data (the paper's
 * figure of representativeness and diversity). Per class: PCA (not t-SNE) fitted on the
 * features of a seeded sample of real training images alone, every set projected on those
 * two axes; one PNG (rows: classes, columns: sets; real points grey, the set's in colour,
 * the same axes along a row), the coordinates as TSV, and per set and class two numbers
 * in the full feature space: coverage (mean distance from a real image to the set's
 * nearest) and spread (mean pairwise distance within the set).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/core.h"
#include "data/dataset.h"
#include "eval/classifier.h"
#include "eval/embed.h"
#include "eval/subset.h"
#include "io/io.h"

#define EMBED_MAX_SETS 32

static const char *const colour_names[10] = {"blue", "orange", "green", "red", "purple",
                                             "brown", "pink", "black", "olive", "cyan"};

typedef struct {
    char name[64];
    const char *dir;
    dap_dataset ds;
    float *feat; /* (ds.n, D) */
} embed_set;

/* --set NAME=DIR: NAME of letters, digits and ._+- (it goes into a TSV and a page), not
 * "real" (the TSV's name of the real points), not given twice; DIR an existing folder. */
static int parse_set(const char *arg, embed_set *sets, int nsets) {
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : 0;
    if (!eq || len == 0 || !eq[1])
        return cli_failf("embed", "--set '%s': expected NAME=DIR (e.g. --set dap=out/dap-ipc10)", arg);
    if (len >= sizeof sets[0].name || strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-") < len)
        return cli_failf("embed", "--set '%s': the name must be 1..%d letters, digits or ._+- characters", arg,
                         (int)sizeof sets[0].name - 1);
    embed_set *s = &sets[nsets];
    memset(s, 0, sizeof *s);
    memcpy(s->name, arg, len);
    s->name[len] = 0;
    s->dir = eq + 1;
    if (!strcmp(s->name, "real"))
        return cli_failf("embed", "--set '%s': the name 'real' is taken by the real images; pick another", arg);
    for (int i = 0; i < nsets; i++)
        if (!strcmp(sets[i].name, s->name)) return cli_failf("embed", "--set: the name '%s' is given twice", s->name);
    struct stat st;
    if (stat(s->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cli_failf("embed", "--set %s=%s: %s is not a folder (an image folder with one subfolder per class, "
                         "as dap distill writes)", s->name, s->dir, s->dir);
    return 0;
}

/* the library's message about set e, prefixed with the flag that named it */
static int set_error(int rc, const embed_set *e) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", dap_last_error());
    return dap_error(rc, "--set %s=%s: %s", e->name, e->dir, msg);
}

/* --classes: "all" or indices in 0..K-1 separated by commas, in the order given */
static int parse_classes(const char *spec, int K, int *out) {
    if (!strcmp(spec, "all")) {
        for (int k = 0; k < K; k++) out[k] = k;
        return K;
    }
    int n = 0;
    for (const char *p = spec; *p;) {
        char *end;
        long k = strtol(p, &end, 10);
        if (end == p || k < 0 || k >= K || (*end && *end != ',') || (*end == ',' && !end[1])) {
            dap_error(DAP_ERR_ARG, "--classes: expected 'all' or class indices in 0..%d separated by commas, got '%s'",
                      K - 1, spec);
            return -1;
        }
        for (int q = 0; q < n; q++)
            if (out[q] == k) {
                dap_error(DAP_ERR_ARG, "--classes: class %ld is listed twice in '%s'", k, spec);
                return -1;
            }
        out[n++] = (int)k;
        p = *end ? end + 1 : end;
    }
    if (n == 0) dap_error(DAP_ERR_ARG, "--classes: no class given");
    return n ? n : -1;
}

int cmd_embed(int argc, char **argv) {
    const char *data = "fmnist", *clf_path = "models/fmnist-convnet3.safetensors", *out = NULL, *tsv = NULL;
    const char *classes_s = "all", *set_help = NULL;
    int real_per_class = 200, seed = 0, panel = 160, threads = 0;
    flag flags[] = {
        {"data", FLAG_STR, &data, "the real data: fmnist, fmnist:DIR, an IDX image file or an image folder (its train split)"},
        {"classifier", FLAG_STR, &clf_path, "feature extractor: a classifier trained on the real data (dap teacher)"},
        {"set", FLAG_STR, &set_help, "NAME=DIR: a synthetic image set (one subfolder per class); repeat for more sets, one column each"},
        {"classes", FLAG_STR, &classes_s, "'all' or class indices separated by commas (the rows, in this order)"},
        {"real-per-class", FLAG_INT, &real_per_class, "real training images per class (seeded sample): the PCA's data", 3, 100000},
        {"seed", FLAG_INT, &seed, "seed of the real sample", 0, FLAG_INT_MAX},
        {"out", FLAG_STR, &out, "the PNG to write (rows: classes, columns: sets)"},
        {"tsv", FLAG_STR, &tsv, "also write the 2-D coordinates here (class, set, x, y; set 'real' for the real points)"},
        {"panel", FLAG_INT, &panel, "side of one panel in pixels", 32, 1024},
        CLI_THREADS_FLAG(&threads),
    };
    /* --set repeats: collected here, the rest goes to the flag parser */
    embed_set *sets = dap_calloc(EMBED_MAX_SETS, sizeof(embed_set));
    char **rest = dap_malloc(sizeof(char *) * (size_t)(argc + 1));
    const char *set_args[EMBED_MAX_SETS];
    int nrest = 0, nsets = 0;
    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        if (i > 0 && !strcmp(argv[i], "--set")) {
            if (i + 1 >= argc) {
                free(sets), free(rest);
                return cli_failf("embed", "flag --set needs a value (NAME=DIR)");
            }
            v = argv[++i];
        } else if (i > 0 && !strncmp(argv[i], "--set=", 6)) {
            v = argv[i] + 6;
        }
        if (!v) {
            rest[nrest++] = argv[i];
        } else if (nsets >= EMBED_MAX_SETS) {
            free(sets), free(rest);
            return cli_failf("embed", "more than %d --set flags", EMBED_MAX_SETS);
        } else {
            set_args[nsets++] = v;
        }
    }
    rest[nrest] = NULL;
    const char *pos[1];
    int npos;
    int r = flags_parse("embed", "--set NAME=DIR [--set NAME=DIR ...] --out FILE.png [--classes 0,1,2] [--tsv FILE]",
                        "A 2-D view of synthetic sets among the real images, per class: PCA (not t-SNE) of the\n"
                        "classifier's penultimate features, fitted on a seeded sample of the class's real training\n"
                        "images only; every set is projected on those two axes. The PNG has a row per class and a\n"
                        "column per set (real points light grey, the set's in colour, the same axes along a row),\n"
                        "the class names on the left and the set names above in their colours.\n"
                        "Prints per class and set, in the full feature space: coverage (mean distance from each\n"
                        "real image to the nearest image of the set) and spread (mean pairwise distance in the set).",
                        flags, (int)(sizeof flags / sizeof flags[0]), nrest, rest, pos, 0, &npos);
    free(rest);
    if (r) {
        free(sets);
        return r == 1 ? 0 : 2;
    }
    int rc = 0;
#define BAIL(expr)                                                                                 \
    do {                                                                                           \
        if ((rc = (expr))) {                                                                       \
            free(sets);                                                                            \
            return rc;                                                                             \
        }                                                                                          \
    } while (0)
    if (nsets == 0) BAIL(cli_failf("embed", "--set NAME=DIR is required (one per synthetic set)"));
    if (!out) BAIL(cli_failf("embed", "--out FILE.png is required"));
    for (int i = 0; i < nsets; i++) BAIL(parse_set(set_args[i], sets, i));
    if (cli_check_writable("out", out) || (tsv && cli_check_writable("tsv", tsv))) BAIL(cli_fail("embed", DAP_ERR_IO));
    cli_apply_threads(threads);

    dap_classifier clf;
    if ((rc = dap_classifier_load(&clf, clf_path))) BAIL(cli_fail("embed", rc));
    dap_dataset real;
    if ((rc = dap_dataset_load(&real, data, "train", 0, 0))) {
        dap_classifier_free(&clf);
        BAIL(cli_fail("embed", rc));
    }
    const int K = real.num_classes, D = dap_classifier_feature_dim(&clf);
    int *cls = dap_malloc(sizeof(int) * (size_t)K), ncls = 0;
    float **rp = NULL, **sp = NULL; /* 2-D points: rp[row] (nr, 2), sp[row * nsets + s] (ns, 2) */
    int *nrp = NULL, *nsp = NULL;
    float *fr = NULL, *xr = NULL;
    int *all = NULL;
    FILE *ft = NULL;
    char *ft_tmp = NULL;
    if ((rc = dap_classifier_check_data(&clf, &real, clf_path, data))) goto done;
    if ((ncls = parse_classes(classes_s, K, cls)) < 0) {
        rc = DAP_ERR_ARG;
        goto done;
    }
    for (int k = 0; k < ncls; k++)
        if (real.class_count[cls[k]] < 3) {
            rc = dap_error(DAP_ERR_VALUE, "--data %s: class %d (%s) has %d images; the PCA needs at least 3", data,
                           cls[k], real.class_names[cls[k]], real.class_count[cls[k]]);
            goto done;
        }
    /* every set, checked before any work: its images' size, its classes, each shown class present */
    for (int s = 0; s < nsets; s++) {
        embed_set *e = &sets[s];
        if ((rc = dap_dataset_load(&e->ds, e->dir, "train", 0, 0))) {
            rc = set_error(rc, e);
            goto done;
        }
        if (e->ds.c != real.c || e->ds.h != real.h || e->ds.w != real.w) {
            rc = dap_error(DAP_ERR_SHAPE, "--set %s=%s has %dx%dx%d images (C x H x W), the data %s has %dx%dx%d",
                           e->name, e->dir, e->ds.c, e->ds.h, e->ds.w, data, real.c, real.h, real.w);
            goto done;
        }
        if ((rc = dap_dataset_match_classes(&e->ds, &real))) {
            rc = set_error(rc, e);
            goto done;
        }
        for (int k = 0; k < ncls; k++)
            if (e->ds.class_count[cls[k]] == 0) {
                char *folder = dap_class_folder_name(real.class_names[cls[k]], cls[k]);
                rc = dap_error(DAP_ERR_MISSING,
                               "--set %s=%s has no images of class %d (%s): the folder %s/%s is missing or empty "
                               "(--classes picks the classes shown)",
                               e->name, e->dir, cls[k], real.class_names[cls[k]], e->dir, folder);
                free(folder);
                goto done;
            }
    }
    if (tsv && !(ft = dap_tmp_open(tsv, &ft_tmp))) {
        rc = DAP_ERR_IO;
        goto done;
    }
    if (ft) fprintf(ft, "class\tset\tx\ty\n");

    dap_log(DAP_LOG_INFO, "dap embed: features of %d sets, %d classes\n", nsets, ncls);
    for (int s = 0; s < nsets; s++) {
        sets[s].feat = dap_alloc_f32((size_t)sets[s].ds.n * D);
        dap_classifier_features(&clf, sets[s].ds.x, sets[s].ds.n, sets[s].feat);
    }
    rp = dap_calloc((size_t)ncls, sizeof(float *)), sp = dap_calloc((size_t)ncls * nsets, sizeof(float *));
    nrp = dap_calloc((size_t)ncls, sizeof(int)), nsp = dap_calloc((size_t)ncls * nsets, sizeof(int));
    const size_t per = (size_t)real.c * real.h * real.w;
    printf("PCA of the %d-d penultimate features of %s, fitted per class on its real images only\n"
           "(%d per class, seed %d); coverage: mean distance from each real image to the nearest image of\n"
           "the set; spread: mean pairwise distance within the set (row 'real': the real sample's own);\n"
           "both in the full %d-d feature space. pc1+pc2: the share of the real variance the plane shows.\n",
           D, clf_path, real_per_class, seed, D);
    printf("%-14s %-16s %6s %8s %10s %10s\n", "class", "set", "images", "pc1+pc2%", "coverage", "spread");
    double *cov_sum = dap_calloc((size_t)nsets, sizeof(double)), *spr_sum = dap_calloc((size_t)nsets, sizeof(double));
    double real_spr_sum = 0;
    int png_w = 0, png_h = 0;
    for (int row = 0; row < ncls && rc == DAP_OK; row++) {
        const int k = cls[row];
        const int nr = real.class_count[k] < real_per_class ? real.class_count[k] : real_per_class;
        /* the seeded real sample of the class */
        all = dap_malloc(sizeof(int) * (size_t)real.class_count[k]);
        memcpy(all, real.class_idx[k], sizeof(int) * (size_t)real.class_count[k]);
        if (nr < real.class_count[k]) {
            dap_rng g;
            dap_rng_init(&g, (uint64_t)seed, 0x454d424544ULL + (uint64_t)k);
            dap_rng_shuffle(&g, all, (size_t)real.class_count[k]);
        }
        xr = dap_alloc_f32((size_t)nr * per), fr = dap_alloc_f32((size_t)nr * D);
        for (int i = 0; i < nr; i++) memcpy(xr + (size_t)i * per, real.x + (size_t)all[i] * per, sizeof(float) * per);
        dap_classifier_features(&clf, xr, nr, fr);
        dap_pca pca;
        if ((rc = dap_pca_fit(&pca, fr, nr, D, 2))) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", dap_last_error());
            dap_error(rc, "class %d (%s): %s", k, real.class_names[k], msg);
            break;
        }
        rp[row] = dap_alloc_f32((size_t)nr * 2), nrp[row] = nr;
        dap_pca_project(&pca, fr, nr, rp[row]);
        const double real_spr = dap_embed_spread(fr, nr, D);
        real_spr_sum += real_spr;
        printf("%-14.14s %-16.16s %6d %8.1f %10s %10.4g\n", real.class_names[k], "real", nr,
               100.0 * (pca.var[0] + pca.var[1]) / pca.total, "-", real_spr);
        if (ft)
            for (int i = 0; i < nr; i++) fprintf(ft, "%d\treal\t%.6g\t%.6g\n", k, rp[row][2 * i], rp[row][2 * i + 1]);
        for (int s = 0; s < nsets; s++) {
            const embed_set *e = &sets[s];
            const int ns = e->ds.class_count[k];
            float *fs = dap_alloc_f32((size_t)ns * D), *q = dap_alloc_f32((size_t)ns * 2);
            for (int i = 0; i < ns; i++)
                memcpy(fs + (size_t)i * D, e->feat + (size_t)e->ds.class_idx[k][i] * D, sizeof(float) * D);
            dap_pca_project(&pca, fs, ns, q);
            const double cov = dap_embed_coverage(fr, nr, fs, ns, D), spr = dap_embed_spread(fs, ns, D);
            cov_sum[s] += cov, spr_sum[s] += spr;
            printf("%-14.14s %-16.16s %6d %8s %10.4g %10.4g\n", real.class_names[k], e->name, ns, "", cov, spr);
            if (ft)
                for (int i = 0; i < ns; i++) fprintf(ft, "%d\t%s\t%.6g\t%.6g\n", k, e->name, q[2 * i], q[2 * i + 1]);
            sp[row * nsets + s] = q, nsp[row * nsets + s] = ns;
            dap_free_aligned(fs);
        }
        dap_pca_free(&pca);
        free(all), all = NULL;
        dap_free_aligned(xr), dap_free_aligned(fr), xr = fr = NULL;
    }
    if (rc == DAP_OK) {
        printf("mean over the %d classes:\n", ncls);
        printf("%-14s %-16s %6s %8s %10s %10.4g\n", "all", "real", "", "", "-", real_spr_sum / ncls);
        for (int s = 0; s < nsets; s++)
            printf("%-14s %-16.16s %6s %8s %10.4g %10.4g\n", "all", sets[s].name, "", "", cov_sum[s] / ncls,
                   spr_sum[s] / ncls);
        const char **rl = dap_malloc(sizeof(char *) * (size_t)ncls), **cl = dap_malloc(sizeof(char *) * (size_t)nsets);
        for (int row = 0; row < ncls; row++) rl[row] = real.class_names[cls[row]];
        for (int s = 0; s < nsets; s++) cl[s] = sets[s].name;
        rc = dap_embed_plot(out, ncls, nsets, panel, rl, cl, (const float *const *)rp, nrp, (const float *const *)sp, nsp);
        dap_embed_plot_size(ncls, nsets, panel, rl, cl, &png_w, &png_h);
        free(rl), free(cl);
    }
    free(cov_sum), free(spr_sum);
    if (ft) {
        int trc = dap_tmp_commit(ft, ft_tmp, tsv, rc == DAP_OK, NULL);
        ft = NULL;
        if (rc == DAP_OK && trc) {
            rc = trc;
            remove(out); /* nothing half-written: the PNG without its TSV goes too */
        }
    }
    if (rc == DAP_OK) {
        printf("wrote %s (%dx%d px: %d x %d panels of %d px, labelled; rows: classes", out, png_w, png_h, ncls, nsets,
               panel);
        for (int row = 0; row < ncls; row++) printf("%s%d", row ? "," : " ", cls[row]);
        printf("; columns:");
        for (int s = 0; s < nsets; s++) printf(" %s (%s)", sets[s].name, colour_names[s % 10]);
        printf(")%s%s\n", tsv ? " and " : "", tsv ? tsv : "");
    }
done:
    if (ft) dap_tmp_commit(ft, ft_tmp, tsv, 0, NULL);
    free(all);
    dap_free_aligned(xr), dap_free_aligned(fr);
    for (int i = 0; rp && i < ncls; i++) dap_free_aligned(rp[i]);
    for (int i = 0; sp && i < ncls * nsets; i++) dap_free_aligned(sp[i]);
    free(rp), free(sp), free(nrp), free(nsp);
    for (int s = 0; s < nsets; s++) {
        dap_dataset_free(&sets[s].ds);
        dap_free_aligned(sets[s].feat);
    }
    free(sets);
    free(cls);
    dap_dataset_free(&real);
    dap_classifier_free(&clf);
#undef BAIL
    return rc ? cli_fail("embed", rc) : 0;
}
