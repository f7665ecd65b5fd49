/*
 * engine/eng.h - the ASA engine: the step API that the CPU and CUDA
 * backends both implement.
 *
 * An eng owns, for one loaded model: the backend (chosen at eng_create),
 * the memory behind the KV pages, the kv_pool that hands those pages out,
 * and a fixed number of sequence slots holding each sequence's
 * selection-share state (ASA-SPEC 3.3: per global layer and latent group,
 * top_n block ids chosen at the last anchor position).
 *
 * One step (eng_step) runs a batch of sequences; each contributes a chunk of
 * new tokens (a prefill chunk or one decode token) at consecutive positions
 * starting at the number of tokens it already has in the cache.  The step
 * writes the new tokens' cache entries (and compressed entries of blocks
 * that complete), updates each slot's selection state, and for sequences
 * that ask for it samples one token from the logits of their last position.
 *
 * Ownership and threads: an eng and everything reached through it belong to
 * one thread (the engine thread).  The eng_model must outlive the eng.
 * The batch and results are plain data owned by the caller.
 *
 * Batch invariance: the CPU backend produces bitwise-identical logits for a
 * sequence whatever else is in the batch and however its prompt was chunked.
 */
#ifndef ASA_ENG_H
#define ASA_ENG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "asa.h"
#include "kv.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum eng_backend_kind { ENG_BACKEND_CPU = 0, ENG_BACKEND_CUDA = 1 } eng_backend_kind;

typedef struct eng eng;

typedef struct eng_options {
    eng_backend_kind backend;
    int max_seqs;          /* sequence slots, >= 1 */
    int max_batch_tokens;  /* largest total of new tokens in one step, >= 1 */
    int max_seq_len;       /* longest sequence (tokens); 0 = max_position_embeddings */
    int32_t num_pages[KV_NCLASS]; /* page capacity per class; when both are 0
                                     they are derived from kv_bytes */
    size_t kv_bytes;       /* bytes for KV pages when num_pages is 0 */
    int threads;           /* CPU backend: worker threads, 0 = all cores */
    bool batch_invariant;  /* CUDA backend: bitwise batch invariance (the CPU
                              backend always is) */
    int device;            /* CUDA device ordinal */
} eng_options;

/* Fills defaults: CPU backend, 8 seqs, 2048 batch tokens, 256 MiB of KV. */
void eng_options_default(eng_options *o);

/* Sampling parameters of one sequence.  Neutral values disable a stage. */
typedef struct eng_sampling {
    float temperature;        /* 0 = greedy (argmax, ties to the lower id) */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float presence_penalty;   /* 0 = off; applies to generated tokens */
    float frequency_penalty;  /* 0 = off; applies to generated tokens */
    float repetition_penalty; /* 1 = off; applies to prompt + generated */
    const int32_t *bias_ids;  /* [n_bias] logit_bias token ids, may be NULL */
    const float *bias_vals;   /* [n_bias] added to the logits */
    int n_bias;
    uint64_t seed;            /* the RNG stream; the draw for generated token
                                 k uses (seed, k) only, so results do not
                                 depend on batch or preemption */
    int n_logprobs;           /* 0..20 top logprobs to report */
} eng_sampling;

/* One sequence's part of a step. */
typedef struct eng_seq_step {
    int slot;                 /* from eng_seq_open */
    const int32_t *tokens;    /* [n_tokens] new tokens, ids < vocab_size */
    int n_tokens;             /* >= 1 */
    int pos0;                 /* position of tokens[0] = tokens already cached */
    const kv_seq *kv;         /* block tables, reserved by kv_seq_alloc for
                                 these tokens */
    bool sample;              /* sample one token after the last new token */
    const eng_sampling *sp;   /* when sample */
    const int32_t *prompt;    /* [n_prompt] for the repetition penalty, may be NULL */
    int n_prompt;
    const int32_t *output;    /* [n_output] generated so far (penalties), may be NULL */
    int n_output;             /* also the index k of the token being drawn */
    float *logits_out;        /* optional, f32: [n_tokens][V] if all_logits,
                                 else [V] for the last position */
    bool all_logits;
} eng_seq_step;

typedef struct eng_batch {
    int n_seqs;
    const eng_seq_step *seqs;  /* [n_seqs]; each slot at most once */
    const kv_copy *copies;     /* page copies to do before the step */
    int n_copies;
} eng_batch;

#define ENG_MAX_LOGPROBS 20
typedef struct eng_seq_result {
    int32_t token;            /* sampled token, -1 when not sampled */
    float logprob;            /* log-probability of token under the model's
                                 raw distribution (log_softmax of the logits) */
    int n_top;                /* entries in top_* (= sp->n_logprobs) */
    int32_t top_ids[ENG_MAX_LOGPROBS];
    float top_logprobs[ENG_MAX_LOGPROBS]; /* descending */
} eng_seq_result;

/* Creates the engine for model m: allocates KV page memory, the kv_pool and
 * the sequence slots.  Returns ASA_EUNSUPPORTED when the backend is not
 * built or no device is present, ASA_ENOMEM, ASA_EINVAL for bad options;
 * writes the reason into eb. */
asa_err eng_create(const eng_model *m, const eng_options *opt, eng **out,
                   asa_errbuf *eb);
/* NULL is a no-op. */
void eng_destroy(eng *e);

/* The engine's KV pool (borrowed; lives as long as the engine). */
kv_pool *eng_kv_pool(eng *e);
const eng_model *eng_get_model(const eng *e);

/* Sequence slots.  open: a fresh slot (empty selection state) or
 * ASA_ENOSPACE when max_seqs are open.  fork: dst (an open slot) gets a copy
 * of src's selection state.  close: frees the slot. */
asa_err eng_seq_open(eng *e, int *slot);
asa_err eng_seq_fork(eng *e, int src_slot, int dst_slot);
void eng_seq_close(eng *e, int slot);

/* Runs one step.  results[i] belongs to b->seqs[i].  Returns ASA_EINVAL for
 * a malformed batch (nothing is computed), ASA_EDEAD/ASA_ECUDA when the
 * device failed (the engine is then dead). */
asa_err eng_step(eng *e, const eng_batch *b, eng_seq_result *results);

#ifdef __cplusplus
}
#endif
#endif /* ASA_ENG_H */
