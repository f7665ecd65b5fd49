/*
 * kernels/cuda/kcuda_int.cuh - internals shared by the .cu files (C++ only):
 * error macros, bf16 conversions and typed loads/stores.
 */
#ifndef ASA_KCUDA_INT_CUH
#define ASA_KCUDA_INT_CUH

#include <stdint.h>

#include <utility>

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

/* PDL, device side (kcuda.h): wait for the previous grid of the stream to
 * complete with its writes visible; a no-op for a kernel launched without
 * the attribute, before sm_90 and in the CPU emulation. */
__device__ __forceinline__ void kc_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
/* Lets the next kernel of the stream launch once every block of this grid
 * has passed here (or exited).  It does not publish any memory: the next
 * kernel's wait still waits for this grid's completion. */
__device__ __forceinline__ void kc_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* The entry of every kernel launched by kc_launch that has nothing to do
 * before the wait: called before any early return, so that every block
 * waits (a grid that completed without waiting would let the kernel after
 * it pass its own wait while this grid's predecessor still runs). */
__device__ __forceinline__ void kc_pdl_enter() {
    kc_pdl_wait();
    kc_pdl_trigger();
}

/* *p += v with release and acquire at GPU scope: after a block barrier,
 * one thread's call publishes every write the block made before the
 * barrier (release is cumulative), and the block that reads the last count
 * sees every write published by the others once it has passed a barrier
 * after this call; no separate __threadfence on either side.  The CPU
 * emulation runs blocks one after another: a plain atomicAdd. */
__device__ __forceinline__ int kc_atom_add_acq_rel(int *p, int v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    int old;
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;"
                 : "=r"(old)
                 : "l"(p), "r"(v)
                 : "memory");
    return old;
#else
    return atomicAdd(p, v);
#endif
}

/* Launches kernel k with the n launch attributes at (none when n is 0);
 * the launch error is returned (no cudaGetLastError needed). */
template <typename... KA, typename... A>
inline cudaError_t kc_launch_ex(cudaLaunchAttribute *at, unsigned n, void (*k)(KA...), dim3 grid,
                                dim3 block, size_t smem, cudaStream_t s, A &&...args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = n;
    return cudaLaunchKernelEx(&cfg, k, std::forward<A>(args)...);
}

/* Fills *at with the programmatic stream serialization attribute. */
inline void kc_attr_pdl(cudaLaunchAttribute *at) {
    at->id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at->val.programmaticStreamSerializationAllowed = 1;
}

/* Launches kernel k with programmatic stream serialization when pdl;
 * otherwise the same as k<<<grid, block, smem, s>>>(args). */
template <typename... KA, typename... A>
inline cudaError_t kc_launch_pdl(bool pdl, void (*k)(KA...), dim3 grid, dim3 block, size_t smem,
                                 cudaStream_t s, A &&...args) {
    cudaLaunchAttribute at[1];
    kc_attr_pdl(&at[0]);
    return kc_launch_ex(at, pdl ? 1u : 0u, k, grid, block, smem, s, std::forward<A>(args)...);
}
#ifdef __CUDACC__
/* kc_launch_pdl for a grid of thread block clusters of cluster blocks (the
 * grid a whole number of them; sizes above 8 need the kernel's
 * cudaFuncAttributeNonPortableClusterSizeAllowed, set by the caller).  Not
 * in the CPU emulation (no clusters). */
template <typename... KA, typename... A>
inline cudaError_t kc_launch_cluster(bool pdl, dim3 cluster, void (*k)(KA...), dim3 grid,
                                     dim3 block, size_t smem, cudaStream_t s, A &&...args) {
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = cluster.x;
    at[0].val.clusterDim.y = cluster.y;
    at[0].val.clusterDim.z = cluster.z;
    kc_attr_pdl(&at[1]);
    return kc_launch_ex(at, pdl ? 2u : 1u, k, grid, block, smem, s, std::forward<A>(args)...);
}
#endif
/* kc_launch_pdl with the process setting (kcuda.h). */
template <typename... KA, typename... A>
inline cudaError_t kc_launch(void (*k)(KA...), dim3 grid, dim3 block, size_t smem,
                             cudaStream_t s, A &&...args) {
    return kc_launch_pdl(kc_pdl_on != 0, k, grid, block, smem, s, std::forward<A>(args)...);
}

