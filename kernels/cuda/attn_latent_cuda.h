/*
 * kernels/cuda/attn_latent_cuda.h - the ASA attention kernels of the CUDA
 * engine (ASA-SPEC 3.1-3.3, numerics of section 6): absorbed latent
 * attention over a paged bf16 cache, the compressed entries of completed
 * blocks, and the block choice of global layers at anchor positions.
 *
 * Cache layout (the CUDA engine's pages, bf16 bit patterns): a page holds
 * one block of B tokens of one sequence for every layer of its class.  The
 * part of layer `ti` (index among the layers of its type) starts at element
 * page * page_elems + ti * layer_elems; inside it, token entry k (0 <= k < B)
 * starts at k * S and, on global pages, the block's compressed entry at
 * B * S.  An entry is [c^(0) .. c^(G-1) (dg each), kR (dR)], S = G*dg + dR.
 *
 * Per-step metadata (device arrays, built once per step and shared by all
 * layers): for token t of the step, tok_pos[t] is its absolute position,
 * tok_seq[t] its sequence's index in the batch; seq_toff[i] is where
 * sequence i's block table starts inside `tab` (page ids indexed by logical
 * block).  Global and local layers get their own tab/seq_toff.
 *
 * Queries: qt[t][h][dg] (f32) are the absorbed queries q~ = W_UK^T qC; the
 * rotated rope part of head h is qr[t * ld_qr + h * qr_stride + k], k < dR.
 *
 * Attention (attn_latent_cuda): one thread block per (token, latent group,
 * chunk of heads); every head of the chunk is computed from one pass over
 * the keys, which are staged in shared memory in tiles (online softmax
 * with max subtraction, f32 throughout; the cache is read as bf16).  Modes:
 *   ATTN_LOCAL  keys j in [max(0, pos-window+1), pos] (local table);
 *   ATTN_CMP    compressed entries of the blocks b with (b+1)B-1 <= pos;
 *               also writes lse[t][h] (log-sum-exp of the scaled scores,
 *               -inf when no block is visible; then u = 0);
 *   ATTN_SLC    tokens j <= pos of the token's selected blocks; the result
 *               is mixed with the compression branch: u = sigmoid(gate[h]) *
 *               u_cmp + sigmoid(gate[H + h]) * u_slc.
 * Output u[t][h][dg] (f32) = sum_j p_j c_j^(g(h)) (before W_UV).
 *
 * Split keys (flash-decoding, for grids too small to fill the GPU): with
 * n_split > 1, key range [s * split_keys, (s+1) * split_keys) of every
 * token goes to its own block, which writes its unnormalised partial sums,
 * running max and sum into part[t - t_off][h][s][dg + 2]; a second launch merges
 * the partials with log-sum-exp weights (then applies the gates / writes
 * lse).  The result equals the unsplit one up to f32 rounding.  With
 * merge_cnt the merge runs instead in the block that finishes its (token,
 * group, head chunk) last (a counter per triple), each warp merging heads
 * with the merge launch's arithmetic and order: the same bits.
 *
 * Selection sets: the set used by token t is read from src = sel_src[t]:
 * src >= 0: tsel[src][g][0..tsel_cnt[src][g]) (a token of this step), src <
 * 0: the slot state slot_sel[(-src - 1)][ti][g][...] (sets chosen at an
 * earlier step).  Sets hold ascending block ids.
 */
#ifndef ASA_ATTN_LATENT_CUDA_H
#define ASA_ATTN_LATENT_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum attn_mode { ATTN_LOCAL = 0, ATTN_CMP = 1, ATTN_SLC = 2 } attn_mode;

#define ATTN_KT 32 /* keys per shared-memory tile; split_keys is a multiple */
#define ATTN_MAX_SPLIT 4000 /* n_split at most (the merge keeps 3 floats per split in shared memory) */

/* Where a layer's cache entries are. */
typedef struct attn_cache {
    const uint16_t *kv;   /* page memory of the class */
    int64_t page_elems;   /* elements per page */
    int64_t layer_off;    /* ti * layer_elems */
    int B;                /* tokens per page */
    int G, dg, dR;        /* entry = G*dg + dR elements */
    const int32_t *tab;   /* flat block tables of the step */
    const int32_t *seq_toff; /* [n_seqs] offset of each sequence's table */
} attn_cache;

