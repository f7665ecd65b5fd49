/*
 * client/bench.h - asa-bench, the load client (module prefix bench_).
 *
 * asa-bench drives an OpenAI-compatible server with many concurrent streaming
 * requests and reports the numbers `vllm bench serve` reports (TTFT, TPOT,
 * ITL, E2EL, throughputs, goodput).  It speaks only HTTP/1.1 and links only
 * common/, libuv and jansson.
 *
 * The pieces below are split so that each can be tested on its own:
 *   - bench_http / bench_sse: incremental HTTP/1.1 response and Server-Sent
 *     Events parsers.  They own no sockets; bytes are pushed in, callbacks
 *     come out synchronously from the feed call.
 *   - bench_rng / bench_schedule: seeded random numbers and request send
 *     times (Poisson or gamma arrivals, normalised as vLLM does).
 *   - bench_summarize / bench_report_*: per-request results -> metrics ->
 *     the printed block and the result JSON.
 *   - bench_prom_*: /metrics (Prometheus text) scraping.
 *   - bench_sync_*: a small blocking HTTP client used before and after the
 *     run (model discovery, /tokenize, /metrics).  Never used on the
 *     measured path.
 *   - bench_load_run: the measured run, one libuv loop on the calling thread.
 *
 * Everything here is single-threaded; nothing is shared between threads.
 * Times are seconds as double unless a name ends in _ns.
 */
#ifndef ASA_BENCH_H
#define ASA_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "asa.h"

/* ---- URL ---------------------------------------------------------------- */

typedef struct bench_url {
    char host[256]; /* host name or address, no brackets */
    char port[8];   /* decimal port, "80" when the URL has none */
    char path[512]; /* base path without trailing '/', "" for the root */
} bench_url;

/* Parses "http://host[:port][/base]".  Returns ASA_EINVAL for anything else
 * (https included) with a reason in eb. */
int bench_url_parse(const char *s, bench_url *out, asa_errbuf *eb);

/* ---- HTTP/1.1 response parser ------------------------------------------- */

typedef struct bench_http_cbs {
    /* Status and headers are complete.  May be NULL. */
    void (*on_head)(void *ctx, int status);
    /* A piece of the (de-chunked) body.  May be NULL. */
    void (*on_body)(void *ctx, const char *p, size_t n);
} bench_http_cbs;

enum bench_http_state {
    BENCH_HTTP_STATUS = 0,
    BENCH_HTTP_HEADER,
    BENCH_HTTP_CHUNK_SIZE,
    BENCH_HTTP_CHUNK_DATA,
    BENCH_HTTP_CHUNK_CRLF,
    BENCH_HTTP_TRAILER,
    BENCH_HTTP_BODY_LEN,
    BENCH_HTTP_BODY_EOF,
    BENCH_HTTP_DONE,
};

typedef struct bench_http {
    int state;            /* enum bench_http_state */
    int status;           /* HTTP status code, 0 until the status line */
    int keep_alive;       /* 1 if the connection may be reused after DONE */
    int chunked;          /* Transfer-Encoding: chunked */
    int event_stream;     /* Content-Type: text/event-stream */
    int64_t content_length; /* -1 when absent */
    uint64_t remaining;   /* bytes left in the current chunk / body */
    char line[8192];      /* partial status/header/chunk-size line */
    size_t line_len;
    bench_http_cbs cbs;
    void *ctx;
} bench_http;

/* Resets p for a new response (keeps cbs/ctx). */
void bench_http_reset(bench_http *p);
/* Feeds n bytes.  Stops after the message is complete (state DONE) and
 * reports in *used how many bytes it took.  Returns 0, or ASA_EFORMAT on a
 * malformed response (p is then unusable until reset). */
int bench_http_feed(bench_http *p, const char *buf, size_t n, size_t *used);
/* The peer closed the connection.  Completes a read-until-close body and
 * returns 0; returns ASA_EOF if the message was cut short. */
int bench_http_eof(bench_http *p);

/* ---- Server-Sent Events ------------------------------------------------- */

typedef struct bench_sse {
    char *line; /* current partial line (heap, grows) */
    size_t line_len, line_cap;
    char *data; /* accumulated data: field of the current event (heap) */
    size_t data_len, data_cap;
    int have_data;
    int last_cr; /* previous byte was '\r' (a following '\n' is eaten) */
    /* Called for every dispatched event with its data (NUL-terminated). */
    void (*on_event)(void *ctx, const char *data, size_t n);
    void *ctx;
} bench_sse;

