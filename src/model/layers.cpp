// RMSNorm, linear, RoPE (with its kernel table: ATen reference, fused CUDA in model/rope.cu).
#include "model/layers.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/outer.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/rms_norm.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/where.h>

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor_text.h"
#include "dist/device.h"

#ifdef EAGLET_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include "dist/cuda_stream.h"
#endif

namespace eaglet::model {

#ifdef EAGLET_WITH_CUDA
// model/rope.cu
void launch_rope(const void* x, int64_t row_stride, int64_t head_stride, const float* cos,
                 const float* sin, int64_t table_stride, void* out, int64_t rows, int heads,
                 int half, float sign, bool bf16, cudaStream_t stream);
// model/widen.cu
void launch_widen(const void* src, float* dst, int64_t n, bool bf16, cudaStream_t stream);
// model/rms_norm.cu
int rms_norm_backward_max_dim();
int rms_norm_backward_blocks(int64_t rows, int H, bool bf16);
void launch_rms_norm_backward(const void* x, const void* dy, const void* dres, const void* w,
                              float eps, void* dx, float* partial, int blocks, void* dw,
                              int64_t rows, int H, bool bf16, cudaStream_t stream);
void launch_rms_norm_rows(const void* src, const int64_t* ids, const void* w, float eps, void* out,
                          int64_t out_stride, int64_t rows, int H, bool bf16, cudaStream_t stream);
#endif

namespace {

at::ScalarType accumulation_type(at::ScalarType t) {
  return t == at::kBFloat16 || t == at::kHalf ? at::kFloat : t;
}

// out (+)= a · b with out in a's accumulation dtype (fp32 for bf16/fp16 a and b), rounded once
// into out: on the GPU one cuBLAS GEMM with an fp32 C (β = 0 for the first product, 1 after, as
// ATen's out_dtype overloads); on the CPU a and b widened first (correct, not fast).
void add_product(at::Tensor out, const at::Tensor& a, const at::Tensor& b, bool first) {
  const auto acc = out.scalar_type();
  if (a.scalar_type() == acc) {
    if (first)
      at::mm_out(out, a, b);
    else
      out.addmm_(a, b);
  } else if (a.is_cuda()) {
    if (first)
      at::mm_out(out, a, b, acc);
    else
      at::addmm_out(out, out, a, b, acc);
  } else {
    const auto aw = a.to(acc), bw = b.to(acc);
    if (first)
      at::mm_out(out, aw, bw);
    else
      out.addmm_(aw, bw);
  }
}

}  // namespace

WeightGrad::WeightGrad(int64_t uses, bool to_masters)
    : sum_({at::Tensor()}), state_({uses, 0, to_masters ? 1 : 0}) {
  EAGLET_CHECK(uses >= 1, "a weight gradient summed over {} uses", uses);
}

WeightGrad::WeightGrad(c10::List<at::Tensor> sum, c10::List<int64_t> state,
                       c10::List<int64_t> written)
    : sum_(std::move(sum)), state_(std::move(state)), written_(std::move(written)) {}

void WeightGrad::add(const at::Tensor& dy, const at::Tensor& x, int64_t cols, int64_t col) {
  EAGLET_CHECK(dy.dim() == 2 && x.dim() == 2 && dy.size(0) == x.size(0) && col + x.size(1) <= cols,
               "weight gradient: dy {} and x {} for columns [{}, {}) of {}", tensor_text(dy),
               tensor_text(x), col, col + x.size(1), cols);
  at::Tensor sum = sum_.get(0);
  if (!sum.defined()) {
    sum = at::empty({dy.size(1), cols}, dy.options().dtype(accumulation_type(dy.scalar_type())));
    sum_.set(0, sum);
  }
  EAGLET_CHECK(sum.size(0) == dy.size(1) && sum.size(1) == cols,
               "weight gradient: dy {} for a sum of {}", tensor_text(dy), tensor_text(sum));
  bool first = true;
  for (size_t i = 0; i < written_.size(); ++i) first = first && written_.get(i) != col;
  if (first) written_.push_back(col);
  add_product(sum.narrow(1, col, x.size(1)), dy.t(), x, first);
}

at::Tensor WeightGrad::finish() {
  const int64_t done = state_.get(1) + 1;
  if (done < state_.get(0)) {
    state_.set(1, done);
    return {};
  }
  state_.set(1, 0);  // complete: a later backward pass starts a new sum
  at::Tensor sum = sum_.get(0);
  if (state_.get(2) == 0) reset();  // plain: the sum leaves as the returned gradient
  return sum;
}

at::Tensor WeightGrad::returned(const at::Tensor& sum) const {
  return state_.get(2) != 0 ? at::Tensor() : sum;
}

at::Tensor WeightGrad::take() {
  EAGLET_CHECK(state_.get(1) == 0,
               "a weight's cast ran its backward after {} of its {} uses' backward calls",
               state_.get(1), state_.get(0));
  at::Tensor sum = sum_.get(0);
  reset();
  return sum;
}

void WeightGrad::reset() {
  sum_.set(0, at::Tensor());
  written_.clear();
}

void WeightGrad::save(torch::autograd::AutogradContext* ctx, const std::string& key) const {
  ctx->saved_data[key + ".sum"] = sum_;
  ctx->saved_data[key + ".state"] = state_;
  ctx->saved_data[key + ".written"] = written_;
}

WeightGrad WeightGrad::load(torch::autograd::AutogradContext* ctx, const std::string& key) {
  return {ctx->saved_data.at(key + ".sum").toTensorList(),
          ctx->saved_data.at(key + ".state").toIntList(),
          ctx->saved_data.at(key + ".written").toIntList()};
}

namespace {

// A gradient that reached a compute copy as a tensor, in the masters' dtype `to`.
at::Tensor widened(const at::Tensor& g, at::ScalarType to, bool fused) {
#ifdef EAGLET_WITH_CUDA
  if (fused && to == at::kFloat && g.is_contiguous() &&
      (g.scalar_type() == at::kBFloat16 || g.scalar_type() == at::kHalf)) {
    auto out = at::empty(g.sizes(), g.options().dtype(at::kFloat));
    launch_widen(g.data_ptr(), out.data_ptr<float>(), g.numel(), g.scalar_type() == at::kBFloat16,
                 stream_of(g));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }
#endif
  (void)fused;
  return g.to(to);
}

// The masters stacked by rows and cast; backward: the WeightGrad's sum (plus any gradient that
// reached the copy as a tensor), split by rows. The uses give the copy no gradient, so none is
// materialised as zeros; autograd still runs this backward after every use's.
struct ToCompute : torch::autograd::Function<ToCompute> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList masters,
                            at::ScalarType dt, const WeightGrad& grad, bool fused) {
    ctx->set_materialize_grads(false);
    std::vector<int64_t> rows;
    int64_t total = 0;
    for (const auto& m : masters) {
      rows.push_back(m.size(0));
      total += m.size(0);
    }
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["dtype"] = static_cast<int64_t>(masters[0].scalar_type());
    ctx->saved_data["fused"] = fused;
    grad.save(ctx, "w");
    if (masters.size() == 1) return masters[0].to(dt);
    auto out = at::empty({total, masters[0].size(1)}, masters[0].options().dtype(dt));
    int64_t row = 0;
    for (const auto& m : masters) {
      out.narrow(0, row, m.size(0)).copy_(m);
      row += m.size(0);
    }
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto to = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    const auto rows = ctx->saved_data["rows"].toIntVector();
    auto sum = WeightGrad::load(ctx, "w").take();
    if (grads[0].defined()) {
      auto g = widened(grads[0], to, ctx->saved_data["fused"].toBool());
      sum = sum.defined() ? sum.add_(g) : g;
    }
    torch::autograd::variable_list out(rows.size() + 3);
    if (!sum.defined()) return out;
    if (sum.scalar_type() != to) sum = sum.to(to);
    int64_t row = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      out[i] = rows.size() == 1 ? sum : sum.narrow(0, row, rows[i]);
      row += rows[i];
    }
    return out;
  }
};

}  // namespace

