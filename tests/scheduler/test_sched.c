/* Unit tests for scheduler/: continuous batching driven by a fake engine
 * that emits scripted tokens.  sched_check runs after every step and
 * update. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

#define EOS 2
#define MAXT 4096 /* tokens per fake slot */
#define MAXSLOTS 16

/* ---- the fake engine ---------------------------------------------------- */

/* The token a request draws at output index k depends only on (id, k), like
 * the real engine's seeded sampling: a preempted request recomputed later
 * must produce the same output. */
typedef struct script_override {
    uint64_t id;
    int k;
    int32_t tok;
} script_override;

typedef struct fake_slot {
    bool open;
    uint64_t id;
    int32_t fed[MAXT]; /* tokens the slot has "computed", in order */
    int n_fed;
} fake_slot;

typedef struct fake_eng {
    fake_slot slot[MAXSLOTS];
    int max_slots, n_open, opens, closes;
    const script_override *ov;
    int n_ov;
    bool refuse_open; /* simulate the engine having no free slot */
    int B;            /* pool block size */
    bool ctx_mode;    /* tokens depend on everything the slot computed, like
                         a real model (instead of the (id, k) script) */
} fake_eng;

/* FNV-1a over a slot's computed tokens. */
static int32_t ctx_tok(const fake_slot *sl) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < sl->n_fed; i++) {
        h ^= (uint32_t)sl->fed[i];
        h *= 16777619u;
    }
    return (int32_t)(3 + h % 997u);
}

static int32_t script_tok(const fake_eng *fe, uint64_t id, int k) {
    for (int i = 0; i < fe->n_ov; i++)
        if (fe->ov[i].id == id && fe->ov[i].k == k)
            return fe->ov[i].tok;
    return (int32_t)(3 + (id * 7919u + (unsigned)k * 104729u) % 997u);
}

static asa_err fe_open(void *ctx, sched_req *r, int *slot) {
    fake_eng *fe = ctx;
    if (fe->refuse_open)
        return ASA_ENOSPACE;
    for (int i = 0; i < fe->max_slots; i++) {
        if (!fe->slot[i].open) {
            fe->slot[i].open = true;
            fe->slot[i].id = sched_req_id(r);
            fe->slot[i].n_fed = 0; /* fresh selection state */
            fe->n_open++;
            fe->opens++;
            *slot = i;
            return ASA_OK;
        }
    }
    return ASA_ENOSPACE;
}

static void fe_close(void *ctx, sched_req *r, int slot) {
    fake_eng *fe = ctx;
    assert_true(slot >= 0 && slot < fe->max_slots);
    assert_true(fe->slot[slot].open);
    assert_true(fe->slot[slot].id == sched_req_id(r));
    fe->slot[slot].open = false;
    fe->n_open--;
    fe->closes++;
}

/* Runs a batch: checks what each item feeds against the slot's history and
 * the script, then "samples". */
static void fe_run(fake_eng *fe, const sched_batch *b, int32_t *sampled) {
    for (int i = 0; i < b->n_items; i++) {
        const sched_item *it = &b->items[i];
        assert_true(it->slot >= 0 && it->slot < fe->max_slots);
        fake_slot *sl = &fe->slot[it->slot];
        assert_true(sl->open);
        assert_true(sl->id == it->id);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(b->items[j].slot, it->slot);
        /* Positions continue where the slot's cache ends. */
        assert_int_equal(it->pos0, sl->n_fed);
        assert_int_equal(kv_seq_num_tokens(it->kv), it->pos0);
        int nb;
        kv_seq_table(it->kv, KV_GLOBAL, &nb);
        assert_true(nb * fe->B >= it->pos0 + it->n_tokens);
        /* Known tokens = prompt then scripted outputs. */
        assert_int_equal(it->n_prompt + it->n_output >= it->pos0 + it->n_tokens, 1);
        for (int k = 0; k < it->n_output && !fe->ctx_mode; k++)
            assert_int_equal(it->output[k], script_tok(fe, it->id, k));
        for (int t = 0; t < it->n_tokens; t++) {
            int pos = it->pos0 + t;
            int32_t want = pos < it->n_prompt ? it->prompt[pos] : it->output[pos - it->n_prompt];
            assert_int_equal(it->tokens[t], want);
            assert_true(sl->n_fed < MAXT);
            sl->fed[sl->n_fed++] = it->tokens[t];
        }
        assert_int_equal(it->sample, it->pos0 + it->n_tokens == it->n_prompt + it->n_output);
        if (!it->sample)
            sampled[i] = -1;
        else
            sampled[i] = fe->ctx_mode ? ctx_tok(sl) : script_tok(fe, it->id, it->n_output);
    }
}

/* ---- fixture utilities -------------------------------------------------- */

typedef struct env {
    kv_pool *pool;
    sched *s;
    fake_eng fe;
    int steps;
    sched_req *done[256];
    int n_done;
} env;

