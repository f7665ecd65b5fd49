/* tools/gpu/gemv_chain.cu - the batch-1 decode step's 97 weight products
 * as the engine chains them, timed as one CUDA graph: how far the GEMV
 * kernel is from a pure weight stream inside the chain (tools/gpu/
 * stream_chain.cu: 0.606 ms with PDL on the H200), and what small kernels
 * between the products cost there.
 *
 * The products of asa-1.3b at batch 1 (per layer q|kv_a|g 3296 x 2048,
 * o_proj 2048 x 2048, gate|up 11264 x 2048, down 2048 x 5632; lm_head
 * 32000 x 2048), launched through the engine's launcher (gemv_bf16_cuda,
 * programmatic dependent launch on as in the engine), in these forms:
 *   fused      the fused x modes: RMSNorm (+ residual) in the q|kv_a|g,
 *              gate|up and lm_head prologues, SiLU-gate in down's
 *   plain      every product on a given f32 x
 *   norm       the norm prologues, down on a given x
 *   gt=G       fused, every product with G threads a group
 *   +gaps      fused with NG small kernels after each q|kv_a|g product
 *              (stand-ins for RoPE, attention and expand: one block of 128
 *              threads an SM, an L2 read and a write each)
 *   gaps       the stand-ins alone
 *   nopdl      fused, launched without PDL
 * then a lab GEMV (gemv_lab below: M = 1, rows a warp group, warps a
 * group, threads a block, register cap and x staging as template
 * parameters) in pairs of configurations (the normed products' / the
 * plain ones').  Median of 9 replays, ms a step; given the copy ceiling in
 * GB/s (tools/bench/run_bench.sh prints it) also the multiple of the
 * floor.  Results: kernels/cuda/NOTES.md ("Thirteenth run").
 *
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Ikernels/cuda \
 *        -Icommon tools/gpu/gemv_chain.cu BUILD/kernels/cuda/libasa_kernels_cuda.a \
 *        BUILD/common/libasa_common.a -o gemv_chain && ./gemv_chain [GB/s] [NG]
 */
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "gemv_cuda.h"
#include "kcuda_int.cuh"
#include "lab.cuh"
#include "mma_sm80.cuh"

namespace {

constexpr int D = 2048, QN = 3296, F = 5632, V = 32000, L = 24;

struct layer_w {
    const uint16_t *q, *o, *gu, *dn;
};

/* A stand-in for one attention-side kernel: every block reads a few
 * hundred floats of x written by the kernel before and writes them back. */
__global__ void __launch_bounds__(128) gap_kernel(const float *x, float *y) {
    kc_pdl_enter();
    const int i = blockIdx.x * 128 + threadIdx.x;
    y[i] = x[i & (D - 1)] * 1.0001f + (float)blockIdx.x;
}

/* The lab GEMV: y[n] = sum_k x'[k] W[n][k], M = 1, f32 x.  Blocks of NT
 * threads; groups of KS warps own R rows each; lane l of the group's warp
 * ks takes 16-byte chunks ks 32 + l, + 32 KS, ... of each row; U x R loads
 * a trip, the first trip before the PDL wait and L2 prefetches of the
 * rest; MINB: the launch bound's blocks an SM (register cap).  XM: x' = x
 * read from global memory (0), x staged once a block into shared memory
 * (1), or RMSNorm(x + res) . g staged there (2: the engine's fused-norm
 * prologue, its arithmetic; g copied before the wait). */
template <int R, int U, int KS, int NT, int MINB, int XM>
__global__ void __launch_bounds__(NT, MINB)
    gemv_lab(const float *x, const float *res, const float *g, const uint16_t *w, int N, int K,
             float *y) {
    constexpr int NW = NT / 32;
    extern __shared__ float xs[]; /* XM > 0: [K] x' (+ [K] g) */
    __shared__ float part[NW];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int group = warp / KS, ks = warp % KS;
    const int n0 = (blockIdx.x * (NW / KS) + group) * R;
    const int nch = K >> 3, c_first = ks * 32 + lane, step = 32 * KS;
    const uint4 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++)
        wr[r] = (const uint4 *)(w + (int64_t)min(n0 + r, N - 1) * K);
    uint4 wv[U][R];
    auto trip = [&](int c0) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++)
                wv[u][r] = c0 + step * u < nch ? kc_ld_stream16(wr[r] + c0 + step * u)
                                               : make_uint4(0, 0, 0, 0);
    };
    const int K4 = K >> 2;
    if (XM == 2) {
        for (int i = threadIdx.x; i < K4; i += NT)
            mma_cp16(xs + K + 4 * i, g + 4 * i, true);
        mma_cp_commit();
    }
    trip(c_first);
    for (int c = c_first + step * U; c < nch; c += step)