ComputeWeight to_compute(at::TensorList masters, at::ScalarType dt, int64_t uses, Impl widen) {
  EAGLET_CHECK(!masters.empty(), "to_compute: no weights");
  for (const auto& m : masters)
    EAGLET_CHECK(m.scalar_type() == masters[0].scalar_type() && m.device() == masters[0].device() &&
                     (masters.size() == 1 || (m.dim() == 2 && m.size(1) == masters[0].size(1))),
                 "to_compute: {} does not stack under {}", tensor_text(m), tensor_text(masters[0]));
  const auto from = masters[0].scalar_type();
  if (masters.size() == 1 && from == dt) return {masters[0], WeightGrad(uses)};
  // The fused entry runs on the gradient's side of the cast (dt: bf16/fp16 on the GPU).
  const bool fused =
      use_fused(widen, masters[0].device(), dt, "to_compute (widen)") && from == at::kFloat;
  auto grad = WeightGrad::to_masters(uses);
  return {ToCompute::apply(masters, dt, grad, fused), grad};
}

at::Tensor to_compute(const at::Tensor& w, at::ScalarType dt, Impl widen) {
  return to_compute(at::TensorList(w), dt, 1, widen).w;
}

namespace {

#ifdef EAGLET_WITH_CUDA
bool aligned16(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

// A contiguous, 16-byte aligned gradient in dtype dt (a copy only where g is not one).
at::Tensor kernel_grad(const at::Tensor& g, at::ScalarType dt) {
  auto out = g.to(dt).contiguous();
  return aligned16(out) ? out : out.clone();
}

// ATen's forward; the backward in one pass (model/rms_norm.cu). Outputs y and x itself (an alias
// for x's residual use, whose gradient the backward kernel adds to dx as it writes it). Saves x
// and w only: the kernel recomputes each row's rsqrt from x.
struct FusedRmsNorm : torch::autograd::Function<FusedRmsNorm> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x, const at::Tensor& w,
                                                double eps) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["eps"] = eps;
    return {at::rms_norm(x, {x.size(1)}, w, eps), x};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return {grads[1], at::Tensor(), at::Tensor()};
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    const auto dy = kernel_grad(grads[0], x.scalar_type());
    const auto dres = grads[1].defined() ? kernel_grad(grads[1], x.scalar_type()) : at::Tensor();
    const int64_t rows = x.size(0);
    const int H = static_cast<int>(x.size(1));
    const bool bf16 = x.scalar_type() == at::kBFloat16;
    auto dx = at::empty_like(x), dw = at::empty_like(w);
    const int blocks = rms_norm_backward_blocks(rows, H, bf16);
    auto partial = at::empty({blocks, H}, x.options().dtype(at::kFloat));
    launch_rms_norm_backward(
        x.data_ptr(), dy.data_ptr(), dres.defined() ? dres.data_ptr() : nullptr, w.data_ptr(),
        static_cast<float>(ctx->saved_data["eps"].toDouble()), dx.data_ptr(),
        partial.data_ptr<float>(), blocks, dw.data_ptr(), rows, H, bf16, stream_of(x));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {dx, dw, at::Tensor()};
  }
};