static void env_init(env *e, int B, int W, int32_t ng, int32_t nl, int max_seqs, int budget,
                     int thr, int mml) {
    memset(e, 0, sizeof *e);
    kv_pool_config pc = {.block_size = B, .window = W, .num_pages = {ng, nl},
                         .page_bytes = {4096, 1024}};
    assert_int_equal(kv_pool_create(&pc, &e->pool), ASA_OK);
    sched_config c;
    sched_config_default(&c);
    c.max_num_seqs = max_seqs;
    c.max_num_batched_tokens = budget;
    c.long_prefill_token_threshold = thr;
    c.max_model_len = mml;
    c.eos_token_id = EOS;
    c.cb.ctx = &e->fe;
    c.cb.seq_open = fe_open;
    c.cb.seq_close = fe_close;
    e->fe.max_slots = max_seqs < MAXSLOTS ? max_seqs : MAXSLOTS;
    e->fe.B = B;
    assert_int_equal(sched_create(e->pool, &c, &e->s), ASA_OK);
}

static void env_free(env *e) {
    for (int i = 0; i < e->n_done; i++)
        assert_int_equal(sched_req_free(e->s, e->done[i]), ASA_OK);
    e->n_done = 0;
    sched_destroy(e->s);
    kv_stats st;
    kv_pool_stats(e->pool, &st);
    assert_int_equal(st.num_seqs, 0);
    assert_int_equal(st.used_pages[KV_GLOBAL], 0);
    assert_int_equal(st.used_pages[KV_LOCAL], 0);
    kv_pool_destroy(e->pool);
}

static sched_req *add(env *e, uint64_t id, int n_prompt, int max_tokens, int prio) {
    int32_t prompt[MAXT];
    assert_true(n_prompt <= MAXT);
    for (int i = 0; i < n_prompt; i++)
        prompt[i] = (int32_t)(3 + (id * 31 + (unsigned)i * 17) % 500);
    sched_params p;
    sched_params_default(&p);
    p.max_tokens = max_tokens;
    p.priority = prio;
    p.ignore_eos = true;
    sched_req *r = NULL;
    char msg[256];
    asa_errbuf eb = {msg, sizeof msg};
    asa_err rc = sched_add(e->s, id, prompt, n_prompt, &p, NULL, &r, &eb);
    if (rc != ASA_OK)
        fail_msg("sched_add(%llu): %s: %s", (unsigned long long)id, asa_errname(rc), msg);
    assert_int_equal(sched_check(e->s), ASA_OK);
    return r;
}

static void collect(env *e) {
    e->n_done += sched_take_finished(e->s, e->done + e->n_done, 256 - e->n_done);
}

/* One engine iteration.  Returns the batch (valid until the next call's
 * sched_update: callers inspect it through the copy in *copy). */
typedef struct step_rec {
    int n_items, n_tokens, n_preempted;
    uint64_t id[MAXSLOTS];
    int n_tok[MAXSLOTS], pos0[MAXSLOTS];
    bool sample[MAXSLOTS];
} step_rec;

static void one_step(env *e, step_rec *rec) {
    const sched_batch *b = NULL;
    assert_int_equal(sched_step(e->s, &b), ASA_OK);
    assert_int_equal(sched_check(e->s), ASA_OK);
    if (rec) {
        memset(rec, 0, sizeof *rec);
        rec->n_items = b->n_items;
        rec->n_tokens = b->n_tokens;
        rec->n_preempted = b->n_preempted;
        for (int i = 0; i < b->n_items && i < MAXSLOTS; i++) {
            rec->id[i] = b->items[i].id;
            rec->n_tok[i] = b->items[i].n_tokens;
            rec->pos0[i] = b->items[i].pos0;
            rec->sample[i] = b->items[i].sample;
        }
    }
    /* A step that preempted admits nothing (an item at position 0 is a
     * fresh admission: running requests always have computed tokens). */
    for (int i = 0; i < b->n_items && b->n_preempted > 0; i++)
        assert_int_not_equal(b->items[i].pos0, 0);
    if (b->n_items == 0)
        return;
    int32_t sampled[64];
    assert_true(b->n_items <= 64);
    fe_run(&e->fe, b, sampled);
    assert_int_equal(sched_update(e->s, sampled, b->n_items), ASA_OK);
    assert_int_equal(sched_check(e->s), ASA_OK);
    e->steps++;
    collect(e);
}

static void run_idle(env *e, int max_steps) {
    for (int i = 0; i < max_steps && sched_has_work(e->s); i++)
        one_step(e, NULL);
    assert_false(sched_has_work(e->s));
}

static sched_req *done_by_id(env *e, uint64_t id) {
    for (int i = 0; i < e->n_done; i++)
        if (sched_req_id(e->done[i]) == id)
            return e->done[i];
    return NULL;
}

/* The output must be the script, max_tokens long (ignore_eos requests). */
static void expect_script_output(env *e, uint64_t id, int n) {
    sched_req *r = done_by_id(e, id);
    assert_non_null(r);
    int no;
    const int32_t *o = sched_req_output(r, &no);
    assert_int_equal(no, n);
    for (int k = 0; k < n; k++)
        assert_int_equal(o[k], script_tok(&e->fe, id, k));
}

/* ---- tests -------------------------------------------------------------- */

