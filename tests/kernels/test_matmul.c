/* Tests of kernels/matmul and kernels/threadpool: accuracy against the
 * double reference, and the order contract (bitwise equality across M, column
 * ranges, thread counts and instruction-set variants). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "matmul.h"
#include "threadpool.h"

static uint64_t rng_state = 88172645463325252ull;
static float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float *rand_buf(size_t n) {
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

static void test_accuracy(void **st) {
    (void)st;
    const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {4, 3, 8}, {7, 13, 37},
                             {17, 33, 64}, {5, 70, 129}, {2, 9, 704}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *x = rand_buf((size_t)M * (K + 3));
        float *w = rand_buf((size_t)N * (K + 1));
        float *y = malloc((size_t)M * (N + 2) * sizeof *y);
        float *yr = malloc((size_t)M * N * sizeof *yr);
        for (size_t i = 0; i < (size_t)M * (N + 2); i++)
            y[i] = NAN; /* poison */
        matmul_f32(NULL, x, K + 3, w, K + 1, y, N + 2, M, N, K);
        matmul_ref(x, K + 3, w, K + 1, yr, N, M, N, K);
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                float a = y[(size_t)m * (N + 2) + n], b = yr[(size_t)m * N + n];
                if (!(fabsf(a - b) <= 1e-5f * sqrtf((float)K) + 1e-5f * fabsf(b)))
                    fail_msg("shape %d,%d,%d [%d,%d]: %g vs %g", M, N, K, m, n, a, b);
            }
        free(x);
        free(w);
        free(y);
        free(yr);
    }
}

/* Row m of y must not depend on M, on the column split, on threads or ISA. */
static void test_order_contract(void **st) {
    (void)st;
    const int M = 23, N = 77, K = 133;
    float *x = rand_buf((size_t)M * K), *w = rand_buf((size_t)N * K);
    float *full = malloc((size_t)M * N * sizeof(float));
    float *y = malloc((size_t)M * N * sizeof(float));
    matmul_f32_cols_isa(0, x, K, w, K, full, N, M, K, 0, N);
    /* one row at a time, odd column ranges */
    for (int m = 0; m < M; m++) {
        for (int n0 = 0; n0 < N;) {
            int n1 = n0 + 1 + (m * 7 + n0) % 11;
            if (n1 > N)
                n1 = N;
            matmul_f32_cols(x + (size_t)m * K, K, w, K, y + (size_t)m * N, N, 1, K, n0, n1);
            n0 = n1;
        }
    }
    assert_memory_equal(full, y, (size_t)M * N * sizeof(float));
    /* other row groupings */
    for (int step = 2; step <= 6; step++) {
        for (int m = 0; m < M; m += step) {
            int mm = M - m < step ? M - m : step;
            matmul_f32_cols(x + (size_t)m * K, K, w, K, y + (size_t)m * N, N, mm, K, 0, N);
        }
        assert_memory_equal(full, y, (size_t)M * N * sizeof(float));
    }
    /* AVX2 and AVX-512VL variants, if present */
    for (int isa = 1; isa <= 2; isa++) {
        memset(y, 0, (size_t)M * N * sizeof(float));
        if (matmul_f32_cols_isa(isa, x, K, w, K, y, N, M, K, 0, N) == ASA_OK)
            assert_memory_equal(full, y, (size_t)M * N * sizeof(float));
        else
            print_message("instruction-set variant %d not available here\n", isa);
    }
    /* threads */
    for (int nt = 1; nt <= 3; nt++) {
        tp_pool *p = NULL;
        assert_int_equal(tp_create(nt, &p), ASA_OK);
        assert_int_equal(tp_size(p), nt);
        for (int rep = 0; rep < 20; rep++) {
            memset(y, 0, (size_t)M * N * sizeof(float));
            matmul_f32(p, x, K, w, K, y, N, M, N, K);
            assert_memory_equal(full, y, (size_t)M * N * sizeof(float));
        }
        tp_destroy(p);
    }
    /* dot is one element */
    for (int m = 0; m < 3; m++)
        for (int n = 0; n < 3; n++) {
            float d = matmul_dot(x + (size_t)m * K, w + (size_t)n * K, K);
            assert_memory_equal(&d, &full[(size_t)m * N + n], sizeof d);
        }
    free(x);
    free(w);
    free(full);
    free(y);
}

/* bf16 weights: bitwise the f32 result on the widened values. */
static void test_bf16_weights(void **st) {
    (void)st;
    const int Ms[] = {1, 5, 9, 23};
    for (int mi = 0; mi < 4; mi++) {
        const int M = Ms[mi], N = 53, K = 77 + 3 * mi;
        float *x = rand_buf((size_t)M * K), *wf = rand_buf((size_t)N * K);
        uint16_t *wh = malloc((size_t)N * K * sizeof *wh);
        for (int i = 0; i < N * K; i++) {
            wh[i] = asa_f32_to_bf16(wf[i]);
            wf[i] = asa_bf16_to_f32(wh[i]);
        }
        float *a = malloc((size_t)M * N * sizeof(float)), *b = malloc((size_t)M * N * sizeof(float));
        matmul_f32_cols_isa(0, x, K, wf, K, a, N, M, K, 0, N);
        for (int isa = 0; isa <= 2; isa++) {
            memset(b, 0, (size_t)M * N * sizeof(float));
            if (matmul_bf16w_cols_isa(isa, x, K, wh, K, b, N, M, K, 0, N) == ASA_OK)
                assert_memory_equal(a, b, (size_t)M * N * sizeof(float));
        }
        tp_pool *p = NULL;
        assert_int_equal(tp_create(2, &p), ASA_OK);
        memset(b, 0, (size_t)M * N * sizeof(float));
        matmul_bf16w(p, x, K, wh, K, b, N, M, N, K);
        assert_memory_equal(a, b, (size_t)M * N * sizeof(float));
        tp_destroy(p);
        free(x);
        free(wf);
        free(wh);
        free(a);
        free(b);
    }
}

static void count_fn(void *ctx, int task, int tid) {
    int *hits = ctx;
    __atomic_fetch_add(&hits[task], 1, __ATOMIC_RELAXED);
    (void)tid;
}

static void test_pool_runs_every_thread(void **st) {
    (void)st;
    tp_pool *p = NULL;
    assert_int_equal(tp_create(4, &p), ASA_OK);
    int hits[37] = {0};
    for (int i = 0; i < 1000; i++)
        tp_run(p, count_fn, hits, 1 + i % 37);
    for (int t = 0; t < 37; t++) /* task t ran in runs i with i % 37 >= t */
        assert_int_equal(hits[t], 1000 / 37 * (37 - t) + (1000 % 37 > t ? 1000 % 37 - t : 0));
    tp_destroy(p);
    tp_destroy(NULL);
    int one[2] = {0};
    tp_run(NULL, count_fn, one, 2);
    assert_int_equal(one[0] + one[1], 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accuracy),
        cmocka_unit_test(test_order_contract),
        cmocka_unit_test(test_bf16_weights),
        cmocka_unit_test(test_pool_runs_every_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
