/*
 * dap.c: the command-line program. `dap <command> [flags]`; `dap --help` lists the
 * commands, `dap <command> --help` their flags. Only this program calls exit().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "core/blas.h"
#include "dap.h"
#include "ops/ops.h"

typedef struct { const char *name, *summary; int (*fn)(int, char **); } command;
#define X(name, summary) {#name, summary, cmd_##name},
static const command commands[] = {DAP_COMMANDS(X){NULL, NULL, NULL}};
#undef X
#define NCOMMANDS ((int)(sizeof commands / sizeof commands[0]) - 1)

/* Each command's example line, the last line of its --help: a command a user can paste
 * (from any directory once dap is installed: models/ paths resolve to the shipped files).
 * A new command adds its line here; tests/cli/help.sh checks that every command has one
 * and that its flags parse. */
static const struct { const char *cmd, *line; } examples[] = {
    {"info", "dap info --data fmnist --grid fmnist.png --per-class 8"},
    {"inspect", "dap inspect models/fmnist-dit.safetensors"},
    {"train", "dap train --data fmnist --config fm-tiny --steps 200 --out tiny.safetensors"},
    {"sample", "dap sample --classes all --n 8 --out samples"},
    {"export", "dap export --model tiny.safetensors --out tiny-f16.safetensors --f16"},
    {"distill", "dap distill --model models/fmnist-dit.safetensors --method dap --ipc 10 --out out/dap-ipc10"},
    {"score", "dap score --set out/dap-ipc10"},
    {"embed", "dap embed --set random=out/random-ipc10 --set dap=out/dap-ipc10 --classes 0,1,2 --out embed.png"},
    {"eval", "dap eval --train out/dap-ipc10 --arch convnet3 --runs 3"},
    {"subset", "dap subset --from fmnist --ipc 10 --seed 0 --out out/random-ipc10"},
    {"teacher", "dap teacher --arch convnet3 --epochs 3 --out convnet3.safetensors"},
    {"vae", "dap vae encode --vae sd-vae-ft-mse.safetensors --in photos --out latents.safetensors --size 256"},
    {"vae encode", "dap vae encode --vae sd-vae-ft-mse.safetensors --in photos --out latents.safetensors --size 256"},
    {"vae decode", "dap vae decode --vae sd-vae-ft-mse.safetensors --in latents.safetensors --out decoded.png"},
};

/* The input-file flags whose models/ paths may name a shipped file (see cli_data_path), with
 * their defaults ("" as the flag: the positional arguments). */
static const struct { const char *cmd, *flag, *def; } file_flags[] = {
    {"inspect", "", NULL},
    {"sample", "model", "models/fmnist-dit.safetensors"},
    {"distill", "model", NULL},
    {"export", "model", NULL},
    {"train", "init", NULL},
    {"score", "classifier", "models/fmnist-convnet3.safetensors"},
    {"embed", "classifier", "models/fmnist-convnet3.safetensors"},
    {"eval", "teacher", NULL},
};

const char *cli_example(const char *cmd) {
    for (size_t i = 0; i < sizeof examples / sizeof examples[0]; i++)
        if (!strcmp(examples[i].cmd, cmd)) return examples[i].line;
    return NULL;
}

int cli_file_flag(const char *cmd, const char *flag, const char **def) {
    for (size_t i = 0; i < sizeof file_flags / sizeof file_flags[0]; i++)
        if (!strcmp(file_flags[i].cmd, cmd) && !strcmp(file_flags[i].flag, flag)) {
            if (def) *def = file_flags[i].def;
            return 1;
        }
    if (def) *def = NULL;
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "dap %s: generative dataset distillation with diffusion priors\n\n", DAP_VERSION);
    fprintf(f, "usage: dap <command> [flags]     (dap <command> --help for its flags)\n\ncommands:\n");
    for (int i = 0; i < NCOMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nenvironment:\n  DAP_WINOGRAD=0|1|2  3x3 convolutions: 0 im2col only (dap 0.1.0), 1 Winograd where it\n"
               "                      pays (default), 2 Winograd wherever it fits\n"
               "  OPENBLAS_CORETYPE   OpenBLAS kernel set (dap --version shows the one in use); when unset\n"
               "                      and OpenBLAS fell back to generic kernels on a CPU with AVX2/AVX-512,\n"
               "                      dap sets it and restarts itself (DAP_BLAS_CORE=keep: do not)\n"
               "  DAP_DATA_DIR        the folder holding the shipped models/, for models/... paths that the\n"
               "                      current directory lacks (default: the installed PREFIX/share/dap)\n");
    fprintf(f, "\nExample:\n  %s\n", cli_example("distill"));
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
