/*
 * kernels/cuda/attn_mma.cu - latent attention on tensor cores for prefill
 * (contract in attn_mma_cuda.h; fragment layouts in mma_sm80.cuh).
 *
 * Per key tile of MM_KT keys: the first MM_KT threads plan the tile (entry
 * offset, position and token mask of each key), all threads stage it into
 * shared memory with 16-byte loads, then every warp computes its 16 rows x
 * MM_KT scores (ldmatrix of K, Q fragments in registers), masks per row,
 * updates its running max / sum and rescales its accumulators (16 rows x
 * dg in registers), and adds P V (ldmatrix.trans of the same tile).  The
 * softmax runs on the base-2 scale (scores times scale * log2(e), one
 * ex2.approx.ftz a probability; maxima converted back for the lse and the
 * split partials).  Each thread stages one fixed 16-byte column of every
 * (MM_THREADS / columns)-th key of a tile (one plan load a copy).  A
 * tile with all 16-key chunks live for the warp takes a branch-free copy
 * of the MMA loops; one whose keys are all visible to all the warp's rows
 * skips the masks; the rescale is skipped while the row maxima hold.  The
 * tile's row stride (a multiple of 16 plus 8 elements) puts the 8 rows of
 * each 8x8 ldmatrix on distinct bank quads.
 *
 * Decode (ATTN_MMA_TOKEN_ROWS) on the asa-1.3b shapes runs attn_dec_kernel
 * instead: independent warps, one a (token, group, 16 heads, key split).
 */
#include "attn_mma_cuda.h"

#include <math.h>

#include <type_traits>

#include "attn_keys.cuh"
#include "kcuda_int.cuh"
#include "mma_sm80.cuh"
#ifdef __CUDACC__
#include <cooperative_groups.h>
#endif

namespace {

constexpr int MM_THREADS = 128;
constexpr int MM_ROWS = 64;   /* (token, head) rows per block: 16 per warp */
constexpr int MM_KT = 64;     /* keys per tile (the mask check reads 2 keys per lane) */
constexpr int MM_TOK = 64;    /* tokens per block at most (one per row) */
constexpr int MM_LIST = 512;  /* ATTN_SLC: distinct (sequence, block) per block */
constexpr float MM_LOG2E = 1.4426950408889634f;

/* The lse of a finished row: running maximum m (unscaled), sum l. */
__device__ __forceinline__ float mm_row_lse(const attn_params &p, float m, float l) {
    return l > 0.0f ? m * p.scale + logf(l) : -INFINITY;
}

/* A finished row (token t, head hh of H) of the unsplit epilogue: its
 * normaliser, the selected branch's gates (slc: ATTN_SLC; else 0) and, for
 * ATTN_CMP, its lse (written by the quad's first lane). */
__device__ __forceinline__ void mm_row_finish(const attn_params &p, bool slc, int H, int t,
                                              int hh, float m, float l, int tq, float &inv,
                                              float &ga, float &gb) {
    inv = l > 0.0f ? 1.0f / l : 0.0f;
    ga = gb = 0.0f;
    if (slc) {
        const float *gt = p.gate + (int64_t)t * p.ld_qr;
        ga = attn_sigmoid(gt[hh]);
        gb = attn_sigmoid(gt[H + hh]);
    }
    if (p.mode == ATTN_CMP && tq == 0)
        p.lse[(int64_t)t * H + hh] = mm_row_lse(p, m, l);
}

/* The online softmax's maximum step for a warp's rows gq and gq + 8: mt,
 * this tile's row maxima over the lane's scores, reduced over the quad;
 * the new running maxima, the rescale of the running sums and (unless no
 * maximum moved, warp-uniform, and !always) of the accumulators; mref: the
 * maxima on the base-2 scale for the exponentials. */
template <int NP>
__device__ __forceinline__ void mm_softmax_max(float (&mt)[2], float (&mrow)[2],
                                               float (&lrow)[2], float (&acc)[2 * NP][4],
                                               float sc2, bool always, float (&mref)[2]) {
    float corr[2];
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        mt[rr] = fmaxf(mt[rr], __shfl_xor_sync(0xffffffffu, mt[rr], 1));
        mt[rr] = fmaxf(mt[rr], __shfl_xor_sync(0xffffffffu, mt[rr], 2));
        const float mn = fmaxf(mrow[rr], mt[rr]);
        /* max unchanged (also -inf: no -inf - -inf): exactly 1 */
        corr[rr] = mn == mrow[rr] ? 1.0f : mma_ex2((mrow[rr] - mn) * sc2);
        mref[rr] = mn == -INFINITY ? 0.0f : mn * sc2;
        mrow[rr] = mn;
        lrow[rr] *= corr[rr];
    }
    /* once the row maxima settle most tiles leave them unchanged: skip
     * the 2 x dg multiplications by 1 */
    if (always || __any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f)) {
#pragma unroll
        for (int n = 0; n < 2 * NP; n++) {
            acc[n][0] *= corr[0];
            acc[n][1] *= corr[0];
            acc[n][2] *= corr[1];
            acc[n][3] *= corr[1];
        }
    }
}

/* KS: 16-wide steps of the score dimension, NP: 16-wide pairs of the value
 * dimension (compile-time maxima; EXACT: the shape is exactly that, else
 * ks_rt / np_rt give it).  QS: hi + lo query parts (the lo part in shared
 * memory after the key tiles, read by ldmatrix per k-step).  FAST: the
 * per-tile fast paths (same results; off: ATTN_MMA_NOFAST).  KS0: the
 * score's first 16-wide step (ATTN_MMA_VFIRST: the value half of each
 * entry is skipped; NP then covers only that half). */
