/* server/metrics.c - counters, histograms and the Prometheus text format. */
#define _GNU_SOURCE
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 32

typedef struct hist {
    const char *name, *help;
    const double *bounds;
    int n_bounds;
    uint64_t counts[MAX_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    double sum;
    uint64_t count;
} hist;

/* Bucket bounds follow vLLM's, with finer steps below 10 ms for inter-token
 * latency since this server's decode steps are often faster than that. */
static const double b_ttft[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double b_itl[] = {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                               0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double b_req[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                               50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

struct srv_metrics {
    pthread_mutex_t mu;
    char *model;
    hist h[SRV_H_COUNT];
    uint64_t prompt_tokens, generation_tokens;
    uint64_t finished[SRV_FIN_COUNT];
    uint64_t http_2xx, http_4xx, http_5xx;
};

#define NB(a) ((int)(sizeof(a) / sizeof((a)[0])))

srv_metrics *srv_metrics_create(const char *model_name) {
    srv_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->model = strdup(model_name ? model_name : "");
    if (!m->model) {
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    m->h[SRV_H_TTFT] = (hist){"time_to_first_token_seconds", "Histogram of time to first token in seconds.", b_ttft, NB(b_ttft), {0}, 0, 0};
    m->h[SRV_H_ITL] = (hist){"inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", b_itl, NB(b_itl), {0}, 0, 0};
    m->h[SRV_H_E2E] = (hist){"e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", b_req, NB(b_req), {0}, 0, 0};
    m->h[SRV_H_QUEUE] = (hist){"request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", b_req, NB(b_req), {0}, 0, 0};
    m->h[SRV_H_PREFILL] = (hist){"request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", b_req, NB(b_req), {0}, 0, 0};
    m->h[SRV_H_DECODE] = (hist){"request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", b_req, NB(b_req), {0}, 0, 0};
    return m;
}

void srv_metrics_destroy(srv_metrics *m) {
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m->model);
    free(m);
}

void srv_metrics_observe(srv_metrics *m, srv_hist_id id, double s) {
    if (!m || id < 0 || id >= SRV_H_COUNT)
        return;
    pthread_mutex_lock(&m->mu);
    hist *h = &m->h[id];
    int b = 0;
    while (b < h->n_bounds && s > h->bounds[b])
        b++;
    h->counts[b]++;
    h->sum += s;
    h->count++;
    pthread_mutex_unlock(&m->mu);
}

#define COUNTER_ADD(fn, field)                                                \
    void fn(srv_metrics *m, uint64_t n) {                                     \
        if (!m)                                                               \
            return;                                                           \
        pthread_mutex_lock(&m->mu);                                           \
        m->field += n;                                                        \
        pthread_mutex_unlock(&m->mu);                                         \
    }
COUNTER_ADD(srv_metrics_add_prompt_tokens, prompt_tokens)
COUNTER_ADD(srv_metrics_add_generation_tokens, generation_tokens)

void srv_metrics_finish(srv_metrics *m, srv_finish why) {
    if (!m || why < 0 || why >= SRV_FIN_COUNT)
        return;
    pthread_mutex_lock(&m->mu);
    m->finished[why]++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_http(srv_metrics *m, int status) {
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    if (status >= 500)
        m->http_5xx++;
    else if (status >= 400)
        m->http_4xx++;
    else
        m->http_2xx++;
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering --------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
    int oom;
} buf;

static void bprintf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(buf *b, const char *fmt, ...) {
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* Label values are escaped per the exposition format. */
static void escape_label(char *dst, size_t cap, const char *s) {
    size_t o = 0;
    for (; *s && o + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            dst[o++] = '\\';
            dst[o++] = *s;
        } else if (*s == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *s;
        }
    }
    dst[o] = 0;
}

char *srv_metrics_render(srv_metrics *m, const srv_gauges *g, size_t *len) {
    buf b = {malloc(8192), 0, 8192, 0};
    if (!b.p)
        return NULL;
    char model[256];
    escape_label(model, sizeof model, m->model);
    pthread_mutex_lock(&m->mu);

    bprintf(&b, "# HELP asa:num_requests_running Number of requests in model execution batches.\n"
                "# TYPE asa:num_requests_running gauge\nasa:num_requests_running{model_name=\"%s\"} %d\n",
            model, g->num_requests_running);
    bprintf(&b, "# HELP asa:num_requests_waiting Number of requests waiting to be processed.\n"
                "# TYPE asa:num_requests_waiting gauge\nasa:num_requests_waiting{model_name=\"%s\"} %d\n",
            model, g->num_requests_waiting);
    bprintf(&b, "# HELP asa:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
                "# TYPE asa:kv_cache_usage_perc gauge\nasa:kv_cache_usage_perc{model_name=\"%s\"} %.6f\n",
            model, g->kv_cache_usage_perc);
    bprintf(&b, "# HELP asa:engine_alive 1 while the engine is loaded and healthy.\n"
                "# TYPE asa:engine_alive gauge\nasa:engine_alive{model_name=\"%s\"} %d\n",
            model, g->engine_alive);
    bprintf(&b, "# HELP asa:num_preemptions_total Cumulative number of preemptions from the engine.\n"
                "# TYPE asa:num_preemptions_total counter\nasa:num_preemptions_total{model_name=\"%s\"} %llu\n",
            model, (unsigned long long)g->num_preemptions);
    bprintf(&b, "# HELP asa:prompt_tokens_total Number of prefill tokens processed.\n"
                "# TYPE asa:prompt_tokens_total counter\nasa:prompt_tokens_total{model_name=\"%s\"} %llu\n",
            model, (unsigned long long)m->prompt_tokens);
    bprintf(&b, "# HELP asa:generation_tokens_total Number of generation tokens processed.\n"
                "# TYPE asa:generation_tokens_total counter\nasa:generation_tokens_total{model_name=\"%s\"} %llu\n",
            model, (unsigned long long)m->generation_tokens);
    static const char *reasons[SRV_FIN_COUNT] = {"stop", "length", "abort", "error"};
    bprintf(&b, "# HELP asa:request_success_total Count of finished requests, by finish reason.\n"
                "# TYPE asa:request_success_total counter\n");
    for (int i = 0; i < SRV_FIN_COUNT; i++)
        bprintf(&b, "asa:request_success_total{finished_reason=\"%s\",model_name=\"%s\"} %llu\n",
                reasons[i], model, (unsigned long long)m->finished[i]);
    bprintf(&b, "# HELP asa:http_responses_total HTTP responses by status class.\n"
                "# TYPE asa:http_responses_total counter\n"
                "asa:http_responses_total{status=\"2xx\"} %llu\nasa:http_responses_total{status=\"4xx\"} %llu\n"
                "asa:http_responses_total{status=\"5xx\"} %llu\n",
            (unsigned long long)m->http_2xx, (unsigned long long)m->http_4xx,
            (unsigned long long)m->http_5xx);

    for (int i = 0; i < SRV_H_COUNT; i++) {
        hist *h = &m->h[i];
        bprintf(&b, "# HELP asa:%s %s\n# TYPE asa:%s histogram\n", h->name, h->help, h->name);
        uint64_t cum = 0;
        for (int k = 0; k < h->n_bounds; k++) {
            cum += h->counts[k];
            bprintf(&b, "asa:%s_bucket{le=\"%g\",model_name=\"%s\"} %llu\n", h->name, h->bounds[k],
                    model, (unsigned long long)cum);
        }
        cum += h->counts[h->n_bounds];
        bprintf(&b, "asa:%s_bucket{le=\"+Inf\",model_name=\"%s\"} %llu\n", h->name, model,
                (unsigned long long)cum);
        bprintf(&b, "asa:%s_sum{model_name=\"%s\"} %.9g\n", h->name, model, h->sum);
        bprintf(&b, "asa:%s_count{model_name=\"%s\"} %llu\n", h->name, model,
                (unsigned long long)h->count);
    }
    pthread_mutex_unlock(&m->mu);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}
