// The one place a config becomes the training step (DESIGN §4-6): compute dtype and device, the
// kernel choice, the TTT options (block 0 local or ring, the zigzag layout, loss chunk, MLP
// recomputation, step weights ÷ accumulation) and the gradient sync (sum over SP, mean over DP).
// `eaglet train`, `eaglet bench` and `eaglet verify-usp` build their step here and run it through
// micro_batch() and sync_gradients(), so the checks run exactly what training runs.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "attention/local_attention.h"
#include "core/config.h"
#include "data/batch.h"
#include "dist/process_groups.h"
#include "model/eagle3.h"

namespace eaglet::train {

class AdamW;

// Compute dtype of runtime.dtype on a device (auto: bf16 on CUDA, fp32 on CPU).
at::ScalarType compute_dtype(const std::string& name, c10::Device device);

class TrainStep {
 public:
  // layout: the run's U x R x D. single_rank: the same step (dtype, kernels, recomputation, loss
  // chunk, weights) on this rank alone, as a 1 x 1 run accumulating all D x grad_accum
  // micro-batches: what verify-usp compares a layout with in the compute dtype (DESIGN §5).
  enum class Scope { layout, single_rank };
  // Every choice is made here, once; the groups must outlive the step.
  TrainStep(const Config& cfg, const ProcessGroups& groups, Scope scope = Scope::layout);

  c10::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  const attention::LocalKernel& attention_kernel() const { return *attention_; }
  // The options every unroll of this run uses (forward only for evaluation, under NoGradGuard).
  const model::TttOptions& ttt() const { return ttt_; }
  const DraftArchConfig& arch() const { return arch_; }
  int64_t grad_accum() const { return grad_accum_; }
  int64_t dp_size() const { return dp_size_; }

  // The forward of one micro-batch (its Objective's total is what micro_batch differentiates).
  model::Objective forward(const model::Eagle3Weights& w, const model::LossTarget& target,
                           data::ShardInput shard) const;
  // Forward and backward of one micro-batch: the weights' gradients grow by ∂(Σ_k w_k · loss_k /
  // grad_accum) over this SP group's sample. Collective over the SP group (and Ulysses, ring).
  model::Objective micro_batch(const model::Eagle3Weights& w, const model::LossTarget& target,
                               data::ShardInput shard) const;
  // After the step's micro-batches: every gradient summed over the world and divided by the DP
  // size (summed over SP ranks, averaged over replicas). Collective over the world.
  void sync_gradients(AdamW& optimizer) const;

 private:
  const ProcessGroups& groups_;
  DraftArchConfig arch_;
  c10::Device device_;
  at::ScalarType dtype_;
  const attention::LocalKernel* attention_;
  model::TttOptions ttt_;
  int64_t grad_accum_ = 1, dp_size_ = 1;
  bool single_rank_ = false;
};

}  // namespace eaglet::train
