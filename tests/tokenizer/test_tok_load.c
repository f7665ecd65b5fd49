/* Loader: every unsupported feature is an error that names it; options that
 * the two test vocabularies do not use (ignore_merges, lstrip/rstrip,
 * single_word, Metaspace, Split behaviours) on small synthetic files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "tok.h"

/* vocab: <unk>=0 a=1 b=2 ab=3 c=4 abc=5 " "=6 ▁=7 ▁a=8 ▁ab=9 <x>=10 d=11 ▁c=12 */
#define VOCAB                                                                              \
    "\"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2, \"ab\": 3, \"c\": 4, \"abc\": 5, "     \
    "\" \": 6, \"\\u2581\": 7, \"\\u2581a\": 8, \"\\u2581ab\": 9, \"<x>\": 10, \"d\": 11, " \
    "\"\\u2581c\": 12}"

static char buf[8192];

/* A tokenizer.json with the given parts (JSON text, "null" for none). */
static const char *make(const char *model_extra, const char *added, const char *norm,
                        const char *pre, const char *post, const char *dec) {
    snprintf(buf, sizeof buf,
             "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, "
             "\"added_tokens\": %s, \"normalizer\": %s, \"pre_tokenizer\": %s, "
             "\"post_processor\": %s, \"decoder\": %s, \"model\": {\"type\": \"BPE\", "
             "\"dropout\": null, \"unk_token\": \"<unk>\", \"fuse_unk\": false, "
             "\"byte_fallback\": false, %s" VOCAB ", \"merges\": [\"a b\", \"ab c\", \"\\u2581 a\", "
             "\"\\u2581a b\", \"\\u2581 c\"]}}",
             added, norm, pre, post, dec, model_extra);
    return buf;
}

static void expect_unsupported(const char *json, const char *needle) {
    char msg[512] = "";
    asa_errbuf eb = {msg, sizeof msg};
    tok_tokenizer *t = NULL;
    int e = tok_load_json(json, strlen(json), NULL, &t, &eb);
    if (e != ASA_EUNSUPPORTED || !strstr(msg, needle))
        fprintf(stderr, "want ASA_EUNSUPPORTED naming '%s', got %s: '%s'\n", needle,
                asa_errname(e), msg);
    assert_int_equal(e, ASA_EUNSUPPORTED);
    assert_non_null(strstr(msg, needle));
    assert_null(t);
}

static void test_rejects_unsupported(void **state) {
    (void)state;
    char j[8192];
    /* the model */
    snprintf(j, sizeof j, "{\"model\": {\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": []}}");
    expect_unsupported(j, "Unigram");
    snprintf(j, sizeof j, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
    expect_unsupported(j, "WordPiece");
    expect_unsupported(make("\"extra_option\": 1, ", "[]", "null", "null", "null", "null"),
                       "extra_option");
    strcpy(j, make("", "[]", "null", "null", "null", "null"));
    char *p = strstr(j, "\"dropout\": null");
    memcpy(p, "\"dropout\": 0.1 ", 15);
    expect_unsupported(j, "dropout");
    /* normalizers */
#ifdef TOK_HAVE_UTF8PROC
    {   /* built with utf8proc: the Unicode normalizers load */
        const char *j = make("", "[]", "{\"type\": \"NFC\"}", "null", "null", "null");
        tok_tokenizer *t = NULL;
        assert_int_equal(tok_load_json(j, strlen(j), NULL, &t, NULL), ASA_OK);
        tok_destroy(t);
    }
#else
    expect_unsupported(make("", "[]", "{\"type\": \"NFC\"}", "null", "null", "null"), "NFC");
#endif
    expect_unsupported(make("", "[]", "{\"type\": \"BertNormalizer\"}", "null", "null", "null"),
                       "BertNormalizer");
    expect_unsupported(make("", "[]", "{\"type\": \"StripAccents\"}", "null", "null", "null"),
                       "StripAccents");
    expect_unsupported(make("", "[]", "{\"type\": \"Lowercase\"}", "null", "null", "null"),
                       "Lowercase");
    expect_unsupported(make("", "[]",
                            "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
                            "\"Prepend\", \"prepend\": \"x\"}, {\"type\": \"Precompiled\"}]}",
                            "null", "null", "null"),
                       "normalizer.normalizers[1]: normalizer type \"Precompiled\"");
    /* pre-tokenizers */
    expect_unsupported(make("", "[]", "null", "{\"type\": \"Whitespace\"}", "null", "null"),
                       "Whitespace");
    expect_unsupported(make("", "[]", "null", "{\"type\": \"BertPreTokenizer\"}", "null", "null"),
                       "BertPreTokenizer");
    expect_unsupported(make("", "[]", "null",
                            "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                            "\"brand_new_flag\": true}",
                            "null", "null"),
                       "brand_new_flag");
    expect_unsupported(make("", "[]", "null",
                            "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"x\"}, "
                            "\"behavior\": \"Sideways\", \"invert\": false}",
                            "null", "null"),
                       "Sideways");
    expect_unsupported(make("", "[]", "null",
                            "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                            "\"behavior\": \"Isolated\", \"invert\": false}",
                            "null", "null"),
                       "regex");
    /* decoders and post-processors */
    expect_unsupported(make("", "[]", "null", "null", "null", "{\"type\": \"WordPiece\"}"),
                       "WordPiece");
    expect_unsupported(make("", "[]", "null", "null", "{\"type\": \"Mystery\"}", "null"),
                       "Mystery");
    /* truncation / padding */
    strcpy(j, make("", "[]", "null", "null", "null", "null"));
    p = strstr(j, "\"truncation\": null");
    memcpy(p, "\"truncation\": 512 ", 18);
    expect_unsupported(j, "truncation");
}

