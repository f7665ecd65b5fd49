/*
 * engine/cuda.c - the CUDA backend (ASA-SPEC 6: bf16 cache, bf16 weights
 * and activations into the products, f32 accumulation).
 *
 * Weights: converted to bf16 once at create and kept on the device; the
 * products that read the same input are one matrix (q_proj | kv_a_proj |
 * g_proj; gate_proj | up_proj).  Norm weights stay f32.  kv_b_proj is kept
 * as loaded (W_UK,h is read in place by the absorb kernel) plus a per-head
 * transpose of W_UV for the expansion.  The residual stream is f32.
 *
 * KV page layout (bf16), as the CPU backend's but in bf16:
 *   global page: for each global layer ti: [B][S_g] token entries, then the
 *                compressed entry [S_g] (f32 mean of the cached bf16 values,
 *                rounded once), S_g = G_g*d_g + d_R;
 *   local page:  for each local layer: [B][S_l] token entries.
 *
 * RoPE: cos/sin tables of every position up to max_seq_len, computed at
 * create from the integer position in double and rounded (as the CPU
 * engine), on the device.
 *
 * A step: per-step metadata (tokens, positions, the batch's block tables,
 * selection sources, anchors, completed blocks, logit rows) is packed on
 * the host into one pinned buffer and copied with one transfer; every layer
 * reuses it.  Then
 * per layer: RMSNorm (fused with the residual add of the previous product;
 * where o_proj and down run on cuBLAS they add into the residual stream
 * themselves, beta = 1, and the RMSNorm reads the stream alone; at 9-128
 * rows they run as two K-halves instead, cu__ksplit, and the RMSNorm adds
 * the parts and the stream)
 * -> one product for q|kv_a|g -> RoPE + latent norm + cache write ->
 * absorbed queries -> attention (local window; or compressed entries,
 * compression branch, block choice at anchors, selection branch with the
 * gates) -> W_UV -> o_proj -> RMSNorm(+residual) -> gate|up -> SiLU*up ->
 * down.  Products with at most CU_GEMV_ROWS rows use the GEMV kernel, up to
 * GEMM_SMALL_MAX_M rows gemm_small (tensor cores, the pair below in one
 * kernel that reads the weights before its PDL wait; ASA_CUDA_SMALL_ROWS),
 * larger ones cuBLAS (bf16 in, f32 out and accumulation, fixed workspace).
 * Activations are f32 (residual stream, normed inputs, attention and MLP
 * outputs); the GEMV path reads them as f32, the cuBLAS path as a bf16
 * pair hi + lo in two products (x ~ hi + lo to ~16 bits, so the only bf16
 * rounding left is the cache's: single bf16 activations put the test
 * fixtures at 5.6e-2 relative L2 from the CPU engine, mostly through the
 * q|kv_a|g and o_proj products, against 1.2e-2 with the pair; ASA-SPEC 6
 * asks < 2e-2).  Up to CU_STACK_M / 2 rows hi and lo go through one
 * product of 2M rows (as fast as hi alone), so every product reads the
 * pair there; above that (prefill, large batches) only q|kv_a|g does by
 * default: it alone took the fixtures from 5.6e-2 to 1.5e-2, and the
 * second product on all four would double the prefill product time.
 * Up to stack_m / 2 rows (CU_STACK_ROWS: 64 rows) q|kv_a|g still stacks
 * hi and lo; beyond that its pair is one product with K = 2d (cu__kcat): the RMSNorm
 * writes each row as [lo | hi] and the product reads a copy of the weights
 * with every row twice, [W | W], made at the first such step (~660 MB for
 * asa-1.3b; 8k prefill on an H200: 0.6 ms faster, the two products took
 * 3.8 + 4.4 ms, the second re-reading the f32 output with beta = 1).  The
 * lo parts come first: cuBLAS on random rows, K = 2048, relative L2
 * against the exact hi + lo product: two products 2.1e-6, [lo | hi]
 * 2.1e-6, [hi | lo] 6.1e-6 (the lo products then land in an accumulator
 * that already holds the hi sum; the fixtures' worst error went 0.0188 ->
 * 0.0194 with that order).  ASA_CUDA_KCAT=0, or when the copy cannot be
 * allocated: two products.
 * ASA_CUDA_PRECISE=2 pairs every product, =0 none.  The per-head absorb
 * and expand run on tensor cores from CU_HEADS_MMA_T to CU_HEADS_MMA_MAX
 * tokens of a step with 16 or more heads a latent group
 * (cb_absorb_mma_cuda: bf16 hi + lo inputs, f32 sums; the expand then
 * writes o_proj's bf16 input parts, no split launch; ASA_CUDA_HEADS_MMA_T,
 * _MAX, ASA_CUDA_EXPAND_PARTS=0), else from CU_BLAS_HEADS_T tokens on as
 * batched cuBLAS products (TF32 on an f32 copy of kv_b_proj,
 * ASA_CUDA_TF32=0 for exact f32; ASA_CUDA_BLAS_HEADS_T sets the threshold,
 * 0 never).  Attention runs one block
 * per (token, latent group, head chunk), and splits the keys across blocks
 * (log-sum-exp merge) when that grid is too small for the GPU
 * (cu__attn_plan).  Launches of at least ASA_CUDA_MMA_MIN_T tokens (default
 * 64; ASA_CUDA_MMA=0: never) run on tensor cores instead (attn_mma: bf16
 * queries and probabilities, f32 sums), except in batch-invariant mode;
 * so do decode steps of at least ASA_CUDA_MMA_DEC_MIN tokens (1; 32 with
 * fewer than 16 heads a latent group) whose
 * tokens have at most ASA_CUDA_MMA_DEC tiles of 64 keys (16; attn_mma with
 * one token per block, ATTN_MMA_TOKEN_ROWS, a token's keys split across
 * blocks when the grid is small: ASA_CUDA_MMA_DEC_SPLIT, the splits merged
 * inside the launch by thread block clusters: ASA_CUDA_DEC_MERGE).  Steps of at
 * least ASA_CUDA_XATTN_MIN_T tokens (128), not decode-only, run the local
 * layers in the expanded form instead (cu__xattn: keys and values per head, 320 instead of
 * 832 FLOPs per head and key, no absorb / W_UV products).
 * At anchors of decode steps the compressed attention launch also writes
 * the block scores (attn_params.sel_scores, ASA_CUDA_SEL_FOLD) where its
 * decode kernel can, and only the choice runs after it; else the scoring
 * kernels recompute them (grids sized by the step's context bucket).
 *
 * Sampling: every row that samples without returning logits is
 * sampled on the device by sample_cuda (kernels/cuda/sample_cuda.h: the
 * stages of eng_sample with the same float operations and the same counter
 * RNG; only the token and its logprobs come back).  Its parameters, bias
 * entries and penalty token lists (prompt and output ids, as eng_sample
 * gets them) are packed per chunk of logits rows into one pinned buffer and
 * uploaded with one copy into a fixed device buffer; rows that do not fit
 * it (CU_SAMPLE_TOKS ids, CU_SAMPLE_BIAS entries), vocabularies above
 * SAMPLE_MAX_V and invalid parameters take the host path.
 * Default (ASA_CUDA_GPU_SAMPLE=2): plain greedy rows by topn_cuda (two
 * small launches, ~8 us at batch 1 against sample_cuda's ~19 us; the same
 * token, logprobs to ~1e-6 instead of eng_sample's bits), every other
 * device row by sample_cuda.  =1: every device row by sample_cuda.  =0:
 * rows that need only a greedy token and raw logprobs on the device
 * (topn_cuda), every other row copied to the host and sampled with
 * eng_sample.
 *
 * Selection-share state (per slot, global layer, latent group: top_n block
 * ids and a count) lives on the device; the anchor position per slot is
 * mirrored on the host for eng.c's validation.
 *
 * CUDA graphs (default; ASA_CUDA_GRAPHS=0 at create turns them off):
 * decode-only steps (one token per sequence, up to pad_max sequences) are
 * padded to a power of two and run as CUDA graphs captured per (padded
 * batch, context bucket); see cu__build_meta.  The first GPU run measured
 * them correct and 3.53 ms against 3.79 ms eager (asa-1.3b, batch 1, H200).
 * ASA_CUDA_GRAPHS=eager runs the padded steps without capturing (to tell
 * padding from capture problems apart).  ASA_CUDA_TIMING times eager steps
 * only: use it with ASA_CUDA_GRAPHS=0.
 *
 * Programmatic dependent launch (default on sm_90; ASA_CUDA_PDL=0 at create
 * turns it off; kernels/cuda/kcuda.h): the engine's kernels launch with
 * programmatic stream serialization, so a kernel's blocks are resident
 * while the previous kernel runs (its launch and ramp overlap that kernel;
 * the GEMV requests its weights before waiting) and each kernel waits for
 * the previous one before touching its data.  Captured into the decode
 * graphs as programmatic edges.
 *
 * Fused decode kernels (default; ASA_CUDA_FUSE=0 at create turns them off;
 * not in batch-invariant mode): for steps of at most gemv_rows tokens the
 * RMSNorm (+ residual add) runs in the prologue of the GEMV that reads it
 * (every block normalises the rows, block 0 stores the new residual into
 * the other of two residual buffers: c->res alternates), SiLU-gate in the
 * down GEMV's prologue, and rope_cache + absorb are one launch; with one
 * token per sequence the rope blocks also write the compressed entries of
 * completed blocks and the block choice stores the anchors' sets (no
 * compress, no selstore launch); at any size split attention merges in the
 * last split block and the block choice runs in the last scoring block.
 * The same arithmetic in the same order: the same bits as the separate
 * kernels (test_cuda_kernels checks it).  asa-1.3b decode at batch 1: 195
 * graph nodes per step instead of 364.
 *
 * ASA_CUDA_TIMING=1 at create: CUDA events between the phases of every
 * step; the GPU time of products, attention and the rest per step is
 * logged (info) when the engine is destroyed.
 *
 * Batch invariance.  Default mode: not invariant (cuBLAS picks algorithms
 * by row count, attention splits keys by grid size).  With
 * opt.batch_invariant every product runs through the GEMV kernel in blocks
 * of GEMV_MAX_M rows (a row's sums never depend on other rows; prefill then
 * reads the weights once per 16 rows instead of once) and attention splits
 * keys at fixed boundaries of CU_INV_SPLIT keys, so a sequence's logits are
 * bitwise the same whatever the batch and however the prompt is chunked
 * (products whose K is not a multiple of 8 fall back to cuBLAS and lose
 * this).
 */
#include "backend.h"
#include "sample.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "attn_latent_cuda.h"
#include "attn_mma_cuda.h"
#include "cb_ops_cuda.h"
#include "gemm_ring_cuda.h"
#include "gemm_small_cuda.h"
#include "gemv_cuda.h"
#include "rmsnorm_cuda.h"
#include "rope_cache_cuda.h"
#include "sample_cuda.h"
#include "silu_mul_cuda.h"
#include "topn_cuda.h"

#define CU_LOGIT_ROWS 256
#define CU_INV_SPLIT (4 * ATTN_KT) /* keys per split in batch-invariant mode */
#define CU_MMA_MIN_T 64 /* default of ASA_CUDA_MMA_MIN_T */
#define CU_SPLIT_TILES 8 /* key tiles per block of a split decode launch, about */
#define CU_MAX_MARKS 1024 /* timing events per step (ASA_CUDA_TIMING) */
#define CU_MAX_GRAPHS 160 /* (padded batch, context bucket, quiet) graphs; then eager */
/* quiet graphs up to this many sequences: a batch of one is quiet at 3 of
 * 4 decode steps (selection_share 4); with positions spread evenly a batch
 * of n at (3/4)^n of them (4: 32 %, 8: 10 %) */
#define CU_QUIET_PAD 4
#define CU_SAMPLE_TOKS (1 << 20) /* penalty list ids per chunk of rows (sample_cuda) */
#define CU_SAMPLE_BIAS 65536     /* logit bias entries per chunk of rows */

/* GPU time categories of ASA_CUDA_TIMING */
enum { CU_T_PROJ, CU_T_ATTN, CU_T_OTHER, CU_NT };
#define CU_WS_BYTES ((size_t)32 << 20)
/* cuBLAS products of up to CU_STACK_M / 2 rows read hi and lo stacked as
 * one product of 2M rows (cuBLAS time is flat in M there: one read of the
 * weights instead of two) into y2, then hi + lo rows are added */
#define CU_STACK_M 64
/* default rows of the largest stacked product (c->stack_m,
 * ASA_CUDA_STACK_M, at most CU_STACK_M_MAX): beyond CU_STACK_M / 2 rows
 * only the products that want lo (q|kv_a|g) read it, and from there up to
 * CU_STACK_ROWS / 2 rows they stack it instead of one product with K = 2d
 * over [W | W] (cu__kcat; H200, asa-1.3b at 4k, alternated: batch 40 / 48
 * / 64 -1.0 / -2.3 / -2.9 %; stacking up to 128 rows: batch 96 +1.9 %) */
#define CU_STACK_ROWS 128
#define CU_STACK_M_MAX 256
/* products of up to this many rows in two K-halves (c->ksplit_max): the
 * cuBLAS call on bf16 parts alone is cut into two products of K / 2 as one
 * strided batched call whose halves the next kernel adds (H200, isolated,
 * us, one call against the two halves: down 2048 x 5632 at 32 / 64 / 128
 * rows 11.1 / 11.2 / 12.3 -> 8.4 / 8.6 / 9.7 (the one call splits K itself
 * and adds the slices in a reduce launch), o_proj 2048 x 2048 6.0 / 6.1 /
 * 6.5 -> 5.1 / 5.2 / 5.3; gate|up 11264 x 2048 at 64 / 128 rows 15.7 /
 * 15.6 -> 15.3 / 17.7: only products of at most CU_KSPLIT_MAX_N outputs,
 * whose one call has few output tiles).  Stacked hi + lo products of 2M
 * rows (9-32 tokens) the same where the RMSNorm reads them (four parts:
 * o_proj and down) */
#define CU_KSPLIT_MAX 128
#define CU_KSPLIT_MAX_N 4096
/* the token-rows decode attention splits a token's keys in ranges of whole
 * 16 keys up to CU_DEC_KT16_T tokens a step, 32 up to CU_DEC_KT32_T, 64
 * beyond (more, shorter splits: a warp's chain of 16-key stages is what a
 * small step waits for.  H200, asa-1.3b, alternated, with the merge launch:
 * 32-key ranges against 64 batch 1 / 2 / 4 / 8 / 16 -3.4 / -3.1 / -2.7 /
 * -2.7 / -1.1 %, batch 32 +2.6 to +3.7 %; with the splits merged in the
 * launch: 16-key ranges against 32 batch 1 / 2 / 4 / 8 -2.8 / -2.1 / -0.7
 * / -1.5 % at 1k, batch 1 -3.1 % at 4k, batch 12 / 16 +3.9 / +4.0 %) */
#define CU_DEC_KT16_T 8
#define CU_DEC_KT32_T 16
/* default of ASA_CUDA_GEMV_ROWS: the GEMV beat cuBLAS at M = 1 and lost
 * 2-3x at M = 8 (kernel lab, H200); at M = 2 gemm_small with 16-row tiles
 * beats it too, even with RMSNorm and SiLU-gate as kernels of their own
 * (asa-1.3b batch 2 at 1k 1.959 -> 1.859 ms, H200) */
#define CU_GEMV_ROWS 1
/* default of ASA_CUDA_BLAS_HEADS_T: absorb/expand as batched cuBLAS
 * products from this many tokens of a step on (H200, asa-1.3b decode at
 * 1k: from 16 the per-head kernels with the rope/absorb and compress/store
 * folds won, 2.75 -> 2.59 ms at batch 16 and 3.11 -> 2.94 at 32; at 64 the
 * batched products, 3.28 against 3.41) */
#define CU_BLAS_HEADS_T 33
#define CU_BLAS_HEADS_T_FEW 16 /* the same with fewer than 16 heads a group */
#define CU_HEADS_MMA_T 17      /* absorb / expand on tensor cores from ... */
#define CU_HEADS_MMA_MAX 64    /* ... to this many tokens (>= 16 heads a group) */
/* rows of the fused decode kernels at most (GEMV x modes: M <= 4 and the
 * rows staged in shared memory; cu__fused) */
#define CU_FUSE_ROWS 4
/* default of ASA_CUDA_SMALL_ROWS: gemm_small beat the split + stacked
 * cuBLAS product + add at 4 and 8 rows (asa-1.3b decode steps 4.5 and 4 %
 * faster, H200) and lost at 16 (7 % slower) */
#define CU_SMALL_ROWS 8
/* default of ASA_CUDA_SMALL_TILE: gemm_small's rows of W a block for every
 * N (the kernel's own choice takes 32 from N = 8192: with 16, batch 3 / 4
 * -1.3 %, 6 / 8 -0.5 %, H200, asa-1.3b at 1k) */
#define CU_SMALL_TILE 16
/* Steps of at least this many tokens, not all of them decode tokens, run the
 * local layers' attention in the expanded form (cu__xattn;
 * ASA_CUDA_XATTN_MIN_T, 0 off).  H200, asa-1.3b, prefill of 128 / 256 / 512
 * / 2048 tokens: 3.5 / 2.8 / 3.6 / 7 % faster than absorbed (interleaved);
 * decode steps gather a whole window per token: absorbed. */
#define CU_XATTN_MIN_T 128

#define CU_TRY(call)                                                                  \
    do {                                                                              \
        cudaError_t cu__e = (call);                                                   \
        if (cu__e != cudaSuccess) {                                                   \
            ASA_LOGE("cuda", "%s:%d: %s: %s", __FILE__, __LINE__, #call,              \
                     cudaGetErrorString(cu__e));                                      \
            return cu__e == cudaErrorMemoryAllocation ? ASA_ENOMEM : ASA_ECUDA;       \
        }                                                                             \
    } while (0)
#define CUBLAS_TRY(call)                                                              \
    do {                                                                              \
        cublasStatus_t cu__s = (call);                                                \
        if (cu__s != CUBLAS_STATUS_SUCCESS) {                                         \
            ASA_LOGE("cuda", "%s:%d: %s: cublas status %d", __FILE__, __LINE__, #call, \
                     (int)cu__s);                                                     \
            return ASA_ECUDA;                                                         \
        }                                                                             \
    } while (0)
#define CU_OK(expr)                                                                   \
    do {                                                                              \
        asa_err cu__r = (expr);                                                       \
        if (cu__r != ASA_OK)                                                          \
            return cu__r;                                                             \
    } while (0)

typedef struct cu_layer {
    eng_layer_type type;
    int ti;              /* index among layers of its type */
    int G, dg, S;        /* latent groups, dim per group, cache entry elements */
    int n_in;            /* rows of w_in */
    float *attn_norm;    /* [d] */
    float *mlp_norm;     /* [d] */
    float *kv_a_norm;    /* [G*dg] */
    uint16_t *w_in;      /* [n_in, d]: q_proj, kv_a_proj, g_proj (global) rows */
    uint16_t *w_in2;     /* [n_in, 2d]: each row of w_in twice ([W | W]), inside
                            c->w2; NULL until the first cu__kcat step */
    uint16_t *kvb;       /* [H*(dh+dv), dg] kv_b_proj as loaded */
    float *kvbf;         /* the same in f32 (batched cuBLAS absorb/expand), or NULL */
    uint16_t *kvbx;      /* local layers, once the expanded prefill form has run
                            (cu__xattn_init): [H][dv + dh][dg], per head W_UV
                            then W_UK rows */
    uint16_t *wuvT;      /* [H][dg][dv] W_UV,h transposed */
    uint16_t *o_proj;    /* [d, H*dv] */
    uint16_t *w_gu;      /* [2F, d]: gate_proj rows, up_proj rows */
    uint16_t *down;      /* [d, F] */
} cu_layer;

/* Device pointers of the current step's metadata (inside d_meta). */
typedef struct cu_meta {
    int32_t *tok, *pos, *seq, *sel_src, *anchors, *anc_of, *st_slot, *st_tok, *comp, *rows;
    int32_t *gtoff, *ltoff, *gtab, *ltab;
    int n_anchor, n_store, n_comp, n_rows;
} cu_meta;

