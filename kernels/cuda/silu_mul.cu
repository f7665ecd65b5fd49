/*
 * kernels/cuda/silu_mul.cu - silu(gate) * up (contract in silu_mul_cuda.h).
 *
 * Schedule: a 2-D grid, blockIdx.y = row.  f32 input with F, ld_gu and
 * ld_out multiples of 4 (the engine's prefill: [T][2F] f32 from cuBLAS):
 * each thread four consecutive outputs from one 16-byte load of gate and
 * one of up, stored as 16 (f32) or 8 (bf16) bytes; a prefill's SiLU-gate is
 * a pure stream (~460 MB a layer at 8k tokens) and the one-element-a-thread
 * form reached about half the read bandwidth.  Otherwise 256 threads a
 * block, one output element each.  Both compute the same expression: the
 * same bits.  silu uses expf (not __expf) so the f32 result is within a
 * few ulp of the double reference.
 */
#include "silu_mul_cuda.h"

#include <math.h>

#include "kcuda_int.cuh"

namespace {

constexpr int SILU_THREADS = 256;

__device__ __forceinline__ float silu_gate(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__global__ void __launch_bounds__(SILU_THREADS) silu_mul_kernel(const silu_mul_params p) {
    kc_pdl_enter();
    const int i = blockIdx.x * SILU_THREADS + threadIdx.x;
    if (i >= p.F)
        return;
    const int64_t r = blockIdx.y;
    float g = kc_load(p.gu, p.gu_type, r * p.ld_gu + i);
    float u = kc_load(p.gu, p.gu_type, r * p.ld_gu + p.F + i);
    if (p.gu2) {
        g += kc_load(p.gu2, p.gu_type, r * p.ld_gu + i);
        u += kc_load(p.gu2, p.gu_type, r * p.ld_gu + p.F + i);
    }
    const float o = silu_gate(g, u);
    kc_store(p.out, p.out_type, r * p.ld_out + i, o);
    if (p.out_lo) /* out_type KC_BF16 (checked) */
        p.out_lo[r * p.ld_out + i] = kc_f32_bf16(o - kc_bf16_f32(kc_f32_bf16(o)));
}

constexpr int SILU4_THREADS = 128;

/* Four outputs a thread (the vector path of the schedule above). */
__global__ void __launch_bounds__(SILU4_THREADS) silu_mul4_kernel(const silu_mul_params p) {
    kc_pdl_enter();
    const int i = (blockIdx.x * SILU4_THREADS + threadIdx.x) * 4;
    if (i >= p.F)
        return;
    const int64_t r = blockIdx.y;
    const float *row = (const float *)p.gu + r * p.ld_gu;
    float4 g = __ldcs((const float4 *)(row + i));
    float4 u = __ldcs((const float4 *)(row + p.F + i));
    if (p.gu2) {
        const float *row2 = (const float *)p.gu2 + r * p.ld_gu;
        const float4 g2 = __ldcs((const float4 *)(row2 + i));
        const float4 u2 = __ldcs((const float4 *)(row2 + p.F + i));
        g = make_float4(g.x + g2.x, g.y + g2.y, g.z + g2.z, g.w + g2.w);
        u = make_float4(u.x + u2.x, u.y + u2.y, u.z + u2.z, u.w + u2.w);
    }
    const float o0 = silu_gate(g.x, u.x), o1 = silu_gate(g.y, u.y);
    const float o2 = silu_gate(g.z, u.z), o3 = silu_gate(g.w, u.w);
    if (p.out_type == KC_BF16) {
        kc_split_store4(make_float4(o0, o1, o2, o3), (uint16_t *)p.out, p.out_lo,
                        r * p.ld_out + i);
    } else {
        *(float4 *)((float *)p.out + r * p.ld_out + i) = make_float4(o0, o1, o2, o3);
    }
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
    if (p->gu2 && !kc_aligned(p->gu2, kc_dtype_size(p->gu_type)))
        return ASA_EINVAL;
    if (p->out_lo && (p->out_type != KC_BF16 || !kc_aligned(p->out_lo, 2)))
        return ASA_EINVAL;
    return ASA_OK;
}

extern "C" asa_err silu_mul_cuda(const silu_mul_params *p, cudaStream_t stream) {
    asa_err e = silu_mul_params_check(p);
    if (e)
        return e;
    const size_t osz = kc_dtype_size(p->out_type);
    if (p->gu_type == KC_F32 && p->F % 4 == 0 && p->ld_gu % 4 == 0 && p->ld_out % 4 == 0 &&
        kc_aligned(p->gu, 16) && kc_aligned(p->out, 4 * osz) &&
        (!p->gu2 || kc_aligned(p->gu2, 16)) && (!p->out_lo || kc_aligned(p->out_lo, 8))) {
        const int n4 = p->F / 4;
        const dim3 grid4((unsigned)((n4 + SILU4_THREADS - 1) / SILU4_THREADS), (unsigned)p->rows);
        KC_CUDA_TRY(kc_launch(silu_mul4_kernel, grid4, SILU4_THREADS, 0, stream, *p));
        KC_LAUNCH_CHECK();
        return ASA_OK;
    }
    const dim3 grid((unsigned)((p->F + SILU_THREADS - 1) / SILU_THREADS), (unsigned)p->rows);
    KC_CUDA_TRY(kc_launch(silu_mul_kernel, grid, SILU_THREADS, 0, stream, *p));
    KC_LAUNCH_CHECK();
    return ASA_OK;
}

extern "C" void silu_mul_ref(const silu_mul_params *p) {
    for (int64_t r = 0; r < p->rows; r++)
        for (int i = 0; i < p->F; i++) {
            float gf = (float)kc_load_h(p->gu, p->gu_type, r * p->ld_gu + i);
            float uf = (float)kc_load_h(p->gu, p->gu_type, r * p->ld_gu + p->F + i);
            if (p->gu2) { /* the f32 sum, as the kernel adds */
                gf += (float)kc_load_h(p->gu2, p->gu_type, r * p->ld_gu + i);
                uf += (float)kc_load_h(p->gu2, p->gu_type, r * p->ld_gu + p->F + i);
            }
            const double g = gf, u = uf, o = g / (1.0 + exp(-g)) * u;
            kc_store_h(p->out, p->out_type, r * p->ld_out + i, o);
            if (p->out_lo) {
                const float of = (float)o;
                p->out_lo[r * p->ld_out + i] =
                    asa_f32_to_bf16(of - asa_bf16_to_f32(asa_f32_to_bf16(of)));
            }
        }
}
