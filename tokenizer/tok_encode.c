/* tokenizer/tok_encode.c - text -> ids: the Hugging Face pipeline.
 *
 *   added tokens (non-normalized) -> normalizer -> added tokens (normalized)
 *   -> pre-tokenizer -> BPE on each piece (word cache) -> post-processor
 *
 * The text moves through the stages as a list of pieces over a byte buffer;
 * each stage reads one (buffer, list) and writes the other, then they swap.
 * A piece is either text still to be tokenized or a fixed id (an added token
 * found in the text).  Empty text pieces are dropped after every split, as
 * the library does. */
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"
#ifdef TOK_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

typedef struct piece {
    uint32_t off, len; /* text in the stage buffer */
    int32_t id;        /* >= 0: a fixed token, text unused */
    bool orig0;        /* starts at offset 0 of the original text */
} piece;

typedef struct plist {
    piece *p;
    size_t n, cap;
} plist;

typedef struct sym {
    int32_t c;        /* token id */
    int32_t prev, next; /* neighbours, -1 at the ends */
    uint32_t len;     /* bytes; 0 once merged into its left neighbour */
} sym;

typedef struct hent {
    uint32_t rank, pos;
    int32_t id;
} hent;

typedef struct enc {
    const tok_tokenizer *t;
    tok_str buf[2];
    plist pl[2];
    int cur;
    pcre2_match_data *md;
    /* BPE scratch */
    sym *syms;
    size_t nsyms, capsyms;
    hent *heap;
    size_t nheap, capheap;
    tok_ids word; /* ids of the current word */
    tok_str key;  /* lookup key scratch */
    tok_str nb, ntmp; /* normalizer scratch */
    /* split scratch */
    struct rng {
        uint32_t a, b;
        bool m;
    } *rg;
    size_t nrg, caprg;
} enc;

/* ---- piece lists ---------------------------------------------------------- */

static asa_err pl_push(plist *l, uint32_t off, uint32_t len, int32_t id, bool orig0) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        piece *p = realloc(l->p, cap * sizeof *p);
        if (!p)
            return ASA_ENOMEM;
        l->p = p;
        l->cap = cap;
    }
    l->p[l->n++] = (piece){off, len, id, orig0};
    return ASA_OK;
}

/* Starts a stage: returns the output list and buffer, emptied. */
static void stage_begin(enc *E, plist **out, tok_str **ob) {
    *out = &E->pl[!E->cur];
    *ob = &E->buf[!E->cur];
    (*out)->n = 0;
    (*ob)->len = 0;
}

static void stage_end(enc *E) { E->cur = !E->cur; }

/* Appends text to the output buffer as a new piece (dropped if empty). */
static asa_err emit_text(plist *out, tok_str *ob, const char *s, size_t n, bool orig0) {
    if (!n)
        return ASA_OK;
    uint32_t off = (uint32_t)ob->len;
    if (tok__str_append(ob, s, n))
        return ASA_ENOMEM;
    return pl_push(out, off, (uint32_t)n, -1, orig0);
}

/* ---- added tokens ----------------------------------------------------------- */

static bool char_is(const enc *E, const pcre2_code *re, const char *s, size_t n) {
    return pcre2_match(re, (PCRE2_SPTR)s, n, 0, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, E->md,
                       NULL) >= 0;
}

