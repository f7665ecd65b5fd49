/*
 * kernels/cuda/cb_ops.cu - absorb / expand / embed / gather (contracts in
 * cb_ops_cuda.h).  absorb and expand: one block per (head, tile of
 * CB_TT tokens); the tile's inputs sit in shared memory and each thread
 * owns one output column for all tokens of the tile, so a weight element
 * is read once per tile (coalesced across the threads).
 */
#include "cb_ops_cuda.h"

#include "kcuda_int.cuh"
#include "mma_sm80.cuh"
#include "rope_cache_dev.cuh"

namespace {

constexpr int CB_TT = 8;

__global__ void absorb_kernel(const absorb_params p) {
    kc_pdl_enter();
    extern __shared__ float xs[]; /* [CB_TT][dh] */
    const int h = blockIdx.x, t0 = blockIdx.y * CB_TT;
    const int nt = min(CB_TT, p.T - t0);
    for (int i = threadIdx.x; i < nt * p.dh; i += blockDim.x) {
        const int tt = i / p.dh, r = i % p.dh;
        xs[i] = p.qa[(int64_t)(t0 + tt) * p.ld_qa + (int64_t)h * p.q_stride + r];
    }
    __syncthreads();
    const uint16_t *w = p.kvb + (int64_t)h * (p.dh + p.dv) * p.dg;
    for (int q = threadIdx.x; q < p.dg; q += blockDim.x) {
        float acc[CB_TT];
#pragma unroll
        for (int tt = 0; tt < CB_TT; tt++)
            acc[tt] = 0.0f;
        for (int r = 0; r < p.dh; r++) {
            const float wv = kc_bf16_f32(w[(int64_t)r * p.dg + q]);
#pragma unroll
            for (int tt = 0; tt < CB_TT; tt++)
                acc[tt] = fmaf(wv, xs[(tt < nt ? tt : 0) * p.dh + r], acc[tt]);
        }
#pragma unroll
        for (int tt = 0; tt < CB_TT; tt++)
            if (tt < nt)
                p.qt[((int64_t)(t0 + tt) * p.H + h) * p.dg + q] = acc[tt];
    }
}

__global__ void expand_kernel(const expand_params p) {
    kc_pdl_enter();
    extern __shared__ float us[]; /* [CB_TT][dg] */
    const int h = blockIdx.x, t0 = blockIdx.y * CB_TT;
    const int nt = min(CB_TT, p.T - t0);
    for (int i = threadIdx.x; i < nt * p.dg; i += blockDim.x) {
        const int tt = i / p.dg, q = i % p.dg;
        us[i] = p.u[((int64_t)(t0 + tt) * p.H + h) * p.dg + q];
    }
    __syncthreads();
    const uint16_t *w = p.wuvT + (int64_t)h * p.dg * p.dv;
    for (int v = threadIdx.x; v < p.dv; v += blockDim.x) {
        float acc[CB_TT];
#pragma unroll
        for (int tt = 0; tt < CB_TT; tt++)
            acc[tt] = 0.0f;
        for (int q = 0; q < p.dg; q++) {
            const float wv = kc_bf16_f32(w[(int64_t)q * p.dv + v]);
#pragma unroll
            for (int tt = 0; tt < CB_TT; tt++)
                acc[tt] = fmaf(wv, us[(tt < nt ? tt : 0) * p.dg + q], acc[tt]);
        }
#pragma unroll
        for (int tt = 0; tt < CB_TT; tt++)
            if (tt < nt)
                p.o[(int64_t)(t0 + tt) * p.ld_o + (int64_t)h * p.dv + v] = acc[tt];
    }
}

__global__ void embed_kernel(int d, const int32_t *tok, const uint16_t *embed, float *x) {
    kc_pdl_enter();
    const int t = blockIdx.x;
    const uint16_t *src = embed + (int64_t)tok[t] * d;
    for (int e = threadIdx.x; e < d; e += blockDim.x)
        x[(int64_t)t * d + e] = kc_bf16_f32(src[e]);
}

__global__ void gather_kernel(int d, const int32_t *rows, const float *src, int64_t ld,
                              float *dst) {
    kc_pdl_enter();
    const int r = blockIdx.x;
    for (int e = threadIdx.x; e < d; e += blockDim.x)
        dst[(int64_t)r * d + e] = src[(int64_t)rows[r] * ld + e];
}

__global__ void split_kernel(int cols, const float *x, int64_t ld, uint16_t *hi, uint16_t *lo) {
    kc_pdl_enter();
    const int r = blockIdx.x;
    for (int e = threadIdx.x; e < cols; e += blockDim.x) {
        const float v = x[(int64_t)r * ld + e];
        const uint16_t h = kc_f32_bf16(v);
        hi[(int64_t)r * cols + e] = h;
        if (lo)
            lo[(int64_t)r * cols + e] = kc_f32_bf16(v - kc_bf16_f32(h));
    }
}

/* Vector path of absorb and expand (both are y[tt][col] = sum_row
 * W[row][col] * x[tt][row] per head, W bf16 [nrow][ncol], ncol % 8 == 0):
 * CV_THREADS threads, thread i owns the 8-column chunk i % nc8 of the row
 * group i / nc8 (rows rg, rg + nrg, ...); it issues CV_U 16-byte loads of W
 * before their first use, keeps CV_TT x 8 sums, and the row groups' partial
 * sums are added in group order through shared memory.  A token's sums do
 * not depend on the other tokens of its tile.  Shared memory: xs [CV_TT]
 * [nrow], red [nrg][CV_TT][ncol] (nrg * ncol <= 8 * CV_THREADS). */
constexpr int CV_TT = 4, CV_THREADS = 256, CV_U = 4;

__device__ __forceinline__ void colsum_vec(const uint16_t *w, int nrow, int ncol,
                                           const float *xs, int nt, float *red) {
    const int nc8 = ncol >> 3, nrg = CV_THREADS / nc8;
    const int c = threadIdx.x % nc8, rg = threadIdx.x / nc8;
    if (rg < nrg) {
        float acc[CV_TT][8];
#pragma unroll
        for (int tt = 0; tt < CV_TT; tt++)
#pragma unroll
            for (int j = 0; j < 8; j++)
                acc[tt][j] = 0.0f;
        for (int r0 = rg; r0 < nrow; r0 += nrg * CV_U) {
            uint4 wv[CV_U];
#pragma unroll
            for (int u = 0; u < CV_U; u++) {
                const int r = r0 + u * nrg;
                wv[u] = r < nrow ? __ldg((const uint4 *)(w + (int64_t)r * ncol) + c)
                                 : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < CV_U; u++) {
                const int r = r0 + u * nrg;
                if (r >= nrow)
                    break;
                const uint32_t q[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
#pragma unroll
                for (int tt = 0; tt < CV_TT; tt++) {
                    if (tt >= nt)
                        break;
                    const float xv = xs[tt * nrow + r];
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        acc[tt][2 * j] = fmaf(__uint_as_float(q[j] << 16), xv, acc[tt][2 * j]);
                        acc[tt][2 * j + 1] =
                            fmaf(__uint_as_float(q[j] & 0xffff0000u), xv, acc[tt][2 * j + 1]);
                    }
                }
            }
        }
#pragma unroll
        for (int tt = 0; tt < CV_TT; tt++) {
            if (tt >= nt)
                break;
#pragma unroll
            for (int j = 0; j < 8; j++)
                red[((int64_t)rg * CV_TT + tt) * ncol + 8 * c + j] = acc[tt][j];
        }
    }
    __syncthreads();
}

/* The sum over row groups of output (tt, col), in group order. */
__device__ __forceinline__ float colsum_total(const float *red, int ncol, int tt, int col) {
    const int nrg = CV_THREADS / (ncol >> 3);
    float s = 0.0f;
    for (int g = 0; g < nrg; g++)
        s += red[((int64_t)g * CV_TT + tt) * ncol + col];
    return s;
}

/* absorb (vector path) of head h for the tile of tokens t0 .. t0 + CV_TT - 1 */
__device__ __forceinline__ void absorb_vec_tile(const absorb_params &p, int h, int t0,
                                                float *sv) {
    const int nt = min(CV_TT, p.T - t0);
    float *xs = sv, *red = sv + CV_TT * p.dh;
    kc_staged_copy<4>(
        nt * p.dh, CV_THREADS,
        [&](int i) {
            const int tt = i / p.dh, r = i % p.dh;
            return p.qa[(int64_t)(t0 + tt) * p.ld_qa + (int64_t)h * p.q_stride + r];
        },
        [&](int i, float v) { xs[i] = v; });
    __syncthreads();
    colsum_vec(p.kvb + (int64_t)h * (p.dh + p.dv) * p.dg, p.dh, p.dg, xs, nt, red);
    for (int i = threadIdx.x; i < nt * p.dg; i += CV_THREADS) {
        const int tt = i / p.dg, q = i % p.dg;
        p.qt[((int64_t)(t0 + tt) * p.H + h) * p.dg + q] = colsum_total(red, p.dg, tt, q);
    }
}

/* W_UK,h of absorb_vec_tile's head into L2 (before the PDL wait) */
__device__ __forceinline__ void absorb_vec_prefetch(const absorb_params &p, int h) {
    kc_prefetch_l2_range(p.kvb + (int64_t)h * (p.dh + p.dv) * p.dg,
                         (int64_t)p.dh * p.dg * (int64_t)sizeof(uint16_t));
}

__global__ void __launch_bounds__(CV_THREADS) absorb_vec_kernel(const absorb_params p) {
    absorb_vec_prefetch(p, blockIdx.x);
    kc_pdl_enter();
    extern __shared__ float sv[]; /* xs [CV_TT][dh], red */
    absorb_vec_tile(p, blockIdx.x, blockIdx.y * CV_TT, sv);
}

/* rope_cache and absorb in one launch: they read disjoint parts of qa (the
 * rope parts and the latent vs the non-rope query parts) and write
 * disjoint outputs, so blocks 0 .. H * tiles - 1 absorb (head, tile) and
 * the last T blocks run rope_cache's token work; the same arithmetic as
 * the two kernels. */
__global__ void __launch_bounds__(CV_THREADS)
rope_absorb_kernel(const rope_cache_params rp, const absorb_params p) {
    extern __shared__ float sv[]; /* absorb: xs [CV_TT][dh], red */
    const int nab = p.H * ((p.T + CV_TT - 1) / CV_TT);
    if ((int)blockIdx.x >= nab) {
        const rc_token rt = rope_cache_prep(rp, (int)blockIdx.x - nab);
        kc_pdl_enter();
        rope_cache_token(rp, rt);
        return;
    }
    absorb_vec_prefetch(p, (int)blockIdx.x % p.H);
    kc_pdl_enter();
    absorb_vec_tile(p, (int)blockIdx.x % p.H, (int)blockIdx.x / p.H * CV_TT, sv);
}

__global__ void __launch_bounds__(CV_THREADS) expand_vec_kernel(const expand_params p) {
    const int h = blockIdx.x, t0 = blockIdx.y * CV_TT;
    /* W_UV,h into L2 before the PDL wait (a weight) */
    kc_prefetch_l2_range(p.wuvT + (int64_t)h * p.dg * p.dv,
                         (int64_t)p.dg * p.dv * (int64_t)sizeof(uint16_t));
    kc_pdl_enter();
    extern __shared__ float sv[]; /* xs [CV_TT][dg], red */
    const int nt = min(CV_TT, p.T - t0);
    float *xs = sv, *red = sv + CV_TT * p.dg;
    kc_staged_copy<4>(
        nt * p.dg, CV_THREADS,
        [&](int i) {
            const int tt = i / p.dg, q = i % p.dg;
            return p.u[((int64_t)(t0 + tt) * p.H + h) * p.dg + q];
        },
        [&](int i, float v) { xs[i] = v; });
    __syncthreads();
    colsum_vec(p.wuvT + (int64_t)h * p.dg * p.dv, p.dg, p.dv, xs, nt, red);
    for (int i = threadIdx.x; i < nt * p.dv; i += CV_THREADS) {
        const int tt = i / p.dv, v = i % p.dv;
        p.o[(int64_t)(t0 + tt) * p.ld_o + (int64_t)h * p.dv + v] = colsum_total(red, p.dv, tt, v);
    }
}

/* Per-head products on tensor cores (absorb and expand from a few dozen
 * tokens on): y[t][h][n] = sum_k W_h[k][n] x[t][h][k], W_h bf16 row-major
 * [K][N], x and y f32.  One block per (head, run of mt tiles of 16
 * tokens).  W_h goes to shared memory by cp.async before the PDL wait (a
 * weight: nothing earlier writes it), the x tiles after it, the next tile
 * while the warps work on the current one (rows past T zero-filled); rows
 * padded (W by 8 bf16, x by 8 floats) so the transposed ldmatrix reads of
 * W and the f32 pair reads of x are conflict-free.  Each warp takes the
 * 16-column pairs w, w + 8, ... and splits x into bf16 hi + lo (~16 bits
 * of x; products exact in f32; two MMAs per k-step).  A token's sums do
 * not depend on the other tokens. */
constexpr int HM_THREADS = 256, HM_WARPS = HM_THREADS / 32,
              HM_PAIRS = 2; /* 16-column pairs per warp at most: N <= 256 */

struct hm_args {
    int T, K, N, mt;
    const uint16_t *w;
    int64_t w_head;
    const float *x;
    const float *x2; /* not NULL: the input is x + x2 (a stacked product's
                      * halves; the same indexing), added in f32 */
    int64_t ld_x, x_head;
    float *y;
    int64_t ld_y, y_head;
    uint16_t *yhi, *ylo; /* not NULL: y's bf16 parts instead of y (same indexing) */
};

/* Shared memory: [2][16][K + 8] f32 x tiles (with x2: then x2's two), then
 * [K][N + 8] bf16 W */
__host__ __device__ __forceinline__ int64_t hm_x_floats(const hm_args &a) {
    return (a.x2 ? 4 : 2) * 16 * (int64_t)(a.K + 8);
}

/* cp.async of x tile `tile` (16 rows of K floats) into buffer xs (and of
 * x2's into the buffer two after it) */
__device__ __forceinline__ void hm_stage_x(const hm_args &a, int h, int tile, float *xs) {
    const int c4 = a.K / 4, ldx = a.K + 8;
    for (int i = threadIdx.x; i < 16 * c4; i += HM_THREADS) {
        const int r = i / c4, c = i % c4, t = tile * 16 + r;
        const int64_t o = (int64_t)(t < a.T ? t : 0) * a.ld_x + (int64_t)h * a.x_head + 4 * c;
        mma_cp16(xs + r * ldx + 4 * c, a.x + o, t < a.T);
        if (a.x2)
            mma_cp16(xs + 2 * 16 * ldx + r * ldx + 4 * c, a.x2 + o, t < a.T);
    }
    mma_cp_commit();
}

/* W_h to shared memory by cp.async (before the PDL wait: a weight) */
__device__ __forceinline__ void hm_stage_w(const hm_args &a, int h, float *sm) {
    const int ldw = a.N + 8, c8 = a.N / 8;
    uint16_t *ws = (uint16_t *)(sm + hm_x_floats(a));
    const uint16_t *w = a.w + (int64_t)h * a.w_head;
    for (int i = threadIdx.x; i < a.K * c8; i += HM_THREADS) {
        const int r = i / c8, c = i % c8;
        mma_cp16(ws + r * ldw + 8 * c, w + (int64_t)r * a.N + 8 * c, true);
    }
    mma_cp_commit();
}

/* The products of head h for run `run` of a.mt tiles, after hm_stage_w and
 * the PDL wait. */
__device__ __forceinline__ void hm_run(const hm_args &a, int h, int run, float *sm) {
    const int ldw = a.N + 8, ldx = a.K + 8;
    float *xs = sm;
    const uint16_t *ws = (const uint16_t *)(sm + hm_x_floats(a));
    const int tile0 = run * a.mt, tiles = (a.T + 15) / 16;
    const int nt = min(a.mt, tiles - tile0);
    hm_stage_x(a, h, tile0, xs);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int npairs = a.N / 16;
    /* this lane's ldmatrix row: matrix lane / 8 of a pair is (k half
     * (lane / 8) & 1, n half lane / 16) */
    const int lk = ((lane >> 3) & 1) * 8 + (lane & 7), ln = (lane >> 4) * 8;
    for (int mi = 0; mi < nt; mi++) {
        if (mi + 1 < nt) {
            hm_stage_x(a, h, tile0 + mi + 1, xs + ((mi + 1) & 1) * 16 * ldx);
            mma_cp_wait<1>();
        } else {
            mma_cp_wait<0>();
        }
        __syncthreads();
        float *xt = xs + (mi & 1) * 16 * ldx;
        if (a.x2) { /* x + x2 in place */
            const float *x2t = xt + 2 * 16 * ldx;
            for (int i = threadIdx.x; i < 16 * a.K; i += HM_THREADS) {
                const int r = i / a.K, c = i % a.K;
                xt[r * ldx + c] += x2t[r * ldx + c];
            }
            __syncthreads();
        }
        float acc[HM_PAIRS][2][4];
#pragma unroll
        for (int pi = 0; pi < HM_PAIRS; pi++)
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    acc[pi][j][e] = 0.0f;
#pragma unroll 4
        for (int k0 = 0; k0 < a.K; k0 += 16) {
            const float *xa = xt + g * ldx + k0 + 2 * t4, *xb = xa + 8 * ldx;
            const float2 f[4] = {*(const float2 *)xa, *(const float2 *)xb,
                                 *(const float2 *)(xa + 8), *(const float2 *)(xb + 8)};
            uint32_t ahi[4], alo[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                ahi[i] = mma_pack_bf16(f[i].x, f[i].y);
                alo[i] = mma_pack_residue(f[i].x, f[i].y, ahi[i]);
            }
#pragma unroll
            for (int pi = 0; pi < HM_PAIRS; pi++) {
                const int pr = warp + HM_WARPS * pi;
                if (pr < npairs) {
                    uint32_t b[4];
                    mma_ldsm_x4<true>(b, ws + (k0 + lk) * ldw + pr * 16 + ln);
#pragma unroll
                    for (int j = 0; j < 2; j++) {
                        mma_16816(acc[pi][j], ahi, b[2 * j], b[2 * j + 1]);
                        mma_16816(acc[pi][j], alo, b[2 * j], b[2 * j + 1]);
                    }
                }
            }
        }
        const int t0 = (tile0 + mi) * 16;
        const bool va = t0 + g < a.T, vb = t0 + g + 8 < a.T;
#pragma unroll
        for (int pi = 0; pi < HM_PAIRS; pi++) {
            const int pr = warp + HM_WARPS * pi;
            if (pr < npairs)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const int64_t col = (int64_t)h * a.y_head + pr * 16 + j * 8 + 2 * t4;
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        if (!(r ? vb : va))
                            continue;
                        const int64_t at = (int64_t)(t0 + g + 8 * r) * a.ld_y + col;
                        const float v0 = acc[pi][j][2 * r], v1 = acc[pi][j][2 * r + 1];
                        if (!a.yhi) {
                            *(float2 *)(a.y + at) = make_float2(v0, v1);
                            continue;
                        }
                        const uint32_t hi = mma_pack_bf16(v0, v1);
                        *(uint32_t *)(a.yhi + at) = hi;
                        if (a.ylo)
                            *(uint32_t *)(a.ylo + at) = mma_pack_residue(v0, v1, hi);
                    }
                }
        }
        __syncthreads(); /* this buffer is the one staged next */
    }
}

