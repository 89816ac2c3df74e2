// The fused loss rows on the GPU (model/soft_ce_rows.h): one block per row, two sweeps over the
// row (the second mostly from L2). Sweep 1: online log-sum-exp of z, Σ p·z with
// p = exp(logits − lse), and argmax z (first index on ties, as ATen's argmax); sweep 2 writes
// dz = (exp(z − lse_z) − p)·mask over z. All arithmetic in fp32; the per-element exponentials
// through the SFU (__expf: 2^(x·log2 e), relative error about 2 + 1.2·|x| ulp, ≤ 3e-6 for the
// x ≥ −30 that carry weight in these sums; rescaling and merging keep expf). Rows whose length,
// stride and addresses allow it move 8 elements per load and store (16 bytes); others one at a
// time. Also here: the target rows' lse and argmax (the same online sweep, no second pass), the
// target side of a chunk from its full-vocabulary logits (the full argmax, the draft columns
// copied by id through shared memory, their lse and argmax), and scaling a tensor in place by a
// scalar that lives on the device.
#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cstdint>

#include "core/cuda_half.cuh"

namespace eaglet::model {
namespace {

constexpr int kThreads = 512;

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

__device__ __forceinline__ Partial empty_partial() {
  return {-INFINITY, 0.f, 0.f, -INFINITY, INT_MAX};
}

// The online log-sum-exp and argmax over N values at indices j..j+N-1 (j grows per thread, so
// the first maximum stays).
template <int N>
__device__ __forceinline__ void accumulate(Partial& acc, const float (&zv)[N], int64_t j) {
  float m = zv[0];
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if (zv[i] > acc.best) {
      acc.best = zv[i];
      acc.best_index = static_cast<int>(j + i);
    }
    m = fmaxf(m, zv[i]);
  }
  if (m > acc.max) {  // rescale once per pack
    acc.sum = acc.sum == 0.f ? 0.f : acc.sum * expf(acc.max - m);
    acc.max = m;
  }
#pragma unroll
  for (int i = 0; i < N; ++i) acc.sum += __expf(zv[i] - acc.max);
}

// The block's partials combined; the result is valid in thread 0.
__device__ __forceinline__ Partial block_reduce(Partial acc) {
  for (int offset = 16; offset > 0; offset /= 2) acc = combine(acc, shuffle_down(acc, offset));
  __shared__ Partial warps[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warps[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < kThreads / 32 ? warps[lane] : empty_partial();
    for (int offset = 16; offset > 0; offset /= 2) acc = combine(acc, shuffle_down(acc, offset));
  }
  return acc;
}

// N consecutive elements of the row at element j into fp32 (N = 1 or 8).
template <typename T, int N>
__device__ __forceinline__ void load(float (&dst)[N], const T* row, int64_t j) {
  const auto p = *reinterpret_cast<const Pack<T, N>*>(row + j);
#pragma unroll
  for (int i = 0; i < N; ++i) dst[i] = to_float(p.v[i]);
}

template <typename T, int N>
__global__ void __launch_bounds__(kThreads)
    soft_ce_rows_kernel(T* __restrict__ z, const T* __restrict__ logits, int64_t logits_stride,
                        const float* __restrict__ lse, const float* __restrict__ mask,
                        float* __restrict__ loss, int64_t* __restrict__ argmax, int64_t vocab) {
  const int64_t row = blockIdx.x;
  T* zr = z + row * vocab;
  const T* tr = logits + row * logits_stride;
  const float t_lse = lse[row];

  Partial acc = empty_partial();
  for (int64_t j = threadIdx.x * N; j < vocab; j += kThreads * N) {
    float zv[N], tv[N];
    load<T, N>(zv, zr, j);
    load<T, N>(tv, tr, j);
#pragma unroll
    for (int i = 0; i < N; ++i) acc.pz += __expf(tv[i] - t_lse) * zv[i];
    accumulate<N>(acc, zv, j);
  }
  acc = block_reduce(acc);
  __shared__ float row_lse;
  if (threadIdx.x == 0) {
    const float l = acc.max + logf(acc.sum);
    row_lse = l;
    loss[row] = l - acc.pz;
    argmax[row] = acc.best_index;
  }
  __syncthreads();
  const float l = row_lse, msk = mask[row];
  for (int64_t j = threadIdx.x * N; j < vocab; j += kThreads * N) {
    float zv[N], tv[N];
    load<T, N>(zv, zr, j);
    load<T, N>(tv, tr, j);
    Pack<T, N> out;
#pragma unroll
    for (int i = 0; i < N; ++i)
      out.v[i] = from_float<T>((__expf(zv[i] - l) - __expf(tv[i] - t_lse)) * msk);
    *reinterpret_cast<Pack<T, N>*>(zr + j) = out;
  }
}

// The target side's rows: lse (fp32) and argmax (first index on ties) of each row of logits.
template <typename T, int N>
__global__ void __launch_bounds__(kThreads)
    lse_argmax_kernel(const T* __restrict__ logits, int64_t stride, float* __restrict__ lse,
                      int64_t* __restrict__ argmax, int64_t vocab) {
  const int64_t row = blockIdx.x;
  const T* lr = logits + row * stride;
  Partial acc = empty_partial();
  for (int64_t j = threadIdx.x * N; j < vocab; j += kThreads * N) {
    float v[N];
    load<T, N>(v, lr, j);
    accumulate<N>(acc, v, j);
  }
  acc = block_reduce(acc);
  if (threadIdx.x == 0) {
    lse[row] = acc.max + logf(acc.sum);
    argmax[row] = acc.best_index;
  }
}

// The target side of a chunk, one row per block, the row read once in tiles of kThreads·N
// elements: each thread's N elements give the full row's argmax (the index searched only where a
// pack's maximum beats the thread's best; first index on ties) and land in a shared-memory tile;
// then the draft columns whose target ids fall in the tile are walked by id (`order`: target ids
// ascending, then their draft columns), copied into `draft` and folded into their lse and argmax
// (first draft column on ties). Each tile's first entry in `order` is found once per block by a
// binary search per tile. Two tile buffers: one barrier per tile.
template <typename T, int N>
__global__ void __launch_bounds__(kThreads)
    target_side_kernel(const T* __restrict__ full, int64_t full_stride,
                       const int* __restrict__ order, int draft_vocab, const bool* __restrict__ t2d,
                       T* __restrict__ draft, int64_t draft_stride, float* __restrict__ lse,
                       int64_t* __restrict__ argmax, bool* __restrict__ in_draft, int64_t vocab) {
  constexpr int kTile = kThreads * N;
  __shared__ Pack<T, N> tile[2][kThreads];
  extern __shared__ int tile_start[];  // [tiles + 1]: first entry of `order` in each tile
  const int* ids = order;
  const int* cols = order + draft_vocab;
  const int tiles = static_cast<int>((vocab + kTile - 1) / kTile);
  for (int k = threadIdx.x; k <= tiles; k += kThreads) {
    const int64_t bound = static_cast<int64_t>(k) * kTile;
    int lo = 0, hi = draft_vocab;  // first id >= bound
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (ids[mid] < bound)
        lo = mid + 1;
      else
        hi = mid;
    }
    tile_start[k] = lo;
  }
  const int64_t row = blockIdx.x;
  const T* fr = full + row * full_stride;
  T* dr = draft + row * draft_stride;
  Partial all = empty_partial(), acc = empty_partial();  // all: only its argmax is used
  for (int k = 0; k < tiles; ++k) {
    const int64_t t0 = static_cast<int64_t>(k) * kTile, j = t0 + threadIdx.x * N;
    if (j < vocab) {  // N = 8 only when vocab % 8 == 0: whole packs
      const auto p = *reinterpret_cast<const Pack<T, N>*>(fr + j);
      tile[k % 2][threadIdx.x] = p;
      float m = to_float(p.v[0]);
#pragma unroll
      for (int i = 1; i < N; ++i) m = fmaxf(m, to_float(p.v[i]));
      if (m > all.best) {
        int first = N;
#pragma unroll
        for (int i = N - 1; i >= 0; --i)
          if (to_float(p.v[i]) == m) first = i;
        all.best = m;
        all.best_index = static_cast<int>(j + first);
      }
    }
    __syncthreads();  // the tile is in; the buffer written next was read before this barrier
    const T* tv = tile[k % 2][0].v;
    for (int e = tile_start[k] + threadIdx.x; e < tile_start[k + 1]; e += kThreads) {
      const int c = cols[e];
      const T x = tv[ids[e] - t0];
      dr[c] = x;
      const float v = to_float(x);
      if (v > acc.best || (v == acc.best && c < acc.best_index)) {
        acc.best = v;
        acc.best_index = c;
      }
      if (v > acc.max) {
        acc.sum = acc.sum == 0.f ? 0.f : acc.sum * expf(acc.max - v);
        acc.max = v;
      }
      acc.sum += __expf(v - acc.max);
    }
  }
  all = block_reduce(all);
  __shared__ int full_best;
  if (threadIdx.x == 0) full_best = all.best_index == INT_MAX ? 0 : all.best_index;
  __syncthreads();  // block_reduce's shared partials are reused below
  acc = block_reduce(acc);
  if (threadIdx.x == 0) {
    lse[row] = acc.max + logf(acc.sum);
    argmax[row] = acc.best_index;
    in_draft[row] = t2d[full_best];
  }
}

// x[i] *= *g for n elements, N per thread and step (x aligned for Pack<T, N> when N > 1).
template <typename T, int N>
__global__ void scale_kernel(T* __restrict__ x, const float* __restrict__ g, int64_t n) {
  const float s = *g;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * N;
  for (int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * N; j < n;
       j += stride) {
    auto p = *reinterpret_cast<Pack<T, N>*>(x + j);
#pragma unroll
    for (int i = 0; i < N; ++i) p.v[i] = from_float<T>(to_float(p.v[i]) * s);
    *reinterpret_cast<Pack<T, N>*>(x + j) = p;
  }
}

template <typename T>
void launch_rows(void* z, const void* logits, int64_t logits_stride, const float* lse,
                 const float* mask, float* loss, int64_t* argmax, int64_t rows, int64_t vocab,
                 cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(rows)), block(kThreads);
  auto zt = static_cast<T*>(z);
  auto lt = static_cast<const T*>(logits);
  const bool packed = vocab % 8 == 0 && logits_stride % 8 == 0 && pack_aligned<T, 8>(z) &&
                      pack_aligned<T, 8>(logits);
  if (packed)
    soft_ce_rows_kernel<T, 8>
        <<<grid, block, 0, stream>>>(zt, lt, logits_stride, lse, mask, loss, argmax, vocab);
  else
    soft_ce_rows_kernel<T, 1>
        <<<grid, block, 0, stream>>>(zt, lt, logits_stride, lse, mask, loss, argmax, vocab);
}

