/*
 * kernels/cuda/sample_cuda.h - token sampling on the device, one thread
 * block per row of logits, following the CPU sampler (engine/sample.h,
 * eng_sample) stage by stage: logit bias, repetition / frequency / presence
 * penalties, temperature (below ENG_SAMPLE_GREEDY_EPS = 1e-5: greedy),
 * top-k, top-p, min-p, the counter-RNG draw u = eng_sample_u01(seed, k) in
 * id order, and the raw logprobs (log_softmax of the logits as given) of
 * the chosen token and of the top n.  No sort of the row: the row lives in
 * shared memory; top-k, top-p and top-n are radix selections over the float
 * bit patterns (4 passes of 8 or 6 bits), ties resolved in id order by a block
 * scan.
 *
 * Agreement with eng_sample.  Every float operation on the logits (clean,
 * bias, penalties, (l - max) * (1/T), eng_sample_exp, the min-p compare) is
 * the host's, in the same order and with the same rounding (no fused
 * multiply-add), so the probabilities e_i are bitwise the host's, and so are
 * greedy tokens, the top-k set and the top-n list.  Sums are not: the host
 * adds doubles in id order (four lanes), the kernel adds e_i exactly as
 * fixed-point integers (floor(e_i * 2^64), 128-bit, order-free, hence
 * deterministic).  The top-p cut, the draw and the logprob normaliser can
 * therefore differ from the host only when a decision lies within about
 * 1e-12 (relative) of its boundary (the host's own double rounding), and a
 * logprob by one float ulp at a rounding boundary of the double result.
 *
 * Penalty tokens come as lists per row (prompt ids, then output ids, as
 * eng_sample gets them); counts[B][V] is caller scratch that must be zero
 * before a launch and is zero again after it (the kernel clears what it
 * marked), so it is set to zero once at allocation.
 */
#ifndef ASA_SAMPLE_CUDA_H
#define ASA_SAMPLE_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SAMPLE_THREADS 1024
#define SAMPLE_MAX_V 49152 /* the row in shared memory: 192 KiB */
#define SAMPLE_MAX_N 20    /* top logprobs (ENG_MAX_LOGPROBS) */

/* Per-row parameters (device array).  Ranges as eng_sample accepts them
 * (the caller checks: the kernel trusts them): temperature >= 0, top_k <= 0
 * or >= V off, 0 < top_p <= 1, 0 <= min_p <= 1, repetition > 0, finite
 * penalties, bias ids and list ids in [0, V), bias values not NaN,
 * 0 <= n_logprobs <= n_top of the launch. */
typedef struct sample_row {
    float temperature, top_p, min_p;
    float presence, frequency, repetition;
    int32_t top_k;
    int32_t n_logprobs;
    int32_t skip;      /* 1: nothing is computed or written for this row */
    int32_t n_bias;    /* bias_ids/bias_vals[bias_off ..] */
    int32_t bias_off;
    int32_t n_prompt;  /* toks[tok_off ..]: n_prompt prompt ids, then */
    int32_t n_output;  /* n_output generated ids (also the draw index k) */
    int32_t tok_off;
    uint64_t seed;
} sample_row;

typedef struct sample_params {
    int B;                     /* rows, 1..65535 */
    int V;                     /* SAMPLE_MAX_N <= V <= SAMPLE_MAX_V */
    int n_top;                 /* stride of top_ids/top_lp, 0..SAMPLE_MAX_N */
    const float *logits;       /* [B][ld] */
    int64_t ld;                /* >= V */
    const sample_row *rows;    /* [B] */
    const int32_t *bias_ids;   /* may be NULL when no row has a bias */
    const float *bias_vals;
    const int32_t *toks;       /* may be NULL when no row has penalty lists */
    uint32_t *counts;          /* [B][V] scratch, zero (see above) */
    int32_t *token;            /* [B] */
    float *token_lp;           /* [B] raw logprob of token */
    int32_t *top_ids;          /* [B][n_top] (NULL when n_top == 0); row b
                                  writes its first n_logprobs entries */
    float *top_lp;             /* [B][n_top] */
    uint64_t *dbg;             /* NULL, or [B][SAMPLE_DBG] stage values of
                                  each row (tests: where a GPU row departs
                                  from eng_sample) */
} sample_params;

/* dbg[b][...]: raw argmax, adjusted argmax, adjusted max (float bits),
 * the draw's first hit (INT_MAX: none), the kept mass total >> 32
 * (fixed point, 2^-32 units), the draw target (double bits), w[token]
 * after the filters (float bits: e of the token), the token. */
#define SAMPLE_DBG 8

/* ASA_OK or ASA_EINVAL (shapes, pointers, alignment). */
asa_err sample_params_check(const sample_params *p);
/* The kernel (one launch; never synchronises); ASA_EINVAL or ASA_ECUDA. */
asa_err sample_cuda(const sample_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* ASA_SAMPLE_CUDA_H */
