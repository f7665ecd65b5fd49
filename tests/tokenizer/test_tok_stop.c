/* Stop-string matcher: holdback, matches split across chunks, overlapping
 * prefixes, several stop strings, release at the end, chunking independence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"

typedef struct result {
    char text[512];
    int matched;
    int64_t at;
} result;

/* Feeds chunks (NULL-terminated list); returns what was released and the match. */
static result run(const char *const *stops, size_t n, const char *const *chunks, bool finish) {
    tok_stop *m;
    result r = {.matched = -1, .at = -1};
    tok_str out = {0};
    assert_int_equal(tok_stop_create(stops, n, &m), ASA_OK);
    for (size_t i = 0; chunks[i]; i++) {
        int idx;
        int64_t at;
        assert_int_equal(tok_stop_feed(m, chunks[i], strlen(chunks[i]), &out, &idx, &at), ASA_OK);
        if (idx >= 0) {
            assert_int_equal(r.matched, -1); /* only one match ever */
            r.matched = idx;
            r.at = at;
        }
    }
    if (finish)
        assert_int_equal(tok_stop_finish(m, &out), ASA_OK);
    assert_true(out.len < sizeof r.text);
    memcpy(r.text, out.data ? out.data : "", out.len);
    r.text[out.len] = 0;
    tok_str_free(&out);
    tok_stop_destroy(m);
    return r;
}

static void test_no_stops(void **state) {
    (void)state;
    const char *chunks[] = {"hello ", "world", NULL};
    result r = run(NULL, 0, chunks, false);
    assert_string_equal(r.text, "hello world");
    assert_int_equal(r.matched, -1);
}

static void test_holdback_and_release(void **state) {
    (void)state;
    const char *stops[] = {"STOP"};
    tok_stop *m;
    tok_str out = {0};
    int idx;
    assert_int_equal(tok_stop_create(stops, 1, &m), ASA_OK);
    assert_int_equal(tok_stop_feed(m, "abc ST", 6, &out, &idx, NULL), ASA_OK);
    assert_string_equal(out.data, "abc ");
    assert_int_equal(tok_stop_held(m), 2);
    assert_int_equal(idx, -1);
    assert_int_equal(tok_stop_feed(m, "O", 1, &out, &idx, NULL), ASA_OK);
    assert_string_equal(out.data, "abc ");
    assert_int_equal(tok_stop_held(m), 3);
    assert_int_equal(tok_stop_feed(m, "x", 1, &out, &idx, NULL), ASA_OK); /* not a stop */
    assert_string_equal(out.data, "abc STOx");
    assert_int_equal(tok_stop_held(m), 0);
    assert_int_equal(tok_stop_feed(m, " S", 2, &out, &idx, NULL), ASA_OK);
    assert_int_equal(tok_stop_finish(m, &out), ASA_OK); /* end: held text released */
    assert_string_equal(out.data, "abc STOx S");
    tok_str_free(&out);
    tok_stop_destroy(m);
}

static void test_split_across_many_chunks(void **state) {
    (void)state;
    const char *stops[] = {"</answer>"};
    const char *chunks[] = {"The answer is 42", "<", "/", "an", "sw", "e", "r", ">", " trailing", NULL};
    result r = run(stops, 1, chunks, true);
    assert_string_equal(r.text, "The answer is 42");
    assert_int_equal(r.matched, 0);
    assert_int_equal(r.at, 16);
}

static void test_overlapping_prefixes(void **state) {
    (void)state;
    /* "aab" must be found although "a" "a" starts look like a failed "ab" */
    const char *stops[] = {"aab"};
    const char *chunks[] = {"xa", "a", "a", "b", "tail", NULL};
    result r = run(stops, 1, chunks, true);
    assert_string_equal(r.text, "xa");
    assert_int_equal(r.matched, 0);
    assert_int_equal(r.at, 2);

    /* "ab" and "aab" both end at the same byte: the longer one wins */
    const char *stops2[] = {"ab", "aab"};
    const char *chunks2[] = {"x", "a", "a", "b", NULL};
    r = run(stops2, 2, chunks2, true);
    assert_string_equal(r.text, "x");
    assert_int_equal(r.matched, 1);

    /* the one that completes first wins, even if another starts earlier */
    const char *stops3[] = {"abcd", "bc"};
    const char *chunks3[] = {"zabcd", NULL};
    r = run(stops3, 2, chunks3, true);
    assert_string_equal(r.text, "za");
    assert_int_equal(r.matched, 1);
}