/* Start of the last character of s[0..end). */
static size_t prev_char(const char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

/* Splits s[len] around the added tokens of one table (leftmost-longest,
 * non-overlapping), honouring single_word, lstrip and rstrip exactly as the
 * library's AddedVocabulary::find_matches. */
static asa_err split_added(enc *E, const char *s, size_t len, bool orig0, int32_t **first,
                           const size_t *nfirst, plist *out, tok_str *ob) {
    const tok_tokenizer *t = E->t;
    size_t start_offset = 0, i = 0;
    while (i < len) {
        unsigned char b = (unsigned char)s[i];
        const tok__added *hit = NULL;
        for (size_t k = 0; k < nfirst[b]; k++) {
            const tok__added *a = &t->added[first[b][k]];
            if (a->match_len <= len - i && memcmp(s + i, a->match, a->match_len) == 0) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t start = i, stop = i + hit->match_len;
        i = stop;
        if (hit->single_word) {
            bool start_space =
                start == 0 || !char_is(E, t->re_word, s + prev_char(s, start),
                                       start - prev_char(s, start));
            bool stop_space =
                stop == len ||
                !char_is(E, t->re_word, s + stop, tok__u8len((unsigned char)s[stop]));
            if (!start_space || !stop_space)
                continue;
        }
        if (hit->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t p = prev_char(s, ns);
                if (!char_is(E, t->re_space, s + p, ns - p))
                    break;
                ns = p;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (hit->rstrip) {
            while (stop < len) {
                size_t n = tok__u8len((unsigned char)s[stop]);
                if (!char_is(E, t->re_space, s + stop, n))
                    break;
                stop += n;
            }
        }
        if (start_offset < start) {
            asa_err e = emit_text(out, ob, s + start_offset, start - start_offset,
                                  orig0 && start_offset == 0);
            if (e)
                return e;
        }
        if (pl_push(out, 0, 0, hit->id, false))
            return ASA_ENOMEM;
        start_offset = stop;
    }
    if (start_offset < len)
        return emit_text(out, ob, s + start_offset, len - start_offset,
                         orig0 && start_offset == 0);
    return ASA_OK;
}

/* ---- normalizers ------------------------------------------------------------- */

typedef struct repl_ctx {
    const char *s;
    size_t last;
    const char *content;
    size_t clen;
    tok_str *out;
} repl_ctx;

static asa_err repl_cb(void *ctx, size_t a, size_t b) {
    repl_ctx *r = ctx;
    if (tok__str_append(r->out, r->s + r->last, a - r->last) ||
        tok__str_append(r->out, r->content, r->clen))
        return ASA_ENOMEM;
    r->last = b;
    return ASA_OK;
}

asa_err tok__replace_all(const tok__regex *re, pcre2_match_data *md, const char *s,
                           size_t len, const char *content, size_t clen, tok_str *out) {
    repl_ctx r = {s, 0, content, clen, out};
    asa_err e = tok__regex_each(re, md, s, len, repl_cb, &r);
    if (e)
        return e;
    return tok__str_append(out, s + r.last, len - r.last);
}

static asa_err norm_run(const tok__norm *n, pcre2_match_data *md, tok_str *cur,
                        tok_str *tmp) {
    switch (n->kind) {
    case TOK_NORM_SEQ:
        for (size_t i = 0; i < n->nsubs; i++) {
            asa_err e = norm_run(n->subs[i], md, cur, tmp);
            if (e)
                return e;
        }
        return ASA_OK;
    case TOK_NORM_PREPEND:
        if (!cur->len)
            return ASA_OK;
        tmp->len = 0;
        if (tok__str_append(tmp, n->str, n->str_len) ||
            tok__str_append(tmp, cur->data, cur->len))
            return ASA_ENOMEM;
        break;
    case TOK_NORM_UNICODE: {
#ifdef TOK_HAVE_UTF8PROC
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)(cur->data ? cur->data : ""),
                                          (utf8proc_ssize_t)cur->len,
                                          &dst, (utf8proc_option_t)n->uflags);
        if (r < 0) {
            free(dst);
            return r == UTF8PROC_ERROR_NOMEM ? ASA_ENOMEM : ASA_EINTERNAL;
        }
        tmp->len = 0;
        asa_err e = tok__str_append(tmp, (const char *)dst, (size_t)r);
        free(dst);
        if (e)
            return e;
        break;
#else
        return ASA_EINTERNAL; /* refused at load */
#endif
    }
    case TOK_NORM_REPLACE: {
        tmp->len = 0;
        asa_err e = tok__replace_all(&n->re, md, cur->data ? cur->data : "", cur->len, n->str,
                                n->str_len, tmp);
        if (e)
            return e;
        break;
    }
    }
    tok_str x = *cur;
    *cur = *tmp;
    *tmp = x;
    return ASA_OK;
}

asa_err tok__normalize(const tok_tokenizer *t, const tok__norm *n, const char *s,
                       size_t len, tok_str *out) {
    (void)t;
    tok_str tmp = {0};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    asa_err e = md ? ASA_OK : ASA_ENOMEM;
    out->len = 0;
    if (!e)
        e = tok__str_append(out, s, len);
    if (!e)
        e = norm_run(n, md, out, &tmp);
    tok_str_free(&tmp);
    pcre2_match_data_free(md);
    return e;
}

/* ---- splitting with behaviours ------------------------------------------------ */

static asa_err rg_push(enc *E, size_t a, size_t b, bool m) {
    if (E->nrg == E->caprg) {
        size_t cap = E->caprg ? E->caprg * 2 : 64;
        struct rng *p = realloc(E->rg, cap * sizeof *p);
        if (!p)
            return ASA_ENOMEM;
        E->rg = p;
        E->caprg = cap;
    }
    E->rg[E->nrg++] = (struct rng){(uint32_t)a, (uint32_t)b, m};
    return ASA_OK;
}

typedef struct find_ctx {
    enc *E;
    size_t prev;
} find_ctx;

static asa_err find_cb(void *ctx, size_t a, size_t b) {
    find_ctx *f = ctx;
    if (f->prev != a && rg_push(f->E, f->prev, a, false))
        return ASA_ENOMEM;
    if (rg_push(f->E, a, b, true))
        return ASA_ENOMEM;
    f->prev = b;
    return ASA_OK;
}

/* Splits s[len] by the matches of re with a split behaviour (the library's
 * NormalizedString::split), emitting the kept non-empty pieces. */
static asa_err split_by(enc *E, const tok__regex *re, tok__split_behavior beh, bool invert,
                        const char *s, size_t len, bool orig0, plist *out, tok_str *ob) {
    E->nrg = 0;
    find_ctx f = {E, 0};
    asa_err e = tok__regex_each(re, E->md, s, len, find_cb, &f);
    if (e)
        return e;
    if (f.prev != len && rg_push(E, f.prev, len, false))
        return ASA_ENOMEM;
    size_t n = E->nrg;
    struct rng *r = E->rg;
    if (invert)
        for (size_t i = 0; i < n; i++)
            r[i].m = !r[i].m;
    /* rewrite r[] in place into (range, removed) with m now meaning "remove" */
    size_t w = 0;
    bool prev_match = false;
    switch (beh) {
    case TOK_SPLIT_REMOVED:
        w = n;
        break;
    case TOK_SPLIT_ISOLATED:
        for (size_t i = 0; i < n; i++)
            r[i].m = false;
        w = n;
        break;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < n; i++) {
            bool m = r[i].m;
            if (m == prev_match && w > 0)
                r[w - 1].b = r[i].b;
            else
                r[w++] = (struct rng){r[i].a, r[i].b, false};
            prev_match = m;
        }
        break;
    case TOK_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < n; i++) {
            bool m = r[i].m;
            if (m && !prev_match && w > 0)
                r[w - 1].b = r[i].b;
            else
                r[w++] = (struct rng){r[i].a, r[i].b, false};
            prev_match = m;
        }
        break;
    case TOK_SPLIT_MERGED_NEXT: {
        /* walk backwards, then the kept ranges are in reverse order */
        size_t k = n;
        for (size_t i = n; i-- > 0;) {
            bool m = r[i].m;
            if (m && !prev_match && k < n)
                r[k].a = r[i].a;
            else
                r[--k] = (struct rng){r[i].a, r[i].b, false};
            prev_match = m;
        }
        memmove(r, r + k, (n - k) * sizeof *r);
        w = n - k;
        break;
    }
    }
    for (size_t i = 0; i < w; i++) {
        if (r[i].m)
            continue;
        if ((e = emit_text(out, ob, s + r[i].a, r[i].b - r[i].a, orig0 && r[i].a == 0)))
            return e;
    }
    return ASA_OK;
}