__global__ void __launch_bounds__(HM_THREADS) heads_mma_kernel(const hm_args a) {
    extern __shared__ float hm_sm[];
    hm_stage_w(a, blockIdx.x, hm_sm);
    kc_pdl_enter();
    hm_run(a, blockIdx.x, blockIdx.y, hm_sm);
}

/* rope_cache and the absorb on tensor cores in one launch: blocks 0 ..
 * nab - 1 are heads_mma_kernel's (head b % H, run b / H), the last T
 * blocks run rope_cache's token work.  With rp.qa2 the absorb blocks add
 * the q nope halves as they stage them and the rope blocks add every other
 * column in place (each column is written by one side only). */
__global__ void __launch_bounds__(HM_THREADS)
rope_absorb_mma_kernel(const rope_cache_params rp, const hm_args a, int H, int nab) {
    extern __shared__ float hm_sm[];
    if ((int)blockIdx.x >= nab) {
        const rc_token k = rope_cache_prep(rp, (int)blockIdx.x - nab);
        kc_pdl_enter();
        if (rp.qa2)
            rope_cache_add_half(rp, k.t, true);
        rope_cache_token(rp, k);
        return;
    }
    const int h = (int)blockIdx.x % H;
    hm_stage_w(a, h, hm_sm);
    kc_pdl_enter();
    hm_run(a, h, (int)blockIdx.x / H, hm_sm);
}

