/*
 * flags.c: the flag parser and help printer shared by every subcommand.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "core/device.h"
#include "core/core.h"

#ifndef DAP_DATADIR
#define DAP_DATADIR "/usr/local/share/dap"
#endif

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

const char *cli_data_path(const char *path) {
    if (!path || strncmp(path, "models/", 7) != 0 || is_file(path)) return path;
    /* resolved paths live as long as the program: a command resolves a handful at most */
    static char found[8][8400];
    static int nfound;
    char tried[3][4200];
    int ntried = 0;
    const char *env = getenv("DAP_DATA_DIR");
    if (env && *env) {
        snprintf(tried[ntried++], sizeof tried[0], "%s", env);
    } else {
        char exe[4000];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = 0;
            char *slash = strrchr(exe, '/');
            if (slash) *slash = 0;
            snprintf(tried[ntried++], sizeof tried[0], "%s/../share/dap", exe);
        }
        snprintf(tried[ntried++], sizeof tried[0], "%s", DAP_DATADIR);
    }
    for (int i = 0; i < ntried && nfound < 8; i++) {
        char *cand = found[nfound];
        if ((size_t)snprintf(cand, sizeof found[0], "%s/%s", tried[i], path) >= sizeof found[0]) continue;
        if (is_file(cand)) return found[nfound++];
    }
    if (env && *env) {
        dap_error(DAP_ERR_MISSING, "%s: not found in the current directory nor in $DAP_DATA_DIR (%s)", path, env);
    } else {
        dap_error(DAP_ERR_MISSING,
                  "%s: not found in the current directory nor in the data directory (%s%s%s); run dap from "
                  "the source tree, `make install`, or set DAP_DATA_DIR to the folder that holds models/",
                  path, tried[0], ntried > 1 ? ", " : "", ntried > 1 ? tried[1] : "");
    }
    return NULL;
}

void flags_usage(const char *cmd, const char *usage, const char *about, const flag *flags,
                 int nflags) {
    printf("usage: dap %s %s\n\n%s\n\nflags:\n", cmd, usage, about);
    for (int i = 0; i < nflags; i++) {
        const flag *f = &flags[i];
        char def[96] = "";
        switch (f->type) {
        case FLAG_STR:
            if (*(const char **)f->ptr) snprintf(def, sizeof def, " (default: %s)", *(const char **)f->ptr);
            break;
        case FLAG_INT: snprintf(def, sizeof def, " (default: %d; %.0f..%.0f)", *(int *)f->ptr, f->lo, f->hi); break;
        case FLAG_FLOAT: snprintf(def, sizeof def, " (default: %g; %g..%g)", *(double *)f->ptr, f->lo, f->hi); break;
        case FLAG_BOOL: break;
        }
        const char *arg = f->type == FLAG_BOOL ? "" : f->type == FLAG_STR ? " S" : f->type == FLAG_INT ? " N" : " X";
        char left[64];
        snprintf(left, sizeof left, "--%s%s", f->name, arg);
        printf("  %-22s %s%s\n", left, f->help, def);
    }
    printf("  %-22s %s\n", "--help", "show this help");
    const char *ex = cli_example(cmd);
    if (ex) printf("\nExample:\n  %s\n", ex);
}

/* Sets the defaults of the command's file flags (before parsing). */
static void file_defaults(const char *cmd, flag *flags, int nflags) {
    for (int k = 0; k < nflags; k++) {
        const char *def = NULL;
        if (flags[k].type == FLAG_STR && cli_file_flag(cmd, flags[k].name, &def) && def &&
            !*(const char **)flags[k].ptr)
            *(const char **)flags[k].ptr = def;
    }
}

/* Resolves the command's file flags and positional files (after parsing): 0, or 2 with
 * the error printed. */
