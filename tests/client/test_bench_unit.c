/* Unit tests for asa-bench's parts: URL, HTTP response parser, SSE parser,
 * percentiles, send schedule, goodput, summary, /metrics parsing. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ---- URL ---- */

static void test_url(void **state) {
    (void)state;
    bench_url u;
    char b[128];
    asa_errbuf eb = {b, sizeof b};
    assert_int_equal(bench_url_parse("http://127.0.0.1:8000", &u, &eb), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_string_equal(u.port, "8000");
    assert_string_equal(u.path, "");
    assert_int_equal(bench_url_parse("http://example.com/api/", &u, &eb), 0);
    assert_string_equal(u.host, "example.com");
    assert_string_equal(u.port, "80");
    assert_string_equal(u.path, "/api");
    assert_int_equal(bench_url_parse("http://[::1]:9/", &u, &eb), 0);
    assert_string_equal(u.host, "::1");
    assert_string_equal(u.port, "9");
    assert_int_equal(bench_url_parse("https://x", &u, &eb), ASA_EINVAL);
    assert_int_equal(bench_url_parse("ftp://x", &u, &eb), ASA_EINVAL);
    assert_int_equal(bench_url_parse("http://x:80a", &u, &eb), ASA_EINVAL);
}

/* ---- HTTP ---- */

typedef struct sink {
    int status, heads;
    char body[4096];
    size_t len;
} sink;

static void s_head(void *ctx, int st) {
    sink *s = ctx;
    s->status = st;
    s->heads++;
}

static void s_body(void *ctx, const char *p, size_t n) {
    sink *s = ctx;
    assert_true(s->len + n < sizeof s->body);
    memcpy(s->body + s->len, p, n);
    s->len += n;
    s->body[s->len] = '\0';
}

static void http_init(bench_http *p, sink *s) {
    memset(p, 0, sizeof *p);
    memset(s, 0, sizeof *s);
    p->cbs.on_head = s_head;
    p->cbs.on_body = s_body;
    p->ctx = s;
    bench_http_reset(p);
}

/* Feeds msg in pieces of `step` bytes; returns the bytes used in total. */
static size_t feed_steps(bench_http *p, const char *msg, size_t n, size_t step) {
    size_t off = 0;
    while (off < n && p->state != BENCH_HTTP_DONE) {
        size_t k = n - off < step ? n - off : step, used = 0;
        assert_int_equal(bench_http_feed(p, msg + off, k, &used), 0);
        off += used;
        if (used < k)
            break;
    }
    return off;
}

static void test_http_chunked_any_split(void **state) {
    (void)state;
    const char msg[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"
                       "5\r\nhello\r\n"
                       "7;ext=1\r\n, world\r\n"
                       "0\r\nX-Trailer: 1\r\n\r\n";
    size_t n = sizeof msg - 1;
    for (size_t step = 1; step <= n; step++) {
        bench_http p;
        sink s;
        http_init(&p, &s);
        assert_int_equal(feed_steps(&p, msg, n, step), n);
        assert_int_equal(p.state, BENCH_HTTP_DONE);
        assert_int_equal(s.status, 200);
        assert_int_equal(s.heads, 1);
        assert_true(p.event_stream);
        assert_true(p.keep_alive);
        assert_string_equal(s.body, "hello, world");
    }
}

static void test_http_length_close_and_pipelined(void **state) {
    (void)state;
    bench_http p;
    sink s;
    /* Content-Length body, then bytes of a next message left unconsumed. */
    const char msg[] = "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 4\r\n"
                       "Connection: close\r\n\r\nbusyHTTP/1.1";
    http_init(&p, &s);
    size_t used = 0;
    assert_int_equal(bench_http_feed(&p, msg, sizeof msg - 1, &used), 0);
    assert_int_equal(used, sizeof msg - 1 - 8);
    assert_int_equal(p.state, BENCH_HTTP_DONE);
    assert_int_equal(s.status, 429);
    assert_false(p.keep_alive);
    assert_string_equal(s.body, "busy");

    /* No length, not chunked: body runs to EOF. */
    const char m2[] = "HTTP/1.0 200 OK\r\n\r\nall of it";
    http_init(&p, &s);
    assert_int_equal(bench_http_feed(&p, m2, sizeof m2 - 1, &used), 0);
    assert_int_equal(p.state, BENCH_HTTP_BODY_EOF);
    assert_int_equal(bench_http_eof(&p), 0);
    assert_string_equal(s.body, "all of it");

    /* A chunked body cut short is an error at EOF. */
    const char m3[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
    http_init(&p, &s);
    assert_int_equal(bench_http_feed(&p, m3, sizeof m3 - 1, &used), 0);
    assert_int_equal(bench_http_eof(&p), ASA_EEOF);

    /* 100 Continue is skipped. */
    const char m4[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    http_init(&p, &s);
    assert_int_equal(bench_http_feed(&p, m4, sizeof m4 - 1, &used), 0);
    assert_int_equal(p.state, BENCH_HTTP_DONE);
    assert_int_equal(s.status, 204);
    assert_int_equal(s.heads, 1);
}

static void test_http_malformed(void **state) {
    (void)state;
    static const char *bad[] = {
        "SPDY/3 200 OK\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bench_http p;
        sink s;
        http_init(&p, &s);
        assert_int_equal(bench_http_feed(&p, bad[i], strlen(bad[i]), NULL), ASA_EFORMAT);
    }
}

/* ---- SSE ---- */

typedef struct evs {
    char ev[16][256];
    int n;
} evs;

static void on_ev(void *ctx, const char *d, size_t n) {
    evs *e = ctx;
    assert_true(e->n < 16);
    assert_int_equal(strlen(d), n);
    snprintf(e->ev[e->n++], 256, "%s", d);
}

static void test_sse_any_split(void **state) {
    (void)state;
    const char stream[] = ": ping\r\n\r\n"
                          "data: {\"a\":1}\n\n"
                          "event: x\r\ndata:two\r\ndata: lines\r\n\r\n"
                          "id: 5\rdata: cr only\r\r"
                          "data\n\n"
                          "data: [DONE]\n\n"
                          "data: partial";
    size_t n = sizeof stream - 1;
    for (size_t step = 1; step <= n; step++) {
        evs e = {0};
        bench_sse s;
        bench_sse_init(&s, on_ev, &e);
        for (size_t off = 0; off < n; off += step)
            assert_int_equal(bench_sse_feed(&s, stream + off, n - off < step ? n - off : step),
                             0);
        assert_int_equal(e.n, 5);
        assert_string_equal(e.ev[0], "{\"a\":1}");
        assert_string_equal(e.ev[1], "two\nlines");
        assert_string_equal(e.ev[2], "cr only");
        assert_string_equal(e.ev[3], "");
        assert_string_equal(e.ev[4], "[DONE]");
        bench_sse_deinit(&s);
    }
}

/* ---- stream events ---- */

static void test_chunks(void **state) {
    (void)state;
    static const struct {
        const char *data;
        int token, error;
        long long out, in;
    } cases[] = {
        {"[DONE]", 0, 0, -1, -1},
        {"{\"id\":\"c\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,"
         "\"text\":\" tok\",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}",
         1, 0, -1, -1},
        {"{\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}", 0, 0,
         -1, -1},
        {"{\"choices\":[{\"index\":0,\"text\":\"\\\"quoted\\\"\"}]}", 1, 0, -1, -1},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}",
         0, 0, -1, -1},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"logprobs\":{\"content\":"
         "[{\"token\":\"Hi\"}]}}]}",
         1, 0, -1, -1},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hmm\"}}]}", 1, 0, -1,
         -1},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t\"}]}}]}",
         1, 0, -1, -1},
        /* two choices: the first is empty, the second is not */
        {"{\"choices\":[{\"index\":0,\"text\":\"\"},{\"index\":1,\"text\":\"x\"}]}", 0, 0,
         -1, -1},
        {"{\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,"
         "\"total_tokens\":17}}",
         0, 0, 5, 12},
        {"{\"choices\":[{\"index\":0,\"text\":\"z\"}],\"usage\":{\"prompt_tokens\":3,"
         "\"completion_tokens\":1}}",
         1, 0, 1, 3},
        {"{\"error\":{\"message\":\"boom\",\"code\":500}}", 0, 1, -1, -1},
        {"{\"choices\":[{\"index\":0,\"text\":\"a\"}],\"error\":null}", 1, 0, -1, -1},
        {"{ \"choices\": [ { \"index\": 0, \"text\": \"spaced\" } ] }", 1, 0, -1, -1},
        {"{\"choices\":[{\"index\":0,\"text\":\"cut", 0, 1, -1, -1},
        {"42", 0, 1, -1, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        bench_chunk a, b;
        const char *d = cases[i].data;
        assert_int_equal(bench_chunk_parse(d, strlen(d), &a), 0);
        assert_int_equal(bench_chunk_parse_full(d, strlen(d), &b), 0);
        if (a.token != cases[i].token || a.error != cases[i].error)
            fprintf(stderr, "case %zu: %s\n", i, d);
        assert_int_equal(a.token, cases[i].token);
        assert_int_equal(a.error, cases[i].error);
        assert_int_equal(a.usage_out, cases[i].out);
        assert_int_equal(a.usage_in, cases[i].in);
        assert_int_equal(a.token, b.token);
        assert_int_equal(a.choice, b.choice);
        if (a.token)
            assert_true(a.choice);
        assert_int_equal(a.error, b.error);
        assert_int_equal(a.done, strcmp(d, "[DONE]") == 0);
        if (a.error)
            assert_non_null(a.err);
        free(a.err);
        free(b.err);
    }
}

