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

/* Programmatic dependent launch (sm_90).  While kc_pdl_on is non-zero, the
 * launchers of the CUDA engine's kernels (gemv, silu_mul, cb_ops,
 * rope_cache, attn_latent) launch with programmatic stream serialization:
 * a kernel may start while the previous kernel of the stream still runs.
 * Every kernel so launched first waits for the previous grid (complete,
 * its writes visible: griddepcontrol.wait) before it touches memory that a
 * previous kernel writes or reads; only reads of data that no kernel of
 * the stream writes (weights) may come before the wait.  It then lets the
 * next kernel launch (griddepcontrol.launch_dependents), so at most two
 * grids overlap.  A kernel launched without the attribute (cuBLAS, topn,
 * memcpy) orders as usual; a PDL kernel after it still waits for it.
 * One setting per process (the CUDA engine sets it at create from
 * ASA_CUDA_PDL); default off.  Weak: one definition however many
 * translation units include this header. */
__attribute__((weak)) int kc_pdl_on = 0;
static inline void kc_set_pdl(int on) { kc_pdl_on = on; }

#ifdef __cplusplus
}
#endif
#endif /* ASA_KCUDA_H */
