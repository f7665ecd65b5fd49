/* client/bench_http.c - URL parsing, incremental HTTP/1.1 response parser,
 * Server-Sent Events parser.  No I/O here. */
#define _GNU_SOURCE
#include "bench.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- URL ---------------------------------------------------------------- */

int bench_url_parse(const char *s, bench_url *out, asa_errbuf *eb) {
    memset(out, 0, sizeof *out);
    if (strncasecmp(s, "https://", 8) == 0)
        return asa_errf(eb, ASA_EINVAL, "%s: https is not supported (plain http only)", s);
    if (strncasecmp(s, "http://", 7) != 0)
        return asa_errf(eb, ASA_EINVAL, "%s: base URL must start with http://", s);
    const char *h = s + 7;
    const char *slash = strchr(h, '/');
    const char *hend = slash ? slash : h + strlen(h);
    const char *port = NULL;
    const char *hstart = h, *hstop = hend;
    if (*h == '[') { /* [v6]:port */
        const char *rb = memchr(h, ']', (size_t)(hend - h));
        if (!rb)
            return asa_errf(eb, ASA_EINVAL, "%s: unterminated '['", s);
        hstart = h + 1;
        hstop = rb;
        if (rb + 1 < hend && rb[1] == ':')
            port = rb + 2;
    } else {
        const char *colon = memchr(h, ':', (size_t)(hend - h));
        if (colon) {
            hstop = colon;
            port = colon + 1;
        }
    }
    size_t hl = (size_t)(hstop - hstart);
    if (hl == 0 || hl >= sizeof out->host)
        return asa_errf(eb, ASA_EINVAL, "%s: bad host", s);
    memcpy(out->host, hstart, hl);
    if (port) {
        size_t pl = (size_t)(hend - port);
        if (pl == 0 || pl >= sizeof out->port)
            return asa_errf(eb, ASA_EINVAL, "%s: bad port", s);
        for (size_t i = 0; i < pl; i++)
            if (!isdigit((unsigned char)port[i]))
                return asa_errf(eb, ASA_EINVAL, "%s: bad port", s);
        memcpy(out->port, port, pl);
    } else {
        strcpy(out->port, "80");
    }
    if (slash) {
        size_t pl = strlen(slash);
        while (pl > 0 && slash[pl - 1] == '/')
            pl--;
        if (pl >= sizeof out->path)
            return asa_errf(eb, ASA_EINVAL, "%s: path too long", s);
        memcpy(out->path, slash, pl);
    }
    return ASA_OK;
}

/* ---- HTTP response parser ----------------------------------------------- */

void bench_http_reset(bench_http *p) {
    bench_http_cbs cbs = p->cbs;
    void *ctx = p->ctx;
    memset(p, 0, offsetof(bench_http, line));
    p->line_len = 0;
    p->content_length = -1;
    p->cbs = cbs;
    p->ctx = ctx;
}

static int token_has(const char *v, const char *tok) {
    /* comma-separated header value contains tok (case-insensitive) */
    size_t tl = strlen(tok);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *te = e;
        while (te > v && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - v) == tl && strncasecmp(v, tok, tl) == 0)
            return 1;
        v = e;
    }
    return 0;
}

static int http_status_line(bench_http *p, const char *l) {
    /* HTTP/1.x SSS reason */
    if (strncmp(l, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)l[7]) || l[8] != ' ')
        return ASA_EFORMAT;
    if (!isdigit((unsigned char)l[9]) || !isdigit((unsigned char)l[10]) ||
        !isdigit((unsigned char)l[11]))
        return ASA_EFORMAT;
    p->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    p->keep_alive = l[7] == '1'; /* HTTP/1.1 defaults to keep-alive */
    return ASA_OK;
}

static int http_header_line(bench_http *p, char *l) {
    char *colon = strchr(l, ':');
    if (!colon)
        return ASA_EFORMAT;
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t vl = strlen(v);
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        v[--vl] = '\0';
    if (strcasecmp(l, "content-length") == 0) {
        char *end;
        long long cl = strtoll(v, &end, 10);
        if (end == v || *end || cl < 0)
            return ASA_EFORMAT;
        p->content_length = cl;
    } else if (strcasecmp(l, "transfer-encoding") == 0) {
        if (token_has(v, "chunked"))
            p->chunked = 1;
    } else if (strcasecmp(l, "connection") == 0) {
        if (token_has(v, "close"))
            p->keep_alive = 0;
        else if (token_has(v, "keep-alive"))
            p->keep_alive = 1;
    } else if (strcasecmp(l, "content-type") == 0) {
        if (strncasecmp(v, "text/event-stream", 17) == 0)
            p->event_stream = 1;
    }
    return ASA_OK;
}

