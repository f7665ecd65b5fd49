/* tools/gpu/lab.cuh - what the standalone GPU lab programs of tools/gpu
 * share (blas_algos, stream_chain, gemm_dec_lab, gemv_chain): error checks
 * that end the program, and the timing of a captured CUDA graph.  Header
 * only, no project library needed. */
#ifndef ASA_TOOLS_GPU_LAB_CUH
#define ASA_TOOLS_GPU_LAB_CUH

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

/* a CUDA runtime call that must succeed */
#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)
/* a library call (cuBLAS, cuBLASLt) whose status 0 is success */
#define CB(x)                                                                                  \
    do {                                                                                       \
        int s_ = (int)(x);                                                                     \
        if (s_) {                                                                              \
            fprintf(stderr, "%s:%d %s: status %d\n", __FILE__, __LINE__, #x, s_);              \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

/* Captures enqueue(s, r) for r < reps into one graph and times its
 * replays: the median of `replays` after `warm` unmeasured ones, in us per
 * enqueue.  enqueue returns false when its work cannot be captured (an
 * algorithm that refuses the shape): then -1, with the runtime's error
 * cleared. */
template <class F>
static double lab_graph_us(cudaStream_t s, int reps, F enqueue, int replays = 7, int warm = 1) {
    cudaGraph_t g = nullptr;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    bool ok = true;
    for (int r = 0; r < reps && ok; r++)
        ok = enqueue(s, r);
    const cudaError_t ec = cudaStreamEndCapture(s, &g);
    if (!ok || ec != cudaSuccess || cudaGraphInstantiate(&ge, g, 0) != cudaSuccess) {
        if (g)
            cudaGraphDestroy(g);
        cudaGetLastError();
        return -1;
    }
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int w = 0; w < warm; w++)
        CK(cudaGraphLaunch(ge, s));
    std::vector<double> t;
    for (int i = 0; i < replays; i++) {
        CK(cudaEventRecord(a, s));
        CK(cudaGraphLaunch(ge, s));
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms * 1e3 / reps);
    }
    std::sort(t.begin(), t.end());
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    return t[t.size() / 2];
}

/* ms a replay of the graph that enqueue() captures (median of 9, after 3):
 * one whole step of a chain (stream_chain, gemv_chain) */
template <class F> static double lab_graph_ms(cudaStream_t s, F enqueue) {
    return lab_graph_us(
               s, 1,
               [&](cudaStream_t, int) {
                   enqueue();
                   return true;
               },
               9, 3) /
           1e3;
}

#endif /* ASA_TOOLS_GPU_LAB_CUH */
