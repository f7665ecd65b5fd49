/* client/bench_load.c - the measured run: one libuv loop, many keep-alive
 * HTTP/1.1 connections (non-blocking sockets watched by uv_poll handles),
 * streaming requests sent on a schedule.
 *
 * Clock discipline (why the numbers do not carry the client's own cost):
 *   - Request bytes are built before the run; sending is one send().
 *   - A send is stamped just before its send() (or before connect(), when a
 *     request has to open a connection; connections are opened ahead of the
 *     run so that this does not happen at the start).
 *   - Received bytes are stamped with the time the kernel received them
 *     (SO_TIMESTAMPNS on every socket, read with recvmsg), converted to the
 *     monotonic clock.  The time the loop takes to get to a socket, parse
 *     the chunk and get to the next one does not show up in TTFT or ITL.
 *     When the kernel gives no stamp, the first read of a poll round takes
 *     the clock and the other reads of that round reuse it (a uv_prepare
 *     handle, run right before each poll, invalidates it).
 *   - The limit: when the client falls a whole inter-token gap behind on a
 *     socket, the kernel merges the queued chunks and they share the stamp
 *     of the last one (an ITL of 0 next to a double one).  BENCHMARKS.md
 *     says how many streams one process sustains before that happens.
 * ASA_BENCH_USER_CLOCK=1 in the environment turns the kernel stamps off
 * and stamps every read with the clock at the time it is processed, to
 * measure what they buy.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

enum { C_CONNECTING, C_IDLE, C_BUSY, C_CLOSING };

typedef struct load load;
typedef struct conn conn;

struct conn {
    uv_poll_t poll;
    int fd;
    int connected;
    const char *wpend; /* unsent rest of the request (points into the prompt) */
    size_t wpend_len;
    load *L;
    int state;
    int uses;          /* requests started on this connection */
    int64_t rid;       /* request index (main or warmup), -1 when none */
    int warm;          /* the request is a warmup one */
    int got_bytes;     /* response bytes seen for the current request */
    int first, done, err_event, non_stream;
    uint64_t start_ns, last_ns;
    uint64_t any_first_ns, any_last_ns; /* chunks with choices but no text */
    int64_t chunks, usage_out, usage_in;
    char *body; /* error / non-streaming body, capped */
    size_t body_len, body_cap;
    char *err;  /* first error event text */
    bench_http http;
    bench_sse sse;
    conn *next_idle;
    conn *prev_all, *next_all;
};

typedef struct pending {
    int64_t rid;
    int warm;
    uint64_t arrival_ns;
} pending;

struct load {
    uv_loop_t loop;
    const bench_config *c;
    const bench_prompts *ps;
    struct sockaddr_storage addr;
    int rc;
    char *fatal;

    conn *idle;           /* stack of idle connections */
    conn *all;            /* every open connection */
    size_t n_open, max_conns;
    int64_t inflight;
    int64_t cap;          /* max concurrency, INT64_MAX when unlimited */

    pending *fifo;        /* ring of requests waiting for a slot */
    size_t fifo_head, fifo_len, fifo_cap;

    int phase;            /* 0 preconnect, 1 warmup, 2 main, 3 done */
    int64_t preconnect_left, preconnected;
    int64_t warm_total, warm_done;
    bench_result *warm_res;

    bench_result *res;
    size_t n_res, cap_res;
    int64_t issued, finished, failed;
    int64_t total_planned; /* -1 for open-ended (--duration) runs */
    double *sched;
    size_t sched_n;
    double next_open_send; /* open-ended runs: next send time */
    bench_rng rng;
    uint64_t t0_ns, t_end_ns, deadline_ns;
    int stop_issuing;
    int duration_done;
    int closed_loop;      /* --duration with an infinite rate */

    uv_timer_t sched_timer, progress_timer, watchdog, duration_timer;
    uv_prepare_t prep;
    uv_signal_t sigint;
    int interrupts;

    uint64_t cur_ns;      /* receive stamp of the bytes being handled; 0 outside */
    uint64_t batch_ns;    /* poll-round stamp (when the kernel gives none) */
    int batch_valid, per_read_stamps;
    unsigned batch_uses;
    int64_t kernel_stamps; /* reads stamped by the kernel */
    /* How long received bytes waited for the client (kernel stamp -> read),
     * the client's own delay, reported so that a starved client is visible
     * rather than silently wrong. */
    double *lags;         /* s, one per kernel-stamped read */
    size_t n_lag, cap_lag;
    int tokens_in_read;   /* token chunks in the current read */
    int64_t merged_reads; /* reads that carried more than one token chunk */
    void (*before_main)(void *);
    void *before_main_arg;
    int progress_tty, progress_on;
    char rbuf[65536];     /* every read lands here; parsed before the next */
};

static uint64_t now_ns(void) { return uv_hrtime(); }

static uint64_t rx_stamp(load *L) {
    if (L->per_read_stamps || !L->batch_valid || ++L->batch_uses >= 1024) {
        L->batch_ns = now_ns();
        L->batch_valid = 1;
        L->batch_uses = 0;
    }
    return L->batch_ns;
}

