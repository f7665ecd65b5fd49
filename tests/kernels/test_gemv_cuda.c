/*
 * tests/kernels/test_gemv_cuda.c - gemv_bf16_cuda against gemv_bf16_ref:
 * odd shapes, both x types, f32 and bf16 outputs, padded strides (padding
 * must stay untouched), poisoned outputs, NaN/Inf propagation, the
 * batch-invariance of the order contract, and the launcher's checks; the
 * fused x modes (RMSNorm with the residual add, SiLU-gate) against the
 * unfused reference.
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
#include "gemv_cuda.h"
#include "kt.h"

typedef struct gemv_case {
    int M, N, K;
    kc_dtype xt;
    int pad_x, pad_w, pad_y; /* extra elements per row */
    bool out_f32, out_bf16;
    bool poison_values;      /* NaN in x, Inf in W */
    int gt;                  /* threads per group, 0 = automatic */
} gemv_case;

/* Runs one case; when y_out is non-NULL, stores the f32 result there. */
static void run_case(const gemv_case *c, float *y_out, const uint16_t *w_in, const void *x_in) {
    const int64_t ldx = c->K + c->pad_x, ldw = c->K + c->pad_w, ldy = c->N + c->pad_y;
    const size_t xs = (size_t)c->M * ldx * kc_dtype_size(c->xt);
    const size_t ws = (size_t)c->N * ldw * 2, ys = (size_t)c->M * ldy;
    void *x = malloc(xs);
    uint16_t *w = malloc(ws);
    assert_non_null(x);
    assert_non_null(w);
    if (x_in)
        memcpy(x, x_in, xs);
    else if (c->xt == KC_F32)
        kt_fill_f32(x, xs / 4, 1.0f);
    else
        kt_fill_bf16(x, xs / 2, 1.0f);
    if (w_in)
        memcpy(w, w_in, ws);
    else
        kt_fill_bf16(w, ws / 2, 0.05f);
    if (c->poison_values) {
        const int m = c->M / 2;
        if (c->xt == KC_F32)
            ((float *)x)[(int64_t)m * ldx + c->K / 3] = NAN;
        else
            ((uint16_t *)x)[(int64_t)m * ldx + c->K / 3] = 0x7fc0;
        w[(int64_t)(c->N / 2) * ldw + c->K / 2] = 0x7f80; /* +inf */
    }

    /* Reference, and its scale sum |x| |w| for the tolerance. */
    float *ref = malloc(ys * sizeof *ref), *scale = malloc(ys * sizeof *scale);
    uint16_t *ref16 = malloc(ys * 2);
    assert_non_null(ref);
    assert_non_null(scale);
    assert_non_null(ref16);
    gemv_params p = {.M = c->M, .N = c->N, .K = c->K, .x = x, .x_type = c->xt, .ldx = ldx,
                     .w = w, .ldw = ldw, .y_f32 = ref, .y_bf16 = ref16, .ldy = ldy};
    gemv_bf16_ref(&p);
    {
        void *ax = malloc(xs);
        uint16_t *aw = malloc(ws);
        assert_non_null(ax);
        assert_non_null(aw);
        for (size_t i = 0; i < ws / 2; i++)
            aw[i] = w[i] & 0x7fff;
        if (c->xt == KC_F32)
            for (size_t i = 0; i < xs / 4; i++)
                ((float *)ax)[i] = fabsf(((float *)x)[i]);
        else
            for (size_t i = 0; i < xs / 2; i++)
                ((uint16_t *)ax)[i] = ((uint16_t *)x)[i] & 0x7fff;
        gemv_params pa = p;
        pa.x = ax;
        pa.w = aw;
        pa.y_f32 = scale;
        pa.y_bf16 = NULL;
        gemv_bf16_ref(&pa);
        free(ax);
        free(aw);
    }

    /* Device run on poisoned outputs. */
    void *dx = kt_dev_upload(x, xs);
    void *dw = kt_dev_upload(w, ws);
    float *dy = c->out_f32 ? kt_dev_poison(ys * 4) : NULL;
    uint16_t *dy16 = c->out_bf16 ? kt_dev_poison(ys * 2) : NULL;
    gemv_params d = p;
    d.x = dx;
    d.w = dw;
    d.y_f32 = dy;
    d.y_bf16 = dy16;
    assert_int_equal(gemv_bf16_cuda_gt(&d, c->gt, 0), ASA_OK);
    kt_sync();

    float *got = malloc(ys * sizeof *got), *want = malloc(ys * sizeof *want);
    float *sc = malloc(ys * sizeof *sc);
    uint16_t *got16 = malloc(ys * 2);
    assert_non_null(got);
    assert_non_null(want);
    assert_non_null(sc);
    assert_non_null(got16);
    /* Compare the N columns of each row; padding must still be 0xff. */
    size_t nv = 0;
    if (dy) {
        kt_dev_download(got, dy, ys * 4);
        nv = kt_rows_dense(got, ref, scale, c->M, c->N, ldy, got, want, sc);
        kt_check_close("y_f32", got, want, sc, nv, 1e-6, 2e-5);
        if (y_out)
            memcpy(y_out, got, nv * sizeof *got);
    }
    if (dy16) {
        kt_dev_download(got16, dy16, ys * 2);
        nv = 0;
        for (int m = 0; m < c->M; m++) {
            for (int64_t j = c->N; j < ldy; j++)
                assert_int_equal(got16[m * ldy + j], 0xffff);
            for (int n = 0; n < c->N; n++) {
                got[nv] = asa_bf16_to_f32(got16[m * ldy + n]);
                want[nv] = asa_bf16_to_f32(ref16[m * ldy + n]);
                /* one bf16 rounding apart at most, plus the f32 error */
                sc[nv] = scale[m * ldy + n] * 2e-5f / 0x1p-7f + fabsf(want[nv]);
                nv++;
            }
        }
        kt_check_close("y_bf16", got, want, sc, nv, 1e-6, 0x1p-7);
    }
    kt_dev_free(dx);
    kt_dev_free(dw);
    kt_dev_free(dy);
    kt_dev_free(dy16);
    free(x);
    free(w);
    free(ref);
    free(ref16);
    free(scale);
    free(got);
    free(got16);
    free(want);
    free(sc);
}

