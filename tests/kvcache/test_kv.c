/* Unit tests for kvcache/: paged latent KV pool, block tables, refcounts,
 * copy-on-write, window recycling, exhaustion, and the asa-1.3b memory
 * target against NSA. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

/* ---- utilities ---------------------------------------------------------- */

/* Seeded generator (xorshift32), the same on every platform. */
static unsigned rnd(unsigned *s) {
    unsigned x = *s ? *s : 1u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x >> 1;
}

static kv_pool *make_pool(int B, int w, int32_t ng, int32_t nl) {
    kv_pool_config cfg = {.block_size = B, .window = w, .num_pages = {ng, nl},
                          .page_bytes = {1000, 100}};
    kv_pool *p = NULL;
    assert_int_equal(kv_pool_create(&cfg, &p), ASA_OK);
    assert_non_null(p);
    return p;
}

static void check_ok(const kv_pool *p) { assert_int_equal(kv_pool_check(p), ASA_OK); }

/* Alloc n tokens (no copies expected), then commit them. */
static void step(kv_pool *p, kv_seq *s, int n) {
    int nc = 0;
    assert_int_equal(kv_seq_alloc(p, s, n, NULL, 0, &nc), ASA_OK);
    assert_int_equal(nc, 0);
    kv_seq_commit(p, s, n);
    check_ok(p);
}

static int used(const kv_pool *p, kv_class c) {
    kv_stats st;
    kv_pool_stats(p, &st);
    return st.used_pages[c];
}

/* A copy of everything observable: stats plus each listed sequence's tables. */
#define SNAP_MAX_SEQS 64
#define SNAP_MAX_BLOCKS 1024
typedef struct snapshot {
    kv_stats st;
    int n;
    int ntok[SNAP_MAX_SEQS];
    int len[SNAP_MAX_SEQS][KV_NCLASS];
    int32_t tab[SNAP_MAX_SEQS][KV_NCLASS][SNAP_MAX_BLOCKS];
} snapshot;

static void snap_take(const kv_pool *p, kv_seq *const *seqs, int n, snapshot *sn) {
    memset(sn, 0, sizeof *sn);
    kv_pool_stats(p, &sn->st);
    sn->n = n;
    for (int i = 0; i < n; i++) {
        if (!seqs[i])
            continue;
        sn->ntok[i] = kv_seq_num_tokens(seqs[i]);
        for (int c = 0; c < KV_NCLASS; c++) {
            const int32_t *t = kv_seq_table(seqs[i], (kv_class)c, &sn->len[i][c]);
            assert_true(sn->len[i][c] <= SNAP_MAX_BLOCKS);
            if (sn->len[i][c])
                memcpy(sn->tab[i][c], t, (size_t)sn->len[i][c] * sizeof(int32_t));
        }
    }
}

static void snap_same(const snapshot *a, const snapshot *b) {
    assert_memory_equal(&a->st, &b->st, sizeof a->st);
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        assert_int_equal(a->ntok[i], b->ntok[i]);
        for (int c = 0; c < KV_NCLASS; c++) {
            assert_int_equal(a->len[i][c], b->len[i][c]);
            assert_memory_equal(a->tab[i][c], b->tab[i][c],
                                (size_t)a->len[i][c] * sizeof(int32_t));
        }
    }
}

/* Local table entry b must hold a page exactly when a future token (position
 * >= T = num_tokens) can read it: token t reads [t-w+1, t]. */
static void check_window(const kv_seq *s, int B, int w) {
    int T = kv_seq_num_tokens(s), n = 0;
    const int32_t *lt = kv_seq_table(s, KV_LOCAL, &n);
    for (int b = 0; b < n; b++) {
        int last = (b + 1) * B - 1;
        bool readable = last >= T - w + 1;
        if (readable)
            assert_true(lt[b] >= 0);
        else
            assert_int_equal(lt[b], -1);
    }
}

/* ---- tests -------------------------------------------------------------- */

