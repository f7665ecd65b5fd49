/* tests/client/scripted_server.c - an OpenAI-compatible streaming server
 * whose timing is scripted, for testing asa-bench.
 *
 * Every generation request streams its tokens on a fixed timetable measured
 * from the moment the request was read: token k (0-based) leaves at
 * t0 + ttft + k * itl.  Deadlines are absolute (no drift), kept in a binary
 * heap, and one timerfd armed with the earliest deadline (TFD_TIMER_ABSTIME,
 * CLOCK_MONOTONIC, the clock of uv_hrtime) wakes the loop; libuv timers
 * have only millisecond resolution.  Chunk bytes are built once; emitting a
 * token is one non-blocking write.  The server is single-threaded.
 *
 * Endpoints: POST /v1/completions, POST /v1/chat/completions (stream only),
 * POST /tokenize, GET /v1/models, GET /metrics, GET /health.
 *
 * Options:
 *   --port N             listen on 127.0.0.1:N (0: any free port; the port
 *                        is printed as "PORT n" on stdout)
 *   --ttft-ms X          time to first token (default 50)
 *   --itl-ms X           gap between tokens (default 20)
 *   --tokens N           tokens per request (default: the request's max_tokens)
 *   --error-chunk-every N  every Nth request sends an error event after
 *                        --fail-after tokens
 *   --cut-every N        every Nth request is cut (connection closed, no
 *                        [DONE]) after --fail-after tokens
 *   --http500-every N, --http429-every N   every Nth request gets that status
 *   --fail-after K       tokens sent before an injected failure (default 2)
 *   --prefix P           metric name prefix, "asa" (default) or "vllm"
 *   --preempt-every N    every Nth request counts one preemption in /metrics
 *   --queue-ms X         every request adds X ms of queue time to /metrics
 *   --no-tokenize        /tokenize answers 404
 *   --no-usage           no usage chunk at the end of a stream
 *   --empty-text         every token chunk has empty text (as a server holding
 *                        back partial characters); usage still counts them
 *   --close-idle         close every connection once its response is sent,
 *                        without saying so (as a server whose keep-alive
 *                        timeout expired): clients must retry on a new one
 *   --realtime           try to run under SCHED_FIFO (else nice -10) so that
 *                        other processes on a loaded machine do not delay
 *                        the timetable; silently stays normal if not allowed
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

typedef struct srv_conn srv_conn;

typedef struct stream {
    srv_conn *conn;
    uint64_t t0;
    uint64_t next;    /* deadline of the next token, ns */
    int64_t k, n;     /* next token index, tokens to send */
    int64_t prompt_tokens;
    int chat;
    int fail;         /* 0, 'e' error chunk, 'c' cut */
    size_t heap_idx;
} stream;

struct srv_conn {
    uv_poll_t poll;
    int fd;
    char *out; /* bytes the socket did not take yet */
    size_t out_len, out_cap;
    char *buf;
    size_t len, cap;
    stream *st; /* the streaming response in progress, or NULL */
    int closing;
    int close_after;
};

static struct {
    uv_loop_t *loop;
    double ttft_ms, itl_ms;
    int64_t tokens;
    int64_t err_every, cut_every, h500_every, h429_every, fail_after;
    int64_t preempt_every;
    double queue_ms;
    const char *prefix;
    int no_tokenize, no_usage, close_idle, empty_text;

    int64_t n_gen;        /* generation requests seen */
    int64_t preemptions;
    double queue_sum;
    int64_t queue_count;
    int64_t streams_done;

    stream **heap;
    size_t heap_len, heap_cap;
    int tfd;
    uv_poll_t tpoll;
    uv_prepare_t prep;
    uint64_t batch_ns;
    int batch_valid;

    char *cmpl_tok, *chat_tok, *cmpl_last, *chat_last; /* framed chunks */
    size_t cmpl_tok_len, chat_tok_len, cmpl_last_len, chat_last_len;
} S;