static void test_config_errors(void **state) {
    (void)state;
    kv_pool_config pc = {.block_size = 4, .window = 8, .num_pages = {8, 8}};
    kv_pool *pool;
    assert_int_equal(kv_pool_create(&pc, &pool), ASA_OK);
    sched_config c;
    sched_config_default(&c);
    sched *s = NULL;
    c.max_num_seqs = 0;
    assert_int_equal(sched_create(pool, &c, &s), ASA_EINVAL);
    sched_config_default(&c);
    c.max_num_batched_tokens = 0;
    assert_int_equal(sched_create(pool, &c, &s), ASA_EINVAL);
    assert_null(s);
    sched_config_default(&c);
    assert_int_equal(sched_create(pool, &c, &s), ASA_OK);
    /* Bad requests. */
    sched_params p;
    sched_params_default(&p);
    int32_t prompt[3] = {5, 6, 7};
    assert_int_equal(sched_add(s, 1, prompt, 0, &p, NULL, NULL, NULL), ASA_EINVAL);
    p.max_tokens = 0; /* needs max_model_len */
    assert_int_equal(sched_add(s, 1, prompt, 3, &p, NULL, NULL, NULL), ASA_EINVAL);
    p.max_tokens = 2;
    int32_t neg[2] = {1, -4};
    assert_int_equal(sched_add(s, 1, neg, 2, &p, NULL, NULL, NULL), ASA_EINVAL);
    assert_int_equal(sched_add(s, 1, prompt, 3, &p, NULL, NULL, NULL), ASA_OK);
    assert_int_equal(sched_add(s, 1, prompt, 3, &p, NULL, NULL, NULL), ASA_EINVAL); /* dup */
    assert_int_equal(sched_abort(s, 99, SCHED_FINISH_ABORT), ASA_ENOTFOUND);
    int32_t one = 5;
    assert_int_equal(sched_update(s, &one, 1), ASA_EINVAL); /* nothing in flight */
    assert_int_equal(sched_update(s, NULL, 0), ASA_OK);      /* after an empty batch */
    /* No callbacks: slot -1. */
    const sched_batch *b;
    assert_int_equal(sched_step(s, &b), ASA_OK);
    assert_int_equal(b->n_items, 1);
    assert_int_equal(b->items[0].slot, -1);
    assert_int_equal(sched_step(s, &b), ASA_EBUSY);
    assert_int_equal(sched_check(s), ASA_OK);
    int32_t tok = 9;
    assert_int_equal(sched_update(s, &tok, 2), ASA_EINVAL); /* wrong n */
    int32_t bad = -1;
    assert_int_equal(sched_update(s, &bad, 1), ASA_EINVAL); /* sample needs a token */
    assert_int_equal(sched_update(s, &tok, 1), ASA_OK);
    assert_int_equal(sched_check(s), ASA_OK);
    sched_destroy(s); /* frees the live request and its pages */
    sched_destroy(NULL);
    kv_stats st;
    kv_pool_stats(pool, &st);
    assert_int_equal(st.num_seqs, 0);
    assert_int_equal(st.used_pages[KV_GLOBAL], 0);
    kv_pool_destroy(pool);
}

static void test_admission_order_and_cap(void **state) {
    (void)state;
    env e;
    env_init(&e, 4, 8, 64, 64, 2, 64, 0, 0);
    for (uint64_t id = 10; id < 15; id++)
        add(&e, id, 5, 3, 0);
    step_rec r;
    one_step(&e, &r);
    /* Cap 2: the first two arrivals, in order, whole prompts. */
    assert_int_equal(r.n_items, 2);
    assert_true(r.id[0] == 10 && r.id[1] == 11);
    assert_int_equal(r.n_tok[0], 5);
    assert_true(r.sample[0] && r.sample[1]);
    sched_stats st;
    sched_get_stats(e.s, &st);
    assert_int_equal(st.n_running, 2);
    assert_int_equal(st.n_waiting, 3);
    /* Admission order over the run = arrival order; never more than 2. */
    uint64_t first_seen[8];
    int n_seen = 0;
    while (sched_has_work(e.s)) {
        one_step(&e, &r);
        assert_true(r.n_items <= 2);
        for (int i = 0; i < r.n_items; i++) {
            bool seen = false;
            for (int j = 0; j < n_seen; j++)
                seen |= first_seen[j] == r.id[i];
            if (!seen && r.id[i] > 11)
                first_seen[n_seen++] = r.id[i];
        }
    }
    assert_int_equal(n_seen, 3);
    for (int j = 0; j < n_seen; j++)
        assert_true(first_seen[j] == (uint64_t)(12 + j));
    for (uint64_t id = 10; id < 15; id++)
        expect_script_output(&e, id, 3);
    assert_int_equal(e.fe.opens, 5);
    assert_int_equal(e.fe.closes, 5);
    env_free(&e);
}

