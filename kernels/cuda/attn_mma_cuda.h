/*
 * kernels/cuda/attn_mma_cuda.h - the prefill form of the ASA attention
 * (same contract as attn_latent_cuda in attn_latent_cuda.h, same
 * attn_params) on bf16 tensor cores (mma.sync m16n8k16, f32 accumulation,
 * online softmax in f32).
 *
 * Schedule: a thread block of 4 warps takes 64 consecutive (token, head)
 * rows of one latent group (row i = token i / (H/G), head i % (H/G): any
 * heads-per-group count, several tokens per block); all rows share the
 * group's keys, which are staged once per tile of 64 keys in shared memory
 * as bf16 ([c^(g) | kR], padded to a multiple of 16).  Scores = Q K^T with
 * Q the absorbed queries rounded to bf16 (flags below: as hi + lo bf16
 * parts, two MMAs, ~f32 scores), P rounded to bf16 for P V.  The block
 * walks the union of its tokens' key ranges (per sequence: windows,
 * visible compressed entries; ATTN_SLC: the union of the selected blocks)
 * and masks per row.  Sums are in a fixed order (a token's result does not
 * depend on the launch's other tokens only as far as its block's key union;
 * this kernel is not for batch-invariant mode).
 *
 * heads_per_block is ignored; n_split > 1 (with split_keys, part) only
 * with ATTN_MMA_TOKEN_ROWS: each token's keys in n_split ranges of
 * split_keys (in the mode's key coordinate; ATTN_SLC: the list of its
 * selected blocks' keys), one block each, merged by attn_merge_cuda.
 * Returns ASA_EUNSUPPORTED (nothing launched) for shapes it does not take:
 * dg + dR > 256, dg > 192, ATTN_SLC with more than 512 distinct blocks per
 * thread block (top_n * tokens per block), scale <= 0 (the running maxima
 * are of unscaled scores); the caller then uses attn_latent_cuda.
 */
#ifndef ASA_ATTN_MMA_CUDA_H
#define ASA_ATTN_MMA_CUDA_H

#include "attn_latent_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* flags: scores from hi + lo bf16 queries (~f32 scores; the lo part costs
 * a second score MMA per key and 64 rows x (dg + dR) bf16 of shared memory)
 * in ATTN_CMP (whose lse drives the block choice), or in every mode */
#define ATTN_MMA_QSPLIT 1
#define ATTN_MMA_QSPLIT_ALL 2
/* flags: without the per-tile fast paths (branch-free loops for all-live
 * tiles, no masks for interior tiles, no rescale while the row maxima
 * hold; same results): the kernel as first measured, for comparison */
#define ATTN_MMA_NOFAST 4
/* flags: one token per thread block (rows = that token's H/G heads of the
 * group, at most 64; the warps past them idle) instead of 64 consecutive
 * (token, head) rows: for decode steps, where consecutive rows belong to
 * different sequences and a block would walk the keys of all of them with
 * most rows masked.  The block walks only its token's keys. */
#define ATTN_MMA_TOKEN_ROWS 8
/* flags: ATTN_MMA_TOKEN_ROWS runs on the asa-1.3b shapes (dg 192 or 96,
 * dR 32; 16-byte aligned cache slices) as a decode kernel of independent
 * warps (one a token, group, 16 heads and split; keys 16 at a time through
 * the warp's own buffers), else in blocks of one token.  This flag keeps
 * the block form, for comparison. */
#define ATTN_MMA_ROWS_BLOCK 32

/* flags: the expanded form of a local layer (ATTN_LOCAL only, one head a
 * "group": G = H): each entry is [v_h (dg/2) | k_h (dg/2)] per head, then
 * the shared rope key (dR).  Scores use the keys' dims [dg/2, dg) with the
 * dg/2 query elements just before each row's rope part in qr (qr[t * ld_qr
 * + h * qr_stride - dg/2 ..]: a projection row's [q_nope | q_rope]; qt is
 * not read), and the rope part; the values are dims [0, dg/2), and u has
 * rows of dg/2 elements (u[t][h][dg/2]: o_proj's input).  Per head and key
 * 2 (dg/2 + dR) + 2 dg/2 FLOPs instead of the absorbed form's 2 (dg_latent
 * + dR) + 2 dg_latent, and no absorb / expand products.  With p->u_bf16
 * set, u is written there as bf16 (round to nearest even: the bf16 part the
 * split launch would cut) and p->u is not touched.  Taken for dg = 128,
 * dR = 32 (asa-1.3b's 64 + 64 head dims); else ASA_EUNSUPPORTED. */
#define ATTN_MMA_VFIRST 16

asa_err attn_mma_cuda(const attn_params *p, int flags, cudaStream_t stream);
/* 1 where the decode kernel merges its splits inside the launch
 * (attn_params.dec_merge; thread block clusters), 0 in builds without
 * clusters (the CPU emulation: part and the merge launch instead). */
int attn_mma_dec_merge(void);
/* Host reference of ATTN_MMA_VFIRST (double sums; attn_latent_ref's key
 * sets and conventions). */
void attn_vfirst_ref(const attn_params *p);

#ifdef __cplusplus
}
#endif
#endif /* ASA_ATTN_MMA_CUDA_H */
