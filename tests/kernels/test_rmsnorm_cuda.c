/*
 * tests/kernels/test_rmsnorm_cuda.c - rmsnorm_cuda against rmsnorm_ref:
 * row lengths from 1 to RMSNORM_MAX_D (96 = a latent slice, 2048 = hidden),
 * every type combination, with and without the fused residual, padded
 * strides, poisoned outputs, and the launcher's checks.
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
#include "rmsnorm_cuda.h"

static void fill(void *p, kc_dtype t, size_t n, float scale) {
    if (t == KC_F32)
        kt_fill_f32(p, n, scale);
    else
        kt_fill_bf16(p, n, scale);
}

static void widen(const void *p, kc_dtype t, size_t n, float *out) {
    if (t == KC_F32)
        memcpy(out, p, n * 4);
    else
        kt_bf16_to_f32(p, out, n);
}

static void run_case(int rows, int D, int pad, bool with_res, kc_dtype xt, kc_dtype rt,
                     kc_dtype wt, kc_dtype yt) {
    const int64_t ld = D + pad;
    const size_t n = (size_t)rows * ld;
    const size_t xs = n * kc_dtype_size(xt), rs = n * kc_dtype_size(rt);
    const size_t ws = (size_t)D * kc_dtype_size(wt), ys = n * kc_dtype_size(yt);
    void *x = malloc(xs), *r = malloc(rs), *r0 = malloc(rs), *w = malloc(ws), *y = malloc(ys);
    assert_non_null(x);
    assert_non_null(r);
    assert_non_null(r0);
    assert_non_null(w);
    assert_non_null(y);
    fill(x, xt, n, 1.0f);
    fill(r, rt, n, 3.0f);
    memcpy(r0, r, rs);
    fill(w, wt, D, 1.0f);
    memset(y, 0xff, ys);
    rmsnorm_params p = {.rows = rows, .D = D, .eps = 1e-6f, .x = x, .x_type = xt,
                        .ldx = ld, .residual = with_res ? r : NULL, .r_type = rt, .ldr = ld,
                        .w = w, .w_type = wt, .y = y, .y_type = yt, .ldy = ld};
    rmsnorm_ref(&p);

    rmsnorm_params d = p;
    d.x = kt_dev_upload(x, xs);
    d.residual = with_res ? kt_dev_upload(r0, rs) : NULL;
    d.w = kt_dev_upload(w, ws);
    d.y = kt_dev_poison(ys);
    assert_int_equal(rmsnorm_cuda(&d, 0), ASA_OK);
    kt_sync();

    void *gy = malloc(ys), *gr = malloc(rs);
    assert_non_null(gy);
    assert_non_null(gr);
    kt_dev_download(gy, d.y, ys);
    float *a = malloc(n * 4), *b = malloc(n * 4);
    assert_non_null(a);
    assert_non_null(b);
    widen(gy, yt, n, a);
    widen(y, yt, n, b);
    /* Padding: untouched by both (poison / memset 0xff), compared as NaN. */
    const double rtol = yt == KC_BF16 ? 0x1p-7 : 1e-5;
    kt_check_close("y", a, b, NULL, n, 1e-6, rtol);
    if (with_res) {
        kt_dev_download(gr, d.residual, rs);
        widen(gr, rt, n, a);
        widen(r, rt, n, b);
        kt_check_close("residual", a, b, NULL, n, 0, 0);
    }
    kt_dev_free((void *)d.x);
    kt_dev_free(d.residual);
    kt_dev_free((void *)d.w);
    kt_dev_free(d.y);
    free(x);
    free(r);
    free(r0);
    free(w);
    free(y);
    free(gy);
    free(gr);
    free(a);
    free(b);
}

static void test_shapes(void **state) {
    (void)state;
    const int Ds_small[] = {1, 7, 96, 2048};
    const int Ds_large[] = {31, 2049, 5000, RMSNORM_MAX_D};
    for (size_t i = 0; i < sizeof Ds_small / sizeof Ds_small[0]; i++)
        for (int combo = 0; combo < 16; combo++) {
            const int D = Ds_small[i];
            run_case(1 + kt_randint(4), D, combo % 3, combo & 1, combo & 1 ? KC_F32 : KC_BF16,
                     combo & 2 ? KC_F32 : KC_BF16, combo & 4 ? KC_F32 : KC_BF16,
                     combo & 8 ? KC_F32 : KC_BF16);
        }
    if (kt_quick())
        return;
    for (size_t i = 0; i < sizeof Ds_large / sizeof Ds_large[0]; i++)
        for (int combo = 0; combo < 4; combo++)
            run_case(17, Ds_large[i], combo, combo & 1, KC_F32, combo & 2 ? KC_F32 : KC_BF16,
                     KC_BF16, combo & 1 ? KC_BF16 : KC_F32);
    run_case(300, 2048, 0, true, KC_F32, KC_F32, KC_BF16, KC_BF16);
}

static void test_checks(void **state) {
    (void)state;
    void *buf = kt_dev_alloc(1 << 16);
    rmsnorm_params ok = {.rows = 1, .D = 8, .eps = 1e-6f, .x = buf, .x_type = KC_F32,
                         .ldx = 8, .w = (char *)buf + 1024, .w_type = KC_F32,
                         .y = (char *)buf + 2048, .y_type = KC_F32, .ldy = 8};
    assert_int_equal(rmsnorm_params_check(&ok), ASA_OK);
    rmsnorm_params b = ok;
    b.D = RMSNORM_MAX_D + 1;
    b.ldx = b.ldy = b.D;
    assert_int_equal(rmsnorm_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.eps = 0;
    assert_int_equal(rmsnorm_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.ldy = 7;
    assert_int_equal(rmsnorm_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.x = (char *)buf + 2;
    assert_int_equal(rmsnorm_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.residual = buf;
    b.r_type = KC_F32;
    b.ldr = 4;
    assert_int_equal(rmsnorm_cuda(&b, 0), ASA_EINVAL);
    kt_sync();
    kt_dev_free(buf);
}

int main(void) {
    int rc = kt_init("test_rmsnorm_cuda");
    if (rc)
        return rc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
