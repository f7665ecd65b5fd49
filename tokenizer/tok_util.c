/* tokenizer/tok_util.c - buffers, UTF-8, hashing, hash maps, regex glue. */
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"
#include "tok_ugap.h"

/* ---- buffers ------------------------------------------------------------ */

void tok_ids_free(tok_ids *v) {
    if (!v)
        return;
    free(v->ids);
    memset(v, 0, sizeof *v);
}

void tok_str_free(tok_str *s) {
    if (!s)
        return;
    free(s->data);
    memset(s, 0, sizeof *s);
}

asa_err tok__str_reserve(tok_str *s, size_t extra) {
    size_t need = s->len + extra + 1; /* room for the NUL */
    if (need <= s->cap)
        return ASA_OK;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = realloc(s->data, cap);
    if (!p)
        return ASA_ENOMEM;
    s->data = p;
    s->cap = cap;
    return ASA_OK;
}

asa_err tok__str_append(tok_str *s, const char *p, size_t n) {
    if (tok__str_reserve(s, n))
        return ASA_ENOMEM;
    if (n)
        memcpy(s->data + s->len, p, n);
    s->len += n;
    s->data[s->len] = 0;
    return ASA_OK;
}

asa_err tok__ids_append(tok_ids *v, const int32_t *ids, size_t n) {
    if (v->len + n > v->cap) {
        size_t cap = v->cap ? v->cap : 64;
        while (cap < v->len + n)
            cap *= 2;
        int32_t *p = realloc(v->ids, cap * sizeof *p);
        if (!p)
            return ASA_ENOMEM;
        v->ids = p;
        v->cap = cap;
    }
    if (n)
        memcpy(v->ids + v->len, ids, n * sizeof *ids);
    v->len += n;
    return ASA_OK;
}

asa_err tok__ids_push(tok_ids *v, int32_t id) { return tok__ids_append(v, &id, 1); }

/* ---- UTF-8 -------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if the bytes there do
 * not start one.  *maximal gets the length of the maximal subpart of a valid
 * sequence (>= 1) when the result is 0 (Unicode "substitution of maximal
 * subparts", which Rust's from_utf8_lossy follows). */
static size_t u8_seq(const unsigned char *s, size_t n, size_t *maximal) {
    unsigned char b = s[0];
    *maximal = 1;
    if (b < 0x80)
        return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0)
            lo = 0xA0;
        if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0)
            lo = 0x90;
        if (b == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    for (size_t i = 1; i < need; i++) {
        if (i >= n)
            return 0;
        unsigned char c = s[i];
        if (i == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF))
            return 0;
        *maximal = i + 1;
    }
    return need;
}

size_t tok_utf8_valid_prefix(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, m;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = u8_seq(p + i, len - i, &m);
        if (!k)
            return i;
        i += k;
    }
    return len;
}