template <int KS, int NP, bool EXACT, bool QS, bool FAST, int KS0 = 0>
__global__ void __launch_bounds__(MM_THREADS, KS - KS0 <= 8 && NP <= 6 ? 3 : 1) /* <= 168 registers */
    attn_mma_kernel(const attn_params p, int ks_rt, int np_rt, int rpb) {
    extern __shared__ float mm_sm[]; /* [2][MM_KT][Ep] bf16 key tiles */
    __shared__ int64_t kbase[3][MM_KT]; /* tile plans, three in flight */
    __shared__ uint64_t kmask[3][MM_KT];
    __shared__ int kpos[3][MM_KT];
    __shared__ int tseq[MM_TOK], tlo[MM_TOK], thi[MM_TOK], ttoff[MM_TOK], tcnt[MM_TOK];
    __shared__ const int32_t *tset[MM_TOK];
    __shared__ int sg_toff[MM_TOK], sg_lo[MM_TOK], sg_hi[MM_TOK];
    __shared__ int q_t[MM_ROWS], q_h[MM_ROWS]; /* each row's token and head */
    __shared__ uint64_t sg_mask[MM_TOK];
    __shared__ int ent_b[MM_LIST], ls_b[MM_LIST], ls_page[MM_LIST];
    __shared__ uint64_t ent_mask[MM_LIST], ls_mask[MM_LIST];
    __shared__ int n_seg, sl_same;
    __shared__ uint64_t w_bits[MM_THREADS / 32]; /* per warp: its rows' tokens, */
    __shared__ int w_lo[MM_THREADS / 32], w_hi[MM_THREADS / 32]; /* common key range */

    const int ksn = EXACT ? KS : ks_rt, npn = EXACT ? NP : np_rt;
    /* EXACT: the launcher guarantees dg = 16 NP (VFIRST: 32 NP, the value
     * half first) and E = 16 KS, so that every column bound below is a
     * constant */
    const int dg = EXACT ? (KS0 > 0 ? 32 * NP : 16 * NP) : p.c.dg;
    const int dR = EXACT ? 16 * KS - dg : p.c.dR;
    const int G = p.c.G, E = dg + dR, B = p.c.B, H = p.H;
    const int Ep = ksn * 16 + 8;
    const int hpg = H / G, g = blockIdx.y;
    /* rows per block: MM_ROWS, or (ATTN_MMA_TOKEN_ROWS) hpg: one token's
     * heads, the warps past them idle; with n_split > 1 (token rows only)
     * block x = token * n_split + split, the split's keys only, partials
     * out */
    const int nsp = p.n_split > 1 ? p.n_split : 1, spl = (int)blockIdx.x % nsp;
    const int nrows = p.T * hpg, i0 = (int)blockIdx.x / nsp * rpb;
    const int ta = i0 / hpg, ntok = min(nrows - 1, i0 + rpb - 1) / hpg - ta + 1;
    const int64_t S = (int64_t)G * dg + dR, pe = p.c.page_elems, lo_off = p.c.layer_off;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const bool slc = p.mode == ATTN_SLC;

    /* the block's tokens: sequence, table offset and key range [lo, hi] in
     * the mode's key coordinate (position; ATTN_CMP: block index) */
    for (int i = tid; i < ntok; i += MM_THREADS) {
        const int t = p.t_off + ta + i, pos = p.tok_pos[t], sq = p.tok_seq[t];
        tseq[i] = sq;
        ttoff[i] = p.c.seq_toff[sq];
        tlo[i] = p.mode == ATTN_LOCAL ? max(0, pos - p.window + 1) : 0;
        thi[i] = p.mode == ATTN_CMP ? (pos + 1) / B - 1 : pos;
        if (slc) {
            const set_view sv = get_set(p.s, t, G, g);
            tset[i] = sv.set;
            tcnt[i] = sv.cnt;
        }
    }
    uint16_t *const kts = (uint16_t *)mm_sm;
    /* pad columns [E, Ep) stay zero (staging writes [0, E)) */
    for (int i = tid; i < 2 * MM_KT * (Ep - E); i += MM_THREADS)
        kts[(i / (Ep - E)) * Ep + E + i % (Ep - E)] = 0;
    __syncthreads();
    /* ATTN_SLC: the key range over a list of nl blocks (this split's part) */
    auto slc_range = [&](int nl) {
        sg_lo[0] = nsp > 1 ? spl * p.split_keys : 0;
        sg_hi[0] = min(nl * B - 1, nsp > 1 ? sg_lo[0] + p.split_keys - 1 : nl * B - 1);
        n_seg = sg_lo[0] <= sg_hi[0];
    };
    /* key segments: one per sequence (union of its tokens' ranges), or for
     * ATTN_SLC one over the list of distinct (sequence, block) pairs of the
     * tokens' sets, in the order of first appearance */
    if (!slc) {
        /* the usual case, every token with keys in one sequence, by warp 0
         * (up to 64 tokens: two a lane); else thread 0 walks the tokens (a
         * prefill's block of 64 tokens took ~25 % of a local layer's
         * expanded attention serially) */
        bool same = false;
        int lo = 0x7fffffff, hi = -1, off = 0;
        uint64_t mk = 0;
        if (warp == 0) {
            bool live[2];
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const int i = lane + 32 * u;
                live[u] = i < ntok && thi[i] >= tlo[i];
                if (live[u]) {
                    lo = min(lo, tlo[i]);
                    hi = max(hi, thi[i]);
                }
            }
            const unsigned b0 = __ballot_sync(0xffffffffu, live[0]),
                           b1 = __ballot_sync(0xffffffffu, live[1]);
            mk = (uint64_t)b0 | (uint64_t)b1 << 32;
            off = ttoff[mk ? __ffsll((long long)mk) - 1 : 0];
            same = __all_sync(0xffffffffu, (!live[0] || ttoff[lane] == off) &&
                                               (!live[1] || ttoff[lane + 32] == off));
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, o));
                hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, o));
            }
        }
        if (tid == 0) {
            int ns = 0;
            if (same) {
                ns = mk != 0;
                sg_toff[0] = off;
                sg_lo[0] = lo;
                sg_hi[0] = hi;
                sg_mask[0] = mk;
            } else {
                for (int i = 0; i < ntok; i++) {
                    if (thi[i] < tlo[i])
                        continue;
                    int k = 0;
                    while (k < ns && sg_toff[k] != ttoff[i])
                        k++;
                    if (k == ns) {
                        sg_toff[k] = ttoff[i];
                        sg_lo[k] = tlo[i];
                        sg_hi[k] = thi[i];
                        sg_mask[k] = 0;
                        ns++;
                    }
                    sg_lo[k] = min(sg_lo[k], tlo[i]);
                    sg_hi[k] = max(sg_hi[k], thi[i]);
                    sg_mask[k] |= 1ull << i;
                }
            }
            if (nsp > 1 && ns == 1) { /* token rows: this split's part */
                const int a = sg_lo[0] + spl * p.split_keys;
                sg_hi[0] = min(sg_hi[0], a + p.split_keys - 1);
                sg_lo[0] = a;
                ns = a <= sg_hi[0];
            }
            n_seg = ns;
        }
    } else {
        const int tn = p.s.top_n, ne = ntok * tn; /* ne <= MM_LIST (launcher) */
        /* the usual prefill block: all its tokens use one set (one anchor
         * of one sequence): the list is that set in its order, each block
         * with the tokens that see a key of it, by warp 0 (the general
         * pass below is quadratic in the entries) */
        if (warp == 0) {
            bool ok = true;
            for (int i = lane; i < ntok; i += 32)
                ok = ok && tset[i] == tset[0] && tcnt[i] == tcnt[0] && tseq[i] == tseq[0];
            const bool same = __all_sync(0xffffffffu, ok);
            if (same) {
                const int32_t *set = tset[0];
                const int cnt = tcnt[0];
                int nl = 0;
                for (int k0 = 0; k0 < cnt; k0 += 32) {
                    const int k = k0 + lane, b = k < cnt ? set[k] : -1;
                    uint64_t mk = 0;
                    if (b >= 0)
                        for (int i = 0; i < ntok; i++)
                            if (b * B <= thi[i])
                                mk |= 1ull << i;
                    const unsigned bal = __ballot_sync(0xffffffffu, mk != 0);
                    if (mk) {
                        const int u = nl + __popc(bal & ((1u << lane) - 1u));
                        ls_b[u] = b;
                        ls_mask[u] = mk;
                        ls_page[u] = p.c.tab[ttoff[0] + b];
                    }
                    nl += __popc(bal);
                }
                if (lane == 0)
                    slc_range(nl);
            }
            if (lane == 0)
                sl_same = same;
        }
        __syncthreads();
        if (!sl_same) {
            for (int e = tid; e < ne; e += MM_THREADS) {
                const int i = e / tn, k = e % tn;
                int b = k < tcnt[i] ? tset[i][k] : -1;
                if (b * B > thi[i])
                    b = -1; /* no visible key */
                ent_b[e] = b;
            }
            __syncthreads();
            /* the first entry of each pair collects the pair's tokens */
            for (int e = tid; e < ne; e += MM_THREADS) {
                const int b = ent_b[e], sq = tseq[e / tn];
                uint64_t mk = 0;
                if (b >= 0) {
                    bool first = true;
                    for (int f = 0; f < e && first; f++)
                        first = !(ent_b[f] == b && tseq[f / tn] == sq);
                    if (first)
                        for (int f = e; f < ne; f++)
                            if (ent_b[f] == b && tseq[f / tn] == sq)
                                mk |= 1ull << (f / tn);
                }
                ent_mask[e] = mk;
            }
            __syncthreads();
            for (int e = tid; e < ne; e += MM_THREADS)
                if (ent_mask[e]) {
                    int u = 0;
                    for (int f = 0; f < e; f++)
                        u += ent_mask[f] != 0;
                    ls_b[u] = ent_b[e];
                    ls_mask[u] = ent_mask[e];
                    ls_page[u] = p.c.tab[ttoff[e / tn] + ent_b[e]];
                }
            if (tid == 0) {
                int nl = 0;
                for (int e = 0; e < ne; e++)
                    nl += ent_mask[e] != 0;
                slc_range(nl);
            }
        }
    }

    /* each row's token and head; this lane's two rows (gq, gq + 8 of the
     * warp's 16) */
    for (int r = tid; r < MM_ROWS; r += MM_THREADS) {
        const int gr = i0 + r, tr = gr / hpg;
        q_t[r] = p.t_off + tr;
        q_h[r] = g * hpg + (gr - tr * hpg);
    }
    __syncthreads();
    uint64_t rbit[2];
    int rlo[2], rhi[2], rt[2], rh[2];
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        const int j = warp * 16 + gq + 8 * rr; /* the row in the block */
        rbit[rr] = 0;
        rlo[rr] = 1;
        rhi[rr] = 0;
        rt[rr] = -1;
        rh[rr] = 0;
        if (i0 + j < nrows && j < rpb) {
            const int ti = q_t[j] - p.t_off - ta;
            rbit[rr] = 1ull << ti;
            rt[rr] = q_t[j];
            rh[rr] = q_h[j];
            rlo[rr] = tlo[ti];
            rhi[rr] = thi[ti];
        }
    }
    /* the warp's key range (windows, compressed entries: key index =
     * position resp. block): 16-key chunks outside it are skipped */
    int wlo = min(rlo[0], rlo[1]), whi = max(rhi[0], rhi[1]);
    if (rt[0] < 0) {
        wlo = rlo[1];
        whi = rhi[1];
    }
    if (rt[1] < 0) {
        wlo = rt[0] < 0 ? 0x7fffffff : rlo[0];
        whi = rt[0] < 0 ? -1 : rhi[0];
    }
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        wlo = min(wlo, __shfl_xor_sync(0xffffffffu, wlo, o));
        whi = max(whi, __shfl_xor_sync(0xffffffffu, whi, o));
    }
    if (slc && wlo <= whi) { /* list coordinates: no skipping (a warp
                                  without rows keeps its empty range) */
        wlo = -0x7fffffff;
        whi = 0x7fffffff;
    }
    /* the warp's tokens and the key range common to all its rows: a tile
     * whose keys all fall in it needs no per-score mask */
    {
        uint64_t wbits = rbit[0] | rbit[1];
        int clo = rt[0] < 0 ? (rt[1] < 0 ? 0x7fffffff : rlo[1])
                            : (rt[1] < 0 ? rlo[0] : max(rlo[0], rlo[1]));
        int chi = rt[0] < 0 ? (rt[1] < 0 ? -1 : rhi[1])
                            : (rt[1] < 0 ? rhi[0] : min(rhi[0], rhi[1]));
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            wbits |= __shfl_xor_sync(0xffffffffu, wbits, o);
            clo = max(clo, __shfl_xor_sync(0xffffffffu, clo, o));
            chi = min(chi, __shfl_xor_sync(0xffffffffu, chi, o));
        }
        if (lane == 0) { /* in shared memory: no registers in the loop */
            w_bits[warp] = wbits;
            w_lo[warp] = clo;
            w_hi[warp] = chi;
        }
        __syncwarp();
    }

    /* query fragments (A operand): [q~ | qR | 0] of each row, staged as
     * bf16 into shared memory (qhi; with QS the bf16 rounding error too,
     * qlo: a second operand read per k-step), rows x Ep (the key tiles'
     * stride), then read by ldmatrix.  Each warp stages its own 16 rows
     * (only it reads them): one row at a time, a lane per 16-byte column,
     * the row's addresses warp-uniform, QR rows' loads in flight at once.
     * (Per-element index arithmetic made this ~20 % of a compressed or
     * selected launch's instructions; each lane loading its own fragment
     * elements made one L2 round trip per element pair.) */
    uint16_t *const qlo = kts + 2 * MM_KT * Ep;
    /* qhi borrows key buffer 1 (MM_KT = MM_ROWS rows; its pad columns are
     * written as zeros here too): the first copies into that buffer are
     * issued after the barrier that follows the tile plans below, when
     * every warp holds its fragments */
    static_assert(MM_KT >= MM_ROWS, "qhi in a key buffer");
    uint16_t *const qhi = kts + MM_KT * Ep;
    {
        const int nr = min(rpb, nrows - i0); /* rows of this block */
        const bool qvec = dg % 4 == 0 && dR % 4 == 0 && ((uintptr_t)p.qt & 15) == 0 &&
                          ((uintptr_t)p.qr & 15) == 0 && p.ld_qr % 4 == 0 && p.qr_stride % 4 == 0;
        constexpr int QR = 4;                            /* rows in flight */
        constexpr int QC = ((KS * 16 + 8) / 4 + 31) / 32; /* 16-byte columns a lane */
        const int c0 = 16 * KS0;                         /* (VFIRST: [0, c0) never read) */
        if (warp * 16 < nr) {
            for (int r0 = warp * 16; r0 < warp * 16 + 16; r0 += QR) {
                float4 v[QR][QC];
#pragma unroll
                for (int u = 0; u < QR; u++) {
                    const int r = r0 + u;
                    const bool rok = r < nr;
                    const int t = rok ? q_t[r] : 0, hh = rok ? q_h[r] : 0;
                    /* VFIRST: columns [dg/2, dg) are the dg/2 elements
                     * before the rope part in qr */
                    const float *qtr = p.qt + ((int64_t)t * H + hh) * dg;
                    const float *qrr = p.qr + (int64_t)t * p.ld_qr + (int64_t)hh * p.qr_stride;
#pragma unroll
                    for (int w = 0; w < QC; w++) {
                        const int c = 4 * (lane + 32 * w);
                        v[u][w] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                        if (!rok || c < c0 || c >= E)
                            continue;
                        if (qvec) {
                            v[u][w] = c < dg && KS0 == 0 ? *(const float4 *)(qtr + c)
                                                         : *(const float4 *)(qrr + (c - dg));
                        } else {
                            float e4[4];
#pragma unroll
                            for (int e = 0; e < 4; e++) {
                                const int cc = c + e;
                                e4[e] = cc < dg && KS0 == 0 ? qtr[cc] : cc < E ? qrr[cc - dg] : 0.0f;
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
                        if (c < c0 || c >= Ep)
                            continue;
                        mma_store_hilo4<QS>(qhi + (r0 + u) * Ep + c, qlo + (r0 + u) * Ep + c,
                                            v[u][w]);
                    }
            }
        }
    }
    __syncwarp(); /* a warp reads only the rows it staged */
    uint32_t qf[KS][4];
    {
        const bool wrows = rt[0] >= 0 || rt[1] >= 0; /* warp-uniform: rows 16 w .. */
        const bool anyrow = __any_sync(0xffffffffu, wrows);
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
            if (ks >= KS0 && ks < ksn && anyrow) /* matrices (rows +0/+8, cols +0/+8) */
                mma_ldsm_x4<false>(qf[ks], qhi + (warp * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * Ep +
                                               16 * ks + 8 * (lane >> 4));
            else
                qf[ks][0] = qf[ks][1] = qf[ks][2] = qf[ks][3] = 0u;
        }
    }

    float acc[2 * NP][4];
#pragma unroll
    for (int n = 0; n < 2 * NP; n++)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    /* running maxima of the raw scores s (scale > 0); probabilities
     * 2^(s * sc2 - max * sc2), sc2 = scale * log2(e) */
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
    const float sc2 = p.scale * MM_LOG2E;
    /* 16-byte loads when every entry slice is 16-byte aligned */
    const bool vec = dg % 8 == 0 && dR % 8 == 0 && pe % 8 == 0 && lo_off % 8 == 0 &&
                     ((uintptr_t)p.c.kv & 15) == 0;
    const int mi = lane >> 3, mr = lane & 7;
    const int nseg = n_seg;

    /* tile plan (threads < MM_KT) of key k0 + tid of segment sgi, in two
     * halves: the page (a global load for the windows and compressed
     * entries, issued before a tile's compute), then the entry offset,
     * position and token mask into plan buffer pb (after it) */
    /* key / B and key % B: shifts for the usual power-of-two page size */
    const int bsh = (B & (B - 1)) == 0 ? __ffs(B) - 1 : -1;
    auto div_b = [&](int k) { return bsh >= 0 ? k >> bsh : k / B; };
    auto plan_page = [&](int sgi, int k0) -> int {
        const int kk = k0 + tid;
        if (tid >= MM_KT || sgi >= nseg || kk > sg_hi[sgi])
            return -1;
        if (p.mode == ATTN_LOCAL)
            return p.c.tab[sg_toff[sgi] + div_b(kk)];
        if (p.mode == ATTN_CMP)
            return p.c.tab[sg_toff[sgi] + kk];
        return ls_page[div_b(kk)];
    };
    auto plan_store = [&](int pb, int sgi, int k0, int page) {
        if (tid >= MM_KT)
            return;
        const int kk = k0 + tid;
        int64_t b = -1;
        uint64_t mk = 0;
        int kp = 0;
        if (page >= 0) {
            if (p.mode == ATTN_LOCAL) {
                kp = kk;
                mk = sg_mask[sgi];
                b = (int64_t)page * pe + lo_off + (int64_t)(kk - div_b(kk) * B) * S;
            } else if (p.mode == ATTN_CMP) {
                kp = kk;
                mk = sg_mask[sgi];
                b = (int64_t)page * pe + lo_off + (int64_t)B * S;
            } else {
                const int u = div_b(kk), off = kk - u * B;
                kp = ls_b[u] * B + off;
                mk = ls_mask[u];
                b = (int64_t)page * pe + lo_off + (int64_t)off * S;
            }
        }
        kbase[pb][tid] = b;
        kmask[pb][tid] = mk;
        kpos[pb][tid] = kp;
    };
    /* the tile after (sgi, k0): segment by segment, MM_KT keys at a time
     * (sgi == nseg: none) */
    auto next = [&](int &sgi, int &k0) {
        if (sgi >= nseg)
            return;
        k0 += MM_KT;
        if (k0 > sg_hi[sgi]) {
            sgi++;
            k0 = sgi < nseg ? sg_lo[sgi] : 0;
        }
    };
    /* staging of a planned tile: [c^(g) | kR] of each key, zeros for no
     * key; asynchronous (cp.async, one commit group) when vec */
    auto stage = [&](int bf, int pb) {
        uint16_t *kt = kts + bf * MM_KT * Ep;
        if (vec) {
            /* each thread one 16-byte column ch of every nk-th key from k0
             * (nk = MM_THREADS / E8 threads a column; E8 <= 32): the
             * column's offsets fixed, one plan load a copy.  (Two threads
             * a key, each copying every other column of it, was slower:
             * expanded local 0.37 -> 0.41 ms a layer at 8k; bulk copies
             * on the copy engine, two a key completing on an mbarrier,
             * slower still: 0.49.) */
            const int E8 = E >> 3, dg8 = dg >> 3, nk = MM_THREADS / E8;
            if (tid < nk * E8) {
                const int ch = tid % E8, k0 = tid / E8;
                const uint16_t *src = p.c.kv + (ch < dg8 ? g * dg + 8 * ch : G * dg + 8 * (ch - dg8));
                uint16_t *dst = kt + k0 * Ep + 8 * ch;
                for (int kk = k0; kk < MM_KT; kk += nk, dst += nk * Ep) {
                    const int64_t b = kbase[pb][kk];
                    if (b >= 0) /* (a zero-filling copy costs a dozen instructions more) */
                        mma_cp16(dst, src + b, true);
                    else
                        *(uint4 *)dst = make_uint4(0u, 0u, 0u, 0u);
                }
            }
            mma_cp_commit();
        } else {
            for (int j = tid; j < MM_KT * E; j += MM_THREADS) {
                const int kk = j / E, e = j % E;
                const int64_t b = kbase[pb][kk];
                uint16_t v = 0;
                if (b >= 0)
                    v = p.c.kv[b + (e < dg ? g * dg + e : G * dg + (e - dg))];
                kt[kk * Ep + e] = v;
            }
        }
    };

    /* tile i: coordinates (s0, c0), keys in kt buffer i % 2, plan in
     * buffer i % 3; tile i+1 is planned and its copies are in flight while
     * tile i is computed, and the page loads of tile i+2 too */
    int s0 = 0, c0 = nseg > 0 ? sg_lo[0] : 0, s1 = s0, c1 = c0, bf = 0, pb = 0;
    next(s1, c1);
    {
        const int pg0 = plan_page(s0, c0), pg1 = plan_page(s1, c1);
        plan_store(0, s0, c0, pg0);
        plan_store(1, s1, c1, pg1);
    }
    __syncthreads();
    if (nseg > 0)
        stage(0, 0);
    while (s0 < nseg) {
        const int pb1 = pb == 2 ? 0 : pb + 1, pb2 = pb1 == 2 ? 0 : pb1 + 1;
        if (s1 < nseg) {
            stage(bf ^ 1, pb1);
            mma_cp_wait<1>(); /* this tile's copies (all but the newest group) */
        } else {
            mma_cp_wait<0>();
        }
        __syncthreads(); /* everybody's copies of this tile landed */
        int s2 = s1, c2 = c1;
        next(s2, c2);
        const int pg2 = plan_page(s2, c2); /* in flight during the compute */
        const uint16_t *kt = kts + bf * MM_KT * Ep;
        const uint64_t *kmb = kmask[pb];
        const int *kpb = kpos[pb];
        /* 16-key chunks with a key in the warp's range (warp-uniform) */
        unsigned live = 0; /* bit np */
#pragma unroll
        for (int np = 0; np < MM_KT / 16; np++)
            live |= (unsigned)(c0 + 16 * np <= whi && c0 + 16 * np + 15 >= wlo) << np;
        /* scores: 16 rows x MM_KT keys per warp.  Tiles with every chunk
         * live (all but a warp's first and last) take a copy of the loop
         * without the per-chunk branches, so that the ldmatrix of the next
         * chunks can be issued ahead of the MMAs (a branch per chunk made
         * each ldmatrix wait before its two MMAs). */
        float s[MM_KT / 8][4];
#pragma unroll
        for (int j = 0; j < MM_KT / 8; j++)
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        auto scores = [&](auto full_c) {
            constexpr bool FULL = decltype(full_c)::value;
#pragma unroll
            for (int ks = KS0; ks < KS; ks++) {
                if (ks < ksn) {
                    uint32_t ql[4];
                    if (QS) /* A fragment of the lo part: matrices (rows +0/+8, cols +0/+8) */
                        mma_ldsm_x4<false>(ql, qlo + (warp * 16 + mr + 8 * (mi & 1)) * Ep +
                                                   16 * ks + 8 * (mi >> 1));
#pragma unroll
                    for (int np = 0; np < MM_KT / 16; np++) {
                        if (!FULL && !((live >> np) & 1u))
                            continue; /* all masked below */
                        uint32_t b[4];
                        mma_ldsm_x4<false>(b, kt + (16 * np + mr + 8 * (mi >> 1)) * Ep + 16 * ks +
                                                  8 * (mi & 1));
                        mma_16816(s[2 * np], qf[ks], b[0], b[1]);
                        mma_16816(s[2 * np + 1], qf[ks], b[2], b[3]);
                        if (QS) {
                            mma_16816(s[2 * np], ql, b[0], b[1]);
                            mma_16816(s[2 * np + 1], ql, b[2], b[3]);
                        }
                    }
                }
            }
        };
        /* a warp without live chunks in this tile has nothing to add */
        if (live) {
            if (FAST && live == (1u << (MM_KT / 16)) - 1u)
                scores(std::true_type());
            else
                scores(std::false_type());
            /* mask, scale, online softmax (rows gq and gq + 8); no masks when
             * every key of the tile is visible to every row of the warp (the
             * interior tiles of windows and compressed ranges) */
            float mt[2] = {-INFINITY, -INFINITY};
            bool inner;
            {
                const uint64_t ka = kmb[lane], kb = kmb[lane + 32];
                const int pa = kpb[lane], pb_ = kpb[lane + 32];
                const uint64_t wbits = w_bits[warp];
                const int clo = w_lo[warp], chi = w_hi[warp];
                inner = __all_sync(0xffffffffu, FAST && (ka & wbits) == wbits &&
                                                    (kb & wbits) == wbits && pa >= clo &&
                                                    pa <= chi && pb_ >= clo && pb_ <= chi);
            }
            if (inner) {
#pragma unroll
                for (int j = 0; j < MM_KT / 8; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        mt[e >> 1] = fmaxf(mt[e >> 1], s[j][e]);
            } else {
#pragma unroll
                for (int j = 0; j < MM_KT / 8; j++)
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        const int k = 8 * j + 2 * tq + c;
                        const uint64_t km = kmb[k];
                        const int kp = kpb[k];
#pragma unroll
                        for (int rr = 0; rr < 2; rr++) {
                            const bool ok =
                                (km & rbit[rr]) != 0 && kp >= rlo[rr] && kp <= rhi[rr];
                            const float v = ok ? s[j][2 * rr + c] : -INFINITY;
                            s[j][2 * rr + c] = v;
                            mt[rr] = fmaxf(mt[rr], v);
                        }
                    }
            }
            float mref[2];
            mm_softmax_max<NP>(mt, mrow, lrow, acc, sc2, !FAST, mref);
#pragma unroll
            for (int j = 0; j < MM_KT / 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float pr = mma_ex2(fmaf(s[j][e], sc2, -mref[e >> 1]));
                    s[j][e] = pr;
                    lrow[e >> 1] += pr;
                }
            /* P V: P (bf16) as A fragments straight from the score layout
             * (dead chunks: p = 0; branch-free copy for all-live tiles) */
            auto pv = [&](auto full_c) {
                constexpr bool FULL = decltype(full_c)::value;
#pragma unroll
                for (int kk = 0; kk < MM_KT / 16; kk++) {
                    if (!FULL && !((live >> kk) & 1u))
                        continue;
                    uint32_t pa[4];
                    pa[0] = mma_pack_bf16(s[2 * kk][0], s[2 * kk][1]);
                    pa[1] = mma_pack_bf16(s[2 * kk][2], s[2 * kk][3]);
                    pa[2] = mma_pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                    pa[3] = mma_pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
                    for (int np = 0; np < NP; np++) {
                        if (np < npn) {
                            uint32_t b[4];
                            mma_ldsm_x4<true>(b, kt + (16 * kk + mr + 8 * (mi & 1)) * Ep +
                                                     16 * np + 8 * (mi >> 1));
                            mma_16816(acc[2 * np], pa, b[0], b[1]);
                            mma_16816(acc[2 * np + 1], pa, b[2], b[3]);
                        }
                    }
                }
            };
            if (FAST && live == (1u << (MM_KT / 16)) - 1u)
                pv(std::true_type());
            else
                pv(std::false_type());
        }
        plan_store(pb2, s2, c2, pg2);
        __syncthreads(); /* plan i+2 visible; the next copies overwrite this buffer */
        s0 = s1;
        c0 = c1;
        s1 = s2;
        c1 = c2;
        bf ^= 1;
        pb = pb1;
    }

    /* epilogue: row sums over the quad, normalise, gate / lse */
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        lrow[rr] += __shfl_xor_sync(0xffffffffu, lrow[rr], 1);
        lrow[rr] += __shfl_xor_sync(0xffffffffu, lrow[rr], 2);
    }
    if (nsp > 1) {
        /* split: the partial state (unnormalised sums relative to the row
         * maximum, maximum, sum) in attn_latent's layout for
         * attn_merge_cuda, which applies the gate / writes the lse */
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            if (rt[rr] < 0)
                continue;
            float *pt = p.part + (((int64_t)(rt[rr] - p.t_off) * H + rh[rr]) * nsp + spl) * (dg + 2);
#pragma unroll
            for (int n = 0; n < 2 * NP; n++)
                if (n < 2 * npn)
                    for (int c = 0; c < 2; c++) {
                        const int d = 8 * n + 2 * tq + c;
                        if (d < dg)
                            pt[d] = acc[n][2 * rr + c];
                    }
            if (tq == 0) {
                pt[dg] = mrow[rr] * p.scale; /* scaled, as the merge takes it */
                pt[dg + 1] = lrow[rr];
            }
        }
        return;
    }
    /* even dg, 8-byte aligned outputs (and compressed-branch input):
     * pairs */
    uint16_t *const u16 = KS0 > 0 ? p.u_bf16 : nullptr; /* bf16 output (VFIRST) */
    const bool uvec = dg % 2 == 0 && ((uintptr_t)p.u & 7) == 0 &&
                      ((uintptr_t)u16 & 3) == 0 && (!slc || ((uintptr_t)p.u_cmp & 7) == 0);
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        if (rt[rr] < 0)
            continue;
        const int t = rt[rr], hh = rh[rr];
        float inv, ga, gb;
        mm_row_finish(p, slc, H, t, hh, mrow[rr], lrow[rr], tq, inv, ga, gb);
        /* ATTN_MMA_VFIRST: rows of dg/2 (the projection input's layout) */
        const int64_t o0 = ((int64_t)t * H + hh) * (KS0 > 0 ? dg / 2 : dg);
        if (uvec) {
            /* pairs (d, d + 1): every compressed-branch value loaded
             * before the first store, 8-byte accesses */
            float2 uc[2 * NP];
            if (slc) {
#pragma unroll
                for (int n = 0; n < 2 * NP; n++)
                    if (n < 2 * npn && 8 * n + 2 * tq < dg)
                        uc[n] = *(const float2 *)(p.u_cmp + o0 + 8 * n + 2 * tq);
            }
#pragma unroll
            for (int n = 0; n < 2 * NP; n++) {
                const int d = 8 * n + 2 * tq;
                if (n < 2 * npn && d < dg) {
                    float2 v = make_float2(acc[n][2 * rr] * inv, acc[n][2 * rr + 1] * inv);
                    if (slc)
                        v = make_float2(ga * uc[n].x + gb * v.x, ga * uc[n].y + gb * v.y);
                    if (u16)
                        *(uint32_t *)(u16 + o0 + d) = mma_pack_bf16(v.x, v.y);
                    else
                        *(float2 *)(p.u + o0 + d) = v;
                }
            }
            continue;
        }
#pragma unroll
        for (int n = 0; n < 2 * NP; n++) {
            if (n < 2 * npn)
                for (int c = 0; c < 2; c++) {
                    const int d = 8 * n + 2 * tq + c;
                    if (d < dg) {
                        float v = acc[n][2 * rr + c] * inv;
                        if (slc)
                            v = ga * p.u_cmp[o0 + d] + gb * v;
                        if (u16)
                            u16[o0 + d] = (uint16_t)mma_bf16_bits(v);
                        else
                            p.u[o0 + d] = v;
                    }
                }
        }
    }
}

