/*
 * kernels/cuda/gemm_small.cu - small-M product on tensor cores (contract
 * in gemm_small_cuda.h).
 *
 * Schedule.  A block of 8 warps owns 16 R consecutive rows of W (outputs
 * n) for all M rows of x, and its warps split K: warp w takes the 32-wide
 * chunks w, w + 8, w + 16, ... (so the block reads 512 contiguous bytes of
 * each row per round).  Lane (gq, tq) loads the 16 bytes at elements
 * 8 tq .. 8 tq + 7 of a chunk for rows gq and gq + 8 of each 16-row tile,
 * and uses them directly as the A fragments of two m16n8k16 steps: the
 * dot product does not care in which order k is taken, so logical column
 * 2 tq + j of step s is element 8 tq + 4 s + j and column 2 tq + 8 + j is
 * element 8 tq + 4 s + 2 + j.  The B fragments (x, token n = gq of each
 * 8-token tile) follow the same map, which makes them 8 consecutive
 * elements of x's row as well: one 16-byte load per part (two for f32).
 * Weights stream in trips of U chunks per warp, two trips in flight (the
 * first two go out before the PDL wait, the rest is prefetched into L2).
 * The 8 warps' partial tiles are added in warp order through shared
 * memory.  No shared memory for W, no ldmatrix.
 */
#include "gemm_small_cuda.h"

#include <math.h>
#include <stdlib.h>

#include "kcuda_int.cuh"
#include "mma_sm80.cuh"

namespace {

constexpr int GS_THREADS = 256;
constexpr int GS_WARPS = GS_THREADS / 32;
constexpr int GS_KC = 32; /* k per chunk: two m16n8k16 steps */

__device__ __forceinline__ uint32_t gs_u(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/* NT: 8-token tiles (M <= 8 NT); LO: the residue product too; XF32: x is
 * f32 (cut into parts here), else bf16 parts; R: 16-row tiles per block. */
template <int NT, bool LO, bool XF32, int R>
__global__ void __launch_bounds__(GS_THREADS, R == 2 && NT == 2 ? 1 : 2)
    gemm_small_kernel(const gemm_small_params p) {
    /* chunks per trip and warp: 8 R U weight loads a lane in flight per
     * trip, two trips; x of a trip (U NT 8 registers) */
    constexpr int U = R == 1 && NT == 1 ? 4 : 2;
    constexpr int TRIP = U * GS_WARPS;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    const int n0 = blockIdx.x * 16 * R;
    const int nch = p.K / GS_KC;

    const uint4 *wr[R][2];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int n = min(n0 + 16 * r + 8 * h + gq, p.N - 1); /* past N: repeat, drop */
            wr[r][h] = (const uint4 *)(p.w + (int64_t)n * p.ldw) + tq;
        }
    /* chunk c of row (r, h) for this lane: wr[r][h] + 4 c */
    auto load = [&](uint4(&wv)[U][R][2], int c0) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = c0 + u * GS_WARPS;
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    wv[u][r][h] =
                        c < nch ? kc_ld_stream16(wr[r][h] + 4 * c) : make_uint4(0, 0, 0, 0);
        }
    };
    uint4 wa[U][R][2], wb[U][R][2];
    load(wa, warp);
    load(wb, warp + TRIP);
    for (int c = warp + 2 * TRIP; c < nch; c += GS_WARPS)
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                kc_prefetch_l2(wr[r][h] + 4 * c);
    kc_pdl_wait();
    kc_pdl_trigger();

    float acc[R][NT][4];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++)
            acc[r][t][0] = acc[r][t][1] = acc[r][t][2] = acc[r][t][3] = 0.0f;

    /* x fragments of the chunks of a trip, all loads issued before the
     * first MMA (one L2 round trip a trip, not one a chunk): xv[u][t][0..3]
     * hi, [4..7] lo (zeros past M and past K) */
    auto load_x = [&](uint32_t(&xv)[U][NT][8], int c0) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const int c = c0 + u * GS_WARPS, tok = 8 * t + gq;
                const int64_t k0 = (int64_t)c * GS_KC + 8 * tq;
