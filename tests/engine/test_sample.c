/*
 * tests/engine/test_sample.c - the CPU sampler (engine/sample.h).
 *
 * Distribution checks draw with deterministic seeds and compare counts with
 * the exact distribution (computed here in double) by a chi-square bound far
 * in the tail (a false alarm would need a > 6-sigma deviation), and check
 * that no token outside the expected support is ever drawn.
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sample.h"

static eng_sampling neutral(void) {
    eng_sampling sp;
    memset(&sp, 0, sizeof sp);
    sp.temperature = 1.0f;
    sp.top_p = 1.0f;
    sp.repetition_penalty = 1.0f;
    return sp;
}

/* One call with scratch from the heap; asserts success and a valid id. */
static eng_seq_result draw(const float *logits, int V, const eng_sampling *sp,
                           const int32_t *prompt, int np, const int32_t *out, int no) {
    float *scratch = malloc(2 * (size_t)V * sizeof *scratch);
    assert_non_null(scratch);
    for (int i = 0; i < 2 * V; i++)
        scratch[i] = NAN; /* the sampler must not depend on scratch contents */
    eng_seq_result r;
    memset(&r, 0xa5, sizeof r);
    assert_int_equal(eng_sample(logits, V, sp, prompt, np, out, no, scratch, &r), ASA_OK);
    assert_in_range(r.token, 0, V - 1);
    assert_int_equal(r.n_top, sp->n_logprobs);
    free(scratch);
    return r;
}

/* Draws n tokens with seeds 1000+s (k = 0) and checks them against p[V]
 * (double, sums to 1): tokens with p == 0 never appear, and the chi-square
 * statistic over the others stays below df + 8 sqrt(2 df) + 10. */
static void check_distribution(const float *logits, int V, eng_sampling sp,
                               const int32_t *prompt, int np, const int32_t *out,
                               int no, const double *p, int n) {
    long *cnt = calloc((size_t)V, sizeof *cnt);
    assert_non_null(cnt);
    for (int s = 0; s < n; s++) {
        sp.seed = 1000 + (uint64_t)s;
        eng_seq_result r = draw(logits, V, &sp, prompt, np, out, no);
        cnt[r.token]++;
    }
    double chi2 = 0;
    int df = -1;
    for (int i = 0; i < V; i++) {
        if (p[i] == 0) {
            if (cnt[i] != 0)
                fail_msg("token %d has p = 0 but was drawn %ld times", i, cnt[i]);
            continue;
        }
        double e = p[i] * n;
        chi2 += (cnt[i] - e) * (cnt[i] - e) / e;
        df++;
    }
    double bound = df + 8 * sqrt(2.0 * (df > 0 ? df : 1)) + 10;
    if (chi2 > bound)
        fail_msg("chi2 %.2f > %.2f (df %d)", chi2, bound, df);
    free(cnt);
}

/* p = softmax(l / T) restricted to keep[] (NULL = all), in double. */
static void softmax_d(const float *l, int V, double T, const int *keep, double *p) {
    double m = -INFINITY, s = 0;
    for (int i = 0; i < V; i++)
        if ((!keep || keep[i]) && l[i] > m)
            m = l[i];
    for (int i = 0; i < V; i++) {
        p[i] = (!keep || keep[i]) ? exp((l[i] - m) / T) : 0;
        s += p[i];
    }
    for (int i = 0; i < V; i++)
        p[i] /= s;
}

/* ---- greedy ------------------------------------------------------------ */

static void test_greedy_ties(void **state) {
    (void)state;
    float l[10] = {0, 1, 5, 2, 5, 5, -1, 3, 5, 0};
    eng_sampling sp = neutral();
    sp.temperature = 0;
    sp.top_k = 3;
    sp.top_p = 0.5f;
    sp.min_p = 0.9f;
    for (uint64_t s = 0; s < 20; s++) {
        sp.seed = s;
        assert_int_equal(draw(l, 10, &sp, NULL, 0, NULL, 0).token, 2);
    }
    sp.temperature = 1e-6f; /* below ENG_SAMPLE_GREEDY_EPS: greedy too */
    assert_int_equal(draw(l, 10, &sp, NULL, 0, NULL, 0).token, 2);
    float one = -3;
    sp.temperature = 0;
    assert_int_equal(draw(&one, 1, &sp, NULL, 0, NULL, 0).token, 0);
}