static void test_create_errors(void **state) {
    (void)state;
    kv_pool *p = NULL;
    kv_pool_config bad = {.block_size = 0, .window = 4, .num_pages = {4, 4}};
    assert_int_equal(kv_pool_create(&bad, &p), ASA_EINVAL);
    assert_null(p);
    bad.block_size = 4;
    bad.num_pages[KV_LOCAL] = -1;
    assert_int_equal(kv_pool_create(&bad, &p), ASA_EINVAL);
    assert_null(p);
    kv_pool_destroy(NULL);
    p = make_pool(4, 8, 4, 4);
    kv_seq *s;
    assert_int_equal(kv_seq_create(p, &s), ASA_OK);
    int nc = 0;
    assert_int_equal(kv_seq_alloc(p, s, -1, NULL, 0, &nc), ASA_EINVAL);
    assert_int_equal(kv_seq_alloc(p, s, 0, NULL, 0, &nc), ASA_OK);
    assert_int_equal(used(p, KV_GLOBAL), 0);
    kv_seq_destroy(p, NULL);
    kv_seq_destroy(p, s);
    check_ok(p);
    kv_pool_destroy(p);
}

static void test_alloc_commit_blocks(void **state) {
    (void)state;
    const int B = 4, W = 1000; /* a window wider than the test: nothing recycles */
    kv_pool *p = make_pool(B, W, 16, 16);
    kv_seq *s;
    assert_int_equal(kv_seq_create(p, &s), ASA_OK);
    int n = -1;
    kv_seq_table(s, KV_GLOBAL, &n);
    assert_int_equal(n, 0);

    int nc = 0;
    /* 3 tokens: block 0 only. */
    assert_int_equal(kv_seq_alloc(p, s, 3, NULL, 0, &nc), ASA_OK);
    const int32_t *g = kv_seq_table(s, KV_GLOBAL, &n);
    assert_int_equal(n, 1);
    assert_int_equal(g[0], 0);
    assert_int_equal(used(p, KV_GLOBAL), 1);
    assert_int_equal(used(p, KV_LOCAL), 1);
    check_ok(p);
    /* Extending the reservation before commit: 6 tokens -> blocks 0, 1. */
    assert_int_equal(kv_seq_alloc(p, s, 6, NULL, 0, &nc), ASA_OK);
    g = kv_seq_table(s, KV_GLOBAL, &n);
    assert_int_equal(n, 2);
    assert_int_equal(g[0], 0);
    assert_int_equal(g[1], 1);
    /* A smaller request does not shrink it. */
    assert_int_equal(kv_seq_alloc(p, s, 2, NULL, 0, &nc), ASA_OK);
    assert_int_equal(used(p, KV_GLOBAL), 2);
    check_ok(p);
    kv_seq_commit(p, s, 5);
    assert_int_equal(kv_seq_num_tokens(s), 5);
    check_ok(p);
    /* Commit past the reservation is clamped to it. */
    kv_seq_commit(p, s, 100);
    assert_int_equal(kv_seq_num_tokens(s), 6);
    check_ok(p);
    /* 6 -> 13 crosses blocks 1 (partial), 2, 3. */
    assert_int_equal(kv_seq_alloc(p, s, 7, NULL, 0, &nc), ASA_OK);
    assert_int_equal(nc, 0);
    g = kv_seq_table(s, KV_GLOBAL, &n);
    assert_int_equal(n, 4);
    for (int b = 0; b < 4; b++)
        assert_int_equal(g[b], b);
    const int32_t *l = kv_seq_table(s, KV_LOCAL, &n);
    assert_int_equal(n, 4);
    for (int b = 0; b < 4; b++)
        assert_true(l[b] >= 0);
    kv_seq_commit(p, s, 7);
    assert_int_equal(kv_seq_num_tokens(s), 13);
    check_ok(p);
    /* Exactly at a boundary: 16 tokens then one more opens block 4. */
    step(p, s, 3);
    assert_int_equal(used(p, KV_GLOBAL), 4);
    step(p, s, 1);
    assert_int_equal(used(p, KV_GLOBAL), 5);
    kv_seq_destroy(p, s);
    kv_pool_destroy(p);
}