/* Raises kernel k's dynamic shared-memory limit to bytes when a launch
 * needs more than *raised (the caller's static for that kernel, starting at
 * 0): one attribute call per new maximum, not per launch.  Without the
 * attribute a kernel's static and dynamic shared memory together must fit
 * in 48 KiB, so a dynamic size under 48 KiB can already need it (gemv's
 * norm mode: 48 KiB of rows + 1 KiB static failed to launch); starting at
 * 0 costs one call at the first launch.  Its static shared memory also
 * counts against the device's limit. */
template <typename... KA>
inline cudaError_t kc_smem_optin(void (*k)(KA...), size_t bytes, size_t *raised) {
    if (bytes <= *raised)
        return cudaSuccess;
    const cudaError_t e =
        cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e == cudaSuccess)
        *raised = bytes;
    return e;
}

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

/* Four f32 values as bf16 parts at hi + e (and lo + e when lo is not
 * NULL): hi = bf16(x), lo = bf16(x - hi), 8-byte stores (the cut of
 * cb_split_bf16_cuda, shared by the kernels that write a product's input
 * parts themselves). */
__device__ __forceinline__ void kc_split_store4(float4 x, uint16_t *hi, uint16_t *lo, int64_t e) {
    const float f[4] = {x.x, x.y, x.z, x.w};
    uint16_t h[4], l[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        h[j] = kc_f32_bf16(f[j]);
        l[j] = kc_f32_bf16(f[j] - kc_bf16_f32(h[j]));
    }
    *(uint2 *)(hi + e) = make_uint2((uint32_t)h[0] | (uint32_t)h[1] << 16,
                                    (uint32_t)h[2] | (uint32_t)h[3] << 16);
    if (lo)
        *(uint2 *)(lo + e) = make_uint2((uint32_t)l[0] | (uint32_t)l[1] << 16,
                                        (uint32_t)l[2] | (uint32_t)l[3] << 16);
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

/* The xor butterfly of kc_block_sum: every lane gets its warp's sum. */
__device__ __forceinline__ float kc_warp_sum(float ss) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o);
    return ss;
}

/* Sum of every thread's ss over a block of NW warps in one fixed order
 * (the xor butterfly in each warp, then the warps in order), to every
 * thread.  part: NW floats of shared memory, free for reuse after the
 * caller's next barrier.  RMSNorm (cb_ops.cu) and the GEMV's norm prologue
 * (gemv.cu, which takes kc_warp_sum and the same warp order for several
 * rows at once) both take it: their rows must be bitwise the same. */
template <int NW> __device__ __forceinline__ float kc_block_sum(float ss, float *part) {
    ss = kc_warp_sum(ss);
    if ((threadIdx.x & 31) == 0)
        part[threadIdx.x >> 5] = ss;
    __syncthreads();
    float tot = 0.0f;
#pragma unroll
    for (int k = 0; k < NW; k++)
        tot += part[k];
    return tot;
}

/* Streaming 16-byte load: read-only path, not kept in L1 (weights, read
 * once a step). */
__device__ __forceinline__ uint4 kc_ld_stream16(const uint4 *p) {
#if defined(__CUDA_ARCH__)
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
#else
    return *p; /* host compilation pass (and CPU emulation of the kernel) */
#endif
}

/* An L2 prefetch of the line holding p (no register, no wait). */
__device__ __forceinline__ void kc_prefetch_l2(const void *p) {
#if defined(__CUDA_ARCH__)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
    (void)p;
#endif
}

/* L2 prefetches of the n bytes at p, one 128-byte line a thread a round
 * (before a PDL wait: only for what no earlier launch writes, weights). */
__device__ __forceinline__ void kc_prefetch_l2_range(const void *p, int64_t n) {
    for (int64_t o = 128 * (int64_t)threadIdx.x; o < n; o += 128 * (int64_t)blockDim.x)
        kc_prefetch_l2((const char *)p + o);
}

/* For i = threadIdx.x, + nth, ... < n: store(i, load(i)), with U of a
 * thread's loads in flight before their stores (a plain loop of load and
 * store waits one L2 round trip per element: the query staging at the
 * start of the attention kernels).  V: the value type (float, float4). */
template <int U, typename V = float, typename L, typename S>
__device__ __forceinline__ void kc_staged_copy(int n, int nth, L load, S store) {
    for (int i0 = (int)threadIdx.x; i0 < n; i0 += U * nth) {
        V v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = i0 + u * nth;
            v[u] = i < n ? load(i) : V{};
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = i0 + u * nth;
            if (i < n)
                store(i, v[u]);
        }
    }
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
