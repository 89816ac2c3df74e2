// Fused diagonal blocks of the TTT attention (attention/ttt_diag.h). Forward: one warp per
// (position, query head): fp32 scores against each block's K at that position, the log-sum-exp
// with block 0's, and the merged output. Backward: one warp per (position, KV head), looping over
// the blocks and the query heads of the group, so dK/dV need no atomics; dq accumulates in fp32.
#include <cuda_runtime.h>

#include <cstdint>

#include "attention/ttt_diag_cuda.h"
#include "core/cuda_half.cuh"

namespace eaglet::attention {
namespace {

constexpr int kWarps = 8;                   // warps per block
constexpr int kMaxLane = kMaxHeadDim / 32;  // elements of one head vector per lane

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <typename T>
__device__ __forceinline__ void load(float (&dst)[kMaxLane], const T* src, int d, int lane) {
#pragma unroll
  for (int i = 0; i < kMaxLane; ++i) {
    const int e = lane + 32 * i;
    dst[i] = e < d ? to_float(src[e]) : 0.f;
  }
}

template <typename T>
__device__ __forceinline__ float dot(const float (&a)[kMaxLane], const T* b, int d, int lane) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxLane; ++i) {
    const int e = lane + 32 * i;
    if (e < d) s += a[i] * to_float(b[e]);
  }
  return warp_sum(s);
}

template <typename T>
__global__ void diag_forward_kernel(const T* __restrict__ q, const T* __restrict__ out0,
                                    const float* __restrict__ lse0, DiagPointers blocks,
                                    T* __restrict__ out, float* __restrict__ lse, int64_t S, int H,
                                    int KV, int d, float scale) {
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (w >= S * H) return;
  const int lane = threadIdx.x % 32;
  const int64_t s = w / H;
  const int h = static_cast<int>(w % H), kvh = h / (H / KV);
  const int64_t qo = w * d, kvo = (s * KV + kvh) * d;
  float qv[kMaxLane];
  load(qv, q + qo, d, lane);
  float score[kMaxDiagBlocks];
  const float l0 = lse0[w];
  float mx = l0;
  for (int m = 0; m < blocks.count; ++m) {
    score[m] = dot(qv, static_cast<const T*>(blocks.k[m]) + kvo, d, lane) * scale;
    mx = fmaxf(mx, score[m]);
  }
  float sum = expf(l0 - mx);
  for (int m = 0; m < blocks.count; ++m) sum += expf(score[m] - mx);
  const float l = mx + logf(sum);
  float acc[kMaxLane];
  const float w0 = expf(l0 - l);
  load(acc, out0 + qo, d, lane);
#pragma unroll
  for (int i = 0; i < kMaxLane; ++i) acc[i] *= w0;
  for (int m = 0; m < blocks.count; ++m) {
    const float wm = expf(score[m] - l);
    const T* v = static_cast<const T*>(blocks.v[m]) + kvo;
#pragma unroll
    for (int i = 0; i < kMaxLane; ++i) {
      const int e = lane + 32 * i;
      if (e < d) acc[i] += wm * to_float(v[e]);
    }
  }
#pragma unroll
  for (int i = 0; i < kMaxLane; ++i) {
    const int e = lane + 32 * i;
    if (e < d) out[qo + e] = from_float<T>(acc[i]);
  }
  if (lane == 0) lse[w] = l;
}

template <typename T>
__global__ void diag_backward_kernel(const T* __restrict__ dout, const T* __restrict__ q,
                                     const T* __restrict__ out, const float* __restrict__ lse,
                                     DiagPointers blocks, float* __restrict__ dq, int64_t S, int H,
                                     int KV, int d, float scale) {
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (w >= S * KV) return;
  const int lane = threadIdx.x % 32, group = H / KV;
  const int64_t s = w / KV;
  const int kvh = static_cast<int>(w % KV);
  const int64_t kvo = w * d;
  for (int m = 0; m < blocks.count; ++m) {
    float kv[kMaxLane], vv[kMaxLane], dk[kMaxLane] = {}, dv[kMaxLane] = {};
    load(kv, static_cast<const T*>(blocks.k[m]) + kvo, d, lane);
    load(vv, static_cast<const T*>(blocks.v[m]) + kvo, d, lane);
    for (int j = 0; j < group; ++j) {
      const int64_t hq = s * H + static_cast<int64_t>(kvh) * group + j, qo = hq * d;
      float qv[kMaxLane], dov[kMaxLane];
      load(qv, q + qo, d, lane);
      load(dov, dout + qo, d, lane);
      float qk = 0.f, dv_o = 0.f;
#pragma unroll
      for (int i = 0; i < kMaxLane; ++i) {
        const int e = lane + 32 * i;
        qk += qv[i] * kv[i];
        if (e < d) dv_o += dov[i] * (vv[i] - to_float(out[qo + e]));
      }
      qk = warp_sum(qk);
      dv_o = warp_sum(dv_o);
      const float p = expf(qk * scale - lse[hq]);  // this block's weight in the merged softmax
      const float g = p * dv_o * scale;            // d loss / d (q·k)
#pragma unroll
      for (int i = 0; i < kMaxLane; ++i) {
        const int e = lane + 32 * i;
        if (e < d) dq[qo + e] += g * kv[i];
        dk[i] += g * qv[i];
        dv[i] += p * dov[i];
      }
    }
    T* dkp = static_cast<T*>(blocks.dk[m]) + kvo;
    T* dvp = static_cast<T*>(blocks.dv[m]) + kvo;
#pragma unroll
    for (int i = 0; i < kMaxLane; ++i) {
      const int e = lane + 32 * i;
      if (e < d) {
        dkp[e] = from_float<T>(dk[i]);
        dvp[e] = from_float<T>(dv[i]);
      }
    }
  }
}

unsigned grid_for(int64_t warps) {
  return static_cast<unsigned>((warps + kWarps - 1) / kWarps);
}

}  // namespace

void launch_diag_forward(const void* q, const void* out0, const float* lse0,
                         const DiagPointers& blocks, void* out, float* lse, int64_t S, int H,
                         int KV, int d, float scale, bool bf16, cudaStream_t stream) {
  const unsigned grid = grid_for(S * H);
  if (bf16)
    diag_forward_kernel<__nv_bfloat16><<<grid, kWarps * 32, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(q), static_cast<const __nv_bfloat16*>(out0), lse0, blocks,
        static_cast<__nv_bfloat16*>(out), lse, S, H, KV, d, scale);
  else
    diag_forward_kernel<__half><<<grid, kWarps * 32, 0, stream>>>(
        static_cast<const __half*>(q), static_cast<const __half*>(out0), lse0, blocks,
        static_cast<__half*>(out), lse, S, H, KV, d, scale);
}

void launch_diag_backward(const void* dout, const void* q, const void* out, const float* lse,
                          const DiagPointers& blocks, float* dq, int64_t S, int H, int KV, int d,
                          float scale, bool bf16, cudaStream_t stream) {
  const unsigned grid = grid_for(S * KV);
  if (bf16)
    diag_backward_kernel<__nv_bfloat16><<<grid, kWarps * 32, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(dout), static_cast<const __nv_bfloat16*>(q),
        static_cast<const __nv_bfloat16*>(out), lse, blocks, dq, S, H, KV, d, scale);
  else
    diag_backward_kernel<__half><<<grid, kWarps * 32, 0, stream>>>(
        static_cast<const __half*>(dout), static_cast<const __half*>(q),
        static_cast<const __half*>(out), lse, blocks, dq, S, H, KV, d, scale);
}

}  // namespace eaglet::attention