/* ---- pre-tokenizers ------------------------------------------------------------ */

static asa_err pre_run(enc *E, const tok__pre *p) {
    if (p->kind == TOK_PRE_SEQ) {
        for (size_t i = 0; i < p->nsubs; i++) {
            asa_err e = pre_run(E, p->subs[i]);
            if (e)
                return e;
        }
        return ASA_OK;
    }
    plist *out;
    tok_str *ob;
    stage_begin(E, &out, &ob);
    const plist *in = &E->pl[E->cur];
    const char *ib = E->buf[E->cur].data;
    tok_str *tmp = &E->key;
    asa_err e = ASA_OK;
    for (size_t i = 0; i < in->n && !e; i++) {
        piece pc = in->p[i];
        if (pc.id >= 0) {
            e = pl_push(out, 0, 0, pc.id, false);
            continue;
        }
        const char *s = ib + pc.off;
        size_t n = pc.len;
        switch (p->kind) {
        case TOK_PRE_BYTELEVEL: {
            tmp->len = 0;
            if (p->add_prefix_space && s[0] != ' ' && tok__str_append(tmp, " ", 1))
                return ASA_ENOMEM;
            if (tok__str_append(tmp, s, n))
                return ASA_ENOMEM;
            size_t first = out->n;
            if (p->use_regex)
                e = split_by(E, &p->re, TOK_SPLIT_ISOLATED, false, tmp->data, tmp->len,
                             pc.orig0, out, ob);
            else
                e = emit_text(out, ob, tmp->data, tmp->len, pc.orig0);
            if (e)
                return e;
            /* map the new pieces' bytes to byte-level characters: rewrite
             * them at the end of the buffer (the raw copies become garbage) */
            for (size_t k = first; k < out->n; k++) {
                uint32_t off = out->p[k].off, len = out->p[k].len;
                uint32_t noff = (uint32_t)ob->len;
                if (tok__str_reserve(ob, (size_t)len * 2))
                    return ASA_ENOMEM;
                char *w = ob->data + ob->len;
                for (uint32_t j = 0; j < len; j++) {
                    uint32_t cp = tok__byte_to_cp((unsigned char)ob->data[off + j]);
                    if (cp < 0x80)
                        *w++ = (char)cp;
                    else {
                        *w++ = (char)(0xC0 | (cp >> 6));
                        *w++ = (char)(0x80 | (cp & 0x3F));
                    }
                }
                ob->len = (size_t)(w - ob->data);
                ob->data[ob->len] = 0;
                out->p[k].off = noff;
                out->p[k].len = (uint32_t)(ob->len - noff);
            }
            break;
        }
        case TOK_PRE_SPLIT:
        case TOK_PRE_DIGITS:
            e = split_by(E, &p->re, p->behavior, p->kind == TOK_PRE_SPLIT && p->invert, s, n,
                         pc.orig0, out, ob);
            break;
        case TOK_PRE_METASPACE: {
            tmp->len = 0;
            for (size_t k = 0; k < n && !e; k++)
                e = s[k] == ' ' ? tok__str_append(tmp, p->repl, p->repl_len)
                                : tok__str_append(tmp, s + k, 1);
            if (e)
                return e;
            bool starts = tmp->len >= p->repl_len && !memcmp(tmp->data, p->repl, p->repl_len);
            bool prepend = !starts && (p->prepend == TOK_PREPEND_ALWAYS ||
                                       (p->prepend == TOK_PREPEND_FIRST && pc.orig0));
            if (prepend) {
                /* move the text right by one replacement character */
                if (tok__str_reserve(tmp, p->repl_len))
                    return ASA_ENOMEM;
                memmove(tmp->data + p->repl_len, tmp->data, tmp->len);
                memcpy(tmp->data, p->repl, p->repl_len);
                tmp->len += p->repl_len;
                tmp->data[tmp->len] = 0;
            }
            if (p->split) {
                tok__regex lit = {.literal = true, .lit = p->repl, .lit_len = p->repl_len};
                e = split_by(E, &lit, TOK_SPLIT_MERGED_NEXT, false, tmp->data, tmp->len,
                             pc.orig0, out, ob);
            } else
                e = emit_text(out, ob, tmp->data, tmp->len, pc.orig0);
            break;
        }
        case TOK_PRE_SEQ:
            break;
        }
    }
    stage_end(E);
    return e;
}

