/*
 * kernels/cuda/attn_latent.cu - latent attention, block choice, compressed
 * entries and selection-state stores (contracts in attn_latent_cuda.h).
 *
 * Attention schedule: one block of ATT_THREADS threads per (token, latent
 * group, head chunk).  The chunk's queries ([q~ | qR] per head) sit in
 * shared memory; keys are staged ATT_KT at a time as f32 (only the group's
 * latent slice and the rope key are read), with a padded row stride so
 * that the score loop (one thread per (head, key)) is free of bank
 * conflicts.  One warp per head updates the running max and sum (online
 * softmax); the accumulators (heads x dg, f32) live in shared memory, each
 * element owned by one thread.  Every sum is in a fixed order, so a
 * token's result does not depend on the batch.
 */
#include "attn_latent_cuda.h"

#include <math.h>
#include <stdlib.h>

#include "attn_keys.cuh"
#include "kcuda_int.cuh"
#include "mma_sm80.cuh"

namespace {

constexpr int ATT_THREADS = 128;
constexpr int ATT_KT = ATTN_KT; /* keys per tile = warp size (softmax step) */
static_assert(ATT_KT == 32, "the softmax step maps one key to one lane");
constexpr int ATT_LU = 8; /* 16-byte key loads per thread in flight */
constexpr size_t ATTN_MERGE_SMEM = 160 * 1024; /* staged merge: partials in shared memory */
constexpr int SEL_THREADS = 256;
constexpr int SEL_HMAX = 16; /* heads per group scored in registers (more: one head at a time) */
constexpr int SEL_SMEM_MAX = 11 * 1024; /* candidates kept in shared memory (< 48 KB) */

__host__ __device__ inline int pad_odd(int e) { return (e & 1) ? e : e + 1; }

/* Row stride of the key tile: odd for the scalar loops; for the tiled ones
 * a multiple of 4 whose quarter is odd (float4 rows, 8 consecutive rows on
 * distinct banks).  At most E + 8 (the shared-memory size assumes it). */
__host__ __device__ inline int att_tile_stride(int E, bool fast) {
    return fast ? (E % 8 == 0 ? E + 4 : E + 8) : pad_odd(E);
}

/* The merge of head hh of token t (split partials of launch row tl) by one
 * warp, in the last split block (p.merge_cnt): attn_merge_kernel's
 * arithmetic in its order (maximum, weights, the sum by one lane in
 * ascending split order, each element's sum in ascending order), so the
 * same bits.  mw: this warp's 3 * n_split floats of shared memory.  The
 * partials are read with ld.cg: other blocks of this grid wrote them.  Not
 * inlined: inlined, it moved attn_kernel's registers from 80 (12 bytes of
 * spill) to 72 (32 bytes); apart, 96 registers and 4 bytes (ptxas, sm_90a;
 * the kernel is held to 3 blocks per SM by shared memory anyway). */
__device__ __noinline__ void merge_head_warp(const attn_params &p, int tl, int t, int hh,
                                                float *mw) {
    const int lane = threadIdx.x & 31, dg = p.c.dg, ns = p.n_split;
    const float *pt = p.part + ((int64_t)tl * p.H + hh) * ns * (dg + 2);
    float *mv = mw, *lv = mw + ns, *wv = mw + 2 * ns;
    float M = -INFINITY;
    for (int s = lane; s < ns; s += 32) {
        mv[s] = __ldcg(pt + s * (dg + 2) + dg);
        lv[s] = __ldcg(pt + s * (dg + 2) + dg + 1);
        M = fmaxf(M, mv[s]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    for (int s = lane; s < ns; s += 32)
        wv[s] = mv[s] != -INFINITY ? expf(mv[s] - M) : 0.0f;
    __syncwarp();
    float L = 0.0f;
    if (lane == 0)
        for (int s = 0; s < ns; s++)
            if (mv[s] != -INFINITY)
                L += lv[s] * wv[s];
    L = __shfl_sync(0xffffffffu, L, 0);
    for (int e = lane; e < dg; e += 32) {
        float a = 0.0f;
#pragma unroll 8
        for (int s = 0; s < ns; s++)
            if (mv[s] != -INFINITY)
                a += __ldcg(pt + s * (dg + 2) + e) * wv[s];
        float v = L > 0.0f ? a / L : 0.0f;
        const int64_t o = ((int64_t)t * p.H + hh) * dg + e;
        if (p.mode == ATTN_SLC) {
            const float *gt = p.gate + (int64_t)t * p.ld_qr;
            v = attn_sigmoid(gt[hh]) * p.u_cmp[o] + attn_sigmoid(gt[p.H + hh]) * v;
        }
        p.u[o] = v;
    }
    if (p.mode == ATTN_CMP && lane == 0)
        p.lse[(int64_t)t * p.H + hh] = L > 0.0f ? M + logf(L) : -INFINITY;
    __syncwarp(); /* mw is reused by the warp's next head */
}

/* MERGE: the instance with the merge in the last split block (its code
 * costs the other instance registers: 96 instead of 80). */
template <bool MERGE>
__global__ void __launch_bounds__(ATT_THREADS) attn_kernel(const attn_params p) {
    kc_pdl_enter();
    extern __shared__ float sm[];
    const int tl = blockIdx.x, t = p.t_off + tl, g = blockIdx.y;
    const int G = p.c.G, dg = p.c.dg, dR = p.c.dR, E = dg + dR;
    const int nh = p.heads_per_block, hpg = p.H / G, ns = p.n_split;
    const int h0 = g * hpg + (int)(blockIdx.z / ns) * nh, sp = (int)(blockIdx.z % ns);
    float *q = sm;                      /* [nh][E] */
    /* register-tiled score and sum loops (2 heads x 2 keys, 2 heads x 4
     * dims per thread, float4 shared loads) when the shapes allow and the
     * block has at least 8 heads (fewer: decode blocks, where the scalar
     * loops have the shorter chains per thread and the odd tile stride);
     * the same fmaf chains as the scalar loops, so the same bits */
    const bool fast = nh % 2 == 0 && nh >= 8 && dg % 4 == 0 && dR % 4 == 0;
    const int Ep = att_tile_stride(E, fast);
    float *tile = q + nh * E;           /* [KT][Ep] */
    float *sc = tile + ATT_KT * (E + 8); /* [nh][KT] */
    float *acc = sc + nh * ATT_KT;      /* [nh][dg] */
    float *mx = acc + nh * dg;          /* [nh] */
    float *ls = mx + nh;                /* [nh] */
    float *corr = ls + nh;              /* [nh] */
    __shared__ int64_t kbase[ATT_KT];

    const key_plan kp = make_plan(p, t, g);
    /* every entry slice 16-byte aligned: vector loads of the keys */
    const bool vec = dg % 8 == 0 && dR % 8 == 0 && p.c.page_elems % 8 == 0 &&
                     p.c.layer_off % 8 == 0 && ((uintptr_t)p.c.kv & 15) == 0;
    kc_staged_copy<8>(
        nh * E, ATT_THREADS,
        [&](int i) {
            const int h = i / E, e = i % E;
            return e < dg ? p.qt[((int64_t)t * p.H + h0 + h) * dg + e]
                          : p.qr[(int64_t)t * p.ld_qr + (int64_t)(h0 + h) * p.qr_stride + (e - dg)];
        },
        [&](int i, float v) { q[i] = v; });
    for (int i = threadIdx.x; i < nh * dg; i += ATT_THREADS)
        acc[i] = 0.0f;
    for (int i = threadIdx.x; i < nh; i += ATT_THREADS) {
        mx[i] = -INFINITY;
        ls[i] = 0.0f;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kbeg = ns > 1 ? sp * p.split_keys : 0;
    const int kend = ns > 1 ? min(kp.nkeys, kbeg + p.split_keys) : kp.nkeys;
    /* the entries of the next tile are looked up (page table; selected
     * sets) while this tile is loaded and computed: one round trip less a
     * tile */
    int64_t nb = -1;
    if (threadIdx.x < ATT_KT && kbeg + (int)threadIdx.x < kend)
        nb = kp.entry(kbeg + threadIdx.x);
    for (int k0 = kbeg; k0 < kend; k0 += ATT_KT) {
        const int nk = min(ATT_KT, kend - k0);
        if (threadIdx.x < ATT_KT)
            kbase[threadIdx.x] = nb; /* -1 past nk */
        __syncthreads();
        if (threadIdx.x < ATT_KT) {
            const int kn = k0 + ATT_KT + (int)threadIdx.x;
            nb = kn < kend ? kp.entry(kn) : -1;
        }
        if (vec) {
            /* 16-byte chunks, ATT_LU loads per thread in flight */
            const int E8 = E >> 3, dg8 = dg >> 3, n = nk * E8;
            for (int i0 = threadIdx.x; i0 < n; i0 += ATT_THREADS * ATT_LU) {
                uint4 v[ATT_LU];
#pragma unroll
                for (int u = 0; u < ATT_LU; u++) {
                    const int i = i0 + u * ATT_THREADS;
                    v[u] = make_uint4(0, 0, 0, 0);
                    if (i < n) {
                        const int kk = i / E8, ch = i - kk * E8;
                        const int64_t b = kbase[kk];
                        const int off = ch < dg8 ? g * dg + 8 * ch : G * dg + 8 * (ch - dg8);
                        if (b >= 0)
                            v[u] = __ldg((const uint4 *)(p.c.kv + b + off));
                    }
                }
#pragma unroll
                for (int u = 0; u < ATT_LU; u++) {
                    const int i = i0 + u * ATT_THREADS;
                    if (i < n) {
                        const int kk = i / E8, ch = i - kk * E8;
                        float *dst = tile + kk * Ep + 8 * ch;
                        const uint32_t w[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
#pragma unroll
                        for (int j = 0; j < 4; j++) {
                            dst[2 * j] = __uint_as_float(w[j] << 16);
                            dst[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
                        }
                    }
                }
            }
        } else {
            for (int i = threadIdx.x; i < nk * E; i += ATT_THREADS) {
                const int kk = i / E, e = i % E;
                const int64_t b = kbase[kk];
                float v = 0.0f;
                if (b >= 0)
                    v = kc_bf16_f32(p.c.kv[b + (e < dg ? g * dg + e : G * dg + (e - dg))]);
                tile[kk * Ep + e] = v;
            }
        }
        __syncthreads();
        if (fast) {
            /* thread: heads 2hp, 2hp+1 x keys kq + 16j (j < 2): a quarter
             * warp reads 8 consecutive rows (Ep / 4 odd: no bank conflict) */
            const int E4 = E >> 2;
            for (int it = threadIdx.x; it < nh * (ATT_KT / 4); it += ATT_THREADS) {
                const int hp = it / 16, kq = it % 16;
                const float4 *q0 = (const float4 *)(q + 2 * hp * E);
                const float4 *q1 = (const float4 *)(q + (2 * hp + 1) * E);
                float a[2][2];
#pragma unroll
                for (int j = 0; j < 2; j++)
                    a[0][j] = a[1][j] = 0.0f;
                for (int e4 = 0; e4 < E4; e4++) {
                    const float4 x0 = q0[e4], x1 = q1[e4];
#pragma unroll
                    for (int j = 0; j < 2; j++) {
                        const float4 k = ((const float4 *)(tile + (kq + 16 * j) * Ep))[e4];
                        a[0][j] = fmaf(x0.x, k.x, a[0][j]);
                        a[0][j] = fmaf(x0.y, k.y, a[0][j]);
                        a[0][j] = fmaf(x0.z, k.z, a[0][j]);
                        a[0][j] = fmaf(x0.w, k.w, a[0][j]);
                        a[1][j] = fmaf(x1.x, k.x, a[1][j]);
                        a[1][j] = fmaf(x1.y, k.y, a[1][j]);
                        a[1][j] = fmaf(x1.z, k.z, a[1][j]);
                        a[1][j] = fmaf(x1.w, k.w, a[1][j]);
                    }
                }
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const int kk = kq + 16 * j;
                    const bool ok = kk < nk && kbase[kk] >= 0;
                    sc[2 * hp * ATT_KT + kk] = ok ? a[0][j] * p.scale : -INFINITY;
                    sc[(2 * hp + 1) * ATT_KT + kk] = ok ? a[1][j] * p.scale : -INFINITY;
                }
            }
        } else {
            for (int i = threadIdx.x; i < nh * ATT_KT; i += ATT_THREADS) {
                const int h = i / ATT_KT, kk = i % ATT_KT;
                float s = -INFINITY;
                if (kk < nk && kbase[kk] >= 0) {
                    const float *qh = q + h * E, *kv = tile + kk * Ep;
                    float a = 0.0f;
                    for (int e = 0; e < E; e++)
                        a = fmaf(qh[e], kv[e], a);
                    s = a * p.scale;
                }
                sc[i] = s;
            }
        }
        __syncthreads();
        for (int h = warp; h < nh; h += ATT_THREADS / 32) {
            const float s = sc[h * ATT_KT + lane];
            float m = s;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
            const float mold = mx[h], mnew = fmaxf(mold, m);
            float pr = 0.0f, c = 1.0f;
            if (mnew != -INFINITY) {
                pr = s == -INFINITY ? 0.0f : expf(s - mnew);
                c = mold == -INFINITY ? 0.0f : expf(mold - mnew);
            }
            float sum = pr;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                sum += __shfl_xor_sync(0xffffffffu, sum, o);
            sc[h * ATT_KT + lane] = pr;
            __syncwarp();
            if (lane == 0) {
                ls[h] = ls[h] * c + sum;
                mx[h] = mnew;
                corr[h] = c;
            }
        }
        __syncthreads();
        if (fast) {
            /* thread: heads 2hp, 2hp+1 x dims 4c .. 4c+3 */
            const int dg4 = dg >> 2;
            for (int it = threadIdx.x; it < (nh / 2) * dg4; it += ATT_THREADS) {
                const int hp = it / dg4, c4 = it % dg4, ha = 2 * hp, hb = ha + 1;
                float4 a0 = ((const float4 *)(acc + ha * dg))[c4];
                float4 a1 = ((const float4 *)(acc + hb * dg))[c4];
                const float ca = corr[ha], cb = corr[hb];
                a0.x *= ca; a0.y *= ca; a0.z *= ca; a0.w *= ca;
                a1.x *= cb; a1.y *= cb; a1.z *= cb; a1.w *= cb;
                const float *pa = sc + ha * ATT_KT, *pb = sc + hb * ATT_KT;
                for (int kk = 0; kk < nk; kk++) {
                    const float4 v = ((const float4 *)(tile + kk * Ep))[c4];
                    const float wa = pa[kk], wb = pb[kk];
                    a0.x = fmaf(wa, v.x, a0.x);
                    a0.y = fmaf(wa, v.y, a0.y);
                    a0.z = fmaf(wa, v.z, a0.z);
                    a0.w = fmaf(wa, v.w, a0.w);
                    a1.x = fmaf(wb, v.x, a1.x);
                    a1.y = fmaf(wb, v.y, a1.y);
                    a1.z = fmaf(wb, v.z, a1.z);
                    a1.w = fmaf(wb, v.w, a1.w);
                }
                ((float4 *)(acc + ha * dg))[c4] = a0;
                ((float4 *)(acc + hb * dg))[c4] = a1;
            }
        } else {
            for (int i = threadIdx.x; i < nh * dg; i += ATT_THREADS) {
                const int h = i / dg, e = i % dg;
                float a = acc[i] * corr[h];
                const float *ph = sc + h * ATT_KT;
                for (int kk = 0; kk < nk; kk++)
                    a = fmaf(ph[kk], tile[kk * Ep + e], a);
                acc[i] = a;
            }
        }
        __syncthreads();
    }
    __syncthreads(); /* no key at all: the initial values must be visible */
    if (ns > 1) {
        /* partial sums for the merge */
        for (int i = threadIdx.x; i < nh * (dg + 2); i += ATT_THREADS) {
            const int h = i / (dg + 2), e = i % (dg + 2);
            const float v = e < dg ? acc[h * dg + e] : e == dg ? mx[h] : ls[h];
            p.part[(((int64_t)tl * p.H + h0 + h) * ns + sp) * (dg + 2) + e] = v;
        }
        if (!MERGE || !p.merge_cnt)
            return;
        /* the last block of this (token, group, head chunk) merges: the
         * partials are published (fence) before the count, and read from
         * L2 after it */
        __shared__ int s_last;
        __threadfence();
        __syncthreads();
        int *cnt = p.merge_cnt + ((int64_t)tl * G + g) * (hpg / nh) + blockIdx.z / ns;
        if (threadIdx.x == 0)
            s_last = atomicAdd(cnt, 1) == ns - 1;
        __syncthreads();
        if (!s_last)
            return;
        __threadfence();
        if (threadIdx.x == 0)
            *cnt = 0; /* for the next launch (graph replays) */
        float *mw = sm + warp * 3 * ns; /* the tiles are done (size: the launcher) */
        for (int h = warp; h < nh; h += ATT_THREADS / 32)
            merge_head_warp(p, tl, t, h0 + h, mw);
        return;
    }
    for (int i = threadIdx.x; i < nh * dg; i += ATT_THREADS) {
        const int h = i / dg, e = i % dg, hh = h0 + h;
        float v = ls[h] > 0.0f ? acc[i] / ls[h] : 0.0f;
        const int64_t o = ((int64_t)t * p.H + hh) * dg + e;
        if (p.mode == ATTN_SLC) {
            const float *gt = p.gate + (int64_t)t * p.ld_qr;
            v = attn_sigmoid(gt[hh]) * p.u_cmp[o] + attn_sigmoid(gt[p.H + hh]) * v;
        }
        p.u[o] = v;
    }
    if (p.mode == ATTN_CMP)
        for (int h = threadIdx.x; h < nh; h += ATT_THREADS)
            p.lse[(int64_t)t * p.H + h0 + h] = ls[h] > 0.0f ? mx[h] + logf(ls[h]) : -INFINITY;
}

/* Merge of split partials: one block per (token, head); the same epilogue
 * as the unsplit kernel.  The split maxima, sums and weights are read once
 * into shared memory (the threads load them in parallel), then every
 * element's loop reads only its own column of the partials: at 128k the
 * compressed branch has ~128 splits, and each thread used to walk them
 * three times through L2.  The sums keep the ascending split order of the
 * sequential form (the same bits in both modes). */
__global__ void attn_merge_kernel(const attn_params p, int stage) {
    kc_pdl_enter();
    extern __shared__ float mw[]; /* [3][ns]: maxima, sums, weights; stage:
                                     then the partials [ns][dg + 2] */
    __shared__ float s_M, s_L;
    const int tl = blockIdx.x, t = p.t_off + tl, hh = blockIdx.y, dg = p.c.dg,
              ns = p.n_split;
    const float *pt = p.part + ((int64_t)tl * p.H + hh) * ns * (dg + 2);
    float *mv = mw, *lv = mw + ns, *wv = mw + 2 * ns;
    if (stage) {
        /* the head's partials into shared memory first, every load in
         * flight at once (ATT_LU per thread), so that the element loops
         * below walk shared memory instead of one L2 round trip per 8
         * splits (at 128k: 65-257 splits, 14-57 us a merge); the same
         * arithmetic in the same order, so the same bits */
        float *slab = mw + 3 * ns;
        const int nall = ns * (dg + 2);
        for (int i0 = threadIdx.x; i0 < nall; i0 += blockDim.x * ATT_LU) {
            float v[ATT_LU];
#pragma unroll
            for (int u = 0; u < ATT_LU; u++) {
                const int i = i0 + u * (int)blockDim.x;
                v[u] = i < nall ? pt[i] : 0.0f;
            }
#pragma unroll
            for (int u = 0; u < ATT_LU; u++) {
                const int i = i0 + u * (int)blockDim.x;
                if (i < nall)
                    slab[i] = v[u];
            }
        }
        __syncthreads();
        pt = slab;
    }
    for (int s = threadIdx.x; s < ns; s += blockDim.x) {
        mv[s] = pt[s * (dg + 2) + dg];
        lv[s] = pt[s * (dg + 2) + dg + 1];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float M = -INFINITY;
        for (int s = 0; s < ns; s++)
            M = fmaxf(M, mv[s]);
        s_M = M;
    }
    __syncthreads();
    const float M = s_M;
    for (int s = threadIdx.x; s < ns; s += blockDim.x)
        wv[s] = mv[s] != -INFINITY ? expf(mv[s] - M) : 0.0f;
    __syncthreads();
    if (threadIdx.x == 0) {
        float L = 0.0f;
        for (int s = 0; s < ns; s++)
            if (mv[s] != -INFINITY)
                L += lv[s] * wv[s];
        s_L = L;
    }
    __syncthreads();
    const float L = s_L;
    for (int e = threadIdx.x; e < dg; e += blockDim.x) {
        float a = 0.0f;
#pragma unroll 8
        for (int s = 0; s < ns; s++)
            if (mv[s] != -INFINITY)
                a += pt[s * (dg + 2) + e] * wv[s];
        float v = L > 0.0f ? a / L : 0.0f;
        const int64_t o = ((int64_t)t * p.H + hh) * dg + e;
        if (p.mode == ATTN_SLC) {
            const float *gt = p.gate + (int64_t)t * p.ld_qr;
            v = attn_sigmoid(gt[hh]) * p.u_cmp[o] + attn_sigmoid(gt[p.H + hh]) * v;
        }
        p.u[o] = v;
    }
    if (p.mode == ATTN_CMP && threadIdx.x == 0)
        p.lse[(int64_t)t * p.H + hh] = L > 0.0f ? M + logf(L) : -INFINITY;
}

/* The merge for at most 32 splits and dg <= 32 * MW_E: a warp per (token,
 * head), MW_WARPS rows a block.  Lane s holds split s's maximum and sum;
 * the maximum by shuffles, the weights per lane, the sum by every lane in
 * ascending split order, each element's sum in ascending split order:
 * attn_merge_kernel's arithmetic in its order, so the same bits.  The
 * elements of the first MW_S splits are loaded with the maxima and sums
 * (one round trip at the usual split counts) instead of after four
 * barriers and two serial loops of one thread (batch 64 at 4k on the
 * H200: 7.1 us a merge, 36 a step). */
constexpr int MW_WARPS = 8, MW_E = 6, MW_S = 4;
__global__ void __launch_bounds__(MW_WARPS * 32) attn_merge_warp_kernel(const attn_params p) {
    kc_pdl_enter();
    const int lane = (int)(threadIdx.x & 31);
    const int row = (int)blockIdx.x * MW_WARPS + (int)(threadIdx.x >> 5);
    if (row >= p.T * p.H)
        return;
    const int tl = row / p.H, hh = row % p.H, t = p.t_off + tl, dg = p.c.dg, ns = p.n_split;
    const float *pt = p.part + (int64_t)row * ns * (dg + 2);
    float m = -INFINITY, l = 0.0f;
    if (lane < ns) {
        m = __ldcg(pt + lane * (dg + 2) + dg);
        l = __ldcg(pt + lane * (dg + 2) + dg + 1);
    }
    float M, L, a[MW_E];
    merge_row<MW_S>(
        m, l, ns, dg, [&](int s, int e) { return __ldcg(pt + s * (dg + 2) + e); }, M, L, a);
    merge_row_store(p, t, hh, M, L, a);
}

size_t attn_smem(const attn_params &p) {
    const int E = p.c.dg + p.c.dR, nh = p.heads_per_block;
    return sizeof(float) *
           ((size_t)nh * E + (size_t)ATT_KT * (E + 8) + (size_t)nh * ATT_KT +
            (size_t)nh * p.c.dg + 3 * (size_t)nh);
}

/* ---- block choice ---------------------------------------------------------- */

/* Scores of SEL_THREADS candidate blocks per thread block: grid (anchor,
 * group, chunk of blocks); one thread per block b computes S[b] (forced
 * blocks: -1) into the anchor's row of p.scores. */
__device__ __forceinline__ void select_score_block(const select_params &p, float *sm) {
    const int a = blockIdx.x, g = blockIdx.y;
    const int G = p.c.G, dg = p.c.dg, dR = p.c.dR, E = dg + dR, B = p.c.B;
    const int hpg = p.H / G;
    const int t = p.anchors[a];
    if (t < 0)
        return; /* padding */
    const int pos = p.tok_pos[t];
    const int nvis = (pos + 1) / B, cur = pos / B;
    const int b0 = (int)blockIdx.z * SEL_THREADS;
    if (b0 >= nvis)
        return; /* uniform: nothing visible in this chunk */
    const int32_t *tab = p.c.tab + p.c.seq_toff[p.tok_seq[t]];
    const int64_t S = (int64_t)G * dg + dR;
    float *q = sm;            /* [hpg][E] */
    float *lse = q + hpg * E; /* [hpg] */
    float *sc = p.scores + ((int64_t)a * G + g) * p.nb_max;

    kc_staged_copy<8>(
        hpg * E, SEL_THREADS,
        [&](int i) {
            const int h = i / E, e = i % E, hh = g * hpg + h;
            return e < dg ? p.qt[((int64_t)t * p.H + hh) * dg + e]
                          : p.qr[(int64_t)t * p.ld_qr + (int64_t)hh * p.qr_stride + (e - dg)];
        },
        [&](int i, float v) { q[i] = v; });
    for (int h = threadIdx.x; h < hpg; h += SEL_THREADS)
        lse[h] = p.lse[(int64_t)t * p.H + g * hpg + h];
    __syncthreads();
    const int b = b0 + (int)threadIdx.x;
    if (b < nvis) {
        const bool forced = sel_forced(b, cur, p.init_blocks, p.local_blocks);
        float sum = -1.0f;
        if (!forced) {
            const uint16_t *ent = p.c.kv + (int64_t)tab[b] * p.c.page_elems + p.c.layer_off +
                                  (int64_t)B * S;
            sum = 0.0f;
            if (hpg <= SEL_HMAX) {
                /* each entry value read once for all heads of the group;
                 * the heads' chains (the same order as below) interleave */
                float sv[SEL_HMAX];
#pragma unroll
                for (int h = 0; h < SEL_HMAX; h++)
                    sv[h] = 0.0f;
                for (int e = 0; e < E; e++) {
                    const float x = kc_bf16_f32(ent[e < dg ? g * dg + e : G * dg + (e - dg)]);
#pragma unroll
                    for (int h = 0; h < SEL_HMAX; h++)
                        if (h < hpg)
                            sv[h] = fmaf(q[h * E + e], x, sv[h]);
                }
#pragma unroll
                for (int h = 0; h < SEL_HMAX; h++)
                    if (h < hpg)
                        sum += expf(sv[h] * p.scale - lse[h]);
            } else {
                for (int h = 0; h < hpg; h++) {
                    const float *qh = q + h * E;
                    float sv = 0.0f;
                    for (int e = 0; e < dg; e++)
                        sv = fmaf(qh[e], kc_bf16_f32(ent[g * dg + e]), sv);
                    for (int e = 0; e < dR; e++)
                        sv = fmaf(qh[dg + e], kc_bf16_f32(ent[G * dg + e]), sv);
                    sum += expf(sv * p.scale - lse[h]);
                }
            }
        }
        sc[b] = sum;
    }
}

/* The same scores on tensor cores (mma.m16n8k16, one warp per 8 candidate
 * blocks at a time): the rows are the group's heads (at most 16), the
 * columns blocks, k the entry's latent dimensions then its rope dimensions,
 * each part padded to 16 with zeros.  The query is split into bf16 hi + lo
 * (two products, ~16 significant bits; the compressed entries are bf16
 * already), so the scores keep close to f32 accuracy: the top-n choice is
 * discontinuous.  Needs hpg <= 16 and even dg, dR (32-bit loads). */
constexpr int SELM_WARPS = 4;
constexpr int SELM_KMAX = 12; /* k steps of 16 (latent and rope parts rounded up) */

/* B fragments of the 8 candidate blocks from bc - gid on (this lane: bc). */
__device__ __forceinline__ void selm_load_b(const select_params &p, const int32_t *tab, int bc,
                                            bool ok, int g, int kd, int ks, int tig,
                                            uint32_t bf[SELM_KMAX][2]) {
    const int G = p.c.G, dg = p.c.dg, dR = p.c.dR, B = p.c.B;
    const int64_t S = (int64_t)G * dg + dR;
    const uint16_t *ent =
        ok ? p.c.kv + (int64_t)tab[bc] * p.c.page_elems + p.c.layer_off + (int64_t)B * S
           : nullptr;
#pragma unroll
    for (int j = 0; j < SELM_KMAX; j++) {
        if (j >= ks)
            break;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int kk = 2 * tig + r * 8;
            uint32_t v = 0;
            if (ent) {
                if (j < kd) {
                    if (16 * j + kk < dg)
                        v = *(const uint32_t *)(ent + g * dg + 16 * j + kk);
                } else if (16 * (j - kd) + kk < dR) {
                    v = *(const uint32_t *)(ent + G * dg + 16 * (j - kd) + kk);
                }
            }
            bf[j][r] = v;
        }
    }
}

/* One 16 x 8 tile of scores (rows gid: acc 0, 1 and gid + 8: acc 2, 3;
 * columns 2tig, 2tig + 1 = candidates b0 + 2tig + u): the heads' sum of
 * exp(score * scale - lse) per candidate, the forced blocks -1, stored for
 * candidates below lim. */
__device__ __forceinline__ void selm_sum_store(const select_params &p, const float acc[4], float l0,
                                               float l1, int hpg, int gid, int tig, int b0,
                                               int lim, int cur, float *sc) {
    float s0 = 0.0f, s1 = 0.0f;
    if (gid < hpg) {
        s0 += expf(acc[0] * p.scale - l0);
        s1 += expf(acc[1] * p.scale - l0);
    }
    if (gid + 8 < hpg) {
        s0 += expf(acc[2] * p.scale - l1);
        s1 += expf(acc[3] * p.scale - l1);
    }
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) {
        s0 += __shfl_xor_sync(0xffffffffu, s0, o);
        s1 += __shfl_xor_sync(0xffffffffu, s1, o);
    }
    if (gid == 0) {
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const int b = b0 + 2 * tig + u;
            if (b < lim) {
                const bool forced = sel_forced(b, cur, p.init_blocks, p.local_blocks);
                sc[b] = forced ? -1.0f : (u ? s1 : s0);
            }
        }
    }
}

/* grid (anchor, group, chunk of SELM_WARPS * ntw * 8 candidates); each warp
 * walks its ntw tiles of 8 candidates, loading the next tile's entries
 * while the current one multiplies. */
__global__ void __launch_bounds__(SELM_WARPS * 32)
    select_score_mma_kernel(const select_params p, int ntw) {
    __shared__ float qs[16][SELM_KMAX * 16 + 2]; /* the group's queries, zero padded */
    kc_pdl_enter();
    const int a = blockIdx.x, g = blockIdx.y;
    const int G = p.c.G, dg = p.c.dg, dR = p.c.dR, B = p.c.B;
    const int hpg = p.H / G;
    const int t = p.anchors[a];
    if (t < 0)
        return; /* padding */
    const int pos = p.tok_pos[t];
    const int nvis = (pos + 1) / B, cur = pos / B;
    const int csz = SELM_WARPS * ntw * 8;
    const int b0 = (int)blockIdx.z * csz;
    if (b0 >= nvis)
        return;
    const int bend = nvis - b0 < csz ? nvis : b0 + csz;
    const int lane = (int)(threadIdx.x & 31), warp = (int)(threadIdx.x >> 5);
    const int gid = lane >> 2, tig = lane & 3;
    const int kd = (dg + 15) / 16, ks = kd + (dR + 15) / 16, ep = ks * 16;
    const int32_t *tab = p.c.tab + p.c.seq_toff[p.tok_seq[t]];
    float *sc = p.scores + ((int64_t)a * G + g) * p.nb_max;

    kc_staged_copy<8>(
        16 * ep, SELM_WARPS * 32,
        [&](int i) {
            const int h = i / ep, e = i % ep, hh = g * hpg + h;
            float x = 0.0f;
            if (h < hpg) {
                if (e < kd * 16) {
                    if (e < dg)
                        x = p.qt[((int64_t)t * p.H + hh) * dg + e];
                } else if (e - kd * 16 < dR) {
                    x = p.qr[(int64_t)t * p.ld_qr + (int64_t)hh * p.qr_stride + (e - kd * 16)];
                }
            }
            return x;
        },
        [&](int i, float v) { qs[i / ep][i % ep] = v; });
    __syncthreads();
    /* A fragments of the query, hi and lo parts */
    uint32_t ahi[SELM_KMAX][4], alo[SELM_KMAX][4];
#pragma unroll
    for (int j = 0; j < SELM_KMAX; j++) {
        if (j >= ks)
            break;
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int h = gid + (r & 1) * 8, kk = 16 * j + 2 * tig + (r >> 1) * 8;
            uint16_t hv[2], lv[2];
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const float x = qs[h][kk + u];
                hv[u] = kc_f32_bf16(x);
                lv[u] = kc_f32_bf16(x - kc_bf16_f32(hv[u]));
            }
            ahi[j][r] = (uint32_t)hv[0] | (uint32_t)hv[1] << 16;
            alo[j][r] = (uint32_t)lv[0] | (uint32_t)lv[1] << 16;
        }
    }
    const float l0 = gid < hpg ? p.lse[(int64_t)t * p.H + g * hpg + gid] : 0.0f;
    const float l1 = gid + 8 < hpg ? p.lse[(int64_t)t * p.H + g * hpg + gid + 8] : 0.0f;