typedef struct cu_be {
    eng *e;
    const eng_model *m;
    union { /* model dimensions (backend.h) */
        struct {
            ENG_DIMS_FIELDS
        };
        eng_dims dims;
    };
    int n_in_max;
    /* expanded form of local layers' prefill attention (cu__xattn): steps of
     * at least xattn_t tokens whose local key rows (nl_used pages of B) fit
     * xcap; per key row [head h: v (dv) | k (dh)]... | kR (dR)], xS elements */
    int xattn_t, xcap, xS, nl_used;
    uint16_t *xkv, *xc;        /* [xcap][xS], [xcap][local dg]; NULL until the
                                  first expanded step */
    int32_t *iota;             /* [xcap / B]: 0, 1, 2, ... (the rows' page table) */
    float *cosv, *sinv;        /* device [max_seq_len][half] RoPE tables */
    int n_sm;
    cu_layer *layers;          /* [L] */
    uint16_t *embed;           /* [V, d] */
    uint16_t *lm_head;         /* [V, d], may alias embed */
    float *norm;               /* [d] */
    uint16_t *gmem, *lmem;     /* page memory */
    int64_t gpage, lpage;      /* elements per page */
    int max_seqs, T;
    int32_t *sel, *sel_cnt;    /* device: [max_seqs][Lg][Gg][top_n], [max_seqs][Lg][Gg] */
    int *sel_anchor;           /* host: [max_seqs], -1 when none */
    /* device scratch (T = max_batch_tokens rows) */
    float *x;                  /* [T, d] residual stream (at the start of a step) */
    float *x2;                 /* [CU_FUSE_ROWS, d] second residual buffer of the
                                  fused decode path */
    float *res;                /* the current residual rows: x or x2 (cu__norm_gemm) */
    float *tmp;                /* [T, d] product output before the residual add */
    float *hn;                 /* [T, d] normed input */
    float *qa;                 /* [T, n_in_max] */
    float *qt, *u, *ucmp;      /* [T, H, dg_max] */
    float *lse;                /* [T, H] */
    float *o;                  /* [T, H*dv] attention output (before o_proj) */
    float *gu;                 /* [T, 2F] */
    float *act;                /* [T, F] silu(gate) * up */
    uint16_t *xhi, *xlo;       /* [max(T, stack_m), max(d, H*dv, F)], [T, ..]
                                  bf16 parts of a product's input */
    size_t xhi_n;              /* elements of xhi */
    float *y2;                 /* [stack_m, max N] stacked product output */
    int stack_m;               /* rows of the largest stacked hi + lo product
                                  (ASA_CUDA_STACK_M, default CU_STACK_ROWS);
                                  products of more rows than stack_m / 2
                                  that read lo run as two products (or
                                  q|kv_a|g as one with K = 2d, cu__kcat) */
    int ksplit_max;            /* products of up to this many rows that read
                                  the hi part alone, have at most
                                  CU_KSPLIT_MAX_N outputs and whose reader
                                  adds a second half (o_proj, down, the
                                  K = 2d q|kv_a|g) run on cuBLAS as two
                                  K-halves in one strided batched call, the
                                  reader adding the halves (cu__ksplit), and
                                  so do stacked hi + lo ones read by the
                                  RMSNorm (o_proj, down: four parts);
                                  ASA_CUDA_KSPLIT_MAX, default CU_KSPLIT_MAX,
                                  0 off */
    bool pair;                 /* a stacked hi + lo product's halves added by
                                  the kernel that reads them where its caller
                                  takes them (cu__gemm_parts' half2;
                                  ASA_CUDA_PAIR=0: by an add2 launch) */
    bool qa2_rope;             /* q|kv_a|g's halves added by the rope launch
                                  (rope_cache_params.qa2) rather than an add2
                                  launch (ASA_CUDA_QA2=0) */
    bool rope_mma;             /* rope_cache and the tensor-core absorb as one
                                  launch (ASA_CUDA_ROPE_MMA=0: two) */
    const float *tmp2;         /* the second half of the last o_proj / down
                                  output in tmp (NULL: tmp is the whole) */
    int tmp2_n;                /* blocks of [T][d] from tmp2 on (1, or 3: the
                                  K-halves of a stacked hi + lo product) */
    int small_rows;            /* products of gemv_rows < M <= small_rows rows
                                  run as gemm_small (tensor cores, the pair
                                  hi + lo in one kernel) instead of cuBLAS;
                                  ASA_CUDA_SMALL_ROWS, default
                                  CU_SMALL_ROWS, at most GEMM_SMALL_MAX_M,
                                  0 off */
    int ring_rows;             /* products of small_rows < M <= ring_rows rows
                                  (bf16 parts) run as gemm_ring (W and x
                                  through a shared-memory ring, hi + lo in
                                  one kernel); ASA_CUDA_RING_ROWS, default 0
                                  (off: not yet measured in the engine), at
                                  most GEMM_RING_MAX_M */
    int wg_rows;               /* products of small_rows < M <= wg_rows rows
                                  (bf16 parts) run as gemm_ring_cuda_wg
                                  (the ring on warpgroup MMAs, its K slices
                                  summed in a cluster); ASA_CUDA_WG_ROWS,
                                  default 0, at most GEMM_RING_MAX_M */
    int wg_blocks;             /* its target block count: K slices =
                                  ceil(wg_blocks / 128-row columns), 1..16
                                  (ASA_CUDA_WG_BLOCKS, default
                                  CU_WG_BLOCKS) */
    float *ring_ws;            /* gemm_ring's split-K tiles (ring_rows > 0) */
    int *ring_cnt;             /* gemm_ring's column counters (zero between
                                  launches) */
    int small_tile;            /* gemm_small's rows of W per block: 0 its
                                  choice, 16 (CU_SMALL_TILE) or 32
                                  (ASA_CUDA_SMALL_TILE) */
    int precise;               /* cuBLAS products read hi + lo: 0 never
                                  (ASA_CUDA_PRECISE=0), 1 (default) the
                                  q|kv_a|g product always and the others
                                  only where hi and lo stack into one
                                  product (2M <= CU_STACK_M, free), 2
                                  (ASA_CUDA_PRECISE=2) every product */
    int blas_heads_t;          /* absorb/expand through batched cuBLAS from
                                  this many tokens on (ASA_CUDA_BLAS_HEADS_T,
                                  0 = never) */
    int heads_mma_t;           /* ... on tensor cores (cb_absorb_mma_cuda)
                                  from this many tokens on
                                  (ASA_CUDA_HEADS_MMA_T, 0 = never) up to
                                  heads_mma_max (ASA_CUDA_HEADS_MMA_MAX),
                                  before the other two */
    int heads_mma_max;
    bool expand_parts;         /* that expand writes o_proj's bf16 input
                                  parts (ASA_CUDA_EXPAND_PARTS=0: f32 o) */
    bool xattn_bf16;           /* cu__xattn writes o_proj's bf16 input directly
                                  (ASA_CUDA_XATTN_BF16=0: f32, split) */
    bool acc_res;              /* o_proj and down add into the residual stream
                                  in cuBLAS's epilogue (beta = 1) where they
                                  run on cuBLAS (cu__acc_res; ASA_CUDA_ACC_RES=0:
                                  into tmp, added by the next RMSNorm) */
    bool presplit;             /* products on cuBLAS read bf16 parts written by
                                  RMSNorm / SiLU-gate (ASA_CUDA_PRESPLIT=0: f32
                                  and a split launch) */
    bool kcat;                 /* the attention input's hi + lo pair as one
                                  product with K = 2d where it would take two
                                  (cu__kcat; ASA_CUDA_KCAT=0: two; off for good
                                  when w2 cannot be allocated) */
    uint16_t *w2;              /* every layer's w_in2 in one allocation, made at
                                  the first cu__kcat step; NULL before */
    int split_tiles;           /* ASA_CUDA_SPLIT_TILES (default CU_SPLIT_TILES):
                                  key tiles per block of a small split grid */
    int nh_min;                /* ASA_CUDA_ATTN_NH_MIN: fewest heads per
                                  attention block when a grid is small (0, the
                                  default: 8 above 1,024 keys, else 4) */
    int split_bps;             /* ASA_CUDA_SPLIT_BPS (default 4): thread blocks
                                  per SM a small split grid aims at */
    int split_min;             /* ASA_CUDA_SPLIT_MIN (default 1): key tiles per
                                  split at least */
    int mma_dec;               /* ASA_CUDA_MMA_DEC (default 16; no limit on
                                  the decode kernel of independent warps):
                                  decode steps' attention on attn_mma where a
                                  token has at most this many 64-key tiles;
                                  0 off */
    int mma_dec_min;           /* ASA_CUDA_MMA_DEC_MIN (default 1, 32 with
                                  fewer than 16 heads a group): ... and the
                                  step has at least this many tokens */
    int mma_dec_split;         /* ASA_CUDA_MMA_DEC_SPLIT (default 4; 1 with
                                  ASA_CUDA_MMA_DEC_WARPS=0): split a token's
                                  keys across blocks up to about this many
                                  (token, group, split) triples per SM (0: no
                                  split) ... */
    int mma_dec_split_maxb;    /* ASA_CUDA_MMA_DEC_SPLIT_MAXB (default: twice the SM
                                  count): ... in launches of at most this many
                                  (token, group) pairs */
    int mma_dec_kt;            /* ASA_CUDA_MMA_DEC_KT: ... in ranges of whole
                                  multiples of this many keys (16, 32, 48
                                  or 64; default 0: 16 up to CU_DEC_KT16_T
                                  tokens, 32 up to CU_DEC_KT32_T, else
                                  64) */
    bool dec_merge;            /* the token-rows decode kernel merges its
                                  splits inside the launch (in one block or
                                  a thread block cluster; n_split rounded up
                                  to a multiple of 4) instead of a merge
                                  launch (ASA_CUDA_DEC_MERGE=0: never;
                                  builds without clusters never) */
    int dec_bw;                /* its warps a block then (attn_params.dec_bw;
                                  ASA_CUDA_DEC_BW=4 or 8, default 0: 8
                                  where a token has 8 splits) */
    int dec_pf_t, dec_pdl_t;   /* the token-rows decode kernel: keys' L2
                                  prefetch before its PDL wait up to this
                                  many tokens (ASA_CUDA_DEC_PF_T, default
                                  8), PDL launch up to this many
                                  (ASA_CUDA_DEC_PDL_T, default 8) */
    bool sel_exact;            /* ASA_CUDA_SEL_EXACT=1: block scores with f32
                                  FMAs instead of tensor cores (hi + lo query) */
    bool sel_fold;             /* decode steps: the block scores from the
                                  compressed attention launch where it can
                                  (attn_params.sel_scores; ASA_CUDA_SEL_FOLD=0:
                                  the scoring launch) */
    int sel_tiles;             /* select_params.tiles (ASA_CUDA_SEL_TILES; 0:
                                  cu__sel_tiles) */
    cublasComputeType_t heads_compute; /* TF32 (default) or exact f32
                                  (ASA_CUDA_TF32=0) for those products */
    bool invariant;            /* opt.batch_invariant (see the top comment) */
    int mma_min_t;             /* launches of at least this many tokens use the
                                  tensor-core attention attn_mma (not in
                                  invariant mode; ASA_CUDA_MMA=0: never,
                                  ASA_CUDA_MMA_MIN_T, default CU_MMA_MIN_T) */
    int mma_flags;             /* hi + lo queries: ATTN_MMA_QSPLIT (compressed
                                  branch; default), none (ASA_CUDA_MMA_QSPLIT=0)
                                  or every mode (=2); ASA_CUDA_MMA_FAST=0:
                                  ATTN_MMA_NOFAST (no per-tile fast paths);
                                  ASA_CUDA_MMA_DEC_WARPS=0:
                                  ATTN_MMA_ROWS_BLOCK (decode attention in
                                  blocks of one token) */
    bool pdl;                  /* programmatic dependent launch (ASA_CUDA_PDL) */
    bool fuse;                 /* fused decode kernels (ASA_CUDA_FUSE; cu__fused) */
    int fuse_silu;             /* SiLU-gate in the down GEMV's prologue: 0
                                  never, 1 at one row (default with fuse), 2
                                  at every fused size (ASA_CUDA_FUSE_SILU=0 /
                                  unset / 1) */
    bool fuse_merge;           /* split attention merged in the last split block
                                  (ASA_CUDA_FUSE_MERGE=1; off by default) */
    int gemv_rows;             /* products of up to this many rows use GEMV
                                  (ASA_CUDA_GEMV_ROWS, 0..GEMV_MAX_M, default
                                  CU_GEMV_ROWS) */
    int32_t *tsel, *tsel_cnt;  /* [T][Gg][top_n], [T][Gg] */
    float *scores;             /* [T][Gg][nb_max] selection scores at anchors */
    int *scnt;                 /* [anchors][Gg] zero counters: the block choice in
                                  the last scoring block (select_params.done_cnt) */
    float *part;               /* split-key attention partials */
    long part_heads;           /* (token, head, split) triples part holds */
    int *mcnt;                 /* [part_heads] zero counters: the merge in the last
                                  split block (attn_params.merge_cnt) */
    int max_pos;               /* largest position of the current step */
    bool one_per_seq;          /* every sequence of the step has one token */
    /* decode steps as CUDA graphs (default): one graph per
     * (padded batch, context bucket: quarter steps of a power of two),
     * captured the second time the key is seen (the first run is eager:
     * module loading and cuBLAS set-up stay out of the capture) */
    bool graphs_on, capturing;
    bool graph_eager;          /* ASA_CUDA_GRAPHS=eager: padded steps, no capture */
    int pad_max;
    /* quiet decode steps (no anchor, no completed block, no set to store:
     * the block scoring, choice, compression and store launches of the
     * global layers have nothing to do) of up to quiet_pad sequences
     * without padding run graphs of their own that leave those launches out
     * (ASA_CUDA_QUIET_PAD, default CU_QUIET_PAD; 0 off) */
    int quiet_pad;
    bool quiet;                /* the current step is one (cu__build_meta) */
    long n_gsteps, n_qsteps;   /* padded decode steps, quiet ones (logged at destroy) */
    long n_ksplit, n_ksplit4;  /* products launched as two K-halves (cu__ksplit),
                                  those of them stacked hi + lo (four parts);
                                  logged at destroy, a captured graph's once */
    long n_rope_mma;           /* rope + tensor-core absorb launches (the same) */
    int n_graphs;
    struct cu_graph {
        int pad, mp, seen;
        bool quiet;
        cudaGraphExec_t exec;
    } graphs[CU_MAX_GRAPHS];
    float *hrows;              /* [LR, d] */
    float *logits;             /* [LR, V] */
    float *h_logits;           /* pinned [LR, V] */
    /* greedy rows sampled on the device (topn_cuda): results [LR] token,
     * [LR] logprob, [LR][TOPN_MAX_N] ids, [LR][TOPN_MAX_N] logprobs, one
     * block on the device (sres) and its pinned copy (h_sres) */
    void *sres, *h_sres, *topn_ws;
    float *samp;               /* [2V] sampler scratch */
    /* device sampling (sample_cuda; ASA_CUDA_GPU_SAMPLE=0 off): per chunk
     * of rows, rows [LR] | bias ids | bias values | penalty ids, packed in
     * h_smp and uploaded to d_smp; smp_cnt [LR][V] the kernel's zeroed
     * count scratch; dev_row [LR] marks the chunk's device rows */
    int gpu_sample;            /* 0 off, 1 every device row by sample_cuda,
                                  2 greedy rows by topn_cuda, the others by
                                  sample_cuda (ASA_CUDA_GPU_SAMPLE) */
    unsigned char *h_smp, *d_smp;
    size_t smp_bytes;
    uint32_t *smp_cnt;
    bool *dev_row;
    int smp_nb, smp_nt;        /* bias entries, ids of the chunk's device rows */
    unsigned char *h_meta, *d_meta; /* pinned / device metadata buffer */
    size_t meta_cap, meta_used;
    int *rows, *seq_tok0;      /* host [T], [max_seqs] */
    const int32_t *h_seq;      /* host view of the step's token -> sequence map */
    cu_meta mt;
    /* ASA_CUDA_TIMING=1: events between phases, GPU time per category,
     * summed separately for decode steps (one token per sequence) and
     * others, logged at destroy */
    bool timing;
    cudaEvent_t *ev;           /* [CU_MAX_MARKS] */
    int *ev_cat;               /* [CU_MAX_MARKS] category from this mark on */
    int n_ev;
    double t_gpu[2][CU_NT], t_wall[2];
    long t_steps[2];
    cudaStream_t st;
    cublasHandle_t cb;
    void *ws;                  /* cuBLAS workspace */
} cu_be;

/* ---- helpers ----------------------------------------------------------------- */

/* The ASA_CUDA_* switches, read at create.  An integer: its value when set,
 * not empty and at least lo, else def. */
static int cu__env_int(const char *name, int def, int lo) {
    const char *v = getenv(name);
    return v && v[0] && atoi(v) >= lo ? atoi(v) : def;
}
/* Whether the variable is set to exactly val. */
static bool cu__env_is(const char *name, const char *val) {
    const char *v = getenv(name);
    return v && strcmp(v, val) == 0;
}

static asa_err cu__malloc(void **p, size_t bytes) {
    CU_TRY(cudaMalloc(p, bytes ? bytes : 16));
    return ASA_OK;
}