// The fused backward's shape limits (x already bf16/fp16 on the GPU).
bool fused_rms_norm_fits(const at::Tensor& x, const at::Tensor& w) {
  return x.dim() == 2 && x.is_contiguous() && x.size(0) > 0 && x.size(1) % 8 == 0 &&
         x.size(1) <= rms_norm_backward_max_dim() && aligned16(x) && w.is_contiguous() &&
         aligned16(w) && at::GradMode::is_enabled();
}
#endif

}  // namespace

std::pair<at::Tensor, at::Tensor> rms_norm_and_residual(const at::Tensor& x,
                                                        const at::Tensor& weight, double eps,
                                                        Impl impl) {
  // ATen's RMSNorm: statistics in fp32 (fp64 on the fp64 path), one fused kernel on CUDA.
  const auto w = weight.to(x.scalar_type());
  if (use_fused(impl, x, "rms_norm")) {
#ifdef EAGLET_WITH_CUDA
    if (fused_rms_norm_fits(x, w)) {
      auto out = FusedRmsNorm::apply(x, w, eps);
      return {out[0], out[1]};
    }
#endif
  }
  return {at::rms_norm(x, {x.size(-1)}, w, eps), x};
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, Impl impl) {
  return rms_norm_and_residual(x, weight, eps, impl).first;
}

namespace {

at::Tensor plain_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& residual) {
  return residual.defined() ? at::addmm(residual, x, w.t()) : at::mm(x, w.t());
}

struct Linear : torch::autograd::Function<Linear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w, const std::optional<at::Tensor>& residual,
                            const WeightGrad& grad) {
    // (An optional: autograd functions take no undefined tensors; an empty one is no input.)
    const auto r = residual.value_or(at::Tensor());
    ctx->save_for_backward({x, w});
    ctx->saved_data["residual"] = r.defined();
    grad.save(ctx, "w");
    return plain_linear(x, w, r);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    const auto& dy = grads[0];
    auto grad = WeightGrad::load(ctx, "w");
    grad.add(dy, x, w.size(1));
    return {ctx->needs_input_grad(0) ? at::mm(dy, w) : at::Tensor(), grad.returned(grad.finish()),
            ctx->saved_data["residual"].toBool() ? dy : at::Tensor(), at::Tensor()};
  }
};

