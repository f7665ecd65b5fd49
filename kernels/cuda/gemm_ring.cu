/*
 * kernels/cuda/gemm_ring.cu - the decode product for 9 to 64 rows with W
 * and x through a shared-memory ring (contract in gemm_ring_cuda.h).
 * The WG form (gemm_ring_cuda_wg) keeps the ring and the cluster sum and
 * replaces the main loop below by warpgroup MMAs (wgmma_sm90.cuh).
 *
 * A stage is 128 rows of W x 64 k (16 KiB; the 16-byte chunks of a row are
 * stored at chunk ^ (row & 7), so the eight rows an ldmatrix phase reads
 * fall in different banks) and the 64 k of every x row (hi, and lo when
 * given; rows padded to 72 elements: the 32-bit B-fragment loads of the
 * eight rows gq and four lanes tq hit 32 different banks).  Warp w owns
 * rows 16 w .. 16 w + 15 of the block's 128: per 16 k one ldmatrix.x4 for
 * its A fragments, then for every tile of 8 x rows two 32-bit shared loads
 * (b0, b1) and one MMA (two with lo: hi then lo into the same
 * accumulators).  RS stages (3-4, as many as fit two blocks an SM) keep
 * RS - 1 stages of copies in flight a block; no registers hold weights in
 * flight.
 */
#include "gemm_ring_cuda.h"

#include "kcuda_int.cuh"
#include "mma_sm80.cuh"
#include "wgmma_sm90.cuh"
#ifdef __CUDACC__
#include <cooperative_groups.h>
#endif

namespace {

constexpr int GR_WARPS = 8, GR_THREADS = 32 * GR_WARPS, GR_BN = 16 * GR_WARPS;
constexpr int GR_KC = GEMM_RING_KC, GR_XLD = GR_KC + 8;
constexpr int GR_TARGET_BLOCKS = 264; /* two an SM of a 132-SM card */
constexpr int GR_SUMV = 8;            /* slices' partials in flight a thread */

/* WG: the warpgroup-MMA form's x rows, 64 k unpadded and swizzled like
 * W's (wgmma_sm90.cuh), every stage 1024-byte aligned */
template <int NT, bool LO, bool WG = false> __host__ __device__ constexpr size_t gr_stage_bytes() {
    return (size_t)GR_BN * GR_KC * 2 + (size_t)(LO ? 2 : 1) * 8 * NT * (WG ? GR_KC : GR_XLD) * 2;
}
/* stages: as many as fit two blocks in an SM's shared memory, 2..4 */
template <int NT, bool LO, bool WG = false> constexpr int gr_stages() {
    return 110 * 1024 / gr_stage_bytes<NT, LO, WG>() >= 4   ? 4
           : 110 * 1024 / gr_stage_bytes<NT, LO, WG>() >= 3 ? 3
                                                            : 2;
}
/* the WG form's slack to align the ring to 1024 bytes */
template <bool WG> constexpr size_t gr_align_slack() { return WG ? 1024 : 0; }

#ifdef __CUDACC__
/* The lab's split-K sum inside a thread block cluster (gemm_ring_cuda_
 * cluster): the blocks of one 128-row column are one cluster along y (rank
 * = slice); each puts its partial tile [M][128] f32 in its own shared
 * memory (the ring's, free after the main loop), and after a cluster
 * barrier block q adds outputs q, q + ns, ... of the column over the ranks
 * in order, reading the others' tiles through distributed shared memory:
 * no global round trip.  A second barrier keeps every tile alive until it
 * is read. */
template <int NT>
__device__ __forceinline__ void gr_cluster_sum(const gemm_ring_params &p, const float (&acc)[NT][4],
                                               float *tile, int nb) {
    namespace cg = cooperative_groups;
    cg::cluster_group cl = cg::this_cluster();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    __syncthreads(); /* every warp is done with the ring */
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int m = 8 * t + 2 * tq + (e & 1), r = 16 * warp + gq + 8 * (e >> 1);
            if (m < p.M)
                tile[m * GR_BN + r] = acc[t][e];
        }
    cl.sync();
    const int ns = (int)cl.num_blocks(), rank = (int)cl.block_rank();
    const int rows = min(GR_BN, p.N - nb);
    for (int i = rank * GR_THREADS + (int)threadIdx.x; i < p.M * GR_BN; i += ns * GR_THREADS) {
        const int m = i / GR_BN, r = i % GR_BN;
        float v[16];
#pragma unroll
        for (int q = 0; q < 16; q++)
            v[q] = q < ns ? cl.map_shared_rank(tile, q)[i] : 0.0f;
        float sum = 0.0f;
#pragma unroll
        for (int q = 0; q < 16; q++)
            if (q < ns)
                sum += v[q];
        if (r < rows) {
            float *yp = p.y + (int64_t)m * p.ldy + nb + r;
            *yp = p.acc ? *yp + sum : sum;
        }
    }
    cl.sync();
}
#endif

