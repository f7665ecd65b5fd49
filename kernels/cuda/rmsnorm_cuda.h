/*
 * kernels/cuda/rmsnorm_cuda.h - RMSNorm of rows, optionally fused with the
 * residual add that precedes it (ASA-SPEC 2: RMSNorm(y, w) =
 * y / sqrt(mean(y^2) + eps) * w).
 *
 * For each row r (D elements):
 *   h = x[r]                         (no residual)
 *   h = residual[r] + x[r]; residual[r] = h   (with residual, in place)
 *   y[r] = h / sqrt(mean(h^2) + eps) * w
 * The add is an f32 add; h is then rounded to the residual's type before
 * it is normalised, so the normalised value is that of the stored residual
 * stream.  Rows may be
 * slices of longer rows (ld > D), e.g. one latent group of kv_a's output.
 */
#ifndef ASA_RMSNORM_CUDA_H
#define ASA_RMSNORM_CUDA_H

#include <stdint.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RMSNORM_MAX_D 8192

typedef struct rmsnorm_params {
    int rows;             /* >= 1 */
    int D;                /* row length, 1..RMSNORM_MAX_D */
    float eps;            /* > 0 */
    const void *x;        /* [rows][ldx] of x_type */
    kc_dtype x_type;
    int64_t ldx;          /* elements, >= D */
    void *residual;       /* [rows][ldr] of r_type, read and written, or NULL */
    kc_dtype r_type;
    int64_t ldr;          /* elements, >= D (when residual) */
    const void *w;        /* [D] of w_type */
    kc_dtype w_type;
    void *y;              /* [rows][ldy] of y_type; must not overlap x or
                             residual */
    kc_dtype y_type;
    int64_t ldy;          /* elements, >= D */
} rmsnorm_params;

/* Host reference (host pointers), in double.  Assumes valid parameters. */
void rmsnorm_ref(const rmsnorm_params *p);
/* ASA_OK or ASA_EINVAL (NULL pointers, shapes, strides, alignment). */
asa_err rmsnorm_params_check(const rmsnorm_params *p);
/* The kernel; ASA_EINVAL (nothing launched) or ASA_ECUDA. */
asa_err rmsnorm_cuda(const rmsnorm_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* ASA_RMSNORM_CUDA_H */
