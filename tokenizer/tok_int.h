/*
 * tokenizer/tok_int.h - internals shared by the tokenizer's source files.
 *
 * The loaded tokenizer is a tree of small tagged structs (normalizers,
 * pre-tokenizers, decoders, post-processors) that mirrors tokenizer.json,
 * plus the BPE tables (vocabulary hash, merge hash) and the added tokens.
 * Everything except the word cache is written once by tok_load and read-only
 * afterwards; all of it lives in one arena owned by the tokenizer.
 */
#ifndef ASA_TOK_INT_H
#define ASA_TOK_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>

#include "tok.h"

/* ---- small growable buffers ------------------------------------------- */

asa_err tok__str_reserve(tok_str *s, size_t extra);
asa_err tok__str_append(tok_str *s, const char *p, size_t n);
asa_err tok__ids_push(tok_ids *v, int32_t id);
asa_err tok__ids_append(tok_ids *v, const int32_t *ids, size_t n);

/* ---- UTF-8 -------------------------------------------------------------- */

/* Length of the UTF-8 character whose first byte is b (1 for a stray byte). */
static inline size_t tok__u8len(unsigned char b) {
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}
/* Decodes one character of valid UTF-8 at s; *n gets its length. */
uint32_t tok__u8dec(const char *s, size_t *n);
/* Encodes cp into out (4 bytes room); returns the length. */
size_t tok__u8enc(uint32_t cp, char *out);
/* Appends s[len] to out, replacing each maximal invalid subsequence by U+FFFD
 * (Rust's String::from_utf8_lossy). */
asa_err tok__append_lossy(tok_str *out, const char *s, size_t len);

/* ---- hashing ------------------------------------------------------------ */

uint64_t tok__hash(const void *p, size_t n);

/* String -> int32 map (open addressing, keys borrowed from the arena). */
typedef struct tok__smap_ent {
    const char *key; /* NULL = empty slot */
    uint32_t len;
    int32_t val;
    uint64_t hash;
} tok__smap_ent;
typedef struct tok__smap {
    tok__smap_ent *ents; /* [mask + 1] */
    size_t mask;
    size_t count;
} tok__smap;
asa_err tok__smap_init(tok__smap *m, size_t expected);
void tok__smap_deinit(tok__smap *m);
/* Inserts or overwrites; key must outlive the map. */
asa_err tok__smap_put(tok__smap *m, const char *key, size_t len, int32_t val);
/* Returns the value or -1. */
int32_t tok__smap_get(const tok__smap *m, const char *key, size_t len);

/* (left id, right id) -> (rank, merged id). */
typedef struct tok__mmap_ent {
    uint64_t key; /* UINT64_MAX = empty */
    uint32_t rank;
    int32_t id;
} tok__mmap_ent;
typedef struct tok__mmap {
    tok__mmap_ent *ents;
    size_t mask;
} tok__mmap;

/* Slot of a pair key: both halves must reach the low bits. */
static inline size_t tok__mmap_slot(uint64_t key, size_t mask) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return (size_t)h & mask;
}

static inline const tok__mmap_ent *tok__mmap_get(const tok__mmap *m, int32_t a,
                                                 int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = tok__mmap_slot(key, m->mask);
    for (;;) {
        const tok__mmap_ent *e = &m->ents[i];
        if (e->key == key)
            return e;
        if (e->key == UINT64_MAX)
            return NULL;
        i = (i + 1) & m->mask;
    }
}

/* ---- regular expressions ------------------------------------------------ */

typedef struct tok__regex {
    pcre2_code *code; /* compiled with UTF | UCP, JIT when available */
    bool literal;     /* a "String" pattern: match lit[lit_len] bytewise */
    const char *lit;
    size_t lit_len;
} tok__regex;

/* Compiles a pattern from the file ("Regex" in Oniguruma syntax, translated
 * where PCRE2 differs) or a literal ("String"). */
asa_err tok__regex_compile(tok__regex *re, const char *pat, bool literal,
                           asa_errbuf *eb, const char *where);
void tok__regex_free(tok__regex *re);

