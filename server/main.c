/*
 * server/main.c - asa-serve: flags and environment, model and engine
 * loading, the HTTP front end, systemd readiness, and SIGTERM draining.
 *
 * Threads: main (signals, health watch), libmicrohttpd's pool, the engine
 * thread (engine/loop.c), and the CPU engine's workers.  Signals are blocked
 * everywhere and taken by main with sigtimedwait.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "srv_int.h"

#define MOD "main"

/* ---- flags ---------------------------------------------------------------- */

typedef struct flag {
    const char *name;   /* --name */
    const char *env;    /* ASA_NAME */
    const char *arg;    /* metavariable, NULL for a switch */
    const char *help;
} flag;

static const flag flags[] = {
    {"model", "ASA_MODEL", "DIR", "model directory (config.json, safetensors, tokenizer.json); default: the bundled model"},
    {"host", "ASA_HOST", "ADDR", "address to listen on (default 127.0.0.1; 0.0.0.0 for all IPv4, :: for all)"},
    {"port", "ASA_PORT", "N", "TCP port (default 8000)"},
    {"api-key", "ASA_API_KEY", "KEY", "require 'Authorization: Bearer KEY' (repeatable; in the environment, comma-separated)"},
    {"served-model-name", "ASA_SERVED_MODEL_NAME", "NAME", "model name in the API (default: the model directory's name)"},
    {"backend", "ASA_BACKEND", "cpu|cuda", "engine backend (default cpu)"},
    {"threads", "ASA_THREADS", "N", "CPU engine threads (default: all cores)"},
    {"max-num-seqs", "ASA_MAX_NUM_SEQS", "N", "requests running at once (default 32)"},
    {"max-num-batched-tokens", "ASA_MAX_NUM_BATCHED_TOKENS", "N", "tokens per engine step (default 2048)"},
    {"max-model-len", "ASA_MAX_MODEL_LEN", "N", "context length (default: the model's max_position_embeddings)"},
    {"kv-cache-bytes", "ASA_KV_CACHE_BYTES", "SIZE", "memory for KV pages, e.g. 512M, 4G (default 512M)"},
    {"kv-cache-memory-fraction", "ASA_KV_CACHE_MEMORY_FRACTION", "F", "KV pages as a fraction of physical memory (instead of --kv-cache-bytes)"},
    {"max-queued-requests", "ASA_MAX_QUEUED_REQUESTS", "N", "waiting requests before 429 (default 1024; 0 = no bound)"},
    {"max-queued-tokens", "ASA_MAX_QUEUED_TOKENS", "N", "waiting prompt tokens before 429 (default 1048576; 0 = no bound)"},
    {"chat-template", "ASA_CHAT_TEMPLATE", "NAME", "chatml, llama2 or plain (default: from tokenizer_config.json, else chatml)"},
    {"max-body-bytes", "ASA_MAX_BODY_BYTES", "SIZE", "largest request body (default 8M)"},
    {"drain-timeout", "ASA_DRAIN_TIMEOUT", "SECONDS", "on SIGTERM, time to finish in-flight requests (default 30)"},
    {"http-threads", "ASA_HTTP_THREADS", "N", "HTTP polling threads (default 2)"},
    {"log-level", "ASA_LOG_LEVEL", "LEVEL", "error, warn, info or debug (default info)"},
    {"help", NULL, NULL, "show this help"},
};
#define N_FLAGS (int)(sizeof flags / sizeof *flags)

static void usage(FILE *f) {
    fprintf(f, "usage: asa-serve [options]\n\nAn OpenAI-compatible server for ASA models.\n"
               "Every option can also be set through the environment variable shown.\n\n");
    for (int i = 0; i < N_FLAGS; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", flags[i].name, flags[i].arg ? " " : "",
                 flags[i].arg ? flags[i].arg : "");
        fprintf(f, "  %-36s %s%s%s%s\n", left, flags[i].help, flags[i].env ? " [" : "",
                flags[i].env ? flags[i].env : "", flags[i].env ? "]" : "");
    }
}

static int parse_size(const char *s, size_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return -1;
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; end++; break;
    case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B')
        end++;
    if (*end == 'B')
        end++;
    if (*end || !(v * mul < 9.0e18)) /* also refuses inf and nan; no UB cast */
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}

static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

typedef struct opts {
    const char *val[N_FLAGS];
    const char *keys[64];
    int n_keys;
} opts;