/* Uploads n elements of t as bf16 to dev (stage: host scratch of n). */
static asa_err cu__put_bf16(const eng_tensor *t, size_t n, uint16_t *dev, uint16_t *stage) {
    if (!t->data)
        return ASA_EINVAL;
    size_t have = (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
    if (have != n)
        return ASA_EINVAL;
    const void *src = t->data;
    if (t->dtype != ENG_BF16) {
        for (size_t i = 0; i < n; i++)
            stage[i] = asa_f32_to_bf16(eng_tensor_get(t, (int64_t)i));
        src = stage;
    }
    CU_TRY(cudaMemcpy(dev, src, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    return ASA_OK;
}

static asa_err cu__put_f32(const eng_tensor *t, size_t n, float **dev, float *stage) {
    if (!t->data)
        return ASA_EINVAL;
    size_t have = (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
    if (have != n)
        return ASA_EINVAL;
    for (size_t i = 0; i < n; i++)
        stage[i] = eng_tensor_get(t, (int64_t)i);
    CU_OK(cu__malloc((void **)dev, n * sizeof(float)));
    CU_TRY(cudaMemcpy(*dev, stage, n * sizeof(float), cudaMemcpyHostToDevice));
    return ASA_OK;
}

static bool cu__want_lo(const cu_be *c, int M, bool want_lo);
static asa_err cu__small_gemm(cu_be *c, int M, int K, const float *x, bool lo,
                              const uint16_t *W, int N, float *y);
static uint16_t *cu__lo_buf(const cu_be *c, int M, int K, bool lo);
static asa_err cu__gemm_parts(cu_be *c, int M, int K, const uint16_t *W, int N, float *y,
                              bool lo, bool acc, float **half2, int *n2);

/* y[M][N] (f32, ld N) = x[M][K] (f32, ld K) . W[N][K]^T (bf16).  Up to
 * c->gemv_rows rows: the GEMV kernel reads x as f32.  Larger: cuBLAS on the
 * bf16 rounding of x (bf16 x bf16 -> f32), plus, in precise mode, a second
 * product on the rounding residue (x ~ hi + lo, ~16 significant bits).
 * half2, n2: as cu__gemm_parts'. */
static asa_err cu__gemm(cu_be *c, const float *x, int M, int K, const uint16_t *W, int N,
                        float *y, bool want_lo, float **half2, int *n2) {
    if (half2) /* set where the stacked cuBLAS product leaves two halves */
        *half2 = NULL;
    if (c->invariant) {
        /* row blocks through the GEMV kernel: a row's result never depends
         * on the other rows (gemv_cuda.h), at the price of reading W once
         * per GEMV_MAX_M rows */
        gemv_params gp = {.M = GEMV_MAX_M, .N = N, .K = K, .x = x, .x_type = KC_F32, .ldx = K,
                          .w = W, .ldw = K, .y_f32 = y, .y_bf16 = NULL, .ldy = N};
        if (gemv_params_check(&gp) == ASA_OK) {
            for (int m0 = 0; m0 < M; m0 += GEMV_MAX_M) {
                gp.M = M - m0 < GEMV_MAX_M ? M - m0 : GEMV_MAX_M;
                gp.x = x + (size_t)m0 * K;
                gp.y_f32 = y + (size_t)m0 * N;
                CU_OK(gemv_bf16_cuda(&gp, c->st));
            }
            return ASA_OK;
        }
    }
    if (M <= c->gemv_rows) {
        gemv_params gp = {.M = M, .N = N, .K = K, .x = x, .x_type = KC_F32, .ldx = K,
                          .w = W, .ldw = K, .y_f32 = y, .y_bf16 = NULL, .ldy = N};
        if (gemv_params_check(&gp) == ASA_OK)
            return gemv_bf16_cuda(&gp, c->st);
    }
    const bool lo = cu__want_lo(c, M, want_lo);
    asa_err e = cu__small_gemm(c, M, K, x, lo, W, N, y); /* the parts cut from x in it */
    if (e != ASA_EUNSUPPORTED)
        return e;
    CU_OK(cb_split_bf16_cuda(M, K, x, K, c->xhi, cu__lo_buf(c, M, K, lo), c->st));
    return cu__gemm_parts(c, M, K, W, N, y, lo, false, half2, n2);
}

/* Whether a cuBLAS product of M rows on the hi part alone runs as two
 * K-halves whose reader adds them (c->ksplit_max): the second half goes
 * after the first in the output buffer, which holds c->T rows.
 * cu__ksplit_rows: the conditions on M alone (a stacked hi + lo product's
 * K-halves: cu__gemm_parts). */
static bool cu__ksplit_rows(const cu_be *c, int M) {
    return c->ksplit_max > 0 && c->pair && !c->invariant && M > c->gemv_rows &&
           M > c->small_rows && M <= c->ksplit_max;
}
static bool cu__ksplit(const cu_be *c, int M) {
    return cu__ksplit_rows(c, M) && 2 * M <= c->T && !cu__want_lo(c, M, false);
}

/* Whether a step of T tokens adds o_proj's and down's outputs into the
 * residual stream in the cuBLAS product (beta = 1; the next RMSNorm then
 * reads the stream alone): where those products take the plain cuBLAS
 * path, not where they may run as K-halves (cu__ksplit).  At an 8k prefill
 * this saves each RMSNorm a read and a write of [T][d] f32, for one more
 * read in the product's epilogue. */
static bool cu__acc_res(const cu_be *c, int T) {
    return c->acc_res && !c->invariant && T > c->gemv_rows && T > c->small_rows &&
           2 * T > CU_STACK_M && !cu__ksplit(c, T);
}

/* The output of o_proj and down: x[M][K] . W[N][K]^T added into the
 * residual stream c->res (acc: where cu__acc_res holds) or written to
 * c->tmp for the next RMSNorm to add.  x NULL: the input's bf16 part is
 * already in xhi (written by its producer where the product reads that part
 * alone); else f32 x.  The output's other parts to c->tmp2 (or NULL) and
 * their count to c->tmp2_n: the next RMSNorm adds them. */
static asa_err cu__gemm_out(cu_be *c, bool acc, const float *x, int M, int K, const uint16_t *W,
                            int N) {
    float *y = acc ? c->res : c->tmp, *half2 = NULL;
    int n2 = 1;
    asa_err e;
    if (!x) { /* the parts in xhi (and cu__lo_buf where the product wants lo) */
        e = cu__gemm_parts(c, M, K, W, N, y, cu__want_lo(c, M, false), acc, &half2, &n2);
    } else if (!acc) {
        e = cu__gemm(c, x, M, K, W, N, y, false, &half2, &n2);
    } else {
        const bool lo = cu__want_lo(c, M, false);
        CU_OK(cb_split_bf16_cuda(M, K, x, K, c->xhi, cu__lo_buf(c, M, K, lo), c->st));
        e = cu__gemm_parts(c, M, K, W, N, y, lo, true, NULL, NULL);
    }
    c->tmp2 = half2;
    c->tmp2_n = n2;
    return e;
}

/* A product of M rows as gemm_small, from f32 x (cut into parts in the
 * kernel; with the residue when lo) or, x NULL, from the parts in c->xhi
 * and cu__lo_buf; ASA_EUNSUPPORTED (nothing launched) where it does not
 * apply: outside gemv_rows < M <= small_rows, in batch-invariant mode
 * (there the GEMV's row blocks keep f32 inputs), or shapes it does not take
 * (K % 32). */
static asa_err cu__small_gemm(cu_be *c, int M, int K, const float *x, bool lo,
                              const uint16_t *W, int N, float *y) {
    if (c->invariant || M <= c->gemv_rows || M > c->small_rows)
        return ASA_EUNSUPPORTED;
    gemm_small_params sp = {.M = M, .N = N, .K = K, .x = x, .lo = x && lo,
                            .xhi = x ? NULL : c->xhi,
                            .xlo = x ? NULL : cu__lo_buf(c, M, K, lo), .ldx = K, .w = W,
                            .ldw = K, .y = y, .ldy = N, .tile_rows = c->small_tile};
    if (gemm_small_check(&sp) != ASA_OK)
        return ASA_EUNSUPPORTED;
    return gemm_small_cuda(&sp, c->st);
}

/* Whether a cuBLAS product of M rows reads the lo part too (see precise). */
static bool cu__want_lo(const cu_be *c, int M, bool want_lo) {
    return c->precise == 2 || (c->precise == 1 && (want_lo || 2 * M <= CU_STACK_M));
}

/* Where the lo part of an M x K product input goes: after hi in xhi when
 * hi and lo stack into one product, else xlo; NULL without lo. */
static uint16_t *cu__lo_buf(const cu_be *c, int M, int K, bool lo) {
    return !lo ? NULL : 2 * M <= c->stack_m ? c->xhi + (size_t)M * K : c->xlo;
}

/* A product of M rows as gemm_ring on the parts in c->xhi and cu__lo_buf
 * (acc: y += it); ASA_EUNSUPPORTED (nothing launched) outside small_rows <
 * M <= ring_rows, for more than CU_RING_MAX_N outputs (the lab form with
 * atomics beat cuBLAS on q|kv_a|g and down, N 2048-3296, and lost on
 * gate|up and lm_head, N 11264 / 32000; the library's ordered split-K sum
 * costs ~4 us more and loses everywhere: opt-in, default 0), in
 * batch-invariant mode, or for shapes it does not take (K % 64). */
#define CU_RING_MAX_N 4096
#define CU_WG_BLOCKS 132 /* gemm_ring_cuda_wg's target blocks (slices x columns) */
static asa_err cu__ring_gemm(cu_be *c, int M, int K, const uint16_t *W, int N, float *y,
                             bool lo, bool acc) {
    if (c->invariant || M <= c->gemv_rows || M <= c->small_rows)
        return ASA_EUNSUPPORTED;
    gemm_ring_params rp = {.M = M, .N = N, .K = K, .xhi = c->xhi,
                           .xlo = cu__lo_buf(c, M, K, lo), .ldx = K, .w = W, .ldw = K, .y = y,
                           .ldy = N, .acc = acc, .ws = c->ring_ws, .counters = c->ring_cnt};
    if (M <= c->wg_rows) {
        /* the warpgroup-MMA form: K slices (at most 16; the launcher caps
         * them at K's chunks) summed in a cluster, no workspace */
        const int cols = (N + 127) / 128, sl = (c->wg_blocks + cols - 1) / cols;
        const asa_err e = gemm_ring_cuda_wg(&rp, sl < 16 ? sl : 16, c->st);
        if (e != ASA_EINVAL) /* shapes it does not take: the paths below */
            return e;
    }
    if (M > c->ring_rows || N > CU_RING_MAX_N || gemm_ring_check(&rp) != ASA_OK)
        return ASA_EUNSUPPORTED;
    return gemm_ring_cuda(&rp, c->st);
}

/* The rows x K bf16 rows in xhi times W[N][K]^T as two products over the
 * halves of K in one strided batched cuBLAS call: the first half's
 * [rows][N] f32 into y, the second's after it (K % 16 == 0). */
static asa_err cu__khalves(cu_be *c, int rows, int K, const uint16_t *W, int N, float *y) {
    const float one = 1.0f, zero = 0.0f;
    const int kh = K / 2;
    CUBLAS_TRY(cublasGemmStridedBatchedEx(
        c->cb, CUBLAS_OP_T, CUBLAS_OP_N, N, rows, kh, &one, W, CUDA_R_16BF, K, kh, c->xhi,
        CUDA_R_16BF, K, kh, &zero, y, CUDA_R_32F, N, (long long)rows * N, 2, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT));
    return ASA_OK;
}

/* The cuBLAS product on the bf16 parts already in xhi (and cu__lo_buf);
 * acc: y += the product (only where cu__acc_res holds: the plain cuBLAS
 * path).  gemm_small or gemm_ring first where they apply.  half2: NULL, or
 * where a caller whose reader adds a stacked product's halves itself
 * (RMSNorm, SiLU-gate) learns of them: both go to y ([2M][N], when 2M <=
 * T) and *half2 = y + M N instead of an add2 launch; *half2 = NULL when y
 * holds the whole result.  Products with no lo part may leave two K-halves
 * the same way (cu__ksplit).  n2: NULL, or where the reader can add up to
 * three blocks after the first (RMSNorm): a stacked product may then leave
 * its two K-halves, [hi | lo] of the first half of K and then of the
 * second (4M rows in y), and *n2 = 3; else *n2 = 1. */
static asa_err cu__gemm_parts(cu_be *c, int M, int K, const uint16_t *W, int N, float *y,
                              bool lo, bool acc, float **half2, int *n2) {
    if (half2)
        *half2 = NULL;
    if (n2)
        *n2 = 1;
    asa_err e = acc ? ASA_EUNSUPPORTED : cu__small_gemm(c, M, K, NULL, lo, W, N, y);
    if (e != ASA_EUNSUPPORTED)
        return e;
    e = cu__ring_gemm(c, M, K, W, N, y, lo, acc);
    if (e != ASA_EUNSUPPORTED)
        return e;
    const float one = 1.0f, zero = 0.0f;
    const uint16_t *xlo = cu__lo_buf(c, M, K, lo);
    if (lo && !acc && 2 * M <= c->stack_m) {
        const bool pair = half2 && c->pair && 2 * M <= c->T;
        if (pair && n2 && K % 16 == 0 && N <= CU_KSPLIT_MAX_N && 4 * M <= c->T &&
            cu__ksplit_rows(c, M)) {
            /* two K-halves of the stacked product: [hi | lo] x W[:, :K/2]
             * into y, then the second half's 2M rows after it */
            CU_OK(cu__khalves(c, 2 * M, K, W, N, y));
            *half2 = y + (size_t)M * N;
            *n2 = 3;
            c->n_ksplit++;
            c->n_ksplit4++;
            return ASA_OK;
        }
        CUBLAS_TRY(cublasGemmEx(c->cb, CUBLAS_OP_T, CUBLAS_OP_N, N, 2 * M, K, &one, W,
                                CUDA_R_16BF, K, c->xhi, CUDA_R_16BF, K, &zero,
                                pair ? y : c->y2, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
        if (pair) {
            *half2 = y + (size_t)M * N;
            return ASA_OK;
        }
        return cb_add2_cuda(M, N, c->y2, c->y2 + (size_t)M * N, y, c->st);
    }
    if (!lo && !acc && half2 && K % 16 == 0 && N <= CU_KSPLIT_MAX_N && cu__ksplit(c, M)) {
        /* two K-halves: y = x[:, :K/2] . W[:, :K/2]^T, then the second
         * half's product after it; the reader adds them */
        CU_OK(cu__khalves(c, M, K, W, N, y));
        *half2 = y + (size_t)M * N;
        c->n_ksplit++;
        return ASA_OK;
    }
    CUBLAS_TRY(cublasGemmEx(c->cb, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, W, CUDA_R_16BF, K,
                            c->xhi, CUDA_R_16BF, K, acc ? &one : &zero, y, CUDA_R_32F, N,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (lo)
        CUBLAS_TRY(cublasGemmEx(c->cb, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, W, CUDA_R_16BF,
                                K, xlo, CUDA_R_16BF, K, &one, y, CUDA_R_32F, N,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return ASA_OK;
}

/* x2: NULL, or the other parts of the product that wrote x (n2 blocks of
 * [rows][d] from x2 on; x + x2 + ... first). */
static asa_err cu__rmsnorm(cu_be *c, const float *x, const float *x2, int n2, float *residual,
                           const float *w, float *y, int rows) {
    /* the f32 row kernel of cb_ops (all loads in flight); the general one
     * for shapes it does not take */
    asa_err e = cb_rmsnorm_cuda(rows, c->d, c->eps, x, x2, n2, residual, w, y, c->st);
    if (e != ASA_EUNSUPPORTED)
        return e;
    for (int q = 0; x2 && q < n2; q++) /* the parts added in place first */
        CU_OK(cb_add2_cuda(rows, c->d, x, x2 + (size_t)q * rows * c->d, (float *)x, c->st));
    rmsnorm_params rp = {.rows = rows, .D = c->d, .eps = c->eps, .x = x, .x_type = KC_F32,
                         .ldx = c->d, .residual = residual, .r_type = KC_F32, .ldr = c->d,
                         .w = w, .w_type = KC_F32, .y = y, .y_type = KC_F32, .ldy = c->d};
    return rmsnorm_cuda(&rp, c->st);
}

/* ASA_CUDA_TIMING: GPU work from here on counts as category cat. */
static void cu__mark(cu_be *c, int cat) {
    if (!c->timing || c->capturing || c->n_ev >= CU_MAX_MARKS)
        return;
    if (cudaEventRecord(c->ev[c->n_ev], c->st) == cudaSuccess)
        c->ev_cat[c->n_ev++] = cat;
}

/* Whether a product of M rows takes its input as bf16 parts written by
 * the producing kernel (RMSNorm, SiLU-gate) instead of f32 + a split
 * launch: where it runs on cuBLAS outside batch-invariant mode. */
static bool cu__presplit(const cu_be *c, int M) {
    return c->presplit && !c->invariant && M > c->gemv_rows;
}


/* After the step's last synchronisation: sums the marked intervals. */
static void cu__mark_collect(cu_be *c, int kind, double wall) {
    if (!c->timing)
        return;
    for (int i = 0; i + 1 < c->n_ev; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, c->ev[i], c->ev[i + 1]) == cudaSuccess)
            c->t_gpu[kind][c->ev_cat[i]] += ms;
    }
    c->t_wall[kind] += wall;
    c->t_steps[kind]++;
    c->n_ev = 0;
}

/* ---- create / destroy ----------------------------------------------------------- */

static void cuda_page_bytes(const eng_model *m, size_t out[KV_NCLASS]) {
    const eng_config *k = &m->cfg;
    size_t Sg = (size_t)k->global.attn.latent_heads * k->global.attn.latent_dim + k->rope_dim;
    size_t Sl = (size_t)k->local.attn.latent_heads * k->local.attn.latent_dim + k->rope_dim;
    size_t B = (size_t)k->global.block_size;
    out[KV_GLOBAL] = (size_t)k->n_global_layers * (B + 1) * Sg * sizeof(uint16_t);
    out[KV_LOCAL] = (size_t)k->n_local_layers * B * Sl * sizeof(uint16_t);
}

static void cuda_destroy(void *p) {
    cu_be *c = p;
    if (!c)
        return;
    if (c->st)
        cudaStreamSynchronize(c->st);
    if (c->timing) {
        static const char *kind[2] = {"decode", "prefill/mixed"};
        for (int k = 0; k < 2; k++)
            if (c->t_steps[k])
                ASA_LOGI("cuda",
                         "timing, %s: %ld steps; per step: wall %.3f ms, GPU products %.3f ms, "
                         "attention %.3f ms, other %.3f ms",
                         kind[k], c->t_steps[k], c->t_wall[k] / c->t_steps[k] * 1e3,
                         c->t_gpu[k][CU_T_PROJ] / c->t_steps[k],
                         c->t_gpu[k][CU_T_ATTN] / c->t_steps[k],
                         c->t_gpu[k][CU_T_OTHER] / c->t_steps[k]);
    }
    if (c->n_gsteps)
        ASA_LOGI("cuda", "padded decode steps: %ld, quiet: %ld", c->n_gsteps, c->n_qsteps);
    if (c->n_ksplit)
        ASA_LOGI("cuda", "K-split products: %ld, stacked: %ld", c->n_ksplit, c->n_ksplit4);
    if (c->n_rope_mma)
        ASA_LOGI("cuda", "rope + absorb (tensor cores) launches: %ld", c->n_rope_mma);
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].exec)
            cudaGraphExecDestroy(c->graphs[i].exec);
    if (c->ev)
        for (int i = 0; i < CU_MAX_MARKS; i++)
            if (c->ev[i])
                cudaEventDestroy(c->ev[i]);
    free(c->ev);
    free(c->ev_cat);
    if (c->layers)
        for (int l = 0; l < c->L; l++) {
            cu_layer *y = &c->layers[l];
            cudaFree(y->attn_norm);
            cudaFree(y->mlp_norm);
            cudaFree(y->kv_a_norm);
            cudaFree(y->w_in);
            /* (w_in2 points into c->w2) */
            cudaFree(y->kvb);
            cudaFree(y->kvbf);
            cudaFree(y->kvbx);
            cudaFree(y->wuvT);
            cudaFree(y->o_proj);
            cudaFree(y->w_gu);
            cudaFree(y->down);
        }
    free(c->layers);
    if (c->lm_head != c->embed)
        cudaFree(c->lm_head);
    cudaFree(c->embed);
    cudaFree(c->norm);
    cudaFree(c->gmem);
    cudaFree(c->lmem);
    cudaFree(c->sel);
    cudaFree(c->sel_cnt);
    cudaFree(c->x);
    cudaFree(c->x2);
    cudaFree(c->tmp);
    cudaFree(c->hn);
    cudaFree(c->qa);
    cudaFree(c->qt);
    cudaFree(c->u);
    cudaFree(c->ucmp);
    cudaFree(c->lse);
    cudaFree(c->o);
    cudaFree(c->xkv);
    cudaFree(c->xc);
    cudaFree(c->iota);
    cudaFree(c->gu);
    cudaFree(c->act);
    cudaFree(c->xhi);
    cudaFree(c->xlo);
    cudaFree(c->w2);
    cudaFree(c->y2);
    cudaFree(c->ring_ws);
    cudaFree(c->ring_cnt);
    cudaFree(c->tsel);
    cudaFree(c->tsel_cnt);
    cudaFree(c->scores);
    cudaFree(c->scnt);
    cudaFree(c->part);
    cudaFree(c->mcnt);
    cudaFree(c->sres);
    cudaFree(c->topn_ws);
    cudaFree(c->d_smp);
    cudaFree(c->smp_cnt);
    if (c->h_smp)
        cudaFreeHost(c->h_smp);
    free(c->dev_row);
    if (c->h_sres)
        cudaFreeHost(c->h_sres);
    cudaFree(c->hrows);
    cudaFree(c->logits);
    cudaFree(c->d_meta);
    cudaFree(c->ws);
    if (c->h_logits)
        cudaFreeHost(c->h_logits);
    if (c->h_meta)
        cudaFreeHost(c->h_meta);
    if (c->cb)
        cublasDestroy(c->cb);
    if (c->st)
        cudaStreamDestroy(c->st);
    cudaFree(c->cosv);
    cudaFree(c->sinv);
    free(c->sel_anchor);
    free(c->samp);
    free(c->rows);
    free(c->seq_tok0);
    free(c);
}

static asa_err cu__load_layer(cu_be *c, const eng_layer *ly, cu_layer *y, uint16_t *stage,
                              float *fstage) {
    const int d = c->d, H = c->H, dh = c->dh, dv = c->dv, F = c->F;
    y->type = ly->type;
    y->ti = ly->type_index;
    y->G = ly->G;
    y->dg = ly->dg;
    y->S = y->G * y->dg + c->dR;
    int ng = ly->type == ENG_LAYER_GLOBAL ? 2 * H : 0;
    y->n_in = c->nq + y->S + ng;
    size_t nkvb = (size_t)H * (dh + dv) * y->dg;
    CU_OK(cu__put_f32(&ly->attn_norm, (size_t)d, &y->attn_norm, fstage));
    CU_OK(cu__put_f32(&ly->mlp_norm, (size_t)d, &y->mlp_norm, fstage));
    CU_OK(cu__put_f32(&ly->kv_a_norm, (size_t)y->G * y->dg, &y->kv_a_norm, fstage));
    CU_OK(cu__malloc((void **)&y->w_in, (size_t)y->n_in * d * 2));
    CU_OK(cu__malloc((void **)&y->kvb, nkvb * 2));
    CU_OK(cu__malloc((void **)&y->wuvT, (size_t)H * y->dg * dv * 2));
    CU_OK(cu__malloc((void **)&y->o_proj, (size_t)d * H * dv * 2));
    CU_OK(cu__malloc((void **)&y->w_gu, (size_t)2 * F * d * 2));
    CU_OK(cu__malloc((void **)&y->down, (size_t)d * F * 2));
    CU_OK(cu__put_bf16(&ly->q_proj, (size_t)c->nq * d, y->w_in, stage));
    CU_OK(cu__put_bf16(&ly->kv_a_proj, (size_t)y->S * d, y->w_in + (size_t)c->nq * d, stage));
    if (ng)
        CU_OK(cu__put_bf16(&ly->g_proj, (size_t)ng * d, y->w_in + (size_t)(c->nq + y->S) * d,
                           stage));
    CU_OK(cu__put_bf16(&ly->o_proj, (size_t)d * H * dv, y->o_proj, stage));
    CU_OK(cu__put_bf16(&ly->gate_proj, (size_t)F * d, y->w_gu, stage));
    CU_OK(cu__put_bf16(&ly->up_proj, (size_t)F * d, y->w_gu + (size_t)F * d, stage));
    CU_OK(cu__put_bf16(&ly->down_proj, (size_t)d * F, y->down, stage));
    CU_OK(cu__put_bf16(&ly->kv_b_proj, nkvb, y->kvb, stage));
    /* W_UV transposed per head: [h][q][v] = kv_b[h*(dh+dv) + dh + v][q] */
    for (int h = 0; h < H; h++)
        for (int v = 0; v < dv; v++)
            for (int q = 0; q < y->dg; q++)
                stage[((size_t)h * y->dg + q) * dv + v] = asa_f32_to_bf16(eng_tensor_get(
                    &ly->kv_b_proj, ((int64_t)h * (dh + dv) + dh + v) * y->dg + q));
    CU_TRY(cudaMemcpy(y->wuvT, stage, (size_t)H * y->dg * dv * 2, cudaMemcpyHostToDevice));
    if (c->blas_heads_t > 0) {
        float *f = malloc(nkvb * sizeof(float));
        if (!f)
            return ASA_ENOMEM;
        for (size_t i = 0; i < nkvb; i++)
            f[i] = asa_bf16_to_f32(asa_f32_to_bf16(eng_tensor_get(&ly->kv_b_proj, (int64_t)i)));
        asa_err er = cu__malloc((void **)&y->kvbf, nkvb * sizeof(float));
        if (!er && cudaMemcpy(y->kvbf, f, nkvb * sizeof(float), cudaMemcpyHostToDevice))
            er = ASA_ECUDA;
        free(f);
        CU_OK(er);
    }
    return ASA_OK;
}

static size_t cu__al(size_t n) { return (n + 15) & ~(size_t)15; }

static asa_err cu__create(cu_be *c, eng *e, asa_errbuf *eb) {
    const eng_model *m = e->m;
    const eng_config *k = &m->cfg;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1)
        return asa_errf(eb, ASA_EUNSUPPORTED, "cuda backend: no CUDA device");
    if (e->opt.device < 0 || e->opt.device >= ndev)
        return asa_errf(eb, ASA_EINVAL, "cuda backend: device %d of %d", e->opt.device, ndev);
    /* Row-parallel kernels put the step's tokens on the grid's y axis. */
    if (e->opt.max_batch_tokens > 65535)
        return asa_errf(eb, ASA_EINVAL,
                        "cuda backend: max_batch_tokens %d exceeds 65535 tokens per step; "
                        "prefill longer prompts in chunks", e->opt.max_batch_tokens);
    CU_TRY(cudaSetDevice(e->opt.device));
    CU_TRY(cudaDeviceGetAttribute(&c->n_sm, cudaDevAttrMultiProcessorCount, e->opt.device));
    c->e = e;
    c->m = m;
    eng_dims_init(k, e->opt.max_seq_len, &c->dims);
    c->max_seqs = e->opt.max_seqs;
    c->T = e->opt.max_batch_tokens;
    c->gpage = (int64_t)(e->page_bytes[KV_GLOBAL] / 2);
    c->lpage = (int64_t)(e->page_bytes[KV_LOCAL] / 2);
    if (c->top_n > 64)
        return asa_errf(eb, ASA_EUNSUPPORTED, "cuda backend: top_n %d > 64", c->top_n);
    const int T = c->T, d = c->d, H = c->H, V = c->V, F = c->F;

    c->sel_anchor = malloc((size_t)c->max_seqs * sizeof(int));
    c->samp = malloc((size_t)2 * V * sizeof(float));
    c->rows = malloc((size_t)T * sizeof(int));
    c->seq_tok0 = malloc((size_t)c->max_seqs * sizeof(int));
    c->layers = calloc((size_t)c->L, sizeof *c->layers);
    if (!c->sel_anchor || !c->samp || !c->rows || !c->seq_tok0 || !c->layers)
        return asa_errf(eb, ASA_ENOMEM, "cuda backend: out of memory");
    {
        /* RoPE tables: angles from the integer position in double (as the
         * CPU engine), rounded once */
        const size_t n = (size_t)e->opt.max_seq_len * (c->half > 0 ? c->half : 1);
        float *tc = malloc(n * sizeof(float)), *ts = malloc(n * sizeof(float));
        asa_err er = tc && ts ? ASA_OK : ASA_ENOMEM;
        if (!er) {
            for (int i = 0; i < c->half; i++) {
                const double f = pow(k->rope_theta, -2.0 * i / (double)c->dR);
                for (int q = 0; q < e->opt.max_seq_len; q++) {
                    tc[(size_t)q * c->half + i] = (float)cos((double)q * f);
                    ts[(size_t)q * c->half + i] = (float)sin((double)q * f);
                }
            }
            er = cu__malloc((void **)&c->cosv, n * sizeof(float));
            if (!er)
                er = cu__malloc((void **)&c->sinv, n * sizeof(float));
            if (!er && (cudaMemcpy(c->cosv, tc, n * sizeof(float), cudaMemcpyHostToDevice) ||
                        cudaMemcpy(c->sinv, ts, n * sizeof(float), cudaMemcpyHostToDevice)))
                er = ASA_ECUDA;
        }
        free(tc);
        free(ts);
        if (er)
            return asa_errf(eb, er, "cuda backend: RoPE tables: %s", asa_strerror(er));
    }
    for (int s = 0; s < c->max_seqs; s++)
        c->sel_anchor[s] = -1;
    CU_TRY(cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking));
    CUBLAS_TRY(cublasCreate(&c->cb));
    CUBLAS_TRY(cublasSetStream(c->cb, c->st));
    CU_OK(cu__malloc(&c->ws, CU_WS_BYTES));
    CUBLAS_TRY(cublasSetWorkspace(c->cb, c->ws, CU_WS_BYTES));

    c->precise = cu__env_int("ASA_CUDA_PRECISE", 1, INT_MIN);
    if (c->precise < 0 || c->precise > 2)
        c->precise = 2;
    c->invariant = e->opt.batch_invariant;
    /* absorb/expand: the per-head kernels read W_UK,h / W_UV,h once per
     * token; from a few tokens on one batched product per layer reads them
     * once (invariant mode keeps the kernels: their sums do not depend on
     * the batch) */
    /* heads per latent group, the smaller of the two layer types: the
     * decode defaults below were measured on asa-1.3b (16 and 32); with a
     * few heads (asa-tiny: 2 and 4) the server ran faster with the older
     * ones (batched absorb from 16 tokens, tensor-core decode attention
     * from 32), three interleaved runs each of tools/gpu/run_server_cuda.sh
     * on an H200: 20.8 / 18.2 / 22.0k against 16.9 / 16.4 / 16.2k output
     * tok/s at concurrency 16, 45.5 / 35.5 / 46.0k against 39.3 / 35.6 /
     * 35.7k at 64) */
    const int Gmax = k->local.attn.latent_heads > k->global.attn.latent_heads
                         ? k->local.attn.latent_heads
                         : k->global.attn.latent_heads;
    const bool wide = Gmax > 0 && k->num_heads / Gmax >= 16;
    c->blas_heads_t =
        cu__env_int("ASA_CUDA_BLAS_HEADS_T", wide ? CU_BLAS_HEADS_T : CU_BLAS_HEADS_T_FEW, INT_MIN);
    if (c->invariant || c->blas_heads_t < 0)
        c->blas_heads_t = 0;
    /* the per-head products on tensor cores (cb_absorb_mma_cuda) from
     * CU_HEADS_MMA_T to CU_HEADS_MMA_MAX tokens, where measured: on
     * asa-1.3b's shapes (H200, 5 rounds alternated, with the expand
     * writing o_proj's input parts) decode batch 24-64 1.3-2.3 % faster
     * at 1k and 4k, batch 1-16 even, batch 128 -0.5 / +1.2 % in two runs
     * (cuBLAS kept there), a 4k prefill 1 % slower (cuBLAS there).  Not with
     * fewer than 16 heads a group (unmeasured; there the fixture
     * g3_share1_tied's worst prefill position moved from 0.0188 to 0.0212
     * against the CPU engine: its block choice at every token flips on
     * last-bit changes of the absorbed query, see kernels/cuda/NOTES.md),
     * nor in batch-invariant mode (the vector kernels serve every size
     * there, so a token's sums never change with the batch) */
    c->heads_mma_t = cu__env_int("ASA_CUDA_HEADS_MMA_T", wide ? CU_HEADS_MMA_T : 0, INT_MIN);
    c->heads_mma_max = cu__env_int("ASA_CUDA_HEADS_MMA_MAX", CU_HEADS_MMA_MAX, 0);
    if (c->invariant || c->heads_mma_t < 0)
        c->heads_mma_t = 0;
    c->expand_parts = !cu__env_is("ASA_CUDA_EXPAND_PARTS", "0");
    /* the expanded local attention takes asa-1.3b's head shape (64 + 64
     * dims, 32 rope; attn_mma ATTN_MMA_VFIRST); not in batch-invariant mode */
    c->xattn_t = cu__env_int("ASA_CUDA_XATTN_MIN_T", CU_XATTN_MIN_T, 0);
    if (c->invariant || k->n_local_layers == 0 || c->dh != 64 || c->dv != 64 || c->dR != 32)
        c->xattn_t = 0;
    c->presplit = !cu__env_is("ASA_CUDA_PRESPLIT", "0");
    c->acc_res = !cu__env_is("ASA_CUDA_ACC_RES", "0");
    c->pair = !cu__env_is("ASA_CUDA_PAIR", "0");
    c->ksplit_max = cu__env_int("ASA_CUDA_KSPLIT_MAX", CU_KSPLIT_MAX, 0);
    c->qa2_rope = !cu__env_is("ASA_CUDA_QA2", "0");
    c->rope_mma = !cu__env_is("ASA_CUDA_ROPE_MMA", "0");
    c->kcat = !cu__env_is("ASA_CUDA_KCAT", "0");
    c->xattn_bf16 = !cu__env_is("ASA_CUDA_XATTN_BF16", "0");
    c->sel_exact = cu__env_is("ASA_CUDA_SEL_EXACT", "1");
    c->sel_fold = !c->sel_exact && !c->invariant && !cu__env_is("ASA_CUDA_SEL_FOLD", "0");
    c->sel_tiles = cu__env_int("ASA_CUDA_SEL_TILES", 0, 0);
    /* split-plan knobs, for measuring the decode attention's schedule */
    c->split_tiles = cu__env_int("ASA_CUDA_SPLIT_TILES", CU_SPLIT_TILES, 1);
    c->nh_min = cu__env_int("ASA_CUDA_ATTN_NH_MIN", 0, 1); /* 0: by the key range */
    c->split_bps = cu__env_int("ASA_CUDA_SPLIT_BPS", 4, 1);
    c->split_min = cu__env_int("ASA_CUDA_SPLIT_MIN", 1, 1);
    const bool dec_warps = !cu__env_is("ASA_CUDA_MMA_DEC_WARPS", "0");
    /* the decode kernel of independent warps splits long key ranges, so
     * on the asa-1.3b shapes no limit (H200, alternated: 32k batch 8 / 32
     * / 64 2.625 / 4.280 / 5.417 -> 2.211 / 2.955 / 3.515 ms, 128k batch 1
     * / 8 / 32 1.757 / 3.966 / 8.776 -> 1.617 / 2.629 / 4.408; the
     * compressed branch had gone to attn_latent above 1,024 keys); the
     * block form walks a range tile after tile: 16 tiles there */
    c->mma_dec = cu__env_int("ASA_CUDA_MMA_DEC", wide && dec_warps ? 1 << 20 : 16, INT_MIN);
    /* 1 (H200, asa-1.3b, against attn_latent): with the decode kernel of
     * independent warps batch 2 / 4 at 1k 2.013 / 2.220 -> 1.961 / 2.071
     * ms, at 4k 2.022 / 2.222 -> 1.958 / 2.074; batch 1 (alternated) at 1k
     * 1.652 -> 1.618, 4k 1.659 -> 1.643, 128k 1.978 -> 1.960.  With the
     * block form 6 (batch 6 / 8 at 1k 2.477 / 2.531 -> 2.245 / 2.280,
     * batch 4 and 12 tied); 16 before that (batch 8 and 12 lost or tied) */
    c->mma_dec_min = cu__env_int("ASA_CUDA_MMA_DEC_MIN", !wide ? 32 : dec_warps ? 1 : 6, INT_MIN);
    /* 4 with the decode kernel of independent warps (blocks of 4 items):
     * batch 32 / 64 at 4k 2.703 / 2.978 -> 2.585 / 2.843 ms; 1 for the
     * block form (two blocks an SM or more were slower there) */
    c->mma_dec_split = cu__env_int("ASA_CUDA_MMA_DEC_SPLIT", dec_warps ? 4 : 1, INT_MIN);
    /* split while (token, group) pairs <= 2 SMs' worth: batch 128 at 4k
     * (256 global pairs) 3.162 -> 2.957 ms a step against 1 SM's worth;
     * 4 SMs' worth +1 % at 4k, -1 % at 1k */
    c->mma_dec_split_maxb = cu__env_int("ASA_CUDA_MMA_DEC_SPLIT_MAXB", 2 * c->n_sm, INT_MIN);
    c->mma_dec_kt = cu__env_int("ASA_CUDA_MMA_DEC_KT", 0, 16);
    if (c->mma_dec_kt % 16 || c->mma_dec_kt > 64)
        c->mma_dec_kt = 0;
    c->dec_merge = attn_mma_dec_merge() && !cu__env_is("ASA_CUDA_DEC_MERGE", "0");
    c->dec_bw = cu__env_int("ASA_CUDA_DEC_BW", 0, 0);
    c->dec_pf_t = cu__env_int("ASA_CUDA_DEC_PF_T", 8, 0);
    c->dec_pdl_t = cu__env_int("ASA_CUDA_DEC_PDL_T", 8, 0);
    c->heads_compute = cu__env_is("ASA_CUDA_TF32", "0") ? CUBLAS_COMPUTE_32F
                                                        : CUBLAS_COMPUTE_32F_FAST_TF32;

    /* weights; staging buffers sized for the largest tensor */
    size_t big = (size_t)V * d;
    size_t cand[] = {(size_t)c->nq * d, (size_t)2 * H * d, (size_t)F * d,
                     (size_t)H * (c->dh + c->dv) * c->dg_max, (size_t)d * H * c->dv,
                     (size_t)c->Sg * d, (size_t)c->Sl * d};
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++)
        if (cand[i] > big)
            big = cand[i];
    uint16_t *stage = malloc(big * sizeof(uint16_t));
    float *fstage = malloc((size_t)(d > c->Sg ? (d > c->Sl ? d : c->Sl) : c->Sg) * sizeof(float));
    if (!stage || !fstage) {
        free(stage);
        free(fstage);
        return asa_errf(eb, ASA_ENOMEM, "cuda backend: out of memory");
    }
    asa_err err = cu__malloc((void **)&c->embed, (size_t)V * d * 2);
    if (!err)
        err = cu__put_bf16(&m->embed, (size_t)V * d, c->embed, stage);
    if (!err)
        err = cu__put_f32(&m->norm, (size_t)d, &c->norm, fstage);
    if (!err) {
        if (k->tie_word_embeddings || m->lm_head.data == m->embed.data) {
            c->lm_head = c->embed;
        } else {
            err = cu__malloc((void **)&c->lm_head, (size_t)V * d * 2);
            if (!err)
                err = cu__put_bf16(&m->lm_head, (size_t)V * d, c->lm_head, stage);
        }
    }
    for (int l = 0; l < c->L && !err; l++) {
        err = cu__load_layer(c, &m->layers[l], &c->layers[l], stage, fstage);
        if (err)
            asa_errf(eb, err, "cuda backend: layer %d: %s", l,
                     err == ASA_EINVAL ? "weight shape mismatch" : asa_strerror(err));
    }
    free(stage);
    free(fstage);
    if (err)
        return eb && eb->buf && eb->buf[0] ? err
                                           : asa_errf(eb, err, "cuda backend: loading weights: %s",
                                                      asa_strerror(err));

    /* pages and selection state */
    int32_t np_g = e->num_pages[KV_GLOBAL], np_l = e->num_pages[KV_LOCAL];
    size_t nsel = (size_t)c->max_seqs * c->Lg * c->Gg;
    int n_in_max = c->nq + (c->Sg > c->Sl ? c->Sg : c->Sl) + 2 * H;
    c->n_in_max = n_in_max;
    int lr = T < CU_LOGIT_ROWS ? T : CU_LOGIT_ROWS;
    int kmax = d > F ? d : F;
    if (H * c->dv > kmax)
        kmax = H * c->dv;
    int hpg_max = H / c->Gg > H / c->Gl ? H / c->Gg : H / c->Gl;
    c->stack_m = cu__env_int("ASA_CUDA_STACK_M", CU_STACK_ROWS, 0);
    if (c->stack_m > CU_STACK_M_MAX)
        c->stack_m = CU_STACK_M_MAX;
    const int xrows = T > c->stack_m ? T : c->stack_m;
    int nmax = V > n_in_max ? V : n_in_max; /* widest product output */
    nmax = nmax > 2 * F ? nmax : 2 * F;
    nmax = nmax > d ? nmax : d;
    c->part_heads = 4L * c->n_sm * hpg_max;
    {
        /* batch-invariant splits: at least one token of the longest key
         * range (window, selected tokens, compressed entries) */
        int keys = c->w > c->top_n * c->B ? c->w : c->top_n * c->B;
        keys = keys > c->nb_max ? keys : c->nb_max;
        const long need = (long)H * ((keys + CU_INV_SPLIT - 1) / CU_INV_SPLIT + 1);
        if (c->part_heads < need)
            c->part_heads = need;
    }
    c->mma_min_t = cu__env_int("ASA_CUDA_MMA_MIN_T", CU_MMA_MIN_T, INT_MIN);
    if (cu__env_is("ASA_CUDA_MMA", "0") || c->mma_min_t < 1)
        c->mma_min_t = 0; /* off */
    c->mma_flags = cu__env_is("ASA_CUDA_MMA_QSPLIT", "0")   ? 0
                   : cu__env_is("ASA_CUDA_MMA_QSPLIT", "2") ? ATTN_MMA_QSPLIT | ATTN_MMA_QSPLIT_ALL
                                                            : ATTN_MMA_QSPLIT;
    if (cu__env_is("ASA_CUDA_MMA_FAST", "0"))
        c->mma_flags |= ATTN_MMA_NOFAST;
    if (!dec_warps)
        c->mma_flags |= ATTN_MMA_ROWS_BLOCK;
    c->gemv_rows = cu__env_int("ASA_CUDA_GEMV_ROWS", CU_GEMV_ROWS, INT_MIN);
    if (c->gemv_rows < 0 || c->gemv_rows > GEMV_MAX_M)
        c->gemv_rows = GEMV_MAX_M;
    c->small_rows = cu__env_int("ASA_CUDA_SMALL_ROWS", CU_SMALL_ROWS, 0);
    if (c->small_rows > GEMM_SMALL_MAX_M)
        c->small_rows = GEMM_SMALL_MAX_M;
    c->wg_rows = cu__env_int("ASA_CUDA_WG_ROWS", 0, 0);
    if (c->wg_rows > GEMM_RING_MAX_M)
        c->wg_rows = GEMM_RING_MAX_M;
    c->wg_blocks = cu__env_int("ASA_CUDA_WG_BLOCKS", CU_WG_BLOCKS, 1);
    c->ring_rows = cu__env_int("ASA_CUDA_RING_ROWS", 0, 0);
    if (c->ring_rows > GEMM_RING_MAX_M)
        c->ring_rows = GEMM_RING_MAX_M;
    c->small_tile = cu__env_int("ASA_CUDA_SMALL_TILE", CU_SMALL_TILE, 0);
    if (c->small_tile != 0 && c->small_tile != 16 && c->small_tile != 32)
        c->small_tile = CU_SMALL_TILE;
    /* PDL needs sm_90; the kernels' waits are no-ops without it */
    int cc_major = 0;
    CU_TRY(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, e->opt.device));
    c->pdl = cc_major >= 9 && !cu__env_is("ASA_CUDA_PDL", "0"); /* on unless =0 */
    kc_set_pdl(c->pdl); /* one setting per process (kcuda.h): the last engine created */
    c->fuse = !cu__env_is("ASA_CUDA_FUSE", "0"); /* on unless ASA_CUDA_FUSE=0 */
    /* The SiLU fold (every down GEMV block computes the SiLU of the whole
     * row) lost at first (asa-1.3b, batch 1, 1k: 1.70 -> 1.74 ms); with the
     * fused GEMVs' 512-thread blocks at one row it wins there (1.540 ->
     * 1.499 ms, H200) but still loses at two rows (1.946 -> 1.998): at one
     * row by default.  The merge fold (the last split block merges alone,
     * serially: 1.70 -> 1.86 ms) stays off unless asked for. */
    c->fuse_silu = !c->fuse                                 ? 0
                   : cu__env_is("ASA_CUDA_FUSE_SILU", "0") ? 0
                   : cu__env_is("ASA_CUDA_FUSE_SILU", "1") ? 2
                                                           : 1;
    c->fuse_merge = c->fuse && cu__env_is("ASA_CUDA_FUSE_MERGE", "1");
    c->graphs_on = !cu__env_is("ASA_CUDA_GRAPHS", "0"); /* on unless ASA_CUDA_GRAPHS=0 */
    c->graph_eager = c->graphs_on && cu__env_is("ASA_CUDA_GRAPHS", "eager");
    c->quiet_pad = cu__env_int("ASA_CUDA_QUIET_PAD", CU_QUIET_PAD, 0);
    const char *te = getenv("ASA_CUDA_TIMING");
    if (te && te[0] && strcmp(te, "0") != 0) {
        c->ev = calloc(CU_MAX_MARKS, sizeof *c->ev);
        c->ev_cat = calloc(CU_MAX_MARKS, sizeof *c->ev_cat);
        if (!c->ev || !c->ev_cat)
            return asa_errf(eb, ASA_ENOMEM, "cuda backend: out of memory");
        for (int i = 0; i < CU_MAX_MARKS; i++)
            CU_TRY(cudaEventCreate(&c->ev[i]));
        c->timing = true;
    }
    c->xhi_n = (size_t)xrows * kmax;
    int n_anchor_max = T / (c->share > 0 ? c->share : 1) + c->max_seqs + 1;
    if (n_anchor_max > T)
        n_anchor_max = T;
    /* one scratch page per class after the pool's pages (page id
     * num_pages): the dummy tokens of padded graph steps write there */
    if ((err = cu__malloc((void **)&c->gmem, (size_t)c->gpage * (np_g + 1) * 2)) ||
        (err = cu__malloc((void **)&c->lmem, (size_t)c->lpage * (np_l + 1) * 2)) ||
        (err = cu__malloc((void **)&c->sel, nsel * c->top_n * sizeof(int32_t))) ||
        (err = cu__malloc((void **)&c->sel_cnt, nsel * sizeof(int32_t))) ||
        (err = cu__malloc((void **)&c->x, (size_t)T * d * 4)) ||
        (err = cu__malloc((void **)&c->x2, (size_t)CU_FUSE_ROWS * d * 4)) ||
        (err = cu__malloc((void **)&c->tmp, (size_t)T * d * 4)) ||
        (err = cu__malloc((void **)&c->hn, (size_t)T * d * 4)) ||
        (err = cu__malloc((void **)&c->qa, (size_t)T * n_in_max * 4)) ||
        (err = cu__malloc((void **)&c->qt, (size_t)T * H * c->dg_max * 4)) ||
        (err = cu__malloc((void **)&c->u, (size_t)T * H * c->dg_max * 4)) ||
        (err = cu__malloc((void **)&c->ucmp, (size_t)T * H * c->dg_max * 4)) ||
        (err = cu__malloc((void **)&c->lse, (size_t)T * H * 4)) ||
        (err = cu__malloc((void **)&c->o, (size_t)T * H * c->dv * 4)) ||
        (err = cu__malloc((void **)&c->gu, (size_t)T * 2 * F * 4)) ||
        (err = cu__malloc((void **)&c->act, (size_t)T * F * 4)) ||
        (err = cu__malloc((void **)&c->xhi, (size_t)xrows * kmax * 2)) ||
        (err = cu__malloc((void **)&c->y2, (size_t)c->stack_m * nmax * 4)) ||
        (err = cu__malloc((void **)&c->xlo, (size_t)T * kmax * 2)) ||
        (err = cu__malloc((void **)&c->tsel, (size_t)T * c->Gg * c->top_n * 4)) ||
        (err = cu__malloc((void **)&c->tsel_cnt, (size_t)T * c->Gg * 4)) ||
        (err = cu__malloc((void **)&c->scores, (size_t)n_anchor_max * c->Gg * c->nb_max * 4)) ||
        (err = cu__malloc((void **)&c->scnt, (size_t)n_anchor_max * c->Gg * 4)) ||
        (err = cu__malloc((void **)&c->part, (size_t)c->part_heads * (c->dg_max + 2) * 4)) ||
        (err = cu__malloc((void **)&c->mcnt, (size_t)c->part_heads * 4)) ||
        (err = cu__malloc((void **)&c->hrows, (size_t)lr * d * 4)) ||
        (err = cu__malloc((void **)&c->logits, (size_t)lr * V * 4)))
        return asa_errf(eb, err, "cuda backend: device memory: %s", asa_strerror(err));
    /* one sequence's prefill of T tokens with its window before it; the
     * buffers come at the first expanded step (cu__xattn_init) */
    c->xcap = (T + c->w + 2 * c->B + c->B - 1) / c->B * c->B;
    c->xS = H * (c->dh + c->dv) + c->dR;
    if (c->ring_rows > 0) {
        /* one workspace for every product (they run in one stream) */
        const int ncnt = gemm_ring_counters(nmax);
        if ((err = cu__malloc((void **)&c->ring_ws,
                              gemm_ring_ws_bound(c->ring_rows, nmax) * sizeof(float))) ||
            (err = cu__malloc((void **)&c->ring_cnt, (size_t)ncnt * sizeof(int))))
            return asa_errf(eb, err, "cuda backend: device memory: %s", asa_strerror(err));
        CU_TRY(cudaMemset(c->ring_cnt, 0, (size_t)ncnt * sizeof(int)));
    }
    CU_TRY(cudaMemset(c->sel_cnt, 0, nsel * sizeof(int32_t)));
    CU_TRY(cudaMemset(c->mcnt, 0, (size_t)c->part_heads * 4));
    CU_TRY(cudaMemset(c->scnt, 0, (size_t)n_anchor_max * c->Gg * 4));
    CU_TRY(cudaMemset(c->gmem, 0, (size_t)c->gpage * (np_g + 1) * 2));
    CU_TRY(cudaMemset(c->lmem, 0, (size_t)c->lpage * (np_l + 1) * 2));
    if (cudaMallocHost((void **)&c->h_logits, (size_t)lr * V * 4) != cudaSuccess)
        return asa_errf(eb, ASA_ENOMEM, "cuda backend: pinned memory");
    const size_t sres_bytes = (size_t)lr * (2 + 2 * TOPN_MAX_N) * 4;
    if (cudaMallocHost(&c->h_sres, sres_bytes) != cudaSuccess)
        return asa_errf(eb, ASA_ENOMEM, "cuda backend: pinned memory");
    if ((err = cu__malloc(&c->sres, sres_bytes)) ||
        (err = cu__malloc(&c->topn_ws, topn_workspace_size(lr, V))))
        return asa_errf(eb, err, "cuda backend: device memory");
    /* default 2 (see the top comment) */
    c->gpu_sample = cu__env_is("ASA_CUDA_GPU_SAMPLE", "0")   ? 0
                    : cu__env_is("ASA_CUDA_GPU_SAMPLE", "1") ? 1
                                                             : 2;
    if (V < SAMPLE_MAX_N || V > SAMPLE_MAX_V)
        c->gpu_sample = 0;
    c->dev_row = calloc((size_t)lr, sizeof *c->dev_row);
    if (!c->dev_row)
        return asa_errf(eb, ASA_ENOMEM, "cuda backend: out of memory");
    if (c->gpu_sample) {
        c->smp_bytes = cu__al((size_t)lr * sizeof(sample_row)) +
                       cu__al((size_t)CU_SAMPLE_BIAS * 8) + (size_t)CU_SAMPLE_TOKS * 4 + 64;
        if (cudaMallocHost((void **)&c->h_smp, c->smp_bytes) != cudaSuccess)
            return asa_errf(eb, ASA_ENOMEM, "cuda backend: pinned memory");
        if ((err = cu__malloc((void **)&c->d_smp, c->smp_bytes)) ||
            (err = cu__malloc((void **)&c->smp_cnt, (size_t)lr * V * 4)))
            return asa_errf(eb, err, "cuda backend: device memory");
        CU_TRY(cudaMemset(c->smp_cnt, 0, (size_t)lr * V * 4));
    }
    /* metadata: 9 token arrays, 4 per-sequence arrays, completed blocks,
     * two block tables */
    size_t ntab = (size_t)c->max_seqs * (c->nb_max + 1);
    c->meta_cap = 10 * cu__al((size_t)T * 4) + 4 * cu__al((size_t)c->max_seqs * 4) +
                  cu__al(((size_t)T / c->B + c->max_seqs + 1) * 4) + 2 * cu__al(ntab * 4) +
                  64;
    /* the padded (graph) layout of cu__build_meta, for up to pad_max tokens */
    c->pad_max = 1;
    while (c->pad_max < c->max_seqs)
        c->pad_max *= 2;
    if (c->pad_max > lr)
        c->pad_max = lr;
    {
        const size_t P = (size_t)c->pad_max;
        c->meta_cap += 11 * cu__al(P * 4 + 4) + cu__al((P * (c->w / c->B + 2) + 1) * 4) +
                       cu__al((P * c->nb_max + 1) * 4) + 64;
    }
    if (cudaMallocHost((void **)&c->h_meta, c->meta_cap) != cudaSuccess)
        return asa_errf(eb, ASA_ENOMEM, "cuda backend: pinned memory");
    if ((err = cu__malloc((void **)&c->d_meta, c->meta_cap)))
        return asa_errf(eb, err, "cuda backend: device memory");
    /* the set-up copies and memsets ran on the legacy stream, which does not
     * order with the non-blocking step stream: wait for all of them */
    CU_TRY(cudaDeviceSynchronize());
    return ASA_OK;
}

static asa_err cuda_create(eng *e, void **out, asa_errbuf *eb) {
    cu_be *c = calloc(1, sizeof *c);
    if (!c)
        return asa_errf(eb, ASA_ENOMEM, "cuda backend: out of memory");
    if (eb && eb->buf && eb->len)
        eb->buf[0] = 0;
    asa_err err = cu__create(c, e, eb);
    if (err) {
        if (eb && eb->buf && eb->len && !eb->buf[0])
            asa_errf(eb, err, "cuda backend: create failed: %s", asa_strerror(err));
        cuda_destroy(c);
        return err;
    }
    *out = c;
    return ASA_OK;
}

/* ---- selection-share state -------------------------------------------------------- */

static void cuda_seq_reset(void *p, int slot) {
    cu_be *c = p;
    size_t n = (size_t)c->Lg * c->Gg;
    if (cudaMemsetAsync(c->sel_cnt + (size_t)slot * n, 0, n * sizeof(int32_t), c->st) !=
        cudaSuccess)
        c->e->dead = true;
    c->sel_anchor[slot] = -1;
}

static void cuda_seq_copy(void *p, int src, int dst) {
    cu_be *c = p;
    size_t n = (size_t)c->Lg * c->Gg;
    if (cudaMemcpyAsync(c->sel_cnt + (size_t)dst * n, c->sel_cnt + (size_t)src * n,
                        n * sizeof(int32_t), cudaMemcpyDeviceToDevice, c->st) != cudaSuccess ||
        cudaMemcpyAsync(c->sel + (size_t)dst * n * c->top_n, c->sel + (size_t)src * n * c->top_n,
                        n * c->top_n * sizeof(int32_t), cudaMemcpyDeviceToDevice,
                        c->st) != cudaSuccess)
        c->e->dead = true;
    c->sel_anchor[dst] = c->sel_anchor[src];
}

static int cuda_seq_anchor(void *p, int slot) { return ((cu_be *)p)->sel_anchor[slot]; }

/* For tests: a synchronous copy of one stored set; -1 on a device error. */
static int cuda_seq_sets(void *p, int slot, int ti, int g, int32_t *out) {
    cu_be *c = p;
    size_t k = ((size_t)slot * c->Lg + ti) * c->Gg + g;
    int32_t cnt = 0;
    if (cudaStreamSynchronize(c->st) != cudaSuccess ||
        cudaMemcpy(&cnt, c->sel_cnt + k, sizeof cnt, cudaMemcpyDeviceToHost) != cudaSuccess ||
        cnt < 0 || cnt > c->top_n ||
        (cnt > 0 && cudaMemcpy(out, c->sel + k * c->top_n, (size_t)cnt * sizeof(int32_t),
                               cudaMemcpyDeviceToHost) != cudaSuccess))
        return -1;
    return cnt;
}

/* ---- the step -------------------------------------------------------------------- */

/* Bump allocation in the metadata buffer: host pointer; *dev gets the
 * device address of the same bytes. */
static void *cu__meta(cu_be *c, size_t bytes, void **dev) {
    size_t off = c->meta_used;
    c->meta_used += cu__al(bytes);
    *dev = c->d_meta + off;
    return c->h_meta + off;
}

/* Packs the step's metadata and uploads it (one transfer).
 *
 * pad > 0: a decode-only batch that runs as a captured graph.  Every array
 * is laid out for pad tokens, so the device addresses depend on pad alone;
 * tokens T..pad-1 are dummies (token 0 at position 0 of a dummy sequence
 * whose block tables hold the scratch pages), the anchor, completion and
 * store lists are padded with -1 (skipped by the kernels), every token has
 * a logits row, and max_pos is rounded up to its context bucket (the split
 * plans are part of the graph).  *ntok gets pad then. */
static asa_err cu__build_meta(cu_be *c, const eng_batch *b, int pad, int *ntok) {
    const eng_config *k = &c->m->cfg;
    cu_meta *mt = &c->mt;
    const int ns = b->n_seqs, B = c->B;
    const bool hasg = k->n_global_layers > 0, hasl = k->n_local_layers > 0;
    int T = 0;
    for (int i = 0; i < ns; i++)
        T += b->seqs[i].n_tokens;
    const int TT = pad > 0 ? pad : T;          /* token capacity */
    const int NS = pad > 0 ? pad + 1 : ns;     /* sequences (+ the dummy) */
    const int NST = pad > 0 ? pad : ns;        /* stores */
    const int NC = pad > 0 ? pad : T / B + ns + 1; /* completed blocks */
    /* table sizes: the global table up to the last block; the local one
     * only for the blocks that intersect the window (offsets shifted) */
    size_t ng = 0, nl = 0;
    for (int i = 0; i < ns; i++) {
        const eng_seq_step *s = &b->seqs[i];
        int last = s->pos0 + s->n_tokens - 1, first = s->pos0 - c->w + 1;
        first = first > 0 ? first : 0;
        ng += (size_t)(hasg ? last / B + 1 : 0);
        nl += (size_t)(hasl ? last / B - first / B + 1 : 0);
    }
    const size_t lcap = pad > 0 ? (size_t)pad * (c->w / B + 2) + 1 : nl + 1;
    const size_t gcap = pad > 0 ? (size_t)pad * c->nb_max + 1 : ng + 1;
    c->meta_used = 0;
    int32_t *tok = cu__meta(c, (size_t)TT * 4, (void **)&mt->tok);
    int32_t *pos = cu__meta(c, (size_t)TT * 4, (void **)&mt->pos);
    int32_t *seq = cu__meta(c, (size_t)TT * 4, (void **)&mt->seq);
    int32_t *src = cu__meta(c, (size_t)TT * 4, (void **)&mt->sel_src);
    int32_t *anc = cu__meta(c, (size_t)TT * 4, (void **)&mt->anchors);
    int32_t *anc_of = cu__meta(c, (size_t)TT * 4, (void **)&mt->anc_of);
    int32_t *rows = cu__meta(c, (size_t)TT * 4, (void **)&mt->rows);
    int32_t *st_slot = cu__meta(c, (size_t)NST * 4, (void **)&mt->st_slot);
    int32_t *st_tok = cu__meta(c, (size_t)NST * 4, (void **)&mt->st_tok);
    int32_t *gtoff = cu__meta(c, (size_t)NS * 4, (void **)&mt->gtoff);
    int32_t *ltoff = cu__meta(c, (size_t)NS * 4, (void **)&mt->ltoff);
    int32_t *comp = cu__meta(c, (size_t)NC * 4, (void **)&mt->comp);
    int32_t *ltab = cu__meta(c, lcap * 4, (void **)&mt->ltab);
    const size_t goff = c->meta_used;
    int32_t *gtab = cu__meta(c, gcap * 4, (void **)&mt->gtab); /* last: sent up to its use */
    if (c->meta_used > c->meta_cap)
        return ASA_EINTERNAL;
    int t = 0, na = 0, nst = 0, nc = 0, nr = 0;
    int max_pos = 0;
    ng = nl = 0;
    for (int i = 0; i < ns; i++) {
        const eng_seq_step *s = &b->seqs[i];
        int last = s->pos0 + s->n_tokens - 1, nb;
        c->seq_tok0[i] = t;
        gtoff[i] = (int32_t)ng;
        ltoff[i] = 0;
        if (hasg) {
            const int32_t *tb = kv_seq_table(s->kv, KV_GLOBAL, &nb);
            memcpy(gtab + ng, tb, (size_t)(last / B + 1) * 4);
            ng += (size_t)(last / B + 1);
            for (int blk = s->pos0 / B; blk <= last / B; blk++) {
                int end = blk * B + B - 1;
                if (end >= s->pos0 && end <= last)
                    comp[nc++] = tb[blk];
            }
        }
        if (hasl) {
            const int32_t *tb = kv_seq_table(s->kv, KV_LOCAL, &nb);
            int first = s->pos0 - c->w + 1;
            first = (first > 0 ? first : 0) / B;
            memcpy(ltab + nl, tb + first, (size_t)(last / B - first + 1) * 4);
            ltoff[i] = (int32_t)nl - first; /* tab + ltoff[i] + block */
            nl += (size_t)(last / B - first + 1);
        }
        int last_anchor = -1;
        for (int q = 0; q < s->n_tokens; q++, t++) {
            int p = s->pos0 + q;
            tok[t] = s->tokens[q];
            pos[t] = p;
            if (p > max_pos)
                max_pos = p;
            seq[t] = i;
            anc_of[t] = -1;
            if (p % c->share == 0) {
                src[t] = t;
                anc_of[t] = na;
                anc[na++] = t;
                last_anchor = t;
            } else {
                int a = p - p % c->share;
                src[t] = a >= s->pos0 ? t - (p - a) : -(s->slot + 1);
            }
        }
        if (last_anchor >= 0) {
            st_slot[nst] = s->slot;
            st_tok[nst++] = last_anchor;
        }
        if (pad > 0)
            continue;
        if (s->all_logits && s->logits_out)
            for (int q = 0; q < s->n_tokens; q++)
                c->rows[nr++] = c->seq_tok0[i] + q;
        else if (s->sample || s->logits_out)
            c->rows[nr++] = c->seq_tok0[i] + s->n_tokens - 1;
    }
    /* quiet: no padding tokens (they are anchors), no anchor, completed
     * block or store; the lists stay padded, their counts 0 */
    c->quiet = pad > 0 && ns == pad && pad <= c->quiet_pad && na == 0 && nc == 0 && nst == 0;
    if (pad > 0) {
        /* the dummy sequence and tokens; padded lists; every row */
        gtoff[ns] = (int32_t)ng;
        gtab[ng++] = c->e->num_pages[KV_GLOBAL]; /* scratch pages */
        ltoff[ns] = (int32_t)nl;
        ltab[nl++] = c->e->num_pages[KV_LOCAL];
        for (; t < pad; t++) {
            tok[t] = 0;
            pos[t] = 0;
            seq[t] = ns;
            src[t] = t;
            anc_of[t] = na;
            anc[na++] = t;
        }
        for (; na < pad; na++)
            anc[na] = -1;
        for (; nc < NC; nc++)
            comp[nc] = -1;
        for (; nst < NST; nst++) {
            st_slot[nst] = -1;
            st_tok[nst] = 0;
        }
        for (nr = 0; nr < pad; nr++)
            c->rows[nr] = nr;
        /* context buckets in quarter steps of each power of two (64, 80,
         * 96, 112, 128, 160, ...): the split plans of the graph are made
         * for the bucket, so a power-of-two bucket just past 2^k (the
         * 128k benchmark at positions 131072+) planned for twice the
         * compressed keys and left half of the split blocks idle */
        int bucket = 64;
        while (bucket < max_pos + 1) {
            int p2 = 64;
            while (p2 * 2 <= bucket)
                p2 *= 2;
            bucket += p2 / 4;
        }
        max_pos = bucket - 1;
    }
    memcpy(rows, c->rows, (size_t)nr * 4);
    c->nl_used = (int)nl;
    c->h_seq = seq;
    c->max_pos = max_pos;
    c->one_per_seq = true;
    for (int i = 0; i < ns; i++)
        c->one_per_seq = c->one_per_seq && b->seqs[i].n_tokens == 1;
    mt->n_anchor = c->quiet ? 0 : na;
    mt->n_store = c->quiet ? 0 : nst;
    mt->n_comp = c->quiet ? 0 : nc;
    mt->n_rows = nr;
    *ntok = t;
    CU_TRY(cudaMemcpyAsync(c->d_meta, c->h_meta, goff + ng * 4, cudaMemcpyHostToDevice, c->st));
    return ASA_OK;
}

/* Attention grid for T tokens of a layer with G groups and at most
 * maxkeys keys per token: the whole latent group per block (one pass over
 * the keys for all its heads) while the grid is large; for small grids
 * fewer heads per block (down to 4), then the keys split across blocks
 * (flash-decoding) until about four blocks per SM. */
/* ns splits of a token's `tiles` key tiles, as far as they go: at most one
 * a tile, as many as c->part holds for T tokens, ATTN_MAX_SPLIT; evened out
 * (every split but the last takes *per tiles).  Returns the count, 1 for
 * none. */
static int cu__even_splits(const cu_be *c, long ns, int tiles, int T, int *per) {
    const long cap = c->part_heads / ((long)T * c->H); /* partials of one launch */
    if (ns > tiles)
        ns = tiles;
    if (ns > cap)
        ns = cap;
    if (ns > ATTN_MAX_SPLIT)
        ns = ATTN_MAX_SPLIT;
    if (ns < 2)
        return 1;
    *per = (int)((tiles + ns - 1) / ns);
    return (tiles + *per - 1) / *per;
}

static void cu__attn_plan(const cu_be *c, attn_params *at, int T, int G, int maxkeys) {
    const int hpg = c->H / G;
    int nh = hpg;
    /* at most 16 heads per block: 32 (asa-1.3b local) need 88 KB of shared
     * memory, 2 blocks = 8 warps per SM; 16 need 59 KB (3 blocks) */
    while (nh % 2 == 0 && nh > 16)
        nh /= 2;
    /* long key ranges keep 8 heads a block (the register-tiled score and
     * sum loops need 8; the compressed branch at 128k: 2.16 -> 2.00 ms a
     * step at batch 1 on the H200), short ones go down to 4 (more blocks;
     * 8 cost 1k contexts 0.03 ms); batch-invariant mode keeps 4 (maxkeys
     * depends on the rest of the batch) */
    const int nh_min = c->nh_min > 0                     ? c->nh_min
                       : !c->invariant && maxkeys > 32 * ATTN_KT ? 8
                                                                  : 4;
    while (nh % 2 == 0 && nh > nh_min && (long)T * G * (hpg / nh) < c->n_sm / 2)
        nh /= 2;
    const long blocks = (long)T * G * (hpg / nh);
    at->heads_per_block = nh;
    at->n_split = 1;
    at->split_keys = 0;
    at->part = NULL;
    if (c->invariant) {
        /* fixed split boundaries: a token's sums depend on its keys only
         * (an unsplit token and a one-split merge give the same bits) */
        const int ns = (maxkeys + CU_INV_SPLIT - 1) / CU_INV_SPLIT;
        if (ns > 1) { /* cu__attn_run runs token chunks that fit c->part */
            at->n_split = ns;
            at->split_keys = CU_INV_SPLIT;
            at->part = c->part;
        }
        return;
    }
    if (maxkeys <= ATTN_KT)
        return;
    const int tiles = (maxkeys + ATTN_KT - 1) / ATTN_KT;
    /* small grids: about four blocks per SM, and at most CU_SPLIT_TILES
     * key tiles walked by one block (the compressed branch at 128k has
     * 256 tiles per group: batch 8 had 9 splits of 29 tiles); full grids:
     * split only very long ranges (4 x CU_SPLIT_TILES tiles per block) */
    int ns = blocks < c->n_sm ? (int)(((long)c->split_bps * c->n_sm + blocks - 1) / blocks) : 1;
    const int lim = blocks < c->n_sm ? c->split_tiles : 4 * c->split_tiles;
    if (ns < (tiles + lim - 1) / lim)
        ns = (tiles + lim - 1) / lim;
    if (ns > tiles / c->split_min)
        ns = tiles / c->split_min;
    int per = 0;
    ns = cu__even_splits(c, ns, tiles, T, &per);
    if (ns > 1) {
        at->n_split = ns;
        at->split_keys = per * ATTN_KT;
        at->part = c->part;
    }
}

/* Many tokens: the per-head products of absorb (qt_h = W_UK,h^T qC_h) and
 * expand (o_h = W_UV,h u_h) as one strided batched cuBLAS product each over
 * the heads, on the f32 copy of kv_b_proj (column-major views: W_UK,h is
 * dg x dh with ld dg; W_UV,h is its dv rows after dh, read transposed). */
static asa_err cu__absorb_blas(cu_be *c, const cu_layer *y, int T) {
    const float one = 1.0f, zero = 0.0f;
    const int H = c->H, dh = c->dh, dv = c->dv, dg = y->dg;
    CUBLAS_TRY(cublasGemmStridedBatchedEx(
        c->cb, CUBLAS_OP_N, CUBLAS_OP_N, dg, T, dh, &one, y->kvbf, CUDA_R_32F, dg,
        (long long)(dh + dv) * dg, c->qa, CUDA_R_32F, y->n_in, (long long)(dh + c->dR), &zero,
        c->qt, CUDA_R_32F, H * dg, (long long)dg, H, c->heads_compute, CUBLAS_GEMM_DEFAULT));
    return ASA_OK;
}

static asa_err cu__expand_blas(cu_be *c, const cu_layer *y, int T) {
    const float one = 1.0f, zero = 0.0f;
    const int H = c->H, dh = c->dh, dv = c->dv, dg = y->dg;
    CUBLAS_TRY(cublasGemmStridedBatchedEx(
        c->cb, CUBLAS_OP_T, CUBLAS_OP_N, dv, T, dg, &one, y->kvbf + (size_t)dh * dg, CUDA_R_32F,
        dg, (long long)(dh + dv) * dg, c->u, CUDA_R_32F, H * dg, (long long)dg, &zero, c->o,
        CUDA_R_32F, H * dv, (long long)dv, H, c->heads_compute, CUBLAS_GEMM_DEFAULT));
    return ASA_OK;
}

/* One attention launch (or several token chunks) of at->mode over at most
 * maxkeys keys a token: the plan (cu__attn_plan), then the kernel. */
static asa_err cu__attn_run(cu_be *c, attn_params *at, int maxkeys) {
    const int T = at->T;
    cu__attn_plan(c, at, T, at->c.G, maxkeys);
    if (c->mma_min_t > 0 && c->mma_dec > 0 && c->one_per_seq && !c->invariant &&
        (maxkeys + 63) / 64 <= c->mma_dec && T >= c->mma_dec_min) {
        /* decode steps on tensor cores, one token per thread block (only
         * where a token has at most mma_dec tiles of 64 keys, and only for
         * batches of mma_dec_min and more.  H200, asa-1.3b, 1k:
         * batch 32 / 64 / 128 2.99 / 3.21 / 3.85 ms a step against 3.21 /
         * 4.53 / 6.43 on attn_latent; batch 1 and 8 were 1.2x and 1.02x
         * slower even with splits (a block walks its range tile after
         * tile).  Split so that a small grid has about one block per SM:
         * batch 64 at 4k 3.69 -> 3.32 ms; two per SM or splitting 128+
         * pairs was slower) */
        attn_params q = *at;
        q.n_split = 1;
        q.split_keys = 0;
        q.part = NULL;
        q.merge_cnt = NULL;
        /* PDL launch and the keys' L2 prefetch before its wait up to 8
         * tokens (H200, asa-1.3b, 4k, alternated: batch 1 / 8 -2.3 / -1.1
         * %; with PDL from 16 tokens on, batch 16 / 32 / 64 lost 2.1 / 4.9
         * / 1.6 %, likely as the attention's early resident blocks, 251
         * registers a thread, crowd the RoPE kernel's many blocks) */
        q.dec_prefetch = T <= c->dec_pf_t;
        q.dec_plain = T > c->dec_pdl_t;
        if (c->mma_dec_split > 0 && (long)T * at->c.G <= c->mma_dec_split_maxb) {
            /* a token's keys split across blocks until the grid holds
             * about mma_dec_split blocks per SM (ranges of whole key
             * tiles; the partials must fit c->part) */
            const long blocks = (long)T * at->c.G;
            const int kt = c->mma_dec_kt    ? c->mma_dec_kt
                           : T <= CU_DEC_KT16_T ? 16
                           : T <= CU_DEC_KT32_T ? 32
                                                : 64;
            int per = 0;
            const int ns = cu__even_splits(
                c, ((long)c->mma_dec_split * c->n_sm + blocks - 1) / blocks,
                (maxkeys + kt - 1) / kt, T, &per);
            if (ns > 1) {
                q.n_split = ns;
                q.split_keys = per * kt;
                q.part = c->part;
                const long cap = c->part_heads / ((long)T * c->H);
                const int ns4 = (ns + 3) / 4 * 4;
                if (c->dec_merge && ns4 <= ATTN_DEC_MERGE_MAX && ns4 <= cap) {
                    /* merged in the launch: a multiple of 4 splits of
                     * whole 16-key stages (the last ones may be empty).
                     * H200, asa-1.3b, alternated against the merge
                     * launch: 4k batch 1 / 16 / 32 / 64 / 128 -2.6 /
                     * -0.7 / -2.2 / -5.0 / -4.9 %, 1k batch 1 / 2 / 32 /
                     * 64 / 128 -1.3 / -1.6 / -1.5 / -2.3 / -1.6 %, batch
                     * 8 within +-0.3 % */
                    q.dec_merge = 1;
                    q.dec_bw = c->dec_bw;
                    q.n_split = ns4;
                    q.split_keys = ((maxkeys + ns4 - 1) / ns4 + 15) / 16 * 16;
                }
            }
        }
        /* the most keys a warp walks (the block scores' rows) */
        q.sel_keys = ((q.n_split > 1 ? q.split_keys : maxkeys) + 15) / 16 * 16;
        asa_err r = attn_mma_cuda(&q, c->mma_flags | ATTN_MMA_TOKEN_ROWS, c->st);
        if (r != ASA_EUNSUPPORTED)
            return r;
    }
    if (c->mma_min_t > 0 && T >= c->mma_min_t && !c->invariant && !c->one_per_seq) {
        /* prefill-sized launches on tensor cores (no split needed).  Not
         * this schedule for decode steps: its blocks take consecutive rows,
         * so with one token per sequence a block walks the keys of two
         * sequences with half its rows masked (batch 64 at 4k on the H200:
         * attention 4.5 ms a step against 2.3 ms with attn_latent); those
         * take the token-rows form above */
        asa_err r = attn_mma_cuda(at, c->mma_flags, c->st);
        if (r != ASA_EUNSUPPORTED)
            return r;
    }
    long per = at->n_split > 1 ? c->part_heads / ((long)c->H * at->n_split) : T;
    if (per < 1)
        return ASA_EINTERNAL;
    /* split launches merge in their last split block (one launch less; the
     * same bits as the merge launch; at most per * H <= part_heads counters),
     * except in batch-invariant mode (kept as it was) and with
     * ASA_CUDA_FUSE=0 */
    at->merge_cnt = at->n_split > 1 && c->fuse_merge && !c->invariant ? c->mcnt : NULL;
    for (int t0 = 0; t0 < T; t0 += (int)per) {
        at->t_off = t0;
        at->T = T - t0 < per ? T - t0 : (int)per;
        CU_OK(attn_latent_cuda(at, c->st));
    }
    at->t_off = 0;
    at->T = T;
    return ASA_OK;
}

/* The fused decode kernels (default mode, ASA_CUDA_FUSE): steps of at most
 * gemv_rows tokens (the products run as GEMV) and CU_FUSE_ROWS.  Batch-
 * invariant mode keeps the separate kernels. */
static bool cu__fused(const cu_be *c, int T) {
    return c->fuse && !c->invariant && T <= c->gemv_rows && T <= CU_FUSE_ROWS;
}

/* The [W | W] rows of cu__kcat: one allocation for every layer's w_in2,
 * filled on the engine stream (ahead of the products that read them), at
 * the first step that takes that path rather than at create (allocations
 * among the weights cost decode 2-6 % a step; see cu__xattn_init).  An
 * allocation failure is cleared from the runtime's last error (the
 * launchers' checks read it) and returns ASA_ENOMEM; the caller turns the
 * path off for good on any failure. */
static asa_err cu__kcat_init(cu_be *c) {
    const size_t d = (size_t)c->d;
    size_t n = 0;
    for (int l = 0; l < c->L; l++)
        n += (size_t)c->layers[l].n_in * 2 * d;
    if (cudaMalloc((void **)&c->w2, n * sizeof(uint16_t)) != cudaSuccess) {
        (void)cudaGetLastError();
        c->w2 = NULL;
        return ASA_ENOMEM;
    }
    uint16_t *p = c->w2;
    for (int l = 0; l < c->L; l++) {
        cu_layer *y = &c->layers[l];
        /* W into columns [0, d), and again into [d, 2d) */
        for (int h = 0; h < 2; h++)
            CU_TRY(cudaMemcpy2DAsync(p + h * d, 4 * d, y->w_in, 2 * d, 2 * d, (size_t)y->n_in,
                                     cudaMemcpyDeviceToDevice, c->st));
        y->w_in2 = p;
        p += (size_t)y->n_in * 2 * d;
    }
    return ASA_OK;
}

/* Whether the attention input (q|kv_a|g) of a step of T tokens runs as one
 * cuBLAS product with K = 2d: RMSNorm writes each row as [lo | hi] (row
 * stride 2d, in xhi; lo first, see the top comment) and the product reads
 * it against the layer's [W | W] rows (w_in2): the same sum lo.W + hi.W in
 * one f32 accumulation.  Where
 * the norm writes the parts and the pair would otherwise take two cuBLAS
 * products (cu__gemm_parts above stack_m / 2 rows, beyond gemm_small's
 * rows too): the second of those re-read the f32 output (beta = 1; 8k
 * prefill of asa-1.3b on an H200: 3.8 + 4.4 ms, 0.6 ms of it that read).
 * Needs T x 2d elements of xhi (asa-1.3b: F >= 2d, always).  The weights
 * come at the first such step, never while a graph is being captured
 * (decode batches of more than stack_m / 2 sequences take the path too;
 * their key's first run is eager and allocates).  ASA_CUDA_KCAT=0, or a
 * failed allocation: the two products. */
static bool cu__kcat(cu_be *c, int T) {
    if (!c->kcat || !cu__presplit(c, T) || 2 * T <= c->stack_m || !cu__want_lo(c, T, true) ||
        (size_t)T * 2 * c->d > c->xhi_n)
        return false;
    if (!c->w2) {
        if (c->capturing)
            return false;
        asa_err e = cu__kcat_init(c);
        if (e) {
            ASA_LOGW("cuda", "attention input as one product with K = 2d off: %s",
                     asa_strerror(e));
            c->kcat = false;
            return false;
        }
    }
    return true;
}

/* y = W . RMSNorm(x (+ residual)), the residual stream updated: with
 * add_res, the rows x + c->res become the residual.  Fused (cu__fused):
 * one GEMV kernel normalises in its prologue and its block 0 writes the
 * sum into the other residual buffer (the kernel's other blocks still read
 * the current one), which becomes c->res.  Otherwise RMSNorm into hn (in
 * place on c->res) and the product.  W2: NULL, or W's rows twice
 * ([N][2d], where cu__kcat holds): the norm writes [lo | hi] rows and one
 * product with K = 2d reads them.  x2: NULL, or the other parts of the
 * product that wrote x (n2 blocks of [T][d] from x2 on, cu__gemm_out): the
 * norm adds them to x first (the fused GEMV path adds them in place
 * beforehand).  half2: as cu__gemm_parts', for the product's output (its
 * reader adds one second half). */
static asa_err cu__norm_gemm(cu_be *c, const float *x, const float *x2, int n2, bool add_res,
                             const float *w_norm, int T,
                             const uint16_t *W, const uint16_t *W2, int N, float *y,
                             bool want_lo, float **half2) {
    if (half2)
        *half2 = NULL;
    const int d = c->d;
    if (cu__fused(c, T)) {
        for (int q = 0; x2 && q < n2; q++) /* the GEMV's prologue reads one x */
            CU_OK(cb_add2_cuda(T, d, x, x2 + (size_t)q * T * d, (float *)x, c->st));
        x2 = NULL;
        float *alt = c->res == c->x ? c->x2 : c->x;
        gemv_params gp = {.M = T, .N = N, .K = d, .x = x, .x_type = KC_F32, .ldx = d, .w = W,
                          .ldw = d, .y_f32 = y, .ldy = N, .x_mode = GEMV_X_NORM,
                          .res = add_res ? c->res : NULL, .res_out = add_res ? alt : NULL,
                          .norm_w = w_norm, .eps = c->eps};
        if (gemv_params_check(&gp) == ASA_OK) {
            cu__mark(c, CU_T_PROJ);
            CU_OK(gemv_bf16_cuda(&gp, c->st));
            if (add_res)
                c->res = alt;
            return ASA_OK;
        }
    }
    float *residual = add_res ? c->res : NULL;
    cu__mark(c, CU_T_OTHER);
    if (cu__presplit(c, T)) {
        /* the norm writes the bf16 parts the cuBLAS product reads */
        if (W2) {
            /* rows [lo | hi] */
            asa_err e = cb_rmsnorm_split_cuda(T, d, c->eps, x, x2, n2, residual, w_norm,
                                              c->xhi + d, c->xhi, 2 * (int64_t)d, c->st);
            if (e != ASA_EUNSUPPORTED) {
                CU_OK(e);
                cu__mark(c, CU_T_PROJ);
                /* the product on one part, K = 2d */
                return cu__gemm_parts(c, T, 2 * d, W2, N, y, false, false, half2, NULL);
            }
        }
        const bool lo = cu__want_lo(c, T, want_lo);
        asa_err e = cb_rmsnorm_split_cuda(T, d, c->eps, x, x2, n2, residual, w_norm, c->xhi,
                                          cu__lo_buf(c, T, d, lo), d, c->st);
        if (e != ASA_EUNSUPPORTED) {
            CU_OK(e);
            cu__mark(c, CU_T_PROJ);
            return cu__gemm_parts(c, T, d, W, N, y, lo, false, half2, NULL);
        }
    }
    CU_OK(cu__rmsnorm(c, x, x2, n2, residual, w_norm, c->hn, T));
    cu__mark(c, CU_T_PROJ);
    return cu__gemm(c, c->hn, T, d, W, N, y, want_lo, half2, NULL);
}

/* Whether absorb / expand of a T-token step run on tensor cores. */
static bool cu__heads_mma(const cu_be *c, int T) {
    return c->heads_mma_t > 0 && T >= c->heads_mma_t && T <= c->heads_mma_max;
}

/* The attention-side folds of the default mode (rope + absorb as one
 * launch; with one token per sequence also the compressed entries in the
 * rope kernel and the anchors' stores in the block choice): whenever the
 * absorb would run as its vector kernel anyway (below the batched-cuBLAS
 * threshold, outside the tensor-core range), not only at GEMV sizes.
 * Batch-invariant mode keeps the separate kernels.  (Folding the
 * compressed entries and the stores at every decode batch, with the
 * batched absorb too, was measured slower at 48-64 tokens, ~3 % at 4k:
 * not taken.  In the tensor-core range rope + absorb are one launch too:
 * cu__layer, rope_mma.) */
static bool cu__fused_attn(const cu_be *c, const cu_layer *y, int T) {
    return c->fuse && !c->invariant && !(y->kvbf && T >= c->blas_heads_t) &&
           !cu__heads_mma(c, T);
}

/* absorb / expand of T tokens: on tensor cores from heads_mma_t to
 * heads_mma_max tokens (where the shapes suit it), else batched cuBLAS
 * from blas_heads_t on, else the per-head kernels.  cu__expand with
 * *parts true: on tensor cores it writes o_proj's bf16 input parts (hi in
 * c->xhi and, where o_proj reads it, lo) instead of o; *parts says on
 * return whether it did. */
static asa_err cu__absorb(cu_be *c, const cu_layer *y, int T, const absorb_params *ap) {
    if (cu__heads_mma(c, T)) {
        asa_err e = cb_absorb_mma_cuda(ap, c->st);
        if (e != ASA_EUNSUPPORTED)
            return e;
    }
    return y->kvbf && T >= c->blas_heads_t ? cu__absorb_blas(c, y, T) : cb_absorb_cuda(ap, c->st);
}

static asa_err cu__expand(cu_be *c, const cu_layer *y, int T, const expand_params *ep,
                          bool *parts) {
    if (cu__heads_mma(c, T)) {
        expand_params q = *ep;
        if (*parts) {
            q.o_hi = c->xhi;
            q.o_lo = cu__lo_buf(c, T, ep->H * ep->dv, cu__want_lo(c, T, false));
        }
        asa_err e = cb_expand_mma_cuda(&q, c->st);
        if (e != ASA_EUNSUPPORTED)
            return e;
    }
    *parts = false;
    return y->kvbf && T >= c->blas_heads_t ? cu__expand_blas(c, y, T) : cb_expand_cuda(ep, c->st);
}

/* The buffers of the expanded form, allocated at its first use rather than
 * at create: allocated between and after the weights they moved the
 * weights and pages and cost decode 2-6 % a step (H200, asa-1.3b; the
 * same binary with the form off was as fast as before).  Nothing runs in
 * the stream meanwhile that reads them.  On failure the form stays off. */
static asa_err cu__xattn_init(cu_be *c) {
    const int H = c->H, dh = c->dh, dv = c->dv, np = c->xcap / c->B;
    int32_t *io = malloc((size_t)np * sizeof(int32_t));
    if (!io)
        return ASA_ENOMEM;
    for (int i = 0; i < np; i++)
        io[i] = i;
    asa_err err = ASA_OK;
    if ((err = cu__malloc((void **)&c->xkv, (size_t)c->xcap * c->xS * 2)) ||
        (err = cu__malloc((void **)&c->xc, (size_t)c->xcap * c->dgl * 2)) ||
        (err = cu__malloc((void **)&c->iota, (size_t)np * sizeof(int32_t))) ||
        (err = cudaMemcpy(c->iota, io, (size_t)np * sizeof(int32_t), cudaMemcpyHostToDevice)
                   ? ASA_ECUDA
                   : ASA_OK)) {
        free(io);
        return err;
    }
    free(io);
    for (int l = 0; l < c->L; l++) {
        cu_layer *y = &c->layers[l];
        if (y->type != ENG_LAYER_LOCAL)
            continue;
        /* per head: the W_UV rows, then the W_UK rows */
        const size_t hp = (size_t)(dh + dv) * y->dg * 2;
        CU_OK(cu__malloc((void **)&y->kvbx, (size_t)H * hp));
        CU_TRY(cudaMemcpy2DAsync(y->kvbx, hp, y->kvb + (size_t)dh * y->dg, hp,
                                 (size_t)dv * y->dg * 2, (size_t)H, cudaMemcpyDeviceToDevice,
                                 c->st));
        CU_TRY(cudaMemcpy2DAsync((char *)y->kvbx + (size_t)dv * y->dg * 2, hp, y->kvb, hp,
                                 (size_t)dh * y->dg * 2, (size_t)H, cudaMemcpyDeviceToDevice,
                                 c->st));
    }
    return ASA_OK;
}

/* The expanded form of a local layer's attention (prefill): the window's
 * latents gathered from the cache pages into rows (one per key of the
 * step's local table, xc) and expanded by one cuBLAS product into per-head
 * [v | k] rows plus the shared rope key (xkv, bf16); then attn_mma
 * (ATTN_MMA_VFIRST) with the queries as projected (qa's [q_nope | q_rope])
 * and the page table iota over the rows, writing o_proj's input: c->o, or
 * (u16: where o_proj reads the bf16 part alone) its bf16 part in c->xhi
 * directly, no split launch.  Per
 * head and key 2 (64 + 32) + 2 x 64 FLOPs instead of the absorbed 2 (192 +
 * 32) + 2 x 192, and no absorb / expand products. */
static asa_err cu__xattn(cu_be *c, const cu_layer *y, int T, int64_t layer_off, bool u16) {
    const int H = c->H, dh = c->dh, dv = c->dv, B = c->B, rows = c->nl_used * B;
    const float one = 1.0f, zero = 0.0f;
    xgather_params gp = {.rows = rows, .B = B, .pages = c->mt.ltab, .kv = c->lmem,
                         .page_elems = c->lpage, .layer_off = layer_off, .dc = y->dg,
                         .dR = c->dR, .c_out = c->xc, .ld_c = y->dg,
                         .r_out = c->xkv + (size_t)H * (dh + dv), .ld_r = c->xS};
    CU_OK(cb_xgather_cuda(&gp, c->st));
    CUBLAS_TRY(cublasGemmEx(c->cb, CUBLAS_OP_T, CUBLAS_OP_N, H * (dh + dv), rows, y->dg, &one,
                            y->kvbx, CUDA_R_16BF, y->dg, c->xc, CUDA_R_16BF, y->dg, &zero, c->xkv,
                            CUDA_R_16BF, c->xS, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    attn_params at = {.mode = ATTN_LOCAL, .T = T, .H = H, .scale = c->scale, .window = c->w,
                      .c = {.kv = c->xkv, .page_elems = (int64_t)B * c->xS, .layer_off = 0,
                            .B = B, .G = H, .dg = dh + dv, .dR = c->dR, .tab = c->iota,
                            .seq_toff = c->mt.ltoff},
                      .tok_pos = c->mt.pos, .tok_seq = c->mt.seq, .qr = c->qa + dh,
                      .ld_qr = y->n_in, .qr_stride = dh + c->dR, .u = c->o,
                      .u_bf16 = u16 ? c->xhi : NULL};
    return attn_mma_cuda(&at, (c->mma_flags & (ATTN_MMA_QSPLIT_ALL | ATTN_MMA_NOFAST)) |
                                  ATTN_MMA_VFIRST,
                         c->st);
}

/* Candidate tiles a warp of the decode block scoring (select_params.tiles)
 * for pairs (anchor, group) over nb candidates: the most of 16, 8, 4 that
 * leaves every pair at least CU_SEL_CHUNKS chunks (a block's chunk: 32 x
 * tiles candidates) and the grid at least two blocks an SM; else 2.  H200,
 * asa-1.3b, alternated against 2 (the default before): 32k batch 32 / 64
 * with 16 tiles -6.6 / -9.1 %, 8 tiles -3.5 / -6.9 %; 128k batch 8 with 8
 * tiles -4.4 %; 8k batch 128 with 8 tiles -2.8 %; at 4k (5 chunks of 2
 * tiles) 8 tiles were 1.8-3 % slower (a pair's last chunk mostly empty). */
#define CU_SEL_CHUNKS 5
static int cu__sel_tiles(const cu_be *c, long pairs, int nb) {
    if (c->sel_tiles > 0)
        return c->sel_tiles;
    for (int w = 16; w > 2; w /= 2) {
        const long csz = 32L * w;
        if (CU_SEL_CHUNKS * csz <= nb && pairs * ((nb + csz - 1) / csz) >= 2L * c->n_sm)
            return w;
    }
    return 2;
}

static asa_err cu__layer(cu_be *c, const cu_layer *y, int T, bool first) {
    const int d = c->d, H = c->H, F = c->F;
    const cu_meta *mt = &c->mt;
    const bool global = y->type == ENG_LAYER_GLOBAL;
    uint16_t *kv = global ? c->gmem : c->lmem;
    const int64_t page_elems = global ? c->gpage : c->lpage;
    const int64_t layer_off = (int64_t)y->ti * (global ? c->B + 1 : c->B) * y->S;
    const int32_t *tab = global ? mt->gtab : mt->ltab, *toff = global ? mt->gtoff : mt->ltoff;

    /* attention input */
    const bool acc = cu__acc_res(c, T); /* o_proj, down add into c->res */
    const float *in2 = first || acc ? NULL : c->tmp2; /* the last down's other parts */
    const int in2_n = c->tmp2_n;
    c->tmp2 = NULL;
    /* (qa2: where the product is a stacked hi + lo pair, its second half;
     * rope_cache adds it in place, no add2 launch: only where rope_cache
     * runs alone, as measured: with the fused rope + absorb the add2
     * launch is faster) */
    float *qa2 = NULL;
    CU_OK(cu__norm_gemm(c, first || acc ? c->res : c->tmp, in2, in2_n, !first && !acc,
                        y->attn_norm, T, y->w_in, cu__kcat(c, T) ? y->w_in2 : NULL, y->n_in,
                        c->qa, true, c->qa2_rope && !cu__fused_attn(c, y, T) ? &qa2 : NULL));
    cu__mark(c, CU_T_ATTN);
    rope_cache_params rp = {.T = T, .H = H, .dh = c->dh, .dR = c->dR, .G = y->G, .dg = y->dg,
                            .eps = c->eps, .qa = c->qa, .ld_qa = y->n_in, .cosv = c->cosv,
                            .sinv = c->sinv, .norm_w = y->kv_a_norm, .tok_pos = mt->pos,
                            .tok_seq = mt->seq, .tab = tab, .seq_toff = toff, .kv = kv,
                            .page_elems = page_elems, .layer_off = layer_off, .B = c->B,
                            /* fused decode: the compressed entries with the
                             * cache writes (a block completes at one token) */
                            .compress = global && cu__fused_attn(c, y, T) && c->one_per_seq,
                            .qa2 = qa2};
    absorb_params ap = {.T = T, .H = H, .dh = c->dh, .dv = c->dv, .dg = y->dg, .qa = c->qa,
                        .ld_qa = y->n_in, .q_stride = c->dh + c->dR, .kvb = y->kvb, .qt = c->qt};
    /* expanded local attention (prefill, not decode-only steps; never in a
     * captured graph: its row count is the step's, not the padded graph's) */
    bool xa = !global && c->xattn_t > 0 && T >= c->xattn_t && !c->one_per_seq &&
              !c->capturing && (int64_t)c->nl_used * c->B <= c->xcap;
    if (xa && !c->xkv) {
        asa_err e = cu__xattn_init(c);
        if (e) {
            /* a failed allocation stays the runtime's last error, which
             * the next launch check would report as its own */
            (void)cudaGetLastError();
            ASA_LOGW("cuda", "expanded local attention off: %s", asa_strerror(e));
            c->xattn_t = 0;
            xa = false;
        }
    }
    /* the expanded form writes o_proj's input as its bf16 part where the
     * product reads that part alone (ASA_CUDA_XATTN_BF16=0: f32 + split) */
    const bool xa16 = xa && c->xattn_bf16 && cu__presplit(c, T) && !cu__want_lo(c, T, false);
    /* rope alone, or rope + absorb in one launch (the vector absorb, or
     * from heads_mma_t tokens the tensor-core one) */
    const bool rope_mma = !xa && c->fuse && c->rope_mma && cu__heads_mma(c, T);
    asa_err fe = xa                     ? rope_cache_cuda(&rp, c->st)
                 : cu__fused_attn(c, y, T) ? cb_rope_absorb_cuda(&rp, &ap, c->st)
                 : rope_mma                ? cb_rope_absorb_mma_cuda(&rp, &ap, c->st)
                                           : ASA_EUNSUPPORTED;
    if (fe != ASA_EUNSUPPORTED) {
        CU_OK(fe);
        c->n_rope_mma += rope_mma;
    } else {
        CU_OK(rope_cache_cuda(&rp, c->st));
        CU_OK(cu__absorb(c, y, T, &ap));
    }

    /* attention */
    attn_params at = {.T = T, .H = H, .scale = c->scale, .window = c->w,
                      .c = {.kv = kv, .page_elems = page_elems, .layer_off = layer_off,
                            .B = c->B, .G = y->G, .dg = y->dg, .dR = c->dR, .tab = tab,
                            .seq_toff = toff},
                      .tok_pos = mt->pos, .tok_seq = mt->seq, .qt = c->qt,
                      .qr = c->qa + c->dh, .ld_qr = y->n_in, .qr_stride = c->dh + c->dR};
    const int mp = c->max_pos;
    if (xa) {
        CU_OK(cu__xattn(c, y, T, layer_off, xa16));
    } else if (!global) {
        at.mode = ATTN_LOCAL;
        at.u = c->u;
        CU_OK(cu__attn_run(c, &at, mp + 1 < c->w ? mp + 1 : c->w));
    } else {
        attn_sets sets = {.sel_src = mt->sel_src, .tsel = c->tsel, .tsel_cnt = c->tsel_cnt,
                          .slot_sel = c->sel, .slot_cnt = c->sel_cnt, .Lg = c->Lg,
                          .ti = y->ti, .top_n = c->top_n};
        compress_params cp = {.n = mt->n_comp, .pages = mt->comp, .kv = kv,
                              .page_elems = page_elems, .layer_off = layer_off, .B = c->B,
                              .S = y->S};
        if (!rp.compress) /* else written by rope_cache above */
            CU_OK(compress_cuda(&cp, c->st));
        at.mode = ATTN_CMP;
        at.u = c->ucmp;
        at.lse = c->lse;
        /* decode steps: the anchors' block scores from this launch where
         * the decode kernel can (sel_done set), else the scoring launch */
        int sel_done = 0;
        if (c->sel_fold && c->one_per_seq && mt->n_anchor > 0) {
            at.sel_scores = c->scores;
            at.sel_anchor = mt->anc_of;
            at.sel_nb_max = c->nb_max;
            at.sel_init = c->init_b;
            at.sel_local = c->local_b;
            at.sel_done = &sel_done;
        }
        CU_OK(cu__attn_run(c, &at, (mp + 1) / c->B));
        at.sel_scores = NULL;
        at.sel_done = NULL;
        select_params sp = {.n_anchors = mt->n_anchor, .H = H, .anchors = mt->anchors,
                            .scale = c->scale, .init_blocks = c->init_b,
                            .local_blocks = c->local_b, .nb_max = c->nb_max, .c = at.c,
                            .tok_pos = mt->pos, .tok_seq = mt->seq, .qt = c->qt, .qr = at.qr,
                            .ld_qr = at.ld_qr, .qr_stride = at.qr_stride, .lse = c->lse,
                            .s = sets, .scores = c->scores, .exact = c->sel_exact,
                            .anchor_runs = !c->one_per_seq,
                            .done_cnt = c->fuse && !c->invariant ? c->scnt : NULL,
                            .scored = sel_done,
                            .tiles = c->one_per_seq ? cu__sel_tiles(c, (long)mt->n_anchor * y->G,
                                                                    (mp + 1) / c->B + 1)
                                                    : 0,
                            .nb_step = (mp + 1) / c->B + 1};
        if (rp.compress) { /* fused decode, one token per sequence: the stores too */
            sp.n_store = mt->n_store;
            sp.st_slot = mt->st_slot;
            sp.st_tok = mt->st_tok;
        }
        CU_OK(select_blocks_cuda(&sp, c->st));
        at.mode = ATTN_SLC;
        at.s = sets;
        at.gate = c->qa + c->nq + y->S;
        at.u_cmp = c->ucmp;
        at.u = c->u;
        at.lse = NULL;
        CU_OK(cu__attn_run(c, &at, c->top_n * c->B));
        selstore_params ss = {.n = mt->n_store, .G = y->G, .slot = mt->st_slot,
                              .tok = mt->st_tok, .s = sets};
        if (!sp.n_store) /* else stored by the block choice */
            CU_OK(selstore_cuda(&ss, c->st));
    }

    /* output projection, MLP */
    expand_params ep = {.T = T, .H = H, .dg = y->dg, .dv = c->dv, .u = c->u, .wuvT = y->wuvT,
                        .o = c->o, .ld_o = (int64_t)H * c->dv};
    /* o16: o_proj's bf16 input parts are written (by the expanded
     * attention: hi alone; by the expand on tensor cores where o_proj reads
     * parts: hi and, where it reads it, lo; no split launch) */
    bool o16 = xa16;
    if (!xa) { /* else o written by cu__xattn */
        o16 = c->expand_parts && cu__presplit(c, T);
        CU_OK(cu__expand(c, y, T, &ep, &o16));
    }
    cu__mark(c, CU_T_PROJ);
    /* o_proj, gate|up and down: where they run as stacked hi + lo products
     * or in K-halves, the next kernel (RMSNorm, SiLU-gate) adds the parts
     * (no add2) */
    CU_OK(cu__gemm_out(c, acc, o16 ? NULL : c->o, T, H * c->dv, y->o_proj, d));
    const float *o2 = c->tmp2;
    const int o2_n = c->tmp2_n;
    c->tmp2 = NULL;
    float *gu2;
    CU_OK(cu__norm_gemm(c, acc ? c->res : c->tmp, o2, o2_n, !acc, y->mlp_norm, T, y->w_gu, NULL,
                        2 * F, c->gu, false, &gu2));
    if (!gu2 && cu__fused(c, T) && (c->fuse_silu == 2 || (c->fuse_silu == 1 && T == 1))) {
        /* SiLU-gate in the down product's prologue */
        gemv_params gp = {.M = T, .N = d, .K = F, .x = c->gu, .x_type = KC_F32, .ldx = 2 * F,
                          .w = y->down, .ldw = F, .y_f32 = c->tmp, .ldy = d,
                          .x_mode = GEMV_X_SILU};
        if (gemv_params_check(&gp) == ASA_OK)
            return gemv_bf16_cuda(&gp, c->st);
    }
    cu__mark(c, CU_T_OTHER);
    /* SiLU-gate straight into the bf16 input parts of the down product
     * (hi, and lo where it reads lo) */
    const bool act_bf16 = cu__presplit(c, T), act_lo = act_bf16 && cu__want_lo(c, T, false);
    silu_mul_params sm = {.rows = T, .F = F, .gu = c->gu, .gu_type = KC_F32, .ld_gu = 2 * F,
                          .out = act_bf16 ? (void *)c->xhi : (void *)c->act,
                          .out_type = act_bf16 ? KC_BF16 : KC_F32, .ld_out = F, .gu2 = gu2,
                          .out_lo = act_lo ? cu__lo_buf(c, T, F, true) : NULL};
    CU_OK(silu_mul_cuda(&sm, c->st));
    cu__mark(c, CU_T_PROJ);
    return cu__gemm_out(c, acc, act_bf16 ? NULL : c->act, T, F, y->down, d);
}

/* Logits of rows[r0 .. r0+n) into c->logits. */
static asa_err cu__logits(cu_be *c, int r0, int n) {
    /* rows r0 .. r0 + n - 1 in order (every decode graph): no gather */
    bool ident = true;
    for (int r = 0; r < n && ident; r++)
        ident = c->rows[r0 + r] == r0 + r;
    const float *h = c->hn + (size_t)r0 * c->d;
    if (!ident) {
        CU_OK(cb_gather_rows_cuda(n, c->d, c->mt.rows + r0, c->hn, c->d, c->hrows, c->st));
        h = c->hrows;
    }
    cu__mark(c, CU_T_PROJ);
    CU_OK(cu__gemm(c, h, n, c->d, c->lm_head, c->V, c->logits, false, NULL, NULL));
    cu__mark(c, CU_T_OTHER);
    return ASA_OK;
}

/* The device work of a step up to the first n0 rows of logits (everything
 * a captured graph holds). */
static asa_err cu__forward(cu_be *c, int T, int n0) {
    c->res = c->x; /* the same pointers in every pass (graph capture) */
    c->tmp2 = NULL;
    CU_OK(cb_embed_cuda(T, c->d, c->mt.tok, c->embed, c->x, c->st));
    for (int l = 0; l < c->L; l++)
        CU_OK(cu__layer(c, &c->layers[l], T, l == 0));
    cu__mark(c, CU_T_OTHER);
    const bool tmp_out = c->L > 0 && !cu__acc_res(c, T); /* the last down's output */
    const float *out2 = tmp_out ? c->tmp2 : NULL;
    c->tmp2 = NULL;
    CU_OK(cu__rmsnorm(c, tmp_out ? c->tmp : c->res, out2, c->tmp2_n, tmp_out ? c->res : NULL,
                      c->norm, c->hn, T));
    if (n0 > 0)
        CU_OK(cu__logits(c, 0, n0));
    return ASA_OK;
}

/* The padded size of a decode-only batch run as a graph, 0 for eager. */
static int cu__graph_pad(const cu_be *c, const eng_batch *b) {
    if (!c->graphs_on)
        return 0;
    for (int i = 0; i < b->n_seqs; i++)
        if (b->seqs[i].n_tokens != 1)
            return 0;
    int pad = 1;
    while (pad < b->n_seqs)
        pad *= 2;
    return pad <= c->pad_max ? pad : 0;
}

/* Graph failures are not fatal: graphs are switched off and the step runs
 * eagerly. */
static void cu__graphs_off(cu_be *c, const char *what, cudaError_t e) {
    ASA_LOGW("cuda", "CUDA graphs off: %s: %s", what, cudaGetErrorString(e));
    (void)cudaGetLastError();
    c->graphs_on = false;
}

/* Runs the forward pass of a padded decode step (T = pad tokens) from the
 * graph of its key, capturing it the second time the key is seen. */
static asa_err cu__graph_run(cu_be *c, int T, int n0) {
    struct cu_graph *g = NULL;
    c->n_gsteps++;
    c->n_qsteps += c->quiet;
    if (c->graph_eager)
        return cu__forward(c, T, n0);
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].pad == T && c->graphs[i].mp == c->max_pos &&
            c->graphs[i].quiet == c->quiet)
            g = &c->graphs[i];
    if (!g) {
        if (c->n_graphs == CU_MAX_GRAPHS)
            return cu__forward(c, T, n0);
        g = &c->graphs[c->n_graphs++];
        *g = (struct cu_graph){
            .pad = T, .mp = c->max_pos, .seen = 0, .quiet = c->quiet, .exec = NULL};
    }
    if (g->exec) {
        cudaError_t e = cudaGraphLaunch(g->exec, c->st);
        if (e != cudaSuccess) {
            ASA_LOGE("cuda", "cudaGraphLaunch: %s", cudaGetErrorString(e));
            return ASA_ECUDA;
        }
        return ASA_OK;
    }
    if (g->seen++ == 0)
        return cu__forward(c, T, n0); /* warm-up, eager */
    cudaError_t e = cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        cu__graphs_off(c, "cudaStreamBeginCapture", e);
        return cu__forward(c, T, n0);
    }
    c->capturing = true;
    asa_err err = cu__forward(c, T, n0);
    cudaGraph_t graph = NULL;
    e = cudaStreamEndCapture(c->st, &graph);
    c->capturing = false;
    if (err == ASA_OK && e == cudaSuccess)
        e = cudaGraphInstantiate(&g->exec, graph, 0);
    if (graph)
        cudaGraphDestroy(graph);
    if (err != ASA_OK || e != cudaSuccess) {
        g->exec = NULL;
        cu__graphs_off(c, "capture", e);
        return cu__forward(c, T, n0);
    }
    e = cudaGraphLaunch(g->exec, c->st);
    if (e != cudaSuccess) {
        ASA_LOGE("cuda", "cudaGraphLaunch: %s", cudaGetErrorString(e));
        return ASA_ECUDA;
    }
    return ASA_OK;
}

/* A row that only needs a greedy token and raw logprobs: sampled on the
 * device (topn_cuda follows eng_sample's conventions for exactly this
 * case: argmax with ties to the lower id, log_softmax of the raw logits,
 * NaN as -inf), so its logits never travel to the host. */
static bool cu__device_greedy(const eng_seq_step *s) {
    const eng_sampling *sp = s->sp;
    return s->sample && !s->logits_out && sp->temperature < ENG_SAMPLE_GREEDY_EPS &&
           sp->n_bias == 0 && sp->repetition_penalty == 1.0f && sp->presence_penalty == 0.0f &&
           sp->frequency_penalty == 0.0f;
}

/* Device sampling (sample_cuda) of a row, as eng_sample would accept it
 * (the host path reports invalid parameters), within the chunk's room for
 * bias entries and penalty ids (counted in c->smp_nb, c->smp_nt). */
static bool cu__device_sample(cu_be *c, const eng_seq_step *s) {
    const eng_sampling *sp = s->sp;
    const int V = c->V;
    if (!s->sample || s->logits_out || !(sp->temperature >= 0) ||
        !(sp->top_p > 0 && sp->top_p <= 1) || !(sp->min_p >= 0 && sp->min_p <= 1) ||
        !(sp->repetition_penalty > 0) || !isfinite(sp->presence_penalty) ||
        !isfinite(sp->frequency_penalty) || sp->n_logprobs < 0 ||
        sp->n_logprobs > SAMPLE_MAX_N || sp->n_bias < 0 || s->n_prompt < 0 || s->n_output < 0)
        return false;
    const bool rep = sp->repetition_penalty != 1.0f;
    const bool lists = (rep && s->n_prompt + s->n_output > 0) ||
                       ((sp->frequency_penalty != 0 || sp->presence_penalty != 0) &&
                        s->n_output > 0);
    const int nt = lists ? (rep ? s->n_prompt : 0) + s->n_output : 0;
    if (c->smp_nb + sp->n_bias > CU_SAMPLE_BIAS || c->smp_nt + nt > CU_SAMPLE_TOKS)
        return false;
    if (sp->n_bias > 0 && (!sp->bias_ids || !sp->bias_vals))
        return false;
    for (int i = 0; i < sp->n_bias; i++)
        if (sp->bias_ids[i] < 0 || sp->bias_ids[i] >= V || isnan(sp->bias_vals[i]))
            return false;
    for (int q = 0; q < 2 && lists; q++) {
        const int32_t *ids = q == 0 ? s->prompt : s->output;
        const int n = q == 0 ? (rep ? s->n_prompt : 0) : s->n_output;
        if (n > 0 && !ids)
            return false;
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V)
                return false;
    }
    c->smp_nb += sp->n_bias;
    c->smp_nt += nt;
    return true;
}

