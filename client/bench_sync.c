/* client/bench_sync.c - a small blocking HTTP/1.1 client for the calls made
 * before and after the measured run (/v1/models, /tokenize, /metrics).  One
 * connection per call, "Connection: close".  Never on the measured path. */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct sync_body {
    char *buf;
    size_t len, cap;
    int oom;
} sync_body;

static void sync_on_body(void *ctx, const char *p, size_t n) {
    sync_body *b = ctx;
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *nb = realloc(b->buf, nc);
        if (!nb) {
            b->oom = 1;
            return;
        }
        b->buf = nb;
        b->cap = nc;
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}

static int remaining_ms(double deadline) {
    double left = deadline - asa_now();
    if (left <= 0)
        return 0;
    return (int)(left * 1000.0) + 1;
}

static int connect_to(const bench_config *c, double deadline, int *out_fd,
                      struct sockaddr_storage *out_addr, asa_errbuf *eb) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(c->url.host, c->url.port, &hints, &ai);
    if (g != 0)
        return asa_errf(eb, ASA_EIO, "cannot resolve %s: %s", c->url.host, gai_strerror(g));
    int last_err = 0;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        a->ai_protocol);
        if (fd < 0) {
            last_err = errno;
            continue;
        }
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r < 0 && errno == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int pr = poll(&pfd, 1, remaining_ms(deadline));
            if (pr == 1) {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                r = soerr ? -1 : 0;
                errno = soerr;
            } else {
                r = -1;
                errno = ETIMEDOUT;
            }
        }
        if (r == 0) {
            if (out_addr) {
                memset(out_addr, 0, sizeof *out_addr);
                memcpy(out_addr, a->ai_addr, a->ai_addrlen);
            }
            freeaddrinfo(ai);
            *out_fd = fd;
            return ASA_OK;
        }
        last_err = errno;
        close(fd);
    }
    freeaddrinfo(ai);
    return asa_errf(eb, ASA_EIO, "cannot connect to %s:%s: %s", c->url.host, c->url.port,
                    strerror(last_err));
}

int bench_sync_request(const bench_config *c, const char *method, const char *path,
                       const char *body, double timeout_s, bench_sync_resp *out,
                       asa_errbuf *eb) {
    memset(out, 0, sizeof *out);
    double deadline = asa_now() + (timeout_s > 0 ? timeout_s : 30.0);
    int fd = -1, rc;
    char *req = NULL;
    sync_body sb = {0};
    if ((rc = connect_to(c, deadline, &fd, NULL, eb)) != ASA_OK)
        return rc;

    size_t blen = body ? strlen(body) : 0;
    char auth[600] = "";
    if (c->api_key)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", c->api_key);
    size_t cap = 1024 + strlen(path) + strlen(c->url.path) + sizeof auth + blen;
    req = malloc(cap);
    rc = ASA_ENOMEM;
    if (!req)
        goto fail;
    int hl = snprintf(req, cap,
                      "%s %s%s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: asa-bench\r\n"
                      "Accept: */*\r\nConnection: close\r\n%s",
                      method, c->url.path, path, c->url.host, c->url.port, auth);
    if (body)
        hl += snprintf(req + hl, cap - (size_t)hl,
                       "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    hl += snprintf(req + hl, cap - (size_t)hl, "\r\n");
    if (body)
        memcpy(req + hl, body, blen);
    size_t total = (size_t)hl + blen, sent = 0;
    while (sent < total) {
        ssize_t w = send(fd, req + sent, total - sent, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, remaining_ms(deadline)) <= 0) {
                rc = asa_errf(eb, ASA_EIO, "%s %s: timed out sending", method, path);
                goto fail;
            }
            continue;
        }
        if (w < 0) {
            rc = asa_errf(eb, ASA_EIO, "%s %s: send: %s", method, path, strerror(errno));
            goto fail;
        }
        sent += (size_t)w;
    }

    bench_http hp;
    memset(&hp, 0, sizeof hp);
    hp.cbs.on_body = sync_on_body;
    hp.ctx = &sb;
    bench_http_reset(&hp);
    char buf[16384];
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, remaining_ms(deadline));
        if (pr <= 0) {
            rc = asa_errf(eb, ASA_EIO, "%s %s: timed out waiting for the response", method,
                          path);
            goto fail;
        }
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r < 0) {
            rc = asa_errf(eb, ASA_EIO, "%s %s: recv: %s", method, path, strerror(errno));
            goto fail;
        }
        if (r == 0) {
            if (bench_http_eof(&hp) != ASA_OK) {
                rc = asa_errf(eb, ASA_EIO, "%s %s: connection closed mid-response", method,
                              path);
                goto fail;
            }
            break;
        }
        if (bench_http_feed(&hp, buf, (size_t)r, NULL) != ASA_OK) {
            rc = asa_errf(eb, ASA_EIO, "%s %s: malformed HTTP response", method, path);
            goto fail;
        }
        if (hp.state == BENCH_HTTP_DONE)
            break;
    }
    if (sb.oom) {
        rc = ASA_ENOMEM;
        goto fail;
    }
    sync_on_body(&sb, "", 0);
    if (sb.oom || !sb.buf) {
        rc = ASA_ENOMEM;
        goto fail;
    }
    sb.buf[sb.len] = '\0';
    out->status = hp.status;
    out->body = sb.buf;
    out->body_len = sb.len;
    free(req);
    close(fd);
    return ASA_OK;
fail:
    free(sb.buf);
    free(req);
    if (fd >= 0)
        close(fd);
    return rc;
}

void bench_sync_resp_free(bench_sync_resp *r) {
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
}

int bench_sync_resolve(const bench_config *c, struct sockaddr_storage *out, asa_errbuf *eb) {
    int fd = -1;
    int rc = connect_to(c, asa_now() + 10.0, &fd, out, eb);
    if (fd >= 0)
        close(fd);
    return rc;
}
