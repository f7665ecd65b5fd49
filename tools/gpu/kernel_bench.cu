/*
 * tools/gpu/kernel_bench.cu - asa-kernel-bench: the ceilings of the card and
 * the decode kernels against cuBLAS, measured in one run on one card.
 *
 *   1. read bandwidth: a read-only stream (16-byte loads) over 4 GiB, and a
 *      device-to-device copy of 2 GiB (bytes read + written counted);
 *   2. cuBLAS bf16 GEMM 8192^3 (f32 accumulate);
 *   3. y[M, N] = x[M, K] . W[N, K]^T for the asa-1.3b decode shapes at
 *      M = 1, 8, 32, 64: gemv_bf16_cuda (M > 16 runs as ceil(M/16) launches,
 *      each reading W again) against cublasGemmEx, bf16 in and out; at
 *      M = 1 also every group size of the GEMV, x bf16 and f32;
 *   4. rmsnorm, silu_mul and topn at decode sizes.
 * Timing: each measurement is a CUDA graph of G launches (G >= 20) cycling
 * over enough copies of the weights that they cannot stay in L2 (>= 3x L2),
 * replayed 25 times after warm-up; the median replay divided by G is one
 * launch, launch gaps inside the graph included (as in a decode graph).
 * All data is random (never zeros).  Output: a table on stdout; with
 * --csv FILE, also the rows as CSV.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "gemm_small_cuda.h"
#include "gemv_cuda.h"
#include "rmsnorm_cuda.h"
#include "silu_mul_cuda.h"
#include "topn_cuda.h"

#define CK(call)                                                                      \
    do {                                                                              \
        cudaError_t e_ = (call);                                                      \
        if (e_ != cudaSuccess)                                                        \
            throw std::runtime_error(std::string(#call) + ": " + cudaGetErrorString(e_)); \
    } while (0)
#define CKB(call)                                                                     \
    do {                                                                              \
        cublasStatus_t s_ = (call);                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                              \
            throw std::runtime_error(std::string(#call) + ": cublas status " +        \
                                     std::to_string((int)s_));                        \
    } while (0)
#define CKA(call)                                                                     \
    do {                                                                              \
        asa_err a_ = (call);                                                          \
        if (a_ != ASA_OK)                                                             \
            throw std::runtime_error(std::string(#call) + ": " + asa_strerror(a_));   \
    } while (0)

namespace {

FILE *g_csv = nullptr;
std::vector<std::string> g_summary;

void row(const char *what, const char *shape, double us, double gbs, double extra,
         const char *extra_name) {
    char line[256];
    snprintf(line, sizeof line, "%-28s %-22s %10.2f us %9.1f GB/s  %s %.1f", what, shape, us,
             gbs, extra_name, extra);
    printf("%s\n", line);
    g_summary.push_back(line);
    if (g_csv)
        fprintf(g_csv, "%s,%s,%.3f,%.1f,%s,%.2f\n", what, shape, us, gbs, extra_name, extra);
}

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* Random words: bf16 pairs in [-scale, scale) (also fine as f32 payload). */
__global__ void fill_bf16(uint16_t *p, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float u = (hash32(seed * 0x9e3779b97f4a7c15ull + i) >> 8) * (1.0f / 16777216.0f);
        const uint32_t b = __float_as_uint((2.0f * u - 1.0f) * scale);
        p[i] = (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
    }
}
__global__ void fill_f32(float *p, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float u = (hash32(seed * 0x9e3779b97f4a7c15ull + i) >> 8) * (1.0f / 16777216.0f);
        p[i] = (2.0f * u - 1.0f) * scale;
    }
}

