/*
 * core.h: what every part of libdap uses: checked allocation, the error channel,
 * the counter-based random generator, logging, timing and thread control.
 */
#ifndef DAP_CORE_H
#define DAP_CORE_H

#include <assert.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dap.h"

/* ---- contracts ------------------------------------------------------------ */
/* A broken contract inside the code: abort with file and line (never for user input). */
#define DAP_ASSERT(cond)                                                                       \
    do {                                                                                       \
        if (!(cond)) dap_assert_fail(#cond, __FILE__, __LINE__);                               \
    } while (0)
void dap_assert_fail(const char *expr, const char *file, int line);

/* ---- errors --------------------------------------------------------------- */
/* Sets this thread's error message and returns `status` so callers can write
 * `return dap_error(DAP_ERR_FORMAT, "%s: ...", path);`. */
int dap_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dap_clear_error(void);
/* Propagate a non-zero status. */
#define DAP_TRY(expr)                                                                          \
    do {                                                                                       \
        int dap_try_rc_ = (expr);                                                              \
        if (dap_try_rc_ != DAP_OK) return dap_try_rc_;                                         \
    } while (0)

/* ---- allocation ----------------------------------------------------------- */
/* Aborts on failure (an allocation failure inside a computation is not user input). */
void *dap_malloc(size_t n);
void *dap_calloc(size_t count, size_t size);
void *dap_realloc(void *p, size_t n);
char *dap_strdup(const char *s);
/* 64-byte aligned, zeroed; release with dap_free_aligned. */
float *dap_alloc_f32(size_t n);
void dap_free_aligned(void *p);
/* Overflow-checked size products; return 0 (and set an error) on overflow. */
int dap_mul_size(size_t a, size_t b, size_t *out);

/* ---- random numbers ------------------------------------------------------- */
/* Counter-based: value number i of stream (seed, stream) is a pure function of
 * (seed, stream, i), so a fill gives the same numbers whatever the thread count. */
typedef struct dap_rng {
    uint64_t seed;
    uint64_t stream;
    uint64_t counter; /* next index to hand out */
} dap_rng;

void dap_rng_init(dap_rng *r, uint64_t seed, uint64_t stream);
/* 64 random bits at index i of (seed, stream). */
uint64_t dap_rng_bits(uint64_t seed, uint64_t stream, uint64_t i);
/* Fills consume n indices from the counter. */
void dap_rng_uniform(dap_rng *r, float *out, size_t n, float lo, float hi); /* [lo, hi) */
void dap_rng_normal(dap_rng *r, float *out, size_t n, float mean, float std);
uint64_t dap_rng_next_u64(dap_rng *r);
/* Uniform integer in [0, n). */
uint64_t dap_rng_below(dap_rng *r, uint64_t n);
double dap_rng_next_double(dap_rng *r); /* [0, 1) */
/* Fisher-Yates shuffle of an int array. */
void dap_rng_shuffle(dap_rng *r, int *a, size_t n);

/* ---- logging and timing --------------------------------------------------- */
typedef enum { DAP_LOG_QUIET = 0, DAP_LOG_INFO = 1, DAP_LOG_DEBUG = 2 } dap_log_level;
void dap_log_set_level(int level);
int dap_log_get_level(void);
void dap_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double dap_time_now(void); /* seconds, monotonic */
/* A size for messages into buf (>= 16 chars): "1.25 GiB", "740.0 MiB", "723 KiB", "12 bytes";
 * returns buf. */
const char *dap_fmt_bytes(char *buf, size_t cap, double bytes);

/* ---- threads -------------------------------------------------------------- */
void dap_set_threads(int n); /* <= 0: $OMP_NUM_THREADS if set, else all cores */
int dap_get_threads(void);
void dap_set_max_active_levels(int n); /* nesting of parallel regions (1: inner ones run on one thread) */

/* ---- files ---------------------------------------------------------------- */
/* The two halves of an atomic write for writers that need a FILE*: dap_tmp_open opens
 * PATH.tmp.<pid> (*tmp: its malloc'd name; NULL and an error on failure);
 * dap_tmp_commit closes it and renames it onto PATH when `ok`, else removes it (`why`:
 * the writer's own failure message, or NULL), and frees tmp. */
FILE *dap_tmp_open(const char *path, char **tmp);
int dap_tmp_commit(FILE *f, char *tmp, const char *path, int ok, const char *why);
/* Writes via PATH.tmp.<pid> and rename(2): either the whole file appears or nothing. */
int dap_write_file_atomic(const char *path, const void *data, size_t n);
/* Reads a whole file (returns DAP_ERR_IO with the path on failure). */
int dap_read_file(const char *path, uint8_t **data, size_t *n);
/* Creates a directory and its parents (like mkdir -p). */
int dap_mkdir_p(const char *path);
int dap_file_exists(const char *path);
/* An exclusive advisory lock on PATH (created if missing; flock(2)), waited for: for
 * processes that share a folder (dap distill --shard). Returns the descriptor to pass
 * to dap_unlock_file, or -1 with DAP_ERR_IO set. */
int dap_lock_file(const char *path);
void dap_unlock_file(int fd);
/* FNV-1a 64: pass DAP_FNV1A64_INIT as h first, then the previous result to continue. */
#define DAP_FNV1A64_INIT 14695981039346656037ULL
uint64_t dap_fnv1a64(uint64_t h, const void *data, size_t n);
/* FNV-1a 64 of a file's bytes, as 16 hex digits in out[17]. Its start value has been
 * 1469598103934665603 (the standard basis without its last digit) since the first
 * manifests; kept, because manifests and resume lines record these hashes. */
int dap_file_hash(const char *path, char out[17]);

#endif /* DAP_CORE_H */
