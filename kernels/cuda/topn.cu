/*
 * kernels/cuda/topn.cu - greedy token and top-N logprobs (contract in
 * topn_cuda.h).
 *
 * Stage 1, grid (chunks, B), 256 threads: thread t holds logits
 * chunk*2048 + j*256 + t for j < 8 in registers (coalesced loads, cleaned:
 * NaN -> -inf, +inf -> FLT_MAX; past V: -inf with ids V, V+1, ... so they
 * rank after every real logit).  Selection runs k = max(n, 1) rounds; in
 * each, every thread offers its best untaken value (cached; only the round's
 * winner rescans its 8 registers), a shuffle tree and one pass over the
 * warps' winners pick the block's best (value desc, id asc), which is
 * appended to the chunk's list.  After round 0 the block maximum is known
 * and each thread adds exp(x - max) of its values; a block sum gives the
 * chunk's partial sum.  Partials: list (values, ids), max, sum.
 *
 * Stage 2, grid B, 256 threads: the row's chunk lists (<= 2048 candidates)
 * go into registers the same way, the same selection yields the row's top
 * k, and the partial sums merge as sum_c s_c exp(max_c - max).
 */
#include "topn_cuda.h"

#include <float.h>
#include <math.h>

#include "kcuda_int.cuh"

namespace {

constexpr int TN_THREADS = 256;
constexpr int TN_WARPS = TN_THREADS / 32;
constexpr int TN_EPT = 8; /* values per thread: TN_THREADS * TN_EPT = 2048 */
static_assert(TN_THREADS * TN_EPT == TOPN_CHUNK, "chunk size");
static_assert(TN_THREADS * TN_EPT == TOPN_MAX_CAND, "merge capacity");

__device__ __forceinline__ bool better(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

__device__ __forceinline__ float clean(float x) {
    if (isnan(x))
        return -INFINITY;
    return fminf(x, FLT_MAX);
}

/* Partials of one (row, chunk): k values and ids, then max and sum. */
struct part_layout {
    int k, nchunk;
    __device__ __host__ size_t list(int b, int c) const {
        return ((size_t)b * nchunk + c) * TOPN_MAX_N;
    }
    __device__ __host__ size_t scal(int b, int c) const { return (size_t)b * nchunk + c; }
};

struct block_sel {
    float wv[TN_WARPS];
    int wi[TN_WARPS];
    float best_v;
    int best_i;
    float red[TN_WARPS];
};

/* Best untaken of the thread's registers (value desc, id asc). */
__device__ __forceinline__ void local_best(const float (&v)[TN_EPT], const int (&id)[TN_EPT],
                                           unsigned taken, float &bv, int &bi, int &bs) {
    bv = -INFINITY;
    bi = 0x7fffffff;
    bs = -1;
#pragma unroll
    for (int j = 0; j < TN_EPT; j++) {
        if (!(taken >> j & 1u) && better(v[j], id[j], bv, bi)) {
            bv = v[j];
            bi = id[j];
            bs = j;
        }
    }
}

/* k rounds of block argmax over the threads' registers; round r's winner
 * goes to out_v[r], out_i[r] (written by thread 0).  Returns the maximum
 * (round 0's value) to every thread. */
__device__ float select_topk(const float (&v)[TN_EPT], const int (&id)[TN_EPT], int k,
                             block_sel &sh, float *out_v, int *out_i) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned taken = 0;
    float bv;
    int bi, bs;
    local_best(v, id, taken, bv, bi, bs);
    float vmax = -INFINITY;
    for (int r = 0; r < k; r++) {
        float cv = bv;
        int ci = bi;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, cv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, ci, o);
            if (better(ov, oi, cv, ci)) {
                cv = ov;
                ci = oi;
            }
        }
        if (lane == 0) {
            sh.wv[warp] = cv;
            sh.wi[warp] = ci;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            float gv = sh.wv[0];
            int gi = sh.wi[0];
            for (int w = 1; w < TN_WARPS; w++)
                if (better(sh.wv[w], sh.wi[w], gv, gi)) {
                    gv = sh.wv[w];
                    gi = sh.wi[w];
                }
            sh.best_v = gv;
            sh.best_i = gi;
            out_v[r] = gv;
            out_i[r] = gi;
        }
        __syncthreads();
        if (r == 0)
            vmax = sh.best_v;
        if (bs >= 0 && bi == sh.best_i) {
            taken |= 1u << bs;
            local_best(v, id, taken, bv, bi, bs);
        }
        /* sh.wv/wi are rewritten only after the next barrier is passed by
         * thread 0's reads above: the second barrier orders them. */
    }
    return vmax;
}

