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

static int g_gpu = 0;

int dap_device_set_gpu(int index) {
    if (index < DAP_GPU_AUTO) return dap_error(DAP_ERR_ARG, "--gpu %d: expected a device index (0, 1, ...) or auto", index);
    g_gpu = index;
    return DAP_OK;
}

int dap_device_gpu(void) { return g_gpu; }

/* A launcher's variable as a non-negative int: 1 read, 0 unset, -1 malformed (error set). */
static int env_int(const char *name, long *v) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    *v = strtol(s, &end, 10);
    if (*end || *v < 0 || *v > 1000000) {
        dap_error(DAP_ERR_ARG, "$%s='%s': expected a whole number from 0 to 1000000", name, s);
        return -1;
    }
    return 1;
}

int dap_launcher_rank(int *rank, int *size, const char **which) {
    static const char *pairs[][2] = {{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                     {"PMI_RANK", "PMI_SIZE"},
                                     {"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"},
                                     {"SLURM_PROCID", "SLURM_NTASKS"}};
    static const char *names[] = {"OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE", "PMI_RANK/PMI_SIZE",
                                  "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_MIN/SLURM_ARRAY_TASK_STEP/SLURM_ARRAY_TASK_COUNT",
                                  "SLURM_PROCID/SLURM_NTASKS"};
    for (int p = 0; p < 4; p++) {
        long r, n, lo = 0, step = 1;
        int hr = env_int(pairs[p][0], &r);
        if (hr == 0) continue;
        if (hr < 0) return DAP_ERR_ARG;
        int hn = env_int(pairs[p][1], &n);
        if (hn < 0) return DAP_ERR_ARG;
        if (hn == 0) return dap_error(DAP_ERR_ARG, "$%s is set but $%s is not", pairs[p][0], pairs[p][1]);
        if (p == 2) { /* an array's task ids run MIN, MIN+STEP, ... */
            if (env_int("SLURM_ARRAY_TASK_MIN", &lo) < 0 || env_int("SLURM_ARRAY_TASK_STEP", &step) < 0) return DAP_ERR_ARG;
            if (step < 1) step = 1;
            if (r < lo || (r - lo) % step)
                return dap_error(DAP_ERR_ARG, "$SLURM_ARRAY_TASK_ID=%ld is not one of the array's ids (min %ld, step %ld)", r, lo, step);
            r = (r - lo) / step;
        }
        if (n < 1 || r >= n)
            return dap_error(DAP_ERR_ARG, "%s: rank %ld of %ld processes is outside 0..size-1", names[p], r, n);
        *rank = (int)r, *size = (int)n, *which = names[p];
        return DAP_OK;
    }
    return dap_error(DAP_ERR_MISSING, "no launcher found: none of OMPI_COMM_WORLD_RANK, PMI_RANK, SLURM_ARRAY_TASK_ID, "
                                      "SLURM_PROCID is set");
}

int dap_launcher_local_rank(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"};
    for (int k = 0; k < 3; k++) {
        const char *s = getenv(vars[k]);
        if (!s || !*s) continue;
        char *end;
        long v = strtol(s, &end, 10);
        if (!*end && v >= 0 && v <= 1000000) return (int)v;
    }
    return -1;
}

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
