// The masters' flat gradient buffer and its sinks (model/grad_buffer.h).
#include "model/grad_buffer.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include "core/error.h"
#include "core/tensor_text.h"

namespace eaglet::model {

void GradSink::accumulate(const at::Tensor& g) {
  EAGLET_CHECK(g.sizes() == region_.sizes(), "gradient {} for a sink of {}", tensor_text(g),
               tensor_text(region_));
  if (fresh())
    region_.copy_(g);
  else
    region_.add_(g.to(region_.scalar_type()));
  mark_written();
}

void GradSink::save(torch::autograd::AutogradContext* ctx, const std::string& key) const {
  ctx->saved_data[key + ".region"] = region_;
  ctx->saved_data[key + ".state"] = state_;
}

GradSink GradSink::load(torch::autograd::AutogradContext* ctx, const std::string& key) {
  auto region = ctx->saved_data.find(key + ".region");
  if (region == ctx->saved_data.end() || !region->second.isTensor()) return {};
  return {region->second.toTensor(), ctx->saved_data.at(key + ".state").toIntList()};
}

GradBuffer::GradBuffer(std::vector<std::pair<std::string, at::Tensor*>> masters)
    : masters_(std::move(masters)) {
  EAGLET_CHECK(!masters_.empty(), "a gradient buffer of no weights");
  int64_t total = 0;
  for (const auto& [name, p] : masters_) {
    EAGLET_CHECK(p->scalar_type() == at::kFloat && p->device() == masters_[0].second->device(),
                 "gradient buffer: master {} is {} on {}, expected fp32 on {}", name,
                 tensor_text(*p), p->device().str(), masters_[0].second->device().str());
    offsets_.push_back(total);
    total += p->numel();
  }
  flat_ = at::zeros({total}, masters_[0].second->options().requires_grad(false));
  for (size_t i = 0; i < masters_.size(); ++i) {
    auto* p = masters_[i].second;
    views_.push_back(flat_.narrow(0, offsets_[i], p->numel()).view(p->sizes()));
    p->mutable_grad() = views_.back();
  }
  in_sink_.assign(masters_.size(), false);
}

GradSink GradBuffer::sink(at::TensorList masters) {
  size_t first = 0;
  while (first < masters_.size() && !masters_[first].second->is_same(masters[0])) ++first;
  if (first + masters.size() > masters_.size()) return {};
  int64_t rows = 0;
  for (size_t j = 0; j < masters.size(); ++j) {
    const auto& m = *masters_[first + j].second;
    if (!m.is_same(masters[j]) || m.dim() != masters[0].dim() ||
        (masters.size() > 1 && (m.dim() != 2 || m.size(1) != masters[0].size(1))))
      return {};
    rows += m.size(0);
  }
  for (const auto& [at_master, s] : sinks_)
    if (at_master == static_cast<int64_t>(first)) return s;
  for (size_t j = first; j < first + masters.size(); ++j) {
    EAGLET_CHECK(!in_sink_[j], "gradient buffer: {} is already in another sink",
                 masters_[j].first);
    in_sink_[j] = true;
  }
  int64_t numel = 0;
  for (const auto& m : masters) numel += m.numel();
  auto region = flat_.narrow(0, offsets_[first], numel);
  region = masters.size() == 1 ? region.view(masters[0].sizes())
                               : region.view({rows, masters[0].size(1)});
  // Fresh unless an earlier writer (autograd's accumulation, before this sink existed) left a
  // sum there this step: the buffer starts zeroed, so a first sink adding to zeros is right too.
  GradSink s(region, c10::List<int64_t>({0}));
  sinks_.emplace_back(static_cast<int64_t>(first), s);
  return s;
}

void GradBuffer::clear() {
  std::vector<at::Tensor> zero;
  for (size_t i = 0; i < masters_.size(); ++i) {
    auto* p = masters_[i].second;
    if (!p->grad().defined() || !p->grad().is_same(views_[i])) p->mutable_grad() = views_[i];
    if (!in_sink_[i]) zero.push_back(views_[i]);
  }
  for (auto& t : zero) t.zero_();
  for (auto& [at_master, s] : sinks_) s.state_.set(0, 1);
}

void GradBuffer::settle() {
  for (auto& [at_master, s] : sinks_)
    if (s.fresh()) {
      s.region_.zero_();
      s.mark_written();
    }
  // A .grad set by someone else since clear() (a test, a tool) is the gradient: moved in.
  for (size_t i = 0; i < masters_.size(); ++i) {
    auto* p = masters_[i].second;
    if (p->grad().defined() && p->grad().is_same(views_[i])) continue;
    if (p->grad().defined())
      views_[i].copy_(p->grad());
    else
      views_[i].zero_();
    p->mutable_grad() = views_[i];
  }
}

}  // namespace eaglet::model
