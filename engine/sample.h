/*
 * engine/sample.h - the CPU token sampler: one row of logits in, one token
 * (plus logprobs) out.  It is the reference that the GPU sampler follows.
 *
 * Stages, in this order (vLLM v1 semantics unless stated):
 *   1. logit_bias: logits[bias_ids[i]] += bias_vals[i] (repeated ids add up).
 *   2. repetition penalty (HF/vLLM rule) on every token that occurs in the
 *      prompt or the output, applied once per distinct token:
 *      l = l > 0 ? l / rp : l * rp.
 *   3. frequency and presence penalties on generated (output) tokens:
 *      l -= frequency * count + presence * (count > 0).
 *   4. temperature < ENG_SAMPLE_GREEDY_EPS (vLLM's 1e-5): greedy, the argmax,
 *      ties to the lower id; top-k/top-p/min-p do not matter (the argmax is
 *      always kept by them).
 *      Otherwise p ~ exp((l - max l) / temperature) (eng_sample_exp_array
 *      with s = 1.0f / temperature), then
 *   5. top-k (keep the k most probable; among equal probabilities the lower
 *      ids first),
 *   6. top-p over the survivors: in descending order (ties: lower id first)
 *      keep a token while the mass strictly before it is < top_p * total;
 *      the most probable token is always kept,
 *   7. min-p over the survivors: drop tokens with p < min_p * p_max,
 *   8. draw: u = eng_sample_u01(seed, n_output) in [0, 1); walking the
 *      surviving tokens in increasing id order, the token whose cumulative
 *      mass first exceeds u * total.  The draw depends on (seed, k =
 *      n_output) only, never on the batch, preemption or other requests.
 *
 * Logprobs ("raw logprobs", vLLM's default): res->logprob and the top
 * n_logprobs entries are log_softmax of the logits as given, before bias,
 * penalties and temperature, computed in double and rounded to float.  The
 * top list is in descending order, ties to the lower id.
 *
 * Non-finite logits: NaN counts as -inf (the token is never drawn while any
 * other token is possible; its logprob is -inf) and +inf counts as FLT_MAX
 * (so +inf tokens share the mass equally).  The same holds for values that
 * the bias or penalties make non-finite.  When every token ends up at -inf
 * (all NaN, or everything banned by -inf biases) the sampler returns the
 * argmax of the raw logits (token 0 when those are all -inf/NaN as well),
 * with logprob -inf when the raw row has no finite value.  It never returns
 * an id outside [0, V).
 *
 * Complexity: O(V + n_prompt + n_output); top-k/top-p bucket the
 * probabilities by their float exponent and 4 mantissa bits, and order only
 * the c tokens of the bucket where the cut falls (O(c log c)); no sort of V.
 * No allocation (besides ~24 KiB of stack for the buckets); thread-safe (no
 * shared state).  Cost at V = 32000 on one x86-64 core (SSE2 exp loop):
 * greedy ~60 us (the log-softmax normaliser is V exps), temperature + top-p
 * ~0.2 ms.
 */
#ifndef ASA_ENG_SAMPLE_H
#define ASA_ENG_SAMPLE_H

#include <stdint.h>

#include "asa.h"
#include "eng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Temperatures below this are greedy (as vLLM's _SAMPLING_EPS). */
#define ENG_SAMPLE_GREEDY_EPS 1e-5f

/* Samples one token from logits[V].
 *   logits:  [V] f32, read only.
 *   sp:      sampling parameters (eng.h).  Accepted ranges: temperature >= 0;
 *            top_k <= 0 or >= V means off; 0 < top_p <= 1; 0 <= min_p <= 1;
 *            repetition_penalty > 0; finite presence/frequency penalties;
 *            bias ids in [0, V), bias values not NaN (+-inf allowed: -inf
 *            bans a token); 0 <= n_logprobs <= ENG_MAX_LOGPROBS.
 *   prompt:  [n_prompt] ids in [0, V) (repetition penalty), NULL if 0.
 *   output:  [n_output] generated ids in [0, V), NULL if 0; n_output is the
 *            index k of the token being drawn.
 *   scratch: [2 * V] floats of caller memory (contents ignored; it is also
 *            used as int32 storage, so it must be heap or suitably typed
 *            memory, e.g. from malloc).
 *   res:     token, logprob, n_top = n_logprobs, top_ids/top_logprobs.
 * Returns ASA_OK, or ASA_EINVAL for a NULL pointer, V < 1 or a parameter
 * out of range (res is then untouched). */
asa_err eng_sample(const float *logits, int V, const eng_sampling *sp,
                   const int32_t *prompt, int n_prompt, const int32_t *output,
                   int n_output, float *scratch, eng_seq_result *res);

/* exp(x) for x <= 0 as the sampler computes its probabilities, in float:
 * Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial;
 * relative error below 4e-7; 0 for x <= -87 (and for NaN).  In stage 4,
 * e_i = eng_sample_exp((l_i - max l) * (1.0f / temperature)), all float. */
static inline float eng_sample_exp(float x) {
    /* branch-free (selects only), so that loops over it vectorise */
    const float xc = x > -87.0f ? x : -87.0f;
    const int n = (int)(xc * 1.44269504f - 0.5f); /* round(x / ln2), x <= 0 */
    const float fn = (float)n;
    float r = xc - fn * 0.693359375f;             /* ln2 = hi + lo, hi exact */
    r = r + fn * 2.12194440e-4f;
    float q = 1.0f / 720;
    q = q * r + 1.0f / 120;
    q = q * r + 1.0f / 24;
    q = q * r + 1.0f / 6;
    q = q * r + 0.5f;
    q = q * r + 1.0f;
    q = q * r + 1.0f;
    union { uint32_t u; float f; } sc;
    sc.u = (uint32_t)(n + 127) << 23;
    return x > -87.0f ? q * sc.f : 0.0f;
}

/* y[i] = eng_sample_exp((x[i] - m) * s) for i < n (y may be x): the loop
 * the sampler uses, four lanes at a time with SSE2 where the build has it,
 * with the same float operations in the same order. */
void eng_sample_exp_array(const float *x, float *y, int n, float m, float s);

/* The counter-based uniform draw used by eng_sample: a double in [0, 1)
 * that depends only on (seed, k).  Exactly:
 *   mix(z) = splitmix64 finaliser: z ^= z >> 30; z *= 0xbf58476d1ce4e5b9;
 *            z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31
 *   h = mix(seed + 0x9e3779b97f4a7c15 * (k + 1))
 *   h = mix(h ^ 0xd1b54a32d192ed03)
 *   u = (h >> 11) * 2^-53
 * (all arithmetic mod 2^64), so that a GPU sampler can reproduce it. */
double eng_sample_u01(uint64_t seed, uint64_t k);

#ifdef __cplusplus
}
#endif
#endif /* ASA_ENG_SAMPLE_H */
