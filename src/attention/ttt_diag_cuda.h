// The launchers of attention/ttt_diag.cu, shared by it and ttt_diag.cpp (no LibTorch here).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace eaglet::attention {

constexpr int kMaxDiagBlocks = 31;  // TTT length up to 32
constexpr int kMaxHeadDim = 256;
constexpr int kMaxDiagGroup = 8;  // query heads per KV head held by one warp

// The diagonal blocks' K/V (and, backward, their gradients): contiguous [S, Hkv, d] each.
struct DiagPointers {
  const void* k[kMaxDiagBlocks];
  const void* v[kMaxDiagBlocks];
  void* dk[kMaxDiagBlocks];
  void* dv[kMaxDiagBlocks];
  int count;
};

// q, out0, out: contiguous [S, H, d]; lse0, lse: [S, H] fp32.
void launch_diag_forward(const void* q, const void* out0, const float* lse0,
                         const DiagPointers& blocks, void* out, float* lse, int64_t S, int H,
                         int KV, int d, float scale, bool bf16, cudaStream_t stream);
// dout, q, out: contiguous [S, H, d]; lse [S, H] fp32; dq0: block 0's dq, [S, H, d] with row
// and head strides given (d contiguous); dq = dq0 + the blocks' part, contiguous [S, H, d]. All
// in the compute dtype.
void launch_diag_backward(const void* dout, const void* q, const void* out, const float* lse,
                          const void* dq0, int64_t dq0_row, int64_t dq0_head,
                          const DiagPointers& blocks, void* dq, int64_t S, int H, int KV, int d,
                          float scale, bool bf16, cudaStream_t stream);

}  // namespace eaglet::attention
