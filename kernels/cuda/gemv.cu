/*
 * kernels/cuda/gemv.cu - small-M bf16-weight product (contract in
 * gemv_cuda.h).
 *
 * Schedule.  A block of 256 threads is cut into groups of GT threads (GT =
 * 32..256; auto_gt chooses 64..256 from N: two warps splitting K when N is
 * large, more when N is small).  A group owns R consecutive rows of W
 * (outputs n) for all M rows of x; its lane gl handles the 16-byte chunks
 * (8 bf16) gl, gl + GT, ... of each of its rows, so a warp reads 512
 * contiguous bytes of a row per load instruction.  Each trip of the loop
 * issues U x R independent 16-byte loads of W (non-coherent, no L1
 * allocation: W is read once) before their first use; x (small, shared by
 * every block) comes through L1 and is reused for the R rows.  A lane keeps
 * M x R f32 partial sums; a warp butterfly adds them, and for GT > 32 the
 * group's warps meet once in shared memory.  Grid: ceil(N / rows per
 * block) blocks; at M = 1 and N = 2048 that is 2048 warps with 8 loads each
 * in flight: the whole 8 MiB matrix is requested in one go.
 */
#include "gemv_cuda.h"

#include <math.h>
#include <stdlib.h>

#include "kcuda_int.cuh"
#include "mma_sm80.cuh"