/* Selection sets of one global layer (see above). */
typedef struct attn_sets {
    const int32_t *sel_src;  /* [T] */
    int32_t *tsel;           /* [T][G][top_n] */
    int32_t *tsel_cnt;       /* [T][G] */
    int32_t *slot_sel;       /* [slots][Lg][G][top_n] */
    int32_t *slot_cnt;       /* [slots][Lg][G] */
    int Lg, ti, top_n;
} attn_sets;

typedef struct attn_params {
    attn_mode mode;
    int T, H;                /* tokens of this launch, query heads */
    int t_off;               /* the launch covers tokens t_off .. t_off + T - 1
                                of the step's arrays (0: all of them) */
    int heads_per_block;     /* 1..H/G, divides H/G */
    float scale;
    int window;              /* ATTN_LOCAL */
    attn_cache c;
    const int32_t *tok_pos, *tok_seq;
    const float *qt;         /* [T][H][dg] */
    const float *qr;         /* rope queries, see above */
    int64_t ld_qr, qr_stride;
    attn_sets s;             /* ATTN_SLC */
    const float *gate;       /* ATTN_SLC: gate logits, gate[t * ld_qr + h], [H + h] */
    const float *u_cmp;      /* ATTN_SLC: [T][H][dg] */
    float *u;                /* [T][H][dg] out */
    uint16_t *u_bf16;        /* attn_mma_cuda with ATTN_MMA_VFIRST: when not
                                NULL, u is written here instead, as bf16 bits
                                (round to nearest even; u is not written) */
    float *lse;              /* ATTN_CMP: [T][H] out */
    int n_split;             /* 1 (no split) .. ATTN_MAX_SPLIT */
    int split_keys;          /* keys per split, multiple of ATTN_KT (n_split > 1) */
    float *part;             /* [T][H][n_split][dg + 2] workspace (n_split > 1),
                                indexed by t - t_off */
    int *merge_cnt;          /* n_split > 1: NULL = a second launch merges; else
                                the last split block of each (token, group,
                                head chunk) merges (one launch less; the same
                                bits): T * H zero counters, left zero */
    /* attn_mma_cuda's decode kernel (ATTN_MMA_TOKEN_ROWS on the warp
     * form): dec_prefetch asks the local / compressed keys' cache lines
     * into L2 before its PDL wait (a hint: it pays where the kernel before
     * it is launched with PDL and the lines are few); dec_plain launches it
     * without PDL.  dec_merge: with n_split a multiple of 4 up to
     * ATTN_DEC_MERGE_MAX, the splits are merged inside the launch where
     * attn_mma_dec_merge() says the build can (no merge launch, part not
     * written; else part and the merge launch as usual): the splits of each
     * (token, group, 16 heads) are the warps of n_split / dec_bw blocks,
     * one block summing the partials in its own shared memory, more a
     * thread block cluster summing them through distributed shared memory.
     * dec_bw: warps a block there, 4 or 8 (8 only where n_split is a
     * multiple of 8; 0: 8 where n_split is 8, else 4). */
    int dec_prefetch, dec_plain, dec_merge, dec_bw;
    /* ATTN_CMP on attn_mma_cuda's decode kernel: with sel_scores set, the
     * launch also writes select_blocks_cuda's block scores for every token
     * t with sel_anchor[t] = a >= 0 (after the merge, the probabilities
     * exp(score - lse) summed over the group's heads; forced blocks -1):
     * sel_scores[(a * G + g) * sel_nb_max + b] for the token's visible
     * blocks b, the row's other elements untouched, and sets *sel_done
     * (host memory) to 1.  Only where a warp holds all of a token's group
     * heads (H / G <= 16) and the splits merge in the launch (dec_merge;
     * or there is one split), for at most sel_keys keys a warp (split_keys,
     * or unsplit the visible blocks; a multiple of 16, at most
     * ATTN_SEL_KEYS); else
     * nothing of it happens and *sel_done is left alone (select_blocks_cuda
     * scores then).  Needs hi + lo queries (ATTN_MMA_QSPLIT): the scores
     * select_blocks_cuda computes are of those. */
    float *sel_scores;
    const int32_t *sel_anchor; /* [T] anchor index of each token, -1 */
    int sel_nb_max, sel_init, sel_local, sel_keys;
    int *sel_done;
} attn_params;
#define ATTN_DEC_MERGE_MAX 32
#define ATTN_SEL_KEYS 128

