// RMSNorm on the GPU (model/layers.h). Forward for the midlayer's input (rms_norm_rows_kernel:
// rows gathered by id, written into a strided half of x). Backward (rms_norm): for y = w ⊙ x·r, r =
// (mean(x²) + eps)^-½, dx = r·g − x·r³·mean(g ⊙ x) with g = w ⊙ dy, and dw = Σ_rows dy ⊙ x·r. One
// pass over x and dy: each block takes rows blockIdx.x, blockIdx.x + gridDim.x, ...; a thread holds
// up to P packs of 8 columns of the row in registers (H ≤ 8·P·threads) and its columns' dw sum over
// the block's rows, written as one fp32 row of partials; a second kernel sums the partials per
// column. r is recomputed from x (nothing saved by the forward but x). A residual use of x adds
// its gradient (dres) into dx in the same pass. All arithmetic in fp32, one rounding per output.
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_half.cuh"

namespace eaglet::model {
namespace {

constexpr int kThreads = 512;
constexpr int kMaxPacks = 4;  // H ≤ 4·8·512 = 16384

__device__ __forceinline__ float2 block_sum2(float2 v) {
  for (int o = 16; o > 0; o /= 2) {
    v.x += __shfl_xor_sync(0xffffffffu, v.x, o);
    v.y += __shfl_xor_sync(0xffffffffu, v.y, o);
  }
  __shared__ float2 warps[kThreads / 32];
  __shared__ float2 total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // the previous row's readers of `total` are done
  if (lane == 0) warps[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float2 s = lane < kThreads / 32 ? warps[lane] : make_float2(0.f, 0.f);
    for (int o = 16; o > 0; o /= 2) {
      s.x += __shfl_xor_sync(0xffffffffu, s.x, o);
      s.y += __shfl_xor_sync(0xffffffffu, s.y, o);
    }
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

template <typename T, int P>
__global__ void __launch_bounds__(kThreads)
    rms_norm_backward_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                             const T* __restrict__ dres, const T* __restrict__ w, float eps,
                             T* __restrict__ dx, float* __restrict__ partial, int64_t rows, int H) {
  constexpr int N = 8;
  float wv[P][N], dw[P][N];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int c = (p * kThreads + threadIdx.x) * N;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      wv[p][i] = 0.f;
      dw[p][i] = 0.f;
    }
    if (c < H) {
      const auto pw = *reinterpret_cast<const Pack<T, N>*>(w + c);
#pragma unroll
      for (int i = 0; i < N; ++i) wv[p][i] = to_float(pw.v[i]);
    }
  }
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float xv[P][N], dv[P][N];
    Pack<T, N> pr[P];                     // the residual gradient, loaded with x and dy
    float2 sums = make_float2(0.f, 0.f);  // Σ x², Σ g·x
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int c = (p * kThreads + threadIdx.x) * N;
      if (c < H) {
        const auto px = *reinterpret_cast<const Pack<T, N>*>(x + r * H + c);
        const auto pd = *reinterpret_cast<const Pack<T, N>*>(dy + r * H + c);
        if (dres != nullptr) pr[p] = *reinterpret_cast<const Pack<T, N>*>(dres + r * H + c);
#pragma unroll
        for (int i = 0; i < N; ++i) {
          xv[p][i] = to_float(px.v[i]);
          dv[p][i] = to_float(pd.v[i]);
          sums.x += xv[p][i] * xv[p][i];
          sums.y += wv[p][i] * dv[p][i] * xv[p][i];
        }
      }
    }
    sums = block_sum2(sums);
    const float rr = rsqrtf(sums.x / H + eps);
    const float k = rr * rr * rr * sums.y / H;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int c = (p * kThreads + threadIdx.x) * N;
      if (c < H) {
        Pack<T, N> out;
#pragma unroll
        for (int i = 0; i < N; ++i) {
          const float add = dres != nullptr ? to_float(pr[p].v[i]) : 0.f;
          out.v[i] = from_float<T>(rr * wv[p][i] * dv[p][i] - k * xv[p][i] + add);
          dw[p][i] += dv[p][i] * xv[p][i] * rr;
        }
        *reinterpret_cast<Pack<T, N>*>(dx + r * H + c) = out;
      }
    }
  }
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int c = (p * kThreads + threadIdx.x) * N;
    if (c < H) {
      auto out = reinterpret_cast<float4*>(partial + static_cast<int64_t>(blockIdx.x) * H + c);
      out[0] = make_float4(dw[p][0], dw[p][1], dw[p][2], dw[p][3]);
      out[1] = make_float4(dw[p][4], dw[p][5], dw[p][6], dw[p][7]);
    }
  }
}