/* ---- temperature sampling ---------------------------------------------- */

static void test_temperature_distribution(void **state) {
    (void)state;
    float l[8] = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f, 1.7f, -1.5f, 0.9f};
    double p[8];
    const float temps[] = {1.0f, 0.7f, 1.6f};
    for (int t = 0; t < 3; t++) {
        eng_sampling sp = neutral();
        sp.temperature = temps[t];
        softmax_d(l, 8, temps[t], NULL, p);
        check_distribution(l, 8, sp, NULL, 0, NULL, 0, p, 20000);
    }
}

/* The same (seed, k) gives the same token; draws along k for one seed and
 * along seeds for one k both follow the distribution. */
static void test_seed_k_determinism(void **state) {
    (void)state;
    float l[6] = {0.1f, 0.4f, 0.2f, 0.9f, 0.0f, 0.3f};
    int32_t out[64];
    for (int i = 0; i < 64; i++)
        out[i] = i % 6;
    eng_sampling sp = neutral();
    sp.seed = 12345;
    for (int k = 0; k < 64; k++) {
        int a = draw(l, 6, &sp, NULL, 0, out, k).token;
        int b = draw(l, 6, &sp, NULL, 0, out, k).token;
        assert_int_equal(a, b);
    }
    /* Along k (penalties off, so only the draw changes). */
    enum { N = 6000 };
    int32_t *seq = malloc(N * sizeof *seq);
    assert_non_null(seq);
    for (int i = 0; i < N; i++)
        seq[i] = 0;
    double p[6];
    softmax_d(l, 6, 1.0, NULL, p);
    long cnt[6] = {0};
    long pair[6][6];
    memset(pair, 0, sizeof pair);
    int prev = -1;
    for (int k = 0; k < N; k++) {
        int t = draw(l, 6, &sp, NULL, 0, seq, k).token;
        cnt[t]++;
        if (prev >= 0)
            pair[prev][t]++;
        prev = t;
    }
    double chi2 = 0;
    for (int i = 0; i < 6; i++)
        chi2 += (cnt[i] - N * p[i]) * (cnt[i] - N * p[i]) / (N * p[i]);
    assert_true(chi2 < 5 + 8 * sqrt(10.0) + 10);
    /* Consecutive draws independent: pair counts vs p_i p_j (df 35). */
    chi2 = 0;
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++) {
            double e = (N - 1) * p[i] * p[j];
            chi2 += (pair[i][j] - e) * (pair[i][j] - e) / e;
        }
    if (chi2 > 35 + 8 * sqrt(70.0) + 10)
        fail_msg("pair chi2 %.1f", chi2);
    free(seq);
    /* The uniform itself: in [0, 1), differs across k and seeds. */
    for (uint64_t k = 0; k < 1000; k++) {
        double u = eng_sample_u01(7, k);
        assert_true(u >= 0 && u < 1);
        assert_true(u != eng_sample_u01(7, k + 1));
        assert_true(u != eng_sample_u01(8, k));
    }
}

/* ---- top-k / top-p / min-p --------------------------------------------- */

static void logs_of(const double *p, int V, float *l) {
    for (int i = 0; i < V; i++)
        l[i] = p[i] > 0 ? (float)log(p[i]) : -INFINITY;
}

static void test_top_k(void **state) {
    (void)state;
    /* Ties at the boundary go to the lower ids: ids 1, 2, 5 tie. */
    float l[7] = {0.0f, 2.0f, 2.0f, 3.0f, -1.0f, 2.0f, 1.0f};
    eng_sampling sp = neutral();
    sp.top_k = 3;
    int keep[7] = {0, 1, 1, 1, 0, 0, 0};
    double p[7];
    softmax_d(l, 7, 1.0, keep, p);
    check_distribution(l, 7, sp, NULL, 0, NULL, 0, p, 6000);
    sp.top_k = 1;
    int keep1[7] = {0, 0, 0, 1, 0, 0, 0};
    softmax_d(l, 7, 1.0, keep1, p);
    check_distribution(l, 7, sp, NULL, 0, NULL, 0, p, 200);
    sp.top_k = 7; /* >= V: off */
    softmax_d(l, 7, 1.0, NULL, p);
    check_distribution(l, 7, sp, NULL, 0, NULL, 0, p, 6000);
}