/* NT: 8-row tiles of x (M <= 8 NT); LO: the lo part too; RS: ring stages.
 * CL: the slices summed in a cluster (gr_cluster_sum) instead of the
 * workspace.  WG: the main loop on warpgroup MMAs (two warpgroups of 64 W
 * rows, x rows as B; sm_90a, nvcc only) instead of mma.sync.  Grid: (128-row
 * columns of W, K slices of kc chunks of 64). */
template <int NT, bool LO, int RS, bool CL = false, bool WG = false>
__global__ void __launch_bounds__(GR_THREADS, 2)
    gemm_ring_kernel(const gemm_ring_params p, const int splits, const int kc) {
    extern __shared__ float gr_sm[];
    constexpr int XR = 8 * NT, PARTS = LO ? 2 : 1, XLD = WG ? GR_KC : GR_XLD;
    constexpr size_t STB = gr_stage_bytes<NT, LO, WG>();
    char *base = (char *)gr_sm;
#if defined(__CUDACC__) && !defined(ASA_CUDA_EMU)
    /* WG: the swizzle is on address bits, so the stages are 1024-byte
     * aligned */
    if constexpr (WG)
        base += (1024 - ((uint32_t)__cvta_generic_to_shared(gr_sm) & 1023)) & 1023;
#endif
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    const int nb = blockIdx.x * GR_BN, split = blockIdx.y;
    const int c_first = split * kc, nch = min(kc, p.K / GR_KC - c_first);
    auto wst = [&](int c) { return (uint16_t *)(base + (c % RS) * STB); };
    auto xst = [&](int c) { return (uint16_t *)(base + (c % RS) * STB + GR_BN * GR_KC * 2); };
    /* the copies of chunk c (of this block's slice) into its slot */
    auto issue_w = [&](int c) {
        uint16_t *ws = wst(c);
        const int64_t k = (int64_t)(c_first + c) * GR_KC;
        for (int i = threadIdx.x; i < GR_BN * 8; i += GR_THREADS) {
            const int r = i >> 3, ch = i & 7;
            const int n = min(nb + r, p.N - 1); /* past N: a repeated row, dropped */
            mma_cp16(ws + r * GR_KC + 8 * (ch ^ (r & 7)), p.w + (int64_t)n * p.ldw + k + 8 * ch,
                     true);
        }
    };
    auto issue_x = [&](int c) {
        uint16_t *xs = xst(c);
        const int64_t k = (int64_t)(c_first + c) * GR_KC;
        for (int i = threadIdx.x; i < PARTS * XR * 8; i += GR_THREADS) {
            const int part = i / (XR * 8), r = i / 8 % XR, ch = i & 7;
            const uint16_t *src =
                (part ? p.xlo : p.xhi) + (int64_t)min(r, p.M - 1) * p.ldx + k + 8 * ch;
            const int pc = WG ? ch ^ (r & 7) : ch;                       /* WG: swizzled like W */
            mma_cp16(xs + (part * XR + r) * XLD + 8 * pc, src, r < p.M); /* zeros past M */
        }
    };
    /* W of the first RS - 1 stages before the PDL wait (one group each),
     * their x rows after it (one group) */
#pragma unroll
    for (int c = 0; c < RS - 1; c++) {
        if (c < nch)
            issue_w(c);
        mma_cp_commit();
    }
    kc_pdl_wait();
    kc_pdl_trigger();
#pragma unroll
    for (int c = 0; c < RS - 1; c++)
        if (c < nch)
            issue_x(c);
    mma_cp_commit();

    float acc[NT][4];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    /* this lane's ldmatrix row: matrix i = lane / 8 holds rows + 8 (i & 1)
     * and k half i >> 1 (the A fragment order a0..a3), row lane % 8 */
    const int ar = 16 * warp + (lane & 7) + 8 * ((lane >> 3) & 1), ah = lane >> 4;
    for (int c = 0; c < nch; c++) {
        /* chunk c landed: at c = 0 every prologue group (the x rows came
         * last), later all but the RS - 2 groups issued after chunk c's */
        if (c == 0)
            mma_cp_wait<0>();
        else
            mma_cp_wait<RS - 2>();
#if defined(__CUDACC__) && !defined(ASA_CUDA_EMU)
        if constexpr (WG)
            wg_fence_proxy(); /* the copies, to the MMAs' async proxy */
#endif
        __syncthreads(); /* chunk c everywhere; chunk c - 1's slot free */
        if (c + RS - 1 < nch) {
            issue_w(c + RS - 1);
            issue_x(c + RS - 1);
        }
        mma_cp_commit();
        const uint16_t *ws = wst(c), *xs = xst(c);
        if constexpr (WG) {
#if defined(__CUDACC__) && !defined(ASA_CUDA_EMU)
            /* warpgroup g: W rows 64 g.. of the block's 128 as A, the x
             * rows as B (hi, then lo into the same accumulators); done
             * before the next chunk's barrier frees this slot */
            const uint16_t *wa = ws + (warp >> 2) * 64 * GR_KC;
            wg_fence();
#pragma unroll
            for (int s = 0; s < GR_KC / 16; s++) {
                wg_mma_bf16<NT>(acc, wg_desc(wa + 16 * s), wg_desc(xs + 16 * s));
                if (LO)
                    wg_mma_bf16<NT>(acc, wg_desc(wa + 16 * s), wg_desc(xs + XR * GR_KC + 16 * s));
            }
            wg_commit();
            wg_wait_all();
#endif
        } else {
#pragma unroll
            for (int s = 0; s < GR_KC / 16; s++) {
                uint32_t a[4];
                mma_ldsm_x4<false>(a, ws + ar * GR_KC + 8 * ((2 * s + ah) ^ (ar & 7)));
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    const uint16_t *xr = xs + (8 * t + gq) * XLD + 16 * s + 2 * tq;
                    mma_16816(acc[t], a, *(const uint32_t *)xr, *(const uint32_t *)(xr + 8));
                    if (LO) {
                        const uint16_t *xl = xr + XR * XLD;
                        mma_16816(acc[t], a, *(const uint32_t *)xl, *(const uint32_t *)(xl + 8));
                    }
                }
            }
        }
    }
    mma_cp_wait<0>(); /* no copy outlives the block (the empty tail groups) */

    if constexpr (CL) {
#ifdef __CUDACC__
        gr_cluster_sum<NT>(p, acc, (float *)base, nb);
#endif
        return;
    }
    /* accumulator e of tile t: W row 16 warp + gq + 8 (e >> 1), x row
     * 8 t + 2 tq + (e & 1) */
    const int n0 = nb + 16 * warp;
    if (splits == 1) {
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int m = 8 * t + 2 * tq + (e & 1), n = n0 + gq + 8 * (e >> 1);
                if (m < p.M && n < p.N) {
                    float *yp = p.y + (int64_t)m * p.ldy + n;
                    *yp = p.acc ? *yp + acc[t][e] : acc[t][e];
                }
            }
        return;
    }
    /* split K: this slice's tile into the workspace; the column's last
     * block adds the slices in order */
    float *wp = p.ws + (size_t)split * p.M * p.N;
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int m = 8 * t + 2 * tq + (e & 1), n = n0 + gq + 8 * (e >> 1);
            if (m < p.M && n < p.N)
                wp[(size_t)m * p.N + n] = acc[t][e];
        }
    /* the block's tile published by one release, the last count taken
     * with acquire (kc_atom_add_acq_rel) */
    __shared__ int last;
    __syncthreads();
    if (threadIdx.x == 0)
        last = kc_atom_add_acq_rel(p.counters + blockIdx.x, 1) == splits - 1;
    __syncthreads();
    if (!last)
        return;
    /* a thread takes 4 adjacent outputs of one x row (an item), two items
     * at a time, and has up to GR_SUMV slices' partials of both in flight
     * (float4 loads where the workspace rows allow): the sum costs one L2
     * round trip for two items, not one a slice; the slices are still
     * added in order, so the bits depend on N and K only */
    const int rows = min(GR_BN, p.N - nb), items = p.M * (GR_BN / 4);
    const bool vec = (p.N & 3) == 0 && ((uintptr_t)p.ws & 15) == 0;
    const int sstride = p.M * p.N; /* splits > 1 only for N < 128 x 264: small */
    for (int i0 = threadIdx.x; i0 < items; i0 += 2 * GR_THREADS) {
        float s[2][4] = {};
        for (int s0 = 0; s0 < splits; s0 += GR_SUMV) {
            float4 v[2][GR_SUMV];
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const int i = i0 + u * GR_THREADS, m = i / (GR_BN / 4), r0 = 4 * (i % (GR_BN / 4));
                const bool live = i < items && r0 < rows;
                const int src = m * p.N + nb + r0;
#pragma unroll
                for (int j = 0; j < GR_SUMV; j++) {
                    const float *q = p.ws + (src + (s0 + j) * sstride);
                    if (!live || s0 + j >= splits)
                        v[u][j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    else if (vec)
                        v[u][j] = __ldcg((const float4 *)q);
                    else
                        v[u][j] = make_float4(__ldcg(q), r0 + 1 < rows ? __ldcg(q + 1) : 0.0f,
                                              r0 + 2 < rows ? __ldcg(q + 2) : 0.0f,
                                              r0 + 3 < rows ? __ldcg(q + 3) : 0.0f);
                }
            }
#pragma unroll
            for (int u = 0; u < 2; u++)
#pragma unroll
                for (int j = 0; j < GR_SUMV; j++)
                    if (s0 + j < splits) {
                        s[u][0] += v[u][j].x;
                        s[u][1] += v[u][j].y;
                        s[u][2] += v[u][j].z;
                        s[u][3] += v[u][j].w;
                    }
        }
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const int i = i0 + u * GR_THREADS, m = i / (GR_BN / 4), r0 = 4 * (i % (GR_BN / 4));
            if (i >= items)
                continue;
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (r0 + e < rows) {
                    float *yp = p.y + (int64_t)m * p.ldy + nb + r0 + e;
                    *yp = p.acc ? *yp + s[u][e] : s[u][e];
                }
        }
    }
    if (threadIdx.x == 0)
        p.counters[blockIdx.x] = 0; /* for the next launch */
}