static void test_chunked_prefill(void **state) {
    (void)state;
    env e;
    env_init(&e, 4, 8, 64, 64, 4, 32, 0, 0);
    add(&e, 1, 100, 4, 0);
    step_rec r;
    int pos = 0;
    for (int k = 0; k < 4; k++) {
        one_step(&e, &r);
        assert_int_equal(r.n_items, 1);
        assert_int_equal(r.pos0[0], pos);
        assert_int_equal(r.n_tok[0], k < 3 ? 32 : 4);
        assert_int_equal(r.sample[0], k == 3);
        pos += r.n_tok[0];
    }
    /* Decodes: one token each. */
    for (int k = 0; k < 3; k++) {
        one_step(&e, &r);
        assert_int_equal(r.n_tok[0], 1);
        assert_int_equal(r.pos0[0], 100 + k);
        assert_true(r.sample[0]);
    }
    assert_false(sched_has_work(e.s));
    expect_script_output(&e, 1, 4);
    assert_int_equal(sched_req_finish(done_by_id(&e, 1)), SCHED_FINISH_LENGTH);
    /* The per-request threshold caps a chunk below the budget. */
    env_free(&e);
    env_init(&e, 4, 8, 64, 64, 4, 32, 10, 0);
    add(&e, 2, 25, 1, 0);
    one_step(&e, &r);
    assert_int_equal(r.n_tok[0], 10);
    one_step(&e, &r);
    assert_int_equal(r.n_tok[0], 10);
    one_step(&e, &r);
    assert_int_equal(r.n_tok[0], 5);
    assert_true(r.sample[0]);
    assert_false(sched_has_work(e.s));
    env_free(&e);
}

static void test_decode_interleaved_with_prefill(void **state) {
    (void)state;
    env e;
    env_init(&e, 4, 8, 256, 256, 4, 16, 0, 0);
    add(&e, 1, 6, 40, 0); /* short prompt, long generation */
    step_rec r;
    one_step(&e, &r);
    one_step(&e, &r); /* A decoding */
    add(&e, 2, 200, 2, 0); /* long prompt arrives */
    int prefill_steps = 0, a_tokens = 0;
    while (sched_req_status(sched_find(e.s, 2)) == SCHED_RUNNING ||
           sched_req_status(sched_find(e.s, 2)) == SCHED_WAITING) {
        one_step(&e, &r);
        assert_true(r.n_tokens <= 16);
        /* A (admitted first) runs first with one decode token every step. */
        if (sched_find(e.s, 1) && sched_req_status(sched_find(e.s, 1)) != SCHED_FINISHED) {
            assert_true(r.id[0] == 1);
            assert_int_equal(r.n_tok[0], 1);
            a_tokens++;
        }
        if (r.n_items == 2 && !r.sample[1]) {
            assert_int_equal(r.n_tok[1], 15);
            prefill_steps++;
        }
    }
    assert_true(prefill_steps >= 12); /* 200 / 15 */
    assert_true(a_tokens >= prefill_steps);
    run_idle(&e, 100);
    expect_script_output(&e, 1, 40);
    expect_script_output(&e, 2, 2);
    env_free(&e);
}

/* Runs three requests in a pool of `pages` global/local pages, the fake
 * engine in context mode (each token a hash of the whole computed context);
 * returns preemptions and the outputs. */
static uint64_t run_three(int pages, uint64_t *victims, int *n_victims, int32_t out[3][30]) {
    env e;
    env_init(&e, 4, 8, pages, pages, 4, 64, 0, 0);
    e.fe.ctx_mode = true;
    add(&e, 1, 10, 30, 0);
    add(&e, 2, 10, 30, 0);
    add(&e, 3, 10, 30, 0);
    *n_victims = 0;
    for (int i = 0; i < 500 && sched_has_work(e.s); i++) {
        /* Who runs before the step, to see who got preempted. */
        int st_before[4];
        for (uint64_t id = 1; id <= 3; id++) {
            sched_req *q = sched_find(e.s, id);
            st_before[id] = q ? (int)sched_req_status(q) : -1;
        }
        step_rec r;
        one_step(&e, &r);
        for (uint64_t id = 1; id <= 3 && r.n_preempted; id++) {
            sched_req *q = sched_find(e.s, id);
            if (q && st_before[id] == SCHED_RUNNING && sched_req_status(q) == SCHED_WAITING)
                victims[(*n_victims)++] = id;
        }
    }
    assert_false(sched_has_work(e.s));
    for (uint64_t id = 1; id <= 3; id++) {
        int n;
        const int32_t *o = sched_req_output(done_by_id(&e, id), &n);
        assert_int_equal(n, 30);
        memcpy(out[id - 1], o, sizeof out[0]);
        assert_int_equal(sched_req_finish(done_by_id(&e, id)), SCHED_FINISH_LENGTH);
    }
    sched_stats st;
    sched_get_stats(e.s, &st);
    assert_int_equal(e.fe.opens, e.fe.closes);
    env_free(&e);
    return st.n_preemptions;
}

static void test_preemption_and_recompute(void **state) {
    (void)state;
    uint64_t victims[64];
    int nv;
    static int32_t ref[3][30], out[3][30];
    /* Big pool: no preemption. */
    assert_int_equal(run_three(64, victims, &nv, ref), 0);
    /* Each request needs 10 global pages at its end (39 cached tokens);
     * 16 pages hold one and a half.  Recomputed requests produce exactly
     * the output of the run without preemption. */
    uint64_t np = run_three(16, victims, &nv, out);
    assert_true(np > 0);
    assert_true(nv > 0);
    assert_memory_equal(ref, out, sizeof ref);
    /* The first preemption hits the most recently admitted request. */
    assert_true(victims[0] == 3);
    /* A request that fits alone only in the whole pool still completes. */
    assert_true(run_three(10, victims, &nv, out) > 0);
    assert_memory_equal(ref, out, sizeof ref);
    print_message("preemptions: %llu (16 pages), outputs identical to the unpreempted run\n",
                  (unsigned long long)np);
}