void bench_sse_init(bench_sse *s, void (*on_event)(void *, const char *, size_t),
                    void *ctx);
void bench_sse_reset(bench_sse *s); /* forget partial state, keep buffers */
void bench_sse_deinit(bench_sse *s);
/* Feeds bytes; dispatches complete events.  Returns 0 or ASA_ENOMEM. */
int bench_sse_feed(bench_sse *s, const char *p, size_t n);

/* ---- stream events ---------------------------------------------------- */

typedef struct bench_chunk {
    int done;            /* data: [DONE] */
    int token;           /* choices[0] carries text (text, delta.content,
                          * reasoning, tool calls): a token chunk */
    int choice;          /* choices is a non-empty array (text or not) */
    int error;           /* an "error" object, or data that is not JSON */
    char *err;           /* heap text of the error (may be NULL), caller frees */
    int64_t usage_out;   /* usage.completion_tokens, -1 when absent */
    int64_t usage_in;    /* usage.prompt_tokens, -1 when absent */
} bench_chunk;

/* Interprets the data of one SSE event.  The plain token chunk is
 * recognised without a JSON parse; anything else is parsed with jansson
 * (bench_chunk_parse_full, which the tests compare against).  Always 0. */
int bench_chunk_parse(const char *data, size_t n, bench_chunk *out);
int bench_chunk_parse_full(const char *data, size_t n, bench_chunk *out);

/* ---- random numbers and send schedule ----------------------------------- */

typedef struct bench_rng {
    uint64_t s[4];
} bench_rng;

void bench_rng_seed(bench_rng *r, uint64_t seed);
uint64_t bench_rng_next(bench_rng *r);
double bench_rng_uniform(bench_rng *r); /* [0, 1) */
/* Uniform integer in [lo, hi] (inclusive). */
int64_t bench_rng_int(bench_rng *r, int64_t lo, int64_t hi);
/* Gamma(shape k > 0, scale theta > 0). */
double bench_rng_gamma(bench_rng *r, double k, double theta);

/* Send times for n requests, seconds from the start of the run, written to
 * out[0..n).  rate <= 0 or infinite: every request at 0.  Otherwise the gaps
 * are Gamma(burstiness, 1/(rate*burstiness)) (exponential, i.e. Poisson
 * arrivals, when burstiness == 1; constant when burstiness is infinite),
 * accumulated and then rescaled so that the last send time is exactly
 * n / rate, as vLLM does.  Returns ASA_EINVAL when burstiness <= 0. */
int bench_schedule(size_t n, double rate, double burstiness, bench_rng *r,
                   double *out);
/* One un-normalised gap, for open-ended (--duration) runs. */
double bench_schedule_gap(double rate, double burstiness, bench_rng *r);

/* ---- per-request results and the summary -------------------------------- */

typedef struct bench_result {
    int success;
    double start;        /* send time, s since the run started */
    double queue_time;   /* time waiting for a concurrency slot, s */
    double ttft;         /* s; 0 if no token arrived */
    double latency;      /* E2E: send -> last token chunk, s */
    double *itl;         /* gaps between token chunks, s (heap) */
    size_t n_itl, cap_itl;
    int64_t prompt_len;  /* usage.prompt_tokens when given, else ours */
    int64_t output_tokens; /* usage.completion_tokens; else token chunks */
    int64_t chunks;      /* token-carrying chunks seen */
    int usage_seen;
    char *error;         /* heap, NULL on success */
} bench_result;

/* Appends a gap.  Returns 0 or ASA_ENOMEM. */
int bench_result_push_itl(bench_result *r, double gap);
void bench_result_deinit(bench_result *r); /* frees itl and error */

#define BENCH_MAX_PCTS 16

typedef struct bench_dist {
    double mean_ms, median_ms, std_ms;
    double pct_ms[BENCH_MAX_PCTS]; /* at bench_summary.pcts */
} bench_dist;

typedef struct bench_goodput {
    double ttft_ms, tpot_ms, e2el_ms; /* < 0 when not set */
    int enabled;
} bench_goodput;

