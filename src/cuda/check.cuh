/*
 * check.cuh: the CUDA backend's error checks, shared by its .cu files. A CUDA or cuBLAS
 * failure after dap_cuda_init succeeded is a broken device, not user input: it is reported
 * on stderr with the call, the file and the line, and the process exits (cuda.h).
 */
#ifndef DAP_CUDA_CHECK_CUH
#define DAP_CUDA_CHECK_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

static inline void dap_cuda_die(const char *what, const char *msg, const char *file, int line) {
    fprintf(stderr, "dap: CUDA error in %s: %s (%s:%d)\n", what, msg, file, line);
    exit(1);
}

static inline const char *dap_cublas_msg(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "cuBLAS not initialised";
    case CUBLAS_STATUS_ALLOC_FAILED: return "cuBLAS allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "cuBLAS invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "cuBLAS architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "cuBLAS execution failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "cuBLAS: not supported";
    default: return "cuBLAS error";
    }
}

#define CK(call)                                                                               \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) dap_cuda_die(#call, cudaGetErrorString(e_), __FILE__, __LINE__); \
    } while (0)
#define CB(call)                                                                               \
    do {                                                                                       \
        cublasStatus_t s_ = (call);                                                            \
        if (s_ != CUBLAS_STATUS_SUCCESS) dap_cuda_die(#call, dap_cublas_msg(s_), __FILE__, __LINE__); \
    } while (0)
#define LAUNCHED() CK(cudaGetLastError())

#endif /* DAP_CUDA_CHECK_CUH */
