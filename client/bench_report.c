/* client/bench_report.c - the printed result block (same layout as
 * `vllm bench serve`) and the result JSON (same field names). */
#define _GNU_SOURCE
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* "{s:{c}^{n}}" with n = 50: centred, the odd pad going right. */
static void rule(FILE *f, const char *title, char c) {
    int n = 50, l = (int)strlen(title);
    int pad = n - l > 0 ? n - l : 0, left = pad / 2, right = pad - left;
    for (int i = 0; i < left; i++)
        fputc(c, f);
    fputs(title, f);
    for (int i = 0; i < right; i++)
        fputc(c, f);
    fputc('\n', f);
}

static void row_i(FILE *f, const char *label, long long v) {
    fprintf(f, "%-40s %-10lld\n", label, v);
}
static void row_f(FILE *f, const char *label, double v) {
    fprintf(f, "%-40s %-10.2f\n", label, v);
}

/* "99" for 99.0, "99.9" for 99.9 (as vLLM names the keys). */
static void pct_word(double p, char *buf, size_t n) {
    if (p == floor(p))
        snprintf(buf, n, "%d", (int)p);
    else
        snprintf(buf, n, "%g", p);
}

static void dist_block(FILE *f, const bench_summary *s, const char *header,
                       const char *name, const bench_dist *d) {
    char label[64], pw[16];
    rule(f, header, '-');
    snprintf(label, sizeof label, "Mean %s (ms):", name);
    row_f(f, label, d->mean_ms);
    snprintf(label, sizeof label, "Median %s (ms):", name);
    row_f(f, label, d->median_ms);
    for (size_t i = 0; i < s->n_pcts; i++) {
        pct_word(s->pcts[i], pw, sizeof pw);
        snprintf(label, sizeof label, "P%s %s (ms):", pw, name);
        row_f(f, label, d->pct_ms[i]);
    }
}

void bench_report_print(FILE *f, const bench_config *c, const bench_summary *s,
                        const bench_run_out *o, const bench_prom *before,
                        const bench_prom *after) {
    rule(f, " Serving Benchmark Result ", '=');
    row_i(f, "Successful requests:", (long long)s->completed);
    row_i(f, "Failed requests:", (long long)s->failed);
    if (c->max_concurrency > 0)
        row_i(f, "Maximum request concurrency:", (long long)c->max_concurrency);
    if (!isinf(c->request_rate))
        row_f(f, "Request rate configured (RPS):", c->request_rate);
    row_f(f, "Benchmark duration (s):", s->duration);
    row_i(f, "Total input tokens:", (long long)s->total_input);
    row_i(f, "Total generated tokens:", (long long)s->total_output);
    row_f(f, "Request throughput (req/s):", s->request_throughput);
    if (c->goodput.enabled)
        row_f(f, "Request goodput (req/s):", s->request_goodput);
    row_f(f, "Output token throughput (tok/s):", s->output_throughput);
    row_f(f, "Peak output token throughput (tok/s):", s->max_output_tokens_per_s);
    row_f(f, "Peak concurrent requests:", (double)s->max_concurrent_requests);
    row_f(f, "Total token throughput (tok/s):", s->total_token_throughput);
    dist_block(f, s, "Time to First Token", "TTFT", &s->ttft);
    dist_block(f, s, "Time per Output Token (excl. 1st token)", "TPOT", &s->tpot);
    dist_block(f, s, "Inter-token Latency", "ITL", &s->itl);
    dist_block(f, s, "End-to-end Latency", "E2EL", &s->e2el);
    rule(f, "Server metrics (/metrics, delta)", '-');
    if (!before->ok || !after->ok) {
        fprintf(f, "%-40s %-10s\n", "Scrape:", "unavailable");
    } else {
        if (before->have_preempt && after->have_preempt)
            row_i(f, "Preemptions:", (long long)llround(after->preemptions - before->preemptions));
        else
            fprintf(f, "%-40s %-10s\n", "Preemptions:", "n/a");
        if (before->have_queue && after->have_queue) {
            double ds = after->queue_sum - before->queue_sum;
            double dc = after->queue_count - before->queue_count;
            row_i(f, "Requests queued:", (long long)llround(dc));
            row_f(f, "Total queue time (s):", ds);
            row_f(f, "Mean queue time (ms):", dc > 0 ? ds / dc * 1000.0 : 0.0);
        } else {
            fprintf(f, "%-40s %-10s\n", "Queue time:", "n/a");
        }
    }
    if (o && o->kernel_stamps > 0) {
        rule(f, "Client read lag (asa-bench's own delay)", '-');
        row_f(f, "Median read lag (ms):", o->read_lag_median * 1000.0);
        row_f(f, "P99 read lag (ms):", o->read_lag_p99 * 1000.0);
        row_f(f, "Max read lag (ms):", o->read_lag_max * 1000.0);
    }
    for (int i = 0; i < 50; i++)
        fputc('=', f);
    fputc('\n', f);
}

