/* common/asa.c - error table, logger, arena, clock. */
#define _POSIX_C_SOURCE 200809L
#include "asa.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

const char *asa_strerror(int err) {
    switch (err) {
    case ASA_OK:
        return "success";
#define ASA__ERR_MSG(name, val, msg)                                          \
    case val:                                                                 \
        return msg;
        ASA_ERR_MAP(ASA__ERR_MSG)
#undef ASA__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *asa_errname(int err) {
    switch (err) {
    case ASA_OK:
        return "ASA_OK";
#define ASA__ERR_NAME(name, val, msg)                                         \
    case val:                                                                 \
        return "ASA_E" #name;
        ASA_ERR_MAP(ASA__ERR_NAME)
#undef ASA__ERR_NAME
    default:
        return "ASA_E?";
    }
}

/* ---- logging ---------------------------------------------------------- */

int asa_log_threshold = ASA_LOG_INFO;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

int asa_log_parse_level(const char *s) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (!s)
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

void asa_log_set_level(int level) {
    if (level < ASA_LOG_ERROR)
        level = ASA_LOG_ERROR;
    if (level > ASA_LOG_DEBUG)
        level = ASA_LOG_DEBUG;
    asa_log_threshold = level;
}

__attribute__((constructor)) static void asa__log_init(void) {
    int l = asa_log_parse_level(getenv("ASA_LOG_LEVEL"));
    if (l >= 0)
        asa_log_threshold = l;
}

void asa__log(int level, const char *module, int64_t reqid, const char *fmt,
              ...) {
    static const char *tag[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);

    if (level < 0)
        level = 0;
    if (level > 3)
        level = 3;
    pthread_mutex_lock(&log_mu);
    if (reqid >= 0)
        fprintf(stderr, "%s.%03ldZ %-5s [%s] [req %lld] %s\n", when,
                ts.tv_nsec / 1000000, tag[level], module ? module : "-",
                (long long)reqid, msg);
    else
        fprintf(stderr, "%s.%03ldZ %-5s [%s] %s\n", when,
                ts.tv_nsec / 1000000, tag[level], module ? module : "-", msg);
    pthread_mutex_unlock(&log_mu);
}

int asa_errf(asa_errbuf *eb, int err, const char *fmt, ...) {
    if (eb && eb->buf && eb->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(eb->buf, eb->len, fmt, ap);
        va_end(ap);
    }
    return err;
}

/* ---- arena ------------------------------------------------------------ */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
} arena_chunk;

struct asa_arena {
    arena_chunk *head;
    size_t chunk_bytes;
    size_t total;
};

static arena_chunk *chunk_new(size_t size) {
    arena_chunk *c = malloc(sizeof *c + size);
    if (!c)
        return NULL;
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

asa_arena *asa_arena_create(size_t chunk_bytes) {
    asa_arena *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->chunk_bytes = chunk_bytes ? chunk_bytes : 16384;
    a->head = chunk_new(a->chunk_bytes);
    if (!a->head) {
        free(a);
        return NULL;
    }
    return a;
}

void asa_arena_destroy(asa_arena *a) {
    if (!a)
        return;
    arena_chunk *c = a->head;
    while (c) {
        arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    free(a);
}

void *asa_arena_alloc(asa_arena *a, size_t bytes) {
    size_t need = (bytes + 15) & ~(size_t)15;
    if (need < bytes)
        return NULL;
    arena_chunk *c = a->head;
    if (c->size - c->used < need) {
        size_t sz = need > a->chunk_bytes ? need : a->chunk_bytes;
        arena_chunk *n = chunk_new(sz);
        if (!n)
            return NULL;
        n->next = c;
        a->head = c = n;
    }
    void *p = c->data + c->used;
    c->used += need;
    a->total += need;
    return p;
}

char *asa_arena_strndup(asa_arena *a, const char *s, size_t n) {
    char *p = asa_arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *asa_arena_strdup(asa_arena *a, const char *s) {
    return asa_arena_strndup(a, s, strlen(s));
}

size_t asa_arena_used(const asa_arena *a) { return a->total; }

double asa_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