static void test_shapes(void **state) {
    (void)state;
    const gemv_case small[] = {
        {1, 1, 8, KC_F32, 0, 0, 0, true, false, false, 0},
        {1, 3, 24, KC_BF16, 8, 8, 1, true, true, false, 0},
        {3, 7, 40, KC_F32, 4, 0, 3, true, true, false, 0},
        {2, 65, 264, KC_BF16, 0, 16, 0, false, true, false, 0},
        {5, 33, 2056, KC_F32, 0, 0, 2, true, false, false, 0},
        {16, 19, 136, KC_BF16, 8, 0, 5, true, true, false, 0},
        {7, 9, 72, KC_F32, 0, 0, 0, true, true, true, 0},
    };
    const gemv_case large[] = {
        {1, 2048, 2048, KC_F32, 0, 0, 0, true, true, false, 0},
        {1, 2047, 5632, KC_BF16, 0, 0, 0, true, false, false, 0},
        {8, 1031, 2048, KC_F32, 4, 8, 1, true, true, false, 0},
        {16, 517, 1032, KC_BF16, 0, 0, 0, true, true, true, 0},
        {13, 300, 4104, KC_F32, 0, 0, 0, true, false, false, 0},
        {4, 6001, 256, KC_BF16, 0, 0, 0, false, true, false, 0},
    };
    const int gts[] = {0, 32, 64, 128, 256};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++)
        for (size_t g = 0; g < sizeof gts / sizeof gts[0]; g++) {
            gemv_case c = small[i];
            c.gt = gts[g];
            run_case(&c, NULL, NULL, NULL);
        }
    if (kt_quick())
        return;
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++) {
        gemv_case c = large[i];
        c.gt = gts[i % 5];
        run_case(&c, NULL, NULL, NULL);
    }
    /* Every M from 1 to 16 with both x types. */
    for (int M = 1; M <= GEMV_MAX_M; M++) {
        gemv_case c = {M, 45, 328, M % 2 ? KC_F32 : KC_BF16, 8 * (M % 3), 0, M % 4, true, true, false, 0};
        run_case(&c, NULL, NULL, NULL);
    }
}

/* y[m] computed within a batch of 16 equals y[m] computed alone, bitwise. */
static void test_batch_invariance(void **state) {
    (void)state;
    const int N = 211, K = 1544, M = 16;
    uint16_t *w = malloc((size_t)N * K * 2);
    float *x = malloc((size_t)M * K * 4);
    float *yb = malloc((size_t)M * N * 4), *y1 = malloc((size_t)N * 4);
    assert_non_null(w);
    assert_non_null(x);
    assert_non_null(yb);
    assert_non_null(y1);
    kt_fill_bf16(w, (size_t)N * K, 0.05f);
    kt_fill_f32(x, (size_t)M * K, 1.0f);
    gemv_case c = {M, N, K, KC_F32, 0, 0, 0, true, false, false, 0};
    run_case(&c, yb, w, x);
    for (int m = 0; m < M; m += 5) {
        gemv_case c1 = {1, N, K, KC_F32, 0, 0, 0, true, false, false, 0};
        run_case(&c1, y1, w, x + (size_t)m * K);
        assert_memory_equal(y1, yb + (size_t)m * N, (size_t)N * 4);
    }
    free(w);
    free(x);
    free(yb);
    free(y1);
}

