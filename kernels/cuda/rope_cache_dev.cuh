/*
 * kernels/cuda/rope_cache_dev.cuh - the per-token work of rope_cache (contract
 * in rope_cache_cuda.h), shared by rope_cache.cu's kernel and the fused
 * rope + absorb launch of cb_ops.cu.  Any block size that is a multiple of
 * 32: the results do not depend on it (elementwise rotations; each latent
 * group's sum of squares is one warp's, lane-strided, then a butterfly).
 */
#ifndef ASA_ROPE_CACHE_DEV_CUH
#define ASA_ROPE_CACHE_DEV_CUH

#include "kcuda_int.cuh"
#include "rope_cache_cuda.h"

/* Latent values a lane keeps in registers (RC_LV x 32 >= dg; larger dg
 * read the slice twice from memory). */
constexpr int RC_LV = 8;

/* Whether warp g < G normalises latent group g alone with its slice in
 * registers (rope_cache_prep and rope_cache_token must agree). */
__device__ __forceinline__ bool rc_latent_regs(const rope_cache_params &p) {
    return p.dg <= 32 * RC_LV && (int)blockDim.x / 32 > p.G;
}

/* What a token's work reads that no earlier launch of the step writes:
 * the position, the cache entry's address (token positions, block tables
 * and pages are copied in before the step's first kernel) and, for the
 * warp that normalises latent group `warp`, its norm weights (constants).
 * Read before the PDL wait, so that their chains of dependent loads run
 * under the previous launch. */
struct rc_token {
    int t, pos;
    uint16_t *ent;
    float nw[RC_LV]; /* norm_w[g * dg + lane + 32 j] of this warp's group */
};

__device__ __forceinline__ rc_token rope_cache_prep(const rope_cache_params &p, int t) {
    rc_token k;
    k.t = t;
    k.pos = p.tok_pos[t];
    const int64_t S = (int64_t)p.G * p.dg + p.dR;
    k.ent = p.kv + (int64_t)p.tab[p.seq_toff[p.tok_seq[t]] + k.pos / p.B] * p.page_elems +
            p.layer_off + (int64_t)(k.pos % p.B) * S;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bool regs = rc_latent_regs(p);
#pragma unroll
    for (int j = 0; j < RC_LV; j++) {
        const int e = lane + 32 * j;
        k.nw[j] = regs && warp < p.G && e < p.dg ? p.norm_w[warp * p.dg + e] : 0.0f;
    }
    return k;
}

/* Whether rope_cache_add_half can leave the q nope columns out: float4
 * rows and a float4 split of each head's columns. */
__host__ __device__ __forceinline__ bool rope_cache_split_ok(const rope_cache_params &p) {
    return p.ld_qa % 4 == 0 && p.dh % 4 == 0 && p.dR % 4 == 0 && p.H * (p.dh + p.dR) <= p.ld_qa &&
           ((uintptr_t)p.qa & 15) == 0 && ((uintptr_t)p.qa2 & 15) == 0;
}

/* qa2: token t's row + its second half, in place (add2's sums), with 4
 * rounds of loads in flight before their stores (the compiler must assume
 * the two alias), float4 where the rows allow; then a block barrier.
 * skip_nope (rope_cache_split_ok): every column but the q heads' first dh
 * (those are another block's to add as it reads them). */
__device__ __forceinline__ void rope_cache_add_half(const rope_cache_params &p, int t,
                                                    bool skip_nope) {
    float *row = p.qa + (int64_t)t * p.ld_qa;
    const float *r2 = p.qa2 + (int64_t)t * p.ld_qa;
    const int nth = (int)blockDim.x;
    if (skip_nope || (p.ld_qa % 4 == 0 && (((uintptr_t)row | (uintptr_t)r2) & 15) == 0)) {
        float4 *r4 = (float4 *)row;
        const float4 *h4 = (const float4 *)r2;
        /* float4 j of the columns added: with skip_nope the heads' rope
         * columns, then everything after the heads */
        const int hs4 = (p.dh + p.dR) / 4, dh4 = p.dh / 4, dr4 = p.dR / 4;
        const int nq4 = p.H * hs4, nr4 = skip_nope ? p.H * dr4 : 0;
        const int n4 = skip_nope ? nr4 + (int)(p.ld_qa / 4) - nq4 : (int)(p.ld_qa / 4);
        auto col = [&](int j) {
            return !skip_nope ? j : j < nr4 ? j / dr4 * hs4 + dh4 + j % dr4 : nq4 + j - nr4;
        };
        kc_staged_copy<4, float4>(
            n4, nth,
            [&](int j) {
                const float4 a = r4[col(j)], b = h4[col(j)];
                return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
            },
            [&](int j, float4 v) { r4[col(j)] = v; });
    } else {
        kc_staged_copy<4>(
            (int)p.ld_qa, nth, [&](int i) { return row[i] + r2[i]; },
            [&](int i, float v) { row[i] = v; });
    }
    __syncthreads();
}

