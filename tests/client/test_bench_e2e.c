/* asa-bench against the scripted server: result fields, report layout,
 * failure detection, /metrics deltas, chat, text prompts, datasets, send
 * schedules, --duration, goodput, an unreachable server. */
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

#include "harness.h"

#define RUN(port, ...)                                                        \
    h_bench_run((port), (const char *const[]){__VA_ARGS__, NULL}, 60.0, &out, &err)

static h_server start(const char *const *args) {
    h_server s;
    assert_int_equal(h_server_start(&s, args), 0);
    return s;
}

static void test_fields_and_layout(void **state) {
    (void)state;
    h_server s = start((const char *const[]){"--ttft-ms", "20", "--itl-ms", "5", NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("fields.json", 1);
    int rc = RUN(s.port, "--num-prompts", "20", "--max-concurrency", "5", "--input-len", "32",
                 "--output-len", "16", "--percentiles", "50,90,99.9", "--result-json", rj,
                 "--goodput", "ttft:1000", "tpot:1000");
    h_server_stop(&s);
    assert_int_equal(rc, 0);

    /* The printed block, in vLLM's layout. */
    static const char *lines[] = {
        "============ Serving Benchmark Result ============\n",
        "Successful requests:                     20        \n",
        "Failed requests:                         0         \n",
        "Maximum request concurrency:             5         \n",
        "Benchmark duration (s):",
        "Total input tokens:                      640       \n",
        "Total generated tokens:                  320       \n",
        "Request throughput (req/s):",
        "Request goodput (req/s):",
        "Output token throughput (tok/s):",
        "Peak output token throughput (tok/s):",
        "Peak concurrent requests:",
        "Total token throughput (tok/s):",
        "---------------Time to First Token----------------\n",
        "Mean TTFT (ms):", "Median TTFT (ms):", "P50 TTFT (ms):", "P90 TTFT (ms):",
        "P99.9 TTFT (ms):",
        "-----Time per Output Token (excl. 1st token)------\n",
        "Mean TPOT (ms):",
        "---------------Inter-token Latency----------------\n",
        "Median ITL (ms):",
        "----------------End-to-end Latency----------------\n",
        "P99.9 E2EL (ms):",
        "Preemptions:",
        "Mean queue time (ms):",
        "-----Client read lag (asa-bench's own delay)------\n",
        "Median read lag (ms):", "P99 read lag (ms):", "Max read lag (ms):",
        "==================================================\n",
    };
    const char *at = out;
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        const char *f = strstr(at, lines[i]);
        if (!f)
            fprintf(stderr, "missing or out of order: '%s'\n", lines[i]);
        assert_non_null(f);
        at = f;
    }

    json_t *j = h_load_json(rj);
    assert_non_null(j);
    static const char *nums[] = {
        "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
        "request_throughput", "request_goodput", "output_throughput",
        "total_token_throughput", "max_output_tokens_per_s", "max_concurrent_requests",
        "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p50_ttft_ms", "p90_ttft_ms",
        "p99.9_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99.9_tpot_ms", "mean_itl_ms",
        "median_itl_ms", "p99.9_itl_ms", "mean_e2el_ms", "median_e2el_ms", "p99.9_e2el_ms",
        "server_num_preemptions", "server_request_queue_time_sum_s",
        "server_request_queue_count", "server_mean_request_queue_time_ms",
        "client_read_lag_median_ms", "client_read_lag_p99_ms", "client_read_lag_max_ms",
        "client_merged_reads",
    };
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++)
        (void)h_num(j, nums[i]);
    assert_true(h_num(j, "completed") == 20);
    assert_true(h_num(j, "failed") == 0);
    assert_true(h_num(j, "total_input_tokens") == 640);
    assert_true(h_num(j, "total_output_tokens") == 320);
    assert_true(h_num(j, "max_concurrent_requests") <= 5);
    assert_true(h_num(j, "max_concurrent_requests") >= 4);
    assert_true(fabs(h_num(j, "request_goodput") - h_num(j, "request_throughput")) < 1e-9);
    assert_true(h_num(j, "server_request_queue_count") == 20);
    assert_string_equal(json_string_value(json_object_get(j, "receive_clock")), "kernel");
    double dur = h_num(j, "duration");
    assert_true(fabs(h_num(j, "output_throughput") - 320 / dur) < 1e-6);

    static const char *arrays[] = {"ttfts", "itls", "input_lens", "output_lens", "errors",
                                   "latencies", "start_times", "queue_times", "tpots"};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) {
        json_t *a = json_object_get(j, arrays[i]);
        assert_true(json_is_array(a));
        assert_int_equal(json_array_size(a), 20);
    }
    /* 20 requests at once, 5 slots: the later ones waited for a slot, and that
     * wait is their queue time, not part of their TTFT. */
    json_t *qt = json_object_get(j, "queue_times");
    assert_true(json_real_value(json_array_get(qt, 19)) > 0.05);
    assert_true(json_real_value(json_array_get(qt, 0)) < json_real_value(json_array_get(qt, 19)));
    assert_true(json_real_value(json_array_get(json_object_get(j, "ttfts"), 19)) <
                json_real_value(json_array_get(qt, 19)));
    for (size_t i = 0; i < 20; i++) {
        assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "input_lens"), i)),
                         32);
        assert_int_equal(
            json_integer_value(json_array_get(json_object_get(j, "output_lens"), i)), 16);
        assert_int_equal(json_array_size(json_array_get(json_object_get(j, "itls"), i)), 15);
        assert_string_equal(
            json_string_value(json_array_get(json_object_get(j, "errors"), i)), "");
    }
    json_decref(j);
    free(out);
    free(err);
}