/* Iterates the non-overlapping matches of re in s[len] (leftmost first).
 * For each match calls cb(ctx, start, end); an empty match advances one
 * character.  md: match data from pcre2_match_data_create (NULL for literal
 * patterns).  Returns 0 or an error from cb / ASA_EINTERNAL. */
typedef asa_err (*tok__match_cb)(void *ctx, size_t start, size_t end);
asa_err tok__regex_each(const tok__regex *re, pcre2_match_data *md,
                        const char *s, size_t len, tok__match_cb cb, void *ctx);

/* ---- components --------------------------------------------------------- */

typedef enum {
    TOK_NORM_SEQ,
    TOK_NORM_PREPEND,
    TOK_NORM_REPLACE,
    TOK_NORM_UNICODE, /* NFC/NFD/NFKC/NFKD through utf8proc */
} tok__norm_kind;

typedef struct tok__norm {
    tok__norm_kind kind;
    struct tok__norm **subs; /* SEQ: [nsubs] */
    size_t nsubs;
    const char *str; /* PREPEND: text; REPLACE: content */
    size_t str_len;
    tok__regex re; /* REPLACE: pattern */
    int uflags;    /* UNICODE: utf8proc options */
} tok__norm;

typedef enum {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} tok__split_behavior;

typedef enum {
    TOK_PRE_SEQ,
    TOK_PRE_BYTELEVEL,
    TOK_PRE_SPLIT,
    TOK_PRE_METASPACE,
    TOK_PRE_DIGITS,
} tok__pre_kind;

typedef enum { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } tok__prepend;

typedef struct tok__pre {
    tok__pre_kind kind;
    struct tok__pre **subs; /* SEQ */
    size_t nsubs;
    bool add_prefix_space; /* BYTELEVEL */
    bool use_regex;        /* BYTELEVEL: split with the GPT-2 pattern */
    tok__regex re;         /* SPLIT pattern; BYTELEVEL (use_regex); DIGITS */
    tok__split_behavior behavior; /* SPLIT, DIGITS */
    bool invert;                  /* SPLIT */
    char repl[8];                 /* METASPACE replacement char, UTF-8 */
    size_t repl_len;
    tok__prepend prepend; /* METASPACE */
    bool split;           /* METASPACE */
} tok__pre;

typedef enum {
    TOK_DEC_SEQ,
    TOK_DEC_BYTELEVEL,
    TOK_DEC_REPLACE,
    TOK_DEC_BYTEFALLBACK,
    TOK_DEC_FUSE,
    TOK_DEC_STRIP,
    TOK_DEC_METASPACE,
} tok__dec_kind;

typedef struct tok__dec {
    tok__dec_kind kind;
    struct tok__dec **subs; /* SEQ */
    size_t nsubs;
    tok__regex re;    /* REPLACE pattern */
    const char *str;  /* REPLACE content */
    size_t str_len;
    uint32_t content; /* STRIP: the code point stripped */
    size_t start, stop;      /* STRIP */
    uint32_t repl;           /* METASPACE replacement code point */
    tok__prepend prepend;    /* METASPACE */
} tok__dec;

typedef enum {
    TOK_POST_SEQ,
    TOK_POST_NOOP,     /* ByteLevel: offsets only */
    TOK_POST_TEMPLATE, /* TemplateProcessing, BertProcessing, RobertaProcessing */
} tok__post_kind;

typedef struct tok__post {
    tok__post_kind kind;
    struct tok__post **subs; /* SEQ */
    size_t nsubs;
    /* TEMPLATE single: ids before the sequence, ids after it. */
    int32_t *before, *after;
    size_t nbefore, nafter;
} tok__post;

typedef struct tok__added {
    const char *content; /* as in the file */
    size_t len;
    const char *match; /* what is searched for: normalized content if normalized */
    size_t match_len;
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
} tok__added;

/* ---- the word cache ---------------------------------------------------- */

#define TOK_CACHE_SHARDS 16
#define TOK_CACHE_SLOTS 2048 /* per shard, power of two */
#define TOK_CACHE_MAX_WORD 256 /* bytes; longer words are not cached */