#pragma unroll
                for (int j = 0; j < 8; j++)
                    xv[u][t][j] = 0;
                if (c >= nch || tok >= p.M)
                    continue;
                if constexpr (XF32) {
                    const float *xr = p.x + (int64_t)tok * p.ldx + k0;
                    const float4 v0 = *(const float4 *)xr, v1 = *(const float4 *)(xr + 4);
                    /* raw f32 bits for now; cut into parts at use */
                    xv[u][t][0] = __float_as_uint(v0.x);
                    xv[u][t][1] = __float_as_uint(v0.y);
                    xv[u][t][2] = __float_as_uint(v0.z);
                    xv[u][t][3] = __float_as_uint(v0.w);
                    xv[u][t][4] = __float_as_uint(v1.x);
                    xv[u][t][5] = __float_as_uint(v1.y);
                    xv[u][t][6] = __float_as_uint(v1.z);
                    xv[u][t][7] = __float_as_uint(v1.w);
                } else {
                    const uint4 h = *(const uint4 *)(p.xhi + (int64_t)tok * p.ldx + k0);
                    xv[u][t][0] = h.x;
                    xv[u][t][1] = h.y;
                    xv[u][t][2] = h.z;
                    xv[u][t][3] = h.w;
                    if (LO) {
                        const uint4 l = *(const uint4 *)(p.xlo + (int64_t)tok * p.ldx + k0);
                        xv[u][t][4] = l.x;
                        xv[u][t][5] = l.y;
                        xv[u][t][6] = l.z;
                        xv[u][t][7] = l.w;
                    }
                }
            }
    };
    auto compute = [&](const uint4(&wv)[U][R][2], const uint32_t(&xv)[U][NT][8], int c0) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (c0 + u * GS_WARPS >= nch)
                break;
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (8 * t >= p.M)
                    break;
                uint32_t bh[4], bl[4];
                if constexpr (XF32) {
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        const float v0 = __uint_as_float(xv[u][t][2 * j]);
                        const float v1 = __uint_as_float(xv[u][t][2 * j + 1]);
                        bh[j] = mma_pack_bf16(v0, v1);
                        bl[j] = LO ? mma_pack_residue(v0, v1, bh[j]) : 0u;
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        bh[j] = xv[u][t][j];
                        bl[j] = xv[u][t][4 + j];
                    }
                }
#pragma unroll
                for (int s = 0; s < 2; s++)
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        const uint32_t a[4] = {gs_u(wv[u][r][0], 2 * s), gs_u(wv[u][r][1], 2 * s),
                                               gs_u(wv[u][r][0], 2 * s + 1),
                                               gs_u(wv[u][r][1], 2 * s + 1)};
                        mma_16816(acc[r][t], a, bh[2 * s], bh[2 * s + 1]);
                        if (LO)
                            mma_16816(acc[r][t], a, bl[2 * s], bl[2 * s + 1]);
                    }
            }
        }
    };
    uint32_t xv[U][NT][8];
    for (int c0 = warp; c0 < nch; c0 += 2 * TRIP) {
        load_x(xv, c0);
        compute(wa, xv, c0);
        if (c0 + 2 * TRIP < nch)
            load(wa, c0 + 2 * TRIP);
        if (c0 + TRIP < nch) {
            load_x(xv, c0 + TRIP);
            compute(wb, xv, c0 + TRIP);
            if (c0 + 3 * TRIP < nch)
                load(wb, c0 + 3 * TRIP);
        }
    }

    /* the warps' partial tiles, added in warp order, 16 values a lane per
     * pass; value v = (r, t, e) of lane l is output row n0 + 16 r +
     * l / 4 + 8 (e / 2), token 8 t + 2 (l % 4) + e % 2 */
    __shared__ float red[GS_WARPS][16][32];
    constexpr int NV = R * NT * 4;
    const int used = min(NT, (p.M + 7) / 8) * 4; /* values per r with tokens */
#pragma unroll
    for (int v0 = 0; v0 < NV; v0 += 16) {
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const int v = v0 + j;
            if (v < NV)
                red[warp][j][lane] = acc[v / (NT * 4)][(v / 4) % NT][v % 4];
        }
        __syncthreads();
        for (int i = threadIdx.x; i < 16 * 32; i += GS_THREADS) {
            const int j = i >> 5, l = i & 31, v = v0 + j;
            if (v >= NV || v % (NT * 4) >= used)
                continue;
            float s = 0.0f;
#pragma unroll
            for (int w = 0; w < GS_WARPS; w++)
                s += red[w][j][l];
            const int r = v / (NT * 4), t = (v / 4) % NT, e = v % 4;
            const int n = n0 + 16 * r + (l >> 2) + 8 * (e >> 1), m = 8 * t + 2 * (l & 3) + (e & 1);
            if (m < p.M && n < p.N)
                p.y[(int64_t)m * p.ldy + n] = s;
        }
        __syncthreads();
    }
}

