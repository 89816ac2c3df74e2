// Widening a bf16/fp16 tensor to fp32 on the GPU (model/layers.h, to_compute's backward): ATen's
// copy between those dtypes casts one element at a time; this moves 8 per load (16 bytes).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/cuda_half.cuh"

namespace eaglet::model {
namespace {

template <typename T, int N>
__global__ void widen_kernel(const T* __restrict__ src, float* __restrict__ dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * N;
  for (int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * N; j < n;
       j += stride) {
    if (N > 1 && j + N <= n) {
      const auto p = *reinterpret_cast<const Pack<T, N>*>(src + j);
      Pack<float, N> out;
#pragma unroll
      for (int i = 0; i < N; ++i) out.v[i] = to_float(p.v[i]);
      *reinterpret_cast<Pack<float, N>*>(dst + j) = out;
    } else {
      for (int64_t i = j; i < n && i < j + N; ++i) dst[i] = to_float(src[i]);
    }
  }
}

template <typename T>
void widen(const void* src, float* dst, int64_t n, cudaStream_t stream) {
  constexpr int kThreads = 256;
  constexpr int64_t kMaxBlocks = 4096;  // grid-stride beyond
  const auto s = static_cast<const T*>(src);
  const int64_t blocks = std::min<int64_t>((n + kThreads * 8 - 1) / (kThreads * 8), kMaxBlocks);
  if (pack_aligned<T, 8>(src) && pack_aligned<float, 8>(dst))
    widen_kernel<T, 8><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s, dst, n);
  else
    widen_kernel<T, 1><<<static_cast<unsigned>(blocks * 8), kThreads, 0, stream>>>(s, dst, n);
}

}  // namespace

void launch_widen(const void* src, float* dst, int64_t n, bool bf16, cudaStream_t stream) {
  if (n == 0) return;
  if (bf16)
    widen<__nv_bfloat16>(src, dst, n, stream);
  else
    widen<__half>(src, dst, n, stream);
}

}  // namespace eaglet::model