// Forward, for rows gathered or written strided: y_r = w ⊙ x_r · r_r with x_r = src[ids[r]] (or
// src[r] without ids) and y_r at out + r·out_stride (w = 1 where null). One block per row, its
// threads holding up to P packs of 8 columns; fp32 arithmetic, one rounding on the way out (as
// ATen's fused CUDA RMSNorm).
template <typename T, int P>
__global__ void __launch_bounds__(kThreads)
    rms_norm_rows_kernel(const T* __restrict__ src, const int64_t* __restrict__ ids,
                         const T* __restrict__ w, float eps, T* __restrict__ out,
                         int64_t out_stride, int H) {
  constexpr int N = 8;
  const int64_t r = blockIdx.x;
  const T* x = src + (ids != nullptr ? ids[r] : r) * H;
  float xv[P][N];
  float2 sums = make_float2(0.f, 0.f);
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int c = (p * kThreads + threadIdx.x) * N;
    if (c < H) {
      const auto px = *reinterpret_cast<const Pack<T, N>*>(x + c);
#pragma unroll
      for (int i = 0; i < N; ++i) {
        xv[p][i] = to_float(px.v[i]);
        sums.x += xv[p][i] * xv[p][i];
      }
    }
  }
  sums = block_sum2(sums);
  const float rr = rsqrtf(sums.x / H + eps);
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int c = (p * kThreads + threadIdx.x) * N;
    if (c < H) {
      Pack<T, N> wp;
      if (w != nullptr) wp = *reinterpret_cast<const Pack<T, N>*>(w + c);
      Pack<T, N> y;
#pragma unroll
      for (int i = 0; i < N; ++i)
        y.v[i] = from_float<T>(w != nullptr ? xv[p][i] * rr * to_float(wp.v[i]) : xv[p][i] * rr);
      *reinterpret_cast<Pack<T, N>*>(out + r * out_stride + c) = y;
    }
  }
}

template <typename T>
void rows_forward(const void* src, const int64_t* ids, const void* w, float eps, void* out,
                  int64_t out_stride, int64_t rows, int H, cudaStream_t stream) {
  auto s = static_cast<const T*>(src);
  auto wt = static_cast<const T*>(w);
  auto o = static_cast<T*>(out);
  const int packs = (H / 8 + kThreads - 1) / kThreads;
  const auto grid = static_cast<unsigned>(rows);
  if (packs <= 1)
    rms_norm_rows_kernel<T, 1><<<grid, kThreads, 0, stream>>>(s, ids, wt, eps, o, out_stride, H);
  else if (packs <= 2)
    rms_norm_rows_kernel<T, 2><<<grid, kThreads, 0, stream>>>(s, ids, wt, eps, o, out_stride, H);
  else
    rms_norm_rows_kernel<T, kMaxPacks>
        <<<grid, kThreads, 0, stream>>>(s, ids, wt, eps, o, out_stride, H);
}

// dw[c] = Σ_b partial[b, c], in w's dtype. A block takes 32 columns; its 32 × kSumLanes threads
// each sum every kSumLanes-th row of partials (coalesced across a warp's columns), then the lanes
// are summed through shared memory: many loads in flight instead of one thread per column
// walking all the rows.
constexpr int kSumLanes = 16;