/* Headers done: pick the body mode. */
static void http_head_done(bench_http *p) {
    int informational = p->status >= 100 && p->status < 200;
    if (informational) { /* 1xx: another status line follows */
        int ka = p->keep_alive;
        bench_http_reset(p);
        p->keep_alive = ka;
        return;
    }
    if (p->cbs.on_head)
        p->cbs.on_head(p->ctx, p->status);
    if (p->status == 204 || p->status == 304) {
        p->state = BENCH_HTTP_DONE;
    } else if (p->chunked) {
        p->state = BENCH_HTTP_CHUNK_SIZE;
    } else if (p->content_length >= 0) {
        p->remaining = (uint64_t)p->content_length;
        p->state = p->remaining ? BENCH_HTTP_BODY_LEN : BENCH_HTTP_DONE;
    } else {
        p->state = BENCH_HTTP_BODY_EOF;
        p->keep_alive = 0;
    }
}

/* Collects one CRLF- (or LF-) terminated line into p->line.  Returns 1 when a
 * full line is there (without the terminator), 0 when more bytes are
 * needed, <0 on an over-long line.  *i advances past what was taken. */
static int http_take_line(bench_http *p, const char *buf, size_t n, size_t *i) {
    const char *s = buf + *i;
    const char *nl = memchr(s, '\n', n - *i);
    size_t take = nl ? (size_t)(nl - s) : n - *i;
    if (p->line_len + take >= sizeof p->line)
        return ASA_EFORMAT;
    memcpy(p->line + p->line_len, s, take);
    p->line_len += take;
    *i += take;
    if (!nl)
        return 0;
    *i += 1; /* the '\n' */
    if (p->line_len > 0 && p->line[p->line_len - 1] == '\r')
        p->line_len--;
    p->line[p->line_len] = '\0';
    return 1;
}

int bench_http_feed(bench_http *p, const char *buf, size_t n, size_t *used) {
    size_t i = 0;
    int rc = ASA_OK;
    while (i < n && p->state != BENCH_HTTP_DONE) {
        switch (p->state) {
        case BENCH_HTTP_STATUS:
        case BENCH_HTTP_HEADER:
        case BENCH_HTTP_CHUNK_SIZE:
        case BENCH_HTTP_TRAILER: {
            int got = http_take_line(p, buf, n, &i);
            if (got < 0) {
                rc = got;
                goto out;
            }
            if (!got)
                break;
            p->line_len = 0;
            if (p->state == BENCH_HTTP_STATUS) {
                if (p->line[0] == '\0')
                    break; /* tolerate stray blank lines before a status */
                if ((rc = http_status_line(p, p->line)) != ASA_OK)
                    goto out;
                p->state = BENCH_HTTP_HEADER;
            } else if (p->state == BENCH_HTTP_HEADER) {
                if (p->line[0] == '\0')
                    http_head_done(p);
                else if ((rc = http_header_line(p, p->line)) != ASA_OK)
                    goto out;
            } else if (p->state == BENCH_HTTP_CHUNK_SIZE) {
                char *end;
                if (!isxdigit((unsigned char)p->line[0])) {
                    rc = ASA_EFORMAT;
                    goto out;
                }
                unsigned long long sz = strtoull(p->line, &end, 16);
                if (*end && *end != ';' && *end != ' ' && *end != '\t') {
                    rc = ASA_EFORMAT;
                    goto out;
                }
                p->remaining = sz;
                p->state = sz ? BENCH_HTTP_CHUNK_DATA : BENCH_HTTP_TRAILER;
            } else { /* trailer */
                if (p->line[0] == '\0')
                    p->state = BENCH_HTTP_DONE;
            }
            break;
        }
        case BENCH_HTTP_CHUNK_DATA:
        case BENCH_HTTP_BODY_LEN: {
            size_t avail = n - i;
            size_t take = p->remaining < avail ? (size_t)p->remaining : avail;
            if (p->cbs.on_body && take)
                p->cbs.on_body(p->ctx, buf + i, take);
            i += take;
            p->remaining -= take;
            if (p->remaining == 0)
                p->state = p->state == BENCH_HTTP_CHUNK_DATA ? BENCH_HTTP_CHUNK_CRLF
                                                             : BENCH_HTTP_DONE;
            break;
        }
        case BENCH_HTTP_CHUNK_CRLF: {
            int got = http_take_line(p, buf, n, &i);
            if (got < 0) {
                rc = got;
                goto out;
            }
            if (!got)
                break;
            if (p->line_len != 0) {
                rc = ASA_EFORMAT;
                goto out;
            }
            p->state = BENCH_HTTP_CHUNK_SIZE;
            break;
        }
        case BENCH_HTTP_BODY_EOF:
            if (p->cbs.on_body)
                p->cbs.on_body(p->ctx, buf + i, n - i);
            i = n;
            break;
        default:
            rc = ASA_EFORMAT;
            goto out;
        }
    }
out:
    if (used)
        *used = i;
    return rc;
}

