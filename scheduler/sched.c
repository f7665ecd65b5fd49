/*
 * scheduler/sched.c - continuous batching over the paged KV pool (contract
 * in sched.h).
 *
 * Where a request lives:
 *   waiting   doubly linked list sorted by (priority, arrival); no kv_seq.
 *   running   array in admission order (admit_seq strictly increasing);
 *             each holds a kv_seq whose num_tokens == num_computed.
 *   finished  FIFO list until sched_take_finished; then owned by the
 *             caller's reference until sched_req_free.
 * Every request is also on the `all` list (lookup by id, destroy).
 *
 * A step builds items for running requests first, then admits waiting
 * ones; items point into the requests' token buffers.  Between sched_step
 * and sched_update the batch is "in flight": its requests carry in_flight,
 * and an abort of one of them is deferred to sched_update.
 */
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHED_ERRMSG 192

struct sched_req {
    uint64_t id;
    void *user;
    sched_status status;
    sched_finish finish;
    int32_t stop_token;
    char err[SCHED_ERRMSG];

    int32_t *toks;     /* [cap]: prompt then output; n_known valid */
    int n_prompt, n_known, cap;
    int max_tokens, min_tokens;
    bool ignore_eos;
    int32_t *stop_ids; /* [n_stop_ids] */
    int n_stop_ids;
    int priority;

    uint64_t arrival;   /* sched_add order */
    uint64_t admit_seq; /* admission order (renewed on every admission) */
    int num_computed;
    int n_preempt;
    int slot;           /* -1 when none */
    bool has_slot;
    kv_seq *kv;         /* NULL unless running */

    bool in_flight;     /* part of the batch in flight */
    bool abort_pending; /* aborted while in flight */
    sched_finish pending_reason;
    bool taken;         /* handed out by sched_take_finished */

    sched_req *prev, *next;         /* waiting or finished list */
    sched_req *all_prev, *all_next; /* every request */
};

struct sched {
    kv_pool *pool;
    sched_config cfg;
    kv_pool_config pcfg;
    int chunk_max; /* largest chunk of one request in one step */

    sched_req **running; /* [max_num_seqs] */
    int n_running;
    sched_req *wait_head, *wait_tail;
    int n_waiting;
    sched_req *fin_head, *fin_tail;
    int n_finished;
    sched_req *all;
    int n_taken;

    uint64_t next_arrival, next_admit;

    sched_item *items;  /* [max_num_seqs] */
    int *item_copy0;    /* [max_num_seqs] first copy of each item */
    kv_copy *copies;    /* [cfg.max_copies] */
    sched_batch batch;
    bool in_flight;

    sched_stats st;
};

const char *sched_finish_name(sched_finish f) {
    switch (f) {
    case SCHED_FINISH_STOP: return "stop";
    case SCHED_FINISH_LENGTH: return "length";
    case SCHED_FINISH_ABORT: return "abort";
    case SCHED_FINISH_ERROR: return "error";
    default: return "none";
    }
}

void sched_config_default(sched_config *c) {
    memset(c, 0, sizeof *c);
    c->max_num_seqs = 8;
    c->max_num_batched_tokens = 2048;
    c->eos_token_id = -1;
}

void sched_params_default(sched_params *p) {
    memset(p, 0, sizeof *p);
    p->max_tokens = 16;
}

static int imin(int a, int b) { return a < b ? a : b; }

/* ---- create / destroy --------------------------------------------------- */

asa_err sched_create(kv_pool *pool, const sched_config *cfg, sched **out) {
    if (!pool || !cfg || !out || cfg->max_num_seqs < 1 || cfg->max_num_batched_tokens < 1 ||
        cfg->long_prefill_token_threshold < 0 || cfg->max_model_len < 0 || cfg->max_copies < 0)
        return ASA_EINVAL;
    sched *s = calloc(1, sizeof *s);
    if (!s)
        return ASA_ENOMEM;
    s->pool = pool;
    s->cfg = *cfg;
    s->pcfg = *kv_pool_get_config(pool);
    if (s->cfg.max_copies == 0)
        s->cfg.max_copies = 2 * cfg->max_num_seqs;
    s->chunk_max = cfg->max_num_batched_tokens;
    if (cfg->long_prefill_token_threshold > 0)
        s->chunk_max = imin(s->chunk_max, cfg->long_prefill_token_threshold);
    s->running = calloc((size_t)cfg->max_num_seqs, sizeof *s->running);
    s->items = calloc((size_t)cfg->max_num_seqs, sizeof *s->items);
    s->item_copy0 = calloc((size_t)cfg->max_num_seqs, sizeof *s->item_copy0);
    s->copies = calloc((size_t)s->cfg.max_copies, sizeof *s->copies);
    if (!s->running || !s->items || !s->item_copy0 || !s->copies)
        goto fail;
    s->batch.items = s->items;
    s->batch.copies = s->copies;
    *out = s;
    return ASA_OK;

fail:
    free(s->copies);
    free(s->item_copy0);
    free(s->items);
    free(s->running);
    free(s);
    return ASA_ENOMEM;
}

