/* Incremental decoding: fed one id at a time, a stream emits only valid UTF-8
 * and its output (plus flush) equals the one-shot decode, on every test text
 * of both vocabularies; characters split across tokens are held back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tok_test_util.h"

static void cat(tok_str *all, const tok_str *chunk) {
    char *p = realloc(all->data, all->len + chunk->len + 1);
    assert_non_null(p);
    all->data = p;
    if (chunk->len)
        memcpy(all->data + all->len, chunk->data, chunk->len);
    all->len += chunk->len;
    all->data[all->len] = 0;
    all->cap = all->len + 1;
}

/* Streams ids[n]; checks every chunk is valid UTF-8 and the whole equals
 * tok_decode.  Returns how many pushes emitted text. */
static size_t stream_check(const tok_tokenizer *t, const int32_t *ids, size_t n, bool skip,
                           const char *what) {
    tok_stream *st = NULL;
    tok_str all = {0}, chunk = {0}, want = {0};
    size_t emitting = 0;
    assert_int_equal(tok_stream_create(t, skip, &st), ASA_OK);
    for (size_t i = 0; i < n; i++) {
        chunk.len = 0;
        assert_int_equal(tok_stream_push(st, ids[i], &chunk), ASA_OK);
        if (!chunk.len)
            continue;
        emitting++;
        if (tok_utf8_valid_prefix(chunk.data, chunk.len) != chunk.len) {
            fprintf(stderr, "%s: id %zu emitted invalid UTF-8\n", what, i);
            fail();
        }
        cat(&all, &chunk);
    }
    chunk.len = 0;
    assert_int_equal(tok_stream_flush(st, &chunk), ASA_OK);
    assert_int_equal(tok_utf8_valid_prefix(chunk.data ? chunk.data : "", chunk.len), chunk.len);
    cat(&all, &chunk);
    assert_int_equal(tok_decode(t, ids, n, skip, &want), ASA_OK);
    if (all.len != want.len || memcmp(all.data, want.data, want.len)) {
        fprintf(stderr, "%s skip=%d:\n  stream '%.*s'\n  decode '%.*s'\n", what, skip,
                (int)(all.len > 300 ? 300 : all.len), all.data,
                (int)(want.len > 300 ? 300 : want.len), want.data);
        fail();
    }
    tok_str_free(&all);
    tok_str_free(&chunk);
    tok_str_free(&want);
    tok_stream_destroy(st);
    return emitting;
}

static void all_texts(const char *v) {
    json_t *texts = tt_json("texts.json");
    assert_non_null(texts);
    tok_tokenizer *t = tt_load_any(v);
    assert_non_null(t);
    tok_ids ids = {0};
    size_t i;
    json_t *item;
    json_array_foreach(texts, i, item) {
        json_t *jt = json_object_get(item, "text");
        char what[128];
        snprintf(what, sizeof what, "%s/%s", v, json_string_value(json_object_get(item, "name")));
        assert_int_equal(tok_encode(t, json_string_value(jt), json_string_length(jt), true,
                                    &ids, NULL), ASA_OK);
        for (int skip = 0; skip < 2; skip++)
            stream_check(t, ids.ids, ids.len, skip, what);
    }
    tok_ids_free(&ids);
    tok_destroy(t);
    json_decref(texts);
}

static void test_stream_gpt2(void **state) {
    (void)state;
    all_texts("gpt2");
}

static void test_stream_mistral(void **state) {
    (void)state;
    all_texts("mistral");
}

/* The layout variants of variants.json (Metaspace decoders among them). */
static void test_stream_variants(void **state) {
    (void)state;
    json_t *variants = tt_json("variants.json");
    assert_non_null(variants);
    const char *k;
    json_t *val;
    json_object_foreach(variants, k, val) {
#ifndef TOK_HAVE_UTF8PROC
        if (json_object_get(val, "needs"))
            continue; /* built without utf8proc */
#endif
        if (k[0] != '_')
            all_texts(k);
    }
    json_decref(variants);
}

/* A 4-byte emoji as <0xF0><0x9F><0x98><0x80> (Mistral byte fallback) or as
 * byte-level pieces (GPT-2): nothing comes out until the last byte. */
