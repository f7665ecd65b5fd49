/*
 * server/http.c - libmicrohttpd front end: routing, authentication, request
 * bodies, and the simple endpoints (/health, /live, /metrics, /v1/models).
 *
 * Nothing here blocks: generation requests are handed to gen.c, which
 * submits them to the engine loop and suspends the connection until the
 * engine thread has output for it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "srv_int.h"

#define MOD "http"

enum MHD_Result srv_send_json(struct MHD_Connection *c, int status, json_t *j) {
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        text = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
    if (!text)
        return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result srv_send_error(srv *s, struct MHD_Connection *c, const srv_error *e) {
    int status = srv_error_status(e);
    json_t *j = srv_error_json(e);
    srv_metrics_http(s->metrics, status);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!body)
        return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (e->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", e->retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    if (e->kind == SRV_E_UNAUTHORIZED)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *ctype,
                                 char *text /* malloc'ed, taken */, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- routing and auth -------------------------------------------------- */

static srv_route route_of(const char *url, const char *method, bool *method_ok) {
    static const struct {
        const char *path, *method;
        srv_route r;
    } routes[] = {
        {"/v1/completions", "POST", R_COMPLETIONS},
        {"/v1/chat/completions", "POST", R_CHAT},
        {"/v1/models", "GET", R_MODELS},
        {"/tokenize", "POST", R_TOKENIZE},
        {"/detokenize", "POST", R_DETOKENIZE},
        {"/health", "GET", R_HEALTH},
        {"/live", "GET", R_LIVE},
        {"/metrics", "GET", R_METRICS},
        {"/version", "GET", R_VERSION},
    };
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
        if (strcmp(url, routes[i].path) == 0) {
            *method_ok = strcmp(method, routes[i].method) == 0 ||
                         (strcmp(method, "HEAD") == 0 && strcmp(routes[i].method, "GET") == 0);
            return routes[i].r;
        }
    }
    if (strncmp(url, "/v1/models/", 11) == 0 && url[11]) {
        *method_ok = strcmp(method, "GET") == 0;
        return R_MODEL_ONE;
    }
    *method_ok = false;
    return R_NONE;
}

/* Constant-time comparison so that key checks leak no timing. */
static bool key_equal(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

static bool authorized(srv *s, struct MHD_Connection *c) {
    if (s->cfg.n_api_keys == 0)
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    bool ok = false;
    for (int i = 0; i < s->cfg.n_api_keys; i++)
        ok |= key_equal(h, s->cfg.api_keys[i]);
    return ok;
}

/* ---- simple endpoints -------------------------------------------------- */

static json_t *model_card(srv *s) {
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:i}", "id", s->model_name, "object", "model",
                     "created", (json_int_t)s->created, "owned_by", "asa-serve", "root",
                     s->cfg.model_dir ? s->cfg.model_dir : "", "max_model_len", s->max_model_len);
}

/* The main thread writes s->loop, s->tok, s->max_model_len, ... while the
 * state is SRV_LOADING and then stores the state (sequentially consistent):
 * an HTTP thread may read them only after it has seen another state.  They
 * stay valid until srv_http_stop has returned. */
static bool loaded(int state) { return state != SRV_LOADING; }

