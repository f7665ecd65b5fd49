/*
 * CPU engine tests on small random models written by the test itself:
 * agreement with a double-precision reference written from the spec, and
 * bitwise invariances (chunking, decode vs prefill, batch composition,
 * thread count, selection state across chunk boundaries and forks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng.h"
#include "eng_test_util.h"
#include "model.h"
#include "sample.h"

typedef struct fx {
    char *dir;
    eng_model *m;
    int V;
} fx;

static int setup_model(void **st, const etu_shape *sh) {
    *st = NULL;
    fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->dir = etu_write_model(sh);
    if (!f->dir) {
        free(f);
        return -1;
    }
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    asa_err err = eng_model_load(f->dir, &f->m, &eb);
    if (err) {
        fprintf(stderr, "load: %s\n", msg);
        return -1;
    }
    f->V = f->m->cfg.vocab_size;
    *st = f;
    return 0;
}
static int setup_f32(void **st) {
    etu_shape s;
    etu_shape_small(&s);
    return setup_model(st, &s);
}
static int teardown(void **st) {
    fx *f = *st;
    if (!f)
        return 0;
    eng_model_destroy(f->m);
    etu_rmdir(f->dir);
    free(f);
    return 0;
}

enum { NTOK = 70 };

/* Engine logits vs the reference at every position. */
static void check_reference(fx *f, int chunk) {
    int32_t tok[NTOK];
    etu_tokens(tok, NTOK, f->V, 3);
    float *lg = malloc((size_t)NTOK * f->V * sizeof(float));
    double *ref = malloc((size_t)NTOK * f->V * sizeof(double));
    etu_reference(f->m, tok, NTOK, ref);
    eng *e = etu_engine(f->m, 2, 64, 128, 1);
    etu_seq s;
    etu_seq_open(e, &s);
    etu_prefill(e, &s, tok, NTOK, chunk, lg);
    double worst = 0;
    for (int t = 0; t < NTOK; t++) {
        double r = etu_rel_l2(lg + (size_t)t * f->V, ref + (size_t)t * f->V, f->V);
        if (r > worst)
            worst = r;
        if (!(r < 1e-4))
            fail_msg("position %d: relative L2 error %g", t, r);
    }
    print_message("chunk %d: worst relative L2 error vs reference %.3g over %d positions\n",
                  chunk, worst, NTOK);
    etu_seq_close(e, &s);
    eng_destroy(e);
    free(lg);
    free(ref);
}

static void test_reference_f32(void **st) { check_reference(*st, 64); }
static void test_reference_f32_chunk5(void **st) { check_reference(*st, 5); }

static void test_reference_bf16_tied(void **st) {
    (void)st;
    etu_shape s;
    etu_shape_small(&s);
    s.bf16 = true;
    s.tied = true;
    s.share = 4;
    s.seed = 21;
    void *f;
    assert_int_equal(setup_model(&f, &s), 0);
    check_reference(f, 9);
    teardown(&f);
}

/* Chunk sizes 1, 3, 16, 37 give bitwise the logits of a one-shot prefill. */
static void test_chunking_bitwise(void **st) {
    fx *f = *st;
    const int n = 90;
    int32_t tok[90];
    etu_tokens(tok, n, f->V, 5);
    size_t bytes = (size_t)n * f->V * sizeof(float);
    float *one = malloc(bytes), *lg = malloc(bytes);
    eng *e = etu_engine(f->m, 2, 128, 128, 2);
    etu_seq s;
    etu_seq_open(e, &s);
    etu_prefill(e, &s, tok, n, n, one);
    etu_seq_close(e, &s);
    const int chunks[] = {1, 3, 16, 37};
    for (int c = 0; c < 4; c++) {
        memset(lg, 0xff, bytes);
        etu_seq_open(e, &s);
        etu_prefill(e, &s, tok, n, chunks[c], lg);
        etu_seq_close(e, &s);
        if (memcmp(one, lg, bytes) != 0)
            fail_msg("chunk size %d differs from one-shot prefill", chunks[c]);
    }
    eng_destroy(e);
    free(one);
    free(lg);
}

/* Greedy decode step by step, then one-shot prefill of prompt + output:
 * every decode step's logits equal the prefill's row, bitwise; and the
 * thread count does not change anything either. */
