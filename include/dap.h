/*
 * dap.h: the one public header of libdap (generative dataset distillation with
 * diffusion priors). Status codes and the error message channel live here; the
 * module headers under src/ describe the rest of the library for in-tree users.
 *
 * Error rule: a broken contract inside the code asserts (file and line); bad input
 * from a user (a file, a flag, a shape) makes a call return a non-zero dap_status and
 * leaves a message, retrievable with dap_last_error(), that names the file, tensor or
 * flag, what was expected and what was found. Library code never calls exit().
 */
#ifndef DAP_H
#define DAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DAP_VERSION "0.3.0"

typedef enum dap_status {
    DAP_OK = 0,
    DAP_ERR_IO = 1,      /* a file could not be opened, read or written */
    DAP_ERR_FORMAT = 2,  /* a file's contents are malformed or truncated */
    DAP_ERR_SHAPE = 3,   /* a tensor or image has the wrong shape / dtype */
    DAP_ERR_ARG = 4,     /* a bad argument or flag */
    DAP_ERR_NOMEM = 5,   /* an allocation failed */
    DAP_ERR_VALUE = 6,   /* a value is out of range (NaN, Inf, negative size, ...) */
    DAP_ERR_MISSING = 7, /* a key, class or file that must exist does not */
} dap_status;

/* The message of the last error set on this thread ("" when none). */
const char *dap_last_error(void);
/* A short name for a status code. */
const char *dap_status_name(int status);

#ifdef __cplusplus
}
#endif
#endif /* DAP_H */
