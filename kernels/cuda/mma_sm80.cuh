/*
 * kernels/cuda/mma_sm80.cuh - warp-level tensor-core helpers (C++ only):
 * bf16 packing, ldmatrix (x4, plain and transposed) and the
 * m16n8k16 bf16 MMA with f32 accumulation, as inline PTX (sm_80+).
 *
 * Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" with
 * .bf16; lane = 4 * gq + tq, gq = lane >> 2, tq = lane & 3; a 32-bit
 * register holds two bf16, the lower column/row index in the low half):
 *   A (16x16, row-major) a[0]: (gq, 2tq..2tq+1)   a[1]: (gq+8, 2tq..)
 *                        a[2]: (gq, 2tq+8..)      a[3]: (gq+8, 2tq+8..)
 *   B (16x8, k x n)      b0: (k = 2tq..2tq+1, n = gq)  b1: (k = 2tq+8.., n = gq)
 *   C/D (16x8 f32)       d[0], d[1]: (gq, 2tq..2tq+1)  d[2], d[3]: (gq+8, 2tq..)
 * ldmatrix .x4: lanes 8i..8i+7 give the 8 row addresses (16 bytes each) of
 * matrix i; lane L receives in r[i] row L/4, columns 2(L%4)..+1 of matrix
 * i, or with .trans rows 2(L%4)..+1 of column L/4.
 *
 * Under the CPU emulator (ASA_CUDA_EMU, tests/cuda/emu) the same per-lane
 * semantics are computed from the whole warp's registers (emu_warp_all),
 * so a kernel that passes there has its fragment bookkeeping right as far
 * as the documented layouts go.
 */
#ifndef ASA_MMA_SM80_CUH
#define ASA_MMA_SM80_CUH

#include <stdint.h>

#include <cuda_runtime.h>

/* f32 -> bf16 bits, round to nearest even (finite inputs). */
__device__ __forceinline__ uint32_t mma_bf16_bits(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
        return (u >> 16) | 0x40;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

/* Two floats -> bf16x2, lo in the low half. */
__device__ __forceinline__ uint32_t mma_pack_bf16(float lo, float hi) {
#ifdef ASA_CUDA_EMU
    return mma_bf16_bits(lo) | (mma_bf16_bits(hi) << 16);
#else
    uint32_t r;
    /* cvt.rn.bf16x2.f32 d, a, b: a goes to the upper half */
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#endif
}

/* The halves of a bf16x2 as floats (exact). */
__device__ __forceinline__ float mma_lo_f32(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float mma_hi_f32(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }

/* The residues of (lo, hi)'s rounding to hi2 = mma_pack_bf16(lo, hi), as
 * bf16x2 in the same halves: the lo part of a hi + lo pair. */
__device__ __forceinline__ uint32_t mma_pack_residue(float lo, float hi, uint32_t hi2) {
    return mma_pack_bf16(lo - mma_lo_f32(hi2), hi - mma_hi_f32(hi2));
}

/* Four floats as bf16 at hi[0..3] and, with LO, the residues of that
 * rounding as bf16 at lo[0..3] (x ~ hi + lo; both 8-byte aligned): a row of
 * query parts staged for ldmatrix. */
template <bool LO>
__device__ __forceinline__ void mma_store_hilo4(uint16_t *hi, uint16_t *lo, float4 x) {
    const uint32_t h0 = mma_pack_bf16(x.x, x.y), h1 = mma_pack_bf16(x.z, x.w);
    *(uint2 *)hi = make_uint2(h0, h1);
    if (LO)
        *(uint2 *)lo = make_uint2(mma_pack_residue(x.x, x.y, h0), mma_pack_residue(x.z, x.w, h1));
}

#ifdef ASA_CUDA_EMU
/* bf16 bits -> f32. */
inline float mma_emu_f(uint32_t h) { return __uint_as_float((h & 0xffffu) << 16); }
#endif

/* 2^x (ex2.approx.ftz: ~2 ulp, results below 2^-126 flushed to zero, -inf
 * -> 0): the softmax exponentials on the base-2 scale. */
__device__ __forceinline__ float mma_ex2(float x) {
#ifdef ASA_CUDA_EMU
    const float r = exp2f(x);
    return fabsf(r) < 0x1p-126f ? 0.0f : r;
#else
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
#endif
}

/* d += A * B (m16n8k16, bf16 inputs, f32 accumulators). */
__device__ __forceinline__ void mma_16816(float d[4], const uint32_t a[4], uint32_t b0,
                                          uint32_t b1) {
#ifdef ASA_CUDA_EMU
    uint64_t A[4][32], Bv[2][32];
    for (int i = 0; i < 4; i++)
        emu_warp_all(a[i], A[i]);
    emu_warp_all(b0, Bv[0]);
    emu_warp_all(b1, Bv[1]);
    float am[16][16], bm[16][8];
    for (int L = 0; L < 32; L++) {
        const int g = L >> 2, t = L & 3;
        for (int i = 0; i < 4; i++) {
            const int row = g + 8 * (i & 1), col = 2 * t + 8 * (i >> 1);
            am[row][col] = mma_emu_f((uint32_t)A[i][L]);
            am[row][col + 1] = mma_emu_f((uint32_t)A[i][L] >> 16);
        }
        for (int i = 0; i < 2; i++) {
            const int k = 2 * t + 8 * i;
            bm[k][g] = mma_emu_f((uint32_t)Bv[i][L]);
            bm[k + 1][g] = mma_emu_f((uint32_t)Bv[i][L] >> 16);
        }
    }
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 4; e++) {
        const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        float s = d[e];
        for (int k = 0; k < 16; k++)
            s = fmaf(am[row][k], bm[k][col], s);
        d[e] = s;
    }
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* ldmatrix .x4 from shared memory; p = this lane's row address (16-byte
 * aligned).  TRANS: the transposed fragments. */
template <bool TRANS>
__device__ __forceinline__ void mma_ldsm_x4(uint32_t r[4], const uint16_t *p) {
#ifdef ASA_CUDA_EMU
    uint64_t P[32];
    emu_warp_all((uint64_t)(uintptr_t)p, P);
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        if (TRANS) {
            const uint16_t *r0 = (const uint16_t *)(uintptr_t)P[8 * i + 2 * t];
            const uint16_t *r1 = (const uint16_t *)(uintptr_t)P[8 * i + 2 * t + 1];
            r[i] = (uint32_t)r0[g] | ((uint32_t)r1[g] << 16);
        } else {
            const uint16_t *row = (const uint16_t *)(uintptr_t)P[8 * i + g];
            r[i] = (uint32_t)row[2 * t] | ((uint32_t)row[2 * t + 1] << 16);
        }
    }
#else
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a)
                     : "memory");
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a)
                     : "memory");
#endif
}

/* 16-byte asynchronous copy global -> shared (cp.async.cg, L2 only);
 * !valid: the 16 bytes are zero-filled and nothing is read. */
__device__ __forceinline__ void mma_cp16(void *dst, const void *src, bool valid) {
#ifdef ASA_CUDA_EMU
    if (valid)
        memcpy(dst, src, 16);
    else
        memset(dst, 0, 16);
#else
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
#endif
}

/* Closes the group of copies issued since the last commit. */
__device__ __forceinline__ void mma_cp_commit() {
#ifndef ASA_CUDA_EMU
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

/* Waits until at most N of this thread's groups are pending. */
template <int N>
__device__ __forceinline__ void mma_cp_wait() {
#ifndef ASA_CUDA_EMU
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

#endif /* ASA_MMA_SM80_CUH */
