/* tokenizer/tok_decode.c - ids -> text: the decoder chain, single pieces,
 * and the incremental (streaming) decoder. */
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"

/* A list of token strings, as the library's decoders pass along. */
typedef struct span {
    size_t off, len;
} span;

typedef struct tlist {
    tok_str buf;
    span *sp;
    size_t n, cap;
} tlist;

static void tl_reset(tlist *l) {
    l->buf.len = 0;
    l->n = 0;
}

static void tl_free(tlist *l) {
    tok_str_free(&l->buf);
    free(l->sp);
}

/* Appends bytes to the last token (open == true) or as a new token. */
static asa_err tl_add(tlist *l, const char *s, size_t n, bool open) {
    if (open && l->n) {
        if (tok__str_append(&l->buf, s, n))
            return ASA_ENOMEM;
        l->sp[l->n - 1].len += n;
        return ASA_OK;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        span *p = realloc(l->sp, cap * sizeof *p);
        if (!p)
            return ASA_ENOMEM;
        l->sp = p;
        l->cap = cap;
    }
    l->sp[l->n++] = (span){l->buf.len, n};
    return tok__str_append(&l->buf, s, n);
}

typedef struct dctx {
    tlist a, b; /* current and scratch */
    pcre2_match_data *md;
    bool raw; /* single-piece mode: no start-of-text rules, no lossy UTF-8 */
} dctx;

