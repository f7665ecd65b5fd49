/*
 * kernels/threadpool.h - a small persistent pool of worker threads for the
 * CPU kernels.
 *
 * tp_run(pool, fn, ctx) calls fn(ctx, tid, nthreads) once on every thread
 * (tid 0 is the calling thread itself) and returns when all calls have
 * returned.  Work is divided by the callee from (tid, nthreads), so a kernel
 * can pick a partition whose results do not depend on it (the matmul splits
 * output columns; every output element is computed by exactly one thread in
 * a fixed order).
 *
 * Workers are created once at tp_create and sleep between runs (after a
 * short spin, so back-to-back runs of one step do not pay a wakeup each).
 * No thread is created per run.
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
typedef void (*tp_fn)(void *ctx, int tid, int nthreads);

/* Creates a pool of nthreads threads in all (nthreads - 1 workers plus the
 * caller); nthreads <= 0 means the number of online CPUs.  Returns
 * ASA_ENOMEM or ASA_EINVAL (thread creation failed); *out is set only on
 * success. */
asa_err tp_create(int nthreads, tp_pool **out);
/* Joins the workers and frees the pool.  NULL is a no-op. */
void tp_destroy(tp_pool *p);
/* Threads in all, >= 1.  NULL gives 1. */
int tp_size(const tp_pool *p);
/* Runs fn(ctx, tid, n) on every thread and waits.  p may be NULL: then fn
 * runs once on the caller with (0, 1). */
void tp_run(tp_pool *p, tp_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* ASA_TP_H */
