// The SwiGLU MLP, whose [tokens × intermediate] activations dominate a TTT step's memory, with its
// activation recomputation. gate and up run as one GEMM (gate_up = cat(gate, up), [2I, H]); its
// output ab = [tokens, 2I] holds a = gate(n) | b = up(n). One autograd function; three levels of
// what it keeps, all exact (the same kernels): `none` keeps ab and p = silu(a)·b; `swiglu` keeps
// ab only and recomputes p in backward (in the backward kernel's pass over ab); `full` keeps only
// n and reruns the gate|up GEMM too.
#pragma once

#include <ATen/core/Tensor.h>

#include "model/layers.h"

namespace eaglet::model {

enum class MlpRecompute { none, swiglu, full };

// p = silu(a)·b of ab [rows, 2I] (no autograd), and its backward d[a | b] from dp [rows, I].
// `impl` (Kernels::swiglu): reference = ATen (silu, mul, silu_backward; every device and dtype);
// fused = the CUDA kernels (model/swiglu.cu: ab bf16/fp16 on the GPU, fp32 arithmetic, one pass
// each; the backward takes the reference where dp has another dtype than ab).
at::Tensor swiglu_rows(const at::Tensor& ab, Impl impl = Impl::reference);
// With p given, *p = swiglu_rows(ab) too: the fused kernel writes it in the same pass (the
// recomputation for the down weight's gradient).
at::Tensor swiglu_rows_backward(const at::Tensor& dp, const at::Tensor& ab,
                                Impl impl = Impl::reference, at::Tensor* p = nullptr);

// Where the two weights' gradients go (model/layers.h: summed over the TTT steps).
struct MlpGrads {
  WeightGrad gate_up, down;
};

// residual + down(silu(gate(n)) ⊙ up(n)) with n [rows, H], gate_up [2I, H] and down [H, I] in
// n's dtype; residual [rows, H] (added by the down GEMM's epilogue) or undefined; `swiglu`: the
// activation's kernel (Kernels::swiglu).
at::Tensor swiglu_mlp(const at::Tensor& n, const at::Tensor& gate_up, const at::Tensor& down,
                      MlpRecompute recompute, const MlpGrads& grads = {},
                      const at::Tensor& residual = {}, Impl swiglu = Impl::reference);

}  // namespace eaglet::model