static int expect_fail(int n, int e500, int e429, int echunk, int ecut) {
    return n % e500 == 0 || n % e429 == 0 || n % echunk == 0 || n % ecut == 0;
}

static void test_failures(void **state) {
    (void)state;
    h_server s = start((const char *const[]){"--ttft-ms", "5", "--itl-ms", "2",
                                             "--http500-every", "7", "--http429-every", "11",
                                             "--error-chunk-every", "4", "--cut-every", "5",
                                             NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("fail.json", 1);
    int rc = RUN(s.port, "--num-prompts", "40", "--max-concurrency", "4", "--input-len", "8",
                 "--output-len", "8", "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    int expected = 0;
    for (int n = 1; n <= 40; n++)
        expected += expect_fail(n, 7, 11, 4, 5);
    json_t *j = h_load_json(rj);
    assert_non_null(j);
    assert_true(h_num(j, "failed") == expected);
    assert_true(h_num(j, "completed") == 40 - expected);
    int saw500 = 0, saw429 = 0, sawchunk = 0, sawcut = 0;
    json_t *errs = json_object_get(j, "errors");
    for (size_t i = 0; i < json_array_size(errs); i++) {
        const char *e = json_string_value(json_array_get(errs, i));
        saw500 |= strstr(e, "HTTP 500") != NULL;
        saw429 |= strstr(e, "HTTP 429") != NULL;
        sawchunk |= strstr(e, "scripted error") != NULL;
        sawcut |= strstr(e, "before [DONE]") != NULL;
    }
    assert_true(saw500 && saw429 && sawchunk && sawcut);
    assert_non_null(strstr(out, "Failed requests during benchmark run detected"));
    assert_non_null(strstr(out, "Error 0 (request"));
    json_decref(j);
    free(out);
    free(err);
}

static void metrics_case(const char *prefix) {
    h_server s = start((const char *const[]){"--ttft-ms", "5", "--itl-ms", "1", "--prefix",
                                             prefix, "--preempt-every", "2", "--queue-ms",
                                             "5", NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("metrics.json", 1);
    /* The warmup requests happen before the first scrape: not in the deltas. */
    int rc = RUN(s.port, "--num-prompts", "10", "--warmup", "3", "--input-len", "4",
                 "--output-len", "4", "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    json_t *j = h_load_json(rj);
    assert_non_null(j);
    /* server requests 4..13 are measured: preemptions at 4,6,8,10,12 */
    assert_true(h_num(j, "server_num_preemptions") == 5);
    assert_true(h_num(j, "server_request_queue_count") == 10);
    assert_true(fabs(h_num(j, "server_request_queue_time_sum_s") - 0.05) < 1e-6);
    assert_true(fabs(h_num(j, "server_mean_request_queue_time_ms") - 5.0) < 1e-6);
    assert_non_null(strstr(out, "Preemptions:                             5 "));
    json_decref(j);
    free(out);
    free(err);
}

static void test_metrics_asa(void **state) {
    (void)state;
    metrics_case("asa");
}

static void test_metrics_vllm(void **state) {
    (void)state;
    metrics_case("vllm");
}

static void test_chat_text(void **state) {
    (void)state;
    h_server s = start((const char *const[]){"--ttft-ms", "30", "--itl-ms", "5", NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("chat.json", 1);
    int rc = RUN(s.port, "--endpoint", "chat", "--num-prompts", "6", "--input-len", "40",
                 "--output-len", "10", "--range-ratio", "0.5", "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    json_t *j = h_load_json(rj);
    assert_non_null(j);
    assert_true(h_num(j, "completed") == 6);
    /* The role chunk (empty content) arrives at once; TTFT is the first token. */
    assert_true(h_num(j, "median_ttft_ms") >= 29.0);
    json_t *il = json_object_get(j, "input_lens");
    json_t *ol = json_object_get(j, "output_lens");
    for (size_t i = 0; i < 6; i++) {
        json_int_t in = json_integer_value(json_array_get(il, i));
        json_int_t o = json_integer_value(json_array_get(ol, i));
        assert_true(in >= 20 && in <= 60); /* text built to length via /tokenize */
        assert_true(o >= 5 && o <= 15);
    }
    json_decref(j);
    free(out);
    free(err);
}

static void test_tokenize_fallback(void **state) {
    (void)state;
    h_server s = start((const char *const[]){"--ttft-ms", "5", "--itl-ms", "1",
                                             "--no-tokenize", NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("fallback.json", 1);
    int rc = RUN(s.port, "--num-prompts", "4", "--input-len", "16", "--output-len", "4",
                 "--result-json", rj);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(err, "falling back to text prompts"));
    json_t *j = h_load_json(rj);
    assert_true(h_num(j, "completed") == 4);
    json_decref(j);
    free(out);
    free(err);
    /* With --vocab-size the token ids need no /tokenize. */
    rc = RUN(s.port, "--num-prompts", "4", "--input-len", "16", "--output-len", "4",
             "--vocab-size", "500", "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    assert_null(strstr(err, "falling back"));
    j = h_load_json(rj);
    assert_true(h_num(j, "total_input_tokens") == 64);
    json_decref(j);
    free(out);
    free(err);
}

static void test_dataset_no_usage(void **state) {
    (void)state;
    const char *ds = h_tmp("data.jsonl", 2);
    FILE *f = fopen(ds, "w");
    assert_non_null(f);
    fputs("{\"prompt\": \"one two three\", \"output_len\": 3}\n"
          "\n"
          "{\"prompt\": [5, 6, 7, 8, 9], \"output_len\": 5}\n"
          "{\"prompt\": \"four five\"}\n",
          f);
    fclose(f);
    h_server s = start((const char *const[]){"--ttft-ms", "5", "--itl-ms", "1", "--no-usage",
                                             NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("dataset.json", 1);
    int rc = RUN(s.port, "--dataset", ds, "--num-prompts", "6", "--output-len", "7",
                 "--max-concurrency", "1", "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    json_t *j = h_load_json(rj);
    assert_non_null(j);
    /* Without a usage chunk the output length is the number of token chunks. */
    static const int want[] = {3, 5, 7, 3, 5, 7};
    json_t *ol = json_object_get(j, "output_lens");
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(json_integer_value(json_array_get(ol, i)), want[i]);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "input_lens"), 1)), 5);
    json_decref(j);
    free(out);
    free(err);
}

static void test_bad_dataset(void **state) {
    (void)state;
    const char *ds = h_tmp("bad.jsonl", 2);
    FILE *f = fopen(ds, "w");
    assert_non_null(f);
    fputs("{\"text\": \"no prompt key\"}\n", f);
    fclose(f);
    h_server s = start(NULL);
    char *out = NULL, *err = NULL;
    int rc = RUN(s.port, "--dataset", ds, "--num-prompts", "2");
    h_server_stop(&s);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err, ":1: each line must be a JSON object"));
    free(out);
    free(err);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Send times are never early, and late only by scheduling noise (--realtime
 * keeps that small on a busy machine where it is allowed). */
static void test_schedule(void **state) {
    (void)state;
    h_server s = start((const char *const[]){"--ttft-ms", "2", "--itl-ms", "1", NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("rate.json", 1);
    /* Poisson arrivals normalised so the last one leaves at n / rate = 0.5 s. */
    int rc = RUN(s.port, "--num-prompts", "25", "--request-rate", "50", "--seed", "7",
                 "--input-len", "4", "--output-len", "2", "--realtime", "--result-json", rj);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "Request rate configured (RPS):           50.00"));
    json_t *j = h_load_json(rj);
    json_t *st = json_object_get(j, "start_times");
    double last = json_real_value(json_array_get(st, 24));
    assert_true(last > 0.499 && last < 0.7);
    for (size_t i = 1; i < 25; i++)
        assert_true(json_real_value(json_array_get(st, i)) >=
                    json_real_value(json_array_get(st, i - 1)));
    json_decref(j);
    free(out);
    free(err);
    /* Infinite burstiness: evenly spaced, 1 / rate apart. */
    rc = RUN(s.port, "--num-prompts", "10", "--request-rate", "20", "--burstiness", "inf",
             "--input-len", "4", "--output-len", "2", "--realtime", "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    j = h_load_json(rj);
    st = json_object_get(j, "start_times");
    double late[10];
    for (size_t i = 0; i < 10; i++) {
        late[i] = json_real_value(json_array_get(st, i)) - 0.05 * (double)(i + 1);
        assert_true(late[i] > -0.001);
    }
    qsort(late, 10, sizeof *late, cmp_d);
    assert_true(late[5] < 0.05);
    json_decref(j);
    free(out);
    free(err);
}

static void test_duration(void **state) {
    (void)state;
    h_server s = start((const char *const[]){"--ttft-ms", "10", "--itl-ms", "5", NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("duration.json", 1);
    int rc = RUN(s.port, "--duration", "1", "--max-concurrency", "3", "--input-len", "4",
                 "--output-len", "10", "--num-prompts", "5", "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    json_t *j = h_load_json(rj);
    /* Each request takes ~55 ms, 3 at a time, for one second. */
    double done = h_num(j, "completed");
    assert_true(done >= 10 && done <= 60);
    assert_true(h_num(j, "failed") == 0);
    json_t *st = json_object_get(j, "start_times");
    for (size_t i = 0; i < json_array_size(st); i++)
        assert_true(json_real_value(json_array_get(st, i)) < 1.0);
    assert_true(h_num(j, "max_concurrent_requests") == 3);
    json_decref(j);
    free(out);
    free(err);
}

static void test_goodput_slo(void **state) {
    (void)state;
    h_server s = start((const char *const[]){"--ttft-ms", "20", "--itl-ms", "2", NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("goodput.json", 1);
    int rc = RUN(s.port, "--num-prompts", "5", "--input-len", "4", "--output-len", "4",
                 "--goodput", "ttft:5", "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    json_t *j = h_load_json(rj);
    assert_true(h_num(j, "request_goodput") == 0); /* every TTFT misses 5 ms */
    json_decref(j);
    free(out);
    free(err);
}

/* The server drops every connection after its response without saying so:
 * requests sent on such a connection are re-sent on a new one, not failed. */
static void test_stale_keepalive(void **state) {
    (void)state;
    h_server s = start((const char *const[]){"--ttft-ms", "3", "--itl-ms", "1", "--close-idle",
                                             NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("stale.json", 1);
    int rc = RUN(s.port, "--num-prompts", "30", "--max-concurrency", "3", "--input-len", "4",
                 "--output-len", "4", "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    json_t *j = h_load_json(rj);
    assert_true(h_num(j, "completed") == 30);
    assert_true(h_num(j, "failed") == 0);
    json_decref(j);
    free(out);
    free(err);
}

/* Streams whose chunks all carry empty text still count, timed by those
 * chunks; output tokens come from usage. */
static void test_empty_text(void **state) {
    (void)state;
    h_server s = start((const char *const[]){"--ttft-ms", "15", "--itl-ms", "2", "--empty-text",
                                             NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("empty.json", 1);
    int rc = RUN(s.port, "--num-prompts", "4", "--input-len", "4", "--output-len", "6",
                 "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    json_t *j = h_load_json(rj);
    assert_true(h_num(j, "completed") == 4);
    assert_true(h_num(j, "total_output_tokens") == 24);
    assert_true(h_num(j, "median_ttft_ms") >= 14.0);
    assert_true(h_num(j, "median_e2el_ms") >= 24.0);
    json_decref(j);
    free(out);
    free(err);
}

/* Ctrl-C: sending stops, the requests in flight finish, the report covers
 * what was sent. */
static void test_interrupt(void **state) {
    (void)state;
    h_server s = start((const char *const[]){"--ttft-ms", "50", "--itl-ms", "20", NULL});
    char *out = NULL, *err = NULL;
    const char *rj = h_tmp("int.json", 1);
    h_interrupt_after = 1.0;
    int rc = RUN(s.port, "--num-prompts", "400", "--max-concurrency", "20", "--input-len", "4",
                 "--output-len", "30", "--result-json", rj);
    h_server_stop(&s);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(err, "interrupted: sending no more"));
    json_t *j = h_load_json(rj);
    double done = h_num(j, "completed");
    assert_true(done >= 20 && done < 400);
    assert_true(h_num(j, "failed") == 0);
    assert_int_equal(json_array_size(json_object_get(j, "ttfts")), (size_t)done);
    json_decref(j);
    free(out);
    free(err);
}

static void test_unreachable(void **state) {
    (void)state;
    /* Start and stop a server to get a port nobody listens on. */
    h_server s = start(NULL);
    int port = s.port;
    h_server_stop(&s);
    char *out = NULL, *err = NULL;
    int rc = RUN(port, "--num-prompts", "2");
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err, "cannot reach the server at http://127.0.0.1:"));
    assert_non_null(strstr(err, "Connection refused"));
    free(out);
    free(err);
    rc = h_bench_run(0, (const char *const[]){"--base-url", "https://127.0.0.1:1", NULL}, 10,
                     &out, &err);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(err, "https is not supported"));
    free(out);
    free(err);
}

int main(int argc, char **argv) {
    if (h_init(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_and_layout),
        cmocka_unit_test(test_failures),
        cmocka_unit_test(test_metrics_asa),
        cmocka_unit_test(test_metrics_vllm),
        cmocka_unit_test(test_chat_text),
        cmocka_unit_test(test_tokenize_fallback),
        cmocka_unit_test(test_dataset_no_usage),
        cmocka_unit_test(test_bad_dataset),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_goodput_slo),
        cmocka_unit_test(test_stale_keepalive),
        cmocka_unit_test(test_empty_text),
        cmocka_unit_test(test_interrupt),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