/* ---- decode: warp-independent token rows (attn_dec_kernel) -----------
 *
 * One warp is one work item: a token, a latent group, 16 of the group's
 * heads (a head tile) and a split of the token's keys; a block holds
 * DW independent items (DEC_WARPS; DEC_WARPS_MAX where the 8 splits of
 * an item merge in one block) and no block barrier before the merge.  A
 * warp walks its keys 16 at a time: the page lookups of the next-but-one
 * stage (a lane a key) and the copies of the next (cp.async into the
 * warp's own two buffers) are in flight while a stage is computed, and its
 * query fragments come straight from global memory into registers (one
 * round trip, beside the first lookup's).  Scores, masks, online softmax
 * (base 2) and P V as in attn_mma_kernel, per 16 keys.  The block-per-token
 * form above spent a decode launch in barriers and one warp a scheduler
 * (batch 64 at 4k: 0.16 issued instructions a cycle a scheduler, ~11
 * cycles an instruction); here every SM holds several independent warps.
 * KS / NP: the exact shape (E = 16 KS, dg = 16 NP); QS: hi + lo queries;
 * DW: warps a block. */
constexpr int DEC_WARPS = 4, DEC_WARPS_MAX = 8;
constexpr int DEC_KT = 16; /* keys a stage */

#ifdef __CUDACC__
/* attn_dec_kernel's splits merged inside the launch (dec_merge): the
 * n_split warps of one (token, group, 16-head tile) are the dw warps of
 * each block of one cluster (split s: block rank s / dw, warp s % dw).
 * Each warp puts its partial (16 rows x dg accumulators, the scaled
 * maximum and the sum of each row) in its own stage buffers (free after
 * the key loop); after a barrier warp s merges rows s, s + n_split, ...
 * reading the others' partials (merge_row, as the merge launch does: the
 * same bits).  A cluster of one block (n_split = dw) reads its own shared
 * memory after a block barrier; a larger one reads through distributed
 * shared memory, and a second cluster barrier keeps every partial alive
 * until it is read (in the cluster form the merge held ~40 % of a local
 * launch's stall samples at batch 64: remote loads, the barriers'
 * fences).  wbuf: floats of a warp's buffers. */
