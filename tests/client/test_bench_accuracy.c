/* Timing accuracy of asa-bench against the scripted server, whose tokens
 * leave on a known timetable (TTFT, then one token every ITL).  asa-bench
 * must report that timetable within 1 ms (median) at 1 and at 500
 * concurrent streams; the "sustain" mode checks 2,000 streams for ITL drift.
 *
 * argv: ASA_BENCH SCRIPTED_SERVER accuracy|sustain */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "harness.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct acc_case {
    int streams, requests, tokens;
    double ttft_ms, itl_ms;
    const char *rate; /* --request-rate, evenly spaced (burstiness inf) */
} acc_case;

/* Runs one case; returns the result JSON (caller frees). */
static json_t *run_case(const acc_case *k) {
    char ttft[32], itl[32], n[32], conc[32], tok[32];
    snprintf(ttft, sizeof ttft, "%g", k->ttft_ms);
    snprintf(itl, sizeof itl, "%g", k->itl_ms);
    snprintf(n, sizeof n, "%d", k->requests);
    snprintf(conc, sizeof conc, "%d", k->streams);
    snprintf(tok, sizeof tok, "%d", k->tokens);
    h_server s;
    assert_int_equal(h_server_start(&s, (const char *const[]){"--ttft-ms", ttft, "--itl-ms",
                                                              itl, "--realtime", NULL}),
                     0);
    const char *rj = h_tmp("acc.json", 1);
    char *out = NULL, *err = NULL;
    int rc = h_bench_run(s.port,
                         (const char *const[]){"--request-rate", k->rate, "--burstiness", "inf",
                                               "--num-prompts", n, "--max-concurrency", conc,
                                               "--input-len", "16", "--output-len", tok,
                                               "--vocab-size", "1000", "--realtime", "--percentiles",
                                               "50,90,99", "--result-json", rj, NULL},
                         180.0, &out, &err);
    h_server_stop(&s);
    free(out);
    free(err);
    assert_int_equal(rc, 0);
    json_t *j = h_load_json(rj);
    assert_non_null(j);
    assert_true(h_num(j, "completed") == k->requests);
    assert_true(h_num(j, "failed") == 0);
    return j;
}

/* strict: TTFT and E2EL too (the 1- and 500-stream cases); otherwise the
 * per-token numbers only (ITL, TPOT). */
static void check_medians(json_t *j, const acc_case *k, int strict) {
    double e2el = k->ttft_ms + k->itl_ms * (k->tokens - 1);
    double m_ttft = h_num(j, "median_ttft_ms"), m_itl = h_num(j, "median_itl_ms");
    double m_tpot = h_num(j, "median_tpot_ms"), m_e2el = h_num(j, "median_e2el_ms");
    printf("streams %d: median TTFT %.3f ms (want %.1f), ITL %.3f (%.1f), TPOT %.3f, "
           "E2EL %.3f (%.1f); p99 TTFT %.3f, p99 ITL %.3f\n",
           k->streams, m_ttft, k->ttft_ms, m_itl, k->itl_ms, m_tpot, m_e2el, e2el,
           h_num(j, "p99_ttft_ms"), h_num(j, "p99_itl_ms"));
    assert_true(fabs(m_itl - k->itl_ms) <= 1.0);
    assert_true(fabs(m_tpot - k->itl_ms) <= 1.0);
    if (!strict)
        return;
    assert_true(fabs(m_ttft - k->ttft_ms) <= 1.0);
    assert_true(fabs(m_e2el - e2el) <= 1.0);
    assert_true(h_num(j, "max_concurrent_requests") == k->streams);
}

static void test_one_stream(void **state) {
    (void)state;
    acc_case k = {.streams = 1, .requests = 9, .tokens = 32, .ttft_ms = 50, .itl_ms = 20,
                  .rate = "inf"};
    json_t *j = run_case(&k);
    check_medians(j, &k, 1);
    json_decref(j);
}

/* The 500 requests go out 1 ms apart and each streams for 1.31 s, so all
 * 500 are in flight together from 0.5 s to 1.31 s.  (Sent all at once, the
 * scripted server itself falls behind its timetable for the first tokens:
 * emitting a chunk costs it more than sending a request costs the client.) */
static void test_500_streams(void **state) {
    (void)state;
    acc_case k = {.streams = 500, .requests = 500, .tokens = 64, .ttft_ms = 50,
                  .itl_ms = 20, .rate = "1000"};
    json_t *j = run_case(&k);
    check_medians(j, &k, 1);
    json_decref(j);
}

/* 2,000 streams from one client: the median ITL must not drift between the
 * start and the end of the streams. */
static void test_2000_streams(void **state) {
    (void)state;
    acc_case k = {.streams = 2000, .requests = 2000, .tokens = 40, .ttft_ms = 100,
                  .itl_ms = 50, .rate = "inf"};
    json_t *j = run_case(&k);
    check_medians(j, &k, 0);
    json_t *itls = json_object_get(j, "itls");
    size_t n = json_array_size(itls);
    double *early = malloc(n * 10 * sizeof *early), *late = malloc(n * 10 * sizeof *late);
    assert_non_null(early);
    assert_non_null(late);
    size_t ne = 0, nl = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(itls, i);
        size_t m = json_array_size(a);
        for (size_t t = 0; t < 10 && t < m; t++) {
            early[ne++] = json_real_value(json_array_get(a, t)) * 1000.0;
            late[nl++] = json_real_value(json_array_get(a, m - 1 - t)) * 1000.0;
        }
    }
    double me = median(early, ne), ml = median(late, nl);
    printf("2000 streams: median ITL of the first 10 gaps %.3f ms, of the last 10 %.3f ms\n",
           me, ml);
    assert_true(fabs(me - k.itl_ms) <= 1.0);
    assert_true(fabs(ml - k.itl_ms) <= 1.0);
    free(early);
    free(late);
    json_decref(j);
}

int main(int argc, char **argv) {
    if (h_init(argc, argv) != 0)
        return 2;
    const char *mode = argc > 3 ? argv[3] : "accuracy";
    if (strcmp(mode, "sustain") == 0) {
        /* The client and the server each hold 2,000 sockets. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY &&
            rl.rlim_max < 2200) {
            printf("open-file hard limit %llu < 2200: cannot hold 2,000 streams; skipped\n",
                   (unsigned long long)rl.rlim_max);
            return 77;
        }
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_2000_streams)};
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_stream),
        cmocka_unit_test(test_500_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
