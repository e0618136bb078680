/*
 * cmd_export.c: `dap export`: rewrites a DiT checkpoint (weights only, config in the
 * metadata), optionally as F16 (half the size: the shipped model is stored so).
 */
#include <stdio.h>

#include "cli.h"
#include "core/core.h"
#include "models/dit.h"

int cmd_export(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    int f16 = 0;
    flag flags[] = {
        {"model", FLAG_STR, &in, "DiT checkpoint to read (dap train output or a converted official one)"},
        {"out", FLAG_STR, &out, "checkpoint to write (.safetensors)"},
        {"f16", FLAG_BOOL, &f16, "store the weights as F16"},
    };
    const char *pos[1];
    int npos;
    int r = flags_parse("export", "--model IN --out OUT [--f16]",
                        "Rewrites a DiT checkpoint with its config as metadata, optionally in F16.", flags,
                        (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 0, &npos);
    if (r) return r == 1 ? 0 : 2;
    if (!in || !out) return cli_failf("export", "--model IN and --out OUT are required");
    dap_dit *m = NULL;
    int rc = dap_dit_load(&m, in, 0, 0);
    if (rc) return cli_fail("export", rc);
    rc = dap_dit_save_ex(m, out, f16);
    dap_dit_destroy(m);
    if (rc) return cli_fail("export", rc);
    printf("dap export: wrote %s (%s)\n", out, f16 ? "F16" : "F32");
    return 0;
}