static void test_preempt_victim_in_batch(void **state) {
    (void)state;
    /* Priorities: the worst-priority running request is the victim even when
     * it was already scheduled in this step (its item is withdrawn). */
    env e;
    env_init(&e, 4, 8, 10, 10, 4, 64, 0, 0);
    add(&e, 1, 3, 20, 5);  /* worse priority, admitted first */
    step_rec r;
    one_step(&e, &r);
    add(&e, 2, 3, 20, 0);
    for (int i = 0; i < 200 && sched_has_work(e.s); i++)
        one_step(&e, &r);
    assert_false(sched_has_work(e.s));
    expect_script_output(&e, 1, 20);
    expect_script_output(&e, 2, 20);
    assert_true(sched_req_num_preemptions(done_by_id(&e, 1)) > 0);
    assert_int_equal(sched_req_num_preemptions(done_by_id(&e, 2)), 0);
    env_free(&e);
}

static void test_cancellation(void **state) {
    (void)state;
    env e;
    env_init(&e, 4, 8, 64, 64, 2, 64, 0, 0);
    add(&e, 1, 20, 50, 0);
    add(&e, 2, 20, 50, 0);
    add(&e, 3, 20, 50, 0); /* waits (cap 2) */
    step_rec r;
    one_step(&e, &r);
    one_step(&e, &r);
    kv_stats st0, st1;
    kv_pool_stats(e.pool, &st0);
    /* Abort a running request between steps: pages go back now. */
    assert_int_equal(sched_abort(e.s, 1, SCHED_FINISH_ABORT), ASA_OK);
    assert_int_equal(sched_check(e.s), ASA_OK);
    kv_pool_stats(e.pool, &st1);
    assert_int_equal(st1.num_seqs, 1);
    assert_true(st1.used_pages[KV_GLOBAL] < st0.used_pages[KV_GLOBAL]);
    assert_int_equal(st1.used_pages[KV_GLOBAL], 6); /* request 2: 21 tokens */
    assert_int_equal(e.fe.n_open, 1);
    /* Abort a waiting request. */
    assert_int_equal(sched_abort(e.s, 3, SCHED_FINISH_ABORT), ASA_OK);
    assert_int_equal(sched_abort(e.s, 3, SCHED_FINISH_ABORT), ASA_ENOTFOUND);
    /* Abort one in flight: deferred to the update of the same step. */
    add(&e, 4, 8, 50, 0);
    const sched_batch *b;
    assert_int_equal(sched_step(e.s, &b), ASA_OK);
    assert_int_equal(b->n_items, 2);
    assert_int_equal(sched_abort(e.s, 2, SCHED_FINISH_STOP), ASA_OK); /* stop string */
    assert_int_equal(sched_check(e.s), ASA_OK);
    int32_t sampled[2];
    fe_run(&e.fe, b, sampled);
    sampled[0] = -1; /* an aborted item's result is ignored */
    assert_int_equal(sched_update(e.s, sampled, 2), ASA_OK);
    assert_int_equal(sched_check(e.s), ASA_OK);
    kv_pool_stats(e.pool, &st1);
    assert_int_equal(st1.num_seqs, 1);
    assert_int_equal(st1.used_pages[KV_GLOBAL], 2); /* request 4: 8 tokens cached */
    collect(&e);
    assert_int_equal(sched_req_finish(done_by_id(&e, 1)), SCHED_FINISH_ABORT);
    assert_int_equal(sched_req_finish(done_by_id(&e, 2)), SCHED_FINISH_STOP);
    assert_int_equal(sched_req_finish(done_by_id(&e, 3)), SCHED_FINISH_ABORT);
    assert_int_equal(sched_req_stop_token(done_by_id(&e, 2)), -1);
    assert_string_equal(sched_finish_name(SCHED_FINISH_ABORT), "abort");
    assert_int_equal(sched_abort(e.s, 4, SCHED_FINISH_ABORT), ASA_OK);
    collect(&e);
    assert_false(sched_has_work(e.s));
    kv_pool_stats(e.pool, &st1);
    assert_int_equal(st1.used_pages[KV_GLOBAL] + st1.used_pages[KV_LOCAL], 0);
    assert_int_equal(e.fe.n_open, 0);
    /* A finished, taken request can be freed; one not finished cannot. */
    add(&e, 5, 4, 2, 0);
    assert_int_equal(sched_req_free(e.s, sched_find(e.s, 5)), ASA_EINVAL);
    run_idle(&e, 10);
    env_free(&e);
}