void gr_split(int N, int K, int *splits, int *kc) {
    const int cols = (N + GR_BN - 1) / GR_BN, chunks = K / GR_KC;
    int s = (GR_TARGET_BLOCKS + cols - 1) / cols;
    s = s < 1 ? 1 : s > chunks ? chunks : s;
    *kc = (chunks + s - 1) / s;
    *splits = (chunks + *kc - 1) / *kc; /* no empty slice */
}

/* One launch; CL: the cluster form (gemm_ring_cuda_cluster, cl = 2..16
 * slices at most, one cluster a 128-row column; 1 with WG), else the
 * workspace form (gr_split's slices).  WG: the warpgroup-MMA main loop. */
template <int NT, bool LO, bool CL, bool WG = false>
cudaError_t launch(const gemm_ring_params &p, int cl, cudaStream_t s) {
    constexpr int RS = gr_stages<NT, LO, WG>();
    constexpr size_t smem = RS * gr_stage_bytes<NT, LO, WG>() + gr_align_slack<WG>();
    static_assert(!CL || smem - gr_align_slack<WG>() >= (size_t)8 * NT * GR_BN * 4,
                  "the cluster tile in the ring");
    auto *const k = gemm_ring_kernel<NT, LO, RS, CL, WG>;
    static size_t raised = 0; /* per instance (kc_smem_optin) */
    const cudaError_t e = kc_smem_optin(k, smem, &raised);
    if (e != cudaSuccess)
        return e;
    int splits, kc;
    if (CL) {
        const int chunks = p.K / GR_KC;
        kc = (chunks + cl - 1) / cl;
        splits = (chunks + kc - 1) / kc;
    } else {
        gr_split(p.N, p.K, &splits, &kc);
    }
    const dim3 grid((unsigned)((p.N + GR_BN - 1) / GR_BN), (unsigned)splits);
    if constexpr (!CL) {
        return kc_launch(k, grid, GR_THREADS, smem, s, p, splits, kc);
    } else {
#ifdef __CUDACC__
        static bool nonportable = false;
        if (splits > 8 && !nonportable) {
            const cudaError_t a =
                cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
            if (a != cudaSuccess)
                return a;
            nonportable = true;
        }
        return kc_launch_cluster(kc_pdl_on != 0, dim3(1, (unsigned)splits, 1), k, grid, GR_THREADS,
                                 smem, s, p, splits, kc);
#else
        return cudaErrorInvalidValue; /* not reached: the entry refuses first */
#endif
    }
}