static void test_split_characters(void **state) {
    (void)state;
    tok_tokenizer *m = tt_load("mistral"), *g = tt_load("gpt2");
    assert_non_null(m);
    assert_non_null(g);
    const int32_t emoji[] = {3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80}; /* U+1F600 */
    tok_stream *st;
    tok_str out = {0};
    assert_int_equal(tok_stream_create(m, false, &st), ASA_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tok_stream_push(st, emoji[i], &out), ASA_OK);
        assert_int_equal(out.len, 0);
    }
    assert_int_equal(tok_stream_push(st, emoji[3], &out), ASA_OK);
    assert_string_equal(out.data, "\xF0\x9F\x98\x80");
    /* an incomplete character at the end is flushed as U+FFFD, like decode */
    out.len = 0;
    assert_int_equal(tok_stream_push(st, 3 + 0xE4, &out), ASA_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(tok_stream_flush(st, &out), ASA_OK);
    assert_string_equal(out.data, "\xEF\xBF\xBD");
    /* a broken run in the middle: the good character was already out, the
     * bad byte becomes U+FFFD and the text goes on */
    out.len = 0;
    const int32_t mixed[] = {3 + 0xE4, 3 + 0xB8, 3 + 0xAD, 3 + 0xE4, 22557};
    for (int i = 0; i < 5; i++)
        assert_int_equal(tok_stream_push(st, mixed[i], &out), ASA_OK);
    assert_int_equal(tok_stream_flush(st, &out), ASA_OK);
    assert_string_equal(out.data, "\xE4\xB8\xAD\xEF\xBF\xBD Hello");
    tok_stream_destroy(st);

    /* GPT-2: the emoji's bytes come as several byte-level tokens */
    tok_ids ids = {0};
    const char *text = "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD ok \xE4\xBD\xA0\xE5\xA5\xBD";
    assert_int_equal(tok_encode(g, text, strlen(text), false, &ids, NULL), ASA_OK);
    assert_true(ids.len > 4);
    size_t emitted = stream_check(g, ids.ids, ids.len, false, "gpt2/emoji");
    assert_true(emitted < ids.len); /* some pushes had to wait */
    /* Mistral: Chinese characters via byte fallback and ordinary pieces */
    assert_int_equal(tok_encode(m, text, strlen(text), true, &ids, NULL), ASA_OK);
    stream_check(m, ids.ids, ids.len, true, "mistral/emoji");
    tok_ids_free(&ids);
    tok_str_free(&out);
    tok_destroy(m);
    tok_destroy(g);
}

/* The SentencePiece leading space: the first word loses it, later words keep
 * it, exactly as the one-shot decode. */
static void test_sentencepiece_space(void **state) {
    (void)state;
    tok_tokenizer *m = tt_load("mistral");
    assert_non_null(m);
    tok_ids ids = {0};
    assert_int_equal(tok_encode(m, "Hello world", 11, true, &ids, NULL), ASA_OK);
    tok_stream *st;
    tok_str out = {0};
    assert_int_equal(tok_stream_create(m, true, &st), ASA_OK);
    for (size_t i = 0; i < ids.len; i++)
        assert_int_equal(tok_stream_push(st, ids.ids[i], &out), ASA_OK);
    assert_int_equal(tok_stream_flush(st, &out), ASA_OK);
    assert_string_equal(out.data, "Hello world");
    /* a reused stream starts over */
    out.len = 0;
    for (size_t i = 0; i < ids.len; i++)
        assert_int_equal(tok_stream_push(st, ids.ids[i], &out), ASA_OK);
    assert_int_equal(tok_stream_flush(st, &out), ASA_OK);
    assert_string_equal(out.data, "Hello world");
    tok_stream_destroy(st);
    tok_str_free(&out);
    tok_ids_free(&ids);
    tok_destroy(m);
}

/* After a prompt, the first generated word keeps its leading space. */
static void test_prime(void **state) {
    (void)state;
    static const char *const vocabs[] = {"mistral", "gpt2"};
    static const char *const paris[] = {"\xe2\x96\x81Paris", "\xc4\xa0Paris"};
    for (int v = 0; v < 2; v++) {
        tok_tokenizer *t = tt_load(vocabs[v]);
        assert_non_null(t);
        tok_ids ids = {0};
        const char *prompt = "The capital of France is";
        assert_int_equal(tok_encode(t, prompt, strlen(prompt), true, &ids, NULL), ASA_OK);
        int32_t p = tok_token_to_id(t, paris[v], strlen(paris[v]));
        assert_true(p >= 0);
        int32_t dot = tok_token_to_id(t, ".", 1);
        assert_true(dot >= 0);
        tok_stream *st;
        tok_str out = {0};
        for (int skip = 0; skip < 2; skip++) {
            assert_int_equal(tok_stream_create(t, skip, &st), ASA_OK);
            assert_int_equal(tok_stream_prime(st, ids.ids, ids.len), ASA_OK);
            out.len = 0;
            assert_int_equal(tok_stream_push(st, p, &out), ASA_OK);
            assert_int_equal(tok_stream_push(st, dot, &out), ASA_OK);
            assert_int_equal(tok_stream_flush(st, &out), ASA_OK);
            assert_string_equal(out.data, " Paris.");
            tok_stream_destroy(st);
        }
        /* without a prompt the first word loses its space (SentencePiece) */
        assert_int_equal(tok_stream_create(t, true, &st), ASA_OK);
        out.len = 0;
        assert_int_equal(tok_stream_push(st, p, &out), ASA_OK);
        assert_int_equal(tok_stream_flush(st, &out), ASA_OK);
        assert_string_equal(out.data, v == 0 ? "Paris" : " Paris");
        tok_stream_destroy(st);
        tok_str_free(&out);
        tok_ids_free(&ids);
        tok_destroy(t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_gpt2),
        cmocka_unit_test(test_stream_mistral),
        cmocka_unit_test(test_stream_variants),
        cmocka_unit_test(test_split_characters),
        cmocka_unit_test(test_sentencepiece_space),
        cmocka_unit_test(test_prime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