/* ---- numbers ---- */

static void test_percentiles_match_numpy(void **state) {
    (void)state;
    double v[] = {4, 1, 3, 2};
    bench_dist d;
    double pcts[] = {50, 99, 25, 100, 0};
    bench_dist_compute(v, 4, pcts, 5, &d);
    /* numpy: mean 2.5, median 2.5, std 1.118034, p99 3.97, p25 1.75 */
    assert_true(fabs(d.mean_ms - 2500) < 1e-9);
    assert_true(fabs(d.median_ms - 2500) < 1e-9);
    assert_true(fabs(d.std_ms - 1118.033988749895) < 1e-6);
    assert_true(fabs(d.pct_ms[0] - 2500) < 1e-9);
    assert_true(fabs(d.pct_ms[1] - 3970) < 1e-9);
    assert_true(fabs(d.pct_ms[2] - 1750) < 1e-9);
    assert_true(fabs(d.pct_ms[3] - 4000) < 1e-9);
    assert_true(fabs(d.pct_ms[4] - 1000) < 1e-9);
    bench_dist_compute(v, 0, pcts, 5, &d);
    assert_true(d.mean_ms == 0 && d.pct_ms[1] == 0);
}

static void test_schedule_normalised(void **state) {
    (void)state;
    bench_rng r;
    double t[1000];
    bench_rng_seed(&r, 1);
    assert_int_equal(bench_schedule(1000, 8.0, 1.0, &r, t), 0);
    assert_true(fabs(t[999] - 125.0) < 1e-9); /* n / rate */
    for (int i = 1; i < 1000; i++)
        assert_true(t[i] >= t[i - 1]);
    /* Exponential gaps: coefficient of variation near 1; gamma shape 4: 1/2. */
    double cv[2];
    double shapes[2] = {1.0, 4.0};
    for (int s = 0; s < 2; s++) {
        bench_rng_seed(&r, 42);
        double sum = 0, sq = 0;
        int n = 20000;
        for (int i = 0; i < n; i++) {
            double g = bench_schedule_gap(10.0, shapes[s], &r);
            sum += g;
            sq += g * g;
        }
        double mean = sum / n, var = sq / n - mean * mean;
        assert_true(fabs(mean - 0.1) < 0.003);
        cv[s] = sqrt(var) / mean;
    }
    assert_true(fabs(cv[0] - 1.0) < 0.05);
    assert_true(fabs(cv[1] - 0.5) < 0.03);
    /* Bursty (shape 0.25) still has the right mean. */
    bench_rng_seed(&r, 3);
    double sum = 0;
    for (int i = 0; i < 40000; i++)
        sum += bench_rng_gamma(&r, 0.25, 2.0);
    assert_true(fabs(sum / 40000 - 0.5) < 0.03);
    /* Infinite rate: all at once; infinite burstiness: constant gaps. */
    assert_int_equal(bench_schedule(5, INFINITY, 1.0, &r, t), 0);
    assert_true(t[4] == 0.0);
    assert_int_equal(bench_schedule(5, 2.0, INFINITY, &r, t), 0);
    assert_true(fabs(t[0] - 0.5) < 1e-12 && fabs(t[4] - 2.5) < 1e-12);
    assert_int_equal(bench_schedule(5, 2.0, 0.0, &r, t), ASA_EINVAL);
}