static void test_top_p(void **state) {
    (void)state;
    const double q[6] = {0.1, 0.4, 0.05, 0.3, 0.15, 0.0};
    float l[6];
    logs_of(q, 6, l);
    eng_sampling sp = neutral();
    double p[6];
    struct {
        float top_p;
        int keep[6];
    } cases[] = {
        {0.35f, {0, 1, 0, 0, 0, 0}},  /* 0.4 alone reaches it */
        {0.6f, {0, 1, 0, 1, 0, 0}},   /* 0.4 < 0.6, then 0.7 >= 0.6 */
        {0.8f, {0, 1, 0, 1, 1, 0}},   /* 0.7 < 0.8 -> 0.15 kept */
        {0.9f, {1, 1, 0, 1, 1, 0}},   /* 0.85 < 0.9 -> 0.1 kept */
        {0.99f, {1, 1, 1, 1, 1, 0}},
        {1e-6f, {0, 1, 0, 0, 0, 0}},  /* at least one */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sp.top_p = cases[c].top_p;
        softmax_d(l, 6, 1.0, cases[c].keep, p);
        check_distribution(l, 6, sp, NULL, 0, NULL, 0, p, 5000);
    }
}

static void test_min_p(void **state) {
    (void)state;
    const double q[6] = {0.05, 0.5, 0.2, 0.1, 0.15, 0.0};
    float l[6];
    logs_of(q, 6, l);
    eng_sampling sp = neutral();
    double p[6];
    sp.min_p = 0.25f; /* p < 0.125 dropped */
    int keep[6] = {0, 1, 1, 0, 1, 0};
    softmax_d(l, 6, 1.0, keep, p);
    check_distribution(l, 6, sp, NULL, 0, NULL, 0, p, 5000);
    sp.min_p = 1.0f;
    int keep1[6] = {0, 1, 0, 0, 0, 0};
    softmax_d(l, 6, 1.0, keep1, p);
    check_distribution(l, 6, sp, NULL, 0, NULL, 0, p, 200);
    /* Temperature first: at T = 2, q^(1/2) -> ratios sqrt(q / 0.5);
     * min_p 0.5 keeps q >= 0.125: ids 1, 2, 4. */
    sp.temperature = 2.0f;
    sp.min_p = 0.5f;
    int keep2[6] = {0, 1, 1, 0, 1, 0};
    softmax_d(l, 6, 2.0, keep2, p);
    check_distribution(l, 6, sp, NULL, 0, NULL, 0, p, 5000);
}

static void test_combined_order(void **state) {
    (void)state;
    /* top-k 4 keeps {1, 3, 4, 0} (0.4, 0.25, 0.15, 0.1 -> renormalised
     * 0.444, 0.278, 0.167, 0.111); top-p 0.75 keeps {1, 3, 4}
     * (0.722 < 0.75); min-p 0.45 drops p < 0.2 -> drops 4 (0.167/0.444). */
    const double q[7] = {0.1, 0.4, 0.05, 0.25, 0.15, 0.03, 0.02};
    float l[7];
    logs_of(q, 7, l);
    eng_sampling sp = neutral();
    sp.top_k = 4;
    sp.top_p = 0.75f;
    double p[7];
    int keep[7] = {0, 1, 0, 1, 1, 0, 0};
    softmax_d(l, 7, 1.0, keep, p);
    check_distribution(l, 7, sp, NULL, 0, NULL, 0, p, 6000);
    sp.min_p = 0.45f;
    int keep2[7] = {0, 1, 0, 1, 0, 0, 0};
    softmax_d(l, 7, 1.0, keep2, p);
    check_distribution(l, 7, sp, NULL, 0, NULL, 0, p, 6000);
}

/* Large vocabulary: the partial selection agrees token for token with a
 * full-sort implementation of the same stages. */
typedef struct {
    float e;
    int id;
} ref_ent;

static int ref_cmp(const void *a, const void *b) {
    const ref_ent *x = a, *y = b;
    if (x->e != y->e)
        return x->e > y->e ? -1 : 1;
    return x->id - y->id;
}