typedef struct tok__centry {
    uint64_t hash;
    char *key; /* malloc'd: key bytes, then the ids; NULL = empty */
    uint32_t klen;
    uint32_t nids;
} tok__centry;

typedef struct tok__cshard {
    pthread_mutex_t mu;
    size_t count;
    tok__centry slots[TOK_CACHE_SLOTS];
} tok__cshard;

/* ---- the tokenizer ------------------------------------------------------ */

struct tok_tokenizer {
    asa_arena *arena; /* every load-time allocation */

    /* model: BPE */
    tok__smap vocab;     /* token string -> id (model vocabulary) */
    const char **id_str; /* [n_ids] string of each id (model or added), NULL if none */
    uint32_t *id_len;    /* [n_ids] */
    size_t n_ids;      /* room in the id tables (>= vocab_size) */
    size_t vocab_size; /* max id in use + 1 */
    tok__mmap merges;
    uint8_t *in_merge; /* [n_ids] 1 if the id is one side of some merge */
    int32_t unk_id; /* -1 if none */
    bool fuse_unk, byte_fallback, ignore_merges;
    const char *cont_prefix; /* continuing_subword_prefix, NULL if none */
    size_t cont_prefix_len;
    const char *eow_suffix; /* end_of_word_suffix, NULL if none */
    size_t eow_suffix_len;
    int32_t byte_id[256]; /* byte_fallback: id of <0xNN>, -1 if missing */
    /* id of the one-character token of each code point below 0x800 (-1 if
     * none); only used without continuing_subword_prefix/end_of_word_suffix */
    int32_t *char_id; /* [0x800] */

    /* added tokens; id_added[id] indexes added[] or -1 */
    tok__added *added;
    size_t nadded;
    int32_t *id_added; /* [n_ids] */
    tok__smap added_map; /* content -> id */
    /* per first byte, indexes into added[] sorted by match length, longest
     * first; one table for non-normalized and one for normalized tokens */
    int32_t *first_raw[256];
    size_t nfirst_raw[256];
    int32_t *first_norm[256];
    size_t nfirst_norm[256];
    bool any_raw, any_norm;

    tok__norm *norm; /* NULL if none */
    tok__pre *pre;   /* NULL if none */
    tok__dec *dec;   /* NULL: tokens joined with " " */
    tok__post *post; /* NULL if none */

    int32_t bos_id, eos_id;

    /* Unicode classes for single_word / lstrip / rstrip (Rust regex \w, \s) */
    pcre2_code *re_word, *re_space;
    size_t max_match_data; /* ovector pairs needed by any pattern */

    tok__cshard *cache; /* [TOK_CACHE_SHARDS] */
};

/* tok_encode.c */
void tok__cache_clear(tok_tokenizer *t);
/* Runs the normalizer on s[len], setting *out. */
asa_err tok__normalize(const tok_tokenizer *t, const tok__norm *n,
                       const char *s, size_t len, tok_str *out);

/* Replaces every match of re in s[len] by content, appending to out. */
asa_err tok__replace_all(const tok__regex *re, pcre2_match_data *md, const char *s,
                         size_t len, const char *content, size_t clen, tok_str *out);

/* Byte-level BPE's byte <-> character mapping (GPT-2's bytes_to_unicode):
 * printable Latin-1 bytes stand for themselves, the other 68 bytes map in
 * order to U+0100..U+0143. */
static inline uint32_t tok__byte_to_cp(unsigned char b) {
    if (b <= 32)
        return 256u + b;
    if (b >= 127 && b <= 160)
        return 289u + (b - 127u);
    if (b == 173)
        return 323u;
    return b;
}
/* code point -> byte, or -1 when cp is not in the byte-level alphabet */
static inline int tok__cp_to_byte(uint32_t cp) {
    if (cp < 256)
        return (cp <= 32 || (cp >= 127 && cp <= 160) || cp == 173) ? -1 : (int)cp;
    if (cp <= 288)
        return (int)(cp - 256);
    if (cp <= 322)
        return (int)(cp - 289 + 127);
    if (cp == 323)
        return 173;
    return -1;
}

#endif /* ASA_TOK_INT_H */