static uint64_t stamp(void) {
    if (!S.batch_valid) {
        S.batch_ns = uv_hrtime();
        S.batch_valid = 1;
    }
    return S.batch_ns;
}

static void on_prepare(uv_prepare_t *h) {
    (void)h;
    S.batch_valid = 0;
}

/* ---- heap of streams by next deadline ----------------------------------- */

static void heap_swap(size_t a, size_t b) {
    stream *t = S.heap[a];
    S.heap[a] = S.heap[b];
    S.heap[b] = t;
    S.heap[a]->heap_idx = a;
    S.heap[b]->heap_idx = b;
}

static void heap_up(size_t i) {
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (S.heap[p]->next <= S.heap[i]->next)
            break;
        heap_swap(p, i);
        i = p;
    }
}

static void heap_down(size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < S.heap_len && S.heap[l]->next < S.heap[m]->next)
            m = l;
        if (r < S.heap_len && S.heap[r]->next < S.heap[m]->next)
            m = r;
        if (m == i)
            break;
        heap_swap(i, m);
        i = m;
    }
}

static void heap_push(stream *s) {
    if (S.heap_len == S.heap_cap) {
        S.heap_cap = S.heap_cap ? S.heap_cap * 2 : 1024;
        S.heap = realloc(S.heap, S.heap_cap * sizeof *S.heap);
        if (!S.heap) {
            fprintf(stderr, "scripted_server: out of memory\n");
            exit(1);
        }
    }
    s->heap_idx = S.heap_len;
    S.heap[S.heap_len++] = s;
    heap_up(s->heap_idx);
}

static void heap_remove(stream *s) {
    size_t i = s->heap_idx;
    S.heap_len--;
    if (i != S.heap_len) {
        S.heap[i] = S.heap[S.heap_len];
        S.heap[i]->heap_idx = i;
        heap_down(i);
        heap_up(i);
    }
}

static void arm_timer(void) {
    struct itimerspec its = {0};
    if (S.heap_len) {
        uint64_t d = S.heap[0]->next;
        its.it_value.tv_sec = (time_t)(d / 1000000000ull);
        its.it_value.tv_nsec = (long)(d % 1000000000ull);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1;
    }
    timerfd_settime(S.tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* ---- writing ------------------------------------------------------------ */

static void conn_free_cb(uv_handle_t *h) {
    srv_conn *c = h->data;
    close(c->fd);
    free(c->out);
    free(c->buf);
    free(c);
}

static void conn_close(srv_conn *c) {
    if (c->closing)
        return;
    c->closing = 1;
    if (c->st) {
        heap_remove(c->st);
        free(c->st);
        c->st = NULL;
    }
    uv_close((uv_handle_t *)&c->poll, conn_free_cb);
}

static void on_io(uv_poll_t *h, int status, int events);

static void send_bytes(srv_conn *c, const char *p, size_t n) {
    if (c->closing || n == 0)
        return;
    size_t w = 0;
    if (c->out_len == 0) {
        ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            conn_close(c);
            return;
        }
        w = r > 0 ? (size_t)r : 0;
        if (w == n)
            return;
    }
    if (c->out_len + (n - w) > c->out_cap) {
        size_t nc = c->out_cap ? c->out_cap : 4096;
        while (nc < c->out_len + (n - w))
            nc *= 2;
        char *nb = realloc(c->out, nc);
        if (!nb) {
            conn_close(c);
            return;
        }
        c->out = nb;
        c->out_cap = nc;
    }
    memcpy(c->out + c->out_len, p + w, n - w);
    c->out_len += n - w;
    uv_poll_start(&c->poll, UV_READABLE | UV_WRITABLE, on_io);
}

/* One SSE event as one HTTP chunk. */
static void send_event(srv_conn *c, const char *json) {
    size_t jl = strlen(json);
    size_t cap = jl + 64;
    char stackbuf[4096];
    char *b = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
    if (!b)
        return;
    int n = snprintf(b, cap, "%zx\r\ndata: %s\n\n\r\n", jl + 8, json);
    send_bytes(c, b, (size_t)n);
    if (b != stackbuf)
        free(b);
}

static char *frame(const char *json, size_t *len) {
    size_t jl = strlen(json);
    char *b = malloc(jl + 64);
    if (!b)
        exit(1);
    *len = (size_t)sprintf(b, "%zx\r\ndata: %s\n\n\r\n", jl + 8, json);
    return b;
}

static void send_simple(srv_conn *c, int status, const char *reason, const char *ctype,
                        const char *body) {
    char head[512];
    size_t bl = strlen(body);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                     status, reason, ctype, bl);
    size_t tot = (size_t)n + bl;
    char *b = malloc(tot);
    if (!b)
        return;
    memcpy(b, head, (size_t)n);
    memcpy(b + n, body, bl);
    send_bytes(c, b, tot);
    free(b);
}

