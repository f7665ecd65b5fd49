/*
 * kernels/cuda/gemv.cu - small-M bf16-weight product (contract in
 * gemv_cuda.h).
 *
 * Schedule.  One block of 256 threads owns GEMV_ROWS consecutive rows of W
 * (outputs n) for all M rows of x, and splits K across its threads: thread t
 * handles 16-byte chunks (8 bf16) c = t, t + 256, ... of each of its W rows,
 * so a warp reads 512 contiguous bytes of a row per load instruction.  The
 * loop issues UNROLL x GEMV_ROWS independent 16-byte loads of W (non-
 * coherent, no L1 allocation: W is read exactly once) before the first use;
 * x (small, shared by every block) comes through L1.  Each thread keeps
 * M x GEMV_ROWS f32 partial sums; the block reduces them with warp shuffles
 * and one shared-memory pass over the 8 warps, in a fixed order.
 * Grid: ceil(N / GEMV_ROWS) blocks, so the number of bytes in flight grows
 * with the matrix and even a 2048-row matrix fills the chip in one wave.
 */
#include "gemv_cuda.h"

#include <math.h>

#include "kcuda_int.cuh"

namespace {

constexpr int GEMV_THREADS = 256;
constexpr int GEMV_WARPS = GEMV_THREADS / 32;
constexpr int GEMV_ROWS = 2;

/* Streaming 16-byte load: read-only path, not kept in L1. */
__device__ __forceinline__ uint4 ld_stream16(const uint4 *p) {
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

/* Eight consecutive x values of row m starting at element 8c. */
__device__ __forceinline__ void load_x8(const float *x, int64_t off, float (&v)[8]) {
    const float4 a = __ldg((const float4 *)(x + off));
    const float4 b = __ldg((const float4 *)(x + off) + 1);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void load_x8(const uint16_t *x, int64_t off, float (&v)[8]) {
    const uint4 a = __ldg((const uint4 *)(x + off));
    const uint32_t u[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        v[2 * j] = __uint_as_float(u[j] << 16);
        v[2 * j + 1] = __uint_as_float(u[j] & 0xffff0000u);
    }
}

/* acc += dot(8 bf16 of w, 8 f32 of x), in element order. */
__device__ __forceinline__ float dot8(uint4 w, const float (&x)[8], float acc) {
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        acc = fmaf(__uint_as_float(u[j] << 16), x[2 * j], acc);
        acc = fmaf(__uint_as_float(u[j] & 0xffff0000u), x[2 * j + 1], acc);
    }
    return acc;
}

/* MT: compile-time bound on M (rows m >= p.M are skipped); XT: x's type. */
template <int MT, typename XT>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_kernel(const gemv_params p) {
    constexpr int UNROLL = MT <= 2 ? 4 : 2;
    const int n0 = blockIdx.x * GEMV_ROWS;
    const int nchunk = p.K >> 3;
    const XT *x = (const XT *)p.x;

    const uint4 *wrow[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int n = min(n0 + r, p.N - 1); /* tail block: repeat a row, drop it */
        wrow[r] = (const uint4 *)(p.w + (int64_t)n * p.ldw);
    }

    float acc[MT][GEMV_ROWS];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++)
            acc[m][r] = 0.0f;

    for (int c0 = threadIdx.x; c0 < nchunk; c0 += GEMV_THREADS * UNROLL) {
        uint4 wv[UNROLL][GEMV_ROWS];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int c = c0 + u * GEMV_THREADS;
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++)
                wv[u][r] = c < nchunk ? ld_stream16(wrow[r] + c) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int c = c0 + u * GEMV_THREADS;
            if (c >= nchunk)
                break;
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (m >= p.M)
                    break;
                float xv[8];
                load_x8(x, (int64_t)m * p.ldx + 8 * (int64_t)c, xv);
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; r++)
                    acc[m][r] = dot8(wv[u][r], xv, acc[m][r]);
            }
        }
    }

    /* Block reduction: shuffle tree inside each warp, then warps in order. */
    __shared__ float red[GEMV_WARPS][MT * GEMV_ROWS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int m = 0; m < MT; m++) {
        if (m >= p.M)
            break;
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            float v = acc[m][r];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0)
                red[warp][m * GEMV_ROWS + r] = v;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < p.M * GEMV_ROWS; i += GEMV_THREADS) {
        const int m = i / GEMV_ROWS, n = n0 + i % GEMV_ROWS;
        if (n >= p.N)
            continue;
        float s = red[0][i];
#pragma unroll
        for (int w = 1; w < GEMV_WARPS; w++)
            s += red[w][i];
        const int64_t o = (int64_t)m * p.ldy + n;
        if (p.y_f32)
            p.y_f32[o] = s;
        if (p.y_bf16)
            p.y_bf16[o] = kc_f32_bf16(s);
    }
}