/* A fused x mode (GEMV_X_NORM with/without residual and normalised rows,
 * GEMV_X_SILU) against the reference: y, and the side outputs of block 0
 * (the residual sum exactly: one f32 add on both sides), padding kept. */
static void run_fused(gemv_xmode mode, int M, int N, int K, bool res, bool xn, int gt) {
    const int64_t ldx = (mode == GEMV_X_SILU ? 2 * (int64_t)K : K) + 4 * (M % 2 + 1);
    const int64_t ldy = N + 3;
    const size_t xs = (size_t)M * ldx, ys = (size_t)M * ldy;
    float *x = malloc(xs * 4), *r = malloc(xs * 4), *nw = malloc((size_t)K * 4);
    uint16_t *w = malloc((size_t)N * K * 2);
    float *yref = malloc(ys * 4), *rref = malloc(xs * 4), *nref = malloc(xs * 4);
    assert_non_null(x);
    assert_non_null(r);
    assert_non_null(nw);
    assert_non_null(w);
    assert_non_null(yref);
    assert_non_null(rref);
    assert_non_null(nref);
    kt_fill_f32(x, xs, mode == GEMV_X_SILU ? 3.0f : 1.0f);
    kt_fill_f32(r, xs, 2.0f);
    for (int k = 0; k < K; k++)
        nw[k] = kt_uniform(0.5f, 1.5f);
    kt_fill_bf16(w, (size_t)N * K, 0.05f);
    memset(rref, 0xff, xs * 4);
    memset(nref, 0xff, xs * 4);
    memset(yref, 0xff, ys * 4); /* padding: NaN on both sides */
    gemv_params p = {.M = M, .N = N, .K = K, .x = x, .x_type = KC_F32, .ldx = ldx, .w = w,
                     .ldw = K, .y_f32 = yref, .ldy = ldy, .x_mode = mode};
    if (mode == GEMV_X_NORM) {
        p.res = res ? r : NULL;
        p.res_out = res ? rref : NULL;
        p.xn_out = xn ? nref : NULL;
        p.norm_w = nw;
        p.eps = 1e-5f;
    }
    assert_int_equal(gemv_params_check(&p), ASA_OK);
    gemv_bf16_ref(&p);
    /* the tolerance's scale: |x'| . |W| from the reference's x' */
    float *scale = calloc(ys, 4);
    assert_non_null(scale);
    {
        double *xr = malloc((size_t)K * sizeof(double));
        assert_non_null(xr);
        for (int m = 0; m < M; m++) {
            for (int k = 0; k < K; k++) {
                const float *xm = x + (size_t)m * ldx;
                if (mode == GEMV_X_SILU)
                    xr[k] = fabs(xm[k] / (1.0 + exp(-(double)xm[k])) * xm[K + k]);
                else
                    xr[k] = 4.0 * fabs(nw[k]) *
                            (fabs(xm[k]) + (res ? fabs(r[(size_t)m * ldx + k]) : 0));
            }
            for (int n = 0; n < N; n++) {
                double sc = 0;
                for (int k = 0; k < K; k++)
                    sc += xr[k] * fabs(asa_bf16_to_f32(w[(size_t)n * K + k]));
                scale[(size_t)m * ldy + n] = (float)sc;
            }
        }
        free(xr);
    }

    float *dx = kt_dev_upload(x, xs * 4), *dr = kt_dev_upload(r, xs * 4);
    float *dnw = kt_dev_upload(nw, (size_t)K * 4);
    uint16_t *dw = kt_dev_upload(w, (size_t)N * K * 2);
    float *dy = kt_dev_poison(ys * 4), *dro = kt_dev_poison(xs * 4), *dxn = kt_dev_poison(xs * 4);
    gemv_params d = p;
    d.x = dx;
    d.w = dw;
    d.y_f32 = dy;
    if (mode == GEMV_X_NORM) {
        d.res = res ? dr : NULL;
        d.res_out = res ? dro : NULL;
        d.xn_out = xn ? dxn : NULL;
        d.norm_w = dnw;
    }
    assert_int_equal(gemv_bf16_cuda_gt(&d, gt, 0), ASA_OK);
    kt_sync();
    float *got = malloc(ys * 4), *g2 = malloc(xs * 4);
    assert_non_null(got);
    assert_non_null(g2);
    kt_dev_download(got, dy, ys * 4);
    for (int m = 0; m < M; m++)
        for (int64_t j = N; j < ldy; j++) {
            uint32_t u;
            memcpy(&u, &got[m * ldy + j], 4);
            assert_int_equal(u, 0xffffffffu);
        }
    kt_check_close("fused y", got, yref, scale, ys, 1e-6, 2e-5);
    if (mode == GEMV_X_NORM && res) {
        kt_dev_download(g2, dro, xs * 4);
        assert_memory_equal(g2, rref, xs * 4); /* K columns exact, padding untouched */
    }
    if (mode == GEMV_X_NORM && xn) {
        kt_dev_download(g2, dxn, xs * 4);
        kt_check_close("fused xn", g2, nref, NULL, xs, 1e-6, 2e-5);
    }
    kt_dev_free(dx);
    kt_dev_free(dr);
    kt_dev_free(dnw);
    kt_dev_free(dw);
    kt_dev_free(dy);
    kt_dev_free(dro);
    kt_dev_free(dxn);
    free(x);
    free(r);
    free(nw);
    free(w);
    free(yref);
    free(rref);
    free(nref);
    free(scale);
    free(got);
    free(g2);
}