/* ---- streaming ---------------------------------------------------------- */

/* Appends one SSE event, framed as an HTTP chunk, at b + *len. */
static void put_event(char *b, size_t *len, const char *json) {
    size_t jl = strlen(json);
    *len += (size_t)sprintf(b + *len, "%zx\r\ndata: %s\n\n\r\n", jl + 8, json);
}

/* The last token, the usage chunk, [DONE] and the end of the chunked body
 * leave in one write, so that they arrive together. */
static void stream_finish(stream *s) {
    srv_conn *c = s->conn;
    char buf[2048], ev[512];
    size_t len = 0;
    const char *lastb = s->chat ? S.chat_last : S.cmpl_last;
    size_t lastl = s->chat ? S.chat_last_len : S.cmpl_last_len;
    memcpy(buf, lastb, lastl);
    len = lastl;
    if (!S.no_usage) {
        snprintf(ev, sizeof ev,
                 "{\"id\":\"s\",\"object\":\"%s\",\"created\":0,\"model\":\"scripted\","
                 "\"choices\":[],\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
                 "\"total_tokens\":%lld}}",
                 s->chat ? "chat.completion.chunk" : "text_completion",
                 (long long)s->prompt_tokens, (long long)s->n,
                 (long long)(s->prompt_tokens + s->n));
        put_event(buf, &len, ev);
    }
    put_event(buf, &len, "[DONE]");
    memcpy(buf + len, "0\r\n\r\n", 5);
    len += 5;
    send_bytes(c, buf, len);
    if (c->closing)
        return;
    heap_remove(s);
    c->st = NULL;
    free(s);
    S.streams_done++;
    if (c->close_after)
        conn_close(c);
}

static void stream_tick(stream *s) {
    srv_conn *c = s->conn;
    if (s->fail && s->k == s->n) {
        /* injected failure after fail_after tokens */
        if (s->fail == 'c') {
            conn_close(c);
            return;
        }
        send_event(c, "{\"error\":{\"object\":\"error\",\"message\":\"scripted error\","
                      "\"type\":\"InternalServerError\",\"code\":500}}");
        send_event(c, "[DONE]");
        send_bytes(c, "0\r\n\r\n", 5);
        heap_remove(s);
        c->st = NULL;
        free(s);
        return;
    }
    if (!s->fail && s->k == s->n - 1) {
        s->k++;
        stream_finish(s);
        return;
    }
    if (s->chat)
        send_bytes(c, S.chat_tok, S.chat_tok_len);
    else
        send_bytes(c, S.cmpl_tok, S.cmpl_tok_len);
    if (c->closing)
        return;
    s->k++;
    s->next = s->t0 + (uint64_t)((S.ttft_ms + S.itl_ms * (double)s->k) * 1e6);
    heap_down(s->heap_idx);
}

