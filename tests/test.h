/*
 * test.h: the test harness. A test is `DAP_TEST(name) { ... }` in any tests/ file;
 * it registers itself at load time. CHECK() records a failure (with file and line)
 * and goes on; DAP_SKIP("reason") ends a test that cannot run here (a missing dataset or
 * device, or the sanitizer pass's DAP_TEST_FAST) as skipped, never as passed. The runner
 * (tests/main.c) prints one line per test ("SKIP name: reason" for a skipped one) and ends
 * with "N passed, N failed, N skipped", exiting non-zero on any failure.
 */
#ifndef DAP_TEST_H
#define DAP_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

typedef void (*dap_test_fn)(void);
void dap_test_register(const char *name, dap_test_fn fn);
void dap_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Marks the running test skipped with a reason (printf format); see DAP_SKIP. */
void dap_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The sanitizer pass (tests/run.sh) sets DAP_TEST_FAST: slow model tests skip there. */
int dap_test_fast(void);
/* Path of a committed fixture: tests/ref/<name> (works from the repo root or build/). */
const char *dap_test_ref(const char *name);
/* A scratch directory for this run (created once, removed at the end). */
const char *dap_test_tmpdir(void);
/* dap_test_tmpdir()/name in one of eight rotating buffers (tests/util.c). */
const char *dap_test_path(const char *name);
/* tests/ref/dit_small.safetensors (a failure recorded and NULL when it does not load); with
 * tame, its final layer scaled by 0.05 so that eps stays small and samples stay inside
 * [-1, 1] without clamping. */
struct dap_dit *dap_test_small_dit(int tame);
/* A toy classification set: class k images (4 classes, 1x8x8, noisy) are bright in
 * quadrant k; per_class images each, indexed (tests/util.c). */
struct dap_dataset;
void dap_test_toy_set(struct dap_dataset *ds, int per_class, uint64_t seed);
/* Checks a parameter table against a key list (tests/ref/REF: "key d0 d1 ..." a line),
 * each file key first renamed by `rename` when given: every key must be in the table with
 * its shape (each miss a recorded failure naming `what`). Returns the lines read (-1: the
 * file could not be read); *bad the misses, *in_order whether line i is table entry i. */
/* A labelled set of K classes (c0, c1, ...; image i of class i mod K), per_class images of
 * (c, s, s): uniform noise in [lo, hi] from seed, plus base - step k for class k. */
void dap_test_labelled_set(struct dap_dataset *ds, int K, int per_class, int c, int s, uint64_t seed, float lo,
                           float hi, float base, float step);
/* The same shaped like model m's inputs and classes. */
void dap_test_model_set(struct dap_dataset *ds, const struct dap_dit *m, int per_class, uint64_t seed, float lo,
                        float hi, float base, float step);
struct dap_params;
int dap_test_key_list(const struct dap_params *ps, const char *ref, const char *what,
                      void (*rename)(char *key, size_t cap), int *bad, int *in_order);
/* Writes an h x w JPEG of c = 1 or 3 channels (interleaved bytes) at `quality`,
 * progressive or baseline (tests/util.c). */
void dap_test_write_jpeg(const char *path, const uint8_t *px, int h, int w, int c, int quality, int progressive);

#define DAP_TEST(name)                                                                         \
    static void test_##name(void);                                                             \
    __attribute__((constructor)) static void register_##name(void) {                           \
        dap_test_register(#name, test_##name);                                                 \
    }                                                                                          \
    static void test_##name(void)

/* Ends the test as skipped: DAP_SKIP("no Fashion-MNIST: %s", why). */
#define DAP_SKIP(...)                                                                          \
    do {                                                                                       \
        dap_test_skip(__VA_ARGS__);                                                            \
        return;                                                                                \
    } while (0)

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) dap_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                    \
    } while (0)
#define CHECK_MSG(cond, ...)                                                                   \
    do {                                                                                       \
        if (!(cond)) dap_test_fail(__FILE__, __LINE__, __VA_ARGS__);                           \
    } while (0)
/* Checks |a - b| <= tol and reports both values. */
#define CHECK_NEAR(a, b, tol)                                                                  \
    do {                                                                                       \
        double ca_ = (a), cb_ = (b);                                                           \
        if (!(fabs(ca_ - cb_) <= (tol)))                                                       \
            dap_test_fail(__FILE__, __LINE__, "%s = %g vs %s = %g (tol %g)", #a, ca_, #b, cb_,  \
                          (double)(tol));                                                      \
    } while (0)

/* Largest absolute and relative difference between two arrays (relative: |a-b| /
 * max(|b|, floor)). Prints "  <label>: max abs a, max rel r" and returns the rel. */
double dap_test_compare(const char *label, const float *got, const float *want, size_t n,
                        double floor_);

/* Finite-difference gradient check helper: f(ctx) returns a scalar loss; `x` is the
 * array to perturb (n values), `analytic` its computed gradient. Central differences
 * in double on `samples` positions (all if n <= samples). Prints the largest relative
 * error with `label`, returns it. */
typedef double (*dap_test_loss_fn)(void *ctx);
double dap_test_gradcheck(const char *label, dap_test_loss_fn f, void *ctx, float *x,
                          const float *analytic, size_t n, int samples, float h);

#endif /* DAP_TEST_H */