static void req_free_mem(sched_req *r) {
    free(r->toks);
    free(r->stop_ids);
    free(r);
}

void sched_destroy(sched *s) {
    if (!s)
        return;
    sched_req *r = s->all;
    while (r) {
        sched_req *next = r->all_next;
        kv_seq_destroy(s->pool, r->kv);
        req_free_mem(r);
        r = next;
    }
    free(s->copies);
    free(s->item_copy0);
    free(s->items);
    free(s->running);
    free(s);
}

/* ---- lists -------------------------------------------------------------- */

static bool wait_before(const sched_req *a, const sched_req *b) {
    if (a->priority != b->priority)
        return a->priority < b->priority;
    return a->arrival < b->arrival;
}

/* Inserts into the waiting list at its (priority, arrival) place.  Scans
 * from the tail: new arrivals of equal priority go there in O(1). */
static void wait_insert(sched *s, sched_req *r) {
    sched_req *after = s->wait_tail;
    while (after && wait_before(r, after))
        after = after->prev;
    r->prev = after;
    r->next = after ? after->next : s->wait_head;
    if (r->next)
        r->next->prev = r;
    else
        s->wait_tail = r;
    if (after)
        after->next = r;
    else
        s->wait_head = r;
    r->status = SCHED_WAITING;
    s->n_waiting++;
}

static void wait_remove(sched *s, sched_req *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        s->wait_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        s->wait_tail = r->prev;
    r->prev = r->next = NULL;
    s->n_waiting--;
}

static void fin_push(sched *s, sched_req *r) {
    r->next = NULL;
    r->prev = s->fin_tail;
    if (s->fin_tail)
        s->fin_tail->next = r;
    else
        s->fin_head = r;
    s->fin_tail = r;
    s->n_finished++;
}

static int running_index(const sched *s, const sched_req *r) {
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i] == r)
            return i;
    return -1;
}

static void running_remove_at(sched *s, int i) {
    memmove(&s->running[i], &s->running[i + 1],
            (size_t)(s->n_running - i - 1) * sizeof *s->running);
    s->n_running--;
}

/* ---- request state changes ---------------------------------------------- */

/* Drops the request's KV pages and engine slot. */
static void req_release(sched *s, sched_req *r) {
    kv_seq_destroy(s->pool, r->kv);
    r->kv = NULL;
    r->num_computed = 0;
    if (r->has_slot && s->cfg.cb.seq_close)
        s->cfg.cb.seq_close(s->cfg.cb.ctx, r, r->slot);
    r->has_slot = false;
    r->slot = -1;
}

/* Any live request -> finished list. */
static void req_finish(sched *s, sched_req *r, sched_finish why) {
    if (r->status == SCHED_RUNNING) {
        int i = running_index(s, r);
        if (i >= 0)
            running_remove_at(s, i);
    } else if (r->status == SCHED_WAITING) {
        wait_remove(s, r);
    }
    req_release(s, r);
    r->status = SCHED_FINISHED;
    r->finish = why;
    r->in_flight = false;
    r->abort_pending = false;
    fin_push(s, r);
    s->st.n_done++;
}

/* Running request at index i -> waiting, to be recomputed from scratch. */
static void req_preempt(sched *s, int i) {
    sched_req *r = s->running[i];
    running_remove_at(s, i);
    req_release(s, r);
    r->n_preempt++;
    s->st.n_preemptions++;
    s->batch.n_preempted++;
    wait_insert(s, r);
    ASA_LOG(ASA_LOG_DEBUG, "sched", (int64_t)r->id,
            "preempted (%d known tokens, %d preemptions)", r->n_known, r->n_preempt);
}

/* Tokens a request may ever hold in the cache: the last generated token is
 * never fed back. */
static int req_max_cached(const sched_req *r) { return r->n_prompt + r->max_tokens - 1; }

/* Whether a sequence of up to L cached tokens, fed in chunks of at most
 * chunk_max, fits in the empty pool: global pages for every block; local
 * pages for the window plus a chunk (an upper bound over any chunking). */
static bool fits_alone(const sched *s, int L, int32_t need[KV_NCLASS]) {
    const int B = s->pcfg.block_size;
    const int blocks = (L + B - 1) / B;
    need[KV_GLOBAL] = blocks;
    need[KV_LOCAL] = 0;
    if (s->pcfg.window > 0 && L > 0) {
        long m = (long)s->pcfg.window - 1 + s->chunk_max;
        if (m > L)
            m = L;
        long l = (m - 1) / B + 2;
        need[KV_LOCAL] = (int32_t)(l < blocks ? l : blocks);
    }
    return need[KV_GLOBAL] <= s->pcfg.num_pages[KV_GLOBAL] &&
           need[KV_LOCAL] <= s->pcfg.num_pages[KV_LOCAL];
}