static void test_finish_reasons(void **state) {
    (void)state;
    env e;
    env_init(&e, 4, 8, 64, 64, 8, 64, 0, 40);
    static const script_override ov[] = {
        {1, 1, EOS}, {1, 4, EOS}, /* min_tokens 3: the first EOS is ignored */
        {2, 2, EOS},              /* ignore_eos: runs to max_tokens */
        {3, 3, 77},               /* stop id */
        {5, 0, EOS},              /* EOS at once */
    };
    e.fe.ov = ov;
    e.fe.n_ov = (int)(sizeof ov / sizeof ov[0]);
    int32_t prompt[30];
    for (int i = 0; i < 30; i++)
        prompt[i] = 10 + i;
    sched_params p;
    sched_params_default(&p);
    p.max_tokens = 10;
    p.min_tokens = 3;
    assert_int_equal(sched_add(e.s, 1, prompt, 5, &p, NULL, NULL, NULL), ASA_OK);
    sched_params_default(&p);
    p.max_tokens = 6;
    p.ignore_eos = true;
    assert_int_equal(sched_add(e.s, 2, prompt, 5, &p, NULL, NULL, NULL), ASA_OK);
    sched_params_default(&p);
    p.max_tokens = 10;
    int32_t stops[2] = {500, 77};
    p.stop_ids = stops;
    p.n_stop_ids = 2;
    assert_int_equal(sched_add(e.s, 3, prompt, 5, &p, NULL, NULL, NULL), ASA_OK);
    /* max_tokens 0 = up to max_model_len (40): 30 + 10. */
    sched_params_default(&p);
    p.max_tokens = 0;
    p.ignore_eos = true;
    assert_int_equal(sched_add(e.s, 4, prompt, 30, &p, NULL, NULL, NULL), ASA_OK);
    sched_params_default(&p);
    p.max_tokens = 5;
    assert_int_equal(sched_add(e.s, 5, prompt, 2, &p, NULL, NULL, NULL), ASA_OK);
    /* prompt + max_tokens over max_model_len is refused. */
    p.max_tokens = 20;
    char msg[200] = "";
    asa_errbuf eb = {msg, sizeof msg};
    assert_int_equal(sched_add(e.s, 6, prompt, 30, &p, NULL, NULL, &eb), ASA_ETOOBIG);
    assert_non_null(strstr(msg, "max_model_len"));
    run_idle(&e, 100);

    int n;
    sched_req *r = done_by_id(&e, 1);
    assert_int_equal(sched_req_finish(r), SCHED_FINISH_STOP);
    sched_req_output(r, &n);
    assert_int_equal(n, 5); /* EOS included as the last output token */
    assert_int_equal(sched_req_stop_token(r), EOS);
    r = done_by_id(&e, 2);
    assert_int_equal(sched_req_finish(r), SCHED_FINISH_LENGTH);
    sched_req_output(r, &n);
    assert_int_equal(n, 6);
    r = done_by_id(&e, 3);
    assert_int_equal(sched_req_finish(r), SCHED_FINISH_STOP);
    assert_int_equal(sched_req_stop_token(r), 77);
    sched_req_output(r, &n);
    assert_int_equal(n, 4);
    r = done_by_id(&e, 4);
    assert_int_equal(sched_req_finish(r), SCHED_FINISH_LENGTH);
    sched_req_output(r, &n);
    assert_int_equal(n, 10);
    r = done_by_id(&e, 5);
    assert_int_equal(sched_req_finish(r), SCHED_FINISH_STOP);
    sched_req_output(r, &n);
    assert_int_equal(n, 1);
    assert_string_equal(sched_finish_name(SCHED_FINISH_STOP), "stop");
    assert_string_equal(sched_finish_name(SCHED_FINISH_LENGTH), "length");
    assert_string_equal(sched_req_error(r), "");
    env_free(&e);
}

static void test_priority(void **state) {
    (void)state;
    env e;
    env_init(&e, 4, 8, 64, 64, 1, 64, 0, 0);
    add(&e, 1, 4, 2, 0);
    add(&e, 2, 4, 2, 3);
    add(&e, 3, 4, 2, -1);
    add(&e, 4, 4, 2, 0);
    add(&e, 5, 4, 2, -1);
    /* One at a time: order by (priority, arrival): 3, 5, 1, 4, 2. */
    const uint64_t want[] = {3, 5, 1, 4, 2};
    int w = 0;
    uint64_t last = 0;
    while (sched_has_work(e.s)) {
        step_rec r;
        one_step(&e, &r);
        assert_int_equal(r.n_items, 1);
        if (r.id[0] != last) {
            assert_true(w < 5);
            assert_true(r.id[0] == want[w]);
            w++;
            last = r.id[0];
        }
    }
    assert_int_equal(w, 5);
    assert_int_equal(sched_req_priority(done_by_id(&e, 3)), -1);
    env_free(&e);
}

