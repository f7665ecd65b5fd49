/* tests/kernels/kt.c - see kt.h. */
#include "kt.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "asa.h"

static uint64_t kt_state = 1;

int kt_init(const char *test_name) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        printf("%s: no CUDA device (%s): skipped\n", test_name,
               e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return KT_SKIP;
    }
    const char *s = getenv("ASA_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0)
                      : (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
    printf("%s: seed %llu (ASA_TEST_SEED to repeat)%s\n", test_name,
           (unsigned long long)seed, kt_quick() ? ", quick" : "");
    kt_state = seed * 0x9e3779b97f4a7c15ull + 1;
    return 0;
}

bool kt_quick(void) {
    const char *q = getenv("ASA_KT_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

uint64_t kt_rand(void) { /* splitmix64 */
    uint64_t z = (kt_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float kt_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(kt_rand() >> 11) * 0x1.0p-53);
}

float kt_normal(void) {
    double u1 = ((double)(kt_rand() >> 11) + 1) * 0x1.0p-53;
    double u2 = (double)(kt_rand() >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

int kt_randint(int n) { return (int)(kt_rand() % (uint64_t)n); }

void kt_fill_bf16(uint16_t *p, size_t n, float scale) {
    for (size_t i = 0; i < n; i++)
        p[i] = asa_f32_to_bf16(scale * kt_normal());
}

void kt_fill_f32(float *p, size_t n, float scale) {
    for (size_t i = 0; i < n; i++)
        p[i] = scale * kt_normal();
}

static void kt_cuda_ok(cudaError_t e, const char *what) {
    if (e != cudaSuccess)
        fail_msg("%s: %s", what, cudaGetErrorString(e));
}

void *kt_dev_alloc(size_t bytes) {
    void *d = NULL;
    kt_cuda_ok(cudaMalloc(&d, bytes ? bytes : 16), "cudaMalloc");
    return d;
}

void *kt_dev_upload(const void *host, size_t bytes) {
    void *d = kt_dev_alloc(bytes);
    kt_cuda_ok(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), "upload");
    return d;
}

void kt_dev_download(void *host, const void *dev, size_t bytes) {
    kt_cuda_ok(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost), "download");
}

void *kt_dev_poison(size_t bytes) {
    void *d = kt_dev_alloc(bytes);
    kt_cuda_ok(cudaMemset(d, 0xff, bytes), "poison");
    return d;
}

void kt_dev_free(void *dev) {
    if (dev)
        kt_cuda_ok(cudaFree(dev), "cudaFree");
}

void kt_sync(void) {
    kt_cuda_ok(cudaGetLastError(), "launch");
    kt_cuda_ok(cudaDeviceSynchronize(), "synchronize");
}

void kt_bf16_to_f32(const uint16_t *in, float *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = asa_bf16_to_f32(in[i]);
}

size_t kt_rows_dense(const float *got, const float *want, const float *scale, int rows,
                     int n, int64_t ld, float *g2, float *w2, float *s2) {
    for (int m = 0; m < rows; m++)
        for (int64_t j = n; j < ld; j++) {
            uint32_t u;
            memcpy(&u, &got[m * ld + j], 4);
            assert_int_equal(u, 0xffffffffu);
        }
    size_t nv = 0;
    for (int m = 0; m < rows; m++)
        for (int c = 0; c < n; c++) {
            g2[nv] = got[m * ld + c];
            w2[nv] = want[m * ld + c];
            s2[nv++] = scale[m * ld + c];
        }
    return nv;
}

void kt_product_inputs(int rows, int n, int k, int64_t ldx, int64_t ldw, const float *x_in,
                       const uint16_t *w_in, bool poison, float *x, uint16_t *w, uint16_t *hi,
                       uint16_t *lo) {
    const size_t xn = (size_t)rows * (size_t)ldx, wn = (size_t)n * (size_t)ldw;
    if (x_in)
        memcpy(x, x_in, xn * 4);
    else
        kt_fill_f32(x, xn, 1.0f);
    if (w_in)
        memcpy(w, w_in, wn * 2);
    else
        kt_fill_bf16(w, wn, 0.05f);
    if (poison) {
        x[(int64_t)(rows / 2) * ldx + k / 3] = NAN;
        w[(int64_t)(n / 2) * ldw + k / 2] = 0x7f80; /* +inf */
    }
    for (size_t i = 0; i < xn; i++) {
        hi[i] = asa_f32_to_bf16(x[i]);
        lo[i] = asa_f32_to_bf16(x[i] - asa_bf16_to_f32(hi[i]));
    }
}

float *kt_check_rows_dev(const char *what, const float *dy, const float *want,
                         const float *scale, int rows, int n, int64_t ld, double atol,
                         double rtol, float *y_out) {
    const size_t all = (size_t)rows * (size_t)ld, dense = (size_t)rows * (size_t)n;
    float *got = malloc(all * 4), *g2 = malloc(dense * 4), *w2 = malloc(dense * 4),
          *s2 = malloc(dense * 4);
    assert_non_null(got);
    assert_non_null(g2);
    assert_non_null(w2);
    assert_non_null(s2);
    kt_dev_download(got, dy, all * 4);
    const size_t nv = kt_rows_dense(got, want, scale, rows, n, ld, g2, w2, s2);
    kt_check_close(what, g2, w2, s2, nv, atol, rtol);
    if (y_out)
        memcpy(y_out, g2, nv * 4);
    free(g2);
    free(w2);
    free(s2);
    return got;
}

void kt_check_close(const char *what, const float *got, const float *want,
                    const float *scale, size_t n, double atol, double rtol) {
    size_t bad = 0, worst = 0;
    double worst_ratio = 0;
    for (size_t i = 0; i < n; i++) {
        const double g = got[i], w = want[i];
        bool ok;
        double ratio = 0;
        if (isnan(w) || isnan(g))
            ok = isnan(w) && isnan(g);
        else if (isinf(w) || isinf(g))
            ok = g == w;
        else {
            const double tol = atol + rtol * (scale ? (double)scale[i] : fabs(w));
            ok = fabs(g - w) <= tol;
            ratio = tol > 0 ? fabs(g - w) / tol : 0;
        }
        if (!ok && bad++ < 5)
            print_message("%s[%zu]: got %.9g want %.9g (scale %.3g)\n", what, i, g, w,
                          scale ? (double)scale[i] : fabs(w));
        if (ok && ratio > worst_ratio) {
            worst_ratio = ratio;
            worst = i;
        }
    }
    if (bad)
        fail_msg("%s: %zu of %zu elements out of tolerance (atol %g, rtol %g)", what, bad, n,
                 atol, rtol);
    if (getenv("ASA_KT_VERBOSE"))
        print_message("%s: %zu elements, worst error %.3g of the tolerance at %zu\n", what, n,
                      worst_ratio, worst);
}
