// Fused chunked lm_head + soft-target cross entropy with a recomputing backward:
// d loss_i / d z_i = softmax(z_i) − p_i, so dh = dz · W and dW = dzᵀ · h, chunk by chunk.
#include "model/loss.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/custom_function.h>

namespace eaglet::model {
namespace {

at::ScalarType acc_type(const at::Tensor& h) {
  return h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

struct Chunk {
  at::Tensor z, p;  // [n, Vd] in the accumulation dtype
};

Chunk chunk_logits(const at::Tensor& h, const at::Tensor& w, const at::Tensor& t,
                   const at::Tensor& th, at::ScalarType acc) {
  auto z = at::matmul(h, w.t()).to(acc);
  auto p = at::softmax(at::matmul(t, th.t()).to(acc), -1);
  return {z, p};
}

struct FusedSoftCe : torch::autograd::Function<FusedSoftCe> {
  // Returns [loss_sum, correct, count]; only loss_sum is differentiable.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& h, const at::Tensor& w,
                                                const at::Tensor& t, const at::Tensor& th,
                                                const at::Tensor& mask, int64_t chunk) {
    auto acc = acc_type(h);
    auto loss = at::zeros({}, h.options().dtype(acc));
    auto correct = at::zeros({}, h.options().dtype(acc));
    const int64_t n = h.size(0);
    auto m = mask.to(acc);
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      auto c = chunk_logits(h.narrow(0, s, len), w, t.narrow(0, s, len), th, acc);
      auto mc = m.narrow(0, s, len);
      auto per_row = at::logsumexp(c.z, {-1}) - (c.p * c.z).sum(-1);
      loss = loss + (per_row * mc).sum();
      correct = correct + ((at::argmax(c.z, -1) == at::argmax(c.p, -1)).to(acc) * mc).sum();
    }
    ctx->save_for_backward({h, w, t, th, mask});
    ctx->saved_data["chunk"] = chunk;
    ctx->mark_non_differentiable({correct});
    auto count = m.sum();
    ctx->mark_non_differentiable({count});
    return {loss, correct, count};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &h = saved[0], &w = saved[1], &t = saved[2], &th = saved[3], &mask = saved[4];
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    auto acc = acc_type(h);
    auto g = grads[0].to(acc);
    auto dh = at::zeros_like(h);
    auto dw = at::zeros(w.sizes(), w.options().dtype(acc));
    auto m = mask.to(acc);
    const int64_t n = h.size(0);
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      auto hc = h.narrow(0, s, len);
      auto c = chunk_logits(hc, w, t.narrow(0, s, len), th, acc);
      auto dz = (at::softmax(c.z, -1) - c.p) * (m.narrow(0, s, len) * g).unsqueeze(-1);
      auto dz_h = dz.to(h.scalar_type());
      dh.narrow(0, s, len).copy_(at::matmul(dz_h, w));
      dw = dw + at::matmul(dz_h.t(), hc).to(acc);
    }
    return {dh, dw.to(w.scalar_type()), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

LossSums fused_soft_ce(const at::Tensor& h, const at::Tensor& lm_head, const at::Tensor& target,
                       const at::Tensor& target_head, const at::Tensor& mask, int64_t chunk) {
  // The cast is outside the function so autograd carries dW back to the fp32 master.
  auto w = lm_head.to(h.scalar_type());
  auto th = target_head.to(h.scalar_type());
  auto t = target.to(h.scalar_type());
  auto r = FusedSoftCe::apply(h, w, t, th, mask, chunk);
  return {r[0], r[1], r[2]};
}

}  // namespace eaglet::model
