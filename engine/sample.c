/*
 * engine/sample.c - the CPU token sampler (contract in sample.h).
 *
 * Layout of the caller's scratch ([2V] floats):
 *   w = scratch[0, V):  the adjusted logits, then (in place) the unnormalised
 *                       probabilities e_i = exp((w_i - max) / T), with
 *                       e = 0 for tokens that a filter removed.
 *   aux = scratch[V, 2V): first a per-token mark/count array for the
 *                       penalties, later an int32 list of candidate ids for
 *                       the top-k/top-p selection heap.
 */
#include "sample.h"
#include "sample_rng.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

/* ---- the exp loop -------------------------------------------------------- */

#if defined(__SSE2__)
#include <emmintrin.h>

/* eng_sample_exp on four lanes: the same operations (no fused multiply-add
 * exists in SSE2), so the same results. */
static inline __m128 smp_exp4(__m128 x) {
    const __m128 lim = _mm_set1_ps(-87.0f);
    const __m128 big = _mm_cmpgt_ps(x, lim);
    const __m128 xc = _mm_or_ps(_mm_and_ps(big, x), _mm_andnot_ps(big, lim));
    const __m128i n = _mm_cvttps_epi32(
        _mm_sub_ps(_mm_mul_ps(xc, _mm_set1_ps(1.44269504f)), _mm_set1_ps(0.5f)));
    const __m128 fn = _mm_cvtepi32_ps(n);
    __m128 r = _mm_sub_ps(xc, _mm_mul_ps(fn, _mm_set1_ps(0.693359375f)));
    r = _mm_add_ps(r, _mm_mul_ps(fn, _mm_set1_ps(2.12194440e-4f)));
    __m128 q = _mm_set1_ps(1.0f / 720);
    q = _mm_add_ps(_mm_mul_ps(q, r), _mm_set1_ps(1.0f / 120));
    q = _mm_add_ps(_mm_mul_ps(q, r), _mm_set1_ps(1.0f / 24));
    q = _mm_add_ps(_mm_mul_ps(q, r), _mm_set1_ps(1.0f / 6));
    q = _mm_add_ps(_mm_mul_ps(q, r), _mm_set1_ps(0.5f));
    q = _mm_add_ps(_mm_mul_ps(q, r), _mm_set1_ps(1.0f));
    q = _mm_add_ps(_mm_mul_ps(q, r), _mm_set1_ps(1.0f));
    const __m128i e = _mm_slli_epi32(_mm_add_epi32(n, _mm_set1_epi32(127)), 23);
    return _mm_and_ps(big, _mm_mul_ps(q, _mm_castsi128_ps(e)));
}
#endif

void eng_sample_exp_array(const float *x, float *y, int n, float m, float s) {
    int i = 0;
#if defined(__SSE2__)
    const __m128 vm = _mm_set1_ps(m), vs = _mm_set1_ps(s);
    for (; i + 4 <= n; i += 4)
        _mm_storeu_ps(y + i, smp_exp4(_mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(x + i), vm), vs)));
#endif
    for (; i < n; i++)
        y[i] = eng_sample_exp((x[i] - m) * s);
}

/* Sum of v[0, n) in double, four partial sums (order fixed by n). */
static double smp_sum(const float *v, int n) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += v[i];
        a1 += v[i + 1];
        a2 += v[i + 2];
        a3 += v[i + 3];
    }
    for (; i < n; i++)
        a0 += v[i];
    return (a0 + a1) + (a2 + a3);
}

/* NaN -> -inf, +inf -> FLT_MAX (sample.h "Non-finite logits"). */
static inline float smp_clean(float x) {
    if (isnan(x))
        return -INFINITY;
    if (x > FLT_MAX)
        return FLT_MAX;
    return x;
}

double eng_sample_u01(uint64_t seed, uint64_t k) { return smp_u01(seed, k); }

/* log_softmax entry of a cleaned logit x; -inf when x or the whole row is. */
static inline float smp_logprob(float x, float raw_max, double log_s) {
    if (x == -INFINITY)
        return -INFINITY;
    return (float)(((double)x - raw_max) - log_s);
}

/* ---- top-n of the raw logits (logprobs) --------------------------------- */

/* Keeps the n largest cleaned logits in ids/vals, descending, ties to the
 * lower id: scanning ids upward, a value enters only when strictly larger
 * than the current last entry, and is placed after every entry >= it. */
