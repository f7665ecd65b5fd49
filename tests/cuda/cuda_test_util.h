/*
 * tests/cuda/cuda_test_util.h - what the CUDA kernel tests and benchmarks
 * share: the seeded xorshift generator (state rs; main seeds it and prints
 * the seed) and, when cmocka.h is included first, device buffers that fail
 * the test on a CUDA error.  Header-only: each test binary is one file.
 */
#ifndef ASA_CUDA_TEST_UTIL_H
#define ASA_CUDA_TEST_UTIL_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "attn_latent_cuda.h"

static uint64_t rs; /* generator state, never 0 */

static inline uint32_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 11);
}
/* uniform in [-1, 1) */
static inline float unif(void) { return (float)(rnd() & 0xffffff) / 16777216.0f * 2.0f - 1.0f; }
static inline int randint(int n) { return (int)(rnd() % (uint32_t)n); }

#ifdef cmocka_unit_test
/* a device copy of h (bytes 0: a 16-byte allocation) */
static inline void *dup_dev(const void *h, size_t bytes) {
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, bytes ? bytes : 16), cudaSuccess);
    if (bytes)
        assert_int_equal(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}
/* a device buffer of 0xff bytes: NaN in f32 and bf16, -1 in integers */
static inline void *poison_dev(size_t bytes) {
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, bytes), cudaSuccess);
    assert_int_equal(cudaMemset(d, 0xff, bytes), cudaSuccess);
    return d;
}
/* waits for the device, then copies d to the host */
static inline void get_dev(void *h, const void *d, size_t bytes) {
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    assert_int_equal(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}
#endif

/* Frees the device copies an attention test made of d's inputs (cache,
 * tables, tokens, queries, the compressed branch's output, the selection
 * sets); qa_d: the query block that d.qr and d.gate point into. */
static inline void free_attn_inputs(const attn_params *d, float *qa_d) {
    cudaFree((void *)d->c.kv);
    cudaFree((void *)d->c.tab);
    cudaFree((void *)d->c.seq_toff);
    cudaFree((void *)d->tok_pos);
    cudaFree((void *)d->tok_seq);
    cudaFree((void *)d->qt);
    cudaFree(qa_d);
    cudaFree((void *)d->u_cmp);
    cudaFree((void *)d->s.sel_src);
    cudaFree(d->s.tsel);
    cudaFree(d->s.tsel_cnt);
    cudaFree(d->s.slot_sel);
    cudaFree(d->s.slot_cnt);
}

#endif /* ASA_CUDA_TEST_UTIL_H */
