/*
 * kernels/threadpool.c - persistent workers; see threadpool.h.
 *
 * A run publishes (fn, ctx) and bumps a generation counter.  Workers spin on
 * the counter for a short while (a step issues dozens of runs back to back)
 * and then sleep on a condition variable.  Completion is a countdown of the
 * workers still busy; the caller spins on it, then sleeps as well.
 */
#define _GNU_SOURCE
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TP_RELAX() _mm_pause()
#else
#define TP_RELAX() ((void)0)
#endif

enum { TP_SPIN = 20000 };

struct tp_pool {
    int n;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t cv_start, cv_done;
    atomic_uint gen;     /* bumped by every run (and by destroy) */
    atomic_int pending;  /* workers that have not finished the current run */
    atomic_int stop;
    tp_fn fn;
    void *ctx;
};

typedef struct tp_arg {
    tp_pool *p;
    int tid;
} tp_arg;

static void *tp__worker(void *arg) {
    tp_pool *p = ((tp_arg *)arg)->p;
    int tid = ((tp_arg *)arg)->tid;
    free(arg);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               spins < TP_SPIN) {
            TP_RELAX();
            spins++;
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen)
                pthread_cond_wait(&p->cv_start, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        p->fn(p->ctx, tid, p->n);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
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
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_start, NULL);
    pthread_cond_init(&p->cv_done, NULL);
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
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_start);
    pthread_cond_destroy(&p->cv_done);
    free(p->th);
    free(p);
}

int tp_size(const tp_pool *p) { return p ? p->n : 1; }

void tp_run(tp_pool *p, tp_fn fn, void *ctx) {
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);

    fn(ctx, 0, p->n);

    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0 && spins < TP_SPIN) {
        TP_RELAX();
        spins++;
    }
    if (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0)
            pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