static void test_multiple_stops(void **state) {
    (void)state;
    const char *stops[] = {"\n\n", "User:", "###"};
    const char *chunks[] = {"Hi there", "\nUs", "er", ": more", NULL};
    result r = run(stops, 3, chunks, true);
    assert_string_equal(r.text, "Hi there\n");
    assert_int_equal(r.matched, 1);
    assert_int_equal(r.at, 9);
    const char *chunks2[] = {"a#", "#", "b##", "#", NULL};
    r = run(stops, 3, chunks2, true);
    assert_string_equal(r.text, "a##b");
    assert_int_equal(r.matched, 2);
}

static void test_utf8_stop(void **state) {
    (void)state;
    const char *stops[] = {"\xE3\x80\x82" "END"}; /* "。END" */
    const char *chunks[] = {"\xE4\xBD\xA0\xE5\xA5\xBD", "\xE3\x80\x82", "EN", NULL};
    result r = run(stops, 1, chunks, false);
    assert_string_equal(r.text, "\xE4\xBD\xA0\xE5\xA5\xBD"); /* "。EN" held */
    r = run(stops, 1, chunks, true);
    assert_string_equal(r.text, "\xE4\xBD\xA0\xE5\xA5\xBD\xE3\x80\x82" "EN");
}

/* Whatever the chunking, the released text and the match are the same. */
static void test_chunking_independence(void **state) {
    (void)state;
    const char *stops[] = {"abab", "bb", "xyz"};
    const char *texts[] = {"aababbab", "abaxyabab", "xxyxyz", "ababab", "aaaa", "abbb"};
    srand(7);
    for (size_t ti = 0; ti < sizeof texts / sizeof texts[0]; ti++) {
        const char *one[] = {texts[ti], NULL};
        result ref = run(stops, 3, one, true);
        for (int trial = 0; trial < 50; trial++) {
            char buf[64][16];
            const char *chunks[65];
            size_t n = 0, len = strlen(texts[ti]);
            for (size_t i = 0; i < len;) {
                size_t k = 1 + (size_t)rand() % 3;
                if (k > len - i)
                    k = len - i;
                memcpy(buf[n], texts[ti] + i, k);
                buf[n][k] = 0;
                chunks[n] = buf[n];
                n++;
                i += k;
            }
            chunks[n] = NULL;
            result r = run(stops, 3, chunks, true);
            assert_string_equal(r.text, ref.text);
            assert_int_equal(r.matched, ref.matched);
            assert_int_equal(r.at, ref.at);
        }
    }
}

static void test_after_match_and_errors(void **state) {
    (void)state;
    const char *stops[] = {"x"};
    tok_stop *m;
    tok_str out = {0};
    int idx;
    assert_int_equal(tok_stop_create(stops, 1, &m), ASA_OK);
    assert_int_equal(tok_stop_feed(m, "abxcd", 5, &out, &idx, NULL), ASA_OK);
    assert_int_equal(idx, 0);
    assert_int_equal(tok_stop_feed(m, "more", 4, &out, &idx, NULL), ASA_OK);
    assert_int_equal(idx, -1);
    assert_int_equal(tok_stop_finish(m, &out), ASA_OK);
    assert_string_equal(out.data, "ab");
    tok_stop_destroy(m);
    tok_str_free(&out);
    const char *bad[] = {"ok", ""};
    assert_int_equal(tok_stop_create(bad, 2, &m), ASA_EINVAL);
    tok_stop_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_stops),
        cmocka_unit_test(test_holdback_and_release),
        cmocka_unit_test(test_split_across_many_chunks),
        cmocka_unit_test(test_overlapping_prefixes),
        cmocka_unit_test(test_multiple_stops),
        cmocka_unit_test(test_utf8_stop),
        cmocka_unit_test(test_chunking_independence),
        cmocka_unit_test(test_after_match_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
