/*
 * tests/kernels/test_gemm_ring_cuda.c - gemm_ring_cuda against
 * gemm_ring_ref: hi alone and hi + lo, y written and added to (acc), odd
 * M, N and K with and without split K (N small: many slices; K = 64: one),
 * padded strides (padding must stay untouched), poisoned outputs and
 * workspace, NaN/Inf propagation, the split counters left at zero for the
 * next launch (a second launch gives the same bits), the order contract (a
 * row's result bitwise the same alone and in a batch of 64), and the
 * launcher's checks.
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
#include "gemm_ring_cuda.h"
#include "kt.h"

typedef struct gr_case {
    int M, N, K;
    bool lo, acc;
    int pad_x, pad_w, pad_y; /* extra elements per row (pad_x % 8 == 0) */
    bool poison_values;      /* NaN in x, Inf in W */
    int cluster;             /* 0: gemm_ring_cuda; else gemm_ring_cuda_cluster */
    bool wg;                 /* gemm_ring_cuda_wg with cluster slices */
} gr_case;

/* The case's form on device parameters d. */
static asa_err launch(const gr_case *c, const gemm_ring_params *d) {
    if (c->wg)
        return gemm_ring_cuda_wg(d, c->cluster, 0);
    return c->cluster ? gemm_ring_cuda_cluster(d, c->cluster, 0) : gemm_ring_cuda(d, 0);
}

/* Runs one case on fresh random inputs (or x_in / w_in: [M][K + pad_x]
 * f32 and [N][K + pad_w] bf16); the f32 result rows go to y_out when set. */
static void run_case(const gr_case *c, float *y_out, const uint16_t *w_in, const float *x_in) {
    const int64_t ldx = c->K + c->pad_x, ldw = c->K + c->pad_w, ldy = c->N + c->pad_y;
    const size_t xn = (size_t)c->M * ldx, wn = (size_t)c->N * ldw, yn = (size_t)c->M * ldy;
    float *x = malloc(xn * 4), *y0 = malloc(yn * 4);
    uint16_t *w = malloc(wn * 2), *xh = malloc(xn * 2), *xl = malloc(xn * 2);
    assert_non_null(x);
    assert_non_null(y0);
    assert_non_null(w);
    assert_non_null(xh);
    assert_non_null(xl);
    kt_product_inputs(c->M, c->N, c->K, ldx, ldw, x_in, w_in, c->poison_values, x, w, xh, xl);
    /* y before the product: the padding poisoned, the values random (acc)
     * or poisoned too */
    memset(y0, 0xff, yn * 4);
    if (c->acc)
        for (int m = 0; m < c->M; m++)
            kt_fill_f32(y0 + (size_t)m * ldy, (size_t)c->N, 1.0f);
    gemm_ring_params p = {.M = c->M, .N = c->N, .K = c->K, .xhi = xh,
                          .xlo = c->lo ? xl : NULL, .ldx = ldx, .w = w, .ldw = ldw,
                          .ldy = ldy, .acc = c->acc};
    float *ref = malloc(yn * 4), *scale = malloc(yn * 4);
    assert_non_null(ref);
    assert_non_null(scale);
    memcpy(ref, y0, yn * 4);
    p.y = ref;
    gemm_ring_ref(&p);
    { /* scale: the same sum over |x| |w| (and |y| with acc) */
        uint16_t *ah = malloc(xn * 2), *al = malloc(xn * 2), *aw = malloc(wn * 2);
        assert_non_null(ah);
        assert_non_null(al);
        assert_non_null(aw);
        for (size_t i = 0; i < xn; i++) {
            ah[i] = xh[i] & 0x7fff;
            al[i] = xl[i] & 0x7fff;
        }
        for (size_t i = 0; i < wn; i++)
            aw[i] = w[i] & 0x7fff;
        gemm_ring_params pa = p;
        pa.xhi = ah;
        pa.xlo = al;
        pa.w = aw;
        pa.y = scale;
        pa.acc = false;
        gemm_ring_ref(&pa);
        if (c->acc)
            for (size_t i = 0; i < yn; i++)
                scale[i] += fabsf(y0[i]);
        free(ah);
        free(al);
        free(aw);
    }

    uint16_t *dh = kt_dev_upload(xh, xn * 2);
    uint16_t *dl = c->lo ? kt_dev_upload(xl, xn * 2) : NULL;
    uint16_t *dw = kt_dev_upload(w, wn * 2);
    float *dy = kt_dev_upload(y0, yn * 4);
    const size_t wsn = gemm_ring_ws_floats(c->M, c->N, c->K);
    const int nc = gemm_ring_counters(c->N);
    int *zeros = calloc((size_t)nc, sizeof(int)), *cnt = malloc((size_t)nc * sizeof(int));
    assert_non_null(zeros);
    assert_non_null(cnt);
    float *dws = wsn ? kt_dev_poison(wsn * 4) : NULL;
    int *dc = kt_dev_upload(zeros, (size_t)nc * sizeof(int));
    gemm_ring_params d = p;
    d.xhi = dh;
    d.xlo = dl;
    d.w = dw;
    d.y = dy;
    d.ws = dws;
    d.counters = dc;
    assert_int_equal(launch(c, &d), ASA_OK);
    kt_sync();

    /* padding untouched, then the N columns of each row */
    float *got = kt_check_rows_dev("y", dy, ref, scale, c->M, c->N, ldy, 1e-6, 2e-5, y_out);
    /* the counters back at zero; a second launch (on y0 again) the same bits */
    kt_dev_download(cnt, dc, (size_t)nc * sizeof(int));
    assert_memory_equal(cnt, zeros, (size_t)nc * sizeof(int));
    if (!c->poison_values) {
        float *again = malloc(yn * 4);
        assert_non_null(again);
        kt_dev_free(dy);
        dy = kt_dev_upload(y0, yn * 4);
        d.y = dy;
        assert_int_equal(launch(c, &d), ASA_OK);
        kt_sync();
        kt_dev_download(again, dy, yn * 4);
        assert_memory_equal(again, got, yn * 4);
        free(again);
    }
    kt_dev_free(dh);
    kt_dev_free(dl);
    kt_dev_free(dw);
    kt_dev_free(dy);
    kt_dev_free(dws);
    kt_dev_free(dc);
    free(x);
    free(y0);
    free(w);
    free(xh);
    free(xl);
    free(ref);
    free(scale);
    free(got);
    free(zeros);
    free(cnt);
}

