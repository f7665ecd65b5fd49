/*
 * kernels/cuda/mma_bf16.cuh - one warp-wide bf16 tensor-core product,
 * D (16x8 f32) += A (16x16 bf16, row-major) . B (16x8 bf16, column-major),
 * with the register fragments of PTX's mma.m16n8k16 (sm_80 and later).
 *
 * Fragments, lane = 4 * gid + tig (gid = lane / 4, tig = lane % 4), two
 * bf16 per 32-bit register, the lower half first:
 *   a[0] = A[gid][2tig, 2tig+1]       a[1] = A[gid+8][2tig, 2tig+1]
 *   a[2] = A[gid][2tig+8, 2tig+9]     a[3] = A[gid+8][2tig+8, 2tig+9]
 *   b[0] = B[2tig, 2tig+1][gid]       b[1] = B[2tig+8, 2tig+9][gid]
 *   d[0], d[1] = D[gid][2tig, 2tig+1] d[2], d[3] = D[gid+8][2tig, 2tig+1]
 *
 * Under the CPU emulation of tests/cuda/emu (EMU_CUDA_RUNTIME_H defined)
 * the product is computed from the whole warp's fragments gathered through
 * a table, in float, with the same fragment layout: a kernel with the
 * layout wrong fails its tests there too.
 */
#ifndef ASA_MMA_BF16_CUH
#define ASA_MMA_BF16_CUH

#include <stdint.h>

/* Two bf16 bit patterns in one register, lo first. */
__device__ __forceinline__ uint32_t mma_pack2(uint16_t lo, uint16_t hi) {
    return (uint32_t)lo | ((uint32_t)hi << 16);
}

#ifndef EMU_CUDA_RUNTIME_H
__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4],
                                               const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else
inline float mma_emu_bf16(uint32_t r, int hi) {
    return __uint_as_float((hi ? r >> 16 : r & 0xffffu) << 16);
}
inline void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    /* the warp's fragments through a table; emu_warp_exchange is only the
     * warp barrier here (before the reads, and before the next writes) */
    static uint32_t tab[64][32][6];
    const int lane = (int)(threadIdx.x & 31), w = (int)(threadIdx.x >> 5);
    for (int i = 0; i < 4; i++)
        tab[w][lane][i] = a[i];
    tab[w][lane][4] = b[0];
    tab[w][lane][5] = b[1];
    uint64_t dummy = 0;
    emu_warp_exchange(&dummy, 0);
    float A[16][16], Bm[16][8];
    for (int l = 0; l < 32; l++) {
        const uint32_t *f = tab[w][l];
        const int gid = l >> 2, tig = l & 3;
        for (int h = 0; h < 2; h++) {
            A[gid][2 * tig + h] = mma_emu_bf16(f[0], h);
            A[gid + 8][2 * tig + h] = mma_emu_bf16(f[1], h);
            A[gid][2 * tig + 8 + h] = mma_emu_bf16(f[2], h);
            A[gid + 8][2 * tig + 8 + h] = mma_emu_bf16(f[3], h);
            Bm[2 * tig + h][gid] = mma_emu_bf16(f[4], h);
            Bm[2 * tig + 8 + h][gid] = mma_emu_bf16(f[5], h);
        }
    }
    emu_warp_exchange(&dummy, 0);
    const int gid = lane >> 2, tig = lane & 3;
    for (int i = 0; i < 4; i++) {
        const int r = gid + (i >= 2 ? 8 : 0), c = 2 * tig + (i & 1);
        float s = 0.0f;
        for (int k = 0; k < 16; k++)
            s += A[r][k] * Bm[k][c];
        d[i] += s;
    }
}
#endif

#endif /* ASA_MMA_BF16_CUH */