    const int step = SELM_WARPS * 8;
    int n0 = b0 + warp * 8;
    uint32_t bf[SELM_KMAX][2];
    selm_load_b(p, tab, n0 + gid, n0 + gid < bend, g, kd, ks, tig, bf);
    for (; n0 < bend; n0 += step) {
        uint32_t cb[SELM_KMAX][2];
#pragma unroll
        for (int j = 0; j < SELM_KMAX; j++) {
            cb[j][0] = bf[j][0];
            cb[j][1] = bf[j][1];
        }
        if (n0 + step < bend) /* the next tile's loads in flight during this one */
            selm_load_b(p, tab, n0 + step + gid, n0 + step + gid < bend, g, kd, ks, tig, bf);
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int j = 0; j < SELM_KMAX; j++) {
            if (j >= ks)
                break;
            mma_16816(acc, ahi[j], cb[j][0], cb[j][1]);
            mma_16816(acc, alo[j], cb[j][0], cb[j][1]);
        }
        selm_sum_store(p, acc, l0, l1, hpg, gid, tig, n0, bend, cur, sc);
    }
}

/* The same scores for many anchors (prefill), the candidates shared: one
 * warp per anchor (SELM_WARPS anchors a block, their group's heads as the
 * 16 rows of its A fragments, from the same bf16 hi + lo query parts), the
 * candidate entries of a chunk of SELT_TILES x SELT_KT blocks staged tile by
 * tile into shared memory (cp.async, double-buffered, row stride ks * 16 + 8
 * elements so that ldmatrix rows fall on distinct bank quads) and read by
 * ldmatrix, 8 independent accumulators a warp.  Each accumulator takes its
 * products in the order of select_score_mma_kernel (hi then lo per k step)
 * and the head sums the same shuffles: the same scores, bit for bit.
 * Anchors of one block from different sequences (a sequence boundary) are
 * handled in passes, one sequence a pass: the entries staged in a pass are
 * its sequence's, read by that sequence's warps only. */
