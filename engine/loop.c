/*
 * engine/loop.c - the engine thread (see loop.h): inbox, scheduler, steps,
 * callbacks.
 *
 * Locking: l->mu guards the inbox, the cancel list, the flags and the stats
 * snapshot.  Everything else (scheduler, pool, engine, loop_req objects once
 * taken from the inbox) is touched only by the engine thread.
 */
#define _GNU_SOURCE
#include "loop.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "sched.h"

#define MOD "loop"

typedef struct loop_req {
    uint64_t id;
    eng_request r;        /* copy; arrays below are owned */
    int32_t *prompt;
    int32_t *stop_ids;
    int32_t *bias_ids;    /* [n_bias_base + 1 + n_stop_ids]: the request's
                             bias, then EOS and stop ids at -inf (used while
                             fewer than min_tokens were generated) */
    float *bias_vals;
    int n_bias_base, n_bias_min;
    eng_request_stats st;
    sched_req *sr;
    bool cancelled;       /* sched_abort was called: ignore its tokens */
    bool counted_queued;  /* still counted in the queue bounds */
    struct loop_req *next;
} loop_req;

typedef struct cancel_ent {
    uint64_t id;
    sched_finish why;
} cancel_ent;

struct eng_loop {
    eng *e;
    kv_pool *pool;
    sched *s;
    eng_loop_options o;

    pthread_t th;
    bool started;
    uv_loop_t uv;
    uv_async_t wake;

    pthread_mutex_t mu;
    loop_req *inbox, *inbox_tail;
    cancel_ent *cancels;
    int n_cancels, cap_cancels;
    bool draining, stopping;
    bool alive;
    int queued_reqs;
    int64_t queued_tokens;
    eng_loop_stats snap;
    uint64_t next_id;

    /* engine-thread scratch, grown as needed */
    eng_seq_step *steps;
    eng_seq_result *results;
    eng_sampling *sps;
    int32_t *sampled;
    loop_req **qs;
    bool *sflag;
    int cap_items;
};

static void req_free(loop_req *q) {
    if (!q)
        return;
    free(q->prompt);
    free(q->stop_ids);
    free(q->bias_ids);
    free(q->bias_vals);
    free(q);
}

/* ---- scheduler callbacks: engine slots -------------------------------- */

static asa_err cb_seq_open(void *ctx, sched_req *r, int *slot) {
    (void)r;
    return eng_seq_open(((eng_loop *)ctx)->e, slot);
}

static void cb_seq_close(void *ctx, sched_req *r, int slot) {
    (void)r;
    eng_seq_close(((eng_loop *)ctx)->e, slot);
}

/* ---- public, any thread ------------------------------------------------ */

asa_err eng_loop_create(eng *e, const eng_loop_options *o, eng_loop **out) {
    if (!e || !o || !out || o->max_num_seqs < 1 || o->max_num_batched_tokens < 1)
        return ASA_EINVAL;
    eng_loop *l = calloc(1, sizeof *l);
    if (!l)
        return ASA_ENOMEM;
    l->e = e;
    l->o = *o;
    l->pool = eng_kv_pool(e);
    l->alive = true;
    l->next_id = 1;
    pthread_mutex_init(&l->mu, NULL);

    sched_config sc;
    sched_config_default(&sc);
    sc.max_num_seqs = o->max_num_seqs;
    sc.max_num_batched_tokens = o->max_num_batched_tokens;
    sc.max_model_len = eng_get_model(e)->cfg.max_position_embeddings;
    sc.eos_token_id = o->eos_token_id;
    sc.cb.ctx = l;
    sc.cb.seq_open = cb_seq_open;
    sc.cb.seq_close = cb_seq_close;
    asa_err err = sched_create(l->pool, &sc, &l->s);
    if (err)
        goto fail;
    if (uv_loop_init(&l->uv) != 0) {
        err = ASA_ENOMEM;
        goto fail_sched;
    }
    if (uv_async_init(&l->uv, &l->wake, NULL) != 0) {
        err = ASA_ENOMEM;
        goto fail_uv;
    }
    *out = l;
    return ASA_OK;

fail_uv:
    uv_loop_close(&l->uv);
fail_sched:
    sched_destroy(l->s);
fail:
    pthread_mutex_destroy(&l->mu);
    free(l);
    return err;
}

