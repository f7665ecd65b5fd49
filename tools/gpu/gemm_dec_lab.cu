/* tools/gpu/gemm_dec_lab.cu - a decode product for 16-64 rows that reads W
 * once from memory, against cublasGemmEx on the same shapes (a lab for the
 * engine's batch 16-64 products; not used by the engine yet).
 *
 * y[M][N] (f32) = x[M][K] (bf16 hi, optionally + lo) . W[N][K]^T (bf16).
 * Block: 8 warps, BN = 128 rows of W (warp w: rows 16 w .. 16 w + 15), all
 * M rows of x, a K slice of KS (grid: N / BN x S splits; the splits add
 * into y with atomicAdd, so y starts at zero and the sum order varies: a
 * lab, not the engine's contract).  The slice of x (M x KS bf16, hi and
 * lo) is staged once into shared memory with cp.async (rows padded by 64
 * bytes: the 16-byte reads below are conflict-free).  W goes straight from
 * memory into mma.sync A fragments (gemm_small's k permutation: lane (gq,
 * tq) loads the 16 bytes at 8 tq of a 32-wide chunk for rows gq and gq + 8,
 * logical column 2 tq + j of step s is element 8 tq + 4 s + j), U chunks a
 * trip, two trips in flight, the first before the x staging; the B
 * fragments of an 8-row tile of x are then one 16-byte shared load a lane
 * (elements 8 tq .. 8 tq + 7 of row gq).
 *
 *   nvcc -O2 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Ikernels/cuda \
 *        -Icommon tools/gpu/gemm_dec_lab.cu BUILD/kernels/cuda/libasa_kernels_cuda.a \
 *        BUILD/common/libasa_common.a -lcublas -o gemm_dec_lab
 *   ./gemm_dec_lab [N K M] (checks every shape, or that one, against a host
 *                          reference, then times it against cublasGemmEx)
 *
 * First version (H200, kernels/cuda/NOTES.md "Twelfth run"): correct (max
 * relative error ~1e-7) but slower than cuBLAS except the hi + lo product
 * at 16 rows (q|kv_a|g 9.4 against 11.4 us); its time grows with M (gate|up
 * 17.7 / 20.0 / 26.1 us at 16 / 32 / 64 rows against cuBLAS's 13.9-15.0).
 * The ring form (kernels/cuda/gemm_ring.cu, timed here too: W and x
 * through a cp.async ring in shared memory) is faster than the first
 * everywhere and than cuBLAS on q|kv_a|g and down up to 32 rows (NOTES,
 * "Thirteenth run").  The library's ordered split-K sum through a global
 * workspace costs 4+ us ("Fourteenth run"); the last columns time
 * gemm_ring_cuda_cluster, the slices summed inside a thread block cluster
 * through distributed shared memory, with 8 and 16 slices (-1 in the
 * error column where a launch failed), and the line below each shape
 * gemm_ring_cuda_wg, that form on warpgroup MMAs, with 1-16 slices.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gemm_ring_cuda.h"
#include "kcuda_int.cuh"
#include "lab.cuh"
#include "mma_sm80.cuh"

constexpr int GD_WARPS = 8, GD_BN = 16 * GD_WARPS, GD_KC = 32, GD_PAD = 32;

__device__ __forceinline__ uint32_t gd_u(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

struct gd_params {
    int M, N, K, KS; /* KS: K per split (multiple of 32) */
    const uint16_t *w, *xhi, *xlo;
    float *y;
};

