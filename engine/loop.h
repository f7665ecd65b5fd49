/*
 * engine/loop.h - the engine thread: continuous batching around eng_step.
 *
 * An eng_loop owns one thread that owns the scheduler, the KV pool and the
 * engine.  Other threads (HTTP) talk to it only through eng_loop_submit /
 * eng_loop_cancel, which push onto a locked inbox and wake the thread with
 * uv_async_send; they never block on the engine.  The thread runs
 *   drain inbox -> pre_step hook -> sched step -> eng_step -> per token
 *   callbacks -> finish callbacks
 * while there is work, and sleeps in its libuv loop otherwise.
 *
 * Results flow back through per-request callbacks that run ON THE ENGINE
 * THREAD: on_token for every generated token (it may ask to stop, e.g. when
 * the server's stop-string matcher fires) and on_finish exactly once.  The
 * callbacks must be quick and must not call back into the loop except
 * eng_loop_cancel.
 *
 * Return codes of submit: ASA_EAGAIN when the queue bounds are hit (HTTP
 * 429; a request is taken when nothing waits, whatever its size), ASA_ECANCELLED while draining or stopped, ASA_EDEAD when the engine
 * died, ASA_EINVAL for bad fields, ASA_ENOMEM.  On any error on_finish is
 * NOT called and nothing was retained.  A request that the scheduler
 * refuses later (it could never fit in the KV cache even alone, or exceeds
 * the model's context) finishes through on_finish with ENG_FINISH_ERROR and
 * the scheduler's message.
 *
 * Callback order for one request: on_token zero or more times, then
 * on_finish once; the token that ends it (EOS, a stop id) is passed to
 * on_token before on_finish.  A request cancelled (or stopped by on_token)
 * gets no further on_token.
 */
#ifndef ASA_ENG_LOOP_H
#define ASA_ENG_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "asa.h"
#include "eng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct eng_loop eng_loop;

typedef enum eng_finish_reason {
    ENG_FINISH_STOP = 0,   /* EOS, a stop token id, or on_token asked to stop */
    ENG_FINISH_LENGTH = 1, /* max_tokens reached */
    ENG_FINISH_ABORT = 2,  /* cancelled (client gone) or shutdown */
    ENG_FINISH_ERROR = 3,  /* engine failure; message given */
} eng_finish_reason;

typedef struct eng_request_stats {
    int n_prompt;          /* prompt tokens */
    int n_generated;       /* tokens passed to on_token */
    int n_preemptions;     /* times this request was preempted */
    double t_arrival;      /* asa_now() at submit */
    double t_scheduled;    /* first scheduled (0 if never) */
    double t_first_token;  /* first token produced (0 if none) */
    double t_finish;
} eng_request_stats;

typedef struct eng_request {
    const int32_t *prompt; /* [n_prompt] ids < vocab; copied by submit */
    int n_prompt;          /* >= 1 */
    eng_sampling sp;       /* bias arrays copied by submit */
    int max_tokens;        /* >= 1 */
    int min_tokens;        /* EOS / stop ids ignored before this many tokens */
    bool ignore_eos;
    const int32_t *stop_ids; /* [n_stop_ids] extra stop token ids; copied */
    int n_stop_ids;
    int priority;          /* lower first; FCFS within a priority */
    /* Engine-thread callbacks.  on_token returns 0 to go on, 1 to finish
     * with ENG_FINISH_STOP right after this token. */
    int (*on_token)(void *ud, int32_t token, const eng_seq_result *res);
    void (*on_finish)(void *ud, eng_finish_reason why,
                      const eng_request_stats *st, const char *error);
    void *ud;
} eng_request;

typedef struct eng_loop_options {
    int max_num_seqs;            /* running requests per step */
    int max_num_batched_tokens;  /* token budget per step */
    int max_queued_requests;     /* waiting requests before EAGAIN; 0 = no bound */
    int64_t max_queued_tokens;   /* waiting prompt tokens before EAGAIN; 0 = no bound */
    int eos_token_id;            /* -1 = none */
    /* Called on the engine thread before each step (e.g. to notice
     * disconnected clients and cancel them); may be NULL. */
    void (*pre_step)(void *ud);
    void *pre_step_ud;
} eng_loop_options;

typedef struct eng_loop_stats {
    int num_running, num_waiting;
    double kv_usage;             /* 0..1 */
    uint64_t num_preemptions;    /* cumulative */
    uint64_t num_steps;
    bool alive;                  /* false once the engine died */
    bool draining;
} eng_loop_stats;

/* The loop takes the engine (it must outlive the loop; the loop does not
 * destroy it).  Does not start the thread. */
asa_err eng_loop_create(eng *e, const eng_loop_options *o, eng_loop **out);
/* Starts the engine thread. */
asa_err eng_loop_start(eng_loop *l);
/* Thread-safe.  *id receives the request id used by eng_loop_cancel. */
asa_err eng_loop_submit(eng_loop *l, const eng_request *r, uint64_t *id);
/* Submits rs[n] (e.g. the choices of one API request) all or nothing:
 * either every one is queued (ids[i] receives rs[i]'s id; ids may be NULL)
 * or none is and nothing was retained.  The queue bounds apply to the
 * group's count and prompt tokens together; while nothing waits, any group
 * is taken (so a group larger than the bounds is not refused forever).
 * Same return codes as eng_loop_submit. */
asa_err eng_loop_submit_group(eng_loop *l, const eng_request *rs, int n, uint64_t *ids);
/* Thread-safe; unknown or finished ids are ignored.  The request finishes
 * with ENG_FINISH_ABORT before the next step runs. */
void eng_loop_cancel(eng_loop *l, uint64_t id);
/* Thread-safe snapshot. */
void eng_loop_stats_get(eng_loop *l, eng_loop_stats *st);
/* Stop accepting new requests (submit returns ASA_ECANCELLED); in-flight
 * ones go on.  Thread-safe. */
void eng_loop_drain(eng_loop *l);
/* True when no request is waiting or running.  Thread-safe. */
bool eng_loop_idle(eng_loop *l);
/* Aborts what is left (on_finish with ABORT), stops and joins the thread.
 * Then eng_loop_destroy frees.  NULL is a no-op for both. */
void eng_loop_stop(eng_loop *l);
void eng_loop_destroy(eng_loop *l);

#ifdef __cplusplus
}
#endif
#endif /* ASA_ENG_LOOP_H */
