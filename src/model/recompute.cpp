// The SwiGLU MLP as autograd functions around one kernel table (model/recompute.h).
#include "model/recompute.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/silu_backward.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "core/error.h"
#include "core/tensor_text.h"
#include "dist/device.h"

#ifdef EAGLET_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include "dist/cuda_stream.h"
#endif

namespace eaglet::model {

#ifdef EAGLET_WITH_CUDA
// model/swiglu.cu
void launch_swiglu_forward(const void* ab, void* p, int64_t rows, int64_t inter, bool bf16,
                           cudaStream_t stream);
void launch_swiglu_backward(const void* dp, const void* ab, void* dab, int64_t rows, int64_t inter,
                            bool bf16, cudaStream_t stream);
#endif

namespace {

int64_t inter_size(const at::Tensor& ab) {
  EAGLET_CHECK(ab.dim() == 2 && ab.size(1) % 2 == 0, "swiglu: ab {} must be [rows, 2I]",
               tensor_text(ab));
  return ab.size(1) / 2;
}

at::Tensor plain_mlp(const at::Tensor& n, const at::Tensor& gu, const at::Tensor& d);

// p = swiglu(ab), keeping ab for backward (the down GEMM keeps p).
struct Swiglu : torch::autograd::Function<Swiglu> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& ab) {
    ctx->save_for_backward({ab});
    return swiglu_rows(ab);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {swiglu_rows_backward(grads[0], ctx->get_saved_variables()[0])};
  }
};

// down(swiglu(ab)) keeping only ab: backward recomputes p.
struct SwigluDown : torch::autograd::Function<SwigluDown> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& ab,
                            const at::Tensor& d) {
    ctx->save_for_backward({ab, d});
    return at::mm(swiglu_rows(ab), d.t());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &ab = saved[0], &d = saved[1];
    const auto& grad = grads[0];
    auto dp = at::mm(grad, d);
    auto dd = at::mm(grad.t(), swiglu_rows(ab));
    return {swiglu_rows_backward(dp, ab), dd};
  }
};

// The whole MLP rerun under autograd in backward.
struct RecomputedMlp : torch::autograd::Function<RecomputedMlp> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& n,
                            const at::Tensor& gu, const at::Tensor& d) {
    ctx->save_for_backward({n, gu, d});
    return plain_mlp(n, gu, d);  // autograd is off inside forward: nothing is kept
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    c10::AutoGradMode enable(true);
    std::vector<at::Tensor> leaves;
    for (const auto& t : saved) leaves.push_back(t.detach().requires_grad_(true));
    auto out = plain_mlp(leaves[0], leaves[1], leaves[2]);
    return torch::autograd::grad({out}, leaves, {grads[0]});
  }
};

at::Tensor plain_mlp(const at::Tensor& n, const at::Tensor& gu, const at::Tensor& d) {
  return at::matmul(Swiglu::apply(at::matmul(n, gu.t())), d.t());
}

}  // namespace

at::Tensor swiglu_rows(const at::Tensor& ab, const char* kernel) {
  const int64_t inter = inter_size(ab);
#ifdef EAGLET_WITH_CUDA
  if (own_kernel_runs(ab, kernel)) {
    auto x = ab.contiguous();
    auto p = at::empty({x.size(0), inter}, x.options());
    launch_swiglu_forward(x.data_ptr(), p.data_ptr(), x.size(0), inter,
                          x.scalar_type() == at::kBFloat16, stream_of(x));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return p;
  }
#else
  (void)kernel;
#endif
  return at::silu(ab.narrow(1, 0, inter)) * ab.narrow(1, inter, inter);
}

at::Tensor swiglu_rows_backward(const at::Tensor& dp, const at::Tensor& ab, const char* kernel) {
  const int64_t inter = inter_size(ab);
  EAGLET_CHECK(dp.dim() == 2 && dp.size(0) == ab.size(0) && dp.size(1) == inter,
               "swiglu backward: dp {} for ab {}", tensor_text(dp), tensor_text(ab));
#ifdef EAGLET_WITH_CUDA
  if (own_kernel_runs(ab, kernel) && dp.scalar_type() == ab.scalar_type()) {
    auto x = ab.contiguous(), g = dp.contiguous();
    auto dab = at::empty(x.sizes(), x.options());
    launch_swiglu_backward(g.data_ptr(), x.data_ptr(), dab.data_ptr(), x.size(0), inter,
                           x.scalar_type() == at::kBFloat16, stream_of(x));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return dab;
  }
#else
  (void)kernel;
#endif
  auto a = ab.narrow(1, 0, inter), b = ab.narrow(1, inter, inter);
  return at::cat({at::silu_backward(dp * b, a), dp * at::silu(a)}, 1);
}

at::Tensor swiglu_mlp(const at::Tensor& n, const at::Tensor& gate_up, const at::Tensor& down,
                      MlpRecompute recompute) {
  auto gu = gate_up.to(n.scalar_type()), d = down.to(n.scalar_type());
  if (recompute == MlpRecompute::none || !c10::GradMode::is_enabled()) return plain_mlp(n, gu, d);
  if (recompute == MlpRecompute::swiglu) {
    auto flat = n.reshape({-1, n.size(-1)});
    auto out = SwigluDown::apply(at::matmul(flat, gu.t()), d);
    auto shape = n.sizes().vec();
    shape.back() = d.size(0);
    return out.view(shape);
  }
  return RecomputedMlp::apply(n, gu, d);
}

}  // namespace eaglet::model
