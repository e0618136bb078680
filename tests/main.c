/*
 * main.c: the test runner. `dap_tests [substring ...]` runs the registered tests whose
 * names contain any substring (all when none), one line each, then "N passed, N failed,
 * N skipped". A test that called DAP_SKIP (and failed no check) counts as skipped.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/blas.h"
#include "core/core.h"
#include "test.h"

#define MAX_TESTS 1024
static struct { const char *name; dap_test_fn fn; } g_tests[MAX_TESTS];
static int g_ntests, g_failures;
static char g_skip[512]; /* the running test's skip reason, "" when not skipped */
static char g_tmp[256];

void dap_test_register(const char *name, dap_test_fn fn) {
    if (g_ntests < MAX_TESTS) {
        g_tests[g_ntests].name = name;
        g_tests[g_ntests].fn = fn;
        g_ntests++;
    }
}

void dap_test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "    FAIL %s:%d: ", file, line);
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    va_end(ap);
    g_failures++;
}

void dap_test_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_skip, sizeof g_skip, fmt, ap);
    va_end(ap);
    if (!g_skip[0]) snprintf(g_skip, sizeof g_skip, "(no reason given)");
}

int dap_test_fast(void) { return getenv("DAP_TEST_FAST") != NULL; }

const char *dap_test_ref(const char *name) {
    static char buf[4][512];
    static int k;
    char *b = buf[k++ & 3];
    const char *roots[] = {"tests/ref/", "../tests/ref/", "../../tests/ref/"};
    for (int i = 0; i < 3; i++) {
        snprintf(b, 512, "%s%s", roots[i], name);
        if (dap_file_exists(b)) return b;
    }
    snprintf(b, 512, "tests/ref/%s", name);
    return b;
}

const char *dap_test_tmpdir(void) {
    if (!g_tmp[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_tmp, sizeof g_tmp, "%s/dap-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(g_tmp)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return g_tmp;
}

double dap_test_compare(const char *label, const float *got, const float *want, size_t n,
                        double floor_) {
    double mabs = 0, mrel = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double r = d / fmax(fabs((double)want[i]), floor_);
        if (!(d <= mabs)) mabs = d; /* NaN propagates */
        if (!(r <= mrel)) mrel = r;
    }
    printf("    %-40s max abs %.3g, max rel %.3g\n", label, mabs, mrel);
    return mrel;
}

double dap_test_gradcheck(const char *label, dap_test_loss_fn f, void *ctx, float *x,
                          const float *analytic, size_t n, int samples, float h) {
    double worst = 0;
    size_t step = (samples <= 0 || n <= (size_t)samples) ? 1 : n / (size_t)samples;
    for (size_t i = 0; i < n; i += step) {
        float old = x[i];
        x[i] = old + h;
        double lp = f(ctx);
        x[i] = old - h;
        double lm = f(ctx);
        x[i] = old;
        double num = (lp - lm) / (2.0 * h);
        double a = analytic[i];
        double err = fabs(num - a) / fmax(fmax(fabs(num), fabs(a)), 1e-2);
        if (!(err <= worst)) worst = err;
    }
    printf("    gradcheck %-30s max rel err %.3g\n", label, worst);
    return worst;
}

static void rm_rf(const char *path) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

int main(int argc, char **argv) {
    dap_blas_fix_core(argv);
    int passed = 0, failed = 0, skipped = 0;
    dap_log_set_level(DAP_LOG_QUIET);
    for (int i = 0; i < g_ntests; i++) {
        int selected = argc < 2;
        for (int a = 1; a < argc; a++)
            if (strstr(g_tests[i].name, argv[a])) selected = 1;
        if (!selected) continue;
        int before = g_failures;
        double t0 = dap_time_now();
        printf("  %s\n", g_tests[i].name);
        fflush(stdout);
        g_skip[0] = 0;
        g_tests[i].fn();
        int ok = g_failures == before;
        if (ok && g_skip[0]) {
            printf("SKIP %s: %s\n", g_tests[i].name, g_skip);
            skipped++;
        } else {
            printf("%s %s (%.2fs)\n", ok ? "ok  " : "FAIL", g_tests[i].name, dap_time_now() - t0);
            if (ok) passed++;
            else failed++;
        }
        fflush(stdout);
    }
    if (g_tmp[0]) rm_rf(g_tmp);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