#pragma unroll
        for (int r = 0; r < R; r++)
            kc_prefetch_l2(wr[r] + c);
    kc_pdl_enter();
    const float *xv_base = x;
    if (XM == 1) {
        for (int i = threadIdx.x; i < K4; i += NT)
            ((float4 *)xs)[i] = ((const float4 *)x)[i];
        __syncthreads();
        xv_base = xs;
    } else if (XM == 2) {
        float ss = 0.0f;
        for (int i = threadIdx.x; i < K4; i += NT) {
            float4 v = ((const float4 *)x)[i];
            if (res) {
                const float4 q = ((const float4 *)res)[i];
                v.x += q.x, v.y += q.y, v.z += q.z, v.w += q.w;
            }
            ((float4 *)xs)[i] = v;
            ss = fmaf(v.x, v.x, ss);
            ss = fmaf(v.y, v.y, ss);
            ss = fmaf(v.z, v.z, ss);
            ss = fmaf(v.w, v.w, ss);
        }
        const float tot = kc_block_sum<NW>(ss, part);
        const float inv = rsqrtf(tot / (float)K + 1e-5f);
        mma_cp_wait<0>();
        for (int i = threadIdx.x; i < K4; i += NT) {
            const float4 v = ((float4 *)xs)[i], q = ((const float4 *)(xs + K))[i];
            ((float4 *)xs)[i] = make_float4(v.x * inv * q.x, v.y * inv * q.y, v.z * inv * q.z,
                                            v.w * inv * q.w);
        }
        __syncthreads();
        xv_base = xs;
    }
    float acc[R] = {};
    for (int c0 = c_first; c0 < nch; c0 += step * U) {
        if (c0 != c_first)
            trip(c0);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = c0 + step * u;
            if (c >= nch)
                break;
            const float4 a = *(const float4 *)(xv_base + 8 * c),
                         b = *(const float4 *)(xv_base + 8 * c + 4);
            const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
            for (int r = 0; r < R; r++) {
                const uint32_t q[4] = {wv[u][r].x, wv[u][r].y, wv[u][r].z, wv[u][r].w};
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    acc[r] = fmaf(__uint_as_float(q[j] << 16), xv[2 * j], acc[r]);
                    acc[r] = fmaf(__uint_as_float(q[j] & 0xffff0000u), xv[2 * j + 1], acc[r]);
                }
            }
        }
    }
    __shared__ float red[NW][R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float v = kc_warp_sum(acc[r]);
        if (KS == 1) {
            if (lane == r && n0 + r < N)
                y[n0 + r] = v;
        } else if (lane == r) {
            red[warp][r] = v;
        }
    }
    if (KS == 1)
        return;
    __syncthreads();
    if (ks == 0 && lane < R && n0 + lane < N) {
        float t = 0.0f;
        for (int k = 0; k < KS; k++)
            t += red[warp + k][lane];
        y[n0 + lane] = t;
    }
}

using lab_fn = void (*)(const float *, const float *, const float *, const uint16_t *, int, int,
                        float *);
struct lab_cfg {
    const char *name;
    lab_fn k;
    int rows_per_block, threads, xm;
};
#define LAB(R, U, KS, NT, MINB, XM)                                                            \
    lab_cfg {                                                                                  \
        "R" #R " U" #U " KS" #KS " T" #NT " B" #MINB " X" #XM,                                 \
            gemv_lab<R, U, KS, NT, MINB, XM>, (NT / 32 / KS) * R, NT, XM                       \
    }
/* pairs: (the norm products' kernel, the plain products' kernel) */
const lab_cfg lab_cfgs[][2] = {
    {LAB(2, 4, 1, 256, 1, 0), LAB(2, 4, 1, 256, 1, 0)},
    {LAB(2, 4, 2, 256, 4, 0), LAB(2, 4, 2, 256, 4, 0)},
    {LAB(1, 2, 4, 256, 8, 0), LAB(1, 2, 4, 256, 8, 0)},
    {LAB(2, 4, 2, 512, 2, 0), LAB(2, 4, 2, 512, 2, 0)},
    {LAB(2, 4, 2, 1024, 1, 0), LAB(2, 4, 2, 1024, 1, 0)},
    {LAB(2, 4, 2, 256, 4, 1), LAB(2, 4, 2, 256, 4, 1)},
    {LAB(2, 4, 2, 256, 4, 2), LAB(2, 4, 2, 256, 4, 0)},
    {LAB(2, 4, 2, 512, 2, 2), LAB(2, 4, 2, 256, 4, 0)},
    {LAB(2, 4, 2, 1024, 1, 2), LAB(2, 4, 2, 256, 4, 0)},
    {LAB(1, 2, 4, 512, 4, 2), LAB(1, 2, 4, 256, 8, 0)},
    {LAB(1, 2, 4, 1024, 2, 2), LAB(1, 2, 4, 256, 8, 0)},
};
constexpr int NLAB = sizeof lab_cfgs / sizeof lab_cfgs[0];