/* Launches heads_mma_kernel over H heads; ASA_EUNSUPPORTED (nothing
 * launched) where the shapes or alignments do not fit it. */
/* heads_mma_kernel's plan for H heads: a->mt, the runs a head (*gy) and
 * the shared memory; false where the shapes or alignments do not fit it. */
bool hm_plan(hm_args *a, int H, long *gy, size_t *smem) {
    *smem = (size_t)a->K * (a->N + 8) * 2 + (size_t)hm_x_floats(*a) * 4;
    if (a->K < 16 || a->K % 16 || a->N < 16 || a->N % 16 || a->N / 16 > HM_WARPS * HM_PAIRS ||
        *smem > 100 * 1024 || !kc_aligned(a->w, 16) || a->w_head % 8 || !kc_aligned(a->x, 16) ||
        (a->x2 && !kc_aligned(a->x2, 16)) || a->ld_x % 4 || a->x_head % 4 || a->ld_y % 2 ||
        a->y_head % 2 ||
        (a->yhi ? !kc_aligned(a->yhi, 4) || (a->ylo && !kc_aligned(a->ylo, 4))
                : !kc_aligned(a->y, 8)))
        return false;
    /* about two blocks per SM of an H100 / H200 at most: longer runs of
     * tiles per block beyond that (W_h staged once per run) */
    const long tiles = (a->T + 15) / 16;
    a->mt = 1;
    while ((long)H * ((tiles + a->mt - 1) / a->mt) > 264 && a->mt < 16)
        a->mt *= 2;
    *gy = (tiles + a->mt - 1) / a->mt;
    return *gy <= 65535;
}