/* An added token whose file id differs from the one the library gives it
 * (it re-adds tokens: vocabulary id if the content is in the vocabulary, else
 * the next id after the vocabulary): the library's id wins, as there. */
static void test_added_token_ids(void **state) {
    (void)state;
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    tok_tokenizer *t = NULL;
    const char *j = make("", "[{\"id\": 40, \"content\": \"zz\", \"special\": true}, "
                             "{\"id\": 41, \"content\": \"ab\", \"special\": false}]",
                         "null", "null", "null", "null");
    assert_int_equal(tok_load_json(j, strlen(j), NULL, &t, &eb), ASA_OK);
    assert_int_equal(tok_check(t), ASA_OK);
    assert_int_equal(tok_token_to_id(t, "zz", 2), 13); /* 13 vocabulary entries */
    assert_int_equal(tok_token_to_id(t, "ab", 2), 3);
    assert_true(tok_is_special(t, 13));
    assert_int_equal(tok_vocab_size(t), 14);
    tok_ids ids = {0};
    assert_int_equal(tok_encode(t, "azz", 3, false, &ids, NULL), ASA_OK);
    assert_int_equal(ids.len, 2);
    assert_int_equal(ids.ids[0], 1);
    assert_int_equal(ids.ids[1], 13);
    tok_ids_free(&ids);
    tok_destroy(t);
}

static void test_bad_files(void **state) {
    (void)state;
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    tok_tokenizer *t = NULL;
    assert_int_equal(tok_load_json("{not json", 9, NULL, &t, &eb), ASA_EFORMAT);
    assert_int_equal(tok_load_json("[]", 2, NULL, &t, &eb), ASA_EFORMAT);
    assert_int_equal(tok_load("/nonexistent/dir/tokenizer.json", &t, &eb), ASA_EIO);
    assert_non_null(strstr(msg, "/nonexistent/dir/tokenizer.json"));
    const char *j = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a q\"]}}";
    assert_int_equal(tok_load_json(j, strlen(j), NULL, &t, &eb), ASA_EFORMAT);
    assert_null(t);
    tok_destroy(NULL);
}

static void encode_eq(tok_tokenizer *t, const char *text, bool special, const int32_t *want,
                      size_t n) {
    tok_ids ids = {0};
    assert_int_equal(tok_encode(t, text, strlen(text), special, &ids, NULL), ASA_OK);
    if (ids.len != n || memcmp(ids.ids, want, n * sizeof *want)) {
        fprintf(stderr, "'%s': got", text);
        for (size_t i = 0; i < ids.len; i++)
            fprintf(stderr, " %d", (int)ids.ids[i]);
        fprintf(stderr, "\n");
    }
    assert_int_equal(ids.len, n);
    assert_memory_equal(ids.ids, want, n * sizeof *want);
    tok_ids_free(&ids);
}

static tok_tokenizer *load(const char *json) {
    char msg[512] = "";
    asa_errbuf eb = {msg, sizeof msg};
    tok_tokenizer *t = NULL;
    int e = tok_load_json(json, strlen(json), NULL, &t, &eb);
    if (e)
        fprintf(stderr, "load: %s %s\n", asa_errname(e), msg);
    assert_int_equal(e, ASA_OK);
    assert_int_equal(tok_check(t), ASA_OK);
    return t;
}

static void test_ignore_merges(void **state) {
    (void)state;
    /* "abc" is in the vocabulary; merges alone also reach it ("a b", "ab c"),
     * so use "abcd": merges give ab c d -> abc d; whole-word lookup is the
     * difference only for "abc" with merges removed */
    tok_tokenizer *t = load(make("\"ignore_merges\": false, ", "[]", "null", "null", "null", "null"));
    encode_eq(t, "abcd", false, (int32_t[]){5, 11}, 2);
    encode_eq(t, "ba", false, (int32_t[]){2, 1}, 2);
    encode_eq(t, "a?b", false, (int32_t[]){1, 0, 2}, 3); /* ? is unknown */
    tok_destroy(t);
    char j[8192];
    strcpy(j, make("\"ignore_merges\": true, ", "[]", "null", "null", "null", "null"));
    char *p = strstr(j, "\"merges\": [");
    strcpy(p, "\"merges\": [\"a b\"]}}");
    t = load(j);
    encode_eq(t, "abc", false, (int32_t[]){5}, 1);    /* the whole word is a token */
    encode_eq(t, "abcd", false, (int32_t[]){3, 4, 11}, 3);
    tok_destroy(t);
}