/* ---- the word cache ----------------------------------------------------------- */

void tok__cache_clear(tok_tokenizer *t) {
    for (int s = 0; s < TOK_CACHE_SHARDS; s++) {
        tok__cshard *sh = &t->cache[s];
        pthread_mutex_lock(&sh->mu);
        for (size_t i = 0; i < TOK_CACHE_SLOTS; i++) {
            free(sh->slots[i].key);
            sh->slots[i].key = NULL;
        }
        sh->count = 0;
        pthread_mutex_unlock(&sh->mu);
    }
}

/* Looks word up; on a hit appends its ids to out and returns true. */
static bool cache_get(const tok_tokenizer *t, uint64_t h, const char *w, size_t n,
                      tok_ids *out, asa_err *err) {
    tok__cshard *sh = &t->cache[h & (TOK_CACHE_SHARDS - 1)];
    size_t i = (size_t)(h >> 8) & (TOK_CACHE_SLOTS - 1);
    bool hit = false;
    *err = ASA_OK;
    pthread_mutex_lock(&sh->mu);
    for (;;) {
        tok__centry *c = &sh->slots[i];
        if (!c->key)
            break;
        if (c->hash == h && c->klen == n && memcmp(c->key, w, n) == 0) {
            int32_t ids[64];
            const char *src = c->key + ((n + 3) & ~(size_t)3);
            /* copy out under the lock: the shard may be cleared later */
            if (c->nids <= 64) {
                memcpy(ids, src, c->nids * sizeof(int32_t));
                *err = tok__ids_append(out, ids, c->nids);
            } else {
                *err = tok__ids_append(out, (const int32_t *)(const void *)src, c->nids);
            }
            hit = true;
            break;
        }
        i = (i + 1) & (TOK_CACHE_SLOTS - 1);
    }
    pthread_mutex_unlock(&sh->mu);
    return hit;
}

