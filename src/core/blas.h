/*
 * blas.h: which kernels the BLAS library runs, and the fix for a CPU it does not know.
 *
 * libdap's GEMMs go to OpenBLAS (Debian's build: DYNAMIC_ARCH, one kernel set per CPU
 * family, picked from the CPU's family and model when the library loads). A CPU newer
 * than the library gets a generic fallback: Debian 12's OpenBLAS 0.3.21 runs SSE3
 * kernels ("Prescott") on an Intel Xeon of model 207 (Emerald Rapids), which has AVX-512,
 * and dap's convolutions and DiT then run 2.5-3x slower. The choice can only be changed
 * by the environment variable OPENBLAS_CORETYPE, read when the library loads, so the
 * program sets it and executes itself again (dap_blas_fix_core, first thing in main).
 */
#ifndef DAP_BLAS_H
#define DAP_BLAS_H

/* Set by dap_blas_fix_core for the program it executes again: the set the library chose
 * itself (so OPENBLAS_CORETYPE set with this unset is the user's own choice). */
#define DAP_BLAS_DETECTED_ENV "DAP_BLAS_DETECTED"

/* What the CPU can run, as far as the choice of a kernel set goes. */
typedef struct {
    int avx2_fma; /* AVX2 and FMA3 */
    int avx512;   /* AVX-512 F, BW, DQ and VL (what OpenBLAS's SkylakeX kernels use) */
    int amd;      /* an AMD CPU (its AVX2 kernel set is "Zen") */
} dap_cpu_features;

dap_cpu_features dap_cpu_features_detect(void);

/* The OpenBLAS kernel set to ask for instead of `detected` on a CPU with features `f`,
 * or NULL to keep `detected`. Only a set that uses neither AVX2 nor FMA (a generic
 * fallback such as Prescott) is replaced, and only on a CPU that has both; a set the
 * library chose on purpose (Haswell, Zen, SkylakeX, ...) is never second-guessed. */
const char *dap_blas_better_core(const char *detected, dap_cpu_features f);

/* The kernel set the BLAS library runs now ("SkylakeX", "Prescott", ...). */
const char *dap_blas_core(void);

/* One line for logs and manifests: "OpenBLAS 0.3.21 ... SkylakeX (library's own choice:
 * Prescott)". Static storage. */
const char *dap_blas_describe(void);

/* First thing in a program's main: when OPENBLAS_CORETYPE is unset and the library runs a
 * generic fallback that this CPU can beat (dap_blas_better_core), sets OPENBLAS_CORETYPE
 * and executes /proc/self/exe with the same arguments. Returns when there is nothing to do
 * (also when DAP_BLAS_CORE=keep asks to leave the library's choice alone), or after a
 * warning on stderr when the exec failed (the program then goes on with the fallback). */
void dap_blas_fix_core(char **argv);

#endif
