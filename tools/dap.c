/*
 * dap.c: the command-line program. `dap <command> [flags]`; `dap --help` lists the
 * commands, `dap <command> --help` their flags. Only this program calls exit().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "core/blas.h"
#include "dap.h"
#include "ops/ops.h"

typedef struct { const char *name, *summary; int (*fn)(int, char **); } command;
#define X(name, summary) {#name, summary, cmd_##name},
static const command commands[] = {DAP_COMMANDS(X){NULL, NULL, NULL}};
#undef X
#define NCOMMANDS ((int)(sizeof commands / sizeof commands[0]) - 1)

static void usage(FILE *f) {
    fprintf(f, "dap %s: generative dataset distillation with diffusion priors\n\n", DAP_VERSION);
    fprintf(f, "usage: dap <command> [flags]     (dap <command> --help for its flags)\n\ncommands:\n");
    for (int i = 0; i < NCOMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nenvironment:\n  DAP_WINOGRAD=0|1|2  3x3 convolutions: 0 im2col only (dap 0.1.0), 1 Winograd where it\n"
               "                      pays (default), 2 Winograd wherever it fits\n"
               "  OPENBLAS_CORETYPE   OpenBLAS kernel set (dap --version shows the one in use); when unset\n"
               "                      and OpenBLAS fell back to generic kernels on a CPU with AVX2/AVX-512,\n"
               "                      dap sets it and restarts itself (DAP_BLAS_CORE=keep: do not)\n");
}

int main(int argc, char **argv) {
    dap_blas_fix_core(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("dap %s\nBLAS: %s\n", DAP_VERSION, dap_blas_describe());
        return 0;
    }
    if (dap_conv2d_winograd_from_env() != DAP_OK) {
        fprintf(stderr, "dap: error: %s\n", dap_last_error());
        return 2;
    }
    for (int i = 0; i < NCOMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "dap: error: unknown command '%s' (see dap --help)\n", argv[1]);
    return 2;
}