/* The tile count of x rows from M (NT 8-row tiles). */
template <bool LO, bool CL, bool WG = false>
cudaError_t launch_nt(const gemm_ring_params &p, int cl, cudaStream_t s) {
    if (p.M <= 8)
        return launch<1, LO, CL, WG>(p, cl, s);
    if (p.M <= 16)
        return launch<2, LO, CL, WG>(p, cl, s);
    if (p.M <= 32)
        return launch<4, LO, CL, WG>(p, cl, s);
    return launch<8, LO, CL, WG>(p, cl, s);
}

} // namespace

extern "C" int gemm_ring_splits(int N, int K) {
    if (N < 1 || K < GR_KC)
        return 1;
    int splits, kc;
    gr_split(N, K, &splits, &kc);
    return splits;
}

extern "C" size_t gemm_ring_ws_floats(int M, int N, int K) {
    const int s = gemm_ring_splits(N, K);
    return s > 1 ? (size_t)s * (size_t)M * (size_t)N : 0;
}

extern "C" int gemm_ring_counters(int N) { return N < 1 ? 0 : (N + GR_BN - 1) / GR_BN; }

/* splits <= ceil(T / cols) <= T / cols + 1 and N <= 128 cols, so splits x
 * N <= 128 T + 128 cols <= 128 T + N + 127 (T: GR_TARGET_BLOCKS) */