/* NT: 8-row tiles of x (M <= 8 NT); LO: the lo part too; U: chunks a trip */
template <int NT, bool LO, int U>
__global__ void __launch_bounds__(GD_WARPS * 32) gemm_dec_kernel(const gd_params p) {
    extern __shared__ uint4 gd_sm[];
    uint16_t *xs = (uint16_t *)gd_sm; /* [LO ? 2 : 1][8 NT][KS + GD_PAD] */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    const int n0 = blockIdx.x * GD_BN + 16 * warp, k0 = blockIdx.y * p.KS;
    const int ks = min(p.KS, p.K - k0), nch = ks / GD_KC, ld = p.KS + GD_PAD;
    const uint4 *wr[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int n = min(n0 + gq + 8 * h, p.N - 1);
        wr[h] = (const uint4 *)(p.w + (int64_t)n * p.K + k0) + tq;
    }
    auto load = [&](uint4(&wv)[U][2], int c0) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                wv[u][h] = c0 + u < nch ? kc_ld_stream16(wr[h] + 4 * (c0 + u))
                                        : make_uint4(0, 0, 0, 0);
    };
    uint4 wa[U][2], wb[U][2];
    load(wa, 0);
    load(wb, U);
    /* x slice into shared memory (rows past M: zeros) */
    const int c8 = ks / 8, parts = LO ? 2 : 1;
    for (int i = threadIdx.x; i < parts * 8 * NT * c8; i += GD_WARPS * 32) {
        const int part = i / (8 * NT * c8), r = i / c8 % (8 * NT), c = i % c8;
        const uint16_t *src = (part ? p.xlo : p.xhi) + (int64_t)min(r, p.M - 1) * p.K + k0 + 8 * c;
        mma_cp16(xs + ((size_t)part * 8 * NT + r) * ld + 8 * c, src, r < p.M);
    }
    mma_cp_commit();
    mma_cp_wait<0>();
    __syncthreads();

    float acc[NT][4];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    auto compute = [&](const uint4(&wv)[U][2], int c0) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = c0 + u;
            if (c >= nch)
                break;
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const uint4 bh = *(const uint4 *)(xs + (size_t)(8 * t + gq) * ld + GD_KC * c + 8 * tq);
                uint4 bl = make_uint4(0, 0, 0, 0);
                if (LO)
                    bl = *(const uint4 *)(xs + (size_t)(8 * NT + 8 * t + gq) * ld + GD_KC * c + 8 * tq);
#pragma unroll
                for (int s = 0; s < 2; s++) {
                    const uint32_t a[4] = {gd_u(wv[u][0], 2 * s), gd_u(wv[u][1], 2 * s),
                                           gd_u(wv[u][0], 2 * s + 1), gd_u(wv[u][1], 2 * s + 1)};
                    mma_16816(acc[t], a, gd_u(bh, 2 * s), gd_u(bh, 2 * s + 1));
                    if (LO)
                        mma_16816(acc[t], a, gd_u(bl, 2 * s), gd_u(bl, 2 * s + 1));
                }
            }
        }
    };
    for (int c0 = 0; c0 < nch; c0 += 2 * U) {
        compute(wa, c0);
        if (c0 + 2 * U < nch)
            load(wa, c0 + 2 * U);
        if (c0 + U < nch) {
            compute(wb, c0 + U);
            if (c0 + 3 * U < nch)
                load(wb, c0 + 3 * U);
        }
    }
    /* c0, c1: row gq, tokens 8 t + 2 tq + {0, 1}; c2, c3: row gq + 8 */
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int tok = 8 * t + 2 * tq + (e & 1), n = n0 + gq + 8 * (e >> 1);
            if (tok < p.M && n < p.N)
                atomicAdd(p.y + (int64_t)tok * p.N + n, acc[t][e]);
        }
}

template <int NT, bool LO>
static void launch(const gd_params &p, int splits, cudaStream_t s) {
    constexpr int U = 4;
    const size_t smem = (size_t)(LO ? 2 : 1) * 8 * NT * (p.KS + GD_PAD) * 2;
    static size_t raised = 0;
    CK(kc_smem_optin(gemm_dec_kernel<NT, LO, U>, smem, &raised));
    const dim3 grid((unsigned)((p.N + GD_BN - 1) / GD_BN), (unsigned)splits);
    gemm_dec_kernel<NT, LO, U><<<grid, GD_WARPS * 32, smem, s>>>(p);
}

static void run(const gd_params &p, int splits, bool lo, cudaStream_t s) {
    const int nt = (p.M + 7) / 8;
    if (nt <= 2)
        lo ? launch<2, true>(p, splits, s) : launch<2, false>(p, splits, s);
    else if (nt <= 4)
        lo ? launch<4, true>(p, splits, s) : launch<4, false>(p, splits, s);
    else
        lo ? launch<8, true>(p, splits, s) : launch<8, false>(p, splits, s);
}

