/*
 * kernels/cuda/topn_cuda.h - greedy tokens and top-N logprobs over a batch
 * of logits rows, without sorting a row.
 *
 * For each row b of logits [B][V] (f32):
 *   token[b]        the argmax, ties to the lower id,
 *   token_lp[b]     its log-probability,
 *   top_ids[b][j], top_lp[b][j], j < n: the n largest logits in descending
 *                   order, ties to the lower id, with their log-probabilities,
 * where log-probabilities are log_softmax of the logits as given ("raw
 * logprobs").  The conventions are those of the CPU sampler
 * (engine/sample.h): NaN counts as -inf, +inf as FLT_MAX; a row without a
 * finite value gives token 0 (the lowest id among equals) and logprobs -inf.
 *
 * Two launches: per (row, 2048-wide chunk) a block keeps its chunk in
 * registers, finds the chunk's top max(n, 1) by n rounds of a block-wide
 * argmax (only the winning thread rescans its 8 values), and its max and
 * sum of exp(x - max); a second launch merges, per row, the chunks' lists
 * and partial sums the same way.  The workspace holds the partials.
 */
#ifndef ASA_TOPN_CUDA_H
#define ASA_TOPN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TOPN_MAX_N 20
#define TOPN_CHUNK 2048        /* logits per first-stage block */
#define TOPN_MAX_CAND 2048     /* chunks per row x max(n, 1) must fit */

typedef struct topn_params {
    int B;                    /* rows, 1..65535 */
    int V;                    /* row length (vocabulary), >= max(n, 1) and
                                 ceil(V / TOPN_CHUNK) * max(n, 1) <=
                                 TOPN_MAX_CAND (V <= 208896 at n = 20) */
    int n;                    /* top logprobs per row, 0..TOPN_MAX_N */
    const float *logits;      /* [B][ld] */
    int64_t ld;               /* elements, >= V */
    int32_t *token;           /* [B] argmax */
    float *token_lp;          /* [B] log-probability of token, or NULL */
    int32_t *top_ids;         /* [B][n] (NULL when n == 0) */
    float *top_lp;            /* [B][n] (NULL when n == 0) */
    void *workspace;          /* topn_workspace_size(B, V) bytes, 16-byte
                                 aligned, device memory */
} topn_params;

/* Bytes of workspace for B rows of V logits (any n). */
size_t topn_workspace_size(int B, int V);

/* Host reference (host pointers; workspace unused), in double. */
void topn_ref(const topn_params *p);
/* ASA_OK or ASA_EINVAL. */
asa_err topn_params_check(const topn_params *p);
/* The kernels; ASA_EINVAL (nothing launched) or ASA_ECUDA. */
asa_err topn_cuda(const topn_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* ASA_TOPN_CUDA_H */
