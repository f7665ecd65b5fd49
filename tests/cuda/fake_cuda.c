/*
 * tests/cuda/fake_cuda.c - host emulation of the CUDA runtime, cuBLAS and
 * the kernel launchers that engine/cuda.c calls, for checking the CUDA
 * backend's host side (metadata, layouts, scheduling of the launches,
 * selection state, padding, sampling paths) on a machine without a GPU.
 *
 * "Device" memory is host memory; every launcher runs its host reference
 * (<op>_ref) instead of the kernel; cublasGemmEx is a double-precision
 * loop; stream capture fails (so graph mode falls back to its padded eager
 * path).  It checks the orchestration, not the kernels: those are compared
 * with the same references on the GPU by test_cuda_kernels.
 *
 * Not built by CMake: tests/cuda/emulate.sh links it into the gpu tests in
 * place of the CUDA libraries and runs them.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>
#include <cublas_v2.h>
#include "asa.h"
#include "attn_latent_cuda.h"
#include "attn_mma_cuda.h"
#include "cb_ops_cuda.h"
#include "gemm_ring_cuda.h"
#include "gemm_small_cuda.h"
#include "gemv_cuda.h"
#include "rmsnorm_cuda.h"
#include "rope_cache_cuda.h"
#include "silu_mul_cuda.h"
#include "topn_cuda.h"
#include "sample_cuda.h"
#include "sample.h"

void **__cudaRegisterFatBinary(void *f) { static void *h; (void)f; return &h; }
void __cudaRegisterFatBinaryEnd(void **h) { (void)h; }
void __cudaUnregisterFatBinary(void **h) { (void)h; }
void __cudaRegisterFunction(void) {}
unsigned __cudaPushCallConfiguration(void) { return 0; }
int __cudaPopCallConfiguration(void) { return 0; }
int __cudaLaunchKernel(void) { abort(); }
/* kc_launch of the kernel libraries (never reached: every launcher is emulated) */
cudaError_t cudaLaunchKernelExC(const cudaLaunchConfig_t *c, const void *f, void **a) {
    (void)c; (void)f; (void)a; abort();
}
int __cudaGetKernel(void) { abort(); }
char __cudaInitModule(void **h) { (void)h; return 0; }
cudaError_t cudaFuncSetAttribute(const void *f, enum cudaFuncAttribute a, int v) { (void)f; (void)a; (void)v; return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { (void)e; return "fake"; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int *n) { *n = getenv("FAKE_NODEV") ? 0 : 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { (void)d; return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d) { (void)a; (void)d; *v = 4; return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned f) { (void)f; *s = (cudaStream_t)malloc(8); return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { free(s); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t s) { (void)s; return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaMalloc(void **p, size_t n) { *p = malloc(n); if (*p) memset(*p, 0xff, n); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
cudaError_t cudaMallocHost(void **p, size_t n) { *p = malloc(n); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaFreeHost(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind k) { (void)k; memmove(d, s, n); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind k, cudaStream_t st) { (void)k; (void)st; memmove(d, s, n); return cudaSuccess; }
cudaError_t cudaMemset(void *d, int v, size_t n) { memset(d, v, n); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st) { (void)st; memset(d, v, n); return cudaSuccess; }

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) { *h = (cublasHandle_t)malloc(8); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) { free(h); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) { (void)h; (void)s; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *w, size_t n) { (void)h; (void)w; (void)n; return CUBLAS_STATUS_SUCCESS; }
int fake_gemm_calls;
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t comp,
                            cublasGemmAlgo_t algo) {
    (void)h; (void)alpha; (void)beta; (void)comp; (void)algo;
    if (ta != CUBLAS_OP_T || tb != CUBLAS_OP_N || at != CUDA_R_16BF || bt != CUDA_R_16BF ||
        (ct != CUDA_R_32F && ct != CUDA_R_16BF)) abort();
    const uint16_t *a = A, *b = B; float *c = C; uint16_t *cb = C;
    fake_gemm_calls++;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int q = 0; q < k; q++)
                s += (double)asa_bf16_to_f32(a[q + (size_t)i * lda]) * asa_bf16_to_f32(b[q + (size_t)j * ldb]);
            if (ct == CUDA_R_16BF) { /* beta 0 only */
                if (*(const float *)beta != 0) abort();
                cb[i + (size_t)j * ldc] = asa_f32_to_bf16((float)s);
            } else {
                c[i + (size_t)j * ldc] = (*(const float *)beta != 0 ? c[i + (size_t)j * ldc] : 0) + (float)s;
            }
        }
    return CUBLAS_STATUS_SUCCESS;
}

asa_err attn_latent_cuda(const attn_params *p, cudaStream_t s) { (void)s; attn_latent_ref(p); return ASA_OK; }
/* A host model of attn_mma's numerics (same key sets as attn_latent_ref):
 * scores in double from queries rounded to bf16 (round_q), softmax in
 * double, the probabilities rounded to bf16 in the weighted sum (the sum
 * of weights unrounded, as the kernel). */
static float fake_bf16(double x) { return asa_bf16_to_f32(asa_f32_to_bf16((float)x)); }
static void fake_attn_model(const attn_params *p, int round_q) {
    const int G = p->c.G, dg = p->c.dg, dR = p->c.dR, B = p->c.B, H = p->H, hpg = H / G;
    const int64_t S = (int64_t)G * dg + dR;
    for (int t = p->t_off; t < p->t_off + p->T; t++) {
        const int pos = p->tok_pos[t];
        const int32_t *tab = p->c.tab + p->c.seq_toff[p->tok_seq[t]];
        for (int g = 0; g < G; g++) {
            /* the entries of this token's keys */
            int nk = 0, cap = p->mode == ATTN_LOCAL ? p->window : p->mode == ATTN_CMP
                                                               ? (pos + 1) / B
                                                               : p->s.top_n * B;
            int64_t *ent = malloc((size_t)(cap > 0 ? cap : 1) * sizeof(int64_t));
            double *sc = malloc((size_t)(cap > 0 ? cap : 1) * sizeof(double));
            if (!ent || !sc)
                abort();
            if (p->mode == ATTN_LOCAL) {
                for (int j = pos - p->window + 1 > 0 ? pos - p->window + 1 : 0; j <= pos; j++)
                    ent[nk++] = (int64_t)tab[j / B] * p->c.page_elems + p->c.layer_off +
                                (int64_t)(j % B) * S;
            } else if (p->mode == ATTN_CMP) {
                for (int b = 0; b < (pos + 1) / B; b++)
                    ent[nk++] = (int64_t)tab[b] * p->c.page_elems + p->c.layer_off +
                                (int64_t)B * S;
            } else {
                const int src = p->s.sel_src[t];
                const int32_t *set;
                int cnt;
                if (src >= 0) {
                    set = p->s.tsel + ((int64_t)src * G + g) * p->s.top_n;
                    cnt = p->s.tsel_cnt[(int64_t)src * G + g];
                } else {
                    const int64_t k = ((int64_t)(-src - 1) * p->s.Lg + p->s.ti) * G + g;
                    set = p->s.slot_sel + k * p->s.top_n;
                    cnt = p->s.slot_cnt[k];
                }
                for (int k = 0; k < cnt; k++)
                    for (int o = 0; o < B; o++)
                        if (set[k] * B + o <= pos)
                            ent[nk++] = (int64_t)tab[set[k]] * p->c.page_elems +
                                        p->c.layer_off + (int64_t)o * S;
            }
            for (int h = g * hpg; h < (g + 1) * hpg; h++) {
                const float *qt = p->qt + ((int64_t)t * H + h) * dg;
                const float *qr = p->qr + (int64_t)t * p->ld_qr + (int64_t)h * p->qr_stride;
                double m = -INFINITY, l = 0.0;
                for (int k = 0; k < nk; k++) {
                    const uint16_t *e = p->c.kv + ent[k];
                    double a = 0.0;
                    for (int i = 0; i < dg; i++)
                        a += (round_q ? fake_bf16(qt[i]) : qt[i]) *
                             (double)asa_bf16_to_f32(e[g * dg + i]);
                    for (int i = 0; i < dR; i++)
                        a += (round_q ? fake_bf16(qr[i]) : qr[i]) *
                             (double)asa_bf16_to_f32(e[G * dg + i]);
                    sc[k] = a * p->scale;
                    if (sc[k] > m)
                        m = sc[k];
                }
                for (int k = 0; k < nk; k++) {
                    sc[k] = exp(sc[k] - m);
                    l += sc[k];
                }
                const int64_t o = ((int64_t)t * H + h) * dg;
                for (int i = 0; i < dg; i++) {
                    double a = 0.0;
                    for (int k = 0; k < nk; k++)
                        a += fake_bf16(sc[k]) * (double)asa_bf16_to_f32(p->c.kv[ent[k] + g * dg + i]);
                    double v = l > 0 ? a / l : 0.0;
                    if (p->mode == ATTN_SLC) {
                        const float *gt = p->gate + (int64_t)t * p->ld_qr;
                        v = 1.0 / (1.0 + exp(-(double)gt[h])) * p->u_cmp[o + i] +
                            1.0 / (1.0 + exp(-(double)gt[H + h])) * v;
                    }
                    p->u[o + i] = (float)v;
                }
                if (p->mode == ATTN_CMP)
                    p->lse[(int64_t)t * H + h] = nk > 0 ? (float)(m + log(l)) : -INFINITY;
            }
            free(ent);
            free(sc);
        }
    }
}

/* the tensor-core form: the same shape limits (the caller's fallback runs
 * for the others) and the model of its numerics above (hi + lo queries:
 * unrounded).  ASA_FAKE_MMA_EXACT=1: the plain reference instead. */
asa_err attn_mma_cuda(const attn_params *p, int flags, cudaStream_t s) {
    (void)s;
    if (p->c.dg + p->c.dR > 256 || p->c.dg > 192)
        return ASA_EUNSUPPORTED;
    const char *ex = getenv("ASA_FAKE_MMA_EXACT");
    if (ex && strcmp(ex, "1") == 0) {
        attn_latent_ref(p);
        return ASA_OK;
    }
    if (flags & ATTN_MMA_VFIRST) {
        if (p->mode != ATTN_LOCAL || p->c.dg != 128 || p->c.dR != 32) return ASA_EUNSUPPORTED;
        if (p->u_bf16) { /* the f32 rows, rounded */
            const size_t n = (size_t)p->T * p->H * (p->c.dg / 2);
            float *u = malloc(n * sizeof *u);
            if (!u) return ASA_ENOMEM;
            attn_params q = *p;
            q.u = u;
            attn_vfirst_ref(&q);
            for (size_t i = 0; i < n; i++)
                p->u_bf16[i] = asa_f32_to_bf16(u[i]);
            free(u);
            return ASA_OK;
        }
        attn_vfirst_ref(p);
        return ASA_OK;
    }
    const int hl = (flags & ATTN_MMA_QSPLIT_ALL) || (p->mode == ATTN_CMP && (flags & ATTN_MMA_QSPLIT));
    fake_attn_model(p, !hl);
    return ASA_OK;
}

asa_err attn_merge_cuda(const attn_params *p, cudaStream_t s) {
    (void)s;
    if (p->T < 1 || p->n_split < 2 || !p->part || !p->u)
        return ASA_EINVAL;
    attn_merge_ref(p);
    return ASA_OK;
}

asa_err select_blocks_cuda(const select_params *p, cudaStream_t s) { (void)s; select_blocks_ref(p); return ASA_OK; }
asa_err compress_cuda(const compress_params *p, cudaStream_t s) { (void)s; compress_ref(p); return ASA_OK; }
asa_err selstore_cuda(const selstore_params *p, cudaStream_t s) {
    (void)s;
    for (int i = 0; i < p->n; i++)
        for (int g = 0; g < p->G; g++) {
            if (p->slot[i] < 0) continue;
            int64_t dst = ((int64_t)p->slot[i] * p->s.Lg + p->s.ti) * p->G + g, src = (int64_t)p->tok[i] * p->G + g;
            memcpy(p->s.slot_sel + dst * p->s.top_n, p->s.tsel + src * p->s.top_n, (size_t)p->s.top_n * 4);
            p->s.slot_cnt[dst] = p->s.tsel_cnt[src];
        }
    return ASA_OK;
}
asa_err rope_cache_cuda(const rope_cache_params *p, cudaStream_t s) { (void)s; rope_cache_ref(p); return ASA_OK; }
asa_err cb_absorb_cuda(const absorb_params *p, cudaStream_t s) { (void)s; cb_absorb_ref(p); return ASA_OK; }
int fake_rope_absorb_calls;
asa_err cb_rope_absorb_cuda(const rope_cache_params *rp, const absorb_params *p, cudaStream_t s) {
    (void)s;
    if (rp->qa2)
        return ASA_EUNSUPPORTED;
    fake_rope_absorb_calls++;
    rope_cache_ref(rp);
    cb_absorb_ref(p);
    return ASA_OK;
}
asa_err cb_expand_cuda(const expand_params *p, cudaStream_t s) {
    (void)s;
    if (p->o_hi) return ASA_EUNSUPPORTED;
    cb_expand_ref(p);
    return ASA_OK;
}
/* the tensor-core launchers take the shapes the real ones take */
static bool fake_hm_ok(int K, int N) {
    return K >= 16 && K % 16 == 0 && N >= 16 && N % 16 == 0 && N <= 256 &&
           (size_t)K * (N + 8) * 2 + (size_t)128 * (K + 8) <= 100 * 1024;
}
asa_err cb_absorb_mma_cuda(const absorb_params *p, cudaStream_t s) {
    (void)s;
    if (!fake_hm_ok(p->dh, p->dg)) return ASA_EUNSUPPORTED;
    cb_absorb_ref(p);
    return ASA_OK;
}
/* the i-th q nope value of qa (token, head, column < dh) */
static float *fake_nope(const rope_cache_params *rp, size_t i) {
    const size_t per = (size_t)rp->H * rp->dh, t = i / per, r = i % per;
    return rp->qa + t * rp->ld_qa + r / rp->dh * (rp->dh + rp->dR) + r % rp->dh;
}
/* rope + the tensor-core absorb: as the two, but with qa2 the q nope
 * columns of qa are left unsummed, as the real launch leaves them (so a
 * reader of them after it would show here too) */
asa_err cb_rope_absorb_mma_cuda(const rope_cache_params *rp, const absorb_params *p, cudaStream_t s) {
    (void)s;
    if (!fake_hm_ok(p->dh, p->dg)) return ASA_EUNSUPPORTED;
    if (rp->qa2 && (rp->ld_qa % 4 || rp->dh % 4 || rp->dR % 4)) return ASA_EUNSUPPORTED;
    const size_t nn = (size_t)rp->T * rp->H * rp->dh;
    float *keep = rp->qa2 ? malloc(nn * sizeof(float)) : NULL;
    if (rp->qa2 && !keep) return ASA_ENOMEM;
    for (size_t i = 0; keep && i < nn; i++) keep[i] = *fake_nope(rp, i);
    rope_cache_ref(rp);
    cb_absorb_ref(p);
    for (size_t i = 0; keep && i < nn; i++) *fake_nope(rp, i) = keep[i];
    free(keep);
    return ASA_OK;
}
asa_err cb_expand_mma_cuda(const expand_params *p, cudaStream_t s) {
    (void)s;
    if (!fake_hm_ok(p->dg, p->dv)) return ASA_EUNSUPPORTED;
    if (!p->o_hi) {
        cb_expand_ref(p);
        return ASA_OK;
    }
    /* the parts: o computed into a scratch row set, then cut */
    expand_params q = *p;
    q.o = malloc((size_t)p->T * p->ld_o * sizeof(float));
    if (!q.o) return ASA_ENOMEM;
    cb_expand_ref(&q);
    for (int t = 0; t < p->T; t++)
        for (int i = 0; i < p->H * p->dv; i++) {
            const size_t at = (size_t)t * p->ld_o + i;
            const uint16_t hi = asa_f32_to_bf16(q.o[at]);
            p->o_hi[at] = hi;
            if (p->o_lo) p->o_lo[at] = asa_f32_to_bf16(q.o[at] - asa_bf16_to_f32(hi));
        }
    free(q.o);
    return ASA_OK;
}
asa_err cb_embed_cuda(int T, int d, const int32_t *tok, const uint16_t *e, float *x, cudaStream_t s) {
    (void)s;
    for (int t = 0; t < T; t++) for (int i = 0; i < d; i++) x[(size_t)t * d + i] = asa_bf16_to_f32(e[(size_t)tok[t] * d + i]);
    return ASA_OK;
}
asa_err cb_gather_rows_cuda(int n, int d, const int32_t *rows, const float *src, int64_t ld, float *dst, cudaStream_t s) {
    (void)s;
    for (int r = 0; r < n; r++) memcpy(dst + (size_t)r * d, src + rows[r] * ld, (size_t)d * 4);
    return ASA_OK;
}
asa_err cb_xgather_cuda(const xgather_params *p, cudaStream_t s) {
    (void)s;
    for (int r = 0; r < p->rows; r++) {
        const uint16_t *src = p->kv + (int64_t)p->pages[r / p->B] * p->page_elems + p->layer_off +
                              (int64_t)(r % p->B) * (p->dc + p->dR);
        memcpy(p->c_out + (int64_t)r * p->ld_c, src, (size_t)p->dc * 2);
        memcpy(p->r_out + (int64_t)r * p->ld_r, src + p->dc, (size_t)p->dR * 2);
    }
    return ASA_OK;
}
cudaError_t cudaMemcpy2D(void *d, size_t dp, const void *sr, size_t sp, size_t w, size_t h, enum cudaMemcpyKind k) {
    (void)k;
    for (size_t r = 0; r < h; r++) memmove((char *)d + r * dp, (const char *)sr + r * sp, w);
    return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *sr, size_t sp, size_t w, size_t h, enum cudaMemcpyKind k, cudaStream_t st) {
    (void)st;
    return cudaMemcpy2D(d, dp, sr, sp, w, h, k);
}
asa_err cb_split_bf16_cuda(int rows, int cols, const float *x, int64_t ld, uint16_t *hi, uint16_t *lo, cudaStream_t s) {
    (void)s;
    for (int r = 0; r < rows; r++) for (int e = 0; e < cols; e++) {
        float v = x[r * ld + e]; uint16_t h = asa_f32_to_bf16(v); hi[r * cols + e] = h;
        if (lo) lo[r * cols + e] = asa_f32_to_bf16(v - asa_bf16_to_f32(h));
    }
    return ASA_OK;
}
asa_err cb_rmsnorm_cuda(int rows, int D, float eps, const float *x, const float *x2, int n2, float *res,
                        const float *w, float *y, cudaStream_t s) {
    (void)s;
    if (x2 && (n2 < 1 || n2 > 3)) return ASA_EINVAL;
    if (D % 4) return ASA_EUNSUPPORTED;
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        float *v = malloc((size_t)D * 4);
        for (int e = 0; e < D; e++) {
            v[e] = x[(size_t)r * D + e];
            for (int q = 0; x2 && q < n2; q++) /* first, as add2 launches */
                v[e] += x2[((size_t)q * rows + r) * D + e];
            if (res) v[e] += res[(size_t)r * D + e];
            if (res) res[(size_t)r * D + e] = v[e];
            ss += (double)v[e] * v[e];
        }
        const float inv = (float)(1.0 / sqrt(ss / D + eps));
        for (int e = 0; e < D; e++) y[(size_t)r * D + e] = v[e] * inv * w[e];
        free(v);
    }
    return ASA_OK;
}
asa_err cb_rmsnorm_split_cuda(int rows, int D, float eps, const float *x, const float *x2, int n2,
                              float *res, const float *w, uint16_t *hi, uint16_t *lo, int64_t ldo,
                              cudaStream_t s) {
    if (ldo < D) return ASA_EINVAL;
    if (ldo % 4) return ASA_EUNSUPPORTED;
    float *y = malloc((size_t)rows * D * 4);
    asa_err e = cb_rmsnorm_cuda(rows, D, eps, x, x2, n2, res, w, y, s);
    for (int r = 0; r < rows && !e; r++) /* the parts at row stride ldo */
        e = cb_split_bf16_cuda(1, D, y + (size_t)r * D, D, hi + (size_t)r * ldo,
                               lo ? lo + (size_t)r * ldo : NULL, s);
    free(y);
    return e;
}
asa_err cb_add2_cuda(int rows, int cols, const float *a, const float *b, float *y, cudaStream_t s) {
    (void)s;
    for (size_t i = 0; i < (size_t)rows * cols; i++) y[i] = a[i] + b[i];
    return ASA_OK;
}
asa_err gemv_bf16_cuda(const gemv_params *p, cudaStream_t s) { (void)s; asa_err e = gemv_params_check(p); if (e) return e; gemv_bf16_ref(p); return ASA_OK; }
asa_err gemm_small_cuda(const gemm_small_params *p, cudaStream_t s) { (void)s; asa_err e = gemm_small_check(p); if (e) return e; gemm_small_ref(p); return ASA_OK; }
asa_err gemm_ring_cuda(const gemm_ring_params *p, cudaStream_t s) { (void)s; asa_err e = gemm_ring_check(p); if (e) return e; gemm_ring_ref(p); return ASA_OK; }
asa_err rmsnorm_cuda(const rmsnorm_params *p, cudaStream_t s) { (void)s; asa_err e = rmsnorm_params_check(p); if (e) return e; rmsnorm_ref(p); return ASA_OK; }
asa_err silu_mul_cuda(const silu_mul_params *p, cudaStream_t s) { (void)s; asa_err e = silu_mul_params_check(p); if (e) return e; silu_mul_ref(p); return ASA_OK; }
cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = (cudaEvent_t)malloc(8); return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) { (void)e; (void)s; return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) { (void)a; (void)b; *ms = 0.001f; return cudaSuccess; }
asa_err topn_cuda(const topn_params *p, cudaStream_t s) { (void)s; asa_err e = topn_params_check(p); if (e) return e; topn_ref(p); return ASA_OK; }
/* sample_cuda: eng_sample on each row rebuilt from the packed parameters
 * (checks the packing; the kernel itself is test_cuda_kernels'). */
