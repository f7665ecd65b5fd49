/*
 * kernels/cuda/attn_keys.cuh - the keys of one token of an attention launch
 * (attn_latent_cuda.h's contract), shared by attn_latent.cu and
 * attn_mma.cu: the selection set it reads (get_set), the count of its keys
 * in the launch's mode and the element offset of each key's cache entry
 * (make_plan, key_plan::entry); and the merge of a row's split partials
 * (merge_row, merge_row_store).
 */
#ifndef ASA_ATTN_KEYS_CUH
#define ASA_ATTN_KEYS_CUH

#include <stdint.h>

#include <cuda_runtime.h>

#include "attn_latent_cuda.h"

struct set_view {
    const int32_t *set;
    int cnt;
};

__host__ __device__ inline set_view get_set(const attn_sets &s, int t, int G, int g) {
    set_view v;
    const int src = s.sel_src[t];
    if (src >= 0) {
        const int64_t k = (int64_t)src * G + g;
        v.set = s.tsel + k * s.top_n;
        v.cnt = s.tsel_cnt[k];
    } else {
        const int64_t k = ((int64_t)(-src - 1) * s.Lg + s.ti) * G + g;
        v.set = s.slot_sel + k * s.top_n;
        v.cnt = s.slot_cnt[k];
    }
    return v;
}

/* Keys of token t in mode m: count, and the element offset of key k's entry
 * (-1 for a masked key). */
struct key_plan {
    int mode, pos, j0, nkeys, B;
    int64_t S, page_elems, layer_off;
    const int32_t *tab;
    set_view sv;

    __host__ __device__ int64_t entry(int k) const {
        if (mode == ATTN_LOCAL) {
            const int j = j0 + k;
            return (int64_t)tab[j / B] * page_elems + layer_off + (int64_t)(j % B) * S;
        }
        if (mode == ATTN_CMP)
            return (int64_t)tab[k] * page_elems + layer_off + (int64_t)B * S;
        const int b = sv.set[k / B], j = b * B + k % B;
        if (j > pos)
            return -1;
        return (int64_t)tab[b] * page_elems + layer_off + (int64_t)(k % B) * S;
    }
};

__host__ __device__ inline key_plan make_plan(const attn_params &p, int t, int g) {
    key_plan kp;
    kp.mode = p.mode;
    kp.pos = p.tok_pos[t];
    kp.B = p.c.B;
    kp.S = (int64_t)p.c.G * p.c.dg + p.c.dR;
    kp.page_elems = p.c.page_elems;
    kp.layer_off = p.c.layer_off;
    kp.tab = p.c.tab + p.c.seq_toff[p.tok_seq[t]];
    kp.j0 = 0;
    kp.sv.set = nullptr;
    kp.sv.cnt = 0;
    if (p.mode == ATTN_LOCAL) {
        kp.j0 = kp.pos - p.window + 1 > 0 ? kp.pos - p.window + 1 : 0;
        kp.nkeys = kp.pos - kp.j0 + 1;
    } else if (p.mode == ATTN_CMP) {
        kp.nkeys = (kp.pos + 1) / kp.B;
    } else {
        kp.sv = get_set(p.s, t, p.c.G, g);
        kp.nkeys = kp.sv.cnt * kp.B;
    }
    return kp;
}

/* Whether block b is forced into a choice at cur (ASA-SPEC 3.3: b <
 * init_blocks or cur - local_blocks < b): its score row holds -1. */
__host__ __device__ inline bool sel_forced(int b, int cur, int init_blocks, int local_blocks) {
    return b < init_blocks || b > cur - local_blocks;
}

/* The selected branch's gate: 1 / (1 + e^-z) (the merges, attn_latent's
 * and attn_mma's epilogues). */
__device__ __forceinline__ float attn_sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

/* One (token, head) row's merge of at most 32 split partials by a warp
 * (attn_merge_warp_kernel, attn_dec_kernel's in-launch merge): lane s holds
 * split s's scaled maximum m and sum l (lanes >= ns: -inf and 0); load(s,
 * e) returns element e < dg of split s's accumulators, read by lane
 * e % 32.  The elements of splits s0 .. s0 + S - 1 are in flight together,
 * the first S with the maxima's reduction.  Out: the row maximum M, in
 * every lane the sum L = sum_s l_s exp(m_s - M) in ascending split order,
 * and a[k] = sum_s x_s[k] exp(m_s - M), ascending too (splits with m_s =
 * -inf skipped): the same expressions in the same order wherever it runs,
 * so both merges give the same bits. */
template <int S, int E, typename Load>
__device__ __forceinline__ void merge_row(float m, float l, int ns, int dg, Load load, float &M,
                                          float &L, float (&a)[E]) {
    const int lane = threadIdx.x & 31;
    float x[S][E];
    auto fetch = [&](int s0) {
#pragma unroll
        for (int j = 0; j < S; j++)
#pragma unroll
            for (int k = 0; k < E; k++) {
                const int e = lane + 32 * k;
                x[j][k] = s0 + j < ns && e < dg ? load(s0 + j, e) : 0.0f;
            }
    };
    fetch(0);
    M = m;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    const float w = m != -INFINITY ? expf(m - M) : 0.0f;
    L = 0.0f;
    for (int s = 0; s < ns; s++) {
        const float ms = __shfl_sync(0xffffffffu, m, s), ls = __shfl_sync(0xffffffffu, l, s),
                    ws = __shfl_sync(0xffffffffu, w, s);
        if (ms != -INFINITY)
            L += ls * ws;
    }
#pragma unroll
    for (int k = 0; k < E; k++)
        a[k] = 0.0f;
    for (int s0 = 0; s0 < ns; s0 += S) {
        if (s0)
            fetch(s0);
#pragma unroll
        for (int j = 0; j < S; j++) {
            const float ms = __shfl_sync(0xffffffffu, m, (s0 + j) & 31),
                        ws = __shfl_sync(0xffffffffu, w, (s0 + j) & 31);
            if (s0 + j < ns && ms != -INFINITY)
#pragma unroll
                for (int k = 0; k < E; k++)
                    a[k] += x[j][k] * ws;
        }
    }
}

/* The lse of a merged row: maximum M (scaled), sum L. */
__device__ __forceinline__ float merge_row_lse(float M, float L) {
    return L > 0.0f ? M + logf(L) : -INFINITY;
}

/* merge_row's result out: u[t][hh] = a / L (0 without keys; ATTN_SLC:
 * sigmoid(gate) u_cmp + sigmoid(gate') of it), lse[t][hh] = M + log L for
 * ATTN_CMP. */
template <int E>
__device__ __forceinline__ void merge_row_store(const attn_params &p, int t, int hh, float M,
                                                float L, const float (&a)[E]) {
    const int lane = threadIdx.x & 31, dg = p.c.dg;
    const int64_t o0 = ((int64_t)t * p.H + hh) * dg;
#pragma unroll
    for (int k = 0; k < E; k++) {
        const int e = lane + 32 * k;
        if (e >= dg)
            break;
        float v = L > 0.0f ? a[k] / L : 0.0f;
        if (p.mode == ATTN_SLC) {
            const float *gt = p.gate + (int64_t)t * p.ld_qr;
            v = attn_sigmoid(gt[hh]) * p.u_cmp[o0 + e] + attn_sigmoid(gt[p.H + hh]) * v;
        }
        p.u[o0 + e] = v;
    }
    if (p.mode == ATTN_CMP && lane == 0)
        p.lse[(int64_t)t * p.H + hh] = merge_row_lse(M, L);
}

#endif /* ASA_ATTN_KEYS_CUH */
