/*
 * tests/kernels/kt.h - helpers of the CUDA kernel tests: device check (exit
 * 77 without a GPU), a seeded RNG (fresh seed each run, printed; set
 * ASA_TEST_SEED to repeat one), device buffers, poisoning, and the abs+rel
 * comparison with NaN/Inf positions matched.
 *
 * ASA_KT_QUICK=1 (set by the sanitizer runs) makes the tests use only their
 * small shapes.
 */
#ifndef ASA_KT_H
#define ASA_KT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#define KT_SKIP 77

/* Returns 0 when a CUDA device is present (and seeds the RNG, printing the
 * seed), KT_SKIP otherwise. */
int kt_init(const char *test_name);
/* True when ASA_KT_QUICK is set. */
bool kt_quick(void);

uint64_t kt_rand(void);
/* Uniform in [lo, hi). */
float kt_uniform(float lo, float hi);
/* Standard normal. */
float kt_normal(void);
/* Uniform integer in [0, n). */
int kt_randint(int n);

/* Fills n bf16 values (bit patterns) with scale * normal, rounded. */
void kt_fill_bf16(uint16_t *p, size_t n, float scale);
void kt_fill_f32(float *p, size_t n, float scale);

/* Device buffers; failures fail the current cmocka test. */
void *kt_dev_alloc(size_t bytes);
void *kt_dev_upload(const void *host, size_t bytes);
void kt_dev_download(void *host, const void *dev, size_t bytes);
/* cudaMalloc + fill with 0xff bytes (NaN in f32 and bf16). */
void *kt_dev_poison(size_t bytes);
void kt_dev_free(void *dev);
/* Synchronises and fails the test on a pending CUDA error. */
void kt_sync(void);

/* Widens n bf16 values. */
void kt_bf16_to_f32(const uint16_t *in, float *out, size_t n);

/* The first n columns of rows strided by ld: got (checked first: its
 * padding columns [n, ld) must still hold the poison, 0xff bytes), want
 * and scale, gathered densely into g2, w2, s2 (which may be got, want and
 * scale themselves).  Returns rows * n. */
size_t kt_rows_dense(const float *got, const float *want, const float *scale, int rows,
                     int n, int64_t ld, float *g2, float *w2, float *s2);

/* The inputs of a product test: x [rows][ldx] f32 (a copy of x_in, or
 * normal values) and w [n][ldw] bf16 (w_in, or normal values x 0.05);
 * poison: one NaN in x (row rows / 2, column k / 3) and one +Inf in w (row
 * n / 2, column k / 2); hi and lo: x's bf16 parts as the engine's kernels
 * cut them (hi = bf16(x), lo = bf16(x - hi)). */
void kt_product_inputs(int rows, int n, int k, int64_t ldx, int64_t ldw, const float *x_in,
                       const uint16_t *w_in, bool poison, float *x, uint16_t *w, uint16_t *hi,
                       uint16_t *lo);

/* Downloads the [rows][ld] f32 result dy and checks it against want and
 * scale (host, same layout): kt_rows_dense, then kt_check_close with atol
 * and rtol.  The dense result rows go to y_out when set.  Returns the
 * downloaded rows, padding included (the caller frees them). */
float *kt_check_rows_dev(const char *what, const float *dy, const float *want,
                         const float *scale, int rows, int n, int64_t ld, double atol,
                         double rtol, float *y_out);

/* Element i passes when both are NaN, both are the same infinity, or
 * |got - want| <= atol + rtol * (scale ? scale[i] : |want|).  Prints the
 * first failures and the largest error; fails the test if any. */
void kt_check_close(const char *what, const float *got, const float *want,
                    const float *scale, size_t n, double atol, double rtol);

#endif /* ASA_KT_H */
