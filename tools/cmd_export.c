/*
 * cmd_export.c: `dap export`: rewrites a DiT checkpoint (weights only, config in the
 * metadata), optionally as F16 (half the size: the shipped model is stored so), and
 * optionally with the class names of its labels (which dap distill matches data to).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "data/dataset.h"
#include "io/io.h"
#include "models/dit.h"

/* --class-names: "fmnist" or a file with one name per line, in label order. */
static int set_names(dap_dit *m, const char *spec) {
    const int K = m->cfg.num_classes;
    if (!strcmp(spec, "fmnist")) {
        if (K != 10) return dap_error(DAP_ERR_ARG, "--class-names fmnist: the model has %d classes, not 10", K);
        dap_dit_set_class_names(m, (char *const *)dap_fmnist_classes, 10);
        return DAP_OK;
    }
    uint8_t *d;
    size_t len;
    DAP_TRY(dap_read_file(spec, &d, &len));
    char *text = dap_malloc(len + 1);
    memcpy(text, d, len);
    text[len] = 0;
    free(d);
    char **names = dap_calloc((size_t)K + 1, sizeof(char *));
    int n = 0, rc = DAP_OK;
    for (char *p = text; *p && rc == DAP_OK;) {
        char *e = strchr(p, '\n');
        if (e) *e = 0;
        size_t l = strlen(p);
        if (l && p[l - 1] == '\r') p[--l] = 0;
        if (!l) rc = dap_error(DAP_ERR_FORMAT, "--class-names %s: line %d is empty", spec, n + 1);
        else if (n < K) names[n] = p;
        n++;
        p = e ? e + 1 : p + l;
    }
    if (rc == DAP_OK && n != K)
        rc = dap_error(DAP_ERR_FORMAT, "--class-names %s: %d names, the model has %d classes (one name per line, in label order)",
                       spec, n, K);
    if (rc == DAP_OK) dap_dit_set_class_names(m, names, K);
    free(names);
    free(text);
    return rc;
}

int cmd_export(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *names = NULL;
    int f16 = 0, threads = 0;
    flag flags[] = {
        {"model", FLAG_STR, &in, "DiT checkpoint to read (dap train output or a converted official one)"},
        {"out", FLAG_STR, &out, "checkpoint to write (.safetensors)"},
        {"f16", FLAG_BOOL, &f16, "store the weights as F16"},
        {"class-names", FLAG_STR, &names, "the names of the model's labels: a file with one per line in label order, or fmnist"},
        CLI_THREADS_FLAG(&threads),
    };
    const char *pos[1];
    int npos;
    int r = flags_parse("export", "--model IN --out OUT [--f16] [--class-names FILE|fmnist]",
                        "Rewrites a DiT checkpoint with its config (and class names) as metadata, optionally in F16.",
                        flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (r) return r == 1 ? 0 : 2;
    if (!in || !out) return cli_failf("export", "--model IN and --out OUT are required");
    cli_apply_threads(threads);
    dap_dit *m = NULL;
    int rc = dap_dit_load(&m, in, 0, 0);
    if (rc) return cli_fail("export", rc);
    if (names) rc = set_names(m, names);
    if (rc == DAP_OK) rc = dap_dit_save_ex(m, out, f16);
    dap_dit_destroy(m);
    if (rc) return cli_fail("export", rc);
    printf("dap export: wrote %s (%s)\n", out, f16 ? "F16" : "F32");
    return 0;
}
