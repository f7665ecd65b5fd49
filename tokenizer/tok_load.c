/* tokenizer/tok_load.c - tokenizer.json -> tok_tokenizer.
 *
 * Each component is checked against the keys this module understands; an
 * unknown type, an unknown key or a value that changes behaviour in a way we
 * do not implement is ASA_EUNSUPPORTED with its JSON path in the message. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"
#ifdef TOK_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

typedef struct ld {
    tok_tokenizer *t;
    asa_errbuf *eb;
} ld;

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char DIGITS_PATTERN[] =
    "[\\p{N}\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}"
    "\\x{11DE0}-\\x{11DE9}\\x{11F50}-\\x{11F59}\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}"
    "\\x{16FF4}-\\x{16FF6}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"
    "\\x{1E5F1}-\\x{1E5FA}]";

static void *aalloc(ld *L, size_t n) {
    void *p = asa_arena_alloc(L->t->arena, n ? n : 1);
    if (p)
        memset(p, 0, n ? n : 1);
    return p;
}

static const char *adup(ld *L, const char *s, size_t n) {
    return asa_arena_strndup(L->t->arena, s, n);
}

#define UNSUP(L, ...) asa_errf((L)->eb, ASA_EUNSUPPORTED, __VA_ARGS__)
#define BAD(L, ...) asa_errf((L)->eb, ASA_EFORMAT, __VA_ARGS__)

/* Fails on any key of obj that is not in allowed (NULL-terminated). */
static asa_err check_keys(ld *L, json_t *obj, const char *where,
                          const char *const *allowed) {
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, k) == 0)
                ok = true;
        if (!ok)
            return UNSUP(L, "%s: unsupported option \"%s\"", where, k);
    }
    return ASA_OK;
}

/* Optional boolean: absent or null gives dflt. */
static asa_err get_bool(ld *L, json_t *obj, const char *key, bool dflt, bool *out,
                        const char *where) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return ASA_OK;
    }
    if (!json_is_boolean(v))
        return BAD(L, "%s.%s: expected a boolean", where, key);
    *out = json_is_true(v);
    return ASA_OK;
}

/* Optional string: absent or null gives NULL. */
static asa_err get_str(ld *L, json_t *obj, const char *key, const char **out,
                       size_t *len, const char *where) {
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (len)
        *len = 0;
    if (!v || json_is_null(v))
        return ASA_OK;
    if (!json_is_string(v))
        return BAD(L, "%s.%s: expected a string", where, key);
    size_t n = json_string_length(v);
    *out = adup(L, json_string_value(v), n);
    if (!*out)
        return ASA_ENOMEM;
    if (len)
        *len = n;
    return ASA_OK;
}

