// What eaglet's CUDA kernels share: bf16/fp16 <-> fp32 conversions and a 16-byte pack of
// elements for vector loads and stores. No LibTorch here.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace eaglet {

__device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
__device__ __forceinline__ float to_float(__half x) {
  return __half2float(x);
}
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float(float x) {
  return __float2bfloat16(x);
}
template <>
__device__ __forceinline__ __half from_float(float x) {
  return __float2half(x);
}

// N elements moved as one aligned load or store (N = 8: 16 bytes of bf16/fp16).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Whether p is aligned for a Pack<T, N>.
template <typename T, int N>
__host__ __device__ inline bool pack_aligned(const void* p) {
  return reinterpret_cast<unsigned long long>(p) % (sizeof(T) * N) == 0;
}

}  // namespace eaglet