asa_err attn_latent_cuda(const attn_params *p, cudaStream_t stream);
/* The merge of split partials alone (p->part, n_split > 1, written by a
 * split launch): u (with the ATTN_SLC gate), lse for ATTN_CMP. */
asa_err attn_merge_cuda(const attn_params *p, cudaStream_t stream);
/* Host reference on host pointers (double sums, same conventions). */
void attn_latent_ref(const attn_params *p);
/* attn_merge_cuda's host reference (host pointers, double sums). */
void attn_merge_ref(const attn_params *p);

/* Block choice at anchors (ASA-SPEC 3.3).  For each anchor token t =
 * anchors[a] and group g: S[b] = sum over the group's heads of
 * exp(score - lse[t][h]) for the blocks visible from pos, then forced
 * blocks (b < init_blocks, cur - local_blocks < b <= cur) and the best
 * complete candidates by S, ties to the lower index, up to top_n; written
 * ascending into tsel[t][g], count into tsel_cnt[t][g].  scores is a
 * workspace of n_anchors * G * nb_max floats. */
typedef struct select_params {
    int n_anchors, H;
    const int32_t *anchors;  /* [n_anchors] token indices, -1 = padding (skipped) */
    float scale;
    int init_blocks, local_blocks, nb_max;
    attn_cache c;
    const int32_t *tok_pos, *tok_seq;
    const float *qt, *qr;
    int64_t ld_qr, qr_stride;
    const float *lse;        /* [T][H] from ATTN_CMP */
    attn_sets s;
    float *scores;           /* workspace */
    int exact;               /* 1: score with f32 FMAs; 0: on tensor cores (query
                                as a bf16 hi + lo pair) where the shape allows */
    int anchor_runs;         /* 1: the anchors come in runs of one sequence (a
                                prefill's): the tensor-core scoring stages each
                                candidate entry once for several anchors (any
                                order stays correct, only slower) */
    int *done_cnt;           /* NULL: a second launch chooses; else the last
                                scoring block of each (anchor, group) chooses
                                (one launch less, the same choice): n_anchors
                                * G zero counters, left zero */
    /* selstore_cuda's stores done by the choice (n_store > 0; the lists of
     * selstore_params: the set of anchor st_tok[j] into slot st_slot[j],
     * -1 = padding): one launch less.  Only when no token of the launch reads
     * the slot state of a sequence that has an anchor in it (decode: one
     * token per sequence, an anchor token uses its own set). */
    int n_store;
    const int32_t *st_slot, *st_tok;
    /* 1: scores already holds every anchor's block scores (written by the
     * compressed attention launch, attn_params.sel_scores): only the
     * choice runs */
    int scored;
    /* tensor-core scoring at few anchors (decode): tiles of 8 candidates
     * a warp (a block: 4 warps); 0: 2, or 8 from 1,024 (anchor, group)
     * pairs */
    int tiles;
    /* more than any anchor's visible blocks (0: nb_max): the scoring grids
     * and the choice kernel are sized by it; the rows keep their nb_max
     * stride */
    int nb_step;
} select_params;

asa_err select_blocks_cuda(const select_params *p, cudaStream_t stream);
void select_blocks_ref(const select_params *p);

/* Compressed entries: for each of n pages[i], entry B of layer layer_off is
 * the f32 mean of its B token entries, rounded once to bf16. */
typedef struct compress_params {
    int n;
    const int32_t *pages;    /* [n], -1 = padding (skipped) */
    uint16_t *kv;
    int64_t page_elems, layer_off;
    int B, S;
} compress_params;

asa_err compress_cuda(const compress_params *p, cudaStream_t stream);
void compress_ref(const compress_params *p);

/* Stores each listed anchor's sets into its slot: for i < n,
 * slot_sel[slot[i]][ti][g] = tsel[tok[i]][g] (and the count). */
typedef struct selstore_params {
    int n, G;
    const int32_t *slot, *tok; /* [n]; slot -1 = padding (skipped) */
    attn_sets s;
} selstore_params;

asa_err selstore_cuda(const selstore_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* ASA_ATTN_LATENT_CUDA_H */
