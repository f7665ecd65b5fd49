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
 *
 * Programmatic dependent launch (kcuda.h): the kernel reads W before its
 * wait for the previous kernel, so W must not be written by the kernels
 * before it in the stream (weights).  x, the residual rows and the outputs
 * are touched only after the wait.
 */
#ifndef ASA_GEMV_CUDA_H
#define ASA_GEMV_CUDA_H

#include <stdint.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GEMV_MAX_M 16

/* What the kernel multiplies W with (x_mode).  The fused modes compute the
 * x rows (f32, x_type KC_F32) once per block into shared memory, after the
 * weight loads of the first trip are in flight; every block recomputes
 * them (M * K <= GEMV_FUSE_MAX_ELEMS).  They replace a separate kernel of
 * the decode step, with the same f32 arithmetic in the same order (the
 * results are bitwise those of the two-kernel path: cb_rmsnorm_cuda, or
 * silu_mul_cuda, then the plain product). */
typedef enum gemv_xmode {
    GEMV_X_PLAIN = 0, /* x as given */
    /* RMSNorm with the residual add of the engine: v = x[m] (+ res[m]),
     * x'[m][k] = v[k] * (1 / sqrt(mean(v^2) + eps)) * norm_w[k]; block 0
     * stores v to res_out[m] when res is set (res_out must not alias x or
     * res: the other blocks still read them) and x' to xn_out[m] when
     * xn_out is set.  K % 4 == 0, K <= 4096; res, res_out, xn_out have row
     * stride ldx, 16-byte aligned. */
    GEMV_X_NORM = 1,
    /* x'[m][k] = silu(x[m][k]) * x[m][K + k]: the gate and up halves of a
     * gate|up product row (ldx >= 2K), as silu_mul_cuda computes them. */
    GEMV_X_SILU = 2,
} gemv_xmode;
/* M * K of the fused modes: 48 KiB of shared memory for the rows (the norm
 * mode also stages the K norm weights there, before its PDL wait) */
#define GEMV_FUSE_MAX_ELEMS 12288

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
    gemv_xmode x_mode;    /* GEMV_X_PLAIN (0) unless set */
    const float *res;     /* GEMV_X_NORM: residual rows added to x, or NULL */
    float *res_out;       /* GEMV_X_NORM: x + res (by block 0), when res is set */
    float *xn_out;        /* GEMV_X_NORM: the normalised rows (by block 0), or NULL */
    const float *norm_w;  /* GEMV_X_NORM: [K] */
    float eps;            /* GEMV_X_NORM: > 0 */
} gemv_params;

/* Host reference (host pointers): sums in double, then rounds to f32 (and
 * to bf16 from that f32); the fused modes form x' in double from the f32
 * inputs (res_out, xn_out as the kernel: f32).  Assumes valid parameters. */
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