static const char *type_of(json_t *obj) {
    json_t *v = json_object_get(obj, "type");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* pattern: {"String": "..."} or {"Regex": "..."} */
static asa_err get_pattern(ld *L, json_t *obj, tok__regex *re, const char *where) {
    json_t *p = json_object_get(obj, "pattern");
    if (!json_is_object(p) || json_object_size(p) != 1)
        return BAD(L, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", where);
    json_t *s = json_object_get(p, "String"), *r = json_object_get(p, "Regex");
    json_t *v = s ? s : r;
    if (!json_is_string(v))
        return BAD(L, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", where);
    const char *pat = adup(L, json_string_value(v), json_string_length(v));
    if (!pat)
        return ASA_ENOMEM;
    if (s && strlen(pat) != json_string_length(v))
        return UNSUP(L, "%s.pattern: NUL inside a String pattern", where);
    return tok__regex_compile(re, pat, s != NULL, L->eb, where);
}

/* One Unicode character from a JSON string (Metaspace replacement, Strip content). */
static asa_err get_char(ld *L, json_t *obj, const char *key, uint32_t dflt, uint32_t *cp,
                        const char *where) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *cp = dflt;
        return ASA_OK;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), k;
    if (!s || n == 0 || tok_utf8_valid_prefix(s, n) != n)
        return BAD(L, "%s.%s: expected one character", where, key);
    *cp = tok__u8dec(s, &k);
    if (k != n)
        return BAD(L, "%s.%s: expected one character", where, key);
    return ASA_OK;
}

static asa_err get_prepend_scheme(ld *L, json_t *obj, tok__prepend *out,
                                  const char *where) {
    /* add_prefix_space (old files) and prepend_scheme (new), as the library
     * reconciles them: default "always"; add_prefix_space false means "never" */
    *out = TOK_PREPEND_ALWAYS;
    json_t *ps = json_object_get(obj, "prepend_scheme");
    if (ps && !json_is_null(ps)) {
        const char *s = json_string_value(ps);
        if (!s)
            return BAD(L, "%s.prepend_scheme: expected a string", where);
        if (!strcmp(s, "always"))
            *out = TOK_PREPEND_ALWAYS;
        else if (!strcmp(s, "first"))
            *out = TOK_PREPEND_FIRST;
        else if (!strcmp(s, "never"))
            *out = TOK_PREPEND_NEVER;
        else
            return UNSUP(L, "%s.prepend_scheme \"%s\"", where, s);
    }
    json_t *aps = json_object_get(obj, "add_prefix_space");
    if (json_is_false(aps)) {
        if (*out != TOK_PREPEND_NEVER && ps && !json_is_null(ps))
            return BAD(L, "%s: add_prefix_space does not match prepend_scheme", where);
        *out = TOK_PREPEND_NEVER;
    }
    return ASA_OK;
}

/* ---- normalizers ---------------------------------------------------------- */

static asa_err load_norm(ld *L, json_t *j, tok__norm **out, const char *where) {
    char path[256];
    const char *ty = type_of(j);
    if (!json_is_object(j) || !ty)
        return BAD(L, "%s: expected an object with a \"type\"", where);
    tok__norm *n = aalloc(L, sizeof *n);
    if (!n)
        return ASA_ENOMEM;
    *out = n;
    asa_err e;
    if (!strcmp(ty, "Sequence")) {
        static const char *const keys[] = {"type", "normalizers", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        json_t *arr = json_object_get(j, "normalizers");
        if (!json_is_array(arr))
            return BAD(L, "%s.normalizers: expected an array", where);
        n->kind = TOK_NORM_SEQ;
        n->nsubs = json_array_size(arr);
        n->subs = aalloc(L, n->nsubs * sizeof *n->subs);
        if (!n->subs)
            return ASA_ENOMEM;
        for (size_t i = 0; i < n->nsubs; i++) {
            snprintf(path, sizeof path, "%s.normalizers[%zu]", where, i);
            if ((e = load_norm(L, json_array_get(arr, i), &n->subs[i], path)))
                return e;
        }
        return ASA_OK;
    }
    if (!strcmp(ty, "Prepend")) {
        static const char *const keys[] = {"type", "prepend", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        n->kind = TOK_NORM_PREPEND;
        if ((e = get_str(L, j, "prepend", &n->str, &n->str_len, where)))
            return e;
        if (!n->str)
            return BAD(L, "%s.prepend: missing", where);
        return ASA_OK;
    }
    if (!strcmp(ty, "Replace")) {
        static const char *const keys[] = {"type", "pattern", "content", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        n->kind = TOK_NORM_REPLACE;
        if ((e = get_str(L, j, "content", &n->str, &n->str_len, where)))
            return e;
        if (!n->str)
            return BAD(L, "%s.content: missing", where);
        return get_pattern(L, j, &n->re, where);
    }
    if (!strcmp(ty, "NFC") || !strcmp(ty, "NFD") || !strcmp(ty, "NFKC") || !strcmp(ty, "NFKD")) {
#ifdef TOK_HAVE_UTF8PROC
        static const char *const keys[] = {"type", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        n->kind = TOK_NORM_UNICODE;
        n->uflags = UTF8PROC_STABLE | (ty[2] == 'K' ? UTF8PROC_COMPAT : 0) |
                    (ty[strlen(ty) - 1] == 'C' ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE);
        return ASA_OK;
#else
        return UNSUP(L, "%s: normalizer type \"%s\" (this build has no utf8proc: install "
                        "libutf8proc-dev and rebuild)", where, ty);
#endif
    }
    return UNSUP(L, "%s: normalizer type \"%s\"", where, ty);
}

/* ---- pre-tokenizers --------------------------------------------------------- */

static asa_err load_pre(ld *L, json_t *j, tok__pre **out, const char *where) {
    char path[256];
    const char *ty = type_of(j);
    if (!json_is_object(j) || !ty)
        return BAD(L, "%s: expected an object with a \"type\"", where);
    tok__pre *p = aalloc(L, sizeof *p);
    if (!p)
        return ASA_ENOMEM;
    *out = p;
    asa_err e;
    if (!strcmp(ty, "Sequence")) {
        static const char *const keys[] = {"type", "pretokenizers", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        json_t *arr = json_object_get(j, "pretokenizers");
        if (!json_is_array(arr))
            return BAD(L, "%s.pretokenizers: expected an array", where);
        p->kind = TOK_PRE_SEQ;
        p->nsubs = json_array_size(arr);
        p->subs = aalloc(L, p->nsubs * sizeof *p->subs);
        if (!p->subs)
            return ASA_ENOMEM;
        for (size_t i = 0; i < p->nsubs; i++) {
            snprintf(path, sizeof path, "%s.pretokenizers[%zu]", where, i);
            if ((e = load_pre(L, json_array_get(arr, i), &p->subs[i], path)))
                return e;
        }
        return ASA_OK;
    }
    if (!strcmp(ty, "ByteLevel")) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets",
                                           "use_regex", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        p->kind = TOK_PRE_BYTELEVEL;
        if ((e = get_bool(L, j, "add_prefix_space", true, &p->add_prefix_space, where)) ||
            (e = get_bool(L, j, "use_regex", true, &p->use_regex, where)))
            return e;
        if (p->use_regex)
            return tok__regex_compile(&p->re, GPT2_PATTERN, false, L->eb, where);
        return ASA_OK;
    }
    if (!strcmp(ty, "Split")) {
        static const char *const keys[] = {"type", "pattern", "behavior", "invert", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        p->kind = TOK_PRE_SPLIT;
        if ((e = get_bool(L, j, "invert", false, &p->invert, where)))
            return e;
        const char *b = json_string_value(json_object_get(j, "behavior"));
        if (!b)
            return BAD(L, "%s.behavior: expected a string", where);
        if (!strcmp(b, "Removed"))
            p->behavior = TOK_SPLIT_REMOVED;
        else if (!strcmp(b, "Isolated"))
            p->behavior = TOK_SPLIT_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious"))
            p->behavior = TOK_SPLIT_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext"))
            p->behavior = TOK_SPLIT_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous"))
            p->behavior = TOK_SPLIT_CONTIGUOUS;
        else
            return UNSUP(L, "%s.behavior \"%s\"", where, b);
        return get_pattern(L, j, &p->re, where);
    }
    if (!strcmp(ty, "Metaspace")) {
        static const char *const keys[] = {"type", "replacement", "add_prefix_space",
                                           "prepend_scheme", "split", "str_rep", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        p->kind = TOK_PRE_METASPACE;
        uint32_t cp;
        if ((e = get_char(L, j, "replacement", 0x2581, &cp, where)) ||
            (e = get_prepend_scheme(L, j, &p->prepend, where)) ||
            (e = get_bool(L, j, "split", true, &p->split, where)))
            return e;
        p->repl_len = tok__u8enc(cp, p->repl);
        return ASA_OK;
    }
    if (!strcmp(ty, "Digits")) {
        static const char *const keys[] = {"type", "individual_digits", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        bool ind = false;
        if ((e = get_bool(L, j, "individual_digits", false, &ind, where)))
            return e;
        p->kind = TOK_PRE_DIGITS;
        p->behavior = ind ? TOK_SPLIT_ISOLATED : TOK_SPLIT_CONTIGUOUS;
        /* Rust's char::is_numeric: the N categories of a newer Unicode than
         * Debian 12's PCRE2 (10.42, Unicode 14) knows; the numbers added in
         * Unicode 15-16 are listed (checked against the library over all
         * code points) */
        return tok__regex_compile(&p->re, DIGITS_PATTERN, false, L->eb, where);
    }
    return UNSUP(L, "%s: pre-tokenizer type \"%s\"", where, ty);
}

/* ---- decoders ----------------------------------------------------------------- */

static asa_err load_dec(ld *L, json_t *j, tok__dec **out, const char *where) {
    char path[256];
    const char *ty = type_of(j);
    if (!json_is_object(j) || !ty)
        return BAD(L, "%s: expected an object with a \"type\"", where);
    tok__dec *d = aalloc(L, sizeof *d);
    if (!d)
        return ASA_ENOMEM;
    *out = d;
    asa_err e;
    if (!strcmp(ty, "Sequence")) {
        static const char *const keys[] = {"type", "decoders", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        json_t *arr = json_object_get(j, "decoders");
        if (!json_is_array(arr))
            return BAD(L, "%s.decoders: expected an array", where);
        d->kind = TOK_DEC_SEQ;
        d->nsubs = json_array_size(arr);
        d->subs = aalloc(L, d->nsubs * sizeof *d->subs);
        if (!d->subs)
            return ASA_ENOMEM;
        for (size_t i = 0; i < d->nsubs; i++) {
            snprintf(path, sizeof path, "%s.decoders[%zu]", where, i);
            if ((e = load_dec(L, json_array_get(arr, i), &d->subs[i], path)))
                return e;
        }
        return ASA_OK;
    }
    if (!strcmp(ty, "ByteLevel")) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets",
                                           "use_regex", NULL};
        d->kind = TOK_DEC_BYTELEVEL;
        return check_keys(L, j, where, keys);
    }
    if (!strcmp(ty, "ByteFallback")) {
        static const char *const keys[] = {"type", NULL};
        d->kind = TOK_DEC_BYTEFALLBACK;
        return check_keys(L, j, where, keys);
    }
    if (!strcmp(ty, "Fuse")) {
        static const char *const keys[] = {"type", NULL};
        d->kind = TOK_DEC_FUSE;
        return check_keys(L, j, where, keys);
    }
    if (!strcmp(ty, "Replace")) {
        static const char *const keys[] = {"type", "pattern", "content", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        d->kind = TOK_DEC_REPLACE;
        if ((e = get_str(L, j, "content", &d->str, &d->str_len, where)))
            return e;
        if (!d->str)
            return BAD(L, "%s.content: missing", where);
        return get_pattern(L, j, &d->re, where);
    }
    if (!strcmp(ty, "Strip")) {
        static const char *const keys[] = {"type", "content", "start", "stop", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        d->kind = TOK_DEC_STRIP;
        json_t *a = json_object_get(j, "start"), *b = json_object_get(j, "stop");
        if (!json_is_integer(a) || !json_is_integer(b) || json_integer_value(a) < 0 ||
            json_integer_value(b) < 0)
            return BAD(L, "%s: start/stop must be non-negative integers", where);
        d->start = (size_t)json_integer_value(a);
        d->stop = (size_t)json_integer_value(b);
        return get_char(L, j, "content", ' ', &d->content, where);
    }
    if (!strcmp(ty, "Metaspace")) {
        static const char *const keys[] = {"type", "replacement", "add_prefix_space",
                                           "prepend_scheme", "split", "str_rep", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        d->kind = TOK_DEC_METASPACE;
        if ((e = get_char(L, j, "replacement", 0x2581, &d->repl, where)))
            return e;
        return get_prepend_scheme(L, j, &d->prepend, where);
    }
    return UNSUP(L, "%s: decoder type \"%s\"", where, ty);
}

/* ---- post-processors ------------------------------------------------------------ */

/* [token, id] pair of Bert/Roberta processors */
static asa_err get_pair_id(ld *L, json_t *j, const char *key, int32_t *id, const char *where) {
    json_t *v = json_object_get(j, key);
    if (!json_is_array(v) || json_array_size(v) != 2 ||
        !json_is_integer(json_array_get(v, 1)))
        return BAD(L, "%s.%s: expected [token, id]", where, key);
    *id = (int32_t)json_integer_value(json_array_get(v, 1));
    return ASA_OK;
}

static asa_err load_post(ld *L, json_t *j, tok__post **out, const char *where) {
    char path[256];
    const char *ty = type_of(j);
    if (!json_is_object(j) || !ty)
        return BAD(L, "%s: expected an object with a \"type\"", where);
    tok__post *p = aalloc(L, sizeof *p);
    if (!p)
        return ASA_ENOMEM;
    *out = p;
    asa_err e;
    if (!strcmp(ty, "Sequence")) {
        static const char *const keys[] = {"type", "processors", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        json_t *arr = json_object_get(j, "processors");
        if (!json_is_array(arr))
            return BAD(L, "%s.processors: expected an array", where);
        p->kind = TOK_POST_SEQ;
        p->nsubs = json_array_size(arr);
        p->subs = aalloc(L, p->nsubs * sizeof *p->subs);
        if (!p->subs)
            return ASA_ENOMEM;
        for (size_t i = 0; i < p->nsubs; i++) {
            snprintf(path, sizeof path, "%s.processors[%zu]", where, i);
            if ((e = load_post(L, json_array_get(arr, i), &p->subs[i], path)))
                return e;
        }
        return ASA_OK;
    }
    if (!strcmp(ty, "ByteLevel")) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets",
                                           "use_regex", NULL};
        p->kind = TOK_POST_NOOP;
        return check_keys(L, j, where, keys);
    }
    if (!strcmp(ty, "BertProcessing") || !strcmp(ty, "RobertaProcessing")) {
        static const char *const keys[] = {"type", "sep", "cls", "trim_offsets",
                                           "add_prefix_space", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        p->kind = TOK_POST_TEMPLATE;
        p->before = aalloc(L, sizeof(int32_t));
        p->after = aalloc(L, sizeof(int32_t));
        if (!p->before || !p->after)
            return ASA_ENOMEM;
        p->nbefore = p->nafter = 1;
        if ((e = get_pair_id(L, j, "cls", p->before, where)) ||
            (e = get_pair_id(L, j, "sep", p->after, where)))
            return e;
        return ASA_OK;
    }
    if (!strcmp(ty, "TemplateProcessing")) {
        static const char *const keys[] = {"type", "single", "pair", "special_tokens", NULL};
        if ((e = check_keys(L, j, where, keys)))
            return e;
        p->kind = TOK_POST_TEMPLATE;
        json_t *single = json_object_get(j, "single");
        json_t *specials = json_object_get(j, "special_tokens");
        if (!json_is_array(single) || !json_is_object(specials))
            return BAD(L, "%s: expected \"single\" (array) and \"special_tokens\" (object)",
                       where);
        /* at most (sum of all special ids) entries on either side */
        size_t cap = 0;
        const char *k;
        json_t *v;
        json_object_foreach(specials, k, v) cap += json_array_size(json_object_get(v, "ids"));
        cap *= json_array_size(single);
        p->before = aalloc(L, (cap + 1) * sizeof(int32_t));
        p->after = aalloc(L, (cap + 1) * sizeof(int32_t));
        if (!p->before || !p->after)
            return ASA_ENOMEM;
        bool seen_a = false;
        for (size_t i = 0; i < json_array_size(single); i++) {
            json_t *it = json_array_get(single, i);
            json_t *sp = json_object_get(it, "SpecialToken");
            json_t *sq = json_object_get(it, "Sequence");
            if (sq) {
                const char *id = json_string_value(json_object_get(sq, "id"));
                if (!id || strcmp(id, "A") || seen_a)
                    return UNSUP(L, "%s.single[%zu]: only one sequence \"A\" is supported",
                                 where, i);
                seen_a = true;
                continue;
            }
            const char *name = json_string_value(json_object_get(sp, "id"));
            if (!name)
                return BAD(L, "%s.single[%zu]: expected SpecialToken or Sequence", where, i);
            json_t *st = json_object_get(specials, name);
            json_t *ids = json_object_get(st, "ids");
            if (!json_is_array(ids))
                return BAD(L, "%s.special_tokens: no ids for \"%s\"", where, name);
            for (size_t m = 0; m < json_array_size(ids); m++) {
                json_t *x = json_array_get(ids, m);
                if (!json_is_integer(x))
                    return BAD(L, "%s.special_tokens[\"%s\"].ids: expected integers",
                               where, name);
                if (seen_a)
                    p->after[p->nafter++] = (int32_t)json_integer_value(x);
                else
                    p->before[p->nbefore++] = (int32_t)json_integer_value(x);
            }
        }
        if (!seen_a)
            return UNSUP(L, "%s.single: no sequence \"A\"", where);
        return ASA_OK;
    }
    return UNSUP(L, "%s: post-processor type \"%s\"", where, ty);
}

/* ---- the BPE model -------------------------------------------------------------- */

static asa_err set_id(ld *L, int32_t id, const char *s, size_t n) {
    tok_tokenizer *t = L->t;
    if (id < 0 || (size_t)id >= t->n_ids)
        return BAD(L, "id %d out of range", (int)id);
    t->id_str[id] = s;
    t->id_len[id] = (uint32_t)n;
    return ASA_OK;
}

static asa_err mmap_put(tok__mmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = tok__mmap_slot(key, m->mask);
    for (;;) {
        tok__mmap_ent *e = &m->ents[i];
        if (e->key == UINT64_MAX || e->key == key) {
            /* a repeated pair: the later line wins, as in the library */
            e->key = key;
            e->rank = rank;
            e->id = id;
            return ASA_OK;
        }
        i = (i + 1) & m->mask;
    }
}

static asa_err load_model(ld *L, json_t *m, json_t *added) {
    tok_tokenizer *t = L->t;
    const char *where = "model";
    asa_err e;
    const char *ty = type_of(m);
    if (!json_is_object(m))
        return BAD(L, "model: missing");
    if (!ty || strcmp(ty, "BPE"))
        return UNSUP(L, "model.type \"%s\" (only \"BPE\" is supported)", ty ? ty : "(none)");
    static const char *const keys[] = {"type", "dropout", "unk_token",
                                       "continuing_subword_prefix", "end_of_word_suffix",
                                       "fuse_unk", "byte_fallback", "ignore_merges",
                                       "vocab", "merges", NULL};
    if ((e = check_keys(L, m, where, keys)))
        return e;
    json_t *dropout = json_object_get(m, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return UNSUP(L, "model.dropout (BPE dropout is random; only null or 0)");
    if ((e = get_bool(L, m, "fuse_unk", false, &t->fuse_unk, where)) ||
        (e = get_bool(L, m, "byte_fallback", false, &t->byte_fallback, where)) ||
        (e = get_bool(L, m, "ignore_merges", false, &t->ignore_merges, where)) ||
        (e = get_str(L, m, "continuing_subword_prefix", &t->cont_prefix,
                     &t->cont_prefix_len, where)) ||
        (e = get_str(L, m, "end_of_word_suffix", &t->eow_suffix, &t->eow_suffix_len,
                     where)))
        return e;
    if (t->cont_prefix && !t->cont_prefix_len)
        t->cont_prefix = NULL;
    if (t->eow_suffix && !t->eow_suffix_len)
        t->eow_suffix = NULL;

    json_t *vocab = json_object_get(m, "vocab");
    json_t *merges = json_object_get(m, "merges");
    if (!json_is_object(vocab) || !json_is_array(merges))
        return BAD(L, "model: expected \"vocab\" (object) and \"merges\" (array)");

    /* the id space covers the vocabulary and the added tokens */
    int64_t max_id = -1;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > INT32_MAX - 1)
            return BAD(L, "model.vocab[\"%s\"]: expected a non-negative integer id", k);
        if (json_integer_value(v) > max_id)
            max_id = json_integer_value(v);
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *id = json_object_get(json_array_get(added, i), "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) > INT32_MAX - 1)
            return BAD(L, "added_tokens[%zu].id: expected a non-negative integer", i);
        if (json_integer_value(id) > max_id)
            max_id = json_integer_value(id);
    }
    /* ids the library may assign to added tokens that are not in the file */
    size_t n_assign = json_object_size(vocab) + json_array_size(added);
    t->n_ids = (size_t)(max_id + 1) > n_assign ? (size_t)(max_id + 1) : n_assign;
    t->id_str = aalloc(L, t->n_ids * sizeof *t->id_str);
    t->id_len = aalloc(L, t->n_ids * sizeof *t->id_len);
    t->id_added = aalloc(L, t->n_ids * sizeof *t->id_added);
    if (!t->id_str || !t->id_len || !t->id_added)
        return ASA_ENOMEM;
    for (size_t i = 0; i < t->n_ids; i++)
        t->id_added[i] = -1;
    if ((e = tok__smap_init(&t->vocab, json_object_size(vocab))))
        return e;
    json_object_foreach(vocab, k, v) {
        size_t n = strlen(k); /* jansson keys cannot hold NUL */
        const char *s = adup(L, k, n);
        if (!s)
            return ASA_ENOMEM;
        int32_t id = (int32_t)json_integer_value(v);
        if ((e = tok__smap_put(&t->vocab, s, n, id)) || (e = set_id(L, id, s, n)))
            return e;
    }

    /* unk_token: the library fails when it needs a missing unk token; we
     * refuse the file instead of guessing */
    const char *unk;
    size_t unk_len;
    if ((e = get_str(L, m, "unk_token", &unk, &unk_len, where)))
        return e;
    t->unk_id = -1;
    if (unk) {
        t->unk_id = tok__smap_get(&t->vocab, unk, unk_len);
        if (t->unk_id < 0)
            return UNSUP(L, "model.unk_token \"%s\" is not in the vocabulary", unk);
    }
    t->char_id = aalloc(L, 0x800 * sizeof *t->char_id);
    if (!t->char_id)
        return ASA_ENOMEM;
    for (uint32_t cp = 0; cp < 0x800; cp++) {
        char u[4];
        size_t n = tok__u8enc(cp, u);
        t->char_id[cp] = tok__smap_get(&t->vocab, u, n);
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = tok__smap_get(&t->vocab, name, 6);
    }

    /* merges: "a b" strings (old files) or ["a", "b"] pairs (new files) */
    size_t nm = json_array_size(merges);
    size_t cap = 16;
    while (cap < nm * 2 + 2)
        cap *= 2;
    t->merges.ents = malloc(cap * sizeof *t->merges.ents);
    t->in_merge = aalloc(L, t->n_ids);
    if (!t->merges.ents || !t->in_merge)
        return ASA_ENOMEM;
    t->merges.mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        t->merges.ents[i].key = UINT64_MAX;
    tok_str buf = {0};
    for (size_t i = 0; i < nm; i++) {
        json_t *x = json_array_get(merges, i);
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(x)) {
            a = json_string_value(x);
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                tok_str_free(&buf);
                return BAD(L, "model.merges[%zu]: \"%s\" is not two tokens", i, a);
            }
            al = (size_t)(sp - a);
            b = sp + 1;
            bl = strlen(b);
        } else if (json_is_array(x) && json_array_size(x) == 2 &&
                   json_is_string(json_array_get(x, 0)) &&
                   json_is_string(json_array_get(x, 1))) {
            a = json_string_value(json_array_get(x, 0));
            al = json_string_length(json_array_get(x, 0));
            b = json_string_value(json_array_get(x, 1));
            bl = json_string_length(json_array_get(x, 1));
        } else {
            tok_str_free(&buf);
            return BAD(L, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", i);
        }
        int32_t ai = tok__smap_get(&t->vocab, a, al);
        int32_t bi = tok__smap_get(&t->vocab, b, bl);
        size_t pl = t->cont_prefix_len;
        buf.len = 0;
        if (ai < 0 || bi < 0 || bl < pl || tok__str_append(&buf, a, al) ||
            tok__str_append(&buf, b + pl, bl - pl)) {
            tok_str_free(&buf);
            return BAD(L, "model.merges[%zu]: token not in the vocabulary", i);
        }
        int32_t ni = tok__smap_get(&t->vocab, buf.data, buf.len);
        if (ni < 0) {
            tok_str_free(&buf);
            return BAD(L, "model.merges[%zu]: merged token not in the vocabulary", i);
        }
        mmap_put(&t->merges, ai, bi, (uint32_t)i, ni);
        t->in_merge[ai] = t->in_merge[bi] = 1;
    }
    tok_str_free(&buf);
    return ASA_OK;
}

/* ---- added tokens ------------------------------------------------------------- */

/* Sorts a candidate list by match length, longest first, then by index
 * (insertion sort: lists are short and this runs once at load). */
static void sort_by_len_desc(int32_t *v, size_t n, const tok__added *a) {
    for (size_t i = 1; i < n; i++) {
        int32_t x = v[i];
        size_t j = i;
        while (j > 0 && (a[v[j - 1]].match_len < a[x].match_len ||
                         (a[v[j - 1]].match_len == a[x].match_len && v[j - 1] > x))) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

static asa_err load_added(ld *L, json_t *arr) {
    tok_tokenizer *t = L->t;
    char where[64];
    asa_err e;
    size_t n = json_array_size(arr);
    t->added = aalloc(L, (n + 1) * sizeof *t->added);
    if (!t->added)
        return ASA_ENOMEM;
    if ((e = tok__smap_init(&t->added_map, n + 1)))
        return e;
    /* the library re-adds the file's tokens: a token that exists in the model
     * vocabulary takes that id, others get ids from the vocabulary size up */
    int32_t next_id = (int32_t)t->vocab.count;
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_array_get(arr, i);
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        static const char *const keys[] = {"id", "content", "single_word", "lstrip",
                                           "rstrip", "normalized", "special", NULL};
        if (!json_is_object(j))
            return BAD(L, "%s: expected an object", where);
        if ((e = check_keys(L, j, where, keys)))
            return e;
        tok__added a = {0};
        json_t *c = json_object_get(j, "content");
        if (!json_is_string(c))
            return BAD(L, "%s.content: expected a string", where);
        a.len = json_string_length(c);
        if (!a.len)
            continue; /* the library ignores empty added tokens */
        a.content = adup(L, json_string_value(c), a.len);
        if (!a.content)
            return ASA_ENOMEM;
        a.id = (int32_t)json_integer_value(json_object_get(j, "id"));
        if ((e = get_bool(L, j, "single_word", false, &a.single_word, where)) ||
            (e = get_bool(L, j, "lstrip", false, &a.lstrip, where)) ||
            (e = get_bool(L, j, "rstrip", false, &a.rstrip, where)) ||
            (e = get_bool(L, j, "special", false, &a.special, where)) ||
            (e = get_bool(L, j, "normalized", !a.special, &a.normalized, where)))
            return e;
        int32_t want = tok__smap_get(&t->added_map, a.content, a.len);
        if (want < 0)
            want = tok__smap_get(&t->vocab, a.content, a.len);
        if (want < 0)
            want = next_id++;
        if (want != a.id) {
            /* the library warns and uses its own id; so do we */
            ASA_LOGW("tok", "%s: \"%s\" has id %d in the file; using id %d as the library does",
                     where, a.content, (int)a.id, (int)want);
            a.id = want;
        }
        a.match = a.content;
        a.match_len = a.len;
        if (a.normalized && t->norm) {
            tok_str s = {0};
            if ((e = tok__normalize(t, t->norm, a.content, a.len, &s))) {
                tok_str_free(&s);
                return e;
            }
            a.match = adup(L, s.data, s.len);
            a.match_len = s.len;
            tok_str_free(&s);
            if (!a.match)
                return ASA_ENOMEM;
        }
        if (t->id_added[a.id] >= 0) /* the same id again: the later entry wins */
            t->added[t->id_added[a.id]].match_len = 0;
        t->id_added[a.id] = (int32_t)t->nadded;
        /* decode shows the normalized form of a normalized token */
        if ((e = set_id(L, a.id, a.match, a.match_len)) ||
            (e = tok__smap_put(&t->added_map, a.content, a.len, a.id)))
            return e;
        t->added[t->nadded++] = a;
    }
    for (size_t i = 0; i < t->n_ids; i++)
        if (t->id_str[i])
            t->vocab_size = i + 1;
    /* per-first-byte candidate lists, longest first (leftmost-longest) */
    for (int pass = 0; pass < 2; pass++) {
        int32_t **first = pass ? t->first_norm : t->first_raw;
        size_t *nfirst = pass ? t->nfirst_norm : t->nfirst_raw;
        for (size_t i = 0; i < t->nadded; i++) {
            tok__added *a = &t->added[i];
            if (a->match_len && a->normalized == (pass == 1))
                nfirst[(unsigned char)a->match[0]]++;
        }
        for (int b = 0; b < 256; b++) {
            if (!nfirst[b])
                continue;
            first[b] = aalloc(L, nfirst[b] * sizeof(int32_t));
            if (!first[b])
                return ASA_ENOMEM;
            nfirst[b] = 0;
        }
        for (size_t i = 0; i < t->nadded; i++) {
            tok__added *a = &t->added[i];
            if (!a->match_len || a->normalized != (pass == 1))
                continue;
            unsigned char b = (unsigned char)a->match[0];
            first[b][nfirst[b]++] = (int32_t)i;
            if (pass)
                t->any_norm = true;
            else
                t->any_raw = true;
        }
        for (int b = 0; b < 256; b++)
            if (nfirst[b] > 1)
                sort_by_len_desc(first[b], nfirst[b], t->added);
    }
    return ASA_OK;
}

/* ---- BOS / EOS ------------------------------------------------------------------ */

static int32_t config_token(tok_tokenizer *t, json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return -1;
    return tok_token_to_id(t, json_string_value(v), json_string_length(v));
}

static void pick_bos_eos(tok_tokenizer *t, json_t *cfg) {
    t->bos_id = t->eos_id = -1;
    if (cfg) {
        t->bos_id = config_token(t, cfg, "bos_token");
        t->eos_id = config_token(t, cfg, "eos_token");
        return;
    }
    const tok__post *p = t->post;
    while (p && p->kind == TOK_POST_SEQ) {
        const tok__post *q = NULL;
        for (size_t i = 0; i < p->nsubs && !q; i++)
            if (p->subs[i]->kind == TOK_POST_TEMPLATE)
                q = p->subs[i];
        p = q;
    }
    if (p && p->kind == TOK_POST_TEMPLATE && p->nbefore)
        t->bos_id = p->before[0];
    static const char *const eos[] = {"</s>", "<|endoftext|>", "<|end_of_text|>",
                                      "<|im_end|>", "<|eot_id|>", "<eos>", NULL};
    for (const char *const *s = eos; *s && t->eos_id < 0; s++) {
        int32_t id = tok__smap_get(&t->added_map, *s, strlen(*s));
        if (id >= 0 && tok_is_special(t, id))
            t->eos_id = id;
    }
}

/* ---- entry points ---------------------------------------------------------------- */

static asa_err build(ld *L, json_t *root, json_t *cfg) {
    tok_tokenizer *t = L->t;
    asa_err e;
    static const char *const keys[] = {"version", "truncation", "padding", "added_tokens",
                                       "normalizer", "pre_tokenizer", "post_processor",
                                       "decoder", "model", NULL};
    if (!json_is_object(root))
        return BAD(L, "tokenizer.json: not a JSON object");
    if ((e = check_keys(L, root, "tokenizer.json", keys)))
        return e;
    json_t *v;
    if ((v = json_object_get(root, "truncation")) && !json_is_null(v))
        return UNSUP(L, "truncation (only null is supported; truncate ids instead)");
    if ((v = json_object_get(root, "padding")) && !json_is_null(v))
        return UNSUP(L, "padding (only null is supported)");
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added) && !json_is_null(added))
        return BAD(L, "added_tokens: expected an array");
    if ((v = json_object_get(root, "normalizer")) && !json_is_null(v) &&
        (e = load_norm(L, v, &t->norm, "normalizer")))
        return e;
    if ((v = json_object_get(root, "pre_tokenizer")) && !json_is_null(v) &&
        (e = load_pre(L, v, &t->pre, "pre_tokenizer")))
        return e;
    if ((v = json_object_get(root, "post_processor")) && !json_is_null(v) &&
        (e = load_post(L, v, &t->post, "post_processor")))
        return e;
    if ((v = json_object_get(root, "decoder")) && !json_is_null(v) &&
        (e = load_dec(L, v, &t->dec, "decoder")))
        return e;
    if ((e = load_model(L, json_object_get(root, "model"), added)))
        return e;
    if ((e = load_added(L, added)))
        return e;

    /* Rust regex \w and \s (Unicode), for single_word and lstrip/rstrip */
    int err;
    PCRE2_SIZE off;
    t->re_word = pcre2_compile(
        (PCRE2_SPTR) "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
        PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    t->re_space = pcre2_compile((PCRE2_SPTR) "\\p{White_Space}", PCRE2_ZERO_TERMINATED,
                                PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!t->re_word || !t->re_space)
        return asa_errf(L->eb, ASA_EINTERNAL, "PCRE2 lacks Unicode property support");
    pick_bos_eos(t, cfg);
    /* a template or the config may name ids outside the vocabulary */
    const int32_t ids[] = {t->bos_id, t->eos_id};
    for (int i = 0; i < 2; i++)
        if (ids[i] >= 0 && !tok_id_to_token(t, ids[i], NULL))
            return BAD(L, "special id %d is not in the vocabulary", (int)ids[i]);
    return ASA_OK;
}

static void free_regex_tree_norm(tok__norm *n) {
    if (!n)
        return;
    for (size_t i = 0; i < n->nsubs; i++)
        free_regex_tree_norm(n->subs[i]);
    tok__regex_free(&n->re);
}
static void free_regex_tree_pre(tok__pre *p) {
    if (!p)
        return;
    for (size_t i = 0; i < p->nsubs; i++)
        free_regex_tree_pre(p->subs[i]);
    tok__regex_free(&p->re);
}
static void free_regex_tree_dec(tok__dec *d) {
    if (!d)
        return;
    for (size_t i = 0; i < d->nsubs; i++)
        free_regex_tree_dec(d->subs[i]);
    tok__regex_free(&d->re);
}

void tok_destroy(tok_tokenizer *t) {
    if (!t)
        return;
    if (t->cache) {
        tok__cache_clear(t);
        for (int i = 0; i < TOK_CACHE_SHARDS; i++)
            pthread_mutex_destroy(&t->cache[i].mu);
        free(t->cache);
    }
    free_regex_tree_norm(t->norm);
    free_regex_tree_pre(t->pre);
    free_regex_tree_dec(t->dec);
    if (t->re_word)
        pcre2_code_free(t->re_word);
    if (t->re_space)
        pcre2_code_free(t->re_space);
    tok__smap_deinit(&t->vocab);
    tok__smap_deinit(&t->added_map);
    free(t->merges.ents);
    asa_arena_destroy(t->arena);
    free(t);
}

asa_err tok_load_json(const char *json, size_t len, const char *config_json,
                      tok_tokenizer **out, asa_errbuf *eb) {
    if (!json || !out)
        return asa_errf(eb, ASA_EINVAL, "tok_load_json: NULL argument");
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (!root)
        return asa_errf(eb, ASA_EFORMAT, "tokenizer.json: line %d: %s", jerr.line, jerr.text);
    json_t *cfg = NULL;
    if (config_json) {
        cfg = json_loads(config_json, JSON_DECODE_INT_AS_REAL, &jerr);
        if (!cfg || !json_is_object(cfg)) {
            json_decref(root);
            json_decref(cfg);
            return asa_errf(eb, ASA_EFORMAT, "tokenizer_config.json: line %d: %s", jerr.line,
                            jerr.text);
        }
    }
    asa_err e = ASA_ENOMEM;
    tok_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        goto fail;
    t->arena = asa_arena_create(1 << 20);
    t->cache = calloc(TOK_CACHE_SHARDS, sizeof *t->cache);
    if (!t->arena || !t->cache) {
        free(t->cache);
        t->cache = NULL;
        goto fail;
    }
    for (int i = 0; i < TOK_CACHE_SHARDS; i++)
        pthread_mutex_init(&t->cache[i].mu, NULL);
    ld L = {t, eb};
    if ((e = build(&L, root, cfg))) {
        if (e == ASA_ENOMEM)
            asa_errf(eb, e, "out of memory while loading the tokenizer");
        goto fail;
    }
    json_decref(root);
    json_decref(cfg);
    *out = t;
    return ASA_OK;
fail:
    tok_destroy(t);
    json_decref(root);
    json_decref(cfg);
    return e;
}

static asa_err read_file(const char *path, tok_str *s) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return ASA_EIO;
    char buf[65536];
    size_t n;
    asa_err e = tok__str_append(s, "", 0);
    while (!e && (n = fread(buf, 1, sizeof buf, f)) > 0)
        e = tok__str_append(s, buf, n);
    if (!e && ferror(f))
        e = ASA_EIO;
    fclose(f);
    return e;
}

asa_err tok_load(const char *path, tok_tokenizer **out, asa_errbuf *eb) {
    if (!path || !out)
        return asa_errf(eb, ASA_EINVAL, "tok_load: NULL argument");
    tok_str js = {0}, cfg = {0}, cpath = {0};
    asa_err e = read_file(path, &js);
    if (e) {
        tok_str_free(&js);
        return asa_errf(eb, e, "%s: %s", path, e == ASA_EIO ? strerror(errno) : asa_strerror(e));
    }
    /* tokenizer_config.json beside it, if any */
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path + 1) : 0;
    bool have_cfg = false;
    if (!tok__str_append(&cpath, path, dirlen) &&
        !tok__str_append(&cpath, "tokenizer_config.json", 21)) {
        FILE *f = fopen(cpath.data, "rb");
        if (f) {
            fclose(f);
            if ((e = read_file(cpath.data, &cfg))) {
                asa_errf(eb, e, "%s: cannot read", cpath.data);
                goto done;
            }
            have_cfg = true;
        }
    } else {
        e = ASA_ENOMEM;
        goto done;
    }
    e = tok_load_json(js.data, js.len, have_cfg ? cfg.data : NULL, out, eb);
done:
    tok_str_free(&js);
    tok_str_free(&cfg);
    tok_str_free(&cpath);
    return e;
}
