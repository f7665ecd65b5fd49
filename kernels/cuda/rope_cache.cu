/*
 * kernels/cuda/rope_cache.cu - RoPE + latent RMSNorm + cache write
 * (contract in rope_cache_cuda.h).  One block of 128 threads per token: one
 * warp per latent group computes its sum of squares (shuffles, fixed order)
 * and writes the normalised slice while the other warps rotate the query
 * heads' rope pairs and the rope key (rope_cache_dev.cuh: the body is shared
 * with the fused rope + absorb launch of cb_ops.cu).  Latency-bound: the
 * two chains of dependent loads side by side took a launch at 8k tokens
 * from 41.6 to 35.4 us on the H200.
 */
#include "rope_cache_cuda.h"

#include <math.h>

#include "kcuda_int.cuh"
#include "rope_cache_dev.cuh"

namespace {

constexpr int RC_THREADS = 128;

__global__ void __launch_bounds__(RC_THREADS) rope_cache_kernel(const rope_cache_params p) {
    const rc_token k = rope_cache_prep(p, blockIdx.x);
    kc_pdl_enter();
    if (p.qa2)
        rope_cache_add_half(p, blockIdx.x, false);
    rope_cache_token(p, k);
}

} // namespace

extern "C" asa_err rope_cache_params_check(const rope_cache_params *p) {
    if (!p || p->T < 1 || p->H < 1 || p->dR < 0 || p->dR % 2 || p->G < 1 || p->dg < 1 ||
        p->B < 1 || !p->qa || !p->norm_w || !p->tok_pos || !p->tok_seq || !p->tab ||
        !p->seq_toff || !p->kv || (p->dR > 0 && (!p->cosv || !p->sinv)))
        return ASA_EINVAL;
    return ASA_OK;
}

extern "C" asa_err rope_cache_cuda(const rope_cache_params *p, cudaStream_t stream) {
    if (rope_cache_params_check(p))
        return ASA_EINVAL;
    KC_CUDA_TRY(kc_launch(rope_cache_kernel, (unsigned)p->T, RC_THREADS, 0, stream, *p));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" void rope_cache_ref(const rope_cache_params *p) {
    const int half = p->dR / 2, G = p->G, dg = p->dg;
    const int64_t S = (int64_t)G * dg + p->dR;
    for (int t = 0; t < p->T; t++) {
        const int pos = p->tok_pos[t];
        float *row = p->qa + (int64_t)t * p->ld_qa;
        if (p->qa2)
            for (int64_t j = 0; j < p->ld_qa; j++)
                row[j] += p->qa2[(int64_t)t * p->ld_qa + j];
        const float *a = row + (int64_t)p->H * (p->dh + p->dR);
        const float *cs = p->cosv + (int64_t)pos * half, *sn = p->sinv + (int64_t)pos * half;
        uint16_t *ent = p->kv +
                        (int64_t)p->tab[p->seq_toff[p->tok_seq[t]] + pos / p->B] * p->page_elems +
                        p->layer_off + (int64_t)(pos % p->B) * S;
        for (int h = 0; h < p->H; h++) {
            float *v = row + (int64_t)h * (p->dh + p->dR) + p->dh;
            for (int k = 0; k < half; k++) {
                const double x = v[k], y = v[k + half];
                v[k] = (float)(x * cs[k] - y * sn[k]);
                v[k + half] = (float)(x * sn[k] + y * cs[k]);
            }
        }
        const float *kr = a + (int64_t)G * dg;
        for (int k = 0; k < half; k++) {
            const double x = kr[k], y = kr[k + half];
            ent[G * dg + k] = asa_f32_to_bf16((float)(x * cs[k] - y * sn[k]));
            ent[G * dg + k + half] = asa_f32_to_bf16((float)(x * sn[k] + y * cs[k]));
        }
        for (int g = 0; g < G; g++) {
            double ss = 0;
            for (int e = 0; e < dg; e++)
                ss += (double)a[g * dg + e] * a[g * dg + e];
            const double r = 1.0 / sqrt(ss / dg + (double)p->eps);
            for (int e = 0; e < dg; e++)
                ent[g * dg + e] =
                    asa_f32_to_bf16((float)(a[g * dg + e] * r * p->norm_w[g * dg + e]));
        }
        if (p->compress && (pos + 1) % p->B == 0) {
            /* compress_ref's arithmetic (f32 sum of the bf16 entries) */
            const uint16_t *base = ent - (int64_t)(p->B - 1) * S;
            for (int e = 0; e < S; e++) {
                float s = 0;
                for (int k = 0; k < p->B; k++)
                    s += asa_bf16_to_f32(base[(int64_t)k * S + e]);
                ent[S + e] = asa_f32_to_bf16(s / (float)p->B);
            }
        }
    }
}