static void test_too_large(void **state) {
    (void)state;
    env e;
    env_init(&e, 4, 8, 8, 8, 4, 64, 0, 0);
    add(&e, 1, 4, 2, 0);
    sched_stats st0, st1;
    sched_get_stats(e.s, &st0);
    int32_t prompt[64] = {0};
    sched_params p;
    sched_params_default(&p);
    p.max_tokens = 4;
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    sched_req *r = NULL;
    /* 40 + 4 tokens need 11 global pages; the pool has 8. */
    assert_int_equal(sched_add(e.s, 2, prompt, 40, &p, NULL, &r, &eb), ASA_ETOOBIG);
    assert_null(r);
    assert_non_null(strstr(msg, "KV pages"));
    print_message("refused: %s\n", msg);
    sched_get_stats(e.s, &st1);
    assert_memory_equal(&st0, &st1, sizeof st0);
    assert_null(sched_find(e.s, 2));
    /* Exactly the whole pool fits: 29 prompt + 4 = 32 cached tokens at most
     * -> 8 global pages. */
    assert_int_equal(sched_add(e.s, 3, prompt, 29, &p, NULL, &r, &eb), ASA_OK);
    run_idle(&e, 50);
    assert_int_equal(sched_req_finish(done_by_id(&e, 3)), SCHED_FINISH_LENGTH);
    env_free(&e);

    /* Local pages: window 8 + a chunk of 64 need 16 local pages > 8. */
    env_init(&e, 4, 8, 64, 8, 4, 64, 0, 0);
    assert_int_equal(sched_add(e.s, 2, prompt, 60, &p, NULL, &r, &eb), ASA_ETOOBIG);
    env_free(&e);
    /* With a prefill threshold of 8 the same request fits (chunks of 8). */
    env_init(&e, 4, 8, 64, 8, 4, 64, 8, 0);
    assert_int_equal(sched_add(e.s, 2, prompt, 60, &p, NULL, &r, &eb), ASA_OK);
    run_idle(&e, 50);
    assert_int_equal(sched_req_finish(done_by_id(&e, 2)), SCHED_FINISH_LENGTH);
    env_free(&e);
}

static void test_blocked_by_outside_pages(void **state) {
    (void)state;
    /* A page held outside the scheduler blocks a request that needs the
     * whole pool: it is preempted and waits (no failure, no spin) until the
     * page is freed. */
    env e;
    env_init(&e, 4, 8, 4, 8, 2, 64, 0, 0);
    kv_seq *other;
    assert_int_equal(kv_seq_create(e.pool, &other), ASA_OK);
    int nc = 0;
    assert_int_equal(kv_seq_alloc(e.pool, other, 1, NULL, 0, &nc), ASA_OK);
    kv_seq_commit(e.pool, other, 1);
    add(&e, 1, 10, 7, 0); /* 16 cached tokens = 4 global pages */
    step_rec r;
    for (int i = 0; i < 6; i++)
        one_step(&e, &r);
    sched_req *q = sched_find(e.s, 1);
    assert_int_not_equal(sched_req_status(q), SCHED_FINISHED);
    kv_seq_destroy(e.pool, other);
    run_idle(&e, 50);
    assert_int_equal(sched_req_finish(done_by_id(&e, 1)), SCHED_FINISH_LENGTH);
    env_free(&e);
}

/* sched_update(n == 0): the engine did not run the batch. */
static void test_discarded_batch(void **state) {
    (void)state;
    env e;
    env_init(&e, 4, 8, 64, 64, 4, 16, 0, 0);
    add(&e, 1, 5, 4, 0);
    add(&e, 2, 30, 4, 0);
    step_rec r;
    one_step(&e, &r);
    const sched_batch *b;
    assert_int_equal(sched_step(e.s, &b), ASA_OK);
    assert_int_equal(b->n_items, 2);
    int pos0[2] = {b->items[0].pos0, b->items[1].pos0};
    int ntok[2] = {b->items[0].n_tokens, b->items[1].n_tokens};
    assert_int_equal(sched_abort(e.s, 2, SCHED_FINISH_ERROR), ASA_OK); /* deferred */
    assert_int_equal(sched_update(e.s, NULL, 0), ASA_OK);
    assert_int_equal(sched_check(e.s), ASA_OK);
    collect(&e);
    sched_req *q2 = done_by_id(&e, 2);
    assert_non_null(q2);
    assert_int_equal(sched_req_finish(q2), SCHED_FINISH_ERROR);
    assert_true(sched_req_error(q2)[0] != 0);
    /* Nothing of request 1 was committed: the next step repeats its item. */
    assert_int_equal(sched_req_num_computed(sched_find(e.s, 1)), pos0[0]);
    one_step(&e, &r);
    assert_int_equal(r.n_items, 1);
    assert_int_equal(r.pos0[0], pos0[0]);
    assert_int_equal(r.n_tok[0], ntok[0]);
    (void)ntok[1];
    (void)pos0[1];
    run_idle(&e, 20);
    expect_script_output(&e, 1, 4);
    /* Abort everything: waiting, running and in flight alike. */
    add(&e, 3, 5, 4, 0);
    add(&e, 4, 50, 4, 0);
    add(&e, 5, 5, 4, 0);
    one_step(&e, &r);
    add(&e, 6, 5, 4, 0);
    assert_int_equal(sched_step(e.s, &b), ASA_OK);
    assert_true(b->n_items > 0);
    assert_int_equal(sched_abort_all(e.s, SCHED_FINISH_ABORT), 4);
    assert_int_equal(sched_abort_all(e.s, SCHED_FINISH_ABORT), 0);
    assert_int_equal(sched_check(e.s), ASA_OK);
    int32_t sampled[8];
    fe_run(&e.fe, b, sampled);
    assert_int_equal(sched_update(e.s, sampled, b->n_items), ASA_OK);
    assert_int_equal(sched_check(e.s), ASA_OK);
    assert_false(sched_has_work(e.s));
    collect(&e);
    for (uint64_t id = 3; id <= 6; id++)
        assert_int_equal(sched_req_finish(done_by_id(&e, id)), SCHED_FINISH_ABORT);
    env_free(&e);
}