static int file_resolve(const char *cmd, flag *flags, int nflags, const char **pos, int npos) {
    for (int k = 0; k < nflags; k++) {
        const char **v = (const char **)flags[k].ptr;
        if (flags[k].type != FLAG_STR || !*v || !cli_file_flag(cmd, flags[k].name, NULL)) continue;
        const char *r = cli_data_path(*v);
        if (!r) {
            fprintf(stderr, "dap %s: error: --%s %s\n", cmd, flags[k].name, dap_last_error());
            return 2;
        }
        *v = r;
    }
    if (npos > 0 && cli_file_flag(cmd, "", NULL))
        for (int i = 0; i < npos; i++) {
            const char *r = cli_data_path(pos[i]);
            if (!r) {
                fprintf(stderr, "dap %s: error: %s\n", cmd, dap_last_error());
                return 2;
            }
            pos[i] = r;
        }
    return 0;
}

int flags_parse(const char *cmd, const char *usage, const char *about, flag *flags, int nflags,
                int argc, char **argv, const char **pos, int max_pos, int *npos) {
    *npos = 0;
    file_defaults(cmd, flags, nflags);
    for (int k = 0; k < nflags; k++) /* every number has a range */
        DAP_ASSERT(flags[k].type == FLAG_STR || flags[k].type == FLAG_BOOL || flags[k].lo < flags[k].hi);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            flags_usage(cmd, usage, about, flags, nflags);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (*npos >= max_pos) {
                fprintf(stderr, "dap %s: error: unexpected argument '%s' (see dap %s --help)\n", cmd, a, cmd);
                return 2;
            }
            pos[(*npos)++] = a;
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        flag *f = NULL;
        for (int k = 0; k < nflags; k++)
            if (strlen(flags[k].name) == nlen && strncmp(flags[k].name, name, nlen) == 0) f = &flags[k];
        if (!f) {
            fprintf(stderr, "dap %s: error: unknown flag '--%.*s' (see dap %s --help)\n", cmd, (int)nlen, name, cmd);
            return 2;
        }
        if (f->type == FLAG_BOOL) {
            if (eq) {
                fprintf(stderr, "dap %s: error: flag --%s takes no value\n", cmd, f->name);
                return 2;
            }
            *(int *)f->ptr = 1;
            continue;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            fprintf(stderr, "dap %s: error: flag --%s needs a value\n", cmd, f->name);
            return 2;
        }
        char *end = NULL;
        errno = 0;
        if (f->type == FLAG_STR) {
            *(const char **)f->ptr = val;
        } else if (f->type == FLAG_INT) {
            long v = strtol(val, &end, 10);
            if (errno || end == val || *end || v < -2147483647L || v > 2147483647L) {
                fprintf(stderr, "dap %s: error: flag --%s expects an integer, got '%s'\n", cmd, f->name, val);
                return 2;
            }
            if ((double)v < f->lo || (double)v > f->hi) {
                fprintf(stderr, "dap %s: error: --%s must be in %.0f..%.0f, got %ld\n", cmd, f->name, f->lo, f->hi, v);
                return 2;
            }
            *(int *)f->ptr = (int)v;
        } else {
            double v = strtod(val, &end);
            if (errno || end == val || *end || !isfinite(v)) {
                fprintf(stderr, "dap %s: error: flag --%s expects a finite number, got '%s'\n", cmd, f->name, val);
                return 2;
            }
            if (v < f->lo || v > f->hi) {
                fprintf(stderr, "dap %s: error: --%s must be in [%g, %g], got %g\n", cmd, f->name, f->lo, f->hi, v);
                return 2;
            }
            *(double *)f->ptr = v;
        }
    }
    return file_resolve(cmd, flags, nflags, pos, *npos);
}

int cli_fail(const char *cmd, int status) {
    const char *msg = dap_last_error();
    fprintf(stderr, "dap %s: error: %s\n", cmd, msg && *msg ? msg : dap_status_name(status));
    return 1;
}