template <int NP>
__device__ __forceinline__ void dec_merge(const attn_params &p, const float (&acc)[2 * NP][4],
                                          const float (&mrow)[2], const float (&lrow)[2],
                                          float *smem, int wbuf, int nsp, int dw, int spl,
                                          int htile, int g, int t, float *lse_out) {
    namespace cg = cooperative_groups;
    constexpr int dg = 16 * NP, ME = (dg + 31) / 32;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    const int H = p.H, hpg = H / p.c.G;
    float *ps = smem + (size_t)warp * wbuf;
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        const int r = gq + 8 * rr;
#pragma unroll
        for (int n = 0; n < 2 * NP; n++)
            *(float2 *)(ps + r * dg + 8 * n + 2 * tq) = make_float2(acc[n][2 * rr], acc[n][2 * rr + 1]);
        if (tq == 0) {
            ps[16 * dg + r] = mrow[rr] * p.scale; /* scaled, as the merge takes it */
            ps[16 * dg + 16 + r] = lrow[rr];
        }
    }
    /* the rows of this warp, split s's partial at peer(s) */
    auto rows = [&](auto peer, auto put_lse) {
        for (int r = spl; r < 16 && htile * 16 + r < hpg; r += nsp) {
            const int hh = g * hpg + htile * 16 + r;
            float m = -INFINITY, l = 0.0f;
            if (lane < nsp) {
                const float *q = peer(lane);
                m = q[16 * dg + r];
                l = q[16 * dg + 16 + r];
            }
            float M, L, a[ME];
            merge_row<8>(
                m, l, nsp, dg, [&](int s, int e) { return peer(s)[r * dg + e]; }, M, L, a);
            merge_row_store(p, t, hh, M, L, a);
            if (lse_out) /* the row's lse, as merge_row_store's */
                put_lse(r, merge_row_lse(M, L));
        }
    };
    if (nsp == dw) {
        __syncthreads();
        rows([&](int s) -> const float * { return smem + (size_t)s * wbuf; },
             [&](int r, float v) {
                 if (lane == 0)
                     lse_out[r] = v;
             });
        return;
    }
    cg::cluster_group cl = cg::this_cluster();
    cl.sync();
    /* lse_out: into every block of the cluster (lane q: block q), before
     * the second barrier */
    rows(
        [&](int s) -> const float * {
            return cl.map_shared_rank(smem + (size_t)(s % dw) * wbuf, (unsigned)(s / dw));
        },
        [&](int r, float v) {
            if (lane < nsp / dw)
                *cl.map_shared_rank(lse_out + r, (unsigned)lane) = v;
        });
    cl.sync();
}