static void test_added_token_flags(void **state) {
    (void)state;
    /* <x> (id 10) with lstrip and rstrip: the spaces around it vanish */
    tok_tokenizer *t = load(make("", "[{\"id\": 10, \"content\": \"<x>\", \"lstrip\": true, "
                                     "\"rstrip\": true, \"normalized\": false, \"special\": true}]",
                                 "null", "null", "null", "null"));
    encode_eq(t, "a  <x>  b", false, (int32_t[]){1, 10, 2}, 3);
    encode_eq(t, "<x><x>", false, (int32_t[]){10, 10}, 2);
    tok_str s = {0};
    int32_t ids[] = {1, 10, 2};
    assert_int_equal(tok_decode(t, ids, 3, true, &s), ASA_OK);
    assert_string_equal(s.data, "a b"); /* no decoder: tokens joined by spaces */
    tok_str_free(&s);
    tok_destroy(t);
    /* without the flags the spaces stay */
    t = load(make("", "[{\"id\": 10, \"content\": \"<x>\", \"normalized\": false, \"special\": true}]",
                  "null", "null", "null", "null"));
    encode_eq(t, "a <x> b", false, (int32_t[]){1, 6, 10, 6, 2}, 5);
    tok_destroy(t);
    /* single_word: "ab" as an added token only matches as a whole word */
    t = load(make("", "[{\"id\": 3, \"content\": \"ab\", \"single_word\": true, "
                      "\"normalized\": false, \"special\": false}]",
                  "null", "null", "null", "null"));
    encode_eq(t, "ab cab abc ab", false, (int32_t[]){3, 6, 4, 3, 6, 5, 6, 3}, 8);
    tok_destroy(t);
}

static void test_metaspace_and_templates(void **state) {
    (void)state;
    const char *pre = "{\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", "
                      "\"prepend_scheme\": \"first\", \"split\": false}";
    const char *post = "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
                       "{\"id\": \"<x>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", "
                       "\"type_id\": 0}}, {\"SpecialToken\": {\"id\": \"d\", \"type_id\": 0}}], "
                       "\"pair\": [], \"special_tokens\": {\"<x>\": {\"id\": \"<x>\", \"ids\": "
                       "[10], \"tokens\": [\"<x>\"]}, \"d\": {\"id\": \"d\", \"ids\": [11], "
                       "\"tokens\": [\"d\"]}}}";
    const char *dec = "{\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", "
                      "\"prepend_scheme\": \"first\", \"split\": false}";
    tok_tokenizer *t = load(make("", "[{\"id\": 10, \"content\": \"<x>\", \"normalized\": false, "
                                     "\"special\": true}]",
                                 "null", pre, post, dec));
    /* "ab c" -> "▁ab▁c" (prepended: the text starts at offset 0); merges by
     * rank: a+b first, then ▁+c; "▁ a" no longer applies */
    encode_eq(t, "ab c", true, (int32_t[]){10, 7, 3, 12, 11}, 5);
    encode_eq(t, "ab c", false, (int32_t[]){7, 3, 12}, 3);
    /* after an added token the piece does not start at offset 0: no "▁" */
    encode_eq(t, "<x>ab", false, (int32_t[]){10, 3}, 2);
    assert_int_equal(tok_bos_id(t), 10);
    tok_str s = {0};
    int32_t ids[] = {10, 7, 3, 12, 11};
    assert_int_equal(tok_decode(t, ids, 5, true, &s), ASA_OK);
    assert_string_equal(s.data, "ab cd");
    tok_str_free(&s);
    tok_destroy(t);
}

static void test_split_behaviours(void **state) {
    (void)state;
    /* split "abXab" around "X"... use "c" as the delimiter on "abcab" */
    static const struct {
        const char *beh;
        int32_t ids[6];
        size_t n;
    } cases[] = {
        {"Removed", {3, 3}, 2},            /* ab | ab */
        {"Isolated", {3, 4, 3}, 3},        /* ab | c | ab */
        {"MergedWithPrevious", {5, 3}, 2}, /* abc | ab */
        {"MergedWithNext", {3, 4, 3}, 3},  /* ab | cab -> c ab */
        {"Contiguous", {3, 4, 3}, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char pre[256];
        snprintf(pre, sizeof pre,
                 "{\"type\": \"Split\", \"pattern\": {\"String\": \"c\"}, \"behavior\": \"%s\", "
                 "\"invert\": false}",
                 cases[i].beh);
        tok_tokenizer *t = load(make("", "[]", "null", pre, "null", "null"));
        encode_eq(t, "abcab", false, cases[i].ids, cases[i].n);
        tok_destroy(t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rejects_unsupported), cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_added_token_ids),
        cmocka_unit_test(test_ignore_merges),       cmocka_unit_test(test_added_token_flags),
        cmocka_unit_test(test_metaspace_and_templates), cmocka_unit_test(test_split_behaviours),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
