// The fp64 dense reference unroll: plain ATen ops only, nothing shared with the fast path.
#include "model/reference.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/outer.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/tril.h>
#include <ATen/ops/zeros.h>

#include <cmath>

#include "core/error.h"

namespace eaglet::model {
namespace {

at::Tensor ref_rms(const at::Tensor& x, const at::Tensor& w, double eps) {
  return w * (x * at::rsqrt(x.pow(2).mean({-1}, true) + eps));
}

}  // namespace

at::Tensor reference_rope(const at::Tensor& x, const at::Tensor& pos, const DraftArchConfig& c) {
  const int64_t d = c.head_dim;
  // HF: inv_freq = 1 / θ^(arange(0, d, 2) / d)
  auto idx = at::arange(0, d, 2, x.options().dtype(at::kDouble));
  auto inv = 1.0 / at::pow(c.rope_theta, idx / static_cast<double>(d));
  auto ang = at::outer(pos.to(at::kDouble), inv);
  auto cos = at::cos(at::cat({ang, ang}, -1)).unsqueeze(1),
       sin = at::sin(at::cat({ang, ang}, -1)).unsqueeze(1);
  auto x1 = x.narrow(-1, 0, d / 2), x2 = x.narrow(-1, d / 2, d / 2);
  auto rot = at::cat({-x2, x1}, -1);
  return x * cos + rot * sin;
}

std::map<std::string, at::Tensor> fp64_leaves(const Eagle3Weights& w) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : w.trainable())
    out[name] = t->detach().to(at::kDouble).set_requires_grad(true);
  return out;
}

ReferenceResult reference_unroll(const DraftArchConfig& c, std::map<std::string, at::Tensor>& w,
                                 const at::Tensor& embed_tokens, const LossTarget& target,
                                 const data::ShardInput& in, int64_t T,
                                 const std::vector<double>& weights, bool keep_logits) {
  EAGLET_CHECK(c.rope_type == "none", "the fp64 reference implements rope_type none, not {}",
               c.rope_type);
  const int64_t n = in.ids.size(0), C = n - T, nH = c.num_attention_heads,
                nKV = c.num_key_value_heads, d = c.head_dim;
  EAGLET_CHECK(C >= 1 && static_cast<int64_t>(weights.size()) == T,
               "reference: {} rows for T = {} with {} step weights", n, T, weights.size());
  const double eps = c.rms_norm_eps;
  auto dbl = [](const at::Tensor& t) { return t.to(at::kDouble); };
  auto f64 = in.hs.options().dtype(at::kDouble);
  auto embed = dbl(embed_tokens), hs = dbl(in.hs), lhs = dbl(in.lhs), full = dbl(target.full_head),
       draft = full.index_select(0, target.draft_ids);
  // Row-j mask: loss_mask[j] * t2d[argmax(lhs[j+1] Wtᵀ)], zero row past the end.
  auto shifted = lhs.narrow(0, 1, n - 1), past_end = at::zeros({1, lhs.size(1)}, f64);
  auto next = at::cat({shifted, past_end});
  auto row_mask = dbl(in.loss_mask) *
                  dbl(target.t2d.index_select(0, at::argmax(at::matmul(next, full.t()), -1)));
  auto ids = in.ids.clamp(0, c.vocab_size - 1);
  auto h = at::matmul(hs.narrow(0, 0, C), w.at("fc.weight").t());
  std::vector<at::Tensor> keys, values;
  ReferenceResult r;
  for (int64_t k = 0; k < T; ++k) {
    auto e = embed.index_select(0, ids.narrow(0, k + 1, C));
    auto e_n = ref_rms(e, w.at("midlayer.input_layernorm.weight"), eps);
    auto h_n = ref_rms(h, w.at("midlayer.hidden_norm.weight"), eps);
    auto x = at::cat({e_n, h_n}, -1);
    auto pos = at::arange(C, in.ids.options().dtype(at::kLong)) + k;
    auto q = reference_rope(
        at::matmul(x, w.at("midlayer.self_attn.q_proj.weight").t()).view({C, nH, d}), pos, c);
    keys.push_back(reference_rope(
        at::matmul(x, w.at("midlayer.self_attn.k_proj.weight").t()).view({C, nKV, d}), pos, c));
    values.push_back(at::matmul(x, w.at("midlayer.self_attn.v_proj.weight").t()).view({C, nKV, d}));
    auto K = at::cat(keys, 0), V = at::cat(values, 0);  // [(k+1)C, nKV, d]
    // Allowed: block 0 causal (j <= i), block m >= 1 only its own position (j == i).
    std::vector<at::Tensor> blocks{at::tril(at::ones({C, C}, f64))};
    for (int64_t m = 1; m <= k; ++m) blocks.push_back(at::eye(C, f64));
    auto allowed = at::cat(blocks, 1) > 0.5;  // [C, (k+1)C]
    std::vector<at::Tensor> heads;
    for (int64_t hd = 0; hd < nH; ++hd) {
      const int64_t g = hd / (nH / nKV);
      auto s = at::matmul(q.select(1, hd), K.select(1, g).t()) / std::sqrt(static_cast<double>(d));
      s = s.masked_fill(allowed.logical_not(), -INFINITY);
      heads.push_back(at::matmul(at::softmax(s, -1), V.select(1, g)));
    }
    auto a = at::cat(heads, -1);  // [C, nH*d], head-major like reshape of [C, nH, d]
    auto h1 = h + at::matmul(a, w.at("midlayer.self_attn.o_proj.weight").t());
    auto nn = ref_rms(h1, w.at("midlayer.post_attention_layernorm.weight"), eps);
    auto mlp = at::matmul(at::silu(at::matmul(nn, w.at("midlayer.mlp.gate_proj.weight").t())) *
                              at::matmul(nn, w.at("midlayer.mlp.up_proj.weight").t()),
                          w.at("midlayer.mlp.down_proj.weight").t());
    auto out = h1 + mlp;
    auto z = at::matmul(ref_rms(out, w.at("norm.weight"), eps), w.at("lm_head.weight").t());
    if (keep_logits) r.logits_k.push_back(z.detach().clone());
    auto pt = at::softmax(at::matmul(lhs.narrow(0, k + 1, C), draft.t()), -1);
    auto m = row_mask.narrow(0, k, C);
    auto sum = ((at::logsumexp(z, {-1}) - (pt * z).sum(-1)) * m).sum();
    r.sum_k.push_back(sum);
    r.count_k.push_back(m.sum().item<double>());
    const double count = std::max(r.count_k.back(), 1.0);
    r.loss_k.push_back(sum.item<double>() / count);
    auto term = sum * (weights[k] / count);
    r.total = r.total.defined() ? r.total + term : term;
    h = out;
  }
  return r;
}

}  // namespace eaglet::model