static int byte_token(const char *s, size_t n) {
    /* "<0xNN>" with two hex digits */
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static asa_err dec_run(dctx *D, const tok__dec *d);

static asa_err dec_one(dctx *D, const tok__dec *d) {
    tlist *in = &D->a, *out = &D->b;
    const char *B = in->buf.data;
    asa_err e = ASA_OK;
    tl_reset(out);
    switch (d->kind) {
    case TOK_DEC_SEQ:
        return dec_run(D, d);
    case TOK_DEC_BYTELEVEL: {
        /* all tokens -> bytes, then one lossy UTF-8 string */
        tok_str bytes = {0};
        for (size_t i = 0; i < in->n && !e; i++) {
            const char *s = B + in->sp[i].off;
            size_t n = in->sp[i].len, start = bytes.len;
            for (size_t k = 0; k < n && !e;) {
                size_t cl;
                uint32_t cp = tok__u8dec(s + k, &cl);
                int b = tok__cp_to_byte(cp);
                if (b < 0) {
                    /* a character outside the alphabet: the token's own bytes */
                    bytes.len = start;
                    e = tok__str_append(&bytes, s, n);
                    break;
                }
                char c = (char)b;
                e = tok__str_append(&bytes, &c, 1);
                k += cl;
            }
        }
        if (!e && D->raw)
            e = tl_add(out, bytes.data ? bytes.data : "", bytes.len, false);
        else if (!e) {
            tok_str text = {0};
            e = tok__append_lossy(&text, bytes.data ? bytes.data : "", bytes.len);
            if (!e)
                e = tl_add(out, text.data ? text.data : "", text.len, false);
            tok_str_free(&text);
        }
        tok_str_free(&bytes);
        break;
    }
    case TOK_DEC_REPLACE: {
        tok_str tmp = {0};
        for (size_t i = 0; i < in->n && !e; i++) {
            tmp.len = 0;
            e = tok__replace_all(&d->re, D->md, B + in->sp[i].off, in->sp[i].len, d->str,
                                 d->str_len, &tmp);
            if (!e)
                e = tl_add(out, tmp.data ? tmp.data : "", tmp.len, false);
        }
        tok_str_free(&tmp);
        break;
    }
    case TOK_DEC_BYTEFALLBACK: {
        /* runs of <0xNN> become their bytes if those are valid UTF-8, else one
         * U+FFFD per byte */
        tok_str run = {0};
        size_t nrun = 0;
        for (size_t i = 0; i <= in->n && !e; i++) {
            int b = i < in->n ? byte_token(B + in->sp[i].off, in->sp[i].len) : -1;
            if (b >= 0) {
                char c = (char)b;
                e = tok__str_append(&run, &c, 1);
                nrun++;
                continue;
            }
            if (nrun) {
                if (D->raw || tok_utf8_valid_prefix(run.data, run.len) == run.len)
                    e = tl_add(out, run.data, run.len, false);
                else
                    for (size_t k = 0; k < nrun && !e; k++)
                        e = tl_add(out, "\xEF\xBF\xBD", 3, false);
                run.len = 0;
                nrun = 0;
            }
            if (!e && i < in->n)
                e = tl_add(out, B + in->sp[i].off, in->sp[i].len, false);
        }
        tok_str_free(&run);
        break;
    }
    case TOK_DEC_FUSE:
        e = tl_add(out, "", 0, false);
        for (size_t i = 0; i < in->n && !e; i++)
            e = tl_add(out, B + in->sp[i].off, in->sp[i].len, true);
        break;
    case TOK_DEC_STRIP:
        for (size_t i = 0; i < in->n && !e; i++) {
            const char *s = B + in->sp[i].off;
            size_t n = in->sp[i].len, a = 0, z = n, cl;
            if (!D->raw) {
                for (size_t k = 0; k < d->start && a < n; k++) {
                    if (tok__u8dec(s + a, &cl) != d->content)
                        break;
                    a += cl;
                }
            }
            for (size_t k = 0; k < d->stop && z > a; k++) {
                size_t p = z - 1;
                while (p > a && ((unsigned char)s[p] & 0xC0) == 0x80)
                    p--;
                if (tok__u8dec(s + p, &cl) != d->content)
                    break;
                z = p;
            }
            e = tl_add(out, s + a, z - a, false);
        }
        break;
    case TOK_DEC_METASPACE:
        for (size_t i = 0; i < in->n && !e; i++) {
            const char *s = B + in->sp[i].off;
            size_t n = in->sp[i].len, cl;
            bool drop = i == 0 && d->prepend != TOK_PREPEND_NEVER && !D->raw;
            e = tl_add(out, "", 0, false);
            for (size_t k = 0; k < n && !e; k += cl) {
                uint32_t cp = tok__u8dec(s + k, &cl);
                if (cp != d->repl)
                    e = tl_add(out, s + k, cl, true);
                else if (!drop)
                    e = tl_add(out, " ", 1, true);
            }
        }
        break;
    }
    if (e)
        return e;
    tlist x = D->a;
    D->a = D->b;
    D->b = x;
    return ASA_OK;
}

static asa_err dec_run(dctx *D, const tok__dec *d) {
    if (d->kind != TOK_DEC_SEQ)
        return dec_one(D, d);
    for (size_t i = 0; i < d->nsubs; i++) {
        asa_err e = dec_one(D, d->subs[i]);
        if (e)
            return e;
    }
    return ASA_OK;
}

static bool skip_it(const tok_tokenizer *t, const char *s, size_t n) {
    int32_t id = tok__smap_get(&t->added_map, s, n);
    return id >= 0 && tok_is_special(t, id);
}

/* Decodes ids and appends the text to out. */
static asa_err decode_append(const tok_tokenizer *t, const int32_t *ids, size_t n,
                             bool skip_special, bool raw, tok_str *out) {
    dctx D = {.raw = raw};
    asa_err e = ASA_OK;
    for (size_t i = 0; i < n && !e; i++) {
        size_t len;
        const char *s = tok_id_to_token(t, ids[i], &len);
        if (!s || (skip_special && skip_it(t, s, len)))
            continue; /* ids outside the vocabulary are dropped, as in the library */
        e = tl_add(&D.a, s, len, false);
    }
    if (!e && t->dec) {
        if (!(D.md = pcre2_match_data_create(1, NULL)))
            e = ASA_ENOMEM;
        else
            e = dec_run(&D, t->dec);
    }
    if (!e && tok__str_reserve(out, 0))
        e = ASA_ENOMEM;
    for (size_t i = 0; i < D.a.n && !e; i++) {
        if (i && !t->dec)
            e = tok__str_append(out, " ", 1);
        if (!e)
            e = tok__str_append(out, D.a.buf.data + D.a.sp[i].off, D.a.sp[i].len);
    }
    tl_free(&D.a);
    tl_free(&D.b);
    pcre2_match_data_free(D.md);
    return e;
}

asa_err tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                   tok_str *out) {
    if (!t || !out || (!ids && n))
        return ASA_EINVAL;
    out->len = 0;
    return decode_append(t, ids, n, skip_special, false, out);
}

asa_err tok_token_to_piece(const tok_tokenizer *t, int32_t id, tok_str *out,
                           bool *is_special) {
    if (!t || !out)
        return ASA_EINVAL;
    if (is_special)
        *is_special = tok_is_special(t, id);
    if (!tok_id_to_token(t, id, NULL))
        return ASA_ENOTFOUND;
    out->len = 0;
    return decode_append(t, &id, 1, false, true, out);
}

/* ---- vocabulary getters ------------------------------------------------------ */