constexpr int SELT_KT = 64;    /* candidates a staged tile */
constexpr int SELT_TILES = 4;  /* tiles a chunk (grid z) */

__global__ void __launch_bounds__(SELM_WARPS * 32)
    select_score_tiled_kernel(const select_params p, int ep, int vec) {
    extern __shared__ float selt_sm[]; /* [2][SELT_KT][ep + 8] bf16 */
    __shared__ int pg[SELT_KT * SELT_TILES];
    __shared__ int w_seq[SELM_WARPS], w_nvis[SELM_WARPS];
    kc_pdl_enter();
    const int g = blockIdx.y, G = p.c.G, dg = p.c.dg, dR = p.c.dR, B = p.c.B;
    const int hpg = p.H / G;
    const int lane = (int)(threadIdx.x & 31), warp = (int)(threadIdx.x >> 5), tid = threadIdx.x;
    const int gid = lane >> 2, tig = lane & 3;
    const int kd = (dg + 15) / 16, ks = kd + (dR + 15) / 16, Ep = ep + 8;
    const int a = (int)blockIdx.x * SELM_WARPS + warp;
    const int t = a < p.n_anchors ? p.anchors[a] : -1;
    const int pos = t >= 0 ? p.tok_pos[t] : 0, nvis = t >= 0 ? (pos + 1) / B : 0;
    const int cur = pos / B, b0 = (int)blockIdx.z * SELT_KT * SELT_TILES;
    if (lane == 0) {
        w_seq[warp] = t >= 0 && nvis > b0 ? p.tok_seq[t] : -1;
        w_nvis[warp] = nvis;
    }
    uint16_t *const kt = (uint16_t *)selt_sm;
    __syncthreads();
    /* a chunk past every anchor's visible blocks (the second half of the
     * candidates for the early anchors): nothing to do */
    {
        bool any = false;
        for (int w = 0; w < SELM_WARPS; w++)
            any = any || w_seq[w] >= 0;
        if (!any)
            return;
    }
    /* A fragments of this warp's anchor (rows: the group's heads), hi and
     * lo parts: the warp stages its 16 rows x Ep into shared memory (the
     * key buffers hold exactly the four warps' hi + lo rows), a lane a
     * 16-byte column of a row with all four rows' loads in flight, then
     * ldmatrix.  (Each lane gathering and cutting its own fragment
     * elements was ~30 % of the kernel's instructions.)  The same bf16
     * roundings, so the same scores as select_score_mma_kernel. */
    uint32_t ahi[SELM_KMAX][4], alo[SELM_KMAX][4];
    {
        uint16_t *const qh = kt + warp * 32 * Ep, *const ql = qh + 16 * Ep;
        const bool qvec = dg % 4 == 0 && dR % 4 == 0 && ((uintptr_t)p.qt & 15) == 0 &&
                          ((uintptr_t)p.qr & 15) == 0 && p.ld_qr % 4 == 0 && p.qr_stride % 4 == 0;
        constexpr int QR = 4, QC = ((SELM_KMAX * 16 + 8) / 4 + 31) / 32;
        for (int h0 = 0; h0 < 16; h0 += QR) {
            float4 v[QR][QC];
#pragma unroll
            for (int u = 0; u < QR; u++) {
                const int h = h0 + u, hh = g * hpg + h;
                const bool rok = t >= 0 && h < hpg;
                const float *qtr = p.qt + ((int64_t)(rok ? t : 0) * p.H + hh) * dg;
                const float *qrr =
                    p.qr + (int64_t)(rok ? t : 0) * p.ld_qr + (int64_t)hh * p.qr_stride - kd * 16;
#pragma unroll
                for (int w = 0; w < QC; w++) {
                    const int c = 4 * (lane + 32 * w);
                    v[u][w] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    if (!rok || c >= ep)
                        continue;
                    if (qvec) {
                        if (c < dg)
                            v[u][w] = *(const float4 *)(qtr + c);
                        else if (c >= kd * 16 && c - kd * 16 < dR)
                            v[u][w] = *(const float4 *)(qrr + c);
                    } else {
                        float e4[4];
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int cc = c + e;
                            e4[e] = cc < dg                              ? qtr[cc]
                                    : cc >= kd * 16 && cc - kd * 16 < dR ? qrr[cc]
                                                                         : 0.0f;
                        }
                        v[u][w] = make_float4(e4[0], e4[1], e4[2], e4[3]);
                    }
                }
            }
#pragma unroll
            for (int u = 0; u < QR; u++)
#pragma unroll
                for (int w = 0; w < QC; w++) {
                    const int c = 4 * (lane + 32 * w);
                    if (c >= Ep)
                        continue;
                    mma_store_hilo4<true>(qh + (h0 + u) * Ep + c, ql + (h0 + u) * Ep + c, v[u][w]);
                }
        }
        __syncwarp();
#pragma unroll
        for (int j = 0; j < SELM_KMAX; j++) {
            if (j >= ks)
                break;
            /* matrices (rows +0/+8, cols +0/+8) */
            const int off = ((lane & 7) + 8 * ((lane >> 3) & 1)) * Ep + 16 * j + 8 * (lane >> 4);
            mma_ldsm_x4<false>(ahi[j], qh + off);
            mma_ldsm_x4<false>(alo[j], ql + off);
        }
    }
    __syncthreads(); /* every warp holds its fragments */
    /* pad columns [ep - (kd*16 - dg) ...) stay zero: zero both buffers once */
    for (int i = tid; i < 2 * SELT_KT * Ep / 8; i += SELM_WARPS * 32)
        ((uint4 *)kt)[i] = make_uint4(0u, 0u, 0u, 0u);
    const float l0 = t >= 0 && gid < hpg ? p.lse[(int64_t)t * p.H + g * hpg + gid] : 0.0f;
    const float l1 = t >= 0 && gid + 8 < hpg ? p.lse[(int64_t)t * p.H + g * hpg + gid + 8] : 0.0f;
    float *const sc = p.scores + ((int64_t)(a < p.n_anchors ? a : 0) * G + g) * p.nb_max;
    const int64_t S = (int64_t)G * dg + dR;
    const int64_t ent0 = p.c.layer_off + (int64_t)B * S;
    __syncthreads();

    unsigned done = 0;
    for (;;) {
        /* this pass: the sequence of the first warp not yet done */
        int sq = -1, bend = 0;
        unsigned mem = 0;
        for (int w = 0; w < SELM_WARPS; w++)
            if (!((done >> w) & 1u) && w_seq[w] >= 0 && (sq < 0 || w_seq[w] == sq)) {
                sq = w_seq[w];
                mem |= 1u << w;
                bend = max(bend, w_nvis[w]);
            }
        if (sq < 0)
            break;
        done |= mem;
        bend = min(bend, b0 + SELT_KT * SELT_TILES);
        const int ntile = (bend - b0 + SELT_KT - 1) / SELT_KT;
        const int32_t *tab = p.c.tab + p.c.seq_toff[sq];
        for (int i = tid; i < bend - b0; i += SELM_WARPS * 32)
            pg[i] = tab[b0 + i];
        __syncthreads();
        /* staging of tile ti into buffer bf: the candidates' [c^(g) | kR] */
        auto stage = [&](int ti, int bf) {
            uint16_t *dst = kt + bf * SELT_KT * Ep;
            const int c0 = ti * SELT_KT;
            if (vec) {
                const int dg8 = dg >> 3, E8 = dg8 + (dR >> 3);
                for (int j = tid; j < SELT_KT * E8; j += SELM_WARPS * 32) {
                    const int kk = j / E8, ch = j % E8, c = c0 + kk;
                    if (b0 + c >= bend)
                        continue;
                    const uint16_t *src = p.c.kv + (int64_t)pg[c] * p.c.page_elems + ent0 +
                                          (ch < dg8 ? g * dg + 8 * ch : G * dg + 8 * (ch - dg8));
                    mma_cp16(dst + kk * Ep + (ch < dg8 ? 8 * ch : kd * 16 + 8 * (ch - dg8)), src,
                             true);
                }
                mma_cp_commit();
            } else {
                const int E = dg + dR;
                for (int j = tid; j < SELT_KT * E; j += SELM_WARPS * 32) {
                    const int kk = j / E, e = j % E, c = c0 + kk;
                    if (b0 + c >= bend)
                        continue;
                    const uint16_t *ent = p.c.kv + (int64_t)pg[c] * p.c.page_elems + ent0;
                    dst[kk * Ep + (e < dg ? e : kd * 16 + e - dg)] =
                        ent[e < dg ? g * dg + e : G * dg + (e - dg)];
                }
            }
        };
        const bool mine = (mem >> warp) & 1u;
        stage(0, 0);
        for (int ti = 0; ti < ntile; ti++) {
            if (ti + 1 < ntile) {
                stage(ti + 1, (ti + 1) & 1);
                mma_cp_wait<1>();
            } else {
                mma_cp_wait<0>();
            }
            __syncthreads(); /* tile ti landed for everybody */
            const int n0 = b0 + ti * SELT_KT;
            if (mine && n0 < nvis) {
                const uint16_t *tb = kt + (ti & 1) * SELT_KT * Ep;
                float acc[SELT_KT / 8][4];
#pragma unroll
                for (int n = 0; n < SELT_KT / 8; n++)
                    acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
                const int mi = lane >> 3, mr = lane & 7;
#pragma unroll
                for (int j = 0; j < SELM_KMAX; j++) {
                    if (j >= ks)
                        break;
#pragma unroll
                    for (int np = 0; np < SELT_KT / 16; np++) {
                        uint32_t b[4]; /* candidates 16np + 0..7 (b0, b1), 8..15 (b2, b3) */
                        mma_ldsm_x4<false>(b, tb + (16 * np + mr + 8 * (mi >> 1)) * Ep + 16 * j +
                                                  8 * (mi & 1));
                        mma_16816(acc[2 * np], ahi[j], b[0], b[1]);
                        mma_16816(acc[2 * np], alo[j], b[0], b[1]);
                        mma_16816(acc[2 * np + 1], ahi[j], b[2], b[3]);
                        mma_16816(acc[2 * np + 1], alo[j], b[2], b[3]);
                    }
                }
                const int lim = min(nvis, b0 + SELT_KT * SELT_TILES);
#pragma unroll
                for (int n = 0; n < SELT_KT / 8; n++)
                    selm_sum_store(p, acc[n], l0, l1, hpg, gid, tig, n0 + 8 * n, lim, cur, sc);
            }
            __syncthreads(); /* buffer ti & 1 free for tile ti + 2 */
        }
    }
}