/* Packs the sample_cuda rows of the chunk's logits rows r0 .. r0+n (rows
 * not marked in c->dev_row are skipped), uploads them with one copy and
 * launches the kernel; results as topn_cuda's in c->sres.  gpu_sample 2:
 * topn_cuda (tp) first for every row, then sample_cuda overwrites the rows
 * that are not plain greedy. */
static asa_err cu__sample_launch(cu_be *c, const eng_batch *b, int r0, int n, int ntop,
                                 const topn_params *tp) {
    const size_t ob = cu__al((size_t)n * sizeof(sample_row));
    const size_t ov = ob + (size_t)c->smp_nb * 4, ot = cu__al(ov + (size_t)c->smp_nb * 4);
    sample_row *rows = (sample_row *)c->h_smp;
    int32_t *bid = (int32_t *)(c->h_smp + ob), *toks = (int32_t *)(c->h_smp + ot);
    float *bv = (float *)(c->h_smp + ov);
    int nb = 0, nt = 0;
    bool any_topn = false, any_smp = false;
    for (int r = 0; r < n; r++) {
        rows[r] = (sample_row){.skip = 1};
        if (!c->dev_row[r])
            continue;
        const eng_seq_step *s = &b->seqs[c->h_seq[c->rows[r0 + r]]];
        const eng_sampling *sp = s->sp;
        if (c->gpu_sample == 2 && cu__device_greedy(s)) {
            any_topn = true;
            continue;
        }
        any_smp = true;
        const bool rep = sp->repetition_penalty != 1.0f;
        const bool lists = (rep && s->n_prompt + s->n_output > 0) ||
                           ((sp->frequency_penalty != 0 || sp->presence_penalty != 0) &&
                            s->n_output > 0);
        const int np = lists && rep ? s->n_prompt : 0, no = lists ? s->n_output : 0;
        rows[r] = (sample_row){.temperature = sp->temperature, .top_p = sp->top_p,
                               .min_p = sp->min_p, .presence = sp->presence_penalty,
                               .frequency = sp->frequency_penalty,
                               .repetition = sp->repetition_penalty, .top_k = sp->top_k,
                               .n_logprobs = sp->n_logprobs, .skip = 0, .n_bias = sp->n_bias,
                               .bias_off = nb, .n_prompt = np, .n_output = s->n_output,
                               .tok_off = nt, .seed = sp->seed};
        if (sp->n_bias > 0) {
            memcpy(bid + nb, sp->bias_ids, (size_t)sp->n_bias * 4);
            memcpy(bv + nb, sp->bias_vals, (size_t)sp->n_bias * 4);
            nb += sp->n_bias;
        }
        if (np > 0)
            memcpy(toks + nt, s->prompt, (size_t)np * 4);
        if (no > 0)
            memcpy(toks + nt + np, s->output, (size_t)no * 4);
        nt += np + no;
    }
    if (any_topn)
        CU_OK(topn_cuda(tp, c->st));
    if (!any_smp)
        return ASA_OK;
    CU_TRY(cudaMemcpyAsync(c->d_smp, c->h_smp, ot + (size_t)nt * 4, cudaMemcpyHostToDevice,
                           c->st));
    int32_t *d_tok = c->sres;
    float *d_lp = (float *)(d_tok + n);
    int32_t *d_ids = (int32_t *)(d_lp + n);
    float *d_tlp = (float *)(d_ids + (size_t)n * ntop);
    sample_params p = {.B = n, .V = c->V, .n_top = ntop, .logits = c->logits, .ld = c->V,
                       .rows = (const sample_row *)c->d_smp,
                       .bias_ids = (const int32_t *)(c->d_smp + ob),
                       .bias_vals = (const float *)(c->d_smp + ov),
                       .toks = (const int32_t *)(c->d_smp + ot), .counts = c->smp_cnt,
                       .token = d_tok, .token_lp = d_lp, .top_ids = ntop ? d_ids : NULL,
                       .top_lp = ntop ? d_tlp : NULL};
    return sample_cuda(&p, c->st);
}

