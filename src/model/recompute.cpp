// The SwiGLU MLP as one autograd function around one kernel table (model/recompute.h).
#include "model/recompute.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/silu_backward.h>
#include <c10/core/GradMode.h>
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
void launch_swiglu_backward(const void* dp, const void* ab, void* dab, void* p, int64_t rows,
                            int64_t inter, bool bf16, cudaStream_t stream);
#endif

namespace {

int64_t inter_size(const at::Tensor& ab) {
  EAGLET_CHECK(ab.dim() == 2 && ab.size(1) % 2 == 0, "swiglu: ab {} must be [rows, 2I]",
               tensor_text(ab));
  return ab.size(1) / 2;
}

// Forward keeps n and, by level, ab and p; backward recomputes what is missing.
struct SwigluMlp : torch::autograd::Function<SwigluMlp> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& n,
                            const at::Tensor& gu, const at::Tensor& d,
                            const std::optional<at::Tensor>& residual_in, MlpRecompute recompute,
                            const MlpGrads& grads, Impl impl) {
    const auto residual = residual_in.value_or(at::Tensor());  // optional: see layers.cpp Linear
    auto ab = at::mm(n, gu.t());
    auto p = swiglu_rows(ab, impl);
    auto out = linear(p, d, {}, residual);  // autograd is off in forward: residual + p · dᵀ
    ctx->save_for_backward({n, gu, d, recompute == MlpRecompute::full ? at::Tensor() : ab,
                            recompute == MlpRecompute::none ? p : at::Tensor()});
    ctx->saved_data["residual"] = residual.defined();
    ctx->saved_data["impl"] = static_cast<int64_t>(impl);
    grads.gate_up.save(ctx, "gate_up");
    grads.down.save(ctx, "down");
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &n = saved[0], &gu = saved[1], &d = saved[2];
    const auto& dy = grads[0];
    auto ab = saved[3].defined() ? saved[3] : at::mm(n, gu.t());
    auto d_down = WeightGrad::load(ctx, "down"), d_gate_up = WeightGrad::load(ctx, "gate_up");
    auto p = saved[4];  // recomputed (where not kept) by the backward's own pass over ab
    const auto impl = static_cast<Impl>(ctx->saved_data["impl"].toInt());
    auto dab = swiglu_rows_backward(at::mm(dy, d), ab, impl, p.defined() ? nullptr : &p);
    d_down.add(dy, p, d.size(1));
    d_gate_up.add(dab, n, gu.size(1));
    return {at::mm(dab, gu),
            d_gate_up.returned(d_gate_up.finish()),
            d_down.returned(d_down.finish()),
            ctx->saved_data["residual"].toBool() ? dy : at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor swiglu_rows(const at::Tensor& ab, Impl impl) {
  const int64_t inter = inter_size(ab);
  if (use_fused(impl, ab, "swiglu")) {
#ifdef EAGLET_WITH_CUDA
    auto x = ab.contiguous();
    auto p = at::empty({x.size(0), inter}, x.options());
    launch_swiglu_forward(x.data_ptr(), p.data_ptr(), x.size(0), inter,
                          x.scalar_type() == at::kBFloat16, stream_of(x));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return p;
#endif
  }
  return at::silu(ab.narrow(1, 0, inter)) * ab.narrow(1, inter, inter);
}

at::Tensor swiglu_rows_backward(const at::Tensor& dp, const at::Tensor& ab, Impl impl,
                                at::Tensor* p) {
  const int64_t inter = inter_size(ab);
  EAGLET_CHECK(dp.dim() == 2 && dp.size(0) == ab.size(0) && dp.size(1) == inter,
               "swiglu backward: dp {} for ab {}", tensor_text(dp), tensor_text(ab));
  if (use_fused(impl, ab, "swiglu") && dp.scalar_type() == ab.scalar_type()) {
#ifdef EAGLET_WITH_CUDA
    auto x = ab.contiguous(), g = dp.contiguous();
    auto dab = at::empty(x.sizes(), x.options());
    if (p != nullptr) *p = at::empty({x.size(0), inter}, x.options());
    launch_swiglu_backward(g.data_ptr(), x.data_ptr(), dab.data_ptr(),
                           p != nullptr ? p->data_ptr() : nullptr, x.size(0), inter,
                           x.scalar_type() == at::kBFloat16, stream_of(x));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return dab;
#endif
  }
  if (p != nullptr) *p = swiglu_rows(ab, impl);
  auto a = ab.narrow(1, 0, inter), b = ab.narrow(1, inter, inter);
  return at::cat({at::silu_backward(dp * b, a), dp * at::silu(a)}, 1);
}

at::Tensor swiglu_mlp(const at::Tensor& n, const at::Tensor& gate_up, const at::Tensor& down,
                      MlpRecompute recompute, const MlpGrads& grads, const at::Tensor& residual,
                      Impl swiglu) {
  EAGLET_CHECK(n.dim() == 2 && gate_up.size(1) == n.size(1) && down.size(1) * 2 == gate_up.size(0),
               "swiglu mlp: n {}, gate_up {}, down {}", tensor_text(n), tensor_text(gate_up),
               tensor_text(down));
  auto gu = gate_up.to(n.scalar_type()), d = down.to(n.scalar_type());
  if (!c10::GradMode::is_enabled())
    return linear(swiglu_rows(at::mm(n, gu.t()), swiglu), d, {}, residual);
  return SwigluMlp::apply(n, gu, d, std::optional<at::Tensor>(residual), recompute, grads, swiglu);
}

}  // namespace eaglet::model