/* M across the tile counts (odd N and K, lo, acc, padding varied with M)
 * in the workspace form, or (wg) the warpgroup-MMA form with 1-5 slices. */
static void m_sweep(bool wg) {
    for (int M = 1; M <= GEMM_RING_MAX_M; M += 7) {
        gr_case c = {M, 45 + M, 64 * (1 + M % 7), M % 2 == 0, M % 3 == 0, 8 * (M % 3), 0, M % 4,
                     false, wg ? 1 + M % 5 : 0, wg};
        run_case(&c, NULL, NULL, NULL);
    }
}

static void test_shapes(void **state) {
    (void)state;
    const gr_case small[] = {
        {1, 1, 64, false, false, 0, 0, 0, false, 0, false},     /* one slice */
        {3, 17, 128, true, false, 8, 8, 1, false, 0, false},    /* 2 slices */
        {9, 33, 320, true, true, 16, 0, 3, false, 0, false},    /* 5 slices, acc */
        {16, 130, 64, false, false, 0, 0, 0, false, 0, false},  /* two columns, one slice */
        {20, 257, 448, true, false, 0, 8, 2, true, 0, false},   /* NaN / Inf */
        {33, 200, 640, false, true, 8, 0, 0, false, 0, false},  /* 10 slices, acc */
        {64, 129, 192, true, true, 0, 0, 5, false, 0, false},   /* 8 tiles of x rows with lo */
        {41, 300, 256, true, false, 0, 0, 0, false, 0, false},
    };
    const gr_case large[] = {
        {16, 3296, 2048, true, false, 0, 0, 0, false, 0, false},
        {32, 2048, 5632, false, false, 0, 8, 4, false, 0, false},
        {64, 11264, 2048, false, false, 0, 0, 0, false, 0, false},
        {24, 32000, 2048, false, false, 8, 0, 0, false, 0, false},
        {48, 2048, 2048, true, true, 0, 0, 0, false, 0, false},
        {13, 2051, 5632, true, false, 0, 0, 1, true, 0, false},
    };
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++)
        run_case(&small[i], NULL, NULL, NULL);
    if (kt_quick())
        return;
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
        run_case(&large[i], NULL, NULL, NULL);
    /* M across the tile counts, hi alone and with lo */
    m_sweep(false);
}

