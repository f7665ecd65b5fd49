/*
 * kernels/cuda/cb_ops_cuda.h - small per-head and row ops of the CUDA
 * engine: the absorbed query q~ = W_UK^T qC, the value expansion
 * o = W_UV u, the embedding lookup and a row gather.  f32 accumulation;
 * weights bf16.
 */
#ifndef ASA_CB_OPS_CUDA_H
#define ASA_CB_OPS_CUDA_H

#include <stdint.h>

#include "kcuda.h"
#include "rope_cache_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* absorb: qt[t][h][q] = sum_r W_UK,h[r][q] * qa[t * ld_qa + h * q_stride + r],
 * r < dh, q < dg, with W_UK,h = kvb + h * (dh + dv) * dg (row-major [dh][dg],
 * the kv_b_proj layout). */
typedef struct absorb_params {
    int T, H, dh, dv, dg;
    const float *qa;
    int64_t ld_qa, q_stride;
    const uint16_t *kvb;
    float *qt;              /* [T][H][dg] */
} absorb_params;
asa_err cb_absorb_cuda(const absorb_params *p, cudaStream_t stream);
void cb_absorb_ref(const absorb_params *p);

/* rope_cache_cuda(rp) and cb_absorb_cuda(p) as one launch (decode: one
 * graph node less per layer); rp->qa == p->qa, same T.  The results are
 * those of the two launches.  ASA_EUNSUPPORTED (nothing launched) when the
 * absorb shapes are not those of its vector path, or with rp->qa2: run the
 * two launchers. */
asa_err cb_rope_absorb_cuda(const rope_cache_params *rp, const absorb_params *p,
                            cudaStream_t stream);

/* expand: o[t * ld_o + h * dv + v] = sum_q wuvT[h][q][v] * u[t][h][q] (f32
 * out), wuvT = W_UV transposed per head ([H][dg][dv]). */
typedef struct expand_params {
    int T, H, dg, dv;
    const float *u;         /* [T][H][dg] */
    const uint16_t *wuvT;
    float *o;
    int64_t ld_o;
    /* cb_expand_mma_cuda only (the others refuse it: ASA_EUNSUPPORTED):
     * when not NULL, o is not written; o's bf16 rounding goes to o_hi
     * instead and, when o_lo is not NULL, the rounding of its residue to
     * o_lo (cb_split_bf16_cuda's parts; same indexing, ld_o even) */
    uint16_t *o_hi, *o_lo;
} expand_params;
asa_err cb_expand_cuda(const expand_params *p, cudaStream_t stream);
void cb_expand_ref(const expand_params *p);

/* absorb and expand on tensor cores (x as bf16 hi + lo pairs: ~16 bits,
 * products exact, f32 sums; relative error ~1e-5): one block per (head,
 * run of 16-token tiles), W_h staged once per block.  The results of a
 * token do not depend on the other tokens.  ASA_EUNSUPPORTED (nothing
 * launched) unless the product's K (absorb dh, expand dg) and N (dg, dv)
 * are multiples of 16, N <= 256, the shared memory (K (N + 8) bf16 and
 * 2 x 16 (K + 8) floats) <= 100 KiB, the weights and the input rows
 * 16-byte aligned (per head too) and the output rows 8-byte aligned. */
asa_err cb_absorb_mma_cuda(const absorb_params *p, cudaStream_t stream);
asa_err cb_expand_mma_cuda(const expand_params *p, cudaStream_t stream);

/* rope_cache_cuda(rp) and cb_absorb_mma_cuda(p) as one launch (one graph
 * node less per layer from a few dozen tokens on); rp->qa == p->qa, the
 * same T, H, dh, row stride and head stride (dh + dR).  With rp->qa2 the
 * absorb reads qa + qa2 and the q heads' nope columns (h (dh + dR) + [0,
 * dh)) of qa are left as they were: every other column holds the sum
 * afterwards, as rope_cache_cuda leaves it (ASA_EUNSUPPORTED where the
 * row is not cut in float4s: ld_qa, dh, dR multiples of 4, qa and qa2
 * 16-byte aligned).  Otherwise the results are those of the two launches,
 * bitwise; ASA_EUNSUPPORTED (nothing launched) where
 * cb_absorb_mma_cuda's shapes do not fit. */
