/* Unit tests for common/: error table, errbuf, arena, bf16 conversion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "asa.h"

static void test_strerror(void **state) {
    (void)state;
    assert_string_equal(asa_strerror(ASA_OK), "success");
    assert_string_equal(asa_strerror(ASA_ENOMEM), "out of memory");
    assert_string_equal(asa_strerror(12345), "unknown error");
    assert_string_equal(asa_errname(ASA_ENOSPACE), "ASA_ENOSPACE");
}

static void test_errf(void **state) {
    (void)state;
    char b[32];
    asa_errbuf eb = {b, sizeof b};
    assert_int_equal(asa_errf(&eb, ASA_EFORMAT, "tensor %s", "x.weight"), ASA_EFORMAT);
    assert_string_equal(b, "tensor x.weight");
    assert_int_equal(asa_errf(NULL, ASA_EINVAL, "ignored"), ASA_EINVAL);
}

static void test_arena(void **state) {
    (void)state;
    asa_arena *a = asa_arena_create(64);
    assert_non_null(a);
    char *s = asa_arena_strdup(a, "hello");
    assert_string_equal(s, "hello");
    for (int i = 0; i < 100; i++) {
        unsigned char *p = asa_arena_alloc(a, (size_t)i * 7 + 1);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xab, (size_t)i * 7 + 1);
    }
    void *big = asa_arena_alloc(a, 100000);
    assert_non_null(big);
    assert_true(asa_arena_used(a) >= 100000);
    asa_arena_destroy(a);
    asa_arena_destroy(NULL);
}

static void test_bf16(void **state) {
    (void)state;
    /* Exact values survive the round trip; rounding is to nearest even. */
    float vals[] = {0.0f, 1.0f, -2.5f, 65280.0f, 0.15625f};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++)
        assert_true(asa_bf16_to_f32(asa_f32_to_bf16(vals[i])) == vals[i]);
    /* 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (1.0). */
    assert_true(asa_bf16_to_f32(asa_f32_to_bf16(1.0f + 1.0f / 256)) == 1.0f);
    assert_true(asa_bf16_to_f32(asa_f32_to_bf16(1.0f + 3.0f / 256)) == 1.0f + 4.0f / 256);
    float nan = asa_bf16_to_f32(asa_f32_to_bf16(__builtin_nanf("")));
    assert_true(nan != nan);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_errf),
        cmocka_unit_test(test_arena),
        cmocka_unit_test(test_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
