/*
 * kernels/threadpool.c - persistent workers with dynamic task claiming; see
 * threadpool.h.
 *
 * A run publishes (fn, ctx, ntasks), then a 64-bit claim word
 * (generation << 32 | next task) and bumps the generation.  Every thread
 * claims tasks by compare-and-swap on the claim word, which fails for a
 * worker that woke up for an older generation, so a late worker can never run
 * a task of the wrong run.  The caller returns once the count of finished
 * tasks reaches ntasks; tasks are only counted by the thread that claimed
 * them, after running them, so no count from an old run can leak into a new
 * one.  Idle workers spin on the generation for a short while, then sleep
 * on a condition variable (a sleeper count lets a run skip the wakeup call
 * when everybody is spinning).
 */
#define _GNU_SOURCE
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TP_RELAX() _mm_pause()
#else
#define TP_RELAX() ((void)0)
#endif

/* Pause iterations (tens of microseconds) before an idle worker sleeps, and
 * before the caller, waiting for tasks a worker is still running, starts
 * yielding.  Short: a sleeping worker costs no latency (the caller claims
 * the tasks itself), while a spinning one takes a core from whoever else
 * runs on the machine. */
enum { TP_SPIN = 1000 };

struct tp_pool {
    int n;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;          /* bumped by every run and by destroy */
    atomic_uint_least64_t claim; /* gen << 32 | next task */
    atomic_int done;          /* tasks finished in the current run */
    atomic_int sleepers;
    atomic_int stop;
    _Atomic(tp_fn) fn;
    _Atomic(void *) ctx;
    atomic_int ntasks;
};

typedef struct tp_arg {
    tp_pool *p;
    int tid;
} tp_arg;

/* Claims and runs tasks of generation g until none are left.  The job
 * fields are read before the claim word (tp_run writes them after it), so a
 * stale worker that sees a newer job's fields fails the tag check. */
static void tp__work(tp_pool *p, unsigned g, int tid) {
    tp_fn fn = atomic_load(&p->fn);
    void *ctx = atomic_load(&p->ctx);
    int ntasks = atomic_load(&p->ntasks);
    uint64_t c = atomic_load(&p->claim);
    for (;;) {
        if ((uint32_t)(c >> 32) != (uint32_t)g || (int64_t)(c & 0xffffffffu) >= ntasks)
            return;
        if (atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            fn(ctx, (int)(c & 0xffffffffu), tid);
            atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel);
            c = atomic_load_explicit(&p->claim, memory_order_acquire);
        }
    }
}

static void *tp__worker(void *arg) {
    tp_pool *p = ((tp_arg *)arg)->p;
    int tid = ((tp_arg *)arg)->tid;
    free(arg);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load(&p->gen)) == seen && spins < TP_SPIN) {
            TP_RELAX();
            spins++;
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = atomic_load(&p->gen)) == seen)
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (atomic_load(&p->stop))
            return NULL;
        tp__work(p, g, tid);
    }
}

static void tp__publish(tp_pool *p) {
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

asa_err tp_create(int nthreads, tp_pool **out) {
    if (nthreads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = c > 0 ? (int)c : 1;
    }
    if (nthreads > 256)
        nthreads = 256;
    tp_pool *p = calloc(1, sizeof *p);
    if (!p)
        return ASA_ENOMEM;
    p->n = nthreads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->claim, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->fn, NULL);
    atomic_init(&p->ctx, NULL);
    atomic_init(&p->ntasks, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->th = calloc((size_t)nthreads, sizeof *p->th);
    if (!p->th) {
        p->n = 1;
        tp_destroy(p);
        return ASA_ENOMEM;
    }
    for (int i = 1; i < nthreads; i++) {
        tp_arg *a = malloc(sizeof *a);
        int rc = a ? 0 : -1;
        if (a) {
            a->p = p;
            a->tid = i;
            rc = pthread_create(&p->th[i], NULL, tp__worker, a);
            if (rc != 0)
                free(a);
        }
        if (rc != 0) {
            p->n = i; /* join only the workers that exist */
            tp_destroy(p);
            return a ? ASA_EINVAL : ASA_ENOMEM;
        }
    }
    *out = p;
    return ASA_OK;
}

void tp_destroy(tp_pool *p) {
    if (!p)
        return;
    atomic_store(&p->stop, 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->th);
    free(p);
}

int tp_size(const tp_pool *p) { return p ? p->n : 1; }

void tp_run(tp_pool *p, tp_fn fn, void *ctx, int ntasks) {
    if (ntasks <= 0)
        return;
    if (!p || p->n == 1 || ntasks == 1) {
        for (int i = 0; i < ntasks; i++)
            fn(ctx, i, 0);
        return;
    }
    unsigned g = atomic_load(&p->gen) + 1;
    /* The claim word first: a worker still inside tp__work for the previous
     * run that reads any of the new fields below is then bound to read the
     * new generation tag as well, and leaves without claiming. */
    atomic_store(&p->claim, (uint64_t)(uint32_t)g << 32);
    atomic_store(&p->fn, fn);
    atomic_store(&p->ctx, ctx);
    atomic_store(&p->ntasks, ntasks);
    atomic_store(&p->done, 0);
    tp__publish(p);
    tp__work(p, g, 0);
    /* Only tasks that a worker is running remain. */
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < ntasks) {
        if (++spins < TP_SPIN)
            TP_RELAX();
        else
            sched_yield();
    }
}
