/*
 * kernels/cuda/kcuda_int.cuh - internals shared by the .cu files (C++ only):
 * error macros, bf16 conversions and typed loads/stores.
 */
#ifndef ASA_KCUDA_INT_CUH
#define ASA_KCUDA_INT_CUH

#include <stdint.h>

#include <cuda_runtime.h>

#include "kcuda.h"

/* Logs the failing call with file:line and returns ASA_ECUDA. */
#define KC_CUDA_TRY(call)                                                     \
    do {                                                                      \
        cudaError_t kc__e = (call);                                           \
        if (kc__e != cudaSuccess) {                                           \
            ASA_LOGE("kernels", "%s:%d: %s: %s", __FILE__, __LINE__, #call,   \
                     cudaGetErrorString(kc__e));                              \
            return ASA_ECUDA;                                                 \
        }                                                                     \
    } while (0)

/* After a launch: a configuration error shows up here. */
#define KC_LAUNCH_CHECK() KC_CUDA_TRY(cudaGetLastError())

static inline bool kc_aligned(const void *p, uintptr_t a) {
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* bf16 bits -> f32 (exact). */
__device__ __forceinline__ float kc_bf16_f32(uint16_t h) {
    return __uint_as_float((uint32_t)h << 16);
}

/* f32 -> bf16 bits, round to nearest even, NaN stays NaN (as asa.h). */
__device__ __forceinline__ uint16_t kc_f32_bf16(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Typed element access by run-time dtype (a uniform branch). */
__device__ __forceinline__ float kc_load(const void *p, kc_dtype t, int64_t i) {
    return t == KC_BF16 ? kc_bf16_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
__device__ __forceinline__ void kc_store(void *p, kc_dtype t, int64_t i, float v) {
    if (t == KC_BF16)
        ((uint16_t *)p)[i] = kc_f32_bf16(v);
    else
        ((float *)p)[i] = v;
}

/* Host-side versions for the references. */
static inline double kc_load_h(const void *p, kc_dtype t, int64_t i) {
    return t == KC_BF16 ? (double)asa_bf16_to_f32(((const uint16_t *)p)[i])
                        : (double)((const float *)p)[i];
}
static inline void kc_store_h(void *p, kc_dtype t, int64_t i, double v) {
    if (t == KC_BF16)
        ((uint16_t *)p)[i] = asa_f32_to_bf16((float)v);
    else
        ((float *)p)[i] = (float)v;
}

#endif /* ASA_KCUDA_INT_CUH */