static void test_decode_equals_prefill(void **st) {
    fx *f = *st;
    const int np = 23, ngen = 40, n = np + ngen;
    int32_t tok[64];
    etu_tokens(tok, np, f->V, 9);
    float *dec = malloc((size_t)n * f->V * sizeof(float));
    float *pre = malloc((size_t)n * f->V * sizeof(float));
    for (int threads = 1; threads <= 2; threads++) {
        eng *e = etu_engine(f->m, 2, 64, 128, threads);
        etu_seq s;
        etu_seq_open(e, &s);
        eng_sampling sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
        int32_t out[64];
        int nout = 0;
        while (nout < ngen) {
            const int32_t *in = nout == 0 ? tok : &out[nout - 1];
            int c = nout == 0 ? np : 1;
            kv_copy cp[4];
            int ncp = 0;
            assert_int_equal(kv_seq_alloc(eng_kv_pool(e), s.kv, c, cp, 4, &ncp), ASA_OK);
            eng_seq_step q = {.slot = s.slot, .tokens = in, .n_tokens = c, .pos0 = s.pos,
                              .kv = s.kv, .sample = true, .sp = &sp, .prompt = tok,
                              .n_prompt = np, .output = out, .n_output = nout,
                              .logits_out = dec + (size_t)(s.pos + c - 1) * f->V};
            eng_batch b = {.n_seqs = 1, .seqs = &q, .copies = cp, .n_copies = ncp};
            eng_seq_result r;
            assert_int_equal(eng_step(e, &b, &r), ASA_OK);
            kv_seq_commit(eng_kv_pool(e), s.kv, c);
            s.pos += c;
            assert_true(r.token >= 0 && r.token < f->V);
            /* greedy: the argmax, ties to the lower id */
            const float *row = dec + (size_t)(s.pos - 1) * f->V;
            int best = 0;
            for (int v = 1; v < f->V; v++)
                if (row[v] > row[best])
                    best = v;
            assert_int_equal(r.token, best);
            out[nout++] = r.token;
        }
        etu_seq_close(e, &s);
        for (int k = 0; k < ngen; k++)
            tok[np + k] = out[k];
        etu_seq_open(e, &s);
        etu_prefill(e, &s, tok, n - 1, n - 1, pre);
        etu_seq_close(e, &s);
        for (int p = np - 1; p < n - 1; p++)
            if (memcmp(dec + (size_t)p * f->V, pre + (size_t)p * f->V, (size_t)f->V * sizeof(float)))
                fail_msg("threads %d: decode logits at position %d differ from prefill", threads, p);
        eng_destroy(e);
    }
    free(dec);
    free(pre);
}

/* A sequence alone vs together with three others of different lengths and
 * chunkings in the same steps: bitwise equal logits. */
static void test_batch_invariance(void **st) {
    fx *f = *st;
    const int lens[4] = {61, 17, 44, 80}, chunk[4] = {7, 3, 16, 37};
    int32_t *tok[4];
    float *lg[4];
    for (int i = 0; i < 4; i++) {
        tok[i] = malloc((size_t)lens[i] * sizeof(int32_t));
        etu_tokens(tok[i], lens[i], f->V, 100 + (uint32_t)i);
        lg[i] = malloc((size_t)lens[i] * f->V * sizeof(float));
    }
    float *alone = malloc((size_t)lens[0] * f->V * sizeof(float));
    eng *e = etu_engine(f->m, 4, 128, 128, 2);
    etu_seq s0;
    etu_seq_open(e, &s0);
    etu_prefill(e, &s0, tok[0], lens[0], chunk[0], alone);
    etu_seq_close(e, &s0);

    etu_seq s[4];
    for (int i = 0; i < 4; i++)
        etu_seq_open(e, &s[i]);
    for (;;) {
        eng_seq_step q[4];
        eng_seq_result r[4];
        kv_copy cp[16];
        int ncp = 0, nq = 0, c[4];
        for (int i = 0; i < 4; i++) {
            int left = lens[i] - s[i].pos;
            if (left <= 0)
                continue;
            c[i] = left < chunk[i] ? left : chunk[i];
            assert_int_equal(kv_seq_alloc(eng_kv_pool(e), s[i].kv, c[i], cp, 16, &ncp), ASA_OK);
            q[nq++] = (eng_seq_step){.slot = s[i].slot, .tokens = tok[i] + s[i].pos,
                                     .n_tokens = c[i], .pos0 = s[i].pos, .kv = s[i].kv,
                                     .logits_out = lg[i] + (size_t)s[i].pos * f->V,
                                     .all_logits = true};
        }
        if (nq == 0)
            break;
        eng_batch b = {.n_seqs = nq, .seqs = q, .copies = cp, .n_copies = ncp};
        assert_int_equal(eng_step(e, &b, r), ASA_OK);
        for (int i = 0; i < 4; i++)
            if (lens[i] - s[i].pos > 0) {
                kv_seq_commit(eng_kv_pool(e), s[i].kv, c[i]);
                s[i].pos += c[i];
            }
    }
    assert_memory_equal(alone, lg[0], (size_t)lens[0] * f->V * sizeof(float));
    assert_int_equal(kv_pool_check(eng_kv_pool(e)), ASA_OK);
    for (int i = 0; i < 4; i++) {
        etu_seq_close(e, &s[i]);
        free(tok[i]);
        free(lg[i]);
    }
    free(alone);
    eng_destroy(e);
}