static void smp_top_n(const float *logits, int V, int n, int32_t *ids, float *vals) {
    int have = 0;
    for (int i = 0; i < V; i++) {
        float x = smp_clean(logits[i]);
        if (have == n && !(x > vals[n - 1]))
            continue;
        int j = have < n ? have++ : n - 1;
        while (j > 0 && vals[j - 1] < x) {
            vals[j] = vals[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        vals[j] = x;
        ids[j] = i;
    }
}

/* ---- candidate heap: order by e descending, then id ascending ----------- */

static inline bool smp_before(const float *e, int32_t a, int32_t b) {
    return e[a] > e[b] || (e[a] == e[b] && a < b);
}

static void smp_sift(const float *e, int32_t *h, int n, int i) {
    int32_t x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && smp_before(e, h[c + 1], h[c]))
            c++;
        if (!smp_before(e, h[c], x))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static void smp_heapify(const float *e, int32_t *h, int n) {
    for (int i = n / 2 - 1; i >= 0; i--)
        smp_sift(e, h, n, i);
}

/* Moves the heap's first element to h[n-1] and shrinks the heap to n-1, so
 * that after r pops h[n-r..n) holds the r best in reverse order. */
static int32_t smp_pop(const float *e, int32_t *h, int n) {
    int32_t top = h[0];
    h[0] = h[n - 1];
    h[n - 1] = top;
    smp_sift(e, h, n - 1, 0);
    return top;
}

/* Buckets of e in (0, 1] by the float's exponent and top 4 mantissa bits:
 * monotone in e, 2033 of them (1.0f has bits 0x3f800000). */
#define SMP_NBUCKET 2048
static inline int smp_bucket(float x) {
    union { float f; uint32_t u; } v;
    v.f = x;
    return (int)(v.u >> 19);
}

/* Keeps, of the positive e, the first `keep` in (e desc, id asc) order when
 * keep > 0, or (keep == 0) the shortest prefix of that order whose mass
 * reaches `mass_goal` (each kept token has less than mass_goal before it),
 * and zeroes every other entry.  One pass builds per-bucket counts and
 * masses; the cut falls inside one bucket, whose tokens alone are ordered
 * (a heap); buckets below it are dropped. */
static void smp_keep_best(float *e, int V, int32_t *idx, int keep, double mass_goal) {
    int cnt[SMP_NBUCKET];
    double mass[SMP_NBUCKET];
    memset(cnt, 0, sizeof cnt);
    memset(mass, 0, sizeof mass);
    for (int i = 0; i < V; i++) {
        if (e[i] > 0) {
            const int b = smp_bucket(e[i]);
            cnt[b]++;
            mass[b] += e[i];
        }
    }
    int cut = -1, above = 0;
    double cum = 0;
    for (int b = SMP_NBUCKET - 1; b >= 0; b--) {
        if (!cnt[b])
            continue;
        if (keep > 0 ? above + cnt[b] >= keep : cum + mass[b] >= mass_goal) {
            cut = b;
            break;
        }
        above += cnt[b];
        cum += mass[b];
    }
    if (cut < 0)
        return; /* nothing to drop (fewer than keep tokens, or rounding) */
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (e[i] > 0) {
            const int b = smp_bucket(e[i]);
            if (b == cut)
                idx[n++] = i;
            else if (b < cut)
                e[i] = 0;
        }
    }
    /* The bucket's tokens in order until the count or the mass is reached;
     * its first token is always kept (cum < mass_goal, above < keep). */
    smp_heapify(e, idx, n);
    int r = 0;
    while (r < n) {
        if (keep > 0 ? above + r == keep : (r > 0 && cum >= mass_goal))
            break;
        const int32_t id = smp_pop(e, idx, n - r);
        cum += e[id];
        r++;
    }
    for (int j = 0; j < n - r; j++)
        e[idx[j]] = 0;
}

/* ---- argument checks --------------------------------------------------- */

static bool smp_ids_ok(const int32_t *ids, int n, int V) {
    if (n < 0 || (n > 0 && !ids))
        return false;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return false;
    return true;
}

static bool smp_args_ok(const float *logits, int V, const eng_sampling *sp,
                        const int32_t *prompt, int n_prompt, const int32_t *output,
                        int n_output, const float *scratch, const eng_seq_result *res) {
    if (!logits || V < 1 || !sp || !scratch || !res)
        return false;
    if (!(sp->temperature >= 0) || !(sp->top_p > 0 && sp->top_p <= 1) ||
        !(sp->min_p >= 0 && sp->min_p <= 1) || !(sp->repetition_penalty > 0) ||
        !isfinite(sp->presence_penalty) || !isfinite(sp->frequency_penalty) ||
        sp->n_logprobs < 0 || sp->n_logprobs > ENG_MAX_LOGPROBS)
        return false;
    if (!smp_ids_ok(sp->bias_ids, sp->n_bias, V) || (sp->n_bias > 0 && !sp->bias_vals))
        return false;
    for (int i = 0; i < sp->n_bias; i++)
        if (isnan(sp->bias_vals[i]))
            return false;
    return smp_ids_ok(prompt, n_prompt, V) && smp_ids_ok(output, n_output, V);
}

/* ---- the sampler ------------------------------------------------------- */

asa_err eng_sample(const float *logits, int V, const eng_sampling *sp,
                   const int32_t *prompt, int n_prompt, const int32_t *output,
                   int n_output, float *scratch, eng_seq_result *res) {
    if (!smp_args_ok(logits, V, sp, prompt, n_prompt, output, n_output, scratch, res))
        return ASA_EINVAL;
    float *w = scratch;
    float *aux = scratch + V;

    /* Raw log_softmax normaliser (double) and the raw argmax (fallback);
     * w holds the cleaned logits, aux their exps. */
    int raw_best = 0;
    float raw_max = -INFINITY;
    for (int i = 0; i < V; i++) {
        const float x = smp_clean(logits[i]);
        w[i] = x;
        if (x > raw_max) {
            raw_max = x;
            raw_best = i;
        }
    }
    /* logprob(x) = (x - raw_max) - log_s; kept apart so that a FLT_MAX
     * maximum does not swallow log_s. */
    double log_s = 0;
    if (raw_max > -INFINITY) {
        eng_sample_exp_array(w, aux, V, raw_max, 1.0f);
        log_s = log(smp_sum(aux, V));
    }

    const bool greedy = sp->temperature < ENG_SAMPLE_GREEDY_EPS;
    const bool rep = sp->repetition_penalty != 1.0f && n_prompt + n_output > 0;
    const bool freq = (sp->frequency_penalty != 0 || sp->presence_penalty != 0) && n_output > 0;
    int32_t token;
    if (greedy && sp->n_bias == 0 && !rep && !freq) {
        token = raw_best; /* nothing adjusts the logits */
        goto logprobs;
    }

    /* Stages 1-3: bias and penalties on the cleaned logits (in w). */
    for (int i = 0; i < sp->n_bias; i++) {
        int32_t t = sp->bias_ids[i];
        w[t] = smp_clean(w[t] + sp->bias_vals[i]);
    }
    if (rep) {
        const float rp = sp->repetition_penalty;
        memset(aux, 0, (size_t)V * sizeof *aux);
        for (int s = 0; s < 2; s++) {
            const int32_t *ids = s == 0 ? prompt : output;
            int n = s == 0 ? n_prompt : n_output;
            for (int i = 0; i < n; i++) {
                int32_t t = ids[i];
                if (aux[t] != 0)
                    continue;
                aux[t] = 1;
                w[t] = smp_clean(w[t] > 0 ? w[t] / rp : w[t] * rp);
            }
        }
    }
    if (freq) {
        memset(aux, 0, (size_t)V * sizeof *aux);
        for (int i = 0; i < n_output; i++)
            aux[output[i]] += 1;
        for (int i = 0; i < n_output; i++) {
            int32_t t = output[i];
            if (aux[t] == 0)
                continue; /* already applied */
            w[t] = smp_clean(w[t] - (sp->frequency_penalty * aux[t] + sp->presence_penalty));
            aux[t] = 0;
        }
    }

    /* Stage 4: the adjusted maximum (ties to the lower id). */
    int best = 0;
    float wmax = -INFINITY;
    for (int i = 0; i < V; i++) {
        if (w[i] > wmax) {
            wmax = w[i];
            best = i;
        }
    }

    if (wmax == -INFINITY) {
        token = raw_best; /* everything banned or NaN */
    } else if (greedy) {
        token = best;
    } else {
        /* e_i = exp((w_i - wmax) / T): the maximum maps to exactly 1. */
        eng_sample_exp_array(w, w, V, wmax, 1.0f / sp->temperature);
        float *e = w;
        int32_t *idx = (int32_t *)aux;

        /* Stages 5-7. */
        if (sp->top_k > 0 && sp->top_k < V)
            smp_keep_best(e, V, idx, sp->top_k, 0);
        if (sp->top_p < 1.0f) {
            smp_keep_best(e, V, idx, 0, (double)sp->top_p * smp_sum(e, V));
        }
        if (sp->min_p > 0) {
            /* p_max / total = 1 / total, so p < min_p * p_max is e < min_p. */
            for (int i = 0; i < V; i++)
                if (e[i] < sp->min_p)
                    e[i] = 0;
        }

        /* Stage 8: the draw, in id order. */
        double total = 0;
        for (int i = 0; i < V; i++)
            total += e[i];
        double target = eng_sample_u01(sp->seed, (uint64_t)n_output) * total;
        double cum = 0;
        token = best; /* e[best] = 1 always survives */
        for (int i = 0; i < V; i++) {
            if (e[i] <= 0)
                continue;
            token = i; /* if rounding lets target reach the end: the last */
            cum += e[i];
            if (cum > target)
                break;
        }
    }

logprobs:
    /* Logprobs, from the raw distribution. */
    res->token = token;
    res->logprob = smp_logprob(smp_clean(logits[token]), raw_max, log_s);
    res->n_top = sp->n_logprobs;
    if (sp->n_logprobs > 0) {
        smp_top_n(logits, V, sp->n_logprobs, res->top_ids, res->top_logprobs);
        for (int j = 0; j < sp->n_logprobs; j++)
            res->top_logprobs[j] = smp_logprob(res->top_logprobs[j], raw_max, log_s);
    }
    return ASA_OK;
}
