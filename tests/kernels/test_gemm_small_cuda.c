/*
 * tests/kernels/test_gemm_small_cuda.c - gemm_small_cuda against
 * gemm_small_ref: every way of giving the activations (f32 cut in the
 * kernel with and without the residue, bf16 parts with and without lo),
 * odd M, N and K, padded strides (padding must stay untouched), poisoned
 * outputs, NaN/Inf propagation, both row tilings (N below and above 8192),
 * the order contract (a row's result bitwise the same alone and in a batch
 * of 16, and with either row tiling), and the launcher's checks.
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
#include "gemm_small_cuda.h"
#include "kt.h"

typedef enum { X_F32 = 0, X_F32_LO, X_HI, X_HI_LO } xform;

typedef struct gs_case {
    int M, N, K;
    xform xf;
    int pad_x, pad_w, pad_y; /* extra elements per row (pad_x % 8 == 0) */
    bool poison_values;      /* NaN in x, Inf in W */
    int tile;                /* gemm_small_params.tile_rows */
} gs_case;

/* Runs one case on fresh random inputs (or x_in/w_in: [M][K + pad_x] f32
 * and [N][K + pad_w] bf16); the f32 result rows go to y_out when set. */
static void run_case(const gs_case *c, float *y_out, const uint16_t *w_in, const float *x_in) {
    const int64_t ldx = c->K + c->pad_x, ldw = c->K + c->pad_w, ldy = c->N + c->pad_y;
    const size_t xn = (size_t)c->M * ldx, wn = (size_t)c->N * ldw, yn = (size_t)c->M * ldy;
    float *x = malloc(xn * 4);
    uint16_t *w = malloc(wn * 2), *xh = malloc(xn * 2), *xl = malloc(xn * 2);
    assert_non_null(x);
    assert_non_null(w);
    assert_non_null(xh);
    assert_non_null(xl);
    kt_product_inputs(c->M, c->N, c->K, ldx, ldw, x_in, w_in, c->poison_values, x, w, xh, xl);
    const bool f32 = c->xf == X_F32 || c->xf == X_F32_LO;
    gemm_small_params p = {.M = c->M, .N = c->N, .K = c->K, .x = f32 ? x : NULL,
                           .lo = c->xf == X_F32_LO, .xhi = f32 ? NULL : xh,
                           .xlo = c->xf == X_HI_LO ? xl : NULL, .ldx = ldx, .w = w,
                           .ldw = ldw, .ldy = ldy, .tile_rows = c->tile};
    float *ref = malloc(yn * 4), *scale = malloc(yn * 4);
    assert_non_null(ref);
    assert_non_null(scale);
    p.y = ref;
    assert_int_equal(gemm_small_check(&p), ASA_OK);
    gemm_small_ref(&p);
    { /* scale: the same sum over |x| |w| */
        float *ax = malloc(xn * 4);
        uint16_t *aw = malloc(wn * 2);
        assert_non_null(ax);
        assert_non_null(aw);
        for (size_t i = 0; i < xn; i++)
            ax[i] = fabsf(x[i]);
        for (size_t i = 0; i < wn; i++)
            aw[i] = w[i] & 0x7fff;
        gemm_small_params pa = p;
        pa.x = ax;
        pa.lo = true;
        pa.xhi = pa.xlo = NULL;
        pa.w = aw;
        pa.y = scale;
        gemm_small_ref(&pa);
        free(ax);
        free(aw);
    }

    float *dx = f32 ? kt_dev_upload(x, xn * 4) : NULL;
    uint16_t *dh = f32 ? NULL : kt_dev_upload(xh, xn * 2);
    uint16_t *dl = c->xf == X_HI_LO ? kt_dev_upload(xl, xn * 2) : NULL;
    uint16_t *dw = kt_dev_upload(w, wn * 2);
    float *dy = kt_dev_poison(yn * 4);
    gemm_small_params d = p;
    d.x = dx;
    d.xhi = dh;
    d.xlo = dl;
    d.w = dw;
    d.y = dy;
    assert_int_equal(gemm_small_cuda(&d, 0), ASA_OK);
    kt_sync();

    /* padding untouched, then the N columns of each row */
    free(kt_check_rows_dev("y", dy, ref, scale, c->M, c->N, ldy, 1e-6, 2e-5, y_out));
    kt_dev_free(dx);
    kt_dev_free(dh);
    kt_dev_free(dl);
    kt_dev_free(dw);
    kt_dev_free(dy);
    free(x);
    free(w);
    free(xh);
    free(xl);
    free(ref);
    free(scale);
}

