// The optimizer step of DESIGN §6 on fp32 master weights: gradient sync (sum over the world, then
// ÷ D: summed over SP ranks, averaged over DP), global-norm clipping, AdamW (β 0.9/0.999, ε 1e-8,
// decoupled weight decay) through LibTorch's fused kernel, and the warm-up + cosine schedule.
// A non-finite gradient norm skips the step (counted); too many in a row stop the run. Nothing in
// the step waits for the device.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "core/config.h"

namespace eaglet {
class Communicator;
}

namespace eaglet::train {

// Learning rate of optimizer step s (0-based) out of `total`: linear warm-up over
// w = floor(warmup_ratio · total) steps (lr·(s+1)/w), then cosine from lr to min_lr.
double learning_rate(const TrainingConfig& t, int64_t step, int64_t total);

struct StepStats {
  double grad_norm = 0;  // before clipping
  double lr = 0;
  bool skipped = false;  // non-finite norm
};

class AdamW {
 public:
  // `params`: the fp32 masters, in a fixed order (the names are the checkpoint keys).
  AdamW(std::vector<std::pair<std::string, at::Tensor*>> params, const TrainingConfig& cfg);

  // All-reduces every gradient over `world` (sum) and divides by `dp_size`; one flat buffer.
  void sync_gradients(Communicator* world, int64_t dp_size);
  // Clips, steps at `lr` and zeroes the gradients without waiting for the device; returns the
  // global gradient norm (before clipping) as a 0-dim fp32 tensor on the device. A non-finite
  // norm makes the fused kernel skip the update (weights, moments and step counts unchanged).
  at::Tensor launch_step(double lr);
  // The launched step's statistics from its norm, read back with the step's other metrics (one
  // host sync per step): counts the skipped steps, throws after too many in a row.
  StepStats account(double grad_norm, double lr);
  // launch_step, then account with the norm read back at once.
  StepStats step(double lr);
  void zero_grad();

  int64_t steps_taken() const { return steps_; }
  int64_t skipped_total() const { return skipped_total_; }
  // State for checkpoints: "exp_avg.<name>", "exp_avg_sq.<name>" and "step".
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                  const std::string& where);

 private:
  std::vector<std::pair<std::string, at::Tensor*>> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_, step_count_;
  TrainingConfig cfg_;
  int64_t steps_ = 0, skipped_total_ = 0, skipped_in_row_ = 0;
};

}  // namespace eaglet::train
