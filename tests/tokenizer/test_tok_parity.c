/* Parity with Hugging Face tokenizers on every test text, both vocabularies,
 * with and without special tokens (expected_ids.json), decode parity, and
 * encode -> decode round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "tok_test_util.h"

static const char *const VOCABS[] = {"gpt2", "mistral"};

static void check_vocab(const char *v) {
    json_t *texts = tt_json("texts.json"), *exp = tt_json("expected_ids.json");
    assert_non_null(texts);
    assert_non_null(exp);
    json_t *ev = json_object_get(json_object_get(exp, "vocabs"), v);
    assert_non_null(ev);
    tok_tokenizer *t = tt_load_any(v);
    assert_non_null(t);
    /* texts where a known, documented difference is expected */
    json_t *variants = tt_json("variants.json");
    json_t *known = json_object_get(json_object_get(variants, v), "known_diff");
    tok_ids ids = {0};
    tok_str s = {0};
    int failures = 0;
    size_t i;
    json_t *item;
    json_array_foreach(texts, i, item) {
        const char *name = json_string_value(json_object_get(item, "name"));
        json_t *jt = json_object_get(item, "text");
        const char *text = json_string_value(jt);
        size_t len = json_string_length(jt);
        json_t *e = json_object_get(ev, name);
        assert_non_null(e);
        const char *why = json_string_value(json_object_get(known, name));
        if (why) {
            fprintf(stderr, "%s/%s: not compared: %s\n", v, name, why);
            continue;
        }
        for (int sp = 0; sp < 2; sp++) {
            assert_int_equal(tok_encode(t, text, len, sp == 0, &ids, NULL), ASA_OK);
            json_t *want = json_object_get(e, sp == 0 ? "special" : "nospecial");
            if (!tt_ids_equal(ids.ids, ids.len, want)) {
                fprintf(stderr, "MISMATCH %s/%s add_special=%d\n", v, name, sp == 0);
                tt_print_ids("  got ", ids.ids, ids.len);
                tt_print_json_ids("  want", want);
                failures++;
            }
        }
        /* decode of the reference ids, with and without skipping specials */
        json_t *ref = json_object_get(e, "special");
        size_t n = json_array_size(ref);
        int32_t *rid = malloc((n + 1) * sizeof *rid);
        assert_non_null(rid);
        for (size_t k = 0; k < n; k++)
            rid[k] = (int32_t)json_integer_value(json_array_get(ref, k));
        for (int skip = 0; skip < 2; skip++) {
            assert_int_equal(tok_decode(t, rid, n, skip, &s), ASA_OK);
            const char *want = json_string_value(json_object_get(e, skip ? "decode_skip" : "decode"));
            if (strlen(want) != s.len || memcmp(want, s.data, s.len)) {
                fprintf(stderr, "DECODE MISMATCH %s/%s skip=%d:\n  got  '%.*s'\n  want '%s'\n", v,
                        name, skip, (int)(s.len > 200 ? 200 : s.len), s.data, want);
                failures++;
            }
            assert_int_equal(tok_utf8_valid_prefix(s.data, s.len), s.len);
        }
        free(rid);
        /* round trip: decode(encode(text)) == text.  SentencePiece files in the
         * legacy layout (Prepend normalizer) put a "▁" after every added token
         * written in the text, so the round trip of such texts is not the
         * identity in the reference library either: only check texts without
         * added-token strings there. */
        bool has_added = strstr(text, "<s>") || strstr(text, "</s>") || strstr(text, "<unk>");
        /* The variants with a prefix space (gpt2_digits) or Metaspace (a text
         * that starts with a space loses it) do not round-trip in the library
         * either; their ids and decodes are checked above. */
        bool rt = !strcmp(v, "gpt2") || !strcmp(v, "gpt2_llama3") || !strcmp(v, "gpt2_qwen2") ||
                  (!strcmp(v, "mistral") && !has_added);
        if (rt) {
            assert_int_equal(tok_encode(t, text, len, false, &ids, NULL), ASA_OK);
            assert_int_equal(tok_decode(t, ids.ids, ids.len, false, &s), ASA_OK);
            if (s.len != len || memcmp(s.data, text, len)) {
                fprintf(stderr, "ROUND TRIP %s/%s:\n  got  '%.*s'\n  want '%s'\n", v, name,
                        (int)(s.len > 200 ? 200 : s.len), s.data, text);
                failures++;
            }
        }
    }
    assert_int_equal(failures, 0);
    assert_int_equal(tok_check(t), ASA_OK); /* the cache after use */
    json_decref(variants);
    tok_ids_free(&ids);
    tok_str_free(&s);
    tok_destroy(t);
    json_decref(texts);
    json_decref(exp);
}

