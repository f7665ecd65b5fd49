/*
 * kernels/cuda/gemm_ring_cuda.h - the decode product for 9 to 64 rows on
 * tensor cores, reading W once: y[M, N] (+)= x[M, K] . W[N, K]^T with bf16
 * weights, the activations as a bf16 pair x ~ hi + lo (or hi alone), f32
 * accumulation.
 *
 * Schedule.  A block owns 128 rows of W (16 a warp) and a slice of K
 * (split K: the slices' partial tiles go to a workspace and the last block
 * of each 128-row column adds them in slice order, so the result does not
 * depend on which block finishes first).  W and the x rows stream through
 * a shared-memory ring of 3-4 stages of 64 k (cp.async, 16 bytes a copy);
 * A fragments by ldmatrix, B fragments from the staged x rows, mma.sync
 * m16n8k16.  Under programmatic dependent launch (kcuda.h) the weights of
 * the first stages are requested before the wait: W must not be written by
 * the kernels before it in the stream (weights).
 *
 * Order contract: y[m][n] depends only on x's row m (its parts), W's row
 * n, K and N (the split count comes from N and K alone): a row's result
 * does not depend on M or on the other rows.
 *
 * Not on by default in the engine (ASA_CUDA_RING_ROWS): its main loop
 * beats cuBLAS on the hi + lo q|kv_a|g, o_proj and down up to 32 rows, but
 * the ordered sum of the slices through the workspace costs 4+ us a
 * launch and the whole loses (kernels/cuda/NOTES.md, "Fourteenth run").
 */
#ifndef ASA_GEMM_RING_CUDA_H
#define ASA_GEMM_RING_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GEMM_RING_MAX_M 64
#define GEMM_RING_KC 64 /* K granularity */

typedef struct gemm_ring_params {
    int M;               /* rows of x and y, 1..GEMM_RING_MAX_M */
    int N;               /* rows of W = columns of y, >= 1 */
    int K;               /* reduction length, K % GEMM_RING_KC == 0, > 0 */
    const uint16_t *xhi; /* bf16 [M][ldx]: x's high part */
    const uint16_t *xlo; /* bf16 [M][ldx]: the residue, or NULL */
    int64_t ldx;         /* elements; >= K, % 8 == 0; rows 16-byte aligned */
    const uint16_t *w;   /* [N][ldw] bf16; 16-byte aligned */
    int64_t ldw;         /* elements; >= K, % 8 == 0 */
    float *y;            /* [M][ldy] f32 */
    int64_t ldy;         /* elements; >= N */
    bool acc;            /* y += the product (else y = the product) */
    /* split K (gemm_ring_splits(N, K) > 1): partial tiles, at least
     * gemm_ring_ws_floats(M, N, K) floats, and one counter a 128-row
     * column (gemm_ring_counters(N)), zero before the first launch (each
     * launch leaves them zero); launches that share them must be ordered
     * in one stream */
    float *ws;
    int *counters;
} gemm_ring_params;

/* K slices of a product: from N and K alone (about 264 blocks). */
int gemm_ring_splits(int N, int K);
/* Floats of workspace a launch of M rows needs (0 without split K). */
size_t gemm_ring_ws_floats(int M, int N, int K);
/* Counters a launch needs. */
int gemm_ring_counters(int N);
/* Floats of workspace enough for every product of at most M rows and N
 * outputs (any K): one buffer for a model's products in one stream. */
size_t gemm_ring_ws_bound(int M, int N);

/* Host reference (host pointers): sum over k of (hi + lo) * w in double,
 * rounded to f32 (added to y with acc). */
void gemm_ring_ref(const gemm_ring_params *p);

/* ASA_OK or ASA_EINVAL (shapes, strides, alignment, pointers, workspace). */
asa_err gemm_ring_check(const gemm_ring_params *p);

/* The kernel (device pointers).  ASA_EINVAL (nothing launched) for bad
 * parameters, ASA_ECUDA for a launch failure. */
asa_err gemm_ring_cuda(const gemm_ring_params *p, cudaStream_t stream);

/* Lab form (tools/gpu/gemm_dec_lab.cu; not used by the engine): K cut
 * into at most `cluster` slices (2..16; above 8 a
 * non-portable cluster size), the blocks of a 128-row column one thread
 * block cluster that adds the slices' tiles in slice order through
 * distributed shared memory instead of the workspace (ws and counters
 * ignored).  ASA_EINVAL for bad parameters (also K < 2 x GEMM_RING_KC),
 * ASA_EUNSUPPORTED where built without nvcc (the CPU emulation). */
asa_err gemm_ring_cuda_cluster(const gemm_ring_params *p, int cluster, cudaStream_t stream);

/* The cluster form with its main loop on warpgroup MMAs (wgmma, sm_90a):
 * each warpgroup of a block multiplies its 64 W rows of a stage by the x
 * rows as one m64nNk16 MMA a 16 k (hi, then lo), reading x from shared
 * memory through the hardware instead of per-lane fragment loads (x rows
 * staged unpadded, swizzled like W).  cluster 1..16 slices (1: no split).
 * Same results contract as the cluster form (the slices added in order; a
 * row's bits depend on N, K and cluster, not on M); ASA_EUNSUPPORTED where
 * built without nvcc.  Measured on the H200 (kernels/cuda/NOTES.md,
 * "Sixteenth run"): 19-40 % faster than the mma.sync cluster form at 64
 * rows, equal at 16, but still behind cuBLAS except q|kv_a|g hi + lo at
 * 48-64 rows; the engine takes it only when asked (ASA_CUDA_WG_ROWS). */
asa_err gemm_ring_cuda_wg(const gemm_ring_params *p, int cluster, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* ASA_GEMM_RING_CUDA_H */
