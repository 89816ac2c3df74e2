// Target rows once per shard; the draft side as one autograd function whose forward already
// produces the gradients of the loss sum (model/loss.h).
#include "model/loss.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include "core/error.h"
#include "model/soft_ce_rows.h"

namespace eaglet::model {
namespace {

at::ScalarType acc_type(const at::Tensor& h) {
  return h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

struct FusedSoftCe : torch::autograd::Function<FusedSoftCe> {
  // Returns [weight·loss_sum, loss_sum, correct]; only the first is differentiable (in h
  // and lm_head). dW goes into `grad`; the `last` step's backward scales the sum.
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& h, const at::Tensor& lm_head,
      const at::Tensor& logits, const at::Tensor& lse, const at::Tensor& target_argmax,
      const at::Tensor& mask, const at::Tensor& weight, const std::vector<RowSpan>& spans,
      int64_t chunk, bool with_grads, WeightGrad grad, bool last, Impl rows_impl, Impl scale_impl) {
    const auto acc = acc_type(h);
    const auto w = lm_head.to(h.scalar_type());
    const auto m = mask.to(acc).contiguous();
    const auto wt = weight.to(acc);
    const auto dz_rows = m * wt;  // dz = (softmax(z) − p) · mask · weight
    auto loss = at::zeros({}, h.options().dtype(acc));
    auto correct = at::zeros({}, h.options().dtype(acc));
    auto dh = with_grads ? at::empty(h.sizes(), h.options()) : at::Tensor();
    int64_t row = 0;  // h's rows, span after span
    for (const auto& span : spans) {
      for (int64_t s = 0; s < span.rows; s += chunk) {
        const int64_t len = std::min(chunk, span.rows - s), at_h = row + s, at_t = span.target + s;
        auto hc = h.narrow(0, at_h, len), mc = m.narrow(0, at_h, len);
        auto z = at::mm(hc, w.t());  // becomes dz
        auto rows = soft_ce_rows(z, logits.narrow(0, at_t, len), lse.narrow(0, at_t, len),
                                 dz_rows.narrow(0, at_h, len), rows_impl);
        loss = loss + (rows.loss * mc).sum();
        correct =
            correct + ((rows.argmax == target_argmax.narrow(0, at_t, len)).to(acc) * mc).sum();
        if (!with_grads) continue;  // evaluation: the loss only
        auto dh_rows = dh.narrow(0, at_h, len);
        at::mm_out(dh_rows, z, w);
        // Σ over chunks and steps in fp32 (for bf16/fp16): cuBLAS adds each product to the sum.
        grad.add(z, hc, w.size(1));
      }
      row += span.rows;
    }
    EAGLET_CHECK(row == h.size(0), "fused loss: spans of {} rows for h of {}", row, h.size(0));
    ctx->saved_data["dh"] = dh;
    ctx->saved_data["last"] = last && with_grads;
    grad.save(ctx, "w");
    ctx->saved_data["scale"] = static_cast<int64_t>(scale_impl);
    ctx->mark_non_differentiable({loss, correct});
    return {loss * wt, loss, correct};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    EAGLET_CHECK(ctx->saved_data.count("dh") == 1,
                 "the fused loss's backward runs once (retain_graph is not supported)");
    auto dh = ctx->saved_data["dh"].toTensor();
    const bool last = ctx->saved_data["last"].toBool();
    auto grad = WeightGrad::load(ctx, "w");
    const auto scale = static_cast<Impl>(ctx->saved_data["scale"].toInt());
    ctx->saved_data.clear();                   // dh is ours now: scaled in place, freed after use
    const auto g = grads[0].to(acc_type(dh));  // scalar; products in fp32, one rounding
    scale_in_place(dh, g, scale);
    at::Tensor dw;
    if (last) {
      dw = grad.finish();  // the sum over every step (the loss's one use of lm_head)
      // In place in its own dtype (fp32 for bf16/fp16: ATen's, the fused scale is bf16/fp16).
      if (dw.defined())
        scale_in_place(dw, g, dw.scalar_type() == dh.scalar_type() ? scale : Impl::reference);
      dw = grad.returned(dw);
    }
    return {dh,           dw,           at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

TargetRows TargetRows::narrow(int64_t start, int64_t length) const {
  return {logits.narrow(0, start, length), lse.narrow(0, start, length),
          argmax.narrow(0, start, length), in_draft.narrow(0, start, length)};
}

TargetRows target_rows(const at::Tensor& rows, const at::Tensor& full_head,
                       const at::Tensor& draft_ids, const at::Tensor& order, const at::Tensor& t2d,
                       int64_t chunk, at::ScalarType dtype, Impl impl) {
  const auto acc = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t n = rows.size(0), v = draft_ids.size(0);
  const auto head = full_head.to(rows.scalar_type());
  const auto ids = draft_ids.to(rows.device(), at::kLong);
  TargetRows t{at::empty({n, v}, rows.options().dtype(dtype)),
               at::empty({n}, rows.options().dtype(acc)),
               at::empty({n}, rows.options().dtype(at::kLong)),
               at::empty({n}, rows.options().dtype(at::kBool))};
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t len = std::min(chunk, n - s);
    auto full = at::mm(rows.narrow(0, s, len), head.t());  // [len, Vt], freed after the chunk
    target_side_rows(full, ids, order, t2d, t.logits.narrow(0, s, len), t.lse.narrow(0, s, len),
                     t.argmax.narrow(0, s, len), t.in_draft.narrow(0, s, len), impl);
  }
  return t;
}

FusedLoss::FusedLoss(at::Tensor lm_head, int64_t chunk, WeightGrad grad, Impl rows, Impl scale)
    : lm_head_(std::move(lm_head)),
      chunk_(chunk),
      grad_(std::move(grad)),
      rows_(rows),
      scale_(scale) {
  EAGLET_CHECK(chunk_ >= 1, "loss chunk {} must be positive", chunk_);
}

LossSums FusedLoss::step(const at::Tensor& h, const TargetRows& target,
                         const std::vector<RowSpan>& spans, const at::Tensor& mask,
                         const at::Tensor& weight, bool last) {
  // Under no_grad (evaluation) forward skips the two gradient GEMMs per chunk.
  const bool with_grads =
      at::GradMode::is_enabled() && (h.requires_grad() || lm_head_.requires_grad());
  auto r = FusedSoftCe::apply(h, lm_head_, target.logits, target.lse, target.argmax, mask, weight,
                              spans, chunk_, with_grads, grad_, last, rows_, scale_);
  return {r[0], r[1], r[2]};
}

}  // namespace eaglet::model