static int flag_index(const char *name) {
    for (int i = 0; i < N_FLAGS; i++)
        if (strcmp(flags[i].name, name) == 0)
            return i;
    return -1;
}

static int add_keys(opts *o, const char *list, bool split) {
    if (!split) {
        if (o->n_keys == 64)
            return -1;
        o->keys[o->n_keys++] = list;
        return 0;
    }
    char *dup = strdup(list), *save = NULL;
    if (!dup)
        return -1;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*t && o->n_keys < 64)
            o->keys[o->n_keys++] = t; /* leaked on purpose: lives for the process */
    }
    return 0;
}

static int parse_args(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    for (int i = 0; i < N_FLAGS; i++)
        if (flags[i].env && getenv(flags[i].env) && *getenv(flags[i].env)) {
            if (strcmp(flags[i].name, "api-key") == 0)
                add_keys(o, getenv(flags[i].env), true);
            else
                o->val[i] = getenv(flags[i].env);
        }
    int env_keys = o->n_keys;
    bool cli_keys = false;
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "asa-serve: unexpected argument '%s' (see --help)\n", arg);
            return -1;
        }
        char name[64];
        const char *eq = strchr(arg + 2, '=');
        size_t nl = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        if (nl >= sizeof name) {
            fprintf(stderr, "asa-serve: unknown option '%s' (see --help)\n", arg);
            return -1;
        }
        memcpy(name, arg + 2, nl);
        name[nl] = 0;
        int fi = flag_index(name);
        if (fi < 0) {
            fprintf(stderr, "asa-serve: unknown option '--%s' (see --help)\n", name);
            return -1;
        }
        if (!flags[fi].arg) {
            o->val[fi] = "1";
            continue;
        }
        const char *v = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);
        if (!v) {
            fprintf(stderr, "asa-serve: option '--%s' needs a value (%s)\n", name, flags[fi].arg);
            return -1;
        }
        if (strcmp(name, "api-key") == 0) {
            if (!cli_keys) { /* the command line replaces keys from the environment */
                o->n_keys -= env_keys;
                cli_keys = true;
            }
            add_keys(o, v, false);
        } else {
            o->val[fi] = v;
        }
    }
    return 0;
}

/* ---- the bundled model ------------------------------------------------------ */

static bool is_model_dir(const char *dir) {
    char p[PATH_MAX];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/config.json", dir) >= (int)sizeof p)
        return false;
    return stat(p, &st) == 0;
}

/* The bundled model, found relative to the executable: the build tree
 * (build/server/asa-serve -> models/asa-tiny) or an install prefix
 * (bin/asa-serve -> share/asa-serve/models/asa-tiny). */
static char *bundled_model(void) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = 0;
    char *dir = dirname(exe);
    static const char *rel[] = {"../../models/asa-tiny", "../models/asa-tiny",
                                "../share/asa-serve/models/asa-tiny", "models/asa-tiny"};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, rel[i]) >= (int)sizeof p)
            continue;
        if (is_model_dir(p)) {
            char *r = realpath(p, NULL);
            if (r)
                return r;
        }
    }
    return NULL;
}

/* ---- startup ----------------------------------------------------------------- */

static char *read_small_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, 4096, f);
        len += r;
        if (r < 4096)
            break;
        if (len > (64u << 20))
            break;
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

static srv_chat_template choose_template(const char *flag_value, const char *model_dir) {
    srv_chat_template t = SRV_CHAT_CHATML;
    if (flag_value) {
        srv_chat_template_parse(flag_value, &t);
        return t;
    }
    char p[PATH_MAX];
    char *text = NULL;
    if (snprintf(p, sizeof p, "%s/tokenizer_config.json", model_dir) < (int)sizeof p)
        text = read_small_file(p);
    if (text) {
        json_t *j = json_loads(text, 0, NULL);
        json_t *ct = json_object_get(j, "chat_template");
        if (json_is_string(ct))
            t = srv_chat_template_detect(json_string_value(ct));
        json_decref(j);
        free(text);
    }
    return t;
}

