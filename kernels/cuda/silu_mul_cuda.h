/*
 * kernels/cuda/silu_mul_cuda.h - the SwiGLU gate on the output of the fused
 * gate+up product (ASA-SPEC 2: silu(gate_proj y) * up_proj y,
 * silu(z) = z / (1 + e^-z)).
 *
 * Input row r is [gate (F values) | up (F values)] at gu + r * ld_gu (the
 * layout of y = x . [W_gate; W_up]^T); output out[r][i] =
 * silu(gate[i]) * up[i].  With gu2 the input is the f32 sum gu + gu2
 * (the two halves of a product whose hi and lo parts ran as one stacked
 * product: the add the engine's add2 launch did, in the same order); with
 * out_lo (bf16 output only) the residue of the bf16 output goes there as
 * cb_split_bf16_cuda would cut the f32 result (lo = bf16(o - hi)).
 */
#ifndef ASA_SILU_MUL_CUDA_H
#define ASA_SILU_MUL_CUDA_H

#include <stdint.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct silu_mul_params {
    int rows;             /* >= 1 */
    int F;                /* >= 1 */
    const void *gu;       /* [rows][ld_gu] of gu_type; ld_gu >= 2F */
    kc_dtype gu_type;
    int64_t ld_gu;
    void *out;            /* [rows][ld_out] of out_type, ld_out >= F; must
                             not overlap gu */
    kc_dtype out_type;
    int64_t ld_out;
    const void *gu2;      /* optional: [rows][ld_gu] of gu_type, added to gu */
    uint16_t *out_lo;     /* optional, out_type KC_BF16 only: [rows][ld_out]
                             bf16 residue of the output */
} silu_mul_params;

/* Host reference (host pointers), in double.  Assumes valid parameters. */
void silu_mul_ref(const silu_mul_params *p);
/* ASA_OK or ASA_EINVAL. */
asa_err silu_mul_params_check(const silu_mul_params *p);
/* The kernel; ASA_EINVAL (nothing launched) or ASA_ECUDA. */
asa_err silu_mul_cuda(const silu_mul_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* ASA_SILU_MUL_CUDA_H */
