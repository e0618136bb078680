/*
 * device.c: the process-wide device choice (device.h).
 */
#include "core/device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#ifdef DAP_CUDA
#include "cuda/cuda.h"
#endif

static int g_device = DAP_DEVICE_CPU;
static char g_describe[256] = "cpu";

int dap_device_cuda_built(void) {
#ifdef DAP_CUDA
    return 1;
#else
    return 0;
#endif
}

int dap_device_select(const char *name) {
    if (!name || !strcmp(name, "cpu")) {
        g_device = DAP_DEVICE_CPU;
        snprintf(g_describe, sizeof g_describe, "cpu");
        return DAP_OK;
    }
    if (strcmp(name, "cuda") != 0)
        return dap_error(DAP_ERR_ARG, "device '%s': expected cpu or cuda", name);
#ifdef DAP_CUDA
    DAP_TRY(dap_cuda_init(g_describe, sizeof g_describe));
    g_device = DAP_DEVICE_CUDA;
    return DAP_OK;
#else
    return dap_error(DAP_ERR_MISSING, "device cuda: this dap was built without the CUDA backend "
                                      "(rebuild with `make CUDA=1`, which needs the CUDA toolkit)");
#endif
}

int dap_device_from_env(void) {
    const char *v = getenv("DAP_DEVICE");
    if (!v || !*v) return DAP_OK;
    int rc = dap_device_select(v);
    if (rc == DAP_ERR_ARG) return dap_error(rc, "$DAP_DEVICE='%s': expected cpu or cuda", v);
    return rc;
}

int dap_device(void) { return g_device; }
const char *dap_device_name(void) { return g_device == DAP_DEVICE_CUDA ? "cuda" : "cpu"; }
const char *dap_device_describe(void) { return g_describe; }
