/*
 * kernels/cuda/attn_keys.cuh - the keys of one token of an attention launch
 * (attn_latent_cuda.h's contract), shared by attn_latent.cu and
 * attn_mma.cu: the selection set it reads (get_set), the count of its keys
 * in the launch's mode and the element offset of each key's cache entry
 * (make_plan, key_plan::entry).
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

#endif /* ASA_ATTN_KEYS_CUH */