static int ref_sample(const float *l, int V, const eng_sampling *sp, uint64_t k) {
    float *e = malloc((size_t)V * sizeof *e);
    ref_ent *s = malloc((size_t)V * sizeof *s);
    float m = -INFINITY;
    for (int i = 0; i < V; i++)
        m = l[i] > m ? l[i] : m;
    eng_sample_exp_array(l, e, V, m, 1.0f / sp->temperature);
    for (int i = 0; i < V; i++) {
        s[i].e = e[i];
        s[i].id = i;
    }
    qsort(s, (size_t)V, sizeof *s, ref_cmp);
    int n = V;
    if (sp->top_k > 0 && sp->top_k < n)
        n = sp->top_k;
    double tot = 0;
    for (int i = 0; i < V; i++) /* same summation order as the sampler */
        if (e[i] > s[n - 1].e || (e[i] == s[n - 1].e && i <= s[n - 1].id))
            tot += e[i];
    if (sp->top_p < 1) {
        double cum = 0;
        int r = 0;
        while (r < n && (r == 0 || cum < sp->top_p * tot))
            cum += s[r++].e;
        n = r;
    }
    for (int i = 0; i < V; i++)
        e[i] = 0;
    for (int r = 0; r < n; r++)
        if (s[r].e >= sp->min_p)
            e[s[r].id] = s[r].e;
    tot = 0;
    for (int i = 0; i < V; i++)
        tot += e[i];
    double target = eng_sample_u01(sp->seed, k) * tot, cum = 0;
    int tok = -1;
    for (int i = 0; i < V && tok < 0; i++) {
        cum += e[i];
        if (e[i] > 0 && cum > target)
            tok = i;
    }
    free(e);
    free(s);
    return tok;
}

static void test_large_vocab_vs_full_sort(void **state) {
    (void)state;
    enum { V = 32000 };
    float *l = malloc(V * sizeof *l);
    assert_non_null(l);
    uint64_t x = 88172645463325252ull;
    const struct {
        float T, top_p, min_p;
        int top_k;
        float scale;
    } cfg[] = {
        {1.0f, 0.9f, 0.0f, 0, 3.0f},  {0.8f, 1.0f, 0.0f, 50, 3.0f},
        {1.0f, 0.95f, 0.0f, 40, 1.0f}, {1.3f, 0.5f, 0.05f, 0, 0.3f},
        {1.0f, 0.999f, 0.0f, 0, 0.01f}, {0.7f, 0.8f, 0.1f, 1000, 8.0f},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        for (int i = 0; i < V; i++) { /* xorshift, roughly gaussian-ish sum */
            double g = 0;
            for (int j = 0; j < 3; j++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                g += (double)(x >> 11) * 0x1.0p-53 - 0.5;
            }
            l[i] = (float)(g * cfg[c].scale * 4);
        }
        eng_sampling sp = neutral();
        sp.temperature = cfg[c].T;
        sp.top_p = cfg[c].top_p;
        sp.min_p = cfg[c].min_p;
        sp.top_k = cfg[c].top_k;
        for (int s = 0; s < 30; s++) {
            sp.seed = 77 + (uint64_t)s;
            int want = ref_sample(l, V, &sp, 0);
            int got = draw(l, V, &sp, NULL, 0, NULL, 0).token;
            if (want != got)
                fail_msg("cfg %zu seed %d: sampler %d, full sort %d", c, s, got, want);
        }
    }
    free(l);

    /* Flat tail: one token at 0 and 2^21 - 1 tokens at -14.5 (e = 5e-7
     * each, below every candidate threshold but the last; 1.05 in total):
     * the nucleus and the top-k set reach deep into the tail, so the
     * selection must fall back to all positive entries. */
    enum { VF = 1 << 21 };
    l = malloc(VF * sizeof *l);
    assert_non_null(l);
    for (int i = 0; i < VF; i++)
        l[i] = i == 17 ? 0.0f : -14.5f;
    const struct {
        float top_p;
        int top_k;
    } flat[] = {{0.75f, 0}, {1.0f, 1000000}};
    for (size_t c = 0; c < sizeof flat / sizeof flat[0]; c++) {
        eng_sampling sp = neutral();
        sp.top_p = flat[c].top_p;
        sp.top_k = flat[c].top_k;
        int tail = 0;
        for (int s = 0; s < 4; s++) {
            sp.seed = 100 + (uint64_t)s;
            int want = ref_sample(l, VF, &sp, 0);
            int got = draw(l, VF, &sp, NULL, 0, NULL, 0).token;
            if (want != got)
                fail_msg("flat %zu seed %d: sampler %d, full sort %d", c, s, got, want);
            tail += got != 17;
        }
        if (tail == 0)
            fail_msg("flat %zu: never drew from the tail", c);
    }
    free(l);
}