template <typename T>
void launch_lse_argmax_t(const void* logits, int64_t stride, float* lse, int64_t* argmax,
                         int64_t rows, int64_t vocab, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(rows)), block(kThreads);
  auto lt = static_cast<const T*>(logits);
  if (vocab % 8 == 0 && stride % 8 == 0 && pack_aligned<T, 8>(logits))
    lse_argmax_kernel<T, 8><<<grid, block, 0, stream>>>(lt, stride, lse, argmax, vocab);
  else
    lse_argmax_kernel<T, 1><<<grid, block, 0, stream>>>(lt, stride, lse, argmax, vocab);
}

template <typename T, int N>
void launch_target_side_n(const T* full, int64_t full_stride, const int* order, int draft_vocab,
                          const bool* t2d, T* draft, int64_t draft_stride, float* lse,
                          int64_t* argmax, bool* in_draft, int64_t rows, int64_t vocab,
                          cudaStream_t stream) {
  const int64_t tiles = (vocab + kThreads * N - 1) / (kThreads * N);
  const size_t shared = static_cast<size_t>(tiles + 1) * sizeof(int);
  target_side_kernel<T, N><<<dim3(static_cast<unsigned>(rows)), dim3(kThreads), shared, stream>>>(
      full, full_stride, order, draft_vocab, t2d, draft, draft_stride, lse, argmax, in_draft,
      vocab);
}