/* Warp argmax of (score, block): the higher score, ties to the lower block;
 * the result in every lane. */
__device__ __forceinline__ void warp_best(float &bv, int &bi) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) {
            bv = ov;
            bi = oi;
        }
    }
}

/* The same, carrying the winner's lane-held tag bs along. */
__device__ __forceinline__ void warp_best(float &bv, int &bi, int &bs) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        const int os = __shfl_xor_sync(0xffffffffu, bs, o);
        if (ov > bv || (ov == bv && oi < bi)) {
            bv = ov;
            bi = oi;
            bs = os;
        }
    }
}

/* chosen[cnt] = b in a warp's choice: lane k holds chosen[k] in mine and
 * chosen[32 + k] in mine2 */
__device__ __forceinline__ void hold_pick(int lane, int cnt, int32_t b, int32_t &mine,
                                          int32_t &mine2) {
    if (lane == (cnt & 31)) {
        if (cnt < 32)
            mine = b;
        else
            mine2 = b;
    }
}

/* The forced blocks of a choice at cur, ascending: [0, fa) (b < init_blocks)
 * then [flo, cur] (b > cur - local_blocks); the first n of them (the host's
 * loop over b = 0..cur stops at n).  Arithmetic, not a walk over the cur + 1
 * blocks (8,192 at 128k: ~0.1 ms of one thread per choice). */
