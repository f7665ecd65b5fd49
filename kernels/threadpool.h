/*
 * kernels/threadpool.h - a small persistent pool of worker threads for the
 * CPU kernels.
 *
 * tp_run(pool, fn, ctx, ntasks) calls fn(ctx, task, tid) once for every task
 * in [0, ntasks) and returns when all have returned.  Tasks are claimed
 * dynamically from a shared counter by the calling thread (tid 0) and by
 * whichever workers are awake (tid 1..n-1), so a descheduled worker (a busy
 * machine, a CI runner with more jobs than cores) never holds up a run: the
 * caller simply does the remaining tasks itself.  Which thread runs a task
 * must therefore not change its result; tid only selects per-thread scratch.
 * Kernels split their work into tasks whose results do not depend on the
 * split (the matmul splits output columns; each element has a fixed order).
 *
 * Workers are created once at tp_create, spin briefly after a run (a step
 * issues dozens of runs back to back) and then sleep.  No thread is created
 * per run.
 *
 * Threading: one caller at a time (the engine thread); tp_run is not
 * reentrant.
 */
#ifndef ASA_TP_H
#define ASA_TP_H

#include "asa.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_pool tp_pool;
/* task in [0, ntasks); tid in [0, tp_size) selects per-thread scratch */
typedef void (*tp_fn)(void *ctx, int task, int tid);

/* Creates a pool of nthreads threads in all (nthreads - 1 workers plus the
 * caller); nthreads <= 0 means the number of online CPUs.  Returns
 * ASA_ENOMEM, or ASA_EINVAL when a thread cannot be created; *out is set
 * only on success. */
asa_err tp_create(int nthreads, tp_pool **out);
/* Joins the workers and frees the pool.  NULL is a no-op. */
void tp_destroy(tp_pool *p);
/* Threads in all, >= 1.  NULL gives 1. */
int tp_size(const tp_pool *p);
/* Runs fn(ctx, task, tid) for every task and waits.  p may be NULL (all
 * tasks run on the caller, tid 0). */
void tp_run(tp_pool *p, tp_fn fn, void *ctx, int ntasks);

#ifdef __cplusplus
}
#endif
#endif /* ASA_TP_H */
