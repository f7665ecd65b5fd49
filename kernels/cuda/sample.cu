/*
 * kernels/cuda/sample.cu - token sampling on the device (contract in
 * sample_cuda.h; the semantics are eng_sample's, engine/sample.h).
 *
 * One block of SAMPLE_THREADS threads per row.  The cleaned row (NaN ->
 * -inf, +inf -> FLT_MAX) is loaded into shared memory; thread t owns the
 * contiguous ids [t*C, t*C + C) with C odd (consecutive threads then hit
 * different banks), so "the first in id order" is a block scan over the
 * threads' counts.  Stages, as the host:
 *   raw max/argmax, S = sum exp(x - max) (fixed point), top-n raw logprobs;
 *   bias (one thread per distinct id applies its entries in list order),
 *   penalties (counts from the lists with atomics into counts[b], one
 *   claiming thread per distinct token applies repetition then
 *   frequency/presence, the marks are cleared again), adjusted max;
 *   e_i = exp((w_i - max) * (1/T)) in place;
 *   top-k: radix select of the k-th largest e (bit patterns, 4 digits),
 *   ties to the lower ids; top-p: radix select weighted by e of the value
 *   where the mass from the top reaches top_p * total, ties in id order
 *   while the mass before them is below the goal; min-p as a compare;
 *   the draw: exclusive block scan of the chunks' masses, each thread walks
 *   its chunk, the first id whose cumulative mass exceeds u * total wins.
 * Masses are sums of floor(e * 2^64) in 128-bit integers (exact; the bins
 * of the weighted radix pass accumulate the high and low 32-bit halves in
 * separate 64-bit shared atomics), so every sum is independent of the
 * order of the additions: the block's result is deterministic.
 */
#include "sample_cuda.h"

#include <float.h>
#include <limits.h>
#include <math.h>

#include "kcuda_int.cuh"
#include "sample_rng.h"

