/*
 * idx.c: the IDX format of MNIST-style datasets (Fashion-MNIST), gzipped or raw.
 * Header: two zero bytes, a dtype byte (only 0x08, unsigned byte, is accepted), the
 * number of dims, then each dim as a big-endian u32. The data must be exactly
 * prod(dims) bytes: a truncated file or one with trailing bytes is rejected. Data is
 * read in growing chunks so that a header claiming huge dims costs no more memory
 * than the bytes actually present.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/core.h"
#include "io/io.h"

/* More than any real IDX file; keeps a lying header from describing petabytes. */
#define IDX_MAX_BYTES ((size_t)1 << 36)

/* Reads up to n bytes; returns the count read (< n only at end of file) or -1. */
static long long gz_read_full(gzFile f, uint8_t *dst, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(f, dst + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long long)got;
}

static int gz_fail(gzFile f, const char *path, const char *what) {
    int zerr = 0;
    const char *msg = gzerror(f, &zerr);
    return dap_error(DAP_ERR_FORMAT, "%s: %s (%s)", path, what, zerr == Z_ERRNO ? strerror(errno) : msg);
}

int dap_idx_read(const char *path, dap_idx *out) {
    memset(out, 0, sizeof *out);
    gzFile f = gzopen(path, "rb"); /* reads raw files transparently */
    if (!f) return dap_error(DAP_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    int rc = DAP_OK;
    uint8_t *data = NULL;
    uint8_t head[4 + 4 * 4];

    long long got = gz_read_full(f, head, 4);
    if (got < 0) {
        rc = gz_fail(f, path, "cannot read IDX header");
        goto done;
    }
    if (got < 4 || head[0] != 0 || head[1] != 0) {
        rc = dap_error(DAP_ERR_FORMAT, "%s: not an IDX file (bad magic: expected 00 00 08 NN)", path);
        goto done;
    }
    if (head[2] != 0x08) {
        rc = dap_error(DAP_ERR_FORMAT, "%s: IDX dtype 0x%02x not supported (expected 0x08, unsigned byte)",
                       path, head[2]);
        goto done;
    }
    int ndim = head[3];
    if (ndim < 1 || ndim > 4) {
        rc = dap_error(DAP_ERR_FORMAT, "%s: IDX has %d dims (expected 1 to 4)", path, ndim);
        goto done;
    }
    got = gz_read_full(f, head + 4, 4 * (size_t)ndim);
    if (got < 0) {
        rc = gz_fail(f, path, "cannot read IDX dims");
        goto done;
    }
    if (got < 4 * ndim) {
        rc = dap_error(DAP_ERR_FORMAT, "%s: truncated IDX header (expected %d bytes, found %lld)", path,
                       4 + 4 * ndim, 4 + got);
        goto done;
    }
    size_t expect = 1;
    for (int i = 0; i < ndim; i++) {
        const uint8_t *b = head + 4 + 4 * i;
        uint32_t d = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        if (d == 0 || d > 0x7fffffffu) {
            rc = dap_error(DAP_ERR_FORMAT, "%s: IDX dim %d is %u (expected 1 to 2^31-1)", path, i, d);
            goto done;
        }
        out->dims[i] = (int)d;
        if (dap_mul_size(expect, d, &expect) != DAP_OK || expect > IDX_MAX_BYTES) {
            rc = dap_error(DAP_ERR_FORMAT, "%s: IDX dims describe more than 2^36 bytes", path);
            goto done;
        }
    }
    out->ndim = ndim;

    /* Grow the buffer as data arrives (never more than twice what is present), and
     * ask for one byte beyond `expect` to detect trailing data. */
    size_t cap = expect + 1 < (1u << 20) ? expect + 1 : (1u << 20), len = 0;
    data = dap_malloc(cap);
    for (;;) {
        got = gz_read_full(f, data + len, cap - len);
        if (got < 0) {
            rc = gz_fail(f, path, "cannot read IDX data");
            goto done;
        }
        len += (size_t)got;
        if (len < cap || len > expect) break;
        cap = cap * 2 < expect + 1 ? cap * 2 : expect + 1;
        data = dap_realloc(data, cap);
    }
    if (len != expect) {
        const char *what = len < expect ? "truncated IDX file" : "IDX file has trailing data";
        rc = dap_error(DAP_ERR_FORMAT, "%s: %s: dims need %zu data bytes, found %s%zu", path, what, expect,
                       len > expect ? "more than " : "", len > expect ? expect : len);
        goto done;
    }
    /* all the bytes arrived, but a gzip stream cut inside its trailer (or just before
     * it) never had its CRC-32 checked: zlib leaves "unexpected end of file" here */
    int zerr = Z_OK;
    gzerror(f, &zerr);
    if (zerr != Z_OK) {
        rc = gz_fail(f, path, "truncated gzip stream");
        goto done;
    }
    out->data = data;
    data = NULL;
done:
    free(data);
    gzclose(f);
    if (rc != DAP_OK) memset(out, 0, sizeof *out);
    return rc;
}

void dap_idx_free(dap_idx *x) {
    free(x->data);
    memset(x, 0, sizeof *x);
}