/* Parses "ttft:50 tpot:20 e2el:1000" (spaces or commas between pairs; may be
 * called repeatedly to add pairs).  Returns ASA_EINVAL with a reason. */
int bench_goodput_parse(bench_goodput *g, const char *s, asa_errbuf *eb);

typedef struct bench_summary {
    int64_t completed, failed;
    int64_t total_input, total_output;
    double duration;
    double request_throughput, request_goodput, output_throughput,
        total_token_throughput;
    double max_output_tokens_per_s;
    int64_t max_concurrent_requests;
    size_t n_pcts;
    double pcts[BENCH_MAX_PCTS];
    bench_dist ttft, tpot, itl, e2el;
} bench_summary;

/* Linear-interpolated percentile (numpy's default) of sorted v[0..n);
 * 0 when n == 0. */
double bench_percentile_sorted(const double *v, size_t n, double p);
/* mean/median/std/percentiles of v[0..n) (seconds in, ms out).  v is
 * sorted in place.  All zero when n == 0. */
void bench_dist_compute(double *v, size_t n, const double *pcts, size_t n_pcts,
                        bench_dist *out);

/* Computes the summary of n results over a run of `duration` seconds.
 * TPOT = (E2EL - TTFT) / (output_tokens - 1) for requests with more than one
 * output token; goodput counts requests meeting every set SLO (TPOT of a
 * one-token request counts as 0).  Returns 0 or ASA_ENOMEM. */
int bench_summarize(const bench_result *res, size_t n, double duration,
                    const double *pcts, size_t n_pcts, const bench_goodput *g,
                    bench_summary *out);

/* ---- /metrics ----------------------------------------------------------- */

typedef struct bench_prom {
    int ok;                 /* the scrape succeeded */
    int have_preempt, have_queue;
    double preemptions;     /* asa:num_preemptions_total (or vllm:) */
    double queue_sum;       /* asa:request_queue_time_seconds_sum */
    double queue_count;     /* asa:request_queue_time_seconds_count */
} bench_prom;

/* Sums every sample of metric `name` (without prefix, e.g.
 * "num_preemptions_total") under the "asa:" or "vllm:" prefix, over all label
 * sets.  Returns 1 when found, 0 when absent. */
int bench_prom_sum(const char *text, const char *name, double *out);
/* Fills p from a /metrics body. */
void bench_prom_parse(const char *text, bench_prom *p);

/* ---- configuration ------------------------------------------------------ */

enum bench_endpoint { BENCH_EP_COMPLETIONS = 0, BENCH_EP_CHAT = 1 };
enum bench_prompt_kind { BENCH_PROMPT_AUTO = 0, BENCH_PROMPT_IDS, BENCH_PROMPT_TEXT };

typedef struct bench_config {
    const char *base_url;
    bench_url url;
    int endpoint;         /* enum bench_endpoint */
    const char *endpoint_path; /* e.g. "/v1/completions" (under url.path) */
    const char *model;    /* NULL: ask /v1/models */
    const char *api_key;  /* NULL: none */
    int64_t max_concurrency; /* 0: unlimited */
    double request_rate;  /* INFINITY: all at once */
    double burstiness;
    int64_t num_prompts;
    int64_t warmup;
    uint64_t seed;
    double duration_s;    /* 0: stop after num_prompts */
    int64_t input_len, output_len;
    double range_ratio;
    int prompt_kind;      /* enum bench_prompt_kind */
    int64_t vocab_size;   /* 0: ids from /tokenize of a word list */
    const char *dataset;  /* JSONL path or NULL */
    int ignore_eos;
    const char *extra_body; /* JSON object merged into each body, or NULL */
    bench_goodput goodput;
    size_t n_pcts;
    double pcts[BENCH_MAX_PCTS];
    const char *result_json;
    int progress;         /* 1 bar, 0 none, -1 auto (bar on a TTY) */
    double timeout_s;     /* per request; 0 = none */
    int64_t preconnect;   /* -1 auto */
    int realtime;         /* try SCHED_FIFO / nice -10 */
    double ready_timeout_s; /* wait this long for /v1/models to answer 200 */
    int quiet;
} bench_config;

/* ---- prompts and requests ----------------------------------------------- */

typedef struct bench_prompt {
    char *req;           /* complete HTTP request bytes (heap) */
    size_t req_len;
    int64_t input_len;   /* our count; usage.prompt_tokens overrides */
    int64_t output_len;  /* max_tokens asked for */
} bench_prompt;

