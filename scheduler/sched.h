/*
 * scheduler/sched.h - iteration-level continuous batching (vLLM v1 style).
 *
 * A request has a token list (prompt, then generated tokens: "known"
 * tokens) and a count of tokens whose KV entries are in the cache
 * ("computed").  There are no prefill and decode modes: every sched_step
 * gives each chosen request a chunk of its uncomputed known tokens, under a
 * token budget (max_num_batched_tokens) and a sequence cap (max_num_seqs).
 * Running requests come first, in admission order (a decode is 1 token, an
 * unfinished prefill a chunk); then waiting requests are admitted in order
 * of (priority ascending, arrival), their prompts chunked so that running
 * requests keep decoding while a long prompt is prefilled.
 *
 * KV pages come from a kv_pool (kv.h) through kv_seq_alloc.  When the pool
 * runs out while scheduling a running request, the scheduler preempts the
 * running request with the worst (priority, admission) - with equal
 * priorities the most recently admitted one -: its pages are freed, its
 * computed count drops to 0, it goes back to the waiting queue (at its
 * original arrival place) and is recomputed later, prompt and generated
 * tokens alike.  No admission happens in a step that preempted.  A request
 * that could not fit even alone in an empty pool is refused by sched_add
 * (ASA_ETOOBIG) or, as a safety net, finished with SCHED_FINISH_ERROR and a
 * message; it never loops.
 *
 * One engine iteration:
 *     sched_step(s, &b);                    // what to run (plain data)
 *     ... engine runs b (b->copies first) and samples where item.sample ...
 *     sched_update(s, sampled, b->n_items); // append, finish, commit KV
 *     n = sched_take_finished(s, done, max) // report, then sched_req_free
 *
 * Engine sequence slots (eng_seq_open/close, the selection-share state) are
 * managed through the optional callbacks in sched_config: seq_open is called
 * when a request is admitted (first time and after every preemption, so the
 * engine starts from a fresh selection state that recomputation rebuilds),
 * seq_close whenever a request that holds a slot is preempted, finishes or is
 * aborted.  The slot number travels in each batch item.  Without callbacks
 * every slot is -1.  Callbacks run inside sched_step / sched_update /
 * sched_abort and must not call back into the scheduler.
 *
 * Ownership: sched_add returns a handle owned by the scheduler while the
 * request is live; once finished it is listed by sched_take_finished and
 * stays valid (output, finish reason) until the caller passes it to
 * sched_req_free.  sched_destroy frees every request and destroys its kv_seq
 * (without calling the callbacks).  The pool must outlive the scheduler.
 * The scheduler never depends on the engine: batch items are plain data
 * that the engine loop converts to eng_seq_step (same field meanings).
 *
 * Threading: one thread (the engine thread) owns the scheduler, like the
 * pool.  Nothing here blocks; logging only on rare events (preemption,
 * failure) at debug level.
 */
#ifndef ASA_SCHED_H
#define ASA_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "asa.h"
#include "kv.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sched sched;
typedef struct sched_req sched_req;

typedef enum sched_status {
    SCHED_WAITING = 0,  /* queued, no KV pages (new or preempted) */
    SCHED_RUNNING = 1,  /* holds a kv_seq (and an engine slot) */
    SCHED_FINISHED = 2, /* done; pages freed; waiting for sched_req_free */
} sched_status;

typedef enum sched_finish {
    SCHED_FINISH_NONE = 0,   /* not finished */
    SCHED_FINISH_STOP = 1,   /* EOS, a stop token id, or a stop string
                                (reported by the server via sched_abort) */
    SCHED_FINISH_LENGTH = 2, /* max_tokens or max_model_len reached */
    SCHED_FINISH_ABORT = 3,  /* cancelled (client gone) */
    SCHED_FINISH_ERROR = 4,  /* cannot be served; see sched_req_error */
} sched_finish;

/* "stop", "length", "abort", "error", or "none". */
const char *sched_finish_name(sched_finish f);

typedef struct sched_callbacks {
    void *ctx;
    /* A request is being admitted: open an engine slot for it (fresh
     * selection state) and store its number in *slot.  A non-zero return
     * postpones the admission (the request stays waiting, nothing else
     * changes).  May be NULL. */
    asa_err (*seq_open)(void *ctx, sched_req *r, int *slot);
    /* The request gives its slot back (preempted, finished, aborted,
     * failed).  May be NULL. */
    void (*seq_close)(void *ctx, sched_req *r, int slot);
} sched_callbacks;

