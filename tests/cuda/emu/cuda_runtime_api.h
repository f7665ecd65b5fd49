/* tests/cuda/emu/cuda_runtime_api.h - CPU shim of the runtime calls the
 * kernel tests make (see tests/cuda/emu_kernels.sh). */
#ifndef EMU_CUDA_RUNTIME_API_H
#define EMU_CUDA_RUNTIME_API_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
typedef int cudaError_t;
#define cudaSuccess 0
#define cudaErrorInvalidValue 1
typedef void *cudaStream_t;
typedef enum { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 } cudaMemcpyKind;
cudaError_t cudaGetDeviceCount(int *n);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, int kind);
cudaError_t cudaMemset(void *d, int v, size_t n);
cudaError_t cudaDeviceSynchronize(void);
#define cudaFuncAttributeMaxDynamicSharedMemorySize 8
cudaError_t cudaFuncSetAttribute(const void *f, int a, int v);
#ifdef __cplusplus
}
/* the runtime's overload for kernel pointers (kc_smem_optin) */
template <class F> cudaError_t cudaFuncSetAttribute(F *f, int a, int v) {
    (void)f;
    return cudaFuncSetAttribute((const void *)0, a, v);
}
#endif
#endif