static void test_parity_gpt2(void **state) {
    (void)state;
    check_vocab(VOCABS[0]);
}

static void test_parity_mistral(void **state) {
    (void)state;
    check_vocab(VOCABS[1]);
}

/* Llama-3 / Qwen2 regex layouts and the newer SentencePiece layout, built on
 * the committed vocabularies (variants.json). */
static void test_parity_variants(void **state) {
    (void)state;
    json_t *variants = tt_json("variants.json");
    assert_non_null(variants);
    const char *k;
    json_t *val;
    json_object_foreach(variants, k, val) {
        if (k[0] == '_')
            continue;
#ifndef TOK_HAVE_UTF8PROC
        if (json_object_get(val, "needs")) {
            fprintf(stderr, "variant %s: skipped (built without utf8proc)\n", k);
            continue;
        }
#endif
        fprintf(stderr, "variant %s\n", k);
        check_vocab(k);
    }
    json_decref(variants);
}

/* Encoding is deterministic with a warm cache and across calls. */
static void test_cache_consistency(void **state) {
    (void)state;
    tok_tokenizer *t = tt_load("gpt2");
    assert_non_null(t);
    const char *text = "the cat sat on the mat; the cat sat on the mat";
    tok_ids a = {0}, b = {0};
    assert_int_equal(tok_encode(t, text, strlen(text), true, &a, NULL), ASA_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tok_encode(t, text, strlen(text), true, &b, NULL), ASA_OK);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.ids, b.ids, a.len * sizeof *a.ids);
    }
    tok_ids_free(&a);
    tok_ids_free(&b);
    tok_destroy(t);
}

/* Invalid UTF-8 is refused with ASA_EUTF8 and the byte offset. */
static void test_invalid_utf8(void **state) {
    (void)state;
    static const struct {
        const char *s;
        size_t len, at;
    } cases[] = {
        {"abc\xff", 4, 3},         /* never valid */
        {"ab\xc3", 3, 2},          /* truncated 2-byte */
        {"\xc0\xaf", 2, 0},        /* overlong */
        {"x\xed\xa0\x80y", 5, 1},  /* surrogate */
        {"\xf4\x90\x80\x80", 4, 0},/* > U+10FFFF */
        {"ok \xe4\xb8", 5, 3},     /* truncated 3-byte */
        {"\x80", 1, 0},            /* lone continuation */
    };
    for (int v = 0; v < 2; v++) {
        tok_tokenizer *t = tt_load(VOCABS[v]);
        assert_non_null(t);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char msg[128] = "";
            asa_errbuf eb = {msg, sizeof msg};
            tok_ids ids = {0};
            assert_int_equal(tok_utf8_valid_prefix(cases[i].s, cases[i].len), cases[i].at);
            assert_int_equal(tok_encode(t, cases[i].s, cases[i].len, true, &ids, &eb), ASA_EUTF8);
            char want[64];
            snprintf(want, sizeof want, "byte %zu", cases[i].at);
            assert_non_null(strstr(msg, want));
            tok_ids_free(&ids);
        }
        /* NUL is an ordinary character */
        tok_ids ids = {0};
        tok_str s = {0};
        assert_int_equal(tok_encode(t, "a\0b", 3, false, &ids, NULL), ASA_OK);
        assert_int_equal(tok_decode(t, ids.ids, ids.len, false, &s), ASA_OK);
        assert_int_equal(s.len, 3);
        assert_memory_equal(s.data, "a\0b", 3);
        tok_ids_free(&ids);
        tok_str_free(&s);
        tok_destroy(t);
    }
}