#ifdef EAGLET_WITH_CUDA
// Whether rows of src (contiguous [*, H] on the GPU) fit the fused kernel's limits into out (a
// [rows, H] view of src's dtype whose rows may be strided) with weight w (or none).
bool fused_norm_rows_fit(const at::Tensor& src, const at::Tensor& w, const at::Tensor& out) {
  const int64_t H = src.size(-1);
  auto aligned_view = [&](const at::Tensor& t) {
    return t.dim() == 2 && t.size(1) == H && t.stride(1) == 1 && t.stride(0) % 8 == 0 &&
           t.scalar_type() == src.scalar_type() && aligned16(t);
  };
  return src.is_cuda() && src.dim() == 2 && src.is_contiguous() && H % 8 == 0 &&
         H <= rms_norm_backward_max_dim() && aligned16(src) && aligned_view(out) &&
         (!w.defined() || (w.dim() == 1 && w.is_contiguous() && w.size(0) == H &&
                           w.scalar_type() == src.scalar_type() && aligned16(w)));
}

// out = rms_norm(src rows [ids], w) by the fused kernel (fused_norm_rows_fit holds).
void fused_norm_rows(const at::Tensor& src, const at::Tensor& ids, const at::Tensor& w, double eps,
                     const at::Tensor& out) {
  const auto idx = ids.defined() ? ids.to(at::kLong).contiguous() : at::Tensor();
  launch_rms_norm_rows(src.data_ptr(), idx.defined() ? idx.data_ptr<int64_t>() : nullptr,
                       w.defined() ? w.data_ptr() : nullptr, static_cast<float>(eps),
                       out.data_ptr(), out.stride(0), out.size(0), static_cast<int>(src.size(1)),
                       src.scalar_type() == at::kBFloat16, stream_of(src));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
#endif

// The embedding rows of ids normalised without their weight (x̂), in h's dtype.
at::Tensor embedding_rows_normalised(const at::Tensor& embed, const at::Tensor& ids,
                                     const at::Tensor& h, double eps, Impl norms) {
  if (use_fused(norms, h, "input norms")) {
#ifdef EAGLET_WITH_CUDA
    auto out = at::empty({ids.size(0), embed.size(1)}, h.options());
    if (fused_norm_rows_fit(embed, at::Tensor(), out)) {
      fused_norm_rows(embed, ids, at::Tensor(), eps, out);
      return out;
    }
#endif
  }
  return at::rms_norm(embed.index_select(0, ids).to(h.scalar_type()), {embed.size(1)}, std::nullopt,
                      eps);
}

// x = [rms_norm(embed[ids], w_emb) | rms_norm(h, w_hidden)]: on the GPU both halves written in
// place by the fused kernel, the embedding rows read by id (no gathered copy, no cat).
at::Tensor layer_input(const at::Tensor& embed, const at::Tensor& ids, const at::Tensor& h,
                       const at::Tensor& w_emb, const at::Tensor& w_hidden, double eps,
                       Impl norms) {
  if (use_fused(norms, h, "input norms")) {
#ifdef EAGLET_WITH_CUDA
    const int64_t H = h.size(1);
    auto x = at::empty({h.size(0), 2 * H}, h.options());
    const auto we = w_emb.to(h.scalar_type()), wh = w_hidden.to(h.scalar_type());
    if (fused_norm_rows_fit(embed, we, x.narrow(1, 0, H)) &&
        fused_norm_rows_fit(h, wh, x.narrow(1, H, H))) {
      fused_norm_rows(embed, ids, we, eps, x.narrow(1, 0, H));
      fused_norm_rows(h, at::Tensor(), wh, eps, x.narrow(1, H, H));
      return x;
    }
#endif
  }
  // Autograd is off here (InputProjection's forward, or no grad): ATen's norms.
  auto emb = embed.index_select(0, ids).to(h.scalar_type());
  return at::cat({rms_norm(emb, w_emb, eps), rms_norm(h, w_hidden, eps)}, -1);
}

struct InputProjection : torch::autograd::Function<InputProjection> {
  // Returns x · wᵀ and h itself (an alias for h's residual use, whose gradient joins dh in the
  // hidden norm's backward).
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& embed, const at::Tensor& ids,
                                                const at::Tensor& h, const at::Tensor& w_emb,
                                                const at::Tensor& w_hidden, const at::Tensor& w,
                                                double eps, const WeightGrad& grad, Impl norms,
                                                Impl norm_backward) {
    ctx->save_for_backward({embed, ids, h, w_emb, w_hidden, w});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["norms"] = static_cast<int64_t>(norms);
    ctx->saved_data["norm_backward"] = static_cast<int64_t>(norm_backward);
    grad.save(ctx, "w");
    return {at::mm(layer_input(embed, ids, h, w_emb, w_hidden, eps, norms), w.t()), h};
  }
  // With x̂ = the embedding rows normalised without their weight (e_n = x̂ · w_emb) and
  // G = dyᵀ x̂: dW_emb = G · diag(w_emb) and d w_emb = colsum(W_emb ⊙ G), so the embedding half
  // of x's gradient (dy · W_emb, a [rows × 6144] · [6144 × 4096] GEMM at the reference shapes) is
  // never formed: the embeddings are frozen and w_emb needs only these column sums. Both are
  // linear in G, so with the weight's gradient summed over the TTT steps (WeightGrad) they are
  // derived once, from the summed G, by the last step's backward.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &embed = saved[0], &ids = saved[1], &w_emb = saved[3], &w = saved[5];
    const double eps = ctx->saved_data["eps"].toDouble();
    const auto norms = static_cast<Impl>(ctx->saved_data["norms"].toInt()),
               norm_backward = static_cast<Impl>(ctx->saved_data["norm_backward"].toInt());
    auto h = saved[2].detach().requires_grad_(true),
         w_hidden = saved[4].detach().requires_grad_(true);
    const int64_t H = w_emb.size(0);
    auto x_hat = embedding_rows_normalised(embed, ids, h, eps, norms);
    at::Tensor h_n, h_res;
    {
      c10::AutoGradMode enable(true);
      std::tie(h_n, h_res) = rms_norm_and_residual(h, w_hidden, eps, norm_backward);
    }
    const auto &dy = grads[0], &dres = grads[1];  // both defined (autograd materialises them)
    auto grad = WeightGrad::load(ctx, "w");
    grad.add(dy, x_hat, 2 * H, 0);
    grad.add(dy, h_n.detach(), 2 * H, H);
    auto dw = grad.finish();  // [G | dW_hidden], summed over the uses (fp32 for bf16/fp16)
    at::Tensor d_w_emb;
    if (dw.defined()) {
      auto g = dw.narrow(1, 0, H);
      const auto acc = h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
      d_w_emb = at::sum(w.narrow(1, 0, H) * g, {0}, false, acc).to(w_emb.scalar_type());
      g.mul_(w_emb);  // G -> dW_emb
    }
    // h's residual gradient: through the fused norm's alias (added in its backward pass), else
    // added here.
    const bool alias = !h_res.is_same(h);
    auto dh = alias ? torch::autograd::grad({h_n, h_res}, {h, w_hidden},
                                            {at::mm(dy, w.narrow(1, H, H)), dres})
                    : torch::autograd::grad({h_n}, {h, w_hidden}, {at::mm(dy, w.narrow(1, H, H))});
    if (!alias) dh[0] = dh[0] + dres;
    return {at::Tensor(),      at::Tensor(), dh[0],        d_w_emb,      dh[1],
            grad.returned(dw), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::pair<at::Tensor, at::Tensor> input_projection_and_residual(
    const at::Tensor& embed, const at::Tensor& ids, const at::Tensor& h, const at::Tensor& w_emb,
    const at::Tensor& w_hidden, const at::Tensor& w, double eps, const WeightGrad& grad, Impl norms,
    Impl norm_backward) {
  EAGLET_CHECK(h.dim() == 2 && ids.dim() == 1 && ids.size(0) == h.size(0),
               "input_projection: h {} and ids {} must be [rows, H] and [rows]", tensor_text(h),
               tensor_text(ids));
  if (!at::GradMode::is_enabled())
    return {at::mm(layer_input(embed, ids, h, w_emb, w_hidden, eps, norms), w.t()), h};
  auto out =
      InputProjection::apply(embed, ids, h, w_emb, w_hidden, w, eps, grad, norms, norm_backward);
  return {out[0], out[1]};
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const WeightGrad& grad,
                  const at::Tensor& residual) {
  EAGLET_CHECK(
      x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1) &&
          x.scalar_type() == w.scalar_type() &&
          (!residual.defined() || residual.sizes() == at::IntArrayRef{x.size(0), w.size(0)}),
      "linear: x {}, w {}, residual {}", tensor_text(x), tensor_text(w), tensor_text(residual));
  if (!at::GradMode::is_enabled()) return plain_linear(x, w, residual);
  return Linear::apply(x, w, std::optional<at::Tensor>(residual), grad);
}

at::Tensor rope_inv_freq(const DraftArchConfig& cfg, c10::Device device) {
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  const int64_t d = cfg.head_dim;
  // θ^(−2i/d) computed in double then rounded once, like the reference's float arange.
  auto idx = at::arange(0, d, 2, opts.dtype(at::kDouble));
  auto inv = (1.0 / at::pow(cfg.rope_theta, idx / static_cast<double>(d)));
  if (cfg.rope_type == "linear") {
    inv = inv / cfg.rope_factor;
  } else if (cfg.rope_type == "llama3") {
    // Llama 3.1 frequency-dependent scaling (HF _compute_llama3_parameters).
    const double factor = cfg.rope_factor, lo = cfg.rope_low_freq_factor,
                 hi = cfg.rope_high_freq_factor;
    const double old_ctx = static_cast<double>(cfg.rope_original_max_position_embeddings);
    const double low_wavelen = old_ctx / lo, high_wavelen = old_ctx / hi;
    auto wavelen = 2 * M_PI / inv;
    auto scaled = at::where(wavelen > low_wavelen, inv / factor, inv);
    auto smooth = (old_ctx / wavelen - lo) / (hi - lo);
    auto smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
    auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = at::where(medium, smoothed, scaled);
  } else {
    EAGLET_CHECK(cfg.rope_type == "none", "model.config.rope_type={}: not supported",
                 cfg.rope_type);
  }
  return inv.to(at::kFloat);
}

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& inv_freq,
                                              const at::Tensor& positions) {
  auto freqs = at::outer(positions.to(at::kFloat), inv_freq);  // [S, d/2]
  auto emb = at::cat({freqs, freqs}, -1);                      // [S, d]
  return {at::cos(emb), at::sin(emb)};
}