static void cache_put(const tok_tokenizer *t, uint64_t h, const char *w, size_t n,
                      const int32_t *ids, size_t nids) {
    tok__cshard *sh = &t->cache[h & (TOK_CACHE_SHARDS - 1)];
    size_t koff = (n + 3) & ~(size_t)3;
    char *blk = malloc(koff + nids * sizeof(int32_t));
    if (!blk)
        return; /* the cache is only an optimisation */
    memcpy(blk, w, n);
    memcpy(blk + koff, ids, nids * sizeof(int32_t));
    pthread_mutex_lock(&sh->mu);
    if (sh->count >= TOK_CACHE_SLOTS * 3 / 4) {
        /* full: start over (cheap, and keeps probing short) */
        for (size_t i = 0; i < TOK_CACHE_SLOTS; i++) {
            free(sh->slots[i].key);
            sh->slots[i].key = NULL;
        }
        sh->count = 0;
    }
    size_t i = (size_t)(h >> 8) & (TOK_CACHE_SLOTS - 1);
    for (;;) {
        tok__centry *c = &sh->slots[i];
        if (!c->key) {
            *c = (tok__centry){h, blk, (uint32_t)n, (uint32_t)nids};
            sh->count++;
            break;
        }
        if (c->hash == h && c->klen == n && memcmp(c->key, w, n) == 0) {
            free(blk); /* another thread got there first */
            break;
        }
        i = (i + 1) & (TOK_CACHE_SLOTS - 1);
    }
    pthread_mutex_unlock(&sh->mu);
}

/* ---- BPE ------------------------------------------------------------------------ */

static asa_err sym_add(enc *E, int32_t c, uint32_t len) {
    if (E->nsyms == E->capsyms) {
        size_t cap = E->capsyms ? E->capsyms * 2 : 64;
        sym *p = realloc(E->syms, cap * sizeof *p);
        if (!p)
            return ASA_ENOMEM;
        E->syms = p;
        E->capsyms = cap;
    }
    int32_t n = (int32_t)E->nsyms;
    if (n > 0)
        E->syms[n - 1].next = n;
    E->syms[E->nsyms++] = (sym){c, n - 1, -1, len};
    return ASA_OK;
}

static inline bool hless(const hent *a, const hent *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static asa_err heap_push(enc *E, uint32_t rank, uint32_t pos, int32_t id) {
    if (E->nheap == E->capheap) {
        size_t cap = E->capheap ? E->capheap * 2 : 64;
        hent *p = realloc(E->heap, cap * sizeof *p);
        if (!p)
            return ASA_ENOMEM;
        E->heap = p;
        E->capheap = cap;
    }
    hent x = {rank, pos, id};
    size_t i = E->nheap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!hless(&x, &E->heap[up]))
            break;
        E->heap[i] = E->heap[up];
        i = up;
    }
    E->heap[i] = x;
    return ASA_OK;
}

static hent heap_pop(enc *E) {
    hent top = E->heap[0], x = E->heap[--E->nheap];
    size_t i = 0, n = E->nheap;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l >= n)
            break;
        m = (l + 1 < n && hless(&E->heap[l + 1], &E->heap[l])) ? l + 1 : l;
        if (!hless(&E->heap[m], &x))
            break;
        E->heap[i] = E->heap[m];
        i = m;
    }
    if (n)
        E->heap[i] = x;
    return top;
}

