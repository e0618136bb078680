/*
 * test_core.c: the random generator (same numbers whatever the thread count, sane
 * moments), atomic writes, file locks, directory creation and the error channel.
 */
#include <fcntl.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/blas.h"
#include "core/core.h"
#include "test.h"

DAP_TEST(rng_thread_invariant) {
    size_t n = 200000; /* above the parallel threshold */
    float *a = dap_alloc_f32(n), *b = dap_alloc_f32(n);
    dap_rng r;
    omp_set_num_threads(1);
    dap_rng_init(&r, 42, 7);
    dap_rng_normal(&r, a, n, 0, 1);
    omp_set_num_threads(2);
    dap_rng_init(&r, 42, 7);
    dap_rng_normal(&r, b, n, 0, 1);
    CHECK(memcmp(a, b, n * sizeof(float)) == 0);
    /* a fill in two halves gives the same numbers as one fill */
    dap_rng_init(&r, 42, 7);
    dap_rng_normal(&r, b, n / 2, 0, 1);
    dap_rng_normal(&r, b + n / 2, n - n / 2, 0, 1);
    CHECK(memcmp(a, b, n * sizeof(float)) == 0);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) s += a[i], s2 += (double)a[i] * a[i];
    double mean = s / n, var = s2 / n - mean * mean;
    printf("    normal: mean %.4f var %.4f\n", mean, var);
    CHECK_NEAR(mean, 0.0, 0.01);
    CHECK_NEAR(var, 1.0, 0.02);
    dap_rng_init(&r, 43, 7);
    dap_rng_normal(&r, b, n, 0, 1);
    CHECK(memcmp(a, b, n * sizeof(float)) != 0); /* another seed differs */
    dap_rng_init(&r, 1, 2);
    dap_rng_uniform(&r, a, n, -2, 3);
    float lo = 1e9, hi = -1e9;
    s = 0;
    for (size_t i = 0; i < n; i++) lo = a[i] < lo ? a[i] : lo, hi = a[i] > hi ? a[i] : hi, s += a[i];
    printf("    uniform[-2,3): min %.4f max %.4f mean %.4f\n", lo, hi, s / n);
    CHECK(lo >= -2 && hi < 3);
    CHECK_NEAR(s / n, 0.5, 0.02);
    dap_free_aligned(a);
    dap_free_aligned(b);
}

DAP_TEST(rng_below_and_shuffle) {
    dap_rng r;
    dap_rng_init(&r, 5, 0);
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) counts[dap_rng_below(&r, 7)]++;
    for (int k = 0; k < 7; k++) CHECK_MSG(abs(counts[k] - 10000) < 500, "bucket %d: %d", k, counts[k]);
    int a[100];
    for (int i = 0; i < 100; i++) a[i] = i;
    dap_rng_shuffle(&r, a, 100);
    int seen[100] = {0}, moved = 0;
    for (int i = 0; i < 100; i++) seen[a[i]]++, moved += a[i] != i;
    for (int i = 0; i < 100; i++) CHECK(seen[i] == 1);
    CHECK(moved > 80);
}

DAP_TEST(atomic_write_and_mkdir) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/a/b/c", dap_test_tmpdir());
    CHECK(dap_mkdir_p(dir) == DAP_OK);
    CHECK(dap_mkdir_p(dir) == DAP_OK); /* idempotent */
    snprintf(path, sizeof path, "%s/f.bin", dir);
    CHECK(dap_write_file_atomic(path, "hello", 5) == DAP_OK);
    uint8_t *data;
    size_t n;
    CHECK(dap_read_file(path, &data, &n) == DAP_OK);
    CHECK(n == 5 && memcmp(data, "hello", 5) == 0);
    free(data);
    char h1[17], h2[17];
    CHECK(dap_file_hash(path, h1) == DAP_OK);
    CHECK(dap_write_file_atomic(path, "hellp", 5) == DAP_OK);
    CHECK(dap_file_hash(path, h2) == DAP_OK);
    CHECK(strcmp(h1, h2) != 0);
    /* a write into a missing directory fails with the path in the message, leaves nothing */
    snprintf(path, sizeof path, "%s/missing/f.bin", dap_test_tmpdir());
    CHECK(dap_write_file_atomic(path, "x", 1) == DAP_ERR_IO);
    CHECK(strstr(dap_last_error(), "missing") != NULL);
    CHECK(!dap_file_exists(path));
    CHECK(dap_read_file(path, &data, &n) == DAP_ERR_IO);
}

