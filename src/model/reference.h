// The plain fp64 reference of the Eagle3 TTT unroll (DESIGN §4) on one whole sample (P = 1),
// written independently of the fast path: dense attention masks over every cached key, full
// softmax losses, HF's RoPE formula, autograd for gradients. What verify-usp and the model tests
// compare the training path against.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "core/config.h"
#include "data/batch.h"
#include "model/eagle3.h"

namespace eaglet::model {

struct ReferenceResult {
  std::vector<double> loss_k;  // normalised per-step losses: sum_k / max(N_k, 1)
  at::Tensor total;            // Σ_k weights[k] · loss_k, differentiable in the fp64 leaves
  // Step k's unnormalised loss sum (differentiable) and masked-row count N_k: what a packed
  // sample's reference combines over its documents with their joint counts.
  std::vector<at::Tensor> sum_k;
  std::vector<double> count_k;
  // Each step's draft logits z = lm_head(norm(h)) [C, Vd], fp64, detached; only with keep_logits
  // (what tests/eval compares an inference-side forward against).
  std::vector<at::Tensor> logits_k;
};

// fp64 leaves (requires_grad) of the trainable weights, by SGLang name, on w's device.
std::map<std::string, at::Tensor> fp64_leaves(const Eagle3Weights& w);

// HF's rotate-half RoPE of x [S, heads, d] at int64 positions [S] (rope_type none), in fp64.
at::Tensor reference_rope(const at::Tensor& x, const at::Tensor& pos, const DraftArchConfig& c);

// `w`: fp64 leaves (fp64_leaves); `embed`: the frozen embedding; `in`: the whole sample as one
// shard (C + T rows, positions 0..C−1). Needs rope_type none. Any device. keep_logits: also
// return each step's logits (ReferenceResult::logits_k).
ReferenceResult reference_unroll(const DraftArchConfig& c, std::map<std::string, at::Tensor>& w,
                                 const at::Tensor& embed, const LossTarget& target,
                                 const data::ShardInput& in, int64_t T,
                                 const std::vector<double>& weights, bool keep_logits = false);

}  // namespace eaglet::model