extern "C" size_t gemm_ring_ws_bound(int M, int N) {
    return M < 1 || N < 1 ? 0 : (size_t)M * ((size_t)GR_BN * GR_TARGET_BLOCKS + (size_t)N + GR_BN);
}

/* The parameters but the workspace. */
static asa_err check_shape(const gemm_ring_params *p) {
    if (!p || p->M < 1 || p->M > GEMM_RING_MAX_M || p->N < 1 || p->K < GR_KC || p->K % GR_KC)
        return ASA_EINVAL;
    if (!p->w || !p->y || !p->xhi)
        return ASA_EINVAL;
    if (p->ldx < p->K || p->ldx % 8 || p->ldw < p->K || p->ldw % 8 || p->ldy < p->N)
        return ASA_EINVAL;
    if (!kc_aligned(p->w, 16) || !kc_aligned(p->y, 4) || !kc_aligned(p->xhi, 16) ||
        (p->xlo && !kc_aligned(p->xlo, 16)))
        return ASA_EINVAL;
    if ((int64_t)p->N * p->ldw > ((int64_t)1 << 40))
        return ASA_EINVAL;
    return ASA_OK;
}

extern "C" asa_err gemm_ring_check(const gemm_ring_params *p) {
    const asa_err e = check_shape(p);
    if (e)
        return e;
    if (gemm_ring_splits(p->N, p->K) > 1 &&
        (!p->ws || !p->counters || !kc_aligned(p->ws, 4) || !kc_aligned(p->counters, 4)))
        return ASA_EINVAL;
    return ASA_OK;
}