static asa_err cu__step(cu_be *c, const eng_batch *b, eng_seq_result *res) {
    const int V = c->V;
    for (int i = 0; i < b->n_copies; i++) {
        const kv_copy *cp = &b->copies[i];
        uint16_t *mem = cp->cls == KV_GLOBAL ? c->gmem : c->lmem;
        int64_t pe = cp->cls == KV_GLOBAL ? c->gpage : c->lpage;
        CU_TRY(cudaMemcpyAsync(mem + (size_t)cp->dst * pe, mem + (size_t)cp->src * pe,
                               (size_t)pe * 2, cudaMemcpyDeviceToDevice, c->st));
    }
    if (b->n_seqs == 0)
        return ASA_OK;
    const double t0 = asa_now();
    int T;
    c->n_ev = 0;
    cu__mark(c, CU_T_OTHER);
    const int pad = cu__graph_pad(c, b);
    CU_OK(cu__build_meta(c, b, pad, &T));
    const int lr0 = c->T < CU_LOGIT_ROWS ? c->T : CU_LOGIT_ROWS;
    const int n0 = c->mt.n_rows < lr0 ? c->mt.n_rows : lr0;
    if (pad > 0)
        CU_OK(cu__graph_run(c, T, n0));
    else
        CU_OK(cu__forward(c, T, n0));
    for (int i = 0; i < b->n_seqs; i++) {
        const eng_seq_step *s = &b->seqs[i];
        int last = s->pos0 + s->n_tokens - 1;
        if (c->m->cfg.n_global_layers > 0 && last - last % c->share >= s->pos0)
            c->sel_anchor[s->slot] = last - last % c->share;
    }

    const int nr = c->mt.n_rows, lr = c->T < CU_LOGIT_ROWS ? c->T : CU_LOGIT_ROWS;
    for (int r0 = 0; r0 < nr; r0 += lr) {
        int n = nr - r0 < lr ? nr - r0 : lr;
        if (r0 > 0) /* the first chunk's logits come with the forward pass */
            CU_OK(cu__logits(c, r0, n));
        /* device greedy for the rows that allow it, logits to the host for
         * the others (the whole chunk when there is any) */
        bool any_host = false, any_dev = false;
        int ntop = 0;
        c->smp_nb = c->smp_nt = 0;
        for (int r = 0; r < n; r++) {
            int t = c->rows[r0 + r], i = c->h_seq[t];
            c->dev_row[r] = false;
            if (i >= b->n_seqs)
                continue; /* dummy token of a padded step */
            const eng_seq_step *s = &b->seqs[i];
            if (!s->sample && !s->logits_out)
                continue;
            c->dev_row[r] = c->gpu_sample ? cu__device_sample(c, s) : cu__device_greedy(s);
            if (c->dev_row[r]) {
                any_dev = true;
                ntop = s->sp->n_logprobs > ntop ? s->sp->n_logprobs : ntop;
            } else {
                any_host = true;
            }
        }
        int32_t *d_tok = c->sres;
        float *d_lp = (float *)(d_tok + n);
        int32_t *d_ids = (int32_t *)(d_lp + n);
        float *d_tlp = (float *)(d_ids + (size_t)n * ntop);
        topn_params tp = {.B = n, .V = V, .n = ntop, .logits = c->logits, .ld = V,
                          .token = d_tok, .token_lp = d_lp, .top_ids = ntop ? d_ids : NULL,
                          .top_lp = ntop ? d_tlp : NULL, .workspace = c->topn_ws};
        if (any_dev && !c->gpu_sample && topn_params_check(&tp) != ASA_OK) {
            any_dev = false;
            any_host = true;
        }
        if (any_dev) {
            CU_OK(c->gpu_sample ? cu__sample_launch(c, b, r0, n, ntop, &tp)
                                : topn_cuda(&tp, c->st));
            CU_TRY(cudaMemcpyAsync(c->h_sres, c->sres, (size_t)n * (2 + 2 * ntop) * 4,
                                   cudaMemcpyDeviceToHost, c->st));
        }
        if (any_host)
            CU_TRY(cudaMemcpyAsync(c->h_logits, c->logits, (size_t)n * V * 4,
                                   cudaMemcpyDeviceToHost, c->st));
        CU_TRY(cudaStreamSynchronize(c->st));
        const int32_t *h_tok = c->h_sres;
        const float *h_lp = (const float *)(h_tok + n);
        const int32_t *h_ids = (const int32_t *)(h_lp + n);
        const float *h_tlp = (const float *)(h_ids + (size_t)n * ntop);
        for (int r = 0; r < n; r++) {
            int t = c->rows[r0 + r], i = c->h_seq[t];
            if (i >= b->n_seqs)
                continue;
            const eng_seq_step *s = &b->seqs[i];
            if (!s->sample && !s->logits_out)
                continue;
            if (any_dev && c->dev_row[r]) {
                eng_seq_result *rs = &res[i];
                rs->token = h_tok[r];
                rs->logprob = h_lp[r];
                rs->n_top = s->sp->n_logprobs;
                for (int k = 0; k < rs->n_top; k++) {
                    rs->top_ids[k] = h_ids[(size_t)r * ntop + k];
                    rs->top_logprobs[k] = h_tlp[(size_t)r * ntop + k];
                }
                continue;
            }
            const float *row = c->h_logits + (size_t)r * V;
            int q = t - c->seq_tok0[i];
            bool is_last = q == s->n_tokens - 1;
            if (s->logits_out) {
                if (s->all_logits)
                    memcpy(s->logits_out + (size_t)q * V, row, (size_t)V * sizeof(float));
                else if (is_last)
                    memcpy(s->logits_out, row, (size_t)V * sizeof(float));
            }
            if (s->sample && is_last)
                CU_OK(eng_sample(row, V, s->sp, s->prompt, s->n_prompt, s->output, s->n_output,
                                 c->samp, &res[i]));
        }
    }
    cu__mark(c, CU_T_OTHER);
    CU_TRY(cudaStreamSynchronize(c->st));
    cu__mark_collect(c, T == b->n_seqs ? 0 : 1, asa_now() - t0);
    return ASA_OK;
}

static asa_err cuda_step(void *p, const eng_batch *b, eng_seq_result *res) {
    cu_be *c = p;
    asa_err err = cu__step(c, b, res);
    if (err == ASA_ECUDA) {
        c->e->dead = true;
        ASA_LOGE("cuda", "device failure; the engine is dead");
    }
    return err;
}

const eng_backend_ops eng_cuda_backend = {
    .name = "cuda",
    .page_bytes = cuda_page_bytes,
    .create = cuda_create,
    .destroy = cuda_destroy,
    .seq_reset = cuda_seq_reset,
    .seq_copy = cuda_seq_copy,
    .seq_anchor = cuda_seq_anchor,
    .seq_sets = cuda_seq_sets,
    .step = cuda_step,
};