template <typename T>
__global__ void __launch_bounds__(32 * kSumLanes)
    column_sum_kernel(const float* __restrict__ partial, int blocks, int H, T* __restrict__ dw) {
  __shared__ float lanes[kSumLanes][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (c < H)
    for (int b = threadIdx.y; b < blocks; b += kSumLanes)
      s += partial[static_cast<int64_t>(b) * H + c];
  lanes[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < H) {
    float total = 0.f;
#pragma unroll
    for (int l = 0; l < kSumLanes; ++l) total += lanes[l][threadIdx.x];
    dw[c] = from_float<T>(total);
  }
}

template <typename T>
void backward(const void* x, const void* dy, const void* dres, const void* w, float eps, void* dx,
              float* partial, int blocks, void* dw, int64_t rows, int H, cudaStream_t stream) {
  auto xt = static_cast<const T*>(x);
  auto dyt = static_cast<const T*>(dy);
  auto rt = static_cast<const T*>(dres);
  auto wt = static_cast<const T*>(w);
  auto dxt = static_cast<T*>(dx);
  const int packs = (H / 8 + kThreads - 1) / kThreads;
  if (packs <= 1)
    rms_norm_backward_kernel<T, 1>
        <<<blocks, kThreads, 0, stream>>>(xt, dyt, rt, wt, eps, dxt, partial, rows, H);
  else if (packs <= 2)
    rms_norm_backward_kernel<T, 2>
        <<<blocks, kThreads, 0, stream>>>(xt, dyt, rt, wt, eps, dxt, partial, rows, H);
  else
    rms_norm_backward_kernel<T, kMaxPacks>
        <<<blocks, kThreads, 0, stream>>>(xt, dyt, rt, wt, eps, dxt, partial, rows, H);
  column_sum_kernel<T>
      <<<(H + 31) / 32, dim3(32, kSumLanes), 0, stream>>>(partial, blocks, H, static_cast<T*>(dw));
}

// Backward blocks resident at once on the current device for one instantiation: asked of the
// runtime once per device (cached), not on every backward call.
template <typename T, int P>
int64_t resident_backward_blocks() {
  constexpr int kDevices = 64;
  static int cached[kDevices] = {};  // 0: not asked yet
  int device = 0;
  cudaGetDevice(&device);
  int& most = cached[device < kDevices ? device : 0];
  if (most == 0) {
    int sms = 0, per_sm = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, rms_norm_backward_kernel<T, P>, kThreads,
                                                  0);
    most = sms * (per_sm > 0 ? per_sm : 1);
  }
  return most;
}

template <typename T>
int64_t resident_backward_blocks(int H) {
  const int packs = (H / 8 + kThreads - 1) / kThreads;
  if (packs <= 1) return resident_backward_blocks<T, 1>();
  if (packs <= 2) return resident_backward_blocks<T, 2>();
  return resident_backward_blocks<T, kMaxPacks>();
}

}  // namespace

int rms_norm_backward_max_dim() {
  return kMaxPacks * 8 * kThreads;
}

// Blocks for the backward kernel: as many as run at once on the current device (each keeps its
// rows' dw in registers, so a second wave would only lengthen the tail), at most one per row.
int rms_norm_backward_blocks(int64_t rows, int H, bool bf16) {
  const int64_t most =
      bf16 ? resident_backward_blocks<__nv_bfloat16>(H) : resident_backward_blocks<__half>(H);
  return static_cast<int>(rows < most ? (rows > 0 ? rows : 1) : most);
}

// src: contiguous [*, H]; ids: [rows] int64 row indices into src, or null for src's first rows;
// w: [H] or null; out: rows at out + r·out_stride. H a multiple of 8 up to
// rms_norm_backward_max_dim(); src, w, out and out_stride·element size 16-byte aligned.
void launch_rms_norm_rows(const void* src, const int64_t* ids, const void* w, float eps, void* out,
                          int64_t out_stride, int64_t rows, int H, bool bf16, cudaStream_t stream) {
  if (rows == 0) return;
  if (bf16)
    rows_forward<__nv_bfloat16>(src, ids, w, eps, out, out_stride, rows, H, stream);
  else
    rows_forward<__half>(src, ids, w, eps, out, out_stride, rows, H, stream);
}

// x, dy, dx and dres (or null): contiguous [rows, H] (H a multiple of 8, ≤
// rms_norm_backward_max_dim(), 16-byte aligned); w, dw: [H]; partial: fp32 [blocks, H] scratch.
void launch_rms_norm_backward(const void* x, const void* dy, const void* dres, const void* w,
                              float eps, void* dx, float* partial, int blocks, void* dw,
                              int64_t rows, int H, bool bf16, cudaStream_t stream) {
  if (bf16)
    backward<__nv_bfloat16>(x, dy, dres, w, eps, dx, partial, blocks, dw, rows, H, stream);
  else
    backward<__half>(x, dy, dres, w, eps, dx, partial, blocks, dw, rows, H, stream);
}

}  // namespace eaglet::model
