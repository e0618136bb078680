/*
 * cuda_bf16.h (cuda-emu): the part of the toolkit's BF16 header that src/cuda uses, for
 * running it on the CPU (`make emu`, tests/cuda-emu/README.md): BF16 storage, nothing more.
 * Found before the toolkit's header the way cuda_runtime.h is (this folder comes first on the
 * include path). Kernels are plain C++ in the emulator, so every function here serves host
 * and device code alike, as the toolkit's __host__ __device__ ones do.
 *
 *     __nv_bfloat16 (nv_bfloat16)            2 bytes, the bits of a bfloat16; trivially copyable
 *     __nv_bfloat16 __float2bfloat16(float)  to nearest, ties to even (cvt.rn.bf16.f32): an
 *     __nv_bfloat16 __float2bfloat16_rn(float)   overflow gives +-inf, NaN the canonical 0x7fff
 *     float __bfloat162float(__nv_bfloat16)  exact
 *
 * Stricter than the toolkit on purpose: no implicit conversion to or from float and no
 * arithmetic on __nv_bfloat16 (the toolkit's depend on its configuration macros and the
 * target), so what compiles here compiles with nvcc. What is not here was not needed: add it
 * when a .cu file needs it.
 */
#ifndef DAP_CUDA_EMU_BF16_H
#define DAP_CUDA_EMU_BF16_H

#ifndef __cplusplus
#error "cuda-emu: device code compiles as C++ (g++ -std=c++17)"
#endif

#include <string.h>

#include <type_traits>

struct __nv_bfloat16 {
    __nv_bfloat16() = default; /* uninitialised, as the toolkit's: trivial, so __shared__ arrays work */

  protected: /* as the toolkit's (its __x): no reaching into the bits */
    unsigned short __x;
};
typedef __nv_bfloat16 nv_bfloat16;

static_assert(sizeof(__nv_bfloat16) == 2, "cuda-emu: __nv_bfloat16 is 2 bytes");
static_assert(std::is_trivially_copyable<__nv_bfloat16>::value,
              "cuda-emu: __nv_bfloat16 is trivially copyable");
static_assert(std::is_trivial<__nv_bfloat16>::value, "cuda-emu: __nv_bfloat16 is trivial");

static inline __nv_bfloat16 __float2bfloat16_rn(const float a) {
    unsigned int u;
    memcpy(&u, &a, sizeof u);
    unsigned short b;
    if ((u & 0x7fffffffu) > 0x7f800000u)
        b = 0x7fffu; /* NaN: the canonical one, as the conversion on a GPU gives */
    else             /* to nearest, ties to even; carries into the exponent, up to inf */
        b = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    __nv_bfloat16 r;
    memcpy((void *)&r, &b, sizeof r); /* (void *): the bits, not the protected member, are copied */
    return r;
}

static inline __nv_bfloat16 __float2bfloat16(const float a) {
    return __float2bfloat16_rn(a);
}

static inline float __bfloat162float(const __nv_bfloat16 a) {
    unsigned short b;
    memcpy(&b, &a, sizeof b);
    const unsigned int u = (unsigned int)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#endif /* DAP_CUDA_EMU_BF16_H */