static void on_timer(uv_poll_t *h, int status, int events) {
    (void)h;
    (void)status;
    (void)events;
    uint64_t exp;
    if (read(S.tfd, &exp, sizeof exp) < 0 && errno != EAGAIN)
        return;
    uint64_t now = uv_hrtime();
    while (S.heap_len && S.heap[0]->next <= now + 20000)
        stream_tick(S.heap[0]);
    arm_timer();
}

/* ---- requests ----------------------------------------------------------- */

static uint32_t word_id(const char *w, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)w[i]) * 16777619u;
    return 1 + h % 999;
}

static int64_t count_words(const char *s) {
    int64_t n = 0;
    int in = 0;
    for (; *s; s++) {
        int sp = *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r';
        if (!sp && !in)
            n++;
        in = !sp;
    }
    return n;
}

static int64_t prompt_tokens_of(json_t *req, int chat) {
    if (chat) {
        int64_t n = 0;
        json_t *m;
        size_t i;
        json_array_foreach(json_object_get(req, "messages"), i, m) {
            json_t *ct = json_object_get(m, "content");
            if (json_is_string(ct))
                n += count_words(json_string_value(ct));
        }
        return n;
    }
    json_t *p = json_object_get(req, "prompt");
    if (json_is_array(p))
        return (int64_t)json_array_size(p);
    if (json_is_string(p))
        return count_words(json_string_value(p));
    return 0;
}

static void handle_generate(srv_conn *c, json_t *req, int chat, uint64_t t0) {
    S.n_gen++;
    int64_t nreq = S.n_gen;
    if (S.preempt_every > 0 && nreq % S.preempt_every == 0)
        S.preemptions++;
    S.queue_sum += S.queue_ms / 1000.0;
    S.queue_count++;
    if (S.h500_every > 0 && nreq % S.h500_every == 0) {
        send_simple(c, 500, "Internal Server Error", "application/json",
                    "{\"error\":{\"message\":\"scripted HTTP 500\",\"type\":"
                    "\"InternalServerError\",\"code\":500}}");
        return;
    }
    if (S.h429_every > 0 && nreq % S.h429_every == 0) {
        send_simple(c, 429, "Too Many Requests", "application/json",
                    "{\"error\":{\"message\":\"scripted HTTP 429\",\"type\":"
                    "\"RateLimitError\",\"code\":429}}");
        return;
    }
    json_t *st = json_object_get(req, "stream");
    if (!json_is_true(st)) {
        send_simple(c, 400, "Bad Request", "application/json",
                    "{\"error\":{\"message\":\"this server only streams\",\"code\":400}}");
        return;
    }
    int64_t n = S.tokens;
    if (n <= 0) {
        json_t *mt = json_object_get(req, chat ? "max_completion_tokens" : "max_tokens");
        if (!json_is_integer(mt))
            mt = json_object_get(req, "max_tokens");
        n = json_is_integer(mt) ? json_integer_value(mt) : 16;
    }
    if (n < 1)
        n = 1;
    stream *s = calloc(1, sizeof *s);
    if (!s) {
        conn_close(c);
        return;
    }
    s->conn = c;
    s->t0 = t0;
    s->n = n;
    s->chat = chat;
    s->prompt_tokens = prompt_tokens_of(req, chat);
    if (S.err_every > 0 && nreq % S.err_every == 0)
        s->fail = 'e';
    else if (S.cut_every > 0 && nreq % S.cut_every == 0)
        s->fail = 'c';
    if (s->fail && S.fail_after < s->n)
        s->n = S.fail_after;
    s->next = t0 + (uint64_t)(S.ttft_ms * 1e6);
    c->st = s;
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
    send_bytes(c, head, sizeof head - 1);
    if (chat) /* the role chunk: no content, must not count as a token */
        send_event(c, "{\"id\":\"s\",\"object\":\"chat.completion.chunk\",\"created\":0,"
                      "\"model\":\"scripted\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                      "\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}");
    heap_push(s);
    arm_timer();
}