typedef struct sched_config {
    int max_num_seqs;           /* running requests at most, >= 1 */
    int max_num_batched_tokens; /* new tokens per step at most, >= 1 */
    int long_prefill_token_threshold; /* largest chunk of one request per
                                         step; 0 = the token budget */
    int max_model_len;          /* prompt + output at most; 0 = no limit */
    int32_t eos_token_id;       /* -1 = none */
    int max_copies;             /* capacity of the batch's copy list; 0 =
                                   2 * max_num_seqs (copies appear only when
                                   pages are shared) */
    sched_callbacks cb;
} sched_config;

/* Fills defaults: 8 seqs, 2048 tokens, no prefill threshold, no length limit,
 * no EOS, no callbacks. */
void sched_config_default(sched_config *c);

/* Per-request parameters (copied by sched_add). */
typedef struct sched_params {
    int max_tokens;          /* generated tokens at most; >= 1, or 0 = up to
                                max_model_len (then required) */
    int min_tokens;          /* EOS / stop ids do not finish the request
                                before this many generated tokens (clamped to
                                max_tokens); the engine should also mask EOS */
    bool ignore_eos;         /* EOS does not finish the request */
    const int32_t *stop_ids; /* [n_stop_ids] extra stop token ids, may be NULL */
    int n_stop_ids;
    int priority;            /* lower is served first; default 0 */
} sched_params;

void sched_params_default(sched_params *p);

/* One request's part of a step (the engine loop turns it into an
 * eng_seq_step: same meanings).  Pointers are borrowed and valid until the
 * next sched_update. */
typedef struct sched_item {
    sched_req *req;          /* the request */
    void *user;              /* = sched_req_user(req) */
    uint64_t id;             /* = sched_req_id(req) */
    int slot;                /* engine slot from seq_open; -1 without callbacks */
    const int32_t *tokens;   /* [n_tokens] known tokens from position pos0 */
    int n_tokens;            /* >= 1 */
    int pos0;                /* tokens already computed (in the cache) */
    const kv_seq *kv;        /* block tables, reserved for these tokens */
    bool sample;             /* the chunk ends at the last known token:
                                sample the next one */
    const int32_t *prompt;   /* [n_prompt] (repetition penalty) */
    int n_prompt;
    const int32_t *output;   /* [n_output] generated so far; n_output is also
                                the index of the token being drawn */
    int n_output;
} sched_item;

typedef struct sched_batch {
    int n_items;               /* 0: nothing to run now */
    const sched_item *items;   /* [n_items], each request at most once, in
                                  scheduling order */
    int n_tokens;              /* sum of items' n_tokens (<= budget) */
    const kv_copy *copies;     /* [n_copies] page copies to do first */
    int n_copies;
    int n_preempted;           /* requests preempted while building it */
} sched_batch;

typedef struct sched_stats {
    int n_waiting, n_running, n_finished; /* finished = not yet freed */
    uint64_t n_steps;          /* sched_step calls that produced a batch */
    uint64_t n_preemptions;    /* total */
    uint64_t n_added, n_done;  /* requests added / finished (any reason) */
    uint64_t n_tokens_scheduled;
} sched_stats;

/* Creates a scheduler over pool (borrowed; must outlive it).  ASA_EINVAL
 * for a bad config, ASA_ENOMEM. */
asa_err sched_create(kv_pool *pool, const sched_config *cfg, sched **out);
/* Frees all requests (their kv_seqs are destroyed; callbacks are not
 * called).  NULL is a no-op. */
void sched_destroy(sched *s);

/* Queues a request.  prompt[n_prompt] (n_prompt >= 1) and p are copied;
 * user is an opaque pointer for the caller.  *out (may be NULL) receives the
 * handle.  Errors (state unchanged, reason in eb): ASA_EINVAL (bad
 * arguments, duplicate live id), ASA_ETOOBIG (prompt + max_tokens exceeds
 * max_model_len, or could not fit alone in the empty pool), ASA_ENOMEM. */