/* The library's Word::merge_all on symbols [lo, hi): a priority queue of
 * candidate merges keyed by (rank, position); stale entries are skipped when
 * popped.  O(n log n). */
static asa_err merge_range(enc *E, size_t lo, size_t hi) {
    const tok__mmap *mm = &E->t->merges;
    sym *S = E->syms;
    E->nheap = 0;
    for (size_t i = lo; i + 1 < hi; i++) {
        const tok__mmap_ent *m = tok__mmap_get(mm, S[i].c, S[i + 1].c);
        if (m && heap_push(E, m->rank, (uint32_t)i, m->id))
            return ASA_ENOMEM;
    }
    while (E->nheap) {
        hent top = heap_pop(E);
        sym *cur = &S[top.pos];
        if (cur->len == 0 || cur->next == -1)
            continue;
        int32_t nx = cur->next;
        sym right = S[nx];
        const tok__mmap_ent *m = tok__mmap_get(mm, cur->c, right.c);
        if (!m || m->id != top.id)
            continue;
        cur->c = top.id;
        cur->len += right.len;
        cur->next = right.next;
        S[nx].len = 0;
        if (right.next > -1 && (size_t)right.next < E->nsyms)
            S[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            const tok__mmap_ent *pm = tok__mmap_get(mm, S[cur->prev].c, cur->c);
            if (pm && heap_push(E, pm->rank, (uint32_t)cur->prev, pm->id))
                return ASA_ENOMEM;
        }
        if (cur->next >= 0 && (size_t)cur->next < E->nsyms) {
            const tok__mmap_ent *nm = tok__mmap_get(mm, cur->c, S[cur->next].c);
            if (nm && heap_push(E, nm->rank, top.pos, nm->id))
                return ASA_ENOMEM;
        }
    }
    return ASA_OK;
}

/* A symbol whose id is in no merge pair is a wall: no merge can involve it,
 * so the symbols on either side merge independently and in the same order
 * as in one queue over the whole word.  Merging the stretches between walls
 * separately gives the library's result with small queues (a SentencePiece
 * text without a pre-tokenizer is one word, cut here at <0x0A> etc.). */
static asa_err merge_all(enc *E) {
    const uint8_t *in_merge = E->t->in_merge;
    size_t lo = 0;
    for (size_t i = 0; i <= E->nsyms; i++) {
        if (i < E->nsyms && in_merge[E->syms[i].c])
            continue;
        if (i > lo + 1) {
            asa_err e = merge_range(E, lo, i);
            if (e)
                return e;
        }
        lo = i + 1;
    }
    return ASA_OK;
}

/* The library's BPE::merge_word: one symbol per character (with the
 * continuing-subword prefix / end-of-word suffix), byte fallback, unknown
 * characters (fused or not), then merge_all. */
static asa_err merge_word(enc *E, const char *w, size_t n) {
    const tok_tokenizer *t = E->t;
    int32_t unk = -1;
    uint32_t unk_len = 0;
    E->nsyms = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = tok__u8len((unsigned char)w[i]);
        bool is_first = i == 0, is_last = i + cl >= n;
        const char *ks = w + i;
        size_t kn = cl;
        if ((!is_first && t->cont_prefix) || (is_last && t->eow_suffix)) {
            E->key.len = 0;
            if ((!is_first && t->cont_prefix &&
                 tok__str_append(&E->key, t->cont_prefix, t->cont_prefix_len)) ||
                tok__str_append(&E->key, w + i, cl) ||
                (is_last && t->eow_suffix &&
                 tok__str_append(&E->key, t->eow_suffix, t->eow_suffix_len)))
                return ASA_ENOMEM;
            ks = E->key.data;
            kn = E->key.len;
        }
        int32_t id;
        unsigned char c0 = (unsigned char)w[i];
        if (ks == w + i && cl <= 2)
            id = t->char_id[cl == 1 ? c0 : ((uint32_t)(c0 & 0x1F) << 6) | (w[i + 1] & 0x3F)];
        else
            id = tok__smap_get(&t->vocab, ks, kn);
        if (id >= 0) {
            if (unk >= 0) {
                if (sym_add(E, unk, unk_len))
                    return ASA_ENOMEM;
                unk = -1;
            }
            if (sym_add(E, id, (uint32_t)cl))
                return ASA_ENOMEM;
        } else {
            bool done = false;
            if (t->byte_fallback) {
                bool all = true;
                for (size_t k = 0; k < kn; k++)
                    all = all && t->byte_id[(unsigned char)ks[k]] >= 0;
                if (all) {
                    for (size_t k = 0; k < kn; k++)
                        if (sym_add(E, t->byte_id[(unsigned char)ks[k]], 1))
                            return ASA_ENOMEM;
                    done = true; /* a pending unknown stays pending, as in the library */
                }
            }
            if (!done && t->unk_id >= 0) {
                if (unk >= 0 && t->fuse_unk)
                    unk_len += (uint32_t)cl;
                else {
                    if (unk >= 0 && sym_add(E, unk, unk_len))
                        return ASA_ENOMEM;
                    unk = t->unk_id;
                    unk_len = (uint32_t)cl;
                }
            }
            /* no unk token: the library drops the character */
        }
        i += cl;
    }
    if (unk >= 0 && sym_add(E, unk, unk_len))
        return ASA_ENOMEM;
    return merge_all(E);
}

