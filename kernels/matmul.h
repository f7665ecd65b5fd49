/*
 * kernels/matmul.h - y = x W^T in f32 with a fixed accumulation order.
 *
 * Shapes: x [M, K] (row stride ldx), W [N, K] row-major (row stride ldw,
 * the layout of every projection weight [out, in]), y [M, N] (row stride
 * ldy).  All strides are in floats.
 *
 * The order contract (what makes the CPU engine batch-invariant): output
 * element y[m][n] is computed as 8 partial sums, lane l accumulating
 * x[m][k] * w[n][k] for k = l, l+8, l+16, ... in increasing k (a multiply
 * rounded to f32, then an add rounded to f32, never fused), followed by the
 * fixed reduction ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)).  The result
 * therefore depends only on x's row m, W's row n and K: not on M, not on
 * which columns a call computes, not on the number of threads, and not on
 * which instruction-set variant runs (the SSE2, AVX2 and AVX-512VL variants
 * perform the same per-lane operations).  Library GEMMs (OpenBLAS) change their kernels
 * and blocking with M, so they are deliberately not used here.
 *
 * Stateless; safe to call from any thread on disjoint outputs.
 */
#ifndef ASA_MATMUL_H
#define ASA_MATMUL_H

#include <stdint.h>

#include "asa.h"
#include "threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The reference: a plain loop accumulating in double.  Not bitwise equal to
 * matmul_f32 (different order); for tests. */
void matmul_ref(const float *x, int ldx, const float *w, int ldw, float *y,
                int ldy, int M, int N, int K);

/* Columns [n0, n1) of y = x W^T for all M rows, on the calling thread, with
 * the fastest variant this CPU supports. */
void matmul_f32_cols(const float *x, int ldx, const float *w, int ldw,
                     float *y, int ldy, int M, int K, int n0, int n1);

/* y = x W^T, output columns split over the pool's threads (pool may be
 * NULL). */
void matmul_f32(tp_pool *pool, const float *x, int ldx, const float *w,
                int ldw, float *y, int ldy, int M, int N, int K);

/* The same products with W stored as bf16 (raw bits, row stride ldw in
 * elements), widened exactly to f32 as it is loaded: bitwise the result of
 * matmul_f32 on the widened matrix, with half the weight bytes to read
 * (decode is bound by reading the weights). */
void matmul_bf16w_cols(const float *x, int ldx, const uint16_t *w, int ldw,
                       float *y, int ldy, int M, int K, int n0, int n1);
void matmul_bf16w(tp_pool *pool, const float *x, int ldx, const uint16_t *w,
                  int ldw, float *y, int ldy, int M, int N, int K);
asa_err matmul_bf16w_cols_isa(int isa, const float *x, int ldx, const uint16_t *w,
                              int ldw, float *y, int ldy, int M, int K, int n0,
                              int n1);

/* The same dot product as one element of matmul_f32: sum of a[k]*b[k] in
 * the order contract above. */
float matmul_dot(const float *a, const float *b, int K);

/* Instruction-set variants, for tests: 0 = portable (SSE2 on x86-64),
 * 1 = AVX2, 2 = AVX-512VL (the same 256-bit arithmetic with more
 * registers).  Returns ASA_EUNSUPPORTED when this CPU or build lacks it. */
asa_err matmul_f32_cols_isa(int isa, const float *x, int ldx, const float *w,
                            int ldw, float *y, int ldy, int M, int K, int n0,
                            int n1);

#ifdef __cplusplus
}
#endif
#endif /* ASA_MATMUL_H */
