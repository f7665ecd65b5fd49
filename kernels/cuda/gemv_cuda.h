/*
 * kernels/cuda/gemv_cuda.h - the decode projection: a small-M product with
 * bf16 weights, y[M, N] = x[M, K] . W[N, K]^T, f32 accumulation.
 *
 * Meant for M = 1..16 (decode batches), where reading W once from device
 * memory is the whole cost: the kernel streams W with 16-byte loads, each
 * thread keeping several of them in flight, and reuses each loaded chunk of
 * W for all M rows of x.  Larger M belongs to a tensor-core GEMM.
 *
 * Order contract: y[m][n] depends only on x's row m, W's row n, K and N (not
 * on M or on the other rows of x), so a sequence's result does not depend on
 * the batch it runs in.
 */
#ifndef ASA_GEMV_CUDA_H
#define ASA_GEMV_CUDA_H

#include <stdint.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GEMV_MAX_M 16

typedef struct gemv_params {
    int M;                /* rows of x and y, 1..GEMV_MAX_M */
    int N;                /* rows of W = columns of y, >= 1 */
    int K;                /* reduction length, >= 8, K % 8 == 0 */
    const void *x;        /* [M][ldx] of x_type; 16-byte aligned */
    kc_dtype x_type;      /* KC_F32 or KC_BF16 */
    int64_t ldx;          /* elements; >= K; ldx % 8 == 0 (bf16), % 4 (f32) */
    const uint16_t *w;    /* [N][ldw] bf16; 16-byte aligned */
    int64_t ldw;          /* elements; >= K, ldw % 8 == 0 */
    float *y_f32;         /* [M][ldy] f32 output, or NULL */
    uint16_t *y_bf16;     /* [M][ldy] bf16 output (rounded from the f32
                             sum), or NULL; at least one of the two */
    int64_t ldy;          /* elements; >= N */
} gemv_params;

/* Host reference (host pointers): sums in double, then rounds to f32 (and
 * to bf16 from that f32).  Assumes valid parameters. */
void gemv_bf16_ref(const gemv_params *p);

/* The kernel (device pointers).  Returns ASA_EINVAL (nothing launched) for
 * bad shapes, strides or alignment, ASA_ECUDA for a launch failure. */
asa_err gemv_bf16_cuda(const gemv_params *p, cudaStream_t stream);

/* gemv_bf16_cuda with the threads per group forced (32, 64, 128 or 256;
 * 0 = the automatic choice): for the benchmark and tests.  The sum order,
 * hence the rounding, depends on the group size. */
asa_err gemv_bf16_cuda_gt(const gemv_params *p, int gt, cudaStream_t stream);

/* The parameter check used by gemv_bf16_cuda (ASA_OK or ASA_EINVAL). */
asa_err gemv_params_check(const gemv_params *p);

#ifdef __cplusplus
}
#endif
#endif /* ASA_GEMV_CUDA_H */
