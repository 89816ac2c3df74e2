// Fused diagonal blocks of the TTT attention (attention/ttt_diag.h). One warp per (position, KV
// head) holds the G query heads of its group in registers, so each block's K/V row is read once
// per position, and loops over the blocks. Forward: fp32 scores and an online log-sum-exp merge
// with block 0's output. Backward: dK/dV of each block summed over the group (no atomics), dq
// summed over the blocks in fp32 on top of block 0's dq and written once in the compute dtype.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "attention/ttt_diag_cuda.h"
#include "core/cuda_half.cuh"

namespace eaglet::attention {
namespace {

constexpr int kWarps = 8;  // warps per block

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Lane `lane` owns elements lane, lane + 32, ... (< d) of a head vector: each load instruction
// of the warp reads 32 consecutive elements.
template <int L, typename T>
__device__ __forceinline__ void load(float (&dst)[L], const T* src, int d, int lane) {
#pragma unroll
  for (int i = 0; i < L; ++i) {
    const int e = lane + 32 * i;
    dst[i] = e < d ? to_float(src[e]) : 0.f;
  }
}

template <int L, typename T>
__device__ __forceinline__ void store(T* dst, const float (&src)[L], int d, int lane) {
#pragma unroll
  for (int i = 0; i < L; ++i) {
    const int e = lane + 32 * i;
    if (e < d) dst[e] = from_float<T>(src[i]);
  }
}

template <int L>
__device__ __forceinline__ float dot(const float (&a)[L], const float (&b)[L]) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < L; ++i) s += a[i] * b[i];
  return warp_sum(s);
}

// G: the most query heads per KV head the instance handles (group <= G); L: d <= 32·L.
template <typename T, int G, int L>
__global__ void __launch_bounds__(kWarps * 32)
    diag_forward_kernel(const T* __restrict__ q, const T* __restrict__ out0,
                        const float* __restrict__ lse0, DiagPointers blocks, T* __restrict__ out,
                        float* __restrict__ lse, int64_t S, int H, int KV, int d, float scale) {
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (w >= S * KV) return;
  const int lane = threadIdx.x % 32, group = H / KV;
  const int64_t head0 = (w / KV) * H + (w % KV) * group;  // first query head of the group
  float qv[G][L], acc[G][L], mx[G], sum[G];
#pragma unroll
  for (int j = 0; j < G; ++j) {
    if (j >= group) break;
    load(qv[j], q + (head0 + j) * d, d, lane);
    load(acc[j], out0 + (head0 + j) * d, d, lane);  // block 0 normalised: weight 1 at its lse
    mx[j] = lse0[head0 + j];
    sum[j] = 1.f;
  }
  for (int m = 0; m < blocks.count; ++m) {
    float kv[L], vv[L];
    load(kv, static_cast<const T*>(blocks.k[m]) + w * d, d, lane);
    load(vv, static_cast<const T*>(blocks.v[m]) + w * d, d, lane);
#pragma unroll
    for (int j = 0; j < G; ++j) {
      if (j >= group) break;
      const float score = dot(qv[j], kv) * scale;
      const float top = fmaxf(mx[j], score);
      const float r = expf(mx[j] - top), p = expf(score - top);
      sum[j] = sum[j] * r + p;
#pragma unroll
      for (int i = 0; i < L; ++i) acc[j][i] = acc[j][i] * r + p * vv[i];
      mx[j] = top;
    }
  }
#pragma unroll
  for (int j = 0; j < G; ++j) {
    if (j >= group) break;
    const float inv = 1.f / sum[j];
#pragma unroll
    for (int i = 0; i < L; ++i) acc[j][i] *= inv;
    store(out + (head0 + j) * d, acc[j], d, lane);
    if (lane == 0) lse[head0 + j] = mx[j] + logf(sum[j]);
  }
}