/* Rows of a batch of 64 equal the same rows computed alone or in smaller
 * batches (M = 1, 9, 33), bitwise, with and without split K; in the form
 * given by cluster and wg (gr_case). */
static void row_independence(int cluster, bool wg) {
    const int Ns[] = {211, 4100}, K = 512, M = GEMM_RING_MAX_M;
    for (int ni = 0; ni < (kt_quick() ? 1 : 2); ni++) {
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
        gr_case c = {M, N, K, true, false, 0, 0, 0, false, cluster, wg};
        run_case(&c, yb, w, x);
        const int ms[] = {1, 9, 33}, m0s[] = {3, 40, 17};
        for (int i = 0; i < 3; i++) {
            const int m0 = m0s[i];
            gr_case c1 = {ms[i], N, K, true, false, 0, 0, 0, false, cluster, wg};
            run_case(&c1, y1, w, x + (size_t)m0 * K);
            assert_memory_equal(y1, yb + (size_t)m0 * N, (size_t)ms[i] * N * 4);
        }
        free(w);
        free(x);
        free(yb);
        free(y1);
    }
}

static void test_row_independence(void **state) {
    (void)state;
    row_independence(0, false);
}

/* The launcher checks of the cluster form (wg false) or the warpgroup-MMA
 * form, then one launch on a small valid product: false (with a message)
 * where the build has no such form (the CPU emulation: ASA_EUNSUPPORTED). */
static bool form_checks(bool wg) {
    float *dy = kt_dev_alloc(64 * 4);
    uint16_t *dw = kt_dev_alloc(16 * 128 * 2), *dh = kt_dev_alloc(128 * 2);
    const gemm_ring_params p = {.M = 1, .N = 16, .K = 128, .xhi = dh, .ldx = 128, .w = dw,
                                .ldw = 128, .y = dy, .ldy = 16};
    const gr_case c = {.cluster = 2, .wg = wg};
    gemm_ring_params b = p;
    b.K = wg ? 96 : 64; /* not a multiple of the chunk; one chunk: nothing to cut */
    gr_case bc = c;
    assert_int_equal(launch(&bc, &b), ASA_EINVAL);
    bc.cluster = wg ? 0 : 1;
    assert_int_equal(launch(&bc, &p), ASA_EINVAL);
    bc.cluster = 17;
    assert_int_equal(launch(&bc, &p), ASA_EINVAL);
    assert_int_equal(wg ? gemm_ring_cuda_wg(NULL, 1, 0) : gemm_ring_cuda_cluster(NULL, 2, 0),
                     ASA_EINVAL);
    const asa_err e = launch(&c, &p);
    kt_sync();
    kt_dev_free(dy);
    kt_dev_free(dw);
    kt_dev_free(dh);
    if (e == ASA_EUNSUPPORTED) {
        print_message("%s: not in this build\n", wg ? "test_wg" : "test_cluster");
        return false;
    }
    assert_int_equal(e, ASA_OK);
    return true;
}

/* The cluster form (slices summed through distributed shared memory):
 * odd shapes, lo, acc, padding, poison, 2-16 slices; where the build has
 * no clusters (the CPU emulation) it must say ASA_EUNSUPPORTED. */