/* ---- penalties and bias ------------------------------------------------ */

static void test_repetition_penalty(void **state) {
    (void)state;
    eng_sampling sp = neutral();
    sp.temperature = 0;
    sp.repetition_penalty = 1.2f;
    float pos[3] = {2.0f, 1.9f, 0.5f};
    int32_t prompt[5] = {0, 0, 0, 0, 0};
    /* 2.0 / 1.2 = 1.67 < 1.9, applied once however often 0 occurs. */
    assert_int_equal(draw(pos, 3, &sp, prompt, 5, NULL, 0).token, 1);
    sp.repetition_penalty = 1.04f; /* 1.923 > 1.9 */
    assert_int_equal(draw(pos, 3, &sp, prompt, 5, prompt, 5).token, 0);
    /* Negative logits are multiplied: -1 * 1.2 = -1.2 < -1.1. */
    float neg[3] = {-1.0f, -1.1f, -5.0f};
    sp.repetition_penalty = 1.2f;
    assert_int_equal(draw(neg, 3, &sp, NULL, 0, prompt, 1).token, 1);
    sp.repetition_penalty = 0.5f; /* < 1 favours repeats: 1.9 / 0.5 */
    int32_t one = 1;
    assert_int_equal(draw(pos, 3, &sp, &one, 1, NULL, 0).token, 1);
    /* Exact distribution at T = 1. */
    sp.temperature = 1;
    sp.repetition_penalty = 1.5f;
    float l[4] = {1.0f, -0.5f, 0.2f, 0.8f};
    float adj[4] = {1.0f / 1.5f, -0.75f, 0.2f, 0.8f};
    int32_t pr[2] = {1, 0};
    double p[4];
    softmax_d(adj, 4, 1.0, NULL, p);
    check_distribution(l, 4, sp, pr, 1, pr + 1, 1, p, 6000);
}

static void test_frequency_presence(void **state) {
    (void)state;
    eng_sampling sp = neutral();
    sp.temperature = 0;
    float l[3] = {2.0f, 1.9f, 0.5f};
    int32_t out[4] = {0, 2, 0, 0};
    int32_t prompt[3] = {1, 1, 1};
    sp.frequency_penalty = 0.1f; /* 2.0 - 0.3 = 1.7 */
    assert_int_equal(draw(l, 3, &sp, NULL, 0, out, 4).token, 1);
    sp.frequency_penalty = 0.03f; /* 1.91 */
    assert_int_equal(draw(l, 3, &sp, NULL, 0, out, 4).token, 0);
    /* Prompt tokens are not penalised by frequency/presence. */
    sp.frequency_penalty = 0;
    sp.presence_penalty = 0.2f; /* 1.8 < 1.9 */
    assert_int_equal(draw(l, 3, &sp, prompt, 3, out, 4).token, 1);
    sp.presence_penalty = 0.05f; /* 1.95 */
    assert_int_equal(draw(l, 3, &sp, prompt, 3, out, 4).token, 0);
    sp.presence_penalty = -0.5f; /* negative favours: 0.5 + 0.5 + ... */
    float l2[3] = {0.0f, 0.3f, 0.0f};
    int32_t o2 = 2;
    assert_int_equal(draw(l2, 3, &sp, NULL, 0, &o2, 1).token, 2);
    /* Exact distribution: frequency 0.4, presence 0.3, counts 3, 1, 0. */
    sp.temperature = 0.9f;
    sp.frequency_penalty = 0.4f;
    sp.presence_penalty = 0.3f;
    float adj[3] = {2.0f - 1.2f - 0.3f, 1.9f, 0.5f - 0.4f - 0.3f};
    double p[3];
    softmax_d(adj, 3, 0.9, NULL, p);
    check_distribution(l, 3, sp, prompt, 3, out, 4, p, 6000);
}