static int load(srv *s, const opts *o) {
    char msg[1024] = "";
    asa_errbuf eb = {msg, sizeof msg};
    double t0 = asa_now();
    asa_err err = eng_model_load(s->cfg.model_dir, &s->model, &eb);
    if (err) {
        ASA_LOGE(MOD, "cannot load the model from %s: %s", s->cfg.model_dir, msg[0] ? msg : asa_strerror(err));
        return -1;
    }
    char tp[PATH_MAX];
    if (snprintf(tp, sizeof tp, "%s/tokenizer.json", s->cfg.model_dir) >= (int)sizeof tp) {
        ASA_LOGE(MOD, "model path too long");
        return -1;
    }
    msg[0] = 0;
    err = tok_load(tp, &s->tok, &eb);
    if (err) {
        ASA_LOGE(MOD, "cannot load the tokenizer %s: %s", tp, msg[0] ? msg : asa_strerror(err));
        return -1;
    }
    const eng_config *cfg = &s->model->cfg;
    s->vocab_size = cfg->vocab_size;
    if ((int)tok_vocab_size(s->tok) > cfg->vocab_size) {
        ASA_LOGE(MOD, "the tokenizer has %zu ids but the model's vocabulary has %d",
                 tok_vocab_size(s->tok), cfg->vocab_size);
        return -1;
    }
    s->eos_id = cfg->eos_token_id >= 0 ? cfg->eos_token_id : tok_eos_id(s->tok);
    int32_t bos = tok_bos_id(s->tok);
    if (bos >= 0) {
        size_t bl = 0;
        const char *bt = tok_id_to_token(s->tok, bos, &bl);
        if (bt)
            s->bos_text = strndup(bt, bl);
    }
    s->chat_tmpl = choose_template(o->val[flag_index("chat-template")], s->cfg.model_dir);

    eng_options eo;
    eng_options_default(&eo);
    eo.backend = strcmp(s->cfg.backend, "cuda") == 0 ? ENG_BACKEND_CUDA : ENG_BACKEND_CPU;
    eo.max_seqs = s->cfg.max_num_seqs;
    eo.max_batch_tokens = s->cfg.max_num_batched_tokens;
    eo.kv_bytes = s->cfg.kv_cache_bytes;
    eo.threads = s->cfg.threads;
    int max_len = cfg->max_position_embeddings;
    if (s->cfg.max_model_len > 0 && s->cfg.max_model_len < max_len)
        max_len = s->cfg.max_model_len;
    eo.max_seq_len = max_len;
    msg[0] = 0;
    err = eng_create(s->model, &eo, &s->engine, &eb);
    if (err) {
        ASA_LOGE(MOD, "cannot create the %s engine: %s", s->cfg.backend, msg[0] ? msg : asa_strerror(err));
        return -1;
    }
    /* One sequence of max_model_len tokens must fit in the cache alone, or
     * requests could be refused for lack of cache. */
    kv_stats ks;
    kv_pool_stats(eng_kv_pool(s->engine), &ks);
    int B = cfg->global.block_size;
    long long fit = (long long)ks.total_pages[KV_GLOBAL] * B;
    if (cfg->n_global_layers == 0)
        fit = max_len;
    if (fit < max_len) {
        ASA_LOGW(MOD, "the KV cache holds %lld tokens of one sequence; max_model_len lowered from %d", fit, max_len);
        max_len = (int)fit;
    }
    if (max_len < 2) {
        ASA_LOGE(MOD, "the KV cache is too small for any request; raise --kv-cache-bytes");
        return -1;
    }
    s->max_model_len = max_len;

    eng_loop_options lo = {0};
    lo.max_num_seqs = s->cfg.max_num_seqs;
    lo.max_num_batched_tokens = s->cfg.max_num_batched_tokens;
    lo.max_queued_requests = s->cfg.max_queued_requests;
    lo.max_queued_tokens = s->cfg.max_queued_tokens;
    lo.eos_token_id = s->eos_id;
    lo.pre_step = srv_gen_poll_disconnects;
    lo.pre_step_ud = s;
    err = eng_loop_create(s->engine, &lo, &s->loop);
    if (!err)
        err = eng_loop_start(s->loop);
    if (err) {
        ASA_LOGE(MOD, "cannot start the engine loop: %s", asa_strerror(err));
        return -1;
    }
    ASA_LOGI(MOD, "model %s loaded in %.2f s: %d layers, d=%d, vocab %d, context %d, %s backend, "
                  "KV cache %.1f MiB, chat template %s",
             s->model_name, asa_now() - t0, cfg->num_hidden_layers, cfg->hidden_size, cfg->vocab_size,
             s->max_model_len, s->cfg.backend,
             (double)(ks.total_bytes[KV_GLOBAL] + ks.total_bytes[KV_LOCAL]) / (1024.0 * 1024.0),
             srv_chat_template_name(s->chat_tmpl));
    return 0;
}

