// The fused loss rows on the GPU (model/soft_ce_rows.h): one block per row, two sweeps over the
// row (the second mostly from L2). Sweep 1: online log-sum-exp of z, Σ p·z with
// p = exp(logits − lse), and argmax z (first index on ties, as ATen's argmax); sweep 2 writes
// dz = (exp(z − lse_z) − p)·mask over z. All arithmetic in fp32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cstdint>

namespace eaglet::model {
namespace {

constexpr int kThreads = 512;

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

struct Partial {
  float max, sum;  // online log-sum-exp: Σ exp(z − max)
  float pz;        // Σ p·z
  float best;      // largest z and its index
  int best_index;
};

__device__ __forceinline__ Partial combine(const Partial& a, const Partial& b) {
  Partial r;
  r.max = fmaxf(a.max, b.max);
  r.sum = (a.sum == 0.f ? 0.f : a.sum * expf(a.max - r.max)) +
          (b.sum == 0.f ? 0.f : b.sum * expf(b.max - r.max));
  r.pz = a.pz + b.pz;
  const bool take_b = b.best > a.best || (b.best == a.best && b.best_index < a.best_index);
  r.best = take_b ? b.best : a.best;
  r.best_index = take_b ? b.best_index : a.best_index;
  return r;
}

__device__ __forceinline__ Partial shuffle_down(const Partial& p, int offset) {
  Partial r;
  r.max = __shfl_down_sync(0xffffffffu, p.max, offset);
  r.sum = __shfl_down_sync(0xffffffffu, p.sum, offset);
  r.pz = __shfl_down_sync(0xffffffffu, p.pz, offset);
  r.best = __shfl_down_sync(0xffffffffu, p.best, offset);
  r.best_index = __shfl_down_sync(0xffffffffu, p.best_index, offset);
  return r;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    soft_ce_rows_kernel(T* __restrict__ z, const T* __restrict__ logits, int64_t logits_stride,
                        const float* __restrict__ lse, const float* __restrict__ mask,
                        float* __restrict__ loss, int64_t* __restrict__ argmax, int64_t vocab) {
  const int64_t row = blockIdx.x;
  T* zr = z + row * vocab;
  const T* tr = logits + row * logits_stride;
  const float t_lse = lse[row];

  Partial acc{-INFINITY, 0.f, 0.f, -INFINITY, INT_MAX};
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) {
    const float zj = to_float(zr[j]), pj = expf(to_float(tr[j]) - t_lse);
    acc.pz += pj * zj;
    if (zj > acc.best) {  // j grows per thread: the first maximum stays
      acc.best = zj;
      acc.best_index = static_cast<int>(j);
    }
    if (zj > acc.max) {
      acc.sum = acc.sum * expf(acc.max - zj) + 1.f;
      acc.max = zj;
    } else {
      acc.sum += expf(zj - acc.max);
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) acc = combine(acc, shuffle_down(acc, offset));
  __shared__ Partial warps[kThreads / 32];
  __shared__ float row_lse;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warps[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < kThreads / 32 ? warps[lane] : Partial{-INFINITY, 0.f, 0.f, -INFINITY, INT_MAX};
    for (int offset = 16; offset > 0; offset /= 2) acc = combine(acc, shuffle_down(acc, offset));
    if (lane == 0) {
      const float l = acc.max + logf(acc.sum);
      row_lse = l;
      loss[row] = l - acc.pz;
      argmax[row] = acc.best_index;
    }
  }
  __syncthreads();
  const float l = row_lse, m = mask[row];
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) {
    const float zj = to_float(zr[j]), pj = expf(to_float(tr[j]) - t_lse);
    zr[j] = from_float<T>((expf(zj - l) - pj) * m);
  }
}

}  // namespace

void launch_soft_ce_rows(void* z, const void* logits, int64_t logits_stride, const float* lse,
                         const float* mask, float* loss, int64_t* argmax, int64_t rows,
                         int64_t vocab, bool bf16, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(rows)), block(kThreads);
  if (bf16)
    soft_ce_rows_kernel<__nv_bfloat16><<<grid, block, 0, stream>>>(
        static_cast<__nv_bfloat16*>(z), static_cast<const __nv_bfloat16*>(logits), logits_stride,
        lse, mask, loss, argmax, vocab);
  else
    soft_ce_rows_kernel<__half>
        <<<grid, block, 0, stream>>>(static_cast<__half*>(z), static_cast<const __half*>(logits),
                                     logits_stride, lse, mask, loss, argmax, vocab);
}

}  // namespace eaglet::model