asa_err cb_rope_absorb_mma_cuda(const rope_cache_params *rp, const absorb_params *p,
                                cudaStream_t stream);

/* x[t][e] = embed[tok[t]][e] widened to f32, e < d. */
asa_err cb_embed_cuda(int T, int d, const int32_t *tok, const uint16_t *embed, float *x,
                      cudaStream_t stream);
/* dst[r][e] = src[rows[r] * ld_src + e] (f32), r < n, e < d. */
asa_err cb_gather_rows_cuda(int n, int d, const int32_t *rows, const float *src,
                            int64_t ld_src, float *dst, cudaStream_t stream);
/* Splits f32 rows into bf16 parts: hi[r][e] = bf16(x), and when lo is not
 * NULL lo[r][e] = bf16(x - hi) (so hi + lo carries ~16 bits of x), for
 * r < rows, e < cols; x has row stride ld, hi/lo are dense [rows][cols]. */
asa_err cb_split_bf16_cuda(int rows, int cols, const float *x, int64_t ld, uint16_t *hi,
                           uint16_t *lo, cudaStream_t stream);

/* RMSNorm of f32 rows (dense, row length D), with the residual add of the
 * engine: v = x[r] (+ x2[r] + x2[rows + r] + ... over n2 = 1..3 blocks of
 * rows when x2 is not NULL: the other parts of a product whose reader adds
 * them, a stacked hi + lo pair's second half or a product's other
 * K-halves, added first and in order as cb_add2_cuda launches would) (+
 * residual[r], the sum also stored to residual[r] when residual is not
 * NULL), y[r][e] = v[e] * (1 / sqrt(mean(v^2) + eps)) * w[e].
 * One block per row, every load issued before the first use.  Returns
 * ASA_EUNSUPPORTED (nothing launched) unless D % 4 == 0, D <= 4096 and the
 * pointers are 16-byte aligned, x != residual, x2 != residual.  A row's
 * result does not depend on the other rows. */
asa_err cb_rmsnorm_cuda(int rows, int D, float eps, const float *x, const float *x2, int n2,
                        float *residual, const float *w, float *y, cudaStream_t stream);
/* The same with the normalised rows cut into bf16 parts as
 * cb_split_bf16_cuda would cut them (hi, and lo when not NULL; [rows][D]
 * each at row stride ldo >= D, nothing else written) instead of f32 y: the
 * input of a cuBLAS product without the f32 round trip.  ldo = D: dense
 * parts; lo = buf, hi = buf + D, ldo = 2D: rows [lo | hi], the input of
 * one product with K = 2D against [W | W].  Also needs hi/lo 8-byte
 * aligned and ldo % 4 == 0 (ASA_EUNSUPPORTED), ldo >= D (ASA_EINVAL). */
asa_err cb_rmsnorm_split_cuda(int rows, int D, float eps, const float *x, const float *x2, int n2,
                              float *residual, const float *w, uint16_t *hi, uint16_t *lo,
                              int64_t ldo, cudaStream_t stream);

/* The expanded form of a local layer's prefill attention (attn_mma_cuda
 * with ATTN_MMA_VFIRST).  xgather: for rows r < rows (B rows a page), the
 * cache entry k = r % B of page pages[r / B] (entry [c (dc) | kR (dR)] at
 * kv + page * page_elems + layer_off + k * (dc + dR)) is copied: c to
 * c_out[r * ld_c ..], kR to r_out[r * ld_r ..] (bf16 bits, exact). */
typedef struct xgather_params {
    int rows, B;
    const int32_t *pages;
    const uint16_t *kv;
    int64_t page_elems, layer_off;
    int dc, dR;
    uint16_t *c_out;
    int64_t ld_c;
    uint16_t *r_out;
    int64_t ld_r;
} xgather_params;
asa_err cb_xgather_cuda(const xgather_params *p, cudaStream_t stream);

/* y[r][e] = a[r][e] + b[r][e] (f32, dense [rows][cols] each). */
asa_err cb_add2_cuda(int rows, int cols, const float *a, const float *b, float *y,
                     cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* ASA_CB_OPS_CUDA_H */