/* Whether another process could take the lock on `path` now (flock is per open file
 * description, so the probe runs in a child). */
static int lock_free_elsewhere(const char *path) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(path, O_RDWR);
        _exit(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

DAP_TEST(file_lock) {
    const char *path = dap_test_path("x.lock");
    int fd = dap_lock_file(path);
    CHECK(fd >= 0 && dap_file_exists(path));
    CHECK(!lock_free_elsewhere(path)); /* held: another process would wait */
    dap_unlock_file(fd);
    CHECK(lock_free_elsewhere(path));
    fd = dap_lock_file(path); /* taken again after release */
    CHECK(fd >= 0);
    dap_unlock_file(fd);
    dap_unlock_file(-1); /* no-op */
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.lock", dap_test_tmpdir());
    CHECK(dap_lock_file(missing) == -1);
    CHECK(strstr(dap_last_error(), "no/such/dir") != NULL);
}

DAP_TEST(size_overflow) {
    size_t out;
    CHECK(dap_mul_size(1u << 20, 1u << 20, &out) == DAP_OK && out == (size_t)1 << 40);
    CHECK(dap_mul_size(SIZE_MAX / 2, 3, &out) == DAP_ERR_VALUE);
}

DAP_TEST(core_fnv1a64_vectors) {
    /* the published FNV-1a 64 test vectors, and chaining = one call over the concatenation */
    CHECK(dap_fnv1a64(DAP_FNV1A64_INIT, "", 0) == 0xcbf29ce484222325ULL);
    CHECK(dap_fnv1a64(DAP_FNV1A64_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL);
    CHECK(dap_fnv1a64(DAP_FNV1A64_INIT, "foobar", 6) == 0x85944171f73967e8ULL);
    CHECK(dap_fnv1a64(dap_fnv1a64(DAP_FNV1A64_INIT, "foo", 3), "bar", 3) == 0x85944171f73967e8ULL);
}

DAP_TEST(blas_core_choice) {
    dap_cpu_features none = {0, 0, 0}, avx2 = {1, 0, 0}, avx512 = {1, 1, 0}, zen = {1, 0, 1},
                     zen4 = {1, 1, 1};
    /* a generic fallback on a CPU that can do better: the best set it can run */
    const char *c = dap_blas_better_core("Prescott", avx512);
    CHECK(c && !strcmp(c, "SkylakeX"));
    CHECK(!strcmp(dap_blas_better_core("Prescott", avx2), "Haswell"));
    CHECK(!strcmp(dap_blas_better_core("Barcelona", zen), "Zen"));
    CHECK(!strcmp(dap_blas_better_core("prescott", zen4), "SkylakeX")); /* case does not matter */
    CHECK(!strcmp(dap_blas_better_core("Sandybridge", avx2), "Haswell"));
    /* a CPU without AVX2/FMA keeps the fallback; a deliberate choice is never replaced */
    CHECK(dap_blas_better_core("Prescott", none) == NULL);
    CHECK(dap_blas_better_core("Haswell", avx512) == NULL);
    CHECK(dap_blas_better_core("Zen", zen4) == NULL);
    CHECK(dap_blas_better_core("SkylakeX", avx512) == NULL);
    CHECK(dap_blas_better_core("Cooperlake", avx512) == NULL);
    CHECK(dap_blas_better_core(NULL, avx512) == NULL);
    /* and what this process runs: never a generic set on a CPU that can beat it, unless
     * the user chose the kernels (tests/main.c called dap_blas_fix_core first, which may
     * have restarted this program with OPENBLAS_CORETYPE set) */
    const char *now = dap_blas_core();
    CHECK(now && now[0]);
    int users_choice = getenv("OPENBLAS_CORETYPE") && !getenv(DAP_BLAS_DETECTED_ENV);
    if (!users_choice && !getenv("DAP_BLAS_CORE"))
        CHECK_MSG(dap_blas_better_core(now, dap_cpu_features_detect()) == NULL,
                  "OpenBLAS runs %s here", now);
    CHECK(strstr(dap_blas_describe(), now) != NULL);
}