/* ---- add ---------------------------------------------------------------- */

static sched_req *find_any(const sched *s, uint64_t id) {
    for (sched_req *r = s->all; r; r = r->all_next)
        if (r->id == id)
            return r;
    return NULL;
}

sched_req *sched_find(const sched *s, uint64_t id) { return s ? find_any(s, id) : NULL; }

asa_err sched_add(sched *s, uint64_t id, const int32_t *prompt, int n_prompt,
                  const sched_params *p, void *user, sched_req **out,
                  asa_errbuf *eb) {
    if (!s || !prompt || n_prompt < 1 || !p)
        return asa_errf(eb, ASA_EINVAL, "request %llu: empty prompt or missing arguments",
                        (unsigned long long)id);
    if (p->max_tokens < 0 || p->min_tokens < 0 || p->n_stop_ids < 0 ||
        (p->n_stop_ids > 0 && !p->stop_ids))
        return asa_errf(eb, ASA_EINVAL, "request %llu: bad max_tokens, min_tokens or stop ids",
                        (unsigned long long)id);
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0)
            return asa_errf(eb, ASA_EINVAL, "request %llu: negative token id at %d",
                            (unsigned long long)id, i);
    const sched_req *dup = find_any(s, id);
    if (dup && dup->status != SCHED_FINISHED)
        return asa_errf(eb, ASA_EINVAL, "request %llu: id already in use",
                        (unsigned long long)id);

    const int mml = s->cfg.max_model_len;
    int max_tokens = p->max_tokens;
    if (max_tokens == 0) {
        if (mml == 0 || n_prompt >= mml)
            return asa_errf(eb, mml ? ASA_ETOOBIG : ASA_EINVAL,
                            "request %llu: max_tokens 0 needs room below max_model_len %d "
                            "(prompt has %d tokens)", (unsigned long long)id, mml, n_prompt);
        max_tokens = mml - n_prompt;
    }
    if (mml > 0 && (long)n_prompt + max_tokens > mml)
        return asa_errf(eb, ASA_ETOOBIG,
                        "request %llu: prompt (%d tokens) + max_tokens (%d) exceeds "
                        "max_model_len %d", (unsigned long long)id, n_prompt, max_tokens, mml);
    if ((long)n_prompt + max_tokens > INT32_MAX / 2)
        return asa_errf(eb, ASA_ETOOBIG, "request %llu: too many tokens",
                        (unsigned long long)id);

    sched_req *r = calloc(1, sizeof *r);
    if (!r)
        return asa_errf(eb, ASA_ENOMEM, "out of memory");
    r->id = id;
    r->user = user;
    r->n_prompt = r->n_known = n_prompt;
    r->max_tokens = max_tokens;
    r->min_tokens = imin(p->min_tokens, max_tokens);
    r->ignore_eos = p->ignore_eos;
    r->priority = p->priority;
    r->stop_token = -1;
    r->slot = -1;

    int32_t need[KV_NCLASS];
    if (!fits_alone(s, req_max_cached(r), need)) {
        free(r);
        return asa_errf(eb, ASA_ETOOBIG,
                        "request %llu: %d prompt + %d max_tokens need %d global and %d local "
                        "KV pages, the cache has %d and %d",
                        (unsigned long long)id, n_prompt, max_tokens, need[KV_GLOBAL],
                        need[KV_LOCAL], s->pcfg.num_pages[KV_GLOBAL],
                        s->pcfg.num_pages[KV_LOCAL]);
    }

    r->cap = n_prompt + imin(max_tokens, 64);
    r->toks = malloc((size_t)r->cap * sizeof *r->toks);
    if (p->n_stop_ids > 0)
        r->stop_ids = malloc((size_t)p->n_stop_ids * sizeof *r->stop_ids);
    if (!r->toks || (p->n_stop_ids > 0 && !r->stop_ids)) {
        req_free_mem(r);
        return asa_errf(eb, ASA_ENOMEM, "out of memory");
    }
    memcpy(r->toks, prompt, (size_t)n_prompt * sizeof *prompt);
    if (p->n_stop_ids > 0)
        memcpy(r->stop_ids, p->stop_ids, (size_t)p->n_stop_ids * sizeof *p->stop_ids);
    r->n_stop_ids = p->n_stop_ids;

    r->arrival = s->next_arrival++;
    r->all_next = s->all;
    if (s->all)
        s->all->all_prev = r;
    s->all = r;
    wait_insert(s, r);
    s->st.n_added++;
    if (out)
        *out = r;
    return ASA_OK;
}