static void test_window_recycling(void **state) {
    (void)state;
    /* Token by token and in chunks, with windows that are / are not a
     * multiple of the block size. */
    const int cfgs[][2] = {{4, 6}, {4, 8}, {4, 1}, {16, 512}, {3, 7}};
    for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
        int B = cfgs[k][0], W = cfgs[k][1];
        kv_pool *p = make_pool(B, W, 1024, 1024);
        kv_seq *s;
        assert_int_equal(kv_seq_create(p, &s), ASA_OK);
        for (int t = 0; t < 3 * W + 5 * B; t++) {
            step(p, s, 1);
            check_window(s, B, W);
            /* The only local pages in use are the readable ones. */
            int T = kv_seq_num_tokens(s), lo = T - W + 1 < 0 ? 0 : (T - W + 1) / B;
            int n;
            kv_seq_table(s, KV_LOCAL, &n);
            assert_int_equal(used(p, KV_LOCAL), n - lo);
        }
        kv_seq *c;
        assert_int_equal(kv_seq_create(p, &c), ASA_OK);
        for (int chunk = 1; kv_seq_num_tokens(c) < 4 * W; chunk = chunk * 2 + 1) {
            int nc = 0;
            assert_int_equal(kv_seq_alloc(p, c, chunk, NULL, 0, &nc), ASA_OK);
            /* While a chunk is reserved, its whole span and the window before
             * it hold pages. */
            int T = kv_seq_num_tokens(c), n;
            const int32_t *lt = kv_seq_table(c, KV_LOCAL, &n);
            for (int b = (T - W + 1 < 0 ? 0 : (T - W + 1) / B); b < n; b++)
                assert_true(lt[b] >= 0);
            kv_seq_commit(p, c, chunk);
            check_ok(p);
            check_window(c, B, W);
        }
        kv_seq_destroy(p, s);
        kv_seq_destroy(p, c);
        assert_int_equal(used(p, KV_LOCAL), 0);
        check_ok(p);
        kv_pool_destroy(p);
    }
}

static void test_no_local_layers(void **state) {
    (void)state;
    kv_pool *p = make_pool(4, 0, 8, 0);
    kv_seq *s;
    assert_int_equal(kv_seq_create(p, &s), ASA_OK);
    step(p, s, 9);
    int n;
    kv_seq_table(s, KV_LOCAL, &n);
    assert_int_equal(n, 0);
    assert_int_equal(used(p, KV_GLOBAL), 3);
    int32_t need[KV_NCLASS];
    kv_seq_pages_needed(p, s, 4, need);
    assert_int_equal(need[KV_GLOBAL], 1);
    assert_int_equal(need[KV_LOCAL], 0);
    kv_seq_destroy(p, s);
    kv_pool_destroy(p);
}

static void test_exhaustion(void **state) {
    (void)state;
    const int B = 4, W = 8;
    kv_pool *p = make_pool(B, W, 6, 5);
    kv_seq *seqs[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++)
        assert_int_equal(kv_seq_create(p, &seqs[i]), ASA_OK);
    step(p, seqs[0], 10); /* global 3, local 3 */
    step(p, seqs[1], 5);  /* global 2, local 2 */
    static snapshot before, after;
    snap_take(p, seqs, 3, &before);

    int nc = 0;
    /* Global runs out: seq 2 wants 2 global pages, 1 left. */
    assert_int_equal(kv_seq_alloc(p, seqs[2], 5, NULL, 0, &nc), ASA_ENOSPACE);
    check_ok(p);
    snap_take(p, seqs, 3, &after);
    snap_same(&before, &after);
    /* Extending an existing sequence beyond capacity. */
    assert_int_equal(kv_seq_alloc(p, seqs[0], 20, NULL, 0, &nc), ASA_ENOSPACE);
    snap_take(p, seqs, 3, &after);
    snap_same(&before, &after);
    check_ok(p);

    /* Local runs out while global would fit: free a global sequence's
     * pages elsewhere first. */
    kv_seq_destroy(p, seqs[1]);
    seqs[1] = NULL;
    step(p, seqs[2], 1); /* global 1 (total 4), local 1 (total 4) */
    snap_take(p, seqs, 3, &before);
    /* seq 2 at T=1 wants 9 more tokens: blocks 0..2, needs 2 global (have
     * 2 free) and 2 local (have 1 free). */
    int32_t need[KV_NCLASS];
    kv_seq_pages_needed(p, seqs[2], 9, need);
    assert_int_equal(need[KV_GLOBAL], 2);
    assert_int_equal(need[KV_LOCAL], 2);
    assert_int_equal(kv_seq_alloc(p, seqs[2], 9, NULL, 0, &nc), ASA_ENOSPACE);
    snap_take(p, seqs, 3, &after);
    snap_same(&before, &after);
    check_ok(p);
    /* A pool with nothing left in a class refuses but stays consistent; the
     * same request fits after a release. */
    kv_seq_destroy(p, seqs[0]);
    seqs[0] = NULL;
    assert_int_equal(kv_seq_alloc(p, seqs[2], 9, NULL, 0, &nc), ASA_OK);
    kv_seq_commit(p, seqs[2], 9);
    check_ok(p);
    assert_int_equal(nc, 0);
    kv_seq_destroy(p, seqs[2]);
    kv_stats st;
    kv_pool_stats(p, &st);
    assert_int_equal(st.used_pages[KV_GLOBAL] + st.used_pages[KV_LOCAL], 0);
    kv_pool_destroy(p);
}

