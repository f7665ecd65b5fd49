/* client/main.c - asa-bench command line: options, server discovery, the
 * run, the report. */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <sched.h>
#include <sys/resource.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage_text[] =
    "usage: asa-bench [options]\n"
    "Load-tests an OpenAI-compatible server with streaming requests and prints\n"
    "the numbers `vllm bench serve` prints.\n"
    "\n"
    "Server:\n"
    "  --base-url URL          server (default http://127.0.0.1:8000)\n"
    "  --endpoint E            completions | chat | a path such as /v1/completions\n"
    "  --model NAME            model name (default: first of GET /v1/models)\n"
    "  --api-key KEY           Bearer token (default: $OPENAI_API_KEY)\n"
    "Load shape:\n"
    "  --num-prompts N         requests in the run (default 1000)\n"
    "  --max-concurrency N     at most N requests in flight (default unlimited)\n"
    "  --request-rate R        requests/s, or inf (default inf: all at once)\n"
    "  --burstiness B          gamma shape of the arrival gaps (1 = Poisson)\n"
    "  --duration S            stop sending after S seconds instead of N prompts\n"
    "  --warmup N              unmeasured requests before the run (default 0)\n"
    "  --seed S                random seed (default 0)\n"
    "Data:\n"
    "  --input-len N           prompt tokens (default 1024)\n"
    "  --output-len N          max output tokens (default 128)\n"
    "  --range-ratio X         lengths uniform in [L(1-X), L(1+X)] (default 0)\n"
    "  --prompt-format F       ids | text (default ids for completions, text for chat)\n"
    "  --vocab-size N          random ids in [0, N) instead of ids from /tokenize\n"
    "  --dataset FILE          JSONL: {\"prompt\": str|[ids], \"output_len\": n} per line\n"
    "  --ignore-eos            ask the server to ignore EOS\n"
    "  --extra-body JSON       object merged into every request body\n"
    "Report:\n"
    "  --goodput KEY:MS ...    SLOs for goodput (ttft, tpot, e2el)\n"
    "  --percentiles LIST      e.g. 50,90,99 (default 99)\n"
    "  --result-json FILE      write the results, per-request arrays included\n"
    "  --progress / --no-progress  progress line on stderr (default: on a TTY)\n"
    "  --timeout S             per-request timeout (default 600, 0 = none)\n"
    "  --preconnect N          connections opened before the run (default: enough\n"
    "                          for the concurrency the run needs)\n"
    "  --ready-timeout S       wait up to S seconds for the server to come up\n"
    "  --realtime              run under SCHED_FIFO (else nice -10) when allowed, so\n"
    "                          that other work on the machine does not delay reads\n"
    "  -h, --help\n";