extern "C" asa_err gemm_ring_cuda(const gemm_ring_params *p, cudaStream_t stream) {
    asa_err e = gemm_ring_check(p);
    if (e)
        return e;
    KC_CUDA_TRY(
        (p->xlo ? launch_nt<true, false>(*p, 0, stream) : launch_nt<false, false>(*p, 0, stream)));
    return ASA_OK;
}

extern "C" asa_err gemm_ring_cuda_cluster(const gemm_ring_params *p, int cluster,
                                          cudaStream_t stream) {
    if (!p || cluster < 2 || cluster > 16 || p->K / GR_KC < 2)
        return ASA_EINVAL;
    const asa_err e = check_shape(p); /* no workspace */
    if (e)
        return e;
#ifdef __CUDACC__
    KC_CUDA_TRY((p->xlo ? launch_nt<true, true>(*p, cluster, stream)
                        : launch_nt<false, true>(*p, cluster, stream)));
    return ASA_OK;
#else
    (void)stream;
    return ASA_EUNSUPPORTED; /* the CPU emulation has no clusters */
#endif
}

extern "C" asa_err gemm_ring_cuda_wg(const gemm_ring_params *p, int cluster, cudaStream_t stream) {
    if (!p || cluster < 1 || cluster > 16)
        return ASA_EINVAL;
    const asa_err e = check_shape(p); /* no workspace */
    if (e)
        return e;
#if defined(__CUDACC__) && !defined(ASA_CUDA_EMU)
    KC_CUDA_TRY((p->xlo ? launch_nt<true, true, true>(*p, cluster, stream)
                        : launch_nt<false, true, true>(*p, cluster, stream)));
    return ASA_OK;
#else
    (void)stream;
    return ASA_EUNSUPPORTED; /* the CPU emulation has no clusters or warpgroup
                                MMAs */
#endif
}

extern "C" void gemm_ring_ref(const gemm_ring_params *p) {
    for (int m = 0; m < p->M; m++)
        for (int n = 0; n < p->N; n++) {
            double s = 0;
            for (int k = 0; k < p->K; k++) {
                const int64_t i = (int64_t)m * p->ldx + k;
                const double w = asa_bf16_to_f32(p->w[(int64_t)n * p->ldw + k]);
                s += asa_bf16_to_f32(p->xhi[i]) * w;
                if (p->xlo) /* 0 * inf: NaN, as in the kernel */
                    s += asa_bf16_to_f32(p->xlo[i]) * w;
            }
            float *y = p->y + (int64_t)m * p->ldy + n;
            *y = p->acc ? *y + (float)s : (float)s;
        }
}