/* Copies r into a new loop_req (arrays owned), or NULL when out of memory. */
static loop_req *req_copy(const eng_loop *l, const eng_request *r) {
    loop_req *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->r = *r;
    int n_extra = 1 + r->n_stop_ids;
    q->prompt = malloc((size_t)r->n_prompt * sizeof *q->prompt);
    q->stop_ids = malloc((size_t)(r->n_stop_ids + 1) * sizeof *q->stop_ids);
    q->bias_ids = malloc((size_t)(r->sp.n_bias + n_extra) * sizeof *q->bias_ids);
    q->bias_vals = malloc((size_t)(r->sp.n_bias + n_extra) * sizeof *q->bias_vals);
    if (!q->prompt || !q->stop_ids || !q->bias_ids || !q->bias_vals) {
        req_free(q);
        return NULL;
    }
    memcpy(q->prompt, r->prompt, (size_t)r->n_prompt * sizeof *q->prompt);
    if (r->n_stop_ids)
        memcpy(q->stop_ids, r->stop_ids, (size_t)r->n_stop_ids * sizeof *q->stop_ids);
    int nb = 0;
    for (int i = 0; i < r->sp.n_bias; i++, nb++) {
        q->bias_ids[nb] = r->sp.bias_ids[i];
        q->bias_vals[nb] = r->sp.bias_vals[i];
    }
    q->n_bias_base = nb;
    /* While fewer than min_tokens were generated, EOS and the stop ids are
     * banned so that the request cannot end early. */
    if (l->o.eos_token_id >= 0 && !r->ignore_eos) {
        q->bias_ids[nb] = l->o.eos_token_id;
        q->bias_vals[nb++] = -INFINITY;
    }
    for (int i = 0; i < r->n_stop_ids; i++, nb++) {
        q->bias_ids[nb] = r->stop_ids[i];
        q->bias_vals[nb] = -INFINITY;
    }
    q->n_bias_min = nb;
    q->r.prompt = q->prompt;
    q->r.stop_ids = q->stop_ids;
    q->st.n_prompt = r->n_prompt;
    q->st.t_arrival = asa_now();
    return q;
}

static bool req_valid(const eng_request *r) {
    return r && r->prompt && r->n_prompt >= 1 && r->max_tokens >= 1 && r->on_finish &&
           r->n_stop_ids >= 0 && r->sp.n_bias >= 0 && r->min_tokens >= 0;
}

asa_err eng_loop_submit_group(eng_loop *l, const eng_request *rs, int n, uint64_t *ids) {
    if (!l || !rs || n < 1)
        return ASA_EINVAL;
    int64_t tokens = 0;
    for (int i = 0; i < n; i++) {
        if (!req_valid(&rs[i]))
            return ASA_EINVAL;
        tokens += rs[i].n_prompt;
    }
    /* Copy everything first: nothing can fail once the lock is taken. */
    loop_req *head = NULL, *tail = NULL;
    for (int i = 0; i < n; i++) {
        loop_req *q = req_copy(l, &rs[i]);
        if (!q) {
            while (head) {
                loop_req *nx = head->next;
                req_free(head);
                head = nx;
            }
            return ASA_ENOMEM;
        }
        if (tail)
            tail->next = q;
        else
            head = q;
        tail = q;
    }

    /* The bounds apply to the group as a whole, and an empty queue takes any
     * group: a request larger than the bounds is served when nothing waits
     * instead of being refused forever. */
    pthread_mutex_lock(&l->mu);
    asa_err err = ASA_OK;
    if (!l->alive)
        err = ASA_EDEAD;
    else if (l->draining || l->stopping)
        err = ASA_ECANCELLED;
    else if (l->o.max_queued_requests > 0 && l->queued_reqs > 0 &&
             l->queued_reqs + n > l->o.max_queued_requests)
        err = ASA_EAGAIN;
    else if (l->o.max_queued_tokens > 0 && l->queued_reqs > 0 &&
             l->queued_tokens + tokens > l->o.max_queued_tokens)
        err = ASA_EAGAIN;
    if (err) {
        pthread_mutex_unlock(&l->mu);
        while (head) {
            loop_req *nx = head->next;
            req_free(head);
            head = nx;
        }
        return err;
    }
    int i = 0;
    for (loop_req *q = head; q; q = q->next, i++) {
        q->id = l->next_id++;
        q->counted_queued = true;
        if (ids)
            ids[i] = q->id;
    }
    l->queued_reqs += n;
    l->queued_tokens += tokens;
    l->snap.num_waiting += n;
    if (l->inbox_tail)
        l->inbox_tail->next = head;
    else
        l->inbox = head;
    l->inbox_tail = tail;
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->wake);
    return ASA_OK;
}