static void test_vocab_api(void **state) {
    (void)state;
    tok_tokenizer *g = tt_load("gpt2"), *m = tt_load("mistral");
    assert_non_null(g);
    assert_non_null(m);
    assert_int_equal(tok_check(g), ASA_OK);
    assert_int_equal(tok_check(m), ASA_OK);
    assert_int_equal(tok_check(NULL), ASA_EINTERNAL);
    assert_int_equal(tok_vocab_size(g), 50257);
    assert_int_equal(tok_vocab_size(m), 32000);
    assert_int_equal(tok_bos_id(g), 50256);
    assert_int_equal(tok_eos_id(g), 50256);
    assert_int_equal(tok_bos_id(m), 1);
    assert_int_equal(tok_eos_id(m), 2);
    assert_true(tok_is_special(g, 50256));
    assert_false(tok_is_special(g, 262));
    assert_true(tok_is_special(m, 0) && tok_is_special(m, 1) && tok_is_special(m, 2));
    assert_false(tok_is_special(m, 3));
    assert_false(tok_is_special(m, -1));
    assert_false(tok_is_special(m, 32000));
    size_t len;
    assert_string_equal(tok_id_to_token(g, 262, &len), "\xc4\xa0the");
    assert_int_equal(len, 5);
    assert_null(tok_id_to_token(g, 50257, NULL));
    assert_int_equal(tok_token_to_id(m, "<s>", 3), 1);
    assert_int_equal(tok_token_to_id(m, "\xe2\x96\x81the", 6), 272);
    assert_int_equal(tok_token_to_id(m, "no such token", 13), -1);

    tok_str s = {0};
    bool sp;
    assert_int_equal(tok_token_to_piece(g, 262, &s, &sp), ASA_OK);
    assert_string_equal(s.data, " the");
    assert_false(sp);
    assert_int_equal(tok_token_to_piece(m, 272, &s, &sp), ASA_OK);
    assert_string_equal(s.data, " the");
    assert_int_equal(tok_token_to_piece(m, 13, &s, &sp), ASA_OK); /* <0x0A> */
    assert_string_equal(s.data, "\n");
    assert_int_equal(tok_token_to_piece(m, 231, &s, &sp), ASA_OK); /* <0xE4> */
    assert_int_equal(s.len, 1);
    assert_int_equal((unsigned char)s.data[0], 0xE4);
    assert_int_equal(tok_token_to_piece(m, 1, &s, &sp), ASA_OK);
    assert_string_equal(s.data, "<s>");
    assert_true(sp);
    assert_int_equal(tok_token_to_piece(g, 50256, &s, &sp), ASA_OK);
    assert_string_equal(s.data, "<|endoftext|>");
    assert_true(sp);
    assert_int_equal(tok_token_to_piece(g, 99999, &s, &sp), ASA_ENOTFOUND);
    /* decode drops ids outside the vocabulary */
    int32_t ids[] = {464, 99999, -5, 2068};
    assert_int_equal(tok_decode(g, ids, 4, false, &s), ASA_OK);
    assert_string_equal(s.data, "The quick");
    tok_str_free(&s);
    tok_destroy(g);
    tok_destroy(m);
}

/* One tokenizer shared by several threads (word cache under contention):
 * every thread gets the reference ids for every text. */
typedef struct thr_arg {
    const tok_tokenizer *t;
    json_t *texts, *ev;
    int failures;
} thr_arg;

static void *thr_main(void *p) {
    thr_arg *a = p;
    tok_ids ids = {0};
    for (int round = 0; round < 3; round++) {
        size_t i;
        json_t *item;
        json_array_foreach(a->texts, i, item) {
            const char *name = json_string_value(json_object_get(item, "name"));
            json_t *jt = json_object_get(item, "text");
            if (tok_encode(a->t, json_string_value(jt), json_string_length(jt), true, &ids, NULL) ||
                !tt_ids_equal(ids.ids, ids.len, json_object_get(json_object_get(a->ev, name), "special")))
                a->failures++;
        }
    }
    tok_ids_free(&ids);
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    json_t *texts = tt_json("texts.json"), *exp = tt_json("expected_ids.json");
    assert_non_null(texts);
    assert_non_null(exp);
    for (int v = 0; v < 2; v++) {
        tok_tokenizer *t = tt_load(VOCABS[v]);
        assert_non_null(t);
        enum { N = 4 };
        pthread_t th[N];
        thr_arg args[N];
        for (int i = 0; i < N; i++) {
            args[i] = (thr_arg){t, texts, json_object_get(json_object_get(exp, "vocabs"), VOCABS[v]), 0};
            assert_int_equal(pthread_create(&th[i], NULL, thr_main, &args[i]), 0);
        }
        for (int i = 0; i < N; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
            assert_int_equal(args[i].failures, 0);
        }
        tok_destroy(t);
    }
    json_decref(texts);
    json_decref(exp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_gpt2),    cmocka_unit_test(test_parity_mistral),
        cmocka_unit_test(test_parity_variants),
        cmocka_unit_test(test_cache_consistency), cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_vocab_api),        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
