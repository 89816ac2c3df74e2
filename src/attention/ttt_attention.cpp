// The TTT attention as one autograd function: block 0 through the provider, the diagonal blocks
// and the fp32 log-sum-exp merge through attention/ttt_diag.
#include "attention/ttt_attention.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/autograd/custom_function.h>

#include "attention/ttt_diag.h"
#include "core/error.h"

namespace eaglet::attention {
namespace {

class LocalBlock0 final : public Block0 {
 public:
  explicit LocalBlock0(const LocalKernel& kernel) : kernel_(kernel) {}
  bool local() const override { return true; }
  AttnResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     double scale) override {
    return attend(kernel_, q, k, v, /*causal=*/true, scale);
  }
  std::vector<at::Tensor> backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                   const at::Tensor& v, const at::Tensor& out,
                                   const at::Tensor& lse, const KernelState& state,
                                   double scale) override {
    return attend_backward(kernel_, dout, q, k, v, out, lse, state, /*causal=*/true, scale);
  }

 private:
  const LocalKernel& kernel_;
};

// Each document through the inner provider on its rows of [1, H, S, d] (and lse [1, H, S]).
class SegmentedBlock0 final : public Block0 {
 public:
  SegmentedBlock0(std::shared_ptr<Block0> inner, std::vector<int64_t> segments)
      : inner_(std::move(inner)), segments_(std::move(segments)) {}
  AttnResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     double scale) override {
    check(q.size(2));
    std::vector<at::Tensor> outs, lses;
    AttnResult r;
    for_each([&](int64_t start, int64_t n) {
      auto part = inner_->forward(q.narrow(2, start, n), k.narrow(2, start, n),
                                  v.narrow(2, start, n), scale);
      outs.push_back(part.out);
      lses.push_back(part.lse);
      r.state.parts.push_back(std::move(part.state));
    });
    r.out = at::cat(outs, 2);
    r.lse = at::cat(lses, 2);
    return r;
  }
  std::vector<at::Tensor> backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                   const at::Tensor& v, const at::Tensor& out,
                                   const at::Tensor& lse, const KernelState& state,
                                   double scale) override {
    std::vector<at::Tensor> dq, dk, dv;
    size_t i = 0;
    for_each([&](int64_t start, int64_t n) {
      auto g = inner_->backward(dout.narrow(2, start, n), q.narrow(2, start, n),
                                k.narrow(2, start, n), v.narrow(2, start, n),
                                out.narrow(2, start, n), lse.narrow(2, start, n).contiguous(),
                                state.parts.at(i++), scale);
      dq.push_back(g[0]);
      dk.push_back(g[1]);
      dv.push_back(g[2]);
    });
    return {at::cat(dq, 2), at::cat(dk, 2), at::cat(dv, 2)};
  }

 private:
  void check(int64_t rows) const {
    int64_t sum = 0;
    for (int64_t n : segments_) sum += n;
    EAGLET_CHECK(sum == rows, "block 0: documents of {} rows in all for a sequence of {}", sum,
                 rows);
  }
  template <typename F>
  void for_each(F&& f) const {
    int64_t start = 0;
    for (int64_t n : segments_) {
      f(start, n);
      start += n;
    }
  }
  std::shared_ptr<Block0> inner_;
  std::vector<int64_t> segments_;
};

// Carries the provider and its kernel state from forward to backward.
struct Carry : torch::CustomClassHolder {
  std::shared_ptr<Block0> block0;
  KernelState state;
  Impl diag = Impl::reference;  // the diagonal blocks' kernel
};