/* ---- step --------------------------------------------------------------- */

static void item_fill(sched *s, sched_req *r, int n, int copy0) {
    int k = s->batch.n_items++;
    sched_item *it = &s->items[k];
    it->req = r;
    it->user = r->user;
    it->id = r->id;
    it->slot = r->slot;
    it->tokens = r->toks + r->num_computed;
    it->n_tokens = n;
    it->pos0 = r->num_computed;
    it->kv = r->kv;
    it->sample = r->num_computed + n == r->n_known;
    it->prompt = r->toks;
    it->n_prompt = r->n_prompt;
    it->output = r->toks + r->n_prompt;
    it->n_output = r->n_known - r->n_prompt;
    s->item_copy0[k] = copy0;
    s->batch.n_tokens += n;
    r->in_flight = true;
}

/* Takes request r's item (if any) back out of the batch being built: its
 * tokens return to the budget and its page copies are dropped (the pages
 * are about to be freed). */
static void item_remove(sched *s, const sched_req *r, int *budget) {
    sched_batch *b = &s->batch;
    for (int k = 0; k < b->n_items; k++) {
        if (s->items[k].req != r)
            continue;
        int c0 = s->item_copy0[k];
        int c1 = k + 1 < b->n_items ? s->item_copy0[k + 1] : b->n_copies;
        memmove(&s->copies[c0], &s->copies[c1], (size_t)(b->n_copies - c1) * sizeof *s->copies);
        b->n_copies -= c1 - c0;
        for (int j = k + 1; j < b->n_items; j++)
            s->item_copy0[j] -= c1 - c0;
        *budget += s->items[k].n_tokens;
        b->n_tokens -= s->items[k].n_tokens;
        memmove(&s->items[k], &s->items[k + 1], (size_t)(b->n_items - k - 1) * sizeof *s->items);
        memmove(&s->item_copy0[k], &s->item_copy0[k + 1],
                (size_t)(b->n_items - k - 1) * sizeof *s->item_copy0);
        b->n_items--;
        return;
    }
}

/* The running request to preempt: worst priority, then latest admission. */
static int pick_victim(const sched *s) {
    int v = s->n_running - 1;
    for (int i = s->n_running - 2; i >= 0; i--)
        if (s->running[i]->priority > s->running[v]->priority)
            v = i;
    return v;
}

static int32_t own_pages(const kv_seq *kv) {
    int32_t n = 0;
    for (int c = 0; c < KV_NCLASS; c++) {
        int len;
        const int32_t *t = kv_seq_table(kv, (kv_class)c, &len);
        for (int b = 0; b < len; b++)
            n += t[b] >= 0;
    }
    return n;
}

/* Schedules running request at index *i for n tokens, preempting others as
 * needed.  Returns 1 when scheduled (*i advanced), 0 when r itself was
 * preempted or failed (removed from running; *i unchanged), or a negative
 * asa_err. */
static int schedule_running(sched *s, int *i, int *budget) {
    sched_req *r = s->running[*i];
    int n = imin(imin(r->n_known - r->num_computed, *budget), s->chunk_max);
    for (;;) {
        int copy0 = s->batch.n_copies;
        asa_err rc = kv_seq_alloc(s->pool, r->kv, n, s->copies, s->cfg.max_copies,
                                  &s->batch.n_copies);
        if (rc == ASA_OK) {
            item_fill(s, r, n, copy0);
            *budget -= n;
            (*i)++;
            return 1;
        }
        if (rc != ASA_ENOSPACE)
            return rc == ASA_EINVAL ? ASA_EINTERNAL : rc;
        int v = pick_victim(s);
        if (s->running[v] == r) {
            /* r is the one to give way.  Alone with every page of the pool
             * and still short: it can never run, fail it instead of
             * looping. */
            kv_stats st;
            kv_pool_stats(s->pool, &st);
            if (s->n_running == 1 &&
                own_pages(r->kv) == st.used_pages[KV_GLOBAL] + st.used_pages[KV_LOCAL]) {
                snprintf(r->err, sizeof r->err,
                         "needs more KV cache pages than the pool has (%d tokens known, "
                         "%d global and %d local pages in the pool)",
                         r->n_known, st.total_pages[KV_GLOBAL], st.total_pages[KV_LOCAL]);
                ASA_LOG(ASA_LOG_DEBUG, "sched", (int64_t)r->id, "failed: %s", r->err);
                req_finish(s, r, SCHED_FINISH_ERROR);
            } else {
                req_preempt(s, *i);
            }
            return 0;
        }
        sched_req *victim = s->running[v];
        if (victim->in_flight) {
            item_remove(s, victim, budget);
            victim->in_flight = false;
        }
        req_preempt(s, v);
        if (v < *i)
            (*i)--;
    }
}

