/* tools/gpu/emu/cuda_runtime.h - CPU shim of the CUDA built-ins the kernels
 * use (see run_emulated.sh).  Not the CUDA runtime. */
#ifndef EMU_CUDA_RUNTIME_H
#define EMU_CUDA_RUNTIME_H
#include "cuda_runtime_api.h"
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <algorithm>
using std::isnan; using std::min; using std::max;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
extern thread_local dim3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
template <class T> T __ldg(const T *p) { return *p; }
void __syncthreads();
void emu_warp_exchange(uint64_t *v, int o);
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    uint64_t u = 0; memcpy(&u, &v, sizeof v); emu_warp_exchange(&u, o); memcpy(&v, &u, sizeof v); return v;
}
void emu_launch(std::function<void()> f, dim3 grid, dim3 block);
inline void emu_launch(std::function<void()> f, dim3 grid, dim3 block, size_t, cudaStream_t) { emu_launch(f, grid, block); }
inline void emu_launch(std::function<void()> f, dim3 grid, dim3 block, size_t) { emu_launch(f, grid, block); }
#endif