/* Block sum in a fixed order (shuffle tree, then warps in order). */
__device__ float block_sum(float s, block_sel &sh) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0)
        sh.red[threadIdx.x >> 5] = s;
    __syncthreads();
    float t = 0.0f;
#pragma unroll
    for (int w = 0; w < TN_WARPS; w++)
        t += sh.red[w];
    return t;
}

__global__ void __launch_bounds__(TN_THREADS) topn_stage1(const topn_params p, part_layout L) {
    __shared__ block_sel sh;
    const int c = blockIdx.x, b = blockIdx.y;
    const float *row = p.logits + (int64_t)b * p.ld;
    float v[TN_EPT];
    int id[TN_EPT];
#pragma unroll
    for (int j = 0; j < TN_EPT; j++) {
        const int i = c * TOPN_CHUNK + j * TN_THREADS + threadIdx.x;
        id[j] = i;
        v[j] = i < p.V ? clean(__ldg(row + i)) : -INFINITY;
    }
    float *ws = (float *)p.workspace;
    float *lv = ws;                                          /* [B][nchunk][MAX_N] */
    int *li = (int *)(ws + (size_t)p.B * L.nchunk * TOPN_MAX_N);
    float *pmax = (float *)(li + (size_t)p.B * L.nchunk * TOPN_MAX_N);
    float *psum = pmax + (size_t)p.B * L.nchunk;
    const float m = select_topk(v, id, L.k, sh, lv + L.list(b, c), li + L.list(b, c));
    float s = 0.0f;
    if (m > -INFINITY) {
#pragma unroll
        for (int j = 0; j < TN_EPT; j++)
            s += expf(v[j] - m);
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) {
        pmax[L.scal(b, c)] = m;
        psum[L.scal(b, c)] = s;
    }
}

__global__ void __launch_bounds__(TN_THREADS) topn_stage2(const topn_params p, part_layout L) {
    __shared__ block_sel sh;
    __shared__ float top_v[TOPN_MAX_N];
    __shared__ int top_i[TOPN_MAX_N];
    const int b = blockIdx.x;
    const float *ws = (const float *)p.workspace;
    const float *lv = ws;
    const int *li = (const int *)(ws + (size_t)p.B * L.nchunk * TOPN_MAX_N);
    const float *pmax = (const float *)(li + (size_t)p.B * L.nchunk * TOPN_MAX_N);
    const float *psum = pmax + (size_t)p.B * L.nchunk;
    const int ncand = L.nchunk * L.k;
    float v[TN_EPT];
    int id[TN_EPT];
#pragma unroll
    for (int j = 0; j < TN_EPT; j++) {
        const int q = j * TN_THREADS + threadIdx.x; /* candidate q: chunk q / k, rank q % k */
        if (q < ncand) {
            const size_t o = L.list(b, q / L.k) + q % L.k;
            v[j] = lv[o];
            id[j] = li[o];
        } else {
            v[j] = -INFINITY;
            id[j] = 0x7fffffff - TOPN_MAX_CAND + q; /* after every real id */
        }
    }
    select_topk(v, id, L.k, sh, top_v, top_i);
    /* Row normaliser from the chunks' partials (every thread, same order). */
    float gmax = -INFINITY;
    for (int c = 0; c < L.nchunk; c++)
        gmax = fmaxf(gmax, pmax[L.scal(b, c)]);
    float s = 0.0f;
    if (gmax > -INFINITY)
        for (int c = 0; c < L.nchunk; c++) {
            const float mc = pmax[L.scal(b, c)];
            if (mc > -INFINITY)
                s += psum[L.scal(b, c)] * expf(mc - gmax);
        }
    const float log_s = logf(s);
    __syncthreads(); /* top_v/top_i written by thread 0 inside select_topk */
    if (threadIdx.x < L.k) {
        const int j = threadIdx.x;
        const float x = top_v[j];
        const float lp = (x == -INFINITY || gmax == -INFINITY) ? -INFINITY : (x - gmax) - log_s;
        if (j == 0) {
            p.token[b] = top_i[0];
            if (p.token_lp)
                p.token_lp[b] = lp;
        }
        if (j < p.n) {
            p.top_ids[(size_t)b * p.n + j] = top_i[j];
            p.top_lp[(size_t)b * p.n + j] = lp;
        }
    }
}