/* Admits the head of the waiting queue for a first chunk.  Returns 1 when
 * admitted, 0 when it cannot be now (stop admitting), or ASA_ENOMEM. */
static int admit_one(sched *s, int *budget) {
    sched_req *r = s->wait_head;
    int n = imin(imin(r->n_known, *budget), s->chunk_max);
    kv_seq *kv;
    asa_err rc = kv_seq_create(s->pool, &kv);
    if (rc != ASA_OK)
        return rc;
    int copy0 = s->batch.n_copies;
    rc = kv_seq_alloc(s->pool, kv, n, s->copies, s->cfg.max_copies, &s->batch.n_copies);
    if (rc != ASA_OK) {
        kv_seq_destroy(s->pool, kv);
        return rc == ASA_ENOSPACE ? 0 : rc == ASA_EINVAL ? ASA_EINTERNAL : rc;
    }
    int slot = -1;
    if (s->cfg.cb.seq_open && s->cfg.cb.seq_open(s->cfg.cb.ctx, r, &slot) != ASA_OK) {
        kv_seq_destroy(s->pool, kv);
        s->batch.n_copies = copy0;
        return 0;
    }
    wait_remove(s, r);
    r->status = SCHED_RUNNING;
    r->kv = kv;
    r->num_computed = 0;
    r->slot = slot;
    r->has_slot = s->cfg.cb.seq_open != NULL;
    r->admit_seq = s->next_admit++;
    s->running[s->n_running++] = r;
    item_fill(s, r, n, copy0);
    *budget -= n;
    return 1;
}

asa_err sched_step(sched *s, const sched_batch **out) {
    if (!s || !out)
        return ASA_EINVAL;
    if (s->in_flight)
        return ASA_EBUSY;
    sched_batch *b = &s->batch;
    b->n_items = b->n_tokens = b->n_copies = b->n_preempted = 0;
    int budget = s->cfg.max_num_batched_tokens;
    asa_err err = ASA_OK;

    /* Running requests first, in admission order. */
    int i = 0;
    while (i < s->n_running && budget > 0) {
        int rc = schedule_running(s, &i, &budget);
        if (rc < 0) {
            err = rc;
            goto fail;
        }
    }

    /* Then waiting ones, unless this step had to preempt. */
    while (b->n_preempted == 0 && s->wait_head && budget > 0 &&
           s->n_running < s->cfg.max_num_seqs) {
        int rc = admit_one(s, &budget);
        if (rc < 0) {
            err = rc;
            goto fail;
        }
        if (rc == 0)
            break;
    }

    if (b->n_items > 0) {
        s->in_flight = true;
        s->st.n_steps++;
        s->st.n_tokens_scheduled += (uint64_t)b->n_tokens;
    }
    *out = b;
    return ASA_OK;

fail:
    /* Host memory ran out: give the reservations back by preempting what
     * was scheduled (its pages are recomputed later). */
    while (b->n_items > 0) {
        sched_req *r = s->items[b->n_items - 1].req;
        int idx = running_index(s, r);
        r->in_flight = false;
        b->n_items--;
        if (idx >= 0)
            req_preempt(s, idx);
    }
    b->n_tokens = b->n_copies = 0;
    *out = b;
    return err;
}

/* ---- update ------------------------------------------------------------- */

static bool is_stop_id(const sched_req *r, int32_t tok) {
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == tok)
            return true;
    return false;
}

static asa_err append_token(sched_req *r, int32_t tok) {
    if (r->n_known == r->cap) {
        int cap = r->cap * 2;
        int limit = r->n_prompt + r->max_tokens;
        if (cap > limit)
            cap = limit;
        if (cap <= r->cap)
            return ASA_EINTERNAL;
        int32_t *t = realloc(r->toks, (size_t)cap * sizeof *t);
        if (!t)
            return ASA_ENOMEM;
        r->toks = t;
        r->cap = cap;
    }
    r->toks[r->n_known++] = tok;
    return ASA_OK;
}

/* Finish conditions after the token tok was appended. */
static sched_finish check_finish(const sched *s, sched_req *r, int32_t tok) {
    int n_out = r->n_known - r->n_prompt;
    if (n_out >= r->min_tokens) {
        if ((!r->ignore_eos && s->cfg.eos_token_id >= 0 && tok == s->cfg.eos_token_id) ||
            is_stop_id(r, tok)) {
            r->stop_token = tok;
            return SCHED_FINISH_STOP;
        }
    }
    if (n_out >= r->max_tokens)
        return SCHED_FINISH_LENGTH;
    if (s->cfg.max_model_len > 0 && r->n_known >= s->cfg.max_model_len)
        return SCHED_FINISH_LENGTH;
    return SCHED_FINISH_NONE;
}