static void lag_add(load *L, uint64_t ns) {
    if (L->n_lag == L->cap_lag) {
        size_t nc = L->cap_lag ? L->cap_lag * 2 : 4096;
        double *nv = realloc(L->lags, nc * sizeof *nv);
        if (!nv)
            return; /* a statistic, not a result: drop the sample */
        L->lags = nv;
        L->cap_lag = nc;
    }
    L->lags[L->n_lag++] = (double)ns * 1e-9;
}

static void on_prepare(uv_prepare_t *h) {
    load *L = h->data;
    L->batch_valid = 0;
}

static double sec(uint64_t ns) { return (double)ns * 1e-9; }

static void pump(load *L);
static void check_end(load *L);
static void duration_over(load *L);
static void conn_close(conn *k);

/* ---- results ------------------------------------------------------------ */

static bench_result *result_of(load *L, conn *k) {
    return k->warm ? &L->warm_res[k->rid] : &L->res[k->rid];
}

static const bench_prompt *prompt_of(load *L, int64_t rid, int warm) {
    (void)warm;
    return &L->ps->v[(size_t)rid % L->ps->n];
}

static char *dup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dup_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

/* Non-streaming 200 answer: one JSON document with the whole completion. */
static void parse_whole_body(conn *k, uint64_t t) {
    json_t *doc = json_loadb(k->body ? k->body : "", k->body_len, 0, NULL);
    json_t *ch = json_object_get(doc, "choices");
    if (json_is_array(ch) && json_array_size(ch) > 0) {
        k->first = 1;
        k->done = 1;
        k->chunks = 1;
        k->last_ns = t;
        json_t *u = json_object_get(doc, "usage");
        json_t *ct = json_object_get(u, "completion_tokens");
        json_t *pt = json_object_get(u, "prompt_tokens");
        if (json_is_integer(ct))
            k->usage_out = json_integer_value(ct);
        if (json_is_integer(pt))
            k->usage_in = json_integer_value(pt);
    }
    json_decref(doc);
}

/* The current request on k is over (cut says how).  Records the result and
 * frees the slot; the connection is reused or closed by the caller. */
static void finish_request(conn *k, const char *cut) {
    load *L = k->L;
    bench_result *r = result_of(L, k);
    const bench_prompt *p = prompt_of(L, k->rid, k->warm);
    uint64_t t = L->cur_ns ? L->cur_ns : now_ns();
    if (k->non_stream && k->http.status == 200 && !cut)
        parse_whole_body(k, t);
    if (!k->first && k->any_first_ns && k->done) {
        /* A complete stream whose chunks all had empty text (a server holding
         * back partial characters, say): time it by those chunks, as vLLM
         * does, rather than failing a request the server served. */
        k->first = 1;
        result_of(L, k)->ttft = sec(k->any_first_ns - k->start_ns);
        k->last_ns = k->any_last_ns;
    }

    r->start = sec(k->start_ns - L->t0_ns);
    if (k->start_ns < L->t0_ns) /* warmup requests */
        r->start = 0;
    r->prompt_len = k->usage_in >= 0 ? k->usage_in : p->input_len;
    r->chunks = k->chunks;
    r->usage_seen = k->usage_out >= 0;
    r->output_tokens = k->usage_out >= 0 ? k->usage_out : k->chunks;
    if (k->first)
        r->latency = sec(k->last_ns - k->start_ns);

    char *e = NULL;
    int ok = 0;
    if (k->http.status != 200 && k->http.status != 0) {
        size_t bl = k->body_len < 2000 ? k->body_len : 2000;
        e = dup_printf("HTTP %d: %.*s", k->http.status, (int)bl, k->body ? k->body : "");
    } else if (k->err_event) {
        e = dup_printf("error in stream: %s", k->err ? k->err : "");
    } else if (cut) {
        e = dup_printf("%s", cut);
    } else if (!k->done) {
        e = dup_printf("stream ended without [DONE]");
    } else if (!k->first) {
        e = dup_printf("no token chunk received");
    } else {
        ok = 1;
    }
    r->success = ok;
    r->error = e; /* NULL for a failure only when out of memory */

    L->inflight--;
    if (k->warm) {
        L->warm_done++;
    } else {
        L->finished++;
        if (!r->success)
            L->failed++;
        L->t_end_ns = t;
    }
    k->rid = -1;
    free(k->err);
    k->err = NULL;
}

/* ---- SSE events --------------------------------------------------------- */

static void on_event(void *ctx, const char *data, size_t n) {
    conn *k = ctx;
    if (k->rid < 0 || k->done)
        return;
    bench_chunk ev;
    bench_chunk_parse(data, n, &ev);
    if (ev.done) {
        k->done = 1;
        return;
    }
    if (ev.error) {
        if (!k->err_event) {
            k->err_event = 1;
            k->err = ev.err;
        } else {
            free(ev.err);
        }
        return;
    }
    if (ev.choice && !ev.token) { /* e.g. text held back mid-character */
        if (!k->any_first_ns)
            k->any_first_ns = k->L->cur_ns;
        k->any_last_ns = k->L->cur_ns;
    }
    if (ev.token) {
        load *L = k->L;
        uint64_t t = L->cur_ns;
        L->tokens_in_read++;
        bench_result *r = result_of(L, k);
        if (!k->first) {
            k->first = 1;
            r->ttft = sec(t - k->start_ns);
        } else {
            bench_result_push_itl(r, sec(t - k->last_ns));
        }
        k->last_ns = t;
        k->chunks++;
    }
    if (ev.usage_out >= 0)
        k->usage_out = ev.usage_out;
    if (ev.usage_in >= 0)
        k->usage_in = ev.usage_in;
}