/* whether a launch of nsp splits merges them in its clusters */
__host__ __device__ inline bool dec_merge_on(const attn_params &p, int nsp) {
    return p.dec_merge && nsp > 1 && nsp % DEC_WARPS == 0 && nsp <= ATTN_DEC_MERGE_MAX;
}
#endif

/* attn_params.sel_scores for the keys [kbeg, kend) of a warp (compressed
 * entries: key k is block k): raw scores of row r (unscaled q . k, hi + lo
 * queries) at fs[r * fk + k - kbeg], the rows' lse at lse[r]; the sum over
 * the group's hpg heads of exp(score * scale - lse), the forced blocks -1,
 * into the anchor's row (select_score_mma_kernel's expression; the heads
 * added in order) */
__device__ __forceinline__ void dec_sel_scores(const attn_params &p, const float *fs, int fk,
                                               const float *lse, int hpg, int kbeg, int kend,
                                               int a, int g, int pos) {
    const int lane = threadIdx.x & 31, cur = pos / p.c.B;
    float *sc = p.sel_scores + ((int64_t)a * p.c.G + g) * p.sel_nb_max;
    for (int k = kbeg + lane; k < kend; k += 32) {
        float sum = 0.0f;
        for (int r = 0; r < hpg; r++)
            sum += expf(fs[r * fk + k - kbeg] * p.scale - lse[r]);
        const bool forced = sel_forced(k, cur, p.sel_init, p.sel_local);
        sc[k] = forced ? -1.0f : sum;
    }
}

