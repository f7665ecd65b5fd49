/*
 * engine/sample_rng.h - eng_sample's counter-based uniform draw (the
 * formula in sample.h, eng_sample_u01), written once for the host sampler
 * (engine/sample.c) and the device one (kernels/cuda/sample.cu), which must
 * draw the same bits.
 */
#ifndef ASA_SAMPLE_RNG_H
#define ASA_SAMPLE_RNG_H

#include <stdint.h>

#ifdef __CUDACC__
#define SMP_RNG_FN __host__ __device__ static inline
#else
#define SMP_RNG_FN static inline
#endif

/* splitmix64's finaliser */
SMP_RNG_FN uint64_t smp_mix(uint64_t z) {
    z ^= z >> 30;
    z *= 0xbf58476d1ce4e5b9ull;
    z ^= z >> 27;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z;
}

/* a double in [0, 1) that depends only on (seed, k) */
SMP_RNG_FN double smp_u01(uint64_t seed, uint64_t k) {
    uint64_t h = smp_mix(seed + 0x9e3779b97f4a7c15ull * (k + 1));
    h = smp_mix(h ^ 0xd1b54a32d192ed03ull);
    return (double)(h >> 11) * 0x1.0p-53;
}

#undef SMP_RNG_FN
#endif /* ASA_SAMPLE_RNG_H */