struct forced_set {
    int fa, flo, nf;
    __device__ forced_set(int cur, int init, int local, int n) {
        fa = init < cur + 1 ? init : cur + 1;
        flo = cur - local + 1 > fa ? cur - local + 1 : fa;
        nf = fa + (cur >= flo ? cur - flo + 1 : 0);
        if (nf > n)
            nf = n;
    }
    __device__ int at(int k) const { return k < fa ? k : flo + (k - fa); }
};

/* Writes one warp's choice: lane k holds chosen[k] in mine and
 * chosen[32 + k] in mine2 (cnt of them, any order); each is stored at its
 * rank (ascending) into tsel, -1 after cnt up to n, and into the anchor's
 * slots listed in st_slot/st_tok (selstore's copy). */
__device__ void select_write_warp(const select_params &p, int t, int g, int lane, int32_t mine,
                                  int32_t mine2, int cnt) {
    const int G = p.c.G, n = p.s.top_n;
    const int64_t k = (int64_t)t * G + g;
    for (int half = 0; half < 2; half++) {
        const int32_t x = half ? mine2 : mine;
        const int idx = lane + 32 * half;
        int rank = 0;
        for (int j = 0; j < cnt; j++) {
            const int32_t y = __shfl_xor_sync(0xffffffffu, j < 32 ? mine : mine2, lane ^ (j & 31));
            rank += idx < cnt && y < x;
        }
        if (idx < cnt)
            p.s.tsel[k * n + rank] = x;
        else if (idx < n)
            p.s.tsel[k * n + idx] = -1;
        /* selstore's copy of this set into the anchor's slot, when listed */
        for (int j = 0; j < p.n_store; j++) {
            if (p.st_slot[j] < 0 || p.st_tok[j] != t)
                continue;
            const int64_t dst = ((int64_t)p.st_slot[j] * p.s.Lg + p.s.ti) * G + g;
            if (idx < cnt)
                p.s.slot_sel[dst * n + rank] = x;
            else if (idx < n)
                p.s.slot_sel[dst * n + idx] = -1;
            if (idx == 0)
                p.s.slot_cnt[dst] = cnt;
        }
    }
    if (lane == 0)
        p.s.tsel_cnt[k] = cnt;
}

/* Block choice for up to SELW_MAX candidates: one warp per (anchor, group),
 * every lane holding its candidates b = lane + 32 i in registers; a round
 * is a warp argmax (ties: lower b) and only the owner clears its pick, so
 * no block-wide barriers.  The same choice as select_kernel. */
constexpr int SELW_PER_LANE = 32;
constexpr int SELW_MAX = 32 * SELW_PER_LANE;
constexpr int SELW_WARPS = 4;

__global__ void __launch_bounds__(SELW_WARPS * 32) select_warp_kernel(const select_params p) {
    kc_pdl_enter();
    const int pair = (int)blockIdx.x * SELW_WARPS + (int)(threadIdx.x >> 5);
    const int G = p.c.G, B = p.c.B, n = p.s.top_n;
    if (pair >= p.n_anchors * G)
        return;
    const int a = pair / G, g = pair % G;
    const int t = p.anchors[a];
    if (t < 0)
        return; /* padding */
    const int lane = (int)(threadIdx.x & 31);
    const int pos = p.tok_pos[t];
    const int nvis = (pos + 1) / B, cur = pos / B;
    const float *sc = p.scores + ((int64_t)a * G + g) * p.nb_max;
    float v[SELW_PER_LANE];
#pragma unroll
    for (int i = 0; i < SELW_PER_LANE; i++) {
        const int b = lane + 32 * i;
        v[i] = b < nvis ? sc[b] : -1.0f;
    }
    /* forced blocks first, ascending (the scores mark them -1); lane k
     * holds chosen[k] in mine and chosen[32 + k] in mine2 (n <= 64) */
    const forced_set fs(cur, p.init_blocks, p.local_blocks, n);
    int cnt = fs.nf;
    int32_t mine = lane < cnt ? fs.at(lane) : -1;
    int32_t mine2 = lane + 32 < cnt ? fs.at(lane + 32) : -1;
    float mb = -1.0f;
    int mi = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < SELW_PER_LANE; i++)
        if (v[i] >= 0.0f && v[i] > mb) {
            mb = v[i];
            mi = lane + 32 * i;
        }
    while (cnt < n) {
        float bv = mb;
        int bi = mi;
        warp_best(bv, bi);
        if (bv < 0.0f)
            break; /* uniform: every lane has the same bv */
        hold_pick(lane, cnt, bi, mine, mine2);
        cnt++;
        if ((bi & 31) == lane) {
            mb = -1.0f;
            mi = 0x7fffffff;
#pragma unroll
            for (int i = 0; i < SELW_PER_LANE; i++) {
                if (lane + 32 * i == bi)
                    v[i] = -1.0f;
                if (v[i] >= 0.0f && v[i] > mb) {
                    mb = v[i];
                    mi = lane + 32 * i;
                }
            }
        }
    }
    select_write_warp(p, t, g, lane, mine, mine2, cnt);
}