template <int KS, int NP, bool QS, int DW, bool SEL = false>
__global__ void __launch_bounds__(DW * 32, DEC_WARPS_MAX / DW) attn_dec_kernel(const attn_params p,
                                                                               int ht) {
    extern __shared__ float dec_sm[];
    constexpr int E = 16 * KS, dg = 16 * NP, Ep = E + 8, E8 = E / 8, dg8 = dg / 8;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    const int G = p.c.G, H = p.H, hpg = H / G;
    const int nsp = p.n_split > 1 ? p.n_split : 1;
    constexpr int dw = DW;
    const long item = (long)blockIdx.x * dw + warp;
    if (item >= (long)p.T * G * ht * nsp) {
        kc_pdl_wait(); /* every thread of the grid waits (kc_pdl_enter) */
        return;
    }
    const int spl = (int)(item % nsp), htile = (int)(item / nsp % ht),
              g = (int)(item / nsp / ht % G), tl = (int)(item / nsp / ht / G);
    const int t = p.t_off + tl;
    uint16_t *const buf = (uint16_t *)dec_sm + (size_t)warp * 2 * DEC_KT * Ep;
    /* SEL (ATTN_CMP, attn_params.sel_scores): an anchor's warps keep their
     * raw scores (rows of fk floats after the stage buffers) and the rows'
     * lse (16 floats a warp after those) for the block scores */
    const int sel_a = SEL ? p.sel_anchor[t] : -1;
    const int fk = p.sel_keys + 4; /* + 4: rows on different banks */
    float *const fs = SEL ? (float *)(dec_sm + (size_t)dw * DEC_KT * Ep) + (size_t)warp * 16 * fk
                          : nullptr;
    float *const fl = SEL ? (float *)(dec_sm + (size_t)dw * DEC_KT * Ep) + (size_t)dw * 16 * fk
                          : nullptr;

    /* The split's keys [kbeg, kend) of the token's (make_plan's
     * coordinate; ATTN_SLC: the set's blocks' keys in list order).  The
     * local and compressed keys come from the step's metadata alone (token
     * positions, block tables: written before the step's first kernel), so
     * their plan is made before the PDL wait (the kernel before this one
     * still running), and with dec_prefetch their cache lines are asked
     * into L2 then, a lane a key: a hint only (the copies below read after
     * the wait; the entries written by this step's RoPE kernel are read
     * then).  The selected branch's keys come from the block choice:
     * nothing of them before the wait. */
    key_plan kp;
    if (p.mode != ATTN_SLC)
        kp = make_plan(p, t, g);
    const int kbeg = nsp > 1 ? spl * p.split_keys : 0;
    if (p.dec_prefetch && p.mode != ATTN_SLC) {
        const int k1 = nsp > 1 ? min(kp.nkeys, kbeg + p.split_keys) : kp.nkeys;
        for (int k = kbeg + lane; k < k1; k += 32) {
            const uint16_t *e = p.c.kv + kp.entry(k);
            for (int o = 0; o < dg; o += 64)
                kc_prefetch_l2(e + g * dg + o);
            kc_prefetch_l2(e + g * dg + dg - 1);
            kc_prefetch_l2(e + G * dg);
            kc_prefetch_l2(e + G * dg + (E - dg) - 1);
        }
    }
    kc_pdl_wait();
    kc_pdl_trigger();
    if (p.mode == ATTN_SLC)
        kp = make_plan(p, t, g);
    const int kend = nsp > 1 ? min(kp.nkeys, kbeg + p.split_keys) : kp.nkeys;
    const int nst = kend > kbeg ? (kend - kbeg + DEC_KT - 1) / DEC_KT : 0;
    /* lane k < 16: the entry of key k of stage j (-1: none / masked) */
    auto lookup = [&](int j) -> int64_t {
        const int k = kbeg + j * DEC_KT + lane;
        return lane < DEC_KT && k < kend ? kp.entry(k) : -1;
    };
    /* stage j's copies into buffer j & 1, v: its keys' validity (bit k;
     * masked keys: zeros).  A lane copies one 16-byte column (cch) of key
     * ckey of each group of KPI keys: the column's source offset and the
     * destination fixed per lane, so a copy costs a shuffle of the key's
     * entry, an address and the copy (the loop over i / E8 cost ~35
     * instructions a copy, 40 % of the local kernel's) */
    constexpr int KPI = 32 / E8, NIT = DEC_KT / KPI;
    static_assert(E8 <= 32 && DEC_KT % KPI == 0, "a key's columns within a warp");
    const int ckey = lane / E8, cch = lane - ckey * E8;
    const bool cact = ckey < KPI;
    const uint16_t *const csrc =
        p.c.kv + (cch < dg8 ? g * dg + 8 * cch : G * dg + 8 * (cch - dg8));
    uint16_t *const cdst = buf + ckey * Ep + 8 * cch;
    auto stage = [&](int j, int64_t kb, unsigned v) {
        uint16_t *kt = cdst + (j & 1) * DEC_KT * Ep;
        kb = kb >= 0 ? kb : 0;
#pragma unroll
        for (int it = 0; it < NIT; it++) {
            const int k = it * KPI + ckey;
            const int64_t b = __shfl_sync(0xffffffffu, kb, k);
            if (cact)
                mma_cp16(kt + it * KPI * Ep, csrc + b, (v >> k) & 1u);
        }
        mma_cp_commit();
    };
    int64_t kb_next = lookup(0);

    /* query fragments: rows gq, gq + 8 of the tile (head h0 + row), columns
     * 16 ks + 2 tq (+1, +8, +9): [q~ | qR] of the head, zeros past hpg.
     * Loaded while the first lookup's block-table read is in flight and
     * converted after the first copies are issued: the two round trips
     * overlap (issued after the copies, the query's waited for them) */
    const int h0 = g * hpg + htile * 16;
    uint32_t qf[KS][4], ql[QS ? KS : 1][4];
    unsigned vcur;
    {
        float2 v[KS][4];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int row = htile * 16 + gq + 8 * r;
            const bool ok = row < hpg;
            const int hh = h0 + gq + 8 * r;
            const float *qtr = p.qt + ((int64_t)t * H + (ok ? hh : 0)) * dg;
            const float *qrr = p.qr + (int64_t)t * p.ld_qr + (int64_t)(ok ? hh : 0) * p.qr_stride;
#pragma unroll
            for (int ks = 0; ks < KS; ks++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const int col = 16 * ks + 2 * tq + 8 * c;
                    v[ks][r + 2 * c] = !ok           ? make_float2(0.0f, 0.0f)
                                       : col < dg ? *(const float2 *)(qtr + col)
                                                  : *(const float2 *)(qrr + (col - dg));
                }
        }
        /* key validity of the stage being computed: bit k (lanes < 16) */
        vcur = __ballot_sync(0xffffffffu, kb_next >= 0);
        if (nst > 0)
            stage(0, kb_next, vcur);
        kb_next = lookup(1);
#pragma unroll
        for (int ks = 0; ks < KS; ks++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                qf[ks][i] = mma_pack_bf16(v[ks][i].x, v[ks][i].y);
                if (QS)
                    ql[ks][i] = mma_pack_residue(v[ks][i].x, v[ks][i].y, qf[ks][i]);
            }
    }

    float acc[2 * NP][4];
