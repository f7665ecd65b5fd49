/*
 * kernels/cuda/gemm_small_cuda.h - the decode product for 3 to 16 rows
 * on tensor cores: y[M, N] = x[M, K] . W[N, K]^T with bf16 weights, the
 * activations as a bf16 pair x ~ hi + lo (or hi alone), f32 accumulation.
 *
 * What it replaces: for 3..16 decode rows the engine ran the bf16 split of
 * the f32 activations, a cuBLAS product over the stacked pair (2M rows) and
 * an add of the two halves: three launches, and cuBLAS neither overlaps its
 * prologue with the kernel before it nor reads the weights early.  Here one
 * kernel streams W once with 16-byte loads straight into mma.sync A
 * fragments (no shared memory for W), takes the pair's two products into
 * the same accumulators, and issues its first weight loads before the
 * programmatic-dependent-launch wait (kcuda.h): W must not be written by
 * the kernels before it in the stream (weights).
 *
 * Order contract: y[m][n] depends only on x's row m (its parts), W's row n,
 * K and N: a row's result does not depend on M or on the other rows.
 */
#ifndef ASA_GEMM_SMALL_CUDA_H
#define ASA_GEMM_SMALL_CUDA_H

#include <stdbool.h>
#include <stdint.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GEMM_SMALL_MAX_M 16

typedef struct gemm_small_params {
    int M;               /* rows of x and y, 1..GEMM_SMALL_MAX_M */
    int N;               /* rows of W = columns of y, >= 1 */
    int K;               /* reduction length, K % 32 == 0, >= 32 */
    /* the activations, one of:
     *  - x (f32 [M][ldx]): cut into hi = bf16(x) and, with lo, lo =
     *    bf16(x - hi) inside the kernel (cb_split_bf16_cuda's rounding);
     *  - xhi (bf16 [M][ldx]) and optionally xlo (bf16 [M][ldx]): the parts
     *    as the engine's norm and SiLU kernels write them. */
    const float *x;
    bool lo;             /* with x: also the product of the residue */
    const uint16_t *xhi;
    const uint16_t *xlo;
    int64_t ldx;         /* elements; >= K, % 8 == 0; rows 16-byte aligned */
    const uint16_t *w;   /* [N][ldw] bf16; 16-byte aligned */
    int64_t ldw;         /* elements; >= K, % 8 == 0 */
    float *y;            /* [M][ldy] f32 */
    int64_t ldy;         /* elements; >= N */
    int tile_rows;       /* rows of W per block: 0 automatic (32 from N =
                            8192 on, else 16), or 16 or 32 (benchmarks;
                            the sum order does not depend on it) */
} gemm_small_params;

/* Host reference (host pointers): sum over k of (hi + lo) * w in double,
 * rounded to f32, with the parts formed as the kernel forms them. */
void gemm_small_ref(const gemm_small_params *p);

/* ASA_OK or ASA_EINVAL (shapes, strides, alignment, pointers). */
asa_err gemm_small_check(const gemm_small_params *p);

/* The kernel (device pointers).  ASA_EINVAL (nothing launched) for bad
 * parameters, ASA_ECUDA for a launch failure. */
asa_err gemm_small_cuda(const gemm_small_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* ASA_GEMM_SMALL_CUDA_H */