static void test_release_on_destroy(void **state) {
    (void)state;
    kv_pool *p = make_pool(4, 8, 64, 64);
    kv_seq *a, *b, *c;
    assert_int_equal(kv_seq_create(p, &a), ASA_OK);
    assert_int_equal(kv_seq_create(p, &b), ASA_OK);
    step(p, a, 37);
    step(p, b, 3);
    int nc = 0;
    assert_int_equal(kv_seq_alloc(p, b, 20, NULL, 0, &nc), ASA_OK); /* uncommitted */
    assert_int_equal(kv_seq_fork(p, a, &c), ASA_OK);
    kv_stats st;
    kv_pool_stats(p, &st);
    assert_int_equal(st.num_seqs, 3);
    assert_true(kv_pool_usage(p) > 0.0);
    kv_seq_destroy(p, a);
    check_ok(p);
    kv_pool_stats(p, &st);
    assert_int_equal(st.used_pages[KV_GLOBAL], 10 + 6); /* c still holds a's */
    kv_seq_destroy(p, b);
    kv_seq_destroy(p, c);
    check_ok(p);
    kv_pool_stats(p, &st);
    assert_int_equal(st.num_seqs, 0);
    assert_int_equal(st.used_pages[KV_GLOBAL], 0);
    assert_int_equal(st.used_pages[KV_LOCAL], 0);
    assert_true(kv_pool_usage(p) == 0.0);
    /* The pool frees sequences still alive. */
    assert_int_equal(kv_seq_create(p, &a), ASA_OK);
    step(p, a, 5);
    kv_pool_destroy(p);
}

