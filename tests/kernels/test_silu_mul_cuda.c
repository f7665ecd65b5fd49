/*
 * tests/kernels/test_silu_mul_cuda.c - silu_mul_cuda against silu_mul_ref:
 * odd widths, type combinations, both kernel paths, padded strides (padding untouched),
 * poisoned outputs, extreme inputs, the second addend (gu2) and the bf16
 * residue output (out_lo), and the launcher's checks.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "asa.h"
#include "kt.h"
#include "silu_mul_cuda.h"

/* pair: a second addend gu2; lo (bf16 output only): the residue output */
static void run_case2(int rows, int F, int pad_in, int pad_out, kc_dtype it, kc_dtype ot,
                      bool pair, bool lo) {
    const int64_t ldi = 2 * (int64_t)F + pad_in, ldo = F + pad_out;
    const size_t ni = (size_t)rows * ldi, no = (size_t)rows * ldo;
    const size_t is = ni * kc_dtype_size(it), os = no * kc_dtype_size(ot);
    void *in = malloc(is), *in2 = malloc(is), *ref = malloc(os), *got = malloc(os);
    uint16_t *ref_lo = malloc(no * 2), *got_lo = malloc(no * 2);
    assert_non_null(in);
    assert_non_null(in2);
    assert_non_null(ref);
    assert_non_null(got);
    assert_non_null(ref_lo);
    assert_non_null(got_lo);
    float *tmp = malloc(ni * 4);
    assert_non_null(tmp);
    for (int k = 0; k < 2; k++) {
        void *dst = k ? in2 : in;
        kt_fill_f32(tmp, ni, k ? 0.02f : 3.0f); /* the second: a lo product's size */
        if (!k) {
            tmp[0] = 90.0f; /* silu saturates */
            if (ni > 2)
                tmp[1] = -90.0f;
        }
        if (it == KC_F32)
            memcpy(dst, tmp, is);
        else
            for (size_t i = 0; i < ni; i++)
                ((uint16_t *)dst)[i] = asa_f32_to_bf16(tmp[i]);
    }
    memset(ref, 0xff, os);
    memset(ref_lo, 0xff, no * 2);
    silu_mul_params p = {.rows = rows, .F = F, .gu = in, .gu_type = it, .ld_gu = ldi,
                         .out = ref, .out_type = ot, .ld_out = ldo, .gu2 = pair ? in2 : NULL,
                         .out_lo = lo ? ref_lo : NULL};
    silu_mul_ref(&p);
    silu_mul_params d = p;
    d.gu = kt_dev_upload(in, is);
    d.gu2 = pair ? kt_dev_upload(in2, is) : NULL;
    d.out = kt_dev_poison(os);
    d.out_lo = lo ? kt_dev_poison(no * 2) : NULL;
    assert_int_equal(silu_mul_cuda(&d, 0), ASA_OK);
    kt_sync();
    kt_dev_download(got, d.out, os);
    if (lo)
        kt_dev_download(got_lo, d.out_lo, no * 2);
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
    if (lo) { /* hi + lo: the f32 result to about 2^-16 */
        for (size_t i = 0; i < no; i++) {
            a[i] += asa_bf16_to_f32(got_lo[i]);
            b[i] += asa_bf16_to_f32(ref_lo[i]);
        }
        kt_check_close("out hi + lo", a, b, NULL, no, 1e-7, 2e-5);
    }
    kt_dev_free((void *)d.gu);
    if (pair)
        kt_dev_free((void *)d.gu2);
    kt_dev_free(d.out);
    if (lo)
        kt_dev_free(d.out_lo);
    free(in);
    free(in2);
    free(ref);
    free(got);
    free(ref_lo);
    free(got_lo);
    free(tmp);
    free(a);
    free(b);
}

static void run_case(int rows, int F, int pad_in, int pad_out, kc_dtype it, kc_dtype ot) {
    run_case2(rows, F, pad_in, pad_out, it, ot, false, false);
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
    /* the second addend and the residue, both paths */
    run_case2(3, 36, 4, 0, KC_F32, KC_BF16, true, true);
    run_case2(2, 37, 1, 1, KC_F32, KC_BF16, true, true);
    run_case2(2, 40, 0, 0, KC_BF16, KC_F32, true, false);
    run_case2(1, 44, 0, 4, KC_F32, KC_BF16, false, true);
    if (kt_quick())
        return;
    run_case2(16, 5632, 0, 0, KC_F32, KC_BF16, true, true);
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
    b = ok;
    b.out_type = KC_F32;
    b.out_lo = (uint16_t *)((char *)buf + 8192); /* lo with f32 output */
    assert_int_equal(silu_mul_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.out_lo = (uint16_t *)((char *)buf + 8193);
    assert_int_equal(silu_mul_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.gu2 = (char *)buf + 8194; /* f32 gu2 misaligned */
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