namespace {

at::Tensor rope_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                          double sign) {
  const int64_t half = x.size(-1) / 2;
  auto rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  auto c = cos.to(x.scalar_type()).unsqueeze(1), s = sin.to(x.scalar_type()).unsqueeze(1);
  return x * c + rotated * (sign < 0 ? -s : s);
}

at::Tensor rope_fused(const at::Tensor& x_in, const at::Tensor& cos, const at::Tensor& sin,
                      double sign) {
#ifdef EAGLET_WITH_CUDA
  EAGLET_CHECK(x_in.dim() == 3 && x_in.size(2) % 2 == 0,
               "rope: x {} must be [S, heads, d] with an even d", tensor_text(x_in));
  const auto x = x_in.stride(2) == 1 ? x_in : x_in.contiguous();  // rows, heads may be strided
  auto table = [](const at::Tensor& t) {
    auto f = t.to(at::kFloat);
    return f.stride(1) == 1 ? f : f.contiguous();
  };
  const auto c = table(cos), s = table(sin);
  EAGLET_CHECK(c.stride(0) == s.stride(0), "rope: cos and sin tables laid out differently");
  auto out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  launch_rope(x.data_ptr(), x.stride(0), x.stride(1), c.data_ptr<float>(), s.data_ptr<float>(),
              c.stride(0), out.data_ptr(), x.size(0), static_cast<int>(x.size(1)),
              static_cast<int>(x.size(2) / 2), static_cast<float>(sign),
              x.scalar_type() == at::kBFloat16, stream_of(x));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
#else
  return rope_reference(x_in, cos, sin, sign);
#endif
}

struct Rope : torch::autograd::Function<Rope> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& cos, const at::Tensor& sin, Impl impl) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    ctx->saved_data["impl"] = static_cast<int64_t>(impl);
    return rope_rows(x, cos, sin, 1.0, impl);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto impl = static_cast<Impl>(ctx->saved_data["impl"].toInt());
    return {rope_rows(grads[0], ctx->saved_data["cos"].toTensor(),
                      ctx->saved_data["sin"].toTensor(), -1.0, impl),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor rope_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, double sign,
                     Impl impl) {
  if (use_fused(impl, x, "rope")) return rope_fused(x, cos, sin, sign);
  return rope_reference(x, cos, sin, sign);
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                      Impl impl) {
  if (!at::GradMode::is_enabled() || !x.requires_grad()) return rope_rows(x, cos, sin, 1.0, impl);
  return Rope::apply(x, cos, sin, impl);
}

}  // namespace eaglet::model
