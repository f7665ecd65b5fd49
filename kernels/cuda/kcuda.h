/*
 * kernels/cuda/kcuda.h - shared vocabulary of the CUDA kernels.
 *
 * Every op lives in its own pair <op>_cuda.h / <op>.cu and exposes
 *   <op>_ref   host reference on host pointers, computed in double (the
 *              spec of the op in code), and
 *   <op>_cuda  the kernel launcher: same parameter struct, device pointers,
 *              the stream last.
 * Launchers validate shapes and alignment and return ASA_EINVAL without
 * launching when a check fails; a launch error returns ASA_ECUDA (logged
 * with file:line).  Kernels trust their inputs.  Launchers never allocate
 * and never synchronise, so they can be captured into a CUDA graph.
 *
 * bf16 values travel as uint16_t bit patterns (common/asa.h converts them
 * on the host); rounding to bf16 is round-to-nearest-even everywhere.
 */
#ifndef ASA_KCUDA_H
#define ASA_KCUDA_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "asa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element type of an activation buffer. */
typedef enum kc_dtype { KC_F32 = 0, KC_BF16 = 1 } kc_dtype;

/* Bytes per element of t. */
static inline int kc_dtype_size(kc_dtype t) { return t == KC_BF16 ? 2 : 4; }

#ifdef __cplusplus
}
#endif
#endif /* ASA_KCUDA_H */