static int parse_i64(const char *opt, const char *v, int64_t min, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min) {
        fprintf(stderr, "asa-bench: %s: expected an integer >= %lld, got '%s'\n", opt,
                (long long)min, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_dbl(const char *opt, const char *v, double *out) {
    char *end;
    if (strcmp(v, "inf") == 0 || strcmp(v, "INF") == 0) {
        *out = INFINITY;
        return 0;
    }
    double x = strtod(v, &end);
    if (end == v || *end || isnan(x)) {
        fprintf(stderr, "asa-bench: %s: expected a number, got '%s'\n", opt, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_pcts(bench_config *c, const char *v) {
    c->n_pcts = 0;
    const char *p = v;
    while (*p) {
        char *end;
        double x = strtod(p, &end);
        if (end == p || x < 0 || x > 100 || c->n_pcts >= BENCH_MAX_PCTS) {
            fprintf(stderr, "asa-bench: --percentiles: bad list '%s'\n", v);
            return -1;
        }
        c->pcts[c->n_pcts++] = x;
        p = end;
        while (*p == ',' || *p == ' ')
            p++;
    }
    return 0;
}

static int parse_args(int argc, char **argv, bench_config *c) {
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        char *val = NULL;
        char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq) {
            *eq = '\0';
            val = eq + 1;
        }
#define FLAG(name) (strcmp(a, name) == 0)
#define VALUE()                                                               \
    do {                                                                      \
        if (!val) {                                                           \
            if (i + 1 >= argc) {                                              \
                fprintf(stderr, "asa-bench: %s needs a value\n", a);          \
                return -1;                                                    \
            }                                                                 \
            val = argv[++i];                                                  \
        }                                                                     \
    } while (0)
        if (FLAG("-h") || FLAG("--help")) {
            fputs(usage_text, stdout);
            return 1;
        } else if (FLAG("--base-url")) {
            VALUE();
            c->base_url = val;
        } else if (FLAG("--endpoint")) {
            VALUE();
            if (strcmp(val, "completions") == 0 || strcmp(val, "/v1/completions") == 0) {
                c->endpoint = BENCH_EP_COMPLETIONS;
                c->endpoint_path = "/v1/completions";
            } else if (strcmp(val, "chat") == 0 ||
                       strcmp(val, "/v1/chat/completions") == 0) {
                c->endpoint = BENCH_EP_CHAT;
                c->endpoint_path = "/v1/chat/completions";
            } else if (val[0] == '/') {
                size_t l = strlen(val);
                c->endpoint_path = val;
                c->endpoint = l >= 17 && strcmp(val + l - 17, "/chat/completions") == 0
                                  ? BENCH_EP_CHAT
                                  : BENCH_EP_COMPLETIONS;
            } else {
                fprintf(stderr, "asa-bench: --endpoint: use completions, chat or a path\n");
                return -1;
            }
        } else if (FLAG("--model")) {
            VALUE();
            c->model = val;
        } else if (FLAG("--api-key")) {
            VALUE();
            c->api_key = val;
        } else if (FLAG("--num-prompts")) {
            VALUE();
            if (parse_i64(a, val, 1, &c->num_prompts))
                return -1;
        } else if (FLAG("--max-concurrency")) {
            VALUE();
            if (parse_i64(a, val, 1, &c->max_concurrency))
                return -1;
        } else if (FLAG("--request-rate")) {
            VALUE();
            if (parse_dbl(a, val, &c->request_rate))
                return -1;
            if (!(c->request_rate > 0)) {
                fprintf(stderr, "asa-bench: --request-rate must be positive (or inf)\n");
                return -1;
            }
        } else if (FLAG("--burstiness")) {
            VALUE();
            if (parse_dbl(a, val, &c->burstiness))
                return -1;
            if (!(c->burstiness > 0)) {
                fprintf(stderr, "asa-bench: --burstiness must be positive\n");
                return -1;
            }
        } else if (FLAG("--duration")) {
            VALUE();
            if (parse_dbl(a, val, &c->duration_s) || !(c->duration_s > 0) ||
                isinf(c->duration_s)) {
                fprintf(stderr, "asa-bench: --duration must be a positive number of seconds\n");
                return -1;
            }
        } else if (FLAG("--warmup") || FLAG("--num-warmups")) {
            VALUE();
            if (parse_i64(a, val, 0, &c->warmup))
                return -1;
        } else if (FLAG("--seed")) {
            VALUE();
            int64_t s;
            if (parse_i64(a, val, 0, &s))
                return -1;
            c->seed = (uint64_t)s;
        } else if (FLAG("--input-len")) {
            VALUE();
            if (parse_i64(a, val, 1, &c->input_len))
                return -1;
        } else if (FLAG("--output-len")) {
            VALUE();
            if (parse_i64(a, val, 1, &c->output_len))
                return -1;
        } else if (FLAG("--range-ratio")) {
            VALUE();
            if (parse_dbl(a, val, &c->range_ratio))
                return -1;
            if (!(c->range_ratio >= 0 && c->range_ratio < 1)) {
                fprintf(stderr, "asa-bench: --range-ratio must be in [0, 1)\n");
                return -1;
            }
        } else if (FLAG("--prompt-format")) {
            VALUE();
            if (strcmp(val, "ids") == 0)
                c->prompt_kind = BENCH_PROMPT_IDS;
            else if (strcmp(val, "text") == 0)
                c->prompt_kind = BENCH_PROMPT_TEXT;
            else {
                fprintf(stderr, "asa-bench: --prompt-format: ids or text\n");
                return -1;
            }
        } else if (FLAG("--vocab-size")) {
            VALUE();
            if (parse_i64(a, val, 1, &c->vocab_size))
                return -1;
        } else if (FLAG("--dataset")) {
            VALUE();
            c->dataset = val;
        } else if (FLAG("--ignore-eos")) {
            c->ignore_eos = 1;
        } else if (FLAG("--extra-body")) {
            VALUE();
            c->extra_body = val;
        } else if (FLAG("--goodput")) {
            /* one or more KEY:MS words (or one quoted string) */
            char buf[256];
            asa_errbuf eb = {buf, sizeof buf};
            VALUE();
            if (bench_goodput_parse(&c->goodput, val, &eb) != ASA_OK) {
                fprintf(stderr, "asa-bench: %s\n", buf);
                return -1;
            }
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 &&
                   strchr(argv[i + 1], ':')) {
                if (bench_goodput_parse(&c->goodput, argv[++i], &eb) != ASA_OK) {
                    fprintf(stderr, "asa-bench: %s\n", buf);
                    return -1;
                }
            }
        } else if (FLAG("--percentiles") || FLAG("--metric-percentiles")) {
            VALUE();
            if (parse_pcts(c, val))
                return -1;
        } else if (FLAG("--result-json")) {
            VALUE();
            c->result_json = val;
        } else if (FLAG("--progress")) {
            c->progress = 1;
        } else if (FLAG("--no-progress")) {
            c->progress = 0;
        } else if (FLAG("--timeout")) {
            VALUE();
            if (parse_dbl(a, val, &c->timeout_s) || c->timeout_s < 0)
                return -1;
        } else if (FLAG("--ready-timeout")) {
            VALUE();
            if (parse_dbl(a, val, &c->ready_timeout_s) || c->ready_timeout_s < 0 ||
                isinf(c->ready_timeout_s))
                return -1;
        } else if (FLAG("--realtime")) {
            c->realtime = 1;
        } else if (FLAG("--preconnect")) {
            VALUE();
            if (parse_i64(a, val, 1, &c->preconnect))
                return -1;
        } else {
            fprintf(stderr, "asa-bench: unknown option '%s' (see --help)\n", a);
            return -1;
        }
#undef FLAG
#undef VALUE
    }
    return 0;
}

/* GET /metrics into p (p->ok stays 0 when unavailable). */
static void scrape(const bench_config *c, bench_prom *p) {
    memset(p, 0, sizeof *p);
    bench_sync_resp r;
    if (bench_sync_request(c, "GET", "/metrics", NULL, 10.0, &r, NULL) != ASA_OK)
        return;
    if (r.status == 200)
        bench_prom_parse(r.body, p);
    bench_sync_resp_free(&r);
}

typedef struct scrape_ctx {
    const bench_config *c;
    bench_prom *p;
} scrape_ctx;

static void scrape_hook(void *arg) {
    scrape_ctx *s = arg;
    scrape(s->c, s->p);
}

/* Asks /v1/models for the model when --model is absent.  Returns 0, or -1
 * when the server cannot be reached (message printed). */
static int discover(bench_config *c, char **model_owned) {
    char why[512];
    asa_errbuf eb = {why, sizeof why};
    bench_sync_resp r;
    /* With --ready-timeout, wait for a server that is still starting: until
     * /v1/models answers 200 (any answer once the time is up). */
    double give_up = asa_now() + c->ready_timeout_s;
    for (;;) {
        int rc = bench_sync_request(c, "GET", "/v1/models", NULL, 30.0, &r, &eb);
        if (rc == ASA_OK && (r.status == 200 || asa_now() >= give_up))
            break;
        if (rc == ASA_OK)
            bench_sync_resp_free(&r);
        if (asa_now() >= give_up) {
            fprintf(stderr,
                    "asa-bench: cannot reach the server at %s: %s\n"
                    "asa-bench: is it running?  Point --base-url at it%s.\n",
                    c->base_url, why,
                    c->ready_timeout_s > 0 ? "" : " (--ready-timeout S waits for it)");
            return -1;
        }
        struct timespec ts = {0, 250000000};
        nanosleep(&ts, NULL);
    }
    if (!c->model) {
        json_t *doc = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
        json_t *id = json_object_get(json_array_get(json_object_get(doc, "data"), 0), "id");
        if (json_is_string(id)) {
            *model_owned = strdup(json_string_value(id));
            c->model = *model_owned;
        } else {
            fprintf(stderr, "asa-bench: GET /v1/models gave no model (HTTP %d); "
                            "sending requests without one (use --model)\n",
                    r.status);
        }
        json_decref(doc);
    }
    bench_sync_resp_free(&r);
    return 0;
}

int main(int argc, char **argv) {
    bench_config c;
    memset(&c, 0, sizeof c);
    c.base_url = "http://127.0.0.1:8000";
    c.endpoint_path = "/v1/completions";
    c.request_rate = INFINITY;
    c.burstiness = 1.0;
    c.num_prompts = 1000;
    c.input_len = 1024;
    c.output_len = 128;
    c.progress = -1;
    c.timeout_s = 600;
    c.preconnect = -1;
    c.n_pcts = 1;
    c.pcts[0] = 99;
    c.goodput.ttft_ms = c.goodput.tpot_ms = c.goodput.e2el_ms = -1;
    c.api_key = getenv("OPENAI_API_KEY");
    if (c.api_key && !*c.api_key)
        c.api_key = NULL;

    int pr = parse_args(argc, argv, &c);
    if (pr != 0)
        return pr > 0 ? 0 : 2;
    char why[1024];
    asa_errbuf eb = {why, sizeof why};
    if (bench_url_parse(c.base_url, &c.url, &eb) != ASA_OK) {
        fprintf(stderr, "asa-bench: --base-url: %s\n", why);
        return 2;
    }
    if (c.duration_s > 0 && isinf(c.request_rate) && c.max_concurrency <= 0) {
        fprintf(stderr, "asa-bench: --duration needs --request-rate or --max-concurrency\n");
        return 2;
    }

    if (c.realtime) {
        struct sched_param sp = {.sched_priority = 5};
        if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0 &&
            setpriority(PRIO_PROCESS, 0, -10) != 0)
            fprintf(stderr, "asa-bench: --realtime: not allowed here, running at normal "
                            "priority\n");
    }

    int rc = 1;
    char *model_owned = NULL;
    bench_prompts ps = {0};
    bench_run_out out = {0};
    json_t *js = NULL;
    if (discover(&c, &model_owned) != 0)
        goto done;

    if (bench_prompts_make(&c, stderr, &ps, &eb) != ASA_OK) {
        fprintf(stderr, "asa-bench: %s\n", why);
        goto done;
    }
    printf("Model: %s\n", c.model ? c.model : "(none)");
    if (isinf(c.request_rate))
        printf("Traffic request rate: inf\n");
    else
        printf("Traffic request rate: %g\n", c.request_rate);
    printf("Burstiness factor: %g (%s)\n", c.burstiness,
           c.burstiness == 1.0 ? "Poisson process" : "Gamma distribution");
    if (c.max_concurrency > 0)
        printf("Maximum request concurrency: %lld\n", (long long)c.max_concurrency);
    else
        printf("Maximum request concurrency: None\n");
    fflush(stdout);

    /* One socket per request in flight: say so when the open-file limit
     * (raised to its hard limit) cannot hold them all. */
    size_t fds = bench_raise_fd_limit();
    int64_t want = c.max_concurrency > 0 ? c.max_concurrency
                                         : (isinf(c.request_rate) && !(c.duration_s > 0)
                                                ? c.num_prompts
                                                : 0);
    if (want > 0 && (size_t)want + 64 > fds)
        fprintf(stderr,
                "asa-bench: warning: the open-file limit (%zu) allows about %zu connections, "
                "fewer than the %lld requests that could be in flight; the others wait for a "
                "free connection (raise the hard limit: ulimit -Hn)\n",
                fds, fds > 96 ? fds - 64 : 32, (long long)want);

    bench_prom before, after;
    memset(&before, 0, sizeof before);
    scrape_ctx sc = {&c, &before};
    why[0] = '\0';
    if (bench_load_run(&c, &ps, scrape_hook, &sc, &out, &eb) != ASA_OK) {
        fprintf(stderr, "asa-bench: %s\n", why);
        if (strstr(why, "connect"))
            fprintf(stderr, "asa-bench: is the server running?  Point --base-url at it.\n");
        goto done;
    }
    scrape(&c, &after);

    bench_summary s;
    if (bench_summarize(out.res, out.n, out.duration, c.pcts, c.n_pcts, &c.goodput, &s) !=
        ASA_OK) {
        fprintf(stderr, "asa-bench: out of memory\n");
        goto done;
    }
    bench_report_errors(stdout, &out, 10);
    bench_report_print(stdout, &c, &s, &out, &before, &after);
    fflush(stdout);
    bench_report_lag_warning(stderr, &s, &out);
    if (c.result_json) {
        js = bench_report_json(&c, &s, &out, &before, &after);
        if (!js || json_dump_file(js, c.result_json, JSON_COMPACT) != 0) {
            fprintf(stderr, "asa-bench: cannot write %s\n", c.result_json);
            goto done;
        }
    }
    rc = s.completed > 0 ? 0 : 3;
    if (rc == 3)
        fprintf(stderr, "asa-bench: every request failed\n");
done:
    json_decref(js);
    bench_run_out_free(&out);
    bench_prompts_free(&ps);
    free(model_owned);
    return rc;
}
