/* tools/gpu/persist_chain.cu - what a persistent decode kernel would buy the
 * batch-1 step's weight products: the 97 products of asa-1.3b (per layer
 * q|kv_a|g 3296 x 2048, o_proj 2048 x 2048, gate|up 11264 x 2048, down 2048
 * x 5632; then lm_head 32000 x 2048), each product's x the previous one's
 * output (a real dependency: every product needs all of the last one's
 * outputs, so a single launch needs a grid barrier between them), timed as
 * one CUDA graph in these forms:
 *   sep        one launch a product (a warp a row, 16-byte loads, the
 *              row's first trip in registers before the PDL wait: the
 *              engine's pattern)
 *   layer      one launch for o_proj, gate|up, down and the next layer's
 *              q|kv_a|g (the products between two attention sides), grid
 *              barriers between them; before a barrier every warp loads
 *              its first row of the next product (weights do not depend on
 *              it)
 *   all        one launch for all 97 products, 96 grid barriers
 *   ws-*       the same two as warp-specialised blocks (ws_kernel): one
 *              producer lane streams the block's rows of every product in
 *              order into a ring of shared-memory slots by bulk copies
 *              (cp.async.bulk, mbarrier-completed) without ever waiting
 *              for a grid barrier; 16 consumer warps wait for x (grid
 *              barrier, x into shared memory) and for each slot
 *   ws-all nobar (nomath): without the barriers (wrong outputs: timing
 *              only), and also without the arithmetic (the ring's stream)
 *   tc-*       the ring on tensor cores (tc_kernel): slots of 16 rows x 512
 *              k (16 row segments, a bulk copy each), a consumer warp takes
 *              a slot with mma.sync, x as bf16 hi + lo in two B columns
 *   tcb-*      the same with x's B fragments made once a product (not yet
 *              run on a GPU)
 *   +gaps      NG stand-in kernels where the attention side runs (between
 *              q|kv_a|g and o_proj)
 * Median of 9 replays, ms a step; given the copy ceiling in GB/s also the
 * multiple of the floor (weights over it).  Every form's outputs are
 * checked against sep's (the same sums in the same order: bitwise; tc-*:
 * the worst relative L2 of a product's output).
 * Results: kernels/cuda/NOTES.md ("Twentieth run").
 *
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Ikernels/cuda \
 *        -Icommon tools/gpu/persist_chain.cu -o persist_chain && ./persist_chain [GB/s] [NG]
 */
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <vector>

#include "kcuda_int.cuh"
#include "lab.cuh"
#include "mma_sm80.cuh"

namespace {

constexpr int D = 2048, QN = 3296, F = 5632, V = 32000, L = 24;
constexpr int TH = 512, NWARP = TH / 32, KMAX = 11264; /* x up to gate|up's output */
constexpr int U = 8; /* 16-byte loads a lane in flight (a row of K 2048 in one trip) */

struct prod {
    const uint16_t *w;
    int N, K;
    const float *x; /* K floats */
    float *y;       /* N floats */
};

struct plan {
    prod p[4 * L + 1];
    int n;
};

__device__ __forceinline__ float dot8(uint4 w, const float *x) {
    const float4 a = *(const float4 *)x, b = *(const float4 *)(x + 4);
    auto lo = [](uint32_t v) { return __uint_as_float(v << 16); };
    auto hi = [](uint32_t v) { return __uint_as_float(v & 0xffff0000u); };
    float s = lo(w.x) * a.x;
    s = fmaf(hi(w.x), a.y, s);
    s = fmaf(lo(w.y), a.z, s);
    s = fmaf(hi(w.y), a.w, s);
    s = fmaf(lo(w.z), b.x, s);
    s = fmaf(hi(w.z), b.y, s);
    s = fmaf(lo(w.w), b.z, s);
    s = fmaf(hi(w.w), b.w, s);
    return s;
}

/* The first trip of row n of product pr into v (chunks lane, lane + 32, ...). */
__device__ __forceinline__ void load_trip(const prod &pr, int n, int t, uint4 (&v)[U]) {
    const uint4 *row = (const uint4 *)(pr.w + (size_t)n * pr.K);
    const int nch = pr.K / 8, lane = threadIdx.x & 31;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int c = (t * U + u) * 32 + lane;
        v[u] = c < nch ? __ldcs(row + c) : make_uint4(0, 0, 0, 0);
    }
}

