// SwiGLU on the GPU (model/recompute.h): ab = [rows, 2I] holds the gate output a (columns
// [0, I)) and the up output b (columns [I, 2I)). Forward p = silu(a)·b; backward from dp:
// da = dp·b·σ(a)·(1 + a·(1 − σ(a))), db = dp·silu(a), written side by side into dab [rows, 2I],
// and optionally p again (the recomputation's pass folded into the backward's).
// fp32 arithmetic, one rounding per output; 8 elements per load and store where aligned.
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_half.cuh"

namespace eaglet::model {
namespace {

template <typename T, int N>
__global__ void swiglu_forward_kernel(const T* __restrict__ ab, T* __restrict__ p, int64_t rows,
                                      int64_t inter) {
  const int64_t per_row = inter / N;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= rows * per_row) return;
  const int64_t r = t / per_row, j = (t % per_row) * N;
  const auto a = *reinterpret_cast<const Pack<T, N>*>(ab + r * 2 * inter + j);
  const auto b = *reinterpret_cast<const Pack<T, N>*>(ab + r * 2 * inter + inter + j);
  Pack<T, N> out;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float x = to_float(a.v[i]);
    out.v[i] = from_float<T>(x / (1.f + expf(-x)) * to_float(b.v[i]));
  }
  *reinterpret_cast<Pack<T, N>*>(p + r * inter + j) = out;
}

// With WithP, also p = silu(a)·b as the forward kernel writes it (the same operations): the
// recomputation of p for the down weight's gradient rides on the backward's read of ab.
template <typename T, int N, bool WithP>
__global__ void swiglu_backward_kernel(const T* __restrict__ dp, const T* __restrict__ ab,
                                       T* __restrict__ dab, T* __restrict__ p, int64_t rows,
                                       int64_t inter) {
  const int64_t per_row = inter / N;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= rows * per_row) return;
  const int64_t r = t / per_row, j = (t % per_row) * N;
  const auto g = *reinterpret_cast<const Pack<T, N>*>(dp + r * inter + j);
  const auto a = *reinterpret_cast<const Pack<T, N>*>(ab + r * 2 * inter + j);
  const auto b = *reinterpret_cast<const Pack<T, N>*>(ab + r * 2 * inter + inter + j);
  Pack<T, N> da, db, pp;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float x = to_float(a.v[i]), y = to_float(b.v[i]), gi = to_float(g.v[i]);
    const float e = 1.f + expf(-x), sig = 1.f / e;
    da.v[i] = from_float<T>(gi * y * sig * (1.f + x * (1.f - sig)));
    db.v[i] = from_float<T>(gi * x * sig);
    if constexpr (WithP) pp.v[i] = from_float<T>(x / e * y);
  }
  *reinterpret_cast<Pack<T, N>*>(dab + r * 2 * inter + j) = da;
  *reinterpret_cast<Pack<T, N>*>(dab + r * 2 * inter + inter + j) = db;
  if constexpr (WithP) *reinterpret_cast<Pack<T, N>*>(p + r * inter + j) = pp;
}

template <typename T>
void forward(const void* ab, void* p, int64_t rows, int64_t inter, cudaStream_t stream) {
  constexpr int kBlock = 256;
  const bool packed = inter % 8 == 0 && pack_aligned<T, 8>(ab) && pack_aligned<T, 8>(p);
  const int64_t threads = rows * (packed ? inter / 8 : inter);
  if (threads == 0) return;
  const dim3 grid(static_cast<unsigned>((threads + kBlock - 1) / kBlock));
  const auto a = static_cast<const T*>(ab);
  auto o = static_cast<T*>(p);
  if (packed)
    swiglu_forward_kernel<T, 8><<<grid, kBlock, 0, stream>>>(a, o, rows, inter);
  else
    swiglu_forward_kernel<T, 1><<<grid, kBlock, 0, stream>>>(a, o, rows, inter);
}

template <typename T, bool WithP>
void backward(const void* dp, const void* ab, void* dab, void* p, int64_t rows, int64_t inter,
              cudaStream_t stream) {
  constexpr int kBlock = 256;
  const bool packed = inter % 8 == 0 && pack_aligned<T, 8>(dp) && pack_aligned<T, 8>(ab) &&
                      pack_aligned<T, 8>(dab) && (!WithP || pack_aligned<T, 8>(p));
  const int64_t threads = rows * (packed ? inter / 8 : inter);
  if (threads == 0) return;
  const dim3 grid(static_cast<unsigned>((threads + kBlock - 1) / kBlock));
  const auto g = static_cast<const T*>(dp);
  const auto a = static_cast<const T*>(ab);
  auto o = static_cast<T*>(dab);
  auto pt = static_cast<T*>(p);
  if (packed)
    swiglu_backward_kernel<T, 8, WithP><<<grid, kBlock, 0, stream>>>(g, a, o, pt, rows, inter);
  else
    swiglu_backward_kernel<T, 1, WithP><<<grid, kBlock, 0, stream>>>(g, a, o, pt, rows, inter);
}

}  // namespace

void launch_swiglu_forward(const void* ab, void* p, int64_t rows, int64_t inter, bool bf16,
                           cudaStream_t stream) {
  if (bf16)
    forward<__nv_bfloat16>(ab, p, rows, inter, stream);
  else
    forward<__half>(ab, p, rows, inter, stream);
}

void launch_swiglu_backward(const void* dp, const void* ab, void* dab, void* p, int64_t rows,
                            int64_t inter, bool bf16, cudaStream_t stream) {
  if (bf16 && p != nullptr)
    backward<__nv_bfloat16, true>(dp, ab, dab, p, rows, inter, stream);
  else if (bf16)
    backward<__nv_bfloat16, false>(dp, ab, dab, p, rows, inter, stream);
  else if (p != nullptr)
    backward<__half, true>(dp, ab, dab, p, rows, inter, stream);
  else
    backward<__half, false>(dp, ab, dab, p, rows, inter, stream);
}

}  // namespace eaglet::model