/* Fork, then write into the shared partial last block from both sides. */
static void test_fork_cow(void **state) {
    (void)state;
    const int B = 4, W = 6;
    kv_pool *p = make_pool(B, W, 32, 32);
    kv_seq *a, *b;
    assert_int_equal(kv_seq_create(p, &a), ASA_OK);
    step(p, a, 10); /* blocks 0,1,2 (2 is partial: positions 8, 9) */
    int ng, nl;
    const int32_t *ga = kv_seq_table(a, KV_GLOBAL, &ng);
    const int32_t *la = kv_seq_table(a, KV_LOCAL, &nl);
    int32_t ga2 = ga[2], la2 = la[2], la1 = la[1];
    assert_int_equal(la[0], -1); /* window of T=10 is [5, 10] */

    assert_int_equal(kv_seq_fork(p, a, &b), ASA_OK);
    check_ok(p);
    assert_int_equal(kv_seq_num_tokens(b), 10);
    const int32_t *gb = kv_seq_table(b, KV_GLOBAL, &ng);
    assert_int_equal(ng, 3);
    assert_memory_equal(gb, kv_seq_table(a, KV_GLOBAL, &ng), 3 * sizeof(int32_t));
    assert_int_equal(used(p, KV_GLOBAL), 3);

    int32_t need[KV_NCLASS];
    kv_seq_pages_needed(p, b, 1, need);
    assert_int_equal(need[KV_GLOBAL], 1);
    assert_int_equal(need[KV_LOCAL], 1);

    /* Too little room for the copies: EINVAL, nothing changes. */
    kv_copy cp[4];
    int nc = 0;
    assert_int_equal(kv_seq_alloc(p, b, 1, cp, 1, &nc), ASA_EINVAL);
    assert_int_equal(nc, 0);
    check_ok(p);
    assert_int_equal(used(p, KV_GLOBAL), 3);

    /* b writes position 10: global block 2 and local block 2 are copied;
     * block 1 (read only) stays shared. */
    assert_int_equal(kv_seq_alloc(p, b, 1, cp, 4, &nc), ASA_OK);
    assert_int_equal(nc, 2);
    bool seen[KV_NCLASS] = {false, false};
    for (int i = 0; i < nc; i++) {
        seen[cp[i].cls] = true;
        if (cp[i].cls == KV_GLOBAL) {
            assert_int_equal(cp[i].src, ga2);
            assert_int_not_equal(cp[i].dst, ga2);
        } else {
            assert_int_equal(cp[i].src, la2);
            assert_int_not_equal(cp[i].dst, la2);
        }
    }
    assert_true(seen[KV_GLOBAL] && seen[KV_LOCAL]);
    gb = kv_seq_table(b, KV_GLOBAL, &ng);
    ga = kv_seq_table(a, KV_GLOBAL, &ng);
    assert_int_equal(gb[0], ga[0]);
    assert_int_equal(gb[1], ga[1]);
    assert_int_not_equal(gb[2], ga[2]);
    const int32_t *lb = kv_seq_table(b, KV_LOCAL, &nl);
    assert_int_equal(lb[1], la1);
    assert_int_equal(lb[0], -1);
    check_ok(p);
    /* Extending the reservation does not copy again. */
    nc = 0;
    assert_int_equal(kv_seq_alloc(p, b, 2, cp, 4, &nc), ASA_OK);
    assert_int_equal(nc, 0);
    kv_seq_commit(p, b, 2);
    check_ok(p);

    /* a now owns its block 2 alone: writing it copies nothing. */
    kv_seq_pages_needed(p, a, 1, need);
    assert_int_equal(need[KV_GLOBAL], 0);
    assert_int_equal(need[KV_LOCAL], 0);
    assert_int_equal(kv_seq_alloc(p, a, 1, cp, 4, &nc), ASA_OK);
    assert_int_equal(nc, 0);
    kv_seq_commit(p, a, 1);
    check_ok(p);

    /* Fork at a block boundary: the next block is fresh, nothing copied.
     * a has 11 tokens; b 12. */
    kv_seq *c;
    assert_int_equal(kv_seq_fork(p, b, &c), ASA_OK);
    nc = 0;
    assert_int_equal(kv_seq_alloc(p, c, 1, cp, 4, &nc), ASA_OK);
    assert_int_equal(nc, 0);
    kv_seq_commit(p, c, 1);
    /* b writes block 3 fresh too, and block 1 local leaves its window as
     * it goes: shared pages are released by one reference at a time. */
    step(p, b, 4);
    check_ok(p);

    /* A pending reservation cannot be forked. */
    assert_int_equal(kv_seq_alloc(p, a, 1, cp, 4, &nc), ASA_OK);
    kv_seq *d = NULL;
    assert_int_equal(kv_seq_fork(p, a, &d), ASA_EINVAL);
    assert_null(d);
    kv_seq_commit(p, a, 1);
    assert_int_equal(kv_seq_fork(p, a, &d), ASA_OK);
    kv_seq_destroy(p, a);
    kv_seq_destroy(p, b);
    kv_seq_destroy(p, c);
    kv_seq_destroy(p, d);
    check_ok(p);
    assert_int_equal(used(p, KV_GLOBAL), 0);
    assert_int_equal(used(p, KV_LOCAL), 0);
    kv_pool_destroy(p);
}

/* ---- a shadow model of page contents: checks that copy-on-write yields
 * exactly the data each sequence wrote ------------------------------------ */

#define MAXSEQ 24
#define MAXLEN 600
typedef struct model {
    kv_pool *p;
    int B, W;
    int32_t npages[KV_NCLASS];
    int *mem[KV_NCLASS];      /* [npages][B] token values per page slot */
    kv_seq *s[MAXSEQ];
    int want[MAXSEQ][MAXLEN]; /* what each sequence wrote at each position */
    int resv[MAXSEQ];         /* tokens reserved beyond num_tokens */
} model;

static void model_apply_copies(model *m, const kv_copy *cp, int nc) {
    for (int i = 0; i < nc; i++)
        memcpy(m->mem[cp[i].cls] + (size_t)cp[i].dst * m->B,
               m->mem[cp[i].cls] + (size_t)cp[i].src * m->B, (size_t)m->B * sizeof(int));
}