/* Tokenizes one piece, appending its ids to out. */
static asa_err bpe_word(enc *E, const char *w, size_t n, tok_ids *out) {
    const tok_tokenizer *t = E->t;
    if (!n)
        return ASA_OK;
    if (t->ignore_merges) {
        int32_t id = tok__smap_get(&t->vocab, w, n);
        if (id >= 0)
            return tok__ids_push(out, id);
    }
    bool cacheable = n < TOK_CACHE_MAX_WORD;
    uint64_t h = 0;
    if (cacheable) {
        asa_err e;
        h = tok__hash(w, n);
        if (cache_get(t, h, w, n, out, &e))
            return e;
    }
    asa_err e = merge_word(E, w, n);
    if (e)
        return e;
    E->word.len = 0;
    for (size_t i = 0; i < E->nsyms; i++)
        if (E->syms[i].len && (e = tok__ids_push(&E->word, E->syms[i].c)))
            return e;
    if (cacheable)
        cache_put(t, h, w, n, E->word.ids, E->word.len);
    return tok__ids_append(out, E->word.ids, E->word.len);
}

/* ---- post-processors ------------------------------------------------------------- */

static asa_err post_run(const tok__post *p, tok_ids *ids) {
    switch (p->kind) {
    case TOK_POST_SEQ:
        for (size_t i = 0; i < p->nsubs; i++) {
            asa_err e = post_run(p->subs[i], ids);
            if (e)
                return e;
        }
        return ASA_OK;
    case TOK_POST_NOOP:
        return ASA_OK;
    case TOK_POST_TEMPLATE: {
        /* in place: make room in front, then add the tail */
        size_t n = ids->len;
        if (tok__ids_append(ids, p->before, p->nbefore))
            return ASA_ENOMEM;
        memmove(ids->ids + p->nbefore, ids->ids, n * sizeof(int32_t));
        memcpy(ids->ids, p->before, p->nbefore * sizeof(int32_t));
        return tok__ids_append(ids, p->after, p->nafter);
    }
    }
    return ASA_OK;
}

/* ---- entry point ----------------------------------------------------------------- */