static void test_slot_refused(void **state) {
    (void)state;
    /* The engine refuses a slot: admission waits, nothing leaks. */
    env e;
    env_init(&e, 4, 8, 64, 64, 2, 64, 0, 0);
    add(&e, 1, 5, 2, 0);
    e.fe.refuse_open = true;
    step_rec r;
    one_step(&e, &r);
    assert_int_equal(r.n_items, 0);
    kv_stats st;
    kv_pool_stats(e.pool, &st);
    assert_int_equal(st.num_seqs, 0);
    e.fe.refuse_open = false;
    run_idle(&e, 10);
    expect_script_output(&e, 1, 2);
    env_free(&e);
}

/* Many requests, random sizes, priorities and aborts, in a small pool. */
static unsigned rnd(unsigned *s) {
    unsigned x = *s ? *s : 1u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x >> 1;
}

static void soak(unsigned seed, int B, int W, int pages, int max_seqs, int budget, int thr) {
    env e;
    env_init(&e, B, W, pages, pages, max_seqs, budget, thr, 0);
    unsigned rng = seed;
    uint64_t next_id = 1;
    int n_aborted = 0;
    static bool aborted[4096];
    static int want_len[4096];
    memset(aborted, 0, sizeof aborted);
    for (int it = 0; it < 3000 && (next_id < 300 || sched_has_work(e.s)); it++) {
        if (next_id < 300 && rnd(&rng) % 3 == 0) {
            int np = 1 + (int)(rnd(&rng) % (rnd(&rng) % 4 == 0 ? 120 : 12));
            int mt = 1 + (int)(rnd(&rng) % 24);
            int32_t prompt[128];
            for (int i = 0; i < np; i++)
                prompt[i] = (int32_t)(3 + rnd(&rng) % 900);
            sched_params p;
            sched_params_default(&p);
            p.max_tokens = mt;
            p.ignore_eos = true;
            p.priority = (int)(rnd(&rng) % 3);
            char msg[256];
            asa_errbuf eb = {msg, sizeof msg};
            asa_err rc = sched_add(e.s, next_id, prompt, np, &p, NULL, NULL, &eb);
            assert_true(rc == ASA_OK || rc == ASA_ETOOBIG);
            want_len[next_id] = rc == ASA_OK ? mt : -1;
            next_id++;
            assert_int_equal(sched_check(e.s), ASA_OK);
        }
        if (rnd(&rng) % 40 == 0 && next_id > 1) {
            uint64_t id = 1 + rnd(&rng) % (next_id - 1);
            if (sched_abort(e.s, id, SCHED_FINISH_ABORT) == ASA_OK) {
                aborted[id] = true;
                n_aborted++;
            }
            assert_int_equal(sched_check(e.s), ASA_OK);
        }
        step_rec r;
        one_step(&e, &r);
        assert_true(r.n_tokens <= budget);
        assert_true(r.n_items <= max_seqs);
        /* Free finished requests as the engine loop would. */
        for (int i = 0; i < e.n_done; i++) {
            sched_req *q = e.done[i];
            uint64_t id = sched_req_id(q);
            if (aborted[id]) {
                assert_int_equal(sched_req_finish(q), SCHED_FINISH_ABORT);
            } else {
                assert_int_equal(sched_req_finish(q), SCHED_FINISH_LENGTH);
                int n;
                const int32_t *o = sched_req_output(q, &n);
                assert_int_equal(n, want_len[id]);
                for (int k = 0; k < n; k++)
                    assert_int_equal(o[k], script_tok(&e.fe, id, k));
            }
            assert_int_equal(sched_req_free(e.s, q), ASA_OK);
        }
        e.n_done = 0;
    }
    assert_false(sched_has_work(e.s));
    sched_stats st;
    sched_get_stats(e.s, &st);
    print_message("soak seed %u: %llu requests, %llu steps, %llu tokens, %llu preemptions, "
                  "%d aborted\n", seed, (unsigned long long)st.n_added,
                  (unsigned long long)st.n_steps, (unsigned long long)st.n_tokens_scheduled,
                  (unsigned long long)st.n_preemptions, n_aborted);
    assert_true(st.n_preemptions > 0);
    assert_int_equal(e.fe.opens, e.fe.closes);
    env_free(&e);
}

static void test_soak(void **state) {
    (void)state;
    soak(1u, 4, 8, 40, 6, 32, 0);
    soak(2024u, 16, 32, 24, 8, 64, 16);
    soak(77u, 3, 5, 30, 4, 10, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_admission_order_and_cap),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_decode_interleaved_with_prefill),
        cmocka_unit_test(test_preemption_and_recompute),
        cmocka_unit_test(test_preempt_victim_in_batch),
        cmocka_unit_test(test_cancellation),
        cmocka_unit_test(test_finish_reasons),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_blocked_by_outside_pages),
        cmocka_unit_test(test_slot_refused),
        cmocka_unit_test(test_discarded_batch),
        cmocka_unit_test(test_soak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