static void test_cluster(void **state) {
    (void)state;
    if (!form_checks(false))
        return;
    const gr_case cs[] = {
        {3, 17, 128, true, false, 8, 8, 1, false, 2, false},
        {9, 33, 320, true, true, 16, 0, 3, false, 8, false},
        {20, 257, 448, true, false, 0, 8, 2, true, 4, false},
        {33, 200, 640, false, true, 8, 0, 0, false, 16, false},
        {64, 129, 192, true, true, 0, 0, 5, false, 8, false},
        {16, 3296, 2048, true, false, 0, 0, 0, false, 8, false},
        {16, 2048, 5632, false, true, 0, 0, 0, false, 16, false},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        run_case(&cs[i], NULL, NULL, NULL);
}

/* The warpgroup-MMA form (wgmma, clusters of 1-16 slices): odd shapes,
 * lo, acc, padding, poison, every x-row tile count, the engine's shapes at
 * 33-64 rows and the order contract; where the build has neither (the CPU
 * emulation) it must say ASA_EUNSUPPORTED. */
static void test_wg(void **state) {
    (void)state;
    if (!form_checks(true))
        return;
    const gr_case cs[] = {
        {1, 1, 64, false, false, 0, 0, 0, false, 1, true},
        {3, 17, 128, true, false, 8, 8, 1, false, 2, true},
        {9, 33, 320, true, true, 16, 0, 3, false, 8, true},
        {16, 130, 64, false, false, 0, 0, 0, false, 1, true},
        {20, 257, 448, true, false, 0, 8, 2, true, 4, true},
        {33, 200, 640, false, true, 8, 0, 0, false, 16, true},
        {64, 129, 192, true, true, 0, 0, 5, false, 3, true},
        {41, 300, 256, true, false, 0, 0, 0, false, 1, true},
    };
    /* the engine's shapes (fewer rows where N is large: the host
     * reference's time) */
    const gr_case large[] = {
        {8, 64, 1024, true, false, 0, 0, 0, false, 5, true},
        {64, 3296, 2048, true, false, 0, 0, 0, false, 4, true},
        {48, 2048, 2048, false, true, 0, 0, 0, false, 8, true},
        {33, 11264, 2048, false, false, 0, 0, 0, false, 3, true},
        {40, 2048, 5632, false, false, 0, 8, 4, false, 8, true},
        {17, 32000, 1024, false, false, 8, 0, 0, false, 1, true},
        {13, 2051, 5632, true, false, 0, 0, 1, true, 8, true},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        run_case(&cs[i], NULL, NULL, NULL);
    if (kt_quick())
        return;
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
        run_case(&large[i], NULL, NULL, NULL);
    m_sweep(true);
    row_independence(4, true);
}

static void test_checks(void **state) {
    (void)state;
    float *dy = kt_dev_alloc(64 * 256 * 4), *dws = kt_dev_alloc(64 * 256 * 4 * 4);
    uint16_t *dw = kt_dev_alloc(256 * 128 * 2), *dh = kt_dev_alloc(64 * 128 * 2);
    int *dc = kt_dev_alloc(64 * sizeof(int));
    /* N = 16, K = 128: one column, two slices (workspace needed) */
    const gemm_ring_params ok = {.M = 4, .N = 16, .K = 128, .xhi = dh, .ldx = 128, .w = dw,
                                 .ldw = 128, .y = dy, .ldy = 16, .ws = dws, .counters = dc};
    assert_int_equal(gemm_ring_splits(16, 128), 2);
    assert_int_equal(gemm_ring_ws_floats(4, 16, 128), 2 * 4 * 16);
    assert_int_equal(gemm_ring_ws_floats(4, 16, 64), 0);
    assert_int_equal(gemm_ring_counters(129), 2);
    assert_int_equal(gemm_ring_check(&ok), ASA_OK);
    gemm_ring_params p;
#define BAD(field, val)                                                   \
    do {                                                                  \
        p = ok;                                                           \
        p.field = val;                                                    \
        assert_int_equal(gemm_ring_cuda(&p, 0), ASA_EINVAL);              \
    } while (0)
    BAD(M, 0);
    BAD(M, GEMM_RING_MAX_M + 1);
    BAD(N, 0);
    BAD(K, 96);
    BAD(K, 0);
    BAD(ldx, 120);
    BAD(ldx, 132);
    BAD(ldw, 120);
    BAD(ldy, 15);
    BAD(w, NULL);
    BAD(y, NULL);
    BAD(xhi, NULL);
    BAD(xhi, dh + 4); /* misaligned */
    BAD(xlo, dh + 4);
    BAD(w, dw + 4);
    BAD(ws, NULL); /* split K without a workspace */
    BAD(counters, NULL);
#undef BAD
    p = ok;
    p.K = 64; /* one slice: no workspace needed */
    p.ws = NULL;
    p.counters = NULL;
    assert_int_equal(gemm_ring_check(&p), ASA_OK);
    assert_int_equal(gemm_ring_check(NULL), ASA_EINVAL);
    kt_dev_free(dy);
    kt_dev_free(dws);
    kt_dev_free(dw);
    kt_dev_free(dh);
    kt_dev_free(dc);
}

int main(void) {
    const int s = kt_init("test_gemm_ring_cuda");
    if (s)
        return s;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_row_independence),
        cmocka_unit_test(test_cluster),
        cmocka_unit_test(test_wg),
        cmocka_unit_test(test_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