asa_err heads_mma_launch(hm_args a, int H, cudaStream_t stream) {
    static size_t raised;
    long gy;
    size_t smem;
    if (!hm_plan(&a, H, &gy, &smem))
        return ASA_EUNSUPPORTED;
    KC_CUDA_TRY(kc_smem_optin(heads_mma_kernel, smem, &raised));
    KC_CUDA_TRY(kc_launch(heads_mma_kernel, dim3((unsigned)H, (unsigned)gy), HM_THREADS, smem,
                          stream, a));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

/* Shared memory of the vector path, 0 when it does not apply. */
size_t cv_smem(int nrow, int ncol, const uint16_t *w) {
    if (ncol % 8 || ncol / 8 > CV_THREADS || !kc_aligned(w, 16))
        return 0;
    const size_t n = sizeof(float) * ((size_t)CV_TT * nrow +
                                      (size_t)(CV_THREADS / (ncol / 8)) * CV_TT * ncol);
    return n <= 48 * 1024 ? n : 0;
}

__global__ void add2_kernel(int64_t n, const float *a, const float *b, float *y) {
    kc_pdl_enter();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = a[i] + b[i];
}

constexpr int NM_THREADS = 256, NM_V = 4; /* float4 per thread: D <= 4096 */

/* SPLIT: the normalised row goes out as bf16 hi (+ lo) parts, exactly as
 * split4_kernel would cut the f32 row, instead of f32 y; ldo is the parts'
 * row stride (f32 y is dense).  NV float4 a thread (D <= 4 NV NM_THREADS):
 * the launchers take NV = 2 for D <= 2048, else NM_V, so that asa-1.3b's
 * rows keep ~60 registers a thread (with every load in flight at once,
 * NM_V took 124: two blocks an SM, a 4k prefill ~2 % slower). */
template <bool SPLIT, int NV>
__global__ void __launch_bounds__(NM_THREADS)
norm_kernel(int D, float eps, const float *x, const float *x2, int n2, float *res,
            const float *w, float *y, uint16_t *hi, uint16_t *lo, int64_t ldo) {
    /* the norm weights are not written by the launch before: read before
     * the PDL wait */
    const int D4 = D >> 2;
    const float4 *wr = (const float4 *)w;
    float4 g[NV];
#pragma unroll
    for (int u = 0; u < NV; u++) {
        const int i = threadIdx.x + u * NM_THREADS;
        g[u] = i < D4 ? wr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    kc_pdl_enter();
    __shared__ float part[NM_THREADS / 32];
    const int64_t row = blockIdx.x;
    const int nb = x2 ? n2 : 0;
    /* every load of the row (x, the parts after it, the residual) is in
     * flight before the first add: one round trip instead of one an array */
    const float4 *xr = (const float4 *)(x + row * D);
    float4 *rr = res ? (float4 *)(res + row * D) : nullptr;
    float4 v[NV], b[3][NV], r[NV];
#pragma unroll
    for (int u = 0; u < NV; u++) {
        const int i = threadIdx.x + u * NM_THREADS;
        v[u] = i < D4 ? xr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int q = 0; q < 3; q++) {
            const int64_t o2 = ((int64_t)q * gridDim.x + row) * D4 + i;
            b[q][u] = q < nb && i < D4 ? ((const float4 *)x2)[o2]
                                       : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        r[u] = rr && i < D4 ? rr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    /* x + x2 (+ the parts after it) first, as add2 launches before this
     * one would, in order; then the residual */
#pragma unroll
    for (int q = 0; q < 3; q++)
        if (q < nb) {
#pragma unroll
            for (int u = 0; u < NV; u++)
                v[u] = make_float4(v[u].x + b[q][u].x, v[u].y + b[q][u].y, v[u].z + b[q][u].z,
                                   v[u].w + b[q][u].w);
        }
    if (rr) {
#pragma unroll
        for (int u = 0; u < NV; u++) {
            const int i = threadIdx.x + u * NM_THREADS;
            v[u].x += r[u].x;
            v[u].y += r[u].y;
            v[u].z += r[u].z;
            v[u].w += r[u].w;
            if (i < D4)
                rr[i] = v[u];
        }
    }
    float ss = 0.0f;
#pragma unroll
    for (int u = 0; u < NV; u++) {
        ss = fmaf(v[u].x, v[u].x, ss);
        ss = fmaf(v[u].y, v[u].y, ss);
        ss = fmaf(v[u].z, v[u].z, ss);
        ss = fmaf(v[u].w, v[u].w, ss);
    }
    const float tot = kc_block_sum<NM_THREADS / 32>(ss, part);
    const float inv = rsqrtf(tot / (float)D + eps);
#pragma unroll
    for (int u = 0; u < NV; u++) {
        const int i = threadIdx.x + u * NM_THREADS;
        if (i < D4) {
            const float4 o = make_float4(v[u].x * inv * g[u].x, v[u].y * inv * g[u].y,
                                         v[u].z * inv * g[u].z, v[u].w * inv * g[u].w);
            if (!SPLIT) {
                ((float4 *)(y + row * D))[i] = o;
            } else {
                kc_split_store4(o, hi, lo, row * ldo + 4 * (int64_t)i);
            }
        }
    }
}

/* split for cols % 4 == 0 (16-byte aligned rows): float4 loads, SP_U in
 * flight per thread, 8-byte stores */
constexpr int SP_U = 4;
__global__ void split4_kernel(int cols, const float *x, int64_t ld, uint16_t *hi, uint16_t *lo) {
    kc_pdl_enter();
    const int r = blockIdx.x, c4 = cols >> 2;
    const float4 *xr = (const float4 *)(x + (int64_t)r * ld);
    for (int i0 = threadIdx.x; i0 < c4; i0 += blockDim.x * SP_U) {
        float4 v[SP_U];
#pragma unroll
        for (int u = 0; u < SP_U; u++) {
            const int i = i0 + u * (int)blockDim.x;
            v[u] = i < c4 ? xr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int u = 0; u < SP_U; u++) {
            const int i = i0 + u * (int)blockDim.x;
            if (i >= c4)
                break;
            kc_split_store4(v[u], hi, lo, (int64_t)r * cols + 4 * (int64_t)i);
        }
    }
}

/* a warp per row, 8 rows a block; 16-byte copies when vec */
__global__ void __launch_bounds__(256) xgather_kernel(const xgather_params p, bool vec) {
    kc_pdl_enter();
    const int r = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= p.rows)
        return;
    const uint16_t *src = p.kv + (int64_t)p.pages[r / p.B] * p.page_elems + p.layer_off +
                          (int64_t)(r % p.B) * (p.dc + p.dR);
    uint16_t *c = p.c_out + (int64_t)r * p.ld_c, *k = p.r_out + (int64_t)r * p.ld_r;
    if (vec) {
        const int nc = p.dc / 8, n = nc + p.dR / 8;
        for (int i = lane; i < n; i += 32) {
            const uint4 v = *((const uint4 *)src + i);
            if (i < nc)
                *((uint4 *)c + i) = v;
            else
                *((uint4 *)k + (i - nc)) = v;
        }
    } else {
        for (int i = lane; i < p.dc + p.dR; i += 32) {
            if (i < p.dc)
                c[i] = src[i];
            else
                k[i - p.dc] = src[i];
        }
    }
}

int threads_for(int n) {
    int t = (n + 31) / 32 * 32;
    return t > 256 ? 256 : (t < 32 ? 32 : t);
}

} // namespace

extern "C" asa_err cb_absorb_cuda(const absorb_params *p, cudaStream_t stream) {
    if (!p || p->T < 1 || p->H < 1 || p->dh < 1 || p->dg < 1 || !p->qa || !p->kvb || !p->qt)
        return ASA_EINVAL;
    const size_t vsm = cv_smem(p->dh, p->dg, p->kvb);
    if (vsm) {
        const dim3 grid((unsigned)p->H, (unsigned)((p->T + CV_TT - 1) / CV_TT));
        KC_CUDA_TRY(kc_launch(absorb_vec_kernel, grid, CV_THREADS, vsm, stream, *p));
        KC_LAUNCH_CHECK();
        return ASA_OK;
    }
    const size_t smem = sizeof(float) * CB_TT * (size_t)p->dh;
    if (smem > 48 * 1024)
        return ASA_EINVAL;
    const dim3 grid((unsigned)p->H, (unsigned)((p->T + CB_TT - 1) / CB_TT));
    KC_CUDA_TRY(kc_launch(absorb_kernel, grid, threads_for(p->dg), smem, stream, *p));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" asa_err cb_rope_absorb_cuda(const rope_cache_params *rp, const absorb_params *p,
                                       cudaStream_t stream) {
    if (rp && rp->qa2) /* the halves: rope_cache_cuda sums them (not here) */
        return ASA_EUNSUPPORTED;
    if (rope_cache_params_check(rp) || !p || p->T < 1 || p->H < 1 || p->dh < 1 || p->dg < 1 ||
        !p->qa || !p->kvb || !p->qt || rp->T != p->T || rp->qa != p->qa)
        return ASA_EINVAL;
    const size_t vsm = cv_smem(p->dh, p->dg, p->kvb);
    if (!vsm)
        return ASA_EUNSUPPORTED;
    const long nb = (long)p->H * ((p->T + CV_TT - 1) / CV_TT) + p->T;
    if (nb > 0x7fffffffL)
        return ASA_EUNSUPPORTED;
    KC_CUDA_TRY(kc_launch(rope_absorb_kernel, dim3((unsigned)nb), CV_THREADS, vsm, stream, *rp,
                          *p));
    return ASA_OK;
}

extern "C" asa_err cb_expand_cuda(const expand_params *p, cudaStream_t stream) {
    if (p && p->o_hi)
        return ASA_EUNSUPPORTED;
    if (!p || p->T < 1 || p->H < 1 || p->dv < 1 || p->dg < 1 || !p->u || !p->wuvT || !p->o)
        return ASA_EINVAL;
    const size_t vsm = cv_smem(p->dg, p->dv, p->wuvT);
    if (vsm) {
        const dim3 grid((unsigned)p->H, (unsigned)((p->T + CV_TT - 1) / CV_TT));
        KC_CUDA_TRY(kc_launch(expand_vec_kernel, grid, CV_THREADS, vsm, stream, *p));
        KC_LAUNCH_CHECK();
        return ASA_OK;
    }
    const size_t smem = sizeof(float) * CB_TT * (size_t)p->dg;
    if (smem > 48 * 1024)
        return ASA_EINVAL;
    const dim3 grid((unsigned)p->H, (unsigned)((p->T + CB_TT - 1) / CB_TT));
    KC_CUDA_TRY(kc_launch(expand_kernel, grid, threads_for(p->dv), smem, stream, *p));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

/* the absorb as heads_mma_kernel's product (x2: the halves' second) */
static hm_args absorb_hm(const absorb_params *p, const float *x2) {
    return hm_args{.T = p->T, .K = p->dh, .N = p->dg, .mt = 1, .w = p->kvb,
                   .w_head = (int64_t)(p->dh + p->dv) * p->dg, .x = p->qa, .x2 = x2,
                   .ld_x = p->ld_qa, .x_head = p->q_stride, .y = p->qt,
                   .ld_y = (int64_t)p->H * p->dg, .y_head = p->dg, .yhi = NULL, .ylo = NULL};
}

extern "C" asa_err cb_absorb_mma_cuda(const absorb_params *p, cudaStream_t stream) {
    if (!p || p->T < 1 || p->H < 1 || p->dh < 1 || p->dg < 1 || !p->qa || !p->kvb || !p->qt)
        return ASA_EINVAL;
    return heads_mma_launch(absorb_hm(p, NULL), p->H, stream);
}

extern "C" asa_err cb_rope_absorb_mma_cuda(const rope_cache_params *rp, const absorb_params *p,
                                           cudaStream_t stream) {
    if (rope_cache_params_check(rp) || !p || p->T < 1 || p->H < 1 || p->dh < 1 || p->dg < 1 ||
        !p->qa || !p->kvb || !p->qt || rp->T != p->T || rp->qa != p->qa || rp->H != p->H ||
        rp->dh != p->dh || rp->dh + rp->dR != p->q_stride || rp->ld_qa != p->ld_qa)
        return ASA_EINVAL;
    /* with the halves: the rope blocks' column split in float4s */
    if (rp->qa2 && !rope_cache_split_ok(*rp))
        return ASA_EUNSUPPORTED;
    static size_t raised;
    hm_args a = absorb_hm(p, rp->qa2);
    long gy;
    size_t smem;
    if (!hm_plan(&a, p->H, &gy, &smem))
        return ASA_EUNSUPPORTED;
    const long nab = (long)p->H * gy;
    if (nab + p->T > 0x7fffffffL)
        return ASA_EUNSUPPORTED;
    KC_CUDA_TRY(kc_smem_optin(rope_absorb_mma_kernel, smem, &raised));
    KC_CUDA_TRY(kc_launch(rope_absorb_mma_kernel, dim3((unsigned)(nab + p->T)), HM_THREADS, smem,
                          stream, *rp, a, p->H, (int)nab));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" asa_err cb_expand_mma_cuda(const expand_params *p, cudaStream_t stream) {
    if (!p || p->T < 1 || p->H < 1 || p->dv < 1 || p->dg < 1 || !p->u || !p->wuvT ||
        (!p->o && !p->o_hi))
        return ASA_EINVAL;
    const hm_args a = {.T = p->T, .K = p->dg, .N = p->dv, .mt = 1, .w = p->wuvT,
                       .w_head = (int64_t)p->dg * p->dv, .x = p->u, .x2 = NULL,
                       .ld_x = (int64_t)p->H * p->dg, .x_head = p->dg, .y = p->o,
                       .ld_y = p->ld_o, .y_head = p->dv, .yhi = p->o_hi,
                       .ylo = p->o_hi ? p->o_lo : NULL};
    return heads_mma_launch(a, p->H, stream);
}

extern "C" asa_err cb_embed_cuda(int T, int d, const int32_t *tok, const uint16_t *embed,
                                 float *x, cudaStream_t stream) {
    if (T < 1 || d < 1 || !tok || !embed || !x)
        return ASA_EINVAL;
    /* the first kernel of an engine step follows copies (metadata, pages),
     * not a kernel: an ordinary launch */
    KC_CUDA_TRY(kc_launch_pdl(false, embed_kernel, (unsigned)T, threads_for(d), 0, stream, d, tok,
                              embed, x));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" asa_err cb_xgather_cuda(const xgather_params *p, cudaStream_t stream) {
    if (!p || p->rows < 0 || p->B < 1 || p->dc < 1 || p->dR < 0 || !p->pages || !p->kv ||
        !p->c_out || (p->dR && !p->r_out) || p->ld_c < p->dc || p->ld_r < p->dR)
        return ASA_EINVAL;
    if (!p->rows)
        return ASA_OK;
    const bool vec = p->dc % 8 == 0 && p->dR % 8 == 0 && p->page_elems % 8 == 0 &&
                     p->layer_off % 8 == 0 && p->ld_c % 8 == 0 && p->ld_r % 8 == 0 &&
                     kc_aligned(p->kv, 16) && kc_aligned(p->c_out, 16) &&
                     (!p->dR || kc_aligned(p->r_out, 16));
    KC_CUDA_TRY(kc_launch(xgather_kernel, (unsigned)((p->rows + 7) / 8), 256, 0, stream, *p, vec));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" asa_err cb_split_bf16_cuda(int rows, int cols, const float *x, int64_t ld,
                                      uint16_t *hi, uint16_t *lo, cudaStream_t stream) {
    if (rows < 1 || cols < 1 || ld < cols || !x || !hi)
        return ASA_EINVAL;
    if (cols % 4 == 0 && ld % 4 == 0 && kc_aligned(x, 16) && kc_aligned(hi, 8) &&
        (!lo || kc_aligned(lo, 8))) {
        const int th = threads_for(cols / 4);
        KC_CUDA_TRY(kc_launch(split4_kernel, (unsigned)rows, th, 0, stream, cols, x, ld, hi, lo));
        KC_LAUNCH_CHECK();
        return ASA_OK;
    }
    KC_CUDA_TRY(kc_launch(split_kernel, (unsigned)rows, threads_for(cols), 0, stream, cols, x, ld,
                          hi, lo));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" asa_err cb_gather_rows_cuda(int n, int d, const int32_t *rows, const float *src,
                                       int64_t ld_src, float *dst, cudaStream_t stream) {
    if (n < 1 || d < 1 || !rows || !src || !dst)
        return ASA_EINVAL;
    KC_CUDA_TRY(kc_launch(gather_kernel, (unsigned)n, threads_for(d), 0, stream, d, rows, src,
                          ld_src, dst));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" void cb_absorb_ref(const absorb_params *p) {
    for (int t = 0; t < p->T; t++)
        for (int h = 0; h < p->H; h++) {
            const uint16_t *w = p->kvb + (int64_t)h * (p->dh + p->dv) * p->dg;
            for (int q = 0; q < p->dg; q++) {
                double s = 0;
                for (int r = 0; r < p->dh; r++)
                    s += (double)asa_bf16_to_f32(w[(int64_t)r * p->dg + q]) *
                         p->qa[(int64_t)t * p->ld_qa + (int64_t)h * p->q_stride + r];
                p->qt[((int64_t)t * p->H + h) * p->dg + q] = (float)s;
            }
        }
}

extern "C" void cb_expand_ref(const expand_params *p) {
    for (int t = 0; t < p->T; t++)
        for (int h = 0; h < p->H; h++) {
            const uint16_t *w = p->wuvT + (int64_t)h * p->dg * p->dv;
            for (int v = 0; v < p->dv; v++) {
                double s = 0;
                for (int q = 0; q < p->dg; q++)
                    s += (double)asa_bf16_to_f32(w[(int64_t)q * p->dv + v]) *
                         p->u[((int64_t)t * p->H + h) * p->dg + q];
                p->o[(int64_t)t * p->ld_o + (int64_t)h * p->dv + v] = (float)s;
            }
        }
}

extern "C" asa_err cb_add2_cuda(int rows, int cols, const float *a, const float *b, float *y,
                                cudaStream_t stream) {
    if (rows < 1 || cols < 1 || !a || !b || !y)
        return ASA_EINVAL;
    const int64_t n = (int64_t)rows * cols;
    KC_CUDA_TRY(kc_launch(add2_kernel, (unsigned)((n + 255) / 256), 256, 0, stream, n, a, b, y));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" asa_err cb_rmsnorm_cuda(int rows, int D, float eps, const float *x, const float *x2,
                                   int n2, float *residual, const float *w, float *y,
                                   cudaStream_t stream) {
    if (rows < 1 || D < 4 || !x || !w || !y || !(eps > 0) || (x2 && (n2 < 1 || n2 > 3)))
        return ASA_EINVAL;
    if (D % 4 || D > 4 * NM_V * NM_THREADS || !kc_aligned(x, 16) || !kc_aligned(w, 16) ||
        !kc_aligned(y, 16) || (x2 && (!kc_aligned(x2, 16) || x2 == residual)) ||
        (residual && (!kc_aligned(residual, 16) || residual == x)))
        return ASA_EUNSUPPORTED;
    KC_CUDA_TRY(kc_launch(D <= 8 * NM_THREADS ? norm_kernel<false, 2> : norm_kernel<false, NM_V>,
                          (unsigned)rows, NM_THREADS, 0, stream, D, eps, x, x2, n2, residual, w, y,
                          (uint16_t *)nullptr, (uint16_t *)nullptr, (int64_t)D));
    return ASA_OK;
}

extern "C" asa_err cb_rmsnorm_split_cuda(int rows, int D, float eps, const float *x,
                                         const float *x2, int n2, float *residual,
                                         const float *w, uint16_t *hi, uint16_t *lo, int64_t ldo,
                                         cudaStream_t stream) {
    if (rows < 1 || D < 4 || ldo < D || !x || !w || !hi || !(eps > 0) ||
        (x2 && (n2 < 1 || n2 > 3)))
        return ASA_EINVAL;
    if (D % 4 || ldo % 4 || D > 4 * NM_V * NM_THREADS || !kc_aligned(x, 16) ||
        !kc_aligned(w, 16) || !kc_aligned(hi, 8) || (lo && !kc_aligned(lo, 8)) ||
        (x2 && (!kc_aligned(x2, 16) || x2 == residual)) ||
        (residual && (!kc_aligned(residual, 16) || residual == x)))
        return ASA_EUNSUPPORTED;
    KC_CUDA_TRY(kc_launch(D <= 8 * NM_THREADS ? norm_kernel<true, 2> : norm_kernel<true, NM_V>,
                          (unsigned)rows, NM_THREADS, 0, stream, D, eps, x, x2, n2, residual, w,
                          (float *)nullptr, hi, lo, ldo));
    return ASA_OK;
}