__device__ __forceinline__ uint4 ld_nc(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* Read-only stream: each thread keeps 4 independent 16-byte loads in flight. */
__global__ void __launch_bounds__(256) read_stream(const uint4 *p, size_t n16, uint32_t *sink) {
    uint32_t acc = 0;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        const uint4 a = ld_nc(p + i), b = ld_nc(p + i + stride);
        const uint4 c = ld_nc(p + i + 2 * stride), d = ld_nc(p + i + 3 * stride);
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w;
        acc ^= c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < n16; i += stride) {
        const uint4 a = ld_nc(p + i);
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    if (acc == 0x9e3779b9u) /* keeps the loads alive; practically never true */
        sink[0] = acc;
}

void fill(uint16_t *p, size_t n, uint64_t seed, float scale = 0.05f) {
    fill_bf16<<<1024, 256>>>(p, n, seed, scale);
    CK(cudaGetLastError());
}
void fillf(float *p, size_t n, uint64_t seed, float scale = 1.0f) {
    fill_f32<<<1024, 256>>>(p, n, seed, scale);
    CK(cudaGetLastError());
}

double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/* Median time of one launch, in microseconds: a graph of `launches` calls
 * of enqueue(i, stream), replayed `replays` times. */
template <class F>
double time_graph(cudaStream_t s, int launches, F enqueue, int replays = 25) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < launches; i++)
        enqueue(i, s);
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int w = 0; w < 3; w++)
        CK(cudaGraphLaunch(ge, s));
    std::vector<float> ms;
    for (int r = 0; r < replays; r++) {
        CK(cudaEventRecord(a, s));
        CK(cudaGraphLaunch(ge, s));
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float t;
        CK(cudaEventElapsedTime(&t, a, b));
        ms.push_back(t);
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    return median(ms) * 1000.0 / launches;
}

/* Median of plain event-timed runs (for the big ones), microseconds. */
template <class F>
double time_plain(cudaStream_t s, F run, int reps = 10) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int w = 0; w < 2; w++)
        run(s);
    std::vector<float> ms;
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(a, s));
        run(s);
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float t;
        CK(cudaEventElapsedTime(&t, a, b));
        ms.push_back(t);
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return median(ms) * 1000.0;
}

struct shape {
    const char *name;
    int N, K;
};