int cli_failf(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dap %s: error: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

void cli_apply_threads(int threads) { dap_set_threads(threads); }

int cli_select_device(const char *cmd, const char *device, const char *precision, const char *gpu) {
    if (gpu) {
        char *end;
        long k = strcmp(gpu, "auto") ? strtol(gpu, &end, 10) : DAP_GPU_AUTO;
        if (strcmp(gpu, "auto") && (end == gpu || *end || k < 0 || k > 1023))
            return cli_failf(cmd, "--gpu '%s': expected a device index (0, 1, ...) or auto", gpu);
        dap_device_set_gpu((int)k);
    }
    int rc = device ? dap_device_select(device) : dap_device_from_env();
    if (rc || (rc = dap_device_set_precision(precision))) return cli_fail(cmd, rc);
    if (gpu && dap_device() != DAP_DEVICE_CUDA)
        return cli_failf(cmd, "--gpu %s picks a GPU for --device cuda, but the device is cpu", gpu);
    return 0;
}

int cli_check_writable(const char *flag, const char *path) {
    char dir[4096], tmp[4200];
    const char *slash = strrchr(path, '/');
    if (!*path || (slash && slash[1] == 0))
        return dap_error(DAP_ERR_ARG, "--%s '%s': expected a file name", flag, path);
    if (slash) snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    else snprintf(dir, sizeof dir, ".");
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return dap_error(DAP_ERR_IO, "--%s %s: is a folder, expected a file name", flag, path);
    snprintf(tmp, sizeof tmp, "%s/.dap-write-test.%ld", dir, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        return dap_error(DAP_ERR_IO, "--%s %s: cannot write in %s (%s); nothing was done", flag, path, dir, strerror(errno));
    close(fd);
    unlink(tmp);
    return DAP_OK;
}

/* The value of --NAME in argv (as "--NAME V" or "--NAME=V"; the last one wins), or NULL. */
static const char *argv_value(int argc, char **argv, const char *name) {
    const char *v = NULL;
    size_t n = strlen(name);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || strncmp(a + 2, name, n)) continue;
        if (a[2 + n] == '=') v = a + 3 + n;
        else if (!a[2 + n] && i + 1 < argc) v = argv[++i];
    }
    return v;
}

static const char *const defaults_sections[] = {"sampler", "random", "vanilla", "dap",     "mgd3",
                                                "d4m",     "dm",     "igd",     "minimax"};

/* The tokens and line of the last cli_model_defaults call: they live as long as the program. */
static char *defaults_text, **defaults_argv, *defaults_used;

static void defaults_free(void) {
    free(defaults_text), free(defaults_argv), free(defaults_used);
}