/* x into shared memory (after the dependency) */
__device__ __forceinline__ void stage_x(const prod &pr, float *xs) {
    for (int i = threadIdx.x * 4; i < pr.K; i += TH * 4)
        *(float4 *)(xs + i) = __ldcg((const float4 *)(pr.x + i));
    __syncthreads();
}

/* Rows warp, warp + warps, ... of pr; v holds the first row's first trip
 * when pre is set. */
__device__ __forceinline__ void run_prod(const prod &pr, const float *xs, uint4 (&v)[U], bool pre) {
    const int warps = gridDim.x * NWARP, gw = blockIdx.x * NWARP + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31, trips = (pr.K / 8 + 32 * U - 1) / (32 * U);
    for (int n = gw; n < pr.N; n += warps) {
        float s = 0.0f;
        for (int t = 0; t < trips; t++) {
            if (!(pre && n == gw && t == 0))
                load_trip(pr, n, t, v);
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int c = (t * U + u) * 32 + lane;
                if (c < pr.K / 8)
                    s += dot8(v[u], xs + 8 * c);
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0)
            pr.y[n] = s;
    }
}

/* One product a launch. */
__global__ void __launch_bounds__(TH, 1) one_kernel(const prod pr) {
    __shared__ __align__(16) float xs[KMAX];
    uint4 v[U];
    const int gw = blockIdx.x * NWARP + (threadIdx.x >> 5);
    if (gw < pr.N)
        load_trip(pr, gw, 0, v);
    kc_pdl_enter();
    stage_x(pr, xs);
    run_prod(pr, xs, v, gw < pr.N);
}

/* One thread's side of grid barrier k (counter zeroed before the step):
 * its block's arrival, then the wait for every block's. */
__device__ __forceinline__ void grid_arrive_wait(unsigned *ctr, unsigned k) {
    __threadfence();
    atomicAdd(ctr, 1u);
    const unsigned want = (k + 1) * gridDim.x;
    unsigned seen;
    do {
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(ctr));
    } while (seen < want);
}

/* Grid barrier k of this launch. */
__device__ __forceinline__ void grid_bar(unsigned *ctr, unsigned k) {
    __syncthreads();
    if (threadIdx.x == 0)
        grid_arrive_wait(ctr, k);
    __syncthreads();
}

/* The consumer warps (NT threads, named barrier 1) of the warp-specialised
 * forms before product i: with bar, barrier i - 1 (product i - 1 done
 * everywhere). */
template <int NT>
__device__ __forceinline__ void consumer_bar(bool bar, unsigned i, unsigned *ctr) {
    if (bar) {
        asm volatile("bar.sync 1, %0;" ::"n"(NT) : "memory");
        if (threadIdx.x == 0)
            grid_arrive_wait(ctr, i - 1);
    }
    asm volatile("bar.sync 1, %0;" ::"n"(NT) : "memory");
}
/* (after the barrier, x into shared memory) */
template <int NT>
__device__ __forceinline__ void consumer_x(const prod &pr, bool bar, unsigned i, unsigned *ctr,
                                           float *xs) {
    consumer_bar<NT>(bar, i, ctr);
    for (int k = threadIdx.x * 4; k < pr.K; k += NT * 4)
        *(float4 *)(xs + k) = __ldcg((const float4 *)(pr.x + k));
    asm volatile("bar.sync 1, %0;" ::"n"(NT) : "memory");
}

/* Products first .. first + cnt - 1 of the plan, barriers between. */
__global__ void __launch_bounds__(TH, 1) multi_kernel(const plan *pl, int first, int cnt,
                                                      unsigned *ctr) {
    __shared__ __align__(16) float xs[KMAX];
    uint4 v[U];
    const int gw = blockIdx.x * NWARP + (threadIdx.x >> 5);
    prod pr = pl->p[first];
    bool pre = gw < pr.N;
    if (pre)
        load_trip(pr, gw, 0, v);
    kc_pdl_enter();
    for (int i = 0; i < cnt; i++) {
        stage_x(pr, xs);
        run_prod(pr, xs, v, pre);
        if (i + 1 == cnt)
            break;
        pr = pl->p[first + i + 1];
        pre = gw < pr.N;
        if (pre) /* the next product's first trip, before the barrier */
            load_trip(pr, gw, 0, v);
        grid_bar(ctr, (unsigned)i);
    }
}

