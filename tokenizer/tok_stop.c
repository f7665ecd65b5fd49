/* tokenizer/tok_stop.c - stop strings over streamed text.
 *
 * The matcher keeps the text that could still begin a stop string (at most
 * the longest stop string minus one byte).  On each feed it looks for the
 * stop string that completes first in held + new text; none completing, it
 * releases everything except the longest suffix that is a prefix of some
 * stop string.  A stop string is valid UTF-8, so that suffix always starts on
 * a character boundary and released text never splits a character. */
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"

struct tok_stop {
    char **stops; /* [n] copies */
    size_t *lens; /* [n] */
    size_t n;
    size_t maxlen;
    tok_str held;     /* held back (and scratch for held + new text) */
    int64_t released; /* bytes released so far (stream offset of held[0]) */
    bool done;        /* a stop string matched */
};

asa_err tok_stop_create(const char *const *stops, size_t n, tok_stop **out) {
    if (!out || (n && !stops))
        return ASA_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!stops[i] || !stops[i][0])
            return ASA_EINVAL;
    tok_stop *m = calloc(1, sizeof *m);
    if (!m)
        return ASA_ENOMEM;
    m->stops = calloc(n ? n : 1, sizeof *m->stops);
    m->lens = calloc(n ? n : 1, sizeof *m->lens);
    if (!m->stops || !m->lens)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        m->lens[i] = strlen(stops[i]);
        m->stops[i] = malloc(m->lens[i] + 1);
        if (!m->stops[i])
            goto fail;
        memcpy(m->stops[i], stops[i], m->lens[i] + 1);
        m->n = i + 1;
        if (m->lens[i] > m->maxlen)
            m->maxlen = m->lens[i];
    }
    *out = m;
    return ASA_OK;
fail:
    tok_stop_destroy(m);
    return ASA_ENOMEM;
}

void tok_stop_destroy(tok_stop *m) {
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->stops[i]);
    free(m->stops);
    free(m->lens);
    tok_str_free(&m->held);
    free(m);
}

size_t tok_stop_held(const tok_stop *m) { return m ? m->held.len : 0; }

asa_err tok_stop_feed(tok_stop *m, const char *text, size_t len, tok_str *release,
                      int *matched, int64_t *match_at) {
    if (matched)
        *matched = -1;
    if (match_at)
        *match_at = -1;
    if (!m || !release || (!text && len))
        return ASA_EINVAL;
    if (tok__str_reserve(release, len + m->held.len))
        return ASA_ENOMEM;
    if (m->done)
        return ASA_OK;
    size_t old = m->held.len;
    if (tok__str_append(&m->held, text, len))
        return ASA_ENOMEM;
    const char *b = m->held.data;
    size_t n = m->held.len;

    /* the first stop string to complete: smallest end, then the longest;
     * nothing can complete inside the old held text (it would have matched) */
    for (size_t e = old + 1; e <= n; e++) {
        int best = -1;
        for (size_t i = 0; i < m->n; i++) {
            size_t L = m->lens[i];
            if (L <= e && b[e - 1] == m->stops[i][L - 1] && !memcmp(b + e - L, m->stops[i], L) &&
                (best < 0 || L > m->lens[best]))
                best = (int)i;
        }
        if (best >= 0) {
            size_t at = e - m->lens[best];
            tok__str_append(release, b, at); /* room reserved above */
            if (matched)
                *matched = best;
            if (match_at)
                *match_at = m->released + (int64_t)at;
            m->released += (int64_t)at;
            m->held.len = 0;
            m->done = true;
            return ASA_OK;
        }
    }

    /* hold back the longest suffix that some stop string starts with */
    size_t keep = 0;
    size_t k = m->maxlen ? m->maxlen - 1 : 0;
    if (k > n)
        k = n;
    for (; k > 0 && !keep; k--)
        for (size_t i = 0; i < m->n; i++)
            if (m->lens[i] > k && !memcmp(b + n - k, m->stops[i], k)) {
                keep = k;
                break;
            }
    tok__str_append(release, b, n - keep);
    memmove(m->held.data, b + n - keep, keep);
    m->held.len = keep;
    m->held.data[keep] = 0;
    m->released += (int64_t)(n - keep);
    return ASA_OK;
}

asa_err tok_stop_finish(tok_stop *m, tok_str *release) {
    if (!m || !release)
        return ASA_EINVAL;
    if (tok__str_append(release, m->held.data ? m->held.data : "", m->held.len))
        return ASA_ENOMEM;
    m->released += (int64_t)m->held.len;
    m->held.len = 0;
    return ASA_OK;
}