namespace {

constexpr int NT = SAMPLE_THREADS;
constexpr int NW = NT / 32;
typedef unsigned long long u64;
typedef unsigned __int128 u128;

struct smem_t {
    u128 w128[NW], woff[NW], wtot;
    float fv[NW], bv;
    int fi[NW], bi;
    unsigned cnt[256];
    u64 hh[256], hl[256];
    int pick;
    u128 pick_above;
    int cand_i[SAMPLE_MAX_N];
    float cand_v[SAMPLE_MAX_N];
};

__device__ __forceinline__ float clean(float x) {
    if (isnan(x))
        return -INFINITY;
    return x > FLT_MAX ? FLT_MAX : x;
}

/* eng_sample_exp, operation by operation (no contraction). */
__device__ __forceinline__ float sexp(float x) {
    const float xc = x > -87.0f ? x : -87.0f;
    const int n = __float2int_rz(__fsub_rn(__fmul_rn(xc, 1.44269504f), 0.5f));
    const float fn = (float)n;
    float r = __fsub_rn(xc, __fmul_rn(fn, 0.693359375f));
    r = __fadd_rn(r, __fmul_rn(fn, 2.12194440e-4f));
    float q = 1.0f / 720;
    q = __fadd_rn(__fmul_rn(q, r), 1.0f / 120);
    q = __fadd_rn(__fmul_rn(q, r), 1.0f / 24);
    q = __fadd_rn(__fmul_rn(q, r), 1.0f / 6);
    q = __fadd_rn(__fmul_rn(q, r), 0.5f);
    q = __fadd_rn(__fmul_rn(q, r), 1.0f);
    q = __fadd_rn(__fmul_rn(q, r), 1.0f);
    const float sc = __uint_as_float((uint32_t)(n + 127) << 23);
    return x > -87.0f ? __fmul_rn(q, sc) : 0.0f;
}

/* floor(e * 2^64) of 0 <= e <= 1. */
__device__ __forceinline__ u128 fx(float e) {
    const uint32_t u = __float_as_uint(e);
    if (u == 0 || (u >> 31))
        return 0;
    uint32_t ex = u >> 23 & 0xff, m = u & 0x7fffff;
    int sh = -126 + 41;
    if (ex) {
        m |= 0x800000;
        sh = (int)ex - 127 + 41; /* e * 2^64 = m * 2^(ex - 150 + 64) */
    }
    if (sh >= 0)
        return (u128)m << sh;
    return sh > -24 ? (u128)(m >> -sh) : 0;
}

/* v * 2^-64 as a double (v < 2^85: the high part is exact). */
__device__ __forceinline__ double fx_d(u128 v) {
    const u64 a = (u64)(v >> 32), b = (u64)(v & 0xffffffffu);
    return __dadd_rn(__dmul_rn((double)a, 0x1.0p-32), __dmul_rn((double)b, 0x1.0p-64));
}

/* Order-preserving key of a cleaned logit (-0 as +0); never 0. */
__device__ __forceinline__ uint32_t lkey(float x) {
    const uint32_t u = __float_as_uint(x == 0.0f ? 0.0f : x);
    return (u >> 31) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ u128 shfl_up128(u128 v, int o) {
    const u64 lo = __shfl_up_sync(0xffffffffu, (u64)v, o);
    const u64 hi = __shfl_up_sync(0xffffffffu, (u64)(v >> 64), o);
    return ((u128)hi << 64) | lo;
}

/* Inclusive prefix of x over the lanes of a warp. */
__device__ __forceinline__ u128 warp_scan128(u128 x, int lane) {
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const u128 y = shfl_up128(x, o);
        if (lane >= o)
            x += y;
    }
    return x;
}

/* Exclusive prefix of v over the threads (thread order); *total the sum. */
__device__ u128 block_scan(u128 v, smem_t &sh, u128 *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const u128 x = warp_scan128(v, lane);
    __syncthreads(); /* earlier readers of w128/woff are done */
    if (lane == 31)
        sh.w128[warp] = x;
    __syncthreads();
    if (warp == 0) { /* the warps' offsets: a second warp scan, no loop */
        const u128 t = lane < NW ? sh.w128[lane] : 0;
        const u128 s = warp_scan128(t, lane);
        if (lane < NW)
            sh.woff[lane] = s - t;
        if (lane == 31)
            sh.wtot = s;
    }
    __syncthreads();
    *total = sh.wtot;
    return sh.woff[warp] + x - v;
}

__device__ __forceinline__ bool better(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

/* Warp argmax (value desc, id asc), the result in every lane. */
__device__ __forceinline__ void warp_best(float &v, int &i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (better(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
}

/* Block argmax (value desc, id asc), the result to every thread.  The
 * warps' results are reduced by warp 0 with shuffles and broadcast from
 * shared memory: ptxas 13.0 -O3 compiled the former loop over the 32
 * per-warp entries (each thread reading them all) with wrong shared-memory
 * offsets for entries 25-27 (kernels/cuda/NOTES.md, sampling). */
__device__ void block_best(float &v, int &i, smem_t &sh) {
    warp_best(v, i);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        sh.fv[threadIdx.x >> 5] = v;
        sh.fi[threadIdx.x >> 5] = i;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        v = threadIdx.x < NW ? sh.fv[threadIdx.x] : -INFINITY;
        i = threadIdx.x < NW ? sh.fi[threadIdx.x] : INT_MAX;
        warp_best(v, i);
        if (threadIdx.x == 0) {
            sh.bv = v;
            sh.bi = i;
        }
    }
    __syncthreads();
    v = sh.bv;
    i = sh.bi;
}

__device__ int block_min_int(int v, smem_t &sh) {
    float f = 0.0f;
    block_best(f, v, sh);
    return v;
}

/* Radix selection over keys (0 = not a candidate) below 2^top: the largest
 * key t with W(keys >= t) >= goal, where W counts (mass == false) or adds
 * fx of the float whose bits are the key.  *above = W(keys > t).  False
 * when no key reaches the goal.  Digits of 8, 8, 8 and top - 24 bits from
 * the top (probabilities in (0, 1] have top = 30: the first digit then
 * splits each binade in two, spreading the histogram atomics). */
template <class KeyF>
__device__ bool radix_select(KeyF key, int i0, int i1, int top, bool mass, u128 goal,
                             smem_t &sh, uint32_t *t, u128 *above) {
    const int tid = threadIdx.x;
    uint32_t prefix = 0;
    u128 cum = 0;
    int hi = top;
    for (int lvl = 0; lvl < 4; lvl++) {
        const int width = lvl < 3 ? 8 : top - 24;
        const int shift = hi - width;
        const uint32_t mask = hi >= 32 ? 0u : 0xffffffffu << hi;
        const uint32_t dmask = (1u << width) - 1u;
        hi = shift;
        __syncthreads(); /* the previous pass's readers are done */
        for (int d = tid; d < 256; d += NT) {
            sh.cnt[d] = 0;
            sh.hh[d] = 0;
            sh.hl[d] = 0;
        }
        __syncthreads();
        for (int i = i0; i < i1; i++) {
            const uint32_t k = key(i);
            if (k && (k & mask) == prefix) {
                const int d = (int)(k >> shift & dmask);
                atomicAdd(&sh.cnt[d], 1u);
                if (mass) {
                    const u128 f = fx(__uint_as_float(k));
                    const u64 fh = (u64)(f >> 32), fl = (u64)(f & 0xffffffffu);
                    if (fh) /* e < 2^-32 (most of a peaked row) adds one half only */
                        atomicAdd(&sh.hh[d], fh);
                    if (fl)
                        atomicAdd(&sh.hl[d], fl);
                }
            }
        }
        __syncthreads();
        if (tid < 32) {
            /* lane l: bins 255 - 8l down to 248 - 8l */
            const int lane = tid;
            u128 s = 0;
            for (int q = 0; q < 8; q++) {
                const int d = 255 - 8 * lane - q;
                s += mass ? ((u128)sh.hh[d] << 32) + sh.hl[d] : (u128)sh.cnt[d];
            }
            const u128 x = warp_scan128(s, lane);
            u128 c = cum + x - s;
            int found = -1;
            u128 fab = 0;
            for (int q = 0; q < 8; q++) {
                const int d = 255 - 8 * lane - q;
                const u128 wd = mass ? ((u128)sh.hh[d] << 32) + sh.hl[d] : (u128)sh.cnt[d];
                if (sh.cnt[d] && c + wd >= goal) {
                    found = d;
                    fab = c;
                    break;
                }
                c += wd;
            }
            int first = found >= 0 ? lane : 32;
            for (int o = 16; o > 0; o >>= 1) {
                const int other = __shfl_xor_sync(0xffffffffu, first, o);
                first = other < first ? other : first;
            }
            if (lane == (first < 32 ? first : 0)) {
                sh.pick = found;
                sh.pick_above = fab;
            }
        }
        __syncthreads();
        const int d = sh.pick;
        if (d < 0)
            return false;
        prefix |= (uint32_t)d << shift;
        cum = sh.pick_above;
    }
    *t = prefix;
    *above = cum;
    return true;
}

/* Index in id order of each of this thread's elements with key == t: the
 * first one's index (exclusive scan over the threads). */
template <class KeyF>
__device__ int tie_base(KeyF key, int i0, int i1, uint32_t t, smem_t &sh) {
    int n = 0;
    for (int i = i0; i < i1; i++)
        n += key(i) == t;
    u128 tot;
    return (int)block_scan((u128)n, sh, &tot);
}

__device__ __forceinline__ float logprob(float x, float raw_max, double log_s) {
    if (x == -INFINITY)
        return -INFINITY;
    return (float)__dsub_rn(__dsub_rn((double)x, (double)raw_max), log_s);
}

__global__ void __launch_bounds__(NT, 1) sample_kernel(const sample_params p, int C) {
    extern __shared__ float w[];
    __shared__ smem_t sh;
    const int b = blockIdx.x, tid = threadIdx.x, V = p.V;
    const sample_row rw = p.rows[b];
    if (rw.skip)
        return;
    const int i0 = tid * C < V ? tid * C : V, i1 = i0 + C < V ? i0 + C : V;
    const float *row = p.logits + (int64_t)b * p.ld;
    for (int i = tid; i < V; i += NT)
        w[i] = clean(__ldg(row + i));
    __syncthreads();

    /* raw maximum (ties: lower id; token 0 when everything is -inf) */
    float raw_max = -INFINITY;
    int raw_best = INT_MAX;
    for (int i = i0; i < i1; i++)
        if (w[i] > raw_max) {
            raw_max = w[i];
            raw_best = i;
        }
    block_best(raw_max, raw_best, sh);
    if (raw_best == INT_MAX)
        raw_best = 0;
    double log_s = 0;
    {
        u128 s = 0, tot;
        if (raw_max > -INFINITY)
            for (int i = i0; i < i1; i++)
                s += fx(sexp(__fmul_rn(__fsub_rn(w[i], raw_max), 1.0f)));
        block_scan(s, sh, &tot);
        if (raw_max > -INFINITY)
            log_s = log(fx_d(tot));
    }

    /* top n of the raw logits: the n-th largest key, then the candidates in
     * id order (greater ones, then the first ties), ranked */
    const int nlp = rw.n_logprobs;
    if (nlp > 0) {
        auto rk = [&](int i) { return lkey(w[i]); };
        uint32_t t = 0;
        u128 above = 0;
        radix_select(rk, i0, i1, 32, false, (u128)nlp, sh, &t, &above); /* V >= n: found */
        const int need = nlp - (int)above;
        const int tb = tie_base(rk, i0, i1, t, sh);
        int mine = 0, q = tb;
        for (int i = i0; i < i1; i++) {
            const uint32_t k = rk(i);
            mine += k > t || (k == t && q++ < need);
        }
        u128 tot;
        int slot = (int)block_scan((u128)mine, sh, &tot);
        q = tb;
        for (int i = i0; i < i1; i++) {
            const uint32_t k = rk(i);
            if (k > t || (k == t && q++ < need)) {
                sh.cand_i[slot] = i;
                sh.cand_v[slot++] = w[i];
            }
        }
        __syncthreads();
        if (tid < nlp) {
            const float v = sh.cand_v[tid];
            const int id = sh.cand_i[tid];
            int r = 0;
            for (int j = 0; j < nlp; j++)
                r += better(sh.cand_v[j], sh.cand_i[j], v, id);
            p.top_ids[(size_t)b * p.n_top + r] = id;
            p.top_lp[(size_t)b * p.n_top + r] = logprob(v, raw_max, log_s);
        }
    }

    const bool greedy = rw.temperature < 1e-5f; /* ENG_SAMPLE_GREEDY_EPS */
    const bool rep = rw.repetition != 1.0f && rw.n_prompt + rw.n_output > 0;
    const bool freq = (rw.frequency != 0.0f || rw.presence != 0.0f) && rw.n_output > 0;
    int token = raw_best;
    uint64_t *dbg = p.dbg ? p.dbg + (size_t)b * SAMPLE_DBG : NULL;
    if (dbg && tid == 0) {
        dbg[0] = (uint64_t)raw_best;
        for (int j = 1; j < SAMPLE_DBG; j++)
            dbg[j] = ~0ull;
    }
    if (!(greedy && rw.n_bias == 0 && !rep && !freq)) {
        __syncthreads(); /* the top-n readers of w are done */
        /* bias: the thread of an id's first entry adds its entries in order */
        for (int j = tid; j < rw.n_bias; j += NT) {
            const int32_t *ids = p.bias_ids + rw.bias_off;
            const float *vals = p.bias_vals + rw.bias_off;
            const int32_t tk = ids[j];
            bool first = true;
            for (int q = 0; q < j && first; q++)
                first = ids[q] != tk;
            if (first)
                for (int q = j; q < rw.n_bias; q++)
                    if (ids[q] == tk)
                        w[tk] = clean(__fadd_rn(w[tk], vals[q]));
        }
        __syncthreads();
        if (rep || freq) {
            uint32_t *cnt = p.counts + (size_t)b * V;
            const int32_t *list = p.toks + rw.tok_off; /* prompt, then output */
            const int np = rw.n_prompt, n = rw.n_prompt + rw.n_output;
            const int from = rep ? 0 : np; /* prompt ids matter for repetition only */
            for (int j = np + tid; j < n; j += NT)
                atomicAdd(&cnt[list[j]], 1u);
            if (rep)
                for (int j = tid; j < np; j += NT)
                    atomicOr(&cnt[list[j]], 0x80000000u);
            __syncthreads();
            for (int j = from + tid; j < n; j += NT) {
                const int32_t tk = list[j];
                const uint32_t old = atomicOr(&cnt[tk], 0x40000000u);
                if (old & 0x40000000u)
                    continue; /* another thread has this token */
                const uint32_t c = old & 0x3fffffffu;
                float x = w[tk];
                if (rep)
                    x = clean(x > 0 ? __fdiv_rn(x, rw.repetition) : __fmul_rn(x, rw.repetition));
                if (freq && c > 0)
                    x = clean(__fsub_rn(x, __fadd_rn(__fmul_rn(rw.frequency, (float)c),
                                                     rw.presence)));
                w[tk] = x;
            }
            __syncthreads();
            for (int j = from + tid; j < n; j += NT)
                cnt[list[j]] = 0; /* zero again for the next launch */
        }
        __syncthreads();
        float wmax = -INFINITY;
        int best = INT_MAX;
        for (int i = i0; i < i1; i++)
            if (w[i] > wmax) {
                wmax = w[i];
                best = i;
            }
        block_best(wmax, best, sh);
        if (dbg && tid == 0) {
            dbg[1] = (uint64_t)best;
            dbg[2] = __float_as_uint(wmax);
        }
        if (wmax == -INFINITY) {
            token = raw_best;
        } else if (greedy) {
            token = best;
        } else {
            const float inv = __fdiv_rn(1.0f, rw.temperature);
            for (int i = i0; i < i1; i++)
                w[i] = sexp(__fmul_rn(__fsub_rn(w[i], wmax), inv));
            auto ek = [&](int i) { return __float_as_uint(w[i]); };
            if (rw.top_k > 0 && rw.top_k < V) {
                uint32_t t;
                u128 above;
                if (radix_select(ek, i0, i1, 30, false, (u128)rw.top_k, sh, &t, &above)) {
                    const int need = rw.top_k - (int)above;
                    int q = tie_base(ek, i0, i1, t, sh);
                    for (int i = i0; i < i1; i++) {
                        const uint32_t k = ek(i);
                        if (k < t || (k == t && q++ >= need))
                            w[i] = 0.0f;
                    }
                }
            }
            if (rw.top_p < 1.0f) {
                u128 s = 0, total;
                for (int i = i0; i < i1; i++)
                    s += fx(w[i]);
                block_scan(s, sh, &total);
                /* goal = floor(total * top_p), exactly */
                const uint32_t pu = __float_as_uint(rw.top_p);
                const uint32_t pe = pu >> 23 & 0xff;
                const u128 pm = (pu & 0x7fffff) | (pe ? 0x800000u : 0u);
                const int psh = 150 - (int)(pe ? pe : 1);
                const u128 goal = psh >= 128 ? (u128)0 : (total * pm) >> psh;
                uint32_t t;
                u128 above;
                if (radix_select(ek, i0, i1, 30, true, goal, sh, &t, &above)) {
                    const u128 ft = fx(__uint_as_float(t));
                    int q = tie_base(ek, i0, i1, t, sh);
                    for (int i = i0; i < i1; i++) {
                        const uint32_t k = ek(i);
                        if (k < t || (k == t && q > 0 && !(above + (u128)q * ft < goal)))
                            w[i] = 0.0f;
                        q += k == t;
                    }
                }
            }
            /* min-p (p_max / total = 1 / total: e < min_p), then the draw */
            const float mp = rw.min_p;
            u128 s = 0, total;
            int last = -1;
            for (int i = i0; i < i1; i++) {
                const float e = w[i];
                if (e > 0 && !(mp > 0 && e < mp)) {
                    s += fx(e);
                    last = i;
                }
            }
            u128 c = block_scan(s, sh, &total);
            const double target = __dmul_rn(smp_u01(rw.seed, (uint64_t)rw.n_output), fx_d(total));
            int hit = INT_MAX;
            for (int i = i0; i < i1; i++) {
                const float e = w[i];
                if (e > 0 && !(mp > 0 && e < mp)) {
                    c += fx(e);
                    if (fx_d(c) > target) {
                        hit = i;
                        break;
                    }
                }
            }
            hit = block_min_int(hit, sh);
            if (dbg && tid == 0) {
                dbg[3] = (uint64_t)hit;
                dbg[4] = (uint64_t)(total >> 32);
                dbg[5] = (uint64_t)__double_as_longlong(target);
            }
            if (hit == INT_MAX) /* rounding let the target reach the end: the last */
                hit = -block_min_int(last >= 0 ? -last : INT_MAX, sh);
            token = hit;
        }
    }
    if (tid == 0) {
        if (dbg) {
            dbg[6] = token >= 0 && token < V ? __float_as_uint(w[token]) : ~0u;
            dbg[7] = (uint64_t)token;
        }
        p.token[b] = token;
        p.token_lp[b] = logprob(clean(row[token]), raw_max, log_s);
    }
}

int chunk_of(int V) {
    int C = (V + NT - 1) / NT;
    return C | 1; /* odd: the threads' chunks start in different banks */
}

} // namespace

extern "C" asa_err sample_params_check(const sample_params *p) {
    if (!p || p->B < 1 || p->B > 65535 || p->V < SAMPLE_MAX_N || p->V > SAMPLE_MAX_V ||
        p->ld < p->V || p->n_top < 0 || p->n_top > SAMPLE_MAX_N)
        return ASA_EINVAL;
    if (!p->logits || !p->rows || !p->counts || !p->token || !p->token_lp ||
        (p->n_top > 0 && (!p->top_ids || !p->top_lp)))
        return ASA_EINVAL;
    if (!kc_aligned(p->logits, 4) || !kc_aligned(p->rows, 8))
        return ASA_EINVAL;
    return ASA_OK;
}

extern "C" asa_err sample_cuda(const sample_params *p, cudaStream_t stream) {
    asa_err e = sample_params_check(p);
    if (e)
        return e;
    const int smem = p->V * (int)sizeof(float);
    KC_CUDA_TRY(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    sample_kernel<<<(unsigned)p->B, NT, smem, stream>>>(*p, chunk_of(p->V));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}