asa_err eng_loop_submit(eng_loop *l, const eng_request *r, uint64_t *id) {
    return eng_loop_submit_group(l, r, 1, id);
}

static void push_cancel(eng_loop *l, uint64_t id, sched_finish why) {
    pthread_mutex_lock(&l->mu);
    if (l->n_cancels == l->cap_cancels) {
        int cap = l->cap_cancels ? l->cap_cancels * 2 : 64;
        cancel_ent *nc = realloc(l->cancels, (size_t)cap * sizeof *nc);
        if (!nc) {
            /* Out of memory: the request runs to its end instead. */
            pthread_mutex_unlock(&l->mu);
            ASA_LOGE(MOD, "out of memory queueing a cancellation");
            return;
        }
        l->cancels = nc;
        l->cap_cancels = cap;
    }
    l->cancels[l->n_cancels++] = (cancel_ent){id, why};
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->wake);
}

void eng_loop_cancel(eng_loop *l, uint64_t id) {
    if (l)
        push_cancel(l, id, SCHED_FINISH_ABORT);
}

void eng_loop_stats_get(eng_loop *l, eng_loop_stats *st) {
    pthread_mutex_lock(&l->mu);
    *st = l->snap;
    st->alive = l->alive;
    st->draining = l->draining;
    pthread_mutex_unlock(&l->mu);
}

void eng_loop_drain(eng_loop *l) {
    pthread_mutex_lock(&l->mu);
    l->draining = true;
    pthread_mutex_unlock(&l->mu);
}

bool eng_loop_idle(eng_loop *l) {
    pthread_mutex_lock(&l->mu);
    bool idle = l->snap.num_running == 0 && l->snap.num_waiting == 0 && !l->inbox;
    pthread_mutex_unlock(&l->mu);
    return idle;
}

/* ---- engine thread ------------------------------------------------------ */

static eng_finish_reason map_finish(sched_finish f) {
    switch (f) {
    case SCHED_FINISH_STOP:
        return ENG_FINISH_STOP;
    case SCHED_FINISH_LENGTH:
        return ENG_FINISH_LENGTH;
    case SCHED_FINISH_ABORT:
        return ENG_FINISH_ABORT;
    default:
        return ENG_FINISH_ERROR;
    }
}

static void unqueue(eng_loop *l, loop_req *q) {
    if (!q->counted_queued)
        return;
    q->counted_queued = false;
    pthread_mutex_lock(&l->mu);
    l->queued_reqs--;
    l->queued_tokens -= q->r.n_prompt;
    pthread_mutex_unlock(&l->mu);
}

static void report_finished(eng_loop *l) {
    sched_req *done[64];
    int n;
    while ((n = sched_take_finished(l->s, done, 64)) > 0) {
        for (int i = 0; i < n; i++) {
            loop_req *q = sched_req_user(done[i]);
            unqueue(l, q);
            q->st.t_finish = asa_now();
            q->st.n_preemptions = sched_req_num_preemptions(done[i]);
            sched_finish f = sched_req_finish(done[i]);
            q->r.on_finish(q->r.ud, map_finish(f), &q->st,
                           f == SCHED_FINISH_ERROR ? sched_req_error(done[i]) : NULL);
            sched_req_free(l->s, done[i]);
            req_free(q);
        }
    }
}