#pragma unroll
    for (int n = 0; n < 2 * NP; n++)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
    const float sc2 = p.scale * MM_LOG2E;
    const int mi = lane >> 3, mr = lane & 7;
    for (int j = 0; j < nst; j++) {
        const unsigned vnext = __ballot_sync(0xffffffffu, kb_next >= 0);
        if (j + 1 < nst) {
            stage(j + 1, kb_next, vnext);
            kb_next = lookup(j + 2);
            mma_cp_wait<1>();
        } else {
            mma_cp_wait<0>();
        }
        __syncwarp(); /* every lane's copies of stage j landed */
        const uint16_t *kt = buf + (j & 1) * DEC_KT * Ep;
        /* two accumulator chains (QS: hi and lo parts; else even and odd
         * k-steps), added at the end: half the dependent MMA latency */
        float s[2][4], s2[2][4];
#pragma unroll
        for (int e = 0; e < 4; e++)
            s[0][e] = s[1][e] = s2[0][e] = s2[1][e] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
            uint32_t b[4];
            mma_ldsm_x4<false>(b, kt + (mr + 8 * (mi >> 1)) * Ep + 16 * ks + 8 * (mi & 1));
            float (*sa)[4] = QS || ks % 2 == 0 ? s : s2;
            mma_16816(sa[0], qf[ks], b[0], b[1]);
            mma_16816(sa[1], qf[ks], b[2], b[3]);
            if (QS) {
                mma_16816(s2[0], ql[ks], b[0], b[1]);
                mma_16816(s2[1], ql[ks], b[2], b[3]);
            }
        }
#pragma unroll
        for (int e = 0; e < 4; e++) {
            s[0][e] += s2[0][e];
            s[1][e] += s2[1][e];
        }
        /* masks; online softmax of rows gq, gq + 8 */
        float mt[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int k = 8 * n + 2 * tq + (e & 1);
                const float v = (vcur >> k) & 1u ? s[n][e] : -INFINITY;
                s[n][e] = v;
                mt[e >> 1] = fmaxf(mt[e >> 1], v);
            }
        if (SEL && sel_a >= 0 && j * DEC_KT < p.sel_keys) { /* raw scores, rows gq, gq + 8 */
#pragma unroll
            for (int n = 0; n < 2; n++)
#pragma unroll
                for (int rr = 0; rr < 2; rr++)
                    *(float2 *)(fs + (gq + 8 * rr) * fk + j * DEC_KT + 8 * n + 2 * tq) =
                        make_float2(s[n][2 * rr], s[n][2 * rr + 1]);
        }
        float mref[2];
        mm_softmax_max<NP>(mt, mrow, lrow, acc, sc2, false, mref);
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float pr = mma_ex2(fmaf(s[n][e], sc2, -mref[e >> 1]));
                s[n][e] = pr;
                lrow[e >> 1] += pr;
            }
        uint32_t pa[4];
        pa[0] = mma_pack_bf16(s[0][0], s[0][1]);
        pa[1] = mma_pack_bf16(s[0][2], s[0][3]);
        pa[2] = mma_pack_bf16(s[1][0], s[1][1]);
        pa[3] = mma_pack_bf16(s[1][2], s[1][3]);
#pragma unroll
        for (int np = 0; np < NP; np++) {
            uint32_t b[4];
            mma_ldsm_x4<true>(b, kt + (mr + 8 * (mi & 1)) * Ep + 16 * np + 8 * (mi >> 1));
            mma_16816(acc[2 * np], pa, b[0], b[1]);
            mma_16816(acc[2 * np + 1], pa, b[2], b[3]);
        }
        __syncwarp(); /* buffer j & 1 is read: stage j + 2 may overwrite it */
        vcur = vnext;
    }

    /* epilogue: row sums over the quad; split partials (merged in the
     * cluster, or in attn_latent's layout for attn_merge_cuda) or the
     * normalised rows */
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        lrow[rr] += __shfl_xor_sync(0xffffffffu, lrow[rr], 1);
        lrow[rr] += __shfl_xor_sync(0xffffffffu, lrow[rr], 2);
    }
#ifdef __CUDACC__
    if (dec_merge_on(p, nsp)) {
        dec_merge<NP>(p, acc, mrow, lrow, dec_sm, DEC_KT * Ep, nsp, dw, spl, htile, g, t,
                      SEL ? fl : nullptr);
        if (SEL && sel_a >= 0) { /* every row's lse in this block's fl */
            __syncthreads(); /* (one block: after the merge's stores) */
            dec_sel_scores(p, fs, fk, fl, hpg, kbeg, kend, sel_a, g, kp.pos);
        }
        return;
    }
#endif
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        const int row = htile * 16 + gq + 8 * rr;
        if (row >= hpg)
            continue;
        const int hh = h0 + gq + 8 * rr;
        if (nsp > 1) {
            float *pt = p.part + (((int64_t)tl * H + hh) * nsp + spl) * (dg + 2);
#pragma unroll
            for (int n = 0; n < 2 * NP; n++)
                *(float2 *)(pt + 8 * n + 2 * tq) = make_float2(acc[n][2 * rr], acc[n][2 * rr + 1]);
            if (tq == 0) {
                pt[dg] = mrow[rr] * p.scale; /* scaled, as the merge takes it */
                pt[dg + 1] = lrow[rr];
            }
            continue;
        }
        float inv, ga, gb;
        mm_row_finish(p, p.mode == ATTN_SLC, H, t, hh, mrow[rr], lrow[rr], tq, inv, ga, gb);
        if (SEL && tq == 0) /* the row's lse for the scores */
            fl[warp * 16 + row] = mm_row_lse(p, mrow[rr], lrow[rr]);
        const int64_t o0 = ((int64_t)t * H + hh) * dg;
#pragma unroll
        for (int n = 0; n < 2 * NP; n++) {
            const int d = 8 * n + 2 * tq;
            float2 v = make_float2(acc[n][2 * rr] * inv, acc[n][2 * rr + 1] * inv);
            if (p.mode == ATTN_SLC) {
                const float2 uc = *(const float2 *)(p.u_cmp + o0 + d);
                v = make_float2(ga * uc.x + gb * v.x, ga * uc.y + gb * v.y);
            }
            *(float2 *)(p.u + o0 + d) = v;
        }
    }
    if (SEL && sel_a >= 0 && nsp == 1) { /* one split: the warp has every row */
        __syncwarp();
        dec_sel_scores(p, fs, fk, fl + warp * 16, hpg, kbeg, kend, sel_a, g, kp.pos);
    }
}

/* attn_dec_kernel with DW warps a block (see dec_launch); SEL: with the
 * block scores (attn_params.sel_scores) */
template <int KS, int NP, bool QS, int DW, bool SEL = false>
asa_err dec_launch_dw(const attn_params *p, bool merge, int ht, long items, cudaStream_t st) {
    const int nsp = p->n_split > 1 ? p->n_split : 1;
    const size_t smem = (size_t)DW * 2 * DEC_KT * (16 * KS + 8) * sizeof(uint16_t) +
                        (SEL ? (size_t)DW * 16 * (p->sel_keys + 5) * sizeof(float) : 0);
    static size_t raised = 0;
    KC_CUDA_TRY(kc_smem_optin(attn_dec_kernel<KS, NP, QS, DW, SEL>, smem, &raised));
    const bool pdl = kc_pdl_on != 0 && !p->dec_plain;
    const dim3 grid((unsigned)((items + DW - 1) / DW));
#ifdef __CUDACC__
    if (merge && nsp > DW) {
        /* a cluster of nsp / DW blocks a (token, group, head tile): the
         * grid (items / DW blocks) is a whole number of them */
        static_assert(ATTN_DEC_MERGE_MAX / DEC_WARPS <= 8, "portable cluster sizes");
        KC_CUDA_TRY(kc_launch_cluster(pdl, dim3((unsigned)(nsp / DW)),
                                      attn_dec_kernel<KS, NP, QS, DW, SEL>, grid, dim3(DW * 32),
                                      smem, st, *p, ht));
        return ASA_OK;
    }
#endif
    /* PDL like the engine's other decode kernels, unless dec_plain; a
     * merge in one block needs no cluster */
    KC_CUDA_TRY(kc_launch_pdl(pdl, attn_dec_kernel<KS, NP, QS, DW, SEL>, grid, dim3(DW * 32),
                              smem, st, *p, ht));
    return nsp > 1 && !merge ? attn_merge_cuda(p, st) : ASA_OK;
}

