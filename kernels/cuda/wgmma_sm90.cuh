/*
 * kernels/cuda/wgmma_sm90.cuh - warpgroup tensor-core helpers for sm_90a
 * (C++, nvcc only: the CPU emulation has no warpgroup MMA): shared-memory
 * matrix descriptors for the 128-byte swizzled K-major layout, the bf16
 * m64nNk16 MMA with f32 accumulation for N = 8, 16, 32, 64, and its fences.
 *
 * Layout (PTX ISA, "Shared Memory Matrix Layout", 128-byte swizzle, K-major):
 * a matrix is stored as rows of 64 bf16 (128 bytes), eight rows (1024
 * bytes, 1024-byte aligned) a group, the 16-byte chunk c of row r at chunk
 * position c ^ (r & 7).  A descriptor names the start of a 16-k slice (the
 * group's base + 32 bytes a slice); the stride between 8-row groups is 1024
 * bytes.
 *
 * Accumulators: acc[t][e] of a thread of the warpgroup (warp w of 4, lane =
 * 4 gq + tq) holds row 16 w + gq + 8 (e >> 1) of A's 64 and column 8 t + 2
 * tq + (e & 1) of B's N: the m16n8k16 C layout of mma_sm80.cuh, one 8-column
 * tile t after another.
 */
#ifndef ASA_WGMMA_SM90_CUH
#define ASA_WGMMA_SM90_CUH

#include <stdint.h>

#include <cuda_runtime.h>

#if defined(__CUDACC__) && !defined(ASA_CUDA_EMU)

/* The descriptor of a K-major 128-byte swizzled matrix starting at p (a
 * shared-memory address; the 8-row group base 1024-byte aligned). */
__device__ __forceinline__ uint64_t wg_desc(const void *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    return (uint64_t)((a & 0x3ffffu) >> 4) | ((uint64_t)1 << 16) /* leading offset: unused */
           | ((uint64_t)(1024 >> 4) << 32)                       /* 8-row group stride */
           | ((uint64_t)1 << 62);                                /* 128-byte swizzle */
}

/* Orders register accesses before the warpgroup MMAs that follow. */
__device__ __forceinline__ void wg_fence() {
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
/* Waits for every committed group of this warpgroup. */
__device__ __forceinline__ void wg_wait_all() {
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
}
/* Makes this thread's generic-proxy shared-memory writes (cp.async, plain
 * stores) visible to the async proxy that the MMAs read through. */
__device__ __forceinline__ void wg_fence_proxy() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

/* acc += A (64 x 16, descriptor da) . B (16 x 8 NT, descriptor db; B's N
 * rows of 16 k as stored), bf16 in, f32 accumulation. */
template <int NT>
__device__ __forceinline__ void wg_mma_bf16(float (&acc)[NT][4], uint64_t da, uint64_t db);
template <>
__device__ __forceinline__ void wg_mma_bf16<1>(float (&acc)[1][4], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3}, %4, %5, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3])
                 : "l"(da), "l"(db), "r"(1)
                 : "memory");
}
template <>
__device__ __forceinline__ void wg_mma_bf16<2>(float (&acc)[2][4], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]),
                   "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3])
                 : "l"(da), "l"(db), "r"(1)
                 : "memory");
}
template <>
__device__ __forceinline__ void wg_mma_bf16<4>(float (&acc)[4][4], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
                 "%16, %17, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]),
                   "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]),
                   "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]),
                   "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3])
                 : "l"(da), "l"(db), "r"(1)
                 : "memory");
}
template <>
__device__ __forceinline__ void wg_mma_bf16<8>(float (&acc)[8][4], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, "
                 "%30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]),
                   "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]),
                   "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]),
                   "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3]),
                   "+f"(acc[4][0]), "+f"(acc[4][1]), "+f"(acc[4][2]), "+f"(acc[4][3]),
                   "+f"(acc[5][0]), "+f"(acc[5][1]), "+f"(acc[5][2]), "+f"(acc[5][3]),
                   "+f"(acc[6][0]), "+f"(acc[6][1]), "+f"(acc[6][2]), "+f"(acc[6][3]),
                   "+f"(acc[7][0]), "+f"(acc[7][1]), "+f"(acc[7][2]), "+f"(acc[7][3])
                 : "l"(da), "l"(db), "r"(1)
                 : "memory");
}

#endif /* __CUDACC__ && !ASA_CUDA_EMU */
#endif /* ASA_WGMMA_SM90_CUH */