template <typename T>
void launch_target_side_t(const void* full, int64_t full_stride, const int* order, int draft_vocab,
                          const bool* t2d, void* draft, int64_t draft_stride, float* lse,
                          int64_t* argmax, bool* in_draft, int64_t rows, int64_t vocab,
                          cudaStream_t stream) {
  auto ft = static_cast<const T*>(full);
  auto dt = static_cast<T*>(draft);
  if (vocab % 8 == 0 && full_stride % 8 == 0 && pack_aligned<T, 8>(full))
    launch_target_side_n<T, 8>(ft, full_stride, order, draft_vocab, t2d, dt, draft_stride, lse,
                               argmax, in_draft, rows, vocab, stream);
  else
    launch_target_side_n<T, 1>(ft, full_stride, order, draft_vocab, t2d, dt, draft_stride, lse,
                               argmax, in_draft, rows, vocab, stream);
}

template <typename T>
void launch_scale_t(void* x, const float* g, int64_t n, cudaStream_t stream) {
  constexpr int kBlock = 256;
  auto xt = static_cast<T*>(x);
  const bool packed = n % 8 == 0 && pack_aligned<T, 8>(x);
  const int64_t per_thread = packed ? 8 : 1;
  const int64_t blocks = (n / per_thread + kBlock - 1) / kBlock;
  const dim3 grid(static_cast<unsigned>(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096));
  if (packed)
    scale_kernel<T, 8><<<grid, kBlock, 0, stream>>>(xt, g, n);
  else
    scale_kernel<T, 1><<<grid, kBlock, 0, stream>>>(xt, g, n);
}

}  // namespace