static void on_head(void *ctx, int status) {
    conn *k = ctx;
    k->non_stream = status == 200 && !k->http.event_stream;
}

static void on_body(void *ctx, const char *p, size_t n) {
    conn *k = ctx;
    if (k->http.status == 200 && !k->non_stream) {
        if (bench_sse_feed(&k->sse, p, n) != ASA_OK && !k->err_event) {
            k->err_event = 1;
            k->err = dup_printf("out of memory parsing the stream");
        }
        return;
    }
    size_t limit = k->non_stream ? (64u << 20) : 65536;
    if (k->body_len + n + 1 > limit)
        n = k->body_len + 1 < limit ? limit - k->body_len - 1 : 0;
    if (!n)
        return;
    if (k->body_len + n + 1 > k->body_cap) {
        size_t nc = k->body_cap ? k->body_cap : 1024;
        while (nc < k->body_len + n + 1)
            nc *= 2;
        char *nb = realloc(k->body, nc);
        if (!nb)
            return;
        k->body = nb;
        k->body_cap = nc;
    }
    memcpy(k->body + k->body_len, p, n);
    k->body_len += n;
    k->body[k->body_len] = '\0';
}

/* ---- connections -------------------------------------------------------- */

static void on_close(uv_handle_t *h) {
    conn *k = h->data;
    close(k->fd);
    bench_sse_deinit(&k->sse);
    free(k->body);
    free(k->err);
    free(k);
}

static void idle_remove(load *L, conn *k) {
    for (conn **pp = &L->idle; *pp; pp = &(*pp)->next_idle)
        if (*pp == k) {
            *pp = k->next_idle;
            break;
        }
    k->next_idle = NULL;
}

static void conn_close(conn *k) {
    load *L = k->L;
    if (k->state == C_CLOSING)
        return;
    if (k->state == C_IDLE)
        idle_remove(L, k);
    k->state = C_CLOSING;
    if (k->prev_all)
        k->prev_all->next_all = k->next_all;
    else
        L->all = k->next_all;
    if (k->next_all)
        k->next_all->prev_all = k->prev_all;
    L->n_open--;
    uv_close((uv_handle_t *)&k->poll, on_close);
}

static void conn_make_idle(conn *k) {
    load *L = k->L;
    k->state = C_IDLE;
    k->next_idle = L->idle;
    L->idle = k;
}

static void send_request(conn *k);
static int conn_open(load *L, int64_t rid, int warm);
static int fifo_push(load *L, int64_t rid, int warm, uint64_t arrival);
static void on_io(uv_poll_t *h, int status, int events);

/* The current request failed before any response byte on a connection that
 * had served earlier requests: the server closed an idle keep-alive
 * connection.  Send it again on a fresh one, as HTTP clients do. */
static int retry_stale(conn *k) {
    load *L = k->L;
    if (k->rid < 0 || k->got_bytes || k->uses <= 1)
        return 0;
    int64_t rid = k->rid;
    int warm = k->warm;
    k->rid = -1;
    L->inflight--;
    conn_close(k);
    if (conn_open(L, rid, warm) == 0)
        L->inflight++;
    else /* no connection now: wait for one like any other request */
        fifo_push(L, rid, warm, now_ns());
    return 1;
}

static void fail_current(conn *k, const char *why) {
    if (k->rid < 0)
        return;
    if (retry_stale(k))
        return;
    finish_request(k, why);
    conn_close(k);
}

/* Monotonic time at which the kernel received the bytes of the last
 * recvmsg (SO_TIMESTAMPNS, CLOCK_REALTIME, converted), or the poll-round
 * stamp when the kernel gave none.  Taking the kernel's time keeps the
 * client's own scheduling and parsing delays out of TTFT and ITL. */
static uint64_t rx_time(load *L, struct msghdr *m) {
    if (!L->per_read_stamps) {
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS)
                continue;
            struct timespec pkt, rt;
            memcpy(&pkt, CMSG_DATA(cm), sizeof pkt);
            clock_gettime(CLOCK_REALTIME, &rt);
            uint64_t mono = now_ns();
            int64_t age = (int64_t)(rt.tv_sec - pkt.tv_sec) * 1000000000ll +
                          (rt.tv_nsec - pkt.tv_nsec);
            if (age < 0)
                age = 0;
            if (age > 10000000000ll || (uint64_t)age > mono)
                break; /* the wall clock stepped: do not trust it */
            L->kernel_stamps++;
            lag_add(L, (uint64_t)age);
            return mono - (uint64_t)age;
        }
    }
    return rx_stamp(L);
}