static void test_goodput_parse(void **state) {
    (void)state;
    bench_goodput g = {0};
    char b[128];
    asa_errbuf eb = {b, sizeof b};
    assert_int_equal(bench_goodput_parse(&g, "ttft:50 tpot:20.5", &eb), 0);
    assert_int_equal(bench_goodput_parse(&g, "e2el:1000", &eb), 0);
    assert_true(g.enabled && g.ttft_ms == 50 && g.tpot_ms == 20.5 && g.e2el_ms == 1000);
    bench_goodput h = {0};
    assert_int_equal(bench_goodput_parse(&h, "itl:5", &eb), ASA_EINVAL);
    assert_int_equal(bench_goodput_parse(&h, "ttft", &eb), ASA_EINVAL);
    assert_int_equal(bench_goodput_parse(&h, "ttft:-1", &eb), ASA_EINVAL);
}

static bench_result mk(double start, double ttft, int n_tok, double gap, int64_t in) {
    bench_result r = {0};
    r.success = 1;
    r.start = start;
    r.ttft = ttft;
    for (int i = 1; i < n_tok; i++)
        assert_int_equal(bench_result_push_itl(&r, gap), 0);
    r.latency = ttft + gap * (n_tok - 1);
    r.output_tokens = n_tok;
    r.chunks = n_tok;
    r.prompt_len = in;
    return r;
}

