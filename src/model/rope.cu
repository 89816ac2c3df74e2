// Rotate-half RoPE on the GPU (model/layers.h): one pass over x, fp32 arithmetic, one rounding.
// Thread t owns N consecutive elements j..j+N-1 of the first half of one (row, head) vector and
// the N matching elements of the second half:
//   out1 = x1·cos − x2·(sign·sin),  out2 = x2·cos + x1·(sign·sin)
// with the tables' first half (rope_tables makes both halves equal). sign = −1 is the transpose,
// i.e. the backward. x may be strided over rows and heads (a view of a fused projection); out is
// contiguous [S, heads, d].
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_half.cuh"

namespace eaglet::model {
namespace {

template <typename T, int N>
__global__ void rope_kernel(const T* __restrict__ x, int64_t row_stride, int64_t head_stride,
                            const float* __restrict__ cos, const float* __restrict__ sin,
                            int64_t table_stride, T* __restrict__ out, int64_t rows, int heads,
                            int half, float sign) {
  const int per_vector = half / N;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= rows * heads * per_vector) return;
  const int j = static_cast<int>(t % per_vector) * N;
  const int64_t rh = t / per_vector;
  const int h = static_cast<int>(rh % heads);
  const int64_t s = rh / heads;
  const T* xv = x + s * row_stride + h * head_stride;
  T* ov = out + rh * (2 * half);
  const auto a = *reinterpret_cast<const Pack<T, N>*>(xv + j);
  const auto b = *reinterpret_cast<const Pack<T, N>*>(xv + half + j);
  Pack<T, N> oa, ob;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float c = cos[s * table_stride + j + i], sn = sign * sin[s * table_stride + j + i];
    const float x1 = to_float(a.v[i]), x2 = to_float(b.v[i]);
    oa.v[i] = from_float<T>(x1 * c - x2 * sn);
    ob.v[i] = from_float<T>(x2 * c + x1 * sn);
  }
  *reinterpret_cast<Pack<T, N>*>(ov + j) = oa;
  *reinterpret_cast<Pack<T, N>*>(ov + half + j) = ob;
}

template <typename T>
void launch(const void* x, int64_t row_stride, int64_t head_stride, const float* cos,
            const float* sin, int64_t table_stride, void* out, int64_t rows, int heads, int half,
            float sign, cudaStream_t stream) {
  constexpr int kBlock = 256;
  const auto xt = static_cast<const T*>(x);
  auto ot = static_cast<T*>(out);
  const bool packed = half % 8 == 0 && row_stride % 8 == 0 && head_stride % 8 == 0 &&
                      pack_aligned<T, 8>(x) && pack_aligned<T, 8>(out);
  const int n = packed ? 8 : 1;
  const int64_t threads = rows * heads * (half / n);
  if (threads == 0) return;
  const dim3 grid(static_cast<unsigned>((threads + kBlock - 1) / kBlock));
  if (packed)
    rope_kernel<T, 8><<<grid, kBlock, 0, stream>>>(xt, row_stride, head_stride, cos, sin,
                                                   table_stride, ot, rows, heads, half, sign);
  else
    rope_kernel<T, 1><<<grid, kBlock, 0, stream>>>(xt, row_stride, head_stride, cos, sin,
                                                   table_stride, ot, rows, heads, half, sign);
}

}  // namespace

void launch_rope(const void* x, int64_t row_stride, int64_t head_stride, const float* cos,
                 const float* sin, int64_t table_stride, void* out, int64_t rows, int heads,
                 int half, float sign, bool bf16, cudaStream_t stream) {
  if (bf16)
    launch<__nv_bfloat16>(x, row_stride, head_stride, cos, sin, table_stride, out, rows, heads,
                          half, sign, stream);
  else
    launch<__half>(x, row_stride, head_stride, cos, sin, table_stride, out, rows, heads, half, sign,
                   stream);
}

}  // namespace eaglet::model
