/*
 * blas.c: the BLAS library's kernel set (see blas.h for why a program may run twice).
 */
#include "core/blas.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

dap_cpu_features dap_cpu_features_detect(void) {
    dap_cpu_features f = {0, 0, 0};
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    f.avx512 = f.avx2_fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    f.amd = __builtin_cpu_is("amd");
#endif
    return f;
}

const char *dap_blas_better_core(const char *detected, dap_cpu_features f) {
    /* OpenBLAS's x86-64 kernel sets that use neither AVX2 nor FMA: what an unknown CPU
     * falls back to (Prescott for Intel, Barcelona/Opteron for AMD) and older families. */
    static const char *const generic[] = {"Prescott", "Core2",     "Penryn",        "Dunnington",
                                          "Nehalem",  "Atom",      "Nano",          "Opteron",
                                          "Opteron(SSE3)", "Barcelona", "Bobcat",   "Sandybridge",
                                          "Bulldozer", "Piledriver", "Unknown"};
    if (!detected || !f.avx2_fma) return NULL;
    int is_generic = 0;
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
        if (!strcasecmp(detected, generic[i])) is_generic = 1;
    if (!is_generic) return NULL;
    if (f.avx512) return "SkylakeX";
    return f.amd ? "Zen" : "Haswell";
}

const char *dap_blas_core(void) {
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

const char *dap_blas_describe(void) {
    static char buf[256];
    const char *cfg = openblas_get_config(), *was = getenv(DAP_BLAS_DETECTED_ENV), *env = getenv("OPENBLAS_CORETYPE");
    if (was && env)
        snprintf(buf, sizeof buf, "%s (OPENBLAS_CORETYPE=%s set by dap: the library's own choice was %s)",
                 cfg ? cfg : "BLAS", env, was);
    else if (env)
        snprintf(buf, sizeof buf, "%s (OPENBLAS_CORETYPE=%s)", cfg ? cfg : "BLAS", env);
    else
        snprintf(buf, sizeof buf, "%s", cfg ? cfg : "BLAS");
    return buf;
}

void dap_blas_fix_core(char **argv) {
    if (getenv("OPENBLAS_CORETYPE")) return; /* the user's choice, or our own second run */
    const char *keep = getenv("DAP_BLAS_CORE");
    if (keep && !strcmp(keep, "keep")) return;
    const char *detected = dap_blas_core();
    const char *want = dap_blas_better_core(detected, dap_cpu_features_detect());
    if (!want) return;
    char was[64];
    snprintf(was, sizeof was, "%s", detected);
    if (setenv("OPENBLAS_CORETYPE", want, 1) != 0 || setenv(DAP_BLAS_DETECTED_ENV, was, 1) != 0) return;
    fflush(NULL);
    execv("/proc/self/exe", argv);
    /* no exec (no /proc, say): go on with the library's choice, and say what it costs */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(DAP_BLAS_DETECTED_ENV);
    fprintf(stderr,
            "dap: warning: OpenBLAS runs its generic %s kernels on this CPU, which can run %s "
            "(2-3x faster); could not restart with OPENBLAS_CORETYPE=%s: set it yourself\n",
            was, want, want);
}