uint32_t tok__u8dec(const char *s, size_t *n) {
    const unsigned char *p = (const unsigned char *)s;
    if (p[0] < 0x80) {
        *n = 1;
        return p[0];
    }
    if (p[0] < 0xE0) {
        *n = 2;
        return ((uint32_t)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
    }
    if (p[0] < 0xF0) {
        *n = 3;
        return ((uint32_t)(p[0] & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) |
               (p[2] & 0x3F);
    }
    *n = 4;
    return ((uint32_t)(p[0] & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
           ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

size_t tok__u8enc(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

asa_err tok__append_lossy(tok_str *out, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0, m;
    if (tok__str_reserve(out, len))
        return ASA_ENOMEM;
    while (i < len) {
        size_t k = u8_seq(p + i, len - i, &m);
        if (k) {
            i += k;
            continue;
        }
        /* flush the valid run before the bad bytes, then one U+FFFD */
        if (tok__str_append(out, s + run, i - run) ||
            tok__str_append(out, "\xEF\xBF\xBD", 3))
            return ASA_ENOMEM;
        i += m;
        run = i;
    }
    return tok__str_append(out, s + run, len - run);
}

/* ---- hashing ------------------------------------------------------------ */

uint64_t tok__hash(const void *p, size_t n) {
    /* 64-bit multiply-xorshift over 8-byte words; the tail is read bytewise */
    const unsigned char *s = p;
    uint64_t h = 0x243F6A8885A308D3ull ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)s[i] << (8 * i);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    h *= 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    return h;
}

asa_err tok__smap_init(tok__smap *m, size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2)
        cap *= 2;
    m->ents = calloc(cap, sizeof *m->ents);
    if (!m->ents)
        return ASA_ENOMEM;
    m->mask = cap - 1;
    m->count = 0;
    return ASA_OK;
}

void tok__smap_deinit(tok__smap *m) {
    free(m->ents);
    memset(m, 0, sizeof *m);
}

static asa_err smap_grow(tok__smap *m) {
    tok__smap n;
    if (tok__smap_init(&n, (m->mask + 1)))
        return ASA_ENOMEM;
    for (size_t i = 0; i <= m->mask; i++) {
        tok__smap_ent *e = &m->ents[i];
        if (!e->key)
            continue;
        size_t j = (size_t)e->hash & n.mask;
        while (n.ents[j].key)
            j = (j + 1) & n.mask;
        n.ents[j] = *e;
    }
    n.count = m->count;
    free(m->ents);
    *m = n;
    return ASA_OK;
}

asa_err tok__smap_put(tok__smap *m, const char *key, size_t len, int32_t val) {
    if ((m->count + 1) * 2 > m->mask + 1 && smap_grow(m))
        return ASA_ENOMEM;
    uint64_t h = tok__hash(key, len);
    size_t i = (size_t)h & m->mask;
    for (;;) {
        tok__smap_ent *e = &m->ents[i];
        if (!e->key) {
            e->key = key;
            e->len = (uint32_t)len;
            e->val = val;
            e->hash = h;
            m->count++;
            return ASA_OK;
        }
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
            e->val = val;
            return ASA_OK;
        }
        i = (i + 1) & m->mask;
    }
}

int32_t tok__smap_get(const tok__smap *m, const char *key, size_t len) {
    if (!m->ents)
        return -1;
    uint64_t h = tok__hash(key, len);
    size_t i = (size_t)h & m->mask;
    for (;;) {
        const tok__smap_ent *e = &m->ents[i];
        if (!e->key)
            return -1;
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
            return e->val;
        i = (i + 1) & m->mask;
    }
}

/* ---- regular expressions ------------------------------------------------ */

/* Hugging Face tokenizers runs patterns on Oniguruma (Ruby syntax); PCRE2
 * reads the same text differently in a few places, which are rewritten here:
 *   \s  Oniguruma: White_Space; PCRE2 also counts U+180E;
 *   \w  Oniguruma: Alphabetic|Mark|Decimal_Number|Connector_Punctuation
 *       (plus a few No characters outside a class); PCRE2 10.42: L|N|_;
 *   \h  Oniguruma: a hexadecimal digit; PCRE2: horizontal space;
 *   \p{L}, \p{N}, \w: Oniguruma's Unicode tables are newer than those of
 *       Debian 12's PCRE2 (Unicode 14): the missing code points
 *       (tok_ugap.h, generated from the library) are added to the class.
 * Inside a character class the set is expanded in place; a negated form
 * (\S, \W, \H, \P{..}) inside a class is left to PCRE2 (no known pattern
 * has one).  Other properties (\p{Lu}, \p{M}, ...) use PCRE2's tables.
 * ^ and $ are line anchors in Ruby syntax: compiled with PCRE2_MULTILINE.
 * All of it is checked against the library over every code point (see
 * tools/tokenizer/gen_unicode_gap.sh and the gpt2_regex_syntax variant). */
#define WS_SET "\\t-\\r\\x{85}\\p{Z}"
#define WORD_SET "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}"
#define HEX_SET "0-9a-fA-F"

typedef struct esc_rule {
    const char *esc; /* the escape as written in the pattern */
    bool neg;        /* a negated form */
    const char *out; /* the class content outside a class */
    const char *in;  /* inside a class (NULL: leave the escape to PCRE2) */
} esc_rule;

static const esc_rule ESC_RULES[] = {
    {"\\s", false, WS_SET, WS_SET},
    {"\\S", true, WS_SET, NULL},
    {"\\w", false, WORD_SET TOK_UGAP_w, WORD_SET TOK_UGAP_wc},
    {"\\W", true, WORD_SET TOK_UGAP_w, NULL},
    {"\\h", false, HEX_SET, HEX_SET},
    {"\\H", true, HEX_SET, NULL},
    {"\\p{L}", false, "\\p{L}" TOK_UGAP_L, "\\p{L}" TOK_UGAP_L},
    {"\\P{L}", true, "\\p{L}" TOK_UGAP_L, NULL},
    {"\\p{N}", false, "\\p{N}" TOK_UGAP_N, "\\p{N}" TOK_UGAP_N},
    {"\\P{N}", true, "\\p{N}" TOK_UGAP_N, NULL},
};

static asa_err translate(const char *pat, tok_str *out) {
    int depth = 0;
    for (const char *p = pat; *p; p++) {
        if (*p == '\\' && p[1]) {
            const esc_rule *r = NULL;
            for (size_t i = 0; i < sizeof ESC_RULES / sizeof ESC_RULES[0] && !r; i++)
                if (!strncmp(p, ESC_RULES[i].esc, strlen(ESC_RULES[i].esc)))
                    r = &ESC_RULES[i];
            size_t n = r ? strlen(r->esc) : 2;
            asa_err e;
            if (r && depth && r->in)
                e = tok__str_append(out, r->in, strlen(r->in));
            else if (r && !depth)
                e = tok__str_append(out, r->neg ? "[^" : "[", r->neg ? 2 : 1) ||
                            tok__str_append(out, r->out, strlen(r->out)) ||
                            tok__str_append(out, "]", 1)
                        ? ASA_ENOMEM
                        : ASA_OK;
            else
                e = tok__str_append(out, p, n);
            if (e)
                return e;
            p += n - 1;
            continue;
        }
        if (*p == '[') {
            depth++;
            /* a ']' or '^]' right after '[' is a literal */
            if (tok__str_append(out, p, 1))
                return ASA_ENOMEM;
            if (p[1] == '^') {
                if (tok__str_append(out, "^", 1))
                    return ASA_ENOMEM;
                p++;
            }
            if (p[1] == ']') {
                if (tok__str_append(out, "]", 1))
                    return ASA_ENOMEM;
                p++;
            }
            continue;
        }
        if (*p == ']' && depth)
            depth--;
        if (tok__str_append(out, p, 1))
            return ASA_ENOMEM;
    }
    if (!out->data && tok__str_append(out, "", 0))
        return ASA_ENOMEM;
    return ASA_OK;
}

asa_err tok__regex_compile(tok__regex *re, const char *pat, bool literal,
                           asa_errbuf *eb, const char *where) {
    memset(re, 0, sizeof *re);
    if (literal) {
        re->literal = true;
        re->lit = pat;
        re->lit_len = strlen(pat);
        return ASA_OK;
    }
    tok_str t = {0};
    if (translate(pat, &t)) {
        tok_str_free(&t);
        return ASA_ENOMEM;
    }
    int err;
    PCRE2_SIZE off;
    re->code = pcre2_compile((PCRE2_SPTR)t.data, t.len,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &off, NULL);
    tok_str_free(&t);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return asa_errf(eb, ASA_EUNSUPPORTED, "%s: regex /%s/ rejected by PCRE2 at %zu: %s",
                        where, pat, (size_t)off, (const char *)msg);
    }
    /* JIT failing (e.g. no executable memory) only costs speed */
    (void)pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
    return ASA_OK;
}

void tok__regex_free(tok__regex *re) {
    if (re && re->code)
        pcre2_code_free(re->code);
}

asa_err tok__regex_each(const tok__regex *re, pcre2_match_data *md, const char *s,
                        size_t len, tok__match_cb cb, void *ctx) {
    if (re->literal) {
        size_t n = re->lit_len;
        if (!n)
            return ASA_OK;
        for (size_t i = 0; i + n <= len;) {
            const char *hit = memchr(s + i, re->lit[0], len - i - n + 1);
            if (!hit)
                break;
            size_t at = (size_t)(hit - s);
            if (memcmp(hit, re->lit, n) == 0) {
                asa_err e = cb(ctx, at, at + n);
                if (e)
                    return e;
                i = at + n;
            } else
                i = at + 1;
        }
        return ASA_OK;
    }
    size_t off = 0;
    while (off <= len) {
        int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, off, PCRE2_NO_UTF_CHECK, md,
                             NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return ASA_EINTERNAL;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (b > a) {
            asa_err e = cb(ctx, a, b);
            if (e)
                return e;
            off = b;
        } else {
            /* empty match: it would make an empty piece, which is dropped */
            if (a >= len)
                break;
            off = a + tok__u8len((unsigned char)s[a]);
        }
    }
    return ASA_OK;
}