int bench_http_eof(bench_http *p) {
    if (p->state == BENCH_HTTP_BODY_EOF) {
        p->state = BENCH_HTTP_DONE;
        return ASA_OK;
    }
    return p->state == BENCH_HTTP_DONE ? ASA_OK : ASA_EEOF;
}

/* ---- SSE ---------------------------------------------------------------- */

void bench_sse_init(bench_sse *s, void (*on_event)(void *, const char *, size_t),
                    void *ctx) {
    memset(s, 0, sizeof *s);
    s->on_event = on_event;
    s->ctx = ctx;
}

void bench_sse_reset(bench_sse *s) {
    s->line_len = 0;
    s->data_len = 0;
    s->have_data = 0;
    s->last_cr = 0;
}

void bench_sse_deinit(bench_sse *s) {
    if (!s)
        return;
    free(s->line);
    free(s->data);
    s->line = s->data = NULL;
    s->line_cap = s->data_cap = 0;
}

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap)
        return ASA_OK;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    char *nb = realloc(*buf, nc);
    if (!nb)
        return ASA_ENOMEM;
    *buf = nb;
    *cap = nc;
    return ASA_OK;
}

/* One complete line (without terminator). */
static int sse_line(bench_sse *s, const char *l, size_t n) {
    if (n == 0) { /* blank line: dispatch */
        if (s->have_data) {
            if (grow(&s->data, &s->data_cap, s->data_len + 1))
                return ASA_ENOMEM;
            s->data[s->data_len] = '\0';
            s->on_event(s->ctx, s->data, s->data_len);
        }
        s->data_len = 0;
        s->have_data = 0;
        return ASA_OK;
    }
    if (l[0] == ':')
        return ASA_OK; /* comment / keep-alive ping */
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    if (fl != 4 || memcmp(l, "data", 4) != 0)
        return ASA_OK; /* event:, id:, retry: and unknown fields are ignored */
    const char *v = colon ? colon + 1 : l + n;
    if (v < l + n && *v == ' ')
        v++;
    size_t vl = (size_t)(l + n - v);
    if (grow(&s->data, &s->data_cap, s->data_len + vl + 2))
        return ASA_ENOMEM;
    if (s->have_data)
        s->data[s->data_len++] = '\n';
    memcpy(s->data + s->data_len, v, vl);
    s->data_len += vl;
    s->have_data = 1;
    return ASA_OK;
}

int bench_sse_feed(bench_sse *s, const char *p, size_t n) {
    size_t i = 0;
    if (n && s->last_cr && p[0] == '\n')
        i = 1;
    s->last_cr = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && p[j] != '\n' && p[j] != '\r')
            j++;
        if (j == n) { /* partial line */
            if (grow(&s->line, &s->line_cap, s->line_len + (n - i)))
                return ASA_ENOMEM;
            memcpy(s->line + s->line_len, p + i, n - i);
            s->line_len += n - i;
            return ASA_OK;
        }
        int rc;
        if (s->line_len) {
            if (grow(&s->line, &s->line_cap, s->line_len + (j - i)))
                return ASA_ENOMEM;
            memcpy(s->line + s->line_len, p + i, j - i);
            s->line_len += j - i;
            rc = sse_line(s, s->line, s->line_len);
            s->line_len = 0;
        } else {
            rc = sse_line(s, p + i, j - i);
        }
        if (rc)
            return rc;
        if (p[j] == '\r') {
            if (j + 1 < n) {
                if (p[j + 1] == '\n')
                    j++;
            } else {
                s->last_cr = 1;
            }
        }
        i = j + 1;
    }
    return ASA_OK;
}
