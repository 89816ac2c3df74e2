// Target rows once per shard; the draft side as one autograd function whose forward already
// produces the gradients of the loss sum (model/loss.h).
#include "model/loss.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
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
  // Returns [loss_sum, correct, count]; only loss_sum is differentiable (in h and lm_head).
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& h, const at::Tensor& lm_head,
                                                const at::Tensor& logits, const at::Tensor& lse,
                                                const at::Tensor& target_argmax,
                                                const at::Tensor& mask, int64_t chunk,
                                                bool with_grads) {
    const auto acc = acc_type(h);
    const auto w = lm_head.to(h.scalar_type());
    const auto m = mask.to(acc).contiguous();
    const int64_t n = h.size(0);
    auto loss = at::zeros({}, h.options().dtype(acc));
    auto correct = at::zeros({}, h.options().dtype(acc));
    auto dh = with_grads ? at::empty(h.sizes(), h.options()) : at::Tensor();
    at::Tensor dw;  // Σ over chunks: cuBLAS adds each chunk's product in fp32, one rounding each
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      auto hc = h.narrow(0, s, len), mc = m.narrow(0, s, len);
      auto z = at::mm(hc, w.t());  // becomes dz
      auto rows = soft_ce_rows(z, logits.narrow(0, s, len), lse.narrow(0, s, len), mc);
      loss = loss + (rows.loss * mc).sum();
      correct = correct + ((rows.argmax == target_argmax.narrow(0, s, len)).to(acc) * mc).sum();
      if (!with_grads) continue;  // evaluation: the loss only
      dh.narrow(0, s, len).copy_(at::mm(z, w));
      dw = dw.defined() ? dw.addmm_(z.t(), hc) : at::mm(z.t(), hc);
    }
    ctx->saved_data["dh"] = dh;
    ctx->saved_data["dw"] = dw;
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(lm_head.scalar_type());
    auto count = m.sum();
    ctx->mark_non_differentiable({correct, count});
    return {loss, correct, count};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    EAGLET_CHECK(ctx->saved_data.count("dh") == 1,
                 "the fused loss's backward runs once (retain_graph is not supported)");
    auto dh = ctx->saved_data["dh"].toTensor(), dw = ctx->saved_data["dw"].toTensor();
    const auto w_dtype = static_cast<at::ScalarType>(ctx->saved_data["w_dtype"].toInt());
    ctx->saved_data.clear();  // dh and dw are ours now: scaled in place, freed after use
    const auto g = grads[0].to(acc_type(dh));  // scalar; products in fp32, one rounding
    scale_in_place(dh, g);
    scale_in_place(dw, g);
    return {dh,           dw.to(w_dtype), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(),   at::Tensor(), at::Tensor()};
  }
};

}  // namespace

TargetRows TargetRows::narrow(int64_t start, int64_t length) const {
  return {logits.narrow(0, start, length), lse.narrow(0, start, length),
          argmax.narrow(0, start, length), in_draft.narrow(0, start, length)};
}

TargetRows target_rows(const at::Tensor& rows, const at::Tensor& full_head,
                       const at::Tensor& draft_ids, const at::Tensor& t2d, int64_t chunk,
                       at::ScalarType dtype) {
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
    t.in_draft.narrow(0, s, len).copy_(t2d.index_select(0, at::argmax(full, -1)));
    auto l = t.logits.narrow(0, s, len);
    if (full.scalar_type() == dtype)
      at::index_select_out(l, full, 1, ids);
    else
      l.copy_(at::index_select(full, 1, ids));
    row_lse_argmax(l, t.lse.narrow(0, s, len), t.argmax.narrow(0, s, len));
  }
  return t;
}

LossSums fused_soft_ce(const at::Tensor& h, const at::Tensor& lm_head, const TargetRows& target,
                       const at::Tensor& mask, int64_t chunk) {
  // Under no_grad (evaluation) forward skips the two gradient GEMMs per chunk.
  const bool with_grads =
      at::GradMode::is_enabled() && (h.requires_grad() || lm_head.requires_grad());
  auto r = FusedSoftCe::apply(h, lm_head, target.logits, target.lse, target.argmax, mask, chunk,
                              with_grads);
  return {r[0], r[1], r[2]};
}

}  // namespace eaglet::model