/* Response bytes for the current request. */
static void conn_bytes(conn *k, const char *p, size_t n) {
    load *L = k->L;
    if (k->rid < 0) { /* bytes on an idle connection: protocol error */
        conn_close(k);
        return;
    }
    k->got_bytes = 1;
    size_t used = 0;
    int rc = bench_http_feed(&k->http, p, n, &used);
    if (rc != ASA_OK) {
        fail_current(k, "malformed HTTP response");
    } else if (k->http.state == BENCH_HTTP_DONE) {
        /* An answer that came before the whole request went out (an early
         * 413, say) leaves the connection mid-request: do not reuse it. */
        int reuse = k->http.keep_alive && used == n && k->wpend_len == 0;
        finish_request(k, NULL);
        if (reuse && L->phase != 3)
            conn_make_idle(k);
        else
            conn_close(k);
    }
}

/* The peer closed (err == 0) or the connection failed (err = -errno). */
static void conn_gone(conn *k, int err) {
    if (k->rid >= 0) {
        if (err == 0 && k->got_bytes && bench_http_eof(&k->http) == ASA_OK) {
            finish_request(k, NULL);
            conn_close(k);
        } else {
            char why[160];
            if (err == 0)
                snprintf(why, sizeof why, "connection closed by the server %s",
                         k->http.status == 200 ? "before [DONE]"
                         : k->got_bytes        ? "mid-response"
                                               : "before it answered");
            else
                snprintf(why, sizeof why, "connection error: %s", strerror(-err));
            fail_current(k, why);
        }
    } else {
        conn_close(k);
    }
}

static void conn_connected(conn *k) {
    load *L = k->L;
    k->connected = 1;
    if (k->rid >= 0) {
        k->state = C_BUSY;
        uv_poll_start(&k->poll, UV_READABLE, on_io);
        send_request(k);
    } else {
        uv_poll_start(&k->poll, UV_READABLE, on_io);
        conn_make_idle(k);
        if (L->phase == 0) {
            L->preconnected++;
            L->preconnect_left--;
            check_end(L);
        } else {
            pump(L);
        }
    }
}

static void conn_connect_failed(conn *k, int err) {
    load *L = k->L;
    if (L->phase == 0 && k->rid < 0) {
        if (!L->fatal)
            L->fatal = dup_printf("cannot connect to %s:%s: %s", L->c->url.host,
                                  L->c->url.port, strerror(err));
        L->preconnect_left--;
        conn_close(k);
        check_end(L);
        return;
    }
    if (k->rid >= 0) {
        char why[160];
        snprintf(why, sizeof why, "connect failed: %s", strerror(err));
        L->cur_ns = now_ns();
        finish_request(k, why);
        L->cur_ns = 0;
    }
    conn_close(k);
}

static void on_io(uv_poll_t *h, int status, int events) {
    conn *k = h->data;
    load *L = k->L;
    if (k->state == C_CLOSING)
        return;
    if (!k->connected) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (status < 0)
            soerr = ECONNREFUSED;
        else
            getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr)
            conn_connect_failed(k, soerr);
        else
            conn_connected(k);
        goto out;
    }
    if (status < 0) {
        L->cur_ns = rx_stamp(L);
        conn_gone(k, -EIO);
        goto out;
    }
    if ((events & UV_WRITABLE) && k->wpend_len) {
        ssize_t w = send(k->fd, k->wpend, k->wpend_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            char why[128];
            snprintf(why, sizeof why, "write failed: %s", strerror(errno));
            L->cur_ns = now_ns();
            fail_current(k, why);
            goto out;
        }
        if (w > 0) {
            k->wpend += w;
            k->wpend_len -= (size_t)w;
        }
        if (!k->wpend_len)
            uv_poll_start(&k->poll, UV_READABLE, on_io);
    }
    if (!(events & UV_READABLE))
        goto out;
    for (int rounds = 0; rounds < 64 && k->state != C_CLOSING; rounds++) {
        char ctrl[128];
        struct iovec iov = {L->rbuf, sizeof L->rbuf};
        struct msghdr m = {0};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = ctrl;
        m.msg_controllen = sizeof ctrl;
        ssize_t r = recvmsg(k->fd, &m, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            break;
        if (r <= 0) {
            L->cur_ns = rx_stamp(L);
            conn_gone(k, r == 0 ? 0 : -errno);
            break;
        }
        L->cur_ns = rx_time(L, &m);
        L->tokens_in_read = 0;
        conn_bytes(k, L->rbuf, (size_t)r);
        if (L->tokens_in_read > 1)
            L->merged_reads++;
        if ((size_t)r < sizeof L->rbuf)
            break;
    }
out:
    L->cur_ns = 0;
    pump(L);
    check_end(L);
}

static void send_request(conn *k) {
    load *L = k->L;
    const bench_prompt *p = prompt_of(L, k->rid, k->warm);
    k->wpend = p->req;
    k->wpend_len = p->req_len;
    ssize_t w = send(k->fd, p->req, p->req_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        char why[128];
        snprintf(why, sizeof why, "write failed: %s", strerror(errno));
        L->cur_ns = now_ns();
        fail_current(k, why);
        L->cur_ns = 0;
        return;
    }
    if (w > 0) {
        k->wpend += w;
        k->wpend_len -= (size_t)w;
    }
    if (k->wpend_len)
        uv_poll_start(&k->poll, UV_READABLE | UV_WRITABLE, on_io);
}

