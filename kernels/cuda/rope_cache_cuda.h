/*
 * kernels/cuda/rope_cache_cuda.h - the per-token preparation of a layer's
 * attention input (ASA-SPEC 3.1), fused: RoPE on the rope part of every
 * query head (in place, f32), RMSNorm of each latent group of kv_a with its
 * slice of kv_a_norm, RoPE on the rope key, and the bf16 cache entry
 * [c^(0..G-1), kR] written through the block table.
 *
 * Token t (position tok_pos[t], sequence tok_seq[t]) has its projection row
 * at qa + t * ld_qa: H heads of (dh nope, dR rope) values, then kv_a
 * (G*dg latents, dR rope key).  cos/sin[pos][dR/2] are tables of the
 * rotation of every position (computed by the caller from the integer
 * position, in double, then rounded).  The entry
 * goes to kv + tab[seq_toff[seq] + pos / B] * page_elems + layer_off +
 * (pos % B) * S with S = G*dg + dR.
 */
#ifndef ASA_ROPE_CACHE_CUDA_H
#define ASA_ROPE_CACHE_CUDA_H

#include <stdint.h>

#include "kcuda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rope_cache_params {
    int T, H, dh, dR, G, dg;
    float eps;
    float *qa;               /* [T][ld_qa], rope parts rotated in place */
    int64_t ld_qa;
    const float *cosv, *sinv; /* [positions][dR/2], indexed by tok_pos */
    const float *norm_w;     /* [G*dg] kv_a_norm (f32) */
    const int32_t *tok_pos, *tok_seq, *tab, *seq_toff;
    uint16_t *kv;
    int64_t page_elems, layer_off;
    int B;
    /* non-zero (global layers): a token whose entry completes its block
     * ((pos + 1) % B == 0) also writes the block's compressed entry (at
     * B * S: compress_cuda's f32 mean of the B cached entries, rounded
     * once), saving the compress launch.  Only when no other token of the
     * launch writes into that block (decode: one token per sequence). */
    int compress;
    /* NULL, or the second half of a stacked product ([T][ld_qa], the
     * same layout): the row's values are qa + qa2, and qa holds that sum
     * (every column, in place) after the launch, for the readers after it
     * (cb_rope_absorb_cuda does not take it: ASA_EUNSUPPORTED;
     * cb_rope_absorb_mma_cuda leaves the q nope columns unsummed) */
    const float *qa2;
} rope_cache_params;

/* ASA_OK, or ASA_EINVAL where p's shapes or pointers are not a launch's
 * (the check of rope_cache_cuda and of the fused launchers of cb_ops). */
asa_err rope_cache_params_check(const rope_cache_params *p);
asa_err rope_cache_cuda(const rope_cache_params *p, cudaStream_t stream);
/* Host reference (double), host pointers. */
void rope_cache_ref(const rope_cache_params *p);

#ifdef __cplusplus
}
#endif
#endif /* ASA_ROPE_CACHE_CUDA_H */