/* ---- the warp-specialised form: a producer warp streams the block's rows
 * of every product, in order, into a ring of shared-memory slots by bulk
 * copies (mbarrier-completed), never waiting for a grid barrier; the
 * consumer warps wait for x (grid barrier, then x into shared memory) and
 * for each slot, and free it.  Block b owns rows [b N / G, (b+1) N / G) of
 * every product; a slot holds as many whole rows as fit (3 of K 2048, 1 of
 * 5632), summed by one warp as independent chains.  A slot's phases must
 * be waited for in order: within a product, slot q goes to warp q % 16, so
 * with as many slots as warps a warp always waits for the phase after the
 * one it consumed itself (with 8 slots and 16 warps a warp could wait for a
 * phase whose predecessor had not completed: the parity test passes early). */
constexpr int WS_CW = 16, WS_TH = 32 * (WS_CW + 1), WS_SLOTS = 16, WS_SLOT_B = 12288;
static_assert(WS_SLOTS % WS_CW == 0, "a slot's phases in order: one warp a slot within a product");
constexpr int WS_XMAX = F; /* x floats a product reads (K <= F) */
constexpr size_t WS_SMEM = (size_t)WS_SLOTS * WS_SLOT_B + WS_XMAX * 4 + 2 * WS_SLOTS * 8;

__device__ __forceinline__ uint32_t sa(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void mb_init(uint64_t *b, unsigned n) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sa(b)), "r"(n));
}
__device__ __forceinline__ void mb_expect(uint64_t *b, unsigned tx) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sa(b)), "r"(tx)
                 : "memory");
}
__device__ __forceinline__ void mb_arrive(uint64_t *b) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(sa(b)) : "memory");
}
__device__ __forceinline__ void mb_wait(uint64_t *b, unsigned par) {
    asm volatile("{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
                 " @!p bra W;\n}" ::"r"(sa(b)),
                 "r"(par)
                 : "memory");
}
__device__ __forceinline__ void bulk_g2s(void *dst, const void *src, unsigned bytes, uint64_t *b) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
                 "%2, [%3];" ::"r"(sa(dst)),
                 "l"(src), "r"(bytes), "r"(sa(b))
                 : "memory");
}

template <int NR>
__device__ __forceinline__ void rows_dot(const uint4 *row, int nch, const float *xs, int lane,
                                         float (&sr)[4]) {
    for (int c = lane; c < nch; c += 32) {
        uint4 w[NR];
#pragma unroll
        for (int j = 0; j < NR; j++)
            w[j] = row[(size_t)j * nch + c];
#pragma unroll
        for (int j = 0; j < NR; j++)
            sr[j] += dot8(w[j], xs + 8 * c);
    }
}

/* A ring of n slots: full[i] completes when slot i's copies land (one
 * arrival with their byte count), empty[i] when its consumer is done; then
 * a block barrier. */