int run(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--csv"))
            g_csv = fopen(argv[i + 1], "w");
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, L2 %d MiB, %.1f GiB\n", prop.name, prop.multiProcessorCount,
           prop.l2CacheSize >> 20, prop.totalGlobalMem / 1073741824.0);
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cublasHandle_t h;
    CKB(cublasCreate(&h));
    CKB(cublasSetStream(h, s));
    void *cublas_ws;
    CK(cudaMalloc(&cublas_ws, 64u << 20));
    CKB(cublasSetWorkspace(h, cublas_ws, 64u << 20));

    /* ---- 1. read bandwidth ceiling -------------------------------------- */
    double read_gbs;
    {
        const size_t bytes = (size_t)4 << 30;
        uint16_t *buf;
        uint32_t *sink;
        CK(cudaMalloc(&buf, bytes));
        CK(cudaMalloc(&sink, 4));
        fill(buf, bytes / 2, 1);
        const int grid = prop.multiProcessorCount * 8;
        double us = time_plain(s, [&](cudaStream_t st) {
            read_stream<<<grid, 256, 0, st>>>((const uint4 *)buf, bytes / 16, sink);
        });
        CK(cudaGetLastError());
        read_gbs = bytes / us / 1e3;
        row("read stream 16B loads", "4 GiB", us, read_gbs, 100.0, "% ceiling");
        const size_t half = bytes / 2;
        us = time_plain(s, [&](cudaStream_t st) {
            CK(cudaMemcpyAsync((char *)buf + half, buf, half, cudaMemcpyDeviceToDevice, st));
        });
        row("d2d copy (read+write)", "2 GiB", us, 2.0 * half / us / 1e3,
            100.0 * 2.0 * half / us / 1e3 / read_gbs, "% of read");
        CK(cudaFree(buf));
        CK(cudaFree(sink));
    }

    /* ---- 2. cuBLAS bf16 GEMM 8192^3 --------------------------------------- */
    {
        const int n = 8192;
        uint16_t *A, *B, *C;
        CK(cudaMalloc(&A, (size_t)n * n * 2));
        CK(cudaMalloc(&B, (size_t)n * n * 2));
        CK(cudaMalloc(&C, (size_t)n * n * 2));
        fill(A, (size_t)n * n, 2, 1.0f);
        fill(B, (size_t)n * n, 3, 1.0f);
        const float alpha = 1, beta = 0;
        double us = time_plain(s, [&](cudaStream_t) {
            CKB(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, A, CUDA_R_16BF, n, B,
                             CUDA_R_16BF, n, &beta, C, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
        });
        row("cuBLAS bf16 GEMM", "8192^3", us, 3.0 * n * n * 2 / us / 1e3,
            2.0 * n * n * (double)n / us / 1e6, "TFLOP/s");
        CK(cudaFree(A));
        CK(cudaFree(B));
        CK(cudaFree(C));
    }

    /* ---- 3. decode projections: gemv vs cuBLAS ------------------------------ */
    const shape shapes[] = {
        {"attn o/q-like 2048x2048", 2048, 2048},
        {"q+kv_a+g 6144x2048", 6144, 2048},
        {"gate+up 11264x2048", 11264, 2048},
        {"down 2048x5632", 2048, 5632},
        {"lm_head 32000x2048", 32000, 2048},
    };
    const int Ms[] = {1, 8, 16, 32, 64};
    const size_t l2 = (size_t)prop.l2CacheSize;
    for (const shape &sh : shapes) {
        const size_t wbytes = (size_t)sh.N * sh.K * 2;
        const int copies = (int)std::max<size_t>(2, (3 * l2 + wbytes - 1) / wbytes);
        std::vector<uint16_t *> W(copies);
        for (int c = 0; c < copies; c++) {
            CK(cudaMalloc(&W[c], wbytes));
            fill(W[c], wbytes / 2, 100 + c);
        }
        const int launches = std::max(copies, 20);
        uint16_t *x, *y, *ycb;
        float *xf32;
        CK(cudaMalloc(&xf32, (size_t)sh.K * 4));
        fillf(xf32, sh.K, 8);
        CK(cudaMalloc(&x, (size_t)64 * sh.K * 2));
        CK(cudaMalloc(&y, (size_t)64 * sh.N * 2));
        CK(cudaMalloc(&ycb, (size_t)64 * sh.N * 2));
        float *yf;
        CK(cudaMalloc(&yf, (size_t)128 * sh.N * 4));
        fill(x, (size_t)64 * sh.K, 7, 1.0f);
        for (int M : Ms) {
            char shp[64];
            snprintf(shp, sizeof shp, "N=%d K=%d M=%d", sh.N, sh.K, M);
            const float alpha = 1, beta = 0;
            auto cub = [&](int i, cudaStream_t) {
                CKB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, sh.N, M, sh.K, &alpha,
                                 W[i % copies], CUDA_R_16BF, sh.K, x, CUDA_R_16BF, sh.K, &beta,
                                 ycb, CUDA_R_16BF, sh.N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            };
            auto ours = [&](int i, cudaStream_t st) {
                for (int m0 = 0; m0 < M; m0 += GEMV_MAX_M) {
                    gemv_params p = {};
                    p.M = std::min(GEMV_MAX_M, M - m0);
                    p.N = sh.N;
                    p.K = sh.K;
                    p.x = x + (size_t)m0 * sh.K;
                    p.x_type = KC_BF16;
                    p.ldx = sh.K;
                    p.w = W[i % copies];
                    p.ldw = sh.K;
                    p.y_bf16 = y + (size_t)m0 * sh.N;
                    p.ldy = sh.N;
                    CKA(gemv_bf16_cuda(&p, st));
                }
            };
            const double t_cub = time_graph(s, launches, cub);
            const double t_our = time_graph(s, launches, ours);
            /* agreement of the two results (same inputs, last copy) */
            cub(0, s);
            ours(0, s);
            CK(cudaStreamSynchronize(s));
            std::vector<uint16_t> a((size_t)M * sh.N), b((size_t)M * sh.N);
            CK(cudaMemcpy(a.data(), y, a.size() * 2, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(b.data(), ycb, b.size() * 2, cudaMemcpyDeviceToHost));
            double num = 0, den = 0;
            for (size_t i = 0; i < a.size(); i++) {
                float fa, fb;
                uint32_t ua = (uint32_t)a[i] << 16, ub = (uint32_t)b[i] << 16;
                memcpy(&fa, &ua, 4);
                memcpy(&fb, &ub, 4);
                num += (double)(fa - fb) * (fa - fb);
                den += (double)fb * fb;
            }
            const double rel = den > 0 ? sqrt(num / den) : 0;
            char what[64];
            snprintf(what, sizeof what, "cuBLAS %s", sh.name);
            row(what, shp, t_cub, wbytes / t_cub / 1e3, 100.0 * wbytes / t_cub / 1e3 / read_gbs,
                "% ceiling");
            snprintf(what, sizeof what, "gemv%s %s", M > GEMV_MAX_M ? "(x" : "", sh.name);
            if (M > GEMV_MAX_M)
                snprintf(what, sizeof what, "gemv x%d %s", (M + GEMV_MAX_M - 1) / GEMV_MAX_M,
                         sh.name);
            row(what, shp, t_our, wbytes / t_our / 1e3, 100.0 * wbytes / t_our / 1e3 / read_gbs,
                "% ceiling");
            printf("    gemv vs cuBLAS: %.2fx faster, rel L2 diff %.2e\n", t_cub / t_our, rel);
            if (M > 1 && M <= GEMM_SMALL_MAX_M) {
                /* gemm_small on bf16 parts: hi alone, hi + lo (the engine's
                 * pair; cuBLAS needs a product of 2M rows and an add) */
                for (int lo = 0; lo < 2; lo++) {
                    auto gs = [&](int i, cudaStream_t st) {
                        gemm_small_params p = {};
                        p.M = M;
                        p.N = sh.N;
                        p.K = sh.K;
                        p.xhi = x;
                        p.xlo = lo ? x : nullptr;
                        p.ldx = sh.K;
                        p.w = W[i % copies];
                        p.ldw = sh.K;
                        p.y = yf;
                        p.ldy = sh.N;
                        CKA(gemm_small_cuda(&p, st));
                    };
                    const double t = time_graph(s, launches, gs);
                    snprintf(what, sizeof what, "gemm_small %s %s", lo ? "hi+lo" : "hi", sh.name);
                    row(what, shp, t, wbytes / t / 1e3, 100.0 * wbytes / t / 1e3 / read_gbs,
                        "% ceiling");
                }
                if (2 * M <= 64) {
                    auto cub2 = [&](int i, cudaStream_t) {
                        CKB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, sh.N, 2 * M, sh.K, &alpha,
                                         W[i % copies], CUDA_R_16BF, sh.K, x, CUDA_R_16BF, sh.K,
                                         &beta, yf, CUDA_R_32F, sh.N, CUBLAS_COMPUTE_32F,
                                         CUBLAS_GEMM_DEFAULT));
                    };
                    const double t = time_graph(s, launches, cub2);
                    snprintf(what, sizeof what, "cuBLAS 2M rows f32 out %s", sh.name);
                    row(what, shp, t, wbytes / t / 1e3, 100.0 * wbytes / t / 1e3 / read_gbs,
                        "% ceiling");
                }
            }
            if (M == 1) {
                /* group-size sweep (the automatic choice is one of these) */
                for (int gt : {32, 64, 128, 256}) {
                    for (int xf = 0; xf < 2; xf++) {
                        auto v = [&](int i, cudaStream_t st) {
                            gemv_params p = {};
                            p.M = 1;
                            p.N = sh.N;
                            p.K = sh.K;
                            p.x = xf ? (const void *)xf32 : (const void *)x;
                            p.x_type = xf ? KC_F32 : KC_BF16;
                            p.ldx = sh.K;
                            p.w = W[i % copies];
                            p.ldw = sh.K;
                            p.y_bf16 = y;
                            p.ldy = sh.N;
                            CKA(gemv_bf16_cuda_gt(&p, gt, st));
                        };
                        const double t = time_graph(s, launches, v);
                        snprintf(what, sizeof what, "  gemv gt=%d x=%s", gt, xf ? "f32" : "bf16");
                        row(what, shp, t, wbytes / t / 1e3, 100.0 * wbytes / t / 1e3 / read_gbs,
                            "% ceiling");
                    }
                }
            }
        }
        for (int c = 0; c < copies; c++)
            CK(cudaFree(W[c]));
        CK(cudaFree(x));
        CK(cudaFree(xf32));
        CK(cudaFree(y));
        CK(cudaFree(ycb));
        CK(cudaFree(yf));
    }

    /* ---- 4. small kernels ----------------------------------------------------- */
    {
        const int d = 2048, F = 5632, V = 32000;
        float *xf, *res, *logits;
        uint16_t *wn, *yn, *gu, *act;
        CK(cudaMalloc(&xf, (size_t)64 * d * 4));
        CK(cudaMalloc(&res, (size_t)64 * d * 4));
        CK(cudaMalloc(&wn, (size_t)d * 2));
        CK(cudaMalloc(&yn, (size_t)64 * d * 2));
        CK(cudaMalloc(&gu, (size_t)64 * 2 * F * 2));
        CK(cudaMalloc(&act, (size_t)64 * F * 2));
        CK(cudaMalloc(&logits, (size_t)64 * V * 4));
        fillf(xf, (size_t)64 * d, 11);
        fillf(res, (size_t)64 * d, 12);
        fill(wn, d, 13, 1.0f);
        fill(gu, (size_t)64 * 2 * F, 14, 2.0f);
        fillf(logits, (size_t)64 * V, 15, 8.0f);
        void *ws;
        CK(cudaMalloc(&ws, topn_workspace_size(64, V)));
        for (int rows : {1, 64}) {
            char shp[64];
            rmsnorm_params rp = {};
            rp.rows = rows;
            rp.D = d;
            rp.eps = 1e-6f;
            rp.x = xf;
            rp.x_type = KC_F32;
            rp.ldx = d;
            rp.residual = res;
            rp.r_type = KC_F32;
            rp.ldr = d;
            rp.w = wn;
            rp.w_type = KC_BF16;
            rp.y = yn;
            rp.y_type = KC_BF16;
            rp.ldy = d;
            double t = time_graph(s, 20, [&](int, cudaStream_t st) { CKA(rmsnorm_cuda(&rp, st)); });
            snprintf(shp, sizeof shp, "%dx%d +res", rows, d);
            row("rmsnorm f32->bf16", shp, t, rows * d * (4 + 4 + 4 + 2) / t / 1e3, 0, "-");
            silu_mul_params sp = {};
            sp.rows = rows;
            sp.F = F;
            sp.gu = gu;
            sp.gu_type = KC_BF16;
            sp.ld_gu = 2 * F;
            sp.out = act;
            sp.out_type = KC_BF16;
            sp.ld_out = F;
            t = time_graph(s, 20, [&](int, cudaStream_t st) { CKA(silu_mul_cuda(&sp, st)); });
            snprintf(shp, sizeof shp, "%dx%d", rows, F);
            row("silu_mul bf16", shp, t, rows * F * 6.0 / t / 1e3, 0, "-");
            for (int n : {0, 20}) {
                topn_params tp = {};
                tp.B = rows;
                tp.V = V;
                tp.n = n;
                tp.logits = logits;
                tp.ld = V;
                tp.token = (int32_t *)act;
                tp.token_lp = (float *)(act + 256);
                tp.top_ids = (int32_t *)(act + 512);
                tp.top_lp = (float *)(act + 512 + 64 * 20 * 2);
                tp.workspace = ws;
                t = time_graph(s, 20, [&](int, cudaStream_t st) { CKA(topn_cuda(&tp, st)); });
                snprintf(shp, sizeof shp, "B=%d V=%d n=%d", rows, V, n);
                row("topn (greedy+logprobs)", shp, t, (double)rows * V * 4 / t / 1e3, 0, "-");
            }
        }
        CK(cudaFree(xf));
        CK(cudaFree(res));
        CK(cudaFree(wn));
        CK(cudaFree(yn));
        CK(cudaFree(gu));
        CK(cudaFree(act));
        CK(cudaFree(logits));
        CK(cudaFree(ws));
    }
    CKB(cublasDestroy(h));
    CK(cudaFree(cublas_ws));
    CK(cudaStreamDestroy(s));
    if (g_csv)
        fclose(g_csv);
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        fprintf(stderr, "asa-kernel-bench: no CUDA device\n");
        return 77;
    }
    try {
        return run(argc, argv);
    } catch (const std::exception &e) {
        fprintf(stderr, "asa-kernel-bench: %s\n", e.what());
        return 1;
    }
}
