/*
 * cmd_inspect.c: `dap inspect FILE.safetensors`: every tensor's name, dtype and shape,
 * the total parameter count and the metadata, after the reader's full validation; a VAE
 * file (any key naming) is named as such, with the config dap would load.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "io/io.h"
#include "models/vae.h"

int cmd_inspect(int argc, char **argv) {
    int threads = 0;
    flag flags[] = {CLI_THREADS_FLAG(&threads)};
    const char *pos[1];
    int npos;
    int r =
        flags_parse("inspect", "FILE.safetensors",
                    "Lists a safetensors file's tensors (name, dtype, shape), parameter count and metadata.",
                    flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, pos, 1, &npos);
    if (r) return r == 1 ? 0 : 2;
    cli_apply_threads(threads);
    if (npos != 1) return cli_failf("inspect", "expected one FILE.safetensors (see dap inspect --help)");
    dap_st *st;
    int rc = dap_st_open(&st, pos[0]);
    if (rc) return cli_fail("inspect", rc);
    int width = 4;
    for (int i = 0; i < st->n; i++) {
        int len = (int)strlen(st->t[i].name);
        width = len > width ? len : width;
    }
    printf("%-*s  %-5s  %-24s %s\n", width, "name", "dtype", "shape", "elements");
    size_t params = 0, bytes = 0;
    for (int i = 0; i < st->n; i++) {
        const dap_st_tensor *t = &st->t[i];
        char shape[256];
        int len = snprintf(shape, sizeof shape, "[");
        for (int k = 0; k < t->ndim && len < (int)sizeof shape; k++)
            len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%lld", k ? ", " : "",
                            (long long)t->shape[k]);
        if (len < (int)sizeof shape) snprintf(shape + len, sizeof shape - (size_t)len, "]");
        printf("%-*s  %-5s  %-24s %zu\n", width, t->name, dap_dtype_name(t->dtype), shape, t->numel);
        if (t->dtype == DAP_DT_F32 || t->dtype == DAP_DT_F16 || t->dtype == DAP_DT_BF16) params += t->numel;
        bytes += t->end - t->begin;
    }
    printf("%d tensors, %zu parameters (float elements), %zu data bytes\n", st->n, params, bytes);
    if (st->metadata_json) printf("metadata %s\n", st->metadata_json);
    dap_st_close(st);
    if (dap_vae_file_is_vae(pos[0]) == 1) { /* name it, with what dap vae would load */
        dap_vae *v = NULL;
        if (dap_vae_load(&v, pos[0])) { /* the listing stands; say why dap vae would refuse it */
            printf("VAE (AutoencoderKL) tensors, but dap vae cannot load them: %s\n", dap_last_error());
            return 0;
        }
        const dap_vae_config *c = dap_vae_get_config(v);
        char chs[96] = "";
        for (int i = 0; i < c->levels; i++)
            snprintf(chs + strlen(chs), sizeof chs - strlen(chs), "%s%d", i ? "/" : "", c->ch[i]);
        printf("VAE (AutoencoderKL, %s names): channels %s, %d+%d ResNet blocks per level, %d GroupNorm groups, "
               "%d latent channels, factor %d (dap vae encode / decode --vae)\n",
               dap_vae_naming(v), chs, c->enc_blocks, c->dec_blocks, c->groups, c->latent_channels,
               dap_vae_factor(c));
        dap_vae_destroy(v);
    }
    return 0;
}
