// The per-step Eagle3 loss (DESIGN §4): z = lm_head(h), p = softmax_fp32(target rows · Wtdᵀ),
// per-token loss = logsumexp(z) − Σ p·z, summed over masked rows; plus the number of rows where
// argmax z == argmax p. The target side (p's logits, log-sum-exp, argmax) is computed once per
// shard and shared by every TTT step, whose rows are shifted windows of the same target rows.
// The draft side is fused and chunked, Liger-style: forward computes, chunk by chunk, the loss and
// the gradients of the step's weighted loss (d loss_i / d z_i = softmax(z_i) − p_i, times the
// step's weight; dh = dz·W, dW = dzᵀ·h), so neither z nor p ([rows × Vd]) is kept and backward
// only scales the kept gradients by the upstream gradient.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "core/kernels.h"
#include "model/layers.h"

namespace eaglet::model {

struct LossSums {
  at::Tensor weighted;  // scalar: weight · loss, differentiable in h and lm_head
  at::Tensor loss;      // scalar, fp32 (fp64 on the fp64 path), no grad: Σ mask · loss_i
  at::Tensor correct;   // scalar, no grad: Σ mask · [argmax z == argmax p]
};

// The target distribution over the draft vocabulary for a run of rows, no grad.
struct TargetRows {
  at::Tensor logits;    // [N, Vd], compute dtype: rows · Wtdᵀ (p = exp(logits − lse))
  at::Tensor lse;       // [N], fp32 (fp64 on the fp64 path)
  at::Tensor argmax;    // [N], int64: argmax p
  at::Tensor in_draft;  // [N], bool: the argmax over the full target vocabulary is a draft token
  TargetRows narrow(int64_t start, int64_t length) const;
};

// rows [N, Ht], full_head [Vt, Ht], draft_ids [Vd] (target id of each draft token), order
// [2, Vd] (draft_order: the ids ascending, their columns), t2d [Vt]: `chunk` rows at a time, one
// GEMM against the full head per chunk in the rows' dtype (the stored hidden states'); the draft
// vocabulary's logits are its draft_ids columns, kept in `dtype` (the compute dtype). `impl`:
// Kernels::target_rows (model/soft_ce_rows.h, target_side_rows).
TargetRows target_rows(const at::Tensor& rows, const at::Tensor& full_head,
                       const at::Tensor& draft_ids, const at::Tensor& order, const at::Tensor& t2d,
                       int64_t chunk, at::ScalarType dtype, Impl impl = Impl::reference);

// `rows` consecutive target rows from row `target` on.
struct RowSpan {
  int64_t target = 0, rows = 0;
};

// The draft side of one unroll's losses, one step at a time. Every step's dW = dzᵀ·h is added,
// already weighted, into lm_head's WeightGrad (model/layers.h: one [Vd, H] buffer for the unroll,
// fp32 for a bf16/fp16 h; the sum over chunks and steps is the GEMMs' own accumulation), and the
// last step's backward scales it by the upstream gradient: one use of the WeightGrad, whose sum
// reaches the fp32 master through to_compute's backward (or is returned, for a plain lm_head).
// That is exact because the weighted losses are differentiated only through their sum (ttt_forward
// returns nothing else differentiable), which hands every step the same upstream gradient.
class FusedLoss {
 public:
  // lm_head [Vd, H] (cast to h's dtype inside) and where its gradient goes (one use). `rows` and
  // `scale`: Kernels::soft_ce_rows and Kernels::scale (model/soft_ce_rows.h).
  FusedLoss(at::Tensor lm_head, int64_t chunk, WeightGrad grad = {}, Impl rows = Impl::reference,
            Impl scale = Impl::reference);
  // h [N, H] (normed, compute dtype); its rows pair with the target rows of `spans` in order
  // (Σ rows = N); mask [N] (0/1), weight: a scalar tensor on h's device (the step's factor in the
  // objective). `last`: the unroll's last step, whose backward returns the summed dW.
  LossSums step(const at::Tensor& h, const TargetRows& target, const std::vector<RowSpan>& spans,
                const at::Tensor& mask, const at::Tensor& weight, bool last);

 private:
  at::Tensor lm_head_;
  int64_t chunk_;
  WeightGrad grad_;  // Σ over the steps so far of weight · dW
  Impl rows_, scale_;
};

}  // namespace eaglet::model