static void test_summarize(void **state) {
    (void)state;
    bench_result r[4];
    r[0] = mk(0.0, 0.1, 11, 0.01, 5);  /* [0, 0.2) */
    r[1] = mk(0.05, 0.2, 3, 0.05, 7);  /* [0.05, 0.35) */
    r[2] = mk(0.3, 0.1, 1, 0.0, 9);    /* [0.3, 0.4): one token, no TPOT */
    r[3] = (bench_result){0};          /* failed */
    r[3].error = strdup("HTTP 500");
    double pcts[] = {50};
    bench_goodput g = {.ttft_ms = 150, .tpot_ms = -1, .e2el_ms = -1, .enabled = 1};
    bench_summary s;
    assert_int_equal(bench_summarize(r, 4, 2.0, pcts, 1, &g, &s), 0);
    assert_int_equal(s.completed, 3);
    assert_int_equal(s.failed, 1);
    assert_int_equal(s.total_input, 21);
    assert_int_equal(s.total_output, 15);
    assert_true(fabs(s.request_throughput - 1.5) < 1e-12);
    assert_true(fabs(s.output_throughput - 7.5) < 1e-12);
    assert_true(fabs(s.total_token_throughput - 18.0) < 1e-12);
    assert_true(fabs(s.request_goodput - 1.0) < 1e-12); /* TTFT 0.1, 0.1 pass; 0.2 fails */
    assert_int_equal(s.max_concurrent_requests, 2);
    assert_true(s.max_output_tokens_per_s == 15); /* all in the first second */
    /* TPOT: 0.01 and 0.05 -> mean 30 ms; ITL: 10 x 10 ms + 2 x 50 ms */
    assert_true(fabs(s.tpot.mean_ms - 30.0) < 1e-9);
    assert_true(fabs(s.itl.mean_ms - (100.0 + 100.0) / 12.0) < 1e-9);
    assert_true(fabs(s.ttft.median_ms - 100.0) < 1e-9);
    for (int i = 0; i < 4; i++)
        bench_result_deinit(&r[i]);
}

