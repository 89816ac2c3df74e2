// Gradient sync, clipping, AdamW and the learning-rate schedule.
#include "train/optimizer.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_foreach_sub.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/logical_not.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <optional>

#include "core/error.h"
#include "core/tensor_text.h"
#include "dist/communicator.h"
#include "dist/nvtx.h"

namespace eaglet::train {

double learning_rate(const TrainingConfig& t, int64_t step, int64_t total) {
  total = std::max<int64_t>(total, 1);
  const auto warmup = static_cast<int64_t>(std::floor(t.warmup_ratio * static_cast<double>(total)));
  if (step < warmup) return t.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (total <= warmup) return t.lr;
  double progress = std::clamp(
      static_cast<double>(step - warmup) / static_cast<double>(total - warmup), 0.0, 1.0);
  return t.min_lr + 0.5 * (1.0 + std::cos(M_PI * progress)) * (t.lr - t.min_lr);
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor*>> params, const TrainingConfig& cfg)
    : params_(std::move(params)), cfg_(cfg) {
  for (auto& [name, p] : params_) {
    EAGLET_CHECK(p->scalar_type() == at::kFloat, "AdamW: master weight {} is {}, expected fp32",
                 name, tensor_text(*p));
    exp_avg_.push_back(at::zeros_like(*p));
    exp_avg_sq_.push_back(at::zeros_like(*p));
    step_count_.push_back(at::zeros({}, p->options()));
  }
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_) p->mutable_grad() = at::Tensor();
}

void AdamW::sync_gradients(Communicator* world, int64_t dp_size) {
  std::vector<at::Tensor> flat;
  for (auto& [name, p] : params_) {
    if (!p->grad().defined()) p->mutable_grad() = at::zeros_like(*p);
    flat.push_back(p->grad().view({-1}));
  }
  if ((world == nullptr || world->size() == 1) && dp_size == 1) return;  // nothing to sum or scale
  auto buffer = at::cat(flat);
  if (world != nullptr && world->size() > 1) world->all_reduce(buffer, ReduceOp::sum);
  if (dp_size > 1) buffer.div_(static_cast<double>(dp_size));
  int64_t offset = 0;
  for (auto& [name, p] : params_) {
    const int64_t n = p->numel();
    p->mutable_grad().copy_(buffer.narrow(0, offset, n).view_as(*p));
    offset += n;
  }
}

at::Tensor AdamW::launch_step(double lr) {
  NvtxRange range("clip + AdamW");
  c10::NoGradGuard no_grad;
  std::vector<at::Tensor> params, grads;
  for (auto& [name, p] : params_) {
    if (!p->grad().defined()) p->mutable_grad() = at::zeros_like(*p);
    params.push_back(*p);
    grads.push_back(p->grad());
  }
  // Everything on the device, nothing waited for: the per-tensor norms and the step counts are
  // one multi-tensor launch each on the GPU, the skip (found_inf: a non-finite norm leaves
  // weights, moments and step counts as they were) and the clipping (grad_scale: the fused kernel
  // divides each gradient as it reads it, no separate pass) are device scalars.
  auto norm = at::stack(at::_foreach_norm(grads)).norm();
  auto found_inf = at::logical_not(at::isfinite(norm)).to(at::kFloat);
  std::optional<at::Tensor> divide_by;
  if (cfg_.max_grad_norm > 0)
    divide_by = at::where(norm > cfg_.max_grad_norm, (norm + 1e-6) / cfg_.max_grad_norm, 1.0);
  at::_foreach_add_(step_count_, 1);  // the fused kernel reads, not bumps, the step
  at::_fused_adamw_(params, grads, exp_avg_, exp_avg_sq_, {}, step_count_, lr, 0.9, 0.999,
                    cfg_.weight_decay, 1e-8,
                    /*amsgrad=*/false, /*maximize=*/false, divide_by, found_inf);
  at::_foreach_sub_(step_count_, std::vector<at::Tensor>(step_count_.size(), found_inf));
  zero_grad();
  return norm;
}

StepStats AdamW::account(double grad_norm, double lr) {
  StepStats s;
  s.grad_norm = grad_norm;
  s.lr = lr;
  if (std::isfinite(grad_norm)) {
    skipped_in_row_ = 0;
    ++steps_;
    return s;
  }
  s.skipped = true;
  ++skipped_total_;
  constexpr int64_t kMaxInRow = 10;
  EAGLET_CHECK(
      ++skipped_in_row_ < kMaxInRow,
      "{} optimizer steps in a row had a non-finite gradient norm; stopping. Their samples are "
      "named in the warnings above; hidden states are checked for NaN/Inf when read, so the "
      "cause is in training (a too high training.lr, an unstable init_from) or in the target's "
      "lm_head/embeddings",
      skipped_in_row_);
  return s;
}

StepStats AdamW::step(double lr) {
  return account(launch_step(lr).item<double>(), lr);
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].first, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
    out.emplace_back("step." + params_[i].first, step_count_[i]);
  }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::string& where) {
  auto find = [&](const std::string& key) -> const at::Tensor& {
    for (const auto& [k, t] : tensors)
      if (k == key) return t;
    EAGLET_FAIL("{}: optimizer state {} is missing", where, key);
  };
  c10::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& name = params_[i].first;
    for (auto [prefix, dst] :
         {std::pair{"exp_avg.", &exp_avg_[i]}, {"exp_avg_sq.", &exp_avg_sq_[i]}}) {
      const auto& src = find(prefix + name);
      EAGLET_CHECK(src.sizes() == dst->sizes(),
                   "{}: optimizer state {}{} is {}, the model needs {}", where, prefix, name,
                   tensor_text(src), tensor_text(*dst));
      dst->copy_(src);
    }
    step_count_[i].copy_(find("step." + name).reshape({}));
  }
  steps_ = static_cast<int64_t>(step_count_.empty() ? 0 : step_count_[0].item<double>());
}

}  // namespace eaglet::train