static void test_shapes(void **state) {
    (void)state;
    const gs_case small[] = {
        {1, 1, 32, X_F32, 0, 0, 0, false, 0},
        {3, 17, 96, X_F32_LO, 8, 8, 1, false, 0},
        {8, 16, 64, X_HI, 0, 0, 0, false, 0},
        {9, 33, 288, X_HI_LO, 16, 0, 3, false, 0},
        {12, 5, 32, X_F32_LO, 0, 8, 0, true, 0},
        {16, 20, 160, X_HI_LO, 0, 0, 2, false, 0},
        {11, 24, 64, X_F32, 8, 0, 0, false, 0},
        {14, 8200, 64, X_HI_LO, 0, 0, 0, false, 0},
        {5, 8195, 64, X_F32_LO, 0, 0, 1, false, 0}, /* two row tiles a block */
    };
    const gs_case large[] = {
        {4, 2048, 2048, X_F32_LO, 0, 0, 0, false, 0},
        {8, 3359, 2048, X_HI_LO, 0, 0, 0, false, 0},
        {13, 2048, 5632, X_HI, 0, 8, 4, false, 0},
        {16, 2051, 2048, X_F32, 0, 0, 0, true, 0},
        {10, 11264, 2048, X_HI_LO, 0, 0, 0, false, 0},
        {16, 32000, 256, X_F32, 8, 0, 0, false, 0},
    };
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++)
        run_case(&small[i], NULL, NULL, NULL);
    if (kt_quick())
        return;
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
        run_case(&large[i], NULL, NULL, NULL);
    /* every M with every form */
    for (int M = 1; M <= GEMM_SMALL_MAX_M; M++) {
        gs_case c = {M, 45 + M, 32 * (1 + M % 7), (xform)(M % 4), 8 * (M % 3), 0, M % 4, false, 0};
        run_case(&c, NULL, NULL, NULL);
    }
}

/* Rows of a batch of 16 equal the same rows computed alone (M = 1, 7, 12),
 * bitwise, for both tilings. */
static void test_row_independence(void **state) {
    (void)state;
    const int Ns[] = {211, 8200}, K = 480, M = GEMM_SMALL_MAX_M;
    for (int ni = 0; ni < 2; ni++) {
        const int N = Ns[ni];
        uint16_t *w = malloc((size_t)N * K * 2);
        float *x = malloc((size_t)M * K * 4);
        float *yb = malloc((size_t)M * N * 4), *y1 = malloc((size_t)M * N * 4);
        assert_non_null(w);
        assert_non_null(x);
        assert_non_null(yb);
        assert_non_null(y1);
        kt_fill_bf16(w, (size_t)N * K, 0.05f);
        kt_fill_f32(x, (size_t)M * K, 1.0f);
        gs_case c = {M, N, K, X_F32_LO, 0, 0, 0, false, 0};
        run_case(&c, yb, w, x);
        const int ms[] = {1, 7, 12}, m0s[] = {3, 9, 4};
        for (int i = 0; i < 3; i++) {
            const int m0 = m0s[i];
            gs_case c1 = {ms[i], N, K, X_F32_LO, 0, 0, 0, false, 0};
            run_case(&c1, y1, w, x + (size_t)m0 * K);
            assert_memory_equal(y1, yb + (size_t)m0 * N, (size_t)ms[i] * N * 4);
        }
        /* the other row tiling: the same sums in the same order */
        gs_case ct = c;
        ct.tile = N >= 8192 ? 16 : 32;
        run_case(&ct, y1, w, x);
        assert_memory_equal(y1, yb, (size_t)M * N * 4);
        free(w);
        free(x);
        free(yb);
        free(y1);
    }
}

static void test_checks(void **state) {
    (void)state;
    float *dx = kt_dev_alloc(64 * 64 * 4), *dy = kt_dev_alloc(64 * 64 * 4);
    uint16_t *dw = kt_dev_alloc(64 * 64 * 2), *dh = kt_dev_alloc(64 * 64 * 2);
    const gemm_small_params ok = {.M = 4, .N = 16, .K = 64, .x = dx, .ldx = 64, .w = dw,
                                  .ldw = 64, .y = dy, .ldy = 16};
    assert_int_equal(gemm_small_check(&ok), ASA_OK);
    gemm_small_params p;
#define BAD(field, val)                                                   \
    do {                                                                  \
        p = ok;                                                           \
        p.field = val;                                                    \
        assert_int_equal(gemm_small_cuda(&p, 0), ASA_EINVAL);             \
    } while (0)
    BAD(M, 0);
    BAD(M, GEMM_SMALL_MAX_M + 1);
    BAD(N, 0);
    BAD(K, 48);
    BAD(K, 0);
    BAD(ldx, 60);
    BAD(ldx, 68);
    BAD(ldw, 60);
    BAD(ldy, 15);
    BAD(w, NULL);
    BAD(y, NULL);
    BAD(x, NULL);          /* neither x nor xhi */
    BAD(xhi, dh);          /* both */
    BAD(xlo, dh);          /* lo part with f32 x */
    BAD(x, dx + 1);        /* misaligned */
    BAD(w, dw + 4);
    BAD(tile_rows, 8);
#undef BAD
    p = ok;
    p.x = NULL;
    p.xhi = dh;
    assert_int_equal(gemm_small_check(&p), ASA_OK);
    p.xlo = dh + 4; /* misaligned lo */
    assert_int_equal(gemm_small_check(&p), ASA_EINVAL);
    assert_int_equal(gemm_small_check(NULL), ASA_EINVAL);
    kt_dev_free(dx);
    kt_dev_free(dy);
    kt_dev_free(dw);
    kt_dev_free(dh);
}

int main(void) {
    const int s = kt_init("test_gemm_small_cuda");
    if (s)
        return s;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_row_independence),
        cmocka_unit_test(test_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