asa_err sample_cuda(const sample_params *p, cudaStream_t s) {
    (void)s;
    asa_err e = sample_params_check(p);
    if (e) return e;
    float *scr = malloc((size_t)2 * p->V * sizeof(float));
    for (int b = 0; b < p->B && !e; b++) {
        const sample_row *r = &p->rows[b];
        if (r->skip) continue;
        eng_sampling sp = {.temperature = r->temperature, .top_k = r->top_k, .top_p = r->top_p,
                           .min_p = r->min_p, .presence_penalty = r->presence,
                           .frequency_penalty = r->frequency, .repetition_penalty = r->repetition,
                           .bias_ids = r->n_bias ? p->bias_ids + r->bias_off : NULL,
                           .bias_vals = r->n_bias ? p->bias_vals + r->bias_off : NULL,
                           .n_bias = r->n_bias, .seed = r->seed, .n_logprobs = r->n_logprobs};
        /* the output ids are packed only when a penalty reads them */
        const bool lists = (r->repetition != 1.0f && r->n_prompt + r->n_output > 0) ||
                           ((r->frequency != 0 || r->presence != 0) && r->n_output > 0);
        const int32_t *ids = p->toks + r->tok_off;
        int32_t *out = calloc((size_t)r->n_output + 1, 4);
        if (lists) memcpy(out, ids + r->n_prompt, (size_t)r->n_output * 4);
        eng_seq_result res;
        e = eng_sample(p->logits + (size_t)b * p->ld, p->V, &sp, r->n_prompt ? ids : NULL, r->n_prompt,
                       out, r->n_output, scr, &res);
        free(out);
        p->token[b] = res.token;
        p->token_lp[b] = res.logprob;
        for (int j = 0; j < r->n_logprobs; j++) {
            p->top_ids[(size_t)b * p->n_top + j] = res.top_ids[j];
            p->top_lp[(size_t)b * p->n_top + j] = res.top_logprobs[j];
        }
    }
    free(scr);
    return e;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode m) { (void)s; (void)m; return cudaErrorNotSupported; }
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) { (void)s; *g = 0; return cudaErrorNotSupported; }
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long f) { (void)g; (void)f; *e = 0; return cudaErrorNotSupported; }
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) { (void)e; (void)s; return cudaErrorNotSupported; }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { (void)e; return cudaSuccess; }
cudaError_t cudaGraphDestroy(cudaGraph_t g) { (void)g; return cudaSuccess; }