int n_chunks(int V) { return (V + TOPN_CHUNK - 1) / TOPN_CHUNK; }

} // namespace

extern "C" size_t topn_workspace_size(int B, int V) {
    if (B < 1 || V < 1)
        return 0;
    const size_t cells = (size_t)B * (size_t)n_chunks(V);
    return cells * TOPN_MAX_N * (sizeof(float) + sizeof(int)) + cells * 2 * sizeof(float);
}

extern "C" asa_err topn_params_check(const topn_params *p) {
    if (!p || p->B < 1 || p->B > 65535 || p->n < 0 || p->n > TOPN_MAX_N || p->V < 1 ||
        p->ld < p->V)
        return ASA_EINVAL;
    const int k = p->n > 0 ? p->n : 1;
    if (p->V < k || (int64_t)n_chunks(p->V) * k > TOPN_MAX_CAND)
        return ASA_EINVAL;
    if (!p->logits || !p->token || !p->workspace || (p->n > 0 && (!p->top_ids || !p->top_lp)))
        return ASA_EINVAL;
    if (!kc_aligned(p->logits, 4) || !kc_aligned(p->workspace, 16))
        return ASA_EINVAL;
    return ASA_OK;
}

extern "C" asa_err topn_cuda(const topn_params *p, cudaStream_t stream) {
    asa_err e = topn_params_check(p);
    if (e)
        return e;
    part_layout L;
    L.k = p->n > 0 ? p->n : 1;
    L.nchunk = n_chunks(p->V);
    topn_stage1<<<dim3((unsigned)L.nchunk, (unsigned)p->B), TN_THREADS, 0, stream>>>(*p, L);
    KC_LAUNCH_CHECK();
    topn_stage2<<<(unsigned)p->B, TN_THREADS, 0, stream>>>(*p, L);
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

/* ---- reference ----------------------------------------------------------- */

static double clean_h(float x) {
    if (isnan(x))
        return -INFINITY;
    return x > FLT_MAX ? (double)FLT_MAX : (double)x;
}

extern "C" void topn_ref(const topn_params *p) {
    const int k = p->n > 0 ? p->n : 1;
    for (int b = 0; b < p->B; b++) {
        const float *row = p->logits + (int64_t)b * p->ld;
        double m = -INFINITY;
        for (int i = 0; i < p->V; i++)
            m = fmax(m, clean_h(row[i]));
        double s = 0;
        if (m > -INFINITY)
            for (int i = 0; i < p->V; i++)
                s += exp(clean_h(row[i]) - m);
        const double log_s = log(s);
        int ids[TOPN_MAX_N];
        double vals[TOPN_MAX_N];
        int have = 0;
        for (int i = 0; i < p->V; i++) { /* insertion; ties keep the lower id first */
            const double x = clean_h(row[i]);
            if (have == k && !(x > vals[k - 1]))
                continue;
            int j = have < k ? have++ : k - 1;
            while (j > 0 && vals[j - 1] < x) {
                vals[j] = vals[j - 1];
                ids[j] = ids[j - 1];
                j--;
            }
            vals[j] = x;
            ids[j] = i;
        }
        for (int j = 0; j < k; j++) {
            const float lp = (vals[j] == -INFINITY || m == -INFINITY)
                                 ? -INFINITY
                                 : (float)((vals[j] - m) - log_s);
            if (j == 0) {
                p->token[b] = ids[0];
                if (p->token_lp)
                    p->token_lp[b] = lp;
            }
            if (j < p->n) {
                p->top_ids[(size_t)b * p->n + j] = ids[j];
                p->top_lp[(size_t)b * p->n + j] = lp;
            }
        }
    }
}