void launch_soft_ce_rows(void* z, const void* logits, int64_t logits_stride, const float* lse,
                         const float* mask, float* loss, int64_t* argmax, int64_t rows,
                         int64_t vocab, bool bf16, cudaStream_t stream) {
  if (bf16)
    launch_rows<__nv_bfloat16>(z, logits, logits_stride, lse, mask, loss, argmax, rows, vocab,
                               stream);
  else
    launch_rows<__half>(z, logits, logits_stride, lse, mask, loss, argmax, rows, vocab, stream);
}

void launch_lse_argmax(const void* logits, int64_t stride, float* lse, int64_t* argmax,
                       int64_t rows, int64_t vocab, bool bf16, cudaStream_t stream) {
  if (bf16)
    launch_lse_argmax_t<__nv_bfloat16>(logits, stride, lse, argmax, rows, vocab, stream);
  else
    launch_lse_argmax_t<__half>(logits, stride, lse, argmax, rows, vocab, stream);
}

void launch_target_side(const void* full, int64_t full_stride, const int* order, int draft_vocab,
                        const bool* t2d, void* draft, int64_t draft_stride, float* lse,
                        int64_t* argmax, bool* in_draft, int64_t rows, int64_t vocab, bool bf16,
                        cudaStream_t stream) {
  if (bf16)
    launch_target_side_t<__nv_bfloat16>(full, full_stride, order, draft_vocab, t2d, draft,
                                        draft_stride, lse, argmax, in_draft, rows, vocab, stream);
  else
    launch_target_side_t<__half>(full, full_stride, order, draft_vocab, t2d, draft, draft_stride,
                                 lse, argmax, in_draft, rows, vocab, stream);
}

void launch_scale(void* x, const float* g, int64_t n, bool bf16, cudaStream_t stream) {
  if (bf16)
    launch_scale_t<__nv_bfloat16>(x, g, n, stream);
  else
    launch_scale_t<__half>(x, g, n, stream);
}

}  // namespace eaglet::model
