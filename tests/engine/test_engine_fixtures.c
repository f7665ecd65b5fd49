/*
 * The CPU engine against the reference fixtures in tests/fixtures/<name>/
 * (a model directory plus case.json {"prompt", "greedy"} and logits.f32 =
 * [P, V] reference logits at every position of prompt + greedy[:-1]).
 *
 * For every fixture folder:
 *   - one-shot prefill of prompt + greedy[:-1]: every logit row within
 *     relative L2 1e-4 of the reference;
 *   - greedy generation from the prompt, fed the reference's tokens (so it
 *     is teacher-forced after a first disagreement, if any): the engine's
 *     token equals the reference's wherever the reference's top1-top2 margin
 *     exceeds 1e-3 of the row's max |logit|; the decode steps' logits equal
 *     the one-shot prefill's rows bitwise;
 *   - chunked prefill (1, 3, 16, 37) equals one-shot, bitwise;
 *   - the sequence in a batch with three others equals it alone, bitwise;
 *   - with selection.json present: the block set of every global layer,
 *     latent group and anchor equals the reference's wherever the
 *     reference's top-n score gap exceeds 1e-3 relative (or nothing could
 *     be swapped), read from the slot's selection state after a chunk that
 *     starts at the anchor.
 * Exits 77 (skipped) when there is no fixture.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "eng.h"
#include "eng_test_util.h"
#include "model.h"

#define MAX_FIX 64
static char *fix_dirs[MAX_FIX];
static int n_fix;

typedef struct fcase {
    eng_model *m;
    int V, np, ng, P;
    int32_t *seq;  /* [np + ng]: prompt then greedy */
    float *ref;    /* [P, V] */
} fcase;

static float *read_f32(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    float *p = malloc(want * sizeof(float));
    size_t got = p ? fread(p, sizeof(float), want, f) : 0;
    int extra = fgetc(f);
    fclose(f);
    if (got != want || extra != EOF) {
        free(p);
        return NULL;
    }
    return p;
}