/* Strided batched f32 products (absorb/expand), double sums. */
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                                          int n, int k, const void *alpha, const void *A, cudaDataType at, int lda,
                                          long long sa, const void *B, cudaDataType bt, int ldb, long long sb,
                                          const void *beta, void *C, cudaDataType ct, int ldc, long long sc,
                                          int batch, cublasComputeType_t comp, cublasGemmAlgo_t algo) {
    (void)h; (void)comp; (void)algo;
    if (at == CUDA_R_16BF && bt == CUDA_R_16BF) { /* bf16 in (a product's K slices), f32 out */
        if (ta != CUBLAS_OP_T || tb != CUBLAS_OP_N || ct != CUDA_R_32F) abort();
        for (int z = 0; z < batch; z++)
            cublasGemmEx(h, ta, tb, m, n, k, alpha, (const uint16_t *)A + z * sa, at, lda,
                         (const uint16_t *)B + z * sb, bt, ldb, beta, (float *)C + z * sc, ct, ldc,
                         comp, algo);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (tb != CUBLAS_OP_N || at != CUDA_R_32F || bt != CUDA_R_32F || ct != CUDA_R_32F) abort();
    const float al = *(const float *)alpha, be = *(const float *)beta;
    fake_gemm_calls++;
    for (int z = 0; z < batch; z++) {
        const float *a = (const float *)A + z * sa, *b = (const float *)B + z * sb;
        float *c = (float *)C + z * sc;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double s = 0;
                for (int q = 0; q < k; q++)
                    s += (double)(ta == CUBLAS_OP_N ? a[i + (size_t)q * lda] : a[q + (size_t)i * lda]) *
                         b[q + (size_t)j * ldb];
                c[i + (size_t)j * ldc] = (float)(al * s + (be != 0 ? be * c[i + (size_t)j * ldc] : 0));
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}
cudaError_t cudaProfilerStart(void) { return cudaSuccess; }
cudaError_t cudaProfilerStop(void) { return cudaSuccess; }
