/* tests/cuda/emu/cuda_runtime.h - CPU shim of the CUDA built-ins the kernels
 * use (tools/gpu/emu plus grid z and the built-ins of attn_latent, cb_ops,
 * rope_cache and sample; see tests/cuda/emu_kernels.sh).  Not the CUDA runtime. */
#ifndef EMU_CUDA_RUNTIME_H
#define EMU_CUDA_RUNTIME_H
#include "cuda_runtime_api.h"
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <algorithm>
#include <climits>
#include <cfloat>
using std::isnan; using std::min; using std::max;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define ASA_CUDA_EMU 1 /* kernels/cuda/mma_sm80.cuh: the emulated tensor-core ops */
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct uint4 { unsigned x, y, z, w; };
struct uint2 { unsigned x, y; };
inline uint2 make_uint2(unsigned a, unsigned b) { return uint2{a, b}; }
struct float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
struct float2 { float x, y; };
inline float2 make_float2(float a, float b) { return float2{a, b}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
extern thread_local dim3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
inline long long __double_as_longlong(double d) { long long u; memcpy(&u, &d, 8); return u; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
template <class T> T __ldg(const T *p) { return *p; }
template <class T> T __ldcg(const T *p) { return *p; }
template <class T> T __ldcs(const T *p) { return *p; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
void __syncthreads();
void __syncwarp(unsigned = 0xffffffffu); /* a barrier of the 32 lanes */
inline float __expf(float x) { return expf(x); }
void emu_warp_exchange(uint64_t *v, int o);
/* every lane of the calling warp: all[l] = lane l's v (the emulated MMA and
 * ldmatrix of kernels/cuda/mma_sm80.cuh) */
void emu_warp_all(uint64_t v, uint64_t *all);
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    uint64_t u = 0; memcpy(&u, &v, sizeof v); emu_warp_exchange(&u, o); memcpy(&v, &u, sizeof v); return v;
}
/* warp votes (all 32 lanes take part) */
inline int __any_sync(unsigned, int pr) {
    uint64_t all[32]; emu_warp_all(pr != 0, all);
    for (int l = 0; l < 32; l++) if (all[l]) return 1;
    return 0;
}
inline int __all_sync(unsigned, int pr) {
    uint64_t all[32]; emu_warp_all(pr != 0, all);
    for (int l = 0; l < 32; l++) if (!all[l]) return 0;
    return 1;
}
inline unsigned __ballot_sync(unsigned, int pr) {
    uint64_t all[32]; emu_warp_all(pr != 0, all);
    unsigned b = 0;
    for (int l = 0; l < 32; l++) if (all[l]) b |= 1u << l;
    return b;
}
void emu_warp_read(uint64_t *v, int src);
template <class T> T __shfl_sync(unsigned, T v, int src) {
    uint64_t u = 0; memcpy(&u, &v, sizeof v); emu_warp_read(&u, src); memcpy(&v, &u, sizeof v); return v;
}
template <class T> T __shfl_up_sync(unsigned, T v, int o) {
    const int lane = threadIdx.x & 31;
    uint64_t u = 0; memcpy(&u, &v, sizeof v); emu_warp_read(&u, lane >= o ? lane - o : lane);
    memcpy(&v, &u, sizeof v); return v;
}
/* sample.cu: rounding-explicit arithmetic (x86-64 without FMA rounds each
 * operation), atomics on real threads */
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline int __float2int_rz(float x) { return (int)x; }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicOr(unsigned *p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
void emu_launch(std::function<void()> f, dim3 grid, dim3 block);
inline void emu_launch(std::function<void()> f, dim3 grid, dim3 block, size_t, cudaStream_t) { emu_launch(f, grid, block); }
inline void emu_launch(std::function<void()> f, dim3 grid, dim3 block, size_t) { emu_launch(f, grid, block); }
/* cudaLaunchKernelEx (kc_launch): runs the kernel like a <<<>>> launch; the
 * PDL attribute means nothing here (blocks run one after another) */
enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization = 5 };
struct cudaLaunchAttributeValue { unsigned programmaticStreamSerializationAllowed; };
struct cudaLaunchAttribute { cudaLaunchAttributeID id; cudaLaunchAttributeValue val; };
struct cudaLaunchConfig_t {
    dim3 gridDim, blockDim; size_t dynamicSmemBytes; cudaStream_t stream;
    cudaLaunchAttribute *attrs; unsigned numAttrs;
};
template <typename... E, typename... A>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t *c, void (*k)(E...), A &&...a) {
    emu_launch([&]() { k(a...); }, c->gridDim, c->blockDim);
    return 0;
}
#endif