int bench_report_lag_warning(FILE *f, const bench_summary *s, const bench_run_out *o) {
    if (!o->kernel_stamps || s->itl.median_ms <= 0)
        return 0;
    double lag_ms = o->read_lag_p99 * 1000.0;
    if (lag_ms <= 0.5 * s->itl.median_ms)
        return 0;
    fprintf(f,
            "asa-bench: warning: 1%% of reads waited more than %.1f ms in the socket "
            "(median ITL %.1f ms); chunks that arrived within such a wait share one "
            "timestamp (%lld reads carried several token chunks).  Give asa-bench more CPU "
            "(--realtime, a quieter machine) or fewer streams per process.\n",
            lag_ms, s->itl.median_ms, (long long)o->merged_reads);
    return 1;
}

void bench_report_errors(FILE *f, const bench_run_out *o, size_t max_errors) {
    size_t shown = 0, failed = 0;
    for (size_t i = 0; i < o->n; i++)
        if (!o->res[i].success)
            failed++;
    if (!failed)
        return;
    fprintf(f, "Failed requests during benchmark run detected (showing %zu of %zu):\n",
            failed < max_errors ? failed : max_errors, failed);
    for (size_t i = 0; i < o->n && shown < max_errors; i++) {
        if (o->res[i].success)
            continue;
        fprintf(f, "Error %zu (request %zu): %s\n", shown, i,
                o->res[i].error ? o->res[i].error : "(unknown)");
        shown++;
    }
}

static void set_dist(json_t *o, const bench_summary *s, const char *name,
                     const bench_dist *d) {
    char key[64], pw[16];
    snprintf(key, sizeof key, "mean_%s_ms", name);
    json_object_set_new(o, key, json_real(d->mean_ms));
    snprintf(key, sizeof key, "median_%s_ms", name);
    json_object_set_new(o, key, json_real(d->median_ms));
    snprintf(key, sizeof key, "std_%s_ms", name);
    json_object_set_new(o, key, json_real(d->std_ms));
    for (size_t i = 0; i < s->n_pcts; i++) {
        pct_word(s->pcts[i], pw, sizeof pw);
        snprintf(key, sizeof key, "p%s_%s_ms", pw, name);
        json_object_set_new(o, key, json_real(d->pct_ms[i]));
    }
}