/* Takes the inbox and the cancellations; returns true when stopping. */
static bool drain_inbox(eng_loop *l) {
    pthread_mutex_lock(&l->mu);
    loop_req *in = l->inbox;
    l->inbox = l->inbox_tail = NULL;
    int nc = l->n_cancels;
    cancel_ent *cancels = NULL;
    if (nc) {
        cancels = malloc((size_t)nc * sizeof *cancels);
        if (cancels)
            memcpy(cancels, l->cancels, (size_t)nc * sizeof *cancels);
        else
            nc = 0; /* retried next time */
        if (cancels)
            l->n_cancels = 0;
    }
    bool stopping = l->stopping;
    pthread_mutex_unlock(&l->mu);

    while (in) {
        loop_req *q = in;
        in = in->next;
        q->next = NULL;
        sched_params sp;
        sched_params_default(&sp);
        sp.max_tokens = q->r.max_tokens;
        sp.min_tokens = q->r.min_tokens;
        sp.ignore_eos = q->r.ignore_eos;
        sp.stop_ids = q->stop_ids;
        sp.n_stop_ids = q->r.n_stop_ids;
        sp.priority = q->r.priority;
        char msg[256] = "";
        asa_errbuf eb = {msg, sizeof msg};
        asa_err err = sched_add(l->s, q->id, q->prompt, q->r.n_prompt, &sp, q, &q->sr, &eb);
        if (err) {
            unqueue(l, q);
            pthread_mutex_lock(&l->mu);
            l->snap.num_waiting--;
            pthread_mutex_unlock(&l->mu);
            q->st.t_finish = asa_now();
            q->r.on_finish(q->r.ud, ENG_FINISH_ERROR, &q->st,
                           msg[0] ? msg : asa_strerror(err));
            req_free(q);
        }
    }
    for (int i = 0; i < nc; i++) {
        sched_req *r = sched_find(l->s, cancels[i].id);
        if (r && sched_req_status(r) != SCHED_FINISHED) {
            ((loop_req *)sched_req_user(r))->cancelled = true;
            sched_abort(l->s, cancels[i].id, cancels[i].why);
        }
    }
    free(cancels);
    return stopping;
}

static int grow_scratch(eng_loop *l, int n) {
    if (n <= l->cap_items)
        return 0;
    int cap = n * 2;
    eng_seq_step *st = realloc(l->steps, (size_t)cap * sizeof *st);
    if (st)
        l->steps = st;
    eng_seq_result *rs = realloc(l->results, (size_t)cap * sizeof *rs);
    if (rs)
        l->results = rs;
    eng_sampling *sps = realloc(l->sps, (size_t)cap * sizeof *sps);
    if (sps)
        l->sps = sps;
    int32_t *sa = realloc(l->sampled, (size_t)cap * sizeof *sa);
    if (sa)
        l->sampled = sa;
    loop_req **qs = realloc(l->qs, (size_t)cap * sizeof *qs);
    if (qs)
        l->qs = qs;
    bool *sf = realloc(l->sflag, (size_t)cap * sizeof *sf);
    if (sf)
        l->sflag = sf;
    if (!st || !rs || !sps || !sa || !qs || !sf)
        return -1;
    l->cap_items = cap;
    return 0;
}

static void update_snapshot(eng_loop *l) {
    sched_stats ss;
    sched_get_stats(l->s, &ss);
    double usage = kv_pool_usage(l->pool);
    pthread_mutex_lock(&l->mu);
    int inbox = 0;
    for (loop_req *q = l->inbox; q; q = q->next)
        inbox++;
    l->snap.num_running = ss.n_running;
    l->snap.num_waiting = ss.n_waiting + inbox;
    l->snap.kv_usage = usage;
    l->snap.num_preemptions = ss.n_preemptions;
    l->snap.num_steps = ss.n_steps;
    pthread_mutex_unlock(&l->mu);
}