static enum MHD_Result handle_simple(srv *s, struct MHD_Connection *c, srv_conn *cx,
                                     const char *url, int state) {
    srv_error e = {0};
    switch (cx->route) {
    case R_LIVE:
        return srv_send_json(c, 200, json_pack("{s:s}", "status", "alive"));
    case R_HEALTH: {
        eng_loop_stats st = {0};
        if (loaded(state) && s->loop)
            eng_loop_stats_get(s->loop, &st);
        if (state == SRV_READY && st.alive)
            return srv_send_json(c, 200, json_pack("{s:s}", "status", "ok"));
        const char *why = state == SRV_LOADING    ? "loading"
                          : state == SRV_DRAINING ? "draining"
                                                  : "dead";
        if (state == SRV_READY && !st.alive)
            why = "dead";
        return srv_send_json(c, 503, json_pack("{s:s}", "status", why));
    }
    case R_VERSION:
        return srv_send_json(c, 200, json_pack("{s:s}", "version", "0.1.0"));
    case R_MODELS:
        return srv_send_json(c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_card(s)));
    case R_MODEL_ONE:
        if (strcmp(url + 11, s->model_name) != 0) {
            srv_fail(&e, SRV_E_MODEL_NOT_FOUND, "model", "The model '%.200s' does not exist.", url + 11);
            return srv_send_error(s, c, &e);
        }
        return srv_send_json(c, 200, model_card(s));
    case R_METRICS: {
        srv_gauges g = {0};
        if (loaded(state) && s->loop) {
            eng_loop_stats st;
            eng_loop_stats_get(s->loop, &st);
            g.num_requests_running = st.num_running;
            g.num_requests_waiting = st.num_waiting;
            g.kv_cache_usage_perc = st.kv_usage;
            g.engine_alive = st.alive;
            g.num_preemptions = st.num_preemptions;
        }
        size_t len = 0;
        char *text = srv_metrics_render(s->metrics, &g, &len);
        if (!text) {
            srv_fail(&e, SRV_E_INTERNAL, NULL, "out of memory");
            return srv_send_error(s, c, &e);
        }
        return send_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    }
    default:
        srv_fail(&e, SRV_E_NOT_FOUND, NULL, "no such route");
        return srv_send_error(s, c, &e);
    }
}