static void handle_tokenize(srv_conn *c, json_t *req) {
    if (S.no_tokenize) {
        send_simple(c, 404, "Not Found", "application/json", "{\"detail\":\"Not Found\"}");
        return;
    }
    json_t *p = json_object_get(req, "prompt");
    json_t *toks = json_array();
    if (json_is_array(p)) {
        json_array_extend(toks, p);
    } else if (json_is_string(p)) {
        const char *s = json_string_value(p);
        while (*s) {
            while (*s == ' ' || *s == '\n' || *s == '\t')
                s++;
            const char *e = s;
            while (*e && *e != ' ' && *e != '\n' && *e != '\t')
                e++;
            if (e > s)
                json_array_append_new(toks, json_integer(word_id(s, (size_t)(e - s))));
            s = e;
        }
    }
    json_t *o = json_pack("{s:i,s:i,s:o}", "count", (int)json_array_size(toks),
                          "max_model_len", 4096, "tokens", toks);
    char *body = json_dumps(o, JSON_COMPACT);
    send_simple(c, 200, "OK", "application/json", body ? body : "{}");
    free(body);
    json_decref(o);
}

static void handle_metrics(srv_conn *c) {
    char body[2048];
    const char *p = S.prefix;
    snprintf(body, sizeof body,
             "# HELP %s:num_preemptions_total Cumulative number of preemptions.\n"
             "# TYPE %s:num_preemptions_total counter\n"
             "%s:num_preemptions_total{engine=\"0\",model_name=\"scripted\"} %lld.0\n"
             "# HELP %s:request_queue_time_seconds Time spent waiting.\n"
             "# TYPE %s:request_queue_time_seconds histogram\n"
             "%s:request_queue_time_seconds_bucket{le=\"+Inf\",model_name=\"scripted\"} %lld.0\n"
             "%s:request_queue_time_seconds_count{model_name=\"scripted\"} %lld.0\n"
             "%s:request_queue_time_seconds_sum{model_name=\"scripted\"} %.9f\n"
             "%s:num_requests_running{model_name=\"scripted\"} %zu.0\n",
             p, p, p, (long long)S.preemptions, p, p, p, (long long)S.queue_count, p,
             (long long)S.queue_count, p, S.queue_sum, p, S.heap_len);
    send_simple(c, 200, "OK", "text/plain; version=0.0.4", body);
}

/* Parses and answers every complete request in c->buf. */
static void process(srv_conn *c, uint64_t t0) {
    while (!c->closing && !c->st) {
        char *hend = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!hend)
            return;
        size_t hl = (size_t)(hend - c->buf) + 4;
        size_t clen = 0;
        int close_after = 0;
        /* headers */
        char *line = memchr(c->buf, '\n', hl);
        for (char *l = line ? line + 1 : NULL; l && l < c->buf + hl - 2;) {
            char *e = memchr(l, '\n', (size_t)(c->buf + hl - l));
            if (!e)
                break;
            if (strncasecmp(l, "content-length:", 15) == 0)
                clen = strtoul(l + 15, NULL, 10);
            else if (strncasecmp(l, "connection:", 11) == 0 && strstr(l, "close") &&
                     strstr(l, "close") < e)
                close_after = 1;
            l = e + 1;
        }
        if (c->len < hl + clen)
            return;
        char method[8] = "", path[128] = "";
        sscanf(c->buf, "%7s %127s", method, path);
        json_t *req = clen ? json_loadb(c->buf + hl, clen, 0, NULL) : NULL;
        c->close_after = close_after || S.close_idle;
        if (strcmp(method, "POST") == 0 && strcmp(path, "/v1/completions") == 0)
            req ? handle_generate(c, req, 0, t0)
                : send_simple(c, 400, "Bad Request", "application/json", "{}");
        else if (strcmp(method, "POST") == 0 && strcmp(path, "/v1/chat/completions") == 0)
            req ? handle_generate(c, req, 1, t0)
                : send_simple(c, 400, "Bad Request", "application/json", "{}");
        else if (strcmp(method, "POST") == 0 && strcmp(path, "/tokenize") == 0)
            handle_tokenize(c, req);
        else if (strcmp(path, "/v1/models") == 0)
            send_simple(c, 200, "OK", "application/json",
                        "{\"object\":\"list\",\"data\":[{\"id\":\"scripted\",\"object\":"
                        "\"model\",\"root\":\"scripted\",\"owned_by\":\"test\"}]}");
        else if (strcmp(path, "/metrics") == 0)
            handle_metrics(c);
        else if (strcmp(path, "/health") == 0)
            send_simple(c, 200, "OK", "text/plain", "");
        else
            send_simple(c, 404, "Not Found", "application/json", "{\"detail\":\"Not Found\"}");
        json_decref(req);
        memmove(c->buf, c->buf + hl + clen, c->len - hl - clen);
        c->len -= hl + clen;
        if (!c->st && c->close_after && !c->closing)
            conn_close(c);
    }
}

