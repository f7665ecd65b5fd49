/* tools/gpu/blas_algos.cu - how far cuBLAS's default choice for the decode
 * products is from the best algorithm cuBLASLt offers for the same shape.
 *
 * For each product y[M][N] (f32) (+)= x[M][K] . W[N][K]^T (bf16 in, f32
 * accumulation, the engine's cublasGemmEx call) it times the
 * cublasGemmEx default and every algorithm of cublasLtMatmulAlgoGetHeuristic
 * (up to 32) with the same workspace as the engine (32 MiB), as medians of
 * CUDA-graph replays of 20 products over copies of W that together exceed
 * the L2 (so W streams from memory as in a decode step).  Also K split in
 * S = 2 / 4 slices as one strided batched product into S partial outputs
 * (beta 0; the consumer adds the partials, as the engine's kernels add a
 * stacked product's halves).
 *
 *   nvcc -O2 -std=c++17 -gencode=arch=compute_90a,code=sm_90a \
 *        tools/gpu/blas_algos.cu -lcublasLt -lcublas -o blas_algos
 *   blas_algos [N,K,M,beta ...]      (default: the asa-1.3b decode list)
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "lab.cuh"

static const size_t WS = (size_t)32 << 20;

struct shape {
    int N, K, M;
    float beta;
};

__global__ void fill_kernel(uint16_t *p, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)(i * 2654435761u) ^ seed;
        h ^= h >> 13;
        h *= 0x5bd1e995u;
        h ^= h >> 15;
        float f = ((h & 0xffff) / 65536.0f - 0.5f) * 0.1f;
        unsigned u = __float_as_uint(f);
        p[i] = (uint16_t)(u >> 16);
    }
}

int main(int argc, char **argv) {
    std::vector<shape> shapes;
    for (int i = 1; i < argc; i++) {
        shape s;
        if (sscanf(argv[i], "%d,%d,%d,%f", &s.N, &s.K, &s.M, &s.beta) == 4)
            shapes.push_back(s);
    }
    if (shapes.empty()) {
        const int Ms[] = {8, 16, 32, 64, 128, 256};
        for (int M : Ms) {
            shapes.push_back({3296, 4096, M, 0}); /* q|kv_a|g, K = 2d (local) */
            shapes.push_back({2048, 2048, M, 1}); /* o_proj into the residual */
            shapes.push_back({11264, 2048, M, 0}); /* gate|up */
            shapes.push_back({2048, 5632, M, 1}); /* down into the residual */
            shapes.push_back({32000, 2048, M, 0}); /* lm_head */
        }
    }
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cublasHandle_t h;
    CB(cublasCreate(&h));
    CB(cublasSetStream(h, st));
    cublasLtHandle_t lt;
    CB(cublasLtCreate(&lt));
    void *ws;
    CK(cudaMalloc(&ws, WS));
    CB(cublasSetWorkspace(h, ws, WS));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, L2 %d MiB, cuBLASLt %zu\n", prop.name, prop.l2CacheSize >> 20,
           cublasLtGetVersion());
    printf("%-6s %-6s %-4s %-4s %9s %9s %9s %5s %7s %7s %7s %7s %s\n", "N", "K", "M", "beta",
           "default", "heur0", "best", "#best", "GB/s d", "GB/s b", "K/2", "K/4",
           "best algo (id tile stages splitK)");
    for (const shape &sh : shapes) {
        const size_t wbytes = (size_t)sh.N * sh.K * 2;
        int copies = (int)std::max<size_t>(2, ((size_t)256 << 20) / wbytes + 1);
        if (copies > 20)
            copies = 20;
        std::vector<uint16_t *> W(copies);
        for (int i = 0; i < copies; i++) {
            CK(cudaMalloc(&W[i], wbytes));
            fill_kernel<<<1024, 256, 0, st>>>(W[i], wbytes / 2, 17u + i);
        }
        uint16_t *x;
        float *y;
        CK(cudaMalloc(&x, (size_t)sh.M * sh.K * 2));
        CK(cudaMalloc(&y, (size_t)sh.M * sh.N * 4 * 4)); /* up to 4 partials */
        fill_kernel<<<256, 256, 0, st>>>(x, (size_t)sh.M * sh.K, 5u);
        CK(cudaMemsetAsync(y, 0, (size_t)sh.M * sh.N * 4, st));
        CK(cudaStreamSynchronize(st));
        const float one = 1.0f, beta = sh.beta;
        const int reps = 20;
        double t_def = lab_graph_us(st, reps, [&](cudaStream_t, int r) {
            return cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, sh.N, sh.M, sh.K, &one,
                                W[r % copies], CUDA_R_16BF, sh.K, x, CUDA_R_16BF, sh.K, &beta, y,
                                CUDA_R_32F, sh.N, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
        });

        double t_split[2] = {-1, -1};
        for (int si = 0; si < 2; si++) {
            const int S = 2 << si, Ks = sh.K / S;
            if (sh.K % (8 * S))
                continue;
            const float zero = 0.0f;
            t_split[si] = lab_graph_us(st, reps, [&](cudaStream_t, int r) {
                return cublasGemmStridedBatchedEx(
                           h, CUBLAS_OP_T, CUBLAS_OP_N, sh.N, sh.M, Ks, &one, W[r % copies],
                           CUDA_R_16BF, sh.K, Ks, x, CUDA_R_16BF, sh.K, Ks, &zero, y, CUDA_R_32F,
                           sh.N, (long long)sh.M * sh.N, S, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
            });
        }

        cublasLtMatmulDesc_t op;
        CB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
        CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA));
        CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB));
        cublasLtMatrixLayout_t la, lb, lc;
        CB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, sh.K, sh.N, sh.K));
        CB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, sh.K, sh.M, sh.K));
        CB(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, sh.N, sh.M, sh.N));
        cublasLtMatmulPreference_t pref;
        CB(cublasLtMatmulPreferenceCreate(&pref));
        size_t wsz = WS;
        CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &wsz, sizeof wsz));
        cublasLtMatmulHeuristicResult_t res[32];
        int nres = 0;
        cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 32, res, &nres);
        double best = 1e30, heur0 = -1;
        int ibest = -1;
        for (int i = 0; i < nres; i++) {
            double t = lab_graph_us(st, reps, [&](cudaStream_t s, int r) {
                return cublasLtMatmul(lt, op, &one, W[r % copies], la, x, lb, &beta, y, lc, y,
                                      lc, &res[i].algo, ws, WS, s) == CUBLAS_STATUS_SUCCESS;
            });
            if (i == 0)
                heur0 = t;
            if (t > 0 && t < best) {
                best = t;
                ibest = i;
            }
        }
        char desc[128] = "-";
        if (ibest >= 0) {
            int id = 0, tile = 0, stages = 0, splitk = 0;
            size_t got;
            const cublasLtMatmulAlgo_t *a = &res[ibest].algo;
            cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &got);
            cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile,
                                                 sizeof tile, &got);
            cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages,
                                                 sizeof stages, &got);
            cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                                 sizeof splitk, &got);
            snprintf(desc, sizeof desc, "%d %d %d %d", id, tile, stages, splitk);
        }
        printf("%-6d %-6d %-4d %-4g %9.2f %9.2f %9.2f %2d/%-2d %7.0f %7.0f %7.2f %7.2f %s\n", sh.N,
               sh.K, sh.M, sh.beta, t_def, heur0, best, ibest, nres, wbytes / t_def / 1e3,
               wbytes / best / 1e3, t_split[0], t_split[1], desc);
        fflush(stdout);
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(op);
        for (uint16_t *p : W)
            cudaFree(p);
        cudaFree(x);
        cudaFree(y);
    }
    return 0;
}
