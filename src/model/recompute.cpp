// The recomputing MLP as one autograd function.
#include "model/recompute.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/silu_backward.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace eaglet::model {
namespace {

at::Tensor mlp(const at::Tensor& n, const at::Tensor& g, const at::Tensor& u, const at::Tensor& d) {
  return at::matmul(at::silu(at::matmul(n, g.t())) * at::matmul(n, u.t()), d.t());
}

struct RecomputedMlp : torch::autograd::Function<RecomputedMlp> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& n,
                            const at::Tensor& g, const at::Tensor& u, const at::Tensor& d) {
    ctx->save_for_backward({n, g, u, d});
    return mlp(n, g, u, d);  // autograd is off inside forward: nothing is kept
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    c10::AutoGradMode enable(true);
    std::vector<at::Tensor> leaves;
    for (const auto& t : saved) leaves.push_back(t.detach().requires_grad_(true));
    auto out = mlp(leaves[0], leaves[1], leaves[2], leaves[3]);
    return torch::autograd::grad({out}, leaves, {grads[0]});
  }
};

// down(silu(a) ⊙ b) keeping only a and b: backward recomputes s = silu(a) and p = s ⊙ b and
// differentiates as autograd would (mm, mul, silu backward).
struct SwigluDown : torch::autograd::Function<SwigluDown> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a,
                            const at::Tensor& b, const at::Tensor& d) {
    ctx->save_for_backward({a, b, d});
    return at::matmul(at::silu(a) * b, d.t());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &a = saved[0], &b = saved[1], &d = saved[2];
    const auto& grad = grads[0];
    auto s = at::silu(a);
    auto dp = at::mm(grad, d);
    auto dd = at::mm((s * b).t(), grad).t();
    return {at::silu_backward(dp * b, a), dp * s, dd};
  }
};

}  // namespace

at::Tensor swiglu_mlp(const at::Tensor& n, const at::Tensor& gate, const at::Tensor& up,
                      const at::Tensor& down, MlpRecompute recompute) {
  auto g = gate.to(n.scalar_type()), u = up.to(n.scalar_type()), d = down.to(n.scalar_type());
  if (recompute == MlpRecompute::none || !c10::GradMode::is_enabled()) return mlp(n, g, u, d);
  if (recompute == MlpRecompute::swiglu)
    return SwigluDown::apply(at::matmul(n, g.t()), at::matmul(n, u.t()), d);
  return RecomputedMlp::apply(n, g, u, d);
}

}  // namespace eaglet::model