/* Writes values for positions [T, T+n) through the tables (the engine's
 * job), then commits. */
static void model_write_commit(model *m, int i, int n, unsigned *rng) {
    kv_seq *s = m->s[i];
    int T = kv_seq_num_tokens(s), ng, nl;
    const int32_t *g = kv_seq_table(s, KV_GLOBAL, &ng);
    const int32_t *l = kv_seq_table(s, KV_LOCAL, &nl);
    for (int t = T; t < T + n; t++) {
        int v = (int)(rnd(rng) & 0xffffff);
        m->want[i][t] = v;
        int b = t / m->B, o = t % m->B;
        assert_true(b < ng && g[b] >= 0);
        m->mem[KV_GLOBAL][(size_t)g[b] * m->B + o] = v;
        if (m->W > 0) {
            assert_true(b < nl && l[b] >= 0);
            m->mem[KV_LOCAL][(size_t)l[b] * m->B + o] = v;
        }
    }
    kv_seq_commit(m->p, s, n);
    m->resv[i] -= n;
}

/* Every position a future token can read holds what the sequence wrote. */
static void model_verify(const model *m, int i) {
    const kv_seq *s = m->s[i];
    int T = kv_seq_num_tokens(s), ng, nl;
    const int32_t *g = kv_seq_table(s, KV_GLOBAL, &ng);
    const int32_t *l = kv_seq_table(s, KV_LOCAL, &nl);
    for (int t = 0; t < T; t++) {
        int b = t / m->B, o = t % m->B;
        assert_int_equal(m->mem[KV_GLOBAL][(size_t)g[b] * m->B + o], m->want[i][t]);
        if (m->W > 0 && t >= T - m->W + 1)
            assert_int_equal(m->mem[KV_LOCAL][(size_t)l[b] * m->B + o], m->want[i][t]);
    }
    if (m->W > 0)
        check_window(s, m->B, m->W);
}