/* The batch in flight was not run (sched_update with n == 0): nothing is
 * committed.  A request whose item carried page copies loses its pages (the
 * copies were never made, so the fresh pages hold nothing) and is preempted;
 * the others keep their reservation, which the next alloc reuses. */
static void discard_batch(sched *s) {
    sched_batch *b = &s->batch;
    for (int k = 0; k < b->n_items; k++) {
        sched_req *r = s->items[k].req;
        int c1 = k + 1 < b->n_items ? s->item_copy0[k + 1] : b->n_copies;
        r->in_flight = false;
        if (r->abort_pending) {
            req_finish(s, r, r->pending_reason);
        } else if (c1 > s->item_copy0[k]) {
            int i = running_index(s, r);
            if (i >= 0)
                req_preempt(s, i);
        }
    }
    s->in_flight = false;
    b->n_items = b->n_tokens = b->n_copies = 0;
}

asa_err sched_update(sched *s, const int32_t *sampled, int n) {
    if (!s)
        return ASA_EINVAL;
    if (!s->in_flight)
        return n == 0 ? ASA_OK : ASA_EINVAL;
    if (n == 0) {
        discard_batch(s);
        return ASA_OK;
    }
    if (n != s->batch.n_items)
        return ASA_EINVAL;
    for (int k = 0; k < n; k++)
        if (s->items[k].sample && !s->items[k].req->abort_pending &&
            (!sampled || sampled[k] < 0))
            return ASA_EINVAL;

    asa_err err = ASA_OK;
    for (int k = 0; k < n; k++) {
        const sched_item *it = &s->items[k];
        sched_req *r = it->req;
        r->in_flight = false;
        if (r->abort_pending) {
            req_finish(s, r, r->pending_reason);
            continue;
        }
        kv_seq_commit(s->pool, r->kv, it->n_tokens);
        r->num_computed += it->n_tokens;
        if (!it->sample)
            continue;
        asa_err rc = append_token(r, sampled[k]);
        if (rc != ASA_OK) {
            snprintf(r->err, sizeof r->err, "cannot store the generated token: %s",
                     asa_strerror(rc));
            req_finish(s, r, SCHED_FINISH_ERROR);
            err = rc;
            continue;
        }
        sched_finish f = check_finish(s, r, sampled[k]);
        if (f != SCHED_FINISH_NONE)
            req_finish(s, r, f);
    }
    s->in_flight = false;
    s->batch.n_items = 0;
    return err;
}

/* ---- abort, finished list ----------------------------------------------- */

asa_err sched_abort(sched *s, uint64_t id, sched_finish reason) {
    if (!s || reason == SCHED_FINISH_NONE)
        return ASA_EINVAL;
    sched_req *r = NULL;
    for (sched_req *q = s->all; q; q = q->all_next)
        if (q->id == id && q->status != SCHED_FINISHED) {
            r = q;
            break;
        }
    if (!r)
        return ASA_ENOTFOUND;
    if (reason == SCHED_FINISH_ERROR && !r->err[0])
        snprintf(r->err, sizeof r->err, "aborted with an error");
    if (r->in_flight) {
        if (!r->abort_pending) {
            r->abort_pending = true;
            r->pending_reason = reason;
        }
        return ASA_OK;
    }
    req_finish(s, r, reason);
    return ASA_OK;
}

int sched_abort_all(sched *s, sched_finish reason) {
    if (!s || reason == SCHED_FINISH_NONE)
        return 0;
    int n = 0;
    for (sched_req *r = s->all; r; r = r->all_next) {
        if (r->status == SCHED_FINISHED || r->abort_pending)
            continue;
        if (reason == SCHED_FINISH_ERROR && !r->err[0])
            snprintf(r->err, sizeof r->err, "aborted with an error");
        if (r->in_flight) {
            r->abort_pending = true;
            r->pending_reason = reason;
        } else {
            req_finish(s, r, reason);
        }
        n++;
    }
    return n;
}

int sched_take_finished(sched *s, sched_req **out, int max) {
    int k = 0;
    while (s && s->fin_head && k < max) {
        sched_req *r = s->fin_head;
        s->fin_head = r->next;
        if (s->fin_head)
            s->fin_head->prev = NULL;
        else
            s->fin_tail = NULL;
        r->prev = r->next = NULL;
        s->n_finished--;
        r->taken = true;
        s->n_taken++;
        out[k++] = r;
    }
    return k;
}

asa_err sched_req_free(sched *s, sched_req *r) {
    if (!r)
        return ASA_OK;
    if (!s || r->status != SCHED_FINISHED || !r->taken)
        return ASA_EINVAL;
    if (r->all_prev)
        r->all_prev->all_next = r->all_next;
    else
        s->all = r->all_next;
    if (r->all_next)
        r->all_next->all_prev = r->all_prev;
    s->n_taken--;
    req_free_mem(r);
    return ASA_OK;
}