__device__ __forceinline__ void rope_cache_token(const rope_cache_params &p, const rc_token &k) {
    const int half = p.dR / 2, G = p.G, dg = p.dg, nth = (int)blockDim.x;
    const int t = k.t, pos = k.pos;
    float *row = p.qa + (int64_t)t * p.ld_qa;
    const float *a = row + (int64_t)p.H * (p.dh + p.dR);
    const float *cs = p.cosv + (int64_t)pos * half, *sn = p.sinv + (int64_t)pos * half;
    const int64_t S = (int64_t)G * dg + p.dR;
    uint16_t *ent = k.ent;
    /* With more warps than latent groups, warps [0, G) normalise the latent
     * slices (each slice read once, into registers, where dg allows) while
     * the others rotate: the two groups' loads overlap instead of
     * following each other.  The results do not depend on the split
     * (elementwise rotations; a group's sum is one warp's, the same lanes
     * and order either way). */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = nth / 32;
    const bool split = nw > G;
    const int r0 = split ? 32 * G : 0, nr = nth - r0; /* the rotating threads */
    /* RC_UNROLL pairs a thread in flight: every load of a round issued
     * before its first store (the stores may alias the loads as far as
     * the compiler knows: one pair at a time was a memory round trip
     * each).  (6 or 9, one round for asa-1.3b's 33 x 16 pairs: no faster
     * on the H200, 72 / 114 registers against 58) */
    constexpr int RC_UNROLL = 4;
    const int npair = (p.H + 1) * half;
    for (int i0 = (int)threadIdx.x - r0; i0 >= 0 && i0 < npair; i0 += RC_UNROLL * nr) {
        float xv[RC_UNROLL], yv[RC_UNROLL], cv[RC_UNROLL], sv[RC_UNROLL];
        float *vp[RC_UNROLL];
#pragma unroll
        for (int u = 0; u < RC_UNROLL; u++) {
            const int i = i0 + u * nr, h = i / half, k = i - h * half;
            vp[u] = nullptr;
            if (i < npair) {
                vp[u] = h < p.H ? row + (int64_t)h * (p.dh + p.dR) + p.dh + k
                                : (float *)a + (int64_t)G * dg + k;
                cv[u] = cs[k];
                sv[u] = sn[k];
                xv[u] = vp[u][0];
                yv[u] = vp[u][half];
            }
        }
#pragma unroll
        for (int u = 0; u < RC_UNROLL; u++) {
            const int i = i0 + u * nr, h = i / half, k = i - h * half;
            if (i >= npair)
                continue;
            const float x = xv[u], y = yv[u], c = cv[u], s = sv[u];
            if (h < p.H) {
                vp[u][0] = x * c - y * s;
                vp[u][half] = x * s + y * c;
            } else {
                ent[G * dg + k] = kc_f32_bf16(x * c - y * s);
                ent[G * dg + k + half] = kc_f32_bf16(x * s + y * c);
            }
        }
    }
    if (rc_latent_regs(p)) { /* warp g alone, its slice in registers */
        if (warp < G) {
            const float *x = a + (int64_t)warp * dg;
            float xv[RC_LV], ss = 0.0f;
#pragma unroll
            for (int j = 0; j < RC_LV; j++) {
                const int e = lane + 32 * j;
                xv[j] = e < dg ? x[e] : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < RC_LV; j++)
                if (lane + 32 * j < dg)
                    ss = fmaf(xv[j], xv[j], ss);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                ss += __shfl_xor_sync(0xffffffffu, ss, o);
            const float r = 1.0f / sqrtf(ss / (float)dg + p.eps);
#pragma unroll
            for (int j = 0; j < RC_LV; j++) {
                const int e = lane + 32 * j;
                if (e < dg)
                    ent[warp * dg + e] = kc_f32_bf16((xv[j] * r) * k.nw[j]);
            }
        }
    } else {
        for (int g = warp; g < G; g += split ? G : nw) { /* split: warp g alone */
            const float *x = a + (int64_t)g * dg;
            float ss = 0.0f;
            for (int e = lane; e < dg; e += 32)
                ss = fmaf(x[e], x[e], ss);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                ss += __shfl_xor_sync(0xffffffffu, ss, o);
            const float r = 1.0f / sqrtf(ss / (float)dg + p.eps);
            for (int e = lane; e < dg; e += 32)
                ent[g * dg + e] = kc_f32_bf16((x[e] * r) * p.norm_w[g * dg + e]);
        }
    }
    if (p.compress && (pos + 1) % p.B == 0) { /* uniform in the block */
        /* the entry just written is the block's last: its compressed entry
         * as compress_kernel computes it (the writes above are visible to
         * the block after the barrier) */
        __syncthreads();
        const uint16_t *base = ent - (int64_t)(p.B - 1) * S;
        uint16_t *cmp = ent + S;
        for (int e = threadIdx.x; e < S; e += nth) {
            float s = 0.0f;
            for (int k = 0; k < p.B; k++)
                s += kc_bf16_f32(base[(int64_t)k * S + e]);
            cmp[e] = kc_f32_bf16(s / (float)p.B);
        }
    }
}

#endif /* ASA_ROPE_CACHE_DEV_CUH */