template <typename XT>
void launch(const gemv_params &p, cudaStream_t s) {
    const dim3 grid((unsigned)((p.N + GEMV_ROWS - 1) / GEMV_ROWS));
    if (p.M <= 1)
        gemv_kernel<1, XT><<<grid, GEMV_THREADS, 0, s>>>(p);
    else if (p.M <= 2)
        gemv_kernel<2, XT><<<grid, GEMV_THREADS, 0, s>>>(p);
    else if (p.M <= 4)
        gemv_kernel<4, XT><<<grid, GEMV_THREADS, 0, s>>>(p);
    else if (p.M <= 8)
        gemv_kernel<8, XT><<<grid, GEMV_THREADS, 0, s>>>(p);
    else
        gemv_kernel<16, XT><<<grid, GEMV_THREADS, 0, s>>>(p);
}

} // namespace

extern "C" asa_err gemv_params_check(const gemv_params *p) {
    if (!p || p->M < 1 || p->M > GEMV_MAX_M || p->N < 1 || p->K < 8 || p->K % 8)
        return ASA_EINVAL;
    if (p->x_type != KC_F32 && p->x_type != KC_BF16)
        return ASA_EINVAL;
    if (!p->x || !p->w || (!p->y_f32 && !p->y_bf16))
        return ASA_EINVAL;
    if (p->ldx < p->K || p->ldw < p->K || p->ldy < p->N || p->ldw % 8 ||
        p->ldx % (p->x_type == KC_BF16 ? 8 : 4))
        return ASA_EINVAL;
    if (!kc_aligned(p->x, 16) || !kc_aligned(p->w, 16) ||
        (p->y_f32 && !kc_aligned(p->y_f32, 4)) || (p->y_bf16 && !kc_aligned(p->y_bf16, 2)))
        return ASA_EINVAL;
    if ((int64_t)p->N * p->ldw > ((int64_t)1 << 40))
        return ASA_EINVAL;
    return ASA_OK;
}

extern "C" asa_err gemv_bf16_cuda(const gemv_params *p, cudaStream_t stream) {
    asa_err e = gemv_params_check(p);
    if (e)
        return e;
    if (p->x_type == KC_F32)
        launch<float>(*p, stream);
    else
        launch<uint16_t>(*p, stream);
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" void gemv_bf16_ref(const gemv_params *p) {
    for (int m = 0; m < p->M; m++) {
        for (int n = 0; n < p->N; n++) {
            double s = 0;
            for (int k = 0; k < p->K; k++)
                s += kc_load_h(p->x, p->x_type, (int64_t)m * p->ldx + k) *
                     (double)asa_bf16_to_f32(p->w[(int64_t)n * p->ldw + k]);
            const int64_t o = (int64_t)m * p->ldy + n;
            if (p->y_f32)
                p->y_f32[o] = (float)s;
            if (p->y_bf16)
                p->y_bf16[o] = asa_f32_to_bf16((float)s);
        }
    }
}