int cli_model_defaults(const char *cmd, int argc, char **argv, int *nargc, char ***nargv,
                       const char **used) {
    *nargc = argc, *nargv = argv, *used = "";
    const char *method = strcmp(cmd, "distill") ? NULL : argv_value(argc, argv, "method");
    if (!method && !strcmp(cmd, "distill")) method = "dap";
    /* [sampler]: every method that samples the model */
    const int sampler = !method || (strcmp(method, "random") && strcmp(method, "dm"));
    const char *given = argv_value(argc, argv, "defaults"), *model = argv_value(argc, argv, "model");
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 0;
    if (given && !strcmp(given, "none")) return 0;
    char path[4200];
    if (given) {
        snprintf(path, sizeof path, "%s", given);
    } else {
        const char *m = model ? cli_data_path(model) : NULL;
        size_t n = m ? strlen(m) : 0;
        if (!m || n < 12 || strcmp(m + n - 12, ".safetensors") || n - 12 + 10 >= sizeof path) return 0;
        snprintf(path, sizeof path, "%.*s.defaults", (int)(n - 12), m);
        if (!is_file(path)) return 0;
    }
    uint8_t *bytes;
    size_t len;
    if (dap_read_file(path, &bytes, &len)) {
        fprintf(stderr, "dap %s: error: --defaults %s: cannot read it (%s)\n", cmd, path, strerror(errno));
        return 2;
    }
    char *text = dap_realloc(bytes, len + 1); /* a C string for the line parser */
    text[len] = 0;
    /* tokens of the wanted sections, in file order */
    int ntok = 0, want = 0, line = 0, seen = 0;
    char **tok = malloc(((len + 1) / 2 + 1) * sizeof *tok);
    char lines_used[512] = "";
    for (char *p = text, *eol; tok && p && *p; p = eol) {
        eol = strchr(p, '\n');
        if (eol) *eol++ = 0;
        line++;
        char *hash = strchr(p, '#');
        if (hash) *hash = 0;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (!*p) continue;
        if (*p == '[') {
            char *close = strchr(p, ']');
            /* [NAME] or [NAME ipc>=N] / [NAME ipc<=N]: the latter only for dap distill runs of that IPC */
            char *sp = close ? memchr(p, ' ', (size_t)(close - p)) : NULL;
            size_t k = 0, n = close ? (size_t)((sp ? sp : close) - p - 1) : 0;
            for (; close && k < sizeof defaults_sections / sizeof defaults_sections[0]; k++)
                if (strlen(defaults_sections[k]) == n && !strncmp(defaults_sections[k], p + 1, n)) break;
            int bound = 0, ge = 0, cond_ok = 1;
            if (close && sp) {
                char op[3] = "", tail = 0;
                *close = 0;
                cond_ok = sscanf(sp + 1, " ipc%2[<>=]%d %c", op, &bound, &tail) == 2 && bound >= 1 &&
                          (!strcmp(op, ">=") || !strcmp(op, "<="));
                ge = !strcmp(op, ">=");
                *close = ']';
            }
            if (!close || k == sizeof defaults_sections / sizeof defaults_sections[0] || !cond_ok) {
                fprintf(stderr, "dap %s: error: %s line %d: unknown section '%s' (expected [sampler] or a "
                                "method: [random], [vanilla], [dap], [mgd3], [d4m], [dm], [igd], [minimax], each "
                                "optionally with an IPC range: [dap ipc>=50], [dap ipc<=10])\n",
                        cmd, path, line, p);
                free(tok), free(text);
                return 2;
            }
            p[n + 1] = 0, seen = 1;
            want = k == 0 ? sampler : method && !strcmp(method, p + 1);
            if (sp && want) { /* only a distill run of that IPC (default dap_distill_opts' 10) */
                const char *iv = method ? argv_value(argc, argv, "ipc") : NULL;
                const int ipc = iv ? atoi(iv) : 10; /* dap_distill_opts_default's */
                want = method && (ge ? ipc >= bound : ipc <= bound);
            }
            if (want) {
                size_t u = strlen(lines_used);
                if (sp) snprintf(lines_used + u, sizeof lines_used - u, " [%s ipc%s%d]", p + 1, ge ? ">=" : "<=", bound);
                else snprintf(lines_used + u, sizeof lines_used - u, " [%s]", p + 1);
            }
            continue;
        }
        if (!seen) {
            fprintf(stderr, "dap %s: error: %s line %d: '%s' is outside a section ([sampler] or [METHOD])\n", cmd,
                    path, line, p);
            free(tok), free(text);
            return 2;
        }
        if (!want) continue;
        for (char *t = strtok(p, " \t\r"); t; t = strtok(NULL, " \t\r")) tok[ntok++] = t;
    }
    if (!tok || !ntok) {
        free(tok), free(text);
        return 0;
    }
    char **nv = malloc((size_t)(argc + ntok + 1) * sizeof *nv);
    size_t ulen = strlen(path) + strlen(lines_used) + 8;
    for (int i = 0; i < ntok; i++) ulen += strlen(tok[i]) + 1;
    char *u = malloc(ulen);
    if (!nv || !u) {
        free(nv), free(u), free(tok), free(text);
        fprintf(stderr, "dap %s: error: out of memory\n", cmd);
        return 2;
    }
    nv[0] = argv[0];
    for (int i = 0; i < ntok; i++) nv[1 + i] = tok[i];
    for (int i = 1; i < argc; i++) nv[ntok + i] = argv[i];
    nv[argc + ntok] = NULL;
    int off = snprintf(u, ulen, "%s%s:", path, lines_used);
    for (int i = 0; i < ntok; i++) off += snprintf(u + off, ulen - (size_t)off, " %s", tok[i]);
    if (!defaults_text) atexit(defaults_free);
    else defaults_free();
    defaults_text = text, defaults_argv = nv, defaults_used = u;
    free(tok);
    *nargc = argc + ntok, *nargv = nv, *used = u;
    return 0;
}

int cli_read_text(const char *path, char *buf, size_t n) {
    uint8_t *d;
    size_t len;
    if (dap_read_file(path, &d, &len) != DAP_OK) return 0;
    size_t m = len < n - 1 ? len : n - 1;
    memcpy(buf, d, m);
    buf[m] = 0;
    free(d);
    return 1;
}