void lab_launch(const lab_cfg &c, const float *x, const float *res, const float *g,
                const uint16_t *w, int N, int K, float *y, cudaStream_t s) {
    const int grid = (N + c.rows_per_block - 1) / c.rows_per_block;
    /* x' (and g) staged: at most 22 KiB (down's K = 5632 copied; the norm
     * only at K = 2048), inside the default limit */
    const size_t smem = c.xm == 0 ? 0 : (size_t)(c.xm == 2 ? 2 : 1) * K * 4;
    CK(kc_launch_pdl(true, c.k, grid, c.threads, smem, s, x, res, g, w, N, K, y));
}

} // namespace

int main(int argc, char **argv) {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const double gbs = argc > 1 ? atof(argv[1]) : 0.0;
    const int NG = argc > 2 ? atoi(argv[2]) : 4;

    const size_t per_layer = (size_t)QN * D + (size_t)D * D + (size_t)2 * F * D + (size_t)D * F;
    const size_t welems = per_layer * L + (size_t)V * D;
    uint16_t *wall;
    CK(cudaMalloc(&wall, welems * 2));
    CK(cudaMemset(wall, 0x3c, welems * 2)); /* bf16 0x3c3c ~ 0.0115 */
    std::vector<layer_w> lw(L);
    uint16_t *p = wall;
    for (int l = 0; l < L; l++) {
        lw[l].q = p, p += (size_t)QN * D;
        lw[l].o = p, p += (size_t)D * D;
        lw[l].gu = p, p += (size_t)2 * F * D;
        lw[l].dn = p, p += (size_t)D * F;
    }
    const uint16_t *lm = p;
    float *act, *nw;
    const size_t nact = 8 * (size_t)2 * F + 4 * (size_t)V;
    CK(cudaMalloc(&act, nact * 4));
    CK(cudaMemset(act, 0, nact * 4));
    CK(cudaMalloc(&nw, D * 4));
    CK(cudaMemset(nw, 0, D * 4));
    float *h = act, *res0 = h + D, *res1 = res0 + D, *qo = res1 + D, *o = qo + QN,
          *gu = o + D, *t = gu + 2 * F, *logits = t + D, *gap = logits + V;
    {
        std::vector<float> one(3 * D, 0.5f);
        CK(cudaMemcpy(h, one.data(), 3 * D * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(nw, one.data(), D * 4, cudaMemcpyHostToDevice));
    }
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const int sms = prop.multiProcessorCount;

    auto gemv = [&](int mode, const float *x, int64_t ldx, const uint16_t *w, int N, int K,
                    float *y, const float *res, float *rout, int gt) {
        gemv_params gp = {};
        gp.M = 1, gp.N = N, gp.K = K, gp.x = x, gp.x_type = KC_F32, gp.ldx = ldx, gp.w = w;
        gp.ldw = K, gp.y_f32 = y, gp.ldy = N, gp.x_mode = (gemv_xmode)mode;
        if (mode == GEMV_X_NORM)
            gp.res = res, gp.res_out = res ? rout : nullptr, gp.norm_w = nw, gp.eps = 1e-5f;
        if (gemv_bf16_cuda_gt(&gp, gt, s) != ASA_OK) {
            fprintf(stderr, "gemv launch failed (N %d K %d mode %d gt %d)\n", N, K, mode, gt);
            exit(1);
        }
    };
    auto gaps = [&](int n) {
        for (int g = 0; g < n; g++)
            CK(kc_launch_pdl(kc_pdl_on != 0, gap_kernel, sms, 128, 0, s, (const float *)qo, gap));
    };
    /* one step: fused or plain modes, ng stand-ins after q|kv_a|g */
    auto step = [&](bool fused, int ng, int gt, bool prods, bool silu = true) {
        for (int l = 0; l < L; l++) {
            float *rin = l & 1 ? res1 : res0, *rout = l & 1 ? res0 : res1;
            if (prods)
                fused ? gemv(GEMV_X_NORM, t, D, lw[l].q, QN, D, qo, rin, rout, gt)
                      : gemv(GEMV_X_PLAIN, h, D, lw[l].q, QN, D, qo, nullptr, nullptr, gt);
            gaps(ng);
            if (!prods)
                continue;
            gemv(GEMV_X_PLAIN, o, D, lw[l].o, D, D, t, nullptr, nullptr, gt);
            fused ? gemv(GEMV_X_NORM, t, D, lw[l].gu, 2 * F, D, gu, rout, rin, gt)
                  : gemv(GEMV_X_PLAIN, h, D, lw[l].gu, 2 * F, D, gu, nullptr, nullptr, gt);
            fused && silu ? gemv(GEMV_X_SILU, gu, 2 * F, lw[l].dn, D, F, t, nullptr, nullptr, gt)
                  : gemv(GEMV_X_PLAIN, gu, F, lw[l].dn, D, F, t, nullptr, nullptr, gt);
        }
        if (prods)
            gemv(fused ? GEMV_X_NORM : GEMV_X_PLAIN, t, D, lm, V, D, logits, nullptr, nullptr,
                 gt);
    };
    /* the lab GEMV's step: cn for the normed products (q|kv_a|g, gate|up,
     * lm_head), cp for o_proj and down (plain f32 x, no SiLU) */
    auto lab_step = [&](const lab_cfg &cn, const lab_cfg &cp) {
        for (int l = 0; l < L; l++) {
            float *rin = l & 1 ? res1 : res0;
            lab_launch(cn, t, rin, nw, lw[l].q, QN, D, qo, s);
            lab_launch(cp, o, nullptr, nullptr, lw[l].o, D, D, t, s);
            lab_launch(cn, t, rin, nw, lw[l].gu, 2 * F, D, gu, s);
            lab_launch(cp, gu, nullptr, nullptr, lw[l].dn, D, F, t, s);
        }
        lab_launch(cn, t, nullptr, nw, lm, V, D, logits, s);
    };

    struct row {
        const char *name;
        double ms;
    };
    std::vector<row> rows;
    kc_set_pdl(1);
    rows.push_back({"fused", lab_graph_ms(s, [&] { step(true, 0, 0, true); })});
    rows.push_back({"plain", lab_graph_ms(s, [&] { step(false, 0, 0, true); })});
    rows.push_back(
        {"norm (down plain)", lab_graph_ms(s, [&] { step(true, 0, 0, true, false); })});
    static char nm[8][32];
    const int gts[4] = {32, 64, 128, 256};
    for (int i = 0; i < 4; i++) {
        snprintf(nm[i], sizeof nm[i], "gt=%d", gts[i]);
        rows.push_back({nm[i], lab_graph_ms(s, [&] { step(true, 0, gts[i], true); })});
    }
    snprintf(nm[4], sizeof nm[4], "fused+%d gaps", NG);
    rows.push_back({nm[4], lab_graph_ms(s, [&] { step(true, NG, 0, true); })});
    snprintf(nm[5], sizeof nm[5], "%d gaps alone", NG);
    rows.push_back({nm[5], lab_graph_ms(s, [&] { step(true, NG, 0, false); })});
    static char rn[NLAB][128];
    for (int i = 0; i < NLAB; i++) {
        cudaFuncAttributes fa, fb;
        CK(cudaFuncGetAttributes(&fa, (const void *)lab_cfgs[i][0].k));
        CK(cudaFuncGetAttributes(&fb, (const void *)lab_cfgs[i][1].k));
        snprintf(rn[i], sizeof rn[i], "%s/%s (%d/%d reg)", lab_cfgs[i][0].name,
                 lab_cfgs[i][1].name, fa.numRegs, fb.numRegs);
        rows.push_back(
            {rn[i], lab_graph_ms(s, [&] { lab_step(lab_cfgs[i][0], lab_cfgs[i][1]); })});
    }
    kc_set_pdl(0);
    rows.push_back({"fused nopdl", lab_graph_ms(s, [&] { step(true, 0, 0, true); })});
    CK(cudaGetLastError());

    const double bytes = (double)welems * 2;
    const double floor_ms = gbs > 0 ? bytes / gbs / 1e6 : 0;
    printf("device: %s, %d SMs; %.1f MB of weights a step", prop.name, sms, bytes / 1e6);
    if (floor_ms > 0)
        printf("; floor at %.0f GB/s %.3f ms", gbs, floor_ms);
    printf("\n%-60s %8s %8s %8s\n", "form", "ms", "x floor", "GB/s");
    for (const row &r : rows)
        printf("%-60s %8.3f %8.2f %8.0f\n", r.name, r.ms, floor_ms > 0 ? r.ms / floor_ms : 0.0,
               bytes / r.ms / 1e6);
    return 0;
}