namespace {

constexpr int GEMV_THREADS = 256;
constexpr int GEMV_WARPS = GEMV_THREADS / 32;

/* Eight consecutive x values of row m starting at element 8c.  Plain
 * (coherent) loads, not the read-only path: with programmatic dependent
 * launch x is written by the previous kernel while this grid is already
 * resident (it is read only after the wait). */
__device__ __forceinline__ void load_x8(const float *x, int64_t off, float (&v)[8]) {
    const float4 a = *(const float4 *)(x + off);
    const float4 b = *((const float4 *)(x + off) + 1);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void load_x8(const uint16_t *x, int64_t off, float (&v)[8]) {
    const uint4 a = *(const uint4 *)(x + off);
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

/* Rows of W per thread group (R) and chunks per row in flight (U), by MT:
 * R x U 16-byte loads of W are issued before their first use; MT x R f32
 * partial sums stay in registers (MT * R <= 32: one lane per sum when they
 * are written). */
template <int MT> struct gemv_cfg {
    static constexpr int R = 2;
    static constexpr int U = MT <= 4 ? 4 : (MT <= 8 ? 2 : 1);
};

/* GEMV_X_NORM into shared memory xs[M][K]: the arithmetic of cb_ops.cu's
 * norm_kernel (256 threads, thread i owns the float4s i, i + 256, ...; the
 * same fmaf chain, butterfly and warp order), so the rows are bitwise
 * that kernel's.  Every row's loads go out before the first reduction and
 * the rows share one barrier and one pass over the norm weights (one row
 * after another, each waiting for its own reduction, cost batch 2 a third
 * more per launch than batch 1).  v goes through xs (no register array:
 * the first trip's weights hold 32 registers here); the global stores come
 * after the loads.  A block of NT > 256 threads: threads 256.. take no part
 * in the sums (the same bits) and share the pass over the norm weights. */
template <int MT, int NT>
__device__ __forceinline__ void stage_norm(const gemv_params &p, float *xs) {
    __shared__ float part[MT][GEMV_WARPS];
    const int K4 = p.K >> 2;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float ss[MT];
#pragma unroll
    for (int m = 0; m < MT; m++) {
        ss[m] = 0.0f;
        if (m >= p.M)
            break;
        const float4 *xr = (const float4 *)((const float *)p.x + (int64_t)m * p.ldx);
        const float4 *rr = p.res ? (const float4 *)(p.res + (int64_t)m * p.ldx) : nullptr;
        float4 *vs = (float4 *)(xs + (int64_t)m * p.K);
#pragma unroll 2 /* two float4 pairs in flight: all of K = 2048 */
        for (int u = 0; u < 4; u++) {
            const int i = threadIdx.x + u * GEMV_THREADS;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (i < K4 && (NT == GEMV_THREADS || threadIdx.x < GEMV_THREADS)) {
                v = xr[i];
                if (rr) {
                    const float4 r = rr[i];
                    v.x += r.x;
                    v.y += r.y;
                    v.z += r.z;
                    v.w += r.w;
                }
                vs[i] = v;
            }
            ss[m] = fmaf(v.x, v.x, ss[m]);
            ss[m] = fmaf(v.y, v.y, ss[m]);
            ss[m] = fmaf(v.z, v.z, ss[m]);
            ss[m] = fmaf(v.w, v.w, ss[m]);
        }
    }
    /* kc_block_sum for every row with one barrier */
#pragma unroll
    for (int m = 0; m < MT; m++) {
        if (m >= p.M)
            break;
        const float s = kc_warp_sum(ss[m]);
        if (lane == 0 && warp < GEMV_WARPS)
            part[m][warp] = s;
    }
    if (blockIdx.x == 0 && p.res && threadIdx.x < GEMV_THREADS) /* its own elements of xs */
        for (int m = 0; m < p.M; m++)
            for (int i = threadIdx.x; i < K4; i += GEMV_THREADS)
                ((float4 *)(p.res_out + (int64_t)m * p.ldx))[i] =
                    ((const float4 *)(xs + (int64_t)m * p.K))[i];
    __syncthreads();
    float inv[MT];
#pragma unroll
    for (int m = 0; m < MT; m++) {
        if (m >= p.M)
            break;
        float tot = 0.0f;
#pragma unroll
        for (int k = 0; k < GEMV_WARPS; k++)
            tot += part[m][k];
        inv[m] = rsqrtf(tot / (float)p.K + p.eps);
    }
    /* the norm weights: copied into xs[M][K .. K + K) before the PDL wait
     * (gemv_kernel), each float4 by the thread that reads it here */
    const float4 *wr = (const float4 *)(xs + (int64_t)p.M * p.K);
    mma_cp_wait<0>();
    for (int i = threadIdx.x; i < K4; i += NT) {
        const float4 g = wr[i];
#pragma unroll
        for (int m = 0; m < MT; m++) {
            if (m >= p.M)
                break;
            float4 *vs = (float4 *)(xs + (int64_t)m * p.K);
            const float4 v = vs[i];
            const float4 y = make_float4(v.x * inv[m] * g.x, v.y * inv[m] * g.y,
                                         v.z * inv[m] * g.z, v.w * inv[m] * g.w);
            vs[i] = y;
            if (blockIdx.x == 0 && p.xn_out)
                ((float4 *)(p.xn_out + (int64_t)m * p.ldx))[i] = y;
        }
    }
    __syncthreads(); /* xs complete */
}

/* GEMV_X_SILU into shared memory xs[M][K]: silu_mul.cu's expression. */
template <int NT> __device__ __forceinline__ void stage_silu(const gemv_params &p, float *xs) {
    const int K4 = p.K >> 2;
    for (int m = 0; m < p.M; m++) {
        const float4 *gr = (const float4 *)((const float *)p.x + (int64_t)m * p.ldx);
        const float4 *ur = (const float4 *)((const float *)p.x + (int64_t)m * p.ldx + p.K);
        for (int i = threadIdx.x; i < K4; i += NT) {
            const float4 g = gr[i], u = ur[i];
            ((float4 *)(xs + (int64_t)m * p.K))[i] =
                make_float4(g.x / (1.0f + expf(-g.x)) * u.x, g.y / (1.0f + expf(-g.y)) * u.y,
                            g.z / (1.0f + expf(-g.z)) * u.z, g.w / (1.0f + expf(-g.w)) * u.w);
        }
    }
    __syncthreads();
}

/* MT: compile-time bound on M (rows m >= p.M are skipped); XT: x's type;
 * XF: the x mode (GEMV_X_*; the fused ones read x from shared memory).
 * gt_log2: log2 of the threads per group (32..256, uniform).
 * PDL (kcuda.h): the first trip's weight loads, and L2 prefetches of the
 * rest of the lane's weights, are issued before the wait; nothing that a
 * previous kernel writes is touched before it.  The fused modes keep 4
 * blocks an SM at one row (64 registers) and 3 from two rows (under 64
 * registers those spilled 36-68 bytes). */
template <int MT, typename XT, int XF, int NT>
__global__ void __launch_bounds__(NT, XF == GEMV_X_PLAIN ? 1 : (MT == 1 ? 1024 / NT : 3))
gemv_kernel(const gemv_params p, const int gt_log2) {
    constexpr int R = gemv_cfg<MT>::R, U = gemv_cfg<MT>::U;
    static_assert(MT * R <= 32, "one lane per partial sum");
    const int GT = 1 << gt_log2;
    const int groups = NT >> gt_log2;
    const int group = threadIdx.x >> gt_log2, gl = threadIdx.x & (GT - 1);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n0 = (blockIdx.x * groups + group) * R;
    const int nchunk = p.K >> 3;

    const uint4 *wrow[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int n = min(n0 + r, p.N - 1); /* past N: repeat a row, drop it */
        wrow[r] = (const uint4 *)(p.w + (int64_t)n * p.ldw);
    }

    /* Lane gl of the group takes chunks gl, gl + GT, gl + 2 GT, ... of each
     * row, in this order whatever U is (the order contract).  The first
     * trip's loads go out before the PDL wait. */
    uint4 wv[U][R];
    /* the U x R weight chunks of the trip starting at chunk c0 */
    auto load_trip = [&](int c0) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = c0 + u * GT;
#pragma unroll
            for (int r = 0; r < R; r++)
                wv[u][r] = c < nchunk ? kc_ld_stream16(wrow[r] + c) : make_uint4(0, 0, 0, 0);
        }
    };
    extern __shared__ float gemv_xs[]; /* fused modes: [M][K] (+ [K] norm weights) */
    if constexpr (XF == GEMV_X_NORM) {
        /* the norm weights (weights: readable before the wait) go to
         * shared memory while the previous kernel finishes; stage_norm
         * waits for them (one L2 round trip fewer after the wait) */
        float *gs = gemv_xs + (int64_t)p.M * p.K;
        for (int i = threadIdx.x; i < (p.K >> 2); i += NT)
            mma_cp16(gs + 4 * i, p.norm_w + 4 * i, true);
        mma_cp_commit();
    }
    load_trip(gl);
    for (int c = gl + GT * U; c < nchunk; c += GT)
#pragma unroll
        for (int r = 0; r < R; r++)
            kc_prefetch_l2(wrow[r] + c);
    kc_pdl_wait();
    kc_pdl_trigger();

    const XT *x = (const XT *)p.x;
    int64_t ldx = p.ldx;
    if constexpr (XF != GEMV_X_PLAIN) {
        if constexpr (XF == GEMV_X_NORM)
            stage_norm<MT, NT>(p, gemv_xs);
        else
            stage_silu<NT>(p, gemv_xs);
        x = (const XT *)gemv_xs;
        ldx = p.K;
    }

    float acc[MT][R];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[m][r] = 0.0f;

    for (int c0 = gl; c0 < nchunk; c0 += GT * U) {
        if (c0 != gl)
            load_trip(c0);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = c0 + u * GT;
            if (c >= nchunk)
                break;
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (m >= p.M)
                    break;
                float xv[8];
                load_x8(x, (int64_t)m * ldx + 8 * (int64_t)c, xv);
#pragma unroll
                for (int r = 0; r < R; r++)
                    acc[m][r] = dot8(wv[u][r], xv, acc[m][r]);
            }
        }
    }

    /* Butterfly sums inside each warp (every lane ends with the same
     * totals); lane m*R + r then owns output (m, r). */
    float mine = 0.0f;