static void stress_run(unsigned seed, int B, int W, int32_t ng, int32_t nl, int ops) {
    static model m;
    memset(&m, 0, sizeof m);
    m.B = B;
    m.W = W;
    m.npages[KV_GLOBAL] = ng;
    m.npages[KV_LOCAL] = nl;
    m.p = make_pool(B, W, ng, nl);
    for (int c = 0; c < KV_NCLASS; c++)
        m.mem[c] = calloc((size_t)(m.npages[c] + 1) * B, sizeof(int));
    unsigned rng = seed;
    static snapshot before, after;
    int n_enospace = 0, n_copies = 0, n_forks = 0;

    for (int op = 0; op < ops; op++) {
        int i = (int)(rnd(&rng) % MAXSEQ);
        int what = (int)(rnd(&rng) % 100);
        if (!m.s[i]) {
            if (what < 60)
                assert_int_equal(kv_seq_create(m.p, &m.s[i]), ASA_OK);
        } else if (what < 45) {
            /* alloc, maybe write + commit part of it */
            int T = kv_seq_num_tokens(m.s[i]);
            int room = MAXLEN - T;
            if (room <= 0) {
                kv_seq_destroy(m.p, m.s[i]);
                m.s[i] = NULL;
                continue;
            }
            int n = 1 + (int)(rnd(&rng) % (what < 30 ? 3 : 40));
            if (n > room)
                n = room;
            int32_t need[KV_NCLASS];
            kv_seq_pages_needed(m.p, m.s[i], n, need);
            kv_stats st0, st1;
            kv_pool_stats(m.p, &st0);
            snap_take(m.p, m.s, MAXSEQ, &before);
            kv_copy cp[8];
            int nc = 0;
            asa_err rc = kv_seq_alloc(m.p, m.s[i], n, cp, 8, &nc);
            kv_pool_stats(m.p, &st1);
            if (rc == ASA_ENOSPACE) {
                n_enospace++;
                assert_true(need[KV_GLOBAL] > st0.total_pages[KV_GLOBAL] - st0.used_pages[KV_GLOBAL] ||
                            need[KV_LOCAL] > st0.total_pages[KV_LOCAL] - st0.used_pages[KV_LOCAL]);
                snap_take(m.p, m.s, MAXSEQ, &after);
                snap_same(&before, &after);
                assert_int_equal(nc, 0);
            } else {
                assert_int_equal(rc, ASA_OK);
                n_copies += nc;
                /* pages_needed = fresh pages taken (a copy takes one and
                 * drops a shared reference, which frees nothing). */
                for (int c = 0; c < KV_NCLASS; c++)
                    assert_int_equal(st1.used_pages[c] - st0.used_pages[c], need[c]);
                model_apply_copies(&m, cp, nc);
                if (n > m.resv[i])
                    m.resv[i] = n;
                int k = (int)(rnd(&rng) % (unsigned)(m.resv[i] + 1));
                if (k > 0)
                    model_write_commit(&m, i, k, &rng);
            }
        } else if (what < 60) {
            /* commit the whole pending reservation */
            if (m.resv[i] > 0)
                model_write_commit(&m, i, m.resv[i], &rng);
        } else if (what < 75) {
            int j = 0;
            while (j < MAXSEQ && m.s[j])
                j++;
            if (j < MAXSEQ && m.resv[i] == 0) {
                assert_int_equal(kv_seq_fork(m.p, m.s[i], &m.s[j]), ASA_OK);
                memcpy(m.want[j], m.want[i], sizeof m.want[i]);
                m.resv[j] = 0;
                n_forks++;
            } else if (m.resv[i] > 0) {
                kv_seq *d = NULL;
                assert_int_equal(kv_seq_fork(m.p, m.s[i], &d), ASA_EINVAL);
            }
        } else if (what < 85) {
            kv_seq_destroy(m.p, m.s[i]);
            m.s[i] = NULL;
            m.resv[i] = 0;
        }
        assert_int_equal(kv_pool_check(m.p), ASA_OK);
        for (int j = 0; j < MAXSEQ; j++)
            if (m.s[j])
                model_verify(&m, j);
    }
    /* The run must have exercised the interesting paths. */
    assert_true(n_enospace > 0);
    assert_true(n_copies > 0);
    assert_true(n_forks > 0);
    for (int j = 0; j < MAXSEQ; j++)
        kv_seq_destroy(m.p, m.s[j]);
    kv_stats st;
    kv_pool_stats(m.p, &st);
    assert_int_equal(st.used_pages[KV_GLOBAL], 0);
    assert_int_equal(st.used_pages[KV_LOCAL], 0);
    assert_int_equal(st.num_seqs, 0);
    kv_pool_destroy(m.p);
    for (int c = 0; c < KV_NCLASS; c++)
        free(m.mem[c]);
}

static void test_stress(void **state) {
    (void)state;
    stress_run(12345u, 4, 6, 96, 40, 4000);
    stress_run(777u, 16, 32, 120, 30, 3000);
    stress_run(4242u, 3, 0, 150, 0, 2000);
    stress_run(99u, 5, 5, 60, 60, 3000);
}

/* pages_needed = pages alloc takes, over a sweep of states and sizes. */
static void test_pages_needed(void **state) {
    (void)state;
    const int B = 4, W = 9;
    kv_pool *p = make_pool(B, W, 512, 512);
    for (int t0 = 0; t0 < 20; t0++) {
        for (int n = 1; n < 30; n++) {
            kv_seq *s;
            assert_int_equal(kv_seq_create(p, &s), ASA_OK);
            if (t0)
                step(p, s, t0);
            kv_seq *f = NULL;
            if ((t0 + n) % 2) /* shared pages: needed counts the copies */
                assert_int_equal(kv_seq_fork(p, s, &f), ASA_OK);
            int32_t need[KV_NCLASS];
            kv_seq_pages_needed(p, s, n, need);
            int u0g = used(p, KV_GLOBAL), u0l = used(p, KV_LOCAL);
            kv_copy cp[4];
            int nc = 0;
            assert_int_equal(kv_seq_alloc(p, s, n, cp, 4, &nc), ASA_OK);
            assert_int_equal(used(p, KV_GLOBAL) - u0g, need[KV_GLOBAL]);
            assert_int_equal(used(p, KV_LOCAL) - u0l, need[KV_LOCAL]);
            assert_int_equal(nc, f && t0 % B ? 2 : 0);
            check_ok(p);
            kv_seq_destroy(p, s);
            kv_seq_destroy(p, f);
        }
    }
    check_ok(p);
    kv_pool_destroy(p);
}

