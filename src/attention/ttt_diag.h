// The diagonal blocks of the TTT attention (query i of step k against the keys of steps 1..k at
// its own position) and their fp32 log-sum-exp merge with block 0, as a kernel table: the ATen
// reference (every device and dtype) and one fused CUDA kernel each way for bf16/fp16 on the GPU
// (attention/ttt_diag.cu, up to kMaxDiagGroup query heads per KV head), which keeps q·k in fp32
// and never expands K/V to the query heads.
#pragma once

#include <ATen/core/Tensor.h>

#include "core/kernels.h"

namespace eaglet::attention {

struct DiagMerge {
  at::Tensor out;  // [S, H, d], q's dtype: block 0 and the diagonal blocks merged
  at::Tensor lse;  // [S, H], fp32 (fp64 on the fp64 path)
};

// q, out0 [S, H, d]; lse0 [S, H] (block 0's); ks, vs: the diagonal blocks [S, Hkv, d] (steps
// 1..k, at least one). `impl`: Kernels::ttt_diag (fused: q bf16/fp16 on the GPU, taken for a head
// dim up to kMaxHeadDim, at most kMaxDiagBlocks blocks and kMaxDiagGroup query heads per KV head;
// attention/ttt_diag_cuda.h; else the reference).
DiagMerge diag_merge_forward(const at::Tensor& q, const at::Tensor& out0, const at::Tensor& lse0,
                             at::TensorList ks, at::TensorList vs, double scale,
                             Impl impl = Impl::reference);

struct DiagGrads {
  at::Tensor dq;                   // [S, H, d], q's dtype: block 0's dq plus the blocks' part
  std::vector<at::Tensor> dk, dv;  // every block's, in its dtype
};

// Gradients of the diagonal blocks given the merged out and lse; dq0 ([S, H, d], q's dtype) is
// block 0's dq, to which the blocks' part is added in fp32 (fp64 on the fp64 path) before one
// rounding.
DiagGrads diag_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& out,
                        const at::Tensor& lse, at::TensorList ks, at::TensorList vs,
                        const at::Tensor& dq0, double scale, Impl impl = Impl::reference);

}  // namespace eaglet::attention