#pragma unroll
    for (int m = 0; m < MT; m++) {
        if (m >= p.M)
            break;
#pragma unroll
        for (int r = 0; r < R; r++) {
            float v = acc[m][r];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == m * R + r)
                mine = v;
        }
    }
    int m = lane / R, r = lane % R;
    if (GT > 32) {
        /* Groups of several warps: their partials meet in shared memory and
         * are added in warp order. */
        __shared__ float red[NT / 32][32];
        red[warp][lane] = mine;
        __syncthreads();
        if (warp != group * (GT >> 5))
            return; /* the group's first warp writes */
        for (int w = 1; w < (GT >> 5); w++)
            mine += red[warp + w][lane];
    }
    const int n = n0 + r;
    if (lane < MT * R && m < p.M && n < p.N) {
        const int64_t o = (int64_t)m * p.ldy + n;
        if (p.y_f32)
            p.y_f32[o] = mine;
        if (p.y_bf16)
            p.y_bf16[o] = kc_f32_bf16(mine);
    }
}

/* Threads per group from N alone (so results do not depend on M): the
 * smallest group of at least two warps giving >= 2048 warps in flight (16
 * per SM of a 132-SM Hopper) at R = 2, at most a whole block.  Two warps
 * a row pair rather than one for the large N (gate|up, lm_head): the
 * batch-1 step's 97 products chained as in the engine (tools/gpu/
 * gemv_chain.cu, H200) take 0.71 instead of 0.80 ms with plain x. */
