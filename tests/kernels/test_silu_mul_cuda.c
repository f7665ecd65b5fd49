/*
 * tests/kernels/test_silu_mul_cuda.c - silu_mul_cuda against silu_mul_ref:
 * odd widths, type combinations, both kernel paths, padded strides (padding untouched),
 * poisoned outputs, extreme inputs, and the launcher's checks.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "asa.h"
#include "kt.h"
#include "silu_mul_cuda.h"

static void run_case(int rows, int F, int pad_in, int pad_out, kc_dtype it, kc_dtype ot) {
    const int64_t ldi = 2 * (int64_t)F + pad_in, ldo = F + pad_out;
    const size_t ni = (size_t)rows * ldi, no = (size_t)rows * ldo;
    const size_t is = ni * kc_dtype_size(it), os = no * kc_dtype_size(ot);
    void *in = malloc(is), *ref = malloc(os), *got = malloc(os);
    assert_non_null(in);
    assert_non_null(ref);
    assert_non_null(got);
    float *tmp = malloc(ni * 4);
    assert_non_null(tmp);
    kt_fill_f32(tmp, ni, 3.0f);
    tmp[0] = 90.0f; /* silu saturates */
    if (ni > 2)
        tmp[1] = -90.0f;
    if (it == KC_F32)
        memcpy(in, tmp, is);
    else
        for (size_t i = 0; i < ni; i++)
            ((uint16_t *)in)[i] = asa_f32_to_bf16(tmp[i]);
    memset(ref, 0xff, os);
    silu_mul_params p = {.rows = rows, .F = F, .gu = in, .gu_type = it, .ld_gu = ldi,
                         .out = ref, .out_type = ot, .ld_out = ldo};
    silu_mul_ref(&p);
    silu_mul_params d = p;
    d.gu = kt_dev_upload(in, is);
    d.out = kt_dev_poison(os);
    assert_int_equal(silu_mul_cuda(&d, 0), ASA_OK);
    kt_sync();
    kt_dev_download(got, d.out, os);
    float *a = malloc(no * 4), *b = malloc(no * 4);
    assert_non_null(a);
    assert_non_null(b);
    if (ot == KC_F32) {
        memcpy(a, got, os);
        memcpy(b, ref, os);
    } else {
        kt_bf16_to_f32(got, a, no);
        kt_bf16_to_f32(ref, b, no);
    }
    kt_check_close("out", a, b, NULL, no, 1e-7, ot == KC_BF16 ? 0x1p-7 : 2e-6);
    kt_dev_free((void *)d.gu);
    kt_dev_free(d.out);
    free(in);
    free(ref);
    free(got);
    free(tmp);
    free(a);
    free(b);
}

static void test_shapes(void **state) {
    (void)state;
    run_case(1, 1, 0, 0, KC_F32, KC_F32);
    run_case(2, 31, 3, 1, KC_BF16, KC_F32);
    run_case(3, 257, 0, 2, KC_F32, KC_BF16);
    run_case(1, 1001, 1, 0, KC_BF16, KC_BF16);
    /* the four-a-thread path (f32 in; F, strides multiples of 4), a
     * partial last block, padded strides, both output types */
    run_case(5, 36, 4, 0, KC_F32, KC_BF16);
    run_case(4, 516, 8, 4, KC_F32, KC_F32);
    run_case(2, 516, 0, 2, KC_F32, KC_BF16); /* ld_out % 4: the element path */
    if (kt_quick())
        return;
    run_case(1, 5632, 0, 0, KC_F32, KC_BF16);
    run_case(16, 5632, 0, 0, KC_BF16, KC_BF16);
    run_case(7, 11263, 5, 3, KC_F32, KC_F32);
}

static void test_checks(void **state) {
    (void)state;
    void *buf = kt_dev_alloc(1 << 16);
    silu_mul_params ok = {.rows = 1, .F = 8, .gu = buf, .gu_type = KC_F32, .ld_gu = 16,
                          .out = (char *)buf + 4096, .out_type = KC_BF16, .ld_out = 8};
    assert_int_equal(silu_mul_params_check(&ok), ASA_OK);
    silu_mul_params b = ok;
    b.ld_gu = 15;
    assert_int_equal(silu_mul_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.F = 0;
    assert_int_equal(silu_mul_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.out = (char *)buf + 4097;
    assert_int_equal(silu_mul_cuda(&b, 0), ASA_EINVAL);
    kt_sync();
    kt_dev_free(buf);
}

int main(void) {
    int rc = kt_init("test_silu_mul_cuda");
    if (rc)
        return rc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
