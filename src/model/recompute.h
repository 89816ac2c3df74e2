// Activation recomputation in the SwiGLU MLP, whose [tokens × intermediate] activations (gate and
// up outputs, silu(gate), the product) dominate a TTT step's memory. Two levels, both exact (the
// same ops): `swiglu` keeps the gate and up outputs only and recomputes silu and the product in
// backward (two elementwise passes); `full` keeps nothing and reruns the MLP, GEMMs included,
// under autograd in backward.
#pragma once

#include <ATen/core/Tensor.h>

namespace eaglet::model {

enum class MlpRecompute { none, swiglu, full };

// down(silu(gate(n)) ⊙ up(n)) with weights in n's dtype.
at::Tensor swiglu_mlp(const at::Tensor& n, const at::Tensor& gate, const at::Tensor& up,
                      const at::Tensor& down, MlpRecompute recompute);

}  // namespace eaglet::model