int auto_gt(int N) {
    int gt = 64;
    while (gt < GEMV_THREADS && (int64_t)((N + 1) / 2) * (gt / 32) < 2048)
        gt *= 2;
    return gt;
}

template <int MT, typename XT, int XF>
cudaError_t launch_mt(const gemv_params &p, int gt, cudaStream_t s) {
    /* A fused mode at one row: blocks of 512 threads, so half as many
     * blocks stage x' (each reads the whole row, the residual and the norm
     * weights or both halves of gate|up from L2).  Batch-1 products chained
     * as in the engine (tools/gpu/gemv_chain.cu, H200): norm 0.827 -> 0.792
     * ms, norm + SiLU 0.875 -> 0.813; at two rows 512 threads (1 block an
     * SM at 79-128 registers) lost 3 % a batch-2 step. */
    constexpr int NT = XF != GEMV_X_PLAIN && MT == 1 ? 2 * GEMV_THREADS : GEMV_THREADS;
    const int rows_per_block = (NT / gt) * gemv_cfg<MT>::R;
    const dim3 grid((unsigned)((p.N + rows_per_block - 1) / rows_per_block));
    const size_t smem = XF == GEMV_X_PLAIN  ? 0
                        : XF == GEMV_X_NORM ? sizeof(float) * (size_t)(p.M + 1) * p.K
                                            : sizeof(float) * (size_t)p.M * p.K;
    static size_t raised = 0; /* per instance (kc_smem_optin) */
    const cudaError_t e = kc_smem_optin(gemv_kernel<MT, XT, XF, NT>, smem, &raised);
    if (e != cudaSuccess)
        return e;
    return kc_launch(gemv_kernel<MT, XT, XF, NT>, grid, NT, smem, s, p,
                     __builtin_ctz((unsigned)gt));
}

template <typename XT, int XF>
cudaError_t launch(const gemv_params &p, int gt, cudaStream_t s) {
    if (p.M <= 1)
        return launch_mt<1, XT, XF>(p, gt, s);
    if (p.M <= 2)
        return launch_mt<2, XT, XF>(p, gt, s);
    if (p.M <= 4)
        return launch_mt<4, XT, XF>(p, gt, s);
    if constexpr (XF != GEMV_X_PLAIN) {
        return cudaErrorInvalidValue; /* M <= 4 in the fused modes (checked) */
    } else {
        if (p.M <= 8)
            return launch_mt<8, XT, XF>(p, gt, s);
        return launch_mt<16, XT, XF>(p, gt, s);
    }
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
    if (p->x_mode == GEMV_X_PLAIN)
        return ASA_OK;
    /* fused modes: f32 rows staged whole in shared memory, float4 access */
    if (p->x_type != KC_F32 || (int64_t)p->M * p->K > GEMV_FUSE_MAX_ELEMS || p->M > 4)
        return ASA_EINVAL;
    if (p->x_mode == GEMV_X_NORM) {
        if (p->K > 4 * 4 * 256 || !p->norm_w || !(p->eps > 0) || !kc_aligned(p->norm_w, 16) ||
            (p->res && (!p->res_out || !kc_aligned(p->res, 16) || !kc_aligned(p->res_out, 16) ||
                        p->res_out == p->res || p->res_out == (const float *)p->x)) ||
            (p->xn_out && !kc_aligned(p->xn_out, 16)))
            return ASA_EINVAL;
        return ASA_OK;
    }
    if (p->x_mode == GEMV_X_SILU)
        return p->ldx >= 2 * (int64_t)p->K ? ASA_OK : ASA_EINVAL;
    return ASA_EINVAL;
}