asa_err sched_add(sched *s, uint64_t id, const int32_t *prompt, int n_prompt,
                  const sched_params *p, void *user, sched_req **out,
                  asa_errbuf *eb);

/* Builds the next batch (borrowed, valid until sched_update).  The batch may
 * be empty (n_items == 0) when nothing can run.  Returns ASA_EBUSY when the
 * previous batch has not been passed to sched_update yet (nothing changes),
 * ASA_ENOMEM (nothing scheduled; state consistent). */
asa_err sched_step(sched *s, const sched_batch **out);

/* Applies the results of the last batch: for item i, commits its n_tokens
 * into the cache and, when item.sample, appends sampled[i] to the output
 * and checks finish conditions (EOS unless ignore_eos, stop ids, both only
 * from min_tokens on; max_tokens; max_model_len).  Finished requests free
 * their pages and slot and move to the finished list.  n must equal the
 * batch's n_items; sampled may be NULL when no item samples; sampled[i] of
 * an item aborted in flight is ignored.
 * n == 0 (sampled ignored) says the batch was NOT run (engine failure, out
 * of memory): nothing is committed, pending aborts are applied, a request
 * whose item carried page copies is preempted, the others simply run again
 * later.  After an empty batch, n == 0 is a no-op returning 0.
 * ASA_EINVAL (no batch in flight and n > 0, wrong n, negative sampled token
 * for a sampling item): nothing changes.  ASA_ENOMEM: the request whose
 * token could not be stored finishes with SCHED_FINISH_ERROR; the rest of
 * the update is applied. */
asa_err sched_update(sched *s, const int32_t *sampled, int n);

/* Finishes a live request with reason (SCHED_FINISH_ABORT for a client
 * disconnect, SCHED_FINISH_STOP when the server matched a stop string).
 * Its pages and slot are freed now; when it is part of the batch in flight
 * they are freed by the sched_update of that same step (the engine may
 * still be reading its tables) and its result is ignored.  ASA_ENOTFOUND
 * when no live request has this id (already finished: no change). */
asa_err sched_abort(sched *s, uint64_t id, sched_finish reason);

/* sched_abort for every live request (shutdown, dead engine); returns how
 * many were aborted.  O(requests). */
int sched_abort_all(sched *s, sched_finish reason);

/* The live or finished-but-not-freed request with this id, or NULL.
 * O(requests). */
sched_req *sched_find(const sched *s, uint64_t id);

/* Moves up to max finished requests (oldest first) to out[]; returns how
 * many.  Each must then be freed with sched_req_free. */
int sched_take_finished(sched *s, sched_req **out, int max);
/* Frees a finished request that was taken.  NULL is a no-op; a request that
 * is not finished or not yet taken is left alone (returns ASA_EINVAL). */
asa_err sched_req_free(sched *s, sched_req *r);

/* True when some request waits or runs. */
bool sched_has_work(const sched *s);
void sched_get_stats(const sched *s, sched_stats *st);

/* Invariant walker: list membership and order, statuses, per-request token
 * counts against their kv_seq, budget and cap of the batch in flight, slots,
 * and kv_pool_check of the pool.  Returns 0 or ASA_EINTERNAL (logs what
 * broke).  O(requests^2): for tests and debug builds. */
asa_err sched_check(const sched *s);

/* ---- request accessors (borrowed pointers, valid until sched_req_free, or
 * for token arrays until the next sched_update) ------------------------- */
uint64_t sched_req_id(const sched_req *r);
void *sched_req_user(const sched_req *r);
sched_status sched_req_status(const sched_req *r);
sched_finish sched_req_finish(const sched_req *r);
/* The stop token id that finished the request (EOS or a stop id), else -1. */
int32_t sched_req_stop_token(const sched_req *r);
/* Message for SCHED_FINISH_ERROR, "" otherwise.  Never NULL. */
const char *sched_req_error(const sched_req *r);
const int32_t *sched_req_prompt(const sched_req *r, int *n);
const int32_t *sched_req_output(const sched_req *r, int *n);
int sched_req_num_computed(const sched_req *r);
int sched_req_num_preemptions(const sched_req *r);
int sched_req_priority(const sched_req *r);
int sched_req_slot(const sched_req *r);

#ifdef __cplusplus
}
#endif
#endif /* ASA_SCHED_H */
