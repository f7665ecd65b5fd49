/* tools/gpu/stream_chain.cu - what separate launches cost a decode step
 * that is only weight reads.  The asa-1.3b batch-1 step reads its weights
 * as 97 products (per layer q|kv_a|g 13.5 MB, o_proj 8.4 MB, gate|up
 * 46.1 MB, down 23.1 MB; then lm_head 131 MB).  This program reads the
 * same bytes, in the same pieces and order, with a kernel that does
 * nothing but stream (16-byte loads, 4 in flight a thread, a sink store),
 * three ways, each as a CUDA graph (median of 9 replays):
 *   plain   one launch a piece
 *   pdl     one launch a piece with programmatic dependent launch (each
 *           kernel issues its first loads, then waits for the previous one:
 *           the engine's pattern)
 *   one     one launch for the whole step (every block walks the pieces in
 *           order: the persistent form)
 * and prints each with its bandwidth and, given the copy ceiling in GB/s
 * (tools/bench/run_bench.sh prints it: the benchmark's floor), as a
 * multiple of that floor.
 *
 *   nvcc -O2 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Ikernels/cuda \
 *        -Icommon tools/gpu/stream_chain.cu -o stream_chain && ./stream_chain [GB/s]
 */
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kcuda_int.cuh"
#include "lab.cuh"

struct piece {
    const uint4 *p;
    size_t n; /* 16-byte words */
};

constexpr int TH = 256, UN = 4, MAXP = 128;
struct pieces {
    piece v[MAXP];
    int n;
};

__device__ __forceinline__ uint32_t fold(uint4 a) { return a.x ^ a.y ^ a.z ^ a.w; }

/* grid-stride read of one piece; pdl: the first UN loads, then the wait */
__global__ void __launch_bounds__(TH) read_piece(piece pc, uint32_t *sink, int pdl) {
    const size_t stride = (size_t)gridDim.x * TH;
    size_t i = blockIdx.x * (size_t)TH + threadIdx.x;
    uint32_t acc = 0;
    uint4 v[UN];
#pragma unroll
    for (int u = 0; u < UN; u++)
        v[u] = i + u * stride < pc.n ? __ldcs(pc.p + i + u * stride) : make_uint4(0, 0, 0, 0);
    if (pdl)
        kc_pdl_enter();
#pragma unroll
    for (int u = 0; u < UN; u++)
        acc ^= fold(v[u]);
    for (i += UN * stride; i < pc.n; i += UN * stride) {
#pragma unroll
        for (int u = 0; u < UN; u++)
            v[u] = i + u * stride < pc.n ? __ldcs(pc.p + i + u * stride) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < UN; u++)
            acc ^= fold(v[u]);
    }
    if (acc == 0x9e3779b9u)
        sink[0] = acc;
}

/* every piece in order, one launch */
__global__ void __launch_bounds__(TH) read_all(const pieces ps, uint32_t *sink) {
    const size_t stride = (size_t)gridDim.x * TH;
    uint32_t acc = 0;
    for (int k = 0; k < ps.n; k++) {
        const piece pc = ps.v[k];
        for (size_t i = blockIdx.x * (size_t)TH + threadIdx.x; i < pc.n; i += UN * stride) {
            uint4 v[UN];
#pragma unroll
            for (int u = 0; u < UN; u++)
                v[u] = i + u * stride < pc.n ? __ldcs(pc.p + i + u * stride)
                                             : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int u = 0; u < UN; u++)
                acc ^= fold(v[u]);
        }
    }
    if (acc == 0x9e3779b9u)
        sink[0] = acc;
}

int main(int argc, char **argv) {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const int sms = prop.multiProcessorCount;
    const size_t MB = 1000 * 1000;
    std::vector<size_t> sizes;
    for (int l = 0; l < 24; l++) {
        sizes.push_back((size_t)3296 * 2048 * 2);  /* q|kv_a|g (local shape) */
        sizes.push_back((size_t)2048 * 2048 * 2);  /* o_proj */
        sizes.push_back((size_t)11264 * 2048 * 2); /* gate|up */
        sizes.push_back((size_t)2048 * 5632 * 2);  /* down */
    }
    sizes.push_back((size_t)32000 * 2048 * 2); /* lm_head */
    size_t total = 0;
    for (size_t b : sizes)
        total += b;
    char *base;
    CK(cudaMalloc(&base, total));
    CK(cudaMemset(base, 1, total));
    uint32_t *sink;
    CK(cudaMalloc(&sink, 4));
    pieces ps;
    ps.n = (int)sizes.size();
    size_t off = 0;
    for (int k = 0; k < ps.n; k++) {
        ps.v[k] = {(const uint4 *)(base + off), sizes[k] / 16};
        off += sizes[k];
    }
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

    const double floor_gbs = argc > 1 ? atof(argv[1]) : 0.0;
    const double floor_ms = floor_gbs > 0 ? total / floor_gbs / 1e6 : 0.0;

    const int grid = sms * 4;
    const double plain = lab_graph_ms(s, [&] {
        for (int k = 0; k < ps.n; k++)
            read_piece<<<grid, TH, 0, s>>>(ps.v[k], sink, 0);
    });
    const double pdl = lab_graph_ms(s, [&] {
        for (int k = 0; k < ps.n; k++) {
            /* the first piece follows the previous replay: an ordinary launch */
            CK(kc_launch_pdl(k > 0, read_piece, grid, TH, 0, s, ps.v[k], sink, 1));
        }
    });
    const double one = lab_graph_ms(s, [&] { read_all<<<grid, TH, 0, s>>>(ps, sink); });
    CK(cudaGetLastError());
    printf("device: %s, %d SMs\n", prop.name, sms);
    printf("%d pieces, %.1f MB a step (asa-1.3b batch-1 weights)", ps.n, total / (double)MB);
    if (floor_ms > 0)
        printf("; floor at %.0f GB/s %.3f ms", floor_gbs, floor_ms);
    printf("\n");
    printf("%-8s %8s %8s %8s\n", "form", "ms", "x floor", "GB/s");
    const char *nm[3] = {"plain", "pdl", "one"};
    const double v[3] = {plain, pdl, one};
    for (int i = 0; i < 3; i++)
        printf("%-8s %8.3f %8.2f %8.0f\n", nm[i], v[i], floor_ms > 0 ? v[i] / floor_ms : 0.0,
               total / v[i] / 1e6);
    return 0;
}