/* Prepares k for request rid and stamps its start. */
static void conn_assign(conn *k, int64_t rid, int warm) {
    k->rid = rid;
    k->warm = warm;
    k->uses++;
    k->got_bytes = k->first = k->done = k->err_event = k->non_stream = 0;
    k->any_first_ns = k->any_last_ns = 0;
    k->chunks = 0;
    k->usage_out = k->usage_in = -1;
    k->body_len = 0;
    bench_http_reset(&k->http);
    bench_sse_reset(&k->sse);
    k->state = C_BUSY;
    k->start_ns = now_ns();
}

/* Opens a connection, for request rid (>= 0) or for the pool (-1).
 * Returns 0, or -1 when no connection can be opened now. */
static int conn_open(load *L, int64_t rid, int warm) {
    if (L->n_open >= L->max_conns)
        return -1;
    int fd = socket(L->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    conn *k = calloc(1, sizeof *k);
    if (!k || uv_poll_init(&L->loop, &k->poll, fd) < 0) {
        free(k);
        close(fd);
        return -1;
    }
    k->fd = fd;
    k->L = L;
    k->rid = -1;
    k->poll.data = k;
    k->http.cbs.on_head = on_head;
    k->http.cbs.on_body = on_body;
    k->http.ctx = k;
    bench_sse_init(&k->sse, on_event, k);
    k->state = C_CONNECTING;
    k->next_all = L->all;
    if (L->all)
        L->all->prev_all = k;
    L->all = k;
    L->n_open++;
    if (rid >= 0) {
        conn_assign(k, rid, warm);
        k->state = C_CONNECTING;
    }
    socklen_t alen = L->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                   : sizeof(struct sockaddr_in);
    int rc = connect(fd, (const struct sockaddr *)&L->addr, alen);
    if (rc < 0 && errno != EINPROGRESS) {
        k->rid = -1;
        conn_close(k);
        return -1;
    }
    uv_poll_start(&k->poll, UV_WRITABLE, on_io);
    return 0;
}

/* ---- scheduling --------------------------------------------------------- */

static int fifo_push(load *L, int64_t rid, int warm, uint64_t arrival) {
    if (L->fifo_len == L->fifo_cap) {
        size_t nc = L->fifo_cap ? L->fifo_cap * 2 : 1024;
        pending *nf = malloc(nc * sizeof *nf);
        if (!nf)
            return ASA_ENOMEM;
        for (size_t i = 0; i < L->fifo_len; i++)
            nf[i] = L->fifo[(L->fifo_head + i) % L->fifo_cap];
        free(L->fifo);
        L->fifo = nf;
        L->fifo_head = 0;
        L->fifo_cap = nc;
    }
    L->fifo[(L->fifo_head + L->fifo_len) % L->fifo_cap] = (pending){rid, warm, arrival};
    L->fifo_len++;
    return ASA_OK;
}

static int ensure_res(load *L, size_t n) {
    if (n <= L->cap_res)
        return ASA_OK;
    size_t nc = L->cap_res ? L->cap_res * 2 : 1024;
    while (nc < n)
        nc *= 2;
    bench_result *nr = realloc(L->res, nc * sizeof *nr);
    if (!nr)
        return ASA_ENOMEM;
    memset(nr + L->cap_res, 0, (nc - L->cap_res) * sizeof *nr);
    L->res = nr;
    L->cap_res = nc;
    return ASA_OK;
}

/* A main-run request becomes due now. */
static void issue_main(load *L) {
    if (L->deadline_ns && now_ns() >= L->deadline_ns) {
        duration_over(L); /* the --duration timer may not have run yet */
        return;
    }
    if (ensure_res(L, (size_t)L->issued + 1) != ASA_OK) {
        L->stop_issuing = 1;
        return;
    }
    int64_t rid = L->issued++;
    L->n_res = (size_t)L->issued;
    fifo_push(L, rid, 0, now_ns());
}

/* Starts waiting requests while there are slots and connections. */
static void pump(load *L) {
    if (L->phase == 3)
        return;
    if (L->phase == 2 && L->deadline_ns && now_ns() >= L->deadline_ns)
        duration_over(L);
    if (L->closed_loop && L->phase == 2)
        while (!L->stop_issuing && L->inflight + (int64_t)L->fifo_len < L->cap)
            issue_main(L);
    while (L->fifo_len > 0 && L->inflight < L->cap) {
        pending p = L->fifo[L->fifo_head];
        conn *k = L->idle;
        if (k) {
            L->idle = k->next_idle;
            k->next_idle = NULL;
            conn_assign(k, p.rid, p.warm);
            send_request(k);
        } else if (conn_open(L, p.rid, p.warm) != 0) {
            break; /* wait for a connection to come free */
        }
        L->fifo_head = (L->fifo_head + 1) % L->fifo_cap;
        L->fifo_len--;
        L->inflight++;
        if (!p.warm)
            L->res[p.rid].queue_time = sec(now_ns() - p.arrival_ns);
    }
}

static void sched_fire(uv_timer_t *t);

static void sched_arm(load *L) {
    if (L->stop_issuing || L->closed_loop)
        return;
    double next;
    if (L->total_planned >= 0) {
        if ((size_t)L->issued >= L->sched_n)
            return;
        next = L->sched[L->issued];
    } else {
        next = L->next_open_send;
    }
    double now = sec(now_ns() - L->t0_ns);
    double wait_ms = (next - now) * 1000.0;
    uint64_t ms = wait_ms > 1.0 ? (uint64_t)wait_ms : 0;
    uv_timer_start(&L->sched_timer, sched_fire, ms, 0);
}

static void sched_fire(uv_timer_t *t) {
    load *L = t->data;
    double now = sec(now_ns() - L->t0_ns);
    if (L->total_planned >= 0) {
        while ((size_t)L->issued < L->sched_n && L->sched[L->issued] <= now + 0.0005)
            issue_main(L);
    } else {
        while (!L->stop_issuing && L->next_open_send <= now + 0.0005) {
            issue_main(L);
            L->next_open_send +=
                bench_schedule_gap(L->c->request_rate, L->c->burstiness, &L->rng);
        }
    }
    pump(L);
    sched_arm(L);
    check_end(L);
}

/* --duration is over: send nothing more.  Requests still waiting for a
 * slot were never sent: they are dropped.  Idempotent; called from the
 * timer and from whichever callback first notices the deadline. */
static void duration_over(load *L) {
    if (L->duration_done)
        return;
    L->duration_done = 1;
    L->stop_issuing = 1;
    uv_timer_stop(&L->sched_timer);
    uv_timer_stop(&L->duration_timer);
    size_t keep = 0;
    for (size_t i = 0; i < L->fifo_len; i++) {
        pending p = L->fifo[(L->fifo_head + i) % L->fifo_cap];
        if (p.warm)
            L->fifo[(L->fifo_head + keep++) % L->fifo_cap] = p;
    }
    L->fifo_len = keep;
    /* Requests are sent in rid order, so the unsent ones are the tail. */
    int64_t sent = L->finished + L->inflight;
    if (sent < L->issued) {
        for (int64_t i = sent; i < L->issued; i++)
            bench_result_deinit(&L->res[i]);
        L->issued = sent;
        L->n_res = (size_t)sent;
    }
}

static void on_duration(uv_timer_t *t) {
    load *L = t->data;
    duration_over(L);
    check_end(L);
}

static void start_main(load *L) {
    L->phase = 2;
    if (L->before_main)
        L->before_main(L->before_main_arg);
    L->t0_ns = now_ns();
    if (L->c->duration_s > 0) {
        L->deadline_ns = L->t0_ns + (uint64_t)(L->c->duration_s * 1e9);
        uv_timer_start(&L->duration_timer, on_duration, (uint64_t)(L->c->duration_s * 1000.0),
                       0);
    }
    if (L->closed_loop) {
        pump(L);
    } else {
        if (L->total_planned < 0)
            L->next_open_send =
                bench_schedule_gap(L->c->request_rate, L->c->burstiness, &L->rng);
        sched_fire(&L->sched_timer);
    }
}

static void start_warmup(load *L) {
    L->phase = 1;
    if (L->warm_total == 0) {
        start_main(L);
        return;
    }
    for (int64_t i = 0; i < L->warm_total; i++)
        fifo_push(L, i, 1, now_ns());
    pump(L);
}

static void stop_all(load *L) {
    L->phase = 3;
    uv_timer_stop(&L->sched_timer);
    uv_timer_stop(&L->progress_timer);
    uv_timer_stop(&L->watchdog);
    uv_timer_stop(&L->duration_timer);
    uv_prepare_stop(&L->prep);
    uv_signal_stop(&L->sigint);
    for (conn *k = L->all; k;) {
        conn *n = k->next_all;
        conn_close(k);
        k = n;
    }
}

static void check_end(load *L) {
    switch (L->phase) {
    case 0:
        if (L->preconnect_left > 0)
            return;
        if (L->preconnected == 0 && L->fatal) {
            L->rc = ASA_EIO;
            stop_all(L);
            return;
        }
        free(L->fatal);
        L->fatal = NULL;
        start_warmup(L);
        return;
    case 1:
        if (L->warm_done < L->warm_total)
            return;
        start_main(L);
        return;
    case 2: {
        int all_sent = L->stop_issuing ||
                       (L->total_planned >= 0 && L->issued >= L->total_planned);
        if (all_sent && L->inflight == 0 && L->fifo_len == 0)
            stop_all(L);
        return;
    }
    default:
        return;
    }
}

/* Ctrl-C: the first stops sending and lets the requests in flight finish
 * (the report covers what was sent); the second fails them as interrupted.
 * Before the measured run starts, it gives up at once. */
static void on_sigint(uv_signal_t *h, int signum) {
    load *L = h->data;
    (void)signum;
    L->interrupts++;
    if (L->phase < 2) {
        L->rc = ASA_ECANCELLED;
        if (!L->fatal)
            L->fatal = dup_printf("interrupted before the run started");
        stop_all(L);
        return;
    }
    if (L->interrupts == 1) {
        fprintf(stderr, "\nasa-bench: interrupted: sending no more; waiting for the %lld "
                        "requests in flight (Ctrl-C again to abort them)\n",
                (long long)L->inflight);
        duration_over(L);
        check_end(L);
        return;
    }
    uint64_t now = now_ns();
    for (conn *k = L->all; k;) {
        conn *n = k->next_all;
        if (k->rid >= 0) {
            L->cur_ns = now;
            finish_request(k, "interrupted");
            L->cur_ns = 0;
            conn_close(k);
        }
        k = n;
    }
    check_end(L);
}

/* ---- progress and watchdog ---------------------------------------------- */

static void print_progress(load *L, int final) {
    if (!L->progress_on)
        return;
    int64_t total = L->total_planned;
    double el = L->t0_ns ? sec(now_ns() - L->t0_ns) : 0;
    const char *ph = L->phase == 0 ? "connect" : L->phase == 1 ? "warmup" : "run";
    if (L->phase == 1) {
        fprintf(stderr, "%s[warmup] %lld/%lld%s", L->progress_tty ? "\r\033[K" : "",
                (long long)L->warm_done, (long long)L->warm_total,
                L->progress_tty ? "   " : "\n");
        fflush(stderr);
        return;
    }
    char bar[42];
    int w = 40, fill = 0;
    if (total > 0)
        fill = (int)((double)L->finished * w / (double)total);
    else if (L->c->duration_s > 0)
        fill = (int)(fmin(el / L->c->duration_s, 1.0) * w);
    for (int i = 0; i < w; i++)
        bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[w] = '\0';
    char tot[32];
    if (total >= 0)
        snprintf(tot, sizeof tot, "%lld", (long long)total);
    else
        snprintf(tot, sizeof tot, "?");
    fprintf(stderr, "%s[%s] %s %lld/%s done, %lld in flight, %lld failed, %.1f s%s",
            L->progress_tty ? "\r\033[K" : "", bar, ph, (long long)L->finished, tot,
            (long long)L->inflight, (long long)L->failed, el,
            final || !L->progress_tty ? "\n" : "  ");
    fflush(stderr);
}

static void on_progress(uv_timer_t *t) { print_progress(t->data, 0); }

static void on_watchdog(uv_timer_t *t) {
    load *L = t->data;
    double to = L->c->timeout_s;
    if (!(to > 0))
        return;
    uint64_t now = now_ns();
    for (conn *k = L->all; k;) {
        conn *n = k->next_all;
        if (k->rid >= 0 && (k->state == C_BUSY || k->state == C_CONNECTING) &&
            sec(now - k->start_ns) > to) {
            char why[96];
            snprintf(why, sizeof why, "timed out after %.0f s", to);
            L->cur_ns = now;
            finish_request(k, why);
            L->cur_ns = 0;
            conn_close(k);
        }
        k = n;
    }
    pump(L);
    check_end(L);
}

/* ---- entry -------------------------------------------------------------- */

size_t bench_raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? (size_t)1 << 20 : (size_t)rl.rlim_cur;
}