static void load_case(const char *dir, fcase *c) {
    memset(c, 0, sizeof *c);
    char msg[512] = "", path[4096];
    asa_errbuf eb = {msg, sizeof msg};
    asa_err err = eng_model_load(dir, &c->m, &eb);
    if (err)
        fail_msg("%s: %s", dir, msg);
    c->V = c->m->cfg.vocab_size;
    snprintf(path, sizeof path, "%s/case.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fail_msg("%s: %s", path, je.text);
    json_t *pr = json_object_get(j, "prompt"), *gr = json_object_get(j, "greedy");
    assert_true(json_is_array(pr) && json_is_array(gr));
    c->np = (int)json_array_size(pr);
    c->ng = (int)json_array_size(gr);
    assert_true(c->np >= 1 && c->ng >= 1);
    c->seq = malloc((size_t)(c->np + c->ng) * sizeof(int32_t));
    for (int i = 0; i < c->np; i++)
        c->seq[i] = (int32_t)json_integer_value(json_array_get(pr, (size_t)i));
    for (int i = 0; i < c->ng; i++)
        c->seq[c->np + i] = (int32_t)json_integer_value(json_array_get(gr, (size_t)i));
    json_decref(j);
    c->P = c->np + c->ng - 1;
    snprintf(path, sizeof path, "%s/logits.f32", dir);
    c->ref = read_f32(path, (size_t)c->P * c->V);
    if (!c->ref)
        fail_msg("%s: missing or not [%d, %d] f32", path, c->P, c->V);
}

static void free_case(fcase *c) {
    eng_model_destroy(c->m);
    free(c->seq);
    free(c->ref);
}

static double rel_l2_f(const float *a, const float *b, int V) {
    double num = 0, den = 0;
    for (int i = 0; i < V; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Prefill in chunks of selection_share (each starts at an anchor) and
 * compare the slot's sets after every chunk with selection.json. */
static void check_selection(eng *e, const char *dir, const fcase *c) {
    char path[4096];
    snprintf(path, sizeof path, "%s/selection.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        return; /* optional file */
    const eng_config *cfg = &c->m->cfg;
    const int s = cfg->global.selection_share, n = cfg->global.top_n;
    json_t *layers = json_object_get(j, "layers");
    int P = (int)json_integer_value(json_object_get(j, "sequence_length"));
    assert_true(json_is_array(layers) && P >= 1 && P <= c->P + 1);
    etu_seq q;
    etu_seq_open(e, &q);
    int checked = 0, skipped = 0;
    int32_t got[256];
    assert_true(n <= 256);
    for (int a = 0; a < P && a < c->P; a += s) {
        int len = a + s <= c->P ? s : c->P - a;
        etu_prefill(e, &q, c->seq + a, len, len, NULL);
        assert_int_equal(eng__seq_anchor(e, q.slot), a);
        size_t li;
        json_t *L;
        json_array_foreach(layers, li, L) {
            int layer = (int)json_integer_value(json_object_get(L, "layer"));
            assert_true(layer >= 0 && layer < cfg->num_hidden_layers);
            assert_int_equal(c->m->layers[layer].type, ENG_LAYER_GLOBAL);
            int ti = c->m->layers[layer].type_index;
            json_t *anchors = json_object_get(L, "anchors");
            size_t ai = (size_t)(a / s);
            assert_int_equal(json_integer_value(json_array_get(anchors, ai)), a);
            json_t *blocks = json_array_get(json_object_get(L, "blocks"), ai);
            json_t *gaps = json_array_get(json_object_get(L, "rel_gaps"), ai);
            for (int g = 0; g < cfg->global.attn.latent_heads; g++) {
                json_t *gap = json_array_get(gaps, (size_t)g);
                if (json_is_number(gap) && !(json_number_value(gap) > 1e-3)) {
                    skipped++;
                    continue;
                }
                json_t *want = json_array_get(blocks, (size_t)g);
                int cnt = eng__seq_sets(e, q.slot, ti, g, got);
                bool same = cnt == (int)json_array_size(want);
                for (int k = 0; same && k < cnt; k++)
                    same = got[k] == json_integer_value(json_array_get(want, (size_t)k));
                if (!same)
                    fail_msg("%s: layer %d group %d anchor %d: block set differs", dir, layer, g, a);
                checked++;
            }
        }
    }
    etu_seq_close(e, &q);
    print_message("%s: %d block sets equal to the reference, %d near-ties skipped\n", dir,
                  checked, skipped);
    json_decref(j);
}

static void test_fixture(void **st) {
    const char *dir = *st;
    fcase c;
    load_case(dir, &c);
    const int V = c.V, P = c.P;
    size_t bytes = (size_t)P * V * sizeof(float);
    float *one = malloc(bytes), *lg = malloc(bytes);
    eng *e = etu_engine(c.m, 4, P, P + 1, 1);

    /* 1. one-shot prefill vs reference */
    etu_seq s;
    etu_seq_open(e, &s);
    etu_prefill(e, &s, c.seq, P, P, one);
    etu_seq_close(e, &s);
    double worst = 0;
    int worst_at = 0;
    for (int t = 0; t < P; t++) {
        double r = rel_l2_f(one + (size_t)t * V, c.ref + (size_t)t * V, V);
        if (r > worst) {
            worst = r;
            worst_at = t;
        }
    }
    print_message("%s: %d positions, worst relative L2 error %.3g (position %d)\n", dir, P,
                  worst, worst_at);
    if (!(worst < 1e-4))
        fail_msg("%s: relative L2 error %g at position %d >= 1e-4", dir, worst, worst_at);

    /* 2. greedy decode, fed the reference tokens */
    etu_seq_open(e, &s);
    eng_sampling sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    int checked = 0, disagree = 0, first_dis = -1;
    for (int k = 0; k < c.ng; k++) {
        int n = k == 0 ? c.np : 1;
        const int32_t *in = k == 0 ? c.seq : &c.seq[c.np + k - 1];
        kv_copy cp[4];
        int ncp = 0;
        assert_int_equal(kv_seq_alloc(eng_kv_pool(e), s.kv, n, cp, 4, &ncp), ASA_OK);
        int row = c.np - 1 + k;
        eng_seq_step q = {.slot = s.slot, .tokens = in, .n_tokens = n, .pos0 = s.pos,
                          .kv = s.kv, .sample = true, .sp = &sp, .prompt = c.seq,
                          .n_prompt = c.np, .output = c.seq + c.np, .n_output = k,
                          .logits_out = lg + (size_t)row * V};
        eng_batch b = {.n_seqs = 1, .seqs = &q, .copies = cp, .n_copies = ncp};
        eng_seq_result r;
        assert_int_equal(eng_step(e, &b, &r), ASA_OK);
        kv_seq_commit(eng_kv_pool(e), s.kv, n);
        s.pos += n;
        const float *rr = c.ref + (size_t)row * V;
        float t1 = -INFINITY, t2 = -INFINITY, mx = 0;
        for (int v = 0; v < V; v++) {
            if (rr[v] > t1) {
                t2 = t1;
                t1 = rr[v];
            } else if (rr[v] > t2) {
                t2 = rr[v];
            }
            mx = fabsf(rr[v]) > mx ? fabsf(rr[v]) : mx;
        }
        if (t1 - t2 > 1e-3f * mx) {
            checked++;
            if (r.token != c.seq[c.np + k]) {
                disagree++;
                if (first_dis < 0)
                    first_dis = k;
            }
        }
        if (memcmp(lg + (size_t)row * V, one + (size_t)row * V, (size_t)V * sizeof(float)))
            fail_msg("%s: decode step %d logits differ from the one-shot prefill", dir, k);
    }
    etu_seq_close(e, &s);
    print_message("%s: greedy identity checked at %d of %d steps, %d disagreements\n", dir,
                  checked, c.ng, disagree);
    if (disagree)
        fail_msg("%s: greedy token differs at step %d (margin above threshold)", dir, first_dis);

    /* 3. chunked prefill, bitwise */
    const int chunks[] = {1, 3, 16, 37};
    for (int i = 0; i < 4; i++) {
        etu_seq_open(e, &s);
        etu_prefill(e, &s, c.seq, P, chunks[i], lg);
        etu_seq_close(e, &s);
        if (memcmp(one, lg, bytes))
            fail_msg("%s: chunk size %d differs from one-shot prefill", dir, chunks[i]);
    }

    /* 4. batch of four: this sequence (chunks of 16) with three others */
    int lens[4] = {P, P / 3 + 1, P / 2 + 5 < P ? P / 2 + 5 : P, P - 7 > 0 ? P - 7 : 1};
    int ch[4] = {16, 5, 37, 11};
    int32_t *tok[4];
    float *out[4];
    etu_seq q4[4];
    for (int i = 0; i < 4; i++) {
        tok[i] = malloc((size_t)lens[i] * sizeof(int32_t));
        if (i == 0)
            memcpy(tok[i], c.seq, (size_t)P * sizeof(int32_t));
        else
            etu_tokens(tok[i], lens[i], V, 31u * (uint32_t)i);
        out[i] = malloc((size_t)lens[i] * V * sizeof(float));
        etu_seq_open(e, &q4[i]);
    }
    for (;;) {
        eng_seq_step q[4];
        eng_seq_result r[4];
        kv_copy cp[16];
        int ncp = 0, nq = 0, cnt[4] = {0};
        int budget = P; /* max_batch_tokens */
        for (int i = 0; i < 4; i++) {
            int left = lens[i] - q4[i].pos;
            int cc = left < ch[i] ? left : ch[i];
            if (cc > budget)
                cc = budget;
            if (cc <= 0)
                continue;
            budget -= cc;
            cnt[i] = cc;
            assert_int_equal(kv_seq_alloc(eng_kv_pool(e), q4[i].kv, cc, cp, 16, &ncp), ASA_OK);
            q[nq++] = (eng_seq_step){.slot = q4[i].slot, .tokens = tok[i] + q4[i].pos,
                                     .n_tokens = cc, .pos0 = q4[i].pos, .kv = q4[i].kv,
                                     .logits_out = out[i] + (size_t)q4[i].pos * V,
                                     .all_logits = true};
        }
        if (nq == 0)
            break;
        eng_batch b = {.n_seqs = nq, .seqs = q, .copies = cp, .n_copies = ncp};
        assert_int_equal(eng_step(e, &b, r), ASA_OK);
        for (int i = 0; i < 4; i++)
            if (cnt[i]) {
                kv_seq_commit(eng_kv_pool(e), q4[i].kv, cnt[i]);
                q4[i].pos += cnt[i];
            }
    }
    if (memcmp(one, out[0], bytes))
        fail_msg("%s: logits in a batch of four differ from the sequence alone", dir);
    assert_int_equal(kv_pool_check(eng_kv_pool(e)), ASA_OK);
    for (int i = 0; i < 4; i++) {
        etu_seq_close(e, &q4[i]);
        free(tok[i]);
        free(out[i]);
    }
    check_selection(e, dir, &c);
    eng_destroy(e);
    free(one);
    free(lg);
    free_case(&c);
}

int main(void) {
    const char *root = ASA_FIXTURES_DIR;
    n_fix = etu_list_fixtures(root, fix_dirs, MAX_FIX);
    if (n_fix == 0) {
        fprintf(stderr, "no fixtures under %s: skipped\n", root);
        return 77;
    }
    struct CMUnitTest tests[MAX_FIX];
    for (int i = 0; i < n_fix; i++) {
        const char *base = strrchr(fix_dirs[i], '/');
        tests[i] = (struct CMUnitTest){base ? base + 1 : fix_dirs[i], test_fixture, NULL, NULL,
                                       fix_dirs[i]};
    }
    int rc = _cmocka_run_group_tests("engine_fixtures", tests, (size_t)n_fix, NULL, NULL);
    for (int i = 0; i < n_fix; i++)
        free(fix_dirs[i]);
    return rc;
}
