/*
 * server/metrics.h - Prometheus metrics with vLLM's names and meanings under
 * the `asa:` prefix (dashboards port by renaming `vllm:` to `asa:`).
 *
 * Counters and histograms are updated from the engine thread; gauges are
 * sampled when /metrics is rendered.  All functions are thread-safe (one
 * mutex; updates are a few adds).
 */
#ifndef ASA_SRV_METRICS_H
#define ASA_SRV_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef enum srv_hist_id {
    SRV_H_TTFT = 0,       /* time_to_first_token_seconds */
    SRV_H_ITL,            /* inter_token_latency_seconds */
    SRV_H_E2E,            /* e2e_request_latency_seconds */
    SRV_H_QUEUE,          /* request_queue_time_seconds */
    SRV_H_PREFILL,        /* request_prefill_time_seconds */
    SRV_H_DECODE,         /* request_decode_time_seconds */
    SRV_H_COUNT
} srv_hist_id;

typedef enum srv_finish { SRV_FIN_STOP = 0, SRV_FIN_LENGTH, SRV_FIN_ABORT, SRV_FIN_ERROR, SRV_FIN_COUNT } srv_finish;

typedef struct srv_metrics srv_metrics;

typedef struct srv_gauges {
    int num_requests_running;
    int num_requests_waiting;
    double kv_cache_usage_perc; /* 0..1, as vLLM */
    int engine_alive;
    uint64_t num_preemptions;   /* cumulative, from the engine loop */
} srv_gauges;

srv_metrics *srv_metrics_create(const char *model_name);
void srv_metrics_destroy(srv_metrics *m);

void srv_metrics_observe(srv_metrics *m, srv_hist_id h, double seconds);
void srv_metrics_add_prompt_tokens(srv_metrics *m, uint64_t n);
void srv_metrics_add_generation_tokens(srv_metrics *m, uint64_t n);
void srv_metrics_finish(srv_metrics *m, srv_finish why);
void srv_metrics_http(srv_metrics *m, int status);

/* Renders the text exposition format (version 0.0.4) into a malloc'ed,
 * NUL-terminated buffer; NULL on out of memory.  Caller frees. */
char *srv_metrics_render(srv_metrics *m, const srv_gauges *g, size_t *len);

#endif