static void test_fused(void **state) {
    (void)state;
    run_fused(GEMV_X_NORM, 1, 19, 136, true, true, 0);
    run_fused(GEMV_X_NORM, 2, 37, 1032, true, false, 64);
    run_fused(GEMV_X_NORM, 1, 9, 264, false, true, 256);
    run_fused(GEMV_X_NORM, 3, 5, 40, false, false, 32);
    run_fused(GEMV_X_SILU, 1, 21, 328, false, false, 0);
    run_fused(GEMV_X_SILU, 2, 7, 72, false, false, 128);
    if (kt_quick())
        return;
    run_fused(GEMV_X_NORM, 1, 3296, 2048, true, true, 0);
    run_fused(GEMV_X_NORM, 2, 2051, 4096, true, true, 0);
    run_fused(GEMV_X_SILU, 1, 2048, 5632, false, false, 0);
    run_fused(GEMV_X_SILU, 2, 1029, 5632, false, false, 0);
    run_fused(GEMV_X_SILU, 4, 300, 3000, false, false, 32);
}

static void test_checks(void **state) {
    (void)state;
    void *buf = kt_dev_alloc(1 << 20);
    gemv_params ok = {.M = 1, .N = 4, .K = 16, .x = buf, .x_type = KC_F32, .ldx = 16,
                      .w = (const uint16_t *)((char *)buf + 4096), .ldw = 16,
                      .y_f32 = (float *)((char *)buf + 8192), .ldy = 4};
    assert_int_equal(gemv_params_check(&ok), ASA_OK);
    gemv_params b = ok;
    b.K = 12;
    b.ldx = b.ldw = 16;
    assert_int_equal(gemv_bf16_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.M = GEMV_MAX_M + 1;
    assert_int_equal(gemv_bf16_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.w = (const uint16_t *)((char *)buf + 4104);
    assert_int_equal(gemv_bf16_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.ldw = 20;
    assert_int_equal(gemv_bf16_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.y_f32 = NULL;
    assert_int_equal(gemv_bf16_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.x_type = KC_BF16;
    b.ldx = 20;
    assert_int_equal(gemv_bf16_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.ldy = 3;
    assert_int_equal(gemv_bf16_cuda(&b, 0), ASA_EINVAL);
    assert_int_equal(gemv_bf16_cuda(NULL, 0), ASA_EINVAL);
    assert_int_equal(gemv_bf16_cuda_gt(&ok, 16, 0), ASA_EINVAL);
    /* fused modes: f32 x, M * K bounded, aliasing of the residual output */
    b = ok;
    b.x_mode = GEMV_X_SILU;
    assert_int_equal(gemv_params_check(&b), ASA_EINVAL); /* ldx < 2K */
    b.ldx = 32;
    assert_int_equal(gemv_params_check(&b), ASA_OK);
    b.x_type = KC_BF16;
    assert_int_equal(gemv_params_check(&b), ASA_EINVAL);
    b = ok;
    b.x_mode = GEMV_X_NORM;
    assert_int_equal(gemv_params_check(&b), ASA_EINVAL); /* no norm weight */
    b.norm_w = (const float *)((char *)buf + 16384);
    b.eps = 1e-6f;
    assert_int_equal(gemv_params_check(&b), ASA_OK);
    b.res = (const float *)((char *)buf + 20480);
    assert_int_equal(gemv_params_check(&b), ASA_EINVAL); /* res without res_out */
    b.res_out = (float *)b.res;
    assert_int_equal(gemv_params_check(&b), ASA_EINVAL); /* in place: a race */
    b.res_out = (float *)((char *)buf + 24576);
    assert_int_equal(gemv_params_check(&b), ASA_OK);
    b.M = 4;
    b.K = 4096;
    b.ldx = 4096;
    b.ldw = 4096;
    assert_int_equal(gemv_params_check(&b), ASA_EINVAL); /* M * K over the shared memory */
    kt_sync();
    kt_dev_free(buf);
}

int main(void) {
    int rc = kt_init("test_gemv_cuda");
    if (rc)
        return rc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_fused),
        cmocka_unit_test(test_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
