/*
 * cli.h: the command-line program's shared pieces: the command table and a small flag
 * parser that also prints each command's --help from the same table of flags.
 * Each subcommand lives in tools/cmd_<name>.c and exports `int cmd_<name>(int, char **)`.
 */
#ifndef DAP_CLI_H
#define DAP_CLI_H

typedef enum { FLAG_STR, FLAG_INT, FLAG_FLOAT, FLAG_BOOL } flag_type;

/* Flag tables list string and boolean flags without the range fields (zero): allowed. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

typedef struct flag {
    const char *name; /* without the leading "--" */
    flag_type type;
    void *ptr;        /* const char **, int *, double *, int * */
    const char *help; /* one line; the default is printed from *ptr */
    double lo, hi;    /* FLAG_INT, FLAG_FLOAT: the accepted range [lo, hi] (required: lo < hi);
                         printed by --help, a value outside it is refused naming the range */
} flag;

/* The largest int flag value, e.g. for seeds: {"seed", FLAG_INT, &seed, "seed", 0, FLAG_INT_MAX}. */
#define FLAG_INT_MAX 2147483647.0
/* --threads N: 0 (all cores / $OMP_NUM_THREADS) up to this many. */
#define CLI_THREADS_MAX 1024

/* Parses argv[1..] (argv[0] is the command name). Positional arguments (not starting
 * with "--") are returned in pos[] (at most max_pos). Prints usage and returns 1 on
 * --help, prints an error naming the flag and returns 2 on a bad flag or value (a
 * number outside the flag's range: the message names the range); 0 on success. A
 * numeric flag without a range (lo < hi) is a broken contract: asserted. */
int flags_parse(const char *cmd, const char *usage, const char *about, flag *flags, int nflags,
                int argc, char **argv, const char **pos, int max_pos, int *npos);
void flags_usage(const char *cmd, const char *usage, const char *about, const flag *flags,
                 int nflags);

/* The table of tools/dap.c. cli_example: the command's example line, printed last by its
 * --help (NULL: none). cli_file_flag: 1 when --FLAG of CMD names an input file that may be
 * a shipped one (FLAG "" stands for the command's positional arguments), with *def set to
 * its default (NULL: none), which flags_parse sets before parsing so --help shows it. */
const char *cli_example(const char *cmd);
int cli_file_flag(const char *cmd, const char *flag, const char **def);

/* The shipped models and flags files are found from any directory: a relative path under
 * models/ that does not exist in the current directory is looked up in the data directory:
 * $DAP_DATA_DIR when set, else the installed program's PREFIX/share/dap (found next to the
 * executable, EXE/../share/dap), else the compiled-in DAP_DATADIR (PREFIX/share/dap of the
 * build). flags_parse applies it to the flags cli_file_flag names. Returns the path to use
 * (the argument itself when it exists or is not under models/), or NULL with a message
 * naming the places looked in (dap_last_error()). */
const char *cli_data_path(const char *path);

/* The validated flags a model carries: MODEL.defaults beside MODEL.safetensors (or
 * --defaults FILE; --defaults none: none), a flags file in sections: [sampler] for every
 * method that samples the model (and dap sample), [METHOD] for dap distill --method METHOD.
 * Returns in *nargc / *nargv the command line with the file's flags of those sections
 * inserted before the user's (the parser keeps the last value, so the command line wins),
 * and in *used the file and its flags as one line ("" when none applied). dap sample reads
 * [sampler] only; dap distill [sampler] (but for random and dm) and [--method's]. 0, or 2 with the error printed (unreadable
 * --defaults FILE, an unknown section, a line outside any section). */
int cli_model_defaults(const char *cmd, int argc, char **argv, int *nargc, char ***nargv,
                       const char **used);

/* Prints "dap <cmd>: error: <library message or msg>" and returns 1 (for `return`). */
int cli_fail(const char *cmd, int status);
int cli_failf(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Common flag: --threads N (0 = $OMP_NUM_THREADS if set, else all cores). Applies it. */
void cli_apply_threads(int threads);
#define CLI_THREADS_HELP "threads (0: $OMP_NUM_THREADS if set, else all cores)"
/* The --threads entry of every command's flag table. */
#define CLI_THREADS_FLAG(ptr) {"threads", FLAG_INT, (ptr), CLI_THREADS_HELP, 0, CLI_THREADS_MAX}

/* The device flags of train, sample, distill, eval, teacher, score and vae: --device (NULL: $DAP_DEVICE, else
 * cpu), --precision (NULL: fp32) and --gpu K|auto (NULL: GPU 0; auto: the launcher's local
 * rank). 0, or 1 with the error printed (an unknown name, no CUDA build or GPU, --gpu on
 * the cpu device). */
int cli_select_device(const char *cmd, const char *device, const char *precision, const char *gpu);
/* A small text file (at most n - 1 bytes of it, NUL-terminated) into buf: 1, or 0 when it
 * cannot be read (no error recorded). */
int cli_read_text(const char *path, char *buf, size_t n);
#define CLI_VAE_DEVICE_HELP "cpu or cuda: where the VAE runs (cuda: a build made with make CUDA=1; default $DAP_DEVICE, else cpu)"
#define CLI_GPU_HELP "K or auto: which GPU with --device cuda (default 0; auto: the launcher's local rank, one GPU per process)"

/* Whether `path` (a file to be written) can be created: its folder exists and a temporary
 * file can be made and removed there. DAP_ERR_IO naming `flag` and the path otherwise.
 * Run before the work, so that a long job does not fail at its end. */
int cli_check_writable(const char *flag, const char *path);

#endif
