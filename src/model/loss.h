// The per-step Eagle3 loss (DESIGN §4): z = lm_head(h), p = softmax_fp32(target rows · Wtdᵀ),
// per-token loss = logsumexp(z) − Σ p·z, summed over masked rows; plus the number of rows where
// argmax z == argmax p. Fused and chunked: neither z nor p ([rows × Vd]) is kept for backward;
// backward recomputes them chunk by chunk.
#pragma once

#include <ATen/core/Tensor.h>

namespace eaglet::model {

struct LossSums {
  at::Tensor loss;     // scalar, fp32 (fp64 on the fp64 path), differentiable in h and lm_head
  at::Tensor correct;  // scalar, no grad
  at::Tensor count;    // scalar, no grad: Σ mask
};

// h [N, H] (normed, compute dtype), lm_head [Vd, H] (fp32 master; cast to h's dtype), target
// [N, Ht] rows of the target's last hidden states, target_head [Vd, Ht] (the target lm_head's rows
// of the draft vocabulary), mask [N] (0/1). `chunk` rows at a time.
LossSums fused_soft_ce(const at::Tensor& h, const at::Tensor& lm_head, const at::Tensor& target,
                       const at::Tensor& target_head, const at::Tensor& mask, int64_t chunk);

}  // namespace eaglet::model