/* ---- the request handler ----------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
    srv *s = cls;
    srv_conn *cx = *con_cls;
    srv_error e = {0};

    if (!cx) {
        cx = calloc(1, sizeof *cx);
        if (!cx)
            return MHD_NO;
        cx->t_start = asa_now();
        cx->route = route_of(url, method, &cx->method_ok);
        *con_cls = cx;
        /* Reject early, before reading a body we would throw away. */
        if (cx->route == R_NONE) {
            srv_fail(&e, SRV_E_NOT_FOUND, NULL, "Not found: %s %.200s", method, url);
            return srv_send_error(s, c, &e);
        }
        if (!cx->method_ok) {
            srv_fail(&e, SRV_E_METHOD, NULL, "Method %s is not allowed on %.200s", method, url);
            return srv_send_error(s, c, &e);
        }
        if (cx->route != R_HEALTH && cx->route != R_LIVE && !authorized(s, c)) {
            srv_fail(&e, SRV_E_UNAUTHORIZED, NULL, "Invalid or missing API key (Authorization: Bearer <key>)");
            return srv_send_error(s, c, &e);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body_bytes) {
            srv_fail(&e, SRV_E_TOO_LARGE, NULL, "Request body of %s bytes exceeds the limit of %zu bytes",
                     cl, s->cfg.max_body_bytes);
            return srv_send_error(s, c, &e);
        }
        return MHD_YES;
    }

    if (*upload_size) {
        if (!cx->too_large) {
            if (cx->body_len + *upload_size > s->cfg.max_body_bytes) {
                cx->too_large = true;
            } else {
                if (cx->body_len + *upload_size + 1 > cx->body_cap) {
                    size_t cap = (cx->body_cap ? cx->body_cap * 2 : 4096);
                    while (cap < cx->body_len + *upload_size + 1)
                        cap *= 2;
                    char *nb = realloc(cx->body, cap);
                    if (!nb)
                        return MHD_NO;
                    cx->body = nb;
                    cx->body_cap = cap;
                }
                memcpy(cx->body + cx->body_len, upload_data, *upload_size);
                cx->body_len += *upload_size;
                cx->body[cx->body_len] = 0;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }

    /* The whole request is here (or we are resumed after a suspension). */
    if (cx->gen)
        return srv_gen_resume(s, c, cx);
    if (cx->too_large) {
        srv_fail(&e, SRV_E_TOO_LARGE, NULL, "Request body exceeds the limit of %zu bytes",
                 s->cfg.max_body_bytes);
        return srv_send_error(s, c, &e);
    }
    /* Routes that need the model answer 503 until it is loaded (and, for
     * the tokenizer routes, when loading failed). */
    int state = atomic_load(&s->state);
    bool needs_model = cx->route != R_HEALTH && cx->route != R_LIVE && cx->route != R_METRICS &&
                       cx->route != R_VERSION;
    if (needs_model && (!loaded(state) || !s->tok)) {
        srv_fail(&e, SRV_E_UNAVAILABLE, NULL, "The server is %s",
                 !loaded(state) ? "loading the model" : "not healthy");
        e.retry_after = 1;
        return srv_send_error(s, c, &e);
    }
    if (cx->route != R_COMPLETIONS && cx->route != R_CHAT && cx->route != R_TOKENIZE &&
        cx->route != R_DETOKENIZE)
        return handle_simple(s, c, cx, url, state);

    if (state != SRV_READY && (cx->route == R_COMPLETIONS || cx->route == R_CHAT)) {
        srv_fail(&e, SRV_E_UNAVAILABLE, NULL, "The server is %s",
                 state == SRV_LOADING ? "loading the model" : state == SRV_DRAINING ? "shutting down" : "not healthy");
        e.retry_after = 1;
        return srv_send_error(s, c, &e);
    }
    json_error_t jerr;
    json_t *body = json_loadb(cx->body ? cx->body : "", cx->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        srv_fail(&e, SRV_E_BAD_JSON, NULL, "Invalid JSON in request body: %s (line %d, column %d)",
                 jerr.text, jerr.line, jerr.column);
        return srv_send_error(s, c, &e);
    }
    if (!json_is_object(body)) {
        json_decref(body);
        srv_fail(&e, SRV_E_BAD_JSON, NULL, "The request body must be a JSON object");
        return srv_send_error(s, c, &e);
    }
    enum MHD_Result ret;
    if (cx->route == R_TOKENIZE || cx->route == R_DETOKENIZE)
        ret = srv_tokenize_handle(s, c, body, cx->route == R_DETOKENIZE);
    else
        ret = srv_gen_handle(s, c, cx, body);
    json_decref(body);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    srv *s = cls;
    srv_conn *cx = *con_cls;
    if (!cx)
        return;
    if (cx->gen)
        srv_gen_http_release(s, cx, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
    free(cx->body);
    free(cx);
    *con_cls = NULL;
}

/* libmicrohttpd's own messages (a client's malformed request, a socket
 * error) go to our logger at debug level: with MHD_USE_ERROR_LOG alone it
 * writes to stderr whatever the log level, so any client could flood the
 * log. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    if (ASA_LOG_DEBUG > asa_log_threshold)
        return;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = 0;
    ASA_LOGD(MOD, "libmicrohttpd: %s", buf);
}

int srv_http_start(srv *s) {
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    struct sockaddr *sa = NULL;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    const char *host = s->cfg.host ? s->cfg.host : "0.0.0.0";
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)s->cfg.port);
        sa = (struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)s->cfg.port);
        sa = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else if (strcmp(host, "localhost") == 0) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)s->cfg.port);
        a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa = (struct sockaddr *)&a4;
    } else {
        ASA_LOGE(MOD, "--host must be an IPv4 or IPv6 address (or localhost), got '%s'", host);
        return -1;
    }
    s->httpd = MHD_start_daemon(
        flags, (uint16_t)s->cfg.port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)(s->cfg.http_threads > 0 ? s->cfg.http_threads : 2), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)600, MHD_OPTION_CONNECTION_LIMIT, (unsigned)8192,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024), MHD_OPTION_LISTENING_ADDRESS_REUSE,
        (unsigned)1, MHD_OPTION_END);
    if (!s->httpd) {
        ASA_LOGE(MOD, "cannot listen on %s:%d", host, s->cfg.port);
        return -1;
    }
    return 0;
}

void srv_http_stop(srv *s) {
    if (s->httpd) {
        MHD_stop_daemon(s->httpd);
        s->httpd = NULL;
    }
}