size_t tok_vocab_size(const tok_tokenizer *t) { return t ? t->vocab_size : 0; }
int32_t tok_bos_id(const tok_tokenizer *t) { return t ? t->bos_id : -1; }
int32_t tok_eos_id(const tok_tokenizer *t) { return t ? t->eos_id : -1; }

bool tok_is_special(const tok_tokenizer *t, int32_t id) {
    if (!t || id < 0 || (size_t)id >= t->n_ids || t->id_added[id] < 0)
        return false;
    return t->added[t->id_added[id]].special;
}

const char *tok_id_to_token(const tok_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || (size_t)id >= t->n_ids || !t->id_str[id])
        return NULL;
    if (len)
        *len = t->id_len[id];
    return t->id_str[id];
}

int32_t tok_token_to_id(const tok_tokenizer *t, const char *s, size_t len) {
    if (!t || !s)
        return -1;
    int32_t id = tok__smap_get(&t->added_map, s, len);
    return id >= 0 ? id : tok__smap_get(&t->vocab, s, len);
}

asa_err tok_check(const tok_tokenizer *t) {
    if (!t || !t->id_str || !t->id_len || !t->id_added || !t->vocab.ents)
        return ASA_EINTERNAL;
    size_t nvocab = 0;
    for (size_t i = 0; i <= t->vocab.mask; i++) {
        const tok__smap_ent *e = &t->vocab.ents[i];
        if (!e->key)
            continue;
        nvocab++;
        if (e->val < 0 || (size_t)e->val >= t->n_ids || !t->id_str[e->val])
            return ASA_EINTERNAL;
        /* an added token may show its normalized form instead */
        if (t->id_added[e->val] < 0 &&
            (t->id_len[e->val] != e->len || memcmp(t->id_str[e->val], e->key, e->len)))
            return ASA_EINTERNAL;
    }
    if (nvocab != t->vocab.count)
        return ASA_EINTERNAL;
    for (size_t i = 0; i <= t->merges.mask; i++) {
        const tok__mmap_ent *m = &t->merges.ents[i];
        if (m->key == UINT64_MAX)
            continue;
        uint32_t a = (uint32_t)(m->key >> 32), b = (uint32_t)m->key;
        if (a >= t->n_ids || b >= t->n_ids || m->id < 0 || (size_t)m->id >= t->n_ids ||
            !t->in_merge[a] || !t->in_merge[b])
            return ASA_EINTERNAL;
    }
    for (size_t i = 0; i < t->n_ids; i++) {
        int32_t k = t->id_added[i];
        if (k >= 0 && ((size_t)k >= t->nadded ||
                       (t->added[k].id != (int32_t)i && t->added[k].match_len)))
            return ASA_EINTERNAL;
    }
    for (int s = 0; s < TOK_CACHE_SHARDS; s++)
        if (t->cache[s].count > TOK_CACHE_SLOTS)
            return ASA_EINTERNAL;
    if ((t->bos_id >= 0 && (size_t)t->bos_id >= t->n_ids) ||
        (t->eos_id >= 0 && (size_t)t->eos_id >= t->n_ids))
        return ASA_EINTERNAL;
    return ASA_OK;
}

/* ---- streaming ------------------------------------------------------------------ */

/* The library's DecodeStream: keep the ids since the last emitted boundary
 * (plus the token before it, for context), decode that window after each new
 * id, and emit what extends the previous decode, unless it ends in an
 * incomplete character (U+FFFD at the very end). */
struct tok_stream {
    const tok_tokenizer *t;
    bool skip;
    tok_ids ids;      /* the window */
    tok_str prefix;   /* decode of ids[0..prefix_index) as last emitted */
    size_t prefix_index;
    tok_str text;     /* scratch */
};

asa_err tok_stream_create(const tok_tokenizer *t, bool skip_special, tok_stream **out) {
    if (!t || !out)
        return ASA_EINVAL;
    tok_stream *s = calloc(1, sizeof *s);
    if (!s)
        return ASA_ENOMEM;
    s->t = t;
    s->skip = skip_special;
    *out = s;
    return ASA_OK;
}

void tok_stream_destroy(tok_stream *s) {
    if (!s)
        return;
    tok_ids_free(&s->ids);
    tok_str_free(&s->prefix);
    tok_str_free(&s->text);
    free(s);
}

#define TOK_PRIME_KEEP 4 /* prompt ids kept as context */