__device__ __forceinline__ void ring_init(uint64_t *full, uint64_t *empty, int n) {
    if (threadIdx.x == 0) {
        for (int i = 0; i < n; i++) {
            mb_init(&full[i], 1);
            mb_init(&empty[i], 1);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
}

/* The producer's turn at slot seq % n: its last use freed, then bytes
 * announced on its full barrier (the copies follow). */
__device__ __forceinline__ void slot_acquire(uint64_t *full, uint64_t *empty, unsigned seq, int n,
                                             unsigned bytes) {
    const int sl = seq % n;
    if (seq >= (unsigned)n)
        mb_wait(&empty[sl], ((seq / n) - 1) & 1);
    mb_expect(&full[sl], bytes);
}

/* This block's share [a, b) of n items (rows, row groups), contiguous. */
__device__ __forceinline__ void block_share(int n, int *a, int *b) {
    *a = (int)((int64_t)blockIdx.x * n / gridDim.x);
    *b = (int)((int64_t)(blockIdx.x + 1) * n / gridDim.x);
}
/* whole rows of K a ws_kernel slot holds (producer and consumer alike) */
__device__ __forceinline__ int ws_rows_a_slot(int K) { return min(4, WS_SLOT_B / (K * 2)); }

__global__ void __launch_bounds__(WS_TH, 1) ws_kernel(const plan *pl, int first, int cnt,
                                                     unsigned *ctr, int mode) {
    extern __shared__ __align__(128) unsigned char wsm[];
    unsigned char *slots = wsm;
    float *xs = (float *)(wsm + (size_t)WS_SLOTS * WS_SLOT_B);
    uint64_t *full = (uint64_t *)(xs + WS_XMAX), *empty = full + WS_SLOTS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    ring_init(full, empty, WS_SLOTS);
    if (warp == WS_CW) { /* producer: weights only, no dependency */
        if (lane == 0) {
            unsigned seq = 0;
            for (int i = 0; i < cnt; i++) {
                const prod pr = pl->p[first + i];
                int r0, r1;
                block_share(pr.N, &r0, &r1);
                const int rps = ws_rows_a_slot(pr.K);
                for (int n = r0; n < r1; n += rps, seq++) {
                    const int sl = seq % WS_SLOTS, nr = min(rps, r1 - n);
                    const unsigned bytes = (unsigned)(nr * pr.K * 2);
                    slot_acquire(full, empty, seq, WS_SLOTS, bytes);
                    bulk_g2s(slots + (size_t)sl * WS_SLOT_B, pr.w + (size_t)n * pr.K, bytes,
                             &full[sl]);
                }
            }
        }
        kc_pdl_enter();
        return;
    }
    /* consumers */
    kc_pdl_enter();
    unsigned seq = 0;
    for (int i = 0; i < cnt; i++) {
        const prod pr = pl->p[first + i];
        consumer_x<32 * WS_CW>(pr, i > 0 && !(mode & 1), (unsigned)i, ctr, xs);
        int r0, r1;
        block_share(pr.N, &r0, &r1);
        const int nch = pr.K / 8, rps = ws_rows_a_slot(pr.K);
        const int nsl = (r1 - r0 + rps - 1) / rps;
        for (int q = warp; q < nsl; q += WS_CW) {
            const unsigned sq = seq + (unsigned)q;
            const int sl = sq % WS_SLOTS;
            mb_wait(&full[sl], (sq / WS_SLOTS) & 1);
            const int n0 = r0 + q * rps, nr = min(rps, r1 - n0);
            float sr[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            const uint4 *row = (const uint4 *)(slots + (size_t)sl * WS_SLOT_B);
            if (!(mode & 2)) {
                if (nr == 4) /* independent chains */
                    rows_dot<4>(row, nch, xs, lane, sr);
                else if (nr == 3)
                    rows_dot<3>(row, nch, xs, lane, sr);
                else if (nr == 2)
                    rows_dot<2>(row, nch, xs, lane, sr);
                else
                    rows_dot<1>(row, nch, xs, lane, sr);
            }
            __syncwarp();
            if (lane == 0)
                mb_arrive(&empty[sl]);
            for (int j = 0; j < nr; j++) {
                float s = sr[j];
#pragma unroll
                for (int o = 16; o > 0; o >>= 1)
                    s += __shfl_xor_sync(0xffffffffu, s, o);
                if (lane == 0)
                    pr.y[n0 + j] = s;
            }
        }
        seq += (unsigned)nsl;
    }
}

/* ---- the tensor-core form: as ws_kernel, but a slot holds 16 rows x 512
 * k of W (row segments 16 bytes apart more than 1 KB: conflict-free
 * ldmatrix), a consumer warp takes a slot as one unit (16 rows, one k
 * chunk) with mma.sync m16n8k16: W as A, x as B with its bf16 hi part in
 * column 0 and the lo part in column 1 (x ~ hi + lo); the units' partial
 * rows go to shared memory and are added over the k chunks in order after
 * the product's last unit.  Slot seq -> warp seq % TC_CW (TC_SLOTS a
 * multiple of it: a warp always waits for the phase after its own). */
constexpr int TC_CW = 12, TC_TH = 32 * (TC_CW + 1), TC_SLOTS = 12, TC_KC = 512;
constexpr int TC_RSTR = TC_KC + 8, TC_SLOT_E = 16 * TC_RSTR, TC_UMAX = 64;
static_assert(TC_SLOTS % TC_CW == 0, "a slot's phases in order");
constexpr size_t TC_SMEM = (size_t)TC_SLOTS * TC_SLOT_E * 2 + (size_t)WS_XMAX * 4 +
                           (size_t)TC_UMAX * 16 * 4 + 2 * TC_SLOTS * 8;

/* this block's 16-row groups of pr */
__device__ __forceinline__ void rgs_of(const prod &pr, int *g0, int *g1) {
    block_share(pr.N / 16, g0, g1);
}

__device__ __forceinline__ uint32_t pack_bf16(float a, float b) {
    return (uint32_t)(__float_as_uint(a) >> 16) | (__float_as_uint(b) & 0xffff0000u);
}
/* round to nearest even bf16, as a float */
__device__ __forceinline__ float rn_bf16(float v) {
    uint32_t u = __float_as_uint(v);
    u += 0x7fffu + ((u >> 16) & 1u);
    return __uint_as_float(u & 0xffff0000u);
}

/* BF: x's B fragments made once a product (after the barrier, straight
 * from global memory: for each 16 k and lane g < 2, t < 4 of a warp the
 * two 32-bit registers, hi for g = 0 and lo for g = 1, 64 bytes a k-step,
 * in place of the f32 x) instead of at every k-step of every unit (the
 * measured form: ~50 instructions a k-step on the lanes g < 2).  Written
 * after the round's device time was spent: not yet run. */
template <bool BF>
__global__ void __launch_bounds__(TC_TH, 1) tc_kernel(const plan *pl, int first, int cnt,
                                                     unsigned *ctr, int mode) {
    extern __shared__ __align__(128) unsigned char tsm[];
    uint16_t *slots = (uint16_t *)tsm;
    float *xs = (float *)(tsm + (size_t)TC_SLOTS * TC_SLOT_E * 2);
    float *part = xs + WS_XMAX;
    uint64_t *full = (uint64_t *)(part + TC_UMAX * 16), *empty = full + TC_SLOTS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    ring_init(full, empty, TC_SLOTS);
    if (warp == TC_CW) { /* producer: lane r < 16 copies row r of each slot */
        unsigned seq = 0;
        for (int i = 0; i < cnt; i++) {
            const prod pr = pl->p[first + i];
            int g0, g1;
            rgs_of(pr, &g0, &g1);
            const int nkc = pr.K / TC_KC;
            for (int g = g0; g < g1; g++)
                for (int kc = 0; kc < nkc; kc++, seq++) {
                    const int sl = seq % TC_SLOTS;
                    if (lane == 0)
                        slot_acquire(full, empty, seq, TC_SLOTS, 16 * TC_KC * 2);
                    __syncwarp();
                    if (lane < 16)
                        bulk_g2s(slots + (size_t)sl * TC_SLOT_E + lane * TC_RSTR,
                                 pr.w + (size_t)(16 * g + lane) * pr.K + kc * TC_KC, TC_KC * 2,
                                 &full[sl]);
                }
        }
        kc_pdl_enter();
        return;
    }
    kc_pdl_enter();
    unsigned seq = 0;
    for (int i = 0; i < cnt; i++) {
        const prod pr = pl->p[first + i];
        if (BF) {
            consumer_bar<32 * TC_CW>(i > 0 && !(mode & 1), (unsigned)i, ctr);
            uint2 *bf = (uint2 *)xs; /* [K / 16][g 2][t 4] */
            for (int e = threadIdx.x; e < pr.K / 2; e += 32 * TC_CW) {
                const int ks = e >> 3, g = (e >> 2) & 1, t = e & 3;
                const float *xp = pr.x + 16 * ks + 2 * t;
                const float2 p0 = __ldcg((const float2 *)xp), p1 = __ldcg((const float2 *)(xp + 8));
                float h[4] = {rn_bf16(p0.x), rn_bf16(p0.y), rn_bf16(p1.x), rn_bf16(p1.y)};
                if (g) {
                    h[0] = rn_bf16(p0.x - h[0]);
                    h[1] = rn_bf16(p0.y - h[1]);
                    h[2] = rn_bf16(p1.x - h[2]);
                    h[3] = rn_bf16(p1.y - h[3]);
                }
                bf[e] = make_uint2(pack_bf16(h[0], h[1]), pack_bf16(h[2], h[3]));
            }
            asm volatile("bar.sync 1, %0;" ::"n"(32 * TC_CW) : "memory");
        } else {
            consumer_x<32 * TC_CW>(pr, i > 0 && !(mode & 1), (unsigned)i, ctr, xs);
        }
        int g0, g1;
        rgs_of(pr, &g0, &g1);
        const int nkc = pr.K / TC_KC, nu = (g1 - g0) * nkc;
        /* this warp's units: global seq = seq + u with (seq + u) % TC_CW == warp */
        int u = (int)((warp - (int)(seq % TC_CW) + TC_CW) % TC_CW);
        for (; u < nu; u += TC_CW) {
            const unsigned sq = seq + (unsigned)u;
            const int sl = sq % TC_SLOTS, kc = u % nkc;
            mb_wait(&full[sl], (sq / TC_SLOTS) & 1);
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (!(mode & 2)) {
                const int ar = (lane & 7) + 8 * ((lane >> 3) & 1); /* ldmatrix row */
                const uint16_t *ws =
                    slots + (size_t)sl * TC_SLOT_E + ar * TC_RSTR + 8 * (lane >> 4);
                const float *xk = xs + kc * TC_KC + 2 * tq;
#pragma unroll 4
                for (int ks = 0; ks < TC_KC / 16; ks++) {
                    uint32_t a[4];
                    mma_ldsm_x4<false>(a, ws + 16 * ks);
                    uint32_t b0 = 0, b1 = 0;
                    if (BF) {
                        if (gq < 2) {
                            const uint2 b = ((const uint2 *)xs)[(kc * TC_KC / 16 + ks) * 8 + lane];
                            b0 = b.x;
                            b1 = b.y;
                        }
                    } else if (gq < 2) {
                        const float2 p0 = *(const float2 *)(xk + 16 * ks);
                        const float2 p1 = *(const float2 *)(xk + 16 * ks + 8);
                        float h00 = rn_bf16(p0.x), h01 = rn_bf16(p0.y), h10 = rn_bf16(p1.x),
                              h11 = rn_bf16(p1.y);
                        if (gq == 1) {
                            h00 = rn_bf16(p0.x - h00);
                            h01 = rn_bf16(p0.y - h01);
                            h10 = rn_bf16(p1.x - h10);
                            h11 = rn_bf16(p1.y - h11);
                        }
                        b0 = pack_bf16(h00, h01);
                        b1 = pack_bf16(h10, h11);
                    }
                    mma_16816(acc, a, b0, b1);
                }
            }
            __syncwarp();
            if (lane == 0)
                mb_arrive(&empty[sl]);
            if (tq == 0 && u < TC_UMAX) { /* columns 0 (hi) and 1 (lo) */
                part[u * 16 + gq] = acc[0] + acc[1];
                part[u * 16 + gq + 8] = acc[2] + acc[3];
            }
        }
        asm volatile("bar.sync 1, %0;" ::"n"(32 * TC_CW) : "memory");
        for (int r = threadIdx.x; r < (g1 - g0) * 16; r += 32 * TC_CW) {
            const int gl = r / 16, rr = r % 16;
            float y = 0.0f;
            for (int kc = 0; kc < nkc; kc++)
                y += part[(gl * nkc + kc) * 16 + rr];
            pr.y[16 * (g0 + gl) + rr] = y;
        }
        seq += (unsigned)nu;
    }
}

__global__ void __launch_bounds__(128) gap_kernel(const float *x, float *y) {
    kc_pdl_enter();
    const int i = blockIdx.x * 128 + threadIdx.x;
    y[i] = x[i & (D - 1)] * 1.0001f + (float)blockIdx.x;
}

} // namespace

int main(int argc, char **argv) {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const int sms = prop.multiProcessorCount;
    const double gbs = argc > 1 ? atof(argv[1]) : 0.0;
    const int ng = argc > 2 ? atoi(argv[2]) : 4;

    /* weights: every product its own copy (the step's bytes, beyond L2) */
    const int shapes[4][2] = {{QN, D}, {D, D}, {2 * F, D}, {D, F}};
    size_t welems = 0;
    for (int l = 0; l < L; l++)
        for (int j = 0; j < 4; j++)
            welems += (size_t)shapes[j][0] * shapes[j][1];
    welems += (size_t)V * D;
    uint16_t *wb;
    CK(cudaMalloc(&wb, welems * 2));
    {
        std::vector<uint16_t> h(1 << 24);
        uint32_t r = 12345;
        for (auto &e : h) {
            r = r * 1664525u + 1013904223u;
            e = (uint16_t)(0x3c00 | ((r >> 9) & 0x7f) | ((r >> 31) << 15)); /* +-~0.0078 */
        }
        for (size_t o = 0; o < welems; o += h.size())
            CK(cudaMemcpy(wb + o, h.data(), 2 * std::min(h.size(), welems - o),
                          cudaMemcpyHostToDevice));
    }
    /* activations: one buffer an output, KMAX floats each */
    const int np = 4 * L + 1;
    float *act;
    /* (the last output, lm_head's, is V floats) */
    const size_t act_n = (size_t)np * KMAX + V;
    CK(cudaMalloc(&act, act_n * 4));
    {
        std::vector<float> h0(KMAX);
        for (int i = 0; i < KMAX; i++)
            h0[i] = 0.5f + 0.001f * (float)(i % 97);
        CK(cudaMemcpy(act, h0.data(), KMAX * 4, cudaMemcpyHostToDevice));
    }
    plan hp;
    hp.n = np;
    size_t wo = 0;
    for (int i = 0; i < np; i++) {
        const int N = i < 4 * L ? shapes[i % 4][0] : V, K = i < 4 * L ? shapes[i % 4][1] : D;
        hp.p[i] = {wb + wo, N, K, act + (size_t)i * KMAX, act + (size_t)(i + 1) * KMAX};
        wo += (size_t)N * K;
    }
    plan *dp;
    CK(cudaMalloc(&dp, sizeof(plan)));
    CK(cudaMemcpy(dp, &hp, sizeof(plan), cudaMemcpyHostToDevice));
    unsigned *ctr;
    CK(cudaMalloc(&ctr, 64 * sizeof(unsigned)));
    float *gbuf;
    CK(cudaMalloc(&gbuf, (size_t)sms * 128 * 4));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

    auto gaps = [&](bool on) {
        if (on)
            for (int g = 0; g < ng; g++)
                CK(kc_launch_pdl(true, gap_kernel, sms, 128, 0, s, (const float *)gbuf, gbuf));
    };
    /* one launch a product, the gap kernels after each q|kv_a|g */
    auto sep = [&](bool g) {
        for (int i = 0; i < np; i++) {
            CK(kc_launch_pdl(i > 0, one_kernel, sms, TH, 0, s, hp.p[i]));
            if (i % 4 == 0 && i < 4 * L)
                gaps(g);
        }
    };
    /* q|kv_a|g of layer 0 alone, then unit(first, cnt, counter) a layer
     * ([o, gu, dn, q(next)]; the last ends at down), then lm_head */
    auto units = [&](bool g, auto unit) {
        CK(cudaMemsetAsync(ctr, 0, 64 * sizeof(unsigned), s));
        CK(kc_launch_pdl(false, one_kernel, sms, TH, 0, s, hp.p[0]));
        gaps(g);
        for (int l = 0; l < L; l++) {
            unit(4 * l + 1, l + 1 < L ? 4 : 3, ctr + l);
            if (l + 1 < L)
                gaps(g);
        }
        CK(kc_launch_pdl(true, one_kernel, sms, TH, 0, s, hp.p[np - 1]));
    };
    CK(cudaFuncSetAttribute(ws_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)WS_SMEM));
    for (auto k : {tc_kernel<false>, tc_kernel<true>})
        CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)TC_SMEM));
    const plan *pd = dp;
    auto layer = [&](bool g) {
        units(g, [&](int f, int c, unsigned *k) {
            CK(kc_launch_pdl(true, multi_kernel, sms, TH, 0, s, pd, f, c, k));
        });
    };
    auto wsl = [&](bool g) {
        units(g, [&](int f, int c, unsigned *k) {
            CK(kc_launch_pdl(true, ws_kernel, sms, WS_TH, WS_SMEM, s, pd, f, c, k, 0));
        });
    };
    auto tcl = [&](bool g, bool bf = false) {
        units(g, [&](int f, int c, unsigned *k) {
            CK(kc_launch_pdl(true, bf ? tc_kernel<true> : tc_kernel<false>, sms, TC_TH, TC_SMEM, s,
                             pd, f, c, k, 0));
        });
    };
    /* the whole step as one launch */
    auto wsa = [&](int mode = 0) {
        CK(cudaMemsetAsync(ctr, 0, 64 * sizeof(unsigned), s));
        CK(kc_launch_pdl(false, ws_kernel, sms, WS_TH, WS_SMEM, s, pd, 0, np, ctr + 63, mode));
    };
    auto tca = [&](int mode = 0, bool bf = false) {
        CK(cudaMemsetAsync(ctr, 0, 64 * sizeof(unsigned), s));
        CK(kc_launch_pdl(false, bf ? tc_kernel<true> : tc_kernel<false>, sms, TC_TH, TC_SMEM, s, pd,
                         0, np, ctr + 63, mode));
    };
    auto all = [&] {
        CK(cudaMemsetAsync(ctr, 0, 64 * sizeof(unsigned), s));
        CK(kc_launch_pdl(false, multi_kernel, sms, TH, 0, s, pd, 0, np, ctr + 63));
    };

    /* outputs of each form against sep's */
    std::vector<float> ref(act_n), got(ref.size());
    auto outputs = [&](std::vector<float> &o) {
        CK(cudaStreamSynchronize(s));
        CK(cudaMemcpy(o.data(), act, o.size() * 4, cudaMemcpyDeviceToHost));
    };
    auto clear = [&] { CK(cudaMemset(act + KMAX, 0xff, (act_n - KMAX) * 4)); };
    clear();
    sep(false);
    outputs(ref);
    constexpr int NF = 18;
    const char *names[NF] = {"sep",          "layer",      "all",           "sep+gaps",
                             "layer+gaps",   "ws-all",     "ws-layer",      "ws-layer+gaps",
                             "ws-all nobar", "ws-all nobar nomath", "tc-all", "tc-layer",
                             "tc-layer+gaps", "tc-all nobar", "tc-all nobar nomath",
                             "tcb-all",      "tcb-layer+gaps", "tcb-all nobar"};
    double rel[NF] = {0};
    bool same[NF];
    same[0] = true;
    for (int f = 1; f < NF; f++) {
        clear();
        if (f == 1)
            layer(false);
        else if (f == 2)
            all();
        else if (f == 3)
            sep(true);
        else if (f == 4)
            layer(true);
        else if (f == 5)
            wsa();
        else if (f < 8)
            wsl(f == 7);
        else if (f < 10)
            wsa(f == 8 ? 1 : 3);
        else if (f == 10)
            tca();
        else if (f < 13)
            tcl(f == 12);
        else if (f < 15)
            tca(f == 13 ? 1 : 3);
        else if (f == 16)
            tcl(true, true);
        else
            tca(f == 15 ? 0 : 1, true);
        const cudaError_t e = cudaStreamSynchronize(s);
        if (e != cudaSuccess) {
            fprintf(stderr, "form %s: %s\n", names[f], cudaGetErrorString(e));
            exit(1);
        }
        outputs(got);
        same[f] = memcmp(ref.data(), got.data(), ref.size() * 4) == 0;
        for (int i = 1; i <= np; i++) { /* relative L2 of each product's output */
            const int N = hp.p[i - 1].N;
            double d = 0, n = 0;
            for (int j = 0; j < N; j++) {
                const double a = ref[(size_t)i * KMAX + j], b = got[(size_t)i * KMAX + j];
                d += (a - b) * (a - b);
                n += a * a;
            }
            const double r = n > 0 && std::isfinite(n) ? sqrt(d / n) : 0;
            rel[f] = r > rel[f] || r != r ? r : rel[f];
        }
    }
    double ms[NF];
    ms[0] = lab_graph_ms(s, [&] { sep(false); });
    ms[1] = lab_graph_ms(s, [&] { layer(false); });
    ms[2] = lab_graph_ms(s, [&] { all(); });
    ms[3] = lab_graph_ms(s, [&] { sep(true); });
    ms[4] = lab_graph_ms(s, [&] { layer(true); });
    ms[5] = lab_graph_ms(s, [&] { wsa(); });
    ms[6] = lab_graph_ms(s, [&] { wsl(false); });
    ms[7] = lab_graph_ms(s, [&] { wsl(true); });
    ms[8] = lab_graph_ms(s, [&] { wsa(1); });
    ms[9] = lab_graph_ms(s, [&] { wsa(3); });
    ms[10] = lab_graph_ms(s, [&] { tca(); });
    ms[11] = lab_graph_ms(s, [&] { tcl(false); });
    ms[12] = lab_graph_ms(s, [&] { tcl(true); });
    ms[13] = lab_graph_ms(s, [&] { tca(1); });
    ms[14] = lab_graph_ms(s, [&] { tca(3); });
    ms[15] = lab_graph_ms(s, [&] { tca(0, true); });
    ms[16] = lab_graph_ms(s, [&] { tcl(true, true); });
    ms[17] = lab_graph_ms(s, [&] { tca(1, true); });
    CK(cudaGetLastError());
    const double mb = welems * 2 / 1e6, floor_ms = gbs > 0 ? mb / gbs : 0.0;
    printf("device: %s, %d SMs; %d products, %.1f MB of weights", prop.name, sms, np, mb);
    if (floor_ms > 0)
        printf("; floor at %.0f GB/s %.3f ms", gbs, floor_ms);
    printf("; %d gap kernels an attention side\n", ng);
    printf("%-20s %8s %8s %8s %s\n", "form", "ms", "x floor", "GB/s", "outputs");
    for (int f = 0; f < NF; f++)
        printf("%-20s %8.3f %8.2f %8.0f %s (worst relative L2 of a product %.2g)\n", names[f],
               ms[f], floor_ms > 0 ? ms[f] / floor_ms : 0, mb / ms[f], same[f] ? "= sep" : "DIFFER",
               rel[f]);
    return 0;
}
