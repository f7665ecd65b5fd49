/* tests/cuda/emu/emu.cpp - the CPU emulation behind cuda_runtime.h (see
 * tests/cuda/emu_kernels.sh): blocks run one after another, each as blockDim.x
 * threads sharing `static` (= __shared__) variables. */
#include "cuda_runtime.h"
#include <barrier>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
static std::unique_ptr<std::barrier<>> g_block;
static std::vector<std::unique_ptr<std::barrier<>>> g_warp;
static uint64_t g_slots[64][32];
void __syncthreads() { g_block->arrive_and_wait(); }
void emu_warp_exchange(uint64_t *v, int o) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    g_slots[w][lane] = *v;
    g_warp[w]->arrive_and_wait();
    uint64_t r = g_slots[w][lane ^ o];
    g_warp[w]->arrive_and_wait();
    *v = r;
}
void emu_warp_read(uint64_t *v, int src) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    g_slots[w][lane] = *v;
    g_warp[w]->arrive_and_wait();
    uint64_t r = g_slots[w][src];
    g_warp[w]->arrive_and_wait();
    *v = r;
}
void emu_launch(std::function<void()> f, dim3 grid, dim3 block) {
    gridDim = grid; blockDim = block;
    int nt = block.x;
    g_block.reset(new std::barrier<>(nt));
    g_warp.clear();
    for (int w = 0; w < (nt + 31) / 32; w++) g_warp.emplace_back(new std::barrier<>(32));
    for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            std::vector<std::thread> th;
            for (int t = 0; t < nt; t++)
                th.emplace_back([&, t] { threadIdx = dim3(t); blockIdx = dim3(bx, by, bz); f(); });
            for (auto &x : th) x.join();
        }
}
extern "C" {
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return 0; }
const char *cudaGetErrorString(cudaError_t) { return "emu error"; }
cudaError_t cudaGetLastError(void) { return 0; }
cudaError_t cudaMalloc(void **p, size_t n) { *p = aligned_alloc(256, (n + 255) / 256 * 256); return 0; }
cudaError_t cudaFree(void *p) { free(p); return 0; }
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, int) { memcpy(d, s, n); return 0; }
cudaError_t cudaMemset(void *d, int v, size_t n) { memset(d, v, n); return 0; }
cudaError_t cudaDeviceSynchronize(void) { return 0; }
cudaError_t cudaFuncSetAttribute(const void *, int, int) { return 0; }
}