json_t *bench_report_json(const bench_config *c, const bench_summary *s,
                          const bench_run_out *o, const bench_prom *before,
                          const bench_prom *after) {
    json_t *j = json_object();
    if (!j)
        return NULL;
    char date[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y%m%d-%H%M%S", &tm);
    json_object_set_new(j, "date", json_string(date));
    json_object_set_new(j, "backend", json_string("openai"));
    json_object_set_new(j, "base_url", json_string(c->base_url));
    json_object_set_new(j, "endpoint", json_string(c->endpoint_path));
    json_object_set_new(j, "model_id", json_string(c->model ? c->model : ""));
    json_object_set_new(j, "num_prompts", json_integer(c->num_prompts));
    if (isinf(c->request_rate))
        json_object_set_new(j, "request_rate", json_string("inf"));
    else
        json_object_set_new(j, "request_rate", json_real(c->request_rate));
    if (isinf(c->burstiness))
        json_object_set_new(j, "burstiness", json_string("inf"));
    else
        json_object_set_new(j, "burstiness", json_real(c->burstiness));
    json_object_set_new(j, "max_concurrency", c->max_concurrency > 0
                                                  ? json_integer(c->max_concurrency)
                                                  : json_null());
    json_object_set_new(j, "warmup", json_integer(c->warmup));
    json_object_set_new(j, "seed", json_integer((json_int_t)c->seed));
    json_object_set_new(j, "duration_limit_s",
                        c->duration_s > 0 ? json_real(c->duration_s) : json_null());
    json_object_set_new(j, "preconnected", json_integer(o->preconnected));
    json_object_set_new(j, "receive_clock", json_string(o->kernel_stamps > 0 ? "kernel"
                                                                             : "client"));
    json_object_set_new(j, "client_read_lag_median_ms", json_real(o->read_lag_median * 1e3));
    json_object_set_new(j, "client_read_lag_p99_ms", json_real(o->read_lag_p99 * 1e3));
    json_object_set_new(j, "client_read_lag_max_ms", json_real(o->read_lag_max * 1e3));
    json_object_set_new(j, "client_merged_reads", json_integer(o->merged_reads));

    json_object_set_new(j, "duration", json_real(s->duration));
    json_object_set_new(j, "completed", json_integer(s->completed));
    json_object_set_new(j, "failed", json_integer(s->failed));
    json_object_set_new(j, "total_input_tokens", json_integer(s->total_input));
    json_object_set_new(j, "total_output_tokens", json_integer(s->total_output));
    json_object_set_new(j, "request_throughput", json_real(s->request_throughput));
    json_object_set_new(j, "request_goodput",
                        c->goodput.enabled ? json_real(s->request_goodput) : json_null());
    json_object_set_new(j, "output_throughput", json_real(s->output_throughput));
    json_object_set_new(j, "total_token_throughput", json_real(s->total_token_throughput));
    json_object_set_new(j, "max_output_tokens_per_s", json_real(s->max_output_tokens_per_s));
    json_object_set_new(j, "max_concurrent_requests",
                        json_integer(s->max_concurrent_requests));
    set_dist(j, s, "ttft", &s->ttft);
    set_dist(j, s, "tpot", &s->tpot);
    set_dist(j, s, "itl", &s->itl);
    set_dist(j, s, "e2el", &s->e2el);

    json_t *in = json_array(), *ol = json_array(), *tt = json_array(), *it = json_array();
    json_t *lat = json_array(), *st = json_array(), *qt = json_array(), *er = json_array();
    json_t *tp = json_array();
    for (size_t i = 0; i < o->n; i++) {
        const bench_result *r = &o->res[i];
        json_array_append_new(in, json_integer(r->prompt_len));
        json_array_append_new(ol, json_integer(r->success ? r->output_tokens : 0));
        json_array_append_new(tt, json_real(r->success ? r->ttft : 0.0));
        json_t *a = json_array();
        for (size_t k = 0; r->success && k < r->n_itl; k++)
            json_array_append_new(a, json_real(r->itl[k]));
        json_array_append_new(it, a);
        json_array_append_new(lat, json_real(r->success ? r->latency : 0.0));
        json_array_append_new(st, json_real(r->start));
        json_array_append_new(qt, json_real(r->queue_time));
        double tpot = r->success && r->output_tokens > 1
                          ? (r->latency - r->ttft) / (double)(r->output_tokens - 1)
                          : 0.0;
        json_array_append_new(tp, json_real(tpot));
        json_array_append_new(er, json_string(r->success ? "" : (r->error ? r->error : "?")));
    }
    json_object_set_new(j, "input_lens", in);
    json_object_set_new(j, "output_lens", ol);
    json_object_set_new(j, "ttfts", tt);
    json_object_set_new(j, "tpots", tp);
    json_object_set_new(j, "itls", it);
    json_object_set_new(j, "latencies", lat);
    json_object_set_new(j, "start_times", st);
    json_object_set_new(j, "queue_times", qt);
    json_object_set_new(j, "errors", er);

    /* /metrics deltas; null where the server does not expose them. */
    int ok = before->ok && after->ok;
    json_object_set_new(j, "server_metrics_scraped", json_boolean(ok));
    json_object_set_new(j, "server_num_preemptions",
                        ok && before->have_preempt && after->have_preempt
                            ? json_real(after->preemptions - before->preemptions)
                            : json_null());
    int q = ok && before->have_queue && after->have_queue;
    double dsum = q ? after->queue_sum - before->queue_sum : 0;
    double dcnt = q ? after->queue_count - before->queue_count : 0;
    json_object_set_new(j, "server_request_queue_time_sum_s", q ? json_real(dsum) : json_null());
    json_object_set_new(j, "server_request_queue_count", q ? json_real(dcnt) : json_null());
    json_object_set_new(j, "server_mean_request_queue_time_ms",
                        q ? json_real(dcnt > 0 ? dsum / dcnt * 1000.0 : 0.0) : json_null());
    return j;
}