/* The memory target: one 32k-token sequence of the asa-1.3b shape,
 * bytes measured from the pool's own counts, against NSA. */
static void test_memory_asa13b_vs_nsa(void **state) {
    (void)state;
    const int n_layers = 24, n_global = 12, n_local = 12; /* alternating, local first */
    const int G = 2, d_g = 96, d_R = 32, B = 16, d_c = 192, W = 512;
    const size_t bf16 = 2;
    const int T = 32768;
    /* Global page: per token latents + rope key, plus one compressed entry. */
    const size_t gpage = (size_t)n_global * ((size_t)B * (G * d_g + d_R) + (G * d_g + d_R)) * bf16;
    const size_t lpage = (size_t)n_local * B * (d_c + d_R) * bf16;
    kv_pool_config cfg = {.block_size = B, .window = W,
                          .num_pages = {T / B + 8, W / B + 2 + 2048 / B},
                          .page_bytes = {gpage, lpage}};
    kv_pool *p = NULL;
    assert_int_equal(kv_pool_create(&cfg, &p), ASA_OK);
    kv_seq *s;
    assert_int_equal(kv_seq_create(p, &s), ASA_OK);
    /* Prefill in 2048-token chunks up to 32k - 64, then decode one at a
     * time: the shape of real serving. */
    size_t peak = 0;
    while (kv_seq_num_tokens(s) < T) {
        int left = T - kv_seq_num_tokens(s);
        int n = left > 64 ? (left - 64 < 2048 ? left - 64 : 2048) : 1;
        int nc = 0;
        assert_int_equal(kv_seq_alloc(p, s, n, NULL, 0, &nc), ASA_OK);
        kv_stats st;
        kv_pool_stats(p, &st);
        if (st.used_bytes[KV_GLOBAL] + st.used_bytes[KV_LOCAL] > peak)
            peak = st.used_bytes[KV_GLOBAL] + st.used_bytes[KV_LOCAL];
        kv_seq_commit(p, s, n);
    }
    check_ok(p);
    kv_stats st;
    kv_pool_stats(p, &st);
    size_t asa = st.used_bytes[KV_GLOBAL] + st.used_bytes[KV_LOCAL];
    double asa_tok = (double)asa / T;
    double asa_global_tok = (double)st.used_bytes[KV_GLOBAL] / T;
    /* NSA: 24 layers x 2 KV heads x 64 x (K+V) x bf16, plus compressed K/V
     * (one entry per 16 tokens). */
    const double nsa_kv = (double)n_layers * 2 * 64 * 2 * bf16;
    const double nsa_tok = nsa_kv * (1.0 + 1.0 / 16);
    printf("[ asa-1.3b, %d tokens ] global pages %d x %zu B, local pages %d x %zu B\n", T,
           st.used_pages[KV_GLOBAL], gpage, st.used_pages[KV_LOCAL], lpage);
    printf("[ memory ] ASA total %zu B = %.1f B/token (global %.1f B/token incl. compressed, "
           "local windows %zu B); peak during prefill %zu B\n",
           asa, asa_tok, asa_global_tok, st.used_bytes[KV_LOCAL], peak);
    printf("[ memory ] NSA %.1f B/token (K+V %.0f + compressed 1/16) = %.0f B for %d tokens\n",
           nsa_tok, nsa_kv, nsa_tok * T, T);
    printf("[ memory ] ratio ASA/NSA = %.4f (vs NSA K+V only: %.4f)\n", asa_tok / nsa_tok,
           asa_tok / nsa_kv);
    assert_int_equal(gpage / B + (gpage % B ? 1 : 0), 5712); /* spec table */
    assert_true(asa_tok <= 0.5 * nsa_tok);
    assert_true(asa_tok <= 0.5 * nsa_kv);
    kv_seq_destroy(p, s);
    kv_pool_destroy(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_alloc_commit_blocks),
        cmocka_unit_test(test_window_recycling),
        cmocka_unit_test(test_no_local_layers),
        cmocka_unit_test(test_exhaustion),
        cmocka_unit_test(test_release_on_destroy),
        cmocka_unit_test(test_fork_cow),
        cmocka_unit_test(test_pages_needed),
        cmocka_unit_test(test_stress),
        cmocka_unit_test(test_memory_asa13b_vs_nsa),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