/* Each thread keeps its encode scratch (buffers, regex match data) between
 * calls so that short texts do not pay for allocations; freed at thread exit
 * or when it has grown past 4 MB. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static bool scratch_ok;

static void enc_free(enc *E);
static void scratch_destroy(void *p) {
    if (p) {
        enc_free(p);
        free(p);
    }
}
static void scratch_init(void) { scratch_ok = pthread_key_create(&scratch_key, scratch_destroy) == 0; }

static size_t enc_bytes(const enc *E) {
    return E->buf[0].cap + E->buf[1].cap + (E->pl[0].cap + E->pl[1].cap) * sizeof(piece) +
           E->capsyms * sizeof(sym) + E->capheap * sizeof(hent) + E->caprg * sizeof *E->rg +
           E->word.cap * sizeof(int32_t) + E->key.cap + E->nb.cap +
           E->ntmp.cap;
}

static void enc_free(enc *E) {
    for (int i = 0; i < 2; i++) {
        tok_str_free(&E->buf[i]);
        free(E->pl[i].p);
    }
    pcre2_match_data_free(E->md);
    E->md = NULL;
    free(E->syms);
    free(E->heap);
    free(E->rg);
    tok_ids_free(&E->word);
    tok_str_free(&E->key);
    tok_str_free(&E->nb);
    tok_str_free(&E->ntmp);
}

static asa_err encode(enc *E, const char *text, size_t len, bool add_special, tok_ids *out) {
    const tok_tokenizer *t = E->t;
    asa_err e;
    plist *pl;
    tok_str *ob;
    if (!E->md && !(E->md = pcre2_match_data_create(1, NULL)))
        return ASA_ENOMEM;

    /* 1. added tokens written in the raw text */
    stage_begin(E, &pl, &ob);
    if (t->any_raw)
        e = split_added(E, text, len, true, (int32_t **)t->first_raw, t->nfirst_raw, pl, ob);
    else
        e = emit_text(pl, ob, text, len, true);
    if (e)
        return e;
    stage_end(E);

    /* 2. normalizer, then added tokens in the normalized text */
    if (t->norm || t->any_norm) {
        stage_begin(E, &pl, &ob);
        const plist *in = &E->pl[E->cur];
        tok_str *ib = &E->buf[E->cur];
        tok_str *nb = &E->nb, *tmp = &E->ntmp;
        for (size_t i = 0; i < in->n; i++) {
            piece pc = in->p[i];
            if (pc.id >= 0) {
                if ((e = pl_push(pl, 0, 0, pc.id, false)))
                    break;
                continue;
            }
            nb->len = 0;
            if ((e = tok__str_append(nb, ib->data + pc.off, pc.len)))
                break;
            if (t->norm && (e = norm_run(t->norm, E->md, nb, tmp)))
                break;
            if (t->any_norm)
                e = split_added(E, nb->data, nb->len, pc.orig0, (int32_t **)t->first_norm,
                                t->nfirst_norm, pl, ob);
            else
                e = emit_text(pl, ob, nb->data, nb->len, pc.orig0);
            if (e)
                break;
        }
        if (e)
            return e;
        stage_end(E);
    }

    /* 3. pre-tokenizer */
    if (t->pre && (e = pre_run(E, t->pre)))
        return e;

    /* 4. the model on every piece */
    out->len = 0;
    const plist *in = &E->pl[E->cur];
    const char *ib = E->buf[E->cur].data;
    for (size_t i = 0; i < in->n; i++) {
        piece pc = in->p[i];
        e = pc.id >= 0 ? tok__ids_push(out, pc.id) : bpe_word(E, ib + pc.off, pc.len, out);
        if (e)
            return e;
    }

    /* 5. post-processor */
    if (add_special && t->post && (e = post_run(t->post, out)))
        return e;
    return ASA_OK;
}

asa_err tok_encode(const tok_tokenizer *t, const char *text, size_t len, bool add_special,
                   tok_ids *out, asa_errbuf *eb) {
    if (!t || !out || (!text && len))
        return asa_errf(eb, ASA_EINVAL, "tok_encode: NULL argument");
    if (len > UINT32_MAX / 4)
        return asa_errf(eb, ASA_ETOOBIG, "tok_encode: text of %zu bytes is too long", len);
    size_t bad = tok_utf8_valid_prefix(text, len);
    if (bad != len)
        return asa_errf(eb, ASA_EUTF8, "invalid UTF-8 at byte %zu of %zu", bad, len);
    pthread_once(&scratch_once, scratch_init);
    enc local = {0};
    enc *E = scratch_ok ? pthread_getspecific(scratch_key) : NULL;
    if (!E && scratch_ok && (E = calloc(1, sizeof *E)) && pthread_setspecific(scratch_key, E)) {
        free(E);
        E = NULL;
    }
    bool own = E == NULL; /* no per-thread scratch: use a local one */
    if (own)
        E = &local;
    E->t = t;
    E->cur = 0;
    asa_err e = encode(E, text ? text : "", len, add_special, out);
    if (own || e || enc_bytes(E) > ((size_t)4 << 20)) {
        enc_free(E); /* drops the buffers; the per-thread struct stays */
        memset(E, 0, sizeof *E);
    }
    if (e)
        asa_errf(eb, e, "tok_encode: %s", asa_strerror(e));
    return e;
}