static int run_step(eng_loop *l) {
    const sched_batch *b = NULL;
    asa_err err = sched_step(l->s, &b);
    if (err) {
        ASA_LOGE(MOD, "scheduler step failed: %s", asa_strerror(err));
        return -1;
    }
    if (b->n_items == 0) {
        sched_update(l->s, NULL, 0);
        return 0;
    }
    if (grow_scratch(l, b->n_items)) {
        ASA_LOGE(MOD, "out of memory building a step");
        sched_update(l->s, NULL, 0);
        return -1;
    }
    double now = asa_now();
    for (int i = 0; i < b->n_items; i++) {
        const sched_item *it = &b->items[i];
        loop_req *q = it->user;
        if (q->st.t_scheduled == 0) {
            q->st.t_scheduled = now;
            unqueue(l, q);
        }
        eng_sampling *sp = &l->sps[i];
        *sp = q->r.sp;
        sp->bias_ids = q->bias_ids;
        sp->bias_vals = q->bias_vals;
        sp->n_bias = it->n_output < q->r.min_tokens ? q->n_bias_min : q->n_bias_base;
        l->steps[i] = (eng_seq_step){
            .slot = it->slot,
            .tokens = it->tokens,
            .n_tokens = it->n_tokens,
            .pos0 = it->pos0,
            .kv = it->kv,
            .sample = it->sample,
            .sp = sp,
            .prompt = it->prompt,
            .n_prompt = it->n_prompt,
            .output = it->output,
            .n_output = it->n_output,
        };
    }
    eng_batch eb = {b->n_items, l->steps, b->copies, b->n_copies};
    err = eng_step(l->e, &eb, l->results);
    if (err) {
        ASA_LOGE(MOD, "engine step failed: %s; the engine is dead", asa_strerror(err));
        pthread_mutex_lock(&l->mu);
        l->alive = false;
        pthread_mutex_unlock(&l->mu);
        sched_update(l->s, NULL, 0);
        sched_abort_all(l->s, SCHED_FINISH_ERROR);
        return -1;
    }
    int n = b->n_items;
    /* Copy what the callbacks need: the batch is invalid after update. */
    for (int i = 0; i < n; i++)
        l->sampled[i] = b->items[i].sample ? l->results[i].token : 0;
    loop_req **qs = l->qs;
    bool *sampled_flag = l->sflag;
    for (int i = 0; i < n; i++) {
        qs[i] = b->items[i].user;
        sampled_flag[i] = b->items[i].sample;
    }
    sched_update(l->s, l->sampled, n);
    now = asa_now();
    for (int i = 0; i < n; i++) {
        loop_req *q = qs[i];
        if (!sampled_flag[i] || q->cancelled)
            continue;
        if (q->st.t_first_token == 0)
            q->st.t_first_token = now;
        q->st.n_generated++;
        if (q->r.on_token && q->r.on_token(q->r.ud, l->sampled[i], &l->results[i])) {
            q->cancelled = true;
            sched_abort(l->s, q->id, SCHED_FINISH_STOP);
        }
    }
    return 0;
}

static void *thread_main(void *arg) {
    eng_loop *l = arg;
    for (;;) {
        bool stopping = drain_inbox(l);
        if (stopping)
            break;
        if (l->o.pre_step) {
            l->o.pre_step(l->o.pre_step_ud);
            drain_inbox(l);
        }
        report_finished(l);
        bool work = sched_has_work(l->s);
        bool alive;
        pthread_mutex_lock(&l->mu);
        alive = l->alive;
        pthread_mutex_unlock(&l->mu);
        if (work && alive) {
            run_step(l);
            report_finished(l);
            update_snapshot(l);
            uv_run(&l->uv, UV_RUN_NOWAIT);
        } else {
            update_snapshot(l);
            uv_run(&l->uv, UV_RUN_ONCE);
        }
    }
    /* Shutting down: abort what is left and report it. */
    sched_abort_all(l->s, SCHED_FINISH_ABORT);
    report_finished(l);
    update_snapshot(l);
    return NULL;
}

asa_err eng_loop_start(eng_loop *l) {
    if (!l || l->started)
        return ASA_EINVAL;
    if (pthread_create(&l->th, NULL, thread_main, l) != 0)
        return ASA_ENOMEM;
    l->started = true;
    return ASA_OK;
}

void eng_loop_stop(eng_loop *l) {
    if (!l || !l->started)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->wake);
    pthread_join(l->th, NULL);
    l->started = false;
}

void eng_loop_destroy(eng_loop *l) {
    if (!l)
        return;
    eng_loop_stop(l);
    /* Requests still in the inbox never reached the engine. */
    for (loop_req *q = l->inbox; q;) {
        loop_req *n = q->next;
        q->r.on_finish(q->r.ud, ENG_FINISH_ABORT, &q->st, NULL);
        req_free(q);
        q = n;
    }
    uv_close((uv_handle_t *)&l->wake, NULL);
    uv_run(&l->uv, UV_RUN_DEFAULT);
    uv_loop_close(&l->uv);
    sched_destroy(l->s);
    free(l->cancels);
    free(l->steps);
    free(l->results);
    free(l->sps);
    free(l->sampled);
    free(l->qs);
    free(l->sflag);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