typedef struct bench_prompts {
    bench_prompt *v;
    size_t n;
} bench_prompts;

void bench_prompts_free(bench_prompts *ps);

/* Builds the HTTP request bytes for one prompt (NUL-terminated; *out_len
 * excludes the NUL; the caller frees *out).  prompt is either a JSON
 * string or a JSON array of token ids (completions only).  Returns 0,
 * ASA_EINVAL (ids on the chat endpoint, bad --extra-body) or ASA_ENOMEM. */
int bench_request_build(const bench_config *c, json_t *prompt, int64_t max_tokens,
                        char **out, size_t *out_len, asa_errbuf *eb);

/* Generates cfg->num_prompts prompts (random or from --dataset), talking to
 * the server's /tokenize when it needs the vocabulary.  Messages about
 * fallbacks go to `log` (may be NULL). */
int bench_prompts_make(const bench_config *c, FILE *log, bench_prompts *out,
                       asa_errbuf *eb);

/* ---- blocking helper client (setup and /metrics only) ------------------- */

typedef struct bench_sync_resp {
    int status;
    char *body; /* heap, NUL-terminated */
    size_t body_len;
} bench_sync_resp;

/* One request on a fresh connection: method, path (under the base URL's
 * path), optional JSON body.  Returns 0 with a response (any status), or
 * ASA_EIO with a reason ("connection refused", ...) in eb. */
int bench_sync_request(const bench_config *c, const char *method, const char *path,
                       const char *body, double timeout_s, bench_sync_resp *out,
                       asa_errbuf *eb);
void bench_sync_resp_free(bench_sync_resp *r);

struct sockaddr_storage;
/* The first address of the base URL's host that accepts a connection (so
 * that "localhost" resolving to ::1 first still reaches an IPv4-only
 * server).  Returns 0, or ASA_EIO with a reason. */
int bench_sync_resolve(const bench_config *c, struct sockaddr_storage *out, asa_errbuf *eb);

/* ---- the measured run --------------------------------------------------- */

typedef struct bench_run_out {
    bench_result *res;   /* one per request sent, in send order (heap) */
    size_t n;
    double duration;     /* run start -> last completion, s */
    int64_t preconnected;
    int64_t kernel_stamps; /* reads stamped by the kernel (SO_TIMESTAMPNS) */
    /* The client's own delay: time received bytes waited in the socket
     * before asa-bench read them, s.  Only with kernel stamps. */
    double read_lag_median, read_lag_p99, read_lag_max;
    int64_t merged_reads;  /* reads that carried more than one token chunk */
    size_t fd_limit;     /* RLIMIT_NOFILE after raising it */
} bench_run_out;

/* Runs warmup then the measured load.  before_main (may be NULL) is called
 * with arg once the warmup is over, just before the measured run starts (the
 * /metrics scrape goes there).  Returns 0 (individual request failures are
 * results, not errors), or ASA_EIO when the server cannot be reached at
 * all. */
int bench_load_run(const bench_config *c, const bench_prompts *ps,
                   void (*before_main)(void *arg), void *arg, bench_run_out *out,
                   asa_errbuf *eb);
void bench_run_out_free(bench_run_out *o);

/* Raises RLIMIT_NOFILE to its hard limit; returns the new soft limit. */
size_t bench_raise_fd_limit(void);

/* ---- report ------------------------------------------------------------- */

/* Prints the `vllm bench serve`-style block to f (o may be NULL: no
 * client section). */
void bench_report_print(FILE *f, const bench_config *c, const bench_summary *s,
                        const bench_run_out *o, const bench_prom *before,
                        const bench_prom *after);
/* Writes a warning to f when the client's own read delay may have merged
 * chunks (read lag beyond half the median ITL).  Returns 1 if it warned. */
int bench_report_lag_warning(FILE *f, const bench_summary *s, const bench_run_out *o);
/* Prints up to max_errors error bodies of failed requests to f. */
void bench_report_errors(FILE *f, const bench_run_out *o, size_t max_errors);
/* The result JSON (new reference) or NULL on OOM. */
json_t *bench_report_json(const bench_config *c, const bench_summary *s,
                          const bench_run_out *o, const bench_prom *before,
                          const bench_prom *after);

#endif /* ASA_BENCH_H */
