// The training step's assembly: config -> dtype, device, kernels, TTT options, gradient sync.
#include "train/step.h"

#include <utility>

#include <spdlog/spdlog.h>
#include "attention/ring.h"

#include "core/error.h"
#include "core/kernels.h"
#include "dist/device.h"
#include "dist/nvtx.h"
#include "train/optimizer.h"

namespace eaglet::train {

at::ScalarType compute_dtype(const std::string& name, c10::Device device) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float64") return at::kDouble;
  return device.is_cuda() ? at::kBFloat16 : at::kFloat;
}

TrainStep::TrainStep(const Config& cfg, const ProcessGroups& groups, Scope scope)
    : groups_(groups),
      arch_(cfg.model.config),
      device_(groups.device()),
      dtype_(compute_dtype(cfg.runtime.dtype, groups.device())),
      attention_(&attention::local_kernel(cfg.model.attention, groups.device(), dtype_)),
      grad_accum_(cfg.training.grad_accum),
      dp_size_(groups.layout().dp()),
      single_rank_(scope == Scope::single_rank) {
  // One rank alone: a 1 x 1 layout, and the D replicas' micro-batches accumulated here.
  const Layout layout = single_rank_ ? Layout{1, 1, 1} : groups.layout();
  if (single_rank_) grad_accum_ *= std::exchange(dp_size_, 1);
  EAGLET_CHECK(grad_accum_ >= 1, "training.grad_accum {} must be at least 1", grad_accum_);
  ttt_.ttt_length = cfg.training.ttt_length;
  ttt_.dtype = dtype_;
  ttt_.ulysses = single_rank_ ? nullptr : &groups.group(GroupKind::ulysses);
  ttt_.sp = single_rank_ ? nullptr : &groups.group(GroupKind::sp);
  // Block 0: the local kernel on one ring rank, the ring over several; the zigzag layout (rows
  // moved once per sample, attention/ring.h) is decided here and nowhere else.
  const auto balance = attention::ring_balance(cfg.parallel.ring_balance, layout.ulysses);
  const bool ring = layout.ring > 1;
  ttt_.block0 = ring ? attention::ring_block0(groups.group(GroupKind::ring), *attention_, balance)
                     : attention::local_block0(*attention_);
  ttt_.zigzag_layout = ring && balance == attention::RingBalance::zigzag_layout;
  ttt_.loss_chunk = cfg.model.loss_chunk;
  // DESIGN §4: total = Σ_k w_k · loss_k / accumulation steps.
  for (double w : model::step_weights(cfg.training))
    ttt_.loss_weights.push_back(w / static_cast<double>(grad_accum_));
  ttt_.kernels = choose_kernels(device_, dtype_);
  ttt_.mlp_recompute = cfg.model.recompute_mlp      ? model::MlpRecompute::full
                       : cfg.model.recompute_swiglu ? model::MlpRecompute::swiglu
                                                    : model::MlpRecompute::none;
  if (single_rank_) return;  // the reference copy of a check: logged once, by its layout's step
  spdlog::info("step: {} on {}, attention {}, MLP keeps {}, {}; kernels {}", c10::toString(dtype_),
               device_.str(), attention_->name,
               cfg.model.recompute_mlp      ? "nothing (full recompute)"
               : cfg.model.recompute_swiglu ? "gate|up (SwiGLU recomputed)"
                                            : "gate|up and the product",
               ttt_.zigzag_layout ? "zigzag layout" : (ring ? "ring" : "no ring"),
               kernels_text(ttt_.kernels));
}

model::Objective TrainStep::forward(const model::Eagle3Weights& w, const model::LossTarget& target,
                                    data::ShardInput shard) const {
  NvtxRange range("forward");
  return model::ttt_forward(w, arch_, target, std::move(shard), ttt_);
}

model::Objective TrainStep::micro_batch(const model::Eagle3Weights& w,
                                        const model::LossTarget& target,
                                        data::ShardInput shard) const {
  auto obj = forward(w, target, std::move(shard));
  NvtxRange range("backward");
  obj.total.backward();
  return obj;
}

void TrainStep::sync_gradients(AdamW& optimizer) const {
  NvtxRange range("gradient sync");
  optimizer.sync_gradients(single_rank_ ? nullptr : &groups_.group(GroupKind::world), dp_size_);
}

}  // namespace eaglet::train