/* Block choice for up to SELB_WARPS * SELW_MAX candidates (512k tokens at
 * B = 16): one thread block of one warp per SELW_MAX candidates for each
 * (anchor, group).  Each warp takes the best m = n - forced of its
 * candidates (b = base + lane + 32 i in registers, rounds as in
 * select_warp_kernel), then warp 0 merges the warps' lists of picks (the
 * global best m are among them: each is among its own warp's best m).
 * Ties: the lower block, as everywhere.  Replaces select_kernel's
 * block-wide rounds, which took ~0.36 ms per choice at 128k. */
constexpr int SELB_WARPS = 32;

__global__ void __launch_bounds__(SELB_WARPS * 32) select_multi_kernel(const select_params p) {
    kc_pdl_enter();
    __shared__ float cv[SELB_WARPS * 64];
    __shared__ int ci[SELB_WARPS * 64];
    const int a = (int)blockIdx.x, g = (int)blockIdx.y;
    const int G = p.c.G, B = p.c.B, n = p.s.top_n;
    const int t = p.anchors[a];
    if (t < 0)
        return; /* padding */
    const int lane = (int)(threadIdx.x & 31), warp = (int)(threadIdx.x >> 5);
    const int pos = p.tok_pos[t];
    const int nvis = (pos + 1) / B, cur = pos / B;
    const forced_set fs(cur, p.init_blocks, p.local_blocks, n);
    const int m = n - fs.nf;
    const float *sc = p.scores + ((int64_t)a * G + g) * p.nb_max;
    const int base = warp * SELW_MAX;
    float v[SELW_PER_LANE];
    float mb = -1.0f;
    int mi = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < SELW_PER_LANE; i++) {
        const int b = base + lane + 32 * i;
        v[i] = b < nvis ? sc[b] : -1.0f;
        if (v[i] >= 0.0f && v[i] > mb) {
            mb = v[i];
            mi = b;
        }
    }
    /* 1: this warp's best m; pick k is held by lane k & 31 (slot k / 32) */
    float pv0 = -1.0f, pv1 = -1.0f;
    int pi0 = 0x7fffffff, pi1 = 0x7fffffff;
    for (int k = 0; k < m; k++) {
        float bv = mb;
        int bi = mi;
        warp_best(bv, bi);
        if (bv < 0.0f)
            break; /* uniform */
        if (lane == (k & 31)) {
            if (k < 32) {
                pv0 = bv;
                pi0 = bi;
            } else {
                pv1 = bv;
                pi1 = bi;
            }
        }
        if (((bi - base) & 31) == lane) {
            mb = -1.0f;
            mi = 0x7fffffff;
#pragma unroll
            for (int i = 0; i < SELW_PER_LANE; i++) {
                const int b = base + lane + 32 * i;
                if (b == bi)
                    v[i] = -1.0f;
                if (v[i] >= 0.0f && v[i] > mb) {
                    mb = v[i];
                    mi = b;
                }
            }
        }
    }
    cv[warp * 64 + lane] = pv0;
    ci[warp * 64 + lane] = pi0;
    cv[warp * 64 + 32 + lane] = pv1;
    ci[warp * 64 + 32 + lane] = pi1;
    __syncthreads();
    if (warp)
        return;
    /* 2: warp 0 merges the warps' lists (each in choice order: score
     * descending, ties to the lower block): lane w holds the head of warp
     * w's list; a round takes the best head and that lane moves on */
    const int W = (int)(blockDim.x >> 5);
    int hp = 0; /* lane w: position in warp w's list */
    float hv = lane < W ? cv[lane * 64] : -1.0f;
    int hi = lane < W ? ci[lane * 64] : 0x7fffffff;
    int cnt = fs.nf;
    int32_t mine = lane < cnt ? fs.at(lane) : -1;
    int32_t mine2 = lane + 32 < cnt ? fs.at(lane + 32) : -1;
    while (cnt < n) {
        float bv = hv;
        int bi = hi, bs = lane;
        warp_best(bv, bi, bs);
        if (bv < 0.0f)
            break; /* uniform */
        hold_pick(lane, cnt, bi, mine, mine2);
        cnt++;
        if (bs == lane) {
            hp++;
            hv = hp < 64 ? cv[lane * 64 + hp] : -1.0f;
            hi = hp < 64 ? ci[lane * 64 + hp] : 0x7fffffff;
        }
    }
    select_write_warp(p, t, g, lane, mine, mine2, cnt);
}

/* The block choice of (anchor, group) = (blockIdx.x, blockIdx.y) from the
 * scores of select_score_block, by one block; sv: shared scratch. */
__device__ __forceinline__ void select_choose(const select_params &p, float *sv, bool cg) {
    const int a = blockIdx.x, g = blockIdx.y;
    const int G = p.c.G, B = p.c.B;
    const int n = p.s.top_n;
    const int t = p.anchors[a];
    if (t < 0)
        return; /* padding */
    const int pos = p.tok_pos[t];
    const int nvis = (pos + 1) / B, cur = pos / B;
    __shared__ int32_t chosen[64];
    __shared__ int s_cnt, s_stop, s_pick;
    __shared__ float rv[SEL_THREADS / 32];
    __shared__ int ri[SEL_THREADS / 32];
    float *sc = p.scores + ((int64_t)a * G + g) * p.nb_max;
    if (p.nb_max <= SEL_SMEM_MAX) {
        /* the rounds scan shared memory (sv: [nb_max]), not L2; cg: the
         * scores were written by other blocks of this grid */
        for (int b = threadIdx.x; b < nvis; b += SEL_THREADS)
            sv[b] = cg ? __ldcg(sc + b) : sc[b];
        sc = sv;
    }

    if (threadIdx.x == 0) {
        const forced_set fs(cur, p.init_blocks, p.local_blocks, n);
        for (int k = 0; k < fs.nf; k++)
            chosen[k] = fs.at(k);
        s_cnt = fs.nf;
        s_stop = 0;
    }
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    /* each thread keeps the best of its own candidates (b = threadIdx.x mod
     * SEL_THREADS, ascending: a tie keeps the lower b); a round reduces
     * those and only the owner of the chosen block scans its candidates
     * again (8192 candidates at 128k: 32 per thread once, not per round) */
    float mb = -1.0f;
    int mi = 0x7fffffff;
    for (int b = threadIdx.x; b < nvis; b += SEL_THREADS) {
        const float v = sc[b];
        if (v >= 0.0f && v > mb) {
            mb = v;
            mi = b;
        }
    }
    while (s_cnt < n && !s_stop) {
        float bv = mb;
        int bi = mi;
        warp_best(bv, bi);
        if (lane == 0) {
            rv[warp] = bv;
            ri[warp] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < SEL_THREADS / 32; w++)
                if (rv[w] > bv || (rv[w] == bv && ri[w] < bi)) {
                    bv = rv[w];
                    bi = ri[w];
                }
            if (bv < 0.0f) {
                s_stop = 1;
            } else {
                chosen[s_cnt] = bi;
                s_cnt = s_cnt + 1;
                sc[bi] = -1.0f;
                s_pick = bi;
            }
        }
        __syncthreads();
        if (!s_stop && s_pick % SEL_THREADS == (int)threadIdx.x) {
            mb = -1.0f;
            mi = 0x7fffffff;
            for (int b = threadIdx.x; b < nvis; b += SEL_THREADS) {
                const float v = sc[b];
                if (v >= 0.0f && v > mb) {
                    mb = v;
                    mi = b;
                }
            }
        }
    }
    if (threadIdx.x == 0) {
        const int cnt = s_cnt;
        for (int i = 1; i < cnt; i++) {
            const int32_t v = chosen[i];
            int j = i - 1;
            for (; j >= 0 && chosen[j] > v; j--)
                chosen[j + 1] = chosen[j];
            chosen[j + 1] = v;
        }
        const int64_t k = (int64_t)t * G + g;
        for (int i = 0; i < n; i++)
            p.s.tsel[k * n + i] = i < cnt ? chosen[i] : -1;
        p.s.tsel_cnt[k] = cnt;
        /* selstore's copy of this set into the anchor's slot, when listed */
        for (int j = 0; j < p.n_store; j++) {
            if (p.st_slot[j] < 0 || p.st_tok[j] != t)
                continue;
            const int64_t dst = ((int64_t)p.st_slot[j] * p.s.Lg + p.s.ti) * G + g;
            for (int i = 0; i < n; i++)
                p.s.slot_sel[dst * n + i] = i < cnt ? chosen[i] : -1;
            p.s.slot_cnt[dst] = cnt;
        }
    }
}

/* Scores, and with p.done_cnt the choice in the last block of each
 * (anchor, group): the blocks count their chunk done (a counter per pair,
 * reset by the last block) and the last one runs select_choose on the
 * scores the others published (fence before the count, ld.cg after it). */
__global__ void __launch_bounds__(SEL_THREADS) select_score_kernel(const select_params p) {
    kc_pdl_enter();
    extern __shared__ float sm[]; /* scoring: [hpg][E] queries, [hpg] lse; then [nb_max] */
    if (p.anchors[blockIdx.x] < 0)
        return; /* padding: no scores, no choice */
    select_score_block(p, sm);
    if (!p.done_cnt)
        return;
    __shared__ int s_last;
    __threadfence();
    __syncthreads();
    int *cnt = p.done_cnt + (int64_t)blockIdx.x * p.c.G + blockIdx.y;
    if (threadIdx.x == 0)
        s_last = atomicAdd(cnt, 1) == (int)gridDim.z - 1;
    __syncthreads();
    if (!s_last)
        return;
    __threadfence();
    if (threadIdx.x == 0)
        *cnt = 0; /* for the next launch (graph replays) */
    select_choose(p, sm, true);
}

/* Block choice from the scores of select_score_kernel: one thread block per
 * (anchor, group). */
__global__ void __launch_bounds__(SEL_THREADS) select_kernel(const select_params p) {
    kc_pdl_enter();
    extern __shared__ float sv[]; /* [nb_max] when nb_max <= SEL_SMEM_MAX */
    select_choose(p, sv, false);
}

/* ---- compressed entries, selection stores ---------------------------------- */

__global__ void compress_kernel(const compress_params p) {
    kc_pdl_enter();
    if (p.pages[blockIdx.x] < 0)
        return; /* padding */
    const int64_t base = (int64_t)p.pages[blockIdx.x] * p.page_elems + p.layer_off;
    for (int e = threadIdx.x; e < p.S; e += blockDim.x) {
        float s = 0.0f;
        for (int k = 0; k < p.B; k++)
            s += kc_bf16_f32(p.kv[base + (int64_t)k * p.S + e]);
        p.kv[base + (int64_t)p.B * p.S + e] = kc_f32_bf16(s / (float)p.B);
    }
}