void bench_run_out_free(bench_run_out *o) {
    if (!o)
        return;
    for (size_t i = 0; i < o->n; i++)
        bench_result_deinit(&o->res[i]);
    free(o->res);
    o->res = NULL;
    o->n = 0;
}

static void walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int bench_load_run(const bench_config *c, const bench_prompts *ps,
                   void (*before_main)(void *arg), void *arg, bench_run_out *out,
                   asa_errbuf *eb) {
    memset(out, 0, sizeof *out);
    if (ps->n == 0)
        return asa_errf(eb, ASA_EINVAL, "no prompts");
    load *L = calloc(1, sizeof *L);
    if (!L)
        return ASA_ENOMEM;
    int rc = ASA_OK;
    L->c = c;
    L->ps = ps;
    L->before_main = before_main;
    L->before_main_arg = arg;
    L->cap = c->max_concurrency > 0 ? c->max_concurrency : INT64_MAX;
    L->per_read_stamps = getenv("ASA_BENCH_USER_CLOCK") != NULL;
    bench_rng_seed(&L->rng, c->seed);

    out->fd_limit = bench_raise_fd_limit();
    L->max_conns = out->fd_limit > 96 ? out->fd_limit - 64 : 32;

    if ((rc = bench_sync_resolve(c, &L->addr, eb)) != ASA_OK) {
        free(L);
        return rc;
    }

    /* Send schedule. */
    if (c->duration_s > 0) {
        L->total_planned = -1;
        L->closed_loop = isinf(c->request_rate) || !(c->request_rate > 0);
    } else {
        L->total_planned = c->num_prompts;
        L->sched_n = (size_t)c->num_prompts;
        L->sched = malloc((L->sched_n + 1) * sizeof *L->sched);
        if (!L->sched || ensure_res(L, L->sched_n) != ASA_OK) {
            rc = ASA_ENOMEM;
            goto done;
        }
        if ((rc = bench_schedule(L->sched_n, c->request_rate, c->burstiness, &L->rng,
                                 L->sched)) != ASA_OK) {
            rc = asa_errf(eb, rc, "--burstiness must be positive");
            goto done;
        }
    }
    L->warm_total = c->warmup;
    L->warm_res = calloc((size_t)c->warmup + 1, sizeof *L->warm_res);
    if (!L->warm_res) {
        rc = ASA_ENOMEM;
        goto done;
    }

    if (uv_loop_init(&L->loop) < 0) {
        rc = asa_errf(eb, ASA_EIO, "uv_loop_init failed");
        goto done;
    }
    uv_timer_init(&L->loop, &L->sched_timer);
    uv_timer_init(&L->loop, &L->progress_timer);
    uv_timer_init(&L->loop, &L->watchdog);
    uv_timer_init(&L->loop, &L->duration_timer);
    uv_prepare_init(&L->loop, &L->prep);
    L->sched_timer.data = L->progress_timer.data = L->watchdog.data = L;
    L->duration_timer.data = L->prep.data = L;
    uv_prepare_start(&L->prep, on_prepare);
    uv_signal_init(&L->loop, &L->sigint);
    L->sigint.data = L;
    uv_signal_start(&L->sigint, on_sigint, SIGINT);
    uv_unref((uv_handle_t *)&L->sigint);

    L->progress_tty = isatty(2);
    L->progress_on = c->progress > 0 || (c->progress < 0 && L->progress_tty);
    if (c->progress > 0 && !L->progress_tty)
        L->progress_on = 1;
    if (L->progress_on)
        uv_timer_start(&L->progress_timer, on_progress, L->progress_tty ? 200 : 5000,
                       L->progress_tty ? 200 : 5000);
    uv_timer_start(&L->watchdog, on_watchdog, 1000, 1000);
    uv_unref((uv_handle_t *)&L->watchdog);

    /* Open connections ahead of the run so that connect time stays out of
     * TTFT: as many as can be in flight at once. */
    int64_t want = c->preconnect;
    if (want < 0) {
        int64_t n = c->duration_s > 0 ? INT64_MAX : c->num_prompts;
        if (c->warmup > n)
            n = c->warmup;
        want = c->max_concurrency > 0 && c->max_concurrency < n ? c->max_concurrency : n;
        if (!(c->duration_s > 0) && !isinf(c->request_rate) && c->max_concurrency <= 0 &&
            want > 256)
            want = 256; /* paced runs rarely need all at once; more open on demand */
        if (want == INT64_MAX)
            want = 256;
    }
    if (want < 1)
        want = 1;
    if ((size_t)want > L->max_conns)
        want = (int64_t)L->max_conns;
    L->phase = 0;
    L->preconnect_left = want;
    for (int64_t i = 0; i < want; i++)
        if (conn_open(L, -1, 0) != 0)
            L->preconnect_left--;
    if (L->preconnect_left == 0) {
        rc = asa_errf(eb, ASA_EIO, "cannot open any connection to %s:%s", c->url.host,
                      c->url.port);
        stop_all(L);
    }

    uv_run(&L->loop, UV_RUN_DEFAULT);
    print_progress(L, 1);
    if (L->phase != 3 && L->rc == ASA_OK && rc == ASA_OK) {
        /* The loop ran dry with requests left: no connection could be opened. */
        rc = asa_errf(eb, ASA_EIO, "stalled: cannot open connections to %s:%s (%s)",
                      c->url.host, c->url.port, strerror(errno));
        stop_all(L);
    }
    if (L->rc != ASA_OK && rc == ASA_OK)
        rc = asa_errf(eb, L->rc, "%s", L->fatal ? L->fatal : "cannot reach the server");
    out->preconnected = L->preconnected;
    out->kernel_stamps = L->kernel_stamps;
    if (L->n_lag) {
        bench_dist d;
        double p[2] = {99, 100};
        bench_dist_compute(L->lags, L->n_lag, p, 2, &d);
        out->read_lag_median = d.median_ms * 1e-3;
        out->read_lag_p99 = d.pct_ms[0] * 1e-3;
        out->read_lag_max = d.pct_ms[1] * 1e-3;
    }
    out->merged_reads = L->merged_reads;

    uv_walk(&L->loop, walk_close, NULL);
    uv_run(&L->loop, UV_RUN_DEFAULT);
    uv_loop_close(&L->loop);

    if (rc == ASA_OK) {
        out->res = L->res;
        out->n = L->n_res;
        out->duration = L->t_end_ns > L->t0_ns ? sec(L->t_end_ns - L->t0_ns) : 0;
        L->res = NULL;
        L->n_res = 0;
    }
done:
    for (size_t i = 0; i < L->n_res; i++)
        bench_result_deinit(&L->res[i]);
    free(L->res);
    for (int64_t i = 0; L->warm_res && i < L->warm_total; i++)
        bench_result_deinit(&L->warm_res[i]);
    free(L->warm_res);
    free(L->sched);
    free(L->lags);
    free(L->fifo);
    free(L->fatal);
    free(L);
    return rc;
}