static uint16_t f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
static float bf2f(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int main(int argc, char **argv) {
    /* optional: N K M to run one shape (for a profiler) */
    const int fN = argc > 3 ? atoi(argv[1]) : 0, fK = argc > 3 ? atoi(argv[2]) : 0,
              fM = argc > 3 ? atoi(argv[3]) : 0;
    struct shape {
        int N, K;
        bool lo;
        const char *name;
    } shapes[] = {{3296, 2048, true, "q|kv_a|g (hi + lo)"},
                  {2048, 2048, false, "o_proj"},
                  {11264, 2048, false, "gate|up"},
                  {2048, 5632, false, "down"},
                  {32000, 2048, false, "lm_head"}};
    const int Ms[] = {16, 32, 48, 64};
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cublasHandle_t h;
    CB(cublasCreate(&h));
    CB(cublasSetStream(h, st));
    void *ws;
    CK(cudaMalloc(&ws, 32 << 20));
    CB(cublasSetWorkspace(h, ws, 32 << 20));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    printf("%-20s %4s %6s %9s %9s %7s %7s %10s  %s\n", "product", "M", "splits", "ours us",
           "cuBLAS us", "GB/s", "cuB GB/s", "max rel",
           "ring: splits us GB/s max rel (cuBLAS: x2 products for lo)");
    srand(7);
    for (const shape &sh : shapes)
        for (int M : Ms) {
            if (fN && (sh.N != fN || sh.K != fK || M != fM))
                continue;
            const size_t wn = (size_t)sh.N * sh.K, wbytes = wn * 2;
            int copies = (int)std::max<size_t>(2, ((size_t)256 << 20) / wbytes + 1);
            copies = std::min(copies, 16);
            std::vector<uint16_t> hw(wn), hx((size_t)M * sh.K), hl((size_t)M * sh.K);
            for (auto &v : hw)
                v = f2bf((rand() / (float)RAND_MAX - 0.5f) * 0.1f);
            for (size_t i = 0; i < hx.size(); i++) {
                const float x = (rand() / (float)RAND_MAX - 0.5f) * 2.0f;
                hx[i] = f2bf(x);
                hl[i] = f2bf(x - bf2f(hx[i]));
            }
            std::vector<uint16_t *> W(copies);
            for (int i = 0; i < copies; i++) {
                CK(cudaMalloc(&W[i], wbytes));
                CK(cudaMemcpy(W[i], hw.data(), wbytes, cudaMemcpyHostToDevice));
            }
            uint16_t *xh, *xl;
            float *y;
            CK(cudaMalloc(&xh, hx.size() * 2));
            CK(cudaMalloc(&xl, hl.size() * 2));
            CK(cudaMalloc(&y, (size_t)M * sh.N * 4));
            CK(cudaMemcpy(xh, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
            CK(cudaMemcpy(xl, hl.data(), hl.size() * 2, cudaMemcpyHostToDevice));
            /* splits: about two blocks an SM, K slices of whole 32-chunks */
            const int cols = (sh.N + GD_BN - 1) / GD_BN;
            int splits = std::max(1, (2 * prop.multiProcessorCount + cols - 1) / cols);
            const int chunks = sh.K / GD_KC;
            splits = std::min(splits, chunks);
            const int KS = (chunks + splits - 1) / splits * GD_KC;
            splits = (sh.K + KS - 1) / KS;
            gd_params p = {M, sh.N, sh.K, KS, W[0], xh, xl, y};
            /* check (poisoned y would stay NaN: y is zeroed, then added to) */
            CK(cudaMemsetAsync(y, 0, (size_t)M * sh.N * 4, st));
            run(p, splits, sh.lo, st);
            CK(cudaGetLastError());
            /* the worst error of y against the host reference (every 7th n) */
            auto check = [&]() {
                std::vector<float> hy((size_t)M * sh.N);
                CK(cudaMemcpy(hy.data(), y, hy.size() * 4, cudaMemcpyDeviceToHost));
                double worst = 0;
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < sh.N; n += 7) {
                        double r = 0, mag = 0;
                        for (int k = 0; k < sh.K; k++) {
                            const double xv = bf2f(hx[(size_t)m * sh.K + k]) +
                                              (sh.lo ? bf2f(hl[(size_t)m * sh.K + k]) : 0.0);
                            const double t = xv * bf2f(hw[(size_t)n * sh.K + k]);
                            r += t;
                            mag += fabs(t);
                        }
                        const double e = fabs(hy[(size_t)m * sh.N + n] - r) / (mag + 1e-30);
                        if (!(e <= worst))
                            worst = e;
                    }
                return worst;
            };
            const double worst = check();
            /* the ring form: the library's gemm_ring_cuda (its split-K tiles
             * added in order by the last block of each column: y written,
             * no memset) */
            const int rsplits = gemm_ring_splits(sh.N, sh.K);
            float *rws = nullptr;
            int *rcnt;
            if (gemm_ring_ws_floats(M, sh.N, sh.K))
                CK(cudaMalloc(&rws, gemm_ring_ws_floats(M, sh.N, sh.K) * 4));
            CK(cudaMalloc(&rcnt, gemm_ring_counters(sh.N) * sizeof(int)));
            CK(cudaMemset(rcnt, 0, gemm_ring_counters(sh.N) * sizeof(int)));
            gemm_ring_params pr = {};
            pr.M = M, pr.N = sh.N, pr.K = sh.K, pr.xhi = xh, pr.xlo = sh.lo ? xl : nullptr;
            pr.ldx = sh.K, pr.w = W[0], pr.ldw = sh.K, pr.y = y, pr.ldy = sh.N, pr.ws = rws;
            pr.counters = rcnt;
            CK(cudaMemsetAsync(y, 0xff, (size_t)M * sh.N * 4, st)); /* NaN unless written */
            if (gemm_ring_cuda(&pr, st) != ASA_OK)
                exit(1);
            CK(cudaGetLastError());
            const double worst_r = check();
            const int reps = 20;
            const double ours = lab_graph_us(st, reps, [&](cudaStream_t s, int r) {
                gd_params q = p;
                q.w = W[r % copies];
                CK(cudaMemsetAsync(y, 0, (size_t)M * sh.N * 4, s));
                run(q, splits, sh.lo, s);
                return true;
            });
            const double memset_us = lab_graph_us(st, reps, [&](cudaStream_t s, int) {
                return cudaMemsetAsync(y, 0, (size_t)M * sh.N * 4, s) == cudaSuccess;
            });
            const double ring = lab_graph_us(st, reps, [&](cudaStream_t s, int r) {
                gemm_ring_params q = pr;
                q.w = W[r % copies];
                return gemm_ring_cuda(&q, s) == ASA_OK;
            });
            /* a form of the library ring with cl slices (fn: its launcher):
             * checked, then timed into *us and *err (left as they are
             * where the launch fails) */
            auto form = [&](asa_err (*fn)(const gemm_ring_params *, int, cudaStream_t),
                            const char *name, int cl, double *us, double *err) {
                CK(cudaMemsetAsync(y, 0xff, (size_t)M * sh.N * 4, st));
                if (fn(&pr, cl, st) != ASA_OK) {
                    (void)cudaGetLastError();
                    return;
                }
                if (cudaStreamSynchronize(st) != cudaSuccess) {
                    printf("%s %d: %s\n", name, cl, cudaGetErrorString(cudaGetLastError()));
                    return;
                }
                *err = check();
                *us = lab_graph_us(st, reps, [&](cudaStream_t s, int r) {
                    gemm_ring_params q = pr;
                    q.w = W[r % copies];
                    return fn(&q, cl, s) == ASA_OK;
                });
            };
            /* the cluster form (gemm_ring_cuda_cluster: slices summed
             * through distributed shared memory), 8 and 16 slices */
            double clu[2] = {0, 0}, clw[2] = {-1, -1};
            for (int ci = 0; ci < 2; ci++)
                form(gemm_ring_cuda_cluster, "cluster", ci ? 16 : 8, &clu[ci], &clw[ci]);
            /* the warpgroup-MMA form (gemm_ring_cuda_wg), 1-16 slices */
            const int wcl[5] = {1, 2, 4, 8, 16};
            double wgu[5] = {-1, -1, -1, -1, -1}, wgw[5] = {-1, -1, -1, -1, -1};
            for (int ci = 0; ci < 5; ci++)
                form(gemm_ring_cuda_wg, "wg", wcl[ci], &wgu[ci], &wgw[ci]);
            const float one = 1.0f, zero = 0.0f;
            const double cub = lab_graph_us(st, reps, [&](cudaStream_t, int r) {
                bool ok = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, sh.N, M, sh.K, &one,
                                       W[r % copies], CUDA_R_16BF, sh.K, xh, CUDA_R_16BF, sh.K,
                                       &zero, y, CUDA_R_32F, sh.N, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
                if (ok && sh.lo)
                    ok = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, sh.N, M, sh.K, &one,
                                      W[r % copies], CUDA_R_16BF, sh.K, xl, CUDA_R_16BF, sh.K,
                                      &one, y, CUDA_R_32F, sh.N, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
                return ok;
            });
            printf("%-20s %4d %6d %9.2f %9.2f %7.0f %7.0f %10.2e  ring %3d %7.2f %7.0f %9.2e "
                   "(memset %.2f us)  cluster 8 %7.2f %9.2e  16 %7.2f %9.2e\n",
                   sh.name, M, splits, ours, cub, wbytes / ours / 1e3, wbytes / cub / 1e3, worst,
                   rsplits, ring, wbytes / ring / 1e3, worst_r, memset_us, clu[0], clw[0], clu[1],
                   clw[1]);
            printf("  %-18s wg (us, worst rel. error) ", sh.name);
            for (int ci = 0; ci < 5; ci++)
                printf(" %d: %7.2f %9.2e", wcl[ci], wgu[ci], wgw[ci]);
            printf("   cuBLAS %7.2f\n", cub);
            fflush(stdout);
            for (auto *w : W)
                cudaFree(w);
            cudaFree(xh);
            cudaFree(xl);
            cudaFree(y);
            cudaFree(rws);
            cudaFree(rcnt);
        }
    return 0;
}