/* Monotonic time (the uv_hrtime clock) at which the kernel received the
 * bytes of the last recvmsg, from SO_TIMESTAMPNS; the server's own delay in
 * getting to the socket then does not move the timetable. */
static uint64_t rx_time(struct msghdr *m) {
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec pkt, rt;
            memcpy(&pkt, CMSG_DATA(cm), sizeof pkt);
            clock_gettime(CLOCK_REALTIME, &rt);
            uint64_t mono = uv_hrtime();
            int64_t age = (int64_t)(rt.tv_sec - pkt.tv_sec) * 1000000000ll +
                          (rt.tv_nsec - pkt.tv_nsec);
            if (age < 0)
                age = 0;
            if ((uint64_t)age > mono)
                return stamp();
            return mono - (uint64_t)age;
        }
    }
    return stamp();
}

static void on_io(uv_poll_t *h, int status, int events) {
    srv_conn *c = h->data;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (events & UV_WRITABLE) {
        while (c->out_len) {
            ssize_t r = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    break;
                conn_close(c);
                return;
            }
            memmove(c->out, c->out + r, c->out_len - (size_t)r);
            c->out_len -= (size_t)r;
        }
        if (!c->out_len)
            uv_poll_start(&c->poll, UV_READABLE, on_io);
    }
    if (!(events & UV_READABLE))
        return;
    uint64_t t0 = 0;
    for (;;) {
        if (c->cap - c->len < 16384) {
            size_t nc = c->cap ? c->cap * 2 : 16384;
            char *nb = realloc(c->buf, nc);
            if (!nb) {
                conn_close(c);
                return;
            }
            c->buf = nb;
            c->cap = nc;
        }
        struct iovec iov = {c->buf + c->len, c->cap - c->len};
        char ctrl[256];
        struct msghdr m = {0};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = ctrl;
        m.msg_controllen = sizeof ctrl;
        ssize_t r = recvmsg(c->fd, &m, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            break;
        if (r <= 0) {
            conn_close(c);
            return;
        }
        t0 = rx_time(&m);
        c->len += (size_t)r;
        if ((size_t)r < iov.iov_len)
            break;
    }
    if (t0 && getenv("SS_DEBUG"))
        fprintf(stderr, "t0 age %.3f ms\n", (double)(uv_hrtime() - t0) / 1e6);
    if (t0)
        process(c, t0);
}

static void on_accept(uv_poll_t *h, int status, int events) {
    int lfd = *(int *)h->data;
    (void)status;
    (void)events;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        srv_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        uv_poll_init(S.loop, &c->poll, fd);
        c->poll.data = c;
        uv_poll_start(&c->poll, UV_READABLE, on_io);
    }
}