static void unload(srv *s) {
    eng_loop_destroy(s->loop);
    s->loop = NULL;
    eng_destroy(s->engine);
    s->engine = NULL;
    tok_destroy(s->tok);
    s->tok = NULL;
    eng_model_destroy(s->model);
    s->model = NULL;
    free(s->bos_text);
    s->bos_text = NULL;
}

/* ---- main ----------------------------------------------------------------------- */

static int configure(srv *s, opts *o, int argc, char **argv) {
    if (parse_args(argc, argv, o))
        return 2;
    if (o->val[flag_index("help")]) {
        usage(stdout);
        return 1;
    }
    if (o->val[flag_index("log-level")]) {
        int l = asa_log_parse_level(o->val[flag_index("log-level")]);
        if (l < 0) {
            fprintf(stderr, "asa-serve: --log-level must be error, warn, info or debug\n");
            return 2;
        }
        asa_log_set_level(l);
    }
    srv_config *c = &s->cfg;
    c->host = o->val[flag_index("host")] ? o->val[flag_index("host")] : "127.0.0.1";
    c->port = 8000;
    c->max_num_seqs = 32;
    c->max_num_batched_tokens = 2048;
    c->kv_cache_bytes = 512u << 20;
    c->max_queued_requests = 1024;
    c->max_queued_tokens = 1 << 20;
    c->backend = "cpu";
    c->http_threads = 2;
    c->max_body_bytes = 8u << 20;
    c->drain_timeout = 30;
    c->api_keys = o->keys;
    c->n_api_keys = o->n_keys;

    struct {
        const char *name;
        long long lo, hi;
        int *dst;
    } ints[] = {
        {"port", 1, 65535, &c->port},
        {"threads", 0, 1024, &c->threads},
        {"max-num-seqs", 1, 65536, &c->max_num_seqs},
        {"max-num-batched-tokens", 1, 1 << 24, &c->max_num_batched_tokens},
        {"max-model-len", 1, 1 << 30, &c->max_model_len},
        {"max-queued-requests", 0, 1 << 30, &c->max_queued_requests},
        {"http-threads", 1, 256, &c->http_threads},
    };
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        const char *v = o->val[flag_index(ints[i].name)];
        long long x;
        if (!v)
            continue;
        if (parse_int(v, ints[i].lo, ints[i].hi, &x)) {
            fprintf(stderr, "asa-serve: --%s must be an integer in [%lld, %lld], got '%s'\n", ints[i].name,
                    ints[i].lo, ints[i].hi, v);
            return 2;
        }
        *ints[i].dst = (int)x;
    }
    const char *v;
    long long x;
    if ((v = o->val[flag_index("max-queued-tokens")])) {
        if (parse_int(v, 0, (long long)1 << 40, &x)) {
            fprintf(stderr, "asa-serve: --max-queued-tokens must be a non-negative integer\n");
            return 2;
        }
        c->max_queued_tokens = x;
    }
    if ((v = o->val[flag_index("kv-cache-bytes")]) && parse_size(v, &c->kv_cache_bytes)) {
        fprintf(stderr, "asa-serve: --kv-cache-bytes must be a size like 512M or 4G, got '%s'\n", v);
        return 2;
    }
    if ((v = o->val[flag_index("kv-cache-memory-fraction")])) {
        char *end;
        double f = strtod(v, &end);
        if (*end || !(f > 0 && f <= 0.95)) {
            fprintf(stderr, "asa-serve: --kv-cache-memory-fraction must be in (0, 0.95], got '%s'\n", v);
            return 2;
        }
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGE_SIZE);
        c->kv_cache_bytes = (size_t)((double)pages * (double)psz * f);
    }
    if ((v = o->val[flag_index("max-body-bytes")]) && parse_size(v, &c->max_body_bytes)) {
        fprintf(stderr, "asa-serve: --max-body-bytes must be a size like 8M, got '%s'\n", v);
        return 2;
    }
    if ((v = o->val[flag_index("drain-timeout")])) {
        char *end;
        c->drain_timeout = strtod(v, &end);
        if (*end || c->drain_timeout < 0) {
            fprintf(stderr, "asa-serve: --drain-timeout must be a number of seconds\n");
            return 2;
        }
    }
    if ((v = o->val[flag_index("backend")])) {
        if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
            fprintf(stderr, "asa-serve: --backend must be cpu or cuda\n");
            return 2;
        }
        c->backend = v;
    }
    if ((v = o->val[flag_index("chat-template")])) {
        srv_chat_template t;
        if (srv_chat_template_parse(v, &t)) {
            fprintf(stderr, "asa-serve: --chat-template must be chatml, llama2 or plain\n");
            return 2;
        }
    }
    c->model_dir = o->val[flag_index("model")];
    if (!c->model_dir) {
        c->model_dir = bundled_model();
        if (!c->model_dir) {
            fprintf(stderr, "asa-serve: no --model given and no bundled model found next to the executable\n");
            return 2;
        }
    }
    if (!is_model_dir(c->model_dir)) {
        fprintf(stderr, "asa-serve: '%s' is not a model directory (no config.json)\n", c->model_dir);
        return 2;
    }
    c->served_model_name = o->val[flag_index("served-model-name")];
    if (!c->served_model_name) {
        char *dup = strdup(c->model_dir);
        if (!dup)
            return 2;
        size_t l = strlen(dup);
        while (l > 1 && dup[l - 1] == '/')
            dup[--l] = 0;
        c->served_model_name = strdup(basename(dup));
        free(dup);
        if (!c->served_model_name)
            return 2;
    }
    /* The name goes into every JSON answer: jansson refuses invalid UTF-8. */
    size_t nl = strlen(c->served_model_name);
    if (nl == 0 || tok_utf8_valid_prefix(c->served_model_name, nl) != nl) {
        fprintf(stderr, "asa-serve: the served model name must be non-empty UTF-8 "
                        "(set --served-model-name)\n");
        return 2;
    }
    return 0;
}

