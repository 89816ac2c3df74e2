// Activation recomputation for the longest sequences: the SwiGLU MLP run without keeping its
// [tokens × intermediate] activations for backward (four of them per TTT step); backward reruns the
// forward under autograd and differentiates it. Exact: the same ops in the same order.
#pragma once

#include <ATen/core/Tensor.h>

namespace eaglet::model {

// down(silu(gate(n)) ⊙ up(n)) with weights in n's dtype; when `recompute` is false, the plain
// autograd version.
at::Tensor swiglu_mlp(const at::Tensor& n, const at::Tensor& gate, const at::Tensor& up,
                      const at::Tensor& down, bool recompute);

}  // namespace eaglet::model