template <int NT, bool LO, bool XF32>
cudaError_t launch_r(const gemm_small_params &p, cudaStream_t s) {
    /* two row tiles a block (half the x traffic) once that still leaves
     * more than two blocks per SM of a 132-SM card */
    if (p.tile_rows == 32 || (p.tile_rows == 0 && p.N >= 8192)) {
        const unsigned g = (unsigned)((p.N + 31) / 32);
        return kc_launch(gemm_small_kernel<NT, LO, XF32, 2>, g, GS_THREADS, 0, s, p);
    }
    const unsigned g = (unsigned)((p.N + 15) / 16);
    return kc_launch(gemm_small_kernel<NT, LO, XF32, 1>, g, GS_THREADS, 0, s, p);
}

template <bool LO, bool XF32>
cudaError_t launch_nt(const gemm_small_params &p, cudaStream_t s) {
    if (p.M <= 8)
        return launch_r<1, LO, XF32>(p, s);
    return launch_r<2, LO, XF32>(p, s);
}

} // namespace

extern "C" asa_err gemm_small_check(const gemm_small_params *p) {
    if (!p || p->M < 1 || p->M > GEMM_SMALL_MAX_M || p->N < 1 || p->K < GS_KC || p->K % GS_KC)
        return ASA_EINVAL;
    if (!p->w || !p->y || (!p->x) == (!p->xhi) || (p->x && p->xlo))
        return ASA_EINVAL;
    if (p->ldx < p->K || p->ldx % 8 || p->ldw < p->K || p->ldw % 8 || p->ldy < p->N)
        return ASA_EINVAL;
    if (!kc_aligned(p->w, 16) || !kc_aligned(p->y, 4) || (p->x && !kc_aligned(p->x, 16)) ||
        (p->xhi && !kc_aligned(p->xhi, 16)) || (p->xlo && !kc_aligned(p->xlo, 16)))
        return ASA_EINVAL;
    if ((int64_t)p->N * p->ldw > ((int64_t)1 << 40))
        return ASA_EINVAL;
    if (p->tile_rows != 0 && p->tile_rows != 16 && p->tile_rows != 32)
        return ASA_EINVAL;
    return ASA_OK;
}

extern "C" asa_err gemm_small_cuda(const gemm_small_params *p, cudaStream_t stream) {
    asa_err e = gemm_small_check(p);
    if (e)
        return e;
    if (p->x)
        KC_CUDA_TRY(p->lo ? (launch_nt<true, true>(*p, stream))
                          : (launch_nt<false, true>(*p, stream)));
    else
        KC_CUDA_TRY(p->xlo ? (launch_nt<true, false>(*p, stream))
                           : (launch_nt<false, false>(*p, stream)));
    return ASA_OK;
}

/* The parts of x's element (m, k) as the kernel forms them. */
static void ref_parts(const gemm_small_params *p, int m, int k, double *hi, double *lo) {
    const int64_t i = (int64_t)m * p->ldx + k;
    if (p->x) {
        const float v = p->x[i];
        const float h = asa_bf16_to_f32(asa_f32_to_bf16(v));
        *hi = h;
        *lo = p->lo ? (double)asa_bf16_to_f32(asa_f32_to_bf16(v - h)) : 0.0;
    } else {
        *hi = asa_bf16_to_f32(p->xhi[i]);
        *lo = p->xlo ? (double)asa_bf16_to_f32(p->xlo[i]) : 0.0;
    }
}

extern "C" void gemm_small_ref(const gemm_small_params *p) {
    for (int m = 0; m < p->M; m++)
        for (int n = 0; n < p->N; n++) {
            double s = 0;
            for (int k = 0; k < p->K; k++) {
                double hi, lo;
                ref_parts(p, m, k, &hi, &lo);
                const double w = asa_bf16_to_f32(p->w[(int64_t)n * p->ldw + k]);
                s += hi * w;
                if ((p->x && p->lo) || p->xlo) /* 0 * inf: NaN, as in the kernel */
                    s += lo * w;
            }
            p->y[(int64_t)m * p->ldy + n] = (float)s;
        }
}