int main(int argc, char **argv) {
    static srv s;
    opts o;
    int rc = configure(&s, &o, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    s.model_name = s.cfg.served_model_name;
    s.created = (double)time(NULL);
    pthread_mutex_init(&s.gens_mu, NULL);
    atomic_init(&s.state, SRV_LOADING);
    s.metrics = srv_metrics_create(s.model_name);
    if (!s.metrics)
        return 1;

    /* Every thread created from here on inherits the blocked signals; main
     * takes them with sigtimedwait. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (srv_http_start(&s))
        return 1;
    ASA_LOGI(MOD, "listening on %s:%d (loading)", s.cfg.host, s.cfg.port);
    if (load(&s, &o)) {
        atomic_store(&s.state, SRV_DEAD);
        srv_http_stop(&s);
        unload(&s);
        return 1;
    }
    atomic_store(&s.state, SRV_READY);
    sd_notify(0, "READY=1\nSTATUS=serving");
    ASA_LOGI(MOD, "ready: http://%s:%d/v1 serving '%s'", s.cfg.host, s.cfg.port, s.model_name);

    int exit_code = 0;
    for (;;) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        eng_loop_stats st;
        eng_loop_stats_get(s.loop, &st);
        if (!st.alive) {
            ASA_LOGE(MOD, "the engine died; exiting so that the supervisor restarts the server");
            atomic_store(&s.state, SRV_DEAD);
            exit_code = 1;
            break;
        }
    }

    /* Drain: refuse new work, let in-flight requests finish (up to the
     * timeout), let their responses go out, then stop. */
    if (exit_code == 0) {
        atomic_store(&s.state, SRV_DRAINING);
        sd_notify(0, "STOPPING=1\nSTATUS=draining");
        eng_loop_drain(s.loop);
        ASA_LOGI(MOD, "draining (up to %.0f s)", s.cfg.drain_timeout);
        double deadline = asa_now() + s.cfg.drain_timeout;
        while (asa_now() < deadline) {
            pthread_mutex_lock(&s.gens_mu);
            bool open = s.gens != NULL;
            pthread_mutex_unlock(&s.gens_mu);
            if (!open && eng_loop_idle(s.loop))
                break;
            struct timespec ts = {0, 20 * 1000 * 1000};
            int sig = sigtimedwait(&sigs, NULL, &ts);
            if (sig == SIGINT || sig == SIGTERM) {
                ASA_LOGW(MOD, "second signal: stopping now");
                break;
            }
        }
    }
    eng_loop_stop(s.loop);   /* aborts what is left; streams get their end */
    struct timespec grace = {0, 100 * 1000 * 1000};
    nanosleep(&grace, NULL);
    srv_http_stop(&s);
    unload(&s);
    srv_metrics_destroy(s.metrics);
    ASA_LOGI(MOD, "stopped");
    return exit_code;
}