template <int KS, int NP, bool QS>
asa_err dec_launch(const attn_params *p, cudaStream_t st) {
    const int hpg = p->H / p->c.G, ht = (hpg + 15) / 16;
    const int nsp = p->n_split > 1 ? p->n_split : 1;
    const long items = (long)p->T * p->c.G * ht * nsp;
#ifdef __CUDACC__
    const bool merge = dec_merge_on(*p, nsp);
#else
    const bool merge = false; /* no clusters: part and the merge launch */
#endif
    /* merging in the launch: 8 warps a block where the 8 splits of an item
     * then fill one block (its merge without a cluster; dec_bw: a fixed
     * width, 4 or 8, where the splits come in eights) */
    const bool eight = merge && nsp % DEC_WARPS_MAX == 0 &&
                       (p->dec_bw ? p->dec_bw == DEC_WARPS_MAX : nsp == DEC_WARPS_MAX);
    if constexpr (KS == 8 && NP == 6 && QS) {
        /* the block scores too (attn_params.sel_scores): one split, or
         * splits merged in the launch (a block or a cluster) */
        const bool sel = p->sel_scores && p->sel_anchor && p->sel_done && p->mode == ATTN_CMP &&
                         ht == 1 && p->sel_nb_max >= 1 && p->sel_keys >= 16 &&
                         p->sel_keys % 16 == 0 && p->sel_keys <= ATTN_SEL_KEYS &&
                         (nsp == 1 || (merge && p->split_keys <= p->sel_keys));
        if (sel) {
            const asa_err e =
                eight ? dec_launch_dw<KS, NP, QS, DEC_WARPS_MAX, true>(p, merge, ht, items, st)
                      : dec_launch_dw<KS, NP, QS, DEC_WARPS, true>(p, merge, ht, items, st);
            if (e == ASA_OK)
                *p->sel_done = 1;
            return e;
        }
    }
    return eight ? dec_launch_dw<KS, NP, QS, DEC_WARPS_MAX>(p, merge, ht, items, st)
                 : dec_launch_dw<KS, NP, QS, DEC_WARPS>(p, merge, ht, items, st);
}

template <int KS, int NP, bool EXACT, bool QS, bool FAST, int KS0>
asa_err mm_launch(const attn_params *p, int ks, int np, int rpb, cudaStream_t st) {
    const int hpg = p->H / p->c.G;
    const long rows = (long)p->T * hpg;
    const int nsp = p->n_split > 1 ? p->n_split : 1;
    dim3 grid((unsigned)((rows + rpb - 1) / rpb * nsp), (unsigned)p->c.G);
    const size_t smem =
        (size_t)(2 * MM_KT + (QS ? MM_ROWS : 0)) * (ks * 16 + 8) * sizeof(uint16_t);
    /* per instance; static shared memory (~21 KB of tile plans and lists)
     * counts against the 48 KB default too, so always opt in */
    static size_t raised = 0;
    KC_CUDA_TRY(kc_smem_optin(attn_mma_kernel<KS, NP, EXACT, QS, FAST, KS0>, smem, &raised));
    attn_mma_kernel<KS, NP, EXACT, QS, FAST, KS0><<<grid, MM_THREADS, smem, st>>>(*p, ks, np, rpb);
    KC_LAUNCH_CHECK();
    return nsp > 1 ? attn_merge_cuda(p, st) : ASA_OK;
}

/* the instance for the flags: hi + lo queries, fast paths */
template <int KS, int NP, bool EXACT, int KS0 = 0>
asa_err mm_pick(const attn_params *p, int ks, int np, int rpb, bool qs, bool fast,
                cudaStream_t st) {
    if (qs)
        return fast ? mm_launch<KS, NP, EXACT, true, true, KS0>(p, ks, np, rpb, st)
                    : mm_launch<KS, NP, EXACT, true, false, KS0>(p, ks, np, rpb, st);
    return fast ? mm_launch<KS, NP, EXACT, false, true, KS0>(p, ks, np, rpb, st)
                : mm_launch<KS, NP, EXACT, false, false, KS0>(p, ks, np, rpb, st);
}

} /* namespace */

extern "C" int attn_mma_dec_merge(void) {
#ifdef __CUDACC__
    return 1;
#else
    return 0;
#endif
}

extern "C" asa_err attn_mma_cuda(const attn_params *p, int flags, cudaStream_t stream) {
    if (!p || p->T < 0 || p->H < 1 || p->c.G < 1 || p->H % p->c.G || p->c.dg < 1 ||
        p->c.dR < 0 || p->c.B < 1 || p->t_off < 0 ||
        (p->mode != ATTN_LOCAL && p->mode != ATTN_CMP && p->mode != ATTN_SLC))
        return ASA_EINVAL;
    if (p->mode == ATTN_LOCAL && p->window < 1)
        return ASA_EINVAL;
    if (!(p->scale > 0.0f)) /* the running maxima are of unscaled scores */
        return ASA_EUNSUPPORTED;
    const int E = p->c.dg + p->c.dR, ks = (E + 15) / 16, np = (p->c.dg + 15) / 16;
    const int hpg = p->H / p->c.G;
    /* one token per block: hpg rows (at most MM_ROWS) */
    const bool trows = (flags & ATTN_MMA_TOKEN_ROWS) && hpg <= MM_ROWS;
    if (p->n_split > 1 && (!trows || !p->part || p->split_keys < 1 || p->n_split > ATTN_MAX_SPLIT))
        return ASA_EUNSUPPORTED; /* splits: token rows only */
    const int rpb = trows ? hpg : MM_ROWS;
    /* token rows on the asa-1.3b shapes: the warp-independent decode
     * kernel (ATTN_MMA_ROWS_BLOCK: the block-per-token form) */
    if (trows && !(flags & (ATTN_MMA_ROWS_BLOCK | ATTN_MMA_VFIRST | ATTN_MMA_NOFAST)) &&
        p->T > 0 && p->c.dR == 32 && (p->c.dg == 192 || p->c.dg == 96) &&
        p->c.page_elems % 8 == 0 && p->c.layer_off % 8 == 0 && ((uintptr_t)p->c.kv & 15) == 0 &&
        ((uintptr_t)p->qt & 7) == 0 && ((uintptr_t)p->qr & 7) == 0 && p->ld_qr % 2 == 0 &&
        p->qr_stride % 2 == 0 && (p->mode != ATTN_SLC || ((uintptr_t)p->u_cmp & 7) == 0) &&
        ((uintptr_t)p->u & 7) == 0 && ((uintptr_t)p->part & 7) == 0) {
        const bool q2 = (flags & ATTN_MMA_QSPLIT_ALL) || (p->mode == ATTN_CMP && (flags & ATTN_MMA_QSPLIT));
        if (p->c.dg == 192)
            return q2 ? dec_launch<14, 12, true>(p, stream) : dec_launch<14, 12, false>(p, stream);
        return q2 ? dec_launch<8, 6, true>(p, stream) : dec_launch<8, 6, false>(p, stream);
    }
    const int max_tok = trows ? 1 : 63 / hpg + 2 < MM_TOK ? 63 / hpg + 2 : MM_TOK;
    if (ks > 16 || np > 12)
        return ASA_EUNSUPPORTED;
    if (p->mode == ATTN_SLC && (long)max_tok * p->s.top_n > MM_LIST)
        return ASA_EUNSUPPORTED;
    if ((long)p->T * hpg > 0x7fffffffL - MM_ROWS)
        return ASA_EUNSUPPORTED;
    if (p->T == 0)
        return ASA_OK;
    const bool qs = (flags & ATTN_MMA_QSPLIT_ALL) || (p->mode == ATTN_CMP && (flags & ATTN_MMA_QSPLIT));
    const bool fast = !(flags & ATTN_MMA_NOFAST);
    if (flags & ATTN_MMA_VFIRST) { /* expanded local heads: 64 + 64 (+ 32 rope) */
        if (p->mode != ATTN_LOCAL || p->c.dg != 128 || p->c.dR != 32 || p->n_split > 1)
            return ASA_EUNSUPPORTED;
        return mm_pick<10, 4, true, 4>(p, ks, 4, rpb, qs, fast, stream);
    }
    /* the asa-1.3b shapes exactly (local 192 + 32, global 96 + 32), then
     * small and large generic forms */
    if (p->c.dg == 192 && p->c.dR == 32)
        return mm_pick<14, 12, true>(p, ks, np, rpb, qs, fast, stream);
    if (p->c.dg == 96 && p->c.dR == 32)
        return mm_pick<8, 6, true>(p, ks, np, rpb, qs, fast, stream);
    if (ks <= 4 && np <= 2)
        return mm_pick<4, 2, false>(p, ks, np, rpb, qs, fast, stream);
    return mm_pick<16, 12, false>(p, ks, np, rpb, qs, fast, stream);
}