/* The selection-share state survives a chunk boundary between anchors:
 * prefill to a non-anchor position, then continue; equal to one shot.  A
 * fresh slot without that state is refused at a non-anchor start, and a
 * fork carries the state over. */
static void test_selection_state(void **st) {
    fx *f = *st;
    const int n = 75, cut = 41; /* share = 2: 41 is not an anchor */
    int32_t tok[75];
    etu_tokens(tok, n, f->V, 77);
    size_t bytes = (size_t)n * f->V * sizeof(float);
    float *one = malloc(bytes), *lg = malloc(bytes), *lg2 = malloc(bytes);
    eng *e = etu_engine(f->m, 3, 128, 128, 1);
    etu_seq s;
    etu_seq_open(e, &s);
    etu_prefill(e, &s, tok, n, n, one);
    etu_seq_close(e, &s);

    etu_seq_open(e, &s);
    etu_prefill(e, &s, tok, cut, cut, lg);
    /* fork: slot state + pages */
    etu_seq s2;
    assert_int_equal(eng_seq_open(e, &s2.slot), ASA_OK);
    assert_int_equal(kv_seq_fork(eng_kv_pool(e), s.kv, &s2.kv), ASA_OK);
    assert_int_equal(eng_seq_fork(e, s.slot, s2.slot), ASA_OK);
    s2.pos = cut;
    memcpy(lg2, lg, (size_t)cut * f->V * sizeof(float));
    etu_prefill(e, &s, tok + cut, n - cut, 11, lg + (size_t)cut * f->V);
    etu_prefill(e, &s2, tok + cut, n - cut, n - cut, lg2 + (size_t)cut * f->V);
    assert_memory_equal(one, lg, bytes);
    assert_memory_equal(one, lg2, bytes);
    assert_int_equal(kv_pool_check(eng_kv_pool(e)), ASA_OK);
    etu_seq_close(e, &s2);

    /* a slot without the anchor's sets cannot start at a non-anchor */
    etu_seq s3;
    etu_seq_open(e, &s3);
    kv_seq_destroy(eng_kv_pool(e), s3.kv);
    assert_int_equal(kv_seq_fork(eng_kv_pool(e), s.kv, &s3.kv), ASA_OK);
    kv_copy cp[8];
    int ncp = 0;
    /* s is at 75 (odd): the fresh slot s3 has no state */
    assert_int_equal(kv_seq_alloc(eng_kv_pool(e), s3.kv, 1, cp, 8, &ncp), ASA_OK);
    eng_seq_step q = {.slot = s3.slot, .tokens = tok, .n_tokens = 1, .pos0 = n, .kv = s3.kv};
    eng_batch b = {.n_seqs = 1, .seqs = &q, .copies = cp, .n_copies = ncp};
    eng_seq_result r;
    assert_int_equal(eng_step(e, &b, &r), ASA_EINVAL);
    etu_seq_close(e, &s3);
    etu_seq_close(e, &s);
    eng_destroy(e);
    free(one);
    free(lg);
    free(lg2);
}

/* Preemption: a sequence dropped half-way (pages freed, slot closed) and
 * recomputed from scratch in a reused slot, with other chunking, gives the
 * one-shot logits; so does a slot that is reused without being closed. */
static void test_recompute_after_preemption(void **st) {
    fx *f = *st;
    const int n = 57;
    int32_t tok[57];
    etu_tokens(tok, n, f->V, 55);
    size_t bytes = (size_t)n * f->V * sizeof(float);
    float *one = malloc(bytes), *lg = malloc(bytes);
    eng *e = etu_engine(f->m, 2, 64, 64, 2);
    etu_seq s;
    etu_seq_open(e, &s);
    etu_prefill(e, &s, tok, n, n, one);
    etu_seq_close(e, &s);
    etu_seq_open(e, &s);
    etu_prefill(e, &s, tok, 29, 7, lg); /* preempted at 29 (a non-anchor) */
    etu_seq_close(e, &s);
    etu_seq_open(e, &s);
    etu_prefill(e, &s, tok, n, 13, lg);
    assert_memory_equal(one, lg, bytes);
    /* same slot, fresh pages, no close: position 0 is an anchor */
    kv_seq_destroy(eng_kv_pool(e), s.kv);
    assert_int_equal(kv_seq_create(eng_kv_pool(e), &s.kv), ASA_OK);
    s.pos = 0;
    etu_prefill(e, &s, tok, n, 5, lg);
    assert_memory_equal(one, lg, bytes);
    etu_seq_close(e, &s);
    assert_int_equal(kv_pool_check(eng_kv_pool(e)), ASA_OK);
    eng_destroy(e);
    free(one);
    free(lg);
}