__global__ void selstore_kernel(const selstore_params p) {
    kc_pdl_enter();
    const int i = blockIdx.x, n = p.s.top_n;
    if (p.slot[i] < 0)
        return; /* padding */
    for (int x = threadIdx.x; x < p.G * n; x += blockDim.x) {
        const int g = x / n, k = x % n;
        const int64_t dst = ((int64_t)p.slot[i] * p.s.Lg + p.s.ti) * p.G + g;
        const int64_t src = (int64_t)p.tok[i] * p.G + g;
        p.s.slot_sel[dst * n + k] = p.s.tsel[src * n + k];
        if (k == 0)
            p.s.slot_cnt[dst] = p.s.tsel_cnt[src];
    }
}

} // namespace

extern "C" asa_err attn_latent_cuda(const attn_params *p, cudaStream_t stream) {
    if (!p || p->T < 1 || p->t_off < 0 || p->H < 1 || p->c.G < 1 || p->H % p->c.G ||
        p->heads_per_block < 1 ||
        (p->H / p->c.G) % p->heads_per_block || p->c.dg < 1 || p->c.dR < 0 || p->c.B < 1 ||
        !p->c.kv || !p->c.tab || !p->tok_pos || !p->tok_seq || !p->qt || !p->qr || !p->u ||
        (p->mode == ATTN_LOCAL && p->window < 1) || (p->mode == ATTN_CMP && !p->lse) ||
        (p->mode == ATTN_SLC && (!p->gate || !p->u_cmp || !p->s.sel_src)) || p->n_split < 1 ||
        p->n_split > ATTN_MAX_SPLIT ||
        (p->n_split > 1 && (!p->part || p->split_keys < ATT_KT || p->split_keys % ATT_KT)))
        return ASA_EINVAL;
    const size_t smem = attn_smem(*p);
    if (smem > 227 * 1024)
        return ASA_EINVAL;
    /* the kernel's dynamic limit raised to exactly what is needed
     * (kc_smem_optin) */
    static size_t raised0 = 0, raised1 = 0;
    KC_CUDA_TRY(kc_smem_optin(attn_kernel<false>, smem, &raised0));
    KC_CUDA_TRY(kc_smem_optin(attn_kernel<true>, smem, &raised1));
    const dim3 grid((unsigned)p->T, (unsigned)p->c.G,
                    (unsigned)(p->H / p->c.G / p->heads_per_block * p->n_split));
    /* the merge in the last split block needs 3 floats per split and warp
     * of the kernel's shared memory (the tiles are done by then) */
    attn_params q = *p;
    if (q.n_split > 1 && q.merge_cnt &&
        (size_t)(ATT_THREADS / 32) * 3 * q.n_split * sizeof(float) > smem)
        q.merge_cnt = nullptr;
    if (q.n_split < 2)
        q.merge_cnt = nullptr;
    if (q.merge_cnt)
        KC_CUDA_TRY(kc_launch(attn_kernel<true>, grid, ATT_THREADS, smem, stream, q));
    else
        KC_CUDA_TRY(kc_launch(attn_kernel<false>, grid, ATT_THREADS, smem, stream, q));
    KC_LAUNCH_CHECK();
    if (q.n_split > 1 && !q.merge_cnt)
        return attn_merge_cuda(p, stream);
    return ASA_OK;
}

extern "C" asa_err attn_merge_cuda(const attn_params *p, cudaStream_t stream) {
    if (!p || p->T < 1 || p->n_split < 2 || p->n_split > ATTN_MAX_SPLIT || !p->part ||
        !p->u || (p->mode == ATTN_CMP && !p->lse) ||
        (p->mode == ATTN_SLC && (!p->gate || !p->u_cmp)))
        return ASA_EINVAL;
    if (p->n_split <= 32 && p->c.dg <= 32 * MW_E) { /* a warp a row */
        const long rows = (long)p->T * p->H;
        KC_CUDA_TRY(kc_launch(attn_merge_warp_kernel, (unsigned)((rows + MW_WARPS - 1) / MW_WARPS),
                              MW_WARPS * 32, 0, stream, *p));
        KC_LAUNCH_CHECK();
        return ASA_OK;
    }
    {
        /* staged (the partials in shared memory) when they fit in
         * ATTN_MERGE_SMEM; 256 threads then, for the loads */
        const size_t slab = sizeof(float) * (size_t)p->n_split * (p->c.dg + 2);
        const int stage = p->n_split >= 8 && slab <= ATTN_MERGE_SMEM;
        const int th = stage ? 256 : p->c.dg >= 128 ? 128 : (p->c.dg + 31) / 32 * 32;
        const size_t msm = 3 * sizeof(float) * (size_t)p->n_split + (stage ? slab : 0);
        static size_t mraised = 0;
        KC_CUDA_TRY(kc_smem_optin(attn_merge_kernel, msm, &mraised));
        KC_CUDA_TRY(kc_launch(attn_merge_kernel, dim3((unsigned)p->T, (unsigned)p->H), th, msm,
                              stream, *p, stage));
        KC_LAUNCH_CHECK();
    }
    return ASA_OK;
}

