/*
 * core.c: error channel, checked allocation, logging, timing, threads and atomic
 * file writes. The random generator is in rng.c.
 */
#define _POSIX_C_SOURCE 200809L
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- errors --------------------------------------------------------------- */
static _Thread_local char g_err[1024];

void dap_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "dap: internal error: assertion `%s` failed at %s:%d\n", expr, file, line);
    abort();
}

int dap_error(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return status;
}

void dap_clear_error(void) { g_err[0] = 0; }
const char *dap_last_error(void) { return g_err; }

const char *dap_status_name(int status) {
    switch (status) {
    case DAP_OK: return "ok";
    case DAP_ERR_IO: return "i/o error";
    case DAP_ERR_FORMAT: return "format error";
    case DAP_ERR_SHAPE: return "shape error";
    case DAP_ERR_ARG: return "argument error";
    case DAP_ERR_NOMEM: return "out of memory";
    case DAP_ERR_VALUE: return "value error";
    case DAP_ERR_MISSING: return "missing";
    default: return "unknown error";
    }
}

/* ---- allocation ----------------------------------------------------------- */
static void oom(size_t n) {
    fprintf(stderr, "dap: out of memory allocating %zu bytes\n", n);
    abort();
}

void *dap_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *dap_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom(count * size);
    return p;
}

void *dap_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *dap_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = dap_malloc(n);
    memcpy(d, s, n);
    return d;
}

float *dap_alloc_f32(size_t n) {
    size_t bytes = (n ? n : 1) * sizeof(float);
    bytes = (bytes + 63) & ~(size_t)63;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) oom(bytes);
    memset(p, 0, bytes);
    return p;
}

void dap_free_aligned(void *p) { free(p); }

int dap_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) {
        *out = 0;
        return dap_error(DAP_ERR_VALUE, "size overflow: %zu x %zu", a, b);
    }
    *out = a * b;
    return DAP_OK;
}

/* ---- logging and timing --------------------------------------------------- */
static int g_log_level = DAP_LOG_INFO;
void dap_log_set_level(int level) { g_log_level = level; }
int dap_log_get_level(void) { return g_log_level; }

void dap_log(int level, const char *fmt, ...) {
    if (level > g_log_level) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

const char *dap_fmt_bytes(char *buf, size_t cap, double bytes) {
    const double k = 1024.0;
    if (bytes >= k * k * k) snprintf(buf, cap, "%.2f GiB", bytes / (k * k * k));
    else if (bytes >= k * k) snprintf(buf, cap, "%.1f MiB", bytes / (k * k));
    else if (bytes >= k) snprintf(buf, cap, "%.0f KiB", bytes / k);
    else snprintf(buf, cap, "%.0f bytes", bytes);
    return buf;
}

double dap_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- threads -------------------------------------------------------------- */
void dap_set_threads(int n) {
#ifdef _OPENMP
    if (n <= 0) {
        const char *env = getenv("OMP_NUM_THREADS");
        if (env && *env) return; /* the OpenMP runtime has read it: keep the user's count */
        n = omp_get_num_procs();
    }
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

void dap_set_max_active_levels(int n) {
#ifdef _OPENMP
    omp_set_max_active_levels(n);
#else
    (void)n;
#endif
}

int dap_get_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- files ---------------------------------------------------------------- */
FILE *dap_tmp_open(const char *path, char **tmp) {
    size_t len = strlen(path) + 32;
    *tmp = dap_malloc(len);
    snprintf(*tmp, len, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(*tmp, "wb");
    if (!f) {
        dap_error(DAP_ERR_IO, "%s: cannot create (%s)", *tmp, strerror(errno));
        free(*tmp);
        *tmp = NULL;
    }
    return f;
}

int dap_tmp_commit(FILE *f, char *tmp, const char *path, int ok, const char *why) {
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    int rc = DAP_OK;
    if (!ok) rc = dap_error(DAP_ERR_IO, "%s: write failed (%s)", path, why && *why ? why : strerror(errno));
    else if (rename(tmp, path) != 0)
        rc = dap_error(DAP_ERR_IO, "%s: cannot rename into place (%s)", path, strerror(errno));
    if (rc != DAP_OK) remove(tmp);
    free(tmp);
    return rc;
}

int dap_write_file_atomic(const char *path, const void *data, size_t n) {
    char *tmp;
    FILE *f = dap_tmp_open(path, &tmp);
    if (!f) return DAP_ERR_IO;
    return dap_tmp_commit(f, tmp, path, n == 0 || fwrite(data, 1, n, f) == n, NULL);
}

int dap_lock_file(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        dap_error(DAP_ERR_IO, "%s: cannot open the lock file (%s)", path, strerror(errno));
        return -1;
    }
    while (flock(fd, LOCK_EX) != 0)
        if (errno != EINTR) {
            dap_error(DAP_ERR_IO, "%s: cannot lock (%s)", path, strerror(errno));
            close(fd);
            return -1;
        }
    return fd;
}

void dap_unlock_file(int fd) {
    if (fd < 0) return;
    flock(fd, LOCK_UN);
    close(fd);
}

int dap_read_file(const char *path, uint8_t **data, size_t *n) {
    *data = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return dap_error(DAP_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = dap_malloc(cap);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = dap_realloc(buf, cap);
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return dap_error(DAP_ERR_IO, "%s: read failed", path);
    }
    /* exactly the file's size, so a parser that reads past the end is caught by ASan */
    *data = dap_realloc(buf, len ? len : 1);
    *n = len;
    return DAP_OK;
}

int dap_mkdir_p(const char *path) {
    char *p = dap_strdup(path);
    size_t len = strlen(p);
    for (size_t i = 1; i <= len; i++) {
        if (p[i] == '/' || p[i] == 0) {
            char c = p[i];
            p[i] = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int rc = dap_error(DAP_ERR_IO, "%s: cannot create directory (%s)", p,
                                   strerror(errno));
                free(p);
                return rc;
            }
            p[i] = c;
        }
    }
    free(p);
    return DAP_OK;
}

int dap_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

uint64_t dap_fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *b = data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

int dap_file_hash(const char *path, char out[17]) {
    FILE *f = fopen(path, "rb");
    if (!f) return dap_error(DAP_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    uint64_t h = 1469598103934665603ULL; /* see core.h: not DAP_FNV1A64_INIT, kept for old manifests */
    unsigned char buf[1 << 15];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) h = dap_fnv1a64(h, buf, got);
    fclose(f);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return DAP_OK;
}