bool sched_has_work(const sched *s) { return s && (s->n_running > 0 || s->n_waiting > 0); }

void sched_get_stats(const sched *s, sched_stats *st) {
    *st = s->st;
    st->n_waiting = s->n_waiting;
    st->n_running = s->n_running;
    st->n_finished = s->n_finished;
}

/* ---- invariant walker --------------------------------------------------- */

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            ASA_LOGE("sched", "sched_check: " __VA_ARGS__);                   \
            return ASA_EINTERNAL;                                             \
        }                                                                     \
    } while (0)

static asa_err check_req_common(const sched_req *r) {
    CHECK(r->n_prompt >= 1 && r->n_known >= r->n_prompt && r->n_known <= r->cap,
          "req %llu: prompt %d, known %d, cap %d", (unsigned long long)r->id, r->n_prompt,
          r->n_known, r->cap);
    CHECK(r->n_known - r->n_prompt <= r->max_tokens, "req %llu: %d outputs > max_tokens %d",
          (unsigned long long)r->id, r->n_known - r->n_prompt, r->max_tokens);
    return ASA_OK;
}

asa_err sched_check(const sched *s) {
    if (!s)
        return ASA_EINVAL;
    const bool slots = s->cfg.cb.seq_open != NULL;

    /* Waiting: sorted, no pages, no slot. */
    int nw = 0;
    const sched_req *prev = NULL;
    for (const sched_req *r = s->wait_head; r; prev = r, r = r->next) {
        nw++;
        CHECK(nw <= s->n_waiting, "waiting list longer than %d", s->n_waiting);
        CHECK(r->prev == prev, "waiting list links broken at req %llu",
              (unsigned long long)r->id);
        CHECK(r->status == SCHED_WAITING, "req %llu on the waiting list has status %d",
              (unsigned long long)r->id, r->status);
        CHECK(!r->kv && r->num_computed == 0 && !r->has_slot && r->slot == -1 && !r->in_flight,
              "waiting req %llu holds KV/slot or computed tokens", (unsigned long long)r->id);
        CHECK(!prev || wait_before(prev, r), "waiting list out of (priority, arrival) order "
              "at req %llu", (unsigned long long)r->id);
        if (check_req_common(r))
            return ASA_EINTERNAL;
    }
    CHECK(nw == s->n_waiting && s->wait_tail == prev, "waiting count %d, listed %d",
          s->n_waiting, nw);

    /* Running: admission order, KV consistent with computed tokens. */
    CHECK(s->n_running >= 0 && s->n_running <= s->cfg.max_num_seqs, "%d running, cap %d",
          s->n_running, s->cfg.max_num_seqs);
    for (int i = 0; i < s->n_running; i++) {
        const sched_req *r = s->running[i];
        CHECK(r->status == SCHED_RUNNING, "req %llu in running has status %d",
              (unsigned long long)r->id, r->status);
        CHECK(i == 0 || s->running[i - 1]->admit_seq < r->admit_seq,
              "running not in admission order at %d", i);
        CHECK(r->kv && kv_seq_num_tokens(r->kv) == r->num_computed,
              "req %llu: computed %d, cache holds %d", (unsigned long long)r->id,
              r->num_computed, r->kv ? kv_seq_num_tokens(r->kv) : -1);
        CHECK(r->num_computed < r->n_known, "running req %llu has nothing to compute",
              (unsigned long long)r->id);
        CHECK(r->has_slot == slots && (slots || r->slot == -1), "req %llu: slot state",
              (unsigned long long)r->id);
        CHECK(!r->abort_pending || r->in_flight, "req %llu: abort pending outside a batch",
              (unsigned long long)r->id);
        if (check_req_common(r))
            return ASA_EINTERNAL;
    }

    /* Finished, not yet taken. */
    int nf = 0;
    prev = NULL;
    for (const sched_req *r = s->fin_head; r; prev = r, r = r->next) {
        nf++;
        CHECK(nf <= s->n_finished, "finished list longer than %d", s->n_finished);
        CHECK(r->status == SCHED_FINISHED && r->finish != SCHED_FINISH_NONE && !r->taken,
              "req %llu on the finished list: status %d finish %d",
              (unsigned long long)r->id, r->status, r->finish);
        CHECK(!r->kv && !r->has_slot && r->slot == -1 && !r->in_flight,
              "finished req %llu holds KV or a slot", (unsigned long long)r->id);
    }
    CHECK(nf == s->n_finished && s->fin_tail == prev, "finished count %d, listed %d",
          s->n_finished, nf);

    /* Every request, once: status counts add up; ids of live ones unique. */
    int cnt[3] = {0, 0, 0}, taken = 0;
    const sched_req *aprev = NULL;
    for (const sched_req *r = s->all; r; aprev = r, r = r->all_next) {
        CHECK(r->all_prev == aprev, "request list links broken");
        CHECK(r->status >= SCHED_WAITING && r->status <= SCHED_FINISHED, "bad status");
        cnt[r->status]++;
        taken += r->taken;
        if (r->status != SCHED_FINISHED)
            for (const sched_req *q = r->all_next; q; q = q->all_next)
                CHECK(q->id != r->id || q->status == SCHED_FINISHED,
                      "two live requests with id %llu", (unsigned long long)r->id);
    }
    CHECK(cnt[SCHED_WAITING] == s->n_waiting && cnt[SCHED_RUNNING] == s->n_running &&
              cnt[SCHED_FINISHED] == s->n_finished + s->n_taken && taken == s->n_taken,
          "status counts %d/%d/%d vs lists %d/%d/%d+%d", cnt[0], cnt[1], cnt[2], s->n_waiting,
          s->n_running, s->n_finished, s->n_taken);

    /* The batch in flight. */
    if (s->in_flight) {
        const sched_batch *b = &s->batch;
        CHECK(b->n_items >= 1 && b->n_items <= s->cfg.max_num_seqs, "batch of %d items",
              b->n_items);
        int tot = 0;
        for (int k = 0; k < b->n_items; k++) {
            const sched_item *it = &b->items[k];
            const sched_req *r = it->req;
            CHECK(r->status == SCHED_RUNNING && r->in_flight, "item %d: req %llu not running",
                  k, (unsigned long long)r->id);
            for (int j = 0; j < k; j++)
                CHECK(b->items[j].req != r, "req %llu twice in the batch",
                      (unsigned long long)r->id);
            CHECK(it->n_tokens >= 1 && it->n_tokens <= s->chunk_max &&
                      it->pos0 == r->num_computed && it->pos0 + it->n_tokens <= r->n_known &&
                      it->tokens == r->toks + it->pos0 &&
                      it->sample == (it->pos0 + it->n_tokens == r->n_known),
                  "item %d (req %llu): %d tokens at %d of %d known", k,
                  (unsigned long long)r->id, it->n_tokens, it->pos0, r->n_known);
            CHECK(it->kv == r->kv && it->slot == r->slot, "item %d: stale kv or slot", k);
            int len;
            kv_seq_table(r->kv, KV_GLOBAL, &len);
            CHECK((long)len * s->pcfg.block_size >= (long)it->pos0 + it->n_tokens,
                  "item %d: %d blocks reserved for %d tokens", k, len,
                  it->pos0 + it->n_tokens);
            tot += it->n_tokens;
        }
        CHECK(tot == b->n_tokens && tot <= s->cfg.max_num_batched_tokens,
              "batch tokens %d (recorded %d), budget %d", tot, b->n_tokens,
              s->cfg.max_num_batched_tokens);
        CHECK(b->n_copies >= 0 && b->n_copies <= s->cfg.max_copies, "batch copies %d",
              b->n_copies);
    } else {
        for (int i = 0; i < s->n_running; i++)
            CHECK(!s->running[i]->in_flight, "req %llu in flight without a batch",
                  (unsigned long long)s->running[i]->id);
    }

    kv_stats kst;
    kv_pool_stats(s->pool, &kst);
    CHECK(kst.num_seqs >= s->n_running, "pool has %d sequences, %d running", kst.num_seqs,
          s->n_running);
    return kv_pool_check(s->pool);
}
#undef CHECK

/* ---- accessors ---------------------------------------------------------- */

uint64_t sched_req_id(const sched_req *r) { return r->id; }
void *sched_req_user(const sched_req *r) { return r->user; }
sched_status sched_req_status(const sched_req *r) { return r->status; }
sched_finish sched_req_finish(const sched_req *r) { return r->finish; }
int32_t sched_req_stop_token(const sched_req *r) { return r->stop_token; }
const char *sched_req_error(const sched_req *r) { return r->err; }
const int32_t *sched_req_prompt(const sched_req *r, int *n) {
    if (n)
        *n = r->n_prompt;
    return r->toks;
}
const int32_t *sched_req_output(const sched_req *r, int *n) {
    if (n)
        *n = r->n_known - r->n_prompt;
    return r->toks + r->n_prompt;
}
int sched_req_num_computed(const sched_req *r) { return r->num_computed; }
int sched_req_num_preemptions(const sched_req *r) { return r->n_preempt; }
int sched_req_priority(const sched_req *r) { return r->priority; }
int sched_req_slot(const sched_req *r) { return r->slot; }