extern "C" asa_err select_blocks_cuda(const select_params *p, cudaStream_t stream) {
    if (!p || p->n_anchors < 0 || p->s.top_n < 1 || p->s.top_n > 64 || p->H % p->c.G ||
        p->n_store < 0 ||
        (p->n_store > 0 && (!p->st_slot || !p->st_tok || !p->s.slot_sel || !p->s.slot_cnt)))
        return ASA_EINVAL;
    if (p->n_anchors == 0)
        return ASA_OK;
    const size_t smem =
        sizeof(float) * ((size_t)(p->H / p->c.G) * (p->c.dg + p->c.dR) + (size_t)(p->H / p->c.G));
    if (smem > 227 * 1024 || p->nb_max < 1)
        return ASA_EINVAL;
    static size_t raised = 0;
    KC_CUDA_TRY(kc_smem_optin(select_score_kernel, smem, &raised));
    /* scores over (anchor, group, chunk of SEL_THREADS blocks): the chunks
     * past an anchor's visible blocks exit at once; with done_cnt the last
     * chunk of each (anchor, group) also chooses (its scores in shared
     * memory: nb_max <= SEL_SMEM_MAX) */
    const dim3 sgrid((unsigned)p->n_anchors, (unsigned)p->c.G,
                     (unsigned)((p->nb_max + SEL_THREADS - 1) / SEL_THREADS));
    const int hpg = p->H / p->c.G;
    const bool mma = !p->exact && hpg <= 16 && p->c.dg % 2 == 0 && p->c.dR % 2 == 0 &&
                     (p->c.dg + 15) / 16 + (p->c.dR + 15) / 16 <= SELM_KMAX;
    const size_t vsm = p->nb_max <= SEL_SMEM_MAX ? (size_t)p->nb_max * sizeof(float) : 0;
    /* the step's candidates bound the tensor-core grids and the choice */
    const int nbs = p->nb_step > 0 && p->nb_step < p->nb_max ? p->nb_step : p->nb_max;
    select_params q = *p;
    if (p->scored) {
        q.done_cnt = nullptr; /* the scores are there: the choice alone */
    } else if (mma) {
        /* tensor-core scores (no fused choice).  Anchors in runs of one
         * sequence (prefill): select_score_tiled_kernel, SELM_WARPS anchors
         * sharing each staged candidate.  Otherwise one anchor a block: few
         * anchors (decode) 2 tiles of 8 candidates per warp, many thread
         * blocks; many anchors 8 tiles, the query's set-up shared by more
         * candidates */
        q.done_cnt = nullptr;
        const int kd = (p->c.dg + 15) / 16, ep = (kd + (p->c.dR + 15) / 16) * 16;
        if (p->anchor_runs && p->n_anchors >= 2 * SELM_WARPS) {
            /* prefill: SELM_WARPS anchors a block share the staged entries */
            const size_t tsm = (size_t)2 * SELT_KT * (ep + 8) * sizeof(uint16_t);
            static size_t traised = 0;
            KC_CUDA_TRY(kc_smem_optin(select_score_tiled_kernel, tsm, &traised));
            const int64_t pe = p->c.page_elems, S = (int64_t)p->c.G * p->c.dg + p->c.dR;
            const int vec = p->c.dg % 8 == 0 && p->c.dR % 8 == 0 && pe % 8 == 0 &&
                            p->c.layer_off % 8 == 0 && (p->c.B * S) % 8 == 0 &&
                            ((uintptr_t)p->c.kv & 15) == 0;
            const int csz = SELT_KT * SELT_TILES;
            const dim3 tgrid((unsigned)((p->n_anchors + SELM_WARPS - 1) / SELM_WARPS),
                             (unsigned)p->c.G, (unsigned)((nbs + csz - 1) / csz));
            KC_CUDA_TRY(kc_launch(select_score_tiled_kernel, tgrid, SELM_WARPS * 32, tsm, stream,
                                  q, ep, vec));
        } else {
            /* 2 tiles a warp up to 1023 (anchor, group) pairs: H200,
             * asa-1.3b at 4k, batch 32 / 64 / 128 -3.0 / -3.0 / -1.8 % a
             * step against 8 tiles from 64 pairs (the blocks' tile chains
             * were the scoring's critical path) */
            const int ntw = p->tiles > 0 ? p->tiles : p->n_anchors * p->c.G >= 1024 ? 8 : 2,
                      csz = SELM_WARPS * ntw * 8;
            const dim3 mgrid((unsigned)p->n_anchors, (unsigned)p->c.G,
                             (unsigned)((nbs + csz - 1) / csz));
            KC_CUDA_TRY(
                kc_launch(select_score_mma_kernel, mgrid, SELM_WARPS * 32, 0, stream, q, ntw));
        }
    } else {
        if (!vsm)
            q.done_cnt = nullptr;
        const size_t ssm = q.done_cnt && vsm > smem ? vsm : smem;
        KC_CUDA_TRY(kc_smem_optin(select_score_kernel, ssm, &raised));
        KC_CUDA_TRY(kc_launch(select_score_kernel, sgrid, SEL_THREADS, ssm, stream, q));
        if (q.done_cnt)
            return ASA_OK;
    }
    if (nbs <= SELW_MAX) {
        const int pairs = p->n_anchors * p->c.G;
        const unsigned nb = (unsigned)((pairs + SELW_WARPS - 1) / SELW_WARPS);
        KC_CUDA_TRY(kc_launch(select_warp_kernel, nb, SELW_WARPS * 32, 0, stream, q));
    } else if (nbs <= SELB_WARPS * SELW_MAX) {
        const dim3 grid((unsigned)p->n_anchors, (unsigned)p->c.G);
        const int warps = (nbs + SELW_MAX - 1) / SELW_MAX;
        KC_CUDA_TRY(kc_launch(select_multi_kernel, grid, warps * 32, 0, stream, q));
    } else {
        const dim3 grid((unsigned)p->n_anchors, (unsigned)p->c.G);
        KC_CUDA_TRY(kc_launch(select_kernel, grid, SEL_THREADS, vsm, stream, q));
    }
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" asa_err compress_cuda(const compress_params *p, cudaStream_t stream) {
    if (!p || p->n < 0 || p->B < 1 || p->S < 1)
        return ASA_EINVAL;
    if (p->n == 0)
        return ASA_OK;
    const int th = p->S >= 256 ? 256 : (p->S + 31) / 32 * 32;
    KC_CUDA_TRY(kc_launch(compress_kernel, (unsigned)p->n, th, 0, stream, *p));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" asa_err selstore_cuda(const selstore_params *p, cudaStream_t stream) {
    if (!p || p->n < 0 || p->G < 1)
        return ASA_EINVAL;
    if (p->n == 0)
        return ASA_OK;
    KC_CUDA_TRY(kc_launch(selstore_kernel, (unsigned)p->n, 64, 0, stream, *p));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

/* ---- host references --------------------------------------------------------- */

/* vfirst: attn_mma's ATTN_MMA_VFIRST (attn_mma_cuda.h): scores over key
 * dims [dg/2, dg) with the queries before qr's rope part, and the rope
 * part; values dims [0, dg/2), u rows of dg/2. */
static void ref_impl(const attn_params *p, bool vfirst) {
    const int G = p->c.G, dg = p->c.dg, dR = p->c.dR, hpg = p->H / G;
    const int e0 = vfirst ? dg / 2 : 0, dvo = vfirst ? dg / 2 : dg;
    const int64_t S = (int64_t)G * dg + dR;
    (void)S;
    for (int t = p->t_off; t < p->t_off + p->T; t++)
        for (int g = 0; g < G; g++) {
            const key_plan kp = make_plan(*p, t, g);
            double *sc = (double *)malloc(sizeof(double) * (size_t)(kp.nkeys > 0 ? kp.nkeys : 1));
            for (int h = g * hpg; h < (g + 1) * hpg; h++) {
                const float *qr = p->qr + (int64_t)t * p->ld_qr + (int64_t)h * p->qr_stride;
                /* query element e of the score dims (e0 <= e < dg) */
                const float *qt = vfirst ? qr - dg : p->qt + ((int64_t)t * p->H + h) * dg;
                double mxv = -INFINITY;
                for (int k = 0; k < kp.nkeys; k++) {
                    const int64_t b = kp.entry(k);
                    if (b < 0) {
                        sc[k] = -INFINITY;
                        continue;
                    }
                    double s = 0;
                    for (int e = e0; e < dg; e++)
                        s += (double)qt[e] * asa_bf16_to_f32(p->c.kv[b + g * dg + e]);
                    for (int e = 0; e < dR; e++)
                        s += (double)qr[e] * asa_bf16_to_f32(p->c.kv[b + G * dg + e]);
                    sc[k] = s * p->scale;
                    if (sc[k] > mxv)
                        mxv = sc[k];
                }
                double sum = 0;
                for (int k = 0; k < kp.nkeys; k++) {
                    sc[k] = sc[k] == -INFINITY ? 0 : exp(sc[k] - mxv);
                    sum += sc[k];
                }
                for (int e = 0; e < dvo; e++) {
                    double a = 0;
                    for (int k = 0; k < kp.nkeys; k++) {
                        const int64_t b = kp.entry(k);
                        if (b >= 0)
                            a += sc[k] * asa_bf16_to_f32(p->c.kv[b + g * dg + e]);
                    }
                    double v = sum > 0 ? a / sum : 0;
                    const int64_t o = ((int64_t)t * p->H + h) * dvo + e;
                    if (p->mode == ATTN_SLC) {
                        const float *gt = p->gate + (int64_t)t * p->ld_qr;
                        v = 1.0 / (1.0 + exp(-(double)gt[h])) * p->u_cmp[o] +
                            1.0 / (1.0 + exp(-(double)gt[p->H + h])) * v;
                    }
                    p->u[o] = (float)v;
                }
                if (p->mode == ATTN_CMP)
                    p->lse[(int64_t)t * p->H + h] =
                        sum > 0 ? (float)(mxv + log(sum)) : -INFINITY;
            }
            free(sc);
        }
}

extern "C" void attn_latent_ref(const attn_params *p) { ref_impl(p, false); }

extern "C" void attn_merge_ref(const attn_params *p) {
    const int H = p->H, dg = p->c.dg, ns = p->n_split;
    for (int tl = 0; tl < p->T; tl++)
        for (int h = 0; h < H; h++) {
            const int t = p->t_off + tl;
            const float *pt = p->part + ((int64_t)tl * H + h) * ns * (dg + 2);
            double M = -INFINITY, L = 0.0;
            for (int k = 0; k < ns; k++)
                if (pt[k * (dg + 2) + dg] > M)
                    M = pt[k * (dg + 2) + dg];
            for (int k = 0; k < ns; k++)
                if (pt[k * (dg + 2) + dg] != -INFINITY)
                    L += pt[k * (dg + 2) + dg + 1] * exp(pt[k * (dg + 2) + dg] - M);
            const int64_t o = ((int64_t)t * H + h) * dg;
            for (int e = 0; e < dg; e++) {
                double a = 0.0;
                for (int k = 0; k < ns; k++)
                    if (pt[k * (dg + 2) + dg] != -INFINITY)
                        a += pt[k * (dg + 2) + e] * exp(pt[k * (dg + 2) + dg] - M);
                double v = L > 0.0 ? a / L : 0.0;
                if (p->mode == ATTN_SLC) {
                    const float *gt = p->gate + (int64_t)t * p->ld_qr;
                    v = 1.0 / (1.0 + exp(-(double)gt[h])) * p->u_cmp[o + e] +
                        1.0 / (1.0 + exp(-(double)gt[H + h])) * v;
                }
                p->u[o + e] = (float)v;
            }
            if (p->mode == ATTN_CMP)
                p->lse[(int64_t)t * H + h] = L > 0.0 ? (float)(M + log(L)) : -INFINITY;
        }
}
extern "C" void attn_vfirst_ref(const attn_params *p) { ref_impl(p, true); }

extern "C" void select_blocks_ref(const select_params *p) {
    const int G = p->c.G, dg = p->c.dg, dR = p->c.dR, B = p->c.B, hpg = p->H / G;
    const int n = p->s.top_n;
    const int64_t S = (int64_t)G * dg + dR;
    for (int a = 0; a < p->n_anchors; a++)
        for (int g = 0; g < G; g++) {
            const int t = p->anchors[a];
            if (t < 0)
                continue;
            const int pos = p->tok_pos[t];
            const int nvis = (pos + 1) / B, cur = pos / B;
            const int32_t *tab = p->c.tab + p->c.seq_toff[p->tok_seq[t]];
            double *sc = (double *)malloc(sizeof(double) * (size_t)(cur + 1));
            int32_t chosen[64];
            int cnt = 0;
            for (int b = 0; b <= cur; b++) {
                const bool forced = sel_forced(b, cur, p->init_blocks, p->local_blocks);
                sc[b] = -1;
                if (forced) {
                    if (cnt < n)
                        chosen[cnt++] = b;
                    continue;
                }
                if (b >= nvis)
                    continue;
                const uint16_t *ent = p->c.kv + (int64_t)tab[b] * p->c.page_elems +
                                      p->c.layer_off + (int64_t)B * S;
                double sum = 0;
                for (int h = g * hpg; h < (g + 1) * hpg; h++) {
                    const float *qt = p->qt + ((int64_t)t * p->H + h) * dg;
                    const float *qr = p->qr + (int64_t)t * p->ld_qr + (int64_t)h * p->qr_stride;
                    double s = 0;
                    for (int e = 0; e < dg; e++)
                        s += (double)qt[e] * asa_bf16_to_f32(ent[g * dg + e]);
                    for (int e = 0; e < dR; e++)
                        s += (double)qr[e] * asa_bf16_to_f32(ent[G * dg + e]);
                    sum += exp(s * p->scale - p->lse[(int64_t)t * p->H + h]);
                }
                sc[b] = sum;
            }
            /* the kernels' score rows too (visible blocks; forced -1) */
            if (p->scores)
                for (int b = 0; b < nvis; b++)
                    p->scores[((int64_t)a * G + g) * p->nb_max + b] = (float)sc[b];
            while (cnt < n) {
                int best = -1;
                for (int b = 0; b <= cur; b++)
                    if (sc[b] >= 0 && (best < 0 || sc[b] > sc[best]))
                        best = b;
                if (best < 0)
                    break;
                chosen[cnt++] = best;
                sc[best] = -1;
            }
            for (int i = 1; i < cnt; i++) {
                int32_t v = chosen[i];
                int j = i - 1;
                for (; j >= 0 && chosen[j] > v; j--)
                    chosen[j + 1] = chosen[j];
                chosen[j + 1] = v;
            }
            const int64_t k = (int64_t)t * G + g;
            for (int i = 0; i < n; i++)
                p->s.tsel[k * n + i] = i < cnt ? chosen[i] : -1;
            p->s.tsel_cnt[k] = cnt;
            for (int j = 0; j < p->n_store; j++) {
                if (p->st_slot[j] < 0 || p->st_tok[j] != t)
                    continue;
                const int64_t dst = ((int64_t)p->st_slot[j] * p->s.Lg + p->s.ti) * G + g;
                for (int i = 0; i < n; i++)
                    p->s.slot_sel[dst * n + i] = i < cnt ? chosen[i] : -1;
                p->s.slot_cnt[dst] = cnt;
            }
            free(sc);
        }
}

extern "C" void compress_ref(const compress_params *p) {
    for (int i = 0; i < p->n; i++) {
        if (p->pages[i] < 0)
            continue;
        const int64_t base = (int64_t)p->pages[i] * p->page_elems + p->layer_off;
        for (int e = 0; e < p->S; e++) {
            float s = 0;
            for (int k = 0; k < p->B; k++)
                s += asa_bf16_to_f32(p->kv[base + (int64_t)k * p->S + e]);
            p->kv[base + (int64_t)p->B * p->S + e] = asa_f32_to_bf16(s / (float)p->B);
        }
    }
}