template <typename T, int G, int L>
__global__ void __launch_bounds__(kWarps * 32)
    diag_backward_kernel(const T* __restrict__ dout, const T* __restrict__ q,
                         const T* __restrict__ out, const float* __restrict__ lse,
                         const T* __restrict__ dq0, int64_t dq0_row, int64_t dq0_head,
                         DiagPointers blocks, T* __restrict__ dq, int64_t S, int H, int KV, int d,
                         float scale) {
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (w >= S * KV) return;
  const int lane = threadIdx.x % 32, group = H / KV;
  const int64_t s = w / KV;
  const int first = static_cast<int>(w % KV) * group;  // first query head of the group
  const int64_t head0 = s * H + first;
  // D = dout·out (the softmax backward's row term), with q, dout and dq's sum per head.
  float qv[G][L], dov[G][L], dqa[G][L], D[G], l[G];
#pragma unroll
  for (int j = 0; j < G; ++j) {
    if (j >= group) break;
    float ov[L];
    load(qv[j], q + (head0 + j) * d, d, lane);
    load(dov[j], dout + (head0 + j) * d, d, lane);
    load(ov, out + (head0 + j) * d, d, lane);
    D[j] = dot(dov[j], ov);
    l[j] = lse[head0 + j];
#pragma unroll
    for (int i = 0; i < L; ++i) dqa[j][i] = 0.f;
  }
  for (int m = 0; m < blocks.count; ++m) {
    float kv[L], vv[L], dk[L] = {}, dv[L] = {};
    load(kv, static_cast<const T*>(blocks.k[m]) + w * d, d, lane);
    load(vv, static_cast<const T*>(blocks.v[m]) + w * d, d, lane);
#pragma unroll
    for (int j = 0; j < G; ++j) {
      if (j >= group) break;
      float qk = 0.f, dov_v = 0.f;
#pragma unroll
      for (int i = 0; i < L; ++i) {
        qk += qv[j][i] * kv[i];
        dov_v += dov[j][i] * vv[i];
      }
      for (int o = 16; o > 0; o /= 2) {
        qk += __shfl_xor_sync(0xffffffffu, qk, o);
        dov_v += __shfl_xor_sync(0xffffffffu, dov_v, o);
      }
      const float p = expf(qk * scale - l[j]);     // this block's weight in the merged softmax
      const float g = p * (dov_v - D[j]) * scale;  // d loss / d (q·k)
#pragma unroll
      for (int i = 0; i < L; ++i) {
        dqa[j][i] += g * kv[i];
        dk[i] += g * qv[j][i];
        dv[i] += p * dov[j][i];
      }
    }
    store(static_cast<T*>(blocks.dk[m]) + w * d, dk, d, lane);
    store(static_cast<T*>(blocks.dv[m]) + w * d, dv, d, lane);
  }
#pragma unroll
  for (int j = 0; j < G; ++j) {
    if (j >= group) break;
    float base[L];
    load(base, dq0 + s * dq0_row + (first + j) * dq0_head, d, lane);
#pragma unroll
    for (int i = 0; i < L; ++i) base[i] += dqa[j][i];
    store(dq + (head0 + j) * d, base, d, lane);
  }
}

unsigned grid_for(int64_t warps) {
  return static_cast<unsigned>((warps + kWarps - 1) / kWarps);
}

// Calls f(G, L) with the smallest instance that covers the group and head size.
template <typename F>
void dispatch(int group, int d, F&& f) {
  auto by_l = [&](auto g) {
    if (d <= 64)
      f(g, std::integral_constant<int, 2>{});
    else if (d <= 128)
      f(g, std::integral_constant<int, 4>{});
    else
      f(g, std::integral_constant<int, kMaxHeadDim / 32>{});
  };
  if (group <= 1)
    by_l(std::integral_constant<int, 1>{});
  else if (group <= 2)
    by_l(std::integral_constant<int, 2>{});
  else if (group <= 4)
    by_l(std::integral_constant<int, 4>{});
  else
    by_l(std::integral_constant<int, kMaxDiagGroup>{});
}

template <typename T>
void forward(const void* q, const void* out0, const float* lse0, const DiagPointers& blocks,
             void* out, float* lse, int64_t S, int H, int KV, int d, float scale,
             cudaStream_t stream) {
  dispatch(H / KV, d, [&](auto g, auto l) {
    diag_forward_kernel<T, decltype(g)::value, decltype(l)::value>
        <<<grid_for(S * KV), kWarps * 32, 0, stream>>>(
            static_cast<const T*>(q), static_cast<const T*>(out0), lse0, blocks,
            static_cast<T*>(out), lse, S, H, KV, d, scale);
  });
}

template <typename T>
void backward(const void* dout, const void* q, const void* out, const float* lse, const void* dq0,
              int64_t dq0_row, int64_t dq0_head, const DiagPointers& blocks, void* dq, int64_t S,
              int H, int KV, int d, float scale, cudaStream_t stream) {
  dispatch(H / KV, d, [&](auto g, auto l) {
    diag_backward_kernel<T, decltype(g)::value, decltype(l)::value>
        <<<grid_for(S * KV), kWarps * 32, 0, stream>>>(
            static_cast<const T*>(dout), static_cast<const T*>(q), static_cast<const T*>(out), lse,
            static_cast<const T*>(dq0), dq0_row, dq0_head, blocks, static_cast<T*>(dq), S, H, KV, d,
            scale);
  });
}

}  // namespace

void launch_diag_forward(const void* q, const void* out0, const float* lse0,
                         const DiagPointers& blocks, void* out, float* lse, int64_t S, int H,
                         int KV, int d, float scale, bool bf16, cudaStream_t stream) {
  if (bf16)
    forward<__nv_bfloat16>(q, out0, lse0, blocks, out, lse, S, H, KV, d, scale, stream);
  else
    forward<__half>(q, out0, lse0, blocks, out, lse, S, H, KV, d, scale, stream);
}

void launch_diag_backward(const void* dout, const void* q, const void* out, const float* lse,
                          const void* dq0, int64_t dq0_row, int64_t dq0_head,
                          const DiagPointers& blocks, void* dq, int64_t S, int H, int KV, int d,
                          float scale, bool bf16, cudaStream_t stream) {
  if (bf16)
    backward<__nv_bfloat16>(dout, q, out, lse, dq0, dq0_row, dq0_head, blocks, dq, S, H, KV, d,
                            scale, stream);
  else
    backward<__half>(dout, q, out, lse, dq0, dq0_row, dq0_head, blocks, dq, S, H, KV, d, scale,
                     stream);
}

}  // namespace eaglet::attention
