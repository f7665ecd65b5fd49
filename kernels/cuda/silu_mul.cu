/*
 * kernels/cuda/silu_mul.cu - silu(gate) * up (contract in silu_mul_cuda.h).
 *
 * Schedule: a 2-D grid, blockIdx.y = row, 256 threads per block, each thread
 * one output element (x gridDim.x blocks cover F); gate and up reads are
 * coalesced.  Element-wise and tiny at decode sizes (F = 5632): one launch,
 * nothing to reuse.  silu uses expf (not __expf) so the f32 result is within
 * a few ulp of the double reference.
 */
#include "silu_mul_cuda.h"

#include <math.h>

#include "kcuda_int.cuh"

namespace {

constexpr int SILU_THREADS = 256;

__global__ void __launch_bounds__(SILU_THREADS) silu_mul_kernel(const silu_mul_params p) {
    kc_pdl_enter();
    const int i = blockIdx.x * SILU_THREADS + threadIdx.x;
    if (i >= p.F)
        return;
    const int64_t r = blockIdx.y;
    const float g = kc_load(p.gu, p.gu_type, r * p.ld_gu + i);
    const float u = kc_load(p.gu, p.gu_type, r * p.ld_gu + p.F + i);
    kc_store(p.out, p.out_type, r * p.ld_out + i, g / (1.0f + expf(-g)) * u);
}

bool type_ok(kc_dtype t) { return t == KC_F32 || t == KC_BF16; }

} // namespace

extern "C" asa_err silu_mul_params_check(const silu_mul_params *p) {
    if (!p || p->rows < 1 || p->rows > 65535 || p->F < 1 || !p->gu || !p->out ||
        !type_ok(p->gu_type) || !type_ok(p->out_type) || p->ld_gu < 2 * (int64_t)p->F ||
        p->ld_out < p->F)
        return ASA_EINVAL;
    if (!kc_aligned(p->gu, kc_dtype_size(p->gu_type)) ||
        !kc_aligned(p->out, kc_dtype_size(p->out_type)))
        return ASA_EINVAL;
    return ASA_OK;
}

extern "C" asa_err silu_mul_cuda(const silu_mul_params *p, cudaStream_t stream) {
    asa_err e = silu_mul_params_check(p);
    if (e)
        return e;
    const dim3 grid((unsigned)((p->F + SILU_THREADS - 1) / SILU_THREADS), (unsigned)p->rows);
    KC_CUDA_TRY(kc_launch(silu_mul_kernel, grid, SILU_THREADS, 0, stream, *p));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" void silu_mul_ref(const silu_mul_params *p) {
    for (int64_t r = 0; r < p->rows; r++)
        for (int i = 0; i < p->F; i++) {
            const double g = kc_load_h(p->gu, p->gu_type, r * p->ld_gu + i);
            const double u = kc_load_h(p->gu, p->gu_type, r * p->ld_gu + p->F + i);
            kc_store_h(p->out, p->out_type, r * p->ld_out + i, g / (1.0 + exp(-g)) * u);
        }
}