static void test_bias(void **state) {
    (void)state;
    float l[5] = {0.5f, 3.0f, 1.0f, 2.9f, -2.0f};
    eng_sampling sp = neutral();
    sp.temperature = 0;
    int32_t ids[3] = {1, 3, 4};
    float ban[3] = {-INFINITY, -100.0f, 0.0f};
    sp.bias_ids = ids;
    sp.bias_vals = ban;
    sp.n_bias = 3;
    assert_int_equal(draw(l, 5, &sp, NULL, 0, NULL, 0).token, 2);
    sp.temperature = 1.0f;
    double p[5];
    int keep[5] = {1, 0, 1, 0, 1};
    softmax_d(l, 5, 1.0, keep, p);
    check_distribution(l, 5, sp, NULL, 0, NULL, 0, p, 4000);
    float force[3] = {0.0f, 0.0f, 100.0f};
    sp.bias_vals = force;
    sp.temperature = 1.5f;
    for (uint64_t s = 0; s < 300; s++) {
        sp.seed = s;
        eng_seq_result r = draw(l, 5, &sp, NULL, 0, NULL, 0);
        assert_int_equal(r.token, 4);
    }
    /* Ids may repeat and add up; bias + repetition penalty order. */
    int32_t rep[2] = {0, 0};
    float half[2] = {1.5f, 1.5f}; /* 0.5 + 3 = 3.5 > 3.0 */
    sp.bias_ids = rep;
    sp.bias_vals = half;
    sp.n_bias = 2;
    sp.temperature = 0;
    assert_int_equal(draw(l, 5, &sp, NULL, 0, NULL, 0).token, 0);
    sp.repetition_penalty = 1.2f; /* 3.5 / 1.2 = 2.92 < 3.0 */
    int32_t pr = 0;
    assert_int_equal(draw(l, 5, &sp, &pr, 1, NULL, 0).token, 1);
    /* Banning everything falls back to the raw argmax. */
    int32_t all[5] = {0, 1, 2, 3, 4};
    float minf[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    sp.bias_ids = all;
    sp.bias_vals = minf;
    sp.n_bias = 5;
    sp.repetition_penalty = 1;
    sp.temperature = 0.8f;
    assert_int_equal(draw(l, 5, &sp, NULL, 0, NULL, 0).token, 1);
}

/* ---- logprobs ---------------------------------------------------------- */

static void test_logprobs(void **state) {
    (void)state;
    enum { V = 1000 };
    float *l = malloc(V * sizeof *l);
    double *ls = malloc(V * sizeof *ls);
    assert_non_null(l);
    assert_non_null(ls);
    uint64_t x = 0x1234567ull;
    for (int i = 0; i < V; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((double)(x >> 40) / (double)(1u << 24) * 20 - 10);
        if (i % 97 == 5)
            l[i] = l[3]; /* ties */
    }
    double m = -INFINITY, s = 0;
    for (int i = 0; i < V; i++)
        m = l[i] > m ? l[i] : m;
    for (int i = 0; i < V; i++)
        s += exp(l[i] - m);
    for (int i = 0; i < V; i++)
        ls[i] = l[i] - m - log(s);
    eng_sampling sp = neutral();
    sp.temperature = 0.7f;
    sp.repetition_penalty = 1.3f; /* logprobs ignore every adjustment */
    int32_t out[3] = {1, 2, 3};
    for (int n = 0; n <= ENG_MAX_LOGPROBS; n++) {
        sp.n_logprobs = n;
        sp.seed = (uint64_t)n;
        eng_seq_result r = draw(l, V, &sp, NULL, 0, out, 3);
        assert_true(fabs(r.logprob - ls[r.token]) <= 1e-5 * (1 + fabs(ls[r.token])));
        for (int j = 0; j < n; j++) {
            int id = r.top_ids[j];
            assert_in_range(id, 0, V - 1);
            assert_true(fabs(r.top_logprobs[j] - ls[id]) <= 1e-5 * (1 + fabs(ls[id])));
            /* rank: exactly j tokens are strictly better (value, then id) */
            int better = 0;
            for (int i = 0; i < V; i++)
                better += l[i] > l[id] || (l[i] == l[id] && i < id);
            assert_int_equal(better, j);
        }
    }
    free(l);
    free(ls);
}

/* ---- non-finite logits and bad arguments ------------------------------- */

static void test_nonfinite(void **state) {
    (void)state;
    eng_sampling sp = neutral();
    sp.n_logprobs = 3;
    float nan_row[4] = {NAN, NAN, NAN, NAN};
    for (int t = 0; t < 2; t++) {
        sp.temperature = t ? 1.0f : 0.0f;
        eng_seq_result r = draw(nan_row, 4, &sp, NULL, 0, NULL, 0);
        assert_int_equal(r.token, 0);
        assert_true(r.logprob == -INFINITY);
        for (int j = 0; j < 3; j++) {
            assert_int_equal(r.top_ids[j], j);
            assert_true(r.top_logprobs[j] == -INFINITY);
        }
    }
    /* NaN entries are never drawn; the rest keep their relative odds. */
    float some[5] = {NAN, 1.0f, NAN, 0.5f, -INFINITY};
    sp.temperature = 1;
    double p[5] = {0, 0, 0, 0, 0};
    p[1] = 1 / (1 + exp(-0.5));
    p[3] = 1 - p[1];
    check_distribution(some, 5, sp, NULL, 0, NULL, 0, p, 3000);
    sp.temperature = 0;
    assert_int_equal(draw(some, 5, &sp, NULL, 0, NULL, 0).token, 1);
    /* +inf tokens share everything equally; logprob -log 2. */
    float inf_row[4] = {1.0f, INFINITY, 3.0f, INFINITY};
    sp.temperature = 1;
    double pi[4] = {0, 0.5, 0, 0.5};
    check_distribution(inf_row, 4, sp, NULL, 0, NULL, 0, pi, 2000);
    eng_seq_result r = draw(inf_row, 4, &sp, NULL, 0, NULL, 0);
    assert_true(fabs(r.logprob + log(2.0)) < 1e-6);
    assert_int_equal(r.top_ids[0], 1);
    assert_int_equal(r.top_ids[1], 3);
    assert_int_equal(r.top_ids[2], 2);
}

static void test_bad_args(void **state) {
    (void)state;
    float l[4] = {0, 1, 2, 3};
    float scratch[8];
    eng_seq_result r;
    memset(&r, 0, sizeof r);
    r.token = 99;
    eng_sampling sp = neutral();
    int32_t bad = 4;
    assert_int_equal(eng_sample(NULL, 4, &sp, NULL, 0, NULL, 0, scratch, &r), ASA_EINVAL);
    assert_int_equal(eng_sample(l, 0, &sp, NULL, 0, NULL, 0, scratch, &r), ASA_EINVAL);
    assert_int_equal(eng_sample(l, 4, &sp, NULL, 1, NULL, 0, scratch, &r), ASA_EINVAL);
    assert_int_equal(eng_sample(l, 4, &sp, &bad, 1, NULL, 0, scratch, &r), ASA_EINVAL);
    assert_int_equal(eng_sample(l, 4, &sp, NULL, 0, &bad, 1, scratch, &r), ASA_EINVAL);
    assert_int_equal(eng_sample(l, 4, &sp, NULL, 0, NULL, 0, NULL, &r), ASA_EINVAL);
    eng_sampling b = sp;
    b.temperature = -1;
    assert_int_equal(eng_sample(l, 4, &b, NULL, 0, NULL, 0, scratch, &r), ASA_EINVAL);
    b = sp;
    b.top_p = 0;
    assert_int_equal(eng_sample(l, 4, &b, NULL, 0, NULL, 0, scratch, &r), ASA_EINVAL);
    b = sp;
    b.min_p = NAN;
    assert_int_equal(eng_sample(l, 4, &b, NULL, 0, NULL, 0, scratch, &r), ASA_EINVAL);
    b = sp;
    b.repetition_penalty = 0;
    assert_int_equal(eng_sample(l, 4, &b, NULL, 0, NULL, 0, scratch, &r), ASA_EINVAL);
    b = sp;
    b.n_logprobs = ENG_MAX_LOGPROBS + 1;
    assert_int_equal(eng_sample(l, 4, &b, NULL, 0, NULL, 0, scratch, &r), ASA_EINVAL);
    b = sp;
    float v = 1;
    b.bias_ids = &bad;
    b.bias_vals = &v;
    b.n_bias = 1;
    assert_int_equal(eng_sample(l, 4, &b, NULL, 0, NULL, 0, scratch, &r), ASA_EINVAL);
    assert_int_equal(r.token, 99); /* untouched on failure */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_ties),
        cmocka_unit_test(test_temperature_distribution),
        cmocka_unit_test(test_seed_k_determinism),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_combined_order),
        cmocka_unit_test(test_large_vocab_vs_full_sort),
        cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_frequency_presence),
        cmocka_unit_test(test_bias),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