/* Malformed batches are refused before anything is computed. */
static void test_bad_batches(void **st) {
    fx *f = *st;
    eng *e = etu_engine(f->m, 2, 16, 64, 1);
    etu_seq s;
    etu_seq_open(e, &s);
    int32_t tok[20] = {0};
    kv_copy cp[8];
    int ncp = 0;
    assert_int_equal(kv_seq_alloc(eng_kv_pool(e), s.kv, 4, cp, 8, &ncp), ASA_OK);
    eng_seq_result r[2];
    eng_seq_step q = {.slot = s.slot, .tokens = tok, .n_tokens = 4, .pos0 = 0, .kv = s.kv};
    eng_batch b = {.n_seqs = 1, .seqs = &q};
    q.pos0 = 1; /* != cached tokens */
    assert_int_equal(eng_step(e, &b, r), ASA_EINVAL);
    q.pos0 = 0;
    q.n_tokens = 5; /* more than reserved */
    assert_int_equal(eng_step(e, &b, r), ASA_EINVAL);
    q.n_tokens = 4;
    tok[2] = f->V; /* id out of range */
    assert_int_equal(eng_step(e, &b, r), ASA_EINVAL);
    tok[2] = 0;
    q.slot = 1; /* not open */
    assert_int_equal(eng_step(e, &b, r), ASA_EINVAL);
    q.slot = s.slot;
    eng_seq_step two[2] = {q, q}; /* same slot twice */
    b.seqs = two;
    b.n_seqs = 2;
    assert_int_equal(eng_step(e, &b, r), ASA_EINVAL);
    b.seqs = &q;
    b.n_seqs = 1;
    eng_sampling sp = {.temperature = -1, .top_p = 1, .repetition_penalty = 1};
    q.sample = true;
    q.sp = &sp; /* bad sampling parameters */
    assert_int_equal(eng_step(e, &b, r), ASA_EINVAL);
    sp.temperature = 0;
    assert_int_equal(eng_step(e, &b, r), ASA_OK);
    assert_true(r[0].token >= 0 && r[0].token < f->V);
    etu_seq_close(e, &s);
    eng_destroy(e);

    /* options and backends */
    eng_options o;
    eng_options_default(&o);
    eng *e2 = NULL;
    o.backend = ENG_BACKEND_CUDA;
    assert_int_equal(eng_create(f->m, &o, &e2, NULL), ASA_EUNSUPPORTED);
    o.backend = ENG_BACKEND_CPU;
    o.max_seqs = 0;
    assert_int_equal(eng_create(f->m, &o, &e2, NULL), ASA_EINVAL);
    assert_null(e2);
    eng_options_default(&o);
    o.kv_bytes = 1 << 20;
    o.threads = 2;
    assert_int_equal(eng_create(f->m, &o, &e2, NULL), ASA_OK);
    int slots[8], k;
    for (k = 0; k < 8; k++)
        assert_int_equal(eng_seq_open(e2, &slots[k]), ASA_OK);
    assert_int_equal(eng_seq_open(e2, &k), ASA_ENOSPACE);
    eng_destroy(e2);
    eng_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reference_f32, setup_f32, teardown),
        cmocka_unit_test_setup_teardown(test_reference_f32_chunk5, setup_f32, teardown),
        cmocka_unit_test(test_reference_bf16_tied),
        cmocka_unit_test_setup_teardown(test_chunking_bitwise, setup_f32, teardown),
        cmocka_unit_test_setup_teardown(test_decode_equals_prefill, setup_f32, teardown),
        cmocka_unit_test_setup_teardown(test_batch_invariance, setup_f32, teardown),
        cmocka_unit_test_setup_teardown(test_selection_state, setup_f32, teardown),
        cmocka_unit_test_setup_teardown(test_recompute_after_preemption, setup_f32, teardown),
        cmocka_unit_test_setup_teardown(test_bad_batches, setup_f32, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