extern "C" asa_err gemv_bf16_cuda_gt(const gemv_params *p, int gt, cudaStream_t stream) {
    asa_err e = gemv_params_check(p);
    if (e)
        return e;
    if (gt == 0)
        gt = auto_gt(p->N);
    if (gt != 32 && gt != 64 && gt != 128 && gt != 256)
        return ASA_EINVAL;
    if (p->x_mode == GEMV_X_NORM)
        KC_CUDA_TRY((launch<float, GEMV_X_NORM>(*p, gt, stream)));
    else if (p->x_mode == GEMV_X_SILU)
        KC_CUDA_TRY((launch<float, GEMV_X_SILU>(*p, gt, stream)));
    else if (p->x_type == KC_F32)
        KC_CUDA_TRY((launch<float, GEMV_X_PLAIN>(*p, gt, stream)));
    else
        KC_CUDA_TRY((launch<uint16_t, GEMV_X_PLAIN>(*p, gt, stream)));
    return ASA_OK;
}

extern "C" asa_err gemv_bf16_cuda(const gemv_params *p, cudaStream_t stream) {
    return gemv_bf16_cuda_gt(p, 0, stream);
}

/* x' of a fused mode for row m into xr[K] (double), with the side outputs. */
static void ref_xrow(const gemv_params *p, int m, double *xr) {
    const float *x = (const float *)p->x + (int64_t)m * p->ldx;
    if (p->x_mode == GEMV_X_SILU) {
        for (int k = 0; k < p->K; k++) {
            const double g = x[k], u = x[p->K + k];
            xr[k] = g / (1.0 + exp(-g)) * u;
        }
        return;
    }
    double ss = 0;
    for (int k = 0; k < p->K; k++) {
        /* the add is one f32 rounding, as on the device */
        const float v = p->res ? x[k] + p->res[(int64_t)m * p->ldx + k] : x[k];
        if (p->res)
            p->res_out[(int64_t)m * p->ldx + k] = v;
        xr[k] = v;
        ss += (double)v * v;
    }
    const double inv = 1.0 / sqrt(ss / p->K + (double)p->eps);
    for (int k = 0; k < p->K; k++) {
        xr[k] = xr[k] * inv * p->norm_w[k];
        if (p->xn_out)
            p->xn_out[(int64_t)m * p->ldx + k] = (float)xr[k];
    }
}

extern "C" void gemv_bf16_ref(const gemv_params *p) {
    double *xr = NULL;
    if (p->x_mode != GEMV_X_PLAIN) {
        xr = (double *)malloc(sizeof(double) * (size_t)p->K);
        if (!xr)
            return;
    }
    for (int m = 0; m < p->M; m++) {
        if (xr)
            ref_xrow(p, m, xr);
        for (int n = 0; n < p->N; n++) {
            double s = 0;
            for (int k = 0; k < p->K; k++)
                s += (xr ? xr[k] : kc_load_h(p->x, p->x_type, (int64_t)m * p->ldx + k)) *
                     (double)asa_bf16_to_f32(p->w[(int64_t)n * p->ldw + k]);
            const int64_t o = (int64_t)m * p->ldy + n;
            if (p->y_f32)
                p->y_f32[o] = (float)s;
            if (p->y_bf16)
                p->y_bf16[o] = asa_f32_to_bf16((float)s);
        }
    }
    free(xr);
}