static void build_chunks(void) {
    const char *ct = "{\"id\":\"s\",\"object\":\"text_completion\",\"created\":0,\"model\":"
                     "\"scripted\",\"choices\":[{\"index\":0,\"text\":\"%s\",\"logprobs\":"
                     "null,\"finish_reason\":%s}]}";
    const char *ch = "{\"id\":\"s\",\"object\":\"chat.completion.chunk\",\"created\":0,"
                     "\"model\":\"scripted\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                     "\"%s\"},\"finish_reason\":%s}]}";
    const char *text = S.empty_text ? "" : " tok";
    char b[512];
    snprintf(b, sizeof b, ct, text, "null");
    S.cmpl_tok = frame(b, &S.cmpl_tok_len);
    snprintf(b, sizeof b, ct, text, "\"length\"");
    S.cmpl_last = frame(b, &S.cmpl_last_len);
    snprintf(b, sizeof b, ch, text, "null");
    S.chat_tok = frame(b, &S.chat_tok_len);
    snprintf(b, sizeof b, ch, text, "\"length\"");
    S.chat_last = frame(b, &S.chat_last_len);
}

int main(int argc, char **argv) {
    int port = 0, realtime = 0;
    S.ttft_ms = 50;
    S.itl_ms = 20;
    S.fail_after = 2;
    S.prefix = "asa";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "0";
#define OPT(name) (strcmp(a, name) == 0 && (++i, 1))
        if (OPT("--port"))
            port = atoi(v);
        else if (OPT("--ttft-ms"))
            S.ttft_ms = atof(v);
        else if (OPT("--itl-ms"))
            S.itl_ms = atof(v);
        else if (OPT("--tokens"))
            S.tokens = atoll(v);
        else if (OPT("--error-chunk-every"))
            S.err_every = atoll(v);
        else if (OPT("--cut-every"))
            S.cut_every = atoll(v);
        else if (OPT("--http500-every"))
            S.h500_every = atoll(v);
        else if (OPT("--http429-every"))
            S.h429_every = atoll(v);
        else if (OPT("--fail-after"))
            S.fail_after = atoll(v);
        else if (OPT("--prefix"))
            S.prefix = v;
        else if (OPT("--preempt-every"))
            S.preempt_every = atoll(v);
        else if (OPT("--queue-ms"))
            S.queue_ms = atof(v);
        else if (strcmp(a, "--no-tokenize") == 0)
            S.no_tokenize = 1;
        else if (strcmp(a, "--no-usage") == 0)
            S.no_usage = 1;
        else if (strcmp(a, "--close-idle") == 0)
            S.close_idle = 1;
        else if (strcmp(a, "--empty-text") == 0)
            S.empty_text = 1;
        else if (strcmp(a, "--realtime") == 0)
            realtime = 1;
        else {
            fprintf(stderr, "scripted_server: unknown option %s\n", a);
            return 2;
        }
#undef OPT
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* thousands of connections */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (realtime) {
        struct sched_param sp = {.sched_priority = 10};
        if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0 && setpriority(PRIO_PROCESS, 0, -10) != 0)
            fprintf(stderr, "scripted_server: running without raised priority\n");
    }
    build_chunks();
    S.loop = uv_default_loop();
    S.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (S.tfd < 0) {
        perror("timerfd_create");
        return 1;
    }
    uv_poll_init(S.loop, &S.tpoll, S.tfd);
    uv_poll_start(&S.tpoll, UV_READABLE, on_timer);
    uv_prepare_init(S.loop, &S.prep);
    uv_prepare_start(&S.prep, on_prepare);

    static int lfd;
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(lfd, 8192) != 0) {
        fprintf(stderr, "scripted_server: cannot listen on port %d: %s\n", port,
                strerror(errno));
        return 1;
    }
    socklen_t sl = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &sl);
    uv_poll_t lpoll;
    uv_poll_init(S.loop, &lpoll, lfd);
    lpoll.data = &lfd;
    uv_poll_start(&lpoll, UV_READABLE, on_accept);
    printf("PORT %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return uv_run(S.loop, UV_RUN_DEFAULT);
}
