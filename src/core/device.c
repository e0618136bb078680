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
static int g_precision = DAP_PRECISION_FP32;

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
        g_precision = DAP_PRECISION_FP32;
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

const char *dap_precision_name(int p) {
    return p == DAP_PRECISION_TF32 ? "tf32" : p == DAP_PRECISION_BF16 ? "bf16" : "fp32";
}

int dap_device_set_precision(const char *name) {
    if (!name || !*name || !strcmp(name, "fp32")) {
        g_precision = DAP_PRECISION_FP32;
        return DAP_OK;
    }
    int p = !strcmp(name, "tf32") ? DAP_PRECISION_TF32 : !strcmp(name, "bf16") ? DAP_PRECISION_BF16 : -1;
    if (p < 0) return dap_error(DAP_ERR_ARG, "--precision '%s': expected fp32, tf32 or bf16", name);
    if (g_device != DAP_DEVICE_CUDA)
        return dap_error(DAP_ERR_ARG, "--precision %s: the cpu device computes in fp32 only (%s needs --device cuda)",
                         name, name);
#ifdef DAP_CUDA
    if (p == DAP_PRECISION_BF16 && !dap_cuda_bf16_supported())
        return dap_error(DAP_ERR_ARG, "--precision bf16: this GPU (%s) has no bf16 arithmetic (compute capability "
                                      "8.0 or newer); use fp32 or tf32", g_describe);
#endif
    g_precision = p;
    return DAP_OK;
}

int dap_device_precision(void) { return g_precision; }

int dap_device(void) { return g_device; }
const char *dap_device_name(void) { return g_device == DAP_DEVICE_CUDA ? "cuda" : "cpu"; }
const char *dap_device_describe(void) { return g_describe; }