at::ScalarType merge_type(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// [S, H, d] <-> [1, H, S, d]
at::Tensor to_kernel(const at::Tensor& x) {
  return x.transpose(0, 1).unsqueeze(0);
}
at::Tensor from_kernel(const at::Tensor& x) {
  return x.squeeze(0).transpose(0, 1);
}

// K/V of every step arrive as separate tensors (a list), so each step's cache block is saved for
// backward once, not re-stacked into a new [k+1, ...] copy at every step.
struct TttAttention : torch::autograd::Function<TttAttention> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            at::TensorList ks, at::TensorList vs, c10::intrusive_ptr<Carry> carry,
                            double scale) {
    const int64_t steps = static_cast<int64_t>(ks.size());
    auto mt = merge_type(q);
    auto r = carry->block0->forward(to_kernel(q), to_kernel(ks[0]), to_kernel(vs[0]), scale);
    carry->state = r.state;
    auto out0 = from_kernel(r.out);                       // [S, H, d]
    auto lse0 = r.lse.squeeze(0).transpose(0, 1).to(mt);  // [S, H]
    at::Tensor out, lse;
    if (steps == 1) {
      out = out0;
      lse = lse0;
    } else {
      auto r = diag_merge_forward(q, out0, lse0, ks.slice(1), vs.slice(1), scale, carry->diag);
      out = r.out;
      lse = r.lse.to(mt);
    }
    std::vector<at::Tensor> keep{q, out, lse};
    keep.insert(keep.end(), ks.begin(), ks.end());
    keep.insert(keep.end(), vs.begin(), vs.end());
    ctx->save_for_backward(keep);
    ctx->saved_data["carry"] = c10::IValue::make_capsule(carry);
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &out = saved[1], &lse = saved[2];
    const int64_t steps = (static_cast<int64_t>(saved.size()) - 3) / 2;
    auto k_at = [&](int64_t m) -> const at::Tensor& { return saved[3 + m]; };
    auto v_at = [&](int64_t m) -> const at::Tensor& { return saved[3 + steps + m]; };
    auto carry = c10::static_intrusive_pointer_cast<Carry>(ctx->saved_data["carry"].toCapsule());
    const double scale = ctx->saved_data["scale"].toDouble();
    auto mt = merge_type(q);
    auto dout = grads[0].to(q.scalar_type());

    // Block 0 with the merged out and lse: its softmax is normalised over every block.
    auto lse_k = lse.transpose(0, 1).unsqueeze(0).to(at::kFloat).contiguous();
    if (mt == at::kDouble) lse_k = lse.transpose(0, 1).unsqueeze(0).contiguous();
    auto g0 =
        carry->block0->backward(to_kernel(dout), to_kernel(q), to_kernel(k_at(0)),
                                to_kernel(v_at(0)), to_kernel(out), lse_k, carry->state, scale);
    // Gradients in input order: q, every K block, every V block, then the two non-tensor inputs.
    torch::autograd::variable_list result(1 + 2 * steps + 2);
    result[1] = from_kernel(g0[1]).to(k_at(0).scalar_type());
    result[1 + steps] = from_kernel(g0[2]).to(v_at(0).scalar_type());
    if (steps == 1) {
      result[0] = from_kernel(g0[0]).to(q.scalar_type());
      return result;
    }
    // The diagonal blocks add theirs to block 0's dq in fp32 and round once.
    std::vector<at::Tensor> ks, vs;
    for (int64_t m = 1; m < steps; ++m) {
      ks.push_back(k_at(m));
      vs.push_back(v_at(m));
    }
    auto g = diag_backward(dout, q, out, lse, ks, vs, from_kernel(g0[0]), scale, carry->diag);
    result[0] = g.dq;
    for (int64_t m = 1; m < steps; ++m) {
      result[1 + m] = g.dk[m - 1];
      result[1 + steps + m] = g.dv[m - 1];
    }
    return result;
  }
};

}  // namespace

std::shared_ptr<Block0> local_block0(const LocalKernel& kernel) {
  return std::make_shared<LocalBlock0>(kernel);
}

std::shared_ptr<Block0> segmented_block0(std::shared_ptr<Block0> inner,
                                         std::vector<int64_t> segments) {
  EAGLET_CHECK(inner->local(), "block 0 over documents needs a local provider (parallel.ring = 1)");
  return std::make_shared<SegmentedBlock0>(std::move(inner), std::move(segments));
}

at::Tensor ttt_attention(const at::Tensor& q, const std::vector<at::Tensor>& ks,
                         const std::vector<at::Tensor>& vs, std::shared_ptr<Block0> block0,
                         double scale, Impl diag) {
  auto carry = c10::make_intrusive<Carry>();
  carry->block0 = std::move(block0);
  carry->diag = diag;
  return TttAttention::apply(q, at::TensorList(ks), at::TensorList(vs), carry, scale);
}

}  // namespace eaglet::attention