static void test_prom(void **state) {
    (void)state;
    const char *txt =
        "# HELP asa:num_preemptions_total x\n"
        "# TYPE asa:num_preemptions_total counter\n"
        "asa:num_preemptions_total{engine=\"0\",model_name=\"m\"} 3.0\n"
        "asa:num_preemptions_total{engine=\"1\",model_name=\"a}b\"} 4\n"
        "asa:num_preemptions_created 1.7e9\n"
        "vllm:request_queue_time_seconds_sum{model_name=\"m\"} 1.5\n"
        "vllm:request_queue_time_seconds_count{model_name=\"m\"} 6\n"
        "vllm:request_queue_time_seconds_bucket{le=\"0.3\"} 2\n";
    double v = 0;
    assert_int_equal(bench_prom_sum(txt, "num_preemptions_total", &v), 1);
    assert_true(v == 7.0);
    assert_int_equal(bench_prom_sum(txt, "missing_total", &v), 0);
    bench_prom p;
    bench_prom_parse(txt, &p);
    assert_true(p.ok && p.have_preempt && p.have_queue);
    assert_true(p.queue_sum == 1.5 && p.queue_count == 6 && p.preemptions == 7);
}

static void test_request_bytes(void **state) {
    (void)state;
    bench_config c;
    memset(&c, 0, sizeof c);
    char b[128];
    asa_errbuf eb = {b, sizeof b};
    assert_int_equal(bench_url_parse("http://h:1/base", &c.url, &eb), 0);
    c.model = "m";
    c.endpoint_path = "/v1/completions";
    c.api_key = "sk-1";
    c.ignore_eos = 1;
    c.extra_body = "{\"temperature\":0}";
    json_t *ids = json_pack("[i,i]", 5, 6);
    char *req;
    size_t len;
    assert_int_equal(bench_request_build(&c, ids, 7, &req, &len, &eb), 0);
    const char *body = strstr(req, "\r\n\r\n");
    assert_non_null(body);
    assert_true(strncmp(req, "POST /base/v1/completions HTTP/1.1\r\n", 36) == 0);
    assert_non_null(strstr(req, "Authorization: Bearer sk-1\r\n"));
    json_t *o = json_loads(body + 4, 0, NULL);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "max_tokens")), 7);
    assert_true(json_is_true(json_object_get(o, "stream")));
    assert_true(json_is_true(
        json_object_get(json_object_get(o, "stream_options"), "include_usage")));
    assert_true(json_is_true(json_object_get(o, "ignore_eos")));
    assert_int_equal(json_array_size(json_object_get(o, "prompt")), 2);
    assert_non_null(json_object_get(o, "temperature"));
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(body + 4));
    assert_non_null(strstr(req, cl));
    json_decref(o);
    free(req);
    c.endpoint = BENCH_EP_CHAT;
    assert_int_equal(bench_request_build(&c, ids, 7, &req, &len, &eb), ASA_EINVAL);
    json_decref(ids);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_http_chunked_any_split),
        cmocka_unit_test(test_http_length_close_and_pipelined),
        cmocka_unit_test(test_http_malformed),
        cmocka_unit_test(test_sse_any_split),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_percentiles_match_numpy),
        cmocka_unit_test(test_schedule_normalised),
        cmocka_unit_test(test_goodput_parse),
        cmocka_unit_test(test_summarize),
        cmocka_unit_test(test_prom),
        cmocka_unit_test(test_request_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