asa_err tok_stream_prime(tok_stream *s, const int32_t *ids, size_t n) {
    if (!s || (!ids && n))
        return ASA_EINVAL;
    size_t k = n < TOK_PRIME_KEEP ? n : TOK_PRIME_KEEP;
    tok_ids w = {0};
    tok_str p = {0};
    asa_err e = tok__ids_append(&w, ids + n - k, k);
    if (!e)
        e = decode_append(s->t, w.ids, w.len, s->skip, false, &p);
    if (!e && tok__str_reserve(&p, 0))
        e = ASA_ENOMEM;
    if (e) {
        tok_ids_free(&w);
        tok_str_free(&p);
        return e;
    }
    tok_ids_free(&s->ids);
    tok_str_free(&s->prefix);
    s->ids = w;
    s->prefix = p;
    s->prefix_index = w.len;
    return ASA_OK;
}

static bool ends_incomplete(const tok_str *s) {
    return s->len >= 3 && memcmp(s->data + s->len - 3, "\xEF\xBF\xBD", 3) == 0;
}

asa_err tok_stream_push(tok_stream *s, int32_t id, tok_str *out) {
    if (!s || !out)
        return ASA_EINVAL;
    size_t out_len = out->len, old_n = s->ids.len;
    asa_err e = tok__ids_push(&s->ids, id);
    if (e)
        return e;
    s->text.len = 0;
    if ((e = decode_append(s->t, s->ids.ids, s->ids.len, s->skip, false, &s->text)))
        goto fail;
    if (s->text.len <= s->prefix.len || ends_incomplete(&s->text))
        return ASA_OK;
    if (memcmp(s->text.data, s->prefix.data ? s->prefix.data : "", s->prefix.len) != 0) {
        /* The new id changed text already emitted: only a run of byte
         * tokens that turned invalid does this (the library's ByteFallback
         * then replaces the whole run).  Emit the ids not yet emitted,
         * decoded on their own, and restart the window with them. */
        s->text.len = 0;
        const int32_t *rest = s->ids.ids + s->prefix_index;
        size_t nrest = s->ids.len - s->prefix_index;
        if ((e = decode_append(s->t, rest, nrest, s->skip, false, &s->text)))
            goto fail;
        if (ends_incomplete(&s->text))
            return ASA_OK;
        if ((e = tok__str_append(out, s->text.data ? s->text.data : "", s->text.len)))
            goto fail;
        memmove(s->ids.ids, rest, nrest * sizeof(int32_t));
        s->ids.len = nrest;
        s->prefix_index = nrest;
        s->prefix.len = 0;
        if ((e = tok__str_append(&s->prefix, s->text.data ? s->text.data : "", s->text.len)))
            goto fail_hard;
        return ASA_OK;
    }
    if ((e = tok__str_append(out, s->text.data + s->prefix.len,
                             s->text.len - s->prefix.len)))
        goto fail;
    /* the window becomes the ids from the old prefix boundary on */
    size_t new_index = s->ids.len - s->prefix_index;
    memmove(s->ids.ids, s->ids.ids + s->prefix_index, new_index * sizeof(int32_t));
    s->ids.len = new_index;
    s->prefix.len = 0;
    if ((e = decode_append(s->t, s->ids.ids, s->ids.len, s->skip, false, &s->prefix)))
        goto fail_hard;
    s->prefix_index = new_index;
    return ASA_OK;
fail:
    s->ids.len = old_n;
    out->len = out_len;
    if (out->data)
        out->data[out_len] = 0;
    return e;
fail_hard:
    /* out of memory after the text was emitted: drop the window so that the
     * stream stays consistent (the next id decodes without context) */
    s->ids.len = 0;
    s->prefix.len = 0;
    s->prefix_index = 0;
    return e;
}

asa_err tok_stream_flush(tok_stream *s, tok_str *out) {
    if (!s || !out)
        return ASA_EINVAL;
    s->text.len = 0;
    asa_err e = decode_append(s->t, s->ids.ids, s->ids.len, s->skip, false, &s->text);
    if (!e && s->text.len >= s->prefix.len &&
        memcmp(s->text.data, s->prefix.data ? s->prefix.data : "", s->prefix.len) == 0)
        e = tok__str_append(out, s->text.data + s->prefix.len, s->text.len - s->prefix.len);
    else if (!e) {
        /* see tok_stream_push: the ids not yet emitted, on their own */
        s->text.len = 0;
        e = decode_append(s->t, s->ids.ids + s->prefix_index, s->ids.len - s->prefix_index,
                          s->skip, false, &s->text);
        if (!e)
            e = tok__str_append(out, s->text.data ? s->text.data : "", s->text.len);
    }
    if (!e && tok__str_reserve(out, 0))
        e = ASA_ENOMEM;
    s->ids.len = 0;
    s->prefix.len = 0;
    s->prefix_index = 0;
    return e;
}
