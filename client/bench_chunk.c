/* client/bench_chunk.c - what one streamed event means: a token, an error,
 * the usage numbers, or nothing (role chunks, empty deltas). */
#define _GNU_SOURCE
#include "bench.h"

#include <stdlib.h>
#include <string.h>

static int nonempty_str(json_t *v) {
    return json_is_string(v) && json_string_length(v) > 0;
}

int bench_chunk_parse_full(const char *data, size_t n, bench_chunk *out) {
    memset(out, 0, sizeof *out);
    out->usage_out = out->usage_in = -1;
    if (n == 6 && memcmp(data, "[DONE]", 6) == 0) {
        out->done = 1;
        return ASA_OK;
    }
    json_t *doc = json_loadb(data, n, 0, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        out->error = 1;
        if (asprintf(&out->err, "malformed event data: %.200s", data) < 0)
            out->err = NULL;
        return ASA_OK;
    }
    json_t *err = json_object_get(doc, "error");
    if (err && !json_is_null(err)) {
        out->error = 1;
        out->err = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        return ASA_OK;
    }
    json_t *ch = json_object_get(doc, "choices");
    if (json_is_array(ch) && json_array_size(ch) > 0) {
        json_t *c0 = json_array_get(ch, 0);
        out->choice = 1;
        int tok = nonempty_str(json_object_get(c0, "text"));
        json_t *d = json_object_get(c0, "delta");
        if (!tok && d)
            tok = nonempty_str(json_object_get(d, "content")) ||
                  nonempty_str(json_object_get(d, "reasoning_content")) ||
                  nonempty_str(json_object_get(d, "reasoning")) ||
                  json_array_size(json_object_get(d, "tool_calls")) > 0;
        out->token = tok;
    }
    json_t *u = json_object_get(doc, "usage");
    if (json_is_object(u)) {
        json_t *ct = json_object_get(u, "completion_tokens");
        json_t *pt = json_object_get(u, "prompt_tokens");
        if (json_is_integer(ct))
            out->usage_out = json_integer_value(ct);
        if (json_is_integer(pt))
            out->usage_in = json_integer_value(pt);
    }
    json_decref(doc);
    return ASA_OK;
}

/* Occurrences of pat in s[0..n); *last gets the end of the last one. */
static int count_pat(const char *s, size_t n, const char *pat, const char **last) {
    size_t pl = strlen(pat);
    int k = 0;
    const char *p = s, *e = s + n;
    while (p < e) {
        const char *f = memmem(p, (size_t)(e - p), pat, pl);
        if (!f)
            break;
        k++;
        p = f + pl;
        *last = p;
    }
    return k;
}

/* The common token chunk of every OpenAI-style server, recognised without
 * building a JSON tree: one choice whose "text" (or "content") is a
 * non-empty string, no "error", "usage" absent or null.  Inside JSON
 * strings every quote is escaped, so `"text":"` found unescaped is a key.
 * Anything less plain goes to the full parse. */
static int chunk_fast(const char *d, size_t n) {
    if (n < 2 || d[0] != '{' || d[n - 1] != '}')
        return 0;
    if (memmem(d, n, "\"error\"", 7))
        return 0;
    const char *u = memmem(d, n, "\"usage\"", 7);
    if (u) {
        const char *p = u + 7, *e = d + n;
        while (p < e && (*p == ' ' || *p == ':'))
            p++;
        if ((size_t)(e - p) < 4 || memcmp(p, "null", 4) != 0)
            return 0;
        if (memmem(p, (size_t)(e - p), "\"usage\"", 7))
            return 0;
    }
    if (!memmem(d, n, "\"choices\":[{", 12))
        return 0;
    const char *lt = NULL, *lc = NULL, *dummy = NULL;
    int nt = count_pat(d, n, "\"text\":\"", &lt);
    int nc = count_pat(d, n, "\"content\":\"", &lc);
    if (nt + nc != 1 || count_pat(d, n, "\"index\":", &dummy) > 1)
        return 0;
    const char *v = nt ? lt : lc;
    return v < d + n && *v != '"';
}

int bench_chunk_parse(const char *data, size_t n, bench_chunk *out) {
    if (chunk_fast(data, n)) {
        memset(out, 0, sizeof *out);
        out->usage_out = out->usage_in = -1;
        out->token = 1;
        out->choice = 1;
        return ASA_OK;
    }
    return bench_chunk_parse_full(data, n, out);
}
